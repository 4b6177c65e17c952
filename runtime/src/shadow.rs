//! Shadow variables: data a patch attaches to existing objects of the target, keyed by
//! (object pointer, id), without changing their layout (the kernel livepatch's
//! `klp_shadow_*`). The C API and its rules are in `runtime/include/pulp.h`; the lifetime
//! rules in `docs/lifecycle.md`.
//!
//! - [`table`]: where shadows live: 64 shards, each an open-addressed table read without
//!   locks under a sequence counter, so `pulp_shadow_get` is a hash and a probe;
//! - [`lock`]: the writers' futex lock and the event constructors' waiters sleep on.
//!
//! Constructors and destructors are the caller's C code: they run with no lock of ours
//! held, so they may call any `pulp_shadow_*` function (a constructor asking for its own
//! shadow gets `EDEADLK` instead of waiting for itself). A constructor runs before its
//! shadow becomes visible and exactly once per shadow: threads asking for the same key
//! meanwhile wait for it. Shadow data is allocated with `calloc` and freed with `free`,
//! the target's own allocator.

mod lock;
mod table;

use std::ffi::{c_int, c_ulong, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;
use table::{Key, Shard, SHARD_BITS};

/// `int (*)(void *obj, void *shadow_data, void *ctor_data)`: 0 keeps the shadow.
pub type Ctor = Option<unsafe extern "C" fn(*mut c_void, *mut c_void, *mut c_void) -> c_int>;
/// `void (*)(void *obj, void *shadow_data)`: runs before the data is freed.
pub type Dtor = Option<unsafe extern "C" fn(*mut c_void, *mut c_void)>;

static SHARDS: [Shard; 1 << SHARD_BITS] = [const { Shard::new() }; 1 << SHARD_BITS];

fn shard_of(key: &Key) -> &'static Shard {
    &SHARDS[key.shard()]
}

/// How many entries `pulp_shadow_free_all` takes out of a shard per lock hold: its
/// `(obj, data)` pairs sit on the stack until their destructors ran, unlocked.
const FREE_BATCH: usize = 256;

fn set_errno(value: c_int) {
    // SAFETY: __errno_location returns this thread's errno, always valid.
    unsafe { *libc::__errno_location() = value };
}

/// Run `f`; a panic (a bug of ours) becomes `on_panic` instead of unwinding into C.
fn guarded<R>(on_panic: R, f: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(on_panic)
}

/// Keep every shard consistent across `fork()`: the child has only the forking thread, so
/// a lock held by another thread at the fork would never be released there, and a table
/// could be half-changed. The handlers take every shard lock before the fork and release
/// them on both sides (as the C library does for `malloc`). Installed with the first
/// change of the table; until then there is nothing to protect.
fn install_fork_handlers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: the three handlers are plain functions of this object, which is never
        // unloaded (it is preloaded). If registration fails (ENOMEM) shadows still work;
        // only a fork racing with a writer could leave the child's table locked.
        unsafe { libc::pthread_atfork(Some(before_fork), Some(after_fork_parent), Some(after_fork_child)) };
    });
}

extern "C" fn before_fork() {
    // Always in the same order; no thread holds two shard locks otherwise.
    SHARDS.iter().for_each(Shard::lock_for_fork);
}

extern "C" fn after_fork_parent() {
    SHARDS.iter().for_each(Shard::unlock_after_fork);
}

extern "C" fn after_fork_child() {
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() };
    SHARDS.iter().for_each(|s| s.reset_after_fork(me));
}

/// The shadow data of `obj` under `id`, or NULL. See `pulp.h`.
#[no_mangle]
pub extern "C" fn pulp_shadow_get(obj: *mut c_void, id: c_ulong) -> *mut c_void {
    guarded(std::ptr::null_mut(), || {
        let key = Key::new(obj as usize, id);
        shard_of(&key).get(&key) as *mut c_void
    })
}

/// Attach a new shadow; NULL when one exists (`EEXIST`). See `pulp.h`.
#[no_mangle]
pub extern "C" fn pulp_shadow_alloc(
    obj: *mut c_void,
    id: c_ulong,
    size: usize,
    ctor: Ctor,
    ctor_data: *mut c_void,
) -> *mut c_void {
    create(obj, id, size, ctor, ctor_data, true)
}

