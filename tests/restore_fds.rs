//! Descriptors that are not files on disk, and timers (issue 4, first
//! part): eventfd, signalfd, timerfd, epoll, memfd, setitimer and POSIX
//! timers. Each workload checks its own state after the restore.

mod common;

use common::*;

/// eventfd counters (one above 2^32, one semaphore + non-blocking).
#[test]
fn fd_eventfd() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("fd_eventfd", &[]);
}

/// signalfd mask, and a signal pending before the dump read from it after.
#[test]
fn fd_signalfd() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("fd_signalfd", &[]);
}

/// timerfd interval and time left; an unread expiration of a one-shot timerfd.
#[test]
fn fd_timerfd() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("fd_timerfd", &[]);
}

/// epoll watch lists: fds, events (level and edge triggered), data.
#[test]
fn fd_epoll() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("fd_epoll", &[]);
}

/// memfd name, contents, size, offset and seals.
#[test]
fn fd_memfd() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("fd_memfd", &[]);
}

/// setitimer timers and POSIX timers (ids, clocks, signals, values, time left).
#[test]
fn timers() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("timers", &[]);
}

/// Dumping with --leave-running does not disturb an epoll/timerfd/eventfd
/// user: it still passes afterwards.
#[test]
fn leave_running_fd_epoll() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("fd_epoll", &[]);
    w.dump_ok(&["--leave-running"]);
    w.terminate_original_expect_pass();
}

/// An fd cairn cannot save yet (a netlink socket) makes the dump refuse before the process is touched, naming
/// the pid and the fd; the process goes on unharmed.
#[test]
fn unsupported_fd_refused() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("fd_unsupported", &[]);
    let out = w.dump(&[]);
    assert!(
        !out.status.success(),
        "dump of a process with a netlink socket succeeded"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&w.pid.to_string()) && err.contains("fd ") && err.contains("socket"),
        "unclear refusal: {err}"
    );
    assert_eq!(
        out.status.code(),
        Some(6),
        "exit code for unsupported: {err}"
    );
    w.terminate_original_expect_pass();
}

/// inotify watches (paths found from their file handles), with their wds
/// and masks.
#[test]
fn fd_inotify() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("fd_inotify", &[]);
}
