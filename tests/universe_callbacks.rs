//! App → library → app callback → library (patched): while the outer library frame is
//! live the thread stays in the old universe, so the inner call returns the old result
//! even after the patch was applied; a fresh call after the transition gets the new one.

use libpulp_rs_tests::{pulp, trigger, wait_in_syscall, App, Uni, Work};

const SYS_READ: u64 = 0;

#[test]
fn universe_callbacks() {
    let work = Work::new();
    let uni = Uni::build(&work);
    let exe = uni.app.clone();
    let meta = uni.patch(&work, &[("value", "value_new")]);

    let mut app = App::start(&exe);
    let pid = app.pid();
    let p = pid.to_string();

    // Without a patch: with_cb -> callback -> value() = 1.
    let tid = |reply: String| -> u32 { reply.rsplit_once("tid=").unwrap().1.parse().unwrap() };
    let t = tid(app.ask("cbblock 0"));
    assert_eq!(app.ask("release 0"), "released 0 inner=1 again=1");

    // The callback blocks on a pipe: with_cb's frame is live, in the library.
    let t0 = tid(app.ask("cbblock 0"));
    assert_ne!(t, t0);
    wait_in_syscall(pid, t0, &[SYS_READ]);
    let out = trigger(&["--timeout", "0.5", "-p", &p, meta.to_str().unwrap()]);
    println!("{}", out.stderr);
    assert_eq!(out.code, Some(2), "the live library frame holds the transition: {out:#?}");
    assert!(out.stderr.contains(&format!("thread {t0} (uniblock0)")), "{out:#?}");
    assert!(out.stderr.contains("with_cb"), "the report shows the outer library frame: {out:#?}");
    assert_eq!(app.ask("value"), "value=2", "the main thread is outside: new version");

    // The callback's value() runs inside the outer entry: old; the thread's next call from
    // outside: new.
    assert_eq!(app.ask("release 0"), "released 0 inner=1 again=2");

    let done = trigger(&["--continue", "-p", &p]);
    done.assert_ok("pulp-trigger --continue");
    let text = pulp(&["patches", "-p", &p]);
    assert!(text.stdout.contains("no transition in progress"), "{text:#?}");

    // A fresh call after the transition: new, inside and outside.
    let t1 = tid(app.ask("cbblock 1"));
    wait_in_syscall(pid, t1, &[SYS_READ]);
    assert_eq!(app.ask("release 1"), "released 1 inner=2 again=2");
    app.assert_alive();
}
