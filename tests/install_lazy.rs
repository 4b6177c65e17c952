//! What installed patches cost a process (issue 20, item 3): a process reads the patch
//! directory's names once and opens nothing more unless it maps a target; a patch object
//! is read and loaded only when a target it patches is mapped (at start or at `dlopen`),
//! once per content hash, however many installed `.meta` files share it.

use std::path::{Path, PathBuf};
use std::process::Command;

use libpulp_rs_tests::{artifacts, patch_object_copies, pulp, tool, App, CSpec, Work};

const OLD: &str = "calc(5)=10";
const NEW: &str = "calc(5)=1010";

struct Fixture {
    work: Work,
    lib: PathBuf,
    dir: PathBuf,
}

/// Five patches of one build of libcalc installed into a fresh patch directory: four
/// share one small object (`small`), one has a 4 MiB object (`big`).
fn fixture() -> Fixture {
    let work = Work::new();
    // A build-id of its own for each fixture: `pulp install` also applies to the running
    // processes of the other tests of this file, which would then be busy or patched.
    static FIXTURES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = FIXTURES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tag = format!("{}{n}", std::process::id());
    let lib = work.shared("calc", &CSpec::patchable(&["calc.c"]).define("CALC_VERSION", Some(&tag)));
    let small = work.shared("small_fix", &CSpec::plain(&["marked_fix.c"]).define("MARK_NAME", Some("\"small\"")));
    let big = work.shared(
        "big_fix",
        &CSpec::plain(&["marked_fix.c"]).define("MARK_NAME", Some("\"big\"")).define("BIG_BYTES", Some("(4 << 20)")),
    );
    let dir = work.path().join("patches.d");
    // Four different patches (ids) of one object: options tell them apart.
    let options: [&[&str]; 5] = [&[], &["immediate"], &["state 7 1"], &["state 8 1"], &[]];
    for (i, object) in [&small, &small, &small, &small, &big].into_iter().enumerate() {
        let meta = work.patch_with_options(&format!("p{i}"), object, &[(&lib, &[("calc", "calc_fixed")])], options[i]);
        let out = pulp(&["install", "--dir", dir.to_str().unwrap(), meta.to_str().unwrap()]);
        out.assert_ok("pulp install");
    }
    Fixture { work, lib, dir }
}

fn start(exe: &Path, dir: &Path) -> App {
    let mut cmd = Command::new(exe);
    cmd.env("LD_PRELOAD", &artifacts().runtime).env("PULP_PATCH_DIR", dir);
    App::start_command(cmd, &exe.file_name().unwrap().to_string_lossy())
}

/// How many times each object's constructor ran, by its mark.
fn constructors(stderr: &str, mark: &str) -> usize {
    stderr.lines().filter(|l| *l == format!("constructor of {mark} ran")).count()
}

#[test]
fn a_process_that_maps_no_target_reads_only_the_directory() {
    let f = fixture();
    let trace = f.work.path().join("strace.log");
    let out = tool("strace")
        .args(["-f", "-qq", "-e", "trace=open,openat,openat2", "-o"])
        .arg(&trace)
        .arg("-E")
        .arg(format!("LD_PRELOAD={}", artifacts().runtime.display()))
        .arg("-E")
        .arg(format!("PULP_PATCH_DIR={}", f.dir.display()))
        .arg("true")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("constructor of"), "no patch object may be loaded: {stderr}");
    let log = std::fs::read_to_string(&trace).unwrap();
    let dir = f.dir.to_str().unwrap();
    let opened: Vec<&str> = log.lines().filter(|l| l.contains(dir)).collect();
    assert_eq!(opened.len(), 1, "one open, of the directory itself: {opened:#?}");
    assert!(opened[0].contains("O_DIRECTORY") && !opened[0].contains(".meta"), "{opened:#?}");
}

