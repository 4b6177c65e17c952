//! A function built without a pad: which first instructions its entry jump overwrites
//! (`pulp_unpadded::plan`, over the target's own bytes and every address other code or
//! data of the target may branch to), or why it cannot be redirected.

use super::object::Object;
use super::PackErrorKind;
use object::{Object as _, ObjectSection};
use pulp_elf::{FunctionInfo, Symbol, SymbolKind};
use pulp_meta::prologue::Displaced;

/// Plan the entry jump of `f`, a function of `target` with no pad.
pub(super) fn displaced(target: &Object, f: &FunctionInfo) -> Result<Displaced, PackErrorKind> {
    let refuse = |reason: String| PackErrorKind::Unpadded { func: f.name.clone(), target: target.path.clone(), reason };
    let data = target.bytes().map_err(|e| refuse(format!("cannot read {}: {e}", target.path)))?;
    let file = object::File::parse(data).map_err(|e| refuse(format!("not an ELF object: {e}")))?;
    let code = function_bytes(&file, f.offset, f.size.max(1))
        .ok_or_else(|| refuse(format!("its bytes at {:#x} are not in the file", f.offset)))?;
    let inbound = target.inbound(&file);
    let plan = pulp_unpadded::plan(&f.name, code, f.offset, inbound).map_err(|r| refuse(r.reason.to_string()))?;
    Ok(Displaced { skip: plan.skip, original: plan.original })
}

/// The addresses other code or data of an object may branch to: its own
/// ([`pulp_unpadded::inbound_addresses`]) and every symbol known of it (`symbols`, its
/// debug file's included, so that an alternate entry named only there is seen), sorted.
pub(super) fn inbound_of(file: &object::File<'_>, symbols: &[Symbol]) -> Vec<u64> {
    let mut inbound = pulp_unpadded::inbound_addresses(file);
    inbound.extend(symbols.iter().filter(|s| s.kind != SymbolKind::Tls).map(|s| s.value));
    inbound.sort_unstable();
    inbound.dedup();
    inbound
}

/// The `size` bytes of the file at `addr`, cut at the end of the section that holds
/// them (`None` when no section with contents holds `addr`).
pub(super) fn function_bytes<'a>(file: &object::File<'a>, addr: u64, size: u64) -> Option<&'a [u8]> {
    let section = file.sections().find(|s| addr >= s.address() && addr - s.address() < s.size())?;
    let data = section.data().ok()?;
    let from = usize::try_from(addr - section.address()).ok()?;
    let to = usize::try_from(size).ok().and_then(|n| from.checked_add(n))?.min(data.len());
    data.get(from..to)
}
