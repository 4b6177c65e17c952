//! Helpers of the end-to-end tests: find the release artifacts, build C fixtures, run
//! applications under the preloaded runtime and talk to them line by line, call the tools.
//!
//! The tests drive real processes. They need `cargo build --release --workspace` first
//! (`libpulp_rs.so`, `pulp` and `pulp-trigger` in `target/release`).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use tempfile::TempDir;

/// How long to wait for one reply line of an application.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The artifacts the tests drive.
#[derive(Debug)]
pub struct Artifacts {
    /// `target/release`.
    pub dir: PathBuf,
    pub runtime: PathBuf,
    pub pulp: PathBuf,
    pub trigger: PathBuf,
}

/// The release artifacts, found through `CARGO_TARGET_DIR` or `CARGO_MANIFEST_DIR/target`.
/// Panics with what to do when one is missing.
pub fn artifacts() -> &'static Artifacts {
    static ARTIFACTS: OnceLock<Artifacts> = OnceLock::new();
    ARTIFACTS.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => manifest.join(dir), // join keeps an absolute path as it is
            None => manifest.join("target"),
        };
        let dir = target.join("release");
        let a = Artifacts {
            runtime: dir.join("libpulp_rs.so"),
            pulp: dir.join("pulp"),
            trigger: dir.join("pulp-trigger"),
            dir,
        };
        for p in [&a.runtime, &a.pulp, &a.trigger] {
            assert!(p.exists(), "{} is missing: run `cargo build --release --workspace` first", p.display());
        }
        a
    })
}

/// The Debian package that brings each external program the tests run (`./test.sh`
/// installs them).
const TOOL_PACKAGES: &[(&str, &str)] = &[
    ("cc", "gcc"),
    ("gcc", "gcc"),
    ("c++", "g++"),
    ("clang", "clang"),
    ("make", "make"),
    ("cmake", "cmake"),
    ("patch", "patch"),
    ("strace", "strace"),
    ("setpriv", "util-linux"),
    ("setcap", "libcap2-bin"),
    ("unshare", "util-linux"),
    ("mount", "mount"),
    ("readelf", "binutils"),
    ("objcopy", "binutils"),
    ("strip", "binutils"),
];

/// Panic, naming the program and its package, unless `name` is on `PATH` (or a path that
/// exists): a test whose tool is missing fails saying so, it never skips.
pub fn require_tool(name: &str) {
    let found = if name.contains('/') {
        Path::new(name).exists()
    } else {
        std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(name).is_file()))
    };
    if !found {
        let package = TOOL_PACKAGES.iter().find(|(t, _)| *t == name).map_or(name, |(_, p)| *p);
        panic!("`{name}` is not installed (not on PATH): ./test.sh installs it (Debian package {package})");
    }
}

/// A command running the external program `name`, which must be installed
/// ([`require_tool`]).
pub fn tool(name: &str) -> Command {
    require_tool(name);
    Command::new(name)
}

/// A C source under `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    assert!(p.exists(), "no fixture {}", p.display());
    p
}

/// One C object to build: sources, defines, libraries to link (from the work folder).
#[derive(Clone, Debug, Default)]
pub struct CSpec {
    pub files: Vec<PathBuf>,
    pub defines: Vec<(String, Option<String>)>,
    /// Built with the NOP pad (`-fpatchable-function-entry=16,14`).
    pub patchable: bool,
    /// Libraries (`-lNAME`) found in, and run from (rpath), the work folder.
    pub libs: Vec<String>,
    pub threads: bool,
    /// Extra compiler/linker flags, passed after the built-in ones.
    pub flags: Vec<String>,
    /// The compiler, when not `$CC`/`cc` (`c++` for C++ fixtures).
    pub compiler: Option<String>,
    /// Keep the entry NOPs as the compiler wrote them (gcc's `90 90`): no cc-build
    /// canonicalisation to `66 90`. Only matters with `patchable`.
    pub raw_entries: bool,
}

impl CSpec {
    /// A live-patchable object built from fixtures.
    pub fn patchable(fixtures: &[&str]) -> Self {
        CSpec { files: fixtures.iter().map(|f| fixture(f)).collect(), patchable: true, ..Default::default() }
    }

