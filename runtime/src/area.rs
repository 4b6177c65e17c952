//! The request area: the stack entries run on and the buffer a tool writes a request into
//! and reads the reply from. Neither exists in a process that is never patched (the
//! runtime is preloaded into every process): the tool has the borrowed thread call
//! [`pulp_rs_prepare`] first, which maps them, when the buffer is missing or too small for
//! its request. They then stay for later requests; the pages a request used beyond the
//! first 64 KiB are given back after it.
//!
//! The tools find the buffer's address and capacity in two words ([`BUFFER`]) named by
//! `pulp_rs_info`, and the stack's top in `pulp_rs_entry_stack_top` (`trm`).

use pulp_meta::abi;
use std::sync::atomic::{AtomicU64, Ordering};

/// The buffer's address (0: not mapped yet) and capacity in bytes.
#[repr(C)]
pub struct BufferWords {
    pub addr: AtomicU64,
    pub len: AtomicU64,
}

pub static BUFFER: BufferWords = BufferWords { addr: AtomicU64::new(0), len: AtomicU64::new(0) };

/// Bytes of the stack entries run on (plus a guard page below it).
const ENTRY_STACK_LEN: usize = 1 << 20;
const PAGE: usize = 4096;
/// Smallest buffer: room for the largest reply (one entry per descriptor, 512 KiB: a
/// patch of libcrypto gates thousands of its functions) and a small request.
const MIN_BUFFER: usize = (4 + pulp_trm::DESC_COUNT * abi::FUNC_REPLY_SIZE).next_multiple_of(KEEP);
/// Pages of the buffer kept after a request; the rest is given back.
const KEEP: usize = 64 << 10;

/// Map the entry stack if there is none, and a buffer of at least `len` bytes if the
/// current one is smaller (the old one is unmapped). Returns 0, or `-errno`.
///
/// Called through the hijack stub like the entry (the stub holds the entry-stack claim,
/// so nothing else touches the area meanwhile), but possibly on the borrowed thread's
/// own stack, since the entry stack may not exist yet: it uses a few hundred bytes of
/// stack, allocates nothing and cannot panic.
pub extern "C" fn pulp_rs_prepare(len: usize) -> i64 {
    let top = pulp_trm::entry_stack_top();
    if top.load(Ordering::Acquire) == 0 {
        let base = match map(ENTRY_STACK_LEN + PAGE, libc::MAP_STACK) {
            Ok(base) => base,
            Err(e) => return e,
        };
        // SAFETY: the lowest page of the mapping just made: the guard.
        unsafe { libc::mprotect(base as *mut libc::c_void, PAGE, libc::PROT_NONE) };
        top.store(((base + PAGE + ENTRY_STACK_LEN) & !15) as u64, Ordering::Release);
    }
    if len <= BUFFER.len.load(Ordering::Acquire) as usize {
        return 0;
    }
    let Some(want) = len.max(MIN_BUFFER).checked_next_multiple_of(KEEP) else { return -(libc::ENOMEM as i64) };
    let addr = match map(want, 0) {
        Ok(addr) => addr,
        Err(e) => return e,
    };
    let (old, old_len) = (BUFFER.addr.load(Ordering::Acquire), BUFFER.len.load(Ordering::Acquire));
    BUFFER.addr.store(addr as u64, Ordering::Release);
    BUFFER.len.store(want as u64, Ordering::Release);
    if old != 0 {
        // SAFETY: the previous buffer, mapped here and no longer named by BUFFER; no
        // entry runs (the claim is held) and the tool reads the new words.
        unsafe { libc::munmap(old as *mut libc::c_void, old_len as usize) };
    }
    0
}

/// An anonymous private read-write mapping of `len` bytes (no memory until touched).
fn map(len: usize, flags: libc::c_int) -> Result<usize, i64> {
    // SAFETY: a new anonymous mapping; nothing else is affected.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | flags,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        // SAFETY: reads this thread's errno.
        Err(-(unsafe { *libc::__errno_location() } as i64))
    } else {
        Ok(p as usize)
    }
}

/// The buffer, for the one entry running (the caller holds the entry-stack claim and the
/// tool does not touch the buffer while an entry runs). `None` before any `prepare`.
///
/// # Safety
/// Only the thread running an entry may call this, and only once per entry.
pub unsafe fn buffer() -> Option<&'static mut [u8]> {
    let (addr, len) = (BUFFER.addr.load(Ordering::Acquire), BUFFER.len.load(Ordering::Acquire));
    if addr == 0 {
        return None;
    }
    // SAFETY: `addr` is a live mapping of `len` bytes made by `pulp_rs_prepare`, unmapped
    // only by a later `prepare`, which cannot run while this entry holds the claim; the
    // caller guarantees no other reference exists.
    Some(unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, len as usize) })
}

/// Give the pages of the buffer beyond the first [`KEEP`] bytes that a request of `len`
/// bytes used back to the kernel (a patch object's bytes).
pub fn give_back(len: usize) {
    let (addr, cap) = (BUFFER.addr.load(Ordering::Acquire) as usize, BUFFER.len.load(Ordering::Acquire) as usize);
    if addr == 0 || len <= KEEP {
        return;
    }
    let end = (addr + len.min(cap)).next_multiple_of(PAGE);
    // SAFETY: a page-aligned range inside the buffer, whose content is not needed any
    // more (the request was copied); MADV_DONTNEED leaves it readable as zeros.
    unsafe { libc::madvise((addr + KEEP) as *mut libc::c_void, end - addr - KEEP, libc::MADV_DONTNEED) };
}
