//! fanotify groups: the fanotify_init flags and event_f_flags, and the
//! marks (inode, mount, filesystem) with their mask, ignored mask and
//! mark flags, all from fdinfo's "fanotify" lines.
//!
//! An inode mark's file is found from the file handle fdinfo gives (as for
//! inotify), a mount mark's mount from its mount id, a filesystem mark's
//! from its device; restore runs fanotify_init and fanotify_mark in the
//! vessel, then reads the new group's fdinfo from cairn and fails unless
//! it shows the same marks.
//!
//! Refused at dump: queued events (FIONREAD on a copy of the group; the
//! kernel cannot queue them again), and marks for permission events
//! (FAN_*_PERM, FAN_PRE_ACCESS): a permission event the program has read
//! and not answered yet holds another process, and neither it nor the
//! pending answer can be seen or carried over.

use std::os::fd::AsRawFd;
use std::path::Path;

use super::bad;
use crate::error::{Error, Result};
use crate::image::proto::file_desc;
use crate::image::proto::netlink::{Fanotify as FanotifyImg, FanotifyMark};
use crate::image::validate::{bad as invalid, check_path, count, MAX_ITEMS};
use crate::kinds::fd::{not_mine, DumpCx, FdKind, FdRef, RestoreCx};
use crate::procfs::{self, FdInfo};
use crate::remote::Calls;

const TARGET: &str = "anon_inode:[fanotify]";

pub const MARK_INODE: u32 = 1;
pub const MARK_MOUNT: u32 = 2;
pub const MARK_FILESYSTEM: u32 = 3;

const FAN_MARK_ADD: u32 = 0x1;
const FAN_MARK_IGNORED_MASK: u32 = 0x20;
const FAN_MARK_IGNORED_SURV_MODIFY: u32 = 0x40;
const FAN_MARK_MOUNT: u32 = 0x10;
const FAN_MARK_FILESYSTEM: u32 = 0x100;
const FAN_MARK_EVICTABLE: u32 = 0x200;
const FAN_MARK_IGNORE: u32 = 0x400;
/// FAN_OPEN_PERM, FAN_ACCESS_PERM, FAN_OPEN_EXEC_PERM, FAN_PRE_ACCESS.
const PERM_EVENTS: u64 = 0x10000 | 0x20000 | 0x40000 | 0x100000;

/// A mark as fdinfo shows it: kind, the object's key (inode number,
/// mount id or device), flags and masks.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RawMark {
    kind: u32,
    ino: u64,
    sdev: u64,
    mnt_id: u64,
    mflags: u32,
    mask: u64,
    ignored_mask: u64,
    handle: Option<(i32, Vec<u8>)>,
}

fn hex(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(key))
        .and_then(|v| u64::from_str_radix(v, 16).ok())
}

/// ("flags", "event-flags") of the group, and its marks.
fn parse(info: &FdInfo) -> Option<((u32, u32), Vec<RawMark>)> {
    let mut group = None;
    let mut marks = Vec::new();
    for (k, line) in &info.extra {
        if k != "fanotify" {
            continue;
        }
        if line.starts_with("flags:") {
            group = Some((
                hex(line, "flags:")? as u32,
                hex(line, "event-flags:")? as u32,
            ));
            continue;
        }
        let (kind, ino, sdev, mnt_id) = if line.starts_with("ino:") {
            (MARK_INODE, hex(line, "ino:")?, hex(line, "sdev:")?, 0)
        } else if line.starts_with("mnt_id:") {
            (MARK_MOUNT, 0, 0, hex(line, "mnt_id:")?)
        } else if line.starts_with("sdev:") {
            (MARK_FILESYSTEM, 0, hex(line, "sdev:")?, 0)
        } else {
            return None;
        };
        let handle = match (
            hex(line, "fhandle-type:"),
            line.split_whitespace()
                .find_map(|f| f.strip_prefix("f_handle:")),
        ) {
            (Some(t), Some(h)) => {
                let bytes: Option<Vec<u8>> = (0..h.len() / 2)
                    .map(|i| {
                        h.get(2 * i..2 * i + 2)
                            .and_then(|b| u8::from_str_radix(b, 16).ok())
                    })
                    .collect();
                Some((t as i32, bytes?))
            }
            _ => None,
        };
        marks.push(RawMark {
            kind,
            ino,
            sdev,
            mnt_id,
            mflags: hex(line, "mflags:")? as u32,
            mask: hex(line, "mask:")?,
            ignored_mask: hex(line, "ignored_mask:")?,
            handle,
        });
    }
    Some((group?, marks))
}

