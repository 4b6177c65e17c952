//! Whether two linked objects load the same bytes: every allocated section (code, data,
//! dynamic tables) at the same address with the same content. Notes (the build-id among
//! them) and everything not loaded (symbols, debug info) may differ.
//!
//! `pulp build-patch` uses it to check that its rebuild of the original sources is the
//! object the processes run, so that symbols and code of the rebuild stand for it.

use std::path::Path;

use object::{Object, ObjectSection, ObjectSymbol, SectionFlags, SectionKind};

use crate::InspectError;

/// How two objects differ: the first difference found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    /// Section name.
    pub section: String,
    /// What differs, for a message (`size 120 vs 124`, `content at 0x1234, in function foo`).
    pub what: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "section {}: {}", self.section, self.what)
    }
}

/// The loaded sections of an object: (name, address, size, kind, bytes).
fn loaded<'a>(file: &object::File<'a>) -> Vec<(String, u64, u64, SectionKind, &'a [u8])> {
    let mut out = Vec::new();
    for s in file.sections() {
        let alloc =
            matches!(s.flags(), SectionFlags::Elf { sh_flags } if sh_flags & object::elf::SHF_ALLOC as u64 != 0);
        if !alloc || s.kind() == SectionKind::Note {
            continue;
        }
        let name = s.name().unwrap_or("").to_owned();
        let data = if s.kind() == SectionKind::UninitializedData || s.kind() == SectionKind::UninitializedTls {
            &[][..]
        } else {
            s.data().unwrap_or(&[])
        };
        out.push((name, s.address(), s.size(), s.kind(), data));
    }
    out.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    out
}

/// Compare the loaded image of `rebuilt` with `running`; `None` when identical. A
/// difference in code is named by the function of `rebuilt` it lies in.
pub fn compare(rebuilt: &Path, running: &Path) -> Result<Option<Difference>, InspectError> {
    let (da, db) = (crate::read(rebuilt)?, crate::read(running)?);
    let (fa, fb) = (crate::parse(rebuilt, &da)?, crate::parse(running, &db)?);
    let (la, lb) = (loaded(&fa), loaded(&fb));
    let names = |l: &[(String, u64, u64, SectionKind, &[u8])]| l.iter().map(|s| s.0.clone()).collect::<Vec<_>>();
    if names(&la) != names(&lb) {
        let only_a: Vec<String> = names(&la).into_iter().filter(|n| !names(&lb).contains(n)).collect();
        let only_b: Vec<String> = names(&lb).into_iter().filter(|n| !names(&la).contains(n)).collect();
        return Ok(Some(Difference {
            section: only_a.first().or(only_b.first()).cloned().unwrap_or_default(),
            what: format!(
                "the sections differ (only in the rebuild: {}; only in the running object: {})",
                list(&only_a),
                list(&only_b)
            ),
        }));
    }
    // The first difference, preferring one in code: it names a function.
    let mut found: Option<Difference> = None;
    for (a, b) in la.iter().zip(&lb) {
        let first = a.4.iter().zip(b.4).position(|(x, y)| x != y).map(|i| a.1 + i as u64).or_else(|| {
            // Same bytes as far as both go: the shorter ends where the other goes on.
            (a.2 != b.2).then(|| a.1 + a.2.min(b.2))
        });
        let d = match first {
            Some(addr) if a.1 == b.1 => {
                let within = fa
                    .symbols()
                    .filter(|s| s.address() <= addr && addr < s.address() + s.size().max(1))
                    .find_map(|s| s.name().ok().filter(|n| !n.is_empty()).map(str::to_owned));
                let size = if a.2 == b.2 { String::new() } else { format!(" (size {} vs {})", a.2, b.2) };
                match within {
                    Some(sym) => format!("content differs at {addr:#x}, in `{sym}`{size}"),
                    None => format!("content differs at {addr:#x}{size}"),
                }
            }
            _ if (a.1, a.2) != (b.1, b.2) => format!("address/size {:#x}/{} vs {:#x}/{}", a.1, a.2, b.1, b.2),
            _ => continue,
        };
        let d = Difference { section: a.0.clone(), what: d };
        if a.3 == SectionKind::Text {
            return Ok(Some(d));
        }
        found.get_or_insert(d);
    }
    if found.is_some() {
        return Ok(found);
    }
    Ok(None)
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}
