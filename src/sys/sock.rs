//! Socket system calls on cairn's own descriptors: sockets created for a
//! restore, and copies of a frozen task's sockets taken with
//! [`pidfd_getfd`] (same open file description, so options and queues
//! read here are the task's).
//!
//! Unix addresses are passed as the `sun_path` bytes the kernel keeps
//! (`name`): a path with its terminating NUL, or a NUL followed by an
//! abstract name; the address length is `2 + name.len()`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::check;

fn own(fd: libc::c_long) -> io::Result<OwnedFd> {
    let fd = check(fd)? as RawFd;
    // SAFETY: the descriptor was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A copy of fd `fd` of process `pid` in cairn (pidfd_getfd): the same
/// open file description, close-on-exec here.
pub fn pidfd_getfd(pid: i32, fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags.
    let pfd = own(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: pidfd_getfd takes a pidfd, a fd number and flags.
    own(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pfd.as_raw_fd(), fd, 0) })
}

/// The protocol name of the socket behind `path` (a /proc/PID/fd link),
/// from the `system.sockprotoname` attribute: "UNIX", "UNIX-STREAM",
/// "TCP", "UDPv6", "NETLINK", "PACKET", ... Needs no access to the socket.
pub fn proto_name(path: &str) -> io::Result<String> {
    let p = CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let name = c"system.sockprotoname";
    let mut buf = [0u8; 64];
    // SAFETY: both strings are NUL-terminated and `buf` is valid for writes
    // of its length during the call.
    let n = unsafe {
        libc::getxattr(
            p.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = check(n as libc::c_long)? as usize;
    let s = &buf[..n.min(buf.len())];
    let s = s.split(|&c| c == 0).next().unwrap_or(s);
    Ok(String::from_utf8_lossy(s).into_owned())
}

pub fn socket(domain: i32, ty: i32) -> io::Result<OwnedFd> {
    // SAFETY: socket() takes only integers.
    own(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, 0) } as libc::c_long)
}

pub fn socketpair(ty: i32) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1i32; 2];
    let flags = ty | libc::SOCK_CLOEXEC;
    // SAFETY: `fds` has room for the two descriptors the kernel writes.
    let r = unsafe { libc::socketpair(libc::AF_UNIX, flags, 0, fds.as_mut_ptr()) };
    check(r as libc::c_long)?;
    // SAFETY: both descriptors were just returned by the kernel and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub(crate) fn sockaddr_un(name: &[u8]) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if name.len() > sa.sun_path.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    for (d, s) in sa.sun_path.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    Ok((sa, (2 + name.len()) as libc::socklen_t))
}

/// bind() to a unix name (see the module doc); an empty name autobinds.
pub fn bind_unix(fd: &impl AsRawFd, name: &[u8]) -> io::Result<()> {
    let (sa, len) = sockaddr_un(name)?;
    // SAFETY: `sa` is a valid sockaddr_un of at least `len` bytes.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_un).cast(),
            len,
        )
    } as libc::c_long)
    .map(drop)
}

pub fn connect_unix(fd: &impl AsRawFd, name: &[u8]) -> io::Result<()> {
    let (sa, len) = sockaddr_un(name)?;
    // SAFETY: `sa` is a valid sockaddr_un of at least `len` bytes.
    check(unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_un).cast(),
            len,
        )
    } as libc::c_long)
    .map(drop)
}

/// Runs `op(fd, name)` (bind or connect) with cairn's working directory
/// at `dir`, for a relative socket name: in a forked child, since the
/// working directory is per process and cairn may have threads. The
/// socket is shared with the child, so the effect is cairn's.
pub fn in_dir(dir: &str, fd: &impl AsRawFd, name: &[u8], connect: bool) -> io::Result<()> {
    let d = CString::new(dir).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let (sa, len) = sockaddr_un(name)?;
    let raw = fd.as_raw_fd();
    // SAFETY: the child only makes raw system calls (chdir, bind/connect,
    // _exit) on memory prepared before the fork, which is async-signal-safe
    // even if cairn has other threads.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: see above; `d` and `sa` are valid copies in the child.
        unsafe {
            let mut r = libc::chdir(d.as_ptr());
            if r == 0 {
                let p = (&sa as *const libc::sockaddr_un).cast();
                r = if connect {
                    libc::connect(raw, p, len)
                } else {
                    libc::bind(raw, p, len)
                };
            }
            let e = if r == 0 { 0 } else { *libc::__errno_location() };
            libc::_exit(e.clamp(0, 255));
        }
    }
    check(pid as libc::c_long)?;
    let mut st = 0;
    // SAFETY: waits for our own child; `st` is valid for writes.
    check(unsafe { libc::waitpid(pid, &mut st, 0) } as libc::c_long)?;
    match libc::WIFEXITED(st).then(|| libc::WEXITSTATUS(st)) {
        Some(0) => Ok(()),
        Some(e) => Err(io::Error::from_raw_os_error(e)),
        None => Err(io::Error::other("bind/connect helper died")),
    }
}

