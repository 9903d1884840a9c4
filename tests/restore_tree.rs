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
        "tree_big",
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
    t.restore_start(&[], false);
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
/// own bookkeeping of forked, reaped and live children.
#[test]
fn tree_fork_storm() {
    if skip_unless_root() {
        return;
    }
    tree_checkpoint_restore(
        "tree_fork_storm",
        &[],
        TreeOpts {
            compare_tree: false,
            dump_delay: Duration::from_millis(100),
            ..TreeOpts::default()
        },
    );
}

/// 100 processes with 8 threads each.
#[test]
fn tree_big() {
    if skip_unless_root() {
        return;
    }
    tree_checkpoint_restore("tree_big", &[], TreeOpts::default());
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
