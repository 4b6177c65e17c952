//! What `pulp pack` and `pulp livepatchable` say on the command line: plurals, a reason
//! given once, comments and labels before the patch `.so`, the `.dsc` syntax in `--help`,
//! and stripped targets through `--debug-file`.

use std::process::Command;

use libpulp_rs_tests::tool;
use libpulp_rs_tests::{pack, pulp, run, CSpec, Work};

#[test]
fn counts_are_written_with_plurals() {
    let work = Work::new();
    let lib = work.shared("calc", &CSpec::patchable(&["calc.c"]));
    let fix = work.shared("calc_fix", &CSpec::plain(&["calc_fix.c"]));
    let dsc = work.dsc("one", &fix, &[(&lib, &[("calc", "calc_fixed")])]);
    let meta = work.path().join("one.meta");
    let out = pack(&dsc, &meta);
    out.assert_ok("pulp pack");
    assert_eq!(out.stdout.trim(), format!("packed 1 function in 1 target into {}", meta.display()));
}

#[test]
fn comments_blank_lines_and_labels_may_come_before_the_patch_so() {
    let work = Work::new();
    work.shared("calc", &CSpec::patchable(&["calc.c"]));
    work.shared("calc_fix", &CSpec::plain(&["calc_fix.c"]));
    let dsc = work.path().join("c.dsc");
    std::fs::write(
        &dsc,
        "# Fix for calc.\n\n!CVE-2026-0001   # the label\n// another comment\nlibcalc_fix.so\n; old-style comment\n\
         @libcalc.so # the target\ncalc:calc_fixed\n",
    )
    .unwrap();
    let meta = work.path().join("c.meta");
    pack(&dsc, &meta).assert_ok("pulp pack");
    let dump = pulp(&["dump", "--json", meta.to_str().unwrap()]);
    dump.assert_ok("pulp dump");
    let v: serde_json::Value = serde_json::from_str(&dump.stdout).unwrap();
    assert_eq!(v["labels"], serde_json::json!(["CVE-2026-0001"]), "{v}");
}

#[test]
fn the_dsc_syntax_is_in_the_help() {
    let out = pulp(&["pack", "--help"]);
    out.assert_ok("pulp pack --help");
    for item in [
        "#counter:ref_counter",
        "#%tls_var:ref_tls",
        "got-relative",
        "%replace",
        "%state",
        "# text",
        "--debug-file",
        "memcpy@@GLIBC_2.14",
    ] {
        assert!(out.stdout.contains(item), "`{item}` is not in pulp pack --help:\n{}", out.stdout);
    }
}

#[test]
fn livepatchable_gives_its_reason_once() {
    let work = Work::new();
    let plain = work.shared("plain", &CSpec::plain(&["calc.c"]));
    let out = pulp(&["livepatchable", plain.to_str().unwrap()]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert_eq!(out.stderr, "", "the reason goes to stdout only: {out:#?}");
    let reason = "no function has a patchable prologue";
    assert_eq!(out.stdout.matches(reason).count(), 1, "{out:#?}");
    assert!(out.stdout.trim_end().ends_with("(build it with pulp-cc or -fpatchable-function-entry=16,14)"), "{out:#?}");
}

#[test]
fn stripped_targets_are_read_through_their_debug_file() {
    let work = Work::new();
    let w = work.path();
    let lib = work.shared("refs", &CSpec::patchable(&["refs/refs_lib.c"]));
    work.shared("reffix", &CSpec::plain(&["refs/refs_fix.c"]));
    let debug = w.join("librefs.debug");
    run(tool("objcopy").arg("--only-keep-debug").arg(&lib).arg(&debug)).assert_ok("objcopy");
    run(tool("strip").arg("--strip-all").arg(&lib)).assert_ok("strip");
    let dsc = w.join("s.dsc");
    std::fs::write(&dsc, "libreffix.so\n@librefs.so\nrefs_wrap:refs_wrap_new\n#helper:ref_helper\n").unwrap();
    let meta = w.join("s.meta");
    let empty_root = w.join("no-debug-here");

    let out = run(Command::new(&libpulp_rs_tests::artifacts().pulp)
        .args(["pack", "--debug-dir"])
        .arg(&empty_root)
        .arg(&dsc)
        .arg("-o")
        .arg(&meta));
    out.assert_refused(&["stripped and no debug file was found"]);
    assert!(out.stderr.contains(":4: reference to `helper`"), "{out:#?}");

    let out = run(Command::new(&libpulp_rs_tests::artifacts().pulp)
        .args(["pack", "--debug-dir"])
        .arg(&empty_root)
        .arg("--debug-file")
        .arg(&debug)
        .arg(&dsc)
        .arg("-o")
        .arg(&meta));
    out.assert_ok("pulp pack --debug-file");
    assert_eq!(out.stdout.trim(), format!("packed 1 function and 1 reference in 1 target into {}", meta.display()));

    // `pulp livepatchable` finds the static functions the same way.
    let out = run(Command::new(&libpulp_rs_tests::artifacts().pulp)
        .args(["livepatchable", "--debug-file"])
        .arg(&debug)
        .arg(&lib));
    out.assert_ok("pulp livepatchable --debug-file");
    assert!(out.stdout.contains(&format!("symbols from the debug file {}", debug.display())), "{out:#?}");
    assert!(out.stdout.lines().any(|l| l.trim_start().starts_with("helper ") && l.contains("local")), "{out:#?}");
    let out = run(Command::new(&libpulp_rs_tests::artifacts().pulp)
        .args(["livepatchable", "--debug-dir"])
        .arg(&empty_root)
        .arg(&lib));
    assert!(out.stdout.contains("stripped, and no debug file was found"), "{out:#?}");
    assert!(!out.stdout.lines().any(|l| l.trim_start().starts_with("helper ")), "{out:#?}");
}
