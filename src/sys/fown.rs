//! Calls on open file descriptions for the fd engine and the pidfd kind:
//! the owner and signal of a description (who gets SIGIO and which
//! signal: `F_GETOWN_EX`, `F_GETSIG`, `F_GETOWNER_UIDS` and their
//! setters), `kcmp(KCMP_EPOLL_TFD)`, and pidfds of processes that have
//! exited. Owner and signal act on a description, so cairn calls them on
//! its own copy of a target's fd (pidfd_getfd), never in the target.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use super::check;

const F_SETSIG: libc::c_int = 10;
const F_GETSIG: libc::c_int = 11;
pub const F_SETOWN_EX: libc::c_int = 15;
pub const F_GETOWN_EX: libc::c_int = 16;
const F_GETOWNER_UIDS: libc::c_int = 17;

/// `struct f_owner_ex`.
#[repr(C)]
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnerEx {
    pub ty: libc::c_int,
    pub pid: libc::c_int,
}

impl OwnerEx {
    /// Its size in bytes.
    pub const SIZE: usize = 8;

    /// Its bytes, for a call made in another process.
    pub fn to_bytes(self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..4].copy_from_slice(&self.ty.to_ne_bytes());
        b[4..8].copy_from_slice(&self.pid.to_ne_bytes());
        b
    }

    /// From its bytes (missing ones read as 0).
    pub fn from_bytes(b: &[u8]) -> OwnerEx {
        let int = |i: usize| {
            b.get(i..i + 4)
                .map_or(0, |s| libc::c_int::from_ne_bytes([s[0], s[1], s[2], s[3]]))
        };
        OwnerEx {
            ty: int(0),
            pid: int(4),
        }
    }
}

/// The owner of a description: (F_OWNER_TID 0 / PID 1 / PGRP 2, id),
/// id 0 when there is none.
pub fn get_owner(fd: &impl AsRawFd) -> io::Result<(u32, i32)> {
    let mut o = OwnerEx::default();
    // SAFETY: F_GETOWN_EX writes one struct f_owner_ex at the pointer,
    // which points at `o`.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), F_GETOWN_EX, &mut o as *mut OwnerEx) } as _)?;
    Ok((o.ty as u32, o.pid))
}

/// The uid and euid of whoever set the owner (F_GETOWNER_UIDS, a
/// CONFIG_CHECKPOINT_RESTORE call).
pub fn get_owner_uids(fd: &impl AsRawFd) -> io::Result<(u32, u32)> {
    let mut u = [0u32; 2];
    // SAFETY: F_GETOWNER_UIDS writes two uid_t (u32) at the pointer,
    // which points at `u`.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), F_GETOWNER_UIDS, u.as_mut_ptr()) } as _)?;
    Ok((u[0], u[1]))
}

/// F_GETSIG: the signal sent for I/O events (0: SIGIO).
pub fn get_sig(fd: &impl AsRawFd) -> io::Result<i32> {
    // SAFETY: F_GETSIG takes no argument.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), F_GETSIG) } as _).map(|v| v as i32)
}

/// F_SETSIG.
pub fn set_sig(fd: &impl AsRawFd, sig: i32) -> io::Result<()> {
    // SAFETY: F_SETSIG takes an integer.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), F_SETSIG, sig as libc::c_long) } as _).map(drop)
}

/// F_SETOWN_EX(type, id) as cairn is.
pub fn set_owner(fd: &impl AsRawFd, ty: u32, pid: i32) -> io::Result<()> {
    let o = OwnerEx {
        ty: ty as libc::c_int,
        pid,
    };
    // SAFETY: F_SETOWN_EX reads one struct f_owner_ex at the pointer,
    // which points at `o`.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), F_SETOWN_EX, &o as *const OwnerEx) } as _).map(drop)
}

/// F_SETOWN_EX on each of `owners` (fd, type, id) from a child of cairn
/// whose real and effective uids are `uid` and `euid`: the kernel records
/// the setter's uid and euid with the owner and checks them against the
/// owner's when it sends the signal, so they must be the original
/// setter's. The child changes only its own credentials (raw setresuid,
/// which acts on the calling thread alone) and makes only raw system
/// calls before it exits.
pub fn set_owner_as(uid: u32, euid: u32, owners: &[(RawFd, u32, i32)]) -> io::Result<()> {
    let args: Vec<(RawFd, OwnerEx)> = owners
        .iter()
        .map(|&(fd, ty, pid)| {
            (
                fd,
                OwnerEx {
                    ty: ty as libc::c_int,
                    pid,
                },
            )
        })
        .collect();
    // SAFETY: the child makes only raw system calls (setresuid, fcntl,
    // exit_group) on memory prepared before the fork; it allocates
    // nothing and takes no lock, so a lock held by another thread of cairn
    // at the fork does not matter.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: see above; `args` stays valid in the child's copy of
        // the address space.
        unsafe {
            let mut code = 0;
            // Keep the saved uid (root): only the two the kernel records.
            if libc::syscall(
                libc::SYS_setresuid,
                uid as libc::c_long,
                euid as libc::c_long,
                -1 as libc::c_long,
            ) != 0
            {
                code = 100;
            }
            for (fd, o) in &args {
                if code == 0 && libc::fcntl(*fd, F_SETOWN_EX, o as *const OwnerEx) != 0 {
                    code = 101;
                }
            }
            libc::syscall(libc::SYS_exit_group, code);
        }
    }
    let child = check(child as libc::c_long)? as libc::pid_t;
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes the status at a valid pointer.
        let r = unsafe { libc::waitpid(child, &mut status, libc::__WALL) };
        if r == child {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    match (libc::WIFEXITED(status), libc::WEXITSTATUS(status)) {
        (true, 0) => Ok(()),
        (true, 100) => Err(io::Error::other(format!(
            "setresuid({uid}, {euid}) failed in the helper"
        ))),
        (true, 101) => Err(io::Error::other("F_SETOWN_EX failed in the helper")),
        _ => Err(io::Error::other(format!(
            "helper ended with status {status:#x}"
        ))),
    }
}

