//! The fd kinds: one [`FdKind`] per kind of open file description, and
//! the one list of them ([`KINDS`], [`kind_of`]).
//!
//! A kind says whether it claims an fd before anything is frozen
//! ([`FdKind::precheck`]), turns a frozen fd into its image
//! ([`FdKind::describe`]), checks an image description
//! ([`FdKind::validate`]), and recreates the description in a vessel
//! ([`FdKind::open`], then [`FdKind::post_open`] once the whole fd table
//! of the process is in place). The engine in [`crate::kinds::files`]
//! does everything between kinds: shared descriptions (kcmp at dump,
//! pidfd_getfd at restore), fd numbers and close-on-exec, and the order
//! of the restore phases. Kinds never call each other.
//!
//! Adding a kind: its module with a unit struct implementing [`FdKind`],
//! its `file_desc` variant in the proto, one entry in [`KINDS`] and one
//! arm in [`kind_of`] (the compiler insists on the latter), its test and
//! its docs (docs/ARCHITECTURE.md, "Adding an fd kind").

use std::cell::OnceCell;
use std::collections::HashMap;
use std::fs::Metadata;
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::image::proto::{file_desc, Fd, FdTable, Files};
use crate::kinds::files::FilesIndex;
use crate::kinds::{anonfd, external, fifo, inet, netlink, packet, pipe, regular, tty, unix};
use crate::procfs::{self, FdInfo};
use crate::remote::Calls;

/// One kind of open file description.
pub trait FdKind: Sync {
    /// Short name, for messages and docs ("eventfd", "unix socket" ...).
    fn name(&self) -> &'static str;

    /// Before anything is frozen: whether this kind claims fd `f` (true),
    /// leaves it to the next kind (false), or refuses it (an error naming
    /// pid, fd and the reason). `f` has no fdinfo here.
    fn precheck(&self, f: &FdRef) -> Result<bool>;

    /// Dump (the process frozen): the image of a description seen for the
    /// first time, or None if it is not of this kind.
    fn describe(&self, f: &FdRef, cx: &mut DumpCx) -> Result<Option<file_desc::Kind>>;

    /// Checks one description of this kind from files.img (`obj` names
    /// it: "description 7"). Pure: no system calls.
    fn validate(&self, k: &file_desc::Kind, path: &Path, obj: &str) -> Result<()>;

    /// Checks what this kind keeps in files.img besides descriptions
    /// (pipe buffers, pty pairs, the socket graph ...), after every
    /// description passed [`FdKind::validate`].
    fn validate_files(&self, _f: &Files, _path: &Path) -> Result<()> {
        Ok(())
    }

    /// Restore: creates the description `k` in the process `calls` runs
    /// in and returns its fd there (close-on-exec; the engine moves it to
    /// its numbers and offers it to the other processes).
    fn open(&self, k: &file_desc::Kind, calls: &mut dyn Calls, cx: &mut RestoreCx) -> Result<u64>;

    /// Restore, before any fd table: a kind whose descriptions are
    /// rebuilt in cairn (unix sockets, terminals) rebuilds them all and
    /// offers each with [`SharedFiles::provide`]; the vessels then fetch
    /// them instead of calling [`FdKind::open`].
    fn prepare(&self, _files: &Files, _shared: &mut SharedFiles, _shell_job: bool) -> Result<()> {
        Ok(())
    }

    /// The file status flags besides [`SETFL_FLAGS`] (which the engine
    /// sets on every kind after `open`) that this kind's `open` gives the
    /// new description as they were: a description with any other flag
    /// is refused at dump, since it would come back without it. The
    /// default: the access mode and the kernel's O_LARGEFILE.
    fn open_flags(&self) -> u32 {
        libc::O_ACCMODE as u32 | KERNEL_O_LARGEFILE
    }

    /// Once every fd of the process is in place: what names other fds
    /// (epoll watch lists). Run for each fd of the table, in table order.
    fn post_open(
        &self,
        _k: &file_desc::Kind,
        _calls: &mut dyn Calls,
        _fd: &Fd,
        _table: &FdTable,
    ) -> Result<()> {
        Ok(())
    }
}

/// The file status flags `fcntl(F_SETFL)` changes, which the engine
/// restores on every kind ([`crate::kinds::files`]): O_APPEND,
/// O_NONBLOCK, O_DIRECT, O_NOATIME and O_ASYNC (FASYNC).
pub const SETFL_FLAGS: u32 =
    (libc::O_APPEND | libc::O_NONBLOCK | libc::O_DIRECT | libc::O_NOATIME | libc::O_ASYNC) as u32;

