//! The patch directory: patches a process applies by itself, so that a fix installed on a
//! machine (`pulp install`) also reaches processes started later and libraries loaded
//! later.
//!
//! When the runtime loads it reads `$PULP_PATCH_DIR` (default `/etc/pulp/patches.d`):
//! every `*.meta` in it, in name order, with its patch object, each read through a
//! trusted path (owned by root or the process's user, writable by nobody else, every
//! folder alike; `pulp_meta::trust`) and the object checked against the content hash the
//! `.meta` records. A file that fails any check is reported in the runtime's log
//! (`pulp messages`) and skipped; nothing here can stop the process.
//!
//! - A patch whose targets are all loaded is applied at once (at process start the only
//!   thread is the one running this: nothing can be inside a target);
//! - a patch none of whose targets is loaded yet gets its object loaded now, and is
//!   applied when the dynamic linker maps its targets, before their relocation and their
//!   constructors: the runtime hooks the linker's debugger interface (`r_debug.r_brk`,
//!   the function the linker calls when its list of objects is consistent again), so not
//!   one instruction of a target loaded later runs unpatched;
//! - anything else (a process that already runs threads, targets loaded at different
//!   times) is left for `pulp-trigger`, and the log says so.
//!
//! Targets loaded at process start may have run their own constructors before the
//! runtime's (the dynamic linker initialises dependencies first): those run unpatched.

use crate::loader::{self, PatchObject};
use crate::registry::{Claim, Object};
use crate::{exclude, local, messages};
use pulp_meta::PatchMeta;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// The default patch directory.
pub const DEFAULT_DIR: &str = "/etc/pulp/patches.d";
/// The variable naming another one.
pub const DIR_ENV: &str = "PULP_PATCH_DIR";

/// A patch waiting for its targets, its object already loaded.
struct Waiting {
    file: PathBuf,
    meta_bytes: Vec<u8>,
    meta: PatchMeta,
    object: Option<PatchObject>,
}

static WAITING: Mutex<Vec<Waiting>> = Mutex::new(Vec::new());
/// Build-ids of the objects loaded when the linker last said its list was consistent.
static SEEN: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
/// Set while the hook runs (the linker may call it again from inside).
static IN_HOOK: AtomicBool = AtomicBool::new(false);

fn short(file: &Path) -> String {
    file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn loaded_build_ids() -> Vec<Vec<u8>> {
    loader::all().into_iter().map(|o| o.build_id).filter(|b| !b.is_empty()).collect()
}

/// At load: exclusions, then the patch directory.
pub fn at_load() {
    if let Some(why) = exclude::reason() {
        if let Ok(mut claim) = Claim::get() {
            let reg = claim.registry();
            crate::registry::set_refusing(reg, why.clone());
            reg.publish();
        }
        messages::log(&format!("this process refuses live patches: {why}"));
        return;
    }
    let dir = std::env::var_os(DIR_ENV).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_DIR));
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    let mut files: Vec<PathBuf> =
        entries.filter_map(|e| Some(e.ok()?.path())).filter(|p| p.extension().is_some_and(|x| x == "meta")).collect();
    if files.is_empty() {
        return;
    }
    files.sort();
    // SAFETY: geteuid has no arguments and cannot fail.
    let owners = [0, unsafe { libc::geteuid() }];
    let single = std::fs::read_dir("/proc/self/task").map(|d| d.count() == 1).unwrap_or(false);
    let loaded = loaded_build_ids();
    let Ok(mut claim) = Claim::get() else { return };
    let reg = claim.registry();
    let mut waiting = Vec::new();
    for file in files {
        let name = short(&file);
        let (meta_bytes, meta, object) = match read_patch(&file, &owners) {
            Ok(p) => p,
            Err(e) => {
                messages::log(&format!("patch directory: {name} skipped: {e}"));
                continue;
            }
        };
        let present = meta.targets.iter().filter(|t| loaded.contains(&t.build_id)).count();
        if present == meta.targets.len() {
            if !single {
                messages::log(&format!(
                    "patch directory: {name} not applied: the process already runs threads (apply it with pulp-trigger)"
                ));
                continue;
            }
            match local::apply(reg, &meta_bytes, Object::Bytes(&object)) {
                Ok(_) => messages::log(&format!("patch directory: {name} applied at start")),
                Err(e) => messages::log(&format!("patch directory: {name} not applied: {e}")),
            }
        } else if present == 0 {
            let obj_name = meta.patch_so.rsplit('/').next().unwrap_or("patch").to_string();
            match PatchObject::load(&obj_name, &object, &meta.patch_build_id) {
                Ok(o) => {
                    messages::log(&format!("patch directory: {name} waits for its targets to be loaded"));
                    waiting.push(Waiting { file, meta_bytes, meta, object: Some(o) });
                }
                Err(e) => messages::log(&format!(
                    "patch directory: {name} cannot be loaded before its targets ({}); apply it with pulp-trigger once they are",
                    String::from(e)
                )),
            }
        } else {
            messages::log(&format!(
                "patch directory: {name} not applied: only some of its targets are loaded (apply it with pulp-trigger)"
            ));
        }
    }
    reg.publish();
    drop(claim);
    if !waiting.is_empty() {
        *SEEN.lock().unwrap_or_else(|p| p.into_inner()) = loaded;
        *WAITING.lock().unwrap_or_else(|p| p.into_inner()) = waiting;
        if let Err(e) = hook_linker() {
            messages::log(&format!("patch directory: patches for libraries loaded later will not be applied: {e}"));
        }
    }
}

