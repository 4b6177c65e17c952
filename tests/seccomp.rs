//! A process under a seccomp filter that kills it for a system call it does not make
//! itself (here membarrier) can be patched: the tools make no such call in it.

use libpulp_rs_tests::{apply, program, revert, trigger, App, CSpec, Calc, Work};

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

/// The calc patch, and `seccomp_app` started under a filter that also kills it on
/// `memfd_create`, which loading a patch needs.
fn memfd_forbidden() -> (Work, std::path::PathBuf, App) {
    let work = Work::new();
    let calc = Calc::build(&work);
    let exe = work.executable("seccomp_app", &CSpec::plain(&["seccomp_app.c"]).link("calc"));
    let meta = calc.patch(&work);
    let mut cmd = program(&exe, true, &[]);
    cmd.env("SECCOMP_DENY_MEMFD", "1");
    let app = App::start_command(cmd, "seccomp_app (memfd_create forbidden)");
    (work, meta, app)
}

/// A filter that kills the process on `memfd_create`, which loading a patch needs (issue
/// 21, libpulp's `--disable-seccomp`): `pulp-trigger --disable-seccomp` runs the injected
/// calls with the filter suspended in the borrowed thread only (PTRACE_O_SUSPEND_SECCOMP),
/// so the patch loads and the process lives on under its filter; reverted the same way.
#[test]
fn disable_seccomp_loads_a_patch_the_filter_would_forbid() {
    let (_work, meta, mut app) = memfd_forbidden();
    let pid = app.pid().to_string();
    assert_eq!(app.ask("call 1"), "calc(1)=2");
    let m = meta.to_str().unwrap();
    trigger(&["--disable-seccomp", "-p", &pid, m]).assert_ok("pulp-trigger --disable-seccomp");
    assert_eq!(app.ask("call 1"), "calc(1)=1002");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.lines().any(|l| l == "Seccomp:\t2"), "the filter is still in place: {status}");
    trigger(&["--disable-seccomp", "--revert", "-p", &pid, m]).assert_ok("--revert --disable-seccomp");
    assert_eq!(app.ask("call 1"), "calc(1)=2");
    app.assert_alive();
}

/// `--disable-seccomp` without `CAP_SYS_ADMIN` (here: as user nobody) is refused at once,
/// saying what it needs; the process, under its memfd-killing filter, is untouched.
#[test]
fn disable_seccomp_without_cap_sys_admin_is_refused_before_anything() {
    let (_work, meta, mut app) = memfd_forbidden();
    let pid = app.pid().to_string();
    let mut as_nobody = libpulp_rs_tests::tool("setpriv");
    as_nobody
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&libpulp_rs_tests::artifacts().trigger)
        .args(["--disable-seccomp", "-p", &pid, meta.to_str().unwrap()]);
    let out = libpulp_rs_tests::run(&mut as_nobody);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(out.stderr.contains("--disable-seccomp needs CAP_SYS_ADMIN"), "{out:#?}");
    assert_eq!(app.ask("call 1"), "calc(1)=2", "untouched");
    app.assert_alive();
}
