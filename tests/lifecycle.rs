//! The patch lifecycle, modelled on the kernel livepatch's selftests (callbacks, atomic
//! replace, states): a multi-threaded process with the runtime preloaded, whose threads
//! check all the while that they never see two patch levels in one library call; built
//! with gcc and with clang.
//!
//! - callbacks run once each, in the kernel's order, and a `pulp_pre_patch` veto leaves
//!   the process untouched; a rolled-back apply runs `post_unpatch`, not `post_patch`;
//! - three cumulative (`%replace`) patches applied in turn, each dropping and adding
//!   functions, then the last reverted: the original code is back; the replaced patches
//!   are listed as replaced and their callbacks do not run;
//! - a patch declaring an older version of a state than an applied one is refused, and a
//!   newer one's callback sees the version applied before it.

use std::path::{Path, PathBuf};

use libpulp_rs_tests::{patches_json, pulp, trigger, wait_in_syscall, App, CSpec, Work};

const SYS_READ: u64 = 0;

struct Life {
    work: Work,
    lib: PathBuf,
    app: PathBuf,
    fixes: Vec<PathBuf>,
}

impl Life {
    fn build(cc: &str) -> Life {
        let work = Work::new();
        let include = format!("-I{}/runtime/include", env!("CARGO_MANIFEST_DIR"));
        let lib = work.shared("life", &CSpec::patchable(&["life/life_lib.c"]).compiler(cc));
        let app = work.executable(
            "life_app",
            &CSpec::plain(&["life/life_app.c"]).compiler(cc).link("life").threads().flag("-rdynamic"),
        );
        let fixes = (1..=3)
            .map(|level| {
                let spec = CSpec::plain(&["life/life_fix.c"])
                    .compiler(cc)
                    .define("LEVEL", Some(&level.to_string()))
                    .flag(&include);
                work.shared(&format!("life_fix{level}"), &spec)
            })
            .collect();
        Life { work, lib, app, fixes }
    }

    /// Pack `name.meta`: the patch of `level` replacing `funcs` (fN -> fN_new), with the
    /// given option lines.
    fn patch(&self, name: &str, level: usize, funcs: &[&str], options: &[&str]) -> PathBuf {
        let pairs: Vec<(String, String)> = funcs.iter().map(|f| (f.to_string(), format!("{f}_new"))).collect();
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        self.work.patch_with_options(name, &self.fixes[level - 1], &[(self.lib.as_path(), &pairs)], options)
    }
}

fn apply(pid: u32, meta: &Path) -> libpulp_rs_tests::ToolOutput {
    trigger(&["-p", &pid.to_string(), meta.to_str().unwrap()])
}

fn revert(pid: u32, meta: &Path) -> libpulp_rs_tests::ToolOutput {
    trigger(&["--revert", "-p", &pid.to_string(), meta.to_str().unwrap()])
}

/// New events since the last call.
fn new_events(app: &mut App, seen: &mut usize) -> String {
    let all = app.ask("events");
    let words: Vec<&str> = if all == "-" { Vec::new() } else { all.split(' ').collect() };
    let fresh = words[*seen..].join(" ");
    *seen = words.len();
    fresh
}

/// Assert the new events, with the runtime's log when they differ (a callback that was
/// abandoned or refused says so there).
fn assert_events(app: &mut App, seen: &mut usize, want: &str) {
    let got = new_events(app, seen);
    if got != want {
        let log = pulp(&["messages", "-p", &app.pid().to_string()]);
        panic!("events: got {got:?}, want {want:?}\nruntime log:\n{}{}", log.stdout, log.stderr);
    }
}

fn assert_not_mixed(app: &mut App) {
    let line = app.ask("mixed");
    assert!(line.starts_with("mixed=0 "), "a thread saw two patch levels in one call: {line}");
}

