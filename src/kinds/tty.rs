//! Terminals: pseudo-terminal pairs the tree owns (master and slave), and
//! the terminal of the shell a job was started from (`--shell-job`).
//!
//! Dump: a pty pair is recorded once (`PtyPair`: termios of both ends,
//! window size, lock, packet and exclusive modes, the bytes queued each
//! way, the session it is the controlling terminal of); every fd on it is
//! a `TtyFile` naming the pair by its index. The queued bytes can only be
//! read by reading them, so they are read through copies of the tree's
//! descriptors and written straight back (echo, signals and output
//! processing switched off meanwhile), while the tree is frozen. A
//! terminal whose master is outside the tree is the shell's terminal; it
//! needs `--shell-job` and is recorded as `ShellTty` (path, termios, window
//! size, whether the job was in the foreground).
//!
//! Restore: pty pairs are created in cairn with their index (/dev/ptmx is
//! opened until devpts gives it, as CRIU does; a /dev/pts/N taken by
//! another process fails the restore in its preflight), the queued bytes
//! written back, then the saved modes set; the vessels fetch
//! the descriptors with pidfd_getfd. A session leader gets its pty back as
//! controlling terminal (TIOCSCTTY) with its foreground group. With
//! `--shell-job`, fds on the shell's terminal open the restoring cairn's
//! controlling terminal instead, which gets the saved termios (not the
//! window size: the new terminal has its own), and the job becomes its
//! foreground group if it was at dump time.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::image::proto::{
    file_desc, Files, PtyPair, ShellTty, Termios, TtyFile, TtyKind, Winsize,
};
use crate::image::validate::{
    bad as invalid, check_bytes, check_open_flags, check_path, check_pid, count, QUEUE_MAX,
};
use crate::kinds::fd::{not_mine, DumpCx, FdKind, FdRef, RestoreCx, SharedFiles};
use crate::remote::Calls;
use crate::sys::{sock, tty};
use crate::{info, warn};
use std::path::Path;

/// Most bytes saved per direction of a pty.
const MAX_QUEUED: usize = 1 << 20;

/// What a character device is, as far as terminals go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// /dev/ptmx.
    PtyMaster,
    /// /dev/pts/N.
    PtySlave(u32),
    /// /dev/tty: the caller's controlling terminal.
    DevTty,
    /// Another terminal (virtual console, serial line, /dev/console).
    Other,
}

/// One line of /proc/tty/drivers: (major, minor range, type).
type Driver = (u32, (u32, u32), String);

/// Parses /proc/tty/drivers ("name  /dev/node  major  minor[-minor]  type").
pub fn parse_drivers(text: &str) -> Vec<Driver> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let major = f.get(2)?.parse().ok()?;
            let r = f.get(3)?;
            let (lo, hi) = match r.split_once('-') {
                Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
                None => (r.parse().ok()?, r.parse().ok()?),
            };
            Some((major, (lo, hi), f.get(4)?.to_string()))
        })
        .collect()
}

fn drivers() -> &'static [Driver] {
    static D: OnceLock<Vec<Driver>> = OnceLock::new();
    D.get_or_init(|| {
        std::fs::read_to_string("/proc/tty/drivers")
            .map(|t| parse_drivers(&t))
            .unwrap_or_default()
    })
}

/// Classifies a character device by its number (user encoding).
pub fn classify_in(drivers: &[Driver], rdev: u64) -> Option<Class> {
    let (ma, mi) = (libc::major(rdev), libc::minor(rdev));
    let d = drivers
        .iter()
        .find(|(m, (lo, hi), _)| *m == ma && (*lo..=*hi).contains(&mi))?;
    Some(match d.2.as_str() {
        "pty:slave" => Class::PtySlave(mi),
        "pty:master" => Class::Other, // BSD ptys: not supported as ptys
        "system:/dev/tty" => Class::DevTty,
        "system" if (ma, mi) == (5, 2) => Class::PtyMaster,
        _ => Class::Other,
    })
}

pub fn classify(rdev: u64) -> Option<Class> {
    classify_in(drivers(), rdev)
}

fn slave_path(index: u32) -> String {
    format!("/dev/pts/{index}")
}

fn termios_to(t: &libc::termios) -> Termios {
    let mut p = Termios::new();
    p.iflag = t.c_iflag;
    p.oflag = t.c_oflag;
    p.cflag = t.c_cflag;
    p.lflag = t.c_lflag;
    p.line = t.c_line as u32;
    p.cc = t.c_cc.to_vec();
    p.ispeed = t.c_ispeed;
    p.ospeed = t.c_ospeed;
    p
}

