//! What `pulp livepatchable` says of functions built without a pad: whether an entry jump
//! could overwrite their first instructions, and why not. On a gcc-built fixture with one
//! function of each verdict (tests/fixtures/unpadded_verdicts.c), with and without `endbr64`,
//! and on the system's own libz and libc.

use std::collections::BTreeMap;
use std::path::Path;

use libpulp_rs_tests::{pulp, CSpec, ToolOutput, Work};
use serde_json::Value;

const LIBZ: &str = "/lib/x86_64-linux-gnu/libz.so.1";
const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";

fn livepatchable_json(file: &Path) -> (ToolOutput, Value) {
    let out = pulp(&["livepatchable", "--json", file.to_str().unwrap()]);
    let v = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:#?}"));
    (out, v)
}

fn function<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["functions"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["name"] == name))
        .unwrap_or_else(|| panic!("no {name} in {v}"))
}

/// The text line of `name`.
fn line<'a>(out: &'a ToolOutput, name: &str) -> &'a str {
    out.stdout
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no line for {name}: {out:#?}"))
}

/// The summary's counts agree with the functions listed, and none of them is patchable
/// by this release for its entry jump alone.
fn counts_agree(v: &Value) {
    let unpadded: Vec<&Value> =
        v["functions"].as_array().unwrap().iter().filter(|f| !f["entry_jump"].is_null()).collect();
    assert!(unpadded.iter().all(|f| f["patchable"] == false && f["supported"] == false), "{v}");
    let plannable = unpadded.iter().filter(|f| f["entry_jump"]["plannable"] == true).count();
    let mut refused: BTreeMap<String, u64> = BTreeMap::new();
    for f in unpadded.iter().filter(|f| f["entry_jump"]["plannable"] == false) {
        *refused.entry(f["entry_jump"]["reason"].as_str().unwrap().to_string()).or_default() += 1;
    }
    let s = &v["summary"];
    assert_eq!(s["unpadded"], unpadded.len(), "{s}");
    assert_eq!(s["entry_jump_plannable"], plannable, "{s}");
    assert_eq!(s["entry_jump_refused"], serde_json::to_value(&refused).unwrap(), "{s}");
}

#[test]
fn fixture_functions_get_their_verdicts() {
    let work = Work::new();
    for (name, flag, kept) in [("unpadded", "-fcf-protection=none", 0), ("unpadded_ibt", "-fcf-protection", 4)] {
        let lib = work.shared(name, &CSpec::plain(&["unpadded_verdicts.c"]).compiler("gcc").flag(flag));
        let (out, v) = livepatchable_json(&lib);
        assert_eq!(out.code, Some(1), "no function has a prologue: the object does not pass: {out:#?}");
        assert_eq!(v["livepatchable"], false);
        counts_agree(&v);

        // imul %esi,%edi; lea 7(%rdi),%eax: 6 bytes, after endbr64 when there is one.
        let scale = &function(&v, "unpadded_scale")["entry_jump"];
        assert_eq!(scale["plannable"], true, "{scale}");
        assert_eq!((scale["kept"].as_u64(), scale["overwritten"].as_u64()), (Some(kept), Some(6)), "{scale}");

        // The CAS loop's jne goes back to the instruction after the 2-byte load.
        let cas = function(&v, "unpadded_cas_add");
        let loop_head = cas["offset"].as_u64().unwrap() + kept + 2;
        assert_eq!(cas["entry_jump"]["reason"], "branch-into-overwritten", "{cas}");
        let why = cas["entry_jump"]["why"].as_str().unwrap();
        assert!(why.contains(&format!("lands at {loop_head:#x}, inside the first bytes")), "{why}");

        let zero = &function(&v, "unpadded_zero")["entry_jump"];
        assert_eq!(zero["reason"], "too-short", "{zero}");
        let need = 5 + kept;
        assert_eq!(
            zero["why"],
            format!("{} bytes long, shorter than the {need} bytes the entry jump needs", 3 + kept),
            "{zero}"
        );

        // The same verdicts as text, each on its function's line, and the counts.
        let out = pulp(&["livepatchable", lib.to_str().unwrap()]);
        assert_eq!(out.code, Some(1), "{out:#?}");
        let after = if kept > 0 { " after endbr64" } else { "" };
        assert!(line(&out, "unpadded_scale").ends_with(&format!("no         overwrites 6 bytes{after}")), "{out:#?}");
        let cas = line(&out, "unpadded_cas_add");
        assert!(cas.contains("refused, branch-into-overwritten: a jump at"), "{cas}");
        assert!(line(&out, "unpadded_zero").contains("refused, too-short:"), "{out:#?}");
        let no_size = v["summary"]["entry_jump_refused"]["unsized"].as_u64().unwrap_or(0);
        let total = v["summary"]["unpadded"].as_u64().unwrap();
        let summary = format!(
            "without a patchable prologue: {total}; an entry jump could overwrite the first instructions of 1, \
             refused {}: 1 branch-into-overwritten, 1 too-short",
            total - 1
        );
        assert!(out.stdout.contains(&summary), "{summary}\n{out:#?}");
        if no_size > 0 {
            // gcc's crt code (_init, frame_dummy, ...) is assembly without sizes.
            assert!(
                out.stdout.contains(&format!(", {no_size} unsized (pulp pack and pulp-trigger patch those")),
                "{out:#?}"
            );
        }
        assert!(out.stdout.trim_end().ends_with("(build it with pulp-cc or -fpatchable-function-entry=16,14)"));
    }
}

