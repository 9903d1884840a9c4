//! The system calls of the library, each a thin wrapper returning a
//! positive errno on failure. Every `unsafe` block of the crate is here
//! or in `capi.rs`.

/// The errno of the last failed call.
fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

pub fn getpid() -> u32 {
    // SAFETY: getpid takes nothing and cannot fail.
    unsafe { libc::getpid() as u32 }
}

/// The inode of `fd` and whether it is a socket.
pub fn inode(fd: i32) -> Result<(u64, bool), i32> {
    // SAFETY: an all-zero stat is valid storage for fstat to fill.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(errno());
    }
    Ok((st.st_ino, st.st_mode & libc::S_IFMT == libc::S_IFSOCK))
}

/// SO_TYPE of socket `fd`.
pub fn sock_type(fd: i32) -> Result<i32, i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for the one int SO_TYPE writes.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(errno());
    }
    Ok(v)
}

/// Sets FD_CLOEXEC on `fd`.
pub fn set_cloexec(fd: i32) -> Result<(), i32> {
    // SAFETY: F_GETFD/F_SETFD take and return integers.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if fl < 0 {
        return Err(errno());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, fl | libc::FD_CLOEXEC) } < 0 {
        return Err(errno());
    }
    Ok(())
}

/// One packet of `head` then `body`, without SIGPIPE.
pub fn send(fd: i32, head: &[u8], body: &[u8]) -> Result<(), i32> {
    let mut iov = [
        libc::iovec {
            iov_base: head.as_ptr() as *mut libc::c_void,
            iov_len: head.len(),
        },
        libc::iovec {
            iov_base: body.as_ptr() as *mut libc::c_void,
            iov_len: body.len(),
        },
    ];
    // SAFETY: an all-zero msghdr is valid; its iovecs are set below.
    let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
    mh.msg_iov = iov.as_mut_ptr();
    mh.msg_iovlen = if body.is_empty() { 1 } else { 2 };
    // SAFETY: the iovecs point to live buffers of their lengths, which
    // sendmsg only reads.
    let n = unsafe { libc::sendmsg(fd, &mh, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(errno());
    }
    Ok(())
}

/// One packet into `head` then `body`; its whole length (MSG_TRUNC: more
/// than the buffers when it did not fit).
pub fn recv(fd: i32, head: &mut [u8], body: &mut [u8]) -> Result<usize, i32> {
    let mut iov = [
        libc::iovec {
            iov_base: head.as_mut_ptr().cast(),
            iov_len: head.len(),
        },
        libc::iovec {
            iov_base: body.as_mut_ptr().cast(),
            iov_len: body.len(),
        },
    ];
    // SAFETY: an all-zero msghdr is valid; its iovecs are set below.
    let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
    mh.msg_iov = iov.as_mut_ptr();
    mh.msg_iovlen = if body.is_empty() { 1 } else { 2 };
    // SAFETY: the iovecs point to live, writable buffers of their lengths.
    let n = unsafe { libc::recvmsg(fd, &mut mh, libc::MSG_TRUNC) };
    if n < 0 {
        return Err(errno());
    }
    Ok(n as usize)
}

/// A `SOCK_SEQPACKET` socket (close-on-exec) connected to the unix socket
/// at `path`, or of abstract name NAME for `@NAME`; a path too long for a socket name is reached through an
/// `O_PATH` descriptor of its directory (`/proc/self/fd/N/NAME`).
pub fn connect_seqpacket(path: &[u8]) -> Result<i32, i32> {
    // SAFETY: socket() takes only integers.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(errno());
    }
    let r = connect_path(fd, path);
    if let Err(e) = r {
        // SAFETY: `fd` is ours and closed once.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    Ok(fd)
}

fn connect_path(fd: i32, path: &[u8]) -> Result<(), i32> {
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let room = sa.sun_path.len() - 1;
    if let Some(name) = path.strip_prefix(b"@") {
        // An abstract name: a NUL, then the name (no NUL at its end).
        if name.is_empty() || name.len() > room {
            return Err(libc::EINVAL);
        }
        let mut abs = vec![0u8];
        abs.extend_from_slice(name);
        return connect_name(fd, &mut sa, &abs);
    }
    if path.len() <= room {
        return connect_name(fd, &mut sa, path);
    }
    let cut = path
        .iter()
        .rposition(|&c| c == b'/')
        .ok_or(libc::ENAMETOOLONG)?;
    let dir = std::ffi::CString::new(&path[..cut.max(1)]).map_err(|_| libc::EINVAL)?;
    // SAFETY: `dir` is a NUL-terminated path.
    let d = unsafe {
        libc::open(
            dir.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if d < 0 {
        return Err(errno());
    }
    let mut via = format!("/proc/self/fd/{d}/").into_bytes();
    via.extend_from_slice(&path[cut + 1..]);
    let r = if via.len() <= room {
        connect_name(fd, &mut sa, &via)
    } else {
        Err(libc::ENAMETOOLONG)
    };
    // SAFETY: `d` is ours and closed once.
    unsafe { libc::close(d) };
    r
}

fn connect_name(fd: i32, sa: &mut libc::sockaddr_un, name: &[u8]) -> Result<(), i32> {
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in sa.sun_path.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    let len = (std::mem::size_of::<libc::sa_family_t>() + name.len()) as libc::socklen_t;
    loop {
        // SAFETY: `sa` is a valid sockaddr_un of at least `len` bytes.
        let r = unsafe { libc::connect(fd, (sa as *const libc::sockaddr_un).cast(), len) };
        if r == 0 {
            return Ok(());
        }
        match errno() {
            libc::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// The options the supervisor gives the program's end of a connection it
/// makes: a send buffer of `sndbuf` bytes and a receive timeout of `ms`.
pub fn set_conn_opts(fd: i32, sndbuf: usize, ms: u64) -> Result<(), i32> {
    let v = sndbuf as libc::c_int;
    let tv = libc::timeval {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_usec: ((ms % 1000) * 1000) as libc::suseconds_t,
    };
    // SAFETY: each option value is valid for reads of the length given.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) | libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(errno());
    }
    Ok(())
}

/// Closes `fd` (the library's own connection).
pub fn close(fd: i32) {
    // SAFETY: `fd` is the library's own descriptor, closed once.
    unsafe { libc::close(fd) };
}

/// The effective uid of the process that made socket `fd`'s peer
/// (SO_PEERCRED).
pub fn peer_uid(fd: i32) -> Result<u32, i32> {
    let mut c = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `c` and `len` are valid for the ucred SO_PEERCRED writes.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut c as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(errno());
    }
    Ok(c.uid)
}

/// This process's real, effective and saved uids.
pub fn own_uids() -> [u32; 3] {
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: getresuid writes three uids to valid locations.
    if unsafe { libc::getresuid(&mut r, &mut e, &mut s) } != 0 {
        // SAFETY: getuid and geteuid cannot fail.
        return unsafe { [libc::getuid(), libc::geteuid(), libc::geteuid()] };
    }
    [r, e, s]
}
