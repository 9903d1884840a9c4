//! poll(2) on any number of descriptors, for `cairn pair`'s loop.

use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::io::AsRawFd;

/// Waits until one of `fds` is readable (or hung up), at most `ms`
/// milliseconds (-1: no limit); which ones are, in order.
pub fn poll_in(fds: &[BorrowedFd<'_>], ms: i32) -> io::Result<Vec<bool>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|f| libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        // SAFETY: `p` holds `p.len()` valid pollfds for the whole call,
        // and the borrowed descriptors stay open for its duration.
        let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
        if r >= 0 {
            return Ok(p.iter().map(|x| x.revents != 0).collect());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
