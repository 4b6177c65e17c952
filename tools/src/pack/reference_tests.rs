//! Unit tests of `pack`: references, variables, imports, cold parts, inlined functions and stripped targets.

use super::*;
use pulp_cc_build::Build;
use pulp_meta::{RefKind, Reference};
use std::process::Command;
use tempfile::TempDir;

const LIB_C: &str = r#"
static int counter;
int exported_var = 1;
__attribute__((visibility("hidden"))) int hidden_fn(int x) { return x + 100; }
__attribute__((noinline)) static int helper(int x) { return x * 2 + counter; }
int api(int x) { counter++; return helper(x) + hidden_fn(x); }
__thread int tls_var;
static __thread int tls_static;
int tls_api(void) { return ++tls_static + tls_var; }
static inline int tiny(int x) { return x + 1; }
int uses_tiny(int x) { return tiny(x) * 3; }
int get_static_local(void) { static int calls; return ++calls; }
extern int logv(const char *, ...) __attribute__((cold));
int checked(int x, int y) {
    if (x < 0) { logv("negative %d %d\n", x, y); logv("details %d\n", x * y); counter += y; return -1; }
    return x * 5 + y;
}
int logv(const char *f, ...) { (void)f; return 0; }
__attribute__((noinline)) static int scale(int x, int k) { return x * k + k * k - x / k; }
int scaled(int x) { return scale(x, 3) + scale(x + 1, 3); }
"#;
const LIB2_C: &str = "static int counter;\nint bump(void) { return ++counter; }\n";
const FIX_C: &str = r#"
void *ref_counter, *ref_helper, *ref_api, *ref_hidden, *ref_calls, *ref_scale, *ref_extra;
struct { long module, offset; } tls_idx;
char small_var;
void *const ro_var = 0;
__attribute__((visibility("hidden"))) void *hidden_var;
static void *static_var __attribute__((used));
int api_new(int x) { return x; }
"#;
const CALLS_API_C: &str = "int api(int x);\nint calls_api(int x) { return api(x) + 1; }\n";
const BAD_IMPORTS_C: &str = r#"
int hidden_fn(int x);
int no_such_function(int);
int api_new(int x) { return hidden_fn(x) + no_such_function(x); }
"#;

struct Fx {
    dir: TempDir,
    lib: PathBuf,
}

fn fx() -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (name, src) in
        [("lib.c", LIB_C), ("lib2.c", LIB2_C), ("fix.c", FIX_C), ("bad.c", BAD_IMPORTS_C), ("calls.c", CALLS_API_C)]
    {
        std::fs::write(d.join(name), src).unwrap();
    }
    let lib = Build::new().out_dir(d).file(d.join("lib.c")).file(d.join("lib2.c")).flag("-g").shared("ref").unwrap();
    Build::new().out_dir(d).file(d.join("fix.c")).patchable(false).shared("fix").unwrap();
    Build::new().out_dir(d).file(d.join("bad.c")).patchable(false).shared("bad").unwrap();
    Build::new().out_dir(d).file(d.join("calls.c")).patchable(false).shared("calls").unwrap();
    Fx { dir, lib: lib.canonicalize().unwrap() }
}

impl Fx {
    fn pack(&self, body: &str, opts: &PackOptions) -> Result<(PatchMeta, Vec<PackWarning>), String> {
        let path = self.dir.path().join("t.dsc");
        pack_text(&path, body, opts).map_err(|e| {
            let s = e.to_string();
            s.strip_prefix(&format!("{}:", path.display())).unwrap_or(&s).to_owned()
        })
    }

    fn ok(&self, body: &str) -> (PatchMeta, Vec<PackWarning>) {
        self.pack(body, &PackOptions::default()).unwrap()
    }

    fn err(&self, body: &str) -> String {
        self.pack(body, &PackOptions::default()).unwrap_err()
    }

    fn sym(&self, name: &str) -> u64 {
        let info = pulp_elf::ObjectInfo::read(&self.lib).unwrap();
        let all: Vec<_> = info.named(name).collect();
        assert_eq!(all.len(), 1, "{name}: {all:?}");
        all[0].value
    }
}

