//! What `pulp-trigger` says about one process: the summary line of a success, the exit
//! status of every outcome. Names and labels are escaped (`crate::text`).

use crate::apply::{Ended, Mode, Outcome};
use crate::error::TriggerError;
use crate::text::{count, duration, printable};
use crate::transition::Progress;
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
    with --continue); 3 the process exited before the operation was through; 64 a usage error.";

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
