//! The dynamic linker's view of the process: loaded objects, their build-ids, and
//! loading a patch `.so`.

use std::ffi::{CStr, CString};

/// A loaded object: load base, build-id and executable segments.
pub struct Loaded {
    pub base: usize,
    pub build_id: Vec<u8>,
    /// Executable segments, `[start, end)`.
    pub exec: Vec<(usize, usize)>,
    /// All loaded segments, `[start, end)`.
    pub segments: Vec<(usize, usize)>,
    /// Its TLS module id (0 when it has no thread-local storage).
    pub tls_modid: usize,
    /// Where its TLS block is relative to the thread pointer, the same in every thread
    /// (initial-exec code's `x@gottpoff`), or why it is not.
    pub tls_offset: Result<i64, &'static str>,
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

/// One loaded object as `dl_iterate_phdr` shows it, for the length of a visit: what is
/// asked of it is read then, and nothing more.
struct Visited<'a> {
    info: &'a libc::dl_phdr_info,
    phdrs: &'a [libc::Elf64_Phdr],
}

impl Visited<'_> {
    fn base(&self) -> usize {
        self.info.dlpi_addr as usize
    }

    /// The `[start, end)` of its program headers of type `kind` with every bit of `flags`.
    fn ranges(&self, kind: u32, flags: u32) -> impl Iterator<Item = (usize, usize)> + '_ {
        let base = self.base();
        self.phdrs
            .iter()
            .filter(move |p| p.p_type == kind && p.p_flags & flags == flags)
            .map(move |p| (base + p.p_vaddr as usize, base + (p.p_vaddr + p.p_memsz) as usize))
    }

    /// Its name as the dynamic linker knows it (empty for the main program).
    fn name(&self) -> &[u8] {
        if self.info.dlpi_name.is_null() {
            return &[];
        }
        // SAFETY: dlpi_name is a NUL-terminated string owned by the dynamic linker, valid
        // while the object is loaded (at least for this visit).
        unsafe { CStr::from_ptr(self.info.dlpi_name) }.to_bytes()
    }

    /// The build-id in its `PT_NOTE` segments (empty: none).
    fn build_id(&self) -> Vec<u8> {
        for (start, end) in self.ranges(libc::PT_NOTE, 0) {
            // SAFETY: a PT_NOTE segment lies inside a PT_LOAD segment of a loaded object,
            // so its bytes are mapped and readable.
            let notes = unsafe { std::slice::from_raw_parts(start as *const u8, end - start) };
            if let Some(id) = pulp_meta::note::gnu_build_id(notes) {
                return id.to_vec();
            }
        }
        Vec::new()
    }

    fn loaded(&self, build_id: Vec<u8>) -> Loaded {
        Loaded {
            base: self.base(),
            build_id,
            exec: self.ranges(libc::PT_LOAD, libc::PF_X).collect(),
            segments: self.ranges(libc::PT_LOAD, 0).collect(),
            tls_modid: self.info.dlpi_tls_modid,
            tls_offset: self.tls_offset(),
        }
    }

    /// The offset of its TLS block from the thread pointer, when that is one number for
    /// every thread: its block lies in the static TLS area, allocated with each thread's
    /// control block. That is so for the main program and for an object flagged
    /// `DF_STATIC_TLS` (the linker sets it when the object has initial-exec accesses; the
    /// dynamic linker refuses to load such an object if it cannot put its block there).
    /// An object loaded with `dlopen` without that flag gets a block per thread wherever
    /// `malloc` puts it. The calling thread's block (`dlpi_tls_data`) minus its thread
    /// pointer gives the offset.
    fn tls_offset(&self) -> Result<i64, &'static str> {
        if self.info.dlpi_tls_modid == 0 {
            return Err("the target has no thread-local storage");
        }
        if !self.name().is_empty() && !self.has_static_tls_flag() {
            return Err("the target's thread-local storage is not in the static TLS area (it is not flagged \
                        DF_STATIC_TLS: built without initial-exec accesses), so its offset from the thread \
                        pointer differs per thread");
        }
        let block = self.info.dlpi_tls_data as usize;
        if block == 0 {
            return Err("the dynamic linker has no TLS block of the target in this thread");
        }
        Ok(block.wrapping_sub(thread_pointer()) as i64)
    }

    /// Whether its dynamic section's `DT_FLAGS` has `DF_STATIC_TLS`.
    fn has_static_tls_flag(&self) -> bool {
        const DT_FLAGS: u64 = 30;
        const DF_STATIC_TLS: u64 = 0x10;
        let Some((start, end)) = self.ranges(libc::PT_DYNAMIC, 0).next() else { return false };
        // `Elf64_Dyn`: a tag and a value.
        let count = (end - start) / 16;
        // SAFETY: the PT_DYNAMIC segment of a loaded object lies inside one of its PT_LOAD
        // segments, mapped readable, and holds 16-byte, 8-byte aligned `Elf64_Dyn` entries.
        let entries = unsafe { std::slice::from_raw_parts(start as *const [u64; 2], count) };
        entries.iter().take_while(|d| d[0] != 0).any(|d| d[0] == DT_FLAGS && d[1] & DF_STATIC_TLS != 0)
    }
}

