//! cairn: checkpoint and restore of Linux process trees.
//!
//! Layout (see docs/ARCHITECTURE.md):
//! - [`sys`]: the only place with `unsafe`: raw syscalls, ptrace, remote
//!   syscall injection.
//! - [`procfs`]: pure parsers for /proc files.
//! - [`image`]: the image directory, container format and page store.
//! - [`kinds`]: one module per resource kind, each dumping and restoring it.
//! - [`dump`], [`restore`]: the orchestrators that sequence the kinds.

pub mod check;
pub mod chkpnt;
pub mod cli;
pub mod demo;
pub mod dump;
pub mod error;
pub mod fuzz;
pub mod guard;
pub mod image;
pub mod inventory;
pub mod kinds;
#[macro_use]
pub mod log;
pub mod netlock;
pub mod procfs;
pub mod prune;
pub mod remote;
pub mod restore;
pub mod show;
pub mod sys;
pub mod track;
pub mod verify;

pub use error::{Error, Result};
