//! The `patch.meta` file: what `pulp pack` writes and `pulp-trigger` and the runtime read.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! magic      8 bytes  "PULPMETA"
//! version    u32      FORMAT_VERSION
//! length     u32      payload length in bytes
//! payload    length bytes
//! checksum   u32      CRC-32 (IEEE) of the payload
//! ```
//!
//! Payload (version 3): `flags u32`, `level u32`, `patch_so str`, `patch_build_id bytes`,
//! `patch_sha256 bytes` (32), `labels: u32 count, str…`, `states: u32 count, (id u64,
//! version u32)…`, `targets: u32 count`, each `path str`, `build_id bytes`, `u32 function
//! count`, each `old str`, `offset u64`, `prologue u8` (for an unpadded one, 6, then `skip u8`
//! and the overwritten bytes as `bytes`), `new str`, then `u32 reference
//! count`, each `symbol str`, `offset u64`, `kind u8`, `var str`. A `str` / `bytes` is a
//! `u32` length followed by that many bytes (UTF-8 for a `str`).
//!
//! [`PatchMeta::decode`] validates every field and never panics, whatever the input.
//! Flag bits this build does not know are refused: the file is from a newer release.

mod error;
#[cfg(test)]
mod tests;
mod wire;

pub(crate) use error::check_count;
pub use error::MetaError;
use error::{check_len, non_empty, non_empty_bytes, truncated};
pub use wire::{crc32, hex, short_id};
pub(crate) use wire::{put_bytes, put_u32, Reader};

use crate::sha256::Sha256;
use crate::Prologue;

/// Flag: switch every thread at once, no transition.
pub const FLAG_IMMEDIATE: u32 = 1;
/// Flag: a cumulative patch; it replaces every earlier patch of its targets.
pub const FLAG_REPLACE: u32 = 2;
/// Every flag this release knows.
pub const KNOWN_FLAGS: u32 = FLAG_IMMEDIATE | FLAG_REPLACE;

/// First bytes of every `patch.meta` file.
pub const MAGIC: [u8; 8] = *b"PULPMETA";
/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u32 = 3;
/// Longest string or byte field accepted.
pub const MAX_FIELD_LEN: usize = 4096;
/// Largest element count accepted (labels, states, targets, functions and references of a target).
pub const MAX_COUNT: usize = 100_000;
/// Size of magic + version + payload length.
const HEADER_LEN: usize = 16;

/// A packed patch: what `pulp pack` writes and `pulp-trigger` applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchMeta {
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Patch level (`%level N`), shown by the tools; 0 when not given.
    pub level: u32,
    /// Absolute path of the patch `.so` holding the new functions, where the tools read it.
    pub patch_so: String,
    /// GNU build-id of the patch `.so`.
    pub patch_build_id: Vec<u8>,
    /// SHA-256 of the patch `.so`'s bytes: only an object with exactly this content is loaded.
    pub patch_sha256: [u8; 32],
    /// `!label` lines, in order.
    pub labels: Vec<String>,
    /// `%state ID VERSION` lines.
    pub states: Vec<State>,
    pub targets: Vec<Target>,
}

/// A system state a patch declares (the kernel livepatch's `klp_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct State {
    pub id: u64,
    pub version: u32,
}

/// One object of the process whose functions are replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Absolute path of the object as given by the `@` line.
    pub path: String,
    pub build_id: Vec<u8>,
    pub functions: Vec<Function>,
    /// Symbols of this target whose addresses the patch receives before it is activated.
    pub references: Vec<Reference>,
}

/// One replaced function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    pub old: String,
    /// Address of `old` relative to the object's load base (its symbol value).
    pub offset: u64,
    pub prologue: crate::Prologue,
    /// For [`Prologue::Unpadded`]: what the entry jump overwrites; `None` otherwise.
    pub displaced: Option<crate::prologue::Displaced>,
    pub new: String,
}

/// A reference (`#sym:var`): before the patch is activated, the runtime stores what
/// `kind` says about the target's symbol at `offset` into the patch's variable `var`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// The target's symbol, for messages (`name` or `name@OFFSET`).
    pub symbol: String,
    /// Its value: an address relative to the target's load base, or for
    /// [`RefKind::TlsIndex`] and [`RefKind::TpOffset`] an offset in the target's TLS block.
    pub offset: u64,
    pub kind: RefKind,
    /// The patch object's exported variable that receives it.
    pub var: String,
}

