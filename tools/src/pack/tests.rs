//! Unit tests of `pack`: packing real objects built here, and every refusal.

use super::*;
use pulp_cc_build::Build;
use pulp_elf as inspect;
use pulp_meta::Prologue;
use tempfile::TempDir;

const TARGET_C: &str = r#"
int foo_parse(const char *s) { return s[0] == 'x'; }
int foo_len(const char *s) { int n = 0; while (s[n]) n++; return n; }
__attribute__((noinline)) static int twin(int x) { return x * 7; }
int foo_twin(int x) { return twin(x) + 1; }
"#;
const TARGET2_C: &str = r#"
__attribute__((noinline)) static int twin(int x) { return x * 11; }
int bar_twin(int x) { return twin(x) + 2; }
"#;
const PATCH_C: &str = r#"
int foo_parse_fixed(const char *s) { return s && s[0] == 'x'; }
int foo_len_fixed(const char *s) { int n = 0; while (s && s[n]) n++; return n; }
__attribute__((visibility("hidden"))) int hidden_fix(int x) { return x; }
"#;

struct Fixture {
    dir: TempDir,
    target: String,
    plain: String,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (name, src) in [("target.c", TARGET_C), ("target2.c", TARGET2_C), ("patch.c", PATCH_C)] {
        std::fs::write(d.join(name), src).unwrap();
    }
    let so = Build::new().out_dir(d).file(d.join("target.c")).file(d.join("target2.c")).shared("foo").unwrap();
    let plain = Build::new().out_dir(d).file(d.join("target.c")).patchable(false).shared("plain").unwrap();
    Build::new().out_dir(d).file(d.join("patch.c")).shared("fix").unwrap();
    let s = |p: PathBuf| p.canonicalize().unwrap().to_str().unwrap().to_owned();
    Fixture { target: s(so), plain: s(plain), dir }
}

impl Fixture {
    fn pack(&self, dsc: &str) -> Result<PatchMeta, PackError> {
        let path = self.dir.path().join("fix.dsc");
        std::fs::write(&path, dsc).unwrap();
        pack(&path)
    }

    fn err(&self, dsc: &str) -> String {
        let e = self.pack(dsc).unwrap_err().to_string();
        let prefix = format!("{}:", self.dir.path().join("fix.dsc").display());
        assert!(e.starts_with(&prefix), "{e}");
        e[prefix.len()..].to_owned()
    }
}

#[test]
fn packs_a_valid_description() {
    let fx = fixture();
    let m = fx
        .pack(
            "; a comment\n\n  libfix.so  \n!CVE-2026-1234\n@./libfoo.so\nfoo_parse:foo_parse_fixed\n \
             foo_len : foo_len_fixed \n!second label\n",
        )
        .unwrap();
    let patch = fx.dir.path().join("libfix.so").canonicalize().unwrap();
    assert_eq!(m.patch_so, patch.to_str().unwrap());
    assert_eq!(m.patch_build_id, inspect::build_id(&patch).unwrap());
    assert_eq!(m.flags, 0, "transition by default");
    assert_eq!(m.labels, ["CVE-2026-1234", "second label"]);
    assert_eq!(m.targets.len(), 1);
    let t = &m.targets[0];
    assert_eq!(t.path, fx.target);
    assert_eq!(t.build_id, inspect::build_id(Path::new(&fx.target)).unwrap());
    let info = inspect::functions(Path::new(&fx.target)).unwrap();
    let off = |n: &str| info.iter().find(|f| f.name == n).unwrap().offset;
    assert_eq!(
        t.functions,
        [
            Function {
                old: "foo_parse".into(),
                offset: off("foo_parse"),
                prologue: Prologue::NopPad66,
                displaced: None,
                new: "foo_parse_fixed".into()
            },
            Function {
                old: "foo_len".into(),
                offset: off("foo_len"),
                prologue: Prologue::NopPad66,
                displaced: None,
                new: "foo_len_fixed".into()
            },
        ]
    );
    assert_eq!(PatchMeta::decode(&m.encode()).unwrap(), m);
}

