//! One shard of the shadow table: an open-addressed hash table (linear probing) of
//! `(object, id) -> data` read without any lock or shared write, under a sequence counter.
//!
//! Why this shape: `pulp_shadow_get` sits on hot paths of patched code (a lookup per call
//! of a fixed function), often in many threads at once. Readers therefore write nothing
//! shared: a reader reads the shard's sequence number, probes the slots, and checks that
//! the number did not change (a seqlock). No reader-side counter, lock or reference count
//! means no cache line bounces between reading threads. Writers take the shard's lock;
//! spreading keys over 64 shards keeps writers of different objects apart.
//!
//! What a reader may see, and why it is safe:
//! - Inserting into an empty slot writes the key first and the data pointer last (release);
//!   readers load the data pointer first (acquire): a slot is either empty or complete, so
//!   inserts do not disturb readers and do not bump the sequence number.
//! - Removing an entry moves later entries of its cluster back (backward-shift deletion,
//!   no tombstones): that happens under an odd sequence number, and a reader that saw any
//!   of it retries.
//! - Growing builds a new slot array while readers keep probing the old one, which is never
//!   modified again, then publishes it (under an odd sequence number, for good measure).
//!   The old array is **not freed**: a reader may still be probing it and nothing tells
//!   when it stops. It is kept in the shard's `retired` list; arrays double, so the
//!   retired ones together are smaller than the live one. Slot arrays never shrink.
//! - Slot contents are only ever read and written as atomics, and slot arrays live as
//!   long as the shard, so even a reader that loses a race reads valid memory; a probe is
//!   bounded by the array's length.
//!
//! Readers never dereference a data pointer: the data belongs to the caller, who frees it
//! (through `pulp_shadow_free`/`free_all`) only after taking it out of the table.

use super::lock::{Event, Lock};
use std::alloc::{self, Layout};
use std::cell::UnsafeCell;
use std::ptr::{self, NonNull};
use std::sync::atomic::{fence, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// log2 of the number of shards: the top bits of a key's hash pick its shard.
pub const SHARD_BITS: u32 = 6;

/// Slot array of a shard's first shadow.
const INITIAL_SLOTS: usize = 16;

/// A shadow's key with its hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    pub obj: usize,
    pub id: u64,
    hash: u64,
}

impl Key {
    pub fn new(obj: usize, id: u64) -> Key {
        // Multiplicative (Fibonacci) hashing: object pointers differ mostly in their low
        // and middle bits, often by multiples of 16; folding the high half in and
        // multiplying by an odd constant carries every input bit into the top bits, which
        // pick the shard and the home slot. Both steps are invertible, so distinct
        // `obj ^ id*K` values never collide.
        let x = obj as u64 ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let hash = (x ^ (x >> 32)).wrapping_mul(0xd6e8_feb8_6659_fd93);
        Key { obj, id, hash }
    }

    /// Which of the `1 << SHARD_BITS` shards holds the key.
    pub fn shard(&self) -> usize {
        (self.hash >> (64 - SHARD_BITS)) as usize
    }

    /// The first slot to probe in a table: the hash bits right below the shard bits.
    fn home(&self, shift: u32, mask: usize) -> usize {
        (self.hash >> shift) as usize & mask
    }
}

/// One slot. `data == 0`: empty (a shadow's data pointer is never null).
#[repr(C)]
struct Slot {
    data: AtomicUsize,
    obj: AtomicUsize,
    id: AtomicU64,
}

/// A slot array: this header, then `mask + 1` slots, in one allocation.
#[repr(C)]
struct Table {
    mask: usize,
    /// `Key::hash >> shift` keeps the bits below the shard bits.
    shift: u32,
}

impl Table {
    /// Where slot 0 starts: right after the header, aligned for slots.
    const SLOTS_AT: usize =
        (std::mem::size_of::<Table>() + std::mem::align_of::<Slot>() - 1) & !(std::mem::align_of::<Slot>() - 1);

    /// The allocation of an array of `slots` slots, cache-line aligned.
    fn layout(slots: usize) -> Option<Layout> {
        let bytes = slots.checked_mul(std::mem::size_of::<Slot>())?.checked_add(Self::SLOTS_AT)?;
        Layout::from_size_align(bytes, 64).ok()
    }

