//! One translation unit as the generator sees it (its functions and data objects, each
//! with the chunks that make it up), and the comparison of a unit before and after the fix.
//!
//! A function's **group** is its chunk, its cold parts (`f.cold`) and the constant data
//! private to the file it uses (strings, jump tables, `static const` tables, gcc's
//! `CSWTCH` switch tables); a data object's group is its chunk and the constant data it
//! points at. Constant private data is part of its users: when a table changes, so do
//! the functions that read it, and the patch carries the new copy. Two groups are compared as text after normalisation:
//! local labels renamed in order of appearance, and the numbers compilers append to
//! static variables and clones (`calls.0`, `f.constprop.1`) replaced by `#`, so that a
//! fix that adds a static elsewhere in the file does not make every user of the others
//! look changed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use pulp_elf::symbols::cold_parent;

use super::asm::{self, is_local_label, Chunk, Stmt, StmtKind, Unit};

/// A unit's assembly, read.
pub struct Tu {
    /// The unit's key (its object file, relative to the build's root).
    pub key: String,
    pub unit: Unit,
    pub chunks: Vec<Chunk>,
    /// Every label naming a chunk.
    pub by_label: HashMap<String, usize>,
    /// Entry functions (cold parts excluded).
    pub functions: BTreeSet<String>,
    /// Named data objects that are state (writable) or shared with other files (global);
    /// private constants are part of their users' groups.
    pub data: BTreeSet<String>,
    /// The cold parts of each function.
    cold: HashMap<String, Vec<usize>>,
}

/// `calls.0` -> `calls.#`, `f.constprop.12` -> `f.constprop.#`.
pub fn canon(name: &str) -> String {
    name.split('.')
        .enumerate()
        .map(|(i, part)| if i > 0 && !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) { "#" } else { part })
        .collect::<Vec<_>>()
        .join(".")
}

