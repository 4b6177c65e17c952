//! `pulp pack`: turn a description file (`.dsc`, syntax in [`dsc`]) into a [`PatchMeta`].
//!
//! Relative paths are resolved against the `.dsc` file's folder and made canonical. Every
//! old function must exist in its target with a supported patchable prologue; every new
//! function must be a defined, exported function of the patch `.so`; every reference must
//! name a symbol of its target and an exported, writable variable of the patch `.so` big
//! enough for it; and every symbol the patch `.so` imports must be there at load time
//! ([`imports`]). Symbols of stripped targets come from their separate debug files.

pub mod dsc;
pub mod imports;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use dsc::{DscOption, Item, RefForm, SymbolName};
use pulp_elf::inspect::SymbolSource;
use pulp_elf::symbols::{cold_parent, has_compiler_abi, is_clone_of};
use pulp_elf::{DebugSearch, FunctionInfo, InspectError, Inspected, Symbol, SymbolKind};
use pulp_meta::format::{FLAG_IMMEDIATE, FLAG_REPLACE};
use pulp_meta::{Function, MetaError, PatchMeta, Prologue, RefKind, Reference, State, Target};

/// A `.dsc` that cannot be packed: where, and why.
#[derive(Debug)]
pub struct PackError {
    /// The `.dsc` file.
    pub file: PathBuf,
    /// 1-based line, `None` for a problem with the whole file.
    pub line: Option<usize>,
    pub kind: Box<PackErrorKind>,
}

