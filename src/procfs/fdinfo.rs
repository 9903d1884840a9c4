//! /proc/PID/fdinfo/FD and the /proc/PID/fd directory.

use super::misc::{list_numeric_dir, proc_path, read_link, read_proc_string};
use super::{at_path, excerpt, parse_oct_u32, parse_u32, parse_u64};
use crate::error::{Error, Result};
use std::path::PathBuf;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FdInfo {
    /// File position.
    pub pos: u64,
    /// Open flags (O_*), octal in the file.
    pub flags: u32,
    /// Mount id (matches /proc/PID/mountinfo).
    pub mnt_id: u32,
    /// Inode number; 0 if the kernel did not report it.
    pub ino: u64,
    /// Every other line, as (key, trimmed value), in file order. The key is
    /// the text before the first ':' ("eventfd-count", "tfd", "sigmask",
    /// "settime flags", "lock"), except for the "inotify ..." and
    /// "fanotify ..." lines whose key is that first word and whose value is
    /// the rest of the line ("wd:1 ino:2a sdev:800001 ..."). A line without
    /// ':' becomes (trimmed line, "").
    pub extra: Vec<(String, String)>,
}

/// Parses an fdinfo file. "pos", "flags" and "mnt_id" are required, "ino"
/// is optional; a bad value for any of them is an error.
pub fn parse_fdinfo(text: &str) -> Result<FdInfo> {
    let mut fi = FdInfo::default();
    let (mut have_pos, mut have_flags, mut have_mnt) = (false, false, false);
    for (i, line) in text.split('\n').enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = || {
            Error::parse(
                "fdinfo",
                format!("line {}: bad value: {}", i + 1, excerpt(line)),
            )
        };
        let (key, value) = match line.split_once(':') {
            Some((k, _)) if k.starts_with("inotify ") || k.starts_with("fanotify ") => {
                let (w, rest) = line.split_once(' ').unwrap_or((line, ""));
                (w, rest.trim())
            }
            Some((k, v)) => (k.trim(), v.trim()),
            None => (line, ""),
        };
        match key {
            "pos" => {
                fi.pos = parse_u64(value).ok_or_else(bad)?;
                have_pos = true;
            }
            "flags" => {
                fi.flags = parse_oct_u32(value).ok_or_else(bad)?;
                have_flags = true;
            }
            "mnt_id" => {
                fi.mnt_id = parse_u32(value).ok_or_else(bad)?;
                have_mnt = true;
            }
            "ino" => fi.ino = parse_u64(value).ok_or_else(bad)?,
            _ => fi.extra.push((key.to_string(), value.to_string())),
        }
    }
    for (have, key) in [
        (have_pos, "pos"),
        (have_flags, "flags"),
        (have_mnt, "mnt_id"),
    ] {
        if !have {
            return Err(Error::parse("fdinfo", format!("missing {key}")));
        }
    }
    Ok(fi)
}

/// Reads /proc/PID/fdinfo/FD.
pub fn read_fdinfo(pid: i32, fd: i32) -> Result<FdInfo> {
    let path = proc_path(pid, &format!("fdinfo/{fd}"));
    let text = read_proc_string(&path)?;
    parse_fdinfo(&text).map_err(|e| at_path(e, &path))
}

