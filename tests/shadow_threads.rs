//! Shadow variables in a real multi-threaded C program (`tests/fixtures/shadow_stress.c`)
//! that includes `pulp.h` and links nothing: the `pulp_shadow_*` functions come from the
//! preloaded runtime. Threads create, check and free objects with shadows of two ids and
//! race for a third; constructor and destructor calls must balance, `free_all` must free
//! exactly one id's shadows, and children forked during the churn must be able to use the
//! table. The program checks every step and says `ok`; built with gcc and with clang.

use std::path::{Path, PathBuf};

use libpulp_rs_tests::{program, run, CSpec, ToolOutput, Work};

fn build(work: &Work, compiler: &str) -> PathBuf {
    let include = format!("-I{}/runtime/include", env!("CARGO_MANIFEST_DIR"));
    let spec =
        CSpec::plain(&["shadow_stress.c"]).threads().compiler(compiler).flag(&include).flag("-Wall").flag("-Werror");
    work.executable(&format!("shadow_stress_{compiler}"), &spec)
}

fn stress(exe: &Path, preload: bool, args: &[&str]) -> ToolOutput {
    run(&mut program(exe, preload, args))
}

/// The number after `key=` in the program's output.
fn count(out: &ToolOutput, key: &str) -> u64 {
    let word = out
        .stdout
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in the output: {out:#?}"));
    word.parse().unwrap_or_else(|e| panic!("{key}={word}: {e}"))
}

fn churn(compiler: &str) {
    let work = Work::new();
    let exe = build(&work, compiler);
    let out = stress(&exe, true, &["4", "3000", "150000"]);
    assert_eq!(out.code, Some(0), "{compiler}: {out:#?}");
    assert!(out.stdout.ends_with("ok\n"), "{compiler}: {out:#?}");
    assert!(out.stderr.is_empty(), "{compiler}: {out:#?}");
    // The run did what it says: objects came and went, shadows were left for free_all.
    assert!(count(&out, "objects_created") > 10_000, "{out:#?}");
    assert!(count(&out, "objects_freed") > 5_000, "{out:#?}");
    assert!(count(&out, "free_all(A)") > 100, "{out:#?}");
    assert_eq!(count(&out, "free_all(A)"), count(&out, "live_a"), "{out:#?}");
    assert_eq!(count(&out, "free_all(B)"), count(&out, "live_b"), "{out:#?}");
    assert_eq!(count(&out, "free_all(C)"), 64, "every hot object got its shadow: {out:#?}");
    assert_eq!(count(&out, "constructor_calls"), 64, "one constructor call per hot shadow: {out:#?}");
}

#[test]
fn shadow_churn_gcc() {
    churn("gcc");
}

#[test]
fn shadow_churn_clang() {
    churn("clang");
}

/// The weak declarations of `pulp.h` let the program start without the runtime and see
/// that it is missing.
#[test]
fn shadow_program_runs_without_the_runtime() {
    let work = Work::new();
    let exe = build(&work, "gcc");
    let out = stress(&exe, false, &["1", "10", "10"]);
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert_eq!(out.stdout, "runtime not loaded: pulp_shadow_* not found\n", "{out:#?}");
}
