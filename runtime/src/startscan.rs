//! The first look at the patch directory at start, made without allocating and kept in
//! `.text.pulp_start` (beside the rest of the start path, `runtime/build.rs`).
//!
//! Once patches are installed machine-wide, most processes have patches in their
//! directory for libraries they do not map (an OpenSSL fix in a shell). Such a process
//! should pay one directory read and the linker hook, not the full reading of
//! `crate::patchdir`: that one allocates, sorts, builds paths and runs code spread over
//! the runtime's pages, and each first touch of a code page maps a 64 KiB window
//! (`docs/benchmarks.md`: +480 KiB resident and tens of µs for five unrelated patches).
//! This look answers one question from the names alone: is every `.meta` named as
//! installed (`pulp_meta::patchdir`), with none of its targets loaded? Anything else is
//! left to the full reading.

use std::ffi::CStr;

/// What the first look found.
pub enum Look {
    /// No `*.meta` (or no directory).
    Nothing,
    /// Patches are installed, all named as installed, and no target of theirs is loaded.
    NoTargetLoaded,
    /// Anything else: a target is loaded, a name is not in the installed form, or there
    /// are more build-ids than this look keeps. Read the directory in full.
    ReadInFull,
}

/// Build-ids this look keeps (more: the full reading).
const MAX_IDS: usize = 64;
/// Longest build-id kept (a sha1 build-id is 20 bytes, `--build-id=sha256` 32).
const MAX_ID_LEN: usize = 64;

/// The targets' build-ids the names list, in fixed arrays on the stack.
struct Ids {
    count: usize,
    lens: [u8; MAX_IDS],
    bytes: [[u8; MAX_ID_LEN]; MAX_IDS],
}

impl Ids {
    /// Add the build-ids of the installed name `STEM+ID[+ID...]` (without `.meta`);
    /// `false` if it is not in that form or there is no room.
    #[link_section = ".text.pulp_start"]
    fn add_from_stem(&mut self, stem: &[u8]) -> bool {
        let Some(plus) = stem.iter().position(|&b| b == b'+') else {
            return false;
        };
        let mut parts = stem[plus + 1..].split(|&b| b == b'+');
        parts.all(|hex| self.add_hex(hex))
    }

    /// One build-id in lower-case hex, as `pulp_meta::patchdir` writes it.
    #[link_section = ".text.pulp_start"]
    fn add_hex(&mut self, hex: &[u8]) -> bool {
        let Some(slot) = self.bytes.get_mut(self.count) else {
            return false;
        };
        let Some(len) = pulp_meta::patchdir::unhex_into(hex, slot) else {
            return false;
        };
        self.lens[self.count] = len as u8;
        self.count += 1;
        true
    }

    #[link_section = ".text.pulp_start"]
    fn contains(&self, id: &[u8]) -> bool {
        self.lens.iter().zip(&self.bytes).take(self.count).any(|(&len, bytes)| bytes.get(..len as usize) == Some(id))
    }
}

/// Call `each` with the name of every `*.meta` in `dir` (read with `getdents64` into a
/// buffer on the stack, nothing allocated) until it returns `false`; `false` when `dir`
/// cannot be opened.
#[link_section = ".text.pulp_start"]
pub fn each_meta_name(dir: &CStr, mut each: impl FnMut(&[u8]) -> bool) -> bool {
    // SAFETY: a valid C string; the descriptor is closed below.
    let fd = unsafe { libc::open(dir.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return false;
    }
    let mut buf = [0u8; 4096];
    'read: loop {
        // SAFETY: getdents64 writes at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len()) };
        if n <= 0 {
            break;
        }
        let n = (n as usize).min(buf.len());
        // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
        let mut at = 0usize;
        while let Some(head) = buf.get(at..at + 19) {
            let reclen = u16::from_ne_bytes([head[16], head[17]]) as usize;
            let Some(name) = buf.get(at + 19..at + reclen).filter(|_| reclen >= 19 && at + reclen <= n) else {
                break;
            };
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            if name.len() > 5 && name.ends_with(b".meta") && !each(name) {
                break 'read;
            }
            at += reclen;
        }
    }
    // SAFETY: `fd` was opened above and is not used afterwards.
    unsafe { libc::close(fd) };
    true
}

