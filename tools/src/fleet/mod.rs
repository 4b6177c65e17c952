//! One operation on many processes (`pulp-trigger` with several `-p`, `--all`, `--name`,
//! `--user`): processes are examined and worked on in parallel by a bounded pool of
//! threads. A process is handled from start to end by one worker (ptrace ties a traced
//! thread to the thread of the tool that seized it). Each result is handed over as soon
//! as it is known; [`Summary`] counts them and combines their exit statuses.
//!
//! The files: `select` (finding the processes an operation concerns: `--all`, `--name`,
//! `--user`), `summary` (the counts and exit status of a run), `control`
//! (`set-patchable`, one process or a selection of them), `install` (`pulp install`,
//! every process of the machine), `preload` (`pulp preload`, `/etc/ld.so.preload`).

use crate::apply::phases;
use crate::apply::report::{self, EXIT_EXITED, EXIT_LEFT_RUNNING, EXIT_OK, EXIT_REFUSED};
use crate::apply::{self, Ended, Mode, Options, Outcome, PatchObjects};
use crate::error::TriggerError;
use crate::inject::signals::BlockedSignals;
use crate::text::printable;
use pulp_meta::abi::EntryStatus;
use pulp_meta::format::hex;
use pulp_meta::PatchMeta;
use select::{Candidate, Fit, Wanted};
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

pub mod control;
pub mod install;
pub mod preload;
pub mod select;
mod summary;

pub use summary::Summary;

/// What is done to each process.
#[derive(Clone, Copy)]
pub enum Operation<'a> {
    /// Apply or revert a patch (`bytes`: its encoded `.meta`).
    Patch { meta: &'a PatchMeta, bytes: &'a [u8], mode: Mode },
    /// `--revert-all TARGET`.
    RevertAll { target: &'a str },
    /// `--continue`.
    Resume,
}

impl Operation<'_> {
    /// Its name in JSON.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Patch { mode: Mode::Apply, .. } => "apply",
            Self::Patch { mode: Mode::Revert, .. } => "revert",
            Self::RevertAll { .. } => "revert_all",
            Self::Resume => "continue",
        }
    }

    /// What a process must map to be selected.
    pub fn wanted(&self) -> Wanted<'_> {
        match self {
            Self::Patch { meta, .. } => Wanted::Patch(meta),
            Self::RevertAll { target } => Wanted::Object(target),
            Self::Resume => Wanted::Runtime,
        }
    }

    /// Only an apply lists the processes that map the target but lack the runtime: a
    /// process without the runtime has nothing to revert or continue.
    fn lists_unpatchable(&self) -> bool {
        matches!(self, Self::Patch { mode: Mode::Apply, .. })
    }
}

/// How an operation ended in one process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Applied,
    AlreadyApplied,
    Reverted,
    NotApplied,
    Completed,
    NoTransition,
    WouldApply,
    WouldRevert,
    /// A transition timed out and was turned around (`--reverse`): the process runs what
    /// it ran before.
    RolledBack,
    Refused,
    LeftRunning,
    Exited,
    /// It maps the target but has not loaded the runtime.
    NotLivePatchable,
}

impl Kind {
    /// In the order the summary names them.
    pub const ALL: [Kind; 13] = [
        Kind::Applied,
        Kind::AlreadyApplied,
        Kind::Reverted,
        Kind::NotApplied,
        Kind::Completed,
        Kind::NoTransition,
        Kind::WouldApply,
        Kind::WouldRevert,
        Kind::RolledBack,
        Kind::Refused,
        Kind::LeftRunning,
        Kind::Exited,
        Kind::NotLivePatchable,
    ];

