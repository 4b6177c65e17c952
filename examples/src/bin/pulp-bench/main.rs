//! Benchmark driver: per-call cost of the redirect, `pulp-trigger` wall time, and the
//! longest stall a patch causes to a running thread. Prints a Markdown table.
//!
//! Run: `cargo build --release --workspace && target/release/pulp-bench [RUNS]`, and
//! `target/release/pulp-bench universes [RUNS]` for the cost of transitions (per-thread
//! universes) beside all-at-once patching (`universes.rs`), and
//! `target/release/pulp-bench prologues [PROCESSES]` for the per-call cost of each prologue
//! kind (`prologues.rs`), `target/release/pulp-bench shadow [PROCESSES]` for the cost of
//! `pulp_shadow_get` beside a plain hash map (`shadow.rs`), and
//! `target/release/pulp-bench fleet [PROCESSES] [RUNS]` for one fix applied to many
//! processes (`fleet.rs`), and `target/release/pulp-bench startup [ROUNDS] [--b RUNTIME]`
//! for what the preloaded runtime costs a process that is never patched (`startup.rs`).
//!
//! The targets are in `examples/c/bench/` (built by `examples/build.rs`):
//! - `percall PLAIN.so PAD.so PATCHED.so`: the same trivial `int f(int)` without pad, with
//!   pad, and with pad live-patched to an identical `f_new`, timed in one process in rotating
//!   rounds (minimum ns per call of each);
//! - `stall N`: one thread spins on the clock recording its longest gap, N-1 threads sleep
//!   1 ms and call `f`; `f` lives in `libmany.so`, which also exports `f1`..`f99` for the
//!   100-function patch;
//! - `redirect [ROUNDS]`: the same trivial function plain and behind four pad redirects
//!   (ours, libpulp's kind, DESIGN.md's, a direct `jmp rel32`), all in one process and one
//!   run (`redirect.S`), minimum ns per call of each;
//! - `prologues PLAIN.so PAD.so NEAR.so ENDBR.so PG.so PGCLANG.so PGOTHER.so PGGLIBC.so`:
//!   `f` in every prologue kind, and `exe_f` in the PIE executable (far layout), timed side
//!   by side before and after patching (`prologues`);
//! - `unicall [ROUNDS] [CALLS]` (with `libuni.so`): per-call cost while a transition is held
//!   open, and after it (`universes`);
//! - `shadow [ROUNDS]`: shadow lookups with 1, 1e3 and 1e6 shadows and with concurrent
//!   readers, beside a plain open-addressed table in the same process (`shadow`).

mod fleet;
mod prologues;
mod shadow;
mod startup;
mod universes;
mod unpadded;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use pulp_examples::{dsc_text, Tools};

const F_PLAIN: &str = env!("PULP_BENCH_F_PLAIN");
const F_PAD: &str = env!("PULP_BENCH_F_PAD");
const F_PATCHED: &str = env!("PULP_BENCH_F_PATCHED");
pub(crate) const F_FIX: &str = env!("PULP_BENCH_F_FIX");
const PERCALL: &str = env!("PULP_BENCH_PERCALL");
const MANY: &str = env!("PULP_BENCH_MANY");
const MANY_FIX1: &str = env!("PULP_BENCH_MANY_FIX1");
const MANY_FIX100: &str = env!("PULP_BENCH_MANY_FIX100");
const STALL: &str = env!("PULP_BENCH_STALL");
const REDIRECT: &str = env!("PULP_BENCH_REDIRECT");

/// The variants of `redirect`, in its output order: key, what it is.
const REDIRECTS: [(&str, &str); 5] = [
    ("plain", "(a) plain function, no redirect"),
    ("ours", "(b) ours: `eb f8` → `jmp *slot(%rip)`"),
    ("libpulp", "(c) libpulp-like: `eb f0` → `movabs $new, %r11; jmp *%r11`"),
    ("design", "(d) DESIGN.md: `eb f0` → `movabs $slot, %r11; jmp *(%r11)`"),
    ("direct", "(e) `eb f9` → `jmp rel32` (lower bound)"),
];

