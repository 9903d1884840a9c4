//! The supervisor's end of libcairn (issue 18): the control connection of
//! a cooperating program, served by `cairn run` (and, wired by its
//! author, `cairn pair`). The protocol is [`proto`] (the library's own
//! file); docs/ARCHITECTURE.md ("libcairn") describes it.
//!
//! - [`Server::listen`] makes a `SOCK_SEQPACKET` socket under an
//!   abstract name derived from the job directory ([`socket_name`]),
//!   named in CMD's environment by `CAIRN_CONTROL_SOCKET=@NAME`; libcairn
//!   connects on its first call, so a program that never calls it holds
//!   no descriptor of cairn's and can be dumped from outside as any
//!   other. Who may connect is decided by the peer, not by file
//!   permissions: a process of the supervised tree (its pid, SO_PEERCRED,
//!   is a descendant of cairn's: [`in_tree`]), whatever its uid; any
//!   other is refused (-EACCES, [`proto::OP_REFUSED`]). One connection is
//!   served at a time; one that comes meanwhile waits at most
//!   [`CONNECT_WAIT`] for it to close, then is refused (-ETIMEDOUT), as
//!   are the waiting ones when a checkpoint is taken.
//!   [`Server::connect`] makes a socket pair instead, whose program's end
//!   ([`Handoff`]) a restore hands in with `--inherit-fd` in place of the
//!   connection the checkpoint had; [`Server::spare`] and
//!   [`Server::adopt`] do the same for `cairn pair`'s backups.
//! - [`Server::handle`], when that fd is readable: nonrestart data
//!   (stored in [`Store`] before the answer), the takeover data and the
//!   backup question are answered at once; a restart checkpoint is
//!   returned as [`Event::Checkpoint`] for the caller to take (a
//!   `--leave-running` dump with [`Server::external_key`]) and answer
//!   ([`Server::answer`]). The caller marks it in the store
//!   ([`Store::mark_restart`]) so that a restore from it queues the
//!   answer 1 on the new connection first ([`Server::queue_restored`]).
//! - Before any dump: [`Server::settle`] (the program has read every
//!   answer: the dump records no bytes queued in its end, which a restore
//!   with a new connection could not give back).
//!
//! The program's end has a receive timeout ([`RCV_TIMEOUT`]): a process
//! restored while it waited for an answer (a periodic checkpoint taken
//! between its request and the answer) wakes up on the new connection,
//! sees another socket at its fd and asks again; a request this
//! connection answered already (same pid and id) is dropped.

#[path = "../../libcairn/src/proto.rs"]
#[allow(dead_code)]
pub mod proto;
pub mod store;

use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use proto::Header;
pub use store::Store;

use crate::error::{Error, Result};
use crate::kinds::external::Key;
use crate::sys::{control as sys, sock};
use crate::{info, warn};

/// Receive timeout of the program's end: how soon a restored process
/// waiting for an answer notices its new connection.
pub const RCV_TIMEOUT: Duration = Duration::from_millis(proto::RCV_TIMEOUT_MS);

/// Send buffer of both ends: room for a few of the largest messages.
const SNDBUF: i32 = proto::SNDBUF as i32;

/// The program's end of a new connection, to hand to CMD or a restore.
pub struct Handoff {
    pub fd: OwnedFd,
    /// Its inode: the tree's fd is `socket:[ino]`.
    pub ino: u64,
}

/// A restart checkpoint the program asked for, to answer with
/// [`Server::answer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    pub pid: u32,
    pub id: u32,
}

/// What [`Server::handle`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Nothing for the caller (requests answered, or none).
    Idle,
    /// Nonrestart data stored and acknowledged (its length).
    Data(usize),
    /// A restart checkpoint to take, then answer.
    Checkpoint(Pending),
    /// The program closed its end (every process of the tree): the tree
    /// has no control connection any more.
    Closed,
}

