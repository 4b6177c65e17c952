//! Every symbol of an ELF object, and what the dynamic linker will need of it: its
//! imports, dependencies (`DT_NEEDED`), search path (`DT_RUNPATH`/`DT_RPATH`), thread-local
//! storage and the address ranges that stay writable after relocation.
//!
//! Local symbols of `.symtab` are grouped by the source file they came from: each object
//! file the linker read contributes an `STT_FILE` symbol followed by its locals, so two
//! static functions of the same name are told apart by their file.

use std::collections::BTreeMap;
use std::path::Path;

use object::elf;
use object::read::elf::{Dyn, FileHeader, ProgramHeader, SectionHeader, Sym};
use object::Endianness;

use crate::InspectError;

/// What a symbol names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SymbolKind {
    Function,
    /// A data object (`STT_OBJECT`, or `STT_COMMON`).
    Object,
    /// A thread-local variable: its value is an offset in the object's TLS block.
    Tls,
    /// Anything else with a name (`STT_NOTYPE`, `STT_GNU_IFUNC`, ...).
    Other,
}

impl SymbolKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Function => "function",
            Self::Object => "data object",
            Self::Tls => "thread-local variable",
            Self::Other => "symbol",
        }
    }
}

/// A defined symbol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    pub name: String,
    /// Its address relative to the load base (for [`SymbolKind::Tls`], its offset in the
    /// object's TLS block).
    pub value: u64,
    pub size: u64,
    pub kind: SymbolKind,
    /// Global or weak binding in `.symtab` or `.dynsym` (hidden symbols of a linked object
    /// are local).
    pub global: bool,
    /// `STV_HIDDEN`/`STV_INTERNAL` in `.symtab`: global inside the object when it was
    /// linked (other files of the object could use it), not exported.
    pub hidden: bool,
    /// Present in `.dynsym`: `dlsym` and other objects can find it.
    pub dynamic: bool,
    /// The source file (`STT_FILE`) a local symbol came from.
    pub file: Option<String>,
    /// Which `STT_FILE` symbol of `.symtab` (counting from 1) starts its group: two files
    /// of the same name are two groups. 0 for symbols of no group.
    pub file_group: u32,
    /// Lies in memory that stays writable after relocation (not in a RELRO range).
    pub writable: bool,
    /// `STT_GNU_IFUNC`: the value is a resolver, run by the dynamic linker to choose the
    /// implementation callers reach.
    pub ifunc: bool,
}

/// One version of a symbol of `.dynsym` (`.gnu.version` and `.gnu.version_d`): `name@VERSION`
/// or, the one a new link binds to, `name@@VERSION`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymbolVersion {
    pub name: String,
    pub version: String,
    /// The default version (`@@`): not hidden in `.gnu.version`.
    pub default: bool,
    pub value: u64,
}

impl SymbolVersion {
    /// `name@VERSION` or `name@@VERSION`.
    pub fn spelled(&self) -> String {
        format!("{}{}{}", self.name, if self.default { "@@" } else { "@" }, self.version)
    }
}

/// An undefined symbol of `.dynsym`: what the dynamic linker must find elsewhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Import {
    pub name: String,
    /// Weak: allowed to stay unresolved (its address is then 0).
    pub weak: bool,
    pub kind: SymbolKind,
}

/// What kind of object a file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// `ET_REL`: an object file, not linked.
    Relocatable,
    /// `ET_EXEC`: a position-dependent executable.
    Executable,
    /// `ET_DYN` with `DF_1_PIE`: a position-independent executable.
    Pie,
    /// `ET_DYN`: a shared object.
    SharedObject,
    Other,
}

/// The symbols and the dynamic-linking facts of one ELF object.
#[derive(Clone, Debug)]
pub struct ObjectInfo {
    pub kind: FileKind,
    pub build_id: Option<Vec<u8>>,
    /// Defined symbols of `.symtab` and `.dynsym`, merged by (name, value, kind).
    pub symbols: Vec<Symbol>,
    /// Whether the object has a `.symtab` (an unstripped object, or a debug file).
    pub has_symtab: bool,
    pub imports: Vec<Import>,
    /// `DT_NEEDED` entries, in order.
    pub needed: Vec<String>,
    /// `DT_RUNPATH` (or `DT_RPATH`) folders, `$ORIGIN` not expanded.
    pub runpath: Vec<String>,
    pub soname: Option<String>,
    /// `.gnu_debuglink`: file name of the separate debug file and its CRC-32.
    pub debuglink: Option<(String, u32)>,
    /// `PT_TLS`: (memory size, alignment), when the object has thread-local storage.
    pub tls: Option<(u64, u64)>,
    /// Address ranges `[start, end)` of writable `PT_LOAD` memory minus `PT_GNU_RELRO`.
    pub writable: Vec<(u64, u64)>,
    /// The versions of the defined symbols of `.dynsym` that have one (beyond the base).
    pub versions: Vec<SymbolVersion>,
}

