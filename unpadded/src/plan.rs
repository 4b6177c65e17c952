//! Which bytes at a function's entry the jump overwrites, or why it must not.

use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind};

/// `endbr64`: an indirect-branch landing that must stay the first instruction.
pub const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];
/// Length of the entry jump (`jmp rel32`).
pub const ENTRY_JUMP: usize = 5;

/// Where and what the entry jump overwrites in one function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Bytes kept at the entry: 4 for a leading `endbr64`, else 0.
    pub skip: u8,
    /// Bytes overwritten from entry+skip: whole instructions, at least [`ENTRY_JUMP`].
    pub len: u8,
    /// Those `len` original bytes.
    pub original: Vec<u8>,
}

impl Plan {
    /// The first overwritten address of the function at `addr`.
    pub fn start(&self, addr: u64) -> u64 {
        addr + u64::from(self.skip)
    }

    /// The first address after the overwritten bytes: where the copy jumps back to.
    pub fn end(&self, addr: u64) -> u64 {
        self.start(addr) + u64::from(self.len)
    }
}

/// Why a function cannot be redirected this way.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{function}: {reason}")]
pub struct Refusal {
    pub function: String,
    pub reason: Reason,
}

/// The reason in a [`Refusal`]. Addresses are where the function is in the file (or in
/// memory, as the caller passed it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    /// The function is shorter than the jump (after a kept `endbr64`).
    #[error("{} long, shorter than the {need} bytes the entry jump needs", bytes(*size))]
    TooShort { size: usize, need: usize },
    /// A jump of the function's own code lands inside the bytes the jump overwrites (a
    /// loop at the top, a branch back to the entry): after the patch it would run half
    /// an instruction or re-enter the dispatch in the middle of a call.
    #[error("a jump at {from:#x} lands at {to:#x}, inside the first bytes the entry jump overwrites")]
    BranchIntoDisplaced { from: u64, to: u64 },
    /// Something else may send execution or a read into the overwritten bytes: a
    /// relocation, a jump-table entry, a symbol, a branch from other code, or a
    /// rip-relative operand of the function itself.
    #[error("a relocation, jump-table entry, symbol or branch elsewhere refers to {at:#x}, inside the first bytes the entry jump overwrites")]
    ReferenceIntoDisplaced { at: u64 },
    /// The bytes at `at` are not a valid instruction (or run past the function's end).
    #[error("cannot decode the instruction at {at:#x}")]
    Undecodable { at: u64 },
    /// An instruction among the overwritten ones cannot be moved; `what` says why.
    #[error("the instruction at {at:#x} cannot be moved: {what}")]
    Unsupported { at: u64, what: String },
    /// The copy cannot be placed at `copy`: the rip-relative operand of the instruction at
    /// `at` would not reach its target from there.
    #[error("the instruction at {at:#x} reads or writes {target:#x} rip-relative, which does not reach from the copy at {copy:#x}")]
    OutOfReach { at: u64, target: u64, copy: u64 },
}

fn bytes(n: usize) -> String {
    format!("{n} byte{}", if n == 1 { "" } else { "s" })
}

