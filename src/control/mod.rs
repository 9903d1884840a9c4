//! The supervisor's end of libcairn (issue 18): the control connection of
//! a cooperating program, served by `cairn run` (and, wired by its
//! author, `cairn pair`). The protocol is [`proto`] (the library's own
//! file); docs/ARCHITECTURE.md ("libcairn") describes it.
//!
//! - [`Server::listen`] makes a `SOCK_SEQPACKET` socket at
//!   `DIR/control/sock` (0700 directory, cairn's) named in CMD's
//!   environment by `CAIRN_CONTROL_SOCKET`; libcairn connects on its
//!   first call, so a program that never calls it holds no descriptor of
//!   cairn's and can be dumped from outside as any other. One connection
//!   is served at a time (the next is accepted when it closes).
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

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use proto::Header;
pub use store::Store;

use crate::error::{Error, Result};
use crate::kinds::external::Key;
use crate::sys::{control as sys, safefs, sock};
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
    /// The listening socket at `control/sock` ([`Server::listen`]).
    listener: Option<OwnedFd>,
    /// The connection: cairn's end and the inode of the program's.
    conn: Option<(OwnedFd, u64)>,
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

/// The name of the listening socket in `control/`.
pub const SOCK_NAME: &str = "sock";

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
            conn: None,
            off: false,
            last: None,
            backup: false,
            store,
            buf: vec![0u8; proto::MSG_MAX + 1],
            sync_at: None,
        }
    }

    /// Listens at `control/sock` in the job's directory (0700, cairn's),
    /// replacing a socket a previous supervisor left there; the variable
    /// that names it for CMD's environment. libcairn connects on its
    /// first call, so a program that never calls it holds nothing.
    pub fn listen(&mut self) -> Result<(OsString, OsString)> {
        let path = self.store.dir_path().join(SOCK_NAME);
        let dir = self.store.dir()?;
        match safefs::lstatat(dir, OsStr::new(SOCK_NAME)) {
            Ok(st) if safefs::file_type(&st) == rustix::fs::FileType::Socket => {
                rustix::fs::unlinkat(dir, SOCK_NAME, rustix::fs::AtFlags::empty())
                    .map_err(|e| Error::io(&path, e.into()))?;
            }
            Ok(_) => {
                return Err(Error::Usage(format!(
                    "{}: exists and is not a socket",
                    path.display()
                )))
            }
            Err(_) => {}
        }
        let l = sock::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK)
            .map_err(|e| sys_err("socket", e))?;
        // Through the directory's fd: the path may be longer than a
        // socket name can be, and no link on the way is followed.
        let via = format!("/proc/self/fd/{}/{SOCK_NAME}", dir.as_raw_fd());
        sock::bind_unix(&l, via.as_bytes()).map_err(|e| Error::io(&path, e))?;
        sock::listen(&l, 4).map_err(|e| sys_err("listen", e))?;
        self.listener = Some(l);
        Ok((proto::ENV_SOCKET.into(), path.into_os_string()))
    }

    /// Replaces the connection by a new one (for a restore).
    pub fn connect(&mut self) -> Result<Handoff> {
        let (sock, h) = pair()?;
        self.conn = Some((sock, h.ino));
        self.last = None;
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
        self.conn = spare.map(|s| (s.sock, s.ino));
        self.last = None;
    }

    /// No control (`cairn run --no-control`): nothing is listened to,
    /// polled or dumped.
    pub fn close(&mut self) {
        self.off = true;
        self.conn = None;
        self.listener = None;
    }

    /// The fd to poll for [`Server::handle`]: the connection's, or the
    /// listener's while there is none.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
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

    /// Takes a connection waiting on the listener, if there is none.
    fn accept(&mut self) -> Result<()> {
        let Some(l) = self.listener.as_ref().filter(|_| self.conn.is_none()) else {
            return Ok(());
        };
        let c = match sock::accept(l) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(sys_err("accept", e)),
        };
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
        self.conn = Some((c, peer as u64));
        self.last = None;
        Ok(())
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

impl Drop for Server {
    /// Removes the listening socket.
    fn drop(&mut self) {
        if self.listener.take().is_some() {
            if let Ok(dir) = self.store.dir() {
                let _ = rustix::fs::unlinkat(dir, SOCK_NAME, rustix::fs::AtFlags::empty());
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
