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
