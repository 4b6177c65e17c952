/* Descriptor table, dispatch trampoline and per-descriptor stubs.
 *
 * A redirected NOP-pad function enters through its pad:
 *     entry:      eb f8                 jmp entry-6
 *     entry-6:    ff 25 <disp32>        jmp *desc.target(%rip)
 * so in the steady state word 0 of the descriptor (desc.target) is the function version
 * every thread runs. During a universe transition desc.target points at the
 * descriptor's stub below, which loads the descriptor's address into %r11 and enters
 * pulp_rs_dispatch; the dispatcher sends a thread to desc.new when the thread's
 * `cleared` TLS word equals the running transition id, to desc.prev otherwise.
 *
 * Descriptor layout (struct pulp_meta::abi::Descriptor, 32 bytes):
 *     0: target   8: prev   16: new   24: entry
 */
    .set    PULP_RS_DESC_SIZE, 32
    .set    PULP_RS_DESC_COUNT, 8192

    .bss
    .globl  pulp_rs_descs
    .hidden pulp_rs_descs
    .p2align 6
pulp_rs_descs:
    .zero   PULP_RS_DESC_SIZE * PULP_RS_DESC_COUNT
    .size   pulp_rs_descs, . - pulp_rs_descs

    /* Id of the transition in progress, 0 when none. */
    .globl  pulp_rs_transition
    .hidden pulp_rs_transition
    .p2align 3
pulp_rs_transition:
    .zero   8
    .size   pulp_rs_transition, 8

    /* Per-thread: the id of the last transition this thread was cleared for.
     * Initial-exec TLS, so every access is one %fs-relative load. */
    .section .tbss, "awT", @nobits
    .globl  pulp_rs_cleared
    .hidden pulp_rs_cleared
    .p2align 3
pulp_rs_cleared:
    .zero   8
    .size   pulp_rs_cleared, 8

    .text
/* pulp_rs_dispatch: entered by jmp from a descriptor stub, never called.
 *   in:  %r11 = &descriptor; the stack is exactly as at the patched function's entry:
 *        (%rsp) = return address into the caller, arguments in registers/on the stack.
 *   Clobbers %r11 (scratch at a call boundary) and the flags (dead at a call boundary).
 *   %rax (the varargs vector count) is saved on the stack and restored: the stack is
 *   one word deeper only between the push and the pop, both described in the CFI.
 */
    .globl  pulp_rs_dispatch
    .hidden pulp_rs_dispatch
    .type   pulp_rs_dispatch, @function
    .p2align 4
pulp_rs_dispatch:
    .cfi_startproc
    push    %rax
    .cfi_adjust_cfa_offset 8
    movq    pulp_rs_cleared@gottpoff(%rip), %rax
    movq    %fs:(%rax), %rax
    cmpq    pulp_rs_transition(%rip), %rax
    pop     %rax
    .cfi_adjust_cfa_offset -8
    jne     1f
    jmp     *16(%r11)               /* cleared: the new universe */
1:  jmp     *8(%r11)                /* not yet: the previous one */
    .cfi_endproc
    .size   pulp_rs_dispatch, . - pulp_rs_dispatch

/* pulp_rs_desc_stubs: stub k (at pulp_rs_desc_stubs + 16*k) is
 *     lea  pulp_rs_descs + 32*k(%rip), %r11
 *     jmp  pulp_rs_dispatch
 * Stack untouched; clobbers %r11 only. */
    .globl  pulp_rs_desc_stubs
    .hidden pulp_rs_desc_stubs
    .type   pulp_rs_desc_stubs, @function
    .p2align 4
pulp_rs_desc_stubs:
    .cfi_startproc
    .set    pulp_rs_k, 0
    .rept   PULP_RS_DESC_COUNT
    leaq    pulp_rs_descs + PULP_RS_DESC_SIZE * pulp_rs_k(%rip), %r11
    jmp     pulp_rs_dispatch
    .p2align 4
    .set    pulp_rs_k, pulp_rs_k + 1
    .endr
    .cfi_endproc
    .size   pulp_rs_desc_stubs, . - pulp_rs_desc_stubs

/* The offset of this thread's `cleared` word from its thread pointer (%fs base),
 * for the tools: a thread's word is at its fs_base + this value. No stack use;
 * clobbers %rax (the return value). */
    .globl  pulp_rs_cleared_tpoff
    .hidden pulp_rs_cleared_tpoff
    .type   pulp_rs_cleared_tpoff, @function
    .p2align 4
pulp_rs_cleared_tpoff:
    .cfi_startproc
    movq    pulp_rs_cleared@gottpoff(%rip), %rax
    ret
    .cfi_endproc
    .size   pulp_rs_cleared_tpoff, . - pulp_rs_cleared_tpoff
