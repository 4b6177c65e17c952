//! The symbol forms glibc has, in `pulp pack`: versioned names (`name@@VERSION`,
//! `name@VERSION`) pack and apply to a running process, changing only the version named; a
//! bare name with several versions, an IFUNC, its resolver, an alias of a function already
//! replaced and the dynamic linker are refused, each with its reason, and nothing is
//! written. The same on the system's libc, whose fmemopen@@GLIBC_2.22 is patched in a
//! running process (an entry jump: Debian's libc has no pad) while fmemopen@GLIBC_2.2.5
//! keeps its code. Fixtures: tests/fixtures/glibc_symbols.c (+ .map, _fix.c, _app.c).

use std::path::{Path, PathBuf};

use libpulp_rs_tests::{apply, fixture, pack, pulp, revert, App, CSpec, ToolOutput, Work};
use serde_json::Value;

struct Gs {
    work: Work,
    lib: PathBuf,
    fix: PathBuf,
}

impl Gs {
    fn new() -> Self {
        let work = Work::new();
        let map = format!("-Wl,--version-script={}", fixture("glibc_symbols.map").display());
        let lib = work.shared("glibc_symbols", &CSpec::patchable(&["glibc_symbols.c"]).flag(&map));
        let fix = work.shared("glibc_symbols_fix", &CSpec::plain(&["glibc_symbols_fix.c"]));
        Gs { work, lib, fix }
    }

    /// The application, linked to the library, started with the runtime.
    fn app(&self) -> App {
        let spec = CSpec::plain(&["glibc_symbols_app.c"]).link("glibc_symbols");
        App::start(&self.work.executable("glibc_symbols_app", &spec))
    }

    /// Pack a `.dsc` of `lines` (old:new) against `target`.
    fn pack_lines(&self, target: &Path, lines: &str) -> (ToolOutput, PathBuf) {
        let dsc = self.work.path().join("gs.dsc");
        std::fs::write(&dsc, format!("{}\n@{}\n{lines}", self.fix.display(), target.display())).unwrap();
        let meta = self.work.path().join("gs.meta");
        let _ = std::fs::remove_file(&meta);
        (pack(&dsc, &meta), meta)
    }

    /// Packing `lines` is refused with one message containing every one of `parts`, and
    /// no `.meta` is written.
    fn refused(&self, lines: &str, parts: &[&str]) {
        self.refused_for(&self.lib.clone(), lines, parts)
    }

    fn refused_for(&self, target: &Path, lines: &str, parts: &[&str]) {
        let (out, meta) = self.pack_lines(target, lines);
        out.assert_refused(&[]);
        for p in parts {
            assert!(out.stderr.contains(p), "`{p}` is not in the refusal: {out:#?}");
        }
        assert!(!meta.exists(), "a refused pack wrote {}", meta.display());
    }
}

#[test]
fn a_versioned_name_packs_and_replaces_only_that_version() {
    let gs = Gs::new();
    let mut app = gs.app();
    let (new, old) = (app.ask("new 1"), app.ask("old 1"));
    assert_eq!((new.as_str(), old.as_str()), ("gs_value(1)=3", "gs_value@GS_1.0(1)=2"));

    let (out, meta) = gs.pack_lines(&gs.lib, "gs_value@@GS_2.0:gs_value_fixed\n");
    out.assert_ok("pulp pack gs_value@@GS_2.0");
    apply(app.pid(), &meta).assert_ok("apply gs_value@@GS_2.0");
    assert_eq!(app.ask("new 1"), "gs_value(1)=201", "the default version is replaced");
    assert_eq!(app.ask("old 1"), "gs_value@GS_1.0(1)=2", "the other version is not");
    revert(app.pid(), &meta).assert_ok("revert");
    assert_eq!(app.ask("new 1"), "gs_value(1)=3");

    // `@VERSION` names the other one; both in one patch, each to its own new function.
    let (out, meta) = gs.pack_lines(&gs.lib, "gs_value@GS_1.0:gs_value_v1_fixed\ngs_value@@GS_2.0:gs_value_fixed\n");
    out.assert_ok("pulp pack both versions");
    assert_eq!(out.stdout.trim(), format!("packed 2 functions in 1 target into {}", meta.display()));
    apply(app.pid(), &meta).assert_ok("apply both versions");
    assert_eq!((app.ask("new 2"), app.ask("old 2")), ("gs_value(2)=202".into(), "gs_value@GS_1.0(2)=102".into()));
    revert(app.pid(), &meta).assert_ok("revert both");
    assert_eq!((app.ask("new 2"), app.ask("old 2")), ("gs_value(2)=4".into(), "gs_value@GS_1.0(2)=3".into()));

    // A hidden alias alone is its function: internal calls through it and calls of the
    // exported name both reach the new code.
    let (out, meta) = gs.pack_lines(&gs.lib, "__GI_gs_name:gs_name_fixed\n");
    out.assert_ok("pulp pack __GI_gs_name");
    assert!(!out.stderr.contains("local (static) function"), "an alias of an exported function: {out:#?}");
    apply(app.pid(), &meta).assert_ok("apply __GI_gs_name");
    assert_eq!((app.ask("twice 1"), app.ask("name 1")), ("gs_twice(1)=602".into(), "gs_name(1)=301".into()));
    revert(app.pid(), &meta).assert_ok("revert __GI_gs_name");
    assert_eq!(app.ask("twice 1"), "gs_twice(1)=8");
    app.assert_alive();
}

