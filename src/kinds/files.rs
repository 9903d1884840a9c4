//! Open files, the engine between the fd kinds ([`crate::kinds::fd`]):
//! fd tables, shared descriptions, cwd/root, and the file-identity check
//! on restore. What each kind of description is, is its kind's business;
//! this module only sequences the kinds.
//!
//! Every open file description gets one id, found with kcmp(KCMP_FILE), so
//! fds that share a description (dup, fork) share it again after restore.
//! Restore order: unix sockets and terminals are rebuilt in cairn first
//! ([`SharedFiles::prepare`]); then, process by process, each description
//! is created once (by its kind) or fetched from the process that has it,
//! moved above every target number, and dup3'd onto its fds; once a
//! process's table is complete its kinds' `post_open` runs (epoll watch
//! lists); restored connections leave TCP repair mode only when the whole
//! tree is about to run ([`crate::kinds::inet::InetRestore::go_live`]).

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use std::os::fd::AsRawFd;

use crate::error::{Error, Result};
use crate::image::proto::{
    file_desc, Fd, FdTable, FileDesc, FileOwner, FileStat, Files, FsPath, Pstree, RegFile,
};
use crate::kinds::fd::{
    check_flags, flag_names, kind_of, DumpCx, FdKind, FdRef, RestoreCx, KINDS, SETFL_FLAGS,
};
use crate::procfs;
use crate::remote::batch::Syscall;
use crate::remote::Calls;
use crate::sys::{fown, task, uffd};

/// `F_OWNER_TID`, `F_OWNER_PID`, `F_OWNER_PGRP` (struct f_owner_ex).
const F_OWNER_TID: u32 = 0;
const F_OWNER_PID: u32 = 1;
const F_OWNER_PGRP: u32 = 2;

pub use crate::kinds::fd::SharedFiles;
pub use crate::kinds::fifo::recreate_fifos;

pub(crate) fn file_stat(md: &std::fs::Metadata) -> FileStat {
    let mut s = FileStat::new();
    s.dev = md.dev();
    s.ino = md.ino();
    s.size = md.size();
    s.mtime_ns = md.mtime() * 1_000_000_000 + md.mtime_nsec();
    s.mode = md.mode();
    s
}

/// Builds files.img while the tree is dumped.
pub struct FileTable {
    pub files: Files,
    next_id: u32,
    mapped: HashMap<(u64, u64, String, bool), u32>,
    /// (pid, fd, desc id, inode) of every description seen, for kcmp.
    seen: Vec<(i32, i32, u32, u64)>,
    /// What the kinds keep while dumping (sockets, terminals, pipes).
    pub kinds: DumpCx,
}

impl Default for FileTable {
    fn default() -> Self {
        FileTable {
            files: Files::new(),
            next_id: 1,
            mapped: HashMap::new(),
            seen: Vec::new(),
            kinds: DumpCx::default(),
        }
    }
}

