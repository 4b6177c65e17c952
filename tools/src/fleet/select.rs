//! Choosing the processes an operation works on (`pulp-trigger --all`, `--name`, `--user`;
//! `pulp patches --all`) from `/proc` alone: command names, owners, mappings, and build-ids
//! read from memory (`Process::objects`). No thread is stopped and nothing is written.

use crate::inject::process::{file_name, find_object, read_proc_file, MappedObject, Process};
use crate::inject::runtime::is_runtime;
use pulp_meta::PatchMeta;
use std::ffi::CString;

/// Which processes of the machine to consider.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// A shell pattern (`fnmatch`) matched against the command name (`/proc/PID/comm`,
    /// 15 characters at most) and against the file name of the executable.
    pub name: Option<String>,
    /// Effective user id.
    pub uid: Option<u32>,
}

/// How a command is told which processes to work on: `-p` (repeatable), or a search of the
/// machine narrowed by `--name` and `--user`. `pulp-trigger` and `pulp set-patchable` share it.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Selection {
    /// A process; repeat for several (worked on in the order given).
    #[arg(short, long = "pid", value_name = "PID", required_unless_present_any = ["all", "name", "user"])]
    pub pids: Vec<i32>,
    /// Every process of the machine that has the runtime loaded (pulp-trigger: of those, the
    /// ones that map the patch's targets with their recorded build-ids; with --revert-all:
    /// that map TARGET).
    #[arg(long, conflicts_with = "pids")]
    pub all: bool,
    /// Only processes whose name (or executable's file name) matches this shell pattern.
    /// Without -p, searches the machine as --all does.
    #[arg(long, value_name = "GLOB")]
    pub name: Option<String>,
    /// Only processes of this user (name or uid, compared with the effective uid).
    /// Without -p, searches the machine as --all does.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
}

impl Selection {
    /// The `--name`/`--user` filter (an unknown user is an error).
    pub fn filter(&self) -> Result<Filter, String> {
        let uid = self.user.as_deref().map(user_id).transpose()?;
        Ok(Filter { name: self.name.clone(), uid })
    }
}

/// A process seen in `/proc`.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub pid: i32,
    /// Its command name (`/proc/PID/comm`), for messages.
    pub name: String,
    /// When it started (`crate::inject::process::start_time`), read when it was selected: the
    /// PID may name another process by the time it is worked on.
    pub started: Option<u64>,
}

impl Candidate {
    /// Process `pid` as it is now.
    pub fn of(pid: i32) -> Self {
        Candidate { pid, name: command_name(pid), started: crate::inject::process::start_time(pid) }
    }
}

impl Filter {
    /// Whether process `pid` passes the filter.
    pub fn accepts(&self, pid: i32) -> bool {
        if let Some(uid) = self.uid {
            if effective_uid(pid) != Some(uid) {
                return false;
            }
        }
        match &self.name {
            None => true,
            Some(glob) => {
                let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
                let exe_name = exe.as_ref().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned());
                matches_glob(glob, &command_name(pid)) || exe_name.is_some_and(|n| matches_glob(glob, &n))
            }
        }
    }
}

/// The processes given with `-p` that pass `filter`, in the order given and each once.
pub fn given(pids: &[i32], filter: &Filter) -> Vec<Candidate> {
    let mut seen = std::collections::HashSet::new();
    pids.iter().copied().filter(|&pid| seen.insert(pid) && filter.accepts(pid)).map(Candidate::of).collect()
}

/// Every process of the machine (this PID namespace) that passes `filter`, by PID; this
/// tool itself and kernel threads (which map nothing) are left out.
pub fn processes(filter: &Filter) -> Vec<Candidate> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut pids: Vec<i32> =
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).filter(|&p| p != me).collect();
    pids.sort_unstable();
    pids.into_iter().filter(|&pid| !is_kernel_thread(pid) && filter.accepts(pid)).map(Candidate::of).collect()
}

