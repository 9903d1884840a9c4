//! Scheduling attributes of other tasks, by tid: sched_getattr /
//! sched_setattr (policy, priority, nice, SCHED_DEADLINE parameters,
//! reset-on-fork), CPU affinity and I/O priority, and the seccomp filters
//! a tracer can read (PTRACE_SECCOMP_GET_FILTER).

use std::io;

/// `struct sched_attr` (SCHED_ATTR_SIZE_VER1, with the utilization
/// clamps).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SchedAttr {
    pub size: u32,
    pub policy: u32,
    pub flags: u64,
    pub nice: i32,
    pub priority: u32,
    pub runtime: u64,
    pub deadline: u64,
    pub period: u64,
    pub util_min: u32,
    pub util_max: u32,
}

pub const SCHED_DEADLINE: u32 = 6;
pub const SCHED_FLAG_RESET_ON_FORK: u64 = 0x01;

/// sched_getattr(tid).
pub fn get_attr(tid: i32) -> io::Result<SchedAttr> {
    let mut a = SchedAttr::default();
    let size = std::mem::size_of::<SchedAttr>() as u32;
    // SAFETY: `a` is a writable struct sched_attr of `size` bytes that
    // outlives the call; the kernel writes at most `size` bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            tid,
            &mut a as *mut SchedAttr,
            size,
            0,
        )
    };
    super::check(r)?;
    Ok(a)
}

/// sched_setattr(tid, a) (`a.size` is set here).
pub fn set_attr(tid: i32, a: &SchedAttr) -> io::Result<()> {
    let mut a = *a;
    a.size = std::mem::size_of::<SchedAttr>() as u32;
    // SAFETY: `a` is a valid struct sched_attr of `a.size` bytes, only
    // read by the kernel during the call.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, tid, &a as *const SchedAttr, 0) };
    super::check(r).map(drop)
}

/// Bytes of CPU mask handled (8192 CPUs).
const MASK_BYTES: usize = 1024;

/// sched_getaffinity(tid): the mask, trimmed of trailing zero bytes.
pub fn get_affinity(tid: i32) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; MASK_BYTES];
    // SAFETY: `buf` is writable for MASK_BYTES bytes; the raw syscall
    // returns how many it wrote.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_getaffinity,
            tid,
            MASK_BYTES,
            buf.as_mut_ptr(),
        )
    };
    let n = super::check(r)? as usize;
    buf.truncate(n.min(MASK_BYTES));
    while buf.last() == Some(&0) {
        buf.pop();
    }
    Ok(buf)
}

/// sched_setaffinity(tid, mask).
pub fn set_affinity(tid: i32, mask: &[u8]) -> io::Result<()> {
    let mut buf = mask.to_vec();
    // The kernel wants whole longs.
    buf.resize(mask.len().div_ceil(8).max(1) * 8, 0);
    // SAFETY: `buf` is readable for its length, only read during the call.
    let r = unsafe { libc::syscall(libc::SYS_sched_setaffinity, tid, buf.len(), buf.as_ptr()) };
    super::check(r).map(drop)
}

/// The nice value of thread `tid`, whatever its policy (sched_getattr
/// reports it only for the fair ones).
pub fn get_nice(tid: i32) -> io::Result<i32> {
    // SAFETY: integer arguments only; the raw syscall returns 20 - nice.
    let r = unsafe { libc::syscall(libc::SYS_getpriority, libc::PRIO_PROCESS, tid) };
    Ok(20 - super::check(r)? as i32)
}

/// setpriority(PRIO_PROCESS, tid, nice).
pub fn set_nice(tid: i32, nice: i32) -> io::Result<()> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::syscall(libc::SYS_setpriority, libc::PRIO_PROCESS, tid, nice) };
    super::check(r).map(drop)
}

const IOPRIO_WHO_PROCESS: i32 = 1;

/// ioprio_get(IOPRIO_WHO_PROCESS, tid).
pub fn get_ioprio(tid: i32) -> io::Result<u32> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, tid) };
    Ok(super::check(r)? as u32)
}

/// ioprio_set(IOPRIO_WHO_PROCESS, tid, prio).
pub fn set_ioprio(tid: i32, prio: u32) -> io::Result<()> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, tid, prio) };
    super::check(r).map(drop)
}

const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
const PTRACE_SECCOMP_GET_METADATA: libc::c_uint = 0x420d;

/// PTRACE_SECCOMP_GET_FILTER: the classic BPF program (8 bytes per
/// instruction) of filter `index` of the traced, stopped `tid` (0 is the
/// most recent), or None past the last one.
pub fn seccomp_filter(tid: i32, index: u64) -> io::Result<Option<Vec<u8>>> {
    // SAFETY: a NULL buffer asks only for the instruction count.
    let n = unsafe {
        libc::ptrace(
            PTRACE_SECCOMP_GET_FILTER,
            tid,
            index as *mut libc::c_void,
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOENT) {
            return Ok(None);
        }
        return Err(e);
    }
    let mut buf = vec![0u8; n as usize * 8];
    // SAFETY: `buf` holds `n` struct sock_filter (8 bytes each), the count
    // the kernel just reported for this filter, which cannot change while
    // the task is stopped.
    let m = unsafe {
        libc::ptrace(
            PTRACE_SECCOMP_GET_FILTER,
            tid,
            index as *mut libc::c_void,
            buf.as_mut_ptr() as *mut libc::c_void,
        )
    };
    if m < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(m as usize * 8);
    Ok(Some(buf))
}

/// PTRACE_GET_SECCOMP_METADATA: the flags (SECCOMP_FILTER_FLAG_LOG) of
/// filter `index` of `tid`.
pub fn seccomp_flags(tid: i32, index: u64) -> io::Result<u64> {
    let mut md = [index, 0u64];
    // SAFETY: `md` is a struct seccomp_metadata (filter_off, flags) of 16
    // bytes, writable during the call.
    let r = unsafe {
        libc::ptrace(
            PTRACE_SECCOMP_GET_METADATA,
            tid,
            std::mem::size_of_val(&md) as *mut libc::c_void,
            md.as_mut_ptr() as *mut libc::c_void,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(md[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_attributes_read_back() {
        let me = super::super::task::getpid();
        let a = get_attr(me).unwrap();
        set_attr(me, &a).unwrap();
        assert_eq!(get_attr(me).unwrap().policy, a.policy);
        let m = get_affinity(me).unwrap();
        assert!(!m.is_empty());
        set_affinity(me, &m).unwrap();
        assert_eq!(get_affinity(me).unwrap(), m);
        let p = get_ioprio(me).unwrap();
        assert_eq!(get_ioprio(me).unwrap(), p);
    }
}
