//! NETLINK_SOCK_DIAG: what the kernel knows about sockets, asked from
//! outside (as ss(8) does), so nothing is read from the sockets themselves.
//!
//! The transport ([`query`]) and the netlink framing ([`parse_replies`],
//! [`parse_attrs`]) are generic: a family module builds its request struct
//! and names the size of its reply header. [`unix`] is the AF_UNIX family
//! (unix_diag); other families (inet_diag) plug in the same way.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::check;

/// nlmsg_type of every sock_diag request and reply.
pub const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_HDRLEN: usize = 16;
/// Largest reply accepted (the kernel sends pages of up to 32 KiB).
const RECV_BUF: usize = 64 * 1024;

/// One reply: the family's fixed header (`hdr_len` bytes) and its netlink
/// attributes, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiagMsg {
    pub header: Vec<u8>,
    pub attrs: Vec<(u16, Vec<u8>)>,
}

impl DiagMsg {
    pub fn attr(&self, ty: u16) -> Option<&[u8]> {
        self.attrs
            .iter()
            .find(|(t, _)| *t == ty)
            .map(|(_, v)| v.as_slice())
    }

    pub fn attr_u32(&self, ty: u16) -> Option<u32> {
        self.attr(ty).and_then(|v| le_u32(v, 0))
    }

    /// The first byte of attribute `ty`, 0 without one.
    pub fn attr_u8(&self, ty: u16) -> u8 {
        self.attr(ty).and_then(|v| v.first().copied()).unwrap_or(0)
    }

    /// Attribute `ty` as two u32.
    pub fn attr_u32_pair(&self, ty: u16) -> Option<(u32, u32)> {
        self.attr(ty)
            .and_then(|v| Some((le_u32(v, 0)?, le_u32(v, 4)?)))
    }

    /// Attribute `ty` as an array of u32 (empty without one).
    pub fn attr_u32s(&self, ty: u16) -> Vec<u32> {
        self.attr(ty)
            .map(|v| v.chunks_exact(4).filter_map(|c| le_u32(c, 0)).collect())
            .unwrap_or_default()
    }
}

/// A family's request struct in the common layout: family, protocol, two
/// bytes of padding, the family's u32 fields `words`, then no cookie
/// (INET_DIAG_NOCOOKIE).
fn request_of(family: i32, protocol: u8, words: &[u32]) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + 4 * (words.len() + 2));
    b.push(family as u8);
    b.push(protocol);
    b.extend_from_slice(&[0, 0]);
    for w in words.iter().chain(&[u32::MAX, u32::MAX]) {
        b.extend_from_slice(&w.to_ne_bytes());
    }
    b
}

/// The reply for the socket with inode `ino` (the u32 at `ino_at` of the
/// reply header) in a dump of `req`, for the families the kernel answers
/// with dumps only; None if it lists no such socket.
fn dump_find(req: &[u8], hdr_len: usize, ino_at: usize, ino: u32) -> io::Result<Option<DiagMsg>> {
    Ok(query(req, true, hdr_len)?
        .into_iter()
        .find(|m| le_u32(&m.header, ino_at) == Some(ino)))
}

/// Native-endian u32 at `off` (netlink is host order; x86-64 is LE).
pub fn le_u32(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off + 4)
        .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Netlink attributes (`struct nlattr`: u16 length, u16 type, payload,
/// padded to 4 bytes). Stops at the first malformed one.
pub fn parse_attrs(mut b: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff; // no NESTED/BYTEORDER bits
        if len < 4 || len > b.len() {
            break;
        }
        out.push((ty, b[4..len].to_vec()));
        b = &b[align4(len).min(b.len())..];
    }
    out
}

