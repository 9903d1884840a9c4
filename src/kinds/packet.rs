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
//! Rings (PACKET_RX_RING, PACKET_TX_RING; TPACKET_V1/V2/V3) are saved
//! with their setup, their bytes (frames and status words) and the
//! kernel's position in them (read from struct packet_sock with BPF,
//! [`crate::sys::pktring`]); restore sets them up again, moves the
//! kernel's position by feeding (RX) or sending (TX) frames on lo, writes
//! the bytes back and checks the position with BPF
//! (`restore_rings`); the program's mapping of them (a VMA of kind
//! `VMA_PACKET_RING`) is made again once the fds exist ([`map_rings`]).
//!
//! Fanout groups (PACKET_FANOUT) come back with their id, type, flags and
//! member limit, every member rejoined in its place in the group's member
//! array (read with BPF: it picks the member of each packet), once every
//! fd exists ([`FanoutRestore::join`]); see [`fanout_of`] for the groups
//! refused (members outside the tree, a fanout program, a moved
//! round-robin cursor or rollover state).
//!
//! Refused at dump: a socket with packets queued (they cannot be queued
//! again), of another network namespace,
//! and ring states that cannot be set back (see `read_rings`): pending
//! drops, a TPACKET_V3 block still open with packets in it or a frozen
//! queue, TX frames being sent.

use std::os::fd::OwnedFd;
use std::path::Path;

use crate::error::{Error, Result};
use crate::image::proto::file_desc;
use crate::image::proto::netlink::{PacketMc, PacketRing, PacketSk};
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

const TPACKET_VERSIONS: [&str; 3] = ["TPACKET_V1", "TPACKET_V2", "TPACKET_V3"];

/// A failed packet_diag request about `f`. ENOENT for the whole family
/// means the kernel has no packet_diag (CONFIG_PACKET_DIAG, the module
/// af_packet_diag not loaded): cairn cannot read the socket, a refusal
/// that names the kernel feature.
fn diag_error(f: &FdRef, e: std::io::Error) -> Error {
    if e.raw_os_error() == Some(libc::ENOENT) {
        return Error::unsupported(
            f.pid,
            format!(
                "fd {}: packet socket: the kernel has no packet_diag (CONFIG_PACKET_DIAG; \
                 load the af_packet_diag module), through which cairn reads packet sockets",
                f.fd
            ),
        );
    }
    Error::sys(f.pid, format!("fd {}: packet_diag", f.fd), e)
}

