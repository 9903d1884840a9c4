//! libcairn: checkpoints driven by the program itself, under a cairn
//! supervisor (`cairn run`, `cairn pair`); the NonStop model of process
//! pairs (issue 18).
//!
//! - [`checkpoint`]: a restart checkpoint at this point. It returns
//!   [`Resumed::Continued`] in the process that goes on and
//!   [`Resumed::Restored`] in a process restored from that checkpoint
//!   (like fork's two returns).
//! - [`checkpoint_data`]: a nonrestart checkpoint: at most [`DATA_MAX`]
//!   bytes (64 KiB), sent to the supervisor, which keeps the newest.
//! - [`takeover_data`]: that newest data, in a process that was restored
//!   or took over.
//! - [`is_backup`]: whether this process is a backup.
//!
//! The supervisor names its socket in the environment
//! ([`proto::ENV_SOCKET`]); the library connects on its first call (a
//! program that never calls it holds nothing of the supervisor's), and
//! every call fails with `ENOTCONN` in a program not under a supervisor. The C
//! interface (`include/cairn.h`, `libcairn.so`) is the same with negative
//! errno values. Calls of one process are serialized; the connection
//! belongs to the process that made the first call (other processes of
//! the tree get `EBUSY`). See docs/ARCHITECTURE.md ("libcairn") for the
//! protocol.

mod capi;
pub mod proto;
mod sys;

use std::fmt;
use std::sync::{Mutex, MutexGuard};

use proto::Header;

pub use proto::{DATA_MAX, ENV_FD, ENV_SOCKET};

/// An error: a (positive) errno value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error(pub i32);

impl Error {
    /// Not under a supervisor, or the supervisor is gone (ENOTCONN).
    pub const NOT_CONNECTED: Error = Error(libc::ENOTCONN);
    /// Too much nonrestart data (E2BIG).
    pub const TOO_BIG: Error = Error(libc::E2BIG);
    /// No nonrestart data yet (ENODATA).
    pub const NO_DATA: Error = Error(libc::ENODATA);
    /// Another process of the tree held the supervisor's connection for
    /// all of [`proto::CONNECT_WAIT_MS`] (5 s), or a checkpoint came
    /// while this one waited (ETIMEDOUT); the next call tries again.
    pub const TIMED_OUT: Error = Error(libc::ETIMEDOUT);
    /// The supervisor does not serve this process: it is not of the tree
    /// it supervises (EACCES).
    pub const DENIED: Error = Error(libc::EACCES);

    /// The errno value.
    pub fn errno(self) -> i32 {
        self.0
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}

impl std::error::Error for Error {}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::from_raw_os_error(e.0)
    }
}

/// Which return of [`checkpoint`] this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resumed {
    /// The checkpoint is taken and this process goes on.
    Continued,
    /// This process was restored from that checkpoint.
    Restored,
}

/// The connection to the supervisor.
struct Conn {
    fd: i32,
    /// Inode of the socket at `fd` when last looked at: a restore hands
    /// in another one at the same fd number.
    ino: u64,
    /// The process that uses it.
    owner: u32,
    /// The number of the last request.
    last_id: u32,
    /// Connected by the library to [`ENV_SOCKET`] (not inherited): it
    /// connects anew after the supervisor closed it.
    ours: bool,
    /// The supervisor refused or closed it.
    dead: bool,
}

static CONN: Mutex<Option<Conn>> = Mutex::new(None);

fn lock() -> MutexGuard<'static, Option<Conn>> {
    CONN.lock().unwrap_or_else(|e| e.into_inner())
}