/// What a process must map to be selected.
pub enum Wanted<'a> {
    /// Every target of the patch with its recorded build-id (apply, revert).
    Patch(&'a PatchMeta),
    /// One object, named as [`find_object`] reads it (`--revert-all TARGET`).
    Object(&'a str),
    /// Nothing but the runtime (`--continue`, `pulp patches --all`).
    Runtime,
}

/// Where a process stands with respect to what an operation wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fit {
    /// It maps what is wanted and has the runtime loaded.
    Selected,
    /// It maps what is wanted but not the runtime: not live-patchable.
    NoRuntime,
    /// It maps an object at a target's path, or with its file name, but with another
    /// build-id (another build of the target).
    OtherBuild { path: String, build_id: Vec<u8> },
    /// It maps some targets of the patch (with their recorded build-ids) but not this one.
    SomeTargets { missing: String },
    /// It maps nothing the operation is about.
    Unrelated,
    /// Its mappings cannot be read (another user's process).
    NotPermitted,
    /// It exited before it could be examined.
    Gone,
}

/// Examine process `pid` (read-only) for `wanted`.
pub fn fit(pid: i32, wanted: &Wanted) -> Fit {
    if let Wanted::Runtime = wanted {
        // The runtime is found by its file name; nothing else needs the memory.
        return match read_proc_file(format!("/proc/{pid}/maps")) {
            Ok(maps) if maps.lines().any(|l| l.split_whitespace().nth(5).is_some_and(is_runtime)) => Fit::Selected,
            Ok(_) => Fit::Unrelated,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Fit::NotPermitted,
            Err(_) => Fit::Gone,
        };
    }
    let objects = match Process::open(pid).and_then(|p| p.objects()) {
        Ok(o) => o,
        Err(crate::error::TriggerError::NotPermitted { .. }) => return Fit::NotPermitted,
        // Exited, or its PID names another process by now.
        Err(crate::error::TriggerError::NoSuchProcess { .. }) => return Fit::Gone,
        Err(_) => {
            return if std::path::Path::new(&format!("/proc/{pid}")).exists() { Fit::NotPermitted } else { Fit::Gone }
        }
    };
    let has_runtime = objects.iter().any(|o| is_runtime(&o.path));
    let mapped = match wanted {
        Wanted::Patch(meta) => match patch_fit(&objects, meta) {
            Fit::Selected => true,
            other => return other,
        },
        Wanted::Object(target) => find_object(pid, &objects, target).is_some(),
        Wanted::Runtime => unreachable!("handled above"),
    };
    match (mapped, has_runtime) {
        (false, _) => Fit::Unrelated,
        (true, true) => Fit::Selected,
        (true, false) => Fit::NoRuntime,
    }
}

/// Whether `objects` hold every target of `meta` with its build-id (`Selected`), another
/// build of one, some targets only, or none.
fn patch_fit(objects: &[MappedObject], meta: &PatchMeta) -> Fit {
    let mut found = 0;
    let mut missing = None;
    for t in &meta.targets {
        if objects.iter().any(|o| o.build_id == t.build_id) {
            found += 1;
            continue;
        }
        if let Some(o) = objects.iter().find(|o| same_object_name(&o.path, &t.path)) {
            return Fit::OtherBuild { path: o.path.clone(), build_id: o.build_id.clone() };
        }
        missing.get_or_insert_with(|| t.path.clone());
    }
    match missing {
        None => Fit::Selected,
        Some(_) if found == 0 => Fit::Unrelated,
        Some(missing) => Fit::SomeTargets { missing },
    }
}

/// Whether a mapped path (which may end in ` (deleted)`) is the recorded path, or has its
/// file name.
fn same_object_name(mapped: &str, recorded: &str) -> bool {
    let mapped = mapped.trim_end_matches(" (deleted)");
    mapped == recorded || file_name(mapped) == file_name(recorded)
}

/// `/proc/PID/comm` without its newline (empty once the process is gone).
pub fn command_name(pid: i32) -> String {
    read_proc_file(format!("/proc/{pid}/comm")).map(|s| s.trim_end_matches('\n').to_string()).unwrap_or_default()
}