impl Tu {
    pub fn new(key: &str, text: &str) -> Tu {
        let unit = Unit::parse(text);
        let chunks = unit.chunks();
        let mut by_label = HashMap::new();
        let mut functions = BTreeSet::new();
        let mut data = BTreeSet::new();
        let mut cold: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, c) in chunks.iter().enumerate() {
            let code = unit.sections[c.section].is_code();
            for l in &c.labels {
                by_label.insert(l.clone(), i);
                if is_local_label(l) {
                    continue;
                }
                if code {
                    match cold_parent(l) {
                        None => {
                            functions.insert(l.clone());
                        }
                        Some(parent) => cold.entry(parent.to_owned()).or_default().push(i),
                    }
                } else if !unit.sections[c.section].is_constant() || unit.attrs.get(l).is_some_and(|a| a.global) {
                    data.insert(l.clone());
                }
            }
        }
        for (name, _) in &unit.commons {
            data.insert(name.clone());
        }
        Tu { key: key.to_owned(), unit, chunks, by_label, functions, data, cold }
    }

    pub fn stmts(&self, ci: usize) -> &[Stmt] {
        let c = &self.chunks[ci];
        &self.unit.sections[c.section].stmts[c.start..c.end]
    }

    pub fn is_code(&self, ci: usize) -> bool {
        self.unit.sections[self.chunks[ci].section].is_code()
    }

    /// The chunks of `name`'s group: its own, its cold parts, then the constant private
    /// data it reaches (through local labels and private constant symbols).
    pub fn group(&self, name: &str) -> Vec<usize> {
        let Some(&own) = self.by_label.get(name) else { return Vec::new() };
        let mut out = vec![own];
        if self.is_code(own) {
            out.extend(self.cold.get(name).into_iter().flatten().filter(|&&c| c != own));
        }
        let mut k = 0;
        while k < out.len() {
            for st in self.stmts(out[k]) {
                for r in asm::refs(st) {
                    let Some(&ci) = self.by_label.get(&r.name) else { continue };
                    if self.is_code(ci) || out.contains(&ci) {
                        continue;
                    }
                    if is_local_label(&r.name) || self.is_private_constant(&r.name) {
                        out.push(ci);
                    }
                }
            }
            k += 1;
        }
        out
    }

    /// Whether `name` is constant data no other file sees.
    pub fn is_private_constant(&self, name: &str) -> bool {
        let Some(&ci) = self.by_label.get(name) else { return false };
        self.unit.sections[self.chunks[ci].section].is_constant()
            && !self.unit.attrs.get(name).is_some_and(|a| a.global)
    }

    /// The named symbols a group refers to (not its local labels, not itself).
    pub fn references(&self, group: &[usize]) -> BTreeSet<String> {
        let own: BTreeSet<&String> = group.iter().flat_map(|&c| &self.chunks[c].labels).collect();
        let mut out = BTreeSet::new();
        for &c in group {
            for st in self.stmts(c) {
                for r in asm::refs(st) {
                    if !is_local_label(&r.name) && !own.contains(&r.name) {
                        out.insert(r.name);
                    }
                }
            }
        }
        out
    }

    /// A group as text for comparison (see the module's documentation).
    pub fn normalized(&self, group: &[usize]) -> String {
        let mut labels: HashMap<String, usize> = HashMap::new();
        let mut out = String::new();
        let mut local = |name: &str| -> String {
            let n = labels.len();
            format!("L{}", labels.entry(name.to_owned()).or_insert(n))
        };
        for &c in group {
            let sec = &self.unit.sections[self.chunks[c].section];
            out.push_str(&format!("[{}]\n", section_kind(&sec.name, &sec.flags)));
            for st in self.stmts(c) {
                match &st.kind {
                    StmtKind::Label(l) if is_local_label(l) => {
                        out.push_str(&local(l));
                        out.push_str(":\n");
                    }
                    StmtKind::Label(l) => {
                        out.push_str(&canon(l));
                        out.push_str(":\n");
                    }
                    _ => {
                        let mut text = String::new();
                        let mut at = 0;
                        for r in asm::refs(st) {
                            text.push_str(&st.text[at..r.start]);
                            let name = if is_local_label(&r.name) { local(&r.name) } else { canon(&r.name) };
                            text.push_str(&name);
                            if let Some(s) = &r.spec {
                                text.push('@');
                                text.push_str(s);
                            }
                            at = r.end;
                        }
                        text.push_str(&st.text[at..]);
                        out.push_str(&text.split_whitespace().collect::<Vec<_>>().join(" "));
                        out.push('\n');
                    }
                }
            }
        }
        out
    }

    /// For every named symbol: the (canonical) names of the functions and data objects
    /// whose groups refer to it.
    pub fn referrers(&self) -> HashMap<String, BTreeSet<String>> {
        let mut out: HashMap<String, BTreeSet<String>> = HashMap::new();
        for name in self.functions.iter().chain(&self.data) {
            for r in self.references(&self.group(name)) {
                out.entry(r).or_default().insert(canon(name));
            }
        }
        out
    }

    /// Whether `name` is a function or data object defined here (every function is a
    /// chunk label; commons are data without one).
    pub fn defines(&self, name: &str) -> bool {
        self.data.contains(name) || self.by_label.contains_key(name)
    }

    /// Whether `name` is defined in a code section.
    pub fn is_function(&self, name: &str) -> bool {
        self.by_label.get(name).is_some_and(|&c| self.is_code(c))
    }
}

/// A section's kind for comparison: its name without the object's own name, and its
/// flags (`.bss.x` and `.data.x` differ: a zero initial value became another).
fn section_kind(name: &str, flags: &str) -> String {
    let base =
        [".text", ".rodata", ".data.rel.ro", ".data.rel", ".data", ".bss", ".tdata", ".tbss", ".gcc_except_table"]
            .iter()
            .find(|p| name.starts_with(*p))
            .copied()
            .unwrap_or(name);
    format!("{base} {flags}")
}