fn termios_from(p: &Termios, base: &libc::termios) -> libc::termios {
    let mut t = *base;
    t.c_iflag = p.iflag;
    t.c_oflag = p.oflag;
    t.c_cflag = p.cflag;
    t.c_lflag = p.lflag;
    t.c_line = p.line as u8;
    for (d, s) in t.c_cc.iter_mut().zip(&p.cc) {
        *d = *s;
    }
    t.c_ispeed = p.ispeed;
    t.c_ospeed = p.ospeed;
    t
}

fn winsize_to(w: [u16; 4]) -> Winsize {
    let mut p = Winsize::new();
    (p.rows, p.cols, p.xpixel, p.ypixel) = (w[0] as u32, w[1] as u32, w[2] as u32, w[3] as u32);
    p
}

fn winsize_from(p: &Winsize) -> [u16; 4] {
    [
        p.rows as u16,
        p.cols as u16,
        p.xpixel as u16,
        p.ypixel as u16,
    ]
}

/// The terminal device behind fd `fd` of `pid`, if it is one: its class
/// and number. /dev/tty is resolved to the terminal it stands for.
fn tty_of(pid: i32, fd: i32) -> Result<Option<(Class, u64)>> {
    let link = format!("/proc/{pid}/fd/{fd}");
    let Ok(md) = std::fs::metadata(&link) else {
        return Ok(None);
    };
    if !md.file_type().is_char_device() {
        return Ok(None);
    }
    match classify(md.rdev()) {
        None => Ok(None),
        Some(Class::DevTty) => {
            let c = sock::pidfd_getfd(pid, fd)
                .map_err(|e| Error::sys(pid, format!("pidfd_getfd of fd {fd}"), e))?;
            let dev = tty::device(&c)
                .map_err(|e| Error::sys(pid, format!("fd {fd} (/dev/tty): TIOCGDEV"), e))?;
            Ok(Some((classify(dev).unwrap_or(Class::Other), dev)))
        }
        Some(c) => Ok(Some((c, md.rdev()))),
    }
}

/// Whether `rdev` is a terminal device cairn handles here.
pub fn is_tty(rdev: u64) -> bool {
    classify(rdev).is_some()
}

/// Before freezing: the terminals of the tree `pids`. A pty slave whose
/// master is not in the tree, and any other terminal, is the shell's
/// terminal and needs `shell_job`; there can be only one such terminal,
/// and no process of the tree may lead its session. Terminals named with
/// `--external tty[RDEV:DEV]` (`external`: (device, device of the node))
/// are left out: the restore is handed them.
pub fn precheck_tree(
    pids: &[i32],
    shell_job: bool,
    external: &std::collections::HashSet<(u64, u64)>,
) -> Result<()> {
    let mut masters = Vec::new();
    let mut others: Vec<(i32, i32, Class, u64, String)> = Vec::new();
    for &pid in pids {
        let Ok(fds) = crate::procfs::read_fds(pid) else {
            continue;
        };
        for (fd, target) in fds {
            if !external.is_empty() {
                let node = std::fs::metadata(format!("/proc/{pid}/fd/{fd}"));
                if node.is_ok_and(|m| external.contains(&(m.rdev(), m.dev()))) {
                    continue;
                }
            }
            match tty_of(pid, fd)? {
                Some((Class::PtyMaster, _)) => {
                    let c = sock::pidfd_getfd(pid, fd)
                        .map_err(|e| Error::sys(pid, format!("pidfd_getfd of fd {fd}"), e))?;
                    masters.push(
                        tty::pty_index(&c)
                            .map_err(|e| Error::sys(pid, format!("fd {fd}: TIOCGPTN"), e))?,
                    );
                }
                Some((c, dev)) => others.push((pid, fd, c, dev, target)),
                None => {}
            }
        }
    }
    if shell_job {
        precheck_groups(pids)?;
    }
    let mut shell: Option<(u64, String)> = None;
    for (pid, fd, c, dev, target) in others {
        if matches!(c, Class::PtySlave(i) if masters.contains(&i)) {
            continue;
        }
        if !shell_job {
            let key = std::fs::metadata(format!("/proc/{pid}/fd/{fd}"))
                .map(|m| format!(", or name it --external tty[{:x}:{:x}] to hand it in at restore (--inherit-fd)", m.rdev(), m.dev()))
                .unwrap_or_default();
            return Err(Error::unsupported(
                pid,
                format!(
                    "fd {fd} is the terminal {target}, which belongs to a session outside the dumped tree; dump it as a shell job with --shell-job{key}"
                ),
            ));
        }
        match &shell {
            Some((d, t)) if *d != dev => {
                return Err(Error::unsupported(
                    pid,
                    format!("fd {fd} is the terminal {target}, another one than {t}: a shell job has one terminal"),
                ))
            }
            _ => shell = Some((dev, target)),
        }
    }
    if let Some((dev, path)) = shell {
        for &pid in pids {
            let Ok(st) = crate::procfs::read_stat(pid) else {
                continue;
            };
            if st.session == pid
                && st.tty_nr != 0
                && libc::makedev(libc::major(st.tty_nr as u64), libc::minor(st.tty_nr as u64))
                    == dev
            {
                return Err(Error::unsupported(
                    pid,
                    format!("the process leads the session of the terminal {path}; --shell-job restores a job into the caller's session, so the session leader cannot be part of it"),
                ));
            }
        }
    }
    Ok(())
}

