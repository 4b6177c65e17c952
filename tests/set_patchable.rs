//! `pulp set-patchable` chooses processes as `pulp-trigger` does (issue 21, from libpulp's
//! suite: by process name and by user, not one PID only): the chosen processes refuse
//! patches, the others are untouched; a choice of no process is an error.

use libpulp_rs_tests::{pulp, trigger, unique, App, Calc, Work};

const OLD: &str = "calc(5)=10";
const NEW: &str = "calc(5)=1010";

#[test]
fn by_name_and_user() {
    let work = Work::new();
    let calc = Calc::build(&work);
    let app = calc.app(&work);
    let meta = calc.patch(&work);
    // Two copies under a name no other test uses, and one under another name.
    let name = format!("sp{}", unique());
    let chosen_exe = work.path().join(&name);
    std::fs::copy(&app, &chosen_exe).unwrap();
    let mut chosen = [App::start(&chosen_exe), App::start(&chosen_exe)];
    let mut other = App::start(&app);
    let glob = format!("{name}*");

    let out = pulp(&["set-patchable", "--name", &glob, "--user", "root", "off"]);
    out.assert_ok("set-patchable --name off");
    for app in &chosen {
        assert!(out.stdout.contains(&format!("PID {} ({name}) refuses live patches", app.pid())), "{out:#?}");
    }
    assert_eq!(out.stdout.lines().count(), 2, "only the two chosen processes: {out:#?}");
    for app in &mut chosen {
        let refused = trigger(&["-p", &app.pid().to_string(), meta.to_str().unwrap()]);
        assert_eq!(refused.code, Some(1), "{refused:#?}");
        assert!(refused.stderr.contains("set-patchable off"), "{refused:#?}");
        assert_eq!(app.ask("call 5"), OLD);
    }
    trigger(&["-p", &other.pid().to_string(), meta.to_str().unwrap()]).assert_ok("the other process");
    assert_eq!(other.ask("call 5"), NEW);

    // Again: nothing to change, said so.
    let again = pulp(&["set-patchable", "--name", &glob, "off"]);
    again.assert_ok("set-patchable again");
    assert!(again.stdout.contains("(it already did)"), "{again:#?}");

    // Nobody matches: an error, nothing changed.
    let none = pulp(&["set-patchable", "--name", "no-such-program-*", "on"]);
    assert_eq!(none.code, Some(1), "{none:#?}");
    assert!(none.stderr.contains("no process selected"), "{none:#?}");

    pulp(&["set-patchable", "--name", &glob, "on"]).assert_ok("set-patchable --name on");
    for app in &mut chosen {
        trigger(&["-p", &app.pid().to_string(), meta.to_str().unwrap()]).assert_ok("apply once allowed");
        assert_eq!(app.ask("call 5"), NEW);
        app.assert_alive();
    }
    other.assert_alive();
}
