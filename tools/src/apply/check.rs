//! Checking from outside, touching nothing, that a patch can go where it says: each
//! target mapped with its build-id, each function's entry untouched or in a state this
//! tool may have left.

use super::Mode;
use crate::error::{Result, TriggerError};
use crate::inject::process::{MappedObject, Process};
use pulp_meta::abi::RuntimeInfo;
use pulp_meta::format::hex;
use pulp_meta::prologue::{self, Layout, INT3, PAD_BEFORE, UNPADDED_JUMP};
use pulp_meta::{PatchMeta, Prologue};
use std::collections::HashSet;

/// The object of the process a target names: same build-id, else report what is mapped
/// at that path (or under that name), with which build-id.
fn find_target<'a>(proc: &Process, objects: &'a [MappedObject], t: &pulp_meta::Target) -> Result<&'a MappedObject> {
    let pid = proc.pid;
    if let Some(o) = objects.iter().find(|o| o.build_id == t.build_id) {
        return Ok(o);
    }
    let name = |p: &str| p.rsplit('/').next().unwrap_or(p).trim_end_matches(" (deleted)").to_string();
    let same_path = objects
        .iter()
        .find(|o| o.path.trim_end_matches(" (deleted)") == t.path)
        .or_else(|| objects.iter().find(|o| name(&o.path) == name(&t.path)));
    match same_path {
        Some(o) => Err(TriggerError::BuildIdMismatch {
            pid,
            path: o.path.clone(),
            found: hex(&o.build_id),
            expected: hex(&t.build_id),
            recorded: t.path.clone(),
        }),
        None => Err(TriggerError::TargetNotMapped { pid, path: t.path.clone() }),
    }
}

/// The function entries the runtime has descriptors for (read from its table).
pub struct KnownEntries(HashSet<u64>);

impl KnownEntries {
    pub fn read(proc: &Process, info: &RuntimeInfo) -> Result<Self> {
        const CHUNK: u64 = 64;
        let size = info.desc_size();
        let mut set = HashSet::new();
        let mut i = 0;
        'table: while i < info.desc_count {
            let n = CHUNK.min(info.desc_count - i);
            let bytes = proc.read(info.descs + i * size, (n * size) as usize)?;
            for d in bytes.chunks_exact(size as usize) {
                // Word 3 of a descriptor is its function's entry; 0 while unused (they are
                // handed out in order).
                let entry = u64::from_le_bytes(d[24..32].try_into().expect("8 bytes"));
                if entry == 0 {
                    break 'table;
                }
                set.insert(entry);
            }
            i += n;
        }
        Ok(Self(set))
    }

    pub fn contains(&self, entry: u64) -> bool {
        self.0.contains(&entry)
    }
}

/// Check every function's entry in memory: untouched and of the recorded kind, or ours
/// (the runtime has its descriptor: redirected, restored, or in a state a killed tool
/// left between two writes).
pub(super) fn check_functions(
    proc: &Process,
    objects: &[MappedObject],
    info: &RuntimeInfo,
    known: &KnownEntries,
    meta: &PatchMeta,
    mode: Mode,
) -> Result<()> {
    let pid = proc.pid;
    let table = info.descs..info.descs + info.desc_count * info.desc_size();
    for t in &meta.targets {
        let obj = find_target(proc, objects, t)?;
        for f in &t.functions {
            let entry = obj.base + f.offset;
            let mismatch = |found: String| TriggerError::PrologueMismatch {
                pid,
                path: obj.path.clone(),
                func: f.old.clone(),
                addr: entry,
                expected: f.prologue.to_string(),
                found,
            };
            if let Some(d) = f.displaced.as_ref().filter(|_| f.prologue == Prologue::Unpadded) {
                let len = usize::from(d.skip) + d.original.len();
                let at = proc.read(entry, len).map_err(|_| mismatch("unreadable memory".into()))?;
                let (kept, over) = at.split_at(usize::from(d.skip));
                let endbr = kept.is_empty() || kept == pulp_unpadded::ENDBR64;
                let untouched = endbr && over == d.original;
                // Ours: the first byte is the original, int3 or the jump (a killed tool
                // may have left any of them; the next write takes it on).
                let ours = endbr && known.contains(entry) && [d.original[0], INT3, 0xe9].contains(&over[0]);
                if !(untouched || ours) {
                    return Err(mismatch(at.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")));
                }
                continue;
            }
            let code = proc
                .read(entry - PAD_BEFORE as u64, PAD_BEFORE + 10)
                .map_err(|_| mismatch("unreadable memory".into()))?;
            let (before, at) = code.split_at(PAD_BEFORE);
            let untouched = prologue::classify(before, at) == Some(f.prologue)
                || (f.prologue == Prologue::NopPad90 && at[..2] == [0x66, 0x90]);
            if !(untouched || known.contains(entry) && in_flight(f.prologue, at)) {
                return Err(mismatch(code.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")));
            }
            // gcc's `90 90` after endbr64 cannot take the far layout safely.
            let near = prologue::pad_jump(entry - 8, table.start).is_some()
                && prologue::pad_jump(entry - 8, table.end).is_some();
            if mode == Mode::Apply && f.prologue == Prologue::EndbrNopPad && !near && at[4] == 0x90 {
                return Err(TriggerError::TooFar { pid, path: obj.path.clone(), func: f.old.clone() });
            }
        }
    }
    Ok(())
}

/// Whether the bytes at a known entry are a state we may have left: its NOPs, a jump of
/// any layout, or a harmless state between two byte writes (the original NOPs are not
/// known here: both kinds are tried).
fn in_flight(kind: Prologue, at: &[u8]) -> bool {
    let Some(off) = kind.jump_offset() else { return prologue::fentry_call(at).is_some() };
    let state = [at[off as usize], at[off as usize + 1]];
    [[0x66, 0x90], [0x90, 0x90]].iter().any(|&original| prologue::ours_or_in_flight(original, state))
}

/// Whether every NOP-pad entry of `meta` already jumps into its pad (an applied patch
/// whose code nobody left half-written).
pub(super) fn entries_intact(proc: &Process, objects: &[MappedObject], info: &RuntimeInfo, meta: &PatchMeta) -> bool {
    meta.targets.iter().all(|t| {
        let Some(obj) = objects.iter().find(|o| o.build_id == t.build_id) else { return false };
        t.functions.iter().all(|f| {
            if let Some(d) = &f.displaced {
                // Redirected: the jump, and int3 after it.
                let start = obj.base + f.offset + u64::from(d.skip);
                return proc
                    .read(start, d.original.len())
                    .is_ok_and(|b| b[0] == 0xe9 && b[UNPADDED_JUMP..].iter().all(|&x| x == INT3));
            }
            let Some(off) = f.prologue.jump_offset() else { return true };
            let entry = obj.base + f.offset;
            let Ok(now) = proc.read_array::<2>(entry + off) else { return false };
            [Layout::Near, Layout::Far, Layout::EndbrNear, Layout::EndbrFar]
                .iter()
                .any(|l| l.jump_offset() == off && l.jump() == now)
                && info.descs != 0
        })
    })
}
