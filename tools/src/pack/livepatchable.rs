//! `pulp livepatchable FILE`: can the functions of this object be live-patched?
//!
//! Lists every function with its offset, size, binding, prologue kind and whether this
//! release can redirect it, then a summary. The object passes when at least one of its
//! functions can be patched by this release and every exported function (the ones in
//! `.dynsym`, which other objects call) has a patchable prologue.
//!
//! For each function without a patchable prologue it also says whether its first
//! instructions could be overwritten by an entry jump (`pulp_unpadded::plan`: how many
//! bytes, or the reason it is refused), with the counts by reason in the summary: what
//! `pulp pack` plans for such a function and `pulp-trigger` writes. Those verdicts do not
//! change the object's, which speaks of patchable prologues only.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection};
use pulp_elf::inspect::SymbolSource;
use pulp_elf::{DebugSearch, FunctionInfo, InspectError};
use pulp_unpadded::{Plan, Reason};
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
    /// For each of `functions` (same index): `None` when it has a patchable prologue, else
    /// the plan of an entry jump over its first instructions or why there can be none.
    pub entry_jumps: Vec<Option<EntryJump>>,
    /// The addresses of IFUNC symbols, sorted: there an IFUNC's resolver begins, code the
    /// dynamic linker ran once at load, not what callers reach.
    pub ifunc_entries: Vec<u64>,
}

/// Whether an entry jump could overwrite the first instructions of a function without a
/// patchable prologue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryJump {
    /// What it would overwrite.
    Plannable(Plan),
    /// Why it must not (from `pulp_unpadded::plan`).
    Refused(Reason),
    /// The symbol has no size (assembly without `.size`): where the function ends, and so
    /// which jumps are its own, is unknown.
    Unsized,
    /// An IFUNC symbol or its resolver: patching it changes nothing in a running process.
    Ifunc,
}

impl EntryJump {
    pub fn is_plannable(&self) -> bool {
        matches!(self, EntryJump::Plannable(_))
    }

    /// The short name of the reason of a refusal, for the summary counts and JSON.
    pub fn reason_key(&self) -> Option<&'static str> {
        Some(match self {
            EntryJump::Plannable(_) => return None,
            EntryJump::Unsized => "unsized",
            EntryJump::Ifunc => "ifunc",
            EntryJump::Refused(Reason::TooShort { .. }) => "too-short",
            EntryJump::Refused(Reason::BranchIntoDisplaced { .. }) => "branch-into-overwritten",
            EntryJump::Refused(Reason::ReferenceIntoDisplaced { .. }) => "reference-into-overwritten",
            EntryJump::Refused(Reason::Undecodable { .. }) => "undecodable",
            EntryJump::Refused(Reason::Unsupported { .. }) => "unmovable-instruction",
            EntryJump::Refused(Reason::OutOfReach { .. }) => "out-of-reach",
        })
    }

    /// The reason of a refusal, in words.
    pub fn why(&self) -> Option<String> {
        match self {
            EntryJump::Plannable(_) => None,
            EntryJump::Refused(r) => Some(r.to_string()),
            EntryJump::Unsized => Some("its symbol has no size, so where its code ends is unknown".into()),
            EntryJump::Ifunc => Some(
                "an IFUNC or its resolver: it ran once, at load, to choose the code callers reach; patch that code"
                    .into(),
            ),
        }
    }
}

impl Report {
    pub fn patchable(&self) -> impl Iterator<Item = &FunctionInfo> {
        self.functions.iter().filter(|f| f.prologue.is_some())
    }

    /// Functions this release can redirect: a supported prologue, and not an IFUNC or
    /// its resolver (`pulp pack` refuses those).
    pub fn can_patch(&self, f: &FunctionInfo) -> bool {
        f.prologue.is_some_and(|k| k.is_supported()) && !self.is_ifunc(f)
    }

    /// An IFUNC symbol, or a function at the address of one (its resolver).
    pub fn is_ifunc(&self, f: &FunctionInfo) -> bool {
        f.ifunc || self.ifunc_entries.binary_search(&f.offset).is_ok()
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

    /// The functions without a patchable prologue, each with its entry-jump verdict.
    pub fn unpadded(&self) -> impl Iterator<Item = (&FunctionInfo, &EntryJump)> {
        self.functions.iter().zip(&self.entry_jumps).filter_map(|(f, e)| Some((f, e.as_ref()?)))
    }

    /// How many functions without a pad are refused an entry jump, by [`EntryJump::reason_key`]
    /// (sorted by key).
    pub fn refusals_by_reason(&self) -> std::collections::BTreeMap<&'static str, usize> {
        let mut by = std::collections::BTreeMap::new();
        for key in self.unpadded().filter_map(|(_, e)| e.reason_key()) {
            *by.entry(key).or_default() += 1;
        }
        by
    }