/// A `.meta` of the directory, decoded, and its checked object's bytes.
fn read_patch(file: &Path, owners: &[u32]) -> Result<(Vec<u8>, PatchMeta, Vec<u8>), String> {
    let meta_bytes = pulp_meta::trust::read_trusted(file, owners, "the patch.meta").map_err(|e| e.to_string())?;
    let meta = PatchMeta::decode(&meta_bytes).map_err(|e| e.to_string())?;
    let object = pulp_meta::trust::read_trusted(Path::new(&meta.patch_so), owners, "the patch object")
        .map_err(|e| format!("{}: {e}", meta.patch_so))?;
    if pulp_meta::sha256::sha256(&object) != meta.patch_sha256 {
        return Err(format!("{}: its content is not what `pulp pack` recorded", meta.patch_so));
    }
    Ok((meta_bytes, meta, object))
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
    let mut i = 0;
    while i < waiting.len() {
        let w = &mut waiting[i];
        let all = w.meta.targets.iter().all(|t| loaded.contains(&t.build_id));
        if !all {
            i += 1;
            continue;
        }
        let name = short(&w.file);
        if w.meta.targets.iter().any(|t| seen.contains(&t.build_id)) {
            messages::log(&format!(
                "patch directory: {name} not applied: its targets were loaded at different times (apply it with pulp-trigger)"
            ));
        } else {
            match Claim::get() {
                Ok(mut claim) => {
                    let reg = claim.registry();
                    let object = w.object.take().expect("a waiting patch holds its object");
                    match local::apply(reg, &w.meta_bytes, Object::Loaded(object)) {
                        Ok(_) => messages::log(&format!("patch directory: {name} applied as its targets were loaded")),
                        Err(e) => messages::log(&format!("patch directory: {name} not applied: {e}")),
                    }
                    reg.publish();
                }
                Err(e) => messages::log(&format!("patch directory: {name} not applied: {e}")),
            }
        }
        waiting.remove(i);
    }
    *seen = loaded;
}

/// The fields of glibc's `struct r_debug` this needs.
struct RDebug {
    state: i32,
    brk: u64,
}

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
    let writer = local::CodeWriter::require()?;
    writer.write(at + 1, &rel.to_le_bytes())?;
    crate::entry::sync_core();
    writer.write(at, &[0xe9])
}

/// Bytes compilers pad functions with (multi-byte NOPs, `int3`).
fn is_padding(b: u8) -> bool {
    matches!(b, 0x90 | 0x66 | 0x2e | 0x0f | 0x1f | 0x84 | 0x00 | 0x40 | 0x44 | 0x80 | 0xcc)
}
