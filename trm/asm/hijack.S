/* Hijack entry stub: where pulp-trigger makes one stopped thread run a runtime entry.
 *
 * The tool saves every register of the thread, then sets
 *   %rip = pulp_rs_call_stub + 2   (skip the two NOPs, see below)
 *   %rax = the entry point to call  (an extern "C" fn(usize) -> i64 of the runtime)
 *   %rdi = its argument
 *   %rsp = (saved %rsp - 128) & ~15 (below the interrupted code's red zone, 16-aligned)
 *   orig_rax = -1                   (so the kernel does not restart a system call here)
 * and blocks all signals with PTRACE_SETSIGMASK.
 *
 * Stack while the entry runs:
 *     saved %rsp - 128 and above   interrupted frame + its red zone (untouched)
 *     ...alignment gap (0-15 bytes)
 *     %rsp at the call, 16-aligned
 *     [return address = the int3 below]   <- %rsp at the entry point
 *
 * The int3 stops the thread with SIGTRAP; the tool reads %rax and restores everything.
 * The two NOPs are there because a restarted system call moves %rip back by 2: should
 * that ever happen here, the thread just runs the NOPs again.
 *
 * Clobbers: whatever the called entry clobbers under the SysV ABI (all caller-saved
 * registers, flags); the tool restores every register afterwards.
 * CFI: the return address of this frame is undefined, which ends unwinding here (the
 * interrupted context is held by the tool, not on this stack).
 */
    .text
    .globl  pulp_rs_call_stub
    .hidden pulp_rs_call_stub
    .type   pulp_rs_call_stub, @function
    .p2align 4
pulp_rs_call_stub:
    .cfi_startproc
    .cfi_undefined rip
    nop
    nop
    call    *%rax
    int3
    .cfi_endproc
    .size   pulp_rs_call_stub, . - pulp_rs_call_stub
