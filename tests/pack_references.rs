//! References (`#sym:var` in a `.dsc`) in a running multi-threaded process: a patch with
//! no copy of the library's internals reaches a static function, a hidden function
//! (GOT-relative), a static variable, a thread-local variable, and the original code of
//! the function it replaces; the runtime fills its variables before the patch runs, a
//! `static` one of the patch object included.

use libpulp_rs_tests::{apply, pack, revert, App, CSpec, Work};

const DSC: &str = "\
# The patch of refs_lib.c: every kind of reference.
!references test
libreffix.so
@librefs.so
refs_value:refs_value_new
refs_wrap:refs_wrap_new
refs_bump:refs_bump_new
refs_tls:refs_tls_new
#helper:ref_helper                     # a static function: its address
#hidden_twice:ref_hidden got-relative  # a hidden function, relative to the patch's GOT
#refs_wrap:orig_wrap                   // replaced by this patch: its original code
#counter:ref_counter
#%tls_hits:tls_hits_idx
";

#[test]
fn references_reach_the_targets_own_internals_in_every_thread() {
    let work = Work::new();
    let lib = work.shared("refs", &CSpec::patchable(&["refs/refs_lib.c"]));
    work.shared("reffix", &CSpec::plain(&["refs/refs_fix.c"]));
    let app = work.executable("refs_app", &CSpec::plain(&["refs/refs_app.c"]).link("refs").threads());
    let dsc = work.path().join("refs.dsc");
    std::fs::write(&dsc, DSC).unwrap();
    let meta = work.path().join("refs.meta");
    let out = pack(&dsc, &meta);
    out.assert_ok("pulp pack");
    assert_eq!(out.stdout.trim(), format!("packed 4 functions and 5 references in 1 target into {}", meta.display()));
    assert!(lib.exists());

    let mut app = App::start(&app);
    let pid = app.pid();
    assert_eq!(app.ask("sync"), "1015/6/1 1015/6/1 1015/6/1 1015/6/1");
    assert_eq!(app.ask("bump"), "1");

    apply(pid, &meta).assert_ok("pulp-trigger");
    // helper(5) * 2 + hidden_twice(5); the original refs_wrap(2) * 10; each thread's own
    // tls_hits grows by 10.
    assert_eq!(app.ask("sync"), "2020/60/10 2020/60/10 2020/60/10 2020/60/10");
    // The patched code changes the library's own counter: the unpatched refs_peek sees it.
    assert_eq!(app.ask("bump"), "101");
    assert_eq!(app.ask("peek"), "101");

    revert(pid, &meta).assert_ok("pulp-trigger --revert");
    assert_eq!(app.ask("sync"), "1015/6/1 1015/6/1 1015/6/1 1015/6/1");
    assert_eq!(app.ask("bump"), "102");

    // Applied again: the variables are filled again, the patch works as before.
    apply(pid, &meta).assert_ok("pulp-trigger (again)");
    assert_eq!(app.ask("sync"), "2020/60/10 2020/60/10 2020/60/10 2020/60/10");
    assert_eq!(app.ask("bump"), "202");
    app.assert_alive();
}

/// A `.meta` whose references do not fit the patch object (made by hand: `pulp pack`
/// refuses them) is refused by the runtime before anything changes: the message names
/// the target, the symbol and the variable, and the process computes what it did.
#[test]
fn the_runtime_refuses_references_that_do_not_fit_and_changes_nothing() {
    use pulp_meta::{PatchMeta, RefKind};

    let work = Work::new();
    work.shared("refs", &CSpec::patchable(&["refs/refs_lib.c"]));
    work.shared("reffix", &CSpec::plain(&["refs/refs_fix.c"]));
    let app = work.executable("refs_app", &CSpec::plain(&["refs/refs_app.c"]).link("refs").threads());
    let dsc = work.path().join("refs.dsc");
    std::fs::write(&dsc, DSC).unwrap();
    let meta_path = work.path().join("refs.meta");
    pack(&dsc, &meta_path).assert_ok("pulp pack");
    let good = PatchMeta::decode(&std::fs::read(&meta_path).unwrap()).unwrap();

    let mut app = App::start(&app);
    let pid = app.pid();
    type Case = (&'static str, fn(&mut PatchMeta), &'static str);
    let cases: [Case; 5] = [
        (
            "missing",
            |m| m.targets[0].references[0].var = "no_such_var".into(),
            "reference `helper` of {lib} into `no_such_var`: the patch object exports no variable `no_such_var`",
        ),
        (
            "small",
            |m| {
                m.targets[0].references[0].var = "ref_hidden".into();
                m.targets[0].references[0].kind = RefKind::TlsIndex;
            },
            "reference `helper` of {lib} into `ref_hidden`: it has 8 bytes, the reference needs 16",
        ),
        (
            "static-elsewhere",
            |m| m.targets[0].references[0].var = "ref_helper@7fff0000".into(),
            "reference `helper` of {lib} into `ref_helper@7fff0000`: it lies outside the patch object's writable memory",
        ),
        (
            "function",
            |m| m.targets[0].references[0].var = "refs_value_new".into(),
            "reference `helper` of {lib} into `refs_value_new`: it is not a data object",
        ),
        (
            "read-only",
            |m| m.targets[0].references[0].var = "ref_readonly".into(),
            "reference `helper` of {lib} into `ref_readonly`: it lies in read-only memory",
        ),
    ];
    let lib = work.path().join("librefs.so").canonicalize().unwrap();
    for (name, change, want) in cases {
        let mut m = good.clone();
        change(&mut m);
        let path = work.path().join(format!("{name}.meta"));
        std::fs::write(&path, m.encode()).unwrap();
        let out = libpulp_rs_tests::apply(pid, &path);
        out.assert_refused(&[&want.replace("{lib}", &lib.display().to_string())]);
        assert_eq!(app.ask("sync"), "1015/6/1 1015/6/1 1015/6/1 1015/6/1", "{name}: the process changed");
    }
    // The good one still applies.
    apply(pid, &meta_path).assert_ok("pulp-trigger");
    assert_eq!(app.ask("sync"), "2020/60/10 2020/60/10 2020/60/10 2020/60/10");
}
