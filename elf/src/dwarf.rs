//! Questions answered by an object's DWARF debug info (its own, or its separate debug
//! file's).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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
        Self::load_with(file, |id, s| {
            s.uncompressed_data().map_err(|e| InspectError::Dwarf {
                path: path.into(),
                reason: format!("cannot read section {}: {e}", id.name()),
            })
        })
    }

    /// Load the debug sections of `file`, each present one's data given by `read` (an
    /// absent one is empty).
    fn load_with(
        file: &object::File<'data>,
        read: impl Fn(gimli::SectionId, &object::Section<'data, '_>) -> Result<Cow<'data, [u8]>, InspectError>,
    ) -> Result<Self, InspectError> {
        let sections = gimli::DwarfSections::load(|id| -> Result<Cow<'data, [u8]>, InspectError> {
            let Some(s) = file.section_by_name(id.name()) else { return Ok(Cow::Borrowed(&[])) };
            read(id, &s)
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

/// A struct, union or class as debug info describes it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Layout {
    /// `struct`, `union` or `class`.
    pub tag: &'static str,
    pub size: Option<u64>,
    /// (name, offset in bytes, type) per member.
    pub members: Vec<(String, Option<u64>, String)>,
}

impl Layout {
    /// What differs from `other`, in words.
    pub fn describe_change(&self, other: &Layout) -> String {
        if self.size != other.size {
            return format!(
                "its size changes from {} to {} bytes",
                self.size.map_or("?".into(), |s| s.to_string()),
                other.size.map_or("?".into(), |s| s.to_string())
            );
        }
        for m in &other.members {
            match self.members.iter().find(|o| o.0 == m.0) {
                None => return format!("member `{}` is added", m.0),
                Some(o) if o.1 != m.1 => return format!("member `{}` moves from offset {:?} to {:?}", m.0, o.1, m.1),
                Some(o) if o.2 != m.2 => return format!("member `{}` changes type from `{}` to `{}`", m.0, o.2, m.2),
                _ => {}
            }
        }
        if let Some(m) = self.members.iter().find(|o| !other.members.iter().any(|m| m.0 == o.0)) {
            return format!("member `{}` is removed", m.0);
        }
        "its members change".into()
    }
}

/// Debug sections of an object file (`ET_REL`) with their relocations applied, so that
/// string and unit offsets read right.
fn load_relocated<'data>(path: &Path, file: &object::File<'data>) -> Result<Dwarf<'data>, InspectError> {
    Dwarf::load_with(file, |_, s| {
        let bad = |e: object::Error| InspectError::Dwarf { path: path.into(), reason: e.to_string() };
        let mut data = s.uncompressed_data().map_err(bad)?.into_owned();
        for (offset, rel) in s.relocations() {
            let object::RelocationTarget::Symbol(idx) = rel.target() else { continue };
            let base = file.symbol_by_index(idx).map(|sym| object::ObjectSymbol::address(&sym)).unwrap_or(0);
            let value = (base as i64).wrapping_add(rel.addend()) as u64;
            let at = offset as usize;
            match rel.size() {
                32 if at + 4 <= data.len() => data[at..at + 4].copy_from_slice(&(value as u32).to_le_bytes()),
                64 if at + 8 <= data.len() => data[at..at + 8].copy_from_slice(&value.to_le_bytes()),
                _ => {}
            }
        }
        Ok(Cow::Owned(data))
    })
}

/// The named structs, unions and classes the debug info of `path` (an object file or a
/// linked object) describes, by name (an anonymous one by its typedef's name).
pub fn layouts(path: &Path) -> Result<BTreeMap<String, BTreeSet<Layout>>, InspectError> {
    let data = crate::read(path)?;
    let file = crate::parse(path, &data)?;
    let dwarf = if file.kind() == object::ObjectKind::Relocatable {
        load_relocated(path, &file)?
    } else {
        Dwarf::load(path, &file)?
    };
    dwarf.layouts().map_err(|e| InspectError::Dwarf { path: path.into(), reason: e.to_string() })
}

impl Dwarf<'_> {
    fn layouts(&self) -> Result<BTreeMap<String, BTreeSet<Layout>>, gimli::Error> {
        let dwarf = self.borrow();
        let mut out: BTreeMap<String, BTreeSet<Layout>> = BTreeMap::new();
        let mut units = dwarf.units();
        while let Some(header) = units.next()? {
            let unit = dwarf.unit(header)?;
            let mut typedefs: HashMap<gimli::UnitOffset, String> = HashMap::new();
            let mut entries = unit.entries();
            while let Some(e) = entries.next_dfs()? {
                if e.tag() == gimli::DW_TAG_typedef {
                    if let (Some(AttributeValue::UnitRef(t)), Some(n)) =
                        (e.attr_value(gimli::DW_AT_type), name(&dwarf, &unit, e))
                    {
                        typedefs.entry(t).or_insert(n);
                    }
                }
            }
            let mut tree = unit.entries_tree(None)?;
            let root = tree.root()?;
            collect_layouts(&dwarf, &unit, root, &typedefs, &mut out)?;
        }
        Ok(out)
    }
}

