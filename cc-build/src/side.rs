//! The wrapper's build-patch mode: what `pulp build-patch` needs from a build.
//!
//! `pulp build-patch` runs the project's build twice (before and after the fix) with
//! `CC=pulp-cc` and [`DIR_ENV`] set. Then `pulp-cc` does its usual work, so the objects
//! it links are the ones the running processes map, and for every C or C++ source it
//! compiles it also writes a **side compile**: the same command turned into
//!
//! ```text
//! -S -o DIR/asm/<key hash>.s -fPIC (or -fPIE) -mcmodel=large -ffunction-sections -fdata-sections -g
//! ```
//!
//! without the patchable pad, `-pg`, LTO, dependency files or link options. In that
//! assembly every function and variable has a section of its own and every reference to a
//! symbol is a 64-bit GOT-relative operand, which the generator can point anywhere.
//! `-ffile-prefix-map=ROOT=MAP` is added to both compiles, so `__FILE__` and debug info
//! name the user's source folder, not the copy being built.
//!
//! Each side compile and each link is appended as one JSON line to `DIR/records.jsonl`:
//!
//! ```text
//! {"kind":"tu","key":"src/foo.o","source":"/abs/src/foo.c","asm":"/abs/DIR/asm/1f2e.s","cwd":"/abs/src",
//!  "lto":false,"compiler":["gcc"],"args":["-O2","foo.c","-S",...]}
//! {"kind":"link","output":"/abs/libfoo.so","inputs":["/abs/src/foo.o",...],"libs":["-lm","-L/abs/lib"]}
//! ```
//!
//! `key` names the translation unit the same way in both builds: its object file (or
//! `OUTPUT#SOURCE` for a source compiled and linked in one command), relative to the
//! copy's root. `compiler` and `args` are the side compile without its `-o ASM`, so that
//! `pulp build-patch --incremental` can run it again, in `cwd`, for the units a fix
//! recompiles. With [`RECORD_ONLY_ENV`] set the side compiles are recorded, not run (a
//! kept build for `--incremental` costs one build, not two).

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::wrapper::{Analysis, Mode, TAKES_VALUE};

/// Folder of the records and side compiles; its presence turns the mode on.
pub const DIR_ENV: &str = "PULP_BUILDPATCH_DIR";
/// The root of the source copy being built.
pub const ROOT_ENV: &str = "PULP_BUILDPATCH_ROOT";
/// The user's source folder the copy stands for (`-ffile-prefix-map=ROOT=MAP`).
pub const MAP_ENV: &str = "PULP_BUILDPATCH_MAP";
/// `1`: record the side compiles without running them.
pub const RECORD_ONLY_ENV: &str = "PULP_BUILDPATCH_RECORD_ONLY";

/// The build-patch mode, from the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildPatch {
    pub dir: PathBuf,
    pub root: Option<PathBuf>,
    pub map: Option<PathBuf>,
    /// [`RECORD_ONLY_ENV`]: record the side compiles, do not run them.
    pub record_only: bool,
}

impl BuildPatch {
    /// `None` when [`DIR_ENV`] is not set (the ordinary wrapper).
    pub fn from_env() -> Option<Self> {
        let dir = std::env::var_os(DIR_ENV).filter(|v| !v.is_empty())?;
        let path = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let record_only = std::env::var_os(RECORD_ONLY_ENV).is_some_and(|v| !v.is_empty() && v != "0");
        Some(Self { dir: PathBuf::from(dir), root: path(ROOT_ENV), map: path(MAP_ENV), record_only })
    }

    /// `-ffile-prefix-map=ROOT=MAP`, when both are known.
    pub fn prefix_map(&self) -> Option<OsString> {
        let (root, map) = (self.root.as_ref()?, self.map.as_ref()?);
        let mut f = OsString::from("-ffile-prefix-map=");
        f.push(root);
        f.push("=");
        f.push(map);
        Some(f)
    }

    /// `path` relative to the root, as a string (absolute when outside it).
    fn key_of(&self, path: &Path) -> String {
        let rel = self.root.as_ref().and_then(|r| path.strip_prefix(r).ok()).unwrap_or(path);
        rel.to_string_lossy().into_owned()
    }

