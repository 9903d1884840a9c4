//! File status flags and ownership of descriptions (issue 14,
//! "Descriptors"): F_GETFL of every kind of fd, FD_CLOEXEC, the SIGIO
//! owner and signal (with the credentials they were set with), eventfd
//! semaphores, pidfds. Each workload checks its own state after the
//! restore.

mod common;

use common::*;

/// O_APPEND, O_NONBLOCK, O_ASYNC, O_DIRECT, O_NOATIME, O_SYNC, O_DSYNC and
/// FD_CLOEXEC on a regular file, pipe ends, a FIFO, eventfd, signalfd,
/// timerfd, epoll, inotify, memfd, unix and UDP sockets and a pty pair: F_GETFL and F_GETFD read back the same after the restore.
#[test]
fn fd_flags() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("fd_flags", &[]);
}

/// SIGIO owners (a thread, the process group, a child) and signals
/// (F_SETSIG) of O_ASYNC pipes and a socket: after the restore F_GETOWN_EX
/// and F_GETSIG read back as set, the signals arrive when data does (with
/// si_fd), and a signal whose setter's uid may not signal its owner is
/// still not sent (the owner set again with the setter's uid and euid).
#[test]
fn fd_owner() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("fd_owner", &[]);
}
