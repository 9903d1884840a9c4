//! Resources shared between processes as a whole (not by threads): the fd
//! table and the fs info of a child made with clone(CLONE_FILES | CLONE_FS).

mod common;

use common::*;

/// After restore, an fd the child opens appears in the parent, and the
/// child's chdir and umask are the parent's too.
#[test]
fn tree_clone_shared() {
    if skip_unless_root() {
        return;
    }
    tree_checkpoint_restore("tree_clone_shared", &[], TreeOpts::default());
}

/// A POSIX shared memory object in /dev/shm mapped by parent and child:
/// one copy after restore, contents kept.
#[test]
fn tree_posix_shm() {
    if skip_unless_root() {
        return;
    }
    tree_checkpoint_restore("tree_posix_shm", &[], TreeOpts::default());
}

/// System V shared memory: a live segment (reused after the dump) and one
/// marked for removal (destroyed when the tree is killed, recreated with
/// its old id from the image), both attached by parent and child.
#[test]
fn tree_sysv_shm() {
    if skip_unless_root() {
        return;
    }
    tree_checkpoint_restore("tree_sysv_shm", &[], TreeOpts::default());
}
