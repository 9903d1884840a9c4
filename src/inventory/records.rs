//! Decoder for the records of bpf/records.h: the byte streams the
//! inventory iterators write and the fork tracker's events. Little-endian,
//! fixed layouts, a length in every iterator record; anything malformed is
//! an `Error::Parse`, never a panic. The layouts are checked against the
//! skeleton's generated types in the tests below.

#![forbid(unsafe_code)]

use crate::error::{Error, Result};

pub const REC_TASK: u16 = 1;
pub const REC_VMA: u16 = 2;
pub const REC_FD: u16 = 3;

pub const HDR_LEN: usize = 8;
pub const TASK_LEN: usize = 64;
pub const VMA_LEN: usize = 72;
pub const FD_LEN: usize = 48;
pub const EVENT_LEN: usize = 24;

/// How a VMA's name is made (CAIRN_VMA_* of records.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmaName {
    Anon,
    File,
    Special,
    Heap,
    Stack,
    AnonName,
    ShmemName,
    /// The kernel could not produce the path; ask /proc.
    Error,
    /// A file whose path the record identifies by `path_key` only: the
    /// same key is the same name, asked of /proc once.
    FileKey,
}

impl VmaName {
    fn from_u8(v: u8) -> Option<VmaName> {
        Some(match v {
            0 => VmaName::Anon,
            1 => VmaName::File,
            2 => VmaName::Special,
            3 => VmaName::Heap,
            4 => VmaName::Stack,
            5 => VmaName::AnonName,
            6 => VmaName::ShmemName,
            7 => VmaName::Error,
            8 => VmaName::FileKey,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRec {
    pub tgid: i32,
    pub tid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub state: u32,
    pub exit_state: i32,
    pub exit_code: i32,
    pub exit_signal: i32,
    pub flags: u32,
    /// The raw comm bytes up to the first NUL.
    pub comm: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmaRec {
    pub tgid: i32,
    pub start: u64,
    pub end: u64,
    pub flags: u64,
    pub pgoff: u64,
    pub ino: u64,
    /// Kernel dev_t (major << 20 | minor).
    pub dev: u32,
    pub name_kind: VmaName,
    pub name: Vec<u8>,
    /// (vfsmount, dentry) of the mapped file's path, for FileKey.
    pub path_key: (u64, u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdRec {
    pub tgid: i32,
    pub fd: i32,
    pub flags: u32,
    pub pos: u64,
    pub ino: u64,
    pub dev: u32,
    pub mode: u32,
    pub mnt_id: i32,
    /// None: the kernel could not produce the path.
    pub path: Option<Vec<u8>>,
    /// `dev` and `mode` are not what stat(2) of the fd reports (overlayfs,
    /// btrfs): user space takes them from a stat of the link.
    pub stat_dev: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Fork,
    Exit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub tid: i32,
    pub tgid: i32,
    pub ppid: i32,
    pub exit_code: i32,
}

/// A bounds-checked little-endian reader over one record.
struct Fields<'a> {
    b: &'a [u8],
}

impl Fields<'_> {
    fn u8(&self, off: usize) -> u8 {
        self.b[off]
    }
    fn u16(&self, off: usize) -> u16 {
        u16::from_le_bytes([self.b[off], self.b[off + 1]])
    }
    fn u32(&self, off: usize) -> u32 {
        let mut a = [0u8; 4];
        a.copy_from_slice(&self.b[off..off + 4]);
        u32::from_le_bytes(a)
    }
    fn i32(&self, off: usize) -> i32 {
        self.u32(off) as i32
    }
    fn u64(&self, off: usize) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&self.b[off..off + 8]);
        u64::from_le_bytes(a)
    }
}

fn bad(what: &str, off: usize, msg: impl std::fmt::Display) -> Error {
    Error::parse(
        format!("bpf {what} records"),
        format!("at byte {off}: {msg}"),
    )
}

/// Splits a stream into (kind, record bytes), checking every length.
fn records<'a>(what: &str, mut b: &'a [u8]) -> Result<Vec<(u16, &'a [u8])>> {
    let mut out = Vec::new();
    let mut off = 0;
    while !b.is_empty() {
        if b.len() < HDR_LEN {
            return Err(bad(what, off, format!("{} stray bytes", b.len())));
        }
        let h = Fields { b };
        let (kind, len) = (h.u16(0), h.u16(2) as usize);
        if len < HDR_LEN || len > b.len() {
            return Err(bad(what, off, format!("bad record length {len}")));
        }
        out.push((kind, &b[..len]));
        b = &b[len..];
        off += len;
    }
    Ok(out)
}

fn fixed<'a>(
    what: &str,
    rec: &'a [u8],
    want_kind: u16,
    kind: u16,
    min: usize,
) -> Result<Fields<'a>> {
    if kind != want_kind {
        return Err(bad(
            what,
            0,
            format!("record of kind {kind}, expected {want_kind}"),
        ));
    }
    if rec.len() < min {
        return Err(bad(
            what,
            0,
            format!("record of {} bytes, expected >= {min}", rec.len()),
        ));
    }
    Ok(Fields { b: rec })
}

