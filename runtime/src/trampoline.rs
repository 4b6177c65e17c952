//! Trampolines of unpadded functions: regions of slots within ±1 GiB of their functions
//! (so the entry's `jmp rel32` reaches), and the SIGTRAP handler that sends a thread
//! caught on the `int3` the tool writes first to its function's slot.
//!
//! A slot ([`SLOT_SIZE`] bytes) is `movabs $desc, %r11; jmp *(%r11)` (jump through word 0
//! of the descriptor, which is the dispatch stub during a transition, the top version,
//! or the relocated copy) followed by the copy of the overwritten instructions and a jump
//! back: the function's original body. The runtime only maps the regions (read and
//! execute, never writable) and hands out slots; `pulp-trigger` writes their bytes
//! through `/proc/PID/mem`, as it writes every entry. Regions are never unmapped: a
//! thread may be inside a copy (a displaced call returns into it).

use pulp_meta::abi::MAX_TRAMPOLINE_REGIONS;
use pulp_meta::prologue::SLOT_SIZE;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of one region.
const REGION: u64 = 128 << 10;
/// How far from its functions a region may be (the `jmp rel32` reaches ±2 GiB).
const REACH: u64 = 1 << 30;

/// `u64` count, then `(start, end)` pairs: what `RuntimeInfo::trampolines` names.
#[repr(C)]
pub struct Regions {
    pub count: AtomicU64,
    pub ranges: [[AtomicU64; 2]; MAX_TRAMPOLINE_REGIONS],
}

pub static REGIONS: Regions = Regions {
    count: AtomicU64::new(0),
    ranges: [const { [AtomicU64::new(0), AtomicU64::new(0)] }; MAX_TRAMPOLINE_REGIONS],
};

/// Bytes handed out in each region.
static USED: [AtomicU64; MAX_TRAMPOLINE_REGIONS] = [const { AtomicU64::new(0) }; MAX_TRAMPOLINE_REGIONS];

/// The regions mapped so far, `[start, end)`.
pub fn regions() -> Vec<(u64, u64)> {
    let n = REGIONS.count.load(Ordering::Acquire) as usize;
    REGIONS.ranges[..n].iter().map(|r| (r[0].load(Ordering::Relaxed), r[1].load(Ordering::Relaxed))).collect()
}

fn near(a: u64, b: u64) -> bool {
    a.abs_diff(b) < REACH
}

/// A fresh slot within reach of `entry`, mapping a region if none has room. Called with
/// the registry held (one entry at a time).
pub fn alloc_slot(entry: u64) -> Result<u64, String> {
    let n = REGIONS.count.load(Ordering::Acquire) as usize;
    for (range, used_bytes) in REGIONS.ranges[..n].iter().zip(&USED) {
        let start = range[0].load(Ordering::Relaxed);
        let used = used_bytes.load(Ordering::Relaxed);
        if used + SLOT_SIZE <= REGION && near(start, entry) && near(start + REGION, entry) {
            used_bytes.store(used + SLOT_SIZE, Ordering::Relaxed);
            return Ok(start + used);
        }
    }
    if n == MAX_TRAMPOLINE_REGIONS {
        return Err(format!("no room for another trampoline region ({MAX_TRAMPOLINE_REGIONS} are mapped)"));
    }
    let start = map_near(entry).ok_or_else(|| format!("cannot map a trampoline region within 1 GiB of {entry:#x}"))?;
    REGIONS.ranges[n][0].store(start, Ordering::Relaxed);
    REGIONS.ranges[n][1].store(start + REGION, Ordering::Relaxed);
    USED[n].store(SLOT_SIZE, Ordering::Relaxed);
    REGIONS.count.store(n as u64 + 1, Ordering::Release);
    Ok(start)
}

