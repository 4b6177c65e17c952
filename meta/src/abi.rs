//! The fixed layout of a running `libpulp_rs.so` that the tools read and call.
//!
//! The runtime exports one data symbol, [`INFO_SYMBOL`], a [`RuntimeInfo`]. Everything
//! else (entry points, descriptor table, request buffer) is found through it, so the
//! runtime's internal symbols stay hidden and the tools never depend on `.symtab`.
//!
//! Protocol of one call: the tool writes a request into the buffer, hijacks one thread
//! to run `call_stub + 2` with `%rax` = the entry point and `%rdi` = the request length;
//! the entry returns an [`EntryStatus`] in `%rax` and leaves its reply in the buffer.

/// Name of the exported [`RuntimeInfo`].
pub const INFO_SYMBOL: &str = "pulp_rs_info";
/// `RuntimeInfo::magic`.
pub const INFO_MAGIC: u64 = u64::from_le_bytes(*b"PULPRS\0\x01");
/// Bumped whenever this layout or the protocol changes.
pub const ABI_VERSION: u32 = 1;
/// Offset from `call_stub` where the hijacked thread starts. The two bytes before it are
/// NOPs, so a restarted system call, which moves `%rip` back by 2, is harmless.
pub const CALL_STUB_ENTRY: u64 = 2;

/// What the tools read at [`INFO_SYMBOL`]; every field is 8 bytes, little-endian.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuntimeInfo {
    pub magic: u64,
    /// [`ABI_VERSION`] in the low 32 bits, `size_of::<Descriptor>()` in the high 32.
    pub version_and_desc_size: u64,
    /// Address of the descriptor table and its number of entries.
    pub descs: u64,
    pub desc_count: u64,
    /// Address of the hijack stub: `nop; nop; call *%rax; int3`.
    pub call_stub: u64,
    /// `extern "C" fn(request_len: usize) -> i64`: apply the `patch.meta` in the buffer.
    pub entry_apply: u64,
    /// `extern "C" fn(request_len: usize) -> i64`: revert the `patch.meta` in the buffer.
    pub entry_revert: u64,
    /// `extern "C" fn(request_len: usize) -> i64`: make every thread of the process
    /// discard stale instructions (membarrier SYNC_CORE) before entries are flipped.
    pub entry_sync_core: u64,
    /// Request/reply buffer and its size.
    pub buffer: u64,
    pub buffer_len: u64,
}

impl RuntimeInfo {
    pub const SIZE: usize = core::mem::size_of::<Self>();

    pub fn abi_version(&self) -> u32 {
        self.version_and_desc_size as u32
    }

    pub fn desc_size(&self) -> u64 {
        self.version_and_desc_size >> 32
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() < Self::SIZE {
            return None;
        }
        let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
        Some(Self {
            magic: w(0),
            version_and_desc_size: w(1),
            descs: w(2),
            desc_count: w(3),
            call_stub: w(4),
            entry_apply: w(5),
            entry_revert: w(6),
            entry_sync_core: w(7),
            buffer: w(8),
            buffer_len: w(9),
        })
    }
}

/// One patched function. Word 0 is what the entry's pad jumps through; the rest is read
/// by the dispatch trampoline during a transition (`prev` for threads not yet cleared,
/// `new` for cleared ones). Descriptors are never reused for another function: a thread
/// that was preempted inside a pad must still land on the right code.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Descriptor {
    /// Current jump target (word 0).
    pub target: core::sync::atomic::AtomicU64,
    /// Version before the patch in transition.
    pub prev: core::sync::atomic::AtomicU64,
    /// Version of the patch in transition.
    pub new: core::sync::atomic::AtomicU64,
    /// The function's entry address, 0 while the descriptor is free.
    pub entry: core::sync::atomic::AtomicU64,
}

/// Return value of an entry point (`%rax`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum EntryStatus {
    /// Done; the buffer holds a [`Reply`].
    Done = 0,
    /// Nothing to do (apply: already applied; revert: not applied); the buffer holds a [`Reply`].
    NothingToDo = 1,
    /// Refused; nothing changed; the buffer holds a `u32` length and a UTF-8 message.
    Refused = -1,
}

