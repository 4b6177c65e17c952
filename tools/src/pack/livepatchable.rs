//! `pulp livepatchable FILE`: can the functions of this object be live-patched?
//!
//! Lists every function with its offset, size, binding, prologue kind and whether this
//! release can redirect it, then a summary. The object passes when at least one of its
//! functions can be patched by this release and every exported function (the ones in
//! `.dynsym`, which other objects call) has a patchable prologue.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection};
use pulp_elf::inspect::SymbolSource;
use pulp_elf::{DebugSearch, FunctionInfo, InspectError};
use serde_json::{json, Value};

/// How many exported functions a failure message names before "and N more".
const NAMED: usize = 5;

/// What kind of object the file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    SharedObject,
    /// A PIE or a position-dependent executable.
    Executable,
}

/// The answer for one object.
#[derive(Clone, Debug)]
pub struct Report {
    pub file: PathBuf,
    pub kind: ObjectKind,
    pub functions: Vec<FunctionInfo>,
    /// Where the symbols came from.
    pub source: SymbolSource,
}

impl Report {
    pub fn patchable(&self) -> impl Iterator<Item = &FunctionInfo> {
        self.functions.iter().filter(|f| f.prologue.is_some())
    }

    /// Functions this release can redirect: a supported prologue.
    pub fn can_patch(&self, f: &FunctionInfo) -> bool {
        f.prologue.is_some_and(|k| k.is_supported())
    }

    pub fn exported(&self) -> impl Iterator<Item = &FunctionInfo> {
        self.functions.iter().filter(|f| f.dynamic)
    }

    /// `Ok` when the object passes, else why not (one line).
    pub fn verdict(&self) -> Result<(), String> {
        let file = self.file.display();
        if !self.functions.iter().any(|f| self.can_patch(f)) {
            let unsupported: Vec<_> = self.patchable().filter_map(|f| f.prologue).collect();
            return Err(match unsupported.first() {
                Some(k) => format!(
                    "{file}: no function this release can patch: its functions have a {k} prologue, \
                     which is not supported yet (build with -fpatchable-function-entry=16,14)"
                ),
                None => format!(
                    "{file}: no function has a patchable prologue (build it with pulp-cc or \
                     -fpatchable-function-entry=16,14)"
                ),
            });
        }
        let bad: Vec<&str> = self.exported().filter(|f| f.prologue.is_none()).map(|f| f.name.as_str()).collect();
        if !bad.is_empty() {
            let mut names = bad.iter().take(NAMED).copied().collect::<Vec<_>>().join(", ");
            if bad.len() > NAMED {
                let _ = write!(names, " and {} more", bad.len() - NAMED);
            }
            return Err(format!(
                "{file}: {} exported function{} not patchable: {names} (were all its sources built with \
                 -fpatchable-function-entry=16,14?)",
                bad.len(),
                if bad.len() == 1 { " is" } else { "s are" }
            ));
        }
        Ok(())
    }

    pub fn summary(&self) -> String {
        let n = self.functions.len();
        let patchable = self.patchable().count();
        let supported = self.functions.iter().filter(|f| self.can_patch(f)).count();
        let exported = self.exported().count();
        let exported_ok = self.exported().filter(|f| f.prologue.is_some()).count();
        format!(
            "{n} functions: {patchable} patchable, {supported} supported by this release; \
             exported: {exported_ok} of {exported} patchable"
        )
    }
}

/// Why a file could not be inspected; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum LivepatchableError {
    #[error(transparent)]
    Inspect(#[from] InspectError),
    #[error("{}: not an executable or shared object (a relocatable .o? link it first)", path.display())]
    NotLinked { path: PathBuf },
}

/// Inspect `path` (a stripped object's static functions come from a debug file found the
/// default way).
pub fn check(path: &Path) -> Result<Report, LivepatchableError> {
    check_with(path, &DebugSearch::default())
}

/// Inspect `path`, looking for its debug file as `search` says when it is stripped.
pub fn check_with(path: &Path, search: &DebugSearch) -> Result<Report, LivepatchableError> {
    let inspected = pulp_elf::inspect(path, search)?;
    let (functions, source) = (inspected.functions, inspected.source);
    let data = std::fs::read(path).map_err(|source| InspectError::Read { path: path.into(), source })?;
    let file = object::File::parse(&*data).map_err(|source| InspectError::Parse { path: path.into(), source })?;
    let kind = match file.kind() {
        object::ObjectKind::Executable => ObjectKind::Executable,
        object::ObjectKind::Dynamic if is_pie(&file) => ObjectKind::Executable,
        object::ObjectKind::Dynamic => ObjectKind::SharedObject,
        _ => return Err(LivepatchableError::NotLinked { path: path.into() }),
    };
    Ok(Report { file: path.into(), kind, functions, source })
}

