//! `pulp pack`: turn a description file (`.dsc`) into a [`PatchMeta`].
//!
//! One item a line; blank lines and lines starting with `;` are ignored, whitespace is
//! trimmed (there are no trailing comments: `#` starts a reference line):
//!
//! ```text
//! libfix.so                    first item: the .so holding the new functions
//! @/usr/lib/libfoo.so          starts a target object
//! foo_parse:foo_parse_fixed    old:new, replaces a function of the current target
//! !CVE-2026-1234               a label kept in the metadata
//! #counter:ref_counter         a reference (refused: not supported yet)
//! ```
//!
//! Relative paths are resolved against the `.dsc` file's folder and made canonical. Every
//! old function must exist in its target with a supported patchable prologue; every new
//! function must be a defined, exported function of the patch `.so`.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use pulp_elf::{self as inspect, FunctionInfo, InspectError};
use pulp_meta::format::FLAG_IMMEDIATE;
use pulp_meta::{Function, MetaError, PatchMeta, Prologue, Target};

/// A `.dsc` that cannot be packed: where, and why.
#[derive(Debug)]
pub struct PackError {
    /// The `.dsc` file.
    pub file: PathBuf,
    /// 1-based line, `None` for a problem with the whole file.
    pub line: Option<usize>,
    pub kind: PackErrorKind,
}

/// Why a `.dsc` cannot be packed.
#[derive(Debug, thiserror::Error)]
pub enum PackErrorKind {
    #[error("cannot read: {0}")]
    ReadDsc(io::Error),
    #[error("no patch .so: the first line must name the .so holding the new functions")]
    NoPatchSo,
    #[error("cannot open {what} {}: {source}", path.display())]
    Open { what: &'static str, path: PathBuf, source: io::Error },
    #[error("path {} is not valid UTF-8", path.display())]
    NotUtf8 { path: PathBuf },
    #[error(transparent)]
    Inspect(#[from] InspectError),
    #[error("malformed line `{line}`: {reason}")]
    Malformed { line: String, reason: &'static str },
    #[error("`{line}` comes before any `@TARGET` line")]
    NoTargetYet { line: String },
    #[error("references (#sym:var) are not supported yet")]
    Reference,
    #[error("target {target} is already given at line {first_line}")]
    DuplicateTarget { target: String, first_line: usize },
    #[error("function `{func}` not found in {target}")]
    OldNotFound { func: String, target: String },
    #[error("function `{func}` is not in {target}, only compiler clones of it: {}; replace those (`name.constprop.0:new`)", clones.join(", "))]
    OnlyClones { func: String, target: String, clones: Vec<String> },
    #[error(
        "function `{func}` is ambiguous in {target}: defined at {}; say which one as `{func}@OFFSET:new`",
        hex_list(offsets)
    )]
    Ambiguous { func: String, target: String, offsets: Vec<u64> },
    #[error(
        "function `{func}` in {target} has no patchable prologue (build it with -fpatchable-function-entry=16,14)"
    )]
    NotPatchable { func: String, target: String },
    #[error("function `{func}` in {target} has a {kind} prologue, which is not supported yet")]
    UnsupportedPrologue { func: String, target: String, kind: Prologue },
    #[error("function `{func}` already replaced in {target} at line {first_line}")]
    DuplicateFunction { func: String, target: String, first_line: usize },
    #[error("new function `{func}` not found in {patch_so}")]
    NewNotFound { func: String, patch_so: String },
    #[error("new function `{func}` in {patch_so} is not exported (it must be a global, non-hidden function)")]
    NewNotExported { func: String, patch_so: String },
    #[error("target {target} has no functions to replace")]
    NoFunctions { target: String },
    #[error("no targets: add an `@TARGET` line followed by `old:new` lines")]
    NoTargets,
    #[error(transparent)]
    Meta(#[from] MetaError),
}

fn hex_list(offsets: &[u64]) -> String {
    offsets.iter().map(|o| format!("{o:#x}")).collect::<Vec<_>>().join(" and ")
}

