//! Finding the libpulp-rs runtime in a target process: its `pulp_rs_info` (read from
//! memory, located through the mapped file's dynamic symbols) and its code ranges.

use crate::error::{Result, TriggerError};
use crate::inject::elffile::{identity, ElfFile, FileCache, FileIdentity};
use crate::inject::process::{MappedObject, Mapping, Process};
use pulp_meta::abi::{self, RuntimeInfo};
use std::path::Path;

/// Find `libpulp_rs.so` in the process and read its `pulp_rs_info`.
pub fn runtime_info(proc: &Process, objects: &[MappedObject]) -> Result<RuntimeInfo> {
    let pid = proc.pid;
    let runtime = objects.iter().find(|o| is_runtime(&o.path)).ok_or(TriggerError::RuntimeNotLoaded { pid })?;
    // Read the symbol from the mapped file itself (map_files), falling back to its path.
    let value = proc.object_file(runtime).iter().find_map(|p| symbol_value(p, abi::INFO_SYMBOL)).ok_or_else(|| {
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

/// The value of the dynamic symbol `name` of the object file at `path`; kept per file
/// identity, since the processes of one `--all` load the same runtime.
fn symbol_value(path: &Path, name: &str) -> Option<u64> {
    static VALUES: FileCache<(FileIdentity, String), u64> = FileCache::new(64);
    let file = std::fs::File::open(path).ok()?;
    let key = (identity(&file.metadata().ok()?), name.to_string());
    VALUES.get_or_read(key, || ElfFile::read(&file).and_then(|elf| elf.dynamic_symbol(name)).ok_or(())).ok()
}

pub fn is_runtime(path: &str) -> bool {
    path.rsplit('/').next().is_some_and(|n| n.starts_with("libpulp_rs"))
}

/// Executable ranges of the runtime itself: a thread there counts as inside.
pub fn runtime_code(proc: &Process) -> Result<Vec<(u64, u64)>> {
    Ok(runtime_code_in(&proc.mappings()?))
}

/// `runtime_code`, from mappings already read.
pub fn runtime_code_in(maps: &[Mapping]) -> Vec<(u64, u64)> {
    maps.iter().filter(|m| is_runtime(&m.path) && m.perms.contains('x')).map(|m| (m.start, m.end)).collect()
}
