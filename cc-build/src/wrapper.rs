//! What `pulp-cc`, the compiler wrapper, does with a command line.
//!
//! `CC=pulp-cc make` or `CC=pulp-cc ./configure`: every compiler call goes through
//! `pulp-cc`, which runs the real compiler (`$PULP_CC_REAL`, default `cc`) with the same
//! arguments, plus [`PATCHABLE_FLAGS`](crate::PATCHABLE_FLAGS) when C or C++ sources are
//! compiled, and after a successful link of an executable or a shared object rewrites its
//! entries to `66 90` ([`canonicalise_entries`](crate::inspect::canonicalise_entries)).
//!
//! It stays out of the way of everything else: preprocessing only (`-E`, `-M`, `-MM`),
//! queries (`--version`, `-v`, `-print-prog-name=ld`, `-dumpmachine`, ...), assembler
//! sources, link steps without sources, and commands that already choose their own
//! `-fpatchable-function-entry` (or `-fno-patchable-function-entry`) are passed on as
//! they are; `PULP_CC_DISABLE=1` turns the wrapper into a plain pass-through.
//!
//! This module only decides; the `pulp-cc` binary runs the commands.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The real compiler, possibly with leading words (`ccache gcc`); default `cc`.
pub const REAL_ENV: &str = "PULP_CC_REAL";
/// `1` (or any value but `0` and empty): pass every command on unchanged.
pub const DISABLE_ENV: &str = "PULP_CC_DISABLE";
/// The real C++ compiler when `pulp-cc` is called as `pulp-c++`; default `c++`.
pub const CXX_REAL_ENV: &str = "PULP_CXX_REAL";
/// Set by `pulp-cc` for the real compiler; finding it set means `PULP_CC_REAL` leads
/// back to `pulp-cc`.
pub const ACTIVE_ENV: &str = "PULP_CC_ACTIVE";

/// What kind of step a compiler command line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `-E`, or `-M`/`-MM` without `-MD`/`-MMD`: preprocess only.
    Preprocess,
    /// `-fsyntax-only`: nothing is written.
    SyntaxOnly,
    /// `-S`: compile to assembly.
    Assemble,
    /// `-c`: compile to object files.
    Compile,
    /// No stop option: compile (if needed) and link.
    Link,
}

/// What a command line asks for, as far as the wrapper cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Analysis {
    pub mode: Mode,
    /// C or C++ sources are among the inputs (by extension or `-x c`/`-x c++`).
    pub compiles_c: bool,
    /// Any input file at all (a query such as `cc --version` has none).
    pub has_inputs: bool,
    /// `-o FILE` / `-oFILE`, the last one given.
    pub output: Option<PathBuf>,
    /// The command already sets `-fpatchable-function-entry=` or `-fno-patchable-…`.
    pub user_patchable: bool,
    /// `-r` / `-Wl,-r` / `-Wl,--relocatable`: a relocatable link, not a final object.
    pub relocatable: bool,
    /// `--version`, `-v` without inputs, `-dump*`, `-print-*`, `--help`, `-###`, ...
    pub query: bool,
    /// The input files, in order, and whether each is C or C++ to compile.
    pub inputs: Vec<(PathBuf, bool)>,
    /// The command line with its `@file` response files read: what the fields above
    /// were read from.
    pub words: Vec<OsString>,
}

/// What `pulp-cc` will do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The arguments for the real compiler (the user's, plus ours in front when needed).
    pub args: Vec<OsString>,
    /// Whether [`PATCHABLE_FLAGS`](crate::PATCHABLE_FLAGS) were added.
    pub added_flags: bool,
    /// The linked object to canonicalise once the compiler succeeded.
    pub canonicalise: Option<PathBuf>,
}

/// Options whose value is the next argument (so that value is not an input file).
pub(crate) const TAKES_VALUE: &[&str] = &[
    "-o",
    "-x",
    "-I",
    "-D",
    "-U",
    "-L",
    "-l",
    "-include",
    "-imacros",
    "-isystem",
    "-iquote",
    "-idirafter",
    "-iprefix",
    "-iwithprefix",
    "-iwithprefixbefore",
    "-isysroot",
    "-imultilib",
    "-MF",
    "-MT",
    "-MQ",
    "-Xlinker",
    "-Xassembler",
    "-Xpreprocessor",
    "-Xclang",
    "-T",
    "-u",
    "-e",
    "-z",
    "-B",
    "-aux-info",
    "-dumpbase",
    "-dumpbase-ext",
    "-dumpdir",
    "--param",
    "--sysroot",
    "-target",
    "--target",
    "-arch",
];

