//! One traced thread, as an RAII guard: `PTRACE_SEIZE` (no SIGSTOP sent),
//! `PTRACE_INTERRUPT`, register and signal-mask access. Dropping the guard puts back the
//! registers and signal mask it saved when the thread stopped and detaches, so the
//! thread resumes exactly where it was (general, vector and floating-point registers),
//! an interrupted system call included: the kernel restarts it from the restored
//! `orig_rax`/`rax`.
//!
//! Some system calls do not restart after a stop: `epoll_wait` and friends, or a read on
//! a socket with a timeout, return EINTR when our interrupt stops the thread. The program
//! did nothing to deserve that, so when a stop finds a waiting call that returned EINTR
//! and no signal is pending for the thread (a signal the program will handle is the one
//! case where EINTR is its due), the call is made to run again, as the kernel does for the
//! calls it restarts.

use crate::error::{Result, TriggerError};
use nix::errno::Errno;
use nix::sys::ptrace;
use nix::unistd::Pid;
use std::time::{Duration, Instant};

pub type Regs = libc::user_regs_struct;

const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
/// Register set of the extended (x87/SSE/AVX/AVX-512) state, XSAVE layout.
const NT_X86_XSTATE: libc::c_int = 0x202;
/// Larger than any XSAVE area a CPU has today (AVX-512 with AMX tiles is ~11 KiB).
const XSTATE_MAX: usize = 16 << 10;
const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;
const EINTR: i64 = 4;

/// System calls that return EINTR (instead of restarting) when a stop interrupts them, and
/// that can run again with the same arguments without harm (nothing was consumed or
/// done: a timeout starts again, which only makes the wait longer).
const RERUN_ON_EINTR: &[u64] = &[
    0,   // read (sockets with SO_RCVTIMEO, some devices)
    1,   // write (sockets with SO_SNDTIMEO)
    7,   // poll
    17,  // pread64
    19,  // readv
    20,  // writev
    23,  // select
    35,  // nanosleep
    43,  // accept
    44,  // sendto
    45,  // recvfrom
    46,  // sendmsg
    47,  // recvmsg
    61,  // wait4
    65,  // semop
    70,  // msgrcv
    128, // rt_sigtimedwait
    202, // futex
    208, // io_getevents
    220, // semtimedop
    230, // clock_nanosleep
    232, // epoll_wait
    243, // mq_timedreceive
    247, // waitid
    270, // pselect6
    271, // ppoll
    281, // epoll_pwait
    288, // accept4
    299, // recvmmsg
    441, // epoll_pwait2
];

/// How long `Tracee::wait` polls before it sleeps between polls.
const SPIN: Duration = Duration::from_micros(30);
/// The longest sleep between two polls of `Tracee::wait`.
const POLL: Duration = Duration::from_micros(100);

/// Block `SIGCHLD` in the calling thread (and the threads it starts later), so that the
/// signal the kernel sends a tracer whenever a tracee stops stays pending for
/// `Tracee::wait`, which sleeps until it comes. Call it before any thread is traced, in
/// every thread of the tool (blocking it in the first thread before others start does
/// that). Without it, `wait` sleeps [`POLL`] between polls.
pub fn hold_child_signals() {
    // SAFETY: sigset_t is plain data, written by sigemptyset/sigaddset; the mask change
    // touches only this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Sleep until a `SIGCHLD` is pending (taking it) or `limit` has passed.
fn wait_child_signal(limit: Duration) {
    let ts = libc::timespec { tv_sec: 0, tv_nsec: limit.subsec_nanos() as libc::c_long };
    // SAFETY: as in `hold_child_signals`; sigtimedwait reads the set and the timeout,
    // which outlive the call, and is asked for no siginfo.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigtimedwait(&set, std::ptr::null_mut(), &ts);
    }
}

/// Why a traced thread stopped.
#[derive(Debug)]
pub enum Stop {
    /// Signal-delivery-stop with this signal number (real-time signals included, which
    /// is why this is a plain number and not `nix`'s `Signal`).
    Signal(i32),
    /// A `PTRACE_EVENT_STOP` (our interrupt, or a group-stop).
    Event,
    /// The thread or process is gone.
    Gone,
}

