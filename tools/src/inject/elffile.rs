//! The few parts of an ELF file (64-bit, little-endian) the tools read while a process
//! waits: its section table and the bytes of named sections, each with one `pread`. No
//! symbol table is parsed unless asked for, so looking at a large object costs a handful
//! of system calls (the `object` crate, through `ReadCache`, reads and parses far more).

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

/// Device, inode, size and modification time (ns) of a file: a changed or replaced file
/// is another file.
pub type FileIdentity = (u64, u64, u64, i64);

/// The identity of the file `md` describes.
pub fn identity(md: &std::fs::Metadata) -> FileIdentity {
    use std::os::unix::fs::MetadataExt;
    (md.dev(), md.ino(), md.size(), md.mtime() * 1_000_000_000 + md.mtime_nsec())
}

/// What was read from files, by a key naming the file (its identity, and what was asked
/// of it): the processes of one `--all` map the same files, which are then read once. At
/// most `limit` entries are kept (a run over processes that all map different files
/// reads each of them, and keeps no more).
pub struct FileCache<K, T> {
    entries: Mutex<Vec<(K, T)>>,
    limit: usize,
}

impl<K: PartialEq, T: Clone> FileCache<K, T> {
    pub const fn new(limit: usize) -> Self {
        Self { entries: Mutex::new(Vec::new()), limit }
    }

    /// The value kept for `key`, else what `read` gives (kept if there is room).
    pub fn get_or_read<E>(&self, key: K, read: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let lock = || self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, v)) = lock().iter().find(|(k, _)| *k == key) {
            return Ok(v.clone());
        }
        let value = read()?;
        let mut entries = lock();
        if entries.len() < self.limit {
            entries.push((key, value.clone()));
        }
        Ok(value)
    }
}

/// Largest section read (unwind tables and dynamic symbol tables are far smaller).
const MAX_SECTION: u64 = 64 << 20;

/// One section header.
#[derive(Clone, Debug)]
pub struct Section {
    /// Its address range in the object (SVMA).
    pub addr: Range<u64>,
    offset: u64,
    /// SHT_NOBITS: no bytes in the file.
    nobits: bool,
}

/// The section table of an opened ELF file.
pub struct ElfFile<'a> {
    file: &'a File,
    /// Lowest PT_LOAD address, page aligned (the load base is where it is mapped, minus this).
    pub first_vaddr: u64,
    sections: Vec<(String, Section)>,
}

fn u16_at(b: &[u8], i: usize) -> u64 {
    u16::from_le_bytes([b[i], b[i + 1]]) as u64
}

fn u32_at(b: &[u8], i: usize) -> u64 {
    u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes")) as u64
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"))
}

fn read(file: &File, offset: u64, len: u64) -> Option<Vec<u8>> {
    if len > MAX_SECTION {
        return None;
    }
    let mut buf = vec![0; len as usize];
    file.read_exact_at(&mut buf, offset).ok()?;
    Some(buf)
}

impl<'a> ElfFile<'a> {
    /// Read the ELF header, the program headers (for the load base), the section headers
    /// and their names: four `pread`s. `None` for anything else than a 64-bit
    /// little-endian ELF file with a section table.
    pub fn read(file: &'a File) -> Option<Self> {
        let eh = read(file, 0, 64)?;
        if eh[..4] != *b"\x7fELF" || eh[4] != 2 || eh[5] != 1 {
            return None;
        }
        let (phoff, shoff) = (u64_at(&eh, 0x20), u64_at(&eh, 0x28));
        let (phentsize, phnum) = (u16_at(&eh, 0x36), u16_at(&eh, 0x38));
        let (shentsize, shnum, shstrndx) = (u16_at(&eh, 0x3a), u16_at(&eh, 0x3c), u16_at(&eh, 0x3e));
        if phentsize < 56 || shentsize < 64 || shstrndx >= shnum {
            return None;
        }
        let ph = read(file, phoff, phentsize * phnum)?;
        let first_vaddr = ph
            .chunks_exact(phentsize as usize)
            .filter(|h| u32_at(h, 0) == 1)
            .map(|h| u64_at(h, 0x10))
            .min()
            .unwrap_or(0)
            & !0xfff;
        let sh = read(file, shoff, shentsize * shnum)?;
        let headers: Vec<&[u8]> = sh.chunks_exact(shentsize as usize).collect();
        let strtab = headers[shstrndx as usize];
        let names = read(file, u64_at(strtab, 0x18), u64_at(strtab, 0x20))?;
        let sections = headers
            .iter()
            .map(|h| {
                let at = u32_at(h, 0) as usize;
                let name = names.get(at..).and_then(|n| n.split(|&b| b == 0).next()).unwrap_or_default();
                let (addr, size) = (u64_at(h, 0x10), u64_at(h, 0x20));
                let section = Section { addr: addr..addr + size, offset: u64_at(h, 0x18), nobits: u32_at(h, 4) == 8 };
                (String::from_utf8_lossy(name).into_owned(), section)
            })
            .collect();
        Some(Self { file, first_vaddr, sections })
    }

