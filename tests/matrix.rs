//! The prologue matrix: every prologue kind × {shared library, PIE executable, non-PIE
//! executable} × {gcc, clang}. Each case builds `mx_target()` (tests/fixtures/mx_lib.c)
//! with that compiler and those flags, checks that `pulp livepatchable` passes the object
//! and reports the expected prologue kind for `mx_target`, starts the application under
//! the runtime, packs a patch for `mx_target`, applies it (the output switches, for the
//! direct call and the call through a function pointer in main's loop) and reverts it
//! (the output switches back). The one combination refused by design, an executable's
//! `endbr64` function with gcc's raw `90 90` NOPs, must be refused with a message that
//! says how to rebuild, and leave the process as it was.
//!
//! Each row of the table at the bottom is one `#[test]`, named after its case.

use std::path::{Path, PathBuf};
use std::process::Command;

use libpulp_rs_tests::{apply, fixture, pulp, revert, run, App, CSpec, Work};
use pulp_meta::Prologue;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cc {
    Gcc,
    Clang,
}

impl Cc {
    fn command(self) -> &'static str {
        match self {
            Cc::Gcc => "gcc",
            Cc::Clang => "clang",
        }
    }
}

/// How `mx_target` is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `-fpatchable-function-entry=16,14` through cc-build: `66 90` (gcc's `90 90`
    /// canonicalised, clang's as it comes).
    Nop66,
    /// The same without canonicalisation: gcc's raw `90 90` (clang still writes `66 90`).
    Nop90,
    /// `-fcf-protection` + NOP pad through cc-build: `endbr64; 66 90`.
    Endbr,
    /// The same without canonicalisation: gcc's `endbr64; 90 90` (clang: `endbr64; 66 90`).
    Endbr90,
    /// `-pg -mfentry`, no NOP pad.
    Fentry,
    /// `-pg -mfentry -fcf-protection`: `endbr64` then the call to `__fentry__`.
    EndbrFentry,
}

impl Kind {
    fn flags(self) -> &'static [&'static str] {
        match self {
            Kind::Nop66 | Kind::Nop90 => &[],
            Kind::Endbr | Kind::Endbr90 => &["-fcf-protection"],
            Kind::Fentry => &["-pg", "-mfentry"],
            Kind::EndbrFentry => &["-pg", "-mfentry", "-fcf-protection"],
        }
    }

    fn nop_pad(self) -> bool {
        !matches!(self, Kind::Fentry | Kind::EndbrFentry)
    }

    fn raw(self) -> bool {
        matches!(self, Kind::Nop90 | Kind::Endbr90)
    }
}

/// Where `mx_target` lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// `libmx.so`, called by a plain application.
    Lib,
    /// The application itself, `-fPIE -pie`.
    Pie,
    /// The application itself, `-fno-pie -no-pie`.
    NoPie,
}

impl Target {
    /// The ELF type (`e_type`) of the object holding `mx_target`, and how
    /// `pulp livepatchable` names it.
    fn object(self) -> (u16, &'static str) {
        const ET_EXEC: u16 = 2;
        const ET_DYN: u16 = 3;
        match self {
            Target::Lib => (ET_DYN, "shared object"),
            Target::Pie => (ET_DYN, "executable"),
            Target::NoPie => (ET_EXEC, "executable"),
        }
    }

    /// Compile flags of the executable's sources.
    fn compile_flags(self) -> &'static [&'static str] {
        match self {
            Target::Lib => &[],
            Target::Pie => &["-fPIE"],
            Target::NoPie => &["-fno-pie"],
        }
    }

    /// Compile and link flags of the executable.
    fn exe_flags(self) -> &'static [&'static str] {
        match self {
            Target::Lib => &[],
            Target::Pie => &["-fPIE", "-pie"],
            Target::NoPie => &["-fno-pie", "-no-pie"],
        }
    }
}

/// What a case must end with.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// `pulp livepatchable` reports this kind; apply and revert switch the output.
    Patched(Prologue),
    /// `pulp livepatchable` reports this kind; pulp-trigger refuses to apply.
    Refused(Prologue),
}

#[derive(Debug)]
struct Case {
    kind: Kind,
    target: Target,
    cc: Cc,
    expect: Expect,
}

/// What one command line prints before (`x + 1`) and after (`x + 1001`) the patch,
/// calling `mx_target` directly and through the function pointer.
const CALL: &str = "call 5";
const BEFORE: &str = "6 6";
const AFTER: &str = "1006 1006";

impl Case {
    fn spec(&self, fixtures: &[&str]) -> CSpec {
        CSpec::plain(fixtures).compiler(self.cc.command())
    }

    /// A spec of the object holding `mx_target`, with the kind's flags.
    fn kind_spec(&self, fixtures: &[&str]) -> CSpec {
        let mut spec = self.spec(fixtures);
        spec.patchable = self.kind.nop_pad();
        if self.kind.raw() {
            spec = spec.raw_entries();
        }
        for f in self.kind.flags() {
            spec = spec.flag(f);
        }
        spec
    }

