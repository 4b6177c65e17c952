//! Applied patches, the descriptor of every redirected function, and the steps of
//! applying and reverting: immediately, or through a transition.
//!
//! A descriptor belongs to one function entry for the life of the process (a thread
//! preempted inside that function's pad must still land on the right code) and holds
//! the stack of versions applied to it. Word 0 points at the top version, or at the
//! original body (entry + 2) when there is none, and then the tool puts the entry's
//! original bytes back.
//!
//! A transition (the default) changes nothing for anyone at first: each involved
//! descriptor gets `prev` = what runs now and `new` = what will run, word 0 = its
//! dispatch stub, and the exported functions of the targets become gates. Threads move
//! one by one (gates, `pulp_quiescent`, the tool's sampling); `finish` then points word
//! 0 at the side the transition went to and removes the gates. The registry's version
//! stacks change only at `finish`, so a reversed transition leaves them as they were.

use crate::loader::{self, PatchObject};
use crate::status;
use crate::transition;
use pulp_meta::abi::{self, Descriptor, EntryAction, EntryStatus, FuncReply};
use pulp_meta::format::{hex, FLAG_IMMEDIATE};
use pulp_meta::status::{PatchState, PatchStatus, Status};
use pulp_meta::{prologue, PatchMeta, Prologue};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, TryLockError};

/// Runtime-side state of one descriptor.
struct DescState {
    entry: u64,
    kind: Prologue,
    /// Where the original code goes on: after the entry NOPs, or after the call to
    /// `__fentry__`.
    body: u64,
    /// The 2 NOP bytes before the first redirection (NOP-pad kinds).
    original: [u8; 2],
    /// Applied versions, oldest first: (patch id, address of the new function).
    versions: Vec<(String, u64)>,
}

impl DescState {
    /// What runs now when no transition is in progress.
    fn current(&self) -> u64 {
        self.versions.last().map(|v| v.1).unwrap_or(self.body)
    }
}

struct Patch {
    id: String,
    meta: PatchMeta,
    /// Kept so the object is never unloaded while its code may run.
    object: PatchObject,
    /// (descriptor, new function) per function of the patch.
    funcs: Vec<(usize, u64)>,
    state: PatchState,
    since: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Apply,
    Revert,
}

struct Transition {
    id: u64,
    patch: String,
    kind: Kind,
    /// Every descriptor involved: the patch's functions and the gates.
    descs: Vec<usize>,
    ranges: Vec<(u64, u64)>,
}

pub struct Registry {
    descs: Vec<DescState>,
    by_entry: BTreeMap<u64, usize>,
    patches: Vec<Patch>,
    transition: Option<Transition>,
    last_id: u64,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    descs: Vec::new(),
    by_entry: BTreeMap::new(),
    patches: Vec::new(),
    transition: None,
    last_id: 0,
});

// SAFETY: a dlopen handle is a process-wide token that may be used from any thread.
unsafe impl Send for PatchObject {}

/// The registry, or a refusal if another request is being served.
pub fn lock() -> Result<MutexGuard<'static, Registry>, String> {
    match REGISTRY.try_lock() {
        Ok(g) => Ok(g),
        // A panic in an earlier request was caught before it changed anything visible
        // (state is only mutated after all checks), so the data is still consistent.
        Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
        Err(TryLockError::WouldBlock) => Err("the runtime is busy with another request".into()),
    }
}

fn table(index: usize) -> &'static Descriptor {
    &pulp_trm::descriptors()[index]
}

fn desc_addr(index: usize) -> u64 {
    table(index) as *const Descriptor as u64
}

/// Read `N` bytes of loaded code.
///
/// # Safety
/// `[addr, addr + N)` must be mapped readable.
unsafe fn read_code<const N: usize>(addr: u64) -> [u8; N] {
    // SAFETY: the caller guarantees the range is mapped; volatile because another
    // party (the tool, through /proc/PID/mem) may change these bytes.
    unsafe { std::ptr::read_volatile(addr as *const [u8; N]) }
}

