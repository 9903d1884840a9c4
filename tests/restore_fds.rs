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

/// setitimer timers and POSIX timers: ids, clock ids, signals, sigev
/// values and notify kinds (/proc/self/timers), intervals, time left, and
/// that each still fires; `checkpoint_restore` requires the workload's
/// PASS after the restore.
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

/// Starts fd_unsupported with `kind`, requires a refused dump (exit code
/// 6) whose message names the pid, the fd and every word of `names`, made
/// before the process was frozen; the process goes on unharmed.
fn refused(kind: &str, names: &[&str]) {
    let mut w = Workload::start("fd_unsupported", &["--kind", kind]);
    let out = w.dump(&["-v"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(6),
        "dump of a process with a {kind} fd: {}",
        describe(&out)
    );
    let line = err
        .lines()
        .find(|l| l.contains("unsupported"))
        .unwrap_or_else(|| panic!("no refusal in: {err}"));
    assert!(
        line.contains(&format!("pid {}", w.pid))
            && line.contains("fd 3")
            && names.iter().all(|n| line.contains(n)),
        "unclear refusal for {kind}: {line}"
    );
    assert!(
        !err.contains("froze"),
        "the {kind} refusal came after freezing: {err}"
    );
    w.terminate_original_expect_pass();
}

/// fds cairn cannot save make the dump refuse before the process is
/// touched, naming the pid, the fd and the kind: sockets cairn cannot
/// restore (NETLINK_GENERIC, a packet socket in a fanout group with a
/// fanout program), io_uring, devices with state of their own (kvm, tun),
/// block devices. Each process goes on unharmed.
#[test]
fn unsupported_fd_refused() {
    if skip_unless_root() {
        return;
    }
    refused("netlink", &["NETLINK", "socket"]);
    refused(
        "packet",
        &["PACKET_FANOUT_CBPF", "fanout program", "socket"],
    );
    refused("io_uring", &["io_uring"]);
    // Devices of modules a machine may not have loaded (a VM without
    // nested virtualisation has no /dev/kvm).
    for (kind, dev, names) in [
        ("kvm", "/dev/kvm", ["/dev/kvm", "character device 10:232"]),
        (
            "tun",
            "/dev/net/tun",
            ["/dev/net/tun", "character device 10:200"],
        ),
        ("block", "/dev/loop0", ["/dev/loop0", "block device 7:0"]),
    ] {
        if !std::path::Path::new(dev).exists() {
            note_skip(&format!("the {kind} case only: no {dev} here"));
            continue;
        }
        refused(kind, &names);
    }
}

/// inotify watches (paths found from their file handles), with their wds
/// and masks.
#[test]
fn fd_inotify() {
    if skip_unless_root() {
        return;
    }
    // The workload watches files in its directory under the target dir.
    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    if let Some(why) = file_handles_undecodable(tmp) {
        note_skip(&format!("inotify watches need file handles: {why}"));
        return;
    }
    checkpoint_restore("fd_inotify", &[]);
}
