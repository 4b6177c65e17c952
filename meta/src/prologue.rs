//! Function entry kinds, how each is redirected, and the order in which its entry
//! bytes may be rewritten while threads run through them.
//!
//! A NOP-pad function (`-fpatchable-function-entry=16,14`) has 14 NOP bytes before its
//! symbol and a 2-byte NOP at the entry (after `endbr64` with `-fcf-protection`). To
//! redirect it we write, once, a jump into the pad that goes through word 0 of the
//! function's descriptor in the runtime, then turn the 2-byte NOP into a short jump to
//! it. The [`Layout`]s:
//!
//! ```text
//! Near       entry: eb f8 -> entry-6: ff 25 <desc - entry>        jmp *desc(%rip)
//! Far        entry: eb f8 -> entry-6: ff 25 <-14> -> entry-14: [8-byte far stub address]
//! EndbrNear  entry+4: eb f5 -> entry-5: eb f5 -> entry-14: ff 25 <desc - (entry-8)>
//! EndbrFar   entry+4: eb f4 -> entry-6: ff 25 <-14> -> entry-14: [far stub address]
//! ```
//!
//! `Far` is for functions more than 2 GiB away from the runtime (a PIE executable's):
//! the far stub, in the runtime, is `jmp *desc(%rip)`.
//!
//! The tools write code through `/proc/PID/mem`, and the kernel copies those bytes with
//! `rep movsb` (or byte moves), so a 2-byte write is NOT one atomic store. We therefore
//! write entry bytes one at a time, and every intermediate state must be a harmless
//! instruction ([`write_plan`]): `66 f8` is `clc` (flags are dead at a call boundary),
//! `3c xx` is `cmp $xx, %al`, while `66 f0` (a `lock` prefix), `66 f4` (`hlt`) or `eb 90`
//! (a jump into the body) are not. A thread may also sit between the two NOPs of a gcc
//! `90 90` entry, so there the second byte alone must always be harmless too.
//!
//! fentry functions (`-pg -mfentry`) need no code write at all: the runtime's
//! `__fentry__` looks the function up by its return address.

/// How a function begins, as recorded in `patch.meta`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Prologue {
    /// 14 NOPs before the entry, `66 90` at the entry (clang, or gcc after cc-build).
    NopPad66 = 1,
    /// 14 NOPs before the entry, `90 90` at the entry (gcc as it comes).
    NopPad90 = 2,
    /// `endbr64` at the entry followed by the 2 NOPs (`-fcf-protection`).
    EndbrNopPad = 3,
    /// `call *__fentry__@GOTPCREL(%rip)` (`ff 15 rel32`): gcc `-pg -mfentry` shared
    /// objects and PIE executables.
    FentryGotCall = 4,
    /// `call __fentry__` (`e8 rel32`): clang, and gcc's non-PIE executables.
    FentryCall = 5,
    /// No pad: the first whole instructions (at least 5 bytes, after a kept `endbr64`)
    /// are overwritten with a `jmp rel32` to a slot in a trampoline region of the
    /// runtime, which holds them relocated ([`Displaced`]; see docs/prologues.md).
    Unpadded = 6,
}

/// What the entry jump of an [`Prologue::Unpadded`] function overwrites, as `pulp pack`
/// planned it (`pulp_unpadded::plan`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Displaced {
    /// Bytes kept at the entry: 4 for a leading `endbr64`, else 0.
    pub skip: u8,
    /// The original bytes overwritten from entry+skip: whole instructions, at least
    /// [`UNPADDED_JUMP`] bytes, at most [`MAX_DISPLACED`].
    pub original: Vec<u8>,
}

/// Length of the entry jump of an unpadded function (`e9 rel32`).
pub const UNPADDED_JUMP: usize = 5;
/// Most bytes the entry jump of an unpadded function overwrites (4 bytes of earlier
/// instructions, then one of at most 15).
pub const MAX_DISPLACED: usize = 19;
/// Bytes of a trampoline slot: the jump through the descriptor (16) and the relocated
/// copy (at most `pulp_unpadded::MAX_COPY`, 112).
pub const SLOT_SIZE: u64 = 128;
/// Offset of the relocated copy (the original body) in a slot.
pub const SLOT_COPY: u64 = 16;
/// `int3`.
pub const INT3: u8 = 0xcc;

