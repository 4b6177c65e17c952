//! The signal frame a hijacked thread returns through if `pulp-trigger` dies while the
//! thread runs a runtime entry: `rt_sigreturn` on it restores the interrupted context
//! exactly, with no tracer (see `trm/asm/hijack.S`).
//!
//! x86-64 layouts (`<asm/sigcontext.h>`, `<asm/ucontext.h>`): a ucontext is `uc_flags`,
//! `uc_link`, `uc_stack` (24 bytes, filled in by the stub from `sigaltstack`), the
//! sigcontext (256 bytes) and the signal mask; the sigcontext points at an XSAVE area
//! whose software-reserved bytes (464..512) carry `FP_XSTATE_MAGIC1` and whose last 4
//! bytes are `FP_XSTATE_MAGIC2`. `PTRACE_GETREGSET(NT_X86_XSTATE)` returns the area in
//! that very format, software bytes included.

use crate::inject::ptrace::Regs;

/// Size of a ucontext.
pub const UCONTEXT_SIZE: usize = 304;
/// Offset of `uc_stack` in a ucontext (the stub fills it).
pub const UC_STACK: usize = 16;
const UC_MCONTEXT: usize = 40;
const UC_SIGMASK: usize = 296;
/// `UC_FP_XSTATE | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS`.
const UC_FLAGS: u64 = 1 | 2 | 4;
const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
const FP_XSTATE_MAGIC2: u32 = 0x4650_5845;
const USER_CS: u16 = 0x33;
const USER_DS: u16 = 0x2b;
const SYS_RESTART_SYSCALL: u64 = 219;

/// The context to resume at: what the kernel would do on the way out of the interrupted
/// system call (`rt_sigreturn` itself restarts nothing: it clears `orig_rax`).
pub fn restartable(regs: &Regs) -> Regs {
    let mut r = *regs;
    if (r.orig_rax as i64) >= 0 {
        match r.rax as i64 {
            // ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND: no handler runs, so restart.
            -514..=-512 => {
                r.rax = r.orig_rax;
                r.rip -= 2;
            }
            // ERESTART_RESTARTBLOCK: through restart_syscall, as the kernel does.
            -516 => {
                r.rax = SYS_RESTART_SYSCALL;
                r.rip -= 2;
            }
            _ => {}
        }
    }
    r
}

/// The XSAVE area for the frame: the thread's extended state plus `FP_XSTATE_MAGIC2`.
/// `None` if the state does not carry the software bytes the kernel checks.
pub fn fpstate(xstate: &[u8]) -> Option<Vec<u8>> {
    let magic1 = u32::from_le_bytes(xstate.get(464..468)?.try_into().ok()?);
    let size = u32::from_le_bytes(xstate.get(464 + 12..464 + 16)?.try_into().ok()?) as usize;
    if magic1 != FP_XSTATE_MAGIC1 || size != xstate.len() {
        return None;
    }
    let mut out = xstate.to_vec();
    out.extend_from_slice(&FP_XSTATE_MAGIC2.to_le_bytes());
    Some(out)
}

/// The ucontext resuming `regs` (already made [`restartable`]) with signal mask `mask`
/// and the XSAVE area at `fpstate`.
pub fn ucontext(regs: &Regs, mask: u64, fpstate: u64) -> Vec<u8> {
    let mut uc = vec![0u8; UCONTEXT_SIZE];
    let mut put = |at: usize, v: u64| uc[at..at + 8].copy_from_slice(&v.to_le_bytes());
    put(0, UC_FLAGS);
    let m = UC_MCONTEXT;
    for (i, v) in [
        regs.r8,
        regs.r9,
        regs.r10,
        regs.r11,
        regs.r12,
        regs.r13,
        regs.r14,
        regs.r15,
        regs.rdi,
        regs.rsi,
        regs.rbp,
        regs.rbx,
        regs.rdx,
        regs.rax,
        regs.rcx,
        regs.rsp,
        regs.rip,
        regs.eflags,
    ]
    .into_iter()
    .enumerate()
    {
        put(m + 8 * i, v);
    }
    // cs, gs, fs, ss (16 bits each) at 144.
    let segs = (USER_CS as u64) | ((USER_DS as u64) << 48);
    put(m + 144, segs);
    put(m + 184, fpstate);
    put(UC_SIGMASK, mask);
    uc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs() -> Regs {
        // SAFETY: plain integers; all-zero is a valid value.
        unsafe { std::mem::zeroed() }
    }

    #[test]
    fn blocking_calls_are_made_to_restart() {
        let mut r = regs();
        r.orig_rax = 0; // read
        r.rax = (-512i64) as u64; // ERESTARTSYS
        r.rip = 0x1002;
        let x = restartable(&r);
        assert_eq!((x.rax, x.rip), (0, 0x1000));
        r.orig_rax = 230; // clock_nanosleep
        r.rax = (-516i64) as u64;
        let x = restartable(&r);
        assert_eq!((x.rax, x.rip), (SYS_RESTART_SYSCALL, 0x1000));
        r.orig_rax = u64::MAX; // not in a system call
        assert_eq!(restartable(&r).rip, 0x1002);
    }

    #[test]
    fn ucontext_places_rip_rsp_mask_and_fpstate() {
        let mut r = regs();
        r.rip = 0x1111;
        r.rsp = 0x2222;
        let uc = ucontext(&r, 0x3333, 0x4444);
        let at = |o: usize| u64::from_le_bytes(uc[o..o + 8].try_into().unwrap());
        assert_eq!((at(40 + 128), at(40 + 120), at(296), at(40 + 184)), (0x1111, 0x2222, 0x3333, 0x4444));
    }

    #[test]
    fn fpstate_needs_the_software_bytes() {
        let mut x = vec![0u8; 832];
        assert!(fpstate(&x).is_none());
        x[464..468].copy_from_slice(&FP_XSTATE_MAGIC1.to_le_bytes());
        x[476..480].copy_from_slice(&832u32.to_le_bytes());
        assert_eq!(fpstate(&x).unwrap().len(), 836);
    }
}
