//! Issue 7 §3: the smaller defects of the same kind. A target that exits during the
//! transition (after the patch is live) or before it; `--timeout` values that are not a
//! number of seconds; a new-function name of ~4 KB; a `.meta` with a flag bit this
//! release does not know; a FIFO, a directory and `/dev/zero` where the patch object
//! should be.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libpulp_rs_tests::{
    artifacts, pulp, run_limited, trigger_command, App, CSpec, Limited, Mix, Work, MIX_FUNCS, MIX_NEW, MIX_OLD,
};
use pulp_meta::PatchMeta;

/// No tool run here may take longer: the ones that hang today are killed at this limit.
const LIMIT: Duration = Duration::from_secs(20);

fn start(mix: &Mix) -> App {
    let mut app = App::start(&mix.app);
    assert_eq!(app.ask("probe"), MIX_OLD);
    app
}

fn trigger_args(args: &[&str]) -> Limited {
    run_limited(std::process::Command::new(&artifacts().trigger).args(args), LIMIT)
}

/// Everything the tool printed, lower-cased.
fn said(l: &Limited) -> String {
    format!("{}\n{}", l.out.stdout, l.out.stderr).to_lowercase()
}

/// Rewrites `meta` (a valid file) through `change` into `name` in the work folder.
fn rewrite(work: &Work, meta: &Path, name: &str, change: impl FnOnce(&mut PatchMeta)) -> PathBuf {
    let mut m = PatchMeta::decode(&std::fs::read(meta).unwrap()).unwrap();
    change(&mut m);
    let path = work.path().join(name);
    std::fs::write(&path, m.encode()).unwrap();
    path
}

#[test]
fn target_exits_after_the_patch_is_live() {
    let work = Work::new();
    let mix = Mix::build(&work, 0);
    let meta = mix.patch(&work, "mix", &[]);
    let mut app = start(&mix);
    // A thread inside the library holds the transition; the process exits in 1 s with 57.
    assert!(app.ask("hold").starts_with("holding"));
    assert_eq!(app.ask("exit_after 1000 57"), "exiting");
    let l = run_limited(&mut trigger_command(app.pid(), &meta, false), LIMIT);
    println!("{l:?}");
    assert!(!l.timed_out, "{l:?}");
    let text = said(&l);
    assert!(!matches!(l.out.code, Some(1) | Some(101) | None), "applied, not refused or crashed: {l:?}");
    assert!(!text.contains("nothing changed") && !text.contains("failed to fill"), "{l:?}");
    let numbers: Vec<&str> = text.split(|c: char| !c.is_ascii_digit()).collect();
    assert!(
        text.contains("applied") && text.contains("exited") && numbers.contains(&"57"),
        "says the patch was applied, then the process exited with status 57: {l:?}"
    );
}

#[test]
fn target_exits_before_the_patch_is_live() {
    let work = Work::new();
    let mix = Mix::build(&work, 0);
    // The patch object's constructor never returns; the process exits meanwhile.
    let slow = work.shared("mix_slow", &CSpec::plain(&["hostile_mix_fix.c"]).define("FIX_CTOR_HANG", None));
    let meta = work.patch("slow", &slow, &[(&mix.lib, MIX_FUNCS)]);
    let mut app = start(&mix);
    assert_eq!(app.ask("exit_after 500 5"), "exiting");
    let l = run_limited(&mut trigger_command(app.pid(), &meta, false), LIMIT);
    println!("{l:?}");
    assert!(!l.timed_out, "{l:?}");
    assert!(!matches!(l.out.code, Some(0) | Some(101) | None), "not applied, no crash: {l:?}");
    assert!(said(&l).contains("exited"), "says the process exited: {l:?}");
}

/// `--timeout VALUE`: a usage error (no panic, not the status of "transition left
/// running", a message naming the option, the process untouched) or, where `accepting`
/// allows, accepted with a meaning: the patch applies normally.
fn timeout_value(value: &str, accepting: bool) {
    let work = Work::new();
    let mix = Mix::build(&work, 0);
    let meta = mix.patch(&work, "mix", &[]);
    let mut app = start(&mix);
    let pid = app.pid().to_string();
    let l = trigger_args(&[&format!("--timeout={value}"), "-p", &pid, meta.to_str().unwrap()]);
    println!("--timeout {value}: {l:?}");
    assert!(!l.timed_out, "{l:?}");
    if accepting && l.out.code == Some(0) {
        assert_eq!(app.ask("probe"), MIX_NEW, "--timeout {value} accepted: the patch is applied");
        return;
    }
    assert!(!matches!(l.out.code, Some(0) | Some(2) | Some(101) | None), "--timeout {value}: a usage error: {l:?}");
    assert!(l.out.stderr.contains("--timeout") || l.out.stderr.contains("timeout"), "names the option: {l:?}");
    assert_eq!(app.ask("probe"), MIX_OLD, "the process is untouched");
}