/// What a reference's variable receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RefKind {
    /// The symbol's address (8 bytes).
    Address = 1,
    /// The original code of a patchable function, past its redirect: calling it runs the
    /// function as it was before any patch (8 bytes).
    Original = 2,
    /// `{ module id, offset }` of a thread-local variable (16 bytes, a `tls_index` for
    /// `__tls_get_addr`, which gives the calling thread's copy).
    TlsIndex = 3,
    /// The symbol's address minus the address of the patch object's global offset table
    /// (8 bytes): for code compiled with `-mcmodel=large -fPIC` (`pulp build-patch`).
    GotRelative = 4,
    /// The thread-local variable's address minus the thread pointer (`%fs:0`), the same
    /// in every thread (8 bytes, what an initial-exec `x@gottpoff` GOT entry holds): only
    /// for a target whose TLS block lies in the static TLS area (the main program, or an
    /// object flagged `DF_STATIC_TLS`).
    TpOffset = 5,
}

impl RefKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Address,
            2 => Self::Original,
            3 => Self::TlsIndex,
            4 => Self::GotRelative,
            5 => Self::TpOffset,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Address => "address",
            Self::Original => "original code",
            Self::TlsIndex => "thread-local",
            Self::GotRelative => "GOT-relative address",
            Self::TpOffset => "thread-pointer offset",
        }
    }

    /// Bytes the runtime writes into the variable.
    pub fn size(self) -> usize {
        if self == Self::TlsIndex {
            16
        } else {
            8
        }
    }
}