/// The 16 bytes at the start of a slot: `movabs $desc, %r11; jmp *(%r11)`, int3 fill.
pub fn slot_head(desc: u64) -> [u8; SLOT_COPY as usize] {
    let mut b = [INT3; SLOT_COPY as usize];
    b[0] = 0x49;
    b[1] = 0xbb;
    b[2..10].copy_from_slice(&desc.to_le_bytes());
    b[10..13].copy_from_slice(&[0x41, 0xff, 0x23]);
    b
}

/// The bytes an unpadded function's overwritten range holds when redirected to `slot`:
/// `jmp rel32` (from `start`, the first overwritten byte), then int3 for the rest of
/// `len`. `None` when the slot is beyond a 32-bit displacement.
pub fn unpadded_jump(start: u64, len: usize, slot: u64) -> Option<Vec<u8>> {
    let disp = i32::try_from(slot as i128 - (start as i128 + UNPADDED_JUMP as i128)).ok()?;
    let mut b = vec![INT3; len.max(UNPADDED_JUMP)];
    b[0] = 0xe9;
    b[1..5].copy_from_slice(&disp.to_le_bytes());
    Some(b)
}

/// Number of NOP bytes a NOP-pad function has before its symbol.
pub const PAD_BEFORE: usize = 14;
/// Where the redirect instruction goes, relative to the entry.
pub const PAD_JUMP_OFFSET: i64 = -6;
/// `jmp *disp32(%rip)` opcode bytes; the 4-byte displacement follows.
pub const PAD_JUMP_OPCODE: [u8; 2] = [0xff, 0x25];
/// The entry bytes of a redirected NOP-pad function (`Near`/`Far`): `jmp -8` to `entry - 6`.
pub const ENTRY_JUMP: [u8; 2] = [0xeb, 0xf8];
const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];

impl Prologue {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::NopPad66,
            2 => Self::NopPad90,
            3 => Self::EndbrNopPad,
            4 => Self::FentryGotCall,
            5 => Self::FentryCall,
            6 => Self::Unpadded,
            _ => return None,
        })
    }

    /// Short name used by `pulp dump` and error messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::NopPad66 => "nop-pad (66 90)",
            Self::NopPad90 => "nop-pad (90 90)",
            Self::EndbrNopPad => "endbr64 + nop-pad",
            Self::FentryGotCall => "fentry (call *GOT)",
            Self::FentryCall => "fentry (call rel32)",
            Self::Unpadded => "unpadded (entry jump to a trampoline)",
        }
    }

    /// The bytes at the entry of an untouched function of this kind, where fixed.
    pub fn entry_bytes(self) -> Option<[u8; 2]> {
        match self {
            Self::NopPad66 => Some([0x66, 0x90]),
            Self::NopPad90 => Some([0x90, 0x90]),
            _ => None,
        }
    }

    /// Whether this release can redirect functions of this kind.
    pub fn is_supported(self) -> bool {
        true
    }

    /// Offset from the symbol of the 2-byte NOP that becomes a jump (NOP-pad kinds).
    pub fn jump_offset(self) -> Option<u64> {
        match self {
            Self::NopPad66 | Self::NopPad90 => Some(0),
            Self::EndbrNopPad => Some(4),
            Self::FentryGotCall | Self::FentryCall | Self::Unpadded => None,
        }
    }

    pub fn is_fentry(self) -> bool {
        matches!(self, Self::FentryGotCall | Self::FentryCall)
    }
}

