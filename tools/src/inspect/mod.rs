//! Reading what a process has, changing nothing in it: no thread is stopped.
//!
//! - `patches`: `pulp patches` (one process or all), what a process has applied and who
//!   holds a transition; `pulp check`, whether one patch is applied,
//! - `messages`: `pulp messages`, the runtime's own log.

pub mod messages;
pub mod patches;