fn write_reply(funcs: &[FuncReply], buf: &mut [u8]) -> Result<(), String> {
    abi::encode_reply(funcs, buf).map(|_| ()).ok_or_else(|| "reply does not fit the runtime's buffer".to_string())
}

/// An entry point this request may redirect, checked.
struct Planned {
    entry: u64,
    kind: Prologue,
    known: Option<usize>,
}

/// Bytes of a redirected NOP pad's entry that count as ours: the short jumps of every
/// layout, and the `cmp $imm8, %al` a tool killed mid-write may have left.
fn ours(state: [u8; 2]) -> bool {
    matches!(state, [0xeb, 0xf8 | 0xf5 | 0xf4] | [0x3c, _])
}

/// Whether an fentry function's call goes to our `__fentry__`: directly, through its
/// GOT slot, or through a PLT entry of its object not yet bound (lazy binding), which
/// the dynamic linker will bind to ours since ours comes first in the lookup order.
fn calls_our_fentry(obj: &loader::Loaded, call: u64, len: u64) -> bool {
    let ours = pulp_trm::fentry() as u64;
    // SAFETY: dlsym with a static NUL-terminated name.
    let global = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__fentry__".as_ptr()) } as u64;
    if global != ours {
        return false;
    }
    // SAFETY: the caller checked the call instruction is mapped code.
    let disp = unsafe { read_code::<4>(call + len - 4) };
    let target = (call + len).wrapping_add(i32::from_le_bytes(disp) as i64 as u64);
    if len == 6 {
        // `call *slot(%rip)`: the GOT slot is in the object's data, mapped readable.
        if !obj.is_mapped(target, target + 8) {
            return false;
        }
        // SAFETY: checked mapped just above.
        let bound = u64::from_le_bytes(unsafe { read_code::<8>(target) });
        bound == ours || obj.is_code(bound, bound + 1)
    } else {
        target == ours || obj.is_code(target, target + 1)
    }
}

impl Registry {
    fn reply(&self, index: usize, action: EntryAction) -> FuncReply {
        let d = &self.descs[index];
        FuncReply { entry: d.entry, desc: desc_addr(index), action, original: d.original, kind: d.kind }
    }

    /// Check that `entry` of `obj` is code this release can redirect: untouched and of
    /// `kind` (when given), or already redirected by us.
    fn check_entry(
        &self,
        obj: &loader::Loaded,
        entry: u64,
        kind: Option<Prologue>,
        what: &str,
    ) -> Result<Planned, String> {
        if !obj.is_code(entry - prologue::PAD_BEFORE as u64, entry + 10) {
            return Err(format!("{what}: address {entry:#x} is not inside the object's code"));
        }
        let known = self.by_entry.get(&entry).copied();
        // SAFETY: is_code checked that [entry - 14, entry + 10) is mapped code.
        let (before, at) = unsafe { (read_code::<14>(entry - 14), read_code::<10>(entry)) };
        let found = match known {
            Some(d) => {
                let st = &self.descs[d];
                let intact = match st.kind.jump_offset() {
                    Some(off) => {
                        // SAFETY: within the range checked above.
                        let now = unsafe { read_code::<2>(entry + off) };
                        now == st.original || ours(now)
                    }
                    None => prologue::fentry_call(&at).is_some(),
                };
                intact.then_some(st.kind)
            }
            None => prologue::classify(&before, &at).filter(|k| match prologue::fentry_call(&at) {
                Some((off, len)) if k.is_fentry() => calls_our_fentry(obj, entry + off, len),
                _ => true,
            }),
        };
        match found {
            Some(k) if kind.is_none_or(|want| want == k || (want == Prologue::NopPad90 && k == Prologue::NopPad66)) => {
                Ok(Planned { entry, kind: kind.unwrap_or(k), known })
            }
            _ => {
                let want = kind.map(|k| k.to_string()).unwrap_or_else(|| "a patchable prologue".into());
                let bytes: Vec<String> = at[..6].iter().map(|b| format!("{b:02x}")).collect();
                let hint = if kind.is_some_and(Prologue::is_fentry) {
                    " (or its call does not reach libpulp_rs's __fentry__)"
                } else {
                    ""
                };
                Err(format!(
                    "{what} at {entry:#x}: prologue is not {want} as recorded{hint} (found {})",
                    bytes.join(" ")
                ))
            }
        }
    }

