//! `pulp-trigger` on many processes: `--all` (processes that map the target, another build
//! of it, no runtime, one exiting in the middle), several `-p`, `--name`, `--user`,
//! `--json`, `--dry-run`, and idempotence.
//!
//! Every test builds its own copy of the calc library under a name and with a build-id
//! of its own (`CALC_VERSION`), so that a search of the machine finds only the processes
//! the test started, whatever else runs beside it.

use std::path::PathBuf;
use std::process::Command;

use libpulp_rs_tests::tool;
use libpulp_rs_tests::{artifacts, trigger, unique, App, CSpec, ToolOutput, Work};
use serde_json::Value;

/// A library `libfleetN.so` (calc.c with `calc_version = N`), its fix and applications.
struct Fleet {
    work: Work,
    lib: String,
    version: u32,
    meta: PathBuf,
}

impl Fleet {
    fn new() -> Self {
        let work = Work::new();
        let version = unique();
        let lib = format!("fleet{version}");
        let v = version.to_string();
        let path = work.shared(&lib, &CSpec::patchable(&["calc.c"]).define("CALC_VERSION", Some(&v)));
        let fix = work.shared("fleet_fix", &CSpec::plain(&["fleet_fix.c"]));
        let meta = work.patch("fleet", &fix, &[(&path, &[("calc", "calc_fixed")])]);
        Fleet { work, lib, version, meta }
    }

    /// An application named `name` that links this library.
    fn app(&self, name: &str) -> PathBuf {
        self.work.executable(name, &CSpec::plain(&["calc_app.c"]).link(&self.lib))
    }

    /// Another build of the library, under the same file name in another folder, and an
    /// application that links it.
    fn other_build(&self) -> (Work, PathBuf) {
        let other = Work::new();
        let v = (self.version + 1).to_string();
        other.shared(&self.lib, &CSpec::patchable(&["calc.c"]).define("CALC_VERSION", Some(&v)));
        let app = other.executable("fleet_other", &CSpec::plain(&["calc_app.c"]).link(&self.lib));
        (other, app)
    }

    fn meta(&self) -> &str {
        self.meta.to_str().unwrap()
    }
}

fn calc(app: &mut App) -> String {
    app.assert_alive();
    app.ask("call 5")
}

const OLD: &str = "calc(5)=10";
const NEW: &str = "calc(5)=1010";

/// The JSON lines of a `--json` run: the process objects and the summary.
fn json_lines(out: &ToolOutput) -> (Vec<Value>, Value) {
    let mut objects: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}\n{out:#?}")))
        .collect();
    let summary = objects.pop().unwrap_or_else(|| panic!("no output: {out:#?}"));
    assert_eq!(summary["type"], "summary", "{out:#?}");
    assert!(objects.iter().all(|o| o["type"] == "process"), "{out:#?}");
    (objects, summary)
}

/// The summary line of a text run.
fn last(out: &ToolOutput) -> &str {
    out.stdout.lines().last().unwrap_or_default()
}

fn of_pid(objects: &[Value], pid: u32) -> &Value {
    objects.iter().find(|o| o["pid"] == pid).unwrap_or_else(|| panic!("no object for PID {pid} in {objects:#?}"))
}

#[test]
fn all_patches_every_live_patchable_process_that_maps_the_build() {
    let f = Fleet::new();
    let app = f.app("fleet_app");
    let (_other_work, other_app) = f.other_build();
    let mut live: Vec<App> = (0..3).map(|_| App::start(&app)).collect();
    let mut no_runtime = App::start_with(&app, false, &[]);
    let mut other = App::start(&other_app);

    let out = trigger(&["--all", f.meta()]);
    out.assert_ok("pulp-trigger --all");
    println!("{}", out.stdout);
    for a in &live {
        assert!(out.stdout.contains(&format!("to PID {}:", a.pid())), "{out:#?}");
    }
    assert!(
        out.stdout.contains(&format!("PID {} (fleet_app): not live-patchable: runtime not loaded", no_runtime.pid())),
        "{out:#?}"
    );
    assert!(!out.stdout.contains(&format!("PID {}", other.pid())), "the other build was touched: {out:#?}");
    // Processes this user may not examine (on this machine, PID 1) are skipped too.
    let summary = out.stdout.lines().last().unwrap();
    assert!(summary.contains(": applied to 3, not live-patchable 1 (runtime not loaded), skipped "), "{summary}");
    assert!(summary.contains(&format!("1 mapping another build of lib{}.so", f.lib)), "{summary}");
    for a in &mut live {
        assert_eq!(calc(a), NEW);
    }
    assert_eq!(calc(&mut no_runtime), OLD);
    assert_eq!(calc(&mut other), OLD);

    // Idempotent: nothing changes the second time.
    let again = trigger(&["--all", f.meta()]);
    again.assert_ok("pulp-trigger --all, again");
    assert!(last(&again).contains(": already applied 3, not live-patchable 1"), "{again:#?}");
    for a in &mut live {
        assert_eq!(calc(a), NEW);
    }

    let back = trigger(&["--revert", "--all", f.meta()]);
    back.assert_ok("pulp-trigger --revert --all");
    let summary = back.stdout.lines().last().unwrap();
    assert!(summary.contains(": reverted in 3, skipped "), "{back:#?}");
    assert!(summary.contains(&format!("1 mapping another build of lib{}.so", f.lib)), "{back:#?}");
    for a in &mut live {
        assert_eq!(calc(a), OLD);
    }
    assert_eq!(calc(&mut other), OLD);
}