#[test]
fn timeout_inf() {
    timeout_value("inf", true);
}

#[test]
fn timeout_1e300() {
    timeout_value("1e300", true);
}

#[test]
fn timeout_nan() {
    timeout_value("nan", false);
}

#[test]
fn timeout_negative() {
    timeout_value("-1", false);
}

#[test]
fn new_function_name_of_4_kb() {
    let work = Work::new();
    let mix = Mix::build(&work, 0);
    let meta = mix.patch(&work, "mix", &[]);
    // A name the patch object does not export: the runtime refuses it, by name.
    // As long as a name may be: the refusal that names it is longer than 4 KB.
    let mut name: String = "very_long_function_name_".repeat(200);
    name.truncate(pulp_meta::format::MAX_FIELD_LEN);
    let long = rewrite(&work, &meta, "long.meta", |m| m.targets[0].functions[0].new = name.clone());
    let mut app = start(&mix);
    let l = run_limited(&mut trigger_command(app.pid(), &long, false), LIMIT);
    println!("{l:?}");
    l.out.assert_refused(&[]);
    assert!(!l.out.stderr.contains("unreadable"), "the refusal is readable: {l:?}");
    assert!(l.out.stderr.contains(&name[..64]), "the refusal names the function: {l:?}");
    assert_eq!(app.ask("probe"), MIX_OLD);
    app.assert_alive();
}

#[test]
fn unknown_flag_bit() {
    let work = Work::new();
    let mix = Mix::build(&work, 0);
    let meta = mix.patch(&work, "mix", &[]);
    // Flip a bit no release knows, then make the checksum right again: only the flag is
    // wrong with this file.
    let mut bytes = std::fs::read(&meta).unwrap();
    let payload_len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    bytes[16 + 1] |= 0x01; // flags is the payload's first u32: bit 8
    let crc = pulp_meta::format::crc32(&bytes[16..16 + payload_len]);
    bytes[16 + payload_len..].copy_from_slice(&crc.to_le_bytes());
    let flagged = work.path().join("flagged.meta");
    std::fs::write(&flagged, &bytes).unwrap();

    let mut app = start(&mix);
    let l = run_limited(&mut trigger_command(app.pid(), &flagged, false), LIMIT);
    println!("{l:?}");
    l.out.assert_refused(&["flag"]);
    assert!(["0x100", "256", "bit 8"].iter().any(|k| l.out.stderr.contains(k)), "names the flag: {l:?}");
    assert_eq!(app.ask("probe"), MIX_OLD);
    let dump = pulp(&["dump", flagged.to_str().unwrap()]);
    assert!(matches!(dump.code, Some(c) if c != 0 && c != 101), "pulp dump refuses it too: {dump:?}");
    assert!(dump.stderr.to_lowercase().contains("flag"), "{dump:?}");
    app.assert_alive();
}

/// The patch object's path is `what` (made by `make` at the packed path, or another
/// path): refused at once, the process untouched, and the tool does not hang.
fn not_a_regular_file(what: &str, make: impl FnOnce(&Path) -> Option<PathBuf>) {
    let work = Work::new();
    let mix = Mix::build(&work, 0);
    let mut meta = mix.patch(&work, "mix", &[]);
    std::fs::remove_file(&mix.fix).unwrap();
    let path = match make(&mix.fix) {
        None => mix.fix.clone(),
        Some(other) => {
            meta = rewrite(&work, &meta, "other.meta", |m| m.patch_so = other.display().to_string());
            other
        }
    };
    let mut app = start(&mix);
    let l = run_limited(&mut trigger_command(app.pid(), &meta, false), LIMIT);
    println!("{what}: {l:?}");
    assert!(!l.timed_out, "{what} as the patch object: the trigger hung");
    assert!(l.took < Duration::from_secs(5), "{what}: refused only after {:?}", l.took);
    l.out.assert_refused(&[path.to_str().unwrap(), "regular file", "not a file"]);
    assert_eq!(app.ask("probe"), MIX_OLD);
    app.assert_alive();
}

