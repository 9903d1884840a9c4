//! sendmsg with SCM_RIGHTS and SCM_CREDENTIALS: queued unix messages
//! written again with their original sender's credentials.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

/// sendmsg without blocking or SIGPIPE, with `fds` as SCM_RIGHTS (none:
/// no such message) and `cred` (pid, uid, gid) as SCM_CREDENTIALS; `to`
/// is a unix name or None for the connected peer. The kernel takes
/// another pid with CAP_SYS_ADMIN (the pid must exist), another uid/gid
/// with CAP_SETUID/CAP_SETGID. Returns the bytes sent.
pub fn send_cred(
    fd: &impl AsRawFd,
    data: &[u8],
    fds: &[RawFd],
    cred: Option<(i32, u32, u32)>,
    to: Option<&[u8]>,
) -> io::Result<usize> {
    if fds.len() > super::sock::SCM_MAX_FD {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let addr = to.map(super::sock::sockaddr_un).transpose()?;
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
    let rights = std::mem::size_of_val(fds) as u32;
    let ucred = std::mem::size_of::<libc::ucred>() as u32;
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe {
        (if fds.is_empty() {
            0
        } else {
            libc::CMSG_SPACE(rights)
        }) + cred.map_or(0, |_| libc::CMSG_SPACE(ucred))
    } as usize;
    if space > 0 {
        mh.msg_control = ctl.as_mut_ptr().cast();
        mh.msg_controllen = space;
        // SAFETY: `ctl` holds 2 KiB, more than CMSG_SPACE of 253 ints plus
        // one ucred, so both headers and their data lie inside it
        // (msg_controllen covers exactly them); the kernel only reads it
        // during sendmsg.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&mh);
            if !fds.is_empty() {
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_RIGHTS;
                (*c).cmsg_len = libc::CMSG_LEN(rights) as usize;
                let data = libc::CMSG_DATA(c) as *mut i32;
                for (i, f) in fds.iter().enumerate() {
                    std::ptr::write_unaligned(data.add(i), *f);
                }
                c = libc::CMSG_NXTHDR(&mh, c);
            }
            if let Some((pid, uid, gid)) = cred {
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_CREDENTIALS;
                (*c).cmsg_len = libc::CMSG_LEN(ucred) as usize;
                let u = libc::ucred { pid, uid, gid };
                std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut libc::ucred, u);
            }
        }
    }
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    // SAFETY: every pointer in `mh` refers to live buffers of the given
    // sizes for the duration of the call; the kernel only reads them.
    let n = unsafe { libc::sendmsg(fd.as_raw_fd(), &mh, flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}
