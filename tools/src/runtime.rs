//! Finding the libpulp-rs runtime in a target process: its `pulp_rs_info` (read from
//! memory, located through the mapped file's dynamic symbols) and its code ranges.

use crate::error::{Result, TriggerError};
use crate::process::{MappedObject, Process};
use pulp_meta::abi::{self, RuntimeInfo};
use std::path::Path;

/// Find `libpulp_rs.so` in the process and read its `pulp_rs_info`.
pub fn runtime_info(proc: &Process, objects: &[MappedObject]) -> Result<RuntimeInfo> {
    let pid = proc.pid;
    let runtime = objects.iter().find(|o| is_runtime(&o.path)).ok_or(TriggerError::RuntimeNotLoaded { pid })?;
    // Read the symbol from the mapped file itself (map_files), falling back to its path.
    let maps = proc.mappings()?;
    let header = maps.iter().find(|m| m.start == runtime.header).ok_or(TriggerError::RuntimeNotLoaded { pid })?;
    let value = proc.mapped_file(header).iter().find_map(|p| symbol_value(p, abi::INFO_SYMBOL)).ok_or_else(|| {
        TriggerError::RuntimeMismatch { pid, what: format!("{} does not export {}", runtime.path, abi::INFO_SYMBOL) }
    })?;
    let info =
        RuntimeInfo::from_bytes(&proc.read(runtime.base + value, RuntimeInfo::SIZE)?).expect("read returns SIZE bytes");
    if info.magic != abi::INFO_MAGIC {
        return Err(TriggerError::RuntimeMismatch {
            pid,
            what: format!("bad magic {:#x} in {}", info.magic, abi::INFO_SYMBOL),
        });
    }
    if info.abi_version() != abi::ABI_VERSION || info.desc_size() != std::mem::size_of::<abi::Descriptor>() as u64 {
        return Err(TriggerError::RuntimeMismatch {
            pid,
            what: format!("runtime ABI {}, this tool speaks {}", info.abi_version(), abi::ABI_VERSION),
        });
    }
    Ok(info)
}

fn symbol_value(path: &Path, name: &str) -> Option<u64> {
    use object::{Object, ObjectSymbol};
    // Read lazily: only the headers and the dynamic symbol table, not the whole file.
    let data = object::ReadCache::new(std::fs::File::open(path).ok()?);
    let file = object::File::parse(&data).ok()?;
    let found = file.dynamic_symbols().find(|s| s.name() == Ok(name)).map(|s| s.address());
    found
}

pub fn is_runtime(path: &str) -> bool {
    path.rsplit('/').next().is_some_and(|n| n.starts_with("libpulp_rs"))
}

/// Executable ranges of the runtime itself: a thread there counts as inside.
pub fn runtime_code(proc: &Process, objects: &[MappedObject]) -> Result<Vec<(u64, u64)>> {
    let path = objects.iter().find(|o| is_runtime(&o.path)).map(|o| o.path.clone()).unwrap_or_default();
    Ok(proc
        .mappings()?
        .into_iter()
        .filter(|m| m.path == path && m.perms.contains('x'))
        .map(|m| (m.start, m.end))
        .collect())
}
