//! File locks (issue 14): POSIX record locks, OFD locks, flock locks and
//! leases come back with their owners and ranges; processes waiting for a
//! lock wait again; a lease being broken is refused at dump, which leaves
//! the workload running.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::refuse::*;
use common::*;

/// POSIX read and write locks on several ranges (one to EOF) of the
/// parent and of a child, an OFD lock, flock LOCK_SH and LOCK_EX (one on a
/// directory, one on a description shared with a child), a child waiting
/// in F_SETLKW and one in flock: the workload compares its fdinfo "lock:"
/// lines with the ones before the dump, checks conflicts from a helper,
/// then lets the waiting children have their locks.
#[test]
fn files_locks() {
    if skip_unless_root() {
        return;
    }
    let t = tree_checkpoint_restore(
        "files_locks",
        &[],
        TreeOpts {
            compare_tree: true,
            ..Default::default()
        },
    );
    let log = t.dump_log();
    assert!(
        !log.contains("lease"),
        "the dump log mentions a lease where there is none:\n{log}"
    );
}

/// The same tree while the test process takes and drops OFD locks all
/// the time and holds enough POSIX locks that /proc/locks spans several
/// pages: the kernel hands that file out a page per read and counts its
/// way back between reads, so lines shift; the dump's cross-check and the
/// `--compare` oracle must still see every lock of the tree exactly once.
/// (Failed 4 runs in 5 with cairn of stop 21: a lock listed twice.)
#[test]
fn files_locks_while_others_lock() {
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    if skip_unless_root() {
        return;
    }
    let dir = fresh_dir("files_locks_churn");
    let open = |name: &str| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.join(name))
            .unwrap()
    };
    let setlk = |f: &std::fs::File, cmd: i32, ty: i32, start: i64| {
        let fl = libc::flock {
            l_type: ty as i16,
            l_whence: libc::SEEK_SET as i16,
            l_start: start,
            l_len: 1,
            l_pid: 0,
        };
        // SAFETY: fcntl on an open fd with a valid struct flock.
        unsafe { libc::fcntl(f.as_raw_fd(), cmd, &fl) }
    };
    let held = open("held");
    for i in 0..200 {
        assert_eq!(setlk(&held, libc::F_SETLK, libc::F_WRLCK, i * 2), 0);
    }
    let files: Vec<_> = (0..8).map(|i| open(&format!("c{i}"))).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for ty in [libc::F_WRLCK, libc::F_UNLCK] {
                    for f in &files {
                        assert_eq!(setlk(f, libc::F_OFD_SETLK, ty, 0), 0);
                        n += 1;
                    }
                }
            }
            n
        })
    };
    let t = std::panic::catch_unwind(|| {
        tree_checkpoint_restore(
            "files_locks",
            &[],
            TreeOpts {
                compare_tree: true,
                ..Default::default()
            },
        )
    });
    stop.store(true, Ordering::Relaxed);
    let ops = churn.join().expect("the lock churner panicked");
    drop(held);
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = t {
        std::panic::resume_unwind(e);
    }
    assert!(ops > 1000, "the churner took and dropped only {ops} locks");
}

/// A --leave-running dump of a process holding leases is quick and leaves
/// both leases as they were, unbroken (the workload checks them, and that
/// no SIGIO came, when it gets SIGTERM).
#[test]
fn files_lease_leave_running() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("files_lease", &[]);
    let t = Instant::now();
    w.dump_ok(&["--leave-running"]);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the --leave-running dump of a process holding leases took {:?}",
        t.elapsed()
    );
    w.terminate_original_expect_pass();
}

/// A read and a write lease: the dump takes far less than the kernel's
/// lease break time (it must not open the leased files, which would break
/// the write lease and wait for it), and both leases come back unbroken
/// and still working.
#[test]
fn files_lease() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("files_lease", &[]);
    let t = Instant::now();
    w.dump_ok(&[]);
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "the dump of a process holding leases took {took:?} (the lease break time is 45 s by \
         default: did the dump break a lease?)"
    );
    w.expect_killed_by_dump();
    w.restore_wait(&[]);
}

/// Kills the opener blocked in open(2) on drop.
struct Opener(Child);

impl Drop for Opener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Another process opens the write-leased file for writing, so the lease
/// is being broken: the dump refuses, naming the pid, the fd and the
/// reason, and leaves the workload running (not stopped, not traced); the
/// workload then checks it saw exactly that one break and that its read
/// lease is untouched.
#[test]
fn files_lease_breaking_refused() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("files_lease", &["--expect-break"]);
    let wr = w.work.join("wr");
    // Blocks in open(2) until the lease is given up or the break time ends.
    let opener = Opener(
        Command::new("sh")
            .arg("-c")
            .arg("exec 3>>\"$0\"")
            .arg(&wr)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn the opener"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let pat = format!(" {} ", w.pid);
    loop {
        let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
        if locks
            .lines()
            .any(|l| l.contains("LEASE  BREAKING") && l.contains(&pat))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the lease of pid {} is not being broken after 10 s:\n{locks}",
            w.pid
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let t = Instant::now();
    let r = dump_refused(w.pid, &w.images, &[], &["fd 4", "being broken"]);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the refusal took {:?}",
        t.elapsed()
    );
    eprintln!("the refusal: {}", r.line);
    drop(opener);
    w.terminate_original_expect_pass();
}

