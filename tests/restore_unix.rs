//! Unix sockets (issue 4): socketpairs, names, listeners and their
//! backlog, queued data, shutdown, options, peers outside the tree. Each
//! workload checks its own sockets after the restore.

mod common;

use common::*;

/// Socketpairs of the three types, data both ways, shutdown, options,
/// one end in a child, epoll on a socket.
#[test]
fn unix_pair() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("unix_pair", &[]);
}

/// A dump with --leave-running reads the queues without consuming them:
/// the original still finds all its data afterwards.
#[test]
fn unix_pair_leave_running() {
    if skip_unless_root() {
        return;
    }
    leave_running("unix_pair", &[]);
}
