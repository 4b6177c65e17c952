//! Applying and reverting a patch in a running process, in phases:
//!
//! 1. check everything from outside, touching nothing: the process, the runtime, each
//!    target (mapped, build-id read from memory), each function's prologue, the reach of
//!    the runtime's descriptors, the patch object (a trusted path, the content hash
//!    `pulp pack` recorded); answer at once, stopping nothing, when there is nothing to do;
//! 2. stop one thread at a safe point and make it run the runtime's entry with the
//!    request (the patch object's checked bytes included): the runtime loads the patch
//!    and starts a transition that is not armed, so nothing changes for any thread yet;
//! 3. while that thread is still held, write the code: each new pad jump, a membarrier
//!    so every core drops stale instructions, then each entry, one byte at a time in an
//!    order where every intermediate state is a harmless instruction (see
//!    `pulp_meta::prologue`); an immediate patch is finished right there;
//! 4. put the thread back exactly as it was;
//! 5. for a transition: arm it (only now can a thread move: every entry of the patch is
//!    redirected), move the threads one by one (`crate::apply::transition`), then stop one
//!    thread again to finish it (descriptors straight to the new versions, gates off).
//!
//! A failure in phase 1 or a refusal by the runtime leaves the process untouched. A tool
//! killed at any point leaves it running correctly (see docs/architecture.md): the next
//! run (apply or revert again, or `--continue`) recognises every state a write left and
//! takes it up.
//!
//! The files: `check` (phase 1, from outside), `code` (a request to the runtime, its
//! reply, the code it asks for written), `complete` (phase 5: arm, move, finish),
//! `scope` (what a transition touches), `revert_all` and `resume` (the other two
//! operations on one process), `transition` (moving threads one at a time), `phases`
//! (where the time goes), `patchfile` (the bytes that run are the bytes checked),
//! `report` (summary lines and exit statuses).

mod check;
mod code;
mod complete;
pub mod patchfile;
pub mod phases;
pub mod report;
mod resume;
mod revert_all;
mod scope;
pub mod transition;
mod unpadded;

pub use check::KnownEntries;
pub(crate) use code::call;
pub use resume::resume;
pub use revert_all::revert_all;
pub use scope::{add_scope, transition_scope, ScopeTarget};

use crate::error::{Result, TriggerError};
use crate::inject::hijack::Hijacked;
use crate::inject::process::Process;
use crate::inject::runtime::runtime_info;
use check::{check_functions, entries_intact};
use code::{read_reply, write_code};
use complete::take_up;
use pulp_meta::abi::{EntryStatus, FuncReply, Op, Request, RuntimeInfo};
use pulp_meta::format::FLAG_IMMEDIATE;
use pulp_meta::status::PatchState;
use pulp_meta::PatchMeta;
use scope::scope_targets;
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use transition::{Holder, Progress};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Apply,
    Revert,
}

/// What to do with a transition that does not complete in time, and whether to change
/// anything at all.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub timeout: Duration,
    /// Switch the threads still inside anyway.
    pub force: bool,
    /// Roll the patch back through the same steps.
    pub reverse: bool,
    /// Make every check of phase 1 and stop there: no thread is stopped, nothing is
    /// written. An `Outcome` of a dry run has `status` `Done` when the operation would
    /// change the process, `NothingToDo` when it would not.
    pub dry_run: bool,
    /// When the process was selected, its start time (`Process::started`): a PID that
    /// names another process by the time it is opened is treated as gone.
    pub started: Option<u64>,
    /// Run the injected calls with the process's seccomp filter suspended in the borrowed
    /// thread (`PTRACE_O_SUSPEND_SECCOMP`; needs `CAP_SYS_ADMIN`), for a filter that
    /// forbids what loading a patch needs.
    pub disable_seccomp: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            force: false,
            reverse: false,
            dry_run: false,
            started: None,
            disable_seccomp: false,
        }
    }
}

/// The checked bytes of patch objects, shared by the runs of one operation on many
/// processes, so that a patch object is read and hashed once, and every process loads
/// the very bytes that were checked. Kept per set of trusted owners: each process's own
/// rule (root, its owner, the user of the tool) decides whether a file may be used.
#[derive(Default)]
pub struct PatchObjects(Mutex<HashMap<ObjectKey, Arc<Vec<u8>>>>);

