//! The patch directory: patches a process applies by itself, so that a fix installed on a
//! machine (`pulp install`) also reaches processes started later and libraries loaded
//! later.
//!
//! When the runtime loads it lists `$PULP_PATCH_DIR` (default `/etc/pulp/patches.d`; the
//! variable is ignored in secure mode, `crate::environ`) once (`crate::startscan`; if no
//! patch concerns the process then, the hook below lists it again when it first runs). An installed `.meta`'s name
//! lists its targets' build-ids (`pulp_meta::patchdir`), so a process that maps none of
//! them pays that one directory read and nothing else: no file is opened, no object
//! hashed or loaded, no constructor of a patch runs. A patch concerning the process is
//! read through a trusted path (owned by root or the process's user, root only in secure
//! mode, writable by nobody else, every folder alike; `pulp_meta::trust`), its object
//! checked against the content hash the `.meta` records, and loaded once per content hash
//! (the registry keeps loaded objects by hash). A file that fails any check is reported in
//! the runtime's log (`pulp messages`) and skipped; nothing here can stop the process.
//!
//! - A patch whose targets are all loaded is applied at once (at process start the only
//!   thread is the one running this: nothing can be inside a target);
//! - a patch none of whose targets is loaded yet is applied when the dynamic linker maps
//!   its targets, before their relocation and their constructors: the runtime hooks the
//!   linker's debugger interface (`r_debug.r_brk`, the function the linker calls when its
//!   list of objects is consistent again), reads and loads the patch there, so not one
//!   instruction of a target loaded later runs unpatched;
//! - anything else (a process that already runs threads, targets loaded at different
//!   times) is left for `pulp-trigger`, and the log says so.
//!
//! Targets loaded at process start may have run their own constructors before the
//! runtime's (the dynamic linker initialises dependencies first): those run unpatched.

use crate::loader;
use crate::registry::{Claim, Object};
use crate::startscan::{self, Look};
use crate::{environ, exclude, local, messages};
use pulp_meta::patchdir::{targets_in_name, DEFAULT_DIR_C, DIR_ENV_C};
use pulp_meta::PatchMeta;
use std::ffi::CStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// A patch of the directory waiting for its targets: nothing of it read yet but its name
/// (or, for a `.meta` not named as installed, its content).
struct Waiting {
    file: PathBuf,
    targets: Vec<Vec<u8>>,
    meta: Option<(Vec<u8>, PatchMeta)>,
}

static WAITING: Mutex<Vec<Waiting>> = Mutex::new(Vec::new());
/// Build-ids of the objects loaded when the linker last said its list was consistent.
static SEEN: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
/// Set while the hook runs (the linker calls it again from inside, for the patch objects
/// the hook loads).
static IN_HOOK: AtomicBool = AtomicBool::new(false);
/// Set when the start hooked the linker without reading the directory (`startscan`): the
/// hook's first run reads it.
#[link_section = ".data.pulp_start"]
static LIST_AT_HOOK: AtomicBool = AtomicBool::new(false);

fn short(file: &Path) -> String {
    file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn loaded_build_ids() -> Vec<Vec<u8>> {
    loader::all().into_iter().map(|o| o.build_id).filter(|b| !b.is_empty()).collect()
}

/// The patch directory this process reads.
#[link_section = ".text.pulp_start"]
fn directory() -> &'static CStr {
    environ::var(DIR_ENV_C).unwrap_or(DEFAULT_DIR_C)
}

/// The `*.meta` names in `dir` (those that are UTF-8), for the full reading.
fn list_metas(dir: &CStr) -> Vec<String> {
    let mut names = Vec::new();
    startscan::each_meta_name(dir, |name| {
        if let Ok(name) = std::str::from_utf8(name) {
            names.push(name.to_string());
        }
        true
    });
    names
}

