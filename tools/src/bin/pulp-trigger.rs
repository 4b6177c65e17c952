//! `pulp-trigger -p PID FILE.meta`: apply a live patch to a running process;
//! `--revert` takes it back; `--continue` completes a transition left running.
//! One summary line on success; on refusal one error line and the process untouched.
//!
//! With several `-p`, `--all`, `--name` or `--user` it works on many processes in
//! parallel (`--jobs`): one line per process, then a summary line; `--json` prints one
//! JSON object per line instead. Exit statuses: see `pulp_tools::apply::report::EXIT_STATUSES`.

use clap::Parser;
use pulp_meta::PatchMeta;
use pulp_tools::apply::patchfile;
use pulp_tools::apply::report::{self, EXIT_STATUSES, EXIT_USAGE};
use pulp_tools::apply::{Mode, Options, PatchObjects};
use pulp_tools::error::TriggerError;
use pulp_tools::fleet::select::{self, Filter, Selection};
use pulp_tools::fleet::{self, Examined, Interruptions, Operation, ProcessResult, Summary};
use pulp_tools::text;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "pulp-trigger",
    version,
    about = "Apply (or revert) a live patch in running processes",
    after_help = EXIT_STATUSES
)]
struct Cli {
    #[command(flatten)]
    selection: Selection,
    /// How many processes to work on at once (default: the number of CPUs).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    jobs: Option<u16>,
    /// Print one JSON object per process and a summary object, one per line.
    #[arg(long)]
    json: bool,
    /// A search that selects no process is not an error (exit 0 instead of 1): for a
    /// patch that is also installed for the processes that start later (`pulp install`).
    #[arg(long)]
    allow_none: bool,
    /// Make every check and say what would be done; stop no thread, change nothing.
    #[arg(long, conflicts_with_all = ["resume", "revert_all"])]
    dry_run: bool,
    /// Revert the patch instead of applying it.
    #[arg(long, conflicts_with = "resume")]
    revert: bool,
    /// Revert every patch of TARGET (a path the process maps or a symlink to it, its
    /// soname, its file name, or its build-id) in one transition; takes no FILE.meta.
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
    /// Wait as long as the transition takes (`--timeout inf`): exit 0 once every thread
    /// has left the old code, for a script that wants to know the patch is complete.
    #[arg(long, conflicts_with_all = ["timeout", "force", "reverse"])]
    wait: bool,
    /// On timeout, switch the threads still inside anyway.
    #[arg(long, conflicts_with = "reverse")]
    force: bool,
    /// On timeout, roll the patch back through the same steps.
    #[arg(long)]
    reverse: bool,
    /// Run the calls injected into the process with its seccomp filter suspended in the
    /// borrowed thread (PTRACE_O_SUSPEND_SECCOMP; needs CAP_SYS_ADMIN), for a filter that
    /// forbids a system call loading the patch makes (memfd_create, mmap, ...): without it
    /// such a filter refuses the load, or kills the process if that is what it does.
    #[arg(long)]
    disable_seccomp: bool,
    /// Patch metadata written by `pulp pack`.
    #[arg(value_name = "FILE.meta", required_unless_present_any = ["resume", "revert_all"])]
    meta: Option<PathBuf>,
}

impl Cli {
    /// Whether processes are searched for (rather than only given with -p).
    fn searching(&self) -> bool {
        self.selection.pids.is_empty()
    }

