//! Pure, size-bounded parsers for /proc files, plus thin readers.
//!
//! Every `parse_*` function takes the file's text (or bytes) and never
//! panics: malformed input yields `Error::Parse`. Every `read_*` function
//! reads the file with [`read_proc_bytes`], which refuses files larger than
//! [`MAX_PROC_FILE`] bytes, and reports read failures as `Error::Io` naming
//! the path. Parse errors from readers name the path they came from.

#![forbid(unsafe_code)]

pub mod auxv;
pub mod fdinfo;
pub mod maps;
pub mod misc;
pub mod pagemap;
pub mod stat;
pub mod status;

pub use auxv::{parse_auxv, read_auxv};
pub use fdinfo::{parse_anon_link, parse_fdinfo, read_fdinfo, read_fds, FdInfo};
pub use maps::{parse_maps, parse_smaps, read_maps, read_smaps, MapsEntry};
pub use misc::{
    boot_id, descendants, list_tasks, lock_line_pid, read_children, read_comm, read_link,
    read_personality, read_proc_bytes, read_proc_locks, read_proc_string, MAX_PROC_FILE,
};
pub use misc::{read_sysvipc_shm, read_timers, PosixTimerInfo, SysvShmInfo};
pub use pagemap::{parse_pagemap, read_pagemap, PageFlags};
pub use stat::{dying, parse_stat, read_stat, read_task_stat, Stat};
pub use status::{parse_status, read_status, read_task_status, Status};

use crate::error::Error;
use std::path::Path;

/// Replaces the `what` of a parse error with the path it was read from, so
/// the message names the file (`parse /proc/12/maps: line 3: ...`).
pub(crate) fn at_path(err: Error, path: &Path) -> Error {
    match err {
        Error::Parse { what, msg } => Error::Parse {
            what: path.display().to_string(),
            msg: format!("{what}: {msg}"),
        },
        other => other,
    }
}

/// A short, printable excerpt of input for error messages.
pub(crate) fn excerpt(s: &str) -> String {
    const MAX: usize = 80;
    let mut out: String = s.chars().take(MAX).collect();
    if s.chars().nth(MAX).is_some() {
        out.push_str("...");
    }
    format!("{out:?}")
}

/// Parses an unsigned integer made only of digits of `radix` (no sign, no
/// prefix, not empty). Returns `None` on overflow.
pub(crate) fn parse_u64_radix(s: &str, radix: u32) -> Option<u64> {
    if s.is_empty() || !s.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(s, radix).ok()
}

pub(crate) fn parse_u64(s: &str) -> Option<u64> {
    parse_u64_radix(s, 10)
}

pub(crate) fn parse_u32(s: &str) -> Option<u32> {
    parse_u64(s).and_then(|v| u32::try_from(v).ok())
}

pub(crate) fn parse_hex_u64(s: &str) -> Option<u64> {
    parse_u64_radix(s, 16)
}

pub(crate) fn parse_hex_u32(s: &str) -> Option<u32> {
    parse_hex_u64(s).and_then(|v| u32::try_from(v).ok())
}

pub(crate) fn parse_oct_u32(s: &str) -> Option<u32> {
    parse_u64_radix(s, 8).and_then(|v| u32::try_from(v).ok())
}

/// Parses a decimal signed integer: optional '-', then digits.
pub(crate) fn parse_i64(s: &str) -> Option<i64> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Parse with the sign attached so i64::MIN is accepted.
    if neg {
        s.parse::<i64>().ok()
    } else {
        digits.parse::<i64>().ok()
    }
}

pub(crate) fn parse_i32(s: &str) -> Option<i32> {
    parse_i64(s).and_then(|v| i32::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_u64("0"), Some(0));
        assert_eq!(parse_u64("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64("18446744073709551616"), None);
        assert_eq!(parse_u64("+1"), None);
        assert_eq!(parse_u64(""), None);
        assert_eq!(parse_u64("1 "), None);
        assert_eq!(parse_u32("4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32("4294967296"), None);
        assert_eq!(parse_hex_u64("ffffffffffffffff"), Some(u64::MAX));
        assert_eq!(parse_hex_u64("1ffffffffffffffff"), None);
        assert_eq!(parse_hex_u64("0x1"), None);
        assert_eq!(parse_hex_u64("DeadBeef"), Some(0xdead_beef));
        assert_eq!(parse_hex_u32("100000000"), None);
        assert_eq!(parse_oct_u32("0100002"), Some(0o100002));
        assert_eq!(parse_oct_u32("8"), None);
        assert_eq!(parse_i64("-1"), Some(-1));
        assert_eq!(parse_i64("-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64("9223372036854775808"), None);
        assert_eq!(parse_i64("-"), None);
        assert_eq!(parse_i64("--1"), None);
        assert_eq!(parse_i64("+1"), None);
        assert_eq!(parse_i32("-2147483648"), Some(i32::MIN));
        assert_eq!(parse_i32("2147483648"), None);
        // Non-ASCII digits are rejected, not panicked on.
        assert_eq!(parse_u64("١٢"), None);
        assert_eq!(parse_i64("-١"), None);
    }

    #[test]
    fn excerpt_is_bounded_and_char_safe() {
        let long = "é".repeat(200);
        let e = excerpt(&long);
        assert!(e.ends_with("...\""));
        assert!(e.chars().count() < 100);
        assert_eq!(excerpt("ab"), "\"ab\"");
    }

    /// Every reader on every process of the system: vanished processes and
    /// permission problems are I/O errors, but no real file may fail to parse.
    #[test]
    fn live_all_processes() {
        let pids = misc::list_numeric_dir(Path::new("/proc")).unwrap();
        assert!(!pids.is_empty());
        let ok = |r: crate::error::Result<()>| match r {
            Ok(()) | Err(Error::Io { .. }) => {}
            Err(e) => panic!("{e}"),
        };
        for pid in pids {
            ok(read_stat(pid).map(drop));
            ok(read_status(pid).map(drop));
            ok(read_maps(pid).map(drop));
            ok(read_smaps(pid).map(drop));
            ok(read_auxv(pid).map(drop));
            ok(read_personality(pid).map(drop));
            ok((|| {
                for tid in list_tasks(pid)? {
                    read_task_stat(pid, tid)?;
                    read_task_status(pid, tid)?;
                    read_comm(pid, tid)?;
                    read_children(pid, tid)?;
                }
                Ok(())
            })());
            ok((|| {
                for (fd, _target) in read_fds(pid)? {
                    match read_fdinfo(pid, fd) {
                        Ok(_) | Err(Error::Io { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            })());
        }
    }

    #[test]
    fn at_path_renames_parse_errors_only() {
        let e = at_path(
            Error::parse("maps", "line 1: bad"),
            Path::new("/proc/1/maps"),
        );
        assert_eq!(e.to_string(), "parse /proc/1/maps: maps: line 1: bad");
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "x");
        let e = at_path(Error::io("/a", io), Path::new("/b"));
        assert!(matches!(e, Error::Io { .. }));
    }
}
