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
use pulp_meta::PatchMeta;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// Largest patch object or `.meta` read.
const MAX_FILE: u64 = 256 << 20;

/// Why a file is not trusted (the message names the path).
fn insecure(path: &Path, reason: String) -> TriggerError {
    TriggerError::PatchInsecure { path: path.display().to_string(), reason }
}

fn stat(fd: &OwnedFd) -> std::io::Result<libc::stat> {
    // SAFETY: stat is plain data, filled by fstat on a descriptor we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

fn open_at(dir: Option<&OwnedFd>, name: &std::ffi::OsStr, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(name.as_bytes()).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let dirfd = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: a valid C string and flags; the result is checked.
    let fd = unsafe { libc::openat(dirfd, c.as_ptr(), flags | libc::O_CLOEXEC | libc::O_NOFOLLOW) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The owners a file or folder may have, and whether one passes.
struct Owners<'a>(&'a [u32]);

impl Owners<'_> {
    fn check(&self, path: &Path, st: &libc::stat, what: &str) -> Result<(), TriggerError> {
        if !self.0.contains(&st.st_uid) {
            let allowed: Vec<String> = self.0.iter().map(|u| format!("uid {u}")).collect();
            return Err(insecure(
                path,
                format!("{what} is owned by uid {}, not by {}", st.st_uid, allowed.join(" or ")),
            ));
        }
        let mode = st.st_mode & 0o7777;
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let sticky_root = is_dir && mode & 0o1000 != 0 && st.st_uid == 0;
        if mode & 0o022 != 0 && !sticky_root {
            return Err(insecure(
                path,
                format!(
                    "{what} is writable by {} (mode {mode:o})",
                    if mode & 0o002 != 0 { "others" } else { "its group" }
                ),
            ));
        }
        Ok(())
    }
}

/// Read the file at `path` (absolute, as canonical as the caller has it) through a walk
/// that checks every folder and the file against `owners`; a regular file only, opened
/// without blocking (a FIFO or a device is refused, never waited on).
pub fn read_trusted(path: &Path, owners: &[u32], what: &str) -> Result<Vec<u8>, TriggerError> {
    let owners = Owners(owners);
    if !path.is_absolute() {
        return Err(insecure(path, "its path is not absolute".into()));
    }
    // Symbolic links on the way are resolved first (the canonical path is then walked
    // without following any, and the walk refuses if the path changed meanwhile).
    let canon = path
        .canonicalize()
        .map_err(|e| TriggerError::PatchMissing { path: path.display().to_string(), reason: e.to_string() })?;
    let mut dir: Option<OwnedFd> = None;
    let mut at = PathBuf::from("/");
    let comps: Vec<Component> = canon.components().collect();
    for (i, comp) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        let fd = match comp {
            Component::RootDir => open_at(None, "/".as_ref(), libc::O_PATH | libc::O_DIRECTORY),
            Component::Normal(name) => {
                at.push(name);
                let flags = if last {
                    libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY
                } else {
                    libc::O_PATH | libc::O_DIRECTORY
                };
                open_at(dir.as_ref(), name, flags)
            }
            _ => return Err(insecure(path, "its path is not canonical".into())),
        }
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) || e.raw_os_error() == Some(libc::ENOTDIR) {
                insecure(path, format!("{} changed while it was checked (a symbolic link appeared)", at.display()))
            } else {
                TriggerError::PatchMissing {
                    path: path.display().to_string(),
                    reason: format!("{}: {e}", at.display()),
                }
            }
        })?;
        let st = stat(&fd).map_err(|e| insecure(path, format!("cannot examine {}: {e}", at.display())))?;
        if last {
            if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                return Err(insecure(path, format!("{what} is not a regular file")));
            }
            owners.check(path, &st, what)?;
            if st.st_size as u64 > MAX_FILE {
                return Err(insecure(path, format!("{what} is larger than {} MiB", MAX_FILE >> 20)));
            }
            let mut file = std::fs::File::from(fd);
            let mut bytes = Vec::with_capacity(st.st_size as usize);
            use std::io::Read;
            (&mut file)
                .take(MAX_FILE + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| TriggerError::ReadFile { path: path.into(), source: e })?;
            return Ok(bytes);
        }
        owners.check(path, &st, &format!("folder {}", at.display()))?;
        dir = Some(fd);
    }
    Err(insecure(path, "it names a folder".into()))
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
    let mut owners = vec![0];
    if let Ok(md) = std::fs::metadata(format!("/proc/{pid}")) {
        owners.push(md.uid());
    }
    // SAFETY: geteuid has no arguments and cannot fail.
    owners.push(unsafe { libc::geteuid() });
    owners.sort_unstable();
    owners.dedup();
    owners
}

/// The GNU build-id of an ELF object held in memory.
fn build_id_of(bytes: &[u8]) -> Option<Vec<u8>> {
    use object::Object;
    object::File::parse(bytes).ok()?.build_id().ok()?.map(<[u8]>::to_vec)
}
