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