const KCMP_EPOLL_TFD: libc::c_long = 7;

/// `struct kcmp_epoll_slot`.
#[repr(C)]
struct EpollSlot {
    efd: u32,
    tfd: u32,
    toff: u32,
}

/// kcmp(KCMP_EPOLL_TFD): 0 when fd `fd` of `pid` is the file that the
/// epoll fd `efd` of `epid` watches as target fd `tfd` (its `toff`-th
/// registration with that number).
pub fn kcmp_epoll_tfd(
    pid: i32,
    fd: i32,
    epid: i32,
    efd: i32,
    tfd: i32,
    toff: u32,
) -> io::Result<i32> {
    let slot = EpollSlot {
        efd: efd as u32,
        tfd: tfd as u32,
        toff,
    };
    // SAFETY: kcmp reads one struct kcmp_epoll_slot at the pointer, which
    // points at `slot`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid,
            epid,
            KCMP_EPOLL_TFD,
            fd as libc::c_long,
            &slot as *const EpollSlot,
        )
    };
    check(r).map(|v| v as i32)
}

/// A pidfd (pidfd_open `flags`) of a process that has exited with `code`
/// (an exit status as wait reports it, or a signal number in the low 7
/// bits) and been reaped: a child of cairn that ends at once, its pidfd
/// taken while it is a zombie, then reaped. The child makes only raw
/// system calls.
pub fn dead_pidfd(flags: u32, status: i32) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let sig = status & 0x7f;
    // SAFETY: the child makes only raw system calls (kill, exit_group) and
    // never returns into cairn's code.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: raw system calls only, see above.
        unsafe {
            if sig != 0 {
                // No core file, whatever the signal.
                libc::syscall(
                    libc::SYS_prctl,
                    libc::PR_SET_DUMPABLE as libc::c_long,
                    0 as libc::c_long,
                );
                let me = libc::syscall(libc::SYS_getpid);
                libc::syscall(libc::SYS_kill, me, sig as libc::c_long);
            }
            libc::syscall(libc::SYS_exit_group, ((status >> 8) & 0xff) as libc::c_long);
        }
    }
    let child = check(child as libc::c_long)? as libc::pid_t;
    // SAFETY: pidfd_open takes two integers; the result is a new fd.
    let pfd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, child, flags as libc::c_long) });
    let mut st = 0;
    loop {
        // SAFETY: waitpid writes the status at a valid pointer.
        let r = unsafe { libc::waitpid(child, &mut st, libc::__WALL) };
        if r == child {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    let pfd = pfd?;
    // SAFETY: `pfd` is a new fd that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(pfd as i32) })
}

/// The exit status a pidfd reports for its process (PIDFD_GET_INFO with
/// PIDFD_INFO_EXIT, kernel 6.15 on): Ok(None) when the kernel has none to
/// give (the process runs, or the kernel is older).
pub fn pidfd_exit_status(pidfd: &impl AsRawFd) -> io::Result<Option<i32>> {
    const PIDFD_INFO_EXIT: u64 = 1 << 3;
    // struct pidfd_info, version 0: 64 bytes; mask at 0, exit_code at 60.
    let mut info = [0u64; 8];
    info[0] = PIDFD_INFO_EXIT;
    // _IOWR(0xFF, 11, struct pidfd_info): dir 3, size 64.
    let req: libc::c_ulong = (3 << 30) | (64 << 16) | (0xff << 8) | 11;
    // SAFETY: PIDFD_GET_INFO reads and writes at most the 64-byte struct
    // whose size the request encodes; `info` is 64 bytes.
    let r = unsafe { libc::ioctl(pidfd.as_raw_fd(), req, info.as_mut_ptr()) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOTTY) | Some(libc::EINVAL) | Some(libc::ESRCH) => Ok(None),
            _ => Err(e),
        };
    }
    if info[0] & PIDFD_INFO_EXIT == 0 {
        return Ok(None);
    }
    Ok(Some((info[7] >> 32) as u32 as i32))
}

/// eventfd(initval, flags) in cairn (tests of the eventfd kind).
pub fn eventfd(initval: u32, flags: i32) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: eventfd takes two integers and returns a new fd or -1.
    let fd = check(unsafe { libc::eventfd(initval, flags) } as libc::c_long)?;
    // SAFETY: `fd` is a new fd that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes a call in another process passes are the struct's.
    #[test]
    fn owner_ex_bytes_are_the_struct() {
        assert_eq!(std::mem::size_of::<OwnerEx>(), OwnerEx::SIZE);
        let o = OwnerEx { ty: 2, pid: -7 };
        let b = o.to_bytes();
        assert_eq!(&b[0..4], &2i32.to_ne_bytes());
        assert_eq!(&b[4..8], &(-7i32).to_ne_bytes());
        assert_eq!(OwnerEx::from_bytes(&b), o);
        assert_eq!(OwnerEx::from_bytes(&b[..4]), OwnerEx { ty: 2, pid: 0 });
    }
}