#[test]
fn json_reports_each_process_and_one_exiting_in_the_middle() {
    let f = Fleet::new();
    let app = f.app("fleet_app");
    let mut a = App::start(&app);
    let mut b = App::start(&app);
    let mut cmd = Command::new(&app);
    cmd.env("LD_PRELOAD", &artifacts().runtime).env("FLEET_EXIT_ON_PATCH", "7");
    let exiting = App::start_command(cmd, "exiting fleet_app");

    // A dry run says what would happen and changes nothing.
    let dry = trigger(&["--all", "--json", "--dry-run", f.meta()]);
    let (objects, summary) = json_lines(&dry);
    assert_eq!(dry.code, Some(0), "{dry:#?}");
    assert_eq!(objects.len(), 3, "{dry:#?}");
    assert!(objects.iter().all(|o| o["result"] == "would_apply" && o["changed"] == false), "{dry:#?}");
    assert_eq!(summary["counts"]["would_apply"], 3);
    assert_eq!(summary["changed"], false);
    assert_eq!(calc(&mut a), OLD);

    let out = trigger(&["--all", "--json", "--jobs", "2", f.meta()]);
    let (objects, summary) = json_lines(&out);
    println!("{}", out.stdout);
    for p in [a.pid(), b.pid()] {
        let o = of_pid(&objects, p);
        assert_eq!(o["result"], "applied", "{o:#}");
        assert_eq!(o["changed"], true);
        assert_eq!(o["exit_status"], 0);
        assert_eq!(o["name"], "fleet_app");
        assert!(o["stopped_us"].as_u64().is_some() && o["total_us"].as_u64().is_some(), "{o:#}");
    }
    let e = of_pid(&objects, exiting.pid());
    assert_eq!(e["result"], "exited", "{e:#}");
    assert_eq!(e["exit_status"], 3);
    assert!(e["message"].as_str().unwrap().contains("exit code 7"), "{e:#}");
    assert_eq!(summary["operation"], "apply");
    assert_eq!(summary["counts"]["applied"], 2);
    assert_eq!(summary["counts"]["exited"], 1);
    assert_eq!(summary["changed"], true);
    assert_eq!(summary["exit_status"], 3);
    assert_eq!(out.code, Some(3), "a process exited meanwhile: {out:#?}");
    assert_eq!(calc(&mut a), NEW);
    assert_eq!(calc(&mut b), NEW);

    // Several -p, some already patched: nothing to do is not a change.
    let c = App::start(&app);
    let p = |app: &App| app.pid().to_string();
    let out = trigger(&["-p", &p(&a), "-p", &p(&c), "--json", f.meta()]);
    let (objects, summary) = json_lines(&out);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(of_pid(&objects, a.pid())["result"], "already_applied");
    assert_eq!(of_pid(&objects, a.pid())["changed"], false);
    assert_eq!(of_pid(&objects, c.pid())["result"], "applied");
    assert_eq!(summary["processes"], 2);
}

