//! fork() while a transition is held open: the child (one thread, a copy of the forking
//! one) calls the patched functions and gets one consistent universe per library entry:
//! the new one when it forked from outside the library, the old one when it forked from
//! a callback under a live library frame; it exits 0. The parent then completes the
//! transition.

use libpulp_rs_tests::{pulp, trigger, wait_in_syscall, App, Uni, Work, UNI_FUNCS};

const SYS_READ: u64 = 0;

#[test]
fn universe_fork() {
    let work = Work::new();
    let uni = Uni::build(&work);
    let exe = uni.app.clone();
    let meta = uni.patch(&work, UNI_FUNCS);

    let mut app = App::start(&exe);
    let pid = app.pid();
    let p = pid.to_string();
    let tid = |reply: String| -> u32 { reply.rsplit_once("tid=").unwrap().1.parse().unwrap() };

    // Before any patch.
    app.send("fork");
    assert_eq!(app.recv(), "child pair=11 value=1");
    assert_eq!(app.recv(), "forked exit=0");

    // Slot 0 holds the transition (blocked in wait_and_get); slot 1 is in a callback
    // under with_cb, and will fork from there.
    let t0 = tid(app.ask("block 0"));
    let t1 = tid(app.ask("cbfork 1"));
    wait_in_syscall(pid, t0, &[SYS_READ]);
    wait_in_syscall(pid, t1, &[SYS_READ]);
    let out = trigger(&["--timeout", "0.5", "-p", &p, meta.to_str().unwrap()]);
    assert_eq!(out.code, Some(2), "held open by the blocked threads: {out:#?}");
    assert!(out.stderr.contains("2 threads still inside"), "{out:#?}");

    // The main thread moved (it was outside): its child is in the new universe.
    app.send("fork");
    assert_eq!(app.recv(), "child pair=22 value=2");
    assert_eq!(app.recv(), "forked exit=0");
    assert_eq!(app.ask("pair"), "pair=22");

    // Slot 1 forks under its live with_cb frame: its child stays in the old universe.
    app.send("release 1");
    assert_eq!(app.recv(), "child pair=11 value=1");
    assert_eq!(app.recv(), "released 1 inner=0 again=2");

    // Still held open by slot 0; a fork now still gives a consistent child.
    let text = pulp(&["patches", "-p", &p]);
    assert!(text.stdout.contains(&format!("thread {t0} (uniblock0)")), "{text:#?}");
    app.send("fork");
    assert_eq!(app.recv(), "child pair=22 value=2");
    assert_eq!(app.recv(), "forked exit=0");

    assert_eq!(app.ask("release 0"), "released 0 inner=1 again=2");
    trigger(&["--continue", "-p", &p]).assert_ok("pulp-trigger --continue");
    let text = pulp(&["patches", "-p", &p]);
    assert!(text.stdout.contains("no transition in progress"), "{text:#?}");
    app.send("fork");
    assert_eq!(app.recv(), "child pair=22 value=2");
    assert_eq!(app.recv(), "forked exit=0");
    app.assert_alive();
}
