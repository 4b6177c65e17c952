//! A fix that needs a new field, through a shadow variable, applied to a running
//! multi-threaded process (the kernel's livepatch selftest for shadow variables, in user
//! space). `libshadow_acct.so` keeps accounts; its fix (`shadow_acct_fix.c`) refuses a third
//! deposit into an account, with a per-account deposit counter that `struct account` has
//! no room for: a shadow variable created on the first deposit under the fix and freed by
//! the fixed `account_close`. Threads open, use and close accounts throughout, so freed
//! addresses come back as new accounts. Built with gcc and with clang.
//! On revert the patch's `pulp_post_unpatch` callback frees the counters of the accounts
//! still open with `pulp_shadow_free_all`.

use std::path::PathBuf;

use libpulp_rs_tests::{apply, revert, App, CSpec, Work};

struct Fixture {
    app: PathBuf,
    meta: PathBuf,
}

fn build(work: &Work, cc: &str) -> Fixture {
    let include = format!("-I{}/runtime/include", env!("CARGO_MANIFEST_DIR"));
    let lib = work.shared("shadow_acct", &CSpec::patchable(&["shadow_acct.c"]).compiler(cc));
    let fix = work.shared("shadow_acct_fix", &CSpec::plain(&["shadow_acct_fix.c"]).compiler(cc).flag(&include));
    let app = work.executable(
        "shadow_acct_app",
        &CSpec::plain(&["shadow_acct_app.c"]).compiler(cc).link("shadow_acct").threads().flag("-rdynamic"),
    );
    let funcs: &[(&str, &str)] = &[
        ("account_deposit", "account_deposit_limited"),
        ("account_close", "account_close_fixed"),
        ("account_extras", "account_extras_fixed"),
    ];
    let meta = work.patch("shadow_acct", &fix, &[(&lib, funcs)]);
    Fixture { app, meta }
}

fn deposits(app: &mut App, n: u32, count: usize) -> Vec<String> {
    (0..count).map(|_| app.ask(&format!("deposit {n}"))).collect()
}

fn new_field_through_a_shadow(cc: &str) {
    let work = Work::new();
    let f = build(&work, cc);
    let mut app = App::start_with(&f.app, true, &["3"]);
    let pid = app.pid();

    // Before the patch: no limit, no extra field.
    assert_eq!(app.ask("open 1"), "opened 1");
    assert_eq!(deposits(&mut app, 1, 3), ["deposit 1 = 0"; 3]);
    assert_eq!(app.ask("extras"), "extras = -1");

    apply(pid, &f.meta).assert_ok("pulp-trigger");

    // An account opened before the patch gets its counter on its first deposit under it.
    assert_eq!(deposits(&mut app, 1, 3), ["deposit 1 = 0", "deposit 1 = 0", "deposit 1 = -1"]);
    assert_eq!(app.ask("balance 1"), "balance 1 = 50");
    // So does one opened after it.
    assert_eq!(app.ask("open 2"), "opened 2");
    assert_eq!(deposits(&mut app, 2, 3), ["deposit 2 = 0", "deposit 2 = 0", "deposit 2 = -1"]);
    assert_eq!(app.ask("balance 2"), "balance 2 = 20");

    // The churn threads ran through the patch: no account ever saw another's counter,
    // and the fix did refuse some of their deposits.
    let stopped = app.ask("stop");
    let figure = |key: &str| -> u64 {
        let word = stopped.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('='));
        word.and_then(|w| w.parse().ok()).unwrap_or_else(|| panic!("no {key}= in {stopped:?}"))
    };
    assert_eq!(figure("early_refusals"), 0, "{stopped}");
    assert_eq!(figure("errors"), 0, "{stopped}");
    assert!(figure("accounts") > 1000, "the threads hardly ran: {stopped}");
    assert!(figure("refused") > 0, "the fix never refused a churn deposit: {stopped}");

    // Every closed account's counter was freed with it: the two of the main thread remain.
    assert_eq!(app.ask("extras"), "extras = 2");
    assert_eq!(app.ask("close 1"), "closed 1");
    assert_eq!(app.ask("extras"), "extras = 1");

    // Reverted with account 2 still open: the unpatch callback freed its counter, the
    // only one left, and then none was live.
    assert_eq!(app.ask("unpatched"), "unpatched: -");
    revert(pid, &f.meta).assert_ok("pulp-trigger --revert");
    assert_eq!(app.ask("unpatched"), "unpatched: freed=1 live=0");
    assert_eq!(app.ask("close 2"), "closed 2");
    assert_eq!(app.ask("open 3"), "opened 3");
    assert_eq!(deposits(&mut app, 3, 3), ["deposit 3 = 0"; 3]);
    assert_eq!(app.ask("extras"), "extras = -1");
    app.assert_alive();
    assert_eq!(app.stderr(), "");
}

#[test]
fn shadow_field_gcc() {
    new_field_through_a_shadow("gcc");
}

#[test]
fn shadow_field_clang() {
    new_field_through_a_shadow("clang");
}
