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
//! the compiler's. See `pulp_cc_build::wrapper` for the rules.

use std::ffi::{OsStr, OsString};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitCode};

use pulp_cc_build::{inspect, wrapper};

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if std::env::var_os(wrapper::ACTIVE_ENV).is_some() {
        eprintln!(
            "pulp-cc: error: the real compiler is pulp-cc again: set {} to the compiler (e.g. gcc)",
            wrapper::REAL_ENV
        );
        return ExitCode::from(1);
    }
    let (compiler, args) = match wrapper::split_launcher(&args, is_program) {
        Some((cc, rest)) => (vec![cc], rest),
        None => (wrapper::real_compiler(std::env::var_os(wrapper::REAL_ENV).as_deref()), &args[..]),
    };
    let plan = wrapper::plan(args, wrapper::disabled(std::env::var_os(wrapper::DISABLE_ENV).as_deref()));
    let mut cmd = Command::new(&compiler[0]);
    cmd.args(&compiler[1..]).args(&plan.args).env(wrapper::ACTIVE_ENV, "1");

    let Some(output) = plan.canonicalise else {
        // Nothing to do afterwards: become the compiler (same pid, signals, exit status).
        let err = cmd.exec();
        eprintln!("pulp-cc: error: cannot run {}: {err}", compiler[0].to_string_lossy());
        return ExitCode::from(127);
    };
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
    if wrapper::is_linked_elf(&output) {
        if let Err(e) = inspect::canonicalise_entries(&output) {
            eprintln!("pulp-cc: error: {e}");
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
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
