//! Memory backed by files nobody can open by name any more: mappings of
//! deleted files (saved through /proc/PID/map_files, recreated, mapped
//! again and unlinked), and the key of a removed System V segment; plus
//! the mappings still refused, naming pid, address and reason.
mod common;

use common::refuse::*;
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

/// Memfds mapped MAP_SHARED with their fds closed: one made before a
/// fork (seals, odd size, mode, mapped twice, shared with the child) and
/// one the child made. The workload checks contents, size, mode, seals,
/// the maps names and that both processes share one memfd.
#[test]
fn mem_memfd_map() {
    if skip_unless_root() {
        return;
    }
    tree_checkpoint_restore("mem_memfd_map", &[], TreeOpts::default());
}

/// `cairn dump` of mem_files_refuse --kind `kind` must fail with
/// "unsupported" naming the pid, the address the workload printed and
/// every word of `names`, before freezing; the workload goes on unharmed.
fn refused(kind: &str, names: &[&str]) {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("mem_files_refuse", &["--kind", kind]);
    let addr = logged_addr(&w);
    let mut words = vec![addr.as_str()];
    words.extend_from_slice(names);
    expect_refused(&mut w, &[], &words).assert_before_freeze();
}

#[test]
fn mem_refuse_memfd_private() {
    refused("memfd-private", &["/memfd:cairn-refuse", "MAP_PRIVATE"]);
}

#[test]
fn mem_refuse_memfd_open() {
    refused(
        "memfd-open",
        &["/memfd:cairn-refuse", "both mapped and open"],
    );
}

#[test]
fn mem_refuse_memfd_sealed() {
    refused(
        "memfd-sealed",
        &["/memfd:cairn-refuse", "F_SEAL_FUTURE_WRITE"],
    );
}

#[test]
fn mem_refuse_memfd_partial() {
    refused(
        "memfd-partial",
        &["/memfd:cairn-refuse", "maps only its first 4096"],
    );
}