pub fn listen(fd: &impl AsRawFd, backlog: i32) -> io::Result<()> {
    // SAFETY: listen() takes only integers.
    check(unsafe { libc::listen(fd.as_raw_fd(), backlog) } as libc::c_long).map(drop)
}

/// Whether `fd` is readable now (poll with no timeout): a listener with a
/// connection waiting.
pub fn readable(fd: &impl AsRawFd) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, count 1, no timeout.
    let n = check(unsafe { libc::poll(&mut p, 1, 0) } as libc::c_long)?;
    Ok(n > 0 && p.revents & libc::POLLIN != 0)
}

/// accept4; the new socket is non-blocking and close-on-exec. Blocks if
/// the listener does and nothing waits: check [`readable`] first.
pub fn accept(fd: &impl AsRawFd) -> io::Result<OwnedFd> {
    // SAFETY: no address is asked for.
    own(unsafe {
        libc::accept4(
            fd.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        )
    } as libc::c_long)
}

pub fn shutdown(fd: &impl AsRawFd, how: i32) -> io::Result<()> {
    // SAFETY: shutdown() takes only integers.
    check(unsafe { libc::shutdown(fd.as_raw_fd(), how) } as libc::c_long).map(drop)
}

pub fn get_int(fd: &impl AsRawFd, level: i32, opt: i32) -> io::Result<i32> {
    let mut v: i32 = 0;
    let mut len = 4 as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for writes of their sizes.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&mut v as *mut i32).cast(),
            &mut len,
        )
    } as libc::c_long)?;
    Ok(v)
}

pub fn set_int(fd: &impl AsRawFd, level: i32, opt: i32, v: i32) -> io::Result<()> {
    // SAFETY: `v` is valid for reads of 4 bytes.
    check(
        unsafe { libc::setsockopt(fd.as_raw_fd(), level, opt, (&v as *const i32).cast(), 4) }
            as libc::c_long,
    )
    .map(drop)
}

/// A timeval option (SO_RCVTIMEO, SO_SNDTIMEO) in microseconds.
pub fn get_timeval_us(fd: &impl AsRawFd, opt: i32) -> io::Result<u64> {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
    // SAFETY: `tv` and `len` are valid for writes of their sizes.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&mut tv as *mut libc::timeval).cast(),
            &mut len,
        )
    } as libc::c_long)?;
    Ok(tv.tv_sec.max(0) as u64 * 1_000_000 + tv.tv_usec.max(0) as u64)
}

pub fn set_timeval_us(fd: &impl AsRawFd, opt: i32, us: u64) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: (us / 1_000_000) as libc::time_t,
        tv_usec: (us % 1_000_000) as libc::suseconds_t,
    };
    // SAFETY: `tv` is valid for reads of its size.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    } as libc::c_long)
    .map(drop)
}

/// What one `recvmsg` returned.
#[derive(Debug, Default)]
pub struct Received {
    /// Bytes copied into the buffer.
    pub copied: usize,
    /// The return value: with MSG_TRUNC on a datagram socket the full
    /// length of what was left of the datagram.
    pub len: usize,
    /// The sender's address (unix: sun_path bytes), if the kernel gave one.
    pub name: Vec<u8>,
    /// Descriptors in flight that came with it (SCM_RIGHTS), in order:
    /// copies installed in cairn, which the caller owns.
    pub fds: Vec<OwnedFd>,
    /// A pidfd that came with it (SCM_PIDFD), dropped by most callers.
    pub pidfds: Vec<OwnedFd>,
    /// How many of `fds` came as SCM_RIGHTS (descriptors in flight).
    pub rights: usize,
    /// Control data did not fit.
    pub ctrunc: bool,
    /// SCM_CREDENTIALS (pid, uid, gid), given when SO_PASSCRED is on.
    pub cred: Option<(i32, u32, u32)>,
}