    /// Its name in JSON (`result`).
    pub fn key(self) -> &'static str {
        match self {
            Kind::Applied => "applied",
            Kind::AlreadyApplied => "already_applied",
            Kind::Reverted => "reverted",
            Kind::NotApplied => "not_applied",
            Kind::Completed => "completed",
            Kind::NoTransition => "no_transition",
            Kind::WouldApply => "would_apply",
            Kind::WouldRevert => "would_revert",
            Kind::RolledBack => "rolled_back",
            Kind::Refused => "refused",
            Kind::LeftRunning => "left_running",
            Kind::Exited => "exited",
            Kind::NotLivePatchable => "not_live_patchable",
        }
    }

    /// Whether the process now runs other code than before.
    pub fn changed(self) -> bool {
        matches!(self, Kind::Applied | Kind::Reverted | Kind::Completed)
    }

    /// What this outcome adds to the exit status of a run over many processes.
    fn status(self) -> u8 {
        match self {
            Kind::LeftRunning => EXIT_LEFT_RUNNING,
            Kind::Refused | Kind::RolledBack => EXIT_REFUSED,
            Kind::Exited => EXIT_EXITED,
            _ => EXIT_OK,
        }
    }

    fn words(self, n: usize) -> String {
        match self {
            Kind::Applied => format!("applied to {n}"),
            Kind::AlreadyApplied => format!("already applied {n}"),
            Kind::Reverted => format!("reverted in {n}"),
            Kind::NotApplied => format!("not applied {n}"),
            Kind::Completed => format!("completed in {n}"),
            Kind::NoTransition => format!("no transition in {n}"),
            Kind::WouldApply => format!("would apply to {n}"),
            Kind::WouldRevert => format!("would revert in {n}"),
            Kind::RolledBack => format!("rolled back {n}"),
            Kind::Refused => format!("refused {n}"),
            Kind::LeftRunning => format!("left running {n}"),
            Kind::Exited => format!("exited {n}"),
            Kind::NotLivePatchable => format!("not live-patchable {n} (runtime not loaded)"),
        }
    }
}

/// The result of the operation in one process.
#[derive(Debug)]
pub struct ProcessResult {
    pub pid: i32,
    pub name: String,
    pub kind: Kind,
    /// For a refusal: why, in words and as a JSON key.
    pub reason: Option<(&'static str, &'static str)>,
    /// One line (names escaped).
    pub message: String,
    /// For an error: the whole message, over several lines for a transition left running.
    pub error: Option<String>,
    /// What `pulp-trigger -p PID` alone would exit with.
    pub exit_status: u8,
    pub functions: usize,
    /// The thread that was borrowed and how long it was held the first time.
    pub stopped: Option<(i32, Duration)>,
    /// How long the operation took inside the tool.
    pub total: Option<Duration>,
    /// The longest stop of a thread sampled during the transition.
    pub longest_sample: Option<Duration>,
    /// Where the time went (`crate::apply::phases`).
    pub phases: Vec<(&'static str, Duration)>,
}

impl ProcessResult {
    fn failed(pid: i32, name: String, e: &TriggerError) -> Self {
        let kind = match e {
            TriggerError::Stuck { .. } => Kind::LeftRunning,
            TriggerError::ExitedWith { .. } | TriggerError::Exited { .. } => Kind::Exited,
            _ => Kind::Refused,
        };
        Self {
            pid,
            name,
            kind,
            reason: (kind == Kind::Refused).then(|| report::refusal_reason(e)),
            message: report::one_line(e),
            error: Some(printable(&e.to_string()).replace("\\n", "\n")),
            exit_status: report::exit_status(e),
            functions: 0,
            stopped: None,
            total: None,
            longest_sample: None,
            phases: Vec::new(),
        }
    }

    fn done(pid: i32, name: String, kind: Kind, message: String, o: Option<&Outcome>) -> Self {
        Self {
            pid,
            name,
            kind,
            reason: None,
            message,
            error: None,
            exit_status: EXIT_OK,
            functions: o.map_or(0, |o| o.functions),
            stopped: o.and_then(|o| o.stopped),
            total: o.map(|o| o.total),
            longest_sample: o.and_then(|o| match &o.transition {
                Some(Ended::Completed(p) | Ended::Forced(p, _) | Ended::Reversed(p, _)) if p.stops > 0 => {
                    Some(p.longest_stop)
                }
                _ => None,
            }),
            phases: Vec::new(),
        }
    }

