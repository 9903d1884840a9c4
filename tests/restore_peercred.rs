//! SO_PEERCRED and SO_PEERGROUPS of restored unix connections (issue 14):
//! each connection names the task that made it, as before the dump. The
//! workload (tests/workloads/peercred.c) checks its own sockets after the
//! restore: a socketpair made before fork, a connection accepted from a
//! child running as another uid with supplementary groups (and the
//! child's end, which names the listener's task), a socketpair whose
//! creator exited (its pid is free: made again by a helper with that pid).

mod common;

use common::*;

/// The restored sockets name the same pids, uids, gids and groups; the
/// oracle (`fd.N.peercred`) agrees on every fd of the tree.
#[test]
fn peercred_restored() {
    if skip_unless_root() {
        return;
    }
    let w = checkpoint_restore("peercred", &[]);
    let log = std::fs::read_to_string(&w.log).unwrap_or_default();
    assert!(log.contains("PASS"), "{log}");
}

/// Twice from the same images: the helper that takes the exited
/// creator's pid is gone after each restore, so the pid is free again.
#[test]
fn peercred_restored_twice() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("peercred", &[]);
    w.dump_ok(&[]);
    w.expect_killed_by_dump();
    w.restore_wait(&[]);
    w.restore_wait(&[]);
}

/// A socketpair made by a live process outside the tree (a grandchild
/// that left the tree when its parent exited): no restore can make it as
/// that process. Refused before the freeze, naming the pid, the fd, the
/// socket, the creator's pid and SO_PEERCRED; the workload goes on.
#[test]
fn peercred_outside_creator_refused() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("peercred", &["--outside"]);
    let creator = (0..50)
        .find_map(|_| {
            let log = std::fs::read_to_string(&w.log).unwrap_or_default();
            let pid = log
                .lines()
                .find_map(|l| l.strip_prefix("note: outside creator pid "))
                .and_then(|p| p.trim().parse::<i32>().ok());
            if pid.is_none() {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            pid
        })
        .expect("the workload logs the outside creator's pid");
    let who = format!("pid {creator}");
    let r = common::refuse::expect_refused(
        &mut w,
        &[],
        &[
            "fd ",
            "socket:[",
            "SO_PEERCRED",
            &who,
            "outside the dumped tree",
        ],
    );
    r.assert_before_freeze();
    // The creator exits once the workload is gone.
    assert!(
        wait_pid_gone(creator, std::time::Duration::from_secs(10)),
        "the outside creator {creator} did not exit"
    );
}

/// A connection left waiting in a listener's backlog (child D, uid 4545,
/// group 4546) through a --leave-running dump, which must not accept it:
/// its SO_PEERCRED is read in place with BPF, so after the original is
/// gone and the tree restored, accepting it names D with its ids.
#[test]
fn peercred_backlog_leave_running() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("peercred", &[]);
    w.dump_ok(&["--leave-running"]);
    let snap = w.log_snapshot();
    w.terminate_original_expect_pass();
    // The original wrote PASS; the restore checks the log is as dumped.
    w.log_reset(&snap);
    w.restore_wait(&[]);
}

/// The same with --no-bpf: nothing else can read who made a waiting
/// connection without accepting it, so the dump is refused before the
/// freeze, naming the listener's pid, fd and socket and --no-bpf; the
/// workload goes on.
#[test]
fn peercred_backlog_leave_running_no_bpf_refused() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("peercred", &[]);
    let r = common::refuse::expect_refused(
        &mut w,
        &["--leave-running", "--no-bpf"],
        &["fd ", "socket:[", "waiting to be accepted", "--no-bpf"],
    );
    r.assert_before_freeze();
}

/// --ext-unix-sk: a connection to a listener of a live process outside
/// the tree and a connection from it waiting in the tree's listener keep
/// that process's pid and ids (uid 4646) when its pid is free at restore
/// (it exits with the workload): the calls are made by a helper with that
/// pid. The dump warns that it would name cairn if the pid were taken.
/// (Oracle off: at the dump it sees a live outside process, after the
/// restore the same pid with no process, which it cannot tell apart from
/// another pid.)
#[test]
fn peercred_ext_outside_creator_gone() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("peercred", &["--ext"]);
    let creator = (0..50)
        .find_map(|_| {
            let log = std::fs::read_to_string(&w.log).unwrap_or_default();
            let pid = log
                .lines()
                .find_map(|l| l.strip_prefix("note: ext creator pid "))
                .and_then(|p| p.trim().parse::<i32>().ok());
            if pid.is_none() {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            pid
        })
        .expect("the workload logs the outside creator's pid");
    let out = w.dump_ok(&[
        "--ext-unix-sk",
        "@no-oracle: an outside pid alive at dump, free at restore",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("pid {creator}")) && err.contains("--ext-unix-sk"),
        "no warning naming the outside creator {creator}: {err}"
    );
    w.expect_killed_by_dump();
    assert!(
        wait_pid_gone(creator, std::time::Duration::from_secs(10)),
        "the outside creator {creator} did not exit"
    );
    w.restore_wait(&[]);
}
