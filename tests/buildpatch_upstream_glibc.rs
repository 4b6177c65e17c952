//! glibc as a live-patch target: glibc 2.36 built once through pulp-cc (a kept build under
//! `target/kept-builds/glibc-2.36`), a multi-threaded program run on that build (its
//! `elf/ld.so --library-path ...`), and upstream's own fixes turned into patches with
//! `pulp build-patch --incremental`:
//!
//! - CVE-2022-39046 (syslog with large messages, `misc/syslog.c`): every worker's large
//!   messages come out as garbage before the patch, whole once it is applied, garbage
//!   again once reverted. The changed code uses glibc's initial-exec thread-locals
//!   (`errno`), reached through `tp-offset` references;
//! - CVE-2023-4911 (`elf/dl-tunables.c`, linked into ld.so): refused, saying where the
//!   code went and why, for ld.so itself as well as for libc.so.6.
//!
//! Needs gawk and bison (glibc's configure), and the glibc 2.36 tarball from
//! deb.debian.org the first time (then kept beside the build).

#[path = "buildpatch/common.rs"]
mod common;
#[path = "buildpatch/kept.rs"]
mod kept;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{assert_refused, build_patch_incremental, functions_of, recompiled_units, upstream_fix};
use libpulp_rs_tests::{apply, artifacts, require_tool, revert, run, tool, App, CSpec, Work};

const TARBALL: &str = "glibc_2.36.orig.tar.xz";
const TARBALL_URL: &str = "http://deb.debian.org/debian/pool/main/g/glibc/glibc_2.36.orig.tar.xz";
const TARBALL_SHA256: &str = "a543c02070d46ccaf866957efd13f10c924daa74c86a90a0254db09a92a708ee";

/// The libraries only (`lib`), of every subfolder but those the release tarball lacks
/// (`manual`, `po`) or that build no library a program loads (`localedata`, `conform`,
/// `support`, `mathvec`). `sorted-subdirs`, not `subdirs`: glibc rebuilds its version
/// maps forever when the two differ.
const BUILD: &str = "cd build && make -j2 CC=\"$CC\" object-suffixes=.os sorted-subdirs='csu iconv locale iconvdata \
                     assert ctype intl catgets math setjmp signal stdlib stdio-common libio dlfcn nptl rt malloc \
                     string wcsmbs timezone time dirent grp pwd posix io termios resource misc socket sysvipc gmon \
                     gnulib wctype shadow gshadow argp debug crypt nptl_db inet resolv nss hesiod sunrpc nis nscd \
                     login elf' lib";

/// The kept glibc 2.36 build: sources unpacked, configured with pulp-cc, libraries built.
fn glibc() -> PathBuf {
    for t in ["gawk", "bison", "curl", "xz", "sha256sum"] {
        require_tool(t);
    }
    kept::kept_build(
        "glibc-2.36",
        |dir| {
            let tarball = kept::kept_builds().join(TARBALL);
            if !tarball.is_file() {
                let part = tarball.with_extension("part");
                run(tool("curl").args(["-sSfL", "-o"]).arg(&part).arg(TARBALL_URL))
                    .assert_ok(&format!("downloading {TARBALL_URL}"));
                std::fs::rename(&part, &tarball).unwrap();
            }
            let sum = run(tool("sha256sum").arg(&tarball));
            assert!(
                sum.stdout.starts_with(TARBALL_SHA256),
                "{} is not glibc 2.36's tarball: {}",
                tarball.display(),
                sum.stdout
            );
            run(tool("tar").args(["xf"]).arg(&tarball).arg("-C").arg(dir).arg("--strip-components=1"))
                .assert_ok("unpacking glibc");
            std::fs::create_dir_all(dir.join("build")).unwrap();
            // `../configure`, relative, so that the build tree names its sources `..`: the
            // fixed copy build-patch makes must build its own sources, not the kept ones.
            // (Run by `sh`: a relative program of a Command with current_dir is resolved
            // in a platform-specific way.)
            let mut configure = Command::new("sh");
            configure
                .arg("../configure")
                .args(["--prefix=/usr", "--disable-werror"])
                .current_dir(dir.join("build"))
                .env("CC", artifacts().dir.join("pulp-cc"))
                .env("PULP_CC_REAL", "gcc");
            run(&mut configure).assert_ok("glibc's configure");
        },
        BUILD,
    )
}

