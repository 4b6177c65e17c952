//! The fixed layout of a running `libpulp_rs.so` that the tools read and call.
//!
//! The runtime exports one data symbol, [`INFO_SYMBOL`], a [`RuntimeInfo`]. Everything
//! else (entry point, descriptor table, request buffer) is found through it, so the
//! runtime's internal symbols stay hidden and the tools never depend on `.symtab`.
//!
//! Protocol of one call: the tool writes a [`Request`] into the buffer, hijacks one thread
//! to run `call_stub + 2` with `%rbx` = the entry point and `%r15` = the request length;
//! the entry returns an [`EntryStatus`] and leaves its reply in the buffer.

/// Name of the exported [`RuntimeInfo`].
pub const INFO_SYMBOL: &str = "pulp_rs_info";
/// `RuntimeInfo::magic`.
pub const INFO_MAGIC: u64 = u64::from_le_bytes(*b"PULPRS\0\x01");
/// Bumped whenever this layout or the protocol changes.
pub const ABI_VERSION: u32 = 8;
/// Offset from `call_stub` where the hijacked thread starts. The two bytes before it are
/// NOPs, so a restarted system call, which moves `%rip` back by 2, is harmless.
pub const CALL_STUB_ENTRY: u64 = 2;

macro_rules! runtime_info {
    ($(#[$m:meta])* pub struct RuntimeInfo { $($(#[$fm:meta])* pub $field:ident: u64,)* }) => {
        $(#[$m])*
        pub struct RuntimeInfo { $($(#[$fm])* pub $field: u64,)* }

        impl RuntimeInfo {
            pub const SIZE: usize = core::mem::size_of::<Self>();

            pub fn from_bytes(b: &[u8]) -> Option<Self> {
                let mut words = b.get(..Self::SIZE)?.chunks_exact(8).map(|w| u64::from_le_bytes(w.try_into().unwrap()));
                Some(Self { $($field: words.next()?,)* })
            }
        }
    };
}

runtime_info! {
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
    /// Address of the hijack stub (`trm/asm/hijack.S`), and where a thread that ran an
    /// entry stops (SIGWINCH) inside it.
    pub call_stub: u64,
    pub call_stub_stop: u64,
    /// `extern "C" fn(request_len: usize) -> i64`: serve the [`Request`] in the buffer.
    pub entry: u64,
    /// `extern "C" fn(len: usize) -> i64`: map the entry stack if there is none and a
    /// buffer of at least `len` bytes if the current one is smaller; 0 or `-errno`. Called
    /// before the entry when the buffer is missing or too small.
    pub prepare: u64,
    /// Addresses of two `u64`s: the request/reply buffer's address (0: none yet) and its
    /// capacity.
    pub buffer: u64,
    pub buffer_len: u64,
    /// Address of the transition id (`u64`, 0: none), of the goal (`u64`, 1: threads move
    /// to `new`, 0: back to `prev`) and of the armed word (`u64`, 1: every entry of the
    /// transition is redirected, threads may move; written by the tool).
    pub transition: u64,
    pub goal: u64,
    pub armed: u64,
    /// Address of two `u64`s, set when a transition starts: the `cleared` TLS word's
    /// offset from the thread pointer (a thread's word is at its `fs_base` + this, as a
    /// signed number), and the address of the word's initial value in the runtime's TLS
    /// image (what new threads start with).
    pub cleared_offsets: u64,
    /// Status area ([`Status`](crate::status::Status), behind a sequence counter).
    pub status: u64,
    pub status_len: u64,
    /// Threads that moved themselves (gates, `pulp_quiescent`) during the transition:
    /// a [`ThreadLog`] written by the runtime, and one written by the tools.
    pub gate_log: u64,
    pub tool_log: u64,
    /// Capacity (entries) of each log.
    pub log_cap: u64,
    /// Far stubs: stub k, at `far_stubs + FAR_STUB_SIZE * k`, is `jmp *descs[k](%rip)`,
    /// for functions more than 2 GiB away from the descriptors.
    pub far_stubs: u64,
    /// Address of the thread id running an entry (`u64`, 0: none): the claim on the
    /// runtime's entry stack, which is also its registry lock.
    pub entry_owner: u64,
    /// Guarded calls: where the tool sends a thread that faulted or hung inside one
    /// (`%rdi` = signal, 0 for a timeout; `%rsi` = fault address), and the address of the
    /// number of guarded calls in progress (`u64`: 0, nothing to recover to).
    pub recover: u64,
    pub guard_depth: u64,
    /// The runtime's own log of what it did ([`MessageRing`]) and its size in bytes.
    pub messages: u64,
    pub messages_len: u64,
    /// Trampoline regions of unpadded functions: the address of a `u64` count and then
    /// up to [`MAX_TRAMPOLINE_REGIONS`] `(start, end)` pairs. Code there counts as inside
    /// the targets during a transition.
    pub trampolines: u64,
    /// Where a thread caught on the `int3` of an unpadded entry goes: the address of a
    /// `u64` count, then per descriptor index `(int3 address, slot)`.
    pub traps: u64,
}
}

/// Most trampoline regions the runtime maps.
pub const MAX_TRAMPOLINE_REGIONS: usize = 64;

/// The signal the hijack stub raises when an entry returns (see `trm/asm/hijack.S`).
pub const CALL_STUB_SIGNAL: i32 = 28; // SIGWINCH

/// Bytes between two far stubs.
pub const FAR_STUB_SIZE: u64 = 8;

impl RuntimeInfo {
    pub fn abi_version(&self) -> u32 {
        self.version_and_desc_size as u32
    }

    pub fn desc_size(&self) -> u64 {
        self.version_and_desc_size >> 32
    }
}

/// A log of threads by `(tid, fs_base)`: `u64` count, then `cap` pairs of `u64`.
/// Entries past the capacity are dropped (the tools then find those threads by sampling).
pub struct ThreadLog;

impl ThreadLog {
    /// Bytes of a log with `cap` entries.
    pub const fn size(cap: usize) -> usize {
        8 + cap * 16
    }

    /// Decode `(tid, fs_base)` pairs from a log read back from memory.
    pub fn decode(b: &[u8], cap: usize) -> Vec<(i32, u64)> {
        let n = b.get(..8).map(|c| u64::from_le_bytes(c.try_into().unwrap()) as usize).unwrap_or(0).min(cap);
        (0..n)
            .filter_map(|i| {
                let e = b.get(8 + i * 16..8 + i * 16 + 16)?;
                let tid = u64::from_le_bytes(e[..8].try_into().ok()?) as i32;
                let fs = u64::from_le_bytes(e[8..].try_into().ok()?);
                (tid > 0 && fs != 0).then_some((tid, fs))
            })
            .collect()
    }

    /// Encode pairs (for the tools' log).
    pub fn encode(entries: &[(i32, u64)], cap: usize) -> Vec<u8> {
        let n = entries.len().min(cap);
        let mut out = Vec::with_capacity(8 + n * 16);
        out.extend_from_slice(&(n as u64).to_le_bytes());
        for (tid, fs) in &entries[..n] {
            out.extend_from_slice(&(*tid as u64).to_le_bytes());
            out.extend_from_slice(&fs.to_le_bytes());
        }
        out
    }
}

/// What a request asks the runtime to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Op {
    /// Load the patch (its object's bytes are in the request) and start applying it: a
    /// transition, not yet armed (or, for an immediate patch, one the tool finishes at
    /// once). Nothing changes for any thread until every entry is redirected.
    Apply = 1,
    /// Start reverting the request's patch.
    Revert = 2,
    /// End the running transition where its goal is (`arg` = 1: force, threads still
    /// inside simply switch).
    Finish = 3,
    /// Turn the running transition around.
    Reverse = 4,
    /// `membarrier(SYNC_CORE)`: every thread drops stale instructions (after new pads).
    SyncCore = 5,
    /// Start reverting every patch of the target whose build-id is `target`.
    RevertAll = 6,
    /// Allow (`arg` = 1) or refuse (`arg` = 0) every later request but this one.
    SetPatchable = 7,
    /// Hand back every entry of the running transition (to rewrite them before it is
    /// armed, after a tool died while writing them).
    Resume = 8,
}

impl Op {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Apply,
            2 => Self::Revert,
            3 => Self::Finish,
            4 => Self::Reverse,
            5 => Self::SyncCore,
            6 => Self::RevertAll,
            7 => Self::SetPatchable,
            8 => Self::Resume,
            _ => return None,
        })
    }
}

