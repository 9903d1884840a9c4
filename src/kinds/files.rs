//! Open files: fd tables, open file descriptions (regular files, devices,
//! directories, pipes), cwd/root, and the file-identity check on restore.
//!
//! Every open file description gets one id, found with kcmp(KCMP_FILE), so
//! fds that share a description (dup, fork) share it again after restore.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use crate::error::{Error, IoContext, Result};
use crate::image::proto::{
    file_desc, Fd, FdTable, FifoFile, FileDesc, FileStat, Files, FsPath, PipeData, PipeFile,
    RegFile,
};
use crate::procfs;
use crate::remote::Agent;
use crate::remote::Calls;
use crate::sys::task;

fn file_stat(md: &std::fs::Metadata) -> FileStat {
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
    /// (pipe or FIFO inode, is a FIFO) -> (pid, fd) of one end, to read
    /// the queued bytes.
    pipes: BTreeMap<(u64, bool), (i32, i32)>,
    /// Unix sockets (kinds::unix).
    pub unix: crate::kinds::unix::UnixDump,
    /// IP sockets (kinds::inet).
    pub inet: crate::kinds::inet::DumpState,
    /// Terminals (kinds::tty).
    pub tty: crate::kinds::tty::TtyDump,
}

impl Default for FileTable {
    fn default() -> Self {
        FileTable {
            files: Files::new(),
            next_id: 1,
            mapped: HashMap::new(),
            seen: Vec::new(),
            pipes: BTreeMap::new(),
            unix: Default::default(),
            inet: Default::default(),
            tty: Default::default(),
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
            let flags = info.flags & !(libc::O_CLOEXEC as u32);
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
                    let kind = match crate::kinds::anonfd::describe(pid, fd, &target, &info)? {
                        Some(k) => k,
                        None => match self.inet.describe(pid, fd, &target, &info)? {
                            Some(k) => k,
                            None => self.describe(pid, fd, &target, flags, info.pos)?,
                        },
                    };
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

    fn describe(
        &mut self,
        pid: i32,
        fd: i32,
        target: &str,
        flags: u32,
        pos: u64,
    ) -> Result<file_desc::Kind> {
        if let Some(("socket", ino)) = procfs::parse_anon_link(target) {
            if let Some(k) = self.unix.describe(pid, fd, ino, flags)? {
                return Ok(k);
            }
            return Err(unsupported_socket(pid, fd, target));
        }
        if let Some(("pipe", ino)) = procfs::parse_anon_link(target) {
            self.pipes.entry((ino, false)).or_insert((pid, fd));
            let mut p = PipeFile::new();
            p.pipe_ino = ino;
            p.flags = flags;
            return Ok(file_desc::Kind::Pipe(p));
        }
        if !target.starts_with('/') {
            return Err(Error::unsupported(
                pid,
                format!("fd {fd} is {target}, which cairn cannot checkpoint yet"),
            ));
        }
        let link = format!("/proc/{pid}/fd/{fd}");
        let md = std::fs::metadata(&link).at(&link)?;
        // Deleted but open: kept with its contents (kinds::contents).
        let ghost = crate::kinds::contents::ghost_path(target, &md);
        if ghost.is_some() && !md.file_type().is_file() {
            return Err(Error::unsupported(
                pid,
                format!("fd {fd} refers to deleted {target}, which is not a regular file"),
            ));
        }
        let ft = md.file_type();
        if ft.is_fifo() {
            if ghost.is_some() {
                return Err(Error::unsupported(
                    pid,
                    format!("fd {fd} refers to deleted FIFO {target}"),
                ));
            }
            self.pipes.entry((md.ino(), true)).or_insert((pid, fd));
            let mut f = FifoFile::new();
            f.path = target.to_string();
            f.flags = flags;
            f.stat = Some(file_stat(&md)).into();
            return Ok(file_desc::Kind::Fifo(f));
        }
        if ft.is_char_device() {
            if let Some(k) = self.tty.describe(pid, fd, target, flags)? {
                return Ok(k);
            }
        }
        check_file_type(pid, fd, target, &md)?;
        let mut r = RegFile::new();
        r.deleted = ghost.is_some();
        r.path = ghost.unwrap_or_else(|| target.to_string());
        r.flags = flags;
        r.pos = pos;
        r.stat = Some(file_stat(&md)).into();
        Ok(file_desc::Kind::Reg(r))
    }

    /// Saves the bytes queued in every pipe seen, without consuming them.
    pub fn dump_pipe_data(&mut self) -> Result<()> {
        for (&(ino, fifo), &(pid, fd)) in &self.pipes {
            let link = format!("/proc/{pid}/fd/{fd}");
            let src = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags_nonblock()
                .open(&link)
                .at(&link)?;
            let cap = task::pipe_size(&src)
                .map_err(|e| Error::sys(pid, format!("fd {fd}: F_GETPIPE_SZ"), e))?;
            let queued = task::pipe_queued(&src)
                .map_err(|e| Error::sys(pid, format!("fd {fd}: FIONREAD"), e))?;
            let mut data = Vec::new();
            if queued > 0 {
                let (r, w) = task::pipe().map_err(|e| Error::sys(pid, "pipe", e))?;
                task::set_pipe_size(&w, cap.max(queued))
                    .map_err(|e| Error::sys(pid, "F_SETPIPE_SZ", e))?;
                let n = task::tee(&src, &w, queued)
                    .map_err(|e| Error::sys(pid, format!("fd {fd}: tee"), e))?;
                drop(w);
                data.resize(n, 0);
                use std::io::Read;
                let mut rf = std::fs::File::from(r);
                rf.read_exact(&mut data)
                    .map_err(|e| Error::sys(pid, format!("fd {fd}: read pipe copy"), e))?;
            }
            let mut pd = PipeData::new();
            pd.pipe_ino = ino;
            pd.data = data;
            pd.capacity = cap as u32;
            pd.fifo = fifo;
            self.files.pipes.push(pd);
        }
        Ok(())
    }
}

/// The protocol of the socket at fd `fd` of `pid` ("UNIX", "TCP", ...).
fn socket_proto(pid: i32, fd: i32) -> String {
    crate::sys::sock::proto_name(&format!("/proc/{pid}/fd/{fd}"))
        .unwrap_or_else(|_| "unknown".into())
}

/// Whether cairn can checkpoint sockets of this protocol.
fn socket_supported(proto: &str) -> bool {
    crate::kinds::unix::handles_proto(proto) || crate::kinds::inet::handles_proto(proto)
}

fn unsupported_socket(pid: i32, fd: i32, target: &str) -> Error {
    Error::unsupported(
        pid,
        format!(
            "fd {fd} is a {} socket ({target}), which cairn cannot checkpoint",
            socket_proto(pid, fd)
        ),
    )
}

/// Character devices that are reopened by path: they hold no state of
/// their own (null, zero, full, random, urandom). Terminals are
/// kinds::tty's.
fn plain_device(rdev: u64) -> bool {
    libc::major(rdev) == 1 && [3, 5, 7, 8, 9].contains(&libc::minor(rdev))
}

/// Refuses file types cairn cannot reopen: block devices, sockets bound
/// in the file system reached by path, and character devices other than
/// the plain ones and terminals.
fn check_file_type(pid: i32, fd: i32, target: &str, md: &std::fs::Metadata) -> Result<()> {
    let ft = md.file_type();
    if ft.is_file() || ft.is_dir() || ft.is_fifo() {
        return Ok(());
    }
    let what = if ft.is_char_device() {
        if plain_device(md.rdev()) || crate::kinds::tty::is_tty(md.rdev()) {
            return Ok(());
        }
        format!(
            "character device {}:{}",
            libc::major(md.rdev()),
            libc::minor(md.rdev())
        )
    } else if ft.is_block_device() {
        format!(
            "block device {}:{}",
            libc::major(md.rdev()),
            libc::minor(md.rdev())
        )
    } else {
        format!("{ft:?}")
    };
    Err(Error::unsupported(
        pid,
        format!("fd {fd} ({target}) is a {what}, which cairn cannot checkpoint"),
    ))
}

/// Refuses, before anything is frozen, fds that cairn cannot dump.
pub fn precheck(pid: i32) -> Result<()> {
    for (fd, target) in procfs::read_fds(pid)? {
        if crate::kinds::anonfd::handles(&target) {
            continue;
        }
        if let Some(("socket", _)) = procfs::parse_anon_link(&target) {
            if socket_supported(&socket_proto(pid, fd)) {
                continue;
            }
            return Err(unsupported_socket(pid, fd, &target));
        }
        if let Some((kind, _)) = procfs::parse_anon_link(&target) {
            if kind != "pipe" {
                return Err(Error::unsupported(
                    pid,
                    format!("fd {fd} is {target}, which cairn cannot checkpoint yet"),
                ));
            }
        } else if !target.starts_with('/') {
            return Err(Error::unsupported(
                pid,
                format!("fd {fd} is {target}, which cairn cannot checkpoint yet"),
            ));
        } else if target.ends_with(" (deleted)") {
            crate::kinds::contents::precheck_ghost(pid, fd, &target)?;
        } else {
            let link = format!("/proc/{pid}/fd/{fd}");
            if let Ok(md) = std::fs::metadata(&link) {
                check_file_type(pid, fd, &target, &md)?;
            }
        }
    }
    Ok(())
}

trait NonBlock {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}

impl NonBlock for std::fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NONBLOCK)
    }
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

