//! A multi-threaded process keeps running while patches are applied and reverted, and
//! after each change every thread's next call gets the new result.

use libpulp_rs_tests::{apply, revert, App, CSpec, Calc, Work};

/// `iters=I old=O new=N bad=B` -> (I, O, N, B)
fn stats(app: &mut App) -> (u64, u64, u64, u64) {
    let line = app.ask("stats");
    let v: Vec<u64> = line.split_whitespace().map(|kv| kv.split_once('=').unwrap().1.parse().unwrap()).collect();
    assert_eq!(v.len(), 4, "{line}");
    (v[0], v[1], v[2], v[3])
}

#[test]
fn threads() {
    let work = Work::new();
    let calc = Calc::build(&work);
    let app = work.executable("threads_app", &CSpec::plain(&["threads_app.c"]).link("calc").threads());
    let meta = calc.patch(&work);

    let mut app = App::start(&app);
    let pid = app.pid();
    assert_eq!(app.ask("sync"), "last=2,2,2,2");

    for round in 0..3 {
        let (before, ..) = stats(&mut app);
        apply(pid, &meta).assert_ok("pulp-trigger");
        assert_eq!(app.ask("sync"), "last=1002,1002,1002,1002", "round {round} after apply");
        let (after, _, new, bad) = stats(&mut app);
        assert!(after > before, "the workers stopped during apply");
        assert!(new > 0);
        assert_eq!(bad, 0, "a worker got a result that is neither old nor new");

        revert(pid, &meta).assert_ok("pulp-trigger --revert");
        assert_eq!(app.ask("sync"), "last=2,2,2,2", "round {round} after revert");
        let (later, _, _, bad) = stats(&mut app);
        assert!(later > after, "the workers stopped during revert");
        assert_eq!(bad, 0);
    }
    app.assert_alive();
}