const HEAD: &str = "libfix.so\n@libref.so\napi:api_new\n";

#[test]
fn every_kind_of_symbol_can_be_referenced() {
    let fx = fx();
    let (m, warnings) = fx
        .ok(&format!("{HEAD}#helper:ref_helper\n#hidden_fn:ref_hidden\n#get_static_local.calls:ref_extra\n")
            .replace("#get_static_local.calls", "#calls.0"));
    let refs = &m.targets[0].references;
    assert_eq!(
        refs[0],
        Reference {
            symbol: "helper".into(),
            offset: fx.sym("helper"),
            kind: RefKind::Address,
            var: "ref_helper".into()
        }
    );
    assert_eq!(refs[1].kind, RefKind::Address);
    assert_eq!(refs[1].offset, fx.sym("hidden_fn"));
    assert_eq!(refs[2].symbol, "calls.0");
    assert_eq!(refs[2].offset, fx.sym("calls.0"));
    assert!(warnings.is_empty(), "{warnings:?}");

    // The function this patch replaces: its original code. TLS: the tls_index.
    // An addend; got-relative.
    let (m, _) = fx.ok(&format!("{HEAD}#api:ref_api\n#%tls_var:tls_idx\n#exported_var+2:ref_extra got-relative\n"));
    let refs = &m.targets[0].references;
    assert_eq!(refs[0].kind, RefKind::Original);
    assert_eq!(refs[0].offset, fx.sym("api"));
    assert_eq!(
        refs[1],
        Reference {
            symbol: "tls_var".into(),
            offset: fx.sym("tls_var"),
            kind: RefKind::TlsIndex,
            var: "tls_idx".into()
        }
    );
    assert_eq!(
        refs[2],
        Reference {
            symbol: "exported_var+2".into(),
            offset: fx.sym("exported_var") + 2,
            kind: RefKind::GotRelative,
            var: "ref_extra".into()
        }
    );
    assert_eq!(PatchMeta::decode(&m.encode()).unwrap(), m);

    // Initial-exec code's thread-pointer offset: 8 bytes, of a thread-local only.
    let (m, _) = fx.ok(&format!("{HEAD}#%tls_var:ref_scale tp-offset\n"));
    let r = &m.targets[0].references[0];
    assert_eq!((r.kind, r.offset, r.kind.size()), (RefKind::TpOffset, fx.sym("tls_var"), 8));
    assert_eq!(PatchMeta::decode(&m.encode()).unwrap(), m);
    let e = fx.err(&format!("{HEAD}#%exported_var:ref_scale tp-offset\n"));
    assert!(e.contains("exported_var") && e.contains("thread-local"), "{e}");
}

#[test]
fn several_symbols_of_one_name_are_picked_by_offset() {
    let fx = fx();
    let info = pulp_elf::ObjectInfo::read(&fx.lib).unwrap();
    let counters: Vec<u64> = info.named("counter").map(|s| s.value).collect();
    assert_eq!(counters.len(), 2);
    let e = fx.err(&format!("{HEAD}#counter:ref_counter\n"));
    assert_eq!(
        e,
        format!(
            "4: symbol `counter` is ambiguous in {}: defined at {:#x} and {:#x}; say which one as `counter@OFFSET`",
            fx.lib.display(),
            counters[0],
            counters[1]
        )
    );
    let (m, _) = fx.ok(&format!("{HEAD}#counter@{:x}:ref_counter\n", counters[1]));
    assert_eq!(m.targets[0].references[0].offset, counters[1]);
    let e = fx.err(&format!("{HEAD}#counter@1:ref_counter\n"));
    assert!(
        e.starts_with("4: reference to `counter@0x1`: no symbol of that name in ") && e.contains("(it is at 0x"),
        "{e}"
    );
}

/// A receiving variable the patch object does not export (static or hidden) is named by
/// its offset in the object, which the runtime adds to the load base.
#[test]
fn local_receiving_variables_are_named_by_offset() {
    let fx = fx();
    let patch = fx.dir.path().join("libfix.so");
    let symbols = pulp_elf::ObjectInfo::read(&patch).unwrap();
    for var in ["hidden_var", "static_var"] {
        let at = symbols.named(var).next().unwrap_or_else(|| panic!("{var} in libfix.so")).value;
        let (m, _) = fx.ok(&format!("{HEAD}#helper:{var}\n"));
        assert_eq!(m.targets[0].references[0].var, format!("{var}@{at:x}"));
    }
    let (m, _) = fx.ok(&format!("{HEAD}#helper:ref_helper\n"));
    assert_eq!(m.targets[0].references[0].var, "ref_helper", "an exported one keeps its name");
}

