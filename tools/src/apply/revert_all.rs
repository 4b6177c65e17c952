//! `pulp-trigger --revert-all TARGET`: every patch of one target reverted in one transition.

use super::code::{call, read_reply};
use super::scope::{add_scope, transition_scope};
use super::{settle_or_exit, Options, Outcome};
use crate::apply::transition::{self};
use crate::error::{Result, TriggerError};
use crate::inject::hijack::Hijacked;
use crate::inject::process::Process;
use crate::inject::runtime::runtime_info;
use pulp_meta::abi::{EntryStatus, Op, Request};
use pulp_meta::format::FLAG_IMMEDIATE;
use pulp_meta::status::PatchState;
use pulp_meta::PatchMeta;
use std::time::Instant;

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
