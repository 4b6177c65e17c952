//! A fix for the machine (issue 10, items 2 and 3): `pulp install` puts a patch into a
//! patch directory and applies it to every running process; a process started afterwards
//! has it before its first call into the target; a target a process loads afterwards is
//! patched before its first call; a bad file in the directory is reported and skipped;
//! `pulp uninstall` reverts it everywhere and takes it out; excluded processes refuse.

use std::path::{Path, PathBuf};
use std::process::Command;

use libpulp_rs_tests::{artifacts, patch_object_copies, pulp, trigger, App, CSpec, Work};

const OLD: &str = "calc(5)=10";
const NEW: &str = "calc(5)=1010";

struct Fixture {
    work: Work,
    lib: PathBuf,
    app: PathBuf,
    dl_app: PathBuf,
    meta: PathBuf,
    dir: PathBuf,
}

fn fixture() -> Fixture {
    let work = Work::new();
    // A build of its own (its own build-id): `--all` finds only this test's processes.
    let tag = format!("{}", std::process::id() as u64 * 1000 + rand_tag());
    let lib = work.shared("calc", &CSpec::patchable(&["calc.c"]).define("CALC_VERSION", Some(&tag)));
    let fix = work.shared("calc_fix", &CSpec::plain(&["calc_fix.c"]));
    let app = work.executable("calc_app", &CSpec::plain(&["calc_app.c"]).link("calc"));
    let dl_app = work.executable("calc_dlopen_app", &CSpec::plain(&["calc_dlopen_app.c"]).flag("-ldl"));
    let meta = work.patch("calc", &fix, &[(&lib, &[("calc", "calc_fixed")])]);
    let dir = work.path().join("patches.d");
    Fixture { work, lib, app, dl_app, meta, dir }
}

fn rand_tag() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64 % 1000
}

