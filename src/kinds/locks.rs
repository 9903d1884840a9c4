//! File locks and leases held by the tree (`Files.locks`, proto/locks.proto).
//!
//! Dump: the kernel shows, in `/proc/PID/fdinfo/FD`, the "lock:" lines of
//! the locks on that fd's open file description (fs/locks.c
//! `show_fd_locks`): POSIX record locks of the process's fd table that
//! were taken through this description, and the OFD locks, flock locks and
//! leases of the description itself (whatever process shows it). Each lock
//! is recorded once, with the process and fd that take it again: a POSIX
//! lock by its owner (or, for an fd table shared with CLONE_FILES, by the
//! process of that table the kernel names), the others by the process the
//! kernel names if it holds the description, else by the first process
//! of the tree that does. `/proc/locks` is the cross-check: a POSIX lock
//! of a tree process that no fdinfo showed is refused, as is everything
//! that cannot be put back exactly (see [`refusal`]). A process waiting
//! for a lock (F_SETLKW, flock without LOCK_NB) needs nothing: its
//! interrupted call is restarted after the restore and waits again.
//!
//! Restore ([`restore`]): once every fd table is complete and the keepers
//! are closed (closing an fd drops the POSIX locks its process holds on
//! that file), each lock is taken again in its process with a
//! non-blocking call: F_SETLK, F_OFD_SETLK, flock(LOCK_NB), and last
//! F_SETLEASE, whose file owner (F_SETOWN_EX), which F_SETLEASE changes,
//! is put back. A lock that cannot be taken (someone outside the tree holds
//! a conflicting one now) fails the restore, naming the file and range.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::error::{Error, Result};
use crate::image::proto::{FdTable, FileLock, Files, LockKind};
use crate::image::validate::{bad, count};
use crate::kinds::files::FilesIndex;
use crate::procfs::{self, FdInfo};
use crate::remote::Calls;

/// Most locks files.img may hold.
const MAX_LOCKS: usize = 1 << 20;

/// One lock line of fdinfo or `/proc/locks`, e.g.
/// `1: POSIX  ADVISORY  WRITE 1234 08:02:5 0 EOF` or
/// `2: -> FLOCK  ADVISORY  WRITE 99 00:2a:17 0 EOF` (a waiter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockLine {
    /// A request waiting for this lock ("->"), not a lock.
    pub blocked: bool,
    /// POSIX, OFDLCK, FLOCK, LEASE (or DELEG, ACCESS, UNKNOWN ...).
    pub class: String,
    /// ADVISORY (MANDATORY on old kernels) for locks; ACTIVE, BREAKING or
    /// BREAKER for leases.
    pub mode: String,
    /// READ, WRITE (UNLCK for a lease being broken to nothing).
    pub ty: String,
    /// The process the kernel names (-1 for OFD locks, 0 if not visible).
    pub pid: i32,
    /// "MAJ:MIN" of the file's device, and its inode.
    pub dev: String,
    pub ino: u64,
    pub start: u64,
    /// Last byte, None for EOF.
    pub end: Option<u64>,
}

impl LockLine {
    /// Parses one line, with or without its leading "N:" counter.
    pub fn parse(line: &str) -> Option<LockLine> {
        let mut t = line.split_whitespace().peekable();
        if t.peek().is_some_and(|w| w.ends_with(':')) {
            t.next();
        }
        let blocked = t.peek() == Some(&"->");
        if blocked {
            t.next();
        }
        let class = t.next()?.to_string();
        let mode = t.next()?.to_string();
        let ty = t.next()?.to_string();
        let pid = t.next()?.parse().ok()?;
        let (dev, ino) = t.next()?.rsplit_once(':')?;
        let ino = ino.parse().ok()?;
        let start = t.next()?.parse().ok()?;
        let end = match t.next()? {
            "EOF" => None,
            e => Some(e.parse().ok()?),
        };
        if t.next().is_some() {
            return None;
        }
        Some(LockLine {
            blocked,
            class,
            mode,
            ty,
            pid,
            dev: dev.to_string(),
            ino,
            start,
            end,
        })
    }

