//! poll(2) without waiting: the events of a descriptor now (of a pipe end:
//! whether its other end is still open anywhere).

use std::io;
use std::os::fd::AsRawFd;

/// poll(2) with a zero timeout: the events of `fd` now.
pub fn poll_now(fd: &impl AsRawFd, events: i16) -> io::Result<i16> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd, count 1, no waiting.
        let r = unsafe { libc::poll(&mut p, 1, 0) };
        if r >= 0 {
            return Ok(p.revents);
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
    fn pipe_ends_report_the_other_end_closed() {
        let (r, w) = crate::sys::task::pipe().unwrap();
        assert_eq!(poll_now(&r, libc::POLLIN).unwrap() & libc::POLLHUP, 0);
        assert_eq!(poll_now(&w, libc::POLLOUT).unwrap() & libc::POLLERR, 0);
        let (r2, w2) = crate::sys::task::pipe().unwrap();
        drop(w);
        drop(r2);
        assert_ne!(poll_now(&r, libc::POLLIN).unwrap() & libc::POLLHUP, 0);
        assert_ne!(poll_now(&w2, libc::POLLOUT).unwrap() & libc::POLLERR, 0);
    }
}
