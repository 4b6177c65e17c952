//! `pulp set-patchable -p PID on|off`: let a process accept live patches, or make it
//! refuse every request (saying why) until set back, as libpulp's `set_patchable`.

use crate::apply::call;
use crate::error::Result;
use crate::hijack::Hijacked;
use crate::process::Process;
use crate::runtime::runtime_info;
use pulp_meta::abi::{Op, Request};
use std::time::Duration;

/// Switch whether `pid` accepts live patches. Returns whether it changed anything.
pub fn set_patchable(pid: i32, on: bool) -> Result<bool> {
    let proc = Process::open(pid)?;
    proc.lock()?;
    let objects = proc.objects()?;
    let info = runtime_info(&proc, &objects)?;
    let status = crate::transition::read_status(&proc, &info)?;
    if status.refusing.is_empty() == on {
        return Ok(false);
    }
    let mut thread = Hijacked::attach(&proc, info, Duration::from_secs(5))?;
    call(&proc, &mut thread, &info, &Request { arg: on as u64, ..Request::new(Op::SetPatchable) }.encode())?;
    thread.release()?;
    Ok(true)
}
