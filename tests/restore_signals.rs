//! Signals: dispositions, pending signals, the blocked mask, sigaltstack.
mod common;

use common::*;

#[test]
fn sig_actions() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("sig_actions", &[]);
}

#[test]
fn sig_pending() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("sig_pending", &[]);
}

#[test]
fn sig_blocked() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("sig_blocked", &[]);
}

#[test]
fn sig_altstack() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("sig_altstack", &[]);
}

/// SIGTRAP with a handler, ignored, or blocked and pending, in a process
/// with threads: a restore's injected calls stop at an int3, whose
/// SIGTRAP must change none of them (issue 15).
#[test]
fn sig_trap() {
    if skip_unless_root() {
        return;
    }
    for mode in ["handler", "ignore", "pending"] {
        checkpoint_restore("sig_trap", &["--mode", mode]);
    }
}
