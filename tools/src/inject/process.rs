//! A target process seen from outside: its threads, its mappings, the objects it has
//! loaded (with build-ids read from memory, not from files an upgrade may have
//! replaced), and reads and writes of its memory through `/proc/PID/mem`.

use crate::error::{Result, TriggerError};
use crate::inject::elffile::ElfFile;
use pulp_meta::format::hex;
use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub offset: u64,
    pub path: String,
}

/// An object (executable or shared library) mapped into the process.
#[derive(Clone, Debug)]
pub struct MappedObject {
    pub path: String,
    /// Load base: where the object's virtual address 0 is.
    pub base: u64,
    /// Its first mapping (file offset 0), where the ELF header is: `[header, header_end)`.
    pub header: u64,
    pub header_end: u64,
    pub build_id: Vec<u8>,
}

pub struct Process {
    pub pid: i32,
    mem: File,
    /// Thread ids in the process's own PID namespace, by host id, once read (see
    /// [`Process::own_tid`]).
    own_tids: std::sync::Mutex<Option<Vec<(i32, i32)>>>,
    /// When the process started (`/proc/PID/stat` field 22, clock ticks since boot): with
    /// the PID, its identity; a PID that names another process meanwhile (the first
    /// exited, the PID was reused) has another.
    pub started: u64,
    /// Borrowed threads run with the seccomp filter suspended (`suspending_seccomp`).
    pub suspend_seccomp: bool,
}

impl Process {
    /// Open a process for inspection; fails with the errors a user needs (no such
    /// process, not permitted).
    pub fn open(pid: i32) -> Result<Self> {
        Self::open_as(pid, None)
    }

    /// [`Process::open`] of the process `pid` named when it was selected, whose start time
    /// was then `started`: if the PID names another process by now, it is gone.
    pub fn open_as(pid: i32, started: Option<u64>) -> Result<Self> {
        if pid <= 0 || !Path::new(&format!("/proc/{pid}")).exists() {
            return Err(TriggerError::NoSuchProcess { pid });
        }
        let before = start_time(pid).ok_or(TriggerError::NoSuchProcess { pid })?;
        if started.is_some_and(|s| s != before) {
            return Err(TriggerError::NoSuchProcess { pid });
        }
        let mem =
            File::options().read(true).write(true).open(format!("/proc/{pid}/mem")).map_err(|e| match e.kind() {
                ErrorKind::NotFound => TriggerError::NoSuchProcess { pid },
                ErrorKind::PermissionDenied => TriggerError::NotPermitted {
                    pid,
                    reason: "cannot open its memory (check the user and /proc/sys/kernel/yama/ptrace_scope)".into(),
                },
                _ => TriggerError::Target { pid, what: format!("cannot open /proc/{pid}/mem: {e}") },
            })?;
        // The memory opened is the process's that started at `before`, unless the PID
        // was reused between the two reads.
        if start_time(pid) != Some(before) {
            return Err(TriggerError::NoSuchProcess { pid });
        }
        Ok(Self { pid, mem, own_tids: std::sync::Mutex::new(None), started: before, suspend_seccomp: false })
    }

    /// Have the threads borrowed to run code in this process (`Hijacked`) run it with the
    /// process's seccomp filter suspended (`--disable-seccomp`).
    pub fn suspending_seccomp(mut self, on: bool) -> Self {
        self.suspend_seccomp = on;
        self
    }

    /// Whether `tid`, which this tool has just stopped, is a thread of this very process:
    /// the PID still names the process opened (not one that got the PID after it exited)
    /// and the thread is one of its own (not one of another process that got the id of a
    /// thread of this one that ended). A stopped thread keeps its id, so once this holds
    /// it holds until the thread is let go.
    pub fn owns_stopped_thread(&self, tid: i32) -> bool {
        start_time(self.pid) == Some(self.started) && self.proc_path(&format!("task/{tid}")).exists()
    }

