//! epoll: the watch list (target fd, events, data), from fdinfo's `tfd`
//! lines. Restore creates the instance with epoll_create1 and fills the
//! watch list in `post_open`, once every fd of the process is in place.
//! The kernel keys a watch by (file, fd number it was added with) and
//! keeps it when that fd is closed while the file lives on: such a watch
//! is recorded with the fd that holds the file now (found with kcmp) and
//! added again through a temporary copy of it at the old number, as CRIU
//! does.

use std::path::Path;

use super::bad;
use crate::error::{Error, Result};
use crate::image::proto::{file_desc, EpollTarget, EventPoll, Fd, FdTable};
use crate::image::validate::{bad as invalid, count, FD_MAX, MAX_ITEMS};
use crate::kinds::fd::{not_mine, DumpCx, FdKind, FdRef, RestoreCx};
use crate::remote::Calls;
use crate::sys::fown;

const TARGET: &str = "anon_inode:[eventpoll]";
/// The flag bits of a watch (EPOLLEXCLUSIVE, EPOLLWAKEUP, EPOLLONESHOT,
/// EPOLLET): what a fired EPOLLONESHOT watch keeps (fs/eventpoll.c).
const EP_PRIVATE_BITS: u32 =
    (libc::EPOLLEXCLUSIVE | libc::EPOLLWAKEUP | libc::EPOLLONESHOT | libc::EPOLLET) as u32;

pub struct Epoll;

/// Where the file a watch registered as `t.fd` is now: `None` when fd
/// `t.fd` of the process is still that file, else another fd of the
/// process that is (a watch survives the close of its fd while the file
/// lives on: a dup, or the number reused for another file). kcmp
/// (KCMP_EPOLL_TFD) compares the watched file itself. A file no fd of
/// the process holds any more (kept by another process or a mapping) is
/// refused, and so is any moved watch without kcmp (no
/// CONFIG_CHECKPOINT_RESTORE: only fdinfo's inode to go by).
fn locate(f: &FdRef, t: &EpollTarget, toff: u32) -> Result<Option<u32>> {
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
    let same = |c: i32| fown::kcmp_epoll_tfd(pid, c, pid, fd, t.fd as i32, toff);
    let why = match same(t.fd as i32) {
        Ok(0) => return Ok(None),
        Ok(_) => "a number that now names another file",
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => "which is closed now",
        Err(_) => {
            use std::os::unix::fs::MetadataExt;
            return match std::fs::metadata(format!("/proc/{pid}/fd/{}", t.fd)) {
                Ok(md) if t.ino == 0 || md.ino() == t.ino => Ok(None),
                Ok(_) => refuse("a number that now names another file (and kcmp is not available to find the file)"),
                Err(_) => refuse("which is closed now (and kcmp is not available to find the file)"),
            };
        }
    };
    let fds = crate::procfs::read_fds(pid)?;
    match fds
        .iter()
        .map(|&(c, _)| c)
        .find(|&c| matches!(same(c), Ok(0)))
    {
        Some(c) => Ok(Some(c as u32)),
        None => refuse(&format!(
            "{why}, and no other fd of the process is that file (it lives on elsewhere)"
        )),
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
            // A fired EPOLLONESHOT watch keeps only its flag bits; a watch
            // added again is always armed (EPOLLERR and EPOLLHUP at least).
            if t.events & libc::EPOLLONESHOT as u32 != 0 && t.events & !EP_PRIVATE_BITS == 0 {
                return Err(Error::unsupported(
                    pid,
                    format!(
                        "fd {fd}: the EPOLLONESHOT watch of fd {} has fired and is disarmed; \
                         a watch added again is always armed, so it cannot come back as it is",
                        t.fd
                    ),
                ));
            }
            t.ino = w
                .iter()
                .find_map(|x| x.strip_prefix("ino:"))
                .and_then(|x| u64::from_str_radix(x, 16).ok())
                .unwrap_or(0);
            let toff = e.targets.iter().filter(|x| x.fd == t.fd).count() as u32;
            if let Some(via) = locate(f, &t, toff)? {
                t.closed = true;
                t.via = via;
            }
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
            if t.closed && (t.via >= FD_MAX || t.via == t.fd) {
                return Err(invalid(path, obj, "targets.via", t.via));
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
        let add = |calls: &mut dyn Calls, epfd: u64, t: &EpollTarget| {
            match calls.epoll_ctl(epfd, libc::EPOLL_CTL_ADD, t.fd as u64, t.events, t.data) {
                Ok(()) => Ok(()),
                // The same epoll description reached through two fds of
                // one table: its watches are added already.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
                Err(e) => Err(Error::sys(
                    pid,
                    format!("epoll_ctl(fd {}, ADD fd {})", f.fd, t.fd),
                    e,
                )),
            }
        };
        let high = table.fds.iter().map(|x| x.fd).max().unwrap_or(0) as u64 + 1;
        for t in &e.targets {
            let now = table.fds.iter().find(|x| x.fd == t.fd);
            if !t.closed {
                if now.is_none() {
                    return Err(Error::Restore(format!(
                        "pid {pid}: epoll fd {} watches fd {}, which is not in the fd table",
                        f.fd, t.fd
                    )));
                }
                add(calls, f.fd as u64, t)?;
                continue;
            }
            // Registered as `fd`, whose number no longer names the file
            // (now `via`): the file is put at `fd` for the ADD, and `fd`
            // given back what it is in the table (or closed).
            if !table.fds.iter().any(|x| x.fd == t.via) {
                return Err(Error::Restore(format!(
                    "pid {pid}: epoll fd {}: the file of the watch registered as fd {} is fd {}, which is not in the fd table",
                    f.fd, t.fd, t.via
                )));
            }
            let saved = match now {
                Some(_) => Some(calls.dup_min(t.fd as u64, high)?),
                None => None,
            };
            calls.dup3(t.via as u64, t.fd as u64, true)?;
            // (The number may be the epoll fd's own: then its copy adds.)
            let epfd = match saved {
                Some(s) if t.fd == f.fd => s,
                _ => f.fd as u64,
            };
            let r = add(calls, epfd, t);
            match (saved, now) {
                (Some(s), Some(x)) => {
                    calls.dup3(s, t.fd as u64, x.cloexec)?;
                    calls.close(s)?;
                }
                _ => calls.close(t.fd as u64)?,
            }
            r?;
        }
        Ok(())
    }
}