/// The existing shadow, or a new one. See `pulp.h`.
#[no_mangle]
pub extern "C" fn pulp_shadow_get_or_alloc(
    obj: *mut c_void,
    id: c_ulong,
    size: usize,
    ctor: Ctor,
    ctor_data: *mut c_void,
) -> *mut c_void {
    create(obj, id, size, ctor, ctor_data, false)
}

/// Detach and free one shadow; 1 if there was one. See `pulp.h`.
#[no_mangle]
pub extern "C" fn pulp_shadow_free(obj: *mut c_void, id: c_ulong, dtor: Dtor) -> c_int {
    guarded(0, || {
        install_fork_handlers();
        let key = Key::new(obj as usize, id);
        let Some(data) = shard_of(&key).write().remove(&key) else { return 0 };
        // The shadow is out of the table and the lock released: run the destructor.
        destroy(obj as usize, data, dtor);
        1
    })
}

/// Detach and free every shadow of `id`; how many. See `pulp.h`.
#[no_mangle]
pub extern "C" fn pulp_shadow_free_all(id: c_ulong, dtor: Dtor) -> usize {
    guarded(0, || {
        install_fork_handlers();
        let mut freed = 0;
        let mut batch = [(0usize, 0usize); FREE_BATCH];
        for shard in &SHARDS {
            loop {
                let n = shard.write().take_batch(id, &mut batch);
                for &(obj, data) in &batch[..n] {
                    destroy(obj, data, dtor);
                }
                freed += n;
                if n < batch.len() {
                    break;
                }
            }
        }
        freed
    })
}

/// Run the destructor on data no longer in the table, then free it.
fn destroy(obj: usize, data: usize, dtor: Dtor) {
    if let Some(dtor) = dtor {
        // SAFETY: the caller's destructor, called as pulp.h promises: the object pointer
        // it gave and the data, still allocated.
        unsafe { dtor(obj as *mut c_void, data as *mut c_void) };
    }
    // SAFETY: `data` came from calloc in `create` and left the table, so nothing of ours
    // refers to it any more.
    unsafe { libc::free(data as *mut c_void) };
}

/// `pulp_shadow_alloc` (`exclusive`) and `pulp_shadow_get_or_alloc`.
fn create(
    obj: *mut c_void,
    id: c_ulong,
    size: usize,
    ctor: Ctor,
    ctor_data: *mut c_void,
    exclusive: bool,
) -> *mut c_void {
    let result = guarded(Err(libc::ENOTRECOVERABLE), || try_create(obj, id, size, ctor, ctor_data, exclusive));
    match result {
        Ok(data) => data as *mut c_void,
        Err(errno) => {
            set_errno(errno);
            std::ptr::null_mut()
        }
    }
}

fn try_create(
    obj: *mut c_void,
    id: c_ulong,
    size: usize,
    ctor: Ctor,
    ctor_data: *mut c_void,
    exclusive: bool,
) -> Result<usize, c_int> {
    let key = Key::new(obj as usize, id);
    let shard = shard_of(&key);
    if !exclusive {
        let data = shard.get(&key);
        if data != 0 {
            return Ok(data);
        }
    }
    install_fork_handlers();
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() };
    let mut w = shard.write();
    loop {
        if let Some(data) = w.find(&key) {
            return if exclusive { Err(libc::EEXIST) } else { Ok(data) };
        }
        match w.pending_owner(&key) {
            // SAFETY: pthread_equal only compares its arguments.
            Some(owner) if unsafe { libc::pthread_equal(owner, me) } != 0 => return Err(libc::EDEADLK),
            // Another thread is constructing this very shadow: wait for its outcome.
            Some(_) => w.wait_for_constructor(),
            None => break,
        }
    }
    if !w.reserve() {
        return Err(libc::ENOMEM);
    }
    // SAFETY: calloc has no preconditions; size 0 still gets a unique pointer.
    let data = unsafe { libc::calloc(1, size.max(1)) } as usize;
    if data == 0 {
        return Err(libc::ENOMEM);
    }
    let Some(ctor) = ctor else {
        w.insert(&key, data);
        return Ok(data);
    };
    if !w.add_pending(&key, me) {
        drop(w);
        // SAFETY: allocated above, never published.
        unsafe { libc::free(data as *mut c_void) };
        return Err(libc::ENOMEM);
    }
    // SAFETY: the caller's constructor, called as pulp.h promises, with no lock held.
    // Nothing of ours can panic between add_pending and finish_pending, so the pending
    // entry is always resolved and its waiters woken.
    let rc = w.unlocked(|| unsafe { ctor(obj, data as *mut c_void, ctor_data) });
    w.finish_pending(&key);
    if rc != 0 {
        drop(w);
        // SAFETY: allocated above, never published.
        unsafe { libc::free(data as *mut c_void) };
        return Err(libc::ECANCELED);
    }
    w.insert(&key, data); // room reserved before the constructor ran
    Ok(data)
}

