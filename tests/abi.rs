//! Redirected functions receive every argument and return value intact: 10 int + 10 double
//! arguments (some on the stack), varargs (`%al` counts the vector registers), recursion
//! through the redirect.

use libpulp_rs_tests::{apply, revert, App, CSpec, Work};

fn wsum(marker: f64) -> f64 {
    let ints: f64 = (1..=10).map(|i| f64::from(i * i)).sum();
    let doubles: f64 = (1..=10).map(|i| f64::from(i + 10) * (f64::from(i) - 0.5)).sum();
    marker + ints + doubles
}

fn vsum(n: u32, marker: f64) -> f64 {
    marker + (0..n).map(|i| f64::from(i + 1) * (f64::from(i) + 0.25)).sum::<f64>()
}

fn fib(n: i64) -> i64 {
    if n < 2 {
        n
    } else {
        fib(n - 1) + fib(n - 2)
    }
}

/// What `fib_new` computes: every leaf of the recursion gains 1000.
fn fib_patched(n: i64) -> i64 {
    if n < 2 {
        n + 1000
    } else {
        fib_patched(n - 1) + fib_patched(n - 2)
    }
}

fn check(app: &mut App, marker: f64, patched: bool) {
    let got: f64 = app.ask("wsum").parse().unwrap();
    assert!((got - wsum(marker)).abs() < 1e-6, "wsum: got {got}, want {}", wsum(marker));
    for n in [0, 3, 8, 9, 16] {
        let got: f64 = app.ask(&format!("vsum {n}")).parse().unwrap();
        let want = vsum(n, marker);
        assert!((got - want).abs() < 1e-6, "vsum({n}): got {got}, want {want}");
    }
    for n in [0, 1, 2, 10, 20] {
        let got: i64 = app.ask(&format!("fib {n}")).parse().unwrap();
        let want = if patched { fib_patched(n) } else { fib(n) };
        assert_eq!(got, want, "fib({n})");
    }
}

#[test]
fn abi() {
    let work = Work::new();
    let lib = work.shared("abi", &CSpec::patchable(&["abi.c"]));
    let fix = work.shared("abi_fix", &CSpec::plain(&["abi_fix.c"]).link("abi"));
    let app = work.executable("abi_app", &CSpec::plain(&["abi_app.c"]).link("abi"));
    let meta = work.patch("abi", &fix, &[(&lib, &[("wsum", "wsum_new"), ("vsum", "vsum_new"), ("fib", "fib_new")])]);

    let mut app = App::start(&app);
    check(&mut app, 0.0, false);
    apply(app.pid(), &meta).assert_ok("pulp-trigger");
    check(&mut app, 1000.0, true);
    revert(app.pid(), &meta).assert_ok("pulp-trigger --revert");
    check(&mut app, 0.0, false);
    app.assert_alive();
}
