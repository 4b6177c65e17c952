//! Resolving a target's references (`#SYMBOL:VAR` lines) against its symbols and the
//! patch `.so`'s variables, once the target is complete.

use super::caveats::not_found_hint;
use super::error::hex_list;
use super::replacements::{address_of, not_cold_part};
use super::{Object, PackError, PackErrorKind, PackWarning, PendingRef, PendingTarget};
use std::collections::HashMap;
use std::path::Path;

use super::dsc::RefForm;
use pulp_elf::symbols::has_compiler_abi;
use pulp_elf::{Symbol, SymbolKind};
use pulp_meta::{RefKind, Reference, Target};

/// Finish a target: resolve its references, warn about imports of what it replaces.
pub(super) fn finish(
    dsc_path: &Path,
    t: PendingTarget,
    patch: &Object,
    vars: &mut HashMap<String, usize>,
    warnings: &mut Vec<PackWarning>,
    generated: bool,
) -> Result<(PendingTarget, Target), PackError> {
    let at =
        |line: usize| move |kind| PackError { file: dsc_path.to_path_buf(), line: Some(line), kind: Box::new(kind) };
    if t.functions.is_empty() {
        return Err(at(t.line)(PackErrorKind::NoFunctions { target: t.object.path }));
    }
    let mut references = Vec::new();
    for r in &t.refs {
        if let Some(&first_line) = vars.get(&r.var) {
            return Err(at(r.line)(PackErrorKind::DuplicateVar { var: r.var.clone(), first_line }));
        }
        let (reference, warning) = reference(&t, patch, r).map_err(at(r.line))?;
        if let Some(message) = warning.filter(|_| !generated) {
            warnings.push(PackWarning { file: dsc_path.to_path_buf(), line: r.line, message });
        }
        vars.insert(r.var.clone(), r.line);
        references.push(reference);
    }
    for f in &t.functions {
        let imported = patch.elf.info.imports.iter().any(|i| i.name == f.old);
        if imported && t.object.elf.info.exports(&f.old) {
            warnings.push(PackWarning {
                file: dsc_path.to_path_buf(),
                line: t.lines.get(&f.old).copied().unwrap_or(t.line),
                message: format!(
                    "the patch .so imports `{old}`, which this patch replaces: once applied, its calls to `{old}` \
                     reach `{new}` again (endless recursion if `{new}` calls it); to call the original, use a \
                     reference `#{old}:VAR` (it receives the original code)",
                    old = f.old,
                    new = f.new
                ),
            });
        }
    }
    let target = Target {
        path: t.object.path.clone(),
        build_id: t.object.build_id().to_vec(),
        functions: t.functions.clone(),
        references,
    };
    Ok((t, target))
}

