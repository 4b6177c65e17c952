//! `pulp`: pack and inspect live patches, and look at what running processes have applied.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pulp_tools::report::EXIT_USAGE;
use pulp_tools::{dump, livepatchable, messages, pack, patches, text};

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
    /// Show the patches a running process has applied, and the transition in progress
    /// with the threads that hold it. Stops no thread.
    Patches {
        /// The process.
        #[arg(short, long, value_name = "PID", required_unless_present = "all", conflicts_with = "all")]
        pid: Option<i32>,
        /// Every live-patchable process of the machine (the runtime loaded).
        #[arg(long)]
        all: bool,
        /// Print JSON instead of text (with --all, an array of the objects of -p).
        #[arg(long)]
        json: bool,
    },
    /// Tell by the exit status whether a patch is applied to a process. Stops no thread.
    #[command(after_help = patches::CHECK_STATUSES)]
    Check {
        /// The process.
        #[arg(short, long, value_name = "PID")]
        pid: i32,
        /// The patch.meta.
        meta: PathBuf,
        /// Print nothing; the exit status alone answers.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Print the runtime's own log of a process: patches loaded, applied, refused and
    /// why, transitions (a fixed-size ring, oldest lines dropped first). Stops no thread.
    Messages {
        /// The process.
        #[arg(short, long, value_name = "PID")]
        pid: i32,
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
            // Usage errors exit 64 (`EX_USAGE`), as pulp-trigger's: `pulp check` gives 2 a
            // meaning of its own.
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
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
        Cmd::Patches { pid: Some(pid), json, .. } => {
            let report = patches::read(pid).map_err(|e| e.to_string())?;
            if json {
                let text = serde_json::to_string_pretty(&patches::to_json(&report)).map_err(|e| e.to_string())?;
                println!("{text}");
            } else {
                print!("{}", patches::to_text(&report));
            }
        }
        Cmd::Patches { pid: None, json, .. } => return patches_all(json),
        Cmd::Check { pid, meta, quiet } => {
            let m = dump::read_meta(&meta).map_err(|e| e.to_string());
            return Ok(match m.and_then(|m| patches::check(pid, &m).map_err(|e| e.to_string())) {
                Ok((answer, line)) => {
                    if !quiet {
                        println!("{line}");
                    }
                    ExitCode::from(answer as u8)
                }
                Err(e) => {
                    eprintln!("pulp: error: {}", text::printable(&e));
                    ExitCode::from(patches::CHECK_UNKNOWN)
                }
            });
        }
        Cmd::Messages { pid } => {
            for m in messages::read(pid).map_err(|e| e.to_string())? {
                println!("{}", messages::to_text(&m));
            }
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

/// `pulp patches --all`: every live-patchable process, in PID order. Exits 1 when one of
/// them could not be read (it is named on stderr), 0 otherwise.
fn patches_all(json: bool) -> Result<ExitCode, String> {
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut failed = false;
    let mut objects = Vec::new();
    for (pid, report) in patches::read_all(jobs) {
        match report {
            Ok(r) if json => objects.push(patches::to_json(&r)),
            Ok(r) => println!("{}", patches::to_text(&r)),
            Err(e) => {
                failed = true;
                eprintln!("pulp: error: {}", text::printable(&e.to_string()));
                if json {
                    objects.push(serde_json::json!({ "pid": pid, "error": text::printable(&e.to_string()) }));
                }
            }
        }
    }
    if json {
        let text = serde_json::to_string_pretty(&objects).map_err(|e| e.to_string())?;
        println!("{text}");
    }
    Ok(ExitCode::from(u8::from(failed)))
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