    fn kind(&self) -> LockKind {
        match self.class.as_str() {
            "POSIX" => LockKind::LOCK_POSIX,
            "OFDLCK" => LockKind::LOCK_OFD,
            "FLOCK" => LockKind::LOCK_FLOCK,
            "LEASE" => LockKind::LOCK_LEASE,
            _ => LockKind::LOCK_UNKNOWN,
        }
    }

    fn range(&self) -> String {
        match self.end {
            Some(e) => format!("bytes {}-{e}", self.start),
            None => format!("bytes {}-EOF", self.start),
        }
    }
}

/// The lock lines of one fdinfo. A line the parser does not understand is
/// an error: a lock cairn cannot read is a lock it would drop.
fn lines_of(pid: i32, fd: i32, info: &FdInfo) -> Result<Vec<LockLine>> {
    info.extra
        .iter()
        .filter(|(k, _)| k == "lock")
        .map(|(_, v)| {
            LockLine::parse(v).ok_or_else(|| {
                Error::unsupported(pid, format!("fd {fd}: lock line cairn cannot read: {v}"))
            })
        })
        .collect()
}

/// Why the lock `l` on fd target `target` cannot be restored exactly, or
/// None. `tree`: the processes of the tree.
pub fn refusal(l: &LockLine, target: &str, tree: &HashSet<i32>) -> Option<String> {
    let kind = l.kind();
    if kind == LockKind::LOCK_UNKNOWN {
        return Some(format!("a {} lock, which cairn cannot take back", l.class));
    }
    if kind == LockKind::LOCK_LEASE {
        if l.mode == "BREAKING" {
            return Some(
                "its lease is being broken (another process opened the file and waits for the \
                 holder to give the lease up): a lease cannot be put back in that state; retry \
                 once the break is over"
                    .into(),
            );
        }
        if l.mode != "ACTIVE" {
            return Some(format!(
                "a lease in state {}, which cairn cannot take back",
                l.mode
            ));
        }
    } else if l.mode != "ADVISORY" {
        return Some(format!(
            "a {} {} lock, which cairn cannot take back",
            l.mode, l.class
        ));
    }
    if l.ty != "READ" && l.ty != "WRITE" {
        return Some(format!(
            "a {} {} lock, which cairn cannot take back",
            l.ty, l.class
        ));
    }
    if !target.starts_with('/') {
        return Some(format!(
            "a {} lock, and cairn takes locks back only on files, directories, FIFOs and \
             memfds",
            l.class
        ));
    }
    let by_description = matches!(kind, LockKind::LOCK_FLOCK | LockKind::LOCK_LEASE);
    if by_description && l.pid > 0 && !tree.contains(&l.pid) && crate::sys::task::pid_exists(l.pid)
    {
        return Some(format!(
            "its {} lock was taken by pid {}, outside the tree, which shares this open file \
             description: the restored tree gets a description of its own, so the lock could \
             not stay shared with pid {}",
            l.class, l.pid, l.pid
        ));
    }
    None
}

fn check_fd(
    pid: i32,
    fd: i32,
    target: &str,
    lines: &[LockLine],
    tree: &HashSet<i32>,
) -> Result<()> {
    for l in lines {
        if let Some(why) = refusal(l, target, tree) {
            return Err(Error::unsupported(
                pid,
                format!("fd {fd} ({target}): {why}"),
            ));
        }
    }
    Ok(())
}

/// The lines of `/proc/locks` (the whole system's locks).
fn system_locks() -> Result<Vec<LockLine>> {
    let text = procfs::read_proc_string("/proc/locks")?;
    Ok(text.lines().filter_map(LockLine::parse).collect())
}