impl FileTable {
    fn add(&mut self, kind: file_desc::Kind) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        let mut d = FileDesc::new();
        d.id = id;
        d.kind = Some(kind);
        self.files.descs.push(d);
        id
    }

    /// A mapped file or the executable: identified by path and inode.
    pub fn register_mapped(
        &mut self,
        path: &str,
        md: &std::fs::Metadata,
        writable: bool,
    ) -> Result<u32> {
        let key = (md.dev(), md.ino(), path.to_string(), writable);
        if let Some(&id) = self.mapped.get(&key) {
            return Ok(id);
        }
        let mut r = RegFile::new();
        r.path = path.to_string();
        // A mapped deleted file (memory::mapfiles): saved with contents.
        if let Some(p) = crate::kinds::contents::ghost_path(path, md).filter(|_| md.nlink() == 0) {
            (r.path, r.deleted) = (p, true);
        }
        r.flags = if writable {
            libc::O_RDWR as u32
        } else {
            libc::O_RDONLY as u32
        };
        r.stat = Some(file_stat(md)).into();
        let id = self.add(file_desc::Kind::Reg(r));
        self.mapped.insert(key, id);
        Ok(id)
    }

    /// (pid, fd, description id) of one fd of every description from an
    /// fd table, for reading what the fd refers to (kinds::contents).
    pub fn fd_of_descs(&self) -> Vec<(i32, i32, u32)> {
        self.seen
            .iter()
            .map(|&(p, fd, id, _)| (p, fd, id))
            .collect()
    }

    /// The cwd or root (`what`) of `pid`, whose link reads `path`. A cwd
    /// in a removed directory is recorded with the directory's mode and
    /// owner (`kinds::regular::precheck_tree` refused what cannot be).
    pub fn register_fs_path(&mut self, path: &str, pid: i32, what: &str) -> u32 {
        let mut p = FsPath::new();
        p.path = path.to_string();
        let link = format!("/proc/{pid}/{what}");
        if let Some(gone) = std::fs::metadata(&link)
            .ok()
            .and_then(|md| crate::kinds::contents::ghost_path(path, &md).map(|g| (g, md)))
        {
            p.path = gone.0;
            p.removed = true;
            p.mode = gone.1.mode() & 0o7777;
            p.uid = gone.1.uid();
            p.gid = gone.1.gid();
            p.ino = gone.1.ino();
        }
        self.add(file_desc::Kind::FsPath(p))
    }

    /// Reads the fd table of `pid` (frozen).
    /// `listed`: the fds and their link targets if known (the dump's
    /// inventory), else read from /proc.
    pub fn dump_fds(&mut self, pid: i32, listed: Option<Vec<(i32, String)>>) -> Result<FdTable> {
        let mut table = FdTable::new();
        table.pid = pid as u32;
        let listed = match listed {
            Some(l) => l,
            None => procfs::read_fds(pid)?,
        };
        // A pidfd of the process, for cairn's copies of its descriptions
        // (owner and signal are read there, not in the process).
        let mut pidfd: Option<std::os::fd::OwnedFd> = None;
        for (fd, target) in listed {
            let info = procfs::read_fdinfo(pid, fd)?;
            let cloexec = info.flags & libc::O_CLOEXEC as u32 != 0;
            let mut id = None;
            for &(p2, fd2, id2, ino2) in &self.seen {
                if ino2 == info.ino
                    && task::kcmp_file(pid, fd, p2, fd2)
                        .map_err(|e| Error::sys(pid, format!("kcmp fd {fd}"), e))?
                        == 0
                {
                    id = Some(id2);
                    break;
                }
            }
            let id = match id {
                Some(id) => id,
                None => {
                    let f = FdRef::new(pid, fd, &target, Some(&info));
                    let (k, kind) = describe(&f, &mut self.kinds)?;
                    check_flags(k, pid, fd, &target, info.flags)?;
                    let pfd = match pidfd.take() {
                        Some(p) => p,
                        None => {
                            uffd::pidfd_open(pid).map_err(|e| Error::sys(pid, "pidfd_open", e))?
                        }
                    };
                    let owner = read_owner(&pfd, pid, fd);
                    pidfd = Some(pfd);
                    let id = self.add(kind);
                    if let Some(d) = self.files.descs.last_mut() {
                        d.flags = info.flags & !(libc::O_CLOEXEC as u32);
                        d.flags_saved = true;
                        d.owner = owner?.into();
                    }
                    self.seen.push((pid, fd, id, info.ino));
                    id
                }
            };
            let mut f = Fd::new();
            f.fd = fd as u32;
            f.desc_id = id;
            f.cloexec = cloexec;
            table.fds.push(f);
        }
        Ok(table)
    }

    /// What needs the whole tree, once every fd table is read: the owner
    /// of each description (who gets SIGIO) must be a process, thread or
    /// process group of the tree, and a pidfd must name a process of the
    /// tree (or a dead one).
    pub fn check_tree(&self, pstree: &Pstree) -> Result<()> {
        let first_fd = |id: u32| {
            self.seen
                .iter()
                .find(|s| s.2 == id)
                .map_or((0, 0), |s| (s.0, s.1))
        };
        let is_pid = |p: i32| pstree.entries.iter().any(|e| e.pid as i32 == p);
        let is_tid = |t: i32| {
            pstree
                .entries
                .iter()
                .any(|e| e.threads.iter().any(|&x| x as i32 == t))
        };
        for d in &self.files.descs {
            let (pid, fd) = first_fd(d.id);
            if let Some(o) = d.owner.as_ref().filter(|o| o.pid != 0) {
                let (inside, what) = match o.type_ {
                    F_OWNER_TID => (is_tid(o.pid), "thread"),
                    F_OWNER_PGRP => (is_pid(o.pid), "process group"),
                    _ => (is_pid(o.pid), "process"),
                };
                if !inside {
                    return Err(Error::unsupported(
                        pid,
                        format!(
                            "fd {fd}: its SIGIO owner ({what} {}) is not in the checkpointed tree",
                            o.pid
                        ),
                    ));
                }
            }
            if let Some(file_desc::Kind::Pidfd(p)) = &d.kind {
                crate::kinds::anonfd::pidfd::check_target(pid, fd, p, &is_pid, &is_tid)?;
            }
        }
        let held = |id: u32| self.seen.iter().any(|s| s.2 == id);
        crate::kinds::anonfd::inotify::check_removed(&self.files, &first_fd, &held)?;
        self.kinds.external.check_found()?;
        Ok(())
    }

    /// Saves the bytes queued in every pipe seen, without consuming them.
    pub fn dump_pipe_data(&mut self) -> Result<()> {
        self.kinds.pipes.dump_data(&mut self.files)
    }
}

/// The first kind of [`KINDS`] that describes `f`, and its description.
fn describe(f: &FdRef, cx: &mut DumpCx) -> Result<(&'static dyn FdKind, file_desc::Kind)> {
    for &k in KINDS {
        if let Some(d) = k.describe(f, cx)? {
            return Ok((k, d));
        }
    }
    Err(unclaimed(f))
}

