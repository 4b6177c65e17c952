//! Progress under lock churn: two threads malloc/free and one thread dlopens/dlcloses in
//! tight loops, never sleeping, while patches are applied and reverted. Every
//! `pulp-trigger` run must succeed (it has its own limit for finding a thread at a safe
//! point), the calls switch, and every thread keeps running. In the second variant the
//! main thread is busy too, so no thread ever waits in a system call.

use libpulp_rs_tests::{apply, revert, App, CSpec, Calc, Work};

/// `sync malloc=M dlopen=D` after every worker did two more rounds -> (M, D).
fn sync(app: &mut App, when: &str) -> (u64, u64) {
    let line = app.ask("sync");
    let get = |key: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{when}: no {key}= in {line:?}"))
    };
    (get("malloc"), get("dlopen"))
}

fn churn(busy: bool) {
    let work = Work::new();
    let calc = Calc::build(&work);
    // The object the dlopen thread loads and unloads: another fixture's patch object.
    let dl = work.shared("churn_dl", &CSpec::plain(&["one_fix.c"]));
    let exe = work.executable("churn_app", &CSpec::plain(&["churn_app.c"]).link("calc").threads());
    let meta = calc.patch(&work);

    let dl_arg = dl.to_str().unwrap();
    let args: &[&str] = if busy { &[dl_arg, "busy"] } else { &[dl_arg] };
    let mut app = App::start_with(&exe, true, args);
    let pid = app.pid();
    assert_eq!(app.ask("call 5"), "calc(5)=10");
    let mut last = sync(&mut app, "start");

    for round in 0..10 {
        for (revert_it, want) in [(false, "calc(5)=1010"), (true, "calc(5)=10")] {
            let what = format!("{} round {round}", if revert_it { "revert" } else { "apply" });
            let out = if revert_it { revert(pid, &meta) } else { apply(pid, &meta) };
            out.assert_ok(&format!("pulp-trigger, {what}"));
            app.assert_alive();
            assert_eq!(app.ask("call 5"), want, "{what}: the call did not switch");
            // Every worker still runs: sync waits for two more rounds of each.
            let now = sync(&mut app, &what);
            assert!(now.0 > last.0 && now.1 > last.1, "{what}: no progress: {last:?} -> {now:?}");
            last = now;
        }
    }
    assert_eq!(app.stderr(), "", "the app reported an error");
    app.assert_alive();
}

#[test]
fn churn_main_waits() {
    churn(false);
}

#[test]
fn churn_no_thread_sleeps() {
    churn(true);
}
