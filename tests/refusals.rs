//! Every refusal of `pulp-trigger` (and of `pulp pack` for a function without pad) is one
//! clear error, a non-zero exit, and leaves the process running and unchanged.

use std::fs;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::PathBuf;
use std::process::Command;

use libpulp_rs_tests::tool;
use libpulp_rs_tests::{apply, artifacts, pack, pid_exists, run, trigger_command, App, CSpec, Work};

/// The calc library, its fix and the app, built into a fresh work folder.
struct Calc {
    work: Work,
    lib: PathBuf,
    fix: PathBuf,
    app: PathBuf,
}

const FUNCS: &[(&str, &str)] = &[("calc", "calc_fixed")];

impl Calc {
    fn new() -> Self {
        Self::with_lib(CSpec::patchable(&["calc.c"]))
    }

    fn with_lib(lib: CSpec) -> Self {
        let work = Work::new();
        let lib = work.shared("calc", &lib);
        let fix = work.shared("calc_fix", &CSpec::plain(&["calc_fix.c"]));
        let app = work.executable("calc_app", &CSpec::plain(&["calc_app.c"]).link("calc"));
        Calc { work, lib, fix, app }
    }

    fn meta(&self) -> PathBuf {
        self.work.patch("calc", &self.fix, &[(&self.lib, FUNCS)])
    }
}

/// The process is alive and calc() still computes the original result.
fn assert_untouched(app: &mut App) {
    app.assert_alive();
    assert_eq!(app.ask("call 5"), "calc(5)=10", "the refusal changed the process");
}

#[test]
fn no_such_process() {
    let c = Calc::new();
    let meta = c.meta();
    let mut app = App::start(&c.app);
    let max: u32 =
        fs::read_to_string("/proc/sys/kernel/pid_max").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(32768);
    let pid = (2..max).rev().find(|&p| !pid_exists(p)).unwrap();
    apply(pid, &meta).assert_refused(&[&pid.to_string(), "no such"]);
    assert_untouched(&mut app);
}

#[test]
fn runtime_not_loaded() {
    let c = Calc::new();
    let meta = c.meta();
    let mut app = App::start_with(&c.app, false, &[]);
    apply(app.pid(), &meta).assert_refused(&["libpulp_rs", "runtime"]);
    assert_untouched(&mut app);
}

#[test]
fn target_not_mapped() {
    let c = Calc::new();
    let one = c.work.shared("one", &CSpec::patchable(&["one.c"]));
    let one_fix = c.work.shared("one_fix", &CSpec::plain(&["one_fix.c"]));
    let meta = c.work.patch("one", &one_fix, &[(&one, &[("one", "one_new")])]);
    let mut app = App::start(&c.app);
    apply(app.pid(), &meta).assert_refused(&["libone", "not mapped", "not loaded"]);
    assert_untouched(&mut app);
}

#[test]
fn target_build_id_mismatch() {
    // Pack against version B of libcalc.so, then run the process with version A.
    let c = Calc::with_lib(CSpec::patchable(&["calc.c"]).define("CALC_VERSION", Some("2")));
    let meta = c.meta();
    let lib_a = c.work.shared("calc", &CSpec::patchable(&["calc.c"]));
    assert_eq!(lib_a, c.lib);
    let mut app = App::start(&c.app);
    apply(app.pid(), &meta).assert_refused(&["build-id", "build id"]);
    assert_untouched(&mut app);
}

#[test]
fn pack_refuses_function_without_pad() {
    let c = Calc::with_lib(CSpec::plain(&["calc.c"]));
    let dsc = c.work.dsc("calc", &c.fix, &[(&c.lib, FUNCS)]);
    let out = pack(&dsc, &c.work.path().join("calc.meta"));
    assert_eq!(out.code, Some(1), "pack must refuse: {out:#?}");
    assert!(
        out.stderr.starts_with("pulp: error:") && out.stderr.contains("calc"),
        "the error must name the function: {out:#?}"
    );
}

