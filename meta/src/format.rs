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
//! Payload (version 2): `flags u32`, `level u32`, `patch_so str`, `patch_build_id bytes`,
//! `patch_sha256 bytes` (32), `labels: u32 count, str…`, `states: u32 count, (id u64,
//! version u32)…`, `targets: u32 count`, each `path str`, `build_id bytes`, `u32 function
//! count`, each `old str`, `offset u64`, `prologue u8`, `new str`, then `u32 reference
//! count`, each `symbol str`, `offset u64`, `kind u8`, `var str`. A `str` / `bytes` is a
//! `u32` length followed by that many bytes (UTF-8 for a `str`).
//!
//! [`PatchMeta::decode`] validates every field and never panics, whatever the input.
//! Flag bits this build does not know are refused: the file is from a newer release.

use std::fmt;

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
pub const FORMAT_VERSION: u32 = 2;
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
    pub new: String,
}

/// A reference (`#sym:var`): before the patch is activated, the runtime stores what
/// `kind` says about the target's symbol at `offset` into the patch's variable `var`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// The target's symbol, for messages (`name` or `name@OFFSET`).
    pub symbol: String,
    /// Its value: an address relative to the target's load base, or for
    /// [`RefKind::TlsIndex`] an offset in the target's TLS block.
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
}

impl RefKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Address,
            2 => Self::Original,
            3 => Self::TlsIndex,
            4 => Self::GotRelative,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Address => "address",
            Self::Original => "original code",
            Self::TlsIndex => "thread-local",
            Self::GotRelative => "GOT-relative address",
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

/// Why a `patch.meta` could not be decoded. `field` names the field being read, e.g.
/// `targets[0].functions[2].new`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaError {
    /// The file does not start with `PULPMETA`.
    BadMagic,
    /// The file was written by a format version this build cannot read.
    UnsupportedVersion { found: u32 },
    /// The data ended while `field` was being read.
    Truncated { field: String },
    /// The payload's CRC-32 does not match the stored one.
    ChecksumMismatch { expected: u32, found: u32 },
    /// Bytes left after the checksum (`after_file`) or after the last payload field.
    TrailingBytes { count: usize, after_file: bool },
    /// A string field is not valid UTF-8.
    InvalidUtf8 { field: String },
    /// A prologue byte names no known kind.
    UnknownPrologue { field: String, value: u8 },
    /// A field with a value outside its range (e.g. a patch state, a reference kind).
    UnknownValue { field: String, value: u8 },
    /// Flag bits this release does not know: the file comes from a newer one.
    UnknownFlags { flags: u32 },
    /// A name or path that must not be empty is.
    Empty { field: String },
    /// `patch_so` is not an absolute path.
    NotAbsolute { field: String, path: String },
    /// A field whose length is fixed has another one.
    BadLength { field: String, len: usize, expected: usize },
    /// The same state id is declared twice.
    DuplicateState { id: u64 },
    /// The patch has no target.
    NoTargets,
    /// A target has no function.
    NoFunctions { field: String },
    /// A length or count is above its limit.
    TooLarge { field: String, value: u64, max: usize },
}

impl fmt::Display for MetaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic => write!(f, "not a patch.meta file (bad magic)"),
            Self::UnsupportedVersion { found } => {
                write!(f, "unsupported patch.meta format version {found} (this build reads version {FORMAT_VERSION})")
            }
            Self::Truncated { field } => write!(f, "truncated patch.meta: data ends while reading {field}"),
            Self::ChecksumMismatch { expected, found } => {
                write!(f, "corrupt patch.meta: checksum mismatch (expected {expected:#010x}, found {found:#010x})")
            }
            Self::TrailingBytes { count, after_file: true } => {
                write!(f, "corrupt patch.meta: {count} unexpected trailing bytes after the checksum")
            }
            Self::TrailingBytes { count, after_file: false } => {
                write!(f, "corrupt patch.meta: {count} unexpected trailing bytes at the end of the payload")
            }
            Self::InvalidUtf8 { field } => write!(f, "corrupt patch.meta: {field} is not valid UTF-8"),
            Self::UnknownValue { field, value } => write!(f, "corrupt patch.meta: {field} has unknown value {value}"),
            Self::UnknownPrologue { field, value } => {
                write!(f, "corrupt patch.meta: {field} has unknown prologue kind {value}")
            }
            Self::UnknownFlags { flags } => write!(
                f,
                "patch.meta has flags {flags:#x} this release does not know (it knows {KNOWN_FLAGS:#x}): \
                 it was written by a newer pulp"
            ),
            Self::Empty { field } => write!(f, "invalid patch.meta: {field} is empty"),
            Self::NotAbsolute { field, path } => {
                write!(f, "invalid patch.meta: {field} `{path}` is not an absolute path")
            }
            Self::BadLength { field, len, expected } => {
                write!(f, "invalid patch.meta: {field} has {len} bytes, not {expected}")
            }
            Self::DuplicateState { id } => write!(f, "invalid patch.meta: state {id} is declared twice"),
            Self::NoTargets => write!(f, "invalid patch.meta: no targets"),
            Self::NoFunctions { field } => write!(f, "invalid patch.meta: {field} has no functions"),
            Self::TooLarge { field, value, max } => {
                write!(f, "corrupt patch.meta: {field} is {value}, more than the limit of {max}")
            }
        }
    }
}

