//! What the process's environment may change, and whose files the runtime trusts.
//!
//! A program the kernel started in *secure mode* (`getauxval(AT_SECURE)`: a setuid or
//! setgid program, one with file capabilities, or one an LSM marked so) runs with more
//! privilege than the user who started it, and that user wrote its environment. As
//! glibc's `secure_getenv` does (it is what this reads through), the runtime then ignores
//! every `PULP_*` variable (the patch directory stays the default, no exclusion applies)
//! and trusts only files owned by root in folders owned by root: a user can neither load
//! a patch of their own into a privileged program nor switch off a fix the
//! administrator installed.

use std::ffi::CStr;

extern "C" {
    /// glibc's `getenv` that answers NULL in secure mode (not in the `libc` crate).
    fn secure_getenv(name: *const libc::c_char) -> *mut libc::c_char;
}

/// Whether the process runs in secure mode.
pub fn secure() -> bool {
    // SAFETY: getauxval only reads the auxiliary vector; 0 for an absent entry.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// The variable `name`, unless the process runs in secure mode. No allocation: the
/// constructor reads its settings this way (and keeps it with its own code in
/// `.text.pulp_start`, `runtime/build.rs`).
#[link_section = ".text.pulp_start"]
pub fn var(name: &CStr) -> Option<&'static CStr> {
    // SAFETY: a valid C string; secure_getenv returns NULL or a pointer into the
    // environment, which the runtime never changes (nor, by contract, does a program
    // while other code may read it).
    let p = unsafe { secure_getenv(name.as_ptr()) };
    // SAFETY: a non-NULL result is a NUL-terminated string of the environment.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) })
}

/// The owners whose files (and folders) the runtime trusts: root, and the effective user
/// unless the process runs in secure mode.
pub fn trusted_owners() -> Vec<u32> {
    // SAFETY: geteuid has no arguments and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if secure() || euid == 0 {
        vec![0]
    } else {
        vec![0, euid]
    }
}
