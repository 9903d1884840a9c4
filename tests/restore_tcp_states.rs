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
            log.contains(&format!("{state}")) && log.contains("unsent"),
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
