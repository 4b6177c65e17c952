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

/// The first `len` bytes of `func` in the file `path` (fewer at the end of its section),
/// and its address in the file.
fn file_bytes(path: &str, func: &str, len: usize) -> (u64, Vec<u8>) {
    let data = std::fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let sym = file
        .dynamic_symbols()
        .find(|s| s.name().is_ok_and(|n| n == func) && s.is_definition())
        .unwrap_or_else(|| panic!("{func} is not in {path}"));
    let section = file.section_by_index(sym.section_index().unwrap()).unwrap();
    let at = (sym.address() - section.address()) as usize;
    let data = section.data().unwrap();
    (sym.address(), data[at..(at + len).min(data.len())].to_vec())
}

/// The first `len` bytes of `func` of `path` as process `pid` has them in memory.
fn memory_bytes(pid: u32, path: &str, func: &str, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let (addr, file) = file_bytes(path, func, len);
    let len = file.len();
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

/// Whether `pid` maps a trampoline region (anonymous, read and execute).
fn has_trampoline(pid: u32) -> bool {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    maps.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() == 5 && f[1] == "r-xp"
    })
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
        assert!(has_trampoline(pid), "no trampoline region after the apply");
        assert_eq!(app.ask("version"), "1.2.13-pulp", "round {round}");
        assert_eq!(app.ask("crc"), "crc32=c9ef5979", "round {round}");
        assert_workers_call(&mut app);
        // The runtime's SIGTRAP handler (for threads caught on the int3) passes every
        // other trap to the program's own handler.
        assert_eq!(app.ask("trap"), format!("traps={}", round + 1), "round {round}");

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

/// libc's `syscall()` is what the runtime calls for `membarrier` while the tool writes
/// the entries: the thread the tool borrows for that runs into the `int3` and is sent on
/// to the slot (by the tool, which traces it), and the process's SIGTRAP action stays.
#[test]
fn a_function_the_runtime_itself_calls_is_patched_and_reverted() {
    let work = Work::new();
    let (app_path, fix) = build(&work);
    let meta =
        work.patch_with_options("syscall", &fix, &[(Path::new(LIBC), &[("syscall", "syscall_pulp")])], &["immediate"]);
    let mut app = libpulp_rs_tests::App::start(&app_path);
    let pid = app.pid();
    for _ in 0..2 {
        apply(pid, &meta).assert_ok("pulp-trigger");
        assert_eq!(memory_bytes(pid, LIBC, "syscall", 1), [0xe9], "syscall() is not redirected");
        assert_eq!(app.ask("atoi"), "atoi=42");
        revert(pid, &meta).assert_ok("pulp-trigger --revert");
        assert_as_in_file(pid, LIBC, &["syscall"]);
    }
    assert_eq!(app.ask("trap"), "traps=1", "the program's SIGTRAP handler is gone");
    assert_workers_call(&mut app);
    app.assert_alive();
}

/// A thread that blocks SIGTRAP would be killed by the int3 (the kernel resets the
/// action to the default): the apply stops before the first write, the process runs
/// on unpatched, and applies once the thread unblocks it.
#[test]
fn a_thread_blocking_sigtrap_holds_the_write_back() {
    let work = Work::new();
    let (app_path, fix) = build(&work);
    let meta = work.patch("libz", &fix, &[(Path::new(LIBZ), &[("zlibVersion", "zlibVersion_pulp")])]);
    let mut app = libpulp_rs_tests::App::start(&app_path);
    let pid = app.pid();
    let version = app.ask("version");
    assert_eq!(app.ask("block"), "ok");
    apply(pid, &meta).assert_refused(&["blocks SIGTRAP"]);
    assert_eq!(app.ask("version"), version);
    assert_as_in_file(pid, LIBZ, &["zlibVersion"]);
    assert_eq!(app.ask("unblock"), "ok");
    apply(pid, &meta).assert_ok("pulp-trigger once SIGTRAP is unblocked");
    assert_eq!(app.ask("version"), "1.2.13-pulp");
    assert_workers_call(&mut app);
    app.assert_alive();
}

/// A new version that calls the original function through a reference gets the
/// relocated copy, not the entry (which now leads to the new version itself).
#[test]
fn a_new_version_calls_the_original_unpadded_function() {
    let work = Work::new();
    let (app_path, _) = build(&work);
    let wrap = work.shared("unpadded_wrap", &CSpec::plain(&["unpadded_wrap.c"]));
    let dsc = work.path().join("wrap.dsc");
    let text = format!("{}\n@{LIBZ}\nzlibVersion:zlibVersion_wrap\n#zlibVersion:zlib_orig\n", wrap.display());
    std::fs::write(&dsc, text).unwrap();
    let meta = work.path().join("wrap.meta");
    pack(&dsc, &meta).assert_ok("pulp pack");
    let mut app = libpulp_rs_tests::App::start(&app_path);
    let pid = app.pid();
    let version = app.ask("version");
    apply(pid, &meta).assert_ok("pulp-trigger");
    assert_eq!(app.ask("version"), format!("{version}+wrap"));
    revert(pid, &meta).assert_ok("pulp-trigger --revert");
    assert_eq!(app.ask("version"), version);
    app.assert_alive();
}

