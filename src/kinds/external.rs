//! External resources (CRIU's `--external` and `--inherit-fd`): an fd of
//! the tree whose object lives on outside it (the pipe of `job | tee log`,
//! one end of a socket pair a supervisor kept) is recorded by its key
//! instead of being refused, and the restore installs an fd of cairn's
//! that the user hands in for that key.
//!
//! Dump: only the objects the user names with `--external KEY` are
//! external ([`Key`]: `pipe:[INO]`, `socket:[INO]` (a connected unix
//! socket; CRIU's `unix[INO]` too), `file[MNT_ID:INO]` (hex),
//! `tty[RDEV:DEV]` (hex: a terminal's device number and the device of its
//! node, as CRIU writes it; not a controlling terminal)); everything
//! else keeps the checks of its kind. Nothing of the object is saved: its
//! queued bytes stay in it, and the outside holder keeps it. An external
//! object must be one open file description in the tree (one
//! `--inherit-fd` hands in one), and a pipe may have only one of its ends
//! in the tree.
//!
//! Restore: `--inherit-fd fd[N]:KEY` gives cairn's fd N for every fd of
//! the tree recorded with KEY: the vessels fetch it (pidfd_getfd, the same
//! description) at the saved fd numbers with the saved close-on-exec, and
//! the engine sets the saved O_NONBLOCK/O_APPEND/O_ASYNC... on it (the
//! description is shared with cairn's fd N and whoever else holds it).
//! Everything is checked before any process is created
//! ([`check_inherit`]): a key without `--inherit-fd`, an fd N that is not
//! open, of another kind, of another direction, with other flags than only
//! F_SETFL sets, or another object while the tree had bytes queued in the
//! one it had, is an error naming the key, pid and fd.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::error::{Error, Result};
use crate::image::proto::external::ExternalFd;
use crate::image::proto::{file_desc, FdTable, Files};
use crate::image::validate::{bad as invalid, check_open_flags};
use crate::kinds::fd::SETFL_FLAGS;
use crate::kinds::fd::{flag_names, not_mine, DumpCx, FdKind, FdRef, RestoreCx, SharedFiles};
use crate::remote::Calls;
use crate::sys::sockdiag::unix as diag;
use crate::sys::{sock, task};

/// What `--external` and `--inherit-fd` name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// `pipe:[INO]`: a pipe with one end in the tree.
    Pipe(u64),
    /// `socket:[INO]` (or CRIU's `unix[INO]`): the tree's unix socket
    /// whose peer is outside it.
    Socket(u64),
    /// `file[MNT_ID:INO]`, hex as CRIU writes it: an open file.
    File { mnt: u32, ino: u64 },
    /// `tty[RDEV:DEV]`, hex as CRIU writes it: a terminal (its device
    /// number, and the device of the file system its node is on).
    Tty { rdev: u64, dev: u64 },
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Pipe(i) => write!(f, "pipe:[{i}]"),
            Key::Socket(i) => write!(f, "socket:[{i}]"),
            Key::File { mnt, ino } => write!(f, "file[{mnt:x}:{ino:x}]"),
            Key::Tty { rdev, dev } => write!(f, "tty[{rdev:x}:{dev:x}]"),
        }
    }
}

impl Key {
    /// The file type (S_IFMT bits) of the object this key names.
    fn mode(&self) -> u32 {
        match self {
            Key::Pipe(_) => libc::S_IFIFO,
            Key::Socket(_) => libc::S_IFSOCK,
            Key::File { .. } => libc::S_IFREG,
            Key::Tty { .. } => libc::S_IFCHR,
        }
    }

    fn what(&self) -> &'static str {
        match self {
            Key::Pipe(_) => "a pipe",
            Key::Socket(_) => "a unix socket",
            Key::File { .. } => "a regular file",
            Key::Tty { .. } => "a terminal",
        }
    }

    /// The inode the key names (a terminal's key names its device).
    fn ino(&self) -> Option<u64> {
        match *self {
            Key::Pipe(i) | Key::Socket(i) => Some(i),
            Key::File { ino, .. } => Some(ino),
            Key::Tty { .. } => None,
        }
    }
}

