//! Driving a transition from outside until every thread is where it goes.
//!
//! Threads that pass a gate or call `pulp_quiescent()` move themselves and log their
//! thread pointer; we read each known thread's `cleared` word from memory without
//! stopping it. Every other thread is sampled: stopped alone, moved (one write of its
//! `cleared` word) when no frame is inside a target, a patch object or the runtime, and
//! resumed at once. Most threads are decided by their stack alone: when neither `rip`
//! nor any word of the stack points inside, no frame can be inside. A stack that does
//! mention an address inside is unwound with the `.eh_frame` of the mapped objects
//! (loaded then, with the thread running) to tell a frame from a stale word. A thread
//! that is inside is retried with back-off. No two threads are ever stopped together.

use crate::error::{Result, TriggerError};
use crate::inject::process::Process;
use crate::inject::ptrace::Tracee;
use crate::inject::unwind::{self, Unwinder};
use pulp_meta::abi::{RuntimeInfo, ThreadLog};
use pulp_meta::status::Status;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The running transition, as read from the runtime.
#[derive(Clone, Debug)]
pub struct Running {
    pub id: u64,
    /// 1: threads move to the patch's side; 0: reversed, they move back.
    pub goal: u64,
    tpoff: i64,
    /// Address of the `cleared` word's initial value (new threads).
    image: u64,
    /// Code that counts as inside: targets, patch objects, the runtime.
    inside: Vec<(u64, u64)>,
}

impl Running {
    /// Whether a thread whose `cleared` word is `word` is where the transition goes.
    pub fn done(&self, word: u64) -> bool {
        (word == self.id) == (self.goal == 1)
    }

    /// A thread's `cleared` word, read without stopping it (`u64::MAX` if unreadable).
    pub fn word(&self, proc: &Process, fs_base: u64) -> u64 {
        proc.read_u64(fs_base.wrapping_add(self.tpoff as u64)).unwrap_or(u64::MAX)
    }

    fn moved_value(&self) -> u64 {
        if self.goal == 1 {
            self.id
        } else {
            0
        }
    }

    fn is_inside(&self, addr: u64) -> bool {
        self.inside.iter().any(|&(s, e)| (s..e).contains(&addr))
    }
}

/// How a transition went, for the summary.
#[derive(Debug, Default)]
pub struct Progress {
    pub threads: usize,
    /// Threads that moved themselves (gates, `pulp_quiescent`) or were born moved.
    pub by_gates: usize,
    /// Threads we moved after sampling them.
    pub sampled: usize,
    /// Thread stops, and the longest one.
    pub stops: usize,
    pub longest_stop: Duration,
    pub elapsed: Duration,
}

/// A thread still inside when the time ran out.
#[derive(Debug)]
pub struct Holder {
    pub tid: i32,
    pub name: String,
    pub frames: Vec<String>,
    /// Whether it was examined and found inside a target; `false`: the time ran out
    /// before it could be examined.
    pub inside: bool,
}

pub enum Driven {
    Done(Progress),
    Stuck(Progress, Vec<Holder>),
}

/// The runtime's published status (retried while the runtime rewrites it).
pub fn read_status(proc: &Process, info: &RuntimeInfo) -> Result<Status> {
    let bad = |what: String| TriggerError::Target { pid: proc.pid, what: format!("unreadable runtime status: {what}") };
    let data = proc
        .read_consistent(info.status, || {
            let len = u32::from_le_bytes(proc.read_array::<4>(info.status + 8)?) as u64;
            if len + 12 > info.status_len {
                return Err(bad(format!("length {len}")));
            }
            proc.read(info.status + 12, len as usize)
        })?
        .ok_or_else(|| bad("it kept changing".into()))?;
    if data.is_empty() {
        return Ok(Status::default());
    }
    Status::decode(&data).map_err(|e| bad(e.to_string()))
}

