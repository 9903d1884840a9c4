//! One module per resource kind; each dumps and restores its kind. The
//! orchestrators in [`crate::dump`] and [`crate::restore`] only sequence
//! them (the split CRIU uses: seize, dump, restore by phase; pipes, files,
//! memory ... by kind).
//!
//! Fd kinds implement [`fd::FdKind`] and are listed once, in
//! [`fd::KINDS`]; [`files`] is the engine that runs them (fd tables,
//! shared descriptions, restore order).

pub mod anonfd;
pub mod cgroup;
pub mod contents;
pub mod exe;
pub mod external;
pub mod fd;
pub mod fifo;
pub mod files;
pub mod incr;
pub mod inet;
pub mod locks;
pub mod memory;
pub mod netlink;
pub mod packet;
pub mod pipe;
pub mod regular;
pub mod sockopts;
pub mod sysv;
pub mod task;
pub mod tcp;
pub mod tty;
pub mod unix;
pub mod volatile;
pub mod watched;
