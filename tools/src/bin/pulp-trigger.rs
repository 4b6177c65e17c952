//! `pulp-trigger -p PID FILE.meta`: apply a live patch to a running process;
//! `--revert` takes it back. One summary line on success; one error line and a non-zero
//! exit status on refusal, with the process left untouched.

use clap::Parser;
use pulp_meta::abi::EntryStatus;
use pulp_meta::PatchMeta;
use pulp_tools::apply::{self, Mode, Outcome};
use pulp_tools::error::TriggerError;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "pulp-trigger", version, about = "Apply (or revert) a live patch in a running process")]
struct Cli {
    /// Process to patch.
    #[arg(short, long, value_name = "PID")]
    pid: i32,
    /// Revert the patch instead of applying it.
    #[arg(long)]
    revert: bool,
    /// Patch metadata written by `pulp pack`.
    #[arg(value_name = "FILE.meta")]
    meta: PathBuf,
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

fn summary(meta: &PatchMeta, pid: i32, mode: Mode, o: &Outcome) -> String {
    let what = describe(meta);
    let timing = format!(
        "thread {} stopped {:.2} ms, total {:.2} ms",
        o.tid,
        o.stopped.as_secs_f64() * 1e3,
        o.total.as_secs_f64() * 1e3
    );
    match (mode, o.status) {
        (Mode::Apply, EntryStatus::NothingToDo) => {
            format!("{what} already applied to PID {pid} ({} functions; {timing})", o.functions)
        }
        (Mode::Apply, _) => format!("applied {what} to PID {pid}: {} functions redirected ({timing})", o.functions),
        (Mode::Revert, EntryStatus::NothingToDo) => {
            format!("{what} is not applied to PID {pid}: nothing to revert ({timing})")
        }
        (Mode::Revert, _) => format!("reverted {what} in PID {pid}: {} functions restored ({timing})", o.functions),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mode = if cli.revert { Mode::Revert } else { Mode::Apply };
    let result = load(&cli.meta).and_then(|(meta, bytes)| apply::run(cli.pid, &meta, &bytes, mode).map(|o| (meta, o)));
    match result {
        Ok((meta, outcome)) => {
            println!("{}", summary(&meta, cli.pid, mode, &outcome));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pulp-trigger: error: {e}");
            ExitCode::FAILURE
        }
    }
}
