//! Entry points `pulp-trigger` calls in a hijacked thread, and their request buffer.
//!
//! Each entry takes the length of the request the tool wrote into [`BUFFER`], returns an
//! [`EntryStatus`] and writes its reply into the same buffer. No panic leaves an entry:
//! it becomes a refusal carrying the panic message.

use crate::registry;
use pulp_meta::abi::{self, EntryStatus};
use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Size of the request/reply buffer: room for a patch of several thousand functions.
pub const BUFFER_LEN: usize = 1 << 20;

/// The request/reply buffer. Only the tool (through `/proc/PID/mem`, while no entry
/// runs) and the one entry running at a time touch it.
pub struct Buffer(UnsafeCell<[u8; BUFFER_LEN]>);

// SAFETY: access is serialised by the protocol: the tool writes the request before it
// starts an entry and reads the reply after the entry returned; entries hold the
// registry lock while they use the buffer.
unsafe impl Sync for Buffer {}

impl Buffer {
    pub const fn as_ptr(&self) -> *const u8 {
        self.0.get() as *const u8
    }
}

pub static BUFFER: Buffer = Buffer(UnsafeCell::new([0; BUFFER_LEN]));

/// Run `f` on the buffer's first `len` bytes (the request) and the whole buffer (for
/// the reply), turning errors and panics into a refusal message.
fn serve(len: usize, f: impl FnOnce(&mut registry::Registry, &[u8], &mut [u8]) -> Result<EntryStatus, String>) -> i64 {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut reg = registry::lock()?;
        if len > BUFFER_LEN {
            return Err(format!("request of {len} bytes exceeds the runtime's {BUFFER_LEN}-byte buffer"));
        }
        // SAFETY: the registry lock is held, so no other entry uses the buffer, and the
        // tool does not touch it while an entry runs (see `Buffer`).
        let buf = unsafe { &mut *BUFFER.0.get() };
        let request = buf[..len].to_vec();
        let status = f(&mut reg, &request, buf);
        reg.publish();
        status
    }));
    // SAFETY: as above; the registry lock is released, but this thread is the only one
    // running an entry: the tool waits for it to return before it reads the buffer.
    let buf = unsafe { &mut *BUFFER.0.get() };
    match outcome {
        Ok(Ok(status)) => status as i64,
        Ok(Err(msg)) => {
            abi::encode_message(&msg, buf);
            EntryStatus::Refused as i64
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            abi::encode_message(&format!("internal error in the runtime: {what}"), buf);
            EntryStatus::Refused as i64
        }
    }
}

/// Apply the `patch.meta` held in the first `len` bytes of the buffer.
pub extern "C" fn pulp_rs_entry_apply(len: usize) -> i64 {
    serve(len, registry::apply)
}

/// Revert the `patch.meta` held in the first `len` bytes of the buffer.
pub extern "C" fn pulp_rs_entry_revert(len: usize) -> i64 {
    serve(len, registry::revert)
}

/// End the running transition (`force` != 0: threads still inside simply switch).
pub extern "C" fn pulp_rs_entry_finish(force: usize) -> i64 {
    serve(0, |reg, _, buf| registry::finish(reg, force != 0, buf))
}

/// Reverse the running transition.
pub extern "C" fn pulp_rs_entry_reverse(_unused: usize) -> i64 {
    serve(0, |reg, _, buf| registry::reverse(reg, buf))
}

/// Register for `membarrier(PRIVATE_EXPEDITED_SYNC_CORE)` while the process is still
/// single-threaded (the runtime is preloaded): registering later, with threads running,
/// makes the kernel wait for an RCU grace period (milliseconds) inside the first apply.
/// It has no effect on the program. Skipped under a seccomp filter, which might kill the
/// process for a system call it does not expect; the tools then skip the barrier too.
#[used]
#[link_section = ".init_array"]
static REGISTER_SYNC_CORE: extern "C" fn() = register_sync_core;

extern "C" fn register_sync_core() {
    if !seccomp_free() {
        return;
    }
    // SAFETY: membarrier takes no pointers; failure (an old kernel) is harmless.
    unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_REGISTER_SYNC_CORE, 0, 0) };
}

/// Whether `/proc/self/status` says `Seccomp: 0`. Reads it with plain open/read/close
/// (which any filter must allow for the program to run at all) into a stack buffer.
fn seccomp_free() -> bool {
    let mut buf = [0u8; 4096];
    // SAFETY: a static NUL-terminated path; the fd is closed below.
    let fd = unsafe { libc::open(c"/proc/self/status".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return false;
    }
    let mut len = 0;
    while len < buf.len() {
        // SAFETY: reads at most the rest of `buf`, which outlives the call.
        let n = unsafe { libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len) };
        if n <= 0 {
            break;
        }
        len += n as usize;
    }
    // SAFETY: `fd` was opened above and is not used afterwards.
    unsafe { libc::close(fd) };
    let status = &buf[..len];
    status.windows(11).any(|w| w == b"\nSeccomp:\t0")
}

const MEMBARRIER_REGISTER_SYNC_CORE: libc::c_long = 1 << 6; // MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE

/// Make every thread of the process serialise its instruction stream before the tool
/// flips function entries, so that no core runs stale bytes of a freshly written pad.
/// (x86 keeps code coherent in practice; this is the architectural guarantee.)
pub extern "C" fn pulp_rs_entry_sync_core(_len: usize) -> i64 {
    const SYNC_CORE: libc::c_long = 1 << 5; // MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE
                                            // SAFETY: membarrier takes no pointers; failure (an old kernel) only returns -1.
    let ok = unsafe {
        libc::syscall(libc::SYS_membarrier, MEMBARRIER_REGISTER_SYNC_CORE, 0, 0) == 0
            && libc::syscall(libc::SYS_membarrier, SYNC_CORE, 0, 0) == 0
    };
    if ok {
        EntryStatus::Done as i64
    } else {
        EntryStatus::NothingToDo as i64
    }
}
