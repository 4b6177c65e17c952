//! Several patches on the same function: the newest applied one wins, and any of them can
//! be reverted in any order; with none left the original runs again.

use std::path::PathBuf;

use libpulp_rs_tests::{apply, revert, App, CSpec, Work};

/// The stacking fixtures: the app and three patches of libstack.so.
/// A: s1 -> s1_a (+1000); B: s1 -> s1_b (+2000); C: s1 -> s1_c, s2 -> s2_c (+3000 each).
struct Setup {
    _work: Work,
    app: PathBuf,
    a: PathBuf,
    b: PathBuf,
    c: PathBuf,
}

fn setup() -> Setup {
    let work = Work::new();
    let lib = work.shared("stack", &CSpec::patchable(&["stack.c"]));
    let fix_a = work.shared("stack_a", &CSpec::plain(&["stack_a.c"]));
    let fix_b = work.shared("stack_b", &CSpec::plain(&["stack_b.c"]));
    let fix_c = work.shared("stack_c", &CSpec::plain(&["stack_c.c"]));
    let app = work.executable("stack_app", &CSpec::plain(&["stack_app.c"]).link("stack"));
    let a = work.patch("a", &fix_a, &[(&lib, &[("s1", "s1_a")])]);
    let b = work.patch("b", &fix_b, &[(&lib, &[("s1", "s1_b")])]);
    let c = work.patch("c", &fix_c, &[(&lib, &[("s1", "s1_c"), ("s2", "s2_c")])]);
    Setup { _work: work, app, a, b, c }
}

const ORIGINAL: &str = "s1=6 s2=7";
const A: &str = "s1=1006 s2=7";
const B: &str = "s1=2006 s2=7";

#[test]
fn stacking_revert_older_first() {
    let s = setup();
    let mut app = App::start(&s.app);
    let pid = app.pid();
    assert_eq!(app.ask("call 5"), ORIGINAL);
    apply(pid, &s.a).assert_ok("apply A");
    assert_eq!(app.ask("call 5"), A);
    apply(pid, &s.b).assert_ok("apply B");
    assert_eq!(app.ask("call 5"), B, "the newest patch must win");
    revert(pid, &s.a).assert_ok("revert A (under B)");
    assert_eq!(app.ask("call 5"), B, "reverting the older patch must leave the newer one");
    revert(pid, &s.b).assert_ok("revert B");
    assert_eq!(app.ask("call 5"), ORIGINAL, "with no patch left the original must run");
    app.assert_alive();
}

#[test]
fn stacking_revert_newer_first() {
    let s = setup();
    let mut app = App::start(&s.app);
    let pid = app.pid();
    apply(pid, &s.a).assert_ok("apply A");
    assert_eq!(app.ask("call 5"), A);
    apply(pid, &s.b).assert_ok("apply B");
    assert_eq!(app.ask("call 5"), B);
    revert(pid, &s.b).assert_ok("revert B");
    assert_eq!(app.ask("call 5"), A, "reverting the newest patch must bring back the one under it");
    revert(pid, &s.a).assert_ok("revert A");
    assert_eq!(app.ask("call 5"), ORIGINAL);

    // And around once more: both can be applied again, in the other order.
    apply(pid, &s.b).assert_ok("apply B again");
    apply(pid, &s.a).assert_ok("apply A again");
    assert_eq!(app.ask("call 5"), A);
    revert(pid, &s.a).assert_ok("revert A again");
    assert_eq!(app.ask("call 5"), B);
    revert(pid, &s.b).assert_ok("revert B again");
    assert_eq!(app.ask("call 5"), ORIGINAL);
    app.assert_alive();
}

/// C replaces s1 and s2; A replaces s1 only, so s1 is shared by two patches.
#[test]
fn stacking_shared_function() {
    let s = setup();
    let mut app = App::start(&s.app);
    let pid = app.pid();

    // A under C: reverting C brings A's s1 back and the original s2.
    apply(pid, &s.a).assert_ok("apply A");
    apply(pid, &s.c).assert_ok("apply C");
    assert_eq!(app.ask("call 5"), "s1=3006 s2=3007");
    revert(pid, &s.c).assert_ok("revert C");
    assert_eq!(app.ask("call 5"), A);
    revert(pid, &s.a).assert_ok("revert A");
    assert_eq!(app.ask("call 5"), ORIGINAL);

    // A over C: A wins for s1 only; reverting C under A keeps A's s1 and restores s2.
    apply(pid, &s.c).assert_ok("apply C");
    assert_eq!(app.ask("call 5"), "s1=3006 s2=3007");
    apply(pid, &s.a).assert_ok("apply A over C");
    assert_eq!(app.ask("call 5"), "s1=1006 s2=3007");
    revert(pid, &s.c).assert_ok("revert C under A");
    assert_eq!(app.ask("call 5"), A);
    revert(pid, &s.a).assert_ok("revert A");
    assert_eq!(app.ask("call 5"), ORIGINAL);
    app.assert_alive();
}
