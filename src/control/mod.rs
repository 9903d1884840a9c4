//! The supervisor's end of libcairn (issue 18): the control connection of
//! a cooperating program, served by `cairn run` (and, wired by its
//! author, `cairn pair`). The protocol is [`proto`] (the library's own
//! file); docs/ARCHITECTURE.md ("libcairn") describes it.
//!
//! - [`Server::new`] makes the connection, a `SOCK_SEQPACKET` socket pair:
//!   the program's end ([`Handoff`]) goes to CMD (the fd number in
//!   `CAIRN_CONTROL_FD`), or to a restore with `--inherit-fd`; cairn keeps
//!   the other, non-blocking, which [`Server::fd`] gives to poll.
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
pub const RCV_TIMEOUT: Duration = Duration::from_millis(100);

/// Send buffer of both ends: room for a few of the largest messages.
const SNDBUF: i32 = 4 * proto::MSG_MAX as i32;

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
    sock: OwnedFd,
    /// Inode of the program's end of the current connection.
    tree_ino: u64,
    closed: bool,
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

fn pair() -> Result<(OwnedFd, Handoff)> {
    let me = crate::sys::task::getpid();
    let (ours, theirs) = sock::socketpair(libc::SOCK_SEQPACKET)
        .map_err(|e| Error::sys(me, "socketpair for the control connection", e))?;
    let set = |fd: &OwnedFd, what: &str, r: std::io::Result<()>| {
        r.map_err(|e| Error::sys(me, format!("control connection: {what} on fd {fd:?}"), e))
    };
    set(
        &ours,
        "O_NONBLOCK",
        sock::set_fl(&ours, libc::O_NONBLOCK | libc::O_RDWR),
    )?;
    for fd in [&ours, &theirs] {
        set(
            fd,
            "SO_SNDBUF",
            sock::set_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, SNDBUF),
        )?;
    }
    set(
        &theirs,
        "SO_RCVTIMEO",
        sock::set_timeval_us(&theirs, libc::SO_RCVTIMEO, RCV_TIMEOUT.as_micros() as u64),
    )?;
    let ino = rustix::fs::fstat(&theirs)
        .map_err(|e| Error::sys(me, "fstat of the control socket", e))?
        .st_ino;
    Ok((ours, Handoff { fd: theirs, ino }))
}

impl Server {
    /// A server storing in `store`, with a first connection.
    pub fn new(store: Store) -> Result<(Server, Handoff)> {
        let (sock, h) = pair()?;
        let s = Server {
            sock,
            tree_ino: h.ino,
            closed: false,
            last: None,
            backup: false,
            store,
            buf: vec![0u8; proto::MSG_MAX + 1],
            sync_at: None,
        };
        Ok((s, h))
    }

    /// Replaces the connection by a new one (for a restore or a backup).
    pub fn connect(&mut self) -> Result<Handoff> {
        let (sock, h) = pair()?;
        self.sock = sock;
        self.tree_ino = h.ino;
        self.closed = false;
        self.last = None;
        Ok(h)
    }

    /// The program will not use the connection (`cairn run --no-control`,
    /// or a restored tree without it): nothing is polled or dumped for it.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// The fd to poll for [`Server::handle`]; `None` once the program
    /// closed its end.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        (!self.closed).then_some(self.sock.as_fd())
    }

    /// What `--external` names the tree's end by; `None` once the tree
    /// closed it.
    pub fn external_key(&self) -> Option<Key> {
        (!self.closed).then_some(Key::Socket(self.tree_ino))
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
        sys::send_packet(self.sock.as_fd(), &h, body).map_err(|e| {
            Error::sys(
                pid as i32,
                format!("control connection: answer to request {id} (op {op})"),
                e,
            )
        })
    }

    /// Reads the requests waiting: answers all but a restart checkpoint,
    /// which it returns (the requests after it wait for the next call).
    pub fn handle(&mut self) -> Result<Event> {
        let mut ev = Event::Idle;
        loop {
            if self.closed {
                return Ok(Event::Closed);
            }
            let n = match sys::recv_packet(self.sock.as_fd(), &mut self.buf) {
                Ok(0) => {
                    self.closed = true;
                    info!("control: the job closed its control connection");
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

    /// When the store is to be synced next ([`Server::sync`]).
    pub fn sync_at(&self) -> Option<Instant> {
        self.sync_at
    }

    /// Puts the acknowledged data on disk (fdatasync).
    pub fn sync(&mut self) {
        if self.sync_at.take().is_some() {
            if let Err(e) = self.store.sync() {
                warn!("control: {e}");
            }
        }
    }

    /// Before a dump: the data is on disk, and the program has read every
    /// answer (waits up to `max`). False if it has not: a dump now would
    /// record answers queued in its end, which a restore with a new
    /// connection cannot give back.
    pub fn settle(&mut self, max: Duration) -> bool {
        self.sync();
        if !self.closed {
            let ev = crate::sys::poll::poll_now(&self.sock, libc::POLLIN).unwrap_or(0);
            if ev & libc::POLLHUP != 0 {
                info!("control: the job closed its control connection");
                self.closed = true;
            }
        }
        if self.closed {
            return true;
        }
        let end = Instant::now() + max;
        loop {
            match sys::outq(self.sock.as_fd()) {
                Ok(0) => return true,
                Ok(_) if Instant::now() < end => std::thread::sleep(Duration::from_millis(1)),
                Ok(n) => {
                    warn!(
                        "control: the job has not read {n} bytes of answers on its control \
                         connection (socket:[{}])",
                        self.tree_ino
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
