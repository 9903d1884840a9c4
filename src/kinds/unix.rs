//! Unix sockets: stream, datagram and seqpacket; socketpairs; names (paths
//! and abstract); listeners with connections waiting in their backlog;
//! queued data; shutdown state; socket options.
//!
//! Dump: peers, names and pending connections come from NETLINK_SOCK_DIAG
//! (`sys::sockdiag::unix`). Queues are read through a copy of the socket
//! taken with pidfd_getfd, with MSG_PEEK and SO_PEEK_OFF (set back
//! afterwards), so nothing is consumed and a dump with --leave-running, or
//! one that fails, leaves every queue as it was. The one exception is the
//! data sent into connections still waiting in a listener's backlog: it can
//! only be read by accepting them, so that happens as the last step of a
//! dump that kills the tree, and a --leave-running dump refuses.
//!
//! Restore: every unix socket of the tree is rebuilt in cairn itself, in an
//! order that recreates the same graph (socketpairs; names bound; stream
//! connections through a listener with the accepted side's name; dgram
//! queues refilled from a socket with the sender's name; backlogs refilled
//! by connecting the clients again in queue order), and the vessels fetch
//! them with pidfd_getfd like any other shared description.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::image::proto::{
    file_desc, FdTable, Files, UnixCred, UnixExternal, UnixIcon, UnixPacket, UnixPeerCred,
    UnixSocket,
};
use crate::image::validate::{
    bad as invalid, check_bytes, check_path, count, MAX_ITEMS, QUEUE_MAX, TCP_CLOSE,
    TCP_ESTABLISHED, TCP_LISTEN,
};
use crate::kinds::fd::{not_mine, DumpCx, FdKind, FdRef, RestoreCx, SharedFiles};
use crate::kinds::sockopts;
use crate::remote::Calls;
use crate::sys::sockdiag::unix::{self as diag, UnixDiag};
use crate::sys::{scm, sock};
use crate::{info, warn};

mod peercred;
pub use peercred::Creator;

/// Most bytes read from one socket's queue.
const MAX_QUEUE: usize = 1 << 30;

/// Whether a `system.sockprotoname` is a unix socket's.
pub fn handles_proto(proto: &str) -> bool {
    proto == "UNIX" || proto == "UNIX-STREAM"
}

fn type_name(ty: u32) -> &'static str {
    match ty as i32 {
        libc::SOCK_STREAM => "stream",
        libc::SOCK_DGRAM => "dgram",
        libc::SOCK_SEQPACKET => "seqpacket",
        _ => "unknown-type",
    }
}

/// A name for messages: `"/run/x.sock"`, `@abstract`, or `unnamed`.
pub fn show_name(name: &[u8]) -> String {
    match name.first() {
        None => "unnamed".into(),
        Some(0) => format!("@{}", String::from_utf8_lossy(&name[1..])),
        Some(_) => String::from_utf8_lossy(path_bytes(name)).into_owned(),
    }
}

/// A path name without its terminating NULs.
fn path_bytes(name: &[u8]) -> &[u8] {
    let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
    &name[..end]
}

fn is_path(name: &[u8]) -> bool {
    name.first().is_some_and(|&c| c != 0)
}

/// Where the file of a path name is, seen from cairn.
fn full_path(name: &[u8], dir: &str) -> PathBuf {
    let p = Path::new(OsStr::from_bytes(path_bytes(name)));
    if p.is_absolute() || dir.is_empty() {
        p.to_path_buf()
    } else {
        Path::new(dir).join(p)
    }
}

fn kdev(st_dev: u64) -> u32 {
    ((libc::major(st_dev) << 20) | libc::minor(st_dev)) as u32
}

// ------------------------------------------------------------------- dump

/// The unix sockets of a tree being dumped.
#[derive(Default)]
pub struct UnixDump {
    /// The kernel's view of every unix socket, read once.
    diag: Option<HashMap<u32, UnixDiag>>,
    /// inode -> (pid, fd) of the first fd seen on it, for messages.
    held: HashMap<u32, (i32, i32)>,
    /// Copies of listening sockets, to read their backlog at the end.
    listeners: HashMap<u32, OwnedFd>,
    /// Listeners whose backlog must be accepted to be read.
    backlog_reads: Vec<u32>,
    /// Descriptors in flight found in queues: (socket inode, packet
    /// index in its queue, cairn's copies of the files), identified once
    /// every fd table is read ([`UnixDump::finish`]).
    flight: Vec<(u32, usize, Vec<OwnedFd>)>,
}

fn diag_all() -> Result<HashMap<u32, UnixDiag>> {
    let all = diag::dump_all()
        .map_err(|e| Error::sys(crate::sys::task::getpid(), "unix_diag dump", e))?;
    Ok(all.into_iter().map(|d| (d.ino, d)).collect())
}

/// Who holds socket `ino` (pid, fd, comm), for an error message. Scans
/// /proc; only used when a dump is refused.
pub(crate) fn holder(ino: u32) -> String {
    let want = format!("socket:[{ino}]");
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return "held by no process found".into();
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for f in fds.flatten() {
            if std::fs::read_link(f.path())
                .is_ok_and(|l| l.as_os_str().as_bytes() == want.as_bytes())
            {
                let comm = crate::procfs::read_comm(pid, pid).unwrap_or_default();
                return format!(
                    "held by pid {pid} ({}) fd {}",
                    comm.trim(),
                    f.file_name().to_string_lossy()
                );
            }
        }
    }
    "held by no process (in flight or closed)".into()
}

