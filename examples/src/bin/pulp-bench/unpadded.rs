//! `pulp-bench unpadded [RUNS]`: a function without pad redirected by overwriting its
//! first instructions, beside the same function with the NOP pad, in one run: per-call
//! cost (one `percall` process holding both patched and the unpadded one left alone),
//! `pulp-trigger` apply/revert wall time and the longest stall of a spinning thread.

use std::path::Path;

use anyhow::Result;
use pulp_examples::{dsc_text, Tools};

use crate::{cycles_of, percall_of, stats, write_pack, Cycle};

const FU_PLAIN: &str = env!("PULP_BENCH_FU_PLAIN");
const FU_UNPADDED: &str = env!("PULP_BENCH_FU_UNPADDED");
const FU_PAD: &str = env!("PULP_BENCH_FU_PAD");
const FU_FIX: &str = env!("PULP_BENCH_FU_FIX");
const STALL_FU_UNPADDED: &str = env!("PULP_BENCH_STALL_FU_UNPADDED");
const STALL_FU_PAD: &str = env!("PULP_BENCH_STALL_FU_PAD");
/// f(1) of `fu.c`: (1 ^ 0x12345) + 1.
const F1: i64 = (1 ^ 0x12345) + 1;

/// A table row: its name, the measurements it shows, their unit.
type Row = (&'static str, fn(&Cycle) -> &Vec<f64>, &'static str);

pub fn run(tools: &Tools, runs: usize) -> Result<()> {
    let work = tempfile::Builder::new().prefix("pulp-bench").tempdir()?;
    let dir = work.path();
    let f = [("f".to_string(), "f_new".to_string())];
    let pack = |name: &str, target: &str| {
        write_pack(tools, dir, name, dsc_text(Path::new(FU_FIX), Path::new(target), &f, "bench"))
    };
    let (pad, unpadded) = (pack("fu_pad", FU_PAD)?, pack("fu_unpadded", FU_UNPADDED)?);

    eprintln!("per-call timing (30 rounds of 1e7 calls each)...");
    let (plain, pad_ns, unpadded_ns) =
        percall_of(tools, [FU_PLAIN, FU_PAD, FU_UNPADDED], &[&pad, &unpadded], F1 as f64)?;
    eprintln!("apply/revert, 1 function, 2 threads, {runs} runs each, padded then unpadded...");
    let cp = cycles_of(tools, STALL_FU_PAD, 2, &pad, runs, &format!("f={F1}"))?;
    let cu = cycles_of(tools, STALL_FU_UNPADDED, 2, &unpadded, runs, &format!("f={F1}"))?;

    println!("| per call (one process, one run) | min ns/call | vs unpatched |");
    println!("|---|---|---|");
    println!("| no pad, not patched | {plain:.3} ns | 1.000× |");
    println!("| pad, patched | {pad_ns:.3} ns | {:.3}× ({:+.3} ns) |", pad_ns / plain, pad_ns - plain);
    println!(
        "| no pad, patched (entry jump) | {unpadded_ns:.3} ns | {:.3}× ({:+.3} ns) |",
        unpadded_ns / plain,
        unpadded_ns - plain
    );
    println!("\n| 1 function, 2 threads | padded median (min–max) | unpadded median (min–max) |");
    println!("|---|---|---|");
    let cell = |v: &[f64], unit: &str| {
        let s = stats(v.to_vec());
        format!("{:.2} {unit} ({:.2}–{:.2})", s.median, s.min, s.max)
    };
    let rows: [Row; 5] = [
        ("`pulp-trigger` apply", |c| &c.apply_ms, "ms"),
        ("`pulp-trigger --revert`", |c| &c.revert_ms, "ms"),
        ("longest stall during apply", |c| &c.apply_gap_us, "µs"),
        ("longest stall during revert", |c| &c.revert_gap_us, "µs"),
        ("longest gap over 3 ms without patching", |c| &c.idle_gap_us, "µs"),
    ];
    for (name, get, unit) in rows {
        println!("| {name} | {} | {} |", cell(get(&cp), unit), cell(get(&cu), unit));
    }
    println!("\n{runs} runs of each apply/revert; wall time includes starting `pulp-trigger`.");
    Ok(())
}
