//! Reading the files a patch comes from, so that the bytes that run are the bytes that
//! were checked.
//!
//! A path is trusted only if nobody but root or the target's owner could have changed
//! what it leads to: every folder on the way, and the file itself, is owned by one of
//! them and writable by nobody else (as OpenSSH's `StrictModes`; a sticky folder owned by
//! root, like `/tmp`, counts as safe, since others cannot replace what they do not own
//! in it). The walk opens each component relative to the folder before it, without
//! following symbolic links, so the checks are made on the very objects opened; the file
//! is then read from that one descriptor. The patch object's bytes must hash (SHA-256) to
//! what `pulp pack` recorded: a build-id names a build, it does not vouch for content.
//! Those exact bytes are what the runtime loads (it never opens a path itself).

use crate::error::TriggerError;
use pulp_meta::format::hex;
use pulp_meta::trust::TrustError;
use pulp_meta::PatchMeta;
use std::path::Path;

/// Why a file is not trusted (the message names the path).
fn insecure(path: &Path, reason: String) -> TriggerError {
    TriggerError::PatchInsecure { path: path.display().to_string(), reason }
}

/// Read the file at `path` (absolute) through a walk that checks every folder and the
/// file against `owners` (`pulp_meta::trust`); a regular file only, never waited on.
pub fn read_trusted(path: &Path, owners: &[u32], what: &str) -> Result<Vec<u8>, TriggerError> {
    pulp_meta::trust::read_trusted(path, owners, what).map_err(|e| trust_error(path, e))
}

/// [`read_trusted`] for a `patch.meta`, with the runtime's size limit for it.
pub fn read_trusted_meta(path: &Path, owners: &[u32]) -> Result<Vec<u8>, TriggerError> {
    pulp_meta::trust::read_trusted_meta(path, owners).map_err(|e| trust_error(path, e))
}

fn trust_error(path: &Path, e: TrustError) -> TriggerError {
    match e {
        TrustError::Insecure(reason) => insecure(path, reason),
        TrustError::Missing(reason) => TriggerError::PatchMissing { path: path.display().to_string(), reason },
    }
}

/// The patch object of `meta`, read and checked: a trusted path, the content hash `pulp
/// pack` recorded (and, for a friendlier message when it differs, the build-id).
pub fn patch_object(meta: &PatchMeta, owners: &[u32]) -> Result<Vec<u8>, TriggerError> {
    let path = Path::new(&meta.patch_so);
    let bytes = read_trusted(path, owners, "the patch object")?;
    let digest = pulp_meta::sha256::sha256(&bytes);
    if digest != meta.patch_sha256 {
        let build_id = build_id_of(&bytes).unwrap_or_default();
        return Err(if build_id != meta.patch_build_id {
            TriggerError::PatchBuildId {
                path: meta.patch_so.clone(),
                found: hex(&build_id),
                expected: hex(&meta.patch_build_id),
            }
        } else {
            insecure(
                path,
                format!(
                    "its content (SHA-256 {}) is not what `pulp pack` recorded ({}), though its build-id is the same: \
                     it is another file passing for the patch",
                    hex(&digest),
                    hex(&meta.patch_sha256)
                ),
            )
        });
    }
    Ok(bytes)
}

/// Owners trusted for files a patch of process `pid` comes from: root, the process's
/// owner, and the user running this tool.
pub fn trusted_owners(pid: i32) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let mut owners = tool_owners();
    if let Ok(md) = std::fs::metadata(format!("/proc/{pid}")) {
        owners.push(md.uid());
    }
    owners.sort_unstable();
    owners.dedup();
    owners
}

/// Owners trusted when no one process is concerned: root and the user running this tool.
pub fn tool_owners() -> Vec<u32> {
    // SAFETY: geteuid has no arguments and cannot fail.
    let me = unsafe { libc::geteuid() };
    let mut owners = vec![0, me];
    owners.dedup();
    owners
}

/// Write `data` to `path` with `mode` through a temporary file in the same folder, so that
/// a reader never sees half a file (a `.meta`, a patch object).
pub fn write_atomically(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    // A leftover of an earlier run with this process id is replaced, never followed.
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The GNU build-id of an ELF object held in memory.
fn build_id_of(bytes: &[u8]) -> Option<Vec<u8>> {
    use object::Object;
    object::File::parse(bytes).ok()?.build_id().ok()?.map(<[u8]>::to_vec)
}