/// The transition in progress, if any.
pub fn running(proc: &Process, info: &RuntimeInfo, runtime_code: &[(u64, u64)]) -> Result<Option<Running>> {
    let id = proc.read_u64(info.transition)?;
    if id == 0 {
        return Ok(None);
    }
    let status = read_status(proc, info)?;
    let mut inside = status.ranges;
    inside.extend_from_slice(runtime_code);
    Ok(Some(Running {
        id,
        goal: proc.read_u64(info.goal)?,
        tpoff: proc.read_u64(info.cleared_offsets)? as i64,
        image: proc.read_u64(info.cleared_offsets + 8)?,
        inside,
    }))
}

/// Move a thread this tool holds stopped (the borrowed one, before it is let go) when
/// nothing of it is inside, judged by the registers it will resume with and its stack
/// words, as sampling does; logged so that `drive` does not stop it again. `maps`: the
/// process's mappings (read before the thread was stopped, to keep the stop short).
/// `false`: it stays for sampling (an address inside on its stack needs a walk).
pub fn move_stopped(
    proc: &Process,
    info: &RuntimeInfo,
    runtime_code: &[(u64, u64)],
    maps: &[crate::inject::process::Mapping],
    tid: i32,
    regs: &libc::user_regs_struct,
) -> Result<bool> {
    let Some(run) = running(proc, info, runtime_code)? else { return Ok(false) };
    if regs.fs_base == 0 || run.is_inside(regs.rip) {
        return Ok(false);
    }
    if !run.done(run.word(proc, regs.fs_base)) {
        if unwind::stack_mentions(proc, maps, regs.rsp, &run.inside) {
            return Ok(false);
        }
        proc.write(regs.fs_base.wrapping_add(run.tpoff as u64), &run.moved_value().to_le_bytes())?;
    }
    // Keep what an earlier tool logged (`--continue`), add this thread.
    let cap = info.log_cap as usize;
    let count = (proc.read_u64(info.tool_log)? as usize).min(cap);
    let mut entries = ThreadLog::decode(&proc.read(info.tool_log, 8 + count * 16)?, cap);
    // The logs hold the threads' own ids (their PID namespace's), as the runtime's does.
    let own = proc.own_tid(tid).unwrap_or(tid);
    entries.retain(|&(t, _)| t != own);
    entries.push((own, regs.fs_base));
    proc.write(info.tool_log, &ThreadLog::encode(&entries, cap))?;
    Ok(true)
}

/// Make threads created from now on start where the transition goes.
pub fn set_newborn_state(proc: &Process, run: &Running) -> Result<()> {
    proc.write(run.image, &run.moved_value().to_le_bytes())
}

/// Threads the runtime (gates) or an earlier tool logged, by tid as this tool sees them
/// (the logs hold the threads' own ids: in another PID namespace, they are translated;
/// an id no thread has any more is left out).
pub fn logged(proc: &Process, info: &RuntimeInfo) -> Result<Vec<(i32, u64)>> {
    let cap = info.log_cap as usize;
    let mut out = Vec::new();
    for log in [info.gate_log, info.tool_log] {
        let count = (proc.read_u64(log)? as usize).min(cap);
        let bytes = proc.read(log, 8 + count * 16)?;
        out.extend(ThreadLog::decode(&bytes, cap).into_iter().filter_map(|(own, fs)| Some((proc.host_tid(own)?, fs))));
    }
    Ok(out)
}

/// Record what we learnt, for `pulp patches` and `--continue` (by the threads' own ids).
fn save_log(proc: &Process, info: &RuntimeInfo, known: &HashMap<i32, u64>) -> Result<()> {
    let entries: Vec<(i32, u64)> = known.iter().filter_map(|(&t, &f)| Some((proc.own_tid(t)?, f))).collect();
    proc.write(info.tool_log, &ThreadLog::encode(&entries, info.log_cap as usize))
}

enum Sample {
    Moved,
    AlreadyThere,
    Inside,
    Gone,
    /// Its stack holds an address inside: only a walk of its frames can tell whether
    /// that is a frame, and the unwind tables are not loaded yet.
    NeedsWalk,
}

