//! `pulp preload on|off|status`: the runtime in every process of a machine, through the
//! dynamic linker's `/etc/ld.so.preload` (which, unlike `LD_PRELOAD`, also reaches
//! programs that clear their environment, and setuid and setcap programs).
//!
//! - `on` checks the runtime first: a regular file owned by root and writable by nobody
//!   else, in folders likewise (every process of the machine will map it: whoever can
//!   change it owns them all); an x86-64 shared object exporting `pulp_rs_info`; and a
//!   program started with it preloaded runs and exits normally. Then it writes the file
//!   atomically (a new file renamed over the old one: a process starting meanwhile reads
//!   the old or the new list, never half of one), keeping every other entry and comment
//!   as they were, replacing an earlier libpulp-rs runtime's entry.
//! - `off` removes the runtime's entry, leaving the rest as it was (the file goes away if
//!   nothing else was in it).
//!
//! Processes running already are not touched: the file is read when a program starts.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The file the dynamic linker reads.
pub const PRELOAD_FILE: &str = "/etc/ld.so.preload";

/// What `on` or `off` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// The file was written (the entry added, replaced or removed).
    Written,
    /// It already said so: nothing written.
    Unchanged,
}

/// Whether a word of the file names a libpulp-rs runtime.
fn is_runtime_entry(word: &str) -> bool {
    Path::new(word).file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libpulp_rs"))
}

/// The file's text without the runtime's entries: other lines as they were, a line that
/// mixes one with other words (separated by spaces or `:`, as the linker accepts)
/// rewritten without it.
fn without_runtime(text: &str) -> String {
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        let (body, comment) = match line.find('#') {
            Some(i) => (&line[..i], &line[i..]),
            None => (line, ""),
        };
        let words: Vec<&str> = body.split(|c: char| c.is_whitespace() || c == ':').filter(|w| !w.is_empty()).collect();
        if !words.iter().any(|w| is_runtime_entry(w)) {
            out.push_str(line);
            continue;
        }
        let kept: Vec<&str> = words.into_iter().filter(|w| !is_runtime_entry(w)).collect();
        let mut rewritten = kept.join(" ");
        if !comment.is_empty() {
            if !rewritten.is_empty() {
                rewritten.push(' ');
            }
            rewritten.push_str(comment.trim_end_matches('\n'));
        }
        if !rewritten.is_empty() {
            out.push_str(&rewritten);
            out.push('\n');
        }
    }
    out
}

/// The runtime entries the file has now.
pub fn entries(file: &Path) -> Result<Vec<String>, String> {
    let text = read(file)?.unwrap_or_default();
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.split(|c: char| c.is_whitespace() || c == ':'))
        .filter(|w| is_runtime_entry(w))
        .map(str::to_string)
        .collect())
}

/// The file's content, `None` if it does not exist; refused if it is not a regular file.
fn read(file: &Path) -> Result<Option<String>, String> {
    match std::fs::symlink_metadata(file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", file.display())),
        Ok(m) if !m.file_type().is_file() => {
            Err(format!("{} is not a regular file (a symbolic link?): edit it by hand", file.display()))
        }
        Ok(m) if m.len() > 1 << 20 => Err(format!("{} is larger than 1 MiB", file.display())),
        Ok(_) => std::fs::read_to_string(file).map(Some).map_err(|e| format!("{}: {e}", file.display())),
    }
}

/// Check that `runtime` may be preloaded into every process (see the module's text).
pub fn check_runtime(runtime: &Path) -> Result<(), String> {
    if !runtime.is_absolute() {
        return Err(format!("{}: the runtime's path must be absolute", runtime.display()));
    }
    // Root's files only, in root's folders: the check the patch directory's files get in
    // secure mode (`pulp_meta::trust`).
    let bytes = pulp_meta::trust::read_trusted(runtime, &[0], "the runtime").map_err(|e| {
        format!("{}: {e} (it is loaded into every process: only root may be able to change it)", runtime.display())
    })?;
    use object::{Object, ObjectSymbol};
    let obj = object::File::parse(&*bytes).map_err(|e| format!("{}: not an ELF object: {e}", runtime.display()))?;
    if obj.architecture() != object::Architecture::X86_64 || obj.kind() != object::ObjectKind::Dynamic {
        return Err(format!("{}: not an x86-64 shared object", runtime.display()));
    }
    if !obj.dynamic_symbols().any(|s| s.name() == Ok(pulp_meta::abi::INFO_SYMBOL) && !s.is_undefined()) {
        return Err(format!(
            "{}: not the libpulp-rs runtime (it exports no {})",
            runtime.display(),
            pulp_meta::abi::INFO_SYMBOL
        ));
    }
    // A runtime that breaks programs must never reach the machine's every process.
    let out = std::process::Command::new("/bin/true")
        .env_clear()
        .env("LD_PRELOAD", runtime)
        .output()
        .map_err(|e| format!("cannot run /bin/true to try the runtime: {e}"))?;
    if !out.status.success() || !out.stderr.is_empty() {
        return Err(format!(
            "{}: /bin/true with it preloaded failed ({}): {}",
            runtime.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// `pulp preload on`: `runtime` in `file`.
pub fn enable(runtime: &Path, file: &Path) -> Result<Change, String> {
    check_runtime(runtime)?;
    let old = read(file)?;
    let text = old.clone().unwrap_or_default();
    let entry = runtime.to_str().ok_or_else(|| format!("{}: the path is not UTF-8", runtime.display()))?;
    if entry.contains(|c: char| c.is_whitespace() || c == ':' || c == '#') {
        return Err(format!("{entry}: the dynamic linker cannot read a path with spaces, `:` or `#`"));
    }
    if entries(file)? == [entry] {
        return Ok(Change::Unchanged);
    }
    let mut new = without_runtime(&text);
    if !new.is_empty() && !new.ends_with('\n') {
        new.push('\n');
    }
    new.push_str(entry);
    new.push('\n');
    write_atomically(file, &new)?;
    Ok(Change::Written)
}

/// `pulp preload off`: no runtime in `file`.
pub fn disable(file: &Path) -> Result<Change, String> {
    let Some(text) = read(file)? else { return Ok(Change::Unchanged) };
    if entries(file)?.is_empty() {
        return Ok(Change::Unchanged);
    }
    let new = without_runtime(&text);
    if new.trim().is_empty() {
        std::fs::remove_file(file).map_err(|e| format!("cannot remove {}: {e}", file.display()))?;
    } else {
        write_atomically(file, &new)?;
    }
    Ok(Change::Written)
}

/// Write `text` as `file`: a new file in the same folder, synced, renamed over it.
fn write_atomically(file: &Path, text: &str) -> Result<(), String> {
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp: PathBuf = dir.join(format!(".{name}.pulp.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mode = std::fs::metadata(file).map(|m| m.mode() & 0o7777).unwrap_or(0o644);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| format!("cannot write {}: {e}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_entries_and_comments_stay() {
        let text = "# local policy\n/usr/lib/libfoo.so\n/opt/old/libpulp_rs.so /usr/lib/libbar.so # two\n";
        assert_eq!(without_runtime(text), "# local policy\n/usr/lib/libfoo.so\n/usr/lib/libbar.so # two\n");
        assert_eq!(without_runtime("/a/libpulp_rs.so\n"), "");
        assert_eq!(without_runtime("/x.so:/a/libpulp_rs.so\n"), "/x.so\n");
        assert_eq!(without_runtime("/x.so"), "/x.so");
    }
}
