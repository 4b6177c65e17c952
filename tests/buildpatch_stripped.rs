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

/// Malformed debug files given to `pulp build-patch` (issue 20): one that is not ELF at
/// all and one cut in half are refused with the file named and no patch written; one
/// whose symbol table is garbage never crashes the tool: it is refused naming the file,
/// or the references come from the rebuild and the patch works.
#[test]
fn malformed_debug_files_are_refused_naming_them() {
    let p = Project::new(Compiler::Gcc);
    let debug = p.work.path().join("libbp.so.debug");
    run(tool("objcopy").arg("--only-keep-debug").arg(&p.running).arg(&debug)).assert_ok("objcopy");
    run(tool("strip").arg("--strip-all").arg(&p.running)).assert_ok("strip");
    let no_debug_dir = p.work.path().join("no-debug");
    let good = std::fs::read(&debug).unwrap();

    let not_elf = p.work.path().join("not-elf.debug");
    std::fs::write(&not_elf, b"this is not an ELF file at all\n".repeat(100)).unwrap();
    let cut = p.work.path().join("cut.debug");
    std::fs::write(&cut, &good[..good.len() / 2]).unwrap();
    for bad in [&not_elf, &cut] {
        let out = p.build_patch(
            "mix",
            &["--debug-dir", no_debug_dir.to_str().unwrap(), "--debug-file", bad.to_str().unwrap()],
        );
        assert_eq!(out.code, Some(1), "{out:#?}");
        assert!(out.stderr.contains(bad.to_str().unwrap()), "names the file: {out:#?}");
        assert!(!p.meta("mix").exists(), "no patch written for {}", bad.display());
    }

    // Every byte of its symbol table turned to 0xff: the build-id still matches.
    let garbage = p.work.path().join("garbage.debug");
    let mut bytes = good.clone();
    let file = object::File::parse(&*good).unwrap();
    use object::{Object, ObjectSection};
    let info = file.section_by_name(".symtab").expect("a .symtab");
    let (start, len) = info.file_range().unwrap();
    bytes[start as usize..(start + len) as usize].fill(0xff);
    std::fs::write(&garbage, &bytes).unwrap();
    let out = p.build_patch(
        "mix",
        &["--debug-dir", no_debug_dir.to_str().unwrap(), "--debug-file", garbage.to_str().unwrap()],
    );
    println!("{out:#?}");
    match out.code {
        Some(0) => {
            let mut app = App::start(&p.app);
            apply(app.pid(), &p.meta("mix")).assert_ok("pulp-trigger");
            assert_eq!(app.ask("sync").split(' ').nth(3), Some("163"), "bp_mix(3) once patched");
            app.assert_alive();
        }
        Some(1) => assert!(out.stderr.contains(garbage.to_str().unwrap()), "names the file: {out:#?}"),
        other => panic!("pulp build-patch ended with {other:?} on a garbage debug file: {out:#?}"),
    }
}
