//! Fixes a live patch cannot reach because of where their code lives: in the dynamic
//! linker (`ld.so`), or in objects other than the target.
//!
//! The dynamic linker is refused as a target before anything is built: its code runs
//! before any patch can be loaded (relocation, tunables, `LD_*` parsing at start-up), a
//! patch object is loaded by it (`dlopen`) and the runtime's redirects go through it, and
//! much of it runs with its own locks held. glibc builds the same sources (`elf/dl-*.c`,
//! parts of `string/`) into both `ld.so` and `libc.so.6`; a fix to the `ld.so` copy does
//! not show in `libc.so.6`, and [`where_changes_went`] says where the changed sources
//! went instead.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use pulp_elf::ObjectInfo;

use super::workspace::Built;

/// The reason `info` (read from `path`) is the dynamic linker, if it is.
pub fn dynamic_linker(path: &Path, info: &ObjectInfo) -> Option<String> {
    let soname = info.soname.as_deref().unwrap_or_default();
    let is_rtld =
        pulp_elf::is_dynamic_linker_name(soname) || info.symbols.iter().any(|s| s.name == "_rtld_global" && s.global);
    is_rtld.then(|| {
        format!(
            "{} is the dynamic linker (ld.so{}): its code runs at start-up, before any patch can be loaded \
             (relocation, tunables such as GLIBC_TUNABLES, the LD_ variables), patches are loaded through \
             it with dlopen, and it runs with its own locks held; a live patch cannot replace its functions \
             (restart the processes with the fixed ld.so)",
            path.display(),
            if soname.is_empty() { String::new() } else { format!(", soname {soname}") }
        )
    })
}

/// Why a patch of `info` must switch every thread at once (`%immediate`), if it must:
/// the C library's exported entries are where a gated transition puts its gates, and the
/// runtime's gate path (unwinding, its log, system calls) calls the C library itself, so
/// it would enter a gate again, recursively, until its stack overflows.
pub fn immediate_only(info: &ObjectInfo) -> Option<String> {
    let soname = info.soname.as_deref()?;
    pulp_elf::is_c_library_name(soname).then(|| {
        format!(
            "the patch is packed %immediate (every thread switches at once; a thread inside a replaced \
             function finishes the old code): {soname} is the C library, which the runtime's transition \
             gates themselves call"
        )
    })
}

/// The files `diff` changes (`+++ b/PATH` lines, `-p1`).
pub fn changed_files(diff: &str) -> Vec<String> {
    let mut out: Vec<String> = diff
        .lines()
        .filter_map(|l| l.strip_prefix("+++ "))
        .map(|p| p.split('\t').next().unwrap_or(p).trim())
        .filter(|p| *p != "/dev/null")
        .map(|p| p.split_once('/').map(|x| x.1).unwrap_or(p).to_owned())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// For a fix that changes no function of the target: each changed source the build
/// compiled, and the final objects its objects were linked into (following partial links,
/// `ld -r`), naming the dynamic linker as such. Empty when the build compiled none of the
/// changed files.
pub fn where_changes_went(after: &Built, files: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for (file, objects, finals) in files_and_objects(after, files) {
        let named: Vec<String> = finals
            .iter()
            .map(|p| {
                let rel = p.strip_prefix(&after.root).unwrap_or(p).display().to_string();
                if is_dynamic_linker(p) {
                    format!("{rel} (the dynamic linker: not live-patchable)")
                } else {
                    rel
                }
            })
            .collect();
        let into = if named.is_empty() {
            "no link the build recorded (archives are not followed)".to_owned()
        } else {
            named.join(", ")
        };
        out.push(format!("{file} is compiled into {}, linked into {into}", rel_list(after, &objects)));
    }
    out
}

/// When every changed source the build compiled went into the dynamic linker only: the
/// refusal, naming where each went.
pub fn only_in_the_dynamic_linker(after: &Built, files: &[String]) -> Option<String> {
    let reached: Vec<bool> = files_and_objects(after, files)
        .iter()
        .map(|(_, _, finals)| !finals.is_empty() && finals.iter().all(|p| is_dynamic_linker(p)))
        .collect();
    (!reached.is_empty() && reached.iter().all(|r| *r)).then(|| {
        format!(
            "the fix changes only code of the dynamic linker (ld.so), which a live patch cannot replace: it runs \
             at start-up, before any patch can be loaded, and loads the patches (restart the processes with the \
             fixed ld.so):{}",
            where_changes_went(after, files).iter().map(|w| format!("\n    {w}")).collect::<String>()
        )
    })
}

/// Each changed file the build compiled: its objects and the linked objects they went into.
fn files_and_objects<'a>(after: &Built, files: &'a [String]) -> Vec<(&'a str, BTreeSet<PathBuf>, BTreeSet<PathBuf>)> {
    let mut out = Vec::new();
    for file in files {
        let source = after.root.join(file);
        let objects: BTreeSet<PathBuf> =
            after.tus.iter().filter(|t| t.source == source).map(|t| after.root.join(&t.key)).collect();
        if !objects.is_empty() {
            let finals = final_outputs(after, &objects);
            out.push((file.as_str(), objects, finals));
        }
    }
    out
}

