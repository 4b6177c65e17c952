//! `pulp-bench universes [RUNS]`: what applying a patch through a transition (per-thread
//! universes, the default) costs, beside applying it all at once. Prints Markdown tables.
//!
//! 1. Stops: in `stall N` (N = 2, 16, 256; one thread spins on the clock recording its
//!    longest gap, N-1 sleep 1 ms and call `f`, plus the main thread reading commands),
//!    the spinner's longest gap during a transition apply, during an `%immediate` apply,
//!    while this driver stops every thread at once (seize + interrupt all, wait for all
//!    stops, detach all), and over an idle window as long as the transition apply took;
//!    beside `pulp-trigger`'s own figures (hijacked thread's stop, longest sampling stop).
//! 2. Wall time: `pulp-trigger`'s `total` for apply and revert, transition and immediate,
//!    RUNS times each, alternating.
//! 3. Per call: `unicall` (libuni.c) times calls of a patched exported function, a patched
//!    static one, an unpatched exported one and an unpatched static one while a transition
//!    is held open by a thread blocked inside the library, then again once it completed.

use std::ffi::OsStr;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use pulp_examples::{dsc_text, Run, Tools};

use crate::{field, stats, write_pack, Target, F_FIX, F_PAD, MANY, MANY_FIX1, STALL};

const UNI: &str = env!("PULP_BENCH_UNI");
const UNI_FIX: &str = env!("PULP_BENCH_UNI_FIX");
const UNICALL: &str = env!("PULP_BENCH_UNICALL");
const STALL_ONE: &str = env!("PULP_BENCH_STALL_ONE");

/// A `stall` process and the 1-function patch applied to it.
struct Case<'a> {
    label: String,
    exe: &'a str,
    n: usize,
    transition: &'a Path,
    immediate: &'a Path,
}
/// Per-call timing: processes, and rounds and calls per variant in each.
const PERCALL_PROCESSES: usize = 5;
const PERCALL_ROUNDS: &str = "30";
const PERCALL_CALLS: &str = "5000000";
/// How long the held transition waits before `pulp-trigger` gives up on it.
const HOLD_TIMEOUT: &str = "0.2";

const SECOND: Duration = Duration::from_secs(10);