/// At load: exclusions, then the patch directory. This and what it calls in a process
/// that is neither excluded nor has patches installed lie in `.text.pulp_start`, next to
/// the other code every process runs at start (`runtime/build.rs`).
#[link_section = ".text.pulp_start"]
pub fn at_load() {
    if let Some(why) = exclude::reason() {
        return refuse_all(why);
    }
    // The one read every process pays: the directory's names.
    let dir = directory();
    match startscan::look(dir) {
        Look::Nothing => {}
        // Nothing to apply now: the linker hook reads the directory when it first runs.
        Look::NoTargetLoaded => {
            LIST_AT_HOOK.store(true, Ordering::Release);
            if let Err(e) = hook_linker() {
                hook_failed(e);
            }
        }
        Look::ReadInFull => {
            let names = list_metas(dir);
            if !names.is_empty() {
                read_directory(dir, names);
            }
        }
    }
}

#[inline(never)]
fn hook_failed(e: String) {
    messages::log(&format!("patch directory: patches for libraries loaded later will not be applied: {e}"));
}

/// An excluded process: every request is refused, nothing of the directory applied.
#[inline(never)]
fn refuse_all(why: String) {
    if let Ok(mut claim) = Claim::get() {
        let reg = claim.registry();
        crate::registry::set_refusing(reg, why.clone());
        reg.publish();
    }
    messages::log(&format!("this process refuses live patches: {why}"));
}

/// The patches of the directory (`names`, its `*.meta`): applied now, hooked for later,
/// or reported, in name order.
#[inline(never)]
fn read_directory(dir: &CStr, mut names: Vec<String>) {
    let files = files_of(dir, &mut names);
    let owners = environ::trusted_owners();
    let loaded = loaded_build_ids();
    let mut waiting = Vec::new();
    let mut apply_now = Vec::new();
    for w in files.into_iter().filter_map(|f| waiting_of(f, &owners)) {
        let present = w.targets.iter().filter(|t| loaded.contains(t)).count();
        let name = short(&w.file);
        if present == 0 {
            waiting.push(w);
        } else if present == w.targets.len() {
            apply_now.push(w);
        } else {
            messages::log(&format!(
                "patch directory: {name} not applied: only some of its targets are loaded (apply it with pulp-trigger)"
            ));
        }
    }
    if !apply_now.is_empty() {
        let single = std::fs::read_dir("/proc/self/task").map(|d| d.count() == 1).unwrap_or(false);
        for w in apply_now {
            if single {
                apply_one(w, &owners, "applied at start");
            } else {
                messages::log(&format!(
                    "patch directory: {} not applied: the process already runs threads (apply it with pulp-trigger)",
                    short(&w.file)
                ));
            }
        }
    }
    if !waiting.is_empty() {
        *SEEN.lock().unwrap_or_else(|p| p.into_inner()) = loaded;
        *WAITING.lock().unwrap_or_else(|p| p.into_inner()) = waiting;
        if let Err(e) = hook_linker() {
            hook_failed(e);
        }
    }
}

/// The paths of `names` in `dir`, in name order (the order patches are applied in).
fn files_of(dir: &CStr, names: &mut [String]) -> Vec<PathBuf> {
    names.sort();
    let dir = Path::new(std::ffi::OsStr::from_bytes(dir.to_bytes()));
    names.iter().map(|n| dir.join(n)).collect()
}

/// `file` as a patch waiting for its targets: the targets its name lists, or, for a
/// `.meta` not named as installed, those its content lists (`None`: unreadable, logged).
fn waiting_of(file: PathBuf, owners: &[u32]) -> Option<Waiting> {
    match targets_in_name(&short(&file)) {
        Some(targets) => Some(Waiting { file, targets, meta: None }),
        // Not named as installed: its content says what it is for.
        None => match read_meta(&file, owners) {
            Ok((bytes, meta)) => {
                let targets = meta.targets.iter().map(|t| t.build_id.clone()).collect();
                Some(Waiting { file, targets, meta: Some((bytes, meta)) })
            }
            Err(e) => {
                messages::log(&format!("patch directory: {} skipped: {e}", short(&file)));
                None
            }
        },
    }
}

