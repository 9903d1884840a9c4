//! Process trees: checkpoint/restore cycles of the tree_* workloads.
//!
//! `cairn dump -t ROOT` dumps the root and all its descendants; the
//! restore must rebuild the same tree (pids, parents, groups, sessions,
//! stopped and zombie states), with the root as a child of `cairn restore`.
//! The harness signals only the root; each workload forwards the go to its
//! descendants and collects their verdicts itself. Besides the workload's
//! own PASS, `tree_checkpoint_restore` compares the restored tree with the
//! original from /proc and requires that nothing of it is left running.
mod common;

use std::time::Duration;

use common::*;

#[test]
fn helpers_selftest() {
    selftest_helpers();
    selftest_tree_helpers();
}

/// Every tree workload passes on its own, without cairn (checks the
/// workloads' logic, so that a failure below is cairn's).
#[test]
fn tree_workloads_pass_without_cairn() {
    for name in [
        "tree_levels",
        "tree_pgid_sid",
        "tree_zombie",
        "tree_stopped",
        "tree_subreaper",
        "tree_shared_fd",
        "tree_pipe",
        "tree_fifo",
        "tree_shm_anon",
        "tree_cow",
        "tree_fork_storm",
        "tree_fork_on_signal",
        "tree_big",
        "tree_chain",
    ] {
        run_without_cairn(name, &[]);
    }
}

/// root -> A -> G, root -> B: pids and ppids (3 levels).
#[test]
fn tree_levels() {
    if skip_unless_root() {
        return;
    }
    tree_checkpoint_restore("tree_levels", &[], TreeOpts::default());
}

/// Own process group, a member of another process's group, a second
/// session with a child in its group and one in a group of its own.
#[test]
fn tree_pgid_sid() {
    if skip_unless_root() {
        return;
    }
    tree_checkpoint_restore("tree_pgid_sid", &[], TreeOpts::default());
}

/// Unreaped children: one exited with 42, one killed by SIGUSR2.
#[test]
fn tree_zombie() {
    if skip_unless_root() {
        return;
    }
    tree_checkpoint_restore("tree_zombie", &[], TreeOpts::default());
}

/// Children stopped by SIGSTOP stay stopped until the root sends SIGCONT.
#[test]
fn tree_stopped() {
    if skip_unless_root() {
        return;
    }
    tree_checkpoint_restore("tree_stopped", &[], TreeOpts::default());
}

/// PR_SET_CHILD_SUBREAPER: an orphaned grandchild goes to the root.
#[test]
fn tree_subreaper() {
    if skip_unless_root() {
        return;
    }
    tree_checkpoint_restore("tree_subreaper", &[], TreeOpts::default());
}

/// Open file descriptions shared by parent and child (offset, flags).
#[test]
fn tree_shared_fd() {
    if skip_unless_root() {
        return;
    }
    tree_checkpoint_restore("tree_shared_fd", &[], TreeOpts::default());
}

/// Pipes between parent and child with unread data in both directions.
#[test]
fn tree_pipe() {
    if skip_unless_root() {
        return;
    }
    tree_checkpoint_restore("tree_pipe", &[], TreeOpts::default());
}

/// FIFOs between parent and child with unread data; one FIFO is deleted
/// between dump and restore and must be recreated.
#[test]
fn tree_fifo() {
    if skip_unless_root() {
        return;
    }
    let mut t = TreeTest::start("tree_fifo", &[]);
    t.dump_ok(&[]);
    t.expect_tree_killed_by_dump();
    let fifo_b = t.w.work.join("fifo_b");
    std::fs::remove_file(&fifo_b).expect("remove fifo_b");
    t.restore_start(
        &["@no-compare: the test deletes fifo_b between dump and restore, cairn recreates it (new inode)"],
        false,
    );
    t.check_restored_tree();
    t.finish();
}