    /// The entry-jump line of the summary, when the object has functions without a pad.
    pub fn unpadded_summary(&self) -> Option<String> {
        let n = self.unpadded().count();
        if n == 0 {
            return None;
        }
        let planned = self.unpadded().filter(|(_, e)| e.is_plannable()).count();
        let mut s = format!(
            "without a patchable prologue: {n}; an entry jump could overwrite the first instructions of {planned}"
        );
        let by = self.refusals_by_reason();
        if !by.is_empty() {
            let counts: Vec<String> = by.iter().map(|(k, c)| format!("{c} {k}")).collect();
            let _ = write!(s, ", refused {}: {}", n - planned, counts.join(", "));
        }
        s.push_str(" (pulp pack and pulp-trigger patch those by overwriting their entry)");
        Some(s)
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
    let mut ifunc_entries: Vec<u64> = functions.iter().filter(|f| f.ifunc).map(|f| f.offset).collect();
    ifunc_entries.sort_unstable();
    ifunc_entries.dedup();
    let entry_jumps = entry_jumps(&file, &functions, &inspected.symbols, &ifunc_entries);
    Ok(Report { file: path.into(), kind, functions, source, entry_jumps, ifunc_entries })
}

/// The entry-jump verdict of every function without a patchable prologue. Inbound
/// addresses are those of [`super::unpadded::inbound_of`].
fn entry_jumps(
    file: &object::File<'_>,
    functions: &[FunctionInfo],
    symbols: &[pulp_elf::Symbol],
    ifunc_entries: &[u64],
) -> Vec<Option<EntryJump>> {
    if functions.iter().all(|f| f.prologue.is_some()) {
        return vec![None; functions.len()];
    }
    let inbound = super::unpadded::inbound_of(file, symbols);
    functions
        .iter()
        .map(|f| {
            f.prologue.is_none().then(|| {
                if ifunc_entries.binary_search(&f.offset).is_ok() {
                    return EntryJump::Ifunc;
                }
                if f.size == 0 {
                    return EntryJump::Unsized;
                }
                let code = super::unpadded::function_bytes(file, f.offset, f.size).unwrap_or_default();
                // Only the inbound addresses within the function matter to its plan.
                let from = inbound.partition_point(|&a| a < f.offset);
                let to = inbound.partition_point(|&a| a < f.offset.saturating_add(f.size));
                match pulp_unpadded::plan(&f.name, code, f.offset, &inbound[from..to]) {
                    Ok(p) => EntryJump::Plannable(p),
                    Err(r) => EntryJump::Refused(r.reason),
                }
            })
        })
        .collect()
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
        "  {:<width$}  {:>10}  {:>6}  {:<6}  {:<22}  supported{}",
        "function",
        "offset",
        "size",
        "bind",
        "prologue",
        if r.unpadded().next().is_some() { "  entry jump (no prologue)" } else { "" }
    );
    for (f, entry) in r.functions.iter().zip(&r.entry_jumps) {
        let bind = match (f.global, f.dynamic) {
            (_, true) => "export",
            (true, false) => "global",
            (false, false) => "local",
        };
        let prologue = f.prologue.map_or("not patchable", |k| k.name());
        let supported = if r.can_patch(f) { "yes" } else { "no " };
        let supported = match entry {
            None => supported.trim_end().to_string(),
            Some(EntryJump::Plannable(p)) => format!("{supported}        overwrites {} bytes{}", p.len, endbr_kept(p)),
            Some(refused) => format!(
                "{supported}        refused, {}: {}",
                refused.reason_key().unwrap_or_default(),
                refused.why().unwrap_or_default()
            ),
        };
        let _ = writeln!(
            s,
            "  {:<width$}  {:>#10x}  {:>6}  {:<6}  {:<22}  {supported}",
            f.name, f.offset, f.size, bind, prologue
        );
    }
    let _ = writeln!(s, "{}", r.summary());
    if let Some(line) = r.unpadded_summary() {
        let _ = writeln!(s, "{line}");
    }
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

fn endbr_kept(p: &Plan) -> &'static str {
    if p.skip > 0 {
        " after endbr64"
    } else {
        ""
    }
}

/// One function's entry-jump verdict as JSON (`null` for a function with a prologue).
fn entry_json(entry: &Option<EntryJump>) -> Value {
    match entry {
        None => Value::Null,
        Some(EntryJump::Plannable(p)) => json!({ "plannable": true, "kept": p.skip, "overwritten": p.len }),
        Some(refused) => json!({ "plannable": false, "reason": refused.reason_key(), "why": refused.why() }),
    }
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
        "functions": r.functions.iter().zip(&r.entry_jumps).map(|(f, entry)| json!({
            "name": f.name,
            "offset": f.offset,
            "size": f.size,
            "global": f.global,
            "exported": f.dynamic,
            "prologue": f.prologue.map(|k| k.name()),
            "patchable": f.prologue.is_some(),
            "supported": r.can_patch(f),
            "ifunc": r.is_ifunc(f),
            "entry_jump": entry_json(entry),
        })).collect::<Vec<_>>(),
        "summary": {
            "functions": r.functions.len(),
            "patchable": r.patchable().count(),
            "supported": r.functions.iter().filter(|f| r.can_patch(f)).count(),
            "exported": r.exported().count(),
            "exported_patchable": r.exported().filter(|f| f.prologue.is_some()).count(),
            "unpadded": r.unpadded().count(),
            "entry_jump_plannable": r.unpadded().filter(|(_, e)| e.is_plannable()).count(),
            "entry_jump_refused": r.refusals_by_reason(),
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