    /// One JSON object (`"type": "process"`).
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "type": "process",
            "pid": self.pid,
            "name": printable(&self.name),
            "result": self.kind.key(),
            "changed": self.kind.changed(),
            "exit_status": self.exit_status,
            "message": self.message,
        });
        let m = v.as_object_mut().expect("an object");
        if let Some((_, key)) = self.reason {
            m.insert("reason".into(), json!(key));
        }
        if self.functions > 0 {
            m.insert("functions".into(), json!(self.functions));
        }
        if let Some((tid, d)) = self.stopped {
            m.insert("stopped_tid".into(), json!(tid));
            m.insert("stopped_us".into(), json!(d.as_micros() as u64));
        }
        if let Some(d) = self.total {
            m.insert("total_us".into(), json!(d.as_micros() as u64));
        }
        if let Some(d) = self.longest_sample {
            m.insert("longest_sample_us".into(), json!(d.as_micros() as u64));
        }
        if !self.phases.is_empty() {
            let phases: Map<String, Value> =
                self.phases.iter().map(|(n, d)| (n.to_string(), json!(d.as_micros() as u64))).collect();
            m.insert("phases_us".into(), Value::Object(phases));
        }
        v
    }
}

fn rolled_back(e: &Option<Ended>) -> bool {
    matches!(e, Some(Ended::Reversed(..)))
}

/// Do `op` in process `pid`. `discovered`: the process was found by a search (`--all`,
/// `--name`, `--user`), so one that is gone by now merely exited; a PID given with `-p`
/// that does not exist is refused.
pub fn perform(
    op: &Operation,
    pid: i32,
    name: String,
    opts: Options,
    objects: &PatchObjects,
    discovered: bool,
) -> ProcessResult {
    phases::start();
    let result = match *op {
        Operation::Patch { meta, bytes, mode } => apply::run(pid, meta, bytes, mode, opts, objects).map(|o| {
            let kind = match (mode, o.status) {
                (_, _) if rolled_back(&o.transition) => Kind::RolledBack,
                (Mode::Apply, EntryStatus::NothingToDo) => Kind::AlreadyApplied,
                (Mode::Revert, EntryStatus::NothingToDo) => Kind::NotApplied,
                (Mode::Apply, _) if opts.dry_run => Kind::WouldApply,
                (Mode::Revert, _) if opts.dry_run => Kind::WouldRevert,
                (Mode::Apply, _) => Kind::Applied,
                (Mode::Revert, _) => Kind::Reverted,
            };
            let line =
                if opts.dry_run { report::dry_run(meta, pid, mode, &o) } else { report::summary(meta, pid, mode, &o) };
            ProcessResult::done(pid, name.clone(), kind, line, Some(&o))
        }),
        Operation::RevertAll { target } => apply::revert_all(pid, target, opts).map(|o| {
            let kind = match &o.transition {
                None => Kind::NotApplied,
                t if rolled_back(t) => Kind::RolledBack,
                _ => Kind::Reverted,
            };
            ProcessResult::done(pid, name.clone(), kind, report::reverted_all(target, pid, &o), Some(&o))
        }),
        Operation::Resume => apply::resume(pid, opts).map(|e| {
            let kind = match &e {
                None => Kind::NoTransition,
                t if rolled_back(t) => Kind::RolledBack,
                _ => Kind::Completed,
            };
            ProcessResult::done(pid, name.clone(), kind, report::resumed(pid, &e), None)
        }),
    };
    let mut r = match result {
        Ok(r) => r,
        Err(TriggerError::NoSuchProcess { .. }) if discovered => {
            let e = TriggerError::Exited { pid, during: "before it could be examined".into() };
            ProcessResult::failed(pid, name, &e)
        }
        Err(e) => ProcessResult::failed(pid, name, &e),
    };
    r.phases = phases::take();
    r
}

/// A process left out of a search, and why.
#[derive(Debug)]
pub struct Skipped {
    pub pid: i32,
    pub name: String,
    /// Why, in words (grouped by these in the summary), and as a JSON key.
    pub why: String,
    pub key: &'static str,
    /// The particulars (the other build's path and build-id), for JSON.
    pub detail: String,
}

/// What examining one candidate of a search gave.
pub enum Examined {
    /// Worked on (or listed as not live-patchable).
    Result(ProcessResult),
    Skipped(Skipped),
    /// Not concerned (maps nothing the operation is about, or exited meanwhile).
    Ignored,
}