pub fn parse_tasks(b: &[u8]) -> Result<Vec<TaskRec>> {
    records("task", b)?
        .into_iter()
        .map(|(kind, rec)| {
            let f = fixed("task", rec, REC_TASK, kind, TASK_LEN)?;
            let comm = &rec[48..64];
            let n = comm.iter().position(|&c| c == 0).unwrap_or(comm.len());
            Ok(TaskRec {
                tgid: f.i32(4),
                tid: f.i32(8),
                ppid: f.i32(12),
                pgid: f.i32(16),
                sid: f.i32(20),
                state: f.u32(24),
                exit_state: f.i32(28),
                exit_code: f.i32(32),
                exit_signal: f.i32(36),
                flags: f.u32(40),
                comm: comm[..n].to_vec(),
            })
        })
        .collect()
}

pub fn parse_vmas(b: &[u8]) -> Result<Vec<VmaRec>> {
    records("vma", b)?
        .into_iter()
        .map(|(kind, rec)| {
            let f = fixed("vma", rec, REC_VMA, kind, VMA_LEN)?;
            let name_len = f.u16(52) as usize;
            if VMA_LEN + name_len != rec.len() {
                return Err(bad(
                    "vma",
                    0,
                    format!("name of {name_len} bytes in a record of {}", rec.len()),
                ));
            }
            let name_kind = VmaName::from_u8(f.u8(54))
                .ok_or_else(|| bad("vma", 0, format!("unknown name kind {}", f.u8(54))))?;
            let (start, end) = (f.u64(8), f.u64(16));
            if start > end {
                return Err(bad(
                    "vma",
                    0,
                    format!("start {start:#x} above end {end:#x}"),
                ));
            }
            Ok(VmaRec {
                tgid: f.i32(4),
                start,
                end,
                flags: f.u64(24),
                pgoff: f.u64(32),
                ino: f.u64(40),
                dev: f.u32(48),
                name_kind,
                name: rec[VMA_LEN..].to_vec(),
                path_key: (f.u64(56), f.u64(64)),
            })
        })
        .collect()
}

pub fn parse_fds(b: &[u8]) -> Result<Vec<FdRec>> {
    records("fd", b)?
        .into_iter()
        .map(|(kind, rec)| {
            let f = fixed("fd", rec, REC_FD, kind, FD_LEN)?;
            let path_len = f.u16(44) as usize;
            if FD_LEN + path_len != rec.len() {
                return Err(bad(
                    "fd",
                    0,
                    format!("path of {path_len} bytes in a record of {}", rec.len()),
                ));
            }
            let path_error = f.u8(46) != 0;
            Ok(FdRec {
                tgid: f.i32(4),
                fd: f.i32(8),
                flags: f.u32(12),
                pos: f.u64(16),
                ino: f.u64(24),
                dev: f.u32(32),
                mode: f.u32(36),
                mnt_id: f.i32(40),
                path: (!path_error).then(|| rec[FD_LEN..].to_vec()),
                stat_dev: f.u8(47) != 0,
            })
        })
        .collect()
}

