//! Ending a transition where its goal is: the version stacks change here, and only here.

use super::{write_reply, Kind, Registry};
use crate::callbacks::Callback;
use crate::descriptors::table;
use crate::{messages, status};
use pulp_meta::abi::{EntryAction, EntryStatus};
use pulp_meta::format::short_id;
use pulp_meta::status::PatchState;
use std::sync::atomic::Ordering;

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