    /// The descriptor of `p`, allocating it on first use.
    fn desc_for(&mut self, p: &Planned) -> Result<usize, String> {
        if let Some(d) = p.known.or_else(|| self.by_entry.get(&p.entry).copied()) {
            return Ok(d);
        }
        let d = self.descs.len();
        let (body, original) = match p.kind.jump_offset() {
            // SAFETY: checked mapped; the entry is untouched, so these are the original bytes.
            Some(off) => (p.entry + off + 2, unsafe { read_code::<2>(p.entry + off) }),
            None => {
                // SAFETY: checked mapped by check_entry.
                let at = unsafe { read_code::<10>(p.entry) };
                let (off, len) = prologue::fentry_call(&at).ok_or("fentry call vanished")?;
                let body = p.entry + off + len;
                if !pulp_trm::fentry_insert(body, desc_addr(d)) {
                    return Err("the runtime's __fentry__ table is full".into());
                }
                (body, [0, 0])
            }
        };
        table(d).target.store(body, Ordering::Relaxed);
        table(d).entry.store(p.entry, Ordering::Relaxed);
        self.descs.push(DescState { entry: p.entry, kind: p.kind, body, original, versions: Vec::new() });
        self.by_entry.insert(p.entry, d);
        Ok(d)
    }

    fn ensure_room(&self, planned: &[&Planned]) -> Result<(), String> {
        let fresh = planned.iter().filter(|p| p.known.is_none()).count();
        let free = pulp_trm::DESC_COUNT - self.descs.len();
        if fresh > free {
            return Err(format!(
                "the runtime has room for {free} more redirected functions, the request needs {fresh}"
            ));
        }
        Ok(())
    }

    /// Publish the status for the tools.
    pub fn publish(&self) {
        let (transition, goal, ranges) = match &self.transition {
            Some(t) => (t.id, pulp_trm::goal().load(Ordering::Relaxed), t.ranges.clone()),
            None => (0, 0, Vec::new()),
        };
        let patches =
            self.patches.iter().map(|p| PatchStatus { state: p.state, since: p.since, meta: p.meta.clone() }).collect();
        status::publish(&Status { transition, goal, ranges, patches }.encode());
    }

    fn busy_error(&self, t: &Transition) -> String {
        let what = if t.kind == Kind::Apply { "applying" } else { "reverting" };
        format!(
            "a transition ({what} patch {}) is in progress: complete it with `pulp-trigger --continue`",
            &t.patch[..t.patch.len().min(12)]
        )
    }

    /// Start a transition over `descs`: `prev`/`new` per descriptor, gates flagged,
    /// word 0 to the dispatch stubs. Nothing visible changes for any thread yet.
    fn start(
        &mut self,
        patch: &str,
        kind: Kind,
        plan: &[(usize, u64, u64)],
        gates: &[usize],
        ranges: Vec<(u64, u64)>,
    ) -> Result<Vec<FuncReply>, String> {
        transition::prepare(&ranges)?;
        // This transition uses the view of its id's parity; the other view may still be
        // read by a thread preempted in the dispatcher during the previous transition.
        let id = self.last_id + 1;
        let mut all: Vec<usize> = Vec::new();
        for &(d, prev, new) in plan {
            let v = table(d).view(id);
            v.prev.store(prev, Ordering::Relaxed);
            v.new.store(new, Ordering::Relaxed);
            v.gate.store(0, Ordering::Relaxed);
            all.push(d);
        }
        for &g in gates {
            let v = table(g).view(id);
            if !all.contains(&g) {
                let cur = self.descs[g].current();
                v.prev.store(cur, Ordering::Relaxed);
                v.new.store(cur, Ordering::Relaxed);
                all.push(g);
            }
            v.gate.store(1, Ordering::Relaxed);
        }
        self.last_id = id;
        pulp_trm::goal().store(1, Ordering::Relaxed);
        pulp_trm::transition().store(id, Ordering::Release);
        for &d in &all {
            table(d).target.store(pulp_trm::desc_stub(d, id) as u64, Ordering::Release);
        }
        let replies = all.iter().map(|&d| self.reply(d, EntryAction::Redirect)).collect();
        self.transition = Some(Transition { id, patch: patch.to_string(), kind, descs: all, ranges });
        Ok(replies)
    }

