//! IPv4/IPv6 socket calls on descriptors cairn holds itself (the target's
//! sockets reached through [`super::sock::pidfd_getfd`]): inet addresses,
//! the TCP_REPAIR interface, and raw IP packets to put saved datagrams
//! back. Generic socket calls (options, flags, listen) are in
//! [`super::sock`].

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::check;

/// An IPv4 or IPv6 socket address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InetAddr {
    pub ip: IpAddr,
    pub port: u16,
    /// IPv6 only.
    pub flowinfo: u32,
    /// IPv6 only.
    pub scope_id: u32,
}

impl InetAddr {
    pub fn new(ip: IpAddr, port: u16) -> InetAddr {
        InetAddr {
            ip,
            port,
            flowinfo: 0,
            scope_id: 0,
        }
    }

    /// The IPv4 address behind an IPv4-mapped IPv6 address, else the address.
    pub fn canonical_ip(&self) -> IpAddr {
        match self.ip {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        }
    }
}

impl std::fmt::Display for InetAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ip {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.port),
        }
    }
}

/// A sockaddr_storage with its length, for calls that take an address.
struct RawAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl RawAddr {
    fn empty() -> RawAddr {
        // SAFETY: sockaddr_storage is plain old data; all zeros is valid.
        let storage = unsafe { std::mem::zeroed::<libc::sockaddr_storage>() };
        RawAddr {
            storage,
            len: std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        }
    }

    fn from_addr(a: &InetAddr, family: i32) -> RawAddr {
        let mut r = RawAddr::empty();
        let p = &mut r.storage as *mut libc::sockaddr_storage;
        match (family, a.ip) {
            (libc::AF_INET, IpAddr::V4(ip)) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port.to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(ip.octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for
                // sockaddr_in.
                unsafe { std::ptr::write(p as *mut libc::sockaddr_in, sin) };
                r.len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            }
            _ => {
                let ip6 = match a.ip {
                    IpAddr::V6(v) => v,
                    IpAddr::V4(v) => v.to_ipv6_mapped(),
                };
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port.to_be(),
                    sin6_flowinfo: a.flowinfo.to_be(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: ip6.octets(),
                    },
                    sin6_scope_id: a.scope_id,
                };
                // SAFETY: sockaddr_storage is larger than and aligned for
                // sockaddr_in6.
                unsafe { std::ptr::write(p as *mut libc::sockaddr_in6, sin6) };
                r.len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            }
        }
        r
    }

    fn to_addr(&self) -> Option<InetAddr> {
        let p = &self.storage as *const libc::sockaddr_storage;
        match self.storage.ss_family as i32 {
            libc::AF_INET => {
                // SAFETY: the kernel wrote a sockaddr_in (family AF_INET).
                let sin = unsafe { std::ptr::read(p as *const libc::sockaddr_in) };
                Some(InetAddr::new(
                    IpAddr::V4(Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes())),
                    u16::from_be(sin.sin_port),
                ))
            }
            libc::AF_INET6 => {
                // SAFETY: the kernel wrote a sockaddr_in6 (family AF_INET6).
                let sin6 = unsafe { std::ptr::read(p as *const libc::sockaddr_in6) };
                Some(InetAddr {
                    ip: IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)),
                    port: u16::from_be(sin6.sin6_port),
                    flowinfo: u32::from_be(sin6.sin6_flowinfo),
                    scope_id: sin6.sin6_scope_id,
                })
            }
            _ => None,
        }
    }
}

/// socket(2) with a protocol (a raw socket), close-on-exec.
pub fn socket_proto(family: i32, ty: i32, proto: i32) -> io::Result<OwnedFd> {
    // SAFETY: integers only.
    let fd = check(unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, proto) } as libc::c_long)?
        as RawFd;
    // SAFETY: the kernel just returned this fd; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// getsockopt into `buf`; returns the length the kernel wrote.
pub fn getsockopt(fd: &impl AsRawFd, level: i32, name: i32, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `buf` is writable for `len` bytes; the kernel writes at most
    // that much and updates `len`.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            buf.as_mut_ptr() as *mut libc::c_void,
            &mut len,
        )
    };
    check(r as libc::c_long)?;
    Ok(len as usize)
}

/// setsockopt with the bytes of `buf`.
pub fn setsockopt(fd: &impl AsRawFd, level: i32, name: i32, buf: &[u8]) -> io::Result<()> {
    // SAFETY: `buf` is readable for its length; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            buf.as_ptr() as *const libc::c_void,
            buf.len() as libc::socklen_t,
        )
    };
    check(r as libc::c_long).map(drop)
}

