//! The units of the target on both sides of the fix: the link of the before-build that
//! made the target, the units compared one by one, and the changes a live patch cannot
//! carry (initial values of existing data, struct layouts).

use std::path::{Path, PathBuf};

use super::tu::Tu;
use super::workspace::{Built, LinkRecord};
use super::{driver, tu, BuildPatchError};

/// One unit on both sides.
pub(super) struct Unit {
    /// Its source file, relative to the sources' root.
    pub(super) key: String,
    pub(super) before: Tu,
    pub(super) after: Tu,
    pub(super) diff: tu::Diff,
    /// The side compiles read (the before one is missing for a file the fix adds).
    pub(super) before_asm: Option<PathBuf>,
    pub(super) after_asm: PathBuf,
}

/// The link of the before-build whose output is `target`'s rebuild, checked identical.
pub(super) fn matching_link(before: &Built, target: &Path) -> Result<LinkRecord, BuildPatchError> {
    let name = target.file_name();
    let mut candidates: Vec<&LinkRecord> = before.links.iter().filter(|l| l.output.file_name() == name).collect();
    if candidates.is_empty() {
        candidates = before.links.iter().collect();
    }
    let mut first_difference = None;
    for l in candidates.iter().rev() {
        if !l.output.is_file() {
            continue;
        }
        match pulp_elf::image::compare(&l.output, target) {
            Ok(None) => return Ok((*l).clone()),
            Ok(Some(d)) => {
                if first_difference.is_none() && l.output.file_name() == name {
                    first_difference = Some((l.output.clone(), d));
                }
            }
            Err(_) => continue,
        }
    }
    let id = |p: &Path| pulp_elf::build_id(p).map(|b| pulp_meta::format::hex(&b)).unwrap_or_else(|_| "none".into());
    match first_difference {
        Some((rebuilt, d)) => Err(BuildPatchError::Mismatch {
            rebuilt: rebuilt.display().to_string(),
            target: target.display().to_string(),
            difference: d.to_string(),
            rebuilt_id: id(&rebuilt),
            target_id: id(target),
        }),
        None => Err(BuildPatchError::NoTarget {
            target: target.display().to_string(),
            built: before.links.iter().map(|l| l.output.display().to_string()).collect::<Vec<_>>().join(", "),
        }),
    }
}

/// Read and compare the units of the target on both sides.
pub(super) fn compare_units(before: &Built, after: &Built, link: &LinkRecord) -> Result<Vec<Unit>, BuildPatchError> {
    let mut keys: Vec<String> = before.units_of(link).iter().map(|t| t.key.clone()).collect();
    if keys.is_empty() {
        keys = before.tus.iter().map(|t| t.key.clone()).collect();
    }
    // Units the fix adds: in the after-build's link of the same output.
    let out_key = link.output.strip_prefix(&before.root).unwrap_or(&link.output).to_path_buf();
    if let Some(after_link) = after.links.iter().rev().find(|l| l.output == after.root.join(&out_key)) {
        for t in after.units_of(after_link) {
            if !keys.contains(&t.key) {
                keys.push(t.key.clone());
            }
        }
    }
    keys.sort();
    keys.dedup();
    let read =
        |p: &Path| std::fs::read_to_string(p).map_err(|e| BuildPatchError::Build(format!("{}: {e}", p.display())));
    let mut units = Vec::new();
    for key in keys {
        let (Some(a), b) = (after.tu(&key), before.tu(&key)) else { continue };
        let after_text = read(&a.asm)?;
        let before_text = match b {
            Some(b) => read(&b.asm)?,
            None => String::new(),
        };
        if before_text == after_text {
            continue;
        }
        // Units are named by their source file in messages.
        let source = a.source.strip_prefix(&after.root).unwrap_or(&a.source).to_string_lossy().into_owned();
        let bt = Tu::new(&source, &before_text);
        let at = Tu::new(&source, &after_text);
        let diff = tu::diff(&bt, &at);
        units.push(Unit {
            key: source,
            before: bt,
            after: at,
            diff,
            before_asm: b.map(|b| b.asm.clone()),
            after_asm: a.asm.clone(),
        });
    }
    Ok(units)
}