/// Owner and signal of fd `fd` of `pid`, read on cairn's copy of it
/// (pidfd_getfd: the same description): None when neither is set.
fn read_owner(pidfd: &std::os::fd::OwnedFd, pid: i32, fd: i32) -> Result<Option<FileOwner>> {
    let sys = |what: &str, e| Error::sys(pid, format!("fd {fd}: {what}"), e);
    let copy = uffd::pidfd_getfd(pidfd, fd).map_err(|e| sys("pidfd_getfd", e))?;
    let (ty, opid) = fown::get_owner(&copy).map_err(|e| sys("F_GETOWN_EX", e))?;
    let sig = fown::get_sig(&copy).map_err(|e| sys("F_GETSIG", e))?;
    if opid == 0 && sig == 0 {
        return Ok(None);
    }
    let mut o = FileOwner::new();
    o.type_ = ty;
    o.pid = opid;
    o.signum = sig;
    if opid != 0 {
        (o.uid, o.euid) = fown::get_owner_uids(&copy).map_err(|e| {
            Error::unsupported(
                pid,
                format!(
                    "fd {fd} has a SIGIO owner, and the credentials it was set with cannot be read (F_GETOWNER_UIDS: {e})"
                ),
            )
        })?;
    }
    Ok(Some(o))
}

/// The refusal of an fd no kind claims.
fn unclaimed(f: &FdRef) -> Error {
    if f.socket_ino().is_some() {
        return Error::unsupported(
            f.pid,
            format!(
                "fd {} is a {} socket ({}), which cairn cannot checkpoint",
                f.fd,
                f.proto(),
                f.target
            ),
        );
    }
    f.not_yet()
}

/// Refuses, before anything is frozen, fds that cairn cannot dump: each
/// must be claimed by a kind of [`KINDS`] (which may refuse it itself).
pub fn precheck(pid: i32) -> Result<()> {
    'fds: for (fd, target) in procfs::read_fds(pid)? {
        let f = FdRef::new(pid, fd, &target, None);
        for &k in KINDS {
            if k.precheck(&f)? {
                // File status flags its restore would lose (checked
                // again while frozen). An fd closed meanwhile is no error.
                if let Ok(info) = procfs::read_fdinfo(pid, fd) {
                    check_flags(k, pid, fd, &target, info.flags)?;
                }
                continue 'fds;
            }
        }
        return Err(unclaimed(&f));
    }
    Ok(())
}

// ---------------------------------------------------------------- restore

/// Lookup of descriptions by id.
pub struct FilesIndex<'a> {
    pub files: &'a Files,
    by_id: HashMap<u32, &'a FileDesc>,
    /// Paths to open instead of the saved ones, by description id: a
    /// moved executable (--exe-dir), a recreated deleted file.
    pub redirect: HashMap<u32, String>,
    /// Descriptions whose file is checked (or put back) elsewhere, which
    /// `check_unchanged` leaves out: saved contents, verified executables.
    pub checked_elsewhere: std::collections::HashSet<u32>,
}

impl<'a> FilesIndex<'a> {
    pub fn new(files: &'a Files) -> Self {
        FilesIndex {
            files,
            by_id: files.descs.iter().map(|d| (d.id, d)).collect(),
            redirect: HashMap::new(),
            checked_elsewhere: Default::default(),
        }
    }

    pub fn get(&self, id: u32) -> Option<&'a FileDesc> {
        self.by_id.get(&id).copied()
    }

    pub fn path(&self, id: u32) -> Option<String> {
        if let Some(p) = self.redirect.get(&id) {
            return Some(p.clone());
        }
        match &self.get(id)?.kind {
            Some(file_desc::Kind::Reg(r)) => Some(r.path.clone()),
            Some(file_desc::Kind::FsPath(p)) => Some(p.path.clone()),
            _ => None,
        }
    }

    /// Refuses to restore if a regular file changed or vanished since the
    /// dump (size, mtime; device and inode too on the same boot).
    /// Returns the problems found; the caller decides whether they are fatal.
    pub fn check_unchanged(&self, same_boot: bool) -> Vec<String> {
        let mut problems = Vec::new();
        for d in &self.files.descs {
            if let Some(file_desc::Kind::Fifo(f)) = &d.kind {
                if f.deleted {
                    continue; // made again under a free name (fifo::recreate_deleted)
                }
                // A missing FIFO is recreated (recreate_fifos); something
                // else at its path is not ours to replace.
                match std::fs::symlink_metadata(&f.path) {
                    Ok(md) if !md.file_type().is_fifo() => problems.push(format!(
                        "{}: was a FIFO at the dump, is now a {:?}",
                        f.path,
                        md.file_type()
                    )),
                    _ => {}
                }
                continue;
            }
            let Some(file_desc::Kind::Reg(r)) = &d.kind else {
                continue;
            };
            if self.checked_elsewhere.contains(&d.id) {
                continue;
            }
            let Some(st) = r.stat.as_ref() else { continue };
            if st.mode & libc::S_IFMT != libc::S_IFREG {
                continue;
            }
            problems.extend(change_since_dump(&r.path, st, same_boot));
        }
        problems.sort();
        problems.dedup();
        problems
    }
}

