//! Threads: checkpoint/restore cycles of the thread_* workloads. The
//! harness also compares the restored thread ids (/proc/PID/task) with the
//! original ones.
mod common;

use common::*;

#[test]
fn helpers_selftest() {
    selftest_helpers();
    selftest_tree_helpers();
}

/// The thread workloads pass on their own, without cairn.
#[test]
fn thread_workloads_pass_without_cairn() {
    for name in ["thread_mix", "thread_robust"] {
        run_without_cairn(name, &[]);
    }
}

/// Four threads (spinning with live registers, futex wait, nanosleep,
/// read) plus the main thread, each with its own tid, name, TLS, signal
/// mask, pending signal and rseq registration.
#[test]
fn thread_mix() {
    if skip_unless_root() {
        return;
    }
    tree_checkpoint_restore("thread_mix", &[], TreeOpts::default());
}

/// A thread holding robust mutexes exits after restore: the main thread
/// must get EOWNERDEAD (the robust list survived).
#[test]
fn thread_robust() {
    if skip_unless_root() {
        return;
    }
    tree_checkpoint_restore("thread_robust", &[], TreeOpts::default());
}
