//! System V shared memory segments attached by the dumped tree.
//!
//! Dump records each segment's key, id, size, mode and owner from
//! /proc/sysvipc/shm (its pages go to the pagemap of owner `"sysv:<id>"`,
//! see `kinds::memory`). Restore makes sure a segment with the same id
//! exists before the processes attach it: one that survived the dump (same
//! key and size) is reused, otherwise it is created with its old id through
//! /proc/sys/kernel/shm_next_id. Segments that were marked for removal are
//! marked again once every process has attached them.
//!
//! The key: /proc/sysvipc/shm shows a removed segment (IPC_RMID) with key
//! 0, but its mappings keep the key it was created with in their name
//! (`/SYSV7a001234 (deleted)`). Restore creates such a segment with that
//! key (so its mappings are named as before) and removes it again once
//! attached, which frees the key as IPC_RMID did.

use crate::error::{Error, Result};
use crate::image::proto::{MmEntry, SysvShm, VmaKind};
use crate::procfs;
use crate::sys::task;

const SHM_DEST: u32 = 0o1000;

/// Looks up the segments `ids` (from the VMAs) in /proc/sysvipc/shm.
pub fn dump(ids: impl IntoIterator<Item = u32>) -> Result<Vec<SysvShm>> {
    let all = procfs::read_sysvipc_shm()?;
    let mut out = Vec::new();
    for id in ids {
        let i = all.iter().find(|s| s.shmid == id).ok_or_else(|| {
            Error::parse(
                "/proc/sysvipc/shm",
                format!("segment {id} is attached but not listed"),
            )
        })?;
        let mut s = SysvShm::new();
        s.key = i.key;
        s.shmid = i.shmid;
        s.size = i.size;
        s.mode = i.perms;
        s.uid = i.uid;
        s.gid = i.gid;
        out.push(s);
    }
    Ok(out)
}

/// The key in the name of a System V mapping, `/SYSV%08x (deleted)`.
fn key_of_name(name: &str) -> Option<i32> {
    let hex = name.strip_prefix("/SYSV")?;
    let hex = hex.strip_suffix(" (deleted)").unwrap_or(hex);
    if hex.len() != 8 {
        return None;
    }
    u32::from_str_radix(hex, 16).ok().map(|k| k as i32)
}

/// The key segment `shmid` was created with, from the names of its
/// mappings in `mms` (the same in all; IPC_PRIVATE if none says).
fn created_key<'a>(shmid: u32, mms: impl Iterator<Item = &'a MmEntry>) -> i32 {
    mms.flat_map(|m| m.vmas.iter())
        .filter(|v| v.kind.enum_value() == Ok(VmaKind::VMA_SYSV_SHM) && v.shmid == shmid as u64)
        .find_map(|v| key_of_name(&v.name))
        .unwrap_or(libc::IPC_PRIVATE)
}

/// Makes every segment exist with its old id before the attach. A
/// removed segment gets the key its mappings in `mms` are named with.
pub fn prepare<'a>(segs: &[SysvShm], mms: impl Iterator<Item = &'a MmEntry> + Clone) -> Result<()> {
    for s in segs {
        let id = s.shmid as i32;
        match task::shm_stat(id) {
            Ok((key, size, _, _)) if size == s.size && (key == s.key || s.mode & SHM_DEST != 0) => continue,
            Ok((key, size, _, _)) => {
                return Err(Error::Restore(format!(
                    "System V shm id {id} is taken by another segment (key {key:#x}, {size} bytes; the dump had key {:#x}, {} bytes)",
                    s.key, s.size
                )))
            }
            Err(_) => {}
        }
        let next = "/proc/sys/kernel/shm_next_id";
        std::fs::write(next, format!("{id}")).map_err(|e| Error::io(next, e))?;
        let key = if s.mode & SHM_DEST != 0 {
            created_key(s.shmid, mms.clone())
        } else {
            s.key
        };
        let got = task::shm_create(key, s.size, s.mode);
        let _ = std::fs::write(next, "-1");
        let got = match got {
            Err(e) if key != s.key && e.raw_os_error() == Some(libc::EEXIST) => {
                return Err(Error::Restore(format!(
                    "System V shm segment {id} (removed with IPC_RMID, created with key \
                     {key:#x}): another segment holds that key now, so it cannot come back \
                     under it"
                )))
            }
            got => got,
        };
        let got = got.map_err(|e| {
            Error::Restore(format!(
                "System V shm segment {id} (key {key:#x}): shmget: {e}"
            ))
        })?;
        if got != id {
            let _ = task::shm_remove(got);
            return Err(Error::Restore(format!(
                "System V shm segment {id} came back as {got}"
            )));
        }
        task::shm_set_owner(id, s.uid, s.gid, s.mode)
            .map_err(|e| Error::Restore(format!("System V shm segment {id}: IPC_SET: {e}")))?;
    }
    Ok(())
}

/// After every process attached: segments that were marked for removal
/// at dump time are marked again.
pub fn finish(segs: &[SysvShm]) -> Result<()> {
    for s in segs.iter().filter(|s| s.mode & SHM_DEST != 0) {
        task::shm_remove(s.shmid as i32).map_err(|e| {
            Error::Restore(format!("System V shm segment {}: IPC_RMID: {e}", s.shmid))
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::proto::Vma;

    #[test]
    fn the_key_of_a_removed_segment_is_read_from_its_mapping() {
        assert_eq!(key_of_name("/SYSV7a00beef (deleted)"), Some(0x7a00_beef));
        assert_eq!(key_of_name("/SYSVffffffff (deleted)"), Some(-1));
        assert_eq!(key_of_name("/SYSV00000000 (deleted)"), Some(0));
        assert_eq!(key_of_name("/SYSV7a00 (deleted)"), None);
        assert_eq!(key_of_name("/tmp/x"), None);
        let mut m = MmEntry::new();
        let mut v = Vma::new();
        v.kind = VmaKind::VMA_SYSV_SHM.into();
        v.shmid = 5;
        v.name = "/SYSV12345678 (deleted)".into();
        m.vmas.push(v);
        assert_eq!(created_key(5, [&m].into_iter()), 0x1234_5678);
        assert_eq!(created_key(6, [&m].into_iter()), libc::IPC_PRIVATE);
    }
}