/// Open file descriptions already created in some vessel, so that other
/// processes of the tree get the same description (pidfd_getfd), not a
/// copy: shared offsets and flags stay shared.
#[derive(Default)]
pub struct SharedFiles {
    /// description id -> (vessel pid, keeper fd there)
    descs: HashMap<u32, (i32, u64)>,
    /// pipe inode -> (vessel pid, read end, write end)
    pipes: HashMap<u64, (i32, u64, u64)>,
    /// FIFO inode (at dump) -> (vessel pid, an O_RDWR fd on it), which
    /// keeps the FIFO open for both sides while the fds are opened.
    fifos: HashMap<u64, (i32, u64)>,
    /// Every keeper fd, to be closed once all fd tables are done.
    pub keepers: Vec<(i32, u64)>,
    /// Restored IP sockets still in TCP repair mode (kinds::inet).
    pub inet: crate::kinds::inet::Restored,
}

impl SharedFiles {
    /// Offers description `id` as fd `fd` of process `owner` (a vessel or
    /// cairn itself), which keeps it open until every fd table is done.
    pub fn provide(&mut self, id: u32, owner: i32, fd: u64) {
        self.descs.insert(id, (owner, fd));
    }
}

/// Restores the fd table in the vessel, which must have no fds open.
pub fn restore_fds(
    agent: &mut Agent,
    table: &FdTable,
    idx: &FilesIndex,
    shared: &mut SharedFiles,
) -> Result<()> {
    let pid = agent.pid;
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
            agent.fetch_fd(owner, kfd)?
        } else {
            match &d.kind {
                Some(file_desc::Kind::Reg(r)) => {
                    // O_NOCTTY: a restored session leader must not pick
                    // up a controlling terminal just by reopening a tty.
                    let open_flags =
                        (r.flags as i32) & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC);
                    let path = idx.redirect.get(&id).unwrap_or(&r.path);
                    let fd = agent.open(path, open_flags | libc::O_CLOEXEC | libc::O_NOCTTY)?;
                    let is_reg = r
                        .stat
                        .as_ref()
                        .is_some_and(|s| s.mode & libc::S_IFMT == libc::S_IFREG);
                    if is_reg && r.pos > 0 {
                        agent.lseek(fd, r.pos, libc::SEEK_SET, path)?;
                    }
                    fd
                }
                Some(file_desc::Kind::Pipe(p)) => {
                    let (owner, r, w) = match shared.pipes.get(&p.pipe_ino) {
                        Some(&e) => e,
                        None => {
                            let (r, w) = create_pipe(agent, p.pipe_ino, idx)?;
                            let r = agent.dup_above(r, high)?;
                            let w = agent.dup_above(w, high)?;
                            shared.pipes.insert(p.pipe_ino, (pid, r, w));
                            shared.keepers.push((pid, r));
                            shared.keepers.push((pid, w));
                            (pid, r, w)
                        }
                    };
                    let end = if p.flags as i32 & libc::O_ACCMODE == libc::O_WRONLY {
                        w
                    } else {
                        r
                    };
                    let fd = agent.fetch_fd(owner, end)?;
                    agent.set_fl(fd, (p.flags & libc::O_NONBLOCK as u32) as u64)?;
                    fd
                }
                Some(file_desc::Kind::Fifo(f)) => open_fifo(agent, f, idx, shared, high)?,
                Some(
                    k @ (file_desc::Kind::Eventfd(_)
                    | file_desc::Kind::Signalfd(_)
                    | file_desc::Kind::Timerfd(_)
                    | file_desc::Kind::Epoll(_)
                    | file_desc::Kind::Inotify(_)
                    | file_desc::Kind::Memfd(_)),
                ) => crate::kinds::anonfd::create(agent, k)?.ok_or_else(|| {
                    Error::Restore(format!("pid {pid}: fd {first}: unknown kind"))
                })?,
                Some(file_desc::Kind::Inet(sk)) => {
                    crate::kinds::inet::create(agent, sk, &mut shared.inet)?
                }
                _ => {
                    return Err(Error::Restore(format!(
                        "pid {pid}: fd {first} has a description cairn cannot restore"
                    )))
                }
            }
        };
        // Move it out of the way of every target number; it stays open
        // as the keeper other processes fetch the description from.
        let hi = agent.dup_above(tmp, high)?;
        shared.descs.entry(id).or_insert((pid, hi));
        shared.keepers.push((pid, hi));
        staged.push((hi, fds));
    }
    for (hi, fds) in &staged {
        for f in fds {
            agent.dup3(*hi, f.fd as u64, f.cloexec)?;
        }
    }
    // Epoll watch lists name other fds: filled in once all are in place.
    crate::kinds::anonfd::populate_epolls(agent, table, idx)?;
    Ok(())
}

