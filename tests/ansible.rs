//! The Ansible module `pulp_livepatch` (`ansible/`), run by ansible-core's
//! `ansible-playbook` against this host (`connection: local`) on real processes: check
//! mode, apply, apply again (changed=false), a list of PIDs, revert; `install: true` when
//! this `pulp` has `install`.
//!
//! Needs `ansible-playbook`: `$PULP_ANSIBLE_PLAYBOOK`, on `PATH`, or in the virtual
//! environment `./test.sh` makes (`target/ansible`).

use std::path::{Path, PathBuf};
use std::process::Command;

use libpulp_rs_tests::{artifacts, run, unique, App, CSpec, Work};
use serde_json::{json, Value};

fn ansible_playbook() -> PathBuf {
    if let Some(p) = std::env::var_os("PULP_ANSIBLE_PLAYBOOK") {
        return p.into();
    }
    let on_path = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|d| d.join("ansible-playbook")).find(|p| p.exists()));
    let venv = artifacts().dir.parent().unwrap().join("ansible/bin/ansible-playbook");
    on_path.or_else(|| venv.exists().then_some(venv)).unwrap_or_else(|| {
        panic!(
            "ansible-playbook not found: install ansible-core (what ./test.sh does: python3 -m venv target/ansible && \
             target/ansible/bin/pip install ansible-core), or set PULP_ANSIBLE_PLAYBOOK"
        )
    })
}

/// A folder holding the collection (a link to `ansible/`) and Ansible's own files.
struct Ansible {
    dir: tempfile::TempDir,
    program: PathBuf,
}

impl Ansible {
    fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("pulp-ansible").tempdir().unwrap();
        let ns = dir.path().join("collections/ansible_collections/libpulp_rs");
        std::fs::create_dir_all(&ns).unwrap();
        std::os::unix::fs::symlink(Path::new(env!("CARGO_MANIFEST_DIR")).join("ansible"), ns.join("livepatch"))
            .unwrap();
        Ansible { dir, program: ansible_playbook() }
    }

    /// Run the module once with `args` (`--check` when `check`); its registered result.
    fn module(&self, args: Value, check: bool) -> Value {
        let out = self.dir.path().join("result.json");
        let _ = std::fs::remove_file(&out);
        let playbook = format!(
            "- hosts: localhost\n  connection: local\n  gather_facts: false\n  vars:\n    \
             ansible_python_interpreter: \"{{{{ ansible_playbook_python }}}}\"\n  tasks:\n    \
             - libpulp_rs.livepatch.pulp_livepatch: {args}\n      register: r\n      ignore_errors: true\n    \
             - ansible.builtin.copy:\n        content: \"{{{{ r | to_json }}}}\"\n        dest: {}\n      \
             check_mode: false\n",
            out.display()
        );
        let book = self.dir.path().join("play.yml");
        std::fs::write(&book, playbook).unwrap();
        let mut cmd = Command::new(&self.program);
        cmd.arg("-i").arg("localhost,").arg(&book);
        if check {
            cmd.arg("--check");
        }
        let home = self.dir.path().join("home");
        cmd.env("ANSIBLE_COLLECTIONS_PATH", self.dir.path().join("collections"))
            .env("ANSIBLE_HOME", &home)
            .env("ANSIBLE_LOCAL_TEMP", home.join("tmp"))
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_LOCALHOST_WARNING", "false")
            .env("ANSIBLE_INVENTORY_UNPARSED_WARNING", "false")
            .env_remove("LD_PRELOAD");
        let ran = run(&mut cmd);
        println!("{}", ran.stdout);
        let text = std::fs::read_to_string(&out).unwrap_or_else(|e| panic!("no result ({e}): {ran:#?}"));
        assert_eq!(ran.code, Some(0), "{ran:#?}");
        serde_json::from_str(&text).unwrap()
    }
}

const OLD: &str = "calc(5)=10";
const NEW: &str = "calc(5)=1010";

/// `(pid, result)` of the processes worked on (not those listed as not live-patchable).
fn results(r: &Value) -> Vec<(u64, String)> {
    let mut v: Vec<(u64, String)> = r["processes"]
        .as_array()
        .unwrap_or_else(|| panic!("no processes in {r:#}"))
        .iter()
        .filter(|p| p["result"] != "not_live_patchable")
        .map(|p| (p["pid"].as_u64().unwrap(), p["result"].as_str().unwrap().to_string()))
        .collect();
    v.sort();
    v
}

