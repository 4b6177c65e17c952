//! libpulp-rs tools: packing, inspecting and applying live patches.
//!
//! - `process`: a target seen from `/proc` (maps, threads, build-ids, memory),
//! - `runtime`: finding the runtime in a process and reading its `pulp_rs_info`,
//! - `patches`: `pulp patches` (one process or all), what a process has applied and who
//!   holds a transition; `pulp check`, whether one patch is applied,
//! - `messages`: `pulp messages`, the runtime's own log,
//! - `ptrace`: one traced thread as an RAII guard,
//! - `hijack`: choosing a thread at a safe point and running a runtime entry in it,
//! - `pack`: `.dsc` description to `patch.meta` (`pack::dsc::parse` reads a `.dsc` text
//!   alone); `dump`: `patch.meta` to text or JSON,
//! - `livepatchable`: which functions of an object can be patched,
//! - `buildpatch`: `pulp build-patch`, a patch from a source diff,
//! - `unwind`: walking a stopped thread's stack from outside (framehop); `elffile`: the
//!   few parts of an object file read while a process waits,
//! - `transition`: moving threads one at a time until a transition is complete,
//! - `sigframe`: the frame a borrowed thread returns through should the tool die;
//!   `signals`: the tool's own ending signals held back while it finishes a step,
//! - `patchfile`: reading a patch's files so that the bytes that run are the bytes checked,
//! - `apply`: the phases of applying and reverting a patch (`phases`: where their time
//!   goes); `control`: `set-patchable`,
//! - `preload`: `pulp preload`, the runtime in every process through `/etc/ld.so.preload`,
//! - `select`: finding the processes an operation concerns (`--all`, `--name`, `--user`),
//! - `fleet`: one operation on many processes, in parallel, and its summary,
//! - `error`: what `pulp-trigger` reports; `report`: its summary lines and exit statuses;
//! - `text`: escaping names and labels before they reach a terminal.

pub mod apply;
pub mod buildpatch;
pub mod error;
pub mod fleet;
pub mod inject;
pub mod inspect;
pub mod pack;
pub mod text;
