//! A thread that never leaves the library (a loop of 1 ms naps inside it): the trigger
//! times out, names the thread and its library frame, and `pulp patches` shows it
//! holding the transition; `--continue --force` switches it anyway; a loop that calls
//! `pulp_quiescent()` lets the transition complete by itself; `--reverse` rolls the
//! patch back.

use libpulp_rs_tests::{patches_json as status, pulp, trigger, wait_in_syscall, App, Uni, Work, UNI_FUNCS};
use std::path::{Path, PathBuf};

/// nanosleep, clock_nanosleep.
const SYS_SLEEP: &[u64] = &[35, 230];

fn build(work: &Work) -> (PathBuf, PathBuf) {
    let uni = Uni::build(work);
    (uni.app.clone(), uni.patch(work, UNI_FUNCS))
}

/// Starts the app with one thread looping inside the library (`spin 0` or `spinq 0`),
/// and waits until that thread naps inside it. Returns the app and the thread's tid.
fn start_spinning(exe: &Path, command: &str) -> (App, u32) {
    let mut app = App::start(exe);
    assert_eq!(app.ask("value"), "value=1");
    let reply = app.ask(command);
    let tid: u32 = reply
        .strip_prefix("spinning 0 tid=")
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("unexpected reply {reply:?}"));
    wait_in_syscall(app.pid(), tid, SYS_SLEEP);
    (app, tid)
}

#[test]
fn universe_stuck_force() {
    let work = Work::new();
    let (exe, meta) = build(&work);
    let (mut app, tid) = start_spinning(&exe, "spin 0");
    let p = app.pid().to_string();

    let out = trigger(&["--timeout", "0.5", "-p", &p, meta.to_str().unwrap()]);
    println!("{}", out.stderr);
    assert_eq!(out.code, Some(2), "expected a timeout: {out:#?}");
    assert!(out.stderr.contains(&format!("thread {tid} (unistuck0)")), "names the thread: {out:#?}");
    assert!(out.stderr.contains("spin+"), "shows the library frame: {out:#?}");
    assert!(out.stderr.contains("1 thread still inside"), "{out:#?}");

    // `pulp patches`, as text and JSON: the transition and the thread that holds it.
    let text = pulp(&["patches", "-p", &p]);
    text.assert_ok("pulp patches");
    println!("{}", text.stdout);
    assert!(text.stdout.contains("applying"), "{text:#?}");
    assert!(text.stdout.contains("transition"), "{text:#?}");
    assert!(text.stdout.contains(&format!("thread {tid} (unistuck0)")), "{text:#?}");
    let s = status(app.pid());
    let threads = s["transition"]["threads"].as_array().unwrap_or_else(|| panic!("{s:#}"));
    let me = threads.iter().find(|t| t["tid"] == tid).unwrap_or_else(|| panic!("{s:#}"));
    assert_eq!(me["name"], "unistuck0");
    assert_ne!(me["state"], "moved", "{s:#}");
    assert_eq!(threads.iter().filter(|t| t["state"] != "moved").count(), 1, "only it holds: {s:#}");

    // The main thread is outside: it already runs the new version.
    assert_eq!(app.ask("value"), "value=2");

    let forced = trigger(&["--continue", "-p", &p, "--timeout", "0.5", "--force"]);
    forced.assert_ok("pulp-trigger --continue --force");
    assert!(forced.stdout.contains("FORCED"), "{forced:#?}");
    let s = status(app.pid());
    assert!(s["transition"].is_null(), "{s:#}");
    assert_eq!(s["patches"][0]["state"], "applied", "{s:#}");
    let text = pulp(&["patches", "-p", &p]);
    assert!(text.stdout.contains("no transition in progress"), "{text:#?}");
    assert_eq!(app.ask("value"), "value=2");
    assert_eq!(app.ask("pair"), "pair=22");
    app.assert_alive();
}

