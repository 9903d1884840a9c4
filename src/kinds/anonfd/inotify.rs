//! inotify: the watches (wd, mask, and the watched file's path, found
//! from the file handle fdinfo gives). Restore adds them again in wd
//! order, and refuses when a watch comes back with another wd.
//!
//! A watch on a removed file (kept by the kernel while the file is open)
//! is restored as CRIU does, on the file's ghost: the file must be one of
//! the tree's deleted open files (same device and inode; else the dump
//! refuses), which the restore recreates under a name until every fd
//! table is in place. The watch is added there in its wd order with a
//! placeholder mask (IN_DELETE_SELF, which cannot fire while the file is
//! open), so that cairn's own opens and the unlink of the ghost
//! (IN_ATTRIB) queue nothing; once the ghost is unlinked,
//! [`finish_removed`] gives the watch its mask through
//! `/proc/PID/fd/N` of a restored fd holding the file (same wd).

use std::path::Path;

use super::{bad, nonblock};
use crate::error::{Error, Result};
use crate::image::proto::{file_desc, Inotify as InotifyImg, InotifyWatch};
use crate::image::proto::{FdTable, Files};
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
        if f.target != TARGET {
            return Ok(false);
        }
        // Only a refusal stops the precheck; an fd that cannot be read
        // here (closed meanwhile) is left to `describe`, which checks again.
        match refuse_queued(f) {
            Err(e @ Error::Unsupported { .. }) => Err(e),
            _ => Ok(true),
        }
    }

    fn describe(&self, f: &FdRef, _cx: &mut DumpCx) -> Result<Option<file_desc::Kind>> {
        if f.target != TARGET {
            return Ok(None);
        }
        // Again once the tree is frozen: an event may have come since.
        refuse_queued(f)?;
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

    fn open(&self, k: &file_desc::Kind, calls: &mut dyn Calls, cx: &mut RestoreCx) -> Result<u64> {
        let file_desc::Kind::Inotify(n) = k else {
            return Err(not_mine(self));
        };
        let pid = calls.pid();
        let fd = calls.inotify_init1(libc::IN_CLOEXEC | nonblock(n.flags))?;
        let mut watches: Vec<&InotifyWatch> = n.watches.iter().collect();
        watches.sort_by_key(|w| w.wd);
        for w in watches {
            let got = if w.removed {
                let ghost = ghost_of(cx.idx.files, &cx.idx.redirect, w).ok_or_else(|| {
                    Error::Restore(format!(
                        "pid {pid}: inotify watch {} is on the removed file {}, which no \
                         restored fd holds",
                        w.wd, w.path
                    ))
                })?;
                calls.inotify_add_watch(fd, &ghost.1, libc::IN_DELETE_SELF)?
            } else {
                calls.inotify_add_watch(fd, &w.path, w.mask)?
            };
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
/// Events waiting to be read cannot be queued into an inotify instance
/// again (only the kernel queues them): refused, with their size (FIONREAD
/// on a copy of the descriptor, which reads nothing).
fn refuse_queued(f: &FdRef) -> Result<()> {
    let copy = crate::sys::sock::pidfd_getfd(f.pid, f.fd)
        .map_err(|e| Error::sys(f.pid, format!("pidfd_getfd fd {}", f.fd), e))?;
    let n = crate::sys::sock::inq(&copy)
        .map_err(|e| Error::sys(f.pid, format!("fd {}: FIONREAD", f.fd), e))?;
    if n > 0 {
        return Err(Error::unsupported(
            f.pid,
            format!(
                "fd {} (inotify) has {n} bytes of queued events, which cannot be queued into \
                 an inotify instance again (read them before the checkpoint)",
                f.fd
            ),
        ));
    }
    Ok(())
}

fn inotify_watch(pid: i32, fd: i32, line: &str) -> Result<InotifyWatch> {
    let get = |key: &str| line.split_whitespace().find_map(|f| f.strip_prefix(key));
    let hex = |key: &str| get(key).and_then(|v| u64::from_str_radix(v, 16).ok());
    // The kernel prints every number of the line in hex, wd too.
    let (Some(wd), Some(ino), Some(sdev), Some(mask), Some(htype), Some(handle)) = (
        get("wd:").and_then(|v| i32::from_str_radix(v, 16).ok()),
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
    w.ino = ino;
    w.dev = libc::makedev((sdev >> 20) as u32, (sdev & 0xfffff) as u32);
    match path.strip_suffix(" (deleted)") {
        Some(removed) => {
            w.removed = true;
            w.path = removed.to_string();
        }
        None => w.path = path,
    }
    Ok(w)
}

/// The descriptions of the deleted file a watch on a removed file is on
/// (same device and inode): their ids.
fn ghost_ids<'a>(files: &'a Files, w: &'a InotifyWatch) -> impl Iterator<Item = u32> + 'a {
    files.descs.iter().filter_map(move |d| match &d.kind {
        Some(file_desc::Kind::Reg(r))
            if r.deleted
                && r.stat
                    .as_ref()
                    .is_some_and(|s| s.dev == w.dev && s.ino == w.ino) =>
        {
            Some(d.id)
        }
        _ => None,
    })
}

/// The path the removed file a watch is on is opened from at restore
/// (its recreated ghost, from `redirect`).
fn ghost_of(
    files: &Files,
    redirect: &std::collections::HashMap<u32, String>,
    w: &InotifyWatch,
) -> Option<(u32, String)> {
    ghost_ids(files, w).find_map(|id| redirect.get(&id).map(|p| (id, p.clone())))
}

/// Before a dump touches the tree `pids` (nothing opened, so no watcher
/// sees an event): a watch on a removed file that no fd of the tree holds
/// open (the file is only mapped, or open outside the tree) is refused,
/// as [`check_removed`] would once the tree is frozen.
pub fn precheck_tree(pids: &[i32]) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut open: std::collections::HashSet<(u64, u64)> = Default::default();
    let mut watches = Vec::new();
    for &pid in pids {
        let Ok(fds) = crate::procfs::read_fds(pid) else {
            continue;
        };
        for (fd, target) in fds {
            if target == TARGET {
                if let Ok(info) = crate::procfs::read_fdinfo(pid, fd) {
                    watches.push((pid, fd, info));
                }
            } else if target.starts_with('/') {
                if let Ok(md) = std::fs::metadata(format!("/proc/{pid}/fd/{fd}")) {
                    open.insert((md.dev(), md.ino()));
                }
            }
        }
    }
    for (pid, fd, info) in watches {
        for (k, v) in &info.extra {
            if k != "inotify" {
                continue;
            }
            // A watch that cannot be parsed or resolved is the frozen
            // pass's to refuse, with the reason.
            let Ok(w) = inotify_watch(pid, fd, v) else {
                continue;
            };
            if w.removed && !open.contains(&(w.dev, w.ino)) {
                return Err(not_held(pid, fd, &w));
            }
        }
    }
    Ok(())
}

fn not_held(pid: i32, fd: i32, w: &InotifyWatch) -> Error {
    Error::unsupported(
        pid,
        format!(
            "fd {fd}: inotify watch {} is on {} (inode {}), which was removed and which no fd \
             of the tree holds open: cairn recreates a removed file only from an open fd, and \
             cannot restore the watch",
            w.wd, w.path, w.ino
        ),
    )
}

/// Dump, once every fd table is read: a watch on a removed file is
/// restored on the file's ghost, so the file must be one of the deleted
/// files the tree holds open (`first_fd` gives the pid and fd of a
/// description, for messages; `held` whether some fd of the tree refers
/// to a description). A removed file open only outside the tree, or only
/// mapped, is refused.
pub fn check_removed(
    files: &Files,
    first_fd: &dyn Fn(u32) -> (i32, i32),
    held: &dyn Fn(u32) -> bool,
) -> Result<()> {
    for d in &files.descs {
        let Some(file_desc::Kind::Inotify(n)) = &d.kind else {
            continue;
        };
        for w in n.watches.iter().filter(|w| w.removed) {
            if !ghost_ids(files, w).any(held) {
                let (pid, fd) = first_fd(d.id);
                return Err(not_held(pid, fd, w));
            }
        }
    }
    Ok(())
}

/// Restore, once the ghosts are unlinked: gives each watch on a removed
/// file its mask (it was added with a placeholder, see the module docs),
/// through `/proc/PID/fd/N` of a restored fd that holds the file, in
/// every description once (in the first process of `tables` that holds
/// it), and checks that the kernel updated the same watch.
pub fn finish_removed(
    files: &Files,
    tables: &[crate::kinds::locks::TableRef],
    calls: &mut std::collections::HashMap<i32, &mut dyn Calls>,
) -> Result<()> {
    let by_id: std::collections::HashMap<u32, &InotifyImg> = files
        .descs
        .iter()
        .filter_map(|d| match &d.kind {
            Some(file_desc::Kind::Inotify(n)) if n.watches.iter().any(|w| w.removed) => {
                Some((d.id, n))
            }
            _ => None,
        })
        .collect();
    if by_id.is_empty() {
        return Ok(());
    }
    let live = |t: &&(i32, u32, Option<&FdTable>)| t.1 == 0;
    let holder = |id: u32| {
        tables.iter().filter(live).find_map(|(pid, _, t)| {
            t.and_then(|t| t.fds.iter().find(|f| f.desc_id == id))
                .map(|f| (*pid, f.fd))
        })
    };
    let mut done = std::collections::HashSet::new();
    for (pid, _, t) in tables.iter().filter(live) {
        let Some(t) = t else { continue };
        for f in &t.fds {
            let Some(n) = by_id.get(&f.desc_id) else {
                continue;
            };
            if !done.insert(f.desc_id) {
                continue;
            }
            let c = calls.get_mut(pid).ok_or_else(|| {
                Error::Restore(format!(
                    "pid {pid}: no process to finish its inotify watches"
                ))
            })?;
            for w in n.watches.iter().filter(|w| w.removed) {
                let (hpid, hfd) = ghost_ids(files, w).find_map(holder).ok_or_else(|| {
                    Error::Restore(format!(
                        "pid {pid}: fd {}: inotify watch {} is on the removed file {}, \
                             which no restored fd holds",
                        f.fd, w.wd, w.path
                    ))
                })?;
                let via = format!("/proc/{hpid}/fd/{hfd}");
                let got = c.inotify_add_watch(f.fd as u64, &via, w.mask)?;
                if got as i64 != w.wd as i64 {
                    return Err(Error::Restore(format!(
                        "pid {pid}: fd {}: inotify watch {} on the removed file {} came back \
                         as wd {got}",
                        f.fd, w.wd, w.path
                    )));
                }
            }
        }
    }
    Ok(())
}

/// The path of the file a handle names, on the mount of device `sdev`
/// (kernel encoding: major << 20 | minor). A file system that cannot
/// open a file from its handle (an overlayfs without `nfs_export=on`
/// answers ESTALE) is named in the error, with its type.
pub(super) fn path_of_handle(sdev: u64, htype: i32, handle: &[u8]) -> std::io::Result<String> {
    let dev = format!("{}:{}", sdev >> 20, sdev & 0xfffff);
    let mi = std::fs::read_to_string("/proc/self/mountinfo")?;
    let (mount, fstype) = mi
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // After the optional fields: "- FSTYPE SOURCE OPTIONS".
            let fstype = f
                .iter()
                .position(|x| *x == "-")
                .and_then(|i| f.get(i + 1))
                .map_or("?", |t| *t);
            (f.get(2) == Some(&dev.as_str()))
                .then(|| f.get(4).map(|s| (s.to_string(), fstype.to_string())))
                .flatten()
        })
        .next()
        .ok_or_else(|| std::io::Error::other(format!("no mount of device {dev}")))?;
    let m = std::fs::File::open(&mount)?;
    let f = crate::sys::task::open_by_handle(&m, htype, handle).map_err(|e| {
        let hint = if fstype == "overlay" {
            " (an overlayfs decodes file handles only when mounted with nfs_export=on)"
        } else {
            ""
        };
        std::io::Error::new(
            e.kind(),
            format!(
                "the {fstype} file system of device {dev} (mounted at {mount}) cannot open the \
                 file from its handle: {e}{hint}"
            ),
        )
    })?;
    use std::os::fd::AsRawFd;
    let p = std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd()))?;
    Ok(p.to_string_lossy().into_owned())
}