#[test]
fn a_versioned_reference_gets_that_versions_address() {
    let gs = Gs::new();
    let (out, meta) = gs.pack_lines(&gs.lib, "gs_name:gs_name_fixed\n#gs_value@GS_1.0:gs_ref_v1\n");
    out.assert_ok("pulp pack #gs_value@GS_1.0");
    let dump = pulp(&["dump", "--json", meta.to_str().unwrap()]);
    let v: Value = serde_json::from_str(&dump.stdout).unwrap_or_else(|e| panic!("{e}: {dump:#?}"));
    let r = &v["targets"][0]["references"][0];
    assert_eq!(r["symbol"], "gs_value@GS_1.0", "{r}");
    // Its address is the one the symbol table gives `gs_value@GS_1.0` (gs_value_v1's).
    let lp = pulp(&["livepatchable", "--json", gs.lib.to_str().unwrap()]);
    let lp: Value = serde_json::from_str(&lp.stdout).unwrap();
    let v1 = lp["functions"].as_array().unwrap().iter().find(|f| f["name"] == "gs_value_v1").unwrap();
    assert_eq!(r["offset"], v1["offset"], "{r} {v1}");
    gs.refused(
        "gs_name:gs_name_fixed\n#gs_value:gs_ref_v1\n",
        &[":4: `gs_value` has 2 versions in", "`gs_value@GS_1.0` (0x"],
    );
}

#[test]
fn the_c_librarys_default_version_is_patched_in_a_running_process() {
    let gs = Gs::new();
    let mut app = gs.app();
    let both = |app: &mut App| (app.ask("fmem"), app.ask("fmemold"));
    assert_eq!(both(&mut app), ("fmemopen=FILE".into(), "fmemopen@GLIBC_2.2.5=FILE".into()));
    // libc has frames in every thread (main is called from it): %immediate, and without
    // it the pack is refused, naming the target's line.
    let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
    gs.refused_for(
        libc,
        "fmemopen@@GLIBC_2.22:fmemopen_fixed\n",
        &[":2: target ", "libc.so.6 is the C library (its soname is libc.so.6)", "add `%immediate`"],
    );
    let (out, meta) = gs.pack_lines(libc, "%immediate\nfmemopen@@GLIBC_2.22:fmemopen_fixed\n");
    out.assert_ok("pulp pack fmemopen@@GLIBC_2.22");
    apply(app.pid(), &meta).assert_ok("apply fmemopen@@GLIBC_2.22");
    assert_eq!(both(&mut app), ("fmemopen=NULL".into(), "fmemopen@GLIBC_2.2.5=FILE".into()), "only the default");
    revert(app.pid(), &meta).assert_ok("revert fmemopen@@GLIBC_2.22");
    assert_eq!(both(&mut app), ("fmemopen=FILE".into(), "fmemopen@GLIBC_2.2.5=FILE".into()));
    app.assert_alive();
}

#[test]
fn a_bare_name_with_several_versions_is_refused_listing_them() {
    let gs = Gs::new();
    gs.refused(
        "gs_value:gs_value_fixed\n",
        &[
            ":3: `gs_value` has 2 versions in",
            "`gs_value@GS_1.0` (0x",
            "`gs_value@@GS_2.0` (0x",
            "name one (`gs_value@@VERSION` for the default, `gs_value@VERSION` for another)",
        ],
    );
    gs.refused(
        "gs_value@@GS_1.0:gs_value_fixed\n",
        &["`gs_value@@GS_1.0`", "not the default one (the default is `gs_value@@GS_2.0`); write `gs_value@GS_1.0`"],
    );
    gs.refused(
        "gs_value@GS_3.0:gs_value_fixed\n",
        &["`gs_value@GS_3.0` is not in", "its versions are `gs_value@GS_1.0`"],
    );
    // The same version twice is the same function twice.
    gs.refused(
        "gs_value@@GS_2.0:gs_value_fixed\ngs_value@@GS_2.0:gs_value_v1_fixed\n",
        &[":4: function `gs_value@@GS_2.0` already replaced in", "at line 3"],
    );
}