/// Start `exe` under the runtime, with the test's patch directory and `env`.
fn start(exe: &Path, dir: &Path, env: &[(&str, &str)]) -> App {
    let mut cmd = Command::new(exe);
    cmd.env("LD_PRELOAD", &artifacts().runtime).env("PULP_PATCH_DIR", dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    App::start_command(cmd, &exe.file_name().unwrap().to_string_lossy())
}

fn pulp_with_dir(args: &[&str], dir: &Path) -> libpulp_rs_tests::ToolOutput {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--dir", dir.to_str().unwrap()]);
    pulp(&all)
}

fn messages(pid: u32) -> String {
    let out = pulp(&["messages", "-p", &pid.to_string()]);
    out.assert_ok("pulp messages");
    out.stdout
}

#[test]
fn install_reaches_running_and_later_processes_and_uninstall_takes_it_back() {
    let f = fixture();
    let meta = f.meta.to_str().unwrap();
    let mut running = start(&f.app, &f.dir, &[]);
    assert_eq!(running.ask("call 5"), OLD);

    let out = pulp_with_dir(&["installed", meta], &f.dir);
    assert_eq!(out.code, Some(1), "{out:#?}");
    let out = pulp_with_dir(&["install", meta], &f.dir);
    out.assert_ok("pulp install");
    assert!(out.stdout.contains("installed as") && out.stdout.contains("applied to 1"), "{out:#?}");
    assert_eq!(running.ask("call 5"), NEW, "the running process got it");
    let out = pulp_with_dir(&["installed", meta], &f.dir);
    out.assert_ok("pulp installed");
    assert!(out.stdout.starts_with(f.dir.to_str().unwrap()), "{out:#?}");

    // A process started afterwards: patched before its first call.
    let mut later = start(&f.app, &f.dir, &[]);
    assert_eq!(later.ask("call 5"), NEW, "patched from its start");
    assert!(messages(later.pid()).contains("applied at start"));

    // A target a process loads afterwards: patched before its first call.
    let mut loader = start(&f.dl_app, &f.dir, &[]);
    assert_eq!(loader.ask("call 5"), "not loaded");
    assert_eq!(loader.ask(&format!("load {}", f.lib.display())), "loaded");
    assert_eq!(loader.ask("call 5"), NEW, "patched before its first call");
    assert!(messages(loader.pid()).contains("applied as its targets were loaded"));

    // Installing again changes nothing.
    let out = pulp_with_dir(&["install", meta], &f.dir);
    out.assert_ok("pulp install again");
    assert!(out.stdout.contains("already installed") && out.stdout.contains("already applied"), "{out:#?}");

    // Uninstall: reverted everywhere, gone from the directory, new processes unpatched.
    let out = pulp_with_dir(&["uninstall", meta], &f.dir);
    out.assert_ok("pulp uninstall");
    for app in [&mut running, &mut later, &mut loader] {
        assert_eq!(app.ask("call 5"), OLD);
    }
    assert_eq!(std::fs::read_dir(&f.dir).unwrap().count(), 0, "the directory is empty again");
    let mut after = start(&f.app, &f.dir, &[]);
    assert_eq!(after.ask("call 5"), OLD);
    assert_eq!(pulp_with_dir(&["installed", meta], &f.dir).code, Some(1));

    // Installed again: every process reuses the copy of the object it loaded before (from
    // the directory, at its start or ahead of its target, or from the tool's bytes)
    // instead of mapping a second one.
    pulp_with_dir(&["install", meta], &f.dir).assert_ok("pulp install after uninstall");
    for app in [&mut running, &mut later, &mut loader, &mut after] {
        assert_eq!(app.ask("call 5"), NEW);
        assert_eq!(patch_object_copies(app.pid()), 1, "one copy of the patch object in {}", app.pid());
    }
}

#[test]
fn bad_files_in_the_directory_are_reported_and_skipped() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture();
    pulp_with_dir(&["install", f.meta.to_str().unwrap()], &f.dir).assert_ok("pulp install");
    // Garbage, a .meta whose object was swapped for other bytes, and a group-writable one.
    std::fs::write(f.dir.join("00-garbage.meta"), b"not a patch").unwrap();
    let installed: Vec<PathBuf> =
        std::fs::read_dir(&f.dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.ends_with("calc.so")).collect();
    let swapped = f.work.path().join("swapped.so");
    std::fs::copy(&installed[0], &swapped).unwrap();
    let mut bytes = std::fs::read(&swapped).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0xff;
    std::fs::write(&swapped, &bytes).unwrap();
    // `pulp install` names the `.meta` after its targets' build-ids.
    let installed_meta = std::fs::read_dir(&f.dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("calc+"))
        .expect("the installed calc+BUILDID.meta");
    let mut m = pulp_meta::PatchMeta::decode(&std::fs::read(&installed_meta).unwrap()).unwrap();
    m.patch_so = swapped.to_str().unwrap().into();
    std::fs::write(f.dir.join("01-swapped.meta"), m.encode()).unwrap();
    std::fs::write(f.dir.join("02-writable.meta"), std::fs::read(&installed_meta).unwrap()).unwrap();
    std::fs::set_permissions(f.dir.join("02-writable.meta"), std::fs::Permissions::from_mode(0o666)).unwrap();

    let mut app = start(&f.app, &f.dir, &[]);
    assert_eq!(app.ask("call 5"), NEW, "the good patch applies, the bad files are skipped");
    let log = messages(app.pid());
    for (file, why) in [
        ("00-garbage.meta", "not a patch.meta"),
        ("01-swapped.meta", "not what `pulp pack` recorded"),
        ("02-writable.meta", "writable by"),
    ] {
        assert!(log.lines().any(|l| l.contains(&format!("{file} skipped")) && l.contains(why)), "{file}: {log}");
    }
    app.assert_alive();
}

