//! Descriptors that are not files on disk: eventfd, signalfd, timerfd,
//! epoll, inotify and memfd. Dump reads their state from /proc/PID/fdinfo (and a
//! memfd's bytes through /proc/PID/fd); restore recreates each with an
//! injected syscall in the vessel. Epoll watch lists are filled in after
//! every fd of the process is in place, since they name other fds.

use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};

use crate::error::{Error, IoContext, Result};
use crate::image::proto::{
    file_desc, EpollTarget, EventFd, EventPoll, FdTable, Inotify, InotifyWatch, MemFd, SignalFd,
    TimerFd,
};
use crate::kinds::files::FilesIndex;
use crate::procfs::FdInfo;
use crate::remote::Agent;
use crate::remote::Calls;

/// Largest memfd whose contents cairn saves.
const MAX_MEMFD: u64 = 1 << 30;

fn extra<'a>(info: &'a FdInfo, key: &str) -> Option<&'a str> {
    info.extra
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn bad(pid: i32, fd: i32, what: &str) -> Error {
    Error::parse(
        format!("/proc/{pid}/fdinfo/{fd}"),
        format!("no usable {what}"),
    )
}

/// "(sec, nsec)" -> ns.
fn parse_pair_ns(v: &str) -> Option<u64> {
    let v = v.trim().strip_prefix('(')?.strip_suffix(')')?;
    let (s, n) = v.split_once(',')?;
    let s: u64 = s.trim().parse().ok()?;
    let n: u64 = n.trim().parse().ok()?;
    s.checked_mul(1_000_000_000)?.checked_add(n)
}

/// Is this fd link target one of the kinds handled here?
pub fn handles(target: &str) -> bool {
    matches!(
        target,
        "anon_inode:[eventfd]"
            | "anon_inode:[signalfd]"
            | "anon_inode:[timerfd]"
            | "anon_inode:[eventpoll]"
            | "anon_inode:inotify"
    ) || (target.starts_with("/memfd:") && target.ends_with(" (deleted)"))
}

/// Describes fd `fd` of `pid` (frozen) if it is one of our kinds.
pub fn describe(pid: i32, fd: i32, target: &str, info: &FdInfo) -> Result<Option<file_desc::Kind>> {
    let flags = info.flags & !(libc::O_CLOEXEC as u32);
    let kind = match target {
        "anon_inode:[eventfd]" => {
            let count = extra(info, "eventfd-count")
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .ok_or_else(|| bad(pid, fd, "eventfd-count"))?;
            let mut e = EventFd::new();
            e.count = count;
            e.semaphore = extra(info, "eventfd-semaphore").is_some_and(|v| v.trim() == "1");
            e.flags = flags;
            file_desc::Kind::Eventfd(e)
        }
        "anon_inode:[signalfd]" => {
            let mask = extra(info, "sigmask")
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .ok_or_else(|| bad(pid, fd, "sigmask"))?;
            let mut s = SignalFd::new();
            s.sigmask = mask;
            s.flags = flags;
            file_desc::Kind::Signalfd(s)
        }
        "anon_inode:[timerfd]" => {
            let mut t = TimerFd::new();
            t.clockid = extra(info, "clockid")
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| bad(pid, fd, "clockid"))?;
            t.ticks = extra(info, "ticks")
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| bad(pid, fd, "ticks"))?;
            t.value_ns = extra(info, "it_value")
                .and_then(parse_pair_ns)
                .ok_or_else(|| bad(pid, fd, "it_value"))?;
            t.interval_ns = extra(info, "it_interval")
                .and_then(parse_pair_ns)
                .ok_or_else(|| bad(pid, fd, "it_interval"))?;
            t.flags = flags;
            file_desc::Kind::Timerfd(t)
        }
        "anon_inode:[eventpoll]" => {
            let mut e = EventPoll::new();
            e.flags = flags;
            for (k, v) in &info.extra {
                if k != "tfd" {
                    continue;
                }
                // "tfd:        5 events:       19 data: 0000000000000005  pos:0 ino:61af sdev:d"
                let f: Vec<&str> = v.split_whitespace().collect();
                let field = |name: &str| {
                    f.iter()
                        .position(|x| *x == name)
                        .and_then(|i| f.get(i + 1))
                        .copied()
                };
                let mut t = EpollTarget::new();
                t.fd = f
                    .first()
                    .and_then(|x| x.parse().ok())
                    .ok_or_else(|| bad(pid, fd, "tfd"))?;
                t.events = field("events:")
                    .and_then(|x| u32::from_str_radix(x, 16).ok())
                    .ok_or_else(|| bad(pid, fd, "events"))?;
                t.data = field("data:")
                    .and_then(|x| u64::from_str_radix(x, 16).ok())
                    .ok_or_else(|| bad(pid, fd, "data"))?;
                t.ino = f
                    .iter()
                    .find_map(|x| x.strip_prefix("ino:"))
                    .and_then(|x| u64::from_str_radix(x, 16).ok())
                    .unwrap_or(0);
                e.targets.push(t);
            }
            file_desc::Kind::Epoll(e)
        }
        "anon_inode:inotify" => {
            let mut n = Inotify::new();
            n.flags = flags;
            for (k, v) in &info.extra {
                if k == "inotify" {
                    n.watches.push(inotify_watch(pid, fd, v)?);
                }
            }
            file_desc::Kind::Inotify(n)
        }
        t if t.starts_with("/memfd:") && t.ends_with(" (deleted)") => {
            let link = format!("/proc/{pid}/fd/{fd}");
            let f = std::fs::File::open(&link).at(&link)?;
            let md = f.metadata().at(&link)?;
            if md.len() > MAX_MEMFD {
                return Err(Error::unsupported(
                    pid,
                    format!(
                        "fd {fd}: memfd of {} bytes is larger than cairn saves",
                        md.len()
                    ),
                ));
            }
            let seals = crate::sys::task::get_seals(&f)
                .map_err(|e| Error::sys(pid, format!("fd {fd}: F_GET_SEALS"), e))?;
            let mut contents = Vec::with_capacity(md.len() as usize);
            (&f).take(MAX_MEMFD).read_to_end(&mut contents).at(&link)?;
            let mut m = MemFd::new();
            m.name = t["/memfd:".len()..t.len() - " (deleted)".len()].to_string();
            m.flags = flags;
            m.pos = info.pos;
            m.size = md.len();
            m.seals = seals;
            m.mode = md.mode();
            m.contents = contents;
            file_desc::Kind::Memfd(m)
        }
        _ => return Ok(None),
    };
    Ok(Some(kind))
}

