//! Addresses in executable code that something other than a function's own code may
//! send execution to.
//!
//! Collected, all restricted to executable sections:
//! - every symbol's address (an alternate entry inside another function shows here);
//! - the targets of dynamic relocations that hold code addresses (`R_X86_64_64`,
//!   `_32`, `_32S`, `GLOB_DAT`, `JUMP_SLOT`, `RELATIVE`, `IRELATIVE`) and of `DT_RELR`
//!   packed relative relocations (the address is the word in the file);
//! - the direct branch and call targets of a linear sweep over every executable section
//!   (tail calls, `.cold` parts jumping back into their function);
//! - jump tables found from the code that reads them: gcc's and clang's position-
//!   independent tables of 32-bit offsets relative to the table (`lea T(%rip), %rX`
//!   followed within a few instructions by `movslq (%rX,%rY,4), ...`), and absolute
//!   8-byte tables of position-dependent code (`jmp/mov T(,%rY,8)` with no base).
//!   A table has as many entries as the bound check before it says (`cmp $N, %rY`
//!   then `ja`: N + 1), read while they land in executable code; without such a check
//!   entries are read until one does not, so the words after the table's end may be
//!   taken as entries too (a refusal more, never one less). A table whose address is
//!   computed in another way is not found.
//!
//! Not looked at: static relocations (`--emit-relocs`), exception landing pads (never
//! within a function's first bytes: they follow a call).

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};
use object::read::elf::SectionHeader as _;
use object::{Object, ObjectSection, ObjectSymbol, ObjectSymbolTable, RelocationFlags, RelocationTarget, SectionKind};

use crate::plan::near_branch_target;

/// How many instructions after a `lea` of a table its indexed read may come, and how
/// many before it its bound check.
const TABLE_READ_WINDOW: usize = 8;
/// Entries read from one jump table at most.
const TABLE_MAX_ENTRIES: usize = 1 << 16;

/// Every address inside executable sections that relocations, dynamic relocations,
/// symbols, direct branches and jump tables may make a branch target; sorted, without
/// repeats. See the module documentation for what is looked at and its limits.
pub fn inbound_addresses(file: &object::File) -> Vec<u64> {
    let image = Image::new(file);
    let mut out = Vec::new();
    for s in file.symbols().chain(file.dynamic_symbols()) {
        out.push(s.address());
    }
    out.extend(relocation_targets(file));
    for (start, code) in &image.text {
        sweep(&image, code, *start, &mut out);
    }
    out.retain(|&a| image.is_code(a));
    out.sort_unstable();
    out.dedup();
    out
}

/// The object's allocated sections, to read by address.
struct Image<'a> {
    text: Vec<(u64, &'a [u8])>,
    data: Vec<(u64, &'a [u8])>,
}

impl<'a> Image<'a> {
    fn new(file: &'a object::File) -> Self {
        let (mut text, mut data) = (Vec::new(), Vec::new());
        for s in file.sections() {
            let Ok(bytes) = s.data() else { continue };
            if s.address() == 0 || bytes.is_empty() {
                continue;
            }
            match s.kind() {
                SectionKind::Text => text.push((s.address(), bytes)),
                SectionKind::ReadOnlyData | SectionKind::ReadOnlyString | SectionKind::Data => {
                    data.push((s.address(), bytes))
                }
                _ => {}
            }
        }
        Image { text, data }
    }

    fn is_code(&self, a: u64) -> bool {
        self.text.iter().any(|&(start, b)| a >= start && a - start < b.len() as u64)
    }

    fn data_at(&self, a: u64, n: usize) -> Option<&'a [u8]> {
        self.data.iter().chain(&self.text).find_map(|&(start, b)| {
            let off = usize::try_from(a.checked_sub(start)?).ok()?;
            b.get(off..off.checked_add(n)?)
        })
    }
}

/// Code addresses that dynamic relocations (and `DT_RELR`) store.
fn relocation_targets(file: &object::File) -> Vec<u64> {
    const HOLDS_ADDRESS: [u32; 7] = [1, 6, 7, 8, 10, 11, 37];
    let mut out = Vec::new();
    if let Some(relocations) = file.dynamic_relocations() {
        for (_, r) in relocations {
            let RelocationFlags::Elf { r_type } = r.flags() else { continue };
            if !HOLDS_ADDRESS.contains(&r_type) {
                continue;
            }
            let base = match r.target() {
                RelocationTarget::Absolute => 0,
                RelocationTarget::Symbol(i) => {
                    match file.dynamic_symbol_table().and_then(|t| t.symbol_by_index(i).ok()) {
                        Some(s) => s.address(),
                        None => continue,
                    }
                }
                _ => continue,
            };
            out.push(base.wrapping_add(r.addend() as u64));
        }
    }
    if let object::File::Elf64(elf) = file {
        let image = Image::new(file);
        for header in elf.elf_section_table().iter() {
            let Ok(Some(relr)) = header.relr(elf.endian(), elf.data()) else { continue };
            for place in relr {
                if let Some(word) = image.data_at(place, 8) {
                    out.push(u64::from_le_bytes(word.try_into().unwrap_or_default()));
                }
            }
        }
    }
    out
}

