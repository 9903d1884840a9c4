//! epoll: the watch list (target fd, events, data), from fdinfo's `tfd`
//! lines. Restore creates the instance with epoll_create1 and fills the
//! watch list in `post_open`, once every fd of the process is in place.

use std::path::Path;

use super::bad;
use crate::error::{Error, Result};
use crate::image::proto::{file_desc, EpollTarget, EventPoll, Fd, FdTable};
use crate::image::validate::{bad as invalid, count, FD_MAX, MAX_ITEMS};
use crate::kinds::fd::{not_mine, DumpCx, FdKind, FdRef, RestoreCx};
use crate::remote::Calls;
use crate::sys::fown;

const TARGET: &str = "anon_inode:[eventpoll]";

pub struct Epoll;

/// Refuses a watch whose file is no longer open under the fd number it
/// was registered with (closed after a dup, or the number reused for
/// another file): restore registers watches through that number.
/// kcmp(KCMP_EPOLL_TFD) compares the watched file itself; without it
/// (no CONFIG_CHECKPOINT_RESTORE), the inode fdinfo gives.
fn check_registered(f: &FdRef, t: &EpollTarget, toff: u32) -> Result<()> {
    let (pid, fd) = (f.pid, f.fd);
    let refuse = |why: &str| {
        Err(Error::unsupported(
            pid,
            format!(
                "epoll fd {fd} watches a file registered as fd {}, {why}; cairn cannot restore that watch",
                t.fd
            ),
        ))
    };
    match fown::kcmp_epoll_tfd(pid, t.fd as i32, pid, fd, t.fd as i32, toff) {
        Ok(0) => Ok(()),
        Ok(_) => refuse("a number that now names another file"),
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => refuse("which is closed now"),
        Err(_) => {
            use std::os::unix::fs::MetadataExt;
            match std::fs::metadata(format!("/proc/{pid}/fd/{}", t.fd)) {
                Ok(md) if t.ino == 0 || md.ino() == t.ino => Ok(()),
                Ok(_) => refuse("a number that now names another file"),
                Err(_) => refuse("which is closed now"),
            }
        }
    }
}

impl FdKind for Epoll {
    fn name(&self) -> &'static str {
        "epoll"
    }

    fn precheck(&self, f: &FdRef) -> Result<bool> {
        Ok(f.target == TARGET)
    }

    fn describe(&self, f: &FdRef, _cx: &mut DumpCx) -> Result<Option<file_desc::Kind>> {
        if f.target != TARGET {
            return Ok(None);
        }
        let (pid, fd) = (f.pid, f.fd);
        let mut e = EventPoll::new();
        e.flags = f.flags();
        for (k, v) in &f.info()?.extra {
            if k != "tfd" {
                continue;
            }
            // "tfd:        5 events:       19 data: 0000000000000005  pos:0 ino:61af sdev:d"
            let w: Vec<&str> = v.split_whitespace().collect();
            let field = |name: &str| {
                w.iter()
                    .position(|x| *x == name)
                    .and_then(|i| w.get(i + 1))
                    .copied()
            };
            let mut t = EpollTarget::new();
            t.fd = w
                .first()
                .and_then(|x| x.parse().ok())
                .ok_or_else(|| bad(pid, fd, "tfd"))?;
            t.events = field("events:")
                .and_then(|x| u32::from_str_radix(x, 16).ok())
                .ok_or_else(|| bad(pid, fd, "events"))?;
            t.data = field("data:")
                .and_then(|x| u64::from_str_radix(x, 16).ok())
                .ok_or_else(|| bad(pid, fd, "data"))?;
            t.ino = w
                .iter()
                .find_map(|x| x.strip_prefix("ino:"))
                .and_then(|x| u64::from_str_radix(x, 16).ok())
                .unwrap_or(0);
            let toff = e.targets.iter().filter(|x| x.fd == t.fd).count() as u32;
            check_registered(f, &t, toff)?;
            e.targets.push(t);
        }
        Ok(Some(file_desc::Kind::Epoll(e)))
    }

    fn validate(&self, k: &file_desc::Kind, path: &Path, obj: &str) -> Result<()> {
        let file_desc::Kind::Epoll(e) = k else {
            return Err(not_mine(self));
        };
        count(path, obj, "targets", e.targets.len(), MAX_ITEMS)?;
        for t in &e.targets {
            if t.fd >= FD_MAX {
                return Err(invalid(path, obj, "targets.fd", t.fd));
            }
        }
        Ok(())
    }

    fn open(&self, k: &file_desc::Kind, calls: &mut dyn Calls, _cx: &mut RestoreCx) -> Result<u64> {
        if !matches!(k, file_desc::Kind::Epoll(_)) {
            return Err(not_mine(self));
        }
        calls.epoll_create1(libc::EPOLL_CLOEXEC)
    }

    /// The watch list names other fds of the table: filled in now.
    fn post_open(
        &self,
        k: &file_desc::Kind,
        calls: &mut dyn Calls,
        f: &Fd,
        table: &FdTable,
    ) -> Result<()> {
        let file_desc::Kind::Epoll(e) = k else {
            return Err(not_mine(self));
        };
        let pid = calls.pid();
        for t in &e.targets {
            if !table.fds.iter().any(|x| x.fd == t.fd) {
                return Err(Error::Restore(format!(
                    "pid {pid}: epoll fd {} watches fd {}, which is no longer open: not supported",
                    f.fd, t.fd
                )));
            }
            match calls.epoll_ctl(
                f.fd as u64,
                libc::EPOLL_CTL_ADD,
                t.fd as u64,
                t.events,
                t.data,
            ) {
                Ok(()) => {}
                // The same description reached through two fds of one
                // table: already added.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => {
                    return Err(Error::sys(
                        pid,
                        format!("epoll_ctl(fd {}, ADD fd {})", f.fd, t.fd),
                        e,
                    ))
                }
            }
        }
        Ok(())
    }
}
