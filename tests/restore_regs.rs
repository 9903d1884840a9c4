//! CPU state and interrupted system calls: registers, sleeping syscalls, rseq.
mod common;

use common::*;

#[test]
fn regs_xsave() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("regs_xsave", &[]);
}

/// The same with only the legacy SSE registers in use.
#[test]
fn regs_xsave_sse_only() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("regs_xsave", &["--sse-only"]);
}

#[test]
fn sleep_nanosleep() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("sleep_nanosleep", &[]);
}

#[test]
fn sleep_read() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("sleep_read", &[]);
}

#[test]
fn sleep_sigsuspend() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("sleep_sigsuspend", &[]);
}

#[test]
fn rseq() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("rseq", &[]);
}

/// A thread's own rseq area, not glibc's: restored where
/// PTRACE_GET_RSEQ_CONFIGURATION (Linux 5.13) tells it is; before 5.13 a
/// dump cannot find it and must refuse, naming that feature, and leave
/// the workload running.
#[test]
fn rseq_own_area() {
    if skip_unless_root() {
        return;
    }
    if cairn::sys::probe::features().ptrace_get_rseq_conf.available {
        checkpoint_restore("rseq", &["--own"]);
        return;
    }
    let mut w = Workload::start("rseq", &["--own"]);
    let out = w.dump(&[]);
    let text = describe(&out);
    assert!(!out.status.success(), "the dump succeeded: {text}");
    assert!(
        text.contains("PTRACE_GET_RSEQ_CONFIGURATION") && text.contains("5.13"),
        "the refusal does not name the kernel feature: {text}"
    );
    // Still running as before, its own area still registered.
    w.terminate_original_expect_pass();
}