/// A lock that someone outside the tree holds at restore time: the restore
/// fails, naming the file and the range, and leaves no process behind;
/// once the lock is gone, the same images restore completely.
#[test]
fn files_locks_conflict_at_restore() {
    if skip_unless_root() {
        return;
    }
    let mut t = TreeTest::start("files_locks", &[]);
    t.dump_ok(&[]);
    t.expect_tree_killed_by_dump();
    let a = t.w.work.join("a");
    let f = std::fs::File::options()
        .read(true)
        .write(true)
        .open(&a)
        .expect("open a");
    // An OFD write lock on byte 25, inside the parent's write lock 20-29.
    let lk = libc::flock {
        l_type: libc::F_WRLCK as i16,
        l_whence: libc::SEEK_SET as i16,
        l_start: 25,
        l_len: 1,
        l_pid: 0,
    };
    nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&f),
        nix::fcntl::FcntlArg::F_OFD_SETLK(&lk),
    )
    .expect("take the conflicting OFD lock");
    let out = restore_expect_fail(&t.w.images, &[], t.w.pid);
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("the failure: {}", err.trim());
    assert!(
        err.contains(&format!("pid {}: fd 3", t.w.pid))
            && err.contains(&format!("({})", a.display()))
            && err.contains("POSIX write lock on bytes 20-29")
            && err.contains("conflicting lock"),
        "the failed restore does not name pid {}, {} and bytes 20-29: {}",
        t.w.pid,
        a.display(),
        describe(&out)
    );
    for p in &t.before {
        assert!(
            wait_pid_gone(p.pid, Duration::from_secs(5)),
            "pid {} is left behind by the failed restore",
            p.pid
        );
    }
    drop(f);
    t.restore_start(&[], false);
    t.check_restored_tree();
    t.finish();
}

/// A flock lock that a live process outside the tree took on a description
/// the tree shares (`flock FILE sleep`, which holds the lock while its
/// command runs): the dump of the command refuses it, naming the pid, the
/// fd and the outside holder, and leaves the command running.
#[test]
fn files_flock_outside_owner_refused() {
    if skip_unless_root() {
        return;
    }
    let dir = fresh_dir("flock_outside");
    let file = dir.join("lockfile");
    let mut holder = Opener(
        Command::new("flock")
            .arg(&file)
            .args(["sleep", "1000"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn flock(1)"),
    );
    let flock_pid = holder.0.id() as i32;
    // The command, once it runs with the locked file open.
    let deadline = Instant::now() + Duration::from_secs(10);
    let sleeper = loop {
        let kids = std::fs::read_to_string(format!("/proc/{flock_pid}/task/{flock_pid}/children"))
            .unwrap_or_default();
        if let Some(p) = kids
            .split_whitespace()
            .next()
            .and_then(|p| p.parse::<i32>().ok())
        {
            let fds = std::fs::read_dir(format!("/proc/{p}/fd"))
                .map(|d| d.count())
                .unwrap_or(0);
            let exe = std::fs::read_link(format!("/proc/{p}/exe")).unwrap_or_default();
            if fds > 3 && exe.ends_with("sleep") {
                break p;
            }
        }
        assert!(
            Instant::now() < deadline,
            "flock(1) did not start its command"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let images = dir.join("images");
    let r = dump_refused(
        sleeper,
        &images,
        &[],
        &[
            &format!("pid {sleeper}: unsupported: fd 3"),
            &format!("taken by pid {flock_pid}, outside the tree"),
        ],
    );
    eprintln!("the refusal: {}", r.line);
    let st = std::fs::read_to_string(format!("/proc/{sleeper}/status")).unwrap_or_default();
    assert!(
        st.contains("State:\tS"),
        "the command was not left sleeping:\n{st}"
    );
    // flock(1) ends when its command does.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sleeper),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = holder.0.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Leases taken by an unprivileged process (uid 1000, no capabilities,
/// owning its files): after the restore the process is still uid 1000,
/// F_GETLEASE and the fdinfo lock lines are as before, /proc/locks lists
/// each lease once under its pid, it is still the files' owner, and a
/// lease break's SIGIO reaches it (the owner credentials F_SETLEASE
/// records let the kernel signal it).
#[test]
fn files_lease_unprivileged_owner() {
    if skip_unless_root() {
        return;
    }
    let opts = StartOpts {
        world_writable_workdir: true,
    };
    let mut w = Workload::start_opts("files_lease", &["--uid"], opts);
    w.dump_ok(&[]);
    w.expect_killed_by_dump();
    w.restore_wait(&[]);
}
