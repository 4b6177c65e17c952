//! `pulp`: pack and inspect live patches.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pulp_tools::{dump, livepatchable, pack};

#[derive(Parser)]
#[command(name = "pulp", version, about = "Pack and inspect libpulp-rs live patches")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Pack a description file (.dsc) into a patch.meta.
    Pack {
        /// The description file.
        dsc: PathBuf,
        /// Where to write the patch.meta (default: the .dsc with the extension .meta).
        #[arg(short = 'o', long = "output", value_name = "FILE.meta")]
        output: Option<PathBuf>,
        /// Switch every thread at once instead of through a transition (same as a
        /// `%immediate` line in the .dsc).
        #[arg(long)]
        immediate: bool,
    },
    /// Show every field of a patch.meta.
    Dump {
        /// The patch.meta file.
        meta: PathBuf,
        /// Print a JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the functions of a shared object and whether each can be live-patched.
    ///
    /// Exits 0 when at least one function can be patched by this release and every
    /// exported function has a patchable prologue, 1 otherwise.
    Livepatchable {
        /// The shared object (or executable) to inspect.
        file: PathBuf,
        /// Print a JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Let a process accept live patches (`on`), or make it refuse every request until set
    /// back (`off`), as the PULP_DISABLE_ON_* variables do when it starts.
    SetPatchable {
        /// The process.
        #[arg(short, long, value_name = "PID")]
        pid: i32,
        /// `on` or `off`.
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// Show the patches a running process has applied, and the transition in progress
    /// with the threads that hold it. Stops no thread.
    Patches {
        /// The process.
        #[arg(short, long, value_name = "PID")]
        pid: i32,
        /// Print a JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    // Like any filter, end quietly when the reader of our output goes away (`| head`).
    // SAFETY: resetting a signal disposition to its default has no memory effects.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Usage errors have their own status (sysexits' EX_USAGE), apart from failures.
            return ExitCode::from(if e.use_stderr() { 64 } else { 0 });
        }
    };
    match run(cli.command) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("pulp: error: {msg}");
            ExitCode::from(1)
        }
    }
}

fn run(cmd: Cmd) -> Result<ExitCode, String> {
    match cmd {
        Cmd::Pack { dsc, output, immediate } => {
            let output = output.unwrap_or_else(|| dsc.with_extension("meta"));
            let (mut meta, warnings) = pack::pack_with_warnings(&dsc).map_err(|e| e.to_string())?;
            for w in warnings {
                eprintln!("pulp: warning: {w}");
            }
            if immediate {
                meta.flags |= pulp_meta::format::FLAG_IMMEDIATE;
            }
            write_atomically(&output, &meta.encode())
                .map_err(|e| format!("{}: cannot write: {e}", output.display()))?;
            let functions: usize = meta.targets.iter().map(|t| t.functions.len()).sum();
            println!("packed {functions} functions in {} targets into {}", meta.targets.len(), output.display());
        }
        Cmd::Dump { meta, json } => {
            let m = dump::read_meta(&meta).map_err(|e| e.to_string())?;
            if json {
                let text = serde_json::to_string_pretty(&dump::to_json(&m)).map_err(|e| e.to_string())?;
                println!("{text}");
            } else {
                print!("{}", dump::to_text(&m));
            }
        }
        Cmd::Patches { pid, json } => {
            let report = pulp_tools::patches::read(pid).map_err(|e| e.to_string())?;
            if json {
                let text =
                    serde_json::to_string_pretty(&pulp_tools::patches::to_json(&report)).map_err(|e| e.to_string())?;
                println!("{text}");
            } else {
                print!("{}", pulp_tools::patches::to_text(&report));
            }
        }
        Cmd::SetPatchable { pid, state } => {
            let on = state == "on";
            let changed = pulp_tools::control::set_patchable(pid, on).map_err(|e| e.to_string())?;
            let what = if on { "accepts live patches" } else { "refuses live patches" };
            println!("PID {pid} {what}{}", if changed { "" } else { " (it already did)" });
        }
        Cmd::Livepatchable { file, json } => {
            let report = livepatchable::check(&file).map_err(|e| e.to_string())?;
            if json {
                let text = serde_json::to_string_pretty(&livepatchable::to_json(&report)).map_err(|e| e.to_string())?;
                println!("{text}");
            } else {
                print!("{}", livepatchable::to_text(&report));
            }
            if let Err(why) = report.verdict() {
                eprintln!("pulp: {why}");
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Write `data` to `path` through a temporary file in the same folder, so that a reader
/// never sees a half-written patch.meta.
fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
