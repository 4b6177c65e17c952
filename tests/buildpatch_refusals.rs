//! What `pulp build-patch` refuses, with the reason, writing nothing: a changed initial
//! value of existing data, a changed struct layout, a changed function without
//! patchable prologue, a changed function that never returns, a running object that is
//! not the rebuild of the sources, a library built with link-time optimisation, a diff
//! that does not apply, the dynamic linker as the target.

#[path = "buildpatch/common.rs"]
mod common;

use common::{assert_refused, Compiler, Project};
use libpulp_rs_tests::ToolOutput;

/// `pulp build-patch` of the project's sources with `diff` for `target`, building in
/// `work/bp`, into `work/OUT`.
fn build_patch(p: &Project, diff: &std::path::Path, target: &std::path::Path, out: &str) -> ToolOutput {
    libpulp_rs_tests::run(
        std::process::Command::new(&libpulp_rs_tests::artifacts().pulp)
            .arg("build-patch")
            .arg("--src")
            .arg(&p.src)
            .arg("--diff")
            .arg(diff)
            .args(["--build", "make -s", "--work-dir"])
            .arg(p.work.path().join("bp"))
            .arg("--target")
            .arg(target)
            .arg("-o")
            .arg(p.work.path().join(out)),
    )
}

fn nothing_written(p: &Project, diff: &str) {
    assert!(!p.patch_so(diff).exists() && !p.meta(diff).exists(), "{diff}: a refused patch was written");
}

#[test]
fn changes_that_cannot_be_live_patched_are_refused() {
    let p = Project::new(Compiler::Gcc);

    let out = p.build_patch("table", &[]);
    assert_refused(&out, &["cannot live-patch this change", "the initial value of `bp_table` (bp.c) changes"]);
    nothing_written(&p, "table");

    let out = p.build_patch("layout", &[]);
    assert_refused(&out, &["struct `bp_pair` changes layout (bp.c): its size changes from 8 to 16 bytes"]);
    nothing_written(&p, "layout");

    let out = p.build_patch("unpadded", &[]);
    assert_refused(&out, &["function `bp_unpadded` (bp.c) changed, but it has no patchable prologue in"]);
    nothing_written(&p, "unpadded");

    let out = p.build_patch("forever", &[]);
    assert_refused(
        &out,
        &["function `bp_forever` (bp.c) never returns", "--timeout", "pulp_quiescent", "--allow-endless"],
    );
    nothing_written(&p, "forever");
    // Asked for, it is patched, with the warning.
    let out = p.build_patch("forever", &["--allow-endless"]);
    out.assert_ok("pulp build-patch --allow-endless");
    assert!(out.stdout.contains("warning: function `bp_forever` (bp.c) never returns"), "{}", out.stdout);
    assert!(p.meta("forever").exists());
}

#[test]
fn a_running_object_built_otherwise_is_refused() {
    // The running library was built with -O1: the rebuild of the sources is not it.
    let p = Project::with_make_flags(Compiler::Gcc, &["CFLAGS=-O1 -fPIC"]);
    let out = p.build_patch("exported", &[]);
    assert_refused(&out, &["does not match", &p.running.display().to_string(), "content differs at", "build-ids"]);
    nothing_written(&p, "exported");
}

#[test]
fn a_library_built_with_lto_is_refused() {
    let flags = "CFLAGS=-O2 -fPIC -flto";
    let p = Project::with_make_flags(Compiler::Gcc, &[flags]);
    let out = p.build_patch_with("exported", &format!("make -s '{flags}'"), &[]);
    assert_refused(&out, &["is built with link-time optimisation (-flto: bp.c, bp_util.c", "build it without -flto"]);
    nothing_written(&p, "exported");
}

#[test]
fn a_diff_that_does_not_apply_is_refused() {
    let p = Project::new(Compiler::Gcc);
    let bad = p.work.path().join("bad.patch");
    std::fs::write(&bad, "--- a/nope.c\n+++ b/nope.c\n@@ -1 +1 @@\n-int x;\n+int y;\n").unwrap();
    let out = build_patch(&p, &bad, &p.running, "out-bad");
    assert_refused(&out, &["bad.patch does not apply to the sources (patch -p1)", "nope.c"]);
}

/// The dynamic linker (here the system's) is refused as a target before anything is
/// built: its code runs at start-up, before a patch can be loaded, and loads the patches.
#[test]
fn the_dynamic_linker_is_refused_as_a_target() {
    let p = Project::new(Compiler::Gcc);
    let ld_so = std::path::Path::new("/lib64/ld-linux-x86-64.so.2");
    libpulp_rs_tests::require_tool(&ld_so.display().to_string());
    let out = build_patch(&p, &common::fixtures().join("diffs/exported.patch"), ld_so, "out-ld");
    assert_refused(
        &out,
        &["is the dynamic linker (ld.so, soname ld-linux-x86-64.so.2)", "before any patch can be loaded"],
    );
    assert!(!p.work.path().join("bp/before").exists(), "nothing was built");
    assert!(!p.work.path().join("out-ld/exported.meta").exists());
}
