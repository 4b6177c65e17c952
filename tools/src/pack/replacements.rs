//! Resolving one replacement (`OLD:NEW` line): the old function in its target, with a
//! patchable prologue, and the new one exported by the patch `.so`.

use super::caveats::clones_of;
use super::{Object, PackErrorKind, PendingTarget};

use super::dsc::{SymbolName, VersionName};
use pulp_elf::symbols::cold_parent;
use pulp_elf::{FunctionInfo, SymbolVersion};
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
    if let Some(&first_line) = target.lines.get(name).filter(|_| old.version.is_none()) {
        return Err(PackErrorKind::DuplicateFunction { func: old.to_string(), target: tpath.clone(), first_line });
    }
    not_cold_part(name, tpath)?;
    let at = address_of(&target.object, old)?;
    let candidates: Vec<&FunctionInfo> =
        target.object.functions().iter().filter(|f| f.name == name && at.is_none_or(|o| f.offset == o)).collect();
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
    refuse_ifunc(&target.object, f)?;
    if let Some((_, other, first_line)) = target.entries.iter().find(|(offset, _, _)| *offset == f.offset) {
        if *other == old.to_string() {
            let (func, target, first_line) = (other.clone(), tpath.clone(), *first_line);
            return Err(PackErrorKind::DuplicateFunction { func, target, first_line });
        }
        return Err(PackErrorKind::SameEntry {
            func: old.to_string(),
            other: other.clone(),
            offset: f.offset,
            target: tpath.clone(),
            first_line: *first_line,
        });
    }
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

/// `name@VERSION (0xOFFSET)` for each version.
fn spelled(versions: &[&SymbolVersion]) -> Vec<String> {
    versions.iter().map(|v| format!("`{}` ({:#x})", v.spelled(), v.value)).collect()
}

/// The address `sym` picks in `object`: its `@OFFSET`, its version's, or `None` for a
/// bare name, which is refused when its versions lie at several addresses.
pub(super) fn address_of(object: &Object, sym: &SymbolName) -> Result<Option<u64>, PackErrorKind> {
    if let Some(v) = &sym.version {
        return version_address(object, sym, v).map(Some);
    }
    let versions: Vec<&SymbolVersion> = object.elf.info.versions_of(&sym.name).collect();
    if sym.at.is_none() && versions.iter().any(|v| v.value != versions[0].value) {
        return Err(PackErrorKind::SeveralVersions {
            func: sym.name.clone(),
            target: object.path.clone(),
            versions: spelled(&versions),
        });
    }
    Ok(sym.at)
}

/// The address `old` (written `name@VERSION` or `name@@VERSION`) stands for in `object`.
fn version_address(object: &Object, old: &SymbolName, v: &VersionName) -> Result<u64, PackErrorKind> {
    let versions: Vec<&SymbolVersion> = object.elf.info.versions_of(&old.name).collect();
    match versions.iter().find(|x| x.version == v.name) {
        None => Err(PackErrorKind::VersionNotFound {
            func: old.to_string(),
            target: object.path.clone(),
            known: spelled(&versions),
        }),
        Some(x) if v.default && !x.default => Err(PackErrorKind::NotDefaultVersion {
            func: old.to_string(),
            target: object.path.clone(),
            default: versions.iter().find(|d| d.default).map(|d| d.spelled()),
        }),
        Some(x) => Ok(x.value),
    }
}

/// An IFUNC symbol, or the resolver of one, cannot be replaced: callers never run it.
fn refuse_ifunc(object: &Object, f: &FunctionInfo) -> Result<(), PackErrorKind> {
    let target = || object.path.clone();
    if f.ifunc {
        return Err(PackErrorKind::Ifunc {
            func: f.name.clone(),
            target: target(),
            implementations: chosen_by(object, f),
        });
    }
    if let Some(ifunc) = object.functions().iter().find(|g| g.ifunc && g.offset == f.offset) {
        return Err(PackErrorKind::IfuncResolver {
            func: f.name.clone(),
            ifunc: ifunc.name.clone(),
            target: target(),
            implementations: chosen_by(object, f),
        });
    }
    Ok(())
}

/// The functions an IFUNC resolver can return: those whose address its code loads
/// rip-relative (`lea impl(%rip), %rax`), one entry per address, its aliases after it.
fn chosen_by(object: &Object, resolver: &FunctionInfo) -> Vec<String> {
    use iced_x86::{Decoder, DecoderOptions, Mnemonic};
    use object::{Object as _, ObjectSection as _};
    let Ok(data) = std::fs::read(&object.elf.path) else { return Vec::new() };
    let Ok(file) = object::File::parse(&*data) else { return Vec::new() };
    let code = file.sections().find_map(|s| {
        let from = resolver.offset.checked_sub(s.address()).filter(|&o| o < s.size())?;
        let bytes = s.data().ok()?;
        let from = usize::try_from(from).ok()?;
        let to = from.saturating_add(usize::try_from(resolver.size).ok()?).min(bytes.len());
        bytes.get(from..to)
    });
    let mut seen: Vec<u64> = Vec::new();
    let mut out: Vec<String> = Vec::new();
    for i in Decoder::with_ip(64, code.unwrap_or_default(), resolver.offset, DecoderOptions::NONE) {
        let to = i.ip_rel_memory_address();
        if i.mnemonic() != Mnemonic::Lea || !i.is_ip_rel_memory_operand() || seen.contains(&to) {
            continue;
        }
        let names: Vec<String> = object
            .functions()
            .iter()
            .filter(|g| g.offset == to && !g.ifunc && g.offset != resolver.offset)
            .map(|g| format!("`{}`", g.name))
            .collect();
        if let Some((first, aliases)) = names.split_first() {
            seen.push(to);
            out.push(match aliases {
                [] => first.clone(),
                _ => format!("{first} (also {})", aliases.join(", ")),
            });
        }
    }
    out
}
