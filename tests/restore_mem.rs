//! Memory: checkpoint/restore cycles of the mem_* and vdso workloads.
mod common;

use common::*;

#[test]
fn helpers_selftest() {
    selftest_helpers();
}

#[test]
fn mem_heap() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("mem_heap", &[]);
}

#[test]
fn mem_stack() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("mem_stack", &[]);
}

#[test]
fn mem_anon_private() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("mem_anon_private", &[]);
}

#[test]
fn mem_anon_shared() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("mem_anon_shared", &[]);
}

#[test]
fn mem_file_private() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("mem_file_private", &[]);
}

#[test]
fn mem_file_shared() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("mem_file_shared", &[]);
}

/// 1 GiB mapping, 3 pages touched: the images must stay small (< 8 MiB,
/// apparent size of all files) and the restore must work.
#[test]
fn mem_sparse() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("mem_sparse", &[]);
    w.dump_ok(&[]);
    w.expect_killed_by_dump();
    let size = dir_size(&w.images);
    assert!(
        size < 8 << 20,
        "the images of a 1 GiB mapping with 3 touched pages take {size} bytes (limit 8 MiB)"
    );
    w.restore_wait(&[]);
}

#[test]
fn mem_brk() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("mem_brk", &[]);
}

#[test]
fn mem_mm_fields() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("mem_mm_fields", &[]);
}

#[test]
fn vdso() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("vdso", &[]);
}