/// The number right after `key` in `line`.
fn number_after(line: &str, key: &str) -> Option<f64> {
    let rest = &line[line.find(key)? + key.len()..];
    let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The duration right after `key` in `line`, as `pulp-trigger` writes one (`850 µs`,
/// `1.20 ms`, `2.00 s`), in milliseconds.
fn ms_after(line: &str, key: &str) -> Option<f64> {
    let n = number_after(line, key)?;
    let rest = &line[line.find(key)? + key.len()..];
    let unit = rest.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.').trim_start();
    Some(if unit.starts_with("µs") {
        n / 1000.0
    } else if unit.starts_with("ms") {
        n
    } else {
        n * 1000.0
    })
}

/// The number right before `key` in `line`.
fn number_before(line: &str, key: &str) -> Option<f64> {
    let head = &line[..line.find(key)?];
    head.rsplit(|c: char| !(c.is_ascii_digit() || c == '.')).next()?.parse().ok()
}

/// The figures of `pulp-trigger`'s summary line.
struct Summary {
    /// How long the hijacked thread was stopped (the first time), µs.
    hijack_us: f64,
    total_ms: f64,
    /// Transitions only: threads, moved by gates, sampled, longest sampling stop (µs),
    /// duration of the transition phase (ms).
    transition: Option<(f64, f64, f64, f64, f64)>,
}

impl Summary {
    fn parse(run: &Run) -> Result<Summary> {
        let line = run.stdout.trim();
        let bad = || anyhow!("unexpected pulp-trigger summary: {line:?}");
        let hijack_us = ms_after(line, " stopped ").ok_or_else(bad)? * 1000.0;
        let total_ms = ms_after(line, "total ").ok_or_else(bad)?;
        let transition = match number_before(line, " threads:").or_else(|| number_before(line, " thread:")) {
            None => None,
            Some(threads) => Some((
                threads,
                number_before(line, " moved by themselves").ok_or_else(bad)?,
                number_before(line, " sampled;").ok_or_else(bad)?,
                ms_after(line, "longest stop ").ok_or_else(bad)? * 1000.0,
                ms_after(line, "; transition ").ok_or_else(bad)?,
            )),
        };
        Ok(Summary { hijack_us, total_ms, transition })
    }
}

/// What [`stop_all`] measured, on the tracer's clock.
struct StopAll {
    /// From the first interrupt to the last detach.
    took: Duration,
    /// The longest single thread's stop: from just before its interrupt to just after its
    /// detach (as `pulp-trigger` measures its own stops).
    longest: Duration,
    threads: usize,
}

/// Stop every thread of `pid` at once and let them all go again, as an all-at-once
/// patch would (writing nothing): `PTRACE_SEIZE` each thread, `PTRACE_INTERRUPT` each,
/// wait until every one has stopped, `PTRACE_DETACH` each, in the same order. Runs in a
/// thread of its own (a tracer is a thread) at `pulp-trigger`'s CFS weight.
fn stop_all(pid: u32) -> Result<StopAll> {
    let tracer = thread::spawn(move || -> Result<StopAll> {
        // SAFETY: gettid has no arguments and cannot fail.
        let me = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
        // Like pulp-trigger: the highest CFS weight while threads wait for us (the nice
        // value is per thread on Linux; unprivileged, this fails and changes nothing).
        // SAFETY: setpriority takes plain integers.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, me, -20) };
        let mut tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        // The spinner first: interrupted first and detached first, it waits through every
        // other interrupt and every other thread's stop.
        let spinner = |tid: &i32| {
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).is_ok_and(|c| c.trim() == "spinner")
        };
        tids.sort_unstable_by_key(|t| (!spinner(t), *t));
        // If anything fails below, this thread ends and the kernel detaches its tracees.
        let mut seized = Vec::with_capacity(tids.len());
        for tid in tids {
            let t = Pid::from_raw(tid);
            match ptrace::seize(t, ptrace::Options::empty()) {
                Ok(()) => seized.push(t),
                Err(Errno::ESRCH) => {}
                Err(e) => bail!("PTRACE_SEIZE of thread {tid}: {e}"),
            }
        }
        let start = Instant::now();
        let mut began = Vec::with_capacity(seized.len());
        for &t in &seized {
            began.push(Instant::now());
            ptrace::interrupt(t).with_context(|| format!("PTRACE_INTERRUPT of thread {t}"))?;
        }
        let mut pending: Vec<Option<Signal>> = vec![None; seized.len()];
        let mut gone = vec![false; seized.len()];
        for (i, &t) in seized.iter().enumerate() {
            loop {
                match waitpid(t, Some(WaitPidFlag::__WALL)) {
                    Ok(WaitStatus::PtraceEvent(..)) => break,
                    // A signal on its way: keep it, deliver it at the detach.
                    Ok(WaitStatus::Stopped(_, sig)) => {
                        pending[i] = Some(sig);
                        ptrace::cont(t, None)?;
                    }
                    Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) | Err(Errno::ECHILD) => {
                        gone[i] = true;
                        break;
                    }
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => bail!("waitpid of thread {t}: {e}"),
                }
            }
        }
        let mut longest = Duration::ZERO;
        for (i, &t) in seized.iter().enumerate() {
            if !gone[i] {
                match ptrace::detach(t, pending[i]) {
                    Ok(()) | Err(Errno::ESRCH) => {}
                    Err(e) => bail!("PTRACE_DETACH of thread {t}: {e}"),
                }
                longest = longest.max(began[i].elapsed());
            }
        }
        Ok(StopAll { took: start.elapsed(), longest, threads: seized.len() })
    });
    tracer.join().map_err(|_| anyhow!("the stop-all thread panicked"))?
}

/// What was measured in one `stall N` process, one value per run.
#[derive(Default)]
struct Stops {
    threads: Vec<f64>,
    by_gates: Vec<f64>,
    sampled: Vec<f64>,
    /// The spinner's longest gap (µs) during: a transition apply, an immediate apply,
    /// all threads stopped at once, an idle window as long as the transition apply.
    gap_transition: Vec<f64>,
    gap_immediate: Vec<f64>,
    gap_stop_all: Vec<f64>,
    gap_idle: Vec<f64>,
    /// pulp-trigger's longest sampling stop (µs), transition apply.
    longest_stop: Vec<f64>,
    /// The longer of that and the hijacked thread's stop (µs), transition apply.
    longest_any: Vec<f64>,
    /// The hijacked thread's stop (µs).
    hijack_transition: Vec<f64>,
    hijack_immediate: Vec<f64>,
    /// First interrupt to last detach of the stop-all (µs).
    stop_all_us: Vec<f64>,
    /// The longest single thread's stop in the stop-all, tracer's clock (µs).
    stop_all_longest_us: Vec<f64>,
    stop_all_threads: Vec<f64>,
    /// pulp-trigger's `total` (ms).
    apply_transition: Vec<f64>,
    apply_immediate: Vec<f64>,
    revert_transition: Vec<f64>,
    revert_immediate: Vec<f64>,
    /// The transition phase of the apply (ms).
    transition_ms: Vec<f64>,
}

