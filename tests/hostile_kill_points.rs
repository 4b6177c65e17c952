//! Issue 7 §2: the target is never left worse than it was, wherever `pulp-trigger` dies.
//!
//! For apply, revert and `--continue` of a transition patch, and apply and revert of an
//! `%immediate` one, a clean run is traced first to count its `ptrace` and `pwrite64`
//! calls; then the same run is repeated once per call, killed (SIGKILL, by strace's
//! fault injection) on entering that call. After each kill:
//!
//! - the target is alive, no thread is traced (TracerPid 0) or stopped (`t`/`T`);
//! - every thread's signal mask is what it was before (each thread blocks a signal of
//!   its own, so a swapped mask shows too);
//! - the application answers, with the old or the new versions, never a mix; during a
//!   transition patch its worker threads, which call the patched functions all along,
//!   saw no `g(x) != x` (an `%immediate` patch makes no such promise to a thread
//!   between `h` and `k`);
//! - `--continue`, apply and revert then all succeed, in that order, and leave the
//!   patched and then the unpatched behaviour.
//!
//! Every kill point is checked and every failure listed (a point that leaves the
//! process unusable restarts it for the next point); the test fails if any point failed.
//! The mixed-versions fixture is used with two workers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use libpulp_rs_tests::tool;
use libpulp_rs_tests::{artifacts, mix_stats, run_limited, thread_statuses, App, Limited, Mix, Work, MIX_NEW, MIX_OLD};

const WORKERS: usize = 2;
/// A tool run that takes longer than this hangs.
const TOOL_LIMIT: Duration = Duration::from_secs(30);
/// How long the app may take to answer after a kill.
const ANSWER_LIMIT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Apply,
    Revert,
    Continue,
}

struct Target {
    app: App,
    /// Each thread's `SigBlk` when all was well.
    masks: BTreeMap<u32, String>,
}

impl Target {
    fn start(exe: &Path) -> Target {
        let mut app = App::start(exe);
        assert_eq!(app.ask("probe"), MIX_OLD);
        assert_eq!(app.ask(&format!("workers {WORKERS}")), format!("workers {WORKERS}"));
        let masks = thread_statuses(app.pid()).into_iter().map(|t| (t.tid, t.blocked)).collect();
        Target { app, masks }
    }

    fn pid(&self) -> u32 {
        self.app.pid()
    }
}

/// `pulp-trigger` for `op`, optionally under strace killing it at the `n`-th call of
/// `syscall`, or counting its calls into `log`.
fn trigger(pid: u32, meta: &Path, op: Op, strace: Option<(&str, usize)>, log: Option<&Path>) -> Limited {
    let mut args: Vec<String> = match op {
        Op::Apply => vec![],
        Op::Revert => vec!["--revert".into()],
        Op::Continue => vec!["--continue".into()],
    };
    args.extend(["-p".into(), pid.to_string()]);
    if op != Op::Continue {
        args.push(meta.display().to_string());
    }
    let mut cmd;
    if strace.is_some() || log.is_some() {
        cmd = tool("strace");
        cmd.arg("-f").arg("-o").arg(log.unwrap_or(Path::new("/dev/null")));
        cmd.args(["-e", "trace=ptrace,pwrite64"]);
        if let Some((syscall, n)) = strace {
            cmd.arg("-e").arg(format!("inject={syscall}:signal=SIGKILL:when={n}"));
        }
        cmd.arg(&artifacts().trigger);
    } else {
        cmd = Command::new(&artifacts().trigger);
    }
    run_limited(cmd.args(&args), TOOL_LIMIT)
}

fn ok(l: &Limited, what: &str) -> Result<(), String> {
    if l.timed_out {
        return Err(format!("{what} hung (killed after {:?})", l.took));
    }
    if l.out.code != Some(0) {
        return Err(format!("{what} exited {:?}: {}{}", l.out.code, l.out.stdout.trim(), l.out.stderr.trim()));
    }
    Ok(())
}

/// Brings the target into the state `op` starts from.
fn prepare(t: &mut Target, meta: &Path, op: Op) -> Result<(), String> {
    let pid = t.pid();
    match op {
        Op::Apply => Ok(()),
        Op::Revert => ok(&trigger(pid, meta, Op::Apply, None, None), "apply before the revert"),
        Op::Continue => {
            // A thread inside the library keeps the transition from completing; the
            // trigger gives up at once and leaves it running; then the thread leaves.
            let reply = t.app.ask("hold");
            assert!(reply.starts_with("holding"), "{reply}");
            let l = run_limited(
                Command::new(&artifacts().trigger).args(["--timeout", "0", "-p", &pid.to_string()]).arg(meta),
                TOOL_LIMIT,
            );
            let released = t.app.ask("release");
            if l.out.code != Some(2) {
                return Err(format!("apply --timeout 0 with a thread inside should exit 2: {:?}", l.out));
            }
            if released != "released g=1" {
                return Err(format!("the holder computed a mix: {released}"));
            }
            Ok(())
        }
    }
}