/// A MAP_SHARED|MAP_ANONYMOUS region stays one region for both processes.
#[test]
fn tree_shm_anon() {
    if skip_unless_root() {
        return;
    }
    tree_checkpoint_restore("tree_shm_anon", &[], TreeOpts::default());
}

/// 64 MiB of random data shared copy-on-write by parent and child: the
/// images must hold it once (< 1.5 x 64 MiB), and both see it after restore.
#[test]
fn tree_cow() {
    if skip_unless_root() {
        return;
    }
    tree_checkpoint_restore(
        "tree_cow",
        &[],
        TreeOpts {
            max_image_bytes: Some(96 << 20),
            ..TreeOpts::default()
        },
    );
}

/// A root that forks continuously, dumped mid-storm (100 ms after
/// readiness); one dump attempt, which must succeed. The tree changes all
/// the time, so it is not compared from outside; the workload checks its
/// own bookkeeping of forked, reaped and live children. The freezer finds
/// the tree with BPF (task iterator snapshot + fork tracker) where it can;
/// the log says which.
#[test]
fn tree_fork_storm() {
    if skip_unless_root() {
        return;
    }
    // BPF even if the storm is small when the dump starts.
    let _bpf = CairnEnv::set("CAIRN_BPF_MIN_TASKS", "0");
    let t = tree_checkpoint_restore(
        "tree_fork_storm",
        &[],
        TreeOpts {
            compare_tree: false,
            dump_delay: Duration::from_millis(100),
            ..TreeOpts::default()
        },
    );
    let log = t.dump_log();
    match fork_tracking_unavailable() {
        None => assert!(
            log.contains("freeze: BPF fork tracker"),
            "BPF fork tracking is available, but the dump did not use it:\n{log}"
        ),
        Some(why) => note_skip(&format!(
            "the BPF check: fork tracking is not BPF here ({why}); /proc was used"
        )),
    }
}

/// The same storm frozen with `--no-bpf`: children from /proc children
/// lists only, and the log says so.
#[test]
fn tree_fork_storm_no_bpf() {
    if skip_unless_root() {
        return;
    }
    let t = tree_checkpoint_restore(
        "tree_fork_storm",
        &[],
        TreeOpts {
            compare_tree: false,
            dump_delay: Duration::from_millis(100),
            dump_flags: &["--no-bpf"],
            ..TreeOpts::default()
        },
    );
    let log = t.dump_log();
    assert!(
        log.contains("freeze: /proc children lists (--no-bpf)")
            && !log.contains("freeze: BPF fork tracker"),
        "the dump with --no-bpf did not say it read /proc:\n{log}"
    );
}