#[cfg(test)]
mod tests {
    //! The C API called as C calls it. Every test uses its own ids: the table is global and
    //! the tests run in parallel.
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

    fn errno() -> c_int {
        // SAFETY: this thread's errno.
        unsafe { *libc::__errno_location() }
    }

    fn obj(n: usize) -> *mut c_void {
        (0x6000_0000_0000 + n * 48) as *mut c_void
    }

    /// Shadow data the constructors below write: who it belongs to, and a value.
    #[repr(C)]
    struct Data {
        obj: usize,
        value: usize,
    }

    /// ctor_data: a counter of calls and the value to store.
    struct Counted {
        calls: AtomicUsize,
        value: usize,
        /// Fail (return 1) while `calls` (before this call) is below this.
        fail_first: usize,
        /// Sleep this long inside, to let other threads pile up.
        sleep_ms: u64,
    }

    impl Counted {
        fn new(value: usize) -> Counted {
            Counted { calls: AtomicUsize::new(0), value, fail_first: 0, sleep_ms: 0 }
        }
        fn as_arg(&self) -> *mut c_void {
            self as *const Counted as *mut c_void
        }
    }

    unsafe extern "C" fn counted_ctor(obj: *mut c_void, data: *mut c_void, arg: *mut c_void) -> c_int {
        // SAFETY: every test passes a live `Counted` as ctor_data and a size of at least
        // `size_of::<Data>()`, and the runtime hands the constructor that data.
        let c = &*(arg as *const Counted);
        let call = c.calls.fetch_add(1, Ordering::SeqCst);
        if c.sleep_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(c.sleep_ms));
        }
        let d = &mut *(data as *mut Data);
        assert_eq!((d.obj, d.value), (0, 0), "shadow data not zeroed");
        *d = Data { obj: obj as usize, value: c.value };
        c_int::from(call < c.fail_first)
    }

    static DTOR_CALLS: AtomicUsize = AtomicUsize::new(0);
    static DTOR_SUM: AtomicUsize = AtomicUsize::new(0);

    /// Checks the data belongs to `obj`, then counts it (only used by `free_all_*`).
    unsafe extern "C" fn checking_dtor(obj: *mut c_void, data: *mut c_void) {
        // SAFETY: only used on shadows `counted_ctor` filled; still allocated here.
        let d = &*(data as *const Data);
        assert_eq!(d.obj, obj as usize, "destructor got another object's data");
        DTOR_CALLS.fetch_add(1, Ordering::SeqCst);
        DTOR_SUM.fetch_add(d.value, Ordering::SeqCst);
    }

    #[test]
    fn alloc_get_free() {
        const ID: c_ulong = 0x1001;
        let o = obj(1);
        assert!(pulp_shadow_get(o, ID).is_null());
        let p = pulp_shadow_alloc(o, ID, 64, None, std::ptr::null_mut());
        assert!(!p.is_null());
        // SAFETY: 64 bytes of shadow data.
        assert!(unsafe { std::slice::from_raw_parts(p as *const u8, 64) }.iter().all(|&b| b == 0));
        assert_eq!(p as usize % 16, 0, "shadow data aligned like malloc's");
        assert_eq!(pulp_shadow_get(o, ID), p);
        assert!(pulp_shadow_get(o, ID + 1).is_null(), "another id of the same object");
        assert!(pulp_shadow_get(obj(2), ID).is_null(), "another object with the same id");
        assert!(pulp_shadow_alloc(o, ID, 64, None, std::ptr::null_mut()).is_null());
        assert_eq!(errno(), libc::EEXIST);
        assert_eq!(pulp_shadow_get_or_alloc(o, ID, 64, None, std::ptr::null_mut()), p);
        assert_eq!(pulp_shadow_free(o, ID, None), 1);
        assert!(pulp_shadow_get(o, ID).is_null());
        assert_eq!(pulp_shadow_free(o, ID, None), 0);
    }

    #[test]
    fn null_object_and_size_zero() {
        const ID: c_ulong = 0x1002;
        let a = pulp_shadow_alloc(std::ptr::null_mut(), ID, 0, None, std::ptr::null_mut());
        let b = pulp_shadow_alloc(obj(3), ID, 0, None, std::ptr::null_mut());
        assert!(!a.is_null() && !b.is_null() && a != b);
        assert_eq!(pulp_shadow_get(std::ptr::null_mut(), ID), a);
        assert_eq!(pulp_shadow_free_all(ID, None), 2);
    }

    #[test]
    fn constructor_runs_once() {
        const ID: c_ulong = 0x1003;
        let c = Counted::new(42);
        let p = pulp_shadow_get_or_alloc(obj(4), ID, std::mem::size_of::<Data>(), Some(counted_ctor), c.as_arg());
        assert!(!p.is_null());
        let q = pulp_shadow_get_or_alloc(obj(4), ID, std::mem::size_of::<Data>(), Some(counted_ctor), c.as_arg());
        assert_eq!(p, q);
        assert_eq!(c.calls.load(Ordering::SeqCst), 1);
        // SAFETY: the constructor filled a Data.
        let d = unsafe { &*(p as *const Data) };
        assert_eq!((d.obj, d.value), (obj(4) as usize, 42));
        pulp_shadow_free(obj(4), ID, None);
    }

    #[test]
    fn failing_constructor_leaves_nothing() {
        const ID: c_ulong = 0x1004;
        let c = Counted { fail_first: 1, ..Counted::new(7) };
        let size = std::mem::size_of::<Data>();
        assert!(pulp_shadow_alloc(obj(5), ID, size, Some(counted_ctor), c.as_arg()).is_null());
        assert_eq!(errno(), libc::ECANCELED);
        assert!(pulp_shadow_get(obj(5), ID).is_null());
        let p = pulp_shadow_alloc(obj(5), ID, size, Some(counted_ctor), c.as_arg());
        assert!(!p.is_null(), "a second attempt succeeds");
        assert_eq!(pulp_shadow_get(obj(5), ID), p);
        assert_eq!(pulp_shadow_free(obj(5), ID, None), 1);
    }

    /// What the re-entering constructor saw.
    struct Reentry {
        own: *mut c_void,
        own_errno: c_int,
        other: *mut c_void,
    }

    unsafe extern "C" fn reentering_ctor(obj: *mut c_void, _data: *mut c_void, arg: *mut c_void) -> c_int {
        // SAFETY: the test passes its live `Reentry` as ctor_data.
        let r = &mut *(arg as *mut Reentry);
        // Its own shadow: it is being built by this very call.
        r.own = pulp_shadow_get_or_alloc(obj, 0x1005, 8, None, std::ptr::null_mut());
        r.own_errno = errno();
        // Another shadow of the same object, with its own constructor: no lock is held.
        let c = Counted::new(1);
        r.other = pulp_shadow_get_or_alloc(obj, 0x1006, 16, Some(counted_ctor), c.as_arg());
        0
    }

    #[test]
    fn constructor_may_call_the_api() {
        let mut r = Reentry { own: std::ptr::null_mut(), own_errno: 0, other: std::ptr::null_mut() };
        let p = pulp_shadow_alloc(obj(6), 0x1005, 8, Some(reentering_ctor), &mut r as *mut Reentry as *mut c_void);
        assert!(!p.is_null());
        assert!(r.own.is_null());
        assert_eq!(r.own_errno, libc::EDEADLK);
        assert!(!r.other.is_null());
        assert_eq!(pulp_shadow_get(obj(6), 0x1006), r.other);
        assert_eq!(pulp_shadow_free(obj(6), 0x1005, None) + pulp_shadow_free(obj(6), 0x1006, None), 2);
    }

    /// `f(c)` in `n` threads released together; their results in thread order.
    fn race<T: Send + 'static>(n: usize, c: &Arc<Counted>, f: fn(&Counted) -> T) -> Vec<T> {
        let barrier = Arc::new(Barrier::new(n));
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let (c, barrier) = (c.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    f(&c)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    }

    /// Threads asking for the same shadow while its constructor sleeps: one constructor
    /// call, one pointer for all.
    #[test]
    fn racing_get_or_alloc_constructs_once() {
        const ID: c_ulong = 0x1007;
        let c = Arc::new(Counted { sleep_ms: 30, ..Counted::new(9) });
        let got = race(8, &c, |c| {
            pulp_shadow_get_or_alloc(obj(7), ID, std::mem::size_of::<Data>(), Some(counted_ctor), c.as_arg()) as usize
        });
        assert_eq!(c.calls.load(Ordering::SeqCst), 1);
        assert!(got[0] != 0 && got.iter().all(|&p| p == got[0]), "{got:x?}");
        pulp_shadow_free(obj(7), ID, None);
    }

    /// The first constructor fails while others wait: one of them constructs it instead.
    #[test]
    fn waiters_retry_after_a_failed_constructor() {
        const ID: c_ulong = 0x1008;
        let c = Arc::new(Counted { sleep_ms: 30, fail_first: 1, ..Counted::new(9) });
        let got = race(4, &c, |c| {
            let p = pulp_shadow_get_or_alloc(obj(8), ID, std::mem::size_of::<Data>(), Some(counted_ctor), c.as_arg());
            (p as usize, errno())
        });
        assert_eq!(c.calls.load(Ordering::SeqCst), 2, "the failed call and one more");
        let made: Vec<usize> = got.iter().filter(|(p, _)| *p != 0).map(|(p, _)| *p).collect();
        assert_eq!(made.len(), 3, "{got:x?}");
        assert!(made.iter().all(|&p| p == made[0]));
        assert!(got.iter().any(|&(p, e)| p == 0 && e == libc::ECANCELED));
        pulp_shadow_free(obj(8), ID, None);
    }

    /// Racing `alloc`s: exactly one wins, the others get EEXIST.
    #[test]
    fn racing_alloc_has_one_winner() {
        const ID: c_ulong = 0x1009;
        let c = Arc::new(Counted { sleep_ms: 10, ..Counted::new(1) });
        let got = race(6, &c, |c| {
            let p = pulp_shadow_alloc(obj(9), ID, std::mem::size_of::<Data>(), Some(counted_ctor), c.as_arg());
            (p as usize, errno())
        });
        assert_eq!(got.iter().filter(|(p, _)| *p != 0).count(), 1, "{got:x?}");
        assert!(got.iter().all(|&(p, e)| p != 0 || e == libc::EEXIST), "{got:x?}");
        assert_eq!(c.calls.load(Ordering::SeqCst), 1);
        pulp_shadow_free(obj(9), ID, None);
    }

    /// `free_all` of one id: more entries per shard than one batch, other ids untouched,
    /// each destructor called once with its own object's data.
    #[test]
    fn free_all_frees_exactly_one_id() {
        const ID: c_ulong = 0x100a;
        const OTHER: c_ulong = 0x100b;
        const N: usize = 40_000; // ~625 per shard: several batches
        let size = std::mem::size_of::<Data>();
        for n in 0..N {
            let c = Counted::new(n);
            assert!(!pulp_shadow_alloc(obj(100 + n), ID, size, Some(counted_ctor), c.as_arg()).is_null());
            if n % 4 == 0 {
                assert!(!pulp_shadow_alloc(obj(100 + n), OTHER, size, Some(counted_ctor), c.as_arg()).is_null());
            }
        }
        let (calls, sum) = (DTOR_CALLS.load(Ordering::SeqCst), DTOR_SUM.load(Ordering::SeqCst));
        assert_eq!(pulp_shadow_free_all(ID, Some(checking_dtor)), N);
        assert_eq!(DTOR_CALLS.load(Ordering::SeqCst) - calls, N);
        assert_eq!(DTOR_SUM.load(Ordering::SeqCst) - sum, N * (N - 1) / 2);
        for n in 0..N {
            assert!(pulp_shadow_get(obj(100 + n), ID).is_null());
            let other = pulp_shadow_get(obj(100 + n), OTHER);
            if n % 4 == 0 {
                // SAFETY: a Data written by counted_ctor.
                assert_eq!(unsafe { (*(other as *const Data)).value }, n);
            } else {
                assert!(other.is_null());
            }
        }
        assert_eq!(pulp_shadow_free_all(ID, Some(checking_dtor)), 0);
        assert_eq!(pulp_shadow_free_all(OTHER, None), N / 4);
    }
}
