//! Issue 14, third round (fds3): removed files and directories still in
//! use come back as ghosts (inotify watches on removed files, a cwd or
//! root in a removed directory, deleted device nodes); inotify events
//! queued and not read are refused. Where the test directory's files
//! cannot be opened from their handles (an overlayfs without nfs_export,
//! as in `cargo xtask vm-test`'s guests), a dump of a watch on one is
//! refused instead, and the tests check that refusal.

mod common;

use common::refuse::{expect_refused, refused_for_file_handles};
use common::*;

/// The unsupported line of a refused dump (exit code 6).
fn refusal(out: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "dump: {}", describe(out));
    err.lines()
        .find(|l| l.contains("unsupported"))
        .unwrap_or_else(|| panic!("no refusal in: {err}"))
        .to_string()
}

/// An inotify watch on a file removed while open comes back on the
/// recreated (and again unlinked) file with its wd and mask, between two
/// watches on live files: nothing is queued by the restore itself (no
/// IN_OPEN, no IN_ATTRIB from the unlink of the ghost), and the program
/// then sees IN_ACCESS, IN_MODIFY and, on its last close, IN_CLOSE_WRITE,
/// IN_DELETE_SELF and IN_IGNORED on that watch.
#[test]
fn inotify_removed_restored() {
    if skip_unless_root()
        || refused_for_file_handles(
            "fd_inotify_ghost",
            &[],
            &[],
            &["fd 3: inotify watch"],
            "the restore of watches on a removed file and on live files",
        )
    {
        return;
    }
    checkpoint_restore("fd_inotify_ghost", &[]);
}

/// A watch on a removed file that the process only maps (its fd closed)
/// cannot come back (cairn recreates a removed file from an open fd): the
/// dump refuses it, naming pid, the inotify fd and the watch, and the
/// process goes on with its watches.
#[test]
fn inotify_removed_mapped_refused() {
    if skip_unless_root()
        || refused_for_file_handles(
            "fd_inotify_ghost",
            &["--mapped"],
            &[],
            &["fd 3: inotify watch"],
            "the refusal of a watch on a removed file that is only mapped",
        )
    {
        return;
    }
    let mut w = Workload::start("fd_inotify_ghost", &["--mapped"]);
    let line = refusal(&w.dump(&["-v"]));
    assert!(
        line.contains(&format!("pid {}", w.pid))
            && line.contains("fd 3: inotify watch 2 is on")
            && line.contains(&format!("ghost.{}", w.pid))
            && line.contains("no fd of the tree holds open"),
        "unclear refusal: {line}"
    );
    w.terminate_original_expect_pass();
}

/// A cwd in a removed directory comes back as a removed directory: made
/// again at its path with its mode (0751) and owner (1234:5678), entered,
/// removed; /proc/PID/cwd reads the same "PATH (deleted)", getcwd() fails
/// with ENOENT, nothing can be created in it, and ".." is its parent.
#[test]
fn cwd_removed_restored() {
    if skip_unless_root() {
        return;
    }
    let w = checkpoint_restore("files_cwd_ghost", &[]);
    assert!(
        !w.work.join("cwd_ghost.d").exists(),
        "the recreated directory was left behind"
    );
}

/// Deleted device nodes beyond the plain character devices: a block
/// device node (refused before) and a /dev/zero node come back as
/// unlinked nodes of the same device, mode, owner (lost before) and
/// access mode.
#[test]
fn devnode_deleted_restored() {
    if skip_unless_root() {
        return;
    }
    if !std::path::Path::new("/dev/loop0").exists() {
        note_skip("no /dev/loop0");
        return;
    }
    checkpoint_restore("files_devnode_ghost", &[]);
}

/// A deleted node of a character device whose state is per open
/// (/dev/kmsg's read position) is refused at dump, naming pid, fd, the
/// node and the device; the process goes on.
#[test]
fn devnode_stateful_refused() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("files_dev_ghost", &["--kmsg"]);
    let line = refusal(&w.dump(&["-v"]));
    assert!(
        line.contains(&format!("pid {}", w.pid))
            && line.contains("deleted node")
            && line.contains("character device 1:11")
            && line.contains("per open"),
        "unclear refusal: {line}"
    );
    w.terminate_original_expect_pass();
}

/// inotify events queued and not yet read cannot be queued again (only
/// the kernel queues them): before, they were dropped silently. The dump
/// refuses, naming pid, fd and the bytes queued, and the program still
/// reads its event afterwards (`--queued` checks it on SIGTERM).
#[test]
fn inotify_queued_events_refused() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("fd_inotify", &["--queued"]);
    expect_refused(&mut w, &[], &["(inotify) has", "bytes of queued events"]);
}

/// A --leave-running dump reads the removed file's contents (and the live
/// files') without raising an inotify event for the tree's watches: it
/// reads through the tree's own descriptions (no IN_OPEN, no
/// IN_CLOSE_NOWRITE) and through a mapping (no IN_ACCESS), so the
/// original's queue is still empty afterwards (the workload checks it, and
/// what its file then reports, after SIGTERM).
#[test]
fn inotify_removed_leave_running_queues_nothing() {
    if skip_unless_root()
        || refused_for_file_handles(
            "fd_inotify_ghost",
            &[],
            &["--leave-running"],
            &["fd 3: inotify watch"],
            "the --leave-running dump of a watch on a removed file",
        )
    {
        return;
    }
    leave_running("fd_inotify_ghost", &[]);
}

/// A --leave-running dump must save a removed file open only write-only
/// (fd 4), watched by the tree's inotify for IN_OPEN, IN_ACCESS and
/// IN_CLOSE_NOWRITE: it cannot be read without opening it again, which
/// the watch would see; refused, naming the fd, the path and the watcher,
/// and the original goes on with an empty queue.
#[test]
fn inotify_wronly_leave_running_refused() {
    if skip_unless_root()
        || refused_for_file_handles(
            "fd_inotify_wronly",
            &[],
            &["--leave-running"],
            &["fd 3: inotify watch"],
            "the refusal of a write-only file a watch would see opened",
        )
    {
        return;
    }
    let mut w = Workload::start("fd_inotify_wronly", &[]);
    expect_refused(
        &mut w,
        &["--leave-running"],
        &[
            "fd 4 (",
            "wronly.",
            "write-only",
            "fd 3 (inotify, a mark on the file)",
        ],
    );
}

/// The same file also open read-only (fd 5): the dump reads it through
/// that description (no open, no event), the original's queue stays
/// empty; and without --leave-running the write-only file comes back with
/// its contents, the watch's queue empty.
#[test]
fn inotify_wronly_read_through_another_fd() {
    if skip_unless_root()
        || refused_for_file_handles(
            "fd_inotify_wronly",
            &["--readable"],
            &["--leave-running"],
            &["fd 3: inotify watch"],
            "the dump of a write-only file read through another fd",
        )
    {
        return;
    }
    leave_running("fd_inotify_wronly", &["--readable"]);
    checkpoint_restore("fd_inotify_wronly", &[]);
}
