//! Talking to the runtime and writing the code it asks for: a request through its
//! buffer and entry point (`call`), its reply, and each entry's bytes written in an order
//! where every intermediate state is harmless.

use crate::apply::{phases, unpadded};
use crate::error::{Result, TriggerError};
use crate::inject::hijack::Hijacked;
use crate::inject::process::Process;
use pulp_meta::abi::{self, EntryStatus, FuncReply, Op, Request, RuntimeInfo};
use pulp_meta::prologue::{self};
use std::time::Duration;

/// Run the runtime's entry with `request` in the hijacked thread; a refusal becomes an
/// error carrying the runtime's message.
pub(crate) fn call(proc: &Process, thread: &mut Hijacked, info: &RuntimeInfo, request: &[u8]) -> Result<EntryStatus> {
    let pid = proc.pid;
    // The runtime maps its request buffer (and the stack entries run on) only when a
    // tool first needs them: a process that is never patched has neither.
    let (mut buffer, mut capacity) = request_buffer(proc, info)?;
    if (request.len() as u64) > capacity {
        let rc = thread.call(proc, info.prepare, request.len() as u64)?;
        if rc != 0 {
            return Err(TriggerError::Target {
                pid,
                what: format!(
                    "the runtime cannot map a {}-byte request buffer: {}",
                    request.len(),
                    std::io::Error::from_raw_os_error(-rc as i32)
                ),
            });
        }
        (buffer, capacity) = request_buffer(proc, info)?;
        if (request.len() as u64) > capacity {
            return Err(TriggerError::Target {
                pid,
                what: format!("the request ({} bytes) exceeds the runtime's buffer ({capacity} bytes)", request.len()),
            });
        }
    }
    proc.write(buffer, request)?;
    let rc = thread.call(proc, info.entry, request.len() as u64)?;
    let status = EntryStatus::from_i64(rc)
        .ok_or_else(|| TriggerError::Target { pid, what: format!("the runtime returned an unknown status {rc}") })?;
    match status {
        EntryStatus::Refused => {
            let len = u32::from_le_bytes(proc.read_array::<4>(buffer)?);
            let message = abi::decode_message(&proc.read(buffer, abi::message_bytes(len))?);
            Err(TriggerError::Refused { pid, message })
        }
        EntryStatus::Busy => {
            let owner = proc.read_u64(info.entry_owner).unwrap_or(0);
            Err(TriggerError::Busy { pid, tid: owner as i32 })
        }
        _ => Ok(status),
    }
}

pub(super) fn read_reply(proc: &Process, info: &RuntimeInfo) -> Result<Vec<FuncReply>> {
    let (buffer, capacity) = request_buffer(proc, info)?;
    let malformed = || TriggerError::Target { pid: proc.pid, what: "the runtime's reply is malformed".into() };
    if buffer == 0 {
        return Err(malformed());
    }
    let count = u32::from_le_bytes(proc.read_array::<4>(buffer)?) as usize;
    let len = 4 + count.saturating_mul(abi::FUNC_REPLY_SIZE);
    if len as u64 > capacity {
        return Err(malformed());
    }
    abi::decode_reply(&proc.read(buffer, len)?).ok_or_else(malformed)
}

/// The runtime's request buffer: its address (0: not mapped yet) and capacity.
fn request_buffer(proc: &Process, info: &RuntimeInfo) -> Result<(u64, u64)> {
    Ok((proc.read_u64(info.buffer)?, proc.read_u64(info.buffer_len)?))
}

/// Bring each entry's code to what the runtime asked for (`prologue::code_writes`).
/// With `held`, the thread the tool holds runs the
/// membarrier after new pads; without it, one is borrowed for that moment.
pub(super) fn write_code(
    proc: &Process,
    info: &RuntimeInfo,
    replies: &[FuncReply],
    mut held: Option<&mut Hijacked>,
) -> Result<()> {
    let tables = prologue::Tables { descs: info.descs, desc_size: info.desc_size(), far_stubs: info.far_stubs };
    let writes = prologue::code_writes(replies, tables, |addr, len| proc.read(addr, len).ok())
        .map_err(|what| TriggerError::Target { pid: proc.pid, what })?;
    for (addr, bytes) in &writes.pads {
        proc.write(*addr, bytes)?;
    }
    if !writes.pads.is_empty() && !proc.under_seccomp() {
        // Every core drops stale instructions of the new pads before any entry jumps
        // there. Best effort: without membarrier SYNC_CORE (an old kernel, or a seccomp
        // filter that might kill the process for an unexpected system call), x86's
        // coherent instruction fetch still holds.
        let sync = Request::new(Op::SyncCore).encode();
        phases::mark("write");
        match held.as_deref_mut() {
            Some(thread) => {
                call(proc, thread, info, &sync)?;
            }
            None => {
                let mut thread = Hijacked::attach(proc, *info, Duration::from_secs(10))?;
                call(proc, &mut thread, info, &sync)?;
                thread.release()?;
            }
        }
        phases::mark("sync");
    }
    for (at, plan) in &writes.entries {
        for (offset, byte) in plan {
            proc.write(at + offset, &[*byte])?;
        }
    }
    if unpadded::any(replies) {
        let mut sync = || -> Result<()> {
            if proc.under_seccomp() {
                return Ok(());
            }
            let sync = Request::new(Op::SyncCore).encode();
            match held.as_deref_mut() {
                Some(thread) => call(proc, thread, info, &sync).map(drop),
                None => {
                    let mut thread = Hijacked::attach(proc, *info, Duration::from_secs(10))?;
                    call(proc, &mut thread, info, &sync)?;
                    thread.release()
                }
            }
        };
        unpadded::write(proc, replies, &mut sync)?;
        phases::mark("unpadded");
    }
    Ok(())
}
