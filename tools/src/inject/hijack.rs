//! Making one thread of the target run the runtime's entry point.
//!
//! The entry runs on the runtime's own stack (the hijack stub switches to it), so the
//! borrowed thread's stack only holds the signal frame it returns through should this
//! tool die (a few KiB below its red zone): a thread without that much room left is not
//! chosen. Foreign code the entry calls (a patch's constructors and callbacks) runs in
//! guarded calls: when it faults or does not return in time, the thread is sent to the
//! runtime's recovery point instead of the process dying or hanging.
//!
//! Only that thread is stopped. It is chosen at a safe point: `dlopen` and `malloc` in
//! a thread that was interrupted while holding the loader or an allocator lock would
//! deadlock, so we prefer threads blocked in a plain waiting system call (read, poll,
//! nanosleep, ...), never take one that stopped inside the dynamic linker or inside a
//! memory-management system call an allocator makes with its lock held, and retry with
//! back-off when none qualifies. Sleeping threads are preferred for a second reason:
//! stopping them delays nothing the application is doing.

use crate::error::{Result, TriggerError};
use crate::inject::process::Process;
use crate::inject::ptrace::{Stop, Tracee};
use crate::inject::sigframe;
use crate::inject::signals::BlockedSignals;
use pulp_meta::abi::{self, RuntimeInfo};
use std::time::{Duration, Instant};

/// System calls a thread waits in while holding no lock of the C library or the loader.
const WAITING_SYSCALLS: &[i64] = &[
    0,   // read
    7,   // poll
    17,  // pread64
    19,  // readv
    23,  // select
    34,  // pause
    35,  // nanosleep
    43,  // accept
    45,  // recvfrom
    47,  // recvmsg
    61,  // wait4
    128, // rt_sigtimedwait
    130, // rt_sigsuspend
    230, // clock_nanosleep
    232, // epoll_wait
    247, // waitid
    270, // pselect6
    271, // ppoll
    281, // epoll_pwait
    288, // accept4
    441, // epoll_pwait2
];

/// System calls an allocator makes while holding its arena lock.
const ALLOCATOR_SYSCALLS: &[i64] = &[9, 10, 11, 12, 25, 28]; // mmap mprotect munmap brk mremap madvise

/// The mask a borrowed thread runs the runtime with: every signal blocked but the stub's
/// own SIGWINCH and SIGTRAP (an `int3` of an unpadded entry being written, which the
/// kernel would otherwise deliver by resetting the process's SIGTRAP action to the
/// default: see `send_to_slot`).
const RUN_MASK: u64 = !((1u64 << (abi::CALL_STUB_SIGNAL - 1)) | (1u64 << (libc::SIGTRAP - 1)));

/// Signals that mean the thread's code faulted (or aborted).
const FAULT_SIGNALS: &[i32] =
    &[libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE, libc::SIGABRT, libc::SIGTRAP, libc::SIGSYS];
/// Room a thread's stack must have below its red zone for the signal frame, beyond the
/// frame itself: the first call in a process, the runtime's `pulp_rs_prepare`, runs
/// there (the entry stack it maps does not exist yet) and needs a few hundred bytes.
const STACK_MARGIN: u64 = 1024;
/// How long to look for a thread at a safe point.
const FIND_TIMEOUT: Duration = Duration::from_secs(5);

/// While a thread of the target is hijacked, the signals that usually end a tool
/// (Ctrl-C, SIGTERM, a closed terminal) are held back until the thread is restored, so
/// that the tool finishes its step (the thread would survive anyway: it returns through
/// its signal frame, but the step would be left for the next run).
const HELD_SIGNALS: [i32; 6] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGPIPE, libc::SIGTSTP];

/// A stopped thread ready to run runtime entry points.
pub struct Hijacked {
    // Field order matters: the tracee is restored before the signals are let through.
    tracee: Tracee,
    _hold: BlockedSignals,
    info: RuntimeInfo,
    /// When the thread was stopped, for the summary.
    pub stopped_at: Instant,
    /// How long foreign code may run in one call before it is abandoned.
    limit: Duration,
    /// What the guarded calls of the last call ended with (abandoned code), for messages.
    pub abandoned: Vec<String>,
    /// The process's mappings, read just before the thread was stopped.
    pub maps: Vec<crate::inject::process::Mapping>,
    /// The process's and the thread's ids in the process's own PID namespace.
    own_ids: (i32, i32),
}

