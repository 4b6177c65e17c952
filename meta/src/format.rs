//! The `patch.meta` file. (Implementation in progress.)

use std::fmt;

/// Flag: switch every thread at once, no transition.
pub const FLAG_IMMEDIATE: u32 = 1;

/// A packed patch: what `pulp pack` writes and `pulp-trigger` applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchMeta {
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Absolute path of the patch `.so` holding the new functions.
    pub patch_so: String,
    /// GNU build-id of the patch `.so`; also the patch's identity.
    pub patch_build_id: Vec<u8>,
    /// `!label` lines, in order.
    pub labels: Vec<String>,
    pub targets: Vec<Target>,
}

/// One object of the process whose functions are replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Absolute path of the object as given by the `@` line.
    pub path: String,
    pub build_id: Vec<u8>,
    pub functions: Vec<Function>,
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaError {
    Placeholder,
}

impl fmt::Display for MetaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for MetaError {}

impl PatchMeta {
    /// The patch's identity: the patch `.so`'s build-id in hex.
    pub fn id(&self) -> String {
        hex(&self.patch_build_id)
    }

    pub fn encode(&self) -> Vec<u8> {
        todo!()
    }

    pub fn decode(_bytes: &[u8]) -> Result<Self, MetaError> {
        todo!()
    }
}

/// Lower-case hex of a byte string (build-ids).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