    /// A zeroed (all empty) array of `slots` slots, a power of two; None when out of memory.
    fn alloc(slots: usize) -> Option<NonNull<Table>> {
        debug_assert!(slots.is_power_of_two() && slots >= INITIAL_SLOTS);
        let layout = Self::layout(slots)?;
        // SAFETY: the layout has a non-zero size (the header). All-zero bytes are valid
        // atomics and mean "empty".
        let table = NonNull::new(unsafe { alloc::alloc_zeroed(layout) }.cast::<Table>())?;
        // SAFETY: freshly allocated, large enough for the header, not yet shared.
        unsafe { table.as_ptr().write(Table { mask: slots - 1, shift: 64 - SHARD_BITS - slots.trailing_zeros() }) };
        Some(table)
    }

    /// # Safety
    /// `table` came from [`Table::alloc`] and no thread can reach it any more.
    unsafe fn free(table: NonNull<Table>) {
        let slots = Self::header(table.as_ptr()).0 + 1;
        if let Some(layout) = Self::layout(slots) {
            alloc::dealloc(table.as_ptr().cast(), layout);
        }
    }

    /// `(mask, shift)`.
    ///
    /// # Safety
    /// `table` came from [`Table::alloc`] and was not freed.
    unsafe fn header(table: *const Table) -> (usize, u32) {
        ((*table).mask, (*table).shift)
    }

    /// Slot `i` (`i <= mask`). The pointer is derived from the allocation's own pointer,
    /// not from a reference to the header, so it may reach past the header.
    ///
    /// # Safety
    /// `table` came from [`Table::alloc`] and was not freed; `i <= mask`.
    unsafe fn slot<'a>(table: *const Table, i: usize) -> &'a Slot {
        &*table.cast::<u8>().add(Self::SLOTS_AT).cast::<Slot>().add(i)
    }

    /// The slot holding `key` and its data pointer, reading each slot as a reader does
    /// (data first). Stops at the first empty slot, and after `mask + 1` slots at most.
    ///
    /// # Safety
    /// `table` came from [`Table::alloc`] and was not freed.
    #[inline]
    unsafe fn find(table: *const Table, key: &Key) -> Option<(usize, usize)> {
        let (mask, shift) = Self::header(table);
        let mut i = key.home(shift, mask);
        let mut left = mask;
        loop {
            let slot = Self::slot(table, i);
            let data = slot.data.load(Ordering::Acquire);
            if data == 0 {
                return None;
            }
            if slot.obj.load(Ordering::Relaxed) == key.obj && slot.id.load(Ordering::Relaxed) == key.id {
                return Some((i, data));
            }
            if left == 0 {
                return None;
            }
            left -= 1;
            i = (i + 1) & mask;
        }
    }

    /// Put an entry into the first empty slot of its cluster: key first, data last.
    ///
    /// # Safety
    /// `table` came from [`Table::alloc`], was not freed, has an empty slot, and the caller
    /// is its only writer.
    unsafe fn put(table: *const Table, key: &Key, data: usize) {
        let (mask, shift) = Self::header(table);
        let mut i = key.home(shift, mask);
        loop {
            let slot = Self::slot(table, i);
            if slot.data.load(Ordering::Relaxed) == 0 {
                slot.obj.store(key.obj, Ordering::Relaxed);
                slot.id.store(key.id, Ordering::Relaxed);
                slot.data.store(data, Ordering::Release);
                return;
            }
            i = (i + 1) & mask;
        }
    }
}

/// A constructor running outside the lock: its key is reserved, not yet visible.
struct Pending {
    key: Key,
    owner: libc::pthread_t,
}

/// What only the holder of the shard's lock touches.
struct Writer {
    /// Entries in the table.
    len: usize,
    /// Constructors running; each has a slot reserved (`len + pending.len()` fit).
    pending: Vec<Pending>,
    /// Threads sleeping on `Shard::constructed` for one of `pending`.
    waiters: usize,
    /// Slot arrays replaced by bigger ones (see the module comment).
    retired: Vec<NonNull<Table>>,
}

/// The part readers load, on its own cache line: writers taking the lock or registering
/// a constructor do not invalidate it.
#[repr(align(64))]
struct ReadSide {
    /// Odd while a writer moves or removes entries.
    seq: AtomicUsize,
    /// Null until the first shadow.
    table: AtomicPtr<Table>,
}

/// One shard: its slot array, its writer lock and its waiting room.
#[repr(align(64))]
pub struct Shard {
    read: ReadSide,
    lock: Lock,
    /// Bumped when a constructor finished (for threads waiting for its key).
    constructed: Event,
    writer: UnsafeCell<Writer>,
}