fn name(
    dwarf: &gimli::Dwarf<Reader<'_>>,
    unit: &gimli::Unit<Reader<'_>>,
    e: &gimli::DebuggingInformationEntry<Reader<'_>>,
) -> Option<String> {
    let v = e.attr_value(gimli::DW_AT_name)?;
    dwarf.attr_string(unit, v).ok().map(|s| String::from_utf8_lossy(s.slice()).into_owned())
}

fn collect_layouts(
    dwarf: &gimli::Dwarf<Reader<'_>>,
    unit: &gimli::Unit<Reader<'_>>,
    node: gimli::EntriesTreeNode<'_, '_, Reader<'_>>,
    typedefs: &HashMap<gimli::UnitOffset, String>,
    out: &mut BTreeMap<String, BTreeSet<Layout>>,
) -> Result<(), gimli::Error> {
    let e = node.entry().clone();
    let tag = match e.tag() {
        gimli::DW_TAG_structure_type => Some("struct"),
        gimli::DW_TAG_union_type => Some("union"),
        gimli::DW_TAG_class_type => Some("class"),
        _ => None,
    };
    let mut members = Vec::new();
    let mut children = node.children();
    while let Some(child) = children.next()? {
        let c = child.entry().clone();
        if tag.is_some() && c.tag() == gimli::DW_TAG_member {
            let offset = match c.attr_value(gimli::DW_AT_data_member_location) {
                Some(AttributeValue::Udata(o)) => Some(o),
                Some(AttributeValue::Data1(o)) => Some(o as u64),
                Some(AttributeValue::Data2(o)) => Some(o as u64),
                Some(AttributeValue::Data4(o)) => Some(o as u64),
                Some(AttributeValue::Sdata(o)) => Some(o as u64),
                _ => None,
            };
            let ty = match c.attr_value(gimli::DW_AT_type) {
                Some(AttributeValue::UnitRef(t)) => describe_type(dwarf, unit, t, 4),
                _ => "?".into(),
            };
            members.push((name(dwarf, unit, &c).unwrap_or_default(), offset, ty));
        }
        collect_layouts(dwarf, unit, child, typedefs, out)?;
    }
    if let Some(tag) = tag {
        if e.attr_value(gimli::DW_AT_declaration).is_none() {
            let n = name(dwarf, unit, &e).or_else(|| typedefs.get(&e.offset()).cloned());
            if let Some(n) = n {
                let size = e.attr_value(gimli::DW_AT_byte_size).and_then(|v| v.udata_value());
                out.entry(n).or_default().insert(Layout { tag, size, members });
            }
        }
    }
    Ok(())
}

/// A type's name for comparison (`int`, `struct foo *`, `char[16]`).
fn describe_type(
    dwarf: &gimli::Dwarf<Reader<'_>>,
    unit: &gimli::Unit<Reader<'_>>,
    at: gimli::UnitOffset,
    depth: u32,
) -> String {
    let Ok(e) = unit.entry(at) else { return "?".into() };
    let inner = |depth: u32| match e.attr_value(gimli::DW_AT_type) {
        Some(AttributeValue::UnitRef(t)) if depth > 0 => describe_type(dwarf, unit, t, depth - 1),
        Some(_) => "?".into(),
        None => "void".into(),
    };
    let own = name(dwarf, unit, &e);
    match e.tag() {
        gimli::DW_TAG_pointer_type => format!("{} *", inner(depth)),
        gimli::DW_TAG_const_type => format!("const {}", inner(depth)),
        gimli::DW_TAG_volatile_type => format!("volatile {}", inner(depth)),
        gimli::DW_TAG_array_type => {
            let mut dims = String::new();
            let mut tree = match unit.entries_tree(Some(at)) {
                Ok(t) => t,
                Err(_) => return format!("{}[]", inner(depth)),
            };
            if let Ok(root) = tree.root() {
                let mut ch = root.children();
                while let Ok(Some(c)) = ch.next() {
                    let c = c.entry();
                    let n = c.attr_value(gimli::DW_AT_count).and_then(|v| v.udata_value()).or_else(|| {
                        c.attr_value(gimli::DW_AT_upper_bound).and_then(|v| v.udata_value()).map(|u| u + 1)
                    });
                    dims.push_str(&format!("[{}]", n.map_or(String::new(), |n| n.to_string())));
                }
            }
            format!("{}{dims}", inner(depth))
        }
        gimli::DW_TAG_structure_type => format!("struct {}", own.unwrap_or_default()),
        gimli::DW_TAG_union_type => format!("union {}", own.unwrap_or_default()),
        gimli::DW_TAG_class_type => format!("class {}", own.unwrap_or_default()),
        gimli::DW_TAG_enumeration_type => format!("enum {}", own.unwrap_or_default()),
        _ => own.unwrap_or_else(|| inner(depth)),
    }
}