impl ObjectInfo {
    /// Read the symbols and dynamic section of the ELF object in `data` (read from `path`).
    pub fn parse(path: &Path, data: &[u8]) -> Result<Self, InspectError> {
        let bad = |source| InspectError::Parse { path: path.into(), source };
        if data.get(..4) != Some(&elf::ELFMAG[..]) {
            return Err(InspectError::NotElf { path: path.into() });
        }
        let header = elf::FileHeader64::<Endianness>::parse(data).map_err(bad)?;
        let endian = header.endian().map_err(bad)?;
        if header.e_machine(endian) != elf::EM_X86_64 {
            return Err(InspectError::NotX86_64 { path: path.into() });
        }
        let sections = header.sections(endian, data).map_err(bad)?;
        let phdrs = header.program_headers(endian, data).map_err(bad)?;

        let mut writable: Vec<(u64, u64)> = phdrs
            .iter()
            .filter(|p| p.p_type(endian) == elf::PT_LOAD && p.p_flags(endian) & elf::PF_W != 0)
            .map(|p| (p.p_vaddr(endian), p.p_vaddr(endian) + p.p_memsz(endian)))
            .collect();
        for relro in phdrs.iter().filter(|p| p.p_type(endian) == elf::PT_GNU_RELRO) {
            let (rs, re) = (relro.p_vaddr(endian), relro.p_vaddr(endian) + relro.p_memsz(endian));
            writable = writable
                .into_iter()
                .flat_map(|(s, e)| [(s, e.min(rs)), (s.max(re), e)])
                .filter(|(s, e)| s < e)
                .collect();
        }
        let tls = phdrs
            .iter()
            .find(|p| p.p_type(endian) == elf::PT_TLS)
            .map(|p| (p.p_memsz(endian), p.p_align(endian).max(1)));
        // Sections that are writable in the file (for relocatable objects, where there are
        // no program headers) by index.
        let section_writable = |index: usize| {
            sections.section(object::SectionIndex(index)).is_ok_and(|s| s.sh_flags(endian) & elf::SHF_WRITE as u64 != 0)
        };
        let in_writable = |value: u64| writable.iter().any(|&(s, e)| s <= value && value < e);

        let mut merged: BTreeMap<(String, u64, SymbolKind), Symbol> = BTreeMap::new();
        let version_table = sections.versions(endian, data).ok().flatten();
        let mut versions = Vec::new();
        let mut imports = Vec::new();
        let mut has_symtab = false;
        for (table_type, dynamic) in [(elf::SHT_SYMTAB, false), (elf::SHT_DYNSYM, true)] {
            let table = sections.symbols(endian, data, table_type).map_err(bad)?;
            has_symtab |= !dynamic && !table.is_empty();
            let mut file: Option<String> = None;
            let mut group = 0u32;
            // A symbol whose name lies outside its string table: a damaged file (or a
            // debug file that is not what it claims), not one to read half of.
            let broken = table.iter().skip(1).filter(|s| table.symbol_name(endian, s).is_err()).count();
            if broken > 0 {
                let table_name = if dynamic { ".dynsym" } else { ".symtab" };
                return Err(InspectError::BadSymbols {
                    path: path.into(),
                    table: table_name,
                    broken,
                    total: table.len(),
                });
            }
            for (index, sym) in table.iter().enumerate() {
                let name = table.symbol_name(endian, sym).map(|n| String::from_utf8_lossy(n).into_owned());
                let Ok(name) = name else { continue };
                let st_type = sym.st_type();
                if st_type == elf::STT_FILE {
                    file = Some(name);
                    group += 1;
                    continue;
                }
                if st_type == elf::STT_SECTION || name.is_empty() {
                    continue;
                }
                let kind = match st_type {
                    elf::STT_FUNC | elf::STT_GNU_IFUNC => SymbolKind::Function,
                    elf::STT_OBJECT | elf::STT_COMMON => SymbolKind::Object,
                    elf::STT_TLS => SymbolKind::Tls,
                    _ => SymbolKind::Other,
                };
                if sym.is_undefined(endian) {
                    if dynamic {
                        imports.push(Import { name, weak: sym.st_bind() == elf::STB_WEAK, kind });
                    }
                    continue;
                }
                let value = sym.st_value(endian);
                let global = sym.st_bind() != elf::STB_LOCAL;
                // The linker turns hidden symbols into locals listed after an `STT_FILE`
                // symbol with an empty name; an object file still marks them hidden.
                let hidden = matches!(sym.st_visibility(), elf::STV_HIDDEN | elf::STV_INTERNAL)
                    || !global && !dynamic && file.as_deref() == Some("");
                let writable = kind != SymbolKind::Tls
                    && if phdrs.is_empty() {
                        section_writable(sym.st_shndx(endian) as usize)
                    } else {
                        in_writable(value)
                    };
                let entry = merged.entry((name.clone(), value, kind)).or_insert_with(|| Symbol {
                    name,
                    value,
                    size: 0,
                    kind,
                    global: false,
                    hidden: false,
                    dynamic: false,
                    file: None,
                    file_group: 0,
                    writable,
                    ifunc: false,
                });
                entry.ifunc |= st_type == elf::STT_GNU_IFUNC;
                if let Some(table) = version_table.as_ref().filter(|_| dynamic) {
                    let v = table.version_index(endian, object::SymbolIndex(index));
                    if let Ok(Some(version)) = table.version(v) {
                        versions.push(SymbolVersion {
                            name: entry.name.clone(),
                            version: String::from_utf8_lossy(version.name()).into_owned(),
                            default: !v.is_hidden(),
                            value,
                        });
                    }
                }
                entry.size = entry.size.max(sym.st_size(endian));
                entry.global |= global;
                entry.hidden |= hidden && !dynamic;
                entry.dynamic |= dynamic;
                if !global && !dynamic && !hidden && entry.file.is_none() {
                    entry.file = file.clone();
                    entry.file_group = group;
                }
            }
        }

        let mut needed = Vec::new();
        let mut runpath = Vec::new();
        let mut rpath = Vec::new();
        let mut soname = None;
        if let Some((dyns, link)) = sections.dynamic(endian, data).map_err(bad)? {
            let strings = sections.strings(endian, data, link).map_err(bad)?;
            for d in dyns {
                let Ok(tag) = u32::try_from(d.d_tag(endian)) else { continue };
                let string = || {
                    d.string(endian, strings).ok().map(|s| String::from_utf8_lossy(s).into_owned()).unwrap_or_default()
                };
                match tag {
                    elf::DT_NEEDED => needed.push(string()),
                    elf::DT_RUNPATH => runpath.extend(string().split(':').map(str::to_owned)),
                    elf::DT_RPATH => rpath.extend(string().split(':').map(str::to_owned)),
                    elf::DT_SONAME => soname = Some(string()),
                    _ => {}
                }
            }
        }
        if runpath.is_empty() {
            runpath = rpath;
        }
        runpath.retain(|p| !p.is_empty());

        let kind = match header.e_type(endian) {
            elf::ET_REL => FileKind::Relocatable,
            elf::ET_EXEC => FileKind::Executable,
            elf::ET_DYN if is_pie(endian, &sections, data) => FileKind::Pie,
            elf::ET_DYN => FileKind::SharedObject,
            _ => FileKind::Other,
        };
        let file = object::read::elf::ElfFile64::<Endianness>::parse(data).map_err(bad)?;
        let build_id = crate::note_build_id(&file).ok().flatten();
        let debuglink = object::Object::gnu_debuglink(&file)
            .ok()
            .flatten()
            .map(|(name, crc)| (String::from_utf8_lossy(name).into_owned(), crc));
        Ok(ObjectInfo {
            kind,
            build_id,
            symbols: merged.into_values().collect(),
            has_symtab,
            imports,
            needed,
            runpath,
            soname,
            debuglink,
            tls,
            writable,
            versions,
        })
    }