/// The calling thread's thread pointer: on x86-64 the first word of its control block,
/// at `%fs:0`, holds the block's own address.
fn thread_pointer() -> usize {
    let tp: usize;
    // SAFETY: reads 8 bytes at %fs:0, the TCB's self pointer every glibc thread has; no
    // register but the output is written, no stack or flags are touched.
    unsafe { std::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp, options(nostack, readonly, preserves_flags)) };
    tp
}

/// Visit every loaded object, in the dynamic linker's order, until `visit` says stop.
fn each_object(mut visit: impl FnMut(&Visited<'_>) -> bool) {
    type Visit<'v> = &'v mut dyn FnMut(&Visited<'_>) -> bool;
    unsafe extern "C" fn trampoline(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `data` is the `&mut Visit` passed below, alive for the whole walk, and
        // `info` is valid for this call (dl_iterate_phdr's contract).
        let (visit, info) = unsafe { (&mut *(data as *mut Visit<'_>), &*info) };
        // SAFETY: dl_iterate_phdr guarantees `dlpi_phdr` points at `dlpi_phnum` headers.
        let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
        // No panic may unwind into the dynamic linker: one ends the walk.
        let stop = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| visit(&Visited { info, phdrs })));
        libc::c_int::from(stop.unwrap_or(true))
    }
    let mut visit: Visit<'_> = &mut visit;
    // SAFETY: the trampoline only reads `info` and calls `visit`, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(trampoline), &mut visit as *mut Visit<'_> as *mut libc::c_void) };
}

/// The first loaded object `pick` takes (given its build-id), made a `Loaded`.
fn first(mut pick: impl FnMut(&Visited<'_>, &[u8]) -> bool) -> Option<Loaded> {
    let mut out = None;
    each_object(|o| {
        let id = o.build_id();
        if !pick(o, &id) {
            return false;
        }
        out = Some(o.loaded(id));
        true
    });
    out
}

/// Every object the dynamic linker has loaded.
pub fn all() -> Vec<Loaded> {
    let mut out = Vec::new();
    each_object(|o| {
        out.push(o.loaded(o.build_id()));
        false
    });
    out
}

/// The loaded object whose load base is `base`.
pub fn loaded_at(base: usize) -> Option<Loaded> {
    first(|o, _| o.base() == base)
}

/// The loaded object with this build-id.
pub fn find(build_id: &[u8]) -> Option<Loaded> {
    first(|_, id| !id.is_empty() && id == build_id)
}

/// Address of this runtime's TLS initialisation image (its `PT_TLS` segment).
pub fn own_tls_image() -> Option<u64> {
    let me = own_tls_image as *const () as usize;
    let mut out = None;
    each_object(|o| {
        if !o.ranges(libc::PT_LOAD, libc::PF_X).any(|(s, e)| (s..e).contains(&me)) {
            return false;
        }
        out = o.ranges(libc::PT_TLS, 0).next().map(|(s, _)| s as u64);
        true
    });
    out
}

/// The writable memory of the object loaded at `base`: writable `PT_LOAD` segments minus
/// `PT_GNU_RELRO` (read-only once relocated).
pub fn writable(base: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    each_object(|o| {
        if o.base() != base {
            return false;
        }
        out = o.ranges(libc::PT_LOAD, libc::PF_W).collect();
        for relro in o.ranges(libc::PT_GNU_RELRO, 0) {
            out = out
                .iter()
                .flat_map(|&(s, e)| [(s, e.min(relro.0)), (s.max(relro.1), e)])
                .filter(|(s, e)| s < e)
                .collect();
        }
        true
    });
    out
}

/// The name of every loaded object, as the dynamic linker knows it.
fn loaded_names() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    each_object(|o| {
        out.push(o.name().to_vec());
        false
    });
    out
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

/// Why loading a patch object failed.
pub enum LoadError {
    /// Refused before any of its code ran.
    Refused(String),
    /// Its code (a constructor) faulted or hung and was abandoned; the object stays mapped
    /// but is never used.
    Abandoned(String),
}

impl From<LoadError> for String {
    fn from(e: LoadError) -> String {
        match e {
            LoadError::Refused(m) | LoadError::Abandoned(m) => m,
        }
    }
}

/// A description of an abandoned guarded call, for messages.
pub fn describe(a: pulp_trm::Abandoned) -> String {
    match a.signal {
        0 => "did not return in time and was abandoned".into(),
        -1 => "panicked".into(),
        sig => {
            // SAFETY: strsignal returns a static or thread-local string for any number.
            let name = unsafe { CStr::from_ptr(libc::strsignal(sig)) }.to_string_lossy().into_owned();
            let at = if [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE].contains(&sig) {
                format!(", at address {:#x}", a.address)
            } else {
                String::new()
            };
            format!("crashed ({name}, signal {sig}{at})")
        }
    }
}

/// A patch `.so` loaded into the process. Dropping it does not unload it: code of a patch
/// may still be running on some thread's stack, so patch objects stay loaded. A copy is
/// another name for the same loaded object.
#[derive(Clone)]
pub struct PatchObject {
    handle: *mut libc::c_void,
    pub base: usize,
}

// SAFETY: a dlopen handle is a process-wide token that may be used from any thread.
unsafe impl Send for PatchObject {}

impl PatchObject {
    /// Load a patch object from `bytes`, which the tool checked (owner, mode, folders,
    /// content hash) and copied here: the bytes go into a sealed memory file that nobody
    /// can change any more, and the dynamic linker loads that file. No path is opened, so
    /// the target's root, mount namespace or current folder play no part. `name` names
    /// the memory file (it shows in `/proc/PID/maps`).
    ///
    /// The object's constructors run in a guarded call: if one faults or hangs and the
    /// tool abandons it, the dynamic linker's lock is released and the load is refused.
    pub fn load(name: &str, bytes: &[u8], expected_build_id: &[u8]) -> Result<Self, LoadError> {
        let refuse = |m: String| LoadError::Refused(m);
        let file = SealedFile::create(name, bytes).map_err(refuse)?;
        let path = file.path().map_err(refuse)?;
        let c = CString::new(path.clone()).map_err(|_| refuse("patch path contains a NUL byte".into()))?;
        let locks = LoaderLocks::snapshot();
        // SAFETY: dlerror takes no arguments; it clears a stale error.
        unsafe { libc::dlerror() };
        let loaded = pulp_trm::guarded(|| {
            // SAFETY: `c` is a valid C string; dlopen has no other preconditions.
            unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) as usize }
        });
        let handle = match loaded {
            Ok(h) if h != 0 => {
                file.finish();
                h as *mut libc::c_void
            }
            Ok(_) => return Err(refuse(format!("cannot load the patch object: {}", dlerror()))),
            Err(abandoned) => {
                let released = locks.release_taken_since();
                let lock_note = if released { "" } else { " (the dynamic linker's lock could not be released)" };
                return Err(LoadError::Abandoned(format!(
                    "loading the patch object failed: its constructor {}; the patch was not applied{lock_note}",
                    describe(abandoned)
                )));
            }
        };
        let mut map: *mut libc::c_void = std::ptr::null_mut();
        // SAFETY: RTLD_DI_LINKMAP stores a `struct link_map *` into `map`; `handle` is live.
        let rc = unsafe { libc::dlinfo(handle, libc::RTLD_DI_LINKMAP, &mut map as *mut _ as *mut libc::c_void) };
        if rc != 0 || map.is_null() {
            return Err(refuse(format!("cannot inspect the patch object: {}", dlerror())));
        }
        // SAFETY: `l_addr`, the load base, is the first field of glibc's `struct link_map`.
        let base = unsafe { *(map as *const usize) };
        let actual = loaded_at(base).map(|o| o.build_id).unwrap_or_default();
        if actual != expected_build_id {
            return Err(refuse(format!(
                "the patch object has build-id {} but the metadata records {}",
                pulp_meta::format::hex(&actual),
                pulp_meta::format::hex(expected_build_id)
            )));
        }
        Ok(Self { handle, base })
    }

    /// Address of the defined symbol `name`.
    pub fn symbol(&self, name: &str) -> Result<usize, String> {
        self.find(name).ok_or_else(|| format!("new function `{name}` is missing from the patch object"))
    }

    /// Address of `name` in the patch object, if it defines it.
    pub fn find(&self, name: &str) -> Option<usize> {
        let c = CString::new(name).ok()?;
        // SAFETY: `handle` is live (never closed once loaded) and `c` is valid.
        let addr = unsafe { libc::dlsym(self.handle, c.as_ptr()) };
        (!addr.is_null()).then_some(addr as usize)
    }

    /// The loaded object's segments.
    pub fn loaded(&self) -> Option<Loaded> {
        loaded_at(self.base)
    }
}

/// The bytes of a patch object in a memory file sealed against any change, and the path
/// the dynamic linker loads it from. The descriptor stays open for the life of the process
/// (the path `/proc/self/fd/N` must never name another object the linker already has:
/// it compares names before files). Without `/proc` in the process's root (a chroot), the
/// bytes go to a fresh private folder in `/dev/shm` or `/tmp` instead, deleted once loaded.
struct SealedFile {
    fd: libc::c_int,
    /// The private folder and file of the fallback, removed by `finish`.
    fallback: Option<(CString, CString)>,
}

impl SealedFile {
    fn create(name: &str, bytes: &[u8]) -> Result<Self, String> {
        let cname: String = name.chars().filter(|c| c.is_ascii_graphic()).take(200).collect();
        if !std::path::Path::new("/proc/self/fd").is_dir() {
            return Self::private_copy(&cname, bytes);
        }
        let cname = CString::new(format!("pulp:{cname}")).expect("no NUL in filtered name");
        // SAFETY: a valid C string and plain flags.
        let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
        if fd < 0 {
            return Err(format!(
                "cannot create a memory file for the patch object: {}",
                std::io::Error::last_os_error()
            ));
        }
        let me = Self { fd, fallback: None };
        write_all(fd, bytes).map_err(|e| format!("cannot fill the patch object's memory file: {e}"))?;
        let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
        // SAFETY: fcntl on a descriptor we own, with an integer argument.
        if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) } != 0 {
            return Err(format!("cannot seal the patch object's memory file: {}", std::io::Error::last_os_error()));
        }
        Ok(me)
    }

    /// Without `/proc`: a file in a new folder only this process's user can enter
    /// (`mkdtemp`, mode 0700), written here and then made read-only. Only that user (who
    /// may trace the process anyway) or root could change it before it is loaded.
    fn private_copy(name: &str, bytes: &[u8]) -> Result<Self, String> {
        let mut last = String::from("no /dev/shm or /tmp");
        for parent in ["/dev/shm", "/tmp"] {
            let mut template = format!("{parent}/pulp-XXXXXX\0").into_bytes();
            // SAFETY: a writable NUL-terminated template ending in XXXXXX.
            let dir = unsafe { libc::mkdtemp(template.as_mut_ptr().cast()) };
            if dir.is_null() {
                last = format!("{parent}: {}", std::io::Error::last_os_error());
                continue;
            }
            template.pop();
            let dir_path = String::from_utf8_lossy(&template).into_owned();
            let file = CString::new(format!("{dir_path}/{name}.so")).map_err(|_| "bad name".to_string())?;
            let dir = CString::new(dir_path).expect("no NUL");
            // SAFETY: a valid C string; O_EXCL|O_NOFOLLOW: the folder is new and ours.
            let fd = unsafe {
                libc::open(
                    file.as_ptr(),
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                    0o500,
                )
            };
            let me = Self { fd, fallback: Some((dir, file)) };
            if fd < 0 {
                return Err(format!("cannot write the patch object: {}", std::io::Error::last_os_error()));
            }
            write_all(fd, bytes).map_err(|e| format!("cannot write the patch object: {e}"))?;
            return Ok(me);
        }
        Err(format!(
            "this process has no /proc and no writable /dev/shm or /tmp to load the patch object from ({last}); \
             mount proc in its root"
        ))
    }

    /// A path naming exactly this file for `dlopen`.
    fn path(&self) -> Result<String, String> {
        if let Some((_, file)) = &self.fallback {
            return Ok(file.to_string_lossy().into_owned());
        }
        let names = loaded_names();
        // A name the linker already knows would make dlopen return that object instead.
        (0..64)
            .map(|k| format!("/proc/self/fd/{}{}", "./".repeat(k), self.fd))
            .find(|p| !names.iter().any(|n| n == p.as_bytes()))
            .ok_or_else(|| "cannot find a fresh name for the patch object's memory file".to_string())
    }

    /// Keep the memory file open (see the type's comment); remove a private copy.
    fn finish(self) {
        if let Some((dir, file)) = &self.fallback {
            // SAFETY: valid C strings naming what `private_copy` made; `fd` is ours.
            unsafe {
                libc::close(self.fd);
                libc::unlink(file.as_ptr());
                libc::rmdir(dir.as_ptr());
            }
        }
        std::mem::forget(self);
    }
}

