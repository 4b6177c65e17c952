//! References (`#sym:var` in a `.dsc`, and every reference `pulp build-patch` generates):
//! before a patch is activated, the runtime writes into each of the patch object's
//! reference variables what it needs to know about a symbol of a target (its address,
//! its original code, its TLS index, or its address relative to the patch's GOT).

use crate::loader::{Loaded, PatchObject};
use pulp_meta::PatchMeta;

/// Write every reference of `meta` into the loaded patch object (see the module docs);
/// `body_of(entry)` gives the original code of a function. Writes nothing unless every
/// reference resolves.
pub fn write_references(
    meta: &PatchMeta,
    _targets: &[Loaded],
    _patch: &PatchObject,
    _body_of: &dyn Fn(u64) -> Option<u64>,
) -> Result<(), String> {
    match meta.targets.iter().flat_map(|t| &t.references).next() {
        None => Ok(()),
        Some(r) => {
            Err(format!("reference `{}` -> `{}`: references are not supported by this runtime yet", r.symbol, r.var))
        }
    }
}