/// Why a `.dsc` cannot be packed.
#[derive(Debug, thiserror::Error)]
pub enum PackErrorKind {
    #[error("cannot read: {0}")]
    ReadDsc(io::Error),
    #[error(transparent)]
    Parse(#[from] dsc::ParseErrorKind),
    #[error("cannot open {what} {}: {source}", path.display())]
    Open { what: &'static str, path: PathBuf, source: io::Error },
    #[error("path {} is not valid UTF-8", path.display())]
    NotUtf8 { path: PathBuf },
    #[error(transparent)]
    Inspect(#[from] InspectError),
    #[error("target {target} is already given at line {first_line}")]
    DuplicateTarget { target: String, first_line: usize },
    #[error("function `{func}` not found in {target}{hint}")]
    OldNotFound { func: String, target: String, hint: String },
    #[error(
        "function `{func}` of {target} exists only inlined (into {}): there is no copy of it to redirect; \
         replace the functions it was inlined into instead, or let `pulp build-patch` find them",
        list(callers)
    )]
    OnlyInlined { func: String, target: String, callers: Vec<String> },
    #[error("function `{func}` is not in {target}, only compiler clones of it: {}; replace those (`name.constprop.0:new`)", clones.join(", "))]
    OnlyClones { func: String, target: String, clones: Vec<String> },
    #[error(
        "`{func}` in {target} is the cold part of `{parent}` (code the compiler moved out of line, \
         jumped to from `{parent}`): cold parts are not entry points; replace `{parent}`"
    )]
    ColdPart { func: String, parent: String, target: String },
    #[error(
        "{what} `{func}` is ambiguous in {target}: defined at {}; say which one as `{func}@OFFSET`",
        hex_list(offsets)
    )]
    Ambiguous { what: &'static str, func: String, target: String, offsets: Vec<u64> },
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
    #[error("reference to `{symbol}`: no symbol of that name in {target}{hint}")]
    UnknownSymbol { symbol: String, target: String, hint: String },
    #[error("reference to `{symbol}`: it is a thread-local variable of {target}; write `#%{symbol}:VAR`")]
    TlsNeedsPercent { symbol: String, target: String },
    #[error("reference `#%{symbol}`: `{symbol}` of {target} is a {kind}, not a thread-local variable; write `#{symbol}:VAR`")]
    NotTls { symbol: String, target: String, kind: &'static str },
    #[error("reference to `{symbol}`: {symbol} + ({addend}) is outside the address space")]
    Overflow { symbol: String, addend: i64 },
    #[error("reference variable `{var}` not found in {patch_so}: define it there (e.g. `void *{var};`)")]
    VarNotFound { var: String, patch_so: String },
    #[error("reference variable `{var}` of {patch_so} is not exported and defined more than once (at {}): give one of them another name", hex_list(offsets))]
    VarAmbiguous { var: String, patch_so: String, offsets: Vec<u64> },
    #[error("reference variable `{var}` of {patch_so} is a {kind}, not a data object")]
    VarNotData { var: String, patch_so: String, kind: &'static str },
    #[error("reference variable `{var}` of {patch_so} has {size} bytes, a {what} reference needs {needed}")]
    VarTooSmall { var: String, patch_so: String, size: u64, needed: usize, what: &'static str },
    #[error(
        "reference variable `{var}` of {patch_so} is read-only once loaded (const or RELRO): make it a plain variable"
    )]
    VarReadOnly { var: String, patch_so: String },
    #[error("reference variable `{var}` already receives the reference at line {first_line}")]
    DuplicateVar { var: String, first_line: usize },
    #[error("debug file {}: {reason}", path.display())]
    DebugFile { path: PathBuf, reason: String },
    #[error(transparent)]
    Unresolved(#[from] imports::Unresolved),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

fn hex_list(offsets: &[u64]) -> String {
    offsets.iter().map(|o| format!("{o:#x}")).collect::<Vec<_>>().join(" and ")
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        return "functions debug info does not name".into();
    }
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
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

/// How to pack.
#[derive(Clone, Debug, Default)]
pub struct PackOptions {
    /// Switch every thread at once (as a `%immediate` line).
    pub immediate: bool,
    /// Where to find the debug files of stripped targets.
    pub debug: DebugSearch,
    /// Symbols of a target (canonical path) taken from another file whose code is known to
    /// be identical (`pulp build-patch`'s rebuild of it): for a stripped target without
    /// debug file.
    pub symbols_from: Vec<(PathBuf, PathBuf)>,
    /// Do not check the patch `.so`'s undefined symbols ([`imports`]).
    pub skip_import_check: bool,
    /// The `.dsc` was generated by `pulp build-patch`, which replaced every caller of an
    /// inlined function and chose clones knowingly: no warnings about those.
    pub generated: bool,
}

/// An object named by the `.dsc`, inspected once; it has a build-id.
struct Object {
    path: String,
    elf: Inspected,
}

impl Object {
    fn open(base: &Path, raw: &str, what: &'static str, opts: &PackOptions) -> Result<Self, PackErrorKind> {
        let joined = base.join(raw);
        let path =
            joined.canonicalize().map_err(|source| PackErrorKind::Open { what, path: joined.clone(), source })?;
        let path_str = path.to_str().ok_or_else(|| PackErrorKind::NotUtf8 { path: path.clone() })?.to_owned();
        let elf = match opts.symbols_from.iter().find(|(t, _)| *t == path) {
            Some((_, from)) => {
                // The object itself is not inspected: only its build-id is read.
                let build_id = pulp_elf::build_id(&path)?;
                let mut elf = pulp_elf::inspect(from, &DebugSearch::default())?;
                elf.path = path.clone();
                elf.info.build_id = Some(build_id);
                elf
            }
            None => {
                let mut elf = pulp_elf::inspect(&path, &opts.debug)?;
                if elf.info.build_id.is_none() {
                    // None (or an unreadable note): `build_id` gives the error.
                    elf.info.build_id = Some(pulp_elf::build_id(&path)?);
                }
                elf
            }
        };
        Ok(Self { elf, path: path_str })
    }

    /// The object's build-id ([`Object::open`] refuses an object without one).
    fn build_id(&self) -> &[u8] {
        self.elf.info.build_id.as_deref().expect("Object::open checked the build-id")
    }

    fn functions(&self) -> &[FunctionInfo] {
        &self.elf.functions
    }

    /// " (the target is stripped ...)" when static symbols may be unknown.
    fn stripped_hint(&self) -> String {
        match &self.elf.source {
            SymbolSource::Stripped { tried } => format!(
                " (it is stripped and no debug file was found: looked at {}; give one with --debug-file)",
                pulp_elf::debugfile::DebugLookup::describe_tried(tried)
            ),
            _ => String::new(),
        }
    }
}

/// A reference line waiting for its target to be complete (a reference to a function the
/// patch replaces gives its original code, whatever the order of the lines).
struct PendingRef {
    line: usize,
    symbol: SymbolName,
    addend: i64,
    form: RefForm,
    var: String,
}

/// A target being filled, with the line of each thing for later messages.
struct PendingTarget {
    object: Object,
    line: usize,
    functions: Vec<Function>,
    lines: HashMap<String, usize>,
    refs: Vec<PendingRef>,
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
/// inlined into their callers, clones (`.isra`, `.constprop`, `.part`, `.cold`) of
/// an old function, which keep the old code, clones named directly, and a patch that
/// imports a function it replaces.
pub fn pack_with_warnings(dsc: &Path) -> Result<(PatchMeta, Vec<PackWarning>), PackError> {
    pack_with(dsc, &PackOptions::default())
}

/// [`pack_with_warnings`] with options.
pub fn pack_with(dsc_path: &Path, opts: &PackOptions) -> Result<(PatchMeta, Vec<PackWarning>), PackError> {
    let whole = |kind| PackError { file: dsc_path.to_path_buf(), line: None, kind: Box::new(kind) };
    let text = std::fs::read_to_string(dsc_path).map_err(|e| whole(PackErrorKind::ReadDsc(e)))?;
    pack_text(dsc_path, &text, opts)
}

/// Pack `text`, the content of the `.dsc` at `dsc_path` (its folder resolves relative paths).
pub fn pack_text(dsc_path: &Path, text: &str, opts: &PackOptions) -> Result<(PatchMeta, Vec<PackWarning>), PackError> {
    let whole = |kind| PackError { file: dsc_path.to_path_buf(), line: None, kind: Box::new(kind) };
    let at =
        |line: usize| move |kind| PackError { file: dsc_path.to_path_buf(), line: Some(line), kind: Box::new(kind) };
    let lines = dsc::parse(text).map_err(|e| PackError {
        file: dsc_path.to_path_buf(),
        line: e.line,
        kind: Box::new(e.kind.into()),
    })?;
    let base = dsc_path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };

    let mut warnings = Vec::new();
    let mut patch: Option<Object> = None;
    let mut labels = Vec::new();
    let mut flags = if opts.immediate { FLAG_IMMEDIATE } else { 0 };
    let mut level = 0;
    let mut states: Vec<State> = Vec::new();
    let mut done: Vec<(PendingTarget, Target)> = Vec::new();
    let mut current: Option<PendingTarget> = None;
    let mut vars: HashMap<String, usize> = HashMap::new();

    for dsc::Line { line: n, item } in lines {
        match item {
            Item::Label(l) => labels.push(l),
            Item::Option(DscOption::Immediate) => flags |= FLAG_IMMEDIATE,
            Item::Option(DscOption::Replace) => flags |= FLAG_REPLACE,
            Item::Option(DscOption::Level(l)) => level = l,
            Item::Option(DscOption::State { id, version }) => states.push(State { id, version }),
            Item::PatchSo(raw) => patch = Some(Object::open(&base, &raw, "patch .so", opts).map_err(at(n))?),
            Item::Target(raw) => {
                let object = Object::open(&base, &raw, "target", opts).map_err(at(n))?;
                let seen = done.iter().map(|(t, _)| t).chain(&current).find(|t| t.object.path == object.path);
                if let Some(first) = seen {
                    let kind = PackErrorKind::DuplicateTarget { target: object.path, first_line: first.line };
                    return Err(at(n)(kind));
                }
                if let Some(t) = current.take() {
                    let patch = patch.as_ref().expect("the parser puts the patch .so first");
                    done.push(finish(dsc_path, t, patch, &mut vars, &mut warnings, opts.generated)?);
                }
                current = Some(PendingTarget {
                    object,
                    line: n,
                    functions: Vec::new(),
                    lines: HashMap::new(),
                    refs: Vec::new(),
                });
            }
            Item::Replace { old, new } => {
                let patch = patch.as_ref().expect("the parser puts the patch .so first");
                let target = current.as_mut().expect("the parser puts a target first");
                let func = replacement(target, patch, &old, &new).map_err(at(n))?;
                let caveats = if opts.generated { Vec::new() } else { caveats(target, &func) };
                for message in caveats {
                    warnings.push(PackWarning { file: dsc_path.to_path_buf(), line: n, message });
                }
                target.lines.insert(func.old.clone(), n);
                target.functions.push(func);
            }
            Item::Reference { symbol, addend, form, var } => {
                let target = current.as_mut().expect("the parser puts a target first");
                target.refs.push(PendingRef { line: n, symbol, addend, form, var });
            }
        }
    }

    let Some(patch) = patch else {
        return Err(whole(dsc::ParseErrorKind::NoPatchSo.into()));
    };
    if let Some(t) = current.take() {
        done.push(finish(dsc_path, t, &patch, &mut vars, &mut warnings, opts.generated)?);
    }
    if done.is_empty() {
        return Err(whole(PackErrorKind::NoTargets));
    }
    for f in &opts.debug.files {
        let used = done.iter().any(|(t, _)| matches!(&t.object.elf.source, SymbolSource::DebugFile(p) if p == f));
        if !used {
            let ids: Vec<String> = done.iter().map(|(t, _)| pulp_meta::format::hex(t.object.build_id())).collect();
            let reason = match pulp_elf::ObjectInfo::read(f) {
                Ok(i) => format!(
                    "its build-id {} is no target's (targets: {})",
                    i.build_id.as_deref().map(pulp_meta::format::hex).unwrap_or_else(|| "(none)".into()),
                    ids.join(", ")
                ),
                Err(e) => e.to_string(),
            };
            return Err(whole(PackErrorKind::DebugFile { path: f.clone(), reason }));
        }
    }
    if !opts.skip_import_check {
        let targets: Vec<&Inspected> = done.iter().map(|(t, _)| &t.object.elf).collect();
        let references: Vec<&str> = vars.keys().map(String::as_str).collect();
        imports::check(&patch.elf, &targets, &references).map_err(|e| whole(e.into()))?;
    }
    let patch_sha256 = std::fs::read(&patch.path)
        .map(|bytes| pulp_meta::sha256::sha256(&bytes))
        .map_err(|source| whole(PackErrorKind::Open { what: "patch .so", path: patch.path.clone().into(), source }))?;
    let patch_build_id = patch.build_id().to_vec();
    let meta = PatchMeta {
        flags,
        level,
        patch_so: patch.path,
        patch_build_id,
        patch_sha256,
        labels,
        states,
        targets: done.into_iter().map(|(_, t)| t).collect(),
    };
    meta.validate().map_err(|e| whole(e.into()))?;
    Ok((meta, warnings))
}

/// Functions the compiler derived from `name` (`name.isra.0`, `name.constprop.1`,
/// `name.part.0`, `name.cold`, ...): they hold copies of its code.
fn clones_of(object: &Object, name: &str) -> Vec<String> {
    let mut out: Vec<String> = object
        .functions()
        .iter()
        .map(|f| f.name.as_str())
        .filter(|n| is_clone_of(n, name))
        .map(str::to_owned)
        .collect();
    out.dedup();
    out
}

/// What the operator should know about replacing `func` in `target`.
fn caveats(target: &PendingTarget, func: &Function) -> Vec<String> {
    let mut out = Vec::new();
    let me = target.object.functions().iter().find(|f| f.offset == func.offset && f.name == func.old);
    if me.is_some_and(|f| !f.global) {
        out.push(format!(
            "`{}` is a local (static) function: calls the compiler inlined into its callers are not redirected; \
             if it may have been inlined, replace its callers too",
            func.old
        ));
    }
    if has_compiler_abi(&func.old) {
        out.push(format!(
            "`{}` is a compiler clone whose calling convention is the compiler's own (arguments may be removed \
             or replaced by constants): the new function must take the same registers",
            func.old
        ));
    }
    let clones = clones_of(&target.object, &func.old);
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

/// Finish a target: resolve its references, warn about imports of what it replaces.
fn finish(
    dsc_path: &Path,
    t: PendingTarget,
    patch: &Object,
    vars: &mut HashMap<String, usize>,
    warnings: &mut Vec<PackWarning>,
    generated: bool,
) -> Result<(PendingTarget, Target), PackError> {
    let at =
        |line: usize| move |kind| PackError { file: dsc_path.to_path_buf(), line: Some(line), kind: Box::new(kind) };
    if t.functions.is_empty() {
        return Err(at(t.line)(PackErrorKind::NoFunctions { target: t.object.path }));
    }
    let mut references = Vec::new();
    for r in &t.refs {
        if let Some(&first_line) = vars.get(&r.var) {
            return Err(at(r.line)(PackErrorKind::DuplicateVar { var: r.var.clone(), first_line }));
        }
        let (reference, warning) = reference(&t, patch, r).map_err(at(r.line))?;
        if let Some(message) = warning.filter(|_| !generated) {
            warnings.push(PackWarning { file: dsc_path.to_path_buf(), line: r.line, message });
        }
        vars.insert(r.var.clone(), r.line);
        references.push(reference);
    }
    for f in &t.functions {
        let imported = patch.elf.info.imports.iter().any(|i| i.name == f.old);
        if imported && t.object.elf.info.exports(&f.old) {
            warnings.push(PackWarning {
                file: dsc_path.to_path_buf(),
                line: t.lines.get(&f.old).copied().unwrap_or(t.line),
                message: format!(
                    "the patch .so imports `{old}`, which this patch replaces: once applied, its calls to `{old}` \
                     reach `{new}` again (endless recursion if `{new}` calls it); to call the original, use a \
                     reference `#{old}:VAR` (it receives the original code)",
                    old = f.old,
                    new = f.new
                ),
            });
        }
    }
    let target = Target {
        path: t.object.path.clone(),
        build_id: t.object.build_id().to_vec(),
        functions: t.functions.clone(),
        references,
    };
    Ok((t, target))
}

/// Why `name` is not among `target`'s symbols, as a hint for the message.
fn not_found_hint(object: &Object, name: &str) -> String {
    let clones = clones_of(object, name);
    if !clones.is_empty() {
        return format!(
            "; the compiler made clones of it: {} (name one directly, knowing its calling convention is the \
             compiler's own)",
            clones.join(", ")
        );
    }
    object.stripped_hint()
}

/// Resolve one reference of `target`; a warning to give, if any.
fn reference(
    target: &PendingTarget,
    patch: &Object,
    r: &PendingRef,
) -> Result<(Reference, Option<String>), PackErrorKind> {
    let tpath = &target.object.path;
    let name = &r.symbol.name;
    let all: Vec<&Symbol> =
        target.object.elf.named(name).filter(|s| r.symbol.at.is_none_or(|o| s.value == o)).collect();
    if all.is_empty() {
        if let Some(callers) = target.object.elf.only_inlined(name) {
            return Err(PackErrorKind::OnlyInlined { func: name.clone(), target: tpath.clone(), callers });
        }
        let hint = match r.symbol.at {
            Some(at) if target.object.elf.named(name).next().is_some() => {
                let offsets: Vec<u64> = target.object.elf.named(name).map(|s| s.value).collect();
                format!(" at {at:#x} (it is at {})", hex_list(&offsets))
            }
            _ => not_found_hint(&target.object, name),
        };
        return Err(PackErrorKind::UnknownSymbol { symbol: r.symbol.to_string(), target: tpath.clone(), hint });
    }
    let wants_tls = r.form == RefForm::Tls;
    let fitting: Vec<&Symbol> = all.iter().copied().filter(|s| (s.kind == SymbolKind::Tls) == wants_tls).collect();
    let sym = match fitting.as_slice() {
        [] if wants_tls => {
            return Err(PackErrorKind::NotTls { symbol: name.clone(), target: tpath.clone(), kind: all[0].kind.name() })
        }
        [] => return Err(PackErrorKind::TlsNeedsPercent { symbol: name.clone(), target: tpath.clone() }),
        [s] => *s,
        many => {
            let mut offsets: Vec<u64> = many.iter().map(|s| s.value).collect();
            offsets.dedup();
            if offsets.len() > 1 {
                return Err(PackErrorKind::Ambiguous {
                    what: "symbol",
                    func: name.clone(),
                    target: tpath.clone(),
                    offsets,
                });
            }
            many[0]
        }
    };
    not_cold_part(name, tpath)?;
    let replaced = sym.kind == SymbolKind::Function && target.functions.iter().any(|f| f.offset == sym.value);
    let kind = match r.form {
        RefForm::Tls => RefKind::TlsIndex,
        RefForm::GotRelative => RefKind::GotRelative,
        RefForm::Plain if replaced && r.addend == 0 => RefKind::Original,
        RefForm::Plain => RefKind::Address,
    };
    let offset = sym
        .value
        .checked_add_signed(r.addend)
        .ok_or_else(|| PackErrorKind::Overflow { symbol: name.clone(), addend: r.addend })?;
    let var = check_variable(patch, &r.var, kind)?;
    let warning = (sym.kind == SymbolKind::Function && has_compiler_abi(name)).then(|| {
        format!(
            "`{name}` is a compiler clone: its calling convention is the compiler's own (arguments may be removed \
             or replaced by constants); call it only as the compiler's code does"
        )
    });
    let symbol = match r.addend {
        0 => r.symbol.to_string(),
        a if a < 0 => format!("{}{a}", r.symbol),
        a => format!("{}+{a}", r.symbol),
    };
    Ok((Reference { symbol, offset, kind, var }, warning))
}

/// `var` must be a writable data object of the patch `.so`, big enough. Returns the name
/// the runtime finds it by: its own when exported (`dlsym`), else `NAME@OFFSET` with its
/// value in the object's symbol table (a `static` or hidden variable, as libpulp allows).
fn check_variable(patch: &Object, var: &str, kind: RefKind) -> Result<String, PackErrorKind> {
    let patch_so = || patch.path.clone();
    let found: Vec<&Symbol> = patch.elf.named(var).collect();
    let Some(sym) = found.iter().find(|s| s.dynamic).or(found.first()) else {
        return Err(PackErrorKind::VarNotFound { var: var.into(), patch_so: patch_so() });
    };
    if sym.kind != SymbolKind::Object {
        return Err(PackErrorKind::VarNotData { var: var.into(), patch_so: patch_so(), kind: sym.kind.name() });
    }
    let mut locals: Vec<u64> = found.iter().filter(|s| s.kind == SymbolKind::Object).map(|s| s.value).collect();
    locals.dedup();
    if !sym.dynamic && locals.len() > 1 {
        return Err(PackErrorKind::VarAmbiguous { var: var.into(), patch_so: patch_so(), offsets: locals });
    }
    if sym.size < kind.size() as u64 {
        return Err(PackErrorKind::VarTooSmall {
            var: var.into(),
            patch_so: patch_so(),
            size: sym.size,
            needed: kind.size(),
            what: kind.name(),
        });
    }
    if !sym.writable {
        return Err(PackErrorKind::VarReadOnly { var: var.into(), patch_so: patch_so() });
    }
    Ok(if sym.dynamic { var.into() } else { format!("{var}@{:x}", sym.value) })
}

/// Cold parts (`f.cold`) are not entry points: neither replaced nor referred to.
fn not_cold_part(name: &str, tpath: &str) -> Result<(), PackErrorKind> {
    match cold_parent(name) {
        Some(parent) => Err(PackErrorKind::ColdPart { func: name.into(), parent: parent.into(), target: tpath.into() }),
        None => Ok(()),
    }
}

/// Resolve one `old:new` line of `target`.
fn replacement(target: &PendingTarget, patch: &Object, old: &SymbolName, new: &str) -> Result<Function, PackErrorKind> {
    let tpath = &target.object.path;
    let name = old.name.as_str();
    if let Some(&first_line) = target.lines.get(name) {
        return Err(PackErrorKind::DuplicateFunction { func: old.to_string(), target: tpath.clone(), first_line });
    }
    not_cold_part(name, tpath)?;
    let candidates: Vec<&FunctionInfo> =
        target.object.functions().iter().filter(|f| f.name == name && old.at.is_none_or(|o| f.offset == o)).collect();
    let f = match candidates.as_slice() {
        [] => {
            if let Some(callers) = target.object.elf.only_inlined(name) {
                return Err(PackErrorKind::OnlyInlined { func: name.into(), target: tpath.clone(), callers });
            }
            let clones = clones_of(&target.object, name);
            if clones.is_empty() || old.at.is_some() {
                let hint = target.object.stripped_hint();
                return Err(PackErrorKind::OldNotFound { func: old.to_string(), target: tpath.clone(), hint });
            }
            return Err(PackErrorKind::OnlyClones { func: name.into(), target: tpath.clone(), clones });
        }
        [f] => *f,
        many => {
            let offsets = many.iter().map(|f| f.offset).collect();
            return Err(PackErrorKind::Ambiguous {
                what: "function",
                func: name.into(),
                target: tpath.clone(),
                offsets,
            });
        }
    };
    let prologue = match f.prologue {
        None => return Err(PackErrorKind::NotPatchable { func: name.into(), target: tpath.clone() }),
        Some(k) if !k.is_supported() => {
            return Err(PackErrorKind::UnsupportedPrologue { func: name.into(), target: tpath.clone(), kind: k })
        }
        Some(k) => k,
    };
    let in_patch: Vec<&FunctionInfo> = patch.functions().iter().filter(|f| f.name == new).collect();
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
    use pulp_elf as inspect;
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
}

/// References, variables, imports, cold parts, inlined functions and stripped targets.
#[cfg(test)]
mod reference_tests {
    use super::*;
    use pulp_cc_build::Build;
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
        let lib =
            Build::new().out_dir(d).file(d.join("lib.c")).file(d.join("lib2.c")).flag("-g").shared("ref").unwrap();
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
        assert!(
            warnings.iter().any(|w| w.message.contains("calling convention is the compiler's own")),
            "{warnings:?}"
        );
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
}
