/* Descriptor table, transition state, dispatch trampoline, gate slow path and the
 * per-descriptor stubs.
 *
 * A redirected NOP-pad function enters through its pad:
 *     entry:      eb f8                 jmp entry-6
 *     entry-6:    ff 25 <disp32>        jmp *desc.target(%rip)
 * so in the steady state word 0 of the descriptor (desc.target) is the version every
 * thread runs. During a transition desc.target is the descriptor's stub below, which
 * loads the descriptor's address into %r11 and enters pulp_rs_dispatch.
 *
 * Universes: the transition has an id (pulp_rs_transition) and a goal
 * (pulp_rs_goal: 1 = threads move to desc.new, 0 = a reversed transition, threads move
 * back to desc.prev). A thread is in the new universe when its TLS word
 * pulp_rs_cleared equals the transition id. A thread not yet where the goal is and
 * entering a gate descriptor (an exported function of a target) takes the slow path,
 * which may move it (pulp_rs_gate_clear, in the runtime).
 *
 * Descriptor layout (struct pulp_meta::abi::Descriptor, 128 bytes), two views that
 * transitions alternate between by the parity of their id; %r11 points at a view:
 *     0: target   8: prev0   16: new0   24: entry   32: gate0
 *                72: prev1   80: new1                96: gate1
 * so through %r11 = desc + 64 * parity: 8(%r11) prev, 16(%r11) new, 32(%r11) gate.
 */
    .set    PULP_RS_DESC_SIZE, 128
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

    /* 1: threads move to desc.new; 0: a reversed transition moves them back. */
    .globl  pulp_rs_goal
    .hidden pulp_rs_goal
    .p2align 3
pulp_rs_goal:
    .zero   8
    .size   pulp_rs_goal, 8

    /* 1 once every entry of the running transition is redirected: only then may a thread
     * move (a gate or pulp_quiescent moving a thread earlier could let it run a new
     * version of one function and the old version of another). Set by the tool after it
     * wrote the last entry; cleared by the runtime when a transition starts or ends. The
     * dispatcher itself does not read it: before it is set, nobody has moved, so every
     * thread goes to prev. */
    .globl  pulp_rs_armed
    .hidden pulp_rs_armed
    .p2align 3
pulp_rs_armed:
    .zero   8
    .size   pulp_rs_armed, 8

    /* The runtime's pulp_rs_gate_clear(desc, return_address), set before the first
     * transition (a pointer, so this crate needs no symbol of the runtime). */
    .globl  pulp_rs_gate_hook
    .hidden pulp_rs_gate_hook
    .p2align 3
pulp_rs_gate_hook:
    .zero   8
    .size   pulp_rs_gate_hook, 8

    /* Size of this CPU's XSAVE area, set by the runtime before the first transition. */
    .globl  pulp_rs_xsave_size
    .hidden pulp_rs_xsave_size
    .p2align 3
pulp_rs_xsave_size:
    .zero   8
    .size   pulp_rs_xsave_size, 8

    /* Per-thread: the id of the transition this thread is in the new universe of.
     * Initial-exec TLS in .tdata: its initial value (the TLS image every new thread is
     * copied from) can be set by the tools, so threads born during a transition start
     * where the transition goes. */
    .section .tdata, "awT", @progbits
    .globl  pulp_rs_cleared
    .hidden pulp_rs_cleared
    .p2align 3
pulp_rs_cleared:
    .quad   0
    .size   pulp_rs_cleared, 8

    /* The word's offset from the start of this object's TLS block (and TLS image). */
    .section .data.rel.ro, "aw", @progbits
    .globl  pulp_rs_cleared_dtpoff
    .hidden pulp_rs_cleared_dtpoff
    .p2align 3
pulp_rs_cleared_dtpoff:
    .quad   pulp_rs_cleared@dtpoff
    .size   pulp_rs_cleared_dtpoff, 8

    .text
