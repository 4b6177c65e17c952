//! libpulp-rs tools: packing, inspecting and applying live patches.