/// A request, as the tool writes it into the buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub op: Op,
    /// Op-specific number (`Finish`: force; `SetPatchable`: on).
    pub arg: u64,
    /// The `patch.meta` bytes (`Apply`, `Revert`).
    pub meta: &'a [u8],
    /// Entries of the gates for a transition: the exported functions of the targets.
    pub gates: Vec<u64>,
    /// Code that counts as inside the targets during a transition, `[start, end)`: a
    /// shared library's executable segments, or, for the main executable (where every
    /// thread always has frames), the patched functions themselves.
    pub inside: Vec<(u64, u64)>,
    /// The patch object's bytes, exactly as the tool checked them (`Apply`).
    pub object: &'a [u8],
    /// A target's build-id (`RevertAll`).
    pub target: &'a [u8],
}

impl<'a> Request<'a> {
    /// A request with no payload.
    pub fn new(op: Op) -> Self {
        Self { op, arg: 0, meta: &[], gates: Vec::new(), inside: Vec::new(), object: &[], target: &[] }
    }

    /// `u32` op, `u64` arg, `u32` length + meta, `u32` count + `u64` gate entries, `u32`
    /// count + ranges, `u32` length + object, `u32` length + target.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            36 + self.meta.len()
                + self.gates.len() * 8
                + self.inside.len() * 16
                + self.object.len()
                + self.target.len(),
        );
        out.extend_from_slice(&(self.op as u32).to_le_bytes());
        out.extend_from_slice(&self.arg.to_le_bytes());
        out.extend_from_slice(&(self.meta.len() as u32).to_le_bytes());
        out.extend_from_slice(self.meta);
        out.extend_from_slice(&(self.gates.len() as u32).to_le_bytes());
        for g in &self.gates {
            out.extend_from_slice(&g.to_le_bytes());
        }
        out.extend_from_slice(&(self.inside.len() as u32).to_le_bytes());
        for (s, e) in &self.inside {
            out.extend_from_slice(&s.to_le_bytes());
            out.extend_from_slice(&e.to_le_bytes());
        }
        out.extend_from_slice(&(self.object.len() as u32).to_le_bytes());
        out.extend_from_slice(self.object);
        out.extend_from_slice(&(self.target.len() as u32).to_le_bytes());
        out.extend_from_slice(self.target);
        out
    }

    /// `None` if malformed (never panics, whatever the input).
    pub fn decode(b: &'a [u8]) -> Option<Self> {
        struct Cursor<'b> {
            b: &'b [u8],
            at: usize,
        }
        impl<'b> Cursor<'b> {
            fn take(&mut self, n: usize) -> Option<&'b [u8]> {
                let s = self.b.get(self.at..self.at.checked_add(n)?)?;
                self.at += n;
                Some(s)
            }
            fn u32(&mut self) -> Option<u32> {
                Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
            }
            fn u64(&mut self) -> Option<u64> {
                Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
            }
            fn bytes(&mut self) -> Option<&'b [u8]> {
                let n = self.u32()? as usize;
                self.take(n)
            }
            fn count(&mut self, size: usize) -> Option<usize> {
                let n = self.u32()? as usize;
                // Never allocate for more elements than the bytes left can hold.
                (n.checked_mul(size)? <= self.b.len() - self.at).then_some(n)
            }
        }
        let mut c = Cursor { b, at: 0 };
        let op = Op::from_u32(c.u32()?)?;
        let arg = c.u64()?;
        let meta = c.bytes()?;
        let g = c.count(8)?;
        let gates = (0..g).map(|_| c.u64()).collect::<Option<Vec<_>>>()?;
        let r = c.count(16)?;
        let inside = (0..r).map(|_| Some((c.u64()?, c.u64()?))).collect::<Option<Vec<_>>>()?;
        let object = c.bytes()?;
        let target = c.bytes()?;
        (c.at == b.len()).then_some(Self { op, arg, meta, gates, inside, object, target })
    }
}