#[test]
fn bad_references_are_refused_with_their_line() {
    let fx = fx();
    let lib = fx.lib.display().to_string();
    let patch = fx.dir.path().join("libfix.so").canonicalize().unwrap().display().to_string();
    for (line, want) in [
        ("#nope:ref_helper", format!("reference to `nope`: no symbol of that name in {lib}")),
        ("#tls_var:ref_helper", format!("reference to `tls_var`: it is a thread-local variable of {lib}; write `#%tls_var:VAR`")),
        ("#%helper:tls_idx", format!("reference `#%helper`: `helper` of {lib} is a function, not a thread-local variable; write `#helper:VAR`")),
        ("#helper:missing_var", format!("reference variable `missing_var` not found in {patch}: define it there (e.g. `void *missing_var;`)")),
        ("#helper:small_var", format!("reference variable `small_var` of {patch} has 1 bytes, a address reference needs 8")),
        ("#%tls_var:ref_helper", format!("reference variable `ref_helper` of {patch} has 8 bytes, a thread-local reference needs 16")),
        ("#helper:ro_var", format!("reference variable `ro_var` of {patch} is read-only once loaded (const or RELRO): make it a plain variable")),
        ("#helper:api_new", format!("reference variable `api_new` of {patch} is a function, not a data object")),
        ("#checked.cold:ref_helper", format!("`checked.cold` in {lib} is the cold part of `checked` (code the compiler moved out of line, jumped to from `checked`): cold parts are not entry points; replace `checked`")),
    ] {
        assert_eq!(fx.err(&format!("{HEAD}{line}\n")), format!("4: {want}"), "{line}");
    }
    assert_eq!(
        fx.err(&format!("{HEAD}#helper:ref_helper\n#api:ref_helper\n")),
        "5: reference variable `ref_helper` already receives the reference at line 4"
    );
}

#[test]
fn inlined_cold_and_cloned_functions_are_explained() {
    let fx = fx();
    let lib = fx.lib.display().to_string();
    let inlined = format!(
        "function `tiny` of {lib} exists only inlined (into `uses_tiny`): there is no copy of it to redirect; \
         replace the functions it was inlined into instead, or let `pulp build-patch` find them"
    );
    assert_eq!(fx.err("libfix.so\n@libref.so\ntiny:api_new\n"), format!("3: {inlined}"));
    assert_eq!(fx.err(&format!("{HEAD}#tiny:ref_helper\n")), format!("4: {inlined}"));
    assert_eq!(
        fx.err("libfix.so\n@libref.so\nchecked.cold:api_new\n"),
        format!("3: `checked.cold` in {lib} is the cold part of `checked` (code the compiler moved out of line, jumped to from `checked`): cold parts are not entry points; replace `checked`")
    );
    let scale =
        pulp_elf::functions(&fx.lib).unwrap().into_iter().find(|f| f.name.starts_with("scale.constprop")).unwrap();
    let (_, warnings) = fx.ok(&format!("{HEAD}#{}:ref_scale\n", scale.name));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].message.contains("its calling convention is the compiler's own"), "{warnings:?}");
    let (_, warnings) = fx.ok(&format!("libfix.so\n@libref.so\n{}:api_new\n", scale.name));
    assert!(warnings.iter().any(|w| w.message.contains("calling convention is the compiler's own")), "{warnings:?}");
    let e = fx.err(&format!("{HEAD}#scale:ref_scale\n"));
    assert!(e.contains("the compiler made clones of it: scale.constprop.0"), "{e}");
}