#[test]
fn universe_stuck_quiescent() {
    let work = Work::new();
    let (exe, meta) = build(&work);
    let (mut app, _) = start_spinning(&exe, "spinq 0");
    let p = app.pid().to_string();

    // No --force: the looping thread moves itself at pulp_quiescent().
    let out = trigger(&["--timeout", "20", "-p", &p, meta.to_str().unwrap()]);
    out.assert_ok("pulp-trigger (pulp_quiescent in the loop)");
    assert!(!out.stdout.contains("FORCED"), "{out:#?}");
    let s = status(app.pid());
    assert!(s["transition"].is_null(), "{s:#}");
    assert_eq!(s["patches"][0]["state"], "applied", "{s:#}");
    assert_eq!(app.ask("value"), "value=2");

    // Revert goes the same way.
    let out = trigger(&["--revert", "--timeout", "20", "-p", &p, meta.to_str().unwrap()]);
    out.assert_ok("pulp-trigger --revert (pulp_quiescent in the loop)");
    assert_eq!(app.ask("value"), "value=1");
    assert!(status(app.pid())["transition"].is_null());
    app.assert_alive();
}

#[test]
fn universe_stuck_reverse() {
    let work = Work::new();
    let (exe, meta) = build(&work);
    let (mut app, _) = start_spinning(&exe, "spin 0");
    let p = app.pid().to_string();

    let out = trigger(&["--timeout", "0.5", "--reverse", "-p", &p, meta.to_str().unwrap()]);
    out.assert_ok("pulp-trigger --reverse");
    assert!(out.stdout.contains("rolled back"), "{out:#?}");
    let s = status(app.pid());
    assert!(s["transition"].is_null(), "{s:#}");
    let applied = s["patches"].as_array().unwrap().iter().filter(|p| p["state"] == "applied").count();
    assert_eq!(applied, 0, "the patch is not applied: {s:#}");
    assert_eq!(app.ask("value"), "value=1");
    assert_eq!(app.ask("pair"), "pair=11");
    assert_eq!(app.ask("wag"), "wag=1");

    // Held open, then rolled back by --continue --reverse.
    let out = trigger(&["--timeout", "0.5", "-p", &p, meta.to_str().unwrap()]);
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert_eq!(app.ask("value"), "value=2", "outside the library: the new version meanwhile");
    let out = trigger(&["--continue", "--timeout", "0.5", "--reverse", "-p", &p]);
    out.assert_ok("pulp-trigger --continue --reverse");
    assert!(out.stdout.contains("REVERSED"), "{out:#?}");
    let s = status(app.pid());
    assert!(s["transition"].is_null(), "{s:#}");
    let applied = s["patches"].as_array().unwrap().iter().filter(|p| p["state"] == "applied").count();
    assert_eq!(applied, 0, "the patch is not applied: {s:#}");
    assert_eq!(app.ask("value"), "value=1");
    assert_eq!(app.ask("other"), "other=1");
    app.assert_alive();
}

/// A process that exits while its transition waits for a thread (issue 21, from libpulp's
/// stress test): it ran with the patch (its main thread already called the new code), so
/// the patch counts as applied, then exited; not "exited while the patch was being
/// applied" with status 3.
#[test]
fn a_process_that_exits_during_the_transition_counts_as_patched() {
    let work = Work::new();
    let (exe, meta) = build(&work);
    let (mut app, _tid) = start_spinning(&exe, "spin 0");
    let p = app.pid().to_string();
    let trigger = std::process::Command::new(&libpulp_rs_tests::artifacts().trigger)
        .args(["--timeout", "60", "--json", "-p", &p, meta.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The main thread is outside the library: once it sees the new version, the transition
    // is under way and waits for the spinning thread.
    let start = std::time::Instant::now();
    while app.ask("value") != "value=2" {
        assert!(start.elapsed() < std::time::Duration::from_secs(20), "the patch never went live");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    app.send("exit 9");
    let out = trigger.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{stdout}{stderr}");
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let o = &lines[0];
    assert_eq!(o["result"], "applied", "{o:#}");
    let message = o["message"].as_str().unwrap();
    assert!(message.contains("then the process exited with status exit code 9"), "{o:#}");
    assert_eq!(lines[1]["counts"]["applied"], 1, "{stdout}");
    assert_eq!(out.status.code(), Some(0), "patched, then exited: done. {stdout}{stderr}");
}
