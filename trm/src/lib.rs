//! The x86-64 assembly of libpulp-rs (see `trm/README.md` for the stack of each routine):
//!
//! - `asm/hijack.S`: `pulp_rs_call_stub`, where a thread hijacked by `pulp-trigger` runs
//!   a runtime entry point and stops on `int3`;
//! - `asm/dispatch.S`: the descriptor table word 0 of which every redirected function
//!   jumps through, the per-thread `cleared` word (initial-exec TLS), the transition id,
//!   and the dispatch trampoline with its per-descriptor stubs.
//!
//! All symbols are hidden: the runtime publishes their addresses in `pulp_rs_info`.

use pulp_meta::abi::Descriptor;
use std::sync::atomic::AtomicU64;

core::arch::global_asm!(include_str!("../asm/hijack.S"), options(att_syntax));
core::arch::global_asm!(include_str!("../asm/dispatch.S"), options(att_syntax));

/// Number of descriptors (`PULP_RS_DESC_COUNT` in `dispatch.S`).
pub const DESC_COUNT: usize = 8192;
/// Bytes between two per-descriptor stubs.
pub const DESC_STUB_SIZE: usize = 16;

const _: () = assert!(core::mem::size_of::<Descriptor>() == 32, "dispatch.S assumes 32-byte descriptors");

// Public so that the runtime can put their addresses into its exported, constant
// `pulp_rs_info`. None of them is to be called from Rust except through the wrappers below.
extern "C" {
    pub static pulp_rs_descs: [Descriptor; DESC_COUNT];
    pub static pulp_rs_transition: AtomicU64;
    pub fn pulp_rs_call_stub();
    pub fn pulp_rs_dispatch();
    pub fn pulp_rs_desc_stubs();
    fn pulp_rs_cleared_tpoff() -> isize;
}

/// The descriptor table.
pub fn descriptors() -> &'static [Descriptor; DESC_COUNT] {
    // SAFETY: `pulp_rs_descs` is a zero-initialised, 64-byte aligned array of
    // DESC_COUNT 32-byte descriptors in .bss that lives as long as the object; every
    // field is an atomic, so shared references are sound.
    unsafe { &*core::ptr::addr_of!(pulp_rs_descs) }
}

/// The id of the transition in progress (0: none).
pub fn transition() -> &'static AtomicU64 {
    // SAFETY: an 8-byte aligned, zero-initialised word in .bss defined in dispatch.S.
    unsafe { &*core::ptr::addr_of!(pulp_rs_transition) }
}

/// Address of the hijack stub (`nop; nop; call *%rax; int3`).
pub fn call_stub() -> usize {
    pulp_rs_call_stub as *const () as usize
}

/// Address of the dispatch trampoline.
pub fn dispatch() -> usize {
    pulp_rs_dispatch as *const () as usize
}

/// Address of descriptor `index`'s dispatch stub.
pub fn desc_stub(index: usize) -> usize {
    assert!(index < DESC_COUNT);
    pulp_rs_desc_stubs as *const () as usize + index * DESC_STUB_SIZE
}

/// Offset of the `cleared` TLS word from the thread pointer.
pub fn cleared_tpoff() -> isize {
    // SAFETY: an assembly routine with no arguments and no side effects that returns
    // the TPOFF64 value the dynamic linker filled in for `pulp_rs_cleared`.
    unsafe { pulp_rs_cleared_tpoff() }
}
