//! The runtime's own log of what it did (loaded, applied, refused and why, transitions),
//! kept in a fixed-size ring that `pulp messages -p PID` reads from outside without
//! stopping anything (layout: `pulp_meta::abi::MessageRing`). Nothing is written to the
//! program's stdout, stderr or any file.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Bytes of the ring (the oldest lines are overwritten).
pub const RING_LEN: usize = 64 << 10;

#[repr(C)]
pub struct MessageArea {
    /// Odd while a line is being written.
    seq: AtomicU64,
    /// Bytes ever written.
    total: AtomicU64,
    ring: UnsafeCell<[u8; RING_LEN]>,
}

// SAFETY: `ring` is written only under `WRITING` (one writer at a time); readers are the
// tools, outside the process, who use `seq` to detect a concurrent write.
unsafe impl Sync for MessageArea {}

/// The ring's first line, there from the moment the runtime is mapped: written at build
/// time, it costs a process nothing at start (writing it then, with a timestamp, cost
/// every process ~20 µs of page faults: the clock's and the ring's first pages).
const LOADED: &[u8] = concat!("runtime loaded: libpulp-rs ", env!("CARGO_PKG_VERSION"), "\n").as_bytes();

const fn initial_ring() -> [u8; RING_LEN] {
    let mut ring = [0u8; RING_LEN];
    let mut i = 0;
    while i < LOADED.len() {
        ring[i] = LOADED[i];
        i += 1;
    }
    ring
}

pub static MESSAGES: MessageArea = MessageArea {
    seq: AtomicU64::new(0),
    total: AtomicU64::new(LOADED.len() as u64),
    ring: UnsafeCell::new(initial_ring()),
};

static WRITING: AtomicBool = AtomicBool::new(false);

/// Add one line (a newline is appended; newlines inside become spaces), prefixed with the
/// Unix time.
pub fn log(line: &str) {
    log_parts(&[line.as_bytes()]);
}

/// [`log`] of a line made of `parts`, written straight into the ring (no allocation:
/// safe where the allocator may not be, as in the linker's callback).
fn log_parts(parts: &[&[u8]]) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut t = crate::status::now();
    loop {
        at -= 1;
        digits[at] = b'0' + (t % 10) as u8;
        t /= 10;
        if t == 0 {
            break;
        }
    }
    let len: usize = digits.len() - at + 1 + parts.iter().map(|p| p.len()).sum::<usize>() + 1;
    let bytes = || {
        digits[at..]
            .iter()
            .copied()
            .chain(std::iter::once(b' '))
            .chain(parts.iter().flat_map(|p| p.iter().map(|&b| if b == b'\n' { b' ' } else { b })))
            .chain(std::iter::once(b'\n'))
    };
    // A writer that finds another one busy spins briefly: lines are short.
    while WRITING.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        std::hint::spin_loop();
    }
    MESSAGES.seq.fetch_add(1, Ordering::AcqRel);
    // SAFETY: `WRITING` is held, so this is the only writer of the ring.
    let ring = unsafe { &mut *MESSAGES.ring.get() };
    let mut total = MESSAGES.total.load(Ordering::Relaxed);
    // A line longer than the ring keeps its last RING_LEN bytes.
    for b in bytes().skip(len.saturating_sub(RING_LEN)) {
        ring[(total % RING_LEN as u64) as usize] = b;
        total += 1;
    }
    MESSAGES.total.store(total, Ordering::Release);
    MESSAGES.seq.fetch_add(1, Ordering::Release);
    WRITING.store(false, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_back_through_the_shared_decoder() {
        log("loaded patch 0123");
        log("two\nlines");
        // SAFETY: the test is the only writer; reading the area as bytes.
        let area = unsafe {
            std::slice::from_raw_parts(&MESSAGES as *const MessageArea as *const u8, std::mem::size_of::<MessageArea>())
        };
        let lines = pulp_meta::abi::MessageRing::decode(area);
        assert!(lines.iter().any(|l| l.ends_with(" loaded patch 0123")), "{lines:?}");
        assert!(lines.iter().any(|l| l.ends_with(" two lines")), "{lines:?}");
    }
}