/// Creates the object of description `d` in the vessel; returns its fd
/// (close-on-exec; the caller moves it to its numbers). None if the kind
/// is not one of ours.
pub fn create(agent: &mut Agent, d: &file_desc::Kind) -> Result<Option<u64>> {
    let pid = agent.pid;
    let nonblock = |flags: u32| (flags & libc::O_NONBLOCK as u32) as u64;
    let fd = match d {
        file_desc::Kind::Eventfd(e) => {
            let mut fl = libc::EFD_CLOEXEC as u64 | nonblock(e.flags);
            if e.semaphore {
                fl |= libc::EFD_SEMAPHORE as u64;
            }
            let fd = agent.call("eventfd2", libc::SYS_eventfd2, &[0, fl])?;
            if e.count > 0 {
                // The counter can exceed eventfd2's 32-bit initial value:
                // add it with a write.
                let a = agent.put(0, &e.count.to_ne_bytes())?;
                agent.call("write eventfd", libc::SYS_write, &[fd, a, 8])?;
            }
            fd
        }
        file_desc::Kind::Signalfd(s) => {
            let a = agent.put(0, &s.sigmask.to_ne_bytes())?;
            let fl = libc::SFD_CLOEXEC as u64 | nonblock(s.flags);
            agent.call("signalfd4", libc::SYS_signalfd4, &[u64::MAX, a, 8, fl])?
        }
        file_desc::Kind::Timerfd(t) => {
            let fl = libc::TFD_CLOEXEC as u64 | nonblock(t.flags);
            let fd = agent.call(
                "timerfd_create",
                libc::SYS_timerfd_create,
                &[t.clockid as u64, fl],
            )?;
            if t.value_ns > 0 || t.interval_ns > 0 {
                // Relative: fdinfo gives the time left, whatever the
                // original settime flags were. A timer that was due is
                // given 1 ns so that it fires at once.
                let v = t.value_ns.max(1);
                let mut b = Vec::with_capacity(32);
                for w in [
                    t.interval_ns / 1_000_000_000,
                    t.interval_ns % 1_000_000_000,
                    v / 1_000_000_000,
                    v % 1_000_000_000,
                ] {
                    b.extend_from_slice(&w.to_ne_bytes());
                }
                let a = agent.put(0, &b)?;
                agent.call("timerfd_settime", libc::SYS_timerfd_settime, &[fd, 0, a, 0])?;
            }
            if t.ticks > 0 {
                // Expirations not read yet (TFD_IOC_SET_TICKS).
                const TFD_IOC_SET_TICKS: u64 = 0x4008_5400;
                let a = agent.put(64, &t.ticks.to_ne_bytes())?;
                agent.call(
                    "ioctl(TFD_IOC_SET_TICKS)",
                    libc::SYS_ioctl,
                    &[fd, TFD_IOC_SET_TICKS, a],
                )?;
            }
            fd
        }
        file_desc::Kind::Epoll(e) => {
            let _ = e;
            agent.call(
                "epoll_create1",
                libc::SYS_epoll_create1,
                &[libc::EPOLL_CLOEXEC as u64],
            )?
        }
        file_desc::Kind::Inotify(n) => {
            let fl = libc::IN_CLOEXEC as u64 | nonblock(n.flags);
            let fd = agent.call("inotify_init1", libc::SYS_inotify_init1, &[fl])?;
            let mut watches: Vec<&InotifyWatch> = n.watches.iter().collect();
            watches.sort_by_key(|w| w.wd);
            for w in watches {
                let p = agent.put_cstr(0, &w.path)?;
                let got = agent.call(
                    &format!("inotify_add_watch({})", w.path),
                    libc::SYS_inotify_add_watch,
                    &[fd, p, w.mask as u64],
                )?;
                if got as i64 != w.wd as i64 {
                    return Err(Error::Restore(format!(
                        "pid {pid}: inotify watch on {} came back as wd {got}, not {} (gaps in watch numbers are not supported)",
                        w.path, w.wd
                    )));
                }
            }
            fd
        }
        file_desc::Kind::Memfd(m) => {
            let name = agent.put_cstr(0, &m.name)?;
            let mut fl = (libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) as u64;
            if m.seals & libc::F_SEAL_EXEC as u32 != 0 {
                fl |= 0x0008; // MFD_NOEXEC_SEAL
            }
            let fd = agent.call(
                &format!("memfd_create({})", m.name),
                libc::SYS_memfd_create,
                &[name, fl],
            )?;
            let link = format!("/proc/{pid}/fd/{fd}");
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&link)
                .at(&link)?;
            f.write_all_at(&m.contents, 0).at(&link)?;
            f.set_len(m.size).at(&link)?;
            drop(f);
            agent.call("fchmod", libc::SYS_fchmod, &[fd, (m.mode & 0o7777) as u64])?;
            if m.pos > 0 {
                agent.call(
                    "lseek",
                    libc::SYS_lseek,
                    &[fd, m.pos, libc::SEEK_SET as u64],
                )?;
            }
            let acc = m.flags as i32 & libc::O_ACCMODE;
            if acc != libc::O_RDWR {
                // memfd_create gives O_RDWR; reopen with the saved mode.
                let p = agent.put_cstr(0, &format!("/proc/self/fd/{fd}"))?;
                let open = (m.flags as i32 & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL))
                    | libc::O_CLOEXEC;
                let nfd = agent.call(
                    "reopen memfd",
                    libc::SYS_openat,
                    &[libc::AT_FDCWD as i64 as u64, p, open as u64, 0],
                )?;
                if m.pos > 0 {
                    agent.call(
                        "lseek",
                        libc::SYS_lseek,
                        &[nfd, m.pos, libc::SEEK_SET as u64],
                    )?;
                }
                if m.seals != 0 {
                    agent.call(
                        "fcntl(F_ADD_SEALS)",
                        libc::SYS_fcntl,
                        &[fd, libc::F_ADD_SEALS as u64, m.seals as u64],
                    )?;
                }
                agent.call("close", libc::SYS_close, &[fd])?;
                return Ok(Some(nfd));
            }
            if m.seals != 0 {
                agent.call(
                    "fcntl(F_ADD_SEALS)",
                    libc::SYS_fcntl,
                    &[fd, libc::F_ADD_SEALS as u64, m.seals as u64],
                )?;
            }
            if m.flags & libc::O_NONBLOCK as u32 != 0 {
                agent.call(
                    "fcntl(F_SETFL)",
                    libc::SYS_fcntl,
                    &[
                        fd,
                        libc::F_SETFL as u64,
                        m.flags as u64 & !(libc::O_ACCMODE as u64),
                    ],
                )?;
            }
            fd
        }
        _ => return Ok(None),
    };
    Ok(Some(fd))
}

