//! A library in the distribution layout (issue 21, from libpulp's own suite): the file
//! `libcalc.so.0.0.0`, its soname `libcalc.so.0` (a symlink, which the dynamic linker
//! opens), and the development link `libcalc.so`. `--revert-all` finds it by each of these
//! names, with `-p` and with `--all`; a target no process maps is an error, not "done".

use std::path::PathBuf;

use libpulp_rs_tests::{trigger, unique, App, CSpec, Work};

const OLD: &str = "calc(5)=10";
const NEW: &str = "calc(5)=1010";

struct Layout {
    work: Work,
    real: PathBuf,
    app: PathBuf,
    meta: PathBuf,
}

fn layout() -> Layout {
    let work = Work::new();
    let built = work.shared("calc", &CSpec::patchable(&["calc.c"]).flag("-Wl,-soname,libcalc.so.0"));
    let real = work.path().join("libcalc.so.0.0.0");
    std::fs::rename(&built, &real).unwrap();
    std::os::unix::fs::symlink("libcalc.so.0.0.0", work.path().join("libcalc.so.0")).unwrap();
    std::os::unix::fs::symlink("libcalc.so.0", work.path().join("libcalc.so")).unwrap();
    let fix = work.shared("calc_fix", &CSpec::plain(&["calc_fix.c"]));
    // Under a name of its own: a search of the machine finds only this test's process.
    let built_app = work.executable("calc_app", &CSpec::plain(&["calc_app.c"]).link("calc"));
    let app = work.path().join(format!("tn{}", unique()));
    std::fs::copy(&built_app, &app).unwrap();
    // Packed against the soname link, as a user would name the library.
    let soname_link = work.path().join("libcalc.so.0");
    let meta = work.patch("calc", &fix, &[(&soname_link, &[("calc", "calc_fixed")])]);
    Layout { work, real, app, meta }
}

#[test]
fn revert_all_finds_a_library_by_soname_symlink_and_file_name() {
    let l = layout();
    let mut app = App::start(&l.app);
    let pid = app.pid().to_string();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(maps.contains(l.real.to_str().unwrap()), "the process maps the real file: {maps}");
    let link = l.work.path().join("libcalc.so");
    for name in ["libcalc.so.0", link.to_str().unwrap(), "libcalc.so.0.0.0"] {
        trigger(&["-p", &pid, l.meta.to_str().unwrap()]).assert_ok("apply");
        assert_eq!(app.ask("call 5"), NEW);
        let out = trigger(&["--revert-all", name, "-p", &pid]);
        out.assert_ok(&format!("--revert-all {name}"));
        assert!(out.stdout.contains("reverted"), "{out:#?}");
        assert_eq!(app.ask("call 5"), OLD, "--revert-all {name}");
    }
    // The same through a search of the machine, by the soname (narrowed to this test's
    // program: other tests' processes may map a libcalc.so.0 too).
    trigger(&["-p", &pid, l.meta.to_str().unwrap()]).assert_ok("apply");
    let name = l.app.file_name().unwrap().to_str().unwrap();
    let out = trigger(&["--all", "--name", name, "--revert-all", "libcalc.so.0"]);
    out.assert_ok("--all --name --revert-all libcalc.so.0");
    assert!(out.stdout.contains("reverted in 1"), "{out:#?}");
    assert_eq!(app.ask("call 5"), OLD);
    app.assert_alive();
}

#[test]
fn a_selection_that_matches_nothing_is_an_error() {
    let l = layout();
    let mut app = App::start(&l.app);
    let pid = app.pid().to_string();
    trigger(&["-p", &pid, l.meta.to_str().unwrap()]).assert_ok("apply");
    // A misspelt target: no process maps it.
    let out = trigger(&["--all", "--revert-all", "libcalk.so.0"]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(out.stdout.contains("no process selected"), "{out:#?}");
    // A name that matches no process.
    let out = trigger(&["--name", "no-such-program-*", l.meta.to_str().unwrap()]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(out.stdout.contains("no process selected"), "{out:#?}");
    // One process, a target it does not map: named in the refusal.
    let out = trigger(&["--revert-all", "libcalk.so.0", "-p", &pid]);
    out.assert_refused(&["libcalk.so.0", "not mapped"]);
    assert_eq!(app.ask("call 5"), NEW, "every refusal left the patch in place");
    app.assert_alive();
}
