//! userfaultfd in MISSING mode, for post-copy (lazy) restores
//! (`crate::kinds::memory::lazy`): ranges are registered in a restored
//! process's mm (through a userfaultfd that process created) and filled
//! from outside with UFFDIO_COPY / UFFDIO_ZEROPAGE as their pages arrive
//! or fault. The shared definitions (uffd_msg, UFFDIO_API, poll) are in
//! [`super::uffd`].

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::check;

pub const UFFD_FEATURE_EVENT_FORK: u64 = 1 << 1;
pub const UFFD_FEATURE_EVENT_REMAP: u64 = 1 << 2;
pub const UFFD_FEATURE_EVENT_REMOVE: u64 = 1 << 3;
pub const UFFD_FEATURE_EVENT_UNMAP: u64 = 1 << 6;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1 << 0;

#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

#[repr(C)]
struct UffdioZeropage {
    range: UffdioRange,
    mode: u64,
    zeropage: i64,
}

const fn iowr(nr: u64, size: usize) -> libc::c_ulong {
    ((3u64 << 30) | ((size as u64) << 16) | (0xaa << 8) | nr) as libc::c_ulong
}

const UFFDIO_REGISTER: libc::c_ulong = iowr(0x00, std::mem::size_of::<UffdioRegister>());
const UFFDIO_COPY: libc::c_ulong = iowr(0x03, std::mem::size_of::<UffdioCopy>());
const UFFDIO_ZEROPAGE: libc::c_ulong = iowr(0x04, std::mem::size_of::<UffdioZeropage>());

/// Registers [start, end) of the userfaultfd's mm in MISSING mode: a
/// touch of a page not present there waits for UFFDIO_COPY/ZEROPAGE.
pub fn register_missing(uffd: &impl AsRawFd, start: u64, end: u64) -> io::Result<()> {
    let mut r = UffdioRegister {
        range: UffdioRange {
            start,
            len: end - start,
        },
        mode: UFFDIO_REGISTER_MODE_MISSING,
        ioctls: 0,
    };
    // SAFETY: `r` is a valid uffdio_register; the kernel acts on the
    // userfaultfd's own mm only.
    let ret = unsafe {
        libc::ioctl(
            uffd.as_raw_fd(),
            UFFDIO_REGISTER,
            &mut r as *mut UffdioRegister,
        )
    };
    check(ret as libc::c_long).map(drop)
}

/// What became of a fill.
#[derive(Debug, PartialEq, Eq)]
pub enum Filled {
    /// Every page is there now (some may have been already: EEXIST).
    Done,
    /// The mm is changing (a fork, mremap or munmap event waits to be
    /// read): read the events, then try again.
    Again,
}

/// UFFDIO_COPY of `src` (whole pages) to `dst` in the userfaultfd's mm,
/// waking the threads waiting there. Pages already present are left as
/// they are (EEXIST: filled before, or dropped and re-faulted).
pub fn copy(uffd: &impl AsRawFd, dst: u64, src: &[u8]) -> io::Result<Filled> {
    let page = super::PAGE_SIZE;
    let mut done = 0u64;
    let len = src.len() as u64;
    while done < len {
        let mut c = UffdioCopy {
            dst: dst + done,
            src: src.as_ptr() as u64 + done,
            len: len - done,
            mode: 0,
            copy: 0,
        };
        // SAFETY: `c` is a valid uffdio_copy; `src` is readable for
        // `len` bytes in this process; the kernel writes only into the
        // userfaultfd's mm, at pages registered in it.
        let r = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_COPY, &mut c as *mut UffdioCopy) };
        if c.copy > 0 {
            done += c.copy as u64;
        }
        if r == 0 {
            if c.copy <= 0 {
                done = len;
            }
            continue;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) if c.copy > 0 => continue,
            Some(libc::EAGAIN) => return Ok(Filled::Again),
            // This page is present: skip it.
            Some(libc::EEXIST) => done = (done / page + 1) * page,
            _ => return Err(e),
        }
    }
    Ok(Filled::Done)
}

/// UFFDIO_ZEROPAGE of [start, start + len): pages that were never
/// dumped (zero) in a registered range.
pub fn zeropage(uffd: &impl AsRawFd, start: u64, len: u64) -> io::Result<Filled> {
    let mut z = UffdioZeropage {
        range: UffdioRange { start, len },
        mode: 0,
        zeropage: 0,
    };
    // SAFETY: `z` is a valid uffdio_zeropage; the kernel maps the zero
    // page into the userfaultfd's own mm only.
    let r = unsafe {
        libc::ioctl(
            uffd.as_raw_fd(),
            UFFDIO_ZEROPAGE,
            &mut z as *mut UffdioZeropage,
        )
    };
    if r == 0 {
        return Ok(Filled::Done);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) => Ok(Filled::Again),
        Some(libc::EEXIST) => Ok(Filled::Done),
        _ => Err(e),
    }
}

/// The userfaultfd a fork event installed in this process (its number
/// is the event's first argument): owned by the caller from now on.
pub fn take_forked(fd: u64) -> io::Result<OwnedFd> {
    let fd = i32::try_from(fd as u32).map_err(|_| io::Error::other("bad fd in fork event"))?;
    // The fd must be a userfaultfd the kernel just installed: check that
    // it is open before owning it.
    // SAFETY: fcntl(F_GETFD) only queries the descriptor.
    check(unsafe { libc::fcntl(fd, libc::F_GETFD) } as libc::c_long)?;
    // SAFETY: the kernel installed `fd` for the reader of the fork event
    // (this process) and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