/// The runtime's own log: a ring of text lines, readable from outside without stopping
/// anything. Layout: `u64` sequence counter (odd while a line is being written), `u64`
/// total bytes ever written, then the ring's bytes; lines end with `\n`.
pub struct MessageRing;

impl MessageRing {
    /// Bytes before the ring.
    pub const HEADER: usize = 16;

    /// The lines still in a ring read back from memory (`bytes` = the whole area), oldest
    /// first; the first one may be cut (it was partly overwritten).
    pub fn decode(bytes: &[u8]) -> Vec<String> {
        let Some(total) = bytes.get(8..16).map(|w| u64::from_le_bytes(w.try_into().unwrap())) else {
            return Vec::new();
        };
        let ring = &bytes[Self::HEADER.min(bytes.len())..];
        if ring.is_empty() {
            return Vec::new();
        }
        let cap = ring.len() as u64;
        let text: Vec<u8> = if total <= cap {
            ring[..total as usize].to_vec()
        } else {
            let at = (total % cap) as usize;
            let mut t = ring[at..].to_vec();
            t.extend_from_slice(&ring[..at]);
            // The oldest line was partly overwritten: drop it.
            match t.iter().position(|&b| b == b'\n') {
                Some(nl) => t.split_off(nl + 1),
                None => Vec::new(),
            }
        };
        String::from_utf8_lossy(&text).lines().map(str::to_owned).collect()
    }
}

