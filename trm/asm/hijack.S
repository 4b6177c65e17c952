/* Hijack entry stub: where pulp-trigger makes one stopped thread run a runtime entry,
 * built so that the thread recovers by itself if the tool dies at any moment.
 *
 * The tool saves every register of the thread, writes below the interrupted code's red
 * zone a signal frame (ucontext + XSAVE area) describing the interrupted context exactly
 * (a blocking system call made ready to restart), then sets
 *   %rip = pulp_rs_call_stub + 2   (skip the two NOPs, see below)
 *   %rbx = the entry point to call  (an extern "C" fn(usize) -> i64 of the runtime)
 *   %r15 = its argument
 *   %r12 = the frame's ucontext, %r13 = the thread group id, %r14 = the thread id
 *   %rsp = below the frame, 16-aligned
 *   orig_rax = -1                   (so the kernel does not restart a system call here)
 * and blocks every signal but SIGWINCH with PTRACE_SETSIGMASK.
 *
 * Stack while the entry runs:
 *     saved %rsp - 128 and above   interrupted frame + its red zone (untouched)
 *     XSAVE area (64-aligned), then the ucontext (%r12)
 *     %rsp at the call, 16-aligned
 *     [return address into this stub]   <- %rsp at the entry point
 *
 * After the entry returns, the stub signals itself SIGWINCH: with the tool alive that is
 * a ptrace stop at pulp_rs_call_stub_stop, where the tool reads the result (%r15) and
 * puts the thread back itself. If the tool has died, SIGWINCH is ignored (or handled by
 * the program, as after a terminal resize), and rt_sigreturn through the frame restores
 * the interrupted context: registers, vector state, signal mask, the system call.
 * The two NOPs are there because a restarted system call moves %rip back by 2.
 *
 * Clobbers: %rax %rcx %rdx %rsi %rdi %r11 and whatever the entry clobbers under the
 * SysV ABI (all caller-saved registers, flags); %rbx %r12-%r15 are preserved by the
 * entry, which is why they carry the stub's own state. The tool (or rt_sigreturn)
 * restores every register afterwards.
 * CFI: the return address of this frame is undefined, which ends unwinding here.
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
    movl    $131, %eax                  /* sigaltstack(NULL, &uc->uc_stack): the frame */
    xorl    %edi, %edi                  /* must carry the thread's current one */
    leaq    16(%r12), %rsi
    syscall
    movq    %r15, %rdi
    call    *%rbx
    movq    %rax, %r15                  /* the result, for the tool */
    movl    $234, %eax                  /* tgkill(tgid, tid, SIGWINCH) */
    movq    %r13, %rdi
    movq    %r14, %rsi
    movl    $28, %edx
    syscall
    .globl  pulp_rs_call_stub_stop
    .hidden pulp_rs_call_stub_stop
pulp_rs_call_stub_stop:
    movq    %r12, %rsp                  /* only reached without the tool: */
    movl    $15, %eax                   /* rt_sigreturn(frame at %r12) */
    syscall
    ud2
    .cfi_endproc
    .size   pulp_rs_call_stub, . - pulp_rs_call_stub
