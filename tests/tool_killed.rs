//! If pulp-trigger is killed (SIGKILL, which it cannot hold back) while a thread of the
//! target runs the runtime's code, the thread puts itself back through the signal frame
//! the trigger left on its stack: the process keeps running, its interrupted read()
//! completes, its signal mask and vector registers are its own again, nothing traces it,
//! and `pulp-trigger --continue` completes the patch.

use std::process::Stdio;

use libpulp_rs_tests::{apply, trigger, trigger_command, wait_in_syscall, App, CSpec, Work};

const SYS_NANOSLEEP: &[u64] = &[35, 230];

fn status_field(pid: u32, field: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines().find_map(|l| l.strip_prefix(field)).unwrap_or_default().trim().to_string()
}

#[test]
fn target_survives_a_killed_trigger() {
    let work = Work::new();
    let lib = work.shared("calc", &CSpec::patchable(&["calc.c"]));
    let fix = work.shared("calc_slowfix", &CSpec::plain(&["calc_slowfix.c"]));
    let app = work.executable("calc_app", &CSpec::plain(&["calc_app.c"]).link("calc"));
    let meta = work.patch("calc", &fix, &[(&lib, &[("calc", "calc_fixed")])]);

    let mut app = App::start(&app);
    let pid = app.pid();
    assert_eq!(app.ask("call 1"), "calc(1)=2");
    let mask_before = status_field(pid, "SigBlk:");

    // The only thread is borrowed; once it sleeps in the patch object's constructor
    // (inside dlopen, inside the runtime's entry) the trigger is killed.
    let mut tool = trigger_command(pid, &meta, false).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_in_syscall(pid, pid, SYS_NANOSLEEP);
    tool.kill().unwrap();
    tool.wait().unwrap();

    // The thread finishes the entry on its own and returns through the frame: the
    // read() it was blocked in resumes and serves this command. The runtime wrote the
    // code and armed the transition in the entry, so the thread may already have moved
    // through the gate at calc(): either version, never anything else.
    let answer = app.ask("call 1");
    assert!(answer == "calc(1)=2" || answer == "calc(1)=1002", "the process answers: {answer}");
    app.assert_alive();
    assert_eq!(status_field(pid, "TracerPid:"), "0");
    assert_eq!(status_field(pid, "SigBlk:"), mask_before, "the thread's own signal mask is back");

    // The runtime did load the patch and start its transition, which nobody finished:
    // `--continue` completes it.
    trigger(&["--continue", "-p", &pid.to_string()]).assert_ok("pulp-trigger --continue");
    assert_eq!(app.ask("call 1"), "calc(1)=1002");
    apply(pid, &meta).assert_ok("pulp-trigger (already applied)");
    app.assert_alive();
}
