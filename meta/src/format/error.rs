//! Why a `patch.meta` could not be decoded, and the field checks that say so.

use std::fmt;

use super::{FORMAT_VERSION, KNOWN_FLAGS, MAX_COUNT, MAX_FIELD_LEN};

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

pub(crate) fn truncated(field: &str) -> MetaError {
    MetaError::Truncated { field: field.into() }
}

pub(crate) fn non_empty(field: &str, s: &str) -> Result<(), MetaError> {
    non_empty_bytes(field, s.as_bytes())
}

pub(crate) fn non_empty_bytes(field: &str, b: &[u8]) -> Result<(), MetaError> {
    if b.is_empty() {
        return Err(MetaError::Empty { field: field.into() });
    }
    Ok(())
}

pub(crate) fn check_len(field: &str, len: usize) -> Result<(), MetaError> {
    if len > MAX_FIELD_LEN {
        return Err(MetaError::TooLarge { field: field.into(), value: len as u64, max: MAX_FIELD_LEN });
    }
    Ok(())
}

pub(crate) fn check_count(field: &str, n: usize) -> Result<(), MetaError> {
    if n > MAX_COUNT {
        return Err(MetaError::TooLarge { field: format!("{field} count"), value: n as u64, max: MAX_COUNT });
    }
    Ok(())
}