/// Two patches stacked on one unpadded function, reverted in either order.
#[test]
fn patches_stack_on_an_unpadded_function() {
    let work = Work::new();
    let (app_path, fix) = build(&work);
    let fix2 = work.shared("unpadded_fix2", &CSpec::plain(&["unpadded_fix2.c"]));
    let one = work.patch("one", &fix, &[(Path::new(LIBZ), &[("zlibVersion", "zlibVersion_pulp")])]);
    let two = work.patch("two", &fix2, &[(Path::new(LIBZ), &[("zlibVersion", "zlibVersion_pulp2")])]);
    let mut app = libpulp_rs_tests::App::start(&app_path);
    let pid = app.pid();
    let version = app.ask("version");
    for (first, second) in [(&one, &two), (&two, &one)] {
        apply(pid, &one).assert_ok("apply one");
        apply(pid, &two).assert_ok("apply two");
        assert_eq!(app.ask("version"), "1.2.13-pulp2");
        revert(pid, first).assert_ok("revert first");
        let left = if first == &one { "1.2.13-pulp2" } else { "1.2.13-pulp" };
        assert_eq!(app.ask("version"), left);
        revert(pid, second).assert_ok("revert second");
        assert_eq!(app.ask("version"), version);
        assert_as_in_file(pid, LIBZ, &["zlibVersion"]);
    }
    // Both at once, with --revert-all.
    apply(pid, &one).assert_ok("apply one");
    apply(pid, &two).assert_ok("apply two");
    let out = libpulp_rs_tests::trigger(&["--revert-all", LIBZ, "-p", &pid.to_string()]);
    out.assert_ok("pulp-trigger --revert-all");
    assert_eq!(app.ask("version"), version);
    assert_as_in_file(pid, LIBZ, &["zlibVersion"]);
    app.assert_alive();
}

