//! Packet sockets (AF_PACKET, SOCK_RAW or SOCK_DGRAM): the protocol, the
//! bound interface (by index, with its name checked at restore), the
//! SOL_PACKET options, the multicast and promiscuous memberships and the
//! SOL_SOCKET options ([`super::sockopts`]).
//!
//! Read at dump from a pidfd_getfd copy (getsockname, getsockopt) and
//! from packet_diag (memberships, rings, fanout, queued bytes, the copy
//! threshold). Recreated by an injected `socket(2)` in the vessel and
//! configured from cairn: options, bind, memberships; then read back and
//! compared.
//!
//! Refused at dump: a socket with packets queued (they cannot be queued
//! again), with a PACKET_RX_RING or PACKET_TX_RING (the ring's frames and
//! the kernel's position in it are not restored), in a fanout group (the
//! members' order, balancing cursor and any BPF program cannot be set
//! back), of another network namespace. The refusal of a ring or a fanout
//! group names the state that no socket option shows (the kernel's frame
//! or V3 block position, the group's member limit and cursor), read from
//! struct packet_sock with BPF ([`crate::sys::pktring`]).

use std::os::fd::OwnedFd;
use std::path::Path;

use crate::error::{Error, Result};
use crate::image::proto::file_desc;
use crate::image::proto::netlink::{PacketMc, PacketSk};
use crate::image::validate::{bad as invalid, check_name, count};
use crate::kinds::fd::{not_mine, DumpCx, FdKind, FdRef, RestoreCx};
use crate::remote::Calls;
use crate::sys::netlink::{self as nl, LlAddr, SOL_PACKET};
use crate::sys::pktring;
use crate::sys::sock;
use crate::sys::sockdiag::packet::{self as diag, PacketDiag};

const PACKET_COPY_THRESH: i32 = 7;
const PACKET_FANOUT: i32 = 18;

/// SOL_PACKET integer options: (name, option, getter, setter).
type IntOpt = (
    &'static str,
    i32,
    fn(&PacketSk) -> u32,
    fn(&mut PacketSk, u32),
);

/// In the order restore sets them (PACKET_VERSION first: others depend
/// on the header layout).
const OPTS: &[IntOpt] = &[
    ("PACKET_VERSION", 10, |s| s.version, |s, v| s.version = v),
    ("PACKET_RESERVE", 12, |s| s.reserve, |s, v| s.reserve = v),
    (
        "PACKET_AUXDATA",
        8,
        |s| s.auxdata as u32,
        |s, v| s.auxdata = v != 0,
    ),
    (
        "PACKET_ORIGDEV",
        9,
        |s| s.origdev as u32,
        |s, v| s.origdev = v != 0,
    ),
    (
        "PACKET_VNET_HDR",
        15,
        |s| s.vnet_hdr as u32,
        |s, v| s.vnet_hdr = v != 0,
    ),
    (
        "PACKET_VNET_HDR_SZ",
        24,
        |s| s.vnet_hdr_sz,
        |s, v| s.vnet_hdr_sz = v,
    ),
    (
        "PACKET_TIMESTAMP",
        17,
        |s| s.timestamp,
        |s, v| s.timestamp = v,
    ),
    ("PACKET_LOSS", 14, |s| s.loss as u32, |s, v| s.loss = v != 0),
    (
        "PACKET_QDISC_BYPASS",
        20,
        |s| s.qdisc_bypass as u32,
        |s, v| s.qdisc_bypass = v != 0,
    ),
    (
        "PACKET_TX_HAS_OFF",
        19,
        |s| s.tx_has_off as u32,
        |s, v| s.tx_has_off = v != 0,
    ),
    (
        "PACKET_IGNORE_OUTGOING",
        23,
        |s| s.ignore_outgoing as u32,
        |s, v| s.ignore_outgoing = v != 0,
    ),
];

fn grab(f: &FdRef) -> Result<OwnedFd> {
    sock::pidfd_getfd(f.pid, f.fd)
        .map_err(|e| Error::sys(f.pid, format!("pidfd_getfd fd {}", f.fd), e))
}