/// One patched function, 128 bytes. Word 0 (`target`) is what the entry's pad jumps
/// through. During a transition it points at a dispatch stub, which hands the
/// dispatcher one of the two [`View`]s: `prev` for threads not yet moved, `new` for
/// moved ones, `gate` for the doors in. Transitions alternate between the views (by the
/// parity of their id), so a thread preempted inside the dispatcher during one
/// transition still reads that transition's view, which `finish` leaves pointing at its
/// final version, however late it resumes. Descriptors are never reused for another
/// function: a thread preempted inside a pad must still land on the right code.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Descriptor {
    /// Current jump target (word 0).
    pub target: core::sync::atomic::AtomicU64,
    view0_prev: core::sync::atomic::AtomicU64,
    view0_new: core::sync::atomic::AtomicU64,
    /// The function's entry address, 0 while the descriptor is free.
    pub entry: core::sync::atomic::AtomicU64,
    view0_gate: core::sync::atomic::AtomicU64,
    _pad0: [u64; 4],
    view1_prev: core::sync::atomic::AtomicU64,
    view1_new: core::sync::atomic::AtomicU64,
    _pad1: u64,
    view1_gate: core::sync::atomic::AtomicU64,
    _pad2: [u64; 3],
}

/// What the dispatcher reads through `%r11` = descriptor + [`Descriptor::view_offset`]:
/// `prev` at +8, `new` at +16, `gate` at +32.
pub struct View<'a> {
    pub prev: &'a core::sync::atomic::AtomicU64,
    pub new: &'a core::sync::atomic::AtomicU64,
    pub gate: &'a core::sync::atomic::AtomicU64,
}

impl Descriptor {
    /// Bytes from the descriptor to view `parity` (what its dispatch stub loads into `%r11`).
    pub const fn view_offset(parity: u64) -> usize {
        if parity & 1 == 0 {
            0
        } else {
            64
        }
    }

    /// The view transitions with an id of this parity use.
    pub fn view(&self, parity: u64) -> View<'_> {
        if parity & 1 == 0 {
            View { prev: &self.view0_prev, new: &self.view0_new, gate: &self.view0_gate }
        } else {
            View { prev: &self.view1_prev, new: &self.view1_new, gate: &self.view1_gate }
        }
    }
}

const _: () = {
    assert!(core::mem::size_of::<Descriptor>() == 128);
    assert!(core::mem::offset_of!(Descriptor, view0_prev) == 8 && core::mem::offset_of!(Descriptor, view0_new) == 16);
    assert!(core::mem::offset_of!(Descriptor, view0_gate) == 32);
    assert!(
        core::mem::offset_of!(Descriptor, view1_prev) == 64 + 8
            && core::mem::offset_of!(Descriptor, view1_new) == 64 + 16
    );
    assert!(core::mem::offset_of!(Descriptor, view1_gate) == 64 + 32);
};

/// Return value of an entry point (`%rax`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum EntryStatus {
    /// Done; the buffer holds a reply (a list of [`FuncReply`]).
    Done = 0,
    /// Nothing to do (apply: already applied; revert: not applied); the buffer holds a reply.
    NothingToDo = 1,
    /// A transition started; the tool moves the remaining threads, then calls
    /// `entry_finish`. The buffer holds a reply.
    Transition = 2,
    /// Refused; nothing changed; the buffer holds a `u32` length and a UTF-8 message.
    Refused = -1,
    /// Another thread is running an entry (set by the hijack stub; the entry did not run).
    Busy = -2,
}

