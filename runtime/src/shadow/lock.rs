//! The two waiting primitives of the shadow table, on bare futexes: a shard's writer lock
//! and the event that wakes threads waiting for a constructor.
//!
//! Not `std::sync::Mutex`: `fork()` must find every shard unlocked in the child (a thread
//! that held a lock does not exist there), so the `pthread_atfork` handlers take every
//! lock before the fork and release them after it, in both processes, which needs a lock
//! that can be taken and released without a guard object. Neither primitive allocates,
//! and neither makes a system call unless a thread actually has to sleep or be woken.

use std::sync::atomic::{AtomicU32, Ordering};

/// `futex(FUTEX_WAIT_PRIVATE)`: sleep while `*word == expected`. Returns at once when the
/// word already differs, on a wake-up, or on a signal; callers re-check their condition.
fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: the address is a live, aligned u32 for the length of the call; a null
    // timeout means no timeout. The kernel only compares the word and sleeps.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            std::ptr::null::<libc::timespec>(),
        )
    };
}

/// `futex(FUTEX_WAKE_PRIVATE)`: wake up to `count` threads sleeping on `word`.
fn futex_wake(word: &AtomicU32, count: i32) {
    // SAFETY: as in `futex_wait`; waking reads nothing behind the address.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, count) };
}

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
/// Locked, and a thread may be sleeping on the word: the unlocker must wake one.
const CONTENDED: u32 = 2;

/// A mutual-exclusion lock (the classic three-state futex mutex). Not re-entrant.
pub struct Lock {
    state: AtomicU32,
}

impl Lock {
    pub const fn new() -> Self {
        Lock { state: AtomicU32::new(UNLOCKED) }
    }

    /// Take the lock, sleeping while another thread holds it.
    #[inline]
    pub fn lock(&self) {
        if self.state.compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed).is_err() {
            self.lock_contended();
        }
    }

    #[cold]
    fn lock_contended(&self) {
        // Writers hold a shard for a few hundred nanoseconds: spinning briefly usually
        // avoids two system calls.
        for _ in 0..100 {
            std::hint::spin_loop();
            if self.state.load(Ordering::Relaxed) == UNLOCKED
                && self.state.compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed).is_ok()
            {
                return;
            }
        }
        // From here on the lock is marked contended, so the holder will wake us.
        while self.state.swap(CONTENDED, Ordering::Acquire) != UNLOCKED {
            futex_wait(&self.state, CONTENDED);
        }
    }

    /// Release the lock. Only the holder may call it.
    #[inline]
    pub fn unlock(&self) {
        if self.state.swap(UNLOCKED, Ordering::Release) == CONTENDED {
            futex_wake(&self.state, 1);
        }
    }
}

/// A counter threads sleep on until it changes: a waiter reads [`Event::current`] while
/// it still holds the lock that protects its condition, releases the lock, then calls
/// [`Event::wait`] with that value; a notifier changes the condition and calls
/// [`Event::bump`] under the same lock, then [`Event::wake_all`] after releasing it. A
/// bump between the waiter's read and its sleep makes the sleep return at once, so no
/// wake-up is lost.
pub struct Event {
    count: AtomicU32,
}

impl Event {
    pub const fn new() -> Self {
        Event { count: AtomicU32::new(0) }
    }

    pub fn current(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn bump(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn wait(&self, seen: u32) {
        futex_wait(&self.count, seen);
    }

    pub fn wake_all(&self) {
        futex_wake(&self.count, i32::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    /// Four threads increment a plain (non-atomic read-modify-write) counter under the
    /// lock; a lost update shows the lock does not exclude.
    #[test]
    fn lock_excludes() {
        struct Shared {
            lock: Lock,
            value: AtomicUsize,
        }
        let shared = Arc::new(Shared { lock: Lock::new(), value: AtomicUsize::new(0) });
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = shared.clone();
                std::thread::spawn(move || {
                    for _ in 0..50_000 {
                        s.lock.lock();
                        let v = s.value.load(Ordering::Relaxed);
                        std::hint::spin_loop();
                        s.value.store(v + 1, Ordering::Relaxed);
                        s.lock.unlock();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(shared.value.load(Ordering::Relaxed), 200_000);
    }

    /// A waiter that read the event before the notifier bumped it does not sleep forever.
    #[test]
    fn event_wakes_waiter() {
        struct Shared {
            lock: Lock,
            event: Event,
            ready: AtomicUsize,
        }
        let s = Arc::new(Shared { lock: Lock::new(), event: Event::new(), ready: AtomicUsize::new(0) });
        let waiter = {
            let s = s.clone();
            std::thread::spawn(move || {
                s.lock.lock();
                while s.ready.load(Ordering::Relaxed) == 0 {
                    let seen = s.event.current();
                    s.lock.unlock();
                    s.event.wait(seen);
                    s.lock.lock();
                }
                s.lock.unlock();
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        s.lock.lock();
        s.ready.store(1, Ordering::Relaxed);
        s.event.bump();
        s.lock.unlock();
        s.event.wake_all();
        waiter.join().unwrap();
    }
}