/// The mount point of mount `mnt_id`, or of the first mount of device
/// `sdev` (kernel encoding major << 20 | minor), from mountinfo.
fn mount_point(mnt_id: Option<u64>, sdev: Option<u64>) -> std::io::Result<(String, u64)> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo")?;
    for l in mi.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (Some(id), Some(dev), Some(mp)) = (f.first(), f.get(2), f.get(4)) else {
            continue;
        };
        let id: u64 = id.parse().unwrap_or(0);
        let hit = match (mnt_id, sdev) {
            (Some(m), _) => id == m,
            (None, Some(d)) => *dev == format!("{}:{}", d >> 20, d & 0xfffff),
            _ => false,
        };
        if hit {
            return Ok((mp.replace("\\040", " "), id));
        }
    }
    Err(std::io::Error::other(match mnt_id {
        Some(m) => format!("no mount with id {m} in cairn's mount namespace"),
        None => format!("no mount of device {:#x}", sdev.unwrap_or(0)),
    }))
}

fn mark_of(pid: i32, fd: i32, m: &RawMark) -> Result<FanotifyMark> {
    let mut out = FanotifyMark::new();
    out.kind = m.kind;
    out.mflags = m.mflags;
    out.mask = m.mask;
    out.ignored_mask = m.ignored_mask;
    let fail = |e: std::io::Error| {
        Error::unsupported(
            pid,
            format!(
                "fd {fd}: fanotify mark ({}): cannot find the marked object: {e}",
                what(m)
            ),
        )
    };
    match m.kind {
        MARK_INODE => {
            let Some((t, h)) = m.handle.as_ref() else {
                return Err(bad(pid, fd, "fanotify inode mark file handle"));
            };
            out.path = super::inotify::path_of_handle(m.sdev, *t, h).map_err(fail)?;
            out.ino = m.ino;
            out.dev = m.sdev;
        }
        MARK_MOUNT => {
            out.path = mount_point(Some(m.mnt_id), None).map_err(fail)?.0;
            out.mnt_id = m.mnt_id;
        }
        _ => {
            out.path = mount_point(None, Some(m.sdev)).map_err(fail)?.0;
            out.dev = m.sdev;
        }
    }
    Ok(out)
}

fn what(m: &RawMark) -> String {
    match m.kind {
        MARK_INODE => format!("inode {} on device {:#x}", m.ino, m.sdev),
        MARK_MOUNT => format!("mount {}", m.mnt_id),
        _ => format!("filesystem {:#x}", m.sdev),
    }
}

/// Why the group behind fd `f` cannot be restored (None: it can).
fn refusal(f: &FdRef, info: &FdInfo) -> Result<Option<String>> {
    let Some((_, marks)) = parse(info) else {
        return Err(bad(f.pid, f.fd, "fanotify lines"));
    };
    if let Some(m) = marks.iter().find(|m| m.mask & PERM_EVENTS != 0) {
        return Ok(Some(format!(
            "has a mark for permission events ({}, mask {:#x}): a permission event read and \
             not answered yet holds another process, and cairn can neither see nor carry over \
             the pending answer",
            what(m),
            m.mask
        )));
    }
    let copy = crate::sys::sock::pidfd_getfd(f.pid, f.fd)
        .map_err(|e| Error::sys(f.pid, format!("pidfd_getfd fd {}", f.fd), e))?;
    let n = crate::sys::sock::inq(&copy)
        .map_err(|e| Error::sys(f.pid, format!("fd {}: FIONREAD", f.fd), e))?;
    if n > 0 {
        return Ok(Some(format!(
            "has {n} bytes of queued events, which cannot be queued into a fanotify group again \
             (read them before the checkpoint)"
        )));
    }
    Ok(None)
}

