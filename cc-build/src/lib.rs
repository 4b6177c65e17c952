//! Build live-patchable C objects and inspect them.
//!
//! [`Build`] compiles and links C sources into a shared object or an executable whose
//! functions carry a NOP pad (`-fpatchable-function-entry=16,14`), then rewrites gcc's
//! `90 90` entry NOPs to `66 90` (see [`inspect::canonicalise_entries`]). It works the
//! same from a `build.rs` and from ordinary programs and tests:
//!
//! ```no_run
//! let so = pulp_cc_build::Build::new()
//!     .file("src/foo.c")
//!     .out_dir("/tmp/out")
//!     .shared("foo")?; // /tmp/out/libfoo.so
//! # Ok::<(), pulp_cc_build::BuildError>(())
//! ```
//!
//! The compiler is `$CC` (which may carry extra words, e.g. `ccache gcc`), else `cc`. In
//! a build script (`OUT_DIR` set) the output folder defaults to `OUT_DIR`, a
//! `cargo:rerun-if-changed` line is printed for every source, and compiler warnings are
//! forwarded as `cargo:warning` lines.

/// Reading ELF objects lives in its own crate (`elf/`), shared with the tools.
pub use pulp_elf as inspect;
pub mod side;
pub mod wrapper;

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

pub use inspect::{FunctionInfo, InspectError};

/// The compiler flags that give every function a live-patchable NOP pad.
pub const PATCHABLE_FLAGS: &[&str] = &["-fpatchable-function-entry=16,14"];

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("no source files given")]
    NoSources,
    #[error("no output folder: call .out_dir() (OUT_DIR is only set in build scripts)")]
    NoOutDir,
    #[error("cannot create {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot run the C compiler `{command}`: {source}")]
    Spawn { command: String, source: io::Error },
    #[error("the C compiler failed ({status}): {command}\n{stderr}")]
    Compiler { command: String, status: std::process::ExitStatus, stderr: String },
    #[error(transparent)]
    Inspect(#[from] InspectError),
}

/// A C build of one shared object or executable.
#[derive(Clone, Debug)]
pub struct Build {
    files: Vec<PathBuf>,
    includes: Vec<PathBuf>,
    defines: Vec<(String, Option<String>)>,
    flags: Vec<String>,
    out_dir: Option<PathBuf>,
    patchable: bool,
    canonicalise: bool,
    link_dirs: Vec<PathBuf>,
    link_libs: Vec<String>,
    rpaths: Vec<PathBuf>,
    opt_level: u8,
    threads: bool,
    compiler: Option<PathBuf>,
}

impl Default for Build {
    fn default() -> Self {
        Self::new()
    }
}

impl Build {
    pub fn new() -> Self {
        Self {
            files: Vec::new(),
            includes: Vec::new(),
            defines: Vec::new(),
            flags: Vec::new(),
            out_dir: None,
            patchable: true,
            canonicalise: true,
            link_dirs: Vec::new(),
            link_libs: Vec::new(),
            rpaths: Vec::new(),
            opt_level: 2,
            threads: false,
            compiler: None,
        }
    }

    /// Add a C source file.
    pub fn file(&mut self, p: impl AsRef<Path>) -> &mut Self {
        self.files.push(p.as_ref().to_path_buf());
        self
    }

    pub fn files<P: AsRef<Path>>(&mut self, ps: impl IntoIterator<Item = P>) -> &mut Self {
        for p in ps {
            self.file(p);
        }
        self
    }

    /// `-I dir`
    pub fn include(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.includes.push(dir.as_ref().to_path_buf());
        self
    }

    /// `-Dk` or `-Dk=v`
    pub fn define(&mut self, k: &str, v: Option<&str>) -> &mut Self {
        self.defines.push((k.to_owned(), v.map(str::to_owned)));
        self
    }

    /// An extra compiler/linker flag, passed as it is, after the built-in ones.
    pub fn flag(&mut self, f: &str) -> &mut Self {
        self.flags.push(f.to_owned());
        self
    }

