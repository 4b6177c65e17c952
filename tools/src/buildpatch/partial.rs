//! Partial links (`cc -r`, `ld -r`): an object made of objects. glibc links `libc.so`
//! from `libc_pic.os`, itself `-r`-linked from the archive `libc_pic.a` of every unit,
//! and `ld.so` from `librtld.os` and `dl-allobjs.os`. [`through_partial_links`] puts,
//! in the target's link, each input that a recorded link made as a relocatable object in
//! the place of that link's inputs (again and again), so the units behind them count as
//! the target's. Shared objects among the inputs (`libc.so` links `ld.so`) stay as they
//! are: they are other objects.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::workspace::{Built, LinkRecord};

/// `link` with its partial-link inputs replaced by what they were linked from.
pub fn through_partial_links(built: &Built, link: &LinkRecord) -> LinkRecord {
    let mut seen: BTreeSet<PathBuf> = BTreeSet::new();
    let mut inputs = Vec::new();
    let mut work: Vec<PathBuf> = link.inputs.iter().rev().cloned().collect();
    while let Some(i) = work.pop() {
        if !seen.insert(i.clone()) {
            continue;
        }
        let made = built.links.iter().rev().find(|l| l.output == i && l.output != link.output);
        match made {
            Some(l) if is_relocatable(&i) => work.extend(l.inputs.iter().rev().cloned()),
            _ => inputs.push(i),
        }
    }
    LinkRecord { output: link.output.clone(), inputs, libs: link.libs.clone() }
}

/// An ELF relocatable object (`ET_REL`): what a partial link makes.
pub(super) fn is_relocatable(path: &Path) -> bool {
    let mut head = [0u8; 18];
    std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head)).is_ok()
        && head[..4] == *b"\x7fELF"
        && u16::from_le_bytes([head[16], head[17]]) == 1
}

/// A link record of `root/out` from `root/ins...` (for tests).
#[cfg(test)]
pub(super) fn link_record(root: &Path, out: &str, ins: &[&str]) -> LinkRecord {
    LinkRecord { output: root.join(out), inputs: ins.iter().map(|i| root.join(i)).collect(), libs: vec![] }
}

/// Write the 64-byte ELF header of type `e_type` (1 relocatable, 3 shared) at `path`.
#[cfg(test)]
pub(super) fn write_elf_header(path: &Path, e_type: u8) {
    let mut h = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, e_type, 0];
    h.resize(64, 0);
    std::fs::write(path, h).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_links_are_replaced_by_their_inputs_shared_objects_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        for (name, t) in [("libc_pic.os", 1), ("ld.so", 3), ("soinit.os", 1)] {
            write_elf_header(&root.join(name), t);
        }
        let link = |out: &str, ins: &[&str]| link_record(&root, out, ins);
        let built = Built {
            root: root.clone(),
            tus: vec![],
            links: vec![
                link("libc_pic.os", &["libc_pic.a"]),
                link("ld.so", &["librtld.os"]),
                link("libc.so", &["soinit.os", "libc_pic.os", "ld.so"]),
            ],
            took: Default::default(),
        };
        let flat = through_partial_links(&built, &built.links[2]);
        assert_eq!(flat.inputs, [root.join("soinit.os"), root.join("libc_pic.a"), root.join("ld.so")]);
        assert_eq!(flat.output, root.join("libc.so"));
    }
}
