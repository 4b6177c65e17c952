//! A function built without a pad: which first instructions its entry jump overwrites
//! (`pulp_unpadded::plan`, over the target's own bytes and every address other code or
//! data of the target may branch to), or why it cannot be redirected.

use super::object::Object;
use super::PackErrorKind;
use object::{Object as _, ObjectSection};
use pulp_elf::FunctionInfo;
use pulp_meta::prologue::Displaced;

/// Plan the entry jump of `f`, a function of `target` with no pad.
pub(super) fn displaced(target: &Object, f: &FunctionInfo) -> Result<Displaced, PackErrorKind> {
    let refuse = |reason: String| PackErrorKind::Unpadded { func: f.name.clone(), target: target.path.clone(), reason };
    let data = std::fs::read(&target.path).map_err(|e| refuse(format!("cannot read {}: {e}", target.path)))?;
    let file = object::File::parse(&*data).map_err(|e| refuse(format!("not an ELF object: {e}")))?;
    let code =
        function_bytes(&file, f).ok_or_else(|| refuse(format!("its bytes at {:#x} are not in the file", f.offset)))?;
    let inbound = target.inbound(&file);
    let plan = pulp_unpadded::plan(&f.name, code, f.offset, inbound).map_err(|r| refuse(r.reason.to_string()))?;
    Ok(Displaced { skip: plan.skip, original: plan.original })
}

/// The symbol's bytes, from the section that holds them.
fn function_bytes<'a>(file: &object::File<'a>, f: &FunctionInfo) -> Option<&'a [u8]> {
    let section = file.sections().find(|s| (s.address()..s.address() + s.size()).contains(&f.offset))?;
    let data = section.data().ok()?;
    let start = usize::try_from(f.offset - section.address()).ok()?;
    let end = start.checked_add(usize::try_from(f.size.max(1)).ok()?)?.min(data.len());
    data.get(start..end)
}
