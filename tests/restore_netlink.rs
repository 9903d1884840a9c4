//! Netlink sockets, packet sockets and fanotify groups (issue 14): each
//! workload checks its own descriptors after the restore, and what cannot
//! come back exactly (queued messages, packets or events; other netlink
//! protocols; packet fanout; permission events) is refused at
//! dump, naming the fd, with the original left running.
//!
//! The socket tests run in a network namespace of their own: the test
//! body runs on a thread that unshares its network namespace (namespaces
//! are per thread, and everything it spawns, the workload and both cairn
//! commands, inherits it), with lo brought up and nothing else, so links
//! created and promiscuous modes set never touch the host.

mod common;

use std::process::Command;

use common::refuse::refused_for_file_handles;
use common::*;

/// Runs `f` on a new thread in a new network namespace with lo up.
fn in_netns(f: impl FnOnce() + Send + 'static) {
    let t = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("unshare(CLONE_NEWNET) on the test thread");
        let st = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("run ip");
        assert!(st.success(), "ip link set lo up failed");
        f();
    });
    if let Err(e) = t.join() {
        std::panic::resume_unwind(e);
    }
}

/// A dump of workload `name` with `args` must be refused (exit code 6)
/// with a message holding every one of `words`, and leave the original
/// running and intact (its own check on SIGTERM).
fn refused(name: &str, args: &[&str], words: &[&str]) {
    let mut w = Workload::start(name, args);
    let out = w.dump(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(exit_code(&out.status), 6, "{}", describe(&out));
    for word in words {
        assert!(err.contains(word), "no {word:?} in: {err}");
    }
    w.terminate_original_expect_pass();
}

/// NETLINK_ROUTE (bound to RTMGRP_LINK and group 36, options; another
/// bound to a chosen port id and connected to the first),
/// NETLINK_KOBJECT_UEVENT and NETLINK_SOCK_DIAG sockets come back with
/// their port ids, groups and options, and work: a veth pair created after
/// the restore is reported with its NETLINK_PKTINFO group.
#[test]
fn sk_netlink() {
    if skip_unless_root() {
        return;
    }
    in_netns(|| {
        checkpoint_restore("sk_netlink", &[]);
    });
}

/// --leave-running: the original keeps its sockets.
#[test]
fn sk_netlink_leave_running() {
    if skip_unless_root() {
        return;
    }
    in_netns(|| {
        leave_running("sk_netlink", &[]);
    });
}

/// A netlink socket with a queued message is refused: the message could
/// not be queued again.
#[test]
fn sk_netlink_queued_refused() {
    if skip_unless_root() {
        return;
    }
    in_netns(|| {
        refused(
            "sk_netlink",
            &["--queued"],
            &["NETLINK_ROUTE", "queued messages", "fd 3"],
        )
    });
}

/// A NETLINK_GENERIC socket is refused, naming the protocol.
#[test]
fn sk_netlink_generic_refused() {
    if skip_unless_root() {
        return;
    }
    in_netns(|| {
        refused(
            "sk_netlink",
            &["--generic"],
            &["netlink socket of protocol 16", "fd 7"],
        )
    });
}

/// A netlink socket of another network namespace is refused (its restore
/// would land in cairn's).
#[test]
fn sk_netlink_other_netns_refused() {
    if skip_unless_root() {
        return;
    }
    in_netns(|| {
        refused(
            "sk_netlink",
            &["--otherns"],
            &["not in cairn's network namespace", "fd 8"],
        )
    });
}

/// Packet sockets: bound to lo with SOL_PACKET options and memberships
/// (lo stays promiscuous), an unbound one with a filter; the bound one
/// receives a datagram sent to 127.0.0.1 after the restore.
#[test]
fn sk_packet() {
    if skip_unless_root() {
        return;
    }
    in_netns(|| {
        checkpoint_restore("sk_packet", &[]);
    });
}

/// --leave-running: the original keeps its packet sockets and
/// memberships.
#[test]
fn sk_packet_leave_running() {
    if skip_unless_root() {
        return;
    }
    in_netns(|| {
        leave_running("sk_packet", &[]);
    });
}

/// A packet socket with a packet queued is refused.
#[test]
fn sk_packet_queued_refused() {
    if skip_unless_root() {
        return;
    }
    in_netns(|| refused("sk_packet", &["--queued"], &["packet socket", "queued"]));
}

/// A packet socket alone in a fanout group made with a member limit of 8
/// comes back in it (the groups: restore_pktring::sk_packet_fanout).
#[test]
fn sk_packet_fanout() {
    if skip_unless_root() {
        return;
    }
    in_netns(|| {
        checkpoint_restore("sk_packet", &["--fanout"]);
    });
}

/// A fanotify group with inode marks (one with an ignored mask that
/// survives modification) comes back with the same fdinfo and reports an
/// open of the marked file after the restore. Where the marked files
/// cannot be opened from their handles (overlayfs), the dump refuses.
#[test]
fn fd_fanotify() {
    if skip_unless_root()
        || refused_for_file_handles(
            "fd_fanotify",
            &[],
            &[],
            &["fanotify mark (inode"],
            "the restore of inode marks",
        )
    {
        return;
    }
    checkpoint_restore("fd_fanotify", &[]);
}

/// --leave-running: the original keeps its group and marks.
#[test]
fn fd_fanotify_leave_running() {
    if skip_unless_root()
        || refused_for_file_handles(
            "fd_fanotify",
            &[],
            &["--leave-running"],
            &["fanotify mark (inode"],
            "the --leave-running dump of inode marks",
        )
    {
        return;
    }
    leave_running("fd_fanotify", &[]);
}

/// Queued fanotify events are refused (they cannot be queued again).
#[test]
fn fd_fanotify_queued_refused() {
    if skip_unless_root() {
        return;
    }
    refused(
        "fd_fanotify",
        &["--queued"],
        &["fanotify group", "queued events", "fd 3"],
    );
}

/// A group with a permission-event mark is refused.
#[test]
fn fd_fanotify_perm_refused() {
    if skip_unless_root() {
        return;
    }
    refused(
        "fd_fanotify",
        &["--perm"],
        &["fanotify group", "permission events", "fd 4"],
    );
}
