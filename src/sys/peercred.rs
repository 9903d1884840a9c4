//! The credentials a unix socket records of the task that made its
//! connection (SO_PEERCRED, SO_PEERGROUPS), and running the one call that
//! records them (socketpair, listen, connect) as a task with a chosen pid
//! and credentials: a short-lived helper created with clone3 `set_tid`
//! (the pid must be free) that shares cairn's fd table (CLONE_FILES).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::abi::CloneArgs;
use super::check;

/// SO_PEERCRED of a socket: the pid (in cairn's pid namespace; 0 when the
/// socket has none) and the effective uid and gid (u32::MAX, -1, when
/// the socket has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ucred {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// getsockopt(SO_PEERCRED) of `fd` (a copy of a task's socket reads the
/// socket's, not the copy's).
pub fn peer_cred(fd: &impl AsRawFd) -> io::Result<Ucred> {
    let mut c = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `c` is a valid ucred and `len` its size, both live across the call.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut c as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    check(r as libc::c_long)?;
    Ok(Ucred {
        pid: c.pid,
        uid: c.uid,
        gid: c.gid,
    })
}

/// getsockopt(SO_PEERGROUPS): the supplementary groups of the peer's
/// credentials (empty when the socket has none).
pub fn peer_groups(fd: &impl AsRawFd) -> io::Result<Vec<u32>> {
    let mut n = 64usize;
    loop {
        let mut buf = vec![0u32; n];
        let mut len = (n * 4) as libc::socklen_t;
        // SAFETY: `buf` has room for `len` bytes during the call.
        let r = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        match check(r as libc::c_long) {
            Ok(_) => {
                buf.truncate(len as usize / 4);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) && n < 65536 => {
                n = (len as usize / 4).max(n * 2);
            }
            // No credentials recorded at all.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
    }
}

/// The one call run as another task.
pub enum Op<'a> {
    /// socketpair(AF_UNIX, type): both ends record the caller.
    Socketpair(i32),
    /// listen(fd, backlog): the listener records the caller, and every
    /// client that connects copies that.
    Listen(RawFd, i32),
    /// connect(fd, unix name): the accepted side records the caller.
    Connect(RawFd, &'a [u8]),
}

/// Runs `op` in a helper process with pid `pid` (clone3 set_tid: the pid
/// must be free), effective uid `uid`, gid `gid` and supplementary
/// groups `groups` (real and saved ids stay cairn's, and the filesystem
/// ids 0, so that paths resolve as they do for cairn). The helper shares
/// cairn's fd table: `fd`s are cairn's and a socketpair's ends come back
/// as cairn's. Returns them for `Op::Socketpair`.
pub fn run_as(
    pid: i32,
    uid: u32,
    gid: u32,
    groups: &[u32],
    op: &Op,
) -> io::Result<Option<(OwnedFd, OwnedFd)>> {
    let (sa, salen) = match op {
        Op::Connect(_, name) => super::sock::sockaddr_un(name)?,
        // SAFETY: an all-zero sockaddr_un is valid.
        _ => (unsafe { std::mem::zeroed() }, 0),
    };
    let mut pipe = [-1i32; 2];
    // SAFETY: `pipe` has room for the two descriptors.
    check(unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } as libc::c_long)?;
    // SAFETY: both were just returned by the kernel and are owned by nobody else.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
    let w = wr.as_raw_fd();
    let tid: libc::pid_t = pid;
    let args = CloneArgs {
        flags: libc::CLONE_FILES as u64,
        exit_signal: libc::SIGCHLD as u64,
        set_tid: &tid as *const libc::pid_t as u64,
        set_tid_size: 1,
        ..Default::default()
    };
    let (kind, a, b) = match *op {
        Op::Socketpair(ty) => (0, ty, 0),
        Op::Listen(fd, backlog) => (1, fd, backlog),
        Op::Connect(fd, _) => (2, fd, 0),
    };
    // SAFETY: clone3 without CLONE_VM: the child is a copy of this process
    // that makes only raw system calls on memory prepared before (`args`,
    // `groups`, `sa`), then exits; it touches no lock even if cairn has
    // other threads. The fd table is shared, which is the point.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r == 0 {
        // SAFETY: see above; every pointer is to this process's copy of
        // memory prepared before the clone.
        unsafe {
            let mut out = [0i32; 3];
            let mut e = libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr());
            if e == 0 {
                e = libc::syscall(libc::SYS_setresgid, u32::MAX, gid, u32::MAX);
            }
            if e == 0 {
                e = libc::syscall(libc::SYS_setresuid, u32::MAX, uid, u32::MAX);
            }
            if e == 0 {
                libc::syscall(libc::SYS_setfsuid, 0);
                libc::syscall(libc::SYS_setfsgid, 0);
                e = match kind {
                    0 => libc::syscall(
                        libc::SYS_socketpair,
                        libc::AF_UNIX,
                        a | libc::SOCK_CLOEXEC,
                        0,
                        out[1..].as_mut_ptr(),
                    ),
                    1 => libc::syscall(libc::SYS_listen, a, b),
                    _ => libc::syscall(
                        libc::SYS_connect,
                        a,
                        (&sa as *const libc::sockaddr_un).cast::<libc::sockaddr>(),
                        salen,
                    ),
                };
            }
            out[0] = if e < 0 { *libc::__errno_location() } else { 0 };
            libc::syscall(libc::SYS_write, w, out.as_ptr(), 12usize);
            libc::syscall(libc::SYS_exit_group, 0);
        }
    }
    let child = check(r).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("clone3 with pid {pid} (the pid must be free): {e}"),
        )
    })? as i32;
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is valid for writes.
    unsafe { libc::waitpid(child, &mut status, libc::__WALL) };
    drop(wr);
    let mut out = [0u8; 12];
    let n = rustix::io::read(&rd, &mut out).map_err(io::Error::from)?;
    if n != 12 {
        return Err(io::Error::other(format!(
            "helper pid {pid} ended without a result"
        )));
    }
    let word = |i: usize| i32::from_ne_bytes([out[i], out[i + 1], out[i + 2], out[i + 3]]);
    if word(0) != 0 {
        return Err(io::Error::from_raw_os_error(word(0)));
    }
    if let Op::Socketpair(_) = op {
        // SAFETY: the helper created both in the fd table it shared with
        // cairn; nobody else owns them.
        return Ok(Some(unsafe {
            (OwnedFd::from_raw_fd(word(4)), OwnedFd::from_raw_fd(word(8)))
        }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socketpair_records_the_caller() {
        let (a, _b) = super::super::sock::socketpair(libc::SOCK_STREAM).unwrap();
        let c = peer_cred(&a).unwrap();
        assert_eq!(c.pid, std::process::id() as i32);
        assert_eq!(c.uid, rustix::process::geteuid().as_raw());
    }
}