const C_EXTENSIONS: &[&str] =
    &["c", "i", "cc", "cp", "cxx", "cpp", "CPP", "c++", "C", "ii", "m", "mi", "mm", "M", "mii"];
const C_LANGUAGES: &[&str] = &[
    "c",
    "c++",
    "objective-c",
    "objective-c++",
    "cpp-output",
    "c++-cpp-output",
    "objective-c-cpp-output",
    "c-header",
    "c++-header",
];

fn extension(arg: &OsStr) -> Option<&str> {
    Path::new(arg).extension().and_then(OsStr::to_str)
}

/// Whether an input file's name says it is a C or C++ source.
pub fn is_c_source(arg: &OsStr) -> bool {
    extension(arg).is_some_and(|e| C_EXTENSIONS.contains(&e))
}

fn is_query(a: &str) -> bool {
    matches!(a, "--version" | "-version" | "--help" | "-###" | "--target-help" | "-dumpversion" | "-dumpfullversion")
        || a.starts_with("-dump") && !a.starts_with("-dumpbase") && !a.starts_with("-dumpdir")
        || a.starts_with("-print-")
        || a.starts_with("--print-")
        || a.starts_with("--help=")
}

/// Read a command line the way the compiler driver would, for the parts that matter.
/// `@file` response files are read (whitespace-separated words) when they exist.
pub fn analyse(args: &[OsString]) -> Analysis {
    let words = expand_response_files(args);
    let mut a = Analysis {
        mode: Mode::Link,
        compiles_c: false,
        has_inputs: false,
        output: None,
        user_patchable: false,
        relocatable: false,
        query: false,
        inputs: Vec::new(),
        words: Vec::new(),
    };
    let (mut e, mut s, mut c, mut m, mut md, mut syntax) = (false, false, false, false, false, false);
    let mut lang: Option<String> = None;
    let mut it = words.iter();
    while let Some(arg) = it.next() {
        let bytes = arg.as_bytes();
        let is_input = bytes == b"-" || !bytes.starts_with(b"-");
        if is_input {
            a.has_inputs = true;
            let c = match lang.as_deref() {
                Some(l) => C_LANGUAGES.contains(&l),
                None => is_c_source(arg),
            };
            a.compiles_c |= c;
            a.inputs.push((PathBuf::from(arg), c));
            continue;
        }
        let Some(opt) = arg.to_str() else { continue };
        if TAKES_VALUE.contains(&opt) {
            let value = it.next();
            match opt {
                "-o" => a.output = value.map(PathBuf::from),
                "-x" => lang = value.and_then(|v| v.to_str()).filter(|v| *v != "none").map(str::to_owned),
                "-Xlinker" if value.is_some_and(|v| v == "-r" || v == "--relocatable") => a.relocatable = true,
                _ => {}
            }
            continue;
        }
        match opt {
            "-E" => e = true,
            "-S" => s = true,
            "-c" => c = true,
            "-M" | "-MM" => m = true,
            "-MD" | "-MMD" => md = true,
            "-fsyntax-only" => syntax = true,
            "-r" | "-Wl,-r" | "-Wl,--relocatable" => a.relocatable = true,
            // Alone, `-v` shows the version; with inputs it only makes the driver verbose.
            "-v" => {}
            _ if is_query(opt) => a.query = true,
            _ if opt.starts_with("-o") => a.output = Some(PathBuf::from(OsStr::from_bytes(&bytes[2..]))),
            _ if opt.starts_with("-x") => {
                lang = Some(opt[2..].to_owned()).filter(|v| v != "none");
            }
            _ if opt.starts_with("-fpatchable-function-entry") || opt.starts_with("-fno-patchable-function-entry") => {
                a.user_patchable = true
            }
            _ => {}
        }
    }
    if words.iter().any(|w| w == "-v") && !a.has_inputs {
        a.query = true;
    }
    a.mode = if e || (m && !md) {
        Mode::Preprocess
    } else if syntax {
        Mode::SyntaxOnly
    } else if s {
        Mode::Assemble
    } else if c {
        Mode::Compile
    } else {
        Mode::Link
    };
    a.words = words;
    a
}

