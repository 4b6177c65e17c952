//! `pulp-bench fleet [PROCESSES] [RUNS]`: one fix for many small live-patchable processes
//! (`fleet_member`: two threads each, both calling `f` of `libfleet.so` once a second),
//! in one run and side by side:
//!
//! - `pulp-trigger --all` (apply, the same again when nothing is left to do, revert), for
//!   a transition patch and the same patch packed `%immediate`;
//! - a loop of single-process `pulp-trigger -p PID` calls over the same processes, one at
//!   a time and CPU-count at a time;
//! - per-process figures from `--json`: the borrowed thread's stop, the longest stop of a
//!   sampled thread, the tool's time per process and where it went (`phases_us`);
//! - where the time of one apply goes, from a loop of single-process `--json` applies on a
//!   quiet fleet, beside the cost of starting the tool (`pulp-trigger --version`).
//!
//! The members load a copy of `libfleet.so` whose build-id this driver rewrites with a
//! value of its own, so that `--all` finds its members and nothing else on the machine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pulp_examples::{dsc_text, Run, Tools};
use serde_json::Value;

use crate::{stats, write_pack, F_FIX};

const FLEET_LIB: &str = env!("PULP_BENCH_FLEET_LIB");
const MEMBER: &str = env!("PULP_BENCH_FLEET_MEMBER");

/// The member processes; killed on drop.
struct Members(Vec<Child>);

impl Drop for Members {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

impl Members {
    fn start(tools: &Tools, lib_dir: &Path, n: usize) -> Result<Members> {
        let mut m = Members(Vec::with_capacity(n));
        for _ in 0..n {
            let child = Command::new(MEMBER)
                .env("LD_PRELOAD", &tools.runtime)
                .env("LD_LIBRARY_PATH", lib_dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("cannot start {MEMBER}"))?;
            m.0.push(child);
        }
        // Ready once both threads run.
        let deadline = Instant::now() + Duration::from_secs(60);
        for c in &mut m.0 {
            loop {
                let threads = std::fs::read_dir(format!("/proc/{}/task", c.id())).map(|d| d.count()).unwrap_or(0);
                if threads == 2 {
                    break;
                }
                if let Ok(Some(status)) = c.try_wait() {
                    bail!("a member exited at start ({status})");
                }
                if Instant::now() > deadline {
                    bail!("member {} did not start its second thread", c.id());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        Ok(m)
    }

    fn pids(&self) -> Vec<u32> {
        self.0.iter().map(Child::id).collect()
    }
}

/// A copy of `libfleet.so` in `dir` whose GNU build-id is `id` (same length as the
/// original's).
fn copy_with_build_id(dir: &Path, id: &[u8]) -> Result<PathBuf> {
    let mut bytes = std::fs::read(FLEET_LIB)?;
    // The note: namesz 4, descsz, type 3 (NT_GNU_BUILD_ID), "GNU\0", then the id.
    let at = bytes
        .windows(16)
        .position(|w| w[..4] == [4, 0, 0, 0] && w[8..12] == [3, 0, 0, 0] && &w[12..16] == b"GNU\0")
        .context("libfleet.so has no build-id note")?;
    let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
    if len != id.len() {
        bail!("libfleet.so's build-id has {len} bytes, not {}", id.len());
    }
    bytes[at + 16..at + 16 + len].copy_from_slice(id);
    let path = dir.join("libfleet.so");
    std::fs::write(&path, bytes)?;
    Ok(path)
}

/// A build-id no other run uses: the time and this process, hashed.
fn fresh_build_id() -> Vec<u8> {
    use std::hash::{BuildHasher, Hasher};
    let mut out = Vec::new();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    for i in 0..3u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.write_u64(i);
        out.extend_from_slice(&h.finish().to_le_bytes());
    }
    out.truncate(20);
    out
}

/// One `pulp-trigger ... --json` run: wall time, the process objects, the summary.
struct JsonRun {
    wall: Duration,
    processes: Vec<Value>,
    summary: Value,
}

fn json_run(tools: &Tools, args: &[&str]) -> Result<JsonRun> {
    let run = Run::new(Command::new(&tools.trigger).args(args))?;
    let mut objects = Vec::new();
    for line in run.stdout.lines() {
        objects.push(serde_json::from_str::<Value>(line).with_context(|| format!("not JSON: {line}"))?);
    }
    let summary = objects.pop().context("no output")?;
    if run.code != Some(0) {
        bail!("pulp-trigger {} exited {:?}: {}", args.join(" "), run.code, summary["message"]);
    }
    Ok(JsonRun { wall: run.elapsed, processes: objects, summary })
}

/// `pulp-trigger --all` with `extra` arguments; checks that exactly `n` processes ended
/// with `result`.
fn all(tools: &Tools, meta: &Path, extra: &[&str], n: usize, result: &str) -> Result<JsonRun> {
    let mut args = vec!["--all", "--json"];
    args.extend_from_slice(extra);
    let m = meta.to_str().unwrap();
    args.push(m);
    let r = json_run(tools, &args)?;
    let count = r.summary["counts"][result].as_u64().unwrap_or(0) as usize;
    if count != n || r.summary["processes"] != n {
        bail!("pulp-trigger {}: expected {n} {result}, got {}", args.join(" "), r.summary["message"]);
    }
    Ok(r)
}

/// Single-process `pulp-trigger` calls over `pids`, `parallel` at a time; total wall time
/// and each call's.
fn single_loop(
    tools: &Tools,
    pids: &[u32],
    meta: &Path,
    revert: bool,
    parallel: usize,
) -> Result<(Duration, Vec<f64>)> {
    let start = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let times = std::sync::Mutex::new(Vec::with_capacity(pids.len()));
    let failure = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&pid) = pids.get(i) else { break };
                match tools.trigger(pid, meta, revert) {
                    Ok(run) if run.success() => times.lock().unwrap().push(run.elapsed.as_secs_f64() * 1e3),
                    Ok(run) => *failure.lock().unwrap() = Some(format!("{}: {}", run.command, run.stderr.trim())),
                    Err(e) => *failure.lock().unwrap() = Some(e.to_string()),
                }
            });
        }
    });
    if let Some(f) = failure.into_inner().unwrap() {
        bail!("single-process loop: {f}");
    }
    Ok((start.elapsed(), times.into_inner().unwrap()))
}

