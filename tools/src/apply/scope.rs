//! What a transition touches: the targets of a patch (and of those a cumulative patch
//! replaces), their gates and the code that counts as inside.

use crate::error::{Result, TriggerError};
use crate::inject::elffile::{identity, FileCache, FileIdentity};
use crate::inject::process::{MappedObject, Process};
use pulp_meta::format::FLAG_REPLACE;
use pulp_meta::status::{PatchState, Status};
use pulp_meta::PatchMeta;
use std::sync::Arc;

/// `[start, end)` of code.
type Range = (u64, u64);

/// A target a transition touches: its build-id and the functions (offsets) that change.
pub type ScopeTarget = (Vec<u8>, Vec<u64>);

/// Add the targets of `meta` to `scope`.
pub fn add_scope(scope: &mut Vec<ScopeTarget>, meta: &PatchMeta) {
    for t in &meta.targets {
        let offsets = t.functions.iter().map(|f| f.offset);
        match scope.iter_mut().find(|(b, _)| *b == t.build_id) {
            Some((_, o)) => o.extend(offsets),
            None => scope.push((t.build_id.clone(), offsets.collect())),
        }
    }
}

/// What a transition of `meta` touches: its targets, and for a cumulative patch those of
/// every applied patch it replaces.
pub(super) fn scope_targets(meta: &PatchMeta, status: &Status) -> Vec<ScopeTarget> {
    let mut scope = Vec::new();
    add_scope(&mut scope, meta);
    if meta.flags & FLAG_REPLACE != 0 {
        for p in status.patches.iter().filter(|p| p.state == PatchState::Applied) {
            if p.meta.targets.iter().any(|t| meta.targets.iter().any(|n| n.build_id == t.build_id)) {
                add_scope(&mut scope, &p.meta);
            }
        }
    }
    scope
}

/// What a transition needs to know about the targets: the gates (exported functions of
/// each shared library, the doors a thread comes in through) and the code that counts as
/// inside. For a shared library that is all its code; for the main executable, where
/// every thread always has frames (`main`, thread start routines), it is the patched
/// functions themselves, as for the kernel's livepatch.
pub fn transition_scope(
    proc: &Process,
    objects: &[MappedObject],
    scope: &[ScopeTarget],
) -> Result<(Vec<u64>, Vec<Range>)> {
    let pid = proc.pid;
    let maps = proc.mappings()?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok().map(|p| p.to_string_lossy().into_owned());
    let (mut gates, mut inside) = (Vec::new(), Vec::new());
    for (build_id, offsets) in scope {
        let Some(obj) = objects.iter().find(|o| &o.build_id == build_id) else { continue };
        let Some(header) = maps.iter().find(|m| m.start == obj.header) else { continue };
        let [mapped, by_path] = proc.mapped_file(header);
        let funcs = functions_of(&mapped).or_else(|_| functions_of(&by_path)).map_err(|e| TriggerError::Target {
            pid,
            what: format!("cannot read the functions of {}: {e}", obj.path),
        })?;
        if exe.as_deref() == Some(obj.path.as_str()) {
            for &off in offsets {
                let size = funcs.iter().find(|g| g.offset == off).map(|g| g.size).unwrap_or(0).max(1);
                inside.push((obj.base + off, obj.base + off + size));
            }
        } else {
            gates.extend(funcs.iter().filter(|f| f.dynamic && f.prologue.is_some()).map(|f| obj.base + f.offset));
            inside
                .extend(maps.iter().filter(|m| m.path == obj.path && m.perms.contains('x')).map(|m| (m.start, m.end)));
        }
    }
    gates.sort_unstable();
    gates.dedup();
    Ok((gates, inside))
}

/// The functions of the object file at `path`, kept per file identity (device, inode,
/// size, modification time): the processes of one `--all` map the same target, which is
/// then read and parsed once.
fn functions_of(path: &std::path::Path) -> std::result::Result<Arc<Vec<pulp_elf::FunctionInfo>>, String> {
    static KNOWN: FileCache<FileIdentity, Arc<Vec<pulp_elf::FunctionInfo>>> = FileCache::new(64);
    let key = identity(&std::fs::metadata(path).map_err(|e| e.to_string())?);
    KNOWN.get_or_read(key, || pulp_elf::functions(path).map(Arc::new).map_err(|e| e.to_string()))
}