    /// The versions of the exported symbol `name` (none when it is not versioned).
    pub fn versions_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a SymbolVersion> + 'a {
        self.versions.iter().filter(move |v| v.name == name)
    }

    /// Whether this is the dynamic linker: its soname is one of its names
    /// ([`is_dynamic_linker_name`]), or it defines `_rtld_global`.
    pub fn is_dynamic_linker(&self) -> bool {
        is_dynamic_linker_name(self.soname.as_deref().unwrap_or_default())
            || self.symbols.iter().any(|s| s.name == "_rtld_global")
    }

    /// Read and parse `path`.
    pub fn read(path: &Path) -> Result<Self, InspectError> {
        Self::parse(path, &crate::read(path)?)
    }

    /// The names of [`ObjectInfo::imports`].
    pub fn import_names(&self) -> Vec<String> {
        self.imports.iter().map(|i| i.name.clone()).collect()
    }

    /// The defined symbols named `name`.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Symbol> + 'a {
        self.symbols.iter().filter(move |s| s.name == name)
    }

    /// Whether the object exports `name` (defined in `.dynsym`).
    pub fn exports(&self, name: &str) -> bool {
        self.named(name).any(|s| s.dynamic)
    }
}

/// `DF_1_PIE` in `DT_FLAGS_1`.
fn is_pie(
    endian: Endianness,
    sections: &object::read::elf::SectionTable<'_, elf::FileHeader64<Endianness>>,
    data: &[u8],
) -> bool {
    let Ok(Some((dyns, _))) = sections.dynamic(endian, data) else { return false };
    dyns.iter().any(|d| d.d_tag(endian) == elf::DT_FLAGS_1 as u64 && d.d_val(endian) & elf::DF_1_PIE as u64 != 0)
}

