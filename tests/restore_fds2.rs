//! Descriptors restored exactly or refused (issue 14, second round): pty
//! pairs with their index, epoll watches whose registering fd was closed,
//! inotify watches on removed files, pipes with an end outside the tree.

mod common;

use common::refuse::*;
use common::*;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;
use std::time::Duration;

/// The pty tests hold and take pty indices: one at a time.
static PTYS: Mutex<()> = Mutex::new(());

/// The pty index (minor of tty_nr) of `pid`'s controlling terminal.
fn ctty_index(pid: i32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let nr: u64 = rest.split(' ').nth(4).unwrap().parse().unwrap();
    assert_eq!((nr >> 8) & 0xfff, 136, "pid {pid}: tty_nr {nr} is no pty");
    ((nr & 0xff) | ((nr >> 12) & 0xfff00)) as u32
}

/// Opens /dev/ptmx until this process holds the master of pty `index`.
fn hold_pty(index: u32) -> Vec<std::fs::File> {
    let mut held = Vec::new();
    loop {
        let m = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open("/dev/ptmx")
            .expect("open /dev/ptmx");
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", m.as_raw_fd())).unwrap();
        let n: u32 = info
            .lines()
            .find_map(|l| l.strip_prefix("tty-index:"))
            .expect("fdinfo of a pty master has tty-index")
            .trim()
            .parse()
            .unwrap();
        assert!(n <= index, "pty {index} is taken already");
        held.push(m);
        if n == index {
            return held;
        }
    }
}

/// A pty pair comes back as the same /dev/pts/N (the slave's link, its
/// device, the master's ptsname and the controlling terminal's tty_nr,
/// which the workload checks and the oracle compares). The workload's
/// pair lies above two free indices, so a restore that takes the next
/// free index fails it.
#[test]
fn pty_index_kept() {
    if skip_unless_root() {
        return;
    }
    let _g = PTYS.lock().unwrap_or_else(|e| e.into_inner());
    checkpoint_restore("pty_index", &[]);
}

/// A pty whose /dev/pts/N another process holds at restore time fails the
/// restore before any process exists, naming the pty; once it is free,
/// the same images restore.
#[test]
fn pty_index_taken_refused() {
    if skip_unless_root() {
        return;
    }
    let _g = PTYS.lock().unwrap_or_else(|e| e.into_inner());
    let mut w = Workload::start("pty_index", &[]);
    let n = ctty_index(w.pid);
    w.dump_ok(&[]);
    w.expect_killed_by_dump();
    let held = hold_pty(n);
    let out = restore_expect_fail(&w.images, &[], w.pid);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("pty /dev/pts/{n} is in use by another process")),
        "unclear failure: {}",
        describe(&out)
    );
    assert!(!pid_exists(w.pid), "the failed restore left pid {}", w.pid);
    drop(held);
    w.restore_wait(&[]);
}

/// Pipes between a parent and its child, one with its write end closed
/// everywhere: dumped together, both come back (the child reads the
/// parent's bytes, then EOF from each).
#[test]
fn pipe_both_ends() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("pipe_outside", &[]);
}

/// A pipe whose other end is open outside the dumped tree is refused at
/// dump, naming the pid, the fd and the pipe, instead of coming back with
/// that end closed; the process goes on untouched.
#[test]
fn pipe_outside_refused() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("pipe_outside", &[]);
    let child: i32 = std::fs::read_to_string(w.work.join("child.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let ino = std::fs::read_link(format!("/proc/{child}/fd/3"))
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(ino.starts_with("pipe:["), "fd 3 of the child is {ino}");
    dump_refused(
        child,
        &w.images,
        &[],
        &[
            &format!("fd 3 is the read end of {ino}"),
            "write end is open outside",
        ],
    );
    std::thread::sleep(Duration::from_millis(10));
    w.terminate_original_expect_pass();
}

/// Epoll watches whose registering fd was closed while the file lives on
/// through a dup (the number left free, reused by an unwatched file, or
/// reused by another watched file under the same number) come back with
/// the same number, events (EPOLLET, EPOLLEXCLUSIVE, EPOLLONESHOT) and
/// data: the workload compares its fdinfo "tfd:" lines and sees each
/// watch report its file.
#[test]
fn epoll_moved_watches() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("fd_epoll_moved", &[]);
}

/// A watch whose file no fd of the process holds any more (it lives on in
/// a child) is refused at dump, naming the epoll fd and the watch's
/// number; the process goes on and its watches still work.
#[test]
fn epoll_moved_elsewhere_refused() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("fd_epoll_moved", &["--elsewhere"]);
    expect_refused(
        &mut w,
        &[],
        &[
            "epoll fd 3",
            "registered as fd 4",
            "no other fd of the process",
        ],
    );
}

/// An inotify watch on a removed file that is still open (the kernel keeps
/// the watch while the inode lives) comes back on the recreated file (it
/// was refused before; tests/restore_fds3.rs has the exact events): the
/// restored process's watch reports its write to the file. Where the
/// file cannot be opened from its handle (overlayfs), the dump refuses.
#[test]
fn inotify_removed_kept() {
    if skip_unless_root()
        || refused_for_file_handles(
            "fd_inotify_removed",
            &[],
            &[],
            &["inotify watch 1 (inode"],
            "the restore of a watch on a removed file",
        )
    {
        return;
    }
    checkpoint_restore("fd_inotify_removed", &[]);
}

/// A fired (disarmed) EPOLLONESHOT watch cannot come back disarmed (a
/// watch added again is always armed for EPOLLERR and EPOLLHUP): the dump
/// refuses it, naming pid, the epoll fd and the watched fd.
#[test]
fn epoll_oneshot_fired_refused() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("fd_epoll_oneshot", &[]);
    expect_refused(&mut w, &[], &["EPOLLONESHOT", "disarmed"]);
}
