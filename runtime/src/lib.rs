//! `libpulp_rs.so`, the runtime preloaded into a live-patchable process
//! (`LD_PRELOAD=libpulp_rs.so app`).
//!
//! Preloading it changes nothing: it has no thread, opens no file or socket and installs
//! no signal handler; its one constructor registers the process for
//! `membarrier(SYNC_CORE)`, which only matters to the kernel (after reading
//! `/proc/self/status` once: not under a seccomp filter). All it does is wait to be called by
//! `pulp-trigger`, which hijacks one thread of the process to run an entry point:
//!
//! - [`info`]: the one exported symbol, `pulp_rs_info`, telling the tools where
//!   everything is;
//! - [`entry`]: the one entry point the tools call, its request buffer, the constructor;
//! - [`registry`]: applied patches and the steps that change them, always through a
//!   transition armed only once every entry is redirected;
//! - [`descriptors`]: one per redirected function, with its stack of versions;
//! - [`callbacks`]: a patch's pre/post patch/unpatch callbacks, run as the kernel runs them;
//! - [`messages`]: the runtime's own log, a ring `pulp messages` reads;
//! - [`patchdir`]: patches a process applies by itself, at start and as targets load
//!   ([`local`]: applying without a tool), unless [`exclude`]d by the operator;
//! - [`environ`]: what the environment may change (nothing in secure mode), whose files
//!   are trusted;
//! - [`transition`]: what threads read during a transition: the gate slow path,
//!   `pulp_quiescent()`, the log of threads that moved themselves;
//! - [`status`]: the status area `pulp patches` reads from outside;
//! - [`loader`]: the dynamic linker's view: loaded objects, build-ids, `dlopen`/`dlsym`;
//! - [`references`]: what a patch learns about its targets' symbols before it runs;
//! - [`shadow`]: shadow variables (`pulp_shadow_*`), new data attached to existing objects.
//!
//! The assembly (descriptor table, dispatch trampoline, hijack stub) is in `trm/`.

pub mod callbacks;
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
pub mod shadow;
pub mod status;
pub mod transition;
