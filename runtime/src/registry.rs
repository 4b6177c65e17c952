//! Applied patches and the steps that change them: apply, revert, revert every patch of a
//! target, finish or reverse a transition.
//!
//! Every change goes through a transition. Starting one changes nothing for any thread:
//! each involved descriptor gets `prev` = what runs now and `new` = what will run, word 0
//! = its dispatch stub, and (unless the patch is immediate) the exported functions of the
//! targets become gates; the transition is not *armed*, so no thread can move yet and the
//! dispatcher sends everyone to `prev`. The tool then redirects every entry, and only
//! then arms it: no thread can ever run the new version of one function and the old
//! version of another, whatever the order of the writes or where the tool is killed.
//! Threads then move one by one (gates, `pulp_quiescent`, the tool's sampling) and
//! `finish` points word 0 at the side the transition went to. An immediate patch is
//! finished by the tool as soon as its entries are written. The version stacks change
//! only at `finish`, so a reversed transition leaves them as they were.
//!
//! The registry is guarded by the entry-stack claim (`pulp_trm::entry_owner`): the
//! thread running a tool's request holds it; code of the process that needs the registry
//! otherwise claims it the same way.

use crate::callbacks::{self, Callback};
use crate::descriptors::{table, Descriptors, Planned};
use crate::loader::{self, LoadError, PatchObject};
use crate::{messages, status, transition};
use pulp_meta::abi::{self, EntryAction, EntryStatus, FuncReply, Request};
use pulp_meta::format::{hex, short_id, FLAG_IMMEDIATE, FLAG_REPLACE};
use pulp_meta::status::{PatchState, PatchStatus, Status};
use pulp_meta::PatchMeta;
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};

struct Patch {
    id: String,
    meta: PatchMeta,
    /// Kept so the object is never unloaded while its code may run.
    object: PatchObject,
    /// (descriptor, new function) per function of the patch.
    funcs: Vec<(usize, u64)>,
    state: PatchState,
    since: u64,
    /// The cumulative patch that replaced this one (state `Replaced`).
    replaced_by: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// `patches[0]` is being applied; `replaced` go away with it (a cumulative patch).
    Apply,
    /// `patches` are being reverted.
    Revert,
}

/// What a transition is to do, before it has an id.
struct Plan {
    kind: Kind,
    patches: Vec<String>,
    replaced: Vec<String>,
    immediate: bool,
    /// Per changing descriptor: what it runs once the transition is through.
    changes: Vec<(usize, u64)>,
    gates: Vec<usize>,
    ranges: Vec<(u64, u64)>,
}

struct Transition {
    id: u64,
    kind: Kind,
    patches: Vec<String>,
    replaced: Vec<String>,
    immediate: bool,
    /// Every descriptor involved: the functions that change and the gates.
    descs: Vec<usize>,
    ranges: Vec<(u64, u64)>,
}

pub struct Registry {
    descs: Descriptors,
    patches: Vec<Patch>,
    transition: Option<Transition>,
    last_id: u64,
    /// Why every request is refused (an operator's exclusion); empty: none.
    refusing: String,
    /// Every patch object loaded from a tool's bytes, by content hash: applying the same
    /// bytes again (after a revert) reuses the loaded object instead of mapping another
    /// copy and keeping another descriptor open on every apply/revert cycle.
    /// (content hash, build-id, object)
    objects: Vec<([u8; 32], Vec<u8>, PatchObject)>,
}

struct Cell(UnsafeCell<Registry>);

// SAFETY: the registry is only reached through `Claim`, which holds the entry-stack claim
// (one thread at a time) and the `BORROWED` flag (one reference at a time).
unsafe impl Sync for Cell {}

static REGISTRY: Cell = Cell(UnsafeCell::new(Registry {
    descs: Descriptors::new(),
    patches: Vec::new(),
    transition: None,
    last_id: 0,
    refusing: String::new(),
    objects: Vec::new(),
}));

static BORROWED: AtomicBool = AtomicBool::new(false);

fn gettid() -> u64 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as u64 }
}

/// Exclusive access to the registry.
pub struct Claim {
    /// Whether this claim took the entry-stack claim itself (and releases it on drop);
    /// the hijack stub takes it for a tool's request.
    took: bool,
}

