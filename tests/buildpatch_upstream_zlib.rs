//! A real CVE fix as a live patch: zlib's CVE-2022-37434 (tests/upstream/), in zlib 1.3.2
//! from the libz-sys crate with the bug put back. A running program shows the overflow
//! (a child it forks to read the stream dies), `pulp build-patch` turns the upstream
//! diff into a patch of `inflate()` alone, applied the child survives, reverted it dies
//! again; worker threads compress and uncompress throughout. Built twice (two builds of
//! the sources) and with `--incremental` on a kept build (one unit rebuilt).

#[path = "buildpatch/common.rs"]
mod common;
#[path = "buildpatch/kept.rs"]
mod kept;

use std::path::Path;

use common::{build_patch_incremental, functions_of, recompiled_units, with_bug_put_back, Upstream};
use libpulp_rs_tests::{apply, crate_sources, revert, App, CSpec, ToolOutput, Work};

#[test]
fn zlib_cve_2022_37434_is_fixed_in_a_running_process() {
    let up = Upstream::new(&crate_sources("libz-sys", "src/zlib"), "zlib.mk", "zlib-CVE-2022-37434.patch");
    let out = up.build_patch("libz.so", "CVE-2022-37434");
    check_patch(&out, &up.out("fix.so"), &up.running_dir.join("libz.so"));
    live(&up.work, &up.src, &up.running_dir, &up.work.path().join("out"));
}

#[test]
fn zlib_cve_2022_37434_built_incrementally_on_a_kept_build() {
    let sources = crate_sources("libz-sys", "src/zlib");
    let kept = kept::kept_build(
        "zlib-1.3.2-CVE-2022-37434",
        |dir| {
            with_bug_put_back(&sources, "zlib.mk", "zlib-CVE-2022-37434.patch", dir);
        },
        "make -s -j2",
    );
    let work = Work::new();
    let fix = common::upstream_fix("zlib-CVE-2022-37434.patch");
    let out = build_patch_incremental(work.path(), &kept, &fix, "make -s -j2", "libz.so", "CVE-2022-37434");
    check_patch(&out, &work.path().join("out/fix.so"), &kept.join("libz.so"));
    // Only the unit the diff touches was compiled, once (no build of the original).
    assert_eq!(recompiled_units(&work.path().join("bp")), ["inflate.o"]);
    assert!(out.stdout.contains("builds: kept build before (1 side compiles run again: "), "{}", out.stdout);
    assert!(!work.path().join("bp/before").exists(), "no copy of the original was built");
    live(&work, &kept, &kept, &work.path().join("out"));
}

/// The patch holds `inflate()` alone; what it calls is the running library's.
fn check_patch(out: &ToolOutput, so: &Path, library: &Path) {
    out.assert_ok("pulp build-patch (zlib)");
    println!("{}", out.stdout);
    assert!(out.stdout.contains("changed functions: inflate (inflate.c)\n"), "{}", out.stdout);
    let held: Vec<String> = functions_of(so).into_iter().filter(|f| !f.starts_with("__pulp_new_")).collect();
    assert_eq!(held, ["__pulp_got", "inflate"]);
    for callee in ["updatewindow", "inflate_fast", "inflate_table", "inflateStateCheck"] {
        assert!(out.stdout.contains(callee), "`{callee}` should be a reference: {}", out.stdout);
    }
    let (patch, lib) = (std::fs::metadata(so).unwrap().len(), std::fs::metadata(library).unwrap().len());
    println!("patch object: {patch} bytes; libz.so: {lib} bytes");
    assert!(patch < lib / 2, "the patch object ({patch} bytes) is not much smaller than the library ({lib} bytes)");
}

/// The application on `running_dir/libz.so`: the bug, the patch `out/fix.meta` applied
/// (fixed), reverted (the bug again), the workers fine throughout.
fn live(work: &Work, include: &Path, running_dir: &Path, out: &Path) {
    let app = work.executable(
        "zlib_app",
        &CSpec::plain(&["buildpatch/upstream/zlib_app.c"])
            .threads()
            .flag(&format!("-I{}", include.display()))
            .flag(&format!("-L{}", running_dir.display()))
            .flag("-lz")
            .flag(&format!("-Wl,-rpath,{}", running_dir.display())),
    );
    let mut app = App::start(&app);
    let pid = app.pid();
    assert_eq!(app.ask("check"), "crashed: signal 11", "the bug shows before the patch");
    assert_eq!(app.ask("sync"), "workers ok");

    apply(pid, &out.join("fix.meta")).assert_ok("pulp-trigger");
    assert_eq!(app.ask("check"), "ok: kept 16 extra bytes, data intact");
    assert_eq!(app.ask("sync"), "workers ok");

    revert(pid, &out.join("fix.meta")).assert_ok("pulp-trigger --revert");
    assert_eq!(app.ask("check"), "crashed: signal 11", "the bug is back after the revert");
    assert_eq!(app.ask("sync"), "workers ok");
    app.assert_alive();
}

/// `--incremental` on a tree that was not built through pulp-cc: refused, saying how to
/// build it, and nothing is written.
#[test]
fn incremental_needs_a_tree_built_through_pulp_cc() {
    let work = Work::new();
    let src = work.path().join("src");
    with_bug_put_back(&crate_sources("libz-sys", "src/zlib"), "zlib.mk", "zlib-CVE-2022-37434.patch", &src);
    // Any object with a build-id: the records are checked before the build.
    std::fs::copy("/bin/true", src.join("libz.so")).unwrap();
    let fix = common::upstream_fix("zlib-CVE-2022-37434.patch");
    let out = build_patch_incremental(work.path(), &src, &fix, "make -s", "libz.so", "x");
    assert_eq!(out.code, Some(1), "{out:#?}");
    for w in [".pulp-records/records.jsonl", "PULP_BUILDPATCH_RECORD_ONLY=1", "drop --incremental"] {
        assert!(out.stderr.contains(w), "the error does not say `{w}`: {}", out.stderr);
    }
    assert!(!work.path().join("out/fix.so").exists() && !work.path().join("bp/after").exists());
}
