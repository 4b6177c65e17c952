//! The x86-64 assembly of libpulp-rs (see `trm/README.md` for the stack of each routine):
//!
//! - `asm/hijack.S`: `pulp_rs_call_stub`, where a thread hijacked by `pulp-trigger` claims
//!   the runtime's entry stack, runs a runtime entry point on it and stops (SIGWINCH);
//! - `asm/guard.S`: guarded calls of foreign code (a patch's constructors, its callbacks),
//!   which `pulp-trigger` can abandon through `pulp_rs_recover` when they fault or hang;
//! - `asm/dispatch.S`: the descriptor table word 0 of which every redirected function
//!   jumps through, the transition state (id, goal, the per-thread `cleared` word in
//!   initial-exec TLS), the dispatch trampoline, the gate slow path and the
//!   per-descriptor stubs (dispatch and far);
//! - `asm/fentry.S`: `__fentry__`, which redirects `-pg -mfentry` functions by looking
//!   up their return address in a table of descriptors.
//!
//! All symbols are hidden: the runtime publishes their addresses in `pulp_rs_info`.

pub mod fentry;

use pulp_meta::abi::Descriptor;
use std::sync::atomic::{AtomicU64, AtomicUsize};

core::arch::global_asm!(include_str!("../asm/hijack.S"), options(att_syntax));
core::arch::global_asm!(include_str!("../asm/guard.S"), options(att_syntax));
core::arch::global_asm!(include_str!("../asm/dispatch.S"), options(att_syntax));
core::arch::global_asm!(include_str!("../asm/fentry.S"), options(att_syntax));

/// Number of descriptors (`PULP_RS_DESC_COUNT` in `dispatch.S`).
pub const DESC_COUNT: usize = 8192;
/// Bytes between two per-descriptor stubs.
pub const DESC_STUB_SIZE: usize = 16;
/// Slots of the `__fentry__` table (`FENTRY_SLOTS` in `fentry.S`).
pub const FENTRY_SLOTS: usize = 16384;

const _: () = assert!(core::mem::size_of::<Descriptor>() == 128, "dispatch.S assumes 128-byte descriptors");

/// The gate slow path's callback: `(descriptor, caller's return address)`.
pub type GateHook = extern "C" fn(*const Descriptor, usize);

// Public so that the runtime can put their addresses into its exported, constant
// `pulp_rs_info`. None of them is to be called from Rust except through the wrappers below.
extern "C" {
    pub static pulp_rs_descs: [Descriptor; DESC_COUNT];
    pub static pulp_rs_transition: AtomicU64;
    pub static pulp_rs_goal: AtomicU64;
    pub static pulp_rs_armed: AtomicU64;
    pub static pulp_rs_entry_owner: AtomicU64;
    pub static pulp_rs_entry_stack_top: AtomicU64;
    pub static pulp_rs_guard_depth: AtomicU64;
    pub static pulp_rs_guard_fault: [AtomicU64; 2];
    pub fn pulp_rs_recover();
    fn pulp_rs_guarded_call(f: extern "C" fn(*mut core::ffi::c_void) -> i64, arg: *mut core::ffi::c_void) -> i64;
    pub static pulp_rs_xsave_size: AtomicU64;
    pub static pulp_rs_gate_hook: AtomicUsize;
    static pulp_rs_cleared_dtpoff: i64;
    pub fn pulp_rs_call_stub();
    pub fn pulp_rs_call_stub_stop();
    pub fn pulp_rs_dispatch();
    pub fn pulp_rs_desc_stubs();
    pub fn pulp_rs_far_stubs();
    static pulp_rs_fentry_table: [[AtomicU64; 2]; FENTRY_SLOTS];
    static pulp_rs_fentry_active: AtomicU64;
    fn pulp_rs_cleared_get() -> u64;
    fn pulp_rs_cleared_set(v: u64);
    fn pulp_rs_thread_pointer() -> usize;
    fn pulp_rs_cleared_tpoff() -> i64;
}