/// Parses one buffer of netlink messages into `out`. Returns true once
/// the answer is complete (NLMSG_DONE, or the single reply of a non-dump
/// request when `dump` is false). An NLMSG_ERROR with a non-zero code is
/// returned as that error.
pub fn parse_replies(
    mut buf: &[u8],
    hdr_len: usize,
    dump: bool,
    out: &mut Vec<DiagMsg>,
) -> io::Result<bool> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag: {what}"));
    while buf.len() >= NLMSG_HDRLEN {
        let len = le_u32(buf, 0).unwrap_or(0) as usize;
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(bad("truncated message"));
        }
        let body = &buf[NLMSG_HDRLEN..len];
        match ty {
            NLMSG_DONE => {
                // Since 4.x the payload may carry an error code.
                let code = le_u32(body, 0).map(|v| v as i32).unwrap_or(0);
                if code < 0 {
                    return Err(io::Error::from_raw_os_error(-code));
                }
                return Ok(true);
            }
            NLMSG_ERROR => {
                let code = le_u32(body, 0).map(|v| v as i32).unwrap_or(0);
                if code < 0 {
                    return Err(io::Error::from_raw_os_error(-code));
                }
                return Ok(true);
            }
            SOCK_DIAG_BY_FAMILY => {
                if body.len() < hdr_len {
                    return Err(bad("reply shorter than its header"));
                }
                out.push(DiagMsg {
                    header: body[..hdr_len].to_vec(),
                    attrs: parse_attrs(&body[align4(hdr_len).min(body.len())..]),
                });
                if !dump {
                    return Ok(true);
                }
            }
            _ => {}
        }
        buf = &buf[align4(len).min(buf.len())..];
    }
    Ok(false)
}

