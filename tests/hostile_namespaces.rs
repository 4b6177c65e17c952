//! Targets in another PID namespace (issue 20): a containerised process, patched from the
//! host with the PID the host sees. Inside, its threads have other ids: the hijack stub
//! signals the borrowed thread by its own ids, and the threads the runtime logs (gates)
//! carry them too, which the tool must translate before it decides who has moved. The
//! mixed-versions fixture (four workers calling the patched functions through gates all
//! along) checks that no thread sees half a patch over several transitions, and
//! `pulp-trigger --all` and `pulp patches` find and describe the process.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use libpulp_rs_tests::{artifacts, mix_stats, pulp, require_tool, trigger, App, Mix, Work, MIX_NEW, MIX_OLD};

/// The application, started in a new PID (and mount, for its own /proc) namespace; the
/// returned PID is the application's as the host sees it.
fn start_in_pid_namespace(exe: &Path) -> (App, u32) {
    require_tool("unshare");
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", "--"]).arg(exe).env("LD_PRELOAD", &artifacts().runtime);
    let app = App::start_command(cmd, "mix app in a PID namespace");
    // unshare forks the application as PID 1 of the namespace and waits for it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let pid = loop {
        let children =
            std::fs::read_to_string(format!("/proc/{}/task/{}/children", app.pid(), app.pid())).unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next().and_then(|p| p.parse().ok()) {
            break pid;
        }
        assert!(Instant::now() < deadline, "no child of unshare");
        std::thread::sleep(Duration::from_millis(10));
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert_eq!(nspid.split_whitespace().last(), Some("1"), "PID 1 inside its namespace: {nspid}");
    (app, pid)
}

#[test]
fn a_process_in_another_pid_namespace_is_patched_from_the_host() {
    let work = Work::new();
    let mix = Mix::build(&work, 0);
    let meta = mix.patch(&work, "mix", &[]);
    let (mut app, pid) = start_in_pid_namespace(&mix.app);
    assert_eq!(app.ask("probe"), MIX_OLD);
    assert_eq!(app.ask("workers 4"), "workers 4");
    let meta_s = meta.to_str().unwrap();
    for cycle in 0..5 {
        let out = trigger(&["-p", &pid.to_string(), meta_s]);
        out.assert_ok(&format!("apply, cycle {cycle}"));
        assert_eq!(app.ask("probe"), MIX_NEW, "cycle {cycle}");
        let patches = pulp(&["patches", "-p", &pid.to_string()]);
        patches.assert_ok("pulp patches");
        assert!(patches.stdout.contains("applied"), "{patches:#?}");
        trigger(&["--revert", "-p", &pid.to_string(), meta_s]).assert_ok(&format!("revert, cycle {cycle}"));
        assert_eq!(app.ask("probe"), MIX_OLD, "cycle {cycle}");
    }
    let (iterations, bad, _, _, odd) = mix_stats(&mut app);
    assert!(iterations > 0, "the workers ran");
    assert_eq!((bad, odd), (0, 0), "a thread saw half a patch");

    // Found by --all, by its build-id, like any other process.
    let out = trigger(&["--all", "--name", "mix_app", meta_s]);
    out.assert_ok("--all");
    assert!(out.stdout.contains(&format!("to PID {pid}")) && out.stdout.contains("applied to 1"), "{out:#?}");
    assert_eq!(app.ask("probe"), MIX_NEW);
    app.assert_alive();
}