/// Offset of the `cleared` word from the thread pointer (a thread's word is at its
/// `fs_base` + this), and from the start of this object's TLS image.
pub fn cleared_offsets() -> (i64, i64) {
    // SAFETY: an assembly routine without side effects returning the TPOFF the dynamic
    // linker resolved, and a constant word of .data.rel.ro.
    unsafe { (pulp_rs_cleared_tpoff(), core::ptr::addr_of!(pulp_rs_cleared_dtpoff).read()) }
}

/// The descriptor table.
pub fn descriptors() -> &'static [Descriptor; DESC_COUNT] {
    // SAFETY: `pulp_rs_descs` is a zero-initialised, 64-byte aligned array of
    // DESC_COUNT 128-byte descriptors in .bss that lives as long as the object; every
    // field is an atomic, so shared references are sound.
    unsafe { &*core::ptr::addr_of!(pulp_rs_descs) }
}

/// The id of the transition in progress (0: none).
pub fn transition() -> &'static AtomicU64 {
    // SAFETY: an 8-byte aligned, zero-initialised word in .bss defined in dispatch.S.
    unsafe { &*core::ptr::addr_of!(pulp_rs_transition) }
}

/// 1: the transition moves threads to `new`; 0: it moves them back to `prev`.
pub fn goal() -> &'static AtomicU64 {
    // SAFETY: as for `transition`.
    unsafe { &*core::ptr::addr_of!(pulp_rs_goal) }
}

/// 1 once every entry of the running transition is redirected (see `dispatch.S`).
pub fn armed() -> &'static AtomicU64 {
    // SAFETY: as for `transition`.
    unsafe { &*core::ptr::addr_of!(pulp_rs_armed) }
}

/// Thread id of the thread running an entry (0: none): the entry stack's claim, which is
/// also the runtime's registry lock (see `hijack.S`).
pub fn entry_owner() -> &'static AtomicU64 {
    // SAFETY: as for `transition` (defined in hijack.S).
    unsafe { &*core::ptr::addr_of!(pulp_rs_entry_owner) }
}

/// Top of the stack entries run on (0 until the runtime maps it).
pub fn entry_stack_top() -> &'static AtomicU64 {
    // SAFETY: as for `transition` (defined in hijack.S).
    unsafe { &*core::ptr::addr_of!(pulp_rs_entry_stack_top) }
}

/// What `pulp_rs_guarded_call` returns when the tool abandoned the call.
pub const RECOVERED: i64 = -3;

/// Why a guarded call was abandoned: the signal that stopped the thread (0: it did not
/// return in time) and the fault address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Abandoned {
    pub signal: i32,
    pub address: u64,
}

/// Call `f` so that, should it fault or hang while `pulp-trigger` holds the thread, the
/// tool can abandon it (`pulp_rs_recover`) and this returns `Err` instead of the process
/// dying. Whatever `f` held when abandoned (locks, memory) is the caller's to release,
/// and `f` is leaked: it must be a thin call of foreign code (no destructors of its own
/// to skip).
pub fn guarded<F: FnOnce() -> R, R>(f: F) -> Result<R, Abandoned> {
    struct Call<F, R> {
        f: Option<F>,
        result: Option<R>,
    }
    extern "C" fn run<F: FnOnce() -> R, R>(arg: *mut core::ffi::c_void) -> i64 {
        // SAFETY: `arg` is the `&mut Call` below, alive across the guarded call.
        let call = unsafe { &mut *(arg as *mut Call<F, R>) };
        // A panic must not unwind through the assembly frame: it is caught here, and the
        // caller sees no result.
        let f = call.f.take();
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.map(|f| f())));
        call.result = out.ok().flatten();
        0
    }
    let mut call = Call { f: Some(f), result: None };
    // SAFETY: `run::<F, R>` matches the callback type and receives `&mut call`, which
    // outlives the call; the assembly preserves every callee-saved register.
    let rc = unsafe { pulp_rs_guarded_call(run::<F, R>, &mut call as *mut Call<F, R> as *mut core::ffi::c_void) };
    if rc == RECOVERED {
        // SAFETY: a plain read of words the recovery wrote before returning here.
        let fault = unsafe { &*core::ptr::addr_of!(pulp_rs_guard_fault) };
        let (signal, address) =
            (fault[0].load(std::sync::atomic::Ordering::Relaxed), fault[1].load(std::sync::atomic::Ordering::Relaxed));
        // The closure was abandoned mid-call: forget it rather than drop what it may
        // have half-moved.
        std::mem::forget(call);
        return Err(Abandoned { signal: signal as i32, address });
    }
    // `signal: -1`: the call panicked (it was caught above).
    call.result.ok_or(Abandoned { signal: -1, address: 0 })
}

