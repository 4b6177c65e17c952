//! A real C library not written for this project, made live-patchable: zlib, from the
//! sources bundled in the `libz-sys` crate, compiled and linked with `pulp-cc` as a
//! Makefile would, checked with `pulp livepatchable`, then patched in a running program
//! (`crc32` and `zlibVersion` replaced) and reverted.
//!
//! The sources are found through `cargo metadata` (libz-sys is a dev-dependency that is
//! never built); when that fails the test fails.

use std::path::Path;
use std::process::Command;

use libpulp_rs_tests::{apply, artifacts, crate_sources, revert, run, App, Work};

/// zlib's `Makefile.in` objects (`OBJZ` and `OBJG`).
const SOURCES: &[&str] = &[
    "adler32.c",
    "crc32.c",
    "deflate.c",
    "infback.c",
    "inffast.c",
    "inflate.c",
    "inftrees.c",
    "trees.c",
    "zutil.c",
    "compress.c",
    "uncompr.c",
    "gzclose.c",
    "gzlib.c",
    "gzread.c",
    "gzwrite.c",
];

const APP: &str = r#"
/* Commands on stdin, one reply line each:
 *   crc TEXT   -> "crc32=XXXXXXXX" of TEXT
 *   zip TEXT   -> "zip N -> M ok": compress2 then uncompress, round trip checked
 *   version    -> zlibVersion()  */
#include <stdio.h>
#include <string.h>
#include "zlib.h"

int main(void)
{
    char line[4096];
    printf("ready\n");
    fflush(stdout);
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        if (!strncmp(line, "crc ", 4)) {
            const char *s = line + 4;
            printf("crc32=%08lx\n", crc32(0L, (const Bytef *)s, (uInt)strlen(s)));
        } else if (!strncmp(line, "zip ", 4)) {
            const char *s = line + 4;
            uLong n = strlen(s);
            Bytef packed[8192], back[4096];
            uLongf m = sizeof packed, k = sizeof back;
            int ok = compress2(packed, &m, (const Bytef *)s, n, 9) == Z_OK
                  && uncompress(back, &k, packed, m) == Z_OK && k == n && !memcmp(back, s, n);
            printf("zip %lu -> %lu %s\n", n, (unsigned long)m, ok ? "ok" : "BROKEN");
        } else if (!strcmp(line, "version")) {
            printf("%s\n", zlibVersion());
        } else if (!strcmp(line, "quit")) {
            return 0;
        } else {
            printf("unknown command\n");
        }
        fflush(stdout);
    }
    return 0;
}
"#;

/// The live patch: new versions of two zlib functions. `crc32_pulp` may not call
/// `crc32`, which now leads back to it; it calls `crc32_z`, which is not replaced.
const FIX: &str = r#"
#include "zlib.h"

uLong crc32_pulp(uLong crc, const Bytef *buf, uInt len)
{
    return crc32_z(crc, buf, len) ^ 0xffffffffUL;
}

const char *zlibVersion_pulp(void)
{
    return ZLIB_VERSION "-pulp";
}
"#;

/// `pulp-cc ARGS` in `dir`, asserting success.
fn pulp_cc(dir: &Path, args: &[&str]) {
    let pulp_cc = artifacts().dir.join("pulp-cc");
    assert!(pulp_cc.exists(), "{} is missing: run `cargo build --release --workspace` first", pulp_cc.display());
    let mut cmd = Command::new(&pulp_cc);
    cmd.args(args).current_dir(dir).env_remove("PULP_CC_DISABLE");
    run(&mut cmd).assert_ok("pulp-cc");
}

#[test]
fn zlib_is_built_patched_and_reverted() {
    let zlib = crate_sources("libz-sys", "src/zlib");
    let work = Work::new();
    let w = work.path();
    let inc = format!("-I{}", zlib.display());

    // As `CC=pulp-cc make` would: compile each source to an object, then link.
    let mut objects = Vec::new();
    for src in SOURCES {
        let obj = format!("{}.o", src.trim_end_matches(".c"));
        let path = zlib.join(src);
        let args = ["-O2", "-fPIC", "-DSTDC", "-D_LARGEFILE64_SOURCE", "-DHAVE_UNISTD_H", "-DHAVE_STDARG_H", &inc];
        pulp_cc(w, &[&args[..], &["-c", path.to_str().unwrap(), "-o", &obj]].concat());
        objects.push(obj);
    }
    let objs: Vec<&str> = objects.iter().map(String::as_str).collect();
    pulp_cc(w, &[&["-shared", "-o", "libz.so", "-Wl,--build-id=sha1"], &objs[..]].concat());
    let lib = w.join("libz.so");

    // Every exported zlib function can be patched.
    let check = run(Command::new(&artifacts().pulp).arg("livepatchable").arg(&lib));
    check.assert_ok("pulp livepatchable libz.so");
    assert!(check.stdout.contains("live-patchable: yes"), "{check:#?}");
    let crc_line = check.stdout.lines().find(|l| l.trim_start().starts_with("crc32 ")).expect("crc32 listed");
    assert!(crc_line.contains("nop-pad (66 90)") && crc_line.ends_with("yes"), "{crc_line}");

    // The program and the patch: ordinary objects, linked to this libz.so.
    std::fs::write(w.join("zlib_app.c"), APP).unwrap();
    std::fs::write(w.join("zlib_fix.c"), FIX).unwrap();
    let rpath = format!("-Wl,-rpath,{}", w.display());
    pulp_cc(w, &["-O2", &inc, "zlib_app.c", "-o", "zlib_app", "-L.", "-lz", &rpath, "-Wl,--build-id=sha1"]);
    let fix_args =
        ["-O2", "-fPIC", "-shared", &inc, "zlib_fix.c", "-o", "libz_fix.so", "-L.", "-lz", "-Wl,--build-id=sha1"];
    let out =
        run(Command::new(artifacts().dir.join("pulp-cc")).args(fix_args).current_dir(w).env("PULP_CC_DISABLE", "1"));
    out.assert_ok("building the patch");
    let fix = w.join("libz_fix.so");
    let meta = work.patch("zlib", &fix, &[(&lib, &[("crc32", "crc32_pulp"), ("zlibVersion", "zlibVersion_pulp")])]);

    let mut app = App::start(&w.join("zlib_app"));
    let pid = app.pid();
    let version = app.ask("version");
    assert!(version.starts_with("1."), "zlibVersion: {version}");
    assert_eq!(app.ask("crc hello"), "crc32=3610a686");
    let zipped = app.ask("zip hello hello hello hello hello hello");
    assert!(zipped.ends_with(" ok"), "{zipped}");

    apply(pid, &meta).assert_ok("pulp-trigger");
    assert_eq!(app.ask("version"), format!("{version}-pulp"));
    assert_eq!(app.ask("crc hello"), "crc32=c9ef5979");
    // The rest of zlib is untouched.
    assert_eq!(app.ask("zip hello hello hello hello hello hello"), zipped);

    revert(pid, &meta).assert_ok("pulp-trigger --revert");
    assert_eq!(app.ask("version"), version);
    assert_eq!(app.ask("crc hello"), "crc32=3610a686");
    app.assert_alive();
}