impl fmt::Display for PackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}: {}", self.file.display(), self.kind),
            None => write!(f, "{}: {}", self.file.display(), self.kind),
        }
    }
}

impl std::error::Error for PackError {}

/// An object named by the `.dsc`, inspected once.
struct Object {
    path: String,
    build_id: Vec<u8>,
    functions: Vec<FunctionInfo>,
}

impl Object {
    fn open(base: &Path, raw: &str, what: &'static str) -> Result<Self, PackErrorKind> {
        let joined = base.join(raw);
        let path =
            joined.canonicalize().map_err(|source| PackErrorKind::Open { what, path: joined.clone(), source })?;
        let path_str = path.to_str().ok_or_else(|| PackErrorKind::NotUtf8 { path: path.clone() })?.to_owned();
        Ok(Self { build_id: inspect::build_id(&path)?, functions: inspect::functions(&path)?, path: path_str })
    }
}

/// A target being filled, with the line of each thing for later messages.
struct PendingTarget {
    object: Object,
    line: usize,
    functions: Vec<Function>,
    lines: HashMap<String, usize>,
}

/// Something about a patch that is legal but deserves the operator's attention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackWarning {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for PackWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// Read, resolve and check a `.dsc` file.
pub fn pack(dsc: &Path) -> Result<PatchMeta, PackError> {
    pack_with_warnings(dsc).map(|(meta, _)| meta)
}

/// [`pack`], also returning the warnings: local functions the compiler may have
/// inlined into their callers, and clones (`.isra`, `.constprop`, `.part`, `.cold`) of
/// an old function, which keep the old code.
pub fn pack_with_warnings(dsc: &Path) -> Result<(PatchMeta, Vec<PackWarning>), PackError> {
    let mut warnings = Vec::new();
    let whole = |kind| PackError { file: dsc.to_path_buf(), line: None, kind };
    let at = |line: usize| move |kind| PackError { file: dsc.to_path_buf(), line: Some(line), kind };
    let text = std::fs::read_to_string(dsc).map_err(|e| whole(PackErrorKind::ReadDsc(e)))?;
    let base = dsc.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };

    let mut patch: Option<Object> = None;
    let mut labels = Vec::new();
    let mut flags = 0;
    let mut done: Vec<PendingTarget> = Vec::new();
    let mut current: Option<PendingTarget> = None;

    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with(';') {
            continue;
        }
        let Some(patch) = &patch else {
            if line.starts_with(['@', '!', '#']) || line.contains(':') {
                return Err(at(n)(PackErrorKind::NoPatchSo));
            }
            patch = Some(Object::open(&base, line, "patch .so").map_err(at(n))?);
            continue;
        };
        if line.starts_with('#') {
            return Err(at(n)(PackErrorKind::Reference));
        } else if let Some(option) = line.strip_prefix('%') {
            match option.trim() {
                "immediate" => flags |= FLAG_IMMEDIATE,
                _ => return Err(at(n)(malformed(line, "unknown option (known: `%immediate`)"))),
            }
        } else if let Some(label) = line.strip_prefix('!') {
            let label = label.trim();
            if label.is_empty() {
                return Err(at(n)(malformed(line, "empty label")));
            }
            labels.push(label.to_owned());
        } else if let Some(raw_path) = line.strip_prefix('@') {
            let raw_path = raw_path.trim();
            if raw_path.is_empty() {
                return Err(at(n)(malformed(line, "`@` must be followed by the target's path")));
            }
            let object = Object::open(&base, raw_path, "target").map_err(at(n))?;
            let seen = done.iter().chain(&current).find(|t| t.object.path == object.path);
            if let Some(first) = seen {
                let kind = PackErrorKind::DuplicateTarget { target: object.path, first_line: first.line };
                return Err(at(n)(kind));
            }
            if let Some(t) = current.take() {
                done.push(finish(t).map_err(at_target(dsc))?);
            }
            current = Some(PendingTarget { object, line: n, functions: Vec::new(), lines: HashMap::new() });
        } else if let Some((old, new)) = line.split_once(':') {
            let (old, new) = (old.trim(), new.trim());
            let bad = |s: &str| s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == ':');
            if bad(old) || bad(new) {
                return Err(at(n)(malformed(line, "expected `old_function:new_function`")));
            }
            let Some(target) = current.as_mut() else {
                return Err(at(n)(PackErrorKind::NoTargetYet { line: line.to_owned() }));
            };
            let func = replacement(target, patch, old, new).map_err(at(n))?;
            for message in caveats(target, &func) {
                warnings.push(PackWarning { file: dsc.to_path_buf(), line: n, message });
            }
            target.lines.insert(old.to_owned(), n);
            target.functions.push(func);
        } else {
            return Err(at(n)(malformed(
                line,
                "expected `@TARGET`, `old_function:new_function`, `!label`, `%option` or `#symbol:variable`",
            )));
        }
    }

    let Some(patch) = patch else {
        return Err(whole(PackErrorKind::NoPatchSo));
    };
    if let Some(t) = current.take() {
        done.push(finish(t).map_err(at_target(dsc))?);
    }
    if done.is_empty() {
        return Err(whole(PackErrorKind::NoTargets));
    }
    let patch_sha256 = std::fs::read(&patch.path)
        .map(|bytes| pulp_meta::sha256::sha256(&bytes))
        .map_err(|source| whole(PackErrorKind::Open { what: "patch .so", path: patch.path.clone().into(), source }))?;
    let meta = PatchMeta {
        flags,
        level: 0,
        patch_so: patch.path,
        patch_build_id: patch.build_id,
        patch_sha256,
        labels,
        states: Vec::new(),
        targets: done
            .into_iter()
            .map(|t| Target {
                path: t.object.path,
                build_id: t.object.build_id,
                functions: t.functions,
                references: Vec::new(),
            })
            .collect(),
    };
    meta.validate().map_err(|e| whole(e.into()))?;
    Ok((meta, warnings))
}

