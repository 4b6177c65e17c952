//! What the process's environment may change, and whose files the runtime trusts.
//!
//! A program the kernel started in *secure mode* (`getauxval(AT_SECURE)`: a setuid or
//! setgid program, one with file capabilities, or one an LSM marked so) runs with more
//! privilege than the user who started it, and that user wrote its environment. As
//! glibc's `secure_getenv` does, the runtime then ignores every `PULP_*` variable (the
//! patch directory stays the default, no exclusion applies) and trusts only files owned
//! by root in folders owned by root: a user can neither load a patch of their own into a
//! privileged program nor switch off a fix the administrator installed.

/// Whether the process runs in secure mode.
pub fn secure() -> bool {
    // SAFETY: getauxval only reads the auxiliary vector; 0 for an absent entry.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// The variable `name`, unless the process runs in secure mode.
pub fn var(name: &str) -> Option<std::ffi::OsString> {
    if secure() {
        None
    } else {
        std::env::var_os(name)
    }
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