/// A position-independent executable: `DF_1_PIE` in `DT_FLAGS_1`.
fn is_pie(file: &object::File<'_>) -> bool {
    const DT_FLAGS_1: u64 = 0x6fff_fffb;
    const DF_1_PIE: u64 = 0x0800_0000;
    let Some(data) = file.section_by_name(".dynamic").and_then(|s| s.data().ok()) else {
        return false;
    };
    data.chunks_exact(16).any(|e| {
        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
        word(&e[..8]) == DT_FLAGS_1 && word(&e[8..]) & DF_1_PIE != 0
    })
}

fn kind_name(r: &Report) -> &'static str {
    match r.kind {
        ObjectKind::SharedObject => "shared object",
        ObjectKind::Executable => "executable",
    }
}

/// The table, the summary and the verdict, as text.
pub fn to_text(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{} ({})", r.file.display(), kind_name(r));
    match &r.source {
        SymbolSource::Own => {}
        SymbolSource::DebugFile(p) => {
            let _ = writeln!(s, "symbols from the debug file {}", p.display());
        }
        SymbolSource::Stripped { tried } => {
            let _ = writeln!(
                s,
                "stripped, and no debug file was found ({}): only exported functions are listed",
                pulp_elf::debugfile::DebugLookup::describe_tried(tried)
            );
        }
    }
    let width = r.functions.iter().map(|f| f.name.len()).max().unwrap_or(0).max(8);
    let _ = writeln!(
        s,
        "  {:<width$}  {:>10}  {:>6}  {:<6}  {:<22}  supported",
        "function", "offset", "size", "bind", "prologue"
    );
    for f in &r.functions {
        let bind = match (f.global, f.dynamic) {
            (_, true) => "export",
            (true, false) => "global",
            (false, false) => "local",
        };
        let prologue = f.prologue.map_or("not patchable", |k| k.name());
        let supported = if r.can_patch(f) { "yes" } else { "no" };
        let _ = writeln!(
            s,
            "  {:<width$}  {:>#10x}  {:>6}  {:<6}  {:<22}  {supported}",
            f.name, f.offset, f.size, bind, prologue
        );
    }
    let _ = writeln!(s, "{}", r.summary());
    match r.verdict() {
        Ok(()) => {
            let _ = writeln!(s, "live-patchable: yes");
        }
        Err(why) => {
            let _ = writeln!(s, "live-patchable: no: {why}");
        }
    }
    s
}