impl Claim {
    /// The registry, for the thread that holds the entry-stack claim, or after taking it.
    pub fn get() -> Result<Self, String> {
        let me = gettid();
        let owner = pulp_trm::entry_owner();
        let took = match owner.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => true,
            Err(holder) if holder == me => false,
            Err(holder) => return Err(format!("the runtime is busy with another request (thread {holder})")),
        };
        if BORROWED.swap(true, Ordering::Acquire) {
            if took {
                owner.store(0, Ordering::Release);
            }
            return Err("the runtime's registry is already in use by this thread".into());
        }
        Ok(Self { took })
    }

    pub fn registry(&mut self) -> &mut Registry {
        // SAFETY: `Claim` exists only while this thread holds the entry-stack claim and
        // the BORROWED flag, so this is the only reference.
        unsafe { &mut *REGISTRY.0.get() }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        BORROWED.store(false, Ordering::Release);
        if self.took {
            pulp_trm::entry_owner().store(0, Ordering::Release);
        }
    }
}

fn write_reply(funcs: &[FuncReply], buf: &mut [u8]) -> Result<(), String> {
    abi::encode_reply(funcs, buf).map(|_| ()).ok_or_else(|| "reply does not fit the runtime's buffer".to_string())
}

/// A decoded meta and its targets as loaded.
fn resolve(meta_bytes: &[u8]) -> Result<(PatchMeta, Vec<loader::Loaded>), String> {
    let meta = PatchMeta::decode(meta_bytes).map_err(|e| format!("corrupt request: {e}"))?;
    let mut objs = Vec::new();
    for t in &meta.targets {
        objs.push(loader::find(&t.build_id).ok_or_else(|| {
            format!("target {} (build-id {}) is not loaded in this process", t.path, hex(&t.build_id))
        })?);
    }
    Ok((meta, objs))
}

impl Registry {
    /// Publish the status for the tools.
    pub fn publish(&self) {
        let (transition, goal, ranges) = match &self.transition {
            Some(t) => (t.id, pulp_trm::goal().load(Ordering::Relaxed), t.ranges.clone()),
            None => (0, 0, Vec::new()),
        };
        let patches =
            self.patches.iter().map(|p| PatchStatus { state: p.state, since: p.since, meta: p.meta.clone() }).collect();
        status::publish(&Status { refusing: self.refusing.clone(), transition, goal, ranges, patches }.encode());
        callbacks::set_states(self.states_except(None));
    }

    /// `(id, version)` of every state the applied patches but `except` declare.
    fn states_except(&self, except: Option<usize>) -> Vec<(u64, u32)> {
        self.patches
            .iter()
            .enumerate()
            .filter(|(i, p)| Some(*i) != except && matches!(p.state, PatchState::Applied | PatchState::Reverting))
            .flat_map(|(_, p)| p.meta.states.iter().map(|s| (s.id, s.version)))
            .collect()
    }

    fn index(&self, id: &str) -> Option<usize> {
        self.patches.iter().position(|p| p.id == id)
    }

    fn busy_error(&self, t: &Transition) -> String {
        let what = if t.kind == Kind::Apply { "applying" } else { "reverting" };
        let short: Vec<&str> = t.patches.iter().map(|p| short_id(p)).collect();
        format!(
            "a transition ({what} patch {}) is in progress: complete it with `pulp-trigger --continue`",
            short.join(", ")
        )
    }

    /// Replies telling the tool to (re)write every entry of the running transition.
    fn redirect_all(&self, t: &Transition) -> Vec<FuncReply> {
        t.descs.iter().map(|&d| self.descs.reply(d, EntryAction::Redirect)).collect()
    }

    /// Code ranges that count as inside: the targets' (as the tool computed them) and
    /// every patch object's.
    fn ranges(&self, targets: &[(u64, u64)]) -> Vec<(u64, u64)> {
        let mut r: Vec<(u64, u64)> = targets.to_vec();
        for p in self.patches.iter().map(|p| &p.object) {
            if let Some(l) = p.loaded() {
                r.extend(l.exec.iter().map(|&(s, e)| (s as u64, e as u64)));
            }
        }
        r
    }

