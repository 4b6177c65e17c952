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
//!
//! - this module: the registry itself (patches, the running transition, loaded objects),
//!   its claim, and the steps every change shares (start a transition, meet or turn it);
//! - [`apply`]: load a patch and start its transition;
//! - [`revert`]: revert one patch, or every patch of a target;
//! - [`finish`]: end a transition where its goal is.
//!
//! What a tool's request asks is decided above this, in `crate::request`.

mod apply;
mod finish;
mod revert;

pub use apply::{apply, Object};
pub use finish::finish;
pub use revert::{revert, revert_all};

use crate::callbacks::{self, Callback};
use crate::descriptors::{table, Descriptors, Planned};
use crate::loader::{self, PatchObject};
use crate::{messages, status, transition};
use pulp_meta::abi::{self, EntryAction, EntryStatus, FuncReply};
use pulp_meta::format::{hex, short_id};
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

impl Registry {
    /// Why every request but the transition's own steps is refused, if it is.
    pub fn refusal(&self) -> Option<&str> {
        (!self.refusing.is_empty()).then_some(self.refusing.as_str())
    }

    /// Whether the running transition is an immediate patch's.
    pub fn immediate_running(&self) -> bool {
        self.transition.as_ref().is_some_and(|t| t.immediate)
    }

    /// Turn the running transition around (`pulp-trigger --reverse`); the reply lists
    /// its entries, to keep as they are.
    pub fn reverse(&mut self, buf: &mut [u8]) -> Result<EntryStatus, String> {
        if self.transition.is_none() {
            write_reply(&[], buf)?;
            return Ok(EntryStatus::NothingToDo);
        }
        self.turn_around();
        let t = self.transition.as_ref().expect("checked above");
        let replies: Vec<_> = t.descs.iter().map(|&d| self.descs.reply(d, EntryAction::Keep)).collect();
        write_reply(&replies, buf)?;
        Ok(EntryStatus::Transition)
    }

    /// The running transition's entries, for a tool that takes it up (`--continue`).
    pub fn resume(&self, buf: &mut [u8]) -> Result<EntryStatus, String> {
        match &self.transition {
            Some(t) => {
                write_reply(&self.redirect_all(t), buf)?;
                Ok(EntryStatus::Transition)
            }
            None => {
                write_reply(&[], buf)?;
                Ok(EntryStatus::NothingToDo)
            }
        }
    }

    /// `pulp set-patchable on|off`.
    pub fn set_patchable(&mut self, on: bool, buf: &mut [u8]) -> Result<EntryStatus, String> {
        self.refusing = if on { String::new() } else { "excluded by `pulp set-patchable off`".into() };
        messages::log(if on { "patchable: on" } else { "patchable: off" });
        write_reply(&[], buf)?;
        Ok(EntryStatus::Done)
    }
}
