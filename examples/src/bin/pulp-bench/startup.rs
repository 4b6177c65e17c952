//! What the preloaded runtime costs a process that is never patched: the time to start
//! and end `/bin/true` (`posix_spawn` + `waitpid`), and the address space and resident
//! memory of a short-lived process (`cat /proc/self/status`), side by side in one run:
//!
//! - `none`: nothing preloaded;
//! - `empty`: an empty preloaded `.so` (what any preloaded library costs);
//! - `runtime`: `libpulp_rs.so`;
//! - `installed`: `libpulp_rs.so` with five patches installed in its patch directory
//!   for a library the program never maps (one with a 4 MiB object);
//! - `b1`, `b2`, ...: other builds of the runtime (`--b PATH`, repeated), for an A/B of
//!   two trees; `--bi PATH` runs that build with the five patches installed, beside
//!   `installed`.
//!
//! The variants take turns in blocks of 10 starts, in rotating order, so a busy moment
//! of the machine falls on all of them; the table gives the lower decile and the median
//! of every start, and each variant's difference to `empty`.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use pulp_examples::Tools;

struct Variant {
    name: String,
    /// `LD_PRELOAD`, if any, and `PULP_PATCH_DIR`.
    env: Vec<CString>,
    spawn_us: Vec<f64>,
    vm_kib: Vec<f64>,
    rss_kib: Vec<f64>,
}

fn environment(preload: Option<&Path>, dir: &Path) -> Vec<CString> {
    let mut env = vec![CString::new("PATH=/usr/bin:/bin").unwrap()];
    if let Some(p) = preload {
        env.push(CString::new(format!("LD_PRELOAD={}", p.display())).unwrap());
    }
    env.push(CString::new(format!("PULP_PATCH_DIR={}", dir.display())).unwrap());
    env
}

/// `posix_spawn` `argv` with `env`, wait for it; microseconds, and its stdout if asked.
fn spawn(argv: &[&str], env: &[CString], capture: bool) -> Result<(f64, String)> {
    let args: Vec<CString> = argv.iter().map(|a| CString::new(*a).unwrap()).collect();
    let mut argp: Vec<*mut libc::c_char> = args.iter().map(|a| a.as_ptr() as *mut _).collect();
    argp.push(std::ptr::null_mut());
    let mut envp: Vec<*mut libc::c_char> = env.iter().map(|e| e.as_ptr() as *mut _).collect();
    envp.push(std::ptr::null_mut());
    let mut fds = [-1; 2];
    // SAFETY: plain-data file actions, initialised before use and destroyed after.
    let mut actions: libc::posix_spawn_file_actions_t = unsafe { std::mem::zeroed() };
    // SAFETY: `actions` is valid storage for the call.
    unsafe { libc::posix_spawn_file_actions_init(&mut actions) };
    if capture {
        // SAFETY: `fds` has room for two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            bail!("pipe: {}", std::io::Error::last_os_error());
        }
        // SAFETY: the write end becomes the child's stdout.
        unsafe { libc::posix_spawn_file_actions_adddup2(&mut actions, fds[1], 1) };
    }
    let mut pid: libc::pid_t = 0;
    let start = Instant::now();
    // SAFETY: NUL-terminated argv/envp arrays of valid C strings that outlive the call.
    let rc = unsafe {
        libc::posix_spawn(&mut pid, args[0].as_ptr(), &actions, std::ptr::null(), argp.as_ptr(), envp.as_ptr())
    };
    // SAFETY: initialised above, not used afterwards.
    unsafe { libc::posix_spawn_file_actions_destroy(&mut actions) };
    if rc != 0 {
        bail!("posix_spawn {}: {}", argv[0], std::io::Error::from_raw_os_error(rc));
    }
    let mut out = String::new();
    if capture {
        // SAFETY: our copy of the write end; the child holds its own.
        unsafe { libc::close(fds[1]) };
        use std::io::Read;
        // SAFETY: the read end is ours alone from here on.
        let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[0]) };
        f.read_to_string(&mut out)?;
    }
    let mut status = 0;
    // SAFETY: waits for the child just spawned.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let us = start.elapsed().as_secs_f64() * 1e6;
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!("{} exited with status {status:#x}", argv[0]);
    }
    Ok((us, out))
}

fn status_kib(status: &str, key: &str) -> Result<f64> {
    let line = status.lines().find(|l| l.starts_with(key)).with_context(|| format!("no {key} in {status}"))?;
    Ok(line.split_whitespace().nth(1).context("no value")?.parse()?)
}

fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * q).round() as usize]
}