fn gap_us(t: &mut Target) -> Result<f64> {
    Ok(field(&t.ask("gap", SECOND)?, "gap_ns")? / 1000.0)
}

/// Apply `meta` (the spinner's gap measured), then revert it.
fn apply_revert(tools: &Tools, t: &mut Target, meta: &Path) -> Result<(Summary, f64, Duration, Summary)> {
    t.ask("reset", SECOND)?;
    let apply = tools.trigger(t.pid(), meta, false)?;
    apply.check("pulp-trigger")?;
    let gap = gap_us(t)?;
    let revert = tools.trigger(t.pid(), meta, true)?;
    revert.check("pulp-trigger --revert")?;
    Ok((Summary::parse(&apply)?, gap, apply.elapsed, Summary::parse(&revert)?))
}

fn stops(tools: &Tools, case: &Case, runs: usize) -> Result<Stops> {
    let (transition, immediate) = (case.transition, case.immediate);
    let mut t = Target::start(tools, case.exe, &[&case.n.to_string()])?;
    let mut s = Stops::default();
    for run in 0..runs {
        // Rotate the order, so that no kind always comes first after the idle gap reads.
        for k in 0..3 {
            match (k + run) % 3 {
                0 => {
                    let (a, gap, wall, r) = apply_revert(tools, &mut t, transition)?;
                    let Some((threads, gates, sampled, longest, ms)) = a.transition else {
                        bail!("the transition apply reported no transition");
                    };
                    s.threads.push(threads);
                    s.by_gates.push(gates);
                    s.sampled.push(sampled);
                    s.longest_stop.push(longest);
                    s.longest_any.push(longest.max(a.hijack_us));
                    s.transition_ms.push(ms);
                    s.gap_transition.push(gap);
                    s.hijack_transition.push(a.hijack_us);
                    s.apply_transition.push(a.total_ms);
                    s.revert_transition.push(r.total_ms);
                    // The noise floor over a window as long as this apply took.
                    t.ask("reset", SECOND)?;
                    thread::sleep(wall);
                    s.gap_idle.push(gap_us(&mut t)?);
                }
                1 => {
                    let (a, gap, _, r) = apply_revert(tools, &mut t, immediate)?;
                    if a.transition.is_some() {
                        bail!("the immediate apply ran a transition");
                    }
                    s.gap_immediate.push(gap);
                    s.hijack_immediate.push(a.hijack_us);
                    s.apply_immediate.push(a.total_ms);
                    s.revert_immediate.push(r.total_ms);
                }
                _ => {
                    t.ask("reset", SECOND)?;
                    let all = stop_all(t.pid())?;
                    s.gap_stop_all.push(gap_us(&mut t)?);
                    s.stop_all_us.push(all.took.as_secs_f64() * 1e6);
                    s.stop_all_longest_us.push(all.longest.as_secs_f64() * 1e6);
                    s.stop_all_threads.push(all.threads as f64);
                }
            }
        }
    }
    let line = t.ask("call", SECOND)?;
    if line != "f=2" {
        bail!("stall target: f(1) after the runs: {line}");
    }
    Ok(s)
}

/// One `unicall` process: min ns per call of f, g, u, s during the held transition and
/// after it completed, and the `--continue` summary.
struct PerCall {
    during: [f64; 4],
    steady: [f64; 4],
}

const UNI_KEYS: [&str; 4] = ["f", "g", "u", "s"];

fn times(line: &str) -> Result<[f64; 4]> {
    let mut out = [0.0; 4];
    for (o, k) in out.iter_mut().zip(UNI_KEYS) {
        *o = field(line, k)?;
    }
    Ok(out)
}