/// The server of one job.
pub struct Server {
    /// The listening socket ([`Server::listen`]).
    listener: Option<OwnedFd>,
    /// Its abstract name (without the leading NUL).
    name: Option<String>,
    /// The connection: cairn's end and the inode of the program's.
    conn: Option<(OwnedFd, u64)>,
    /// Connections of the tree accepted while another one is served, in
    /// order, each with the end of its wait ([`CONNECT_WAIT`]).
    waiting: Vec<(OwnedFd, Instant)>,
    /// The epoll instance of [`Server::fd`]: the listener and the
    /// connection.
    ep: Option<OwnedFd>,
    /// No control at all (`--no-control`): nothing is listened to.
    off: bool,
    /// (pid, id) of the last request answered on this connection.
    last: Option<(u32, u32)>,
    backup: bool,
    store: Store,
    buf: Vec<u8>,
    /// When the store is to be synced (data acknowledged, not on disk).
    sync_at: Option<Instant>,
}

/// Data acknowledged before it is on disk is synced this soon after.
pub const SYNC_DELAY: Duration = Duration::from_millis(20);

/// How long a second connection waits for the first to close.
pub const CONNECT_WAIT: Duration = Duration::from_millis(proto::CONNECT_WAIT_MS);

/// At most this many connections wait; more are refused with -EBUSY.
pub const MAX_WAITING: usize = 8;

/// The abstract socket name of the job whose directory is (`dev`,
/// `ino`): the same for every supervisor of that directory, so that a
/// program restored by the next one reaches it under the name its
/// environment has.
pub fn socket_name(dev: u64, ino: u64) -> String {
    format!("cairn-control-{dev:x}-{ino:x}")
}

/// Whether `pid` (in cairn's pid namespace) is a descendant of this
/// process: a process of the tree cairn supervises (its parents, up to
/// cairn, through `/proc/PID/stat`). A process that left the tree (a
/// daemon reparented to the machine's init) is not.
pub fn in_tree(pid: i32) -> bool {
    let me = crate::sys::task::getpid();
    let mut p = pid;
    for _ in 0..4096 {
        if p == me {
            return p != pid;
        }
        if p <= 1 {
            return false;
        }
        match crate::procfs::read_stat(p) {
            Ok(st) => p = st.ppid,
            Err(_) => return false,
        }
    }
    false
}

fn sys_err(what: &str, e: std::io::Error) -> Error {
    Error::sys(
        crate::sys::task::getpid(),
        format!("control connection: {what}"),
        e,
    )
}

/// Sets the buffers (and, on the program's end, the receive timeout) of
/// a connection's socket.
fn set_opts(fd: &OwnedFd, program: bool) -> Result<()> {
    sock::set_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, SNDBUF)
        .map_err(|e| sys_err("SO_SNDBUF", e))?;
    if program {
        sock::set_timeval_us(fd, libc::SO_RCVTIMEO, RCV_TIMEOUT.as_micros() as u64)
            .map_err(|e| sys_err("SO_RCVTIMEO", e))?;
    } else {
        sock::set_fl(fd, libc::O_NONBLOCK | libc::O_RDWR).map_err(|e| sys_err("O_NONBLOCK", e))?;
    }
    Ok(())
}

/// Tells the program on connection `c` why it is not served
/// ([`proto::OP_REFUSED`]) and closes it.
fn refuse(c: OwnedFd, status: i32) {
    let h = Header {
        op: proto::OP_REFUSED,
        pid: 0,
        id: 0,
        status,
    }
    .encode();
    let _ = sys::send_packet(c.as_fd(), &h, &[]);
    // Closing a socket with unread requests would reset the peer
    // (ECONNRESET), which it would see before this answer.
    let mut b = [0u8; proto::HEADER];
    while sys::recv_packet(c.as_fd(), &mut b).is_ok_and(|n| n > 0) {}
}