/// Decide what to run for the user's `args` (without the program name), `a` their
/// [`analyse`]. `disabled` is `PULP_CC_DISABLE`: pass everything on unchanged.
pub fn plan(args: &[OsString], a: &Analysis, disabled: bool) -> Plan {
    let unchanged = Plan { args: args.to_vec(), added_flags: false, canonicalise: None };
    if disabled {
        return unchanged;
    }
    if a.query || !a.has_inputs {
        return unchanged;
    }
    let add = a.compiles_c && !a.user_patchable && a.mode != Mode::Preprocess;
    let mut out = Vec::with_capacity(args.len() + crate::PATCHABLE_FLAGS.len());
    if add {
        out.extend(crate::PATCHABLE_FLAGS.iter().map(OsString::from));
    }
    out.extend(args.iter().cloned());
    let canonicalise =
        (a.mode == Mode::Link && !a.relocatable).then(|| a.output.clone().unwrap_or_else(|| PathBuf::from("a.out")));
    Plan { args: out, added_flags: add, canonicalise }
}

/// Whether `PULP_CC_DISABLE` holds a value that turns the wrapper off.
pub fn disabled(value: Option<&OsStr>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v != "0")
}

/// The real compiler's words from `PULP_CC_REAL` (`ccache gcc` is two words), default `cc`.
pub fn real_compiler(value: Option<&OsStr>) -> Vec<OsString> {
    real_compiler_or(value, "cc")
}

/// The real compiler's words from an environment value, else `default`.
pub fn real_compiler_or(value: Option<&OsStr>, default: &str) -> Vec<OsString> {
    let words: Vec<OsString> =
        value.and_then(OsStr::to_str).map(|v| v.split_whitespace().map(OsString::from).collect()).unwrap_or_default();
    if words.is_empty() {
        vec![OsString::from(default)]
    } else {
        words
    }
}

/// As a compiler launcher (`CMAKE_C_COMPILER_LAUNCHER=pulp-cc`), `pulp-cc` is called as
/// `pulp-cc /usr/bin/cc ARGS...`: when the first argument is a program (`is_program`
/// says so) rather than an option or an input file, it is the real compiler. Returns
/// the compiler and the remaining arguments.
pub fn split_launcher(args: &[OsString], is_program: impl Fn(&OsStr) -> bool) -> Option<(OsString, &[OsString])> {
    let first = args.first()?;
    let b = first.as_bytes();
    if b.is_empty() || b.starts_with(b"-") || b.starts_with(b"@") || extension(first).is_some_and(is_input_extension) {
        return None;
    }
    is_program(first).then(|| (first.clone(), &args[1..]))
}

fn is_input_extension(e: &str) -> bool {
    C_EXTENSIONS.contains(&e) || matches!(e, "o" | "a" | "so" | "s" | "S" | "sx" | "h" | "hh" | "hpp" | "lo" | "obj")
}

/// Whether a file is an ELF executable or shared object (`ET_EXEC`/`ET_DYN`), the only
/// outputs worth canonicalising.
pub fn is_linked_elf(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 18];
    let ok = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)).is_ok();
    ok && head[..4] == *b"\x7fELF" && matches!(u16::from_le_bytes([head[16], head[17]]), 2 | 3)
}

