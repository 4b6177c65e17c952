//! Descriptors: one per redirected function entry, for the life of the process (a thread
//! preempted inside a function's pad must still land on the right code). Each holds the
//! stack of versions applied to its function; word 0 (what the entry's pad jumps through)
//! points at the top version, at a dispatch stub during a transition, or at the original
//! body when no version is left (and then the tool puts the entry's original bytes back).

use crate::loader;
use pulp_meta::abi::{Descriptor, EntryAction, FuncReply};
use pulp_meta::prologue::{Displaced, SLOT_COPY};
use pulp_meta::{prologue, Prologue};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

/// Runtime-side state of one descriptor.
pub struct DescState {
    pub entry: u64,
    pub kind: Prologue,
    /// Where the original code goes on: after the entry NOPs, or after the call to
    /// `__fentry__`.
    pub body: u64,
    /// The 2 NOP bytes before the first redirection (NOP-pad kinds).
    pub original: [u8; 2],
    /// Applied versions, oldest first: (patch id, address of the new function).
    pub versions: Vec<(String, u64)>,
    /// Unpadded functions: the trampoline slot and what the entry jump overwrites.
    pub slot: u64,
    pub displaced: Option<Displaced>,
}

impl DescState {
    /// What runs now when no transition is in progress.
    pub fn current(&self) -> u64 {
        self.versions.last().map(|v| v.1).unwrap_or(self.body)
    }

    /// What would run with the versions of the patches in `without` removed.
    pub fn after(&self, without: &[String]) -> u64 {
        self.versions.iter().rev().find(|v| !without.contains(&v.0)).map_or(self.body, |v| v.1)
    }
}

/// An entry point a request may redirect, checked.
pub struct Planned {
    pub entry: u64,
    pub kind: Prologue,
    pub known: Option<usize>,
    /// Unpadded functions: what the entry jump overwrites (from `patch.meta`).
    pub displaced: Option<Displaced>,
}

pub struct Descriptors {
    pub states: Vec<DescState>,
    by_entry: BTreeMap<u64, usize>,
}

pub fn table(index: usize) -> &'static Descriptor {
    &pulp_trm::descriptors()[index]
}

pub fn desc_addr(index: usize) -> u64 {
    table(index) as *const Descriptor as u64
}

/// Read `N` bytes of loaded code.
///
/// # Safety
/// `[addr, addr + N)` must be mapped readable.
pub unsafe fn read_code<const N: usize>(addr: u64) -> [u8; N] {
    // SAFETY: the caller guarantees the range is mapped; volatile because another
    // party (the tool, through /proc/PID/mem) may change these bytes.
    unsafe { std::ptr::read_volatile(addr as *const [u8; N]) }
}

/// Whether an fentry function's call goes to our `__fentry__`: directly, through its
/// GOT slot, or through a PLT entry of its object not yet bound (lazy binding), which
/// the dynamic linker will bind to ours since ours comes first in the lookup order.
fn calls_our_fentry(obj: &loader::Loaded, call: u64, len: u64) -> bool {
    let ours = pulp_trm::fentry() as u64;
    // SAFETY: dlsym with a static NUL-terminated name.
    let global = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__fentry__".as_ptr()) } as u64;
    if global != ours {
        return false;
    }
    // SAFETY: the caller checked the call instruction is mapped code.
    let disp = unsafe { read_code::<4>(call + len - 4) };
    let target = (call + len).wrapping_add(i32::from_le_bytes(disp) as i64 as u64);
    if len == 6 {
        // `call *slot(%rip)`: the GOT slot is in the object's data, mapped readable.
        if !obj.is_mapped(target, target + 8) {
            return false;
        }
        // SAFETY: checked mapped just above.
        let bound = u64::from_le_bytes(unsafe { read_code::<8>(target) });
        bound == ours || obj.is_code(bound, bound + 1)
    } else {
        target == ours || obj.is_code(target, target + 1)
    }
}

impl Default for Descriptors {
    fn default() -> Self {
        Self::new()
    }
}

impl Descriptors {
    pub const fn new() -> Self {
        Self { states: Vec::new(), by_entry: BTreeMap::new() }
    }