/// pipe2 in the vessel, refilled with the saved bytes. Returns (read, write).
fn create_pipe(agent: &mut Agent, ino: u64, idx: &FilesIndex) -> Result<(u64, u64)> {
    let pid = agent.pid;
    let (r, w) = agent.pipe2(libc::O_CLOEXEC)?;
    if let Some(pd) = idx.files.pipes.iter().find(|p| p.pipe_ino == ino) {
        if pd.capacity > 0 {
            // Best effort: a smaller pipe still holds the saved bytes,
            // which are checked when written below.
            let _ = agent.set_pipe_size(w, pd.capacity as u64);
        }
        if !pd.data.is_empty() {
            let link = format!("/proc/{pid}/fd/{w}");
            // Non-blocking: more bytes than the pipe holds (a damaged
            // image) fail instead of blocking the restore for good.
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags_nonblock()
                .open(&link)
                .at(&link)?;
            use std::io::Write;
            f.write_all(&pd.data).at(&link)?;
        }
    }
    Ok((r, w))
}

/// Opens a FIFO by path in the vessel with its saved flags. The first
/// open of a FIFO also opens it O_RDWR (kept until every fd table is done),
/// so that no open blocks or fails for want of the other side, and puts
/// the queued bytes back through that fd.
fn open_fifo(
    agent: &mut Agent,
    f: &FifoFile,
    idx: &FilesIndex,
    shared: &mut SharedFiles,
    high: u64,
) -> Result<u64> {
    let pid = agent.pid;
    let ino = f.stat.as_ref().map_or(0, |s| s.ino);
    if let std::collections::hash_map::Entry::Vacant(slot) = shared.fifos.entry(ino) {
        let k = agent.open(
            &f.path,
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY,
        )?;
        let hk = agent.dup_above(k, high)?;
        slot.insert((pid, hk));
        shared.keepers.push((pid, hk));
        if let Some(pd) = idx.files.pipes.iter().find(|p| p.fifo && p.pipe_ino == ino) {
            if pd.capacity > 0 {
                let _ = agent.set_pipe_size(hk, pd.capacity as u64);
            }
            if !pd.data.is_empty() {
                let link = format!("/proc/{pid}/fd/{hk}");
                let mut w = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags_nonblock()
                    .open(&link)
                    .at(&link)?;
                use std::io::Write;
                w.write_all(&pd.data).map_err(|e| Error::io(&f.path, e))?;
            }
        }
    }
    let fd = agent.open(
        &f.path,
        (f.flags as i32 & libc::O_ACCMODE) | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY,
    )?;
    agent.set_fl(
        fd,
        (f.flags & (libc::O_NONBLOCK | libc::O_APPEND) as u32) as u64,
    )?;
    Ok(fd)
}

/// Recreates the FIFOs of the images that vanished since the dump
/// (mkfifo with the saved mode). Call once nothing can
/// refuse the restore any more.
pub fn recreate_fifos(files: &Files) -> Result<()> {
    for d in &files.descs {
        let Some(file_desc::Kind::Fifo(f)) = &d.kind else {
            continue;
        };
        if std::fs::symlink_metadata(&f.path).is_ok() {
            continue;
        }
        let st = f.stat.as_ref();
        let mode = st.map_or(0o600, |s| s.mode & 0o7777);
        task::mkfifo(&f.path, mode).map_err(|e| Error::io(&f.path, e))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f.path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(&f.path, e))?;
        crate::warn!("{}: FIFO vanished since the dump; recreated", f.path);
    }
    Ok(())
}

/// chdir / chroot in the vessel.
pub fn restore_fs(agent: &mut Agent, cwd: Option<String>, root: Option<String>) -> Result<()> {
    // Both paths are as seen from cairn's root: chdir first, then chroot.
    if let Some(cwd) = cwd {
        agent.chdir(&cwd)?;
    }
    if let Some(root) = root.filter(|r| r != "/") {
        agent.chroot(&root)?;
    }
    Ok(())
}
