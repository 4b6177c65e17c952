//! Applying and reverting a patch in a running process, in phases:
//!
//! 1. check everything from outside, touching nothing: the process, the runtime, each
//!    target (mapped, build-id read from memory), each function's prologue, the reach of
//!    the runtime's descriptors, the patch object (present, safe, right build-id);
//! 2. stop one thread at a safe point and make it run the runtime's entry point, which
//!    loads the patch and either points the descriptors at the new versions (an
//!    immediate patch) or starts a transition (nothing changes for any thread yet);
//! 3. write the code: each new pad jump, a membarrier so every core drops stale
//!    instructions, then each entry, one byte at a time in an order where every
//!    intermediate state is a harmless instruction (see `pulp_meta::prologue`);
//! 4. put the thread back exactly as it was;
//! 5. for a transition: move the threads one by one (`crate::transition`), then stop one
//!    thread again to finish it (descriptors straight to the new versions, gates off).
//!
//! A failure in phase 1 or a refusal by the runtime leaves the process untouched.

use crate::error::{Result, TriggerError};
use crate::hijack::Hijacked;
use crate::process::{MappedObject, Process};
use crate::runtime::{runtime_code, runtime_info};
use crate::transition::{self, Driven, Holder, Progress};
use pulp_meta::abi::{self, EntryAction, EntryStatus, FuncReply, RuntimeInfo};
use pulp_meta::format::{hex, FLAG_IMMEDIATE};
use pulp_meta::prologue::{self, Layout, PAD_BEFORE};
use pulp_meta::status::PatchState;
use pulp_meta::{PatchMeta, Prologue};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Apply,
    Revert,
}

/// What to do with a transition that does not complete in time.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub timeout: Duration,
    /// Switch the threads still inside anyway.
    pub force: bool,
    /// Roll the patch back through the same steps.
    pub reverse: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(10), force: false, reverse: false }
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
}

/// What happened, for the summary line.
#[derive(Debug)]
pub struct Outcome {
    /// `NothingToDo`: already applied (apply) or not applied (revert).
    pub status: EntryStatus,
    pub functions: usize,
    pub tid: i32,
    /// How long the hijacked thread was stopped (the first time).
    pub stopped: Duration,
    pub total: Duration,
    /// `None` for an immediate patch.
    pub transition: Option<Ended>,
}

/// Apply or revert `meta` (whose encoded form is `bytes`) in process `pid`.
pub fn run(pid: i32, meta: &PatchMeta, bytes: &[u8], mode: Mode, opts: Options) -> Result<Outcome> {
    let t0 = Instant::now();
    let proc = Process::open(pid)?;
    proc.lock()?;
    let objects = proc.objects()?;
    let info = runtime_info(&proc, &objects)?;
    let functions = check_functions(&proc, &objects, &info, meta, mode)?;
    if mode == Mode::Apply {
        check_patch_object(&proc, meta)?;
    }
    let (gates, inside) =
        if meta.flags & FLAG_IMMEDIATE != 0 { Default::default() } else { transition_scope(&proc, &objects, meta)? };
    let request = abi::Request { meta: bytes, gates, inside }.encode();
    if request.len() as u64 > info.buffer_len {
        return Err(TriggerError::Target {
            pid,
            what: format!(
                "the request ({} bytes) exceeds the runtime's buffer ({} bytes)",
                request.len(),
                info.buffer_len
            ),
        });
    }

    let mut thread = Hijacked::attach(&proc, info)?;
    proc.write(info.buffer, &request)?;
    let entry = if mode == Mode::Apply { info.entry_apply } else { info.entry_revert };
    let status = call(&proc, &mut thread, &info, entry, request.len() as u64)?;
    let replies = read_reply(&proc, &info)?;
    let tid = thread.tid();
    let stopped = thread.stopped_at.elapsed();
    // Let the thread go before writing code: nothing here needs it stopped.
    thread.release()?;
    write_code(&proc, &info, &replies)?;
    let transition =
        if status == EntryStatus::Transition { Some(complete(&proc, &objects, &info, opts)?) } else { None };
    Ok(Outcome { status, functions, tid, stopped, total: t0.elapsed(), transition })
}

