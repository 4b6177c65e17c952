//! libpulp-rs tools: packing, inspecting and applying live patches.
//!
//! One concept per folder, each using only what is below it (`layers_tests.rs` fails
//! the build's tests if a file reaches up):
//!
//! ```text
//!   bin/ (pulp, pulp-trigger: arguments and output)
//!     |
//!   inspect/   reading what a process has: patches (`pulp patches`, `pulp check`), messages
//!     |
//!   fleet/     many processes and the machine: select, the pool and its summary,
//!     |        control (set-patchable), install, preload
//!   apply/     one process: run (apply, revert), revert_all, resume, check, code,
//!     |        complete, scope, transition, phases, patchfile, report
//!   inject/    access to a live process: process, ptrace, hijack, sigframe, signals,
//!     |        runtime, unwind, elffile
//!   base       error (TriggerError), text (escaping for a terminal)
//!
//!   beside, on base only:  pack/ (.dsc to patch.meta: dsc, imports, dump,
//!                          livepatchable)  <-  buildpatch/ (a patch from a source diff)
//! ```
//!
//! Each folder's `mod.rs` names the job of each of its files.

pub mod apply;
pub mod buildpatch;
pub mod error;
pub mod fleet;
pub mod inject;
pub mod inspect;
pub mod pack;
pub mod text;

#[cfg(test)]
mod layers_tests;