fn name_call(
    fd: &impl AsRawFd,
    f: unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int,
) -> io::Result<Option<InetAddr>> {
    let mut a = RawAddr::empty();
    // SAFETY: `a.storage` is writable for `a.len` bytes; the kernel writes
    // at most that much and updates the length.
    let r = unsafe {
        f(
            fd.as_raw_fd(),
            &mut a.storage as *mut libc::sockaddr_storage as *mut libc::sockaddr,
            &mut a.len,
        )
    };
    match check(r as libc::c_long) {
        Ok(_) => Ok(a.to_addr()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(None),
        Err(e) => Err(e),
    }
}

/// getsockname(2).
pub fn local_addr(fd: &impl AsRawFd) -> io::Result<Option<InetAddr>> {
    name_call(fd, libc::getsockname)
}

/// getpeername(2); None if not connected.
pub fn peer_addr(fd: &impl AsRawFd) -> io::Result<Option<InetAddr>> {
    name_call(fd, libc::getpeername)
}

/// bind(2) to `a` on a socket of `family`.
pub fn bind(fd: &impl AsRawFd, a: &InetAddr, family: i32) -> io::Result<()> {
    let r = RawAddr::from_addr(a, family);
    // SAFETY: `r` holds a valid sockaddr of length `r.len`.
    let v = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &r.storage as *const libc::sockaddr_storage as *const libc::sockaddr,
            r.len,
        )
    };
    check(v as libc::c_long).map(drop)
}

/// connect(2); EINPROGRESS counts as success.
pub fn connect(fd: &impl AsRawFd, a: &InetAddr, family: i32) -> io::Result<()> {
    let r = RawAddr::from_addr(a, family);
    // SAFETY: `r` holds a valid sockaddr of length `r.len`.
    let v = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &r.storage as *const libc::sockaddr_storage as *const libc::sockaddr,
            r.len,
        )
    };
    match check(v as libc::c_long) {
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(()),
        r => r.map(drop),
    }
}

/// An ioctl that writes one int (SIOCINQ, SIOCOUTQ, SIOCOUTQNSD).
pub fn ioctl_int(fd: &impl AsRawFd, req: u64) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    // SAFETY: the request writes one int to `v`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, &mut v as *mut libc::c_int) };
    check(r as libc::c_long)?;
    Ok(v)
}

pub const SIOCINQ: u64 = 0x541B; // FIONREAD
pub const SIOCOUTQ: u64 = 0x5411; // TIOCOUTQ
pub const SIOCOUTQNSD: u64 = 0x894B;

/// recv(2) into `buf`.
pub fn recv(fd: &impl AsRawFd, buf: &mut [u8], flags: i32) -> io::Result<usize> {
    // SAFETY: `buf` is writable for its length.
    let r = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            flags,
        )
    };
    check(r as libc::c_long).map(|n| n as usize)
}

/// recvmsg(2) of one datagram: (bytes copied, its full length, sender).
pub fn recv_from(
    fd: &impl AsRawFd,
    buf: &mut [u8],
    flags: i32,
) -> io::Result<(usize, usize, Option<InetAddr>)> {
    let mut a = RawAddr::empty();
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; zeroed is a valid empty header.
    let mut msg = unsafe { std::mem::zeroed::<libc::msghdr>() };
    msg.msg_name = &mut a.storage as *mut libc::sockaddr_storage as *mut libc::c_void;
    msg.msg_namelen = a.len;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: every pointer in `msg` refers to live buffers of the given
    // lengths (`buf`, `a.storage`, `iov`), valid for the call.
    let r = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, flags | libc::MSG_TRUNC) };
    let full = check(r as libc::c_long)? as usize;
    a.len = msg.msg_namelen;
    Ok((full.min(buf.len()), full, a.to_addr()))
}

/// send(2) from `buf`.
pub fn send(fd: &impl AsRawFd, buf: &[u8], flags: i32) -> io::Result<usize> {
    // SAFETY: `buf` is readable for its length.
    let r = unsafe {
        libc::send(
            fd.as_raw_fd(),
            buf.as_ptr() as *const libc::c_void,
            buf.len(),
            flags | libc::MSG_NOSIGNAL,
        )
    };
    check(r as libc::c_long).map(|n| n as usize)
}

/// sendto(2) to `a` (a raw socket's destination).
pub fn send_to(fd: &impl AsRawFd, buf: &[u8], a: &InetAddr, family: i32) -> io::Result<usize> {
    let r = RawAddr::from_addr(a, family);
    // SAFETY: `buf` is readable for its length; `r` holds a valid sockaddr.
    let v = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            buf.as_ptr() as *const libc::c_void,
            buf.len(),
            libc::MSG_NOSIGNAL,
            &r.storage as *const libc::sockaddr_storage as *const libc::sockaddr,
            r.len,
        )
    };
    check(v as libc::c_long).map(|n| n as usize)
}