struct Driver<'a> {
    proc: &'a Process,
    run: &'a Running,
    /// Loaded the first time a thread's stack holds an address inside.
    unwinder: Option<Unwinder>,
    /// The process's mappings, to find where a thread's stack ends; read again when a
    /// stack is not in them (a new thread).
    maps: Vec<crate::inject::process::Mapping>,
    known: HashMap<i32, u64>,
    progress: Progress,
}

impl Driver<'_> {
    fn unwinder(&mut self) -> Result<&mut Unwinder> {
        if self.unwinder.is_none() {
            crate::apply::phases::mark("transition");
            self.unwinder = Some(Unwinder::new(self.proc)?);
            crate::apply::phases::mark("unwind_tables");
        }
        Ok(self.unwinder.as_mut().expect("just set"))
    }

    fn word(&self, fs_base: u64) -> u64 {
        self.run.word(self.proc, fs_base)
    }

    /// Stop one thread, move it if nothing of it is inside, resume it.
    fn sample(&mut self, tid: i32) -> Result<Sample> {
        let began = Instant::now();
        let Ok(Some(t)) = Tracee::stop_to_inspect(self.proc.pid, tid) else { return Ok(Sample::Gone) };
        if !self.proc.owns_stopped_thread(tid) {
            // The id now names a thread of another process (this one ended): let it go.
            return Ok(Sample::Gone);
        }
        let regs = *t.saved_regs();
        let result = self.judge(tid, &regs);
        drop(t);
        let took = began.elapsed();
        self.progress.stops += 1;
        self.progress.longest_stop = self.progress.longest_stop.max(took);
        if let Ok(Sample::NeedsWalk) = result {
            // Load the tables while the thread runs (the stop stays short), then look again.
            self.unwinder()?;
            return self.sample(tid);
        }
        result
    }

    /// Whether the thread's stack mentions the inside (`unwind::stack_mentions`); a
    /// thread born since the maps were read has its stack in a mapping not seen yet.
    fn stack_mentions_inside(&mut self, rsp: u64) -> Result<bool> {
        if !self.maps.iter().any(|m| (m.start..m.end).contains(&rsp)) {
            self.maps = self.proc.mappings()?;
        }
        Ok(unwind::stack_mentions(self.proc, &self.maps, rsp, &self.run.inside))
    }

    fn judge(&mut self, tid: i32, regs: &libc::user_regs_struct) -> Result<Sample> {
        if regs.fs_base == 0 {
            return Ok(Sample::Inside); // no thread pointer, no `cleared` word: cannot move it
        }
        self.known.insert(tid, regs.fs_base);
        if self.run.done(self.word(regs.fs_base)) {
            return Ok(Sample::AlreadyThere);
        }
        let run = self.run;
        let proc = self.proc;
        if run.is_inside(regs.rip) {
            return Ok(Sample::Inside);
        }
        if !self.stack_mentions_inside(regs.rsp)? {
            proc.write(regs.fs_base.wrapping_add(run.tpoff as u64), &run.moved_value().to_le_bytes())?;
            return Ok(Sample::Moved);
        }
        let Some(unwinder) = self.unwinder.as_mut() else { return Ok(Sample::NeedsWalk) };
        let walk = unwinder.walk(proc, regs);
        // The stack mentions the inside (above): only a complete walk can clear the thread.
        let inside =
            !walk.complete || walk.frames.iter().any(|&a| run.is_inside(a) || run.is_inside(a.wrapping_sub(1)));
        if inside {
            return Ok(Sample::Inside);
        }
        proc.write(regs.fs_base.wrapping_add(run.tpoff as u64), &run.moved_value().to_le_bytes())?;
        Ok(Sample::Moved)
    }

    fn holder(&mut self, tid: i32, inside: bool) -> Holder {
        let name = crate::inject::process::read_proc_file(format!("/proc/{}/task/{tid}/comm", self.proc.pid))
            .unwrap_or_default()
            .trim()
            .to_string();
        let mut frames = Vec::new();
        if let Ok(Some(t)) = Tracee::stop_to_inspect(self.proc.pid, tid) {
            let regs = *t.saved_regs();
            let proc = self.proc;
            if let Ok(u) = self.unwinder() {
                let walk = u.walk(proc, &regs);
                drop(t);
                frames = walk.frames.iter().take(8).map(|&a| u.describe(a)).collect();
                if !walk.complete {
                    frames.push("(stack not fully unwound)".into());
                }
            }
        }
        Holder { tid, name, frames, inside }
    }
}