// SAFETY: `writer` is only touched by the holder of `lock` (through `Writing`) or by the
// fork handlers, which hold every lock; everything else is atomic. Slot arrays are owned
// by the shard and only freed when it is dropped, when no thread can reach it.
unsafe impl Sync for Shard {}
// SAFETY: as above; the `NonNull`s are owned slot arrays, not shared with anything.
unsafe impl Send for Shard {}

impl Default for Shard {
    fn default() -> Self {
        Self::new()
    }
}

impl Shard {
    pub const fn new() -> Self {
        Shard {
            read: ReadSide { seq: AtomicUsize::new(0), table: AtomicPtr::new(ptr::null_mut()) },
            lock: Lock::new(),
            constructed: Event::new(),
            writer: UnsafeCell::new(Writer { len: 0, pending: Vec::new(), waiters: 0, retired: Vec::new() }),
        }
    }

    /// The data pointer stored for `key`, or 0. Takes no lock and writes nothing shared;
    /// retries (out of line) while a writer moves entries of this shard.
    #[inline]
    pub fn get(&self, key: &Key) -> usize {
        let seq = self.read.seq.load(Ordering::Acquire);
        let table = self.read.table.load(Ordering::Acquire);
        if seq & 1 == 0 {
            if table.is_null() {
                return 0; // no shadow was ever stored in this shard
            }
            // SAFETY: a published table is never freed while the shard lives.
            let found = unsafe { Table::find(table, key) }.map_or(0, |(_, data)| data);
            // Order the slot loads before the second load of `seq`.
            fence(Ordering::Acquire);
            if self.read.seq.load(Ordering::Relaxed) == seq {
                return found;
            }
        }
        self.get_contended(key.obj, key.id)
    }

    /// `get` when a writer was moving entries: the same, with back-off. Kept out of line
    /// and given the key's parts in registers, so that the fast path saves no registers
    /// and keeps the key out of memory.
    #[cold]
    #[inline(never)]
    fn get_contended(&self, obj: usize, id: u64) -> usize {
        let key = &Key::new(obj, id);
        let mut spins = 0u32;
        loop {
            spins = backoff(spins);
            let seq = self.read.seq.load(Ordering::Acquire);
            if seq & 1 == 0 {
                let table = self.read.table.load(Ordering::Acquire);
                let found = if table.is_null() {
                    0
                } else {
                    // SAFETY: a published table is never freed while the shard lives.
                    unsafe { Table::find(table, key) }.map_or(0, |(_, data)| data)
                };
                fence(Ordering::Acquire);
                if self.read.seq.load(Ordering::Relaxed) == seq {
                    return found;
                }
            }
        }
    }

    /// Take the shard's lock to change it.
    pub fn write(&self) -> Writing<'_> {
        self.lock.lock();
        Writing { shard: self, wake: false }
    }

    /// `pthread_atfork` prepare: hold the lock across `fork()`.
    pub fn lock_for_fork(&self) {
        self.lock.lock();
    }

    /// `pthread_atfork` parent: release what `lock_for_fork` took.
    pub fn unlock_after_fork(&self) {
        self.lock.unlock();
    }

    /// `pthread_atfork` child: only the thread that forked (`me`) exists now. Constructors
    /// of other threads will never finish here: forget them (their data, allocated in the
    /// parent's thread, is left allocated), then release the lock.
    pub fn reset_after_fork(&self, me: libc::pthread_t) {
        // SAFETY: the lock is held (taken by `lock_for_fork` before the fork) and this is
        // the only thread of the child.
        let w = unsafe { &mut *self.writer.get() };
        // SAFETY: pthread_equal only compares its two arguments.
        w.pending.retain(|p| unsafe { libc::pthread_equal(p.owner, me) } != 0);
        w.waiters = 0;
        self.lock.unlock();
    }

    /// Slots of the live array.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        let table = self.read.table.load(Ordering::Acquire);
        if table.is_null() {
            0
        } else {
            // SAFETY: a published table is never freed while the shard lives.
            unsafe { Table::header(table).0 + 1 }
        }
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        // The shard is unreachable now (`&mut self`): free every slot array it owns.
        let w = self.writer.get_mut();
        for table in w.retired.drain(..) {
            // SAFETY: retired arrays came from Table::alloc and nothing can reach them.
            unsafe { Table::free(table) };
        }
        if let Some(table) = NonNull::new(*self.read.table.get_mut()) {
            // SAFETY: as above, for the live array.
            unsafe { Table::free(table) };
        }
    }
}

