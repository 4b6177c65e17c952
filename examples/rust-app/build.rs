//! Builds the C pricing library live-patchable, and its live patch, into OUT_DIR with
//! pulp-cc-build; links the application to the library; writes the patch description.
//!
//! The binary gets the paths as `env!("PULP_RUST_APP_LIB")`, `..._FIX` and `..._DSC`.

use std::path::{Path, PathBuf};

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let c = Path::new(env!("CARGO_MANIFEST_DIR")).join("c");
    println!("cargo:rerun-if-changed=c");
    println!("cargo:rerun-if-changed=build.rs");

    // The library: every function gets a NOP pad, entries canonicalised to `66 90`.
    let lib = pulp_cc_build::Build::new()
        .file(c.join("pricing.c"))
        .include(&c)
        .shared("pricing")
        .unwrap_or_else(|e| panic!("building libpricing.so: {e}"));
    // The patch: an ordinary shared object holding the new functions.
    let fix = pulp_cc_build::Build::new()
        .file(c.join("pricing_fix.c"))
        .include(&c)
        .patchable(false)
        .shared("pricing_fix")
        .unwrap_or_else(|e| panic!("building libpricing_fix.so: {e}"));

    // What the patch replaces, for `pulp pack`.
    let dsc = out.join("pricing_fix.dsc");
    let text = format!(
        "{}\n!pricing: bulk discount from 10 items on\n@{}\npricing_total:pricing_total_fixed\n\
         pricing_version:pricing_version_fixed\n",
        fix.display(),
        lib.display()
    );
    std::fs::write(&dsc, text).unwrap_or_else(|e| panic!("writing {}: {e}", dsc.display()));

    // Link the Rust binary to libpricing.so and find it at run time without LD_LIBRARY_PATH.
    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rustc-link-lib=dylib=pricing");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", out.display());
    for (var, path) in [("PULP_RUST_APP_LIB", &lib), ("PULP_RUST_APP_FIX", &fix), ("PULP_RUST_APP_DSC", &dsc)] {
        println!("cargo:rustc-env={var}={}", path.display());
    }
}