/// Before anything is frozen: refuses the locks of `pids` that cannot be
/// restored exactly (a lease being broken, a lock of a kind cairn cannot
/// take back, a flock or lease shared with a process outside the tree).
/// Nothing to do when the system holds no lock at all.
pub fn precheck(pids: &[i32]) -> Result<()> {
    if system_locks()?.is_empty() {
        return Ok(());
    }
    let tree: HashSet<i32> = pids.iter().copied().collect();
    for &pid in pids {
        // A process that exits meanwhile is the frozen pass's business.
        let Ok(fds) = procfs::read_fds(pid) else {
            continue;
        };
        for (fd, target) in fds {
            let Ok(info) = procfs::read_fdinfo(pid, fd) else {
                continue;
            };
            check_fd(pid, fd, &target, &lines_of(pid, fd, &info)?, &tree)?;
        }
    }
    Ok(())
}

/// (owner table or 0, description, kind, start, end, write): one lock.
type LockKey = (i32, u32, i32, u64, Option<u64>, bool);

/// One process of the frozen tree as [`dump`] and [`restore`] see it: its
/// pid, the pid whose fd table it shares (0: its own), its fd table (None
/// for a zombie).
pub type TableRef<'a> = (i32, u32, Option<&'a FdTable>);

/// Dump (the tree frozen): every lock the tree holds, each once, with the
/// process and fd that take it again.
pub fn dump(tables: &[TableRef]) -> Result<Vec<FileLock>> {
    let tree: HashSet<i32> = tables.iter().map(|t| t.0).collect();
    dump_with(tables, procfs::read_proc_locks(|p| tree.contains(&p)))
}

/// /proc/locks for a frozen tree, read by a thread started before the
/// freeze. Every read of /proc/locks takes the kernel's lock-list
/// semaphore for writing (`locks_start`: `percpu_down_write`), and the
/// first one after a quiet spell waits for an RCU grace period (10-25 ms
/// here) before it can; while the tree is being frozen the thread reads
/// the file every few milliseconds, so the read that counts, once the
/// tree is frozen, finds the semaphore's slow mode still on and takes
/// well under a millisecond.
pub struct ProcLocks {
    tree: Option<std::sync::mpsc::Sender<HashSet<i32>>>,
    thread: Option<std::thread::JoinHandle<Result<String>>>,
}

/// How often the thread of [`ProcLocks`] reads /proc/locks until it is
/// given the tree: well within a grace period.
const WARM_EVERY: std::time::Duration = std::time::Duration::from_millis(4);

impl ProcLocks {
    /// Starts the thread; it stops by itself when dropped unused.
    pub fn start() -> ProcLocks {
        let (tx, rx) = std::sync::mpsc::channel::<HashSet<i32>>();
        let thread = std::thread::spawn(move || loop {
            use std::sync::mpsc::RecvTimeoutError;
            match rx.recv_timeout(WARM_EVERY) {
                Ok(tree) => return procfs::read_proc_locks(|p| tree.contains(&p)),
                Err(RecvTimeoutError::Timeout) => {
                    let _ = std::fs::read("/proc/locks");
                }
                Err(RecvTimeoutError::Disconnected) => return Ok(String::new()),
            }
        });
        ProcLocks {
            tree: Some(tx),
            thread: Some(thread),
        }
    }

    /// The tree is frozen: the thread reads the file for it now.
    pub fn frozen(&mut self, tree: HashSet<i32>) {
        if let Some(tx) = self.tree.take() {
            let _ = tx.send(tree);
        }
    }

    /// The text read for the tree (after [`ProcLocks::frozen`]).
    pub fn text(&mut self) -> Result<String> {
        let failed = |why: &str| {
            Error::sys(
                0,
                "read /proc/locks",
                std::io::Error::other(why.to_string()),
            )
        };
        if self.tree.is_some() {
            return Err(failed("the tree was never given"));
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(failed("the reading thread panicked"))),
            None => Err(failed("read already")),
        }
    }
}

