//! Dirty-page tracking interfaces: userfaultfd in write-protect async mode
//! (and in missing mode, for post-copy restores: at the end),
//! the PAGEMAP_SCAN ioctl of /proc/PID/pagemap, soft-dirty's clear_refs,
//! and the pidfd calls that move a userfaultfd out of a target.
//!
//! A userfaultfd belongs to the address space (mm) of the process that
//! created it, and every ioctl on it acts on that mm whoever calls it: cairn
//! has the target create one (an injected syscall), takes it with
//! pidfd_getfd and drives it from outside (verified by the uffd-wp probe
//! and the incremental tests).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::check;

pub const UFFD_API: u64 = 0xaa;
pub const UFFD_USER_MODE_ONLY: u64 = 1;
pub const UFFD_FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;
pub const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
pub const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

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

const fn iowr(ty: u64, nr: u64, size: usize) -> libc::c_ulong {
    ((3u64 << 30) | ((size as u64) << 16) | (ty << 8) | nr) as libc::c_ulong
}
const fn ior(ty: u64, nr: u64, size: usize) -> libc::c_ulong {
    ((2u64 << 30) | ((size as u64) << 16) | (ty << 8) | nr) as libc::c_ulong
}

const UFFDIO_API: libc::c_ulong = iowr(0xaa, 0x3f, std::mem::size_of::<UffdioApi>());
const UFFDIO_REGISTER: libc::c_ulong = iowr(0xaa, 0x00, std::mem::size_of::<UffdioRegister>());
const UFFDIO_UNREGISTER: libc::c_ulong = ior(0xaa, 0x01, std::mem::size_of::<UffdioRange>());

/// Flags for a userfaultfd created in the target: close-on-exec,
/// non-blocking, and user-mode faults only (allowed without privilege;
/// write-protect faults in async mode are resolved by the kernel whether
/// the write came from user or kernel mode, so nothing is lost).
pub const UFFD_CREATE_FLAGS: u64 =
    libc::O_CLOEXEC as u64 | libc::O_NONBLOCK as u64 | UFFD_USER_MODE_ONLY;

/// A userfaultfd in the calling process (for the probe).
pub fn userfaultfd_self() -> io::Result<OwnedFd> {
    // SAFETY: userfaultfd takes only flags and returns a new fd or -1.
    let fd = check(unsafe { libc::syscall(libc::SYS_userfaultfd, UFFD_CREATE_FLAGS) })?;
    // SAFETY: the fd was just returned by the kernel and is owned by nobody.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// UFFDIO_API: asks for `features`; returns those the kernel granted. Fails
/// if the kernel lacks one of them.
pub fn api(uffd: &impl AsRawFd, features: u64) -> io::Result<u64> {
    let mut a = UffdioApi {
        api: UFFD_API,
        features,
        ioctls: 0,
    };
    // SAFETY: `a` is a valid, writable uffdio_api for the call.
    let r = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_API, &mut a as *mut UffdioApi) };
    check(r as libc::c_long)?;
    Ok(a.features)
}

/// UFFDIO_REGISTER in write-protect mode for [start, end) of the
/// userfaultfd's mm. Registering a range again with the same userfaultfd
/// changes nothing; a range registered with another one fails (EBUSY).
pub fn register_wp(uffd: &impl AsRawFd, start: u64, end: u64) -> io::Result<()> {
    register(uffd, start, end, UFFDIO_REGISTER_MODE_WP)
}

/// UFFDIO_REGISTER of [start, end) of the userfaultfd's mm in `mode`.
fn register(uffd: &impl AsRawFd, start: u64, end: u64, mode: u64) -> io::Result<()> {
    let mut r = UffdioRegister {
        range: UffdioRange {
            start,
            len: end - start,
        },
        mode,
        ioctls: 0,
    };
    // SAFETY: `r` is a valid uffdio_register; the kernel only changes VMA
    // flags of the userfaultfd's own mm.
    check(unsafe {
        libc::ioctl(
            uffd.as_raw_fd(),
            UFFDIO_REGISTER,
            &mut r as *mut UffdioRegister,
        )
    } as libc::c_long)
    .map(drop)
}

/// UFFDIO_UNREGISTER of [start, end): drops the registration and the
/// write-protection of the range.
pub fn unregister(uffd: &impl AsRawFd, start: u64, end: u64) -> io::Result<()> {
    let mut r = UffdioRange {
        start,
        len: end - start,
    };
    // SAFETY: `r` is a valid uffdio_range for the call.
    check(unsafe {
        libc::ioctl(
            uffd.as_raw_fd(),
            UFFDIO_UNREGISTER,
            &mut r as *mut UffdioRange,
        )
    } as libc::c_long)
    .map(drop)
}

/// struct pm_scan_arg (linux/fs.h).
#[repr(C)]
#[derive(Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// struct page_region.
#[repr(C)]
#[derive(Default, Clone, Copy, Debug)]
pub struct PageRegion {
    pub start: u64,
    pub end: u64,
    pub categories: u64,
}