impl std::error::Error for MetaError {}

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
                let new = r.string(&field("new"))?;
                functions.push(Function { old, offset, prologue, new });
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

fn truncated(field: &str) -> MetaError {
    MetaError::Truncated { field: field.into() }
}

fn non_empty(field: &str, s: &str) -> Result<(), MetaError> {
    non_empty_bytes(field, s.as_bytes())
}

fn non_empty_bytes(field: &str, b: &[u8]) -> Result<(), MetaError> {
    if b.is_empty() {
        return Err(MetaError::Empty { field: field.into() });
    }
    Ok(())
}

fn check_len(field: &str, len: usize) -> Result<(), MetaError> {
    if len > MAX_FIELD_LEN {
        return Err(MetaError::TooLarge { field: field.into(), value: len as u64, max: MAX_FIELD_LEN });
    }
    Ok(())
}

fn check_count(field: &str, n: usize) -> Result<(), MetaError> {
    if n > MAX_COUNT {
        return Err(MetaError::TooLarge { field: format!("{field} count"), value: n as u64, max: MAX_COUNT });
    }
    Ok(())
}

pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}

/// A bounds-checked cursor over the input (also used by [`crate::status`]).
pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], MetaError> {
        if self.buf.len() < n {
            return Err(truncated(field));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N], MetaError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, field)?);
        Ok(a)
    }

    pub(crate) fn u8(&mut self, field: &str) -> Result<u8, MetaError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u32(&mut self, field: &str) -> Result<u32, MetaError> {
        self.array(field).map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self, field: &str) -> Result<u64, MetaError> {
        self.array(field).map(u64::from_le_bytes)
    }

    pub(crate) fn count(&mut self, field: &str) -> Result<usize, MetaError> {
        let n = self.u32(&format!("{field} count"))?;
        check_count(field, n as usize)?;
        Ok(n as usize)
    }

    fn bytes(&mut self, field: &str) -> Result<&'a [u8], MetaError> {
        let n = self.u32(&format!("{field} length"))? as usize;
        check_len(field, n)?;
        self.take(n, field)
    }

    pub(crate) fn string(&mut self, field: &str) -> Result<String, MetaError> {
        let b = self.bytes(field)?;
        std::str::from_utf8(b).map(str::to_owned).map_err(|_| MetaError::InvalidUtf8 { field: field.into() })
    }
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), as used by zlib and PNG.
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// The first 12 hex digits of a patch id, as messages name a patch.
pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Lower-case hex of a byte string (build-ids).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PatchMeta {
        PatchMeta {
            flags: FLAG_IMMEDIATE,
            level: 3,
            patch_so: "/opt/fix/libfix.so".into(),
            patch_build_id: vec![0xde, 0xad, 0xbe, 0xef],
            patch_sha256: [7; 32],
            labels: vec!["CVE-2026-1234".into(), "fix parse".into()],
            states: vec![State { id: 42, version: 2 }],
            targets: vec![
                Target {
                    path: "/usr/lib/libfoo.so".into(),
                    build_id: vec![1, 2, 3],
                    functions: vec![
                        Function {
                            old: "foo_parse".into(),
                            offset: 0x1130,
                            prologue: Prologue::NopPad66,
                            new: "foo_parse_fixed".into(),
                        },
                        Function {
                            old: "foo_len".into(),
                            offset: 0x1190,
                            prologue: Prologue::NopPad90,
                            new: "foo_len_fixed".into(),
                        },
                        Function { old: "f".into(), offset: u64::MAX, prologue: Prologue::FentryCall, new: "g".into() },
                    ],
                    references: vec![Reference {
                        symbol: "counter".into(),
                        offset: 0x4010,
                        kind: RefKind::Address,
                        var: "ref_counter".into(),
                    }],
                },
                Target {
                    path: "/usr/lib/libbar.so".into(),
                    build_id: vec![9; 20],
                    functions: vec![Function {
                        old: "bar".into(),
                        offset: 0x10,
                        prologue: Prologue::EndbrNopPad,
                        new: "bar2".into(),
                    }],
                    references: vec![],
                },
            ],
        }
    }

    /// Re-frame a (possibly modified) payload with a correct header and checksum.
    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        put_u32(&mut out, FORMAT_VERSION);
        put_u32(&mut out, payload.len() as u32);
        out.extend_from_slice(payload);
        put_u32(&mut out, crc32(payload));
        out
    }

    fn payload_of(bytes: &[u8]) -> Vec<u8> {
        bytes[HEADER_LEN..bytes.len() - 4].to_vec()
    }

    fn decode_with(m: &PatchMeta) -> Result<PatchMeta, MetaError> {
        PatchMeta::decode(&frame(&payload_of(&m.encode())))
    }

    #[test]
    fn crc32_matches_reference_values() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b"The quick brown fox jumps over the lazy dog"), 0x414F_A339);
    }

    #[test]
    fn round_trips() {
        let m = sample();
        let bytes = m.encode();
        assert_eq!(&bytes[..8], b"PULPMETA");
        assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), FORMAT_VERSION);
        assert_eq!(PatchMeta::decode(&bytes).unwrap(), m);
        assert_eq!(m.id().len(), 32);
        assert_eq!(m.short_id(), m.id()[..12]);
    }

    #[test]
    fn identity_covers_what_the_patch_does_not_how_it_is_named() {
        let m = sample();
        let mut same = m.clone();
        same.labels.push("another label".into());
        same.level = 9;
        same.patch_so = "/etc/pulp/patches.d/fix.so".into();
        assert_eq!(m.id(), same.id(), "labels, level and the .so's location are not the identity");
        let changed: [fn(&mut PatchMeta); 6] = [
            |m| m.targets[0].functions.pop().map(drop).unwrap_or(()),
            |m| m.targets[0].functions[0].new = "other".into(),
            |m| m.targets[1].build_id[0] ^= 1,
            |m| m.targets[0].references.clear(),
            |m| m.patch_sha256[0] ^= 1,
            |m| m.states[0].version += 1,
        ];
        for (i, change) in changed.iter().enumerate() {
            let mut other = m.clone();
            change(&mut other);
            assert_ne!(m.id(), other.id(), "change {i} must change the id");
        }
    }

    #[test]
    fn bad_magic_and_version() {
        let mut b = sample().encode();
        b[0] = b'X';
        assert_eq!(PatchMeta::decode(&b), Err(MetaError::BadMagic));
        assert_eq!(PatchMeta::decode(b""), Err(MetaError::BadMagic));
        assert_eq!(PatchMeta::decode(b"\x7fELF"), Err(MetaError::BadMagic));
        assert!(matches!(PatchMeta::decode(b"PULP"), Err(MetaError::Truncated { .. })));
        let mut b = sample().encode();
        b[8] = 7;
        let e = PatchMeta::decode(&b).unwrap_err();
        assert_eq!(e, MetaError::UnsupportedVersion { found: 7 });
        assert!(e.to_string().contains("version 7"));
    }

    #[test]
    fn unknown_flags_are_refused() {
        let mut m = sample();
        m.flags |= 0x80;
        let e = decode_with(&m).unwrap_err();
        assert_eq!(e, MetaError::UnknownFlags { flags: FLAG_IMMEDIATE | 0x80 });
        assert!(e.to_string().contains("newer"), "{e}");
        m.flags = FLAG_REPLACE | FLAG_IMMEDIATE;
        assert!(decode_with(&m).is_ok());
    }

    #[test]
    fn truncation_names_the_field() {
        let b = sample().encode();
        assert_eq!(PatchMeta::decode(&b[..10]), Err(truncated("version")));
        assert_eq!(PatchMeta::decode(&b[..14]), Err(truncated("payload length")));
        assert_eq!(PatchMeta::decode(&b[..40]), Err(truncated("payload")));
        assert_eq!(PatchMeta::decode(&b[..b.len() - 1]), Err(truncated("checksum")));
        // A payload cut inside the last target: the header says it is shorter, checksum agrees.
        let p = payload_of(&b);
        let e = PatchMeta::decode(&frame(&p[..p.len() - 3])).unwrap_err();
        assert_eq!(e, truncated("targets[1].references count"));
        let e = PatchMeta::decode(&frame(&p[..p.len() - 5])).unwrap_err();
        assert_eq!(e, truncated("targets[1].functions[0].new"));
        assert_eq!(e.to_string(), "truncated patch.meta: data ends while reading targets[1].functions[0].new");
        let e = PatchMeta::decode(&frame(&p[..2])).unwrap_err();
        assert_eq!(e, truncated("flags"));
        let e = PatchMeta::decode(&frame(&p[..6])).unwrap_err();
        assert_eq!(e, truncated("level"));
    }

    #[test]
    fn truncation_inside_first_target_references() {
        let mut m = sample();
        m.targets.truncate(1);
        let p = payload_of(&m.encode());
        // The last field is the reference's `var` ("ref_counter", 4 + 11 bytes).
        let e = PatchMeta::decode(&frame(&p[..p.len() - 1])).unwrap_err();
        assert_eq!(e, truncated("targets[0].references[0].var"));
        let e = PatchMeta::decode(&frame(&p[..p.len() - 13])).unwrap_err();
        assert_eq!(e, truncated("targets[0].references[0].var length"));
    }

    #[test]
    fn checksum_and_trailing_bytes() {
        let mut b = sample().encode();
        let n = b.len();
        b[n - 10] ^= 0x40;
        let e = PatchMeta::decode(&b).unwrap_err();
        assert!(matches!(e, MetaError::ChecksumMismatch { .. }), "{e}");
        assert!(e.to_string().contains("expected 0x"));
        let mut b = sample().encode();
        b.push(0);
        assert_eq!(PatchMeta::decode(&b), Err(MetaError::TrailingBytes { count: 1, after_file: true }));
        let mut p = payload_of(&sample().encode());
        p.extend_from_slice(&[1, 2, 3]);
        assert_eq!(PatchMeta::decode(&frame(&p)), Err(MetaError::TrailingBytes { count: 3, after_file: false }));
    }

    #[test]
    fn invalid_utf8_unknown_prologue_and_reference_kind() {
        let mut m = sample();
        m.targets[0].functions[1].new = "zzzz_fixed".into();
        let mut p = payload_of(&m.encode());
        let at = p.windows(4).position(|w| w == b"zzzz").unwrap();
        p[at] = 0xff;
        let e = PatchMeta::decode(&frame(&p)).unwrap_err();
        assert_eq!(e, MetaError::InvalidUtf8 { field: "targets[0].functions[1].new".into() });

        let m = sample();
        let mut p = payload_of(&m.encode());
        // The prologue byte of targets[1].functions[0] precedes its `new` ("bar2", 4+4
        // bytes), which precedes the reference count (4 bytes).
        let at = p.len() - 4 - 8 - 1;
        assert_eq!(p[at], Prologue::EndbrNopPad as u8);
        p[at] = 99;
        let e = PatchMeta::decode(&frame(&p)).unwrap_err();
        assert_eq!(e, MetaError::UnknownPrologue { field: "targets[1].functions[0].prologue".into(), value: 99 });
        assert!(e.to_string().contains("targets[1].functions[0].prologue"));

        let mut p = payload_of(&m.encode());
        let at = p.windows(11).position(|w| w == b"ref_counter").unwrap() - 4 - 1;
        assert_eq!(p[at], RefKind::Address as u8);
        p[at] = 0;
        let e = PatchMeta::decode(&frame(&p)).unwrap_err();
        assert_eq!(e, MetaError::UnknownValue { field: "targets[0].references[0].kind".into(), value: 0 });
    }

    #[test]
    fn semantic_errors() {
        let mut m = sample();
        m.targets[0].functions[2].old.clear();
        assert_eq!(decode_with(&m), Err(MetaError::Empty { field: "targets[0].functions[2].old".into() }));

        let mut m = sample();
        m.targets[0].references[0].var.clear();
        assert_eq!(decode_with(&m), Err(MetaError::Empty { field: "targets[0].references[0].var".into() }));

        let mut m = sample();
        m.patch_so = "fix.so".into();
        assert!(matches!(decode_with(&m), Err(MetaError::NotAbsolute { .. })));

        let mut m = sample();
        m.patch_so.clear();
        assert_eq!(decode_with(&m), Err(MetaError::Empty { field: "patch_so".into() }));

        let mut m = sample();
        m.targets.clear();
        assert_eq!(decode_with(&m), Err(MetaError::NoTargets));

        let mut m = sample();
        m.targets[1].functions.clear();
        assert_eq!(decode_with(&m), Err(MetaError::NoFunctions { field: "targets[1]".into() }));

        let mut m = sample();
        m.targets[1].path.clear();
        assert_eq!(decode_with(&m), Err(MetaError::Empty { field: "targets[1].path".into() }));

        let mut m = sample();
        m.patch_build_id.clear();
        assert_eq!(decode_with(&m), Err(MetaError::Empty { field: "patch_build_id".into() }));

        let mut m = sample();
        m.states.push(State { id: 42, version: 1 });
        assert_eq!(decode_with(&m), Err(MetaError::DuplicateState { id: 42 }));

        // A hash of the wrong length.
        let m = sample();
        let mut p = Vec::new();
        put_u32(&mut p, m.flags);
        put_u32(&mut p, 0);
        put_bytes(&mut p, b"/x.so");
        put_bytes(&mut p, b"id");
        put_bytes(&mut p, &[1; 31]);
        let e = PatchMeta::decode(&frame(&p)).unwrap_err();
        assert_eq!(e, MetaError::BadLength { field: "patch_sha256".into(), len: 31, expected: 32 });
    }

    #[test]
    fn too_large() {
        let mut m = sample();
        m.labels[1] = "x".repeat(MAX_FIELD_LEN + 1);
        let e = decode_with(&m).unwrap_err();
        assert_eq!(e, MetaError::TooLarge { field: "labels[1]".into(), value: 4097, max: MAX_FIELD_LEN });
        assert!(m.validate().is_err());

        // A huge count must be refused before anything is allocated.
        let mut p = Vec::new();
        put_u32(&mut p, 1);
        put_u32(&mut p, 0);
        put_bytes(&mut p, b"/x.so");
        put_bytes(&mut p, b"id");
        put_bytes(&mut p, &[0; 32]);
        put_u32(&mut p, 0);
        put_u32(&mut p, 0);
        put_u32(&mut p, u32::MAX);
        let e = PatchMeta::decode(&frame(&p)).unwrap_err();
        assert_eq!(e, MetaError::TooLarge { field: "targets count".into(), value: u32::MAX as u64, max: MAX_COUNT });

        let mut p = Vec::new();
        put_u32(&mut p, 1);
        put_u32(&mut p, 0);
        put_u32(&mut p, u32::MAX);
        let e = PatchMeta::decode(&frame(&p)).unwrap_err();
        assert!(matches!(e, MetaError::TooLarge { ref field, .. } if field == "patch_so"), "{e}");
    }

    /// Every truncation and many random byte flips: an error or a value, never a panic.
    #[test]
    fn never_panics_on_damaged_input() {
        let good = sample().encode();
        for n in 0..good.len() {
            assert!(PatchMeta::decode(&good[..n]).is_err());
        }
        let p = payload_of(&good);
        for n in 0..p.len() {
            assert!(PatchMeta::decode(&frame(&p[..n])).is_err(), "payload cut at {n}");
        }
        // xorshift: deterministic pseudo-random flips, both through the checksum and past it.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let mut b = good.clone();
            let flips = 1 + next() % 4;
            for _ in 0..flips {
                let i = (next() % b.len() as u64) as usize;
                b[i] ^= 1 << (next() % 8);
            }
            let _ = PatchMeta::decode(&b);
            let mut q = p.clone();
            for _ in 0..flips {
                let i = (next() % q.len() as u64) as usize;
                q[i] = next() as u8;
            }
            if let Ok(m) = PatchMeta::decode(&frame(&q)) {
                // Whatever decodes must re-encode to the same payload.
                assert_eq!(payload_of(&m.encode()), q);
            }
        }
    }
}