// ------------------------------------------------------------ TCP_REPAIR

pub const TCP_REPAIR: i32 = 19;
pub const TCP_REPAIR_QUEUE: i32 = 20;
pub const TCP_QUEUE_SEQ: i32 = 21;
pub const TCP_REPAIR_OPTIONS: i32 = 22;
pub const TCP_TIMESTAMP: i32 = 24;
pub const TCP_REPAIR_WINDOW: i32 = 29;
pub const TCP_RECV_QUEUE: i32 = 1;
pub const TCP_SEND_QUEUE: i32 = 2;
pub const TCPOPT_MAXSEG: u32 = 2;
pub const TCPOPT_WINDOW: u32 = 3;
pub const TCPOPT_SACK_PERM: u32 = 4;
pub const TCPOPT_TIMESTAMP: u32 = 8;
pub const TCPI_OPT_TIMESTAMPS: u8 = 1;
pub const TCPI_OPT_SACK: u8 = 2;
pub const TCPI_OPT_WSCALE: u8 = 4;

/// The head of struct tcp_info that cairn reads.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpInfo {
    pub state: u8,
    pub options: u8,
    pub snd_wscale: u8,
    pub rcv_wscale: u8,
    /// For a listener: connections waiting in the accept queue.
    pub unacked: u32,
    /// For a listener: the backlog given to listen(2).
    pub sacked: u32,
}

pub fn tcp_info(fd: &impl AsRawFd) -> io::Result<TcpInfo> {
    let mut b = [0u8; 104];
    let n = getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, &mut b)?;
    if n < 32 {
        return Err(io::Error::other(format!("short TCP_INFO ({n} bytes)")));
    }
    let u32_at = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    Ok(TcpInfo {
        state: b[0],
        options: b[5],
        snd_wscale: b[6] & 0xf,
        rcv_wscale: b[6] >> 4,
        unacked: u32_at(24),
        sacked: u32_at(28),
    })
}

/// struct tcp_repair_window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RepairWindow {
    pub snd_wl1: u32,
    pub snd_wnd: u32,
    pub max_window: u32,
    pub rcv_wnd: u32,
    pub rcv_wup: u32,
}

pub fn get_repair_window(fd: &impl AsRawFd) -> io::Result<RepairWindow> {
    let mut b = [0u8; 20];
    getsockopt(fd, libc::IPPROTO_TCP, TCP_REPAIR_WINDOW, &mut b)?;
    let w = |i: usize| u32::from_ne_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
    Ok(RepairWindow {
        snd_wl1: w(0),
        snd_wnd: w(1),
        max_window: w(2),
        rcv_wnd: w(3),
        rcv_wup: w(4),
    })
}

pub fn set_repair_window(fd: &impl AsRawFd, w: &RepairWindow) -> io::Result<()> {
    let mut b = Vec::with_capacity(20);
    for v in [w.snd_wl1, w.snd_wnd, w.max_window, w.rcv_wnd, w.rcv_wup] {
        b.extend_from_slice(&v.to_ne_bytes());
    }
    setsockopt(fd, libc::IPPROTO_TCP, TCP_REPAIR_WINDOW, &b)
}

/// TCP_REPAIR_OPTIONS: (code, value) pairs (struct tcp_repair_opt).
pub fn set_repair_options(fd: &impl AsRawFd, opts: &[(u32, u32)]) -> io::Result<()> {
    let mut b = Vec::with_capacity(8 * opts.len());
    for (c, v) in opts {
        b.extend_from_slice(&c.to_ne_bytes());
        b.extend_from_slice(&v.to_ne_bytes());
    }
    setsockopt(fd, libc::IPPROTO_TCP, TCP_REPAIR_OPTIONS, &b)
}

// ------------------------------------------------------- raw injection

fn csum_add(mut sum: u32, data: &[u8]) -> u32 {
    let mut it = data.chunks_exact(2);
    for c in &mut it {
        sum = sum.wrapping_add(u16::from_be_bytes([c[0], c[1]]) as u32);
    }
    if let [b] = it.remainder() {
        sum = sum.wrapping_add((*b as u32) << 8);
    }
    sum
}