    /// An object without pad (applications, patch objects) built from fixtures.
    pub fn plain(fixtures: &[&str]) -> Self {
        CSpec { patchable: false, ..Self::patchable(fixtures) }
    }

    pub fn define(mut self, key: &str, value: Option<&str>) -> Self {
        self.defines.push((key.into(), value.map(Into::into)));
        self
    }

    pub fn link(mut self, lib: &str) -> Self {
        self.libs.push(lib.into());
        self
    }

    pub fn threads(mut self) -> Self {
        self.threads = true;
        self
    }

    /// An extra compiler/linker flag (`-mavx2`, `-ldl`, ...).
    pub fn flag(mut self, flag: &str) -> Self {
        self.flags.push(flag.into());
        self
    }

    /// Build with this compiler (`gcc`, `clang`, ...) instead of `$CC`/`cc`.
    pub fn compiler(mut self, cc: &str) -> Self {
        self.compiler = Some(cc.into());
        self
    }

    /// Keep gcc's `90 90` entry NOPs (`Build::canonicalise(false)`).
    pub fn raw_entries(mut self) -> Self {
        self.raw_entries = true;
        self
    }

    /// Build with `c++` (g++): C++ sources, linked with the C++ runtime.
    pub fn cxx(mut self) -> Self {
        self.compiler = Some("c++".into());
        self
    }

    fn builder(&self, out: &Path) -> pulp_cc_build::Build {
        let mut b = pulp_cc_build::Build::new();
        let cc = self.compiler.clone().or_else(|| std::env::var("CC").ok()).unwrap_or_else(|| "cc".into());
        require_tool(cc.split_whitespace().next().unwrap_or("cc"));
        if let Some(cc) = &self.compiler {
            b.compiler(cc);
        }
        b.out_dir(out)
            .opt_level(2)
            .patchable(self.patchable)
            .canonicalise(!self.raw_entries)
            .threads(self.threads)
            .include(fixture(""));
        for f in &self.files {
            b.file(f);
        }
        for (k, v) in &self.defines {
            b.define(k, v.as_deref());
        }
        for f in &self.flags {
            b.flag(f);
        }
        if !self.libs.is_empty() {
            b.link_dir(out).rpath(out);
        }
        for l in &self.libs {
            b.link_lib(l);
        }
        b
    }
}

/// A test's private work folder: fixtures are built and `.dsc`/`.meta` files written here.
pub struct Work {
    pub dir: TempDir,
}

impl Default for Work {
    fn default() -> Self {
        Self::new()
    }
}

