#!/usr/bin/env bash
# Build everything and run the live-patching demo (examples/src/bin/pulp-demo.rs).
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --workspace
exec target/release/pulp-demo