/// A shell job's process groups: a group outside the tree is the shell's,
/// and the job comes back in the restoring cairn's group instead (with
/// `--shell-job`, cairn takes the shell's place). That holds for the root
/// of the tree and for processes that inherit it from their parent; a
/// process in another outside group could not be put back in it.
fn precheck_groups(pids: &[i32]) -> Result<()> {
    let stats: HashMap<i32, (i32, i32)> = pids
        .iter()
        .filter_map(|&p| {
            let st = crate::procfs::read_stat(p).ok()?;
            Some((p, (st.ppid, st.pgrp)))
        })
        .collect();
    for (i, &pid) in pids.iter().enumerate() {
        let Some(&(ppid, pgrp)) = stats.get(&pid) else {
            continue;
        };
        if i == 0 || stats.contains_key(&pgrp) {
            continue;
        }
        if stats.get(&ppid).map(|s| s.1) != Some(pgrp) {
            return Err(Error::unsupported(
                pid,
                format!(
                    "its process group {pgrp} is outside the dumped tree and is not its \
                     parent's: a shell job comes back in the restoring cairn's process group, \
                     so this process could not be put back in a group of its own outside the tree"
                ),
            ));
        }
    }
    Ok(())
}

// ------------------------------------------------------------------- dump

/// The terminals of a tree being dumped.
#[derive(Default)]
pub struct TtyDump {
    /// pty index -> copy of one master fd, and its (pid, fd).
    masters: BTreeMap<u32, (OwnedFd, i32, i32)>,
    /// (desc id not known yet) path, pid, fd of every terminal fd seen.
    seen: Vec<(i32, i32)>,
    /// A copy of an fd on the shell's terminal (--shell-job).
    shell: Option<(OwnedFd, String, u64)>,
}

impl TtyDump {
    /// Describes fd `fd` of `pid` (frozen) if it is a terminal.
    pub fn describe(
        &mut self,
        pid: i32,
        fd: i32,
        target: &str,
        flags: u32,
    ) -> Result<Option<file_desc::Kind>> {
        let Some((class, dev)) = tty_of(pid, fd)? else {
            return Ok(None);
        };
        let mut t = TtyFile::new();
        t.flags = flags;
        t.path = target.to_string();
        let copy = || {
            sock::pidfd_getfd(pid, fd)
                .map_err(|e| Error::sys(pid, format!("pidfd_getfd of fd {fd}"), e))
        };
        match class {
            Class::PtyMaster => {
                let c = copy()?;
                t.index = tty::pty_index(&c)
                    .map_err(|e| Error::sys(pid, format!("fd {fd}: TIOCGPTN"), e))?;
                t.kind = TtyKind::PTY_MASTER.into();
                self.masters.entry(t.index).or_insert((c, pid, fd));
            }
            Class::PtySlave(i) => {
                t.index = i;
                t.kind = TtyKind::PTY_SLAVE.into();
                if self.shell.is_none() {
                    // In case its master is not in the tree.
                    self.shell = Some((copy()?, target.to_string(), dev));
                }
            }
            Class::DevTty | Class::Other => {
                t.kind = TtyKind::SHELL_TTY.into();
                if self.shell.as_ref().is_none_or(|s| s.2 != dev) {
                    self.shell = Some((copy()?, target.to_string(), dev));
                }
            }
        }
        self.seen.push((pid, fd));
        Ok(Some(file_desc::Kind::Tty(t)))
    }