#[test]
fn several_pids_with_a_refusal_exit_1_and_name_it() {
    let f = Fleet::new();
    let app = f.app("fleet_app");
    let mut a = App::start(&app);
    let mut no_runtime = App::start_with(&app, false, &[]);
    let p = |app: &App| app.pid().to_string();
    let out = trigger(&["-p", &p(&a), "-p", &p(&no_runtime), f.meta()]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(out.stdout.contains(&format!("to PID {}:", a.pid())), "{out:#?}");
    assert!(
        out.stderr
            .contains(&format!("pulp-trigger: error: PID {} has not loaded the libpulp-rs runtime", no_runtime.pid())),
        "{out:#?}"
    );
    assert!(last(&out).ends_with(": applied to 1, refused 1 (runtime not loaded)"), "{out:#?}");
    assert_eq!(calc(&mut a), NEW);
    assert_eq!(calc(&mut no_runtime), OLD);
}

/// Whether `setpriv` can run a command as user nobody here (and we are not nobody).
fn can_be_nobody() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 65534 {
        return false;
    }
    tool("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn name_and_user_narrow_the_search() {
    let f = Fleet::new();
    // Names of this test run alone (a command name keeps 15 characters).
    let (alpha, beta) = (format!("fa{}", f.version), format!("fb{}", f.version));
    let alpha_exe = f.app(&alpha);
    let beta_exe = f.app(&beta);
    let nobody = can_be_nobody();
    if !nobody {
        println!("setpriv cannot switch to user nobody here: --user is tested with root only");
    }
    let mut a = App::start(&alpha_exe);
    let mut b = App::start(&beta_exe);
    let mut a_nobody = nobody.then(|| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(f.work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut cmd = tool("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&alpha_exe)
            .env("LD_PRELOAD", &artifacts().runtime);
        App::start_command(cmd, "fleet_alpha as nobody")
    });

    if let Some(n) = &mut a_nobody {
        let out = trigger(&["--name", &alpha, "--user", "nobody", f.meta()]);
        out.assert_ok("pulp-trigger --name --user nobody");
        assert!(out.stdout.contains(&format!("to PID {}:", n.pid())), "{out:#?}");
        assert!(last(&out).contains(": applied to 1"), "{out:#?}");
        assert_eq!(calc(n), NEW);
        assert_eq!(calc(&mut a), OLD);
    }
    let out = trigger(&["--name", &format!("f[b]{}", f.version), f.meta()]);
    out.assert_ok("pulp-trigger --name");
    assert!(last(&out).contains(": applied to 1"), "{out:#?}");
    assert_eq!(calc(&mut b), NEW);
    assert_eq!(calc(&mut a), OLD);

    // Root's processes of this test: beta is reverted, alpha had nothing to revert, and
    // nobody's alpha is left as it is.
    let both = format!("f?{}", f.version);
    let out = trigger(&["--revert", "--user", "root", "--name", &both, f.meta()]);
    out.assert_ok("pulp-trigger --revert --user root");
    assert!(last(&out).contains(": reverted in 1, not applied 1"), "{out:#?}");
    assert_eq!(calc(&mut b), OLD);
    if let Some(n) = &mut a_nobody {
        assert_eq!(calc(n), NEW);
    }

    // --revert-all and --continue search as well.
    let lib = format!("lib{}.so", f.lib);
    let out = trigger(&["--revert-all", &lib, "--all"]);
    out.assert_ok("pulp-trigger --revert-all --all");
    let reverted = if nobody { "reverted in 1, not applied 2" } else { "not applied 2" };
    assert!(last(&out).contains(&format!("every patch of {lib}: {reverted}")), "{out:#?}");
    if let Some(n) = &mut a_nobody {
        assert_eq!(calc(n), OLD);
    }
    let out = trigger(&["--continue", "--name", &both]);
    out.assert_ok("pulp-trigger --continue --name");
    let n = if nobody { 3 } else { 2 };
    assert!(last(&out).contains(&format!("transitions in progress: no transition in {n}")), "{out:#?}");

    let bad = trigger(&["--user", "no-such-user-here", f.meta()]);
    assert_eq!(bad.code, Some(64), "{bad:#?}");
    assert!(bad.stderr.contains("no user named `no-such-user-here`"), "{bad:#?}");
}

#[test]
fn an_interrupted_run_finishes_the_process_in_hand_and_starts_no_other() {
    use libpulp_rs_tests::{wait_in_syscall, Uni, UNI_FUNCS};
    let work = Work::new();
    let uni = Uni::build(&work);
    let meta = uni.patch(&work, UNI_FUNCS);
    // The first process holds its transition: a thread naps inside the library.
    let mut stuck = App::start(&uni.app);
    let reply = stuck.ask("spin 0");
    let tid: u32 = reply.strip_prefix("spinning 0 tid=").and_then(|t| t.parse().ok()).unwrap();
    wait_in_syscall(stuck.pid(), tid, &[35, 230]);
    let mut others = [App::start(&uni.app), App::start(&uni.app)];
    let mut cmd = Command::new(&artifacts().trigger);
    cmd.args(["--jobs", "1", "--timeout", "2"]);
    for p in [stuck.pid(), others[0].pid(), others[1].pid()] {
        cmd.arg("-p").arg(p.to_string());
    }
    cmd.arg(&meta).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    // SAFETY: kill sends a signal to the tool this test started; no memory is involved.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{stdout}{stderr}");
    assert_eq!(out.status.code(), Some(128 + libc::SIGINT), "{stdout}{stderr}");
    assert!(stderr.contains("signal 2: finishing the processes in hand"), "{stderr}");
    assert!(stderr.contains(&format!("PID {}: transition", stuck.pid())), "the process in hand is finished: {stderr}");
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(summary.contains("left running 1, interrupted by signal 2: 2 processes not attempted"), "{summary}");
    for o in &mut others {
        assert_eq!(o.ask("value"), "value=1", "a process after the interruption was patched");
    }
    stuck.assert_alive();
}