/// A `.meta` whose recorded first instructions are not what the process has (here: the
/// bytes edited after packing) is refused before anything changes: no trampoline is
/// mapped, the code is the file's, the process runs on.
#[test]
fn pulp_trigger_refuses_an_entry_that_is_not_as_recorded_and_changes_nothing() {
    let work = Work::new();
    let (app_path, fix) = build(&work);
    let meta = work.patch("libz", &fix, &[(Path::new(LIBZ), &[("zlibVersion", "zlibVersion_pulp")])]);
    let mut m = pulp_meta::PatchMeta::decode(&std::fs::read(&meta).unwrap()).unwrap();
    let d = m.targets[0].functions[0].displaced.as_mut().unwrap();
    d.original[0] ^= 0xff;
    std::fs::write(&meta, m.encode()).unwrap();
    let mut app = libpulp_rs_tests::App::start(&app_path);
    let pid = app.pid();
    let version = app.ask("version");
    apply(pid, &meta).assert_refused(&["zlibVersion"]);
    assert_eq!(app.ask("version"), version);
    assert_as_in_file(pid, LIBZ, &["zlibVersion"]);
    assert!(!has_trampoline(pid), "a trampoline region was mapped");
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

#[test]
fn a_function_starting_with_a_rip_relative_load_is_patched_through_a_transition() {
    let work = Work::new();
    let lib = work.shared("unpadded_lib", &CSpec::plain(&["unpadded_lib.c"]));
    let app =
        work.executable("unpadded_lib_app", &CSpec::plain(&["unpadded_lib_app.c"]).threads().link("unpadded_lib"));
    let fix = work.shared("unpadded_lib_fix", &CSpec::plain(&["unpadded_lib_fix.c"]));
    let meta = work.patch("lib", &fix, &[(&lib, &[("lib_value", "lib_value_fixed")])]);
    let (_, first) = file_bytes(lib.to_str().unwrap(), "lib_value", 8);
    // `mov base(%rip), %eax` (8b 05 disp32), as gcc writes it.
    assert_eq!(first[..2], [0x8b, 0x05], "lib_value does not start with a rip-relative load: {first:02x?}");

    let mut app = libpulp_rs_tests::App::start(&app);
    let pid = app.pid();
    assert_eq!(app.ask("value"), "value=8");
    apply(pid, &meta).assert_ok("pulp-trigger");
    assert_eq!(app.ask("value"), "value=1001");
    revert(pid, &meta).assert_ok("pulp-trigger --revert");
    // The original code, run from the relocated copy until the entry is back, and from
    // the entry after: both read the variable where it is.
    assert_eq!(app.ask("set 40"), "ok");
    assert_eq!(app.ask("value"), "value=41");
    assert_as_in_file(pid, lib.to_str().unwrap(), &["lib_value"]);
    app.assert_alive();
}

/// The runtime never writes unpadded entries itself: a patch in the patch directory
/// naming one is refused at start, saying to use pulp-trigger, which then applies it.
#[test]
fn the_patch_directory_leaves_unpadded_functions_to_pulp_trigger() {
    use libpulp_rs_tests::{artifacts, pulp};
    let work = Work::new();
    // A build of its own (its own build-id): `pulp install` reaches no other process.
    let tag = format!("{}", std::process::id());
    let lib = work.shared("unpadded_lib", &CSpec::plain(&["unpadded_lib.c"]).define("UNPADDED_TAG", Some(&tag)));
    let app =
        work.executable("unpadded_lib_app", &CSpec::plain(&["unpadded_lib_app.c"]).threads().link("unpadded_lib"));
    let fix = work.shared("unpadded_lib_fix", &CSpec::plain(&["unpadded_lib_fix.c"]));
    let meta = work.patch("lib", &fix, &[(&lib, &[("lib_value", "lib_value_fixed")])]);
    let dir = work.path().join("patches.d");
    pulp(&["install", meta.to_str().unwrap(), "--dir", dir.to_str().unwrap()]).assert_ok("pulp install");

    let mut cmd = std::process::Command::new(&app);
    cmd.env("LD_PRELOAD", &artifacts().runtime).env("PULP_PATCH_DIR", &dir);
    let mut app = libpulp_rs_tests::App::start_command(cmd, "unpadded_lib_app");
    let pid = app.pid();
    assert_eq!(app.ask("value"), "value=8", "applied by the runtime itself");
    let log = pulp(&["messages", "-p", &pid.to_string()]);
    assert!(log.stdout.contains("apply it with pulp-trigger") && log.stdout.contains("lib_value"), "{log:#?}");
    apply(pid, &meta).assert_ok("pulp-trigger");
    assert_eq!(app.ask("value"), "value=1001");
    app.assert_alive();
}

/// `pulp-trigger` killed (SIGKILL, by strace's fault injection) at each of its writes to
/// the process in turn: the process keeps answering with the old or the new version,
/// and the next runs take the patch up, apply and revert it, leaving the file's bytes.
#[test]
fn a_killed_tool_leaves_a_state_the_next_run_repairs() {
    use libpulp_rs_tests::{artifacts, run_limited, tool};
    use std::time::Duration;
    let work = Work::new();
    let (app_path, fix) = build(&work);
    let meta = work.patch("libz", &fix, &[(Path::new(LIBZ), &[("zlibVersion", "zlibVersion_pulp")])]);
    let pulp_trigger = |args: &[&str], kill_at: Option<usize>| {
        let mut cmd = tool("strace");
        cmd.args(["-f", "-o", "/dev/null", "-e", "trace=pwrite64"]);
        if let Some(n) = kill_at {
            cmd.arg("-e").arg(format!("inject=pwrite64:signal=SIGKILL:when={n}"));
        }
        run_limited(cmd.arg(&artifacts().trigger).args(args), Duration::from_secs(30))
    };
    let mut failures = Vec::new();
    let mut n = 1;
    loop {
        let mut app = libpulp_rs_tests::App::start(&app_path);
        let pid = app.pid().to_string();
        let m = meta.to_str().unwrap();
        let killed = pulp_trigger(&["-p", &pid, m], Some(n));
        if killed.out.code == Some(0) {
            break; // fewer than n writes: every point was tried
        }
        let version = app.try_ask("version", Duration::from_secs(5));
        let mut check = || -> Result<(), String> {
            match version.as_deref() {
                Some(v) if v.starts_with("1.2.13") => {}
                other => return Err(format!("the process answers {other:?}")),
            }
            let _ = pulp_trigger(&["--continue", "-p", &pid], None);
            let applied = pulp_trigger(&["-p", &pid, m], None);
            if applied.out.code != Some(0) {
                return Err(format!("apply after the kill: {}", applied.out.stderr.trim()));
            }
            if app.ask("version") != "1.2.13-pulp" {
                return Err("not patched after the next apply".into());
            }
            let reverted = pulp_trigger(&["--revert", "-p", &pid, m], None);
            if reverted.out.code != Some(0) {
                return Err(format!("revert after the kill: {}", reverted.out.stderr.trim()));
            }
            let file = file_bytes(LIBZ, "zlibVersion", 32).1;
            if memory_bytes(app.pid(), LIBZ, "zlibVersion", 32) != file {
                return Err("zlibVersion differs from the file after revert".into());
            }
            Ok(())
        };
        if let Err(e) = check() {
            failures.push(format!("killed at pwrite64 #{n}: {e}"));
        } else if !app.is_alive() {
            failures.push(format!("killed at pwrite64 #{n}: the process died"));
        }
        n += 1;
        assert!(n < 200, "more than 200 writes in one apply");
    }
    println!("{} kill points", n - 1);
    assert!(n > 3, "the apply made only {} writes", n - 1);
    assert!(failures.is_empty(), "{} of {} kill points failed:\n{}", failures.len(), n - 1, failures.join("\n"));
}