/* pulp_rs_dispatch: entered by jmp from a descriptor stub, never called.
 *   in:  %r11 = &descriptor; the stack exactly as at the patched function's entry:
 *        (%rsp) = return address into the caller, arguments in registers/on the stack.
 *   Clobbers %r11 (scratch at a call boundary) and the flags (dead at a call boundary).
 *   %rax (the varargs vector count) is pushed and popped: the stack is one word deeper
 *   only between the push and the pop, as the CFI says.
 *   Fast path (thread already where the goal is): 9 instructions, no taken branch
 *   before the final indirect jump.
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
    sete    %al                         /* al = 1: this thread is in the new universe */
    cmpb    pulp_rs_goal(%rip), %al
    jne     .Lunsettled                 /* not yet where the transition goes */
    /* Fast path, no taken branch before the final jump. */
    testb   %al, %al
    pop     %rax                        /* pop leaves the flags alone */
    .cfi_adjust_cfa_offset -8
    jz      1f
    jmp     *16(%r11)                   /* new universe: new */
1:  jmp     *8(%r11)                    /* old universe: prev */
.Lunsettled:
    .cfi_adjust_cfa_offset 8
    cmpq    $0, 32(%r11)
    jne     .Lgate                      /* at a door in: try to move it */
    testb   %al, %al
    pop     %rax
    .cfi_adjust_cfa_offset -8
    jz      2f
    jmp     *16(%r11)
2:  jmp     *8(%r11)
.Lgate:
    .cfi_adjust_cfa_offset 8
    pop     %rax
    .cfi_adjust_cfa_offset -8
    jmp     pulp_rs_gate_slow
    .cfi_endproc
    .size   pulp_rs_dispatch, . - pulp_rs_dispatch

/* pulp_rs_gate_slow: a thread not yet moved enters a door of a target. Calls
 * pulp_rs_gate_clear(desc, return address) which unwinds this thread's stack and
 * moves it when no frame is inside a target, then dispatches again.
 *   in:  %r11 = &descriptor, stack as at the function's entry.
 *   Preserves every register a callee may receive arguments in or must preserve:
 *   %rax %rdi %rsi %rdx %rcx %r8 %r9 %r10 (static chain) %r11 and the whole extended
 *   state (x87, SSE, AVX, AVX-512: XSAVE/XRSTOR), so vector arguments survive.
 *   Clobbers only the flags. Stack while pulp_rs_gate_clear runs:
 *
 *     8(%rbp)       return address into the caller   <- CFA - 8
 *     0(%rbp)       saved %rbp                        CFA = %rbp + 16
 *     -8..-72(%rbp) %rax %rdi %rsi %rdx %rcx %r8 %r9 %r10 %r11
 *     ...           XSAVE area, 64-byte aligned, pulp_rs_xsave_size bytes
 *     (%rsp)        = start of the XSAVE area, 16-byte aligned at the call
 */
    .globl  pulp_rs_gate_slow
    .hidden pulp_rs_gate_slow
    .type   pulp_rs_gate_slow, @function
    .p2align 4
pulp_rs_gate_slow:
    .cfi_startproc
    push    %rbp
    .cfi_adjust_cfa_offset 8
    .cfi_offset rbp, -16
    movq    %rsp, %rbp
    .cfi_def_cfa_register rbp
    push    %rax
    push    %rdi
    push    %rsi
    push    %rdx
    push    %rcx
    push    %r8
    push    %r9
    push    %r10
    push    %r11
    subq    pulp_rs_xsave_size(%rip), %rsp
    andq    $-64, %rsp
    /* XRSTOR faults unless the XSAVE header's reserved bytes are zero. */
    movq    $0, 512(%rsp)
    movq    $0, 520(%rsp)
    movq    $0, 528(%rsp)
    movq    $0, 536(%rsp)
    movq    $0, 544(%rsp)
    movq    $0, 552(%rsp)
    movq    $0, 560(%rsp)
    movq    $0, 568(%rsp)
    movl    $-1, %eax
    movl    $-1, %edx
    xsave   (%rsp)
    movq    %r11, %rdi                  /* the descriptor */
    movq    8(%rbp), %rsi               /* the caller's return address */
    call    *pulp_rs_gate_hook(%rip)
    movl    $-1, %eax
    movl    $-1, %edx
    xrstor  (%rsp)
    leaq    -72(%rbp), %rsp
    pop     %r11
    pop     %r10
    pop     %r9
    pop     %r8
    pop     %rcx
    pop     %rdx
    pop     %rsi
    pop     %rdi
    pop     %rax
    pop     %rbp
    .cfi_def_cfa rsp, 8
    .cfi_restore rbp
    /* Dispatch again, without the gate: the thread moved or it stays. */
    push    %rax
    .cfi_adjust_cfa_offset 8
    movq    pulp_rs_cleared@gottpoff(%rip), %rax
    movq    %fs:(%rax), %rax
    cmpq    pulp_rs_transition(%rip), %rax
    pop     %rax
    .cfi_adjust_cfa_offset -8
    je      1f
    jmp     *8(%r11)
