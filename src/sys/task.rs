//! Process-level syscalls: creating tasks with a chosen pid, comparing
//! kernel objects, limits, signals and pipes.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::check;

use super::abi::CloneArgs;

/// Body of a freshly created vessel: die with the parent, become
/// dumpable if asked (see `restore::Vessels`), then sleep in pause() until
/// the parent seizes it. Only raw syscalls: the parent may have been
/// multi-threaded, so no locks may be touched here.
fn vessel_body(parent: i32, dumpable: bool) -> ! {
    // SAFETY: raw syscalls without pointers; this process is a fresh copy
    // that only waits to be driven by its tracer.
    unsafe {
        libc::syscall(
            libc::SYS_prctl,
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL,
            0,
            0,
            0,
        );
        if libc::syscall(libc::SYS_getppid) as i32 != parent {
            libc::syscall(libc::SYS_exit_group, 127);
        }
        if dumpable && libc::syscall(libc::SYS_prctl, libc::PR_SET_DUMPABLE, 1, 0, 0, 0) != 0 {
            libc::syscall(libc::SYS_exit_group, 126);
        }
        loop {
            libc::syscall(libc::SYS_pause);
        }
    }
}

/// Creates a child process ("vessel") with exactly `pid` (clone3 set_tid;
/// 0: any pid) that waits in pause() to be seized, made dumpable first if
/// `dumpable`. Returns its pid.
pub fn spawn_vessel_clone3(pid: i32, dumpable: bool) -> io::Result<i32> {
    let parent = getpid();
    let tid: libc::pid_t = pid;
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: if pid > 0 {
            &tid as *const libc::pid_t as u64
        } else {
            0
        },
        set_tid_size: u64::from(pid > 0),
        ..Default::default()
    };
    // SAFETY: clone3 without CLONE_VM creates a copy of this process; the
    // child runs only `vessel_body`, which never returns and touches no
    // shared state. `args` and `tid` outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r == 0 {
        vessel_body(parent, dumpable);
    }
    check(r).map(|p| p as i32)
}

/// Creates a vessel with `pid` through /proc/sys/kernel/ns_last_pid (for
/// kernels without clone3 set_tid). Racy against other forks; the caller
/// checks the resulting pid.
pub fn spawn_vessel_last_pid(pid: i32, dumpable: bool) -> io::Result<i32> {
    let parent = getpid();
    std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", pid - 1))?;
    // SAFETY: fork in the child runs only `vessel_body`, which never returns.
    let r = unsafe { libc::fork() };
    if r == 0 {
        vessel_body(parent, dumpable);
    }
    check(r as libc::c_long).map(|p| p as i32)
}

/// Plain fork. In the child, only the caller's code runs; the caller must
/// be single-threaded when it calls this.
pub enum Fork {
    Parent(i32),
    Child,
}

pub fn fork() -> io::Result<Fork> {
    // SAFETY: the caller guarantees the process is single-threaded, so the
    // child inherits no locked state.
    let r = unsafe { libc::fork() };
    match check(r as libc::c_long)? {
        0 => Ok(Fork::Child),
        p => Ok(Fork::Parent(p as i32)),
    }
}

const KCMP_FILE: libc::c_long = 0;
const KCMP_FILES: libc::c_long = 2;
const KCMP_FS: libc::c_long = 3;

/// What two processes may share as a whole.
#[derive(Clone, Copy)]
pub enum Shared {
    /// The fd table (CLONE_FILES).
    Files,
    /// cwd, root and umask (CLONE_FS).
    Fs,
}

/// kcmp(KCMP_FILES / KCMP_FS): do two processes share that object?
pub fn kcmp_shared(pid1: i32, pid2: i32, what: Shared) -> io::Result<bool> {
    let t = match what {
        Shared::Files => KCMP_FILES,
        Shared::Fs => KCMP_FS,
    };
    // SAFETY: kcmp takes only integers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid1,
            pid2,
            t,
            0 as libc::c_long,
            0 as libc::c_long,
        )
    };
    check(r).map(|v| v == 0)
}