/// Decide the plan. `code` = the symbol's bytes, `addr` = its address (vaddr in the file),
/// `inbound` = addresses other code or data can jump to (from
/// [`inbound_addresses`](crate::inbound_addresses); any order).
///
/// Refuses (see [`Reason`]): a function shorter than `skip + 5`; an overwritten
/// instruction that cannot be decoded, is `int3`/`int n` (a debugger's breakpoint or a
/// trap whose address matters), `xbegin`/`xabort`/`xend`, does not fall through before
/// 5 bytes (`ret`, `jmp`, `ud2`: the bytes after it are padding or reached another way),
/// or is a call that is not the last overwritten instruction (its return address would
/// lie inside the overwritten bytes; `syscall` is fine); a jump of the function's own code (linear sweep over the whole
/// symbol) or a rip-relative operand into `[addr, end)`; an inbound address strictly
/// inside `(addr, end)` other than `addr + skip`. Calls to the entry itself (`addr` or
/// `addr + skip`, recursion) are fine: they are calls and go through the patch.
pub fn plan(function: &str, code: &[u8], addr: u64, inbound: &[u64]) -> Result<Plan, Refusal> {
    let refuse = |reason| Refusal { function: function.to_string(), reason };
    let skip = if code.starts_with(&ENDBR64) { ENDBR64.len() } else { 0 };
    let need = skip + ENTRY_JUMP;
    if code.len() < need {
        return Err(refuse(Reason::TooShort { size: code.len(), need }));
    }
    let start = addr + skip as u64;
    let displaced = displaced(&code[skip..], start).map_err(refuse)?;
    let len = displaced.iter().map(Instruction::len).sum::<usize>();
    let end = start + len as u64;

    // The function's own code: every branch and rip-relative operand, by linear sweep.
    let mut decoder = Decoder::with_ip(64, code, addr, DecoderOptions::NONE);
    for i in &mut decoder {
        if i.is_invalid() {
            continue;
        }
        if let Some(to) = near_branch_target(&i) {
            let is_call = matches!(i.flow_control(), FlowControl::Call);
            let enters = to == addr || to == start;
            if (addr..end).contains(&to) && !(is_call && enters) {
                return Err(refuse(Reason::BranchIntoDisplaced { from: i.ip(), to }));
            }
        }
        if i.is_ip_rel_memory_operand() {
            let to = i.ip_rel_memory_address();
            if (addr..end).contains(&to) && to != addr && to != start {
                return Err(refuse(Reason::ReferenceIntoDisplaced { at: to }));
            }
        }
    }
    if let Some(&at) = inbound.iter().find(|&&a| a > addr && a < end && a != start) {
        return Err(refuse(Reason::ReferenceIntoDisplaced { at }));
    }
    let original = code[skip..skip + len].to_vec();
    Ok(Plan { skip: skip as u8, len: len as u8, original })
}

/// Decode the whole instructions from `start` that cover at least [`ENTRY_JUMP`] bytes,
/// refusing any that cannot be moved.
pub(crate) fn displaced(code: &[u8], start: u64) -> Result<Vec<Instruction>, Reason> {
    let mut decoder = Decoder::with_ip(64, code, start, DecoderOptions::NONE);
    let mut out = Vec::new();
    let mut covered = 0;
    while covered < ENTRY_JUMP {
        let at = decoder.ip();
        if !decoder.can_decode() {
            return Err(Reason::Undecodable { at });
        }
        let i = decoder.decode();
        if i.is_invalid() {
            return Err(Reason::Undecodable { at });
        }
        covered += i.len();
        let last = covered >= ENTRY_JUMP;
        if let Some(what) = unmovable(&i, last) {
            return Err(Reason::Unsupported { at, what: what.to_string() });
        }
        out.push(i);
    }
    Ok(out)
}

/// Why `i` cannot be among the overwritten instructions (`last`: it is the last of them).
fn unmovable(i: &Instruction, last: bool) -> Option<&'static str> {
    match i.mnemonic() {
        // A thread in the system call has its rip after it (a boundary `rip_map` maps); a
        // restarted call goes back 2 bytes, to the same `syscall` in the copy.
        Mnemonic::Syscall => return None,
        Mnemonic::Int3 => return Some("int3 (a breakpoint: the bytes are not the function's own)"),
        Mnemonic::Int | Mnemonic::Int1 | Mnemonic::Into => {
            return Some("a software interrupt, whose handler may look at its address")
        }
        _ => {}
    }
    match i.flow_control() {
        FlowControl::XbeginXabortXend => Some("a transactional-memory instruction"),
        FlowControl::Return
        | FlowControl::UnconditionalBranch
        | FlowControl::IndirectBranch
        | FlowControl::Exception
            if !last =>
        {
            Some("nothing falls through it (jmp, ret, ud2) within the first 5 bytes: the bytes after it are padding or reached another way")
        }
        FlowControl::Call | FlowControl::IndirectCall if !last => {
            Some("a call whose return address would lie inside the overwritten bytes")
        }
        _ => None,
    }
}

/// The target of a direct (near) branch, call, loop or `xbegin`.
pub(crate) fn near_branch_target(i: &Instruction) -> Option<u64> {
    (0..i.op_count())
        .any(|n| matches!(i.op_kind(n), OpKind::NearBranch64 | OpKind::NearBranch32 | OpKind::NearBranch16))
        .then(|| i.near_branch_target())
}
