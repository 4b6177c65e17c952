//! `pulp set-patchable (-p PID | --all | --name GLOB | --user USER) on|off`: let processes
//! accept live patches, or make them refuse every request (saying why) until set back, as
//! libpulp's `set_patchable`.

use crate::apply::call;
use crate::error::Result;
use crate::fleet::select::{self, Candidate, Filter, Fit, Wanted};
use crate::inject::hijack::Hijacked;
use crate::inject::process::Process;
use crate::inject::runtime::runtime_info;
use pulp_meta::abi::{Op, Request};
use std::time::Duration;

/// Switch whether `pid` (started at `started`, when known: see `Process::open_as`) accepts
/// live patches. Returns whether it changed anything.
pub fn set_patchable(pid: i32, started: Option<u64>, on: bool) -> Result<bool> {
    let proc = Process::open_as(pid, started)?;
    proc.lock()?;
    let objects = proc.objects()?;
    let info = runtime_info(&proc, &objects)?;
    let status = crate::apply::transition::read_status(&proc, &info)?;
    if status.refusing.is_empty() == on {
        return Ok(false);
    }
    let mut thread = Hijacked::attach(&proc, info, Duration::from_secs(5))?;
    call(&proc, &mut thread, &info, &Request { arg: on as u64, ..Request::new(Op::SetPatchable) }.encode())?;
    thread.release()?;
    Ok(true)
}

/// The processes to set: those given with `-p` that pass `filter`, in the order given and
/// each once; without `-p`, every process of the machine that passes it and has the
/// runtime loaded.
pub fn choose(pids: &[i32], filter: &Filter) -> Vec<Candidate> {
    if pids.is_empty() {
        return select::processes(filter)
            .into_iter()
            .filter(|c| select::fit(c.pid, &Wanted::Runtime) == Fit::Selected)
            .collect();
    }
    select::given(pids, filter)
}