impl Work {
    pub fn new() -> Self {
        artifacts(); // fail early and clearly when the tools are not built
        Work { dir: tempfile::Builder::new().prefix("pulp-test").tempdir().expect("cannot create a temporary folder") }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Builds `lib{name}.so` into the work folder.
    pub fn shared(&self, name: &str, spec: &CSpec) -> PathBuf {
        spec.builder(self.path())
            .shared(name)
            .unwrap_or_else(|e| panic!("building lib{name}.so from {:?}: {e}", spec.files))
    }

    /// Builds the executable `name` into the work folder.
    pub fn executable(&self, name: &str, spec: &CSpec) -> PathBuf {
        spec.builder(self.path())
            .executable(name)
            .unwrap_or_else(|e| panic!("building {name} from {:?}: {e}", spec.files))
    }

    /// Writes `name.dsc`: the patch object, then each target with its `old:new` pairs.
    pub fn dsc(&self, name: &str, patch: &Path, targets: &[(&Path, &[(&str, &str)])]) -> PathBuf {
        let mut text = format!("{}\n!test {name}\n", patch.display());
        for (target, funcs) in targets {
            text.push_str(&format!("@{}\n", target.display()));
            for (old, new) in *funcs {
                text.push_str(&format!("{old}:{new}\n"));
            }
        }
        let path = self.path().join(format!("{name}.dsc"));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Like [`Work::patch`], with `%option` lines (`immediate`) in the `.dsc`.
    pub fn patch_with_options(
        &self,
        name: &str,
        patch: &Path,
        targets: &[(&Path, &[(&str, &str)])],
        options: &[&str],
    ) -> PathBuf {
        let dsc = self.dsc(name, patch, targets);
        let mut text = std::fs::read_to_string(&dsc).unwrap();
        for o in options {
            text.push_str(&format!("%{o}\n"));
        }
        std::fs::write(&dsc, text).unwrap();
        let meta = self.path().join(format!("{name}.meta"));
        pack(&dsc, &meta).assert_ok("pulp pack");
        meta
    }

    /// Writes and packs `name.dsc` into `name.meta`, asserting that packing succeeds.
    pub fn patch(&self, name: &str, patch: &Path, targets: &[(&Path, &[(&str, &str)])]) -> PathBuf {
        let dsc = self.dsc(name, patch, targets);
        let meta = self.path().join(format!("{name}.meta"));
        pack(&dsc, &meta).assert_ok("pulp pack");
        meta
    }
}

/// Exit code and output of one tool run.
#[derive(Debug, Clone)]
pub struct ToolOutput {
    pub command: String,
    /// `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl ToolOutput {
    pub fn assert_ok(&self, what: &str) -> &Self {
        assert_eq!(self.code, Some(0), "{what} failed: {self:#?}");
        self
    }

    /// Asserts a refusal: non-zero exit, no crash, one `pulp-trigger: error:` line on stderr
    /// mentioning at least one of `keywords` (case-insensitive).
    pub fn assert_refused(&self, keywords: &[&str]) -> &Self {
        assert!(matches!(self.code, Some(c) if c != 0), "expected a refusal (non-zero exit), got {self:#?}");
        let err = self.stderr.trim();
        println!("refused as expected: {err}");
        assert!(
            err.starts_with("pulp-trigger: error:") || err.starts_with("pulp: error:"),
            "expected an `error:` message on stderr, got {self:#?}"
        );
        assert_eq!(err.lines().count(), 1, "expected one line on stderr, got {self:#?}");
        let lower = err.to_lowercase();
        assert!(
            keywords.is_empty() || keywords.iter().any(|k| lower.contains(&k.to_lowercase())),
            "expected the message to mention one of {keywords:?}, got {err:?}"
        );
        self
    }
}

/// Runs a command to completion and collects its output.
pub fn run(cmd: &mut Command) -> ToolOutput {
    let command = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {command}: {e}"));
    ToolOutput {
        command,
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `pulp pack DSC -o META`.
pub fn pack(dsc: &Path, meta: &Path) -> ToolOutput {
    run(Command::new(&artifacts().pulp).arg("pack").arg(dsc).arg("-o").arg(meta))
}

/// `pulp-trigger -p PID META`.
pub fn apply(pid: u32, meta: &Path) -> ToolOutput {
    run(&mut trigger_command(pid, meta, false))
}

/// `pulp-trigger --revert -p PID META`.
pub fn revert(pid: u32, meta: &Path) -> ToolOutput {
    run(&mut trigger_command(pid, meta, true))
}

/// The `pulp-trigger` command line, for callers that run it differently (other user, ...).
pub fn trigger_command(pid: u32, meta: &Path, revert: bool) -> Command {
    let mut cmd = Command::new(&artifacts().trigger);
    if revert {
        cmd.arg("--revert");
    }
    cmd.arg("-p").arg(pid.to_string()).arg(meta);
    cmd
}

/// `pulp-trigger ARGS...` with any arguments (`--timeout 0.5`, `--continue`, ...).
pub fn trigger(args: &[&str]) -> ToolOutput {
    run(Command::new(&artifacts().trigger).args(args))
}

/// `pulp ARGS...` (`patches -p PID`, ...).
pub fn pulp(args: &[&str]) -> ToolOutput {
    run(Command::new(&artifacts().pulp).args(args))
}

/// Waits until thread `tid` of `pid` sits in one of the system calls `nrs` (numbers, as
/// `/proc/PID/task/TID/syscall` shows them), polling every millisecond; panics after
/// [`REPLY_TIMEOUT`] with what the thread was doing.
pub fn wait_in_syscall(pid: u32, tid: u32, nrs: &[u64]) {
    let path = format!("/proc/{pid}/task/{tid}/syscall");
    let start = std::time::Instant::now();
    let mut last = String::new();
    while start.elapsed() < REPLY_TIMEOUT {
        last = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some(Ok(nr)) = last.split_whitespace().next().map(str::parse::<u64>) {
            if nrs.contains(&nr) {
                return;
            }
        }
        thread::sleep(Duration::from_millis(1));
    }
    panic!("thread {tid} of {pid} never blocked in a system call of {nrs:?}; last seen: {last:?}");
}

/// Whether a process exists (`kill(pid, 0)`; a zombie counts as existing).
/// How many patch objects process `pid` has loaded from a tool's or the patch directory's
/// bytes: one memory file (`/memfd:pulp:NAME`) per loaded copy.
pub fn patch_object_copies(pid: u32) -> usize {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut inodes: Vec<&str> =
        maps.lines().filter(|l| l.contains("/memfd:pulp:")).filter_map(|l| l.split_whitespace().nth(4)).collect();
    inodes.sort();
    inodes.dedup();
    inodes.len()
}

pub fn pid_exists(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission; it delivers nothing.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

/// An application running under test. Writes commands to its stdin and reads its stdout
/// line by line through a reader thread. Killed on drop.
pub struct App {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    name: String,
}

/// `exe args` with the runtime preloaded when `preload`, and without any preload otherwise.
pub fn program(exe: &Path, preload: bool, args: &[&str]) -> Command {
    let mut cmd = Command::new(exe);
    cmd.args(args);
    if preload {
        cmd.env("LD_PRELOAD", &artifacts().runtime);
    } else {
        cmd.env_remove("LD_PRELOAD");
    }
    cmd
}

impl App {
    /// Starts `exe` with the runtime preloaded and waits for its `ready` line.
    pub fn start(exe: &Path) -> App {
        Self::start_with(exe, true, &[])
    }

    /// Starts `exe` (with the runtime preloaded when `preload`) and waits for `ready`.
    pub fn start_with(exe: &Path, preload: bool, args: &[&str]) -> App {
        Self::start_command(program(exe, preload, args), &exe.file_name().unwrap().to_string_lossy())
    }

    /// Starts `cmd` as it is (a wrapper such as `unshare` or `chroot` that ends by
    /// exec'ing the application, so the PID is the application's) and waits for `ready`.
    /// `name` is for messages.
    pub fn start_command(mut cmd: Command, name: &str) -> App {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = spawn_retrying(&mut cmd).unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let err = child.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let mut app = App { stdin: child.stdin.take(), child, lines, stderr, name: name.to_string() };
        let first = app.recv();
        assert_eq!(first, "ready", "{} did not start as expected", app.name);
        app
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends one command line.
    pub fn send(&mut self, line: &str) {
        let name = &self.name;
        let stdin = self.stdin.as_mut().expect("stdin was closed");
        writeln!(stdin, "{line}").and_then(|_| stdin.flush()).unwrap_or_else(|e| panic!("cannot write to {name}: {e}"));
    }

    /// Writes raw bytes to the app's stdin (no newline added).
    pub fn write_raw(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin was closed");
        stdin.write_all(bytes).and_then(|_| stdin.flush()).unwrap();
    }

    /// The next line of output; panics after [`REPLY_TIMEOUT`].
    pub fn recv(&mut self) -> String {
        match self.lines.recv_timeout(REPLY_TIMEOUT) {
            Ok(line) => line,
            Err(e) => {
                let state = match self.child.try_wait() {
                    Ok(Some(status)) => format!("exited: {status}"),
                    _ => "still running".into(),
                };
                thread::sleep(Duration::from_millis(100)); // let the stderr reader catch up
                panic!(
                    "no reply from {} ({}; {}); its stderr: {:?}",
                    self.name,
                    match e {
                        RecvTimeoutError::Timeout => "timeout",
                        RecvTimeoutError::Disconnected => "stdout closed",
                    },
                    state,
                    self.stderr.lock().unwrap()
                )
            }
        }
    }

    /// Sends a command and waits up to `limit` for its reply; `None` when none came (the
    /// process may be dead or hung: the caller decides what that means).
    pub fn try_ask(&mut self, line: &str, limit: Duration) -> Option<String> {
        let stdin = self.stdin.as_mut()?;
        writeln!(stdin, "{line}").and_then(|_| stdin.flush()).ok()?;
        self.lines.recv_timeout(limit).ok()
    }

    /// Sends a command and returns its one-line reply.
    pub fn ask(&mut self, line: &str) -> String {
        self.send(line);
        self.recv()
    }

    /// Whether the process is still running (not exited, not a zombie).
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Asserts that the process is alive, with its stderr in the message if not.
    pub fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            thread::sleep(Duration::from_millis(100));
            panic!("{} died ({status}); its stderr: {:?}", self.name, self.stderr.lock().unwrap());
        }
    }

    /// What the app wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Its stderr once it holds `needle` (or after [`REPLY_TIMEOUT`]): stderr is read by a
    /// thread of its own, so what the program wrote there before answering on stdout may
    /// not have been read yet.
    pub fn stderr_with(&self, needle: &str) -> String {
        let until = std::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            let now = self.stderr();
            if now.contains(needle) || std::time::Instant::now() >= until {
                return now;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The functions the universe tests replace in `uni_lib.c` (with `uni_fix.c`).
pub const UNI_FUNCS: &[(&str, &str)] =
    &[("value", "value_new"), ("a", "a_new"), ("b", "b_new"), ("wait_and_get", "wait_and_get_new")];

/// The calc fixture: the live-patchable `libcalc.so` (`calc.c`: `calc(x) = 2x`) and its
/// patch object (`calc_fix.c`: `calc_fixed(x) = 2x + 1000`). Applications link it with
/// `.link("calc")`.
pub struct Calc {
    pub lib: PathBuf,
    pub fix: PathBuf,
}

impl Calc {
    pub fn build(work: &Work) -> Calc {
        let lib = work.shared("calc", &CSpec::patchable(&["calc.c"]));
        let fix = work.shared("calc_fix", &CSpec::plain(&["calc_fix.c"]));
        Calc { lib, fix }
    }

    /// The application `calc_app.c` linked with it (`call N` answers `calc(N)=…`).
    pub fn app(&self, work: &Work) -> PathBuf {
        work.executable("calc_app", &CSpec::plain(&["calc_app.c"]).link("calc"))
    }

    /// The patch (transition) replacing `calc` with `calc_fixed`.
    pub fn patch(&self, work: &Work) -> PathBuf {
        work.patch("calc", &self.fix, &[(&self.lib, &[("calc", "calc_fixed")])])
    }
}

/// The universe fixture: the live-patchable `libuni.so` (`uni_lib.c`, which may call
/// `pulp_quiescent()`), its patch object (`uni_fix.c`) and the application that drives
/// it (`uni_app.c`).
pub struct Uni {
    pub lib: PathBuf,
    pub fix: PathBuf,
    pub app: PathBuf,
}

impl Uni {
    pub fn build(work: &Work) -> Uni {
        let include = format!("-I{}/runtime/include", env!("CARGO_MANIFEST_DIR"));
        let lib = work.shared("uni", &CSpec::patchable(&["uni_lib.c"]).flag(&include));
        let fix = work.shared("uni_fix", &CSpec::plain(&["uni_fix.c"]));
        let app = work.executable("uni_app", &CSpec::plain(&["uni_app.c"]).link("uni").threads());
        Uni { lib, fix, app }
    }

    /// A patch (transition) of `funcs` of `libuni.so`.
    pub fn patch(&self, work: &Work, funcs: &[(&str, &str)]) -> PathBuf {
        work.patch("uni", &self.fix, &[(&self.lib, funcs)])
    }
}

/// `pulp patches -p PID --json`, parsed.
pub fn patches_json(pid: u32) -> serde_json::Value {
    let out = pulp(&["patches", "-p", &pid.to_string(), "--json"]);
    out.assert_ok("pulp patches --json");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("pulp patches --json: {e}: {out:#?}"))
}

/// The two-library fixture (`one.c`, `two.c`, their fixes and `two_app.c`): the
/// application and a patch for each library.
pub fn two_libraries_fixture(work: &Work) -> (PathBuf, PathBuf, PathBuf) {
    let one = work.shared("one", &CSpec::patchable(&["one.c"]));
    let two = work.shared("two", &CSpec::patchable(&["two.c"]));
    let one_fix = work.shared("one_fix", &CSpec::plain(&["one_fix.c"]));
    let two_fix = work.shared("two_fix", &CSpec::plain(&["two_fix.c"]));
    let app = work.executable("two_app", &CSpec::plain(&["two_app.c"]).link("one").link("two"));
    let p1 = work.patch("one", &one_fix, &[(&one, &[("one", "one_new")])]);
    let p2 = work.patch("two", &two_fix, &[(&two, &[("two", "two_new")])]);
    (app, p1, p2)
}

/// A number no other test run on this machine uses at the same time (for build-ids and
/// names of its own, so that a search of the machine finds only a test's own processes).
pub fn unique() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    (std::process::id().wrapping_mul(7919) ^ nanos ^ N.fetch_add(1, Ordering::Relaxed) << 20) % 1_000_000_000
}

/// A tool run under a time limit: its output, how long it took, and whether it had to be
/// killed at the limit.
#[derive(Debug)]
pub struct Limited {
    pub out: ToolOutput,
    pub took: Duration,
    pub timed_out: bool,
}

/// Runs `cmd` to completion, or kills it (SIGKILL) after `limit`: a test that must
/// never hang on a tool that hangs.
pub fn run_limited(cmd: &mut Command, limit: Duration) -> Limited {
    let command = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let start = std::time::Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command}: {e}"));
    let collect = |r: Option<Box<dyn std::io::Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let stdout = collect(child.stdout.take().map(|r| Box::new(r) as Box<dyn std::io::Read + Send>));
    let stderr = collect(child.stderr.take().map(|r| Box::new(r) as Box<dyn std::io::Read + Send>));
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for a tool") {
            break status;
        }
        if start.elapsed() > limit {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("waiting for a killed tool");
        }
        thread::sleep(Duration::from_millis(2));
    };
    let took = start.elapsed();
    let out =
        ToolOutput { command, code: status.code(), stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() };
    Limited { out, took, timed_out }
}

/// What `/proc/PID/task/TID/status` says about one thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadStatus {
    pub tid: u32,
    /// `State:`'s letter (`S`, `R`, `t`, `T`, ...).
    pub state: char,
    pub tracer: u32,
    /// `SigBlk:`, the blocked-signal mask as the kernel prints it.
    pub blocked: String,
}

/// Every thread of `pid` as `/proc` shows it now (threads that vanish meanwhile are left out).
pub fn thread_statuses(pid: u32) -> Vec<ThreadStatus> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else { continue };
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")) else { continue };
        let field = |name: &str| {
            text.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string()).unwrap_or_default()
        };
        out.push(ThreadStatus {
            tid,
            state: field("State:").chars().next().unwrap_or('?'),
            tracer: field("TracerPid:").parse().unwrap_or(u32::MAX),
            blocked: field("SigBlk:"),
        });
    }
    out.sort_by_key(|t| t.tid);
    out
}

