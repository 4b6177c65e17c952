//! Holding back the signals that end a tool while it has a step to finish.

/// Signals blocked in the calling thread (threads it starts inherit the mask) until the
/// guard is dropped, when the mask it found is restored and pending signals are delivered.
pub struct BlockedSignals {
    set: libc::sigset_t,
    old: libc::sigset_t,
}

impl BlockedSignals {
    pub fn new(signals: &[i32]) -> Self {
        // SAFETY: sigset_t is plain data; sigemptyset/sigaddset/pthread_sigmask only
        // write the sets passed to them, which live on this stack frame.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &sig in signals {
                libc::sigaddset(&mut set, sig);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            Self { set, old }
        }
    }

    /// The signals blocked.
    pub fn set(&self) -> &libc::sigset_t {
        &self.set
    }

    /// Put the mask found back now (the guard then has nothing left to do but repeat it).
    pub fn restore(&self) {
        // SAFETY: restores the mask saved in `new`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        self.restore();
    }
}
