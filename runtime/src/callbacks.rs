//! Callbacks a patch object may export (declared in `runtime/include/pulp.h`), run as the
//! kernel livepatch runs its own:
//!
//! - `int pulp_pre_patch(char *why, size_t size)`: before the patch can run anywhere; a
//!   non-zero result refuses the patch (`why` says why) and nothing changes;
//! - `void pulp_post_patch(void)`: after every thread runs the patch;
//! - `void pulp_pre_unpatch(void)`: before a revert starts;
//! - `void pulp_post_unpatch(void)`: after no thread runs the patch any more.
//!
//! A transition turned around runs the callbacks of where it ends, and only those whose
//! counterpart ran: an apply reversed runs `post_unpatch` (its `pre_patch` ran), a revert
//! reversed runs `post_patch`. Patches replaced by a cumulative patch run none (the
//! cumulative patch's own callbacks take over, as in the kernel).
//!
//! They run in the thread `pulp-trigger` borrowed, on the runtime's entry stack, with
//! every signal blocked, in a guarded call: one that crashes or does not return within
//! the tool's time limit is abandoned (the tool sends the thread back here), which
//! refuses the patch for `pre_patch` and is reported for the others.

use crate::loader::{describe, PatchObject};
use std::sync::Mutex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Callback {
    PrePatch,
    PostPatch,
    PreUnpatch,
    PostUnpatch,
}

impl Callback {
    pub fn symbol(self) -> &'static str {
        match self {
            Self::PrePatch => "pulp_pre_patch",
            Self::PostPatch => "pulp_post_patch",
            Self::PreUnpatch => "pulp_pre_unpatch",
            Self::PostUnpatch => "pulp_post_unpatch",
        }
    }
}

/// Bytes a `pre_patch` callback may write to say why it refuses.
const WHY_LEN: usize = 1024;

/// The states (`%state ID VERSION`) of the applied patches, as `pulp_state_version`
/// answers: while a callback runs, those of the patches other than its own.
static STATES: Mutex<Vec<(u64, u32)>> = Mutex::new(Vec::new());

/// Set what `pulp_state_version` answers.
pub fn set_states(states: Vec<(u64, u32)>) {
    *STATES.lock().unwrap_or_else(|p| p.into_inner()) = states;
}

/// The version of state `id` the applied patches declare (the highest), or -1: for a
/// callback, what setup earlier patches already did. See `pulp.h`.
#[no_mangle]
pub extern "C" fn pulp_state_version(id: libc::c_ulong) -> libc::c_long {
    let states = STATES.lock().unwrap_or_else(|p| p.into_inner());
    states.iter().filter(|s| s.0 == id).map(|s| s.1 as libc::c_long).max().unwrap_or(-1)
}

/// Run `cb` of `object` if it exports it, with `states` answered meanwhile. `Err` when
/// `pre_patch` refuses, or when the callback crashed or hung and was abandoned.
pub fn run(object: &PatchObject, cb: Callback, states: Vec<(u64, u32)>) -> Result<(), String> {
    let Some(addr) = object.find(cb.symbol()) else { return Ok(()) };
    set_states(states);
    let mut why = [0u8; WHY_LEN];
    let outcome = pulp_trm::guarded(|| match cb {
        Callback::PrePatch => {
            // SAFETY: the patch object exports `pulp_pre_patch` with the signature pulp.h
            // declares; `why` is a writable buffer of the size passed.
            let f: extern "C" fn(*mut libc::c_char, usize) -> libc::c_int = unsafe { std::mem::transmute(addr) };
            f(why.as_mut_ptr().cast(), WHY_LEN - 1)
        }
        _ => {
            // SAFETY: the other callbacks take nothing and return nothing (pulp.h).
            let f: extern "C" fn() = unsafe { std::mem::transmute(addr) };
            f();
            0
        }
    });
    match outcome {
        Ok(0) => Ok(()),
        Ok(rc) => {
            let end = why.iter().position(|&b| b == 0).unwrap_or(WHY_LEN - 1);
            let text = String::from_utf8_lossy(&why[..end]).trim().to_string();
            let text = if text.is_empty() { format!("it returned {rc}") } else { text };
            Err(format!("the patch's {} refused it: {text}", cb.symbol()))
        }
        Err(abandoned) => Err(format!("the patch's {} {}", cb.symbol(), describe(abandoned))),
    }
}
