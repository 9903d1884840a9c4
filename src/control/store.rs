//! What the control server keeps in the job's directory: `DIR/control/`
//! (mode 0700, the caller's), with
//!
//! - `data`: the newest nonrestart data, in two slots written in turn
//!   (one `pwrite` each: a 32-byte header `CRNDATA1`, sequence number,
//!   length, CRC32 of those and the data; then the data). The slot with
//!   the highest sequence number whose CRC holds is the newest, so a
//!   write cut short leaves the one before. Created exclusively
//!   (`O_EXCL|O_NOFOLLOW`, 0600); reopened only when it is a regular file
//!   of the caller with one link.
//! - `restart-ckpt-N`: "PID ID", the restart checkpoint `ckpt-N` was
//!   taken for (request ID of pid PID), created exclusively and synced
//!   after the checkpoint completed. A restore of `ckpt-N` answers that
//!   request 1.

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::proto::DATA_MAX;
use super::Pending;
use crate::error::{Error, IoContext, Result};
use crate::sys::safefs;
use crate::warn;

const MAGIC: &[u8; 8] = b"CRNDATA1";
const SLOT_HEADER: usize = 32;
/// Bytes between the two slots' starts (page aligned).
const SLOT: u64 = (SLOT_HEADER + DATA_MAX).next_multiple_of(4096) as u64;
const DATA: &str = "data";
const RESTART_PREFIX: &str = "restart-";

/// The store of one job directory. `control/` and `data` are made when
/// first needed: a job that does not use libcairn leaves nothing.
pub struct Store {
    job: OwnedFd,
    dir: Option<OwnedFd>,
    path: PathBuf,
    data: Option<OwnedFd>,
    /// (sequence number, bytes) of the newest data.
    latest: Option<(u64, Vec<u8>)>,
    slot: Vec<u8>,
}

fn crc(seq: u64, data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(&(data.len() as u32).to_le_bytes());
    h.update(data);
    h.finalize()
}

/// The (sequence number, data) of slot bytes `b`, if valid.
fn parse_slot(b: &[u8]) -> Option<(u64, Vec<u8>)> {
    if b.len() < SLOT_HEADER || &b[..8] != MAGIC {
        return None;
    }
    let seq = u64::from_le_bytes(b[8..16].try_into().ok()?);
    let len = u32::from_le_bytes(b[16..20].try_into().ok()?) as usize;
    let sum = u32::from_le_bytes(b[20..24].try_into().ok()?);
    if len > DATA_MAX || b.len() < SLOT_HEADER + len {
        return None;
    }
    let data = &b[SLOT_HEADER..SLOT_HEADER + len];
    (crc(seq, data) == sum).then(|| (seq, data.to_vec()))
}

/// The bytes of a slot.
fn make_slot(out: &mut Vec<u8>, seq: u64, data: &[u8]) {
    out.clear();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc(seq, data).to_le_bytes());
    out.extend_from_slice(&[0u8; 8]);
    out.extend_from_slice(data);
}

/// Checks that `st` is a file of type `t` of ours that nobody else can
/// change.
fn check_ours(st: &rustix::fs::Stat, t: FileType, path: &Path) -> Result<()> {
    let me = rustix::process::geteuid().as_raw();
    let ok = safefs::file_type(st) == t
        && st.st_uid == me
        && st.st_mode & 0o077 == 0
        && (t == FileType::Directory || st.st_nlink == 1);
    if !ok {
        return Err(Error::Usage(format!(
            "{}: not a private {} of uid {me} (a {}, owner {}, mode {:o}, {} links): refused",
            path.display(),
            safefs::type_name(t),
            safefs::type_name(safefs::file_type(st)),
            st.st_uid,
            st.st_mode & 0o7777,
            st.st_nlink
        )));
    }
    Ok(())
}

