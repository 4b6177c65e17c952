//! Universes: the state of the running transition that threads read without locks.
//!
//! The transition id, the goal and each thread's `cleared` word live in `trm/`. Here:
//! the executable ranges that count as "inside" (targets and patch objects), the gate
//! slow path (`gate_clear`), `pulp_quiescent()`, and the log of threads that moved
//! themselves, which the tools read to learn their thread pointers.

use pulp_meta::abi::Descriptor;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Ranges (`[start, end)`) a frame must not be in for its thread to move.
const MAX_RANGES: usize = 256;
static RANGES: [[AtomicU64; 2]; MAX_RANGES] = [const { [AtomicU64::new(0), AtomicU64::new(0)] }; MAX_RANGES];
static RANGE_COUNT: AtomicUsize = AtomicUsize::new(0);

/// Capacity of each thread log.
pub const LOG_CAP: usize = 16384;

/// `(tid, fs_base)` of threads, laid out as `pulp_meta::abi::ThreadLog`.
#[repr(C)]
pub struct ThreadLog {
    count: AtomicU64,
    entries: [[AtomicU64; 2]; LOG_CAP],
}

impl ThreadLog {
    const fn new() -> Self {
        Self { count: AtomicU64::new(0), entries: [const { [AtomicU64::new(0), AtomicU64::new(0)] }; LOG_CAP] }
    }

    fn push(&self, tid: u64, fs_base: u64) {
        let i = self.count.fetch_add(1, Ordering::Relaxed) as usize;
        if let Some(e) = self.entries.get(i) {
            e[1].store(fs_base, Ordering::Relaxed);
            e[0].store(tid, Ordering::Release);
        }
    }

    /// Empty the log. Only the entries used so far are wiped (a reader must never pair
    /// a stale thread id with a new thread pointer), so this costs nothing when few
    /// threads were logged.
    fn clear(&self) {
        let used = (self.count.swap(0, Ordering::AcqRel) as usize).min(LOG_CAP);
        for e in &self.entries[..used] {
            e[0].store(0, Ordering::Relaxed);
            e[1].store(0, Ordering::Relaxed);
        }
    }
}

/// Threads that moved themselves (gates, `pulp_quiescent`).
pub static GATE_LOG: ThreadLog = ThreadLog::new();
/// Threads the tools sampled; written by the tools only.
pub static TOOL_LOG: ThreadLog = ThreadLog::new();

/// For the tools: `[tpoff, address of the initial value]` of the `cleared` word, so
/// they can read and set any thread's word, and the one new threads start with.
pub static CLEARED_OFFSETS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// Set what counts as inside, and empty the logs, before a transition starts
/// (`immediate`: one that switches every thread at once, with no gate).
pub fn prepare(ranges: &[(u64, u64)], immediate: bool) -> Result<(), String> {
    // The trampolines of unpadded functions count as inside too: their copies are the
    // original code of target functions.
    let mut ranges = ranges.to_vec();
    ranges.extend(crate::trampoline::regions());
    let ranges = &ranges[..];
    if ranges.len() > MAX_RANGES {
        return Err(format!(
            "the targets and patch objects have {} code ranges, the runtime tracks {MAX_RANGES}",
            ranges.len()
        ));
    }
    for (slot, (s, e)) in RANGES.iter().zip(ranges) {
        slot[0].store(*s, Ordering::Relaxed);
        slot[1].store(*e, Ordering::Relaxed);
    }
    RANGE_COUNT.store(ranges.len(), Ordering::Release);
    GATE_LOG.clear();
    TOOL_LOG.clear();
    // Only gates save the extended state, and an immediate switch has none.
    if !immediate {
        let size =
            xsave_size().ok_or("this CPU has no XSAVE: transitions are not supported (mark the patch immediate)")?;
        pulp_trm::xsave_size().store(size, Ordering::Relaxed);
    }
    pulp_trm::set_gate_hook(gate_clear);
    let (tpoff, dtpoff) = pulp_trm::cleared_offsets();
    let image = crate::loader::own_tls_image().ok_or("cannot find the runtime's own TLS image")?;
    CLEARED_OFFSETS[0].store(tpoff as u64, Ordering::Relaxed);
    CLEARED_OFFSETS[1].store(image.wrapping_add(dtpoff as u64), Ordering::Relaxed);
    Ok(())
}