/// Five patches of `F_PAD`'s library installed into `dir` (one with a 4 MiB object).
fn install_unrelated(tools: &Tools, work: &Path, dir: &Path) -> Result<()> {
    let big_c = work.join("big.c");
    std::fs::write(&big_c, "const char big[4 << 20] = {1};\nint f_new(int x) { return x + 1; }\n")?;
    let big = work.join("big_fix.so");
    let out = std::process::Command::new("cc")
        .args(["-O2", "-fPIC", "-shared", "-Wl,--build-id=sha1", "-o"])
        .arg(&big)
        .arg(&big_c)
        .output()?;
    if !out.status.success() {
        bail!("cc: {}", String::from_utf8_lossy(&out.stderr));
    }
    for i in 0..5 {
        let object = if i == 4 { big.clone() } else { PathBuf::from(crate::F_FIX) };
        let dsc = format!("{}\n!unrelated {i}\n%state {} 1\n@{}\nf:f_new\n", object.display(), 100 + i, crate::F_PAD);
        let meta = crate::write_pack(tools, work, &format!("u{i}"), dsc)?;
        let out = std::process::Command::new(&tools.pulp).arg("install").arg("--dir").arg(dir).arg(&meta).output()?;
        if !out.status.success() {
            bail!("pulp install: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    Ok(())
}

pub(crate) fn run(tools: &Tools, rounds: usize, others: &[(PathBuf, bool)]) -> Result<()> {
    let work = tempfile::tempdir()?;
    let empty_c = work.path().join("empty.c");
    std::fs::write(&empty_c, "")?;
    let empty = work.path().join("libempty.so");
    let out =
        std::process::Command::new("cc").args(["-O2", "-fPIC", "-shared", "-o"]).arg(&empty).arg(&empty_c).output()?;
    if !out.status.success() {
        bail!("cc: {}", String::from_utf8_lossy(&out.stderr));
    }
    let no_dir = work.path().join("no-patches");
    let dir = work.path().join("patches.d");
    install_unrelated(tools, work.path(), &dir)?;

    let mut variants = vec![
        ("none".to_string(), environment(None, &no_dir)),
        ("empty".to_string(), environment(Some(&empty), &no_dir)),
        ("runtime".to_string(), environment(Some(&tools.runtime), &no_dir)),
        ("installed".to_string(), environment(Some(&tools.runtime), &dir)),
    ];
    for (i, (b, installed)) in others.iter().enumerate() {
        let (what, patches) = if *installed { (", installed", &dir) } else { ("", &no_dir) };
        variants.push((format!("b{} ({}{what})", i + 1, b.display()), environment(Some(b), patches)));
    }
    let mut variants: Vec<Variant> = variants
        .into_iter()
        .map(|(name, env)| Variant { name, env, spawn_us: Vec::new(), vm_kib: Vec::new(), rss_kib: Vec::new() })
        .collect();
    const BLOCK: usize = 10;
    for round in 0..rounds {
        let n = variants.len();
        for k in 0..n {
            let v = &mut variants[(round + k) % n];
            for _ in 0..BLOCK {
                v.spawn_us.push(spawn(&["/bin/true"], &v.env, false)?.0);
            }
            let (_, status) = spawn(&["/bin/cat", "/proc/self/status"], &v.env, true)?;
            v.vm_kib.push(status_kib(&status, "VmSize:")?);
            v.rss_kib.push(status_kib(&status, "VmHWM:")?);
        }
    }

    let base = variants.iter().find(|v| v.name == "empty").map(|v| {
        (quantile(&v.spawn_us, 0.1), quantile(&v.spawn_us, 0.5), quantile(&v.vm_kib, 0.5), quantile(&v.rss_kib, 0.5))
    });
    let (b10, b50, bvm, brss) = base.context("no empty variant")?;
    println!(
        "{} starts of /bin/true per variant, in blocks of {BLOCK}, rotating; memory of `cat /proc/self/status`\n",
        rounds * BLOCK
    );
    println!("| variant | p10 µs | median µs | p10 − empty | median − empty | VmSize KiB | − empty | peak RSS KiB | − empty |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for v in &variants {
        let (p10, p50) = (quantile(&v.spawn_us, 0.1), quantile(&v.spawn_us, 0.5));
        let (vm, rss) = (quantile(&v.vm_kib, 0.5), quantile(&v.rss_kib, 0.5));
        println!(
            "| {} | {p10:.0} | {p50:.0} | {:+.0} | {:+.0} | {vm:.0} | {:+.0} | {rss:.0} | {:+.0} |",
            v.name,
            p10 - b10,
            p50 - b50,
            vm - bvm,
            rss - brss
        );
    }
    Ok(())
}
