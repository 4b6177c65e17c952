//! Build live-patchable C objects and inspect them. (In progress.)
pub mod inspect;
