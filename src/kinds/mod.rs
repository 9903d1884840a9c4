//! One module per resource kind; each dumps and restores its kind. The
//! orchestrators in [`crate::dump`] and [`crate::restore`] only sequence
//! them (the split CRIU uses: seize, dump, restore by phase; pipes, files,
//! memory ... by kind).

pub mod anonfd;
pub mod contents;
pub mod exe;
pub mod files;
pub mod incr;
pub mod inet;
pub mod memory;
pub mod sockopts;
pub mod sysv;
pub mod task;
pub mod tcp;
pub mod tty;
pub mod unix;
