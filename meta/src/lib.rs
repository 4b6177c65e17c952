//! What libpulp-rs's tools and runtime must agree on:
//!
//! - [`format`]: the `patch.meta` file (what `pulp pack` writes and `pulp-trigger` reads),
//! - [`prologue`]: the function entry kinds that can be live-patched and how they are recognised,
//! - [`note`]: the GNU build-id note,
//! - [`sha256`]: the content hash that ties a `patch.meta` to the exact bytes of its patch object,
//! - [`status`]: what a running runtime says about itself (patches, transition),
//! - [`abi`]: the fixed layout the tools read from and write to inside a running `libpulp_rs.so`.
//!
//! No dependencies: the runtime links this crate and stays lean.

pub mod abi;
pub mod format;
pub mod note;
pub mod prologue;
pub mod sha256;
pub mod status;

pub use format::{Function, MetaError, PatchMeta, RefKind, Reference, State, Target};
pub use prologue::Prologue;
