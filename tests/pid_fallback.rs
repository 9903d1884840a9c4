//! The pid fallback for kernels without clone3 set_tid, in a test binary of
//! its own: it moves the system-wide last pid (ns_last_pid) back, so the
//! next pids handed out system-wide are ones that other tests running at
//! the same time may be about to restore. Test binaries run one after the
//! other, so nothing else of the suite restores while this one runs.
mod common;

use common::*;

/// The root vessel is forked right after writing pid-1 to
/// /proc/sys/kernel/ns_last_pid.
#[test]
fn restore_via_ns_last_pid() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("mem_heap", &[]);
    w.dump_ok(&[]);
    w.expect_killed_by_dump();
    w.restore_wait(&["--pid-restore", "ns_last_pid"]);
}
