//! SO_PEERCRED and SO_PEERGROUPS of unix sockets: the pid and credentials
//! of the task whose call made the connection. The kernel records them at
//! `socketpair` (both ends: the caller), `listen` (the listener: the
//! caller), and `connect` (the accepted side: the connecting task; the
//! connecting socket: a copy of what its listener recorded at `listen`).
//!
//! Dump: read from cairn's copy of each socket (`sys::peercred`); a peer
//! pid that is a live process outside the tree is refused before the
//! freeze (nobody can make a call as that process).
//!
//! Restore: each of those calls is made by a task with the recorded pid
//! and effective uid, gid and groups ([`Creator`]): the process of the
//! tree with that pid (injected calls, its ids changed for the call and
//! set back), or a helper created with that pid (clone3 `set_tid`) when
//! it is free (the process that made the connection has exited). The
//! result is checked against the recorded values ([`verify`]).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;

use crate::error::{Error, Result};
use crate::image::proto::UnixPeerCred;
use crate::remote::Calls;
use crate::sys::peercred::{self as pc, Op};
use crate::sys::sockdiag::unix::UnixDiag;

/// The credentials a socket records, None when it records none.
pub(super) fn read(sk: &OwnedFd) -> std::io::Result<Option<UnixPeerCred>> {
    let c = pc::peer_cred(sk)?;
    if c.pid == 0 && c.uid == u32::MAX {
        return Ok(None);
    }
    let mut p = UnixPeerCred::new();
    p.pid = c.pid;
    p.uid = c.uid;
    p.gid = c.gid;
    p.groups = pc::peer_groups(sk)?;
    p.groups.sort_unstable();
    Ok(Some(p))
}

pub(super) fn show(c: Option<&UnixPeerCred>) -> String {
    match c {
        None => "none".into(),
        Some(c) => format!(
            "pid {} uid {} gid {} groups {:?}",
            c.pid, c.uid, c.gid, c.groups
        ),
    }
}

