//! Two `pulp-trigger`s started at the same moment on the same process take turns (they
//! serialise on a lock): both succeed and both changes are in effect afterwards.

use std::path::Path;
use std::sync::{Arc, Barrier};
use std::thread;

use libpulp_rs_tests::{apply, revert, two_libraries_fixture, App, CSpec, ToolOutput, Work};

/// Runs `op(pid, meta)` for both patches in two threads released by one barrier.
fn together(pid: u32, metas: [&Path; 2], op: fn(u32, &Path) -> ToolOutput) -> [ToolOutput; 2] {
    let barrier = Arc::new(Barrier::new(2));
    let handles = metas.map(|meta| {
        let meta = meta.to_path_buf();
        let barrier = Arc::clone(&barrier);
        thread::spawn(move || {
            barrier.wait();
            op(pid, &meta)
        })
    });
    handles.map(|h| h.join().expect("a trigger thread panicked"))
}

#[test]
fn concurrent_triggers() {
    let work = Work::new();
    let (app, p1, p2) = two_libraries_fixture(&work);

    let mut app = App::start(&app);
    let pid = app.pid();
    assert_eq!(app.ask("call 1"), "one=2 two=3");
    for round in 0..5 {
        for out in together(pid, [&p1, &p2], apply) {
            out.assert_ok(&format!("concurrent apply, round {round}"));
            assert!(!out.stdout.to_lowercase().contains("already"), "round {round}: {out:#?}");
        }
        assert_eq!(app.ask("call 1"), "one=1002 two=2003", "round {round}: both patches must be in effect");
        for out in together(pid, [&p1, &p2], revert) {
            out.assert_ok(&format!("concurrent revert, round {round}"));
        }
        assert_eq!(app.ask("call 1"), "one=2 two=3", "round {round}: both patches must be reverted");
    }
    app.assert_alive();
}

/// The same patch twice at the same moment: one applies it, the other finds it applied.
#[test]
fn concurrent_same_patch() {
    let work = Work::new();
    let one = work.shared("one", &CSpec::patchable(&["one.c"]));
    work.shared("two", &CSpec::patchable(&["two.c"]));
    let one_fix = work.shared("one_fix", &CSpec::plain(&["one_fix.c"]));
    let app = work.executable("two_app", &CSpec::plain(&["two_app.c"]).link("one").link("two"));
    let p1 = work.patch("one", &one_fix, &[(&one, &[("one", "one_new")])]);

    let mut app = App::start(&app);
    let pid = app.pid();
    for round in 0..3 {
        let outs = together(pid, [&p1, &p1], apply);
        for out in &outs {
            out.assert_ok(&format!("concurrent apply of one patch, round {round}"));
        }
        let already = outs.iter().filter(|o| o.stdout.to_lowercase().contains("already applied")).count();
        assert_eq!(already, 1, "round {round}: exactly one run must find the patch applied: {outs:#?}");
        assert_eq!(app.ask("call 1"), "one=1002 two=3", "round {round}");
        for out in together(pid, [&p1, &p1], revert) {
            out.assert_ok(&format!("concurrent revert of one patch, round {round}"));
        }
        assert_eq!(app.ask("call 1"), "one=2 two=3", "round {round}");
    }
    app.assert_alive();
}
