//! IPv4 and IPv6 sockets: TCP (listening, unconnected, established with
//! `--tcp-established`, see [`super::tcp`]) and UDP (bound, connected,
//! with their queued datagrams).
//!
//! cairn reaches a socket of the target through `pidfd_getfd`: its own
//! descriptor for the same open file description, on which it reads (dump)
//! or sets (restore) everything with ordinary socket calls. On restore the
//! socket itself is created by an injected `socket(2)` in the vessel, so it
//! belongs to the restored process's network namespace, and then
//! configured from cairn through such a descriptor.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;

use crate::error::{Error, Result};
use crate::image::proto::{file_desc, Datagram, FdTable, Files, InetSk, NamedInt};
use crate::image::validate::{
    bad as invalid, check_bytes, check_name, count, short, MAX_ITEMS, QUEUE_MAX,
};
use crate::kinds::fd::{not_mine, DumpCx, FdKind, FdRef, RestoreCx};
use crate::netlock::{self, Conn, Lock};
use crate::procfs::{self, FdInfo};
use crate::remote::Calls;
use crate::sys::net::{self, InetAddr};
use crate::sys::sock;
use crate::{info, warn};
use std::path::Path;

pub const TCP_ESTABLISHED: u32 = 1;
pub const TCP_CLOSE: u32 = 7;
pub const TCP_LISTEN: u32 = 10;

/// The name of a TCP state (tcp_states.h).
pub fn tcp_state_name(s: u32) -> &'static str {
    match s {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => "unknown",
    }
}

// ------------------------------------------------------------ addresses

pub use crate::netlock::{addr_from_proto, addr_to_proto};

fn proto_name(family: i32, proto: i32) -> String {
    let p = match proto {
        libc::IPPROTO_TCP => "TCP",
        libc::IPPROTO_UDP => "UDP",
        _ => "",
    };
    let f = if family == libc::AF_INET6 { "v6" } else { "v4" };
    if p.is_empty() {
        format!("IP{f} protocol {proto}")
    } else {
        format!("{p}{f}")
    }
}

// ------------------------------------------------------------ options

#[derive(Clone, Copy, PartialEq, Eq)]
enum For {
    All,
    Tcp,
    /// TCP sockets that are not connected (listening or closed).
    TcpUnconnected,
    Udp,
    V4,
    V6,
    V4Udp,
    V6Udp,
}

/// TCP, IP and IPv6 integer options, saved by name and restored when
/// they differ from a fresh socket's (SOL_SOCKET options are
/// [`super::sockopts`]'s).
const INT_OPTS: &[(&str, i32, i32, For)] = &[
    (
        "SO_REUSEADDR",
        libc::SOL_SOCKET,
        libc::SO_REUSEADDR,
        For::All,
    ),
    (
        "SO_REUSEPORT",
        libc::SOL_SOCKET,
        libc::SO_REUSEPORT,
        For::All,
    ),
    (
        "SO_KEEPALIVE",
        libc::SOL_SOCKET,
        libc::SO_KEEPALIVE,
        For::Tcp,
    ),
    (
        "SO_OOBINLINE",
        libc::SOL_SOCKET,
        libc::SO_OOBINLINE,
        For::Tcp,
    ),
    (
        "SO_BROADCAST",
        libc::SOL_SOCKET,
        libc::SO_BROADCAST,
        For::Udp,
    ),
    (
        "SO_DONTROUTE",
        libc::SOL_SOCKET,
        libc::SO_DONTROUTE,
        For::All,
    ),
    // IP_TOS sets the priority too: it goes first.
    ("IP_TOS", libc::IPPROTO_IP, libc::IP_TOS, For::V4),
    (
        "IPV6_TCLASS",
        libc::IPPROTO_IPV6,
        libc::IPV6_TCLASS,
        For::V6,
    ),
    (
        "TCP_NODELAY",
        libc::IPPROTO_TCP,
        libc::TCP_NODELAY,
        For::Tcp,
    ),
    ("TCP_CORK", libc::IPPROTO_TCP, libc::TCP_CORK, For::Tcp),
    (
        "TCP_KEEPIDLE",
        libc::IPPROTO_TCP,
        libc::TCP_KEEPIDLE,
        For::Tcp,
    ),
    (
        "TCP_KEEPINTVL",
        libc::IPPROTO_TCP,
        libc::TCP_KEEPINTVL,
        For::Tcp,
    ),
    (
        "TCP_KEEPCNT",
        libc::IPPROTO_TCP,
        libc::TCP_KEEPCNT,
        For::Tcp,
    ),
    ("TCP_SYNCNT", libc::IPPROTO_TCP, libc::TCP_SYNCNT, For::Tcp),
    (
        "TCP_LINGER2",
        libc::IPPROTO_TCP,
        libc::TCP_LINGER2,
        For::Tcp,
    ),
    (
        "TCP_DEFER_ACCEPT",
        libc::IPPROTO_TCP,
        libc::TCP_DEFER_ACCEPT,
        For::Tcp,
    ),
    (
        "TCP_USER_TIMEOUT",
        libc::IPPROTO_TCP,
        libc::TCP_USER_TIMEOUT,
        For::Tcp,
    ),
    (
        "TCP_NOTSENT_LOWAT",
        libc::IPPROTO_TCP,
        libc::TCP_NOTSENT_LOWAT,
        For::Tcp,
    ),
    (
        "TCP_MAXSEG",
        libc::IPPROTO_TCP,
        libc::TCP_MAXSEG,
        For::TcpUnconnected,
    ),
    (
        "TCP_FASTOPEN",
        libc::IPPROTO_TCP,
        libc::TCP_FASTOPEN,
        For::TcpUnconnected,
    ),
    ("IP_TTL", libc::IPPROTO_IP, libc::IP_TTL, For::V4),
    ("IP_FREEBIND", libc::IPPROTO_IP, libc::IP_FREEBIND, For::V4),
    (
        "IP_TRANSPARENT",
        libc::IPPROTO_IP,
        libc::IP_TRANSPARENT,
        For::V4,
    ),
    (
        "IP_MTU_DISCOVER",
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        For::V4,
    ),
    ("IP_RECVERR", libc::IPPROTO_IP, libc::IP_RECVERR, For::V4),
    (
        "IP_BIND_ADDRESS_NO_PORT",
        libc::IPPROTO_IP,
        libc::IP_BIND_ADDRESS_NO_PORT,
        For::V4,
    ),
    ("IP_PKTINFO", libc::IPPROTO_IP, libc::IP_PKTINFO, For::V4Udp),
    ("IP_RECVTOS", libc::IPPROTO_IP, libc::IP_RECVTOS, For::V4Udp),
    (
        "IP_MULTICAST_TTL",
        libc::IPPROTO_IP,
        libc::IP_MULTICAST_TTL,
        For::V4Udp,
    ),
    (
        "IP_MULTICAST_LOOP",
        libc::IPPROTO_IP,
        libc::IP_MULTICAST_LOOP,
        For::V4Udp,
    ),
    (
        "IPV6_V6ONLY",
        libc::IPPROTO_IPV6,
        libc::IPV6_V6ONLY,
        For::V6,
    ),
    (
        "IPV6_UNICAST_HOPS",
        libc::IPPROTO_IPV6,
        libc::IPV6_UNICAST_HOPS,
        For::V6,
    ),
    (
        "IPV6_MTU_DISCOVER",
        libc::IPPROTO_IPV6,
        libc::IPV6_MTU_DISCOVER,
        For::V6,
    ),
    (
        "IPV6_RECVERR",
        libc::IPPROTO_IPV6,
        libc::IPV6_RECVERR,
        For::V6,
    ),
    ("IPV6_FREEBIND", libc::IPPROTO_IPV6, 78, For::V6),
    ("IPV6_TRANSPARENT", libc::IPPROTO_IPV6, 75, For::V6),
    (
        "IPV6_RECVPKTINFO",
        libc::IPPROTO_IPV6,
        libc::IPV6_RECVPKTINFO,
        For::V6Udp,
    ),
    (
        "IPV6_MULTICAST_HOPS",
        libc::IPPROTO_IPV6,
        libc::IPV6_MULTICAST_HOPS,
        For::V6Udp,
    ),
    (
        "IPV6_MULTICAST_LOOP",
        libc::IPPROTO_IPV6,
        libc::IPV6_MULTICAST_LOOP,
        For::V6Udp,
    ),
    (
        "TCP_WINDOW_CLAMP",
        libc::IPPROTO_TCP,
        10,
        For::TcpUnconnected,
    ),
    ("TCP_THIN_LINEAR_TIMEOUTS", libc::IPPROTO_TCP, 16, For::Tcp),
    ("TCP_SAVE_SYN", libc::IPPROTO_TCP, 27, For::Tcp),
    (
        "TCP_FASTOPEN_CONNECT",
        libc::IPPROTO_TCP,
        30,
        For::TcpUnconnected,
    ),
    ("TCP_FASTOPEN_NO_COOKIE", libc::IPPROTO_TCP, 34, For::Tcp),
    ("TCP_INQ", libc::IPPROTO_TCP, 36, For::Tcp),
    ("TCP_TX_DELAY", libc::IPPROTO_TCP, 37, For::Tcp),
    ("TCP_RTO_MIN_US", libc::IPPROTO_TCP, 45, For::Tcp),
    ("TCP_DELACK_MAX_US", libc::IPPROTO_TCP, 46, For::Tcp),
    ("IP_RECVOPTS", libc::IPPROTO_IP, 6, For::V4),
    ("IP_RETOPTS", libc::IPPROTO_IP, 7, For::V4),
    ("IP_RECVTTL", libc::IPPROTO_IP, 12, For::V4),
    ("IP_PASSSEC", libc::IPPROTO_IP, 18, For::V4),
    ("IP_RECVORIGDSTADDR", libc::IPPROTO_IP, 20, For::V4),
    ("IP_MINTTL", libc::IPPROTO_IP, 21, For::V4),
    ("IP_NODEFRAG", libc::IPPROTO_IP, 22, For::V4),
    ("IP_CHECKSUM", libc::IPPROTO_IP, 23, For::V4),
    ("IP_RECVFRAGSIZE", libc::IPPROTO_IP, 25, For::V4),
    ("IP_RECVERR_RFC4884", libc::IPPROTO_IP, 26, For::V4),
    ("IP_MULTICAST_ALL", libc::IPPROTO_IP, 49, For::V4Udp),
    ("IP_UNICAST_IF", libc::IPPROTO_IP, 50, For::V4),
    ("IP_LOCAL_PORT_RANGE", libc::IPPROTO_IP, 51, For::V4),
    ("IPV6_MULTICAST_ALL", libc::IPPROTO_IPV6, 29, For::V6Udp),
    ("IPV6_FLOWINFO_SEND", libc::IPPROTO_IPV6, 33, For::V6),
    ("IPV6_RECVHOPLIMIT", libc::IPPROTO_IPV6, 51, For::V6),
    ("IPV6_RECVHOPOPTS", libc::IPPROTO_IPV6, 53, For::V6),
    ("IPV6_RECVRTHDR", libc::IPPROTO_IPV6, 56, For::V6),
    ("IPV6_RECVDSTOPTS", libc::IPPROTO_IPV6, 58, For::V6),
    ("IPV6_RECVPATHMTU", libc::IPPROTO_IPV6, 60, For::V6),
    ("IPV6_DONTFRAG", libc::IPPROTO_IPV6, 62, For::V6),
    ("IPV6_RECVTCLASS", libc::IPPROTO_IPV6, 66, For::V6),
    ("IPV6_AUTOFLOWLABEL", libc::IPPROTO_IPV6, 70, For::V6),
    ("IPV6_ADDR_PREFERENCES", libc::IPPROTO_IPV6, 72, For::V6),
    ("IPV6_MINHOPCOUNT", libc::IPPROTO_IPV6, 73, For::V6),
    ("IPV6_RECVORIGDSTADDR", libc::IPPROTO_IPV6, 74, For::V6),
    ("IPV6_UNICAST_IF", libc::IPPROTO_IPV6, 76, For::V6),
    ("IPV6_RECVFRAGSIZE", libc::IPPROTO_IPV6, 77, For::V6),
    ("UDP_CORK", libc::IPPROTO_UDP, UDP_CORK, For::Udp),
];

