//! Reverting: one patch, or every patch of a target in one transition (newest first).

use super::{write_reply, Kind, Plan, Registry};
use crate::callbacks::Callback;
use crate::{loader, messages, status};
use pulp_meta::abi::{EntryStatus, Request};
use pulp_meta::format::FLAG_IMMEDIATE;
use pulp_meta::status::PatchState;
use pulp_meta::PatchMeta;

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
pub fn revert(reg: &mut Registry, req: &Request<'_>, buf: &mut [u8]) -> Result<EntryStatus, String> {
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
pub fn revert_all(reg: &mut Registry, req: &Request<'_>, buf: &mut [u8]) -> Result<EntryStatus, String> {
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