const SCM_PIDFD: i32 = 0x04;

/// recvmsg(fd, buf, flags) with room for an address and control data.
pub fn recv_msg(fd: &impl AsRawFd, buf: &mut [u8], flags: i32) -> io::Result<Received> {
    // SAFETY: an all-zero sockaddr_un is valid storage for an address.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut ctl = vec![0u64; 512]; // 4 KiB, aligned for cmsghdr
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid; the pointers are set below.
    let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
    mh.msg_name = (&mut sa as *mut libc::sockaddr_un).cast();
    mh.msg_namelen = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctl.as_mut_ptr().cast();
    mh.msg_controllen = ctl.len() * 8;
    // SAFETY: every pointer in `mh` refers to live buffers of the given
    // sizes for the duration of the call.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut mh, flags | libc::MSG_CMSG_CLOEXEC) };
    let n = check(n as libc::c_long)? as usize;
    let mut r = Received {
        copied: n.min(buf.len()),
        len: n,
        ctrunc: mh.msg_flags & libc::MSG_CTRUNC != 0,
        ..Default::default()
    };
    let nl = (mh.msg_namelen as usize).min(std::mem::size_of::<libc::sockaddr_un>());
    if nl > 2 {
        r.name = sa.sun_path[..nl - 2].iter().map(|&c| c as u8).collect();
    }
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled,
    // bounded by msg_controllen; each SCM_RIGHTS/SCM_PIDFD payload is an
    // array of ints that are new descriptors owned by nobody else.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&mh);
        while !c.is_null() {
            let h = &*c;
            if h.cmsg_level == libc::SOL_SOCKET
                && h.cmsg_type == libc::SCM_CREDENTIALS
                && h.cmsg_len as usize >= libc::CMSG_LEN(12) as usize
            {
                let u = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::ucred);
                r.cred = Some((u.pid, u.uid, u.gid));
            }
            if h.cmsg_level == libc::SOL_SOCKET
                && (h.cmsg_type == libc::SCM_RIGHTS || h.cmsg_type == SCM_PIDFD)
            {
                let data = libc::CMSG_DATA(c) as *const i32;
                let count = (h.cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                for i in 0..count {
                    let fd = std::ptr::read_unaligned(data.add(i));
                    if fd >= 0 {
                        let fd = OwnedFd::from_raw_fd(fd);
                        if h.cmsg_type == libc::SCM_RIGHTS {
                            r.fds.push(fd);
                            r.rights += 1;
                        } else {
                            r.pidfds.push(fd);
                        }
                    }
                }
            }
            c = libc::CMSG_NXTHDR(&mh, c);
        }
    }
    Ok(r)
}

/// sendto without blocking or SIGPIPE; `to` is a unix name or None for the
/// connected peer. Returns the bytes sent.
pub fn send_to(fd: &impl AsRawFd, data: &[u8], to: Option<&[u8]>) -> io::Result<usize> {
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    let n = match to {
        Some(name) => {
            let (sa, len) = sockaddr_un(name)?;
            // SAFETY: `data` and `sa` are valid for reads of their lengths.
            unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    data.as_ptr().cast(),
                    data.len(),
                    flags,
                    (&sa as *const libc::sockaddr_un).cast(),
                    len,
                )
            }
        }
        // SAFETY: `data` is valid for reads of its length.
        None => unsafe { libc::send(fd.as_raw_fd(), data.as_ptr().cast(), data.len(), flags) },
    };
    Ok(check(n as libc::c_long)? as usize)
}

/// Most descriptors one SCM_RIGHTS message carries (SCM_MAX_FD).
pub const SCM_MAX_FD: usize = 253;