    /// One process given with -p and nothing else asked: the output of a single run.
    fn single(&self) -> bool {
        self.selection.pids.len() == 1 && self.selection.name.is_none() && self.selection.user.is_none() && !self.json
    }
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
/// since whoever can write it decides what is loaded. `owners`: who may own it.
fn load(path: &Path, owners: &[u32]) -> Result<(PatchMeta, Vec<u8>), TriggerError> {
    let abs = std::path::absolute(path).map_err(|source| TriggerError::ReadFile { path: path.into(), source })?;
    let bytes = patchfile::read_trusted_meta(&abs, owners)?;
    let meta = PatchMeta::decode(&bytes).map_err(|source| TriggerError::Meta { path: path.into(), source })?;
    Ok((meta, bytes))
}

/// Who may own the `.meta`: root, the user running this tool and, when one process is
/// given, its owner (as for its patch object). With several processes the `.meta` is
/// read once, so only owners every process trusts qualify.
fn meta_owners(cli: &Cli) -> Vec<u32> {
    match cli.selection.pids.as_slice() {
        [pid] if cli.selection.name.is_none() && cli.selection.user.is_none() => patchfile::trusted_owners(*pid),
        _ => patchfile::tool_owners(),
    }
}

fn main() -> ExitCode {
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
    // keep their priority. Worker threads inherit it.
    // SAFETY: setpriority takes plain integers.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -20) };
    if cli.disable_seccomp && !pulp_tools::inject::ptrace::may_suspend_seccomp() {
        // Refused before any process is looked at: the kernel would refuse every seize.
        eprintln!("pulp-trigger: error: --disable-seccomp needs CAP_SYS_ADMIN (run it as root); nothing was done");
        return ExitCode::from(report::EXIT_REFUSED);
    }
    // Tracee stops are waited for by their SIGCHLD, in this thread and every worker.
    pulp_tools::inject::ptrace::hold_child_signals();
    let opts = Options {
        timeout: if cli.wait { Duration::MAX } else { cli.timeout },
        force: cli.force,
        reverse: cli.reverse,
        dry_run: cli.dry_run,
        started: None,
        disable_seccomp: cli.disable_seccomp,
    };
    let loaded = match &cli.meta {
        Some(path) if cli.revert_all.is_none() => match load(path, &meta_owners(&cli)) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("pulp-trigger: error: {}", text::printable(&e.to_string()));
                return ExitCode::from(report::exit_status(&e));
            }
        },
        _ => None,
    };
    let op = match (&cli.revert_all, &loaded) {
        (Some(target), _) => Operation::RevertAll { target },
        (None, Some((meta, bytes))) => {
            Operation::Patch { meta, bytes, mode: if cli.revert { Mode::Revert } else { Mode::Apply } }
        }
        (None, None) => Operation::Resume,
    };
    if cli.single() {
        return single(&op, cli.selection.pids[0], opts);
    }
    let filter = match cli.selection.filter() {
        Ok(f) => f,
        Err(why) => {
            eprintln!("pulp-trigger: error: {why}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    many(&cli, &op, &filter, opts)
}

/// One process: the line of its outcome, or its error, and its own exit status.
fn single(op: &Operation, pid: i32, opts: Options) -> ExitCode {
    // Like any filter, end quietly when the reader of our output goes away (`| head`).
    // SAFETY: resetting a signal disposition to its default has no memory effects.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let r = fleet::perform(op, pid, select::command_name(pid), opts, &PatchObjects::default(), false);
    match &r.error {
        None => println!("{}", r.message),
        Some(text) if r.exit_status == report::EXIT_REFUSED => eprintln!("pulp-trigger: error: {text}"),
        Some(text) => eprintln!("pulp-trigger: {text}"),
    }
    ExitCode::from(r.exit_status)
}

/// Many processes: a line (or JSON object) each as it is done, then the summary.
fn many(cli: &Cli, op: &Operation, filter: &Filter, opts: Options) -> ExitCode {
    // The run goes on when the reader of our output goes away: a fleet operation is not
    // abandoned half-way because of `| head`; lines that cannot be written are dropped.
    // SAFETY: ignoring a signal has no memory effects.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let mut interruptions = Interruptions::hold();
    let jobs = cli.jobs.map(usize::from).unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let objects = PatchObjects::default();
    let mut summary = Summary::default();
    let json = cli.json;
    let show = |r: &ProcessResult| {
        if json {
            let _ = writeln!(std::io::stdout().lock(), "{}", r.to_json());
        } else if r.error.is_none() {
            let _ = writeln!(std::io::stdout().lock(), "{}", r.message);
        } else if r.kind == fleet::Kind::Refused {
            let _ = writeln!(std::io::stderr().lock(), "pulp-trigger: error: {}", r.message);
        } else {
            let _ = writeln!(std::io::stderr().lock(), "pulp-trigger: {}", r.message);
        }
    };
    let not_attempted = if cli.searching() {
        let candidates = select::processes(filter);
        fleet::pool(
            &candidates,
            jobs,
            |c| fleet::examine_and_perform(op, c, opts, &objects),
            |e| match e {
                Examined::Result(r) => {
                    show(&r);
                    summary.add(&r);
                }
                Examined::Skipped(s) => summary.skip(s),
                Examined::Ignored => {}
            },
            |stop| interruptions.poll(stop),
        )
    } else {
        let given = select::given(&cli.selection.pids, filter);
        fleet::pool(
            &given,
            jobs,
            |c| fleet::perform(op, c.pid, c.name.clone(), Options { started: c.started, ..opts }, &objects, false),
            |r| {
                show(&r);
                summary.add(&r);
            },
            |stop| interruptions.poll(stop),
        )
    };
    summary.not_attempted = not_attempted;
    summary.allow_none = cli.allow_none;
    summary.interrupted = interruptions.received;
    let subject = subject(op, cli.dry_run);
    let mut out = std::io::stdout().lock();
    if json {
        let _ = writeln!(out, "{}", summary.to_json(op, &subject, cli.dry_run));
    } else {
        let _ = writeln!(out, "{}", summary.to_text(&subject));
    }
    ExitCode::from(summary.exit_status())
}

/// What the summary line is about.
fn subject(op: &Operation, dry_run: bool) -> String {
    let what = match op {
        Operation::Patch { meta, .. } => report::describe(meta),
        Operation::RevertAll { target } => format!("every patch of {}", text::printable(target)),
        Operation::Resume => "transitions in progress".into(),
    };
    if dry_run {
        format!("{what} (dry run)")
    } else {
        what
    }
}