/// Per-process values of a key (µs → ms) across a run's process objects.
fn per_process(r: &JsonRun, key: &str) -> Vec<f64> {
    r.processes.iter().filter_map(|p| p[key].as_f64()).map(|us| us / 1e3).collect()
}

/// Phase name → per-process ms.
fn phases(processes: &[Value]) -> BTreeMap<String, Vec<f64>> {
    let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for p in processes {
        if let Some(map) = p["phases_us"].as_object() {
            for (k, v) in map {
                out.entry(k.clone()).or_default().push(v.as_f64().unwrap_or(0.0) / 1e3);
            }
        }
    }
    out
}

/// What one run of every measurement gave.
#[derive(Default)]
struct Figures {
    rows: BTreeMap<&'static str, Vec<f64>>,
}

impl Figures {
    fn push(&mut self, key: &'static str, v: f64) {
        self.rows.entry(key).or_default().push(v);
    }

    fn extend(&mut self, key: &'static str, v: Vec<f64>) {
        self.rows.entry(key).or_default().extend(v);
    }
}

const ORDER: &[(&str, &str)] = &[
    ("all_apply", "`--all` apply, transition: wall"),
    ("all_again", "`--all` apply again (all already applied, no thread stopped): wall"),
    ("all_revert", "`--all --revert`, transition: wall"),
    ("all2_apply", "`--all --jobs 2×CPUs` apply, transition: wall"),
    ("all2_revert", "`--all --jobs 2×CPUs --revert`, transition: wall"),
    ("imm_apply", "`--all` apply, `%immediate`: wall"),
    ("imm_revert", "`--all --revert`, `%immediate`: wall"),
    ("loop_apply", "loop of `pulp-trigger -p PID`, one at a time, apply: wall"),
    ("loop_revert", "loop of `pulp-trigger -p PID`, one at a time, revert: wall"),
    ("ploop_apply", "loop of `pulp-trigger -p PID`, CPU-count at a time, apply: wall"),
    ("ploop_revert", "loop of `pulp-trigger -p PID`, CPU-count at a time, revert: wall"),
];

