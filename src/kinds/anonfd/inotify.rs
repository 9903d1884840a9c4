//! inotify: the watches (wd, mask, and the watched file's path, found
//! from the file handle fdinfo gives). Restore adds them again in wd
//! order, and refuses when a watch comes back with another wd. A watch
//! on a removed file (kept by the kernel while the file is open; its
//! handle resolves to no name) is refused at dump.

use std::path::Path;

use super::{bad, nonblock};
use crate::error::{Error, Result};
use crate::image::proto::{file_desc, Inotify as InotifyImg, InotifyWatch};
use crate::image::validate::{bad as invalid, check_path, count, MAX_ITEMS};
use crate::kinds::fd::{not_mine, DumpCx, FdKind, FdRef, RestoreCx};
use crate::remote::Calls;

const TARGET: &str = "anon_inode:inotify";

pub struct Inotify;

impl FdKind for Inotify {
    fn name(&self) -> &'static str {
        "inotify"
    }

    fn precheck(&self, f: &FdRef) -> Result<bool> {
        Ok(f.target == TARGET)
    }

    fn describe(&self, f: &FdRef, _cx: &mut DumpCx) -> Result<Option<file_desc::Kind>> {
        if f.target != TARGET {
            return Ok(None);
        }
        let mut n = InotifyImg::new();
        n.flags = f.flags();
        for (k, v) in &f.info()?.extra {
            if k == "inotify" {
                n.watches.push(inotify_watch(f.pid, f.fd, v)?);
            }
        }
        Ok(Some(file_desc::Kind::Inotify(n)))
    }

    fn validate(&self, k: &file_desc::Kind, path: &Path, obj: &str) -> Result<()> {
        let file_desc::Kind::Inotify(n) = k else {
            return Err(not_mine(self));
        };
        count(path, obj, "watches", n.watches.len(), MAX_ITEMS)?;
        for w in &n.watches {
            check_path(path, obj, "watches.path", &w.path, false)?;
            if w.wd <= 0 {
                return Err(invalid(path, obj, "watches.wd", w.wd));
            }
        }
        Ok(())
    }

    fn open(&self, k: &file_desc::Kind, calls: &mut dyn Calls, _cx: &mut RestoreCx) -> Result<u64> {
        let file_desc::Kind::Inotify(n) = k else {
            return Err(not_mine(self));
        };
        let pid = calls.pid();
        let fd = calls.inotify_init1(libc::IN_CLOEXEC | nonblock(n.flags))?;
        let mut watches: Vec<&InotifyWatch> = n.watches.iter().collect();
        watches.sort_by_key(|w| w.wd);
        for w in watches {
            let got = calls.inotify_add_watch(fd, &w.path, w.mask)?;
            if got as i64 != w.wd as i64 {
                return Err(Error::Restore(format!(
                    "pid {pid}: inotify watch on {} came back as wd {got}, not {} (gaps in watch numbers are not supported)",
                    w.path, w.wd
                )));
            }
        }
        Ok(fd)
    }
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
    if let Some(removed) = path.strip_suffix(" (deleted)") {
        return Err(Error::unsupported(
            pid,
            format!(
                "fd {fd}: inotify watch {wd} is on {removed} (inode {ino}), which was removed \
                 (the watch lives while the file is open): cairn adds watches by path and \
                 cannot restore it"
            ),
        ));
    }
    let mut w = InotifyWatch::new();
    w.wd = wd;
    w.mask = mask as u32;
    w.path = path;
    w.ino = ino;
    Ok(w)
}

/// The path of the file a handle names, on the mount of device `sdev`
/// (kernel encoding: major << 20 | minor).
pub(super) fn path_of_handle(sdev: u64, htype: i32, handle: &[u8]) -> std::io::Result<String> {
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