    pub fn reply(&self, index: usize, action: EntryAction) -> FuncReply {
        let d = &self.states[index];
        let mut r = FuncReply::new(d.entry, desc_addr(index), action, d.original, d.kind);
        if let Some(x) = &d.displaced {
            r.slot = d.slot;
            r.skip = x.skip;
            r.len = x.original.len() as u8;
            r.displaced[..x.original.len()].copy_from_slice(&x.original);
        }
        r
    }

    /// The descriptor of the function entry at `entry`, if it has one.
    pub fn of_entry(&self, entry: u64) -> Option<usize> {
        self.by_entry.get(&entry).copied()
    }

    /// The original code of the function at `entry`, past its redirect: the body of its
    /// descriptor, or, for a function never redirected, what its prologue says.
    pub fn original_code(&self, obj: &loader::Loaded, entry: u64) -> Option<u64> {
        if let Some(d) = self.of_entry(entry) {
            return Some(self.states[d].body);
        }
        if !obj.is_code(entry.checked_sub(prologue::PAD_BEFORE as u64)?, entry + 10) {
            return obj.is_code(entry, entry + 1).then_some(entry);
        }
        // SAFETY: is_code checked the range is mapped code.
        let (before, at) = unsafe { (read_code::<14>(entry - 14), read_code::<10>(entry)) };
        Some(match prologue::classify(&before, &at) {
            Some(k) if k.is_fentry() => prologue::fentry_call(&at).map_or(entry, |(off, len)| entry + off + len),
            Some(k) => entry + k.jump_offset().unwrap_or(0) + 2,
            None => entry,
        })
    }

    /// Check that `entry` of `obj` is code this release can redirect: untouched and of
    /// `kind` (when given), or ours (redirected, restored, or in a state a killed tool
    /// left between two byte writes).
    pub fn check_entry(
        &self,
        obj: &loader::Loaded,
        entry: u64,
        kind: Option<Prologue>,
        what: &str,
    ) -> Result<Planned, String> {
        self.check_entry_displaced(obj, entry, kind, None, what)
    }

    /// [`Descriptors::check_entry`], with what the entry jump of an unpadded function
    /// overwrites: untouched, its bytes are `displaced` (after a kept `endbr64`); once it
    /// has a descriptor, any state is ours (the tool recognises and repairs it).
    pub fn check_entry_displaced(
        &self,
        obj: &loader::Loaded,
        entry: u64,
        kind: Option<Prologue>,
        displaced: Option<&Displaced>,
        what: &str,
    ) -> Result<Planned, String> {
        if kind == Some(Prologue::Unpadded) {
            let d = displaced.ok_or_else(|| format!("{what}: no displaced bytes recorded"))?;
            let len = usize::from(d.skip) + d.original.len();
            if !obj.is_code(entry, entry + len as u64) {
                return Err(format!("{what}: address {entry:#x} is not inside the object's code"));
            }
            let known = self.of_entry(entry);
            if known.is_none() {
                // SAFETY: is_code checked that [entry, entry + len) is mapped code; len <= 23.
                let at = unsafe { read_code::<{ 4 + prologue::MAX_DISPLACED }>(entry) };
                let endbr_ok = d.skip == 0 || at[..4] == [0xf3, 0x0f, 0x1e, 0xfa];
                if !endbr_ok || at[usize::from(d.skip)..len] != d.original[..] {
                    let bytes: Vec<String> = at[..len].iter().map(|b| format!("{b:02x}")).collect();
                    return Err(format!(
                        "{what} at {entry:#x}: its first instructions are not the ones recorded (found {})",
                        bytes.join(" ")
                    ));
                }
            }
            return Ok(Planned { entry, kind: Prologue::Unpadded, known, displaced: Some(d.clone()) });
        }
        if entry < prologue::PAD_BEFORE as u64 || !obj.is_code(entry - prologue::PAD_BEFORE as u64, entry + 10) {
            return Err(format!("{what}: address {entry:#x} is not inside the object's code"));
        }
        let known = self.of_entry(entry);
        // SAFETY: is_code checked that [entry - 14, entry + 10) is mapped code.
        let (before, at) = unsafe { (read_code::<14>(entry - 14), read_code::<10>(entry)) };
        let found = match known {
            Some(d) => {
                let st = &self.states[d];
                let intact = match st.kind.jump_offset() {
                    Some(off) => {
                        // SAFETY: within the range checked above.
                        let now = unsafe { read_code::<2>(entry + off) };
                        prologue::ours_or_in_flight(st.original, now)
                    }
                    None => prologue::fentry_call(&at).is_some(),
                };
                intact.then_some(st.kind)
            }
            None => prologue::classify(&before, &at).filter(|k| match prologue::fentry_call(&at) {
                Some((off, len)) if k.is_fentry() => calls_our_fentry(obj, entry + off, len),
                _ => true,
            }),
        };
        match found {
            Some(k) if kind.is_none_or(|want| want == k || (want == Prologue::NopPad90 && k == Prologue::NopPad66)) => {
                Ok(Planned { entry, kind: kind.unwrap_or(k), known, displaced: None })
            }
            _ => {
                let want = kind.map(|k| k.to_string()).unwrap_or_else(|| "a patchable prologue".into());
                let bytes: Vec<String> = at[..6].iter().map(|b| format!("{b:02x}")).collect();
                let hint = if kind.is_some_and(Prologue::is_fentry) {
                    " (or its call does not reach libpulp_rs's __fentry__)"
                } else {
                    ""
                };
                Err(format!(
                    "{what} at {entry:#x}: prologue is not {want} as recorded{hint} (found {})",
                    bytes.join(" ")
                ))
            }
        }
    }

