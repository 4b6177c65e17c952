//! The running object's symbols as the generator needs them: a unit's static symbols are
//! found among the locals of the unit's own source file (the `STT_FILE` group of the
//! symbol table), globals and hidden symbols by name.

use std::collections::{BTreeSet, HashMap};

use pulp_elf::{Symbol, SymbolKind};

/// The symbols of the object the processes run.
pub struct TargetIndex {
    symbols: Vec<Symbol>,
    /// File name -> the file groups of that name.
    groups: HashMap<String, BTreeSet<u32>>,
}

impl TargetIndex {
    pub fn new(symbols: Vec<Symbol>) -> Self {
        let mut groups: HashMap<String, BTreeSet<u32>> = HashMap::new();
        for s in &symbols {
            if let Some(f) = &s.file {
                groups.entry(f.clone()).or_default().insert(s.file_group);
            }
        }
        Self { symbols, groups }
    }

    /// The file group of a unit whose `.file` is `file` and whose local symbols are
    /// `locals`: the one group of that name, or of several the one sharing most names.
    pub fn group_of(&self, file: &str, locals: &BTreeSet<String>) -> Option<u32> {
        let candidates = self.groups.get(file).or_else(|| {
            // A path in `.file`: the symbol table may hold its base name.
            let base = file.rsplit('/').next()?;
            self.groups.get(base)
        })?;
        candidates
            .iter()
            .copied()
            .max_by_key(|&g| self.symbols.iter().filter(|s| s.file_group == g && locals.contains(&s.name)).count())
    }

    /// The local symbol `name` of file group `group`.
    pub fn local(&self, group: Option<u32>, name: &str) -> Option<&Symbol> {
        let g = group?;
        self.symbols.iter().find(|s| s.file_group == g && s.name == name && s.file.is_some())
    }

    /// Every symbol.
    pub fn symbols(&self) -> &[Symbol] {
        &self.symbols
    }

    /// The global, weak or hidden symbol `name` (defined in any file of the object).
    pub fn global(&self, name: &str) -> Option<&Symbol> {
        let mut found = self.symbols.iter().filter(|s| s.name == name && (s.global || s.hidden || s.dynamic));
        let first = found.next()?;
        // Prefer code and data over other kinds (an alias of another type).
        Some(found.find(|s| s.kind != SymbolKind::Other).filter(|_| first.kind == SymbolKind::Other).unwrap_or(first))
    }
}