/// [`dump`] with the text of /proc/locks read by the caller
/// (`procfs::read_proc_locks` for the tree), any time since the tree was
/// frozen (its POSIX locks cannot change meanwhile); the dump's comes
/// from [`ProcLocks`].
pub fn dump_with(tables: &[TableRef], proc_locks: Result<String>) -> Result<Vec<FileLock>> {
    let system: Vec<LockLine> = proc_locks?.lines().filter_map(LockLine::parse).collect();
    if system.is_empty() {
        return Ok(Vec::new());
    }
    let tree: HashSet<i32> = tables.iter().map(|t| t.0).collect();
    let mut out: Vec<FileLock> = Vec::new();
    // (owner table or 0, desc, kind, start, end, write) -> index in out.
    let mut seen: HashMap<LockKey, usize> = HashMap::new();
    // (shown pid, dev, ino, start, end, write) of every POSIX lock found.
    let mut posix_found = HashSet::new();
    for &(pid, shared_with, table) in tables {
        let Some(table) = table else { continue };
        if shared_with != 0 {
            continue;
        }
        // The processes that share this fd table (CLONE_FILES).
        let sharers: HashSet<i32> = tables
            .iter()
            .filter(|t| t.0 == pid || t.1 == pid as u32)
            .map(|t| t.0)
            .collect();
        for f in &table.fds {
            let fd = f.fd as i32;
            let info = procfs::read_fdinfo(pid, fd)?;
            let lines = lines_of(pid, fd, &info)?;
            if lines.is_empty() {
                continue;
            }
            let target = procfs::read_link(format!("/proc/{pid}/fd/{fd}"))?;
            check_fd(pid, fd, &target, &lines, &tree)?;
            for l in lines.iter().filter(|l| !l.blocked) {
                let kind = l.kind();
                let write = l.ty == "WRITE";
                let posix = kind == LockKind::LOCK_POSIX;
                let owner = if posix { pid } else { 0 };
                let key = (owner, f.desc_id, kind as i32, l.start, l.end, write);
                // The process named by the kernel takes it if it can.
                let named = sharers.contains(&l.pid);
                if posix {
                    posix_found.insert((l.pid, l.dev.clone(), l.ino, l.start, l.end, write));
                }
                if let Some(&i) = seen.get(&key) {
                    if named && out[i].pid as i32 != l.pid {
                        out[i].pid = l.pid as u32;
                        out[i].fd = f.fd;
                    }
                    continue;
                }
                let mut k = FileLock::new();
                k.kind = kind.into();
                k.write = write;
                k.start = l.start;
                k.end = l.end.unwrap_or(0);
                k.to_eof = l.end.is_none();
                k.pid = if named { l.pid as u32 } else { pid as u32 };
                k.fd = f.fd;
                k.desc_id = f.desc_id;
                k.shown_pid = l.pid;
                seen.insert(key, out.len());
                out.push(k);
            }
        }
    }
    // A POSIX lock of a tree process that no fdinfo of the tree showed
    // would be dropped: refuse it.
    for l in &system {
        if l.blocked || l.class != "POSIX" || !tree.contains(&l.pid) {
            continue;
        }
        let write = l.ty == "WRITE";
        if !posix_found.contains(&(l.pid, l.dev.clone(), l.ino, l.start, l.end, write)) {
            return Err(Error::unsupported(
                l.pid,
                format!(
                    "holds a POSIX {} lock on {}, inode {} of device {}, that none of the \
                     tree's fds shows (taken through a descriptor shared with a process \
                     outside the tree?): it could not be taken back",
                    l.ty.to_lowercase(),
                    l.range(),
                    l.ino,
                    l.dev
                ),
            ));
        }
    }
    Ok(out)
}

