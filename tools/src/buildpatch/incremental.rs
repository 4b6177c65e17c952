//! `pulp build-patch --incremental`: one build instead of two.
//!
//! `--src DIR` is then a tree already built through `pulp-cc` in build-patch mode, its
//! records kept in `DIR/.pulp-records/` ([`RECORDS`]; the side compiles may have been
//! recorded without being run, `PULP_BUILDPATCH_RECORD_ONLY=1`). That build is the
//! "before" side: its objects are the running ones. The fix is applied to a `cp -a` copy
//! of the tree, times kept, so the build command there rebuilds only what the diff
//! touches; the "before" side compiles of exactly those units are then run again from
//! the recorded compiler, arguments and folder, in `DIR`, whose sources are unchanged.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::workspace::{self, BuildEnv, Built};
use super::BuildPatchError;

/// The folder of a kept tree that holds its build's records.
pub const RECORDS: &str = ".pulp-records";

/// The kept build of `src` as the "before" side (nothing is run).
pub fn kept_build(src: &Path) -> Result<Built, BuildPatchError> {
    let path = src.join(RECORDS).join("records.jsonl");
    if !path.is_file() {
        return Err(BuildPatchError::Input(format!(
            "--incremental: {} has no records of a pulp-cc build ({} is missing): build the tree with \
             CC=pulp-cc and PULP_BUILDPATCH_DIR={}, PULP_BUILDPATCH_ROOT={} (and PULP_BUILDPATCH_MAP the same), \
             PULP_BUILDPATCH_RECORD_ONLY=1, or drop --incremental",
            src.display(),
            path.display(),
            src.join(RECORDS).display(),
            src.display()
        )));
    }
    let (tus, links) = workspace::read_records(&path).map_err(BuildPatchError::Input)?;
    if tus.is_empty() {
        return Err(BuildPatchError::Input(format!("--incremental: {} records no compile", path.display())));
    }
    Ok(Built { root: src.to_path_buf(), tus, links, took: Default::default() })
}

/// Copy the kept tree to `after_root` keeping times, apply the fix, run the build there.
pub fn build_fixed(
    src: &Path,
    after_root: &Path,
    diff: &Path,
    command: &str,
    records: &Path,
    env: &BuildEnv<'_>,
) -> Result<Built, BuildPatchError> {
    let _ = std::fs::remove_dir_all(after_root);
    workspace::copy_tree(src, after_root).map_err(BuildPatchError::Build)?;
    // The copy's build records elsewhere; the kept records would only mislead.
    let _ = std::fs::remove_dir_all(after_root.join(RECORDS));
    workspace::apply_diff(after_root, diff).map_err(BuildPatchError::Build)?;
    workspace::build(after_root, command, records, env, "fixed").map_err(BuildPatchError::Build)
}

/// Run again, in the kept tree, the "before" side compiles of the units the fixed build
/// recompiled, into `dir`; `before`'s records of them then name these files.
pub fn rerun_before_side_compiles(before: &mut Built, after: &Built, dir: &Path) -> Result<(), BuildPatchError> {
    std::fs::create_dir_all(dir).map_err(|e| BuildPatchError::Build(format!("{}: {e}", dir.display())))?;
    let start = Instant::now();
    let mut keys: Vec<&str> = after.tus.iter().map(|t| t.key.as_str()).collect();
    keys.sort();
    keys.dedup();
    for (n, key) in keys.into_iter().enumerate() {
        // The last record of the key is the object the kept tree holds.
        let Some(rec) = before.tus.iter_mut().rev().find(|t| t.key == key) else {
            continue; // a unit the fix adds
        };
        if rec.compiler.is_empty() {
            return Err(BuildPatchError::Input(format!(
                "--incremental: the record of {key} in {} has no compiler and arguments (written by an older \
                 pulp-cc): build the tree again with this release's pulp-cc",
                before.root.join(RECORDS).display()
            )));
        }
        let asm = dir.join(format!("{n}.s"));
        let out = Command::new(&rec.compiler[0])
            .args(&rec.compiler[1..])
            .args(&rec.args)
            .arg("-o")
            .arg(&asm)
            .current_dir(&rec.cwd)
            .env("PULP_CC_ACTIVE", "1")
            .output()
            .map_err(|e| BuildPatchError::Build(format!("cannot run {}: {e}", rec.compiler[0])))?;
        if !out.status.success() {
            return Err(BuildPatchError::Build(format!(
                "the side compile of the original {} failed ({}) in {}:\n{}",
                rec.source.display(),
                out.status,
                rec.cwd.display(),
                String::from_utf8_lossy(&out.stderr).trim_end()
            )));
        }
        rec.asm = asm;
    }
    before.took = start.elapsed();
    Ok(())
}

/// Where the units' "before" side compiles go.
pub fn before_asm_dir(work: &Path) -> PathBuf {
    work.join("records-before").join("asm")
}