    /// Where the output goes (created if missing). Defaults to `OUT_DIR` in a build script.
    pub fn out_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.out_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Give every function a NOP pad (default `true`).
    pub fn patchable(&mut self, on: bool) -> &mut Self {
        self.patchable = on;
        self
    }

    /// Rewrite `90 90` entries to `66 90` after linking (default `true`; only with
    /// [`Build::patchable`]).
    pub fn canonicalise(&mut self, on: bool) -> &mut Self {
        self.canonicalise = on;
        self
    }

    /// `-L dir`
    pub fn link_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.link_dirs.push(dir.as_ref().to_path_buf());
        self
    }

    /// `-l name`
    pub fn link_lib(&mut self, name: &str) -> &mut Self {
        self.link_libs.push(name.to_owned());
        self
    }

    /// `-Wl,-rpath,dir`
    pub fn rpath(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.rpaths.push(dir.as_ref().to_path_buf());
        self
    }

    /// `-O<level>` (default 2).
    pub fn opt_level(&mut self, level: u8) -> &mut Self {
        self.opt_level = level;
        self
    }

    /// `-pthread`
    pub fn threads(&mut self, on: bool) -> &mut Self {
        self.threads = on;
        self
    }

    /// Use this compiler instead of `$CC` / `cc`.
    pub fn compiler(&mut self, cc: impl AsRef<Path>) -> &mut Self {
        self.compiler = Some(cc.as_ref().to_path_buf());
        self
    }

    /// Build `out_dir/lib{name}.so`.
    pub fn shared(&self, name: &str) -> Result<PathBuf, BuildError> {
        let out = self.output_dir()?.join(format!("lib{name}.so"));
        self.run(&["-fPIC", "-shared"], &out)?;
        Ok(out)
    }

    /// Build the executable `out_dir/{name}`.
    pub fn executable(&self, name: &str) -> Result<PathBuf, BuildError> {
        let out = self.output_dir()?.join(name);
        self.run(&[], &out)?;
        Ok(out)
    }

    fn in_build_script() -> bool {
        std::env::var_os("OUT_DIR").is_some()
    }

    fn output_dir(&self) -> Result<PathBuf, BuildError> {
        let dir = match (&self.out_dir, std::env::var_os("OUT_DIR")) {
            (Some(d), _) => d.clone(),
            (None, Some(d)) => PathBuf::from(d),
            (None, None) => return Err(BuildError::NoOutDir),
        };
        std::fs::create_dir_all(&dir).map_err(|source| BuildError::CreateDir { path: dir.clone(), source })?;
        Ok(dir)
    }

    /// The compiler command and its leading arguments.
    fn compiler_words(&self) -> Vec<OsString> {
        if let Some(cc) = &self.compiler {
            return vec![cc.clone().into_os_string()];
        }
        match std::env::var("CC") {
            Ok(cc) if !cc.trim().is_empty() => cc.split_whitespace().map(OsString::from).collect(),
            _ => vec![OsString::from("cc")],
        }
    }

    /// The full command line for an output `out` with `kind` flags (`-fPIC -shared`).
    pub fn command(&self, kind: &[&str], out: &Path) -> Command {
        let words = self.compiler_words();
        let mut cmd = Command::new(&words[0]);
        cmd.args(&words[1..]);
        cmd.arg(format!("-O{}", self.opt_level)).arg("-g").args(kind);
        if self.patchable {
            cmd.args(PATCHABLE_FLAGS);
        }
        if self.threads {
            cmd.arg("-pthread");
        }
        for i in &self.includes {
            cmd.arg("-I").arg(i);
        }
        for (k, v) in &self.defines {
            match v {
                Some(v) => cmd.arg(format!("-D{k}={v}")),
                None => cmd.arg(format!("-D{k}")),
            };
        }
        cmd.args(&self.files);
        cmd.arg("-o").arg(out).arg("-Wl,--build-id=sha1");
        // After the built-in flags, so that a user's flag wins.
        cmd.args(&self.flags);
        for d in &self.link_dirs {
            cmd.arg("-L").arg(d);
        }
        for r in &self.rpaths {
            let mut a = OsString::from("-Wl,-rpath,");
            a.push(r);
            cmd.arg(a);
        }
        for l in &self.link_libs {
            cmd.arg(format!("-l{l}"));
        }
        cmd
    }

    fn run(&self, kind: &[&str], out: &Path) -> Result<(), BuildError> {
        if self.files.is_empty() {
            return Err(BuildError::NoSources);
        }
        let build_script = Self::in_build_script() && self.out_dir.is_none();
        if build_script {
            for f in &self.files {
                println!("cargo:rerun-if-changed={}", f.display());
            }
        }
        let mut cmd = self.command(kind, out);
        let command = show(&cmd);
        let output = cmd.output().map_err(|source| BuildError::Spawn { command: command.clone(), source })?;
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if !output.status.success() {
            return Err(BuildError::Compiler { command, status: output.status, stderr });
        }
        if build_script {
            for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
                println!("cargo:warning={line}");
            }
        }
        if self.patchable && self.canonicalise {
            inspect::canonicalise_entries(out)?;
        }
        Ok(())
    }
}