/// Look at `dir`'s names (see the module comment).
#[link_section = ".text.pulp_start"]
pub fn look(dir: &CStr) -> Look {
    let mut ids = Ids { count: 0, lens: [0; MAX_IDS], bytes: [[0; MAX_ID_LEN]; MAX_IDS] };
    let mut metas = 0usize;
    let mut in_full = false;
    each_meta_name(dir, |name| {
        metas += 1;
        in_full = !ids.add_from_stem(&name[..name.len() - b".meta".len()]);
        !in_full
    });
    if metas == 0 {
        Look::Nothing
    } else if in_full || any_loaded(&ids) {
        Look::ReadInFull
    } else {
        Look::NoTargetLoaded
    }
}

/// Whether a loaded object has one of `ids` as its build-id.
#[link_section = ".text.pulp_start"]
fn any_loaded(ids: &Ids) -> bool {
    #[link_section = ".text.pulp_start"]
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `data` is the `&Ids` passed below, alive for the whole walk; `info` is
        // valid for this call and `dlpi_phdr` points at `dlpi_phnum` headers
        // (dl_iterate_phdr's contract).
        let (ids, info) = unsafe { (&*(data as *const Ids), &*info) };
        // SAFETY: as above.
        let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
        for p in phdrs.iter().filter(|p| p.p_type == libc::PT_NOTE) {
            let start = (info.dlpi_addr as usize).wrapping_add(p.p_vaddr as usize);
            // SAFETY: a PT_NOTE segment lies inside a PT_LOAD segment of a loaded object,
            // so its bytes are mapped and readable.
            let notes = unsafe { std::slice::from_raw_parts(start as *const u8, p.p_memsz as usize) };
            if pulp_meta::note::gnu_build_id(notes).is_some_and(|id| ids.contains(id)) {
                return 1;
            }
        }
        0
    }
    // SAFETY: `visit` only reads `info` and `ids`, which outlives the call; it cannot
    // panic (no indexing that can fail, no allocation).
    unsafe { libc::dl_iterate_phdr(Some(visit), ids as *const Ids as *mut libc::c_void) != 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids_of(stems: &[&str]) -> Option<Ids> {
        let mut ids = Ids { count: 0, lens: [0; MAX_IDS], bytes: [[0; MAX_ID_LEN]; MAX_IDS] };
        stems.iter().all(|s| ids.add_from_stem(s.as_bytes())).then_some(ids)
    }

    #[test]
    fn installed_names_give_their_build_ids() {
        let ids = ids_of(&["fix+0a1b", "two+cc+ddee"]).expect("installed names");
        assert_eq!(ids.count, 3);
        assert!(ids.contains(&[0x0a, 0x1b]));
        assert!(ids.contains(&[0xdd, 0xee]));
        assert!(!ids.contains(&[0x0a]));
    }

    #[test]
    fn other_names_ask_for_the_full_reading() {
        for stem in ["plain", "x+", "x+abc", "x+0A", "x+zz", "x+00+"] {
            assert!(ids_of(&[stem]).is_none(), "{stem}");
        }
        let many: Vec<String> = (0..=MAX_IDS).map(|i| format!("p{i}+{i:02x}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(ids_of(&many).is_none(), "more build-ids than kept");
    }

    #[test]
    fn the_runtime_test_binary_is_loaded_and_a_made_up_id_is_not() {
        let made_up = ids_of(&["f+00112233445566778899aabbccddeeff00112233"]).unwrap();
        assert!(!any_loaded(&made_up));
        let loaded = crate::loader::all();
        let own = &loaded.iter().find(|o| !o.build_id.is_empty()).expect("some loaded object has a build-id").build_id;
        let hex: String = own.iter().map(|b| format!("{b:02x}")).collect();
        assert!(any_loaded(&ids_of(&[&format!("t+{hex}")]).unwrap()));
    }
}