const PAGEMAP_SCAN: libc::c_ulong = iowr(b'f' as u64, 16, std::mem::size_of::<PmScanArg>());
pub const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
pub const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;
pub const PAGE_IS_WPALLOWED: u64 = 1 << 0;
pub const PAGE_IS_WRITTEN: u64 = 1 << 1;
pub const PAGE_IS_FILE: u64 = 1 << 2;
pub const PAGE_IS_PRESENT: u64 = 1 << 3;
pub const PAGE_IS_SWAPPED: u64 = 1 << 4;
pub const PAGE_IS_PFNZERO: u64 = 1 << 5;
/// A guard region (MADV_GUARD_INSTALL marker; Linux 6.14 and later, an
/// older kernel refuses the bit with EINVAL).
pub const PAGE_IS_GUARD: u64 = 1 << 8;
/// Regions per PAGEMAP_SCAN call (the kernel bounds one call's work).
pub const SCAN_VEC_LEN: usize = 512;

/// What one PAGEMAP_SCAN call looks for (fields of struct pm_scan_arg).
#[derive(Debug, Clone, Copy)]
pub struct ScanQuery {
    /// PM_SCAN_* flags, e.g. PM_SCAN_WP_MATCHING to write-protect what is
    /// reported.
    pub flags: u64,
    /// Categories a page must all have.
    pub mask: u64,
    /// Categories a page must have at least one of (0: no such condition).
    pub anyof: u64,
    /// Categories reported.
    pub ret: u64,
}

/// One PAGEMAP_SCAN call on an open /proc/PID/pagemap over [start, end).
/// Returns how many regions it wrote to `out` and where the walk stopped
/// (end, unless `out` filled up first).
pub fn pagemap_scan(
    pagemap: &File,
    start: u64,
    end: u64,
    q: ScanQuery,
    out: &mut [PageRegion],
) -> io::Result<(usize, u64)> {
    let mut arg = PmScanArg {
        size: std::mem::size_of::<PmScanArg>() as u64,
        flags: q.flags,
        start,
        end,
        vec: out.as_mut_ptr() as u64,
        vec_len: out.len() as u64,
        category_mask: q.mask,
        category_anyof_mask: q.anyof,
        return_mask: q.ret,
        ..Default::default()
    };
    // SAFETY: `arg` is a valid pm_scan_arg whose `vec` points at
    // `vec_len` writable page_regions that outlive the call; the kernel
    // reads page tables of the file's mm and, with PM_SCAN_WP_MATCHING,
    // sets write-protect bits there (never in our memory).
    let n = check(unsafe {
        libc::ioctl(
            pagemap.as_raw_fd(),
            PAGEMAP_SCAN,
            &mut arg as *mut PmScanArg,
        )
    } as libc::c_long)?;
    Ok((n as usize, arg.walk_end))
}

/// pidfd_open(pid).
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes integers and returns a new fd or -1.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: the fd was just returned by the kernel and is owned by nobody.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// pidfd_getfd: a duplicate, in this process, of fd `fd` of the process.
pub fn pidfd_getfd(pidfd: &impl AsRawFd, fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_getfd takes integers and returns a new fd or -1.
    let r = check(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) })?;
    // SAFETY: the fd was just returned by the kernel and is owned by nobody.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// Waits until the process behind `pidfd` exits, at most `ms`
/// milliseconds. Returns whether it exited.
pub fn pidfd_wait(pidfd: &impl AsRawFd, ms: i32) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd, count 1.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r >= 0 {
            return Ok(r > 0);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Writes `what` to /proc/PID/clear_refs ("4" clears soft-dirty bits).
pub fn clear_refs(pid: i32, what: &str) -> io::Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/clear_refs"))?
        .write_all(what.as_bytes())
}

/// pidfd_send_signal(pidfd, sig): never hits a recycled pid.
pub fn pidfd_kill(pidfd: &impl AsRawFd, sig: i32) -> io::Result<()> {
    // SAFETY: pidfd_send_signal with a NULL siginfo and integer arguments.
    check(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    })
    .map(drop)
}

// bgsnap: a userfaultfd in synchronous write-protect mode, for background
// snapshots (crate::kinds::memory::bgsnap). A writer of a protected page
// blocks until cairn has saved it and lifts the protection.