#[test]
fn excluded_processes_refuse_and_apply_nothing() {
    let f = fixture();
    pulp_with_dir(&["install", f.meta.to_str().unwrap()], &f.dir).assert_ok("pulp install");
    let glob = format!("{}/*", f.work.path().display());
    let mut excluded = start(&f.app, &f.dir, &[("PULP_DISABLE_ON_PATH", &glob)]);
    assert_eq!(excluded.ask("call 5"), OLD, "the patch directory is not applied");
    let pid = excluded.pid().to_string();
    let out = trigger(&["-p", &pid, f.meta.to_str().unwrap()]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(out.stderr.contains("excluded by PULP_DISABLE_ON_PATH"), "{out:#?}");
    pulp(&["set-patchable", "-p", &pid, "on"]).assert_ok("set-patchable on");
    trigger(&["-p", &pid, f.meta.to_str().unwrap()]).assert_ok("apply once allowed");
    assert_eq!(excluded.ask("call 5"), NEW);
    pulp(&["set-patchable", "-p", &pid, "off"]).assert_ok("set-patchable off");
    let out = trigger(&["--revert", "-p", &pid, f.meta.to_str().unwrap()]);
    assert!(out.stderr.contains("set-patchable off"), "{out:#?}");
    assert_eq!(excluded.ask("call 5"), NEW, "refused: nothing changed");
    let by_user = start(&f.app, &f.dir, &[("PULP_DISABLE_ON_USERS", "root,0")]);
    let out = trigger(&["-p", &by_user.pid().to_string(), f.meta.to_str().unwrap()]);
    assert!(out.stderr.contains("excluded by PULP_DISABLE_ON_USERS"), "{out:#?}");
}

/// A FIFO and a 1 GiB sparse file named `.meta` in the patch directory (issue 20, item 4):
/// `pulp installed`, `pulp install` and `pulp uninstall` read the directory with the
/// runtime's checked reader (regular files only, never waited on, at most 16 MiB), so
/// they neither hang nor read a gigabyte; the runtime skips both too.
#[test]
fn odd_files_in_the_directory_neither_hang_nor_swell_the_tools() {
    use std::os::unix::process::CommandExt;
    let f = fixture();
    std::fs::create_dir_all(&f.dir).unwrap();
    let fifo = std::ffi::CString::new(f.dir.join("00-fifo.meta").to_str().unwrap()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let sparse = std::fs::File::create(f.dir.join("01-sparse.meta")).unwrap();
    sparse.set_len(1 << 30).unwrap();
    drop(sparse);

    let meta = f.meta.to_str().unwrap();
    let dir = f.dir.to_str().unwrap();
    // 256 MiB of address space: reading the sparse file whole would fail.
    let limited = |args: &[&str]| {
        let mut cmd = Command::new(&artifacts().pulp);
        cmd.args(args);
        // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit { rlim_cur: 256 << 20, rlim_max: 256 << 20 };
                if libc::setrlimit(libc::RLIMIT_AS, &lim) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            })
        };
        let out = libpulp_rs_tests::run_limited(&mut cmd, std::time::Duration::from_secs(20));
        assert!(!out.timed_out, "pulp {args:?} hung: {out:?}");
        out.out
    };
    let out = limited(&["installed", meta, "--dir", dir]);
    assert_eq!(out.code, Some(1), "not installed, said at once: {out:#?}");
    let out = limited(&["install", meta, "--dir", dir]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    let out = limited(&["installed", meta, "--dir", dir]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    let mut app = start(&f.app, &f.dir, &[]);
    assert_eq!(app.ask("call 5"), NEW, "the runtime skips the odd files and applies the patch");
    let log = messages(app.pid());
    assert!(log.contains("00-fifo.meta skipped: the patch.meta is not a regular file"), "{log}");
    assert!(log.contains("01-sparse.meta skipped: the patch.meta is larger than 16 MiB"), "{log}");
    let out = limited(&["uninstall", meta, "--dir", dir]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(app.ask("call 5"), OLD);
    // A FIFO given as the patch itself is refused at once too.
    let out = limited(&["installed", f.dir.join("00-fifo.meta").to_str().unwrap(), "--dir", dir]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(out.stderr.contains("not a regular file"), "{out:#?}");
}
