//! IPv4/IPv6 sockets (issue 4): TCP listeners and unconnected sockets,
//! UDP sockets, socket options. Each workload checks its own sockets
//! after the restore.

mod common;

use common::*;

/// Listeners (IPv4, IPv6-only, dual stack) with backlog, options and
/// flags; bound and unbound unconnected TCP sockets; clients connect
/// after restore.
#[test]
fn sk_tcp_listen() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("sk_tcp_listen", &[]);
}

/// The same with --leave-running: the original keeps its listeners.
#[test]
fn sk_tcp_listen_leave_running() {
    if skip_unless_root() {
        return;
    }
    leave_running("sk_tcp_listen", &[]);
}

/// A listener with a connection waiting to be accepted is refused (it
/// would be lost), after the network was locked: the lock is lifted again
/// and the process goes on, the waiting connection intact.
#[test]
fn sk_tcp_listen_pending_refused() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("sk_tcp_listen", &["--pending"]);
    let out = w.dump(&["--tcp-established"]);
    assert_eq!(exit_code(&out.status), 6, "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("waiting to be accepted") && err.contains("127.0.0.1:"),
        "{err}"
    );
    let tables = std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
        .expect("nft");
    let tables = String::from_utf8_lossy(&tables.stdout);
    assert!(
        !tables.contains(&format!("cairn_{}_", w.pid)),
        "the network lock was not lifted after the failed dump: {tables}"
    );
    w.terminate_original_expect_pass();
}

/// UDP, IPv4 and IPv6, bound and connected, with options; the datagrams
/// queued in them come back in order with their senders.
#[test]
fn sk_udp() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("sk_udp", &[]);
}

/// --leave-running: reading the queues does not consume them.
#[test]
fn sk_udp_leave_running() {
    if skip_unless_root() {
        return;
    }
    leave_running("sk_udp", &[]);
}

/// UDP_CORK on a socket with nothing corked comes back (the workload
/// corks two sends into one datagram after the restore).
#[test]
fn sk_udp_cork() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("sk_udp_cork", &[]);
}

/// Corked data cannot be read back: the dump refuses, naming pid and fd,
/// and the process goes on (its datagram intact).
#[test]
fn sk_udp_cork_pending_refused() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("sk_udp_cork", &["--pending"]);
    let out = w.dump(&[]);
    assert_eq!(exit_code(&out.status), 6, "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("pid {}", w.pid)) && err.contains("fd ") && err.contains("corked"),
        "{err}"
    );
    w.terminate_original_expect_pass();
}

/// UDP sockets shut down (SHUT_RD with a datagram queued, SHUT_WR,
/// SHUT_RDWR; connected, bound only, unbound) come back shut down: the
/// workload compares poll events and what recv returns with what it saw
/// before the checkpoint, and sends fail with EPIPE where they did. (Was
/// refused at dump.)
#[test]
fn sk_udp_shutdown() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("sk_udp_shutdown", &[]);
}

/// The same with --leave-running (the original keeps its sockets).
#[test]
fn sk_udp_shutdown_leave_running() {
    if skip_unless_root() {
        return;
    }
    leave_running("sk_udp_shutdown", &[]);
}

/// With --no-bpf the shutdown state of an unbound UDP socket (SHUT_WR
/// shows to nothing but BPF) cannot be read: refused, naming the socket's
/// fd, the reason and --no-bpf, never restored open.
#[test]
fn sk_udp_shutdown_unbound_no_bpf_refused() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("sk_udp_shutdown", &[]);
    common::refuse::expect_refused(
        &mut w,
        &["--no-bpf"],
        &["fd ", "unbound UDP socket", "SHUT_WR", "--no-bpf"],
    );
}