impl Hijacked {
    /// Stop one thread of `proc` at a safe point. `limit` bounds each call's foreign code.
    pub fn attach(proc: &Process, info: RuntimeInfo, limit: Duration) -> Result<Self> {
        check_not_busy(proc, &info)?;
        let maps = proc.mappings()?;
        let ranges = |pred: fn(&str) -> bool| -> Vec<(u64, u64)> {
            maps.iter().filter(|m| pred(&m.path)).map(|m| (m.start, m.end)).collect()
        };
        let (loader, libc) = (ranges(is_dynamic_linker), ranges(is_c_library));
        // The runtime's own code: a thread inside it may hold one of its locks (a shadow
        // variable's shard, the log), which the entry or a callback would then wait for.
        // (Only the instruction pointer: the stack words above it are often stale return
        // addresses of calls long returned. The runtime holds a lock across a call out
        // only around `calloc`, where the thread is in the C library and is not taken
        // either, unless waiting in a system call; a callback waiting for such a lock is
        // abandoned at the call limit rather than waiting forever.)
        let runtime = crate::inject::runtime::runtime_code_in(&maps);
        let hold = BlockedSignals::new(&HELD_SIGNALS);
        let start = Instant::now();
        let mut nap = Duration::from_micros(100);
        let mut last_reason = String::from("no thread found");
        let mut round = 0;
        loop {
            round += 1;
            for tid in ranked_threads(proc, round > 1)? {
                let Some(tracee) = Tracee::stop_borrowing(proc.pid, tid, proc.suspend_seccomp)? else { continue };
                if !proc.owns_stopped_thread(tid) {
                    // The process exited and its PID, or this thread's id, now names
                    // another: let that one go untouched.
                    tracee.release()?;
                    return Err(TriggerError::Exited { pid: proc.pid, during: "before it could be patched".into() });
                }
                let regs = tracee.saved_regs();
                let inside = |r: &[(u64, u64)]| r.iter().any(|&(s, e)| (s..e).contains(&regs.rip));
                let syscall = regs.orig_rax as i64;
                if proc.in_vfork(tid) {
                    // Its vfork child runs on this very stack: no frame may go below it.
                    last_reason = format!("thread {tid} is waiting for a vfork child");
                } else if inside(&loader) {
                    last_reason = format!("thread {tid} was inside the dynamic linker");
                } else if syscall < 0 && inside(&libc) {
                    // Running C library code, not a system call: it may hold the lock of
                    // the allocator (malloc) or of stdio; its own code is not a safe point.
                    last_reason = format!("thread {tid} was running inside the C library");
                } else if ALLOCATOR_SYSCALLS.contains(&syscall) {
                    last_reason = format!("thread {tid} was in system call {syscall} of an allocator");
                } else if inside(&runtime) {
                    last_reason = format!("thread {tid} was running the runtime's own code");
                } else if !has_room(&maps, regs.rsp, frame_len(tracee.saved_state().0)) {
                    last_reason = format!("thread {tid} has too little stack left for the signal frame");
                } else if let (Some(own_pid), Some(own_tid)) = (proc.own_tid(proc.pid), proc.own_tid(tid)) {
                    return Ok(Self {
                        own_ids: (own_pid, own_tid),
                        tracee,
                        _hold: hold,
                        info,
                        stopped_at: Instant::now(),
                        limit,
                        abandoned: Vec::new(),
                        maps,
                    });
                } else {
                    last_reason = format!("thread {tid}'s id in its PID namespace cannot be read");
                }
                tracee.release()?;
            }
            if start.elapsed() > FIND_TIMEOUT {
                return Err(TriggerError::NoSafeThread { pid: proc.pid, reason: last_reason });
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(20));
        }
    }

    pub fn tid(&self) -> i32 {
        self.tracee.tid
    }

    /// The registers the thread had when it was stopped, which `release` puts back.
    pub fn saved_regs(&self) -> &crate::inject::ptrace::Regs {
        self.tracee.saved_regs()
    }