pub(crate) fn expand_response_files(args: &[OsString]) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    for a in args {
        let b = a.as_bytes();
        if let Some(path) = b.strip_prefix(b"@") {
            if let Ok(text) = std::fs::read(OsStr::from_bytes(path)) {
                let text = String::from_utf8_lossy(&text);
                out.extend(text.split_whitespace().map(|w| OsString::from(w.trim_matches(['"', '\'']))));
                continue;
            }
        }
        out.push(a.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    fn plan_of(s: &str) -> Plan {
        let a = args(s);
        plan(&a, &analyse(&a), false)
    }

    const FLAG: &str = "-fpatchable-function-entry=16,14";

    #[test]
    fn compiling_c_adds_the_pad_flag_in_front() {
        let p = plan_of("-O2 -fPIC -c foo.c -o foo.o");
        assert!(p.added_flags);
        assert_eq!(p.args, args(&format!("{FLAG} -O2 -fPIC -c foo.c -o foo.o")));
        assert_eq!(p.canonicalise, None, "-c does not link");
        for cmd in ["-c a.cpp", "-c a.cc", "-S a.c", "-x c -c conftest", "-xc++ -c -", "-c a.i", "-fsyntax-only a.c"] {
            assert!(plan_of(cmd).added_flags, "{cmd}");
        }
    }

    #[test]
    fn linking_canonicalises_the_output() {
        let p = plan_of("-shared -fPIC foo.c bar.c -o libfoo.so -lm");
        assert!(p.added_flags);
        assert_eq!(p.canonicalise, Some(PathBuf::from("libfoo.so")));
        // Link of objects only: nothing to compile, but the result is canonicalised.
        let p = plan_of("foo.o bar.o -olibx.so -shared");
        assert!(!p.added_flags);
        assert_eq!(p.args, args("foo.o bar.o -olibx.so -shared"));
        assert_eq!(p.canonicalise, Some(PathBuf::from("libx.so")));
        // No -o: the driver writes a.out.
        assert_eq!(plan_of("conftest.c").canonicalise, Some(PathBuf::from("a.out")));
        // A relocatable link is no final object.
        assert_eq!(plan_of("-r a.o b.o -o c.o").canonicalise, None);
        assert_eq!(plan_of("-Wl,-r a.o -o c.o").canonicalise, None);
        assert_eq!(plan_of("-Xlinker -r a.o -o c.o").canonicalise, None);
    }

    #[test]
    fn preprocessing_queries_and_other_languages_pass_unchanged() {
        for cmd in [
            "-E conftest.c",
            "-E -",
            "-M foo.c",
            "-MM foo.c",
            "--version",
            "-v",
            "-V",
            "-dumpmachine",
            "-dumpversion",
            "-print-prog-name=ld",
            "-print-search-dirs",
            "--print-file-name=libc.so",
            "-c start.s -o start.o",
            "-c start.S",
            "-x assembler -c foo",
            "-c foo.c -fpatchable-function-entry=5,0",
            "-c foo.c -fno-patchable-function-entry",
            "",
        ] {
            let p = plan_of(cmd);
            assert!(!p.added_flags, "{cmd}");
            assert_eq!(p.args, args(cmd), "{cmd}");
        }
        // A query never canonicalises, not even a.out.
        assert_eq!(plan_of("--version").canonicalise, None);
        assert_eq!(plan_of("-v").canonicalise, None);
        // -MD writes dependencies while compiling: still a compile.
        assert!(plan_of("-MD -MF foo.d -c foo.c").added_flags);
        // -v with inputs only makes the driver verbose.
        assert!(plan_of("-v -c foo.c").added_flags);
        // A value of an option is not an input: no C source here.
        assert!(!plan_of("-include x.c -E y.c").added_flags);
        assert_eq!(plan_of("-o x.c foo.o").canonicalise, Some(PathBuf::from("x.c")));
        assert!(!plan_of("-o x.c foo.o").added_flags);
    }

    #[test]
    fn disabled_passes_everything() {
        let a = args("-shared foo.c -o libfoo.so");
        assert_eq!(plan(&a, &analyse(&a), true), Plan { args: a.clone(), added_flags: false, canonicalise: None });
        assert!(disabled(Some(OsStr::new("1"))));
        assert!(!disabled(Some(OsStr::new("0"))));
        assert!(!disabled(Some(OsStr::new(""))));
        assert!(!disabled(None));
    }

    #[test]
    fn real_compiler_words() {
        assert_eq!(real_compiler(None), args("cc"));
        assert_eq!(real_compiler(Some(OsStr::new("  "))), args("cc"));
        assert_eq!(real_compiler(Some(OsStr::new("ccache gcc-12"))), args("ccache gcc-12"));
    }

    #[test]
    fn launcher_form() {
        let is_prog = |p: &OsStr| p == "/usr/bin/cc" || p == "gcc";
        let a = args("/usr/bin/cc -c foo.c -o foo.o");
        let (cc, rest) = split_launcher(&a, is_prog).unwrap();
        assert_eq!(cc, "/usr/bin/cc");
        assert_eq!(rest, &a[1..]);
        assert!(split_launcher(&args("-c foo.c"), is_prog).is_none());
        assert!(split_launcher(&args("foo.c -o foo"), |_| true).is_none());
        assert!(split_launcher(&args("nothing -o foo"), is_prog).is_none());
        assert!(split_launcher(&[], is_prog).is_none());
    }

    #[test]
    fn response_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let rsp = dir.path().join("args.rsp");
        std::fs::write(&rsp, "-shared\n foo.c -o \"libfoo.so\"\n").unwrap();
        let mut a = OsString::from("@");
        a.push(&rsp);
        let p = plan(&[a.clone()], &analyse(&[a.clone()]), false);
        assert!(p.added_flags);
        assert_eq!(p.canonicalise, Some(PathBuf::from("libfoo.so")));
        assert_eq!(p.args[1..], [a]);
    }

    #[test]
    fn only_linked_elf_objects_are_canonicalised() {
        let dir = tempfile::tempdir().unwrap();
        let txt = dir.path().join("a.txt");
        std::fs::write(&txt, "hello, not an ELF file").unwrap();
        assert!(!is_linked_elf(&txt));
        assert!(!is_linked_elf(&dir.path().join("missing")));
        let exe = std::env::current_exe().unwrap();
        assert!(is_linked_elf(&exe));
    }
}