const UDP_CORK: i32 = 1;

const TCP_CONGESTION: i32 = 13;
const TCP_ULP: i32 = 31;

/// Why the options of this socket cannot be restored exactly (None: they
/// can): SOL_SOCKET's ([`super::sockopts::unrestorable`]) and an upper
/// layer protocol (kTLS).
fn opts_refusal(sock: &OwnedFd, p: &Probe) -> Option<String> {
    if let Some(why) = super::sockopts::unrestorable(sock) {
        return Some(format!("({}) {why}", p.describe()));
    }
    if p.proto == libc::IPPROTO_TCP {
        if let Ok(ulp) = sock::get_string(sock, libc::IPPROTO_TCP, TCP_ULP) {
            if !ulp.is_empty() {
                return Some(format!(
                    "({}) has the upper layer protocol {ulp:?} (TCP_ULP, e.g. kernel TLS), whose \
                     state cairn cannot save",
                    p.describe()
                ));
            }
        }
    }
    None
}

fn applies(w: For, family: i32, proto: i32, state: u32) -> bool {
    let tcp = proto == libc::IPPROTO_TCP;
    let udp = proto == libc::IPPROTO_UDP;
    let v4 = family == libc::AF_INET;
    match w {
        For::All => true,
        For::Tcp => tcp,
        For::TcpUnconnected => tcp && (state == TCP_LISTEN || state == TCP_CLOSE),
        For::Udp => udp,
        For::V4 => v4,
        For::V6 => !v4,
        For::V4Udp => v4 && udp,
        For::V6Udp => !v4 && udp,
    }
}

/// The saved value of the integer option `name` (the last one, should an
/// image name it twice).
fn int_opt(sk: &InetSk, name: &str) -> Option<i32> {
    sk.opts
        .iter()
        .rev()
        .find(|o| o.name == name)
        .map(|o| o.value)
}

fn dump_opts(sock: &OwnedFd, sk: &mut InetSk) -> std::io::Result<()> {
    let (family, proto) = (sk.family as i32, sk.protocol as i32);
    for &(name, level, opt, w) in INT_OPTS {
        if !applies(w, family, proto, sk.state) {
            continue;
        }
        if let Ok(v) = sock::get_int(sock, level, opt) {
            sk.opts.push(NamedInt {
                name: name.to_string(),
                value: v,
                ..Default::default()
            });
        }
    }
    sk.sock_opts = Some(super::sockopts::dump(sock)?).into();
    if proto == libc::IPPROTO_TCP {
        let cc = sock::get_string(sock, libc::IPPROTO_TCP, TCP_CONGESTION)?;
        let fresh = net::socket_proto(family, libc::SOCK_STREAM, libc::IPPROTO_TCP)
            .and_then(|f| sock::get_string(&f, libc::IPPROTO_TCP, TCP_CONGESTION))?;
        if cc != fresh {
            sk.congestion = cc;
        }
    }
    let mut dev = [0u8; libc::IFNAMSIZ];
    if let Ok(n) = net::getsockopt(sock, libc::SOL_SOCKET, libc::SO_BINDTODEVICE, &mut dev) {
        let s = &dev[..n.min(dev.len())];
        let s = s.split(|&b| b == 0).next().unwrap_or(&[]);
        sk.bind_dev = String::from_utf8_lossy(s).into_owned();
    }
    Ok(())
}

/// Sets the options of `sk` that a fresh socket does not already have.
/// SO_REUSEADDR stays on until the socket is bound ([`finish_opts`]).
fn restore_opts(sock: &OwnedFd, sk: &InetSk, what: &str) -> std::io::Result<()> {
    let ctx = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| std::io::Error::new(e.kind(), format!("{what}: {e}"))
    };
    // IP_TOS sets the priority too: the IP options go before SOL_SOCKET's.
    for &(name, level, opt, _) in INT_OPTS {
        let Some(want) = int_opt(sk, name) else {
            continue;
        };
        if sock::get_int(sock, level, opt).ok() == Some(want) {
            continue;
        }
        sock::set_int(sock, level, opt, want).map_err(ctx(&format!("setsockopt {name}={want}")))?;
    }
    if !sk.congestion.is_empty() {
        sock::set_string(sock, libc::IPPROTO_TCP, TCP_CONGESTION, &sk.congestion)
            .map_err(ctx(&format!("setsockopt TCP_CONGESTION={}", sk.congestion)))?;
    }
    if let Some(o) = sk.sock_opts.as_ref() {
        let failed = super::sockopts::restore(sock, o);
        if !failed.is_empty() {
            return Err(std::io::Error::other(format!(
                "{what}: socket options not restored: {}",
                failed.join(", ")
            )));
        }
    }
    if !sk.bind_dev.is_empty() {
        net::setsockopt(
            sock,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            sk.bind_dev.as_bytes(),
        )
        .map_err(ctx(&format!("SO_BINDTODEVICE {}", sk.bind_dev)))?;
    }
    Ok(())
}