impl Drop for SealedFile {
    /// A load refused before `finish`: nothing of it is needed any more.
    fn drop(&mut self) {
        // SAFETY: closing and removing only what `create` made.
        unsafe {
            if self.fd >= 0 {
                libc::close(self.fd);
            }
            if let Some((dir, file)) = &self.fallback {
                libc::unlink(file.as_ptr());
                libc::rmdir(dir.as_ptr());
            }
        }
    }
}

fn write_all(fd: libc::c_int, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: writes at most `bytes.len()` bytes from a live slice.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

/// The dynamic linker's own locks, which a thread abandoned inside `dlopen` (its patch's
/// constructor faulted or hung) still holds: every later `dlopen` of the program would
/// wait forever. They are recursive pthread mutexes inside the linker's `_rtld_global`
/// (the load lock is taken once per `dlopen` level); this finds the ones this thread
/// took since the snapshot by their owner and count, and unlocks them back.
struct LoaderLocks {
    area: Option<(*const u8, usize)>,
    tid: i32,
    /// `(offset, count)` of recursive mutexes this thread already held at the snapshot.
    held: Vec<(usize, u32)>,
}

/// Offsets in glibc's x86-64 `pthread_mutex_t`: `__lock`, `__count`, `__owner`, `__kind`.
const MUTEX_LOCK: usize = 0;
const MUTEX_COUNT: usize = 4;
const MUTEX_OWNER: usize = 8;
const MUTEX_KIND: usize = 16;
const MUTEX_SIZE: usize = 40;
const PTHREAD_MUTEX_RECURSIVE_NP: i32 = 1;

impl LoaderLocks {
    fn snapshot() -> Self {
        // SAFETY: gettid has no arguments.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
        let mut me = Self { area: rtld_global(), tid, held: Vec::new() };
        me.held = me.owned();
        me
    }

    /// Recursive mutexes of the area this thread owns, with their counts.
    fn owned(&self) -> Vec<(usize, u32)> {
        let Some((base, len)) = self.area else { return Vec::new() };
        let word = |at: usize| -> i32 {
            // SAFETY: `at + 4 <= len` (checked by the caller's loop bound); the area is
            // `_rtld_global`, mapped for the life of the process; read_volatile because the
            // dynamic linker may change it.
            unsafe { std::ptr::read_volatile(base.add(at) as *const i32) }
        };
        let mut out = Vec::new();
        let mut at = 0;
        while at + MUTEX_SIZE <= len {
            if word(at + MUTEX_LOCK) != 0
                && word(at + MUTEX_OWNER) == self.tid
                && word(at + MUTEX_KIND) & 0x7f == PTHREAD_MUTEX_RECURSIVE_NP
                && word(at + MUTEX_COUNT) > 0
            {
                out.push((at, word(at + MUTEX_COUNT) as u32));
            }
            at += 8;
        }
        out
    }

    /// Unlock what this thread took since the snapshot. `false` if the linker's locks
    /// cannot be found (then they may still be held).
    fn release_taken_since(&self) -> bool {
        let Some((base, _)) = self.area else { return false };
        for (at, count) in self.owned() {
            let before = self.held.iter().find(|h| h.0 == at).map_or(0, |h| h.1);
            for _ in before..count {
                // SAFETY: a recursive pthread mutex inside `_rtld_global` that this thread
                // owns (checked in `owned`), unlocked as many times as it was locked since.
                unsafe { libc::pthread_mutex_unlock(base.add(at) as *mut libc::pthread_mutex_t) };
            }
        }
        true
    }
}

/// `dladdr1` flag: return the symbol's `ElfW(Sym)` (`<dlfcn.h>`).
const RTLD_DL_SYMENT: libc::c_int = 1;

/// Address and size of the dynamic linker's `_rtld_global`.
fn rtld_global() -> Option<(*const u8, usize)> {
    // SAFETY: dlsym with a static NUL-terminated name.
    let addr = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"_rtld_global".as_ptr()) };
    if addr.is_null() {
        return None;
    }
    // SAFETY: Dl_info is plain data (pointers and integers); all-zero is a valid value.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let mut sym: *const libc::Elf64_Sym = std::ptr::null();
    // SAFETY: dladdr1 with RTLD_DL_SYMENT stores a pointer to the symbol's ElfW(Sym) into
    // `sym`; both out-pointers live across the call.
    let ok = unsafe {
        libc::dladdr1(
            addr,
            &mut info,
            &mut sym as *mut *const libc::Elf64_Sym as *mut *mut libc::c_void,
            RTLD_DL_SYMENT,
        )
    };
    if ok == 0 || sym.is_null() {
        return None;
    }
    // SAFETY: `sym` points into the linker's dynamic symbol table, mapped for good.
    let size = unsafe { (*sym).st_size } as usize;
    (size > 0 && size < 1 << 20).then_some((addr as *const u8, size))
}