pub struct Tracee {
    pub pid: i32,
    pub tid: i32,
    saved_regs: Regs,
    /// The vector and floating-point registers: runtime code (and the SIMD `memcpy`s
    /// of the C library) clobbers them, and a thread stopped in user code has them live.
    saved_xstate: Vec<u8>,
    saved_mask: u64,
    /// Signals the program got while we held the thread (only SIGWINCH, the one the
    /// hijack stub leaves unblocked), delivered when we let go.
    pending: Vec<i32>,
    detached: bool,
    /// Whether registers or the signal mask were changed and must be put back.
    modified: std::cell::Cell<bool>,
}

impl Tracee {
    /// Seize thread `tid` of process `pid` and stop it with `PTRACE_INTERRUPT`, saving
    /// every register and the signal mask (to run code in it). `Ok(None)` when the
    /// thread no longer exists.
    pub fn stop(pid: i32, tid: i32) -> Result<Option<Self>> {
        Self::stop_saving(pid, tid, true, false)
    }

    /// [`Tracee::stop`], for a thread that will run code for us; with `suspend_seccomp`
    /// its seccomp filter does not apply to it while we trace it
    /// (`PTRACE_O_SUSPEND_SECCOMP`: the kernel asks for `CAP_SYS_ADMIN`).
    pub fn stop_borrowing(pid: i32, tid: i32, suspend_seccomp: bool) -> Result<Option<Self>> {
        Self::stop_saving(pid, tid, true, suspend_seccomp)
    }

    /// Stop a thread only to look at it: general registers are read, the extended state
    /// is not saved (nothing will change it), so the stop is shorter.
    pub fn stop_to_inspect(pid: i32, tid: i32) -> Result<Option<Self>> {
        Self::stop_saving(pid, tid, false, false)
    }

    fn stop_saving(pid: i32, tid: i32, full: bool, suspend_seccomp: bool) -> Result<Option<Self>> {
        let t = Pid::from_raw(tid);
        let options = if suspend_seccomp {
            // Not named by nix; libc has the bit.
            ptrace::Options::from_bits_retain(libc::PTRACE_O_SUSPEND_SECCOMP)
        } else {
            ptrace::Options::empty()
        };
        match ptrace::seize(t, options) {
            Ok(()) => {}
            Err(Errno::ESRCH) => return Ok(None),
            Err(Errno::EPERM) if suspend_seccomp => {
                return Err(TriggerError::NotPermitted {
                    pid,
                    reason: format!("ptrace(PTRACE_SEIZE, PTRACE_O_SUSPEND_SECCOMP) of thread {tid} was refused: --disable-seccomp needs CAP_SYS_ADMIN (root), and no other tracer"),
                })
            }
            Err(Errno::EPERM) => {
                return Err(TriggerError::NotPermitted { pid, reason: format!("ptrace(PTRACE_SEIZE) of thread {tid} was refused (another tracer, or the user or /proc/sys/kernel/yama/ptrace_scope forbids it)") })
            }
            Err(errno) => return Err(TriggerError::Ptrace { pid, tid, what: "PTRACE_SEIZE", errno }),
        }
        let mut me = Self {
            pid,
            tid,
            saved_regs: zero_regs(),
            saved_xstate: Vec::new(),
            saved_mask: 0,
            pending: Vec::new(),
            detached: false,
            modified: std::cell::Cell::new(false),
        };
        if let Err(errno) = ptrace::interrupt(t) {
            me.detached = true;
            let _ = ptrace::detach(t, None);
            return if errno == Errno::ESRCH {
                Ok(None)
            } else {
                Err(TriggerError::Ptrace { pid, tid, what: "PTRACE_INTERRUPT", errno })
            };
        }
        // Wait for our interrupt's stop. A signal that is being delivered before it is
        // delivered now, with its siginfo intact (the interrupt stays pending meanwhile).
        loop {
            match me.wait(None)? {
                Stop::Event => break,
                Stop::Signal(sig) => me.resume_with(sig)?,
                Stop::Gone => {
                    me.detached = true;
                    return Ok(None);
                }
            }
        }
        me.saved_regs = me.regs()?;
        if full {
            me.saved_xstate = me.xstate()?;
            me.saved_mask = me.sigmask()?;
        }
        me.undo_our_eintr()?;
        Ok(Some(me))
    }

