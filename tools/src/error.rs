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
    #[error("build-id mismatch for {path} in PID {pid}: the process has {found}, the patch was built for {expected}")]
    BuildIdMismatch { pid: i32, path: String, found: String, expected: String },
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
    #[error("PID {pid}: no thread could be stopped at a safe point ({reason})")]
    NoSafeThread { pid: i32, reason: String },
    #[error("PID {pid} thread {tid}: {what}: {errno}")]
    Ptrace { pid: i32, tid: i32, what: &'static str, errno: nix::Error },
    #[error("PID {pid}: {what}")]
    Target { pid: i32, what: String },
    #[error(
        "PID {pid}: transition {id}{} did not complete within {timeout:?}: {count} thread(s) still inside a target:{report}\nThe transition keeps running and every thread stays consistent. Finish it with `pulp-trigger --continue -p {pid}` (also with --force to switch these threads anyway, or --reverse to roll the patch back).",
        if *reversing { " (reversed)" } else { "" }
    )]
    Stuck { pid: i32, id: u64, timeout: std::time::Duration, count: usize, report: String, reversing: bool },
}

pub type Result<T, E = TriggerError> = std::result::Result<T, E>;