/// The kernel's `O_LARGEFILE` on x86-64, set on every file it opens for a
/// 64-bit process (the libc constant is 0 there).
pub const KERNEL_O_LARGEFILE: u32 = 0o100000;

/// The kernel's `__O_SYNC` bit (`O_SYNC` is `__O_SYNC | O_DSYNC`).
const KERNEL_O_SYNC: u32 = 0o4000000;

/// [`FdKind::open_flags`] of a kind that reopens its file with the saved
/// flags: what open keeps in f_flags (the access mode, O_LARGEFILE,
/// O_DSYNC, O_SYNC, O_DIRECTORY, O_NOFOLLOW, O_PATH).
pub const REOPEN_FLAGS: u32 =
    (libc::O_ACCMODE | libc::O_DSYNC | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_PATH) as u32
        | KERNEL_O_SYNC
        | KERNEL_O_LARGEFILE;

/// Names of file status flag bits, for messages: "O_APPEND|O_DIRECT".
pub fn flag_names(bits: u32) -> String {
    const NAMES: &[(u32, &str)] = &[
        (0o1, "O_WRONLY"),
        (0o2, "O_RDWR"),
        (0o200, "O_EXCL"),
        (0o2000, "O_APPEND"),
        (0o4000, "O_NONBLOCK"),
        (0o10000, "O_DSYNC"),
        (0o20000, "O_ASYNC"),
        (0o40000, "O_DIRECT"),
        (KERNEL_O_LARGEFILE, "O_LARGEFILE"),
        (0o200000, "O_DIRECTORY"),
        (0o400000, "O_NOFOLLOW"),
        (0o1000000, "O_NOATIME"),
        (0o2000000, "O_CLOEXEC"),
        (KERNEL_O_SYNC, "O_SYNC"),
        (0o10000000, "O_PATH"),
        (0o20000000, "O_TMPFILE"),
    ];
    let mut out: Vec<String> = Vec::new();
    let mut rest = bits;
    for &(b, n) in NAMES {
        if bits & b != 0 {
            out.push(n.to_string());
            rest &= !b;
        }
    }
    if rest != 0 {
        out.push(format!("{rest:#o}"));
    }
    if out.is_empty() {
        return "none".into();
    }
    out.join("|")
}

/// Refuses a description whose file status flags `flags` (fdinfo's) the
/// restore of `kind` cannot give back: flags that only open sets and
/// that the kind's `open` does not repeat ([`FdKind::open_flags`]).
pub fn check_flags(kind: &dyn FdKind, pid: i32, fd: i32, target: &str, flags: u32) -> Result<()> {
    let lost = flags & !(libc::O_CLOEXEC as u32) & !(SETFL_FLAGS | kind.open_flags());
    if lost == 0 {
        return Ok(());
    }
    Err(Error::unsupported(
        pid,
        format!(
            "fd {fd} ({target}): file status flag {} cannot be restored on a {} \
             (only open sets it, and cairn recreates this kind otherwise)",
            flag_names(lost),
            kind.name()
        ),
    ))
}

/// Every fd kind, in the order precheck and describe ask them: the
/// anon-inode kinds, sockets, pipes, FIFOs, terminals, then files by path
/// (regular files, directories, plain devices) last.
pub static KINDS: &[&dyn FdKind] = &[
    // Only the objects named with --external: before their own kinds.
    &external::External,
    &anonfd::eventfd::Eventfd,
    &anonfd::signalfd::Signalfd,
    &anonfd::timerfd::Timerfd,
    &anonfd::epoll::Epoll,
    &anonfd::inotify::Inotify,
    &anonfd::memfd::Memfd,
    &anonfd::pidfd::Pidfd,
    &anonfd::fanotify::Fanotify,
    &inet::Inet,
    &unix::Unix,
    &netlink::Netlink,
    &packet::Packet,
    &pipe::Pipe,
    &fifo::Fifo,
    &tty::Tty,
    &regular::Regular,
    &regular::FsPathKind,
];

/// The kind of an image description. Exhaustive: a new `file_desc`
/// variant without a kind does not compile.
pub fn kind_of(k: &file_desc::Kind) -> &'static dyn FdKind {
    use file_desc::Kind as K;
    match k {
        K::Eventfd(_) => &anonfd::eventfd::Eventfd,
        K::Signalfd(_) => &anonfd::signalfd::Signalfd,
        K::Timerfd(_) => &anonfd::timerfd::Timerfd,
        K::Epoll(_) => &anonfd::epoll::Epoll,
        K::Inotify(_) => &anonfd::inotify::Inotify,
        K::Memfd(_) => &anonfd::memfd::Memfd,
        K::Pidfd(_) => &anonfd::pidfd::Pidfd,
        K::Inet(_) => &inet::Inet,
        K::Unix(_) => &unix::Unix,
        K::Netlink(_) => &netlink::Netlink,
        K::Packet(_) => &packet::Packet,
        K::Fanotify(_) => &anonfd::fanotify::Fanotify,
        K::Pipe(_) => &pipe::Pipe,
        K::Fifo(_) => &fifo::Fifo,
        K::Tty(_) => &tty::Tty,
        K::Reg(_) => &regular::Regular,
        K::FsPath(_) => &regular::FsPathKind,
        K::External(_) => &external::External,
    }
}

