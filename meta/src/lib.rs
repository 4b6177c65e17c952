//! What libpulp-rs's tools and runtime must agree on:
//!
//! - [`format`]: the `patch.meta` file (what `pulp pack` writes and `pulp-trigger` reads),
//! - [`prologue`]: the function entry kinds that can be live-patched and how they are recognised,
//! - [`note`]: the GNU build-id note,
//! - [`patchdir`]: the patch directory's file names (which targets a `.meta` is for),
//! - [`sha256`]: the content hash that ties a `patch.meta` to the exact bytes of its patch object,
//! - [`status`]: what a running runtime says about itself (patches, transition),
//! - [`trust`]: reading a patch's files through paths nobody untrusted could change,
//! - [`abi`]: the fixed layout the tools read from and write to inside a running `libpulp_rs.so`.
//!
//! No dependency but `libc`: the runtime links this crate and stays lean.

pub mod abi;
pub mod format;
pub mod note;
pub mod patchdir;
pub mod prologue;
pub mod sha256;
pub mod status;
pub mod trust;

pub use format::{Function, MetaError, PatchMeta, RefKind, Reference, State, Target};
pub use prologue::Prologue;