1:  jmp     *16(%r11)
    .cfi_endproc
    .size   pulp_rs_gate_slow, . - pulp_rs_gate_slow

/* pulp_rs_desc_stubs: stub (k, p) (at pulp_rs_desc_stubs + 16 * (2k + p)) is
 *     lea  pulp_rs_descs + 128*k + 64*p(%rip), %r11     (view p of descriptor k)
 *     jmp  pulp_rs_dispatch
 * Stack untouched; clobbers %r11 only. */
    .globl  pulp_rs_desc_stubs
    .hidden pulp_rs_desc_stubs
    .type   pulp_rs_desc_stubs, @function
    .p2align 4
pulp_rs_desc_stubs:
    .cfi_startproc
    .set    pulp_rs_k, 0
    .rept   PULP_RS_DESC_COUNT * 2
    leaq    pulp_rs_descs + 64 * pulp_rs_k(%rip), %r11
    jmp     pulp_rs_dispatch
    .p2align 4
    .set    pulp_rs_k, pulp_rs_k + 1
    .endr
    .cfi_endproc
    .size   pulp_rs_desc_stubs, . - pulp_rs_desc_stubs

/* The word's offset from the thread pointer: a thread's word is at fs_base + this.
 * No stack use; clobbers %rax (the return value). */
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

/* Read and write the calling thread's `cleared` word, and its thread pointer.
 * No stack use; clobber only %rax (and %rdi is read). */
    .globl  pulp_rs_cleared_get
    .hidden pulp_rs_cleared_get
    .type   pulp_rs_cleared_get, @function
    .p2align 4
pulp_rs_cleared_get:
    .cfi_startproc
    movq    pulp_rs_cleared@gottpoff(%rip), %rax
    movq    %fs:(%rax), %rax
    ret
    .cfi_endproc
    .size   pulp_rs_cleared_get, . - pulp_rs_cleared_get

    .globl  pulp_rs_cleared_set
    .hidden pulp_rs_cleared_set
    .type   pulp_rs_cleared_set, @function
    .p2align 4
pulp_rs_cleared_set:
    .cfi_startproc
    movq    pulp_rs_cleared@gottpoff(%rip), %rax
    movq    %rdi, %fs:(%rax)
    ret
    .cfi_endproc
    .size   pulp_rs_cleared_set, . - pulp_rs_cleared_set

    .globl  pulp_rs_thread_pointer
    .hidden pulp_rs_thread_pointer
    .type   pulp_rs_thread_pointer, @function
    .p2align 4
pulp_rs_thread_pointer:
    .cfi_startproc
    movq    %fs:0, %rax                 /* the TCB's self pointer = fs_base */
    ret
    .cfi_endproc
    .size   pulp_rs_thread_pointer, . - pulp_rs_thread_pointer

/* pulp_rs_far_stubs: stub k (at pulp_rs_far_stubs + 8*k) is
 *     jmp  *pulp_rs_descs + 128*k(%rip)       (ff 25 disp32, then 2 bytes of int3)
 * For functions more than 2 GiB away from the descriptors (a PIE executable's): their
 * pad holds this stub's address and jumps through it. Stack untouched, no register
 * clobbered: the stub is one indirect jump through word 0 of descriptor k. */
    .globl  pulp_rs_far_stubs
    .hidden pulp_rs_far_stubs
    .type   pulp_rs_far_stubs, @function
    .p2align 3
pulp_rs_far_stubs:
    .cfi_startproc
    .set    pulp_rs_k, 0
    .rept   PULP_RS_DESC_COUNT
    jmp     *pulp_rs_descs + PULP_RS_DESC_SIZE * pulp_rs_k(%rip)
    int3
    int3
    .set    pulp_rs_k, pulp_rs_k + 1
    .endr
    .cfi_endproc
    .size   pulp_rs_far_stubs, . - pulp_rs_far_stubs
