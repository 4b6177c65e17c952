//! Access to a live process, and nothing above it: what the tools read of a target from
//! outside and how they borrow one of its threads. Nothing here knows about patches
//! being applied, processes being chosen or patch files (the layering test in
//! `layers_tests.rs` keeps it so).
//!
//! - `process`: a target seen from `/proc` (maps, threads, build-ids, memory), and the
//!   object a target name designates in it,
//! - `ptrace`: one traced thread as an RAII guard,
//! - `hijack`: choosing a thread at a safe point and running a runtime entry in it,
//! - `sigframe`: the frame a borrowed thread returns through should the tool die,
//! - `signals`: the tool's own ending signals held back while it finishes a step,
//! - `runtime`: finding the runtime in a process and reading its `pulp_rs_info`,
//! - `unwind`: walking a stopped thread's stack from outside (framehop),
//! - `elffile`: the few parts of an object file read while a process waits.

pub mod elffile;
pub mod hijack;
pub mod process;
pub mod ptrace;
pub mod runtime;
pub mod sigframe;
pub mod signals;
pub mod unwind;
