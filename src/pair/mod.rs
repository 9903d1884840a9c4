//! `cairn pair`: process pairs for unmodified programs (issue 18, the
//! NonStop model).
//!
//! `cairn pair -D DIR [--interval DUR] [--pidfile P] -- CMD` runs CMD as
//! the *primary* and keeps a *backup* ready to take its place:
//!
//! - The primary runs in a pid namespace of its own (`cairn run
//!   --pid-ns`'s machinery, [`crate::run::pidns`]): CMD is pid 2 there,
//!   so that a backup, restored in another new namespace, has the very
//!   pids the program knows while the primary still holds them in its.
//! - Every `--interval` a `--leave-running` checkpoint of the primary goes
//!   into `DIR/ckpt-NNNNNN` (`cairn dump` run inside the namespace, with
//!   the flags of `cairn run` ([`crate::run::dump_argv`]); background
//!   snapshot where the kernel has it; each an incremental layer on the
//!   previous one, a full one every [`crate::run::CHAIN_LAYERS`] layers and
//!   after a takeover). Checkpoints this pair made and no longer needs
//!   are removed; DIR keeps the newest chain.
//! - From each checkpoint a backup is restored (`cairn __pair-backup`,
//!   the init of a new pid namespace) and *held* just before its tasks are
//!   let go ([`hold`]): every task exists with its memory, fds and
//!   registers, stopped under ptrace. When the next backup is held the
//!   previous one is killed, so the held backup is at most one interval
//!   (plus the time a checkpoint and a restore take) behind. A checkpoint
//!   holding what a backup cannot hold beside its primary is refused
//!   ([`refuse`]) and ends the pair.
//! - The primary's end: status 0 (an exit with code 0) is the program's
//!   own choice and ends the pair, which exits 0 after killing the
//!   backup. Any other status (an exit code other than 0, or death by any
//!   signal) is a failure: the held backup is released (the newest one
//!   being prepared is waited for if none is held yet) and becomes the
//!   primary, the pid file is replaced with its pid as cairn's namespace
//!   sees it, the takeover is logged with its times, and the next
//!   checkpoint (one interval later, a full one) prepares a new backup. A
//!   failure before any checkpoint ends the pair with the primary's
//!   status.
//! - SIGTERM, SIGINT or SIGHUP to `cairn pair` kill the primary and the
//!   backup (each namespace's init; its end kills the namespace) and
//!   `cairn pair` exits 0. A killed `cairn pair` takes both with it
//!   (PDEATHSIG on each init).
//!
//! The backup on another machine (`--backup-on ADDR:PORT --key FILE` on
//! the primary's side, `cairn pair --listen ADDR:PORT --key FILE` on the
//! backup machine): [`remote`], with its failure rule and the split brain
//! a cut network causes.
//!
//! Cooperating programs (libcairn): the primary finds the control
//! socket in `CAIRN_CONTROL_SOCKET` ([`crate::control`], served by this
//! loop). `cairn_checkpoint_data()` is kept in `DIR/control/data` for the
//! process that takes over (`cairn_takeover_data()`);
//! `cairn_checkpoint()` is a checkpoint now, answered 0 in the primary,
//! from which the next backup is made: a backup from it resumes in that
//! call, answered 1. A checkpoint of a primary connected to cairn records
//! the connection as external; each backup gets a connection of its own
//! in its place (`--inherit-fd`), served once it took over.
//! `cairn_is_backup()` answers 1 once a backup took over (in the process
//! that took over and its successors), 0 before.

pub mod hold;
pub mod refuse;
pub mod remote;

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::control;
use crate::error::{Error, IoContext, Result};
use crate::kinds::external::{Inherit, Key};
use crate::options::{DumpOptions, RestoreOptions};
use crate::run::{cairn_exe, inner_pid, restore_argv, verbosity_args};
use crate::sys::pidns as sysns;
use crate::sys::safefs;

/// The hidden command of a backup's init.
pub const BACKUP_CMD: &str = "__pair-backup";

/// How long a checkpoint waits for the program to read the answers on
/// its control connection.
const SETTLE: Duration = Duration::from_secs(2);

/// How often the primary's root is looked at for the start of its exit
/// (PF_EXITING) while a backup is ready or being prepared.
const EXITING_POLL: Duration = Duration::from_millis(2);

/// PF_EXITING of /proc/PID/stat's flags: the task has begun to exit.
const PF_EXITING: u32 = 0x4;

/// `--interval` when none is given.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// What `cairn pair` does (`cairn pair --help`).
#[derive(Debug, Clone)]
pub struct PairOptions {
    /// The checkpoint directory (`-D`).
    pub dir: PathBuf,
    /// Time between two checkpoints (`--interval`).
    pub interval: Duration,
    /// Always holds the primary's pid (`--pidfile`).
    pub pidfile: Option<PathBuf>,
    /// The dump flags every checkpoint is taken with (as `cairn run`'s;
    /// pid, images directory, leave-running and incremental fields are
    /// the pair's).
    pub dump: DumpOptions,
    /// The program and its arguments.
    pub cmd: Vec<OsString>,
    /// Serve libcairn's control socket.
    pub control: bool,
    /// `--interval` was given (a backup machine that took over uses its
    /// primary's interval otherwise).
    pub interval_set: bool,
    /// `--backup-on ADDR:PORT --key FILE`: the backup on another machine
    /// ([`remote`]).
    pub backup_on: Option<(String, PathBuf)>,
    /// `--listen ADDR:PORT --key FILE`: this is that backup machine.
    pub listen: Option<(String, PathBuf)>,
    /// `--fence CMD`: run before a takeover for a lost connection.
    pub fence: Option<String>,
}

/// The running primary: its namespace's init (cairn's child) and the
/// program's root, as cairn sees them.
struct Primary {
    init: i32,
    root: i32,
}