    /// Wait until no other libpulp-rs tool is changing this process, and keep it so
    /// until this `Process` is dropped (an exclusive `flock` on `/proc/PID/mem`, whose
    /// inode every opener of that process shares).
    pub fn lock(&self) -> Result<()> {
        use std::os::fd::AsRawFd;
        loop {
            // SAFETY: flock on a file descriptor we own; no memory is passed.
            if unsafe { libc::flock(self.mem.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != ErrorKind::Interrupted {
                return Err(TriggerError::Target {
                    pid: self.pid,
                    what: format!("cannot lock /proc/{}/mem: {e}", self.pid),
                });
            }
        }
    }

    fn proc_path(&self, rest: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/{rest}", self.pid))
    }

    fn read_proc(&self, rest: &str) -> Result<String> {
        read_proc_file(self.proc_path(rest)).map_err(|e| match e.kind() {
            ErrorKind::NotFound => TriggerError::NoSuchProcess { pid: self.pid },
            _ => TriggerError::Target { pid: self.pid, what: format!("cannot read /proc/{}/{rest}: {e}", self.pid) },
        })
    }

    pub fn mappings(&self) -> Result<Vec<Mapping>> {
        Ok(self.read_proc("maps")?.lines().filter_map(parse_maps_line).collect())
    }

    /// Whether the process runs under a seccomp filter (`Seccomp:` not 0 in its status):
    /// then we make no system call in it that its own code would not make.
    pub fn under_seccomp(&self) -> bool {
        self.read_proc("status").map_or(true, |s| !s.lines().any(|l| l == "Seccomp:\t0"))
    }

    /// Whether the process lives in another PID namespace than this tool (a container):
    /// its threads then have other ids inside, which the runtime and the hijack stub use.
    pub fn in_other_pid_namespace(&self) -> bool {
        let own = std::fs::read_link(self.proc_path("ns/pid")).ok();
        own.is_some() && own != std::fs::read_link("/proc/self/ns/pid").ok()
    }

    /// The id thread `tid` (as this tool sees it) has in the process's own PID namespace:
    /// the last id of its `NSpid`. The same id when the namespaces are the same.
    pub fn own_tid(&self, tid: i32) -> Option<i32> {
        if !self.in_other_pid_namespace() {
            return Some(tid);
        }
        let status = read_proc_file(self.proc_path(&format!("task/{tid}/status"))).ok()?;
        status.lines().find_map(|l| l.strip_prefix("NSpid:"))?.split_whitespace().last()?.parse().ok()
    }

    /// The thread this tool calls `tid` whose own id (in the process's PID namespace) is
    /// `own`, if it exists. The threads' ids are read once, and again for an id not
    /// among them (a thread created meanwhile).
    pub fn host_tid(&self, own: i32) -> Option<i32> {
        if !self.in_other_pid_namespace() {
            return Some(own);
        }
        let mut cache = self.own_tids.lock().unwrap_or_else(|p| p.into_inner());
        for fresh in [false, true] {
            if fresh || cache.is_none() {
                let map = self.threads().ok()?.into_iter().filter_map(|t| Some((t, self.own_tid(t)?))).collect();
                *cache = Some(map);
            }
            if let Some(&(host, _)) = cache.as_ref()?.iter().find(|&&(_, o)| o == own) {
                return Some(host);
            }
        }
        None
    }

    /// Thread ids, from `/proc/PID/task`.
    pub fn threads(&self) -> Result<Vec<i32>> {
        let dir = std::fs::read_dir(self.proc_path("task"))
            .map_err(|e| TriggerError::Target { pid: self.pid, what: format!("cannot list threads: {e}") })?;
        let mut tids: Vec<i32> = dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
        tids.sort_unstable();
        Ok(tids)
    }

    /// A thread's scheduler state letter and, when blocked, the system call it is in.
    pub fn thread_state(&self, tid: i32) -> Option<(char, Option<i64>)> {
        let stat = read_proc_file(self.proc_path(&format!("task/{tid}/stat"))).ok()?;
        // The command name may contain spaces and parentheses: the state follows the last ')'.
        let state = stat[stat.rfind(')')? + 1..].trim_start().chars().next()?;
        let syscall = read_proc_file(self.proc_path(&format!("task/{tid}/syscall")))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<i64>().ok());
        Some((state, syscall))
    }

    /// The process tracing thread `tid`, if any (`TracerPid` of its status).
    pub fn tracer(&self, tid: i32) -> Option<i32> {
        let status = read_proc_file(self.proc_path(&format!("task/{tid}/status"))).ok()?;
        let t: i32 = status.lines().find_map(|l| l.strip_prefix("TracerPid:"))?.trim().parse().ok()?;
        (t != 0).then_some(t)
    }

    /// For a process that has exited but not been reaped (a zombie): its exit status as
    /// `waitpid` would give it (`/proc/PID/stat` field 52). `None` while it runs or once
    /// it is gone.
    pub fn exit_status(&self) -> Option<i32> {
        let stat = read_proc_file(self.proc_path("stat")).ok()?;
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3 (state).
        if fields.first() != Some(&"Z") {
            return None;
        }
        fields.get(52 - 3)?.parse().ok()
    }

    /// Whether the process still exists and is not a zombie.
    pub fn alive(&self) -> bool {
        pid_alive(self.pid)
    }

    /// Whether the thread is the parent of a `vfork` (or a `clone`/`clone3` with
    /// `CLONE_VFORK`, as `posix_spawn` does) whose child still runs on its memory and
    /// stack: nothing may be written below its stack pointer.
    pub fn in_vfork(&self, tid: i32) -> bool {
        const CLONE_VFORK: u64 = 0x4000;
        let Ok(text) = read_proc_file(self.proc_path(&format!("task/{tid}/syscall"))) else { return false };
        let mut f = text.split_whitespace();
        let nr = f.next().and_then(|n| n.parse::<i64>().ok());
        let arg0 = f.next().and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok()).unwrap_or(0);
        match nr {
            Some(58) => true,                    // vfork
            Some(56) => arg0 & CLONE_VFORK != 0, // clone(flags, ...)
            Some(435) => self.read_array::<8>(arg0).is_ok_and(|b| u64::from_le_bytes(b) & CLONE_VFORK != 0), // clone3(&args)
            _ => false,
        }
    }