#[test]
fn padded_functions_get_no_entry_jump_verdict() {
    let work = Work::new();
    let lib = work.shared("calc", &CSpec::patchable(&["calc.c"]));
    let out = pulp(&["livepatchable", lib.to_str().unwrap()]);
    out.assert_ok("pulp livepatchable");
    assert!(line(&out, "calc").ends_with("nop-pad (66 90)         yes"), "{out:#?}");
    let (_, v) = livepatchable_json(&lib);
    assert!(function(&v, "calc")["entry_jump"].is_null(), "{v}");
    // Only the C runtime's start code (_init, frame_dummy: assembly without .size) is
    // unpadded here.
    counts_agree(&v);
    assert_eq!(v["summary"]["entry_jump_refused"]["unsized"], v["summary"]["unpadded"], "{v}");
}

#[test]
fn system_libz() {
    let (out, v) = livepatchable_json(Path::new(LIBZ));
    assert_eq!(out.code, Some(1), "{out:#?}");
    counts_agree(&v);
    assert!(v["summary"]["unpadded"].as_u64().unwrap() >= 80, "{}", v["summary"]);
    for name in ["zlibVersion", "crc32", "adler32", "inflate", "deflate"] {
        let e = &function(&v, name)["entry_jump"];
        assert_eq!(e["plannable"], true, "{name}: {e}");
        assert!(e["overwritten"].as_u64().unwrap() >= 5, "{name}: {e}");
    }
    let out = pulp(&["livepatchable", LIBZ]);
    assert!(line(&out, "zlibVersion").contains("not patchable") && line(&out, "zlibVersion").contains("overwrites"));
    assert!(out.stdout.contains("(pulp pack and pulp-trigger patch those by overwriting their entry)"), "{out:#?}");
    assert!(out.stdout.contains("live-patchable: no:"), "{out:#?}");
}

#[test]
fn system_libc() {
    let (out, v) = livepatchable_json(Path::new(LIBC));
    assert_eq!(out.code, Some(1), "{out:#?}");
    counts_agree(&v);
    let s = &v["summary"];
    let (n, planned) = (s["unpadded"].as_u64().unwrap(), s["entry_jump_plannable"].as_u64().unwrap());
    assert!(n >= 2000 && planned * 100 >= n * 90, "{s}");
    // A spin lock whose loop goes back to its first instruction; atoi is plain code.
    let spin = function(&v, "pthread_spin_lock");
    assert_eq!(spin["entry_jump"]["reason"], "branch-into-overwritten", "{spin}");
    assert_eq!(function(&v, "atoi")["entry_jump"]["plannable"], true);
    // libc defines `__fentry__`; its functions that begin with another call (envz_get
    // calls envz_entry, `.cold` parts call abort) are not fentry functions.
    let envz = function(&v, "envz_get");
    assert!(envz["prologue"].is_null() && envz["entry_jump"]["plannable"] == true, "{envz}");
    assert_eq!(s["patchable"], 0, "{s}");
    // strlen is an IFUNC: its address is the resolver, not worth an entry jump.
    let strlen = function(&v, "strlen");
    assert_eq!((&strlen["ifunc"], &strlen["entry_jump"]["reason"]), (&Value::Bool(true), &Value::from("ifunc")));
}