    /// Builds the object holding `mx_target` and the application; returns both (the same
    /// file for an executable target).
    fn build(&self, work: &Work) -> (PathBuf, PathBuf) {
        match self.target {
            Target::Lib => {
                let lib = work.shared("mx", &self.kind_spec(&["mx_lib.c"]));
                let app = work.executable("mx_app", &self.spec(&["mx_app.c"]).link("mx"));
                (lib, app)
            }
            Target::Pie | Target::NoPie if self.kind.nop_pad() => {
                let mut spec = self.kind_spec(&["mx_app.c", "mx_lib.c"]);
                for f in self.target.exe_flags() {
                    spec = spec.flag(f);
                }
                let exe = work.executable("mx_exe", &spec);
                (exe.clone(), exe)
            }
            Target::Pie | Target::NoPie => {
                // Linking an executable with -pg pulls in gmon (profiling timer, gmon.out):
                // compile mx_lib.c with -pg -mfentry on its own, link without -pg.
                let obj = self.compile_fentry_object(work.path());
                let mut spec = self.spec(&["mx_app.c"]).flag(obj.to_str().unwrap());
                for f in self.target.exe_flags() {
                    spec = spec.flag(f);
                }
                let exe = work.executable("mx_exe", &spec);
                (exe.clone(), exe)
            }
        }
    }

    fn compile_fentry_object(&self, dir: &Path) -> PathBuf {
        let obj = dir.join("mx_lib.o");
        let mut cmd = Command::new(self.cc.command());
        cmd.args(["-O2", "-g", "-c"])
            .args(self.kind.flags())
            .args(self.target.compile_flags())
            .arg(fixture("mx_lib.c"))
            .arg("-o")
            .arg(&obj);
        run(&mut cmd).assert_ok("compiling mx_lib.o");
        obj
    }

    fn run(&self) {
        println!("case: {self:?}");
        let work = Work::new();
        let (target, app) = self.build(&work);
        let fix = work.shared("mx_fix", &self.spec(&["mx_fix.c"]));
        let (kind, refused) = match self.expect {
            Expect::Patched(k) => (k, false),
            Expect::Refused(k) => (k, true),
        };

        // What the compiler wrote: the kind, and for NOP pads whether the NOPs are gcc's
        // raw `90 90` (canonicalising a copy then has something to rewrite).
        check_livepatchable(&target, self.target, kind);
        let copy = work.path().join("canonicalised-copy");
        std::fs::copy(&target, &copy).unwrap();
        let rewritten = pulp_cc_build::inspect::canonicalise_entries(&copy).unwrap();
        let raw = self.cc == Cc::Gcc && self.kind.raw();
        assert_eq!(rewritten > 0, raw, "{self:?}: raw `90 90` entries: expected {raw}, {rewritten} rewritable");

        let meta = work.patch("mx", &fix, &[(&target, &[("mx_target", "mx_target_fixed")])]);
        let mut app = App::start(&app);
        let pid = app.pid();
        assert_eq!(app.ask(CALL), BEFORE);

        if refused {
            let out = apply(pid, &meta);
            out.assert_refused(&["pulp-cc"]);
            assert!(out.stderr.contains("90 90"), "the refusal should name gcc's `90 90` NOPs: {out:#?}");
            assert_eq!(app.ask(CALL), BEFORE, "a refusal must leave the process as it was");
            app.assert_alive();
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            assert!(status.lines().any(|l| l == "TracerPid:\t0"), "left traced: {status}");
            return;
        }

        let out = apply(pid, &meta);
        out.assert_ok("pulp-trigger");
        assert_eq!(app.ask(CALL), AFTER, "after apply");
        assert_eq!(app.ask("call 7"), "1008 1008", "after apply");

        revert(pid, &meta).assert_ok("pulp-trigger --revert");
        assert_eq!(app.ask(CALL), BEFORE, "after revert");
        app.assert_alive();
    }
}

/// `file` is the `target` it should be, and `pulp livepatchable --json FILE` passes and
/// reports `kind` for `mx_target`, supported.
fn check_livepatchable(file: &Path, target: Target, kind: Prologue) {
    let (e_type, name) = target.object();
    let elf = std::fs::read(file).unwrap();
    assert_eq!(u16::from_le_bytes([elf[16], elf[17]]), e_type, "ELF type of {}", file.display());
    let out = pulp(&["livepatchable", "--json", file.to_str().unwrap()]);
    out.assert_ok("pulp livepatchable");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:#?}"));
    assert_eq!(v["kind"], name, "{out:#?}");
    let f = v["functions"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["name"] == "mx_target"))
        .unwrap_or_else(|| panic!("no mx_target in {out:#?}"));
    assert_eq!(f["prologue"], kind.name(), "prologue of mx_target in {}: {f}", file.display());
    assert_eq!(f["supported"], true, "{f}");
}

