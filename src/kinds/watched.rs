//! Who would see the dump open a file: the inotify and fanotify marks of
//! every process, as the fdinfo of their notification descriptors shows
//! them. A dump reads a held file's contents through the tree's own
//! description when it is readable (`kinds::contents`, `sys::mapread`: no
//! open, no event); a write-only one can only be read through a new open
//! (of /proc/PID/fd/N: the kernel makes a new open file and raises
//! IN_OPEN/FAN_OPEN, then IN_ACCESS and IN_CLOSE_NOWRITE), which every
//! watcher of the file, of its directory, of its mount or file system
//! sees. After a `--leave-running` dump the original would find those
//! events in its queue (or a watcher outside would): such a dump is
//! refused when a mark covers the file.

use std::path::Path;

/// Events an open and read of a file raise: IN_ACCESS/FAN_ACCESS,
/// IN_CLOSE_NOWRITE, IN_OPEN, FAN_OPEN_PERM, FAN_ACCESS_PERM,
/// FAN_PRE_ACCESS.
const OPEN_EVENTS: u64 = 0x1 | 0x10 | 0x20 | 0x10000 | 0x20000 | 0x100000;

/// A file a dump would open: its device (st_dev), inode, the device and
/// inode of its directory when it has one, and its mount id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub dev: u64,
    pub ino: u64,
    pub dir: Option<(u64, u64)>,
    pub mnt_id: Option<u64>,
}

impl Target {
    /// The file open as fd `fd` of `pid` (at `path`, deleted or not).
    pub fn of(pid: i32, fd: i32, path: &str, dev: u64, ino: u64) -> Target {
        let dir = Path::new(path)
            .parent()
            .and_then(|d| std::fs::metadata(d).ok())
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                (m.dev(), m.ino())
            });
        let mnt_id = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("mnt_id:"))
                    .and_then(|v| v.trim().parse().ok())
            });
        Target {
            dev,
            ino,
            dir,
            mnt_id,
        }
    }
}

/// A value `key` (hex) of a mark line.
fn hex(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(key))
        .and_then(|v| u64::from_str_radix(v, 16).ok())
}

/// The kernel's device number of a mark line (`sdev:`, MKDEV: major in
/// the bits above 20) as st_dev.
fn st_dev(sdev: u64) -> u64 {
    libc::makedev((sdev >> 20) as u32, (sdev & 0xfffff) as u32)
}

/// What the mark of fdinfo line `line` watches of `t` so that opening it
/// raises an event, if anything: "the file", "its directory", "its
/// mount", "its file system".
pub fn covers(line: &str, t: &Target) -> Option<&'static str> {
    let line = line.trim();
    let fan = line.starts_with("fanotify ");
    if !fan && !line.starts_with("inotify ") {
        return None;
    }
    if hex(line, "mask:").unwrap_or(0) & OPEN_EVENTS == 0 {
        return None;
    }
    let dev = hex(line, "sdev:").map(st_dev);
    if let (Some(ino), Some(dev)) = (hex(line, "ino:"), dev) {
        if (dev, ino) == (t.dev, t.ino) {
            return Some("the file");
        }
        return (Some((dev, ino)) == t.dir).then_some("its directory");
    }
    if !fan {
        return None;
    }
    if let Some(m) = hex(line, "mnt_id:") {
        return (Some(m) == t.mnt_id).then_some("its mount");
    }
    (dev == Some(t.dev)).then_some("its file system")
}

/// The first inotify or fanotify descriptor of any process with a mark
/// that covers `t`: "pid P fd N (inotify, a watch on the file)".
pub fn watcher(t: &Target) -> Option<String> {
    let procs = std::fs::read_dir("/proc").ok()?;
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(fds) = crate::procfs::read_fds(pid) else {
            continue;
        };
        for (fd, link) in fds {
            let kind = match link.as_str() {
                "anon_inode:inotify" => "inotify",
                "anon_inode:[fanotify]" => "fanotify",
                _ => continue,
            };
            let Ok(info) = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")) else {
                continue;
            };
            if let Some(what) = info.lines().find_map(|l| covers(l, t)) {
                return Some(format!("pid {pid} fd {fd} ({kind}, a mark on {what})"));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_that_cover_a_file() {
        let t = Target {
            dev: libc::makedev(0xfe, 0),
            ino: 0x9981df,
            dir: Some((libc::makedev(0xfe, 0), 0x10)),
            mnt_id: Some(0x1d),
        };
        let ino = "inotify wd:1 ino:9981df sdev:fe00000 mask:20 ignored_mask:0 fhandle-bytes:8";
        assert_eq!(covers(ino, &t), Some("the file"));
        // IN_MODIFY only: an open raises nothing it wants.
        let modify = "inotify wd:1 ino:9981df sdev:fe00000 mask:2 ignored_mask:0";
        assert_eq!(covers(modify, &t), None);
        let dir = "inotify wd:2 ino:10 sdev:fe00000 mask:fff ignored_mask:0";
        assert_eq!(covers(dir, &t), Some("its directory"));
        let other_dev = "inotify wd:2 ino:9981df sdev:fe00001 mask:fff ignored_mask:0";
        assert_eq!(covers(other_dev, &t), None);
        let fan_mnt = "fanotify mnt_id:1d mflags:0 mask:20 ignored_mask:0";
        assert_eq!(covers(fan_mnt, &t), Some("its mount"));
        let fan_sb = "fanotify sdev:fe00000 mflags:0 mask:1 ignored_mask:0";
        assert_eq!(covers(fan_sb, &t), Some("its file system"));
        let fan_ino = "fanotify ino:9981df sdev:fe00000 mflags:0 mask:10000 ignored_mask:0";
        assert_eq!(covers(fan_ino, &t), Some("the file"));
        assert_eq!(covers("fanotify flags:10 event-flags:0", &t), None);
        assert_eq!(covers("pos:\t0", &t), None);
    }
}