/// Spin a little, then give the processor away: a writer that was preempted inside its
/// odd section needs a processor to finish it.
fn backoff(spins: u32) -> u32 {
    if spins < 64 {
        std::hint::spin_loop();
    } else {
        // SAFETY: sched_yield takes no arguments and cannot fail in a harmful way.
        unsafe { libc::sched_yield() };
    }
    spins.saturating_add(1)
}

/// The shard's lock, held: every change goes through here. Dropping it releases the lock
/// and then wakes the threads waiting for a constructor, when one finished.
pub struct Writing<'a> {
    shard: &'a Shard,
    wake: bool,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.shard.lock.unlock();
        if self.wake {
            self.shard.constructed.wake_all();
        }
    }
}

impl Writing<'_> {
    fn state(&mut self) -> &mut Writer {
        // SAFETY: `self` holds the shard's lock, which guards `writer`; the borrow ends
        // before the lock can be released (it is tied to `&mut self`).
        unsafe { &mut *self.shard.writer.get() }
    }

    fn table(&self) -> Option<NonNull<Table>> {
        NonNull::new(self.shard.read.table.load(Ordering::Relaxed))
    }

    /// Start changing slots in a way readers must not see half-done.
    fn begin(&self) {
        let seq = &self.shard.read.seq;
        seq.store(seq.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        // The odd number is visible before any slot store that follows.
        fence(Ordering::Release);
    }

    fn end(&self) {
        let seq = &self.shard.read.seq;
        seq.store(seq.load(Ordering::Relaxed).wrapping_add(1), Ordering::Release);
    }

    /// The data pointer stored for `key`.
    pub fn find(&self, key: &Key) -> Option<usize> {
        // SAFETY: the live table is never freed while the shard lives.
        self.table().and_then(|t| unsafe { Table::find(t.as_ptr(), key) }).map(|(_, data)| data)
    }

    /// Make room for one more entry (an insert now, or a constructor's later insert),
    /// growing the slot array when the load would pass 1/2. False: out of memory.
    pub fn reserve(&mut self) -> bool {
        let reserved = {
            let w = self.state();
            w.len + w.pending.len() + 1
        };
        let old = self.table();
        let slots = match old {
            // SAFETY: the live table is never freed while the shard lives.
            Some(t) => unsafe { Table::header(t.as_ptr()).0 + 1 },
            None => 0,
        };
        if reserved * 2 <= slots {
            return true;
        }
        let Some(new_slots) = slots.checked_mul(2).map(|n| n.max(INITIAL_SLOTS)) else { return false };
        // The retired list must be able to take the old array before anything changes.
        if old.is_some() && self.state().retired.try_reserve(1).is_err() {
            return false;
        }
        let Some(new) = Table::alloc(new_slots) else { return false };
        if let Some(old) = old {
            for i in 0..slots {
                // SAFETY: `i` < the old array's length; `new` is not shared yet and has
                // room for every entry (it is twice as large).
                unsafe {
                    let slot = Table::slot(old.as_ptr(), i);
                    let data = slot.data.load(Ordering::Relaxed);
                    if data != 0 {
                        let key = Key::new(slot.obj.load(Ordering::Relaxed), slot.id.load(Ordering::Relaxed));
                        Table::put(new.as_ptr(), &key, data);
                    }
                }
            }
        }
        self.begin();
        self.shard.read.table.store(new.as_ptr(), Ordering::Release);
        self.end();
        if let Some(old) = old {
            self.state().retired.push(old); // capacity reserved above: cannot allocate
        }
        true
    }

    /// Insert `key` (absent from the table) with `data` (not null), using room made by
    /// [`Writing::reserve`] (directly, or through a pending constructor just finished).
    pub fn insert(&mut self, key: &Key, data: usize) {
        debug_assert!(data != 0 && self.find(key).is_none());
        let table = self.table().expect("insert without reserve");
        // SAFETY: the load stays <= 1/2 (reserve), so there is an empty slot; this thread
        // holds the lock, so it is the only writer.
        unsafe { Table::put(table.as_ptr(), key, data) };
        self.state().len += 1;
    }

    /// Take `key` out of the table; its data pointer.
    pub fn remove(&mut self, key: &Key) -> Option<usize> {
        let table = self.table()?.as_ptr();
        // SAFETY: the live table is never freed while the shard lives.
        let (mut hole, data) = unsafe { Table::find(table, key) }?;
        // SAFETY: as above.
        let (mask, shift) = unsafe { Table::header(table) };
        self.begin();
        // Backward-shift deletion: walk the rest of the cluster; an entry whose home slot
        // is not cyclically within (hole, j] would be cut off from its home by the hole,
        // so it moves into the hole, and the hole moves to where it was.
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            // SAFETY: `j` and `hole` are <= mask; this thread is the only writer.
            let (slot, hole_slot) = unsafe { (Table::slot(table, j), Table::slot(table, hole)) };
            let moved = slot.data.load(Ordering::Relaxed);
            if moved == 0 {
                break;
            }
            let (obj, id) = (slot.obj.load(Ordering::Relaxed), slot.id.load(Ordering::Relaxed));
            let home = Key::new(obj, id).home(shift, mask);
            let stays = if hole <= j { hole < home && home <= j } else { hole < home || home <= j };
            if !stays {
                hole_slot.obj.store(obj, Ordering::Relaxed);
                hole_slot.id.store(id, Ordering::Relaxed);
                hole_slot.data.store(moved, Ordering::Relaxed);
                hole = j;
            }
        }
        // SAFETY: `hole` <= mask.
        let last = unsafe { Table::slot(table, hole) };
        last.data.store(0, Ordering::Relaxed);
        last.obj.store(0, Ordering::Relaxed);
        last.id.store(0, Ordering::Relaxed);
        self.end();
        self.state().len -= 1;
        Some(data)
    }

    /// Take out up to `out.len()` entries of `id`, writing `(obj, data)` of each into
    /// `out`; how many. Fewer than `out.len()`: none of `id` is left.
    pub fn take_batch(&mut self, id: u64, out: &mut [(usize, usize)]) -> usize {
        let Some(table) = self.table() else { return 0 };
        // SAFETY: the live table is never freed while the shard lives.
        let slots = unsafe { Table::header(table.as_ptr()).0 + 1 };
        let mut n = 0;
        for i in 0..slots {
            if n == out.len() {
                break;
            }
            // SAFETY: `i` < the array's length.
            let slot = unsafe { Table::slot(table.as_ptr(), i) };
            let data = slot.data.load(Ordering::Relaxed);
            if data != 0 && slot.id.load(Ordering::Relaxed) == id {
                out[n] = (slot.obj.load(Ordering::Relaxed), data);
                n += 1;
            }
        }
        for &(obj, _) in &out[..n] {
            self.remove(&Key::new(obj, id));
        }
        n
    }

    /// The thread running a constructor for `key`, if one does.
    pub fn pending_owner(&mut self, key: &Key) -> Option<libc::pthread_t> {
        self.state().pending.iter().find(|p| p.key == *key).map(|p| p.owner)
    }

    /// Record that `owner` runs `key`'s constructor, after [`Writing::reserve`] made room
    /// for its entry. False: out of memory.
    pub fn add_pending(&mut self, key: &Key, owner: libc::pthread_t) -> bool {
        let w = self.state();
        if w.pending.try_reserve(1).is_err() {
            return false;
        }
        w.pending.push(Pending { key: *key, owner });
        true
    }

    /// `key`'s constructor returned: forget it (its reserved room stays for the insert
    /// that may follow) and wake the threads waiting for it, once the lock is released.
    pub fn finish_pending(&mut self, key: &Key) {
        let w = self.state();
        if let Some(i) = w.pending.iter().position(|p| p.key == *key) {
            w.pending.swap_remove(i);
        }
        if w.waiters > 0 {
            self.shard.constructed.bump();
            self.wake = true;
        }
    }

    /// Sleep until some constructor of this shard finishes (or a spurious wake-up), with
    /// the lock released meanwhile. The caller then looks at the table again.
    pub fn wait_for_constructor(&mut self) {
        self.state().waiters += 1;
        let seen = self.shard.constructed.current();
        self.unlocked(|| self.shard.constructed.wait(seen));
        self.state().waiters -= 1;
    }

    /// Run `f` with the lock released (a caller's constructor, which may call any
    /// `pulp_shadow_*` function), then take the lock again.
    pub fn unlocked<R>(&mut self, f: impl FnOnce() -> R) -> R {
        self.shard.lock.unlock();
        let r = f();
        self.shard.lock.lock();
        r
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
