//! `pulp-cc` as `make` and `configure` see it: the same output and exit status as the real
//! compiler, and live-patchable objects at the end.

use std::path::Path;
use std::process::{Command, Output};

use pulp_cc_build::inspect;
use pulp_meta::Prologue;

const PULP_CC: &str = env!("CARGO_BIN_EXE_pulp-cc");

const LIB: &str = "int shape_area(int w, int h) { return w * h; }\n\
                   __attribute__((noinline)) static int twice(int x) { return 2 * x; }\n\
                   int shape_perimeter(int w, int h) { return twice(w + h); }\n";
const APP: &str = "#include <stdio.h>\nint shape_area(int, int);\n\
                   int main(void) { printf(\"%d\\n\", shape_area(6, 7)); return 0; }\n";
const MAKEFILE: &str = "all: app\n\
libshape.so: shape.o\n\t$(CC) -shared -o $@ shape.o -Wl,--build-id=sha1\n\
shape.o: shape.c\n\t$(CC) -O2 -fPIC -c shape.c -o shape.o\n\
app: main.c libshape.so\n\t$(CC) -O2 main.c -o app -L. -lshape -Wl,-rpath,$(CURDIR)\n";

fn pulp_cc(dir: &Path, args: &[&str]) -> Output {
    Command::new(PULP_CC).args(args).current_dir(dir).env_remove("PULP_CC_DISABLE").output().unwrap()
}

fn cc(dir: &Path, args: &[&str]) -> Output {
    let real = std::env::var("PULP_CC_REAL").unwrap_or_else(|_| "cc".into());
    Command::new(real).args(args).current_dir(dir).output().unwrap()
}

/// `Command::new(name)`, failing the test with the program's name when it is not installed
/// (`./test.sh` installs make and cmake).
fn tool(name: &str) -> Command {
    let on_path = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()));
    assert!(on_path, "`{name}` is not installed (not on PATH): ./test.sh installs it (Debian package {name})");
    Command::new(name)
}

fn kind(path: &Path, name: &str) -> Option<Prologue> {
    inspect::functions(path).unwrap().into_iter().find(|f| f.name == name).unwrap().prologue
}

#[test]
fn make_builds_live_patchable_objects() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("shape.c"), LIB).unwrap();
    std::fs::write(d.join("main.c"), APP).unwrap();
    std::fs::write(d.join("Makefile"), MAKEFILE).unwrap();
    let out = tool("make").arg(format!("CC={PULP_CC}")).current_dir(d).output().unwrap();
    assert!(out.status.success(), "make failed: {}", String::from_utf8_lossy(&out.stderr));

    let so = d.join("libshape.so");
    for f in ["shape_area", "shape_perimeter", "twice"] {
        assert_eq!(kind(&so, f), Some(Prologue::NopPad66), "{f} in {}", so.display());
    }
    assert_eq!(kind(&d.join("app"), "main"), Some(Prologue::NopPad66));
    let run = Command::new(d.join("app")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&run.stdout), "42\n");

    // PULP_CC_DISABLE=1: a plain build.
    let plain = d.join("libplain.so");
    let out = Command::new(PULP_CC)
        .args(["-O2", "-fPIC", "-shared", "shape.c", "-o"])
        .arg(&plain)
        .current_dir(d)
        .env("PULP_CC_DISABLE", "1")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(kind(&plain, "shape_area"), None);
}

#[test]
fn configure_checks_see_the_real_compiler() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("conftest.c"), "#define ANSWER 42\nint x = ANSWER;\nint main(void) { return 0; }\n").unwrap();
    std::fs::write(d.join("broken.c"), "int main(void) { return undeclared_thing; }\n").unwrap();
    for args in [
        &["--version"][..],
        &["-dumpmachine"],
        &["-print-prog-name=ld"],
        &["-E", "conftest.c"],
        &["-E", "-dM", "-x", "c", "/dev/null"],
    ] {
        let (ours, theirs) = (pulp_cc(d, args), cc(d, args));
        assert_eq!(ours.status.code(), theirs.status.code(), "{args:?}");
        assert_eq!(ours.stdout, theirs.stdout, "stdout of {args:?}");
        assert_eq!(ours.stderr, theirs.stderr, "stderr of {args:?}");
    }
    // A failing compile fails the same way, with the compiler's diagnostics.
    let (ours, theirs) = (pulp_cc(d, &["-c", "broken.c"]), cc(d, &["-c", "broken.c"]));
    assert_eq!(ours.status.code(), theirs.status.code());
    assert_ne!(ours.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&ours.stderr).contains("undeclared_thing"));
    // A link failure too, and it leaves nothing behind to canonicalise.
    let ours = pulp_cc(d, &["broken.c", "-o", "broken"]);
    assert_ne!(ours.status.code(), Some(0));
    // `cc conftest.c` writes a.out, canonicalised like any executable.
    let ok = pulp_cc(d, &["conftest.c"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(kind(&d.join("a.out"), "main"), Some(Prologue::NopPad66));
    // A missing compiler: a message and a failure, not a hang or a crash.
    let out = Command::new(PULP_CC)
        .args(["-c", "conftest.c"])
        .current_dir(d)
        .env("PULP_CC_REAL", "/nonexistent/cc")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/cc"));
}

#[test]
fn launcher_form_and_loops() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("shape.c"), LIB).unwrap();
    // CMAKE_C_COMPILER_LAUNCHER=pulp-cc: `pulp-cc cc ARGS`.
    let out = pulp_cc(d, &["cc", "-O2", "-fPIC", "-shared", "shape.c", "-o", "libshape.so"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(kind(&d.join("libshape.so"), "shape_area"), Some(Prologue::NopPad66));
    // PULP_CC_REAL pointing back at pulp-cc: an error, not an endless chain.
    let out =
        Command::new(PULP_CC).args(["-c", "shape.c"]).current_dir(d).env("PULP_CC_REAL", PULP_CC).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PULP_CC_REAL"));
}

const CMAKELISTS: &str = "cmake_minimum_required(VERSION 3.13)\nproject(shape C)\n\
add_library(shape SHARED shape.c)\n\
target_link_options(shape PRIVATE -Wl,--build-id=sha1)\n";

/// CMake, both ways the tutorial shows: `CC=pulp-cc`, and the compiler and linker
/// launchers (CMake ≥ 3.21). Either way every function gets the canonical `66 90` pad.
#[test]
fn cmake_builds_live_patchable_objects() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("shape.c"), LIB).unwrap();
    std::fs::write(d.join("CMakeLists.txt"), CMAKELISTS).unwrap();
    let run = |build: &str, configure: &mut Command| {
        let out = configure.args(["-S", ".", "-B", build]).current_dir(d).output().expect("cmake is installed");
        assert!(out.status.success(), "cmake configure: {}", String::from_utf8_lossy(&out.stderr));
        let out = tool("cmake").args(["--build", build]).current_dir(d).output().unwrap();
        assert!(out.status.success(), "cmake --build: {}", String::from_utf8_lossy(&out.stderr));
        let so = d.join(build).join("libshape.so");
        for f in ["shape_area", "shape_perimeter", "twice"] {
            assert_eq!(kind(&so, f), Some(Prologue::NopPad66), "{f} in {}", so.display());
        }
    };
    run("as-compiler", tool("cmake").env("CC", PULP_CC));
    run(
        "as-launcher",
        tool("cmake")
            .arg(format!("-DCMAKE_C_COMPILER_LAUNCHER={PULP_CC}"))
            .arg(format!("-DCMAKE_C_LINKER_LAUNCHER={PULP_CC}")),
    );
}
