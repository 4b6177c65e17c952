/* Redirect mechanisms side by side, for pulp-bench (driven by redirect.c).
 *
 * Every variant is `int f(int x) { return x + 1; }` reached through its own
 * redirect, ending in the same function redir_new. The pads are laid out as
 * -fpatchable-function-entry=16,14 lays them out: 14 bytes before the entry,
 * which sits at 14 mod 16 (each pad starts on a 64-byte boundary so that no two
 * variants share a fetch block). The bytes a live patch would write are here
 * assembled in from the start: this file measures the steady state only.
 *
 * Built with -no-pie: (c) carries redir_new's absolute address in its code.
 * The AT&T syntax of GNU as; every jump that must have one encoding is written
 * as bytes. */

        .text

/* The redirect target of every variant: x + 1. Clobbers %rax. */
        .p2align 6
        .globl  redir_new
        .type   redir_new, @function
redir_new:
        lea     1(%rdi), %eax
        ret
        .size   redir_new, . - redir_new

/* (a) The plain function: no pad, no redirect. Clobbers %rax. */
        .p2align 6
        .globl  redir_plain
        .type   redir_plain, @function
redir_plain:
        lea     1(%rdi), %eax
        ret
        .size   redir_plain, . - redir_plain

/* (b) Our scheme (trm/README.md): entry `eb f8` = jmp entry-6; at entry-6
 * `ff 25 disp32` = jmp *slot_ours(%rip). Retargeted by one 8-byte store to the
 * slot. Clobbers nothing. */
        .p2align 6
        .fill   8, 1, 0x90              /* entry-14: unused pad */
redir_ours_pad:                         /* entry-6 */
        jmp     *slot_ours(%rip)        /* ff 25 disp32 */
        .globl  redir_ours
        .type   redir_ours, @function
redir_ours:
        .byte   0xeb, 0xf8              /* jmp entry-6 */
        lea     1(%rdi), %eax           /* original body, not reached */
        ret
        .size   redir_ours, . - redir_ours

/* (c) libpulp-like: entry `eb f0` = jmp entry-14; at entry-14
 * `movabs $redir_new, %r11; jmp *%r11` (13 bytes). Retargeting rewrites the
 * 8-byte immediate inside the code. Clobbers %r11. */
        .p2align 6
redir_libpulp_pad:                      /* entry-14 */
        movabs  $redir_new, %r11        /* 49 bb imm64 */
        jmp     *%r11                   /* 41 ff e3 */
        nop                             /* entry-1: unused */
        .globl  redir_libpulp
        .type   redir_libpulp, @function
redir_libpulp:
        .byte   0xeb, 0xf0              /* jmp entry-14 */
        lea     1(%rdi), %eax           /* original body, not reached */
        ret
        .size   redir_libpulp, . - redir_libpulp

/* (d) DESIGN.md's: entry `eb f0` = jmp entry-14; at entry-14
 * `movabs $slot_design, %r11; jmp *(%r11)` (13 bytes). Retargeted by one
 * 8-byte store to the slot. Clobbers %r11. */
        .p2align 6
redir_design_pad:                       /* entry-14 */
        movabs  $slot_design, %r11      /* 49 bb imm64 */
        jmp     *(%r11)                 /* 41 ff 23 */
        nop                             /* entry-1: unused */
        .globl  redir_design
        .type   redir_design, @function
redir_design:
        .byte   0xeb, 0xf0              /* jmp entry-14 */
        lea     1(%rdi), %eax           /* original body, not reached */
        ret
        .size   redir_design, . - redir_design

/* (e) Lower bound: entry `eb f9` = jmp entry-5; at entry-5 `e9 rel32` = a
 * direct jmp redir_new. Two taken direct jumps, no load; retargeting it means
 * rewriting a 4-byte displacement in code that may be executing, which is why
 * no scheme uses it. Clobbers nothing. */
        .p2align 6
        .fill   9, 1, 0x90              /* entry-14: unused pad */
redir_direct_pad:                       /* entry-5 */
        .byte   0xe9                    /* jmp rel32 */
        .long   redir_new - (. + 4)
        .globl  redir_direct
        .type   redir_direct, @function
redir_direct:
        .byte   0xeb, 0xf9              /* jmp entry-5 */
        lea     1(%rdi), %eax           /* original body, not reached */
        ret
        .size   redir_direct, . - redir_direct

/* The slots of (b) and (d): where a live patch would store the new target. */
        .data
        .p2align 3
slot_ours:
        .quad   redir_new
slot_design:
        .quad   redir_new

        .section .note.GNU-stack, "", @progbits