/// SO_REUSEADDR (kept on while binding) and SO_PEEK_OFF, last.
fn finish_opts(sock: &OwnedFd, sk: &InetSk) -> std::io::Result<()> {
    let o = sk.sock_opts.as_ref();
    let reuse = o.is_some_and(|o| o.reuseaddr) as i32;
    if sock::get_int(sock, libc::SOL_SOCKET, libc::SO_REUSEADDR).ok() != Some(reuse) {
        sock::set_int(sock, libc::SOL_SOCKET, libc::SO_REUSEADDR, reuse)?;
    }
    if let Some(p) = o.map(|o| o.peek_off).filter(|&p| p >= 0) {
        sock::set_int(sock, libc::SOL_SOCKET, libc::SO_PEEK_OFF, p)?;
    }
    Ok(())
}

/// The address to bind `sk` to, to end up at `l`. Binding an IPv6
/// socket to a specific IPv6 address turns IPV6_V6ONLY on: a socket
/// with such a local address and IPV6_V6ONLY off got its address from
/// connect (bound to the wildcard, or not at all), so it is bound to the
/// wildcard and the port, and connect picks the same address again
/// ([`check_local`] makes sure).
fn bind_addr(sk: &InetSk, l: &InetAddr) -> InetAddr {
    let v6only = int_opt(sk, "IPV6_V6ONLY").unwrap_or(0);
    match l.ip {
        IpAddr::V6(a)
            if sk.family == libc::AF_INET6 as u32
                && v6only == 0
                && sk.peer.is_some()
                && !a.is_unspecified()
                && a.to_ipv4_mapped().is_none() =>
        {
            InetAddr {
                ip: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                ..*l
            }
        }
        _ => *l,
    }
}

/// The local address of a connected `sock` is `l`.
fn check_local(sock: &OwnedFd, l: &InetAddr) -> std::io::Result<()> {
    let got = net::local_addr(sock)?;
    if got.map(|g| (g.canonical_ip(), g.port)) != Some((l.canonical_ip(), l.port)) {
        return Err(std::io::Error::other(format!(
            "the connection came back from {}, not {l}",
            got.map_or("nowhere".to_string(), |g| g.to_string())
        )));
    }
    Ok(())
}

/// SO_SNDBUF, SO_RCVBUF and SO_BUF_LOCK as saved.
fn restore_buffers(sock: &OwnedFd, sk: &InetSk) -> std::io::Result<()> {
    let Some(o) = sk.sock_opts.as_ref() else {
        return Ok(());
    };
    let failed = super::sockopts::restore_buffers(sock, o);
    if failed.is_empty() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "socket buffers not restored: {}",
            failed.join(", ")
        )))
    }
}

/// Reads the options of the restored `sock` back and fails on any
/// difference from the image: what the kernel refused, or changed on its
/// own while the socket was rebuilt, would otherwise be lost silently.
fn verify(sock: &OwnedFd, sk: &InetSk) -> std::io::Result<()> {
    let mut now = InetSk::new();
    now.family = sk.family;
    now.protocol = sk.protocol;
    now.state = sk.state;
    dump_opts(sock, &mut now)?;
    let mut d = Vec::new();
    let mut names: Vec<&str> = sk.opts.iter().map(|o| o.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let want = int_opt(sk, name).unwrap_or_default();
        match int_opt(&now, name) {
            Some(g) if g == want => {}
            g => d.push(format!(
                "{name} is {}, was {want}",
                g.map_or("unreadable".to_string(), |g| g.to_string())
            )),
        }
    }
    if let (Some(w), Some(g)) = (sk.sock_opts.as_ref(), now.sock_opts.as_ref()) {
        d.extend(super::sockopts::diff(w, g));
    }
    if sk.bind_dev != now.bind_dev {
        d.push(format!(
            "SO_BINDTODEVICE is {:?}, was {:?}",
            now.bind_dev, sk.bind_dev
        ));
    }
    if sk.congestion != now.congestion {
        d.push(format!(
            "TCP_CONGESTION is {:?}, was {:?}",
            now.congestion, sk.congestion
        ));
    }
    if d.is_empty() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "socket options differ after the restore: {}",
            d.join("; ")
        )))
    }
}

/// Binds `sock` to `l` with SO_REUSEADDR on for the moment
/// ([`finish_opts`] puts the saved value back). A TCP socket whose port
/// still has TIME_WAIT connections of a listener without SO_REUSEADDR
/// (the tree's own, closed before the dump) cannot bind even so: those
/// are removed (SOCK_DESTROY) and the bind tried again.
fn bind_reusing(
    sock: &OwnedFd,
    l: &InetAddr,
    family: i32,
    tcp: bool,
    what: &str,
) -> std::io::Result<()> {
    sock::set_int(sock, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    let wrap = |e: std::io::Error| std::io::Error::new(e.kind(), format!("bind: {e}"));
    match net::bind(sock, l, family) {
        Err(e) if tcp && e.raw_os_error() == Some(libc::EADDRINUSE) => {
            let e = wrap(e);
            let n = sock::destroy_time_wait(l.ip, l.port).map_err(|d| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "{e}; removing the port's TIME_WAIT connections failed: {d} (SOCK_DESTROY \
                         of TIME_WAIT sockets needs Linux 6.0+ and CONFIG_INET_DIAG_DESTROY; \
                         else the port is free once they expire, after 60 s)"
                    ),
                )
            })?;
            if n == 0 {
                return Err(e);
            }
            info!(
                "{what}: removed {n} TIME_WAIT connections of port {} to bind it",
                l.port
            );
            net::bind(sock, l, family).map_err(wrap)
        }
        r => r.map_err(wrap),
    }
}

// ------------------------------------------------------------ probing

/// What cairn needs to know about a socket to decide whether it can
/// checkpoint it.
#[derive(Clone, Debug)]
pub struct Probe {
    pub ino: u64,
    pub family: i32,
    pub ty: i32,
    pub proto: i32,
    /// TCP state; for UDP ESTABLISHED if connected, else CLOSE.
    pub state: u32,
    pub local: Option<InetAddr>,
    pub peer: Option<InetAddr>,
    /// For a listener: connections waiting to be accepted, and the backlog.
    pub pending: u32,
    pub backlog: u32,
}

impl Probe {
    fn conn_text(&self) -> String {
        let l = self
            .local
            .map(|a| a.to_string())
            .unwrap_or_else(|| "-".into());
        match &self.peer {
            Some(p) => format!("{l} -> {p}"),
            None => l,
        }
    }

    fn describe(&self) -> String {
        let what = if self.proto == libc::IPPROTO_TCP {
            match self.state {
                TCP_LISTEN => "listening socket".to_string(),
                TCP_ESTABLISHED => "established connection".to_string(),
                s => format!("socket in state {}", tcp_state_name(s)),
            }
        } else {
            "socket".to_string()
        };
        format!(
            "{} {what} {} (inode {})",
            proto_name(self.family, self.proto),
            self.conn_text(),
            self.ino
        )
    }
}

/// Our own descriptor for fd `fd` of `pid`.
fn grab(pid: i32, fd: i32) -> Result<OwnedFd> {
    sock::pidfd_getfd(pid, fd).map_err(|e| Error::sys(pid, format!("pidfd_getfd fd {fd}"), e))
}