/// A backup: the init of its namespace, being prepared or held.
struct Backup {
    init: i32,
    stdin: ChildStdin,
    out: ChildStdout,
    buf: Vec<u8>,
    ckpt: String,
    started: Instant,
    /// cairn's end of the connection the backup holds in place of the
    /// primary's.
    conn: Option<control::Spare>,
}

impl Backup {
    fn kill(&self) {
        let _ = crate::sys::task::kill(self.init, libc::SIGKILL);
    }

    /// Reads what is there of its stdout; the complete lines. `None`:
    /// EOF.
    fn read_lines(&mut self) -> Option<Vec<String>> {
        let mut b = [0u8; 512];
        let mut eof = false;
        loop {
            match self.out.read(&mut b) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => self.buf.extend_from_slice(&b[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let mut lines = Vec::new();
        while let Some(i) = self.buf.iter().position(|&c| c == b'\n') {
            let l: Vec<u8> = self.buf.drain(..=i).collect();
            lines.push(String::from_utf8_lossy(&l).trim().to_string());
        }
        if eof && lines.is_empty() {
            return None;
        }
        Some(lines)
    }

    /// The next line within `timeout` (blocking), `None` on EOF or
    /// timeout.
    fn next_line(&mut self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.buf.iter().position(|&c| c == b'\n') {
                let l: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(String::from_utf8_lossy(&l).trim().to_string());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let ms = left.as_millis().min(i32::MAX as u128) as i32;
            match crate::sys::pairpoll::poll_in(&[self.out.as_fd()], ms) {
                Ok(r) if r[0] => {}
                Ok(_) => continue,
                Err(_) => return None,
            }
            let mut b = [0u8; 512];
            match self.out.read(&mut b) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&b[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }
}

/// A checkpoint this pair made: its sequence number, name, and the
/// sequence number of the full checkpoint its chain starts at.
#[derive(Debug, Clone)]
struct Made {
    seq: u64,
    name: String,
    base: u64,
    /// The primary's control connection, recorded as external.
    key: Option<Key>,
    /// The restart checkpoint (cairn_checkpoint()) it was taken for.
    restart: Option<control::Pending>,
}

const PREFIX: &str = "ckpt-";

fn ckpt_seq(name: &OsStr) -> Option<u64> {
    let s = name.to_str()?;
    let s = s.strip_prefix('.').unwrap_or(s);
    let n = s.split('.').next()?.strip_prefix(PREFIX)?;
    (n.len() >= 6 && n.bytes().all(|b| b.is_ascii_digit()))
        .then(|| n.parse().ok())
        .flatten()
}

/// The pid file: replaced whole (a new file created exclusively in its
/// directory, renamed over the name); removed at the end if it is still
/// the one this pair wrote.
struct Pidfile {
    path: PathBuf,
    made: Option<(u64, u64)>,
}

impl Pidfile {
    /// Checks the directory the pid file goes in: owned by root or the
    /// caller, and not writable by others unless sticky (as /tmp).
    fn open(path: &Path) -> Result<Pidfile> {
        let path = std::path::absolute(path).map_err(|e| Error::io(path, e))?;
        let (dir, _) = safefs::open_parent_dir(&path).at(&path)?;
        let st = rustix::fs::fstat(&dir).map_err(|e| Error::io(&path, e.into()))?;
        let mode = st.st_mode & 0o7777;
        let sticky = mode & 0o1000 != 0;
        if !safefs::trusted_uid(st.st_uid) || (mode & 0o022 != 0 && !sticky) {
            return Err(Error::Usage(format!(
                "--pidfile {}: its directory is owned by uid {} with mode {mode:04o}: another \
                 user could replace the pid file",
                path.display(),
                st.st_uid
            )));
        }
        Ok(Pidfile { path, made: None })
    }

    fn write(&mut self, pid: i32) -> Result<()> {
        safefs::replace_file(&self.path, format!("{pid}\n").as_bytes(), 0o644)
            .map_err(|e| Error::io(&self.path, e))?;
        self.made = std::fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        Ok(())
    }

    fn remove(&self) {
        let Some((dev, ino)) = self.made else { return };
        let Ok((dir, name)) = safefs::open_parent_dir(&self.path) else {
            return;
        };
        if let Ok(st) = safefs::lstatat(&dir, &name) {
            if st.st_dev == dev && st.st_ino == ino {
                let _ = rustix::fs::unlinkat(&dir, name.as_os_str(), rustix::fs::AtFlags::empty());
            }
        }
    }
}

/// `CMD`'s program: found (on PATH if it has no slash) and executable.
fn check_program(prog: &OsStr) -> Result<()> {
    let p = Path::new(prog);
    let candidates: Vec<PathBuf> = if prog.as_encoded_bytes().contains(&b'/') {
        vec![p.to_path_buf()]
    } else {
        std::env::var_os("PATH")
            .map(|v| std::env::split_paths(&v).map(|d| d.join(p)).collect())
            .unwrap_or_default()
    };
    let ok = candidates.iter().any(|c| {
        std::fs::metadata(c).is_ok_and(|m| {
            m.is_file() && rustix::fs::access(c, rustix::fs::Access::EXEC_OK).is_ok()
        })
    });
    if ok {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "cannot run {}: {}",
        p.display(),
        if candidates.len() == 1 {
            "no such executable file"
        } else {
            "no executable file of that name on PATH"
        }
    )))
}

use crate::run::pidns::children;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The pair's state.
struct Pair<'a> {
    o: &'a PairOptions,
    dir: PathBuf,
    dirfd: OwnedFd,
    pidfile: Option<Pidfile>,
    primary: Primary,
    held: Option<Backup>,
    prep: Option<Backup>,
    /// Checkpoints made and not removed, oldest first.
    made: Vec<Made>,
    /// The layer the next checkpoint builds on, and its chain's length
    /// (none: the next one is full).
    prev: Option<(Made, usize)>,
    next_seq: u64,
    /// A backup was held at least once.
    ever_held: bool,
    takeovers: u32,
    server: control::Server,
    /// The connection to the backup machine (`--backup-on`).
    link: Option<remote::Link>,
    /// On the backup machine: the address of the primary's side.
    remote_from: Option<String>,
}

/// `cairn pair`. Returns the exit code.
pub fn run(o: &PairOptions) -> Result<i32> {
    if let Some((addr, key)) = &o.listen {
        return standby(o, addr, key);
    }
    let Some(prog) = o.cmd.first() else {
        return Err(Error::Usage("cairn pair: no command given after --".into()));
    };
    check_program(prog)?;
    let pidfile = o.pidfile.as_deref().map(Pidfile::open).transpose()?;
    let (dir, dirfd) = crate::run::open_dir(&o.dir, true)?;
    let sfd = signals()?;
    let next_seq = safefs::list(&dirfd)
        .unwrap_or_default()
        .iter()
        .filter_map(|(n, _)| ckpt_seq(n))
        .max()
        .map_or(1, |m| m + 1);
    let mut server = control::Server::new(control::Store::open(&dirfd, &dir)?);
    let env = if o.control {
        vec![server.listen()?]
    } else {
        server.close();
        Vec::new()
    };
    let link = match &o.backup_on {
        Some((addr, key)) => {
            let l = remote::Link::connect(addr, key, o.interval, server.name().unwrap_or(""))?;
            crate::log::write(
                0,
                format_args!("pair: the backup machine {addr} accepted the pair"),
            );
            Some(l)
        }
        None => None,
    };
    let primary = start_primary(&o.cmd, &env)?;
    let mut p = Pair::new(o, (dir, dirfd), pidfile, primary, server);
    p.next_seq = next_seq;
    p.link = link;
    if let Some(pf) = p.pidfile.as_mut() {
        if let Err(e) = pf.write(p.primary.root) {
            p.end_all();
            return Err(e);
        }
    }
    crate::log::write(
        0,
        format_args!(
            "pair: primary pid {} (init {}); a checkpoint and a backup every {:?}, in {}",
            p.primary.root,
            p.primary.init,
            o.interval,
            p.dir.display()
        ),
    );
    let r = p.run_loop(&sfd);
    p.end_all();
    if let Some(pf) = &p.pidfile {
        pf.remove();
    }
    r
}

impl<'a> Pair<'a> {
    /// A pair of `primary` (init 0 on a backup machine before a
    /// takeover: none) in directory `dir`, with no checkpoint yet.
    fn new(
        o: &'a PairOptions,
        dir: (PathBuf, OwnedFd),
        pidfile: Option<Pidfile>,
        primary: Primary,
        server: control::Server,
    ) -> Pair<'a> {
        Pair {
            o,
            dir: dir.0,
            dirfd: dir.1,
            pidfile,
            primary,
            held: None,
            prep: None,
            made: Vec::new(),
            prev: None,
            next_seq: 1,
            ever_held: false,
            takeovers: 0,
            server,
            link: None,
            remote_from: None,
        }
    }

    fn run_loop(&mut self, sfd: &SignalFd) -> Result<i32> {
        let mut next = Instant::now() + self.o.interval;
        loop {
            let wake = [Some(next), self.server.sync_at()]
                .into_iter()
                .flatten()
                .min();
            let mut timeout = wake.map_or(Duration::ZERO, |t| {
                t.saturating_duration_since(Instant::now())
            });
            if self.held.is_some() || self.prep.is_some() || self.link.is_some() {
                timeout = timeout.min(EXITING_POLL);
            }
            let mut fds: Vec<BorrowedFd<'_>> = vec![sfd.as_fd()];
            let link_at = self.link.as_ref().map(|l| {
                fds.push(l.fd());
                fds.len() - 1
            });
            let prep_at = self.prep.as_ref().map(|b| {
                fds.push(b.out.as_fd());
                fds.len() - 1
            });
            let ctl_at = self.server.fd().map(|f| {
                fds.push(f);
                fds.len() - 1
            });
            let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
            let ready = crate::sys::pairpoll::poll_in(&fds, ms)
                .map_err(|e| Error::sys(crate::sys::task::getpid(), "poll", e))?;
            let prep_ready = prep_at.is_some_and(|i| ready[i]);
            let ctl_ready = ctl_at.is_some_and(|i| ready[i]);
            let link_ready = link_at.is_some_and(|i| ready[i]);
            drop(fds);
            if ready[0] {
                for s in drain_signals(sfd) {
                    if s == libc::SIGTERM || s == libc::SIGINT || s == libc::SIGHUP {
                        crate::log::write(
                            0,
                            format_args!(
                                "pair: signal {s}: the primary and the backup are killed; exit 0"
                            ),
                        );
                        return Ok(0);
                    }
                }
            }
            if prep_ready {
                self.read_prep()?;
            }
            if link_ready {
                self.read_link();
            }
            if let Some(code) = self.exiting()? {
                return Ok(code);
            }
            if let Some(code) = self.reap()? {
                return Ok(code);
            }
            if self.server.sync_at().is_some_and(|t| t <= Instant::now()) {
                self.server.sync();
            }
            if ctl_ready {
                match self.server.handle() {
                    Ok(control::Event::Checkpoint(p)) => {
                        info!(
                            "pair: restart checkpoint asked by pid {} (request {})",
                            p.pid, p.id
                        );
                        let status = if self.checkpoint(Some(p))? {
                            0
                        } else {
                            -libc::EIO
                        };
                        if let Err(e) = self.server.answer(p, status) {
                            warn!("pair: {e}");
                        }
                        next = Instant::now() + self.o.interval;
                    }
                    Ok(control::Event::Data(_)) => self.forward_data(),
                    Ok(_) => {}
                    Err(e) => warn!("pair: {e}"),
                }
            }
            if Instant::now() >= next {
                self.checkpoint(None)?;
                next = Instant::now() + self.o.interval;
            }
        }
    }

    /// The takeover at the start of the primary's end: its root has begun
    /// to exit (PF_EXITING, or it is a zombie) with a failure status, as
    /// its `/proc/PID/stat` shows (the exit code is set there before the
    /// kernel tears its memory down, which takes long for a large
    /// program, and before its parent, the init, hears of it). Its
    /// namespace's init is killed, which ends whatever else of the
    /// program lives there (reaped later like any old init); the backup
    /// takes over at once. A status 0 is left to the init's end: the pair
    /// ends then. `Some(code)` when the pair ends.
    fn exiting(&mut self) -> Result<Option<i32>> {
        if self.held.is_none() && self.prep.is_none() && self.link.is_none() {
            return Ok(None);
        }
        let Ok(st) = crate::procfs::read_stat(self.primary.root) else {
            return Ok(None);
        };
        let exiting = st.flags & PF_EXITING != 0 || matches!(st.state, 'Z' | 'X');
        if !exiting || st.exit_code == 0 {
            return Ok(None);
        }
        let code = sysns::status_code(st.exit_code);
        crate::log::write(
            0,
            format_args!(
                "pair: the primary (pid {}) began to exit with status {code}: its namespace \
                 (init {}) is killed, the backup takes over now",
                self.primary.root, self.primary.init
            ),
        );
        let _ = crate::sys::task::kill(self.primary.init, libc::SIGKILL);
        self.primary_ended(code)
    }

    /// Reaps every child that ended; `Some(code)` when the pair ends.
    fn reap(&mut self) -> Result<Option<i32>> {
        loop {
            let (pid, st) = match sysns::wait_exit(-1, true) {
                Ok(Some(x)) => x,
                _ => return Ok(None),
            };
            let code = sysns::status_code(st);
            if pid == self.primary.init {
                if let Some(c) = self.primary_ended(code)? {
                    return Ok(Some(c));
                }
            } else if self.held.as_ref().is_some_and(|b| b.init == pid) {
                let b = self.held.take().unwrap_or_else(|| unreachable!());
                warn!(
                    "pair: the held backup from {} (init {pid}) ended with status {code}; the \
                     next checkpoint prepares another",
                    b.ckpt
                );
            } else if self.prep.as_ref().is_some_and(|b| b.init == pid) {
                let mut b = self.prep.take().unwrap_or_else(|| unreachable!());
                let why = b
                    .read_lines()
                    .unwrap_or_default()
                    .into_iter()
                    .find_map(|l| l.strip_prefix("err ").map(str::to_string))
                    .unwrap_or_else(|| format!("its init (pid {pid}) ended with status {code}"));
                self.prep_failed(&b, &why)?;
            }
        }
    }

    /// The primary's namespace ended with `code`.
    fn primary_ended(&mut self, code: i32) -> Result<Option<i32>> {
        let at = crate::log::timestamp();
        let noticed = Instant::now();
        if code == 0 {
            crate::log::write(
                0,
                format_args!(
                    "pair: the primary (pid {}) exited with status 0: the pair ends",
                    self.primary.root
                ),
            );
            return Ok(Some(0));
        }
        if let Some(l) = self.link.as_mut() {
            let r = l.tell(Some(code));
            let peer = l.peer.clone();
            let held = l.held.clone();
            self.link = None;
            return match r {
                Ok(()) => {
                    crate::log::write(
                        0,
                        format_args!(
                            "pair: the primary (pid {}) failed with status {code} at {at}: the \
                             backup machine {peer} takes over ({}); the pair ends here, exit 0",
                            self.primary.root,
                            held.map_or(
                                "no backup was held there yet: it waits for the one \
                                         it prepares"
                                    .into(),
                                |h| format!("its backup from {h} is held")
                            )
                        ),
                    );
                    Ok(Some(0))
                }
                Err(e) => Err(Error::Restore(format!(
                    "pair: the primary (pid {}) failed with status {code} at {at} and the \
                     backup machine {peer} could not be told ({e}); it takes over when it \
                     notices the lost connection",
                    self.primary.root
                ))),
            };
        }
        let b = if let Some(h) = self.held.take() {
            if let Some(p) = self.prep.take() {
                p.kill();
            }
            h
        } else if let Some(mut p) = self.prep.take() {
            info!(
                "pair: no backup held yet: waiting for the one from {}",
                p.ckpt
            );
            match p.next_line(Duration::from_secs(3600)) {
                Some(l) if l.starts_with(hold::HELD) => p,
                l => {
                    p.kill();
                    return Err(Error::Restore(format!(
                        "pair: the primary (pid {}) failed with status {code} at {at} and the \
                         backup from {} could not be made ({}): the pair ends",
                        self.primary.root,
                        p.ckpt,
                        l.unwrap_or_else(|| "its init ended".into())
                    )));
                }
            }
        } else {
            warn!(
                "pair: the primary (pid {}) failed with status {code} at {at} before any \
                 backup was ready: the pair ends with its status",
                self.primary.root
            );
            return Ok(Some(code));
        };
        self.release(b, code, &at, noticed)?;
        Ok(None)
    }

    /// Lets backup `b` go: it becomes the primary.
    fn release(&mut self, mut b: Backup, code: i32, at: &str, noticed: Instant) -> Result<()> {
        let old = self.primary.root;
        if let Err(e) = b.stdin.write_all(format!("{}\n", hold::GO).as_bytes()) {
            b.kill();
            return Err(Error::sys(b.init, "release the backup", e));
        }
        let line = b.next_line(Duration::from_secs(60)).unwrap_or_default();
        let Some(inner) = line.strip_prefix("ok ").and_then(|p| p.parse::<i32>().ok()) else {
            b.kill();
            return Err(Error::Restore(format!(
                "pair: the backup from {} (init {}) failed at its release ({}): the pair ends",
                b.ckpt,
                b.init,
                line.strip_prefix("err ").unwrap_or("its init ended")
            )));
        };
        let running = noticed.elapsed();
        let failed = match &self.remote_from {
            Some(peer) if code < 0 => format!("the primary on {peer} was lost"),
            Some(peer) => format!("the primary on {peer} failed with status {code}"),
            None => format!("the primary (pid {old}) failed with status {code}"),
        };
        let root = children(b.init)
            .into_iter()
            .find(|&c| inner_pid(c).ok() == Some(inner))
            .unwrap_or(b.init);
        self.primary = Primary { init: b.init, root };
        self.takeovers += 1;
        self.prev = None;
        if let Some(pf) = self.pidfile.as_mut() {
            if let Err(e) = pf.write(root) {
                warn!("pair: {e}");
            }
        }
        crate::log::write(
            0,
            format_args!(
                "pair: takeover {}: {failed} at {at}; the backup from {} runs as the primary, \
                 pid {root} (init {}), at {} ({:.1} ms after the failure was noticed)",
                self.takeovers,
                b.ckpt,
                b.init,
                crate::log::timestamp(),
                ms(running)
            ),
        );
        // The new primary's connection: the one made for it, or, if the
        // checkpoint had none, the one it makes.
        self.server.adopt(b.conn.take());
        self.server.set_backup(true);
        Ok(())
    }

    /// Reads the stdout of the backup being prepared.
    fn read_prep(&mut self) -> Result<()> {
        let Some(b) = self.prep.as_mut() else {
            return Ok(());
        };
        let lines = b.read_lines();
        let Some(lines) = lines else {
            // EOF: its end is reaped (with its message) in `reap`.
            let b = self.prep.take().unwrap_or_else(|| unreachable!());
            let _ = sysns::wait_exit(b.init, false);
            self.prep_failed(&b, "its init ended")?;
            return Ok(());
        };
        for l in lines {
            if let Some(e) = l.strip_prefix("err ") {
                let b = self.prep.take().unwrap_or_else(|| unreachable!());
                b.kill();
                let _ = sysns::wait_exit(b.init, false);
                return self.prep_failed(&b, e);
            }
            if l.starts_with(hold::HELD) {
                let b = self.prep.take().unwrap_or_else(|| unreachable!());
                crate::log::write(
                    0,
                    format_args!(
                        "pair: backup ready from {} (init {}), restored and held in {:.1} ms",
                        b.ckpt,
                        b.init,
                        ms(b.started.elapsed())
                    ),
                );
                if let Some(old) = self.held.replace(b) {
                    old.kill();
                }
                self.ever_held = true;
                self.prune();
                // A newer checkpoint came meanwhile: a backup from it.
                let held = self.held.as_ref().map(|b| b.ckpt.clone());
                if let Some(m) = self.made.last().cloned() {
                    if Some(&m.name) != held.as_ref() {
                        self.start_prep(&m)?;
                    }
                }
                return Ok(());
            }
        }
        Ok(())
    }

    /// A backup could not be made: the first one ends the pair (it cannot
    /// keep its promise from the start); later, the next checkpoint tries
    /// again.
    fn prep_failed(&mut self, b: &Backup, why: &str) -> Result<()> {
        if !self.ever_held {
            return Err(Error::Restore(format!(
                "pair: the first backup, from {}, could not be made: {why}; the pair ends",
                b.ckpt
            )));
        }
        warn!(
            "pair: the backup from {} could not be made: {why}; the next checkpoint tries again",
            b.ckpt
        );
        Ok(())
    }

    /// Takes a checkpoint of the primary (for restart checkpoint
    /// `restart`, if given) and, if none is being prepared, starts a
    /// backup from it. Whether it was taken.
    fn checkpoint(&mut self, restart: Option<control::Pending>) -> Result<bool> {
        if !self.server.settle(SETTLE) {
            warn!("pair: checkpoint skipped: the program has not read the answers of its control connection");
            return Ok(false);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let name = format!("{PREFIX}{seq:06}");
        let images = self.dir.join(&name);
        let mut d = self.o.dump.clone();
        d.images_dir = images.clone();
        d.leave_running = true;
        d.incr.track_mem = true;
        d.incr.prev_images_dir = None;
        let mut base = seq;
        let mut len = 1;
        if let Some((p, n)) = &self.prev {
            if *n < crate::run::CHAIN_LAYERS {
                d.incr.prev_images_dir = Some(PathBuf::from("..").join(&p.name));
                base = p.base;
                len = n + 1;
            }
        }
        d.pid = match inner_pid(self.primary.root) {
            Ok(p) => p,
            Err(e) => {
                info!("pair: checkpoint {name}: {e}");
                return Ok(false);
            }
        };
        // The primary's end of its control connection, unless it closed
        // it: each backup gets a connection of its own in its place.
        let key = (self.server.external_key())
            .filter(|k| crate::run::tree_holds(self.primary.root, &k.to_string()));
        d.external.extend(key);
        let t = Instant::now();
        match self.dump(&d) {
            Ok(frozen) => {
                let m = Made {
                    seq,
                    name,
                    base,
                    key,
                    restart,
                };
                crate::log::write(
                    0,
                    format_args!(
                        "pair: checkpoint {} complete in {:.1} ms (frozen {frozen:.1} ms){}",
                        m.name,
                        ms(t.elapsed()),
                        d.incr
                            .prev_images_dir
                            .as_ref()
                            .map(|p| format!(", a layer on {}", p.display()))
                            .unwrap_or_default()
                    ),
                );
                self.made.push(m.clone());
                self.prev = Some((m.clone(), len));
                self.refuse(&m)?;
                if self.link.is_some() {
                    self.send_remote(&m);
                } else if self.prep.is_none() {
                    self.start_prep(&m)?;
                }
                self.prune();
                Ok(true)
            }
            Err(e) => {
                warn!("pair: checkpoint {name} failed: {e}");
                for n in crate::image::staging::stale_in(self.dirfd.as_fd()) {
                    let _ = crate::image::staging::remove_stale(
                        self.dirfd.as_fd(),
                        &n,
                        &self.dir.join(&n),
                    );
                }
                Ok(false)
            }
        }
    }

    /// Ends the pair if checkpoint `m` holds what a backup cannot hold.
    fn refuse(&self, m: &Made) -> Result<()> {
        let img = crate::restore::Images::load(&self.dir.join(&m.name))?;
        match refuse::check(&img.files, &img.fdtables) {
            None => Ok(()),
            Some(why) => Err(Error::unsupported(
                self.primary.root,
                format!(
                    "checkpoint {}: {why}; cairn pair refuses it and ends (the checkpoints stay \
                     in {})",
                    m.name,
                    self.dir.display()
                ),
            )),
        }
    }

    /// Sends checkpoint `m` to the backup machine; a failure leaves the
    /// pair without a backup (logged).
    fn send_remote(&mut self, m: &Made) {
        let Some(l) = self.link.as_mut() else { return };
        let t = Instant::now();
        let key = m.key.map(|k| k.to_string());
        let restart = m.restart.map(|p| (p.pid, p.id));
        match l.send_ckpt(&self.dir.join(&m.name), &m.name, m.base, key, restart) {
            Ok(n) => info!(
                "pair: {} sent to the backup machine {} ({n} bytes in {:.1} ms)",
                m.name,
                l.peer,
                ms(t.elapsed())
            ),
            Err(e) => self.link_lost(&e.to_string()),
        }
    }

    /// Sends libcairn's newest data to the backup machine.
    fn forward_data(&mut self) {
        let Some(l) = self.link.as_mut() else { return };
        let Some(d) = self.server.store().latest().map(|d| d.to_vec()) else {
            return;
        };
        if let Err(e) = l.send_data(&d) {
            self.link_lost(&e.to_string());
        }
    }

    /// Reads what the backup machine says.
    fn read_link(&mut self) {
        let Some(l) = self.link.as_mut() else { return };
        match l.read() {
            Ok(remote::Msg::Held { name }) => {
                crate::log::write(
                    0,
                    format_args!("pair: backup ready on {} from {name}", l.peer),
                );
                l.held = Some(name);
            }
            Ok(remote::Msg::Stored { name }) => info!("pair: {name} stored on {}", l.peer),
            Ok(m) => {
                let why = format!("unexpected {m:?}");
                self.link_lost(&why);
            }
            Err(e) => self.link_lost(&e.to_string()),
        }
    }

    /// The backup machine is gone: the pair runs on without a backup.
    fn link_lost(&mut self, why: &str) {
        if let Some(l) = self.link.take() {
            warn!(
                "pair: the backup machine {} is lost ({why}): the primary runs on without a \
                 backup",
                l.peer
            );
        }
    }

    /// Runs `cairn dump` for `d` inside the primary's namespace; the
    /// frozen time it reports.
    fn dump(&self, d: &DumpOptions) -> Result<f64> {
        let log_name = OsStr::new(".pair-dump.log");
        let _ = rustix::fs::unlinkat(&self.dirfd, log_name, rustix::fs::AtFlags::empty());
        let log = safefs::create_excl(&self.dirfd, log_name, 0o600).at(self.dir.join(log_name))?;
        let path = self.dir.join(log_name);
        crate::run::dump_child(d, Some(self.primary.root), &path, log, true).map(|f| f.frozen_ms)
    }

    /// Starts preparing a backup from checkpoint `m`.
    fn start_prep(&mut self, m: &Made) -> Result<()> {
        let mut ropts = RestoreOptions {
            images_dir: self.dir.join(&m.name),
            detached: false,
            pidfile: None,
            shell_job: self.o.dump.shell_job,
            ignore_file_changes: false,
            pid_restore: None,
            exe_dir: None,
            exe_dir_flag: "--exe-dir".into(),
            tcp_established: false,
            allow_foreign_images: false,
            compare: false,
            inherit_fds: Vec::new(),
            pid_ns: false,
            ext_unix_sk_lose_peercred: false,
        };
        // A connection of its own in place of the primary's, answering
        // its restart checkpoint 1.
        let spare = m
            .key
            .map(|k| self.server.spare(m.restart).map(|c| (c, k)))
            .transpose()?;
        let inherit = (spare.as_ref())
            .map(|((_, h), _)| crate::run::inheritable(h))
            .transpose()?;
        if let (Some(fd), Some((_, key))) = (&inherit, &spare) {
            ropts.inherit_fds.push(Inherit {
                fd: fd.as_raw_fd(),
                key: *key,
            });
        }
        let mut args = restore_argv(&ropts);
        args.remove(0);
        let mut c = Command::new(cairn_exe()?);
        c.args(verbosity_args(0))
            .arg(BACKUP_CMD)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let prep = sysns::Prep {
            own_proc: true,
            pdeathsig: true,
            setsid: true,
        };
        let mut ch = crate::run::pidns::spawn_new_ns(&mut c, prep)?;
        drop(inherit);
        let init = ch.id() as i32;
        let (Some(stdin), Some(out)) = (ch.stdin.take(), ch.stdout.take()) else {
            let _ = crate::sys::task::kill(init, libc::SIGKILL);
            return Err(Error::Restore(
                "pair: the backup's pipes are missing".into(),
            ));
        };
        let _ = rustix::fs::fcntl_setfl(&out, rustix::fs::OFlags::NONBLOCK);
        info!("pair: preparing a backup from {} (init {init})", m.name);
        self.prep = Some(Backup {
            init,
            stdin,
            out,
            buf: Vec::new(),
            ckpt: m.name.clone(),
            started: Instant::now(),
            conn: spare.map(|((c, _), _)| c),
        });
        Ok(())
    }

    /// Removes the checkpoints of this pair that nothing needs: those
    /// before the chain of the newest checkpoint and of the backup being
    /// prepared.
    fn prune(&mut self) {
        let mut keep_from = self.prev.as_ref().map_or(u64::MAX, |(m, _)| m.base);
        if let Some(p) = &self.prep {
            if let Some(m) = self.made.iter().find(|m| m.name == p.ckpt) {
                keep_from = keep_from.min(m.base);
            }
        }
        if let Some(m) = self.made.last() {
            keep_from = keep_from.min(m.base);
        }
        let me = rustix::process::geteuid().as_raw();
        let (gone, kept): (Vec<Made>, Vec<Made>) =
            self.made.drain(..).partition(|m| m.seq < keep_from);
        self.made = kept;
        for m in gone {
            match safefs::remove_dir_by_fd(&self.dirfd, OsStr::new(&m.name), Some(me)) {
                Ok(()) => info!("pair: removed {}", m.name),
                Err(e) => warn!(
                    "pair: cannot remove {}: {e}",
                    self.dir.join(&m.name).display()
                ),
            }
        }
    }

    /// Kills the primary and the backups and reaps them; tells the backup
    /// machine that the pair ends.
    fn end_all(&mut self) {
        if let Some(mut l) = self.link.take() {
            if let Err(e) = l.tell(None) {
                warn!("pair: the backup machine {}: {e}", l.peer);
            }
        }
        let mut pids = vec![self.primary.init];
        pids.retain(|&p| p > 0);
        pids.extend(self.held.take().map(|b| b.init));
        pids.extend(self.prep.take().map(|b| b.init));
        for &p in &pids {
            let _ = crate::sys::task::kill(p, libc::SIGKILL);
        }
        for &p in &pids {
            let _ = sysns::wait_exit(p, false);
        }
    }
}

/// `cairn pair --listen ADDR:PORT --key FILE -D DIR`: the backup
/// machine of a pair ([`remote`]). Waits for the primary's side, keeps a
/// backup held from its newest checkpoint, takes over when the primary
/// fails or is lost, and then goes on as a local pair.
fn standby(o: &PairOptions, addr: &str, key: &Path) -> Result<i32> {
    let key = crate::migrate::channel::read_key(key)?;
    let pidfile = o.pidfile.as_deref().map(Pidfile::open).transpose()?;
    let (dir, dirfd) = crate::run::open_dir(&o.dir, true)?;
    let sfd = signals()?;
    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
        Error::io(
            Path::new(addr),
            std::io::Error::other(format!("listen: {e}")),
        )
    })?;
    let local = (listener.local_addr())
        .map(|a| a.to_string())
        .unwrap_or_else(|_| addr.to_string());
    crate::log::write(
        0,
        format_args!("pair: listening on {local} for the primary's side of a pair"),
    );
    let Some(mut up) = remote::accept_primary(&listener, &key, &sfd) else {
        return Ok(0);
    };
    // One primary: later connections are refused by the kernel.
    drop(listener);
    let mut opts = o.clone();
    if !o.interval_set {
        opts.interval = up.interval;
    }
    let server = control::Server::new(control::Store::open(&dirfd, &dir)?);
    let none = Primary { init: 0, root: 0 };
    let mut p = Pair::new(&opts, (dir, dirfd), pidfile, none, server);
    p.remote_from = Some(up.peer());
    let r = match p.follow(&sfd, &mut up) {
        Ok(None) => {
            // The program's environment names the primary's socket.
            let name = std::mem::take(&mut up.control);
            drop(up);
            if !name.is_empty() && opts.control {
                if let Err(e) = p.server.listen_as(&name) {
                    warn!("pair: libcairn's socket: {e}");
                }
            }
            p.run_loop(&sfd)
        }
        Ok(Some(code)) => Ok(code),
        Err(e) => Err(e),
    };
    p.end_all();
    if let Some(pf) = &p.pidfile {
        pf.remove();
    }
    r
}