    pub fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0; len];
        self.mem.read_exact_at(&mut buf, addr).map_err(|e| TriggerError::Target {
            pid: self.pid,
            what: format!("cannot read {len} bytes at {addr:#x}: {e}"),
        })?;
        Ok(buf)
    }

    pub fn read_array<const N: usize>(&self, addr: u64) -> Result<[u8; N]> {
        Ok(self.read(addr, N)?.try_into().expect("read returns N bytes"))
    }

    /// Read a `u64` of the target.
    pub fn read_u64(&self, addr: u64) -> Result<u64> {
        self.read_array::<8>(addr).map(u64::from_le_bytes)
    }

    /// Take with `read` a copy of what the runtime publishes under the sequence counter
    /// at `seq` (odd while it rewrites it): retried until the copy lies between two equal
    /// even counts; `None` when it kept changing.
    pub fn read_consistent<T>(&self, seq: u64, mut read: impl FnMut() -> Result<T>) -> Result<Option<T>> {
        for _ in 0..1000 {
            let before = self.read_u64(seq)?;
            if before % 2 == 1 {
                std::thread::yield_now();
                continue;
            }
            let copy = read()?;
            if self.read_u64(seq)? == before {
                return Ok(Some(copy));
            }
        }
        Ok(None)
    }

    /// Write bytes through `/proc/PID/mem`: this works on read-only code pages without
    /// changing their protection. It is NOT one atomic store: callers that write code
    /// that may be running write one byte at a time in a safe order.
    pub fn write(&self, addr: u64, bytes: &[u8]) -> Result<()> {
        self.mem.write_all_at(bytes, addr).map_err(|e| TriggerError::Target {
            pid: self.pid,
            what: format!("cannot write {} bytes at {addr:#x}: {e}", bytes.len()),
        })
    }

    /// Where to read the file behind `mapping`, best first: the mapped file itself
    /// (`map_files`, right even if the path was replaced or deleted since), then its path
    /// as the process sees it (`root`, for a process in another mount namespace).
    pub fn mapped_file(&self, mapping: &Mapping) -> [PathBuf; 2] {
        [
            self.proc_path(&format!("map_files/{:x}-{:x}", mapping.start, mapping.end)),
            self.proc_path(&format!("root{}", mapping.path)),
        ]
    }

    /// Where to read the file of a mapped object (see `mapped_file`).
    pub fn object_file(&self, obj: &MappedObject) -> [PathBuf; 2] {
        let header =
            Mapping { start: obj.header, end: obj.header_end, perms: String::new(), offset: 0, path: obj.path.clone() };
        self.mapped_file(&header)
    }

    /// Every file-backed object mapped into the process, with its base and build-id.
    pub fn objects(&self) -> Result<Vec<MappedObject>> {
        let maps = self.mappings()?;
        let mut out: Vec<MappedObject> = Vec::new();
        for m in maps.iter().filter(|m| m.offset == 0 && m.path.starts_with('/')) {
            if out.iter().any(|o| o.path == m.path) {
                continue;
            }
            if let Some((base, build_id)) = self.elf_identity(m.start) {
                out.push(MappedObject { path: m.path.clone(), base, header: m.start, header_end: m.end, build_id });
            }
        }
        Ok(out)
    }

    /// The load base and build-id of the ELF object whose header is mapped at `header`.
    fn elf_identity(&self, header: u64) -> Option<(u64, Vec<u8>)> {
        // The program headers follow the ELF header in its first page, as linkers lay
        // them out: one read for both (the first 512 bytes; more only when needed).
        let first = self.read(header, 512).or_else(|_| self.read(header, 64)).ok()?;
        let eh = &first[..64];
        if eh[..4] != *b"\x7fELF" || eh[4] != 2 {
            return None;
        }
        let u16_at = |b: &[u8], i: usize| u16::from_le_bytes([b[i], b[i + 1]]) as u64;
        let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        let (phoff, phentsize, phnum) = (u64_at(eh, 32), u16_at(eh, 54), u16_at(eh, 56));
        if phentsize < 56 || phnum > 256 {
            return None;
        }
        let ph_len = phentsize * phnum;
        let ph = match first.get(phoff as usize..(phoff + ph_len) as usize) {
            Some(ph) => ph.to_vec(),
            None => self.read(header + phoff, ph_len as usize).ok()?,
        };
        let headers: Vec<&[u8]> = ph.chunks_exact(phentsize as usize).collect();
        // The first PT_LOAD maps file offset 0 at its p_vaddr: base = header - p_vaddr.
        let first_load = headers.iter().find(|h| u32_at(h, 0) == 1)?;
        let base = header.wrapping_sub(u64_at(first_load, 16) & !0xfff);
        let mut build_id = Vec::new();
        for h in headers.iter().filter(|h| u32_at(h, 0) == 4) {
            let (vaddr, memsz) = (u64_at(h, 16), u64_at(h, 40));
            if memsz > 1 << 16 {
                continue;
            }
            if let Ok(notes) = self.read(base + vaddr, memsz as usize) {
                if let Some(id) = pulp_meta::note::gnu_build_id(&notes) {
                    build_id = id.to_vec();
                    break;
                }
            }
        }
        Some((base, build_id))
    }
}

