//! Shared by the `pulp build-patch` tests: the test library (tests/fixtures/buildpatch/lib)
//! built live-patchable with pulp-cc as the "running" object, its application, and
//! `pulp build-patch` runs against it with a diff of tests/fixtures/buildpatch/diffs.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use libpulp_rs_tests::tool;
use libpulp_rs_tests::{artifacts, run, CSpec, ToolOutput, Work};

/// The compilers a project is built with.
#[derive(Clone, Copy, Debug)]
pub enum Compiler {
    Gcc,
    Clang,
    /// gcc named in two words, as `PULP_CC_REAL="ccache gcc"` would (`env gcc`).
    GccInTwoWords,
}

impl Compiler {
    fn env(self) -> [(&'static str, &'static str); 2] {
        match self {
            Compiler::Gcc => [("PULP_CC_REAL", "gcc"), ("PULP_CXX_REAL", "g++")],
            Compiler::Clang => [("PULP_CC_REAL", "clang"), ("PULP_CXX_REAL", "clang++")],
            Compiler::GccInTwoWords => [("PULP_CC_REAL", "env gcc"), ("PULP_CXX_REAL", "env g++")],
        }
    }

    pub fn cc(self) -> &'static str {
        self.env()[0].1
    }
}

/// The test library: its sources, the running build, the application.
pub struct Project {
    pub work: Work,
    pub compiler: Compiler,
    /// The clean sources (`--src`).
    pub src: PathBuf,
    /// The library the application runs (`--target`), built in another folder.
    pub running: PathBuf,
    pub app: PathBuf,
}

/// Copy a folder (`cp -a`).
pub fn copy_dir(from: &Path, to: &Path) {
    let mut f = from.as_os_str().to_owned();
    f.push("/.");
    std::fs::create_dir_all(to).unwrap();
    run(Command::new("cp").arg("-a").arg(f).arg(to)).assert_ok("cp -a");
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/buildpatch")
}

/// `pulp-c++`: a link to pulp-cc, which then runs the C++ compiler.
pub fn wrapper_cxx(work: &Path) -> PathBuf {
    let cxx = work.join("bin/pulp-c++");
    if !cxx.exists() {
        std::fs::create_dir_all(work.join("bin")).unwrap();
        std::os::unix::fs::symlink(artifacts().dir.join("pulp-cc"), &cxx).unwrap();
    }
    cxx
}

impl Project {
    /// Build the library with `make` through pulp-cc (as its users would) in
    /// `running/`, and the application linked to it.
    pub fn new(compiler: Compiler) -> Project {
        Self::with_make_flags(compiler, &[])
    }

    /// [`Project::new`] with extra `make` arguments for the running build only.
    pub fn with_make_flags(compiler: Compiler, make_args: &[&str]) -> Project {
        let work = Work::new();
        let w = work.path().to_path_buf();
        let src = w.join("src");
        copy_dir(&fixtures().join("lib"), &src);
        let running_dir = w.join("running");
        copy_dir(&fixtures().join("lib"), &running_dir);
        let mut make = tool("make");
        make.arg("-s")
            .arg(format!("CC={}", artifacts().dir.join("pulp-cc").display()))
            .arg(format!("CXX={}", wrapper_cxx(&w).display()))
            .args(make_args)
            .current_dir(&running_dir)
            .envs(compiler.env());
        run(&mut make).assert_ok("make (the running library)");
        let running = running_dir.join("libbp.so");
        let app = work.executable(
            "bp_app",
            &CSpec::plain(&["buildpatch/bp_app.c"])
                .threads()
                .flag(&format!("-L{}", running_dir.display()))
                .flag("-lbp")
                .flag(&format!("-Wl,-rpath,{}", running_dir.display())),
        );
        Project { work, compiler, src, running, app }
    }

    /// `pulp build-patch` with the diff `diffs/NAME.patch`, into `out-NAME/`.
    pub fn build_patch(&self, diff: &str, extra: &[&str]) -> ToolOutput {
        self.build_patch_with(diff, "make -s", extra)
    }

    /// [`Project::build_patch`] with another build command.
    pub fn build_patch_with(&self, diff: &str, build: &str, extra: &[&str]) -> ToolOutput {
        let out_dir = self.work.path().join(format!("out-{diff}"));
        let mut cmd = Command::new(&artifacts().pulp);
        cmd.arg("build-patch")
            .arg("--src")
            .arg(&self.src)
            .arg("--diff")
            .arg(fixtures().join("diffs").join(format!("{diff}.patch")))
            .args(["--build", build])
            .arg("--target")
            .arg(&self.running)
            .args(["--label", &format!("test {diff}")])
            .arg("-o")
            .arg(&out_dir)
            .args(extra)
            .envs(self.compiler.env());
        run(&mut cmd)
    }

    /// The `.meta` written by [`Project::build_patch`] for `diff`.
    pub fn meta(&self, diff: &str) -> PathBuf {
        self.work.path().join(format!("out-{diff}")).join(format!("{diff}.meta"))
    }

    pub fn patch_so(&self, diff: &str) -> PathBuf {
        self.work.path().join(format!("out-{diff}")).join(format!("{diff}.so"))
    }
}

