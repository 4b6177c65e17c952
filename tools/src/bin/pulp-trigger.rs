//! `pulp-trigger -p PID FILE.meta`: apply a live patch to a running process;
//! `--revert` takes it back; `--continue` completes a transition left running.
//! One summary line on success; on refusal one error line, exit status 1, and the
//! process untouched; exit status 2 when a transition did not complete in time (it keeps
//! running, consistent).

use clap::Parser;
use pulp_meta::abi::EntryStatus;
use pulp_meta::PatchMeta;
use pulp_tools::apply::{self, Ended, Mode, Options, Outcome};
use pulp_tools::error::TriggerError;
use pulp_tools::transition::Progress;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "pulp-trigger", version, about = "Apply (or revert) a live patch in a running process")]
struct Cli {
    /// Process to patch.
    #[arg(short, long, value_name = "PID")]
    pid: i32,
    /// Revert the patch instead of applying it.
    #[arg(long, conflicts_with = "resume")]
    revert: bool,
    /// Complete a transition an earlier run left running (no FILE.meta).
    #[arg(long = "continue", id = "resume")]
    resume: bool,
    /// How long threads may stay inside the targets before giving up on the transition.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    timeout: f64,
    /// On timeout, switch the threads still inside anyway.
    #[arg(long, conflicts_with = "reverse")]
    force: bool,
    /// On timeout, roll the patch back through the same steps.
    #[arg(long)]
    reverse: bool,
    /// Patch metadata written by `pulp pack`.
    #[arg(value_name = "FILE.meta", required_unless_present = "resume")]
    meta: Option<PathBuf>,
}

fn load(path: &PathBuf) -> Result<(PatchMeta, Vec<u8>), TriggerError> {
    let bytes = std::fs::read(path).map_err(|source| TriggerError::ReadFile { path: path.clone(), source })?;
    let meta = PatchMeta::decode(&bytes).map_err(|source| TriggerError::Meta { path: path.clone(), source })?;
    Ok((meta, bytes))
}

fn describe(meta: &PatchMeta) -> String {
    let id = meta.id();
    let short = &id[..id.len().min(12)];
    if meta.labels.is_empty() {
        format!("patch {short}")
    } else {
        format!("patch {short} ({})", meta.labels.join(", "))
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn progress(p: &Progress) -> String {
    format!(
        "{} threads: {} moved by themselves, {} sampled; longest stop {:.0} µs; transition {}",
        p.threads,
        p.by_gates,
        p.sampled,
        p.longest_stop.as_secs_f64() * 1e6,
        ms(p.elapsed)
    )
}

fn ended(e: &Ended) -> String {
    match e {
        Ended::Completed(p) => progress(p),
        Ended::Forced(p, h) => format!("FORCED: {} thread(s) still inside were switched ({})", h.len(), progress(p)),
        Ended::Reversed(p, h) => {
            format!("REVERSED after {} thread(s) stayed inside: nothing changed ({})", h.len(), progress(p))
        }
    }
}

fn summary(meta: &PatchMeta, pid: i32, mode: Mode, o: &Outcome) -> String {
    let what = describe(meta);
    let mut timing = format!("thread {} stopped {}", o.tid, ms(o.stopped));
    if let Some(t) = &o.transition {
        timing = format!("{timing}; {}", ended(t));
    }
    timing = format!("{timing}; total {}", ms(o.total));
    let n = o.functions;
    match (mode, o.status) {
        (_, _) if matches!(o.transition, Some(Ended::Reversed(..))) => {
            let verb = if mode == Mode::Apply { "apply" } else { "revert" };
            format!("{verb} of {what} in PID {pid} rolled back ({timing})")
        }
        (Mode::Apply, EntryStatus::NothingToDo) => {
            format!("{what} already applied to PID {pid} ({n} functions; {timing})")
        }
        (Mode::Apply, _) => format!("applied {what} to PID {pid}: {n} functions redirected ({timing})"),
        (Mode::Revert, EntryStatus::NothingToDo) => {
            format!("{what} is not applied to PID {pid}: nothing to revert ({timing})")
        }
        (Mode::Revert, _) => format!("reverted {what} in PID {pid}: {n} functions restored ({timing})"),
    }
}

fn main() -> ExitCode {
    // Like any filter, end quietly when the reader of our output goes away (`| head`).
    // SAFETY: resetting a signal disposition to its default has no memory effects.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    // While a thread of the target is stopped, every moment this tool waits for a CPU
    // is added to that thread's stop: ask for the highest CFS weight (never real-time
    // priority, which could starve the very thread we wait for). Unprivileged users
    // keep their priority.
    // SAFETY: setpriority takes plain integers.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -20) };
    let opts =
        Options { timeout: Duration::from_secs_f64(cli.timeout.max(0.0)), force: cli.force, reverse: cli.reverse };
    let result = if cli.resume {
        apply::resume(cli.pid, opts).map(|e| match e {
            None => format!("no transition in progress in PID {}", cli.pid),
            Some(e) => format!("completed the transition in PID {}: {}", cli.pid, ended(&e)),
        })
    } else {
        let mode = if cli.revert { Mode::Revert } else { Mode::Apply };
        let path = cli.meta.expect("clap requires FILE.meta without --continue");
        load(&path).and_then(|(meta, bytes)| {
            apply::run(cli.pid, &meta, &bytes, mode, opts).map(|o| summary(&meta, cli.pid, mode, &o))
        })
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e @ TriggerError::Stuck { .. }) => {
            eprintln!("pulp-trigger: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("pulp-trigger: error: {e}");
            ExitCode::FAILURE
        }
    }
}
