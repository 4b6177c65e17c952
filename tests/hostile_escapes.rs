//! Issue 8 §1: labels and names with terminal escape sequences are printed escaped by
//! `pulp dump`, `pulp-trigger` and `pulp patches`: a patch file must not be able to
//! rewrite the operator's terminal (set its title, clear it, colour it, hide text).

use libpulp_rs_tests::{pack, pulp, trigger, App, Mix, ToolOutput, Work, MIX_FUNCS, MIX_NEW, MIX_OLD};

/// A label with an OSC title change ended by BEL, a screen clear, a colour, and a C1 CSI.
const LABEL: &str = "CVE-2026-0001\u{1b}]0;owned\u{7}\u{1b}[2J\u{1b}[31mred\u{9b}1m";

fn assert_escaped(out: &ToolOutput, what: &str) {
    println!("{what}: {out:?}");
    for (stream, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let raw: Vec<char> = text.chars().filter(|c| matches!(*c, '\u{1b}' | '\u{7}' | '\u{9b}')).collect();
        assert!(raw.is_empty(), "{what} printed raw control characters {raw:?} on {stream}: {text:?}");
    }
}

#[test]
fn escape_sequences_in_labels_and_paths_are_printed_escaped() {
    let work = Work::new();
    let mix = Mix::build(&work, 0);
    // The patch object's file name carries an escape sequence too.
    let fix = work.path().join("libmix\u{1b}[8m_fix.so");
    std::fs::copy(&mix.fix, &fix).unwrap();
    let mut dsc = format!("{}\n!{LABEL}\n@{}\n", fix.display(), mix.lib.display());
    for (old, new) in MIX_FUNCS {
        dsc.push_str(&format!("{old}:{new}\n"));
    }
    let dsc_path = work.path().join("escapes.dsc");
    std::fs::write(&dsc_path, dsc).unwrap();
    let meta = work.path().join("escapes.meta");
    let packed = pack(&dsc_path, &meta);
    packed.assert_ok("pulp pack");
    assert_escaped(&packed, "pulp pack");

    let dump = pulp(&["dump", meta.to_str().unwrap()]);
    dump.assert_ok("pulp dump");
    assert_escaped(&dump, "pulp dump");
    assert!(dump.stdout.contains("CVE-2026-0001") && dump.stdout.contains("owned"), "the label is shown: {dump:?}");

    let mut app = App::start(&mix.app);
    let pid = app.pid().to_string();
    let applied = trigger(&["-p", &pid, meta.to_str().unwrap()]);
    applied.assert_ok("pulp-trigger");
    assert_escaped(&applied, "pulp-trigger");
    assert_eq!(app.ask("probe"), MIX_NEW);

    let patches = pulp(&["patches", "-p", &pid]);
    patches.assert_ok("pulp patches");
    assert_escaped(&patches, "pulp patches");
    assert!(patches.stdout.contains("CVE-2026-0001"), "the label is shown: {patches:?}");

    let reverted = trigger(&["--revert", "-p", &pid, meta.to_str().unwrap()]);
    reverted.assert_ok("pulp-trigger --revert");
    assert_escaped(&reverted, "pulp-trigger --revert");
    assert_eq!(app.ask("probe"), MIX_OLD);

    // A refusal that names the object (it is gone) is escaped as well.
    std::fs::remove_file(&fix).unwrap();
    let refused = trigger(&["-p", &pid, meta.to_str().unwrap()]);
    assert!(matches!(refused.code, Some(1)), "{refused:?}");
    assert_escaped(&refused, "pulp-trigger's refusal");
    app.assert_alive();
}
