//! Per-task attributes (issue 14): scheduling, affinity, I/O priority,
//! timer slack, oom_score_adj, THP_DISABLE, loginuid, seccomp, stopped
//! tasks. Each workload sets them, is dumped, killed, restored, and checks
//! its own state.
mod common;

use common::refuse::*;
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

/// Runs `body` with a fresh test cgroup DIR under the v2 root (removed
/// afterwards, with DIR/child), unless there is no v2 hierarchy.
fn with_test_cgroup(tag: &str, body: impl FnOnce(&std::path::Path)) {
    let Some(root) = cgroup2_root() else {
        note_skip("no cgroup2 hierarchy mounted");
        return;
    };
    let dir = root.join(format!("cairn-test-{}-{tag}", std::process::id()));
    std::fs::create_dir(&dir).expect("mkdir the test cgroup");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&dir)));
    rmdir_cgroup(&dir.join("child"));
    rmdir_cgroup(&dir);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// Dumps `w` (proc_cgroup in DIR), removes DIR and DIR/child, which the
/// restore must make again.
fn dump_and_remove(w: &mut Workload, dir: &std::path::Path) {
    w.dump_ok(&[]);
    w.expect_killed_by_dump();
    assert!(
        rmdir_cgroup(&dir.join("child")) && rmdir_cgroup(dir),
        "the test cgroups could not be removed after the dump"
    );
}

/// Each process of the tree comes back in its cgroup (v2), which the
/// restore creates when it no longer exists.
#[test]
fn proc_cgroup() {
    if skip_unless_root() {
        return;
    }
    with_test_cgroup("plain", |dir| {
        let mut w = Workload::start("proc_cgroup", &["--cgroup", dir.to_str().unwrap()]);
        dump_and_remove(&mut w, dir);
        w.restore_wait(&[]);
    });
}

/// The settings of cgroups the tree owns (cgroup.max.depth and
/// cgroup.max.descendants here; controller files where enabled) come
/// back when the restore creates them again.
#[test]
fn proc_cgroup_settings() {
    if skip_unless_root() {
        return;
    }
    with_test_cgroup("settings", |dir| {
        let args = ["--cgroup", dir.to_str().unwrap(), "--settings"];
        let mut w = Workload::start("proc_cgroup", &args);
        dump_and_remove(&mut w, dir);
        w.restore_wait(&[]);
    });
}

/// A restore that fails (run with a hard RLIMIT_CORE of 0, below the
/// workload's, which it refuses to lower, after the first process is in
/// its new cgroup) removes the cgroups it created; the images then
/// restore.
#[test]
fn proc_cgroup_failed_restore_removes_its_cgroups() {
    if skip_unless_root() {
        return;
    }
    let lim = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    if !lim
        .lines()
        .any(|l| l.starts_with("Max core file size") && l.split_whitespace().nth(5) != Some("0"))
    {
        note_skip("the hard RLIMIT_CORE is 0 already: a restore would not fail on it");
        return;
    }
    with_test_cgroup("failed", |dir| {
        let mut w = Workload::start("proc_cgroup", &["--cgroup", dir.to_str().unwrap()]);
        dump_and_remove(&mut w, dir);
        let mut c = std::process::Command::new("prlimit")
            .arg("--core=0:0")
            .arg(cairn_bin())
            .args(["restore", "-v", "-D"])
            .arg(&w.images)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn prlimit cairn restore");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut c.stderr.take().unwrap(), &mut text).unwrap();
        let st = wait_timeout(&mut c, std::time::Duration::from_secs(60)).expect("cairn exits");
        assert!(!st.success(), "the restore succeeded:\n{text}");
        assert!(
            text.contains("created cgroup") && text.contains("hard limit"),
            "the restore did not fail after creating the cgroup:\n{text}"
        );
        assert!(
            !dir.exists(),
            "the failed restore left the cgroup {} it created:\n{text}",
            dir.display()
        );
        assert!(
            wait_pid_gone(w.pid, std::time::Duration::from_secs(10)),
            "pid {} still taken",
            w.pid
        );
        w.restore_wait(&[]);
    });
}

/// A v1 hierarchy with a mount of its own (pids), if this host has one.
fn v1_pids_root() -> Option<std::path::PathBuf> {
    let p = std::path::PathBuf::from("/sys/fs/cgroup/pids");
    (p.join("tasks").exists() && p.join("cgroup.procs").exists()).then_some(p)
}

