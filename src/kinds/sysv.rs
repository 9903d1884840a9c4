//! System V shared memory segments attached by the dumped tree.
//!
//! Dump records each segment's key, id, size, mode and owner from
//! /proc/sysvipc/shm (its pages go to the pagemap of owner `"sysv:<id>"`,
//! see `kinds::memory`). Restore makes sure a segment with the same id
//! exists before the processes attach it: one that survived the dump (same
//! key and size) is reused, otherwise it is created with its old id through
//! /proc/sys/kernel/shm_next_id. Segments that were marked for removal are
//! marked again once every process has attached them.

use crate::error::{Error, Result};
use crate::image::proto::SysvShm;
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

/// Makes every segment exist with its old id before the attach.
pub fn prepare(segs: &[SysvShm]) -> Result<()> {
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
            libc::IPC_PRIVATE
        } else {
            s.key
        };
        let got = task::shm_create(key, s.size, s.mode);
        let _ = std::fs::write(next, "-1");
        let got = got.map_err(|e| {
            Error::Restore(format!(
                "System V shm segment {id} (key {:#x}): shmget: {e}",
                s.key
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
