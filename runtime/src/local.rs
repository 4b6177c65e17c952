//! Applying a patch from inside the process, without a tool (the patch directory): the
//! same registry steps as a request from `pulp-trigger`, with the code written by the
//! runtime itself through `/proc/self/mem` (which, like the tool's writes, changes no page
//! protection) and the transition finished at once. Only done where no thread can be
//! running the functions concerned: at process start while it has one thread, or for a
//! target the dynamic linker has just mapped and not yet run.

use crate::code::CodeWriter;
use crate::registry::{self, Object, Registry};
use pulp_meta::abi::{self, EntryStatus};
use pulp_meta::Prologue;

/// Apply `meta_bytes` (a `patch.meta`) with `object`, immediately.
pub fn apply(reg: &mut Registry, meta_bytes: &[u8], object: Object<'_>) -> Result<EntryStatus, String> {
    if let Ok(meta) = pulp_meta::PatchMeta::decode(meta_bytes) {
        if let Some(f) = meta.targets.iter().flat_map(|t| &t.functions).find(|f| f.prologue == Prologue::Unpadded) {
            return Err(format!(
                "function `{}` has no pad: its entry is rewritten only with threads watched one by one, so apply it \
                 with pulp-trigger",
                f.old
            ));
        }
    }
    let writer = CodeWriter::require()?;
    // Room for a reply naming every descriptor the runtime has.
    let mut buf = vec![0u8; 4 + pulp_trm::DESC_COUNT * abi::FUNC_REPLY_SIZE];
    let status = registry::apply(reg, meta_bytes, &[], &[], object, &mut buf)?;
    writer.write_reply(&buf)?;
    if status == EntryStatus::Transition {
        registry::finish(reg, true, &mut buf)?;
        writer.write_reply(&buf)?;
    }
    Ok(status)
}