    /// Once every fd table is read: slaves whose master is outside become
    /// the shell's terminal (with `shell_job`), every pair is recorded with
    /// its queues (read and written back), and the shell's terminal state.
    pub fn finish(
        &mut self,
        files: &mut Files,
        pids: &[i32],
        root: i32,
        shell_job: bool,
    ) -> Result<()> {
        if self.seen.is_empty() {
            return Ok(());
        }
        let mut shell_used = false;
        for d in files.descs.iter_mut() {
            let Some(file_desc::Kind::Tty(t)) = d.kind.as_mut() else {
                continue;
            };
            if t.kind.enum_value() == Ok(TtyKind::PTY_SLAVE) && !self.masters.contains_key(&t.index)
            {
                t.kind = TtyKind::SHELL_TTY.into();
            }
            if t.kind.enum_value() == Ok(TtyKind::SHELL_TTY) {
                if !shell_job {
                    return Err(Error::unsupported(
                        root,
                        format!("the terminal {} belongs to a session outside the dumped tree; dump it as a shell job with --shell-job", t.path),
                    ));
                }
                shell_used = true;
            }
        }
        for (&index, (m, pid, fd)) in &self.masters {
            let p = dump_pair(index, m, pids).map_err(|e| {
                Error::sys(*pid, format!("fd {fd} (pty master of /dev/pts/{index})"), e)
            })?;
            files.ptys.push(p);
        }
        if shell_used {
            let (c, path, rdev) = self
                .shell
                .as_ref()
                .ok_or_else(|| Error::Restore("internal: shell terminal not kept".into()))?;
            let mut s = ShellTty::new();
            s.path = path.clone();
            s.rdev = *rdev;
            s.termios =
                Some(termios_to(&tty::get_termios(c).map_err(|e| {
                    Error::sys(root, format!("{path}: tcgetattr"), e)
                })?))
                .into();
            if let Ok(w) = tty::get_winsize(c) {
                s.winsize = Some(winsize_to(w)).into();
            }
            let st = crate::procfs::read_stat(root)?;
            s.foreground = st.tpgid > 0 && st.tpgid == st.pgrp;
            files.shell_tty = Some(s).into();
        }
        Ok(())
    }
}

/// Input processing off for writing bytes back into a pty's input: they
/// were processed once already (no echo, no signals, no mapping).
fn quiet_input(t: &libc::termios) -> libc::termios {
    let mut q = *t;
    q.c_lflag &= !(libc::ECHO
        | libc::ECHOE
        | libc::ECHOK
        | libc::ECHONL
        | libc::ECHOCTL
        | libc::ECHOKE
        | libc::ISIG
        | libc::IEXTEN);
    q.c_iflag &= !(libc::ICRNL
        | libc::INLCR
        | libc::IGNCR
        | libc::ISTRIP
        | libc::IUCLC
        | libc::PARMRK
        | libc::INPCK
        | libc::BRKINT);
    q.c_oflag &= !libc::OPOST;
    q
}

/// Writes `output` (for the master to read) through the slave and `input`
/// (for the slave to read) through the master, with the slave's
/// processing switched off, then puts the slave's termios `t` back.
fn refill(
    master: &OwnedFd,
    slave: &OwnedFd,
    t: &libc::termios,
    input: &[u8],
    output: &[u8],
) -> std::io::Result<()> {
    if input.is_empty() && output.is_empty() {
        return Ok(());
    }
    tty::set_termios(slave, &quiet_input(t))?;
    let r = (|| {
        tty::write_all(slave, output)?;
        let before = sock::inq(slave)?;
        tty::write_all(master, input)?;
        // The slave's line discipline takes input in the background: wait
        // until it has it, before echo and signals are on again.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !input.is_empty() && Instant::now() < deadline {
            if sock::inq(slave)? >= before + input.len() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    })();
    tty::set_termios(slave, t)?;
    r
}

