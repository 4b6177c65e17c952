//! `pulp build-patch`: a live patch from a source diff.
//!
//! ```text
//! pulp build-patch --src DIR --diff FIX.patch --build 'CMD' --target PATH -o OUTDIR
//! ```
//!
//! 1. [`workspace`]: copy `DIR`, run `CMD` with `CC`/`CXX` set to `pulp-cc` in build-patch
//!    mode; check that the object it builds under `PATH`'s name loads the same bytes as
//!    `PATH` (`pulp_elf::image`), so the rebuild's symbols stand for the running object's;
//!    copy again, apply the fix (`patch -p1`), build again.
//! 2. [`tu`]: compare each unit's large-code-model assembly before and after, function by
//!    function (inlined changes show in their callers, clones and cold parts with their
//!    functions); refuse changed data and changed struct layouts (DWARF) (`units`: the
//!    target's link and its units on both sides).
//! 3. [`generate`]: the changed and new functions, with every reference to the running
//!    object's code and data turned into a slot the runtime fills; `__pulp_got`
//!    (`operand`: the text of one operand rewritten).
//! 4. Assemble and link `OUTDIR/NAME.so`, write `NAME.dsc` and pack `NAME.meta`
//!    (`crate::pack`), refusing a changed function without patchable prologue or one that
//!    never returns.
//!
//! The design and its reasons are in `docs/build-patch.md`.

pub mod asm;
pub mod generate;
pub mod incremental;
mod operand;
pub mod partial;
pub mod rtld;
pub mod target;
pub mod tu;
mod units;
pub mod workspace;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pulp_elf::{DebugSearch, ObjectInfo};
use pulp_meta::{PatchMeta, RefKind};

use generate::{Input, Replaced, Slot, UnitOutput};
use target::TargetIndex;
use units::{compare_units, matching_link, refuse_changed_other_objects, refuse_data_and_layout_changes, Unit};
use workspace::{BuildEnv, LinkRecord};

/// What `pulp build-patch` is asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    pub src: PathBuf,
    pub diff: PathBuf,
    pub build: String,
    pub target: PathBuf,
    pub name: Option<String>,
    pub labels: Vec<String>,
    pub out_dir: PathBuf,
    /// Where to build (kept afterwards); a temporary folder otherwise.
    pub work_dir: Option<PathBuf>,
    pub debug: DebugSearch,
    /// Patch changed functions that never return (a thread inside keeps the old code).
    pub allow_endless: bool,
    /// The compiler wrapper (default: `pulp-cc` next to this program, else on `PATH`).
    pub wrapper: Option<PathBuf>,
    /// `src` is a kept tree already built through `pulp-cc` ([`incremental`]): build
    /// only the fixed copy, and only what the diff touches.
    pub incremental: bool,
}

/// What was found and written.
#[derive(Debug, Default)]
pub struct Report {
    pub so: PathBuf,
    pub dsc: PathBuf,
    pub meta_path: PathBuf,
    pub meta: Option<PatchMeta>,
    /// (function, unit) per replaced function.
    pub changed: Vec<(String, String)>,
    pub new_functions: Vec<(String, String)>,
    pub copied: Vec<(String, String)>,
    pub unused_new: Vec<(String, String)>,
    pub new_data: Vec<(String, String)>,
    pub references: Vec<Slot>,
    pub warnings: Vec<String>,
    pub build_before: Duration,
    pub build_after: Duration,
    /// `--incremental`: the units whose original side compile was run again (the kept
    /// build stands for the original build).
    pub rerun_units: Option<usize>,
    /// Everything but the two builds.
    pub generation: Duration,
    pub so_size: u64,
    pub target_size: u64,
    pub rebuilt: PathBuf,
    pub work_dir: PathBuf,
}