    /// If our stop made a waiting system call return EINTR, make it run again when the
    /// thread resumes (see the module docs).
    fn undo_our_eintr(&mut self) -> Result<()> {
        let r = &self.saved_regs;
        if r.rax as i64 != -EINTR || !RERUN_ON_EINTR.contains(&r.orig_rax) || signal_pending(self.pid, self.tid) {
            return Ok(());
        }
        self.saved_regs.rax = self.saved_regs.orig_rax;
        self.saved_regs.rip -= 2;
        // Written at once: a thread stopped only to look at it is let go without a
        // restore, and if this tool dies now the thread still reruns its call.
        let regs = self.saved_regs;
        ptrace::setregs(Pid::from_raw(self.tid), regs).map_err(|e| self.err("PTRACE_SETREGS", e))
    }

    fn err(&self, what: &'static str, errno: Errno) -> TriggerError {
        TriggerError::Ptrace { pid: self.pid, tid: self.tid, what, errno }
    }

    /// The registers the thread had when it stopped.
    pub fn saved_regs(&self) -> &Regs {
        &self.saved_regs
    }

    /// Its extended register state and signal mask when it stopped (threads stopped
    /// with [`Tracee::stop`] only).
    pub fn saved_state(&self) -> (&[u8], u64) {
        (&self.saved_xstate, self.saved_mask)
    }

    /// A signal that arrived while we held the thread: it is delivered when we let go.
    pub fn defer_signal(&mut self, sig: i32) {
        self.pending.push(sig);
    }

    pub fn regs(&self) -> Result<Regs> {
        ptrace::getregs(Pid::from_raw(self.tid)).map_err(|e| self.err("PTRACE_GETREGS", e))
    }

    /// Move a stopped thread to `rip` for good: its saved registers say so too, and a
    /// thread only inspected (nothing else changed) is not restored at release.
    pub fn move_to(&mut self, rip: u64) -> Result<()> {
        let mut now = self.regs()?;
        now.rip = rip;
        ptrace::setregs(Pid::from_raw(self.tid), now).map_err(|e| self.err("PTRACE_SETREGS", e))?;
        self.saved_regs.rip = rip;
        Ok(())
    }

    pub fn set_regs(&self, regs: &Regs) -> Result<()> {
        self.modified.set(true);
        ptrace::setregs(Pid::from_raw(self.tid), *regs).map_err(|e| self.err("PTRACE_SETREGS", e))
    }

