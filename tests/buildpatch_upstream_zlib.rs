//! A real CVE fix as a live patch: zlib's CVE-2022-37434 (tests/upstream/), in zlib 1.3.2
//! from the libz-sys crate with the bug put back. A running program shows the overflow
//! (a child it forks to read the stream dies), `pulp build-patch` turns the upstream
//! diff into a patch of `inflate()` alone, applied the child survives, reverted it dies
//! again; worker threads compress and uncompress throughout.

#[path = "buildpatch/common.rs"]
mod common;

use common::{functions_of, Upstream};
use libpulp_rs_tests::{apply, crate_sources, revert, App, CSpec};

#[test]
fn zlib_cve_2022_37434_is_fixed_in_a_running_process() {
    let up = Upstream::new(&crate_sources("libz-sys", "src/zlib"), "zlib.mk", "zlib-CVE-2022-37434.patch");
    let library = up.running_dir.join("libz.so");
    let app = up.work.executable(
        "zlib_app",
        &CSpec::plain(&["buildpatch/upstream/zlib_app.c"])
            .threads()
            .flag(&format!("-I{}", up.src.display()))
            .flag(&format!("-L{}", up.running_dir.display()))
            .flag("-lz")
            .flag(&format!("-Wl,-rpath,{}", up.running_dir.display())),
    );

    let out = up.build_patch("libz.so", "CVE-2022-37434");
    out.assert_ok("pulp build-patch (zlib)");
    println!("{}", out.stdout);
    assert!(out.stdout.contains("changed functions: inflate (inflate.c)\n"), "{}", out.stdout);
    // Only inflate(); what it calls (static, hidden or exported) is the running library's.
    let held: Vec<String> =
        functions_of(&up.out("fix.so")).into_iter().filter(|f| !f.starts_with("__pulp_new_")).collect();
    assert_eq!(held, ["__pulp_got", "inflate"]);
    for callee in ["updatewindow", "inflate_fast", "inflate_table", "inflateStateCheck"] {
        assert!(out.stdout.contains(callee), "`{callee}` should be a reference: {}", out.stdout);
    }
    let (patch, lib) = (std::fs::metadata(up.out("fix.so")).unwrap().len(), std::fs::metadata(&library).unwrap().len());
    println!("patch object: {patch} bytes; libz.so: {lib} bytes");
    assert!(patch < lib / 2, "the patch object ({patch} bytes) is not much smaller than the library ({lib} bytes)");

    let mut app = App::start(&app);
    let pid = app.pid();
    assert_eq!(app.ask("check"), "crashed: signal 11", "the bug shows before the patch");
    assert_eq!(app.ask("sync"), "workers ok");

    apply(pid, &up.out("fix.meta")).assert_ok("pulp-trigger");
    assert_eq!(app.ask("check"), "ok: kept 16 extra bytes, data intact");
    assert_eq!(app.ask("sync"), "workers ok");

    revert(pid, &up.out("fix.meta")).assert_ok("pulp-trigger --revert");
    assert_eq!(app.ask("check"), "crashed: signal 11", "the bug is back after the revert");
    assert_eq!(app.ask("sync"), "workers ok");
    app.assert_alive();
}