/// How long running threads get to pass a gate before we sample them.
const GRACE: Duration = Duration::from_micros(300);

/// Move every thread of the process to where the transition goes, or give up after
/// `timeout` and name the threads still inside (the transition keeps running).
pub fn drive(proc: &Process, info: &RuntimeInfo, run: &Running, timeout: Duration) -> Result<Driven> {
    let start = Instant::now();
    let mut d = Driver {
        proc,
        run,
        unwinder: None,
        maps: proc.mappings()?,
        known: HashMap::new(),
        progress: Progress::default(),
    };
    let mut retry_at: HashMap<i32, (Instant, Duration)> = HashMap::new();
    let mut nap = Duration::from_micros(100);
    loop {
        for (tid, fs) in logged(proc, info)? {
            d.known.entry(tid).or_insert(fs);
        }
        let tids = proc.threads()?;
        let pending: Vec<i32> =
            tids.iter().copied().filter(|t| d.known.get(t).is_none_or(|&fs| !run.done(d.word(fs)))).collect();
        if pending.is_empty() {
            d.progress.threads = tids.len();
            d.progress.by_gates = tids.len().saturating_sub(d.progress.sampled);
            d.progress.elapsed = start.elapsed();
            save_log(proc, info, &d.known)?;
            return Ok(Driven::Done(d.progress));
        }
        if start.elapsed() > timeout {
            let holders = pending.iter().map(|&t| d.holder(t, retry_at.contains_key(&t))).collect();
            d.progress.threads = tids.len();
            d.progress.elapsed = start.elapsed();
            save_log(proc, info, &d.known)?;
            return Ok(Driven::Stuck(d.progress, holders));
        }
        let now = Instant::now();
        let in_grace = start.elapsed() < GRACE;
        let mut progressed = false;
        for (n, tid) in pending.into_iter().enumerate() {
            if retry_at.get(&tid).is_some_and(|(at, _)| *at > now) {
                continue;
            }
            // A running thread will likely pass a gate soon: leave it alone at first,
            // so as not to stop it for nothing. A sleeping one cannot move by itself.
            if in_grace && proc.thread_state(tid).is_none_or(|(state, _)| state != 'S') {
                continue;
            }
            // Threads may have moved themselves while we were sampling others.
            if n % 8 == 7 {
                for (t, fs) in logged(proc, info)? {
                    d.known.entry(t).or_insert(fs);
                }
            }
            if d.known.get(&tid).is_some_and(|&fs| run.done(d.word(fs))) {
                continue;
            }
            match d.sample(tid)? {
                Sample::Moved => {
                    d.progress.sampled += 1;
                    progressed = true;
                }
                Sample::AlreadyThere | Sample::Gone | Sample::NeedsWalk => progressed = true,
                Sample::Inside => {
                    let back = retry_at
                        .get(&tid)
                        .map(|(_, b)| (*b * 2).min(Duration::from_millis(50)))
                        .unwrap_or(Duration::from_millis(1));
                    retry_at.insert(tid, (Instant::now() + back, back));
                }
            }
        }
        if progressed {
            // Look again at once: this may have been the last thread.
            nap = Duration::from_micros(100);
            continue;
        }
        // Until the grace period ends, wake up when it does.
        let until_grace = GRACE.saturating_sub(start.elapsed());
        std::thread::sleep(if until_grace.is_zero() { nap } else { nap.min(until_grace) });
        nap = (nap * 2).min(Duration::from_millis(1));
    }
}