/// Checks the unix sockets of a tree (inode -> (pid, fd)) against the
/// kernel's view: every peer and every waiting connection must be in the
/// tree unless `ext_ok`; with `leave_running`, connections waiting in a
/// backlog must carry no data. Used before freezing and again while frozen.
fn check_graph(
    held: &HashMap<u32, (i32, i32)>,
    all: &HashMap<u32, UnixDiag>,
    ext_ok: bool,
    leave_running: bool,
    precheck: bool,
) -> Result<()> {
    // Before freezing, a peer no process holds may be a socket in flight
    // in one of the tree's queues: the check while frozen, which knows
    // them, decides.
    let in_flight = |p: u32| precheck && holder(p).starts_with("held by no process");
    let mut inos: Vec<&u32> = held.keys().collect();
    inos.sort();
    for &ino in inos {
        let (pid, fd) = held[&ino];
        let Some(d) = all.get(&ino) else {
            return Err(Error::unsupported(
                pid,
                format!("fd {fd}: unix socket socket:[{ino}] is not in cairn's network namespace (not supported)"),
            ));
        };
        let what = || {
            format!(
                "fd {fd}: unix {} socket {} (socket:[{ino}])",
                type_name(d.ty as u32),
                show_name(d.name.as_deref().unwrap_or_default())
            )
        };
        let peer = match d.peer {
            Some(0) => listener_of(all, ino).map(|l| l.ino),
            p => p,
        };
        if let Some(p) = peer.filter(|p| *p != 0 && !held.contains_key(p)) {
            if ext_ok && d.ty as i32 == libc::SOCK_DGRAM && d.peer == Some(p) && !in_flight(p) {
                if let Some(why) = all.get(&p).and_then(unreachable_dgram_peer) {
                    return Err(Error::unsupported(
                        pid,
                        format!(
                            "{} is connected to socket:[{p}] ({}) outside the dumped tree, which {why}: a restore reconnects a datagram socket to an outside peer by that peer's name only, so it would come back connected to no one (--ext-unix-sk); dump the tree that holds both ends, or hand it in with --external socket:[{ino}]",
                            what(),
                            holder(p)
                        ),
                    ));
                }
            }
            if !ext_ok && !in_flight(p) {
                let pname = all
                    .get(&p)
                    .and_then(|x| x.name.as_deref())
                    .map(show_name)
                    .unwrap_or_else(|| "unnamed".into());
                return Err(Error::unsupported(
                    pid,
                    format!(
                        "{} is connected to socket:[{p}] ({pname}, {}) outside the dumped tree; dump the tree that holds both ends, or use --ext-unix-sk, or --external socket:[{ino}] to hand it in at restore (--inherit-fd)",
                        what(),
                        holder(p)
                    ),
                ));
            }
        }
        if d.state == diag::TCP_LISTEN {
            let mut with_data = 0;
            for &c in &d.icons {
                if c == 0 {
                    // The connecting socket is closed (its process may
                    // have exited): the accepted socket's SO_PEERCRED names
                    // that process, and a restore can only connect from a
                    // living one (cairn).
                    return Err(Error::unsupported(
                        pid,
                        format!(
                            "{} has a connection waiting to be accepted whose connecting socket was closed (its process may have exited): accepted after a restore, it would show cairn's pid and credentials (SO_PEERCRED, and on its data SCM_CREDENTIALS) instead of the connecting process's",
                            what()
                        ),
                    ));
                }
                let inside = c != 0 && held.contains_key(&c);
                if c != 0 && !inside && !ext_ok && !in_flight(c) {
                    return Err(Error::unsupported(
                        pid,
                        format!(
                            "{} has a connection waiting to be accepted from socket:[{c}] ({}) outside the dumped tree; use --ext-unix-sk",
                            what(),
                            holder(c)
                        ),
                    ));
                }
                let sent = all.get(&c).and_then(|x| x.rqlen).map(|r| r.1).unwrap_or(0);
                if c == 0 || sent > 0 {
                    with_data += 1;
                }
            }
            if leave_running && !d.icons.is_empty() && crate::sys::bpf::disabled() {
                return Err(Error::unsupported(
                    pid,
                    format!(
                        "{} has {} connection(s) waiting to be accepted: a --leave-running dump reads who connected (SO_PEERCRED) with BPF, which --no-bpf turns off; without it a restore would show cairn's pid and credentials (dump without --leave-running, or without --no-bpf)",
                        what(),
                        d.icons.len()
                    ),
                ));
            }
            if leave_running && with_data > 0 {
                return Err(Error::unsupported(
                    pid,
                    format!(
                        "{} has {with_data} connection(s) waiting to be accepted that may carry data; that data can only be read by accepting them, which --leave-running must not do (dump without --leave-running)",
                        what()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Why a restore can never reconnect a datagram socket to `peer`, a
/// socket outside the tree, by its name (`restore` connects to the
/// saved name from cairn): it has none (unbound, or the other end of a
/// socketpair), a relative path (cairn would resolve it from its own
/// directory), or a path whose file is no longer that socket's (removed,
/// or another file took the name). None: the name leads to it now.
fn unreachable_dgram_peer(peer: &UnixDiag) -> Option<String> {
    let name = peer.name.as_deref().unwrap_or_default();
    if name.is_empty() {
        return Some("has no name (unbound, or the other end of a socketpair)".into());
    }
    if !is_path(name) {
        return None;
    }
    let show = show_name(name);
    if !path_bytes(name).starts_with(b"/") {
        return Some(format!(
            "is bound to the relative path {show} (relative to its own process's directory at bind time, which a restore cannot know)"
        ));
    }
    let path = full_path(name, "");
    match (std::fs::metadata(&path), peer.vfs) {
        (Ok(st), Some(v)) if st.file_type().is_socket() && is_file_of(v, &path, &st) => None,
        _ => Some(format!(
            "is bound to {show}, a name whose file was removed or is another file now"
        )),
    }
}

/// Datagrams queued from a socket outside the tree that still has its
/// name: a restore could not bind a sender with that name to write them
/// again with their sender address, so the dump is refused.
fn check_senders(
    held: &HashMap<u32, (i32, i32)>,
    all: &HashMap<u32, UnixDiag>,
    files: &Files,
) -> Result<()> {
    for d in &files.descs {
        let Some(file_desc::Kind::Unix(u)) = &d.kind else {
            continue;
        };
        if u.type_ as i32 != libc::SOCK_DGRAM {
            continue;
        }
        for p in u.queue.iter().filter(|p| !p.sender.is_empty()) {
            // A relative path names different files for different
            // processes: only abstract and absolute names identify a socket.
            if is_path(&p.sender) && !path_bytes(&p.sender).starts_with(b"/") {
                continue;
            }
            let named = |x: &&UnixDiag| x.name.as_deref() == Some(&p.sender[..]);
            if all
                .values()
                .filter(named)
                .any(|x| held.contains_key(&x.ino))
            {
                continue;
            }
            let outside = all.values().find(named);
            if let Some(x) = outside {
                let (pid, fd) = held.get(&u.ino).copied().unwrap_or((0, 0));
                return Err(Error::unsupported(
                    pid,
                    format!(
                        "fd {fd}: unix dgram socket {} has datagrams queued from {} (socket:[{}], {}), a socket outside the dumped tree that still has that name: they could not be given their sender address back",
                        show_name(&u.name),
                        show_name(&p.sender),
                        x.ino,
                        holder(x.ino)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The listener whose backlog holds a connection from `client`.
fn listener_of(all: &HashMap<u32, UnixDiag>, client: u32) -> Option<&UnixDiag> {
    all.values()
        .find(|l| l.state == diag::TCP_LISTEN && l.icons.contains(&client))
}

/// The sockets the processes `pids` hold whose inode and protocol name
/// (`/proc/PID/fd/N`'s `system.sockprotoname`) `want` takes: by inode, the
/// first (pid, fd) found holding each. Read from /proc before the freeze.
pub(crate) fn sockets_held(
    pids: &[i32],
    want: impl Fn(u64, &str) -> bool,
) -> HashMap<u32, (i32, i32)> {
    let mut held = HashMap::new();
    for &pid in pids {
        let Ok(fds) = crate::procfs::read_fds(pid) else {
            continue;
        };
        for (fd, target) in fds {
            if let Some(("socket", ino)) = crate::procfs::parse_anon_link(&target) {
                let link = format!("/proc/{pid}/fd/{fd}");
                if sock::proto_name(&link).is_ok_and(|p| want(ino, &p)) {
                    held.entry(ino as u32).or_insert((pid, fd));
                }
            }
        }
    }
    held
}

/// Before freezing: the unix sockets of the tree `pids` must form a graph
/// cairn can restore. Errors name the pid, fd and peer.
/// The sockets named with --external (`external`, inodes) are left out.
pub fn precheck_tree(
    pids: &[i32],
    ext_ok: bool,
    leave_running: bool,
    external: &HashSet<u64>,
) -> Result<()> {
    let held = sockets_held(pids, |ino, proto| {
        !external.contains(&ino) && handles_proto(proto)
    });
    if held.is_empty() {
        return Ok(());
    }
    let all = diag_all()?;
    check_graph(&held, &all, ext_ok, leave_running, true)?;
    peercred::precheck(pids, &held, &all, ext_ok)
}

impl UnixDump {
    fn diag(&mut self) -> Result<&HashMap<u32, UnixDiag>> {
        if self.diag.is_none() {
            self.diag = Some(diag_all()?);
        }
        Ok(self.diag.as_ref().expect("just set"))
    }

    /// Describes fd `fd` of `pid` (frozen), a socket with inode `ino`, if
    /// it is a unix socket (None otherwise). `flags` are its file status
    /// flags.
    pub fn describe(
        &mut self,
        pid: i32,
        fd: i32,
        ino: u64,
        flags: u32,
    ) -> Result<Option<file_desc::Kind>> {
        let link = format!("/proc/{pid}/fd/{fd}");
        match sock::proto_name(&link) {
            Ok(p) if handles_proto(&p) => {}
            _ => return Ok(None),
        }
        self.describe_sock(pid, fd, ino as u32, flags, None)
            .map(Some)
    }

    /// Describes unix socket `ino`, fd `fd` of `pid`; `in_flight` names
    /// the queue (pid, fd, socket) of a socket that is only in flight
    /// (`fd` is then cairn's copy).
    fn describe_sock(
        &mut self,
        pid: i32,
        fd: i32,
        ino: u32,
        flags: u32,
        in_flight: Option<(i32, i32, &str)>,
    ) -> Result<file_desc::Kind> {
        let d = match self.diag()?.get(&ino) {
            Some(d) => d.clone(),
            None => {
                return Err(Error::unsupported(
                    pid,
                    format!("fd {fd}: unix socket socket:[{ino}] is not in cairn's network namespace (not supported)"),
                ))
            }
        };
        let ty = d.ty as i32;
        if ![libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET].contains(&ty) {
            return Err(Error::unsupported(
                pid,
                format!("fd {fd}: unix socket of type {ty}"),
            ));
        }
        if ![diag::TCP_ESTABLISHED, diag::TCP_CLOSE, diag::TCP_LISTEN].contains(&d.state) {
            return Err(Error::unsupported(
                pid,
                format!("fd {fd}: unix socket in state {}", d.state),
            ));
        }
        let sk = sock::pidfd_getfd(pid, fd)
            .map_err(|e| Error::sys(pid, format!("pidfd_getfd of fd {fd}"), e))?;
        let sys = |what: &str, e: std::io::Error| {
            Error::sys(pid, format!("fd {fd} (unix socket): {what}"), e)
        };
        let mut u = UnixSocket::new();
        u.ino = ino;
        u.type_ = d.ty as u32;
        u.state = d.state as u32;
        u.name = d.name.clone().unwrap_or_default();
        u.flags = flags;
        u.shutdown = d.shutdown as u32;
        u.uid = d.uid.unwrap_or(0);
        if let Some(why) = sockopts::unrestorable(&sk) {
            return Err(Error::unsupported(
                pid,
                format!("fd {fd} (unix socket socket:[{ino}]) {why}"),
            ));
        }
        u.opts = Some(sockopts::dump(&sk).map_err(|e| sys("getsockopt", e))?).into();
        u.peercred = peercred::read(&sk)
            .map_err(|e| sys("SO_PEERCRED", e))?
            .into();
        if d.state == diag::TCP_LISTEN {
            u.backlog = d.rqlen.map(|r| r.1).unwrap_or(0);
        } else {
            if d.peer.is_some() {
                u.peer_name = sock::peer_name(&sk).unwrap_or_default();
            }
            // BPF off or unusable (fd_skbs): a refusal, not a failure.
            let (queue, files, lost) = peek_queue(&sk, ty).map_err(|e| match e.kind() {
                std::io::ErrorKind::Unsupported => {
                    Error::unsupported(pid, format!("fd {fd} (unix socket socket:[{ino}]): {e}"))
                }
                _ => sys("peek at the queue", e),
            })?;
            if lost {
                return Err(Error::unsupported(
                    pid,
                    format!(
                        "fd {fd}: unix socket {} has more descriptors in flight (SCM_RIGHTS) in one message than cairn can receive",
                        show_name(&u.name)
                    ),
                ));
            }
            // cairn writes the queue again, each message with its
            // sender's credentials (SCM_CREDENTIALS): the sender must be
            // a process that exists at restore time.
            if let Some(why) = cred_refusal(&queue) {
                return Err(Error::unsupported(
                    pid,
                    format!(
                        "fd {fd}: unix socket {} (socket:[{ino}]) has {} message(s) queued: {why}",
                        show_name(&u.name),
                        queue.len()
                    ),
                ));
            }
            // A security label (SO_PASSSEC: SCM_SECURITY) cannot be given
            // on a sender's behalf; without a labelling LSM none is shown.
            if u.opts.as_ref().is_some_and(|o| o.passsec) && !queue.is_empty() && lsm_labels() {
                return Err(Error::unsupported(
                    pid,
                    format!(
                        "fd {fd}: unix socket {} has {} message(s) queued and SO_PASSSEC set: its receiver is shown each sender's security label, which cairn cannot write a message with",
                        show_name(&u.name),
                        queue.len()
                    ),
                ));
            }
            let carrying = files.iter().filter(|f| !f.is_empty()).count();
            if let (Some((qpid, qfd, qname)), true) = (in_flight, carrying > 0) {
                return Err(Error::unsupported(
                    qpid,
                    format!(
                        "fd {qfd}: unix socket {qname} has a unix socket in flight (SCM_RIGHTS, socket:[{ino}]) that itself has {carrying} message(s) with descriptors in flight in its queue; cairn does not checkpoint descriptors in flight inside descriptors in flight"
                    ),
                ));
            }
            // A connected datagram socket only takes datagrams from its
            // peer: the ones from others queued after descriptors in
            // flight could not be written again once it is connected.
            let first = files.iter().position(|f| !f.is_empty());
            let connected = ty == libc::SOCK_DGRAM && d.peer.is_some_and(|p| p != 0);
            if let (Some(i), true) = (first, connected) {
                if let Some(p) = queue[i..].iter().find(|p| p.sender != u.peer_name) {
                    return Err(Error::unsupported(
                        pid,
                        format!(
                            "fd {fd}: connected unix dgram socket {} has descriptors in flight (SCM_RIGHTS) in its queue followed by a datagram from {}, not its peer: cairn cannot queue that again behind them",
                            show_name(&u.name),
                            show_name(&p.sender)
                        ),
                    ));
                }
            }
            for (i, f) in files.into_iter().enumerate() {
                if !f.is_empty() {
                    self.flight.push((ino, i, f));
                }
            }
            u.queue = queue;
        }
        if is_path(&u.name) {
            resolve_name(pid, fd, &d, &mut u)?;
        }
        if d.state == diag::TCP_LISTEN {
            self.listeners.insert(ino, sk);
        }
        self.held.entry(ino).or_insert((pid, fd));
        Ok(file_desc::Kind::Unix(u))
    }

    /// Once every fd table is read: finds what each descriptor in flight
    /// is. The same open file description as an fd of the tree (kcmp
    /// against one fd of every description, `tree_fds`: (pid, fd, id)) is
    /// that description; a unix socket no process holds is described
    /// here as one more description; anything else is refused, naming
    /// the queue and the file.
    fn identify_in_flight(
        &mut self,
        files: &mut Files,
        tree_fds: &[(i32, i32, u32)],
    ) -> Result<()> {
        let flight = std::mem::take(&mut self.flight);
        if flight.is_empty() {
            return Ok(());
        }
        let me = crate::sys::task::getpid();
        let mut next_id = files.descs.iter().map(|d| d.id).max().unwrap_or(0) + 1;
        // Files only in flight, described here: (cairn's copy, id).
        let mut extra: Vec<(OwnedFd, u32)> = Vec::new();
        let mut ids_of: Vec<(u32, usize, Vec<u32>)> = Vec::new();
        for (ino, idx, fds) in &flight {
            let (pid, fd) = self.held[ino];
            let qname = files
                .descs
                .iter()
                .find_map(|d| match &d.kind {
                    Some(file_desc::Kind::Unix(u)) if u.ino == *ino => Some(show_name(&u.name)),
                    _ => None,
                })
                .unwrap_or_else(|| "unnamed".into());
            let mut ids = Vec::new();
            for f in fds {
                let raw = f.as_raw_fd();
                let same =
                    |p: i32, o: i32| crate::sys::task::kcmp_file(me, raw, p, o).ok() == Some(0);
                let found = tree_fds
                    .iter()
                    .find(|&&(p, o, _)| same(p, o))
                    .map(|t| t.2)
                    .or_else(|| {
                        extra
                            .iter()
                            .find(|(o, _)| same(me, o.as_raw_fd()))
                            .map(|x| x.1)
                    });
                if let Some(id) = found {
                    ids.push(id);
                    continue;
                }
                let link = format!("/proc/{me}/fd/{raw}");
                let target = std::fs::read_link(&link)
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| "an unreadable file".into());
                let sino = crate::procfs::parse_anon_link(&target)
                    .filter(|(k, _)| *k == "socket")
                    .map(|(_, i)| i as u32);
                let unix = sock::proto_name(&link).is_ok_and(|p| handles_proto(&p));
                let Some(sino) = sino.filter(|_| unix) else {
                    return Err(Error::unsupported(
                        pid,
                        format!(
                            "fd {fd}: unix socket {qname} (socket:[{ino}]) has a descriptor in flight (SCM_RIGHTS) to {target}, which no process of the tree holds; cairn restores descriptors in flight that the tree also holds, and unix sockets"
                        ),
                    ));
                };
                let info = crate::procfs::read_fdinfo(me, raw)?;
                let flags = info.flags & !(libc::O_CLOEXEC as u32);
                let kind = self.describe_sock(me, raw, sino, flags, Some((pid, fd, &qname)))?;
                let id = next_id;
                next_id += 1;
                let mut d = crate::image::proto::FileDesc::new();
                d.id = id;
                d.kind = Some(kind);
                d.flags = flags;
                d.flags_saved = true;
                files.descs.push(d);
                extra.push((f.try_clone().map_err(|e| Error::sys(me, "dup", e))?, id));
                ids.push(id);
                info!("pid {pid} fd {fd}: unix socket socket:[{sino}] is in flight in the queue of {qname}");
            }
            ids_of.push((*ino, *idx, ids));
        }
        for (ino, idx, ids) in ids_of {
            for d in files.descs.iter_mut() {
                if let Some(file_desc::Kind::Unix(u)) = d.kind.as_mut() {
                    if u.ino == ino {
                        if let Some(p) = u.queue.get_mut(idx) {
                            p.fds = ids.clone();
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Once every fd table is read: links the sockets to their peers and
    /// pending connections, and refuses outside peers unless `ext_ok`.
    /// `tree_fds` is one fd of every description of the tree's fd tables
    /// (pid, fd, description id), to identify descriptors in flight.
    /// `pids` are the processes of the tree.
    pub fn finish(
        &mut self,
        files: &mut Files,
        tree_fds: &[(i32, i32, u32)],
        pids: &[i32],
        ext_ok: bool,
        leave_running: bool,
    ) -> Result<()> {
        if self.held.is_empty() {
            return Ok(());
        }
        // The graph as it is now, with the tree frozen.
        self.diag = Some(diag_all()?);
        self.identify_in_flight(files, tree_fds)?;
        let all = self.diag.as_ref().expect("just set");
        check_graph(&self.held, all, ext_ok, leave_running, false)?;
        check_senders(&self.held, all, files)?;
        for desc in files.descs.iter_mut() {
            let Some(file_desc::Kind::Unix(u)) = desc.kind.as_mut() else {
                continue;
            };
            let Some(d) = all.get(&u.ino) else { continue };
            match d.peer {
                None => {}
                Some(0) => match listener_of(all, u.ino) {
                    Some(l) if self.held.contains_key(&l.ino) => {
                        u.pending = true;
                        u.peer = l.ino;
                    }
                    Some(l) => {
                        u.external = Some(external(l, u)).into();
                    }
                    None => u.peer_gone = true,
                },
                Some(p) if self.held.contains_key(&p) => u.peer = p,
                Some(p) => match all.get(&p) {
                    Some(x) => u.external = Some(external(x, u)).into(),
                    None => u.peer_gone = true,
                },
            }
            if d.state == diag::TCP_LISTEN {
                let mut read = false;
                for &c in &d.icons {
                    let mut icon = UnixIcon::new();
                    if c != 0 && self.held.contains_key(&c) {
                        icon.client = c;
                    } else {
                        icon.client_gone = true;
                    }
                    let sent = all.get(&c).and_then(|x| x.rqlen).map(|r| r.1).unwrap_or(0);
                    read |= c == 0 || sent > 0;
                    u.icons.push(icon);
                }
                // A dump that kills the tree accepts them all: the
                // accepted side shows who connected (SO_PEERCRED).
                if read || (!leave_running && !d.icons.is_empty()) {
                    self.backlog_reads.push(u.ino);
                } else if !d.icons.is_empty() {
                    // --leave-running: read in place (BPF), or refuse.
                    let (pid, fd) = self.held[&u.ino];
                    let outside = |c: u32| !self.held.contains_key(&c);
                    let creds = peercred::waiting(&d.icons, outside, pids).map_err(|why| {
                        Error::unsupported(
                            pid,
                            format!(
                                "fd {fd}: listening unix socket {} (socket:[{}]) has {} connection(s) waiting to be accepted: {why}; accepted after a restore, they would show cairn's pid and credentials (SO_PEERCRED) instead (dump without --leave-running)",
                                show_name(&u.name),
                                u.ino,
                                d.icons.len()
                            ),
                        )
                    })?;
                    for (icon, c) in u.icons.iter_mut().zip(creds) {
                        icon.peercred = c.into();
                    }
                }
            }
        }
        Ok(())
    }

    /// The destructive step, only for a dump that kills the tree: accepts
    /// the connections waiting in the backlogs that carry data, and saves
    /// that data. Call it last, right before the images are written.
    pub fn take_backlogs(&mut self, files: &mut Files) -> Result<()> {
        for ino in std::mem::take(&mut self.backlog_reads) {
            let (pid, fd) = self.held[&ino];
            let Some(lsk) = self.listeners.get(&ino) else {
                continue;
            };
            let Some(u) = files.descs.iter_mut().find_map(|d| match d.kind.as_mut() {
                Some(file_desc::Kind::Unix(u)) if u.ino == ino => Some(u),
                _ => None,
            }) else {
                continue;
            };
            let sys = |what: &str, e: std::io::Error| {
                Error::sys(pid, format!("fd {fd} (listening unix socket): {what}"), e)
            };
            let mut i = 0;
            // The listener is the task's: never block on it.
            while sock::readable(lsk).map_err(|e| sys("poll", e))? {
                let c = match sock::accept(lsk) {
                    Ok(c) => c,
                    Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => break,
                    Err(e) => return Err(sys("accept a waiting connection", e)),
                };
                let who = peercred::read(&c)
                    .map_err(|e| sys("SO_PEERCRED of a waiting connection", e))?;
                sock::set_int(&c, libc::SOL_SOCKET, libc::SO_PASSCRED, 1)
                    .map_err(|e| sys("SO_PASSCRED on a waiting connection", e))?;
                let mut queue =
                    drain(&c, u.type_ as i32).map_err(|e| sys("read a waiting connection", e))?;
                // The connection is accepted already: refusing now would
                // lose it. A sender that has exited cannot be named again.
                for p in &mut queue {
                    if cred_refusal(std::slice::from_ref(p)).is_some() {
                        warn!(
                            "pid {pid} fd {fd}: data of a connection waiting in the backlog of {} was sent by a process that has gone: written again with cairn's credentials",
                            show_name(&u.name)
                        );
                        p.cred = None.into();
                    }
                }
                if i >= u.icons.len() {
                    // Arrived from outside after the check: it goes back as a
                    // connection whose client has gone.
                    let mut icon = UnixIcon::new();
                    icon.client_gone = true;
                    u.icons.push(icon);
                }
                u.icons[i].queue = queue;
                u.icons[i].peercred = who.into();
                i += 1;
            }
            info!(
                "pid {pid} fd {fd}: read {i} connection(s) waiting in the backlog of {}",
                show_name(&u.name)
            );
        }
        Ok(())
    }
}

fn external(peer: &UnixDiag, u: &UnixSocket) -> UnixExternal {
    let mut x = UnixExternal::new();
    x.ino = peer.ino;
    x.name = peer.name.clone().unwrap_or_else(|| u.peer_name.clone());
    x
}

/// Fills `name_dir`, `deleted` and the file's mode and owner of a socket
/// bound to a path.
fn resolve_name(pid: i32, fd: i32, d: &UnixDiag, u: &mut UnixSocket) -> Result<()> {
    let root = crate::procfs::read_link(format!("/proc/{pid}/root"))?;
    let rel = !path_bytes(&u.name).starts_with(b"/");
    if root != "/" {
        return Err(Error::unsupported(
            pid,
            format!(
                "fd {fd}: unix socket bound to {} in a process whose root is {root}: not supported yet",
                show_name(&u.name)
            ),
        ));
    }
    if rel {
        u.name_dir = crate::procfs::read_link(format!("/proc/{pid}/cwd"))?;
    }
    let path = full_path(&u.name, &u.name_dir);
    match std::fs::metadata(&path) {
        Ok(st)
            if st.file_type().is_socket() && d.vfs.is_some_and(|v| is_file_of(v, &path, &st)) =>
        {
            u.file_mode = st.mode();
            u.file_uid = st.uid();
            u.file_gid = st.gid();
        }
        _ => u.deleted = true,
    }
    Ok(())
}

/// Whether unix_diag's (inode, device) of a socket's file is the file
/// at `path` (whose stat is `st`).
fn is_file_of((ino, dev): (u32, u32), path: &Path, st: &std::fs::Metadata) -> bool {
    ino == st.ino() as u32 && (dev == kdev(st.dev()) || Some(dev) == overlay_dev(path))
}

/// On overlayfs, unix_diag names a bound socket's file by the overlay's
/// own device (its super block's s_dev) while stat(2) of that file
/// reports the device of the layer it lives in: the overlay's device is
/// what stat(2) of its directory reports (directories always get it).
/// None elsewhere (or when unknown): then only stat's own device counts.
fn overlay_dev(path: &Path) -> Option<u32> {
    const OVERLAYFS_SUPER_MAGIC: u64 = 0x794c_7630;
    let fs = rustix::fs::statfs(path).ok()?;
    if fs.f_type as u64 != OVERLAYFS_SUPER_MAGIC {
        return None;
    }
    Some(kdev(std::fs::metadata(path.parent()?).ok()?.dev()))
}

/// The messages of a queue, cairn's copies of the descriptors in flight
/// that came with each (same index), and whether control data was lost.
type Queue = (Vec<UnixPacket>, Vec<Vec<OwnedFd>>, bool);

/// Reads the receive queue of `sk` without consuming it: MSG_PEEK from
/// offset 0 onwards (SO_PEEK_OFF), then the socket's own peek offset is set
/// back. Descriptors in flight come as copies installed in cairn (the
/// kernel's MSG_PEEK gives them), which nothing else holds.
fn peek_queue(sk: &OwnedFd, ty: i32) -> std::io::Result<Queue> {
    let saved = sock::get_int(sk, libc::SOL_SOCKET, libc::SO_PEEK_OFF)?;
    sock::set_int(sk, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0)?;
    // SO_PASSCRED on for the moment: each message's sender credentials
    // (a stream peek then also stops where the writer changes).
    let cred = sock::get_int(sk, libc::SOL_SOCKET, libc::SO_PASSCRED)?;
    let on = match cred {
        0 => sock::set_int(sk, libc::SOL_SOCKET, libc::SO_PASSCRED, 1),
        _ => Ok(()),
    };
    let r = on.and_then(|()| {
        if ty == libc::SOCK_STREAM {
            peek_stream(sk)
        } else {
            read_queue(sk, ty, libc::MSG_PEEK)
        }
    });
    let back_cred = match cred {
        0 => sock::set_int(sk, libc::SOL_SOCKET, libc::SO_PASSCRED, 0),
        _ => Ok(()),
    };
    let back = sock::set_int(sk, libc::SOL_SOCKET, libc::SO_PEEK_OFF, saved);
    let r = r?;
    back?;
    back_cred?;
    Ok(r)
}

/// The kernel's overflow uid or gid (what an unmapped or absent id reads
/// as), from /proc/sys/kernel/overflow{uid,gid}.
fn overflow_id(name: &str) -> u32 {
    std::fs::read_to_string(format!("/proc/sys/kernel/{name}"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65534)
}

/// Where each write (skb) that carries descriptors in flight lies in the
/// receive queue of stream socket `sk`: (first byte, end) as offsets from
/// the first unread byte, from bpf/unixq.bpf.c.
fn fd_skbs(sk: &OwnedFd) -> std::io::Result<Vec<(usize, usize)>> {
    let ino = std::fs::metadata(format!("/proc/self/fd/{}", sk.as_raw_fd()))?.ino();
    let skbs = crate::sys::unixq::queue_skbs(ino)
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("descriptors in flight in a stream: cannot read where the write that carried them began ({e})"),
            )
        })?
        .ok_or_else(|| {
            std::io::Error::other(
                "descriptors in flight in a stream: the receive queue has more than 1024 writes (skbs), more than cairn reads to find where the write that carried them began",
            )
        })?;
    let mut at = 0usize;
    let mut out = Vec::new();
    for s in skbs {
        let end = at + s.len as usize;
        if s.fds {
            out.push((at, end));
        }
        at = end;
    }
    Ok(out)
}

/// The credentials a receive returned, as saved. A message written while
/// neither end had SO_PASSCRED/SO_PASSPIDFD carries none (the kernel
/// attaches them only then): it reads as pid 0 with the overflow uid and
/// gid, and is saved without, to be written again without.
fn cred_of(r: &sock::Received) -> Option<UnixCred> {
    let none = (0, overflow_id("overflowuid"), overflow_id("overflowgid"));
    r.cred.filter(|c| *c != none).map(|(pid, uid, gid)| {
        let mut c = UnixCred::new();
        c.pid = pid;
        c.uid = uid;
        c.gid = gid;
        c
    })
}

/// The saved credentials of a packet as sendmsg takes them.
fn cred_tuple(p: &UnixPacket) -> Option<(i32, u32, u32)> {
    p.cred.as_ref().map(|c| (c.pid, c.uid, c.gid))
}

/// Whether the sender pid of a packet does not exist now (a process of
/// the tree before it is restored): such messages wait until it does.
fn sender_missing(p: &UnixPacket) -> bool {
    p.cred
        .as_ref()
        .is_some_and(|c| !Path::new(&format!("/proc/{}", c.pid)).exists())
}

/// Why the queued messages of a socket cannot be written again with their
/// senders' credentials, if so: a sender outside cairn's pid namespace
/// (pid 0) or no longer alive has a pid no process can send as.
fn cred_refusal(queue: &[UnixPacket]) -> Option<String> {
    for p in queue {
        let Some(c) = p.cred.as_ref() else {
            continue;
        };
        if c.pid <= 0 {
            return Some(
                "a queued message was sent by a process outside cairn's pid namespace (pid 0 as seen here): it cannot be written again with its sender's pid".into(),
            );
        }
        if !Path::new(&format!("/proc/{}", c.pid)).exists() {
            return Some(format!(
                "a queued message was sent by pid {}, which has exited: the kernel only lets a message be written with the pid of a living process, and a receiver can ask for it (SO_PASSCRED, SO_PASSPIDFD, set now or later)",
                c.pid
            ));
        }
    }
    None
}

/// Whether a security module gives processes labels (SELinux, Smack,
/// AppArmor): /proc/self/attr/current is then readable.
fn lsm_labels() -> bool {
    std::fs::read("/proc/self/attr/current").is_ok_and(|l| !l.is_empty())
}

/// Reads (and consumes) everything queued on a socket cairn owns.
fn drain(sk: &OwnedFd, ty: i32) -> std::io::Result<Vec<UnixPacket>> {
    let (q, files, lost) = read_queue(sk, ty, 0)?;
    if lost || files.iter().any(|f| !f.is_empty()) {
        return Err(std::io::Error::other(
            "descriptors in flight (SCM_RIGHTS) in a waiting connection",
        ));
    }
    Ok(q)
}

/// Peeks at a stream socket's queue (SO_PEEK_OFF at 0). The kernel glues
/// the bytes of separate writes together, but a read (and a peek) ends
/// after the write (skb) that carries descriptors and returns them: each
/// run of bytes up to such a write is split where that write began: the
/// bytes before it (merged with the plain bytes before) and the bytes of
/// the write with its descriptors, written again as one write, so a read
/// gets them at the same byte as before. A peek cannot show where that
/// write began (a peek at any earlier byte returns the descriptors of the
/// next write that has some): the kernel's skb list, read with a BPF
/// iterator ([`fd_skbs`]), does; without it the dump fails.
fn peek_stream(sk: &OwnedFd) -> std::io::Result<Queue> {
    let total = sock::inq(sk)?;
    if total > MAX_QUEUE {
        return Err(std::io::Error::other("more than 1 GiB queued"));
    }
    // Larger than the queue: a peek only ends early after descriptors.
    let mut buf = vec![0u8; total + 1];
    let mut out: Vec<UnixPacket> = Vec::new();
    let mut files: Vec<Vec<OwnedFd>> = Vec::new();
    let mut lost = false;
    let mut off = 0usize;
    let mut skbs: Option<Vec<(usize, usize)>> = None;
    let plain = |out: &mut Vec<UnixPacket>,
                 files: &mut Vec<Vec<OwnedFd>>,
                 data: &[u8],
                 cred: Option<UnixCred>| {
        if data.is_empty() {
            return;
        }
        match out.last_mut() {
            Some(p)
                if p.fds.is_empty()
                    && files.last().is_some_and(|f| f.is_empty())
                    && p.cred.as_ref() == cred.as_ref() =>
            {
                p.data.extend_from_slice(data)
            }
            _ => {
                let mut p = UnixPacket::new();
                p.data = data.to_vec();
                p.cred = cred.into();
                out.push(p);
                files.push(Vec::new());
            }
        }
    };
    loop {
        let r = match sock::recv_msg(sk, &mut buf, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
            Ok(r) => r,
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => break,
            Err(e) => return Err(e),
        };
        if r.copied == 0 {
            break;
        }
        if r.fds.is_empty() && !r.ctrunc {
            plain(&mut out, &mut files, &buf[..r.copied], cred_of(&r));
        } else {
            // The run ends with the write (skb) that carried descriptors;
            // the bytes before it in the run were written without them.
            if skbs.is_none() {
                skbs = Some(fd_skbs(sk)?);
            }
            let end = off + r.copied;
            let start = skbs
                .as_ref()
                .and_then(|v| v.iter().find(|(_, e)| *e == end))
                .map(|(s, _)| *s)
                .filter(|s| (off..end).contains(s))
                .ok_or_else(|| {
                    std::io::Error::other(format!(
                        "descriptors in flight arrive with the bytes up to offset {end} of the stream, and the write that carried them was not found in the receive queue (cannot tell where it began)"
                    ))
                })?;
            let head = start - off;
            plain(&mut out, &mut files, &buf[..head], cred_of(&r));
            let r_data = &buf[head..r.copied];
            lost |= r.ctrunc;
            let mut p = UnixPacket::new();
            p.data = r_data.to_vec();
            p.cred = cred_of(&r).into();
            out.push(p);
            files.push(r.fds);
        }
        off += r.copied;
        if off > MAX_QUEUE {
            return Err(std::io::Error::other("more than 1 GiB queued"));
        }
    }
    Ok((out, files, lost))
}

/// The messages of a receive queue, read with `flags` (MSG_PEEK or 0),
/// without blocking. Stream bytes come as one packet (a consuming read of
/// a stream is only used on connections whose descriptors are refused);
/// datagrams and seqpacket records one each, with the sender's name and
/// the descriptors in flight that came with it. A zero-length datagram is
/// only seen at the head of the queue (the kernel skips zero-length ones
/// when peeking at an offset).
fn read_queue(sk: &OwnedFd, ty: i32, flags: i32) -> std::io::Result<Queue> {
    let stream = ty == libc::SOCK_STREAM;
    let flags = flags | libc::MSG_DONTWAIT | if stream { 0 } else { libc::MSG_TRUNC };
    let mut buf = vec![0u8; 256 * 1024];
    let mut out: Vec<UnixPacket> = Vec::new();
    let mut files: Vec<Vec<OwnedFd>> = Vec::new();
    let mut lost = false;
    let mut total = 0usize;
    let again = |e: &std::io::Error| e.raw_os_error() == Some(libc::EAGAIN);
    loop {
        let r = match sock::recv_msg(sk, &mut buf, flags) {
            Ok(r) => r,
            Err(e) if again(&e) => break,
            Err(e) => return Err(e),
        };
        lost |= r.ctrunc;
        if stream {
            if r.copied == 0 {
                break;
            }
            lost |= !r.fds.is_empty();
            let cred = cred_of(&r);
            match out.last_mut() {
                Some(p) if p.cred.as_ref() == cred.as_ref() => {
                    p.data.extend_from_slice(&buf[..r.copied])
                }
                _ => {
                    let mut p = UnixPacket::new();
                    p.data = buf[..r.copied].to_vec();
                    p.cred = cred.into();
                    out.push(p);
                    files.push(Vec::new());
                }
            }
            total += r.copied;
        } else {
            // With MSG_TRUNC the kernel returns what is left of the
            // datagram; a long one comes in several pieces (each peek of
            // a piece gives its descriptors again: only the first counts).
            let want = r.len;
            let mut data = buf[..r.copied].to_vec();
            while data.len() < want {
                let more = sock::recv_msg(sk, &mut buf, flags)?;
                if more.copied == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..more.copied]);
            }
            total += data.len();
            let mut p = UnixPacket::new();
            p.data = data;
            p.cred = cred_of(&r).into();
            p.sender = r.name;
            out.push(p);
            files.push(r.fds);
            if want == 0 && flags & libc::MSG_PEEK == 0 && out.len() > 1 << 20 {
                break;
            }
        }
        if total > MAX_QUEUE || out.len() > 1 << 20 {
            return Err(std::io::Error::other(
                "more than 1 GiB or 1M messages queued",
            ));
        }
    }
    Ok((out, files, lost))
}

// ---------------------------------------------------------------- restore

/// The sockets rebuilt in cairn, kept open until every vessel has fetched
/// its descriptors.
#[derive(Default)]
pub struct UnixRestore {
    /// Rebuilt already (by [`restore_as`], before `SharedFiles::prepare`).
    built: bool,
    _fds: Vec<OwnedFd>,
    /// Messages that carry descriptors in flight, and every message
    /// queued after one of them: sent once the fd tables are restored
    /// ([`UnixRestore::send_in_flight`]), when the descriptions exist.
    later: Vec<Planned>,
    /// Shutdowns to do after those sends (a shut-down socket refuses
    /// them): (cairn's copy, how, inode).
    shut_later: Vec<(OwnedFd, i32, u32)>,
    /// Sockets with SO_PASSCRED or SO_PASSPIDFD (cairn's copy, the two
    /// saved values): both are off while the later messages are written,
    /// else the kernel would attach cairn's credentials to those that had
    /// none.
    pass_later: Vec<(OwnedFd, bool, bool)>,
}

/// Sets SO_PASSCRED and SO_PASSPIDFD of `fd` (before Linux 6.5 there is
/// no SO_PASSPIDFD: off is then what it is).
fn set_pass(fd: &OwnedFd, cred: bool, pidfd: bool) -> std::io::Result<()> {
    sock::set_int(fd, libc::SOL_SOCKET, libc::SO_PASSCRED, cred as i32)?;
    match sock::set_int(fd, libc::SOL_SOCKET, SO_PASSPIDFD, pidfd as i32) {
        Err(e) if !pidfd && e.raw_os_error() == Some(libc::ENOPROTOOPT) => Ok(()),
        r => r,
    }
}

const SO_PASSPIDFD: i32 = 76;

/// Messages to write into one socket's queue after the fd tables exist.
struct Planned {
    /// "unix stream socket NAME (socket:[INO])", for messages.
    what: String,
    /// The socket that writes them (a copy of cairn's).
    from: OwnedFd,
    /// Where to (a datagram socket's name), or None for the peer.
    to: Option<Vec<u8>>,
    packets: Vec<UnixPacket>,
    stream: bool,
}

impl UnixRestore {
    /// Once every fd table is restored (`descs`: description id ->
    /// (process, fd) that has it; cairn's own pid for what cairn
    /// rebuilt): writes the messages that carry descriptors in flight,
    /// each with a copy (pidfd_getfd) of the same descriptions, and what
    /// was queued after them; then the shutdowns that had to wait.
    pub fn send_in_flight(&mut self, descs: &HashMap<u32, (i32, u64)>) -> Result<()> {
        let mut n = 0;
        let pass_err = |e: std::io::Error| {
            Error::Restore(format!("unix socket: SO_PASSCRED/SO_PASSPIDFD: {e}"))
        };
        if !self.later.is_empty() {
            for (fd, _, _) in &self.pass_later {
                set_pass(fd, false, false).map_err(pass_err)?;
            }
        }
        for p in std::mem::take(&mut self.later) {
            let err = |what: &str, e: &dyn std::fmt::Display| {
                Error::Restore(format!("{}: {what}: {e}", p.what))
            };
            let saved = sock::get_int(&p.from, libc::SOL_SOCKET, libc::SO_SNDBUF)
                .map_err(|e| err("SO_SNDBUF", &e))?;
            for pk in &p.packets {
                let mut files = Vec::with_capacity(pk.fds.len());
                for id in &pk.fds {
                    let &(owner, fd) = descs.get(id).ok_or_else(|| {
                        err(
                            "a descriptor in flight",
                            &format!("description {id} was not restored"),
                        )
                    })?;
                    let f = sock::pidfd_getfd(owner, fd as i32).map_err(|e| {
                        err(
                            &format!("copy description {id} from pid {owner} fd {fd}"),
                            &e,
                        )
                    })?;
                    files.push(f);
                }
                n += files.len();
                let raw: Vec<i32> = files.iter().map(|f| f.as_raw_fd()).collect();
                send_packet(&p.from, pk, &raw, p.stream, p.to.as_deref()).map_err(|e| {
                    let by = pk.cred.as_ref().map_or(0, |c| c.pid);
                    err(
                        &format!("write a queued message again (sent by pid {by})"),
                        &e,
                    )
                })?;
            }
            // The saved size again (send_packet raised it).
            sock::set_int(
                &p.from,
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                (saved / 2).max(1),
            )
            .map_err(|e| err("SO_SNDBUFFORCE", &e))?;
        }
        for (fd, cred, pidfd) in std::mem::take(&mut self.pass_later) {
            set_pass(&fd, cred, pidfd).map_err(pass_err)?;
        }
        for (fd, how, ino) in std::mem::take(&mut self.shut_later) {
            if let Err(e) = sock::shutdown(&fd, how) {
                if e.raw_os_error() != Some(libc::ENOTCONN) {
                    return Err(Error::Restore(format!(
                        "unix socket socket:[{ino}]: shutdown: {e}"
                    )));
                }
            }
        }
        if n > 0 {
            info!("{n} descriptor(s) in flight sent again");
        }
        Ok(())
    }
}

/// Writes one packet from `from` with descriptors `fds` (SCM_RIGHTS, on
/// the first write of a stream's bytes, as the kernel attaches them).
fn send_packet(
    from: &OwnedFd,
    p: &UnixPacket,
    fds: &[i32],
    stream: bool,
    to: Option<&[u8]>,
) -> std::io::Result<()> {
    let room = (p.data.len() + 64 * 1024).min(i32::MAX as usize / 2) as i32;
    let cur = sock::get_int(from, libc::SOL_SOCKET, libc::SO_SNDBUF)?;
    if cur < room {
        let _ = sock::set_int(from, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, room);
    }
    let cred = cred_tuple(p);
    if stream {
        let mut off = 0;
        let mut first = true;
        while first || off < p.data.len() {
            let f = if first { fds } else { &[] };
            off += scm::send_cred(from, &p.data[off..], f, cred, None)?;
            first = false;
        }
    } else {
        let n = scm::send_cred(from, &p.data, fds, cred, to)?;
        if n != p.data.len() {
            return Err(std::io::Error::other("short datagram write"));
        }
    }
    Ok(())
}

/// Writes `packets` into `r`'s queue from `from` now, up to the first one
/// that carries descriptors in flight (or all of them once `r` has
/// messages waiting in `later`); the rest is planned for
/// [`UnixRestore::send_in_flight`].
fn send_or_defer(
    later: &mut Vec<Planned>,
    r: &UnixSocket,
    from: &OwnedFd,
    packets: &[UnixPacket],
    stream: bool,
    to: Option<&[u8]>,
) -> Result<()> {
    let what = format!(
        "unix {} socket {} (socket:[{}])",
        type_name(r.type_),
        show_name(&r.name),
        r.ino
    );
    let cut = if later.iter().any(|p| p.what == what) {
        0
    } else {
        packets
            .iter()
            .position(|p| !p.fds.is_empty() || sender_missing(p))
            .unwrap_or(packets.len())
    };
    send_all(from, &packets[..cut], stream, to).map_err(|e| rerr(r, "refill the queue", e))?;
    if cut < packets.len() && r.deleted && to.is_some() {
        // The name is gone once the sockets are rebuilt: what waits for
        // its sender could not be addressed then.
        return Err(rerr(
            r,
            "refill the queue",
            "datagrams that must wait until their sender (a process of the tree) or their descriptors in flight exist cannot be addressed to a socket whose name was deleted",
        ));
    }
    if cut < packets.len() {
        later.push(Planned {
            what,
            from: from.try_clone().map_err(|e| rerr(r, "dup", e))?,
            to: to.map(<[u8]>::to_vec),
            packets: packets[cut..].to_vec(),
            stream,
        });
    }
    Ok(())
}

/// Binds `fd` to the relative path `rel` (without its NUL) inside a
/// fresh directory only cairn can write (mode 0700 in the temporary
/// directory), from a thread with its own working directory
/// (unshare(CLONE_FS), fchdir): the socket's name is `rel` as given, as a
/// datagram's sender address shows it, while the socket file is made
/// where nobody else can interfere (no symlink, no user-writable
/// directory is followed), then removed with the directory. Names with
/// `..` would leave that directory and are refused.
fn bind_relative_private(fd: &OwnedFd, rel: &[u8]) -> std::io::Result<()> {
    use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
    let parts: Vec<&[u8]> = rel
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    if parts.is_empty() || parts.contains(&&b".."[..]) {
        return Err(std::io::Error::other(
            "a relative name with \"..\" (or no file name) cannot be bound in a private directory",
        ));
    }
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let base = std::env::temp_dir();
    let mut dir = None;
    for _ in 0..100 {
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let p = base.join(format!("cairn-sender-{}-{n}-{nanos}", std::process::id()));
        match rfs::mkdir(&p, Mode::RWXU) {
            Ok(()) => {
                dir = Some(p);
                break;
            }
            Err(rustix::io::Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let dir = dir.ok_or_else(|| std::io::Error::other("no private directory could be made"))?;
    let made: std::cell::RefCell<Vec<PathBuf>> = std::cell::RefCell::new(vec![dir.clone()]);
    let r = (|| -> std::io::Result<()> {
        let root = rfs::open(
            &dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let mut sub = dir.clone();
        for c in &parts[..parts.len() - 1] {
            sub.push(OsStr::from_bytes(c));
            rfs::mkdir(&sub, Mode::RWXU)?;
            made.borrow_mut().push(sub.clone());
        }
        let name = rel.to_vec();
        let copy = fd.try_clone()?;
        std::thread::scope(|sc| {
            sc.spawn(move || -> std::io::Result<()> {
                rustix::thread::unshare(rustix::thread::UnshareFlags::FS)?;
                rustix::process::fchdir(&root)?;
                sock::bind_unix(&copy, &name)
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("binding thread panicked")))
        })?;
        let mut file = sub;
        file.push(OsStr::from_bytes(parts[parts.len() - 1]));
        rfs::unlinkat(rfs::CWD, &file, AtFlags::empty())?;
        Ok(())
    })();
    for d in made.into_inner().iter().rev() {
        let _ = rfs::unlinkat(rfs::CWD, d, AtFlags::REMOVEDIR);
    }
    r
}

/// One restore of the unix sockets of a tree.
struct Rebuild<'a> {
    by_ino: BTreeMap<u32, &'a UnixSocket>,
    fds: HashMap<u32, OwnedFd>,
    /// Socket files to remove at the end (deleted names, temporary names).
    unlink: Vec<PathBuf>,
    /// Sockets bound to a name so far, by name: to connect to them.
    bound: HashMap<Vec<u8>, u32>,
    warnings: Vec<String>,
    /// Messages for after the fd tables ([`send_or_defer`]).
    later: Vec<Planned>,
    /// The other end of datagram socketpairs whose other end was closed,
    /// to write their queue from and close.
    dgram_orphans: HashMap<u32, OwnedFd>,
    /// Files that took the place of a deleted socket name, moved aside
    /// while the socket is bound there and put back at the end (or on
    /// any error, when dropped).
    parked: Vec<Parked>,
    /// Makes the calls that record a peer (SO_PEERCRED) as the saved task.
    cr: Creator<'a>,
    /// --ext-unix-sk-lose-peercred: see [`restore_as`].
    lose_peercred: bool,
}

impl<'a> Rebuild<'a> {
    /// The credentials socket `u` recorded (SO_PEERCRED), made by that
    /// task. For a socket whose peer is outside the tree (--ext-unix-sk)
    /// only when a restore can make the call as it (a process of the tree,
    /// or a pid no process has now); else None (made by cairn, and said:
    /// [`Rebuild::refuse_lost_creds`]).
    fn pcred(&self, u: &'a UnixSocket) -> Option<&'a UnixPeerCred> {
        (u.peercred.as_ref()).filter(|c| u.external.is_none() || self.cr.can_act_as(c.pid))
    }

    /// The credentials a connection waiting in a backlog is made with: the
    /// task that connected; for a client outside the tree (--ext-unix-sk)
    /// only when a restore can make the call as it.
    fn icon_cred(&self, icon: &'a UnixIcon) -> Option<&'a UnixPeerCred> {
        (icon.peercred.as_ref()).filter(|c| !icon.client_gone || self.cr.can_act_as(c.pid))
    }

    /// Every socket with an outside peer (--ext-unix-sk) whose recorded
    /// SO_PEERCRED names a task a restore cannot act as now (a live
    /// process outside the tree) would come back naming cairn: an error
    /// (the pid was taken since [`check_restore`]), or with
    /// `lose_peercred` (--ext-unix-sk-lose-peercred) a warning.
    fn refuse_lost_creds(&mut self) -> Result<()> {
        let lost = lost_creds(self.by_ino.values().copied(), |pid| self.cr.can_act_as(pid));
        for l in lost {
            if !self.lose_peercred {
                return Err(Error::Restore(format!(
                    "unix socket socket:[{}] (peer outside the tree, --ext-unix-sk): {}; it would name cairn: restore when that pid is free, or pass --ext-unix-sk-lose-peercred",
                    l.ino,
                    l.what()
                )));
            }
            self.warnings.push(format!(
                "unix socket socket:[{}] (peer outside the tree, --ext-unix-sk): {}; it names cairn after the restore (--ext-unix-sk-lose-peercred)",
                l.ino,
                l.what()
            ));
        }
        Ok(())
    }
}

/// A socket whose saved SO_PEERCRED a restore cannot give back: its peer
/// is outside the tree (--ext-unix-sk) and the recorded task is one no
/// call can be made as.
struct LostCred<'a> {
    ino: u32,
    /// "its" or "a waiting connection's".
    whose: &'static str,
    cred: &'a UnixPeerCred,
}

impl LostCred<'_> {
    fn what(&self) -> String {
        let c = self.cred;
        let now = if c.pid <= 0 {
            "a process outside cairn's pid namespace".to_string()
        } else {
            let comm = crate::procfs::read_comm(c.pid, c.pid).unwrap_or_default();
            format!("pid {} ({}) is a live process now", c.pid, comm.trim())
        };
        format!(
            "{} SO_PEERCRED named {}, and {now}",
            self.whose,
            peercred::show(Some(c))
        )
    }
}

/// The sockets among `socks` with an outside peer (--ext-unix-sk, or a
/// waiting connection from an outside client) whose saved SO_PEERCRED
/// names a pid `can_act_as` refuses.
fn lost_creds<'a>(
    socks: impl Iterator<Item = &'a UnixSocket>,
    can_act_as: impl Fn(i32) -> bool,
) -> Vec<LostCred<'a>> {
    let mut lost = Vec::new();
    for u in socks {
        let ext = (u.peercred.as_ref()).filter(|_| u.external.is_some());
        if let Some(c) = ext.filter(|c| !can_act_as(c.pid)) {
            lost.push(LostCred {
                ino: u.ino,
                whose: "its",
                cred: c,
            });
        }
        for icon in &u.icons {
            let c = icon.peercred.as_ref().filter(|_| icon.client_gone);
            if let Some(c) = c.filter(|c| !can_act_as(c.pid)) {
                lost.push(LostCred {
                    ino: u.ino,
                    whose: "a waiting connection's",
                    cred: c,
                });
            }
        }
    }
    lost
}

/// Before any process of the tree exists: a socket with a peer outside
/// the tree (--ext-unix-sk) whose saved SO_PEERCRED names a task the
/// restore cannot act as (a pid a live process has now, or one outside
/// cairn's pid namespace; `tree`: the pids of the tree's live processes,
/// which the restore acts as) would come back naming cairn: refused,
/// naming the pid, fd, socket and the recorded peer, unless `lose_ok`
/// (--ext-unix-sk-lose-peercred).
pub fn check_restore<'a>(
    files: &Files,
    tables: impl IntoIterator<Item = &'a FdTable>,
    tree: &[i32],
    lose_ok: bool,
) -> Result<()> {
    if lose_ok {
        return Ok(()); // warned during the rebuild
    }
    let socks = files.descs.iter().filter_map(|d| match &d.kind {
        Some(file_desc::Kind::Unix(u)) => Some((d.id, u)),
        _ => None,
    });
    let ids: HashMap<u32, u32> = socks.clone().map(|(id, u)| (u.ino, id)).collect();
    let lost = lost_creds(socks.map(|(_, u)| u), |pid| {
        tree.contains(&pid) || peercred::free(pid)
    });
    let Some(l) = lost.first() else {
        return Ok(());
    };
    let mut users: HashMap<u32, (u32, u32)> = HashMap::new();
    for t in tables {
        for f in &t.fds {
            users.entry(f.desc_id).or_insert((t.pid, f.fd));
        }
    }
    let at = match ids.get(&l.ino).and_then(|id| users.get(id)) {
        Some((pid, fd)) => format!("pid {pid} fd {fd}: "),
        None => String::new(),
    };
    Err(Error::Restore(format!(
        "{at}unix socket socket:[{}] (peer outside the tree, --ext-unix-sk): {}: no call can be made as that process, so the restored socket would name cairn; restore once that pid is free, or pass --ext-unix-sk-lose-peercred to accept that",
        l.ino,
        l.what()
    )))
}

/// A file moved aside from `path` (to `aside`, in the same directory) so
/// that a socket can be bound at `path`; dropping it removes the socket
/// file cairn made there and moves the file back.
struct Parked {
    path: PathBuf,
    aside: PathBuf,
}

impl Parked {
    /// Moves whatever is at `path` (not following a symlink) aside under a
    /// new name in its directory (renameat2 RENAME_NOREPLACE), or None if
    /// nothing is there.
    fn aside(path: &Path) -> std::io::Result<Option<Parked>> {
        if std::fs::symlink_metadata(path).is_err() {
            return Ok(None);
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let base = path.file_name().unwrap_or_default().to_string_lossy();
        for i in 0..100u32 {
            let aside = dir.join(format!(".cairn-parked-{}-{i}-{base}", std::process::id()));
            match rustix::fs::renameat_with(
                rustix::fs::CWD,
                path,
                rustix::fs::CWD,
                &aside,
                rustix::fs::RenameFlags::NOREPLACE,
            ) {
                Ok(()) => {
                    info!(
                        "{} took the place of a deleted socket name: moved aside while the socket is bound",
                        path.display()
                    );
                    return Ok(Some(Parked {
                        path: path.to_path_buf(),
                        aside,
                    }));
                }
                Err(e) if e == rustix::io::Errno::EXIST => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(std::io::Error::other("no free name to move the file aside"))
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = std::fs::remove_file(&self.path);
        }
        if let Err(e) = rustix::fs::renameat_with(
            rustix::fs::CWD,
            &self.aside,
            rustix::fs::CWD,
            &self.path,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            warn!(
                "cannot move {} back to {}: {e}",
                self.aside.display(),
                self.path.display()
            );
        }
    }
}

fn rerr(u: &UnixSocket, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Restore(format!(
        "unix {} socket {} (socket:[{}]): {what}: {e}",
        type_name(u.type_),
        show_name(&u.name),
        u.ino
    ))
}

/// The backlog a listener listens with.
fn backlog_of(l: &UnixSocket) -> i32 {
    (l.backlog as i32).max(l.icons.len() as i32)
}

fn nonblock(fd: &OwnedFd) -> std::io::Result<()> {
    let fl = sock::get_fl(fd)?;
    sock::set_fl(fd, fl | libc::O_NONBLOCK)
}

/// connect() to a name (relative ones from `dir`).
fn connect_name(fd: &OwnedFd, name: &[u8], dir: &str) -> std::io::Result<()> {
    if is_path(name) && !path_bytes(name).starts_with(b"/") && !dir.is_empty() {
        sock::in_dir(dir, fd, name, true)
    } else {
        sock::connect_unix(fd, name)
    }
}

/// Whether a socket file at `path` is stale: no socket of this network
/// namespace has it as its file (asked through sock_diag, so that a live
/// listener sees no probe connection).
fn stale(path: &Path) -> bool {
    let Ok(st) = std::fs::symlink_metadata(path) else {
        return false;
    };
    let Ok(all) = diag::dump_all() else {
        return false;
    };
    !all.iter()
        .any(|d| d.vfs.is_some_and(|v| is_file_of(v, path, &st)))
}

/// bind() to a name. A socket file left at the path by a process that
/// is gone (stale: nobody bound to it) is replaced; a live one is an error.
fn bind_name(fd: &OwnedFd, name: &[u8], dir: &str) -> std::io::Result<()> {
    if is_path(name) {
        let path = full_path(name, dir);
        if let Ok(st) = std::fs::symlink_metadata(&path) {
            if !st.file_type().is_socket() || !stale(&path) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("{} exists and is not a stale socket file", path.display()),
                ));
            }
            std::fs::remove_file(&path)?;
        }
        if !path_bytes(name).starts_with(b"/") && !dir.is_empty() {
            return sock::in_dir(dir, fd, name, false);
        }
    }
    sock::bind_unix(fd, name)
}

/// The address to sendto() a socket with `name` from cairn.
fn send_addr(name: &[u8], dir: &str) -> Vec<u8> {
    if is_path(name) && !path_bytes(name).starts_with(b"/") && !dir.is_empty() {
        let mut p = full_path(name, dir).into_os_string().into_vec();
        p.push(0);
        p
    } else {
        name.to_vec()
    }
}

/// Writes all of `data` (a stream) or each packet (datagrams, records) from
/// `from`, to its peer or to `to`.
fn send_all(
    from: &OwnedFd,
    packets: &[UnixPacket],
    stream: bool,
    to: Option<&[u8]>,
) -> std::io::Result<()> {
    let total: usize = packets.iter().map(|p| p.data.len()).sum();
    if total > 0 {
        // Room for everything at once: the kernel charges queued bytes to
        // the sender. The saved size is set again afterwards.
        let want = (total + (packets.len() + 16) * 1024).min(i32::MAX as usize / 2);
        let _ = sock::set_int(from, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, want as i32);
    }
    for p in packets {
        let cred = cred_tuple(p);
        if stream {
            let mut off = 0;
            while off < p.data.len() {
                off += scm::send_cred(from, &p.data[off..], &[], cred, None)?;
            }
        } else {
            let n = scm::send_cred(from, &p.data, &[], cred, to)?;
            if n != p.data.len() {
                return Err(std::io::Error::other("short datagram write"));
            }
        }
    }
    Ok(())
}

impl<'a> Rebuild<'a> {
    fn sock(&self, ino: u32) -> &'a UnixSocket {
        self.by_ino[&ino]
    }

    fn fd(&self, ino: u32) -> Result<&OwnedFd> {
        self.fds
            .get(&ino)
            .ok_or_else(|| Error::Restore(format!("unix socket socket:[{ino}] was not created")))
    }

    fn peer(&self, u: &UnixSocket) -> Option<&'a UnixSocket> {
        (u.peer != 0)
            .then(|| self.by_ino.get(&u.peer).copied())
            .flatten()
    }

    fn mutual(&self, u: &UnixSocket) -> Option<&'a UnixSocket> {
        self.peer(u)
            .filter(|p| p.peer == u.ino && !u.pending && !p.pending && p.type_ == u.type_)
    }

    /// A connected stream/seqpacket socket.
    fn conn(u: &UnixSocket) -> bool {
        u.type_ as i32 != libc::SOCK_DGRAM && u.state == diag::TCP_ESTABLISHED as u32
    }

    /// The side of a connected pair that gets its name from a listener
    /// (the accepted side); the other one binds its own name, if any.
    fn server_side(&self, a: &'a UnixSocket, b: &'a UnixSocket) -> Option<&'a UnixSocket> {
        let listener = |n: &[u8]| {
            self.by_ino
                .values()
                .any(|l| l.state == diag::TCP_LISTEN as u32 && l.name == n)
        };
        match (a.name.is_empty(), b.name.is_empty()) {
            (true, true) => None,
            (true, false) => Some(b),
            (false, true) => Some(a),
            _ if listener(&a.name) => Some(a),
            _ => Some(b),
        }
    }

    /// Sockets that carry their own name (bound with bind()).
    fn self_bound(&self, u: &UnixSocket) -> bool {
        if u.name.is_empty() {
            return false;
        }
        if !Self::conn(u) || u.pending {
            return true;
        }
        match self.mutual(u) {
            Some(p) => self.server_side(u, p).map(|s| s.ino) != Some(u.ino),
            // Peer gone or outside: rebuilt as an accepted socket.
            None => false,
        }
    }

    /// Binds `u`'s own name, with its file's mode and owner.
    fn bind(&mut self, u: &UnixSocket) -> Result<()> {
        self.free_deleted(&u.name, &u.name_dir, u.deleted)
            .map_err(|e| rerr(u, "move aside the file that replaced the name", e))?;
        let fd = self.fd(u.ino)?;
        bind_name(fd, &u.name, &u.name_dir).map_err(|e| rerr(u, "bind", e))?;
        if is_path(&u.name) {
            let path = full_path(&u.name, &u.name_dir);
            if u.deleted {
                self.unlink.push(path);
            } else if u.file_mode != 0 {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(
                    &path,
                    std::fs::Permissions::from_mode(u.file_mode & 0o7777),
                );
                if let Err(e) = std::os::unix::fs::lchown(&path, Some(u.file_uid), Some(u.file_gid))
                {
                    self.warnings
                        .push(format!("{}: chown: {e}", path.display()));
                }
            }
        }
        self.bound.insert(u.name.clone(), u.ino);
        Ok(())
    }

    /// Before binding a socket whose path name was deleted since it was
    /// bound: a file that took the name since (another file, or another
    /// socket's) is moved aside until the restore of the sockets is done,
    /// so the socket is bound at its own name and the file comes back.
    fn free_deleted(&mut self, name: &[u8], dir: &str, deleted: bool) -> std::io::Result<()> {
        if !deleted || !is_path(name) {
            return Ok(());
        }
        let path = full_path(name, dir);
        if self.parked.iter().any(|p| p.path == path) {
            // Already aside; our own socket file may be there now.
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_socket()) {
                std::fs::remove_file(&path)?;
            }
            return Ok(());
        }
        if let Some(p) = Parked::aside(&path)? {
            self.parked.push(p);
        }
        Ok(())
    }

    /// Connects `client` to a listener named `name` and returns the
    /// accepted side: through the tree's own listener of that name if there
    /// is one (its backlog is still empty), else through a temporary one.
    ///
    /// SO_PEERCRED: the client gets `client` (what the listener recorded
    /// at listen(), so the listener listens again as that task for the
    /// while), the accepted side `accepted` (the task that connects).
    fn connect_through(
        &mut self,
        client: &OwnedFd,
        s: &UnixSocket,
        ccred: Option<&UnixPeerCred>,
        acred: Option<&UnixPeerCred>,
    ) -> std::io::Result<OwnedFd> {
        let ty = s.type_ as i32;
        let own = self
            .by_ino
            .values()
            .find(|l| l.state == diag::TCP_LISTEN as u32 && l.name == s.name && l.type_ == s.type_);
        if let Some(l) = own {
            let lfd = self
                .fds
                .get(&l.ino)
                .ok_or_else(|| std::io::Error::other("listener missing"))?;
            let relisten = ccred.is_some() && ccred != self.pcred(l);
            if relisten {
                self.cr.listen(lfd, backlog_of(l), ccred)?;
            }
            let r = self.cr.connect(client, &s.name, &s.name_dir, acred);
            if relisten {
                self.cr.listen(lfd, backlog_of(l), self.pcred(l))?;
            }
            r?;
            return sock::accept(lfd);
        }
        let temp = sock::socket(libc::AF_UNIX, ty)?;
        self.free_deleted(&s.name, &s.name_dir, s.deleted)?;
        bind_name(&temp, &s.name, &s.name_dir)?;
        if is_path(&s.name) && s.deleted {
            self.unlink.push(full_path(&s.name, &s.name_dir));
        }
        self.cr.listen(&temp, 1, ccred)?;
        self.cr.connect(client, &s.name, &s.name_dir, acred)?;
        sock::accept(&temp)
    }

    /// A connected stream/seqpacket pair `a` <-> `b`.
    fn make_pair(&mut self, a: &'a UnixSocket, b: &'a UnixSocket) -> Result<()> {
        let ty = a.type_ as i32;
        if let Some(s) = self.server_side(a, b) {
            let c = if s.ino == a.ino { b } else { a };
            let client = sock::socket(libc::AF_UNIX, ty).map_err(|e| rerr(c, "socket", e))?;
            self.fds.insert(c.ino, client);
            if self.self_bound(c) {
                self.bind(c)?;
            }
            let client = self.fds.remove(&c.ino).expect("just inserted");
            match self.connect_through(&client, s, self.pcred(c), self.pcred(s)) {
                Ok(server) => {
                    self.fds.insert(c.ino, client);
                    self.fds.insert(s.ino, server);
                    return Ok(());
                }
                Err(e) => self.warnings.push(format!(
                    "unix socket {} (socket:[{}]): its name cannot be given back ({e}); restored without it",
                    show_name(&s.name),
                    s.ino
                )),
            }
            // The client's own name stays bound; connect them without names.
            drop(client);
            self.fds.remove(&c.ino);
        }
        let (x, y) = (self.cr)
            .socketpair(ty, self.pcred(a))
            .map_err(|e| rerr(a, "socketpair", e))?;
        self.fds.insert(a.ino, x);
        self.fds.insert(b.ino, y);
        Ok(())
    }

    /// A connected stream/seqpacket socket whose peer has gone (or is
    /// outside the tree): a connection whose other end is closed once the
    /// queued data is written. Returns the temporary other end.
    fn make_orphan(&mut self, u: &'a UnixSocket) -> Result<OwnedFd> {
        let ty = u.type_ as i32;
        if !u.name.is_empty() {
            let other = sock::socket(libc::AF_UNIX, ty).map_err(|e| rerr(u, "socket", e))?;
            match self.connect_through(&other, u, None, self.pcred(u)) {
                Ok(s) => {
                    self.fds.insert(u.ino, s);
                    return Ok(other);
                }
                Err(e) => self.warnings.push(format!(
                    "unix socket {} (socket:[{}]): its name cannot be given back ({e}); restored without it",
                    show_name(&u.name),
                    u.ino
                )),
            }
        }
        if u.name.is_empty() && !u.peer_name.is_empty() {
            // A client whose server end has gone: connect it through a
            // listener with the old peer's name, so getpeername() still
            // names it, and let the accepted end go.
            let client = sock::socket(libc::AF_UNIX, ty).map_err(|e| rerr(u, "socket", e))?;
            let mut stand_in = UnixSocket::new();
            stand_in.type_ = u.type_;
            stand_in.name = u.peer_name.clone();
            let own = self.by_ino.values().any(|l| {
                l.state == diag::TCP_LISTEN as u32 && l.name == u.peer_name && l.type_ == u.type_
            });
            let absolute = !is_path(&u.peer_name) || path_bytes(&u.peer_name).starts_with(b"/");
            if own || absolute {
                let created = is_path(&u.peer_name)
                    && !own
                    && std::fs::symlink_metadata(full_path(&u.peer_name, "")).is_err();
                if let Ok(server) = self.connect_through(&client, &stand_in, self.pcred(u), None) {
                    if created {
                        self.unlink.push(full_path(&u.peer_name, ""));
                    }
                    self.fds.insert(u.ino, client);
                    return Ok(server);
                }
            }
        }
        let (x, y) = (self.cr)
            .socketpair(ty, self.pcred(u))
            .map_err(|e| rerr(u, "socketpair", e))?;
        self.fds.insert(u.ino, x);
        Ok(y)
    }

    /// The datagram socket of the tree bound to `name`.
    fn dgram_named(&self, name: &[u8]) -> Option<u32> {
        self.bound
            .get(name)
            .copied()
            .filter(|i| !name.is_empty() && self.sock(*i).type_ as i32 == libc::SOCK_DGRAM)
    }

    /// A socket to send datagrams with sender name `name` from (a
    /// temporary one when no socket of the tree has that name).
    fn sender_for(&mut self, name: &[u8], temps: &mut HashMap<Vec<u8>, OwnedFd>) -> Result<()> {
        if temps.contains_key(name) || self.dgram_named(name).is_some() {
            return Ok(());
        }
        let t = sock::socket(libc::AF_UNIX, libc::SOCK_DGRAM)
            .map_err(|e| Error::Restore(format!("socket: {e}")))?;
        if !name.is_empty() {
            let taken = |e: &dyn std::fmt::Display| {
                Error::Restore(format!(
                    "datagrams queued from {}: cannot bind a sender with that name to write them again ({e})",
                    show_name(name)
                ))
            };
            if is_path(name) && !path_bytes(name).starts_with(b"/") {
                // A relative name: bound in a private directory (the
                // receiver is shown the same bytes, and no directory of
                // the tree or of cairn is touched).
                bind_relative_private(&t, path_bytes(name)).map_err(|e| taken(&e))?;
                temps.insert(name.to_vec(), t);
                return Ok(());
            }
            // A file left at a path name (a closed sender's) is moved
            // aside while a temporary sender is bound there, then back.
            let parked = match is_path(name) {
                true => Parked::aside(&full_path(name, "")).map_err(|e| taken(&e))?,
                false => None,
            };
            sock::bind_unix(&t, name).map_err(|e| taken(&e))?;
            match parked {
                Some(p) => drop(p),
                None if is_path(name) => {
                    let _ = std::fs::remove_file(full_path(name, ""));
                }
                None => {}
            }
        }
        temps.insert(name.to_vec(), t);
        Ok(())
    }

    /// Refills the queue of datagram socket `r` and connects it.
    fn fill_dgram(
        &mut self,
        r: &'a UnixSocket,
        temps: &mut HashMap<Vec<u8>, OwnedFd>,
    ) -> Result<()> {
        let pair = self
            .mutual(r)
            .filter(|p| p.name.is_empty() && r.name.is_empty());
        if let Some(o) = self.dgram_orphans.get(&r.ino) {
            return send_or_defer(&mut self.later, r, o, &r.queue, false, None);
        }
        if let Some(p) = pair {
            // A socketpair: everything came from the other end.
            let from = self
                .fds
                .get(&p.ino)
                .ok_or_else(|| rerr(p, "socket", "not created"))?;
            return send_or_defer(&mut self.later, r, from, &r.queue, false, None);
        }
        if r.queue.is_empty() {
            return Ok(());
        }
        if r.name.is_empty() {
            return Err(rerr(
                r,
                "refill the queue",
                format!(
                    "{} datagram(s) queued on an unnamed socket whose peer is no longer connected to it cannot be written again",
                    r.queue.len()
                ),
            ));
        }
        let to = send_addr(&r.name, &r.name_dir);
        // Datagrams from the socket `r` is connected to come last, after `r`
        // is connected to it (the kernel only lets its peer send then).
        let peer = self.peer(r);
        let from_peer = |p: &UnixPacket| peer.is_some_and(|x| x.name == p.sender);
        let split = r
            .queue
            .iter()
            .rposition(|p| !from_peer(p))
            .map_or(0, |i| i + 1);
        for p in &r.queue[..split] {
            self.sender_for(&p.sender, temps)?;
            let from = match self.dgram_named(&p.sender) {
                Some(ino) => self
                    .fds
                    .get(&ino)
                    .ok_or_else(|| rerr(r, "socket", "not created"))?,
                None => &temps[&p.sender],
            };
            send_or_defer(
                &mut self.later,
                r,
                from,
                std::slice::from_ref(p),
                false,
                Some(&to),
            )?;
        }
        if split < r.queue.len() {
            let p = peer.expect("split implies a peer");
            self.connect_dgram(r)?;
            let from = self
                .fds
                .get(&p.ino)
                .ok_or_else(|| rerr(p, "socket", "not created"))?;
            send_or_defer(
                &mut self.later,
                r,
                from,
                &r.queue[split..],
                false,
                Some(&to),
            )?;
        }
        Ok(())
    }

    /// Connects datagram socket `u` to its peer, an outside peer, or a peer
    /// that has gone. Idempotent.
    fn connect_dgram(&mut self, u: &'a UnixSocket) -> Result<()> {
        let fd = self.fd(u.ino)?;
        if sock::peer_name(fd).is_ok() {
            return Ok(());
        }
        if let Some(p) = self.peer(u) {
            if self
                .mutual(u)
                .is_some_and(|p| p.name.is_empty() && u.name.is_empty())
            {
                return Ok(()); // socketpair
            }
            let fd = self.fd(u.ino)?;
            return connect_name(fd, &p.name, &p.name_dir).map_err(|e| rerr(u, "connect", e));
        }
        if let Some(x) = u.external.as_ref() {
            match connect_name(fd, &x.name, &x.name_dir) {
                Ok(()) => return Ok(()),
                Err(e) => self.warnings.push(format!(
                    "unix dgram socket socket:[{}]: cannot reconnect to {} outside the tree ({e}); its peer is gone",
                    u.ino,
                    show_name(&x.name)
                )),
            }
        } else if !u.peer_gone {
            return Ok(());
        }
        // Connected to a socket that is closed: connect to a temporary one
        // with the old peer's name, if that name is free, and close it.
        let temp =
            sock::socket(libc::AF_UNIX, libc::SOCK_DGRAM).map_err(|e| rerr(u, "socket", e))?;
        let mut name = u.peer_name.clone();
        let free = !name.is_empty()
            && (!is_path(&name) || std::fs::symlink_metadata(full_path(&name, "")).is_err());
        if !free || sock::bind_unix(&temp, &name).is_err() {
            name = format!("\0cairn-gone-{}-{}", std::process::id(), u.ino).into_bytes();
            sock::bind_unix(&temp, &name).map_err(|e| rerr(u, "bind a stand-in peer", e))?;
        }
        let fd = self.fd(u.ino)?;
        sock::connect_unix(fd, &name).map_err(|e| rerr(u, "connect", e))?;
        if is_path(&name) {
            let _ = std::fs::remove_file(full_path(&name, ""));
        }
        Ok(())
    }
}

/// Rebuilds every unix socket of `files` in cairn and offers each to the
/// vessels through `shared` (they fetch it with pidfd_getfd). The result
/// must stay alive until every fd table is restored.
pub fn restore(files: &Files, shared: &mut SharedFiles) -> Result<UnixRestore> {
    restore_as(files, shared, HashMap::new(), false)
}

/// [`restore`], with the calls that record a socket's peer (socketpair,
/// listen, connect: SO_PEERCRED) made by the task with the saved pid and
/// credentials: `calls` are the processes of the tree (pid -> its main
/// thread), others are helpers made with the pid. `lose_peercred`
/// (--ext-unix-sk-lose-peercred): a socket with an outside peer whose
/// recorded task no call can be made as is made by cairn (warned)
/// instead of failing the restore.
pub fn restore_as<'a>(
    files: &'a Files,
    shared: &mut SharedFiles,
    calls: HashMap<i32, &'a mut (dyn Calls + 'static)>,
    lose_peercred: bool,
) -> Result<UnixRestore> {
    let mut descs: Vec<(u32, &UnixSocket)> = Vec::new();
    for d in &files.descs {
        if let Some(file_desc::Kind::Unix(u)) = &d.kind {
            descs.push((d.id, u));
        }
    }
    if descs.is_empty() {
        return Ok(UnixRestore::default());
    }
    let mut r = Rebuild {
        by_ino: descs.iter().map(|(_, u)| (u.ino, *u)).collect(),
        fds: HashMap::new(),
        unlink: Vec::new(),
        bound: HashMap::new(),
        warnings: Vec::new(),
        later: Vec::new(),
        dgram_orphans: HashMap::new(),
        parked: Vec::new(),
        cr: Creator::new(calls),
        lose_peercred,
    };
    if r.by_ino.len() != descs.len() {
        return Err(Error::Restore(
            "two unix socket descriptions with one inode".into(),
        ));
    }
    r.refuse_lost_creds()?;
    let socks: Vec<&UnixSocket> = r.by_ino.values().copied().collect();
    // 1. Sockets that need no peer to exist: socketpairs and plain ones.
    for &u in &socks {
        if r.fds.contains_key(&u.ino) || (Rebuild::conn(u) && !u.pending) {
            continue;
        }
        let ty = u.type_ as i32;
        match r
            .mutual(u)
            .filter(|p| u.name.is_empty() && p.name.is_empty())
        {
            Some(p) => {
                let (x, y) = (r.cr)
                    .socketpair(ty, r.pcred(u))
                    .map_err(|e| rerr(u, "socketpair", e))?;
                r.fds.insert(u.ino, x);
                r.fds.insert(p.ino, y);
            }
            None if ty == libc::SOCK_DGRAM
                && u.peer_gone
                && u.name.is_empty()
                && u.peer_name.is_empty() =>
            {
                // The end of a socketpair whose other end was closed: its
                // queue came from there, and its peer stays a dead one.
                let (x, y) = (r.cr)
                    .socketpair(ty, r.pcred(u))
                    .map_err(|e| rerr(u, "socketpair", e))?;
                r.fds.insert(u.ino, x);
                r.dgram_orphans.insert(u.ino, y);
            }
            None => {
                let s = sock::socket(libc::AF_UNIX, ty).map_err(|e| rerr(u, "socket", e))?;
                r.fds.insert(u.ino, s);
            }
        }
    }
    // 2. Names, then listen().
    for &u in &socks {
        if r.fds.contains_key(&u.ino) && r.self_bound(u) {
            r.bind(u)?;
        }
    }
    for &u in &socks {
        if u.state == diag::TCP_LISTEN as u32 {
            let fd = (r.fds.get(&u.ino)).ok_or_else(|| rerr(u, "listen", "not created"))?;
            (r.cr)
                .listen(fd, backlog_of(u), r.pcred(u))
                .map_err(|e| rerr(u, "listen", e))?;
        }
    }
    // 3. Connected stream and seqpacket sockets, with their queues.
    let mut orphans: Vec<(u32, OwnedFd)> = Vec::new();
    for &u in &socks {
        if r.fds.contains_key(&u.ino) || !Rebuild::conn(u) || u.pending {
            continue;
        }
        match r.mutual(u) {
            Some(p) => r.make_pair(u, p)?,
            None => {
                if u.external.is_some() {
                    info!(
                        "unix socket socket:[{}]: its peer outside the tree is not reconnected; restored with the peer gone",
                        u.ino
                    );
                }
                let other = r.make_orphan(u)?;
                orphans.push((u.ino, other));
            }
        }
    }
    for &u in &socks {
        if !Rebuild::conn(u) || u.pending || u.queue.is_empty() {
            continue;
        }
        let stream = u.type_ as i32 == libc::SOCK_STREAM;
        let from = match orphans.iter().find(|(i, _)| *i == u.ino) {
            Some((_, o)) => o,
            None => match r.mutual(u) {
                Some(p) => r
                    .fds
                    .get(&p.ino)
                    .ok_or_else(|| rerr(p, "socket", "not created"))?,
                None => continue,
            },
        };
        send_or_defer(&mut r.later, u, from, &u.queue, stream, None)?;
    }
    drop(orphans);
    // 4. Datagram queues, then datagram connections.
    let mut temps = HashMap::new();
    for &u in &socks {
        if u.type_ as i32 == libc::SOCK_DGRAM {
            r.fill_dgram(u, &mut temps)?;
        }
    }
    drop(temps);
    for &u in &socks {
        if u.type_ as i32 == libc::SOCK_DGRAM {
            r.connect_dgram(u)?;
        }
    }
    r.dgram_orphans.clear();
    // 5. Backlogs: the waiting connections again, in their order.
    for &l in &socks {
        if l.state != diag::TCP_LISTEN as u32 {
            continue;
        }
        let stream = l.type_ as i32 == libc::SOCK_STREAM;
        for icon in &l.icons {
            let temp;
            let client = match r.fds.get(&icon.client).filter(|_| icon.client != 0) {
                Some(c) => c,
                None => {
                    temp = sock::socket(libc::AF_UNIX, l.type_ as i32)
                        .map_err(|e| rerr(l, "socket", e))?;
                    &temp
                }
            };
            nonblock(client).map_err(|e| rerr(l, "fcntl", e))?;
            // SO_PEERCRED: the waiting connection shows who connected,
            // the client what the listener recorded (listen() again as
            // that task for the while).
            let lfd = (r.fds.get(&l.ino)).ok_or_else(|| rerr(l, "listen", "not created"))?;
            let ccred = (icon.client != 0)
                .then(|| r.by_ino.get(&icon.client))
                .flatten()
                .and_then(|c| r.pcred(c));
            let icon_cred = r.icon_cred(icon);
            let relisten = ccred.is_some() && ccred != r.pcred(l);
            if relisten {
                (r.cr)
                    .listen(lfd, backlog_of(l), ccred)
                    .map_err(|e| rerr(l, "listen as the client's listener", e))?;
            }
            (r.cr)
                .connect(client, &l.name, &l.name_dir, icon_cred)
                .map_err(|e| rerr(l, "connect a waiting connection again", e))?;
            if relisten {
                (r.cr)
                    .listen(lfd, backlog_of(l), r.pcred(l))
                    .map_err(|e| rerr(l, "listen", e))?;
            }
            send_or_defer(&mut r.later, l, client, &icon.queue, stream, None)?;
        }
    }
    // 6. Shutdown, options, flags.
    let mut shut_later = Vec::new();
    let mut pass_later = Vec::new();
    for &u in &socks {
        let fd = r.fd(u.ino)?;
        let how = match u.shutdown & 3 {
            1 => Some(libc::SHUT_RD),
            2 => Some(libc::SHUT_WR),
            3 => Some(libc::SHUT_RDWR),
            _ => None,
        };
        if let Some(how) = how.filter(|_| u.state != diag::TCP_LISTEN as u32) {
            if !r.later.is_empty() {
                // After the messages planned for later.
                let copy = fd.try_clone().map_err(|e| rerr(u, "dup", e))?;
                shut_later.push((copy, how, u.ino));
            } else if let Err(e) = sock::shutdown(fd, how) {
                if e.raw_os_error() != Some(libc::ENOTCONN) {
                    return Err(rerr(u, "shutdown", e));
                }
            }
        }
        if let Some(o) = u.opts.as_ref().filter(|o| o.passcred || o.passpidfd) {
            if !r.later.is_empty() {
                let copy = fd.try_clone().map_err(|e| rerr(u, "dup", e))?;
                pass_later.push((copy, o.passcred, o.passpidfd));
            }
        }
        if let Some(o) = u.opts.as_ref() {
            let failed = sockopts::restore(fd, o);
            if !failed.is_empty() {
                return Err(rerr(u, "socket options not restored", failed.join(", ")));
            }
            let got = sockopts::dump(fd).map_err(|e| rerr(u, "getsockopt", e))?;
            let d = sockopts::diff(o, &got);
            if !d.is_empty() {
                return Err(rerr(
                    u,
                    "socket options differ after the restore",
                    d.join("; "),
                ));
            }
            if o.peek_off >= 0 {
                sock::set_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, o.peek_off)
                    .map_err(|e| rerr(u, "SO_PEEK_OFF", e))?;
            }
        }
        peercred::verify(fd, r.pcred(u)).map_err(|e| rerr(u, "SO_PEERCRED", e))?;
        let fl = sock::get_fl(fd).map_err(|e| rerr(u, "fcntl", e))?;
        let want = (fl & !libc::O_NONBLOCK) | (u.flags as i32 & libc::O_NONBLOCK);
        sock::set_fl(fd, want).map_err(|e| rerr(u, "fcntl", e))?;
    }
    for p in std::mem::take(&mut r.unlink) {
        let _ = std::fs::remove_file(p);
    }
    // Files that had taken deleted names go back.
    r.parked.clear();
    for w in &r.warnings {
        warn!("{w}");
    }
    let me = crate::sys::task::getpid();
    let mut seen = HashSet::new();
    for (id, u) in &descs {
        let fd = r.fd(u.ino)?;
        seen.insert(u.ino);
        shared.provide(*id, me, fd.as_raw_fd() as u64);
    }
    info!("rebuilt {} unix socket(s)", seen.len());
    Ok(UnixRestore {
        built: true,
        _fds: r.fds.into_values().collect(),
        later: r.later,
        shut_later,
        pass_later,
    })
}

// ------------------------------------------------------------ the kind

/// Unix sockets: rebuilt in cairn before the fd tables
/// (`SharedFiles::prepare`), which the vessels then fetch.
pub struct Unix;

impl FdKind for Unix {
    fn name(&self) -> &'static str {
        "unix socket"
    }

    fn precheck(&self, f: &FdRef) -> Result<bool> {
        Ok(f.socket_ino().is_some() && handles_proto(f.proto()))
    }

    fn describe(&self, f: &FdRef, cx: &mut DumpCx) -> Result<Option<file_desc::Kind>> {
        let Some(ino) = f.socket_ino() else {
            return Ok(None);
        };
        cx.unix.describe(f.pid, f.fd, ino, f.flags())
    }

    fn validate(&self, k: &file_desc::Kind, path: &Path, obj: &str) -> Result<()> {
        let file_desc::Kind::Unix(u) = k else {
            return Err(not_mine(self));
        };
        check_bytes(path, obj, "name", u.name.len(), 108)?;
        check_bytes(path, obj, "peer_name", u.peer_name.len(), 108)?;
        if !u.name_dir.is_empty() {
            check_path(path, obj, "name_dir", &u.name_dir, false)?;
        }
        if ![1, 2, 5].contains(&u.type_) {
            return Err(invalid(
                path,
                obj,
                "type",
                format!("{}: not stream, dgram or seqpacket", u.type_),
            ));
        }
        if u.shutdown > 3 {
            return Err(invalid(path, obj, "shutdown", u.shutdown));
        }
        if ![TCP_ESTABLISHED, TCP_CLOSE, TCP_LISTEN].contains(&u.state) {
            return Err(invalid(
                path,
                obj,
                "state",
                format!("{}: not established, close or listen", u.state),
            ));
        }
        if u.state == TCP_LISTEN && u.type_ == libc::SOCK_DGRAM as u32 {
            return Err(invalid(
                path,
                obj,
                "state",
                "a datagram socket cannot listen",
            ));
        }
        if u.state != TCP_LISTEN && !u.icons.is_empty() {
            return Err(invalid(
                path,
                obj,
                "icons",
                "connections waiting to be accepted, but not a listener",
            ));
        }
        count(path, obj, "queue", u.queue.len(), MAX_ITEMS)?;
        let total: usize = u.queue.iter().map(|p| p.data.len()).sum();
        check_bytes(path, obj, "queue", total, QUEUE_MAX)?;
        for p in &u.queue {
            check_bytes(path, obj, "queue.sender", p.sender.len(), 108)?;
            count(path, obj, "queue.fds", p.fds.len(), sock::SCM_MAX_FD)?;
            if p.fds.contains(&0) {
                return Err(invalid(path, obj, "queue.fds", "description 0"));
            }
        }
        count(path, obj, "icons", u.icons.len(), 1 << 16)?;
        for c in &u.icons {
            count(path, obj, "icons.queue", c.queue.len(), MAX_ITEMS)?;
            if c.queue.iter().any(|p| !p.fds.is_empty()) {
                return Err(invalid(
                    path,
                    obj,
                    "icons.queue.fds",
                    "descriptors in flight in a connection waiting to be accepted",
                ));
            }
        }
        if let Some(x) = u.external.as_ref() {
            check_bytes(path, obj, "external.name", x.name.len(), 108)?;
        }
        Ok(())
    }

    /// The unix sockets together: one description per socket inode, and
    /// a peer that is in the images (the other end, or the listener of a
    /// pending connection) of the same type.
    fn validate_files(&self, f: &Files, path: &Path) -> Result<()> {
        let mut by_ino: HashMap<u32, (u32, &UnixSocket)> = HashMap::new();
        for d in &f.descs {
            if let Some(file_desc::Kind::Unix(u)) = &d.kind {
                if let Some((other, _)) = by_ino.insert(u.ino, (d.id, u)) {
                    return Err(invalid(
                        path,
                        format!("description {}", d.id),
                        "ino",
                        format!(
                            "socket:[{}] is also description {other} (one description per socket)",
                            u.ino
                        ),
                    ));
                }
            }
        }
        let ids: HashSet<u32> = f.descs.iter().map(|d| d.id).collect();
        for (id, u) in by_ino.values() {
            for fid in u.queue.iter().flat_map(|p| &p.fds) {
                if !ids.contains(fid) {
                    return Err(invalid(
                        path,
                        format!("description {id}"),
                        "queue.fds",
                        format!("descriptor in flight {fid} is not a description of files.img"),
                    ));
                }
            }
            if u.peer == 0 {
                continue;
            }
            if let Some((pdesc, p)) = by_ino.get(&u.peer) {
                if p.type_ != u.type_ {
                    return Err(invalid(
                        path,
                        format!("description {id}"),
                        "type",
                        format!(
                            "{}, but its peer socket:[{}] (description {pdesc}) is of type {}",
                            u.type_, p.ino, p.type_
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn prepare(&self, files: &Files, shared: &mut SharedFiles, _shell_job: bool) -> Result<()> {
        if shared.unix.built {
            return Ok(());
        }
        shared.unix = restore(files, shared)?;
        Ok(())
    }

    /// Rebuilt in cairn and offered before any fd table: an fd that gets
    /// here has a description nobody offered.
    fn open(&self, _k: &file_desc::Kind, calls: &mut dyn Calls, cx: &mut RestoreCx) -> Result<u64> {
        Err(cx.cannot(calls.pid()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(show_name(b""), "unnamed");
        assert_eq!(show_name(b"\0abc"), "@abc");
        assert_eq!(show_name(b"/tmp/x\0"), "/tmp/x");
        assert_eq!(full_path(b"x.sock\0", "/run"), PathBuf::from("/run/x.sock"));
        assert_eq!(full_path(b"/a/b\0", "/run"), PathBuf::from("/a/b"));
        assert_eq!(send_addr(b"x\0", "/d"), b"/d/x\0".to_vec());
        assert_eq!(send_addr(b"\0x", "/d"), b"\0x".to_vec());
    }

    #[test]
    fn peek_keeps_the_queue() {
        let (a, b) = sock::socketpair(libc::SOCK_DGRAM).unwrap();
        sock::send_to(&a, b"one", None).unwrap();
        // Longer than one peek's buffer: read in pieces.
        sock::set_int(&a, libc::SOL_SOCKET, libc::SO_SNDBUF, 1 << 20).unwrap();
        sock::send_to(&a, &vec![7u8; 300 * 1024], None).unwrap();
        let (q, files, lost) = peek_queue(&b, libc::SOCK_DGRAM).unwrap();
        assert!(!lost && files.iter().all(|f| f.is_empty()));
        assert_eq!(q.len(), 2);
        assert_eq!(q[0].data, b"one");
        assert_eq!(q[1].data, vec![7u8; 300 * 1024]);
        let (q2, _, _) = peek_queue(&b, libc::SOCK_DGRAM).unwrap();
        assert_eq!(q.len(), q2.len());
        let mut buf = [0u8; 8];
        let r = sock::recv_msg(&b, &mut buf, libc::MSG_DONTWAIT).unwrap();
        assert_eq!(&buf[..r.copied], b"one");
        assert_eq!(
            sock::get_int(&b, libc::SOL_SOCKET, libc::SO_PEEK_OFF).unwrap(),
            -1
        );
    }

    #[test]
    fn stream_peek() {
        let (a, b) = sock::socketpair(libc::SOCK_STREAM).unwrap();
        sock::send_to(&a, b"hello ", None).unwrap();
        sock::send_to(&a, b"world", None).unwrap();
        let (q, _, _) = peek_queue(&b, libc::SOCK_STREAM).unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].data, b"hello world");
        assert_eq!(sock::inq(&b).unwrap(), 11);
    }

    /// A peek of a stream ends after the write that carries descriptors:
    /// the bytes up to it are one packet with them (copies in cairn, the
    /// same open file descriptions), the rest another, and nothing is
    /// consumed.
    #[test]
    fn stream_peek_with_descriptors() {
        let (a, b) = sock::socketpair(libc::SOCK_STREAM).unwrap();
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        sock::send_to(&a, b"abc", None).unwrap();
        sock::send_fds(&a, b"def", &[f.as_raw_fd()], None).unwrap();
        sock::send_to(&a, b"ghi", None).unwrap();
        let (q, files, lost) = peek_queue(&b, libc::SOCK_STREAM).unwrap();
        assert!(!lost);
        // "abc" was written without descriptors: its own packet.
        assert_eq!(q.len(), 3);
        assert_eq!(q[0].data, b"abc");
        assert_eq!(q[1].data, b"def");
        assert_eq!(q[2].data, b"ghi");
        assert!(files[0].is_empty());
        assert_eq!(files[1].len(), 1);
        assert!(files[2].is_empty());
        let me = crate::sys::task::getpid();
        let same = crate::sys::task::kcmp_file(me, files[1][0].as_raw_fd(), me, f.as_raw_fd());
        assert_eq!(same.unwrap(), 0);
        assert_eq!(sock::inq(&b).unwrap(), 9);
        // A datagram with two descriptors.
        let (c, d) = sock::socketpair(libc::SOCK_DGRAM).unwrap();
        sock::send_fds(&c, b"x", &[f.as_raw_fd(), f.as_raw_fd()], None).unwrap();
        let (q, files, _) = peek_queue(&d, libc::SOCK_DGRAM).unwrap();
        assert_eq!((q.len(), files[0].len()), (1, 2));
    }
}
