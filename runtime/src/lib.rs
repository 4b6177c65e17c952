//! `libpulp_rs.so`, the runtime preloaded into a live-patchable process
//! (`LD_PRELOAD=libpulp_rs.so app`, or `/etc/ld.so.preload` for every process).
//!
//! Preloading it changes nothing: it has no thread, opens no socket and installs no
//! signal handler; its one constructor logs that it loaded and looks at the patch
//! directory (one `open` when there is none). All it does is wait to be called by
//! `pulp-trigger`, which hijacks one thread of the process to run an entry point.
//!
//! The modules, in layers (each uses only those below it):
//!
//! - top, what starts work:
//!   - [`info`]: the one exported symbol, `pulp_rs_info`, telling the tools where
//!     everything is;
//!   - [`entry`]: the entry point the tools call and the constructor; [`area`]: the
//!     request buffer and the entry stack, mapped at the first request;
//!   - [`request`]: what a tool's request asks, served on the registry;
//!   - [`patchdir`]: patches a process applies by itself, at start and as targets load,
//!     unless [`exclude`]d by the operator, through [`local`] (applying without a tool);
//! - the registry: [`registry`]: applied patches and the steps that change them (apply,
//!   revert, finish), always through a transition armed only once every entry is
//!   redirected;
//! - bottom, what the registry is made of:
//!   - [`descriptors`]: one per redirected function, with its stack of versions;
//!   - [`transition`]: what threads read during a transition: the gate slow path,
//!     `pulp_quiescent()`, the log of threads that moved themselves;
//!   - [`callbacks`]: a patch's pre/post patch/unpatch callbacks, run as the kernel runs
//!     them;
//!   - [`references`]: what a patch learns about its targets' symbols before it runs;
//!   - [`loader`]: the dynamic linker's view: loaded objects, build-ids, `dlopen`/`dlsym`;
//!   - [`code`]: writing the process's own code, the `membarrier` barrier;
//!   - [`status`]: the status area `pulp patches` reads; [`messages`]: the runtime's own
//!     log, a ring `pulp messages` reads;
//!   - [`environ`]: what the environment may change (nothing in secure mode), whose files
//!     are trusted;
//!   - [`shadow`]: shadow variables (`pulp_shadow_*`), new data attached to existing
//!     objects (used by patches, not by the registry).
//!
//! The assembly (descriptor table, dispatch trampoline, hijack stub) is in `trm/`.

pub mod area;
pub mod callbacks;
pub mod code;
pub mod descriptors;
pub mod entry;
pub mod environ;
pub mod exclude;
pub mod info;
pub mod loader;
pub mod local;
pub mod messages;
pub mod patchdir;
pub mod references;
pub mod registry;
pub mod request;
pub mod shadow;
pub mod startscan;
pub mod status;
pub mod trampoline;
pub mod transition;
