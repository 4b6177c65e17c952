//! `pulp-cc`: a C compiler wrapper that makes what it builds live-patchable.
//!
//! ```sh
//! CC=pulp-cc ./configure && make                 # PULP_CC_REAL=gcc-12 to choose the compiler
//! cmake -DCMAKE_C_COMPILER_LAUNCHER=pulp-cc -DCMAKE_C_LINKER_LAUNCHER=pulp-cc ..
//! ```
//!
//! Runs the real compiler (`$PULP_CC_REAL`, default `cc`; or, as a launcher, the program
//! given as the first argument) with the same arguments, adding
//! `-fpatchable-function-entry=16,14` when C or C++ is compiled, and rewrites the entries
//! of a linked executable or shared object to `66 90`. Exit status, stdout and stderr are
//! the compiler's. See `pulp_cc_build::wrapper` for the rules. Called as `pulp-c++` (a
//! link to it), the real compiler is `$PULP_CXX_REAL`, default `c++`.
//!
//! Under `pulp build-patch` (`PULP_BUILDPATCH_DIR` set) it also writes, for every source
//! compiled, the large-code-model assembly the patch generator reads, and records each
//! compile and link (`pulp_cc_build::side`).

use std::ffi::{OsStr, OsString};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitCode};

use pulp_cc_build::{inspect, side, wrapper};

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if std::env::var_os(wrapper::ACTIVE_ENV).is_some() {
        eprintln!(
            "pulp-cc: error: the real compiler is pulp-cc again: set {} to the compiler (e.g. gcc)",
            wrapper::REAL_ENV
        );
        return ExitCode::from(1);
    }
    // Called as `pulp-c++` (a link to pulp-cc), the default compiler is `c++`.
    let cxx = std::env::args_os()
        .next()
        .is_some_and(|a| Path::new(&a).file_name().is_some_and(|n| n.to_string_lossy().contains("++")));
    let (compiler, args) = match wrapper::split_launcher(&args, is_program) {
        Some((cc, rest)) => (vec![cc], rest),
        None if cxx => {
            (wrapper::real_compiler_or(std::env::var_os(wrapper::CXX_REAL_ENV).as_deref(), "c++"), &args[..])
        }
        None => (wrapper::real_compiler(std::env::var_os(wrapper::REAL_ENV).as_deref()), &args[..]),
    };
    let disabled = wrapper::disabled(std::env::var_os(wrapper::DISABLE_ENV).as_deref());
    let analysis = wrapper::analyse(args);
    let plan = wrapper::plan(args, &analysis, disabled);
    let build_patch = side::BuildPatch::from_env().filter(|_| !disabled);
    let mut real_args = plan.args.clone();
    if let (Some(bp), true) = (&build_patch, analysis.compiles_c && analysis.mode != wrapper::Mode::Preprocess) {
        real_args.extend(bp.prefix_map());
    }
    let mut cmd = Command::new(&compiler[0]);
    cmd.args(&compiler[1..]).args(&real_args).env(wrapper::ACTIVE_ENV, "1");

    if plan.canonicalise.is_none() && build_patch.is_none() {
        // Nothing to do afterwards: become the compiler (same pid, signals, exit status).
        let err = cmd.exec();
        eprintln!("pulp-cc: error: cannot run {}: {err}", compiler[0].to_string_lossy());
        return ExitCode::from(127);
    }
    let status = match cmd.status() {
        Ok(s) => s,
        Err(err) => {
            eprintln!("pulp-cc: error: cannot run {}: {err}", compiler[0].to_string_lossy());
            return ExitCode::from(127);
        }
    };
    if !status.success() {
        let code = status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    if let Some(output) = &plan.canonicalise {
        if wrapper::is_linked_elf(output) {
            if let Err(e) = inspect::canonicalise_entries(output) {
                eprintln!("pulp-cc: error: {e}");
                return ExitCode::from(1);
            }
        }
    }
    if let Some(bp) = &build_patch {
        if let Err(e) = build_patch_records(bp, &compiler, &analysis) {
            eprintln!("pulp-cc: error: build-patch: {e}");
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

/// Build-patch mode: run the side compiles of this command and record them and its link.
fn build_patch_records(
    bp: &side::BuildPatch,
    compiler: &[OsString],
    analysis: &wrapper::Analysis,
) -> Result<(), String> {
    let cwd = std::env::current_dir().map_err(|e| format!("cannot read the current folder: {e}"))?;
    for sc in side::plan(bp, analysis, &cwd) {
        if bp.record_only {
            bp.append(&sc.record(&cwd, compiler))
                .map_err(|e| format!("cannot write the records in {}: {e}", bp.dir.display()))?;
            continue;
        }
        if let Some(parent) = sc.asm.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        let out = Command::new(&compiler[0])
            .args(&compiler[1..])
            .args(&sc.args)
            .env(wrapper::ACTIVE_ENV, "1")
            .output()
            .map_err(|e| format!("cannot run {}: {e}", compiler[0].to_string_lossy()))?;
        if !out.status.success() {
            return Err(format!(
                "the side compile of {} failed ({}):\n{}",
                sc.source.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        bp.append(&sc.record(&cwd, compiler))
            .map_err(|e| format!("cannot write the records in {}: {e}", bp.dir.display()))?;
    }
    if let Some(rec) = side::link_record(analysis, &cwd) {
        bp.append(&rec).map_err(|e| format!("cannot write the records in {}: {e}", bp.dir.display()))?;
    }
    Ok(())
}

/// Whether `name` is an executable file, given as a path or found in `PATH`.
fn is_program(name: &OsStr) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    let p = Path::new(name);
    if p.components().count() > 1 {
        return executable(p);
    }
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|d| executable(&d.join(p))))
}
