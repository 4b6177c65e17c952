//! The whole live-patching demo in one program.
//!
//! `demo-app` calls `average()` from `libdemo.so` every 300 ms; the function has a bug
//! (integer division). This program starts the app with `libpulp_rs.so` preloaded, shows the
//! wrong output, fixes the running process with `pulp-trigger`, shows the right output,
//! reverts the fix, shows the bug again and stops the app.
//!
//! Run: `cargo build --release --workspace && target/release/pulp-demo` (or `./demo.sh`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pulp_examples::{dsc_text, Tools};

const LIB: &str = env!("PULP_DEMO_LIB");
const APP: &str = env!("PULP_DEMO_APP");
const FIX: &str = env!("PULP_DEMO_FIX");

/// How long each phase is shown.
const PHASE: Duration = Duration::from_millis(1500);

/// The app's output lines so far, shared with the reader thread.
type Lines = Arc<Mutex<Vec<String>>>;

/// Kills the app when the demo ends, whichever way it ends.
struct App {
    child: Child,
    lines: Lines,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl App {
    fn start(tools: &Tools) -> Result<App> {
        let mut child = Command::new(APP)
            .env("LD_PRELOAD", &tools.runtime)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {APP}"))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let lines: Lines = Arc::default();
        let sink = Arc::clone(&lines);
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("  app | {line}");
                sink.lock().unwrap().push(line);
            }
        });
        Ok(App { child, lines })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn line_count(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// Shows the app's output for one phase, then checks that the lines printed since line
    /// `from` (leaving out the first, which may have been computed before a change) say `want`.
    fn show(&mut self, from: usize, want: &str) -> Result<()> {
        let deadline = Instant::now() + PHASE;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("demo-app exited unexpectedly ({status})");
            }
            thread::sleep(Duration::from_millis(50));
        }
        let lines = self.lines.lock().unwrap();
        let recent: Vec<&String> = lines.iter().skip(from + 1).collect();
        if recent.is_empty() {
            bail!("demo-app printed nothing for {} ms", PHASE.as_millis());
        }
        if let Some(bad) = recent.iter().find(|l| !l.contains(want)) {
            bail!("expected every line to say {want:?}, got {bad:?}");
        }
        Ok(())
    }
}

fn say(text: &str) {
    println!("\n==> {text}");
}

fn echo(run: &pulp_examples::Run) {
    println!("$ {}", run.command);
    for line in run.stdout.lines().chain(run.stderr.lines()) {
        println!("{line}");
    }
}

fn demo(tools: &Tools, work: &Path) -> Result<()> {
    say("Describe the fix (average -> average_fixed) and pack it");
    let dsc = work.join("demo.dsc");
    let meta = work.join("demo.meta");
    let text = dsc_text(
        Path::new(FIX),
        Path::new(LIB),
        &[("average".into(), "average_fixed".into())],
        "DEMO-1: average() truncates",
    );
    std::fs::write(&dsc, &text).with_context(|| format!("cannot write {}", dsc.display()))?;
    println!("{}:\n{}", dsc.display(), text.trim_end());
    let run = tools.pack(&dsc, &meta)?;
    echo(&run);

    say("Start demo-app with the runtime preloaded: it prints the wrong average");
    println!("$ LD_PRELOAD={} {APP}", tools.runtime.display());
    let mut app = App::start(tools)?;
    app.show(1, "WRONG")?;

    say("Apply the fix to the running process");
    let mark = app.line_count();
    let run = tools.trigger(app.pid(), &meta, false)?;
    echo(&run);
    run.check("pulp-trigger")?;
    app.show(mark, "correct")?;

    say("Revert it: the bug is back, the process never stopped");
    let mark = app.line_count();
    let run = tools.trigger(app.pid(), &meta, true)?;
    echo(&run);
    run.check("pulp-trigger --revert")?;
    app.show(mark, "WRONG")?;

    say("Stop demo-app");
    drop(app);
    Ok(())
}

fn main() {
    let result = Tools::locate().and_then(|tools| {
        let work =
            tempfile::Builder::new().prefix("pulp-demo").tempdir().context("cannot create a temporary folder")?;
        demo(&tools, work.path())
    });
    match result {
        Ok(()) => println!("\nDemo finished: the bug was fixed and restored without a restart."),
        Err(e) => {
            eprintln!("\npulp-demo: error: {e:#}");
            std::process::exit(1);
        }
    }
}