/// Whether a compiler-made name is a clone or part of `base`: `base.isra.0`,
/// `base.constprop.1`, `base.part.0`, `base.cold`, `base.lto_priv.0`, ...
pub fn is_clone_of(name: &str, base: &str) -> bool {
    name.strip_prefix(base).and_then(|rest| rest.strip_prefix('.')).is_some_and(|suffix| {
        ["isra", "constprop", "part", "cold", "clone", "lto_priv", "localalias"].iter().any(|k| suffix.starts_with(k))
    })
}

/// Whether `name` is a clone whose calling convention the compiler chose (`.isra`,
/// `.constprop`): arguments may be removed, split or replaced by constants.
pub fn has_compiler_abi(name: &str) -> bool {
    name.split('.').skip(1).any(|part| part == "isra" || part == "constprop")
}

/// Whether `name` is the cold part of a function (`foo.cold`, `foo.cold.3`): a piece of
/// its body placed elsewhere, jumped to from it, never called.
pub fn is_cold_part(name: &str) -> bool {
    cold_parent(name).is_some()
}

/// The function whose cold part `name` is: the name before its first `.cold` component
/// (`f.cold` / `f.cold.3` -> `f`, `f.part.0.cold` -> `f.part.0`); `None` when no
/// component after the first is `cold`.
pub fn cold_parent(name: &str) -> Option<&str> {
    name.match_indices(".cold")
        .map(|(i, _)| i)
        .find(|&i| name[i + ".cold".len()..].is_empty() || name[i + ".cold".len()..].starts_with('.'))
        .map(|i| &name[..i])
}

/// `ld-linux*`, `ld.so*`, `ld64.so*`: the names (soname or file name) the dynamic linker
/// goes by.
pub fn is_dynamic_linker_name(name: &str) -> bool {
    ["ld-linux", "ld.so", "ld64.so"].iter().any(|p| name.starts_with(p))
}

/// `libc.so*`: the soname (or file name) of the C library.
pub fn is_c_library_name(name: &str) -> bool {
    name.starts_with("libc.so")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cold_parts() {
        for (name, parent) in [
            ("f.cold", Some("f")),
            ("f.cold.3", Some("f")),
            ("f.part.0.cold", Some("f.part.0")),
            ("f.cold.cold", Some("f")),
            // The first `.cold` that is a whole component counts.
            ("f.coldx.cold", Some("f.coldx")),
            ("f.coldness", None),
            ("f.xcold", None),
            ("cold", None),
            ("f", None),
        ] {
            assert_eq!(cold_parent(name), parent, "{name}");
            // The rule `is_cold_part` had on its own: a component after the first is `cold`.
            assert_eq!(is_cold_part(name), name.split('.').skip(1).any(|part| part == "cold"), "{name}");
        }
    }
}
