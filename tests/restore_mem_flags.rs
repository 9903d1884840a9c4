//! Memory, exactness: VMA flags (mlock, MLOCK_ONFAULT, madvise flags,
//! guard regions), System V segments of odd sizes, and the mappings cairn
//! refuses at dump (naming pid, address and reason) instead of restoring
//! them differently.
mod common;

use common::refuse::*;
use common::*;

/// Every flag mem_vmflags sets comes back (the workload compares each
/// area's smaps VmFlags and Locked lines, contents, and the flags in
/// practice after a fork).
#[test]
fn mem_vmflags() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("mem_vmflags", &[]);
}

/// The same without a guard region (which the kernels of CI before 6.13
/// lack anyway): the madvise and mlock flags alone.
#[test]
fn mem_vmflags_no_guard() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("mem_vmflags", &["--no-guard"]);
}

/// A 56-byte and a (3 pages + 100 bytes) System V segment: dumped,
/// recreated with their exact sizes, contents and sharing.
#[test]
fn mem_sysv_odd() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("mem_sysv_odd", &[]);
}

/// `cairn dump` of mem_refuse --kind `kind` must fail with "unsupported"
/// naming the pid, the address the workload printed and every word of
/// `names`, before freezing; the workload goes on unharmed.
fn refused(kind: &str, names: &[&str]) {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("mem_refuse", &["--kind", kind]);
    let log = w.log_text();
    if log.contains("unsupported-kernel") {
        let why = format!("mem_refuse --kind {kind}: the kernel lacks the call");
        // Protection keys need the CPU's PKU: a machine without it cannot
        // run this test at all (not a gap of the kernel or of cairn).
        let pku = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| {
            c.lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|f| f == "pku"))
        });
        if kind == "pkey" && !pku {
            note_expected_skip(&format!(
                "{why}: this CPU has no protection keys (no pku flag in /proc/cpuinfo)"
            ));
        } else {
            note_skip(&why);
        }
        w.terminate_original_expect_pass();
        return;
    }
    let addr = logged_addr(&w);
    let mut words = vec![addr.as_str()];
    words.extend_from_slice(names);
    expect_refused(&mut w, &[], &words).assert_before_freeze();
}

#[test]
fn mem_refuse_sealed() {
    refused("sealed", &["\"sl\"", "mseal"]);
}

/// mlockall(MCL_FUTURE): mappings made after the restore are locked too.
#[test]
fn mem_mlockall_future() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("mem_mlockall", &[]);
}

/// mlockall(MCL_FUTURE | MCL_ONFAULT).
#[test]
fn mem_mlockall_future_onfault() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("mem_mlockall", &["--onfault"]);
}

#[test]
fn mem_refuse_pkey() {
    refused("pkey", &["protection key"]);
}