impl std::fmt::Display for Prologue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Recognise the prologue of a function from the bytes before its entry (`before`,
/// the [`PAD_BEFORE`] bytes ending at the entry; may be shorter at the start of a
/// section) and the bytes at its entry (`at`, at least 6 bytes).
/// Returns `None` for a function that cannot be live-patched.
pub fn classify(before: &[u8], at: &[u8]) -> Option<Prologue> {
    let padded = before.len() >= PAD_BEFORE && before[before.len() - PAD_BEFORE..].iter().all(|&b| b == 0x90);
    match at {
        [0x66, 0x90, ..] if padded => Some(Prologue::NopPad66),
        [0x90, 0x90, ..] if padded => Some(Prologue::NopPad90),
        [a, b, c, d, 0x66 | 0x90, 0x90, ..] if padded && [*a, *b, *c, *d] == ENDBR64 => Some(Prologue::EndbrNopPad),
        _ => match fentry_call(at)? {
            (_, 6) => Some(Prologue::FentryGotCall),
            _ => Some(Prologue::FentryCall),
        },
    }
}

/// Where an fentry function calls `__fentry__`: `(offset, length)` of the call from the
/// bytes at its entry (after an `endbr64`, if any). Callers that can, check that the
/// call really goes to `__fentry__`: an ordinary function may also start with a call.
pub fn fentry_call(at: &[u8]) -> Option<(u64, u64)> {
    let (off, rest) = if at.len() >= 4 && at[..4] == ENDBR64 { (4, &at[4..]) } else { (0, at) };
    match rest {
        [0xff, 0x15, ..] => Some((off, 6)),
        [0xe8, ..] => Some((off, 5)),
        _ => None,
    }
}

/// How a NOP-pad function is redirected (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Near,
    Far,
    EndbrNear,
    EndbrFar,
}

impl Layout {
    /// The layout for a function of `kind` at `entry` whose descriptor is at `desc`;
    /// `original` are its 2 NOP bytes. `None` when it cannot be redirected safely: an
    /// `endbr64` function out of the descriptors' reach whose NOPs are gcc's `90 90`.
    pub fn choose(kind: Prologue, entry: u64, desc: u64, original: [u8; 2]) -> Option<Self> {
        match kind {
            Prologue::NopPad66 | Prologue::NopPad90 => {
                Some(if pad_jump(entry, desc).is_some() { Self::Near } else { Self::Far })
            }
            Prologue::EndbrNopPad => {
                if pad_jump(entry - 8, desc).is_some() {
                    Some(Self::EndbrNear)
                } else if original[0] == 0x66 {
                    Some(Self::EndbrFar)
                } else {
                    None
                }
            }
            Prologue::FentryGotCall | Prologue::FentryCall | Prologue::Unpadded => None,
        }
    }

    /// Offset of the 2 bytes that become the jump, from the symbol.
    pub fn jump_offset(self) -> u64 {
        match self {
            Self::Near | Self::Far => 0,
            Self::EndbrNear | Self::EndbrFar => 4,
        }
    }

    /// The 2 bytes of the short jump into the pad.
    pub fn jump(self) -> [u8; 2] {
        match self {
            Self::Near | Self::Far => ENTRY_JUMP,
            Self::EndbrNear => [0xeb, 0xf5],
            Self::EndbrFar => [0xeb, 0xf4],
        }
    }

    /// What the pad must hold, as `(address, bytes)`: `desc` for near layouts,
    /// `far_stub` (the runtime's `jmp *desc(%rip)`) for far ones. `None` if a near
    /// layout's descriptor is out of reach.
    pub fn pad(self, entry: u64, desc: u64, far_stub: u64) -> Option<Vec<(u64, Vec<u8>)>> {
        let slot_jump = pad_jump(entry, entry - 14).expect("-14 is in reach");
        Some(match self {
            Self::Near => vec![(entry - 6, pad_jump(entry, desc)?.to_vec())],
            Self::Far | Self::EndbrFar => {
                vec![(entry - 14, far_stub.to_le_bytes().to_vec()), (entry - 6, slot_jump.to_vec())]
            }
            Self::EndbrNear => vec![(entry - 14, pad_jump(entry - 8, desc)?.to_vec()), (entry - 5, vec![0xeb, 0xf5])],
        })
    }
}

