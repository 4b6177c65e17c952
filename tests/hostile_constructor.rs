//! Issue 7 §2: a patch whose constructor faults (abort(), a write through NULL) must
//! leave the process as it was: the trigger refuses (exit 1, one line), the process is
//! alive and unpatched, a later request (apply of a good patch) is served, and a
//! dlopen() from another thread of the program completes (the loader lock is not left
//! held). A constructor that never returns: the trigger gives up with a clear message in
//! bounded time, and the process is alive, unpatched, and the thread it borrowed is
//! back at its own work.

use std::time::Duration;

use libpulp_rs_tests::{apply, run_limited, trigger_command, App, CSpec, Mix, Work, MIX_FUNCS, MIX_NEW, MIX_OLD};

/// Builds the fixture, a good patch and a patch whose constructor is `define`d broken;
/// starts the app; runs the broken patch. Returns what is needed to check afterwards.
fn broken_constructor(define: &str, limit: Duration) -> (Work, Mix, App, libpulp_rs_tests::Limited) {
    let work = Work::new();
    let mix = Mix::build(&work, 0);
    let bad = work.shared("mix_bad", &CSpec::plain(&["hostile_mix_fix.c"]).define(define, None));
    let bad_meta = work.patch("bad", &bad, &[(&mix.lib, MIX_FUNCS)]);
    let mut app = App::start(&mix.app);
    assert_eq!(app.ask("probe"), MIX_OLD);
    let l = run_limited(&mut trigger_command(app.pid(), &bad_meta, false), limit);
    println!("{define}: {:?} after {:?}", l.out, l.took);
    assert!(!l.timed_out, "the trigger hung on a broken constructor: {l:?}");
    (work, mix, app, l)
}

fn faulting_constructor(define: &str) {
    let (work, mix, mut app, l) = broken_constructor(define, Duration::from_secs(60));
    assert_eq!(l.out.code, Some(1), "a refusal: {:?}", l.out);
    l.out.assert_refused(&["constructor", "loading", "dlopen"]);
    app.assert_alive();
    assert_eq!(app.ask("probe"), MIX_OLD, "the process is unpatched");

    // The loader lock is free: another thread of the program can load a library.
    let other = work.shared("one", &CSpec::plain(&["one.c"]));
    assert_eq!(app.ask(&format!("dlopen {}", other.display())), "dlopen ok");

    // The runtime serves the next request.
    let good = mix.patch(&work, "good", &[]);
    apply(app.pid(), &good).assert_ok("apply of a good patch after the refused one");
    assert_eq!(app.ask("probe"), MIX_NEW);
    app.assert_alive();
}

#[test]
fn constructor_calls_abort() {
    faulting_constructor("FIX_CTOR_ABORT");
}

#[test]
fn constructor_writes_through_null() {
    faulting_constructor("FIX_CTOR_NULL");
}

#[test]
fn constructor_never_returns() {
    let (_work, _mix, mut app, l) = broken_constructor("FIX_CTOR_HANG", Duration::from_secs(90));
    assert!(l.took < Duration::from_secs(60), "the trigger gave up only after {:?}", l.took);
    assert_eq!(l.out.code, Some(1), "a refusal: {:?}", l.out);
    l.out.assert_refused(&["constructor", "did not return", "timed out", "time"]);
    app.assert_alive();
    // The borrowed thread (the main thread, waiting for commands) is back at its work.
    assert_eq!(app.try_ask("probe", Duration::from_secs(10)).as_deref(), Some(MIX_OLD), "the app answers, unpatched");
}
