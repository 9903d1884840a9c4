//! Mappings of deleted files and of memfds (a `/dev/shm` segment MPICH or UCX unlinked
//! after mapping it, a temporary file mapped privately).
//!
//! Dump: such a mapping is a file mapping like any other
//! (`VMA_FILE_SHARED` or `VMA_FILE_PRIVATE`, see `vma::describe`); its
//! file is registered in files.img as a deleted regular file
//! (`RegFile.deleted`, the path without " (deleted)") and the file itself
//! is opened here through `/proc/PID/map_files/START-END` (the same
//! inode), so that `kinds::contents` saves its contents the way it saves
//! a deleted file that is still open through an fd: one entry per inode,
//! shared by every mapping and fd of it.
//!
//! Restore: `kinds::contents::put_back` recreates the file (under its old
//! name, or a hidden one beside it) before the tree exists; every mapping
//! of it maps that one file (MAP_SHARED writes are seen by all), every fd
//! opens it, and it is unlinked once the fds are in place, so the maps
//! name it "(deleted)" again.
//!
//! A memfd mapped MAP_SHARED (its fd closed, as a program that only
//! needs the memory does) is shared memory with a name: its pages are
//! saved as those of a shared anonymous object, and restore creates it
//! with memfd_create, its size and mode, maps it in every process that
//! mapped it (one object: the others fetch it), and adds its seals once
//! the last one has mapped it.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;

use crate::error::{Error, Result};
use crate::image::proto::{MmEntry, Vma, VmaKind};
use crate::procfs::MapsEntry;
use crate::remote::Calls;
use crate::sys::PAGE_SIZE;

/// What one dump keeps of the deleted files and memfds its tree maps,
/// from the mappings to the fds and the contents (in
/// [`crate::kinds::fd::DumpCx`], so one per dump).
#[derive(Default)]
pub struct MapFiles {
    /// The deleted files mapped by the tree, and those on tmpfs/ramfs
    /// (`kinds::volatile`), by (device, inode): one
    /// descriptor of each, opened through map_files while the tree is
    /// frozen, read by [`crate::kinds::contents::dump`].
    mapped: HashMap<(u64, u64), File>,
    /// The memfds the tree maps, by (device, inode): who maps each, for
    /// a refusal.
    memfd_maps: Seen,
    /// The memfds the tree holds an fd of: one memfd both mapped and open
    /// cannot be restored as one object yet, whichever process holds which.
    memfd_fds: Seen,
}

/// Who refers to a memfd, by (device, inode), for a refusal.
type Seen = HashMap<(u64, u64), String>;

impl MapFiles {
    /// Keeps a descriptor of the deleted file mapped at `map_file` (device
    /// and inode as in `md`) for the contents dump. Opened through
    /// map_files: the same inode the process maps, however it was renamed
    /// or unlinked.
    pub(super) fn remember(&mut self, map_file: &str, md: &std::fs::Metadata) -> Result<()> {
        if self.mapped.contains_key(&(md.dev(), md.ino())) {
            return Ok(());
        }
        let f = File::open(map_file).map_err(|e| Error::io(map_file, e))?;
        let now = f.metadata().map_err(|e| Error::io(map_file, e))?;
        if (now.dev(), now.ino()) != (md.dev(), md.ino()) {
            return Err(Error::io(
                map_file,
                std::io::Error::other("the mapping changed while it was dumped"),
            ));
        }
        self.mapped.insert((md.dev(), md.ino()), f);
        Ok(())
    }

    /// The descriptor `remember` kept of deleted file (`dev`, `ino`).
    pub fn mapped(&self, dev: u64, ino: u64) -> Option<&File> {
        self.mapped.get(&(dev, ino))
    }

    /// Records that `what` (a mapping or an fd, for the refusal) refers to
    /// memfd (`dev`, `ino`); refuses when the other side was seen too.
    fn memfd_seen(
        &mut self,
        pid: i32,
        dev: u64,
        ino: u64,
        what: String,
        mapped: bool,
    ) -> Result<()> {
        let (mine, other) = if mapped {
            (&mut self.memfd_maps, &self.memfd_fds)
        } else {
            (&mut self.memfd_fds, &self.memfd_maps)
        };
        if let Some(o) = other.get(&(dev, ino)) {
            return Err(Error::unsupported(
                pid,
                format!(
                    "{what} and {o} are one memfd, mapped and open at once: not restored as one \
                     object"
                ),
            ));
        }
        mine.entry((dev, ino)).or_insert(what);
        Ok(())
    }

    /// For `kinds::anonfd::memfd`: fd `fd` of `pid` is memfd (`dev`,
    /// `ino`); refused if the tree also maps it.
    pub fn memfd_fd(&mut self, pid: i32, fd: i32, dev: u64, ino: u64) -> Result<()> {
        self.memfd_seen(pid, dev, ino, format!("fd {fd} of pid {pid}"), false)
    }
}