#[test]
fn ifunc_symbols_and_resolvers_are_refused_naming_the_implementations() {
    let gs = Gs::new();
    let choices = "those its resolver can choose: `gs_pick_fast`, `gs_pick_generic`";
    gs.refused(
        "gs_pick:gs_pick_fixed\n",
        &["function `gs_pick`", "is an IFUNC", "replace the implementation", choices],
    );
    gs.refused(
        "gs_pick_resolver:gs_pick_fixed\n",
        &["function `gs_pick_resolver`", "is the resolver of the IFUNC `gs_pick`", "changes nothing", choices],
    );
    // `pulp livepatchable` does not count them as patchable either.
    let lp = pulp(&["livepatchable", "--json", gs.lib.to_str().unwrap()]);
    let lp: Value = serde_json::from_str(&lp.stdout).unwrap_or_else(|e| panic!("{e}: {lp:#?}"));
    for (name, ifunc) in [("gs_pick", true), ("gs_pick_resolver", true), ("gs_pick_generic", false)] {
        let f = lp["functions"].as_array().unwrap().iter().find(|f| f["name"] == name).unwrap();
        assert_eq!((&f["ifunc"], &f["supported"]), (&Value::Bool(ifunc), &Value::Bool(!ifunc)), "{f}");
    }
    // The implementation itself packs.
    let (out, _) = gs.pack_lines(&gs.lib, "gs_pick_generic:gs_pick_fixed\n");
    out.assert_ok("pulp pack gs_pick_generic");
    // A reference to the IFUNC would hand the patch the resolver.
    let dsc_refs = "gs_name:gs_name_fixed\n#gs_pick:gs_pick_ref\n";
    gs.refused(dsc_refs, &[":4: reference to `gs_pick`: it is an IFUNC", "refer to the implementation"]);
}

#[test]
fn an_alias_of_a_replaced_function_is_refused() {
    let gs = Gs::new();
    gs.refused(
        "gs_name:gs_name_fixed\n__GI_gs_name:gs_name_fixed\n",
        &[
            ":4: function `__GI_gs_name`",
            "the entry of `gs_name`, which line 3 already replaces",
            "one function under two names",
        ],
    );
    gs.refused(
        "gs_value@@GS_2.0:gs_value_fixed\ngs_value_v2:gs_value_fixed\n",
        &["function `gs_value_v2`", "the entry of `gs_value@@GS_2.0`, which line 3 already replaces"],
    );
}

#[test]
fn the_dynamic_linker_is_refused() {
    let gs = Gs::new();
    let ld = Path::new("/lib64/ld-linux-x86-64.so.2");
    gs.refused_for(
        ld,
        "malloc:gs_value_fixed\n",
        &[":2: target ", "is the dynamic linker (its soname is ld-linux-x86-64.so.2)"],
    );
    // A library that defines `_rtld_global`, whatever its name.
    let map = format!("-Wl,--version-script={}", fixture("glibc_symbols.map").display());
    let rtld = gs.work.shared("rtldlike", &CSpec::patchable(&["glibc_symbols.c"]).define("GS_RTLD", None).flag(&map));
    gs.refused_for(&rtld, "gs_name:gs_name_fixed\n", &["is the dynamic linker (it defines `_rtld_global`)"]);
}

#[test]
fn the_systems_glibc_symbols_get_the_same_answers() {
    let gs = Gs::new();
    let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
    gs.refused_for(
        libc,
        "memcpy:gs_value_fixed\n",
        &[":3: `memcpy` has 2 versions in", "`memcpy@GLIBC_2.2.5` (0x", "`memcpy@@GLIBC_2.14` (0x"],
    );
    // Each version is found: the default one is an IFUNC, the old one a plain function
    // (an alias of __memmove_sse2_unaligned) that Debian built without a pad, whose entry
    // cannot be overwritten: the other memmove entry points enter it 3 bytes in.
    gs.refused_for(libc, "memcpy@@GLIBC_2.14:gs_value_fixed\n", &["function `memcpy` in", "is an IFUNC"]);
    gs.refused_for(
        libc,
        "memcpy@GLIBC_2.2.5:gs_value_fixed\n",
        &["function `memcpy` in", "has no pad and its entry cannot be redirected", "inside the first bytes"],
    );
    let (out, _) = gs.pack_lines(libc, "strlen:gs_value_fixed\n");
    out.assert_refused(&["is an IFUNC"]);
    // The implementations are named when libc's debug file (libc6-dbg) gives their names.
    assert!(out.stderr.contains("`__strlen_avx2`") || out.stderr.contains("not named by a symbol"), "{out:#?}");
}
