//! What a new user meets (issue 8, section 2): every message here says what is true and
//! what to do, with its own exit status. Each test checks the text and the status.

use std::path::PathBuf;
use std::process::Stdio;

use libpulp_rs_tests::tool;
use libpulp_rs_tests::{apply, revert, trigger, wait_in_syscall, App, CSpec, Calc, Work};

const SYS_READ: u64 = 0;

/// The calc fixture and its application, in a work folder of their own.
struct CalcApp {
    work: Work,
    calc: Calc,
    app: PathBuf,
}

impl CalcApp {
    fn new() -> Self {
        let work = Work::new();
        let calc = Calc::build(&work);
        let app = calc.app(&work);
        CalcApp { work, calc, app }
    }

    fn meta(&self) -> PathBuf {
        self.calc.patch(&self.work)
    }
}

/// Usage errors have their own exit status (64), apart from refusals (1) and transitions
/// left running (2), and `--help` lists them all.
#[test]
fn usage_errors_have_their_own_status() {
    for args in
        [&["--bogus"][..], &["-p", "notanumber", "x.meta"], &["-p", "1"], &["--timeout", "nan", "-p", "1", "x.meta"]]
    {
        let out = trigger(args);
        assert_eq!(out.code, Some(64), "{args:?}: {out:#?}");
    }
    let help = trigger(&["--help"]);
    help.assert_ok("--help");
    for needle in ["0 done", "1 refused", "2 a transition", "3 the process exited", "64 a usage error"] {
        assert!(help.stdout.contains(needle), "--help does not list `{needle}`: {}", help.stdout);
    }
    let out = libpulp_rs_tests::pulp(&["frobnicate"]);
    assert_eq!(out.code, Some(64), "{out:#?}");
}

/// `--continue` takes no FILE.meta: given one, it is a usage error, not silently ignored.
#[test]
fn continue_refuses_a_meta_file() {
    let c = CalcApp::new();
    let meta = c.meta();
    let app = App::start(&c.app);
    let out = trigger(&["--continue", "-p", &app.pid().to_string(), meta.to_str().unwrap()]);
    assert_eq!(out.code, Some(64), "{out:#?}");
    assert!(out.stderr.contains("--continue") && out.stderr.contains("FILE.meta"), "{out:#?}");
}

/// Reverting a patch that is not applied (and applying one that is) is answered from the
/// runtime's status: no thread is stopped.
#[test]
fn nothing_to_do_stops_no_thread() {
    let c = CalcApp::new();
    let meta = c.meta();
    let mut app = App::start(&c.app);
    let pid = app.pid();
    let out = revert(pid, &meta);
    out.assert_ok("revert of a patch not applied");
    assert!(out.stdout.contains("is not applied") && out.stdout.contains("no thread stopped"), "{out:#?}");
    apply(pid, &meta).assert_ok("apply");
    let out = apply(pid, &meta);
    out.assert_ok("apply again");
    assert!(out.stdout.contains("already applied") && out.stdout.contains("no thread stopped"), "{out:#?}");
    assert_eq!(app.ask("call 1"), "calc(1)=1002");
}

/// A library rebuilt on disk while the process runs: the message says what the process
/// maps (the deleted file, with its build-id) and what the .meta records.
#[test]
fn library_rebuilt_on_disk() {
    let c = CalcApp::new();
    let mut app = App::start(&c.app);
    let pid = app.pid();
    // Rebuild libcalc.so at the same path (another build-id) and pack against it.
    let rebuilt = c.work.shared("calc", &CSpec::patchable(&["calc.c"]).define("CALC_VERSION", Some("9")));
    assert_eq!(rebuilt, c.calc.lib);
    let meta = c.meta();
    let out = apply(pid, &meta);
    assert_eq!(out.code, Some(1), "{out:#?}");
    let err = &out.stderr;
    assert!(err.contains("(deleted)") && err.contains("with build-id"), "says what is mapped: {err}");
    assert!(err.contains("replaced on disk after the process loaded it"), "says why: {err}");
    assert!(!err.contains("not mapped"), "{err}");
    assert_eq!(app.ask("call 1"), "calc(1)=2");
}

/// `--timeout 0`: the threads the time ran out on before they were examined are not
/// called "inside a target"; durations read the same everywhere.
#[test]
fn timeout_zero_says_what_is_true() {
    let work = Work::new();
    let uni = libpulp_rs_tests::Uni::build(&work);
    let meta = uni.patch(&work, &[("value", "value_new")]);
    let mut app = App::start(&uni.app);
    let pid = app.pid();
    let p = pid.to_string();
    let blocked = app.ask("block 0");
    let tid: u32 = blocked.rsplit_once("tid=").unwrap().1.parse().unwrap();
    wait_in_syscall(pid, tid, &[SYS_READ]);
    let out = trigger(&["--timeout", "0", "-p", &p, meta.to_str().unwrap()]);
    assert_eq!(out.code, Some(2), "{out:#?}");
    let err = &out.stderr;
    assert!(err.contains("did not complete within 0 µs"), "one duration format: {err}");
    assert!(err.contains("not examined yet when the time ran out"), "{err}");
    assert!(!err.contains("still inside a target"), "no thread was examined: {err}");
    // Roll it back: the blocked thread holds it, and nothing moved.
    trigger(&["--continue", "--reverse", "--timeout", "1", "-p", &p]).assert_ok("--continue --reverse");
    assert_eq!(app.ask("value"), "value=1");
    app.assert_alive();
}

/// A patch .so rebuilt at the same path after a revert, and packed again, is loaded anew
/// (the process gets the new code, not the copy it loaded before).
#[test]
fn patch_rebuilt_after_revert_loads_the_new_code() {
    let c = CalcApp::new();
    let meta = c.meta();
    let mut app = App::start(&c.app);
    let pid = app.pid();
    apply(pid, &meta).assert_ok("apply v1");
    assert_eq!(app.ask("call 1"), "calc(1)=1002");
    revert(pid, &meta).assert_ok("revert v1");
    std::fs::write(c.work.path().join("calc_fix2.c"), "int calc_fixed(int x) { return 2 * x + 2000; }\n").unwrap();
    let spec = CSpec { files: vec![c.work.path().join("calc_fix2.c")], ..CSpec::default() };
    let again = c.work.shared("calc_fix", &spec);
    assert_eq!(again, c.calc.fix);
    let meta = c.meta();
    apply(pid, &meta).assert_ok("apply v2");
    assert_eq!(app.ask("call 1"), "calc(1)=2002", "the rebuilt patch runs");
}

/// With another tracer attached, the refusal names it.
#[test]
fn traced_by_another_tracer() {
    let c = CalcApp::new();
    let meta = c.meta();
    let mut app = App::start(&c.app);
    let pid = app.pid();
    let mut tracer = tool("strace")
        .args(["-f", "-o", "/dev/null", "-p", &pid.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("strace is installed (./test.sh installs it)");
    // Wait until strace holds every thread.
    let start = std::time::Instant::now();
    while std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap().contains("TracerPid:\t0") {
        assert!(start.elapsed().as_secs() < 10, "strace did not attach");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = apply(pid, &meta);
    let _ = tracer.kill();
    let _ = tracer.wait();
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(
        out.stderr.contains(&format!("is traced by PID {}", tracer.id())) && out.stderr.contains("strace"),
        "{out:#?}"
    );
    assert_eq!(app.ask("call 1"), "calc(1)=2");
}