/// The connection named in the environment, if it is one: an inherited
/// descriptor ([`ENV_FD`], a program restored by an older cairn) or the
/// supervisor's socket ([`ENV_SOCKET`]), connected now.
fn connect() -> Result<Conn, Error> {
    let fd = match std::env::var(ENV_FD) {
        Ok(v) => {
            let fd = v
                .trim()
                .parse::<i32>()
                .ok()
                .filter(|&f| f >= 0)
                .ok_or(Error(libc::ENOTCONN))?;
            let (_, is_sock) = sys::inode(fd).map_err(|_| Error(libc::ENOTCONN))?;
            if !is_sock || sys::sock_type(fd) != Ok(libc::SOCK_SEQPACKET) {
                return Err(Error(libc::ENOTCONN));
            }
            // Programs this one starts do not inherit it.
            sys::set_cloexec(fd).map_err(Error)?;
            fd
        }
        Err(_) => {
            let path = std::env::var_os(ENV_SOCKET).ok_or(Error(libc::ENOTCONN))?;
            let fd = sys::connect_seqpacket(path.as_encoded_bytes())
                .map_err(|_| Error(libc::ENOTCONN))?;
            // The supervisor runs as root or as this process's user: a
            // socket of another user (one that took the name) is not it.
            let trusted = sys::peer_uid(fd).is_ok_and(|u| u == 0 || sys::own_uids().contains(&u));
            if !trusted {
                sys::close(fd);
                return Err(Error(libc::ENOTCONN));
            }
            if let Err(e) = sys::set_conn_opts(fd, proto::SNDBUF, proto::RCV_TIMEOUT_MS) {
                sys::close(fd);
                return Err(Error(e));
            }
            return Ok(Conn {
                ino: sys::inode(fd).map_err(|_| Error(libc::ENOTCONN))?.0,
                fd,
                owner: sys::getpid(),
                last_id: 0,
                ours: true,
                dead: false,
            });
        }
    };
    let (ino, _) = sys::inode(fd).map_err(|_| Error(libc::ENOTCONN))?;
    Ok(Conn {
        fd,
        ino,
        owner: sys::getpid(),
        last_id: 0,
        ours: false,
        dead: false,
    })
}

/// A lost connection is ENOTCONN, whatever the socket said.
fn lost(e: i32) -> Error {
    match e {
        libc::EPIPE | libc::ECONNRESET | libc::ECONNREFUSED | libc::EBADF | libc::ENOTSOCK => {
            Error(libc::ENOTCONN)
        }
        e => Error(e),
    }
}

/// Sends request `op` with `payload` and waits for its answer, whose
/// payload goes to `out`. Returns (status, payload length).
///
/// The wait survives a restore of the process: a restored process finds
/// another socket at the same fd number (with a receive timeout the
/// supervisor set), and sends the request again on it when its wait ends
/// without an answer. The supervisor drops a request it answered already
/// on that connection (same pid and id), and answers the restart
/// checkpoint a restore was made from (1) before the process runs.
///
/// A connection the supervisor refused ([`proto::OP_REFUSED`]) or closed
/// is forgotten (closed, when the library made it), so that the next call
/// connects anew.
fn request(op: u16, payload: &[u8], out: &mut [u8]) -> Result<(i32, usize), Error> {
    let mut g = lock();
    let r = request_on(&mut g, op, payload, out);
    if let Some(c) = g.as_ref().filter(|c| c.dead && c.ours) {
        sys::close(c.fd);
        *g = None;
    }
    r
}

fn request_on(
    g: &mut Option<Conn>,
    op: u16,
    payload: &[u8],
    out: &mut [u8],
) -> Result<(i32, usize), Error> {
    if g.is_none() {
        *g = Some(connect()?);
    }
    let Some(c) = g.as_mut() else {
        return Err(Error(libc::ENOTCONN));
    };
    let pid = sys::getpid();
    if pid != c.owner {
        return Err(Error(libc::EBUSY));
    }
    c.last_id = c.last_id.wrapping_add(1).max(1);
    let id = c.last_id;
    let head = Header {
        op,
        pid,
        id,
        status: 0,
    }
    .encode();
    let r = exchange(c, &head, payload, out);
    if matches!(r, Err(Error(libc::ENOTCONN))) {
        c.dead = true;
    }
    r
}

/// Sends request `head` and `payload` on `c` and waits for its answer.
fn exchange(
    c: &mut Conn,
    head: &[u8],
    payload: &[u8],
    out: &mut [u8],
) -> Result<(i32, usize), Error> {
    let Some(me) = Header::decode(head) else {
        return Err(Error(libc::EINVAL));
    };
    c.ino = sys::inode(c.fd).map_err(lost)?.0;
    if let Err(e) = send_retry(c.fd, head, payload) {
        // The supervisor may have refused the connection before the
        // request went out: its word is queued.
        return Err(refusal(c).unwrap_or(e));
    }
    let mut ans = [0u8; proto::HEADER];
    let mut reset = false;
    loop {
        match sys::recv(c.fd, &mut ans, out) {
            Ok(0) => return Err(Error(libc::ENOTCONN)),
            // Reported before what is queued: the supervisor's last word
            // (OP_REFUSED) may follow.
            Err(libc::ECONNRESET) if !reset => reset = true,
            Ok(n) => {
                let Some(h) = Header::decode(&ans[..n.min(proto::HEADER)]) else {
                    continue;
                };
                if h.op == proto::OP_REFUSED && h.id == 0 {
                    // Not served: the supervisor closes it.
                    c.dead = true;
                    return Err(Error(if h.status < 0 {
                        -h.status
                    } else {
                        libc::ECONNREFUSED
                    }));
                }
                if n >= proto::HEADER && h.op == me.op && h.pid == me.pid && h.id == me.id {
                    return Ok((h.status, n - proto::HEADER));
                }
                // An answer to a request of before a restore: not ours.
            }
            Err(libc::EINTR) | Err(libc::EAGAIN) => {
                let ino = sys::inode(c.fd).map_err(lost)?.0;
                if ino != c.ino {
                    c.ino = ino;
                    send_retry(c.fd, head, payload)?;
                }
            }
            Err(e) => return Err(lost(e)),
        }
    }
}

