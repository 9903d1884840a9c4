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

/// Where the cgroup2 hierarchy is mounted (as cairn finds it).
fn cgroup2_root() -> Option<std::path::PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.join("cgroup.procs").exists() && p.join("cgroup.subtree_control").exists())
}

/// rmdir of an empty cgroup, retried while killed members go away.
fn rmdir_cgroup(dir: &std::path::Path) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return true,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(_) => return false,
        }
    }
}

/// Each process of the tree comes back in its cgroup (v2), which the
/// restore creates when it no longer exists.
#[test]
fn proc_cgroup() {
    if skip_unless_root() {
        return;
    }
    let Some(root) = cgroup2_root() else {
        note_skip("no cgroup2 hierarchy mounted");
        return;
    };
    let dir = root.join(format!("cairn-test-{}", std::process::id()));
    std::fs::create_dir(&dir).expect("mkdir the test cgroup");
    let child = dir.join("child");
    let result = std::panic::catch_unwind(|| {
        let mut w = Workload::start("proc_cgroup", &["--cgroup", dir.to_str().unwrap()]);
        w.dump_ok(&[]);
        w.expect_killed_by_dump();
        // The restore must make them again.
        assert!(
            rmdir_cgroup(&child) && rmdir_cgroup(&dir),
            "the test cgroups could not be removed after the dump"
        );
        w.restore_wait(&[]);
    });
    rmdir_cgroup(&child);
    rmdir_cgroup(&dir);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// A dump that leaves the tree running does not disturb the filters (nor
/// the strict-mode child, whose injected calls would kill it were the
/// filters not suspended): the original passes.
#[test]
fn proc_seccomp_leave_running() {
    if skip_unless_root() {
        return;
    }
    leave_running("proc_seccomp", &[]);
}

/// Whether the running kernel is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let rel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = rel
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0)) >= (major, minor)
}

/// membarrier registrations (PRIVATE_EXPEDITED, SYNC_CORE, RSEQ,
/// GLOBAL_EXPEDITED) come back: the restored process runs the expedited
/// barriers and GET_REGISTRATIONS says the same. Linux 6.3+ (before,
/// registrations are not visible to the dump).
#[test]
fn proc_membarrier() {
    if skip_unless_root() {
        return;
    }
    if !kernel_at_least(6, 3) {
        note_expected_skip("MEMBARRIER_CMD_GET_REGISTRATIONS needs Linux 6.3");
        return;
    }
    checkpoint_restore("proc_membarrier", &[]);
}
