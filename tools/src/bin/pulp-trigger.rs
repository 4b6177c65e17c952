//! `pulp-trigger -p PID FILE.meta`: apply a live patch to a running process;
//! `--revert` takes it back; `--continue` completes a transition left running.
//! One summary line on success; on refusal one error line and the process untouched.
//! Exit statuses: see `pulp_tools::report::EXIT_STATUSES`.

use clap::Parser;
use pulp_meta::PatchMeta;
use pulp_tools::apply::{self, Mode, Options};
use pulp_tools::error::TriggerError;
use pulp_tools::patchfile;
use pulp_tools::report::{self, EXIT_STATUSES, EXIT_USAGE};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "pulp-trigger",
    version,
    about = "Apply (or revert) a live patch in a running process",
    after_help = EXIT_STATUSES
)]
struct Cli {
    /// Process to patch.
    #[arg(short, long, value_name = "PID")]
    pid: i32,
    /// Revert the patch instead of applying it.
    #[arg(long, conflicts_with = "resume")]
    revert: bool,
    /// Revert every patch of TARGET (a path the process maps, its file name, or its
    /// build-id) in one transition; takes no FILE.meta.
    #[arg(long, value_name = "TARGET", conflicts_with_all = ["resume", "revert", "meta"])]
    revert_all: Option<String>,
    /// Complete a transition an earlier run left running (takes no FILE.meta).
    #[arg(long = "continue", id = "resume", conflicts_with = "meta")]
    resume: bool,
    /// How long threads may stay inside the targets before giving up on the transition
    /// (also bounds the patch's own constructors and callbacks, 2 to 60 s). A number of
    /// seconds, or `inf`.
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = parse_timeout)]
    timeout: Duration,
    /// On timeout, switch the threads still inside anyway.
    #[arg(long, conflicts_with = "reverse")]
    force: bool,
    /// On timeout, roll the patch back through the same steps.
    #[arg(long)]
    reverse: bool,
    /// Patch metadata written by `pulp pack`.
    #[arg(value_name = "FILE.meta", required_unless_present_any = ["resume", "revert_all"])]
    meta: Option<PathBuf>,
}

/// `--timeout`: seconds ≥ 0 (fractions allowed), or `inf`; a value too large to hold means
/// no limit.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if v.is_nan() || v < 0.0 {
        return Err(format!("`{s}` is not a number of seconds ≥ 0"));
    }
    Ok(Duration::try_from_secs_f64(v).unwrap_or(Duration::MAX))
}

/// Read and decode a `.meta`: a regular file (never a FIFO waited on) on a trusted path,
/// since whoever can write it decides what is loaded.
fn load(path: &Path, pid: i32) -> Result<(PatchMeta, Vec<u8>), TriggerError> {
    let abs = std::path::absolute(path).map_err(|source| TriggerError::ReadFile { path: path.into(), source })?;
    let bytes = patchfile::read_trusted(&abs, &patchfile::trusted_owners(pid), "the patch.meta")?;
    let meta = PatchMeta::decode(&bytes).map_err(|source| TriggerError::Meta { path: path.into(), source })?;
    Ok((meta, bytes))
}

fn main() -> ExitCode {
    // Like any filter, end quietly when the reader of our output goes away (`| head`).
    // SAFETY: resetting a signal disposition to its default has no memory effects.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    // While a thread of the target is stopped, every moment this tool waits for a CPU
    // is added to that thread's stop: ask for the highest CFS weight (never real-time
    // priority, which could starve the very thread we wait for). Unprivileged users
    // keep their priority.
    // SAFETY: setpriority takes plain integers.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -20) };
    let opts = Options { timeout: cli.timeout, force: cli.force, reverse: cli.reverse };
    let result = if let Some(target) = &cli.revert_all {
        apply::revert_all(cli.pid, target, opts).map(|o| {
            let n = pulp_tools::text::count(o.functions, "function", "functions");
            match o.transition {
                None => format!("no patch of {} is applied to PID {}", pulp_tools::text::printable(target), cli.pid),
                Some(e) => format!(
                    "reverted every patch of {} in PID {}: {n} restored ({})",
                    pulp_tools::text::printable(target),
                    cli.pid,
                    report::ended(&e)
                ),
            }
        })
    } else if cli.resume {
        apply::resume(cli.pid, opts).map(|e| match e {
            None => format!("no transition in progress in PID {}", cli.pid),
            Some(e) => format!("completed the transition in PID {}: {}", cli.pid, report::ended(&e)),
        })
    } else {
        let mode = if cli.revert { Mode::Revert } else { Mode::Apply };
        let path = cli.meta.expect("clap requires FILE.meta without --continue");
        load(&path, cli.pid).and_then(|(meta, bytes)| {
            apply::run(cli.pid, &meta, &bytes, mode, opts).map(|o| report::summary(&meta, cli.pid, mode, &o))
        })
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let code = report::exit_status(&e);
            let text = pulp_tools::text::printable(&e.to_string()).replace("\\n", "\n");
            if code == report::EXIT_REFUSED {
                eprintln!("pulp-trigger: error: {text}");
            } else {
                eprintln!("pulp-trigger: {text}");
            }
            ExitCode::from(code)
        }
    }
}