impl Pair<'_> {
    /// The backup machine before a takeover: receives the checkpoints and
    /// keeps a backup held from the newest. `None`: a backup took over;
    /// `Some(code)`: the listener ends with `code`.
    fn follow(&mut self, sfd: &SignalFd, up: &mut remote::Upstream) -> Result<Option<i32>> {
        let peer = up.peer();
        loop {
            let mut fds: Vec<BorrowedFd<'_>> = vec![sfd.as_fd(), up.fd()];
            let prep_at = self.prep.as_ref().map(|b| {
                fds.push(b.out.as_fd());
                fds.len() - 1
            });
            let ready = crate::sys::pairpoll::poll_in(&fds, 100)
                .map_err(|e| Error::sys(crate::sys::task::getpid(), "poll", e))?;
            let (sig, from_up, prep_ready) =
                (ready[0], ready[1], prep_at.is_some_and(|i| ready[i]));
            drop(fds);
            if sig {
                for s in drain_signals(sfd) {
                    if s == libc::SIGTERM || s == libc::SIGINT || s == libc::SIGHUP {
                        crate::log::write(
                            0,
                            format_args!("pair: signal {s}: the backup is killed; exit 0"),
                        );
                        return Ok(Some(0));
                    }
                }
            }
            if prep_ready {
                let before = self.held.as_ref().map(|b| b.ckpt.clone());
                self.read_prep()?;
                let now = self.held.as_ref().map(|b| b.ckpt.clone());
                if let Some(name) = now.filter(|n| Some(n) != before.as_ref()) {
                    up.say(&remote::Msg::Held { name });
                }
            }
            self.reap()?;
            if self.server.sync_at().is_some_and(|t| t <= Instant::now()) {
                self.server.sync();
            }
            let msg = if from_up {
                match up.next(remote::PEER_TIMEOUT) {
                    Ok(m) => Some(m),
                    Err(e) => return self.upstream_lost(&peer, &e.to_string()),
                }
            } else if up.last.elapsed() > remote::PEER_TIMEOUT {
                let why = format!("nothing heard for {:?}", remote::PEER_TIMEOUT);
                return self.upstream_lost(&peer, &why);
            } else {
                None
            };
            match msg {
                None | Some(remote::Msg::Alive) => {}
                Some(remote::Msg::Ckpt {
                    name,
                    base,
                    key,
                    restart,
                }) => self.receive(up, &name, base, &key, restart)?,
                Some(remote::Msg::Nonrestart(d)) => {
                    if let Err(e) = self.server.store_mut().put(&d) {
                        warn!("pair: cannot keep the primary's nonrestart data: {e}");
                    }
                    self.server.sync();
                }
                Some(remote::Msg::Failed { code }) => {
                    crate::log::write(
                        0,
                        format_args!(
                            "pair: the primary's side on {peer} says the primary failed with \
                             status {code}: the backup takes over"
                        ),
                    );
                    return self.primary_ended(code.max(1));
                }
                Some(remote::Msg::End) => {
                    crate::log::write(
                        0,
                        format_args!(
                            "pair: the primary's side on {peer} ended the pair: the backup is \
                             killed; exit 0"
                        ),
                    );
                    return Ok(Some(0));
                }
                Some(m) => {
                    return Err(Error::Restore(format!(
                        "pair: the primary's side on {peer} sent {m:?}: the pair ends"
                    )))
                }
            }
        }
    }

    /// The connection to the primary's side is lost without its end:
    /// takeover, after the fence command if there is one.
    fn upstream_lost(&mut self, peer: &str, why: &str) -> Result<Option<i32>> {
        crate::log::write(
            0,
            format_args!(
                "pair: the connection to the primary's side on {peer} is lost ({why}) without \
                 its end: {}",
                if self.o.fence.is_some() {
                    "the fence command decides the takeover"
                } else {
                    "the backup takes over"
                }
            ),
        );
        if let Some(cmd) = &self.o.fence {
            if !remote::fence(cmd, peer) {
                return Ok(Some(1));
            }
        }
        if self.held.is_none() && self.prep.is_none() {
            return Err(Error::Restore(format!(
                "pair: no checkpoint of the primary on {peer} came before its connection was \
                 lost: nothing to take over"
            )));
        }
        self.primary_ended(-1)
    }

    /// Checkpoint `name` arrives from the primary's side: stored, and a
    /// backup prepared from it unless one is being prepared.
    fn receive(
        &mut self,
        up: &mut remote::Upstream,
        name: &str,
        base: u64,
        key: &str,
        restart: (u32, u32),
    ) -> Result<()> {
        let seq = ckpt_seq(OsStr::new(name))
            .filter(|n| *n >= base && name == format!("{PREFIX}{n:06}"))
            .ok_or_else(|| {
                Error::Restore(format!(
                    "pair: the primary's side sent a checkpoint named {name:?}: refused"
                ))
            })?;
        let t = Instant::now();
        up.recv_ckpt(&self.dirfd, &self.dir, name)?;
        up.say(&remote::Msg::Stored {
            name: name.to_string(),
        });
        info!(
            "pair: {name} received from the primary's side in {:.1} ms",
            ms(t.elapsed())
        );
        let key = (!key.is_empty())
            .then(|| crate::kinds::external::parse_key(key).ok())
            .flatten();
        let restart = (restart != (0, 0)).then_some(control::Pending {
            pid: restart.0,
            id: restart.1,
        });
        let m = Made {
            seq,
            name: name.to_string(),
            base,
            key,
            restart,
        };
        self.made.push(m.clone());
        self.prev = Some((m.clone(), 0));
        self.next_seq = seq + 1;
        if self.prep.is_none() {
            self.start_prep(&m)?;
        }
        self.prune();
        Ok(())
    }
}

