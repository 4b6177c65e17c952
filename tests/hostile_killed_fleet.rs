//! `kill -9` of the machine-wide tools half-way (issue 20): `pulp install` killed after
//! it wrote the patch object and the `.meta`'s temporary file, but before that file got
//! its name; `pulp-trigger --all` killed with some processes patched and the next one in
//! hand. Each time, what is left is repaired by running the same command again: nothing
//! half-written is ever read, nothing stays behind, every process ends patched and alive.
//!
//! The tools are held at the right step by strace (a long delay on a chosen system call),
//! then killed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use libpulp_rs_tests::{artifacts, pulp, tool, trigger, unique, App, CSpec, Work};

const OLD: &str = "calc(5)=10";
const NEW: &str = "calc(5)=1010";

struct Fixture {
    work: Work,
    app: PathBuf,
    meta: PathBuf,
    dir: PathBuf,
}

/// A build of libcalc of its own (its own build-id), so `--all` finds only this test's
/// processes.
fn fixture() -> Fixture {
    let work = Work::new();
    let tag = unique().to_string();
    let lib = work.shared("calc", &CSpec::patchable(&["calc.c"]).define("CALC_VERSION", Some(&tag)));
    let fix = work.shared("calc_fix", &CSpec::plain(&["calc_fix.c"]));
    let app = work.executable("calc_app", &CSpec::plain(&["calc_app.c"]).link("calc"));
    let meta = work.patch("calc", &fix, &[(&lib, &[("calc", "calc_fixed")])]);
    let dir = work.path().join("patches.d");
    Fixture { work, app, meta, dir }
}

fn start(f: &Fixture) -> App {
    let mut cmd = Command::new(&f.app);
    cmd.env("LD_PRELOAD", &artifacts().runtime).env("PULP_PATCH_DIR", &f.dir);
    App::start_command(cmd, "calc_app")
}

/// Run `program args` under strace, held for 30 s at the `when`-th call of `syscall`
/// (only calls on the paths `only`, when given, count); returns once it is held there.
fn held(f: &Fixture, program: &Path, args: &[&str], syscall: &str, when: u32, only: &[String]) -> Child {
    let log = f.work.path().join(format!("strace-{}.log", unique()));
    let mut cmd = tool("strace");
    cmd.args(["-f", "-qq", "-o"]).arg(&log);
    for path in only {
        cmd.args(["-P", path]);
    }
    cmd.args(["-e", &format!("trace={syscall}"), "-e", &format!("inject={syscall}:delay_enter=30000000:when={when}")]);
    let child = cmd.arg(program).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    // strace writes a call's line when it ends, but "resumed"/unfinished markers at its
    // start: count the calls entered.
    while std::fs::read_to_string(&log).unwrap_or_default().lines().filter(|l| l.contains(syscall)).count()
        < when as usize
    {
        assert!(start.elapsed() < Duration::from_secs(30), "never reached {syscall} #{when}");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// `kill -9` of the whole process group strace and the tool run in.
fn kill_all(mut child: Child) {
    // strace's tracee is its child: SIGKILL to strace leaves it stopped in the injected
    // delay, so kill the tool first (the child of strace), then strace.
    let strace = child.id() as i32;
    let tools = std::fs::read_to_string(format!("/proc/{strace}/task/{strace}/children")).unwrap_or_default();
    for pid in tools.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
        // SAFETY: SIGKILL to a process this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned())).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn pulp_install_killed_between_its_two_files() {
    let f = fixture();
    let meta = f.meta.to_str().unwrap();
    // The second rename is the `.meta`'s: the object is in place under its name, the
    // `.meta` written to its temporary file.
    let dir = f.dir.to_str().unwrap();
    let install = held(&f, &artifacts().pulp, &["install", meta, "--dir", dir], "rename", 2, &[]);
    kill_all(install);
    let left = files(&f.dir);
    assert!(left.iter().any(|n| n == "calc.so"), "the object was written: {left:?}");
    assert!(left.iter().any(|n| n.starts_with(".") && n.contains(".tmp.")), "the .meta was not named: {left:?}");
    assert!(!left.iter().any(|n| n.ends_with(".meta")), "{left:?}");

    // Meanwhile: a new process finds nothing installed (nothing half-written is read).
    let mut before = start(&f);
    assert_eq!(before.ask("call 5"), OLD);
    assert_eq!(pulp(&["installed", meta, "--dir", f.dir.to_str().unwrap()]).code, Some(1));

    // Run again: installed under the same name, the leftovers gone, every process patched.
    let out = pulp(&["install", meta, "--dir", f.dir.to_str().unwrap()]);
    out.assert_ok("pulp install, again");
    let now = files(&f.dir);
    assert_eq!(now.len(), 2, "the object and the .meta, nothing else: {now:?}");
    assert!(now.iter().any(|n| n == "calc.so") && now.iter().any(|n| n.starts_with("calc+")), "{now:?}");
    assert_eq!(before.ask("call 5"), NEW);
    let mut later = start(&f);
    assert_eq!(later.ask("call 5"), NEW);

    // Uninstall killed between taking the .meta out and the object: run again, nothing left.
    let uninstall = held(&f, &artifacts().pulp, &["uninstall", meta, "--dir", dir], "unlink", 2, &[]);
    kill_all(uninstall);
    let out = pulp(&["uninstall", meta, "--dir", f.dir.to_str().unwrap()]);
    out.assert_ok("pulp uninstall, again");
    assert!(files(&f.dir).is_empty(), "{:?}: {out:#?}", files(&f.dir));
    for app in [&mut before, &mut later] {
        assert_eq!(app.ask("call 5"), OLD);
        app.assert_alive();
    }
}

#[test]
fn pulp_trigger_all_killed_with_a_process_in_hand() {
    let f = fixture();
    let meta = f.meta.to_str().unwrap();
    // Under a name of its own, so that --name picks only these.
    let name = format!("kf{}", unique());
    std::fs::copy(&f.app, f.work.path().join(&name)).unwrap();
    let exe = f.work.path().join(&name);
    let mut apps: Vec<App> = (0..4)
        .map(|_| {
            let mut cmd = Command::new(&exe);
            cmd.env("LD_PRELOAD", &artifacts().runtime);
            App::start_command(cmd, &name)
        })
        .collect();
    // One process at a time, by PID; held as it opens the third one's memory for the work
    // (each process's memory is opened once to examine it, once to work on it).
    let mut mems: Vec<String> = apps.iter().map(|a| format!("/proc/{}/mem", a.pid())).collect();
    mems.sort_by_key(|m| m.trim_start_matches("/proc/").trim_end_matches("/mem").parse::<u32>().unwrap());
    let all = held(&f, &artifacts().trigger, &["--all", "--name", &name, "--jobs", "1", meta], "openat", 6, &mems);
    kill_all(all);
    let patched = apps.iter_mut().map(|a| a.ask("call 5")).filter(|r| r == NEW).count();
    assert_eq!(patched, 2, "the first two were patched, the one in hand and the last not yet");
    for app in &mut apps {
        app.assert_alive();
        let status = std::fs::read_to_string(format!("/proc/{}/status", app.pid())).unwrap();
        assert!(status.lines().any(|l| l == "TracerPid:\t0"), "left traced: {status}");
    }
    // Again: the rest, and the patched ones said so.
    let out = trigger(&["--all", "--name", &name, meta]);
    out.assert_ok("pulp-trigger --all, again");
    assert!(out.stdout.contains(&format!("applied to {}", 4 - patched)), "{out:#?}");
    for app in &mut apps {
        assert_eq!(app.ask("call 5"), NEW);
        app.assert_alive();
    }
}