impl PatchMeta {
    /// The patch's identity, 32 hex digits: a hash of what the patch does (its object's
    /// content, flags, states, and per target the build-id, functions and references).
    /// Labels, the level and where the `.so` lies are not part of it, so a copy of the
    /// same patch installed elsewhere is the same patch.
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        let mut p = Vec::new();
        put_u32(&mut p, self.flags);
        put_bytes(&mut p, &self.patch_sha256);
        self.encode_states(&mut p);
        self.encode_targets(&mut p);
        h.update(&p);
        hex(&h.finish()[..16])
    }

    /// The first 12 hex digits of [`PatchMeta::id`], for messages.
    pub fn short_id(&self) -> String {
        short_id(&self.id()).to_string()
    }

    /// Every function of every target.
    pub fn function_count(&self) -> usize {
        self.targets.iter().map(|t| t.functions.len()).sum()
    }

    fn encode_states(&self, p: &mut Vec<u8>) {
        put_u32(p, self.states.len() as u32);
        for s in &self.states {
            p.extend_from_slice(&s.id.to_le_bytes());
            put_u32(p, s.version);
        }
    }

    fn encode_targets(&self, p: &mut Vec<u8>) {
        put_u32(p, self.targets.len() as u32);
        for t in &self.targets {
            put_bytes(p, t.path.as_bytes());
            put_bytes(p, &t.build_id);
            put_u32(p, t.functions.len() as u32);
            for func in &t.functions {
                put_bytes(p, func.old.as_bytes());
                p.extend_from_slice(&func.offset.to_le_bytes());
                p.push(func.prologue as u8);
                if let Some(d) = &func.displaced {
                    p.push(d.skip);
                    put_bytes(p, &d.original);
                }
                put_bytes(p, func.new.as_bytes());
            }
            put_u32(p, t.references.len() as u32);
            for r in &t.references {
                put_bytes(p, r.symbol.as_bytes());
                p.extend_from_slice(&r.offset.to_le_bytes());
                p.push(r.kind as u8);
                put_bytes(p, r.var.as_bytes());
            }
        }
    }

    /// Serialise to the `patch.meta` format. Fields longer than the decoder accepts are
    /// written as they are (and refused by [`PatchMeta::decode`]); use
    /// [`PatchMeta::validate`] first to catch that early.
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::new();
        put_u32(&mut p, self.flags);
        put_u32(&mut p, self.level);
        put_bytes(&mut p, self.patch_so.as_bytes());
        put_bytes(&mut p, &self.patch_build_id);
        put_bytes(&mut p, &self.patch_sha256);
        put_u32(&mut p, self.labels.len() as u32);
        for l in &self.labels {
            put_bytes(&mut p, l.as_bytes());
        }
        self.encode_states(&mut p);
        self.encode_targets(&mut p);
        let mut out = Vec::with_capacity(HEADER_LEN + p.len() + 4);
        out.extend_from_slice(&MAGIC);
        put_u32(&mut out, FORMAT_VERSION);
        put_u32(&mut out, p.len() as u32);
        out.extend_from_slice(&p);
        put_u32(&mut out, crc32(&p));
        out
    }

    /// Parse and validate a `patch.meta`. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, MetaError> {
        if bytes.len() < MAGIC.len() {
            return Err(if MAGIC.starts_with(bytes) && !bytes.is_empty() {
                truncated("magic")
            } else {
                MetaError::BadMagic
            });
        }
        if bytes[..MAGIC.len()] != MAGIC {
            return Err(MetaError::BadMagic);
        }
        let mut r = Reader { buf: &bytes[MAGIC.len()..] };
        let version = r.u32("version")?;
        if version != FORMAT_VERSION {
            return Err(MetaError::UnsupportedVersion { found: version });
        }
        let len = r.u32("payload length")? as usize;
        let payload = r.take(len, "payload")?;
        let expected = r.u32("checksum")?;
        if !r.buf.is_empty() {
            return Err(MetaError::TrailingBytes { count: r.buf.len(), after_file: true });
        }
        let found = crc32(payload);
        if found != expected {
            return Err(MetaError::ChecksumMismatch { expected, found });
        }
        let meta = Self::decode_payload(&mut Reader { buf: payload })?;
        meta.validate()?;
        Ok(meta)
    }

    fn decode_payload(r: &mut Reader<'_>) -> Result<Self, MetaError> {
        let flags = r.u32("flags")?;
        if flags & !KNOWN_FLAGS != 0 {
            return Err(MetaError::UnknownFlags { flags });
        }
        let level = r.u32("level")?;
        let patch_so = r.string("patch_so")?;
        let patch_build_id = r.bytes("patch_build_id")?.to_vec();
        let sha = r.bytes("patch_sha256")?;
        let patch_sha256: [u8; 32] = sha.try_into().map_err(|_| MetaError::BadLength {
            field: "patch_sha256".into(),
            len: sha.len(),
            expected: 32,
        })?;
        let n = r.count("labels")?;
        let labels = (0..n).map(|i| r.string(&format!("labels[{i}]"))).collect::<Result<_, _>>()?;
        let n = r.count("states")?;
        let mut states = Vec::with_capacity(n.min(64));
        for i in 0..n {
            let id = r.u64(&format!("states[{i}].id"))?;
            let version = r.u32(&format!("states[{i}].version"))?;
            states.push(State { id, version });
        }
        let n = r.count("targets")?;
        let mut targets = Vec::with_capacity(n.min(64));
        for t in 0..n {
            let path = r.string(&format!("targets[{t}].path"))?;
            let build_id = r.bytes(&format!("targets[{t}].build_id"))?.to_vec();
            let nf = r.count(&format!("targets[{t}].functions"))?;
            let mut functions = Vec::with_capacity(nf.min(1024));
            for i in 0..nf {
                let field = |name: &str| format!("targets[{t}].functions[{i}].{name}");
                let old = r.string(&field("old"))?;
                let offset = r.u64(&field("offset"))?;
                let kind = r.u8(&field("prologue"))?;
                let prologue = Prologue::from_u8(kind)
                    .ok_or_else(|| MetaError::UnknownPrologue { field: field("prologue"), value: kind })?;
                let displaced = if prologue == Prologue::Unpadded {
                    let skip = r.u8(&field("skip"))?;
                    if skip != 0 && skip != 4 {
                        return Err(MetaError::UnknownValue { field: field("skip"), value: skip });
                    }
                    let original = r.bytes(&field("displaced"))?.to_vec();
                    if !(crate::prologue::UNPADDED_JUMP..=crate::prologue::MAX_DISPLACED).contains(&original.len()) {
                        return Err(MetaError::BadLength {
                            field: field("displaced"),
                            len: original.len(),
                            expected: crate::prologue::UNPADDED_JUMP,
                        });
                    }
                    Some(crate::prologue::Displaced { skip, original })
                } else {
                    None
                };
                let new = r.string(&field("new"))?;
                functions.push(Function { old, offset, prologue, displaced, new });
            }
            let nr = r.count(&format!("targets[{t}].references"))?;
            let mut references = Vec::with_capacity(nr.min(1024));
            for i in 0..nr {
                let field = |name: &str| format!("targets[{t}].references[{i}].{name}");
                let symbol = r.string(&field("symbol"))?;
                let offset = r.u64(&field("offset"))?;
                let value = r.u8(&field("kind"))?;
                let kind =
                    RefKind::from_u8(value).ok_or_else(|| MetaError::UnknownValue { field: field("kind"), value })?;
                let var = r.string(&field("var"))?;
                references.push(Reference { symbol, offset, kind, var });
            }
            targets.push(Target { path, build_id, functions, references });
        }
        if !r.buf.is_empty() {
            return Err(MetaError::TrailingBytes { count: r.buf.len(), after_file: false });
        }
        Ok(Self { flags, level, patch_so, patch_build_id, patch_sha256, labels, states, targets })
    }

    /// Check the semantic rules [`PatchMeta::decode`] enforces: known flags, names and
    /// paths present, `patch_so` absolute, states unique, at least one target, each with
    /// at least one function, and every length and count within the limits.
    pub fn validate(&self) -> Result<(), MetaError> {
        if self.flags & !KNOWN_FLAGS != 0 {
            return Err(MetaError::UnknownFlags { flags: self.flags });
        }
        check_len("patch_so", self.patch_so.len())?;
        check_len("patch_build_id", self.patch_build_id.len())?;
        non_empty("patch_so", &self.patch_so)?;
        if !self.patch_so.starts_with('/') {
            return Err(MetaError::NotAbsolute { field: "patch_so".into(), path: self.patch_so.clone() });
        }
        non_empty_bytes("patch_build_id", &self.patch_build_id)?;
        check_count("labels", self.labels.len())?;
        for (i, l) in self.labels.iter().enumerate() {
            check_len(&format!("labels[{i}]"), l.len())?;
        }
        check_count("states", self.states.len())?;
        for (i, s) in self.states.iter().enumerate() {
            if self.states[..i].iter().any(|o| o.id == s.id) {
                return Err(MetaError::DuplicateState { id: s.id });
            }
        }
        check_count("targets", self.targets.len())?;
        if self.targets.is_empty() {
            return Err(MetaError::NoTargets);
        }
        for (t, target) in self.targets.iter().enumerate() {
            check_len(&format!("targets[{t}].path"), target.path.len())?;
            check_len(&format!("targets[{t}].build_id"), target.build_id.len())?;
            non_empty(&format!("targets[{t}].path"), &target.path)?;
            non_empty_bytes(&format!("targets[{t}].build_id"), &target.build_id)?;
            check_count(&format!("targets[{t}].functions"), target.functions.len())?;
            check_count(&format!("targets[{t}].references"), target.references.len())?;
            if target.functions.is_empty() {
                return Err(MetaError::NoFunctions { field: format!("targets[{t}]") });
            }
            for (i, func) in target.functions.iter().enumerate() {
                let field = |name: &str| format!("targets[{t}].functions[{i}].{name}");
                check_len(&field("old"), func.old.len())?;
                check_len(&field("new"), func.new.len())?;
                non_empty(&field("old"), &func.old)?;
                non_empty(&field("new"), &func.new)?;
            }
            for (i, r) in target.references.iter().enumerate() {
                let field = |name: &str| format!("targets[{t}].references[{i}].{name}");
                check_len(&field("symbol"), r.symbol.len())?;
                check_len(&field("var"), r.var.len())?;
                non_empty(&field("symbol"), &r.symbol)?;
                non_empty(&field("var"), &r.var)?;
            }
        }
        Ok(())
    }
}