/// Classifies a socket of `pid`; None if it is not an IPv4/IPv6 socket.
pub fn probe(sock: &OwnedFd, ino: u64, pid: i32) -> std::io::Result<Option<Probe>> {
    let family = sock::get_int(sock, libc::SOL_SOCKET, libc::SO_DOMAIN)?;
    if family != libc::AF_INET && family != libc::AF_INET6 {
        return Ok(None);
    }
    let ty = sock::get_int(sock, libc::SOL_SOCKET, libc::SO_TYPE)?;
    let proto = sock::get_int(sock, libc::SOL_SOCKET, libc::SO_PROTOCOL)?;
    let local = net::local_addr(sock)?;
    let peer = net::peer_addr(sock)?;
    let mut p = Probe {
        ino,
        family,
        ty,
        proto,
        state: if peer.is_some() {
            TCP_ESTABLISHED
        } else {
            TCP_CLOSE
        },
        local,
        peer,
        pending: 0,
        backlog: 0,
    };
    if proto == libc::IPPROTO_TCP && ty == libc::SOCK_STREAM {
        let ti = net::tcp_info(sock)?;
        p.state = ti.state as u32;
        if p.state == TCP_LISTEN {
            p.pending = ti.unacked;
            p.backlog = ti.sacked;
        }
        if p.state == super::tcp::SYN_SENT && p.peer.is_none() {
            // getpeername refuses until the connection is established.
            p.peer = proc_net_peer(pid, family, ino)?;
            if p.peer.is_none() {
                return Err(std::io::Error::other(format!(
                    "the SYN_SENT socket (inode {ino}) is not in /proc/{pid}/net/tcp{}",
                    if family == libc::AF_INET6 { "6" } else { "" }
                )));
            }
        }
    }
    Ok(Some(p))
}

