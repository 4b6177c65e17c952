//! Will the patch `.so` load? Every symbol it imports (undefined in its `.dynsym`, not
//! weak) must be defined at load time by something the dynamic linker searches: the
//! targets' exports, the libraries the targets and the patch depend on (`DT_NEEDED`,
//! found as `ld.so` would: `DT_RUNPATH`/`DT_RPATH` with `$ORIGIN`, `LD_LIBRARY_PATH`,
//! `/etc/ld.so.conf`, the default folders), and the libpulp-rs runtime (`pulp_*`).
//! Anything else makes `dlopen` fail inside the process ("undefined symbol"), so
//! `pulp pack` refuses it beforehand with the list, and says when a missing symbol is a
//! hidden or static symbol of a target, which a patch reaches through a reference.
//!
//! Symbol versions are not compared, and the application's own exports cannot be known
//! here (a target library does not say which program loads it): `pulp pack
//! --skip-import-check` for a patch that uses them.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use pulp_elf::{Inspected, ObjectInfo};

/// How many libraries the dependency walk reads at most.
const MAX_LIBRARIES: usize = 256;

/// Undefined symbols of the patch `.so` that nothing will define at load time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    pub patch_so: PathBuf,
    /// (symbol, why/what to do)
    pub symbols: Vec<(String, String)>,
}

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.symbols.len();
        write!(
            f,
            "{} imports {n} symbol{} nothing will define when it is loaded: ",
            self.patch_so.display(),
            if n == 1 { "" } else { "s" }
        )?;
        let items: Vec<String> = self.symbols.iter().map(|(s, why)| format!("`{s}` ({why})")).collect();
        write!(
            f,
            "{} (the application's own exports cannot be seen: --skip-import-check if it defines them)",
            items.join(", ")
        )
    }
}

impl std::error::Error for Unresolved {}