/// For `kinds::contents`: the files the tree holds a lease on, by (device,
/// inode), with a (pid, fd) of the leased description. Such a file must not
/// be opened while the tree is dumped: an open breaks a write lease (and
/// waits up to the lease break time for the frozen holder). It is read
/// through the leased description itself.
pub fn leased(files: &Files) -> HashMap<(u64, u64), (i32, i32)> {
    let stats: HashMap<u32, (u64, u64)> = files
        .descs
        .iter()
        .filter_map(|d| match &d.kind {
            Some(crate::image::proto::file_desc::Kind::Reg(r)) => {
                r.stat.as_ref().map(|s| (d.id, (s.dev, s.ino)))
            }
            _ => None,
        })
        .collect();
    files
        .locks
        .iter()
        .filter(|l| l.kind.enum_value() == Ok(LockKind::LOCK_LEASE))
        .filter_map(|l| Some((*stats.get(&l.desc_id)?, (l.pid as i32, l.fd as i32))))
        .collect()
}

/// For `kinds::contents`: fd `fd` of `pid` (a leased description) in
/// cairn, to be read at offsets; an error if it is not open for reading.
pub fn readable(pid: i32, fd: i32) -> std::io::Result<std::fs::File> {
    let f = std::fs::File::from(crate::sys::sock::pidfd_getfd(pid, fd)?);
    let fl = nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&f),
        nix::fcntl::FcntlArg::F_GETFL,
    )
    .map_err(std::io::Error::from)?;
    if fl & libc::O_ACCMODE == libc::O_WRONLY {
        return Err(std::io::Error::other(
            "the leased description is write-only and the file is not opened: that would \
             break the lease",
        ));
    }
    Ok(f)
}

// ---------------------------------------------------------------- images