/// The remote address of the TCP socket with inode `ino` in the network
/// namespace of `pid`, from /proc/PID/net/tcp or tcp6. The kernel hands
/// that file out a page per read and finds its place again by counting
/// sockets, so one that others open or close meanwhile can hide a line:
/// a socket not found is looked for again, a few times.
fn proc_net_peer(pid: i32, family: i32, ino: u64) -> std::io::Result<Option<InetAddr>> {
    let v6 = family == libc::AF_INET6;
    let path = format!("/proc/{pid}/net/tcp{}", if v6 { "6" } else { "" });
    for _ in 0..5 {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{path}: {e}")))?;
        let found = text.lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(9)?.parse::<u64>().ok()? == ino)
                .then(|| parse_proc_addr(f.get(2)?))
                .flatten()
        });
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// "0100007F:1F90" (IPv4) or 32 hex digits and a port (IPv6): each 32-bit
/// word of the address in the kernel's (little-endian here) byte order.
fn parse_proc_addr(s: &str) -> Option<InetAddr> {
    let (a, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..a.len() / 8)
        .map(|i| u32::from_str_radix(a.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<_>>()?;
    let ip = match words.len() {
        // The kernel prints the bytes of each word as a native u32.
        1 => IpAddr::V4(Ipv4Addr::from(words[0].to_ne_bytes())),
        4 => {
            let mut b = [0u8; 16];
            for (i, w) in words.iter().enumerate() {
                b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(InetAddr::new(ip, port))
}

/// Why cairn cannot checkpoint this socket (None: it can).
fn refusal(p: &Probe, tcp_established: bool) -> Option<String> {
    let tcp = p.proto == libc::IPPROTO_TCP && p.ty == libc::SOCK_STREAM;
    let udp = p.proto == libc::IPPROTO_UDP && p.ty == libc::SOCK_DGRAM;
    if !tcp && !udp {
        return Some(format!(
            "is an IP{} socket of type {} and protocol {}, which cairn cannot checkpoint yet \
             (only TCP and UDP)",
            if p.family == libc::AF_INET6 {
                "v6"
            } else {
                "v4"
            },
            p.ty,
            p.proto
        ));
    }
    if udp {
        return None;
    }
    match p.state {
        TCP_LISTEN | TCP_CLOSE => None,
        s if super::tcp::repairable(s) && tcp_established => None,
        TCP_ESTABLISHED => Some(format!(
            "is a {}; pass --tcp-established (on dump and restore) to checkpoint it with \
             TCP_REPAIR",
            p.describe()
        )),
        s if super::tcp::repairable(s) => Some(format!(
            "is a {}; pass --tcp-established (on dump and restore) to checkpoint it with \
             TCP_REPAIR",
            p.describe()
        )),
        _ => Some(format!(
            "is a {}, which TCP_REPAIR cannot restore (only listening, unconnected, \
             SYN_SENT, established and half-closed TCP sockets: ESTABLISHED, FIN_WAIT1, \
             FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING)",
            p.describe()
        )),
    }
}

fn socket_ino(target: &str) -> Option<u64> {
    match procfs::parse_anon_link(target) {
        Some(("socket", ino)) => Some(ino),
        _ => None,
    }
}

/// Socket protocols (`system.sockprotoname`) handled here.
pub fn handles_proto(proto: &str) -> bool {
    matches!(proto, "TCP" | "TCPv6" | "UDP" | "UDPv6")
}

/// The IPv4/IPv6 sockets of `pid`: (fd, our descriptor, probe).
fn scan(pid: i32) -> Result<Vec<(i32, OwnedFd, Probe)>> {
    let mut out = Vec::new();
    for (fd, target) in procfs::read_fds(pid)? {
        let Some(ino) = socket_ino(&target) else {
            continue;
        };
        // Other protocols are not touched (kinds::unix, or refused).
        match sock::proto_name(&format!("/proc/{pid}/fd/{fd}")) {
            Ok(p) if handles_proto(&p) => {}
            _ => continue,
        }
        let sock = match grab(pid, fd) {
            Ok(s) => s,
            // Closed meanwhile (not frozen yet): nothing to check.
            Err(_) if !crate::sys::task::pid_exists(pid) => continue,
            Err(e) => return Err(e),
        };
        if let Some(p) = probe(&sock, ino, pid)
            .map_err(|e| Error::sys(pid, format!("fd {fd}: probe socket"), e))?
        {
            out.push((fd, sock, p));
        }
    }
    Ok(out)
}

/// Refuses, before anything is frozen, IP sockets cairn cannot dump with
/// these options (naming pid, fd and the connection).
pub fn precheck(pid: i32, tcp_established: bool, lock: netlock::Method) -> Result<()> {
    let mut any_tcp = false;
    for (fd, sock, p) in scan(pid)? {
        if let Some(why) = refusal(&p, tcp_established).or_else(|| opts_refusal(&sock, &p)) {
            return Err(Error::unsupported(pid, format!("fd {fd} {why}")));
        }
        any_tcp |= p.proto == libc::IPPROTO_TCP;
    }
    if tcp_established && any_tcp {
        netlock::check_available(lock, pid)?;
    }
    Ok(())
}

// ------------------------------------------------------------ dump

/// Without a network lock (`--network-lock=skip`), a half-closed
/// connection whose other end is in the tree too is refused: at restore
/// each end leaves repair mode in turn and sends its replayed FIN or a
/// window probe to the other, which may not be restored yet (or still be
/// in repair mode), and a reset there ends the connection; the lock is
/// what keeps those packets away.
fn half_closed_pair_refusal(pids: &[i32]) -> Result<()> {
    let half =
        |s: u32| super::tcp::repairable(s) && s != TCP_ESTABLISHED && s != super::tcp::SYN_SENT;
    let mut all = Vec::new();
    for &pid in pids {
        for (fd, _, p) in scan(pid)? {
            if p.proto == libc::IPPROTO_TCP {
                all.push((pid, fd, p));
            }
        }
    }
    for (pid, fd, p) in &all {
        if !half(p.state) {
            continue;
        }
        let inside = all.iter().any(|(_, _, q)| {
            q.local.is_some() && q.local == p.peer && q.peer == p.local && q.ino != p.ino
        });
        if inside {
            return Err(Error::unsupported(
                *pid,
                format!(
                    "fd {fd}: {} is half closed and its other end is in the tree too; \
                     with --network-lock=skip the FIN replayed at restore could reach that \
                     end before it is restored and be answered with a reset: dump it with \
                     the network lock (nftables)",
                    p.describe()
                ),
            ));
        }
    }
    Ok(())
}

/// The inet part of a dump: our descriptors of the tree's sockets, the
/// ones put in repair mode, and the network lock. Dropped without
/// [`DumpState::killed`] or [`DumpState::resume`], it turns repair mode
/// off and unlocks, so a failed dump leaves every connection as it was.
#[derive(Default)]
pub struct DumpState {
    tcp_established: bool,
    socks: HashMap<u64, OwnedFd>,
    /// Sockets put in repair mode, with their SO_REUSEADDR before.
    repaired: Vec<(u64, i32)>,
    lock: Option<Lock>,
}

impl DumpState {
    /// With the tree frozen: finds every IP socket of `pids`, refuses what
    /// cannot be dumped, and locks established connections and listeners
    /// (with `--tcp-established`) before any of their state is read; the
    /// lock records `images_dir` as the images it belongs to.
    pub fn prepare(
        root: i32,
        pids: &[i32],
        tcp_established: bool,
        method: netlock::Method,
        images_dir: &std::path::Path,
    ) -> Result<DumpState> {
        let mut st = DumpState::default();
        st.tcp_established = tcp_established;
        let mut conns = Vec::new();
        for &pid in pids {
            for (fd, sock, p) in scan(pid)? {
                if let Some(why) = refusal(&p, tcp_established).or_else(|| opts_refusal(&sock, &p))
                {
                    return Err(Error::unsupported(pid, format!("fd {fd} {why}")));
                }
                if p.proto == libc::IPPROTO_TCP {
                    if let Some(local) = p.local {
                        match p.state {
                            s if super::tcp::repairable(s) && p.peer.is_some() => {
                                conns.push(Conn {
                                    local,
                                    peer: p.peer,
                                })
                            }
                            TCP_LISTEN => conns.push(Conn { local, peer: None }),
                            _ => {}
                        }
                    }
                }
                st.socks.entry(p.ino).or_insert(sock);
            }
        }
        if method == netlock::Method::Skip {
            half_closed_pair_refusal(pids)?;
        }
        if tcp_established && !conns.is_empty() {
            conns.dedup();
            st.lock = Some(Lock::acquire(
                method,
                netlock::table_name(root),
                conns,
                root,
                images_dir,
            )?);
        }
        Ok(st)
    }

    /// The lock to record in files.img.
    pub fn net_lock(&self) -> Option<crate::image::proto::NetLock> {
        self.lock.as_ref().map(|l| l.to_proto())
    }

    fn repair_off_all(&mut self) -> Result<()> {
        let mut first_err = None;
        for (ino, reuse) in std::mem::take(&mut self.repaired) {
            if let Some(s) = self.socks.get(&ino) {
                if let Err(e) = super::tcp::repair_off_untouched(s, reuse) {
                    first_err.get_or_insert(Error::Restore(format!("socket inode {ino}: {e}")));
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// --leave-running: connections go on; repair mode off, then unlock.
    pub fn resume(mut self) -> Result<()> {
        let r = self.repair_off_all();
        let u = self.lock.take().map_or(Ok(()), |mut l| l.release());
        r.and(u)
    }

    /// The tree was killed: our descriptors are closed with the sockets
    /// still in repair mode (so no FIN or reset is sent), and the network
    /// stays locked for the restore.
    pub fn killed(mut self) {
        self.repaired.clear();
        self.socks.clear();
        if let Some(l) = self.lock.take() {
            let n = l.keep();
            info!(
                "network stays locked until the restore (nft table inet {})",
                n.table
            );
        }
    }

    /// Describes fd `fd` of `pid` (frozen) if it is an IP socket.
    pub fn describe(
        &mut self,
        pid: i32,
        fd: i32,
        target: &str,
        info: &FdInfo,
    ) -> Result<Option<file_desc::Kind>> {
        let Some(ino) = socket_ino(target) else {
            return Ok(None);
        };
        if !self.socks.contains_key(&ino)
            && !sock::proto_name(&format!("/proc/{pid}/fd/{fd}")).is_ok_and(|p| handles_proto(&p))
        {
            return Ok(None);
        }
        if let Entry::Vacant(e) = self.socks.entry(ino) {
            e.insert(grab(pid, fd)?);
        }
        let sock = &self.socks[&ino];
        let sys = |what: &str| {
            let what = format!("fd {fd}: {what}");
            move |e: std::io::Error| Error::sys(pid, what.clone(), e)
        };
        let Some(p) = probe(sock, ino, pid).map_err(sys("probe socket"))? else {
            return Ok(None);
        };
        if let Some(why) = refusal(&p, self.tcp_established).or_else(|| opts_refusal(sock, &p)) {
            return Err(Error::unsupported(pid, format!("fd {fd} {why}")));
        }
        if p.state == TCP_LISTEN && p.pending > 0 && p.proto == libc::IPPROTO_TCP {
            return Err(Error::unsupported(
                pid,
                format!(
                    "fd {fd}: {} has {} connections waiting to be accepted, which would be \
                     lost (the kernel has no way to put a connection back into an accept \
                     queue); try again when they are accepted",
                    p.describe(),
                    p.pending
                ),
            ));
        }
        let mut sk = InetSk::new();
        sk.ino = ino;
        sk.family = p.family as u32;
        sk.type_ = p.ty as u32;
        sk.protocol = p.proto as u32;
        sk.state = p.state;
        sk.flags = info.flags & !(libc::O_CLOEXEC as u32);
        sk.local = p.local.as_ref().map(addr_to_proto).into();
        sk.peer = p.peer.as_ref().map(addr_to_proto).into();
        sk.backlog = p.backlog;
        dump_opts(sock, &mut sk).map_err(sys("socket options"))?;
        if p.proto == libc::IPPROTO_TCP && super::tcp::repairable(p.state) {
            // Once per socket: in repair mode SO_REUSEADDR reads back the
            // kernel's "force" value (2), not the one to put back.
            if !self.repaired.iter().any(|r| r.0 == ino) {
                let reuse = sock::get_int(sock, libc::SOL_SOCKET, libc::SO_REUSEADDR)
                    .map_err(sys("SO_REUSEADDR"))?;
                // The guardian holds it before it changes: a dumper that
                // dies from here on leaves no socket in repair mode.
                crate::guard::tell_socket(sock, ino, reuse);
                super::tcp::repair(sock, true).map_err(sys("TCP_REPAIR"))?;
                self.repaired.push((ino, reuse));
            }
            let stream = super::tcp::dump_stream(sock, p.state)
                .map_err(|e| Error::sys(pid, format!("fd {fd}: {}: {e}", p.describe()), e))?;
            info!(
                "pid {pid} fd {fd}: {}: {} bytes to read, {} unacknowledged of which {} unsent",
                p.describe(),
                stream.inq.len(),
                stream.outq.len(),
                stream.unsent_len
            );
            sk.tcp = Some(stream).into();
        }
        if p.proto == libc::IPPROTO_UDP
            && sock::get_int(sock, libc::IPPROTO_UDP, UDP_CORK).is_ok_and(|c| c != 0)
        {
            // Corked data waits in the send queue, where nothing can read
            // it back (only the cork flag is restored).
            let pending = net::ioctl_int(sock, net::SIOCOUTQ).map_err(sys("SIOCOUTQ"))?;
            if pending > 0 {
                return Err(Error::unsupported(
                    pid,
                    format!(
                        "fd {fd} ({}): {pending} bytes are corked (UDP_CORK) and not sent yet; \
                         the kernel gives no way to read them back, they would be lost",
                        p.describe()
                    ),
                ));
            }
        }
        if p.proto == libc::IPPROTO_UDP {
            // inet_diag shows the shutdown of a bound UDP socket; only
            // BPF that of an unbound one (SHUT_WR shows nowhere else).
            sk.shutdown = match udp_shutdown(sock, p.family, ino)
                .map_err(sys("inet_diag (shutdown state)"))?
            {
                Ok(bits) => bits,
                Err(why) => {
                    return Err(Error::unsupported(
                        pid,
                        format!("fd {fd} ({}): {why}", p.describe()),
                    ))
                }
            };
            if sk.shutdown != 0 {
                info!(
                    "pid {pid} fd {fd}: {} was shut down ({})",
                    p.describe(),
                    shut_name(sk.shutdown)
                );
            }
            let (q, dropped) = peek_datagrams(sock).map_err(sys("read queued datagrams"))?;
            if dropped > 0 {
                return Err(Error::unsupported(
                    pid,
                    format!(
                        "fd {fd} ({}): datagrams are queued and this kernel cannot peek past the \
                         first (no SO_PEEK_OFF): they cannot be saved without consuming them",
                        p.describe()
                    ),
                ));
            }
            sk.queue = q;
            sk.queue_dropped = dropped;
        }
        Ok(Some(file_desc::Kind::Inet(sk)))
    }
}

impl Drop for DumpState {
    fn drop(&mut self) {
        if let Err(e) = self.repair_off_all() {
            warn!("{e}");
        }
        // The lock, if still held, is lifted by its own Drop.
    }
}

/// The shutdown bits (1 SHUT_RD, 2 SHUT_WR) of a UDP socket: from
/// inet_diag, which lists every bound socket, else (an unbound socket)
/// from BPF (bpf/sockshut.bpf.c), the one interface that shows SHUT_WR
/// of such a socket. `Ok(Err(why))`: unbound and BPF cannot be used, so
/// the state cannot be known (to refuse, never to guess).
fn udp_shutdown(
    sock: &OwnedFd,
    family: i32,
    ino: u64,
) -> std::io::Result<std::result::Result<u32, String>> {
    let udp = libc::IPPROTO_UDP as u8;
    if let Some(how) = crate::sys::sockdiag::inet::shutdown_of(family as u8, udp, ino as u32)? {
        return Ok(Ok(u32::from(how) & 3));
    }
    Ok(
        crate::sys::sockshut::shutdown_bits(std::os::fd::AsFd::as_fd(sock)).map_err(|e| {
            format!(
                "an unbound UDP socket: its shutdown state (SHUT_WR) shows only to BPF \
                 (sock_diag does not list it, poll() does not show SHUT_WR), and BPF could \
                 not read it ({e}); it could be lost"
            )
        }),
    )
}

/// "SHUT_RD", "SHUT_WR" or "SHUT_RDWR" for shutdown bits.
fn shut_name(how: u32) -> &'static str {
    match how & 3 {
        1 => "SHUT_RD",
        2 => "SHUT_WR",
        3 => "SHUT_RDWR",
        _ => "none",
    }
}

/// Shuts the restored UDP socket `sock` down as saved (after its queue
/// came back) and reads the state back. shutdown(2) of an unconnected UDP
/// socket sets the bits and returns ENOTCONN.
fn restore_udp_shutdown(sock: &OwnedFd, sk: &InetSk) -> std::io::Result<()> {
    if sk.shutdown == 0 {
        return Ok(());
    }
    let how = match sk.shutdown & 3 {
        1 => libc::SHUT_RD,
        2 => libc::SHUT_WR,
        _ => libc::SHUT_RDWR,
    };
    match sock::shutdown(sock, how) {
        Err(e) if e.raw_os_error() != Some(libc::ENOTCONN) => {
            return Err(std::io::Error::new(
                e.kind(),
                format!("shutdown({}): {e}", shut_name(sk.shutdown)),
            ))
        }
        _ => {}
    }
    let ino = std::fs::metadata(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(sock)
    ))
    .map(|m| std::os::unix::fs::MetadataExt::ino(&m))?;
    // Unbound and no BPF here: the call succeeded, nothing else can tell.
    let Ok(now) = udp_shutdown(sock, sk.family as i32, ino)? else {
        return Ok(());
    };
    if now != sk.shutdown {
        return Err(std::io::Error::other(format!(
            "shut down {} after the restore, was {}",
            shut_name(now),
            shut_name(sk.shutdown)
        )));
    }
    Ok(())
}

/// Most datagrams cairn reads from one socket.
const MAX_DATAGRAMS: usize = 1 << 16;

/// The queued datagrams, read without consuming them: MSG_PEEK with
/// SO_PEEK_OFF walks the queue one datagram after the other. Returns
/// (datagrams, how many could not be read).
fn peek_datagrams(sock: &OwnedFd) -> std::io::Result<(Vec<Datagram>, u32)> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    let old = sock::get_int(sock, libc::SOL_SOCKET, libc::SO_PEEK_OFF)?;
    if sock::set_int(sock, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0).is_err() {
        // No peek offsets here: only the head could be read, so nothing
        // is saved; say whether something was queued.
        let queued =
            old < 0 && net::recv_from(sock, &mut buf, libc::MSG_PEEK | libc::MSG_DONTWAIT).is_ok();
        return Ok((out, queued as u32));
    }
    let r = (|| -> std::io::Result<()> {
        while out.len() < MAX_DATAGRAMS {
            match net::recv_from(sock, &mut buf, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
                Ok((n, _full, from)) => {
                    let mut d = Datagram::new();
                    d.from = from.as_ref().map(addr_to_proto).into();
                    d.data = buf[..n].to_vec();
                    out.push(d);
                }
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })();
    let reset = sock::set_int(sock, libc::SOL_SOCKET, libc::SO_PEEK_OFF, old);
    r?;
    reset?;
    Ok((out, 0))
}

// ------------------------------------------------------------ restore

/// Our descriptors of restored connections that are still in repair mode.
#[derive(Default)]
pub struct InetRestore {
    /// (for messages, our descriptor, the never-sent part of its send
    /// queue, the image)
    repaired: Vec<(String, OwnedFd, Vec<u8>, InetSk)>,
}

impl InetRestore {
    /// Once every socket of the tree exists: repair mode off on every
    /// restored connection (each sends a window probe, still dropped by
    /// the lock) and the never-sent data written.
    pub fn go_live(&mut self) -> Result<()> {
        for (what, s, unsent, sk) in self.repaired.drain(..) {
            let fail = |e: std::io::Error| Error::Restore(format!("{what}: {e}"));
            let reuse = sk.sock_opts.as_ref().is_some_and(|o| o.reuseaddr);
            let local = sk.local.as_ref().and_then(addr_from_proto);
            let peer = sk.peer.as_ref().and_then(addr_from_proto);
            let conn = match (&local, &peer, sk.tcp.as_ref()) {
                (Some(l), Some(p), Some(t)) => Some((l, p, t, sk.state)),
                _ => None,
            };
            super::tcp::go_live(&s, &unsent, reuse, conn).map_err(fail)?;
            restore_buffers(&s, &sk).map_err(fail)?;
            verify(&s, &sk).map_err(fail)?;
        }
        Ok(())
    }
}

/// Loopback of the family of `a`, if `a` is a wildcard address.
fn deliver_to(local: &InetAddr, from: &InetAddr) -> InetAddr {
    let mut to = *local;
    let from_v4 = from.canonical_ip().is_ipv4();
    if local.ip.is_unspecified() || (from_v4 && !local.canonical_ip().is_ipv4()) {
        to.ip = if from_v4 {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        };
    }
    to
}

/// Puts saved datagrams back into a restored socket's queue, with their
/// senders' addresses: each is sent as a raw IP packet from its sender to
/// the socket, over loopback. Returns how many arrived.
fn inject_datagrams(sock: &OwnedFd, sk: &InetSk, local: &InetAddr) -> std::io::Result<usize> {
    let mut raws: HashMap<bool, OwnedFd> = HashMap::new();
    for d in &sk.queue {
        let Some(from) = d.from.as_ref().and_then(addr_from_proto) else {
            continue;
        };
        let to = deliver_to(local, &from);
        let v4 = from.canonical_ip().is_ipv4();
        let fam = if v4 { libc::AF_INET } else { libc::AF_INET6 };
        if let Entry::Vacant(e) = raws.entry(v4) {
            e.insert(net::socket_proto(fam, libc::SOCK_RAW, libc::IPPROTO_RAW)?);
        }
        let pkt = net::udp_packet(&from, &to, &d.data)?;
        let dst = InetAddr::new(to.canonical_ip(), 0);
        net::send_to(&raws[&v4], &pkt, &dst, fam)?;
    }
    // Wait (briefly) until they are all queued, counting with peeks.
    let want = sk.queue.len();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let (got, _) = peek_datagrams(sock)?;
        if got.len() >= want || std::time::Instant::now() >= deadline {
            return Ok(got.len());
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Creates the socket of `sk` in the vessel and returns its fd there
/// (close-on-exec; the caller moves it to its numbers).
pub fn create(calls: &mut dyn Calls, sk: &InetSk, st: &mut InetRestore) -> Result<u64> {
    let pid = calls.pid();
    let family = sk.family as i32;
    let local = sk.local.as_ref().and_then(addr_from_proto);
    let peer = sk.peer.as_ref().and_then(addr_from_proto);
    let what = {
        let p = Probe {
            ino: sk.ino,
            family,
            ty: sk.type_ as i32,
            proto: sk.protocol as i32,
            state: sk.state,
            local,
            peer,
            pending: 0,
            backlog: sk.backlog,
        };
        format!("pid {pid}: {}", p.describe())
    };
    let fail = |e: std::io::Error| Error::Restore(format!("{what}: {e}"));
    let fd = calls.socket(
        family,
        sk.type_ as i32 | libc::SOCK_CLOEXEC,
        sk.protocol as i32,
    )?;
    let sock = sock::pidfd_getfd(pid, fd as i32)
        .map_err(|e| Error::sys(pid, format!("pidfd_getfd of the new socket {fd}"), e))?;
    restore_opts(&sock, sk, &what).map_err(fail)?;
    let tcp = sk.protocol as i32 == libc::IPPROTO_TCP;
    match (tcp, sk.state, sk.tcp.as_ref()) {
        (true, state, Some(stream)) if super::tcp::repairable(state) => {
            let (Some(l), Some(p)) = (local, peer) else {
                return Err(fail(std::io::Error::other("connection without addresses")));
            };
            super::tcp::restore_stream(&sock, family, &bind_addr(sk, &l), &l, &p, stream, state)
                .map_err(fail)?;
            check_local(&sock, &l).map_err(fail)?;
            restore_buffers(&sock, sk).map_err(fail)?;
            finish_opts(&sock, sk).map_err(fail)?;
            let sent = stream.outq.len() - stream.unsent_len as usize;
            st.repaired.push((
                what.clone(),
                sock.try_clone().map_err(fail)?,
                stream.outq[sent..].to_vec(),
                sk.clone(),
            ));
            info!(
                "{what}: restored in repair mode ({} bytes to read, {} unacknowledged or unsent)",
                stream.inq.len(),
                stream.outq.len()
            );
        }
        (true, state, None) if super::tcp::repairable(state) => {
            return Err(fail(std::io::Error::other(
                "connection without its TCP state in the images",
            )))
        }
        _ => {
            if let Some(l) = local.filter(|l| l.port != 0) {
                bind_reusing(&sock, &bind_addr(sk, &l), family, tcp, &what).map_err(fail)?;
            }
            if tcp && sk.state == TCP_LISTEN {
                sock::listen(&sock, sk.backlog as i32).map_err(fail)?;
            }
            if !tcp {
                if let Some(p) = peer {
                    net::connect(&sock, &p, family).map_err(|e| {
                        fail(std::io::Error::new(e.kind(), format!("connect: {e}")))
                    })?;
                    if let Some(l) = local {
                        check_local(&sock, &l).map_err(fail)?;
                    }
                }
                if !sk.queue.is_empty() {
                    let l = local.unwrap_or(InetAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
                    // Every queued datagram comes back, or the restore
                    // fails: a datagram dropped here would be a silent loss.
                    match inject_datagrams(&sock, sk, &l) {
                        Ok(n) if n >= sk.queue.len() => {}
                        Ok(n) => {
                            return Err(fail(std::io::Error::other(format!(
                                "only {n} of {} queued datagrams could be put back",
                                sk.queue.len()
                            ))))
                        }
                        Err(e) => {
                            return Err(fail(std::io::Error::new(
                                e.kind(),
                                format!("queued datagrams could not be put back: {e}"),
                            )))
                        }
                    }
                }
            }
            if !tcp {
                restore_udp_shutdown(&sock, sk).map_err(fail)?;
            }
            finish_opts(&sock, sk).map_err(fail)?;
            verify(&sock, sk).map_err(fail)?;
        }
    }
    let fl = sock::get_fl(&sock).map_err(fail)?;
    let want = (fl & !libc::O_NONBLOCK) | (sk.flags as i32 & libc::O_NONBLOCK);
    if want != fl {
        sock::set_fl(&sock, want).map_err(fail)?;
    }
    Ok(fd)
}

/// Refuses a restore of established connections without
/// `--tcp-established`, naming pid, fd and connection.
pub fn check_restore(
    files: &Files,
    tables: &[Option<FdTable>],
    tcp_established: bool,
) -> Result<()> {
    if tcp_established {
        return Ok(());
    }
    for d in &files.descs {
        let Some(file_desc::Kind::Inet(sk)) = &d.kind else {
            continue;
        };
        if sk.tcp.is_none() {
            continue;
        }
        let at = tables
            .iter()
            .flatten()
            .find_map(|t| {
                t.fds
                    .iter()
                    .find(|f| f.desc_id == d.id)
                    .map(|f| format!("pid {} fd {}", t.pid, f.fd))
            })
            .unwrap_or_else(|| "a process".into());
        let conn = match (
            sk.local.as_ref().and_then(addr_from_proto),
            sk.peer.as_ref().and_then(addr_from_proto),
        ) {
            (Some(l), Some(p)) => format!("{l} -> {p}"),
            _ => format!("inode {}", sk.ino),
        };
        return Err(Error::Usage(format!(
            "{at} holds the established TCP connection {conn}: restore it with --tcp-established"
        )));
    }
    Ok(())
}

/// The network lock recorded by the dump in `dir`, acquired again for the
/// restore (lifted when the returned lock is released or dropped).
pub fn restore_lock(files: &Files, pid: i32, dir: &std::path::Path) -> Result<Option<Lock>> {
    match files.net_lock.as_ref() {
        Some(n) if !n.table.is_empty() => Ok(Some(Lock::from_proto(n, pid, dir)?)),
        _ => Ok(None),
    }
}

// ------------------------------------------------------------ the kind

/// IP sockets (TCP and UDP over IPv4 and IPv6).
pub struct Inet;

impl FdKind for Inet {
    fn name(&self) -> &'static str {
        "IP socket"
    }

    fn precheck(&self, f: &FdRef) -> Result<bool> {
        Ok(f.socket_ino().is_some() && handles_proto(f.proto()))
    }

    fn describe(&self, f: &FdRef, cx: &mut DumpCx) -> Result<Option<file_desc::Kind>> {
        cx.inet.describe(f.pid, f.fd, f.target, f.info()?)
    }

    fn validate(&self, k: &file_desc::Kind, path: &Path, obj: &str) -> Result<()> {
        let file_desc::Kind::Inet(s) = k else {
            return Err(not_mine(self));
        };
        if s.family != libc::AF_INET as u32 && s.family != libc::AF_INET6 as u32 {
            return Err(invalid(
                path,
                obj,
                "family",
                format!("{}: not AF_INET or AF_INET6", s.family),
            ));
        }
        for (f, a) in [("local", s.local.as_ref()), ("peer", s.peer.as_ref())] {
            if let Some(a) = a {
                if a.port > 65535 {
                    return Err(invalid(path, obj, &format!("{f}.port"), a.port));
                }
                if !a.ip.is_empty() && a.ip.parse::<std::net::IpAddr>().is_err() {
                    return Err(invalid(
                        path,
                        obj,
                        &format!("{f}.ip"),
                        format!("{:?}: not an address", short(&a.ip)),
                    ));
                }
            }
        }
        check_name(path, obj, "bind_dev", &s.bind_dev, 15)?;
        inet_kind(s, path, obj)?;
        if let Some(t) = s.tcp.as_ref() {
            check_bytes(path, obj, "tcp.inq", t.inq.len(), QUEUE_MAX)?;
            check_bytes(path, obj, "tcp.outq", t.outq.len(), QUEUE_MAX)?;
            if t.unsent_len as usize > t.outq.len() {
                return Err(invalid(
                    path,
                    obj,
                    "tcp.unsent_len",
                    format!("{} of {} bytes queued", t.unsent_len, t.outq.len()),
                ));
            }
            if t.snd_wscale > 14 || t.rcv_wscale > 14 {
                return Err(invalid(
                    path,
                    obj,
                    "tcp.snd_wscale",
                    "window scale above 14",
                ));
            }
        }
        if s.shutdown > 3 || (s.shutdown != 0 && s.protocol != libc::IPPROTO_UDP as u32) {
            return Err(invalid(
                path,
                obj,
                "shutdown",
                format!("{}: shutdown bits (1, 2 or 3) of a UDP socket", s.shutdown),
            ));
        }
        count(path, obj, "queue", s.queue.len(), MAX_ITEMS)?;
        for q in &s.queue {
            check_bytes(path, obj, "queue.data", q.data.len(), 65535)?;
        }
        Ok(())
    }

    /// The network lock the dump took.
    fn validate_files(&self, f: &Files, path: &Path) -> Result<()> {
        if let Some(l) = f.net_lock.as_ref() {
            if !l.table.is_empty()
                && !l
                    .table
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Err(invalid(
                    path,
                    "network lock",
                    "table",
                    format!("{:?}: not a table name", short(&l.table)),
                ));
            }
            count(path, "network lock", "conns", l.conns.len(), MAX_ITEMS)?;
        }
        Ok(())
    }

    fn open(&self, k: &file_desc::Kind, calls: &mut dyn Calls, cx: &mut RestoreCx) -> Result<u64> {
        let file_desc::Kind::Inet(sk) = k else {
            return Err(not_mine(self));
        };
        create(calls, sk, &mut cx.shared.inet)
    }
}

/// What restore can create of an IP socket: TCP over SOCK_STREAM or UDP
/// over SOCK_DGRAM, a TCP socket listening, closed, or established (with
/// its TCP state and both addresses), and addresses of the socket's
/// family.
fn inet_kind(s: &InetSk, path: &Path, obj: &str) -> Result<()> {
    let tcp = s.type_ == libc::SOCK_STREAM as u32 && s.protocol == libc::IPPROTO_TCP as u32;
    let udp = s.type_ == libc::SOCK_DGRAM as u32 && s.protocol == libc::IPPROTO_UDP as u32;
    if !tcp && !udp {
        return Err(invalid(
            path,
            obj,
            "type",
            format!(
                "type {} with protocol {}: only TCP over SOCK_STREAM and UDP over SOCK_DGRAM",
                s.type_, s.protocol
            ),
        ));
    }
    if tcp {
        let repaired = super::tcp::repairable(s.state);
        if !repaired && ![TCP_CLOSE, TCP_LISTEN].contains(&s.state) {
            return Err(invalid(
                path,
                obj,
                "state",
                format!(
                    "{}: a TCP socket is restored connected (SYN_SENT, ESTABLISHED, half \
                     closed), closed or listening",
                    s.state
                ),
            ));
        }
        if repaired && (s.tcp.is_none() || s.local.is_none() || s.peer.is_none()) {
            return Err(invalid(
                path,
                obj,
                "tcp",
                "a connection needs its TCP state and both addresses",
            ));
        }
        if !repaired && s.tcp.is_some() {
            return Err(invalid(
                path,
                obj,
                "tcp",
                "TCP state on a socket that is not connected",
            ));
        }
    } else {
        if ![TCP_ESTABLISHED, TCP_CLOSE].contains(&s.state) {
            return Err(invalid(
                path,
                obj,
                "state",
                format!("{}: a UDP socket is connected (1) or not (7)", s.state),
            ));
        }
        if s.tcp.is_some() {
            return Err(invalid(path, obj, "tcp", "TCP state on a UDP socket"));
        }
    }
    if !udp && !s.queue.is_empty() {
        return Err(invalid(
            path,
            obj,
            "queue",
            "datagrams queued on a TCP socket",
        ));
    }
    let v4 = s.family == libc::AF_INET as u32;
    for (f, a) in [("local.ip", s.local.as_ref()), ("peer.ip", s.peer.as_ref())] {
        if let Some(ip) = a.and_then(|a| a.ip.parse::<std::net::IpAddr>().ok()) {
            if v4 && ip.is_ipv6() {
                return Err(invalid(
                    path,
                    obj,
                    f,
                    format!("{ip}: an IPv6 address on an AF_INET socket"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        for s in ["127.0.0.1", "::1", "::ffff:10.1.2.3", "fe80::1"] {
            let a = InetAddr {
                ip: s.parse().unwrap(),
                port: 6379,
                flowinfo: 5,
                scope_id: 2,
            };
            assert_eq!(addr_from_proto(&addr_to_proto(&a)), Some(a));
        }
        let mut bad = crate::image::proto::InetAddr::new();
        bad.ip = "1.2.3".into();
        assert_eq!(addr_from_proto(&bad), None);
        bad.ip = "1.2.3.4".into();
        bad.port = 70000;
        assert_eq!(addr_from_proto(&bad), None);
    }

    #[test]
    fn refusals_name_the_connection() {
        let p = Probe {
            ino: 9,
            family: libc::AF_INET,
            ty: libc::SOCK_STREAM,
            proto: libc::IPPROTO_TCP,
            state: TCP_ESTABLISHED,
            local: Some(InetAddr::new("127.0.0.1".parse().unwrap(), 5000)),
            peer: Some(InetAddr::new("127.0.0.1".parse().unwrap(), 6000)),
            pending: 0,
            backlog: 0,
        };
        let why = refusal(&p, false).unwrap();
        assert!(why.contains("127.0.0.1:5000 -> 127.0.0.1:6000"), "{why}");
        assert!(why.contains("--tcp-established"), "{why}");
        assert!(refusal(&p, true).is_none());
        let fw = Probe {
            state: 4,
            ..p.clone()
        };
        assert!(refusal(&fw, true).is_none());
        let why = refusal(&fw, false).unwrap();
        assert!(
            why.contains("FIN_WAIT1") && why.contains("--tcp-established"),
            "{why}"
        );
        let sr = Probe {
            state: 3,
            ..p.clone()
        };
        let why = refusal(&sr, true).unwrap();
        assert!(
            why.contains("SYN_RECV") && why.contains("cannot restore"),
            "{why}"
        );
        let raw = Probe {
            ty: libc::SOCK_RAW,
            proto: 1,
            ..p
        };
        assert!(refusal(&raw, true).unwrap().contains("only TCP and UDP"));
    }

    /// Two dumps of the same socket's options give the same image bytes
    /// (with a map, each dump had its own order).
    #[test]
    fn options_encode_deterministically() {
        use protobuf::Message;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = OwnedFd::from(l);
        let bytes = || {
            let mut sk = InetSk::new();
            sk.family = libc::AF_INET as u32;
            sk.protocol = libc::IPPROTO_TCP as u32;
            sk.state = TCP_LISTEN;
            dump_opts(&fd, &mut sk).unwrap();
            assert!(sk.opts.len() > 10, "{:?}", sk.opts);
            sk.write_to_bytes().unwrap()
        };
        let first = bytes();
        for _ in 0..8 {
            assert_eq!(bytes(), first);
        }
    }

    /// Images written when the options were a map read the same.
    #[test]
    fn old_map_options_still_read() {
        use protobuf::Message;
        // Field 10, length-delimited: a map entry {key: "IP_TOS", value: 16}.
        let mut raw = vec![0x52, 10, 0x0a, 6];
        raw.extend_from_slice(b"IP_TOS");
        raw.extend_from_slice(&[0x10, 16]);
        let sk = InetSk::parse_from_bytes(&raw).unwrap();
        assert_eq!(int_opt(&sk, "IP_TOS"), Some(16));
        assert_eq!(int_opt(&sk, "IP_TTL"), None);
    }

    #[test]
    fn proc_net_addresses() {
        let a = parse_proc_addr("0100007F:1F90").unwrap();
        assert_eq!(a.to_string(), "127.0.0.1:8080");
        let b = parse_proc_addr("00000000000000000000000001000000:0050").unwrap();
        assert_eq!(b.ip, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(b.port, 80);
        assert!(parse_proc_addr("zz:1").is_none());
    }

    #[test]
    fn wildcard_receivers_get_loopback() {
        let any6 = InetAddr::new("::".parse().unwrap(), 53);
        let from4 = InetAddr::new("::ffff:10.0.0.2".parse().unwrap(), 9);
        assert_eq!(
            deliver_to(&any6, &from4).ip,
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        let from6 = InetAddr::new("fd00::2".parse().unwrap(), 9);
        assert_eq!(
            deliver_to(&any6, &from6).ip,
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        );
        let bound = InetAddr::new("10.0.0.1".parse().unwrap(), 53);
        assert_eq!(deliver_to(&bound, &from4), bound);
    }
}