    /// Run `entry(arg)` in the thread and return its result. The thread's registers
    /// are left as the call left them; `release` restores them. Should this tool die
    /// meanwhile, the thread restores itself through the signal frame written here.
    pub fn call(&mut self, proc: &Process, entry: u64, arg: u64) -> Result<i64> {
        let saved = *self.tracee.saved_regs();
        let (xstate, mask) = self.tracee.saved_state();
        // Below the interrupted code's 128-byte red zone: the XSAVE area (64-aligned),
        // the ucontext, then the stack the entry runs on.
        let fp = sigframe::fpstate(xstate);
        let fp_len = fp.as_ref().map_or(0, Vec::len) as u64;
        let fp_addr = (saved.rsp - 128 - fp_len) & !63;
        let uc_addr = (fp_addr - sigframe::UCONTEXT_SIZE as u64) & !15;
        if let Some(fp) = &fp {
            proc.write(fp_addr, fp)?;
        }
        // Without the software bytes (no XSAVE) the frame has no vector state: the kernel
        // then resets it, which beats a SIGSEGV if the tool dies.
        let fp_ptr = if fp.is_some() { fp_addr } else { 0 };
        proc.write(uc_addr, &sigframe::ucontext(&sigframe::restartable(&saved), mask, fp_ptr))?;

        let mut regs = saved;
        regs.rip = self.info.call_stub + abi::CALL_STUB_ENTRY;
        regs.rbx = entry;
        regs.r15 = arg;
        regs.r12 = uc_addr;
        // The stub signals the thread, and claims the entry stack, by the ids the thread
        // has in its own PID namespace (a container's are not the host's).
        regs.r13 = self.own_ids.0 as u64;
        regs.r14 = self.own_ids.1 as u64;
        regs.rsp = (uc_addr - 64) & !15;
        // Not in a system call: the kernel must not restart one at our stub.
        regs.orig_rax = u64::MAX;
        let t = &mut self.tracee;
        t.set_regs(&regs)?;
        // Signals arriving meanwhile stay pending and are delivered after we restore the
        // thread's own mask; only the stub's own SIGWINCH gets through.
        t.set_sigmask(RUN_MASK)?;
        t.resume()?;
        self.abandoned.clear();
        loop {
            let stop = match self.tracee.wait(Some(self.limit)) {
                Ok(stop) => stop,
                Err(_) => {
                    // Foreign code that does not return (a patch's constructor or callback
                    // waiting forever): stop the thread and abandon it, if we can.
                    self.tracee.interrupt()?;
                    match self.tracee.wait(Some(Duration::from_secs(5)))? {
                        Stop::Gone => return Err(self.exited()),
                        _ if self.recover(proc, 0)? => continue,
                        _ => return Err(self.unguarded(proc, format!("did not return within {:?}", self.limit))),
                    }
                }
            };
            match stop {
                Stop::Signal(libc::SIGWINCH) => {
                    let after = self.tracee.regs()?;
                    if after.rip == self.info.call_stub_stop {
                        return Ok(after.r15 as i64);
                    }
                    // A SIGWINCH of the program's own: deliver it when we let go.
                    self.tracee.defer_signal(libc::SIGWINCH);
                    self.tracee.resume()?;
                }
                Stop::Signal(libc::SIGTRAP) if self.send_to_slot(proc)? => self.tracee.resume()?,
                Stop::Signal(sig) if FAULT_SIGNALS.contains(&sig) => {
                    if !self.recover(proc, sig)? {
                        let at = self.tracee.regs().map(|r| r.rip).unwrap_or(0);
                        return Err(self.unguarded(proc, format!("signal {sig} at {at:#x}")));
                    }
                }
                Stop::Signal(sig) => {
                    // Any other signal (a blocked one cannot reach us): deliver it later.
                    self.tracee.defer_signal(sig);
                    self.tracee.resume()?;
                }
                // A group-stop (SIGSTOP to the process) while we run: keep going.
                Stop::Event => self.tracee.resume()?,
                Stop::Gone => return Err(self.exited()),
            }
        }
    }

    /// The thread stopped inside the entry (fault signal `sig`, or 0: it did not return in
    /// time). Inside a guarded call, send it to the runtime's recovery point, which
    /// returns from that call as abandoned; the signal is not delivered. `false` when no
    /// guarded call is in progress.
    fn recover(&mut self, proc: &Process, sig: i32) -> Result<bool> {
        let depth = proc.read_u64(self.info.guard_depth).unwrap_or(0);
        if depth == 0 {
            return Ok(false);
        }
        let t = &mut self.tracee;
        let mut regs = t.regs()?;
        let address = if sig != 0 { t.fault_address() } else { 0 };
        self.abandoned.push(if sig == 0 { "timeout".into() } else { format!("signal {sig}") });
        regs.rip = self.info.recover;
        regs.rdi = sig as u64;
        regs.rsi = address;
        // Not in a system call any more: nothing to restart.
        regs.orig_rax = u64::MAX;
        t.set_regs(&regs)?;
        // The abandoned code may have changed the mask (abort() unblocks SIGABRT).
        t.set_sigmask(RUN_MASK)?;
        t.resume()?;
        Ok(true)
    }