fn pair() -> Result<(OwnedFd, Handoff)> {
    let (ours, theirs) =
        sock::socketpair(libc::SOCK_SEQPACKET).map_err(|e| sys_err("socketpair", e))?;
    set_opts(&ours, false)?;
    set_opts(&theirs, true)?;
    let ino = rustix::fs::fstat(&theirs)
        .map_err(|e| sys_err("fstat", e.into()))?
        .st_ino;
    Ok((ours, Handoff { fd: theirs, ino }))
}

/// A connection made for a backup ([`Server::spare`]), cairn's end.
pub struct Spare {
    sock: OwnedFd,
    ino: u64,
}

impl Server {
    /// A server storing in `store`, not connected: [`Server::listen`]
    /// makes the socket programs connect to, [`Server::connect`] a
    /// connection to hand in.
    pub fn new(store: Store) -> Server {
        Server {
            listener: None,
            name: None,
            conn: None,
            waiting: Vec::new(),
            ep: sys::epoll_new()
                .map_err(|e| warn!("control: epoll: {e}: one connection is polled at a time"))
                .ok(),
            off: false,
            last: None,
            backup: false,
            store,
            buf: vec![0u8; proto::MSG_MAX + 1],
            sync_at: None,
        }
    }

    /// Listens on the job's abstract unix socket ([`socket_name`]),
    /// named for CMD's environment as `@NAME`: no file system permission
    /// stands between it and a process of the tree that changed its uid;
    /// [`Server::handle`] serves only the tree's processes (peers whose
    /// pid is a descendant of cairn's, SO_PEERCRED), and refuses others
    /// with -EACCES. libcairn connects on its first call, so a program
    /// that never calls it holds nothing. Abstract names belong to a
    /// network namespace: a process of the tree in another one cannot
    /// connect. Fails if another supervisor of the same directory
    /// listens.
    pub fn listen(&mut self) -> Result<(OsString, OsString)> {
        let (dev, ino) = self.store.job_id()?;
        self.listen_as(&socket_name(dev, ino))
    }

