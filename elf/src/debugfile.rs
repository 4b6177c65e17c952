//! Separate debug info of stripped objects.
//!
//! Distributions strip their libraries and ship the symbol table and DWARF in a debug
//! file. It is looked for, in this order, as gdb does:
//!
//! 1. the files given explicitly (`--debug-file`), the one whose build-id is the object's;
//! 2. `ROOT/.build-id/xx/yyyy.debug`, where `xxyyyy` is the object's build-id in hex;
//! 3. the `.gnu_debuglink` name, next to the object, in its `.debug/` folder and under
//!    `ROOT/` + the object's folder.
//!
//! `ROOT` is `/usr/lib/debug` unless told otherwise. A candidate is accepted only when its
//! build-id equals the object's (and, for a debuglink, its CRC-32 the recorded one): a
//! debug file of another build would give wrong addresses.

use std::path::{Path, PathBuf};

use pulp_meta::format::hex;

use crate::symbols::ObjectInfo;

/// Where to look for debug files.
#[derive(Clone, Debug)]
pub struct DebugSearch {
    /// Debug files given explicitly; each is used for the object whose build-id it has.
    pub files: Vec<PathBuf>,
    /// The global debug folder, `/usr/lib/debug` by default.
    pub root: PathBuf,
}

impl Default for DebugSearch {
    fn default() -> Self {
        Self { files: Vec::new(), root: PathBuf::from("/usr/lib/debug") }
    }
}

/// The outcome of a search.
#[derive(Clone, Debug)]
pub enum DebugLookup {
    Found {
        path: PathBuf,
        info: Box<ObjectInfo>,
    },
    /// Nothing usable; each candidate looked at and why it was not taken.
    NotFound {
        tried: Vec<(PathBuf, String)>,
    },
}

impl DebugLookup {
    /// "looked for ... in A (missing), B (build-id ...)": for messages.
    pub fn describe_tried(tried: &[(PathBuf, String)]) -> String {
        if tried.is_empty() {
            return "no build-id and no .gnu_debuglink to look for one".into();
        }
        tried.iter().map(|(p, why)| format!("{} ({why})", p.display())).collect::<Vec<_>>().join(", ")
    }
}

/// Find the debug file of `object` (whose parsed info is `info`).
pub fn find(object: &Path, info: &ObjectInfo, search: &DebugSearch) -> DebugLookup {
    let mut tried = Vec::new();
    let want = info.build_id.as_deref();
    for f in &search.files {
        match check(f, want, None) {
            Ok(found) => return DebugLookup::Found { path: f.clone(), info: Box::new(found) },
            Err(why) => tried.push((f.clone(), why)),
        }
    }
    if let Some(id) = want.filter(|id| id.len() >= 2) {
        let h = hex(id);
        let p = search.root.join(".build-id").join(&h[..2]).join(format!("{}.debug", &h[2..]));
        match check(&p, want, None) {
            Ok(found) => return DebugLookup::Found { path: p, info: Box::new(found) },
            Err(why) => tried.push((p, why)),
        }
    }
    if let Some((name, crc)) = &info.debuglink {
        let dir = object.parent().map(Path::to_path_buf).unwrap_or_default();
        let abs_dir = dir.canonicalize().unwrap_or(dir.clone());
        let global = search.root.join(abs_dir.strip_prefix("/").unwrap_or(&abs_dir));
        for p in [dir.join(name), dir.join(".debug").join(name), global.join(name)] {
            if p.canonicalize().ok() == object.canonicalize().ok() {
                continue; // the object itself: its own debuglink names a file of the same name elsewhere
            }
            match check(&p, want, Some(*crc)) {
                Ok(found) => return DebugLookup::Found { path: p, info: Box::new(found) },
                Err(why) => tried.push((p, why)),
            }
        }
    }
    DebugLookup::NotFound { tried }
}

/// Whether `path` is a debug file for an object with build-id `want` (and debuglink
/// CRC `crc`). The reason when not.
fn check(path: &Path, want: Option<&[u8]>, crc: Option<u32>) -> Result<ObjectInfo, String> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("missing".into()),
        Err(e) => return Err(e.to_string()),
    };
    let info = ObjectInfo::parse(path, &data).map_err(|e| e.to_string())?;
    match (want, info.build_id.as_deref()) {
        (Some(w), Some(f)) if w != f => return Err(format!("build-id {}, not {}", hex(f), hex(w))),
        (Some(_), None) if crc.is_none() => return Err("no build-id".into()),
        _ => {}
    }
    if let Some(c) = crc {
        let found = pulp_meta::format::crc32(&data);
        if found != c {
            return Err(format!("CRC-32 {found:08x}, the debuglink records {c:08x}"));
        }
    }
    if !info.has_symtab {
        return Err("no symbol table".into());
    }
    Ok(info)
}
