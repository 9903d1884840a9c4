//! File status flags and ownership of descriptions (issue 14,
//! "Descriptors"): F_GETFL of every kind of fd, FD_CLOEXEC, the SIGIO
//! owner and signal (with the credentials they were set with), eventfd
//! semaphores, pidfds. Each workload checks its own state after the
//! restore.

mod common;

use common::refuse::*;
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

/// pidfds of a child (PIDFD_NONBLOCK), of the process itself and of a
/// reaped child come back referring to the same processes: signals,
/// waitid(P_PIDFD), fdinfo's Pid, and the dead one's exit status where
/// the kernel reports one.
#[test]
fn fd_pidfd() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("fd_pidfd", &[]);
}

/// Starts `name` with `args`, requires a refused dump (exit code 6) whose
/// message names the pid and every word of `names`; the process goes on
/// unharmed.
fn refused(name: &str, args: &[&str], names: &[&str]) {
    let mut w = Workload::start(name, args);
    expect_refused(&mut w, &[], names);
}

/// A pidfd of a process outside the tree is refused at dump, naming the
/// pid, the fd and the process it refers to.
#[test]
fn fd_pidfd_outside_refused() {
    if skip_unless_root() {
        return;
    }
    refused(
        "fd_pidfd",
        &["--outside"],
        &[
            "fd 3",
            "pidfd of process 1,",
            "not in the checkpointed tree",
        ],
    );
}

/// A SIGIO owner outside the tree is refused at dump, naming the pid, the
/// fd and the owner.
#[test]
fn fd_owner_outside_refused() {
    if skip_unless_root() {
        return;
    }
    refused(
        "fd_owner",
        &["--outside"],
        &[
            "fd 3",
            "SIGIO owner (process 1)",
            "not in the checkpointed tree",
        ],
    );
}

/// An epoll watch whose fd was closed after a dup (or whose number now
/// names another file) comes back registered as before (issue 14: was
/// refused; see also restore_fds2's epoll tests).
#[test]
fn fd_epoll_closed() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("fd_epoll_closed", &[]);
    checkpoint_restore("fd_epoll_closed", &["--reused"]);
}

/// A flag only open(2) sets, on a kind cairn recreates otherwise (O_DSYNC
/// on a FIFO), is refused before the process is frozen, naming the pid,
/// the fd and the flag, instead of coming back without it.
#[test]
fn fd_flags_lost_refused() {
    if skip_unless_root() {
        return;
    }
    refused("fd_flags", &["--refuse"], &["fd 3", "O_DSYNC", "FIFO"]);
}
