//! One object as the tools see it: its symbols (from its own symbol table, or from its
//! separate debug file when it is stripped), its functions with their prologue kinds,
//! and its debug info.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::debugfile::{self, DebugLookup, DebugSearch};
use crate::functions::{collect, FunctionInfo};
use crate::symbols::{ObjectInfo, Symbol};
use crate::{parse, read, InspectError};

/// Where an object's symbols came from.
#[derive(Clone, Debug)]
pub enum SymbolSource {
    /// Its own `.symtab`.
    Own,
    /// A separate debug file, whose build-id matched.
    DebugFile(PathBuf),
    /// Stripped, and no debug file was found: only exported symbols are known.
    Stripped { tried: Vec<(PathBuf, String)> },
}

/// An object inspected.
#[derive(Clone, Debug)]
pub struct Inspected {
    pub path: PathBuf,
    /// The object's own facts (build-id, imports, dependencies, symbols).
    pub info: ObjectInfo,
    /// Every known symbol: the object's, merged with its debug file's.
    pub symbols: Vec<Symbol>,
    pub functions: Vec<FunctionInfo>,
    pub source: SymbolSource,
    /// The file holding its DWARF, if any: the object or its debug file.
    pub dwarf: Option<PathBuf>,
}

/// Inspect `path`, looking for a debug file as `search` says when it is stripped (or has
/// no DWARF of its own).
pub fn inspect(path: &Path, search: &DebugSearch) -> Result<Inspected, InspectError> {
    let data = read(path)?;
    let file = parse(path, &data)?;
    let info = ObjectInfo::parse(path, &data)?;
    let own_dwarf = object::Object::section_by_name(&file, ".debug_info").is_some();
    let explicit = !search.files.is_empty();
    let (mut symbols, source, dwarf) = if info.has_symtab && own_dwarf && !explicit {
        (info.symbols.clone(), SymbolSource::Own, Some(path.to_path_buf()))
    } else {
        match debugfile::find(path, &info, search) {
            DebugLookup::Found { path: debug, info: dinfo } => {
                let mut all = info.symbols.clone();
                all.extend(dinfo.symbols.iter().cloned());
                (merge(all), SymbolSource::DebugFile(debug.clone()), Some(debug))
            }
            DebugLookup::NotFound { tried } if !info.has_symtab => {
                (info.symbols.clone(), SymbolSource::Stripped { tried }, None)
            }
            DebugLookup::NotFound { .. } => {
                (info.symbols.clone(), SymbolSource::Own, own_dwarf.then(|| path.to_path_buf()))
            }
        }
    };
    symbols.sort_by(|a, b| (&a.name, a.value).cmp(&(&b.name, b.value)));
    let functions = collect(&file, &symbols, &info.import_names());
    Ok(Inspected { path: path.to_path_buf(), info, symbols, functions, source, dwarf })
}

/// Merge symbols seen in several tables by (name, value, kind).
fn merge(all: Vec<Symbol>) -> Vec<Symbol> {
    let mut by_key: BTreeMap<(String, u64, crate::SymbolKind), Symbol> = BTreeMap::new();
    for s in all {
        match by_key.get_mut(&(s.name.clone(), s.value, s.kind)) {
            Some(e) => {
                e.size = e.size.max(s.size);
                e.global |= s.global;
                e.hidden |= s.hidden;
                e.dynamic |= s.dynamic;
                e.writable |= s.writable;
                e.ifunc |= s.ifunc;
                if e.file.is_none() {
                    e.file = s.file;
                    e.file_group = s.file_group;
                }
            }
            None => {
                by_key.insert((s.name.clone(), s.value, s.kind), s);
            }
        }
    }
    by_key.into_values().collect()
}

impl Inspected {
    /// The defined symbols named `name`.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Symbol> + 'a {
        self.symbols.iter().filter(move |s| s.name == name)
    }

    /// Whether static symbols may be missing because the object is stripped and no debug
    /// file was found.
    pub fn stripped(&self) -> bool {
        matches!(self.source, SymbolSource::Stripped { .. })
    }

    /// When debug info knows `name` only as inlined, the functions it was inlined into.
    pub fn only_inlined(&self, name: &str) -> Option<Vec<String>> {
        crate::dwarf::only_inlined(self.dwarf.as_deref()?, name).ok().flatten()
    }
}