#[test]
fn objects_load_when_their_target_is_mapped_once_per_content() {
    let f = fixture();
    let dl_app = f.work.executable("calc_dlopen_app", &CSpec::plain(&["calc_dlopen_app.c"]).flag("-ldl"));

    // Loaded later: nothing of the patches until the target is mapped.
    let mut later = start(&dl_app, &f.dir);
    assert_eq!(later.ask("call 5"), "not loaded");
    assert_eq!(patch_object_copies(later.pid()), 0, "no patch object before its target");
    assert_eq!(constructors(&later.stderr(), "small") + constructors(&later.stderr(), "big"), 0);
    assert_eq!(later.ask(&format!("load {}", f.lib.display())), "loaded");
    assert_eq!(later.ask("call 5"), NEW, "patched before its first call");
    assert_eq!(patch_object_copies(later.pid()), 2, "one copy per content: small (4 patches) and big");
    // stderr only grows: once both lines are there, count them.
    later.stderr_with("constructor of small ran");
    let stderr = later.stderr_with("constructor of big ran");
    assert_eq!(constructors(&stderr, "small"), 1, "{stderr}");
    assert_eq!(constructors(&stderr, "big"), 1, "{stderr}");

    // Mapped at start: applied there, the same way.
    let app = f.work.executable("calc_app", &CSpec::plain(&["calc_app.c"]).link("calc"));
    let mut at_start = start(&app, &f.dir);
    assert_eq!(at_start.ask("call 5"), NEW);
    assert_eq!(patch_object_copies(at_start.pid()), 2);
    let stderr = at_start.stderr_with("constructor of small ran");
    assert_eq!(constructors(&stderr, "small"), 1, "{stderr}");
    let patches = pulp(&["patches", "-p", &at_start.pid().to_string()]);
    patches.assert_ok("pulp patches");
    assert_eq!(patches.stdout.matches("applied").count(), 5, "{}", patches.stdout);

    // Without the directory: the program's own code.
    let mut plain = start(&app, &f.work.path().join("none"));
    assert_eq!(plain.ask("call 5"), OLD);
}

/// A process whose start found patches but none of their targets reads the directory
/// when a target is first mapped, not before (`runtime/src/startscan.rs`): what was
/// uninstalled in between is not applied, what was installed in between is.
#[test]
fn the_directory_is_read_when_a_target_is_first_mapped() {
    let f = fixture();
    let dl_app = f.work.executable("calc_dlopen_app", &CSpec::plain(&["calc_dlopen_app.c"]).flag("-ldl"));
    let metas = |dir: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "meta"))
            .collect();
        v.sort();
        v
    };

    // Uninstalled after the start, before the target is loaded: not applied.
    let mut app = start(&dl_app, &f.dir);
    assert_eq!(app.ask("call 5"), "not loaded");
    let moved = f.work.path().join("moved");
    std::fs::create_dir_all(&moved).unwrap();
    let saved = metas(&f.dir);
    assert_eq!(saved.len(), 5, "{saved:?}");
    for m in &saved {
        std::fs::rename(m, moved.join(m.file_name().unwrap())).unwrap();
    }
    assert_eq!(app.ask(&format!("load {}", f.lib.display())), "loaded");
    assert_eq!(app.ask("call 5"), OLD, "an uninstalled patch must not be applied: {}", app.stderr());
    assert_eq!(patch_object_copies(app.pid()), 0);

    // One unrelated patch at the start; the fix installed after it: applied at the load.
    std::fs::rename(moved.join(saved[4].file_name().unwrap()), &saved[4]).unwrap();
    let other = f.work.path().join("other.meta");
    std::fs::rename(&saved[4], &other).unwrap();
    let unrelated = f.dir.join("u+00112233445566778899aabbccddeeff00112233.meta");
    std::fs::copy(&other, &unrelated).unwrap();
    let mut app = start(&dl_app, &f.dir);
    assert_eq!(app.ask("call 5"), "not loaded");
    std::fs::rename(moved.join(saved[0].file_name().unwrap()), &saved[0]).unwrap();
    assert_eq!(app.ask(&format!("load {}", f.lib.display())), "loaded");
    assert_eq!(app.ask("call 5"), NEW, "{}", app.stderr());
    let stderr = app.stderr_with("constructor of small ran");
    assert!(stderr.contains("constructor of small ran"), "{stderr}");
}
