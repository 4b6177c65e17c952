//! `pulp patches -p PID` / `--all`: what processes have applied, read from the runtime's
//! status area and logs through `/proc/PID/mem`, without stopping any thread; and
//! `pulp check -p PID FILE.meta`: whether one patch is applied, as an exit status.

use crate::apply::transition;
use crate::error::{Result, TriggerError};
use crate::fleet::select;
use crate::inject::process::{MappedObject, Process};
use crate::inject::runtime::{runtime_code, runtime_info};
use crate::text::{count, printable};
use pulp_meta::format::{hex, short_id};
use pulp_meta::status::{PatchState, Status};
use pulp_meta::PatchMeta;
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
    /// The command name.
    pub name: String,
    pub status: Status,
    /// The objects the process maps (with build-ids read from memory): where it maps
    /// each target, whatever path the `.meta` recorded.
    pub objects: Vec<MappedObject>,
    pub threads: Vec<ThreadState>,
}

impl Report {
    /// The path under which the process maps the build `build_id`.
    fn mapped(&self, build_id: &[u8]) -> Option<&str> {
        self.objects.iter().find(|o| o.build_id == build_id).map(|o| o.path.as_str())
    }
}

pub fn read(pid: i32) -> Result<Report> {
    let proc = Process::open(pid)?;
    let objects = proc.objects()?;
    let info = runtime_info(&proc, &objects)?;
    let status = transition::read_status(&proc, &info)?;
    let mut threads = Vec::new();
    if let Some(run) = transition::running(&proc, &info, &runtime_code(&proc)?)? {
        let logged = transition::logged(&proc, &info)?;
        for tid in proc.threads()? {
            let name = crate::inject::process::read_proc_file(format!("/proc/{pid}/task/{tid}/comm"))
                .unwrap_or_default()
                .trim()
                .to_string();
            let moved = logged.iter().find(|(t, _)| *t == tid).map(|&(_, fs)| run.done(run.word(&proc, fs)));
            threads.push(ThreadState { tid, name, moved });
        }
    }
    Ok(Report { pid, name: select::command_name(pid), status, objects, threads })
}

/// Every live-patchable process of the machine (the runtime loaded), by PID: its report,
/// or why it could not be read. Processes that exit meanwhile are left out. Reads are
/// spread over `jobs` threads.
pub fn read_all(jobs: usize) -> Vec<(i32, Result<Report>)> {
    let candidates = select::processes(&select::Filter::default());
    let mut out = Vec::new();
    crate::fleet::pool(
        &candidates,
        jobs,
        |c| match select::fit(c.pid, &select::Wanted::Runtime) {
            select::Fit::Selected => Some((c.pid, read(c.pid))),
            _ => None,
        },
        |r| out.extend(r),
        |_| {},
    );
    out.retain(|(_, r)| !matches!(r, Err(TriggerError::NoSuchProcess { .. })));
    out.sort_by_key(|(pid, _)| *pid);
    out
}

fn labels(l: &[String]) -> String {
    if l.is_empty() {
        String::new()
    } else {
        let l: Vec<_> = l.iter().map(|l| printable(l)).collect();
        format!(" [{}]", l.join(", "))
    }
}

fn ago(since: u64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("{} s ago (unix time {since})", now.saturating_sub(since))
}

pub fn to_text(r: &Report) -> String {
    let s = &r.status;
    let mut out = format!("PID {} ({}): {}\n", r.pid, printable(&r.name), count(s.patches.len(), "patch", "patches"));
    if !s.refusing.is_empty() {
        out += &format!("  refuses live patches: {}\n", printable(&s.refusing));
    }
    for p in &s.patches {
        let id = p.meta.id();
        let level = if p.meta.level == 0 { String::new() } else { format!(" level {}", p.meta.level) };
        out += &format!(
            "  {}{level} {} since {}{}\n",
            short_id(&id),
            p.state.name(),
            ago(p.since),
            labels(&p.meta.labels)
        );
        for st in &p.meta.states {
            out += &format!("    state {} version {}\n", st.id, st.version);
        }
        out +=
            &format!("    patch object {} (build-id {})\n", printable(&p.meta.patch_so), hex(&p.meta.patch_build_id));
        for t in &p.meta.targets {
            let mapped = match r.mapped(&t.build_id) {
                Some(path) if path == t.path => "mapped there".to_string(),
                Some(path) => format!("mapped as {}", printable(path)),
                None => "not mapped".to_string(),
            };
            out += &format!("    target {} (build-id {}), {mapped}\n", printable(&t.path), hex(&t.build_id));
            for f in &t.functions {
                out += &format!("      {} -> {}\n", printable(&f.old), printable(&f.new));
            }
        }
    }
    if s.transition == 0 {
        out += "no transition in progress\n";
    } else {
        let moving = s.patches.iter().find(|p| p.state != PatchState::Applied);
        let what = moving.map(|p| format!("{} patch {}", p.state.name(), p.meta.short_id())).unwrap_or_default();
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
            out += &format!("  thread {} ({}): {why}\n", t.tid, printable(&t.name));
        }
    }
    out
}