/// Whether process `pid` exists now (a zombie counts: its pid is taken).
fn exists(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether a helper can take pid `pid` for a call: no process has it.
pub(super) fn free(pid: i32) -> bool {
    pid > 0 && !exists(pid)
}

/// Why a restore cannot make a call as pid `pid` (None when it can: a
/// process of the tree `pids`, or a pid no process has).
pub(super) fn unusable(pids: &[i32], pid: i32) -> Option<String> {
    if pid == 0 {
        Some("a process outside cairn's pid namespace".to_string())
    } else if pids.contains(&pid) {
        let zombie = crate::procfs::read_stat(pid).is_ok_and(|s| s.state == 'Z');
        zombie.then(|| format!("pid {pid}, a zombie of the tree"))
    } else if exists(pid) {
        let comm = crate::procfs::read_comm(pid, pid).unwrap_or_default();
        Some(format!(
            "pid {pid} ({}), a live process outside the dumped tree",
            comm.trim()
        ))
    } else {
        None
    }
}

/// SO_PEERCRED of the connections waiting in a backlog, read in place
/// with BPF (`sys::unixq::embryos`), in the order of `clients` (their
/// connecting sockets' inodes): what a dump that
/// does not accept them (--leave-running) saves. Err is the reason it
/// cannot: BPF off or failing, or a connection made by a task a restore
/// cannot make it as (`pids`: the tree). A client outside the tree
/// (`outside`, --ext-unix-sk) is saved whoever made it: the restore
/// decides, and says so when it cannot be exact.
pub(super) fn waiting(
    clients: &[u32],
    outside: impl Fn(u32) -> bool,
    pids: &[i32],
) -> std::result::Result<Vec<Option<UnixPeerCred>>, String> {
    let got = crate::sys::unixq::embryos()
        .map_err(|e| format!("BPF could not read who connected ({e})"))?;
    let mut out = Vec::new();
    for &c in clients {
        let e = got
            .iter()
            .find(|e| e.client_ino == u64::from(c))
            .ok_or_else(|| format!("BPF did not find the connection from socket:[{c}]"))?;
        let Some(cr) = &e.cred else {
            out.push(None);
            continue;
        };
        if cr.groups_truncated {
            return Err(format!(
                "the connection from socket:[{c}] was made by a task with more supplementary groups than cairn reads"
            ));
        }
        if let Some(why) = unusable(pids, e.pid).filter(|_| !outside(c)) {
            return Err(format!(
                "the connection from socket:[{c}] was made by {why} (uid {} gid {}): a restore cannot connect as that process",
                cr.uid, cr.gid
            ));
        }
        let mut p = UnixPeerCred::new();
        p.pid = e.pid;
        p.uid = cr.uid;
        p.gid = cr.gid;
        p.groups = cr.groups.clone();
        p.groups.sort_unstable();
        out.push(Some(p));
    }
    Ok(out)
}

/// Before the freeze: every socket's recorded peer pid must be one a
/// restore can make a call as: a process of the tree (`pids`), not a
/// zombie, or a pid no process has (its process exited). `held`: inode
/// -> (pid, fd) of the tree's unix sockets. A socket whose peer is
/// outside the tree with `ext_ok` (--ext-unix-sk) is restored with its
/// peer gone; a recorded pid that is not free at restore is refused there
/// (warned here).
pub(super) fn precheck(
    pids: &[i32],
    held: &HashMap<u32, (i32, i32)>,
    all: &HashMap<u32, UnixDiag>,
    ext_ok: bool,
) -> Result<()> {
    let mut inos: Vec<&u32> = held.keys().collect();
    inos.sort();
    for &ino in inos {
        let (pid, fd) = held[&ino];
        let peer = all.get(&ino).and_then(|d| d.peer).unwrap_or(0);
        let outside = ext_ok && peer != 0 && !held.contains_key(&peer);
        let Ok(sk) = crate::sys::sock::pidfd_getfd(pid, fd) else {
            continue;
        };
        let c = match read(&sk) {
            Ok(Some(c)) => c,
            Ok(None) => continue,
            Err(e) => {
                return Err(Error::sys(
                    pid,
                    format!("fd {fd} (unix socket socket:[{ino}]): SO_PEERCRED"),
                    e,
                ))
            }
        };
        let why = unusable(pids, c.pid);
        if let (Some(why), true) = (&why, outside) {
            // --ext-unix-sk: the connection comes back with its peer gone;
            // its SO_PEERCRED is exact only if that pid is free then, and
            // the restore refuses it otherwise (`unix::check_restore`).
            crate::warn!(
                "pid {pid} fd {fd}: unix socket socket:[{ino}] (peer outside the tree, --ext-unix-sk) records its connection's peer (SO_PEERCRED: uid {} gid {}) as {why}: a restore refuses it unless that pid is free then, or is given --ext-unix-sk-lose-peercred (the restored socket then names cairn)",
                c.uid, c.gid
            );
            continue;
        }
        if let Some(why) = why {
            return Err(Error::unsupported(
                pid,
                format!(
                    "fd {fd}: unix socket socket:[{ino}] records its connection's peer (SO_PEERCRED: uid {} gid {}) as {why}: a restore cannot make the connection as that process, so the restored socket would name another one; dump the tree that holds it",
                    c.uid, c.gid
                ),
            ));
        }
    }
    Ok(())
}

/// After the rebuild: the socket records what was saved.
pub(super) fn verify(fd: &OwnedFd, want: Option<&UnixPeerCred>) -> std::io::Result<()> {
    let Some(w) = want else { return Ok(()) };
    let got = read(fd)?;
    let same = got.as_ref().is_some_and(|g| {
        g.pid == w.pid && g.uid == w.uid && g.gid == w.gid && {
            let mut a = w.groups.clone();
            a.sort_unstable();
            a == g.groups
        }
    });
    if same {
        return Ok(());
    }
    Err(std::io::Error::other(format!(
        "SO_PEERCRED is {} after the restore, {} at the dump",
        show(got.as_ref()),
        show(Some(w))
    )))
}

/// What a connecting call is made to: a unix name, relative names made
/// absolute with their directory (the name a client gets is its
/// listener's, whatever path it connected through).
fn target(name: &[u8], dir: &str) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let rel = name.first().is_some_and(|&c| c != 0 && c != b'/');
    if rel && !dir.is_empty() {
        let path = name.strip_suffix(b"\0").unwrap_or(name);
        let p = std::path::Path::new(dir).join(std::ffi::OsStr::from_bytes(path));
        let mut v = p.into_os_string().into_vec();
        v.push(0);
        v
    } else {
        name.to_vec()
    }
}

