//! Initial-exec thread-locals of the running object (as glibc's `errno`): `pulp
//! build-patch` points the changed code's `x@gottpoff` loads at slots the runtime fills
//! with the variable's offset from the thread pointer (`tp-offset` references), and each
//! worker thread of a running process reads and writes its own copies after the patch.
//! A `tp-offset` reference into a library whose thread-locals are not in the static TLS
//! area is refused and the process left as it was.

#[path = "buildpatch/common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use libpulp_rs_tests::{apply, artifacts, run, tool, App, CSpec, Work};

/// Each worker's "PROBE STEP": worker i's id is i + 1, ie_probe() = id * 100, ie_tick()
/// grows by 1 a call.
const BEFORE: &str = "100 1 200 1 300 1 400 1";
/// The fix: ie_probe() = id * 100 + 5, ie_tick() grows by 10.
const AFTER: &str = "105 10 205 10 305 10 405 10";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/buildpatch_ie")
}

/// The library built through pulp-cc with `make` (extra `make` arguments `args`) in
/// `work/DIR`, and ie_app linked to it.
fn build(work: &Work, dir: &str, args: &[&str]) -> (PathBuf, PathBuf) {
    let lib_dir = work.path().join(dir);
    common::copy_dir(&fixtures().join("lib"), &lib_dir);
    let mut make = tool("make");
    make.arg("-s")
        .arg(format!("CC={}", artifacts().dir.join("pulp-cc").display()))
        .args(args)
        .current_dir(&lib_dir)
        .env("PULP_CC_REAL", "gcc");
    run(&mut make).assert_ok("make (the running library)");
    let app = work.executable(
        &format!("ie_app_{dir}"),
        &CSpec::plain(&["buildpatch_ie/ie_app.c"])
            .threads()
            .flag(&format!("-L{}", lib_dir.display()))
            .flag("-lie")
            .flag(&format!("-Wl,-rpath,{}", lib_dir.display())),
    );
    (lib_dir.join("libie.so"), app)
}

fn dynamic_flags(lib: &Path) -> String {
    let out = run(tool("readelf").arg("-dW").arg(lib));
    out.assert_ok("readelf -d");
    out.stdout.lines().filter(|l| l.contains("(FLAGS)")).collect()
}

#[test]
fn initial_exec_thread_locals_are_each_threads_own_after_the_patch() {
    let work = Work::new();
    let src = work.path().join("src");
    common::copy_dir(&fixtures().join("lib"), &src);
    let (running, app_exe) = build(&work, "running", &[]);
    assert!(dynamic_flags(&running).contains("STATIC_TLS"), "{}", dynamic_flags(&running));

    let mut app = App::start(&app_exe);
    assert_eq!(app.ask("sync"), BEFORE);

    let out_dir = work.path().join("out");
    let mut cmd = Command::new(&artifacts().pulp);
    cmd.arg("build-patch")
        .arg("--src")
        .arg(&src)
        .arg("--diff")
        .arg(fixtures().join("diffs/ie.patch"))
        .args(["--build", "make -s", "--name", "ie", "--label", "test initial-exec", "--target"])
        .arg(&running)
        .arg("-o")
        .arg(&out_dir)
        .env("PULP_CC_REAL", "gcc");
    let out = run(&mut cmd);
    out.assert_ok("pulp build-patch (initial-exec thread-locals)");
    println!("{}", out.stdout);
    let dsc = std::fs::read_to_string(out_dir.join("ie.dsc")).unwrap();
    // The exported ie_id and the file-local ie_ticks, both through their offset from the
    // thread pointer.
    for var in ["ie_id", "ie_ticks"] {
        assert!(
            dsc.lines().any(|l| l.starts_with(&format!("#%{var}@")) && l.ends_with(" tp-offset")),
            "no tp-offset reference to {var}:\n{dsc}"
        );
    }

    let meta = out_dir.join("ie.meta");
    apply(app.pid(), &meta).assert_ok("pulp-trigger (initial-exec patch)");
    assert_eq!(app.ask("sync"), AFTER, "every worker sees its own thread-locals through the patch");
    libpulp_rs_tests::revert(app.pid(), &meta).assert_ok("pulp-trigger --revert");
    assert_eq!(app.ask("sync"), BEFORE, "reverted");
    apply(app.pid(), &meta).assert_ok("pulp-trigger (again)");
    assert_eq!(app.ask("sync"), AFTER, "applied again");
    app.assert_alive();
}

/// A patch written by hand: ie_probe reads `ie_id` at `%fs:0 + ref_id`.
const HAND_FIX_C: &str = r#"
long ref_id;
int ie_probe_new(void)
{
    char *tp;
    __asm__("mov %%fs:0, %0" : "=r"(tp));
    return *(int *)(tp + ref_id) * 100 + 5;
}
"#;

#[test]
fn a_thread_pointer_offset_into_dynamic_tls_is_refused() {
    let work = Work::new();
    // Built in the general-dynamic model: no DF_STATIC_TLS.
    let (lib, app_exe) = build(&work, "gd", &["CFLAGS=-O2 -fPIC -Wall"]);
    assert!(!dynamic_flags(&lib).contains("STATIC_TLS"), "{}", dynamic_flags(&lib));
    std::fs::write(work.path().join("hand_fix.c"), HAND_FIX_C).unwrap();
    let fix = work.shared("hand_fix", &CSpec { files: vec![work.path().join("hand_fix.c")], ..Default::default() });
    let dsc = work.dsc("hand", &fix, &[(&lib, &[("ie_probe", "ie_probe_new")])]);
    let mut text = std::fs::read_to_string(&dsc).unwrap();
    text.push_str("#%ie_id:ref_id tp-offset\n");
    std::fs::write(&dsc, text).unwrap();
    let meta = work.path().join("hand.meta");
    libpulp_rs_tests::pack(&dsc, &meta).assert_ok("pulp pack (tp-offset)");

    let mut app = App::start(&app_exe);
    assert_eq!(app.ask("sync"), BEFORE);
    apply(app.pid(), &meta).assert_refused(&["DF_STATIC_TLS"]);
    assert!(apply(app.pid(), &meta).stderr.contains("ie_id"), "the refusal names the variable");
    assert_eq!(app.ask("sync"), BEFORE, "the refused patch changed nothing");
    app.assert_alive();
}
