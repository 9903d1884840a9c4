//! The kernel-interface layer: every raw system call and every `unsafe`
//! block of cairn lives below this module, each with a `SAFETY:` comment.
//! Everything exported from here is a safe function that returns
//! `std::io::Result`; callers add the pid/fd/address context.
//!
//! The crate roots deny `unsafe_code`; this is the one module that allows it.
#![allow(unsafe_code)]

pub mod abi;
pub mod aio;
pub mod bpf;
pub mod control;
pub mod fdpass;
pub mod fown;
pub mod inject;
pub mod mapread;
pub mod mem;
pub mod net;
pub mod netlink;
pub mod pairpoll;
pub mod peercred;
pub mod pidns;
pub mod pktring;
pub mod poll;
pub mod probe;
pub mod probe_cache;
pub mod procattrs;
pub mod ptrace;
pub mod safefs;
pub mod sched;
pub mod scm;
pub mod sock;
pub mod sockdiag;
pub mod sockshut;
pub mod task;
pub mod time;
pub mod tty;
pub mod uffd;
pub mod unixq;
pub mod vmio;

use std::io;

/// Converts a raw `-1`/errno return into `io::Result`.
pub(crate) fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub const PAGE_SIZE: u64 = 4096;
