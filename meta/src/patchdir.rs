//! The patch directory's file names, which `pulp install` writes and the runtime reads.
//!
//! An installed patch is `STEM+BUILDID[+BUILDID...].meta` beside its object `STEM.so`:
//! the name lists the build-id of every target (lower-case hex), so that a process
//! learns from one read of the directory which patches concern it, and reads, checks and
//! loads only those whose targets it maps. A `.meta` named otherwise (put there by hand)
//! is still applied, but every process reads it at its start to learn its targets.

use crate::format::hex;
use crate::PatchMeta;

/// The folder used when none is named.
pub const DEFAULT_DIR: &str = "/etc/pulp/patches.d";
/// The environment variable naming another one (ignored in secure mode).
pub const DIR_ENV: &str = "PULP_PATCH_DIR";
/// [`DEFAULT_DIR`] and [`DIR_ENV`] as C strings, for the runtime's constructor.
pub const DEFAULT_DIR_C: &std::ffi::CStr = c"/etc/pulp/patches.d";
pub const DIR_ENV_C: &std::ffi::CStr = c"PULP_PATCH_DIR";

/// The installed `.meta` file name for `meta`, from a stem made of `[A-Za-z0-9._-]`.
pub fn meta_file_name(stem: &str, meta: &PatchMeta) -> String {
    let mut name = stem.to_string();
    for t in &meta.targets {
        name.push('+');
        name.push_str(&hex(&t.build_id));
    }
    name.push_str(".meta");
    name
}

/// The targets' build-ids a `.meta` file name lists, if it is named as installed.
pub fn targets_in_name(file_name: &str) -> Option<Vec<Vec<u8>>> {
    let stem = file_name.strip_suffix(".meta")?;
    let mut parts = stem.split('+');
    parts.next()?;
    let ids: Vec<Vec<u8>> = parts.map(unhex).collect::<Option<_>>()?;
    (!ids.is_empty()).then_some(ids)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let mut out = vec![0u8; s.len() / 2];
    let len = unhex_into(s.as_bytes(), &mut out)?;
    out.truncate(len);
    Some(out)
}

/// Decode `hex`, a build-id as installed names spell it (lower-case, an even number of
/// digits, not empty), into the start of `out`; its length, or `None` if it is not in
/// that form or longer than `out`. No allocation: the runtime's start path uses it
/// (`runtime/src/startscan.rs`, in its start section).
#[link_section = ".text.pulp_start"]
pub fn unhex_into(hex: &[u8], out: &mut [u8]) -> Option<usize> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) || hex.len() / 2 > out.len() {
        return None;
    }
    let nibble = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *o = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(hex.len() / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_strings_match() {
        assert_eq!(DEFAULT_DIR_C.to_str(), Ok(DEFAULT_DIR));
        assert_eq!(DIR_ENV_C.to_str(), Ok(DIR_ENV));
    }

    #[test]
    fn names_list_the_targets() {
        assert_eq!(targets_in_name("fix+0a1b+ff.meta"), Some(vec![vec![0x0a, 0x1b], vec![0xff]]));
        assert_eq!(targets_in_name("fix.meta"), None);
        assert_eq!(targets_in_name("fix+.meta"), None);
        assert_eq!(targets_in_name("fix+0A1B.meta"), None, "upper case is not what install writes");
        assert_eq!(targets_in_name("fix+0a1.meta"), None);
        assert_eq!(targets_in_name("fix+zz.meta"), None);
        assert_eq!(targets_in_name("fix+0a1b.so"), None);
    }
}
