//! The in-target agent of a restore (`remote::batch`): the calls of a
//! task's VMAs, of what a child keeps of its parent's memory, of its
//! resource limits and of each thread's attributes run as batches of a
//! small loop in the restorer area, one ptrace stop per batch.
mod common;

use std::time::Duration;

use common::*;

/// The figure "N batches" of cairn's -v line "ptrace: ...".
fn batches(log: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.contains("ptrace: "))?;
    let (before, _) = line.split_once(" batches")?;
    before.rsplit(' ').next()?.parse().ok()
}

/// A tree restored through batches checks itself (PASS), and cairn
/// says it ran batches (at least one per process: its VMAs).
#[test]
fn tree_restored_through_batches() {
    if skip_unless_root() {
        return;
    }
    let t = tree_checkpoint_restore("tree_levels", &[], TreeOpts::default());
    let out = t.run.as_ref().expect("restored").output();
    let err = String::from_utf8_lossy(&out.stderr);
    let n = batches(&err).unwrap_or_else(|| panic!("no batch count in cairn's log:\n{err}"));
    assert!(
        n >= t.before.len() as u64,
        "{n} batches for {} processes:\n{err}",
        t.before.len()
    );
}

/// A call of a batch that fails (an mprotect of the final protections,
/// given a syscall number the kernel does not have through the test
/// hook CAIRN_TEST_BATCH_ENOSYS, so that it fails inside the agent
/// loop): the restore fails naming the process and the call, and no
/// process of the tree is left.
#[test]
fn failed_batched_call_leaves_no_process() {
    if skip_unless_root() {
        return;
    }
    // This test's restore only (`CairnEnv`): the other tests of this
    // binary run at the same time.
    let nr = libc::SYS_mprotect.to_string();
    tree_levels_restore_fails("CAIRN_TEST_BATCH_ENOSYS", &nr, &[], |err, pids| {
        err.contains("remote mprotect")
            && err.contains("os error 38")
            && pids.iter().any(|p| err.contains(&p.to_string()))
    });
}

/// Dumps `tree_levels`, restores it with the test hook `var=value` set
/// for that cairn only, and requires the restore to fail with a message
/// `names_it` accepts (given the tree's pids), and every process gone.
fn tree_levels_restore_fails(
    var: &'static str,
    value: &str,
    flags: &[&str],
    names_it: impl Fn(&str, &[i32]) -> bool,
) {
    let mut t = TreeTest::start("tree_levels", &[]);
    let pids: Vec<i32> = t.before.iter().map(|p| p.pid).collect();
    t.dump_ok(&["@no-oracle: the restore is meant to fail"]);
    t.expect_tree_killed_by_dump();
    wait_init_reaped_orphans(Duration::from_secs(15));
    let hook = CairnEnv::set(var, value);
    let out = restore_expect_fail(&t.w.images, flags, t.w.pid);
    drop(hook);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        names_it(&err, &pids),
        "the restore did not name the process and what failed:\n{err}"
    );
    for p in pids {
        assert!(
            wait_pid_gone(p, Duration::from_secs(10)),
            "pid {p} still exists after the failed restore"
        );
    }
}

/// A process's threads are made by one list of clone3 calls run by the
/// agent loop (`Calls::clone3_each`): when one fails there (the test hook
/// CAIRN_TEST_BATCH_ENOSYS gives the first batched clone3 a number the
/// kernel does not have), the restore fails naming the process and the
/// thread id, and neither the process nor any thread made before the
/// failure is left.
#[test]
fn failed_thread_clone_leaves_no_process() {
    if skip_unless_root() {
        return;
    }
    let mut t = TreeTest::start("thread_mix", &[]);
    let pid = t.w.pid;
    let tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("read the task list")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&tid| tid != pid)
        .collect();
    assert!(
        tids.len() >= 2,
        "thread_mix has {} threads besides main",
        tids.len()
    );
    t.dump_ok(&["@no-oracle: the restore is meant to fail"]);
    t.expect_tree_killed_by_dump();
    wait_init_reaped_orphans(Duration::from_secs(15));
    let enosys = CairnEnv::set("CAIRN_TEST_BATCH_ENOSYS", &libc::SYS_clone3.to_string());
    let out = restore_expect_fail(&t.w.images, &[], pid);
    drop(enosys);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("clone3 for ")
            && err.contains("os error 38")
            && tids.iter().any(|tid| err.contains(&tid.to_string())),
        "the restore did not name the process, the thread and the failed clone3:\n{err}"
    );
    for p in std::iter::once(pid).chain(tids) {
        assert!(
            wait_pid_gone(p, Duration::from_secs(10)),
            "task {p} still exists after the failed restore"
        );
    }
}

/// The check of the restored mappings' VmFlags runs on a thread of its
/// own beside the files and attributes phases and is joined before the
/// go (`restore::FlagsCheck`): when it finds a difference (the test hook
/// CAIRN_TEST_VERIFY_FLAG makes it expect an extra flag on the last
/// process's first VMA), the restore fails naming the process and the
/// flag, after the later phases ran, and no process of the tree is left.
#[test]
fn failed_flags_check_leaves_no_process() {
    if skip_unless_root() {
        return;
    }
    tree_levels_restore_fails("CAIRN_TEST_VERIFY_FLAG", "zz", &["-v"], |err, pids| {
        err.contains("came back with other VmFlags")
            && err.contains("\"zz\"")
            && pids.iter().any(|p| err.contains(&format!("pid {p}:")))
    });
}

/// Resource limits that differ from process to process (a child forked
/// before its parent changed them keeps the ones cairn's vessels have, so
/// a restore sets none for it) and fd tables whose descriptions are
/// fetched across processes, moved and dup'd in one batch: every process
/// finds its 16 limits, its fds, their flags and which of them share a
/// description (kcmp) as they were (`tree_batch_state.c`).
#[test]
fn limits_and_fd_tables_through_batches() {
    if skip_unless_root() {
        return;
    }
    let t = tree_checkpoint_restore("tree_batch_state", &[], TreeOpts::default());
    let out = t.run.as_ref().expect("restored").output();
    let err = String::from_utf8_lossy(&out.stderr);
    let n = batches(&err).unwrap_or_else(|| panic!("no batch count in cairn's log:\n{err}"));
    assert!(n > 0, "no batch ran:\n{err}");
}

/// The same tree with SIGTRAP ignored everywhere: no process may stop at
/// the agent loop's `int3` (`restore::traps_ok`), so every list of calls
/// runs one call at a time, cairn passing each new fd (pidfd, fetched
/// description) from the call that made it to the next; the tree comes
/// back the same, and no batch ran.
#[test]
fn fd_tables_without_the_agent_loop() {
    if skip_unless_root() {
        return;
    }
    let t = tree_checkpoint_restore("tree_batch_state", &["--ignore-trap"], TreeOpts::default());
    let out = t.run.as_ref().expect("restored").output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        batches(&err),
        Some(0),
        "batches ran in a tree that ignores SIGTRAP:\n{err}"
    );
}
