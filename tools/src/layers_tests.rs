//! The layering of `lib.rs` kept true: no file of a folder names a module above it (or
//! beside it) through `crate::`.

use std::path::{Path, PathBuf};

/// Each folder (or base file) of `src`, and the top-level modules it must not use.
const FORBIDDEN: &[(&str, &[&str])] = &[
    ("error.rs", &["inject", "apply", "fleet", "inspect", "pack", "buildpatch"]),
    ("text.rs", &["inject", "apply", "fleet", "inspect", "pack", "buildpatch"]),
    ("inject", &["apply", "fleet", "inspect", "pack", "buildpatch"]),
    ("apply", &["fleet", "inspect", "pack", "buildpatch"]),
    ("fleet", &["inspect", "pack", "buildpatch"]),
    ("inspect", &["pack", "buildpatch"]),
    ("pack", &["inject", "apply", "fleet", "inspect", "buildpatch"]),
    ("buildpatch", &["inject", "apply", "fleet", "inspect"]),
];

fn rust_files(at: &Path, out: &mut Vec<PathBuf>) {
    if at.is_file() {
        out.push(at.to_path_buf());
        return;
    }
    for entry in std::fs::read_dir(at).unwrap_or_else(|e| panic!("{}: {e}", at.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() || path.extension().is_some_and(|e| e == "rs") {
            rust_files(&path, out);
        }
    }
}

/// Whether `text` names module `module` of the crate (`crate::fleet`, not
/// `crate::fleetwide`).
fn uses(text: &str, module: &str) -> bool {
    let needle = format!("crate::{module}");
    text.match_indices(&needle)
        .any(|(i, _)| text[i + needle.len()..].chars().next().is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_')))
}

#[test]
fn no_folder_uses_a_module_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    for (folder, forbidden) in FORBIDDEN {
        let mut files = Vec::new();
        rust_files(&src.join(folder), &mut files);
        assert!(!files.is_empty(), "no source file under {folder}");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            for module in forbidden.iter().filter(|m| uses(&text, m)) {
                wrong.push(format!("{} uses crate::{module}", file.strip_prefix(&src).unwrap_or(&file).display()));
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn the_check_sees_a_use() {
    assert!(uses("use crate::fleet::select;", "fleet"));
    assert!(uses("crate::pack", "pack"));
    assert!(!uses("use crate::fleetwide;", "fleet"));
    assert!(!uses("use crate::inject::process;", "fleet"));
}
