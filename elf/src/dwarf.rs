//! Questions answered by an object's DWARF debug info (its own, or its separate debug
//! file's).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::Path;

use gimli::{AttributeValue, EndianSlice, RunTimeEndian, UnitSectionOffset};
use object::{Object, ObjectSection};

use crate::InspectError;

type Reader<'a> = EndianSlice<'a, RunTimeEndian>;

/// The DWARF of one object, its sections loaded.
pub struct Dwarf<'data> {
    sections: gimli::DwarfSections<Cow<'data, [u8]>>,
    empty: bool,
}

impl<'data> Dwarf<'data> {
    /// Load the debug sections of `file` (empty when it has none).
    pub fn load(path: &Path, file: &object::File<'data>) -> Result<Self, InspectError> {
        let sections = gimli::DwarfSections::load(|id| -> Result<Cow<'data, [u8]>, InspectError> {
            let Some(s) = file.section_by_name(id.name()) else { return Ok(Cow::Borrowed(&[])) };
            s.uncompressed_data().map_err(|e| InspectError::Dwarf {
                path: path.into(),
                reason: format!("cannot read section {}: {e}", id.name()),
            })
        })?;
        let empty = file.section_by_name(".debug_info").is_none_or(|s| s.size() == 0);
        Ok(Self { sections, empty })
    }

    fn borrow(&self) -> gimli::Dwarf<Reader<'_>> {
        self.sections.borrow(|s| EndianSlice::new(s, RunTimeEndian::Little))
    }

    /// Whether the object has any debug info.
    pub fn is_empty(&self) -> bool {
        self.empty
    }

    /// When `name` is a function that debug info knows only as inlined (no out-of-line
    /// copy), the functions it was inlined into, sorted; `None` when it has an
    /// out-of-line copy or debug info does not know it.
    pub fn only_inlined(&self, name: &str) -> Result<Option<Vec<String>>, gimli::Error> {
        let dwarf = self.borrow();
        // Pass 1: the name of every subprogram (by global offset), and which are `name`.
        let mut names: HashMap<UnitSectionOffset, String> = HashMap::new();
        let mut origins: HashMap<UnitSectionOffset, UnitSectionOffset> = HashMap::new();
        let mut units = dwarf.units();
        while let Some(header) = units.next()? {
            let unit = dwarf.unit(header)?;
            let mut entries = unit.entries();
            while let Some(entry) = entries.next_dfs()? {
                if entry.tag() != gimli::DW_TAG_subprogram {
                    continue;
                }
                let at = entry.offset().to_unit_section_offset(&unit.header);
                if let Some(n) = entry.attr_value(gimli::DW_AT_name) {
                    if let Ok(s) = dwarf.attr_string(&unit, n) {
                        names.insert(at, String::from_utf8_lossy(s.slice()).into_owned());
                    }
                }
                for a in [gimli::DW_AT_abstract_origin, gimli::DW_AT_specification] {
                    if let Some(o) = entry.attr_value(a).and_then(|v| global_ref(&unit, v)) {
                        origins.insert(at, o);
                    }
                }
            }
        }
        let name_of = |at: UnitSectionOffset| -> Option<&String> {
            names.get(&at).or_else(|| {
                origins.get(&at).and_then(|o| names.get(o).or_else(|| origins.get(o).and_then(|oo| names.get(oo))))
            })
        };
        let wanted: HashSet<UnitSectionOffset> = names.iter().filter(|(_, n)| *n == name).map(|(&at, _)| at).collect();
        if wanted.is_empty() {
            return Ok(None);
        }
        let is_wanted = |at: UnitSectionOffset| {
            wanted.contains(&at)
                || origins
                    .get(&at)
                    .is_some_and(|o| wanted.contains(o) || origins.get(o).is_some_and(|oo| wanted.contains(oo)))
        };
        // Pass 2: an out-of-line copy (code addresses) ends the question; inlined copies
        // give their callers.
        let mut callers = Vec::new();
        let mut units = dwarf.units();
        while let Some(header) = units.next()? {
            let unit = dwarf.unit(header)?;
            let mut entries = unit.entries();
            let mut stack: Vec<(isize, Option<String>)> = Vec::new();
            while let Some(entry) = entries.next_dfs()? {
                let depth = entry.depth();
                while stack.last().is_some_and(|(d, _)| *d >= depth) {
                    stack.pop();
                }
                let at = entry.offset().to_unit_section_offset(&unit.header);
                let has_code = entry.attr_value(gimli::DW_AT_low_pc).is_some()
                    || entry.attr_value(gimli::DW_AT_ranges).is_some()
                    || entry.attr_value(gimli::DW_AT_entry_pc).is_some();
                match entry.tag() {
                    gimli::DW_TAG_subprogram => {
                        if has_code && is_wanted(at) {
                            return Ok(None);
                        }
                        let n = if has_code { name_of(at).cloned() } else { None };
                        stack.push((depth, n));
                    }
                    gimli::DW_TAG_inlined_subroutine => {
                        let origin = entry.attr_value(gimli::DW_AT_abstract_origin).and_then(|v| global_ref(&unit, v));
                        if origin.is_some_and(is_wanted) {
                            if let Some(caller) = stack.iter().rev().find_map(|(_, n)| n.clone()) {
                                callers.push(caller);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        callers.sort();
        callers.dedup();
        Ok(Some(callers))
    }
}

fn global_ref(unit: &gimli::Unit<Reader<'_>>, v: AttributeValue<Reader<'_>>) -> Option<UnitSectionOffset> {
    match v {
        AttributeValue::UnitRef(o) => Some(o.to_unit_section_offset(&unit.header)),
        AttributeValue::DebugInfoRef(o) => Some(UnitSectionOffset(o.0)),
        _ => None,
    }
}

/// [`Dwarf::only_inlined`] for the object (or debug file) at `path`; `Ok(None)` also when
/// it has no debug info.
pub fn only_inlined(path: &Path, name: &str) -> Result<Option<Vec<String>>, InspectError> {
    let data = crate::read(path)?;
    let file = crate::parse(path, &data)?;
    let dwarf = Dwarf::load(path, &file)?;
    if dwarf.is_empty() {
        return Ok(None);
    }
    dwarf.only_inlined(name).map_err(|e| InspectError::Dwarf { path: path.into(), reason: e.to_string() })
}