/// Dumps tree_fork_on_signal ARGS with `--freeze-wait-fork`: cairn waits,
/// after its BPF snapshot, until a process is born in the tree, and the
/// test makes the root fork one exactly then (SIGUSR1 once cairn says it
/// waits). The dump's log must contain every string of `log_wants`; after
/// restore and the go the workload must PASS and its log contain every
/// string of `workload_wants`.
fn dump_while_forking(args: &[&str], log_wants: &[&str], workload_wants: &[&str]) {
    let mut t = TreeTest::start("tree_fork_on_signal", args);
    let err = t.w.dir.join("dump-wait-fork.stderr");
    let mut cairn = std::process::Command::new(cairn_bin())
        .args(["dump", "-v", "--oracle", "--freeze-wait-fork", "-t"])
        .arg(t.w.pid.to_string())
        .arg("-D")
        .arg(&t.w.images)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err).expect("create the dump's stderr file"))
        .spawn()
        .expect("spawn cairn dump");
    t.tracker.track_tree(cairn.id() as i32);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&err)
        .unwrap_or_default()
        .contains("waiting for a fork in the tree")
    {
        if std::time::Instant::now() >= deadline
            || wait_timeout(&mut cairn, Duration::ZERO).is_some()
        {
            kill_tree(&mut cairn);
            panic!(
                "cairn dump never said it waits for a fork:\n{}",
                tail(&err, 8000)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(t.w.pid),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .expect("SIGUSR1 to the workload's root");
    let Some(st) = wait_timeout(&mut cairn, CAIRN_TIMEOUT) else {
        kill_tree(&mut cairn);
        panic!("cairn dump did not finish:\n{}", tail(&err, 8000));
    };
    let log = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(st.success(), "cairn dump failed:\n{log}");
    for want in log_wants {
        assert!(log.contains(want), "the dump's log lacks {want:?}:\n{log}");
    }
    t.expect_tree_killed_by_dump();
    t.restore_start(&[], false);
    t.finish();
    let wl = std::fs::read_to_string(&t.w.log).unwrap_or_default();
    for want in workload_wants {
        assert!(
            wl.contains(want),
            "the restored workload's log lacks {want:?}:\n{wl}"
        );
    }
}

/// The fork tracker catches a process born after the freezer's snapshot:
/// the child is known to cairn only from the ring buffer, the log must
/// count it as caught, and the restored root must find it as its child
/// (the workload checks all of its children and that one was forked on
/// SIGUSR1).
#[test]
fn fork_tracker_catches_child_born_while_freezing() {
    if skip_unless_root() {
        return;
    }
    if let Some(why) = fork_tracking_unavailable() {
        note_skip(&format!("fork tracking is not BPF here: {why}"));
        return;
    }
    dump_while_forking(
        &["--children", "3"],
        &["caught from fork events: 1 processes"],
        &["forked 4 children, 1 on SIGUSR1"],
    );
}

/// The same for a thread: the root starts one after the snapshot (the
/// fork tracker reports threads too), and it must be seized, dumped and
/// restored with the rest (the workload joins it and checks its value).
#[test]
fn fork_tracker_catches_thread_born_while_freezing() {
    if skip_unless_root() {
        return;
    }
    if let Some(why) = fork_tracking_unavailable() {
        note_skip(&format!("fork tracking is not BPF here: {why}"));
        return;
    }
    dump_while_forking(
        &["--children", "2", "--thread"],
        &["caught from fork events: 0 processes, 1 threads"],
        &["joined 1 threads", "forked 2 children, 1 on SIGUSR1"],
    );
}

/// A grandchild reparented to the (subreaper) root after the BPF
/// snapshot, whose parent died and was reaped before the freeze: the
/// snapshot has it under its old parent, which is gone, so the freezer
/// must find it under its new one (adopted) and dump it with the tree.
#[test]
fn freeze_finds_grandchild_reparented_after_snapshot() {
    if skip_unless_root() {
        return;
    }
    if let Some(why) = fork_tracking_unavailable() {
        note_skip(&format!("fork tracking is not BPF here: {why}"));
        return;
    }
    dump_while_forking(
        &["--children", "2", "--middle"],
        &["caught from fork events: 1 processes", "; 1 adopted"],
        &["grandchild adopted", "forked 3 children, 1 on SIGUSR1"],
    );
}

/// 100 processes with 8 threads each.
#[test]
fn tree_big() {
    if skip_unless_root() {
        return;
    }
    // The oracle reads every VMA and page frame of 100 processes twice:
    // under the kernel matrix's emulated CPU (TCG) that alone outlasts
    // the restore's time limit. Smaller trees and threaded processes
    // (tree_levels, restore_threads) are compared.
    tree_checkpoint_restore(
        "tree_big",
        &[],
        TreeOpts {
            dump_flags: &["@no-oracle: 100 processes; too slow to snapshot under TCG"],
            ..TreeOpts::default()
        },
    );
}

/// `cairn dump --leave-running` of a tree: afterwards every process still
/// runs with the same ids, none is stopped or traced, and the workload
/// PASSes on SIGTERM.
#[test]
fn leave_running_tree_levels() {
    if skip_unless_root() {
        return;
    }
    let mut t = TreeTest::start("tree_levels", &[]);
    t.dump_ok(&["--leave-running"]);
    t.check_tree_left_running();
    t.w.terminate_original_expect_pass();
}