#[test]
fn a_patch_importing_what_it_replaces_is_warned_about() {
    let fx = fx();
    let (_, warnings) = fx.ok("libcalls.so\n@libref.so\napi:calls_api\n");
    let w: Vec<_> = warnings.iter().filter(|w| w.message.contains("imports `api`")).collect();
    assert_eq!(w.len(), 1, "{warnings:?}");
    assert_eq!(w[0].line, 3);
    assert!(w[0].message.contains("endless recursion") && w[0].message.contains("#api:VAR"), "{}", w[0].message);
}

#[test]
fn imports_nothing_will_define_are_refused_with_the_list() {
    let fx = fx();
    let e = fx.err("libbad.so\n@libref.so\napi:api_new\n");
    let bad = fx.dir.path().join("libbad.so").canonicalize().unwrap();
    assert!(
        e.starts_with(&format!(" {} imports 2 symbols nothing will define when it is loaded: ", bad.display())),
        "{e}"
    );
    assert!(
        e.contains(&format!(
            "`hidden_fn` (a hidden function of {}, not exported: reach it through a reference (`#hidden_fn:VAR`",
            fx.lib.display()
        )),
        "{e}"
    );
    assert!(
        e.contains("`no_such_function` (not exported by the targets or any library they or the patch depend on)"),
        "{e}"
    );
    let opts = PackOptions { skip_import_check: true, ..Default::default() };
    assert!(fx.pack("libbad.so\n@libref.so\napi:api_new\n", &opts).is_ok());
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn stripped_targets_use_their_debug_file() {
    let fx = fx();
    let d = fx.dir.path();
    let debug = d.join("libref.so.debug");
    run(Command::new("objcopy").arg("--only-keep-debug").arg(&fx.lib).arg(&debug));
    run(Command::new("strip").arg("--strip-all").arg(&fx.lib));
    let helper_line = format!("{HEAD}#helper:ref_helper\n");

    // No debug file anywhere.
    let root = d.join("debugroot");
    let nowhere = PackOptions { debug: DebugSearch { files: vec![], root: root.clone() }, ..Default::default() };
    let e = fx.pack(&helper_line, &nowhere).unwrap_err();
    assert!(e.starts_with("4: reference to `helper`: no symbol of that name in "), "{e}");
    assert!(
        e.contains("it is stripped and no debug file was found: looked at ")
            && e.contains("give one with --debug-file"),
        "{e}"
    );

    // Explicit.
    let explicit =
        PackOptions { debug: DebugSearch { files: vec![debug.clone()], root: root.clone() }, ..Default::default() };
    let (m, _) = fx.pack(&helper_line, &explicit).unwrap();
    let symbols = pulp_elf::ObjectInfo::read(&debug).unwrap();
    assert_eq!(m.targets[0].references[0].offset, symbols.named("helper").next().unwrap().value);

    // The build-id folder.
    let id = pulp_meta::format::hex(&pulp_elf::build_id(&fx.lib).unwrap());
    let by_id = root.join(".build-id").join(&id[..2]);
    std::fs::create_dir_all(&by_id).unwrap();
    std::fs::copy(&debug, by_id.join(format!("{}.debug", &id[2..]))).unwrap();
    assert!(fx.pack(&helper_line, &nowhere).is_ok());
    std::fs::remove_dir_all(&root).unwrap();

    // .gnu_debuglink, next to the object.
    run(Command::new("objcopy").arg(format!("--add-gnu-debuglink={}", debug.display())).arg(&fx.lib));
    assert!(fx.pack(&helper_line, &nowhere).is_ok());

    // A debug file of another build is refused.
    let other = d.join("other");
    std::fs::create_dir(&other).unwrap();
    let so = Build::new()
        .out_dir(&other)
        .file(d.join("lib.c"))
        .define("OTHER", None)
        .flag("-g")
        .flag("-O1")
        .shared("ref")
        .unwrap();
    let wrong = other.join("wrong.debug");
    run(Command::new("objcopy").arg("--only-keep-debug").arg(&so).arg(&wrong));
    let opts = PackOptions { debug: DebugSearch { files: vec![wrong.clone()], root }, ..Default::default() };
    let e = fx.pack(&helper_line, &opts).unwrap_err();
    assert!(
        e.starts_with(&format!(" debug file {}: its build-id ", wrong.display())) && e.contains("is no target's"),
        "{e}"
    );
}
