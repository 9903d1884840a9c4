//! cairn: checkpoint and restore of Linux process trees.
//!
//! Layout (see docs/ARCHITECTURE.md), roughly bottom up:
//! - [`sys`]: the only place with `unsafe` (`unsafe_code` is denied for
//!   the rest of the crate): raw syscalls, ptrace, remote syscall
//!   injection, BPF loading.
//! - [`procfs`]: pure parsers for /proc files; [`inventory`]: a tree's
//!   processes, threads, VMAs and fds from BPF iterators or /proc.
//! - [`image`]: the image directory, container format, page store and
//!   the validators of decoded images.
//! - [`remote`]: syscalls run inside a stopped task; [`kinds`]: one
//!   module per resource kind, each dumping and restoring it;
//!   [`netlock`], [`track`]: network locking and dirty-page tracking.
//! - [`dump`], [`restore`]: the orchestrators that sequence the kinds,
//!   with [`guard`] making a killed cairn harmless; they take plain
//!   [`options`] structs.
//! - [`cmd`]: the commands, on top: `cairn`'s command line and dispatch,
//!   the front-end-only commands (show, verify, check, demo, prune,
//!   inventory) and `chkpnt`/`resume`, the same binary under other names
//!   (`src/main.rs` only calls into it). The library does not import it (only
//!   the fuzzer drives `show` and `verify`); [`json`] holds the JSON
//!   helper that the commands and the inventory share.
//! - `fuzz` and `image::mutate` (the in-tree fuzzer and the image
//!   mutator of the hostile-input tests) exist only with the `fuzz`
//!   feature, which the tests turn on; a default build has neither.
#![deny(unsafe_code)]

pub mod cmd;
pub mod control;
pub mod dump;
pub mod error;
#[cfg(feature = "fuzz")]
pub mod fuzz;
pub mod guard;
pub mod image;
pub mod inventory;
pub mod job;
pub mod json;
pub mod kinds;
#[macro_use]
pub mod log;
pub mod migrate;
pub mod netlock;
pub mod options;
pub mod oracle;
pub mod pair;
pub mod procfs;
pub mod progress;
pub mod remote;
pub mod restore;
pub mod run;
pub mod show;
pub mod stats;
pub mod sys;
pub mod track;

pub use error::{Error, Result};
