//! Shared helpers of the demo (`pulp-demo`) and the benchmark driver (`pulp-bench`):
//! find the tools next to the running binary and run them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The artifacts of `cargo build --release --workspace`, found next to the running binary.
pub struct Tools {
    pub dir: PathBuf,
    /// `libpulp_rs.so`, preloaded into the applications.
    pub runtime: PathBuf,
    pub pulp: PathBuf,
    pub trigger: PathBuf,
}

impl Tools {
    /// Looks in the folder of the current executable (`target/release`).
    pub fn locate() -> Result<Self> {
        let exe = std::env::current_exe().context("cannot find the path of this program")?;
        let dir = exe.parent().context("this program's path has no parent folder")?.to_path_buf();
        let tools = Tools {
            runtime: dir.join("libpulp_rs.so"),
            pulp: dir.join("pulp"),
            trigger: dir.join("pulp-trigger"),
            dir,
        };
        for p in [&tools.runtime, &tools.pulp, &tools.trigger] {
            if !p.exists() {
                bail!("{} is missing: run `cargo build --release --workspace` first", p.display());
            }
        }
        Ok(tools)
    }

    /// `pulp pack DSC -o META`; fails with pack's message.
    pub fn pack(&self, dsc: &Path, meta: &Path) -> Result<Run> {
        let run = Run::new(Command::new(&self.pulp).arg("pack").arg(dsc).arg("-o").arg(meta))?;
        run.check("pulp pack")?;
        Ok(run)
    }

    /// `pulp-trigger [--revert] -p PID META`.
    pub fn trigger(&self, pid: u32, meta: &Path, revert: bool) -> Result<Run> {
        let mut cmd = Command::new(&self.trigger);
        if revert {
            cmd.arg("--revert");
        }
        cmd.arg("-p").arg(pid.to_string()).arg(meta);
        Run::new(&mut cmd)
    }

    /// `pulp-trigger ARGS... -p PID`, for the options `trigger` does not cover
    /// (`--timeout`, `--continue`).
    pub fn trigger_args(&self, pid: u32, args: &[&std::ffi::OsStr]) -> Result<Run> {
        let mut cmd = Command::new(&self.trigger);
        cmd.args(args).arg("-p").arg(pid.to_string());
        Run::new(&mut cmd)
    }
}

/// The result of one finished tool run.
pub struct Run {
    /// The command line, for display.
    pub command: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    pub fn new(cmd: &mut Command) -> Result<Self> {
        let command = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let start = Instant::now();
        let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("cannot run {command}"))?;
        let elapsed = start.elapsed();
        Ok(Run {
            command,
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed,
        })
    }

    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// An error naming `what`, the exit code and stderr unless the run succeeded.
    pub fn check(&self, what: &str) -> Result<()> {
        if !self.success() {
            bail!("{what} failed (exit code {:?}): {}{}", self.code, self.stderr.trim(), self.stdout.trim());
        }
        Ok(())
    }
}

/// The text of a `.dsc` file: the patch object, then one target with its `old:new` pairs.
pub fn dsc_text(patch: &Path, target: &Path, funcs: &[(String, String)], label: &str) -> String {
    let mut s = format!("{}\n@{}\n", patch.display(), target.display());
    for (old, new) in funcs {
        s.push_str(&format!("{old}:{new}\n"));
    }
    if !label.is_empty() {
        s.push_str(&format!("!{label}\n"));
    }
    s
}
