//! Resolving one replacement (`OLD:NEW` line): the old function in its target, with a
//! patchable prologue, and the new one exported by the patch `.so`.

use super::caveats::clones_of;
use super::{Object, PackErrorKind, PendingTarget};

use super::dsc::SymbolName;
use pulp_elf::symbols::cold_parent;
use pulp_elf::FunctionInfo;
use pulp_meta::{Function, Prologue};

/// Cold parts (`f.cold`) are not entry points: neither replaced nor referred to.
pub(super) fn not_cold_part(name: &str, tpath: &str) -> Result<(), PackErrorKind> {
    match cold_parent(name) {
        Some(parent) => Err(PackErrorKind::ColdPart { func: name.into(), parent: parent.into(), target: tpath.into() }),
        None => Ok(()),
    }
}

/// Resolve one `old:new` line of `target`.
pub(super) fn replacement(
    target: &PendingTarget,
    patch: &Object,
    old: &SymbolName,
    new: &str,
) -> Result<Function, PackErrorKind> {
    let tpath = &target.object.path;
    let name = old.name.as_str();
    if let Some(&first_line) = target.lines.get(name) {
        return Err(PackErrorKind::DuplicateFunction { func: old.to_string(), target: tpath.clone(), first_line });
    }
    not_cold_part(name, tpath)?;
    let candidates: Vec<&FunctionInfo> =
        target.object.functions().iter().filter(|f| f.name == name && old.at.is_none_or(|o| f.offset == o)).collect();
    let f = match candidates.as_slice() {
        [] => {
            if let Some(callers) = target.object.elf.only_inlined(name) {
                return Err(PackErrorKind::OnlyInlined { func: name.into(), target: tpath.clone(), callers });
            }
            let clones = clones_of(&target.object, name);
            if clones.is_empty() || old.at.is_some() {
                let hint = target.object.stripped_hint();
                return Err(PackErrorKind::OldNotFound { func: old.to_string(), target: tpath.clone(), hint });
            }
            return Err(PackErrorKind::OnlyClones { func: name.into(), target: tpath.clone(), clones });
        }
        [f] => *f,
        many => {
            let offsets = many.iter().map(|f| f.offset).collect();
            return Err(PackErrorKind::Ambiguous {
                what: "function",
                func: name.into(),
                target: tpath.clone(),
                offsets,
            });
        }
    };
    let (prologue, displaced) = match f.prologue {
        // No pad: overwrite its first instructions, when that is safe.
        None => (Prologue::Unpadded, Some(super::unpadded::displaced(&target.object, f)?)),
        Some(k) if !k.is_supported() => {
            return Err(PackErrorKind::UnsupportedPrologue { func: name.into(), target: tpath.clone(), kind: k })
        }
        Some(k) => (k, None),
    };
    let in_patch: Vec<&FunctionInfo> = patch.functions().iter().filter(|f| f.name == new).collect();
    if in_patch.is_empty() {
        return Err(PackErrorKind::NewNotFound { func: new.into(), patch_so: patch.path.clone() });
    }
    if !in_patch.iter().any(|f| f.global && f.dynamic) {
        return Err(PackErrorKind::NewNotExported { func: new.into(), patch_so: patch.path.clone() });
    }
    Ok(Function { old: name.into(), offset: f.offset, prologue, displaced, new: new.into() })
}
