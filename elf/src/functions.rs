//! The functions of an ELF object on disk with their prologue kinds, its build-id, and
//! canonicalising gcc's `90 90` entry NOPs to the single instruction `66 90`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use object::{Object, ObjectSection};
use pulp_meta::prologue::{classify, PAD_BEFORE};
use pulp_meta::Prologue;

use crate::symbols::{Symbol, SymbolKind};
use crate::{note_build_id, parse, read, InspectError};

/// A function defined in an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionInfo {
    pub name: String,
    /// The symbol value: the function's address relative to the load base for a shared
    /// object or a PIE.
    pub offset: u64,
    pub size: u64,
    /// Global or weak binding (not `STB_LOCAL`) in `.symtab` or `.dynsym`.
    pub global: bool,
    /// Present in `.dynsym`, so `dlsym` can find it.
    pub dynamic: bool,
    /// How the function begins; `None` when it cannot be live-patched.
    pub prologue: Option<Prologue>,
    /// An `STT_GNU_IFUNC` symbol: `offset` is its resolver, not the code callers reach.
    pub ifunc: bool,
}

/// The object's GNU build-id (`NT_GNU_BUILD_ID`); an error if it has none.
pub fn build_id(path: &Path) -> Result<Vec<u8>, InspectError> {
    let data = read(path)?;
    let file = parse(path, &data)?;
    match note_build_id(&file) {
        Ok(Some(id)) => Ok(id),
        Ok(None) => Err(InspectError::NoBuildId { path: path.into() }),
        Err(source) => Err(InspectError::Parse { path: path.into(), source }),
    }
}

/// Where a function's entry lies in the file.
pub(crate) struct Located<'a> {
    /// Up to [`PAD_BEFORE`] bytes ending at the entry (fewer at the start of a section).
    before: &'a [u8],
    /// Up to 8 bytes from the entry.
    at: &'a [u8],
    /// File offset of the entry.
    file_offset: u64,
}

pub(crate) fn locate<'a>(file: &object::File<'a>, addr: u64) -> Option<Located<'a>> {
    file.sections().find_map(|s| {
        if s.address() > addr || addr >= s.address() + s.size() {
            return None;
        }
        let (file_start, _) = s.file_range()?;
        let data = s.data().ok()?;
        let rel = usize::try_from(addr - s.address()).ok()?;
        if rel >= data.len() {
            return None;
        }
        Some(Located {
            before: &data[rel.saturating_sub(PAD_BEFORE)..rel],
            at: &data[rel..data.len().min(rel + 8)],
            file_offset: file_start + rel as u64,
        })
    })
}

/// Whether the object references or defines `__fentry__` (built with `-pg -mfentry`).
fn uses_fentry(symbols: &[Symbol]) -> bool {
    symbols.iter().any(|s| s.name == "__fentry__")
}

/// Where the `call rel32` at the entry `addr` (`at`: its bytes) goes.
fn call_target(addr: u64, at: &[u8]) -> Option<u64> {
    let (off, len) = pulp_meta::prologue::fentry_call(at)?;
    let rel = at.get(off as usize + 1..off as usize + 5)?;
    let rel = i32::from_le_bytes(rel.try_into().ok()?);
    Some(addr.wrapping_add(off + len).wrapping_add(rel as i64 as u64))
}

/// The defined functions among `symbols`, deduplicated by (name, offset) and sorted by
/// name then offset, each with its prologue kind read from `file`'s bytes. `symbols` may
/// come from a separate debug file; the bytes always come from the object itself.
pub(crate) fn collect(file: &object::File<'_>, symbols: &[Symbol], imports: &[String]) -> Vec<FunctionInfo> {
    // A function that merely starts with a call looks like an fentry one: only believe
    // the fentry kinds in an object that was built with `-mfentry`.
    let fentry = uses_fentry(symbols) || imports.iter().any(|i| i == "__fentry__");
    // An object that defines `__fentry__` (the C library) calls it directly: a `call rel32`
    // elsewhere is an ordinary call (libc's `.cold` parts calling abort, `envz_get`).
    let own_fentry = symbols.iter().find(|s| s.name == "__fentry__").map(|s| s.value);
    let classify = |addr: u64, before: &[u8], at: &[u8]| match classify(before, at) {
        Some(Prologue::FentryCall | Prologue::FentryGotCall) if !fentry => None,
        Some(Prologue::FentryCall) if own_fentry.is_some_and(|f| call_target(addr, at) != Some(f)) => None,
        k => k,
    };
    let mut by_key: BTreeMap<(String, u64), FunctionInfo> = BTreeMap::new();
    for sym in symbols.iter().filter(|s| s.kind == SymbolKind::Function && !s.name.is_empty()) {
        let entry = by_key.entry((sym.name.clone(), sym.value)).or_insert_with(|| FunctionInfo {
            name: sym.name.clone(),
            offset: sym.value,
            size: sym.size,
            global: false,
            dynamic: false,
            prologue: locate(file, sym.value).and_then(|l| classify(sym.value, l.before, l.at)),
            ifunc: false,
        });
        entry.ifunc |= sym.ifunc;
        entry.global |= sym.global;
        entry.dynamic |= sym.dynamic;
        entry.size = entry.size.max(sym.size);
    }
    // BTreeMap order: by name, then offset.
    by_key.into_values().collect()
}

/// The defined `STT_FUNC` symbols of `.symtab` and `.dynsym`, deduplicated by
/// (name, offset) and sorted by name, each with its prologue kind.
pub fn functions(path: &Path) -> Result<Vec<FunctionInfo>, InspectError> {
    let data = read(path)?;
    let file = parse(path, &data)?;
    let info = crate::symbols::ObjectInfo::parse(path, &data)?;
    Ok(collect(&file, &info.symbols, &info.import_names()))
}

/// Rewrite the entry `90 90` of every [`Prologue::NopPad90`] function (and of every
/// `endbr64; nop; nop` [`Prologue::EndbrNopPad`] one) to the single instruction `66 90`,
/// so that no thread can ever be stopped between the two NOPs. The file is replaced
/// atomically (temporary file + rename) and keeps its permissions. Returns how many
/// functions were rewritten; the file is left untouched when there are none.
pub fn canonicalise_entries(path: &Path) -> Result<usize, InspectError> {
    let mut data = read(path)?;
    let mut offsets = Vec::new();
    {
        let file = parse(path, &data)?;
        let info = crate::symbols::ObjectInfo::parse(path, &data)?;
        for f in collect(&file, &info.symbols, &info.import_names()) {
            let nops = match f.prologue {
                Some(Prologue::NopPad90) => 0,
                Some(Prologue::EndbrNopPad) => 4,
                _ => continue,
            };
            let Some(l) = locate(&file, f.offset) else {
                continue;
            };
            if l.at.get(nops..nops + 2) == Some(&[0x90, 0x90][..]) {
                offsets.push(l.file_offset as usize + nops);
            }
        }
    }
    offsets.sort_unstable();
    offsets.dedup();
    if offsets.is_empty() {
        return Ok(0);
    }
    for &o in &offsets {
        data[o] = 0x66;
    }
    write_atomically(path, &data)?;
    Ok(offsets.len())
}

fn write_atomically(path: &Path, data: &[u8]) -> Result<(), InspectError> {
    let err = |source| InspectError::Write { path: path.into(), source };
    let perms = fs::metadata(path).map_err(err)?.permissions();
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.pulp-tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::set_permissions(&tmp, perms)?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}