    /// While a transition runs nothing else may start. For the patch's own transition
    /// (started by a tool that may have died before it rewrote every entry) the tool
    /// gets its entries to redirect again and takes it up.
    fn running_transition(&self, id: &str, buf: &mut [u8]) -> Result<Option<EntryStatus>, String> {
        let Some(t) = &self.transition else { return Ok(None) };
        if t.patch != id {
            return Err(self.busy_error(t));
        }
        let replies: Vec<_> = t.descs.iter().map(|&d| self.reply(d, EntryAction::Redirect)).collect();
        write_reply(&replies, buf)?;
        Ok(Some(EntryStatus::Transition))
    }

    fn patch_index(&self, id: &str) -> Option<usize> {
        self.patches.iter().position(|p| p.id == id)
    }

    /// Code ranges that count as inside: the targets' (as the tool computed them) and
    /// every patch object's.
    fn ranges(&self, targets: &[(u64, u64)], extra: Option<&PatchObject>) -> Vec<(u64, u64)> {
        let mut r: Vec<(u64, u64)> = targets.to_vec();
        for p in self.patches.iter().map(|p| &p.object).chain(extra) {
            if let Some(l) = loader::loaded_at(p.base) {
                r.extend(l.exec.iter().map(|&(s, e)| (s as u64, e as u64)));
            }
        }
        r
    }
}

/// A decoded request: meta, gates, inside ranges, and the targets as loaded.
type Resolved = (PatchMeta, Vec<u64>, Vec<(u64, u64)>, Vec<loader::Loaded>);

/// Decode a request and find its targets in the process.
fn resolve(request: &[u8]) -> Result<Resolved, String> {
    let req = abi::Request::decode(request).ok_or("malformed request")?;
    let (gates, inside) = (req.gates, req.inside);
    let meta = PatchMeta::decode(req.meta).map_err(|e| format!("corrupt request: {e}"))?;
    let mut objs = Vec::new();
    for t in &meta.targets {
        objs.push(loader::find(&t.build_id).ok_or_else(|| {
            format!("target {} (build-id {}) is not loaded in this process", t.path, hex(&t.build_id))
        })?);
    }
    Ok((meta, gates, inside, objs))
}

/// Check the gate entries: each inside one of the targets, with a NOP pad.
fn plan_gates(reg: &Registry, objs: &[loader::Loaded], gates: &[u64]) -> Result<Vec<Planned>, String> {
    gates
        .iter()
        .map(|&g| {
            let obj = objs
                .iter()
                .find(|o| o.is_code(g, g + 2))
                .ok_or_else(|| format!("gate at {g:#x} is not inside a target"))?;
            reg.check_entry(obj, g, None, "gate")
        })
        .collect()
}

