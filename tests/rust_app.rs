//! The Rust example (`examples/rust-app`): a Rust binary calling a C library built
//! live-patchable by its build.rs is patched while it runs, through the `.dsc` the
//! build.rs wrote, and reverted.

use std::path::PathBuf;
use std::process::Command;

use libpulp_rs_tests::{apply, artifacts, pack, revert, App, Work};
use pulp_meta::Prologue;

/// `rust-app --paths`: the library, the patch and the `.dsc` its build.rs made.
fn paths(exe: &std::path::Path) -> [PathBuf; 3] {
    let out = Command::new(exe).arg("--paths").output().unwrap_or_else(|e| panic!("{}: {e}", exe.display()));
    assert!(out.status.success(), "{} --paths: {out:?}", exe.display());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<PathBuf> = text.lines().map(PathBuf::from).collect();
    let [lib, fix, dsc] = <[PathBuf; 3]>::try_from(lines).unwrap_or_else(|l| panic!("three paths expected: {l:?}"));
    for p in [&lib, &fix, &dsc] {
        assert!(p.is_absolute() && p.exists(), "{} is missing", p.display());
    }
    [lib, fix, dsc]
}

#[test]
fn rust_app_is_patched_and_reverted() {
    let work = Work::new();
    let exe = artifacts().dir.join("rust-app");
    assert!(exe.exists(), "{} is missing: run `cargo build --release --workspace` first", exe.display());
    let [lib, _fix, dsc] = paths(&exe);

    // The library was built live-patchable by pulp_cc_build::Build in the build.rs.
    let funcs = pulp_cc_build::inspect::functions(&lib).unwrap();
    for name in ["pricing_total", "pricing_version"] {
        let f = funcs.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("{name} not in {}", lib.display()));
        assert_eq!(f.prologue, Some(Prologue::NopPad66), "{name}");
    }

    let meta = work.path().join("pricing_fix.meta");
    pack(&dsc, &meta).assert_ok("pulp pack");

    let mut app = App::start_with(&exe, true, &[]);
    let pid = app.pid();
    // The bug: exactly 10 items get no bulk discount.
    assert_eq!(app.ask("price 10 250"), "total(10 x 250)=2500");
    assert_eq!(app.ask("price 11 100"), "total(11 x 100)=990");
    assert_eq!(app.ask("version"), "pricing 1.0");

    apply(pid, &meta).assert_ok("pulp-trigger");
    assert_eq!(app.ask("price 10 250"), "total(10 x 250)=2250");
    assert_eq!(app.ask("price 11 100"), "total(11 x 100)=990");
    assert_eq!(app.ask("price 3 100"), "total(3 x 100)=300");
    assert_eq!(app.ask("version"), "pricing 1.0.1 (live patch)");

    revert(pid, &meta).assert_ok("pulp-trigger --revert");
    assert_eq!(app.ask("price 10 250"), "total(10 x 250)=2500");
    assert_eq!(app.ask("version"), "pricing 1.0");
    app.assert_alive();
}
