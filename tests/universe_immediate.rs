//! A `%immediate` patch switches every thread at once: it applies (exit 0) while a thread
//! is blocked inside the library, no transition runs, and the blocked thread's next call
//! already gets the new version.

use libpulp_rs_tests::{apply, patches_json as status, pulp, revert, wait_in_syscall, App, Uni, Work, UNI_FUNCS};

const SYS_READ: u64 = 0;

#[test]
fn universe_immediate() {
    let work = Work::new();
    let uni = Uni::build(&work);
    let exe = uni.app.clone();
    let meta = work.patch_with_options("uni_now", &uni.fix, &[(&uni.lib, UNI_FUNCS)], &["immediate"]);

    let mut app = App::start(&exe);
    let pid = app.pid();
    let reply = app.ask("block 0");
    let tid: u32 = reply.rsplit_once("tid=").unwrap().1.parse().unwrap();
    wait_in_syscall(pid, tid, &[SYS_READ]);

    let out = apply(pid, &meta);
    out.assert_ok("pulp-trigger (immediate, a thread blocked inside)");
    assert!(out.stdout.contains("applied"), "{out:#?}");
    let s = status(pid);
    assert!(s["transition"].is_null(), "an immediate patch runs no transition: {s:#}");
    assert_eq!(s["patches"][0]["state"], "applied", "{s:#}");
    let text = pulp(&["patches", "-p", &pid.to_string()]);
    assert!(text.stdout.contains("no transition in progress"), "{text:#?}");

    assert_eq!(app.ask("value"), "value=2");
    assert_eq!(app.ask("pair"), "pair=22");
    // The blocked thread finishes the old wait_and_get, whose value() call is new already.
    assert_eq!(app.ask("release 0"), "released 0 inner=2 again=2");

    // Revert while a thread is blocked inside: immediate too.
    let reply = app.ask("block 1");
    let tid: u32 = reply.rsplit_once("tid=").unwrap().1.parse().unwrap();
    wait_in_syscall(pid, tid, &[SYS_READ]);
    revert(pid, &meta).assert_ok("pulp-trigger --revert (immediate)");
    assert!(status(pid)["transition"].is_null());
    assert_eq!(app.ask("value"), "value=1");
    // It entered wait_and_get_new: that body finishes, with the old value().
    assert_eq!(app.ask("release 1"), "released 1 inner=101 again=1");
    app.assert_alive();
}
