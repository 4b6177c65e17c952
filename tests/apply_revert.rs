//! Apply and revert a patch in a running process: the output switches and switches back;
//! applying twice and reverting twice are harmless.

use libpulp_rs_tests::{apply, patch_object_copies, revert, App, Calc, Work};

#[test]
fn apply_revert() {
    let work = Work::new();
    let calc = Calc::build(&work);
    let app = calc.app(&work);
    let meta = calc.patch(&work);

    let mut app = App::start(&app);
    let pid = app.pid();
    assert_eq!(app.ask("call 5"), "calc(5)=10");

    let out = apply(pid, &meta);
    out.assert_ok("pulp-trigger");
    assert_eq!(out.stdout.trim().lines().count(), 1, "one summary line: {out:#?}");
    assert_eq!(app.ask("call 5"), "calc(5)=1010");
    assert_eq!(app.ask("call 7"), "calc(7)=1014");

    let again = apply(pid, &meta);
    again.assert_ok("pulp-trigger (second apply)");
    assert!(
        again.stdout.to_lowercase().contains("already applied"),
        "second apply should say `already applied`: {again:#?}"
    );
    assert_eq!(app.ask("call 5"), "calc(5)=1010");

    revert(pid, &meta).assert_ok("pulp-trigger --revert");
    assert_eq!(app.ask("call 5"), "calc(5)=10");

    revert(pid, &meta).assert_ok("pulp-trigger --revert (second revert)");
    assert_eq!(app.ask("call 5"), "calc(5)=10");

    // And once more around: a reverted patch can be applied again.
    apply(pid, &meta).assert_ok("pulp-trigger (apply after revert)");
    assert_eq!(app.ask("call 5"), "calc(5)=1010");
    revert(pid, &meta).assert_ok("pulp-trigger --revert (again)");
    assert_eq!(app.ask("call 5"), "calc(5)=10");
    app.assert_alive();
}

/// Many apply/revert cycles of one patch cost the process one loaded copy of the patch
/// object and one descriptor, not one per cycle: a process patched and unpatched for months
/// must not run out of descriptors or address space.
#[test]
fn cycles_reuse_the_loaded_patch_object() {
    let work = Work::new();
    let calc = Calc::build(&work);
    let app = calc.app(&work);
    let meta = calc.patch(&work);
    let mut app = App::start(&app);
    let pid = app.pid();
    let fds = || std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    let copies = || patch_object_copies(pid);
    apply(pid, &meta).assert_ok("first apply");
    assert_eq!(app.ask("call 5"), "calc(5)=1010");
    let (fds_after_first, copies_after_first) = (fds(), copies());
    assert_eq!(copies_after_first, 1, "one copy of the patch object is mapped");
    for cycle in 0..20 {
        revert(pid, &meta).assert_ok(&format!("revert {cycle}"));
        assert_eq!(app.ask("call 5"), "calc(5)=10");
        apply(pid, &meta).assert_ok(&format!("apply {cycle}"));
        assert_eq!(app.ask("call 5"), "calc(5)=1010");
    }
    assert_eq!(copies(), 1, "still one copy after 20 cycles");
    assert_eq!(fds(), fds_after_first, "no descriptor left behind per cycle");
    app.assert_alive();
}
