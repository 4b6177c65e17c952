//! The entry point `pulp-trigger` calls in a hijacked thread, its request buffer, and the
//! runtime's constructor.
//!
//! The entry takes the length of the request the tool wrote into the buffer
//! ([`crate::area`], which `pulp_rs_prepare` maps first), returns an
//! [`EntryStatus`] and writes its reply into the same buffer. It runs on the runtime's own
//! stack, claimed by the hijack stub (`trm/asm/hijack.S`), so a thread with a small stack
//! can be borrowed. No panic leaves it: it becomes a refusal carrying the panic message.

use crate::registry::Claim;
use crate::{area, messages};
use pulp_meta::abi::{self, EntryStatus, Request};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Serve the request held in the first `len` bytes of the buffer.
pub extern "C" fn pulp_rs_entry(len: usize) -> i64 {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut claim = Claim::get()?;
        let reg = claim.registry();
        // SAFETY: the claim is held, so no other entry uses the buffer, and the tool does
        // not touch it while an entry runs (`crate::area`).
        let buf = unsafe { area::buffer() }.ok_or("no request buffer (the tool did not prepare one)")?;
        if len > buf.len() {
            return Err(format!("request of {len} bytes exceeds the runtime's {}-byte buffer", buf.len()));
        }
        let request = buf[..len].to_vec();
        area::give_back(len);
        let req = Request::decode(&request).ok_or("malformed request")?;
        let status = crate::request::serve(reg, &req, buf);
        reg.publish();
        status
    }));
    // SAFETY: as above; the claim is released, but this thread is the only one running
    // an entry (the tool waits for it to return before it reads the buffer), and the
    // closure's reference to the buffer is gone.
    let mut buf = unsafe { area::buffer() };
    let mut refuse = |msg: &str| {
        if let Some(buf) = buf.as_deref_mut() {
            abi::encode_message(msg, buf);
        }
        EntryStatus::Refused as i64
    };
    match outcome {
        Ok(Ok(status)) => status as i64,
        Ok(Err(msg)) => refuse(&msg),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            let msg = format!("internal error in the runtime: {what}");
            messages::log(&msg);
            refuse(&msg)
        }
    }
}

/// The constructor: only what a process that is never patched needs, since the runtime
/// is preloaded into every process of a machine (`pulp-bench startup` measures it): the
/// operator's exclusions and the patch
/// directory (`crate::patchdir`: one `open` when it is absent). The entry stack and the
/// request buffer wait for the first request (`crate::area`), the `membarrier(SYNC_CORE)`
/// registration for the first request that writes code (`code::sync_core`), reading
/// `/proc/self/status` for a seccomp filter for the first time the runtime writes its own
/// code. What it runs in a process that is not excluded and has no patch installed lies
/// in `.text.pulp_start`, beside the C runtime's and std's start code (`runtime/build.rs`).
#[used]
#[link_section = ".init_array"]
static CONSTRUCTOR: extern "C" fn() = constructor;

#[link_section = ".text.pulp_start"]
extern "C" fn constructor() {
    // No panic may leave a constructor: it would abort the process before `main`.
    let _ = catch_unwind(crate::patchdir::at_load);
}