/// sendmsg without blocking or SIGPIPE, with `fds` as SCM_RIGHTS (none:
/// no control message); `to` is a unix name or None for the connected
/// peer. Returns the bytes sent.
pub fn send_fds(
    fd: &impl AsRawFd,
    data: &[u8],
    fds: &[RawFd],
    to: Option<&[u8]>,
) -> io::Result<usize> {
    if fds.len() > SCM_MAX_FD {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let addr = to.map(sockaddr_un).transpose()?;
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut ctl = vec![0u64; 256]; // 2 KiB, aligned for cmsghdr
                                   // SAFETY: an all-zero msghdr is valid; the pointers are set below.
    let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
    if let Some((sa, len)) = addr.as_ref() {
        mh.msg_name = (sa as *const libc::sockaddr_un as *mut libc::sockaddr_un).cast();
        mh.msg_namelen = *len;
    }
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    if !fds.is_empty() {
        let bytes = std::mem::size_of_val(fds) as u32;
        // SAFETY: CMSG_SPACE only computes a size.
        let space = unsafe { libc::CMSG_SPACE(bytes) } as usize;
        mh.msg_control = ctl.as_mut_ptr().cast();
        mh.msg_controllen = space;
        // SAFETY: `ctl` holds 2 KiB, more than CMSG_SPACE of 253 ints, so
        // the first header and its data lie inside it; the kernel only
        // reads it during sendmsg.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&mh);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(bytes) as usize;
            let data = libc::CMSG_DATA(c) as *mut i32;
            for (i, f) in fds.iter().enumerate() {
                std::ptr::write_unaligned(data.add(i), *f);
            }
        }
    }
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    // SAFETY: every pointer in `mh` refers to live buffers of the given
    // sizes for the duration of the call; the kernel only reads them.
    let n = unsafe { libc::sendmsg(fd.as_raw_fd(), &mh, flags) };
    Ok(check(n as libc::c_long)? as usize)
}

fn name_of(fd: RawFd, peer: bool) -> io::Result<Vec<u8>> {
    // SAFETY: an all-zero sockaddr_un is valid storage.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    let p = (&mut sa as *mut libc::sockaddr_un).cast();
    // SAFETY: `sa` and `len` are valid for writes of their sizes.
    let r = unsafe {
        if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        }
    };
    check(r as libc::c_long)?;
    let nl = (len as usize).min(std::mem::size_of::<libc::sockaddr_un>());
    Ok(sa.sun_path[..nl.saturating_sub(2)]
        .iter()
        .map(|&c| c as u8)
        .collect())
}

/// getsockname of a unix socket: its name bytes (empty if unbound).
pub fn sock_name(fd: &impl AsRawFd) -> io::Result<Vec<u8>> {
    name_of(fd.as_raw_fd(), false)
}

/// getpeername of a unix socket.
pub fn peer_name(fd: &impl AsRawFd) -> io::Result<Vec<u8>> {
    name_of(fd.as_raw_fd(), true)
}

/// F_GETFL / F_SETFL on a descriptor of cairn's.
pub fn get_fl(fd: &impl AsRawFd) -> io::Result<i32> {
    // SAFETY: F_GETFL takes no argument.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) } as libc::c_long).map(|v| v as i32)
}

pub fn set_fl(fd: &impl AsRawFd, fl: i32) -> io::Result<()> {
    // SAFETY: F_SETFL takes an integer.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl) } as libc::c_long).map(drop)
}

/// FIONREAD / SIOCINQ: bytes readable.
pub fn inq(fd: &impl AsRawFd) -> io::Result<usize> {
    let mut n: i32 = 0;
    // SAFETY: FIONREAD writes one int to `n`.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) } as libc::c_long)?;
    Ok(n.max(0) as usize)
}

/// SO_LINGER: (on, seconds).
pub fn get_linger(fd: &impl AsRawFd) -> io::Result<(bool, u32)> {
    let mut l = libc::linger {
        l_onoff: 0,
        l_linger: 0,
    };
    let mut len = std::mem::size_of::<libc::linger>() as libc::socklen_t;
    // SAFETY: `l` and `len` are valid for writes of their sizes.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&mut l as *mut libc::linger).cast(),
            &mut len,
        )
    } as libc::c_long)?;
    Ok((l.l_onoff != 0, l.l_linger.max(0) as u32))
}

pub fn set_linger(fd: &impl AsRawFd, on: bool, secs: u32) -> io::Result<()> {
    let l = libc::linger {
        l_onoff: on as i32,
        l_linger: secs as i32,
    };
    // SAFETY: `l` is valid for reads of its size.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    } as libc::c_long)
    .map(drop)
}

