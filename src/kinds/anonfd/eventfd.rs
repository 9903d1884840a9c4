//! eventfd: a 64-bit counter. Dump reads the counter and the semaphore
//! flag from fdinfo; restore creates it with eventfd2 and adds the
//! counter with a write (it can exceed eventfd2's 32-bit initial value).
//!
//! Kernels before 6.2 print no `eventfd-semaphore:` line. There the mode
//! is found on cairn's copy of the description (pidfd_getfd) by a read
//! and a write that leave the counter as it was (`probe_semaphore`):
//! a semaphore read takes 1, a plain one the whole counter. The tree is
//! frozen, so none of its threads waits on the eventfd meanwhile; the
//! wake-ups go to pollers (an edge-triggered epoll watch of the tree sees
//! one more edge, with the counter as it was) and to whatever outside the
//! tree shares the eventfd.

use std::path::Path;

use std::io::{Read, Write};

use super::{bad, extra, nonblock};
use crate::error::{Error, Result};
use crate::image::proto::{file_desc, EventFd};
use crate::image::validate::bad as invalid;
use crate::kinds::fd::{not_mine, DumpCx, FdKind, FdRef, RestoreCx};
use crate::procfs::FdInfo;
use crate::remote::Calls;
use crate::sys::uffd;

const TARGET: &str = "anon_inode:[eventfd]";

pub struct Eventfd;

impl FdKind for Eventfd {
    fn name(&self) -> &'static str {
        "eventfd"
    }

    fn precheck(&self, f: &FdRef) -> Result<bool> {
        Ok(f.target == TARGET)
    }

    fn describe(&self, f: &FdRef, _cx: &mut DumpCx) -> Result<Option<file_desc::Kind>> {
        if f.target != TARGET {
            return Ok(None);
        }
        let info = f.info()?;
        let count = extra(info, "eventfd-count")
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .ok_or_else(|| bad(f.pid, f.fd, "eventfd-count"))?;
        let mut e = EventFd::new();
        e.count = count;
        e.semaphore = match semaphore_line(info) {
            Some(s) => s,
            None => {
                let sys = |what: &str, e| Error::sys(f.pid, format!("fd {}: {what}", f.fd), e);
                let pfd = uffd::pidfd_open(f.pid).map_err(|e| sys("pidfd_open", e))?;
                let copy = uffd::pidfd_getfd(&pfd, f.fd).map_err(|e| sys("pidfd_getfd", e))?;
                probe_semaphore(&std::fs::File::from(copy), count)
                    .map_err(|e| sys("finding the eventfd's semaphore mode", e))?
            }
        };
        e.flags = f.flags();
        Ok(Some(file_desc::Kind::Eventfd(e)))
    }

    fn validate(&self, k: &file_desc::Kind, path: &Path, obj: &str) -> Result<()> {
        let file_desc::Kind::Eventfd(e) = k else {
            return Err(not_mine(self));
        };
        if e.count == u64::MAX {
            return Err(invalid(
                path,
                obj,
                "count",
                "u64::MAX is not an eventfd count",
            ));
        }
        Ok(())
    }

    fn open(&self, k: &file_desc::Kind, calls: &mut dyn Calls, _cx: &mut RestoreCx) -> Result<u64> {
        let file_desc::Kind::Eventfd(e) = k else {
            return Err(not_mine(self));
        };
        let mut fl = libc::EFD_CLOEXEC | nonblock(e.flags);
        if e.semaphore {
            fl |= libc::EFD_SEMAPHORE;
        }
        let fd = calls.eventfd2(fl)?;
        if e.count > 0 {
            calls.write_at(0, fd, &e.count.to_ne_bytes(), "eventfd")?;
        }
        Ok(fd)
    }
}

/// The semaphore flag of fdinfo's `eventfd-semaphore:` line, or None when
/// the kernel prints none (before 6.2).
pub(crate) fn semaphore_line(info: &FdInfo) -> Option<bool> {
    extra(info, "eventfd-semaphore").map(|v| v.trim() == "1")
}

/// Whether eventfd `f` (whose counter is `count`) is a semaphore, found
/// by reading it and writing back what was read, so that the counter ends
/// as it was: with a counter of 2 or more a semaphore read gives 1 and a
/// plain read the counter; below 2 the counter is first raised to 2.
/// Neither the reads (counter above 0) nor the writes (counter far from
/// the maximum) block.
pub(crate) fn probe_semaphore(mut f: &std::fs::File, count: u64) -> std::io::Result<bool> {
    let rd = |f: &mut &std::fs::File| -> std::io::Result<u64> {
        let mut b = [0u8; 8];
        f.read_exact(&mut b)?;
        Ok(u64::from_ne_bytes(b))
    };
    let wr = |f: &mut &std::fs::File, v: u64| f.write_all(&v.to_ne_bytes());
    if count >= 2 {
        let r = rd(&mut f)?;
        wr(&mut f, r)?;
        return Ok(r == 1);
    }
    wr(&mut f, 2 - count)?;
    let r = rd(&mut f)?;
    if r == 1 {
        // Semaphore: the counter is 1 now.
        if count == 0 {
            rd(&mut f)?;
        }
        Ok(true)
    } else {
        // Plain: the counter is 0 now.
        if count > 0 {
            wr(&mut f, count)?;
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procfs::parse_fdinfo;

    /// The counter as fdinfo shows it.
    fn count_of(f: &std::fs::File) -> u64 {
        use std::os::fd::AsRawFd;
        let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", f.as_raw_fd())).unwrap();
        let info = parse_fdinfo(&text).unwrap();
        u64::from_str_radix(extra(&info, "eventfd-count").unwrap().trim(), 16).unwrap()
    }

    #[test]
    fn fdinfo_of_both_kernels() {
        // 6.1: no semaphore line.
        let old = parse_fdinfo(
            "pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t1057\neventfd-count:                3\neventfd-id: 4\n",
        )
        .unwrap();
        assert_eq!(semaphore_line(&old), None);
        // 6.2 on.
        for (line, want) in [("1", true), ("0", false)] {
            let new = parse_fdinfo(&format!(
                "pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t1057\neventfd-count:                3\neventfd-id: 4\neventfd-semaphore: {line}\n"
            ))
            .unwrap();
            assert_eq!(semaphore_line(&new), Some(want));
        }
    }

    #[test]
    fn probing_finds_the_mode_and_keeps_the_counter() {
        for sem in [false, true] {
            for (count, nonblock) in [
                (0u64, true),
                (1, false),
                (2, false),
                (7, true),
                (1 << 40, false),
            ] {
                let mut fl = libc::EFD_CLOEXEC;
                if sem {
                    fl |= libc::EFD_SEMAPHORE;
                }
                if nonblock {
                    fl |= libc::EFD_NONBLOCK;
                }
                let f = std::fs::File::from(crate::sys::fown::eventfd(0, fl).unwrap());
                if count > 0 {
                    (&f).write_all(&count.to_ne_bytes()).unwrap();
                }
                assert_eq!(probe_semaphore(&f, count).unwrap(), sem, "count {count}");
                assert_eq!(count_of(&f), count, "semaphore {sem}");
            }
        }
    }
}
