//! An object a `.dsc` names (a target or the patch `.so`), inspected once.

use super::{PackErrorKind, PackOptions};
use std::path::Path;

use pulp_elf::inspect::SymbolSource;
use pulp_elf::{DebugSearch, FunctionInfo, Inspected};

/// An object named by the `.dsc`, inspected once; it has a build-id.
pub(super) struct Object {
    pub(super) path: String,
    pub(super) elf: Inspected,
    /// Addresses other code or data may branch to (for unpadded functions), found once.
    inbound: std::cell::OnceCell<Vec<u64>>,
    /// The file's bytes, read once when a function without a pad needs them.
    bytes: std::cell::OnceCell<Vec<u8>>,
}

impl Object {
    pub(super) fn open(base: &Path, raw: &str, what: &'static str, opts: &PackOptions) -> Result<Self, PackErrorKind> {
        let joined = base.join(raw);
        let path =
            joined.canonicalize().map_err(|source| PackErrorKind::Open { what, path: joined.clone(), source })?;
        let path_str = path.to_str().ok_or_else(|| PackErrorKind::NotUtf8 { path: path.clone() })?.to_owned();
        let elf = match opts.symbols_from.iter().find(|(t, _)| *t == path) {
            Some((_, from)) => {
                // The object itself is not inspected: only its build-id is read.
                let build_id = pulp_elf::build_id(&path)?;
                let mut elf = pulp_elf::inspect(from, &DebugSearch::default())?;
                elf.path = path.clone();
                elf.info.build_id = Some(build_id);
                elf
            }
            None => {
                let mut elf = pulp_elf::inspect(&path, &opts.debug)?;
                if elf.info.build_id.is_none() {
                    // None (or an unreadable note): `build_id` gives the error.
                    elf.info.build_id = Some(pulp_elf::build_id(&path)?);
                }
                elf
            }
        };
        Ok(Self { elf, path: path_str, inbound: std::cell::OnceCell::new(), bytes: std::cell::OnceCell::new() })
    }

    /// The object's build-id ([`Object::open`] refuses an object without one).
    pub(super) fn build_id(&self) -> &[u8] {
        self.elf.info.build_id.as_deref().expect("Object::open checked the build-id")
    }

    /// The addresses other code or data of the object may branch to
    /// ([`super::unpadded::inbound_of`]; `file`: its parsed [`Object::bytes`]).
    pub(super) fn inbound(&self, file: &object::File) -> &[u64] {
        self.inbound.get_or_init(|| super::unpadded::inbound_of(file, &self.elf.symbols))
    }

    /// The object's file, read once.
    pub(super) fn bytes(&self) -> std::io::Result<&[u8]> {
        if let Some(b) = self.bytes.get() {
            return Ok(b);
        }
        let data = std::fs::read(&self.path)?;
        Ok(self.bytes.get_or_init(|| data))
    }

    pub(super) fn functions(&self) -> &[FunctionInfo] {
        &self.elf.functions
    }

    /// Why this is the dynamic linker (`ld.so`), if it is: its soname or file name, or its
    /// `_rtld_global`.
    pub(super) fn dynamic_linker(&self) -> Option<String> {
        let file = Path::new(&self.path).file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let soname = self.elf.info.soname.as_deref();
        match soname {
            _ if !self.elf.info.is_dynamic_linker() && !pulp_elf::is_dynamic_linker_name(file) => None,
            Some(s) if pulp_elf::is_dynamic_linker_name(s) => Some(format!("its soname is {s}")),
            _ if pulp_elf::is_dynamic_linker_name(file) => Some(format!("its file is {file}")),
            _ => Some("it defines `_rtld_global`".into()),
        }
    }

    /// Why this is the C library, if it is: its soname (`libc.so.N`) or file name.
    pub(super) fn c_library(&self) -> Option<String> {
        let file = Path::new(&self.path).file_name().and_then(|n| n.to_str()).unwrap_or_default();
        match self.elf.info.soname.as_deref() {
            Some(s) if pulp_elf::is_c_library_name(s) => Some(format!("its soname is {s}")),
            _ if pulp_elf::is_c_library_name(file) => Some(format!("its file is {file}")),
            _ => None,
        }
    }

    /// " (the target is stripped ...)" when static symbols may be unknown.
    pub(super) fn stripped_hint(&self) -> String {
        match &self.elf.source {
            SymbolSource::Stripped { tried } => format!(
                " (it is stripped and no debug file was found: looked at {}; give one with --debug-file)",
                pulp_elf::debugfile::DebugLookup::describe_tried(tried)
            ),
            _ => String::new(),
        }
    }
}
