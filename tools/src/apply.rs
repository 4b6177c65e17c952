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
//!    redirected), move the threads one by one (`crate::transition`), then stop one
//!    thread again to finish it (descriptors straight to the new versions, gates off).
//!
//! A failure in phase 1 or a refusal by the runtime leaves the process untouched. A tool
//! killed at any point leaves it running correctly (see docs/architecture.md): the next
//! run (apply or revert again, or `--continue`) recognises every state a write left and
//! takes it up.

use crate::error::{Result, TriggerError};
use crate::inject::elffile::{identity, FileCache, FileIdentity};
use crate::inject::hijack::Hijacked;
use crate::inject::process::{MappedObject, Process};
use crate::inject::runtime::{runtime_code, runtime_code_in, runtime_info};
use crate::transition::{self, Driven, Holder, Progress};
use crate::{patchfile, phases};
use pulp_meta::abi::{self, EntryStatus, FuncReply, Op, Request, RuntimeInfo};
use pulp_meta::format::{hex, FLAG_IMMEDIATE, FLAG_REPLACE};
use pulp_meta::prologue::{self, Layout, PAD_BEFORE};
use pulp_meta::status::{PatchState, Status};
use pulp_meta::{PatchMeta, Prologue};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
fn settle_or_exit(
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
    settle(proc, info, thread, status, replies, immediate, opts, &live).or_else(|e| match exited_or(proc, e, during) {
        TriggerError::ExitedWith { status, .. } if live.get() => Ok(Some(Ended::Exited(status))),
        e => Err(e),
    })
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

/// `pulp-trigger --revert-all TARGET`: revert every patch of the target in one transition.
/// `target` is the path the process maps (or its file name, or the build-id in hex).
pub fn revert_all(pid: i32, target: &str, opts: Options) -> Result<Outcome> {
    let t0 = Instant::now();
    let proc = Process::open_as(pid, opts.started)?.suspending_seccomp(opts.disable_seccomp);
    proc.lock()?;
    let objects = proc.objects()?;
    let info = runtime_info(&proc, &objects)?;
    let status = transition::read_status(&proc, &info)?;
    let obj = crate::inject::process::find_object(pid, &objects, target)
        .ok_or_else(|| TriggerError::TargetNotMapped { pid, path: target.to_string() })?;
    let patches: Vec<&PatchMeta> = status
        .patches
        .iter()
        .filter(|p| matches!(p.state, PatchState::Applied | PatchState::Reverting))
        .filter(|p| p.meta.targets.iter().any(|t| t.build_id == obj.build_id))
        .map(|p| &p.meta)
        .collect();
    let functions = patches.iter().map(|m| m.function_count()).sum();
    if patches.is_empty() && status.transition == 0 {
        return Ok(Outcome {
            status: EntryStatus::NothingToDo,
            functions: 0,
            stopped: None,
            total: t0.elapsed(),
            transition: None,
        });
    }
    let mut scope = Vec::new();
    for m in &patches {
        add_scope(&mut scope, m);
    }
    let immediate = !patches.is_empty() && patches.iter().all(|m| m.flags & FLAG_IMMEDIATE != 0);
    let (gates, inside) = if immediate { Default::default() } else { transition_scope(&proc, &objects, &scope)? };
    let request = Request { gates, inside, target: &obj.build_id, ..Request::new(Op::RevertAll) }.encode();
    let mut thread = Hijacked::attach(&proc, info, opts.call_limit())?;
    let st = call(&proc, &mut thread, &info, &request)?;
    let replies = read_reply(&proc, &info)?;
    let stopped = Some((thread.tid(), thread.stopped_at.elapsed()));
    let transition =
        settle_or_exit(&proc, &info, thread, st, &replies, immediate, opts, "while the patches were being reverted")?;
    Ok(Outcome { status: st, functions, stopped, total: t0.elapsed(), transition })
}

/// A transition the runtime just started (or handed back): write every entry while the
/// borrowed thread is still held, then finish it at once (immediate) or arm it and move
/// the threads. The borrowed thread is judged before it is let go, as sampling would.
fn take_up(
    proc: &Process,
    info: &RuntimeInfo,
    mut thread: Hijacked,
    replies: &[FuncReply],
    immediate: bool,
    opts: Options,
    live: &Cell<bool>,
) -> Result<Ended> {
    write_code(proc, info, replies, Some(&mut thread))?;
    phases::mark("write");
    if immediate {
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
        return Ok(Ended::Immediate);
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

fn finish_request(force: bool) -> Vec<u8> {
    Request { arg: force as u64, ..Request::new(Op::Finish) }.encode()
}

/// The process exited: say so, with its exit status when it can still be read, instead
/// of whatever error reading its memory gave. A process in the middle of exiting has
/// already lost its memory (no mappings left) but is not a zombie yet: it is given a
/// moment to become one, so that the message says how it ended.
fn exited_or(proc: &Process, err: TriggerError, stage: &str) -> TriggerError {
    let until = Instant::now() + Duration::from_millis(200);
    while proc.alive() && proc.mappings().map_or(true, |m| m.is_empty()) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(2));
    }
    if proc.alive() {
        return err;
    }
    TriggerError::ExitedWith { pid: proc.pid, during: stage.to_string(), status: proc.exit_status() }
}

/// `pulp-trigger --continue`: take up a transition an earlier run left running.
pub fn resume(pid: i32, opts: Options) -> Result<Option<Ended>> {
    let proc = Process::open_as(pid, opts.started)?.suspending_seccomp(opts.disable_seccomp);
    proc.lock()?;
    let objects = proc.objects()?;
    let info = runtime_info(&proc, &objects)?;
    let status = transition::read_status(&proc, &info)?;
    if status.transition == 0 {
        return Ok(None);
    }
    let pending: Vec<&PatchMeta> = status
        .patches
        .iter()
        .filter(|p| p.state != PatchState::Applied && p.state != PatchState::Replaced)
        .map(|p| &p.meta)
        .collect();
    let immediate = !pending.is_empty() && pending.iter().all(|m| m.flags & FLAG_IMMEDIATE != 0);
    if proc.read_u64(info.armed)? == 1 && !immediate {
        // Armed: every entry was written; just move the rest of the threads.
        return complete(&proc, &info, &runtime_code(&proc)?, opts, false).map(Some).or_else(|e| {
            match exited_or(&proc, e, "while the transition was being completed") {
                TriggerError::ExitedWith { status, .. } => Ok(Some(Ended::Exited(status))),
                e => Err(e),
            }
        });
    }
    // A tool died before it armed the transition: some entries may be half-written.
    let mut thread = Hijacked::attach(&proc, info, opts.call_limit())?;
    let st = call(&proc, &mut thread, &info, &Request::new(Op::Resume).encode())?;
    let replies = read_reply(&proc, &info)?;
    settle_or_exit(&proc, &info, thread, st, &replies, immediate, opts, "while the transition was being completed")
}

/// Run the runtime's entry with `request` in the hijacked thread; a refusal becomes an
/// error carrying the runtime's message.
pub(crate) fn call(proc: &Process, thread: &mut Hijacked, info: &RuntimeInfo, request: &[u8]) -> Result<EntryStatus> {
    let pid = proc.pid;
    // The runtime maps its request buffer (and the stack entries run on) only when a
    // tool first needs them: a process that is never patched has neither.
    let (mut buffer, mut capacity) = request_buffer(proc, info)?;
    if (request.len() as u64) > capacity {
        let rc = thread.call(proc, info.prepare, request.len() as u64)?;
        if rc != 0 {
            return Err(TriggerError::Target {
                pid,
                what: format!(
                    "the runtime cannot map a {}-byte request buffer: {}",
                    request.len(),
                    std::io::Error::from_raw_os_error(-rc as i32)
                ),
            });
        }
        (buffer, capacity) = request_buffer(proc, info)?;
        if (request.len() as u64) > capacity {
            return Err(TriggerError::Target {
                pid,
                what: format!("the request ({} bytes) exceeds the runtime's buffer ({capacity} bytes)", request.len()),
            });
        }
    }
    proc.write(buffer, request)?;
    let rc = thread.call(proc, info.entry, request.len() as u64)?;
    let status = EntryStatus::from_i64(rc)
        .ok_or_else(|| TriggerError::Target { pid, what: format!("the runtime returned an unknown status {rc}") })?;
    match status {
        EntryStatus::Refused => {
            let len = u32::from_le_bytes(proc.read_array::<4>(buffer)?);
            let message = abi::decode_message(&proc.read(buffer, abi::message_bytes(len))?);
            Err(TriggerError::Refused { pid, message })
        }
        EntryStatus::Busy => {
            let owner = proc.read_u64(info.entry_owner).unwrap_or(0);
            Err(TriggerError::Busy { pid, tid: owner as i32 })
        }
        _ => Ok(status),
    }
}

/// Move every thread, then finish the transition (or force, or reverse it). `code`: the
/// runtime's own code (`runtime_code`); `held_moved`: the borrowed thread was moved
/// before it was let go (it counts as sampled).
fn complete(proc: &Process, info: &RuntimeInfo, code: &[(u64, u64)], opts: Options, held_moved: bool) -> Result<Ended> {
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

fn stuck(
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

/// `[start, end)` of code.
type Range = (u64, u64);

/// A target a transition touches: its build-id and the functions (offsets) that change.
pub type ScopeTarget = (Vec<u8>, Vec<u64>);

/// Add the targets of `meta` to `scope`.
pub fn add_scope(scope: &mut Vec<ScopeTarget>, meta: &PatchMeta) {
    for t in &meta.targets {
        let offsets = t.functions.iter().map(|f| f.offset);
        match scope.iter_mut().find(|(b, _)| *b == t.build_id) {
            Some((_, o)) => o.extend(offsets),
            None => scope.push((t.build_id.clone(), offsets.collect())),
        }
    }
}

/// What a transition of `meta` touches: its targets, and for a cumulative patch those of
/// every applied patch it replaces.
fn scope_targets(meta: &PatchMeta, status: &Status) -> Vec<ScopeTarget> {
    let mut scope = Vec::new();
    add_scope(&mut scope, meta);
    if meta.flags & FLAG_REPLACE != 0 {
        for p in status.patches.iter().filter(|p| p.state == PatchState::Applied) {
            if p.meta.targets.iter().any(|t| meta.targets.iter().any(|n| n.build_id == t.build_id)) {
                add_scope(&mut scope, &p.meta);
            }
        }
    }
    scope
}

/// What a transition needs to know about the targets: the gates (exported functions of
/// each shared library, the doors a thread comes in through) and the code that counts as
/// inside. For a shared library that is all its code; for the main executable, where
/// every thread always has frames (`main`, thread start routines), it is the patched
/// functions themselves, as for the kernel's livepatch.
pub fn transition_scope(
    proc: &Process,
    objects: &[MappedObject],
    scope: &[ScopeTarget],
) -> Result<(Vec<u64>, Vec<Range>)> {
    let pid = proc.pid;
    let maps = proc.mappings()?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok().map(|p| p.to_string_lossy().into_owned());
    let (mut gates, mut inside) = (Vec::new(), Vec::new());
    for (build_id, offsets) in scope {
        let Some(obj) = objects.iter().find(|o| &o.build_id == build_id) else { continue };
        let Some(header) = maps.iter().find(|m| m.start == obj.header) else { continue };
        let [mapped, by_path] = proc.mapped_file(header);
        let funcs = functions_of(&mapped).or_else(|_| functions_of(&by_path)).map_err(|e| TriggerError::Target {
            pid,
            what: format!("cannot read the functions of {}: {e}", obj.path),
        })?;
        if exe.as_deref() == Some(obj.path.as_str()) {
            for &off in offsets {
                let size = funcs.iter().find(|g| g.offset == off).map(|g| g.size).unwrap_or(0).max(1);
                inside.push((obj.base + off, obj.base + off + size));
            }
        } else {
            gates.extend(funcs.iter().filter(|f| f.dynamic && f.prologue.is_some()).map(|f| obj.base + f.offset));
            inside
                .extend(maps.iter().filter(|m| m.path == obj.path && m.perms.contains('x')).map(|m| (m.start, m.end)));
        }
    }
    gates.sort_unstable();
    gates.dedup();
    Ok((gates, inside))
}

/// The functions of the object file at `path`, kept per file identity (device, inode,
/// size, modification time): the processes of one `--all` map the same target, which is
/// then read and parsed once.
fn functions_of(path: &std::path::Path) -> std::result::Result<Arc<Vec<pulp_elf::FunctionInfo>>, String> {
    static KNOWN: FileCache<FileIdentity, Arc<Vec<pulp_elf::FunctionInfo>>> = FileCache::new(64);
    let key = identity(&std::fs::metadata(path).map_err(|e| e.to_string())?);
    KNOWN.get_or_read(key, || pulp_elf::functions(path).map(Arc::new).map_err(|e| e.to_string()))
}

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
fn check_functions(
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
fn entries_intact(proc: &Process, objects: &[MappedObject], info: &RuntimeInfo, meta: &PatchMeta) -> bool {
    meta.targets.iter().all(|t| {
        let Some(obj) = objects.iter().find(|o| o.build_id == t.build_id) else { return false };
        t.functions.iter().all(|f| {
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

fn read_reply(proc: &Process, info: &RuntimeInfo) -> Result<Vec<FuncReply>> {
    let (buffer, capacity) = request_buffer(proc, info)?;
    let malformed = || TriggerError::Target { pid: proc.pid, what: "the runtime's reply is malformed".into() };
    if buffer == 0 {
        return Err(malformed());
    }
    let count = u32::from_le_bytes(proc.read_array::<4>(buffer)?) as usize;
    let len = 4 + count.saturating_mul(abi::FUNC_REPLY_SIZE);
    if len as u64 > capacity {
        return Err(malformed());
    }
    abi::decode_reply(&proc.read(buffer, len)?).ok_or_else(malformed)
}

/// The runtime's request buffer: its address (0: not mapped yet) and capacity.
fn request_buffer(proc: &Process, info: &RuntimeInfo) -> Result<(u64, u64)> {
    Ok((proc.read_u64(info.buffer)?, proc.read_u64(info.buffer_len)?))
}

/// Bring each entry's code to what the runtime asked for (`prologue::code_writes`).
/// With `held`, the thread the tool holds runs the
/// membarrier after new pads; without it, one is borrowed for that moment.
fn write_code(proc: &Process, info: &RuntimeInfo, replies: &[FuncReply], held: Option<&mut Hijacked>) -> Result<()> {
    let tables = prologue::Tables { descs: info.descs, desc_size: info.desc_size(), far_stubs: info.far_stubs };
    let writes = prologue::code_writes(replies, tables, |addr, len| proc.read(addr, len).ok())
        .map_err(|what| TriggerError::Target { pid: proc.pid, what })?;
    for (addr, bytes) in &writes.pads {
        proc.write(*addr, bytes)?;
    }
    if !writes.pads.is_empty() && !proc.under_seccomp() {
        // Every core drops stale instructions of the new pads before any entry jumps
        // there. Best effort: without membarrier SYNC_CORE (an old kernel, or a seccomp
        // filter that might kill the process for an unexpected system call), x86's
        // coherent instruction fetch still holds.
        let sync = Request::new(Op::SyncCore).encode();
        phases::mark("write");
        match held {
            Some(thread) => {
                call(proc, thread, info, &sync)?;
            }
            None => {
                let mut thread = Hijacked::attach(proc, *info, Duration::from_secs(10))?;
                call(proc, &mut thread, info, &sync)?;
                thread.release()?;
            }
        }
        phases::mark("sync");
    }
    for (at, plan) in &writes.entries {
        for (offset, byte) in plan {
            proc.write(at + offset, &[*byte])?;
        }
    }
    Ok(())
}