    /// The extended register state (XSAVE layout), exactly as many bytes as the kernel gives.
    pub fn xstate(&self) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; XSTATE_MAX];
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // SAFETY: PTRACE_GETREGSET writes at most `iov_len` bytes into `buf` (alive across
        // the call) and stores the length it wrote back into `iov`.
        let rc = unsafe { libc::ptrace(libc::PTRACE_GETREGSET, self.tid, NT_X86_XSTATE, &mut iov as *mut libc::iovec) };
        if rc < 0 {
            return Err(self.err("PTRACE_GETREGSET(NT_X86_XSTATE)", Errno::last()));
        }
        buf.truncate(iov.iov_len);
        Ok(buf)
    }

    pub fn set_xstate(&self, state: &[u8]) -> Result<()> {
        self.modified.set(true);
        let mut iov = libc::iovec { iov_base: state.as_ptr() as *mut libc::c_void, iov_len: state.len() };
        // SAFETY: PTRACE_SETREGSET only reads `iov_len` bytes from `state`, alive across the call.
        let rc = unsafe { libc::ptrace(libc::PTRACE_SETREGSET, self.tid, NT_X86_XSTATE, &mut iov as *mut libc::iovec) };
        if rc < 0 {
            return Err(self.err("PTRACE_SETREGSET(NT_X86_XSTATE)", Errno::last()));
        }
        Ok(())
    }

    pub fn sigmask(&self) -> Result<u64> {
        let mut mask = 0u64;
        // SAFETY: PTRACE_GETSIGMASK writes `data` = 8 bytes (the size passed in `addr`)
        // into `mask`, which lives across the call.
        let rc = unsafe { libc::ptrace(PTRACE_GETSIGMASK, self.tid, 8usize, &mut mask as *mut u64) };
        if rc < 0 {
            return Err(self.err("PTRACE_GETSIGMASK", Errno::last()));
        }
        Ok(mask)
    }

    pub fn set_sigmask(&self, mask: u64) -> Result<()> {
        self.modified.set(true);
        // SAFETY: PTRACE_SETSIGMASK reads 8 bytes from `mask`, which lives across the call.
        let rc = unsafe { libc::ptrace(PTRACE_SETSIGMASK, self.tid, 8usize, &mask as *const u64) };
        if rc < 0 {
            return Err(self.err("PTRACE_SETSIGMASK", Errno::last()));
        }
        Ok(())
    }

    /// Let a thread in a signal-delivery-stop go on and deliver that signal.
    pub fn resume_with(&self, sig: i32) -> Result<()> {
        // SAFETY: PTRACE_CONT takes the signal to deliver as `data`, a plain integer.
        let rc = unsafe { libc::ptrace(libc::PTRACE_CONT, self.tid, 0usize, sig as usize) };
        if rc < 0 {
            return Err(self.err("PTRACE_CONT", Errno::last()));
        }
        Ok(())
    }

    /// Let the stopped thread run (no signal injected).
    pub fn resume(&self) -> Result<()> {
        ptrace::cont(Pid::from_raw(self.tid), None).map_err(|e| self.err("PTRACE_CONT", e))
    }

    /// Wait for the next stop, up to `timeout` (forever with `None`). Polls for a few
    /// microseconds (our interrupts stop a thread that fast), then waits for the
    /// `SIGCHLD` the kernel sends the tracer when a tracee stops (see
    /// [`hold_child_signals`]) between polls, at most [`POLL`] at a time: a stop is seen
    /// within microseconds of happening, with no busy loop.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<Stop> {
        let start = Instant::now();
        loop {
            // libc's waitpid, not nix's: nix cannot represent real-time signals and turns
            // a stop for one into EINVAL.
            let mut status = 0;
            // SAFETY: waitpid writes the status into `status`, which outlives the call.
            let rc = unsafe { libc::waitpid(self.tid, &mut status, libc::__WALL | libc::WNOHANG) };
            if rc < 0 {
                match Errno::last() {
                    Errno::EINTR => {}
                    Errno::ECHILD => return Ok(Stop::Gone),
                    e => return Err(self.err("waitpid", e)),
                }
            } else if rc > 0 {
                if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                    return Ok(Stop::Gone);
                }
                if libc::WIFSTOPPED(status) {
                    // A PTRACE_EVENT_* stop has the event in bits 16..24 of the status.
                    return Ok(if status >> 16 != 0 { Stop::Event } else { Stop::Signal(libc::WSTOPSIG(status)) });
                }
            }
            let waited = start.elapsed();
            if timeout.is_some_and(|t| waited > t) {
                return Err(TriggerError::Target {
                    pid: self.pid,
                    what: format!("thread {} did not stop within {:?}", self.tid, timeout.unwrap()),
                });
            }
            if waited < SPIN {
                std::thread::yield_now();
            } else {
                wait_child_signal(POLL);
            }
        }
    }

    /// Stop the running thread (it was resumed by us): `PTRACE_INTERRUPT`.
    pub fn interrupt(&self) -> Result<()> {
        ptrace::interrupt(Pid::from_raw(self.tid)).map_err(|e| self.err("PTRACE_INTERRUPT", e))
    }

    /// The address of the fault that stopped the thread (`si_addr` of its signal), 0 if unknown.
    pub fn fault_address(&self) -> u64 {
        let mut info: libc::siginfo_t = unsafe_zeroed_siginfo();
        // SAFETY: PTRACE_GETSIGINFO writes a siginfo_t into `info`, alive across the call.
        let rc = unsafe { libc::ptrace(libc::PTRACE_GETSIGINFO, self.tid, 0usize, &mut info as *mut libc::siginfo_t) };
        if rc < 0 {
            return 0;
        }
        // SAFETY: for the fault signals si_addr is the valid member of the union.
        unsafe { info.si_addr() as u64 }
    }

    /// Put back the saved registers and signal mask and let the thread go, re-raising
    /// the signals that arrived before we stopped it.
    pub fn release(mut self) -> Result<()> {
        self.restore_and_detach()
    }

    fn restore_and_detach(&mut self) -> Result<()> {
        if self.detached {
            return Ok(());
        }
        self.detached = true;
        let (r1, r2) = if self.modified.get() {
            // Only threads stopped with `stop` (which saves everything) are ever modified.
            // Order matters should this tool be killed in between: the mask and vector
            // state first (a thread still at the hijack stub's stop returns through its
            // signal frame, which restores them anyway), the general registers last, so
            // that no moment leaves the thread at its own code with our signal mask.
            let mask = self.set_sigmask(self.saved_mask);
            let xstate = if self.saved_xstate.is_empty() { Ok(()) } else { self.set_xstate(&self.saved_xstate) };
            (mask.and(xstate), self.set_regs(&self.saved_regs))
        } else {
            (Ok(()), Ok(()))
        };
        // The first pending signal is delivered by the detach itself, the others by tgkill.
        let first = self.pending.first().copied().unwrap_or(0);
        // SAFETY: PTRACE_DETACH takes the signal to deliver as `data`, a plain integer.
        let rc = unsafe { libc::ptrace(libc::PTRACE_DETACH, self.tid, 0usize, first as usize) };
        let r3 = if rc < 0 { Err(self.err("PTRACE_DETACH", Errno::last())) } else { Ok(()) };
        for sig in self.pending.iter().skip(1) {
            // SAFETY: tgkill takes plain integers.
            unsafe { libc::syscall(libc::SYS_tgkill, self.pid, self.tid, *sig) };
        }
        r1.and(r2).and(r3)
    }
}

