//! What `pulp-trigger` says about one process: the summary line of a success, the exit
//! status of every outcome. Names and labels are escaped (`crate::text`).

use crate::apply::transition::Progress;
use crate::apply::{Ended, Mode, Outcome};
use crate::error::TriggerError;
use crate::text::{count, duration, printable};
use pulp_meta::abi::EntryStatus;
use pulp_meta::PatchMeta;

/// Exit status: done (applied, reverted, or nothing to do).
pub const EXIT_OK: u8 = 0;
/// Refused; nothing changed.
pub const EXIT_REFUSED: u8 = 1;
/// A transition did not complete in time; it keeps running, consistent.
pub const EXIT_LEFT_RUNNING: u8 = 2;
/// The process exited before the operation was through.
pub const EXIT_EXITED: u8 = 3;
/// The command line is wrong (`sysexits.h`'s `EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;

/// Every exit status, for `--help` and the README.
pub const EXIT_STATUSES: &str = "Exit status: 0 done (applied, reverted, or nothing to do); 1 refused, \
    the process unchanged; 2 a transition did not complete in time and keeps running (finish it \
    with --continue); 3 the process exited before the operation was through; 64 a usage error.\n\n\
    With several processes (several -p, --all, --name, --user): 0 when every selected process \
    ended in the state asked for (patched or already patched; reverted or not patched), \
    otherwise the most pressing status among the processes: 2 if a transition was left \
    running anywhere, else 1 if a process refused or rolled back (--reverse), else 3 if a \
    process exited meanwhile. Processes that map the target but lack the runtime are listed \
    (not live-patchable) and do not change the status; nor do processes skipped because they \
    map another build of the target; but a run that selects no process at all exits 1 (\"no \
    process selected\"). A run interrupted by SIGINT, SIGTERM, SIGHUP or SIGQUIT \
    finishes the processes in hand, starts no other, prints its summary and exits 128 + the \
    signal's number.";

/// Why a process refused, in a few words for the summary of many processes, and as a
/// JSON key.
pub fn refusal_reason(e: &TriggerError) -> (&'static str, &'static str) {
    match e {
        TriggerError::NotPermitted { .. } => ("not permitted", "not_permitted"),
        TriggerError::Traced { .. } => ("traced by another tool", "traced"),
        TriggerError::NoSuchProcess { .. } => ("no such process", "no_such_process"),
        TriggerError::RuntimeNotLoaded { .. } => ("runtime not loaded", "runtime_not_loaded"),
        TriggerError::RuntimeMismatch { .. } => ("incompatible runtime", "incompatible_runtime"),
        TriggerError::TargetNotMapped { .. } => ("target not mapped", "target_not_mapped"),
        TriggerError::BuildIdMismatch { .. } => ("another build of the target", "other_build"),
        TriggerError::PrologueMismatch { .. } | TriggerError::TooFar { .. } => {
            ("function not as recorded", "prologue_mismatch")
        }
        TriggerError::Meta { .. }
        | TriggerError::ReadFile { .. }
        | TriggerError::PatchMissing { .. }
        | TriggerError::PatchBuildId { .. }
        | TriggerError::PatchInsecure { .. } => ("patch files refused", "patch_files"),
        TriggerError::Refused { .. } => ("refused by the runtime", "runtime_refused"),
        TriggerError::Busy { .. } => ("busy", "busy"),
        TriggerError::NoSafeThread { .. } => ("no thread at a safe point", "no_safe_thread"),
        _ => ("error", "error"),
    }
}

/// An error as one line: a transition left running names its threads on that line
/// instead of on a line each (with many processes, one line a process).
pub fn one_line(e: &TriggerError) -> String {
    let TriggerError::Stuck { pid, id, timeout, inside, unexamined, report, reversing } = e else {
        return printable(&e.to_string()).into_owned();
    };
    // `report` has a line `  thread TID (NAME):` per thread, then its frames.
    let threads: Vec<&str> =
        report.lines().filter_map(|l| l.strip_prefix("  thread ")).map(|t| t.trim_end_matches(':')).collect();
    let mut waiting = Vec::new();
    if *inside > 0 {
        waiting.push(format!("{} inside a target", count(*inside, "thread", "threads")));
    }
    if *unexamined > 0 {
        waiting.push(format!("{} not examined yet", count(*unexamined, "thread", "threads")));
    }
    format!(
        "PID {pid}: transition {id}{} did not complete within {}: {} (thread {}); left running: finish it with \
         `pulp-trigger --continue -p {pid}`",
        if *reversing { " (reversed)" } else { "" },
        duration(*timeout),
        waiting.join(" and "),
        threads.join(", thread ")
    )
}