/// The group as an image, from its fdinfo.
fn describe_group(f: &FdRef, info: &FdInfo) -> Result<FanotifyImg> {
    let Some(((flags, event_flags), marks)) = parse(info) else {
        return Err(bad(f.pid, f.fd, "fanotify lines"));
    };
    let mut g = FanotifyImg::new();
    g.init_flags = flags;
    g.event_flags = event_flags;
    for m in &marks {
        g.marks.push(mark_of(f.pid, f.fd, m)?);
    }
    Ok(g)
}

/// The marks of `info` in a comparable form: (kind, key, mflags, mask,
/// ignored mask), sorted.
fn mark_keys(marks: &[RawMark]) -> Vec<(u32, u64, u32, u64, u64)> {
    let mut v: Vec<_> = marks
        .iter()
        .map(|m| {
            let key = match m.kind {
                MARK_INODE => m.ino ^ (m.sdev << 40),
                MARK_MOUNT => m.mnt_id,
                _ => m.sdev,
            };
            (m.kind, key, m.mflags, m.mask, m.ignored_mask)
        })
        .collect();
    v.sort_unstable();
    v
}

pub struct Fanotify;

impl FdKind for Fanotify {
    fn name(&self) -> &'static str {
        "fanotify"
    }

    fn precheck(&self, f: &FdRef) -> Result<bool> {
        if f.target != TARGET {
            return Ok(false);
        }
        // No fdinfo in precheck: read it here.
        let Ok(info) = procfs::read_fdinfo(f.pid, f.fd) else {
            return Ok(true); // closed meanwhile
        };
        if let Some(why) = refusal(f, &info)? {
            return Err(Error::unsupported(
                f.pid,
                format!("fd {} (fanotify group) {why}", f.fd),
            ));
        }
        Ok(true)
    }

    fn describe(&self, f: &FdRef, _cx: &mut DumpCx) -> Result<Option<file_desc::Kind>> {
        if f.target != TARGET {
            return Ok(None);
        }
        let info = f.info()?;
        if let Some(why) = refusal(f, info)? {
            return Err(Error::unsupported(
                f.pid,
                format!("fd {} (fanotify group) {why}", f.fd),
            ));
        }
        Ok(Some(file_desc::Kind::Fanotify(describe_group(f, info)?)))
    }

    fn validate(&self, k: &file_desc::Kind, path: &Path, obj: &str) -> Result<()> {
        let file_desc::Kind::Fanotify(g) = k else {
            return Err(not_mine(self));
        };
        count(path, obj, "marks", g.marks.len(), MAX_ITEMS)?;
        for m in &g.marks {
            if !(MARK_INODE..=MARK_FILESYSTEM).contains(&m.kind) {
                return Err(invalid(path, obj, "marks.kind", m.kind));
            }
            check_path(path, obj, "marks.path", &m.path, false)?;
            if m.mask & PERM_EVENTS != 0 {
                return Err(invalid(path, obj, "marks.mask", "permission events"));
            }
            if m.mflags & !(FAN_MARK_IGNORED_SURV_MODIFY | FAN_MARK_EVICTABLE | FAN_MARK_IGNORE)
                != 0
            {
                return Err(invalid(path, obj, "marks.mflags", m.mflags));
            }
        }
        Ok(())
    }

    fn open(&self, k: &file_desc::Kind, calls: &mut dyn Calls, _cx: &mut RestoreCx) -> Result<u64> {
        let file_desc::Kind::Fanotify(g) = k else {
            return Err(not_mine(self));
        };
        let pid = calls.pid();
        let fd = calls.fanotify_init(g.init_flags, g.event_flags)?;
        // fdinfo lists the newest mark first: add them oldest first.
        for m in g.marks.iter().rev() {
            if m.kind == MARK_INODE {
                check_inode(pid, m)?;
            }
            let on = match m.kind {
                MARK_INODE => 0,
                MARK_MOUNT => FAN_MARK_MOUNT,
                _ => FAN_MARK_FILESYSTEM,
            };
            let evict = m.mflags & FAN_MARK_EVICTABLE;
            if m.mask != 0 || m.ignored_mask == 0 {
                calls.fanotify_mark(fd, FAN_MARK_ADD | on | evict, m.mask, &m.path)?;
            }
            if m.ignored_mask != 0 {
                let ign = if m.mflags & FAN_MARK_IGNORE != 0 {
                    FAN_MARK_IGNORE
                } else {
                    FAN_MARK_IGNORED_MASK
                };
                let surv = m.mflags & FAN_MARK_IGNORED_SURV_MODIFY;
                calls.fanotify_mark(
                    fd,
                    FAN_MARK_ADD | on | evict | ign | surv,
                    m.ignored_mask,
                    &m.path,
                )?;
            }
        }
        verify(pid, fd, g)?;
        Ok(fd)
    }
}

