/* Hijack entry stub: where pulp-trigger makes one stopped thread run the runtime's entry,
 * built so that the thread recovers by itself if the tool dies at any moment, and so that
 * the entry never runs on the thread's own stack (which may be small: a 16 KiB thread
 * stack, half used, is common).
 *
 * The tool saves every register of the thread, writes below the interrupted code's red
 * zone, on the thread's own stack, a signal frame (ucontext + XSAVE area) describing the
 * interrupted context exactly (a blocking system call made ready to restart), then sets
 *   %rip = pulp_rs_call_stub + 2   (skip the two NOPs, see below)
 *   %rbx = the entry point to call  (an extern "C" fn(usize) -> i64 of the runtime)
 *   %r15 = its argument
 *   %r12 = the frame's ucontext, %r13 = the thread group id, %r14 = the thread id
 *   %rsp = below the frame, 16-aligned
 *   orig_rax = -1                   (so the kernel does not restart a system call here)
 * and blocks every signal but SIGWINCH with PTRACE_SETSIGMASK.
 *
 * The stub then claims the runtime's entry stack (pulp_rs_entry_owner: 0 -> tid, one
 * entry at a time in the whole process; this word is also the runtime's registry lock).
 * If another thread holds it, the entry is not called and the result is
 * PULP_RS_BUSY. Otherwise it switches %rsp to the top of the entry stack
 * (pulp_rs_entry_stack_top, mapped by the runtime's constructor; the thread's own stack
 * when that is 0), calls the entry, switches back and releases the claim.
 *
 * Stacks while the entry runs:
 *   thread's stack:  saved %rsp - 128 and above: interrupted frame + red zone (untouched)
 *                    XSAVE area (64-aligned), then the ucontext (%r12)
 *                    %rbp = %rsp as the tool set it, 16-aligned
 *   entry stack:     pulp_rs_entry_stack_top (16-aligned)
 *                    [return address into this stub]   <- %rsp at the entry point
 *
 * After the entry, the stub signals itself SIGWINCH: with the tool alive that is a
 * ptrace stop at pulp_rs_call_stub_stop, where the tool reads the result (%r15) and puts
 * the thread back itself. If the tool has died, SIGWINCH is ignored (or handled by the
 * program, as after a terminal resize), and rt_sigreturn through the frame restores the
 * interrupted context: registers, vector state, signal mask, the system call. The two
 * NOPs are there because a restarted system call moves %rip back by 2.
 *
 * Clobbers: %rax %rcx %rdx %rsi %rdi %r11 and whatever the entry clobbers under the
 * SysV ABI (all caller-saved registers, flags); %rbx %rbp %r12-%r15 are preserved by the
 * entry, which is why they carry the stub's own state. The tool (or rt_sigreturn)
 * restores every register afterwards.
 * CFI: the return address of this frame is undefined, which ends unwinding here.
 */
    .set    PULP_RS_BUSY, -2

    .bss
    /* Thread id of the thread running an entry (0: none): the entry stack's claim. */
    .globl  pulp_rs_entry_owner
    .hidden pulp_rs_entry_owner
    .p2align 6
pulp_rs_entry_owner:
    .zero   8
    .size   pulp_rs_entry_owner, 8

    /* Top of the entry stack (16-aligned), set once by the runtime's constructor. */
    .globl  pulp_rs_entry_stack_top
    .hidden pulp_rs_entry_stack_top
    .p2align 3
pulp_rs_entry_stack_top:
    .zero   8
    .size   pulp_rs_entry_stack_top, 8

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
    xorl    %eax, %eax                  /* claim the entry stack: 0 -> tid */
    lock cmpxchgq %r14, pulp_rs_entry_owner(%rip)
    jne     .Lbusy
    movq    %rsp, %rbp                  /* the thread's own stack, to come back to */
    movq    pulp_rs_entry_stack_top(%rip), %rax
    testq   %rax, %rax
    jz      1f
    movq    %rax, %rsp
1:  movq    %r15, %rdi
    call    *%rbx
    movq    %rax, %r15                  /* the result, for the tool */
    movq    %rbp, %rsp
    movq    $0, pulp_rs_entry_owner(%rip)   /* release (a plain store: x86 stores are ordered) */
    jmp     .Lsignal
.Lbusy:
    movq    $PULP_RS_BUSY, %r15
.Lsignal:
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