macro_rules! matrix {
    ($($name:ident: $kind:ident, $target:ident, $cc:ident => $expect:ident($prologue:ident);)*) => {
        $(
            #[test]
            fn $name() {
                Case {
                    kind: Kind::$kind,
                    target: Target::$target,
                    cc: Cc::$cc,
                    expect: Expect::$expect(Prologue::$prologue),
                }
                .run();
            }
        )*
    };
}

matrix! {
    // NOP pad, `66 90`: clang's own, gcc's after cc-build canonicalises it.
    nop66_lib_gcc: Nop66, Lib, Gcc => Patched(NopPad66);
    nop66_lib_clang: Nop66, Lib, Clang => Patched(NopPad66);
    nop66_pie_gcc: Nop66, Pie, Gcc => Patched(NopPad66);
    nop66_pie_clang: Nop66, Pie, Clang => Patched(NopPad66);
    nop66_nopie_gcc: Nop66, NoPie, Gcc => Patched(NopPad66);
    nop66_nopie_clang: Nop66, NoPie, Clang => Patched(NopPad66);

    // NOP pad without canonicalisation: gcc's raw `90 90`. clang never emits `90 90`:
    // its entries are `66 90` either way, so its rows check that.
    nop90_lib_gcc: Nop90, Lib, Gcc => Patched(NopPad90);
    nop90_lib_clang: Nop90, Lib, Clang => Patched(NopPad66);
    nop90_pie_gcc: Nop90, Pie, Gcc => Patched(NopPad90);
    nop90_pie_clang: Nop90, Pie, Clang => Patched(NopPad66);
    nop90_nopie_gcc: Nop90, NoPie, Gcc => Patched(NopPad90);
    nop90_nopie_clang: Nop90, NoPie, Clang => Patched(NopPad66);

    // -fcf-protection: `endbr64; 66 90` (gcc's NOPs canonicalised).
    endbr_lib_gcc: Endbr, Lib, Gcc => Patched(EndbrNopPad);
    endbr_lib_clang: Endbr, Lib, Clang => Patched(EndbrNopPad);
    endbr_pie_gcc: Endbr, Pie, Gcc => Patched(EndbrNopPad);
    endbr_pie_clang: Endbr, Pie, Clang => Patched(EndbrNopPad);
    endbr_nopie_gcc: Endbr, NoPie, Gcc => Patched(EndbrNopPad);
    endbr_nopie_clang: Endbr, NoPie, Clang => Patched(EndbrNopPad);

    // -fcf-protection without canonicalisation: gcc's `endbr64; 90 90`. In a library (near
    // the runtime) it is redirected; in an executable (more than 2 GiB away) it is refused
    // by design. clang writes `endbr64; 66 90` anyway, patchable everywhere.
    endbr90_lib_gcc: Endbr90, Lib, Gcc => Patched(EndbrNopPad);
    endbr90_lib_clang: Endbr90, Lib, Clang => Patched(EndbrNopPad);
    endbr90_pie_gcc: Endbr90, Pie, Gcc => Refused(EndbrNopPad);
    endbr90_pie_clang: Endbr90, Pie, Clang => Patched(EndbrNopPad);
    endbr90_nopie_gcc: Endbr90, NoPie, Gcc => Refused(EndbrNopPad);
    endbr90_nopie_clang: Endbr90, NoPie, Clang => Patched(EndbrNopPad);

    // -pg -mfentry. gcc calls through the GOT (`ff 15`) when compiling position-independent
    // code, a PIE included (the linker cannot relax it: __fentry__ is in another object);
    // `call __fentry__` (`e8`) otherwise. clang always writes `e8`, in shared objects too.
    fentry_lib_gcc: Fentry, Lib, Gcc => Patched(FentryGotCall);
    fentry_lib_clang: Fentry, Lib, Clang => Patched(FentryCall);
    fentry_pie_gcc: Fentry, Pie, Gcc => Patched(FentryGotCall);
    fentry_pie_clang: Fentry, Pie, Clang => Patched(FentryCall);
    fentry_nopie_gcc: Fentry, NoPie, Gcc => Patched(FentryCall);
    fentry_nopie_clang: Fentry, NoPie, Clang => Patched(FentryCall);

    // -pg -mfentry -fcf-protection: `endbr64` then the same calls.
    endbr_fentry_lib_gcc: EndbrFentry, Lib, Gcc => Patched(FentryGotCall);
    endbr_fentry_lib_clang: EndbrFentry, Lib, Clang => Patched(FentryCall);
    endbr_fentry_pie_gcc: EndbrFentry, Pie, Gcc => Patched(FentryGotCall);
    endbr_fentry_pie_clang: EndbrFentry, Pie, Clang => Patched(FentryCall);
    endbr_fentry_nopie_gcc: EndbrFentry, NoPie, Gcc => Patched(FentryCall);
    endbr_fentry_nopie_clang: EndbrFentry, NoPie, Clang => Patched(FentryCall);
}
