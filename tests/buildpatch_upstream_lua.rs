//! A real bug fix as a live patch: Lua 5.4.7's "wrong code gen. for indices with
//! comparisons" (tests/upstream/), in Lua 5.4.9 from the lua-src crate with the bug put
//! back. Worker threads of a running program each compile and run a chunk that indexes
//! `_ENV[1 < 2]`: with the bug they all get "attempt to index a number value"; after
//! `pulp build-patch` and `pulp-trigger` every one of them gets 10; reverted, the error.

#[path = "buildpatch/common.rs"]
mod common;

use common::{functions_of, Upstream};
use libpulp_rs_tests::{apply, crate_sources, revert, App, CSpec};

const BUG: &str = "error: [string \"_ENV[true] = 10...\"]:2: attempt to index a number value";

#[test]
fn lua_code_generation_bug_is_fixed_in_a_running_process() {
    let up = Upstream::new(&crate_sources("lua-src", "lua-5.4.9"), "lua.mk", "lua-782ef85b.patch");
    let library = up.running_dir.join("liblua.so");
    let app = up.work.executable(
        "lua_app",
        &CSpec::plain(&["buildpatch/upstream/lua_app.c"])
            .threads()
            .flag(&format!("-I{}", up.src.display()))
            .flag(&format!("-L{}", up.running_dir.display()))
            .flag("-llua")
            .flag(&format!("-Wl,-rpath,{}", up.running_dir.display())),
    );

    let out = up.build_patch("liblua.so", "lua 782ef85b");
    out.assert_ok("pulp build-patch (Lua)");
    println!("{}", out.stdout);
    let changed = out.stdout.lines().find(|l| l.starts_with("changed functions:")).unwrap_or("");
    assert!(changed.contains("luaK_exp2val (lcode.c)"), "{}", out.stdout);
    let held: Vec<String> =
        functions_of(&up.out("fix.so")).into_iter().filter(|f| !f.starts_with("__pulp_new_")).collect();
    assert!(held.iter().all(|f| f == "__pulp_got" || changed.contains(&format!("{f} ("))), "{held:?} vs {changed}");
    let (patch, lib) = (std::fs::metadata(up.out("fix.so")).unwrap().len(), std::fs::metadata(&library).unwrap().len());
    println!("patch object: {patch} bytes; liblua.so: {lib} bytes");
    assert!(patch < lib / 4, "the patch object ({patch} bytes) is not much smaller than the library ({lib} bytes)");

    let mut app = App::start(&app);
    let pid = app.pid();
    assert_eq!(app.ask("sync"), BUG, "the bug shows before the patch");

    apply(pid, &up.out("fix.meta")).assert_ok("pulp-trigger");
    assert_eq!(app.ask("sync"), "10", "every worker compiles the chunk right");

    revert(pid, &up.out("fix.meta")).assert_ok("pulp-trigger --revert");
    assert_eq!(app.ask("sync"), BUG, "the bug is back after the revert");
    app.assert_alive();
}