    /// Check the gate entries: each inside one of the targets, with a NOP pad.
    fn plan_gates(&self, objs: &[loader::Loaded], gates: &[u64]) -> Result<Vec<Planned>, String> {
        gates
            .iter()
            .map(|&g| {
                let obj = objs
                    .iter()
                    .find(|o| o.is_code(g, g + 2))
                    .ok_or_else(|| format!("gate at {g:#x} is not inside a target"))?;
                self.descs.check_entry(obj, g, None, "gate")
            })
            .collect()
    }

    /// Start a transition: per changing descriptor `(d, new)`, `prev` = what runs now;
    /// gates flagged; word 0 to the dispatch stubs; not armed. Nothing visible changes for
    /// any thread.
    fn start(&mut self, plan: Plan) -> Result<Vec<FuncReply>, String> {
        let Plan { kind, patches, replaced, immediate, changes, gates, ranges } = plan;
        transition::prepare(&ranges, immediate)?;
        // This transition uses the view of its id's parity; the other view may still be
        // read by a thread preempted in the dispatcher during the previous transition.
        let id = self.last_id + 1;
        let mut all: Vec<usize> = Vec::new();
        for &(d, new) in &changes {
            let v = table(d).view(id);
            v.prev.store(self.descs.states[d].current(), Ordering::Relaxed);
            v.new.store(new, Ordering::Relaxed);
            v.gate.store(0, Ordering::Relaxed);
            all.push(d);
        }
        for &g in &gates {
            let v = table(g).view(id);
            if !all.contains(&g) {
                let cur = self.descs.states[g].current();
                v.prev.store(cur, Ordering::Relaxed);
                v.new.store(cur, Ordering::Relaxed);
                all.push(g);
            }
            v.gate.store(1, Ordering::Relaxed);
        }
        self.last_id = id;
        pulp_trm::armed().store(0, Ordering::Relaxed);
        pulp_trm::goal().store(1, Ordering::Relaxed);
        pulp_trm::transition().store(id, Ordering::Release);
        for &d in &all {
            table(d).target.store(pulp_trm::desc_stub(d, id) as u64, Ordering::Release);
        }
        let t = Transition { id, kind, patches, replaced, immediate, descs: all, ranges };
        let replies = self.redirect_all(&t);
        self.transition = Some(t);
        Ok(replies)
    }

    /// The running transition, when a request of `ids` meets it: for the same patches in
    /// the same direction, the tool gets every entry to write again (a tool killed
    /// earlier may have left some half-written) and takes it up; in the other direction
    /// it is turned around first. Any other request must wait for it.
    fn meet_transition(&mut self, ids: &[String], kind: Kind, buf: &mut [u8]) -> Result<Option<EntryStatus>, String> {
        let Some(t) = &self.transition else { return Ok(None) };
        if t.patches != ids {
            return Err(self.busy_error(t));
        }
        let forward = pulp_trm::goal().load(Ordering::Acquire) == 1;
        if (t.kind == kind) != forward {
            self.turn_around();
        }
        let t = self.transition.as_ref().expect("checked above");
        write_reply(&self.redirect_all(t), buf)?;
        Ok(Some(EntryStatus::Transition))
    }

    fn turn_around(&mut self) {
        let goal = pulp_trm::goal().load(Ordering::Acquire);
        pulp_trm::goal().store(1 - goal, Ordering::Release);
        let Some(t) = &self.transition else { return };
        let (ids, kind) = (t.patches.clone(), t.kind);
        let forward = goal == 0;
        for id in &ids {
            if let Some(i) = self.index(id) {
                self.patches[i].state = match (kind, forward) {
                    (Kind::Apply, true) | (Kind::Revert, false) => PatchState::Applying,
                    _ => PatchState::Reverting,
                };
                self.patches[i].since = status::now();
            }
        }
        messages::log(&format!("transition {} turned around", t.id));
    }