/// Checks `files.locks` (pure): kinds known, ranges sane, flock locks and
/// leases whole-file, each naming a description of files.img.
pub fn validate(f: &Files, path: &Path) -> Result<()> {
    count(path, "files", "locks", f.locks.len(), MAX_LOCKS)?;
    let ids: HashSet<u32> = f.descs.iter().map(|d| d.id).collect();
    for (i, l) in f.locks.iter().enumerate() {
        let obj = format!("lock {i}");
        let kind = match l.kind.enum_value() {
            Ok(LockKind::LOCK_UNKNOWN) | Err(_) => {
                return Err(bad(path, &obj, "kind", l.kind.value()));
            }
            Ok(k) => k,
        };
        if l.start > i64::MAX as u64 || l.end > i64::MAX as u64 {
            return Err(bad(path, &obj, "start", "beyond the largest file offset"));
        }
        if !l.to_eof && l.end < l.start {
            return Err(bad(
                path,
                &obj,
                "end",
                format!("{} before start {}", l.end, l.start),
            ));
        }
        let whole = l.start == 0 && l.to_eof;
        if matches!(kind, LockKind::LOCK_FLOCK | LockKind::LOCK_LEASE) && !whole {
            return Err(bad(
                path,
                &obj,
                "start",
                "a flock lock or lease covers a whole file",
            ));
        }
        if l.pid == 0 || l.pid > i32::MAX as u32 {
            return Err(bad(path, &obj, "pid", l.pid));
        }
        if l.fd >= crate::image::validate::FD_MAX {
            return Err(bad(path, &obj, "fd", l.fd));
        }
        if !ids.contains(&l.desc_id) {
            return Err(bad(
                path,
                &obj,
                "desc_id",
                format!("no description {} in files.img", l.desc_id),
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- restore

fn kind_name(k: LockKind) -> &'static str {
    match k {
        LockKind::LOCK_POSIX => "POSIX",
        LockKind::LOCK_OFD => "OFD",
        LockKind::LOCK_FLOCK => "flock",
        LockKind::LOCK_LEASE => "lease",
        LockKind::LOCK_UNKNOWN => "unknown",
    }
}

/// "bytes 20-29", "bytes 100-EOF", or "the whole file".
fn range_of(l: &FileLock) -> String {
    match (l.start, l.to_eof) {
        (0, true) => "the whole file".into(),
        (s, true) => format!("bytes {s}-EOF"),
        (s, false) => format!("bytes {s}-{}", l.end),
    }
}

/// Checks that every lock names a live process of the tree whose fd table
/// has `fd` on the lock's description (a shared table is its owner's).
fn check_plan(locks: &[FileLock], tables: &[TableRef]) -> Result<()> {
    let by_pid: HashMap<i32, &TableRef> = tables.iter().map(|t| (t.0, t)).collect();
    for l in locks {
        let pid = l.pid as i32;
        let Some(&&(_, shared_with, table)) = by_pid.get(&pid) else {
            return Err(Error::Restore(format!(
                "a {} lock is to be taken by pid {pid}, which is not in the tree",
                kind_name(l.kind.enum_value_or_default())
            )));
        };
        let table = if shared_with != 0 {
            by_pid.get(&(shared_with as i32)).and_then(|t| t.2)
        } else {
            table
        };
        let ok =
            table.is_some_and(|t| t.fds.iter().any(|f| f.fd == l.fd && f.desc_id == l.desc_id));
        if !ok {
            return Err(Error::Restore(format!(
                "pid {pid}: a {} lock is to be taken on fd {}, which does not hold description {}",
                kind_name(l.kind.enum_value_or_default()),
                l.fd,
                l.desc_id
            )));
        }
    }
    Ok(())
}

/// Takes every lock of `locks` again, each in its process (`calls`, by
/// pid), once every fd table is in place and nothing will close an fd
/// any more. Leases last: F_SETLEASE makes the process the file's owner,
/// which is put back as it was.
pub fn restore(
    locks: &[FileLock],
    tables: &[TableRef],
    idx: &FilesIndex,
    calls: &mut HashMap<i32, &mut dyn Calls>,
) -> Result<()> {
    if locks.is_empty() {
        return Ok(());
    }
    check_plan(locks, tables)?;
    let (leases, others): (Vec<&FileLock>, Vec<&FileLock>) = locks
        .iter()
        .partition(|l| l.kind.enum_value() == Ok(LockKind::LOCK_LEASE));
    for l in others.into_iter().chain(leases) {
        let pid = l.pid as i32;
        let c = calls
            .get_mut(&pid)
            .ok_or_else(|| Error::Restore(format!("pid {pid}: no process to take its locks")))?;
        take(&mut **c, l).map_err(|e| {
            let file = idx
                .path(l.desc_id)
                .unwrap_or_else(|| format!("description {}", l.desc_id));
            let rw = if l.write { "write" } else { "read" };
            let (what, why) = match l.kind.enum_value_or_default() {
                LockKind::LOCK_LEASE => (
                    format!("{rw} lease"),
                    "another process has the file open or holds a lease on it now",
                ),
                k => (
                    format!("{} {rw} lock on {}", kind_name(k), range_of(l)),
                    "another process holds a conflicting lock on it now",
                ),
            };
            let why = match e.raw_os_error() {
                Some(libc::EAGAIN) => format!("{e}: {why}"),
                _ => e.to_string(),
            };
            Error::Restore(format!(
                "pid {pid}: fd {} ({file}): cannot take back its {what}: {why}",
                l.fd
            ))
        })?;
    }
    Ok(())
}

/// Takes lock `l` in the process `c` runs in.
fn take(c: &mut dyn Calls, l: &FileLock) -> std::io::Result<()> {
    let fd = l.fd as u64;
    let ty = if l.write {
        libc::F_WRLCK
    } else {
        libc::F_RDLCK
    };
    let len = if l.to_eof { 0 } else { l.end - l.start + 1 };
    match l.kind.enum_value_or_default() {
        LockKind::LOCK_POSIX => c.lock_range(fd, libc::F_SETLK, ty as i16, l.start, len),
        LockKind::LOCK_OFD => c.lock_range(fd, libc::F_OFD_SETLK, ty as i16, l.start, len),
        LockKind::LOCK_FLOCK => {
            let op = if l.write {
                libc::LOCK_EX
            } else {
                libc::LOCK_SH
            };
            c.lock_flock(fd, op | libc::LOCK_NB)
        }
        LockKind::LOCK_LEASE => {
            let other = |e: Error| std::io::Error::other(e.to_string());
            // F_SETLEASE makes the taker the file's owner (lease breaks
            // signal it), as it did when the holder took the lease; an
            // owner restored before (F_SETOWN_EX) is put back.
            let (oty, opid) = c.lock_owner_get(fd).map_err(other)?;
            c.lock_lease(fd, ty)?;
            if opid != 0 {
                c.lock_owner_set(fd, oty, opid).map_err(other)?;
            }
            Ok(())
        }
        LockKind::LOCK_UNKNOWN => Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fdinfo_and_proc_locks_lines() {
        let l = LockLine::parse("1: POSIX  ADVISORY  WRITE 1234 08:02:5 0 EOF").unwrap();
        assert_eq!(
            l,
            LockLine {
                blocked: false,
                class: "POSIX".into(),
                mode: "ADVISORY".into(),
                ty: "WRITE".into(),
                pid: 1234,
                dev: "08:02".into(),
                ino: 5,
                start: 0,
                end: None,
            }
        );
        let l = LockLine::parse("OFDLCK ADVISORY  READ  -1 00:2a:77 20 29").unwrap();
        assert_eq!(
            (l.class.as_str(), l.pid, l.start, l.end),
            ("OFDLCK", -1, 20, Some(29))
        );
        let l = LockLine::parse("3: -> FLOCK  ADVISORY  WRITE 99 fd:01:17 0 EOF").unwrap();
        assert!(l.blocked);
        assert_eq!((l.dev.as_str(), l.ino), ("fd:01", 17));
        let l = LockLine::parse("4: LEASE  BREAKING  UNLCK 7 00:2a:9 0 EOF").unwrap();
        assert_eq!((l.mode.as_str(), l.ty.as_str()), ("BREAKING", "UNLCK"));
        for bad in [
            "",
            "1: POSIX",
            "1: POSIX  ADVISORY  WRITE x 08:02:5 0 EOF",
            "1: POSIX  *NOINODE*  WRITE 3 <none>:0 0 EOF trailing",
            "1: POSIX  ADVISORY  WRITE 3 08:02:5 0 9 extra",
        ] {
            assert!(LockLine::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn refuses_what_cannot_come_back() {
        let tree: HashSet<i32> = [100, 101].into_iter().collect();
        let ok = |s: &str, target: &str| refusal(&LockLine::parse(s).unwrap(), target, &tree);
        assert_eq!(
            ok("1: POSIX  ADVISORY  WRITE 100 08:02:5 0 EOF", "/f"),
            None
        );
        assert_eq!(ok("1: OFDLCK ADVISORY  READ -1 08:02:5 0 9", "/f"), None);
        assert_eq!(ok("1: LEASE  ACTIVE    READ 101 08:02:5 0 EOF", "/f"), None);
        assert_eq!(
            ok("1: FLOCK  ADVISORY  WRITE 101 08:02:5 0 EOF", "/d"),
            None
        );
        let why = ok("1: LEASE  BREAKING  READ 100 08:02:5 0 EOF", "/f").unwrap();
        assert!(why.contains("being broken"), "{why}");
        let why = ok("1: POSIX  MANDATORY WRITE 100 08:02:5 0 EOF", "/f").unwrap();
        assert!(why.contains("MANDATORY POSIX"), "{why}");
        let why = ok("1: DELEG  ACTIVE    READ 100 08:02:5 0 EOF", "/f").unwrap();
        assert!(why.contains("DELEG"), "{why}");
        let why = ok("1: FLOCK  ADVISORY  WRITE 100 00:0c:5 0 EOF", "pipe:[5]").unwrap();
        assert!(why.contains("only on files"), "{why}");
        let l = LockLine::parse("1: LEASE  BREAKING  READ 100 08:02:5 0 EOF").unwrap();
        let e = check_fd(100, 4, "/f", &[l], &tree).unwrap_err().to_string();
        assert!(
            e.contains("pid 100: unsupported: fd 4 (/f): its lease is being broken"),
            "{e}"
        );
        // A flock taken by a live process outside the tree (this test).
        let me = std::process::id() as i32;
        let why = ok(
            &format!("1: FLOCK  ADVISORY  WRITE {me} 08:02:5 0 EOF"),
            "/f",
        )
        .unwrap();
        assert!(
            why.contains(&format!("taken by pid {me}, outside the tree")),
            "{why}"
        );
        // A POSIX lock shown with another pid is the table's (checked by
        // the /proc/locks cross-check instead).
        assert_eq!(
            ok(
                &format!("1: POSIX  ADVISORY  WRITE {me} 08:02:5 0 EOF"),
                "/f"
            ),
            None
        );
    }

    fn lock(kind: LockKind, start: u64, end: u64, to_eof: bool) -> FileLock {
        let mut l = FileLock::new();
        l.kind = kind.into();
        l.start = start;
        l.end = end;
        l.to_eof = to_eof;
        l.pid = 10;
        l.fd = 3;
        l.desc_id = 1;
        l
    }

    #[test]
    fn validation() {
        let mut f = Files::new();
        let mut d = crate::image::proto::FileDesc::new();
        d.id = 1;
        f.descs.push(d);
        let p = Path::new("files.img");
        f.locks = vec![
            lock(LockKind::LOCK_POSIX, 20, 29, false),
            lock(LockKind::LOCK_OFD, 5, 0, true),
            lock(LockKind::LOCK_FLOCK, 0, 0, true),
            lock(LockKind::LOCK_LEASE, 0, 0, true),
        ];
        validate(&f, p).unwrap();
        for (l, field) in [
            (lock(LockKind::LOCK_UNKNOWN, 0, 0, true), "kind"),
            (lock(LockKind::LOCK_POSIX, 30, 29, false), "end"),
            (lock(LockKind::LOCK_POSIX, 1 << 63, 0, true), "start"),
            (lock(LockKind::LOCK_FLOCK, 0, 9, false), "start"),
            (lock(LockKind::LOCK_LEASE, 3, 0, true), "start"),
        ] {
            let mut g = f.clone();
            g.locks = vec![l];
            let e = validate(&g, p).unwrap_err().to_string();
            assert!(e.contains(&format!("lock 0: {field}")), "{e}");
        }
        let mut g = f.clone();
        g.locks[0].desc_id = 9;
        assert!(validate(&g, p)
            .unwrap_err()
            .to_string()
            .contains("no description 9"));
        g.locks[0].desc_id = 1;
        g.locks[0].pid = 0;
        assert!(validate(&g, p).unwrap_err().to_string().contains("pid"));
    }

    #[test]
    fn the_plan_names_a_process_and_fd_of_the_description() {
        let mut t = FdTable::new();
        t.pid = 10;
        let mut fd = crate::image::proto::Fd::new();
        fd.fd = 3;
        fd.desc_id = 1;
        t.fds.push(fd);
        let empty = FdTable::new();
        // pid 11 shares pid 10's table; pid 12 has its own, empty one.
        let tables: Vec<TableRef> = vec![
            (10, 0, Some(&t)),
            (11, 10, Some(&empty)),
            (12, 0, Some(&empty)),
        ];
        let mut l = lock(LockKind::LOCK_POSIX, 0, 9, false);
        check_plan(std::slice::from_ref(&l), &tables).unwrap();
        l.pid = 11;
        check_plan(std::slice::from_ref(&l), &tables).unwrap();
        l.pid = 12;
        let e = check_plan(std::slice::from_ref(&l), &tables)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("pid 12: a POSIX lock is to be taken on fd 3"),
            "{e}"
        );
        l.pid = 13;
        let e = check_plan(std::slice::from_ref(&l), &tables)
            .unwrap_err()
            .to_string();
        assert!(e.contains("pid 13, which is not in the tree"), "{e}");
    }
}