/// A target process under the preloaded runtime, driven line by line; killed on drop.
struct Target {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Target {
    fn start(tools: &Tools, exe: &str, args: &[&str]) -> Result<Target> {
        let mut child = Command::new(exe)
            .args(args)
            .env("LD_PRELOAD", &tools.runtime)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {exe}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut t = Target { child, stdin, lines };
        let first = t.recv(Duration::from_secs(10))?;
        if first != "ready" {
            bail!("{exe} said {first:?} instead of ready");
        }
        Ok(t)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn recv(&mut self, timeout: Duration) -> Result<String> {
        self.lines.recv_timeout(timeout).context("the target process did not answer")
    }

    fn ask(&mut self, cmd: &str, timeout: Duration) -> Result<String> {
        writeln!(self.stdin, "{cmd}")?;
        self.stdin.flush()?;
        self.recv(timeout)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Values of `key=value` words in a line.
fn field(line: &str, key: &str) -> Result<f64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .with_context(|| format!("no {key}= in {line:?}"))?
        .parse()
        .with_context(|| format!("bad {key}= in {line:?}"))
}

pub(crate) fn write_pack(tools: &Tools, dir: &Path, name: &str, dsc: String) -> Result<PathBuf> {
    let path = dir.join(format!("{name}.dsc"));
    let meta = dir.join(format!("{name}.meta"));
    std::fs::write(&path, dsc)?;
    tools.pack(&path, &meta)?;
    Ok(meta)
}

pub(crate) struct Stats {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

pub(crate) fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    Stats { median, min: v[0], max: v[n - 1] }
}

/// Per-call ns of f without pad, with pad, with pad patched.
fn percall(tools: &Tools, meta: &Path) -> Result<(f64, f64, f64)> {
    percall_of(tools, [F_PLAIN, F_PAD, F_PATCHED], &[meta], 2.0)
}

/// `percall` over `objects`, after `metas` were applied; the third object's f(1) must be
/// `expected`. Min ns per call of each object.
pub(crate) fn percall_of(tools: &Tools, objects: [&str; 3], metas: &[&Path], expected: f64) -> Result<(f64, f64, f64)> {
    let mut t = Target::start(tools, PERCALL, &objects)?;
    for meta in metas {
        tools.trigger(t.pid(), meta, false)?.check("pulp-trigger (percall)")?;
    }
    let line = t.ask("go", Duration::from_secs(300))?;
    if field(&line, "f")? != expected {
        bail!("the patched f computes something else: {line}");
    }
    Ok((field(&line, "plain")?, field(&line, "pad")?, field(&line, "patched")?))
}

/// Min ns per call of each redirect variant, in [`REDIRECTS`] order.
fn redirects() -> Result<Vec<f64>> {
    let out = Command::new(REDIRECT).output().with_context(|| format!("cannot run {REDIRECT}"))?;
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("{REDIRECT} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    REDIRECTS.iter().map(|(key, _)| field(&line, key)).collect()
}

/// Wall time (ms) of apply and revert, and the spinner's longest gap (µs) during each.
pub(crate) struct Cycle {
    pub(crate) apply_ms: Vec<f64>,
    pub(crate) revert_ms: Vec<f64>,
    pub(crate) apply_gap_us: Vec<f64>,
    pub(crate) revert_gap_us: Vec<f64>,
    /// The longest gap over a quiet 3 ms, no patching: the machine's noise floor.
    pub(crate) idle_gap_us: Vec<f64>,
}

fn cycles(tools: &Tools, threads: usize, meta: &Path, runs: usize) -> Result<Cycle> {
    cycles_of(tools, STALL, threads, meta, runs, "f=2")
}

/// [`cycles`] with the stall target `exe`, whose `call` answers `expected` at the end.
pub(crate) fn cycles_of(
    tools: &Tools,
    exe: &str,
    threads: usize,
    meta: &Path,
    runs: usize,
    expected: &str,
) -> Result<Cycle> {
    let n = threads.to_string();
    let mut t = Target::start(tools, exe, &[&n])?;
    let second = Duration::from_secs(10);
    let mut c =
        Cycle { apply_ms: vec![], revert_ms: vec![], apply_gap_us: vec![], revert_gap_us: vec![], idle_gap_us: vec![] };
    for _ in 0..runs {
        t.ask("reset", second)?;
        thread::sleep(Duration::from_millis(3));
        c.idle_gap_us.push(field(&t.ask("gap", second)?, "gap_ns")? / 1000.0);
        for revert in [false, true] {
            t.ask("reset", second)?;
            let run = tools.trigger(t.pid(), meta, revert)?;
            run.check(if revert { "pulp-trigger --revert" } else { "pulp-trigger" })?;
            let gap = field(&t.ask("gap", second)?, "gap_ns")? / 1000.0;
            let ms = run.elapsed.as_secs_f64() * 1000.0;
            if revert {
                c.revert_ms.push(ms);
                c.revert_gap_us.push(gap);
            } else {
                c.apply_ms.push(ms);
                c.apply_gap_us.push(gap);
            }
        }
    }
    let line = t.ask("call", second)?;
    if line != expected {
        bail!("stall target: f(1) after the runs: {line}");
    }
    Ok(c)
}

fn bench(tools: &Tools, runs: usize) -> Result<()> {
    let work = tempfile::Builder::new().prefix("pulp-bench").tempdir()?;
    let dir = work.path();
    let percall_meta = write_pack(
        tools,
        dir,
        "percall",
        dsc_text(Path::new(F_FIX), Path::new(F_PATCHED), &[("f".into(), "f_new".into())], "bench"),
    )?;
    let one = write_pack(
        tools,
        dir,
        "one",
        dsc_text(Path::new(MANY_FIX1), Path::new(MANY), &[("f".into(), "f_new".into())], "bench"),
    )?;
    let mut funcs = vec![("f".to_string(), "f_new".to_string())];
    funcs.extend((1..100).map(|i| (format!("f{i}"), format!("f{i}_new"))));
    let hundred =
        write_pack(tools, dir, "hundred", dsc_text(Path::new(MANY_FIX100), Path::new(MANY), &funcs, "bench"))?;

    eprintln!("per-call timing (30 rounds of 1e7 calls each)...");
    let (plain, pad, patched) = percall(tools, &percall_meta)?;
    eprintln!("redirect mechanisms (30 rounds of 1e7 calls each)...");
    let redirect = redirects()?;
    eprintln!("apply/revert, 1 function, 2 threads, {runs} runs...");
    let c1 = cycles(tools, 2, &one, runs)?;
    eprintln!("apply/revert, 100 functions, 2 threads, {runs} runs...");
    let c100 = cycles(tools, 2, &hundred, runs)?;
    eprintln!("apply/revert, 1 function, 64 threads, {runs} runs...");
    let c64 = cycles(tools, 64, &one, runs)?;

    println!("| figure | median | min | max |");
    println!("|---|---|---|---|");
    println!("| call, no pad | {plain:.3} ns | | |");
    println!("| call, pad, not patched | {pad:.3} ns ({:.3}× no pad) | | |", pad / plain);
    println!("| call, pad, patched (steady state) | {patched:.3} ns ({:+.3} ns vs pad) | | |", patched - pad);
    let row = |name: &str, v: &[f64], unit: &str| {
        let s = stats(v.to_vec());
        println!("| {name} | {:.2} {unit} | {:.2} {unit} | {:.2} {unit} |", s.median, s.min, s.max);
    };
    for (label, c) in
        [("1 function, 2 threads", &c1), ("100 functions, 2 threads", &c100), ("1 function, 64 threads", &c64)]
    {
        row(&format!("`pulp-trigger` apply, {label}"), &c.apply_ms, "ms");
        row(&format!("`pulp-trigger --revert`, {label}"), &c.revert_ms, "ms");
        row(&format!("longest stall during apply, {label}"), &c.apply_gap_us, "µs");
        row(&format!("longest stall during revert, {label}"), &c.revert_gap_us, "µs");
        row(&format!("longest gap over 3 ms without patching, {label}"), &c.idle_gap_us, "µs");
    }
    println!("\n{runs} runs of each apply/revert; wall time includes starting `pulp-trigger`.");

    println!("\n| redirect (one process, one run) | min ns/call | extra over (a) |");
    println!("|---|---|---|");
    for ((_, what), ns) in REDIRECTS.iter().zip(&redirect) {
        println!("| {what} | {ns:.3} ns | {:+.3} ns |", ns - redirect[0]);
    }
    Ok(())
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mode = match args.first().map(String::as_str) {
        Some(m @ ("universes" | "prologues" | "shadow" | "fleet" | "startup" | "unpadded")) => {
            let m = m.to_string();
            args.remove(0);
            m
        }
        _ => String::new(),
    };
    // `--b PATH` / `--bi PATH` (repeated): other runtime builds for `startup`, without
    // and with the installed patches.
    let mut others = Vec::new();
    while let Some(i) = args.iter().position(|a| a == "--b" || a == "--bi") {
        if let Some(p) = args.get(i + 1) {
            others.push((std::path::PathBuf::from(p), args[i] == "--bi"));
        }
        args.drain(i..(i + 2).min(args.len()));
    }
    let default = match mode.as_str() {
        "prologues" => 3,
        "startup" => 100,
        "fleet" => 1000,
        "shadow" => 5,
        _ => 20,
    };
    let runs = args.first().map(|a| a.parse::<usize>().unwrap_or(default)).unwrap_or(default).max(1);
    let fleet_runs = args.get(1).and_then(|a| a.parse::<usize>().ok()).unwrap_or(3).max(1);
    let result = Tools::locate().and_then(|t| match mode.as_str() {
        "universes" => universes::run(&t, runs),
        "fleet" => fleet::run(&t, runs, fleet_runs),
        "prologues" => prologues::run(&t, runs),
        "shadow" => shadow::run(&t, runs),
        "startup" => startup::run(&t, runs, &others),
        "unpadded" => unpadded::run(&t, runs),
        _ => bench(&t, runs),
    });
    if let Err(e) = result {
        eprintln!("pulp-bench: error: {e:#}");
        std::process::exit(1);
    }
}
