//! x86-64 analysis for redirecting functions that were built without a pad.
//!
//! Such a function is redirected by overwriting its first instructions (at least 5 bytes,
//! after a leading `endbr64`) with a `jmp rel32` to a trampoline that holds those
//! instructions relocated. This crate decides which bytes may be overwritten ([`plan`]),
//! refusing what cannot be done safely ([`Refusal`]), finds the addresses other code may
//! branch to ([`inbound_addresses`]), and produces the relocated copy ([`relocate`],
//! [`rip_map`]). All decoding and encoding is done by `iced-x86`.

mod inbound;
mod plan;
mod relocate;

pub use inbound::inbound_addresses;
pub use plan::{plan, Plan, Reason, Refusal, ENDBR64, ENTRY_JUMP};
pub use relocate::{relocate, rip_map, MAX_COPY};

#[cfg(test)]
mod tests;
