//! Looking at processes without stopping them: `pulp check` (exit statuses), `pulp
//! messages` (the runtime's log of an apply and of a refusal), `pulp patches --all` (every
//! live-patchable process, each target with the path the process maps it under, labels
//! escaped).

use std::path::{Path, PathBuf};
use std::process::Command;

use libpulp_rs_tests::{artifacts, pack, pulp, trigger, wait_in_syscall, App, CSpec, ToolOutput, Uni, Work, UNI_FUNCS};
use serde_json::Value;

/// nanosleep, clock_nanosleep.
const SYS_SLEEP: &[u64] = &[35, 230];

fn check(pid: u32, meta: &Path) -> ToolOutput {
    pulp(&["check", "-p", &pid.to_string(), meta.to_str().unwrap()])
}

#[test]
fn check_answers_by_exit_status() {
    let work = Work::new();
    let uni = Uni::build(&work);
    let meta = uni.patch(&work, UNI_FUNCS);
    let mut app = App::start(&uni.app);
    let p = app.pid().to_string();
    let m = meta.to_str().unwrap();

    let out = check(app.pid(), &meta);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(out.stdout.contains(&format!("is not applied to PID {p}")), "{out:#?}");

    // A thread that stays inside the library holds the transition: being applied.
    let reply = app.ask("spin 0");
    let tid: u32 = reply.strip_prefix("spinning 0 tid=").and_then(|t| t.parse().ok()).unwrap();
    wait_in_syscall(app.pid(), tid, SYS_SLEEP);
    assert_eq!(trigger(&["--timeout", "0.5", "-p", &p, m]).code, Some(2));
    let out = check(app.pid(), &meta);
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert!(out.stdout.contains(&format!("is being applied to PID {p}: transition")), "{out:#?}");

    trigger(&["--continue", "--force", "-p", &p]).assert_ok("pulp-trigger --continue --force");
    let out = check(app.pid(), &meta);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(out.stdout.contains(&format!("is applied to PID {p} (since")), "{out:#?}");
    let quiet = pulp(&["check", "-q", "-p", &p, m]);
    assert_eq!((quiet.code, quiet.stdout.as_str()), (Some(0), ""), "{quiet:#?}");

    trigger(&["--revert", "--force", "--timeout", "0.5", "-p", &p, m]).assert_ok("pulp-trigger --revert --force");
    assert_eq!(check(app.pid(), &meta).code, Some(1));
    app.assert_alive();

    // This test process has no runtime: it cannot have the patch.
    let out = check(std::process::id(), &meta);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(out.stdout.contains("it has not loaded the runtime"), "{out:#?}");

    // Cannot tell: no such process, a file that is not a patch.meta.
    let out = check(u32::MAX >> 2, &meta);
    assert_eq!(out.code, Some(4), "{out:#?}");
    assert!(out.stderr.starts_with("pulp: error: no process with PID"), "{out:#?}");
    let junk = work.path().join("junk.meta");
    std::fs::write(&junk, b"not a patch").unwrap();
    let out = check(app.pid(), &junk);
    assert_eq!(out.code, Some(4), "{out:#?}");
    assert!(out.stderr.contains("junk.meta"), "{out:#?}");
    assert_eq!(pulp(&["check", "-p", &p]).code, Some(64), "usage error");
}

/// calc.c as `libobserve.so`, the fleet fix (whose `pulp_pre_patch` refuses in a process
/// started with FLEET_VETO), and an application.
fn calc_fixture(work: &Work) -> (PathBuf, PathBuf, PathBuf) {
    let lib = work.shared("observe", &CSpec::patchable(&["calc.c"]));
    let fix = work.shared("fleet_fix", &CSpec::plain(&["fleet_fix.c"]));
    let app = work.executable("observe_app", &CSpec::plain(&["calc_app.c"]).link("observe"));
    (lib, fix, app)
}

