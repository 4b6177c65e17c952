//! Redirecting functions built without a pad, the way the kernel's `text_poke_bp` does,
//! with no global stop: per function, its trampoline slot (the jump through its
//! descriptor and the relocated copy of the overwritten instructions) first, then
//!
//! 1. `int3` on the first overwritten byte (a thread reaching it is sent to the slot by
//!    the runtime's SIGTRAP handler), then `membarrier(SYNC_CORE)`;
//! 2. threads looked at one at a time: one whose rip lies inside the overwritten bytes
//!    (after the first) is moved to the same instruction in the copy;
//! 3. the rest of the bytes (the `jmp rel32`'s displacement and `int3` fill, or the
//!    original bytes when reverting), then `membarrier(SYNC_CORE)`;
//! 4. the first byte (`e9`, or the original one).
//!
//! Every state is recognised by the next run: the first byte is the original, `int3` or
//! `e9`; while it is not `int3` the rest matches it. A tool killed anywhere leaves a
//! state any later run takes to where it needs it by the same steps.

use crate::error::{Result, TriggerError};
use crate::inject::process::Process;
use crate::inject::ptrace::{sigtrap_pending, Tracee};
use pulp_meta::abi::{EntryAction, FuncReply};
use pulp_meta::prologue::{slot_head, unpadded_jump, INT3, SLOT_COPY};
use pulp_meta::Prologue;
use pulp_unpadded::Plan;

/// One entry to bring from what it holds to `want`.
struct Write {
    entry: u64,
    plan: Plan,
    start: u64,
    copy: u64,
    want: Vec<u8>,
    first: u8,
    redirect: bool,
}

/// Whether any reply names an unpadded function.
pub(super) fn any(replies: &[FuncReply]) -> bool {
    replies.iter().any(|r| r.kind == Prologue::Unpadded && r.action != EntryAction::Keep)
}

/// The plan a reply carries.
pub(super) fn plan_of(r: &FuncReply) -> Plan {
    let d = r.displaced();
    Plan { skip: d.skip, len: d.original.len() as u8, original: d.original }
}

/// The trampoline slot of `r`: the jump through its descriptor and its relocated copy.
pub(super) fn slot_bytes(pid: i32, r: &FuncReply) -> Result<Vec<u8>> {
    let plan = plan_of(r);
    let mut slot = slot_head(r.desc).to_vec();
    let copy = pulp_unpadded::relocate(&format!("function at {:#x}", r.entry), &plan, r.entry, r.slot + SLOT_COPY)
        .map_err(|e| TriggerError::Target { pid, what: e.to_string() })?;
    slot.extend_from_slice(&copy);
    Ok(slot)
}