fn dump_pair(index: u32, master: &OwnedFd, pids: &[i32]) -> std::io::Result<PtyPair> {
    let mut p = PtyPair::new();
    p.index = index;
    p.locked = tty::pty_locked(master)?;
    p.packet = tty::packet_mode(master)?;
    // Cairn's own slave description, non-blocking, for reading the input
    // queue and the slave's modes (unlocked for a moment if need be).
    if p.locked {
        tty::set_pty_locked(master, false)?;
    }
    let slave = tty::open(&slave_path(index), libc::O_RDWR | libc::O_NONBLOCK);
    if p.locked {
        tty::set_pty_locked(master, true)?;
    }
    let slave = slave?;
    let sst = rustix::fs::fstat(&slave)?;
    p.has_owner = true;
    p.slave_uid = sst.st_uid;
    p.slave_gid = sst.st_gid;
    p.slave_mode = sst.st_mode & 0o7777;
    let st = tty::get_termios(&slave)?;
    p.slave_termios = Some(termios_to(&st)).into();
    p.master_termios = Some(termios_to(&tty::get_termios(master)?)).into();
    p.winsize = Some(winsize_to(tty::get_winsize(&slave)?)).into();
    p.exclusive = tty::exclusive(&slave)?;
    // The master is the tree's description: non-blocking only while read.
    let fl = sock::get_fl(master)?;
    sock::set_fl(master, fl | libc::O_NONBLOCK)?;
    if p.packet {
        tty::set_packet_mode(master, false)?;
    }
    let out = tty::read_available(master, MAX_QUEUED);
    sock::set_fl(master, fl)?;
    let output = out?;
    let input = tty::read_available(&slave, MAX_QUEUED)?;
    refill(master, &slave, &st, &input, &output)?;
    if p.packet {
        // Last: switching it on drops the status the termios changes of
        // the refill raised.
        tty::set_packet_mode(master, true)?;
    }
    p.input = input;
    p.output = output;
    let dev = libc::makedev(136, index);
    for &pid in pids {
        if let Ok(s) = crate::procfs::read_stat(pid) {
            let nr = s.tty_nr as u64;
            if s.session == pid
                && s.tty_nr != 0
                && libc::makedev(libc::major(nr), libc::minor(nr)) == dev
            {
                p.ctty_sid = pid as u32;
                p.fg_pgrp = s.tpgid.max(0) as u32;
            }
        }
    }
    Ok(p)
}

// ---------------------------------------------------------------- restore

/// Terminals rebuilt in cairn, kept until every vessel has its fds, and
/// what is left to do once the processes exist.
#[derive(Default)]
pub struct TtyRestore {
    _fds: Vec<OwnedFd>,
    /// (session leader, its new slave path, foreground group).
    ctty: Vec<(i32, String, i32)>,
    /// cairn's terminal, if the job is to be its foreground group.
    foreground: Option<OwnedFd>,
}

/// The path of the terminal device `rdev`.
fn dev_path(rdev: u64) -> Option<String> {
    if let Some(Class::PtySlave(i)) = classify(rdev) {
        return Some(slave_path(i));
    }
    let rd = std::fs::read_dir("/dev").ok()?;
    rd.flatten()
        .map(|e| e.path())
        .find(|p| {
            std::fs::symlink_metadata(p)
                .is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == rdev)
        })
        .map(|p| p.to_string_lossy().into_owned())
}

/// Why pty `index` could not be opened again with its index.
fn taken(index: u32, e: std::io::Error) -> Error {
    if e.raw_os_error() == Some(libc::EEXIST) {
        return Error::Restore(format!(
            "pty /dev/pts/{index} is in use by another process: a pty comes back with its \
             index (programs know their terminal by name); close it and restore again"
        ));
    }
    Error::Restore(format!(
        "pty /dev/pts/{index}: open /dev/ptmx until devpts gives index {index}: {e}"
    ))
}

/// Before any process of the tree exists: every pty pair of `files` must
/// find its index free (/dev/pts/N absent), since it comes back with it.
pub fn preflight(files: &Files) -> Result<()> {
    for p in &files.ptys {
        let path = slave_path(p.index);
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(Path::new(&path), e)),
            Ok(_) => {
                return Err(taken(
                    p.index,
                    std::io::Error::from_raw_os_error(libc::EEXIST),
                ))
            }
        }
    }
    Ok(())
}