/// `elf/ld.so --library-path ... exe` of the build, the runtime preloaded. The build
/// names its C library `libc.so`; programs ask for `libc.so.6` (a link is made).
fn on_glibc(glibc: &Path, exe: &Path) -> Command {
    let b = glibc.join("build");
    if std::fs::symlink_metadata(b.join("libc.so.6")).is_err() {
        std::os::unix::fs::symlink("libc.so", b.join("libc.so.6")).unwrap();
    }
    let dirs: Vec<String> = ["", "math", "elf", "dlfcn", "nss", "nis", "rt", "resolv", "crypt", "nptl", "login"]
        .iter()
        .map(|d| b.join(d).display().to_string())
        .collect();
    let mut cmd = Command::new(b.join("elf/ld.so"));
    cmd.arg("--library-path").arg(dirs.join(":")).arg(exe).env("LD_PRELOAD", &artifacts().runtime);
    cmd
}

fn syslog_app(work: &Work) -> PathBuf {
    work.executable("glibc_syslog_app", &CSpec::plain(&["buildpatch/upstream/glibc_syslog_app.c"]).threads())
}

const LOST: &str = "lost lost lost lost";
const INTACT: &str = "intact intact intact intact";

#[test]
fn glibc_cve_2022_39046_is_fixed_in_a_running_process() {
    let glibc = glibc();
    let work = Work::new();
    let libc = glibc.join("build/libc.so");
    let app_exe = syslog_app(&work);
    let mut app = App::start_command(on_glibc(&glibc, &app_exe), "glibc_syslog_app");
    let pid = app.pid();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(
        maps.contains(&glibc.join("build").display().to_string()),
        "the program does not run on the build:\n{maps}"
    );
    assert_eq!(app.ask("sync"), LOST, "the bug shows in every worker before the patch");

    let fix = upstream_fix("glibc-CVE-2022-39046.patch");
    let out = build_patch_incremental(work.path(), &glibc, &fix, BUILD, "build/libc.so", "CVE-2022-39046");
    out.assert_ok("pulp build-patch --incremental (glibc syslog)");
    println!("{}", out.stdout);
    assert!(out.stdout.contains("__vsyslog_internal (misc/syslog.c)"), "{}", out.stdout);
    assert_eq!(recompiled_units(&work.path().join("bp")), ["build/misc/syslog.os"]);
    let dsc = std::fs::read_to_string(work.path().join("out/fix.dsc")).unwrap();
    assert!(dsc.lines().any(|l| l.starts_with("#%__libc_errno@") && l.ends_with(" tp-offset")), "{dsc}");
    let held = functions_of(&work.path().join("out/fix.so"));
    println!("the patch object holds {held:?}");
    let (patch, lib) =
        (std::fs::metadata(work.path().join("out/fix.so")).unwrap().len(), std::fs::metadata(&libc).unwrap().len());
    println!("patch object: {patch} bytes; libc.so: {lib} bytes");

    // Switched in every thread at once: a gated transition of libc does not work (the
    // runtime's gate path calls into libc, whose entries are gated: docs/build-patch.md).
    assert!(out.stdout.contains("warning: the patch is packed %immediate"), "{}", out.stdout);
    assert!(dsc.lines().any(|l| l == "%immediate"), "{dsc}");
    let meta = work.path().join("out/fix.meta");
    apply(pid, &meta).assert_ok("pulp-trigger (glibc syslog fix)");
    assert_eq!(app.ask("sync"), INTACT, "every worker's large messages come through once patched");
    revert(pid, &meta).assert_ok("pulp-trigger --revert");
    assert_eq!(app.ask("sync"), LOST, "the bug is back after the revert");
    app.assert_alive();
}

#[test]
fn a_fix_in_ld_so_is_refused_saying_so() {
    // The dynamic linker as the target: refused before anything is built.
    let work = Work::new();
    let glibc = glibc();
    let fix = upstream_fix("glibc-CVE-2023-4911.patch");
    let out = build_patch_incremental(work.path(), &glibc, &fix, BUILD, "build/elf/ld.so", "CVE-2023-4911");
    assert_refused(&out, &["is the dynamic linker", "ld-linux-x86-64.so.2", "start-up"]);
    assert!(!work.path().join("bp/after").exists(), "nothing was built for a refused target");

    // libc.so.6 as the target: the fix changes code of ld.so only, and the message says
    // where the changed file went.
    let out = build_patch_incremental(work.path(), &glibc, &fix, BUILD, "build/libc.so", "CVE-2023-4911");
    assert_refused(
        &out,
        &[
            "the fix changes only code of the dynamic linker (ld.so)",
            "elf/dl-tunables.c is compiled into build/elf/dl-tunables.os",
            "build/elf/ld.so (the dynamic linker: not live-patchable)",
        ],
    );
    assert!(!work.path().join("out/fix.meta").exists());
}
