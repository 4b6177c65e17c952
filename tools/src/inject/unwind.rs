//! Unwinding a stopped thread of the target from outside, with the `.eh_frame` of
//! every mapped object (framehop), and naming the frames for reports.
//!
//! A walk is trusted only when it reaches the end of the stack (the outermost frame's
//! CFI says "no return address") through frames that all lie in known objects; anything
//! else is reported as incomplete and the caller falls back to a conservative scan.

use crate::inject::elffile::{identity, ElfFile, FileCache, FileIdentity};
use crate::inject::process::{Mapping, Process};
use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, Module, Unwinder as _};
use object::{Object, ObjectSection, ObjectSymbol};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

/// Most frames we follow before calling a stack incomplete.
const MAX_FRAMES: usize = 1024;

struct ObjectInfo {
    path: String,
    /// Where to read the object again for its symbols (map_files, or the vDSO's bytes).
    source: Source,
    range: Range<u64>,
    base: u64,
    /// Function symbols (start, size, name), sorted, parsed on first use.
    symbols: Option<Vec<(u64, u64, String)>>,
}

enum Source {
    File(std::path::PathBuf),
    Memory(Vec<u8>),
}

/// The executable objects of one process, ready to unwind its threads.
pub struct Unwinder {
    inner: UnwinderX86_64<Arc<[u8]>>,
    cache: CacheX86_64,
    objects: Vec<ObjectInfo>,
}

/// The result of a walk: frame addresses, the stopped instruction first, then
/// return addresses.
pub struct Walk {
    pub frames: Vec<u64>,
    /// True when the walk reached the end of the stack through known objects.
    pub complete: bool,
}

/// What unwinding needs of one object file: where its sections are (SVMAs) and the bytes
/// of its unwind tables.
struct UnwindSections {
    /// Lowest PT_LOAD address, page aligned: the load base is where this is mapped minus it.
    first_vaddr: u64,
    text: Option<Range<u64>>,
    got: Option<Range<u64>>,
    eh_frame: Option<(Range<u64>, Arc<[u8]>)>,
    eh_frame_hdr: Option<(Range<u64>, Arc<[u8]>)>,
}

/// The unwind sections of files already read (a machine runs a few libraries many times;
/// the limit bounds the memory of a run over processes that all map different ones).
static SECTIONS: FileCache<FileIdentity, Arc<UnwindSections>> = FileCache::new(256);

/// Read the unwind sections of an ELF file: its section table and the two unwind
/// sections, a handful of `pread`s.
fn read_unwind_sections(file: &std::fs::File) -> Option<UnwindSections> {
    let elf = ElfFile::read(file)?;
    let range = |name: &str| elf.section(name).map(|s| s.addr.clone());
    let data = |name: &str| Some((range(name)?, Arc::from(elf.data(name)?)));
    Some(UnwindSections {
        first_vaddr: elf.first_vaddr,
        text: range(".text"),
        got: range(".got"),
        eh_frame: data(".eh_frame"),
        eh_frame_hdr: data(".eh_frame_hdr"),
    })
}

/// The unwind sections of an opened object file, from the cache when this file was read
/// before.
fn unwind_sections(file: &std::fs::File) -> Option<Arc<UnwindSections>> {
    let key = identity(&file.metadata().ok()?);
    SECTIONS.get_or_read(key, || read_unwind_sections(file).map(Arc::new).ok_or(())).ok()
}

/// The unwind sections of the vDSO, parsed from its bytes in memory.
fn vdso_sections(data: &[u8]) -> Option<UnwindSections> {
    let file = object::File::parse(data).ok()?;
    let section = |name: &str| {
        let s = file.section_by_name(name)?;
        Some((s.address()..s.address() + s.size(), Arc::from(s.data().ok()?)))
    };
    let range = |name: &str| file.section_by_name(name).map(|s| s.address()..s.address() + s.size());
    Some(UnwindSections {
        first_vaddr: file.segments().map(|s| object::ObjectSegment::address(&s)).min().unwrap_or(0) & !0xfff,
        text: range(".text"),
        got: range(".got"),
        eh_frame: section(".eh_frame"),
        eh_frame_hdr: section(".eh_frame_hdr"),
    })
}

/// The module framehop needs for one object: its unwind sections only. The code itself
/// is not loaded: `.eh_frame` describes every instruction (gcc and clang emit
/// asynchronous unwind tables on x86-64), so no instruction analysis is needed.
fn module(s: &UnwindSections, name: &str, range: Range<u64>, header: u64) -> (Module<Arc<[u8]>>, u64) {
    // Load base: the first PT_LOAD (file offset 0) is mapped at base + its vaddr.
    let base = header.wrapping_sub(s.first_vaddr);
    let info = ExplicitModuleSectionInfo {
        base_svma: 0,
        text_svma: s.text.clone(),
        got_svma: s.got.clone(),
        eh_frame_svma: s.eh_frame.as_ref().map(|t| t.0.clone()),
        eh_frame: s.eh_frame.as_ref().map(|t| Arc::clone(&t.1)),
        eh_frame_hdr_svma: s.eh_frame_hdr.as_ref().map(|t| t.0.clone()),
        eh_frame_hdr: s.eh_frame_hdr.as_ref().map(|t| Arc::clone(&t.1)),
        ..Default::default()
    };
    (Module::new(name.to_string(), range, base, info), base)
}