/// Parses a key: `pipe:[INO]`, `socket:[INO]`, `unix[INO]` (decimal),
/// `file[MNT_ID:INO]` (hex), `tty[RDEV:DEV]` (hex).
pub fn parse_key(s: &str) -> std::result::Result<Key, String> {
    let inner = |pre: &str| s.strip_prefix(pre).and_then(|r| r.strip_suffix(']'));
    let dec = |v: &str| v.parse::<u64>().ok().filter(|&n| n > 0);
    let hex = |v: &str| u64::from_str_radix(v, 16).ok().filter(|&n| n > 0);
    let key = if let Some(v) = inner("pipe:[") {
        dec(v).map(Key::Pipe)
    } else if let Some(v) = inner("socket:[").or_else(|| inner("unix[")) {
        dec(v).map(Key::Socket)
    } else if let Some(v) = inner("file[") {
        v.split_once(':').and_then(|(m, i)| {
            Some(Key::File {
                mnt: u32::try_from(hex(m)?).ok()?,
                ino: hex(i)?,
            })
        })
    } else if let Some(v) = inner("tty[") {
        v.split_once(':').and_then(|(r, d)| {
            Some(Key::Tty {
                rdev: hex(r)?,
                dev: u64::from_str_radix(d, 16).ok()?,
            })
        })
    } else {
        None
    };
    key.ok_or_else(|| {
        format!(
            "{s:?} is not an external key: pipe:[INO], socket:[INO] (or unix[INO]) with a \
             decimal inode, file[MNT_ID:INO] or tty[RDEV:DEV] in hex"
        )
    })
}

/// `--inherit-fd fd[N]:KEY`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inherit {
    pub fd: i32,
    pub key: Key,
}

impl fmt::Display for Inherit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fd[{}]:{}", self.fd, self.key)
    }
}

/// Parses `fd[N]:KEY`.
pub fn parse_inherit(s: &str) -> std::result::Result<Inherit, String> {
    let (fd, key) = s
        .strip_prefix("fd[")
        .and_then(|r| r.split_once("]:"))
        .ok_or_else(|| format!("{s:?}: expected fd[N]:KEY (e.g. fd[3]:pipe:[12345])"))?;
    let fd = fd
        .parse::<i32>()
        .ok()
        .filter(|&n| n >= 0)
        .ok_or_else(|| format!("{s:?}: {fd:?} is not an fd number"))?;
    Ok(Inherit {
        fd,
        key: parse_key(key)?,
    })
}

/// The key of fd `f` if it can be external.
fn key_of(f: &FdRef) -> Option<Key> {
    match f.anon() {
        Some(("pipe", i)) => Some(Key::Pipe(i)),
        Some(("socket", i)) => Some(Key::Socket(i)),
        Some(_) => None,
        None if f.target.starts_with('/') => {
            if let Some(md) = f.metadata().ok().filter(|m| m.file_type().is_char_device()) {
                return Some(Key::Tty {
                    rdev: md.rdev(),
                    dev: md.dev(),
                });
            }
            let info = f.info().ok()?;
            // fdinfo has shown the inode only since 5.14 (0 before): stat
            // gives the same st_ino through the fd's link.
            let ino = match info.ino {
                0 => f.metadata().ok()?.ino(),
                ino => ino,
            };
            Some(Key::File {
                mnt: info.mnt_id,
                ino,
            })
        }
        None => None,
    }
}

/// The inodes of the pipes named external (their kind's checks skip them).
pub fn pipe_inos(keys: &[Key]) -> HashSet<u64> {
    (keys.iter())
        .filter_map(|k| match k {
            Key::Pipe(i) => Some(*i),
            _ => None,
        })
        .collect()
}

/// The terminals named external: (device number, device of the node).
pub fn tty_keys(keys: &[Key]) -> HashSet<(u64, u64)> {
    (keys.iter())
        .filter_map(|k| match k {
            Key::Tty { rdev, dev } => Some((*rdev, *dev)),
            _ => None,
        })
        .collect()
}

/// The inodes of the unix sockets named external.
pub fn socket_inos(keys: &[Key]) -> HashSet<u64> {
    (keys.iter())
        .filter_map(|k| match k {
            Key::Socket(i) => Some(*i),
            _ => None,
        })
        .collect()
}

/// What the dump keeps: the keys named and where each was found.
#[derive(Default)]
pub struct ExternalDump {
    keys: Vec<Key>,
    /// key -> (pid, fd) of its description.
    seen: BTreeMap<Key, (i32, i32)>,
}

