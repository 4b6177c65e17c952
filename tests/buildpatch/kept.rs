//! Kept builds: a source tree built once through pulp-cc in build-patch mode and cached
//! under `target/kept-builds/NAME`, for `pulp build-patch --incremental` (its records in
//! `NAME/.pulp-records`, side compiles recorded, not run). Long builds (OpenSSL, glibc)
//! then cost one build per `target/`, not two per test.
//!
//! Parallel tests wait on `target/kept-builds/NAME.lock` (`flock`); `NAME.done` holds the
//! build command of a finished build (another command builds again). Remove
//! `target/kept-builds/NAME*` to force a rebuild (a newer pulp-cc, say).

#![allow(dead_code)]

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use libpulp_rs_tests::{artifacts, run};

/// `target/kept-builds`.
pub fn kept_builds() -> PathBuf {
    artifacts().dir.parent().expect("target/release has a parent").join("kept-builds")
}

/// The tree `target/kept-builds/NAME`: made by `prepare` (given the empty folder) and
/// built with `sh -c BUILD` in it, with `CC=pulp-cc`, `CXX=pulp-c++`, `PULP_CC_REAL=gcc`,
/// `PULP_CXX_REAL=g++` and the build-patch records in `.pulp-records`; or the one a
/// previous run built with the same command.
pub fn kept_build(name: &str, prepare: impl FnOnce(&Path), build: &str) -> PathBuf {
    let base = kept_builds();
    std::fs::create_dir_all(base.join("bin")).unwrap();
    let lock = std::fs::File::create(base.join(format!("{name}.lock"))).unwrap();
    // SAFETY: flock on a descriptor this function owns; it is released when `lock` is
    // dropped (closed) at the end of the function.
    let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock {name}.lock: {}", std::io::Error::last_os_error());
    let dir = base.join(name);
    let done = base.join(format!("{name}.done"));
    if std::fs::read_to_string(&done).is_ok_and(|d| d.lines().next() == Some(build)) && dir.is_dir() {
        println!("kept build {} (built before: {})", dir.display(), std::fs::read_to_string(&done).unwrap().trim());
        return dir;
    }
    let _ = std::fs::remove_file(&done);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    prepare(&dir);
    let cxx = base.join("bin/pulp-c++");
    if !cxx.exists() {
        std::os::unix::fs::symlink(artifacts().dir.join("pulp-cc"), &cxx).unwrap();
    }
    let start = Instant::now();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(build)
        .current_dir(&dir)
        .env("CC", artifacts().dir.join("pulp-cc"))
        .env("CXX", &cxx)
        .env("PULP_CC_REAL", "gcc")
        .env("PULP_CXX_REAL", "g++")
        .env("PULP_BUILDPATCH_DIR", dir.join(".pulp-records"))
        .env("PULP_BUILDPATCH_ROOT", &dir)
        .env("PULP_BUILDPATCH_MAP", &dir)
        .env("PULP_BUILDPATCH_RECORD_ONLY", "1");
    run(&mut cmd).assert_ok(&format!("the kept build of {name}"));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let took =
        format!("{:.0} s, load average {}", start.elapsed().as_secs_f64(), load.split(' ').next().unwrap_or("?"));
    println!("kept build {} built in {took}", dir.display());
    std::fs::write(&done, format!("{build}\n{took}\n")).unwrap();
    dir
}
