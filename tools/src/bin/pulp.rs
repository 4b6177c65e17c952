//! `pulp`: pack and inspect live patches, and look at what running processes have applied.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pulp_tools::apply::report::EXIT_USAGE;
use pulp_tools::fleet::{control, select};
use pulp_tools::inspect::{messages, patches};
use pulp_tools::pack::{self, dump, livepatchable};
use pulp_tools::text;

#[derive(Parser)]
#[command(name = "pulp", version, about = "Build, pack and inspect libpulp-rs live patches")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// What `pulp install` and `pulp uninstall` take.
#[derive(clap::Args)]
struct MachineArgs {
    /// The patch.meta (install: its patch object is copied along, checked; uninstall: any
    /// copy of the patch, found by its id).
    meta: PathBuf,
    /// The patch directory (default: $PULP_PATCH_DIR, else /etc/pulp/patches.d).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Print pulp-trigger's JSON lines.
    #[arg(long)]
    json: bool,
    /// Processes worked on at once.
    #[arg(long, value_name = "N")]
    jobs: Option<u16>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Pack a description file (.dsc) into a patch.meta.
    ///
    /// The .dsc, one item a line (`# text`, `; text` and `// text` are comments, also at
    /// the end of a line after a space):
    ///
    ///   libfix.so                    the patch .so (first line that is not a label or option)
    ///   !CVE-2026-1234               a label, kept in the metadata (anywhere)
    ///   %immediate                   switch every thread at once (no transition)
    ///   %replace                     a cumulative patch: replaces every earlier one
    ///   %level 3                     the patch level
    ///   %state 42 1                  a state (id, version) the patch declares
    ///   @/usr/lib/libfoo.so          a target object; the lines below are about it
    ///   foo:foo_fixed                replace function foo by the patch's foo_fixed
    ///   twin@1130:twin_fixed         one of several functions of that name, by offset (hex)
    ///   memcpy@@GLIBC_2.14:new       the default version of a versioned symbol
    ///   memcpy@GLIBC_2.2.5:new       a version by name (anything after `@` that is not hex)
    ///   #counter:ref_counter         the patch's variable ref_counter receives the address of
    ///                                the target's counter (any symbol: exported, hidden,
    ///                                static, `lenfix.1`); for a function this patch
    ///                                replaces, its original code
    ///   #lenfix.1@2a40+8:ref         a symbol picked by offset, plus an addend
    ///   #%tls_var:ref_tls            a thread-local variable: its 16-byte tls_index
    ///   #%tls_var:ref tp-offset      ... its offset from the thread pointer (static TLS)
    ///   #helper:ref got-relative     its address minus the patch's GOT (pulp build-patch)
    ///
    /// A bare name with several versions, an IFUNC or its resolver, a second name for an
    /// entry already replaced (a `__GI_` alias) and the dynamic linker are refused.
    ///
    /// Relative paths are resolved against the .dsc's folder. Static symbols of a stripped
    /// target come from its debug file (--debug-file, DIR/.build-id/xx/yyyy.debug, or
    /// .gnu_debuglink), whose build-id must match.
    #[command(verbatim_doc_comment)]
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
        /// A separate debug file of a stripped target (used for the target whose build-id
        /// it has; may be given several times).
        #[arg(long = "debug-file", value_name = "FILE")]
        debug_files: Vec<PathBuf>,
        /// The folder of separate debug files.
        #[arg(long = "debug-dir", value_name = "DIR", default_value = "/usr/lib/debug")]
        debug_dir: PathBuf,
        /// Do not check that every symbol the patch .so imports will be defined when it is
        /// loaded (for symbols the application itself exports, which pack cannot see).
        #[arg(long)]
        skip_import_check: bool,
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
    /// exported function has a patchable prologue, 1 otherwise. Static functions of a
    /// stripped object come from its debug file (see `pulp pack --help`). For functions
    /// without a pad it also says whether an entry jump could overwrite their first
    /// instructions (how `pulp pack` and `pulp-trigger` patch them), or why not.
    Livepatchable {
        /// The shared object (or executable) to inspect.
        file: PathBuf,
        /// Print a JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// A separate debug file of the object (its build-id must match).
        #[arg(long = "debug-file", value_name = "FILE")]
        debug_file: Option<PathBuf>,
        /// The folder of separate debug files.
        #[arg(long = "debug-dir", value_name = "DIR", default_value = "/usr/lib/debug")]
        debug_dir: PathBuf,
    },
    /// Install a patch on this machine: into the patch directory (processes started later,
    /// and running ones when they load a target, apply it by themselves), then on every
    /// running process that maps its targets (`pulp-trigger --all`). Exit status: as
    /// pulp-trigger's over many processes.
    Install(MachineArgs),
    /// Uninstall a patch: revert it on every running process, and take it out of the
    /// patch directory.
    Uninstall(MachineArgs),
    /// Whether a patch is installed in the patch directory: exit 0 with its path, or 1.
    Installed {
        /// The patch.meta (any copy of the patch).
        meta: PathBuf,
        /// The patch directory (default: $PULP_PATCH_DIR, else /etc/pulp/patches.d).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Let a process accept live patches (`on`), or make it refuse every request until set
    /// back (`off`), as the PULP_DISABLE_ON_* variables do when it starts.
    ///
    /// Processes are chosen as `pulp-trigger` chooses them: `-p` (repeatable), `--all`
    /// (every process with the runtime loaded), `--name`, `--user`. Exit 0 when every
    /// selected process is set; 1 when one could not be, or none was selected.
    SetPatchable {
        #[command(flatten)]
        selection: select::Selection,
        /// `on` or `off`.
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// Build a live patch from a source diff.
    ///
    /// Copies DIR, runs CMD there (a shell command; CC and CXX are set to pulp-cc, which
    /// also writes the large-code-model assembly this needs) before and after applying
    /// FIX.patch (`patch -p1`), checks that the rebuilt original is PATH (the object the
    /// running processes map, built earlier through pulp-cc from the same sources),
    /// finds every function whose code changed (callers of a changed inlined function,
    /// compiler clones and cold parts included) and the functions the fix adds, and writes
    /// OUTDIR/NAME.so with just those, in which every reference to the running object's
    /// functions and variables (static, hidden or exported) goes to the running object's
    /// own, OUTDIR/NAME.dsc and OUTDIR/NAME.meta, ready for pulp-trigger.
    ///
    /// Refused, with the reason: a changed initial value of existing data, a changed
    /// struct layout, a changed function without patchable prologue, a changed function
    /// that never returns (unless --allow-endless), a rebuild that is not PATH.
    #[command(verbatim_doc_comment)]
    BuildPatch {
        /// The project's source folder (clean: objects found in it are rebuilt; with
        /// --incremental, a tree built through pulp-cc).
        #[arg(long, value_name = "DIR")]
        src: PathBuf,
        /// The fix, a diff for `patch -p1` in DIR.
        #[arg(long, value_name = "FIX.patch")]
        diff: PathBuf,
        /// The build command (run with `sh -c` in the copy; it must compile through $CC/$CXX).
        #[arg(long, value_name = "CMD")]
        build: String,
        /// The object the running processes map (shared library or executable).
        #[arg(long, value_name = "PATH")]
        target: PathBuf,
        /// The patch's name (default: the diff's file name without extension).
        #[arg(long)]
        name: Option<String>,
        /// A label kept in the metadata (a CVE id); may be repeated.
        #[arg(long = "label", value_name = "TEXT")]
        labels: Vec<String>,
        /// Where to write NAME.so, NAME.dsc and NAME.meta.
        #[arg(short = 'o', long = "output", value_name = "OUTDIR")]
        out_dir: PathBuf,
        /// Build in this folder and keep it (default: a temporary folder, removed).
        #[arg(long, value_name = "DIR")]
        work_dir: Option<PathBuf>,
        /// Patch changed functions that never return (a thread inside keeps the old code).
        #[arg(long)]
        allow_endless: bool,
        /// The separate debug file of a stripped PATH.
        #[arg(long = "debug-file", value_name = "FILE")]
        debug_files: Vec<PathBuf>,
        /// The folder of separate debug files.
        #[arg(long = "debug-dir", value_name = "DIR", default_value = "/usr/lib/debug")]
        debug_dir: PathBuf,
        /// The compiler wrapper (default: pulp-cc next to pulp, else on PATH).
        #[arg(long = "cc-wrapper", value_name = "PATH")]
        cc_wrapper: Option<PathBuf>,
        /// DIR is a tree already built through pulp-cc, its records in DIR/.pulp-records:
        /// build only a copy with the fix, rebuilding only what the diff touches.
        #[arg(long)]
        incremental: bool,
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
    /// Preload the runtime into every program started from now on (`on`), stop doing so
    /// (`off`), or tell whether it is (`status`: exit 0 if it is, 1 if not), through
    /// /etc/ld.so.preload, written atomically, other entries kept.
    ///
    /// `on` refuses a runtime that is not a regular file owned by root and writable by
    /// nobody else in folders likewise, that is not the libpulp-rs runtime, or with which
    /// /bin/true does not run. Running processes are not touched. Static programs load
    /// nothing; setuid and setcap programs load it and ignore every PULP_* variable.
    #[command(verbatim_doc_comment)]
    Preload {
        /// `on`, `off` or `status`.
        #[arg(value_parser = ["on", "off", "status"])]
        state: String,
        /// The runtime (default: libpulp_rs.so next to this program).
        #[arg(long, value_name = "PATH")]
        runtime: Option<PathBuf>,
        /// The file (default: /etc/ld.so.preload).
        #[arg(long, value_name = "FILE", default_value = pulp_tools::fleet::preload::PRELOAD_FILE)]
        file: PathBuf,
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
            // Usage errors have their own status (sysexits' EX_USAGE), apart from failures
            // (and from `pulp check`'s answers).
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

/// Arguments `pulp install`/`uninstall` pass on to `pulp-trigger --all`.
fn trigger_extra(json: bool, jobs: Option<u16>) -> Vec<String> {
    let mut extra = Vec::new();
    if json {
        extra.push("--json".to_string());
    }
    if let Some(n) = jobs {
        extra.extend(["--jobs".to_string(), n.to_string()]);
    }
    extra
}

fn run(cmd: Cmd) -> Result<ExitCode, String> {
    match cmd {
        Cmd::Pack { dsc, output, immediate, debug_files, debug_dir, skip_import_check } => {
            let output = output.unwrap_or_else(|| dsc.with_extension("meta"));
            let opts = pack::PackOptions {
                immediate,
                debug: pulp_elf::DebugSearch { files: debug_files, root: debug_dir },
                skip_import_check,
                ..Default::default()
            };
            let (meta, warnings) = pack::pack_with(&dsc, &opts).map_err(|e| e.to_string())?;
            for w in warnings {
                eprintln!("pulp: warning: {w}");
            }
            pulp_tools::apply::patchfile::write_atomically(&output, &meta.encode(), 0o666)
                .map_err(|e| format!("{}: cannot write: {e}", output.display()))?;
            let functions: usize = meta.targets.iter().map(|t| t.functions.len()).sum();
            let references: usize = meta.targets.iter().map(|t| t.references.len()).sum();
            let refs = if references == 0 {
                String::new()
            } else {
                format!(" and {}", text::count(references, "reference", "references"))
            };
            println!(
                "packed {}{refs} in {} into {}",
                text::count(functions, "function", "functions"),
                text::count(meta.targets.len(), "target", "targets"),
                output.display()
            );
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
        Cmd::Install(MachineArgs { meta, dir, json, jobs }) => {
            let dir = pulp_tools::fleet::install::patch_dir(dir);
            let (installed, already) = pulp_tools::fleet::install::install_files(&meta, &dir)?;
            if !json {
                let what = if already { "already installed as" } else { "installed as" };
                println!("{} {what} {}", meta.display(), installed.display());
            }
            let extra = trigger_extra(json, jobs);
            let status = pulp_tools::fleet::install::on_every_process(&installed, false, &extra)?;
            return Ok(ExitCode::from(status));
        }
        Cmd::Uninstall(MachineArgs { meta, dir, json, jobs }) => {
            let dir = pulp_tools::fleet::install::patch_dir(dir);
            let Some(installed) = pulp_tools::fleet::install::is_installed(&meta, &dir)? else {
                let removed = pulp_tools::fleet::install::remove_leftovers(&meta, &dir)?;
                if !json {
                    let leftovers = match removed {
                        0 => String::new(),
                        n => format!(" ({n} file(s) an interrupted install left removed)"),
                    };
                    println!("{} is not installed in {}{leftovers}", meta.display(), dir.display());
                }
                return Ok(ExitCode::SUCCESS);
            };
            let status = pulp_tools::fleet::install::on_every_process(&installed, true, &trigger_extra(json, jobs))?;
            pulp_tools::fleet::install::remove_files(&installed)?;
            if !json {
                println!("{} removed from {}", installed.display(), dir.display());
            }
            return Ok(ExitCode::from(status));
        }
        Cmd::Installed { meta, dir } => {
            let dir = pulp_tools::fleet::install::patch_dir(dir);
            return Ok(match pulp_tools::fleet::install::is_installed(&meta, &dir)? {
                Some(p) => {
                    println!("{}", p.display());
                    ExitCode::SUCCESS
                }
                None => {
                    println!("not installed in {}", dir.display());
                    ExitCode::from(1)
                }
            });
        }
        Cmd::Preload { state, runtime, file } => {
            use pulp_tools::fleet::preload::{self, Change};
            let shown = text::printable(&file.to_string_lossy()).into_owned();
            match state.as_str() {
                "on" => {
                    let runtime = match runtime {
                        Some(r) => std::path::absolute(&r).map_err(|e| format!("{}: {e}", r.display()))?,
                        None => pulp_tools::fleet::install::trigger_program().with_file_name("libpulp_rs.so"),
                    };
                    let changed = preload::enable(&runtime, &file)?;
                    let how = if changed == Change::Written { "now preloads" } else { "already preloads" };
                    println!("{shown} {how} {}: every program started from now on loads it", runtime.display());
                }
                "off" => {
                    let how = if preload::disable(&file)? == Change::Written {
                        "no longer preloads"
                    } else {
                        "does not preload"
                    };
                    println!("{shown} {how} the runtime (running processes keep it)");
                }
                _ => {
                    let entries = preload::entries(&file)?;
                    if entries.is_empty() {
                        println!("{shown} does not preload the runtime");
                        return Ok(ExitCode::from(1));
                    }
                    println!("{shown} preloads {}", entries.join(" "));
                }
            }
        }
        Cmd::SetPatchable { selection, state } => {
            let on = state == "on";
            let chosen = control::choose(&selection.pids, &selection.filter()?);
            if chosen.is_empty() {
                return Err("no process selected".into());
            }
            let what = if on { "accepts live patches" } else { "refuses live patches" };
            let mut failed = false;
            for c in chosen {
                let who = format!("PID {} ({})", c.pid, text::printable(&c.name));
                match control::set_patchable(c.pid, c.started, on) {
                    Ok(changed) => println!("{who} {what}{}", if changed { "" } else { " (it already did)" }),
                    Err(e) => {
                        eprintln!("pulp: error: {who}: {}", text::printable(&e.to_string()));
                        failed = true;
                    }
                }
            }
            return Ok(ExitCode::from(failed as u8));
        }
        Cmd::BuildPatch {
            src,
            diff,
            build,
            target,
            name,
            labels,
            out_dir,
            work_dir,
            allow_endless,
            debug_files,
            debug_dir,
            cc_wrapper,
            incremental,
        } => {
            let opts = pulp_tools::buildpatch::Options {
                src,
                diff,
                build,
                target,
                name,
                labels,
                out_dir,
                work_dir,
                debug: pulp_elf::DebugSearch { files: debug_files, root: debug_dir },
                allow_endless,
                wrapper: cc_wrapper,
                incremental,
            };
            let report = pulp_tools::buildpatch::run(&opts).map_err(|e| e.to_string())?;
            print!("{}", report.to_text());
        }
        Cmd::Livepatchable { file, json, debug_file, debug_dir } => {
            let search = pulp_elf::DebugSearch { files: debug_file.into_iter().collect(), root: debug_dir };
            let report = livepatchable::check_with(&file, &search).map_err(|e| e.to_string())?;
            if json {
                let text = serde_json::to_string_pretty(&livepatchable::to_json(&report)).map_err(|e| e.to_string())?;
                println!("{text}");
            } else {
                // The verdict, with its reason, is the last line: said once.
                print!("{}", livepatchable::to_text(&report));
            }
            if report.verdict().is_err() {
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
