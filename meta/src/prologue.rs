//! Function entry kinds and the redirection bytes written into NOP-pad functions.
//!
//! A NOP-pad function (`-fpatchable-function-entry=16,14`) has 14 NOP bytes before its
//! symbol and a 2-byte NOP at the entry. To redirect it we write, once, a 6-byte
//! `jmp *disp32(%rip)` at `entry - 6` whose memory operand is word 0 of the function's
//! descriptor in the runtime, then turn the entry NOP into `jmp -8` (`eb f8`).
//!
//! Why `eb f8` and not the `eb f0` of a 13-byte `movabs`/`jmp *%r11` prefix: the tools
//! write code through `/proc/PID/mem`, and the kernel copies those bytes with `rep movsb`
//! (or byte moves), so a 2-byte write is NOT one atomic store. We therefore write the two
//! entry bytes one at a time, second byte first, and every intermediate state must be a
//! harmless instruction: `66 f8` and `90 f8` are `clc` (flags are dead at a call
//! boundary), while `66 f0` (a `lock` prefix) or `eb 90` (a jump into the body) are not.

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
    /// `call *__fentry__@GOTPCREL(%rip)` (`ff 15 rel32`), gcc `-pg -mfentry` shared objects.
    FentryGotCall = 4,
    /// `call __fentry__` (`e8 rel32`), clang and executables with `-pg -mfentry`.
    FentryCall = 5,
}

/// Number of NOP bytes a NOP-pad function has before its symbol.
pub const PAD_BEFORE: usize = 14;
/// Where the redirect instruction goes, relative to the entry.
pub const PAD_JUMP_OFFSET: i64 = -6;
/// `jmp *disp32(%rip)` opcode bytes; the 4-byte displacement follows.
pub const PAD_JUMP_OPCODE: [u8; 2] = [0xff, 0x25];
/// The entry bytes of a redirected NOP-pad function: `jmp -8` to `entry - 6`.
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
        matches!(self, Self::NopPad66 | Self::NopPad90)
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
        [0xff, 0x15, ..] => Some(Prologue::FentryGotCall),
        [0xe8, ..] => Some(Prologue::FentryCall),
        _ => None,
    }
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
    fn pad_jump_round_trips_and_refuses_far_slots() {
        let entry = 0x7f00_0000_1000;
        let slot = 0x7f00_4000_0000;
        let j = pad_jump(entry, slot).unwrap();
        assert_eq!(pad_jump_slot(entry, &j), Some(slot));
        assert_eq!(pad_jump(0x5555_0000_0000, slot), None);
    }
}