#[test]
fn absolute_paths_and_several_targets() {
    let fx = fixture();
    let d = fx.dir.path();
    let bar = Build::new().out_dir(d.join("sub")).file(d.join("target2.c")).shared("bar").unwrap();
    let dsc = format!(
        "{}/libfix.so\n@{}\nfoo_len:foo_len_fixed\n@sub/libbar.so\nbar_twin:foo_parse_fixed\n",
        d.display(),
        fx.target,
    );
    let m = fx.pack(&dsc).unwrap();
    assert_eq!(m.targets.len(), 2);
    assert_eq!(m.targets[1].path, bar.canonicalize().unwrap().to_str().unwrap());
    assert_eq!(m.targets[1].functions[0].old, "bar_twin");
}

#[test]
fn file_errors() {
    let fx = fixture();
    let missing = fx.dir.path().join("missing.dsc");
    let e = pack(&missing).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}: cannot read: ", missing.display())), "{e}");

    assert!(fx.err("libnope.so\n").starts_with("1: cannot open patch .so "), "missing patch .so");
    assert!(fx.err("libfix.so\n@libnope.so\n").starts_with("2: cannot open target "));
    assert!(fx.err("libfix.so\n@libnope.so\n").contains("libnope.so: No such file"));
    const NO_SO: &str =
        "no patch .so: the first line that is not a label, option or comment must name the .so holding the new functions";
    assert_eq!(fx.err("; only a comment\n\n# another\n!label\n"), format!(" {NO_SO}"));
    assert_eq!(fx.err("@libfoo.so\n"), format!("1: {NO_SO}"));
    assert_eq!(fx.err("libfix.so\n!label\n"), " no targets: add an `@TARGET` line followed by `old:new` lines");
    let e = fx.err("fix.dsc\n@libfoo.so\nfoo_len:foo_len_fixed\n");
    assert!(e.starts_with("1: ") && e.contains("fix.dsc: not a valid ELF object"), "{e}");
}

#[test]
fn line_errors() {
    let fx = fixture();
    let t = &fx.target;
    assert_eq!(
        fx.err("libfix.so\nfoo_len:foo_len_fixed\n"),
        "2: `foo_len:foo_len_fixed` comes before any `@TARGET` line"
    );
    assert_eq!(
        fx.err("libfix.so\n@libfoo.so\nfoo_len:foo_len_fixed\n#counter:ref_counter\n"),
        format!("4: reference to `counter`: no symbol of that name in {t}")
    );
    assert_eq!(
        fx.err("libfix.so\n@libfoo.so\nfoo_len:foo_len_fixed extra # trailing\n"),
        "3: malformed line `foo_len:foo_len_fixed extra`: expected `old_function:new_function`"
    );
    assert!(fx.err("libfix.so\n@libfoo.so\njust words\n").starts_with("3: malformed line `just words`: expected"));
    assert!(fx.err("libfix.so\n!\n").starts_with("2: malformed line `!`: empty label"));
    assert_eq!(fx.err("libfix.so\n@libfoo.so\nnope:foo_len_fixed\n"), format!("3: function `nope` not found in {t}"));
    assert_eq!(
        fx.err("libfix.so\n@libfoo.so\nfoo_len:foo_len_fixed\n\nfoo_len:foo_parse_fixed\n"),
        format!("5: function `foo_len` already replaced in {t} at line 3")
    );
    assert_eq!(
        fx.err("libfix.so\n@libfoo.so\n@libfix.so\nfoo_len:foo_len_fixed\n"),
        format!("2: target {t} has no functions to replace")
    );
    assert_eq!(
        fx.err("libfix.so\n@libfoo.so\nfoo_len:foo_len_fixed\n@libfoo.so\n"),
        format!("4: target {t} is already given at line 2")
    );
    // Without a pad, the entry's first instructions are what the jump overwrites.
    let plain = fx.pack("libfix.so\n@libplain.so\nfoo_len:foo_len_fixed\n").unwrap();
    let f = &plain.targets[0].functions[0];
    assert_eq!(f.prologue, Prologue::Unpadded);
    assert!(f.displaced.as_ref().is_some_and(|d| d.original.len() >= 5), "{f:?}");
    assert_eq!(plain.targets[0].path, fx.plain);
    let patch = fx.dir.path().join("libfix.so").canonicalize().unwrap();
    assert_eq!(
        fx.err("libfix.so\n@libfoo.so\nfoo_len:foo_len_v2\n"),
        format!("3: new function `foo_len_v2` not found in {}", patch.display())
    );
    assert!(fx.err("libfix.so\n@libfoo.so\nfoo_len:hidden_fix\n").starts_with("3: new function `hidden_fix` in "));
}