fn mr_name(ty: u32) -> &'static str {
    match ty {
        0 => "multicast",
        1 => "promiscuous",
        2 => "all-multicast",
        3 => "unicast",
        _ => "unknown",
    }
}

/// The kernel's position in the rings of socket `ino` of `pid` and its
/// fanout group's state (read with BPF, see [`crate::sys::pktring`]), for
/// the refusal; `None` when it cannot be read.
fn kernel_state(pid: i32, ino: u64) -> Option<pktring::PacketState> {
    match pktring::read(pid, ino) {
        Ok(s) => s,
        Err(e) => {
            crate::debug!("pid {pid}: packet socket {ino}: {e}");
            None
        }
    }
}

const TPACKET_VERSIONS: [&str; 3] = ["TPACKET_V1", "TPACKET_V2", "TPACKET_V3"];

/// The packet_diag view of the socket `ino` of `pid`, or why it cannot
/// be restored.
fn examine(pid: i32, ino: u64) -> std::io::Result<std::result::Result<PacketDiag, String>> {
    let Some(d) = diag::by_ino(ino as u32)? else {
        return Ok(Err(
            "is not in cairn's network namespace (not supported)".into()
        ));
    };
    if let Some(n) = d.rmem_alloc.filter(|&n| n > 0) {
        return Ok(Err(format!(
            "has {n} bytes of received packets queued, which cannot be queued into a packet \
             socket again"
        )));
    }
    if d.rx_ring.is_some() || d.tx_ring.is_some() {
        let k = kernel_state(pid, ino);
        let mut rings = Vec::new();
        for (name, r, tx) in [
            ("PACKET_RX_RING", d.rx_ring, false),
            ("PACKET_TX_RING", d.tx_ring, true),
        ] {
            let Some(r) = r else { continue };
            let at = match k {
                None => String::new(),
                Some(k) if tx => format!("; the kernel sends frame {} next", k.tx_head),
                Some(k) if k.version == 2 => format!(
                    "; the kernel fills block {} at offset {} next",
                    k.v3_active_block, k.v3_offset
                ),
                Some(k) => format!("; the kernel fills frame {} next", k.rx_head),
            };
            rings.push(format!(
                "a {name} ({} blocks of {} bytes, {} frames of {}{at})",
                r.block_nr, r.block_size, r.frame_nr, r.frame_size
            ));
        }
        let version = k
            .and_then(|k| TPACKET_VERSIONS.get(k.version as usize))
            .map_or(String::new(), |v| format!(" {v}"));
        return Ok(Err(format!(
            "has {}{version}: cairn does not restore packet rings (the frames in the ring's \
             mapping and the kernel's position in the ring, which no socket option sets, would \
             have to come back together)",
            rings.join(" and ")
        )));
    }
    if let Some(f) = d.fanout {
        let members = match kernel_state(pid, ino).and_then(|k| k.fanout) {
            Some(g) => format!(
                ", {} of at most {} members, round-robin cursor {}",
                g.members, g.max_members, g.rr_cur
            ),
            None => String::new(),
        };
        return Ok(Err(format!(
            "is in PACKET_FANOUT group {} (type {}, flags {:#x}{members}), which cairn cannot \
             restore exactly (the members' order in the group, which picks the member of each \
             packet, the balancing cursor and any fanout BPF program cannot be set back)",
            f & 0xffff,
            (f >> 16) & 0xff,
            f >> 24
        )));
    }
    Ok(Ok(d))
}

fn refuse(f: &FdRef, why: &str) -> Error {
    Error::unsupported(
        f.pid,
        format!("fd {} ({}, packet socket) {why}", f.fd, f.target),
    )
}

