//! A real OpenSSL CVE fix as a live patch: CVE-2024-0727 (tests/upstream/), in OpenSSL
//! 3.0.8 from the openssl-src crate, built shared through pulp-cc once per `target/`
//! (tests/buildpatch/kept.rs; about 5 minutes on 2 cores) and patched with
//! `pulp build-patch --incremental`, which rebuilds only the four files of the fix.
//! A program with 4 worker threads that parse PKCS#12 files in a loop through the patched
//! functions shows the crash in every thread, the patch applied the clean error in every
//! thread, reverted the crash again. CVE-2023-2975 the same way, in the default provider
//! (AES-SIV), which libcrypto links from an archive.

#[path = "buildpatch/common.rs"]
mod common;
#[path = "buildpatch/kept.rs"]
mod kept;

use std::path::{Path, PathBuf};

use common::{
    assert_refused, build_patch_incremental, copy_dir, fixtures, functions_of, recompiled_units, upstream_fix,
};
use libpulp_rs_tests::{apply, crate_sources, revert, run, App, CSpec, Work};

/// The kept build's command: configured as a shared library, only the two libraries
/// built, then `make depend` (which `make all` runs at its end): the header dependencies
/// the compiles wrote go into the Makefile, so a fix of a header rebuilds its users.
const KEPT_BUILD: &str = "CC=gcc ./Configure linux-x86_64 shared no-tests >configure.log && \
                          make -s -j2 CC=\"$CC\" build_generated && \
                          make -s -j2 CC=\"$CC\" libcrypto.so.3 libssl.so.3 && make -s depend";
/// What `pulp build-patch` runs in the fixed copy.
const BUILD: &str = "make -s -j2 CC=\"$CC\" libcrypto.so.3 libssl.so.3";

const CRASHED: &str = "t0: crashed: signal 11; t1: crashed: signal 11; t2: crashed: signal 11; t3: crashed: signal 11";
const FIXED: &str =
    "t0: error: decode error; t1: error: decode error; t2: error: decode error; t3: error: decode error";

/// OpenSSL 3.0.8 built live-patchable, once per `target/`.
fn kept_openssl() -> PathBuf {
    let sources = crate_sources("openssl-src", "openssl");
    kept::kept_build("openssl-3.0.8", |dir| copy_dir(&sources, dir), KEPT_BUILD)
}

#[test]
fn openssl_cve_2024_0727_is_fixed_in_every_thread_of_a_running_process() {
    let kept = kept_openssl();
    let library = kept.join("libcrypto.so.3");
    let check = run(std::process::Command::new(&libpulp_rs_tests::artifacts().pulp).arg("livepatchable").arg(&library));
    println!("{}", check.stdout.lines().last().unwrap_or_default());

    let work = Work::new();
    let fix = upstream_fix("openssl-CVE-2024-0727.patch");
    let out = build_patch_incremental(work.path(), &kept, &fix, BUILD, "libcrypto.so.3", "CVE-2024-0727");
    out.assert_ok("pulp build-patch (OpenSSL)");
    println!("{}", out.stdout);
    // The four files of the fix, and nothing else, were compiled.
    assert_eq!(
        recompiled_units(&work.path().join("bp")),
        [
            "crypto/pkcs12/libcrypto-shlib-p12_add.o",
            "crypto/pkcs12/libcrypto-shlib-p12_mutl.o",
            "crypto/pkcs12/libcrypto-shlib-p12_npas.o",
            "crypto/pkcs7/libcrypto-shlib-pk7_mime.o",
        ]
    );
    for f in ["PKCS12_unpack_authsafes", "PKCS12_unpack_p7data", "PKCS12_unpack_p7encdata", "SMIME_write_PKCS7"] {
        assert!(out.stdout.contains(&format!("{f} (crypto/")), "`{f}` should be replaced: {}", out.stdout);
    }
    let held = functions_of(&work.path().join("out/fix.so"));
    assert!(held.contains(&"PKCS12_unpack_authsafes".to_string()), "{held:?}");
    assert!(!held.contains(&"ASN1_item_unpack".to_string()), "callees are the running library's: {held:?}");
    let (patch, lib) =
        (std::fs::metadata(work.path().join("out/fix.so")).unwrap().len(), std::fs::metadata(&library).unwrap().len());
    println!("patch object: {patch} bytes; libcrypto.so.3: {lib} bytes");
    assert!(patch < lib / 20, "the patch object ({patch} bytes) is not much smaller than libcrypto ({lib} bytes)");

    live(&work, &kept, &[], CRASHED, FIXED);
}