/// The line of `--revert-all TARGET` in one process.
pub fn reverted_all(target: &str, pid: i32, o: &Outcome) -> String {
    let n = count(o.functions, "function", "functions");
    match &o.transition {
        None => format!("no patch of {} is applied to PID {pid}", printable(target)),
        Some(e @ Ended::Reversed(..)) => {
            format!("revert of every patch of {} in PID {pid} rolled back ({})", printable(target), ended(e))
        }
        Some(e) => format!("reverted every patch of {} in PID {pid}: {n} restored ({})", printable(target), ended(e)),
    }
}

/// The line of `--continue` in one process.
pub fn resumed(pid: i32, e: &Option<Ended>) -> String {
    match e {
        None => format!("no transition in progress in PID {pid}"),
        Some(e) => format!("completed the transition in PID {pid}: {}", ended(e)),
    }
}

/// The line of a dry run in one process.
pub fn dry_run(meta: &PatchMeta, pid: i32, mode: Mode, o: &Outcome) -> String {
    let what = describe(meta);
    let n = count(o.functions, "function", "functions");
    match (mode, o.status) {
        (Mode::Apply, EntryStatus::NothingToDo) => format!("{what} already applied to PID {pid} (dry run)"),
        (Mode::Apply, _) => format!("would apply {what} to PID {pid}: {n} checked (dry run, nothing changed)"),
        (Mode::Revert, EntryStatus::NothingToDo) => format!("{what} is not applied to PID {pid} (dry run)"),
        (Mode::Revert, _) => format!("would revert {what} in PID {pid}: {n} checked (dry run, nothing changed)"),
    }
}

/// The exit status of an error.
pub fn exit_status(e: &TriggerError) -> u8 {
    match e {
        TriggerError::Stuck { .. } => EXIT_LEFT_RUNNING,
        TriggerError::ExitedWith { .. } | TriggerError::Exited { .. } => EXIT_EXITED,
        _ => EXIT_REFUSED,
    }
}

/// `patch 0123456789ab (CVE-…, …)`.
pub fn describe(meta: &PatchMeta) -> String {
    let short = meta.short_id();
    let level = if meta.level == 0 { String::new() } else { format!(" level {}", meta.level) };
    if meta.labels.is_empty() {
        format!("patch {short}{level}")
    } else {
        let labels: Vec<_> = meta.labels.iter().map(|l| printable(l).into_owned()).collect();
        format!("patch {short}{level} ({})", labels.join(", "))
    }
}

fn progress(p: &Progress) -> String {
    format!(
        "{}: {} moved by themselves, {} sampled; longest stop {}; transition {}",
        count(p.threads, "thread", "threads"),
        p.by_gates,
        p.sampled,
        duration(p.longest_stop),
        duration(p.elapsed)
    )
}

/// How a transition ended, in words.
pub fn ended(e: &Ended) -> String {
    match e {
        Ended::Completed(p) => progress(p),
        Ended::Immediate => "every thread switched at once (immediate)".into(),
        Ended::Forced(p, h) => {
            format!("FORCED: {} still inside were switched ({})", count(h.len(), "thread", "threads"), progress(p))
        }
        Ended::Reversed(p, h) => format!(
            "REVERSED after {} stayed inside: nothing changed ({})",
            count(h.len(), "thread", "threads"),
            progress(p)
        ),
        Ended::Exited(status) => format!(
            "then the process exited{} before every thread had moved",
            status.map(|s| format!(" with status {}", crate::error::describe_status(s))).unwrap_or_default()
        ),
    }
}

/// The one line a success prints.
pub fn summary(meta: &PatchMeta, pid: i32, mode: Mode, o: &Outcome) -> String {
    let what = describe(meta);
    let mut timing = match o.stopped {
        Some((tid, d)) => format!("thread {tid} stopped {}", duration(d)),
        None => "no thread stopped".into(),
    };
    if let Some(t) = &o.transition {
        timing = format!("{timing}; {}", ended(t));
    }
    timing = format!("{timing}; total {}", duration(o.total));
    let n = count(o.functions, "function", "functions");
    match (mode, o.status) {
        (_, _) if matches!(o.transition, Some(Ended::Reversed(..))) => {
            let verb = if mode == Mode::Apply { "apply" } else { "revert" };
            format!("{verb} of {what} in PID {pid} rolled back ({timing})")
        }
        (Mode::Apply, EntryStatus::NothingToDo) => format!("{what} already applied to PID {pid} ({n}; {timing})"),
        (Mode::Apply, _) => format!("applied {what} to PID {pid}: {n} redirected ({timing})"),
        (Mode::Revert, EntryStatus::NothingToDo) => {
            format!("{what} is not applied to PID {pid}: nothing to revert ({timing})")
        }
        (Mode::Revert, _) => format!("reverted {what} in PID {pid}: {n} restored ({timing})"),
    }
}
