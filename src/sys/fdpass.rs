//! Unix stream sockets in the abstract namespace, and passing fds over
//! them (SCM_RIGHTS): how the tracking keeper hands userfaultfds from one
//! cairn command to the next, and how a dumper talks to its guardian
//! (`crate::guard`, over a socketpair: thread states, and the sockets it
//! puts into TCP repair mode).
//!
//! A message is a 12-byte header (magic, payload length, number of fds),
//! then the fds in batches of at most [`FD_BATCH`] (each batch rides on one
//! byte), then the payload. Reads are exact-sized, so no read ever takes
//! the byte that carries a batch (and so drops its fds).

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{
    self, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
    UnixAddr,
};

const MAGIC: u32 = 0x4341_4b50; // "CAKP"
/// Fds per SCM_RIGHTS message (the kernel allows 253).
pub const FD_BATCH: usize = 200;
/// Largest payload accepted.
pub const MAX_PAYLOAD: usize = 64 << 20;

fn nix_err(e: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

fn own(fd: RawFd) -> OwnedFd {
    // SAFETY: callers pass only an fd that a syscall just returned to this
    // process and nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A listening socket bound to the abstract name `name`.
pub fn listen_abstract(name: &str) -> io::Result<OwnedFd> {
    let s = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(nix_err)?;
    let addr = UnixAddr::new_abstract(name.as_bytes()).map_err(nix_err)?;
    socket::bind(s.as_raw_fd(), &addr).map_err(nix_err)?;
    socket::listen(&s, socket::Backlog::new(8).map_err(nix_err)?).map_err(nix_err)?;
    Ok(s)
}

/// Connects to the abstract name `name`.
pub fn connect_abstract(name: &str) -> io::Result<UnixStream> {
    let s = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(nix_err)?;
    let addr = UnixAddr::new_abstract(name.as_bytes()).map_err(nix_err)?;
    socket::connect(s.as_raw_fd(), &addr).map_err(nix_err)?;
    Ok(UnixStream::from(s))
}

pub fn accept(listener: &impl AsRawFd) -> io::Result<UnixStream> {
    let fd = socket::accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC).map_err(nix_err)?;
    Ok(UnixStream::from(own(fd)))
}

/// (pid, uid) of the process at the other end.
pub fn peer(s: &UnixStream) -> io::Result<(i32, u32)> {
    let c = socket::getsockopt(s, socket::sockopt::PeerCredentials).map_err(nix_err)?;
    Ok((c.pid(), c.uid()))
}

/// Sends `payload` and `fds` as one message.
pub fn send_msg(s: &mut UnixStream, payload: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut hdr = Vec::with_capacity(12);
    hdr.extend_from_slice(&MAGIC.to_le_bytes());
    hdr.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    hdr.extend_from_slice(&(fds.len() as u32).to_le_bytes());
    s.write_all(&hdr)?;
    for batch in fds.chunks(FD_BATCH) {
        let cm = [ControlMessage::ScmRights(batch)];
        let n = socket::sendmsg::<()>(
            s.as_raw_fd(),
            &[IoSlice::new(b"F")],
            &cm,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(nix_err)?;
        if n != 1 {
            return Err(io::Error::other("short sendmsg"));
        }
    }
    s.write_all(payload)
}

/// Receives one message of [`send_msg`].
pub fn recv_msg(s: &mut UnixStream) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut hdr = [0u8; 12];
    s.read_exact(&mut hdr)?;
    let word = |i: usize| u32::from_le_bytes([hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]]);
    if word(0) != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad message magic",
        ));
    }
    let (len, nfds) = (word(4) as usize, word(8) as usize);
    if len > MAX_PAYLOAD || nfds > 1 << 20 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "message too large",
        ));
    }
    let mut fds: Vec<OwnedFd> = Vec::with_capacity(nfds);
    while fds.len() < nfds {
        let mut byte = [0u8; 1];
        let mut iov = [IoSliceMut::new(&mut byte)];
        let mut space = nix::cmsg_space!([RawFd; FD_BATCH]);
        let msg = socket::recvmsg::<()>(
            s.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(nix_err)?;
        if msg.bytes != 1 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        let mut got = 0;
        for c in msg.cmsgs().map_err(nix_err)? {
            if let ControlMessageOwned::ScmRights(v) = c {
                got += v.len();
                fds.extend(v.into_iter().map(own));
            }
        }
        if got == 0 || msg.flags.contains(MsgFlags::MSG_CTRUNC) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "fds lost in transit",
            ));
        }
    }
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload)?;
    Ok((payload, fds))
}

/// Waits until `a` or `b` is readable (or `ms` milliseconds pass, -1
/// for ever). Returns (a readable, b readable).
pub fn poll2(a: &impl AsRawFd, b: &impl AsRawFd, ms: i32) -> io::Result<(bool, bool)> {
    let mut p = [
        libc::pollfd {
            fd: a.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: b.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: two valid pollfds, count 2.
        let r = unsafe { libc::poll(p.as_mut_ptr(), 2, ms) };
        if r >= 0 {
            return Ok((p[0].revents != 0, p[1].revents != 0));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_with_many_fds_round_trips() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let files: Vec<std::fs::File> = (0..450)
            .map(|_| std::fs::File::open("/proc/self/stat").unwrap())
            .collect();
        let raw: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
        let payload = vec![7u8; 100_000];
        let t = std::thread::spawn(move || {
            send_msg(&mut a, &payload, &raw).unwrap();
            drop(files);
        });
        let (p, fds) = recv_msg(&mut b).unwrap();
        t.join().unwrap();
        assert_eq!(p.len(), 100_000);
        assert!(p.iter().all(|&x| x == 7));
        assert_eq!(fds.len(), 450);
        // The received fds are live duplicates.
        let mut f = std::fs::File::from(fds.into_iter().next().unwrap());
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert!(!s.is_empty());
    }

    #[test]
    fn garbage_is_an_error() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(&[1u8; 12]).unwrap();
        assert!(recv_msg(&mut b).is_err());
    }
}
