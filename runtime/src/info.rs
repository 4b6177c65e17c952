//! `pulp_rs_info`: the fixed record through which the tools find the runtime's pieces.

use crate::entry;
use crate::status::{StatusArea, STATUS, STATUS_LEN};
use crate::transition::{ThreadLog, CLEARED_OFFSETS, GATE_LOG, LOG_CAP, TOOL_LOG};
use pulp_meta::abi::{self, Descriptor};
use std::sync::atomic::AtomicU64;

/// Mirror of [`abi::RuntimeInfo`] with pointers, so that it can be a constant the
/// dynamic linker relocates; the assertions below keep the two layouts identical.
#[repr(C)]
pub struct Info {
    magic: u64,
    version_and_desc_size: u64,
    descs: *const Descriptor,
    desc_count: u64,
    call_stub: *const (),
    entry_apply: *const (),
    entry_revert: *const (),
    entry_sync_core: *const (),
    buffer: *const u8,
    buffer_len: u64,
    entry_finish: *const (),
    entry_reverse: *const (),
    transition: *const AtomicU64,
    goal: *const AtomicU64,
    cleared_offsets: *const [AtomicU64; 2],
    status: *const StatusArea,
    status_len: u64,
    gate_log: *const ThreadLog,
    tool_log: *const ThreadLog,
    log_cap: u64,
    far_stubs: *const (),
    call_stub_stop: *const (),
}

// SAFETY: `Info` is immutable after relocation; its pointers are only addresses for the
// tools to read, never dereferenced through this struct.
unsafe impl Sync for Info {}

const _: () = {
    assert!(core::mem::size_of::<Info>() == abi::RuntimeInfo::SIZE);
    assert!(core::mem::offset_of!(Info, buffer_len) == core::mem::offset_of!(abi::RuntimeInfo, buffer_len));
    assert!(core::mem::offset_of!(Info, call_stub) == core::mem::offset_of!(abi::RuntimeInfo, call_stub));
    assert!(core::mem::offset_of!(Info, log_cap) == core::mem::offset_of!(abi::RuntimeInfo, log_cap));
    assert!(core::mem::size_of::<ThreadLog>() == abi::ThreadLog::size(LOG_CAP));
};

/// What the tools read; its name is [`abi::INFO_SYMBOL`].
#[no_mangle]
#[used]
pub static pulp_rs_info: Info = Info {
    magic: abi::INFO_MAGIC,
    version_and_desc_size: abi::ABI_VERSION as u64 | ((core::mem::size_of::<Descriptor>() as u64) << 32),
    // SAFETY (no unsafe needed): only the address of the extern static is taken.
    descs: core::ptr::addr_of!(pulp_trm::pulp_rs_descs) as *const Descriptor,
    desc_count: pulp_trm::DESC_COUNT as u64,
    call_stub: pulp_trm::pulp_rs_call_stub as *const (),
    entry_apply: entry::pulp_rs_entry_apply as *const (),
    entry_revert: entry::pulp_rs_entry_revert as *const (),
    entry_sync_core: entry::pulp_rs_entry_sync_core as *const (),
    buffer: entry::BUFFER.as_ptr(),
    buffer_len: entry::BUFFER_LEN as u64,
    entry_finish: entry::pulp_rs_entry_finish as *const (),
    entry_reverse: entry::pulp_rs_entry_reverse as *const (),
    transition: core::ptr::addr_of!(pulp_trm::pulp_rs_transition),
    goal: core::ptr::addr_of!(pulp_trm::pulp_rs_goal),
    cleared_offsets: &CLEARED_OFFSETS,
    status: &STATUS,
    status_len: STATUS_LEN as u64,
    gate_log: &GATE_LOG,
    tool_log: &TOOL_LOG,
    log_cap: LOG_CAP as u64,
    far_stubs: pulp_trm::pulp_rs_far_stubs as *const (),
    call_stub_stop: pulp_trm::pulp_rs_call_stub_stop as *const (),
};
