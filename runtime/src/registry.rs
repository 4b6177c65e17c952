//! Applied patches and the descriptor of every redirected function.
//!
//! A descriptor belongs to one function entry for the life of the process (a thread
//! preempted inside that function's pad must still land on the right code), and holds
//! the stack of versions applied to it: the top one is what word 0 points at; with no
//! version left word 0 points at the original body (entry + 2) and the tool puts the
//! entry's original bytes back.
//!
//! This release switches every thread at once (word 0 = the new version). The
//! per-thread universes of the design reuse the same descriptors through `prev`/`new`.

use crate::loader::{self, PatchObject};
use pulp_meta::abi::{self, Descriptor, EntryAction, EntryStatus, FuncReply};
use pulp_meta::{prologue, PatchMeta};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, TryLockError};

/// Runtime-side state of one descriptor.
struct DescState {
    entry: u64,
    /// The entry's bytes before the first patch.
    original: [u8; 2],
    /// Applied versions, oldest first: (patch id, address of the new function).
    versions: Vec<(String, u64)>,
}

struct Patch {
    id: String,
    /// Kept so the object is never unloaded while its code may run.
    _object: PatchObject,
    descs: Vec<usize>,
}

pub struct Registry {
    descs: Vec<DescState>,
    by_entry: BTreeMap<u64, usize>,
    patches: Vec<Patch>,
}

static REGISTRY: Mutex<Registry> =
    Mutex::new(Registry { descs: Vec::new(), by_entry: BTreeMap::new(), patches: Vec::new() });

// SAFETY: a dlopen handle is a process-wide token that may be used from any thread.
unsafe impl Send for PatchObject {}

/// The registry, or a refusal if another request is being served.
pub fn lock() -> Result<MutexGuard<'static, Registry>, String> {
    match REGISTRY.try_lock() {
        Ok(g) => Ok(g),
        // A panic in an earlier request was caught before it changed anything visible
        // (state is only mutated after all checks), so the data is still consistent.
        Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
        Err(TryLockError::WouldBlock) => Err("the runtime is busy with another request".into()),
    }
}

fn table(index: usize) -> &'static Descriptor {
    &pulp_trm::descriptors()[index]
}

/// Read `N` bytes of loaded code.
///
/// # Safety
/// `[addr, addr + N)` must be mapped readable.
unsafe fn read_code<const N: usize>(addr: u64) -> [u8; N] {
    // SAFETY: the caller guarantees the range is mapped; volatile because another
    // party (the tool, through /proc/PID/mem) may change these bytes.
    unsafe { std::ptr::read_volatile(addr as *const [u8; N]) }
}

impl Registry {
    fn reply(&self, index: usize, action: EntryAction) -> FuncReply {
        FuncReply {
            entry: self.descs[index].entry,
            desc: table(index) as *const Descriptor as u64,
            action,
            original: self.descs[index].original,
        }
    }

    /// Whether the code at `entry` is a pad jump through descriptor `index` plus the entry jump.
    fn redirected_through(entry: u64, index: usize) -> bool {
        // SAFETY: the caller checked that [entry - 14, entry + 2) is mapped code.
        let (pad, at) = unsafe { (read_code::<6>(entry - 6), read_code::<2>(entry)) };
        at == prologue::ENTRY_JUMP
            && prologue::pad_jump_slot(entry, &pad) == Some(table(index) as *const Descriptor as u64)
    }
}

fn write_reply(funcs: &[FuncReply], buf: &mut [u8]) -> Result<(), String> {
    abi::encode_reply(funcs, buf).map(|_| ()).ok_or_else(|| "reply does not fit the runtime's buffer".to_string())
}