/// Read, check and apply one patch of the directory whose targets are all mapped and
/// not yet run; `done` says when, for the log.
fn apply_one(w: Waiting, owners: &[u32], done: &str) {
    let name = short(&w.file);
    let (meta_bytes, meta) = match w.meta.map_or_else(|| read_meta(&w.file, owners), Ok) {
        Ok(m) => m,
        Err(e) => return messages::log(&format!("patch directory: {name} skipped: {e}")),
    };
    let targets: Vec<&[u8]> = meta.targets.iter().map(|t| t.build_id.as_slice()).collect();
    if targets != w.targets.iter().map(Vec::as_slice).collect::<Vec<_>>() {
        return messages::log(&format!(
            "patch directory: {name} skipped: its name lists other targets than its content (install it with pulp install)"
        ));
    }
    let Ok(mut claim) = Claim::get() else {
        return messages::log(&format!("patch directory: {name} not applied: the runtime is busy"));
    };
    let reg = claim.registry();
    // Once per content hash: an object loaded before (by another `.meta`, or a tool) is
    // used again without reading its file.
    let result = match reg.loaded_object(&meta.patch_sha256, &meta.patch_build_id) {
        Some(object) => local::apply(reg, &meta_bytes, Object::Loaded(object)),
        None => match read_object(&meta, owners) {
            Ok(bytes) => local::apply(reg, &meta_bytes, Object::Bytes(&bytes)),
            Err(e) => return messages::log(&format!("patch directory: {name} skipped: {e}")),
        },
    };
    match result {
        Ok(_) => messages::log(&format!("patch directory: {name} {done}")),
        Err(e) => messages::log(&format!("patch directory: {name} not applied: {e}")),
    }
    reg.publish();
}

/// A `.meta` of the directory, read through a trusted path and decoded.
fn read_meta(file: &Path, owners: &[u32]) -> Result<(Vec<u8>, PatchMeta), String> {
    let bytes = pulp_meta::trust::read_trusted_meta(file, owners).map_err(|e| e.to_string())?;
    let meta = PatchMeta::decode(&bytes).map_err(|e| e.to_string())?;
    Ok((bytes, meta))
}

/// The patch object of `meta`, read through a trusted path, with the content hash the
/// `.meta` records.
fn read_object(meta: &PatchMeta, owners: &[u32]) -> Result<Vec<u8>, String> {
    let object = pulp_meta::trust::read_trusted(Path::new(&meta.patch_so), owners, "the patch object")
        .map_err(|e| format!("{}: {e}", meta.patch_so))?;
    if pulp_meta::sha256::sha256(&object) != meta.patch_sha256 {
        return Err(format!("{}: its content is not what `pulp pack` recorded", meta.patch_so));
    }
    Ok(object)
}

/// Called by the dynamic linker (through the hook) whenever its list of objects changes.
extern "C" fn on_linker_change() {
    if IN_HOOK.swap(true, Ordering::Acquire) {
        return;
    }
    let _ = std::panic::catch_unwind(apply_waiting);
    IN_HOOK.store(false, Ordering::Release);
}

