//! TCP connections in the states TCP_REPAIR restores besides ESTABLISHED
//! (issue 14): half closed (FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK,
//! CLOSING) with both ends in the tree. The workload checks states, bytes
//! and EOFs itself after the restore.

mod common;

use common::*;

/// Removes the lock table a test's dump may leave behind (by the
/// workload's pid in its name).
struct LockCleanup(i32);

impl Drop for LockCleanup {
    fn drop(&mut self) {
        let Ok(out) = std::process::Command::new("nft")
            .args(["list", "tables"])
            .output()
        else {
            return;
        };
        let prefix = format!("cairn_{}_", self.0);
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(t) = line.strip_prefix("table inet ") {
                if t.starts_with(&prefix) {
                    let _ = std::process::Command::new("nft")
                        .args(["delete", "table", "inet", t])
                        .status();
                }
            }
        }
    }
}

/// Every half-closed state, with queues and FINs behind never-sent
/// data: dump with --tcp-established, restore, the workload checks.
#[test]
fn tcp_half_closed_states() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("sk_tcp_states", &[]);
    let _unlock = LockCleanup(w.pid);
    let out = w.dump_ok(&["--tcp-established"]);
    let log = String::from_utf8_lossy(&out.stderr);
    for state in [
        "FIN_WAIT1",
        "FIN_WAIT2",
        "CLOSE_WAIT",
        "LAST_ACK",
        "CLOSING",
        "established connection",
    ] {
        assert!(
            log.contains(state) && log.contains("unsent"),
            "the dump did not save a connection in {state}:\n{log}"
        );
    }
    w.expect_killed_by_dump();
    w.restore_wait(&["--tcp-established"]);
}

/// Without --tcp-established a half-closed connection is refused before
/// the tree is touched, naming pid, fd and the state, and saying what
/// would checkpoint it; the workload goes on.
#[test]
fn tcp_half_closed_refused_without_flag() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("sk_tcp_states", &[]);
    let _unlock = LockCleanup(w.pid);
    let out = w.dump(&[]);
    assert_eq!(exit_code(&out.status), 6, "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("pid {}", w.pid))
            && err.contains("fd ")
            && (err.contains("FIN_WAIT") || err.contains("CLOSE_WAIT"))
            && err.contains("--tcp-established"),
        "the refusal does not name pid, fd, state and the flag: {err}"
    );
    assert!(!w.images.join("inventory.img").exists());
    w.terminate_original_expect_pass();
}

/// A connection still in SYN_SENT (its listener, outside the tree, has
/// a full accept queue): restored in SYN_SENT from the same port, and it
/// completes once the listener makes room.
#[test]
fn tcp_syn_sent() {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    if skip_unless_root() {
        return;
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    // Backlog 0: one connection fills the accept queue; SYNs are dropped.
    // SAFETY: listen on a socket we own.
    assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 0) }, 0);
    let port = l.local_addr().unwrap().port();
    let _filler = std::net::TcpStream::connect(("127.0.0.1", port)).expect("filler");
    std::thread::sleep(std::time::Duration::from_millis(100));
    let mut w = Workload::start("sk_tcp_syn_sent", &["--port", &port.to_string()]);
    let _unlock = LockCleanup(w.pid);
    let out = w.dump_ok(&["--tcp-established"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("SYN_SENT"), "{log}");
    w.expect_killed_by_dump();
    // Accept once the restored workload checked its state.
    let checked = w.work.join("checked");
    let server = std::thread::spawn(move || -> Result<(), String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !checked.exists() {
            if std::time::Instant::now() > deadline {
                return Err("the workload never checked its state".into());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        l.set_nonblocking(false).map_err(|e| e.to_string())?;
        for _ in 0..2 {
            let (mut s, _) = l.accept().map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 11];
            if s.read_exact(&mut buf).is_ok() && &buf == b"syn-sent-ok" {
                s.write_all(b"ack").map_err(|e| e.to_string())?;
                return Ok(());
            }
        }
        Err("no message from the restored connection".into())
    });
    w.restore_wait(&["--tcp-established"]);
    server.join().unwrap().unwrap();
}

/// Half-closed connections whose other ends are outside the tree (this
/// test holds them, alive throughout): one the workload shut down for
/// writing (FIN_WAIT2 / the test's end in CLOSE_WAIT), one the test shut
/// down (CLOSE_WAIT in the workload). After the restore both carry on
/// exactly: the states are the same, data flows in the open directions
/// ("to-wl" from the test, "from-wl" from the workload) and both closes
/// complete (each side reads EOF).
#[test]
fn tcp_half_closed_outside_peer() {
    use std::io::{Read, Write};
    if skip_unless_root() {
        return;
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = l.local_addr().unwrap().port();
    let acceptor = std::thread::spawn(move || {
        let (a1, _) = l.accept().expect("accept c1");
        let (a2, _) = l.accept().expect("accept c2");
        a2.shutdown(std::net::Shutdown::Write).expect("shutdown c2");
        (a1, a2)
    });
    let mut w = Workload::start("sk_tcp_half_outside", &["--port", &port.to_string()]);
    let _unlock = LockCleanup(w.pid);
    let (mut a1, mut a2) = acceptor.join().expect("acceptor");
    let out = w.dump_ok(&["--tcp-established"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("FIN_WAIT2") && log.contains("CLOSE_WAIT"),
        "{log}"
    );
    w.expect_killed_by_dump();
    let checked = w.work.join("checked");
    let peer = std::thread::spawn(move || -> Result<(), String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !checked.exists() {
            if std::time::Instant::now() > deadline {
                return Err("the workload never checked its states".into());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        a1.write_all(b"to-wl")
            .map_err(|e| format!("write c1: {e}"))?;
        drop(a1);
        a2.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .map_err(|e| e.to_string())?;
        let mut got = Vec::new();
        a2.read_to_end(&mut got)
            .map_err(|e| format!("read c2 to EOF: {e}"))?;
        if got != b"from-wl" {
            return Err(format!(
                "c2: read {:?}, want from-wl then EOF",
                String::from_utf8_lossy(&got)
            ));
        }
        Ok(())
    });
    w.restore_wait(&["--tcp-established"]);
    peer.join().unwrap().unwrap();
}

/// With --network-lock=skip a half-closed connection whose other end is
/// in the tree is refused (the FIN replayed at restore could reach the
/// other end before it is restored and draw a reset), naming pid, fd and
/// the reason; the workload goes on.
#[test]
fn tcp_half_closed_lock_skip_refused() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("sk_tcp_states", &[]);
    let _unlock = LockCleanup(w.pid);
    let out = w.dump(&["--tcp-established", "--network-lock=skip"]);
    assert_eq!(exit_code(&out.status), 6, "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("pid {}", w.pid))
            && err.contains("fd ")
            && err.contains("half closed")
            && err.contains("--network-lock=skip"),
        "{err}"
    );
    w.terminate_original_expect_pass();
}
