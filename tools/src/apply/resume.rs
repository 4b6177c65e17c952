//! `pulp-trigger --continue`: taking up a transition an earlier run left running.

use super::code::{call, read_reply};
use super::complete::complete;
use super::{exited_after_live, settle_or_exit, Ended, Options};
use crate::apply::transition::{self};
use crate::error::Result;
use crate::inject::hijack::Hijacked;
use crate::inject::process::Process;
use crate::inject::runtime::{runtime_code, runtime_info};
use pulp_meta::abi::{Op, Request};
use pulp_meta::format::FLAG_IMMEDIATE;
use pulp_meta::status::PatchState;
use pulp_meta::PatchMeta;

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
        return complete(&proc, &info, &runtime_code(&proc)?, opts, false)
            .map(Some)
            .or_else(|e| exited_after_live(&proc, e, "while the transition was being completed", true));
    }
    // A tool died before it armed the transition: some entries may be half-written.
    let mut thread = Hijacked::attach(&proc, info, opts.call_limit())?;
    let st = call(&proc, &mut thread, &info, &Request::new(Op::Resume).encode())?;
    let replies = read_reply(&proc, &info)?;
    settle_or_exit(&proc, &info, thread, st, &replies, immediate, opts, "while the transition was being completed")
}