    /// Append one record line to `DIR/records.jsonl` (one `write`, `O_APPEND`: lines of
    /// parallel compiles do not mix).
    pub fn append(&self, line: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("records.jsonl"))?;
        f.write_all(format!("{line}\n").as_bytes())
    }
}

/// One side compile to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SideCompile {
    pub key: String,
    pub source: PathBuf,
    /// The assembly it writes.
    pub asm: PathBuf,
    /// Arguments for the real compiler.
    pub args: Vec<OsString>,
    /// The build's own compile uses link-time optimisation (`-flto`): its code may be
    /// inlined across files, which the side compile cannot show.
    pub lto: bool,
}

impl SideCompile {
    /// Its record line; `compiler` is the real compiler's words.
    pub fn record(&self, cwd: &Path, compiler: &[OsString]) -> String {
        let list = |v: &[OsString]| v.iter().map(|w| json(&w.to_string_lossy())).collect::<Vec<_>>().join(",");
        // The arguments without the final `-o ASM`: a rerun names its own output.
        let args = &self.args[..self.args.len().saturating_sub(2)];
        format!(
            "{{\"kind\":\"tu\",\"key\":{},\"source\":{},\"asm\":{},\"cwd\":{},\"lto\":{},\"compiler\":[{}],\"args\":[{}]}}",
            json(&self.key),
            json_path(&self.source),
            json_path(&self.asm),
            json_path(cwd),
            self.lto,
            list(compiler),
            list(args)
        )
    }
}

/// Options dropped from a side compile (exact words), and whether each takes a value.
const DROPPED: &[&str] = &[
    "-c",
    "-S",
    "-E",
    "-M",
    "-MM",
    "-MD",
    "-MMD",
    "-MP",
    "-MG",
    "-pg",
    "-p",
    "-mfentry",
    "-mrecord-mcount",
    "-mnop-mcount",
    "-fno-lto",
    "-ffat-lto-objects",
    "-shared",
    "-pie",
    "-no-pie",
    "-static",
    "-static-pie",
    "-rdynamic",
    "-nostdlib",
    "-nostartfiles",
    "-nodefaultlibs",
    "-save-temps",
    "-fno-patchable-function-entry",
];
/// Options with a value dropped from a side compile.
const DROPPED_WITH_VALUE: &[&str] = &["-o", "-MF", "-MT", "-MQ", "-l", "-L", "-Xlinker", "-u", "-T", "-e", "-z"];
/// Prefixes of dropped options.
const DROPPED_PREFIXES: &[&str] =
    &["-fpatchable-function-entry", "-flto", "-mcmodel=", "-save-temps=", "-Wl,", "-Wa,", "-l", "-L", "-static-"];

/// The side compiles of a compile or link command (`a` the analysis of its arguments as
/// the real compiler gets them, `cwd` where it runs).
pub fn plan(mode: &BuildPatch, a: &Analysis, cwd: &Path) -> Vec<SideCompile> {
    if !matches!(a.mode, Mode::Compile | Mode::Link) || a.relocatable || !a.compiles_c {
        return Vec::new();
    }
    let words = &a.words;
    let lto = words.iter().fold(false, |on, w| match w.to_str() {
        Some(o) if o.starts_with("-flto") && o != "-flto=none" => true,
        Some("-fno-lto") => false,
        _ => on,
    });
    let sources: Vec<&PathBuf> = a.inputs.iter().filter(|(_, c)| *c).map(|(p, _)| p).collect();
    let mut out = Vec::new();
    for (n, source) in sources.iter().enumerate() {
        let abs_source = cwd.join(source);
        let key = match a.mode {
            Mode::Compile => {
                // `-o` names the object of a single source; else the driver writes
                // `base.o` in the current folder.
                let obj = match (&a.output, sources.len()) {
                    (Some(o), 1) => cwd.join(o),
                    _ => cwd.join(Path::new(source.file_name().unwrap_or_default()).with_extension("o")),
                };
                mode.key_of(&obj)
            }
            _ => {
                let output = cwd.join(a.output.clone().unwrap_or_else(|| PathBuf::from("a.out")));
                format!("{}#{}", mode.key_of(&output), mode.key_of(&abs_source))
            }
        };
        let asm = mode.dir.join("asm").join(format!("{:016x}-{n}.s", fnv(key.as_bytes())));
        out.push(SideCompile { args: side_args(words, source, &asm, mode), key, source: abs_source, asm, lto });
    }
    out
}