/// Apply a patch: load its object, point the descriptors of its functions at the new
/// versions, and tell the tool which entries to redirect. Nothing changes unless every
/// check passes.
pub fn apply(reg: &mut Registry, request: &[u8], buf: &mut [u8]) -> Result<EntryStatus, String> {
    let meta = PatchMeta::decode(request).map_err(|e| format!("corrupt request: {e}"))?;
    let id = meta.id();
    if let Some(p) = reg.patches.iter().find(|p| p.id == id) {
        let replies: Vec<_> = p.descs.iter().map(|&d| reg.reply(d, EntryAction::Redirect)).collect();
        write_reply(&replies, buf)?;
        return Ok(EntryStatus::NothingToDo);
    }

    // Resolve and check every entry before anything changes.
    let mut planned = Vec::new();
    for t in &meta.targets {
        let obj = loader::find(&t.build_id).ok_or_else(|| {
            format!(
                "target {} (build-id {}) is not loaded in this process",
                t.path,
                pulp_meta::format::hex(&t.build_id)
            )
        })?;
        for f in &t.functions {
            let entry = obj.base as u64 + f.offset;
            if !obj.is_code(entry - prologue::PAD_BEFORE as u64, entry + 2) {
                return Err(format!(
                    "function `{}` of {}: offset {:#x} is not inside its code",
                    f.old, t.path, f.offset
                ));
            }
            let known = reg.by_entry.get(&entry).copied();
            // SAFETY: is_code checked that [entry - 14, entry + 2) is mapped code.
            let (before, at) = unsafe { (read_code::<14>(entry - 14), read_code::<2>(entry)) };
            let ok = match known {
                Some(d) => at == reg.descs[d].original || Registry::redirected_through(entry, d),
                None => {
                    Some(at) == f.prologue.entry_bytes()
                        && prologue::classify(&before, &[at[0], at[1], 0, 0, 0, 0, 0, 0]) == Some(f.prologue)
                }
            };
            if !ok {
                return Err(format!(
                    "function `{}` of {} at {entry:#x}: prologue is not {} as recorded (found {:02x} {:02x})",
                    f.old, t.path, f.prologue, at[0], at[1]
                ));
            }
            if planned.iter().any(|(e, _, _)| *e == entry) {
                return Err(format!("function `{}` of {} appears twice in the patch", f.old, t.path));
            }
            planned.push((entry, known, f));
        }
    }
    let fresh = planned.iter().filter(|(_, known, _)| known.is_none()).count();
    if reg.descs.len() + fresh > pulp_trm::DESC_COUNT {
        return Err(format!(
            "the runtime has room for {} more redirected functions, the patch needs {fresh}",
            pulp_trm::DESC_COUNT - reg.descs.len()
        ));
    }
    let object = PatchObject::open(&meta.patch_so, &meta.patch_build_id)?;
    let news: Result<Vec<u64>, String> =
        planned.iter().map(|(_, _, f)| object.symbol(&f.new).map(|a| a as u64)).collect();
    let news = match news {
        Ok(n) => n,
        Err(e) => {
            object.discard();
            return Err(e);
        }
    };

    // Commit.
    let mut descs = Vec::with_capacity(planned.len());
    for ((entry, known, _), new) in planned.iter().zip(news) {
        let d = match known {
            Some(d) => *d,
            None => {
                let d = reg.descs.len();
                // SAFETY: checked mapped above; the entry is untouched, so these are the original bytes.
                let original = unsafe { read_code::<2>(*entry) };
                reg.descs.push(DescState { entry: *entry, original, versions: Vec::new() });
                reg.by_entry.insert(*entry, d);
                table(d).entry.store(*entry, Ordering::Relaxed);
                d
            }
        };
        reg.descs[d].versions.push((id.clone(), new));
        table(d).new.store(new, Ordering::Relaxed);
        // Release: a thread that jumps through word 0 sees a fully loaded patch object.
        table(d).target.store(new, Ordering::Release);
        descs.push(d);
    }
    let replies: Vec<_> = descs.iter().map(|&d| reg.reply(d, EntryAction::Redirect)).collect();
    reg.patches.push(Patch { id, _object: object, descs });
    write_reply(&replies, buf)?;
    Ok(EntryStatus::Done)
}

/// Revert a patch: drop its version from each of its functions; a function left with no
/// version goes back to its original body, and the tool restores its entry bytes.
pub fn revert(reg: &mut Registry, request: &[u8], buf: &mut [u8]) -> Result<EntryStatus, String> {
    let meta = PatchMeta::decode(request).map_err(|e| format!("corrupt request: {e}"))?;
    let id = meta.id();
    let Some(pos) = reg.patches.iter().position(|p| p.id == id) else {
        write_reply(&[], buf)?;
        return Ok(EntryStatus::NothingToDo);
    };
    let patch = reg.patches.remove(pos);
    let mut replies = Vec::with_capacity(patch.descs.len());
    for &d in &patch.descs {
        let st = &mut reg.descs[d];
        st.versions.retain(|(p, _)| *p != id);
        let top = st.versions.last().map(|v| v.1);
        table(d).target.store(top.unwrap_or(st.entry + 2), Ordering::Release);
        table(d).new.store(top.unwrap_or(0), Ordering::Relaxed);
        replies.push(reg.reply(d, if top.is_some() { EntryAction::Keep } else { EntryAction::Restore }));
    }
    // `patch` is dropped here, but its object stays loaded (`PatchObject` has no Drop):
    // a thread may still be running one of its functions.
    write_reply(&replies, buf)?;
    Ok(EntryStatus::Done)
}
