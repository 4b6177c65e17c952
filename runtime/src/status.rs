//! The status area the tools read from outside (`pulp patches`): a sequence counter,
//! odd while it is rewritten, then the encoded `pulp_meta::status::Status`.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU64, Ordering};

pub const STATUS_LEN: usize = 256 << 10;

#[repr(C)]
pub struct StatusArea {
    seq: AtomicU64,
    data: UnsafeCell<[u8; STATUS_LEN - 8]>,
}

// SAFETY: `data` is written only by `publish`, which runs with the registry lock held
// (one writer); readers are the tools, outside the process, who use `seq` to detect a
// concurrent rewrite.
unsafe impl Sync for StatusArea {}

pub static STATUS: StatusArea = StatusArea { seq: AtomicU64::new(0), data: UnsafeCell::new([0; STATUS_LEN - 8]) };

/// Replace the published status with `encoded` (cut if it does not fit: the tools
/// then report a truncated status instead of a wrong one).
pub fn publish(encoded: &[u8]) {
    let framed = pulp_meta::status::frame(encoded);
    STATUS.seq.fetch_add(1, Ordering::AcqRel);
    // SAFETY: single writer (see `StatusArea`); the length is bounded by the area.
    let data = unsafe { &mut *STATUS.data.get() };
    let n = framed.len().min(data.len());
    data[..n].copy_from_slice(&framed[..n]);
    STATUS.seq.fetch_add(1, Ordering::Release);
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