fn is_dynamic_linker(p: &Path) -> bool {
    ObjectInfo::read(p).ok().and_then(|i| dynamic_linker(p, &i)).is_some()
}

fn rel_list(after: &Built, paths: &BTreeSet<PathBuf>) -> String {
    paths.iter().map(|p| p.strip_prefix(&after.root).unwrap_or(p).display().to_string()).collect::<Vec<_>>().join(", ")
}

/// The outputs of the links that take `objects` in, followed through partial links
/// (relocatable outputs, [`partial`](super::partial)) to the linked objects; a shared
/// object another links against (`libc.so` against `ld.so`) is where it ends.
fn final_outputs(after: &Built, objects: &BTreeSet<PathBuf>) -> BTreeSet<PathBuf> {
    let mut seen: BTreeSet<PathBuf> = objects.clone();
    let mut work: Vec<PathBuf> = objects.iter().cloned().collect();
    let mut finals = BTreeSet::new();
    while let Some(obj) = work.pop() {
        for l in after.links.iter().filter(|l| l.inputs.contains(&obj)) {
            if !seen.insert(l.output.clone()) {
                continue;
            }
            if super::partial::is_relocatable(&l.output) {
                work.push(l.output.clone());
            } else if let Some(out) = where_it_is(&l.output) {
                finals.insert(out);
            }
        }
    }
    finals
}

/// Where a link's output lies now: itself, or for `X.new` that is gone `X` (glibc links
/// `ld.so.new`, then renames it); `None` for a temporary output the build removed.
fn where_it_is(output: &Path) -> Option<PathBuf> {
    if output.exists() {
        return Some(output.to_path_buf());
    }
    let renamed = output.to_str()?.strip_suffix(".new").map(PathBuf::from)?;
    renamed.exists().then_some(renamed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buildpatch::workspace::TuRecord;

    #[test]
    fn the_files_a_diff_changes() {
        let diff = "diff --git a/elf/dl-tunables.c b/elf/dl-tunables.c\n--- a/elf/dl-tunables.c\n\
                    +++ b/elf/dl-tunables.c\n@@ -1 +1 @@\n--- a/NEWS\t2023\n+++ b/NEWS\t2023\n+++ /dev/null\n";
        assert_eq!(changed_files(diff), ["NEWS", "elf/dl-tunables.c"]);
    }

    #[test]
    fn partial_links_are_followed_to_the_linked_objects() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        std::fs::create_dir_all(root.join("build/elf")).unwrap();
        for (name, t) in
            [("build/elf/dl-allobjs.os", 1), ("build/elf/librtld.os", 1), ("build/elf/ld.so", 3), ("build/libc.so", 3)]
        {
            crate::buildpatch::partial::write_elf_header(&root.join(name), t);
        }
        let tu = |key: &str, src: &str| TuRecord {
            key: key.into(),
            source: root.join(src),
            asm: PathBuf::new(),
            lto: false,
            cwd: root.clone(),
            compiler: vec![],
            args: vec![],
        };
        let link = |out: &str, ins: &[&str]| crate::buildpatch::partial::link_record(&root, out, ins);
        let built = Built {
            root: root.clone(),
            tus: vec![tu("build/elf/dl-tunables.os", "elf/dl-tunables.c"), tu("build/misc/syslog.os", "misc/syslog.c")],
            links: vec![
                link("build/elf/dl-allobjs.os", &["build/elf/dl-tunables.os", "build/elf/dl-misc.os"]),
                link("build/elf/librtld.os", &["build/elf/dl-allobjs.os"]),
                // Linked as ld.so.new, then renamed; a temporary link the build removed.
                link("build/elf/ld.so.new", &["build/elf/librtld.os"]),
                link("build/elf/librtld.map.o", &["build/elf/librtld.os"]),
                // libc.so links against ld.so: not where dl-tunables.c went.
                link("build/libc.so", &["build/libc_pic.os", "build/elf/ld.so"]),
            ],
            took: Default::default(),
        };
        let went = where_changes_went(&built, &["elf/dl-tunables.c".into(), "misc/syslog.c".into(), "NEWS".into()]);
        assert_eq!(
            went,
            [
                "elf/dl-tunables.c is compiled into build/elf/dl-tunables.os, linked into build/elf/ld.so",
                "misc/syslog.c is compiled into build/misc/syslog.os, linked into no link the build recorded \
                 (archives are not followed)"
            ]
        );
    }
}