/// Makes the calls that record a peer as tasks with the saved pids and
/// credentials: processes of the tree by injection (`calls`: pid ->
/// their main thread, still root, before their own credentials are
/// restored), others through a helper with that pid. Without recorded
/// credentials (images of older versions) the call is cairn's.
pub struct Creator<'a> {
    pub calls: HashMap<i32, &'a mut (dyn Calls + 'static)>,
    me: i32,
}

impl<'a> Creator<'a> {
    pub fn new(calls: HashMap<i32, &'a mut (dyn Calls + 'static)>) -> Self {
        Creator {
            calls,
            me: crate::sys::task::getpid(),
        }
    }

    /// Whether a call can be made as pid `pid`: a process of the tree,
    /// or a pid no process has (a helper takes it).
    pub fn can_act_as(&self, pid: i32) -> bool {
        self.calls.contains_key(&pid) || free(pid)
    }

    fn run(
        &mut self,
        cred: Option<&UnixPeerCred>,
        op: Op,
    ) -> std::io::Result<Option<(OwnedFd, OwnedFd)>> {
        let Some(c) = cred else {
            return cairns(&op);
        };
        let me = self.me;
        match self.calls.get_mut(&c.pid) {
            Some(calls) => in_vessel(&mut **calls, me, c, &op)
                .map_err(|e| std::io::Error::other(format!("as pid {}: {e}", c.pid))),
            None => pc::run_as(c.pid, c.uid, c.gid, &c.groups, &op).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("as pid {} (uid {} gid {}): {e}", c.pid, c.uid, c.gid),
                )
            }),
        }
    }

    /// socketpair(AF_UNIX, ty) as `cred`.
    pub fn socketpair(
        &mut self,
        ty: i32,
        cred: Option<&UnixPeerCred>,
    ) -> std::io::Result<(OwnedFd, OwnedFd)> {
        self.run(cred, Op::Socketpair(ty))?
            .ok_or_else(|| std::io::Error::other("socketpair gave no descriptors"))
    }

    /// listen(fd, backlog) as `cred`.
    pub fn listen(
        &mut self,
        fd: &OwnedFd,
        backlog: i32,
        cred: Option<&UnixPeerCred>,
    ) -> std::io::Result<()> {
        self.run(cred, Op::Listen(fd.as_raw_fd(), backlog))
            .map(drop)
    }

    /// connect(fd, name) as `cred` (relative names from `dir`).
    pub fn connect(
        &mut self,
        fd: &OwnedFd,
        name: &[u8],
        dir: &str,
        cred: Option<&UnixPeerCred>,
    ) -> std::io::Result<()> {
        if cred.is_none() {
            return super::connect_name(fd, name, dir);
        }
        let t = target(name, dir);
        self.run(cred, Op::Connect(fd.as_raw_fd(), &t)).map(drop)
    }
}

/// The call made by cairn itself.
fn cairns(op: &Op) -> std::io::Result<Option<(OwnedFd, OwnedFd)>> {
    use crate::sys::sock;
    match *op {
        Op::Socketpair(ty) => sock::socketpair(ty).map(Some),
        Op::Listen(fd, backlog) => sock::listen(&Raw(fd), backlog).map(|_| None),
        Op::Connect(fd, name) => sock::connect_unix(&Raw(fd), name).map(|_| None),
    }
}

/// A descriptor the caller holds open, as something `AsRawFd`.
struct Raw(i32);

impl AsRawFd for Raw {
    fn as_raw_fd(&self) -> i32 {
        self.0
    }
}