pub fn run(tools: &Tools, n: usize, runs: usize) -> Result<()> {
    let work = tempfile::Builder::new().prefix("pulp-bench-fleet").tempdir()?;
    let dir = work.path();
    let lib = copy_with_build_id(dir, &fresh_build_id())?;
    let funcs = [("f".to_string(), "f_new".to_string())];
    let transition = write_pack(tools, dir, "fleet", dsc_text(Path::new(F_FIX), &lib, &funcs, "fleet bench"))?;
    let immediate = write_pack(
        tools,
        dir,
        "fleet_immediate",
        dsc_text(Path::new(F_FIX), &lib, &funcs, "fleet bench") + "%immediate\n",
    )?;
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());

    eprintln!("starting {n} processes...");
    let t = Instant::now();
    let members = Members::start(tools, dir, n)?;
    eprintln!("started in {:.1} s", t.elapsed().as_secs_f64());
    let pids = members.pids();
    all(tools, &transition, &["--dry-run"], n, "would_apply")?;

    let mut f = Figures::default();
    let mut stops = Figures::default();
    let mut contended_phases: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in 0..runs {
        eprintln!("run {}/{runs}: --all (transition, immediate)...", r + 1);
        let a = all(tools, &transition, &[], n, "applied")?;
        f.push("all_apply", a.wall.as_secs_f64());
        stops.extend("hijack", per_process(&a, "stopped_us"));
        stops.extend("sample", per_process(&a, "longest_sample_us"));
        stops.extend("total", per_process(&a, "total_us"));
        for (k, v) in phases(&a.processes) {
            contended_phases.entry(k).or_default().extend(v);
        }
        let again = all(tools, &transition, &[], n, "already_applied")?;
        f.push("all_again", again.wall.as_secs_f64());
        let b = all(tools, &transition, &["--revert"], n, "reverted")?;
        f.push("all_revert", b.wall.as_secs_f64());
        let jobs = (2 * cpus).to_string();
        let j = all(tools, &transition, &["--jobs", &jobs], n, "applied")?;
        f.push("all2_apply", j.wall.as_secs_f64());
        let j = all(tools, &transition, &["--jobs", &jobs, "--revert"], n, "reverted")?;
        f.push("all2_revert", j.wall.as_secs_f64());
        let c = all(tools, &immediate, &[], n, "applied")?;
        f.push("imm_apply", c.wall.as_secs_f64());
        stops.extend("imm_hijack", per_process(&c, "stopped_us"));
        stops.extend("imm_total", per_process(&c, "total_us"));
        let d = all(tools, &immediate, &["--revert"], n, "reverted")?;
        f.push("imm_revert", d.wall.as_secs_f64());

        eprintln!("run {}/{runs}: loops of single-process calls...", r + 1);
        let (w, times) = single_loop(tools, &pids, &transition, false, 1)?;
        f.push("loop_apply", w.as_secs_f64());
        stops.extend("single_wall", times);
        f.push("loop_revert", single_loop(tools, &pids, &transition, true, 1)?.0.as_secs_f64());
        f.push("ploop_apply", single_loop(tools, &pids, &transition, false, cpus)?.0.as_secs_f64());
        f.push("ploop_revert", single_loop(tools, &pids, &transition, true, cpus)?.0.as_secs_f64());
    }

    // One apply at a time, on the quiet fleet: where its time goes.
    eprintln!("breakdown of single applies...");
    let sample: Vec<u32> = pids.iter().copied().step_by((n / 50).max(1)).take(50).collect();
    let mut quiet = Vec::new();
    let mut quiet_walls = Vec::new();
    for &pid in &sample {
        let p = pid.to_string();
        let m = transition.to_str().unwrap();
        let a = json_run(tools, &["--json", "-p", &p, m])?;
        quiet_walls.push(a.wall.as_secs_f64() * 1e3);
        quiet.extend(a.processes);
        json_run(tools, &["--json", "--revert", "-p", &p, m])?;
    }
    let mut starts = Vec::new();
    for _ in 0..30 {
        let r = Run::new(Command::new(&tools.trigger).arg("--version"))?;
        r.check("pulp-trigger --version")?;
        starts.push(r.elapsed.as_secs_f64() * 1e3);
    }

    println!("{n} processes (2 threads each), {cpus} CPUs, {runs} runs of each, one rotation per run.\n");
    println!("| figure | median | min | max | per process (median) |");
    println!("|---|---|---|---|---|");
    for (key, what) in ORDER {
        let s = stats(f.rows[key].clone());
        println!(
            "| {what} | {:.3} s | {:.3} s | {:.3} s | {:.3} ms |",
            s.median,
            s.min,
            s.max,
            s.median * 1e3 / n as f64
        );
    }
    println!("\n| per process, within `--all` | median | min | max |");
    println!("|---|---|---|---|");
    for (key, what) in [
        ("hijack", "borrowed thread's stop, transition apply"),
        ("sample", "longest stop of a sampled thread, transition apply"),
        ("total", "tool's time for the process, transition apply"),
        ("imm_hijack", "borrowed thread's stop, `%immediate` apply"),
        ("imm_total", "tool's time for the process, `%immediate` apply"),
        ("single_wall", "one `pulp-trigger -p PID` apply, from outside (the loop's calls)"),
    ] {
        let s = stats(stops.rows[key].clone());
        println!("| {what} | {:.3} ms | {:.3} ms | {:.3} ms |", s.median, s.min, s.max);
    }

    let s = stats(starts);
    println!("\nWhere the time of one apply goes (transition patch, 1 function, 2 threads):");
    println!("{} single `pulp-trigger --json -p PID` applies, one at a time, beside the same", sample.len());
    println!("phases inside the `--all` applies above (all processes, all runs).\n");
    println!("| phase | one at a time: median | within `--all`: median |");
    println!("|---|---|---|");
    println!("| starting the tool (`pulp-trigger --version`, wall) | {:.3} ms | |", s.median);
    let quiet_phases = phases(&quiet);
    let mut sum = 0.0;
    for (name, what) in PHASE_NAMES {
        let q = quiet_phases.get(*name).map(|v| stats(v.clone()).median);
        let c = contended_phases.get(*name).map(|v| stats(v.clone()).median);
        sum += q.unwrap_or(0.0);
        let show = |v: Option<f64>| v.map(|v| format!("{v:.3} ms")).unwrap_or_else(|| "—".into());
        println!("| {what} | {} | {} |", show(q), show(c));
    }
    let total = stats(quiet.iter().filter_map(|p| p["total_us"].as_f64()).map(|us| us / 1e3).collect());
    println!("| sum of the phases (medians) | {sum:.3} ms | |");
    println!("| tool's own `total` | {:.3} ms | |", total.median);
    println!("| wall from outside | {:.3} ms | |", stats(quiet_walls).median);
    Ok(())
}

/// The marks of `pulp_tools::apply::phases`, in the order of an apply, with what each covers.
const PHASE_NAMES: &[(&str, &str)] = &[
    (
        "inspect",
        "open `/proc/PID/mem`, lock; maps and build-ids; find the runtime (its dynamic symbols), read its status",
    ),
    ("check", "descriptors in use, each function's prologue"),
    ("object", "patch object: trusted path, read, SHA-256 (shared across `--all`)"),
    ("scope", "transition scope: the target's functions and gates (ELF), the request"),
    ("attach", "first hijack: pick a thread at a safe point, seize, interrupt, save registers"),
    ("load", "entry call: the runtime loads the patch (memfd, `dlopen`, registry)"),
    ("write", "write pads and entries through `/proc/PID/mem`"),
    ("sync", "membarrier SYNC_CORE call in the held thread (first pad write only)"),
    ("release", "restore the borrowed thread and detach"),
    ("unwind_tables", "load the unwind tables of every mapped object (for sampling)"),
    ("transition", "arm, move the threads (gates, sampling), without the tables"),
    ("finish", "second hijack: attach, finish call, release, final writes"),
];
