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

/// sched_getaffinity(tid) (0: the calling thread): the mask, trimmed of trailing zero bytes.
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

/// sched_setaffinity(tid, mask) (0: the calling thread).
pub fn set_affinity(tid: i32, mask: &[u8]) -> io::Result<()> {
    let mut buf = mask.to_vec();
    // The kernel wants whole longs.
    buf.resize(mask.len().div_ceil(8).max(1) * 8, 0);
    // SAFETY: `buf` is readable for its length, only read during the call.
    let r = unsafe { libc::syscall(libc::SYS_sched_setaffinity, tid, buf.len(), buf.as_ptr()) };
    super::check(r).map(drop)
}

/// The CPU the calling thread runs on (getcpu).
pub fn current_cpu() -> io::Result<usize> {
    let mut cpu: libc::c_uint = 0;
    // SAFETY: `cpu` is a writable c_uint that outlives the call; the node
    // and cache pointers are NULL, which getcpu allows.
    let r = unsafe {
        libc::syscall(
            libc::SYS_getcpu,
            &mut cpu as *mut libc::c_uint,
            std::ptr::null_mut::<libc::c_uint>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    super::check(r)?;
    Ok(cpu as usize)
}

thread_local! {
    /// The calling thread's CPU mask before [`pin_here`] pinned it.
    static UNPINNED: std::cell::RefCell<Option<Vec<u8>>> = const { std::cell::RefCell::new(None) };
}

/// The calling thread pinned to one CPU by [`pin_here`]; dropping it
/// gives the thread its mask back.
pub struct Pinned {
    mask: Vec<u8>,
    pub cpu: usize,
    /// Dropped on the thread it pins (tid 0: the calling thread).
    _here: std::marker::PhantomData<*const ()>,
}

/// Pins the calling thread to the CPU it runs on, so that the tasks it
/// forks (which inherit the mask) and it take turns on one CPU: a ptrace
/// stop and the tracer's answer are then a switch on that CPU instead of
/// a wake-up of another one (an inter-processor interrupt, a halted vCPU
/// woken). Threads it spawns meanwhile take their mask back with
/// [`unpin_self`], and [`unpinned`] answers what the tasks would have
/// inherited.
pub fn pin_here() -> io::Result<Pinned> {
    let mask = get_affinity(0)?;
    let cpu = current_cpu()?;
    let mut one = vec![0u8; cpu / 8 + 1];
    one[cpu / 8] = 1 << (cpu % 8);
    set_affinity(0, &one)?;
    UNPINNED.with(|u| *u.borrow_mut() = Some(mask.clone()));
    Ok(Pinned {
        mask,
        cpu,
        _here: std::marker::PhantomData,
    })
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let _ = set_affinity(0, &self.mask);
        UNPINNED.with(|u| *u.borrow_mut() = None);
    }
}

/// The calling thread's mask before [`pin_here`], if it is pinned.
pub fn unpinned() -> Option<Vec<u8>> {
    UNPINNED.with(|u| u.borrow().clone())
}

/// Gives the calling thread the mask `unpinned` (from [`unpinned`] in the
/// thread that spawned it), if any.
pub fn unpin_self(unpinned: Option<&[u8]>) {
    if let Some(m) = unpinned {
        let _ = set_affinity(0, m);
    }
}

/// How many threads can run at once: `available_parallelism`, counted
/// on the mask before [`pin_here`] where the calling thread is pinned.
pub fn parallelism() -> usize {
    match unpinned() {
        Some(m) => (m.iter().map(|b| b.count_ones() as usize).sum::<usize>()).max(1),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
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

    /// A thread pinned by `pin_here` runs on one CPU, its spawned threads
    /// get the old mask back with `unpin_self`, and the drop restores it.
    #[test]
    fn pin_and_unpin() {
        std::thread::spawn(|| {
            let before = get_affinity(0).unwrap();
            assert_eq!(unpinned(), None);
            let pin = pin_here().unwrap();
            let one = get_affinity(0).unwrap();
            assert_eq!(one.iter().map(|b| b.count_ones()).sum::<u32>(), 1);
            assert_eq!(one[pin.cpu / 8], 1 << (pin.cpu % 8));
            assert_eq!(unpinned().as_deref(), Some(before.as_slice()));
            let ones: usize = before.iter().map(|b| b.count_ones() as usize).sum();
            assert_eq!(parallelism(), ones);
            let u = unpinned();
            let child = std::thread::spawn(move || {
                let inherited = get_affinity(0).unwrap();
                unpin_self(u.as_deref());
                (inherited, get_affinity(0).unwrap())
            });
            let (inherited, after) = child.join().unwrap();
            assert_eq!(inherited, one);
            assert_eq!(after, before);
            drop(pin);
            assert_eq!(get_affinity(0).unwrap(), before);
            assert_eq!(unpinned(), None);
        })
        .join()
        .unwrap();
    }

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