/// The side compile of `source` from the command's words.
fn side_args(words: &[OsString], source: &Path, asm: &Path, mode: &BuildPatch) -> Vec<OsString> {
    let mut out: Vec<OsString> = Vec::new();
    // -fPIC when the build asks for position-independent library code; -fPIE otherwise
    // (executables, and the compiler's default): the same inlining across exported
    // functions as the build's own compile.
    let mut pic = "-fPIE";
    let mut it = words.iter();
    while let Some(w) = it.next() {
        let b = w.as_bytes();
        let is_input = b == b"-" || !b.starts_with(b"-");
        if is_input {
            if Path::new(w) == source {
                out.push(w.clone());
            }
            continue;
        }
        let Some(opt) = w.to_str() else {
            out.push(w.clone());
            continue;
        };
        match opt {
            "-fPIC" | "-fpic" => pic = "-fPIC",
            "-fPIE" | "-fpie" | "-fno-pic" | "-fno-PIC" | "-fno-pie" | "-fno-PIE" => pic = "-fPIE",
            _ if DROPPED_WITH_VALUE.contains(&opt) => {
                it.next();
            }
            _ if TAKES_VALUE.contains(&opt) => {
                out.push(w.clone());
                if let Some(v) = it.next() {
                    out.push(v.clone());
                }
            }
            _ if DROPPED.contains(&opt) || DROPPED_PREFIXES.iter().any(|p| opt.starts_with(p)) => {}
            _ if opt.starts_with("-o")
                || opt.starts_with("-MF")
                || opt.starts_with("-MT")
                || opt.starts_with("-MQ") => {}
            _ => out.push(w.clone()),
        }
    }
    for f in ["-S", "-g", "-mcmodel=large", "-ffunction-sections", "-fdata-sections", pic] {
        out.push(OsString::from(f));
    }
    out.extend(mode.prefix_map());
    out.push(OsString::from("-o"));
    out.push(asm.as_os_str().to_owned());
    out
}

/// The record of a link step (`a` the analysis of its arguments): its output, inputs and
/// library options.
pub fn link_record(a: &Analysis, cwd: &Path) -> Option<String> {
    if a.mode != Mode::Link || a.relocatable {
        return None;
    }
    let output = cwd.join(a.output.clone().unwrap_or_else(|| PathBuf::from("a.out")));
    let inputs: Vec<String> = a.inputs.iter().map(|(p, _)| json_path(&cwd.join(p))).collect();
    let mut libs = Vec::new();
    let mut it = a.words.iter();
    while let Some(w) = it.next() {
        let Some(opt) = w.to_str() else { continue };
        match opt {
            "-l" => libs.extend(it.next().map(|v| format!("-l{}", v.to_string_lossy()))),
            "-L" => libs.extend(it.next().map(|v| format!("-L{}", cwd.join(v).display()))),
            "-pthread" => libs.push(opt.to_owned()),
            _ if opt.starts_with("-l") => libs.push(opt.to_owned()),
            _ if opt.starts_with("-L") => libs.push(format!("-L{}", cwd.join(&opt[2..]).display())),
            _ => {}
        }
    }
    let libs: Vec<String> = libs.iter().map(|l| json(l)).collect();
    Some(format!(
        "{{\"kind\":\"link\",\"output\":{},\"inputs\":[{}],\"libs\":[{}]}}",
        json_path(&output),
        inputs.join(","),
        libs.join(",")
    ))
}