/// `pulp-trigger --continue`: take up a transition an earlier run left running.
pub fn resume(pid: i32, opts: Options) -> Result<Option<Ended>> {
    let proc = Process::open(pid)?;
    proc.lock()?;
    let objects = proc.objects()?;
    let info = runtime_info(&proc, &objects)?;
    if transition::running(&proc, &info, &[])?.is_none() {
        return Ok(None);
    }
    // A trigger that died may have left entries of the transition not yet redirected:
    // hand the runtime the patch again (it answers with the transition's entries) and
    // bring the code in line before moving threads.
    let status = transition::read_status(&proc, &info)?;
    if let Some(p) = status.patches.iter().find(|p| p.state != PatchState::Applied) {
        let bytes = p.meta.encode();
        let (gates, inside) = transition_scope(&proc, &objects, &p.meta)?;
        let request = abi::Request { meta: &bytes, gates, inside }.encode();
        let mut thread = Hijacked::attach(&proc, info)?;
        proc.write(info.buffer, &request)?;
        call(&proc, &mut thread, &info, info.entry_apply, request.len() as u64)?;
        let replies = read_reply(&proc, &info)?;
        thread.release()?;
        write_code(&proc, &info, &replies)?;
    }
    complete(&proc, &objects, &info, opts).map(Some)
}

/// Run an entry point in the hijacked thread; a refusal becomes an error carrying the
/// runtime's message.
fn call(proc: &Process, thread: &mut Hijacked, info: &RuntimeInfo, entry: u64, arg: u64) -> Result<EntryStatus> {
    let pid = proc.pid;
    let rc = thread.call(proc, entry, arg)?;
    let status = EntryStatus::from_i64(rc)
        .ok_or_else(|| TriggerError::Target { pid, what: format!("the runtime returned an unknown status {rc}") })?;
    if status == EntryStatus::Refused {
        let message = abi::decode_message(&proc.read(info.buffer, 4 + 4096)?);
        return Err(TriggerError::Refused { pid, message });
    }
    Ok(status)
}

/// Move every thread, then finish the transition (or force, or reverse it).
fn complete(proc: &Process, objects: &[MappedObject], info: &RuntimeInfo, opts: Options) -> Result<Ended> {
    let code = runtime_code(proc, objects)?;
    let step = |proc: &Process| -> Result<(transition::Running, Driven)> {
        let run = transition::running(proc, info, &code)?
            .ok_or_else(|| TriggerError::Target { pid: proc.pid, what: "the transition ended under us".into() })?;
        transition::set_newborn_state(proc, &run)?;
        let driven = transition::drive(proc, info, &run, opts.timeout)?;
        Ok((run, driven))
    };
    let (run, driven) = step(proc)?;
    let ended = match driven {
        Driven::Done(p) => Ended::Completed(p),
        Driven::Stuck(p, holders) if opts.force => Ended::Forced(p, holders),
        Driven::Stuck(_, holders) if opts.reverse => {
            let mut thread = Hijacked::attach(proc, *info)?;
            call(proc, &mut thread, info, info.entry_reverse, 0)?;
            thread.release()?;
            match step(proc)?.1 {
                Driven::Done(p) => Ended::Reversed(p, holders),
                Driven::Stuck(_, again) => return Err(stuck(proc.pid, &run, again, opts.timeout, true)),
            }
        }
        Driven::Stuck(_, holders) => return Err(stuck(proc.pid, &run, holders, opts.timeout, false)),
    };
    let mut thread = Hijacked::attach(proc, *info)?;
    call(proc, &mut thread, info, info.entry_finish, matches!(ended, Ended::Forced(..)) as u64)?;
    let replies = read_reply(proc, info)?;
    thread.release()?;
    write_code(proc, info, &replies)?;
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
        report.push_str(&format!("\n  thread {} ({}):", h.tid, h.name));
        for (i, f) in h.frames.iter().enumerate() {
            report.push_str(&format!("\n    #{i} {f}"));
        }
    }
    TriggerError::Stuck { pid, id: run.id, timeout, count: holders.len(), report, reversing }
}

/// `[start, end)` of code.
type Range = (u64, u64);

