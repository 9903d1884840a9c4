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