/// The same as a JSON object.
pub fn to_json(r: &Report) -> Value {
    let verdict = r.verdict();
    json!({
        "file": r.file.display().to_string(),
        "kind": kind_name(r),
        "symbols": match &r.source {
            SymbolSource::Own => "symbol table".to_string(),
            SymbolSource::DebugFile(p) => format!("debug file {}", p.display()),
            SymbolSource::Stripped { .. } => "exports only (stripped)".to_string(),
        },
        "functions": r.functions.iter().map(|f| json!({
            "name": f.name,
            "offset": f.offset,
            "size": f.size,
            "global": f.global,
            "exported": f.dynamic,
            "prologue": f.prologue.map(|k| k.name()),
            "patchable": f.prologue.is_some(),
            "supported": r.can_patch(f),
        })).collect::<Vec<_>>(),
        "summary": {
            "functions": r.functions.len(),
            "patchable": r.patchable().count(),
            "supported": r.functions.iter().filter(|f| r.can_patch(f)).count(),
            "exported": r.exported().count(),
            "exported_patchable": r.exported().filter(|f| f.prologue.is_some()).count(),
        },
        "livepatchable": verdict.is_ok(),
        "reason": verdict.err(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulp_cc_build::Build;
    use pulp_meta::Prologue;

    const LIB: &str = "int lib_a(int x) { return x + 1; }\nint lib_b(int x) { return x * 3; }\n\
                       __attribute__((noinline)) static int helper(int x) { return x - 1; }\n\
                       int lib_c(int x) { return helper(x); }\n";
    const EXTRA: &str = "int lib_plain(int x) { return x ^ 5; }\n";

    fn build(dir: &Path, name: &str, src: &str, b: &mut Build) -> PathBuf {
        let c = dir.join(format!("{name}.c"));
        std::fs::write(&c, src).unwrap();
        b.out_dir(dir).file(c).shared(name).unwrap()
    }

    #[test]
    fn patchable_library_passes() {
        let dir = tempfile::tempdir().unwrap();
        let so = build(dir.path(), "good", LIB, &mut Build::new());
        let r = check(&so).unwrap();
        assert_eq!(r.kind, ObjectKind::SharedObject);
        assert_eq!(r.verdict(), Ok(()));
        let text = to_text(&r);
        assert!(text.contains("live-patchable: yes"), "{text}");
        let line = text.lines().find(|l| l.trim_start().starts_with("lib_a ")).unwrap();
        assert!(line.contains("export") && line.contains("nop-pad (66 90)") && line.ends_with("yes"), "{line}");
        let helper = text.lines().find(|l| l.trim_start().starts_with("helper ")).unwrap();
        assert!(helper.contains("local"), "{helper}");
        let v = to_json(&r);
        assert_eq!(v["livepatchable"], true);
        let a = v["functions"].as_array().unwrap().iter().find(|f| f["name"] == "lib_a").unwrap();
        assert_eq!(a["prologue"], "nop-pad (66 90)");
        assert_eq!(a["supported"], true);
        assert_eq!(a["exported"], true);
        assert_eq!(v["summary"]["exported_patchable"], v["summary"]["exported"]);
    }

    #[test]
    fn unpadded_export_fails_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("padded.c"), LIB).unwrap();
        let padded = d.join("padded.o");
        let status = std::process::Command::new("cc")
            .args(["-O2", "-fPIC", "-fpatchable-function-entry=16,14", "-c"])
            .arg(d.join("padded.c"))
            .arg("-o")
            .arg(&padded)
            .status()
            .unwrap();
        assert!(status.success());
        let so = build(d, "mixed", EXTRA, Build::new().patchable(false).flag(padded.to_str().unwrap()));
        let r = check(&so).unwrap();
        let why = r.verdict().unwrap_err();
        assert!(why.contains("1 exported function is not patchable: lib_plain"), "{why}");
        assert!(why.starts_with(&so.display().to_string()), "{why}");
        assert!(to_text(&r).contains("not patchable"));
    }

    #[test]
    fn plain_library_fails_and_fentry_library_passes() {
        let dir = tempfile::tempdir().unwrap();
        let plain = build(dir.path(), "plain", LIB, Build::new().patchable(false));
        let why = check(&plain).unwrap().verdict().unwrap_err();
        assert!(why.contains("no function has a patchable prologue"), "{why}");

        let fentry = build(dir.path(), "fentry", LIB, Build::new().patchable(false).flag("-pg").flag("-mfentry"));
        let r = check(&fentry).unwrap();
        let a = r.functions.iter().find(|f| f.name == "lib_a").unwrap();
        assert!(matches!(a.prologue, Some(Prologue::FentryGotCall | Prologue::FentryCall)), "{a:?}");
        assert!(r.can_patch(a));
        assert_eq!(r.verdict(), Ok(()));
        assert_eq!(to_json(&r)["functions"].as_array().unwrap().len(), r.functions.len());
    }

    #[test]
    fn executables_are_checked_like_libraries() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("main.c");
        std::fs::write(&c, "int twice(int x) { return 2 * x; }\nint main(void) { return twice(0); }\n").unwrap();
        let exe = Build::new().out_dir(dir.path()).file(&c).executable("main").unwrap();
        let r = check(&exe).unwrap();
        assert_eq!(r.kind, ObjectKind::Executable);
        assert_eq!(r.functions.iter().find(|f| f.name == "twice").unwrap().prologue, Some(Prologue::NopPad66));
        assert_eq!(r.verdict(), Ok(()));
        assert!(to_text(&r).contains("executable"));
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.so");
        std::fs::write(&junk, "not an ELF").unwrap();
        assert!(check(&junk).unwrap_err().to_string().contains("junk.so"));
        let missing = dir.path().join("missing.so");
        assert!(check(&missing).unwrap_err().to_string().contains("missing.so"));
        let c = dir.path().join("x.c");
        std::fs::write(&c, LIB).unwrap();
        let o = dir.path().join("x.o");
        assert!(std::process::Command::new("cc").arg("-c").arg(&c).arg("-o").arg(&o).status().unwrap().success());
        let e = check(&o).unwrap_err().to_string();
        assert!(e.contains("x.o") && e.contains("not an executable or shared object"), "{e}");
    }
}