impl ExternalDump {
    pub fn new(keys: &[Key]) -> Self {
        ExternalDump {
            keys: keys.to_vec(),
            seen: BTreeMap::new(),
        }
    }

    /// Once every fd table is read: every key named was found.
    pub fn check_found(&self) -> Result<()> {
        match self.keys.iter().find(|k| !self.seen.contains_key(k)) {
            None => Ok(()),
            Some(k) => Err(Error::Usage(format!(
                "--external {k}: no fd of the frozen tree refers to it"
            ))),
        }
    }
}

/// Before freezing: every key names an fd of the tree `pids` that can be
/// external: an external pipe has only one end in the tree (one fd N at
/// restore cannot give both), an external socket is a connected unix
/// socket whose peer is not in the tree.
pub fn precheck_tree(pids: &[i32], keys: &[Key]) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    // key -> (pid, fd) of every fd of the tree with that key.
    let mut holders: HashMap<Key, Vec<(i32, i32)>> = HashMap::new();
    let mut sockets: HashMap<u64, (i32, i32)> = HashMap::new();
    for &pid in pids {
        let Ok(fds) = crate::procfs::read_fds(pid) else {
            continue;
        };
        for (fd, target) in fds {
            let info = crate::procfs::read_fdinfo(pid, fd).ok();
            let f = FdRef::new(pid, fd, &target, info.as_ref());
            let Some(k) = key_of(&f) else { continue };
            if let Key::Socket(i) = k {
                sockets.entry(i).or_insert((pid, fd));
            }
            if keys.contains(&k) {
                holders.entry(k).or_default().push((pid, fd));
            }
        }
    }
    for k in keys {
        let Some(h) = holders.get(k) else {
            return Err(Error::Usage(format!(
                "--external {k}: no fd of the tree of pid {} refers to it",
                pids.first().copied().unwrap_or(0)
            )));
        };
        match *k {
            Key::Pipe(ino) => {
                let (mut r, mut w) = (None, None);
                for &(pid, fd) in h {
                    let copy = sock::pidfd_getfd(pid, fd)
                        .map_err(|e| Error::sys(pid, format!("pidfd_getfd of fd {fd}"), e))?;
                    let acc = sock::get_fl(&copy)
                        .map_err(|e| Error::sys(pid, format!("fd {fd}: F_GETFL"), e))?
                        & libc::O_ACCMODE;
                    if acc == libc::O_WRONLY {
                        w.get_or_insert((pid, fd));
                    } else {
                        r.get_or_insert((pid, fd));
                    }
                }
                if let (Some((rp, rf)), Some((wp, wf))) = (r, w) {
                    return Err(Error::unsupported(
                        rp,
                        format!(
                            "fd {rf} is the read end of pipe:[{ino}] and fd {wf} of pid {wp} its \
                             write end: the tree holds both ends, so --external pipe:[{ino}] \
                             cannot be handed in by one --inherit-fd (dump without it)"
                        ),
                    ));
                }
            }
            Key::Socket(ino) => {
                let (pid, fd) = h[0];
                let d = diag::by_ino(ino as u32).map_err(|e| {
                    Error::sys(
                        pid,
                        format!(
                            "fd {fd}: socket:[{ino}] is not a unix socket cairn sees (sock_diag)"
                        ),
                        e,
                    )
                })?;
                if let Some(&(p2, f2)) = d.peer.and_then(|p| sockets.get(&(p as u64))) {
                    return Err(Error::unsupported(
                        pid,
                        format!(
                            "fd {fd} (socket:[{ino}]) is connected to fd {f2} of pid {p2}, inside \
                             the tree: it is not external (dump without --external {k})"
                        ),
                    ));
                }
            }
            Key::File { .. } => {}
            Key::Tty { rdev, .. } => {
                let (pid, fd) = h[0];
                if !crate::kinds::tty::is_tty(rdev) {
                    return Err(Error::unsupported(
                        pid,
                        format!("fd {fd} ({k}) is a character device that is not a terminal: only a terminal can be an external tty"),
                    ));
                }
                // A restore cannot make an inherited terminal a session's
                // controlling terminal again: refused, not lost.
                for &p in pids {
                    let Ok(st) = crate::procfs::read_stat(p) else {
                        continue;
                    };
                    let ctty =
                        libc::makedev(libc::major(st.tty_nr as u64), libc::minor(st.tty_nr as u64));
                    if st.tty_nr != 0 && ctty == rdev {
                        return Err(Error::unsupported(
                            p,
                            format!(
                                "{k} (fd {fd} of pid {pid}) is the controlling terminal of this process: an external terminal comes back as an fd only, not as a controlling terminal (dump the job with --shell-job instead)"
                            ),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The kind of external fds.
pub struct External;

impl FdKind for External {
    fn name(&self) -> &'static str {
        "external"
    }

    /// The fd's own kind claims it before the freeze (pipe, unix socket,
    /// file); only the dump, which knows the keys, makes it external.
    fn precheck(&self, _f: &FdRef) -> Result<bool> {
        Ok(false)
    }

    fn describe(&self, f: &FdRef, cx: &mut DumpCx) -> Result<Option<file_desc::Kind>> {
        if cx.external.keys.is_empty() {
            return Ok(None);
        }
        let Some(key) = key_of(f).filter(|k| cx.external.keys.contains(k)) else {
            return Ok(None);
        };
        if let Some(&(p, fd)) = cx.external.seen.get(&key) {
            return Err(Error::unsupported(
                f.pid,
                format!(
                    "fd {} and fd {fd} of pid {p} are two open file descriptions of the external \
                     {key}: an external object must be one description in the tree (one \
                     --inherit-fd hands in one)",
                    f.fd
                ),
            ));
        }
        let (pid, fd) = (f.pid, f.fd);
        let sys =
            |what: &str, e: std::io::Error| Error::sys(pid, format!("fd {fd} ({key}): {what}"), e);
        let copy = sock::pidfd_getfd(pid, fd).map_err(|e| sys("pidfd_getfd", e))?;
        let md = f.metadata()?;
        let mut x = ExternalFd::new();
        x.key = key.to_string();
        x.flags = f.flags();
        x.mode = md.mode() & libc::S_IFMT;
        x.ino = key.ino().unwrap_or(md.ino());
        if x.mode != key.mode() {
            return Err(Error::unsupported(
                pid,
                format!(
                    "fd {fd} ({}) is not {}, which --external {key} can name",
                    f.target,
                    key.what()
                ),
            ));
        }
        let reads = x.flags as i32 & libc::O_ACCMODE != libc::O_WRONLY;
        match key {
            Key::Pipe(_) => {
                if reads {
                    x.queued = task::pipe_queued(&copy).map_err(|e| sys("FIONREAD", e))? as u64;
                }
            }
            Key::Socket(ino) => {
                if !crate::kinds::unix::handles_proto(f.proto()) {
                    return Err(Error::unsupported(
                        pid,
                        format!(
                            "fd {fd} is a {} socket ({key}): only unix sockets can be external",
                            f.proto()
                        ),
                    ));
                }
                let d = diag::by_ino(ino as u32).map_err(|e| sys("sock_diag", e))?;
                let ty = sock::get_int(&copy, libc::SOL_SOCKET, libc::SO_TYPE)
                    .map_err(|e| sys("SO_TYPE", e))?;
                let connected = d.peer.is_some_and(|p| p != 0)
                    && (ty == libc::SOCK_DGRAM || d.state == diag::TCP_ESTABLISHED);
                if !connected {
                    return Err(Error::unsupported(
                        pid,
                        format!(
                            "fd {fd} ({key}) is a unix socket that is not connected to a peer: \
                             only a connected socket whose peer is outside the tree can be external"
                        ),
                    ));
                }
                x.sock_type = ty as u32;
                x.queued = sock::inq(&copy).map_err(|e| sys("SIOCINQ", e))? as u64;
            }
            Key::File { .. } => x.pos = f.pos(),
            Key::Tty { .. } => {
                if reads {
                    // Input typed and not read yet: it stays in the terminal.
                    x.queued = task::pipe_queued(&copy).map_err(|e| sys("FIONREAD", e))? as u64;
                }
            }
        }
        drop(copy);
        cx.external.seen.insert(key, (pid, fd));
        Ok(Some(file_desc::Kind::External(x)))
    }

    fn validate(&self, k: &file_desc::Kind, path: &Path, obj: &str) -> Result<()> {
        let file_desc::Kind::External(x) = k else {
            return Err(not_mine(self));
        };
        let key = parse_key(&x.key).map_err(|e| invalid(path, obj, "key", e))?;
        if x.mode != key.mode() {
            return Err(invalid(
                path,
                obj,
                "mode",
                format!("{:#o} for {key}", x.mode),
            ));
        }
        if key.ino().is_some_and(|i| i != x.ino) {
            return Err(invalid(path, obj, "ino", format!("{} for {key}", x.ino)));
        }
        let types = [libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET];
        if matches!(key, Key::Socket(_)) != types.contains(&(x.sock_type as i32)) {
            return Err(invalid(
                path,
                obj,
                "sock_type",
                format!("{} for {key}", x.sock_type),
            ));
        }
        check_open_flags(path, obj, x.flags)
    }

    /// Never called for a description an --inherit-fd hands in
    /// ([`provide`]); [`check_inherit`] refused the restore otherwise.
    fn open(&self, k: &file_desc::Kind, calls: &mut dyn Calls, cx: &mut RestoreCx) -> Result<u64> {
        let file_desc::Kind::External(x) = k else {
            return Err(not_mine(self));
        };
        Err(Error::Restore(format!(
            "pid {}: fd {} is the external {}, which no --inherit-fd hands in",
            calls.pid(),
            cx.fd,
            x.key
        )))
    }

    /// The description is not made but inherited: nothing open sets is
    /// lost at dump ([`check_inherit`] compares them with fd N's).
    fn open_flags(&self) -> u32 {
        u32::MAX
    }
}

/// The external descriptions of `files`, with their keys.
fn externals(files: &Files) -> Vec<(u32, &ExternalFd, Option<Key>)> {
    (files.descs.iter())
        .filter_map(|d| match &d.kind {
            Some(file_desc::Kind::External(x)) => Some((d.id, x, parse_key(&x.key).ok())),
            _ => None,
        })
        .collect()
}

/// Before any process is created: every external description of the
/// images has an `--inherit-fd`, and each `--inherit-fd` gives an open fd
/// of cairn of the kind, direction and flags its key had (see the module
/// doc). `tables` are the fd tables of the tree.
pub fn check_inherit<'a>(
    files: &Files,
    tables: impl IntoIterator<Item = &'a FdTable>,
    inherit: &[Inherit],
) -> Result<()> {
    let ext = externals(files);
    let mut users: HashMap<u32, (i32, u32)> = HashMap::new();
    for t in tables {
        for f in &t.fds {
            users.entry(f.desc_id).or_insert((t.pid as i32, f.fd));
        }
    }
    let mut given = HashSet::new();
    for i in inherit {
        if !given.insert(i.key) {
            return Err(Error::Usage(format!(
                "--inherit-fd: {} is handed in twice",
                i.key
            )));
        }
        if !ext.iter().any(|(_, _, k)| *k == Some(i.key)) {
            return Err(Error::Usage(format!(
                "--inherit-fd {i}: no fd of the checkpointed tree was dumped as the external {} \
                 (cairn show lists them as `external`)",
                i.key
            )));
        }
    }
    for (id, x, key) in &ext {
        let Some((pid, fd)) = users.get(id).copied() else {
            continue; // no fd of the tree uses it (a mapping only): nothing to install
        };
        let Some(key) = key else {
            return Err(Error::Restore(format!(
                "pid {pid}: fd {fd}: bad external key {:?}",
                x.key
            )));
        };
        let Some(i) = inherit.iter().find(|i| i.key == *key) else {
            return Err(Error::Restore(format!(
                "pid {pid}: fd {fd} was dumped as the external {key} (--external), and no \
                 --inherit-fd fd[N]:{key} hands it in; nothing was restored"
            )));
        };
        check_given(i, x, pid, fd)?;
    }
    Ok(())
}

/// The access mode of file status flags `fl`, by name.
fn acc_name(fl: u32) -> &'static str {
    match fl as i32 & libc::O_ACCMODE {
        libc::O_RDONLY => "O_RDONLY",
        libc::O_WRONLY => "O_WRONLY",
        _ => "O_RDWR",
    }
}

/// Checks fd `i.fd` of cairn against the external description `x` that
/// fd `fd` of `pid` had.
fn check_given(i: &Inherit, x: &ExternalFd, pid: i32, fd: u32) -> Result<()> {
    let n = i.fd;
    let err = |why: String| {
        Error::Usage(format!(
            "--inherit-fd {i}: {why} (the tree's fd {fd} of pid {pid} was {} {})",
            i.key.what(),
            acc_name(x.flags)
        ))
    };
    let link = format!("/proc/self/fd/{n}");
    let target = match std::fs::read_link(&link) {
        Ok(t) => t.to_string_lossy().into_owned(),
        Err(_) => return Err(err(format!("fd {n} is not open in cairn"))),
    };
    let copy: OwnedFd = sock::pidfd_getfd(task::getpid(), n)
        .map_err(|e| err(format!("fd {n}: pidfd_getfd: {e}")))?;
    let md = std::fs::File::from(copy.try_clone().map_err(|e| Error::io(&link, e))?)
        .metadata()
        .map_err(|e| Error::io(&link, e))?;
    if md.mode() & libc::S_IFMT != i.key.mode() {
        return Err(err(format!("fd {n} is {target}, not {}", i.key.what())));
    }
    if let Key::Tty { .. } = i.key {
        if crate::sys::tty::get_termios(&copy).is_err() {
            return Err(err(format!("fd {n} is {target}, not a terminal")));
        }
    }
    if let Key::Socket(_) = i.key {
        let proto = sock::proto_name(&link).unwrap_or_default();
        let ty = sock::get_int(&copy, libc::SOL_SOCKET, libc::SO_TYPE).unwrap_or(-1);
        if !crate::kinds::unix::handles_proto(&proto) || ty as u32 != x.sock_type {
            return Err(err(format!(
                "fd {n} is a {proto} socket of type {ty}, not a unix socket of type {}",
                x.sock_type
            )));
        }
    }
    let got = sock::get_fl(&copy).map_err(|e| err(format!("fd {n}: F_GETFL: {e}")))? as u32
        & !(libc::O_CLOEXEC as u32);
    let acc = libc::O_ACCMODE as u32;
    if got & acc != x.flags & acc {
        return Err(err(format!(
            "fd {n} is open {}, the other direction",
            acc_name(got)
        )));
    }
    let fixed = (got ^ x.flags) & !(SETFL_FLAGS | acc);
    if fixed != 0 {
        return Err(err(format!(
            "fd {n} has file status flags {}, and {} differ(s) from the dump and cannot be changed with F_SETFL",
            flag_names(got),
            flag_names(fixed)
        )));
    }
    if x.queued > 0 && md.ino() != x.ino {
        return Err(err(format!(
            "fd {n} is another object ({target}): the tree had {} bytes queued to read in {} at \
             the dump, which are still there and would be lost; hand in that object",
            x.queued, i.key
        )));
    }
    Ok(())
}

/// Restore, before any fd table: offers cairn's fd of every
/// `--inherit-fd` as the description of its key (a file's position is set
/// to the saved one first: the description is the tree's from now on).
pub fn provide(files: &Files, inherit: &[Inherit], shared: &mut SharedFiles) -> Result<()> {
    let me = task::getpid();
    for (id, x, key) in externals(files) {
        let Some(i) = inherit.iter().find(|i| Some(i.key) == key) else {
            continue;
        };
        if let Some(Key::File { .. }) = key {
            let copy = sock::pidfd_getfd(me, i.fd)
                .map_err(|e| Error::sys(me, format!("--inherit-fd {i}: pidfd_getfd"), e))?;
            rustix::fs::seek(&copy, rustix::fs::SeekFrom::Start(x.pos))
                .map_err(|e| Error::sys(me, format!("--inherit-fd {i}: lseek to {}", x.pos), e))?;
        }
        shared.provide(id, me, i.fd as u64);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_and_print_as_criu_writes_them() {
        assert_eq!(parse_key("pipe:[1234]"), Ok(Key::Pipe(1234)));
        assert_eq!(parse_key("socket:[77]"), Ok(Key::Socket(77)));
        assert_eq!(parse_key("unix[77]"), Ok(Key::Socket(77)));
        let f = parse_key("file[2a:ff]").unwrap();
        assert_eq!(
            f,
            Key::File {
                mnt: 0x2a,
                ino: 0xff
            }
        );
        assert_eq!(f.to_string(), "file[2a:ff]");
        assert_eq!(Key::Socket(77).to_string(), "socket:[77]");
        let t = parse_key("tty[8802:19]").unwrap();
        assert_eq!(
            t,
            Key::Tty {
                rdev: 0x8802,
                dev: 0x19
            }
        );
        assert_eq!(t.to_string(), "tty[8802:19]");
        for bad in [
            "pipe:[]", "pipe:[x]", "pipe:[0]", "pipe:1", "tty[1]", "tty[0:2]", "file[1]", "",
        ] {
            assert!(parse_key(bad).is_err(), "{bad}");
        }
        let i = parse_inherit("fd[5]:pipe:[99]").unwrap();
        assert_eq!((i.fd, i.key), (5, Key::Pipe(99)));
        assert_eq!(i.to_string(), "fd[5]:pipe:[99]");
        for bad in [
            "fd[-1]:pipe:[9]",
            "fd[a]:pipe:[9]",
            "5:pipe:[9]",
            "fd[5]pipe:[9]",
        ] {
            assert!(parse_inherit(bad).is_err(), "{bad}");
        }
    }

    /// A kernel before 5.14 shows no "ino:" in fdinfo: the key of a file
    /// takes the inode from stat, as CRIU and the user (`stat -c %i`) do.
    #[test]
    fn a_file_key_without_ino_in_fdinfo() {
        use std::os::fd::AsRawFd;
        let dir = std::env::temp_dir().join(format!("cairn-extkey-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("f");
        let file = std::fs::File::create_new(&path).unwrap();
        let ino = file.metadata().unwrap().ino();
        let target = path.to_string_lossy().into_owned();
        let pid = task::getpid();
        for shown in [0, ino] {
            let info = crate::procfs::FdInfo {
                mnt_id: 0x2a,
                ino: shown,
                ..Default::default()
            };
            let f = FdRef::new(pid, file.as_raw_fd(), &target, Some(&info));
            assert_eq!(key_of(&f), Some(Key::File { mnt: 0x2a, ino }), "{shown}");
        }
        drop(file);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_image_description_is_an_error() {
        let p = Path::new("files.img");
        let mut x = ExternalFd::new();
        x.key = "pipe:[5]".into();
        x.mode = libc::S_IFIFO;
        x.ino = 5;
        x.flags = libc::O_WRONLY as u32;
        let ok = file_desc::Kind::External(x.clone());
        External.validate(&ok, p, "description 1").unwrap();
        for (field, change) in [
            (
                "key",
                Box::new(|x: &mut ExternalFd| x.key = "pipe:[".into())
                    as Box<dyn Fn(&mut ExternalFd)>,
            ),
            (
                "mode",
                Box::new(|x: &mut ExternalFd| x.mode = libc::S_IFSOCK),
            ),
            ("ino", Box::new(|x: &mut ExternalFd| x.ino = 6)),
            ("sock_type", Box::new(|x: &mut ExternalFd| x.sock_type = 1)),
            (
                "flags",
                Box::new(|x: &mut ExternalFd| x.flags |= libc::O_CREAT as u32),
            ),
        ] {
            let mut y = x.clone();
            change(&mut y);
            let e = External
                .validate(&file_desc::Kind::External(y), p, "description 1")
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
    }

    #[test]
    fn a_missing_inherit_fd_names_key_pid_and_fd() {
        let mut files = Files::new();
        let mut d = crate::image::proto::FileDesc::new();
        d.id = 3;
        let mut x = ExternalFd::new();
        x.key = "pipe:[42]".into();
        d.kind = Some(file_desc::Kind::External(x));
        files.descs.push(d);
        let mut t = FdTable::new();
        t.pid = 700;
        let mut f = crate::image::proto::Fd::new();
        f.fd = 5;
        f.desc_id = 3;
        t.fds.push(f);
        let e = check_inherit(&files, [&t], &[]).unwrap_err().to_string();
        assert!(
            e.contains("pid 700: fd 5") && e.contains("pipe:[42]"),
            "{e}"
        );
        // An --inherit-fd for a key the images do not have.
        let i = parse_inherit("fd[0]:pipe:[43]").unwrap();
        let e = check_inherit(&files, [&t], &[i]).unwrap_err().to_string();
        assert!(e.contains("pipe:[43]"), "{e}");
    }
}