/// Apply the waiting patches whose targets the linker has just mapped.
fn apply_waiting() {
    // r_state: RT_CONSISTENT (0) after objects were added, before they are relocated.
    if r_debug().is_none_or(|r| r.state != 0) {
        return;
    }
    let loaded = loaded_build_ids();
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    let mut waiting = WAITING.lock().unwrap_or_else(|p| p.into_inner());
    let owners = environ::trusted_owners();
    if LIST_AT_HOOK.swap(false, Ordering::AcqRel) {
        // The start found patches none of whose targets was loaded (`startscan`), so
        // the objects of the start are nothing to them: `seen` stays empty.
        let dir = directory();
        *waiting = files_of(dir, &mut list_metas(dir)).into_iter().filter_map(|f| waiting_of(f, &owners)).collect();
    }
    let ready: Vec<Waiting>;
    (ready, *waiting) =
        std::mem::take(&mut *waiting).into_iter().partition(|w| w.targets.iter().all(|t| loaded.contains(t)));
    for w in ready {
        if w.targets.iter().any(|t| seen.contains(t)) {
            messages::log(&format!(
                "patch directory: {} not applied: its targets were loaded at different times (apply it with pulp-trigger)",
                short(&w.file)
            ));
        } else {
            apply_one(w, &owners, "applied as its targets were loaded");
        }
    }
    *seen = loaded;
}

/// The fields of glibc's `struct r_debug` this needs.
struct RDebug {
    state: i32,
    brk: u64,
}

#[link_section = ".text.pulp_start"]
fn r_debug() -> Option<RDebug> {
    // SAFETY: dlsym with a static NUL-terminated name.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"_r_debug".as_ptr()) } as *const u8;
    if p.is_null() {
        return None;
    }
    // SAFETY: `struct r_debug { int r_version; struct link_map *r_map; ElfW(Addr) r_brk;
    // enum r_state; ... }`: r_brk at 16, r_state at 24; the linker's own variable, mapped
    // for good; volatile reads since the linker changes it.
    unsafe {
        Some(RDebug {
            brk: std::ptr::read_volatile(p.add(16) as *const u64),
            state: std::ptr::read_volatile(p.add(24) as *const i32),
        })
    }
}

/// Make the linker's `r_brk` function (an empty `ret`, where debuggers put their
/// breakpoint) jump to [`on_linker_change`]: `e9 rel32` written after its `endbr64`, if
/// any, over the `ret` and the padding that follows it, the jump's last 4 bytes first
/// and its opcode last (one byte: a thread calling it meanwhile runs either `ret` or the
/// whole jump).
#[link_section = ".text.pulp_start"]
fn hook_linker() -> Result<(), String> {
    let brk = r_debug().ok_or("the dynamic linker has no r_debug")?.brk;
    if brk == 0 {
        return Err("the dynamic linker's r_brk is not set".into());
    }
    // SAFETY: r_brk is the address of a function of the linker: at least 16 bytes of
    // mapped code (the function, then padding to the next one).
    let code = unsafe { std::ptr::read_volatile(brk as *const [u8; 16]) };
    let at = match code {
        [0xc3, ..] => brk,
        [0xf3, 0x0f, 0x1e, 0xfa, 0xc3, ..] => brk + 4,
        _ => return Err(format!("unexpected code at the linker's r_brk: {:02x?}", &code[..6])),
    };
    // The bytes after the `ret` must be padding, not another function.
    let pad_end = (brk + 16) & !15;
    if pad_end < at + 5 || code[(at - brk) as usize + 1..(pad_end - brk) as usize].iter().any(|&b| !is_padding(b)) {
        return Err("no room after the linker's r_brk for a jump".into());
    }
    let target = on_linker_change as *const () as u64;
    let rel =
        i32::try_from(target as i64 - (at as i64 + 5)).map_err(|_| "the runtime is out of reach of the linker")?;
    let writer = crate::code::CodeWriter::open().ok_or(crate::code::CANNOT_WRITE)?;
    writer.write(at + 1, &rel.to_le_bytes())?;
    crate::code::sync_core();
    writer.write(at, &[0xe9])
}

/// Bytes compilers pad functions with (multi-byte NOPs, `int3`).
#[link_section = ".text.pulp_start"]
fn is_padding(b: u8) -> bool {
    matches!(b, 0x90 | 0x66 | 0x2e | 0x0f | 0x1f | 0x84 | 0x00 | 0x40 | 0x44 | 0x80 | 0xcc)
}