    /// The section called `name`.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }

    /// The bytes of the section called `name` (`None` when it has none in the file).
    pub fn data(&self, name: &str) -> Option<Vec<u8>> {
        let s = self.section(name).filter(|s| !s.nobits)?;
        read(self.file, s.offset, s.addr.end - s.addr.start)
    }

    /// The value of the dynamic symbol `name` (from `.dynsym` and `.dynstr`), if it is
    /// defined; of its default version when there are several (`.gnu.version` marks the
    /// others hidden).
    pub fn dynamic_symbol(&self, name: &str) -> Option<u64> {
        let (syms, strs) = (self.data(".dynsym")?, self.data(".dynstr")?);
        let versions = self.data(".gnu.version").unwrap_or_default();
        let mut hidden_one = None;
        for (i, sym) in syms.chunks_exact(24).enumerate() {
            let at = u32_at(sym, 0) as usize;
            let defined = u16_at(sym, 6) != 0; // st_shndx != SHN_UNDEF
            if !defined || strs.get(at..).and_then(|n| n.split(|&b| b == 0).next()) != Some(name.as_bytes()) {
                continue;
            }
            if versions.get(2 * i..2 * i + 2).is_some_and(|v| v[1] & 0x80 != 0) {
                hidden_one.get_or_insert(u64_at(sym, 8));
            } else {
                return Some(u64_at(sym, 8));
            }
        }
        hidden_one
    }

    /// The object's `DT_SONAME` (from `.dynamic` and `.dynstr`), if it has one.
    pub fn soname(&self) -> Option<String> {
        let (dynamic, strs) = (self.data(".dynamic")?, self.data(".dynstr")?);
        let at = dynamic.chunks_exact(16).take_while(|d| u64_at(d, 0) != 0).find(|d| u64_at(d, 0) == 14)?;
        let name = strs.get(usize::try_from(u64_at(at, 8)).ok()?..)?.split(|&b| b == 0).next()?;
        Some(String::from_utf8_lossy(name).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};

    /// What a few `pread`s find is what the `object` crate finds.
    #[test]
    fn matches_a_full_parse() {
        let me = std::env::current_exe().unwrap();
        let libc_object = crate::inject::process::Process::open(std::process::id() as i32)
            .unwrap()
            .objects()
            .unwrap()
            .into_iter()
            .find(|o| o.path.contains("libc.so"))
            .expect("libc mapped");
        let libc = libc_object.path.clone();
        for path in [me.to_str().unwrap(), libc.as_str()] {
            let bytes = std::fs::read(path).unwrap();
            let full = object::File::parse(&*bytes).unwrap();
            let f = File::open(path).unwrap();
            let mine = ElfFile::read(&f).unwrap();
            for name in [".text", ".got", ".eh_frame", ".eh_frame_hdr", ".dynsym", ".bss"] {
                let want = full.section_by_name(name);
                let got = mine.section(name);
                assert_eq!(got.map(|s| s.addr.clone()), want.as_ref().map(|s| s.address()..s.address() + s.size()));
                let want_data = want.and_then(|s| s.data().ok().filter(|d| !d.is_empty()).map(<[u8]>::to_vec));
                assert_eq!(mine.data(name).filter(|d| !d.is_empty()), want_data, "{path} {name}");
            }
            let soname = pulp_elf::ObjectInfo::parse(std::path::Path::new(path), &bytes).unwrap().soname;
            assert_eq!(mine.soname(), soname, "{path}");
            if path == libc {
                assert_eq!(mine.soname().as_deref(), Some("libc.so.6"));
            }
            let first = full.segments().map(|s| s.address()).min().unwrap() & !0xfff;
            assert_eq!(mine.first_vaddr, first, "{path}");
            // Names defined once (several versions of one name are told apart by version).
            let defined: Vec<_> = full.dynamic_symbols().filter(|s| s.is_definition()).collect();
            let once = |n: &str| defined.iter().filter(|s| s.name() == Ok(n)).count() == 1;
            for sym in defined.iter().filter(|s| once(s.name().unwrap())).take(200) {
                let name = sym.name().unwrap();
                assert_eq!(mine.dynamic_symbol(name), Some(sym.address()), "{path} {name}");
            }
        }
        // Several versions of one name: the default one, as the dynamic linker binds it.
        // SAFETY: dlsym with a NUL-terminated name only looks the symbol up.
        let bound = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"lio_listio64".as_ptr()) } as u64;
        let f = File::open(&libc).unwrap();
        if bound != 0 {
            // glibc ≥ 2.34 defines it in libc, in three versions.
            assert_eq!(ElfFile::read(&f).unwrap().dynamic_symbol("lio_listio64"), Some(bound - libc_object.base));
        }
        assert_eq!(ElfFile::read(&File::open("/proc/self/status").unwrap()).map(|_| ()), None);
    }
}