#[test]
fn ambiguous_local_function() {
    let fx = fixture();
    let info = inspect::functions(Path::new(&fx.target)).unwrap();
    let twins: Vec<u64> = info.iter().filter(|f| f.name == "twin").map(|f| f.offset).collect();
    assert_eq!(twins.len(), 2);
    let e = fx.err("libfix.so\n@libfoo.so\ntwin:foo_len_fixed\n");
    assert_eq!(
        e,
        format!(
            "3: function `twin` is ambiguous in {}: defined at {:#x} and {:#x}; say which one as `twin@OFFSET`",
            fx.target, twins[0], twins[1]
        )
    );
    // Naming the offset picks one, and the pack warns that a static function may
    // have been inlined into its callers.
    let dsc = fx.dir.path().join("pick.dsc");
    std::fs::write(&dsc, format!("libfix.so\n@libfoo.so\ntwin@{:x}:foo_len_fixed\n", twins[1])).unwrap();
    let (m, warnings) = pack_with_warnings(&dsc).unwrap();
    assert_eq!(m.targets[0].functions[0].offset, twins[1]);
    assert_eq!(m.targets[0].functions[0].old, "twin");
    assert!(warnings.iter().any(|w| w.line == 3 && w.message.contains("local (static) function")), "{warnings:?}");
}

#[test]
fn names_the_clones_of_a_function_that_only_exists_as_clones() {
    let fx = fixture();
    let d = fx.dir.path();
    // A static function always called with the same constant: gcc keeps only its
    // `.constprop` clone.
    std::fs::write(
        d.join("clone.c"),
        "__attribute__((noinline)) static int scale(int x, int k) { return x * k + k * k - x / k; }\n\
         int a(int x) { return scale(x, 3); }\n\
         int b(int x) { return scale(x + 1, 3) + scale(x, 3); }\n",
    )
    .unwrap();
    Build::new().out_dir(d).file(d.join("clone.c")).shared("clone").unwrap();
    let e = fx.err("libfix.so\n@libclone.so\nscale:foo_len_fixed\n");
    assert!(e.starts_with("3: function `scale` is not in ") && e.contains("scale.constprop."), "{e}");
}

#[test]
fn fentry_packs_and_missing_build_id_is_refused() {
    let fx = fixture();
    let d = fx.dir.path();
    Build::new()
        .out_dir(d)
        .file(d.join("target.c"))
        .patchable(false)
        .flag("-pg")
        .flag("-mfentry")
        .shared("fentry")
        .unwrap();
    let m = fx.pack("libfix.so\n@libfentry.so\nfoo_len:foo_len_fixed\n").unwrap();
    assert!(m.targets[0].functions[0].prologue.is_fentry());

    Build::new().out_dir(d).file(d.join("target.c")).flag("-Wl,--build-id=none").shared("noid").unwrap();
    let e = fx.err("libfix.so\n@libnoid.so\nfoo_len:foo_len_fixed\n");
    assert!(e.starts_with("2: ") && e.contains("libnoid.so has no GNU build-id"), "{e}");
}
