//! Two libraries of one process patched by two separate patches; reverting one leaves the
//! other in place.

use libpulp_rs_tests::{apply, revert, two_libraries_fixture, App, Work};

#[test]
fn two_libraries() {
    let work = Work::new();
    let (app, p1, p2) = two_libraries_fixture(&work);

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