/// Bytes the gate slow path reserves for XSAVE; must be set before a transition.
pub fn xsave_size() -> &'static AtomicU64 {
    // SAFETY: as for `transition`.
    unsafe { &*core::ptr::addr_of!(pulp_rs_xsave_size) }
}

/// Install the gate slow path's callback.
pub fn set_gate_hook(hook: GateHook) {
    // SAFETY: as for `transition`; the assembly calls through this word.
    unsafe { &*core::ptr::addr_of!(pulp_rs_gate_hook) }.store(hook as usize, std::sync::atomic::Ordering::Release);
}

/// Address of the hijack stub (`nop; nop; call *%rax; int3`).
pub fn call_stub() -> usize {
    pulp_rs_call_stub as *const () as usize
}

/// Address of the dispatch stub of descriptor `index` for transitions of `parity`
/// (it hands the dispatcher that view of the descriptor).
pub fn desc_stub(index: usize, parity: u64) -> usize {
    assert!(index < DESC_COUNT);
    pulp_rs_desc_stubs as *const () as usize + (2 * index + (parity & 1) as usize) * DESC_STUB_SIZE
}

/// The calling thread's `cleared` word.
pub fn cleared() -> u64 {
    // SAFETY: reads this thread's initial-exec TLS word; no other effect.
    unsafe { pulp_rs_cleared_get() }
}

/// Set the calling thread's `cleared` word.
pub fn set_cleared(v: u64) {
    // SAFETY: writes this thread's own TLS word, which only this thread and a tool
    // (while this thread is stopped) access.
    unsafe { pulp_rs_cleared_set(v) }
}

/// The calling thread's thread pointer (its `fs_base`).
pub fn thread_pointer() -> usize {
    // SAFETY: reads the TCB self pointer at %fs:0, present in every glibc thread.
    unsafe { pulp_rs_thread_pointer() }
}

/// Address of the runtime's `__fentry__`.
pub fn fentry() -> usize {
    fentry::__fentry__ as *const () as usize
}

/// Make `__fentry__` send calls whose return address is `key` through `desc`. Returns
/// false when the table is half full (the limit that keeps every probe short).
/// Callers serialise (the runtime's registry lock); readers need no lock.
pub fn fentry_insert(key: u64, desc: u64) -> bool {
    use std::sync::atomic::Ordering;
    // SAFETY: a zero-initialised array of atomics in .bss defined in fentry.S.
    let table = unsafe { &*core::ptr::addr_of!(pulp_rs_fentry_table) };
    // SAFETY: as above.
    let active = unsafe { &*core::ptr::addr_of!(pulp_rs_fentry_active) };
    let used = table.iter().filter(|s| s[0].load(Ordering::Relaxed) != 0).count();
    // Same hash as fentry.S: Fibonacci hashing of the key's low 32 bits.
    let mut i = ((key as u32).wrapping_mul(0x9e37_79b1) >> 18) as usize;
    loop {
        let k = table[i][0].load(Ordering::Acquire);
        if k == key {
            table[i][1].store(desc, Ordering::Release);
            return true;
        }
        if k == 0 {
            if used >= FENTRY_SLOTS / 2 {
                return false;
            }
            table[i][1].store(desc, Ordering::Release);
            table[i][0].store(key, Ordering::Release);
            active.store(1, Ordering::Release);
            return true;
        }
        i = (i + 1) % FENTRY_SLOTS;
    }
}

/// Address of descriptor `index`'s far stub.
pub fn far_stub(index: usize) -> usize {
    assert!(index < DESC_COUNT);
    pulp_rs_far_stubs as *const () as usize + index * pulp_meta::abi::FAR_STUB_SIZE as usize
}
