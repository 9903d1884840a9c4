//! pidfds: the process a pidfd refers to, from fdinfo's `Pid:` line. A
//! pidfd of a process of the tree comes back as pidfd_open of the same
//! pid in the vessel (every process exists by then; PIDFD_NONBLOCK and
//! PIDFD_THREAD kept); one of a process that had exited and been reaped
//! (`Pid: -1`) as the pidfd of a child of cairn that exits (with the same
//! status, where the kernel reports one) and is reaped. A pidfd of a
//! process outside the tree, or of a thread other than a leader (threads
//! are created after the fd tables), is refused at dump.

use std::path::Path;

use super::extra;
use crate::error::{Error, Result};
use crate::image::proto::{file_desc, PidFd};
use crate::image::validate::bad as invalid;
use crate::kinds::fd::{
    not_mine, DumpCx, FdKind, FdRef, RestoreCx, KERNEL_O_LARGEFILE, SETFL_FLAGS,
};
use crate::remote::Calls;
use crate::sys::{fown, uffd};

const TARGET: &str = "anon_inode:[pidfd]";
/// `PIDFD_THREAD` (= O_EXCL), kernel 6.9 on.
const PIDFD_THREAD: u32 = libc::O_EXCL as u32;

/// The pid of fdinfo's "Pid:" line: -1 for a process that is gone, 0 for
/// one outside cairn's pid namespace.
pub(crate) fn parse_pid(v: &str) -> Option<i32> {
    v.trim().parse().ok()
}

pub struct Pidfd;

impl FdKind for Pidfd {
    fn name(&self) -> &'static str {
        "pidfd"
    }

    fn precheck(&self, f: &FdRef) -> Result<bool> {
        Ok(f.target == TARGET)
    }

    fn describe(&self, f: &FdRef, _cx: &mut DumpCx) -> Result<Option<file_desc::Kind>> {
        if f.target != TARGET {
            return Ok(None);
        }
        let (pid, fd) = (f.pid, f.fd);
        let target = extra(f.info()?, "Pid")
            .and_then(parse_pid)
            .ok_or_else(|| super::bad(pid, fd, "Pid"))?;
        if target == 0 {
            return Err(Error::unsupported(
                pid,
                format!("fd {fd} is a pidfd of a process in another pid namespace"),
            ));
        }
        let mut p = PidFd::new();
        p.pid = target;
        p.flags = f.flags();
        if target < 0 {
            // What the pidfd says about how its process ended.
            let sys = |what: &str, e| Error::sys(pid, format!("fd {fd}: {what}"), e);
            let pfd = uffd::pidfd_open(pid).map_err(|e| sys("pidfd_open", e))?;
            let copy = uffd::pidfd_getfd(&pfd, fd).map_err(|e| sys("pidfd_getfd", e))?;
            if let Some(st) =
                fown::pidfd_exit_status(&copy).map_err(|e| sys("PIDFD_GET_INFO", e))?
            {
                if st & 0x80 != 0 {
                    return Err(Error::unsupported(
                        pid,
                        format!(
                            "fd {fd} is a pidfd of a process that dumped core (status {st:#x}), \
                             which cairn cannot reproduce"
                        ),
                    ));
                }
                p.exit_known = true;
                p.exit_status = st;
            }
        }
        Ok(Some(file_desc::Kind::Pidfd(p)))
    }

    fn validate(&self, k: &file_desc::Kind, path: &Path, obj: &str) -> Result<()> {
        let file_desc::Kind::Pidfd(p) = k else {
            return Err(not_mine(self));
        };
        if p.pid == 0 || p.pid < -1 {
            return Err(invalid(path, obj, "pid", p.pid));
        }
        if p.flags & !(self.open_flags() | SETFL_FLAGS) != 0 {
            return Err(invalid(path, obj, "flags", format!("{:#o}", p.flags)));
        }
        if p.exit_known && p.exit_status & 0x80 != 0 {
            return Err(invalid(path, obj, "exit_status", p.exit_status));
        }
        Ok(())
    }

    /// pidfd_open gives O_RDWR and PIDFD_THREAD (O_EXCL).
    fn open_flags(&self) -> u32 {
        libc::O_ACCMODE as u32 | PIDFD_THREAD | KERNEL_O_LARGEFILE
    }

    fn open(&self, k: &file_desc::Kind, calls: &mut dyn Calls, _cx: &mut RestoreCx) -> Result<u64> {
        let file_desc::Kind::Pidfd(p) = k else {
            return Err(not_mine(self));
        };
        let fl = p.flags & (libc::O_NONBLOCK as u32 | PIDFD_THREAD);
        if p.pid > 0 {
            return calls.pidfd_open_flags(p.pid, fl);
        }
        let pid = calls.pid();
        let status = if p.exit_known { p.exit_status } else { 0 };
        let dead = fown::dead_pidfd(fl, status)
            .map_err(|e| Error::sys(pid, "a pidfd of an exited process", e))?;
        use std::os::fd::AsRawFd;
        calls.fetch_fd(crate::sys::task::getpid(), dead.as_raw_fd() as u64)
    }
}

/// Refuses a pidfd of a process outside the tree, or of a thread that is
/// not its process's leader. `is_pid`, `is_tid`: whether an id is a
/// process, a thread of the tree.
pub fn check_target(
    pid: i32,
    fd: i32,
    p: &PidFd,
    is_pid: &dyn Fn(i32) -> bool,
    is_tid: &dyn Fn(i32) -> bool,
) -> Result<()> {
    if p.pid < 0 || is_pid(p.pid) {
        return Ok(());
    }
    let why = if is_tid(p.pid) {
        format!(
            "fd {fd} is a pidfd of thread {}, which is not a thread-group leader (threads are recreated after the fds)",
            p.pid
        )
    } else {
        format!(
            "fd {fd} is a pidfd of process {}, which is not in the checkpointed tree",
            p.pid
        )
    };
    Err(Error::unsupported(pid, why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_lines() {
        let info = crate::procfs::parse_fdinfo(
            "pos:\t0\nflags:\t02004002\nmnt_id:\t15\nino:\t1097\nPid:\t-1\nNSpid:\t-1\n",
        )
        .unwrap();
        assert_eq!(extra(&info, "Pid").and_then(parse_pid), Some(-1));
        let info = crate::procfs::parse_fdinfo(
            "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nPid:\t4242\nNSpid:\t4242\t7\n",
        )
        .unwrap();
        assert_eq!(extra(&info, "Pid").and_then(parse_pid), Some(4242));
    }

    #[test]
    fn outside_and_threads_are_refused() {
        let mut p = PidFd::new();
        p.pid = 50;
        let is_pid = |x: i32| x == 10;
        let is_tid = |x: i32| x == 10 || x == 11;
        let e = check_target(10, 4, &p, &is_pid, &is_tid)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("fd 4 is a pidfd of process 50, which is not in the checkpointed tree"),
            "{e}"
        );
        p.pid = 11;
        let e = check_target(10, 4, &p, &is_pid, &is_tid)
            .unwrap_err()
            .to_string();
        assert!(e.contains("thread 11"), "{e}");
        p.pid = 10;
        check_target(10, 4, &p, &is_pid, &is_tid).unwrap();
        p.pid = -1;
        check_target(10, 4, &p, &is_pid, &is_tid).unwrap();
    }
}
