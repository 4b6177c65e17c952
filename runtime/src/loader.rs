//! The dynamic linker's view of the process: loaded objects, their build-ids, and
//! loading a patch `.so`.

use std::ffi::{CStr, CString};

/// A loaded object: load base, build-id and executable segments.
pub struct Loaded {
    pub base: usize,
    build_id: Vec<u8>,
    /// Executable segments, `[start, end)`.
    pub exec: Vec<(usize, usize)>,
    /// All loaded segments, `[start, end)`.
    pub segments: Vec<(usize, usize)>,
    /// Its TLS module id (0 when it has no thread-local storage).
    pub tls_modid: usize,
}

impl Loaded {
    /// Whether `[start, end)` lies inside one loaded segment.
    pub fn is_mapped(&self, start: u64, end: u64) -> bool {
        self.segments.iter().any(|&(s, e)| s as u64 <= start && end <= e as u64)
    }

    /// Whether `[start, end)` lies inside one executable segment.
    pub fn is_code(&self, start: u64, end: u64) -> bool {
        self.exec.iter().any(|&(s, e)| s as u64 <= start && end <= e as u64)
    }
}

/// The build-id in an object's `PT_NOTE` segments, read from memory.
///
/// # Safety
/// `info` must come from `dl_iterate_phdr`, whose program headers and note segments are
/// mapped for as long as the callback runs.
unsafe fn build_id(info: &libc::dl_phdr_info) -> Vec<u8> {
    // SAFETY: dl_iterate_phdr guarantees `dlpi_phdr` points at `dlpi_phnum` headers.
    let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
    for ph in phdrs.iter().filter(|p| p.p_type == libc::PT_NOTE) {
        let start = info.dlpi_addr as usize + ph.p_vaddr as usize;
        // SAFETY: a PT_NOTE segment lies inside a PT_LOAD segment of a loaded object,
        // so its p_memsz bytes are mapped and readable.
        let notes = unsafe { std::slice::from_raw_parts(start as *const u8, ph.p_memsz as usize) };
        if let Some(id) = pulp_meta::note::gnu_build_id(notes) {
            return id.to_vec();
        }
    }
    Vec::new()
}

/// Every object the dynamic linker has loaded.
fn loaded_objects() -> Vec<Loaded> {
    unsafe extern "C" fn collect(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `data` is the `&mut Vec<Loaded>` passed below and `info` is valid for
        // this call (dl_iterate_phdr's contract).
        let (out, info) = unsafe { (&mut *(data as *mut Vec<Loaded>), &*info) };
        // SAFETY: `info` comes from dl_iterate_phdr.
        let build_id = unsafe { build_id(info) };
        // SAFETY: dl_iterate_phdr guarantees `dlpi_phdr` points at `dlpi_phnum` headers.
        let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
        let base = info.dlpi_addr as usize;
        let exec = phdrs
            .iter()
            .filter(|p| p.p_type == libc::PT_LOAD && p.p_flags & libc::PF_X != 0)
            .map(|p| (base + p.p_vaddr as usize, base + (p.p_vaddr + p.p_memsz) as usize))
            .collect();
        let segments = phdrs
            .iter()
            .filter(|p| p.p_type == libc::PT_LOAD)
            .map(|p| (base + p.p_vaddr as usize, base + (p.p_vaddr + p.p_memsz) as usize))
            .collect();
        out.push(Loaded { base, build_id, exec, segments, tls_modid: info.dlpi_tls_modid });
        0
    }
    let mut out: Vec<Loaded> = Vec::new();
    // SAFETY: the callback only reads `info` and pushes to the Vec passed as `data`,
    // which outlives the call; it does not unwind (no panicking operations but
    // allocation failure, which aborts).
    unsafe { libc::dl_iterate_phdr(Some(collect), &mut out as *mut Vec<Loaded> as *mut libc::c_void) };
    out
}