/// The file at an inode mark's path must still be the marked one.
fn check_inode(pid: i32, m: &FanotifyMark) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(&m.path)
        .map_err(|e| Error::Restore(format!("pid {pid}: fanotify mark on {}: {e}", m.path)))?;
    if md.ino() != m.ino {
        return Err(Error::Restore(format!(
            "pid {pid}: fanotify mark on {}: the file there is inode {}, the mark was on inode {}",
            m.path,
            md.ino(),
            m.ino
        )));
    }
    Ok(())
}

/// Reads the new group's fdinfo (through a copy in cairn) and fails
/// unless its flags and marks are the saved ones.
fn verify(pid: i32, fd: u64, g: &FanotifyImg) -> Result<()> {
    let copy = crate::sys::sock::pidfd_getfd(pid, fd as i32).map_err(|e| {
        Error::sys(
            pid,
            format!("pidfd_getfd of the new fanotify group {fd}"),
            e,
        )
    })?;
    let path = format!("/proc/self/fdinfo/{}", copy.as_raw_fd());
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::Restore(format!("pid {pid}: read {path}: {e}")))?;
    let info = procfs::parse_fdinfo(&text)?;
    let Some(((flags, event_flags), marks)) = parse(&info) else {
        return Err(Error::Restore(format!(
            "pid {pid}: the new fanotify group's fdinfo has no usable fanotify lines"
        )));
    };
    let mut want_marks = Vec::new();
    for m in &g.marks {
        let (ino, sdev, mnt_id) = match m.kind {
            MARK_INODE => (m.ino, m.dev, 0),
            MARK_MOUNT => (0, 0, m.mnt_id),
            _ => (0, m.dev, 0),
        };
        want_marks.push(RawMark {
            kind: m.kind,
            ino,
            sdev,
            mnt_id,
            mflags: m.mflags,
            mask: m.mask,
            ignored_mask: m.ignored_mask,
            handle: None,
        });
    }
    let (want, got) = (mark_keys(&want_marks), mark_keys(&marks));
    if (flags, event_flags) != (g.init_flags, g.event_flags) || want != got {
        return Err(Error::Restore(format!(
            "pid {pid}: fanotify group did not come back as it was: flags {flags:#x}/{event_flags:#x} \
             marks {got:x?}, was {:#x}/{:#x} marks {want:x?}",
            g.init_flags, g.event_flags
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fdinfo_lines() {
        let text = "pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t1057\n\
            fanotify flags:10 event-flags:8002\n\
            fanotify ino:4f969 sdev:800013 mflags:40 mask:3b ignored_mask:40000000 fhandle-bytes:8 fhandle-type:1 f_handle:69f90400c275b5b4\n\
            fanotify mnt_id:1f mflags:0 mask:20 ignored_mask:0\n\
            fanotify sdev:800013 mflags:0 mask:8 ignored_mask:0\n";
        let info = procfs::parse_fdinfo(text).unwrap();
        let ((fl, ef), marks) = parse(&info).unwrap();
        assert_eq!((fl, ef), (0x10, 0x8002));
        assert_eq!(marks.len(), 3);
        assert_eq!(marks[0].kind, MARK_INODE);
        assert_eq!(marks[0].ino, 0x4f969);
        assert_eq!(marks[0].mflags, 0x40);
        assert_eq!(marks[0].ignored_mask, 0x4000_0000);
        assert_eq!(marks[0].handle.as_ref().unwrap().1.len(), 8);
        assert_eq!(marks[1].kind, MARK_MOUNT);
        assert_eq!(marks[1].mnt_id, 0x1f);
        assert_eq!(marks[2].kind, MARK_FILESYSTEM);
        assert_eq!(marks[2].mask, 8);
    }
}
