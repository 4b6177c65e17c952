//! A thread blocked inside the library holds a transition open: the trigger gives up
//! after `--timeout`, exits 2 and names the thread; the transition keeps running and
//! stays consistent: threads outside get the new version at once, the blocked thread
//! keeps the old one for the rest of its library entry and gets the new one when it
//! calls in again; `--continue` then completes the transition.

use libpulp_rs_tests::{apply, patches_json as status, revert, trigger, wait_in_syscall, App, Uni, Work, UNI_FUNCS};
use serde_json::Value;
use std::path::PathBuf;

const SYS_READ: u64 = 0;

fn build(work: &Work) -> (PathBuf, PathBuf) {
    let uni = Uni::build(work);
    (uni.app.clone(), uni.patch(work, UNI_FUNCS))
}

/// The tids `pulp patches` says still hold the transition (not moved).
fn holders(s: &Value) -> Vec<u64> {
    s["transition"]["threads"]
        .as_array()
        .unwrap_or_else(|| panic!("no transition threads in {s:#}"))
        .iter()
        .filter(|t| t["state"] != "moved")
        .map(|t| t["tid"].as_u64().unwrap())
        .collect()
}

fn tid_of(reply: &str) -> u32 {
    reply.rsplit_once("tid=").and_then(|(_, t)| t.parse().ok()).unwrap_or_else(|| panic!("no tid in {reply:?}"))
}

#[test]
fn universe_blocked() {
    let work = Work::new();
    let (app, meta) = build(&work);
    let mut app = App::start(&app);
    let pid = app.pid();
    let p = pid.to_string();
    assert_eq!(app.ask("value"), "value=1");
    assert_eq!(app.ask("wag"), "wag=1");

    let blocked = app.ask("block 0");
    let tid = tid_of(&blocked);
    wait_in_syscall(pid, tid, &[SYS_READ]);

    // The blocked thread holds the transition: exit 2, the thread named, still running.
    let out = trigger(&["--timeout", "1", "-p", &p, meta.to_str().unwrap()]);
    assert_eq!(out.code, Some(2), "expected a timeout: {out:#?}");
    assert!(out.stdout.is_empty(), "no summary line on a timeout: {out:#?}");
    let err = &out.stderr;
    println!("{err}");
    assert!(err.contains("did not complete"), "{err}");
    assert!(err.contains("1 thread still inside"), "only the blocked thread holds it: {err}");
    assert!(err.contains(&format!("thread {tid} (uniblock0)")), "the report names the thread: {err}");
    assert!(err.contains("wait_and_get"), "the report shows the library frame: {err}");
    assert!(err.contains("--continue"), "the report says how to finish: {err}");
    app.assert_alive();

    let s = status(pid);
    assert!(s["transition"].is_object(), "a transition is in progress: {s:#}");
    assert_eq!(s["patches"][0]["state"], "applying", "{s:#}");
    assert_eq!(holders(&s), vec![tid as u64], "{s:#}");

    // Outside the library: the new version at once, in old and new threads alike.
    assert_eq!(app.ask("value"), "value=2");
    assert_eq!(app.ask("pair"), "pair=22");
    assert_eq!(app.ask("wag"), "wag=102");
    assert_eq!(app.ask("other"), "other=2");
    assert_eq!(app.ask("fresh"), "fresh=2");

    // The blocked thread finishes its entry with the old value(), then calls in again
    // from outside and gets the new one.
    assert_eq!(app.ask("release 0"), "released 0 inner=1 again=2");

    let done = trigger(&["--continue", "-p", &p, "--timeout", "10"]);
    done.assert_ok("pulp-trigger --continue");
    assert!(done.stdout.contains("completed the transition"), "{done:#?}");
    let s = status(pid);
    assert!(s["transition"].is_null(), "no transition any more: {s:#}");
    assert_eq!(s["patches"][0]["state"], "applied", "{s:#}");
    let again = trigger(&["--continue", "-p", &p]);
    again.assert_ok("pulp-trigger --continue (nothing left)");
    assert!(again.stdout.contains("no transition in progress"), "{again:#?}");

    assert_eq!(app.ask("value"), "value=2");
    assert_eq!(app.ask("block 1").split_once(" tid=").unwrap().0, "blocked 1");
    assert_eq!(app.ask("release 1"), "released 1 inner=102 again=2");

    // Revert with nothing inside: completes in one run, the old versions are back.
    revert(pid, &meta).assert_ok("pulp-trigger --revert");
    assert_eq!(app.ask("value"), "value=1");
    assert_eq!(app.ask("wag"), "wag=1");
    assert!(status(pid)["transition"].is_null());

    // And applying with nothing inside completes at once.
    apply(pid, &meta).assert_ok("pulp-trigger");
    assert_eq!(app.ask("value"), "value=2");
    app.assert_alive();
}

/// `--wait` (issue 21: libpulp exits 0 where we exit 2 on a thread that stays inside):
/// the tool waits for the transition to end and exits 0 then, as a script wants.
#[test]
fn wait_exits_0_once_the_transition_ends() {
    let work = Work::new();
    let (app, meta) = build(&work);
    let mut app = App::start(&app);
    let pid = app.pid();
    let tid = tid_of(&app.ask("block 0"));
    wait_in_syscall(pid, tid, &[SYS_READ]);
    let start = std::time::Instant::now();
    let waiting = std::process::Command::new(&libpulp_rs_tests::artifacts().trigger)
        .args(["--wait", "-p", &pid.to_string(), meta.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Under way: the main thread runs the new version, the blocked thread holds it.
    while app.ask("value") != "value=2" {
        assert!(start.elapsed() < std::time::Duration::from_secs(20), "the patch never went live");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Past the default timeout (10 s), the tool still waits.
    std::thread::sleep(std::time::Duration::from_secs(11).saturating_sub(start.elapsed()));
    assert!(holders(&status(pid)).contains(&(tid as u64)), "the blocked thread holds the transition");
    let mut waiting = waiting;
    assert!(waiting.try_wait().unwrap().is_none(), "the tool still waits");
    assert_eq!(app.ask("release 0"), "released 0 inner=1 again=2");
    let out = waiting.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("applied"), "{stdout}{stderr}");
    assert_eq!(status(pid)["patches"][0]["state"], "applied");
    app.assert_alive();
}
