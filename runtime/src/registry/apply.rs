//! Applying a patch: every check first, then the patch is loaded, its pre-patch callback
//! may refuse it, and only then its transition starts (not armed).

use super::{resolve, write_reply, Kind, Patch, Plan, Registry};
use crate::callbacks::Callback;
use crate::descriptors::Planned;
use crate::loader::{LoadError, PatchObject};
use crate::{messages, status};
use pulp_meta::abi::{EntryAction, EntryStatus, FuncReply};
use pulp_meta::format::{short_id, FLAG_IMMEDIATE, FLAG_REPLACE};
use pulp_meta::status::PatchState;
use pulp_meta::Prologue;

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
            let p = reg.descs.check_entry_displaced(
                obj,
                obj.base as u64 + f.offset,
                Some(f.prologue),
                f.displaced.as_ref(),
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
    // The original code of an unpadded function is the copy in its slot: give it its
    // descriptor (and slot) now, so that a reference to it gets that, not the entry.
    for (p, _) in planned.iter().filter(|(p, _)| p.kind == Prologue::Unpadded && p.known.is_none()) {
        reg.descs.desc_for(p)?;
    }
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
