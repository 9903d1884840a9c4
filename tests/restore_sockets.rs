//! Socket options and states cairn lost or could not restore before
//! (issue 14). Each workload checks its own sockets after the restore;
//! cairn itself reads every option back after the restore and fails on a
//! difference.

mod common;

use common::*;

/// SO_BUF_LOCK (sizes set, or set and then unlocked), TCP_CONGESTION,
/// TCP_WINDOW_CLAMP, SO_ZEROCOPY, SO_BUSY_POLL, IP_RECVTTL,
/// IP_MULTICAST_ALL, IPV6_RECVTCLASS, a locked classic BPF filter that
/// still filters, and an IPv6 UDP socket connected without a bind that
/// keeps IPV6_V6ONLY off.
#[test]
fn sk_inet_opts() {
    if skip_unless_root() {
        return;
    }
    // The workload neither sets nor checks the lock where the kernel has
    // no SO_BUF_LOCK; the rest runs.
    if let Some(why) = sockopt_missing(
        libc::AF_INET,
        libc::SOCK_STREAM,
        libc::SOL_SOCKET,
        72,
        "SO_BUF_LOCK",
    ) {
        note_skip(&format!("the SO_BUF_LOCK part only: {why}"));
    }
    checkpoint_restore("sk_inet_opts", &[]);
}

/// A listener without SO_REUSEADDR whose port has TIME_WAIT connections
/// (its own, closed by the server side) is restored right after the dump:
/// bind would fail with EADDRINUSE, so cairn removes those TIME_WAIT
/// entries first; the listener keeps SO_REUSEADDR off and accepts.
#[test]
fn sk_listener_time_wait() {
    if skip_unless_root() {
        return;
    }
    if let Some(why) = time_wait_destroy_missing() {
        note_skip(&why);
        return;
    }
    checkpoint_restore("sk_inet_opts", &["--timewait"]);
}

/// An eBPF socket filter cannot be read back from the kernel: the dump
/// refuses it, naming pid, fd and the reason, and the process goes on.
#[test]
fn sk_ebpf_filter_refused() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("sk_inet_opts", &["--ebpf"]);
    let out = w.dump(&[]);
    assert_eq!(exit_code(&out.status), 6, "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("pid {}", w.pid)) && err.contains("fd ") && err.contains("eBPF"),
        "{err}"
    );
    w.terminate_original_expect_pass();
}
