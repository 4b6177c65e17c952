//! Unwinding through patched libraries during and after a transition: pthread_cancel of
//! a thread blocked in a cancellation point called from the library, and a C++
//! exception thrown by a patched function through a patched frame.

use libpulp_rs_tests::{pulp, revert, trigger, wait_in_syscall, App, CSpec, Uni, Work, UNI_FUNCS};

const SYS_READ: u64 = 0;

fn tid(reply: &str) -> u32 {
    reply.rsplit_once("tid=").and_then(|(_, t)| t.parse().ok()).unwrap_or_else(|| panic!("no tid in {reply:?}"))
}

fn no_transition(pid: u32) {
    let text = pulp(&["patches", "-p", &pid.to_string()]);
    text.assert_ok("pulp patches");
    assert!(text.stdout.contains("no transition in progress"), "{text:#?}");
}

#[test]
fn universe_unwind_cancel() {
    let work = Work::new();
    let uni = Uni::build(&work);
    let exe = uni.app.clone();
    let meta = uni.patch(&work, UNI_FUNCS);

    let mut app = App::start(&exe);
    let pid = app.pid();
    let p = pid.to_string();
    let block = |app: &mut App, k: usize| {
        let t = tid(&app.ask(&format!("block {k}")));
        wait_in_syscall(pid, t, &[SYS_READ]);
        t
    };

    // Slot 0 holds the transition; slot 1 is blocked in the old wait_and_get too.
    let t0 = block(&mut app, 0);
    block(&mut app, 1);
    let out = trigger(&["--timeout", "0.5", "-p", &p, meta.to_str().unwrap()]);
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert!(out.stderr.contains(&format!("thread {t0} (uniblock0)")), "{out:#?}");

    // Cancel a thread of the old universe, blocked in the original wait_and_get.
    assert_eq!(app.ask("cancel 1"), "canceled 1");
    // Slot 2 enters after the transition began: through a gate into wait_and_get_new,
    // in the patch object. Cancel it there.
    block(&mut app, 2);
    assert_eq!(app.ask("cancel 2"), "canceled 2");
    // The process keeps working, and the transition is still consistent.
    assert_eq!(app.ask("value"), "value=2");
    assert_eq!(app.ask("wag"), "wag=102");
    assert_eq!(app.ask("fresh"), "fresh=2");
    let text = pulp(&["patches", "-p", &p]);
    assert!(text.stdout.contains(&format!("thread {t0} (uniblock0)")), "{text:#?}");

    // Cancel the holder: the transition can complete.
    assert_eq!(app.ask("cancel 0"), "canceled 0");
    trigger(&["--continue", "-p", &p]).assert_ok("pulp-trigger --continue");
    no_transition(pid);

    // After the transition: cancel inside wait_and_get_new, then a normal release.
    block(&mut app, 3);
    assert_eq!(app.ask("cancel 3"), "canceled 3");
    block(&mut app, 4);
    assert_eq!(app.ask("release 4"), "released 4 inner=102 again=2");
    assert_eq!(app.ask("other"), "other=2");
    app.assert_alive();
}

#[test]
fn universe_unwind_exception() {
    let work = Work::new();
    let lib = work.shared("uni_throw", &CSpec::patchable(&["uni_throw.cpp"]).cxx());
    let fix = work.shared("uni_throw_fix", &CSpec::plain(&["uni_throw_fix.cpp"]).cxx());
    let exe = work.executable("uni_throw_app", &CSpec::plain(&["uni_throw_app.cpp"]).cxx().link("uni_throw").threads());
    let meta = work.patch("throw", &fix, &[(&lib, &[("inner", "inner_new"), ("outer", "outer_new")])]);

    let mut app = App::start(&exe);
    let pid = app.pid();
    let p = pid.to_string();
    assert_eq!(app.ask("call 1"), "result=2");
    assert_eq!(app.ask("call -1"), "caught=old: negative -1");

    // A thread blocked in block_then holds the transition open.
    let t = tid(&app.ask("block"));
    wait_in_syscall(pid, t, &[SYS_READ]);
    let out = trigger(&["--timeout", "0.5", "-p", &p, meta.to_str().unwrap()]);
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert!(out.stderr.contains(&format!("thread {t} (unithrow)")), "{out:#?}");
    assert!(out.stderr.contains("block_then"), "{out:#?}");

    // The main thread: the new versions, and the new exception through outer_new.
    assert_eq!(app.ask("call 1"), "result=3");
    assert_eq!(app.ask("call -7"), "caught=new: negative -7");
    assert_eq!(app.ask("call -1"), "caught=new: negative -1");

    // The blocked thread's entry: the old outer and inner, the old exception, caught.
    assert_eq!(app.ask("release"), "released caught=old: negative -1");
    trigger(&["--continue", "-p", &p]).assert_ok("pulp-trigger --continue");
    no_transition(pid);
    assert_eq!(app.ask("call -2"), "caught=new: negative -2");
    let t = tid(&app.ask("block"));
    wait_in_syscall(pid, t, &[SYS_READ]);
    assert_eq!(app.ask("release"), "released caught=new: negative -1");

    // Revert (nothing inside): the old exception again.
    revert(pid, &meta).assert_ok("pulp-trigger --revert");
    assert_eq!(app.ask("call -3"), "caught=old: negative -3");
    assert_eq!(app.ask("call 4"), "result=5");
    app.assert_alive();
}
