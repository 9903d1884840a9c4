//! Packet sockets with rings (issue 14): a PACKET_RX_RING (TPACKET_V2 and
//! V3) or PACKET_TX_RING comes back mapped at its address from the
//! restored socket, with every frame's bytes and status, and with the
//! kernel's position in it: the workload (tests/workloads/packet_ring.c)
//! checks its frames and then that a new frame lands where the kernel's
//! position says. What cannot be set back exactly is refused at dump.
//!
//! Each test runs in a network namespace of its own (lo up, nothing
//! else): the frames the workload and the restore send stay in it.

mod common;

use std::process::Command;

use common::refuse::expect_refused;
use common::*;

/// Runs `f` on a new thread in a new network namespace with lo up (the
/// workload and both cairn commands inherit it).
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

/// TPACKET_V2 receive ring: frames 1 and 2 filled and not released,
/// frame 0 released; after the restore they are as they were and the
/// next frame received lands in frame 3.
#[test]
fn sk_packet_v2_rx_ring() {
    if skip_unless_root() {
        return;
    }
    in_netns(|| {
        checkpoint_restore("packet_ring", &["--v2"]);
    });
}

/// TPACKET_V3 receive ring: block 1 retired and not released, block 0
/// released, block 2 open and empty with sequence number 3; after the
/// restore the next frame lands in block 2, which gets sequence number 3.
#[test]
fn sk_packet_v3_rx_ring() {
    if skip_unless_root() {
        return;
    }
    in_netns(|| {
        checkpoint_restore("packet_ring", &["--v3"]);
    });
}

/// TPACKET_V2 transmit ring: two frames sent, frame 2 marked
/// TP_STATUS_SEND_REQUEST; after the restore send() sends frame 2 (the
/// kernel's position came back).
#[test]
fn sk_packet_tx_ring() {
    if skip_unless_root() {
        return;
    }
    in_netns(|| {
        checkpoint_restore("packet_ring", &["--tx"]);
    });
}

/// --leave-running: the original keeps its ring, frames and position.
#[test]
fn sk_packet_v2_rx_ring_leave_running() {
    if skip_unless_root() {
        return;
    }
    in_netns(|| {
        leave_running("packet_ring", &["--v2"]);
    });
}

/// A TPACKET_V3 ring whose active block holds a frame and is still open
/// (retire timeout of 60 s) is refused, naming the block.
#[test]
fn sk_packet_v3_open_block_refused() {
    if skip_unless_root() {
        return;
    }
    in_netns(|| {
        let mut w = Workload::start("sk_packet", &["--v3ring"]);
        expect_refused(
            &mut w,
            &[],
            &[
                "fd 5",
                "TPACKET_V3 PACKET_RX_RING whose active block 0 holds",
                "still open",
            ],
        );
    });
}
