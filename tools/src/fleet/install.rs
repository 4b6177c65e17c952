//! `pulp install` / `pulp uninstall`: a fix for the machine, not only for the processes
//! running now. Installing puts the `.meta` and its patch object into the runtime's patch
//! directory (`$PULP_PATCH_DIR`, default `/etc/pulp/patches.d`), where every process that
//! starts later, or loads a target later, applies it by itself (`runtime/src/patchdir.rs`);
//! then it applies the patch to every running process, through `pulp-trigger --all`.
//! Uninstalling reverts it everywhere and takes it out of the directory. The installed
//! `.meta`'s name lists its targets' build-ids (`pulp_meta::patchdir`).

use pulp_meta::patchdir::{meta_file_name, DEFAULT_DIR, DIR_ENV};
use pulp_meta::PatchMeta;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The patch directory: `dir`, else `$PULP_PATCH_DIR`, else the default.
pub fn patch_dir(dir: Option<PathBuf>) -> PathBuf {
    dir.or_else(|| std::env::var_os(DIR_ENV).map(PathBuf::from)).unwrap_or_else(|| PathBuf::from(DEFAULT_DIR))
}

/// Read and decode a `.meta` with the runtime's checked reader: a regular file (a FIFO is
/// refused at once, never waited on), at most `pulp_meta::trust::MAX_META` bytes, on a
/// trusted path.
fn read_meta(meta_path: &Path) -> Result<PatchMeta, String> {
    let abs = std::path::absolute(meta_path).map_err(|e| format!("{}: {e}", meta_path.display()))?;
    let bytes = pulp_meta::trust::read_trusted_meta(&abs, &crate::apply::patchfile::tool_owners())
        .map_err(|e| format!("{}: {e}", meta_path.display()))?;
    PatchMeta::decode(&bytes).map_err(|e| format!("{}: {e}", meta_path.display()))
}

/// Read a `.meta` and its patch object, checked as `pulp-trigger` checks them.
fn read_patch(meta_path: &Path) -> Result<(PatchMeta, Vec<u8>), String> {
    let meta = read_meta(meta_path)?;
    let object = pulp_meta::trust::read_trusted(
        Path::new(&meta.patch_so),
        &crate::apply::patchfile::tool_owners(),
        "the patch object",
    )
    .map_err(|e| format!("{}: {e}", meta.patch_so))?;
    if pulp_meta::sha256::sha256(&object) != meta.patch_sha256 {
        return Err(format!("{}: its content is not what `pulp pack` recorded (pack the patch again)", meta.patch_so));
    }
    Ok((meta, object))
}

/// The installed `.meta` of the patch `id` in `dir`, if any.
pub fn installed(dir: &Path, id: &str) -> Option<PathBuf> {
    let mut metas: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "meta"))
        .collect();
    metas.sort();
    // A file the runtime would not read (untrusted, not a regular file, too large) is
    // not installed.
    metas.into_iter().find(|p| read_meta(p).is_ok_and(|m| m.id() == id))
}

/// Whether the patch of `meta_path` is installed in `dir` (`pulp installed`).
pub fn is_installed(meta_path: &Path, dir: &Path) -> Result<Option<PathBuf>, String> {
    Ok(installed(dir, &read_meta(meta_path)?.id()))
}

/// What an install or uninstall killed half-way (`kill -9`) left in `dir`: temporary files
/// of `patchfile::write_atomically` (`.NAME.tmp.PID`) whose writer is gone, and patch
/// objects no `.meta` of the directory uses whose content is `sha256` (this patch's:
/// never another patch's, which an install running now may be about to point at).
fn leftovers(dir: &Path, sha256: &[u8; 32]) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
    let used: Vec<String> = paths
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "meta"))
        .filter_map(|p| read_meta(p).ok())
        .map(|m| m.patch_so)
        .collect();
    let writer_gone = |name: &str| {
        let pid = name.rsplit_once(".tmp.").and_then(|(_, pid)| pid.parse::<i32>().ok());
        // Gone: no such process, or a zombie (killed, not yet reaped by its parent).
        pid.is_some_and(|pid| pid > 0 && !crate::inject::process::pid_alive(pid))
    };
    paths
        .into_iter()
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.starts_with('.') && name.contains(".tmp.") {
                return writer_gone(&name);
            }
            p.extension().is_some_and(|x| x == "so")
                && !used.iter().any(|u| Path::new(u) == p)
                && std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file())
                && std::fs::read(p).is_ok_and(|b| pulp_meta::sha256::sha256(&b) == *sha256)
        })
        .collect()
}

