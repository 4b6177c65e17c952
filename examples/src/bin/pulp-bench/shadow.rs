//! `pulp-bench shadow [RUNS]`: the cost of `pulp_shadow_get` beside a plain hash-map
//! lookup. Runs `shadow` (`examples/c/bench/shadow.c`) RUNS times (default 5), each a
//! fresh process with the runtime preloaded, and prints the median over the processes of
//! each figure (each figure is itself the median of the process's rounds), with min and max.

use std::process::Command;

use anyhow::{bail, Context, Result};
use pulp_examples::Tools;

use crate::{field, stats};

const SHADOW: &str = env!("PULP_BENCH_SHADOW");
/// Rounds inside each process.
const ROUNDS: &str = "11";

/// The lines `shadow` prints, in order: first word and the figures after it.
const SIZES: [&str; 3] = ["n=1", "n=1000", "n=1000000"];
const SINGLE: [&str; 4] = ["pulp_hit", "map_hit", "pulp_miss", "map_miss"];
const THREADS: [&str; 3] = ["threads=1", "threads=2", "threads=4"];
const CONCURRENT: [&str; 4] = ["pulp", "map", "rwlock", "pulp_writer"];

/// One process's output: for each line, its figures.
fn one_run(tools: &Tools) -> Result<Vec<Vec<f64>>> {
    let out = Command::new(SHADOW)
        .arg(ROUNDS)
        .env("LD_PRELOAD", &tools.runtime)
        .output()
        .with_context(|| format!("cannot run {SHADOW}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("{SHADOW} failed ({}): {}", out.status, text.trim());
    }
    let line_of = |head: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(head))
            .with_context(|| format!("no line {head} in {text:?}"))
    };
    let mut figures = Vec::new();
    for head in SIZES {
        let line = line_of(head)?;
        figures.push(SINGLE.iter().map(|k| field(line, k)).collect::<Result<Vec<_>>>()?);
    }
    for head in THREADS {
        let line = line_of(head)?;
        figures.push(CONCURRENT.iter().map(|k| field(line, k)).collect::<Result<Vec<_>>>()?);
    }
    Ok(figures)
}

pub fn run(tools: &Tools, runs: usize) -> Result<()> {
    let mut all: Vec<Vec<Vec<f64>>> = Vec::new();
    for i in 0..runs {
        eprintln!("shadow lookups: process {} of {runs}...", i + 1);
        all.push(one_run(tools)?);
    }
    // cell(line, figure) over the processes.
    let cell = |line: usize, fig: usize| stats(all.iter().map(|r| r[line][fig]).collect());
    let show = |line: usize, fig: usize| {
        let s = cell(line, fig);
        format!("{:.2} ({:.2}–{:.2})", s.median, s.min, s.max)
    };
    let ratio = |line: usize, a: usize, b: usize| cell(line, a).median / cell(line, b).median;

    println!("| shadows | `pulp_shadow_get`, hit | plain map, hit | ratio | `pulp_shadow_get`, miss | plain map, miss | ratio |");
    println!("|---|---|---|---|---|---|---|");
    for (line, label) in ["1", "1e3", "1e6"].iter().enumerate() {
        println!(
            "| {label} | {} | {} | {:.2}× | {} | {} | {:.2}× |",
            show(line, 0),
            show(line, 1),
            ratio(line, 0, 1),
            show(line, 2),
            show(line, 3),
            ratio(line, 2, 3)
        );
    }
    println!("\nns per lookup, median over {runs} processes (min–max), each the median of {ROUNDS} rounds.\n");

    println!("| reader threads | `pulp_shadow_get` | plain map | map behind a `pthread_rwlock` | `pulp_shadow_get`, one writer beside |");
    println!("|---|---|---|---|---|");
    for (k, threads) in ["1", "2", "4"].iter().enumerate() {
        let line = SIZES.len() + k;
        println!("| {threads} | {} | {} | {} | {} |", show(line, 0), show(line, 1), show(line, 2), show(line, 3));
    }
    println!(
        "\n1e3 shadows; wall ns per lookup over all threads' lookups (2 threads on 2 processors ideally halve it), \
         median over {runs} processes (min–max)."
    );
    Ok(())
}
