//! The fixes every compiler is tested with: results of the workers of bp_app before and
//! after each patch.

use libpulp_rs_tests::{apply, revert, App};

use super::common::{functions_of, Compiler, Project};

/// What the workers compute unpatched: bp_exported(7), bp_twice_a(5), bp_twice_b(5),
/// bp_mix(3), bp_clone_user(4), bp_new_user(1), bp_cxx(2) + bp_cxx(-1) (which throws and
/// catches), bp_table_sum(), how much the
/// thread's bp_tls() grows per call, bp_checked(4, 1).
pub const BEFORE: &str = "8 51 52 109 77 1 701 10 2 21";

/// (diff, results once applied, the changed functions `pulp build-patch` names, the
/// functions the patch object holds besides `__pulp_got` and the aliases)
pub const FIXES: &[(&str, &str, &[&str], &[&str])] = &[
    ("exported", "1008 51 52 109 77 1 701 10 2 21", &["bp_exported"], &["bp_exported"]),
    // scale() is inlined into both callers: both are replaced.
    ("inlined", "8 101 102 109 77 1 701 10 2 21", &["bp_twice_a", "bp_twice_b"], &["bp_twice_a", "bp_twice_b"]),
    // bp_hidden (another file, hidden) and offset (static) stay the running object's.
    ("mix", "8 51 52 163 77 1 701 10 2 21", &["bp_mix"], &["bp_mix"]),
    // A new static variable and a new helper live in the patch object.
    ("new_helper", "8 51 52 109 77 1001 701 10 2 21", &["bp_new_user"], &["bp_new_user", "new_helper"]),
    // A new constant table of pointers to the running object's functions (one static):
    // the patch carries the table, the runtime fills its entries.
    ("fnptr_table", "8 51 52 109 77 103 701 10 2 21", &["bp_new_user"], &["bp_new_user"]),
    // A new function in another file of the library, used by a changed one.
    ("two_files", "8 51 52 118 77 1 701 10 2 21", &["bp_mix"], &["bp_mix", "bp_triple"]),
    // The running object's thread-local variables, exported (general dynamic) and static
    // (local dynamic): each thread's own grow by 11 a call instead of 2.
    ("tls", "8 51 52 109 77 1 701 10 11 21", &["bp_tls"], &["bp_tls"]),
    // gcc moves bp_checked's unlikely path to bp_checked.cold: it comes along.
    ("cold", "8 51 52 109 77 1 701 10 2 25", &["bp_checked"], &["bp_checked"]),
    // C++: a function that throws (its exception crosses from the patch into the running
    // library's catch).
    ("cxx", "8 51 52 109 77 1 1401 10 2 21", &["_ZN12_GLOBAL__N_15greetEi"], &["_ZN12_GLOBAL__N_15greetEi"]),
];

fn changed_line(stdout: &str) -> &str {
    stdout.lines().find(|l| l.starts_with("changed functions:")).unwrap_or("")
}

pub fn every_kind_of_fix(compiler: Compiler) {
    let project = Project::new(compiler);
    let library_size = std::fs::metadata(&project.running).unwrap().len();
    let mut app = App::start(&project.app);
    let pid = app.pid();
    assert_eq!(app.ask("sync"), BEFORE);

    for (diff, after, changed, held) in FIXES {
        let out = project.build_patch(diff, &[]);
        out.assert_ok(&format!("pulp build-patch {diff}"));
        println!("{diff} ({compiler:?}):\n{}", out.stdout);
        let line = changed_line(&out.stdout);
        for f in *changed {
            assert!(line.contains(&format!("{f} (")), "{diff}: `{f}` is not among the changed functions: {line}");
        }
        let mut want: Vec<String> = held.iter().map(|s| s.to_string()).collect();
        want.push("__pulp_got".into());
        let all = functions_of(&project.patch_so(diff));
        if *diff == "cold" && matches!(compiler, Compiler::Gcc) {
            assert!(all.contains(&"bp_checked.cold".to_string()), "the cold part is not in the patch: {all:?}");
        }
        let mut got: Vec<String> =
            all.into_iter().filter(|f| !f.starts_with("__pulp_new_") && !f.ends_with(".cold")).collect();
        want.sort();
        got.sort();
        assert_eq!(got, want, "{diff}: the patch object holds other functions than the changed and new ones");
        let size = std::fs::metadata(project.patch_so(diff)).unwrap().len();
        println!("{diff}: patch object {size} bytes, library {library_size} bytes");

        apply(pid, &project.meta(diff)).assert_ok(&format!("pulp-trigger {diff}"));
        assert_eq!(app.ask("sync"), *after, "{diff} applied");
        revert(pid, &project.meta(diff)).assert_ok(&format!("pulp-trigger --revert {diff}"));
        assert_eq!(app.ask("sync"), BEFORE, "{diff} reverted");
    }

    // The patched code changes the running object's own static variable: the unpatched
    // bp_peek sees it.
    assert_eq!(app.ask("count"), "1");
    let out = project.build_patch("static_var", &[]);
    out.assert_ok("pulp build-patch static_var");
    apply(pid, &project.meta("static_var")).assert_ok("pulp-trigger static_var");
    assert_eq!(app.ask("count"), "11");
    assert_eq!(app.ask("peek"), "11");
    revert(pid, &project.meta("static_var")).assert_ok("pulp-trigger --revert static_var");
    assert_eq!(app.ask("count"), "12");

    // A change of a compiler clone (gcc's weigh.constprop.0; clang may keep weigh).
    let out = project.build_patch("clone", &[]);
    out.assert_ok("pulp build-patch clone");
    println!("clone ({compiler:?}):\n{}", out.stdout);
    assert!(changed_line(&out.stdout).contains("weigh"), "{}", out.stdout);
    apply(pid, &project.meta("clone")).assert_ok("pulp-trigger clone");
    assert_eq!(app.ask("sync"), "8 51 52 109 49 1 701 10 2 21", "clone applied");
    revert(pid, &project.meta("clone")).assert_ok("pulp-trigger --revert clone");
    assert_eq!(app.ask("sync"), BEFORE, "clone reverted");
    app.assert_alive();
}
