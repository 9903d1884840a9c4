//! The control protocol between libcairn and its supervisor (`cairn run`,
//! `cairn pair`). This file is shared, word for word, by the library and
//! by cairn's server (`src/control/mod.rs` includes it with `#[path]`), so
//! that both ends always agree. Safe code only.
//!
//! The connection is a `SOCK_SEQPACKET` unix socket: a connection to
//! the socket [`ENV_SOCKET`] names, or a socket pair whose end the
//! supervisor hands in at a restore. Every message is one packet: a
//! [`HEADER`]-byte header, little endian, then the payload.
//!
//! ```text
//! offset size
//!      0    2  version (VERSION)
//!      2    2  op (OP_*)
//!      4    4  pid of the process that asked (a request and its answer)
//!      8    4  id: the asker's request number (never 0), echoed in the answer
//!     12    4  status: 0 in a request; in an answer 0 or more (op's result)
//!              or a negative errno
//!     16  ...  payload (OP_DATA request, OP_TAKEOVER answer): at most DATA_MAX
//! ```

/// The protocol version this file describes.
pub const VERSION: u16 = 1;
/// Size of the header of every message.
pub const HEADER: usize = 16;
/// Most bytes of nonrestart data one checkpoint carries (64 KiB).
pub const DATA_MAX: usize = 64 * 1024;
/// Largest message: a header and the most data.
pub const MSG_MAX: usize = HEADER + DATA_MAX;
/// The environment variable naming the program's end of the connection
/// (a decimal fd number): inherited by a program restored by an older
/// cairn; a new one has [`ENV_SOCKET`].
pub const ENV_FD: &str = "CAIRN_CONTROL_FD";
/// The environment variable naming the supervisor's listening socket:
/// `@NAME`, an abstract unix socket name (cairn 0.x from issue 18 on:
/// no file system permission stands in the way of a process of the tree
/// that changed its uid; the supervisor checks who connects, see
/// [`OP_REFUSED`]), or an absolute path (older supervisors). The library
/// connects to it on its first call.
pub const ENV_SOCKET: &str = "CAIRN_CONTROL_SOCKET";
/// How long a connection waits for the supervisor to serve it
/// (milliseconds): the supervisor serves one connection at a time, and a
/// second one (another process of the tree) waits at most this long for
/// the first to close before it is refused with -ETIMEDOUT.
pub const CONNECT_WAIT_MS: u64 = 5000;
/// Receive timeout of the program's end (milliseconds): how soon a
/// process restored while it waited for an answer notices that the
/// socket at its fd is another one, and asks again.
pub const RCV_TIMEOUT_MS: u64 = 100;
/// Send buffer of both ends: room for a few of the largest messages.
pub const SNDBUF: usize = 4 * MSG_MAX;

/// A restart checkpoint: answered 0 once the supervisor has it, and 1 in
/// a process restored from it.
pub const OP_CHECKPOINT: u16 = 1;
/// A nonrestart checkpoint: the payload is kept; answered 0 once stored.
pub const OP_DATA: u16 = 2;
/// The newest nonrestart data: answered with its length and the data as
/// payload, or -ENODATA.
pub const OP_TAKEOVER: u16 = 3;
/// Whether this process is a backup: answered 0 or 1.
pub const OP_IS_BACKUP: u16 = 4;
/// Sent by the supervisor, unasked (pid and id 0), on a connection it
/// will not serve, just before it closes it; status says why:
/// -EACCES, the process that connected is not of the supervised tree
/// (not a descendant of the supervisor); -ETIMEDOUT, another process's
/// connection was served for all of [`CONNECT_WAIT_MS`] (or a checkpoint
/// came while this one waited); -EBUSY, too many connections wait.
/// The library returns that error from the call that waited and
/// connects anew on the next call.
pub const OP_REFUSED: u16 = 5;

/// A message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub op: u16,
    pub pid: u32,
    pub id: u32,
    pub status: i32,
}

impl Header {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; HEADER] {
        let mut b = [0u8; HEADER];
        b[0..2].copy_from_slice(&VERSION.to_le_bytes());
        b[2..4].copy_from_slice(&self.op.to_le_bytes());
        b[4..8].copy_from_slice(&self.pid.to_le_bytes());
        b[8..12].copy_from_slice(&self.id.to_le_bytes());
        b[12..16].copy_from_slice(&self.status.to_le_bytes());
        b
    }

    /// The header at the start of `b`, if it is one of this version.
    pub fn decode(b: &[u8]) -> Option<Header> {
        if b.len() < HEADER {
            return None;
        }
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        if u16_at(0) != VERSION {
            return None;
        }
        Some(Header {
            op: u16_at(2),
            pid: u32_at(4),
            id: u32_at(8),
            status: u32_at(12) as i32,
        })
    }
}

/// What is wrong with request `b` (a whole packet), if anything: a
/// supervisor answers -EINVAL (or -E2BIG for too much data) and does
/// nothing else.
pub fn check_request(b: &[u8]) -> Result<Header, i32> {
    let h = Header::decode(b).ok_or(libc_einval())?;
    if h.id == 0 || h.status != 0 {
        return Err(libc_einval());
    }
    let payload = b.len() - HEADER;
    match h.op {
        OP_DATA if payload > DATA_MAX => Err(-7), // -E2BIG
        OP_DATA => Ok(h),
        OP_CHECKPOINT | OP_TAKEOVER | OP_IS_BACKUP if payload == 0 => Ok(h),
        _ => Err(libc_einval()),
    }
}

const fn libc_einval() -> i32 {
    -22
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_requests_are_checked() {
        let h = Header {
            op: OP_DATA,
            pid: 77,
            id: 5,
            status: -61,
        };
        assert_eq!(Header::decode(&h.encode()), Some(h));
        let mut b = h.encode();
        b[0] = 9;
        assert_eq!(Header::decode(&b), None);
        assert_eq!(Header::decode(&[0; 3]), None);
        let req = |op, id, status, extra: usize| {
            let mut v = Header {
                op,
                pid: 1,
                id,
                status,
            }
            .encode()
            .to_vec();
            v.resize(HEADER + extra, 0);
            v
        };
        assert!(check_request(&req(OP_DATA, 1, 0, DATA_MAX)).is_ok());
        assert_eq!(check_request(&req(OP_DATA, 1, 0, DATA_MAX + 1)), Err(-7));
        assert!(check_request(&req(OP_CHECKPOINT, 1, 0, 0)).is_ok());
        assert_eq!(check_request(&req(OP_CHECKPOINT, 1, 0, 1)), Err(-22));
        assert_eq!(check_request(&req(OP_CHECKPOINT, 0, 0, 0)), Err(-22));
        assert_eq!(check_request(&req(OP_TAKEOVER, 1, 3, 0)), Err(-22));
        assert_eq!(check_request(&req(99, 1, 0, 0)), Err(-22));
    }
}