/// Map a read-execute region within reach of `entry`: try hints below and above it,
/// 16 MiB apart, keeping only a mapping the kernel put where asked.
fn map_near(entry: u64) -> Option<u64> {
    const STEP: u64 = 16 << 20;
    let base = entry & !(REGION - 1);
    for k in 1..(REACH / STEP - 1) {
        for hint in [base.checked_sub(k * STEP), base.checked_add(k * STEP)].into_iter().flatten() {
            if !(0x10000..0x7fff_ffff_0000).contains(&hint) {
                continue;
            }
            // SAFETY: a new anonymous mapping; MAP_FIXED_NOREPLACE never replaces one.
            let p = unsafe {
                libc::mmap(
                    hint as *mut libc::c_void,
                    REGION as usize,
                    libc::PROT_READ | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                continue;
            }
            let at = p as u64;
            if near(at, entry) && near(at + REGION, entry) {
                return Some(at);
            }
            // SAFETY: the mapping just made, not handed out.
            unsafe { libc::munmap(p, REGION as usize) };
        }
    }
    None
}

/// Where threads caught on our `int3`s go: how many entries may be in use, then per
/// descriptor index the address of the `int3` the tool writes (the first overwritten
/// byte) and the slot (0: none). `RuntimeInfo::traps` names it: the tool sends a thread
/// it borrowed that stops there the same way.
#[repr(C)]
pub struct Traps {
    pub count: AtomicU64,
    pub entries: [[AtomicU64; 2]; pulp_trm::DESC_COUNT],
}

pub static TRAPS: Traps = Traps {
    count: AtomicU64::new(0),
    entries: [const { [AtomicU64::new(0), AtomicU64::new(0)] }; pulp_trm::DESC_COUNT],
};

/// Record that a thread trapping at `at` (descriptor `d`'s first overwritten byte) goes
/// to `slot`.
pub fn set_trap(d: usize, at: u64, slot: u64) {
    TRAPS.entries[d][1].store(slot, Ordering::Relaxed);
    TRAPS.entries[d][0].store(at, Ordering::Release);
    TRAPS.count.fetch_max(d as u64 + 1, Ordering::AcqRel);
}

/// The program's own SIGTRAP action, which ours chains to.
struct Chained(std::cell::UnsafeCell<libc::sigaction>);
// SAFETY: written only by `install`, with the registry held, before our handler is
// installed over it (`sigaction` orders the two); read by the handler.
unsafe impl Sync for Chained {}
static PREVIOUS: Chained = Chained(std::cell::UnsafeCell::new(unsafe_zeroed()));

const fn unsafe_zeroed() -> libc::sigaction {
    // SAFETY: sigaction is plain data; all-zero is SIG_DFL with an empty mask.
    unsafe { std::mem::MaybeUninit::zeroed().assume_init() }
}

/// Make sure our SIGTRAP handler is installed, chaining to whatever the program installed
/// since (checked at every request with unpadded functions).
pub fn install() -> Result<(), String> {
    let mut now = unsafe_zeroed();
    // SAFETY: reads the current action into `now`.
    if unsafe { libc::sigaction(libc::SIGTRAP, std::ptr::null(), &mut now) } != 0 {
        return Err("cannot read the SIGTRAP action".into());
    }
    if now.sa_sigaction == on_trap as *const () as usize {
        return Ok(());
    }
    // SAFETY: our handler is not installed, so nothing reads PREVIOUS now.
    unsafe { *PREVIOUS.0.get() = now };
    let mut ours = unsafe_zeroed();
    ours.sa_sigaction = on_trap as *const () as usize;
    // SA_NODEFER: SIGTRAP stays unblocked while ours runs, so that a thread inside it is
    // never mistaken by the tool for one that blocks SIGTRAP (which an int3 would kill);
    // the program's handler gets its own mask when we chain to it.
    ours.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART | libc::SA_NODEFER;
    // SAFETY: installs a handler that is async-signal-safe (atomics and the ucontext).
    if unsafe { libc::sigaction(libc::SIGTRAP, &ours, std::ptr::null_mut()) } != 0 {
        return Err("cannot install the SIGTRAP handler".into());
    }
    Ok(())
}

/// SIGTRAP: a thread that ran one of our `int3`s (its rip is just after it) goes to the
/// slot; any other trap goes to the program's own action.
extern "C" fn on_trap(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let uc = ctx as *mut libc::ucontext_t;
    if !uc.is_null() {
        // SAFETY: the kernel passes a valid ucontext to an SA_SIGINFO handler.
        let rip = unsafe { &mut (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] };
        let at = (*rip as u64).wrapping_sub(1);
        let n = TRAPS.count.load(Ordering::Acquire) as usize;
        for t in &TRAPS.entries[..n.min(TRAPS.entries.len())] {
            if t[0].load(Ordering::Acquire) == at {
                *rip = t[1].load(Ordering::Relaxed) as i64;
                return;
            }
        }
    }
    // SAFETY: PREVIOUS was set before our handler was installed and is not changed while
    // it is.
    let prev = unsafe { &*PREVIOUS.0.get() };
    // The mask the kernel would have given the program's handler: its sa_mask, and
    // SIGTRAP itself unless it asked for SA_NODEFER.
    let mut mask = prev.sa_mask;
    let mut old = unsafe_zeroed().sa_mask;
    // SAFETY: sigaddset and pthread_sigmask on local sets; both async-signal-safe.
    unsafe {
        if prev.sa_flags & libc::SA_NODEFER == 0 {
            libc::sigaddset(&mut mask, libc::SIGTRAP);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &mask, &mut old);
    }
    chain(prev, sig, info, ctx);
    // SAFETY: back to the mask this handler started with (sigreturn restores the
    // interrupted code's own anyway).
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
}

/// Hand a SIGTRAP that is not ours to the program's action `prev`.
fn chain(prev: &libc::sigaction, sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    match prev.sa_sigaction {
        libc::SIG_IGN => {}
        libc::SIG_DFL => {
            // SAFETY: restore the default action and raise again: delivered (terminating
            // with a core) once this handler returns, as without us.
            unsafe {
                let dfl = unsafe_zeroed();
                libc::sigaction(libc::SIGTRAP, &dfl, std::ptr::null_mut());
                libc::raise(libc::SIGTRAP);
            }
        }
        f if prev.sa_flags & libc::SA_SIGINFO != 0 => {
            // SAFETY: the program's SA_SIGINFO handler, called as the kernel would.
            let h: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(f) };
            h(sig, info, ctx)
        }
        f => {
            // SAFETY: the program's plain handler.
            let h: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(f) };
            h(sig)
        }
    }
}
