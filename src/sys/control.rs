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