/// The kind of a mapping of deleted file `m` (its name ends in
/// " (deleted)"): a regular file nobody links any more is a file
/// mapping whose contents the dump saves; anything else is refused.
pub(super) fn classify_deleted(pid: i32, m: &MapsEntry) -> Result<VmaKind> {
    let link = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
    let refuse = |why: String| {
        Err(Error::unsupported(
            pid,
            format!(
                "mapping {:#x}-{:#x} of deleted file {}: {why}",
                m.start, m.end, m.path
            ),
        ))
    };
    match std::fs::metadata(&link) {
        Ok(md) if md.file_type().is_file() && md.nlink() == 0 => {}
        Ok(md) if md.file_type().is_file() => {
            // Named "... (deleted)" but still linked: a file really
            // named so, or one renamed over; its path is a file.
            return refuse(format!(
                "the file still has {} links but its name is gone",
                md.nlink()
            ));
        }
        Ok(_) => return refuse("not a regular file".into()),
        Err(e) => return refuse(format!("{link}: {e}")),
    }
    Ok(if m.shared {
        VmaKind::VMA_FILE_SHARED
    } else {
        VmaKind::VMA_FILE_PRIVATE
    })
}

// ---------------------------------------------------------------- memfd

/// `F_SEAL_WRITE` and `F_SEAL_FUTURE_WRITE`: a memfd so sealed cannot
/// take its pages back after restore maps it.
const WRITE_SEALS: u32 = 0x0008 | 0x0010;

/// The kind of memfd mapping `m` ("/memfd:NAME (deleted)"): a MAP_SHARED
/// mapping is shared memory with a name (`VMA_ANON_SHARED`, see
/// [`describe_memfd`]). Refused: a private one, one sealed against
/// writing, one whose memfd holds bytes the process does not map, and
/// one the process also holds an fd of.
pub(super) fn classify_memfd(pid: i32, m: &MapsEntry) -> Result<VmaKind> {
    use std::os::unix::fs::FileTypeExt;
    let refuse = |why: String| -> Result<VmaKind> {
        Err(Error::unsupported(
            pid,
            format!("mapping {:#x}-{:#x} of {}: {why}", m.start, m.end, m.path),
        ))
    };
    if !m.shared {
        return refuse("a memfd mapped privately (MAP_PRIVATE) is not restored".into());
    }
    let link = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
    let f = match File::open(&link) {
        Ok(f) => f,
        Err(e) => return refuse(format!("{link}: {e}")),
    };
    let md = f.metadata().map_err(|e| Error::io(&link, e))?;
    if !md.file_type().is_file() || md.file_type().is_fifo() {
        return refuse("not a regular memfd".into());
    }
    let seals = crate::sys::task::get_seals(&f).unwrap_or(0);
    if seals & WRITE_SEALS != 0 {
        return refuse(format!(
            "sealed against writing (seals {seals:#x}: F_SEAL_WRITE or F_SEAL_FUTURE_WRITE): \
             its pages could not be put back"
        ));
    }
    // Every byte of it must be in a mapping of this process: only mapped
    // pages are saved.
    let mut spans: Vec<(u64, u64)> = crate::procfs::read_maps(pid)?
        .iter()
        .filter(|x| x.inode == m.inode && x.path == m.path)
        .map(|x| (x.offset, x.offset + (x.end - x.start)))
        .collect();
    spans.sort_unstable();
    let mut covered = 0u64;
    for (s, e) in spans {
        if s > covered {
            break;
        }
        covered = covered.max(e);
    }
    if covered < md.len() {
        return refuse(format!(
            "the memfd holds {} bytes, the process maps only its first {covered}: not saved",
            md.len()
        ));
    }
    for (fd, target) in crate::procfs::read_fds(pid)? {
        if target == m.path {
            let same = std::fs::metadata(format!("/proc/{pid}/fd/{fd}"))
                .is_ok_and(|x| (x.dev(), x.ino()) == (md.dev(), md.ino()));
            if same {
                return refuse(format!(
                    "fd {fd} of it is open too: a memfd both mapped and open is not restored \
                     as one object"
                ));
            }
        }
    }
    Ok(VmaKind::VMA_ANON_SHARED)
}

/// Fills in the memfd fields of `v` (name, seals, size, mode) from its
/// file at `map_file`; `state` learns who maps it.
pub(super) fn describe_memfd(
    pid: i32,
    m: &MapsEntry,
    map_file: &str,
    v: &mut Vma,
    state: &mut MapFiles,
) -> Result<()> {
    let f = File::open(map_file).map_err(|e| Error::io(map_file, e))?;
    let md = f.metadata().map_err(|e| Error::io(map_file, e))?;
    state.memfd_seen(
        pid,
        md.dev(),
        md.ino(),
        format!("mapping {:#x}-{:#x} of pid {pid}", m.start, m.end),
        true,
    )?;
    v.memfd = true;
    v.memfd_name = m
        .path
        .strip_prefix("/memfd:")
        .and_then(|n| n.strip_suffix(" (deleted)"))
        .unwrap_or_default()
        .to_string();
    v.memfd_seals = crate::sys::task::get_seals(&f)
        .map_err(|e| Error::sys(pid, format!("{map_file}: F_GET_SEALS"), e))?;
    v.memfd_size = md.len();
    v.memfd_mode = md.mode();
    Ok(())
}