// ------------------------------------------------------------ socket filters

/// SO_GET_FILTER / SO_ATTACH_FILTER (asm-generic/socket.h).
pub const SO_ATTACH_FILTER: i32 = 26;
pub const SO_GET_FILTER: i32 = 26;
pub const SO_LOCK_FILTER: i32 = 44;

/// One classic BPF instruction: (code, jt, jf, k).
pub type FilterInsn = (u16, u8, u8, u32);

/// The classic BPF filter attached to `fd` as (code, jt, jf, k)
/// instructions: None without a filter. An eBPF filter (SO_ATTACH_BPF),
/// which the kernel cannot give back, is EACCES.
pub fn get_filter(fd: &impl AsRawFd) -> io::Result<Option<Vec<FilterInsn>>> {
    let mut len: libc::socklen_t = 0;
    // SAFETY: with a length of 0 the kernel only reports the number of
    // instructions in `len` and writes nothing through the null pointer.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_GET_FILTER,
            std::ptr::null_mut(),
            &mut len,
        )
    } as libc::c_long)?;
    if len == 0 {
        return Ok(None);
    }
    let n = len as usize;
    let mut prog = vec![
        libc::sock_filter {
            code: 0,
            jt: 0,
            jf: 0,
            k: 0
        };
        n
    ];
    let mut len = (n * std::mem::size_of::<libc::sock_filter>()) as libc::socklen_t;
    // SAFETY: `prog` is writable for `len` bytes; the kernel writes at most
    // that many and sets `len` to the number of instructions.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_GET_FILTER,
            prog.as_mut_ptr().cast(),
            &mut len,
        )
    } as libc::c_long)?;
    prog.truncate((len as usize).min(n));
    Ok(Some(
        prog.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect(),
    ))
}

/// Attaches the classic BPF program `prog` to `fd` (SO_ATTACH_FILTER).
pub fn attach_filter(fd: &impl AsRawFd, prog: &[FilterInsn]) -> io::Result<()> {
    let mut ins: Vec<libc::sock_filter> = prog
        .iter()
        .map(|&(code, jt, jf, k)| libc::sock_filter { code, jt, jf, k })
        .collect();
    let fprog = libc::sock_fprog {
        len: u16::try_from(ins.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
        filter: ins.as_mut_ptr(),
    };
    // SAFETY: `fprog` and the instructions it points to are valid for reads
    // during the call; the kernel copies them.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    } as libc::c_long)
    .map(drop)
}

/// A string option (TCP_CONGESTION, TCP_ULP): the bytes up to the first NUL.
pub fn get_string(fd: &impl AsRawFd, level: i32, opt: i32) -> io::Result<String> {
    let mut buf = [0u8; 64];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `buf` is writable for `len` bytes; the kernel writes at most
    // that much and updates `len`.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    } as libc::c_long)?;
    let s = &buf[..(len as usize).min(buf.len())];
    let s = s.split(|&b| b == 0).next().unwrap_or(s);
    Ok(String::from_utf8_lossy(s).into_owned())
}

pub fn set_string(fd: &impl AsRawFd, level: i32, opt: i32, v: &str) -> io::Result<()> {
    // SAFETY: `v` is valid for reads of its length; the kernel only reads it.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            v.as_ptr().cast(),
            v.len() as libc::socklen_t,
        )
    } as libc::c_long)
    .map(drop)
}

// ------------------------------------------------------------ TIME_WAIT

const SOCK_DESTROY: u16 = 21;
const TCPF_TIME_WAIT: u32 = 1 << 6;
/// struct inet_diag_msg: family, state, timer, retrans, then the socket id.
const INET_DIAG_MSG_LEN: usize = 72;
/// struct inet_diag_sockid.
const SOCKID_LEN: usize = 48;

fn inet_diag_req(family: i32, id: &[u8]) -> Vec<u8> {
    let mut req = vec![family as u8, libc::IPPROTO_TCP as u8, 0, 0];
    req.extend_from_slice(&TCPF_TIME_WAIT.to_ne_bytes());
    let mut sid = [0u8; SOCKID_LEN];
    sid[..id.len().min(SOCKID_LEN)].copy_from_slice(&id[..id.len().min(SOCKID_LEN)]);
    req.extend_from_slice(&sid);
    req
}