/// Remove what [`leftovers`] finds.
fn clean_leftovers(dir: &Path, sha256: &[u8; 32]) {
    for p in leftovers(dir, sha256) {
        let _ = std::fs::remove_file(p);
    }
}

/// Write a file of the directory (mode 0644, never half-written).
fn write_atomically(path: &Path, data: &[u8]) -> Result<(), String> {
    crate::apply::patchfile::write_atomically(path, data, 0o644)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Put the patch into `dir`: `NAME.so`, then `NAME.meta` pointing at it (a process
/// starting in between sees either nothing or both). Returns the installed `.meta` and
/// whether it was installed already.
pub fn install_files(meta_path: &Path, dir: &Path) -> Result<(PathBuf, bool), String> {
    let (mut meta, object) = read_patch(meta_path)?;
    if let Some(there) = installed(dir, &meta.id()) {
        return Ok((there, true));
    }
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .create(dir)
            .map_err(|e| format!("cannot create the patch directory {}: {e}", dir.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let dir = dir.canonicalize().map_err(|e| format!("{}: {e}", dir.display()))?;
    // An install of this patch killed half-way left its object (and temporary files):
    // taken out, so that this one gets the same name and leaves nothing behind.
    clean_leftovers(&dir, &meta.patch_sha256);
    let stem: String = meta_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
        .collect();
    let stem = if stem.is_empty() { meta.short_id() } else { stem };
    let taken = |p: &Path| p.exists();
    let name = if taken(&dir.join(meta_file_name(&stem, &meta))) || taken(&dir.join(format!("{stem}.so"))) {
        format!("{stem}-{}", meta.short_id())
    } else {
        stem
    };
    let so = dir.join(format!("{name}.so"));
    // The name lists the targets: a process that maps none of them reads nothing more.
    let installed_meta = dir.join(meta_file_name(&name, &meta));
    write_atomically(&so, &object)?;
    meta.patch_so = so.to_str().ok_or("the patch directory's path is not UTF-8")?.to_string();
    if let Err(e) = write_atomically(&installed_meta, &meta.encode()) {
        let _ = std::fs::remove_file(&so);
        return Err(e);
    }
    // What the runtime will check: refuse now rather than let every process skip it.
    if let Err(e) = read_patch(&installed_meta) {
        let _ = std::fs::remove_file(&installed_meta);
        let _ = std::fs::remove_file(&so);
        return Err(format!("the patch directory {} is not trusted: {e}", dir.display()));
    }
    Ok((installed_meta, false))
}

/// Take the installed copy of the patch out of `dir` (its `.meta`, then its object).
pub fn remove_files(installed_meta: &Path) -> Result<(), String> {
    let meta = read_meta(installed_meta)?;
    std::fs::remove_file(installed_meta).map_err(|e| format!("cannot remove {}: {e}", installed_meta.display()))?;
    let so = Path::new(&meta.patch_so);
    if so.parent() == installed_meta.parent() {
        let _ = std::fs::remove_file(so);
    }
    if let Some(dir) = installed_meta.parent() {
        clean_leftovers(dir, &meta.patch_sha256);
    }
    Ok(())
}

/// `pulp uninstall` of a patch that is not installed: what a killed install or uninstall
/// of it left behind (its object without a `.meta`, temporary files) is taken out.
pub fn remove_leftovers(meta_path: &Path, dir: &Path) -> Result<usize, String> {
    let meta = read_meta(meta_path)?;
    let found = leftovers(dir, &meta.patch_sha256);
    clean_leftovers(dir, &meta.patch_sha256);
    Ok(found.len())
}

/// `pulp-trigger`: next to this program, else on `PATH`.
pub fn trigger_program() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.join("pulp-trigger")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("pulp-trigger"))
}

/// Run `pulp-trigger --all` (with `extra` arguments) on the installed `.meta`; its exit
/// status.
pub fn on_every_process(installed_meta: &Path, revert: bool, extra: &[String]) -> Result<u8, String> {
    let mut cmd = Command::new(trigger_program());
    // No process running the target is no failure: the patch is installed for later ones.
    cmd.args(["--all", "--allow-none"]);
    if revert {
        cmd.arg("--revert");
    }
    cmd.args(extra).arg(installed_meta);
    let status = cmd.status().map_err(|e| format!("cannot run {}: {e}", trigger_program().display()))?;
    Ok(status.code().map_or(1, |c| c as u8))
}