/// The packet_diag view of the socket `ino` of `pid`, or why it cannot
/// be restored.
fn examine(ino: u64) -> std::io::Result<std::result::Result<PacketDiag, String>> {
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
    // Rings after the options they depend on (version, reserve, loss),
    // before the filter, the final bind and the memberships: the frames
    // that move the kernel's position must reach the socket, and only
    // they.
    if p.rx_ring.is_some() || p.tx_ring.is_some() {
        restore_rings(s, p)?;
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

// ------------------------------------------------------------ fanout

/// PACKET_FANOUT types (linux/if_packet.h), by number.
const FANOUT_TYPES: [&str; 8] = [
    "PACKET_FANOUT_HASH",
    "PACKET_FANOUT_LB",
    "PACKET_FANOUT_CPU",
    "PACKET_FANOUT_ROLLOVER",
    "PACKET_FANOUT_RND",
    "PACKET_FANOUT_QM",
    "PACKET_FANOUT_CBPF",
    "PACKET_FANOUT_EBPF",
];
const FANOUT_LB: u32 = 1;
const FANOUT_ROLLOVER: u32 = 3;
const FANOUT_CBPF: u32 = 6;
/// PACKET_FANOUT_FLAG_ROLLOVER as the group keeps it (flags >> 8).
const FANOUT_FLAG_ROLLOVER: u32 = 0x10;
/// The member limit of a group made with a plain `int` PACKET_FANOUT.
const FANOUT_LEGACY_MAX: u32 = 256;
/// PACKET_FANOUT_MAX: the largest member limit.
const FANOUT_MAX: u32 = 1 << 16;

/// A packet socket's place in its fanout group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    /// id | type << 16 | flags << 24 (getsockopt(PACKET_FANOUT)).
    pub word: u32,
    pub max: u32,
    pub members: u32,
    pub index: u32,
}

/// "PACKET_FANOUT group 7 (PACKET_FANOUT_HASH, flags 0x90)".
fn group_name(word: u32) -> String {
    let ty = (word >> 16) & 0xff;
    format!(
        "PACKET_FANOUT group {} ({}, flags {:#x})",
        word & 0xffff,
        FANOUT_TYPES
            .get(ty as usize)
            .copied()
            .unwrap_or("unknown type"),
        word >> 24
    )
}

/// The fanout group of socket `ino` of `pid` (`d` its diag) and the
/// socket's place in it, or why a restore could not rebuild it exactly.
/// A restore makes the group again with the same id, type, flags and
/// member limit and joins the members in their order; what it cannot set
/// back is refused: a member not in the group's member array (its
/// interface went down), a PACKET_FANOUT_LB cursor that moved (only as
/// many packets sent to the group could move it again), a fanout program
/// (PACKET_FANOUT_DATA: the kernel keeps no copy of a classic one, and an
/// eBPF one dies with the group), a rollover that rolled over or learnt
/// flows, a member under receive pressure in a group that rolls over.
/// Members outside the tree: [`precheck_tree`]. Rollover counters
/// (PACKET_ROLLOVER_STATS) start at 0, as PACKET_STATISTICS do.
pub fn fanout_of(pid: i32, ino: u64, d: &PacketDiag) -> std::result::Result<Option<Group>, String> {
    let Some(word) = d.fanout else {
        return Ok(None);
    };
    let name = group_name(word);
    let k = match pktring::read(pid, ino) {
        Ok(Some(k)) => k,
        Ok(None) => return Err(format!("is in {name}, and BPF did not find the socket")),
        Err(e) => {
            return Err(format!(
                "is in {name}: its place among the group's members, which picks the member of \
                 each packet and no socket option shows, cannot be read with BPF ({e})"
            ))
        }
    };
    let Some(g) = k.fanout else {
        return Err(format!("is in {name}, which BPF did not find"));
    };
    // packet_diag leaves the flags out; the group has them.
    let word = g.id_type_flags;
    let name = group_name(word);
    let ty = (word >> 16) & 0xff;
    let flags = word >> 24;
    if g.index == pktring::FANOUT_UNLINKED {
        return Err(format!(
            "is in {name} but not among its receiving members (its interface went down): a \
             restore can only join it as a receiving member"
        ));
    }
    if g.index == pktring::FANOUT_UNSEARCHED {
        return Err(format!(
            "is in {name} of {} members (cairn finds a socket's place among the first {})",
            g.members,
            pktring::FANOUT_UNSEARCHED
        ));
    }
    if ty == FANOUT_LB && g.rr_cur != 0 {
        return Err(format!(
            "is in {name}, whose round-robin cursor is at {} (it picks the member of the next \
             packet; only sending as many packets to the group could set it back)",
            g.rr_cur
        ));
    }
    if ty >= FANOUT_CBPF && g.prog {
        return Err(format!(
            "is in {name} with a fanout program (PACKET_FANOUT_DATA), which the kernel does not \
             show (it keeps no copy of a classic program; an eBPF one goes with the group)"
        ));
    }
    let rolls = ty == FANOUT_ROLLOVER || flags & FANOUT_FLAG_ROLLOVER != 0;
    match k.rollover {
        Some((n, _)) if n != 0 => {
            return Err(format!(
                "is in {name} and rolled over to member {n} (where its next rollover starts, \
                 which cannot be set back)"
            ))
        }
        Some((_, true)) => {
            return Err(format!(
                "is in {name} and its rollover learnt flows while its queue ran low (a flow \
                 history no call sets)"
            ))
        }
        _ => {}
    }
    if rolls && k.pressure {
        return Err(format!(
            "is in {name} and under receive pressure (its queue ran low; rollover skips it \
             until it reads, a state no call sets)"
        ));
    }
    if g.members == 0 || g.index >= g.members || g.max_members > FANOUT_MAX {
        return Err(format!(
            "is in {name} at place {} of {} members (at most {}): inconsistent",
            g.index, g.members, g.max_members
        ));
    }
    Ok(Some(Group {
        word,
        max: g.max_members,
        members: g.members,
        index: g.index,
    }))
}

/// Before freezing: every member of a fanout group one of the tree `pids`
/// is in must be in the tree (a restore can rejoin only the tree's
/// sockets; the group would come back smaller and pick other members).
pub fn precheck_tree(pids: &[i32]) -> Result<()> {
    let held = super::unix::sockets_held(pids, |_, proto| proto == "PACKET");
    if held.is_empty() {
        return Ok(());
    }
    let all = match diag::dump_all() {
        Ok(a) => a,
        // No packet_diag: each fd's precheck names the missing feature.
        Err(_) => return Ok(()),
    };
    let mut inside: Vec<&PacketDiag> = (all.iter())
        .filter(|d| d.fanout.is_some() && held.contains_key(&d.ino))
        .collect();
    inside.sort_by_key(|d| d.ino);
    for d in inside {
        let id = d.fanout.unwrap_or(0) & 0xffff;
        let outside: Vec<u32> = (all.iter())
            .filter(|o| o.fanout.is_some_and(|w| w & 0xffff == id) && !held.contains_key(&o.ino))
            .map(|o| o.ino)
            .collect();
        if let Some(&o) = outside.first() {
            let (pid, fd) = held[&d.ino];
            return Err(Error::unsupported(
                pid,
                format!(
                    "fd {fd} (socket:[{}], packet socket) is in {} with {} member(s) outside the \
                     dumped tree (socket:[{o}], {}): a restore can rejoin only the tree's sockets, \
                     and the group would pick other members; dump the tree that holds them all",
                    d.ino,
                    group_name(d.fanout.unwrap_or(0)),
                    outside.len(),
                    super::unix::holder(o)
                ),
            ));
        }
    }
    Ok(())
}

/// One restored member of a fanout group, not joined yet.
struct Member {
    group: Group,
    sock: OwnedFd,
    what: String,
}

/// The restored packet sockets that were in fanout groups, joined once
/// every fd table is in place ([`FanoutRestore::join`]).
#[derive(Default)]
pub struct FanoutRestore {
    members: Vec<Member>,
}

fn join_group(s: &OwnedFd, g: &Group) -> std::io::Result<()> {
    let type_flags = (g.word >> 16) as u16;
    let id = (g.word & 0xffff) as u16;
    if g.max == FANOUT_LEGACY_MAX {
        return sock::set_int(s, SOL_PACKET, PACKET_FANOUT, g.word as i32);
    }
    // struct fanout_args (5.12 on): id, type_flags, max_num_members.
    let mut b = Vec::with_capacity(8);
    b.extend_from_slice(&id.to_ne_bytes());
    b.extend_from_slice(&type_flags.to_ne_bytes());
    b.extend_from_slice(&g.max.to_ne_bytes());
    crate::sys::net::setsockopt(s, SOL_PACKET, PACKET_FANOUT, &b)
}

impl FanoutRestore {
    /// Joins every group again, each member in its saved place (the
    /// kernel appends a joining socket to the member array), after
    /// checking that the group is whole in the images and that no socket
    /// of this network namespace is in a group of that id already (it
    /// would take the restored members in); then reads every member back:
    /// group, place, member count and limit, and that no packet reached a
    /// member before it joined.
    pub fn join(&mut self) -> Result<()> {
        let mut members = std::mem::take(&mut self.members);
        if members.is_empty() {
            return Ok(());
        }
        members.sort_by_key(|m| (m.group.word & 0xffff, m.group.index));
        let ours: Vec<u64> = (members.iter())
            .map(|m| own_ino(&m.sock))
            .collect::<std::io::Result<_>>()
            .map_err(|e| Error::Restore(format!("packet socket: its inode: {e}")))?;
        let all = diag::dump_all()
            .map_err(|e| Error::Restore(format!("packet_diag (fanout groups): {e}")))?;
        let me = std::process::id() as i32;
        for grp in members.chunk_by(|a, b| a.group.word & 0xffff == b.group.word & 0xffff) {
            let g0 = grp[0].group;
            let name = group_name(g0.word);
            let places: Vec<u32> = grp.iter().map(|m| m.group.index).collect();
            if places != (0..g0.members).collect::<Vec<_>>()
                || grp.iter().any(|m| {
                    m.group
                        != Group {
                            index: m.group.index,
                            ..g0
                        }
                })
            {
                return Err(Error::Restore(format!(
                    "{name}: the images hold members at places {places:?} of {} (the group is \
                     not whole)",
                    g0.members
                )));
            }
            if let Some(o) = all.iter().find(|d| {
                d.fanout.is_some_and(|w| w & 0xffff == g0.word & 0xffff)
                    && !ours.contains(&(d.ino as u64))
            }) {
                return Err(Error::Restore(format!(
                    "{name}: socket:[{}] ({}) is in a group of that id in this network namespace \
                     already; the restored members would join it",
                    o.ino,
                    super::unix::holder(o.ino)
                )));
            }
            for m in grp {
                join_group(&m.sock, &m.group).map_err(|e| {
                    Error::Restore(format!(
                        "{}: join {name} at place {}: {e}",
                        m.what, m.group.index
                    ))
                })?;
            }
            for m in grp {
                let ino = own_ino(&m.sock)
                    .map_err(|e| Error::Restore(format!("{}: its inode: {e}", m.what)))?;
                let word = sock::get_int(&m.sock, SOL_PACKET, PACKET_FANOUT).unwrap_or(0) as u32;
                let k = pktring::read(me, ino)
                    .map_err(|e| Error::Restore(format!("{}: read {name} back: {e}", m.what)))?
                    .and_then(|k| k.fanout);
                let got = k.map(|k| (word, k.max_members, k.members, k.index));
                let want = (g0.word, g0.max, g0.members, m.group.index);
                if got != Some(want) {
                    return Err(Error::Restore(format!(
                        "{}: {name} came back as (group, limit, members, place) {got:?}, was \
                         {want:?}",
                        m.what
                    )));
                }
                let queued = diag::by_ino(ino as u32)
                    .ok()
                    .flatten()
                    .and_then(|d| d.rmem_alloc)
                    .unwrap_or(0);
                if queued != 0 {
                    return Err(Error::Restore(format!(
                        "{}: {queued} bytes of packets reached it before it joined {name} again",
                        m.what
                    )));
                }
            }
        }
        Ok(())
    }
}

// ------------------------------------------------------------ rings

const PACKET_RX_RING: i32 = 5;
const PACKET_TX_RING: i32 = 13;
/// TX frame status bits (linux/if_packet.h).
const TP_STATUS_SEND_REQUEST: u32 = 1;
const TP_STATUS_SENDING: u32 = 2;
/// IEEE 802 local experimental ethertype: what a restore feeds a ring on
/// lo to move the kernel's position (nothing else listens to it).
const ETH_P_EXP: u16 = 0x88b5;
/// Largest ring area (both rings) a dump saves.
const MAX_RING_BYTES: u64 = 64 << 20;
/// Longest replay of TPACKET_V3 block retirements (one retire timeout
/// each) a dump accepts, in milliseconds.
const V3_REPLAY_MS: u64 = 5000;
/// Size of the frames fed or sent to move the kernel's position.
const FILL_LEN: usize = 60;

/// Offsets in a frame header of TPACKET_V1, V2, V3: the status word, tp_len,
/// tp_mac, tp_net, and where a TX frame's data starts (tp_hdrlen minus
/// sizeof(struct sockaddr_ll)).
fn layout(version: u32) -> (usize, usize, usize, usize, usize) {
    match version {
        0 => (0, 8, 16, 18, 32),
        1 => (0, 4, 12, 14, 32),
        _ => (20, 16, 24, 26, 48),
    }
}

fn ring_len(r: &PacketRing) -> u64 {
    r.block_nr as u64 * r.block_size as u64
}

/// Both rings' bytes, as one mapping of the socket shows them.
fn area_len(p: &PacketSk) -> u64 {
    p.rx_ring.as_ref().map_or(0, ring_len) + p.tx_ring.as_ref().map_or(0, ring_len)
}

/// Offset of frame `i` of ring `r` in that ring (frames do not cross
/// blocks).
fn frame_off(r: &PacketRing, i: u32) -> usize {
    let per_block = (r.block_size / r.frame_size.max(1)).max(1);
    (i / per_block) as usize * r.block_size as usize
        + (i % per_block) as usize * r.frame_size as usize
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .map_or(0, |w| u32::from_ne_bytes(w.try_into().unwrap_or_default()))
}

fn ring_of(r: &diag::Ring) -> PacketRing {
    PacketRing {
        block_size: r.block_size,
        block_nr: r.block_nr,
        frame_size: r.frame_size,
        frame_nr: r.frame_nr,
        retire_tmo: r.retire_tmo,
        sizeof_priv: r.sizeof_priv,
        features: r.features,
        ..Default::default()
    }
}

/// TPACKET_V3: block retirements a restore replays to give the active
/// block the saved sequence number (the kernel opens block 0 with
/// sequence 1 and gives the next block 2).
fn v3_replays(r: &PacketRing) -> u64 {
    r.v3_next_seq.saturating_sub(2)
}

/// A socket's receive ring, transmit ring and their bytes.
type Rings = (Option<PacketRing>, Option<PacketRing>, Vec<u8>);

/// The rings of socket `s` (of `pid`, inode `ino`): their setup, the
/// kernel's position in each and their bytes, or why they cannot be
/// restored exactly. `settled`: read twice, with the kernel's position
/// around each copy, until nothing moved (the tree is frozen: only the
/// kernel writes into the ring); before the freeze one read checks what
/// can be checked.
fn read_rings(
    s: &OwnedFd,
    pid: i32,
    ino: u64,
    d: &PacketDiag,
    vnet_hdr: bool,
    settled: bool,
) -> std::io::Result<std::result::Result<Rings, String>> {
    let mut rx = d.rx_ring.as_ref().map(ring_of);
    let mut tx = d.tx_ring.as_ref().map(ring_of);
    let k = match pktring::read(pid, ino) {
        Ok(Some(k)) => k,
        Ok(None) => return Ok(Err("has a packet ring whose socket BPF did not find".into())),
        Err(e) => {
            return Ok(Err(format!(
                "has a packet ring, and the kernel's position in it, which no socket option \
                 shows, cannot be read with BPF ({e})"
            )))
        }
    };
    let total = rx.as_ref().map_or(0, ring_len) + tx.as_ref().map_or(0, ring_len);
    if total > MAX_RING_BYTES {
        return Ok(Err(format!(
            "has packet rings of {total} bytes (cairn saves at most {MAX_RING_BYTES})"
        )));
    }
    let m = pktring::RingMap::map(s, total as usize)?;
    let mut k = k;
    let mut data = m.copy();
    if settled {
        let mut same = false;
        for _ in 0..5 {
            std::thread::sleep(std::time::Duration::from_millis(2));
            let k2 = pktring::read(pid, ino)?.unwrap_or_default();
            let again = m.copy();
            same = k2 == k && again == data;
            (k, data) = (k2, again);
            if same {
                break;
            }
        }
        if !same {
            return Ok(Err(
                "has a packet ring that the kernel keeps filling while the tree is frozen (its \
                 frames and the kernel's position in it cannot be read together)"
                    .into(),
            ));
        }
    }
    if k.drops != 0 {
        return Ok(Err(format!(
            "has a packet ring that dropped {} packets since its last filled frame (the next \
             frame would say TP_STATUS_LOSING: a count no socket option sets)",
            k.drops
        )));
    }
    let version = TPACKET_VERSIONS
        .get(k.version as usize)
        .copied()
        .unwrap_or("?");
    if let Some(r) = rx.as_mut() {
        if k.version == 2 {
            let a = k.v3_active_block;
            let at = a as usize * r.block_size as usize;
            let (status, pkts, first) = (
                u32_at(&data, at + 8),
                u32_at(&data, at + 12),
                u32_at(&data, at + 16),
            );
            if k.v3_frozen || status != 0 {
                return Ok(Err(format!(
                    "has a {version} PACKET_RX_RING whose queue is frozen (every block is the \
                     program's; the kernel opens block {a} once it is released, which cairn \
                     cannot set back)"
                )));
            }
            if pkts != 0 || k.v3_offset != first as u64 {
                return Ok(Err(format!(
                    "has a {version} PACKET_RX_RING whose active block {a} holds {pkts} packets \
                     and is still open (the kernel closes it when it is full or its retire timer \
                     fires; a half-filled open block cannot be set back)"
                )));
            }
            r.v3_block = a;
            r.v3_next_seq = k.v3_next_seq;
            let n = v3_replays(r);
            if k.v3_next_seq < 2 || n % r.block_nr.max(1) as u64 != a as u64 {
                return Ok(Err(format!(
                    "has a {version} PACKET_RX_RING at block {a} with next sequence number {} \
                     (inconsistent)",
                    k.v3_next_seq
                )));
            }
            if n * (r.retire_tmo.max(1) as u64) > V3_REPLAY_MS {
                return Ok(Err(format!(
                    "has a {version} PACKET_RX_RING that opened {} blocks: a restore replays \
                     each block's retirement with its {} ms retire timer, longer than {} s",
                    n + 1,
                    r.retire_tmo,
                    V3_REPLAY_MS / 1000
                )));
            }
        } else {
            r.head = k.rx_head;
        }
    }
    if let Some(r) = tx.as_mut() {
        let base = rx.as_ref().map_or(0, ring_len) as usize;
        let (st, ..) = layout(k.version);
        for i in 0..r.frame_nr {
            let status = u32_at(&data, base + frame_off(r, i) + st);
            if status & TP_STATUS_SENDING != 0 {
                return Ok(Err(format!(
                    "has a {version} PACKET_TX_RING whose frame {i} is being sent \
                     (TP_STATUS_SENDING: a packet in flight cannot be sent again as it was)"
                )));
            }
        }
        r.head = k.tx_head;
        if r.head != 0 && vnet_hdr {
            return Ok(Err(format!(
                "has a {version} PACKET_TX_RING at frame {} with PACKET_VNET_HDR (cairn moves the \
                 kernel's position by sending frames, without virtio headers)",
                r.head
            )));
        }
    }
    Ok(Ok((rx, tx, data)))
}

fn set_ring(s: &OwnedFd, opt: i32, version: u32, r: &PacketRing) -> std::io::Result<()> {
    let mut v = vec![r.block_size, r.block_nr, r.frame_size, r.frame_nr];
    if version == 2 {
        v.extend([r.retire_tmo, r.sizeof_priv, r.features]);
    }
    let b: Vec<u8> = v.iter().flat_map(|x| x.to_ne_bytes()).collect();
    crate::sys::net::setsockopt(s, SOL_PACKET, opt, &b)
}

/// Waits (at most `ms`) until `done`.
fn wait_for(ms: u64, mut done: impl FnMut() -> std::io::Result<bool>) -> std::io::Result<bool> {
    let end = std::time::Instant::now() + std::time::Duration::from_millis(ms);
    loop {
        if done()? {
            return Ok(true);
        }
        if std::time::Instant::now() > end {
            return Ok(false);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Sets up the rings of `p` on the fresh socket `s` (its SOL_PACKET
/// options set, not bound yet), moves the kernel's position in each to
/// the saved one and writes the saved bytes over the rings. TX: the
/// frames before the saved head are sent on lo (ethertype 0x88b5, to
/// nobody); RX: as many frames are fed to it on lo, bound to that
/// ethertype for the while (TPACKET_V3: one frame per block, which the
/// retire timer closes, until the active block has the saved sequence
/// number). Then the kernel's position is read back with BPF.
fn restore_rings(s: &OwnedFd, p: &PacketSk) -> std::result::Result<(), String> {
    let v = p.version;
    fn io(what: &'static str) -> impl Fn(std::io::Error) -> String {
        move |e| format!("{what}: {e}")
    }
    if let Some(r) = p.rx_ring.as_ref() {
        set_ring(s, PACKET_RX_RING, v, r).map_err(io("PACKET_RX_RING"))?;
    }
    if let Some(r) = p.tx_ring.as_ref() {
        set_ring(s, PACKET_TX_RING, v, r).map_err(io("PACKET_TX_RING"))?;
    }
    let total = area_len(p);
    if p.ring_data.len() as u64 != total {
        return Err(format!(
            "{} ring bytes saved for rings of {total}",
            p.ring_data.len()
        ));
    }
    let m = pktring::RingMap::map(s, total as usize).map_err(io("mmap the rings"))?;
    let rx_len = p.rx_ring.as_ref().map_or(0, ring_len) as usize;
    let needs_lo = p.tx_ring.as_ref().is_some_and(|r| r.head != 0)
        || p.rx_ring
            .as_ref()
            .is_some_and(|r| r.head != 0 || v3_replays(r) != 0);
    let lo = if needs_lo {
        nl::if_index("lo")
            .map_err(|e| format!("lo (to move the kernel's position in the ring): {e}"))?
            as i32
    } else {
        0
    };
    let (st, len_at, mac_at, net_at, data_at) = layout(v);
    let mut fill = [0u8; FILL_LEN];
    fill[12..14].copy_from_slice(&ETH_P_EXP.to_be_bytes());
    if let Some(r) = p.tx_ring.as_ref().filter(|r| r.head != 0) {
        for i in 0..r.head {
            let f = rx_len + frame_off(r, i);
            let hdr = |at: usize, val: u32| m.write_u32(f + at, val);
            m.write(f + data_at, &fill).map_err(io("TX frame"))?;
            hdr(len_at, FILL_LEN as u32).map_err(io("TX frame"))?;
            // tp_mac and tp_net (u16 each), for PACKET_TX_HAS_OFF.
            let off = data_at as u16;
            m.write(f + mac_at, &off.to_ne_bytes())
                .map_err(io("TX frame"))?;
            m.write(f + net_at, &off.to_ne_bytes())
                .map_err(io("TX frame"))?;
            hdr(st, TP_STATUS_SEND_REQUEST).map_err(io("TX frame"))?;
        }
        pktring::send_ll(s, &[], lo, ETH_P_EXP.to_be())
            .map_err(|e| format!("send {} frames of the TX ring on lo: {e}", r.head))?;
    }
    if let Some(r) = p.rx_ring.as_ref() {
        let replays = if v == 2 { v3_replays(r) } else { r.head as u64 };
        if replays != 0 {
            if p.protocol == 0 {
                return Err(
                    "a receive ring at a position past its start on a socket of protocol 0".into(),
                );
            }
            let at = LlAddr {
                ifindex: lo,
                protocol_be: ETH_P_EXP.to_be(),
            };
            nl::ll_bind(s, at).map_err(io("bind to lo, ethertype 0x88b5"))?;
            let sender = crate::sys::net::socket_proto(libc::AF_PACKET, libc::SOCK_RAW, 0)
                .map_err(io("a packet socket to feed the ring"))?;
            let send = || {
                pktring::send_ll(&sender, &fill, lo, ETH_P_EXP.to_be())
                    .map_err(|e| format!("feed the RX ring on lo: {e}"))
            };
            if v == 2 {
                // One frame per block; the retire timer closes the block
                // and opens the next, which is released at once.
                let wait = 3 * r.retire_tmo.max(1) as u64 + 1000;
                for n in 0..replays {
                    let b = (n % r.block_nr as u64) as usize * r.block_size as usize;
                    send()?;
                    let ok = wait_for(wait, || Ok(m.read_u32(b + 8)? & 1 != 0))
                        .map_err(io("RX ring"))?;
                    if !ok {
                        return Err(format!(
                            "TPACKET_V3 block {} was not retired within {wait} ms",
                            n % r.block_nr as u64
                        ));
                    }
                    m.write_u32(b + 8, 0).map_err(io("RX ring"))?;
                }
            } else {
                for _ in 0..replays {
                    send()?;
                }
                let last = frame_off(r, r.head - 1) + st;
                let ok =
                    wait_for(2000, || Ok(m.read_u32(last)? & 1 != 0)).map_err(io("RX ring"))?;
                if !ok {
                    return Err(format!(
                        "the RX ring did not receive {} frames on lo",
                        r.head
                    ));
                }
            }
        }
    }
    m.write(0, &p.ring_data).map_err(io("write the rings"))?;
    drop(m);
    let ino = own_ino(s).map_err(io("inode"))?;
    let k = pktring::read(std::process::id() as i32, ino)
        .map_err(io("read the kernel's position back (BPF)"))?
        .ok_or("BPF did not find the restored socket")?;
    let mut off = Vec::new();
    if let Some(r) = p.rx_ring.as_ref() {
        if v == 2 && (k.v3_active_block, k.v3_next_seq) != (r.v3_block, r.v3_next_seq) {
            off.push(format!(
                "RX block {} next sequence {} (was block {} sequence {})",
                k.v3_active_block, k.v3_next_seq, r.v3_block, r.v3_next_seq
            ));
        }
        if v != 2 && k.rx_head != r.head {
            off.push(format!("RX frame {} (was {})", k.rx_head, r.head));
        }
    }
    if let Some(r) = p.tx_ring.as_ref() {
        if k.tx_head != r.head {
            off.push(format!("TX frame {} (was {})", k.tx_head, r.head));
        }
    }
    if k.drops != 0 {
        off.push(format!("{} drops", k.drops));
    }
    if !off.is_empty() {
        return Err(format!(
            "the kernel's position in the rings is {}",
            off.join(", ")
        ));
    }
    Ok(())
}

/// The inode of cairn's descriptor `s`.
fn own_ino(s: &OwnedFd) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(format!("/proc/self/fd/{}", s.as_raw_fd()))?.ino())
}

/// Whether maps entry `m` maps a socket (`socket:[ino]`): its inode.
pub fn mapped_socket(m: &crate::procfs::MapsEntry) -> Option<u64> {
    m.path
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// VmFlags of a ring mapping as packet_mmap makes it (VM_MIXEDMAP: "mm"),
/// and the kernel's bookkeeping.
const RING_VM_FLAGS: [&str; 14] = [
    "rd", "wr", "ex", "sh", "mr", "mw", "me", "ms", "mm", "ac", "sd", "uw", "um", "ui",
];

/// Checks the mapping `m` of socket `ino` by `pid` at dump: a packet
/// socket's rings, mapped whole from offset 0, with packet_mmap's
/// VmFlags only, by a process that holds an fd of the socket (the
/// restore maps it again from that fd once the fds are in place).
pub fn check_ring_vma(pid: i32, m: &crate::procfs::MapsEntry, ino: u64) -> Result<()> {
    let what = format!("mapping {:#x}-{:#x} of socket:[{ino}]", m.start, m.end);
    let no = |why: String| Err(Error::unsupported(pid, format!("{what}: {why}")));
    let d = match diag::by_ino(ino as u32) {
        Ok(Some(d)) => d,
        Ok(None) => return no("not a packet socket of cairn's network namespace".into()),
        Err(e) => return Err(Error::sys(pid, format!("{what}: packet_diag"), e)),
    };
    let len = |r: &Option<diag::Ring>| r.map_or(0, |r| r.block_nr as u64 * r.block_size as u64);
    let total = len(&d.rx_ring) + len(&d.tx_ring);
    if !m.shared || m.offset != 0 || m.end - m.start != total {
        return no(format!(
            "not the whole ring area ({total} bytes from offset 0, shared): a partial or moved \
             ring mapping is not restored"
        ));
    }
    if let Some(f) = m
        .vm_flags
        .iter()
        .find(|f| !RING_VM_FLAGS.contains(&f.as_str()))
    {
        return no(format!(
            "VmFlags \"{f}\" (set after mmap): not restored on a ring"
        ));
    }
    let link = format!("socket:[{ino}]");
    let has_fd = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(|e| Error::sys(pid, "list /proc/PID/fd".to_string(), e))?
        .flatten()
        .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == link.as_str()));
    if !has_fd {
        return no(
            "the process holds no fd of the socket (cairn maps the ring again from one)".into(),
        );
    }
    Ok(())
}

/// Maps again, once the fds of `pid` are in place, every packet ring
/// mapping (kind VMA_PACKET_RING) of `mm` at its address with its
/// protections, from an fd of its table `t` that is the restored socket.
pub fn map_rings(
    agent: &mut dyn Calls,
    mm: &crate::image::proto::MmEntry,
    t: &crate::image::proto::FdTable,
    idx: &crate::kinds::files::FilesIndex,
) -> Result<()> {
    use crate::image::proto::VmaKind;
    let pid = agent.pid();
    let fds: Vec<(u32, u64)> = (t.fds.iter())
        .filter_map(|f| match idx.get(f.desc_id)?.kind.as_ref()? {
            file_desc::Kind::Packet(p) => Some((f.fd, p.ino)),
            _ => None,
        })
        .collect();
    for v in &mm.vmas {
        if v.kind.enum_value() != Ok(VmaKind::VMA_PACKET_RING) {
            continue;
        }
        let Some(&(fd, _)) = fds.iter().find(|(_, i)| *i == v.packet_sk) else {
            return Err(Error::Restore(format!(
                "pid {pid}: packet ring mapping {:#x}-{:#x}: no fd of socket {} in its table",
                v.start, v.end, v.packet_sk
            )));
        };
        let flags = libc::MAP_SHARED | crate::kinds::memory::FIXED_NOREPLACE as i32;
        let got = agent
            .try_mmap(v.start, v.end - v.start, v.prot as i32, flags, fd as u64, 0)
            .map_err(|e| {
                Error::Restore(format!(
                    "pid {pid}: mmap packet ring {:#x}-{:#x} of fd {fd}: {e}",
                    v.start, v.end
                ))
            })?;
        if got != v.start {
            return Err(Error::Restore(format!(
                "pid {pid}: packet ring {:#x} mapped at {got:#x}",
                v.start
            )));
        }
    }
    Ok(())
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
        let d = match examine(ino).map_err(|e| diag_error(f, e))? {
            Ok(d) => d,
            Err(why) => return Err(refuse(f, &why)),
        };
        fanout_of(f.pid, ino, &d).map_err(|why| refuse(f, &why))?;
        if let Some(why) = super::sockopts::unrestorable(&s) {
            return Err(refuse(f, &why));
        }
        if let Ok(d) = diag::by_ino(ino as u32) {
            if let Some(d) = d.filter(|d| d.rx_ring.is_some() || d.tx_ring.is_some()) {
                let vnet = sock::get_int(&s, SOL_PACKET, 15).unwrap_or(0) != 0;
                if let Err(why) = read_rings(&s, f.pid, ino, &d, vnet, false)
                    .map_err(|e| Error::sys(f.pid, format!("fd {}: read its rings", f.fd), e))?
                {
                    return Err(refuse(f, &why));
                }
            }
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
        let d = examine(ino)
            .map_err(|e| diag_error(f, e))?
            .map_err(|why| refuse(f, &why))?;
        if let Some(why) = super::sockopts::unrestorable(&s) {
            return Err(refuse(f, &why));
        }
        let group = fanout_of(f.pid, ino, &d).map_err(|why| refuse(f, &why))?;
        let mut p = read(&s, ino, &d)
            .map_err(|e| Error::sys(f.pid, format!("fd {}: read the packet socket", f.fd), e))?;
        if let Some(g) = group {
            p.fanout = g.word;
            p.fanout_max_members = g.max;
            p.fanout_members = g.members;
            p.fanout_index = g.index;
        }
        if d.rx_ring.is_some() || d.tx_ring.is_some() {
            let (rx, tx, data) = read_rings(&s, f.pid, ino, &d, p.vnet_hdr, true)
                .map_err(|e| Error::sys(f.pid, format!("fd {}: read its rings", f.fd), e))?
                .map_err(|why| refuse(f, &why))?;
            p.rx_ring = rx.into();
            p.tx_ring = tx.into();
            p.ring_data = data;
        }
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
        for (name, r) in [
            ("rx_ring", p.rx_ring.as_ref()),
            ("tx_ring", p.tx_ring.as_ref()),
        ] {
            let Some(r) = r else { continue };
            let page = crate::sys::PAGE_SIZE as u32;
            let per_block = r.block_size.checked_div(r.frame_size).unwrap_or(0) as u64;
            if r.block_size == 0
                || r.block_size % page != 0
                || r.block_nr == 0
                || r.frame_size < 16
                || per_block == 0
                || r.frame_nr as u64 != per_block * r.block_nr as u64
                || r.head >= r.frame_nr
                || r.v3_block >= r.block_nr
                || r.v3_next_seq > 1 << 32
            {
                return Err(invalid(path, obj, name, "bad geometry or position"));
            }
        }
        let total = area_len(p);
        if total > MAX_RING_BYTES || p.ring_data.len() as u64 != total {
            return Err(invalid(path, obj, "ring_data", p.ring_data.len()));
        }
        if p.fanout != 0
            && ((p.fanout >> 16) & 0xff >= FANOUT_TYPES.len() as u32
                || p.protocol == 0
                || p.fanout_members == 0
                || p.fanout_index >= p.fanout_members
                || p.fanout_members > p.fanout_max_members
                || p.fanout_max_members > FANOUT_MAX)
        {
            return Err(invalid(
                path,
                obj,
                "fanout",
                "bad type, place, count or limit",
            ));
        }
        Ok(())
    }

    fn open(&self, k: &file_desc::Kind, calls: &mut dyn Calls, cx: &mut RestoreCx) -> Result<u64> {
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
        if p.fanout != 0 {
            cx.shared.fanout.members.push(Member {
                group: Group {
                    word: p.fanout,
                    max: p.fanout_max_members,
                    members: p.fanout_members,
                    index: p.fanout_index,
                },
                sock: s,
                what,
            });
        }
        Ok(fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::net::socket_proto;

    /// In a network namespace of its own: a TPACKET_V1 socket with an RX
    /// ring that received 3 frames (2 fed, 1 its TX ring sent) and a TX
    /// ring that sent 1, and a
    /// TPACKET_V3 socket whose TX ring sent 3, are read (setup, position,
    /// bytes) and configured onto fresh sockets: the rings read back the
    /// same, position and bytes (`restore_rings` moved the kernel's
    /// position with frames on lo and checked it with BPF).
    #[test]
    fn rings_come_back_with_position_and_bytes() {
        if !rustix::process::geteuid().is_root() {
            return;
        }
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let st = std::process::Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status()
                .unwrap();
            assert!(st.success());
            let lo = nl::if_index("lo").unwrap() as i32;
            let pid = std::process::id() as i32;
            let proto = 0x88b6u16;
            let set = |fd: &OwnedFd, opt: i32, v: &[u32]| {
                let b: Vec<u8> = v.iter().flat_map(|x| x.to_ne_bytes()).collect();
                crate::sys::net::setsockopt(fd, SOL_PACKET, opt, &b).unwrap();
            };
            // (version, rx frames received, tx frames sent)
            for (version, rx, tx) in [(0u32, 2u32, 1u32), (2, 0, 3)] {
                let a = socket_proto(libc::AF_PACKET, libc::SOCK_RAW, 0).unwrap();
                set(&a, 10, &[version]);
                let req: &[u32] = if version == 2 {
                    &[4096, 2, 2048, 4, 0, 0, 0]
                } else {
                    &[4096, 2, 2048, 4]
                };
                if rx != 0 {
                    set(&a, PACKET_RX_RING, req);
                }
                set(&a, PACKET_TX_RING, req);
                let at = LlAddr {
                    ifindex: lo,
                    protocol_be: proto.to_be(),
                };
                nl::ll_bind(&a, at).unwrap();
                let rx_len = if rx != 0 { 8192 } else { 0 };
                let m = pktring::RingMap::map(&a, rx_len + 8192).unwrap();
                let sender = socket_proto(libc::AF_PACKET, libc::SOCK_RAW, 0).unwrap();
                let mut fill = [0u8; 60];
                fill[12..14].copy_from_slice(&proto.to_be_bytes());
                for _ in 0..rx {
                    pktring::send_ll(&sender, &fill, lo, proto.to_be()).unwrap();
                }
                let (st, len_at, _, _, data_at) = layout(version);
                let r = PacketRing {
                    block_size: 4096,
                    frame_size: 2048,
                    ..Default::default()
                };
                for i in 0..tx {
                    let f = rx_len + frame_off(&r, i);
                    m.write(f + data_at, &fill).unwrap();
                    m.write_u32(f + len_at, 60).unwrap();
                    m.write_u32(f + st, TP_STATUS_SEND_REQUEST).unwrap();
                }
                pktring::send_ll(&a, &[], lo, proto.to_be()).unwrap();
                // The frames a sends come back to it on lo: its RX ring
                // (V1) gets them after the frames fed to it.
                let received = if rx != 0 { rx + tx } else { 0 };
                if rx != 0 {
                    let last = frame_off(&r, received - 1) + st;
                    assert!(wait_for(2000, || Ok(m.read_u32(last)? & 1 != 0)).unwrap());
                }
                // Without an RX ring (V3 here) they are queued: drained.
                let mut b = [0u8; 256];
                while crate::sys::net::recv(&a, &mut b, libc::MSG_DONTWAIT).is_ok() {}
                drop(m);
                let d = diag::by_ino(own_ino(&a).unwrap() as u32).unwrap().unwrap();
                let mut p = read(&a, own_ino(&a).unwrap(), &d).unwrap();
                let (prx, ptx, data) = read_rings(&a, pid, own_ino(&a).unwrap(), &d, false, true)
                    .unwrap()
                    .unwrap();
                assert_eq!(prx.as_ref().map(|r| r.head), (rx != 0).then_some(received));
                assert_eq!(ptx.as_ref().map(|r| r.head), Some(tx));
                (p.rx_ring, p.tx_ring, p.ring_data) = (prx.into(), ptx.into(), data);
                let fresh = socket_proto(libc::AF_PACKET, libc::SOCK_RAW, 0).unwrap();
                configure(&fresh, &p).unwrap();
                let ino = own_ino(&fresh).unwrap();
                let d2 = diag::by_ino(ino as u32).unwrap().unwrap();
                let got = read_rings(&fresh, pid, ino, &d2, false, true)
                    .unwrap()
                    .unwrap();
                assert_eq!(
                    (got.0, got.1),
                    (
                        p.rx_ring.clone().into_option(),
                        p.tx_ring.clone().into_option()
                    ),
                    "version {version}"
                );
                assert!(got.2 == p.ring_data, "version {version}: ring bytes differ");
            }
        })
        .join()
        .unwrap();
    }

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
