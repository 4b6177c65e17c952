//! Functions built without any pad, patched where they are: the system's own
//! `libz.so.1` and `libc.so.6` (as the distribution ships them), called in a loop from 4
//! threads of a running program. The entry's first instructions become a `jmp rel32` to a
//! trampoline, written text_poke_bp style with no global stop; revert puts back exactly
//! the bytes of the file.

use std::path::{Path, PathBuf};

use libpulp_rs_tests::{apply, pack, revert, CSpec, Work};
use object::{Object, ObjectSection, ObjectSymbol};

const LIBZ: &str = "/lib/x86_64-linux-gnu/libz.so.1";
const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";

/// The program (4 threads calling zlibVersion, crc32 and atoi) and the patch object.
fn build(work: &Work) -> (PathBuf, PathBuf) {
    let app = work.executable("unpadded_app", &CSpec::plain(&["unpadded_app.c"]).threads().flag("-lz"));
    let fix = work.shared("unpadded_fix", &CSpec::plain(&["unpadded_fix.c"]).flag("-lz"));
    (app, fix)
}

/// Where `path` is mapped in `pid` (its mapping at file offset 0).
fn base(pid: u32, path: &str) -> u64 {
    let real = std::fs::canonicalize(path).unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let line = maps
        .lines()
        .find(|l| l.ends_with(real.to_str().unwrap()) && l.split_whitespace().nth(2) == Some("00000000"))
        .unwrap_or_else(|| panic!("{path} is not mapped in {pid}:\n{maps}"));
    u64::from_str_radix(line.split('-').next().unwrap(), 16).unwrap()
}

/// The first `len` bytes of `func` in the file `path`, and its address in the file.
fn file_bytes(path: &str, func: &str, len: usize) -> (u64, Vec<u8>) {
    let data = std::fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let sym = file
        .dynamic_symbols()
        .find(|s| s.name().is_ok_and(|n| n == func) && s.is_definition())
        .unwrap_or_else(|| panic!("{func} is not in {path}"));
    let section = file.section_by_index(sym.section_index().unwrap()).unwrap();
    let at = (sym.address() - section.address()) as usize;
    (sym.address(), section.data().unwrap()[at..at + len].to_vec())
}

/// The first `len` bytes of `func` of `path` as process `pid` has them in memory.
fn memory_bytes(pid: u32, path: &str, func: &str, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let (addr, _) = file_bytes(path, func, len);
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut b = vec![0u8; len];
    mem.read_exact_at(&mut b, base(pid, path) + addr).unwrap();
    b
}

fn assert_as_in_file(pid: u32, path: &str, funcs: &[&str]) {
    for f in funcs {
        assert_eq!(memory_bytes(pid, path, f, 32), file_bytes(path, f, 32).1, "{f} of {path} differs from the file");
    }
}

/// The workers are still calling (their count grows).
fn assert_workers_call(app: &mut libpulp_rs_tests::App) {
    let count = |app: &mut libpulp_rs_tests::App| -> u64 {
        let a = app.ask("calls");
        a.strip_prefix("calls ").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("calls: {a}"))
    };
    let before = count(app);
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(count(app) > before, "the worker threads stopped calling");
}

#[test]
fn system_libz_is_patched_through_a_transition_and_reverted() {
    if !Path::new(LIBZ).exists() {
        panic!("{LIBZ} is missing: install zlib1g");
    }
    let work = Work::new();
    let (app_path, fix) = build(&work);
    let meta =
        work.patch("libz", &fix, &[(Path::new(LIBZ), &[("zlibVersion", "zlibVersion_pulp"), ("crc32", "crc32_pulp")])]);
    let dump = libpulp_rs_tests::pulp(&["dump", meta.to_str().unwrap()]);
    assert!(dump.stdout.contains("unpadded"), "{dump:#?}");

    let mut app = libpulp_rs_tests::App::start(&app_path);
    let pid = app.pid();
    let version = app.ask("version");
    assert!(version.starts_with("1.") && !version.ends_with("-pulp"), "{version}");
    assert_eq!(app.ask("crc"), "crc32=3610a686");

    for round in 0..2 {
        apply(pid, &meta).assert_ok("pulp-trigger");
        assert_eq!(app.ask("version"), "1.2.13-pulp", "round {round}");
        assert_eq!(app.ask("crc"), "crc32=c9ef5979", "round {round}");
        assert_workers_call(&mut app);

        revert(pid, &meta).assert_ok("pulp-trigger --revert");
        assert_eq!(app.ask("version"), version, "round {round}");
        assert_eq!(app.ask("crc"), "crc32=3610a686", "round {round}");
        assert_as_in_file(pid, LIBZ, &["zlibVersion", "crc32"]);
        assert_workers_call(&mut app);
    }
    app.assert_alive();
}

#[test]
fn system_libc_atoi_is_patched_immediately_and_reverted() {
    let work = Work::new();
    let (app_path, fix) = build(&work);
    // Every thread always has frames in libc: a transition could never finish.
    let meta = work.patch_with_options("libc", &fix, &[(Path::new(LIBC), &[("atoi", "atoi_pulp")])], &["immediate"]);

    let mut app = libpulp_rs_tests::App::start(&app_path);
    let pid = app.pid();
    assert_eq!(app.ask("atoi"), "atoi=42");
    apply(pid, &meta).assert_ok("pulp-trigger");
    assert_eq!(app.ask("atoi"), "atoi=4200");
    assert_workers_call(&mut app);
    revert(pid, &meta).assert_ok("pulp-trigger --revert");
    assert_eq!(app.ask("atoi"), "atoi=42");
    assert_as_in_file(pid, LIBC, &["atoi"]);
    assert_workers_call(&mut app);
    app.assert_alive();
}

#[test]
fn pack_refuses_what_cannot_be_redirected_naming_function_and_reason() {
    let work = Work::new();
    let lib = work.shared("unpadded_refusals", &CSpec::plain(&["unpadded_refusals.c"]));
    let fix = work.shared("unpadded_fix", &CSpec::plain(&["unpadded_fix.c"]).flag("-lz"));
    // `tiny` is `xor; ret`: shorter than the jump, or (when the symbol's bounds include
    // the padding after it) a `ret` before the 5 bytes.
    for (func, reason) in [("tiny", "within the first 5 bytes"), ("loops_to_top", "inside the first bytes")] {
        let dsc = work.dsc(func, &fix, &[(&lib, &[(func, "atoi_pulp")])]);
        let out = pack(&dsc, &work.path().join(format!("{func}.meta")));
        assert_ne!(out.code, Some(0), "{out:#?}");
        assert!(out.stderr.contains(&format!("`{func}`")) && out.stderr.contains(reason), "{func}: {out:#?}");
    }
}