/// A command line as a user would type it (arguments with spaces quoted).
fn show(cmd: &Command) -> String {
    let quote = |s: &std::ffi::OsStr| {
        let s = s.to_string_lossy();
        if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
            format!("'{}'", s.replace('\'', r"'\''"))
        } else {
            s.into_owned()
        }
    };
    std::iter::once(cmd.get_program()).chain(cmd.get_args()).map(quote).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulp_meta::Prologue;

    const LIB: &str = r#"
static int counter;
__attribute__((noinline)) static int helper(int x) { counter += x; return counter * 3; }
int lib_add(int a, int b) { return helper(a) + b; }
int lib_mul(int a, int b) { return helper(a * b) - 1; }
"#;

    fn lib(dir: &Path) -> PathBuf {
        let src = dir.join("lib.c");
        std::fs::write(&src, LIB).unwrap();
        src
    }

    fn kinds(so: &Path) -> Vec<(String, bool, Option<Prologue>)> {
        inspect::functions(so)
            .unwrap()
            .into_iter()
            .filter(|f| ["lib_add", "lib_mul", "helper"].contains(&f.name.as_str()))
            .map(|f| (f.name, f.global, f.prologue))
            .collect()
    }

    #[test]
    fn shared_object_is_patchable_and_canonical() {
        let dir = tempfile::tempdir().unwrap();
        let so = Build::new().file(lib(dir.path())).out_dir(dir.path()).shared("demo").unwrap();
        assert_eq!(so, dir.path().join("libdemo.so"));
        let p = Some(Prologue::NopPad66);
        assert_eq!(
            kinds(&so),
            vec![("helper".into(), false, p), ("lib_add".into(), true, p), ("lib_mul".into(), true, p)]
        );
        let fs = inspect::functions(&so).unwrap();
        let add = fs.iter().find(|f| f.name == "lib_add").unwrap();
        assert!(add.dynamic && add.size > 0 && add.offset > 0);
        assert!(!fs.iter().find(|f| f.name == "helper").unwrap().dynamic);
        assert!(fs.windows(2).all(|w| w[0].name <= w[1].name));
        assert!(!inspect::build_id(&so).unwrap().is_empty());
        // Already canonical: nothing more to rewrite.
        assert_eq!(inspect::canonicalise_entries(&so).unwrap(), 0);
    }

    #[test]
    fn canonicalisation_can_be_skipped_and_run_later() {
        let dir = tempfile::tempdir().unwrap();
        let so = Build::new().file(lib(dir.path())).out_dir(dir.path()).canonicalise(false).shared("raw").unwrap();
        let before = std::fs::metadata(&so).unwrap().permissions();
        let k = kinds(&so);
        // gcc emits `90 90`; clang already emits `66 90`.
        let expect = k[0].2;
        assert!(matches!(expect, Some(Prologue::NopPad90 | Prologue::NopPad66)), "{k:?}");
        assert!(k.iter().all(|f| f.2 == expect));
        let n = inspect::canonicalise_entries(&so).unwrap();
        if expect == Some(Prologue::NopPad90) {
            assert!(n >= 3, "rewrote {n}");
        }
        assert!(kinds(&so).iter().all(|f| f.2 == Some(Prologue::NopPad66)));
        assert_eq!(std::fs::metadata(&so).unwrap().permissions(), before);
    }

    #[test]
    fn not_patchable_has_no_prologue() {
        let dir = tempfile::tempdir().unwrap();
        let so = Build::new().file(lib(dir.path())).out_dir(dir.path()).patchable(false).shared("plain").unwrap();
        let k = kinds(&so);
        assert_eq!(k.len(), 3);
        assert!(k.iter().all(|f| f.2.is_none()), "{k:?}");
    }

    #[test]
    fn fentry_build_is_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let so = Build::new()
            .file(lib(dir.path()))
            .out_dir(dir.path())
            .patchable(false)
            .flag("-pg")
            .flag("-mfentry")
            .shared("fentry")
            .unwrap();
        let k = kinds(&so);
        assert_eq!(k.len(), 3);
        assert!(k.iter().all(|f| matches!(f.2, Some(Prologue::FentryCall | Prologue::FentryGotCall))), "{k:?}");
    }

    #[test]
    fn executable_runs() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("main.c");
        std::fs::write(
            &src,
            "#include <stdio.h>\nint twice(int x) { return 2 * x; }\nint main(void) { printf(\"%d\\n\", twice(GREETING)); return 0; }\n",
        )
        .unwrap();
        let exe =
            Build::new().file(&src).define("GREETING", Some("21")).out_dir(dir.path()).executable("hello").unwrap();
        let out = Command::new(&exe).output().unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout), "42\n");
        assert!(!inspect::build_id(&exe).unwrap().is_empty());
        let twice = inspect::functions(&exe).unwrap().into_iter().find(|f| f.name == "twice").unwrap();
        assert_eq!(twice.prologue, Some(Prologue::NopPad66));
    }

    #[test]
    fn links_against_a_built_library() {
        let dir = tempfile::tempdir().unwrap();
        Build::new().file(lib(dir.path())).out_dir(dir.path()).shared("demo").unwrap();
        let src = dir.path().join("app.c");
        std::fs::write(&src, "int lib_add(int, int);\nint main(void) { return lib_add(1, 2) == 5 ? 0 : 1; }\n")
            .unwrap();
        let exe = Build::new()
            .file(&src)
            .out_dir(dir.path())
            .link_dir(dir.path())
            .link_lib("demo")
            .rpath(dir.path())
            .threads(true)
            .executable("app")
            .unwrap();
        assert!(Command::new(&exe).status().unwrap().success());
    }

    #[test]
    fn errors_show_the_command_and_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("bad.c");
        std::fs::write(&src, "int f(void) { return undeclared_thing; }\n").unwrap();
        let e = Build::new().file(&src).out_dir(dir.path()).shared("bad").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("-fpatchable-function-entry=16,14") && msg.contains("bad.c"), "{msg}");
        assert!(msg.contains("undeclared_thing"), "{msg}");
        assert!(matches!(Build::new().out_dir(dir.path()).shared("x"), Err(BuildError::NoSources)));
        let e = Build::new().file(&src).out_dir(dir.path()).compiler("/nonexistent/cc").shared("x").unwrap_err();
        assert!(matches!(e, BuildError::Spawn { .. }), "{e}");
    }

    #[test]
    fn inspect_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.so");
        assert!(inspect::functions(&missing).unwrap_err().to_string().contains("nope.so"));
        let junk = dir.path().join("junk.so");
        std::fs::write(&junk, b"not an elf").unwrap();
        assert!(inspect::build_id(&junk).unwrap_err().to_string().contains("junk.so"));
        let so =
            Build::new().file(lib(dir.path())).out_dir(dir.path()).flag("-Wl,--build-id=none").shared("noid").unwrap();
        let e = inspect::build_id(&so).unwrap_err();
        assert!(matches!(e, InspectError::NoBuildId { .. }), "{e}");
        assert!(e.to_string().contains("libnoid.so"));
    }
}