/// Functions the compiler derived from `name` (`name.isra.0`, `name.constprop.1`,
/// `name.part.0`, `name.cold`, ...): they hold copies of its code.
fn clones_of(target: &PendingTarget, name: &str) -> Vec<String> {
    target
        .object
        .functions
        .iter()
        .map(|f| f.name.as_str())
        .filter(|n| {
            n.strip_prefix(name).and_then(|rest| rest.strip_prefix('.')).is_some_and(|suffix| {
                ["isra", "constprop", "part", "cold", "clone", "lto_priv"].iter().any(|k| suffix.starts_with(k))
            })
        })
        .map(str::to_owned)
        .collect()
}

/// What the operator should know about replacing `func` in `target`.
fn caveats(target: &PendingTarget, func: &Function) -> Vec<String> {
    let mut out = Vec::new();
    let me = target.object.functions.iter().find(|f| f.offset == func.offset && f.name == func.old);
    if me.is_some_and(|f| !f.global) {
        out.push(format!(
            "`{}` is a local (static) function: calls the compiler inlined into its callers are not redirected; \
             if it may have been inlined, replace its callers too",
            func.old
        ));
    }
    let clones = clones_of(target, &func.old);
    if !clones.is_empty() {
        out.push(format!(
            "`{}` has compiler clones that keep the old code: {}; replace them too, or rebuild with \
             -fno-ipa-sra -fno-ipa-cp -fno-partial-inlining",
            func.old,
            clones.join(", ")
        ));
    }
    out
}

fn malformed(line: &str, reason: &'static str) -> PackErrorKind {
    PackErrorKind::Malformed { line: line.to_owned(), reason }
}

/// Errors of a finished target point at its `@` line.
fn at_target(dsc: &Path) -> impl Fn((usize, PackErrorKind)) -> PackError + '_ {
    move |(line, kind)| PackError { file: dsc.to_path_buf(), line: Some(line), kind }
}

fn finish(t: PendingTarget) -> Result<PendingTarget, (usize, PackErrorKind)> {
    if t.functions.is_empty() {
        return Err((t.line, PackErrorKind::NoFunctions { target: t.object.path }));
    }
    Ok(t)
}

