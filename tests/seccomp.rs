//! A process under a seccomp filter that kills it for a system call it does not make
//! itself (here membarrier) can be patched: the tools make no such call in it.

use libpulp_rs_tests::{apply, revert, App, CSpec, Calc, Work};

#[test]
fn seccomp_filtered_process_is_patched_and_survives() {
    let work = Work::new();
    let calc = Calc::build(&work);
    let app = work.executable("seccomp_app", &CSpec::plain(&["seccomp_app.c"]).link("calc"));
    let meta = calc.patch(&work);

    let mut app = App::start(&app);
    let pid = app.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.lines().any(|l| l == "Seccomp:\t2"), "the filter is in place");
    assert_eq!(app.ask("call 1"), "calc(1)=2");
    apply(pid, &meta).assert_ok("pulp-trigger");
    assert_eq!(app.ask("call 1"), "calc(1)=1002");
    revert(pid, &meta).assert_ok("pulp-trigger --revert");
    assert_eq!(app.ask("call 1"), "calc(1)=2");
    app.assert_alive();
}