    /// The descriptor of `p`, allocating it on first use. A new descriptor's word 0 is
    /// the original body: redirecting the entry to it changes nothing for any thread.
    pub fn desc_for(&mut self, p: &Planned) -> Result<usize, String> {
        if let Some(d) = p.known.or_else(|| self.of_entry(p.entry)) {
            return Ok(d);
        }
        let d = self.states.len();
        let (mut slot, mut displaced) = (0, None);
        let (body, original) = match p.kind.jump_offset() {
            _ if p.kind == Prologue::Unpadded => {
                let x = p.displaced.clone().ok_or("an unpadded function without its displaced bytes")?;
                crate::trampoline::install()?;
                slot = crate::trampoline::alloc_slot(p.entry)?;
                crate::trampoline::set_trap(d, p.entry + u64::from(x.skip), slot);
                let original = [x.original[0], x.original[1]];
                displaced = Some(x);
                // The copy, which the tool writes before the entry can jump to the slot.
                (slot + SLOT_COPY, original)
            }
            // SAFETY: checked mapped; the entry is untouched, so these are the original bytes.
            Some(off) => (p.entry + off + 2, unsafe { read_code::<2>(p.entry + off) }),
            None => {
                // SAFETY: checked mapped by check_entry.
                let at = unsafe { read_code::<10>(p.entry) };
                let (off, len) = prologue::fentry_call(&at).ok_or("fentry call vanished")?;
                let body = p.entry + off + len;
                table(d).target.store(body, Ordering::Relaxed);
                table(d).entry.store(p.entry, Ordering::Release);
                if !pulp_trm::fentry_insert(body, desc_addr(d)) {
                    return Err("the runtime's __fentry__ table is full".into());
                }
                (body, [0, 0])
            }
        };
        table(d).target.store(body, Ordering::Relaxed);
        table(d).entry.store(p.entry, Ordering::Release);
        self.states.push(DescState {
            entry: p.entry,
            kind: p.kind,
            body,
            original,
            versions: Vec::new(),
            slot,
            displaced,
        });
        self.by_entry.insert(p.entry, d);
        Ok(d)
    }

    pub fn ensure_room(&self, planned: &[&Planned]) -> Result<(), String> {
        let fresh = planned.iter().filter(|p| p.known.is_none()).count();
        let free = pulp_trm::DESC_COUNT - self.states.len();
        if fresh > free {
            return Err(format!(
                "the runtime has room for {free} more redirected functions, the request needs {fresh}"
            ));
        }
        Ok(())
    }
}
