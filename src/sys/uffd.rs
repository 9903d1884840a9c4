//! Dirty-page tracking interfaces: userfaultfd in write-protect async mode,
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
    let mut r = UffdioRegister {
        range: UffdioRange {
            start,
            len: end - start,
        },
        mode: UFFDIO_REGISTER_MODE_WP,
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