/// The error of a kind handed a description of another kind (an engine
/// bug, never an image's fault: [`kind_of`] picks the kind).
pub fn not_mine(kind: &dyn FdKind) -> Error {
    Error::Restore(format!(
        "internal: the {} kind was given another kind's description",
        kind.name()
    ))
}

/// One fd of a process as precheck and describe see it: the link target,
/// its fdinfo (dump only), and what is read about it on demand (the
/// file's metadata, the socket protocol), read at most once.
pub struct FdRef<'a> {
    pub pid: i32,
    pub fd: i32,
    /// readlink of /proc/PID/fd/FD.
    pub target: &'a str,
    info: Option<&'a FdInfo>,
    md: OnceCell<Metadata>,
    proto: OnceCell<String>,
}

impl<'a> FdRef<'a> {
    pub fn new(pid: i32, fd: i32, target: &'a str, info: Option<&'a FdInfo>) -> Self {
        FdRef {
            pid,
            fd,
            target,
            info,
            md: OnceCell::new(),
            proto: OnceCell::new(),
        }
    }

    /// /proc/PID/fd/FD.
    pub fn link(&self) -> String {
        format!("/proc/{}/fd/{}", self.pid, self.fd)
    }

    /// `("pipe", 1234)` for `pipe:[1234]`.
    pub fn anon(&self) -> Option<(&'a str, u64)> {
        procfs::parse_anon_link(self.target)
    }

    /// The inode of a socket fd.
    pub fn socket_ino(&self) -> Option<u64> {
        match self.anon() {
            Some(("socket", ino)) => Some(ino),
            _ => None,
        }
    }

    /// The protocol of a socket fd ("UNIX", "TCP", ... or "unknown").
    pub fn proto(&self) -> &str {
        self.proto.get_or_init(|| {
            crate::sys::sock::proto_name(&self.link()).unwrap_or_else(|_| "unknown".into())
        })
    }

    /// The file behind the fd (stat through the link).
    pub fn metadata(&self) -> Result<&Metadata> {
        if let Some(m) = self.md.get() {
            return Ok(m);
        }
        let link = self.link();
        let m = std::fs::metadata(&link).at(&link)?;
        Ok(self.md.get_or_init(|| m))
    }

    /// The fdinfo (dump only).
    pub fn info(&self) -> Result<&'a FdInfo> {
        self.info.ok_or_else(|| {
            Error::unsupported(
                self.pid,
                format!("internal: fd {} has no fdinfo at this point", self.fd),
            )
        })
    }

    /// File status flags without O_CLOEXEC (0 without fdinfo).
    pub fn flags(&self) -> u32 {
        self.info.map_or(0, |i| i.flags & !(libc::O_CLOEXEC as u32))
    }

    /// File position (0 without fdinfo).
    pub fn pos(&self) -> u64 {
        self.info.map_or(0, |i| i.pos)
    }

    /// For an fd on a path: the path a deleted file is saved under, or
    /// None if the file is not deleted. A deleted file that is not a
    /// regular file is refused.
    pub fn ghost(&self) -> Result<Option<String>> {
        let md = self.metadata()?;
        let ghost = crate::kinds::contents::ghost_path(self.target, md);
        if ghost.is_some() && !md.file_type().is_file() {
            return Err(Error::unsupported(
                self.pid,
                format!(
                    "fd {} refers to deleted {}, which is not a regular file",
                    self.fd, self.target
                ),
            ));
        }
        Ok(ghost)
    }

    /// "fd N is TARGET, which cairn cannot checkpoint yet".
    pub fn not_yet(&self) -> Error {
        Error::unsupported(
            self.pid,
            format!(
                "fd {} is {}, which cairn cannot checkpoint yet",
                self.fd, self.target
            ),
        )
    }
}

