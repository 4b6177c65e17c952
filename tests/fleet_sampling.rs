//! Sampling decides most threads by their stack alone (no address inside: no frame
//! inside), and walks the frames of a thread whose stack does mention one: a pointer to
//! a library function kept in a local variable is not a frame, and that thread moves.

use libpulp_rs_tests::{trigger, wait_in_syscall, App, CSpec, Calc, Work};
use serde_json::Value;

const SYS_READ: u64 = 0;

#[test]
fn a_stack_word_pointing_inside_is_not_a_frame() {
    let work = Work::new();
    let calc = Calc::build(&work);
    let exe = work.executable("stack_app", &CSpec::plain(&["fleet_stack_app.c"]).link("calc").threads());
    let meta = calc.patch(&work);
    let mut app = App::start(&exe);
    let pid = app.pid();
    let holder = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|&t| t != pid)
        .expect("the holder thread");
    wait_in_syscall(pid, holder, &[SYS_READ]);
    wait_in_syscall(pid, pid, &[SYS_READ]);

    // Both threads sleep outside the library: the transition completes at once.
    let out = trigger(&["--json", "--timeout", "5", "-p", &pid.to_string(), meta.to_str().unwrap()]);
    let first: Value =
        serde_json::from_str(out.stdout.lines().next().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {out:#?}"));
    assert_eq!(out.code, Some(0), "the thread holding a pointer was taken for one inside: {out:#?}");
    assert_eq!(first["result"], "applied", "{first:#}");
    assert!(first["phases_us"]["unwind_tables"].as_u64().is_some(), "its frames were walked: {first:#}");
    assert_eq!(app.ask("call 5"), "calc(5)=1010");
    // The holder calls through its pointer after the transition: the new version.
    assert_eq!(app.ask("release"), "released calc(1)=1002");
    app.assert_alive();
}
