//! Issue 8 §1: only the code that was checked is loaded. Each test pits the trigger
//! against an attacker's object whose constructor creates a marker file: the marker must
//! never appear, whatever the trigger decides (apply the checked code, or refuse). And
//! targets in a chroot must be patchable.
//!
//! - a symlink flipped between the good object and the attacker's for a few seconds of
//!   applies and reverts, in a folder the attacker (user nobody) owns;
//! - the patch in a group-writable folder, and in a 0777 one: refused;
//! - a target in another mount namespace, where another file is bind-mounted at the
//!   patch's path;
//! - a patch path through `/proc/self/cwd`, which names another file in the target;
//! - an impostor linked with the same build-id;
//! - a target in a chroot (with and without `/proc` in it).

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libpulp_rs_tests::tool;
use libpulp_rs_tests::{
    artifacts, run_limited, trigger_command, App, CSpec, Limited, Mix, Work, MIX_FUNCS, MIX_NEW, MIX_OLD,
};
use pulp_meta::PatchMeta;

const LIMIT: Duration = Duration::from_secs(30);
/// User nobody: the attacker.
const NOBODY: u32 = 65534;

/// The attacker's patch object: the same functions, and a constructor that creates
/// `marker` (and `f_new` returns x + 7, so its code shows if it runs).
fn attacker(work: &Work, name: &str, marker: &Path) -> PathBuf {
    let quoted = format!("\"{}\"", marker.display());
    work.shared(
        name,
        &CSpec::plain(&["hostile_mix_fix.c"]).define("FIX_MARKER", Some(&quoted)).define("FIX_DELTA", Some("7")),
    )
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
}

fn apply_limited(pid: u32, meta: &Path) -> Limited {
    run_limited(&mut trigger_command(pid, meta, false), LIMIT)
}

/// The outcome of an apply that had an attacker's object within reach: the attacker's
/// constructor did not run, and either the checked patch is applied or the trigger
/// refused cleanly and the process is unpatched. Returns whether it was applied.
fn checked_code_or_refusal(app: &mut App, l: &Limited, marker: &Path) -> bool {
    assert!(!marker.exists(), "the attacker's constructor ran inside the target: {l:?}");
    assert!(!l.timed_out, "the trigger hung: {l:?}");
    app.assert_alive();
    let probe = app.ask("probe");
    if l.out.code == Some(0) {
        assert_eq!(probe, MIX_NEW, "applied: the checked code runs");
        true
    } else {
        l.out.assert_refused(&[]);
        assert_eq!(l.out.code, Some(1), "{l:?}");
        assert_eq!(probe, MIX_OLD, "refused: the process is unpatched");
        false
    }
}