/// Address of this runtime's TLS initialisation image (its `PT_TLS` segment).
pub fn own_tls_image() -> Option<u64> {
    unsafe extern "C" fn find(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `data` is the `&mut Option<u64>` passed below and `info` is valid for
        // this call (dl_iterate_phdr's contract).
        let (out, info) = unsafe { (&mut *(data as *mut Option<u64>), &*info) };
        // SAFETY: dl_iterate_phdr guarantees `dlpi_phdr` points at `dlpi_phnum` headers.
        let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
        let base = info.dlpi_addr;
        let me = own_tls_image as *const () as usize as u64;
        let mine = phdrs.iter().any(|p| {
            p.p_type == libc::PT_LOAD
                && p.p_flags & libc::PF_X != 0
                && (base + p.p_vaddr..base + p.p_vaddr + p.p_memsz).contains(&me)
        });
        if mine {
            *out = phdrs.iter().find(|p| p.p_type == libc::PT_TLS).map(|p| base + p.p_vaddr);
            return 1;
        }
        0
    }
    let mut out: Option<u64> = None;
    // SAFETY: the callback only reads `info` and writes the Option passed as `data`,
    // which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(find), &mut out as *mut Option<u64> as *mut libc::c_void) };
    out
}

/// The loaded object whose load base is `base`.
pub fn loaded_at(base: usize) -> Option<Loaded> {
    loaded_objects().into_iter().find(|o| o.base == base)
}

/// The loaded object with this build-id.
pub fn find(build_id: &[u8]) -> Option<Loaded> {
    loaded_objects().into_iter().find(|o| !o.build_id.is_empty() && o.build_id == build_id)
}

fn dlerror() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string valid until the next dl call.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "unknown dynamic linker error".into()
    } else {
        // SAFETY: non-NULL, NUL-terminated (see above).
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

/// A patch `.so` opened with `dlopen`. Dropping it does not unload it: code of a patch
/// may still be running on some thread's stack, so patch objects stay loaded.
pub struct PatchObject {
    handle: *mut libc::c_void,
    pub base: usize,
}

impl PatchObject {
    /// `dlopen(path, RTLD_NOW | RTLD_LOCAL)` and check the loaded object's build-id.
    pub fn open(path: &str, expected_build_id: &[u8]) -> Result<Self, String> {
        let c = CString::new(path).map_err(|_| format!("patch path {path:?} contains a NUL byte"))?;
        // SAFETY: `c` is a valid C string; dlopen has no other preconditions.
        let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err(format!("cannot load patch {path}: {}", dlerror()));
        }
        let mut map: *mut libc::c_void = std::ptr::null_mut();
        // SAFETY: RTLD_DI_LINKMAP stores a `struct link_map *` into `map`; `handle` is live.
        let rc = unsafe { libc::dlinfo(handle, libc::RTLD_DI_LINKMAP, &mut map as *mut _ as *mut libc::c_void) };
        if rc != 0 || map.is_null() {
            let e = dlerror();
            Self::close(handle);
            return Err(format!("cannot inspect patch {path}: {e}"));
        }
        // SAFETY: `l_addr`, the load base, is the first field of glibc's `struct link_map`.
        let base = unsafe { *(map as *const usize) };
        let actual = loaded_objects().into_iter().find(|o| o.base == base).map(|o| o.build_id).unwrap_or_default();
        if actual != expected_build_id {
            Self::close(handle);
            return Err(format!(
                "patch {path} has build-id {} but the metadata records {}",
                pulp_meta::format::hex(&actual),
                pulp_meta::format::hex(expected_build_id)
            ));
        }
        Ok(Self { handle, base })
    }

    /// Address of the defined symbol `name`.
    pub fn symbol(&self, name: &str) -> Result<usize, String> {
        let c = CString::new(name).map_err(|_| format!("symbol {name:?} contains a NUL byte"))?;
        // SAFETY: `handle` is live (never closed once open succeeded) and `c` is valid.
        let addr = unsafe { libc::dlsym(self.handle, c.as_ptr()) };
        if addr.is_null() {
            Err(format!("new function `{name}` is missing from the patch object"))
        } else {
            Ok(addr as usize)
        }
    }

    /// Undo an `open` that failed its checks: nothing of the object is in use yet.
    pub fn discard(self) {
        Self::close(self.handle)
    }

    fn close(handle: *mut libc::c_void) {
        // SAFETY: `handle` came from a successful dlopen, no pointer into the object
        // has been handed out, so dropping this reference is sound.
        unsafe { libc::dlclose(handle) };
    }
}