/// Flags for the snapshot's userfaultfd: close-on-exec and non-blocking,
/// without UFFD_USER_MODE_ONLY: a write by the kernel on the target's
/// behalf (read(2) into a protected buffer) must wait for cairn too, not
/// fail with EFAULT. The target needs CAP_SYS_PTRACE for that, or
/// vm.unprivileged_userfaultfd = 1.
pub const UFFD_SYNC_CREATE_FLAGS: u64 = libc::O_CLOEXEC as u64 | libc::O_NONBLOCK as u64;
pub const UFFD_FEATURE_EVENT_REMAP: u64 = 1 << 2;
pub const UFFD_FEATURE_EVENT_REMOVE: u64 = 1 << 3;
pub const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
pub const UFFD_EVENT_FORK: u8 = 0x13;
pub const UFFD_EVENT_REMAP: u8 = 0x14;
pub const UFFD_EVENT_REMOVE: u8 = 0x15;
pub const UFFD_EVENT_UNMAP: u8 = 0x16;
pub const UFFD_PAGEFAULT_FLAG_WP: u64 = 1 << 1;
const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;

#[repr(C)]
struct UffdioWriteprotect {
    range: UffdioRange,
    mode: u64,
}

const UFFDIO_WRITEPROTECT: libc::c_ulong =
    iowr(0xaa, 0x06, std::mem::size_of::<UffdioWriteprotect>());

/// struct uffd_msg: the event and its three u64 arguments (pagefault:
/// flags, address; remap: from, to, len; remove/unmap: start, end).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct UffdMsg {
    pub event: u8,
    reserved1: u8,
    reserved2: u16,
    reserved3: u32,
    pub arg: [u64; 3],
}

/// UFFDIO_WRITEPROTECT of [start, end): with `protect`, writes to the
/// range fault to the userfaultfd; without, the protection is lifted and
/// the threads waiting on a fault there are woken.
pub fn writeprotect(uffd: &impl AsRawFd, start: u64, end: u64, protect: bool) -> io::Result<()> {
    let mut w = UffdioWriteprotect {
        range: UffdioRange {
            start,
            len: end - start,
        },
        mode: if protect {
            UFFDIO_WRITEPROTECT_MODE_WP
        } else {
            0
        },
    };
    loop {
        // SAFETY: `w` is a valid uffdio_writeprotect; the kernel changes
        // page-table bits of the userfaultfd's own mm only.
        let r = unsafe {
            libc::ioctl(
                uffd.as_raw_fd(),
                UFFDIO_WRITEPROTECT,
                &mut w as *mut UffdioWriteprotect,
            )
        };
        match check(r as libc::c_long) {
            // EAGAIN: the mm changed under the call (a concurrent
            // mremap/munmap); try again.
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
            r => return r.map(drop),
        }
    }
}

/// Reads the pending messages of a non-blocking userfaultfd into `out`;
/// 0 when there is none.
pub fn read_msgs(uffd: &impl AsRawFd, out: &mut [UffdMsg]) -> io::Result<usize> {
    let sz = std::mem::size_of::<UffdMsg>();
    // SAFETY: `out` is writable for `out.len() * sz` bytes; the kernel
    // writes whole uffd_msg structs there.
    let r = unsafe {
        libc::read(
            uffd.as_raw_fd(),
            out.as_mut_ptr().cast(),
            std::mem::size_of_val(out),
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) => Ok(0),
            _ => Err(e),
        };
    }
    Ok(r as usize / sz)
}

/// Waits up to `ms` for one of `fds` to be readable; returns which are.
pub fn poll_readable(fds: &[i32], ms: i32) -> io::Result<Vec<bool>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `p` holds `p.len()` valid pollfds.
    let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(e);
    }
    Ok(p.iter().map(|x| x.revents != 0).collect())
}

/// A userfaultfd in the calling process without UFFD_USER_MODE_ONLY (for
/// the synchronous write-protect probe).
pub fn userfaultfd_self_sync() -> io::Result<OwnedFd> {
    // SAFETY: userfaultfd takes only flags and returns a new fd or -1.
    let fd = check(unsafe { libc::syscall(libc::SYS_userfaultfd, UFFD_SYNC_CREATE_FLAGS) })?;
    // SAFETY: the fd was just returned by the kernel and is owned by nobody.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

// missing mode (post-copy): ranges registered in a restored process's mm
// (through a userfaultfd that process created) and filled from outside
// with UFFDIO_COPY / UFFDIO_ZEROPAGE as their pages arrive or fault
// (crate::kinds::memory::lazy, crate::migrate::postcopy).

pub const UFFD_FEATURE_EVENT_FORK: u64 = 1 << 1;
pub const UFFD_FEATURE_EVENT_UNMAP: u64 = 1 << 6;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1 << 0;

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

const UFFDIO_COPY: libc::c_ulong = iowr(0xaa, 0x03, std::mem::size_of::<UffdioCopy>());
const UFFDIO_ZEROPAGE: libc::c_ulong = iowr(0xaa, 0x04, std::mem::size_of::<UffdioZeropage>());

/// Registers [start, end) of the userfaultfd's mm in MISSING mode: a
/// touch of a page not present there waits for UFFDIO_COPY/ZEROPAGE.
pub fn register_missing(uffd: &impl AsRawFd, start: u64, end: u64) -> io::Result<()> {
    register(uffd, start, end, UFFDIO_REGISTER_MODE_MISSING)
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
