//! A PID reused between the search and the work (issue 20): `pulp-trigger --all --name
//! calc_app` finds the application, which exits while the tool is about to examine it;
//! another program gets its PID — one that maps the same library with the runtime but
//! that the search did not select (another name). The tool must say the process exited
//! and leave the newcomer alone: not patched, not traced.
//!
//! The tool is held at the right moment by strace (a 3 s delay on its first `open` of
//! `/proc/PID/mem`), and the PID is handed to the newcomer through
//! `/proc/sys/kernel/ns_last_pid` (retried if another process takes it first).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use libpulp_rs_tests::{artifacts, tool, App, Calc, Work};

const OLD: &str = "calc(5)=10";

/// Start `exe` under the runtime as PID `pid`, if the kernel gives it that one.
fn start_as(exe: &std::path::Path, pid: u32) -> Option<App> {
    for _ in 0..200 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", pid - 1)).expect("ns_last_pid (needs root)");
        let mut cmd = Command::new(exe);
        cmd.env("LD_PRELOAD", &artifacts().runtime);
        let app = App::start_command(cmd, "newcomer");
        if app.pid() == pid {
            return Some(app);
        }
    }
    None
}

/// The tool held at its `at`-th open of the process's memory: 1 while it examines it for
/// the search (the PID then names a process it never selected: no process is selected,
/// which is an error, exit 1),
/// 2 when it starts working on it (the process it selected exited: exit 3).
fn reused_at(at: u32, exit_status: i32, says: &str) {
    let work = Work::new();
    let calc = Calc::build(&work);
    let app = calc.app(&work);
    // The newcomer: the same program under another name, so the search would not pick it.
    let other = work.path().join("other_app");
    std::fs::copy(&app, &other).unwrap();
    let meta = calc.patch(&work);
    let victim = App::start(&app);
    let pid = victim.pid();
    let log = work.path().join("strace.log");
    let trigger = tool("strace")
        .args(["-f", "-o"])
        .arg(&log)
        .arg("-P")
        .arg(format!("/proc/{pid}/mem"))
        .args(["-e", "trace=openat", "-e"])
        .arg(format!("inject=openat:delay_enter=3000000:when={at}"))
        .arg(&artifacts().trigger)
        .args(["--all", "--name", "calc_app"])
        .arg(&meta)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the tool is held in that open of the process's memory.
    let start = Instant::now();
    while std::fs::read_to_string(&log).unwrap_or_default().matches(&format!("/proc/{pid}/mem")).count() < at as usize {
        assert!(start.elapsed() < Duration::from_secs(20), "the tool never opened /proc/{pid}/mem {at} times");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(victim);
    let Some(mut newcomer) = start_as(&other, pid) else {
        panic!("could not get PID {pid} for the newcomer (another process kept taking it)");
    };
    let out = trigger.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{stdout}{stderr}");
    assert_eq!(newcomer.ask("call 5"), OLD, "the newcomer was patched: {stdout}{stderr}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.lines().any(|l| l == "TracerPid:\t0"), "left traced: {status}");
    assert!(stdout.contains(says) || stderr.contains(says), "the tool says `{says}`: {stdout}{stderr}");
    assert_eq!(out.status.code(), Some(exit_status), "{stdout}{stderr}");
    newcomer.assert_alive();
}

/// One test for both moments: both hand PIDs out through `ns_last_pid`, which two tests
/// running at once would fight over.
#[test]
fn a_reused_pid_is_never_patched() {
    reused_at(1, 1, "no process selected");
    reused_at(2, 3, "exited");
}