/// `MFD_NOEXEC_SEAL`.
const MFD_NOEXEC_SEAL: u32 = 0x0008;

/// Restore: creates the memfd of mapping `v` in the vessel of `agent`
/// (memfd_create with its name, its size and mode); returns its fd there
/// and cairn's descriptor of it, for the pages.
pub(super) fn create_memfd(agent: &mut dyn Calls, v: &Vma) -> Result<(u64, File)> {
    let pid = agent.pid();
    let mut fl = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    if v.memfd_seals & libc::F_SEAL_EXEC as u32 != 0 {
        fl |= MFD_NOEXEC_SEAL;
    }
    let fd = agent.memfd_create(&v.memfd_name, fl)?;
    let link = format!("/proc/{pid}/fd/{fd}");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&link)
        .map_err(|e| Error::io(&link, e))?;
    f.set_len(v.memfd_size).map_err(|e| Error::io(&link, e))?;
    agent.fchmod(fd, v.memfd_mode & 0o7777)?;
    Ok((fd, f))
}

/// Restore: after the mappings of `mm` are made, the memfds that no
/// other process still has to map get their seals.
pub(super) fn seal_memfds(
    agent: &mut dyn Calls,
    mm: &MmEntry,
    fds: &HashMap<u64, u64>,
    shm: &mut super::vma::ShmObjects,
) -> Result<()> {
    let mut ids: Vec<u64> = mm
        .vmas
        .iter()
        .filter(|v| v.memfd)
        .map(|v| v.shmid)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        let Some(u) = shm.memfd_users.get_mut(&id) else {
            continue;
        };
        u.0 = u.0.saturating_sub(1);
        if u.0 == 0 && u.1 != 0 {
            let fd = fds.get(&id).copied().ok_or_else(|| {
                Error::Restore(format!("pid {}: memfd {id} is not open", agent.pid()))
            })?;
            agent.add_seals(fd, u.1)?;
        }
    }
    Ok(())
}

/// The pages of `runs` (first offset, pages) not in any of the byte
/// ranges `known` (start, end): the parts of a shared object another
/// mapping of it saved already are left out, the rest kept (two mappings
/// of a memfd at different offsets overlap only in part).
pub(super) fn minus_known(runs: Vec<(u64, u64)>, known: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (a, n) in runs {
        let mut cur: Option<(u64, u64)> = None;
        for i in 0..n {
            let p = a + i * PAGE_SIZE;
            if known.iter().any(|&(s, e)| p < e && p + PAGE_SIZE > s) {
                out.extend(cur.take());
            } else {
                match &mut cur {
                    Some((_, k)) => *k += 1,
                    None => cur = Some((p, 1)),
                }
            }
        }
        out.extend(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pages_no_other_mapping_saved_are_kept() {
        let pg = PAGE_SIZE;
        assert_eq!(
            minus_known(vec![(0, 3)], &[(pg, 2 * pg)]),
            vec![(0, 1), (2 * pg, 1)]
        );
        assert_eq!(minus_known(vec![(0, 3)], &[]), vec![(0, 3)]);
        assert_eq!(minus_known(vec![(pg, 1)], &[(0, 3 * pg)]), vec![]);
    }

    #[test]
    fn a_mapping_that_is_not_a_deleted_file_is_refused() {
        let m = MapsEntry {
            start: 0x1000,
            end: 0x2000,
            path: "/nowhere (deleted)".into(),
            ..Default::default()
        };
        // No such process: map_files cannot be read.
        let e = classify_deleted(i32::MAX, &m).unwrap_err().to_string();
        assert!(
            e.contains("0x1000-0x2000") && e.contains("/nowhere (deleted)"),
            "{e}"
        );
    }

    /// The state is the dump's own: a memfd both mapped and held by an
    /// fd is refused whichever is seen first, naming both; another dump
    /// starts with nothing seen.
    #[test]
    fn a_memfd_mapped_and_open_is_refused_within_one_dump() {
        let map = || "mapping 0x1000-0x2000 of pid 5".to_string();
        let mut a = MapFiles::default();
        a.memfd_seen(5, 1, 2, map(), true).unwrap();
        a.memfd_fd(6, 4, 1, 3).unwrap();
        let e = a.memfd_fd(6, 4, 1, 2).unwrap_err().to_string();
        assert!(
            e.contains("pid 6") && e.contains("fd 4 of pid 6 and mapping 0x1000-0x2000 of pid 5"),
            "{e}"
        );
        let mut b = MapFiles::default();
        b.memfd_fd(6, 4, 1, 2).unwrap();
        let e = b.memfd_seen(5, 1, 2, map(), true).unwrap_err().to_string();
        assert!(
            e.contains("mapping 0x1000-0x2000 of pid 5 and fd 4 of pid 6"),
            "{e}"
        );
        MapFiles::default()
            .memfd_seen(5, 1, 2, map(), true)
            .unwrap();
        assert!(b.mapped(1, 2).is_none());
    }
}