/// How the regular file at `path` differs from `st`, its stat at the
/// dump (size, mtime; device and inode too on the same boot), if it does.
pub fn change_since_dump(path: &str, st: &FileStat, same_boot: bool) -> Option<String> {
    let md = match std::fs::metadata(path) {
        Err(e) => return Some(format!("{path}: vanished since the dump ({e})")),
        Ok(md) => md,
    };
    let now = file_stat(&md);
    if now.size != st.size {
        Some(format!(
            "{path}: changed since the dump (size {} -> {})",
            st.size, now.size
        ))
    } else if now.mtime_ns != st.mtime_ns {
        Some(format!(
            "{path}: changed since the dump (modification time differs)"
        ))
    } else if same_boot && (now.dev != st.dev || now.ino != st.ino) {
        Some(format!(
            "{path}: replaced since the dump (inode {} -> {})",
            st.ino, now.ino
        ))
    } else {
        None
    }
}

/// Restores the fd table in the process `calls` runs in, which must have
/// no fds open.
///
/// The fd work is queued as batches of calls (`remote::batch`, one ptrace
/// stop each where the process has the agent loop): each description
/// fetched from the process that has it (one pidfd per owner, then
/// pidfd_getfd), moved above every target number (F_DUPFD_CLOEXEC, the
/// copy it came from closed) and dup3'd onto its fds; a call that uses a
/// new fd takes it from the result of the call that made it. A kind's
/// own open runs on its own, after what was queued before it has run
/// (it may look for descriptions made earlier in this process).
pub fn restore_fds(
    calls: &mut dyn Calls,
    table: &FdTable,
    idx: &FilesIndex,
    shared: &mut SharedFiles,
) -> Result<()> {
    let pid = calls.pid();
    let max_target = table.fds.iter().map(|f| f.fd).max().unwrap_or(0) as u64;
    let high = (max_target + 1).max(64);
    // Group fds by description.
    let mut groups: BTreeMap<u32, Vec<&Fd>> = BTreeMap::new();
    for f in &table.fds {
        groups.entry(f.desc_id).or_default().push(f);
    }
    let mut q = FdQueue::default();
    let mut staged: Vec<(u64, Vec<&Fd>)> = Vec::new();
    for (id, fds) in groups {
        // Moved out of the way of every target number, each description
        // stays open as the keeper other processes fetch it from.
        if let Some(&(owner, kfd)) = shared.descs.get(&id) {
            q.fetch(pid, owner, kfd, high, (id, fds));
        } else {
            q.run(calls, pid, shared, &mut staged)?;
            let first = fds.first().map(|f| f.fd).unwrap_or(0);
            let d = idx.get(id).ok_or_else(|| {
                Error::Restore(format!("pid {pid}: fd {first} refers to unknown file {id}"))
            })?;
            let mut cx = RestoreCx {
                idx,
                shared: &mut *shared,
                high,
                id,
                fd: first,
            };
            let tmp = match &d.kind {
                Some(k) => kind_of(k).open(k, calls, &mut cx)?,
                None => return Err(cx.cannot(pid)),
            };
            q.move_above(tmp, high, (id, fds));
        }
    }
    q.run(calls, pid, shared, &mut staged)?;
    let dup3s: Vec<(String, Syscall)> = (staged.iter())
        .flat_map(|(hi, fds)| fds.iter().map(move |f| (*hi, f)))
        .map(|(hi, f)| {
            let fl = if f.cloexec { libc::O_CLOEXEC as u64 } else { 0 };
            let c = Syscall::new(libc::SYS_dup3, &[hi, f.fd as u64, fl]);
            (format!("dup3 to fd {}", f.fd), c)
        })
        .collect();
    calls.call_all(&dup3s)?;
    // File status flags, once per description, on its lowest fd here (the
    // fd number O_ASYNC's signals report).
    for (_, fds) in &staged {
        let Some(f) = fds.iter().min_by_key(|f| f.fd) else {
            continue;
        };
        if let Some(d) = idx.get(f.desc_id) {
            if shared.flags_done.insert(f.desc_id) {
                restore_flags(calls, f.fd as u64, d)?;
            }
        }
    }
    // What names other fds (epoll watch lists): now that all are in place.
    for f in &table.fds {
        if let Some(k) = idx.get(f.desc_id).and_then(|d| d.kind.as_ref()) {
            kind_of(k).post_open(k, calls, f, table)?;
        }
    }
    Ok(())
}