#[test]
fn pulp_livepatch_module() {
    let ansible = Ansible::new();
    let work = Work::new();
    let v = unique().to_string();
    let lib_name = format!("ansible{v}");
    let lib = work.shared(&lib_name, &CSpec::patchable(&["calc.c"]).define("CALC_VERSION", Some(&v)));
    let fix = work.shared("calc_fix", &CSpec::plain(&["calc_fix.c"]));
    let meta = work.patch("ansible", &fix, &[(&lib, &[("calc", "calc_fixed")])]);
    let exe = work.executable("ansible_app", &CSpec::plain(&["calc_app.c"]).link(&lib_name));
    let mut apps = [App::start(&exe), App::start(&exe)];
    let mut pids: Vec<u64> = apps.iter().map(|a| a.pid() as u64).collect();
    pids.sort();
    let mut no_runtime = App::start_with(&exe, false, &[]);
    let args = |extra: Value| {
        let mut a = json!({ "patch": meta, "pulp_trigger": artifacts().trigger, "pulp": artifacts().pulp });
        a.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        a
    };
    let mut calc = |want: &str| {
        for a in apps.iter_mut() {
            assert_eq!(a.ask("call 5"), want);
        }
    };

    // Check mode: would change, changes nothing.
    let r = ansible.module(args(json!({})), true);
    assert_eq!(r["changed"], true, "{r:#}");
    assert_eq!(results(&r), pids.iter().map(|&p| (p, "would_apply".to_string())).collect::<Vec<_>>(), "{r:#}");
    assert_eq!(r["not_live_patchable"], json!([no_runtime.pid()]), "{r:#}");
    calc(OLD);

    let r = ansible.module(args(json!({ "state": "present", "processes": "all" })), false);
    assert_eq!((r["changed"].clone(), r["failed"].clone()), (json!(true), json!(false)), "{r:#}");
    assert_eq!(results(&r), pids.iter().map(|&p| (p, "applied".to_string())).collect::<Vec<_>>(), "{r:#}");
    assert!(r["msg"].as_str().unwrap().contains("applied to 2"), "{r:#}");
    assert!(r["warnings"].to_string().contains("not live-patchable"), "{r:#}");
    calc(NEW);
    assert_eq!(no_runtime.ask("call 5"), OLD);

    // Idempotent.
    let r = ansible.module(args(json!({})), false);
    assert_eq!(r["changed"], false, "{r:#}");
    assert_eq!(results(&r), pids.iter().map(|&p| (p, "already_applied".to_string())).collect::<Vec<_>>(), "{r:#}");
    let r = ansible.module(args(json!({})), true);
    assert_eq!(r["changed"], false, "check mode after the apply: {r:#}");

    // Revert one process by PID, in check mode first.
    let one = json!({ "state": "absent", "processes": [pids[0]] });
    let r = ansible.module(args(one.clone()), true);
    assert_eq!((r["changed"].clone(), results(&r)), (json!(true), vec![(pids[0], "would_revert".into())]), "{r:#}");
    calc(NEW);
    let r = ansible.module(args(one.clone()), false);
    assert_eq!((r["changed"].clone(), results(&r)), (json!(true), vec![(pids[0], "reverted".into())]), "{r:#}");
    let r = ansible.module(args(one), false);
    assert_eq!((r["changed"].clone(), results(&r)), (json!(false), vec![(pids[0], "not_applied".into())]), "{r:#}");

    // Revert everywhere.
    let r = ansible.module(args(json!({ "state": "absent" })), false);
    assert_eq!(r["changed"], true, "{r:#}");
    calc(OLD);
    let r = ansible.module(args(json!({ "state": "absent" })), false);
    assert_eq!(r["changed"], false, "{r:#}");

    // A process that refuses fails the task, naming it.
    let r = ansible.module(args(json!({ "processes": [no_runtime.pid()] })), false);
    assert_eq!(r["failed"], true, "{r:#}");
    assert!(r["msg"].as_str().unwrap().contains("has not loaded the libpulp-rs runtime"), "{r:#}");
    let r = ansible.module(args(json!({ "processes": ["one"] })), false);
    assert_eq!(r["failed"], true, "{r:#}");
    assert!(r["msg"].as_str().unwrap().contains("is not a PID"), "{r:#}");

    install(&ansible, &args, &mut apps, &exe, &work);
}

/// `install: true`: the patch goes into a patch directory of this test and every running
/// process gets it; a process started afterwards has it from the start.
fn install(ansible: &Ansible, args: &dyn Fn(Value) -> Value, apps: &mut [App], exe: &Path, work: &Work) {
    let dir = work.path().join("patches.d");
    std::fs::create_dir(&dir).unwrap();
    std::env::set_var("PULP_PATCH_DIR", &dir);
    let with_dir = |state: &str| args(json!({ "install": true, "state": state, "patch_dir": dir }));
    let r = ansible.module(with_dir("present"), true);
    assert_eq!((r["changed"].clone(), r["installed"].clone()), (json!(true), json!(true)), "{r:#}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "check mode installed it: {r:#}");
    let r = ansible.module(with_dir("present"), false);
    assert_eq!((r["changed"].clone(), r["installed"].clone()), (json!(true), json!(true)), "{r:#}");
    for a in apps.iter_mut() {
        assert_eq!(a.ask("call 5"), NEW);
    }
    let mut later = App::start(exe);
    assert_eq!(later.ask("call 5"), NEW, "a process started after the install");
    let r = ansible.module(with_dir("present"), false);
    assert_eq!(r["changed"], false, "{r:#}");
    let r = ansible.module(with_dir("absent"), false);
    assert_eq!((r["changed"].clone(), r["installed"].clone()), (json!(true), json!(false)), "{r:#}");
    for a in apps.iter_mut().chain([&mut later]) {
        assert_eq!(a.ask("call 5"), OLD);
    }
}
