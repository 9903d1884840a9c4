//! Netlink and packet socket addresses on cairn's own descriptors (copies
//! of a task's sockets taken with pidfd_getfd, or new sockets of a
//! restore): `sockaddr_nl` and `sockaddr_ll` for bind, connect,
//! getsockname and getpeername, and interface names.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::AsRawFd;

use super::check;

/// SOL_NETLINK.
pub const SOL_NETLINK: i32 = 270;
/// SOL_PACKET.
pub const SOL_PACKET: i32 = 263;

/// A netlink address: port id and the first 32 groups as a bitmap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NlAddr {
    pub pid: u32,
    pub groups: u32,
}

fn nl_call(fd: &impl AsRawFd, peer: bool) -> io::Result<NlAddr> {
    // SAFETY: an all-zero sockaddr_nl is valid storage.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    let p = (&mut sa as *mut libc::sockaddr_nl).cast();
    // SAFETY: `sa` and `len` are valid for writes of their sizes.
    let r = unsafe {
        if peer {
            libc::getpeername(fd.as_raw_fd(), p, &mut len)
        } else {
            libc::getsockname(fd.as_raw_fd(), p, &mut len)
        }
    };
    check(r as libc::c_long)?;
    Ok(NlAddr {
        pid: sa.nl_pid,
        groups: sa.nl_groups,
    })
}

/// getsockname of a netlink socket (port id 0: not bound).
pub fn nl_name(fd: &impl AsRawFd) -> io::Result<NlAddr> {
    nl_call(fd, false)
}

/// getpeername of a netlink socket (the kernel answers 0/0 when it is not
/// connected).
pub fn nl_peer(fd: &impl AsRawFd) -> io::Result<NlAddr> {
    nl_call(fd, true)
}

fn nl_sa(a: NlAddr) -> libc::sockaddr_nl {
    // SAFETY: an all-zero sockaddr_nl is valid.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    sa.nl_pid = a.pid;
    sa.nl_groups = a.groups;
    sa
}

/// bind(2) of a netlink socket.
pub fn nl_bind(fd: &impl AsRawFd, a: NlAddr) -> io::Result<()> {
    let sa = nl_sa(a);
    // SAFETY: `sa` is a valid sockaddr_nl of the given length.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    check(r as libc::c_long).map(drop)
}

/// connect(2) of a netlink socket.
pub fn nl_connect(fd: &impl AsRawFd, a: NlAddr) -> io::Result<()> {
    let sa = nl_sa(a);
    // SAFETY: `sa` is a valid sockaddr_nl of the given length.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    check(r as libc::c_long).map(drop)
}

/// NETLINK_LIST_MEMBERSHIPS: the group numbers (1-based) the socket is a
/// member of, all of them (also those above 32).
pub fn nl_memberships(fd: &impl AsRawFd) -> io::Result<Vec<u32>> {
    const NETLINK_LIST_MEMBERSHIPS: i32 = 9;
    let mut buf = vec![0u8; 64];
    loop {
        let mut len = buf.len() as libc::socklen_t;
        // SAFETY: `buf` is writable for `len` bytes; the kernel writes at
        // most that much and reports the size it needs in `len`.
        let r = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                SOL_NETLINK,
                NETLINK_LIST_MEMBERSHIPS,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        check(r as libc::c_long)?;
        let need = len as usize;
        if need > buf.len() {
            if need > 1 << 20 {
                return Err(io::Error::other(
                    "NETLINK_LIST_MEMBERSHIPS: too many groups",
                ));
            }
            buf.resize(need, 0);
            continue;
        }
        let mut out = Vec::new();
        for (i, c) in buf[..need].chunks_exact(4).enumerate() {
            let w = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
            for b in 0..32 {
                if w & (1 << b) != 0 {
                    out.push(i as u32 * 32 + b + 1);
                }
            }
        }
        return Ok(out);
    }
}

/// A packet socket's address: interface index and protocol (network
/// byte order, as in sockaddr_ll).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LlAddr {
    pub ifindex: i32,
    pub protocol_be: u16,
}

/// getsockname of a packet socket.
pub fn ll_name(fd: &impl AsRawFd) -> io::Result<LlAddr> {
    // SAFETY: an all-zero sockaddr_ll is valid storage.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `sa` and `len` are valid for writes of their sizes.
    let r = unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&mut sa as *mut libc::sockaddr_ll).cast(),
            &mut len,
        )
    };
    check(r as libc::c_long)?;
    Ok(LlAddr {
        ifindex: sa.sll_ifindex,
        protocol_be: sa.sll_protocol,
    })
}

/// bind(2) of a packet socket to an interface (0: all) and protocol.
pub fn ll_bind(fd: &impl AsRawFd, a: LlAddr) -> io::Result<()> {
    // SAFETY: an all-zero sockaddr_ll is valid.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_ifindex = a.ifindex;
    sa.sll_protocol = a.protocol_be;
    // SAFETY: `sa` is a valid sockaddr_ll of the given length.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    check(r as libc::c_long).map(drop)
}

/// PACKET_ADD_MEMBERSHIP with a struct packet_mreq.
pub fn packet_add_membership(
    fd: &impl AsRawFd,
    ifindex: i32,
    ty: u16,
    addr: &[u8],
) -> io::Result<()> {
    const PACKET_ADD_MEMBERSHIP: i32 = 1;
    let mut b = Vec::with_capacity(16);
    b.extend_from_slice(&ifindex.to_ne_bytes());
    b.extend_from_slice(&ty.to_ne_bytes());
    b.extend_from_slice(&(addr.len().min(8) as u16).to_ne_bytes());
    let mut a = [0u8; 8];
    let n = addr.len().min(8);
    a[..n].copy_from_slice(&addr[..n]);
    b.extend_from_slice(&a);
    super::net::setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &b)
}

/// The name of interface `ifindex` in cairn's network namespace.
pub fn if_name(ifindex: u32) -> io::Result<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into `buf`.
    let s = unsafe { CStr::from_ptr(buf.as_ptr()) };
    Ok(s.to_string_lossy().into_owned())
}

/// The index of interface `name` in cairn's network namespace.
pub fn if_index(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `c` is NUL-terminated.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netlink_bind_and_memberships() {
        let s =
            super::super::net::socket_proto(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE)
                .unwrap();
        assert_eq!(nl_name(&s).unwrap().pid, 0);
        // RTMGRP_LINK (group 1); group 40 only through ADD_MEMBERSHIP.
        nl_bind(&s, NlAddr { pid: 0, groups: 1 }).unwrap();
        let a = nl_name(&s).unwrap();
        assert_ne!(a.pid, 0);
        assert_eq!(a.groups, 1);
        assert_eq!(nl_memberships(&s).unwrap(), vec![1]);
        assert_eq!(nl_peer(&s).unwrap(), NlAddr::default());
    }

    #[test]
    fn loopback_name() {
        assert_eq!(if_name(if_index("lo").unwrap()).unwrap(), "lo");
    }
}