/// Fills the watch lists of the epoll instances of `table`, once every fd
/// of the process is in place.
pub fn populate_epolls(agent: &mut Agent, table: &FdTable, idx: &FilesIndex) -> Result<()> {
    let pid = agent.pid;
    for f in &table.fds {
        let Some(d) = idx.get(f.desc_id) else {
            continue;
        };
        let Some(file_desc::Kind::Epoll(e)) = &d.kind else {
            continue;
        };
        for t in &e.targets {
            if !table.fds.iter().any(|x| x.fd == t.fd) {
                return Err(Error::Restore(format!(
                    "pid {pid}: epoll fd {} watches fd {}, which is no longer open: not supported",
                    f.fd, t.fd
                )));
            }
            let mut b = Vec::with_capacity(12);
            b.extend_from_slice(&t.events.to_ne_bytes());
            b.extend_from_slice(&t.data.to_ne_bytes());
            let a = agent.put(0, &b)?;
            match agent.remote.syscall(
                libc::SYS_epoll_ctl,
                &[f.fd as u64, libc::EPOLL_CTL_ADD as u64, t.fd as u64, a],
            ) {
                Ok(_) => {}
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
    }
    Ok(())
}

/// One "inotify wd:1 ino:9981df sdev:fe00000 mask:300 ignored_mask:0
/// fhandle-bytes:8 fhandle-type:1 f_handle:df81..." line: the watch, with
/// the path of the watched file found from its handle.
fn inotify_watch(pid: i32, fd: i32, line: &str) -> Result<InotifyWatch> {
    let get = |key: &str| line.split_whitespace().find_map(|f| f.strip_prefix(key));
    let hex = |key: &str| get(key).and_then(|v| u64::from_str_radix(v, 16).ok());
    let (Some(wd), Some(ino), Some(sdev), Some(mask), Some(htype), Some(handle)) = (
        get("wd:").and_then(|v| v.parse::<i32>().ok()),
        hex("ino:"),
        hex("sdev:"),
        hex("mask:"),
        hex("fhandle-type:"),
        get("f_handle:"),
    ) else {
        return Err(bad(pid, fd, "inotify watch"));
    };
    let bytes: Option<Vec<u8>> = (0..handle.len() / 2)
        .map(|i| {
            handle
                .get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    let bytes = bytes.ok_or_else(|| bad(pid, fd, "inotify f_handle"))?;
    let path = path_of_handle(sdev, htype as i32, &bytes).map_err(|e| {
        Error::unsupported(
            pid,
            format!("fd {fd}: inotify watch {wd} (inode {ino}): cannot find the watched file: {e}"),
        )
    })?;
    let mut w = InotifyWatch::new();
    w.wd = wd;
    w.mask = mask as u32;
    w.path = path;
    w.ino = ino;
    Ok(w)
}

/// The path of the file a handle names, on the mount of device `sdev`
/// (kernel encoding: major << 20 | minor).
fn path_of_handle(sdev: u64, htype: i32, handle: &[u8]) -> std::io::Result<String> {
    let dev = format!("{}:{}", sdev >> 20, sdev & 0xfffff);
    let mi = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mount = mi
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&dev.as_str()))
                .then(|| f.get(4).map(|s| s.to_string()))
                .flatten()
        })
        .next()
        .ok_or_else(|| std::io::Error::other(format!("no mount of device {dev}")))?;
    let m = std::fs::File::open(&mount)?;
    let f = crate::sys::task::open_by_handle(&m, htype, handle)?;
    use std::os::fd::AsRawFd;
    let p = std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd()))?;
    Ok(p.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs() {
        assert_eq!(parse_pair_ns("(1, 500)"), Some(1_000_000_500));
        assert_eq!(parse_pair_ns("(0, 0)"), Some(0));
        assert_eq!(parse_pair_ns("1, 2"), None);
    }

    #[test]
    fn kinds() {
        assert!(handles("anon_inode:[eventfd]"));
        assert!(handles("/memfd:x (deleted)"));
        assert!(!handles("anon_inode:[io_uring]"));
        assert!(!handles("/tmp/x"));
    }
}
