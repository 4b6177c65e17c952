/* Guarded calls: the runtime calls foreign code (dlopen, which runs a patch's
 * constructors; a patch's callbacks) through pulp_rs_guarded_call, so that if that code
 * faults or hangs, pulp-trigger (which traces the thread, and sees the fault signal or
 * the timeout first) can send the thread to pulp_rs_recover instead of letting the
 * signal kill the process. pulp_rs_recover puts back the registers the guarded call
 * saved and makes it return PULP_RS_RECOVERED: the runtime then releases what the
 * abandoned code held (the dynamic linker's lock) and refuses the request.
 *
 * Guarded calls nest (a callback may be guarded inside an entry); slots form a stack of
 * GUARD_MAX entries, indexed by pulp_rs_guard_depth. Only one entry runs at a time
 * (the entry-stack claim, see hijack.S), so one set of slots serves the process.
 *
 * Slot layout (GUARD_SLOT bytes): 0 rsp (pointing at the return address into the
 * caller), 8 rbx, 16 rbp, 24 r12, 32 r13, 40 r14, 48 r15, 56 mxcsr (4 bytes), 60 x87
 * control word (2 bytes). Those are the registers and control state the SysV ABI says a
 * callee preserves; everything else is the caller's to lose at a call.
 */
    .set    GUARD_MAX, 4
    .set    GUARD_SLOT, 64
    .set    PULP_RS_RECOVERED, -3

    .bss
    .globl  pulp_rs_guard_slots
    .hidden pulp_rs_guard_slots
    .p2align 6
pulp_rs_guard_slots:
    .zero   GUARD_SLOT * GUARD_MAX
    .size   pulp_rs_guard_slots, . - pulp_rs_guard_slots

    /* Number of guarded calls in progress (the tool reads it: 0 = nothing to recover to). */
    .globl  pulp_rs_guard_depth
    .hidden pulp_rs_guard_depth
    .p2align 3
pulp_rs_guard_depth:
    .zero   8
    .size   pulp_rs_guard_depth, 8

    /* What the tool reported when it recovered the thread: signal (0: a timeout), address. */
    .globl  pulp_rs_guard_fault
    .hidden pulp_rs_guard_fault
    .p2align 3
pulp_rs_guard_fault:
    .zero   16
    .size   pulp_rs_guard_fault, 16

    .text
/* i64 pulp_rs_guarded_call(i64 (*fn)(void *), void *arg)
 *   Returns fn(arg), or PULP_RS_RECOVERED if the thread was sent to pulp_rs_recover
 *   meanwhile, or PULP_RS_RECOVERED - 1 when GUARD_MAX calls are already nested (fn not
 *   called).
 *   Stack: on entry (%rsp) = return address; 8 bytes are reserved so that the call to fn
 *   is made with %rsp 16-byte aligned. Clobbers what fn clobbers (caller-saved
 *   registers, flags) and %rax %rcx %rdx.
 */
    .globl  pulp_rs_guarded_call
    .hidden pulp_rs_guarded_call
    .type   pulp_rs_guarded_call, @function
    .p2align 4
pulp_rs_guarded_call:
    .cfi_startproc
    movq    pulp_rs_guard_depth(%rip), %rax
    cmpq    $GUARD_MAX, %rax
    jae     .Ltoo_deep
    shlq    $6, %rax                    /* * GUARD_SLOT */
    leaq    pulp_rs_guard_slots(%rip), %rcx
    addq    %rax, %rcx
    movq    %rsp, 0(%rcx)
    movq    %rbx, 8(%rcx)
    movq    %rbp, 16(%rcx)
    movq    %r12, 24(%rcx)
    movq    %r13, 32(%rcx)
    movq    %r14, 40(%rcx)
    movq    %r15, 48(%rcx)
    stmxcsr 56(%rcx)
    fnstcw  60(%rcx)
    incq    pulp_rs_guard_depth(%rip)
    movq    %rdi, %rax
    movq    %rsi, %rdi
    subq    $8, %rsp
    .cfi_adjust_cfa_offset 8
    call    *%rax
    addq    $8, %rsp
    .cfi_adjust_cfa_offset -8
    decq    pulp_rs_guard_depth(%rip)
    ret
.Ltoo_deep:
    movq    $PULP_RS_RECOVERED - 1, %rax
    ret
    .cfi_endproc
    .size   pulp_rs_guarded_call, . - pulp_rs_guarded_call

/* pulp_rs_recover: never called. pulp-trigger sets %rip here (with %rdi = the signal
 *   that stopped the thread, 0 for a timeout, %rsi = the fault address) when the thread
 *   faulted or hung inside a guarded call. It records both, pops the innermost slot,
 *   restores that guarded call's stack pointer and callee-saved state, and returns
 *   PULP_RS_RECOVERED to the guarded call's caller. Whatever the abandoned frames held
 *   (locks, memory) is the caller's to release.
 *   Stack: whatever the thread had (possibly deep inside the abandoned code); switches
 *   to the slot's %rsp. Clobbers %rax %rcx and the flags; the direction flag is cleared.
 */
    .globl  pulp_rs_recover
    .hidden pulp_rs_recover
    .type   pulp_rs_recover, @function
    .p2align 4
pulp_rs_recover:
    .cfi_startproc
    .cfi_undefined rip
    cld
    movq    %rdi, pulp_rs_guard_fault(%rip)
    movq    %rsi, pulp_rs_guard_fault+8(%rip)
    movq    pulp_rs_guard_depth(%rip), %rax
    testq   %rax, %rax
    jz      .Lnothing
    decq    %rax
    movq    %rax, pulp_rs_guard_depth(%rip)
    shlq    $6, %rax
    leaq    pulp_rs_guard_slots(%rip), %rcx
    addq    %rax, %rcx
    movq    0(%rcx), %rsp
    movq    8(%rcx), %rbx
    movq    16(%rcx), %rbp
    movq    24(%rcx), %r12
    movq    32(%rcx), %r13
    movq    40(%rcx), %r14
    movq    48(%rcx), %r15
    ldmxcsr 56(%rcx)
    fninit                              /* x87 registers the abandoned code left in use */
    fldcw   60(%rcx)
    movq    $PULP_RS_RECOVERED, %rax
    ret
.Lnothing:
    ud2                                 /* the tool checks the depth before it comes here */
    .cfi_endproc
    .size   pulp_rs_recover, . - pulp_rs_recover