/// A JSON string.
pub fn json(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_path(p: &Path) -> String {
    json(&p.to_string_lossy())
}

/// FNV-1a, 64 bits: names the side compile's file after its key.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wrapper::analyse;

    fn args(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    fn mode() -> BuildPatch {
        BuildPatch {
            dir: PathBuf::from("/bp"),
            root: Some(PathBuf::from("/copy")),
            map: Some(PathBuf::from("/home/me/src")),
            record_only: false,
        }
    }

    fn strings(v: &[OsString]) -> Vec<String> {
        v.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn a_compile_gets_a_large_model_side_compile() {
        let a =
            args("-fpatchable-function-entry=16,14 -O2 -fPIC -Iinc -DX=1 -MD -MF foo.d -flto -c foo.c -o obj/foo.o");
        let plan = plan(&mode(), &analyse(&a), Path::new("/copy/src"));
        assert_eq!(plan.len(), 1);
        let s = &plan[0];
        assert_eq!(s.key, "src/obj/foo.o");
        assert_eq!(s.source, PathBuf::from("/copy/src/foo.c"));
        assert!(s.asm.starts_with("/bp/asm"));
        assert_eq!(
            strings(&s.args),
            [
                "-O2",
                "-Iinc",
                "-DX=1",
                "foo.c",
                "-S",
                "-g",
                "-mcmodel=large",
                "-ffunction-sections",
                "-fdata-sections",
                "-fPIC",
                "-ffile-prefix-map=/copy=/home/me/src",
                "-o",
                &s.asm.to_string_lossy(),
            ]
        );
        let gcc = [OsString::from("gcc")];
        let rec = s.record(Path::new("/copy/src"), &gcc);
        assert!(rec.starts_with("{\"kind\":\"tu\",\"key\":\"src/obj/foo.o\","));
        assert!(s.lto && rec.contains(",\"lto\":true,"), "the build's compile uses -flto");
        assert!(
            rec.ends_with(",\"compiler\":[\"gcc\"],\"args\":[\"-O2\",\"-Iinc\",\"-DX=1\",\"foo.c\",\"-S\",\"-g\",\"-mcmodel=large\",\"-ffunction-sections\",\"-fdata-sections\",\"-fPIC\",\"-ffile-prefix-map=/copy=/home/me/src\"]}"),
            "{rec}"
        );
        let a = args("-O2 -flto -fno-lto -c foo.c");
        assert!(!super::plan(&mode(), &analyse(&a), Path::new("/copy"))[0].lto);
    }

    #[test]
    fn several_sources_and_one_step_links() {
        let a = args("-O2 -c a.c b.cpp x.o");
        let p = plan(&mode(), &analyse(&a), Path::new("/copy"));
        assert_eq!(p.iter().map(|s| s.key.as_str()).collect::<Vec<_>>(), ["a.o", "b.o"]);
        assert!(strings(&p[1].args).contains(&"b.cpp".to_string()));
        assert!(!strings(&p[1].args).contains(&"a.c".to_string()));
        assert!(strings(&p[0].args).contains(&"-fPIE".to_string()), "no -fPIC: position-independent executable code");

        let a = args("-shared -fPIC lib.c -o libx.so -lm -L../lib -Wl,--as-needed");
        let p = plan(&mode(), &analyse(&a), Path::new("/copy/b"));
        assert_eq!(p[0].key, "b/libx.so#b/lib.c");
        assert!(!strings(&p[0].args)
            .iter()
            .any(|w| w.starts_with("-l") || w.starts_with("-L") || w.starts_with("-Wl")));
        let rec = link_record(&analyse(&a), Path::new("/copy/b")).unwrap();
        assert_eq!(
            rec,
            "{\"kind\":\"link\",\"output\":\"/copy/b/libx.so\",\"inputs\":[\"/copy/b/lib.c\"],\"libs\":[\"-lm\",\"-L/copy/b/../lib\"]}"
        );
    }

    #[test]
    fn nothing_for_preprocessing_assembly_or_objects() {
        for cmd in ["-E a.c", "-c start.S", "a.o b.o -o x", "-r a.c -o x.o"] {
            let a = args(cmd);
            assert!(plan(&mode(), &analyse(&a), Path::new("/copy")).is_empty(), "{cmd}");
        }
        assert_eq!(json("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