/// List open fds of a process: sorted fd numbers with the readlink target
/// of /proc/PID/fd/N ("/path", "pipe:\[123\]", "socket:\[45\]",
/// "anon_inode:\[eventfd\]", "/dev/null", "/path (deleted)").
///
/// An fd that disappears between listing and readlink is skipped (this
/// includes the directory fd used for the listing when pid is the caller).
pub fn read_fds(pid: i32) -> Result<Vec<(i32, String)>> {
    let dir = proc_path(pid, "fd");
    let fds = list_numeric_dir(&dir)?;
    let mut out = Vec::with_capacity(fds.len());
    for fd in fds {
        let link: PathBuf = dir.join(fd.to_string());
        match read_link(&link) {
            Ok(t) => out.push((fd, t)),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Parse a link target such as "pipe:\[123\]" -> Some(("pipe", 123)),
/// "socket:\[45\]" -> Some(("socket",45)), "net:\[4026531840\]" ->
/// Some(("net", 4026531840)); paths and non-numeric targets such as
/// "anon_inode:\[eventfd\]" -> None.
pub fn parse_anon_link(target: &str) -> Option<(&str, u64)> {
    if target.starts_with('/') {
        return None;
    }
    let (kind, rest) = target.split_once(":[")?;
    let num = rest.strip_suffix(']')?;
    if kind.is_empty() || kind.contains(['/', ' ', '[', ']']) {
        return None;
    }
    Some((kind, parse_u64(num)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn regular_file() {
        let f = parse_fdinfo("pos:\t0\nflags:\t0100002\nmnt_id:\t25\nino:\t1234\n").unwrap();
        assert_eq!(
            f,
            FdInfo {
                pos: 0,
                flags: 0o100002,
                mnt_id: 25,
                ino: 1234,
                extra: vec![]
            }
        );
        // Without ino (older kernels) and with huge values.
        let f =
            parse_fdinfo("pos:\t18446744073709551615\nflags:\t037777777777\nmnt_id:\t4294967295\n")
                .unwrap();
        assert_eq!(f.pos, u64::MAX);
        assert_eq!(f.flags, u32::MAX);
        assert_eq!(f.mnt_id, u32::MAX);
        assert_eq!(f.ino, 0);
    }

    #[test]
    fn eventfd_and_timerfd() {
        let f = parse_fdinfo(
            "pos:\t0\nflags:\t02004002\nmnt_id:\t16\nino:\t2061\n\
             eventfd-count:                0\neventfd-id: 3\neventfd-semaphore: 1\n",
        )
        .unwrap();
        assert_eq!(f.flags, 0o2004002);
        assert_eq!(
            f.extra,
            [
                kv("eventfd-count", "0"),
                kv("eventfd-id", "3"),
                kv("eventfd-semaphore", "1")
            ]
        );
        let f = parse_fdinfo(
            "pos:\t0\nflags:\t02\nmnt_id:\t16\nino:\t2061\nclockid: 1\nticks: 0\n\
             settime flags: 01\nit_value: (0, 998318272)\nit_interval: (1, 0)\n",
        )
        .unwrap();
        assert_eq!(
            f.extra,
            [
                kv("clockid", "1"),
                kv("ticks", "0"),
                kv("settime flags", "01"),
                kv("it_value", "(0, 998318272)"),
                kv("it_interval", "(1, 0)")
            ]
        );
    }

    #[test]
    fn epoll_inotify_fanotify_signalfd() {
        let f = parse_fdinfo(
            "pos:\t0\nflags:\t02\nmnt_id:\t16\nino:\t2061\n\
             tfd:        5 events:       19 data:                5  pos:0 ino:7b sdev:d\n\
             tfd:        7 events:       19 data:                7  pos:0 ino:7c sdev:d\n",
        )
        .unwrap();
        assert_eq!(f.pos, 0);
        assert_eq!(
            f.extra[0],
            kv(
                "tfd",
                "5 events:       19 data:                5  pos:0 ino:7b sdev:d"
            )
        );
        assert_eq!(f.extra.len(), 2);

        let f = parse_fdinfo(
            "pos:\t0\nflags:\t00\nmnt_id:\t16\nino:\t2061\n\
             inotify wd:1 ino:2a sdev:800001 mask:fff ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:2a00000000000000\n\
             fanotify flags:10 event-flags:0\n\
             fanotify mnt_id:1d mflags:0 mask:3b ignored_mask:0\n\
             sigmask:\t0000000000000202\n",
        )
        .unwrap();
        assert_eq!(f.extra[0].0, "inotify");
        assert!(f.extra[0].1.starts_with("wd:1 ino:2a sdev:800001"));
        assert_eq!(f.extra[1], kv("fanotify", "flags:10 event-flags:0"));
        assert_eq!(
            f.extra[2],
            kv("fanotify", "mnt_id:1d mflags:0 mask:3b ignored_mask:0")
        );
        assert_eq!(f.extra[3], kv("sigmask", "0000000000000202"));
        assert_eq!(f.ino, 2061);
    }

    #[test]
    fn odd_lines() {
        let f = parse_fdinfo(
            "pos:\t0\nflags:\t00\nmnt_id:\t16\n\
             lock:\t1: FLOCK  ADVISORY  WRITE 1234 08:02:5 0 EOF\nno colon\n\n",
        )
        .unwrap();
        assert_eq!(
            f.extra,
            [
                kv("lock", "1: FLOCK  ADVISORY  WRITE 1234 08:02:5 0 EOF"),
                kv("no colon", "")
            ]
        );
    }

    #[test]
    fn malformed() {
        let bad = [
            "",
            "pos:\t0\nflags:\t0\n",
            "pos:\t0\nmnt_id:\t1\n",
            "flags:\t0\nmnt_id:\t1\n",
            "pos:\t-1\nflags:\t0\nmnt_id:\t1\n",
            "pos:\t0\nflags:\t0800\nmnt_id:\t1\n",
            "pos:\t0\nflags:\t040000000000\nmnt_id:\t1\n",
            "pos:\t0\nflags:\t0\nmnt_id:\t4294967296\n",
            "pos:\t0\nflags:\t0\nmnt_id:\t1\nino:\tx\n",
            "pos:\t18446744073709551616\nflags:\t0\nmnt_id:\t1\n",
            "pos:\nflags:\t0\nmnt_id:\t1\n",
        ];
        for b in bad {
            assert!(matches!(parse_fdinfo(b), Err(Error::Parse { .. })), "{b:?}");
        }
    }

    #[test]
    fn never_panics_on_prefixes() {
        let t = "pos:\t0\nflags:\t02\nmnt_id:\t16\ninotify wd:1 é\nfanotify \nx:[1]\n";
        for (i, _) in t.char_indices() {
            let _ = parse_fdinfo(&t[..i]);
        }
    }

    #[test]
    fn anon_links() {
        assert_eq!(parse_anon_link("pipe:[123]"), Some(("pipe", 123)));
        assert_eq!(parse_anon_link("socket:[45]"), Some(("socket", 45)));
        assert_eq!(
            parse_anon_link("net:[4026531840]"),
            Some(("net", 4026531840))
        );
        assert_eq!(
            parse_anon_link("pipe:[18446744073709551615]"),
            Some(("pipe", u64::MAX))
        );
        assert_eq!(parse_anon_link("anon_inode:[eventfd]"), None);
        assert_eq!(parse_anon_link("anon_inode:inotify"), None);
        assert_eq!(parse_anon_link("/tmp/pipe:[123]"), None);
        assert_eq!(parse_anon_link("/dev/null"), None);
        assert_eq!(parse_anon_link("/path (deleted)"), None);
        assert_eq!(parse_anon_link(""), None);
        assert_eq!(parse_anon_link(":[1]"), None);
        assert_eq!(parse_anon_link("pipe:[]"), None);
        assert_eq!(parse_anon_link("pipe:[1"), None);
        assert_eq!(parse_anon_link("pipe:[1] "), None);
        assert_eq!(parse_anon_link("pipe:[-1]"), None);
        assert_eq!(parse_anon_link("pipe:[18446744073709551616]"), None);
        assert_eq!(parse_anon_link("a b:[1]"), None);
    }

    #[test]
    fn live_self() {
        use std::os::fd::AsRawFd;
        let pid = std::process::id() as i32;
        let (r, w) = nix::unistd::pipe().unwrap();
        let fds = read_fds(pid).unwrap();
        let nums: Vec<i32> = fds.iter().map(|(n, _)| *n).collect();
        for n in [0, 1, 2, r.as_raw_fd(), w.as_raw_fd()] {
            assert!(nums.contains(&n), "{n} not in {fds:?}");
        }
        assert!(nums.windows(2).all(|p| p[0] < p[1]));
        let target = &fds.iter().find(|(n, _)| *n == r.as_raw_fd()).unwrap().1;
        let (kind, ino) = parse_anon_link(target).unwrap();
        assert_eq!(kind, "pipe");
        let info = read_fdinfo(pid, r.as_raw_fd()).unwrap();
        assert_eq!(info.ino, ino);
        assert_eq!(info.flags & libc::O_ACCMODE as u32, libc::O_RDONLY as u32);
        let info = read_fdinfo(pid, w.as_raw_fd()).unwrap();
        assert_eq!(info.flags & libc::O_ACCMODE as u32, libc::O_WRONLY as u32);
        assert!(read_fdinfo(pid, -1).is_err());
    }
}
