//! `pulp patches -p PID`: what a process has applied, read from the runtime's status
//! area and logs through `/proc/PID/mem`, without stopping any thread.

use crate::error::Result;
use crate::process::Process;
use crate::runtime::{runtime_code, runtime_info};
use crate::transition;
use pulp_meta::format::hex;
use pulp_meta::status::{PatchState, Status};
use serde_json::{json, Value};

/// Where each thread of the process stands in the running transition.
#[derive(Debug)]
pub struct ThreadState {
    pub tid: i32,
    pub name: String,
    /// `Some(true)`: moved; `Some(false)`: still holds the transition; `None`: not seen
    /// yet (neither a gate nor the trigger has met it), so it holds it too.
    pub moved: Option<bool>,
}

pub struct Report {
    pub pid: i32,
    pub status: Status,
    pub threads: Vec<ThreadState>,
}

pub fn read(pid: i32) -> Result<Report> {
    let proc = Process::open(pid)?;
    let objects = proc.objects()?;
    let info = runtime_info(&proc, &objects)?;
    let status = transition::read_status(&proc, &info)?;
    let mut threads = Vec::new();
    if let Some(run) = transition::running(&proc, &info, &runtime_code(&proc, &objects)?)? {
        let logged = transition::logged(&proc, &info)?;
        for tid in proc.threads()? {
            let name =
                std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).unwrap_or_default().trim().to_string();
            let moved = logged.iter().find(|(t, _)| *t == tid).map(|&(_, fs)| run.done(run.word(&proc, fs)));
            threads.push(ThreadState { tid, name, moved });
        }
    }
    Ok(Report { pid, status, threads })
}

fn labels(l: &[String]) -> String {
    if l.is_empty() {
        String::new()
    } else {
        format!(" [{}]", l.join(", "))
    }
}

fn ago(since: u64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("{} s ago (unix time {since})", now.saturating_sub(since))
}

pub fn to_text(r: &Report) -> String {
    let s = &r.status;
    let mut out = format!("PID {}: {} patch(es)\n", r.pid, s.patches.len());
    for p in &s.patches {
        let id = p.meta.id();
        out += &format!(
            "  {} {} since {}{}\n",
            &id[..id.len().min(12)],
            p.state.name(),
            ago(p.since),
            labels(&p.meta.labels)
        );
        out += &format!("    patch object {} (build-id {})\n", p.meta.patch_so, hex(&p.meta.patch_build_id));
        for t in &p.meta.targets {
            for f in &t.functions {
                out += &format!("    {}: {} -> {}\n", t.path, f.old, f.new);
            }
        }
    }
    if s.transition == 0 {
        out += "no transition in progress\n";
    } else {
        let moving = s.patches.iter().find(|p| p.state != PatchState::Applied);
        let what = moving
            .map(|p| format!("{} patch {}", p.state.name(), &p.meta.id()[..12.min(p.meta.id().len())]))
            .unwrap_or_default();
        let holders: Vec<&ThreadState> = r.threads.iter().filter(|t| t.moved != Some(true)).collect();
        out += &format!(
            "transition {} in progress ({what}{}): {} of {} threads still hold it\n",
            s.transition,
            if s.goal == 0 { ", reversed" } else { "" },
            holders.len(),
            r.threads.len()
        );
        for t in holders {
            let why = if t.moved.is_none() { "not seen yet" } else { "inside a target" };
            out += &format!("  thread {} ({}): {why}\n", t.tid, t.name);
        }
    }
    out
}

pub fn to_json(r: &Report) -> Value {
    let s = &r.status;
    json!({
        "pid": r.pid,
        "patches": s.patches.iter().map(|p| json!({
            "id": p.meta.id(),
            "state": p.state.name(),
            "since": p.since,
            "labels": p.meta.labels,
            "patch_so": p.meta.patch_so,
            "targets": p.meta.targets.iter().map(|t| json!({
                "path": t.path,
                "build_id": hex(&t.build_id),
                "functions": t.functions.iter().map(|f| json!({"old": f.old, "new": f.new})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "transition": if s.transition == 0 { Value::Null } else { json!({
            "id": s.transition,
            "reversed": s.goal == 0,
            "threads": r.threads.iter().map(|t| json!({
                "tid": t.tid,
                "name": t.name,
                "state": match t.moved { Some(true) => "moved", Some(false) => "inside", None => "not seen" },
            })).collect::<Vec<_>>(),
        })},
    })
}
