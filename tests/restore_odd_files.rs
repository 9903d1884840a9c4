//! Deleted and odd files (issue 14): files changed after a
//! `--leave-running` dump come back in place (same inode), sparse deleted
//! files keep their holes, and what cannot come back is refused at dump.
mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::refuse::*;
use common::*;

/// A directory for data files, removed unless the test fails.
struct DataDir(PathBuf);

impl Drop for DataDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// SIGKILL the original after a --leave-running dump and reap it.
fn kill_original(w: &mut Workload) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(w.pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL the original");
    w.expect_killed_by_dump();
}

/// The sqlite case: a file the tree has open is changed by a later
/// writer after a `--leave-running` dump; restore writes the checkpointed
/// contents back into the same inode (the workload checks the inode it
/// remembered, the hard link, contents, mode and that the fd and the path
/// are one file), and keeps the later version beside it.
#[test]
fn files_inplace_after_leave_running() {
    if skip_unless_root() {
        return;
    }
    let data = DataDir(fresh_dir("inplace-data"));
    let path = data.0.join("db.data");
    let mut w = Workload::start("files_inplace", &["--file", path_str(&path)]);
    let ino = fs::metadata(&path)
        .expect("the workload made its file")
        .ino();
    w.dump_ok(&["--leave-running"]);
    // A later writer: new contents, longer than before.
    let later = vec![b'L'; 20000];
    fs::write(&path, &later).expect("change the file");
    kill_original(&mut w);
    let out = w.restore_wait(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("written back into the same file"),
        "the restore did not say it wrote the file in place:\n{err}"
    );
    assert_eq!(fs::metadata(&path).unwrap().ino(), ino);
    // The later version is kept beside it, not lost.
    let aside: Vec<PathBuf> = fs::read_dir(&data.0)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("db.data.cairn-"))
        .collect();
    assert_eq!(aside.len(), 1, "expected one aside copy: {aside:?}");
    assert_eq!(fs::read(&aside[0]).unwrap(), later);
}

/// A process that shares its fd table and fs info with its sibling (not
/// its parent) cannot be restored: the dump refuses it, naming both pids,
/// and leaves the tree running (it refused only at restore before).
#[test]
fn shared_with_a_sibling_refused_at_dump() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("files_shared_sibling", &[]);
    let log = w.log_text();
    let pids: Vec<i32> = log
        .lines()
        .find_map(|l| l.strip_prefix("note: pids "))
        .expect("the workload names its processes")
        .split(' ')
        .map(|p| p.parse().unwrap())
        .collect();
    // The refusal names the child, not the workload.
    let out = w.dump(&["-v"]);
    let child = format!("pid {}", pids[1]);
    let with = format!("with pid {}, which is not its parent", pids[0]);
    check_refused(&out, w.pid, &w.images, &[&child, &with]);
    w.terminate_original_expect_pass();
}

/// A 4 GiB sparse deleted file with four data extents: the dump saves
/// only the extents (the image stays small), the restore recreates the
/// holes (ftruncate, then the extents), and the workload finds the same
/// SEEK_DATA/SEEK_HOLE layout, blocks and data.
#[test]
fn files_sparse_deleted() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("files_sparse", &[]);
    let t = std::time::Instant::now();
    w.dump_ok(&[]);
    w.expect_killed_by_dump();
    let size = dir_size(&w.images);
    assert!(
        size < 8 << 20,
        "the images of a 4 GiB file with 24 KiB of data take {size} bytes"
    );
    w.restore_wait(&[]);
    eprintln!("dump and restore took {:?}", t.elapsed());
}

/// A process holding /proc/PID/status of a process outside the tree
/// (here init's) is refused at dump, naming pid, fd and path, and keeps
/// running; its own /proc/self/status (the kernel's /proc/PID/status)
/// comes back as its own after a restore.
#[test]
fn files_proc_refused_and_own_restored() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("files_proc", &["--other", "1"]);
    expect_refused(&mut w, &[], &["/proc/1/status", "outside the dumped tree"]);
    checkpoint_restore("files_proc", &[]);
}

/// A cwd in a removed directory whose parent was removed too cannot
/// come back under its path (restore_fds3 restores the others): refused at
/// dump, naming the pid and the directory, and the process keeps running
/// with that cwd.
#[test]
fn files_cwd_removed_refused() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("files_cwd_ghost", &["--nested"]);
    expect_refused(
        &mut w,
        &[],
        &["nest.d/in.d", "removed together with its parent"],
    );
}

/// A deleted FIFO with queued bytes (refused at dump before): made again
/// at its old path, opened by both fds, unlinked; the bytes are back.
#[test]
fn files_fifo_deleted() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("files_fifo_ghost", &[]);
}

/// A deleted device node (a copy of /dev/null's 1:3) held open: made
/// again beside its old place, opened, unlinked (refused at dump before).
#[test]
fn files_dev_deleted() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("files_dev_ghost", &[]);
}