/// Sends one SOCK_DIAG_BY_FAMILY request whose body is `req` (the
/// family's request struct), as a dump (`NLM_F_DUMP`) or a single lookup,
/// and returns every reply. A lookup that finds nothing is an error
/// (ENOENT from the kernel).
pub fn query(req: &[u8], dump: bool, hdr_len: usize) -> io::Result<Vec<DiagMsg>> {
    // SAFETY: socket() takes only integers.
    let fd = check(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    } as libc::c_long)?;
    // SAFETY: the descriptor was just returned by the kernel and is owned by nobody else.
    let sk = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut msg = Vec::with_capacity(NLMSG_HDRLEN + req.len());
    let flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { 0 };
    msg.extend_from_slice(&((NLMSG_HDRLEN + req.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
    msg.extend_from_slice(req);
    // SAFETY: an all-zero sockaddr_nl is valid; the kernel is port 0.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: `msg` and `sa` are valid for the given lengths during the call.
    let r = unsafe {
        libc::sendto(
            sk.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    check(r as libc::c_long)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        // SAFETY: `buf` is valid for writes of its length during the call.
        let n = unsafe { libc::recv(sk.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let n = check(n as libc::c_long)? as usize;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "sock_diag: no reply",
            ));
        }
        if parse_replies(&buf[..n], hdr_len, dump, &mut out)? {
            return Ok(out);
        }
    }
}

/// AF_UNIX (unix_diag).
pub mod unix {
    use super::{le_u32, query, DiagMsg};
    use std::io;

    pub const UDIAG_SHOW_NAME: u32 = 0x01;
    pub const UDIAG_SHOW_VFS: u32 = 0x02;
    pub const UDIAG_SHOW_PEER: u32 = 0x04;
    pub const UDIAG_SHOW_ICONS: u32 = 0x08;
    pub const UDIAG_SHOW_RQLEN: u32 = 0x10;
    pub const UDIAG_SHOW_MEMINFO: u32 = 0x20;
    pub const UDIAG_SHOW_UID: u32 = 0x40;
    /// Everything cairn uses.
    pub const SHOW_ALL: u32 = UDIAG_SHOW_NAME
        | UDIAG_SHOW_VFS
        | UDIAG_SHOW_PEER
        | UDIAG_SHOW_ICONS
        | UDIAG_SHOW_RQLEN
        | UDIAG_SHOW_UID;

    const UNIX_DIAG_NAME: u16 = 0;
    const UNIX_DIAG_VFS: u16 = 1;
    const UNIX_DIAG_PEER: u16 = 2;
    const UNIX_DIAG_ICONS: u16 = 3;
    const UNIX_DIAG_RQLEN: u16 = 4;
    const UNIX_DIAG_SHUTDOWN: u16 = 6;
    const UNIX_DIAG_UID: u16 = 7;

    /// sizeof(struct unix_diag_msg).
    const MSG_LEN: usize = 16;

    /// Socket states as unix_diag reports them (the TCP numbers).
    pub const TCP_ESTABLISHED: u8 = 1;
    pub const TCP_CLOSE: u8 = 7;
    pub const TCP_LISTEN: u8 = 10;

    /// One unix socket as the kernel describes it.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct UnixDiag {
        pub ino: u32,
        /// SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET.
        pub ty: u8,
        pub state: u8,
        /// The bound address (sun_path bytes as the kernel keeps them: a
        /// path with its NUL, or a leading NUL for an abstract name);
        /// None if unbound. An accepted socket carries its listener's.
        pub name: Option<Vec<u8>>,
        /// (inode, kernel dev_t) of the socket file of a path name.
        pub vfs: Option<(u32, u32)>,
        /// The peer's inode; Some(0) when the peer has no inode any more
        /// (closed, or a connection not accepted yet).
        pub peer: Option<u32>,
        /// Listener: for each connection waiting to be accepted, in queue
        /// order, the inode of its connecting socket (0 if closed).
        pub icons: Vec<u32>,
        /// Listener: connections waiting and the backlog; others: bytes
        /// readable (stream, seqpacket; first datagram for dgram) and bytes
        /// sent but not yet read by the peer.
        pub rqlen: Option<(u32, u32)>,
        /// sk_shutdown bits (1 = RCV_SHUTDOWN, 2 = SEND_SHUTDOWN).
        pub shutdown: u8,
        pub uid: Option<u32>,
    }

    /// struct unix_diag_req for one inode (Some) or for all sockets.
    pub fn request(ino: Option<u32>, show: u32) -> Vec<u8> {
        // Every state.
        super::request_of(libc::AF_UNIX, 0, &[u32::MAX, ino.unwrap_or(0), show])
    }

    pub fn parse(m: &DiagMsg) -> UnixDiag {
        let h = &m.header;
        let mut d = UnixDiag {
            ty: h.get(1).copied().unwrap_or(0),
            state: h.get(2).copied().unwrap_or(0),
            ino: le_u32(h, 4).unwrap_or(0),
            ..Default::default()
        };
        d.name = m.attr(UNIX_DIAG_NAME).map(|v| v.to_vec());
        d.vfs = m.attr_u32_pair(UNIX_DIAG_VFS);
        d.peer = m.attr_u32(UNIX_DIAG_PEER);
        d.icons = m.attr_u32s(UNIX_DIAG_ICONS);
        d.rqlen = m.attr_u32_pair(UNIX_DIAG_RQLEN);
        d.shutdown = m.attr_u8(UNIX_DIAG_SHUTDOWN);
        d.uid = m.attr_u32(UNIX_DIAG_UID);
        d
    }

    /// Every unix socket of cairn's network namespace.
    pub fn dump_all() -> io::Result<Vec<UnixDiag>> {
        Ok(query(&request(None, SHOW_ALL), true, MSG_LEN)?
            .iter()
            .map(parse)
            .collect())
    }

    /// One socket by inode; ENOENT if the kernel has no unix socket with it
    /// in this network namespace.
    pub fn by_ino(ino: u32) -> io::Result<UnixDiag> {
        query(&request(Some(ino), SHOW_ALL), false, MSG_LEN)?
            .first()
            .map(parse)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nlmsg(ty: u16, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&2u16.to_ne_bytes());
        m.extend_from_slice(&[0; 8]);
        m.extend_from_slice(body);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    fn attr(ty: u16, v: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(v);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    #[test]
    fn unix_reply_roundtrip() {
        let mut body = vec![libc::AF_UNIX as u8, 1, 10, 0];
        body.extend_from_slice(&4242u32.to_ne_bytes());
        body.extend_from_slice(&[0; 8]);
        body.extend(attr(0, b"/tmp/sock\0"));
        body.extend(attr(2, &7u32.to_ne_bytes()));
        let mut icons = 5u32.to_ne_bytes().to_vec();
        icons.extend_from_slice(&6u32.to_ne_bytes());
        body.extend(attr(3, &icons));
        body.extend(attr(6, &[3]));
        let mut buf = nlmsg(SOCK_DIAG_BY_FAMILY, &body);
        buf.extend(nlmsg(NLMSG_DONE, &0u32.to_ne_bytes()));
        let mut out = Vec::new();
        assert!(parse_replies(&buf, 16, true, &mut out).unwrap());
        assert_eq!(out.len(), 1);
        let d = unix::parse(&out[0]);
        assert_eq!(d.ino, 4242);
        assert_eq!(d.ty, 1);
        assert_eq!(d.state, unix::TCP_LISTEN);
        assert_eq!(d.name.as_deref(), Some(&b"/tmp/sock\0"[..]));
        assert_eq!(d.peer, Some(7));
        assert_eq!(d.icons, vec![5, 6]);
        assert_eq!(d.shutdown, 3);
        assert_eq!(d.vfs, None);
    }

    #[test]
    fn errors_and_truncation() {
        let buf = nlmsg(NLMSG_ERROR, &(-libc::ENOENT).to_ne_bytes());
        let e = parse_replies(&buf, 16, false, &mut Vec::new()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        let mut buf = nlmsg(SOCK_DIAG_BY_FAMILY, &[0; 16]);
        buf.truncate(20);
        assert!(parse_replies(&buf, 16, true, &mut Vec::new()).is_err());
        // A header shorter than the family's is refused.
        let buf = nlmsg(SOCK_DIAG_BY_FAMILY, &[0; 8]);
        assert!(parse_replies(&buf, 16, true, &mut Vec::new()).is_err());
        // Attributes: a bad length stops parsing.
        assert_eq!(parse_attrs(&[2, 0, 0, 0]), vec![]);
        assert_eq!(parse_attrs(&attr(1, b"ab")), vec![(1, b"ab".to_vec())]);
    }

    /// netlink_diag and packet_diag find cairn's own sockets by inode,
    /// with their port id and groups, and their interface.
    #[test]
    fn finds_own_netlink_and_packet_sockets() {
        use std::os::unix::fs::MetadataExt;
        let ino = |f: &OwnedFd| {
            std::fs::metadata(format!("/proc/self/fd/{}", f.as_raw_fd()))
                .unwrap()
                .ino() as u32
        };
        let s =
            super::super::net::socket_proto(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE)
                .unwrap();
        super::super::netlink::nl_bind(&s, super::super::netlink::NlAddr { pid: 0, groups: 1 })
            .unwrap();
        let port = super::super::netlink::nl_name(&s).unwrap().pid;
        let d = netlink::by_ino(0, ino(&s)).unwrap().expect("listed");
        assert_eq!(d.portid, port);
        assert_eq!(d.groups.first().copied(), Some(1));
        assert_eq!(d.rmem_alloc, Some(0));
        assert_eq!(d.flags.map(|f| f & netlink::FLAG_CB_RUNNING), Some(0));
        // Packet sockets need CAP_NET_RAW.
        let Ok(p) = super::super::net::socket_proto(libc::AF_PACKET, libc::SOCK_DGRAM, 0) else {
            return;
        };
        let d = packet::by_ino(ino(&p)).unwrap().expect("listed");
        assert_eq!(d.ty, libc::SOCK_DGRAM as u8);
        assert!(d.info.is_some() && d.rx_ring.is_none() && d.fanout.is_none());
        assert!(d.mclist.is_empty());
    }

    #[test]
    fn finds_own_socketpair() {
        let (a, b) = super::super::sock::socketpair(libc::SOCK_STREAM).unwrap();
        use std::os::unix::fs::MetadataExt;
        let ino = |f: &OwnedFd| {
            std::fs::metadata(format!("/proc/self/fd/{}", f.as_raw_fd()))
                .unwrap()
                .ino() as u32
        };
        let (ia, ib) = (ino(&a), ino(&b));
        let da = unix::by_ino(ia).expect("unix_diag by inode");
        assert_eq!(da.ty, libc::SOCK_STREAM as u8);
        assert_eq!(da.state, unix::TCP_ESTABLISHED);
        assert_eq!(da.peer, Some(ib));
        let all = unix::dump_all().expect("unix_diag dump");
        assert!(all.iter().any(|d| d.ino == ib && d.peer == Some(ia)));
    }
}

/// AF_NETLINK (netlink_diag). The kernel answers dumps only, so a socket
/// is found by inode in a dump of its protocol.
pub mod netlink {
    use super::{le_u32, DiagMsg};
    use std::io;

    const NDIAG_SHOW_MEMINFO: u32 = 0x1;
    const NDIAG_SHOW_GROUPS: u32 = 0x2;
    const NDIAG_SHOW_FLAGS: u32 = 0x8;
    const NETLINK_DIAG_MEMINFO: u16 = 0;
    const NETLINK_DIAG_GROUPS: u16 = 1;
    const NETLINK_DIAG_FLAGS: u16 = 4;
    /// NDIAG_FLAG_CB_RUNNING: a dump is in progress on the socket.
    pub const FLAG_CB_RUNNING: u32 = 0x1;
    /// NDIAG_FLAG_LISTEN_ALL_NSID: NETLINK_LISTEN_ALL_NSID is set.
    pub const FLAG_LISTEN_ALL_NSID: u32 = 0x10;
    /// sizeof(struct netlink_diag_msg).
    const MSG_LEN: usize = 28;
    /// Offset of `ndiag_ino` in it.
    const INO_AT: usize = 16;

    /// One netlink socket as netlink_diag describes it.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct NetlinkDiag {
        pub ty: u8,
        pub protocol: u8,
        pub portid: u32,
        pub dst_portid: u32,
        pub dst_group: u32,
        pub ino: u32,
        /// Bytes queued for reading (SK_MEMINFO_RMEM_ALLOC).
        pub rmem_alloc: Option<u32>,
        /// The group bitmap (bit g-1 for group g).
        pub groups: Vec<u32>,
        /// NDIAG_FLAG_* bits.
        pub flags: Option<u32>,
    }

    /// struct netlink_diag_req for every socket of `protocol`.
    pub fn request(protocol: u8) -> Vec<u8> {
        let show = NDIAG_SHOW_MEMINFO | NDIAG_SHOW_GROUPS | NDIAG_SHOW_FLAGS;
        // ino 0: not filtered by the kernel.
        super::request_of(libc::AF_NETLINK, protocol, &[0, show])
    }

    pub fn parse(m: &DiagMsg) -> NetlinkDiag {
        let h = &m.header;
        NetlinkDiag {
            ty: h.get(1).copied().unwrap_or(0),
            protocol: h.get(2).copied().unwrap_or(0),
            portid: le_u32(h, 4).unwrap_or(0),
            dst_portid: le_u32(h, 8).unwrap_or(0),
            dst_group: le_u32(h, 12).unwrap_or(0),
            ino: le_u32(h, INO_AT).unwrap_or(0),
            rmem_alloc: m.attr_u32(NETLINK_DIAG_MEMINFO),
            groups: m.attr_u32s(NETLINK_DIAG_GROUPS),
            flags: m.attr_u32(NETLINK_DIAG_FLAGS),
        }
    }

    /// The netlink socket of `protocol` with inode `ino` in cairn's network
    /// namespace, if the kernel lists it (it lists bound sockets and those
    /// with multicast groups; an unbound socket without groups has no
    /// state to list).
    pub fn by_ino(protocol: u8, ino: u32) -> io::Result<Option<NetlinkDiag>> {
        Ok(super::dump_find(&request(protocol), MSG_LEN, INO_AT, ino)?
            .as_ref()
            .map(parse))
    }
}

/// AF_PACKET (packet_diag). Dumps only, found by inode.
pub mod packet {
    use super::{le_u32, DiagMsg};
    use std::io;

    const PACKET_SHOW_INFO: u32 = 0x1;
    const PACKET_SHOW_MCLIST: u32 = 0x2;
    const PACKET_SHOW_RING_CFG: u32 = 0x4;
    const PACKET_SHOW_FANOUT: u32 = 0x8;
    const PACKET_SHOW_MEMINFO: u32 = 0x10;
    const PACKET_DIAG_INFO: u16 = 0;
    const PACKET_DIAG_MCLIST: u16 = 1;
    const PACKET_DIAG_RX_RING: u16 = 2;
    const PACKET_DIAG_TX_RING: u16 = 3;
    const PACKET_DIAG_FANOUT: u16 = 4;
    const PACKET_DIAG_MEMINFO: u16 = 6;
    /// sizeof(struct packet_diag_msg).
    const MSG_LEN: usize = 16;

    /// struct packet_diag_info.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct Info {
        pub ifindex: u32,
        pub version: u32,
        pub reserve: u32,
        pub copy_thresh: u32,
        pub tstamp: u32,
        /// PDI_RUNNING 1, PDI_AUXDATA 2, PDI_ORIGDEV 4, PDI_VNETHDR 8,
        /// PDI_LOSS 0x10.
        pub flags: u32,
    }

    /// One entry of struct packet_diag_mclist.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct Mc {
        pub ifindex: u32,
        pub count: u32,
        pub ty: u16,
        pub addr: Vec<u8>,
    }

    /// struct packet_diag_ring.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct Ring {
        pub block_size: u32,
        pub block_nr: u32,
        pub frame_size: u32,
        pub frame_nr: u32,
        pub retire_tmo: u32,
        pub sizeof_priv: u32,
        pub features: u32,
    }

    /// One packet socket as packet_diag describes it.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct PacketDiag {
        pub ty: u8,
        /// The protocol (network byte order, as in sockaddr_ll).
        pub num: u16,
        pub ino: u32,
        pub info: Option<Info>,
        pub mclist: Vec<Mc>,
        pub rx_ring: Option<Ring>,
        pub tx_ring: Option<Ring>,
        /// id | type << 16 | flags << 24 of its fanout group.
        pub fanout: Option<u32>,
        pub rmem_alloc: Option<u32>,
    }

    pub fn request() -> Vec<u8> {
        let show = PACKET_SHOW_INFO
            | PACKET_SHOW_MCLIST
            | PACKET_SHOW_RING_CFG
            | PACKET_SHOW_FANOUT
            | PACKET_SHOW_MEMINFO;
        super::request_of(libc::AF_PACKET, 0, &[0, show])
    }

    fn ring(v: &[u8]) -> Option<Ring> {
        Some(Ring {
            block_size: le_u32(v, 0)?,
            block_nr: le_u32(v, 4)?,
            frame_size: le_u32(v, 8)?,
            frame_nr: le_u32(v, 12)?,
            retire_tmo: le_u32(v, 16)?,
            sizeof_priv: le_u32(v, 20)?,
            features: le_u32(v, 24)?,
        })
    }

    pub fn parse(m: &DiagMsg) -> PacketDiag {
        let h = &m.header;
        let info = m.attr(PACKET_DIAG_INFO).and_then(|v| {
            Some(Info {
                ifindex: le_u32(v, 0)?,
                version: le_u32(v, 4)?,
                reserve: le_u32(v, 8)?,
                copy_thresh: le_u32(v, 12)?,
                tstamp: le_u32(v, 16)?,
                flags: le_u32(v, 20)?,
            })
        });
        // struct packet_diag_mclist: u32 index, u32 count, u16 type,
        // u16 alen, u8 addr[32] (44 bytes).
        let mclist = m
            .attr(PACKET_DIAG_MCLIST)
            .map(|v| {
                v.chunks_exact(44)
                    .map(|c| {
                        let alen = (u16::from_ne_bytes([c[10], c[11]]) as usize).min(32);
                        Mc {
                            ifindex: le_u32(c, 0).unwrap_or(0),
                            count: le_u32(c, 4).unwrap_or(0),
                            ty: u16::from_ne_bytes([c[8], c[9]]),
                            addr: c[12..12 + alen].to_vec(),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        PacketDiag {
            ty: h.get(1).copied().unwrap_or(0),
            num: h
                .get(2..4)
                .map(|s| u16::from_ne_bytes([s[0], s[1]]))
                .unwrap_or(0),
            ino: le_u32(h, 4).unwrap_or(0),
            info,
            mclist,
            rx_ring: m.attr(PACKET_DIAG_RX_RING).and_then(ring),
            tx_ring: m.attr(PACKET_DIAG_TX_RING).and_then(ring),
            fanout: m.attr_u32(PACKET_DIAG_FANOUT),
            rmem_alloc: m.attr_u32(PACKET_DIAG_MEMINFO),
        }
    }

    /// Every packet socket of cairn's network namespace.
    pub fn dump_all() -> io::Result<Vec<PacketDiag>> {
        Ok(super::query(&request(), true, MSG_LEN)?
            .iter()
            .map(parse)
            .collect())
    }

    /// The packet socket with inode `ino` in cairn's network namespace.
    pub fn by_ino(ino: u32) -> io::Result<Option<PacketDiag>> {
        Ok(super::dump_find(&request(), MSG_LEN, 4, ino)?
            .as_ref()
            .map(parse))
    }
}

/// AF_INET/AF_INET6 (inet_diag): what a socket does not tell through
/// getsockopt, such as a UDP socket's shutdown state.
pub mod inet {
    use std::io;

    /// sizeof(struct inet_diag_msg).
    const MSG_LEN: usize = 72;
    /// Offset of `idiag_inode` in struct inet_diag_msg.
    const INODE_AT: usize = 68;
    const INET_DIAG_SHUTDOWN: u16 = 8;

    /// struct inet_diag_req_v2 for every socket of `family`/`protocol`
    /// in every state, no extensions (INET_DIAG_SHUTDOWN always comes).
    pub fn request(family: u8, protocol: u8) -> Vec<u8> {
        let mut b = vec![0u8; 56];
        b[0] = family;
        b[1] = protocol;
        b[4..8].copy_from_slice(&u32::MAX.to_ne_bytes()); // every state
                                                          // No cookie: INET_DIAG_NOCOOKIE.
        b[48..52].copy_from_slice(&u32::MAX.to_ne_bytes());
        b[52..56].copy_from_slice(&u32::MAX.to_ne_bytes());
        b
    }

    /// The shutdown bits (RCV_SHUTDOWN 1, SEND_SHUTDOWN 2) of the socket
    /// with inode `ino`, of `family` and `protocol` in cairn's network
    /// namespace; None if the kernel lists no such socket.
    pub fn shutdown_of(family: u8, protocol: u8, ino: u32) -> io::Result<Option<u8>> {
        let m = super::dump_find(&request(family, protocol), MSG_LEN, INODE_AT, ino)?;
        Ok(m.map(|m| m.attr_u8(INET_DIAG_SHUTDOWN)))
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::os::fd::AsRawFd;

        fn ino_of(fd: &impl AsRawFd) -> u32 {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .unwrap()
                .ino() as u32
        }

        #[test]
        fn udp_shutdown_is_seen() {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let ino = ino_of(&s);
            let udp = libc::IPPROTO_UDP as u8;
            let fam = libc::AF_INET as u8;
            let Ok(first) = shutdown_of(fam, udp, ino) else {
                eprintln!("skipped: no inet_diag for UDP here");
                return;
            };
            assert_eq!(first, Some(0));
            s.connect("127.0.0.1:9").unwrap();
            nix::sys::socket::shutdown(s.as_raw_fd(), nix::sys::socket::Shutdown::Read).unwrap();
            assert_eq!(shutdown_of(fam, udp, ino).unwrap(), Some(1));
        }
    }
}