/// Whether a thread may run the 2 bytes `state` at a jump offset whose bytes were
/// `original` before the first redirection: a complete harmless instruction, and, for a
/// gcc `90 90` entry (a thread may have stopped after the first NOP), a second byte that
/// is harmless alone.
pub fn harmless(original: [u8; 2], state: [u8; 2]) -> bool {
    // One-byte instructions that only touch the flags (dead at a call boundary) or
    // nothing: nop, cmc, clc, stc, cld (DF is already clear at a call).
    let lone = |b: u8| matches!(b, 0x90 | 0xf5 | 0xf8 | 0xf9 | 0xfc);
    let whole = match state {
        [0x66 | 0x90, b] => lone(b),
        [0x3c, _] => true, // cmp $imm8, %al
        _ => false,
    };
    whole && (original[0] != 0x90 || lone(state[1]))
}

/// Whether the 2 bytes `state` at a jump offset whose bytes were `original` are ours: the
/// original NOPs, the short jump of any layout, or any state a write plan passes through
/// (all harmless), which a tool killed between two byte writes may have left. The next
/// run takes any of them to where it needs them with [`write_plan`].
pub fn ours_or_in_flight(original: [u8; 2], state: [u8; 2]) -> bool {
    state == original || matches!(state, [0xeb, 0xf8 | 0xf5 | 0xf4]) || harmless(original, state)
}

/// The single-byte writes (offset 0 or 1, value) that take the 2 bytes at a jump
/// offset from `from` to `to` through harmless states only (the final state, a jump or
/// the original NOPs, excepted). `None` if there is no such order.
pub fn write_plan(original: [u8; 2], from: [u8; 2], to: [u8; 2]) -> Option<Vec<(u64, u8)>> {
    if from == to {
        return Some(Vec::new());
    }
    let ok = |s: [u8; 2]| s == to || harmless(original, s);
    let second_first = [from[0], to[1]];
    let first_first = [to[0], from[1]];
    if ok(second_first) {
        return Some(vec![(1, to[1]), (0, to[0])]);
    }
    if ok(first_first) {
        return Some(vec![(0, to[0]), (1, to[1])]);
    }
    // Through `cmp $imm8, %al`, whose immediate may be anything.
    let (a, b) = ([0x3c, from[1]], [0x3c, to[1]]);
    (ok(a) && ok(b)).then(|| vec![(0, 0x3c), (1, to[1]), (0, to[0])])
}

/// The 6-byte `jmp *disp32(%rip)` placed at `entry - 6` that jumps through the 8-byte
/// word at `slot`. `None` when the slot is not within ±2 GiB of the entry.
pub fn pad_jump(entry: u64, slot: u64) -> Option<[u8; 6]> {
    // The displacement is relative to the end of the instruction, which is the entry.
    let disp = i32::try_from(slot as i128 - entry as i128).ok()?;
    let d = disp.to_le_bytes();
    Some([PAD_JUMP_OPCODE[0], PAD_JUMP_OPCODE[1], d[0], d[1], d[2], d[3]])
}

/// The slot a pad jump written by [`pad_jump`] at `entry - 6` goes through, if `bytes` is one.
pub fn pad_jump_slot(entry: u64, bytes: &[u8; 6]) -> Option<u64> {
    if bytes[..2] != PAD_JUMP_OPCODE {
        return None;
    }
    let disp = i32::from_le_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]);
    Some(entry.wrapping_add(disp as i64 as u64))
}

/// Where the runtime's pieces are, as far as writing code needs them.
#[derive(Clone, Copy, Debug)]
pub struct Tables {
    pub descs: u64,
    pub desc_size: u64,
    pub far_stubs: u64,
}

impl Tables {
    fn far_stub(&self, desc: u64) -> u64 {
        self.far_stubs + (desc - self.descs) / self.desc_size * crate::abi::FAR_STUB_SIZE
    }
}