/// Everything of the socket `s` (a copy of the task's; `d` its diag).
fn read(s: &OwnedFd, ino: u64, d: &PacketDiag) -> std::io::Result<PacketSk> {
    let mut p = PacketSk::new();
    p.ino = ino;
    p.type_ = sock::get_int(s, libc::SOL_SOCKET, libc::SO_TYPE)? as u32;
    let a = nl::ll_name(s)?;
    p.protocol = u16::from_be(a.protocol_be) as u32;
    p.ifindex = a.ifindex.max(0) as u32;
    if p.ifindex != 0 {
        p.ifname = nl::if_name(p.ifindex)?;
    }
    for (name, opt, _, set) in OPTS {
        match sock::get_int(s, SOL_PACKET, *opt) {
            Ok(v) => set(&mut p, v as u32),
            // PACKET_VNET_HDR_SZ is 6.2 on; older kernels have only
            // PACKET_VNET_HDR.
            Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => {}
            Err(e) => return Err(std::io::Error::new(e.kind(), format!("{name}: {e}"))),
        }
    }
    p.copy_thresh = d.info.map_or(0, |i| i.copy_thresh);
    for m in &d.mclist {
        p.mclist.push(PacketMc {
            ifindex: m.ifindex,
            ifname: nl::if_name(m.ifindex)?,
            type_: m.ty as u32,
            addr: m.addr.clone(),
            count: m.count,
            ..Default::default()
        });
    }
    p.sock_opts = Some(super::sockopts::dump(s)?).into();
    Ok(p)
}

fn diff(want: &PacketSk, got: &PacketSk) -> Vec<String> {
    let mut d = Vec::new();
    let mut cmp = |name: &str, a: String, b: String| {
        if a != b {
            d.push(format!("{name} is {b}, was {a}"));
        }
    };
    cmp("type", want.type_.to_string(), got.type_.to_string());
    cmp(
        "protocol",
        format!("{:#x}", want.protocol),
        format!("{:#x}", got.protocol),
    );
    cmp(
        "interface",
        format!("{} ({})", want.ifindex, want.ifname),
        format!("{} ({})", got.ifindex, got.ifname),
    );
    for (name, _, get, _) in OPTS {
        cmp(name, get(want).to_string(), get(got).to_string());
    }
    cmp(
        "PACKET_COPY_THRESH",
        want.copy_thresh.to_string(),
        got.copy_thresh.to_string(),
    );
    let mc = |p: &PacketSk| {
        let mut v: Vec<String> = p
            .mclist
            .iter()
            .map(|m| {
                format!(
                    "{} {} {:02x?} x{}",
                    m.ifname,
                    mr_name(m.type_),
                    m.addr,
                    m.count
                )
            })
            .collect();
        v.sort();
        v.join(", ")
    };
    cmp("memberships", mc(want), mc(got));
    if let (Some(w), Some(g)) = (want.sock_opts.as_ref(), got.sock_opts.as_ref()) {
        d.extend(super::sockopts::diff(w, g));
    }
    d
}

/// The index interface `name` has now, required to be `ifindex`.
fn same_interface(name: &str, ifindex: u32) -> std::result::Result<i32, String> {
    let now = nl::if_index(name).map_err(|e| format!("interface {name}: {e}"))?;
    if now != ifindex {
        return Err(format!(
            "interface {name} has index {now} now, was {ifindex} (the program may know the index)"
        ));
    }
    Ok(now as i32)
}