impl EntryStatus {
    pub fn from_i64(v: i64) -> Option<Self> {
        Some(match v {
            0 => Self::Done,
            1 => Self::NothingToDo,
            2 => Self::Transition,
            -1 => Self::Refused,
            -2 => Self::Busy,
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

/// One function in a reply: 64 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FuncReply {
    pub entry: u64,
    pub desc: u64,
    pub action: EntryAction,
    /// The bytes at the jump offset before the first redirection.
    pub original: [u8; 2],
    /// The function's prologue kind (how to redirect it).
    pub kind: crate::Prologue,
    /// Unpadded functions: the trampoline slot the entry jumps to (0 otherwise).
    pub slot: u64,
    /// Unpadded functions: bytes kept at the entry (`endbr64`), and how many of
    /// `displaced` the entry jump overwrites (their original values).
    pub skip: u8,
    pub len: u8,
    pub displaced: [u8; crate::prologue::MAX_DISPLACED],
}

impl FuncReply {
    /// A reply for a function with a pad (or fentry): no slot, nothing displaced.
    pub fn new(entry: u64, desc: u64, action: EntryAction, original: [u8; 2], kind: crate::Prologue) -> Self {
        Self {
            entry,
            desc,
            action,
            original,
            kind,
            slot: 0,
            skip: 0,
            len: 0,
            displaced: [0; crate::prologue::MAX_DISPLACED],
        }
    }

    /// The [`Displaced`](crate::prologue::Displaced) of an unpadded function's reply.
    pub fn displaced(&self) -> crate::prologue::Displaced {
        let len = usize::from(self.len).min(self.displaced.len());
        crate::prologue::Displaced { skip: self.skip, original: self.displaced[..len].to_vec() }
    }
}

pub const FUNC_REPLY_SIZE: usize = 64;

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
        o[19] = f.kind as u8;
        o[20..28].copy_from_slice(&f.slot.to_le_bytes());
        o[28] = f.skip;
        o[29] = f.len;
        o[30..30 + f.displaced.len()].copy_from_slice(&f.displaced);
        o[30 + f.displaced.len()..].fill(0);
    }
    Some(len)
}

/// Decode a reply read back from the buffer; `None` if it is malformed.
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
                kind: crate::Prologue::from_u8(o[19])?,
                slot: u64::from_le_bytes(o[20..28].try_into().ok()?),
                skip: o[28],
                len: o[29],
                displaced: o[30..30 + crate::prologue::MAX_DISPLACED].try_into().ok()?,
            })
        })
        .collect()
}

/// Longest refusal message the runtime writes; longer ones are cut (on a character
/// boundary) and end with `…`.
pub const MAX_MESSAGE: usize = 8192;

/// Write a refusal message into the buffer (`u32` length + UTF-8, cut to fit).
pub fn encode_message(msg: &str, out: &mut [u8]) {
    if out.len() < 4 {
        return;
    }
    let room = (out.len() - 4).min(MAX_MESSAGE);
    let text: std::borrow::Cow<'_, str> = if msg.len() <= room {
        msg.into()
    } else {
        let mut cut = room.saturating_sub('…'.len_utf8());
        while !msg.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}…", &msg[..cut]).into()
    };
    let n = text.len();
    out[..4].copy_from_slice(&(n as u32).to_le_bytes());
    out[4..4 + n].copy_from_slice(text.as_bytes());
}

/// Bytes to read from the buffer to get the whole message whose `u32` length is `len`.
pub fn message_bytes(len: u32) -> usize {
    4 + (len as usize).min(MAX_MESSAGE)
}

pub fn decode_message(b: &[u8]) -> String {
    let n = b.get(..4).map(|l| u32::from_le_bytes(l.try_into().unwrap()) as usize).unwrap_or(0).min(MAX_MESSAGE);
    match b.get(4..4 + n) {
        Some(text) => String::from_utf8_lossy(text).into_owned(),
        None => "(the runtime's message is cut short)".into(),
    }
}

#[cfg(test)]
#[path = "abi_tests.rs"]
mod tests;
