//! `pulp_rs_info`: the fixed record through which the tools find the runtime's pieces.

use crate::messages::{MessageArea, MESSAGES, RING_LEN};
use crate::status::{StatusArea, STATUS, STATUS_LEN};
use crate::transition::{ThreadLog, CLEARED_OFFSETS, GATE_LOG, LOG_CAP, TOOL_LOG};
use crate::{area, entry};
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
    call_stub_stop: *const (),
    entry: *const (),
    prepare: *const (),
    buffer: *const AtomicU64,
    buffer_len: *const AtomicU64,
    transition: *const AtomicU64,
    goal: *const AtomicU64,
    armed: *const AtomicU64,
    cleared_offsets: *const [AtomicU64; 2],
    status: *const StatusArea,
    status_len: u64,
    gate_log: *const ThreadLog,
    tool_log: *const ThreadLog,
    log_cap: u64,
    far_stubs: *const (),
    entry_owner: *const AtomicU64,
    recover: *const (),
    guard_depth: *const AtomicU64,
    messages: *const MessageArea,
    messages_len: u64,
    trampolines: *const crate::trampoline::Regions,
    traps: *const crate::trampoline::Traps,
}

// SAFETY: `Info` is immutable after relocation; its pointers are only addresses for the
// tools to read, never dereferenced through this struct.
unsafe impl Sync for Info {}

macro_rules! same_offsets {
    ($($field:ident),*) => {
        $(assert!(core::mem::offset_of!(Info, $field) == core::mem::offset_of!(abi::RuntimeInfo, $field));)*
    };
}

const _: () = {
    assert!(core::mem::size_of::<Info>() == abi::RuntimeInfo::SIZE);
    same_offsets!(
        magic,
        version_and_desc_size,
        descs,
        desc_count,
        call_stub,
        call_stub_stop,
        entry,
        prepare,
        buffer,
        buffer_len,
        transition,
        goal,
        armed,
        cleared_offsets,
        status,
        status_len,
        gate_log,
        tool_log,
        log_cap,
        far_stubs,
        entry_owner,
        recover,
        guard_depth,
        messages,
        messages_len,
        trampolines,
        traps
    );
    assert!(core::mem::size_of::<ThreadLog>() == abi::ThreadLog::size(LOG_CAP));
    assert!(core::mem::size_of::<MessageArea>() == abi::MessageRing::HEADER + RING_LEN);
};

/// What the tools read; its name is [`abi::INFO_SYMBOL`].
#[no_mangle]
#[used]
pub static pulp_rs_info: Info = Info {
    magic: abi::INFO_MAGIC,
    version_and_desc_size: abi::ABI_VERSION as u64 | ((core::mem::size_of::<Descriptor>() as u64) << 32),
    // Only addresses of the extern statics are taken (no unsafe needed).
    descs: core::ptr::addr_of!(pulp_trm::pulp_rs_descs) as *const Descriptor,
    desc_count: pulp_trm::DESC_COUNT as u64,
    call_stub: pulp_trm::pulp_rs_call_stub as *const (),
    call_stub_stop: pulp_trm::pulp_rs_call_stub_stop as *const (),
    entry: entry::pulp_rs_entry as *const (),
    prepare: area::pulp_rs_prepare as *const (),
    buffer: &area::BUFFER.addr,
    buffer_len: &area::BUFFER.len,
    transition: core::ptr::addr_of!(pulp_trm::pulp_rs_transition),
    goal: core::ptr::addr_of!(pulp_trm::pulp_rs_goal),
    armed: core::ptr::addr_of!(pulp_trm::pulp_rs_armed),
    cleared_offsets: &CLEARED_OFFSETS,
    status: &STATUS,
    status_len: STATUS_LEN as u64,
    gate_log: &GATE_LOG,
    tool_log: &TOOL_LOG,
    log_cap: LOG_CAP as u64,
    far_stubs: pulp_trm::pulp_rs_far_stubs as *const (),
    entry_owner: core::ptr::addr_of!(pulp_trm::pulp_rs_entry_owner),
    recover: pulp_trm::pulp_rs_recover as *const (),
    guard_depth: core::ptr::addr_of!(pulp_trm::pulp_rs_guard_depth),
    messages: &MESSAGES,
    messages_len: (abi::MessageRing::HEADER + RING_LEN) as u64,
    trampolines: &crate::trampoline::REGIONS,
    traps: &crate::trampoline::TRAPS,
};
