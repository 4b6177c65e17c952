//! The overwritten instructions re-encoded to run elsewhere, and the map of their
//! addresses.

use iced_x86::{BlockEncoder, BlockEncoderOptions, Code, Instruction, InstructionBlock};

use crate::plan::{displaced, Plan, Reason, Refusal};

/// The largest number of bytes [`relocate`] returns. At most 5 instructions are
/// displaced (4 bytes of earlier ones, then the last); the longest any becomes is a
/// conditional branch or `loop` that no longer reaches (`jcc` short over `jmp [rip]` and
/// its 8-byte address, or `loop` short, `jmp` short, `jmp [rip]`, address: 18 bytes) or
/// an instruction kept as it is (15 bytes at most); the jump back takes 14 at most.
pub const MAX_COPY: usize = 5 * 18 + 14 + 8;

/// The displaced instructions re-encoded to run at `at` (rip-relative operands, short and
/// long branches, calls fixed by iced's `BlockEncoder`; a branch that no longer reaches
/// becomes an indirect one through an address stored in the copy), followed by a jump
/// back to `addr + skip + len`. Errors when a rip-relative operand cannot reach its
/// target from `at`.
pub fn relocate(function: &str, plan: &Plan, addr: u64, at: u64) -> Result<Vec<u8>, Refusal> {
    encode(plan, addr, at).map(|(code, _)| code).map_err(|reason| Refusal { function: function.to_string(), reason })
}

/// For each instruction boundary inside the overwritten bytes, the first included: the
/// address in the original and the address of the same instruction in the copy at `at`,
/// to move a thread whose rip lies there into the copy. Empty when [`relocate`] fails for
/// the same arguments.
pub fn rip_map(plan: &Plan, addr: u64, at: u64) -> RipMap {
    let Ok((_, pairs)) = encode(plan, addr, at) else {
        return Vec::new();
    };
    pairs
}

/// Pairs of (address in the original, address in the copy).
type RipMap = Vec<(u64, u64)>;

/// The copy and its address map.
fn encode(plan: &Plan, addr: u64, at: u64) -> Result<(Vec<u8>, RipMap), Reason> {
    let start = plan.start(addr);
    let mut instructions = displaced(&plan.original, start)?;
    let decoded = instructions.iter().map(Instruction::len).sum::<usize>();
    if decoded != usize::from(plan.len) {
        return Err(Reason::Unsupported {
            at: start,
            what: format!("the plan covers {} bytes, its instructions {decoded}", plan.len),
        });
    }
    for i in &instructions {
        if i.is_ip_rel_memory_operand() && !reaches(at, i.ip_rel_memory_address()) {
            return Err(Reason::OutOfReach { at: i.ip(), target: i.ip_rel_memory_address(), copy: at });
        }
    }
    let back = Instruction::with_branch(Code::Jmp_rel32_64, plan.end(addr))
        .map_err(|e| Reason::Unsupported { at: start, what: e.to_string() })?;
    instructions.push(back);
    let block = InstructionBlock::new(&instructions, at);
    let result = BlockEncoder::encode(64, block, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)
        .map_err(|e| Reason::Unsupported { at: start, what: e.to_string() })?;
    let pairs = instructions[..instructions.len() - 1]
        .iter()
        .zip(&result.new_instruction_offsets)
        .map(|(i, &offset)| (i.ip(), at + u64::from(offset)))
        .collect();
    debug_assert!(result.code_buffer.len() <= MAX_COPY);
    Ok((result.code_buffer, pairs))
}

/// Whether every instruction of a copy at `at` reaches `target` with a 32-bit
/// displacement.
fn reaches(at: u64, target: u64) -> bool {
    let fits = |from: u64| i32::try_from(target.wrapping_sub(from) as i64).is_ok();
    fits(at) && fits(at + MAX_COPY as u64)
}