/// Rebuilds the pty pairs of `files` in cairn, opens the shell's terminal
/// fds on cairn's own terminal (`shell_job`), and offers every terminal
/// description to the vessels through `shared`.
pub fn restore(files: &Files, shared: &mut SharedFiles, shell_job: bool) -> Result<TtyRestore> {
    let mut out = TtyRestore::default();
    let descs: Vec<(u32, &TtyFile)> = files
        .descs
        .iter()
        .filter_map(|d| match &d.kind {
            Some(file_desc::Kind::Tty(t)) => Some((d.id, t)),
            _ => None,
        })
        .collect();
    if descs.is_empty() {
        return Ok(out);
    }
    let me = crate::sys::task::getpid();
    let rerr = |what: String, e: std::io::Error| Error::Restore(format!("{what}: {e}"));
    let mut new_index: HashMap<u32, (u32, OwnedFd)> = HashMap::new();
    for p in &files.ptys {
        let master = tty::open_pty_index("/dev/ptmx", p.index).map_err(|e| taken(p.index, e))?;
        tty::set_pty_locked(&master, false).map_err(|e| rerr("unlockpt".into(), e))?;
        let n = tty::pty_index(&master).map_err(|e| rerr("TIOCGPTN".into(), e))?;
        if n != p.index {
            return Err(Error::Restore(format!(
                "pty /dev/pts/{}: /dev/ptmx gave index {n}",
                p.index
            )));
        }
        let what = format!("pty /dev/pts/{n}");
        let slave = tty::open(&slave_path(n), libc::O_RDWR | libc::O_NONBLOCK)
            .map_err(|e| rerr(format!("{what}: open the slave"), e))?;
        let now =
            rustix::fs::fstat(&slave).map_err(|e| rerr(format!("{what}: fstat"), e.into()))?;
        if p.has_owner && (now.st_uid, now.st_gid) != (p.slave_uid, p.slave_gid) {
            std::os::unix::fs::fchown(&slave, Some(p.slave_uid), Some(p.slave_gid))
                .map_err(|e| rerr(format!("{what}: fchown"), e))?;
        }
        if p.has_owner && now.st_mode & 0o7777 != p.slave_mode & 0o7777 {
            rustix::fs::fchmod(
                &slave,
                rustix::fs::Mode::from_raw_mode(p.slave_mode & 0o7777),
            )
            .map_err(|e| rerr(format!("{what}: fchmod"), e.into()))?;
        }
        let base = tty::get_termios(&slave).map_err(|e| rerr(format!("{what}: tcgetattr"), e))?;
        let st = termios_from(p.slave_termios.as_ref().unwrap_or_default(), &base);
        if let Some(w) = p.winsize.as_ref() {
            tty::set_winsize(&slave, winsize_from(w))
                .map_err(|e| rerr(format!("{what}: TIOCSWINSZ"), e))?;
        }
        tty::set_termios(&slave, &st).map_err(|e| rerr(format!("{what}: tcsetattr"), e))?;
        refill(&master, &slave, &st, &p.input, &p.output)
            .map_err(|e| rerr(format!("{what}: queued bytes"), e))?;
        if let Some(mt) = p.master_termios.as_ref() {
            let mbase =
                tty::get_termios(&master).map_err(|e| rerr(format!("{what}: tcgetattr"), e))?;
            tty::set_termios(&master, &termios_from(mt, &mbase))
                .map_err(|e| rerr(format!("{what}: tcsetattr"), e))?;
        }
        if p.packet {
            tty::set_packet_mode(&master, true).map_err(|e| rerr(format!("{what}: TIOCPKT"), e))?;
        }
        if p.exclusive {
            tty::set_exclusive(&slave, true).map_err(|e| rerr(format!("{what}: TIOCEXCL"), e))?;
        }
        if p.ctty_sid != 0 {
            out.ctty
                .push((p.ctty_sid as i32, slave_path(n), p.fg_pgrp as i32));
        }
        out._fds.push(slave);
        new_index.insert(p.index, (n, master));
    }
    // cairn's own terminal, for a shell job.
    let mut shell_path = None;
    if let Some(s) = files.shell_tty.as_ref() {
        if !shell_job {
            return Err(Error::Restore(format!(
                "the images hold a shell job (its terminal was {}): restore it with --shell-job",
                s.path
            )));
        }
        let ctty = tty::open("/dev/tty", libc::O_RDWR).map_err(|e| {
            rerr(
                "--shell-job: cairn has no controlling terminal to restore the job into".into(),
                e,
            )
        })?;
        let dev = tty::device(&ctty).map_err(|e| rerr("/dev/tty: TIOCGDEV".into(), e))?;
        let path = dev_path(dev).ok_or_else(|| {
            Error::Restore(format!(
                "no device node for cairn's terminal ({}:{})",
                libc::major(dev),
                libc::minor(dev)
            ))
        })?;
        if let Some(t) = s.termios.as_ref() {
            let base =
                tty::get_termios(&ctty).map_err(|e| rerr(format!("{path}: tcgetattr"), e))?;
            tty::without_sigttou(|| tty::set_termios(&ctty, &termios_from(t, &base)))
                .map_err(|e| rerr(format!("{path}: tcsetattr"), e))?;
        }
        info!("shell job: its terminal {} is now {path}", s.path);
        if s.foreground {
            out.foreground = Some(ctty);
        }
        shell_path = Some(path);
    }
    let mut masters_given = std::collections::HashSet::new();
    for (id, t) in descs {
        let flags =
            (t.flags as i32) & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_CLOEXEC);
        let fd = match t.kind.enum_value() {
            Ok(TtyKind::PTY_MASTER) => {
                let (_, m) = new_index
                    .get(&t.index)
                    .ok_or_else(|| Error::Restore(format!("pty {}: no saved pair", t.index)))?;
                if !masters_given.insert(t.index) {
                    return Err(Error::Restore(format!(
                        "pty {}: two master descriptions",
                        t.index
                    )));
                }
                let fl = sock::get_fl(m).map_err(|e| rerr("fcntl".into(), e))?;
                sock::set_fl(m, (fl & !libc::O_NONBLOCK) | (flags & libc::O_NONBLOCK))
                    .map_err(|e| rerr("fcntl".into(), e))?;
                shared.provide(id, me, m.as_raw_fd() as u64);
                continue;
            }
            Ok(TtyKind::PTY_SLAVE) => {
                let (n, m) = new_index
                    .get(&t.index)
                    .ok_or_else(|| Error::Restore(format!("pty {}: no saved pair", t.index)))?;
                let p = slave_path(*n);
                // volatile: a slave opened through its master (openpty's
                // TIOCGPTPEER) has no O_LARGEFILE; reopened the same way.
                if t.flags & crate::kinds::fd::KERNEL_O_LARGEFILE == 0 {
                    tty::open_peer(m, flags).map_err(|e| rerr(format!("{p}: TIOCGPTPEER"), e))?
                } else {
                    tty::open(&p, flags).map_err(|e| rerr(format!("open {p}"), e))?
                }
            }
            Ok(TtyKind::SHELL_TTY) => {
                let p = shell_path.as_ref().ok_or_else(|| {
                    Error::Restore(format!(
                        "{}: a shell terminal fd, but no shell terminal in the images",
                        t.path
                    ))
                })?;
                tty::open(p, flags).map_err(|e| rerr(format!("open {p}"), e))?
            }
            _ => return Err(Error::Restore(format!("{}: unknown terminal kind", t.path))),
        };
        shared.provide(id, me, fd.as_raw_fd() as u64);
        out._fds.push(fd);
    }
    // Locked pairs are locked once every slave fd is open.
    for p in &files.ptys {
        if let Some((_, m)) = new_index.get(&p.index) {
            if p.locked {
                tty::set_pty_locked(m, true).map_err(|e| rerr("TIOCSPTLCK".into(), e))?;
            }
        }
    }
    out._fds.extend(new_index.into_values().map(|(_, m)| m));
    Ok(out)
}

