//! The entry point `pulp-trigger` calls in a hijacked thread, its request buffer, and the
//! runtime's constructor.
//!
//! The entry takes the length of the request the tool wrote into [`BUFFER`], returns an
//! [`EntryStatus`] and writes its reply into the same buffer. It runs on the runtime's own
//! stack, claimed by the hijack stub (`trm/asm/hijack.S`), so a thread with a small stack
//! can be borrowed. No panic leaves it: it becomes a refusal carrying the panic message.

use crate::messages;
use crate::registry::Claim;
use pulp_meta::abi::{self, EntryStatus, Request};
use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Size of the request/reply buffer: a request carries the patch object's bytes. It is
/// `.bss`: only the pages a request touches become memory of the process, and they are
/// given back after each request.
pub const BUFFER_LEN: usize = 64 << 20;

/// The request/reply buffer. Only the tool (through `/proc/PID/mem`, while no entry
/// runs) and the one entry running at a time touch it.
#[repr(C, align(4096))]
pub struct Buffer(UnsafeCell<[u8; BUFFER_LEN]>);

// SAFETY: access is serialised by the protocol: the tool writes the request before it
// starts an entry and reads the reply after the entry returned; entries run one at a
// time (the entry-stack claim).
unsafe impl Sync for Buffer {}

impl Buffer {
    pub const fn as_ptr(&self) -> *const u8 {
        self.0.get() as *const u8
    }
}

pub static BUFFER: Buffer = Buffer(UnsafeCell::new([0; BUFFER_LEN]));

/// Bytes of the stack entries run on (plus a guard page below it).
const ENTRY_STACK_LEN: usize = 1 << 20;

/// Serve the request held in the first `len` bytes of the buffer.
pub extern "C" fn pulp_rs_entry(len: usize) -> i64 {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        if len > BUFFER_LEN {
            return Err(format!("request of {len} bytes exceeds the runtime's {BUFFER_LEN}-byte buffer"));
        }
        let mut claim = Claim::get()?;
        let reg = claim.registry();
        // SAFETY: the claim is held, so no other entry uses the buffer, and the tool does
        // not touch it while an entry runs (see `Buffer`).
        let buf = unsafe { &mut *BUFFER.0.get() };
        let request = buf[..len].to_vec();
        give_back(len);
        let req = Request::decode(&request).ok_or("malformed request")?;
        let status = crate::request::serve(reg, &req, buf);
        reg.publish();
        status
    }));
    // SAFETY: as above; the claim is released, but this thread is the only one running
    // an entry: the tool waits for it to return before it reads the buffer.
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
            let msg = format!("internal error in the runtime: {what}");
            messages::log(&msg);
            abi::encode_message(&msg, buf);
            EntryStatus::Refused as i64
        }
    }
}

/// Return the pages of the buffer beyond the first 64 KiB that a request of `len` bytes
/// used (a patch object's bytes) to the kernel.
fn give_back(len: usize) {
    const KEEP: usize = 64 << 10;
    if len > KEEP {
        let start = BUFFER.as_ptr() as usize + KEEP;
        let end = (BUFFER.as_ptr() as usize + len).next_multiple_of(4096);
        // SAFETY: a page-aligned range inside the buffer, whose content is not needed any
        // more (the request was copied); MADV_DONTNEED leaves it readable as zeros.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}

/// The constructor: only what a process that is never patched needs, since the runtime
/// is preloaded into every process of a machine (`pulp-bench startup` measures it): one
/// line in the runtime's log (no allocation), the entry stack's mapping (no memory until
/// used), the operator's exclusions and the patch directory (`crate::patchdir`: one
/// `open` when it is absent). The `membarrier(SYNC_CORE)` registration waits for the first
/// request that writes code (`sync_core`), and reading `/proc/self/status` for a seccomp
/// filter for the first time the runtime writes its own code.
#[used]
#[link_section = ".init_array"]
static CONSTRUCTOR: extern "C" fn() = constructor;

extern "C" fn constructor() {
    messages::log_parts(&[b"runtime loaded: libpulp-rs ", env!("CARGO_PKG_VERSION").as_bytes()]);
    map_entry_stack();
    // No panic may leave a constructor: it would abort the process before `main`.
    let _ = catch_unwind(crate::patchdir::at_load);
}

/// Map the entry stack with a guard page below it; without it (mmap refused), entries run
/// on the borrowed thread's own stack.
fn map_entry_stack() {
    const GUARD: usize = 4096;
    // SAFETY: an anonymous private mapping; no memory is touched until used.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            ENTRY_STACK_LEN + GUARD,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return;
    }
    // SAFETY: the lowest page of the mapping just made.
    unsafe { libc::mprotect(base, GUARD, libc::PROT_NONE) };
    let top = (base as usize + GUARD + ENTRY_STACK_LEN) & !15;
    pulp_trm::entry_stack_top().store(top as u64, std::sync::atomic::Ordering::Release);
}