impl Report {
    /// What `pulp build-patch` prints.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let list = |v: &[(String, String)]| v.iter().map(|(f, u)| format!("{f} ({u})")).collect::<Vec<_>>().join(", ");
        let _ = writeln!(
            s,
            "changed functions: {}",
            if self.changed.is_empty() { "none".into() } else { list(&self.changed) }
        );
        if !self.new_functions.is_empty() {
            let _ = writeln!(s, "new functions: {}", list(&self.new_functions));
        }
        if !self.new_data.is_empty() {
            let _ = writeln!(s, "new data: {}", list(&self.new_data));
        }
        if !self.copied.is_empty() {
            let _ = writeln!(s, "copied (the running object has them only inlined): {}", list(&self.copied));
        }
        if !self.unused_new.is_empty() {
            let _ = writeln!(s, "left out (new, and nothing patched calls them): {}", list(&self.unused_new));
        }
        let mut names: Vec<String> = self.references.iter().map(|r| r.symbol.clone()).collect();
        names.sort();
        names.dedup();
        if names.is_empty() {
            let _ = writeln!(s, "references to the running object: none");
        } else {
            let _ = writeln!(s, "references to the running object: {} ({})", self.references.len(), names.join(", "));
        }
        for w in &self.warnings {
            let _ = writeln!(s, "warning: {w}");
        }
        let _ = writeln!(
            s,
            "wrote {} ({} bytes; {}: {} bytes), {}, {}",
            self.so.display(),
            self.so_size,
            self.rebuilt.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            self.target_size,
            self.dsc.display(),
            self.meta_path.display()
        );
        let before = match self.rerun_units {
            Some(n) => {
                format!("kept build before ({n} side compiles run again: {:.2} s)", self.build_before.as_secs_f64())
            }
            None => format!("{:.2} s before", self.build_before.as_secs_f64()),
        };
        let _ = writeln!(
            s,
            "builds: {before}, {:.2} s after; everything else: {:.2} s",
            self.build_after.as_secs_f64(),
            self.generation.as_secs_f64()
        );
        s
    }
}

/// Why no patch was made. Every message says what to do or what was found.
#[derive(Debug, thiserror::Error)]
pub enum BuildPatchError {
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Build(String),
    #[error(
        "the rebuilt {rebuilt} does not match {target}: {difference}; build PATH with the same sources, \
         compiler and flags, through pulp-cc (build-ids: rebuilt {rebuilt_id}, target {target_id})"
    )]
    Mismatch { rebuilt: String, target: String, difference: String, rebuilt_id: String, target_id: String },
    #[error("the build made no object named like {target} (it linked: {built})")]
    NoTarget { target: String, built: String },
    #[error("cannot live-patch this change:\n{}", .0.iter().map(|r| format!("  - {r}")).collect::<Vec<_>>().join("\n"))]
    Refused(Vec<String>),
    #[error("the fix changes no function of {target}{}", .elsewhere.iter().map(|w| format!("\n  - {w}")).collect::<String>())]
    NothingChanged { target: String, elsewhere: Vec<String> },
    #[error("{0}")]
    Output(String),
}

/// The wrapper: `--cc-wrapper`, else `pulp-cc` next to this program, else on `PATH`.
fn find_wrapper(opt: &Option<PathBuf>) -> Result<PathBuf, BuildPatchError> {
    if let Some(p) = opt {
        return Ok(p.clone());
    }
    if let Some(p) = std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join("pulp-cc"))) {
        if p.is_file() {
            return Ok(p);
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join("pulp-cc")).find(|p| p.is_file()).ok_or_else(|| {
        BuildPatchError::Input("cannot find pulp-cc (next to pulp or on PATH); give --cc-wrapper".into())
    })
}

fn canonical(p: &Path, what: &str) -> Result<PathBuf, BuildPatchError> {
    p.canonicalize().map_err(|e| BuildPatchError::Input(format!("{what} {}: {e}", p.display())))
}