/// A patch object's path and the owners trusted.
type ObjectKey = (String, Vec<u32>);

impl PatchObjects {
    /// The patch object of `meta` for a process whose trusted owners are `owners`.
    fn get(&self, meta: &PatchMeta, owners: &[u32]) -> Result<Arc<Vec<u8>>> {
        let key = (meta.patch_so.clone(), owners.to_vec());
        if let Some(bytes) = self.0.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(Arc::clone(bytes));
        }
        let bytes = Arc::new(patchfile::patch_object(meta, owners)?);
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(key, Arc::clone(&bytes));
        Ok(bytes)
    }
}

impl Options {
    /// How long the patch's own code (constructors, callbacks) may run in one call.
    fn call_limit(&self) -> Duration {
        self.timeout.clamp(Duration::from_secs(2), Duration::from_secs(60))
    }
}

/// How a transition ended.
#[derive(Debug)]
pub enum Ended {
    /// Every thread moved.
    Completed(Progress),
    /// Time ran out; these threads were switched anyway (`--force`).
    Forced(Progress, Vec<Holder>),
    /// Time ran out; the transition was turned around and completed backwards.
    Reversed(Progress, Vec<Holder>),
    /// An immediate patch: every thread switched at once.
    Immediate,
    /// The process exited (with this wait status, when it could be read) after its
    /// entries were redirected and its threads let run: it ran with the patch, so the
    /// operation counts as done, though the transition did not end.
    Exited(Option<i32>),
}

/// What happened, for the summary.
#[derive(Debug)]
pub struct Outcome {
    /// `NothingToDo`: already applied (apply) or not applied (revert).
    pub status: EntryStatus,
    pub functions: usize,
    /// The borrowed thread and how long it was held the first time; `None` when nothing
    /// had to be stopped.
    pub stopped: Option<(i32, Duration)>,
    pub total: Duration,
    pub transition: Option<Ended>,
}