/// The code writes that bring the entries of `replies` where the runtime asked: the pad
/// bytes (unreachable until an entry jumps there, so in any order, before a
/// `membarrier(SYNC_CORE)`), then per entry the single-byte writes of its plan. `read`
/// gives the bytes now at an address. fentry functions need nothing.
#[derive(Debug, Default)]
pub struct CodeWrites {
    /// Pad bytes that differ from what is there.
    pub pads: Vec<(u64, Vec<u8>)>,
    /// Per entry, the address of its jump bytes and the writes `(offset, byte)`.
    pub entries: Vec<(u64, Vec<(u64, u8)>)>,
}

/// Plan the code writes for `replies` (see [`CodeWrites`]). Errors name the entry.
pub fn code_writes(
    replies: &[crate::abi::FuncReply],
    tables: Tables,
    mut read: impl FnMut(u64, usize) -> Option<Vec<u8>>,
) -> Result<CodeWrites, String> {
    use crate::abi::EntryAction;
    let layout = |r: &crate::abi::FuncReply| {
        Layout::choose(r.kind, r.entry, r.desc, r.original)
            .ok_or_else(|| format!("function at {:#x} ({}) cannot be redirected from this distance", r.entry, r.kind))
    };
    let mut out = CodeWrites::default();
    // fentry functions need no write; unpadded ones are written by the tool alone
    // (`pulp-trigger`, text_poke_bp style, see docs/prologues.md).
    for r in replies.iter().filter(|r| !r.kind.is_fentry() && r.kind != Prologue::Unpadded) {
        let l = layout(r)?;
        let to = match r.action {
            EntryAction::Redirect => {
                let pad = l
                    .pad(r.entry, r.desc, tables.far_stub(r.desc))
                    .ok_or_else(|| format!("the descriptor of {:#x} is out of reach", r.entry))?;
                for (addr, bytes) in pad {
                    if read(addr, bytes.len()).as_deref() != Some(&bytes[..]) {
                        out.pads.push((addr, bytes));
                    }
                }
                l.jump()
            }
            EntryAction::Restore => r.original,
            EntryAction::Keep => continue,
        };
        let at = r.entry + l.jump_offset();
        let now = read(at, 2).ok_or_else(|| format!("cannot read the entry at {at:#x}"))?;
        let from = [now[0], now[1]];
        // One byte at a time, every intermediate state a harmless instruction.
        let plan = write_plan(r.original, from, to)
            .ok_or_else(|| format!("no safe way to rewrite {from:02x?} to {to:02x?} at {at:#x}"))?;
        if !plan.is_empty() {
            out.entries.push((at, plan));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_each_kind() {
        let pad = [0x90u8; 14];
        assert_eq!(classify(&pad, &[0x66, 0x90, 0x55, 0, 0, 0]), Some(Prologue::NopPad66));
        assert_eq!(classify(&pad, &[0x90, 0x90, 0x55, 0, 0, 0]), Some(Prologue::NopPad90));
        assert_eq!(classify(&pad, &[0xf3, 0x0f, 0x1e, 0xfa, 0x66, 0x90]), Some(Prologue::EndbrNopPad));
        assert_eq!(classify(&[], &[0xff, 0x15, 1, 2, 3, 4]), Some(Prologue::FentryGotCall));
        assert_eq!(classify(&[], &[0xe8, 1, 2, 3, 4, 0]), Some(Prologue::FentryCall));
        // Entry NOPs without the pad in front, or a plain function: not patchable.
        assert_eq!(classify(&[0xc3; 14], &[0x66, 0x90, 0, 0, 0, 0]), None);
        assert_eq!(classify(&pad, &[0x55, 0x48, 0x89, 0xe5, 0, 0]), None);
    }

    #[test]
    fn classifies_fentry_after_endbr() {
        let pad = [0x90u8; 14];
        assert_eq!(classify(&pad, &[0xf3, 0x0f, 0x1e, 0xfa, 0xff, 0x15, 0, 0]), Some(Prologue::FentryGotCall));
        assert_eq!(fentry_call(&[0xf3, 0x0f, 0x1e, 0xfa, 0xe8, 0, 0, 0, 0]), Some((4, 5)));
    }

    /// Every intermediate state of every plan we use is harmless, in both directions.
    #[test]
    fn write_plans_only_pass_through_harmless_states() {
        for layout in [Layout::Near, Layout::Far, Layout::EndbrNear, Layout::EndbrFar] {
            for original in [[0x66, 0x90], [0x90, 0x90]] {
                let jump = layout.jump();
                let apply = write_plan(original, original, jump);
                let restore = write_plan(original, jump, original);
                if layout == Layout::EndbrFar && original[0] == 0x90 {
                    // gcc's 90 90 cannot reach `eb f4` safely; `choose` never picks it.
                    assert!(apply.is_none());
                    continue;
                }
                for (from, plan) in [(original, apply.unwrap()), (jump, restore.unwrap())] {
                    let mut state = from;
                    for (i, &(at, byte)) in plan.iter().enumerate() {
                        state[at as usize] = byte;
                        if i + 1 < plan.len() {
                            assert!(harmless(original, state), "{layout:?} {original:02x?}: {state:02x?}");
                        }
                    }
                }
            }
        }
        assert_eq!(write_plan([0x66, 0x90], [0x66, 0x90], ENTRY_JUMP), Some(vec![(1, 0xf8), (0, 0xeb)]));
        assert!(!harmless([0x66, 0x90], [0x66, 0xf0]) && !harmless([0x66, 0x90], [0x66, 0xf4]));
    }

    /// Every state a plan passes through, in either direction and from any state a killed
    /// plan left, is recognised as ours and has a plan to every layout's jump and back.
    #[test]
    fn every_in_flight_state_is_recognised_and_repairable() {
        for original in [[0x66, 0x90], [0x90, 0x90]] {
            for layout in [Layout::Near, Layout::Far, Layout::EndbrNear, Layout::EndbrFar] {
                let jump = layout.jump();
                for (from, to) in [(original, jump), (jump, original)] {
                    let Some(plan) = write_plan(original, from, to) else { continue };
                    let mut state = from;
                    for &(at, byte) in &plan {
                        state[at as usize] = byte;
                        assert!(ours_or_in_flight(original, state), "{original:02x?} {state:02x?}");
                        for target in [original, jump] {
                            assert!(write_plan(original, state, target).is_some(), "{state:02x?} -> {target:02x?}");
                        }
                    }
                }
            }
        }
        assert!(!ours_or_in_flight([0x66, 0x90], [0x55, 0x48]));
    }

    #[test]
    fn layouts_reach_their_slots() {
        let entry = 0x5555_0000_1000u64;
        let near_desc = entry + 0x1000;
        let far = Layout::choose(Prologue::NopPad66, entry, 0x7f00_0000_0000, [0x66, 0x90]).unwrap();
        assert_eq!(far, Layout::Far);
        let pad = far.pad(entry, 0x7f00_0000_0000, 0x7f00_0000_4000).unwrap();
        assert_eq!(pad_jump_slot(entry, &pad[1].1.clone().try_into().unwrap()), Some(entry - 14));
        let near = Layout::choose(Prologue::EndbrNopPad, entry, near_desc, [0x90, 0x90]).unwrap();
        assert_eq!(near, Layout::EndbrNear);
        let pad = near.pad(entry, near_desc, 0).unwrap();
        assert_eq!(pad_jump_slot(entry - 8, &pad[0].1.clone().try_into().unwrap()), Some(near_desc));
        assert_eq!(Layout::choose(Prologue::EndbrNopPad, entry, 0x7f00_0000_0000, [0x90, 0x90]), None);
    }

    #[test]
    fn pad_jump_round_trips_and_refuses_far_slots() {
        let entry = 0x7f00_0000_1000;
        let slot = 0x7f00_4000_0000;
        let j = pad_jump(entry, slot).unwrap();
        assert_eq!(pad_jump_slot(entry, &j), Some(slot));
        assert_eq!(pad_jump(0x5555_0000_0000, slot), None);
    }
}
