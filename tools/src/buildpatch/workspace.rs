//! The two builds of `pulp build-patch`: a copy of the sources, the fix applied with
//! `patch -p1`, the build command run with `CC`/`CXX` set to the wrapper in build-patch
//! mode, and what the wrapper recorded.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One translation unit the wrapper compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TuRecord {
    /// Its object file (or `OUTPUT#SOURCE`), relative to the copy's root.
    pub key: String,
    pub source: PathBuf,
    /// The side compile: large-code-model assembly.
    pub asm: PathBuf,
    /// The build compiled it with `-flto`.
    pub lto: bool,
}

/// One link the wrapper ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkRecord {
    pub output: PathBuf,
    pub inputs: Vec<PathBuf>,
    /// `-l`/`-L`/`-pthread` options.
    pub libs: Vec<String>,
}

/// What one build produced.
#[derive(Debug)]
pub struct Built {
    /// The copy of the sources it ran in.
    pub root: PathBuf,
    pub tus: Vec<TuRecord>,
    pub links: Vec<LinkRecord>,
    pub took: Duration,
}

impl Built {
    /// The key of a unit's record as `root`-relative text.
    pub fn tu(&self, key: &str) -> Option<&TuRecord> {
        self.tus.iter().rev().find(|t| t.key == key)
    }

    /// The units linked into `output` (by their object files, or compiled in the link
    /// command itself).
    pub fn units_of(&self, link: &LinkRecord) -> Vec<&TuRecord> {
        let out_key = link.output.strip_prefix(&self.root).unwrap_or(&link.output).to_string_lossy().into_owned();
        let mut seen = std::collections::BTreeSet::new();
        let mut v: Vec<&TuRecord> = self
            .tus
            .iter()
            .rev()
            .filter(|t| {
                link.inputs.iter().any(|i| self.root.join(&t.key) == *i)
                    || t.key.strip_prefix(&out_key).is_some_and(|r| r.starts_with('#'))
            })
            .filter(|t| seen.insert(t.key.clone()))
            .collect();
        v.reverse();
        v
    }
}

/// Copy the tree `src` to `dst` (`cp -a`) and make every object and library in the copy
/// older than any source, so that the build rebuilds them all.
pub fn copy_sources(src: &Path, dst: &Path) -> Result<(), String> {
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let mut from = src.as_os_str().to_owned();
    from.push("/.");
    std::fs::create_dir_all(dst).map_err(|e| format!("cannot create {}: {e}", dst.display()))?;
    let out = Command::new("cp").arg("-a").arg(&from).arg(dst).output().map_err(|e| format!("cannot run cp: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cannot copy {} to {}: {}",
            src.display(),
            dst.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    mark_objects_stale(dst);
    Ok(())
}

/// Set the time of every ELF file and archive under `dir` to 1970, so `make` rebuilds them.
fn mark_objects_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let Ok(kind) = e.file_type() else { continue };
        let p = e.path();
        if kind.is_dir() {
            mark_objects_stale(&p);
        } else if kind.is_file() {
            let mut head = [0u8; 8];
            let is_object = std::fs::File::open(&p)
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
                .is_ok_and(|_| head[..4] == *b"\x7fELF" || head == *b"!<arch>\n");
            if is_object {
                if let Ok(f) = std::fs::File::open(&p) {
                    let _ = f.set_modified(std::time::UNIX_EPOCH);
                }
            }
        }
    }
}

/// `patch -p1` the fix into `root`.
pub fn apply_diff(root: &Path, diff: &Path) -> Result<(), String> {
    let out = Command::new("patch")
        .args(["-p1", "--batch", "--forward", "--no-backup-if-mismatch", "-d"])
        .arg(root)
        .arg("-i")
        .arg(diff)
        .output()
        .map_err(|e| format!("cannot run patch: {e}"))?;
    if !out.status.success() {
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        return Err(format!("{} does not apply to the sources (patch -p1):\n{}", diff.display(), text.trim_end()));
    }
    Ok(())
}

/// What the build needs to know to run under the wrapper.
pub struct BuildEnv<'a> {
    pub wrapper: &'a Path,
    /// A `pulp-c++` link to the wrapper.
    pub wrapper_cxx: &'a Path,
    /// The user's source folder (for `-ffile-prefix-map`).
    pub map: &'a Path,
}

/// Run `command` (with `sh -c`) in `root`, the wrapper recording into `records`.
pub fn build(root: &Path, command: &str, records: &Path, env: &BuildEnv<'_>, what: &str) -> Result<Built, String> {
    std::fs::create_dir_all(records).map_err(|e| format!("cannot create {}: {e}", records.display()))?;
    let log = records.join("build.log");
    let file = std::fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let err = file.try_clone().map_err(|e| e.to_string())?;
    let start = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(root)
        .env("CC", env.wrapper)
        .env("CXX", env.wrapper_cxx)
        .env(pulp_side::DIR_ENV, records)
        .env(pulp_side::ROOT_ENV, root)
        .env(pulp_side::MAP_ENV, env.map)
        .env_remove("PULP_CC_DISABLE")
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .status()
        .map_err(|e| format!("cannot run sh: {e}"))?;
    let took = start.elapsed();
    if !status.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(25).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "the build of the {what} sources failed ({status}) in {}; the end of its output:\n{}",
            root.display(),
            tail.join("\n")
        ));
    }
    let (tus, links) = read_records(&records.join("records.jsonl"))?;
    if tus.is_empty() {
        return Err(format!(
            "the build of the {what} sources compiled nothing through $CC (was everything up to date, or does \
             the build command ignore CC?); its output is in {}",
            log.display()
        ));
    }
    Ok(Built { root: root.to_path_buf(), tus, links, took })
}

/// Read the wrapper's records.
pub fn read_records(path: &Path) -> Result<(Vec<TuRecord>, Vec<LinkRecord>), String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut tus = Vec::new();
    let mut links = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let v: Value =
            serde_json::from_str(line).map_err(|e| format!("{}:{}: not a record: {e}", path.display(), i + 1))?;
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        match v["kind"].as_str() {
            Some("tu") => tus.push(TuRecord {
                key: s("key"),
                source: s("source").into(),
                asm: s("asm").into(),
                lto: v["lto"].as_bool().unwrap_or(false),
            }),
            Some("link") => {
                let list = |k: &str| -> Vec<String> {
                    v[k].as_array()
                        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
                        .unwrap_or_default()
                };
                links.push(LinkRecord {
                    output: s("output").into(),
                    inputs: list("inputs").into_iter().map(PathBuf::from).collect(),
                    libs: list("libs"),
                });
            }
            _ => {}
        }
    }
    Ok((tus, links))
}

/// The names the wrapper's build-patch mode reads from the environment (the same as
/// `pulp_cc_build::side`'s; the tools do not depend on the build plugin).
pub mod pulp_side {
    pub const DIR_ENV: &str = "PULP_BUILDPATCH_DIR";
    pub const ROOT_ENV: &str = "PULP_BUILDPATCH_ROOT";
    pub const MAP_ENV: &str = "PULP_BUILDPATCH_MAP";
}
