//! Netlink sockets (AF_NETLINK) of NETLINK_ROUTE, NETLINK_SOCK_DIAG and
//! NETLINK_KOBJECT_UEVENT: the bound port id, the multicast groups, the
//! connected destination, the SOL_NETLINK options and the SOL_SOCKET ones
//! ([`super::sockopts`]).
//!
//! Read at dump from a pidfd_getfd copy (getsockname, getpeername,
//! NETLINK_LIST_MEMBERSHIPS, getsockopt) and from netlink_diag (queued
//! bytes, a dump in progress, the network namespace). Recreated by an
//! injected `socket(2)` in the vessel and configured from cairn through a
//! copy: options, bind to the same port id, the groups, connect; then
//! everything is read back and compared.
//!
//! Refused at dump: other netlink protocols (their kernel side keeps
//! per-socket state cairn does not save: audit daemons, netfilter queues,
//! generic netlink families), a socket with queued messages (the kernel
//! has no way to queue them again), a socket in the middle of a netlink
//! dump, a socket of another network namespace.

use std::os::fd::OwnedFd;
use std::path::Path;

use crate::error::{Error, Result};
use crate::image::proto::file_desc;
use crate::image::proto::netlink::NetlinkSk;
use crate::image::validate::{bad as invalid, count};
use crate::kinds::fd::{not_mine, DumpCx, FdKind, FdRef, RestoreCx};
use crate::remote::Calls;
use crate::sys::netlink::{self as nl, NlAddr, SOL_NETLINK};
use crate::sys::sock;
use crate::sys::sockdiag;

const NETLINK_ROUTE: u32 = 0;
const NETLINK_SOCK_DIAG: u32 = 4;
const NETLINK_KOBJECT_UEVENT: u32 = 15;
const NETLINK_ADD_MEMBERSHIP: i32 = 1;

/// The SOL_NETLINK boolean options: (name, option, getter, setter).
type BoolOpt = (
    &'static str,
    i32,
    fn(&NetlinkSk) -> bool,
    fn(&mut NetlinkSk, bool),
);

/// NETLINK_LISTEN_ALL_NSID, which getsockopt reads only on newer kernels.
const LISTEN_ALL_NSID: i32 = 8;

const OPTS: &[BoolOpt] = &[
    ("NETLINK_PKTINFO", 3, |s| s.pktinfo, |s, v| s.pktinfo = v),
    (
        "NETLINK_BROADCAST_ERROR",
        4,
        |s| s.broadcast_error,
        |s, v| s.broadcast_error = v,
    ),
    (
        "NETLINK_NO_ENOBUFS",
        5,
        |s| s.no_enobufs,
        |s, v| s.no_enobufs = v,
    ),
    (
        "NETLINK_LISTEN_ALL_NSID",
        LISTEN_ALL_NSID,
        |s| s.listen_all_nsid,
        |s, v| s.listen_all_nsid = v,
    ),
    ("NETLINK_CAP_ACK", 10, |s| s.cap_ack, |s, v| s.cap_ack = v),
    ("NETLINK_EXT_ACK", 11, |s| s.ext_ack, |s, v| s.ext_ack = v),
    (
        "NETLINK_GET_STRICT_CHK",
        12,
        |s| s.get_strict_chk,
        |s, v| s.get_strict_chk = v,
    ),
];

/// The name of a netlink protocol cairn restores (None: not one).
fn protocol_name(p: u32) -> Option<&'static str> {
    match p {
        NETLINK_ROUTE => Some("NETLINK_ROUTE"),
        NETLINK_SOCK_DIAG => Some("NETLINK_SOCK_DIAG"),
        NETLINK_KOBJECT_UEVENT => Some("NETLINK_KOBJECT_UEVENT"),
        _ => None,
    }
}

fn grab(f: &FdRef) -> Result<OwnedFd> {
    sock::pidfd_getfd(f.pid, f.fd)
        .map_err(|e| Error::sys(f.pid, format!("pidfd_getfd fd {}", f.fd), e))
}

/// The protocol of a netlink socket, refused unless cairn restores it.
fn protocol(f: &FdRef, s: &OwnedFd) -> Result<u32> {
    let p = sock::get_int(s, libc::SOL_SOCKET, libc::SO_PROTOCOL)
        .map_err(|e| Error::sys(f.pid, format!("fd {}: SO_PROTOCOL", f.fd), e))? as u32;
    if protocol_name(p).is_none() {
        return Err(Error::unsupported(
            f.pid,
            format!(
                "fd {} ({}) is a netlink socket of protocol {p}, which cairn cannot checkpoint \
                 (only NETLINK_ROUTE, NETLINK_SOCK_DIAG and NETLINK_KOBJECT_UEVENT: other \
                 protocols keep per-socket state in the kernel that cairn does not save)",
                f.fd, f.target
            ),
        ));
    }
    Ok(p)
}