impl EntryStatus {
    pub fn from_i64(v: i64) -> Option<Self> {
        Some(match v {
            0 => Self::Done,
            1 => Self::NothingToDo,
            -1 => Self::Refused,
            _ => return None,
        })
    }
}

/// What the tool must do with a function's entry after the runtime has updated its descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum EntryAction {
    /// Leave the code as it is.
    Keep = 0,
    /// Make sure the pad jumps through `desc` and the entry jumps to the pad.
    Redirect = 1,
    /// Put the entry's original bytes back (the pad jump stays, unreachable).
    Restore = 2,
}

/// One function in a [`Reply`]: 24 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FuncReply {
    pub entry: u64,
    pub desc: u64,
    pub action: EntryAction,
    /// The entry's bytes before the first patch.
    pub original: [u8; 2],
}

pub const FUNC_REPLY_SIZE: usize = 24;

/// The runtime's answer after a successful entry: `u32` count, then [`FuncReply`]s.
pub fn encode_reply(funcs: &[FuncReply], out: &mut [u8]) -> Option<usize> {
    let len = 4 + funcs.len() * FUNC_REPLY_SIZE;
    if out.len() < len {
        return None;
    }
    out[..4].copy_from_slice(&(funcs.len() as u32).to_le_bytes());
    for (i, f) in funcs.iter().enumerate() {
        let o = &mut out[4 + i * FUNC_REPLY_SIZE..4 + (i + 1) * FUNC_REPLY_SIZE];
        o[..8].copy_from_slice(&f.entry.to_le_bytes());
        o[8..16].copy_from_slice(&f.desc.to_le_bytes());
        o[16] = f.action as u8;
        o[17..19].copy_from_slice(&f.original);
        o[19..].fill(0);
    }
    Some(len)
}

/// Decode a [`Reply`] read back from the buffer; `None` if it is malformed.
pub fn decode_reply(b: &[u8]) -> Option<Vec<FuncReply>> {
    let n = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let body = b.get(4..4 + n.checked_mul(FUNC_REPLY_SIZE)?)?;
    body.chunks_exact(FUNC_REPLY_SIZE)
        .map(|o| {
            Some(FuncReply {
                entry: u64::from_le_bytes(o[..8].try_into().ok()?),
                desc: u64::from_le_bytes(o[8..16].try_into().ok()?),
                action: match o[16] {
                    0 => EntryAction::Keep,
                    1 => EntryAction::Redirect,
                    2 => EntryAction::Restore,
                    _ => return None,
                },
                original: [o[17], o[18]],
            })
        })
        .collect()
}

/// Write a refusal message into the buffer (`u32` length + UTF-8, cut to fit).
pub fn encode_message(msg: &str, out: &mut [u8]) {
    if out.len() < 4 {
        return;
    }
    let n = msg.len().min(out.len() - 4);
    out[..4].copy_from_slice(&(n as u32).to_le_bytes());
    out[4..4 + n].copy_from_slice(&msg.as_bytes()[..n]);
}

pub fn decode_message(b: &[u8]) -> String {
    let n = b.get(..4).map(|l| u32::from_le_bytes(l.try_into().unwrap()) as usize).unwrap_or(0);
    String::from_utf8_lossy(b.get(4..4 + n).unwrap_or(b"(unreadable message)")).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_round_trips() {
        let funcs = vec![
            FuncReply { entry: 0x1000, desc: 0x2000, action: EntryAction::Redirect, original: [0x66, 0x90] },
            FuncReply { entry: 0x3000, desc: 0x4000, action: EntryAction::Restore, original: [0x90, 0x90] },
        ];
        let mut buf = [0u8; 128];
        let n = encode_reply(&funcs, &mut buf).unwrap();
        assert_eq!(decode_reply(&buf[..n]).unwrap(), funcs);
        assert!(decode_reply(&buf[..n - 1]).is_none());
    }

    #[test]
    fn message_round_trips_and_is_cut_to_fit() {
        let mut buf = [0u8; 10];
        encode_message("symbol missing", &mut buf);
        assert_eq!(decode_message(&buf), "symbol");
    }
}