/// The functions a patch object defines (its own code, without the C runtime's).
pub fn functions_of(so: &Path) -> Vec<String> {
    const CRT: &[&str] =
        &["_init", "_fini", "deregister_tm_clones", "register_tm_clones", "__do_global_dtors_aux", "frame_dummy"];
    let out = run(tool("readelf").arg("-sW").arg(so));
    out.assert_ok("readelf");
    let mut names: Vec<String> = out
        .stdout
        .lines()
        .filter(|l| l.contains(" FUNC ") && !l.contains(" UND "))
        .filter_map(|l| l.split_whitespace().nth(7).map(str::to_owned))
        .filter(|n| !CRT.contains(&n.as_str()))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Asserts a refusal by `pulp build-patch`: exit 1, nothing written, the reason given.
pub fn assert_refused(out: &ToolOutput, words: &[&str]) {
    assert_eq!(out.code, Some(1), "expected a refusal: {out:#?}");
    let err = out.stderr.to_lowercase();
    for w in words {
        assert!(err.contains(&w.to_lowercase()), "the refusal does not say `{w}`: {}", out.stderr);
    }
    println!("refused as expected: {}", out.stderr.trim());
}

/// A file of tests/upstream.
pub fn upstream_fix(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/upstream").join(name)
}

/// Copy `sources` to `dir`, with `makefile` (a file of fixtures/buildpatch/upstream, if
/// given) as its `Makefile`, and the bug put back: the fix `fix` (a file of
/// tests/upstream) applied in reverse. Returns the fix's path.
pub fn with_bug_put_back(sources: &Path, makefile: &str, fix: &str, dir: &Path) -> PathBuf {
    copy_dir(sources, dir);
    if !makefile.is_empty() {
        std::fs::copy(fixtures().join("upstream").join(makefile), dir.join("Makefile")).unwrap();
    }
    let fix = upstream_fix(fix);
    run(tool("patch").args(["-R", "-p1", "--batch", "-d"]).arg(dir).arg("-i").arg(&fix))
        .assert_ok("putting the bug back (patch -R)");
    fix
}

/// `pulp build-patch --incremental` of `fix` on the kept build `kept` (see kept.rs) for its
/// `library`, into `work/out`, building in `work/bp` (kept, to be looked at).
pub fn build_patch_incremental(
    work: &Path,
    kept: &Path,
    fix: &Path,
    build: &str,
    library: &str,
    label: &str,
) -> ToolOutput {
    let mut cmd = Command::new(&artifacts().pulp);
    cmd.args(["build-patch", "--incremental", "--src"])
        .arg(kept)
        .arg("--diff")
        .arg(fix)
        .args(["--build", build, "--name", "fix", "--label", label, "--target"])
        .arg(kept.join(library))
        .arg("-o")
        .arg(work.join("out"))
        .arg("--work-dir")
        .arg(work.join("bp"))
        .env("PULP_CC_REAL", "gcc");
    run(&mut cmd)
}

/// The units a `pulp build-patch` run in `work_dir` compiled for the fixed side, by key.
pub fn recompiled_units(work_dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(work_dir.join("records-after/records.jsonl")).unwrap();
    let mut keys: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "tu")
        .filter_map(|v| v["key"].as_str().map(str::to_owned))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// A real library whose release contains an upstream fix: its sources with the bug put
/// back (the fix applied in reverse) as `src/`, built live-patchable with pulp-cc in
/// `running/`, and `pulp build-patch` with the upstream fix.
pub struct Upstream {
    pub work: Work,
    pub src: PathBuf,
    pub running_dir: PathBuf,
    pub fix: PathBuf,
}

impl Upstream {
    /// `sources`: the library's sources; `makefile`: a file of fixtures/buildpatch/upstream;
    /// `fix`: a file of tests/upstream.
    pub fn new(sources: &Path, makefile: &str, fix: &str) -> Upstream {
        let work = Work::new();
        let src = work.path().join("src");
        let fix = with_bug_put_back(sources, makefile, fix, &src);
        let running_dir = work.path().join("running");
        copy_dir(&src, &running_dir);
        let mut make = tool("make");
        make.args(["-s", "-j2"])
            .arg(format!("CC={}", artifacts().dir.join("pulp-cc").display()))
            .current_dir(&running_dir)
            .env("PULP_CC_REAL", "gcc");
        run(&mut make).assert_ok("make (the running library)");
        Upstream { work, src, running_dir, fix }
    }

    /// `pulp build-patch` of the upstream fix for `library` (a file of `running/`).
    pub fn build_patch(&self, library: &str, label: &str) -> ToolOutput {
        let mut cmd = Command::new(&artifacts().pulp);
        cmd.arg("build-patch")
            .arg("--src")
            .arg(&self.src)
            .arg("--diff")
            .arg(&self.fix)
            .args(["--build", "make -s -j2", "--name", "fix", "--label", label, "--target"])
            .arg(self.running_dir.join(library))
            .arg("-o")
            .arg(self.work.path().join("out"))
            .env("PULP_CC_REAL", "gcc");
        run(&mut cmd)
    }

    pub fn out(&self, file: &str) -> PathBuf {
        self.work.path().join("out").join(file)
    }
}