/// When process `pid` started (`/proc/PID/stat` field 22), if it exists.
/// Whether process `pid` exists and is not a zombie (exited, not yet reaped).
pub fn pid_alive(pid: i32) -> bool {
    read_proc_file(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| !s[i + 1..].trim_start().starts_with('Z')))
        .unwrap_or(false)
}

pub fn start_time(pid: i32) -> Option<u64> {
    let stat = read_proc_file(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields resume after the last ')'.
    stat[stat.rfind(')')? + 1..].split_whitespace().nth(22 - 3)?.parse().ok()
}

/// Read a `/proc` file in few system calls. `/proc` files report a size of 0, so
/// `std::fs::read_to_string` starts with a 32-byte probe and grows its reads from there
/// (a `maps` file took a dozen `read`s); this asks for 8 KiB at once, doubling. Bytes that
/// are not UTF-8 (a path) are replaced, not an error.
pub fn read_proc_file(path: impl AsRef<Path>) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    Ok(String::from_utf8(buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

fn parse_maps_line(line: &str) -> Option<Mapping> {
    let mut it = line.splitn(6, ' ');
    let range = it.next()?;
    let perms = it.next()?.to_string();
    let offset = u64::from_str_radix(it.next()?, 16).ok()?;
    let _dev = it.next()?;
    let _inode = it.next()?;
    let path = it.next().unwrap_or("").trim_start().to_string();
    let (s, e) = range.split_once('-')?;
    Some(Mapping {
        start: u64::from_str_radix(s, 16).ok()?,
        end: u64::from_str_radix(e, 16).ok()?,
        perms,
        offset,
        path,
    })
}

/// The object of `objects` (mapped by process `pid`) that `target` names, the way the
/// dynamic linker names objects: the path it maps or its build-id in hex; a path that
/// leads to the same file in the process's view (a symlink such as the soname link
/// `libz.so.1` of `libz.so.1.2.13`); its file name; its soname (`DT_SONAME`).
pub fn find_object<'a>(pid: i32, objects: &'a [MappedObject], target: &str) -> Option<&'a MappedObject> {
    let mapped = |o: &MappedObject| o.path.trim_end_matches(" (deleted)").to_string();
    if let Some(o) = objects.iter().find(|o| mapped(o) == target || hex(&o.build_id) == target) {
        return Some(o);
    }
    let seen = |path: &str| {
        let relative = path.trim_start_matches('/');
        std::fs::metadata(format!("/proc/{pid}/root/{relative}")).ok().map(|m| (m.dev(), m.ino()))
    };
    if target.contains('/') {
        let at = std::path::absolute(target).ok();
        if let Some(file) = at.as_ref().and_then(|p| p.to_str()).and_then(seen) {
            if let Some(o) = objects.iter().find(|o| seen(&mapped(o)) == Some(file)) {
                return Some(o);
            }
        }
    }
    let name = file_name(target);
    objects.iter().find(|o| file_name(&o.path) == name).or_else(|| {
        objects.iter().find(|o| {
            let path = format!("/proc/{pid}/root/{}", mapped(o).trim_start_matches('/'));
            std::fs::File::open(path).ok().and_then(|f| ElfFile::read(&f)?.soname()).as_deref() == Some(name)
        })
    })
}

/// The file name of a mapped or recorded path, without a ` (deleted)` suffix.
pub fn file_name(path: &str) -> &str {
    let path = path.trim_end_matches(" (deleted)");
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines_with_and_without_paths() {
        let m = parse_maps_line(
            "7f1c2a000000-7f1c2a022000 r-xp 00001000 fd:01 1234    /usr/lib/x86_64-linux-gnu/libc.so.6",
        )
        .unwrap();
        assert_eq!((m.start, m.end, m.offset), (0x7f1c2a000000, 0x7f1c2a022000, 0x1000));
        assert_eq!(m.path, "/usr/lib/x86_64-linux-gnu/libc.so.6");
        let anon = parse_maps_line("7ffd1000-7ffd2000 rw-p 00000000 00:00 0 ").unwrap();
        assert_eq!(anon.path, "");
    }

    #[test]
    fn reads_own_objects_and_build_ids() {
        let me = Process::open(std::process::id() as i32).unwrap();
        let objs = me.objects().unwrap();
        let libc = objs.iter().find(|o| o.path.contains("libc.so")).expect("libc mapped");
        assert!(!libc.build_id.is_empty());
        assert_eq!(
            Process::open(i32::MAX).err().map(|e| e.to_string()),
            Some(format!("no process with PID {}", i32::MAX))
        );
    }
}
