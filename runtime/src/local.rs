//! Applying a patch from inside the process, without a tool (the patch directory): the
//! same registry steps as a request from `pulp-trigger`, with the code written by the
//! runtime itself through `/proc/self/mem` (which, like the tool's writes, changes no page
//! protection) and the transition finished at once. Only done where no thread can be
//! running the functions concerned: at process start while it has one thread, or for a
//! target the dynamic linker has just mapped and not yet run.

use crate::registry::{self, Object, Registry};
use pulp_meta::abi::{self, EntryStatus};
use pulp_meta::prologue::{self, Tables};
use std::os::unix::fs::FileExt;

/// Apply `meta_bytes` (a `patch.meta`) with `object`, immediately.
pub fn apply(reg: &mut Registry, meta_bytes: &[u8], object: Object<'_>) -> Result<EntryStatus, String> {
    let writer = CodeWriter::require()?;
    // Room for a reply naming every descriptor the runtime has.
    let mut buf = vec![0u8; 4 + pulp_trm::DESC_COUNT * abi::FUNC_REPLY_SIZE];
    let status = registry::apply(reg, meta_bytes, &[], &[], object, &mut buf)?;
    writer.write_reply(&buf)?;
    if status == EntryStatus::Transition {
        registry::finish(reg, true, &mut buf)?;
        writer.write_reply(&buf)?;
    }
    Ok(status)
}

/// The process's own code, open for writing through `/proc/self/mem`.
pub struct CodeWriter(std::fs::File);

impl CodeWriter {
    /// `None` where the process may not write its own code: under a seccomp filter (a
    /// system call it does not expect might kill it; a filter can be added at any time,
    /// never removed, so a "no" is kept), or without a writable `/proc/self/mem`.
    pub fn open() -> Option<Self> {
        static NEVER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if NEVER.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        if !crate::entry::seccomp_free() {
            NEVER.store(true, std::sync::atomic::Ordering::Relaxed);
            return None;
        }
        std::fs::OpenOptions::new().read(true).write(true).open("/proc/self/mem").ok().map(Self)
    }

    /// As `open`, with the reason as an error.
    pub fn require() -> Result<Self, String> {
        Self::open().ok_or_else(|| "this process cannot write its own code (a seccomp filter, or no /proc)".into())
    }

    /// Write `bytes` at `addr`.
    pub fn write(&self, addr: u64, bytes: &[u8]) -> Result<(), String> {
        self.0.write_all_at(bytes, addr).map_err(|e| format!("cannot write code at {addr:#x}: {e}"))
    }

    /// Write the code the reply in `buf` asks for (see `prologue::code_writes`).
    pub fn write_reply(&self, buf: &[u8]) -> Result<(), String> {
        let replies = abi::decode_reply(buf).ok_or("the runtime's own reply is malformed")?;
        let tables = Tables {
            descs: pulp_trm::descriptors().as_ptr() as u64,
            desc_size: std::mem::size_of::<abi::Descriptor>() as u64,
            far_stubs: pulp_trm::far_stub(0) as u64,
        };
        let writes = prologue::code_writes(&replies, tables, |addr, len| {
            let mut b = vec![0u8; len];
            self.0.read_exact_at(&mut b, addr).ok().map(|_| b)
        })?;
        for (addr, bytes) in &writes.pads {
            self.write(*addr, bytes)?;
        }
        if !writes.pads.is_empty() {
            crate::entry::sync_core();
        }
        for (at, plan) in &writes.entries {
            for (offset, byte) in plan {
                self.write(at + offset, &[*byte])?;
            }
        }
        Ok(())
    }
}