impl Unwinder {
    /// Load the unwind tables of every file-backed executable mapping and the vDSO.
    pub fn new(proc: &Process) -> crate::error::Result<Self> {
        let maps = proc.mappings()?;
        let mut inner = UnwinderX86_64::new();
        let mut objects = Vec::new();
        let mut paths: Vec<&str> = maps
            .iter()
            .filter(|m| m.perms.contains('x') && (m.path.starts_with('/') || m.path == "[vdso]"))
            .map(|m| m.path.as_str())
            .collect();
        paths.dedup();
        for path in paths {
            let mine: Vec<&Mapping> = maps.iter().filter(|m| m.path == path).collect();
            let Some(header) = mine.iter().find(|m| m.offset == 0).or(mine.first()) else { continue };
            let range = mine.iter().map(|m| m.start).min().unwrap_or(0)..mine.iter().map(|m| m.end).max().unwrap_or(0);
            let (m, base, source) = if path == "[vdso]" {
                let Ok(data) = proc.read(header.start, (header.end - header.start) as usize) else { continue };
                let Some(sections) = vdso_sections(&data) else { continue };
                let (m, base) = module(&sections, path, range.clone(), header.start);
                (m, base, Source::Memory(data))
            } else {
                let Some((f, source)) =
                    proc.mapped_file(header).into_iter().find_map(|p| Some((std::fs::File::open(&p).ok()?, p)))
                else {
                    continue;
                };
                let Some(sections) = unwind_sections(&f) else { continue };
                let (m, base) = module(&sections, path, range.clone(), header.start);
                (m, base, Source::File(source))
            };
            inner.add_module(m);
            objects.push(ObjectInfo { path: path.to_string(), source, range, base, symbols: None });
        }
        Ok(Self { inner, cache: CacheX86_64::new(), objects })
    }

    fn known(&self, addr: u64) -> bool {
        self.objects.iter().any(|o| o.range.contains(&addr))
    }

    /// Walk the stack of a stopped thread with registers `regs`, reading its memory
    /// through `proc` (one page at a time, cached for this walk).
    pub fn walk(&mut self, proc: &Process, regs: &libc::user_regs_struct) -> Walk {
        let mut pages: HashMap<u64, Option<Vec<u8>>> = HashMap::new();
        let mut read_stack = |addr: u64| -> Result<u64, ()> {
            if !addr.is_multiple_of(8) {
                return Err(());
            }
            let page = addr & !0xfff;
            let bytes = pages.entry(page).or_insert_with(|| proc.read(page, 4096).ok());
            let b = bytes.as_ref().ok_or(())?;
            let o = (addr - page) as usize;
            Ok(u64::from_le_bytes(b[o..o + 8].try_into().map_err(|_| ())?))
        };
        let mut frames = vec![regs.rip];
        let mut it = self.inner.iter_frames(
            regs.rip,
            UnwindRegsX86_64::new(regs.rip, regs.rsp, regs.rbp),
            &mut self.cache,
            &mut read_stack,
        );
        let mut complete = false;
        // The first item is the instruction pointer itself.
        let _ = it.next();
        while frames.len() < MAX_FRAMES {
            match it.next() {
                Ok(Some(f)) => frames.push(f.address()),
                Ok(None) => {
                    complete = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let complete = complete && frames.iter().all(|&a| self.known(a));
        Walk { frames, complete }
    }

    /// `symbol+offset (object)` for a frame address.
    pub fn describe(&mut self, addr: u64) -> String {
        let Some(o) = self.objects.iter_mut().find(|o| o.range.contains(&addr)) else {
            return format!("{addr:#x}");
        };
        let rel = addr - o.base;
        let source = &o.source;
        let symbols = o.symbols.get_or_insert_with(|| {
            let data = match source {
                Source::File(p) => std::fs::read(p).unwrap_or_default(),
                Source::Memory(d) => d.clone(),
            };
            let mut v: Vec<(u64, u64, String)> = match object::File::parse(&*data) {
                Ok(f) => f
                    .symbols()
                    .chain(f.dynamic_symbols())
                    .filter(|s| s.kind() == object::SymbolKind::Text && s.address() != 0)
                    .filter_map(|s| Some((s.address(), s.size(), s.name().ok()?.to_string())))
                    .collect(),
                Err(_) => Vec::new(),
            };
            v.sort();
            v
        });
        let name = o.path.rsplit('/').next().unwrap_or(&o.path).to_string();
        let i = symbols.partition_point(|s| s.0 <= rel);
        match i.checked_sub(1).map(|i| &symbols[i]) {
            Some((start, size, sym)) if rel < start + (*size).max(1) || *size == 0 => {
                format!("{sym}+{:#x} ({name})", rel - start)
            }
            _ => format!("{addr:#x} ({name})"),
        }
    }
}

/// Whether any 8-byte word of the thread's stack, from `rsp` to the end of the mapping
/// holding it (at most 8 MiB), points into `ranges` (an end address included: the return
/// address of a call that ends a function). A frame inside would have left its return
/// address there (an interrupted one, its `rip` in a signal frame), so a stack that
/// mentions nothing inside has no frame inside; one that does may only hold a stale word
/// or a pointer, which a walk tells apart. An unknown or unreadable stack counts as
/// mentioning.
pub fn stack_mentions(proc: &Process, maps: &[Mapping], rsp: u64, ranges: &[(u64, u64)]) -> bool {
    let Some(m) = maps.iter().find(|m| (m.start..m.end).contains(&rsp)) else { return true };
    let start = rsp & !7;
    let end = m.end.min(start + (8 << 20));
    match proc.read(start, (end - start) as usize) {
        Ok(bytes) => bytes.chunks_exact(8).any(|w| {
            let v = u64::from_le_bytes(w.try_into().expect("8 bytes"));
            ranges.iter().any(|&(s, e)| (s..=e).contains(&v))
        }),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_read_once_per_file() {
        let f = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        let first = unwind_sections(&f).unwrap();
        assert!(first.eh_frame.is_some() && first.text.is_some());
        assert!(Arc::ptr_eq(&first, &unwind_sections(&f).unwrap()));
    }
}