/// Resolve one `old:new` line of `target`.
fn replacement(target: &PendingTarget, patch: &Object, old: &str, new: &str) -> Result<Function, PackErrorKind> {
    let tpath = &target.object.path;
    if let Some(&first_line) = target.lines.get(old) {
        return Err(PackErrorKind::DuplicateFunction { func: old.into(), target: tpath.clone(), first_line });
    }
    // `name@OFFSET` picks one of several local functions with the same name.
    let (name, at) = match old.split_once('@') {
        Some((name, off)) => {
            let off = off.trim_start_matches("0x");
            let off = u64::from_str_radix(off, 16)
                .map_err(|_| PackErrorKind::OldNotFound { func: old.into(), target: tpath.clone() })?;
            (name, Some(off))
        }
        None => (old, None),
    };
    let candidates: Vec<&FunctionInfo> =
        target.object.functions.iter().filter(|f| f.name == name && at.is_none_or(|o| f.offset == o)).collect();
    let f = match candidates.as_slice() {
        [] => {
            let clones = clones_of(target, name);
            if clones.is_empty() {
                return Err(PackErrorKind::OldNotFound { func: old.into(), target: tpath.clone() });
            }
            return Err(PackErrorKind::OnlyClones { func: name.into(), target: tpath.clone(), clones });
        }
        [f] => *f,
        many => {
            let offsets = many.iter().map(|f| f.offset).collect();
            return Err(PackErrorKind::Ambiguous { func: old.into(), target: tpath.clone(), offsets });
        }
    };
    let prologue = match f.prologue {
        None => return Err(PackErrorKind::NotPatchable { func: old.into(), target: tpath.clone() }),
        Some(k) if !k.is_supported() => {
            return Err(PackErrorKind::UnsupportedPrologue { func: old.into(), target: tpath.clone(), kind: k })
        }
        Some(k) => k,
    };
    let in_patch: Vec<&FunctionInfo> = patch.functions.iter().filter(|f| f.name == new).collect();
    if in_patch.is_empty() {
        return Err(PackErrorKind::NewNotFound { func: new.into(), patch_so: patch.path.clone() });
    }
    if !in_patch.iter().any(|f| f.global && f.dynamic) {
        return Err(PackErrorKind::NewNotExported { func: new.into(), patch_so: patch.path.clone() });
    }
    Ok(Function { old: name.into(), offset: f.offset, prologue, new: new.into() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulp_cc_build::Build;
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
                    new: "foo_parse_fixed".into()
                },
                Function {
                    old: "foo_len".into(),
                    offset: off("foo_len"),
                    prologue: Prologue::NopPad66,
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
        assert_eq!(
            fx.err("; only a comment\n\n"),
            " no patch .so: the first line must name the .so holding the new functions"
        );
        assert_eq!(
            fx.err("@libfoo.so\n"),
            "1: no patch .so: the first line must name the .so holding the new functions"
        );
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
            "4: references (#sym:var) are not supported yet"
        );
        assert_eq!(
            fx.err("libfix.so\n@libfoo.so\nfoo_len:foo_len_fixed # trailing\n"),
            "3: malformed line `foo_len:foo_len_fixed # trailing`: expected `old_function:new_function`"
        );
        assert!(fx.err("libfix.so\n@libfoo.so\njust words\n").starts_with("3: malformed line `just words`: expected"));
        assert!(fx.err("libfix.so\n!\n").starts_with("2: malformed line `!`: empty label"));
        assert_eq!(
            fx.err("libfix.so\n@libfoo.so\nnope:foo_len_fixed\n"),
            format!("3: function `nope` not found in {t}")
        );
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
        assert_eq!(
            fx.err("libfix.so\n@libplain.so\nfoo_len:foo_len_fixed\n"),
            format!(
                "3: function `foo_len` in {} has no patchable prologue (build it with -fpatchable-function-entry=16,14)",
                fx.plain
            )
        );
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
                "3: function `twin` is ambiguous in {}: defined at {:#x} and {:#x}; say which one as `twin@OFFSET:new`",
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
}