/// The supervisor's refusal ([`proto::OP_REFUSED`]) queued on `c`, if
/// there is one.
fn refusal(c: &mut Conn) -> Option<Error> {
    let mut ans = [0u8; proto::HEADER];
    for _ in 0..2 {
        match sys::recv(c.fd, &mut ans, &mut []) {
            Ok(n) if n >= proto::HEADER => {
                let h = Header::decode(&ans)?;
                if h.op == proto::OP_REFUSED && h.id == 0 && h.status < 0 {
                    c.dead = true;
                    return Some(Error(-h.status));
                }
            }
            Err(libc::ECONNRESET) => {}
            _ => return None,
        }
    }
    None
}

fn send_retry(fd: i32, head: &[u8], payload: &[u8]) -> Result<(), Error> {
    loop {
        match sys::send(fd, head, payload) {
            Ok(()) => return Ok(()),
            Err(libc::EINTR) | Err(libc::EAGAIN) | Err(libc::ENOBUFS) => std::thread::yield_now(),
            Err(e) => return Err(lost(e)),
        }
    }
}

/// A status that must be 0 or more.
fn status(s: i32) -> Result<i32, Error> {
    if s < 0 {
        Err(Error(-s))
    } else {
        Ok(s)
    }
}

/// A restart checkpoint of the whole process (its tree) at this point:
/// returns once the supervisor has it ([`Resumed::Continued`]), and
/// again in every process restored from it ([`Resumed::Restored`]).
pub fn checkpoint() -> Result<Resumed, Error> {
    match status(request(proto::OP_CHECKPOINT, &[], &mut [])?.0)? {
        0 => Ok(Resumed::Continued),
        _ => Ok(Resumed::Restored),
    }
}

/// A nonrestart checkpoint: `data` (at most [`DATA_MAX`] bytes, else
/// `E2BIG`) is kept by the supervisor, the newest replacing the one
/// before, and given by [`takeover_data`] after a restart or takeover.
/// Returns once the supervisor stored it.
pub fn checkpoint_data(data: &[u8]) -> Result<(), Error> {
    if data.len() > DATA_MAX {
        return Err(Error(libc::E2BIG));
    }
    status(request(proto::OP_DATA, data, &mut [])?.0).map(drop)
}

/// The newest nonrestart data the supervisor has, copied to `buf`; its
/// length. `ENODATA` when there is none, `EMSGSIZE` when `buf` is too
/// small (a buffer of [`DATA_MAX`] bytes always does).
pub fn takeover_data(buf: &mut [u8]) -> Result<usize, Error> {
    let (s, n) = request(proto::OP_TAKEOVER, &[], buf)?;
    let s = status(s)? as usize;
    if n > buf.len() || s != n {
        return Err(Error(libc::EMSGSIZE));
    }
    Ok(n)
}

/// [`takeover_data`] into a new vector.
pub fn takeover_vec() -> Result<Vec<u8>, Error> {
    let mut v = vec![0u8; DATA_MAX];
    let n = takeover_data(&mut v)?;
    v.truncate(n);
    Ok(v)
}

/// Whether this process is a backup of `cairn pair` that took over (it
/// was restored from a checkpoint of the primary and released when the
/// primary failed: the NonStop backup's return from its monitor call);
/// always false in the first primary and under `cairn run`.
pub fn is_backup() -> Result<bool, Error> {
    Ok(status(request(proto::OP_IS_BACKUP, &[], &mut [])?.0)? != 0)
}
