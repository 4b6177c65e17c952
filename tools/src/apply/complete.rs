//! Taking up a transition the runtime started and seeing it to its end: write the
//! entries while the borrowed thread is held, arm it, move the threads, then finish it
//! (or force it, or turn it around), and the report of threads that would not move.

use super::code::{call, read_reply, write_code};
use super::{unpadded, Ended, Options};
use crate::apply::phases;
use crate::apply::transition::{self, Driven, Holder};
use crate::error::{Result, TriggerError};
use crate::inject::hijack::Hijacked;
use crate::inject::process::Process;
use crate::inject::runtime::runtime_code_in;
use pulp_meta::abi::{EntryStatus, FuncReply, Op, Request, RuntimeInfo};
use std::cell::Cell;
use std::time::Duration;

/// A transition the runtime just started (or handed back): write every entry while the
/// borrowed thread is still held, then finish it at once (immediate) or arm it and move
/// the threads. The borrowed thread is judged before it is let go, as sampling would.
pub(super) fn take_up(
    proc: &Process,
    info: &RuntimeInfo,
    mut thread: Hijacked,
    replies: &[FuncReply],
    immediate: bool,
    opts: Options,
    live: &Cell<bool>,
) -> Result<Ended> {
    if unpadded::any(replies) {
        // Unpadded entries are written while threads are looked at one at a time: the
        // borrowed thread is let go first, so that it is never stopped with another.
        let code = runtime_code_in(&thread.maps);
        thread.release()?;
        write_code(proc, info, replies, None)?;
        phases::mark("write");
        if immediate {
            let thread = Hijacked::attach(proc, *info, opts.call_limit())?;
            return finish_immediate(proc, info, thread, live);
        }
        proc.write(info.armed, &1u64.to_le_bytes())?;
        live.set(true);
        return complete(proc, info, &code, opts, false);
    }
    write_code(proc, info, replies, Some(&mut thread))?;
    phases::mark("write");
    if immediate {
        return finish_immediate(proc, info, thread, live);
    }
    // Every entry is redirected: only now may a thread move.
    proc.write(info.armed, &1u64.to_le_bytes())?;
    live.set(true);
    // The borrowed thread is still stopped: decide it now instead of stopping it again.
    let code = runtime_code_in(&thread.maps);
    let held_moved = transition::move_stopped(proc, info, &code, &thread.maps, thread.tid(), thread.saved_regs())?;
    thread.release()?;
    phases::mark("release");
    complete(proc, info, &code, opts, held_moved)
}

/// Finish an immediate patch with `thread`, then write what the finish asks.
fn finish_immediate(proc: &Process, info: &RuntimeInfo, mut thread: Hijacked, live: &Cell<bool>) -> Result<Ended> {
    {
        let status = call(proc, &mut thread, info, &finish_request(true))?;
        live.set(true);
        let replies = read_reply(proc, info)?;
        phases::mark("finish");
        thread.release()?;
        phases::mark("release");
        if status == EntryStatus::Done {
            write_code(proc, info, &replies, None)?;
            phases::mark("write");
        }
        Ok(Ended::Immediate)
    }
}

/// The trampoline regions the runtime mapped (`RuntimeInfo::trampolines`).
fn trampolines(proc: &Process, info: &RuntimeInfo) -> Result<Vec<(u64, u64)>> {
    let n = (proc.read_u64(info.trampolines)? as usize).min(pulp_meta::abi::MAX_TRAMPOLINE_REGIONS);
    let bytes = proc.read(info.trampolines + 8, n * 16)?;
    Ok(bytes
        .chunks_exact(16)
        .map(|c| (u64::from_le_bytes(c[..8].try_into().unwrap()), u64::from_le_bytes(c[8..].try_into().unwrap())))
        .collect())
}

pub(super) fn finish_request(force: bool) -> Vec<u8> {
    Request { arg: force as u64, ..Request::new(Op::Finish) }.encode()
}

/// Move every thread, then finish the transition (or force, or reverse it). `code`: the
/// runtime's own code (`runtime_code`); `held_moved`: the borrowed thread was moved
/// before it was let go (it counts as sampled).
pub(super) fn complete(
    proc: &Process,
    info: &RuntimeInfo,
    code: &[(u64, u64)],
    opts: Options,
    held_moved: bool,
) -> Result<Ended> {
    // The trampolines of unpadded functions hold original code of the targets: inside.
    let mut code = code.to_vec();
    code.extend(trampolines(proc, info)?);
    let code = &code[..];
    let step = |proc: &Process| -> Result<(transition::Running, Driven)> {
        let run = transition::running(proc, info, code)?
            .ok_or_else(|| TriggerError::Target { pid: proc.pid, what: "the transition ended under us".into() })?;
        transition::set_newborn_state(proc, &run)?;
        let driven = transition::drive(proc, info, &run, opts.timeout)?;
        Ok((run, driven))
    };
    let (run, mut driven) = step(proc)?;
    phases::mark("transition");
    if held_moved {
        let (Driven::Done(p) | Driven::Stuck(p, _)) = &mut driven;
        p.sampled += 1;
        p.by_gates = p.by_gates.saturating_sub(1);
    }
    let ended = match driven {
        Driven::Done(p) => Ended::Completed(p),
        Driven::Stuck(p, holders) if opts.force => Ended::Forced(p, holders),
        Driven::Stuck(_, holders) if opts.reverse => {
            let mut thread = Hijacked::attach(proc, *info, opts.call_limit())?;
            call(proc, &mut thread, info, &Request::new(Op::Reverse).encode())?;
            thread.release()?;
            match step(proc)?.1 {
                Driven::Done(p) => Ended::Reversed(p, holders),
                Driven::Stuck(_, again) => return Err(stuck(proc.pid, &run, again, opts.timeout, true)),
            }
        }
        Driven::Stuck(_, holders) => return Err(stuck(proc.pid, &run, holders, opts.timeout, false)),
    };
    let mut thread = Hijacked::attach(proc, *info, opts.call_limit())?;
    call(proc, &mut thread, info, &finish_request(matches!(ended, Ended::Forced(..))))?;
    let replies = read_reply(proc, info)?;
    thread.release()?;
    write_code(proc, info, &replies, None)?;
    phases::mark("finish");
    Ok(ended)
}

pub(super) fn stuck(
    pid: i32,
    run: &transition::Running,
    holders: Vec<Holder>,
    timeout: Duration,
    reversing: bool,
) -> TriggerError {
    let mut report = String::new();
    for h in &holders {
        let note = if h.inside { "" } else { ", not examined yet" };
        report.push_str(&format!("\n  thread {} ({}{note}):", h.tid, crate::text::printable(&h.name)));
        for (i, f) in h.frames.iter().enumerate() {
            report.push_str(&format!("\n    #{i} {}", crate::text::printable(f)));
        }
    }
    let inside = holders.iter().filter(|h| h.inside).count();
    TriggerError::Stuck { pid, id: run.id, timeout, inside, unexamined: holders.len() - inside, report, reversing }
}