#[test]
fn prologue_not_as_recorded() {
    // Something else changed calc()'s entry in the running process (here: `jmp +0`, which
    // still behaves as a NOP). The trigger must see it does not match what was packed.
    let c = Calc::new();
    let meta = c.meta();
    let mut app = App::start(&c.app);
    let addr = app.ask("addr");
    let addr = u64::from_str_radix(addr.trim_start_matches("0x"), 16).unwrap();
    let mem = fs::OpenOptions::new().read(true).write(true).open(format!("/proc/{}/mem", app.pid())).unwrap();
    let mut entry = [0u8; 2];
    mem.read_exact_at(&mut entry, addr).unwrap();
    assert!(entry == [0x66, 0x90] || entry == [0x90, 0x90], "calc() does not start with the pad's NOP: {entry:02x?}");
    mem.write_all_at(&[0xeb, 0x00], addr).unwrap();
    apply(app.pid(), &meta).assert_refused(&["calc", "prologue"]);
    let mut now = [0u8; 2];
    mem.read_exact_at(&mut now, addr).unwrap();
    assert_eq!(now, [0xeb, 0x00], "the refused trigger wrote to calc()'s entry");
    assert_untouched(&mut app);
}

#[test]
fn patch_object_missing() {
    let c = Calc::new();
    let meta = c.meta();
    fs::remove_file(&c.fix).unwrap();
    let mut app = App::start(&c.app);
    apply(app.pid(), &meta).assert_refused(&["libcalc_fix.so"]);
    assert_untouched(&mut app);
}

#[test]
fn patch_object_build_id_mismatch() {
    let c = Calc::new();
    let meta = c.meta();
    let rebuilt = c.work.shared("calc_fix", &CSpec::plain(&["calc_fix.c"]).define("FIX_VERSION", Some("2")));
    assert_eq!(rebuilt, c.fix);
    let mut app = App::start(&c.app);
    apply(app.pid(), &meta).assert_refused(&["build-id", "build id"]);
    assert_untouched(&mut app);
}

#[test]
fn corrupt_meta() {
    let c = Calc::new();
    let meta = c.meta();
    let good = fs::read(&meta).unwrap();
    let n = good.len();
    assert!(n > 16, "suspiciously small patch.meta: {n} bytes");
    let mut app = App::start(&c.app);
    let bad = c.work.path().join("bad.meta");

    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for pos in [0, 4, 8, 12, n / 4, n / 2, 3 * n / 4, n - 1] {
        let mut b = good.clone();
        b[pos] ^= 0x5a;
        cases.push((format!("byte {pos} flipped"), b));
    }
    for len in [0, 4, 8, n / 2, n - 1] {
        cases.push((format!("cut to {len} bytes"), good[..len].to_vec()));
    }
    let mut longer = good.clone();
    longer.extend_from_slice(b"trailing garbage");
    cases.push(("trailing garbage".into(), longer));

    for (what, bytes) in cases {
        fs::write(&bad, &bytes).unwrap();
        let out = apply(app.pid(), &bad);
        assert!(matches!(out.code, Some(c) if c != 0), "{what}: the trigger accepted a corrupt patch.meta: {out:#?}");
        assert!(
            out.stderr.starts_with("pulp-trigger: error:") && out.stderr.trim().lines().count() == 1,
            "{what}: expected one error line: {out:#?}"
        );
        let dump = run(Command::new(&artifacts().pulp).arg("dump").arg(&bad));
        assert!(matches!(dump.code, Some(c) if c != 0), "{what}: `pulp dump` must fail cleanly (no crash): {dump:#?}");
        assert_untouched(&mut app);
    }
    // The good file still works after all that.
    apply(app.pid(), &meta).assert_ok("pulp-trigger with the intact file");
    assert_eq!(app.ask("call 5"), "calc(5)=1010");
}

#[test]
fn not_permitted_to_trace() {
    let probe = tool("setpriv").args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"]).output().unwrap();
    assert!(
        probe.status.success(),
        "this test runs the trigger as user nobody: `setpriv --reuid=65534` must work here (run the tests as root): {}",
        String::from_utf8_lossy(&probe.stderr).trim()
    );
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 65534 {
        println!("skipped: the tests already run as user nobody");
        return;
    }
    let c = Calc::new();
    let meta = c.meta();
    // Let nobody read the patch files, so that tracing is what it is refused.
    fs::set_permissions(c.work.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let mut app = App::start(&c.app);
    let trigger = trigger_command(app.pid(), &meta, false);
    let mut cmd = tool("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(trigger.get_program()).args(trigger.get_args());
    let out = run(&mut cmd);
    out.assert_refused(&["permission", "not permitted", "ptrace", "eperm", "denied"]);
    assert_untouched(&mut app);
}
