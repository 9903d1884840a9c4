//! Per-task attributes (issue 14): scheduling, affinity, I/O priority,
//! timer slack, oom_score_adj, THP_DISABLE, loginuid, seccomp, stopped
//! tasks. Each workload sets them, is dumped, killed, restored, and checks
//! its own state.
mod common;

use common::*;

/// Policy (FIFO with reset-on-fork, BATCH, DEADLINE), nice (also of an RT
/// thread), per-thread affinity, I/O priority and timer slack;
/// oom_score_adj, THP_DISABLE, loginuid, parent-death signal.
#[test]
fn proc_sched() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("proc_sched", &[]);
}

/// Seccomp filters (a chain shared by every thread through TSYNC, one
/// thread's own filter on top, SECCOMP_FILTER_FLAG_LOG) and strict mode
/// in a child: the dump suspends them for its injected calls, the
/// restore installs them last.
#[test]
fn proc_seccomp() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("proc_seccomp", &[]);
}

/// A child stopped by SIGTSTP comes back stopped by SIGTSTP, as its
/// parent's waitpid(WUNTRACED) sees.
#[test]
fn proc_stopped() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("proc_stopped", &[]);
}