impl TtyRestore {
    /// In vessel `agent` (all fds in place): if it leads the session of a
    /// restored pty, that pty becomes its controlling terminal again, with
    /// its foreground process group.
    pub fn set_controlling(&self, calls: &mut dyn Calls) -> Result<()> {
        for (sid, path, fg) in &self.ctty {
            if *sid != calls.pid() {
                continue;
            }
            let fd = calls.open(path, libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC)?;
            calls.ioctl(&format!("{path}, TIOCSCTTY"), fd, libc::TIOCSCTTY, 0)?;
            if *fg > 0 {
                let a = calls.put(64, &fg.to_ne_bytes())?;
                if let Err(e) = calls.call(
                    &format!("tcsetpgrp({path}, {fg})"),
                    libc::SYS_ioctl,
                    &[fd, libc::TIOCSPGRP, a],
                ) {
                    warn!("{e}");
                }
            }
            calls.close(fd)?;
        }
        Ok(())
    }

    /// Once the tree is about to run: a shell job that was in the
    /// foreground becomes the foreground group of cairn's terminal.
    pub fn go(&self, pgrp: i32) -> Result<()> {
        if let Some(t) = self.foreground.as_ref() {
            tty::without_sigttou(|| tty::set_foreground(t, pgrp))
                .map_err(|e| Error::Restore(format!("tcsetpgrp(cairn's terminal, {pgrp}): {e}")))?;
        }
        Ok(())
    }
}

// ------------------------------------------------------------ the kind

/// Terminals: pty masters and slaves of the tree, and the shell's
/// terminal (`--shell-job`). Rebuilt in cairn before the fd tables
/// (`SharedFiles::prepare`), which the vessels then fetch.
pub struct Tty;

/// Whether fd `f` is on a terminal device reached by path (not deleted).
fn on_tty(f: &FdRef) -> bool {
    f.target.starts_with('/')
        && !f.target.ends_with(" (deleted)")
        && f.metadata()
            .is_ok_and(|m| m.file_type().is_char_device() && is_tty(m.rdev()))
}