/// What the kinds keep while a tree is dumped.
#[derive(Default)]
pub struct DumpCx {
    /// Pipes and FIFOs whose queued bytes are read at the end.
    pub pipes: pipe::PipeDump,
    /// Unix sockets.
    pub unix: unix::UnixDump,
    /// IP sockets, their repair mode and the network lock.
    pub inet: inet::DumpState,
    /// Terminals.
    pub tty: tty::TtyDump,
    /// Mapped deleted files and memfds.
    pub mapfiles: crate::kinds::memory::MapFiles,
    /// The objects named with --external (kinds::external).
    pub external: external::ExternalDump,
}

/// What [`FdKind::open`] gets besides the description: the images, the
/// descriptions other processes already hold, and the fd numbers free for
/// temporary use.
pub struct RestoreCx<'a, 'b> {
    pub idx: &'a FilesIndex<'b>,
    pub shared: &'a mut SharedFiles,
    /// Fds at or above this number are free: a kind that keeps an fd open
    /// in the vessel (a pipe's other end) moves it there.
    pub high: u64,
    /// The description's id.
    pub id: u32,
    /// The first fd of the table that refers to it, for messages.
    pub fd: u32,
}

impl RestoreCx<'_, '_> {
    /// "pid P: fd N has a description cairn cannot restore".
    pub fn cannot(&self, pid: i32) -> Error {
        Error::Restore(format!(
            "pid {pid}: fd {} has a description cairn cannot restore",
            self.fd
        ))
    }
}

/// Open file descriptions already created in some vessel, so that other
/// processes of the tree get the same description (pidfd_getfd), not a
/// copy: shared offsets and flags stay shared. Also what the kinds keep
/// during a restore.
#[derive(Default)]
pub struct SharedFiles {
    /// description id -> (vessel pid, keeper fd there)
    pub(crate) descs: HashMap<u32, (i32, u64)>,
    /// Every keeper fd, to be closed once all fd tables are done.
    pub keepers: Vec<(i32, u64)>,
    /// Pipes created so far (kinds::pipe).
    pub(crate) pipes: pipe::PipeRestore,
    /// FIFOs opened so far (kinds::fifo).
    pub(crate) fifos: fifo::FifoRestore,
    /// Restored IP sockets still in TCP repair mode (kinds::inet).
    pub inet: inet::InetRestore,
    /// Unix sockets rebuilt in cairn, until every vessel fetched its own
    /// (kinds::unix).
    pub unix: unix::UnixRestore,
    /// Terminals rebuilt in cairn and what is left to do with them
    /// (kinds::tty).
    pub tty: tty::TtyRestore,
    /// Packet sockets to join to their fanout groups (kinds::packet).
    pub(crate) fanout: packet::FanoutRestore,
    /// Descriptions whose file status flags are set and checked (once,
    /// in the first process that has them).
    pub(crate) flags_done: std::collections::HashSet<u32>,
}

impl SharedFiles {
    /// Offers description `id` as fd `fd` of process `owner` (a vessel or
    /// cairn itself), which keeps it open until every fd table is done.
    pub fn provide(&mut self, id: u32, owner: i32, fd: u64) {
        self.descs.insert(id, (owner, fd));
    }

    /// Before any fd table: each kind that rebuilds its descriptions in
    /// cairn (unix sockets, then terminals) does so, in [`KINDS`] order,
    /// and offers them to the vessels.
    pub fn prepare(&mut self, files: &Files, shell_job: bool) -> Result<()> {
        for k in KINDS {
            k.prepare(files, self, shell_job)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_every_kind_is_listed() {
        let mut names: Vec<&str> = KINDS.iter().map(|k| k.name()).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "two kinds share a name");
        use crate::image::proto as p;
        use file_desc::Kind as K;
        for k in [
            K::Eventfd(p::EventFd::new()),
            K::Signalfd(p::SignalFd::new()),
            K::Timerfd(p::TimerFd::new()),
            K::Epoll(p::EventPoll::new()),
            K::Inotify(p::Inotify::new()),
            K::Memfd(p::MemFd::new()),
            K::Pidfd(p::PidFd::new()),
            K::Inet(p::InetSk::new()),
            K::Unix(p::UnixSocket::new()),
            K::Netlink(p::netlink::NetlinkSk::new()),
            K::Packet(p::netlink::PacketSk::new()),
            K::Fanotify(p::netlink::Fanotify::new()),
            K::Pipe(p::PipeFile::new()),
            K::Fifo(p::FifoFile::new()),
            K::Tty(p::TtyFile::new()),
            K::Reg(p::RegFile::new()),
            K::FsPath(p::FsPath::new()),
            K::External(p::external::ExternalFd::new()),
        ] {
            let name = kind_of(&k).name();
            assert!(
                KINDS.iter().any(|x| x.name() == name),
                "{name} is not in KINDS"
            );
        }
    }
}