/// One netlink request on NETLINK_SOCK_DIAG that expects an ACK.
fn diag_ack(ty: u16, body: &[u8]) -> io::Result<()> {
    let sk = own(
        // SAFETY: socket() takes only integers.
        unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_SOCK_DIAG,
            )
        } as libc::c_long,
    )?;
    let mut msg = Vec::with_capacity(16 + body.len());
    msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&ty.to_ne_bytes());
    msg.extend_from_slice(&(1u16 | 4u16).to_ne_bytes()); // NLM_F_REQUEST | NLM_F_ACK
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(body);
    // SAFETY: `msg` is valid for reads of its length during the call.
    let r = unsafe { libc::send(sk.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    check(r as libc::c_long)?;
    let mut buf = [0u8; 4096];
    // SAFETY: `buf` is valid for writes of its length during the call.
    let r = unsafe { libc::recv(sk.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    let n = check(r as libc::c_long)? as usize;
    let mut out = Vec::new();
    super::sockdiag::parse_replies(&buf[..n], INET_DIAG_MSG_LEN, false, &mut out).map(drop)
}

/// Removes the TIME_WAIT TCP sockets of cairn's network namespace whose
/// local address is `ip` (any, if unspecified) and port `port`: what is
/// left of a listener's closed connections, which keeps a socket without
/// SO_REUSEADDR from binding the port again (SOCK_DESTROY, as `ss -K`).
/// Returns how many were removed.
pub fn destroy_time_wait(ip: std::net::IpAddr, port: u16) -> io::Result<usize> {
    let mut n = 0;
    for family in [libc::AF_INET, libc::AF_INET6] {
        let replies = super::sockdiag::query(&inet_diag_req(family, &[]), true, INET_DIAG_MSG_LEN)?;
        for m in replies {
            let h = &m.header;
            if h.len() < INET_DIAG_MSG_LEN || h[1] != 6 {
                continue;
            }
            let id = &h[4..4 + SOCKID_LEN];
            if u16::from_be_bytes([id[0], id[1]]) != port {
                continue;
            }
            let src: std::net::IpAddr = if family == libc::AF_INET {
                std::net::Ipv4Addr::new(id[4], id[5], id[6], id[7]).into()
            } else {
                let mut a = [0u8; 16];
                a.copy_from_slice(&id[4..20]);
                let v6 = std::net::Ipv6Addr::from(a);
                v6.to_ipv4_mapped().map_or(v6.into(), Into::into)
            };
            let want = match ip {
                std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, Into::into),
                v4 => v4,
            };
            if !want.is_unspecified() && want != src {
                continue;
            }
            match diag_ack(SOCK_DESTROY, &inet_diag_req(family, id)) {
                Ok(()) => n += 1,
                // Gone meanwhile.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tw_tests {
    use super::*;
    use std::io::Read;

    /// A port with TIME_WAIT connections of a listener without
    /// SO_REUSEADDR cannot be bound; once they are removed it can.
    #[test]
    fn time_wait_removed() {
        // Not std's TcpListener::bind, which turns SO_REUSEADDR on.
        let plain = || {
            let fd = super::super::net::socket_proto(libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
            std::net::TcpListener::from(fd)
        };
        let l = plain();
        let any = super::super::net::InetAddr::new("127.0.0.1".parse().unwrap(), 0);
        super::super::net::bind(&l, &any, libc::AF_INET).unwrap();
        listen(&l, 4).unwrap();
        let addr = l.local_addr().unwrap();
        let at = super::super::net::InetAddr::new(addr.ip(), addr.port());
        for _ in 0..2 {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            let (a, _) = l.accept().unwrap();
            drop(a);
            let mut b = [0u8; 1];
            assert_eq!(c.read(&mut b).unwrap(), 0);
        }
        drop(l);
        let again = plain();
        assert!(super::super::net::bind(&again, &at, libc::AF_INET).is_err());
        match destroy_time_wait(addr.ip(), addr.port()) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                eprintln!("skipped: SOCK_DESTROY needs CAP_NET_ADMIN");
                return;
            }
            r => assert_eq!(r.unwrap(), 2),
        }
        super::super::net::bind(&again, &at, libc::AF_INET).unwrap();
    }
}
