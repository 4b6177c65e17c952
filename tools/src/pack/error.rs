//! Why a `.dsc` cannot be packed: [`PackError`] (where) and [`PackErrorKind`] (why).

use std::fmt;
use std::io;
use std::path::PathBuf;

use super::{dsc, imports};
use pulp_elf::InspectError;
use pulp_meta::{MetaError, Prologue};

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
    #[error("function `{func}` in {target} has no pad and its entry cannot be redirected: {reason}")]
    Unpadded { func: String, target: String, reason: String },
    #[error("function `{func}` in {target} has a {kind} prologue, which is not supported yet")]
    UnsupportedPrologue { func: String, target: String, kind: Prologue },
    #[error("function `{func}` already replaced in {target} at line {first_line}")]
    DuplicateFunction { func: String, target: String, first_line: usize },
    #[error(
        "function `{func}` in {target} is at {offset:#x}, the entry of `{other}`, which line {first_line} already \
         replaces: they are one function under two names (an alias, like glibc's hidden `__GI_` names), and calls \
         through either name reach that replacement; remove this line"
    )]
    SameEntry { func: String, other: String, offset: u64, target: String, first_line: usize },
    #[error(
        "`{func}` has {} versions in {target}: {}; name one (`{func}@@VERSION` for the default, \
         `{func}@VERSION` for another)",
        versions.len(),
        versions.join(", ")
    )]
    SeveralVersions { func: String, target: String, versions: Vec<String> },
    #[error("`{func}` is not in {target}: {}", known_versions(known))]
    VersionNotFound { func: String, target: String, known: Vec<String> },
    #[error(
        "`{func}` in {target}: that version is not the default one ({}); write `{}` for it",
        default.as_deref().map_or("there is none".to_string(), |d| format!("the default is `{d}`")),
        func.replacen("@@", "@", 1)
    )]
    NotDefaultVersion { func: String, target: String, default: Option<String> },
    #[error(
        "function `{func}` in {target} is an IFUNC: its address is a resolver the dynamic linker ran once at load \
         to choose the code callers reach; replace the implementation instead ({})",
        chosen(implementations)
    )]
    Ifunc { func: String, target: String, implementations: Vec<String> },
    #[error(
        "function `{func}` in {target} is the resolver of the IFUNC `{ifunc}`: it ran once, at load; replacing it \
         changes nothing in a running process; replace the implementation it chose instead ({})",
        chosen(implementations)
    )]
    IfuncResolver { func: String, ifunc: String, target: String, implementations: Vec<String> },
    #[error(
        "reference to `{symbol}`: it is an IFUNC of {target}, whose address is its resolver, not code to call; \
         refer to the implementation it chooses"
    )]
    IfuncReference { symbol: String, target: String },
    #[error(
        "target {target} is the dynamic linker ({why}): its code runs before the runtime is loaded and while \
         objects are loaded, under its own locks, and it is not patched"
    )]
    DynamicLinker { target: String, why: String },
    #[error(
        "target {target} is the C library ({why}): every thread always has frames in it and the runtime's gates \
         call it, so a transition over it could neither finish nor be gated; add `%immediate` (every thread \
         switches at once)"
    )]
    CLibraryTransition { target: String, why: String },
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

pub(super) fn hex_list(offsets: &[u64]) -> String {
    offsets.iter().map(|o| format!("{o:#x}")).collect::<Vec<_>>().join(" and ")
}

fn known_versions(known: &[String]) -> String {
    match known {
        [] => "that symbol has no versions there".into(),
        _ => format!("its versions are {}", known.join(", ")),
    }
}

/// The implementations an IFUNC's resolver can choose, each already quoted.
fn chosen(names: &[String]) -> String {
    match names {
        [] => "the code it chooses is not named by a symbol: look at the resolver's code".into(),
        [one] => format!("the one its resolver can choose: {one}"),
        _ => format!("those its resolver can choose: {}", names.join(", ")),
    }
}

pub(super) fn list(names: &[String]) -> String {
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