/// Configures `s` (fresh, of the saved type, protocol 0) as `p` was.
fn configure(s: &OwnedFd, p: &PacketSk) -> std::result::Result<(), String> {
    for (name, opt, get, _) in OPTS {
        let want = get(p);
        let now = sock::get_int(s, SOL_PACKET, *opt).ok().map(|v| v as u32);
        if now == Some(want) || (now.is_none() && want == 0) {
            continue;
        }
        sock::set_int(s, SOL_PACKET, *opt, want as i32).map_err(|e| format!("{name}: {e}"))?;
    }
    if p.copy_thresh != 0 {
        sock::set_int(s, SOL_PACKET, PACKET_COPY_THRESH, p.copy_thresh as i32)
            .map_err(|e| format!("PACKET_COPY_THRESH: {e}"))?;
    }
    if let Some(o) = p.sock_opts.as_ref() {
        let failed = super::sockopts::restore(s, o);
        if !failed.is_empty() {
            return Err(failed.join(", "));
        }
    }
    let ifindex = if p.ifindex != 0 {
        same_interface(&p.ifname, p.ifindex)?
    } else {
        0
    };
    if p.protocol != 0 || ifindex != 0 {
        nl::ll_bind(
            s,
            LlAddr {
                ifindex,
                protocol_be: (p.protocol as u16).to_be(),
            },
        )
        .map_err(|e| {
            format!(
                "bind to interface {} protocol {:#x}: {e}",
                p.ifname, p.protocol
            )
        })?;
    }
    for m in &p.mclist {
        let i = same_interface(&m.ifname, m.ifindex)?;
        for _ in 0..m.count {
            nl::packet_add_membership(s, i, m.type_ as u16, &m.addr).map_err(|e| {
                format!(
                    "PACKET_ADD_MEMBERSHIP {} on {}: {e}",
                    mr_name(m.type_),
                    m.ifname
                )
            })?;
        }
    }
    Ok(())
}

/// The inode of cairn's descriptor `s`.
fn own_ino(s: &OwnedFd) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(format!("/proc/self/fd/{}", s.as_raw_fd()))?.ino())
}

/// Packet sockets.
pub struct Packet;

