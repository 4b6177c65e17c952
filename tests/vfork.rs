//! A thread waiting for a vfork child is never borrowed: the child runs on that thread's
//! stack, where the trigger would write its frame. With no other thread, the trigger
//! refuses with a clear message and the process goes on unharmed; once the child has
//! exited, the patch applies.

use libpulp_rs_tests::{apply, App, CSpec, Calc, Work};

#[test]
fn vfork_parent_is_not_borrowed() {
    let work = Work::new();
    let calc = Calc::build(&work);
    let app = work.executable("vfork_app", &CSpec::plain(&["vfork_app.c"]).link("calc"));
    let meta = calc.patch(&work);

    let mut app = App::start(&app);
    let pid = app.pid();
    assert_eq!(app.ask("vfork 8"), "vforking");
    // Wait until the only thread is inside vfork (its child sleeps meanwhile).
    libpulp_rs_tests::wait_in_syscall(pid, pid, &[58]);

    let refused = apply(pid, &meta);
    refused.assert_refused(&["no thread could be stopped at a safe point", "vfork"]);
    assert_eq!(app.recv(), "child exited", "the vfork child ran to its end on an untouched stack");
    assert_eq!(app.ask("call 1"), "calc(1)=2", "nothing was applied");

    apply(pid, &meta).assert_ok("pulp-trigger once the child exited");
    assert_eq!(app.ask("call 1"), "calc(1)=1002");
    app.assert_alive();
}