/// Bring every unpadded entry of `replies` where the runtime asked (see the module docs).
/// `sync` runs `membarrier(SYNC_CORE)` in the process.
pub(super) fn write(proc: &Process, replies: &[FuncReply], sync: &mut dyn FnMut() -> Result<()>) -> Result<()> {
    let pid = proc.pid;
    let mut todo = Vec::new();
    for r in replies.iter().filter(|r| r.kind == Prologue::Unpadded) {
        let plan = plan_of(r);
        let start = plan.start(r.entry);
        let want = match r.action {
            EntryAction::Redirect => {
                let slot = slot_bytes(pid, r)?;
                if proc.read(r.slot, slot.len())? != slot {
                    proc.write(r.slot, &slot)?;
                }
                unpadded_jump(start, plan.original.len(), r.slot).ok_or_else(|| TriggerError::Target {
                    pid,
                    what: format!("the trampoline at {:#x} is out of reach of {:#x}", r.slot, r.entry),
                })?
            }
            EntryAction::Restore => plan.original.clone(),
            EntryAction::Keep => continue,
        };
        let now = proc.read(start, want.len())?;
        if now == want {
            continue;
        }
        let redirect = r.action == EntryAction::Redirect;
        todo.push(Write { entry: r.entry, start, copy: r.slot + SLOT_COPY, first: now[0], want, plan, redirect });
    }
    if todo.is_empty() {
        return Ok(());
    }
    // A thread blocking SIGTRAP that met the int3 would have the kernel reset SIGTRAP to
    // its default action and kill the process. glibc blocks every signal for a moment
    // (creating a thread, fork, posix_spawn), so a thread is given SIGTRAP_WAIT to
    // unblock it before the write is refused.
    let waited = std::time::Instant::now();
    let mut nap = std::time::Duration::from_millis(1);
    while let Some((tid, mask)) = blocking_sigtrap(proc)? {
        if waited.elapsed() >= SIGTRAP_WAIT {
            return Err(TriggerError::Target {
                pid,
                what: format!(
                    "thread {tid} blocks SIGTRAP (signal mask {mask:#x}), which the entry of an unpadded function \
                     needs while it is written; nothing was written"
                ),
            });
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(std::time::Duration::from_millis(50));
    }
    for w in todo.iter().filter(|w| w.first != INT3) {
        proc.write(w.start, &[INT3])?;
    }
    sync()?;
    let moving: Vec<&Write> = todo.iter().filter(|w| w.redirect).collect();
    if !moving.is_empty() {
        move_threads(proc, &moving)?;
    }
    for w in &todo {
        proc.write(w.start + 1, &w.want[1..])?;
    }
    sync()?;
    for w in &todo {
        proc.write(w.start, &w.want[..1])?;
    }
    Ok(())
}

/// How long a thread may keep SIGTRAP blocked before an unpadded write is refused.
const SIGTRAP_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A thread whose signal mask blocks SIGTRAP (read from `/proc`, without stopping it).
fn blocking_sigtrap(proc: &Process) -> Result<Option<(i32, u64)>> {
    let bit = 1u64 << (libc::SIGTRAP - 1);
    for tid in proc.threads()? {
        let path = format!("/proc/{}/task/{tid}/status", proc.pid);
        let Ok(status) = crate::inject::process::read_proc_file(&path) else { continue };
        let blocked =
            status.lines().find_map(|l| l.strip_prefix("SigBlk:")).and_then(|v| u64::from_str_radix(v.trim(), 16).ok());
        if let Some(b) = blocked.filter(|b| b & bit != 0) {
            return Ok(Some((tid, b)));
        }
    }
    Ok(None)
}

/// Look at each thread alone; one whose rip is inside bytes about to be overwritten
/// (after the first, now `int3`) goes on at the same instruction in the copy.
fn move_threads(proc: &Process, moving: &[&Write]) -> Result<()> {
    let maps: Vec<Vec<(u64, u64)>> = moving.iter().map(|w| pulp_unpadded::rip_map(&w.plan, w.entry, w.copy)).collect();
    for tid in proc.threads()? {
        let Ok(Some(mut t)) = Tracee::stop_to_inspect(proc.pid, tid) else { continue };
        if !proc.owns_stopped_thread(tid) {
            continue;
        }
        let rip = t.saved_regs().rip;
        for (w, map) in moving.iter().zip(&maps) {
            let end = w.start + w.want.len() as u64;
            if rip <= w.start || rip >= end {
                continue;
            }
            if rip == w.start + 1 && sigtrap_pending(proc.pid, tid) {
                // Stopped right after our int3, before its handler: the handler sends it
                // to the slot once we let it go.
                continue;
            }
            let Some(&(_, to)) = map.iter().find(|(from, _)| *from == rip) else {
                return Err(TriggerError::Target {
                    pid: proc.pid,
                    what: format!(
                        "thread {tid} is at {rip:#x}, inside an instruction of the function at {:#x}",
                        w.entry
                    ),
                });
            };
            t.move_to(to)?;
        }
        t.release()?;
    }
    Ok(())
}