/// What changed in a unit.
#[derive(Debug, Default)]
pub struct Diff {
    /// Functions whose code changed (after-names).
    pub changed: BTreeSet<String>,
    /// Functions the fix adds.
    pub new_functions: BTreeSet<String>,
    /// Data objects whose initial value (or section) changed.
    pub changed_data: BTreeSet<String>,
    pub new_data: BTreeSet<String>,
    /// After-name -> before-name for every symbol that exists on both sides.
    pub before_name: HashMap<String, String>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.new_functions.is_empty() && self.changed_data.is_empty()
    }
}

/// Pair each symbol of `after` with its counterpart in `before`: the same name, or for a
/// numbered name (`calls.1`, `f.isra.0`) the one with the same canonical name and the same
/// referrers (`ref_b`, `ref_a`: [`Tu::referrers`] of each side).
fn correlate(
    names_b: &BTreeSet<String>,
    names_a: &BTreeSet<String>,
    ref_b: &HashMap<String, BTreeSet<String>>,
    ref_a: &HashMap<String, BTreeSet<String>>,
) -> HashMap<String, String> {
    let numbered = |n: &str| canon(n) != n;
    let mut out = HashMap::new();
    let mut used: BTreeSet<&String> = BTreeSet::new();
    // Same name, and for numbered names the same users.
    for a in names_a {
        if names_b.contains(a) && (!numbered(a) || ref_b.get(a) == ref_a.get(a)) {
            out.insert(a.clone(), a.clone());
            used.insert(a);
        }
    }
    // Renumbered: same canonical name, same users, one candidate.
    let mut by_canon: BTreeMap<String, Vec<&String>> = BTreeMap::new();
    for b in names_b.iter().filter(|b| !used.contains(b)) {
        by_canon.entry(canon(b)).or_default().push(b);
    }
    let unmatched: Vec<&String> = names_a.iter().filter(|a| !out.contains_key(*a) && numbered(a)).collect();
    for a in unmatched {
        let Some(cands) = by_canon.get(&canon(a)) else { continue };
        let fitting: Vec<&&String> = cands.iter().filter(|b| ref_b.get(**b) == ref_a.get(a)).collect();
        if let [b] = fitting.as_slice() {
            out.insert(a.clone(), (**b).clone());
        } else if let ([b], None) = (cands.as_slice(), ref_a.get(a)) {
            out.insert(a.clone(), (*b).clone());
        }
    }
    out
}

/// Compare a unit before and after the fix.
pub fn diff(before: &Tu, after: &Tu) -> Diff {
    let mut d = Diff::default();
    let (ref_b, ref_a) = (before.referrers(), after.referrers());
    let fb = &before.functions;
    let fa = &after.functions;
    let func_map = correlate(fb, fa, &ref_b, &ref_a);
    for a in fa {
        match func_map.get(a) {
            Some(b) => {
                if before.normalized(&before.group(b)) != after.normalized(&after.group(a)) {
                    d.changed.insert(a.clone());
                }
            }
            None => {
                d.new_functions.insert(a.clone());
            }
        }
    }
    let data_map = correlate(&before.data, &after.data, &ref_b, &ref_a);
    for a in &after.data {
        match data_map.get(a) {
            Some(b) => {
                let (gb, ga) = (before.group(b), after.group(a));
                let common = |t: &Tu, n: &str| t.unit.commons.iter().find(|(c, _)| c == n).map(|(_, s)| s.text.clone());
                let differs = if ga.is_empty() || gb.is_empty() {
                    common(before, b) != common(after, a)
                } else {
                    before.normalized(&gb) != after.normalized(&ga) || size_attr(before, b) != size_attr(after, a)
                };
                if differs {
                    d.changed_data.insert(a.clone());
                }
            }
            None => {
                d.new_data.insert(a.clone());
            }
        }
    }
    d.before_name = func_map.into_iter().chain(data_map).collect();
    d
}