/// Check the imports of `patch` against `targets`, their dependencies and the patch's.
/// `reference_vars` are the patch's reference variables (mentioned in hints).
pub fn check(patch: &Inspected, targets: &[&Inspected], reference_vars: &[&str]) -> Result<(), Unresolved> {
    let wanted: Vec<&str> = patch.info.imports.iter().filter(|i| !i.weak).map(|i| i.name.as_str()).collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let mut provided: HashSet<String> = HashSet::new();
    for t in targets {
        provided.extend(t.symbols.iter().filter(|s| s.dynamic).map(|s| s.name.clone()));
    }
    let mut walk = Walk::default();
    for t in targets {
        walk.add_needed(&t.path, &t.info);
    }
    walk.add_needed(&patch.path, &patch.info);
    walk.run();
    provided.extend(walk.exports);
    let runtime = runtime_exports();
    // Without a runtime to read, its API is known by its prefix.
    let runtime_unknown = runtime.is_empty();
    provided.extend(runtime);

    let mut symbols = Vec::new();
    for name in wanted {
        if provided.contains(name) || runtime_unknown && name.starts_with("pulp_") {
            continue;
        }
        let internal = targets.iter().find_map(|t| t.named(name).find(|s| !s.dynamic).map(|s| (t, s)));
        let why = match internal {
            Some((t, s)) => format!(
                "a {} {} of {}, not exported: reach it through a reference (`#{name}:VAR` in the .dsc, and call or \
                 read it through VAR{})",
                if s.hidden { "hidden" } else { "static" },
                s.kind.name(),
                t.path.display(),
                if reference_vars.is_empty() { String::new() } else { "; see the other references".into() }
            ),
            None if !walk.missing.is_empty() => format!(
                "not exported by the targets or the libraries found; not found: {}",
                walk.missing.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
            None => "not exported by the targets or any library they or the patch depend on".into(),
        };
        symbols.push((name.to_owned(), why));
    }
    if symbols.is_empty() {
        Ok(())
    } else {
        Err(Unresolved { patch_so: patch.path.clone(), symbols })
    }
}

/// The names the runtime `libpulp_rs.so` exports, read from the copy next to this
/// program (`target/release`, or `../lib` of an installed `bin/`).
fn runtime_exports() -> Vec<String> {
    let Ok(exe) = std::env::current_exe() else { return Vec::new() };
    let Some(dir) = exe.parent() else { return Vec::new() };
    for candidate in [dir.join("libpulp_rs.so"), dir.join("../lib/libpulp_rs.so")] {
        if let Ok(info) = ObjectInfo::read(&candidate) {
            return info.symbols.into_iter().filter(|s| s.dynamic).map(|s| s.name).collect();
        }
    }
    // Not found: the runtime's API names all start with `pulp_`.
    vec![]
}

/// A breadth-first walk over `DT_NEEDED`, collecting exports.
#[derive(Default)]
struct Walk {
    queue: Vec<(String, PathBuf, Vec<String>)>,
    seen: HashSet<PathBuf>,
    exports: HashSet<String>,
    missing: HashSet<String>,
    cache: HashMap<String, Option<PathBuf>>,
}

impl Walk {
    fn add_needed(&mut self, object: &Path, info: &ObjectInfo) {
        let origin = object.parent().map(Path::to_path_buf).unwrap_or_default();
        let runpath: Vec<String> = info.runpath.iter().map(|p| expand_origin(p, &origin)).collect();
        for n in &info.needed {
            self.queue.push((n.clone(), origin.clone(), runpath.clone()));
        }
    }

    fn run(&mut self) {
        let system = system_dirs();
        while let Some((name, _origin, runpath)) = self.queue.pop() {
            if self.seen.len() >= MAX_LIBRARIES {
                break;
            }
            let found = match self.cache.get(&name) {
                Some(f) => f.clone(),
                None => {
                    let f = find_library(&name, &runpath, &system);
                    self.cache.insert(name.clone(), f.clone());
                    f
                }
            };
            let Some(path) = found else {
                self.missing.insert(name);
                continue;
            };
            if !self.seen.insert(path.clone()) {
                continue;
            }
            if let Ok(info) = ObjectInfo::read(&path) {
                self.exports.extend(info.symbols.iter().filter(|s| s.dynamic).map(|s| s.name.clone()));
                self.add_needed(&path, &info);
            }
        }
    }
}

fn expand_origin(p: &str, origin: &Path) -> String {
    let o = origin.to_string_lossy();
    p.replace("${ORIGIN}", &o).replace("$ORIGIN", &o)
}

/// Where `ld.so` would find library `name`.
fn find_library(name: &str, runpath: &[String], system: &[PathBuf]) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.exists().then_some(p);
    }
    let env: Vec<PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
        .map(|v| std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()).collect())
        .unwrap_or_default();
    runpath
        .iter()
        .map(PathBuf::from)
        .chain(env)
        .chain(system.iter().cloned())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The folders of `/etc/ld.so.conf` (with its `include`s) and the default ones.
fn system_dirs() -> Vec<PathBuf> {
    let mut out = Vec::new();
    read_ld_conf(Path::new("/etc/ld.so.conf"), &mut out, 0);
    for d in ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"] {
        out.push(PathBuf::from(d));
    }
    out
}

fn read_ld_conf(path: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    let Ok(text) = std::fs::read_to_string(path) else { return };
    if depth > 4 {
        return;
    }
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(pattern) = line.strip_prefix("include").map(str::trim) {
            for p in glob(pattern, path.parent().unwrap_or(Path::new("/"))) {
                read_ld_conf(&p, out, depth + 1);
            }
        } else if line.starts_with('/') {
            out.push(PathBuf::from(line));
        }
    }
}

/// The files matching `pattern` (one `*` in the file name at most, as ld.so.conf uses).
fn glob(pattern: &str, base: &Path) -> Vec<PathBuf> {
    let p = base.join(pattern);
    let (Some(dir), Some(name)) = (p.parent(), p.file_name().and_then(|n| n.to_str())) else { return Vec::new() };
    let (prefix, suffix) = name.split_once('*').unwrap_or((name, ""));
    let exact = !name.contains('*');
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|e| {
            let n = e.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if exact {
                n == name
            } else {
                n.starts_with(prefix) && n.ends_with(suffix) && n.len() >= prefix.len() + suffix.len()
            }
        })
        .collect();
    out.sort();
    out
}