fn callbacks(cc: &str) {
    let life = Life::build(cc);
    let p1 = life.patch("p1", 1, &["f1", "f2"], &[]);
    let mut app = App::start(&life.app);
    let pid = app.pid();
    let mut seen = 0;
    assert_eq!(app.ask("threads 4"), "threads 4");
    assert_eq!(app.ask("calls"), "f1=1 f2=2 f3=3");

    // A veto: nothing changes, the tool says why, exit 1.
    assert_eq!(app.ask("veto not on a Tuesday"), "veto set");
    let out = apply(pid, &p1);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(out.stderr.contains("pulp_pre_patch refused it: not on a Tuesday"), "{out:#?}");
    assert_events(&mut app, &mut seen, "pre_patch:1(state7=-1)");
    assert_eq!(app.ask("calls"), "f1=1 f2=2 f3=3");
    assert!(patches_json(pid)["patches"].as_array().unwrap().is_empty(), "the refused patch is not listed");

    // Apply then revert: each callback once, in order.
    apply(pid, &p1).assert_ok("apply");
    assert_events(&mut app, &mut seen, "pre_patch:1(state7=-1) post_patch:1");
    assert_eq!(app.ask("calls"), "f1=101 f2=102 f3=3");
    apply(pid, &p1).assert_ok("apply again");
    assert_eq!(new_events(&mut app, &mut seen), "", "applying twice runs no callback");
    revert(pid, &p1).assert_ok("revert");
    assert_events(&mut app, &mut seen, "pre_unpatch:1 post_unpatch:1");
    assert_eq!(app.ask("calls"), "f1=1 f2=2 f3=3");

    // An apply rolled back (a thread stays inside): post_unpatch, never post_patch. The
    // timeout also bounds the reversal, in which the workers looping through the targets
    // must each be seen outside once: 0.5 s was too short at load 10 (the machine's
    // average with other builds running).
    assert_eq!(app.ask("block"), "blocked");
    let blocked = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .max()
        .unwrap();
    wait_in_syscall(pid, blocked, &[SYS_READ]);
    let out = trigger(&["--timeout", "2", "--reverse", "-p", &pid.to_string(), p1.to_str().unwrap()]);
    out.assert_ok("apply --reverse");
    assert!(out.stdout.contains("rolled back"), "{out:#?}");
    assert_events(&mut app, &mut seen, "pre_patch:1(state7=-1) post_unpatch:1");
    assert_eq!(app.ask("unblock"), "unblocked");
    assert_eq!(app.ask("calls"), "f1=1 f2=2 f3=3");
    assert_not_mixed(&mut app);
    app.assert_alive();
}

