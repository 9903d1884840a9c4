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

use crate::error::{Error, Result};
use crate::image::proto::{file_desc, Fd, FdTable, FileDesc, FileStat, Files, FsPath, RegFile};
use crate::kinds::fd::{kind_of, DumpCx, FdRef, RestoreCx, KINDS};
use crate::procfs;
use crate::remote::Calls;
use crate::sys::task;

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

    pub fn register_fs_path(&mut self, path: &str) -> u32 {
        let mut p = FsPath::new();
        p.path = path.to_string();
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
                    let kind = describe(&f, &mut self.kinds)?;
                    let id = self.add(kind);
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

    /// Saves the bytes queued in every pipe seen, without consuming them.
    pub fn dump_pipe_data(&mut self) -> Result<()> {
        self.kinds.pipes.dump_data(&mut self.files)
    }
}

/// The first kind of [`KINDS`] that describes `f`.
fn describe(f: &FdRef, cx: &mut DumpCx) -> Result<file_desc::Kind> {
    for k in KINDS {
        if let Some(d) = k.describe(f, cx)? {
            return Ok(d);
        }
    }
    Err(unclaimed(f))
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
        for k in KINDS {
            if k.precheck(&f)? {
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
            match std::fs::metadata(&r.path) {
                Err(e) => problems.push(format!("{}: vanished since the dump ({e})", r.path)),
                Ok(md) => {
                    let now = file_stat(&md);
                    if now.size != st.size {
                        problems.push(format!(
                            "{}: changed since the dump (size {} -> {})",
                            r.path, st.size, now.size
                        ));
                    } else if now.mtime_ns != st.mtime_ns {
                        problems.push(format!(
                            "{}: changed since the dump (modification time differs)",
                            r.path
                        ));
                    } else if same_boot && (now.dev != st.dev || now.ino != st.ino) {
                        problems.push(format!(
                            "{}: replaced since the dump (inode {} -> {})",
                            r.path, st.ino, now.ino
                        ));
                    }
                }
            }
        }
        problems.sort();
        problems.dedup();
        problems
    }
}

/// Restores the fd table in the process `calls` runs in, which must have
/// no fds open.
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
    let mut staged: Vec<(u64, Vec<&Fd>)> = Vec::new();
    for (id, fds) in groups {
        let first = fds.first().map(|f| f.fd).unwrap_or(0);
        let d = idx.get(id).ok_or_else(|| {
            Error::Restore(format!("pid {pid}: fd {first} refers to unknown file {id}"))
        })?;
        let tmp = if let Some(&(owner, kfd)) = shared.descs.get(&id) {
            calls.fetch_fd(owner, kfd)?
        } else {
            let mut cx = RestoreCx {
                idx,
                shared: &mut *shared,
                high,
                id,
                fd: first,
            };
            match &d.kind {
                Some(k) => kind_of(k).open(k, calls, &mut cx)?,
                None => return Err(cx.cannot(pid)),
            }
        };
        // Move it out of the way of every target number; it stays open
        // as the keeper other processes fetch the description from.
        let hi = calls.dup_above(tmp, high)?;
        shared.descs.entry(id).or_insert((pid, hi));
        shared.keepers.push((pid, hi));
        staged.push((hi, fds));
    }
    for (hi, fds) in &staged {
        for f in fds {
            calls.dup3(*hi, f.fd as u64, f.cloexec)?;
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