/// v1 membership: the workload also joins a cgroup of the v1 pids
/// hierarchy, and comes back in it (its whole /proc/self/cgroup reads
/// the same).
#[test]
fn proc_cgroup_v1() {
    if skip_unless_root() {
        return;
    }
    let Some(v1) = v1_pids_root() else {
        note_skip("no v1 pids hierarchy mounted");
        return;
    };
    let v1dir = v1.join(format!("cairn-test-{}-v1", std::process::id()));
    std::fs::create_dir(&v1dir).expect("mkdir the v1 test cgroup");
    let r = std::panic::catch_unwind(|| {
        with_test_cgroup("v1", |dir| {
            let args = [
                "--cgroup",
                dir.to_str().unwrap(),
                "--v1",
                v1dir.to_str().unwrap(),
            ];
            let mut w = Workload::start("proc_cgroup", &args);
            dump_and_remove(&mut w, dir);
            w.restore_wait(&[]);
        })
    });
    rmdir_cgroup(&v1dir);
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
}

/// A process in a v1 cgroup (other than cairn's own) of a hierarchy that
/// is not mounted where cairn runs (a mount namespace without the pids
/// mount): the dump refuses, naming the pid and the hierarchy, and the
/// tree runs on.
#[test]
fn proc_cgroup_v1_unmounted_refused() {
    if skip_unless_root() {
        return;
    }
    let Some(v1) = v1_pids_root() else {
        note_skip("no v1 pids hierarchy mounted");
        return;
    };
    let v1dir = v1.join(format!("cairn-test-{}-v1r", std::process::id()));
    std::fs::create_dir(&v1dir).expect("mkdir the v1 test cgroup");
    let r = std::panic::catch_unwind(|| {
        with_test_cgroup("v1r", |dir| {
            let args = [
                "--cgroup",
                dir.to_str().unwrap(),
                "--v1",
                v1dir.to_str().unwrap(),
            ];
            let mut w = Workload::start("proc_cgroup", &args);
            let images = w.dir.join("refused");
            let out = std::process::Command::new("unshare")
                .args(["-m", "--propagation", "private", "sh", "-c"])
                .arg("umount -l /sys/fs/cgroup/pids && exec \"$0\" \"$@\"")
                .arg(cairn_bin())
                .args(["dump", "-t", &w.pid.to_string(), "-D"])
                .arg(&images)
                .stdin(std::process::Stdio::null())
                .output()
                .expect("run unshare");
            let pid = format!("pid {}", w.pid);
            check_refused(
                &out,
                w.pid,
                &images,
                &[&pid, "hierarchy pids", "not mounted"],
            );
            w.terminate_original_expect_pass();
        })
    });
    rmdir_cgroup(&v1dir);
    if let Err(e) = r {
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
/// barriers and GET_REGISTRATIONS says the same. Before Linux 6.3 the
/// dump reads them with a BPF task iterator (`cargo xtask vm-test`'s 5.10
/// and 6.1); where that cannot load, the private ones are found by their
/// barriers and a global one is assumed (see
/// proc_membarrier_without_get_registrations).
#[test]
fn proc_membarrier() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("proc_membarrier", &[]);
    // A parent and a child with different registrations: each gets its own.
    checkpoint_restore("proc_membarrier", &["--tree"]);
}

/// A kernel without MEMBARRIER_CMD_GET_REGISTRATIONS (before 6.3), played
/// on this one by the test setting CAIRN_TEST_MEMBARRIER_NO_GET: the
/// registrations are read from the mm's state with BPF and come back (the
/// workload checks them with GET_REGISTRATIONS after the restore). With
/// --no-bpf the private ones are found by running their barriers and an
/// expedited global one, invisible there, is assumed: the restore on this
/// kernel, where the process could see it, is refused naming it; played
/// as a kernel before 6.3 again, the restore brings all four back.
#[test]
fn proc_membarrier_without_get_registrations() {
    if skip_unless_root() {
        return;
    }
    if !kernel_at_least(6, 3) {
        note_expected_skip("the workload checks with MEMBARRIER_CMD_GET_REGISTRATIONS (Linux 6.3)");
        return;
    }
    if let Some(why) = bpf_iterators_unavailable() {
        note_skip(&format!("BPF iterators unavailable: {why}"));
        return;
    }
    // Read by the cairn processes this test starts.
    let no_get = CairnEnv::set("CAIRN_TEST_MEMBARRIER_NO_GET", "1");
    let w = checkpoint_restore("proc_membarrier", &[]);
    drop(w);
    // One run of the BPF iterator answers for every process of the frozen
    // tree: the child's registrations are its own, not its parent's.
    let w = checkpoint_restore("proc_membarrier", &["--tree"]);
    drop(w);
    let mut w = Workload::start("proc_membarrier", &[]);
    w.dump_ok(&["--no-bpf"]);
    w.expect_killed_by_dump();
    drop(no_get);
    let out = restore_expect_fail(&w.images, &[], w.pid);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("pid {}", w.pid))
            && err.contains("MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED")
            && err.contains("dump with BPF"),
        "unclear refusal: {}",
        describe(&out)
    );
    let no_get = CairnEnv::set("CAIRN_TEST_MEMBARRIER_NO_GET", "1");
    w.restore_wait(&[]);
    drop(no_get);
    drop(w);
}
