//! System calls of libcairn's control server ([`crate::control`]).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::check;

/// One packet into `buf` without blocking (MSG_DONTWAIT): its whole
/// length (MSG_TRUNC: more than `buf` when it did not fit), 0 at end of
/// file.
pub fn recv_packet(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length during the call.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_TRUNC,
        )
    };
    Ok(check(n as libc::c_long)? as usize)
}

/// One packet of `head` then `body`, without blocking or SIGPIPE.
pub fn send_packet(fd: BorrowedFd<'_>, head: &[u8], body: &[u8]) -> io::Result<()> {
    let mut iov = [
        libc::iovec {
            iov_base: head.as_ptr() as *mut libc::c_void,
            iov_len: head.len(),
        },
        libc::iovec {
            iov_base: body.as_ptr() as *mut libc::c_void,
            iov_len: body.len(),
        },
    ];
    // SAFETY: an all-zero msghdr is valid; its iovecs are set below.
    let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
    mh.msg_iov = iov.as_mut_ptr();
    mh.msg_iovlen = if body.is_empty() { 1 } else { 2 };
    // SAFETY: the iovecs point to live buffers of their lengths, which
    // sendmsg only reads.
    let n = unsafe { libc::sendmsg(fd.as_raw_fd(), &mh, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    check(n as libc::c_long).map(drop)
}

/// SIOCOUTQ of a unix socket: the bytes it sent that its peer has not
/// read yet.
pub fn outq(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int to `n`.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut n) } as libc::c_long)?;
    Ok(n.max(0) as usize)
}

/// A new epoll instance (close-on-exec): the one fd a supervisor polls
/// for its listener and its connection together.
pub fn epoll_new() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: epoll_create1 takes a flag only.
    let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) } as libc::c_long)?;
    // SAFETY: `fd` is a new descriptor owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// Adds `fd` to epoll instance `ep` for input (level triggered); one
/// already there is left as it is. A descriptor leaves the set when it
/// is closed.
pub fn epoll_add(ep: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: fd.as_raw_fd() as u64,
    };
    // SAFETY: `ev` is a valid epoll_event that the call only reads.
    let r =
        unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd.as_raw_fd(), &mut ev) };
    match check(r as libc::c_long) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        r => r.map(drop),
    }
}
