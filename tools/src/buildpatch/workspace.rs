//! The two builds of `pulp build-patch`: a copy of the sources, the fix applied with
//! `patch -p1`, the build command run with `CC`/`CXX` set to the wrapper in build-patch
//! mode, and what the wrapper recorded.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One translation unit the wrapper compiled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TuRecord {
    /// Its object file (or `OUTPUT#SOURCE`), relative to the copy's root.
    pub key: String,
    pub source: PathBuf,
    /// The side compile: large-code-model assembly.
    pub asm: PathBuf,
    /// The build compiled it with `-flto`.
    pub lto: bool,
    /// Where the side compile ran, the real compiler's words and its arguments without
    /// `-o ASM` (empty in the records of an older `pulp-cc`): `--incremental` reruns it.
    pub cwd: PathBuf,
    pub compiler: Vec<String>,
    pub args: Vec<String>,
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

    /// The units linked into `output`: by their object files, as members of the archives
    /// it links, or compiled in the link command itself.
    pub fn units_of(&self, link: &LinkRecord) -> Vec<&TuRecord> {
        let out_key = link.output.strip_prefix(&self.root).unwrap_or(&link.output).to_string_lossy().into_owned();
        let mut objects: Vec<PathBuf> = Vec::new();
        for i in &link.inputs {
            match archive_members(i) {
                Some(members) => objects.extend(self.members_as_units(&members)),
                None => objects.push(i.clone()),
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut v: Vec<&TuRecord> = self
            .tus
            .iter()
            .rev()
            .filter(|t| {
                objects.iter().any(|i| self.root.join(&t.key) == *i)
                    || t.key.strip_prefix(&out_key).is_some_and(|r| r.starts_with('#'))
            })
            .filter(|t| seen.insert(t.key.clone()))
            .collect();
        v.reverse();
        v
    }

    /// The recorded objects that are the members of an archive: those of the member's
    /// file name whose content is the member's (any of that name when none is).
    fn members_as_units(&self, members: &[Member]) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for m in members {
            let named: Vec<PathBuf> = self
                .tus
                .iter()
                .map(|t| self.root.join(&t.key))
                .filter(|p| p.file_name().is_some_and(|n| n.as_encoded_bytes() == m.name.as_slice()))
                .collect();
            let same: Vec<PathBuf> =
                named.iter().filter(|p| std::fs::read(p).is_ok_and(|d| d == m.data)).cloned().collect();
            out.extend(if same.is_empty() { named } else { same });
        }
        out
    }
}

/// One member of an archive: its file name and content.
pub struct Member {
    pub name: Vec<u8>,
    pub data: Vec<u8>,
}

/// The members of `path` when it is an archive (`ar`), else `None`. A thin archive's
/// members are the files it names, read from their place.
pub fn archive_members(path: &Path) -> Option<Vec<Member>> {
    let bytes = std::fs::read(path).ok()?;
    if !bytes.starts_with(b"!<arch>\n") && !bytes.starts_with(b"!<thin>\n") {
        return None;
    }
    let archive = object::read::archive::ArchiveFile::parse(bytes.as_slice()).ok()?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for m in archive.members().flatten() {
        let data = if archive.is_thin() {
            std::fs::read(dir.join(std::ffi::OsStr::from_bytes(m.name()))).unwrap_or_default()
        } else {
            m.data(bytes.as_slice()).map(<[u8]>::to_vec).unwrap_or_default()
        };
        let name = Path::new(std::ffi::OsStr::from_bytes(m.name()))
            .file_name()
            .map(|n| n.as_encoded_bytes().to_vec())
            .unwrap_or_default();
        out.push(Member { name, data });
    }
    Some(out)
}

/// Copy the tree `src` to `dst` (`cp -a`) and make every object and library in the copy
/// older than any source, so that the build rebuilds them all.
pub fn copy_sources(src: &Path, dst: &Path) -> Result<(), String> {
    copy_tree(src, dst)?;
    mark_objects_stale(dst);
    Ok(())
}

/// Copy the tree `src` to `dst` with `cp -a` (times kept: `make` in the copy rebuilds
/// only what is newer than its objects).
pub fn copy_tree(src: &Path, dst: &Path) -> Result<(), String> {
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
        .env_remove(pulp_side::RECORD_ONLY_ENV)
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
    // A build that only assembles and links (a fix of assembly) is judged by its links.
    if tus.is_empty() && links.is_empty() {
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
                cwd: s("cwd").into(),
                compiler: strings(&v["compiler"]),
                args: strings(&v["args"]),
            }),
            Some("link") => {
                links.push(LinkRecord {
                    output: s("output").into(),
                    inputs: strings(&v["inputs"]).into_iter().map(PathBuf::from).collect(),
                    libs: strings(&v["libs"]),
                });
            }
            _ => {}
        }
    }
    Ok((tus, links))
}

/// The strings of a JSON array (none when it is not one).
fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

/// The names the wrapper's build-patch mode reads from the environment (the same as
/// `pulp_cc_build::side`'s; the tools do not depend on the build plugin).
pub mod pulp_side {
    pub const DIR_ENV: &str = "PULP_BUILDPATCH_DIR";
    pub const ROOT_ENV: &str = "PULP_BUILDPATCH_ROOT";
    pub const MAP_ENV: &str = "PULP_BUILDPATCH_MAP";
    pub const RECORD_ONLY_ENV: &str = "PULP_BUILDPATCH_RECORD_ONLY";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(dir: &Path, cmd: &str) {
        let out = Command::new("sh").arg("-c").arg(cmd).current_dir(dir).output().unwrap();
        assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    }

    #[test]
    fn archive_members_are_the_recorded_objects_they_hold() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        // Two objects of one name in two folders; each archive holds one of them.
        sh(
            root,
            "mkdir x y && echo 'int f(void){return 1;}' > x/u.c && echo 'int g(void){return 2;}' > y/u.c && \
             cc -c x/u.c -o x/u.o && cc -c y/u.c -o y/u.o && cc -c x/u.c -o other.o && \
             ar rc lib.a x/u.o && ar rcT thin.a y/u.o",
        );
        let tu = |key: &str| TuRecord { key: key.into(), ..Default::default() };
        let built = Built {
            root: root.to_path_buf(),
            tus: vec![tu("x/u.o"), tu("y/u.o"), tu("other.o"), tu("unused.o")],
            links: Vec::new(),
            took: Duration::ZERO,
        };
        let link = |inputs: &[&str]| LinkRecord {
            output: root.join("libt.so"),
            inputs: inputs.iter().map(|i| root.join(i)).collect(),
            libs: Vec::new(),
        };
        let keys = |l: &LinkRecord| built.units_of(l).iter().map(|t| t.key.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&link(&["lib.a"])), ["x/u.o"], "the member with x/u.o's content");
        assert_eq!(keys(&link(&["thin.a"])), ["y/u.o"], "a thin archive names its member's place");
        assert_eq!(keys(&link(&["other.o", "lib.a"])), ["x/u.o", "other.o"]);
        assert!(archive_members(&root.join("x/u.o")).is_none(), "an object is no archive");
        let members = archive_members(&root.join("lib.a")).unwrap();
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].name, b"u.o");
    }
}
