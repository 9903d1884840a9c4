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

/// Packet fanout groups (tests/workloads/packet_fanout.c): a
/// PACKET_FANOUT_HASH group with PACKET_FANOUT_FLAG_DEFRAG and
/// PACKET_FANOUT_FLAG_ROLLOVER and a member limit of 4, whose members are
/// in two processes and whose member array was reordered by a member that
/// left, and a PACKET_FANOUT_CPU group with
/// PACKET_FANOUT_FLAG_IGNORE_OUTGOING: every member reports its group
/// after the restore, 16 flows reach the same members as before (the
/// member array came back in its order), each group gets a packet once,
/// and the member limit is the same.
#[test]
fn sk_packet_fanout() {
    if skip_unless_root() {
        return;
    }
    in_netns(|| {
        checkpoint_restore("packet_fanout", &[]);
    });
}

/// A PACKET_FANOUT_LB group that received packets is refused, naming the
/// group and its round-robin cursor.
#[test]
fn sk_packet_fanout_lb_moved_refused() {
    if skip_unless_root() {
        return;
    }
    in_netns(|| {
        let mut w = Workload::start("packet_fanout", &["--lb"]);
        expect_refused(
            &mut w,
            &[],
            &[
                "PACKET_FANOUT group 4245 (PACKET_FANOUT_LB",
                "round-robin cursor is at 3",
                "packet socket",
            ],
        );
    });
}

/// A PACKET_FANOUT_CBPF group with a fanout program is refused.
#[test]
fn sk_packet_fanout_program_refused() {
    if skip_unless_root() {
        return;
    }
    in_netns(|| {
        let mut w = Workload::start("packet_fanout", &["--cbpf"]);
        expect_refused(
            &mut w,
            &[],
            &[
                "PACKET_FANOUT group 4246 (PACKET_FANOUT_CBPF",
                "fanout program (PACKET_FANOUT_DATA)",
            ],
        );
    });
}

/// A group with a member outside the dumped tree (another process's
/// socket) is refused before the freeze, naming the outside member and
/// its holder; both processes go on in the group.
#[test]
fn sk_packet_fanout_outside_member_refused() {
    if skip_unless_root() {
        return;
    }
    in_netns(|| {
        let mut outside = Workload::start("packet_fanout", &["--join", "4244"]);
        let mut w = Workload::start("packet_fanout", &["--join", "4244"]);
        let held = format!("held by pid {}", outside.pid);
        expect_refused(
            &mut w,
            &[],
            &[
                "PACKET_FANOUT group 4244 (PACKET_FANOUT_HASH",
                "1 member(s) outside the dumped tree",
                &held,
            ],
        );
        outside.terminate_original_expect_pass();
    });
}
