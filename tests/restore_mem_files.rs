//! Memory backed by files nobody can open by name any more: mappings of
//! deleted files (saved through /proc/PID/map_files, recreated, mapped
//! again and unlinked), and the key of a removed System V segment; plus
//! the mappings still refused, naming pid, address and reason.
mod common;

use common::*;

/// A deleted /dev/shm file mapped shared twice, a deleted sparse file
/// mapped privately with a page copied on write, a deleted file mapped
/// shared with its fd open; the child shares A and C. After restore the
/// workload checks contents, sizes, the maps names "(deleted)", one file
/// behind every mapping and fd, and writes seen by the other process.
#[test]
fn mem_deleted_map() {
    if skip_unless_root() {
        return;
    }
    tree_checkpoint_restore("mem_deleted_map", &[], TreeOpts::default());
}

/// System V segments with a key: a live one (shmget(key) finds it after
/// restore) and one removed with IPC_RMID, whose mappings are still named
/// after its key (`/SYSVkey (deleted)`) after restore.
#[test]
fn mem_sysv_key() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("mem_sysv_key", &[]);
}
