//! Preloading the runtime changes nothing: ordinary programs print the same output, write
//! nothing more on stderr and exit with the same code with and without
//! `LD_PRELOAD=libpulp_rs.so`.

use std::path::Path;
use std::process::Command;

use libpulp_rs_tests::{program, run, CSpec, ToolOutput, Work};

/// Runs `exe args` to completion, with the runtime preloaded or without any preload.
fn run_program(exe: &Path, args: &[&str], preload: bool) -> ToolOutput {
    run(program(exe, preload, args).env("LC_ALL", "C"))
}

/// Asserts that the preloaded run looks exactly like the plain one to its user.
fn assert_same(plain: &ToolOutput, preloaded: &ToolOutput) {
    assert_eq!(preloaded.code, plain.code, "exit code changed by the preload: {plain:#?} vs {preloaded:#?}");
    assert_eq!(preloaded.stdout, plain.stdout, "stdout changed by the preload: {plain:#?} vs {preloaded:#?}");
    assert_eq!(preloaded.stderr, plain.stderr, "stderr changed by the preload: {plain:#?} vs {preloaded:#?}");
}

/// Without this the other tests would prove nothing: the preload does load the runtime.
#[test]
fn preload_is_loaded() {
    let maps = run_program(Path::new("/bin/cat"), &["/proc/self/maps"], true);
    maps.assert_ok("cat /proc/self/maps");
    assert!(maps.stdout.contains("libpulp_rs.so"), "the runtime is not mapped under LD_PRELOAD: {maps:#?}");
    assert!(maps.stderr.is_empty(), "{maps:#?}");
    let plain = run_program(Path::new("/bin/cat"), &["/proc/self/maps"], false);
    assert!(!plain.stdout.contains("libpulp_rs.so"), "{plain:#?}");
}

#[test]
fn preload_echo() {
    let plain = run_program(Path::new("/bin/echo"), &["hello"], false);
    let preloaded = run_program(Path::new("/bin/echo"), &["hello"], true);
    assert_eq!(plain.stdout, "hello\n");
    assert_eq!(plain.code, Some(0));
    assert_same(&plain, &preloaded);
}

/// `ls -la /` shows the link count of `/proc` (which follows the number of processes) and
/// the times of `/tmp` (which other tests change), so the listing may change between any
/// two runs. The preloaded run is taken between two plain runs and must equal one of them;
/// a listing that differs only by such a change is retried a few times.
#[test]
fn preload_ls() {
    let ls = Path::new("/bin/ls");
    let mut last = None;
    for _ in 0..5 {
        let before = run_program(ls, &["-la", "/"], false);
        let preloaded = run_program(ls, &["-la", "/"], true);
        let after = run_program(ls, &["-la", "/"], false);
        before.assert_ok("ls -la /");
        assert!(before.stdout.lines().count() > 3, "{before:#?}");
        assert_eq!(preloaded.code, before.code, "{before:#?} vs {preloaded:#?}");
        assert_eq!(preloaded.stderr, "", "{preloaded:#?}");
        if preloaded.stdout == before.stdout || preloaded.stdout == after.stdout {
            return;
        }
        last = Some((before, preloaded, after));
    }
    let (before, preloaded, after) = last.unwrap();
    panic!(
        "ls -la / under the preload differs from the plain runs around it:\nbefore:\n{}\npreloaded:\n{}\nafter:\n{}",
        before.stdout, preloaded.stdout, after.stdout
    );
}

#[test]
fn preload_python() {
    let Some(python) = ["/usr/bin/python3", "/usr/local/bin/python3"].iter().map(Path::new).find(|p| p.exists()) else {
        let which = run(Command::new("sh").args(["-c", "command -v python3"]));
        assert_eq!(which.code, Some(0), "python3 is not installed: {which:#?}");
        return check_python(Path::new(which.stdout.trim()));
    };
    check_python(python);
}

fn check_python(python: &Path) {
    let args = ["-c", "import sys; print(sys.version_info[0]); sys.exit(3)"];
    let plain = run_program(python, &args, false);
    let preloaded = run_program(python, &args, true);
    assert_eq!(plain.stdout, "3\n", "{plain:#?}");
    assert_eq!(plain.code, Some(3), "{plain:#?}");
    assert_same(&plain, &preloaded);
}

#[test]
fn preload_threads() {
    let work = Work::new();
    let exe = work.executable("preload_mt", &CSpec::plain(&["preload_mt.c"]).threads());
    let plain = run_program(&exe, &[], false);
    let preloaded = run_program(&exe, &[], true);
    assert_eq!(plain.code, Some(7), "{plain:#?}");
    assert_eq!(plain.stdout.lines().count(), 5, "{plain:#?}");
    assert!(plain.stdout.starts_with("thread 0: "), "{plain:#?}");
    assert_eq!(plain.stderr, "", "{plain:#?}");
    assert_same(&plain, &preloaded);
}