/// Apply or revert `meta` (whose encoded form is `bytes`) in process `pid`, taking the
/// patch object from `objects` (shared by the processes of one operation).
pub fn run(
    pid: i32,
    meta: &PatchMeta,
    bytes: &[u8],
    mode: Mode,
    opts: Options,
    objects_read: &PatchObjects,
) -> Result<Outcome> {
    let t0 = Instant::now();
    let proc = Process::open_as(pid, opts.started)?.suspending_seccomp(opts.disable_seccomp);
    proc.lock()?;
    let during = |e: TriggerError, stage: &str| exited_or(&proc, e, stage);
    let objects = proc.objects().map_err(|e| during(e, "before it could be patched"))?;
    let info = runtime_info(&proc, &objects).map_err(|e| during(e, "before it could be patched"))?;
    let status = transition::read_status(&proc, &info)?;
    phases::mark("inspect");
    if !status.refusing.is_empty() {
        return Err(TriggerError::Refused {
            pid,
            message: format!("this process refuses live patches: {}", status.refusing),
        });
    }
    let id = meta.id();
    let functions = meta.function_count();
    let listed = status.patches.iter().find(|p| p.meta.id() == id).map(|p| p.state);
    let quiet = status.transition == 0;
    let nothing = |status| Ok(Outcome { status, functions, stopped: None, total: t0.elapsed(), transition: None });
    let already = match mode {
        Mode::Apply => listed == Some(PatchState::Applied),
        Mode::Revert => matches!(listed, None | Some(PatchState::Replaced)),
    };
    // Nothing to do, and nothing needs a thread stopped to know it.
    if quiet && already && (mode == Mode::Revert || entries_intact(&proc, &objects, &info, meta)) {
        return nothing(EntryStatus::NothingToDo);
    }
    let known = KnownEntries::read(&proc, &info)?;
    check_functions(&proc, &objects, &info, &known, meta, mode)?;
    phases::mark("check");
    let object = if mode == Mode::Apply && listed.is_none() {
        objects_read.get(meta, &patchfile::trusted_owners(pid))?
    } else {
        Arc::default()
    };
    phases::mark("object");
    if opts.dry_run {
        return nothing(if already { EntryStatus::NothingToDo } else { EntryStatus::Done });
    }
    let immediate = meta.flags & FLAG_IMMEDIATE != 0;
    let (gates, inside) =
        if immediate { Default::default() } else { transition_scope(&proc, &objects, &scope_targets(meta, &status))? };
    let op = if mode == Mode::Apply { Op::Apply } else { Op::Revert };
    let request = Request { meta: bytes, gates, inside, object: &object, ..Request::new(op) }.encode();
    phases::mark("scope");

    let mut thread = Hijacked::attach(&proc, info, opts.call_limit())?;
    phases::mark("attach");
    let status = match call(&proc, &mut thread, &info, &request) {
        Ok(status) => status,
        Err(e) => {
            let abandoned = !thread.abandoned.is_empty();
            drop(thread);
            if abandoned {
                // The abandoned code held the dynamic linker's lock, which the runtime has
                // just released: a thread of the program waiting for it (in exit(), say)
                // goes on now. Give an exit under way a moment to show.
                let until = Instant::now() + Duration::from_millis(200);
                while proc.alive() && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            return Err(during(e, "before the patch could run"));
        }
    };
    let replies = read_reply(&proc, &info)?;
    phases::mark("load");
    let stopped = Some((thread.tid(), thread.stopped_at.elapsed()));
    let transition =
        settle_or_exit(&proc, &info, thread, status, &replies, immediate, opts, "while the patch was being applied")?;
    Ok(Outcome { status, functions, stopped, total: t0.elapsed(), transition })
}

/// [`settle`]; a process that exits once it runs with the new code (`during` names the
/// stage otherwise) ended that way: it was patched (or reverted), then exited.
#[allow(clippy::too_many_arguments)]
pub(super) fn settle_or_exit(
    proc: &Process,
    info: &RuntimeInfo,
    thread: Hijacked,
    status: EntryStatus,
    replies: &[FuncReply],
    immediate: bool,
    opts: Options,
    during: &str,
) -> Result<Option<Ended>> {
    let live = Cell::new(false);
    settle(proc, info, thread, status, replies, immediate, opts, &live)
        .or_else(|e| exited_after_live(proc, e, during, live.get()))
}

/// The error `err` of a step `during` which the process may have exited: when it did and
/// it ran with the new code already (`live`), it ended that way (patched or reverted,
/// then exited); otherwise the error, as [`exited_or`] names it.
pub(super) fn exited_after_live(proc: &Process, err: TriggerError, during: &str, live: bool) -> Result<Option<Ended>> {
    match exited_or(proc, err, during) {
        TriggerError::ExitedWith { status, .. } if live => Ok(Some(Ended::Exited(status))),
        e => Err(e),
    }
}

/// After the runtime answered a request that may start a transition: `NothingToDo` (the
/// patch is where it should be: repair any entry a killed tool left half-written),
/// `Done` (the runtime wrote the code and finished an immediate patch itself), or
/// `Transition` (take it up). `live` is set once the process's threads may run the new
/// code (entries written and the transition armed, or an immediate patch finished).
#[allow(clippy::too_many_arguments)]
fn settle(
    proc: &Process,
    info: &RuntimeInfo,
    thread: Hijacked,
    status: EntryStatus,
    replies: &[FuncReply],
    immediate: bool,
    opts: Options,
    live: &Cell<bool>,
) -> Result<Option<Ended>> {
    match status {
        EntryStatus::Transition => take_up(proc, info, thread, replies, immediate, opts, live).map(Some),
        _ => {
            thread.release()?;
            write_code(proc, info, replies, None)?;
            live.set(status == EntryStatus::Done);
            Ok((status == EntryStatus::Done).then_some(Ended::Immediate))
        }
    }
}

/// The process exited: say so, with its exit status when it can still be read, instead
/// of whatever error reading its memory gave. A process in the middle of exiting has
/// already lost its memory (no mappings left) but is not a zombie yet: it is given a
/// moment to become one, so that the message says how it ended.
pub(super) fn exited_or(proc: &Process, err: TriggerError, stage: &str) -> TriggerError {
    let until = Instant::now() + Duration::from_millis(200);
    while proc.alive() && proc.mappings().map_or(true, |m| m.is_empty()) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(2));
    }
    if proc.alive() {
        return err;
    }
    TriggerError::ExitedWith { pid: proc.pid, during: stage.to_string(), status: proc.exit_status() }
}