/// What a transition needs to know about the targets: the gates (exported functions of
/// each shared library, the doors a thread comes in through) and the code that counts as
/// inside. For a shared library that is all its code; for the main executable, where
/// every thread always has frames (`main`, thread start routines), it is the patched
/// functions themselves, as for the kernel's livepatch.
fn transition_scope(proc: &Process, objects: &[MappedObject], meta: &PatchMeta) -> Result<(Vec<u64>, Vec<Range>)> {
    let pid = proc.pid;
    let maps = proc.mappings()?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok().map(|p| p.to_string_lossy().into_owned());
    let (mut gates, mut inside) = (Vec::new(), Vec::new());
    for t in &meta.targets {
        let Some(obj) = objects.iter().find(|o| o.build_id == t.build_id) else { continue };
        let Some(header) = maps.iter().find(|m| m.start == obj.header) else { continue };
        let [mapped, by_path] = proc.mapped_file(header);
        let funcs = pulp_elf::functions(&mapped).or_else(|_| pulp_elf::functions(&by_path)).map_err(|e| {
            TriggerError::Target { pid, what: format!("cannot read the functions of {}: {e}", obj.path) }
        })?;
        if exe.as_deref() == Some(obj.path.as_str()) {
            for f in &t.functions {
                let size = funcs.iter().find(|g| g.offset == f.offset).map(|g| g.size).unwrap_or(0).max(1);
                inside.push((obj.base + f.offset, obj.base + f.offset + size));
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

/// The object of the process a target names: same build-id, else report by path.
fn find_target<'a>(pid: i32, objects: &'a [MappedObject], t: &pulp_meta::Target) -> Result<&'a MappedObject> {
    if let Some(o) = objects.iter().find(|o| o.build_id == t.build_id) {
        return Ok(o);
    }
    let name = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
    let same_path =
        objects.iter().find(|o| o.path == t.path).or_else(|| objects.iter().find(|o| name(&o.path) == name(&t.path)));
    match same_path {
        Some(o) => Err(TriggerError::BuildIdMismatch {
            pid,
            path: o.path.clone(),
            found: hex(&o.build_id),
            expected: hex(&t.build_id),
        }),
        None => Err(TriggerError::TargetNotMapped { pid, path: t.path.clone() }),
    }
}

/// Check every function's entry in memory: untouched and of the recorded kind, or
/// already redirected through one of the runtime's descriptors.
fn check_functions(
    proc: &Process,
    objects: &[MappedObject],
    info: &RuntimeInfo,
    meta: &PatchMeta,
    mode: Mode,
) -> Result<usize> {
    let pid = proc.pid;
    let table = info.descs..info.descs + info.desc_count * info.desc_size();
    let mut count = 0;
    for t in &meta.targets {
        let obj = find_target(pid, objects, t)?;
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
            if !(untouched || redirected_by_us(info, f.prologue, entry, &code)) {
                return Err(mismatch(code.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")));
            }
            // gcc's `90 90` after endbr64 cannot take the far layout safely.
            let near = prologue::pad_jump(entry - 8, table.start).is_some()
                && prologue::pad_jump(entry - 8, table.end).is_some();
            if mode == Mode::Apply && f.prologue == Prologue::EndbrNopPad && !near && at[4] == 0x90 {
                return Err(TriggerError::TooFar { pid, path: obj.path.clone(), func: f.old.clone() });
            }
            count += 1;
        }
    }
    Ok(count)
}

/// Whether the code around `entry` (`code` = the 14 pad bytes and 10 from the entry)
/// is a NOP-pad function redirected by us, in any layout, possibly restored since (the
/// pad jump stays): its pad jumps through one of our descriptors or far stubs.
fn redirected_by_us(info: &RuntimeInfo, kind: Prologue, entry: u64, code: &[u8]) -> bool {
    let Some(off) = kind.jump_offset() else { return false };
    let at = [code[PAD_BEFORE + off as usize], code[PAD_BEFORE + off as usize + 1]];
    let plausible = matches!(at, [0xeb, 0xf8 | 0xf5 | 0xf4] | [0x3c, _] | [0x66 | 0x90, 0x90]);
    let descs = info.descs..info.descs + info.desc_count * info.desc_size();
    let stubs = info.far_stubs..info.far_stubs + info.desc_count * abi::FAR_STUB_SIZE;
    let jump_at =
        |pos: usize, next: u64| -> Option<u64> { prologue::pad_jump_slot(next, &code[pos..pos + 6].try_into().ok()?) };
    let near = jump_at(PAD_BEFORE - 6, entry).is_some_and(|s| descs.contains(&s))
        || jump_at(0, entry - 8).is_some_and(|s| descs.contains(&s));
    let far = jump_at(PAD_BEFORE - 6, entry) == Some(entry - 14)
        && stubs.contains(&u64::from_le_bytes(code[..8].try_into().expect("8 bytes")));
    plausible && (near || far)
}

/// The patch object must exist, be safe to load into the target (absolute path, owned by
/// root or the target's owner, not writable by group or others) and match the build-id
/// recorded in the metadata.
fn check_patch_object(proc: &Process, meta: &PatchMeta) -> Result<()> {
    let path = &meta.patch_so;
    let insecure = |reason: String| TriggerError::PatchInsecure { path: path.clone(), reason };
    if !path.starts_with('/') {
        return Err(insecure("its path is not absolute".into()));
    }
    let md = std::fs::metadata(path)
        .map_err(|e| TriggerError::PatchMissing { path: path.clone(), reason: e.to_string() })?;
    let owner = std::fs::metadata(format!("/proc/{}", proc.pid))
        .map(|m| m.uid())
        .map_err(|_| TriggerError::NoSuchProcess { pid: proc.pid })?;
    if md.uid() != 0 && md.uid() != owner {
        return Err(insecure(format!(
            "it is owned by uid {}, neither root nor the target's owner (uid {owner})",
            md.uid()
        )));
    }
    if md.mode() & 0o022 != 0 {
        return Err(insecure(format!("it is writable by group or others (mode {:o})", md.mode() & 0o7777)));
    }
    let found = pulp_elf::build_id(Path::new(path))
        .map_err(|e| TriggerError::PatchMissing { path: path.clone(), reason: e.to_string() })?;
    if found != meta.patch_build_id {
        return Err(TriggerError::PatchBuildId {
            path: path.clone(),
            found: hex(&found),
            expected: hex(&meta.patch_build_id),
        });
    }
    Ok(())
}

fn read_reply(proc: &Process, info: &RuntimeInfo) -> Result<Vec<FuncReply>> {
    let count = u32::from_le_bytes(proc.read_array::<4>(info.buffer)?) as usize;
    let len = 4 + count.saturating_mul(abi::FUNC_REPLY_SIZE);
    let malformed = || TriggerError::Target { pid: proc.pid, what: "the runtime's reply is malformed".into() };
    if len as u64 > info.buffer_len {
        return Err(malformed());
    }
    abi::decode_reply(&proc.read(info.buffer, len)?).ok_or_else(malformed)
}

/// Bring each entry's code to what the runtime asked for; returns how many entries changed.
/// fentry functions need nothing: the runtime's `__fentry__` finds their descriptors.
/// No thread is stopped meanwhile, except briefly one for the membarrier after new pads.
fn write_code(proc: &Process, info: &RuntimeInfo, replies: &[FuncReply]) -> Result<usize> {
    let pid = proc.pid;
    let far_stub = |desc: u64| info.far_stubs + (desc - info.descs) / info.desc_size() * abi::FAR_STUB_SIZE;
    let layout = |r: &FuncReply| {
        Layout::choose(r.kind, r.entry, r.desc, r.original).ok_or_else(|| TriggerError::Target {
            pid,
            what: format!("function at {:#x} ({}) cannot be redirected from this distance", r.entry, r.kind),
        })
    };
    let nop_pads: Vec<&FuncReply> = replies.iter().filter(|r| !r.kind.is_fentry()).collect();
    let mut wrote_pad = false;
    for r in nop_pads.iter().filter(|r| r.action == EntryAction::Redirect) {
        let pad = layout(r)?
            .pad(r.entry, r.desc, far_stub(r.desc))
            .ok_or_else(|| TriggerError::Target { pid, what: format!("descriptor of {:#x} out of reach", r.entry) })?;
        // The pad is not reachable until the entry jumps to it, so these writes need no order.
        for (addr, bytes) in pad {
            if proc.read(addr, bytes.len())? != bytes {
                proc.write(addr, &bytes)?;
                wrote_pad = true;
            }
        }
    }
    if wrote_pad && !proc.under_seccomp() {
        // Every core drops stale instructions of the new pads before any entry jumps
        // there. Best effort: without membarrier SYNC_CORE (an old kernel, or a seccomp
        // filter that might kill the process for an unexpected system call), x86's
        // coherent instruction fetch still holds.
        let mut thread = Hijacked::attach(proc, *info)?;
        thread.call(proc, info.entry_sync_core, 0)?;
        thread.release()?;
    }
    let mut written = 0;
    for r in nop_pads {
        let l = layout(r)?;
        let to = match r.action {
            EntryAction::Redirect => l.jump(),
            EntryAction::Restore => r.original,
            EntryAction::Keep => continue,
        };
        let at = r.entry + l.jump_offset();
        let from = proc.read_array::<2>(at)?;
        // One byte at a time, every intermediate state a harmless instruction.
        let plan = prologue::write_plan(r.original, from, to).ok_or_else(|| TriggerError::Target {
            pid,
            what: format!("no safe way to rewrite {from:02x?} to {to:02x?} at {at:#x}"),
        })?;
        for (offset, byte) in &plan {
            proc.write(at + offset, &[*byte])?;
        }
        written += usize::from(!plan.is_empty());
    }
    Ok(written)
}
