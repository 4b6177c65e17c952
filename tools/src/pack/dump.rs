//! `pulp dump`: show every field of a `patch.meta`, as text or JSON.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::text::printable;
use pulp_meta::format::{hex, FLAG_IMMEDIATE, FLAG_REPLACE, FORMAT_VERSION, KNOWN_FLAGS};
use pulp_meta::{MetaError, PatchMeta};
use serde_json::{json, Value};

/// A `patch.meta` that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{}: {reason}", path.display())]
    Checked { path: PathBuf, reason: String },
    #[error("{}: {source}", path.display())]
    Meta { path: PathBuf, source: MetaError },
}

/// Read and decode a `patch.meta` file.
pub fn read_meta(path: &Path) -> Result<PatchMeta, ReadError> {
    // The checked reader of `.meta` files: a FIFO is refused at once, a huge file not read.
    let bytes = pulp_meta::trust::read_meta_file(path)
        .map_err(|e| ReadError::Checked { path: path.into(), reason: e.to_string() })?;
    PatchMeta::decode(&bytes).map_err(|source| ReadError::Meta { path: path.into(), source })
}

/// Names of the set flag bits (unknown bits as `0x…`).
pub fn flag_names(flags: u32) -> Vec<String> {
    let mut names = Vec::new();
    if flags & FLAG_IMMEDIATE != 0 {
        names.push("immediate".to_owned());
    }
    if flags & FLAG_REPLACE != 0 {
        names.push("replace".to_owned());
    }
    let unknown = flags & !KNOWN_FLAGS;
    if unknown != 0 {
        names.push(format!("{unknown:#x}"));
    }
    names
}

/// Human-readable dump of every field; names and labels escaped.
pub fn to_text(meta: &PatchMeta) -> String {
    let mut s = String::new();
    let flags = flag_names(meta.flags);
    let flags = if flags.is_empty() { "none".to_owned() } else { flags.join(", ") };
    let _ = writeln!(s, "format version: {FORMAT_VERSION}");
    let _ = writeln!(s, "patch id:       {}", meta.id());
    let _ = writeln!(s, "flags:          {flags} ({:#x})", meta.flags);
    let level = if meta.level == 0 { "(none)".to_owned() } else { meta.level.to_string() };
    let _ = writeln!(s, "patch level:    {level}");
    let _ = writeln!(s, "patch .so:      {}", printable(&meta.patch_so));
    let _ = writeln!(s, "  build-id:     {}", hex(&meta.patch_build_id));
    let _ = writeln!(s, "  sha256:       {}", hex(&meta.patch_sha256));
    if meta.labels.is_empty() {
        let _ = writeln!(s, "labels:         (none)");
    } else {
        let _ = writeln!(s, "labels:");
        for l in &meta.labels {
            let _ = writeln!(s, "  {}", printable(l));
        }
    }
    if meta.states.is_empty() {
        let _ = writeln!(s, "states:         (none)");
    } else {
        let _ = writeln!(s, "states:");
        for st in &meta.states {
            let _ = writeln!(s, "  state {} version {}", st.id, st.version);
        }
    }
    let _ = writeln!(s, "targets:        {}", meta.targets.len());
    for t in &meta.targets {
        let _ = writeln!(s, "  target {}", printable(&t.path));
        let _ = writeln!(s, "    build-id:   {}", hex(&t.build_id));
        for f in &t.functions {
            let _ = writeln!(s, "    {}@{:#x} {} -> {}", printable(&f.old), f.offset, f.prologue, printable(&f.new));
            if let Some(d) = &f.displaced {
                let _ = writeln!(s, "      overwrites {} bytes at +{}: {}", d.original.len(), d.skip, hex(&d.original));
            }
        }
        for r in &t.references {
            let _ = writeln!(
                s,
                "    reference {}@{:#x} ({}) -> {}",
                printable(&r.symbol),
                r.offset,
                r.kind.name(),
                printable(&r.var)
            );
        }
    }
    s
}

