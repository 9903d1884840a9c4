//! Mappings of deleted files (a `/dev/shm` segment MPICH or UCX unlinked
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

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::image::proto::VmaKind;
use crate::procfs::MapsEntry;

/// The deleted files mapped by the tree being dumped, by (device, inode):
/// one descriptor of each, opened through map_files while the tree is
/// frozen, read by [`crate::kinds::contents::dump`].
static MAPPED: Mutex<Option<HashMap<(u64, u64), File>>> = Mutex::new(None);

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

/// Keeps a descriptor of the deleted file mapped at `map_file` (device
/// and inode as in `md`) for the contents dump. Opened through map_files:
/// the same inode the process maps, however it was renamed or unlinked.
pub(super) fn remember(map_file: &str, md: &std::fs::Metadata) -> Result<()> {
    let mut g = MAPPED.lock().unwrap_or_else(|e| e.into_inner());
    let all = g.get_or_insert_with(HashMap::new);
    if all.contains_key(&(md.dev(), md.ino())) {
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
    all.insert((md.dev(), md.ino()), f);
    Ok(())
}

/// The descriptors [`remember`] kept, handed over once (the next dump
/// starts empty).
pub fn take_mapped() -> HashMap<(u64, u64), File> {
    let mut g = MAPPED.lock().unwrap_or_else(|e| e.into_inner());
    g.take().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
