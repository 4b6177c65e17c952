//! Errors of `pulp-trigger`: each names what a user needs to act on (pid, tid, file,
//! function, address) and renders as one line.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error("{path}: {source}")]
    Meta { path: PathBuf, source: pulp_meta::MetaError },
    #[error("cannot read {path}: {source}")]
    ReadFile { path: PathBuf, source: std::io::Error },
    #[error("no process with PID {pid}")]
    NoSuchProcess { pid: i32 },
    #[error("not permitted to trace PID {pid}: {reason}")]
    NotPermitted { pid: i32, reason: String },
    #[error("PID {pid} has not loaded the libpulp-rs runtime (start it with LD_PRELOAD=libpulp_rs.so)")]
    RuntimeNotLoaded { pid: i32 },
    #[error("PID {pid} runs an incompatible libpulp-rs runtime ({what})")]
    RuntimeMismatch { pid: i32, what: String },
    #[error("target {path} is not mapped in PID {pid}")]
    TargetNotMapped { pid: i32, path: String },
    #[error("{}", build_id_mismatch(*pid, path, found, expected, recorded))]
    BuildIdMismatch { pid: i32, path: String, found: String, expected: String, recorded: String },
    #[error(
        "function `{func}` of {path} at {addr:#x} in PID {pid}: prologue is not {expected} as recorded (found {found})"
    )]
    PrologueMismatch { pid: i32, path: String, func: String, addr: u64, expected: String, found: String },
    #[error("function `{func}` of {path} in PID {pid}: its endbr64 entry has gcc's `90 90` NOPs and the runtime is more than 2 GiB away; rebuild it with cc-build or pulp-cc (which writes `66 90`)")]
    TooFar { pid: i32, path: String, func: String },
    #[error("patch object {path} is missing: {reason}")]
    PatchMissing { path: String, reason: String },
    #[error("patch object {path} has build-id {found}, the metadata records {expected}")]
    PatchBuildId { path: String, found: String, expected: String },
    #[error("patch object {path} is refused: {reason}")]
    PatchInsecure { path: String, reason: String },
    #[error("PID {pid}: the runtime refused: {message}")]
    Refused { pid: i32, message: String },
    #[error("PID {pid} is traced by PID {tracer} ({name}): detach that tracer (a debugger or strace) first")]
    Traced { pid: i32, tracer: i32, name: String },
    #[error("PID {pid}: the runtime is busy: thread {tid} is still running a request of an earlier pulp-trigger (a patch's constructor or callback that has not returned); try again later")]
    Busy { pid: i32, tid: i32 },
    #[error("PID {pid} exited {during}{}", status.map(|s| format!(" with status {}", describe_status(s))).unwrap_or_default())]
    ExitedWith { pid: i32, during: String, status: Option<i32> },
    #[error("PID {pid} exited {during}")]
    Exited { pid: i32, during: String },
    #[error("PID {pid}: no thread could be stopped at a safe point ({reason})")]
    NoSafeThread { pid: i32, reason: String },
    #[error("PID {pid} thread {tid}: {what}: {errno}")]
    Ptrace { pid: i32, tid: i32, what: &'static str, errno: nix::Error },
    #[error("PID {pid}: {what}")]
    Target { pid: i32, what: String },
    #[error(
        "PID {pid}: transition {id}{} did not complete within {}: {}:{report}\nThe transition keeps running and every thread stays consistent. Finish it with `pulp-trigger --continue -p {pid}` (also with --force to switch these threads anyway, or --reverse to roll the patch back).",
        if *reversing { " (reversed)" } else { "" },
        crate::text::duration(*timeout),
        waiting(*inside, *unexamined)
    )]
    Stuck {
        pid: i32,
        id: u64,
        timeout: std::time::Duration,
        inside: usize,
        unexamined: usize,
        report: String,
        reversing: bool,
    },
}

pub type Result<T, E = TriggerError> = std::result::Result<T, E>;

fn waiting(inside: usize, unexamined: usize) -> String {
    use crate::text::count;
    match (inside, unexamined) {
        (i, 0) => format!("{} still inside a target", count(i, "thread", "threads")),
        (0, u) => format!("{} not examined yet when the time ran out", count(u, "thread", "threads")),
        (i, u) => format!(
            "{} still inside a target and {} not examined yet when the time ran out",
            count(i, "thread", "threads"),
            count(u, "thread", "threads")
        ),
    }
}

fn build_id_mismatch(pid: i32, path: &str, found: &str, expected: &str, recorded: &str) -> String {
    let deleted = path.ends_with(" (deleted)");
    let what =
        if deleted { "the library was replaced on disk after the process loaded it" } else { "another build of it" };
    format!(
        "PID {pid} maps {path} with build-id {found}, but the patch was packed for {recorded} with build-id \
         {expected} ({what}): pack the patch against the object the process runs"
    )
}

/// A wait status in words: `exit code N` or `killed by signal N`.
pub fn describe_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit code {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("{status:#x}")
    }
}