/// Starts CMD as pid 2 of a new pid namespace (`cairn __pidns-exec`).
fn start_primary(cmd: &[OsString], env: &[(OsString, OsString)]) -> Result<Primary> {
    let (init, root) = crate::run::pidns::spawn_exec(cmd, env)?;
    if let Some(root) = root {
        return Ok(Primary { init, root });
    }
    if let Ok(Some((_, st))) = sysns::wait_exit(init, true) {
        return Err(Error::Usage(format!(
            "cannot run {}: it ended at once with status {}",
            cmd[0].to_string_lossy(),
            sysns::status_code(st)
        )));
    }
    let _ = crate::sys::task::kill(init, libc::SIGKILL);
    let _ = sysns::wait_exit(init, false);
    Err(Error::Usage(format!(
        "cannot run {}: not started after 30 s",
        cmd[0].to_string_lossy()
    )))
}

/// Blocks the signals the pair handles and returns a non-blocking
/// signalfd for them.
fn signals() -> Result<SignalFd> {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGCHLD,
    ] {
        set.add(s);
    }
    let me = crate::sys::task::getpid();
    set.thread_block()
        .map_err(|e| Error::sys(me, "block signals", std::io::Error::from(e)))?;
    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| Error::sys(me, "signalfd", std::io::Error::from(e)))
}

/// Every signal waiting on `sfd`.
fn drain_signals(sfd: &SignalFd) -> Vec<i32> {
    let mut v = Vec::new();
    while let Ok(Some(info)) = sfd.read_signal() {
        v.push(info.ssi_signo as i32);
    }
    v
}

/// `cairn __pair-backup RESTORE-ARGS`: a backup's init (see [`hold`]).
pub fn backup_init(args: &RestoreOptions) -> Result<i32> {
    hold::arm();
    crate::run::pidns::restore_init(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(ckpt_seq(OsStr::new("ckpt-000003")), Some(3));
        assert_eq!(ckpt_seq(OsStr::new(".ckpt-000004.cairn-tmp-1-2")), Some(4));
        assert_eq!(ckpt_seq(OsStr::new("ckpt-3")), None);
        assert_eq!(ckpt_seq(OsStr::new("other")), None);
    }

    #[test]
    fn program_checked() {
        assert!(check_program(OsStr::new("/bin/sh")).is_ok());
        assert!(check_program(OsStr::new("sh")).is_ok());
        let e = check_program(OsStr::new("/nonexistent/prog")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/prog"), "{e}");
        assert!(check_program(OsStr::new("/etc/passwd")).is_err());
    }
}