/// Bytes of the XSAVE area for the features the OS enabled (CPUID leaf 0xD, EBX),
/// asked once (CPUID traps to the hypervisor in a virtual machine).
fn xsave_size() -> Option<u64> {
    static SIZE: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *SIZE.get_or_init(cpuid_xsave_size)
}

fn cpuid_xsave_size() -> Option<u64> {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    // CPUID leaf 1 ECX bit 27 (OSXSAVE) tells whether leaf 0xD is meaningful.
    if __cpuid(1).ecx & (1 << 27) == 0 {
        return None;
    }
    let size = __cpuid_count(0xd, 0).ebx as u64;
    (size >= 576).then_some(size)
}

fn inside(addr: u64) -> bool {
    let n = RANGE_COUNT.load(Ordering::Acquire);
    RANGES[..n].iter().any(|r| (r[0].load(Ordering::Relaxed)..r[1].load(Ordering::Relaxed)).contains(&addr))
}

/// Move the calling thread to where the transition goes and log it.
fn move_self(id: u64) {
    let to = if pulp_trm::goal().load(Ordering::Acquire) == 1 { id } else { 0 };
    pulp_trm::set_cleared(to);
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u64;
    GATE_LOG.push(tid, pulp_trm::thread_pointer() as u64);
}

#[repr(C)]
struct UnwindContext {
    _opaque: [u8; 0],
}

const URC_NO_REASON: libc::c_int = 0;
const URC_NORMAL_STOP: libc::c_int = 4;
const URC_END_OF_STACK: libc::c_int = 5;

extern "C" {
    fn _Unwind_Backtrace(
        trace: extern "C" fn(*mut UnwindContext, *mut libc::c_void) -> libc::c_int,
        arg: *mut libc::c_void,
    ) -> libc::c_int;
    fn _Unwind_GetIP(ctx: *mut UnwindContext) -> usize;
}

struct Walk {
    inside: bool,
    frames: usize,
}

extern "C" fn visit(ctx: *mut UnwindContext, arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `&mut Walk` passed to _Unwind_Backtrace below, `ctx` is the
    // unwinder's live context for this frame.
    let (walk, ip) = unsafe { (&mut *(arg as *mut Walk), _Unwind_GetIP(ctx) as u64) };
    walk.frames += 1;
    // Return addresses point after the call: the call itself is at ip - 1.
    if inside(ip) || inside(ip.wrapping_sub(1)) {
        walk.inside = true;
        return URC_NORMAL_STOP;
    }
    if walk.frames > 4096 {
        return URC_NORMAL_STOP;
    }
    URC_NO_REASON
}

/// The gate slow path (called by `pulp_rs_gate_slow` in `trm/`): a thread not yet
/// moved enters an exported function of a target. It moves itself when it came from
/// outside and none of its frames is inside a target or patch object. A stack that
/// cannot be walked to its end counts as inside: never move on a guess.
extern "C" fn gate_clear(_desc: *const Descriptor, return_address: usize) {
    let id = pulp_trm::transition().load(Ordering::Acquire);
    // Not armed: some entry of the patch may not be redirected yet; nobody moves.
    if id == 0 || pulp_trm::armed().load(Ordering::Acquire) == 0 || inside(return_address as u64) {
        return;
    }
    let mut walk = Walk { inside: false, frames: 0 };
    // SAFETY: `visit` only touches `walk`, which outlives the call. _Unwind_Backtrace
    // finds unwind tables through _dl_find_object (glibc >= 2.35), taking no loader lock.
    let reason = unsafe { _Unwind_Backtrace(visit, &mut walk as *mut Walk as *mut libc::c_void) };
    if reason == URC_END_OF_STACK && !walk.inside {
        move_self(id);
    }
}

/// For library code that never returns (a worker loop inside a target): declare the
/// calling thread at a safe point, so a transition does not wait for it. Costs one
/// load and a branch when no transition runs. See `pulp.h`.
#[no_mangle]
pub extern "C" fn pulp_quiescent() {
    let id = pulp_trm::transition().load(Ordering::Acquire);
    if id != 0 && pulp_trm::armed().load(Ordering::Acquire) != 0 {
        move_self(id);
    }
}