#[test]
fn symlink_flipped_by_the_folder_owner() {
    let work = Work::new();
    let mix = Mix::build(&work, 0);
    let marker = work.path().join("marker");
    let evil = attacker(&work, "evil", &marker);
    // The attacker's folder: theirs, not writable by others; the good object in it is root's.
    let dir = work.path().join("theirs");
    std::fs::create_dir(&dir).unwrap();
    let good = dir.join("libmix_fix.so");
    std::fs::copy(&mix.fix, &good).unwrap();
    std::fs::copy(&evil, dir.join("evil.so")).unwrap();
    std::fs::hard_link(&good, dir.join("good.real")).unwrap();
    chown(&dir.join("evil.so"), NOBODY);
    chown(&dir, NOBODY);
    let meta = work.patch("mix", &good, &[(&mix.lib, MIX_FUNCS)]);

    // The attacker flips the path between the good file and a symlink to theirs.
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (stop, dir, good) = (stop.clone(), dir.clone(), good.clone());
        std::thread::spawn(move || {
            let mut flips = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let tmp = dir.join("tmp");
                let _ = std::fs::remove_file(&tmp);
                let evil_next = flips & 1 == 0;
                let made =
                    if evil_next { symlink("evil.so", &tmp) } else { std::fs::hard_link(dir.join("good.real"), &tmp) };
                // Errors end the loop: the folder is gone once a failed test unwinds.
                if made.and_then(|()| std::fs::rename(&tmp, &good)).is_err() {
                    break;
                }
                flips += 1;
            }
            flips
        })
    };
    // A fresh process for each apply: a process that loaded the object once would get
    // the loaded copy back from dlopen (by name), whatever the path holds now.
    let start = Instant::now();
    let (mut applied, mut refused) = (0, 0);
    while start.elapsed() < Duration::from_secs(4) && !marker.exists() {
        let mut app = App::start(&mix.app);
        let l = apply_limited(app.pid(), &meta);
        if checked_code_or_refusal(&mut app, &l, &marker) {
            applied += 1;
        } else {
            refused += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let flips = flipper.join().unwrap();
    println!("{applied} applied, {refused} refused, {flips} flips");
    assert!(
        !marker.exists(),
        "the attacker's constructor ran inside the target ({applied} applied, {refused} refused)"
    );
    assert!(applied + refused > 10, "too few attempts to mean anything: {applied} + {refused}");
}

fn folder_with_mode(mode: u32) {
    let work = Work::new();
    let mix = Mix::build(&work, 0);
    let dir = work.path().join(format!("mode{mode:o}"));
    std::fs::create_dir(&dir).unwrap();
    let fix = dir.join("libmix_fix.so");
    std::fs::copy(&mix.fix, &fix).unwrap();
    std::fs::set_permissions(&fix, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
    let meta = work.patch("mix", &fix, &[(&mix.lib, MIX_FUNCS)]);
    let mut app = App::start(&mix.app);
    let l = apply_limited(app.pid(), &meta);
    println!("{:?}", l.out);
    l.out.assert_refused(&[dir.to_str().unwrap()]);
    assert_eq!(l.out.code, Some(1));
    assert!(l.out.stderr.contains("writable"), "says why: {l:?}");
    assert_eq!(app.ask("probe"), MIX_OLD);
    app.assert_alive();
}

#[test]
fn patch_in_a_group_writable_folder() {
    folder_with_mode(0o775);
}

#[test]
fn patch_in_a_world_writable_folder() {
    folder_with_mode(0o777);
}

/// `sh -c SCRIPT` ending in `exec env LD_PRELOAD=runtime APP`, as an [`App`].
fn start_wrapped(wrapper: &[&str], script: &str, app: &Path) -> App {
    let full = format!("{script} exec env LD_PRELOAD='{}' '{}'", artifacts().runtime.display(), app.display());
    let mut cmd = Command::new(wrapper[0]);
    cmd.args(&wrapper[1..]).args(["sh", "-c", &full]).env_remove("LD_PRELOAD");
    App::start_command(cmd, "wrapped mix_app")
}

#[test]
fn target_in_another_mount_namespace() {
    let work = Work::new();
    let mix = Mix::build(&work, 0);
    let marker = work.path().join("marker");
    let evil = attacker(&work, "evil", &marker);
    let meta = mix.patch(&work, "mix", &[]);
    // Inside the target's namespace the patch's path holds the attacker's object.
    let script = format!("mount --bind '{}' '{}' &&", evil.display(), mix.fix.display());
    let mut app = start_wrapped(&["unshare", "-m", "--propagation", "private"], &script, &mix.app);
    assert_eq!(app.ask("probe"), MIX_OLD);
    let l = apply_limited(app.pid(), &meta);
    checked_code_or_refusal(&mut app, &l, &marker);
}

#[test]
fn patch_path_through_proc_self_cwd() {
    let work = Work::new();
    let mix = Mix::build(&work, 0);
    let marker = work.path().join("marker");
    // The tool's folder holds the good object, the target's folder the attacker's, both
    // under the same name.
    let (ours, theirs) = (work.path().join("ours"), work.path().join("theirs"));
    std::fs::create_dir(&ours).unwrap();
    std::fs::create_dir(&theirs).unwrap();
    std::fs::copy(&mix.fix, ours.join("libmix_fix.so")).unwrap();
    std::fs::copy(attacker(&work, "evil", &marker), theirs.join("libmix_fix.so")).unwrap();
    let packed = mix.patch(&work, "mix", &[]);
    let mut m = PatchMeta::decode(&std::fs::read(&packed).unwrap()).unwrap();
    m.patch_so = "/proc/self/cwd/libmix_fix.so".into();
    let meta = work.path().join("cwd.meta");
    std::fs::write(&meta, m.encode()).unwrap();

    let mut cmd = Command::new(&mix.app);
    cmd.current_dir(&theirs).env("LD_PRELOAD", &artifacts().runtime);
    let mut app = App::start_command(cmd, "mix_app");
    assert_eq!(app.ask("probe"), MIX_OLD);
    let l = run_limited(trigger_command(app.pid(), &meta, false).current_dir(&ours), LIMIT);
    checked_code_or_refusal(&mut app, &l, &marker);
}

#[test]
fn impostor_with_the_same_build_id() {
    let work = Work::new();
    let mix = Mix::build(&work, 0);
    let marker = work.path().join("marker");
    let meta = mix.patch(&work, "mix", &[]);
    let m = PatchMeta::decode(&std::fs::read(&meta).unwrap()).unwrap();
    let id: String = m.patch_build_id.iter().map(|b| format!("{b:02x}")).collect();
    let quoted = format!("\"{}\"", marker.display());
    let impostor = work.shared(
        "impostor",
        &CSpec::plain(&["hostile_mix_fix.c"])
            .define("FIX_MARKER", Some(&quoted))
            .define("FIX_DELTA", Some("7"))
            .flag(&format!("-Wl,--build-id=0x{id}")),
    );
    let note = tool("readelf").arg("-n").arg(&impostor).output().unwrap();
    assert!(String::from_utf8_lossy(&note.stdout).contains(&id), "the impostor carries the same build-id");
    std::fs::copy(&impostor, &mix.fix).unwrap();

    let mut app = App::start(&mix.app);
    let l = apply_limited(app.pid(), &meta);
    let applied = checked_code_or_refusal(&mut app, &l, &marker);
    assert!(!applied, "an object with other bytes than were packed is refused");
}

/// Copies `files` and every library they need (`ldd`) into `root` at their own paths.
fn populate(root: &Path, files: &[&Path]) {
    let copy = |from: &Path, to_abs: &Path| {
        let to = root.join(to_abs.strip_prefix("/").unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copy {} -> {}: {e}", from.display(), to.display()));
    };
    for f in files {
        copy(f, f);
        let out = Command::new("ldd").arg(f).output().unwrap();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let path = match words.as_slice() {
                [_, "=>", p, ..] if p.starts_with('/') => *p,
                [p, ..] if p.starts_with('/') => *p,
                _ => continue,
            };
            let real = std::fs::canonicalize(path).unwrap();
            copy(&real, Path::new(path));
        }
    }
}

/// A target chrooted into a minimal root that holds the application, its libraries and
/// the runtime; with `copy`, also a copy of the patch object at the patch's path (else
/// the object exists only outside); with `proc`, `/proc` is mounted in it (in a mount
/// namespace of its own). It must be patchable and revertible.
fn chrooted(copy: bool, proc: bool) {
    let work = Work::new();
    let mix = Mix::build(&work, 0);
    let meta = mix.patch(&work, "mix", &[]);
    let root = work.path().join("root");
    let mut files = vec![
        mix.app.as_path(),
        mix.lib.as_path(),
        artifacts().runtime.as_path(),
        Path::new("/bin/sh"),
        Path::new("/usr/bin/env"),
    ];
    if copy {
        files.push(&mix.fix);
    }
    populate(&root, &files);
    std::fs::create_dir_all(root.join("proc")).unwrap();
    let r = root.display();
    let inside = format!("exec env LD_PRELOAD={} {}", artifacts().runtime.display(), mix.app.display());
    let mut cmd = tool("unshare");
    if proc {
        cmd.args(["-m", "--propagation", "private", "sh", "-c"]);
        cmd.arg(format!("mount -t proc proc '{r}/proc' && exec chroot '{r}' sh -c '{inside}'"));
    } else {
        cmd.args(["chroot"]).arg(&root).args(["sh", "-c", &inside]);
    }
    cmd.env_remove("LD_PRELOAD");
    let mut app = App::start_command(cmd, "chrooted mix_app");
    assert_eq!(app.ask("probe"), MIX_OLD);
    let l = apply_limited(app.pid(), &meta);
    println!("{:?}", l.out);
    l.out.assert_ok("apply to a chrooted target");
    assert_eq!(app.ask("probe"), MIX_NEW);
    run_limited(&mut trigger_command(app.pid(), &meta, true), LIMIT).out.assert_ok("revert in a chrooted target");
    assert_eq!(app.ask("probe"), MIX_OLD);
    app.assert_alive();
}

#[test]
fn target_in_a_chroot_with_proc() {
    chrooted(true, true);
}

#[test]
fn target_in_a_chroot_without_proc() {
    chrooted(true, false);
}

#[test]
fn target_in_a_chroot_without_the_patch_object() {
    chrooted(false, true);
}

#[test]
fn target_in_a_chroot_without_the_patch_object_nor_proc() {
    chrooted(false, false);
}