/// Why the kernel state of this socket cannot come back (None: it can),
/// from netlink_diag: queued messages, a dump in progress, another
/// network namespace.
fn diag_refusal(s: &OwnedFd, ino: u64, protocol: u32) -> std::io::Result<Option<String>> {
    let d = sockdiag::netlink::by_ino(protocol as u8, ino as u32)?;
    let portid = nl::nl_name(s)?.pid;
    let groups = nl::nl_memberships(s)?;
    let Some(d) = d else {
        // The kernel lists every bound socket and every socket with
        // groups of its namespace: one missing is in another namespace.
        if portid != 0 || !groups.is_empty() {
            return Ok(Some(
                "is not in cairn's network namespace (not supported)".into(),
            ));
        }
        if let Err(e) = sock::get_int(s, SOL_NETLINK, LISTEN_ALL_NSID) {
            if e.raw_os_error() == Some(libc::ENOPROTOOPT) {
                return Ok(Some(format!(
                    "is unbound and has no groups, so netlink_diag does not list it, and this \
                     kernel's getsockopt cannot read NETLINK_LISTEN_ALL_NSID ({e}): whether \
                     that option is set cannot be known (bind the socket before the checkpoint)"
                )));
            }
        }
        return Ok(None);
    };
    if let Some(n) = d.rmem_alloc.filter(|&n| n > 0) {
        return Ok(Some(format!(
            "has {n} bytes of queued messages, which cannot be queued into a netlink socket \
             again (read them before the checkpoint)"
        )));
    }
    if d.flags.unwrap_or(0) & sockdiag::netlink::FLAG_CB_RUNNING != 0 {
        return Ok(Some(
            "is in the middle of a netlink dump, whose remaining replies are kernel state \
             cairn cannot save"
                .into(),
        ));
    }
    Ok(None)
}

fn refuse(f: &FdRef, protocol: u32, why: &str) -> Error {
    Error::unsupported(
        f.pid,
        format!(
            "fd {} ({}, {}) {why}",
            f.fd,
            f.target,
            protocol_name(protocol).unwrap_or("netlink")
        ),
    )
}

/// Everything of the socket behind `s` (a copy of the task's).
fn read(s: &OwnedFd, ino: u64, protocol: u32) -> std::io::Result<NetlinkSk> {
    let mut n = NetlinkSk::new();
    n.ino = ino;
    n.protocol = protocol;
    n.type_ = sock::get_int(s, libc::SOL_SOCKET, libc::SO_TYPE)? as u32;
    n.portid = nl::nl_name(s)?.pid;
    n.groups = nl::nl_memberships(s)?;
    let peer = nl::nl_peer(s)?;
    n.dst_portid = peer.pid;
    // getpeername gives the destination group as a one-bit mask.
    n.dst_group = if peer.groups == 0 {
        0
    } else {
        peer.groups.trailing_zeros() + 1
    };
    for (name, opt, _, set) in OPTS {
        let v = match sock::get_int(s, SOL_NETLINK, *opt) {
            Ok(v) => v != 0,
            // Older kernels cannot read this one by getsockopt (ENOPROTOOPT,
            // seen on 5.10): netlink_diag's flags say whether it is set.
            Err(e) if *opt == LISTEN_ALL_NSID && e.raw_os_error() == Some(libc::ENOPROTOOPT) => {
                let d = sockdiag::netlink::by_ino(protocol as u8, ino as u32).map_err(|e2| {
                    std::io::Error::new(e2.kind(), format!("{name}: {e}; netlink_diag: {e2}"))
                })?;
                let flags = d.and_then(|d| d.flags).ok_or_else(|| {
                    std::io::Error::other(format!(
                        "{name}: {e}, and netlink_diag gives no flags for the socket"
                    ))
                })?;
                flags & sockdiag::netlink::FLAG_LISTEN_ALL_NSID != 0
            }
            Err(e) => return Err(std::io::Error::new(e.kind(), format!("{name}: {e}"))),
        };
        set(&mut n, v);
    }
    n.sock_opts = Some(super::sockopts::dump(s)?).into();
    Ok(n)
}

