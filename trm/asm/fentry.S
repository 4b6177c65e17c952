/* __fentry__: the runtime's replacement for the C library's profiling hook.
 *
 * A function built with `-pg -mfentry` starts with `call __fentry__` (`e8 rel32`, or
 * `call *__fentry__@GOTPCREL(%rip)` in gcc's shared objects), possibly after endbr64.
 * The preloaded runtime defines __fentry__ before the C library does, so every such
 * call lands here. Redirecting these functions needs no code write at all.
 *
 * Table: pulp_rs_fentry_table, FENTRY_SLOTS open-addressed slots of
 * (key = return address of the call: entry + offset + length, value = &descriptor),
 * filled by the runtime (value first, then key, so a reader that sees the key sees the
 * value) and never emptied: a function, once known, keeps its descriptor. The runtime
 * keeps the table at most half full, so a probe always ends on an empty slot.
 *
 * Fast path (no fentry function was ever patched): one compare and `ret`.
 * Otherwise: hash the return address, probe. Not found: `ret`, the function runs.
 * Found: overwrite our return address with desc.target and `ret` to it, leaving the
 * stack exactly as at the function's entry ((%rsp) = the caller's return address): the new version, a
 * dispatch stub during a transition, or the original body (the instruction after the
 * call) once reverted.
 *
 * Clobbers %r11 and the flags only (both dead at the function's entry, where the call
 * sits). %rax and %rcx are pushed and popped. Stack while probing:
 *     16(%rsp) return address into the function     <- CFA - 8 (CFA = %rsp + 24)
 *      8(%rsp) saved %rax
 *      0(%rsp) saved %rcx
 */
    .set    FENTRY_SLOTS, 16384             /* power of two */
    .set    FENTRY_SHIFT, 18                /* 32 - log2(FENTRY_SLOTS) */

    .bss
    .globl  pulp_rs_fentry_table
    .hidden pulp_rs_fentry_table
    .p2align 6
pulp_rs_fentry_table:
    .zero   16 * FENTRY_SLOTS
    .globl  pulp_rs_fentry_table_end
    .hidden pulp_rs_fentry_table_end
pulp_rs_fentry_table_end:
    .size   pulp_rs_fentry_table, . - pulp_rs_fentry_table

    /* Non-zero once any fentry function has a descriptor. */
    .globl  pulp_rs_fentry_active
    .hidden pulp_rs_fentry_active
    .p2align 3
pulp_rs_fentry_active:
    .zero   8
    .size   pulp_rs_fentry_active, 8

    /* The code of __fentry__ is a naked function in src/fentry.rs: as a Rust item it is
     * exported from libpulp_rs.so, which interposes the C library's __fentry__. */
