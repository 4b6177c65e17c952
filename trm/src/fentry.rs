//! `__fentry__`, exported by `libpulp_rs.so` so that it interposes the C library's.
//! The table it searches is in `asm/fentry.S`, which also explains the design.

/// The profiling hook every `-pg -mfentry` function calls first.
///
/// Clobbers `%r11` and the flags only (both dead where the call sits, at the function's
/// entry); `%rax` and `%rcx` are pushed and popped. Stack while probing:
/// `16(%rsp)` = return address into the function (CFA - 8), `8(%rsp)` = saved `%rax`,
/// `0(%rsp)` = saved `%rcx`. When the function has a descriptor, our return address is
/// replaced by `desc.target` and we return there, which leaves the stack as at the
/// function's entry.
///
/// # Safety
/// Only to be called by the `call __fentry__` that `-mfentry` places at a function's
/// entry; it is not a normal function (it may not return to its caller).
#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn __fentry__() {
    core::arch::naked_asm!(
        ".cfi_startproc",
        "cmp qword ptr [rip + pulp_rs_fentry_active], 0",
        "jne 1f",
        "ret",
        "1:",
        "push rax",
        ".cfi_adjust_cfa_offset 8",
        "push rcx",
        ".cfi_adjust_cfa_offset 8",
        "mov rax, qword ptr [rsp + 16]", // the key: our return address
        "imul ecx, eax, 0x9e3779b1",     // Fibonacci hash of its low 32 bits
        "shr ecx, 18",                   // 32 - log2(FENTRY_SLOTS)
        "shl rcx, 4",
        "lea r11, [rip + pulp_rs_fentry_table]",
        "add r11, rcx",
        "2:",
        "mov rcx, qword ptr [r11]",
        "cmp rcx, rax",
        "je 4f",
        "test rcx, rcx",
        "jz 3f", // an empty slot: not a known function
        "add r11, 16",
        "lea rcx, [rip + pulp_rs_fentry_table_end]",
        "cmp r11, rcx",
        "jb 2b",
        "lea r11, [rip + pulp_rs_fentry_table]",
        "jmp 2b",
        "3:",
        "pop rcx",
        ".cfi_adjust_cfa_offset -8",
        "pop rax",
        ".cfi_adjust_cfa_offset -8",
        "ret",
        "4:",
        ".cfi_adjust_cfa_offset 16",
        "mov r11, qword ptr [r11 + 8]", // &descriptor
        "pop rcx",
        ".cfi_adjust_cfa_offset -8",
        "pop rax",
        ".cfi_adjust_cfa_offset -8",
        "add rsp, 8", // drop the return address into the function
        ".cfi_adjust_cfa_offset -8",
        "jmp qword ptr [r11]", // desc.target
        ".cfi_endproc",
    )
}