/// The ids of process `pid`: (effective uid, fs uid, effective gid, fs
/// gid, groups).
fn ids(pid: i32) -> Result<(u32, u32, u32, u32, Vec<u32>)> {
    let s = crate::procfs::read_status(pid)?;
    Ok((s.uid[1], s.uid[3], s.gid[1], s.gid[3], s.groups))
}

/// `op` made by process `calls` of the tree: its effective ids are the
/// recorded ones for the call (file system ids kept, so paths resolve as
/// for cairn), then set back. The sockets are cairn's: the process takes
/// a copy (pidfd_getfd) for the call; a socketpair's ends go to cairn.
fn in_vessel(
    calls: &mut dyn Calls,
    me: i32,
    c: &UnixPeerCred,
    op: &Op,
) -> Result<Option<(OwnedFd, OwnedFd)>> {
    let pid = calls.pid();
    let (euid, fsuid, egid, fsgid, groups) = ids(pid)?;
    let vfd = match *op {
        Op::Listen(fd, _) | Op::Connect(fd, _) => Some(calls.fetch_fd(me, fd as u64)?),
        Op::Socketpair(_) => None,
    };
    calls.setgroups(&c.groups)?;
    calls.setresgid(u32::MAX, c.gid, u32::MAX)?;
    calls.setresuid(u32::MAX, c.uid, u32::MAX)?;
    calls.setfsuid(fsuid)?;
    calls.setfsgid(fsgid)?;
    let r = match *op {
        Op::Socketpair(ty) => calls.put(0, &[0u8; 8]).and_then(|a| {
            calls
                .call(
                    "socketpair",
                    libc::SYS_socketpair,
                    &[libc::AF_UNIX as u64, (ty | libc::SOCK_CLOEXEC) as u64, 0, a],
                )
                .map(|_| a)
        }),
        Op::Listen(_, backlog) => calls.call(
            "listen",
            libc::SYS_listen,
            &[vfd.unwrap_or_default(), backlog as u64],
        ),
        Op::Connect(_, name) => {
            let mut sa = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
            sa.extend_from_slice(name);
            calls.put(0, &sa).and_then(|a| {
                calls.call(
                    "connect",
                    libc::SYS_connect,
                    &[vfd.unwrap_or_default(), a, sa.len() as u64],
                )
            })
        }
    };
    // Back to its own ids, whatever the call gave.
    calls.setresuid(u32::MAX, euid, u32::MAX)?;
    calls.setfsuid(fsuid)?;
    calls.setresgid(u32::MAX, egid, u32::MAX)?;
    calls.setfsgid(fsgid)?;
    calls.setgroups(&groups)?;
    if let Some(v) = vfd {
        calls.close(v)?;
    }
    r?;
    if let Op::Socketpair(_) = op {
        let b = calls.get(0, 8)?;
        let fds = [
            i32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            i32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        ];
        let take = |fd: i32| {
            crate::sys::sock::pidfd_getfd(pid, fd)
                .map_err(|e| Error::sys(pid, format!("pidfd_getfd of fd {fd}"), e))
        };
        let got = (take(fds[0]), take(fds[1]));
        calls.close(fds[0] as u64)?;
        calls.close(fds[1] as u64)?;
        return Ok(Some((got.0?, got.1?)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_targets_become_absolute() {
        assert_eq!(target(b"s.sock\0", "/tmp/d"), b"/tmp/d/s.sock\0".to_vec());
        assert_eq!(target(b"/a/b\0", "/tmp"), b"/a/b\0".to_vec());
        assert_eq!(target(b"\0abs", "/tmp"), b"\0abs".to_vec());
        assert_eq!(target(b"x\0", ""), b"x\0".to_vec());
    }

    #[test]
    fn a_socketpair_records_cairn() {
        let (a, _b) = crate::sys::sock::socketpair(libc::SOCK_STREAM).unwrap();
        let c = read(&a).unwrap().unwrap();
        assert_eq!(c.pid, crate::sys::task::getpid());
        assert!(verify(&a, Some(&c)).is_ok());
        let mut other = c.clone();
        other.pid += 1;
        assert!(verify(&a, Some(&other)).is_err());
    }
}