/// The mixed-versions fixture (`hostile_mix_lib.c`, `hostile_mix_fix.c`,
/// `hostile_mix_app.c`): `g(x) = h(x) + k(x)` is `x` in either version, so a thread that
/// sees half a patch computes a wrong `g`.
pub struct Mix {
    pub lib: PathBuf,
    pub fix: PathBuf,
    pub app: PathBuf,
    /// Names of the filler functions built into the library and the fix (`filler_N`,
    /// replaced by `filler_N_new`), in order.
    pub fillers: Vec<String>,
}

/// The functions of the mixed-versions patch.
pub const MIX_FUNCS: &[(&str, &str)] = &[("f", "f_new"), ("h", "h_new"), ("k", "k_new")];

impl Mix {
    /// Builds the fixture; with `fillers` > 0, that many more functions are generated into
    /// the library (between `h` and `k`) and the fix (for a patch whose entries take long
    /// to write).
    pub fn build(work: &Work, fillers: usize) -> Mix {
        let mut lib_spec = CSpec::patchable(&["hostile_mix_lib.c"]);
        let mut fix_spec = CSpec::plain(&["hostile_mix_fix.c"]);
        let names: Vec<String> = (0..fillers).map(|i| format!("filler_{i}")).collect();
        if fillers > 0 {
            let (mut old, mut new) = (String::new(), String::new());
            for n in &names {
                old.push_str(&format!("int {n}(int x) {{ return x * 3 + 1; }}\n"));
                new.push_str(&format!("int {n}_new(int x) {{ return x * 3 + 2; }}\n"));
            }
            let (old_c, new_c) = (work.path().join("fillers.c"), work.path().join("fillers_new.c"));
            std::fs::write(&old_c, old).unwrap();
            std::fs::write(&new_c, new).unwrap();
            lib_spec = lib_spec.define("MIX_FILLERS", Some(&format!("\"{}\"", old_c.display())));
            fix_spec.files.push(new_c);
        }
        let lib = work.shared("mix", &lib_spec);
        let fix = work.shared("mix_fix", &fix_spec);
        let app = work.executable("mix_app", &CSpec::plain(&["hostile_mix_app.c"]).link("mix").threads().flag("-ldl"));
        Mix { lib, fix, app, fillers: names }
    }

