//! The hijacked thread's registers survive: a single-threaded app that never sleeps keeps
//! values live in general-purpose and vector (SSE, or AVX when the CPU has AVX2) registers
//! and checks them every iteration, while a patch is applied and reverted 20 times. Its
//! only thread is the one pulp-trigger borrows, stopped in the middle of that loop.

use libpulp_rs_tests::{apply, revert, App, CSpec, Calc, Work};

/// `iters=I bad=B calls_bad=C calc=R vec=V` -> the values by key.
struct Check {
    iters: u64,
    bad: u64,
    calls_bad: u64,
    calc: u64,
    vec: u64,
    line: String,
}

fn check(app: &mut App) -> Check {
    let line = app.ask("check");
    let get = |key: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
    };
    Check {
        iters: get("iters"),
        bad: get("bad"),
        calls_bad: get("calls_bad"),
        calc: get("calc"),
        vec: get("vec"),
        line: line.clone(),
    }
}

fn cpu_has_avx2() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.lines().any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "avx2")))
        .unwrap_or(false)
}

#[test]
fn registers_survive_hijack() {
    let avx2 = cpu_has_avx2();
    let work = Work::new();
    let calc = Calc::build(&work);
    let mut spec = CSpec::plain(&["regs_app.c"]).link("calc");
    if avx2 {
        spec = spec.flag("-mavx2");
    }
    let exe = work.executable("regs_app", &spec);
    let meta = calc.patch(&work);

    let mut app = App::start(&exe);
    let pid = app.pid();
    let first = check(&mut app);
    println!("registers: {} ({}-byte vectors)", first.line, first.vec);
    assert_eq!(first.vec, if avx2 { 32 } else { 16 }, "the fixture was not built for the vector width expected");
    assert_eq!((first.bad, first.calls_bad, first.calc), (0, 0, 2), "{}", first.line);

    let mut last = first.iters;
    for round in 0..20 {
        for (revert_it, want) in [(false, 1002), (true, 2)] {
            let what = if revert_it { "revert" } else { "apply" };
            let out = if revert_it { revert(pid, &meta) } else { apply(pid, &meta) };
            out.assert_ok(&format!("pulp-trigger {what}, round {round}"));
            let c = check(&mut app);
            assert_eq!(
                c.bad,
                0,
                "round {round}, after {what}: registers changed under the loop: {}; stderr: {}",
                c.line,
                app.stderr()
            );
            assert_eq!(c.calls_bad, 0, "round {round}, after {what}: calc returned a wrong value: {}", c.line);
            assert_eq!(c.calc, want, "round {round}, after {what}: the patched function did not switch: {}", c.line);
            assert!(c.iters > last, "round {round}, after {what}: the loop made no progress: {}", c.line);
            last = c.iters;
        }
    }
    assert_eq!(app.stderr(), "", "the app reported a violation");
    app.assert_alive();
}
