//! Reading a file so that the bytes returned are the bytes of a file nobody untrusted
//! could have changed: shared by the tools (the `.meta` and the patch object they hand to
//! a process) and the runtime (the patches of its patch directory).
//!
//! A path is trusted only if nobody but the trusted owners (root, the target's owner)
//! could have changed what it leads to: every folder on the way, and the file itself, is
//! owned by one of them and writable by nobody else (as OpenSSH's `StrictModes`; a
//! sticky folder owned by root, like `/tmp`, counts as safe, since others cannot replace
//! what they do not own in it). The walk opens each component relative to the folder
//! before it, without following symbolic links, so the checks are made on the very
//! objects opened; the file is then read from that one descriptor. Symbolic links are
//! resolved before the walk (`canonicalize`); if the path changes between the two, the
//! walk meets a link and refuses.

use std::ffi::CString;
use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// Largest file read.
pub const MAX_FILE: u64 = 256 << 20;
/// Largest `patch.meta` read (one of 100,000 functions takes a few MiB).
pub const MAX_META: u64 = 16 << 20;

/// Why a file was not read.
#[derive(Debug)]
pub enum TrustError {
    /// It, or a folder on its way, may have been changed by someone untrusted.
    Insecure(String),
    /// It cannot be found or read.
    Missing(String),
}

impl fmt::Display for TrustError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Insecure(m) | Self::Missing(m) => f.write_str(m),
        }
    }
}

fn stat(fd: &OwnedFd) -> std::io::Result<libc::stat> {
    // SAFETY: stat is plain data; all-zero is a valid value, filled by fstat below.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on a descriptor we own, writing into `st`.
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

/// Check owner and mode of `st`, which is `what` (for messages).
fn check_owner(st: &libc::stat, owners: &[u32], what: &str) -> Result<(), TrustError> {
    if !owners.contains(&st.st_uid) {
        let allowed: Vec<String> = owners.iter().map(|u| format!("uid {u}")).collect();
        return Err(TrustError::Insecure(format!(
            "{what} is owned by uid {}, not by {}",
            st.st_uid,
            allowed.join(" or ")
        )));
    }
    let mode = st.st_mode & 0o7777;
    let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    let sticky_root = is_dir && mode & 0o1000 != 0 && st.st_uid == 0;
    if mode & 0o022 != 0 && !sticky_root {
        let by = if mode & 0o002 != 0 { "others" } else { "its group" };
        return Err(TrustError::Insecure(format!("{what} is writable by {by} (mode {mode:o})")));
    }
    Ok(())
}

/// Read the file at `path` (absolute) through a walk that checks every folder and the
/// file against `owners`; a regular file only, opened without blocking (a FIFO or a
/// device is refused, never waited on). `what` names the file in messages.
pub fn read_trusted(path: &Path, owners: &[u32], what: &str) -> Result<Vec<u8>, TrustError> {
    read_trusted_at_most(path, owners, what, MAX_FILE)
}

/// [`read_trusted`] for a `patch.meta`: at most [`MAX_META`] bytes. The one reader of
/// `.meta` files for the tools and the runtime.
pub fn read_trusted_meta(path: &Path, owners: &[u32]) -> Result<Vec<u8>, TrustError> {
    read_trusted_at_most(path, owners, "the patch.meta", MAX_META)
}

/// Read a `patch.meta` to look at it (`pulp dump`, `pulp check`), trusted or not, with the
/// same checks of its kind: a regular file, opened without blocking, at most
/// [`MAX_META`] bytes. Messages do not repeat the path.
pub fn read_meta_file(path: &Path) -> Result<Vec<u8>, TrustError> {
    let fd = open_at(None, path.as_os_str(), libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY)
        .or_else(|e| {
            // Following a symbolic link is fine here: nothing is trusted because of it.
            if e.raw_os_error() == Some(libc::ELOOP) {
                std::fs::File::open(path).map(OwnedFd::from)
            } else {
                Err(e)
            }
        })
        .map_err(|e| TrustError::Missing(format!("cannot read: {e}")))?;
    let st = stat(&fd).map_err(|e| TrustError::Missing(format!("cannot examine: {e}")))?;
    read_opened(fd, &st, "the patch.meta", MAX_META)
}

/// The content of the file open as `fd` (whose status is `st`): a regular file of at
/// most `max` bytes.
fn read_opened(fd: OwnedFd, st: &libc::stat, what: &str, max: u64) -> Result<Vec<u8>, TrustError> {
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(TrustError::Insecure(format!("{what} is not a regular file")));
    }
    if st.st_size as u64 > max {
        return Err(TrustError::Insecure(format!("{what} is larger than {} MiB", max >> 20)));
    }
    let mut file = std::fs::File::from(fd);
    let mut bytes = Vec::with_capacity(st.st_size as usize);
    use std::io::Read;
    (&mut file)
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| TrustError::Missing(format!("cannot read {what}: {e}")))?;
    if bytes.len() as u64 > max {
        return Err(TrustError::Insecure(format!("{what} grew beyond {} MiB while it was read", max >> 20)));
    }
    Ok(bytes)
}

