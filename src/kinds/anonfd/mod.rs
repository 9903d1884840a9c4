//! Descriptors that are not files on disk, one module per kind: eventfd,
//! signalfd, timerfd, epoll, inotify, fanotify, memfd and pidfd. Dump reads their state
//! from /proc/PID/fdinfo (and a memfd's bytes through /proc/PID/fd);
//! restore recreates each with an injected syscall in the vessel. Epoll
//! watch lists are filled in after every fd of the process is in place
//! (`post_open`), since they name other fds.

pub mod epoll;
pub mod eventfd;
pub mod fanotify;
pub mod inotify;
pub mod memfd;
pub mod pidfd;
pub mod signalfd;
pub mod timerfd;

use crate::error::Error;
use crate::procfs::FdInfo;

pub(crate) fn extra<'a>(info: &'a FdInfo, key: &str) -> Option<&'a str> {
    info.extra
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

pub(crate) fn bad(pid: i32, fd: i32, what: &str) -> Error {
    Error::parse(
        format!("/proc/{pid}/fdinfo/{fd}"),
        format!("no usable {what}"),
    )
}

/// "(sec, nsec)" -> ns.
pub(crate) fn parse_pair_ns(v: &str) -> Option<u64> {
    let v = v.trim().strip_prefix('(')?.strip_suffix(')')?;
    let (s, n) = v.split_once(',')?;
    let s: u64 = s.trim().parse().ok()?;
    let n: u64 = n.trim().parse().ok()?;
    s.checked_mul(1_000_000_000)?.checked_add(n)
}

/// The O_NONBLOCK bit of saved file status flags.
pub(crate) fn nonblock(flags: u32) -> i32 {
    (flags & libc::O_NONBLOCK as u32) as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::fd::{FdRef, KINDS};

    #[test]
    fn pairs() {
        assert_eq!(parse_pair_ns("(1, 500)"), Some(1_000_000_500));
        assert_eq!(parse_pair_ns("(0, 0)"), Some(0));
        assert_eq!(parse_pair_ns("1, 2"), None);
    }

    /// The first kind of the list that claims `target` at precheck.
    fn claimed_by(target: &str) -> Option<&'static str> {
        let f = FdRef::new(std::process::id() as i32, 0, target, None);
        KINDS
            .iter()
            .find(|k| k.precheck(&f).unwrap_or(false))
            .map(|k| k.name())
    }

    #[test]
    fn kinds() {
        assert_eq!(claimed_by("anon_inode:[eventfd]"), Some("eventfd"));
        assert_eq!(claimed_by("anon_inode:[eventpoll]"), Some("epoll"));
        assert_eq!(claimed_by("anon_inode:inotify"), Some("inotify"));
        assert_eq!(claimed_by("/memfd:x (deleted)"), Some("memfd"));
        assert_eq!(claimed_by("anon_inode:[io_uring]"), None);
    }
}