pub fn to_json(r: &Report) -> Value {
    let s = &r.status;
    let p = |t: &str| printable(t).into_owned();
    json!({
        "pid": r.pid,
        "name": p(&r.name),
        "refusing": if s.refusing.is_empty() { Value::Null } else { json!(p(&s.refusing)) },
        "patches": s.patches.iter().map(|pa| json!({
            "id": pa.meta.id(),
            "state": pa.state.name(),
            "since": pa.since,
            "labels": pa.meta.labels.iter().map(|l| p(l)).collect::<Vec<_>>(),
            "level": pa.meta.level,
            "states": pa.meta.states.iter().map(|st| json!({"id": st.id, "version": st.version})).collect::<Vec<_>>(),
            "patch_so": p(&pa.meta.patch_so),
            "targets": pa.meta.targets.iter().map(|t| json!({
                "path": p(&t.path),
                "mapped": r.mapped(&t.build_id).map(p),
                "build_id": hex(&t.build_id),
                "functions": t.functions.iter().map(|f| json!({"old": p(&f.old), "new": p(&f.new)})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "transition": if s.transition == 0 { Value::Null } else { json!({
            "id": s.transition,
            "reversed": s.goal == 0,
            "threads": r.threads.iter().map(|t| json!({
                "tid": t.tid,
                "name": p(&t.name),
                "state": match t.moved { Some(true) => "moved", Some(false) => "inside", None => "not seen" },
            })).collect::<Vec<_>>(),
        })},
    })
}

/// What `pulp check` answers, and its exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Every thread runs the patch.
    Yes = 0,
    /// Not applied (never, or reverted), or the process cannot have it (no runtime).
    No = 1,
    /// A transition towards or away from it is running: some threads run it.
    Moving = 2,
    /// A cumulative patch applied later replaced it: none of its functions runs.
    Replaced = 3,
}

/// Exit status of `pulp check` when it cannot tell (no such process, not permitted, an
/// unreadable `.meta` or runtime).
pub const CHECK_UNKNOWN: u8 = 4;

/// The exit statuses of `pulp check`, for `--help` and the README.
pub const CHECK_STATUSES: &str = "Exit status: 0 applied (every thread runs it); 1 not applied \
    (never applied, reverted, or the process has not loaded the runtime); 2 being applied or \
    reverted (a transition is in progress); 3 replaced by a cumulative patch applied later; 4 \
    cannot tell (no such process, not permitted, unreadable patch.meta or runtime); 64 usage error.";

/// Whether `meta` is applied in process `pid`, and a line saying so.
pub fn check(pid: i32, meta: &PatchMeta) -> Result<(Applied, String)> {
    let what = crate::apply::report::describe(meta);
    let report = match read(pid) {
        Ok(r) => r,
        Err(TriggerError::RuntimeNotLoaded { .. }) => {
            return Ok((Applied::No, format!("{what} is not applied to PID {pid}: it has not loaded the runtime")))
        }
        Err(e) => return Err(e),
    };
    let id = meta.id();
    let Some(p) = report.status.patches.iter().find(|p| p.meta.id() == id) else {
        return Ok((Applied::No, format!("{what} is not applied to PID {pid}")));
    };
    let since = ago(p.since);
    Ok(match p.state {
        PatchState::Applied => (Applied::Yes, format!("{what} is applied to PID {pid} (since {since})")),
        PatchState::Applying => (
            Applied::Moving,
            format!("{what} is being applied to PID {pid}: transition {} in progress", report.status.transition),
        ),
        PatchState::Reverting => (
            Applied::Moving,
            format!("{what} is being reverted in PID {pid}: transition {} in progress", report.status.transition),
        ),
        PatchState::Replaced => {
            (Applied::Replaced, format!("{what} was replaced in PID {pid} by a cumulative patch (since {since})"))
        }
    })
}