fn read_trusted_at_most(path: &Path, owners: &[u32], what: &str, max: u64) -> Result<Vec<u8>, TrustError> {
    if !path.is_absolute() {
        return Err(TrustError::Insecure(format!("{what}: its path is not absolute")));
    }
    let canon = path.canonicalize().map_err(|e| TrustError::Missing(format!("{what}: {e}")))?;
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
            _ => return Err(TrustError::Insecure(format!("{what}: its path is not canonical"))),
        }
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => TrustError::Insecure(format!(
                "{} changed while it was checked (a symbolic link appeared)",
                at.display()
            )),
            _ => TrustError::Missing(format!("{}: {e}", at.display())),
        })?;
        let st = stat(&fd).map_err(|e| TrustError::Missing(format!("cannot examine {}: {e}", at.display())))?;
        if last {
            if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                return Err(TrustError::Insecure(format!("{what} is not a regular file")));
            }
            check_owner(&st, owners, what)?;
            return read_opened(fd, &st, what, max);
        }
        check_owner(&st, owners, &format!("folder {}", at.display()))?;
        dir = Some(fd);
    }
    Err(TrustError::Insecure(format!("{what} names a folder")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn me() -> u32 {
        // SAFETY: geteuid has no arguments and cannot fail.
        unsafe { libc::geteuid() }
    }

    fn dir() -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("pulp-trust-{}-{:?}", std::process::id(), std::thread::current().id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        d
    }

    #[test]
    fn reads_a_safe_file_and_refuses_unsafe_ones() {
        let d = dir();
        let owners = [0, me()];
        let f = d.join("fix.so");
        std::fs::write(&f, b"bytes").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_trusted(&f, &owners, "the patch object").unwrap(), b"bytes");

        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o664)).unwrap();
        let e = read_trusted(&f, &owners, "the patch object").unwrap_err().to_string();
        assert!(e.contains("writable by its group"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();

        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = read_trusted(&f, &owners, "the patch object").unwrap_err().to_string();
        assert!(e.contains(&format!("folder {}", d.display())) && e.contains("writable by others"), "{e}");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();

        let e = read_trusted(&f, &[12345], "the patch object").unwrap_err().to_string();
        assert!(e.contains("owned by uid"), "{e}");

        let fifo = d.join("fifo");
        let c = CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_trusted(&fifo, &owners, "the patch object").unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let e = read_trusted(&d, &owners, "the patch object").unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        assert!(matches!(read_trusted(&d.join("none"), &owners, "x"), Err(TrustError::Missing(_))));
        assert!(matches!(read_trusted(Path::new("rel.so"), &owners, "x"), Err(TrustError::Insecure(_))));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