impl FdKind for Packet {
    fn name(&self) -> &'static str {
        "packet socket"
    }

    fn precheck(&self, f: &FdRef) -> Result<bool> {
        let Some(ino) = f.socket_ino() else {
            return Ok(false);
        };
        if f.proto() != "PACKET" {
            return Ok(false);
        }
        let s = match grab(f) {
            Ok(s) => s,
            Err(_) if !crate::sys::task::pid_exists(f.pid) => return Ok(true),
            Err(e) => return Err(e),
        };
        if let Err(why) = examine(f.pid, ino)
            .map_err(|e| Error::sys(f.pid, format!("fd {}: packet_diag", f.fd), e))?
        {
            return Err(refuse(f, &why));
        }
        if let Some(why) = super::sockopts::unrestorable(&s) {
            return Err(refuse(f, &why));
        }
        Ok(true)
    }

    fn describe(&self, f: &FdRef, _cx: &mut DumpCx) -> Result<Option<file_desc::Kind>> {
        let Some(ino) = f.socket_ino() else {
            return Ok(None);
        };
        if f.proto() != "PACKET" {
            return Ok(None);
        }
        let s = grab(f)?;
        let d = examine(f.pid, ino)
            .map_err(|e| Error::sys(f.pid, format!("fd {}: packet_diag", f.fd), e))?
            .map_err(|why| refuse(f, &why))?;
        if let Some(why) = super::sockopts::unrestorable(&s) {
            return Err(refuse(f, &why));
        }
        if sock::get_int(&s, SOL_PACKET, PACKET_FANOUT).unwrap_or(0) != 0 {
            return Err(refuse(
                f,
                "is in a PACKET_FANOUT group, which cairn cannot restore",
            ));
        }
        let p = read(&s, ino, &d)
            .map_err(|e| Error::sys(f.pid, format!("fd {}: read the packet socket", f.fd), e))?;
        Ok(Some(file_desc::Kind::Packet(p)))
    }

    fn validate(&self, k: &file_desc::Kind, path: &Path, obj: &str) -> Result<()> {
        let file_desc::Kind::Packet(p) = k else {
            return Err(not_mine(self));
        };
        if p.type_ != libc::SOCK_RAW as u32 && p.type_ != libc::SOCK_DGRAM as u32 {
            return Err(invalid(path, obj, "type", p.type_));
        }
        if p.protocol > 0xffff {
            return Err(invalid(path, obj, "protocol", p.protocol));
        }
        if p.version > 2 {
            return Err(invalid(path, obj, "version", p.version));
        }
        check_name(path, obj, "ifname", &p.ifname, 15)?;
        if (p.ifindex == 0) != p.ifname.is_empty() || p.ifindex > i32::MAX as u32 {
            return Err(invalid(path, obj, "ifindex", "index and name disagree"));
        }
        count(path, obj, "mclist", p.mclist.len(), 4096)?;
        for m in &p.mclist {
            check_name(path, obj, "mclist.ifname", &m.ifname, 15)?;
            if m.ifname.is_empty() || m.ifindex == 0 || m.ifindex > i32::MAX as u32 {
                return Err(invalid(path, obj, "mclist.ifindex", m.ifindex));
            }
            if m.type_ > 3 || m.addr.len() > 8 || m.count == 0 || m.count > 1 << 16 {
                return Err(invalid(path, obj, "mclist", "bad type, address or count"));
            }
        }
        if let Some(o) = p.sock_opts.as_ref() {
            if super::sockopts::decode_filter(&o.filter).is_none() {
                return Err(invalid(path, obj, "sock_opts.filter", "malformed"));
            }
        }
        Ok(())
    }

    fn open(&self, k: &file_desc::Kind, calls: &mut dyn Calls, _cx: &mut RestoreCx) -> Result<u64> {
        let file_desc::Kind::Packet(p) = k else {
            return Err(not_mine(self));
        };
        let pid = calls.pid();
        let what = format!(
            "pid {pid}: packet socket (protocol {:#x}, interface {})",
            p.protocol,
            if p.ifname.is_empty() {
                "any"
            } else {
                &p.ifname
            }
        );
        // Protocol 0: nothing is received before the socket is bound
        // with its own.
        let fd = calls.socket(libc::AF_PACKET, p.type_ as i32 | libc::SOCK_CLOEXEC, 0)?;
        let s = sock::pidfd_getfd(pid, fd as i32)
            .map_err(|e| Error::sys(pid, format!("pidfd_getfd of the new socket {fd}"), e))?;
        configure(&s, p).map_err(|e| Error::Restore(format!("{what}: {e}")))?;
        let d = own_ino(&s)
            .and_then(|i| diag::by_ino(i as u32))
            .map_err(|e| Error::Restore(format!("{what}: packet_diag: {e}")))?
            .ok_or_else(|| Error::Restore(format!("{what}: packet_diag does not list it")))?;
        let got =
            read(&s, p.ino, &d).map_err(|e| Error::Restore(format!("{what}: read back: {e}")))?;
        let diffs = diff(p, &got);
        if !diffs.is_empty() {
            return Err(Error::Restore(format!(
                "{what} did not come back as it was: {}",
                diffs.join("; ")
            )));
        }
        Ok(fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::net::socket_proto;

    /// A packet socket (options, an unbound protocol-0 socket, so nothing
    /// on the host changes) read, configured onto a fresh one and read
    /// again is the same; a fresh socket differs by name.
    #[test]
    fn configure_round_trip() {
        let Ok(a) = socket_proto(libc::AF_PACKET, libc::SOCK_DGRAM, 0) else {
            return; // needs CAP_NET_RAW
        };
        for (opt, v) in [(10, 1), (12, 64), (8, 1), (9, 1), (14, 1), (20, 1)] {
            sock::set_int(&a, SOL_PACKET, opt, v).unwrap();
        }
        let d = diag::by_ino(own_ino(&a).unwrap() as u32).unwrap().unwrap();
        let p = read(&a, 0, &d).unwrap();
        assert_eq!((p.version, p.reserve), (1, 64));
        assert!(p.auxdata && p.origdev && p.loss && p.qdisc_bypass && !p.vnet_hdr);
        let b = socket_proto(libc::AF_PACKET, libc::SOCK_DGRAM, 0).unwrap();
        let fresh = read(&b, 0, &PacketDiag::default()).unwrap();
        let dd = diff(&p, &fresh);
        assert!(dd.iter().any(|s| s.starts_with("PACKET_VERSION")), "{dd:?}");
        configure(&b, &p).unwrap();
        let db = diag::by_ino(own_ino(&b).unwrap() as u32).unwrap().unwrap();
        let got = read(&b, 0, &db).unwrap();
        assert!(diff(&p, &got).is_empty(), "{:?}", diff(&p, &got));
    }
}