#[test]
fn patch_object_is_a_fifo() {
    not_a_regular_file("a FIFO", |p| {
        let c = CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo: {}", std::io::Error::last_os_error());
        None
    });
}

#[test]
fn patch_object_is_a_directory() {
    not_a_regular_file("a directory", |p| {
        std::fs::create_dir(p).unwrap();
        None
    });
}

#[test]
fn patch_object_is_dev_zero() {
    not_a_regular_file("/dev/zero", |_| Some(PathBuf::from("/dev/zero")));
}

/// A transition refused after the patch's pre-patch callback accepted it (here: 300
/// functions of the main executable are 300 code ranges, more than the runtime tracks):
/// the post-unpatch callback undoes what the pre-patch one prepared, the process runs on
/// unchanged, and the same request is refused again, not answered "already applied" for a
/// patch that never was.
#[test]
fn refusal_after_the_pre_patch_callback_leaves_nothing_behind() {
    const N: usize = 300;
    let work = Work::new();
    let dir = work.path();
    let mut app_c = String::from("#include <stdio.h>\n");
    let mut fix_c = String::from("#include <stdio.h>\n");
    for i in 0..N {
        app_c += &format!("int f{i}(int x) {{ return x + {i}; }}\n");
        fix_c += &format!("int f{i}_new(int x) {{ return x + {i} + 1000; }}\n");
    }
    let table: Vec<String> = (0..N).map(|i| format!("f{i}")).collect();
    app_c += &format!(
        "static int (*const all[])(int) = {{ {} }};\n\
         int main(void) {{\n  char line[64];\n  setvbuf(stdout, NULL, _IOLBF, 0);\n  puts(\"ready\");\n\
           while (fgets(line, sizeof line, stdin)) {{\n    long s = 0;\n\
             for (unsigned i = 0; i < sizeof all / sizeof *all; i++) s += all[i](0);\n\
             printf(\"sum=%ld\\n\", s);\n  }}\n  return 0;\n}}\n",
        table.join(", ")
    );
    let events = dir.join("events");
    fix_c += &format!(
        "static void event(const char *what) {{ FILE *f = fopen(\"{}\", \"a\"); if (f) {{ fprintf(f, \"%s\\n\", what); fclose(f); }} }}\n\
         int pulp_pre_patch(char *why, unsigned long size) {{ (void)why; (void)size; event(\"pre_patch\"); return 0; }}\n\
         void pulp_post_unpatch(void) {{ event(\"post_unpatch\"); }}\n",
        events.display()
    );
    std::fs::write(dir.join("wide_app.c"), app_c).unwrap();
    std::fs::write(dir.join("wide_fix.c"), fix_c).unwrap();
    let exe = work
        .executable("wide_app", &CSpec { files: vec![dir.join("wide_app.c")], patchable: true, ..CSpec::default() });
    let fix = work.shared("wide_fix", &CSpec { files: vec![dir.join("wide_fix.c")], ..CSpec::default() });
    let names: Vec<(String, String)> = (0..N).map(|i| (format!("f{i}"), format!("f{i}_new"))).collect();
    let funcs: Vec<(&str, &str)> = names.iter().map(|(o, n)| (o.as_str(), n.as_str())).collect();
    let meta = work.patch("wide", &fix, &[(&exe, &funcs)]);

    let mut app = App::start(&exe);
    let unpatched = format!("sum={}", (0..N).sum::<usize>());
    assert_eq!(app.ask("sum"), unpatched);
    let pid = app.pid().to_string();
    for attempt in 1..=2 {
        let l = trigger_args(&["-p", &pid, meta.to_str().unwrap()]);
        assert_eq!(l.out.code, Some(1), "attempt {attempt}: {:#?}", l.out);
        assert!(said(&l).contains("code ranges"), "attempt {attempt} says why: {:#?}", l.out);
        assert_eq!(app.ask("sum"), unpatched, "attempt {attempt}: nothing of the patch runs");
        let log = std::fs::read_to_string(&events).unwrap();
        assert_eq!(log, "pre_patch\npost_unpatch\n".repeat(attempt), "attempt {attempt}: callbacks");
    }
    let listed = pulp(&["patches", "-p", &pid]);
    listed.assert_ok("pulp patches");
    assert!(!listed.stdout.contains(&meta_id(&meta)), "no patch listed: {listed:#?}");
    app.assert_alive();
}

/// The short id `pulp patches` lists a patch by.
fn meta_id(meta: &Path) -> String {
    PatchMeta::decode(&std::fs::read(meta).unwrap()).unwrap().short_id()
}