/// The differences between the saved socket and the restored one.
fn diff(want: &NetlinkSk, got: &NetlinkSk) -> Vec<String> {
    let mut d = Vec::new();
    let mut cmp = |name: &str, a: String, b: String| {
        if a != b {
            d.push(format!("{name} is {b}, was {a}"));
        }
    };
    cmp("type", want.type_.to_string(), got.type_.to_string());
    cmp("port id", want.portid.to_string(), got.portid.to_string());
    cmp(
        "groups",
        format!("{:?}", want.groups),
        format!("{:?}", got.groups),
    );
    cmp(
        "destination",
        format!("{}/{}", want.dst_portid, want.dst_group),
        format!("{}/{}", got.dst_portid, got.dst_group),
    );
    for (name, _, get, _) in OPTS {
        cmp(name, get(want).to_string(), get(got).to_string());
    }
    if let (Some(w), Some(g)) = (want.sock_opts.as_ref(), got.sock_opts.as_ref()) {
        d.extend(super::sockopts::diff(w, g));
    }
    d
}

/// Configures `s` (fresh, of the saved type and protocol) as `n` was.
fn configure(s: &OwnedFd, n: &NetlinkSk) -> std::result::Result<(), String> {
    for (name, opt, get, _) in OPTS {
        if get(n) {
            sock::set_int(s, SOL_NETLINK, *opt, 1).map_err(|e| format!("{name}: {e}"))?;
        }
    }
    if let Some(o) = n.sock_opts.as_ref() {
        let failed = super::sockopts::restore(s, o);
        if !failed.is_empty() {
            return Err(failed.join(", "));
        }
    }
    if n.portid != 0 {
        nl::nl_bind(
            s,
            NlAddr {
                pid: n.portid,
                groups: 0,
            },
        )
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::EADDRINUSE) {
                format!(
                    "bind to port id {}: taken by another netlink socket of this protocol",
                    n.portid
                )
            } else {
                format!("bind to port id {}: {e}", n.portid)
            }
        })?;
    }
    for &g in &n.groups {
        sock::set_int(s, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, g as i32)
            .map_err(|e| format!("NETLINK_ADD_MEMBERSHIP {g}: {e}"))?;
    }
    if n.dst_portid != 0 || n.dst_group != 0 {
        let groups = if n.dst_group == 0 {
            0
        } else {
            1u32 << (n.dst_group - 1)
        };
        nl::nl_connect(
            s,
            NlAddr {
                pid: n.dst_portid,
                groups,
            },
        )
        .map_err(|e| format!("connect to {}/{}: {e}", n.dst_portid, n.dst_group))?;
    }
    Ok(())
}

/// Netlink sockets.
pub struct Netlink;