/// Objects of the target that the fixed build made anew, but not by compiling C or C++
/// (assembly: OpenSSL's perl-generated `crypto/*/asm/*.pl`; another tool's output): no
/// side compile shows their functions, which have no patchable prologue either.
pub(super) fn refuse_changed_other_objects(
    before: &Built,
    after: &Built,
    link: &LinkRecord,
    diff: &Path,
) -> Result<(), BuildPatchError> {
    let out_key = link.output.strip_prefix(&before.root).unwrap_or(&link.output).to_path_buf();
    let Some(after_link) = after.links.iter().rev().find(|l| l.output == after.root.join(&out_key)) else {
        return Ok(());
    };
    // What partial links made stands for its inputs; shared objects and linker scripts
    // among the inputs are other objects.
    let after_link = super::partial::through_partial_links(after, after_link);
    let mut problems = Vec::new();
    for input in &after_link.inputs {
        let Ok(rel) = input.strip_prefix(&after.root) else { continue };
        let key = rel.to_string_lossy();
        if after.tu(&key).is_some() || !super::partial::is_relocatable(input) {
            continue;
        }
        let (Ok(new), Ok(old)) = (std::fs::read(input), std::fs::read(before.root.join(rel))) else { continue };
        if new != old {
            problems.push(format!(
                "{key} changes, but it is not compiled from C or C++ (assembly, such as OpenSSL's perl-generated \
                 crypto/*/asm/*.pl, or another tool's output): its functions can be neither compared nor \
                 redirected{}",
                non_c_files(diff).map(|f| format!("; the diff changes {f}")).unwrap_or_default()
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(BuildPatchError::Refused(problems))
    }
}

/// The files of a diff that are not C or C++ sources or headers, when there are any.
fn non_c_files(diff: &Path) -> Option<String> {
    const C: &[&str] = &["c", "h", "cc", "cpp", "cxx", "hpp", "hh", "hxx", "inc"];
    let text = std::fs::read_to_string(diff).ok()?;
    let files: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("+++ "))
        .map(|l| l.split('\t').next().unwrap_or(l).trim())
        .map(|f| f.split_once('/').map_or(f, |(_, rest)| rest))
        .filter(|f| !Path::new(f).extension().is_some_and(|e| C.contains(&e.to_string_lossy().as_ref())))
        .collect();
    (!files.is_empty()).then(|| files.join(", "))
}

/// Changed initial values of existing data and changed struct layouts cannot be patched.
pub(super) fn refuse_data_and_layout_changes(units: &[Unit], work: &Path) -> Result<(), BuildPatchError> {
    let mut problems = Vec::new();
    for u in units {
        for d in &u.diff.changed_data {
            problems.push(format!(
                "the initial value of `{d}` ({}) changes: a running process keeps the value it has, so the fix \
                 would not hold (write the fix so that it does not depend on a new initial value)",
                u.key
            ));
        }
    }
    let dir = work.join("layouts");
    let _ = std::fs::create_dir_all(&dir);
    for (i, u) in units.iter().enumerate().filter(|(_, u)| !u.diff.is_empty()) {
        let object = |asm: Option<&PathBuf>, side: &str| -> Option<PathBuf> {
            let o = dir.join(format!("{i}-{side}.o"));
            // Its warnings were the build's to give: keep them quiet.
            let ok = driver(false).arg("-c").arg(asm?).arg("-o").arg(&o).output().ok()?.status.success();
            ok.then_some(o)
        };
        let (Some(bo), Some(ao)) = (object(u.before_asm.as_ref(), "before"), object(Some(&u.after_asm), "after"))
        else {
            continue;
        };
        let (Ok(bl), Ok(al)) = (pulp_elf::dwarf::layouts(&bo), pulp_elf::dwarf::layouts(&ao)) else { continue };
        for (name, before_set) in &bl {
            let Some(after_set) = al.get(name) else { continue };
            if before_set != after_set {
                let (b, a) = (before_set.iter().next(), after_set.iter().next());
                let what = match (b, a) {
                    (Some(b), Some(a)) if before_set.len() == 1 && after_set.len() == 1 => b.describe_change(a),
                    _ => "its layout changes".into(),
                };
                let tag = b.map(|l| l.tag).unwrap_or("struct");
                problems.push(format!(
                    "{tag} `{name}` changes layout ({}): {what}; objects of the old layout live in the process and \
                     unchanged code keeps using it",
                    u.key
                ));
            }
        }
    }
    problems.sort();
    problems.dedup();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(BuildPatchError::Refused(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::super::partial::{link_record, write_elf_header};
    use super::*;
    use crate::buildpatch::workspace::TuRecord;

    #[test]
    fn only_changed_objects_not_compiled_from_c_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (b, a) = (dir.path().join("before"), dir.path().join("after"));
        for root in [&b, &a] {
            std::fs::create_dir_all(root).unwrap();
            // c.o compiled from C; asm.o assembled; p.os a partial link of c.o; libx.so shared.
            write_elf_header(&root.join("c.o"), 1);
            write_elf_header(&root.join("asm.o"), 1);
            write_elf_header(&root.join("same.o"), 1);
            write_elf_header(&root.join("p.os"), 1);
            write_elf_header(&root.join("libx.so"), 3);
        }
        for f in ["c.o", "asm.o", "p.os", "libx.so"] {
            let mut bytes = std::fs::read(a.join(f)).unwrap();
            bytes.push(1);
            std::fs::write(a.join(f), bytes).unwrap();
        }
        let built = |root: &Path| Built {
            root: root.to_path_buf(),
            tus: vec![TuRecord { key: "c.o".into(), ..Default::default() }],
            links: vec![
                link_record(root, "p.os", &["c.o"]),
                link_record(root, "libt.so", &["p.os", "asm.o", "same.o", "libx.so"]),
            ],
            took: Default::default(),
        };
        let (before, after) = (built(&b), built(&a));
        let diff = dir.path().join("fix.patch");
        std::fs::write(&diff, "--- a/x/asm.pl\n+++ b/x/asm.pl\n@@ -1 +1 @@\n-a\n+b\n--- a/c.c\n+++ b/c.c\n").unwrap();
        match refuse_changed_other_objects(&before, &after, &before.links[1], &diff) {
            Err(BuildPatchError::Refused(p)) => {
                assert_eq!(p.len(), 1, "{p:?}");
                assert!(p[0].starts_with("asm.o changes, but it is not compiled from C"), "{}", p[0]);
                assert!(p[0].ends_with("; the diff changes x/asm.pl"), "{}", p[0]);
            }
            other => panic!("expected a refusal: {other:?}"),
        }
    }
}