fn cumulative(cc: &str) {
    let life = Life::build(cc);
    let p1 = life.patch("c1", 1, &["f1", "f2"], &["replace"]);
    let p2 = life.patch("c2", 2, &["f2", "f3"], &["replace"]);
    let p3 = life.patch("c3", 3, &["f1"], &["replace"]);
    let mut app = App::start(&life.app);
    let pid = app.pid();
    let mut seen = 0;
    assert_eq!(app.ask("threads 4"), "threads 4");

    apply(pid, &p1).assert_ok("apply level 1");
    assert_eq!(app.ask("calls"), "f1=101 f2=102 f3=3");
    apply(pid, &p2).assert_ok("apply level 2");
    assert_eq!(app.ask("calls"), "f1=1 f2=202 f3=203", "level 2 dropped f1 and added f3");
    apply(pid, &p3).assert_ok("apply level 3");
    assert_eq!(app.ask("calls"), "f1=301 f2=2 f3=3", "level 3 keeps only f1");
    // Only the cumulative patches' own callbacks ran, never the replaced ones'.
    assert_events(
        &mut app,
        &mut seen,
        "pre_patch:1(state7=-1) post_patch:1 pre_patch:2(state7=-1) post_patch:2 pre_patch:3(state7=-1) post_patch:3",
    );
    let status = patches_json(pid);
    let states: Vec<&str> =
        status["patches"].as_array().unwrap().iter().map(|p| p["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["replaced", "replaced", "applied"], "{status:#}");
    let text = pulp(&["patches", "-p", &pid.to_string()]);
    assert!(text.stdout.contains("replaced"), "{text:#?}");

    // A replaced patch cannot be reverted; the cumulative one goes back to the original.
    let out = revert(pid, &p1);
    out.assert_ok("revert a replaced patch");
    assert!(out.stdout.contains("not applied"), "{out:#?}");
    // A replaced patch cannot be applied while its cumulative patch is, and the message
    // says what to do.
    let out = apply(pid, &p1);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(
        out.stderr.contains("was replaced by the cumulative patch") && out.stderr.contains("revert that one first")
    );
    assert_eq!(pulp(&["check", "-p", &pid.to_string(), p1.to_str().unwrap()]).code, Some(3), "replaced");
    revert(pid, &p3).assert_ok("revert level 3");
    assert_eq!(app.ask("calls"), "f1=1 f2=2 f3=3");
    assert_events(&mut app, &mut seen, "pre_unpatch:3 post_unpatch:3");
    // As in the kernel, reverting a cumulative patch gives the original code back and the
    // patches it replaced are gone: not listed, not applied, and they can be applied again.
    let status = patches_json(pid);
    assert!(status["patches"].as_array().unwrap().is_empty(), "{status:#}");
    let check = pulp(&["check", "-p", &pid.to_string(), p1.to_str().unwrap()]);
    assert_eq!(check.code, Some(1), "{check:#?}");
    assert!(!check.stdout.contains("replaced"), "{check:#?}");
    assert!(pulp(&["messages", "-p", &pid.to_string()]).stdout.contains("had replaced are gone"));
    apply(pid, &p1).assert_ok("apply level 1 again");
    assert_eq!(app.ask("calls"), "f1=101 f2=102 f3=3");
    assert_events(&mut app, &mut seen, "pre_patch:1(state7=-1) post_patch:1");
    revert(pid, &p1).assert_ok("revert level 1");
    assert_events(&mut app, &mut seen, "pre_unpatch:1 post_unpatch:1");
    assert_not_mixed(&mut app);
    let line = app.ask("mixed");
    let loops: u64 = line.rsplit_once("loops=").unwrap().1.parse().unwrap();
    assert!(loops > 0, "the threads ran: {line}");
    app.assert_alive();
}

/// `--revert-all` tears the stack down newest first, as reverting one patch at a time from
/// the top would: pre-unpatch of the newest, then of the older; post-unpatch likewise.
fn revert_all_order(cc: &str) {
    let life = Life::build(cc);
    let p1 = life.patch("r1", 1, &["f1"], &[]);
    let p2 = life.patch("r2", 2, &["f2"], &[]);
    let mut app = App::start(&life.app);
    let pid = app.pid();
    let mut seen = 0;
    apply(pid, &p1).assert_ok("apply 1");
    apply(pid, &p2).assert_ok("apply 2");
    assert_eq!(app.ask("calls"), "f1=101 f2=202 f3=3");
    assert_events(&mut app, &mut seen, "pre_patch:1(state7=-1) post_patch:1 pre_patch:2(state7=-1) post_patch:2");
    let out = trigger(&["--revert-all", life.lib.to_str().unwrap(), "-p", &pid.to_string()]);
    out.assert_ok("--revert-all");
    assert_eq!(app.ask("calls"), "f1=1 f2=2 f3=3");
    assert_events(&mut app, &mut seen, "pre_unpatch:2 pre_unpatch:1 post_unpatch:2 post_unpatch:1");
    app.assert_alive();
}

fn states(cc: &str) {
    let life = Life::build(cc);
    let v2 = life.patch("s2", 1, &["f1"], &["state 7 2", "level 4"]);
    let v1 = life.patch("s1", 2, &["f2"], &["state 7 1"]);
    let v3 = life.patch("s3", 3, &["f3"], &["state 7 3"]);
    let mut app = App::start(&life.app);
    let pid = app.pid();
    let mut seen = 0;
    apply(pid, &v2).assert_ok("state 7 version 2");
    // `pulp patches` shows the level, the labels and the states.
    let text = pulp(&["patches", "-p", &pid.to_string()]);
    assert!(text.stdout.contains(" level 4 applied") && text.stdout.contains("state 7 version 2"), "{text:#?}");
    assert!(text.stdout.contains("[test s2]"), "the .dsc's label: {text:#?}");
    let json = patches_json(pid);
    assert_eq!(json["patches"][0]["level"], 4, "{json:#}");
    assert_eq!(json["patches"][0]["states"][0]["version"], 2, "{json:#}");
    let out = apply(pid, &v1);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(out.stderr.contains("state 7 version 1, lower than version 2"), "{out:#?}");
    assert_eq!(app.ask("calls"), "f1=101 f2=2 f3=3", "the refused patch changed nothing");
    apply(pid, &v3).assert_ok("state 7 version 3");
    assert_eq!(app.ask("calls"), "f1=101 f2=2 f3=303");
    // Its pre-patch callback learnt what the applied patches had set up: version 2.
    assert_events(&mut app, &mut seen, "pre_patch:1(state7=-1) post_patch:1 pre_patch:3(state7=2) post_patch:3");
    app.assert_alive();
}

#[test]
fn callbacks_gcc() {
    callbacks("gcc");
}

#[test]
fn callbacks_clang() {
    callbacks("clang");
}

#[test]
fn cumulative_gcc() {
    cumulative("gcc");
}

#[test]
fn cumulative_clang() {
    cumulative("clang");
}

#[test]
fn states_gcc() {
    states("gcc");
}

#[test]
fn states_clang() {
    states("clang");
}

#[test]
fn revert_all_order_gcc() {
    revert_all_order("gcc");
}

#[test]
fn revert_all_order_clang() {
    revert_all_order("clang");
}