impl FdKind for Netlink {
    fn name(&self) -> &'static str {
        "netlink socket"
    }

    fn precheck(&self, f: &FdRef) -> Result<bool> {
        let Some(ino) = f.socket_ino() else {
            return Ok(false);
        };
        if f.proto() != "NETLINK" {
            return Ok(false);
        }
        let s = match grab(f) {
            Ok(s) => s,
            // Closed meanwhile (not frozen yet): nothing to check.
            Err(_) if !crate::sys::task::pid_exists(f.pid) => return Ok(true),
            Err(e) => return Err(e),
        };
        let p = protocol(f, &s)?;
        if let Some(why) = diag_refusal(&s, ino, p)
            .map_err(|e| Error::sys(f.pid, format!("fd {}: netlink_diag", f.fd), e))?
        {
            return Err(refuse(f, p, &why));
        }
        if let Some(why) = super::sockopts::unrestorable(&s) {
            return Err(refuse(f, p, &why));
        }
        Ok(true)
    }

    fn describe(&self, f: &FdRef, _cx: &mut DumpCx) -> Result<Option<file_desc::Kind>> {
        let Some(ino) = f.socket_ino() else {
            return Ok(None);
        };
        if f.proto() != "NETLINK" {
            return Ok(None);
        }
        let s = grab(f)?;
        let p = protocol(f, &s)?;
        // Again while frozen: nothing can be queued from now on but by
        // the kernel, and a dump is refused rather than losing it.
        if let Some(why) = diag_refusal(&s, ino, p)
            .map_err(|e| Error::sys(f.pid, format!("fd {}: netlink_diag", f.fd), e))?
        {
            return Err(refuse(f, p, &why));
        }
        if let Some(why) = super::sockopts::unrestorable(&s) {
            return Err(refuse(f, p, &why));
        }
        let n = read(&s, ino, p)
            .map_err(|e| Error::sys(f.pid, format!("fd {}: read the netlink socket", f.fd), e))?;
        Ok(Some(file_desc::Kind::Netlink(n)))
    }

    fn validate(&self, k: &file_desc::Kind, path: &Path, obj: &str) -> Result<()> {
        let file_desc::Kind::Netlink(n) = k else {
            return Err(not_mine(self));
        };
        if protocol_name(n.protocol).is_none() {
            return Err(invalid(path, obj, "protocol", n.protocol));
        }
        if n.type_ != libc::SOCK_RAW as u32 && n.type_ != libc::SOCK_DGRAM as u32 {
            return Err(invalid(path, obj, "type", n.type_));
        }
        count(path, obj, "groups", n.groups.len(), 1 << 16)?;
        if n.groups.iter().any(|&g| g == 0 || g > 1 << 16) {
            return Err(invalid(path, obj, "groups", "a group outside 1..65536"));
        }
        if n.dst_group > 32 {
            return Err(invalid(path, obj, "dst_group", n.dst_group));
        }
        if let Some(o) = n.sock_opts.as_ref() {
            if super::sockopts::decode_filter(&o.filter).is_none() {
                return Err(invalid(path, obj, "sock_opts.filter", "malformed"));
            }
        }
        Ok(())
    }

    fn open(&self, k: &file_desc::Kind, calls: &mut dyn Calls, _cx: &mut RestoreCx) -> Result<u64> {
        let file_desc::Kind::Netlink(n) = k else {
            return Err(not_mine(self));
        };
        let pid = calls.pid();
        let what = format!(
            "pid {pid}: {} socket (port id {})",
            protocol_name(n.protocol).unwrap_or("netlink"),
            n.portid
        );
        let fd = calls.socket(
            libc::AF_NETLINK,
            n.type_ as i32 | libc::SOCK_CLOEXEC,
            n.protocol as i32,
        )?;
        let s = sock::pidfd_getfd(pid, fd as i32)
            .map_err(|e| Error::sys(pid, format!("pidfd_getfd of the new socket {fd}"), e))?;
        configure(&s, n).map_err(|e| Error::Restore(format!("{what}: {e}")))?;
        // The new socket's own inode (netlink_diag finds it by that).
        let ino = std::fs::File::from(
            s.try_clone()
                .map_err(|e| Error::sys(pid, format!("dup of the new socket {fd}"), e))?,
        )
        .metadata()
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .map_err(|e| Error::sys(pid, format!("fstat of the new socket {fd}"), e))?;
        let got = read(&s, ino, n.protocol)
            .map_err(|e| Error::Restore(format!("{what}: read back: {e}")))?;
        let d = diff(n, &got);
        if !d.is_empty() {
            return Err(Error::Restore(format!(
                "{what} did not come back as it was: {}",
                d.join("; ")
            )));
        }
        Ok(fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::net::socket_proto;

    /// A socket read, configured onto a fresh one and read again is the
    /// same (port id, groups above 32, options, destination).
    #[test]
    fn configure_round_trip() {
        let a = socket_proto(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE).unwrap();
        nl::nl_bind(&a, NlAddr { pid: 0, groups: 1 }).unwrap();
        sock::set_int(&a, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, 36).unwrap();
        sock::set_int(&a, SOL_NETLINK, 3, 1).unwrap();
        sock::set_int(&a, SOL_NETLINK, 12, 1).unwrap();
        let mut n = read(&a, 0, NETLINK_ROUTE).unwrap();
        assert_eq!(n.groups, vec![1, 36]);
        assert!(n.pktinfo && n.get_strict_chk && !n.no_enobufs);
        // The same port id cannot be bound twice: give the copy its own.
        let portid = n.portid;
        drop(a);
        n.dst_portid = 0;
        let b = socket_proto(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE).unwrap();
        configure(&b, &n).unwrap();
        let got = read(&b, 0, NETLINK_ROUTE).unwrap();
        assert_eq!(got.portid, portid);
        assert!(diff(&n, &got).is_empty(), "{:?}", diff(&n, &got));
        let fresh = socket_proto(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE).unwrap();
        let f = read(&fresh, 0, NETLINK_ROUTE).unwrap();
        let d = diff(&n, &f);
        assert!(d.iter().any(|s| s.starts_with("groups")), "{d:?}");
        assert!(d.iter().any(|s| s.starts_with("NETLINK_PKTINFO")), "{d:?}");
    }
}
