//! Terminals (issue 4): pty pairs owned by the tree, and shell jobs
//! (--shell-job) restored into the terminal of the restoring cairn.

mod common;

use common::*;

/// Two pty pairs with termios, window size, packet, exclusive and lock
/// modes, queued bytes both ways, and a child whose controlling terminal
/// is one of them.
#[test]
fn tty_pty() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("tty_pty", &[]);
}

/// Reading a pty's queues at dump time gives them back: the original
/// still finds its bytes after a --leave-running dump.
#[test]
fn tty_pty_leave_running() {
    if skip_unless_root() {
        return;
    }
    leave_running("tty_pty", &[]);
}