/// The checks after a kill; returns what is wrong.
/// `transition`: the workers must never see a mix (an `%immediate` patch promises no
/// universes: a worker between `h` and `k` as the switch happens mixes them).
fn check_after_kill(t: &mut Target, meta: &Path, transition: bool, bad_before: u64) -> Result<(), String> {
    let pid = t.pid();
    if !t.app.is_alive() {
        return Err(format!("the target died; its stderr: {}", t.app.stderr().trim()));
    }
    // The kernel detaches a dead tracer's tracees as it exits; allow a moment.
    let start = Instant::now();
    let problems = loop {
        let mut problems = Vec::new();
        for th in thread_statuses(pid) {
            if th.tracer != 0 {
                problems.push(format!("thread {} traced by {}", th.tid, th.tracer));
            }
            if matches!(th.state, 't' | 'T') {
                problems.push(format!("thread {} stopped ({})", th.tid, th.state));
            }
            if let Some(before) = t.masks.get(&th.tid) {
                if *before != th.blocked {
                    problems.push(format!("thread {} has signal mask {} instead of {before}", th.tid, th.blocked));
                }
            }
        }
        if problems.is_empty() || start.elapsed() > Duration::from_secs(2) {
            break problems;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    match t.app.try_ask("probe", ANSWER_LIMIT) {
        Some(p) if p == MIX_OLD || p == MIX_NEW => {}
        Some(p) => return Err(format!("the app computes a mix of versions: {p}")),
        None => return Err("the app no longer answers".into()),
    }
    let (_, bad, _, _, odd) = mix_stats(&mut t.app);
    if (transition && bad > bad_before) || odd > 0 {
        return Err(format!("the workers saw half a patch: {} mixed g, {odd} odd f", bad - bad_before));
    }
    // The next runs repair whatever was left, and work.
    ok(&trigger(pid, meta, Op::Continue, None, None), "--continue after the kill")?;
    ok(&trigger(pid, meta, Op::Apply, None, None), "apply after the kill")?;
    match t.app.try_ask("probe", ANSWER_LIMIT) {
        Some(p) if p == MIX_NEW => {}
        p => return Err(format!("after apply the app answers {p:?}, not {MIX_NEW:?}")),
    }
    ok(&trigger(pid, meta, Op::Revert, None, None), "revert after the kill")?;
    match t.app.try_ask("probe", ANSWER_LIMIT) {
        Some(p) if p == MIX_OLD => {}
        p => return Err(format!("after revert the app answers {p:?}, not {MIX_OLD:?}")),
    }
    Ok(())
}

/// How many `ptrace` and `pwrite64` calls a clean run of `op` makes.
fn count_calls(t: &mut Target, work: &Work, meta: &Path, op: Op) -> (usize, usize) {
    prepare(t, meta, op).unwrap();
    let log = work.path().join("strace.log");
    let l = trigger(t.pid(), meta, op, None, Some(&log));
    ok(&l, "the clean run").unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let calls = |name: &str| text.lines().filter(|l| l.contains(&format!(" {name}("))).count();
    let counts = (calls("ptrace"), calls("pwrite64"));
    // Back to unpatched.
    if op != Op::Revert {
        ok(&trigger(t.pid(), meta, Op::Revert, None, None), "revert after the clean run").unwrap();
    }
    assert_eq!(t.app.ask("probe"), MIX_OLD);
    counts
}

fn sweep(immediate: bool, ops: &[Op]) {
    let work = Work::new();
    let mix = Mix::build(&work, 0);
    let meta: PathBuf = mix.patch(&work, "mix", if immediate { &["immediate"] } else { &[] });
    let kind = if immediate { "immediate" } else { "transition" };
    let mut t = Target::start(&mix.app);
    let mut failures = Vec::new();
    let mut points = 0;
    let start = Instant::now();
    for &op in ops {
        let (ptraces, pwrites) = count_calls(&mut t, &work, &meta, op);
        println!("{kind} {op:?}: a clean run makes {ptraces} ptrace and {pwrites} pwrite64 calls");
        assert!(ptraces > 0, "{kind} {op:?}: the clean run made no ptrace call: is strace tracing the trigger?");
        assert!(
            pwrites > 0,
            "{kind} {op:?}: the clean run wrote nothing with pwrite64: if the trigger now writes the process \
             another way, sweep that system call too"
        );
        for (syscall, count) in [("ptrace", ptraces), ("pwrite64", pwrites)] {
            for n in 1..=count {
                points += 1;
                let point = format!("{kind} {op:?}, killed at {syscall} #{n}");
                let bad_before = mix_stats(&mut t.app).1;
                let result = prepare(&mut t, &meta, op).and_then(|()| {
                    let killed = trigger(t.pid(), &meta, op, Some((syscall, n)), None);
                    if killed.timed_out {
                        return Err("the killed run hung".into());
                    }
                    check_after_kill(&mut t, &meta, !immediate, bad_before)
                });
                if let Err(e) = result {
                    println!("FAILED: {point}: {e}");
                    failures.push(format!("{point}: {e}"));
                    // Start afresh, so one broken point does not hide the next ones.
                    t = Target::start(&mix.app);
                }
            }
        }
    }
    println!("{points} kill points in {:?}, {} failed", start.elapsed(), failures.len());
    assert!(
        failures.is_empty(),
        "{} of {points} kill points left the target worse:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn kill_points_of_a_transition_patch() {
    sweep(false, &[Op::Apply, Op::Revert, Op::Continue]);
}

#[test]
fn kill_points_of_an_immediate_patch() {
    sweep(true, &[Op::Apply, Op::Revert]);
}