/// Apply a patch, immediately or by starting a transition. Nothing changes unless
/// every check passes.
pub fn apply(reg: &mut Registry, request: &[u8], buf: &mut [u8]) -> Result<EntryStatus, String> {
    let (meta, gates, inside, objs) = resolve(request)?;
    let id = meta.id();
    if let Some(status) = reg.running_transition(&id, buf)? {
        return Ok(status);
    }
    if let Some(p) = reg.patches.iter().find(|p| p.id == id) {
        let replies: Vec<_> = p.funcs.iter().map(|&(d, _)| reg.reply(d, EntryAction::Redirect)).collect();
        write_reply(&replies, buf)?;
        return Ok(EntryStatus::NothingToDo);
    }

    // Check every entry before anything changes.
    let mut planned = Vec::new();
    for (t, obj) in meta.targets.iter().zip(&objs) {
        for f in &t.functions {
            let p = reg.check_entry(
                obj,
                obj.base as u64 + f.offset,
                Some(f.prologue),
                &format!("function `{}` of {}", f.old, t.path),
            )?;
            if planned.iter().any(|(q, _): &(Planned, _)| q.entry == p.entry) {
                return Err(format!("function `{}` of {} appears twice in the patch", f.old, t.path));
            }
            planned.push((p, f.new.as_str()));
        }
    }
    let immediate = meta.flags & FLAG_IMMEDIATE != 0;
    let gate_plan = if immediate { Vec::new() } else { plan_gates(reg, &objs, &gates)? };
    let mut all: Vec<&Planned> = planned.iter().map(|(p, _)| p).collect();
    all.extend(gate_plan.iter().filter(|g| !planned.iter().any(|(p, _)| p.entry == g.entry)));
    reg.ensure_room(&all)?;
    let object = PatchObject::open(&meta.patch_so, &meta.patch_build_id)?;
    let news: Result<Vec<u64>, String> = planned.iter().map(|(_, new)| object.symbol(new).map(|a| a as u64)).collect();
    let news = match news {
        Ok(n) => n,
        Err(e) => {
            object.discard();
            return Err(e);
        }
    };
    let body_of = |entry: u64| reg.by_entry.get(&entry).map(|&d| reg.descs[d].body);
    if let Err(e) = crate::references::write_references(&meta, &objs, &object, &body_of) {
        object.discard();
        return Err(e);
    }

    // Commit.
    let funcs: Vec<(usize, u64)> =
        match planned.iter().zip(&news).map(|((p, _), &new)| reg.desc_for(p).map(|d| (d, new))).collect() {
            Ok(f) => f,
            Err(e) => {
                object.discard();
                return Err(e);
            }
        };
    let (replies, status, state) = if immediate {
        for &(d, new) in &funcs {
            reg.descs[d].versions.push((id.clone(), new));
            // Release: a thread that jumps through word 0 sees a fully loaded patch object.
            table(d).target.store(new, Ordering::Release);
        }
        let replies = funcs.iter().map(|&(d, _)| reg.reply(d, EntryAction::Redirect)).collect();
        (replies, EntryStatus::Done, PatchState::Applied)
    } else {
        let gates: Vec<usize> = match gate_plan.iter().map(|g| reg.desc_for(g)).collect() {
            Ok(g) => g,
            Err(e) => {
                object.discard();
                return Err(e);
            }
        };
        let plan: Vec<(usize, u64, u64)> = funcs.iter().map(|&(d, new)| (d, reg.descs[d].current(), new)).collect();
        let ranges = reg.ranges(&inside, Some(&object));
        match reg.start(&id, Kind::Apply, &plan, &gates, ranges) {
            Ok(replies) => (replies, EntryStatus::Transition, PatchState::Applying),
            Err(e) => {
                object.discard();
                return Err(e);
            }
        }
    };
    reg.patches.push(Patch { id, meta, object, funcs, state, since: status::now() });
    write_reply(&replies, buf)?;
    Ok(status)
}

/// Revert a patch, immediately (a patch marked immediate) or through a transition.
pub fn revert(reg: &mut Registry, request: &[u8], buf: &mut [u8]) -> Result<EntryStatus, String> {
    let (meta, gates, inside, objs) = resolve(request)?;
    let id = meta.id();
    if let Some(status) = reg.running_transition(&id, buf)? {
        return Ok(status);
    }
    let Some(pos) = reg.patch_index(&id) else {
        write_reply(&[], buf)?;
        return Ok(EntryStatus::NothingToDo);
    };
    let funcs = reg.patches[pos].funcs.clone();
    if meta.flags & FLAG_IMMEDIATE != 0 {
        let patch = reg.patches.remove(pos);
        let replies = drop_versions(reg, &patch.id, &funcs);
        // `patch` is dropped here, but its object stays loaded (`PatchObject` has no
        // Drop): a thread may still be running one of its functions.
        write_reply(&replies, buf)?;
        return Ok(EntryStatus::Done);
    }
    let gate_plan = plan_gates(reg, &objs, &gates)?;
    reg.ensure_room(&gate_plan.iter().collect::<Vec<_>>())?;
    let gates: Vec<usize> = gate_plan.iter().map(|g| reg.desc_for(g)).collect::<Result<_, _>>()?;
    let plan: Vec<(usize, u64, u64)> = funcs
        .iter()
        .map(|&(d, _)| {
            let st = &reg.descs[d];
            let after = st.versions.iter().rev().find(|v| v.0 != id).map(|v| v.1).unwrap_or(st.entry + 2);
            (d, st.current(), after)
        })
        .collect();
    let ranges = reg.ranges(&inside, None);
    let replies = reg.start(&id, Kind::Revert, &plan, &gates, ranges)?;
    reg.patches[pos].state = PatchState::Reverting;
    reg.patches[pos].since = status::now();
    write_reply(&replies, buf)?;
    Ok(EntryStatus::Transition)
}