#[test]
fn messages_show_an_apply_and_a_refusal() {
    let work = Work::new();
    let (lib, fix, exe) = calc_fixture(&work);
    let meta = work.patch("observe", &fix, &[(&lib, &[("calc", "calc_fixed")])]);
    let mut app = App::start(&exe);
    let mut cmd = Command::new(&exe);
    cmd.env("LD_PRELOAD", &artifacts().runtime).env("FLEET_VETO", "1");
    let mut vetoing = App::start_command(cmd, "vetoing observe_app");

    trigger(&["-p", &app.pid().to_string(), meta.to_str().unwrap()]).assert_ok("pulp-trigger");
    assert_eq!(app.ask("call 5"), "calc(5)=1010");
    let out = pulp(&["messages", "-p", &app.pid().to_string()]);
    out.assert_ok("pulp messages");
    println!("{}", out.stdout);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines.iter().any(|l| l.contains(": loaded, 1 function(s); transition 1 started")), "{out:#?}");
    assert!(lines.iter().any(|l| l.contains("transition 1 finished: 1 patch(es) applied")), "{out:#?}");
    // Each line starts with the UTC time it was written: `YYYY-MM-DD HH:MM:SS UTC `.
    assert!(lines.iter().all(|l| l.len() > 24 && &l[19..24] == " UTC " && l[..4].parse::<u32>().is_ok()), "{out:#?}");

    let refused = trigger(&["-p", &vetoing.pid().to_string(), meta.to_str().unwrap()]);
    refused.assert_refused(&["FLEET_VETO is set"]);
    assert_eq!(vetoing.ask("call 5"), "calc(5)=10");
    let out = pulp(&["messages", "-p", &vetoing.pid().to_string()]);
    out.assert_ok("pulp messages");
    println!("{}", out.stdout);
    assert!(out.stdout.contains("pulp_pre_patch refused it: FLEET_VETO is set"), "{out:#?}");
    assert!(!out.stdout.contains("applied"), "{out:#?}");

    let none = pulp(&["messages", "-p", &std::process::id().to_string()]);
    none.assert_refused(&["has not loaded the libpulp-rs runtime"]);
}

#[test]
fn patches_all_lists_every_live_patchable_process() {
    let work = Work::new();
    let (lib, fix, exe) = calc_fixture(&work);
    // The patch names the library by another path (a copy of the same build): `pulp
    // patches` shows where the process maps it.
    let copy = work.path().join("elsewhere").join("libobserve.so");
    std::fs::create_dir(copy.parent().unwrap()).unwrap();
    std::fs::copy(&lib, &copy).unwrap();
    let dsc = work.path().join("label.dsc");
    std::fs::write(&dsc, format!("{}\n!CVE-1\x1b[2J\n@{}\ncalc:calc_fixed\n", fix.display(), copy.display())).unwrap();
    let meta = work.path().join("label.meta");
    pack(&dsc, &meta).assert_ok("pulp pack");

    let mut patched = App::start(&exe);
    let unpatched = App::start(&exe);
    let no_runtime = App::start_with(&exe, false, &[]);
    trigger(&["-p", &patched.pid().to_string(), meta.to_str().unwrap()]).assert_ok("pulp-trigger");
    assert_eq!(patched.ask("call 5"), "calc(5)=1010");

    // Other processes of this machine may have an incompatible runtime (exit 1 then): only
    // ours are looked at.
    let out = pulp(&["patches", "--all", "--json"]);
    assert!(matches!(out.code, Some(0 | 1)), "{out:#?}");
    let all: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:#?}"));
    let find = |pid: u32| all.as_array().unwrap().iter().find(|p| p["pid"] == pid).cloned();
    let p = find(patched.pid()).unwrap_or_else(|| panic!("PID {} not listed: {out:#?}", patched.pid()));
    assert_eq!(p["name"], "observe_app");
    let target = &p["patches"][0]["targets"][0];
    assert_eq!(target["path"], copy.to_str().unwrap(), "{p:#}");
    assert_eq!(target["mapped"], lib.to_str().unwrap(), "{p:#}");
    assert_eq!(p["patches"][0]["labels"][0], "CVE-1\\x1b[2J", "{p:#}");
    let u = find(unpatched.pid()).unwrap_or_else(|| panic!("PID {} not listed: {out:#?}", unpatched.pid()));
    assert_eq!(u["patches"].as_array().map(Vec::len), Some(0), "{u:#}");
    assert!(find(no_runtime.pid()).is_none(), "a process without the runtime is not live-patchable");
    for pid in [patched.pid(), unpatched.pid()] {
        assert!(!out.stderr.contains(&format!("PID {pid}")), "{out:#?}");
    }

    let text = pulp(&["patches", "--all"]);
    assert!(matches!(text.code, Some(0 | 1)), "{text:#?}");
    println!("{}", text.stdout);
    assert!(text.stdout.contains(&format!("PID {} (observe_app): 1 patch\n", patched.pid())), "{text:#?}");
    assert!(text.stdout.contains(&format!("PID {} (observe_app): 0 patches\n", unpatched.pid())), "{text:#?}");
    assert!(
        text.stdout.contains(&format!("target {} (build-id ", copy.display()))
            && text.stdout.contains(&format!("), mapped as {}\n", lib.display())),
        "{text:#?}"
    );
    assert!(text.stdout.contains("[CVE-1\\x1b[2J]"), "the label is escaped: {text:#?}");
    assert!(!text.stdout.contains('\x1b'), "{text:#?}");
    assert!(!text.stdout.contains(&format!("PID {} ", no_runtime.pid())), "{text:#?}");
}