impl Store {
    /// Opens `control/` in the job directory `job` (at `path`) if it is
    /// there.
    pub fn open(job: impl AsFd, path: &Path) -> Result<Store> {
        let job = job.as_fd();
        let path = path.join("control");
        let dir = match safefs::lstatat(job, OsStr::new("control")) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(&path, e)),
            Ok(_) => {
                let fd = safefs::openat_nofollow(
                    job,
                    OsStr::new("control"),
                    OFlags::RDONLY | OFlags::DIRECTORY,
                    0,
                )
                .at(&path)?;
                let st = rustix::fs::fstat(&fd).map_err(|e| Error::io(&path, e.into()))?;
                check_ours(&st, FileType::Directory, &path)?;
                Some(fd)
            }
        };
        let dpath = path.join(DATA);
        let data = match &dir {
            None => None,
            Some(d) => match safefs::openat_nofollow(d, OsStr::new(DATA), OFlags::RDWR, 0) {
                Ok(fd) => {
                    let st = rustix::fs::fstat(&fd).map_err(|e| Error::io(&dpath, e.into()))?;
                    check_ours(&st, FileType::RegularFile, &dpath)?;
                    Some(fd)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(Error::io(&dpath, e)),
            },
        };
        let mut s = Store {
            job: job.try_clone_to_owned().map_err(|e| Error::io(&path, e))?,
            dir,
            path,
            data,
            latest: None,
            slot: Vec::with_capacity(SLOT as usize),
        };
        s.latest = s.read_latest()?;
        Ok(s)
    }

    /// The device and inode of the job directory: they name its
    /// listening socket.
    pub(super) fn job_id(&self) -> Result<(u64, u64)> {
        let st = rustix::fs::fstat(&self.job).map_err(|e| Error::io(&self.path, e.into()))?;
        Ok((st.st_dev, st.st_ino))
    }

    /// `control/`, made (0700) if missing.
    pub(super) fn dir(&mut self) -> Result<&OwnedFd> {
        if self.dir.is_none() {
            let fd = safefs::mkdir_private(&self.job, OsStr::new("control")).at(&self.path)?;
            safefs::sync(&self.job).at(&self.path)?;
            self.dir = Some(fd);
        }
        Ok(self.dir.as_ref().expect("made above"))
    }

    /// The data file, made (exclusively, 0600) if missing.
    fn data(&mut self) -> Result<&OwnedFd> {
        if self.data.is_none() {
            let dpath = self.path.join(DATA);
            let dir = self.dir()?;
            let fd = safefs::openat_nofollow(
                dir,
                OsStr::new(DATA),
                OFlags::RDWR | OFlags::CREATE | OFlags::EXCL,
                0o600,
            )
            .at(&dpath)?;
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o600))
                .map_err(|e| Error::io(&dpath, e.into()))?;
            safefs::sync(dir).at(&self.path)?;
            self.data = Some(fd);
        }
        Ok(self.data.as_ref().expect("made above"))
    }

    /// The newest valid slot of the data file.
    fn read_latest(&self) -> Result<Option<(u64, Vec<u8>)>> {
        let dpath = self.path.join(DATA);
        let Some(data) = &self.data else {
            return Ok(None);
        };
        let mut best: Option<(u64, Vec<u8>)> = None;
        for i in 0..2u64 {
            let mut b = vec![0u8; SLOT_HEADER + DATA_MAX];
            let mut got = 0;
            while got < b.len() {
                match rustix::io::pread(data, &mut b[got..], i * SLOT + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err(Error::io(&dpath, e.into())),
                }
            }
            b.truncate(got);
            if let Some((seq, d)) = parse_slot(&b) {
                if best.as_ref().is_none_or(|(s, _)| seq > *s) {
                    best = Some((seq, d));
                }
            }
        }
        Ok(best)
    }

    /// The newest data.
    pub fn latest(&self) -> Option<&[u8]> {
        self.latest.as_ref().map(|(_, d)| d.as_slice())
    }

    /// Keeps `data` as the newest (written, not yet synced: [`Store::sync`]).
    pub fn put(&mut self, data: &[u8]) -> std::io::Result<()> {
        if data.len() > DATA_MAX {
            return Err(std::io::Error::from_raw_os_error(libc::E2BIG));
        }
        let seq = self.latest.as_ref().map_or(1, |(s, _)| s + 1);
        let file = match self.data() {
            Ok(f) => f.try_clone()?,
            Err(e) => return Err(std::io::Error::other(e.to_string())),
        };
        let mut slot = std::mem::take(&mut self.slot);
        make_slot(&mut slot, seq, data);
        let off = (seq % 2) * SLOT;
        let mut done = 0;
        let r = loop {
            if done == slot.len() {
                break Ok(());
            }
            match rustix::io::pwrite(&file, &slot[done..], off + done as u64) {
                Ok(n) => done += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => break Err(std::io::Error::from(e)),
            }
        };
        self.slot = slot;
        r?;
        match &mut self.latest {
            Some((s, d)) => {
                *s = seq;
                d.clear();
                d.extend_from_slice(data);
            }
            None => self.latest = Some((seq, data.to_vec())),
        }
        Ok(())
    }

    /// fdatasync of the data file.
    pub fn sync(&self) -> Result<()> {
        match &self.data {
            Some(d) => {
                rustix::fs::fdatasync(d).map_err(|e| Error::io(self.path.join(DATA), e.into()))
            }
            None => Ok(()),
        }
    }

    /// Records that checkpoint `ckpt` (a `ckpt-N` name) is the restart
    /// checkpoint of request `p`; forgets those of checkpoints that are
    /// gone (`exists` says which are there).
    pub fn mark_restart(
        &mut self,
        ckpt: &str,
        p: Pending,
        exists: impl Fn(&str) -> bool,
    ) -> Result<()> {
        let name = format!("{RESTART_PREFIX}{ckpt}");
        let path = self.path.join(&name);
        let cpath = self.path.clone();
        let dir = self.dir()?;
        let _ = rustix::fs::unlinkat(dir, name.as_str(), AtFlags::empty());
        let mut f = safefs::create_excl(dir, OsStr::new(&name), 0o600).at(&path)?;
        std::io::Write::write_all(&mut f, format!("{} {}\n", p.pid, p.id).as_bytes()).at(&path)?;
        f.sync_all().at(&path)?;
        for (n, _) in safefs::list(dir).unwrap_or_default() {
            let Some(ck) = n.to_str().and_then(|n| n.strip_prefix(RESTART_PREFIX)) else {
                continue;
            };
            if !exists(ck) {
                let _ = rustix::fs::unlinkat(dir, n.as_os_str(), AtFlags::empty());
            }
        }
        safefs::sync(dir).at(&cpath)?;
        Ok(())
    }

    /// The request checkpoint `ckpt` was taken for, if it is a restart
    /// checkpoint.
    pub fn restart_of(&self, ckpt: &str) -> Option<Pending> {
        let name = format!("{RESTART_PREFIX}{ckpt}");
        let (mut f, st) = safefs::open_regular(self.dir.as_ref()?, &name).ok()?;
        if check_ours(&st, FileType::RegularFile, &self.path.join(&name)).is_err() {
            warn!("{}: not ours, ignored", self.path.join(&name).display());
            return None;
        }
        let mut s = String::new();
        f.by_ref().take(64).read_to_string(&mut s).ok()?;
        let mut it = s.split_whitespace();
        let pid = it.next()?.parse().ok()?;
        let id = it.next()?.parse().ok()?;
        Some(Pending { pid, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("cairn-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    #[test]
    fn newest_data_survives_reopen_and_a_torn_write() {
        let t = tmp("data");
        let job = safefs::open_dir(&t).unwrap();
        let mut s = Store::open(&job, &t).unwrap();
        assert_eq!(s.latest(), None);
        assert!(!t.join("control").exists(), "made before it is needed");
        s.put(b"one").unwrap();
        s.put(&vec![7u8; DATA_MAX]).unwrap();
        s.put(b"three").unwrap();
        assert!(s.put(&vec![0u8; DATA_MAX + 1]).is_err());
        s.sync().unwrap();
        drop(s);
        let s = Store::open(&job, &t).unwrap();
        assert_eq!(s.latest(), Some(&b"three"[..]));
        // A torn write of the next slot (seq 4: slot 0) leaves "three".
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(t.join("control/data"))
            .unwrap();
        let mut b = Vec::new();
        make_slot(&mut b, 4, b"four");
        b[SLOT_HEADER] ^= 1;
        std::os::unix::fs::FileExt::write_all_at(&f, &b, 0).unwrap();
        drop(s);
        let mut s = Store::open(&job, &t).unwrap();
        assert_eq!(s.latest(), Some(&b"three"[..]));
        let p = Pending { pid: 5, id: 9 };
        s.mark_restart("ckpt-000002", p, |_| true).unwrap();
        assert_eq!(s.restart_of("ckpt-000002"), Some(p));
        assert_eq!(s.restart_of("ckpt-000003"), None);
        s.mark_restart("ckpt-000003", p, |c| c == "ckpt-000003")
            .unwrap();
        assert_eq!(s.restart_of("ckpt-000002"), None);
        std::fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn a_control_directory_of_others_is_refused() {
        let t = tmp("perm");
        std::fs::create_dir(t.join("control")).unwrap();
        std::fs::set_permissions(
            t.join("control"),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let job = safefs::open_dir(&t).unwrap();
        let e = Store::open(&job, &t).err().unwrap().to_string();
        assert!(e.contains("control") && e.contains("777"), "{e}");
        std::fs::remove_dir_all(&t).unwrap();
    }
}