/// Decodes ring-buffer events (each exactly EVENT_LEN bytes).
pub fn parse_events(b: &[u8]) -> Result<Vec<Event>> {
    if !b.len().is_multiple_of(EVENT_LEN) {
        return Err(bad(
            "event",
            0,
            format!("{} bytes is not a whole number of events", b.len()),
        ));
    }
    b.chunks_exact(EVENT_LEN)
        .enumerate()
        .map(|(i, c)| {
            let f = Fields { b: c };
            let kind = match f.u32(0) {
                1 => EventKind::Fork,
                2 => EventKind::Exit,
                k => return Err(bad("event", i * EVENT_LEN, format!("unknown kind {k}"))),
            };
            Ok(Event {
                kind,
                tid: f.i32(4),
                tgid: f.i32(8),
                ppid: f.i32(12),
                exit_code: f.i32(16),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::bpf::layout;
    use std::mem::{offset_of, size_of};

    /// The decoder's offsets are those of the C structs (as the skeleton
    /// generated them from bpf/records.h).
    #[test]
    fn layouts_match_the_c_structs() {
        assert_eq!(size_of::<layout::cairn_rec_hdr>(), HDR_LEN);
        assert_eq!(size_of::<layout::cairn_task_rec>(), TASK_LEN);
        assert_eq!(size_of::<layout::cairn_vma_rec>(), VMA_LEN);
        assert_eq!(size_of::<layout::cairn_fd_rec>(), FD_LEN);
        assert_eq!(size_of::<layout::cairn_event>(), EVENT_LEN);
        assert_eq!(offset_of!(layout::cairn_task_rec, tid), 8);
        assert_eq!(offset_of!(layout::cairn_task_rec, flags), 40);
        assert_eq!(offset_of!(layout::cairn_task_rec, comm), 48);
        assert_eq!(offset_of!(layout::cairn_vma_rec, start), 8);
        assert_eq!(offset_of!(layout::cairn_vma_rec, ino), 40);
        assert_eq!(offset_of!(layout::cairn_vma_rec, dev), 48);
        assert_eq!(offset_of!(layout::cairn_vma_rec, name_len), 52);
        assert_eq!(offset_of!(layout::cairn_vma_rec, name_kind), 54);
        assert_eq!(offset_of!(layout::cairn_vma_rec, path_mnt), 56);
        assert_eq!(offset_of!(layout::cairn_vma_rec, path_dentry), 64);
        assert_eq!(offset_of!(layout::cairn_fd_rec, fd), 8);
        assert_eq!(offset_of!(layout::cairn_fd_rec, pos), 16);
        assert_eq!(offset_of!(layout::cairn_fd_rec, dev), 32);
        assert_eq!(offset_of!(layout::cairn_fd_rec, mnt_id), 40);
        assert_eq!(offset_of!(layout::cairn_fd_rec, path_len), 44);
        assert_eq!(offset_of!(layout::cairn_fd_rec, path_error), 46);
        assert_eq!(offset_of!(layout::cairn_fd_rec, stat_dev), 47);
        assert_eq!(offset_of!(layout::cairn_event, tgid), 8);
        assert_eq!(offset_of!(layout::cairn_event, exit_code), 16);
    }

    fn hdr(kind: u16, len: usize, tgid: i32) -> Vec<u8> {
        let mut v = kind.to_le_bytes().to_vec();
        v.extend((len as u16).to_le_bytes());
        v.extend(tgid.to_le_bytes());
        v
    }

    fn fd_rec(fd: i32, path: Option<&[u8]>) -> Vec<u8> {
        let p = path.unwrap_or(b"");
        let mut v = hdr(REC_FD, FD_LEN + p.len(), 77);
        v.extend(fd.to_le_bytes());
        v.extend(0o2u32.to_le_bytes());
        v.extend(5u64.to_le_bytes());
        v.extend(1234u64.to_le_bytes());
        v.extend(((8u32 << 20) | 1).to_le_bytes());
        v.extend(0o100644u32.to_le_bytes());
        v.extend(25i32.to_le_bytes());
        v.extend((p.len() as u16).to_le_bytes());
        v.push(path.is_none() as u8);
        v.push(0);
        v.extend(p);
        v
    }

    #[test]
    fn fds_decode() {
        let mut b = fd_rec(3, Some(b"/tmp/a b"));
        b.extend(fd_rec(4, None));
        let fds = parse_fds(&b).unwrap();
        assert_eq!(fds.len(), 2);
        assert_eq!(fds[0].tgid, 77);
        assert_eq!(fds[0].fd, 3);
        assert_eq!(fds[0].flags, 2);
        assert_eq!(fds[0].pos, 5);
        assert_eq!(fds[0].ino, 1234);
        assert_eq!(fds[0].dev, (8 << 20) | 1);
        assert_eq!(fds[0].mode, 0o100644);
        assert_eq!(fds[0].mnt_id, 25);
        assert_eq!(fds[0].path.as_deref(), Some(&b"/tmp/a b"[..]));
        assert_eq!(fds[1].path, None);
    }

    #[test]
    fn bad_streams_are_errors_not_panics() {
        let good = fd_rec(3, Some(b"/x"));
        // Truncated anywhere.
        for cut in 1..good.len() {
            assert!(parse_fds(&good[..cut]).is_err(), "cut at {cut}");
        }
        // Length field lies.
        let mut b = good.clone();
        b[2] = 200;
        assert!(parse_fds(&b).is_err());
        let mut b = good.clone();
        b[2] = 3;
        b[3] = 0;
        assert!(parse_fds(&b).is_err());
        // Wrong kind.
        let mut b = good.clone();
        b[0] = REC_TASK as u8;
        assert!(parse_fds(&b).is_err());
        assert!(parse_vmas(&good).is_err());
        // Name length disagrees with the record length.
        let mut b = good;
        b[44] = 9;
        assert!(parse_fds(&b).is_err());
        assert!(parse_events(&[0u8; 23]).is_err());
        assert!(parse_events(&[9u8; 24]).is_err());
        assert_eq!(parse_tasks(&[]).unwrap(), vec![]);
    }

    #[test]
    fn tasks_and_events_decode() {
        let mut t = hdr(REC_TASK, TASK_LEN, 10);
        for v in [11i32, 1, 10, 9] {
            t.extend(v.to_le_bytes());
        }
        t.extend(1u32.to_le_bytes()); // state
        t.extend(0i32.to_le_bytes());
        t.extend(0i32.to_le_bytes());
        t.extend(17i32.to_le_bytes());
        t.extend(0x40u32.to_le_bytes());
        t.extend(0u32.to_le_bytes());
        let mut comm = *b"worker\0\0\0\0\0\0\0\0\0\0";
        comm[7] = b'x'; // after the NUL: ignored
        t.extend(comm);
        let r = &parse_tasks(&t).unwrap()[0];
        assert_eq!((r.tgid, r.tid, r.ppid, r.pgid, r.sid), (10, 11, 1, 10, 9));
        assert_eq!(r.exit_signal, 17);
        assert_eq!(r.comm, b"worker");

        let mut e = 1u32.to_le_bytes().to_vec();
        for v in [42i32, 40, 40, 0, 0] {
            e.extend(v.to_le_bytes());
        }
        let ev = parse_events(&e).unwrap();
        assert_eq!(ev[0].kind, EventKind::Fork);
        assert_eq!((ev[0].tid, ev[0].tgid, ev[0].ppid), (42, 40, 40));
    }
}
