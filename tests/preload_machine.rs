//! `pulp preload on|off|status` (issue 18, item 2): the runtime in every process through
//! `/etc/ld.so.preload`, written atomically with other entries kept, refusing a runtime
//! that others could change; and what programs then see. Each step runs in a private
//! mount namespace whose `/etc` is an overlay (its upper folder keeps the changes from
//! one step to the next), so the machine's own `/etc` is never touched.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use libpulp_rs_tests::{artifacts, require_tool, tool, CSpec, ToolOutput, Work};

struct Etc {
    upper: PathBuf,
    scratch: PathBuf,
}

impl Etc {
    fn new(work: &Work, preload: Option<&str>) -> Etc {
        let upper = work.path().join("etc-upper");
        let scratch = work.path().join("etc-work");
        std::fs::create_dir_all(&upper).unwrap();
        std::fs::create_dir_all(&scratch).unwrap();
        std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(0o755)).unwrap();
        if let Some(text) = preload {
            std::fs::write(upper.join("ld.so.preload"), text).unwrap();
        }
        Etc { upper, scratch }
    }

    /// Run `command` (a shell command) with the overlay mounted on /etc.
    fn run(&self, command: &str) -> ToolOutput {
        require_tool("unshare");
        let script = format!(
            "set -e; mount -t overlay overlay -o lowerdir=/etc,upperdir={},workdir={} /etc; {command}",
            self.upper.display(),
            self.scratch.display()
        );
        libpulp_rs_tests::run(tool("unshare").args(["-m", "--propagation", "private", "sh", "-c", &script]))
    }

    /// What /etc/ld.so.preload says, seen from the overlay's upper folder (`None`: absent).
    fn preload(&self) -> Option<String> {
        std::fs::read_to_string(self.upper.join("ld.so.preload")).ok()
    }
}

fn pulp_cmd(args: &str) -> String {
    format!("{} {args}", artifacts().pulp.display())
}

/// A copy of the runtime in a folder of its own, with `mode`, owned by `uid`.
fn runtime_copy(work: &Work, name: &str, uid: u32, mode: u32) -> PathBuf {
    let dir = work.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let so = dir.join("libpulp_rs.so");
    std::fs::copy(&artifacts().runtime, &so).unwrap();
    std::os::unix::fs::chown(&so, Some(uid), Some(uid)).unwrap();
    std::fs::set_permissions(&so, std::fs::Permissions::from_mode(mode)).unwrap();
    so
}

#[test]
fn on_off_keep_other_entries_and_reach_every_program() {
    let work = Work::new();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let other = work.shared("other", &CSpec::plain(&["one.c"]));
    let original = format!("# the site's own preloads\n{}\n", other.display());
    let etc = Etc::new(&work, Some(&original));
    let runtime = runtime_copy(&work, "lib", 0, 0o755);
    let rt = runtime.display();

    let out = etc.run(&pulp_cmd("preload status"));
    assert_eq!(out.code, Some(1), "not preloaded yet: {out:#?}");
    let out = etc.run(&pulp_cmd(&format!("preload on --runtime {rt}")));
    out.assert_ok("pulp preload on");
    assert!(out.stdout.contains("now preloads"), "{out:#?}");
    assert_eq!(etc.preload().unwrap(), format!("{original}{rt}\n"), "the other entry and the comment are kept");

    // A program started with an empty environment maps it, and the other library too.
    let out = etc.run("env -i /bin/cat /proc/self/maps");
    out.assert_ok("cat");
    assert!(out.stdout.contains(&rt.to_string()), "{}", out.stdout);
    assert!(out.stdout.contains(&other.display().to_string()), "{}", out.stdout);
    assert_eq!(out.stderr, "", "the linker complains about nothing");

    // Twice: nothing written; status answers 0.
    let out = etc.run(&pulp_cmd(&format!("preload on --runtime {rt}")));
    out.assert_ok("pulp preload on again");
    assert!(out.stdout.contains("already preloads"), "{out:#?}");
    let out = etc.run(&pulp_cmd("preload status"));
    out.assert_ok("pulp preload status");
    assert!(out.stdout.contains(&rt.to_string()), "{out:#?}");

    // Another build of the runtime replaces the entry rather than adding a second one.
    let newer = runtime_copy(&work, "lib2", 0, 0o755);
    etc.run(&pulp_cmd(&format!("preload on --runtime {}", newer.display()))).assert_ok("pulp preload on (newer)");
    assert_eq!(etc.preload().unwrap(), format!("{original}{}\n", newer.display()));

    // Off: the file is as it was.
    let out = etc.run(&pulp_cmd("preload off"));
    out.assert_ok("pulp preload off");
    assert_eq!(etc.preload().unwrap(), original);
    let out = etc.run("env -i /bin/cat /proc/self/maps");
    assert!(!out.stdout.contains("libpulp_rs"), "{}", out.stdout);
    assert_eq!(etc.run(&pulp_cmd("preload status")).code, Some(1));
}

#[test]
fn a_runtime_others_could_change_is_refused_and_nothing_is_written() {
    let work = Work::new();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let etc = Etc::new(&work, None);
    let not_root = runtime_copy(&work, "nobody", 65534, 0o755);
    let writable = runtime_copy(&work, "writable", 0, 0o775);
    let open_dir = runtime_copy(&work, "opendir", 0, 0o755);
    std::fs::set_permissions(open_dir.parent().unwrap(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let not_runtime = work.shared("one", &CSpec::plain(&["one.c"]));
    for (so, why) in [
        (not_root.as_path(), "owned by uid 65534"),
        (writable.as_path(), "writable by its group"),
        (open_dir.as_path(), "writable by others"),
        (not_runtime.as_path(), "not the libpulp-rs runtime"),
        (Path::new("/nonexistent/libpulp_rs.so"), "No such file"),
    ] {
        let out = etc.run(&pulp_cmd(&format!("preload on --runtime {}", so.display())));
        assert_eq!(out.code, Some(1), "{out:#?}");
        assert!(out.stderr.contains(why), "{why}: {out:#?}");
        assert!(etc.preload().is_none(), "nothing written for {}", so.display());
    }
}

#[test]
fn static_programs_load_nothing_and_run() {
    let work = Work::new();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let etc = Etc::new(&work, None);
    let runtime = runtime_copy(&work, "lib", 0, 0o755);
    let src = work.path().join("static.c");
    std::fs::write(&src, "#include <stdio.h>\nint main(void) { puts(\"static ok\"); return 0; }\n").unwrap();
    let exe = work.path().join("static_app");
    let out = tool("cc").args(["-static", "-O2", "-o"]).arg(&exe).arg(&src).output().unwrap();
    assert!(out.status.success(), "cc -static: {}", String::from_utf8_lossy(&out.stderr));
    etc.run(&pulp_cmd(&format!("preload on --runtime {}", runtime.display()))).assert_ok("pulp preload on");
    let out = etc.run(&exe.display().to_string());
    out.assert_ok("the static program");
    assert_eq!(out.stdout, "static ok\n");
}