/// The program on the kept libcrypto (with `args`): the probe shows `bug` in every
/// thread, the patch `out/fix.meta` applied `fixed`, reverted `bug` again; the workers
/// stay right throughout.
fn live(work: &Work, kept: &Path, args: &[&str], bug: &str, fixed: &str) {
    let app = work.executable(
        "openssl_app",
        &CSpec::plain(&["openssl_app.c"])
            .threads()
            .flag(&format!("-I{}", kept.join("include").display()))
            .flag(&format!("-L{}", kept.display()))
            .flag("-lcrypto")
            .flag(&format!("-Wl,-rpath,{}", kept.display())),
    );
    let mut app = App::start_with(&app, true, args);
    let pid = app.pid();
    assert_eq!(app.ask("check"), bug, "the bug shows in every thread before the patch");
    assert_eq!(app.ask("sync"), "workers ok");

    apply(pid, &work.path().join("out/fix.meta")).assert_ok("pulp-trigger");
    assert_eq!(app.ask("check"), fixed, "every thread runs the fixed code");
    assert_eq!(app.ask("sync"), "workers ok");

    revert(pid, &work.path().join("out/fix.meta")).assert_ok("pulp-trigger --revert");
    assert_eq!(app.ask("check"), bug, "the bug is back in every thread after the revert");
    assert_eq!(app.ask("sync"), "workers ok");
    app.assert_alive();
}

/// CVE-2023-2975, a fix of the default provider, linked into libcrypto from
/// `providers/libdefault.a`: AES-SIV authenticates an empty associated data item once
/// patched, in every thread.
#[test]
fn openssl_cve_2023_2975_in_a_provider_is_fixed_in_every_thread() {
    let kept = kept_openssl();
    let work = Work::new();
    let fix = upstream_fix("openssl-CVE-2023-2975.patch");
    let out = build_patch_incremental(work.path(), &kept, &fix, BUILD, "libcrypto.so.3", "CVE-2023-2975");
    out.assert_ok("pulp build-patch (OpenSSL provider)");
    println!("{}", out.stdout);
    assert_eq!(
        recompiled_units(&work.path().join("bp")),
        ["providers/implementations/ciphers/libdefault-lib-cipher_aes_siv.o"]
    );
    assert!(out.stdout.contains("siv_cipher (providers/implementations/ciphers/cipher_aes_siv.c)"), "{}", out.stdout);
    let each = |r: &str| (0..4).map(|i| format!("t{i}: {r}")).collect::<Vec<_>>().join("; ");
    live(&work, &kept, &["siv"], &each("empty AD ignored"), &each("empty AD authenticated"));
}

/// OpenSSL's perl-generated assembly is not compiled from C: a change there is refused,
/// naming the object and the perl file, and nothing is written.
#[test]
fn a_change_of_perl_generated_assembly_is_refused() {
    let kept = kept_openssl();
    let work = Work::new();
    let diff = fixtures().join("openssl/perl-assembly.patch");
    let out = build_patch_incremental(work.path(), &kept, &diff, BUILD, "libcrypto.so.3", "assembly");
    assert_refused(
        &out,
        &["crypto/aes/libcrypto-shlib-aes-x86_64.o changes", "not compiled from C", "crypto/aes/asm/aes-x86_64.pl"],
    );
    assert!(!work.path().join("out/fix.so").exists() && !work.path().join("out/fix.meta").exists());
}