/// The queued calls of [`restore_fds`]: the descriptions being fetched
/// and moved, until [`FdQueue::run`].
#[derive(Default)]
struct FdQueue<'a> {
    calls: Vec<(String, Syscall)>,
    /// Owner pid -> the call that opened a pidfd for it.
    pidfds: BTreeMap<i32, usize>,
    /// (description id, the call whose result is its keeper, its fds).
    staged: Vec<(u32, usize, Vec<&'a Fd>)>,
}

impl<'a> FdQueue<'a> {
    /// Fetches fd `kfd` of process `owner` into process `pid`, at a
    /// close-on-exec number `high` or above, for description `desc.0`
    /// and its fds `desc.1`.
    fn fetch(&mut self, pid: i32, owner: i32, kfd: u64, high: u64, desc: (u32, Vec<&'a Fd>)) {
        let move_up =
            |fd: u64| Syscall::new(libc::SYS_fcntl, &[fd, libc::F_DUPFD_CLOEXEC as u64, high]);
        if owner == pid {
            self.staged.push((desc.0, self.calls.len(), desc.1));
            self.calls
                .push(("fcntl(F_DUPFD_CLOEXEC)".into(), move_up(kfd)));
            return;
        }
        let n = self.calls.len();
        let pidfd = *self.pidfds.entry(owner).or_insert(n);
        if pidfd == n {
            let c = Syscall::new(libc::SYS_pidfd_open, &[owner as u64, 0]);
            self.calls.push((format!("pidfd_open({owner})"), c));
        }
        let get = self.calls.len();
        let c = Syscall::new(libc::SYS_pidfd_getfd, &[0, kfd, 0]).with_arg0_result(pidfd);
        self.calls.push((format!("pidfd_getfd({owner}, {kfd})"), c));
        self.staged.push((desc.0, self.calls.len(), desc.1));
        self.calls.push((
            "fcntl(F_DUPFD_CLOEXEC)".into(),
            move_up(0).with_arg0_result(get),
        ));
        let c = Syscall::new(libc::SYS_close, &[]).with_arg0_result(get);
        self.calls.push(("close".into(), c));
    }

    /// Moves fd `tmp` (just opened for description `desc.0`, whose fds
    /// are `desc.1`) to a close-on-exec number `high` or above and closes
    /// it.
    fn move_above(&mut self, tmp: u64, high: u64, desc: (u32, Vec<&'a Fd>)) {
        self.staged.push((desc.0, self.calls.len(), desc.1));
        let c = Syscall::new(libc::SYS_fcntl, &[tmp, libc::F_DUPFD_CLOEXEC as u64, high]);
        self.calls.push(("fcntl(F_DUPFD_CLOEXEC)".into(), c));
        self.calls
            .push(("close".into(), Syscall::new(libc::SYS_close, &[tmp])));
    }

    /// Runs what is queued (the pidfds closed last) and records each
    /// description's keeper in `shared` and in `staged`.
    fn run(
        &mut self,
        calls: &mut dyn Calls,
        pid: i32,
        shared: &mut SharedFiles,
        staged: &mut Vec<(u64, Vec<&'a Fd>)>,
    ) -> Result<()> {
        for (_, &at) in self.pidfds.iter() {
            let c = Syscall::new(libc::SYS_close, &[]).with_arg0_result(at);
            self.calls.push(("close a pidfd".into(), c));
        }
        let got = calls.call_all(&self.calls)?;
        for (id, at, fds) in self.staged.drain(..) {
            let hi = got[at];
            shared.descs.entry(id).or_insert((pid, hi));
            shared.keepers.push((pid, hi));
            staged.push((hi, fds));
        }
        self.calls.clear();
        self.pidfds.clear();
        Ok(())
    }
}

/// Sets the file status flags of description `d` on `fd` (the ones
/// F_SETFL sets: the kind's open gave the others) and checks that F_GETFL
/// then reads all of them as they were.
fn restore_flags(calls: &mut dyn Calls, fd: u64, d: &FileDesc) -> Result<()> {
    if !d.flags_saved {
        return Ok(());
    }
    let pid = calls.pid();
    let want = d.flags & !(libc::O_CLOEXEC as u32);
    // F_SETFL is refused on an O_PATH fd (which has no such flags).
    if want & libc::O_PATH as u32 == 0 {
        let set = want & SETFL_FLAGS;
        if set & libc::O_ASYNC as u32 != 0 {
            // Off first, so that turning it on registers this fd number
            // (a kind may have set it elsewhere, in cairn).
            calls.set_fl_named(fd, set & !(libc::O_ASYNC as u32))?;
        }
        calls.set_fl_named(fd, set)?;
    }
    let got = calls.get_fl(fd)? & !(libc::O_CLOEXEC as u32);
    if got != want {
        return Err(Error::Restore(format!(
            "pid {pid}: fd {fd}: file status flags came back as {} instead of {} (differ: {})",
            flag_names(got),
            flag_names(want),
            flag_names(got ^ want)
        )));
    }
    Ok(())
}

/// An owner to set: (cairn's copy of the description, F_OWNER_* type, id).
type Owner = (std::os::fd::RawFd, u32, i32);

/// Sets the owner and signal of every description that had them (who
/// gets SIGIO: F_SETOWN_EX, F_SETSIG), once every process and thread of
/// the tree exists. `tables` are the fd tables of the restored processes
/// (pid, table). Done on cairn's copy of each description (pidfd_getfd);
/// the owner is set by a helper with the uid and euid the original setter
/// had, which the kernel keeps with the owner and checks when it sends
/// the signal. A description with O_ASYNC and no saved owner has its
/// owner cleared (a terminal's fasync sets one).
pub fn restore_owners<'a>(
    files: &Files,
    tables: impl IntoIterator<Item = (i32, &'a FdTable)>,
) -> Result<()> {
    let mut where_: HashMap<u32, (i32, u32)> = HashMap::new();
    let mut pids = Vec::new();
    for (pid, t) in tables {
        pids.push(pid);
        for f in &t.fds {
            where_.entry(f.desc_id).or_insert((pid, f.fd));
        }
    }
    // (uid, euid) -> (fd copy, type, owner), and every copy with its
    // description.
    let mut by_creds: BTreeMap<(u32, u32), Vec<Owner>> = BTreeMap::new();
    let mut copies = Vec::new();
    for d in &files.descs {
        let owner = d.owner.as_ref();
        let async_ = d.flags_saved && d.flags & libc::O_ASYNC as u32 != 0;
        if owner.is_none() && !async_ {
            continue;
        }
        let Some(&(pid, fd)) = where_.get(&d.id) else {
            continue;
        };
        let sys = |what: String, e| Error::sys(pid, format!("fd {fd}: {what}"), e);
        let pfd = uffd::pidfd_open(pid).map_err(|e| sys("pidfd_open".into(), e))?;
        let copy = uffd::pidfd_getfd(&pfd, fd as i32).map_err(|e| sys("pidfd_getfd".into(), e))?;
        // An image names only owners of the restored tree (the dump
        // refuses others): never let it aim signals elsewhere.
        if let Some(o) = owner.filter(|o| o.pid != 0) {
            let inside = if o.type_ == F_OWNER_TID {
                pids.iter()
                    .any(|p| std::path::Path::new(&format!("/proc/{p}/task/{}", o.pid)).exists())
            } else {
                pids.contains(&o.pid)
            };
            if !inside {
                return Err(Error::Restore(format!(
                    "pid {pid}: fd {fd}: its SIGIO owner {} is not a restored process or thread",
                    o.pid
                )));
            }
        }
        let sig = owner.map_or(0, |o| o.signum);
        fown::set_sig(&copy, sig).map_err(|e| sys(format!("F_SETSIG {sig}"), e))?;
        match owner.filter(|o| o.pid != 0) {
            Some(o) => by_creds.entry((o.uid, o.euid)).or_default().push((
                copy.as_raw_fd(),
                o.type_,
                o.pid,
            )),
            None => fown::set_owner(&copy, F_OWNER_PID, 0)
                .map_err(|e| sys("F_SETOWN_EX none".into(), e))?,
        }
        copies.push((pid, fd, d, copy));
    }
    let me = (
        rustix::process::getuid().as_raw(),
        rustix::process::geteuid().as_raw(),
    );
    for ((uid, euid), owners) in &by_creds {
        let r = if (*uid, *euid) == me {
            owners
                .iter()
                .try_for_each(|&(fd, ty, p)| fown::set_owner(&fd, ty, p))
        } else {
            fown::set_owner_as(*uid, *euid, owners)
        };
        r.map_err(|e| {
            Error::Restore(format!(
                "setting the SIGIO owner of {} description(s) as uid {uid}/euid {euid}: {e}",
                owners.len()
            ))
        })?;
    }
    // Read everything back.
    for (pid, fd, d, copy) in &copies {
        let sys = |what: &str, e| Error::sys(*pid, format!("fd {fd}: {what}"), e);
        let o = d.owner.clone().unwrap_or_default();
        let (ty, opid) = fown::get_owner(copy).map_err(|e| sys("F_GETOWN_EX", e))?;
        let sig = fown::get_sig(copy).map_err(|e| sys("F_GETSIG", e))?;
        let uids = if o.pid != 0 {
            fown::get_owner_uids(copy).map_err(|e| sys("F_GETOWNER_UIDS", e))?
        } else {
            (0, 0)
        };
        let same_owner = opid == o.pid && (o.pid == 0 || ty == o.type_);
        if !same_owner || sig != o.signum || (o.pid != 0 && uids != (o.uid, o.euid)) {
            return Err(Error::Restore(format!(
                "pid {pid}: fd {fd}: SIGIO owner came back as type {ty} id {opid} signal {sig} set by uid/euid {}/{}, not type {} id {} signal {} by {}/{}",
                uids.0, uids.1, o.type_, o.pid, o.signum, o.uid, o.euid
            )));
        }
    }
    Ok(())
}

/// chdir / chroot in the vessel.
pub fn restore_fs(calls: &mut dyn Calls, cwd: Option<String>, root: Option<String>) -> Result<()> {
    // Both paths are as seen from cairn's root: chdir first, then chroot.
    if let Some(cwd) = cwd {
        calls.chdir(&cwd)?;
    }
    if let Some(root) = root.filter(|r| r != "/") {
        calls.chroot(&root)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The engine on simulated processes ([`crate::remote::fake`]): no
    //! root, no real process.
    use super::*;
    use crate::image::proto::{EpollTarget, EventFd, EventPoll, PipeFile, UnixSocket};
    use crate::remote::fake::{FakeObject, FakeTask, FakeWorld};

    fn desc(id: u32, kind: file_desc::Kind) -> FileDesc {
        let mut d = FileDesc::new();
        d.id = id;
        d.kind = Some(kind);
        d
    }

    fn reg(path: &str, flags: i32, pos: u64) -> file_desc::Kind {
        let mut r = RegFile::new();
        r.path = path.into();
        r.flags = flags as u32;
        r.pos = pos;
        let mut st = FileStat::new();
        st.mode = libc::S_IFREG | 0o644;
        r.stat = Some(st).into();
        file_desc::Kind::Reg(r)
    }

    fn pipe_end(ino: u64, flags: i32) -> file_desc::Kind {
        let mut p = PipeFile::new();
        p.pipe_ino = ino;
        p.flags = flags as u32;
        file_desc::Kind::Pipe(p)
    }

    fn table(pid: i32, fds: &[(u32, u32, bool)]) -> FdTable {
        let mut t = FdTable::new();
        t.pid = pid as u32;
        for &(fd, desc_id, cloexec) in fds {
            let mut f = Fd::new();
            f.fd = fd;
            f.desc_id = desc_id;
            f.cloexec = cloexec;
            t.fds.push(f);
        }
        t
    }

    /// Restores `tables` in order, one fake process each, then closes the
    /// keepers as restore does.
    fn restore_all(
        world: &std::rc::Rc<std::cell::RefCell<FakeWorld>>,
        files: &Files,
        tables: &[FdTable],
    ) -> Result<Vec<FakeTask>> {
        let idx = FilesIndex::new(files);
        let mut shared = SharedFiles::default();
        let mut tasks: Vec<FakeTask> = tables
            .iter()
            .map(|t| FakeTask::new(world, t.pid as i32))
            .collect();
        for (task, t) in tasks.iter_mut().zip(tables) {
            restore_fds(task, t, &idx, &mut shared)?;
        }
        for (owner, fd) in std::mem::take(&mut shared.keepers) {
            let t = tasks.iter_mut().find(|t| t.pid == owner).unwrap();
            t.close(fd)?;
        }
        Ok(tasks)
    }

    #[test]
    fn shared_descriptions_offsets_and_cloexec_across_two_processes() {
        let world = FakeWorld::new();
        world.borrow_mut().files.insert("/srv/data".into());
        let mut files = Files::new();
        files.descs = vec![
            desc(1, reg("/srv/data", libc::O_RDWR | libc::O_APPEND, 42)),
            desc(2, pipe_end(77, libc::O_RDONLY)),
            desc(3, pipe_end(77, libc::O_WRONLY | libc::O_NONBLOCK)),
            desc(4, reg("/srv/data", libc::O_RDONLY, 0)),
        ];
        let tables = [
            // fd 0 and fd 5 share description 1 (dup); fd 5 close-on-exec.
            table(
                100,
                &[(0, 1, false), (5, 1, true), (3, 2, false), (4, 3, true)],
            ),
            // The same description 1 (inherited), the pipe's write end,
            // and another open of the same file.
            table(101, &[(0, 1, false), (7, 3, false), (9, 4, false)]),
        ];
        restore_all(&world, &files, &tables).unwrap();
        let w = world.borrow();
        let (a, b) = (w.table(100), w.table(101));
        // Exactly the saved fds: no keeper or pidfd is left behind.
        assert_eq!(a.keys().copied().collect::<Vec<_>>(), [0, 3, 4, 5]);
        assert_eq!(b.keys().copied().collect::<Vec<_>>(), [0, 7, 9]);
        // One description for fd 0 and 5 of pid 100 and fd 0 of pid 101,
        // at the saved offset, with its status flags.
        let d = w.desc_of(100, 0);
        assert_eq!(w.desc_of(100, 5), d);
        assert_eq!(w.desc_of(101, 0), d);
        assert_eq!(a[&0].0.object, FakeObject::Path("/srv/data".into()));
        assert_eq!(a[&0].0.pos, 42);
        assert_eq!(a[&0].0.flags, (libc::O_RDWR | libc::O_APPEND) as u64);
        // Another open of the same file is another description.
        assert_ne!(w.desc_of(101, 9), d);
        assert_eq!(b[&9].0.pos, 0);
        // close-on-exec is per fd.
        assert_eq!(
            (a[&0].1, a[&5].1, a[&3].1, a[&4].1),
            (false, true, false, true)
        );
        assert!(!b[&7].1);
        // Both ends of one pipe; the write end shared with pid 101.
        let FakeObject::Pipe { n, read: true } = a[&3].0.object else {
            panic!("fd 3: {:?}", a[&3].0);
        };
        assert_eq!(a[&4].0.object, FakeObject::Pipe { n, read: false });
        assert_eq!(w.desc_of(101, 7), w.desc_of(100, 4));
        assert_ne!(a[&4].0.flags & libc::O_NONBLOCK as u64, 0);
        assert_eq!(a[&3].0.flags & libc::O_NONBLOCK as u64, 0);
    }

    #[test]
    fn epoll_watches_are_added_once_the_table_is_in_place() {
        let world = FakeWorld::new();
        let mut ev = EventFd::new();
        ev.count = 5;
        let mut ep = EventPoll::new();
        let mut t = EpollTarget::new();
        t.fd = 8;
        t.events = libc::EPOLLIN as u32;
        t.data = 0xfeed;
        ep.targets.push(t);
        let mut files = Files::new();
        // The epoll description comes first, the fd it watches later.
        files.descs = vec![
            desc(1, file_desc::Kind::Epoll(ep)),
            desc(2, file_desc::Kind::Eventfd(ev)),
        ];
        let tables = [table(100, &[(3, 1, true), (8, 2, false), (9, 2, false)])];
        let tasks = restore_all(&world, &files, &tables).unwrap();
        let w = world.borrow();
        let a = w.table(100);
        assert_eq!(
            a[&8].0.object,
            FakeObject::Eventfd {
                count: 5,
                semaphore: false
            }
        );
        let ev_desc = w.desc_of(100, 8).unwrap();
        assert_eq!(
            a[&3].0.object,
            FakeObject::Epoll {
                watches: vec![(8, ev_desc, libc::EPOLLIN as u32, 0xfeed)]
            }
        );
        // The watch is added after every dup3 (its fd number exists).
        let log = &tasks[0].log;
        let ctl = log.iter().position(|c| c == "epoll_ctl").unwrap();
        assert!(log[..ctl].iter().filter(|c| *c == "dup3").count() == 3);
    }

    #[test]
    fn status_flags_are_set_once_and_checked() {
        let world = FakeWorld::new();
        world.borrow_mut().files.insert("/srv/data".into());
        let mut files = Files::new();
        let mut d1 = desc(1, reg("/srv/data", libc::O_RDWR, 0));
        d1.flags = (libc::O_RDWR | libc::O_APPEND | libc::O_NOATIME | libc::O_ASYNC) as u32;
        d1.flags_saved = true;
        files.descs = vec![d1];
        let tables = [
            table(100, &[(4, 1, false), (2, 1, false)]),
            table(101, &[(0, 1, false)]),
        ];
        let tasks = restore_all(&world, &files, &tables).unwrap();
        let w = world.borrow();
        assert_eq!(w.table(100)[&2].0.flags, files.descs[0].flags as u64);
        // Set once, in the first process: besides its F_DUPFD_CLOEXEC,
        // F_SETFL without O_ASYNC, F_SETFL, F_GETFL; the other process
        // only fetches and moves it.
        let fcntls = |t: &FakeTask| t.log.iter().filter(|c| *c == "fcntl").count();
        assert_eq!(fcntls(&tasks[0]), 4, "{:?}", tasks[0].log);
        assert_eq!(fcntls(&tasks[1]), 1, "{:?}", tasks[1].log);
        drop(w);
        // A flag the kind did not give back fails the restore.
        let world = FakeWorld::new();
        let mut d = desc(1, pipe_end(9, libc::O_RDONLY));
        d.flags = (libc::O_RDONLY | libc::O_DSYNC) as u32;
        d.flags_saved = true;
        files.descs = vec![d];
        let e = restore_all(&world, &files, &[table(102, &[(3, 1, false)])])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("pid 102: fd 3: file status flags came back as none instead of O_DSYNC"),
            "{e}"
        );
    }

    #[test]
    fn refusals_name_pid_and_fd() {
        let world = FakeWorld::new();
        let mut files = Files::new();
        files.descs = vec![desc(1, file_desc::Kind::Unix(UnixSocket::new()))];
        // A unix socket nobody rebuilt and offered.
        let e = restore_all(&world, &files, &[table(100, &[(4, 1, false)])])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("pid 100: fd 4 has a description cairn cannot restore"),
            "{e}"
        );
        // A description that is not in files.img.
        let e = restore_all(&world, &files, &[table(101, &[(6, 9, false)])])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("pid 101: fd 6 refers to unknown file 9"), "{e}");
        // A file that vanished: the kernel's error, with the path.
        files.descs = vec![desc(1, reg("/gone", libc::O_RDONLY, 0))];
        let e = restore_all(&world, &files, &[table(102, &[(0, 1, false)])])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("pid 102: open /gone"), "{e}");
    }
}