    /// The patch of `f`, `h`, `k` (with the fillers between `h` and `k`), as `name.meta`.
    pub fn patch(&self, work: &Work, name: &str, options: &[&str]) -> PathBuf {
        let fill: Vec<(String, String)> = self.fillers.iter().map(|n| (n.clone(), format!("{n}_new"))).collect();
        let mut funcs: Vec<(&str, &str)> = vec![MIX_FUNCS[0], MIX_FUNCS[1]];
        funcs.extend(fill.iter().map(|(o, n)| (o.as_str(), n.as_str())));
        funcs.push(MIX_FUNCS[2]);
        work.patch_with_options(name, &self.fix, &[(&self.lib, &funcs)], options)
    }
}

/// What `probe` answers before and after the mixed-versions patch.
pub const MIX_OLD: &str = "f=1 h=1 k=0 g=1";
pub const MIX_NEW: &str = "f=2 h=101 k=-100 g=1";

/// `stats` of the mixed-versions app: (iterations, bad g, old f, new f, odd f).
pub fn mix_stats(app: &mut App) -> (u64, u64, u64, u64, u64) {
    let line = app.ask("stats");
    let v: Vec<u64> = line
        .split_whitespace()
        .map(|kv| kv.split_once('=').and_then(|(_, v)| v.parse().ok()).unwrap_or_else(|| panic!("{line}")))
        .collect();
    assert_eq!(v.len(), 5, "{line}");
    (v[0], v[1], v[2], v[3], v[4])
}

/// `<package>/<subdir>` of a crate's sources, found through `cargo metadata` (the crates
/// are dev-dependencies of the root package that are never built).
pub fn crate_sources(package: &str, subdir: &str) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let out = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(&manifest)
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo metadata: {e}"));
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata: not JSON");
    let pkg = meta["packages"]
        .as_array()
        .expect("cargo metadata: no packages")
        .iter()
        .find(|p| p["name"] == package)
        .unwrap_or_else(|| panic!("{package} is not in `cargo metadata` (a dev-dependency of the root package)"));
    let dir = Path::new(pkg["manifest_path"].as_str().unwrap()).parent().unwrap().join(subdir);
    assert!(dir.is_dir(), "no sources in {}", dir.display());
    dir
}

/// `cmd.spawn()`, again for up to a second while the program is "text file busy": a test
/// that has just written an executable races another test thread's fork, whose child holds
/// the still-open file until it execs (the classic ETXTBSY of parallel tests).
pub fn spawn_retrying(cmd: &mut Command) -> std::io::Result<std::process::Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                tries += 1;
                thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}