/// The `.size X, N` a unit declares for `name`.
fn size_attr(tu: &Tu, name: &str) -> Option<String> {
    let a = tu.unit.attrs.get(name)?;
    a.stmts.iter().find(|s| s.starts_with(".size")).map(|s| s.split(',').nth(1).unwrap_or("").trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(src: &str, cc: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("t.c");
        std::fs::write(&c, src).unwrap();
        let s = dir.path().join("t.s");
        let out = std::process::Command::new(cc)
            .args(["-O2", "-fPIC", "-mcmodel=large", "-ffunction-sections", "-fdata-sections", "-g", "-S"])
            .arg(&c)
            .arg("-o")
            .arg(&s)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::read_to_string(s).unwrap()
    }

    const BEFORE: &str = r#"
#include <string.h>
static int counter;
int table[3] = {1, 2, 3};
static inline int twice(int x) { return 2 * x; }
__attribute__((noinline)) static int helper(int x) { static int calls; calls++; return x + calls + counter; }
int a(int x) { return twice(x) + helper(x); }
int b(int x) { return twice(x + 1) - 1; }
int c(const char *s) { return (int)strlen(s) + table[1]; }
int d(int x) { switch (x) { case 0: return 5; case 1: return 7; case 2: return 11; case 3: return 13; case 4: return 17; default: return -1; } }
"#;

    fn diff_of(before: &str, after: &str, cc: &str) -> Diff {
        let b = Tu::new("t.o", &compile(before, cc));
        let a = Tu::new("t.o", &compile(after, cc));
        diff(&b, &a)
    }

    #[test]
    fn nothing_changes_without_a_change() {
        for cc in ["gcc", "clang"] {
            let d = diff_of(BEFORE, BEFORE, cc);
            assert!(d.is_empty() && d.new_data.is_empty(), "{cc}: {d:?}");
        }
    }

    #[test]
    fn an_inlined_change_shows_in_its_callers() {
        for cc in ["gcc", "clang"] {
            let after = BEFORE.replace("return 2 * x;", "return 3 * x;");
            let d = diff_of(BEFORE, &after, cc);
            assert_eq!(d.changed, ["a".to_string(), "b".to_string()].into(), "{cc}: {d:?}");
        }
    }

    #[test]
    fn new_statics_elsewhere_do_not_change_the_others() {
        for cc in ["gcc", "clang"] {
            let after = BEFORE.replace(
                "static int counter;",
                "static int counter;\nint e(void) { static int calls; return ++calls; }\n",
            );
            let d = diff_of(BEFORE, &after, cc);
            assert!(d.changed.is_empty(), "{cc}: {d:?}");
            assert_eq!(d.new_functions, ["e".to_string()].into(), "{cc}");
            assert_eq!(d.new_data.len(), 1, "{cc}: {d:?}");
        }
    }

    #[test]
    fn strings_jump_tables_and_data() {
        for cc in ["gcc", "clang"] {
            let d = diff_of(BEFORE, &BEFORE.replace("return 11;", "return 12;"), cc);
            assert_eq!(d.changed, ["d".to_string()].into(), "{cc}: {d:?}");
            let d = diff_of(BEFORE, &BEFORE.replace("{1, 2, 3}", "{1, 2, 4}"), cc);
            assert_eq!(d.changed_data, ["table".to_string()].into(), "{cc}: {d:?}");
            assert!(d.changed.is_empty(), "{cc}: {d:?}");
        }
        assert_eq!(canon("calls.0"), "calls.#");
        assert_eq!(canon("f.constprop.12"), "f.constprop.#");
        assert_eq!(canon("f.part.0.cold"), "f.part.#.cold");
        assert_eq!(cold_parent("f.part.0.cold"), Some("f.part.0"));
        assert_eq!(cold_parent("f.coldness"), None);
    }
}