/// The effective user id of a process (`Uid:` line of its status, second field).
pub fn effective_uid(pid: i32) -> Option<u32> {
    let status = read_proc_file(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// Kernel threads have no memory map: their `/proc/PID/maps` is empty (and their
/// `exe` link unreadable).
fn is_kernel_thread(pid: i32) -> bool {
    // Field 9 of stat (flags) has PF_KTHREAD (0x00200000).
    let Ok(stat) = read_proc_file(format!("/proc/{pid}/stat")) else { return false };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { return false };
    // `rest` starts at field 3 (state); flags is field 9.
    rest.split_whitespace().nth(6).and_then(|f| f.parse::<u64>().ok()).is_some_and(|flags| flags & 0x0020_0000 != 0)
}

/// Whether `text` matches the shell pattern `glob` (`*`, `?`, `[...]`), as `fnmatch(3)`.
pub fn matches_glob(glob: &str, text: &str) -> bool {
    let (Ok(g), Ok(t)) = (CString::new(glob), CString::new(text)) else { return false };
    // SAFETY: both are valid NUL-terminated strings that outlive the call.
    unsafe { libc::fnmatch(g.as_ptr(), t.as_ptr(), 0) == 0 }
}

/// The user id a `--user` argument names: a user name of the password database, or a
/// number.
pub fn user_id(user: &str) -> Result<u32, String> {
    if let Ok(uid) = user.parse::<u32>() {
        return Ok(uid);
    }
    let name = CString::new(user).map_err(|_| format!("`{user}` is not a user name"))?;
    // SAFETY: passwd is plain data; getpwnam_r writes it and strings into `buf`, both of
    // which outlive the call, and sets `result` to `&pwd` or null.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 16 << 10];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwnam_r(name.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result);
        if rc != 0 || result.is_null() {
            return Err(format!("no user named `{}`", crate::text::printable(user)));
        }
        Ok(pwd.pw_uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_the_shell_does() {
        assert!(matches_glob("calc*", "calc_app"));
        assert!(matches_glob("?alc_app", "calc_app"));
        assert!(matches_glob("[bc]alc_app", "calc_app"));
        assert!(!matches_glob("calc", "calc_app"));
        assert!(!matches_glob("x*", "calc_app"));
    }

    #[test]
    fn users_by_name_and_number() {
        assert_eq!(user_id("root"), Ok(0));
        assert_eq!(user_id("1234"), Ok(1234));
        assert!(user_id("no-such-user-here").unwrap_err().contains("no-such-user-here"));
    }

    #[test]
    fn finds_this_process_and_not_kernel_threads() {
        // `processes` leaves out the calling process only: our parent (the test runner or
        // a shell) is a user process and must be listed.
        let parent = std::os::unix::process::parent_id() as i32;
        let all = processes(&Filter::default());
        assert!(all.iter().any(|c| c.pid == parent), "parent {parent} not listed");
        assert!(all.iter().all(|c| c.pid != std::process::id() as i32));
        assert!(!all.iter().any(|c| c.pid == 2), "kthreadd is a kernel thread");
        let mine = Filter { uid: effective_uid(parent), name: Some(command_name(parent)) };
        assert!(processes(&mine).iter().any(|c| c.pid == parent));
    }

    #[test]
    fn a_patch_fits_by_build_id_and_spots_other_builds() {
        let obj = |path: &str, id: u8| MappedObject {
            path: path.into(),
            base: 0,
            header: 0,
            header_end: 0,
            build_id: vec![id],
        };
        let mut meta = PatchMeta {
            flags: 0,
            level: 0,
            patch_so: "/p/fix.so".into(),
            patch_build_id: vec![9],
            patch_sha256: [0; 32],
            labels: vec![],
            states: vec![],
            targets: vec![pulp_meta::Target {
                path: "/usr/lib/libfoo.so.1".into(),
                build_id: vec![1],
                functions: vec![],
                references: vec![],
            }],
        };
        assert_eq!(patch_fit(&[obj("/opt/x/libfoo.so.1", 1)], &meta), Fit::Selected);
        assert_eq!(
            patch_fit(&[obj("/usr/lib/libfoo.so.1 (deleted)", 2)], &meta),
            Fit::OtherBuild { path: "/usr/lib/libfoo.so.1 (deleted)".into(), build_id: vec![2] }
        );
        assert_eq!(patch_fit(&[obj("/usr/lib/libbar.so", 2)], &meta), Fit::Unrelated);
        let mut second = meta.targets[0].clone();
        second.path = "/usr/lib/libbar.so".into();
        second.build_id = vec![3];
        meta.targets.push(second);
        assert_eq!(
            patch_fit(&[obj("/usr/lib/libfoo.so.1", 1)], &meta),
            Fit::SomeTargets { missing: "/usr/lib/libbar.so".into() }
        );
    }
}