/// Examine candidate `c` of a search and, when selected, do `op` in it.
pub fn examine_and_perform(op: &Operation, c: &Candidate, opts: Options, objects: &PatchObjects) -> Examined {
    let name = c.name.clone();
    // The very process the search found: if its PID names another one by the time it is
    // opened, it exited meanwhile.
    let opts = Options { started: c.started, ..opts };
    match select::fit(c.pid, &op.wanted()) {
        Fit::Selected => Examined::Result(perform(op, c.pid, name, opts, objects, true)),
        Fit::NoRuntime if op.lists_unpatchable() => {
            let message = format!(
                "PID {} ({}): not live-patchable: runtime not loaded (start it with LD_PRELOAD=libpulp_rs.so)",
                c.pid,
                printable(&c.name)
            );
            Examined::Result(ProcessResult::done(c.pid, name, Kind::NotLivePatchable, message, None))
        }
        Fit::OtherBuild { path, build_id } => Examined::Skipped(Skipped {
            pid: c.pid,
            name,
            why: format!("mapping another build of {}", printable(path.rsplit('/').next().unwrap_or(&path))),
            key: "other_build",
            detail: format!("maps {} with build-id {}", printable(&path), hex(&build_id)),
        }),
        Fit::SomeTargets { missing } => Examined::Skipped(Skipped {
            pid: c.pid,
            name,
            why: "mapping only some targets of the patch".into(),
            key: "some_targets",
            detail: format!("does not map {}", printable(&missing)),
        }),
        Fit::NotPermitted => Examined::Skipped(Skipped {
            pid: c.pid,
            name,
            why: "not permitted to examine".into(),
            key: "not_permitted",
            detail: "its memory map cannot be read by this user".into(),
        }),
        Fit::NoRuntime | Fit::Unrelated | Fit::Gone => Examined::Ignored,
    }
}

/// Run `work` on every item with at most `jobs` threads, handing each result to `sink`
/// (on the calling thread) as soon as it is ready. Workers take no new item once `stop`
/// is set (by `poll`, called on the calling thread after each result and at least
/// every 50 ms). Returns how many items were never started.
pub fn pool<T: Sync, R: Send>(
    items: &[T],
    jobs: usize,
    work: impl Fn(&T) -> R + Sync,
    mut sink: impl FnMut(R),
    mut poll: impl FnMut(&AtomicBool),
) -> usize {
    let next = AtomicUsize::new(0);
    let started = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, items.len().max(1)) {
            let tx = tx.clone();
            let (next, started, stop, work) = (&next, &started, &stop, &work);
            s.spawn(move || loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                started.fetch_add(1, Ordering::Relaxed);
                if tx.send(work(item)).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(r) => sink(r),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            poll(&stop);
        }
    });
    items.len() - started.load(Ordering::Relaxed).min(items.len())
}

/// The signals that end a tool (Ctrl-C, `kill`, a closed terminal), held back for the
/// whole run over many processes: on the first one, no new process is started, those in
/// hand are finished, and the run ends with the summary; a second one ends the tool at
/// once (a process it is working on stays correct: see docs/architecture.md).
pub struct Interruptions {
    blocked: BlockedSignals,
    pub received: Option<i32>,
}

const ENDING_SIGNALS: [i32; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

impl Interruptions {
    /// Block the signals in the calling thread, before any worker is started (workers
    /// inherit the mask).
    pub fn hold() -> Self {
        Self { blocked: BlockedSignals::new(&ENDING_SIGNALS), received: None }
    }

    /// Take a pending signal, if any: the first sets `stop`; a second ends the tool.
    pub fn poll(&mut self, stop: &AtomicBool) {
        let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: the set is a valid signal set; no siginfo is asked for.
        let sig = unsafe { libc::sigtimedwait(self.blocked.set(), std::ptr::null_mut(), &zero) };
        if sig <= 0 {
            return;
        }
        if self.received.is_some() {
            // SAFETY: restoring the default action and raising the signal ends the tool
            // the way that signal ends it; no memory is involved.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
            self.blocked.restore();
            // SAFETY: as above.
            unsafe { libc::raise(sig) };
        }
        eprintln!("pulp-trigger: signal {sig}: finishing the processes in hand, starting no other (again to stop now)");
        self.received = Some(sig);
        stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod fleet_tests;
