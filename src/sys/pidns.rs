//! Pid namespaces for `cairn run --pid-ns` and `restore --pid-ns`
//! (`crate::run`): making one, entering one for the next child, and
//! starting a child in one with its own `/proc`; plus the raw calls of
//! the supervisor (waits, signal masks).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use super::check;

/// The pid namespace cairn itself lives in (`/proc/self/ns/pid`), to come
/// back to after [`enter_for_children`] or [`new_for_children`].
pub fn own() -> io::Result<OwnedFd> {
    Ok(std::fs::File::open("/proc/self/ns/pid")?.into())
}

/// The pid namespace of process `pid`.
pub fn of(pid: i32) -> io::Result<OwnedFd> {
    Ok(std::fs::File::open(format!("/proc/{pid}/ns/pid"))?.into())
}

/// The inode of the pid namespace of `pid` ("self" for cairn).
pub fn ino(pid: &str) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(format!("/proc/{pid}/ns/pid"))?.ino())
}

/// Children of the calling thread made from now on are born in the pid
/// namespace `ns` (setns CLONE_NEWPID); cairn itself stays where it is.
pub fn enter_for_children(ns: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: setns with a descriptor and an integer flag.
    check(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWPID) } as libc::c_long).map(drop)
}

/// The next child of the calling thread is the init (pid 1) of a new pid
/// namespace (unshare CLONE_NEWPID).
pub fn new_for_children() -> io::Result<()> {
    // SAFETY: unshare with an integer flag.
    check(unsafe { libc::unshare(libc::CLONE_NEWPID) } as libc::c_long).map(drop)
}

/// How [`spawn`] prepares the child before it executes its program.
#[derive(Debug, Clone, Copy, Default)]
pub struct Prep {
    /// A mount namespace of its own (a copy of cairn's, mounts slaved to
    /// it) with a fresh `/proc` of the pid namespace it is born in.
    pub own_proc: bool,
    /// Killed (SIGKILL) when cairn's thread that spawned it ends.
    pub pdeathsig: bool,
    /// A session of its own.
    pub setsid: bool,
}

/// Spawns `cmd` after `prep` (see [`Prep`]). Only raw system calls run
/// between the fork and the exec.
/// The child starts with no signal blocked, as from a shell: a mask is
/// kept across fork and exec, and cairn blocks the signals it reads
/// from a signalfd (`cairn run`: SIGTERM, SIGINT, SIGHUP, SIGCHLD, the
/// checkpoint signal), which its job must not inherit.
pub fn spawn(cmd: &mut Command, prep: Prep) -> io::Result<Child> {
    let parent = super::task::getpid();
    // SAFETY: sigemptyset fills the set it is given; it is made before
    // the fork, so the child only uses it.
    let empty = unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut s);
        s
    };
    // SAFETY: the closure runs in the forked child before exec and makes
    // only raw system calls with static strings (no allocation, no lock).
    unsafe {
        cmd.pre_exec(move || {
            if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            if prep.pdeathsig {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                // 0: a parent outside the child's pid namespace.
                let pp = libc::getppid();
                if pp != 0 && pp != parent {
                    return Err(io::Error::other("cairn exited"));
                }
            }
            if prep.setsid && libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            if prep.own_proc {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_SLAVE,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                if libc::mount(
                    c"proc".as_ptr(),
                    c"/proc".as_ptr(),
                    c"proc".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// How a process ended, from a wait status: its exit code, or 128 + the
/// signal that killed it.
pub fn status_code(st: i32) -> i32 {
    if libc::WIFEXITED(st) {
        libc::WEXITSTATUS(st)
    } else if libc::WIFSIGNALED(st) {
        128 + libc::WTERMSIG(st)
    } else {
        1
    }
}

/// waitpid(pid, flags) for an exit (`pid` -1: any child): `Ok(None)`
/// when nothing exited yet (WNOHANG), else the pid and its wait status.
pub fn wait_exit(pid: i32, nohang: bool) -> io::Result<Option<(i32, i32)>> {
    let flags = libc::__WALL | if nohang { libc::WNOHANG } else { 0 };
    loop {
        let mut st: libc::c_int = 0;
        // SAFETY: `st` is a valid out-pointer for the duration of the call.
        let r = unsafe { libc::waitpid(pid, &mut st, flags) };
        match r {
            -1 => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            0 => return Ok(None),
            p => return Ok(Some((p, st))),
        }
    }
}

/// Writes `/proc/sys/kernel/ns_last_pid` of the pid namespace whose
/// `/proc` is mounted: the next pid given out there is above `pid`.
pub fn set_last_pid(pid: i32) -> io::Result<()> {
    std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{pid}"))
}