/// Linear sweep of one executable section: direct branch targets and jump-table entries.
fn sweep(image: &Image, code: &[u8], start: u64, out: &mut Vec<u64>) {
    let decoded: Vec<Instruction> =
        Decoder::with_ip(64, code, start, DecoderOptions::NONE).into_iter().filter(|i| !i.is_invalid()).collect();
    for (n, i) in decoded.iter().enumerate() {
        out.extend(near_branch_target(i));
        let entries = table_bound(&decoded[n.saturating_sub(TABLE_READ_WINDOW)..n]).unwrap_or(TABLE_MAX_ENTRIES);
        if let Some(table) = relative_table(i, &decoded[n + 1..decoded.len().min(n + 1 + TABLE_READ_WINDOW)]) {
            let target = |e: &[u8]| table.wrapping_add(i32::from_le_bytes(e.try_into().unwrap_or_default()) as u64);
            read_table(image, table, 4, entries, target, out);
        }
        if let Some(table) = absolute_table(i) {
            read_table(image, table, 8, entries, |e| u64::from_le_bytes(e.try_into().unwrap_or_default()), out);
        }
    }
}

/// `lea T(%rip), %rX` whose register is then the base of a `movslq (%rX,%rY,4)`: T.
fn relative_table(lea: &Instruction, next: &[Instruction]) -> Option<u64> {
    if lea.mnemonic() != Mnemonic::Lea || !lea.is_ip_rel_memory_operand() {
        return None;
    }
    let base = lea.op0_register().full_register();
    next.iter()
        .any(|i| {
            i.mnemonic() == Mnemonic::Movsxd
                && i.op1_kind() == OpKind::Memory
                && i.memory_base().full_register() == base
                && i.memory_index_scale() == 4
                && i.memory_index() != Register::None
        })
        .then(|| lea.ip_rel_memory_address())
}

/// An indexed read of 8-byte words at an absolute address (`jmp *T(,%rY,8)`,
/// `mov T(,%rY,8), %rX`): T.
fn absolute_table(i: &Instruction) -> Option<u64> {
    let reads = (0..i.op_count()).any(|n| i.op_kind(n) == OpKind::Memory);
    let wanted = matches!(i.mnemonic(), Mnemonic::Jmp | Mnemonic::Mov);
    (wanted
        && reads
        && i.memory_base() == Register::None
        && i.memory_index() != Register::None
        && i.memory_index_scale() == 8)
        .then(|| i.memory_displacement64())
}

/// The number of entries the last bound check in `before` allows: `cmp $N, ...` then
/// `ja` (N + 1 entries) or `jae` (N).
fn table_bound(before: &[Instruction]) -> Option<usize> {
    let at = before.iter().rposition(|i| matches!(i.mnemonic(), Mnemonic::Ja | Mnemonic::Jae))?;
    let cmp = before[..at].last().filter(|i| i.mnemonic() == Mnemonic::Cmp && is_immediate(i.op1_kind()))?;
    let bound = usize::try_from(cmp.immediate(1)).ok().filter(|&b| b < TABLE_MAX_ENTRIES)?;
    Some(if before[at].mnemonic() == Mnemonic::Ja { bound + 1 } else { bound })
}

fn is_immediate(k: OpKind) -> bool {
    matches!(
        k,
        OpKind::Immediate8
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32
            | OpKind::Immediate32to64
    )
}

/// At most `entries` entries of `size` bytes from `table`, while `target(entry)` lands in
/// code.
fn read_table(
    image: &Image,
    table: u64,
    size: usize,
    entries: usize,
    target: impl Fn(&[u8]) -> u64,
    out: &mut Vec<u64>,
) {
    for n in 0..entries {
        let Some(entry) = image.data_at(table + (n * size) as u64, size) else { return };
        let to = target(entry);
        if !image.is_code(to) {
            return;
        }
        out.push(to);
    }
}