/// kcmp(KCMP_FILE): do two fds (possibly in two processes) refer to the same
/// open file description? Returns the kernel's ordering (0 = same).
pub fn kcmp_file(pid1: i32, fd1: i32, pid2: i32, fd2: i32) -> io::Result<i32> {
    // SAFETY: kcmp takes only integers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid1,
            pid2,
            KCMP_FILE,
            fd1 as libc::c_long,
            fd2 as libc::c_long,
        )
    };
    check(r).map(|v| v as i32)
}

/// prlimit64(pid, resource): read limits.
pub fn get_rlimit(pid: i32, resource: u32) -> io::Result<(u64, u64)> {
    let mut old = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `old` is a valid out-pointer; no new limit is passed.
    let r = unsafe { libc::prlimit64(pid, resource as _, std::ptr::null(), &mut old) };
    check(r as libc::c_long)?;
    Ok((old.rlim_cur, old.rlim_max))
}

/// get_robust_list(tid): (head, len).
pub fn get_robust_list(tid: i32) -> io::Result<(u64, u64)> {
    let mut head: u64 = 0;
    let mut len: usize = 0;
    // SAFETY: both out-pointers are valid for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            tid,
            &mut head as *mut u64,
            &mut len as *mut usize,
        )
    };
    check(r)?;
    Ok((head, len as u64))
}

pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill takes only integers.
    check(unsafe { libc::kill(pid, sig) } as libc::c_long).map(drop)
}

pub fn tgkill(tgid: i32, tid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: tgkill takes only integers.
    check(unsafe { libc::syscall(libc::SYS_tgkill, tgid, tid, sig) }).map(drop)
}

/// Does a process with this pid exist (in our pid namespace)?
pub fn pid_exists(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// pipe2(O_CLOEXEC): (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } as libc::c_long)?;
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// mkfifo(2) at `path` with `mode` (before the umask).
pub fn mkfifo(path: &str, mode: u32) -> io::Result<()> {
    nix::unistd::mkfifo(
        path,
        nix::sys::stat::Mode::from_bits_truncate(mode as libc::mode_t),
    )
    .map_err(io::Error::from)
}

/// tee(2) without blocking: duplicates up to `len` bytes queued in pipe
/// `from` into pipe `to` without consuming them.
pub fn tee(from: &impl AsRawFd, to: &impl AsRawFd, len: usize) -> io::Result<usize> {
    // SAFETY: tee takes only descriptors and integers.
    let r = unsafe {
        libc::tee(
            from.as_raw_fd(),
            to.as_raw_fd(),
            len,
            libc::SPLICE_F_NONBLOCK,
        )
    };
    check(r as libc::c_long).map(|n| n as usize)
}

pub fn pipe_size(fd: &impl AsRawFd) -> io::Result<usize> {
    // SAFETY: F_GETPIPE_SZ takes no pointer.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ) } as libc::c_long)
        .map(|n| n as usize)
}

pub fn set_pipe_size(fd: &impl AsRawFd, size: usize) -> io::Result<usize> {
    // SAFETY: F_SETPIPE_SZ takes an integer.
    check(
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, size as libc::c_int) }
            as libc::c_long,
    )
    .map(|n| n as usize)
}

/// FIONREAD: bytes queued in a pipe.
pub fn pipe_queued(fd: &impl AsRawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to the valid pointer.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) } as libc::c_long)?;
    Ok(n as usize)
}

/// PR_SET_PDEATHSIG for the calling thread.
pub fn set_pdeathsig(sig: i32) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    check(
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) }
            as libc::c_long,
    )
    .map(drop)
}

/// PR_SET_CHILD_SUBREAPER for the calling process.
pub fn set_child_subreaper(on: bool) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    check(
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, on as libc::c_ulong, 0, 0, 0) }
            as libc::c_long,
    )
    .map(drop)
}

/// Reaps one exited child, any child, without blocking: `Ok(Some(pid))`,
/// `Ok(None)` if no child has exited yet, ECHILD if there are none.
pub fn reap_any() -> io::Result<Option<i32>> {
    let mut st: libc::c_int = 0;
    // SAFETY: `st` is a valid out-pointer for the duration of the call.
    let r = unsafe { libc::waitpid(-1, &mut st, libc::__WALL | libc::WNOHANG) };
    match r {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        p => Ok(Some(p)),
    }
}

pub fn getppid() -> i32 {
    // SAFETY: getppid takes no arguments and cannot fail.
    unsafe { libc::getppid() }
}