fn percall(tools: &Tools, meta: &Path) -> Result<PerCall> {
    let mut t = Target::start(tools, UNICALL, &[PERCALL_ROUNDS, PERCALL_CALLS])?;
    let pid = t.pid();
    let minute = Duration::from_secs(600);
    if t.ask("which", SECOND)? != "w=1" {
        bail!("unicall runs the fix before the patch");
    }
    // The blocked thread holds the transition: pulp-trigger gives up (exit 2) and leaves
    // it running.
    let held = tools.trigger_args(pid, &[OsStr::new("--timeout"), OsStr::new(HOLD_TIMEOUT), meta.as_os_str()])?;
    if held.code != Some(2) {
        bail!(
            "pulp-trigger --timeout {HOLD_TIMEOUT} should have left the transition running (exit 2), got {:?}: {}{}",
            held.code,
            held.stderr.trim(),
            held.stdout.trim()
        );
    }
    // The timing thread (this process's main thread) was moved by sampling: it runs the fix.
    let which = t.ask("which", SECOND)?;
    if which != "w=2" {
        bail!("unicall's main thread is not in the new universe during the transition: {which}");
    }
    let during = times(&t.ask("time", minute)?)?;
    if t.ask("release", SECOND)? != "released" {
        bail!("unicall did not release its blocked thread");
    }
    let done = tools.trigger_args(pid, &[OsStr::new("--continue")])?;
    done.check("pulp-trigger --continue")?;
    if !done.stdout.contains("completed the transition") {
        bail!("pulp-trigger --continue did not complete the transition: {}", done.stdout.trim());
    }
    if t.ask("which", SECOND)? != "w=2" {
        bail!("unicall does not run the fix after the transition");
    }
    let steady = times(&t.ask("time", minute)?)?;
    Ok(PerCall { during, steady })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// `median (min–max)` with `digits` decimals.
fn cell(v: &[f64], digits: usize, unit: &str) -> String {
    let s = stats(v.to_vec());
    format!("{:.digits$} {unit} ({:.digits$}–{:.digits$})", s.median, s.min, s.max)
}

fn median(v: &[f64]) -> f64 {
    stats(v.to_vec()).median
}

pub fn run(tools: &Tools, runs: usize) -> Result<()> {
    let work = tempfile::Builder::new().prefix("pulp-bench").tempdir()?;
    let dir = work.path();
    let one = [("f".to_string(), "f_new".to_string())];
    let text = dsc_text(Path::new(MANY_FIX1), Path::new(MANY), &one, "bench");
    let transition = write_pack(tools, dir, "one", text.clone())?;
    let immediate = write_pack(tools, dir, "one-immediate", format!("{text}%immediate\n"))?;
    let text = dsc_text(Path::new(F_FIX), Path::new(F_PAD), &one, "bench");
    let transition_f = write_pack(tools, dir, "f", text.clone())?;
    let immediate_f = write_pack(tools, dir, "f-immediate", format!("{text}%immediate\n"))?;
    let mut cases: Vec<Case> = [2, 16, 256]
        .into_iter()
        .map(|n| Case { label: format!("`stall {n}`"), exe: STALL, n, transition: &transition, immediate: &immediate })
        .collect();
    cases.push(Case {
        label: "`stall 2`, 1 export".into(),
        exe: STALL_ONE,
        n: 2,
        transition: &transition_f,
        immediate: &immediate_f,
    });
    let funcs: Vec<(String, String)> =
        ["uni_f", "uni_g", "uni_w"].iter().map(|f| (f.to_string(), format!("{f}_new"))).collect();
    let uni = write_pack(tools, dir, "uni", dsc_text(Path::new(UNI_FIX), Path::new(UNI), &funcs, "bench"))?;

    let load_before = loadavg();
    let mut all = Vec::new();
    for case in &cases {
        eprintln!("{}: transition, immediate, stop-all and idle, {runs} runs...", case.label);
        all.push(stops(tools, case, runs)?);
    }
    eprintln!("per call during a transition, {PERCALL_PROCESSES} processes...");
    let mut calls = Vec::new();
    for _ in 0..PERCALL_PROCESSES {
        calls.push(percall(tools, &uni)?);
    }
    let load_after = loadavg();

    println!("Load average (1, 5, 15 min): {load_before} before, {load_after} after.\n");
    let head: Vec<&str> = cases.iter().map(|c| c.label.as_str()).collect();
    println!("| 1-function patch; median (min–max) of {runs} runs | {} |", head.join(" | "));
    println!("|---|{}", "---|".repeat(cases.len()));
    let row = |name: &str, f: &dyn Fn(&Stops) -> String| {
        let cells: Vec<String> = all.iter().map(f).collect();
        println!("| {name} | {} |", cells.join(" | "));
    };
    row("threads in the process (pulp-trigger / stop-all)", &|s| {
        format!("{:.0} / {:.0}", median(&s.threads), median(&s.stop_all_threads))
    });
    row("**longest single-thread stop**, transition apply: max(hijacked, sampled), pulp-trigger's figures", &|s| {
        cell(&s.longest_any, 0, "µs")
    });
    row("**longest single-thread stop**, all threads stopped at once (tracer's clock)", &|s| {
        cell(&s.stop_all_longest_us, 0, "µs")
    });
    row("— of which: hijacked thread stopped, transition apply", &|s| cell(&s.hijack_transition, 0, "µs"));
    row("— of which: longest stop of a sampled thread, transition apply", &|s| cell(&s.longest_stop, 0, "µs"));
    row("hijacked thread stopped, immediate apply (the only stop)", &|s| cell(&s.hijack_immediate, 0, "µs"));
    row("stop-all: first interrupt to last detach", &|s| cell(&s.stop_all_us, 0, "µs"));
    row("spinner's longest gap, transition apply", &|s| cell(&s.gap_transition, 0, "µs"));
    row("spinner's longest gap, all threads stopped at once", &|s| cell(&s.gap_stop_all, 0, "µs"));
    row("spinner's longest gap, immediate apply", &|s| cell(&s.gap_immediate, 0, "µs"));
    row("spinner's longest gap, idle window as long as the transition apply", &|s| cell(&s.gap_idle, 0, "µs"));
    row("spinner's gap ratio: transition / stop-all (medians)", &|s| {
        format!("{:.2}×", median(&s.gap_transition) / median(&s.gap_stop_all))
    });
    row("threads moved by themselves / sampled (medians)", &|s| {
        format!("{:.0} / {:.0}", median(&s.by_gates), median(&s.sampled))
    });
    row("apply, transition (pulp-trigger `total`)", &|s| cell(&s.apply_transition, 2, "ms"));
    row("apply, immediate (pulp-trigger `total`)", &|s| cell(&s.apply_immediate, 2, "ms"));
    row("apply ratio: transition / immediate (medians)", &|s| {
        format!("{:.2}×", median(&s.apply_transition) / median(&s.apply_immediate))
    });
    row("of which the transition phase", &|s| cell(&s.transition_ms, 2, "ms"));
    row("revert, transition (pulp-trigger `total`)", &|s| cell(&s.revert_transition, 2, "ms"));
    row("revert, immediate (pulp-trigger `total`)", &|s| cell(&s.revert_immediate, 2, "ms"));

    println!(
        "\n| call through a pointer, min ns/call; median (min–max) of {PERCALL_PROCESSES} processes | during the transition | after it (steady state) | extra during |"
    );
    println!("|---|---|---|---|");
    let names = [
        "`uni_f`: exported, patched (gate; thread already moved: fast path)",
        "`uni_g`: static, patched (dispatcher, no gate)",
        "`uni_u`: exported, not patched (a gate during the transition)",
        "`uni_s`: static, not patched (baseline)",
    ];
    for (i, name) in names.iter().enumerate() {
        let during: Vec<f64> = calls.iter().map(|c| c.during[i]).collect();
        let steady: Vec<f64> = calls.iter().map(|c| c.steady[i]).collect();
        let extra: Vec<f64> = calls.iter().map(|c| c.during[i] - c.steady[i]).collect();
        let e = stats(extra);
        println!(
            "| {name} | {} | {} | {:+.3} ns ({:+.3}–{:+.3}) |",
            cell(&during, 3, "ns"),
            cell(&steady, 3, "ns"),
            e.median,
            e.min,
            e.max
        );
    }
    println!(
        "\n`stall N`: N worker threads (1 spinner, N-1 callers) + the main thread; `f` is in `libmany.so` \
         (100 exported functions, all gates during a transition), or, for \"1 export\", in `libf_pad.so` \
         (`f` only). Each run: transition \
         apply+revert, immediate apply+revert and stop-all, in rotating order; the idle window follows the \
         transition apply. Per call: {PERCALL_ROUNDS} rounds of {PERCALL_CALLS} calls per function and phase; \
         the transition is held open by a thread blocked in `uni_block` (`--timeout {HOLD_TIMEOUT}`, exit 2) and \
         completed with `--continue` after its release."
    );
    Ok(())
}