    /// A patch whose `%state`s are older than those already applied is refused.
    fn check_states(&self, meta: &PatchMeta) -> Result<(), String> {
        for s in &meta.states {
            for p in self.patches.iter().filter(|p| p.state != PatchState::Replaced) {
                if let Some(have) = p.meta.states.iter().find(|o| o.id == s.id) {
                    if have.version > s.version {
                        return Err(format!(
                            "the patch declares state {} version {}, lower than version {} of applied patch {}",
                            s.id,
                            s.version,
                            have.version,
                            p.meta.short_id()
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Applied patches a cumulative patch with targets `build_ids` replaces.
    fn replaced_by(&self, meta: &PatchMeta) -> Vec<String> {
        self.patches
            .iter()
            .filter(|p| p.state == PatchState::Applied)
            .filter(|p| p.meta.targets.iter().any(|t| meta.targets.iter().any(|n| n.build_id == t.build_id)))
            .map(|p| p.id.clone())
            .collect()
    }

    /// Add to `plan` every descriptor of the patches `ids` it does not hold yet, with what
    /// it runs once their versions are gone.
    fn plan_removal(&self, ids: &[String], plan: &mut Vec<(usize, u64)>) {
        for id in ids {
            let i = self.index(id).expect("the patches of a plan are in the list");
            for &(d, _) in &self.patches[i].funcs {
                if !plan.iter().any(|(q, _)| *q == d) {
                    plan.push((d, self.descs.states[d].after(ids)));
                }
            }
        }
    }

    /// Take the versions of patch `id` off the descriptors of its functions (the only
    /// ones it pushed versions on).
    fn drop_versions(&mut self, id: &str) {
        let Some(i) = self.index(id) else { return };
        for &(d, _) in &self.patches[i].funcs {
            self.descs.states[d].versions.retain(|(p, _)| p != id);
        }
    }

    fn run_callback(&mut self, id: &str, cb: Callback) -> Result<(), String> {
        let Some(i) = self.index(id) else { return Ok(()) };
        let result = callbacks::run(&self.patches[i].object, cb, self.states_except(Some(i)));
        callbacks::set_states(self.states_except(None));
        if let Err(e) = &result {
            messages::log(&format!("patch {}: {e}", short_id(id)));
        }
        result
    }
}

/// Serve a request (see `pulp_meta::abi::Op`).
pub fn serve(reg: &mut Registry, req: &Request<'_>, buf: &mut [u8]) -> Result<EntryStatus, String> {
    use abi::Op;
    if !reg.refusing.is_empty()
        && !matches!(req.op, Op::SetPatchable | Op::Finish | Op::Reverse | Op::SyncCore | Op::Resume)
    {
        return Err(format!("this process refuses live patches: {}", reg.refusing));
    }
    let status = match req.op {
        Op::Apply => apply(reg, req.meta, &req.gates, &req.inside, Object::Bytes(req.object), buf),
        Op::Revert => revert(reg, req, buf),
        Op::RevertAll => revert_all(reg, req, buf),
        Op::Finish => finish(reg, req.arg != 0, buf),
        Op::Reverse => {
            if reg.transition.is_none() {
                write_reply(&[], buf)?;
                return Ok(EntryStatus::NothingToDo);
            }
            reg.turn_around();
            let t = reg.transition.as_ref().expect("checked above");
            let replies: Vec<_> = t.descs.iter().map(|&d| reg.descs.reply(d, EntryAction::Keep)).collect();
            write_reply(&replies, buf)?;
            Ok(EntryStatus::Transition)
        }
        Op::SyncCore => Ok(crate::entry::sync_core()),
        Op::Resume => match &reg.transition {
            Some(t) => {
                write_reply(&reg.redirect_all(t), buf)?;
                Ok(EntryStatus::Transition)
            }
            None => {
                write_reply(&[], buf)?;
                Ok(EntryStatus::NothingToDo)
            }
        },
        Op::SetPatchable => {
            reg.refusing = if req.arg != 0 { String::new() } else { "excluded by `pulp set-patchable off`".into() };
            messages::log(if req.arg != 0 { "patchable: on" } else { "patchable: off" });
            write_reply(&[], buf)?;
            Ok(EntryStatus::Done)
        }
    }?;
    if matches!(req.op, Op::Apply | Op::Revert | Op::RevertAll | Op::Resume | Op::Finish) {
        return Ok(write_own_code(reg, status, buf));
    }
    Ok(status)
}

/// Where the process may write its own code (`local::CodeWriter`), write what the reply
/// in `buf` asks for right here, in the entry: the tool then finds nothing left to write
/// (and needs no second call for the barrier). A transition whose entries are all
/// written is armed at once; an immediate one is finished at once (`Done`). Where the
/// process cannot, or a write fails, the tool writes the code as before: the status is
/// left as it was.
fn write_own_code(reg: &mut Registry, status: EntryStatus, buf: &mut [u8]) -> EntryStatus {
    if status == EntryStatus::Refused || status == EntryStatus::Busy {
        return status;
    }
    let Some(writer) = crate::local::CodeWriter::open() else { return status };
    if let Err(e) = writer.write_reply(buf) {
        messages::log(&format!("writing code from inside the process failed, the tool writes it: {e}"));
        return status;
    }
    if status != EntryStatus::Transition {
        return status;
    }
    if reg.transition.as_ref().is_some_and(|t| t.immediate) {
        if finish(reg, true, buf).is_err() || writer.write_reply(buf).is_err() {
            return status;
        }
        return EntryStatus::Done;
    }
    // Every entry is redirected: threads may move from now on.
    pulp_trm::armed().store(1, Ordering::Release);
    status
}

impl Registry {
    /// The patch object loaded before with this content hash and build-id, if any.
    pub fn loaded_object(&self, sha256: &[u8; 32], build_id: &[u8]) -> Option<PatchObject> {
        self.objects.iter().find(|(h, b, _)| h == sha256 && b == build_id).map(|(_, _, o)| o.clone())
    }
}

/// Set why every request is refused (the operator's exclusion read at load time).
pub fn set_refusing(reg: &mut Registry, why: String) {
    reg.refusing = why;
}

/// Where the patch object of an apply comes from.
pub enum Object<'a> {
    /// Its checked bytes, to load now.
    Bytes(&'a [u8]),
    /// Already loaded, with the content hash its `.meta` records (`Registry::loaded_object`).
    Loaded(PatchObject),
}

/// Load a patch and start its transition. Nothing changes unless every check passes.
pub fn apply(
    reg: &mut Registry,
    meta_bytes: &[u8],
    gates: &[u64],
    inside: &[(u64, u64)],
    object: Object<'_>,
    buf: &mut [u8],
) -> Result<EntryStatus, String> {
    let (meta, objs) = resolve(meta_bytes)?;
    let id = meta.id();
    if let Some(status) = reg.meet_transition(std::slice::from_ref(&id), Kind::Apply, buf)? {
        return Ok(status);
    }
    if let Some(p) = reg.patches.iter().find(|p| p.id == id) {
        if p.state == PatchState::Replaced {
            let by = p.replaced_by.as_deref().map(short_id).unwrap_or("?");
            return Err(format!(
                "patch {} was replaced by the cumulative patch {by}; revert that one first (the patches it replaced \
                 are then gone and can be applied again)",
                short_id(&id)
            ));
        }
        let replies: Vec<_> = p.funcs.iter().map(|&(d, _)| reg.descs.reply(d, EntryAction::Redirect)).collect();
        write_reply(&replies, buf)?;
        return Ok(EntryStatus::NothingToDo);
    }
    reg.check_states(&meta)?;

    // Check every entry before anything changes.
    let mut planned: Vec<(Planned, &str)> = Vec::new();
    for (t, obj) in meta.targets.iter().zip(&objs) {
        for f in &t.functions {
            let p = reg.descs.check_entry(
                obj,
                obj.base as u64 + f.offset,
                Some(f.prologue),
                &format!("function `{}` of {}", f.old, t.path),
            )?;
            if planned.iter().any(|(q, _)| q.entry == p.entry) {
                return Err(format!("function `{}` of {} appears twice in the patch", f.old, t.path));
            }
            planned.push((p, f.new.as_str()));
        }
    }
    let immediate = meta.flags & FLAG_IMMEDIATE != 0;
    let gate_plan = if immediate { Vec::new() } else { reg.plan_gates(&objs, gates)? };
    let mut all: Vec<&Planned> = planned.iter().map(|(p, _)| p).collect();
    all.extend(gate_plan.iter().filter(|g| !planned.iter().any(|(p, _)| p.entry == g.entry)));
    reg.descs.ensure_room(&all)?;

    // The tool checked that the bytes hash to `patch_sha256`: same hash, same object.
    let cached = reg.loaded_object(&meta.patch_sha256, &meta.patch_build_id);
    let object = match (object, cached) {
        (Object::Loaded(o), Some(_)) => o,
        // The patch directory checked the hash too: a later apply by a tool reuses it.
        (Object::Loaded(o), None) => {
            reg.objects.push((meta.patch_sha256, meta.patch_build_id.clone(), o.clone()));
            o
        }
        (Object::Bytes(_), Some(o)) => o,
        (Object::Bytes(bytes), None) => {
            let name = meta.patch_so.rsplit('/').next().unwrap_or("patch").to_string();
            let loaded = PatchObject::load(&name, bytes, &meta.patch_build_id).map_err(|e| {
                let abandoned = matches!(e, LoadError::Abandoned(_));
                let msg = String::from(e);
                messages::log(&format!("patch {}: {msg}", short_id(&id)));
                if abandoned {
                    format!("{msg}; the process runs on unpatched and later requests are served")
                } else {
                    msg
                }
            })?;
            reg.objects.push((meta.patch_sha256, meta.patch_build_id.clone(), loaded.clone()));
            loaded
        }
    };
    let news: Vec<u64> =
        planned.iter().map(|(_, new)| object.symbol(new).map(|a| a as u64)).collect::<Result<_, _>>()?;
    crate::references::write_references(&meta, &objs, &object, &|obj, entry| reg.descs.original_code(obj, entry))?;

    // The patch is loaded and can be called: its pre-patch callback may still refuse it.
    let funcs_planned: Vec<Planned> = planned.into_iter().map(|(p, _)| p).collect();
    reg.patches.push(Patch {
        id: id.clone(),
        meta,
        object,
        funcs: Vec::new(),
        state: PatchState::Applying,
        since: status::now(),
        replaced_by: None,
    });
    if let Err(e) = reg.run_callback(&id, Callback::PrePatch) {
        reg.patches.pop();
        return Err(e);
    }

    // Commit. A refusal from here on (no descriptor left, too many code ranges for a
    // transition) comes after the pre-patch callback: as for a rolled-back transition, the
    // post-unpatch callback undoes what it prepared, and the patch leaves the list.
    let replies = match start_apply(reg, &id, &funcs_planned, &news, &gate_plan, inside, immediate) {
        Ok(replies) => replies,
        Err(e) => {
            let _ = reg.run_callback(&id, Callback::PostUnpatch);
            reg.patches.pop();
            return Err(e);
        }
    };
    write_reply(&replies, buf)?;
    Ok(EntryStatus::Transition)
}

/// Start the transition of the patch `id`, the last of the list, whose functions
/// `planned` get the versions `news`.
fn start_apply(
    reg: &mut Registry,
    id: &str,
    planned: &[Planned],
    news: &[u64],
    gate_plan: &[Planned],
    inside: &[(u64, u64)],
    immediate: bool,
) -> Result<Vec<FuncReply>, String> {
    let funcs: Vec<(usize, u64)> =
        planned.iter().zip(news).map(|(p, &new)| reg.descs.desc_for(p).map(|d| (d, new))).collect::<Result<_, _>>()?;
    let gates: Vec<usize> = gate_plan.iter().map(|g| reg.descs.desc_for(g)).collect::<Result<_, _>>()?;
    let last = reg.patches.len() - 1;
    reg.patches[last].funcs = funcs.clone();
    let replaced = if reg.patches[last].meta.flags & FLAG_REPLACE != 0 {
        let meta = reg.patches[last].meta.clone();
        reg.replaced_by(&meta)
    } else {
        Vec::new()
    };
    // What each changing descriptor runs once the transition is through.
    let mut plan = funcs.clone();
    reg.plan_removal(&replaced, &mut plan);
    let ranges = reg.ranges(inside);
    let replies = reg.start(Plan {
        kind: Kind::Apply,
        patches: vec![id.to_string()],
        replaced,
        immediate,
        changes: plan,
        gates,
        ranges,
    })?;
    messages::log(&format!(
        "patch {}: loaded, {} function(s); transition {} started",
        short_id(id),
        funcs.len(),
        reg.last_id
    ));
    Ok(replies)
}

/// Start reverting patches `ids` (already checked to be applied).
fn start_revert(
    reg: &mut Registry,
    ids: Vec<String>,
    gates: &[u64],
    inside: &[(u64, u64)],
    buf: &mut [u8],
) -> Result<EntryStatus, String> {
    let mut targets: Vec<Vec<u8>> = Vec::new();
    let mut immediate = true;
    for id in &ids {
        let p = &reg.patches[reg.index(id).expect("checked")];
        immediate &= p.meta.flags & FLAG_IMMEDIATE != 0;
        targets.extend(p.meta.targets.iter().map(|t| t.build_id.clone()));
    }
    let objs: Vec<loader::Loaded> = targets.iter().filter_map(|b| loader::find(b)).collect();
    let gate_plan = if immediate { Vec::new() } else { reg.plan_gates(&objs, gates)? };
    reg.descs.ensure_room(&gate_plan.iter().collect::<Vec<_>>())?;
    for id in &ids {
        // Kernel rules: pre-unpatch runs before anything changes, and cannot refuse.
        let _ = reg.run_callback(id, Callback::PreUnpatch);
    }
    let gates: Vec<usize> = gate_plan.iter().map(|g| reg.descs.desc_for(g)).collect::<Result<_, _>>()?;
    let mut plan: Vec<(usize, u64)> = Vec::new();
    reg.plan_removal(&ids, &mut plan);
    let ranges = reg.ranges(inside);
    let replies = reg.start(Plan {
        kind: Kind::Revert,
        patches: ids.clone(),
        replaced: Vec::new(),
        immediate,
        changes: plan,
        gates,
        ranges,
    })?;
    for id in &ids {
        let i = reg.index(id).expect("checked");
        reg.patches[i].state = PatchState::Reverting;
        reg.patches[i].since = status::now();
    }
    messages::log(&format!("revert of {} patch(es): transition {} started", ids.len(), reg.last_id));
    write_reply(&replies, buf)?;
    Ok(EntryStatus::Transition)
}

/// Revert the request's patch.
fn revert(reg: &mut Registry, req: &Request<'_>, buf: &mut [u8]) -> Result<EntryStatus, String> {
    let meta = PatchMeta::decode(req.meta).map_err(|e| format!("corrupt request: {e}"))?;
    let id = meta.id();
    if let Some(status) = reg.meet_transition(std::slice::from_ref(&id), Kind::Revert, buf)? {
        return Ok(status);
    }
    match reg.index(&id).map(|i| reg.patches[i].state) {
        Some(PatchState::Applied) => start_revert(reg, vec![id], &req.gates, &req.inside, buf),
        _ => {
            write_reply(&[], buf)?;
            Ok(EntryStatus::NothingToDo)
        }
    }
}

/// Revert every applied patch of the target whose build-id the request names, in one
/// transition torn down newest first, as reverting them one by one from the top of the
/// stack would: every `pulp_pre_unpatch` from the newest patch down, then every
/// `pulp_post_unpatch` in the same order.
fn revert_all(reg: &mut Registry, req: &Request<'_>, buf: &mut [u8]) -> Result<EntryStatus, String> {
    let ids: Vec<String> = reg
        .patches
        .iter()
        .rev()
        .filter(|p| p.state == PatchState::Applied && p.meta.targets.iter().any(|t| t.build_id == req.target))
        .map(|p| p.id.clone())
        .collect();
    if let Some(t) = &reg.transition {
        // Its own revert, left running by an earlier tool: take it up.
        let of_target = |id: &String| {
            reg.index(id).is_some_and(|i| reg.patches[i].meta.targets.iter().any(|x| x.build_id == req.target))
        };
        if t.kind == Kind::Revert && t.patches.iter().all(of_target) {
            write_reply(&reg.redirect_all(t), buf)?;
            return Ok(EntryStatus::Transition);
        }
        return Err(reg.busy_error(t));
    }
    if ids.is_empty() {
        write_reply(&[], buf)?;
        return Ok(EntryStatus::NothingToDo);
    }
    start_revert(reg, ids, &req.gates, &req.inside, buf)
}

/// End the running transition where its goal is: every descriptor straight to its
/// version, gates removed. With `force`, threads still inside simply switch.
pub fn finish(reg: &mut Registry, force: bool, buf: &mut [u8]) -> Result<EntryStatus, String> {
    let Some(t) = reg.transition.take() else {
        write_reply(&[], buf)?;
        return Ok(EntryStatus::NothingToDo);
    };
    let _ = force; // Forcing needs nothing more here: the tool stops waiting, we finish.
    let forward = pulp_trm::goal().load(Ordering::Acquire) == 1;
    let now = status::now();
    // The callbacks to run once the code is in place, kernel rules.
    let mut after: Vec<(String, Callback)> = Vec::new();
    match (t.kind, forward) {
        (Kind::Apply, true) => {
            let i = reg.index(&t.patches[0]).ok_or("the patch of the transition is missing from the registry")?;
            for &(d, new) in &reg.patches[i].funcs {
                reg.descs.states[d].versions.push((t.patches[0].clone(), new));
            }
            for r in &t.replaced {
                reg.drop_versions(r);
                if let Some(j) = reg.index(r) {
                    reg.patches[j].state = PatchState::Replaced;
                    reg.patches[j].replaced_by = Some(t.patches[0].clone());
                    reg.patches[j].since = now;
                }
            }
            reg.patches[i].state = PatchState::Applied;
            reg.patches[i].since = now;
            after.push((t.patches[0].clone(), Callback::PostPatch));
        }
        (Kind::Revert, false) => {
            for id in &t.patches {
                if let Some(i) = reg.index(id) {
                    reg.patches[i].state = PatchState::Applied;
                    reg.patches[i].since = now;
                    after.push((id.clone(), Callback::PostPatch));
                }
            }
        }
        (Kind::Apply, false) | (Kind::Revert, true) => {
            for id in &t.patches {
                reg.drop_versions(id);
                after.push((id.clone(), Callback::PostUnpatch));
            }
        }
    }
    let mut replies = Vec::with_capacity(t.descs.len());
    for &d in &t.descs {
        let cur = reg.descs.states[d].current();
        // A thread still inside the dispatcher (it read word 0 before this store, and may
        // resume much later) goes to `cur` whichever side it picks: no thread can run a
        // version the transition did not end on.
        let v = table(d).view(t.id);
        v.gate.store(0, Ordering::Relaxed);
        v.prev.store(cur, Ordering::Relaxed);
        v.new.store(cur, Ordering::Release);
        table(d).target.store(cur, Ordering::Release);
        let action = if reg.descs.states[d].versions.is_empty() { EntryAction::Restore } else { EntryAction::Keep };
        replies.push(reg.descs.reply(d, action));
    }
    pulp_trm::armed().store(0, Ordering::Relaxed);
    pulp_trm::transition().store(0, Ordering::Release);
    pulp_trm::goal().store(0, Ordering::Relaxed);
    let verb = match (t.kind, forward) {
        (Kind::Apply, true) => "applied",
        (Kind::Revert, true) => "reverted",
        _ => "rolled back",
    };
    messages::log(&format!(
        "transition {} finished{}{}: {} patch(es) {verb}",
        t.id,
        if force { " (forced)" } else { "" },
        if t.immediate { " (immediate)" } else { "" },
        t.patches.len()
    ));
    for (id, cb) in &after {
        // Too late to refuse anything: a failure is in the runtime's log.
        let _ = reg.run_callback(id, *cb);
    }
    // A patch whose last transition left it unapplied leaves the list (its object stays
    // loaded: a thread may still be running one of its functions), and so do the patches
    // a reverted cumulative patch had replaced, as in the kernel: reverting it gives the
    // original code back, not the replaced patches, which can be applied again.
    if matches!((t.kind, forward), (Kind::Apply, false) | (Kind::Revert, true)) {
        let mut gone: Vec<String> = t.patches.clone();
        let mut replaced = Vec::new();
        while let Some(p) = reg
            .patches
            .iter()
            .find(|p| !gone.contains(&p.id) && p.replaced_by.as_ref().is_some_and(|by| gone.contains(by)))
        {
            replaced.push(p.id.clone());
            gone.push(p.id.clone());
        }
        reg.patches.retain(|p| !gone.contains(&p.id));
        if !replaced.is_empty() {
            let ids: Vec<&str> = replaced.iter().map(|id| short_id(id)).collect();
            messages::log(&format!(
                "the patch(es) the reverted cumulative patch had replaced are gone: {} (apply them again if wanted)",
                ids.join(", ")
            ));
        }
    }
    write_reply(&replies, buf)?;
    Ok(EntryStatus::Done)
}