impl FdKind for Tty {
    fn name(&self) -> &'static str {
        "terminal"
    }

    fn precheck(&self, f: &FdRef) -> Result<bool> {
        Ok(on_tty(f))
    }

    fn describe(&self, f: &FdRef, cx: &mut DumpCx) -> Result<Option<file_desc::Kind>> {
        let md = f.metadata()?;
        if !f.target.starts_with('/') || !md.file_type().is_char_device() || !is_tty(md.rdev()) {
            return Ok(None);
        }
        // A deleted terminal node is refused here (deleted plain devices
        // are kinds::regular's).
        f.ghost()?;
        cx.tty.describe(f.pid, f.fd, f.target, f.flags())
    }

    fn validate(&self, k: &file_desc::Kind, path: &Path, obj: &str) -> Result<()> {
        let file_desc::Kind::Tty(t) = k else {
            return Err(not_mine(self));
        };
        if !t.path.is_empty() {
            check_path(path, obj, "path", &t.path, false)?;
        }
        check_open_flags(path, obj, t.flags)?;
        if t.kind.enum_value().is_err() {
            return Err(invalid(path, obj, "kind", "unknown terminal kind"));
        }
        Ok(())
    }

    /// The pty pairs and the shell's terminal.
    fn validate_files(&self, f: &Files, path: &Path) -> Result<()> {
        count(path, "files", "ptys", f.ptys.len(), 1 << 16)?;
        for p in &f.ptys {
            let obj = format!("pty pair {}", p.index);
            for (n, t) in [
                ("slave_termios", p.slave_termios.as_ref()),
                ("master_termios", p.master_termios.as_ref()),
            ] {
                if let Some(t) = t {
                    check_bytes(path, &obj, &format!("{n}.cc"), t.cc.len(), 32)?;
                }
            }
            check_bytes(path, &obj, "input", p.input.len(), QUEUE_MAX)?;
            check_bytes(path, &obj, "output", p.output.len(), QUEUE_MAX)?;
            check_pid(path, &obj, "ctty_sid", p.ctty_sid, true)?;
            check_pid(path, &obj, "fg_pgrp", p.fg_pgrp, true)?;
        }
        if let Some(s) = f.shell_tty.as_ref() {
            if !s.path.is_empty() {
                check_path(path, "shell terminal", "path", &s.path, false)?;
            }
            if let Some(t) = s.termios.as_ref() {
                check_bytes(path, "shell terminal", "termios.cc", t.cc.len(), 32)?;
            }
        }
        Ok(())
    }

    fn prepare(&self, files: &Files, shared: &mut SharedFiles, shell_job: bool) -> Result<()> {
        shared.tty = restore(files, shared, shell_job)?;
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

    const DRIVERS: &str = "/dev/tty             /dev/tty        5       0 system:/dev/tty
/dev/console         /dev/console    5       1 system:console
/dev/ptmx            /dev/ptmx       5       2 system
/dev/vc/0            /dev/vc/0       4       0 system:vtmaster
serial               /dev/ttyS       4      64-95 serial
pty_slave            /dev/pts      136 0-1048575 pty:slave
pty_master           /dev/ptm      128 0-1048575 pty:master
unknown              /dev/tty        4 1-63 console
";

    #[test]
    fn classes() {
        let d = parse_drivers(DRIVERS);
        assert_eq!(d.len(), 8);
        let c = |ma, mi| classify_in(&d, libc::makedev(ma, mi));
        assert_eq!(c(5, 0), Some(Class::DevTty));
        assert_eq!(c(5, 2), Some(Class::PtyMaster));
        assert_eq!(c(136, 7), Some(Class::PtySlave(7)));
        assert_eq!(c(136, 300), Some(Class::PtySlave(300)));
        assert_eq!(c(4, 1), Some(Class::Other));
        assert_eq!(c(4, 70), Some(Class::Other));
        assert_eq!(c(5, 1), Some(Class::Other));
        assert_eq!(c(1, 3), None);
        assert_eq!(c(10, 232), None);
    }

    #[test]
    fn pty_queues_survive_a_dump_read() {
        let m = tty::open("/dev/ptmx", libc::O_RDWR).unwrap();
        tty::set_pty_locked(&m, false).unwrap();
        let n = tty::pty_index(&m).unwrap();
        let s = tty::open(&slave_path(n), libc::O_RDWR).unwrap();
        let mut t = tty::get_termios(&s).unwrap();
        t.c_lflag &= !libc::ECHO;
        tty::set_termios(&s, &t).unwrap();
        tty::write_all(&m, b"typed line\n").unwrap();
        tty::write_all(&s, b"printed\n").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let p = dump_pair(n, &m, &[]).unwrap();
        assert_eq!(p.input, b"typed line\n");
        assert_eq!(p.output, b"printed\r\n");
        // Written back: the same bytes wait again, nothing echoed.
        std::thread::sleep(Duration::from_millis(50));
        let p2 = dump_pair(n, &m, &[]).unwrap();
        assert_eq!(p2.input, p.input);
        assert_eq!(p2.output, p.output);
    }
}
