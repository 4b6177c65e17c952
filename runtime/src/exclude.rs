//! Who may be patched: an operator excludes processes through the environment the
//! runtime reads when it loads (as libpulp's `LIBPULP_DISABLE_ON_*`):
//!
//! - `PULP_DISABLE_ON_PATH`: `:`-separated glob patterns of executable paths;
//! - `PULP_DISABLE_ON_USERS`: `,`-separated user names or ids (real or effective);
//! - `PULP_DISABLE_ON_GROUPS`: `,`-separated group names or ids (real, effective or
//!   supplementary).
//!
//! An excluded process refuses every request, saying why (`pulp set-patchable -p PID on`
//! lifts it), and applies nothing from the patch directory. A process in secure mode (a
//! setuid or file-capability program) ignores these variables: the user who set them
//! cannot switch off a fix in a program that runs with more privilege than theirs
//! (`crate::environ`).

use crate::environ::var;
use std::ffi::{CStr, CString};

/// Why this process is excluded, if it is. Every process runs this at start: with none
/// of the variables set it reads three and returns (kept in `.text.pulp_start` with the
/// rest of the start path, `runtime/build.rs`).
#[link_section = ".text.pulp_start"]
pub fn reason() -> Option<String> {
    let path = var(c"PULP_DISABLE_ON_PATH");
    let users = var(c"PULP_DISABLE_ON_USERS");
    let groups = var(c"PULP_DISABLE_ON_GROUPS");
    if path.is_none() && users.is_none() && groups.is_none() {
        return None;
    }
    excluded(path, users, groups)
}

/// [`reason`] when at least one of the variables is set.
#[inline(never)]
fn excluded(path: Option<&CStr>, users: Option<&CStr>, groups: Option<&CStr>) -> Option<String> {
    let text = |v: Option<&CStr>| v.map(|v| v.to_string_lossy().into_owned());
    if let Some(globs) = text(path) {
        let exe = std::fs::read_link("/proc/self/exe").ok()?.to_string_lossy().into_owned();
        for glob in globs.split(':').filter(|g| !g.is_empty()) {
            if matches(glob, &exe) {
                return Some(format!("excluded by PULP_DISABLE_ON_PATH ({exe} matches {glob})"));
            }
        }
    }
    if let Some(users) = text(users) {
        // SAFETY: getuid/geteuid have no arguments and cannot fail.
        let ids = unsafe { [libc::getuid(), libc::geteuid()] };
        for u in users.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            if user_id(u).is_some_and(|id| ids.contains(&id)) {
                return Some(format!("excluded by PULP_DISABLE_ON_USERS (user {u})"));
            }
        }
    }
    if let Some(groups) = text(groups) {
        let ids = my_groups();
        for g in groups.split(',').map(str::trim).filter(|g| !g.is_empty()) {
            if group_id(g).is_some_and(|id| ids.contains(&id)) {
                return Some(format!("excluded by PULP_DISABLE_ON_GROUPS (group {g})"));
            }
        }
    }
    None
}

fn matches(glob: &str, path: &str) -> bool {
    let (Ok(g), Ok(p)) = (CString::new(glob), CString::new(path)) else { return false };
    // SAFETY: two valid C strings; fnmatch only reads them.
    unsafe { libc::fnmatch(g.as_ptr(), p.as_ptr(), 0) == 0 }
}

/// A user id from a number or a name (the name looked up with `getpwnam_r`).
fn user_id(u: &str) -> Option<u32> {
    if let Ok(id) = u.parse() {
        return Some(id);
    }
    let name = CString::new(u).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 << 10];
    // SAFETY: passwd is plain data, filled by getpwnam_r.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call; `buf` holds the strings it returns.
    let rc = unsafe { libc::getpwnam_r(name.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
    (rc == 0 && !out.is_null()).then_some(pw.pw_uid)
}

/// A group id from a number or a name (`getgrnam_r`).
fn group_id(g: &str) -> Option<u32> {
    if let Ok(id) = g.parse() {
        return Some(id);
    }
    let name = CString::new(g).ok()?;
    let mut buf = vec![0 as libc::c_char; 64 << 10];
    // SAFETY: group is plain data, filled by getgrnam_r.
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call; `buf` holds what it returns.
    let rc = unsafe { libc::getgrnam_r(name.as_ptr(), &mut gr, buf.as_mut_ptr(), buf.len(), &mut out) };
    (rc == 0 && !out.is_null()).then_some(gr.gr_gid)
}

/// The real, effective and supplementary group ids of the process.
fn my_groups() -> Vec<u32> {
    // SAFETY: getgid/getegid have no arguments and cannot fail.
    let mut ids = unsafe { vec![libc::getgid(), libc::getegid()] };
    let mut list = vec![0 as libc::gid_t; 256];
    // SAFETY: getgroups writes at most `list.len()` ids into `list`.
    let n = unsafe { libc::getgroups(list.len() as libc::c_int, list.as_mut_ptr()) };
    if n > 0 {
        ids.extend_from_slice(&list[..n as usize]);
    }
    ids
}
