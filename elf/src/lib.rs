//! Reading ELF objects for libpulp-rs, shared by the tools and the build plugin.
//!
//! - [`functions`]: the functions of an object with their prologue kinds, build-ids, and
//!   canonicalising gcc's `90 90` entry NOPs to `66 90`;
//! - [`symbols`]: every symbol (functions, data, thread-locals; local, hidden, exported),
//!   grouped by source file, the object's imports, dependencies and writable ranges;
//! - [`debugfile`]: separate debug info of stripped objects (`--debug-file`,
//!   `/usr/lib/debug/.build-id/xx/yyyy.debug`, `.gnu_debuglink`), build-id checked;
//! - [`dwarf`]: questions answered by debug info (a function that exists only inlined,
//!   the layout of structs);
//! - [`image`]: whether two linked objects load the same bytes;
//! - [`inspect`]: all of it together for one object: what `pulp pack`, `pulp livepatchable`
//!   and `pulp build-patch` read about a target.

pub mod debugfile;
pub mod dwarf;
mod functions;
pub mod image;
pub mod inspect;
pub mod symbols;

pub use debugfile::DebugSearch;
pub use functions::{build_id, canonicalise_entries, functions, FunctionInfo};
pub use inspect::{inspect, Inspected};
pub use symbols::{is_c_library_name, is_dynamic_linker_name, ObjectInfo, Symbol, SymbolKind, SymbolVersion};

use std::io;
use std::path::{Path, PathBuf};

/// Why an object could not be inspected or rewritten; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: not a valid ELF object: {source}", path.display())]
    Parse { path: PathBuf, source: object::Error },
    #[error("{}: not an ELF object", path.display())]
    NotElf { path: PathBuf },
    #[error("{}: not an x86-64 ELF object", path.display())]
    NotX86_64 { path: PathBuf },
    #[error("{} has no GNU build-id (link it with -Wl,--build-id=sha1)", path.display())]
    NoBuildId { path: PathBuf },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("{}: debug info: {reason}", path.display())]
    Dwarf { path: PathBuf, reason: String },
    #[error("{}: its symbol table {table} is corrupt: {broken} of its {total} symbols have no valid name", path.display())]
    BadSymbols { path: PathBuf, table: &'static str, broken: usize, total: usize },
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, InspectError> {
    std::fs::read(path).map_err(|source| InspectError::Read { path: path.into(), source })
}

/// The GNU build-id note of a parsed object; `None` when it has none or an empty one.
pub(crate) fn note_build_id<'data>(file: &impl object::Object<'data>) -> object::Result<Option<Vec<u8>>> {
    Ok(file.build_id()?.filter(|id| !id.is_empty()).map(<[u8]>::to_vec))
}

pub(crate) fn parse<'a>(path: &Path, data: &'a [u8]) -> Result<object::File<'a>, InspectError> {
    let file = object::File::parse(data).map_err(|source| InspectError::Parse { path: path.into(), source })?;
    if file.format() != object::BinaryFormat::Elf {
        return Err(InspectError::NotElf { path: path.into() });
    }
    Ok(file)
}