fn csum_fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The bytes of one IP packet carrying a UDP datagram from `src` to
/// `dst` (same family), with correct checksums.
pub fn udp_packet(src: &InetAddr, dst: &InetAddr, payload: &[u8]) -> io::Result<Vec<u8>> {
    let ulen = 8 + payload.len();
    if ulen > 0xffff {
        return Err(io::Error::other("datagram too large"));
    }
    let mut udp = Vec::with_capacity(ulen);
    udp.extend_from_slice(&src.port.to_be_bytes());
    udp.extend_from_slice(&dst.port.to_be_bytes());
    udp.extend_from_slice(&(ulen as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    ip_packet(src, dst, libc::IPPROTO_UDP as u8, udp, 6)
}

/// TCP header flags.
pub const TH_FIN: u8 = 0x01;
pub const TH_ACK: u8 = 0x10;

/// The bytes of one IP packet carrying a TCP segment without data or
/// options from `src` to `dst` (same family), with correct checksums.
pub fn tcp_packet(
    src: &InetAddr,
    dst: &InetAddr,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
) -> io::Result<Vec<u8>> {
    let mut tcp = Vec::with_capacity(20);
    tcp.extend_from_slice(&src.port.to_be_bytes());
    tcp.extend_from_slice(&dst.port.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    // Data offset 5 words, no options.
    tcp.extend_from_slice(&[5 << 4, flags]);
    tcp.extend_from_slice(&window.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]);
    ip_packet(src, dst, libc::IPPROTO_TCP as u8, tcp, 16)
}

/// `l4` (a UDP or TCP header and payload, its checksum at `csum_at`
/// zero) in an IPv4 or IPv6 header from `src` to `dst`, checksums filled.
fn ip_packet(
    src: &InetAddr,
    dst: &InetAddr,
    proto: u8,
    mut l4: Vec<u8>,
    csum_at: usize,
) -> io::Result<Vec<u8>> {
    let len = l4.len();
    let pseudo = |s: &[u8], d: &[u8], l4: &[u8]| {
        let mut sum = csum_add(0, s);
        sum = csum_add(sum, d);
        sum = sum.wrapping_add(proto as u32 + len as u32);
        match csum_fold(csum_add(sum, l4)) {
            // UDP sends a computed 0 as all ones (0 means "none").
            0 => 0xffff,
            c => c,
        }
    };
    match (src.canonical_ip(), dst.canonical_ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = 20 + len;
            if total > 0xffff {
                return Err(io::Error::other("packet too large"));
            }
            let c = pseudo(&s.octets(), &d.octets(), &l4);
            l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
            let mut ip = vec![0x45, 0];
            ip.extend_from_slice(&(total as u16).to_be_bytes());
            ip.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let hc = csum_fold(csum_add(0, &ip));
            ip[10..12].copy_from_slice(&hc.to_be_bytes());
            ip.extend_from_slice(&l4);
            Ok(ip)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            if len > 0xffff {
                return Err(io::Error::other("packet too large"));
            }
            let c = pseudo(&s.octets(), &d.octets(), &l4);
            l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
            let mut ip = vec![0x60, 0, 0, 0];
            ip.extend_from_slice(&(len as u16).to_be_bytes());
            ip.extend_from_slice(&[proto, 64]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            ip.extend_from_slice(&l4);
            Ok(ip)
        }
        _ => Err(io::Error::other("source and destination families differ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_checksums_verify() {
        let s = InetAddr::new("127.0.0.1".parse().unwrap(), 4000);
        let d = InetAddr::new("127.0.0.2".parse().unwrap(), 53);
        let p = udp_packet(&s, &d, b"hello").unwrap();
        assert_eq!(p.len(), 20 + 8 + 5);
        // A correct IPv4 header sums to 0xffff.
        assert_eq!(csum_fold(csum_add(0, &p[..20])), 0);
        let mut sum = csum_add(0, &p[12..20]);
        sum = sum.wrapping_add(17 + 13);
        sum = csum_add(sum, &p[20..]);
        assert_eq!(csum_fold(sum), 0);
    }

    #[test]
    fn tcp_checksums_verify() {
        let s = InetAddr::new("::1".parse().unwrap(), 4000);
        let d = InetAddr::new("::1".parse().unwrap(), 80);
        let p = tcp_packet(&s, &d, 7, 9, TH_FIN | TH_ACK, 512).unwrap();
        assert_eq!(p.len(), 40 + 20);
        assert_eq!(p[6], 6);
        assert_eq!(&p[40 + 4..40 + 8], &7u32.to_be_bytes());
        assert_eq!(p[40 + 13], 0x11);
        let mut sum = csum_add(0, &p[8..40]);
        sum = sum.wrapping_add(6 + 20);
        sum = csum_add(sum, &p[40..]);
        assert_eq!(csum_fold(sum), 0);
    }

    #[test]
    fn mapped_addresses_are_ipv4() {
        let a = InetAddr::new("::ffff:10.0.0.1".parse().unwrap(), 1);
        assert_eq!(a.canonical_ip(), "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(a.to_string(), "[::ffff:10.0.0.1]:1");
    }
}
