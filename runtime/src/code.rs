//! Writing the process's own code from inside it, and making every thread see it: the
//! writer over `/proc/self/mem` (which, like the tool's writes, changes no page
//! protection), the `membarrier(SYNC_CORE)` barrier, and the seccomp check that decides
//! whether either may be used. The bottom layer: it knows nothing of patches.

use pulp_meta::abi::{self, EntryStatus};
use pulp_meta::prologue::{self, Tables};

/// Whether `/proc/self/status` says `Seccomp: 0`. Reads it with plain open/read/close
/// (which any filter must allow for the program to run at all) into a stack buffer.
#[link_section = ".text.pulp_start"]
pub fn seccomp_free() -> bool {
    let mut buf = [0u8; 4096];
    // SAFETY: a static NUL-terminated path; the fd is closed below.
    let fd = unsafe { libc::open(c"/proc/self/status".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return false;
    }
    let mut len = 0;
    while len < buf.len() {
        // SAFETY: reads at most the rest of `buf`, which outlives the call.
        let n = unsafe { libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len) };
        if n <= 0 {
            break;
        }
        len += n as usize;
    }
    // SAFETY: `fd` was opened above and is not used afterwards.
    unsafe { libc::close(fd) };
    let status = &buf[..len];
    status.windows(11).any(|w| w == b"\nSeccomp:\t0")
}

const MEMBARRIER_REGISTER_SYNC_CORE: libc::c_long = 1 << 6; // MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE
const MEMBARRIER_SYNC_CORE: libc::c_long = 1 << 5; // MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE

/// Make every thread of the process serialise its instruction stream before the tool
/// flips function entries, so that no core runs stale bytes of a freshly written pad.
/// (x86 keeps code coherent in practice; this is the architectural guarantee.)
#[link_section = ".text.pulp_start"]
pub fn sync_core() -> EntryStatus {
    // SAFETY: membarrier takes no pointers; failure (an old kernel) only returns -1.
    let ok = unsafe {
        libc::syscall(libc::SYS_membarrier, MEMBARRIER_REGISTER_SYNC_CORE, 0, 0) == 0
            && libc::syscall(libc::SYS_membarrier, MEMBARRIER_SYNC_CORE, 0, 0) == 0
    };
    if ok {
        EntryStatus::Done
    } else {
        EntryStatus::NothingToDo
    }
}

/// Why [`CodeWriter::open`] gave nothing.
pub const CANNOT_WRITE: &str = "this process cannot write its own code (a seccomp filter, or no /proc)";

/// The process's own code, open for writing through `/proc/self/mem`, with plain system
/// calls and no allocation: the linker hook the start installs uses it
/// (`crate::patchdir`), so it lies in `.text.pulp_start`.
pub struct CodeWriter(libc::c_int);

impl CodeWriter {
    /// `None` where the process may not write its own code: under a seccomp filter (a
    /// system call it does not expect might kill it; a filter can be added at any time,
    /// never removed, so a "no" is kept), or without a writable `/proc/self/mem`.
    #[link_section = ".text.pulp_start"]
    pub fn open() -> Option<Self> {
        #[link_section = ".data.pulp_start"]
        static NEVER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if NEVER.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        if !seccomp_free() {
            NEVER.store(true, std::sync::atomic::Ordering::Relaxed);
            return None;
        }
        // SAFETY: a static NUL-terminated path; the descriptor is closed by `drop`.
        let fd = unsafe { libc::open(c"/proc/self/mem".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        (fd >= 0).then_some(Self(fd))
    }

    /// As `open`, with the reason as an error.
    pub fn require() -> Result<Self, String> {
        Self::open().ok_or_else(|| CANNOT_WRITE.into())
    }

    /// Write `bytes` at `addr`.
    #[link_section = ".text.pulp_start"]
    pub fn write(&self, addr: u64, bytes: &[u8]) -> Result<(), String> {
        // SAFETY: pwrite reads `bytes.len()` bytes of `bytes`; the descriptor is ours.
        let n = unsafe { libc::pwrite(self.0, bytes.as_ptr().cast(), bytes.len(), addr as libc::off_t) };
        if n == bytes.len() as isize {
            Ok(())
        } else {
            Err(failed("write", addr))
        }
    }

    /// `len` bytes at `addr`.
    pub fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        let mut b = vec![0u8; len];
        // SAFETY: pread writes at most `len` bytes into `b`, which holds `len`.
        let n = unsafe { libc::pread(self.0, b.as_mut_ptr().cast(), len, addr as libc::off_t) };
        (n == len as isize).then_some(b)
    }

    /// Write the code the reply in `buf` asks for (see `prologue::code_writes`).
    pub fn write_reply(&self, buf: &[u8]) -> Result<(), String> {
        let replies = abi::decode_reply(buf).ok_or("the runtime's own reply is malformed")?;
        let tables = Tables {
            descs: pulp_trm::descriptors().as_ptr() as u64,
            desc_size: std::mem::size_of::<abi::Descriptor>() as u64,
            far_stubs: pulp_trm::far_stub(0) as u64,
        };
        let writes = prologue::code_writes(&replies, tables, |addr, len| self.read(addr, len))?;
        for (addr, bytes) in &writes.pads {
            self.write(*addr, bytes)?;
        }
        if !writes.pads.is_empty() {
            sync_core();
        }
        for (at, plan) in &writes.entries {
            for (offset, byte) in plan {
                self.write(at + offset, &[*byte])?;
            }
        }
        Ok(())
    }
}

impl Drop for CodeWriter {
    fn drop(&mut self) {
        // SAFETY: the descriptor was opened by `open` and is not used afterwards.
        unsafe { libc::close(self.0) };
    }
}

/// A failed write or read of the process's own code, with the system's reason.
#[cold]
#[inline(never)]
fn failed(what: &str, addr: u64) -> String {
    format!("cannot {what} code at {addr:#x}: {}", std::io::Error::last_os_error())
}