impl Drop for Tracee {
    fn drop(&mut self) {
        let _ = self.restore_and_detach();
    }
}

fn unsafe_zeroed_siginfo() -> libc::siginfo_t {
    // SAFETY: siginfo_t is plain data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

/// Whether this tool may trace with `PTRACE_O_SUSPEND_SECCOMP`: the kernel asks for
/// `CAP_SYS_ADMIN` (bit 21 of `CapEff`).
pub fn may_suspend_seccomp() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    let Ok(status) = crate::inject::process::read_proc_file("/proc/self/status") else { return false };
    hex_field(&status, "CapEff:").is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
}

/// A hexadecimal field of a `/proc/.../status` file (`SigBlk:`, `CapEff:`, ...).
fn hex_field(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// Whether SIGTRAP is pending for the thread (it has just run an `int3` and is stopped
/// before its handler runs).
pub fn sigtrap_pending(pid: i32, tid: i32) -> bool {
    let Ok(status) = crate::inject::process::read_proc_file(format!("/proc/{pid}/task/{tid}/status")) else {
        return false;
    };
    let bit = 1u64 << (libc::SIGTRAP - 1);
    hex_field(&status, "SigPnd:").unwrap_or(0) & bit != 0
}

/// Whether a signal the thread does not block is pending for it (or for its process).
pub fn signal_pending(pid: i32, tid: i32) -> bool {
    let Ok(status) = crate::inject::process::read_proc_file(format!("/proc/{pid}/task/{tid}/status")) else {
        return true;
    };
    let field = |name: &str| hex_field(&status, name).unwrap_or(0);
    (field("SigPnd:") | field("ShdPnd:")) & !field("SigBlk:") != 0
}

fn zero_regs() -> Regs {
    // SAFETY: user_regs_struct is plain integers; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}