/// Resolve one reference of `target`; a warning to give, if any.
pub(super) fn reference(
    target: &PendingTarget,
    patch: &Object,
    r: &PendingRef,
) -> Result<(Reference, Option<String>), PackErrorKind> {
    let tpath = &target.object.path;
    let name = &r.symbol.name;
    let at = address_of(&target.object, &r.symbol)?;
    let all: Vec<&Symbol> = target.object.elf.named(name).filter(|s| at.is_none_or(|o| s.value == o)).collect();
    if all.is_empty() {
        if let Some(callers) = target.object.elf.only_inlined(name) {
            return Err(PackErrorKind::OnlyInlined { func: name.clone(), target: tpath.clone(), callers });
        }
        let hint = match at {
            Some(at) if target.object.elf.named(name).next().is_some() => {
                let offsets: Vec<u64> = target.object.elf.named(name).map(|s| s.value).collect();
                format!(" at {at:#x} (it is at {})", hex_list(&offsets))
            }
            _ => not_found_hint(&target.object, name),
        };
        return Err(PackErrorKind::UnknownSymbol { symbol: r.symbol.to_string(), target: tpath.clone(), hint });
    }
    let wants_tls = matches!(r.form, RefForm::Tls | RefForm::TpOffset);
    let fitting: Vec<&Symbol> = all.iter().copied().filter(|s| (s.kind == SymbolKind::Tls) == wants_tls).collect();
    let sym = match fitting.as_slice() {
        [] if wants_tls => {
            return Err(PackErrorKind::NotTls { symbol: name.clone(), target: tpath.clone(), kind: all[0].kind.name() })
        }
        [] => return Err(PackErrorKind::TlsNeedsPercent { symbol: name.clone(), target: tpath.clone() }),
        [s] => *s,
        many => {
            let mut offsets: Vec<u64> = many.iter().map(|s| s.value).collect();
            offsets.dedup();
            if offsets.len() > 1 {
                return Err(PackErrorKind::Ambiguous {
                    what: "symbol",
                    func: name.clone(),
                    target: tpath.clone(),
                    offsets,
                });
            }
            many[0]
        }
    };
    not_cold_part(name, tpath)?;
    if sym.ifunc {
        return Err(PackErrorKind::IfuncReference { symbol: r.symbol.to_string(), target: tpath.clone() });
    }
    let replaced = sym.kind == SymbolKind::Function && target.functions.iter().any(|f| f.offset == sym.value);
    let kind = match r.form {
        RefForm::Tls => RefKind::TlsIndex,
        RefForm::TpOffset => RefKind::TpOffset,
        RefForm::GotRelative => RefKind::GotRelative,
        RefForm::Plain if replaced && r.addend == 0 => RefKind::Original,
        RefForm::Plain => RefKind::Address,
    };
    let offset = sym
        .value
        .checked_add_signed(r.addend)
        .ok_or_else(|| PackErrorKind::Overflow { symbol: name.clone(), addend: r.addend })?;
    let var = check_variable(patch, &r.var, kind)?;
    let warning = (sym.kind == SymbolKind::Function && has_compiler_abi(name)).then(|| {
        format!(
            "`{name}` is a compiler clone: its calling convention is the compiler's own (arguments may be removed \
             or replaced by constants); call it only as the compiler's code does"
        )
    });
    let symbol = match r.addend {
        0 => r.symbol.to_string(),
        a if a < 0 => format!("{}{a}", r.symbol),
        a => format!("{}+{a}", r.symbol),
    };
    Ok((Reference { symbol, offset, kind, var }, warning))
}

/// `var` must be a writable data object of the patch `.so`, big enough. Returns the name
/// the runtime finds it by: its own when exported (`dlsym`), else `NAME@OFFSET` with its
/// value in the object's symbol table (a `static` or hidden variable, as libpulp allows).
pub(super) fn check_variable(patch: &Object, var: &str, kind: RefKind) -> Result<String, PackErrorKind> {
    let patch_so = || patch.path.clone();
    let found: Vec<&Symbol> = patch.elf.named(var).collect();
    let Some(sym) = found.iter().find(|s| s.dynamic).or(found.first()) else {
        return Err(PackErrorKind::VarNotFound { var: var.into(), patch_so: patch_so() });
    };
    if sym.kind != SymbolKind::Object {
        return Err(PackErrorKind::VarNotData { var: var.into(), patch_so: patch_so(), kind: sym.kind.name() });
    }
    let mut locals: Vec<u64> = found.iter().filter(|s| s.kind == SymbolKind::Object).map(|s| s.value).collect();
    locals.dedup();
    if !sym.dynamic && locals.len() > 1 {
        return Err(PackErrorKind::VarAmbiguous { var: var.into(), patch_so: patch_so(), offsets: locals });
    }
    if sym.size < kind.size() as u64 {
        return Err(PackErrorKind::VarTooSmall {
            var: var.into(),
            patch_so: patch_so(),
            size: sym.size,
            needed: kind.size(),
            what: kind.name(),
        });
    }
    if !sym.writable {
        return Err(PackErrorKind::VarReadOnly { var: var.into(), patch_so: patch_so() });
    }
    Ok(if sym.dynamic { var.into() } else { format!("{var}@{:x}", sym.value) })
}