/// Build the patch.
pub fn run(opts: &Options) -> Result<Report, BuildPatchError> {
    let src = canonical(&opts.src, "--src")?;
    if !src.is_dir() {
        return Err(BuildPatchError::Input(format!("--src {}: not a folder", src.display())));
    }
    let diff = canonical(&opts.diff, "--diff")?;
    let target = canonical(&opts.target, "--target")?;
    let target_info = ObjectInfo::read(&target).map_err(|e| BuildPatchError::Input(format!("--target: {e}")))?;
    if let Some(why) = rtld::dynamic_linker(&target, &target_info) {
        return Err(BuildPatchError::Refused(vec![why]));
    }
    if target_info.build_id.is_none() {
        return Err(BuildPatchError::Input(format!(
            "--target {} has no GNU build-id (link it with -Wl,--build-id=sha1)",
            target.display()
        )));
    }
    let name = match &opts.name {
        Some(n) => n.clone(),
        None => diff.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "fix".into()),
    };
    if name.is_empty() || name.contains('/') {
        return Err(BuildPatchError::Input(format!("--name `{name}`: a file name without `/`")));
    }
    std::fs::create_dir_all(&opts.out_dir)
        .map_err(|e| BuildPatchError::Input(format!("-o {}: {e}", opts.out_dir.display())))?;
    let out_dir = canonical(&opts.out_dir, "-o")?;
    let wrapper = find_wrapper(&opts.wrapper)?;

    let (work, _temp) = match &opts.work_dir {
        Some(w) => {
            std::fs::create_dir_all(w)
                .map_err(|e| BuildPatchError::Input(format!("--work-dir {}: {e}", w.display())))?;
            (canonical(w, "--work-dir")?, None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("pulp-build-patch-")
                .tempdir()
                .map_err(|e| BuildPatchError::Input(format!("cannot create a temporary folder: {e}")))?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let cxx = work.join("bin/pulp-c++");
    std::fs::create_dir_all(work.join("bin")).map_err(|e| BuildPatchError::Input(e.to_string()))?;
    let _ = std::fs::remove_file(&cxx);
    std::os::unix::fs::symlink(&wrapper, &cxx)
        .map_err(|e| BuildPatchError::Input(format!("{}: {e}", cxx.display())))?;
    let env = BuildEnv { wrapper: &wrapper, wrapper_cxx: &cxx, map: &src };

    let after_root = work.join("after");
    let (before, after, link) = if opts.incremental {
        // The kept build is the original; its link must be the running object.
        let mut before = incremental::kept_build(&src)?;
        let link = matching_link(&before, &target)?;
        let after = incremental::build_fixed(&src, &after_root, &diff, &opts.build, &work.join("records-after"), &env)?;
        incremental::rerun_before_side_compiles(&mut before, &after, &incremental::before_asm_dir(&work))?;
        (before, after, link)
    } else {
        // The original, rebuilt, must be the running object.
        let before_root = work.join("before");
        let _ = std::fs::remove_dir_all(&before_root);
        workspace::copy_sources(&src, &before_root).map_err(BuildPatchError::Build)?;
        let before = workspace::build(&before_root, &opts.build, &work.join("records-before"), &env, "original")
            .map_err(BuildPatchError::Build)?;
        let link = matching_link(&before, &target)?;

        let _ = std::fs::remove_dir_all(&after_root);
        workspace::copy_sources(&src, &after_root).map_err(BuildPatchError::Build)?;
        workspace::apply_diff(&after_root, &diff).map_err(BuildPatchError::Build)?;
        let after = workspace::build(&after_root, &opts.build, &work.join("records-after"), &env, "fixed")
            .map_err(BuildPatchError::Build)?;
        (before, after, link)
    };

    let start = Instant::now();
    let mut report = Report {
        build_before: before.took,
        build_after: after.took,
        rerun_units: opts.incremental.then(|| after.tus.iter().filter(|t| before.tu(&t.key).is_some()).count()),
        rebuilt: link.output.clone(),
        work_dir: work.clone(),
        ..Default::default()
    };
    // The units behind partial links (glibc's libc_pic.os) are the target's too.
    let link = partial::through_partial_links(&before, &link);
    let lto: Vec<String> = before
        .units_of(&link)
        .iter()
        .filter(|t| t.lto)
        .map(|t| t.source.strip_prefix(&before.root).unwrap_or(&t.source).display().to_string())
        .collect();
    if !lto.is_empty() {
        return Err(BuildPatchError::Refused(vec![format!(
            "{} is built with link-time optimisation (-flto: {}): code inlined across files cannot be seen, \
             so the changed functions cannot be found; build it without -flto",
            target.display(),
            lto.join(", ")
        )]));
    }
    refuse_changed_other_objects(&before, &after, &link, &diff)?;
    let units = compare_units(&before, &after, &link)?;
    if units.iter().all(|u| u.diff.is_empty()) {
        let files = rtld::changed_files(&std::fs::read_to_string(&diff).unwrap_or_default());
        let elsewhere = rtld::where_changes_went(&after, &files);
        return Err(BuildPatchError::NothingChanged { target: target.display().to_string(), elsewhere });
    }
    refuse_data_and_layout_changes(&units, &work)?;

    // Generate.
    let rebuilt_info = ObjectInfo::read(&link.output).map_err(|e| BuildPatchError::Build(e.to_string()))?;
    let index = TargetIndex::new(rebuilt_info.symbols.clone());
    let mut patch_globals = BTreeSet::new();
    for u in &units {
        for f in u.diff.changed.iter().chain(&u.diff.new_functions).chain(&u.diff.new_data) {
            if u.after.unit.attrs.get(f).is_some_and(|a| a.global || a.weak) {
                patch_globals.insert(f.clone());
            }
        }
    }
    let mut outputs: Vec<(&Unit, UnitOutput)> = Vec::new();
    let mut problems = Vec::new();
    for (i, u) in units.iter().enumerate().filter(|(_, u)| !u.diff.is_empty()) {
        let locals: BTreeSet<String> = u
            .before
            .functions
            .iter()
            .chain(&u.before.data)
            .filter(|n| !u.before.unit.attrs.get(*n).is_some_and(|a| a.global || a.weak))
            .cloned()
            .collect();
        let group = u.after.unit.file.as_deref().and_then(|f| index.group_of(f, &locals));
        if group.is_none() && !u.before.functions.iter().any(|f| index.global(f).is_some()) {
            // Not a file of the target (a test program of the project, say).
            report.warnings.push(format!("{} changed, but it is not part of {}: left out", u.key, target.display()));
            continue;
        }
        let input = Input {
            index: i,
            before: &u.before,
            after: &u.after,
            diff: &u.diff,
            target: &index,
            group,
            patch_globals: &patch_globals,
        };
        match generate::generate(&input) {
            Ok(o) => outputs.push((u, o)),
            Err(e) => problems.push(e),
        }
    }
    if !problems.is_empty() {
        return Err(BuildPatchError::Refused(problems));
    }

    // Check what is replaced against the running object.
    let running = pulp_elf::inspect(&target, &opts.debug).map_err(|e| BuildPatchError::Input(e.to_string()))?;
    let functions = if running.stripped() {
        pulp_elf::functions(&link.output).unwrap_or_default()
    } else {
        running.functions.clone()
    };
    let mut replaced: Vec<(Replaced, String)> = Vec::new();
    for (u, o) in &outputs {
        for r in &o.replaced {
            if replaced.iter().any(|(x, _)| x.target.value == r.target.value) {
                continue; // the same function from two units (an inline function of a header)
            }
            let f = functions.iter().find(|f| f.offset == r.target.value && f.name == r.name);
            match f.and_then(|f| f.prologue) {
                Some(k) if k.is_supported() => {}
                Some(k) => problems.push(format!(
                    "function `{}` ({}) has a {k} prologue in {}, which this release cannot redirect",
                    r.name,
                    u.key,
                    target.display()
                )),
                None => problems.push(format!(
                    "function `{}` ({}) changed, but it has no patchable prologue in {} (build it with pulp-cc or \
                     -fpatchable-function-entry=16,14)",
                    r.name,
                    u.key,
                    target.display()
                )),
            }
            replaced.push((r.clone(), u.key.clone()));
        }
        for f in &o.endless {
            let why = format!(
                "function `{f}` ({}) never returns (no return, no tail call): a thread running it keeps the old \
                 code forever and holds the transition, so pulp-trigger would need --timeout/--force, or the loop \
                 must call pulp_quiescent(); give --allow-endless to patch it anyway",
                u.key
            );
            if opts.allow_endless {
                report.warnings.push(why);
            } else {
                problems.push(why);
            }
        }
    }
    if !problems.is_empty() {
        return Err(BuildPatchError::Refused(problems));
    }
    if replaced.is_empty() {
        return Err(BuildPatchError::NothingChanged { target: target.display().to_string(), elsewhere: Vec::new() });
    }

    // Assemble and link.
    let patch_dir = work.join("patch");
    let _ = std::fs::remove_dir_all(&patch_dir);
    std::fs::create_dir_all(&patch_dir).map_err(|e| BuildPatchError::Output(e.to_string()))?;
    let mut sources = Vec::new();
    for (u, o) in &outputs {
        let p = patch_dir.join(format!("u{}.s", sources.len()));
        std::fs::write(&p, &o.asm).map_err(|e| BuildPatchError::Output(format!("{}: {e}", p.display())))?;
        sources.push(p);
        for f in &o.new_functions {
            report.new_functions.push((f.clone(), u.key.clone()));
        }
        for f in &o.copied {
            report.copied.push((f.clone(), u.key.clone()));
        }
        for f in &o.unused_new {
            report.unused_new.push((f.clone(), u.key.clone()));
        }
        for f in &o.new_data {
            report.new_data.push((f.clone(), u.key.clone()));
        }
        report.references.extend(o.slots.iter().cloned());
    }
    let got = patch_dir.join("pulp_got.s");
    std::fs::write(&got, GOT_FUNCTION_ASM).map_err(|e| BuildPatchError::Output(e.to_string()))?;
    sources.push(got);
    let so = out_dir.join(format!("{name}.so"));
    let cxx_unit = outputs.iter().any(|(_, o)| o.cxx);
    link_patch(&sources, &so, &link, cxx_unit)?;

    // The description, packed.
    let dsc = out_dir.join(format!("{name}.dsc"));
    let text = dsc_text(&name, &diff, &opts.labels, &target, &replaced, &report.references);
    std::fs::write(&dsc, &text).map_err(|e| BuildPatchError::Output(format!("{}: {e}", dsc.display())))?;
    let mut pack_opts = crate::pack::PackOptions { debug: opts.debug.clone(), generated: true, ..Default::default() };
    if running.stripped() {
        // Its code is the rebuild's (checked above): the rebuild's symbols are its.
        pack_opts.symbols_from.push((target.clone(), link.output.clone()));
    }
    let (meta, warnings) =
        crate::pack::pack_text(&dsc, &text, &pack_opts).map_err(|e| BuildPatchError::Output(e.to_string()))?;
    report.warnings.extend(warnings.into_iter().map(|w| w.message));
    let meta_path = out_dir.join(format!("{name}.meta"));
    std::fs::write(&meta_path, meta.encode())
        .map_err(|e| BuildPatchError::Output(format!("{}: {e}", meta_path.display())))?;

    report.changed = replaced.iter().map(|(r, u)| (r.name.clone(), u.clone())).collect();
    report.so_size = std::fs::metadata(&so).map(|m| m.len()).unwrap_or(0);
    report.target_size = std::fs::metadata(&target).map(|m| m.len()).unwrap_or(0);
    report.so = so;
    report.dsc = dsc;
    report.meta_path = meta_path;
    report.meta = Some(meta);
    report.generation = start.elapsed();
    Ok(report)
}

/// `void *__pulp_got(void)`: the patch object's GOT, for got-relative references.
const GOT_FUNCTION_ASM: &str = "\
# pulp build-patch: void *__pulp_got(void) returns this object's global offset table.
\t.text
\t.globl\t__pulp_got
\t.type\t__pulp_got, @function
__pulp_got:
\t.cfi_startproc
\tleaq\t_GLOBAL_OFFSET_TABLE_(%rip), %rax
\tret
\t.cfi_endproc
\t.size\t__pulp_got, .-__pulp_got
\t.section\t.note.GNU-stack,\"\",@progbits
";

/// The words of the compiler driver that assembles and links the patch: `$PULP_CC_REAL`
/// (`$PULP_CXX_REAL` for C++), else `cc` (`c++`), as `pulp-cc` reads them (`ccache gcc` is
/// two words).
fn driver_words(cxx: bool) -> Vec<String> {
    let (var, default) = if cxx { ("PULP_CXX_REAL", "c++") } else { ("PULP_CC_REAL", "cc") };
    let words: Vec<String> =
        std::env::var(var).map(|v| v.split_whitespace().map(str::to_owned).collect()).unwrap_or_default();
    if words.is_empty() {
        vec![default.to_owned()]
    } else {
        words
    }
}

/// A command running the compiler driver (`driver_words`).
fn driver(cxx: bool) -> Command {
    let words = driver_words(cxx);
    let mut cmd = Command::new(&words[0]);
    cmd.args(&words[1..]);
    cmd
}

/// Assemble the patch's units and link them into `so`.
fn link_patch(sources: &[PathBuf], so: &Path, link: &LinkRecord, cxx: bool) -> Result<(), BuildPatchError> {
    let name = driver_words(cxx).join(" ");
    let tmp = so.with_extension("so.tmp");
    let out = driver(cxx)
        .args(["-shared", "-fPIC", "-Wl,--build-id=sha1", "-Wl,-z,now", "-Wl,-z,noexecstack", "-o"])
        .arg(&tmp)
        .args(sources)
        .args(link.libs.iter().filter(|l| l.starts_with("-l") || l.starts_with("-L") || *l == "-pthread"))
        .output()
        .map_err(|e| BuildPatchError::Output(format!("cannot run {name}: {e}")))?;
    if !out.status.success() {
        return Err(BuildPatchError::Output(format!(
            "assembling and linking the patch failed ({name}):\n{}",
            String::from_utf8_lossy(&out.stderr).trim_end()
        )));
    }
    std::fs::rename(&tmp, so).map_err(|e| BuildPatchError::Output(format!("{}: {e}", so.display())))
}

/// The `.dsc` of the patch.
fn dsc_text(
    name: &str,
    diff: &Path,
    labels: &[String],
    target: &Path,
    replaced: &[(Replaced, String)],
    slots: &[Slot],
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Generated by pulp build-patch from {}", diff.display());
    let _ = writeln!(s, "{name}.so");
    for l in labels {
        let _ = writeln!(s, "!{l}");
    }
    let _ = writeln!(s, "@{}", target.display());
    for (r, unit) in replaced {
        let _ = writeln!(s, "{}@{:x}:{}  # {unit}", r.name, r.target.value, r.alias);
    }
    for r in slots {
        let at = format!("@{:x}", r.value);
        let add = match r.addend as i64 {
            0 => String::new(),
            a if a < 0 => format!("{a}"),
            a => format!("+{a}"),
        };
        let line = match r.kind {
            RefKind::TlsIndex => format!("#%{}{at}:{}", r.symbol, r.var),
            RefKind::TpOffset => format!("#%{}{at}:{} tp-offset", r.symbol, r.var),
            RefKind::GotRelative => format!("#{}{at}{add}:{} got-relative", r.symbol, r.var),
            _ => format!("#{}{at}{add}:{}", r.symbol, r.var),
        };
        let _ = writeln!(s, "{line}");
    }
    s
}