    /// [`Server::listen`] under abstract name `name` (a backup that took
    /// over on another machine listens under the primary's name, which
    /// its environment has).
    pub fn listen_as(&mut self, name: &str) -> Result<(OsString, OsString)> {
        let l = sock::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK)
            .map_err(|e| sys_err("socket", e))?;
        let mut abs = vec![0u8];
        abs.extend_from_slice(name.as_bytes());
        sock::bind_unix(&l, &abs).map_err(|e| {
            let why = if e.raw_os_error() == Some(libc::EADDRINUSE) {
                "taken: another supervisor of this directory runs".to_string()
            } else {
                e.to_string()
            };
            Error::Usage(format!("control socket @{name}: {why}"))
        })?;
        sock::listen(&l, 16).map_err(|e| sys_err("listen", e))?;
        if let Some(ep) = &self.ep {
            sys::epoll_add(ep.as_fd(), l.as_fd()).map_err(|e| sys_err("epoll_ctl", e))?;
        }
        self.listener = Some(l);
        self.name = Some(name.to_string());
        Ok((proto::ENV_SOCKET.into(), format!("@{name}").into()))
    }

    /// The abstract name listened on, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Makes `c` (cairn's end, the program's end's inode) the connection
    /// served, or none.
    fn set_conn(&mut self, c: Option<(OwnedFd, u64)>) {
        if let (Some(ep), Some((fd, _))) = (&self.ep, &c) {
            if let Err(e) = sys::epoll_add(ep.as_fd(), fd.as_fd()) {
                warn!("control: epoll_ctl: {e}");
            }
        }
        self.conn = c;
        self.last = None;
    }

    /// Replaces the connection by a new one (for a restore).
    pub fn connect(&mut self) -> Result<Handoff> {
        let (sock, h) = pair()?;
        self.set_conn(Some((sock, h.ino)));
        Ok(h)
    }

    /// A new connection for a backup restored with `--inherit-fd`, not
    /// served until [`Server::adopt`]: `answer` (the restart checkpoint
    /// the backup is restored from) is answered 1 on it at once.
    pub fn spare(&self, answer: Option<Pending>) -> Result<(Spare, Handoff)> {
        let (sock, h) = pair()?;
        if let Some(p) = answer {
            let head = Header {
                op: proto::OP_CHECKPOINT,
                pid: p.pid,
                id: p.id,
                status: 1,
            }
            .encode();
            sys::send_packet(sock.as_fd(), &head, &[])
                .map_err(|e| sys_err("the answer of a backup", e))?;
        }
        let ino = h.ino;
        Ok((Spare { sock, ino }, h))
    }

    /// Serves `spare` from now on (the backup it was made for took over),
    /// or, with `None`, waits for the program to connect.
    pub fn adopt(&mut self, spare: Option<Spare>) {
        self.set_conn(spare.map(|s| (s.sock, s.ino)));
    }

    /// No control (`cairn run --no-control`): nothing is listened to,
    /// polled or dumped.
    pub fn close(&mut self) {
        self.off = true;
        self.conn = None;
        self.listener = None;
        self.waiting.clear();
    }

    /// The fd to poll for [`Server::handle`]: an epoll instance of the
    /// listener and the connection (a connection that comes while one is
    /// served is taken to wait, [`CONNECT_WAIT`]); without epoll, the
    /// connection's, or the listener's while there is none.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        if self.off || (self.conn.is_none() && self.listener.is_none()) {
            return None;
        }
        if let Some(ep) = &self.ep {
            return Some(ep.as_fd());
        }
        match (&self.conn, &self.listener) {
            (Some((c, _)), _) => Some(c.as_fd()),
            (None, Some(l)) => Some(l.as_fd()),
            (None, None) => None,
        }
    }

    /// What `--external` names the program's end of the connection by;
    /// `None` when there is none.
    pub fn external_key(&self) -> Option<Key> {
        self.conn.as_ref().map(|(_, ino)| Key::Socket(*ino))
    }

    /// The answer to cairn_is_backup() from now on.
    pub fn set_backup(&mut self, backup: bool) {
        self.backup = backup;
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    /// Queues the answer 1 to the restart checkpoint `p` on the current
    /// connection, before a restore from that checkpoint hands it in.
    pub fn queue_restored(&mut self, p: Pending) -> Result<()> {
        self.reply(proto::OP_CHECKPOINT, p.pid, p.id, 1, &[])
    }

    /// Answers restart checkpoint `p`: 0 when taken, a negative errno if
    /// not.
    pub fn answer(&mut self, p: Pending, status: i32) -> Result<()> {
        self.reply(proto::OP_CHECKPOINT, p.pid, p.id, status, &[])
    }

    fn reply(&mut self, op: u16, pid: u32, id: u32, status: i32, body: &[u8]) -> Result<()> {
        let h = Header {
            op,
            pid,
            id,
            status,
        }
        .encode();
        self.last = Some((pid, id));
        let Some((sock, _)) = &self.conn else {
            return Err(Error::sys(
                pid as i32,
                format!("control connection: answer to request {id} (op {op})"),
                std::io::Error::from_raw_os_error(libc::ENOTCONN),
            ));
        };
        sys::send_packet(sock.as_fd(), &h, body).map_err(|e| {
            Error::sys(
                pid as i32,
                format!("control connection: answer to request {id} (op {op})"),
                e,
            )
        })
    }

    /// Takes the connections waiting on the listener: a peer that is not
    /// of the tree is refused (-EACCES); the first becomes the
    /// connection if there is none, the others wait their turn.
    fn accept(&mut self) -> Result<()> {
        loop {
            let Some(l) = self.listener.as_ref() else {
                return Ok(());
            };
            let c = match sock::accept(l) {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(sys_err("accept", e)),
            };
            let cred = crate::sys::peercred::peer_cred(&c);
            let (pid, uid) = cred.as_ref().map_or((0, u32::MAX), |c| (c.pid, c.uid));
            if !in_tree(pid) {
                warn!(
                    "control: refused a connection of pid {pid} (uid {uid}): not a process of \
                     the supervised tree"
                );
                refuse(c, -libc::EACCES);
                continue;
            }
            if self.conn.is_none() {
                self.activate(c)?;
            } else if self.waiting.len() >= MAX_WAITING {
                warn!("control: pid {pid}: {MAX_WAITING} connections wait already: refused");
                refuse(c, -libc::EBUSY);
            } else {
                info!("control: pid {pid} connected while another connection is served: it waits");
                self.waiting.push((c, Instant::now() + CONNECT_WAIT));
            }
        }
    }

    /// Serves accepted connection `c` from now on.
    fn activate(&mut self, c: OwnedFd) -> Result<()> {
        set_opts(&c, false)?;
        // The program's end is the accepted socket's peer.
        let ours = rustix::fs::fstat(&c)
            .map_err(|e| sys_err("fstat", e.into()))?
            .st_ino;
        let peer = crate::sys::sockdiag::unix::by_ino(ours as u32)
            .ok()
            .and_then(|d| d.peer)
            .filter(|&p| p != 0)
            .ok_or_else(|| {
                sys_err(
                    "the program's end of a new connection (sock_diag)",
                    std::io::Error::from_raw_os_error(libc::ENOENT),
                )
            })?;
        info!("control: the job connected (socket:[{peer}])");
        self.set_conn(Some((c, peer as u64)));
        Ok(())
    }

    /// The connection closed: the first connection waiting is served.
    fn next_waiting(&mut self) {
        while self.conn.is_none() && !self.waiting.is_empty() {
            let (c, _) = self.waiting.remove(0);
            if let Err(e) = self.activate(c) {
                warn!("{e}");
            }
        }
    }

    /// Refuses the waiting connections whose wait ended (all with
    /// `all`), -ETIMEDOUT.
    fn expire(&mut self, all: bool) {
        let now = Instant::now();
        let (gone, kept): (Vec<_>, Vec<_>) = self
            .waiting
            .drain(..)
            .partition(|(_, end)| all || *end <= now);
        self.waiting = kept;
        for (c, _) in gone {
            info!("control: a waiting connection refused (-ETIMEDOUT)");
            refuse(c, -libc::ETIMEDOUT);
        }
    }

    /// Reads the requests waiting: answers all but a restart checkpoint,
    /// which it returns (the requests after it wait for the next call).
    pub fn handle(&mut self) -> Result<Event> {
        let mut ev = Event::Idle;
        if let Err(e) = self.accept() {
            warn!("{e}");
        }
        loop {
            let Some((sock, _)) = &self.conn else {
                return Ok(ev);
            };
            let n = match sys::recv_packet(sock.as_fd(), &mut self.buf) {
                Ok(0) => {
                    self.conn = None;
                    info!("control: the job closed its control connection");
                    self.next_waiting();
                    return Ok(Event::Closed);
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(ev),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::sys(
                        crate::sys::task::getpid(),
                        "control connection: recv",
                        e,
                    ))
                }
            };
            let msg = &self.buf[..n.min(self.buf.len())];
            let h = match proto::check_request(msg) {
                Ok(h) => h,
                Err(status) => {
                    let h = Header::decode(msg);
                    warn!("control: a bad request of {n} bytes ({h:?}): answered {status}");
                    if let Some(h) = h {
                        let _ = self.reply(h.op, h.pid, h.id, status, &[]);
                    }
                    continue;
                }
            };
            if self.last == Some((h.pid, h.id)) {
                info!(
                    "control: request {} of pid {} again (asked again after a restore): answered already",
                    h.id, h.pid
                );
                continue;
            }
            match h.op {
                proto::OP_CHECKPOINT => {
                    return Ok(Event::Checkpoint(Pending {
                        pid: h.pid,
                        id: h.id,
                    }))
                }
                proto::OP_DATA => {
                    let len = n - proto::HEADER;
                    let r = self.store.put(&self.buf[proto::HEADER..n]);
                    let status = match &r {
                        Ok(()) => 0,
                        Err(e) => {
                            warn!("control: cannot store the data of pid {}: {e}", h.pid);
                            -(e.raw_os_error().unwrap_or(libc::EIO))
                        }
                    };
                    if r.is_ok() && self.sync_at.is_none() {
                        self.sync_at = Some(Instant::now() + SYNC_DELAY);
                    }
                    self.reply_logged(h, status, &[]);
                    ev = Event::Data(len);
                }
                proto::OP_TAKEOVER => {
                    let data = self.store.latest().map(|d| d.to_vec());
                    match data {
                        Some(d) => self.reply_logged(h, d.len() as i32, &d),
                        None => self.reply_logged(h, -libc::ENODATA, &[]),
                    }
                }
                proto::OP_IS_BACKUP => self.reply_logged(h, self.backup as i32, &[]),
                _ => self.reply_logged(h, -libc::EINVAL, &[]),
            }
        }
    }

    fn reply_logged(&mut self, h: Header, status: i32, body: &[u8]) {
        if let Err(e) = self.reply(h.op, h.pid, h.id, status, body) {
            warn!("{e}");
        }
    }

    /// When [`Server::sync`] is due next: the store is to be synced, or
    /// a waiting connection's wait ends.
    pub fn sync_at(&self) -> Option<Instant> {
        let w = self.waiting.iter().map(|(_, end)| *end).min();
        [self.sync_at, w].into_iter().flatten().min()
    }

    /// Puts the acknowledged data on disk (fdatasync); refuses the
    /// connections whose wait ended.
    pub fn sync(&mut self) {
        self.expire(false);
        if self.sync_at.take().is_some() {
            if let Err(e) = self.store.sync() {
                warn!("control: {e}");
            }
        }
    }

    /// Before a dump: the data is on disk, the connections waiting are
    /// refused (-ETIMEDOUT: the dump would find them connected to
    /// cairn), and the program has read every answer (waits up to `max`).
    /// False if it has not: a dump now would record answers queued in its
    /// end, which a restore with a new connection cannot give back.
    pub fn settle(&mut self, max: Duration) -> bool {
        self.sync();
        self.expire(true);
        if let Some((c, _)) = &self.conn {
            let ev = crate::sys::poll::poll_now(c, libc::POLLIN).unwrap_or(0);
            if ev & libc::POLLHUP != 0 {
                info!("control: the job closed its control connection");
                self.conn = None;
            }
        }
        let Some((c, ino)) = &self.conn else {
            return true;
        };
        let end = Instant::now() + max;
        loop {
            match sys::outq(c.as_fd()) {
                Ok(0) => return true,
                Ok(_) if Instant::now() < end => std::thread::sleep(Duration::from_millis(1)),
                Ok(n) => {
                    warn!(
                        "control: the job has not read {n} bytes of answers on its control \
                         connection (socket:[{ino}])"
                    );
                    return false;
                }
                Err(e) => {
                    warn!("control: SIOCOUTQ: {e}");
                    return false;
                }
            }
        }
    }
}

/// The external socket of the checkpoint in `images`: the key of the
/// tree's control connection, if the tree had one.
pub fn image_key(images: &Path) -> Result<Option<Key>> {
    use crate::image::proto::file_desc;
    use crate::image::{names, ImageDir, ImageType};
    let (dir, _) = ImageDir::load(images)?;
    let files: crate::image::proto::Files = dir.read(ImageType::Files, names::FILES)?;
    let keys = files.descs.iter().filter_map(|d| match &d.kind {
        Some(file_desc::Kind::External(x)) => crate::kinds::external::parse_key(&x.key)
            .ok()
            .filter(|k| matches!(k, Key::Socket(_)) && x.sock_type == libc::SOCK_SEQPACKET as u32),
        _ => None,
    });
    Ok(keys.into_iter().next())
}