pub fn getpid() -> i32 {
    std::process::id() as i32
}

/// Number of threads of the calling process (to check fork safety).
pub fn own_thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// shmget(key, size, IPC_CREAT | IPC_EXCL | mode): a new System V segment.
pub fn shm_create(key: i32, size: u64, mode: u32) -> io::Result<i32> {
    // SAFETY: shmget takes only integers.
    let r = unsafe {
        libc::shmget(
            key,
            size as usize,
            libc::IPC_CREAT | libc::IPC_EXCL | (mode & 0o777) as i32,
        )
    };
    check(r as libc::c_long).map(|v| v as i32)
}

/// (key, size, uid, gid) of an existing segment, via IPC_STAT.
pub fn shm_stat(shmid: i32) -> io::Result<(i32, u64, u32, u32)> {
    // SAFETY: shmid_ds is plain data; zero is a valid value of it.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_STAT writes one shmid_ds to the valid pointer.
    check(unsafe { libc::shmctl(shmid, libc::IPC_STAT, &mut ds) } as libc::c_long)?;
    Ok((
        ds.shm_perm.__key,
        ds.shm_segsz as u64,
        ds.shm_perm.uid,
        ds.shm_perm.gid,
    ))
}

/// Sets owner and mode of a segment (IPC_STAT, then IPC_SET).
pub fn shm_set_owner(shmid: i32, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
    // SAFETY: shmid_ds is plain data; zero is a valid value of it.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_STAT writes one shmid_ds to the valid pointer.
    check(unsafe { libc::shmctl(shmid, libc::IPC_STAT, &mut ds) } as libc::c_long)?;
    ds.shm_perm.uid = uid;
    ds.shm_perm.gid = gid;
    ds.shm_perm.mode = (mode & 0o777) as _;
    // SAFETY: IPC_SET reads one shmid_ds from the valid pointer.
    check(unsafe { libc::shmctl(shmid, libc::IPC_SET, &mut ds) } as libc::c_long).map(drop)
}

/// Marks a segment for removal once the last process detaches.
pub fn shm_remove(shmid: i32) -> io::Result<()> {
    // SAFETY: IPC_RMID takes no buffer.
    check(unsafe { libc::shmctl(shmid, libc::IPC_RMID, std::ptr::null_mut()) } as libc::c_long)
        .map(drop)
}

/// F_GET_SEALS of a memfd.
pub fn get_seals(fd: &impl AsRawFd) -> io::Result<u32> {
    // SAFETY: F_GET_SEALS takes no argument.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) } as libc::c_long)
        .map(|v| v as u32)
}

/// open_by_handle_at(mount_fd, handle, O_PATH): the file a kernel file
/// handle (as printed in inotify fdinfo) names. Needs CAP_DAC_READ_SEARCH.
pub fn open_by_handle(
    mount: &impl AsRawFd,
    handle_type: i32,
    handle: &[u8],
) -> io::Result<OwnedFd> {
    let mut buf = Vec::with_capacity(8 + handle.len());
    buf.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
    buf.extend_from_slice(&handle_type.to_ne_bytes());
    buf.extend_from_slice(handle);
    // SAFETY: `buf` is a complete struct file_handle (header + bytes) that
    // outlives the call; the kernel only reads it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount.as_raw_fd(),
            buf.as_ptr(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    };
    let fd = check(r)? as RawFd;
    // SAFETY: the descriptor was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets `sig` to SIG_IGN for the calling process.
pub fn ignore_signal(sig: i32) -> io::Result<()> {
    // SAFETY: installing SIG_IGN runs no code of ours in signal context.
    if unsafe { libc::signal(sig, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// prctl(PR_GET_DUMPABLE) of the calling process: false when it is not
/// dumpable (set-user-ID, file capabilities, PR_SET_DUMPABLE 0), which
/// makes its forks non-dumpable too.
pub fn dumpable() -> io::Result<bool> {
    // SAFETY: prctl with integer arguments only.
    let r = check(unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) } as libc::c_long)?;
    Ok(r == 1)
}

/// prctl(PR_GET_SECUREBITS) of the calling thread.
pub fn securebits() -> io::Result<u32> {
    // SAFETY: prctl with integer arguments only.
    let r = check(unsafe { libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0) } as libc::c_long)?;
    Ok(r as u32)
}
