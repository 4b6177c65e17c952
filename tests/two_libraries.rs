//! Two libraries of one process patched by two separate patches; reverting one leaves the
//! other in place.

use libpulp_rs_tests::{apply, revert, App, CSpec, Work};

#[test]
fn two_libraries() {
    let work = Work::new();
    let one = work.shared("one", &CSpec::patchable(&["one.c"]));
    let two = work.shared("two", &CSpec::patchable(&["two.c"]));
    let one_fix = work.shared("one_fix", &CSpec::plain(&["one_fix.c"]));
    let two_fix = work.shared("two_fix", &CSpec::plain(&["two_fix.c"]));
    let app = work.executable("two_app", &CSpec::plain(&["two_app.c"]).link("one").link("two"));
    let p1 = work.patch("one", &one_fix, &[(&one, &[("one", "one_new")])]);
    let p2 = work.patch("two", &two_fix, &[(&two, &[("two", "two_new")])]);

    let mut app = App::start(&app);
    let pid = app.pid();
    assert_eq!(app.ask("call 1"), "one=2 two=3");
    apply(pid, &p1).assert_ok("apply one");
    assert_eq!(app.ask("call 1"), "one=1002 two=3");
    apply(pid, &p2).assert_ok("apply two");
    assert_eq!(app.ask("call 1"), "one=1002 two=2003");
    revert(pid, &p1).assert_ok("revert one");
    assert_eq!(app.ask("call 1"), "one=2 two=2003");
    apply(pid, &p1).assert_ok("apply one again");
    assert_eq!(app.ask("call 1"), "one=1002 two=2003");
    revert(pid, &p2).assert_ok("revert two");
    assert_eq!(app.ask("call 1"), "one=1002 two=3");
    revert(pid, &p1).assert_ok("revert one again");
    assert_eq!(app.ask("call 1"), "one=2 two=3");
    app.assert_alive();
}
