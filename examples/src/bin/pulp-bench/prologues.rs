//! `pulp-bench prologues [PROCESSES]`: the per-call cost of each prologue kind, unpatched
//! and patched, measured side by side in one process (`prologues.c`), with the runtime
//! preloaded. Prints a Markdown table.
//!
//! In each process (default 3), all of the same trivial `int f(int)`:
//! (a) built plain; (b) NOP pad, not patched; (c) NOP pad, patched (near layout);
//! (d) `endbr64` + NOP pad, patched (endbr near layout); (e) NOP pad in the PIE
//! executable itself, patched (far layout, through a far stub); (f) gcc `-pg -mfentry`,
//! not patched, no fentry function patched anywhere in the process; (f') the same built
//! by clang (`call __fentry__@PLT`); (i) gcc `-pg -mfentry` bound to the C library's
//! `__fentry__` (`RTLD_DEEPBIND`), for reference. Then a second fentry object's `f` is
//! patched and everything is timed again: (g)/(g') the unpatched `-pg` functions while the
//! runtime's `__fentry__` table is active; (h) the patched fentry function.
//!
//! The first patch (c, d, e) is `%immediate` (the steady state measured afterwards is the
//! same as after a transition); the second (h) goes through a transition. Each patched
//! function goes to `pf_new` (`x + 2`), and the program reports what each variant returns,
//! so the driver checks which were redirected.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};
use pulp_examples::Tools;

use crate::{field, stats, write_pack, Target, F_PAD, F_PATCHED, F_PLAIN};

const F_ENDBR: &str = env!("PULP_BENCH_F_ENDBR");
const F_PG: &str = env!("PULP_BENCH_F_PG");
const F_PG_CLANG: &str = env!("PULP_BENCH_F_PG_CLANG");
const PG_CLANG_CC: &str = env!("PULP_BENCH_PG_CLANG_CC");
const F_PG_OTHER: &str = env!("PULP_BENCH_F_PG_OTHER");
const F_PG_GLIBC: &str = env!("PULP_BENCH_F_PG_GLIBC");
const FIX1: &str = env!("PULP_BENCH_PROLOGUES_FIX1");
const FIX2: &str = env!("PULP_BENCH_PROLOGUES_FIX2");
const PROLOGUES: &str = env!("PULP_BENCH_PROLOGUES");

/// What each variant returns for 1 (2: `f`, 3: `pf_new`), in `prologues.c`'s order, after
/// the first patch and after the second.
const RET_FIRST: &str = "223332222";
const RET_SECOND: &str = "223332232";

/// A row: label, key in `prologues.c`'s output, phase (0: before the fentry patch, 1: after).
const ROWS: [(&str, &str, usize); 12] = [
    ("(a) plain, no pad", "plain", 0),
    ("(b) NOP pad `66 90`, not patched", "pad", 0),
    ("(c) NOP pad, patched: near (entry → pad `jmp *desc`)", "near", 0),
    ("(d) `endbr64` + NOP pad, patched: endbr near (entry+4 → pad → pad `jmp *desc`)", "endbr", 0),
    ("(e) NOP pad in the PIE executable, patched: far (entry → pad `jmp *slot` → far stub `jmp *desc`)", "far", 0),
    ("(f) gcc `-pg -mfentry` (`call *GOT`), not patched, no fentry function patched", "pg", 0),
    ("(f') `-pg -mfentry` `call __fentry__@PLT`, not patched, no fentry function patched", "pgclang", 0),
    ("(i) gcc `-pg -mfentry` with the C library's `__fentry__` (reference)", "pgglibc", 0),
    ("(a) plain, no pad (second pass)", "plain", 1),
    ("(g) gcc `-pg -mfentry`, not patched, another fentry function patched", "pg", 1),
    ("(g') `call __fentry__@PLT`, not patched, another fentry function patched", "pgclang", 1),
    ("(h) gcc `-pg -mfentry`, patched", "pgother", 1),
];

/// The two lines of one process.
fn one_process(tools: &Tools, first: &Path, second: &Path) -> Result<[String; 2]> {
    let args = [F_PLAIN, F_PAD, F_PATCHED, F_ENDBR, F_PG, F_PG_CLANG, F_PG_OTHER, F_PG_GLIBC];
    let mut t = Target::start(tools, PROLOGUES, &args)?;
    let long = Duration::from_secs(600);
    tools.trigger(t.pid(), first, false)?.check("pulp-trigger (near, endbr, far)")?;
    let a = t.ask("go", long)?;
    tools.trigger(t.pid(), second, false)?.check("pulp-trigger (fentry)")?;
    let b = t.ask("go", long)?;
    for (line, want) in [(&a, RET_FIRST), (&b, RET_SECOND)] {
        let got = line.split_whitespace().find_map(|w| w.strip_prefix("ret=")).unwrap_or("");
        if got != want {
            bail!("prologues: the variants return {got:?}, expected {want:?}: {line}");
        }
    }
    Ok([a, b])
}

pub fn run(tools: &Tools, processes: usize) -> Result<()> {
    let work = tempfile::Builder::new().prefix("pulp-bench").tempdir()?;
    let dir = work.path();
    let exe = std::fs::canonicalize(PROLOGUES)?;
    let first = format!(
        "{FIX1}\n%immediate\n@{F_PATCHED}\nf:pf_new\n@{F_ENDBR}\nf:pf_new\n@{}\nexe_f:pf_new\n!bench prologues\n",
        exe.display()
    );
    let first = write_pack(tools, dir, "prologues1", first)?;
    let second = write_pack(tools, dir, "prologues2", format!("{FIX2}\n@{F_PG_OTHER}\nf:pf_new\n!bench fentry\n"))?;

    let mut lines = Vec::new();
    for p in 0..processes {
        eprintln!("prologues: process {} of {processes} (2 passes of 30 rounds × 9 variants × 1e7 calls)...", p + 1);
        lines.push(one_process(tools, &first, &second)?);
    }

    println!("| variant (`f(x) = x + 1`; `{PG_CLANG_CC}` built f') | min ns/call: median (min–max) of {processes} processes | extra over (a) of the same pass |");
    println!("|---|---|---|");
    for (label, key, phase) in ROWS {
        let mut ns = Vec::new();
        let mut extra = Vec::new();
        for l in &lines {
            let v = field(&l[phase], key)?;
            ns.push(v);
            extra.push(v - field(&l[phase], "plain")?);
        }
        let (n, e) = (stats(ns), stats(extra));
        println!(
            "| {label} | {:.3} ns ({:.3}–{:.3}) | {:+.3} ns ({:+.3}–{:+.3}) |",
            n.median, n.min, n.max, e.median, e.min, e.max
        );
    }
    Ok(())
}