/// The same fields as a JSON object (JSON escapes control characters itself).
pub fn to_json(meta: &PatchMeta) -> Value {
    json!({
        "format_version": FORMAT_VERSION,
        "patch_id": meta.id(),
        "flags": meta.flags,
        "flag_names": flag_names(meta.flags),
        "level": meta.level,
        "patch_so": { "path": meta.patch_so, "build_id": hex(&meta.patch_build_id), "sha256": hex(&meta.patch_sha256) },
        "labels": meta.labels,
        "states": meta.states.iter().map(|st| json!({ "id": st.id, "version": st.version })).collect::<Vec<_>>(),
        "targets": meta.targets.iter().map(|t| json!({
            "path": t.path,
            "build_id": hex(&t.build_id),
            "functions": t.functions.iter().map(|f| json!({
                "old": f.old,
                "offset": f.offset,
                "prologue": f.prologue as u8,
                "prologue_name": f.prologue.name(),
                "displaced": f.displaced.as_ref().map(|d| json!({ "skip": d.skip, "original": hex(&d.original) })),
                "new": f.new,
            })).collect::<Vec<_>>(),
            "references": t.references.iter().map(|r| json!({
                "symbol": r.symbol,
                "offset": r.offset,
                "kind": r.kind as u8,
                "kind_name": r.kind.name(),
                "var": r.var,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulp_meta::{Function, Prologue, RefKind, Reference, State, Target};

    fn sample() -> PatchMeta {
        PatchMeta {
            flags: FLAG_IMMEDIATE,
            level: 4,
            patch_so: "/opt/fix/libfix.so".into(),
            patch_build_id: vec![0xab, 0xcd],
            patch_sha256: [0x11; 32],
            labels: vec!["CVE-2026-1234".into(), "evil \x1b[31mred".into()],
            states: vec![State { id: 7, version: 2 }],
            targets: vec![Target {
                path: "/usr/lib/libfoo.so".into(),
                build_id: vec![1, 2, 0xff],
                functions: vec![Function {
                    old: "foo_parse".into(),
                    offset: 0x1130,
                    prologue: Prologue::NopPad66,
                    displaced: None,
                    new: "foo_parse_fixed".into(),
                }],
                references: vec![Reference {
                    symbol: "lenfix.1".into(),
                    offset: 0x2040,
                    kind: RefKind::Address,
                    var: "ref_lenfix".into(),
                }],
            }],
        }
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// Rebuild a [`PatchMeta`] from the JSON dump: nothing is lost.
    fn from_json(v: &Value) -> PatchMeta {
        let s = |v: &Value| v.as_str().unwrap().to_owned();
        PatchMeta {
            flags: v["flags"].as_u64().unwrap() as u32,
            level: v["level"].as_u64().unwrap() as u32,
            patch_so: s(&v["patch_so"]["path"]),
            patch_build_id: unhex(v["patch_so"]["build_id"].as_str().unwrap()),
            patch_sha256: unhex(v["patch_so"]["sha256"].as_str().unwrap()).try_into().unwrap(),
            labels: v["labels"].as_array().unwrap().iter().map(s).collect(),
            states: v["states"]
                .as_array()
                .unwrap()
                .iter()
                .map(|st| State { id: st["id"].as_u64().unwrap(), version: st["version"].as_u64().unwrap() as u32 })
                .collect(),
            targets: v["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| Target {
                    path: s(&t["path"]),
                    build_id: unhex(t["build_id"].as_str().unwrap()),
                    functions: t["functions"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|f| Function {
                            old: s(&f["old"]),
                            offset: f["offset"].as_u64().unwrap(),
                            prologue: Prologue::from_u8(f["prologue"].as_u64().unwrap() as u8).unwrap(),
                            displaced: f["displaced"].as_object().map(|d| pulp_meta::prologue::Displaced {
                                skip: d["skip"].as_u64().unwrap() as u8,
                                original: unhex(d["original"].as_str().unwrap()),
                            }),
                            new: s(&f["new"]),
                        })
                        .collect(),
                    references: t["references"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|r| Reference {
                            symbol: s(&r["symbol"]),
                            offset: r["offset"].as_u64().unwrap(),
                            kind: RefKind::from_u8(r["kind"].as_u64().unwrap() as u8).unwrap(),
                            var: s(&r["var"]),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn json_round_trips() {
        let m = sample();
        let text = serde_json::to_string_pretty(&to_json(&m)).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["format_version"], FORMAT_VERSION);
        assert_eq!(v["patch_id"], m.id());
        assert_eq!(v["flag_names"], json!(["immediate"]));
        assert_eq!(from_json(&v), m);
    }

    #[test]
    fn text_shows_every_field() {
        let t = to_text(&sample());
        for needle in [
            "format version: 3",
            &format!("patch id:       {}", sample().id()),
            "flags:          immediate (0x1)",
            "patch level:    4",
            "sha256:       1111",
            "state 7 version 2",
            "reference lenfix.1@0x2040 (address) -> ref_lenfix",
            "evil \\x1b[31mred",
            "/opt/fix/libfix.so",
            "CVE-2026-1234",
            "target /usr/lib/libfoo.so",
            "build-id:   0102ff",
            "foo_parse@0x1130 nop-pad (66 90) -> foo_parse_fixed",
        ] {
            assert!(t.contains(needle), "{needle:?} missing from\n{t}");
        }
        assert!(!t.contains('\x1b'), "an escape sequence reached the text: {t}");
    }

    #[test]
    fn read_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.meta");
        let mut bytes = sample().encode();
        let n = bytes.len();
        bytes[n - 6] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        let e = read_meta(&p).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}: corrupt patch.meta: checksum mismatch", p.display())), "{e}");
        let e = read_meta(&dir.path().join("none.meta")).unwrap_err().to_string();
        assert!(e.contains("none.meta: cannot read: "), "{e}");
    }
}
