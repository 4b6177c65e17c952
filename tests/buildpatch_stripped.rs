//! `pulp build-patch` for a stripped running library, as distributions ship them: the
//! references to its static and hidden functions are found through its debug file
//! (`--debug-file`), or, with none, through the rebuild, whose code was checked identical.

#[path = "buildpatch/common.rs"]
mod common;

use std::process::Command;

use common::{Compiler, Project};
use libpulp_rs_tests::tool;
use libpulp_rs_tests::{apply, revert, run, App};

#[test]
fn a_stripped_library_is_patched_through_its_debug_file_or_the_rebuild() {
    let p = Project::new(Compiler::Gcc);
    let debug = p.work.path().join("libbp.so.debug");
    run(tool("objcopy").arg("--only-keep-debug").arg(&p.running).arg(&debug)).assert_ok("objcopy");
    run(tool("strip").arg("--strip-all").arg(&p.running)).assert_ok("strip");
    let no_debug_dir = p.work.path().join("no-debug");

    let mut app = App::start(&p.app);
    let pid = app.pid();
    let before = app.ask("sync");
    for extra in [vec!["--debug-file", debug.to_str().unwrap()], vec![]] {
        let mut args = vec!["--debug-dir", no_debug_dir.to_str().unwrap()];
        args.extend(extra.iter().copied());
        let out = p.build_patch("mix", &args);
        out.assert_ok(&format!("pulp build-patch on a stripped library {extra:?}"));
        assert!(out.stdout.contains("references to the running object: 2 (bp_hidden, offset)"), "{}", out.stdout);
        apply(pid, &p.meta("mix")).assert_ok("pulp-trigger");
        assert_eq!(app.ask("sync").split(' ').nth(3), Some("163"), "bp_mix(3) once patched ({extra:?})");
        revert(pid, &p.meta("mix")).assert_ok("pulp-trigger --revert");
        assert_eq!(app.ask("sync"), before);
    }
    // Packing the generated .dsc again needs the symbols: with the debug file it packs.
    let dsc = p.work.path().join("out-mix/mix.dsc");
    let out = libpulp_rs_tests::run(
        Command::new(&libpulp_rs_tests::artifacts().pulp)
            .args(["pack", "--debug-dir", no_debug_dir.to_str().unwrap(), "--debug-file"])
            .arg(&debug)
            .arg(&dsc)
            .arg("-o")
            .arg(p.work.path().join("again.meta")),
    );
    out.assert_ok("pulp pack of the generated .dsc");
}