/// Remove patch `id`'s version from each descriptor; word 0 to what is left.
fn drop_versions(reg: &mut Registry, id: &str, funcs: &[(usize, u64)]) -> Vec<FuncReply> {
    funcs
        .iter()
        .map(|&(d, _)| {
            let st = &mut reg.descs[d];
            st.versions.retain(|(p, _)| p != id);
            let cur = st.current();
            table(d).target.store(cur, Ordering::Release);
            reg.reply(d, if reg.descs[d].versions.is_empty() { EntryAction::Restore } else { EntryAction::Keep })
        })
        .collect()
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
    let pos = reg.patch_index(&t.patch).ok_or("the patch of the transition is missing from the registry")?;
    match (t.kind, forward) {
        (Kind::Apply, true) | (Kind::Revert, false) => {
            if t.kind == Kind::Apply {
                for &(d, new) in &reg.patches[pos].funcs.clone() {
                    reg.descs[d].versions.push((t.patch.clone(), new));
                }
            }
            reg.patches[pos].state = PatchState::Applied;
            reg.patches[pos].since = status::now();
        }
        (Kind::Apply, false) | (Kind::Revert, true) => {
            let patch = reg.patches.remove(pos);
            for &(d, _) in &patch.funcs {
                reg.descs[d].versions.retain(|(p, _)| *p != patch.id);
            }
        }
    }
    let mut replies = Vec::with_capacity(t.descs.len());
    for &d in &t.descs {
        let cur = reg.descs[d].current();
        // A thread still inside the dispatcher (it read word 0 before this store, and may
        // resume much later) goes to `cur` whichever side it picks: no thread can run a
        // version the transition did not end on.
        let v = table(d).view(t.id);
        v.gate.store(0, Ordering::Relaxed);
        v.prev.store(cur, Ordering::Relaxed);
        v.new.store(cur, Ordering::Release);
        table(d).target.store(cur, Ordering::Release);
        let action = if reg.descs[d].versions.is_empty() { EntryAction::Restore } else { EntryAction::Keep };
        replies.push(reg.reply(d, action));
    }
    pulp_trm::transition().store(0, Ordering::Release);
    pulp_trm::goal().store(0, Ordering::Relaxed);
    write_reply(&replies, buf)?;
    Ok(EntryStatus::Done)
}

/// Turn the running transition around: threads move back to where they were.
pub fn reverse(reg: &mut Registry, buf: &mut [u8]) -> Result<EntryStatus, String> {
    let Some(t) = &reg.transition else {
        write_reply(&[], buf)?;
        return Ok(EntryStatus::NothingToDo);
    };
    let goal = pulp_trm::goal().load(Ordering::Acquire);
    pulp_trm::goal().store(1 - goal, Ordering::Release);
    let replies: Vec<_> = t.descs.iter().map(|&d| reg.reply(d, EntryAction::Keep)).collect();
    if let Some(pos) = reg.patch_index(&t.patch.clone()) {
        let back =
            if reg.patches[pos].state == PatchState::Applying { PatchState::Reverting } else { PatchState::Applying };
        reg.patches[pos].state = back;
        reg.patches[pos].since = status::now();
    }
    write_reply(&replies, buf)?;
    Ok(EntryStatus::Transition)
}