    /// The thread stopped on SIGTRAP: if it ran the `int3` at the entry of an unpadded
    /// function being written (the runtime's trap table says where), send it on to that
    /// function's slot, as the runtime's handler would, and say so.
    fn send_to_slot(&mut self, proc: &Process) -> Result<bool> {
        let mut regs = self.tracee.regs()?;
        let at = regs.rip.wrapping_sub(1);
        let n = proc.read_u64(self.info.traps)?.min(self.info.desc_count) as usize;
        let table = proc.read(self.info.traps + 8, n * 16)?;
        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
        let slot = table.chunks_exact(16).find(|e| word(&e[..8]) == at).map(|e| word(&e[8..]));
        match slot {
            Some(slot) if slot != 0 => {
                regs.rip = slot;
                self.tracee.set_regs(&regs)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn exited(&self) -> TriggerError {
        TriggerError::Exited { pid: self.tracee.pid, during: "while running the runtime's entry".into() }
    }

    /// The thread faulted or hung outside any guarded call (a defect of the runtime): it
    /// is put back where it was, and the entry-stack claim it held is released so that
    /// later requests are served.
    fn unguarded(&self, proc: &Process, what: String) -> TriggerError {
        if proc.read_u64(self.info.entry_owner).unwrap_or(0) == self.own_ids.1 as u64 {
            let _ = proc.write(self.info.entry_owner, &0u64.to_le_bytes());
        }
        self.crashed(what)
    }

    fn crashed(&self, what: String) -> TriggerError {
        TriggerError::Target {
            pid: self.tracee.pid,
            what: format!(
                "thread {} stopped inside the runtime ({what}); it was put back where it was",
                self.tracee.tid
            ),
        }
    }

    /// Restore the thread exactly as it was and let it go.
    pub fn release(self) -> Result<()> {
        self.tracee.release()
    }
}

/// A process's command name, for messages.
pub fn proc_name(pid: i32) -> String {
    crate::inject::process::read_proc_file(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Refuse at once when another thread holds the runtime's entry stack (a request of an
/// earlier tool still running, e.g. a patch's constructor that sleeps); a claim left by a
/// thread that no longer exists (the process forked while a request ran, so the child
/// inherited it) is cleared.
fn check_not_busy(proc: &Process, info: &RuntimeInfo) -> Result<()> {
    let owner = proc.read_u64(info.entry_owner)?;
    if owner == 0 {
        return Ok(());
    }
    // The claim holds the thread's own id (its PID namespace's).
    if let Some(tid) = proc.host_tid(owner as i32) {
        return Err(TriggerError::Busy { pid: proc.pid, tid });
    }
    proc.write(info.entry_owner, &0u64.to_le_bytes())
}

/// Bytes the signal frame takes below a thread's red zone, with alignment.
fn frame_len(xstate: &[u8]) -> u64 {
    128 + xstate.len() as u64 + 4 + 64 + sigframe::UCONTEXT_SIZE as u64 + 16 + 64
}

/// Whether the stack mapping under `rsp` has `need` bytes (plus a margin) below it: the
/// main thread's `[stack]` grows on demand; a thread stack is a fixed mapping.
fn has_room(maps: &[crate::inject::process::Mapping], rsp: u64, need: u64) -> bool {
    match maps.iter().find(|m| m.start < rsp && rsp <= m.end) {
        Some(m) if m.path == "[stack]" => true,
        Some(m) => rsp - m.start >= need + STACK_MARGIN,
        // An unknown stack (a mapping changed meanwhile): do not risk it.
        None => false,
    }
}

fn is_dynamic_linker(path: &str) -> bool {
    path.rsplit('/').next().is_some_and(pulp_elf::is_dynamic_linker_name)
}

fn is_c_library(path: &str) -> bool {
    path.rsplit('/').next().is_some_and(|name| name.starts_with("libc.so") || name.starts_with("libc-"))
}

/// Threads in the order we try them: blocked in a waiting system call first, then
/// other sleeping threads, then running ones; stopped and dead threads never. Unless
/// `full`, the search stops at the first thread of the best kind (the main thread is
/// looked at first), so a process with many threads costs a few `/proc` reads.
fn ranked_threads(proc: &Process, full: bool) -> Result<Vec<i32>> {
    let mut tids = proc.threads()?;
    if let Some(i) = tids.iter().position(|&t| t == proc.pid) {
        tids[..=i].rotate_right(1);
    }
    let mut ranked: Vec<(u8, i32)> = Vec::new();
    let mut best = None;
    let mut tracer = None;
    let me = std::process::id() as i32;
    for tid in tids {
        // A thread another tracer (strace, gdb) holds cannot be borrowed.
        if let Some(t) = proc.tracer(tid).filter(|&t| t != me) {
            tracer = Some(t);
            continue;
        }
        let Some((state, syscall)) = proc.thread_state(tid) else { continue };
        let rank = match state {
            'S' if syscall.is_some_and(|s| WAITING_SYSCALLS.contains(&s)) => 0,
            'S' => 1,
            'R' | 'D' => 2,
            _ => continue,
        };
        if rank == 0 && !full {
            best = Some(tid);
            break;
        }
        ranked.push((rank, tid));
    }
    ranked.sort_unstable();
    if let Some(tid) = best {
        ranked.insert(0, (0, tid));
    }
    if ranked.is_empty() {
        if let Some(t) = tracer {
            return Err(TriggerError::Traced { pid: proc.pid, tracer: t, name: proc_name(t) });
        }
        return Err(TriggerError::NoSafeThread { pid: proc.pid, reason: "every thread is stopped or exiting".into() });
    }
    Ok(ranked.into_iter().map(|(_, tid)| tid).collect())
}
