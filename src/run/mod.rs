//! `cairn run`: a job under cairn's supervision (issue 17, HPC).
//!
//! `cairn run -D DIR -- CMD` restores the newest complete checkpoint in
//! `DIR` if there is one, or else starts `CMD` (a child of cairn in a
//! session of its own; cairn is not part of the dumped tree). While the
//! job runs, cairn takes `--leave-running` checkpoints into new
//! subdirectories `DIR/ckpt-NNNNNN` (every `--interval`, and on
//! `--checkpoint-signal`), a final one on SIGTERM (the tree is killed
//! after it and cairn exits 0, so that a batch system can requeue the
//! job), and exits with the tree's status when it ends by itself.
//!
//! Each checkpoint and each restore is a `cairn dump` / `cairn restore`
//! child process: the one-shot machinery of those commands (guardian,
//! signal handling, staging) works as for a command typed by hand, and a
//! killed `cairn run` kills its dumper (PDEATHSIG), whose guardian puts
//! the tree back. A checkpoint directory appears whole or not at all (the
//! dump stages it beside its final name and renames it,
//! `image::staging`), so a crash mid-checkpoint leaves the previous one
//! as the newest. Only directories named `ckpt-N`, owned by the caller and
//! holding an inventory are taken as checkpoints, and only those are ever
//! removed (`--keep`).
//!
//! `--pid-ns`: see [`pidns`].

pub mod pidns;

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::control;
use crate::error::{Error, IoContext, Result};
use crate::image::ImageDir;
use crate::kinds::external::{Inherit, Key};
use crate::options::{DumpOptions, RestoreOptions};
use crate::sys::pidns as sysns;
use crate::sys::safefs;

/// A full checkpoint is taken after this many incremental layers, so that
/// chains stay short and `--keep` can drop old ones.
pub const CHAIN_LAYERS: usize = 8;

/// What `cairn run` does (`cairn run --help`).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The job's checkpoint directory (`-D`).
    pub dir: PathBuf,
    /// Time between two periodic checkpoints (`--interval`).
    pub interval: Option<Duration>,
    /// Full chains of checkpoints kept (`--keep`).
    pub keep: Option<usize>,
    /// Incremental layers on the previous checkpoint (`--incremental`).
    pub incremental: bool,
    /// The signal that asks for one more checkpoint.
    pub checkpoint_signal: i32,
    /// The tree lives in a pid namespace of its own (`--pid-ns`).
    pub pid_ns: bool,
    /// CMD gets a control connection for libcairn (not `--no-control`).
    pub control: bool,
    /// The dump flags every checkpoint is taken with (pid, images
    /// directory, leave-running and incremental fields are cairn run's).
    pub dump: DumpOptions,
    /// The command to start when there is no checkpoint.
    pub cmd: Vec<OsString>,
}

/// Parses a duration: a number with ms, s, m or h (`500ms`, `30s`, `10m`,
/// `1h`); the units of `prune --older-than` plus milliseconds.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    let d = if let Some(ms) = t.strip_suffix("ms") {
        ms.parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| format!("invalid duration {s:?} (e.g. 500ms, 30s, 10m, 1h)"))?
    } else if t.bytes().last().is_some_and(|b| b.is_ascii_digit()) {
        return Err(format!(
            "invalid duration {s:?}: a unit is needed (ms, s, m or h)"
        ));
    } else {
        crate::cmd::prune::parse_age(t)
            .map_err(|_| format!("invalid duration {s:?} (e.g. 500ms, 30s, 10m, 1h)"))?
    };
    if d.is_zero() {
        return Err(format!("invalid duration {s:?}: must be more than 0"));
    }
    Ok(d)
}

/// Parses a signal name (`SIGUSR1`, `USR1`) or number; the signals cairn
/// run needs for itself are refused.
pub fn parse_signal(s: &str) -> std::result::Result<i32, String> {
    let sig = match s.parse::<i32>() {
        Ok(n) => Signal::try_from(n).map_err(|_| format!("no signal {n}"))?,
        Err(_) => {
            let up = s.to_ascii_uppercase();
            let name = if up.starts_with("SIG") {
                up
            } else {
                format!("SIG{up}")
            };
            name.parse::<Signal>()
                .map_err(|_| format!("unknown signal {s:?}"))?
        }
    };
    match sig {
        Signal::SIGTERM | Signal::SIGKILL | Signal::SIGSTOP | Signal::SIGCHLD => Err(format!(
            "{sig} cannot be the checkpoint signal (cairn run needs it)"
        )),
        s => Ok(s as i32),
    }
}

/// `-v` as many times as this cairn logs at.
pub fn verbosity_args(min: u8) -> Vec<OsString> {
    let n = (1..=3u8)
        .filter(|&l| crate::log::enabled(l))
        .count()
        .max(min as usize);
    vec![OsString::from("-v"); n]
}

/// cairn's own executable, to run its commands as children.
pub fn cairn_exe() -> Result<PathBuf> {
    std::fs::read_link("/proc/self/exe").map_err(|e| Error::io("/proc/self/exe", e))
}

/// The command line of `cairn dump` for `o`.
pub fn dump_argv(o: &DumpOptions) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![
        "dump".into(),
        "-t".into(),
        o.pid.to_string().into(),
        "-D".into(),
        o.images_dir.clone().into(),
        "--compress-level".into(),
        o.compress_level.to_string().into(),
        "--file-contents".into(),
        o.file_contents.to_string().into(),
        "--network-lock".into(),
        o.network_lock.to_string().into(),
    ];
    let flags = [
        (o.leave_running, "-R"),
        (o.shell_job, "-j"),
        (o.ext_unix_sk, "--ext-unix-sk"),
        (o.tcp_established, "--tcp-established"),
        (o.incr.track_mem, "--track-mem"),
        (o.freeze.no_bpf, "--no-bpf"),
        (o.freeze.wait_fork, "--freeze-wait-fork"),
        (o.oracle, "--oracle"),
    ];
    a.extend(flags.iter().filter(|f| f.0).map(|f| OsString::from(f.1)));
    if let Some(p) = &o.incr.prev_images_dir {
        a.push("--prev-images-dir".into());
        a.push(p.clone().into());
    }
    if o.freeze.background_snapshot != crate::kinds::memory::bgsnap::Mode::Auto {
        let m = match o.freeze.background_snapshot {
            crate::kinds::memory::bgsnap::Mode::On => "on",
            _ => "off",
        };
        a.push(format!("--background-snapshot={m}").into());
    }
    if let Some(m) = &o.incr.dirty_tracking {
        a.push("--dirty-tracking".into());
        a.push(m.into());
    }
    for k in &o.external {
        a.push("--external".into());
        a.push(k.to_string().into());
    }
    if let Some(t) = &o.page_server {
        a.extend([
            "--page-server".into(),
            "--address".into(),
            t.host.clone().into(),
        ]);
        a.extend(["--port".into(), t.port.to_string().into(), "--key".into()]);
        a.push(t.key.clone().into());
    }
    a
}

/// The command line of `cairn restore` for `o` (without `--pid-ns`, `-d`
/// and `--pidfile`, which the caller adds as it needs).
pub fn restore_argv(o: &RestoreOptions) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["restore".into(), "-D".into(), o.images_dir.clone().into()];
    let flags = [
        (o.shell_job, "-j"),
        (o.ignore_file_changes, "--ignore-file-changes"),
        (o.tcp_established, "--tcp-established"),
        (o.allow_foreign_images, "--allow-foreign-images"),
        (o.compare, "--compare"),
    ];
    a.extend(flags.iter().filter(|f| f.0).map(|f| OsString::from(f.1)));
    if let Some(m) = &o.pid_restore {
        a.push("--pid-restore".into());
        a.push(m.into());
    }
    if let Some(d) = &o.exe_dir {
        a.push("--exe-dir".into());
        a.push(d.clone().into());
    }
    for i in &o.inherit_fds {
        a.push("--inherit-fd".into());
        a.push(i.to_string().into());
    }
    a
}

/// Absolute form of `p` (relative to the current directory).
pub(crate) fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(|e| Error::io(p, e))
}

// ---------------------------------------------------------------------------
// The checkpoint directory

/// A checkpoint of the job: `DIR/ckpt-<seq>`.
#[derive(Debug, Clone)]
struct Ckpt {
    seq: u64,
    name: OsString,
    /// Made without a parent layer.
    full: bool,
}

const PREFIX: &str = "ckpt-";

/// The next free sequence number of checkpoints in `dir` (also those of
/// `cairn job checkpoint`, `crate::job`).
pub(crate) fn next_seq(dir: BorrowedFd<'_>) -> u64 {
    safefs::list(dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|(n, _)| {
            let s = n.to_str()?;
            // Staging names `.ckpt-N.cairn-tmp-...` count too.
            let s = s.strip_prefix('.').unwrap_or(s);
            ckpt_seq(OsStr::new(s.split('.').next()?))
        })
        .max()
        .map_or(1, |m| m + 1)
}

pub(crate) fn ckpt_name(seq: u64) -> String {
    format!("{PREFIX}{seq:06}")
}

pub(crate) fn ckpt_seq(name: &OsStr) -> Option<u64> {
    let n = name.to_str()?.strip_prefix(PREFIX)?;
    (n.len() >= 6 && n.bytes().all(|b| b.is_ascii_digit()))
        .then(|| n.parse().ok())
        .flatten()
}

/// A checkpoint directory (`cairn run`'s, `cairn pair`'s), held open:
/// made (0700) if missing; a symbolic link is refused, never followed;
/// staging directories of dumpers that died with everything else are
/// removed. A directory another user could write is refused when
/// `strict` (`cairn pair` restores its backups from it at once), else
/// warned about (`cairn run` refuses its checkpoints at restore).
pub(crate) fn open_dir(p: &Path, strict: bool) -> Result<(PathBuf, OwnedFd)> {
    let path = absolute(p)?;
    match safefs::is_dir_nofollow(&path) {
        Ok(true) => {}
        Ok(false) => {
            return Err(Error::Usage(format!(
                "{}: exists and is not a directory",
                path.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            safefs::make_dirs(&path).at(&path)?;
        }
        Err(e) => return Err(Error::Usage(format!("{}: {e}", path.display()))),
    }
    let fd = safefs::open_dir(&path).at(&path)?;
    let st = rustix::fs::fstat(&fd).map_err(|e| Error::io(&path, e.into()))?;
    if let Err(why) = safefs::check_trusted(&st) {
        if strict {
            return Err(Error::Usage(format!(
                "{}: the directory is {why}: another user could replace its checkpoints",
                path.display()
            )));
        }
        warn!(
            "{}: the directory is {why}; its checkpoints are refused at restore \
             (another user could replace them)",
            path.display()
        );
    }
    for n in crate::image::staging::stale_in(fd.as_fd()) {
        match crate::image::staging::remove_stale(fd.as_fd(), &n, &path.join(&n)) {
            Ok(()) => warn!(
                "removed {}, left by an interrupted checkpoint",
                n.to_string_lossy()
            ),
            Err(e) => warn!("{e}"),
        }
    }
    Ok((path, fd))
}

/// The job's directory, held open: made (0700) if missing; a symbolic
/// link there is refused, never followed.
struct JobDir {
    path: PathBuf,
    fd: OwnedFd,
}

impl JobDir {
    fn open(p: &Path) -> Result<JobDir> {
        let (path, fd) = open_dir(p, false)?;
        Ok(JobDir { path, fd })
    }

    /// The complete checkpoints, oldest first: real directories named
    /// `ckpt-N`, owned by the caller, whose inventory loads.
    fn checkpoints(&self) -> Vec<Ckpt> {
        let me = rustix::process::geteuid().as_raw();
        let mut out = Vec::new();
        for (name, _) in safefs::list(&self.fd).unwrap_or_default() {
            let Some(seq) = ckpt_seq(&name) else { continue };
            let Ok(st) = safefs::lstatat(&self.fd, &name) else {
                continue;
            };
            if safefs::file_type(&st) != rustix::fs::FileType::Directory || st.st_uid != me {
                continue;
            }
            match ImageDir::load(&self.path.join(&name)) {
                Ok((_, inv)) => out.push(Ckpt {
                    seq,
                    name,
                    full: inv.parent_dir.is_empty(),
                }),
                Err(e) => info!("run: {} is not a checkpoint: {e}", name.to_string_lossy()),
            }
        }
        out.sort_by_key(|c| c.seq);
        out
    }

    /// The next free sequence number.
    fn next_seq(&self) -> u64 {
        next_seq(self.fd.as_fd())
    }

    /// Keeps the newest `keep` full chains: every checkpoint older than
    /// the `keep`-th newest full one is removed (its regular files, then
    /// the directory, through descriptors).
    fn prune(&self, keep: usize) {
        let all = self.checkpoints();
        let fulls: Vec<&Ckpt> = all.iter().rev().filter(|c| c.full).collect();
        let Some(cut) = fulls.get(keep.max(1) - 1).map(|c| c.seq) else {
            return;
        };
        let me = rustix::process::geteuid().as_raw();
        for c in all.iter().filter(|c| c.seq < cut) {
            match safefs::remove_dir_by_fd(&self.fd, &c.name, Some(me)) {
                Ok(()) => info!("run: removed {} (--keep {keep})", c.name.to_string_lossy()),
                Err(e) => warn!("cannot remove {}: {e}", self.path.join(&c.name).display()),
            }
        }
    }
}

/// A private scratch directory (0700, random name) for the pid file of a
/// restore and the logs of the dumpers; removed at the end.
struct Scratch {
    parent: OwnedFd,
    name: OsString,
    path: PathBuf,
}

impl Scratch {
    fn new() -> Result<Scratch> {
        let tmp = std::env::temp_dir();
        let parent = safefs::open_dir(&tmp).at(&tmp)?;
        let name = OsString::from(format!(
            "cairn-run-{}-{}",
            std::process::id(),
            safefs::random_hex().at(&tmp)?
        ));
        safefs::mkdir_private(&parent, &name).at(tmp.join(&name))?;
        let path = tmp.join(&name);
        Ok(Scratch { parent, name, path })
    }

    /// A new file of ours in it, created exclusively.
    fn file(&self, name: &str) -> Result<(PathBuf, std::fs::File)> {
        let p = self.path.join(name);
        let dir = safefs::open_dir(&self.path).at(&self.path)?;
        let _ = rustix::fs::unlinkat(&dir, name, rustix::fs::AtFlags::empty());
        let f = safefs::create_excl(&dir, OsStr::new(name), 0o600).at(&p)?;
        Ok((p, f))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let me = rustix::process::geteuid().as_raw();
        let _ = safefs::remove_dir_by_fd(&self.parent, &self.name, Some(me));
    }
}

// ---------------------------------------------------------------------------
// The job

/// The running job as cairn run sees it.
struct Job {
    /// The child cairn waits for: the tree's root (started here), the
    /// `cairn restore` that restored it and waits for it, or the pid
    /// namespace's init; each ends with the tree's status.
    child: i32,
    /// The tree's root, as cairn sees it.
    root: i32,
    /// The tree lives in a pid namespace of cairn's ([`pidns`]).
    in_ns: bool,
}

impl Job {
    /// The tree's status once the child ended (`None`: still running).
    fn ended(&self) -> Result<Option<i32>> {
        match sysns::wait_exit(self.child, true) {
            Ok(Some((_, st))) => Ok(Some(sysns::status_code(st))),
            Ok(None) => Ok(None),
            Err(e) => Err(Error::sys(self.child, "waitpid", e)),
        }
    }

    fn wait(&self) -> i32 {
        match sysns::wait_exit(self.child, false) {
            Ok(Some((_, st))) => sysns::status_code(st),
            _ => 1,
        }
    }

    /// Ends the tree now: the whole pid namespace, or the root and every
    /// process below it.
    fn kill(&self) {
        if self.in_ns {
            let _ = crate::sys::task::kill(self.child, libc::SIGKILL);
        } else {
            for p in crate::procfs::descendants(self.root).into_iter().rev() {
                let _ = crate::sys::task::kill(p, libc::SIGKILL);
            }
        }
    }
}

/// Whether a process of the tree of `root` has an fd on `target` (as
/// /proc shows it: `socket:[INO]`).
pub(crate) fn tree_holds(root: i32, target: &str) -> bool {
    crate::procfs::descendants(root).into_iter().any(|p| {
        (crate::procfs::read_fds(p).unwrap_or_default())
            .iter()
            .any(|(_, t)| t == target)
    })
}

/// The pid of `pid` in its own (innermost) pid namespace.
pub fn inner_pid(pid: i32) -> Result<i32> {
    let st = crate::procfs::read_status(pid)?;
    Ok(st.ns_pid.last().copied().unwrap_or(pid))
}

/// A copy of the program's end of the control connection that the next
/// child inherits (no close-on-exec), to close once it is spawned.
pub(crate) fn inheritable(h: &control::Handoff) -> Result<OwnedFd> {
    rustix::io::dup(&h.fd).map_err(|e| {
        Error::sys(
            crate::sys::task::getpid(),
            "dup of the control connection",
            std::io::Error::from(e),
        )
    })
}

/// Starts `cmd` with `env` added to its environment (the control
/// socket's name): a child in a session of its own, stdin from
/// /dev/null.
fn start_cmd(o: &RunOptions, env: &[(OsString, OsString)]) -> Result<Job> {
    if o.pid_ns {
        return pidns::start_exec(&o.cmd, env);
    }
    let mut c = Command::new(&o.cmd[0]);
    c.args(&o.cmd[1..])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    let prep = sysns::Prep {
        setsid: true,
        ..Default::default()
    };
    let child = sysns::spawn(&mut c, prep).map_err(|e| {
        Error::Usage(format!(
            "cannot run {}: {e}",
            Path::new(&o.cmd[0]).display()
        ))
    })?;
    let pid = child.id() as i32;
    crate::log::write(
        0,
        format_args!("run: started {} as pid {pid}", o.cmd[0].to_string_lossy()),
    );
    Ok(Job {
        child: pid,
        root: pid,
        in_ns: false,
    })
}

/// Restores checkpoint `ck`: a `cairn restore` child (or, with
/// `--pid-ns`, the namespace's init) that waits for the tree. `ctl`: the
/// program's end of a new control connection and the key the tree's end
/// was dumped with (`--inherit-fd`).
fn restore(
    o: &RunOptions,
    dir: &JobDir,
    ck: &Ckpt,
    scratch: &Scratch,
    ctl: Option<(&control::Handoff, Key)>,
) -> Result<Job> {
    let images = dir.path.join(&ck.name);
    let inherit = ctl
        .map(|(h, key)| inheritable(h).map(|fd| (fd, key)))
        .transpose()?;
    let ropts = RestoreOptions {
        images_dir: images.clone(),
        detached: false,
        pidfile: None,
        shell_job: o.dump.shell_job,
        ignore_file_changes: false,
        pid_restore: None,
        exe_dir: None,
        exe_dir_flag: "--exe-dir".into(),
        tcp_established: o.dump.tcp_established,
        allow_foreign_images: false,
        compare: false,
        inherit_fds: (inherit.iter())
            .map(|(fd, key)| Inherit {
                fd: fd.as_raw_fd(),
                key: *key,
            })
            .collect(),
        pid_ns: o.pid_ns,
        ext_unix_sk_lose_peercred: false,
    };
    crate::log::write(0, format_args!("run: restoring {}", images.display()));
    if o.pid_ns {
        let (init, root) = pidns::start_restore(&ropts, true)?;
        return Ok(Job {
            child: init,
            root,
            in_ns: true,
        });
    }
    let pidfile = scratch.path.join("restored.pid");
    let mut c = Command::new(cairn_exe()?);
    c.args(verbosity_args(0))
        .args(restore_argv(&ropts))
        .arg("--pidfile")
        .arg(&pidfile)
        .stdin(Stdio::null());
    let prep = sysns::Prep {
        pdeathsig: true,
        setsid: true,
        ..Default::default()
    };
    let mut child = sysns::spawn(&mut c, prep)
        .map_err(|e| Error::Usage(format!("cannot run cairn restore: {e}")))?;
    drop(inherit);
    let cpid = child.id() as i32;
    loop {
        if let Ok(s) = std::fs::read_to_string(&pidfile) {
            if let Ok(root) = s.trim().parse::<i32>() {
                let _ = std::fs::remove_file(&pidfile);
                return Ok(Job {
                    child: cpid,
                    root,
                    in_ns: false,
                });
            }
        }
        if let Some(st) = child
            .try_wait()
            .map_err(|e| Error::sys(cpid, "waitpid", e))?
        {
            let code = st.code().unwrap_or(1).clamp(1, 255) as u8;
            return Err(Error::Forwarded {
                code,
                msg: format!(
                    "run: the restore of {} failed (exit code {code}); the checkpoint is kept",
                    images.display()
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What kind of checkpoint.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Periodic,
    OnSignal,
    Final,
    /// Asked for by the program (cairn_checkpoint()).
    Restart,
}

/// The checkpoints taken so far by this cairn run.
struct Chain {
    /// The layer the next incremental one builds on, and the length of
    /// its chain.
    prev: Option<(String, usize)>,
    taken: u64,
}

/// A restart checkpoint the program asked for: taken, marked in the
/// store, then answered (0, or -EIO when it failed).
fn restart_checkpoint(
    o: &RunOptions,
    dir: &JobDir,
    job: &Job,
    chain: &mut Chain,
    scratch: &Scratch,
    server: &mut control::Server,
    p: control::Pending,
) {
    let taken = checkpoint(o, dir, job, chain, Kind::Restart, scratch, server);
    let status = match &taken {
        Some(name) => {
            let exists = |c: &str| safefs::lstatat(&dir.fd, OsStr::new(c)).is_ok();
            match server.store_mut().mark_restart(name, p, exists) {
                Ok(()) => 0,
                Err(e) => {
                    warn!("run: {name}: {e}");
                    -libc::EIO
                }
            }
        }
        None => -libc::EIO,
    };
    if let Err(e) = server.answer(p, status) {
        warn!("run: {e}");
    }
}

/// Takes one checkpoint of `job` into a new `DIR/ckpt-N`: a `cairn dump`
/// child (in the job's pid namespace with `--pid-ns`), its log forwarded
/// to cairn's. Returns its name if it completed.
fn checkpoint(
    o: &RunOptions,
    dir: &JobDir,
    job: &Job,
    chain: &mut Chain,
    kind: Kind,
    scratch: &Scratch,
    server: &mut control::Server,
) -> Option<String> {
    if !server.settle(SETTLE) {
        warn!("run: checkpoint ({kind:?}) skipped: the job has not read the answers of its control connection");
        return None;
    }
    let seq = dir.next_seq();
    let name = ckpt_name(seq);
    let images = dir.path.join(&name);
    let mut d = o.dump.clone();
    // The tree's end of the control connection, unless it closed it (a
    // copy outside the tree, in the `cairn restore` that waits for it,
    // keeps the socket open).
    let key = server.external_key();
    d.external
        .extend(key.filter(|k| tree_holds(job.root, &k.to_string())));
    d.images_dir = images.clone();
    d.leave_running = kind != Kind::Final;
    d.incr.prev_images_dir = None;
    d.incr.track_mem = o.incremental && kind != Kind::Final;
    if o.incremental {
        if let Some((p, n)) = &chain.prev {
            if *n < CHAIN_LAYERS || kind == Kind::Final {
                d.incr.prev_images_dir = Some(PathBuf::from("..").join(p));
            }
        }
    }
    if o.incremental {
        // Layers compared by content hash: the tracking then holds nothing
        // in the kernel, so each periodic layer's pages are copied while
        // the job runs (background snapshot), as for a full dump.
        if d.incr.dirty_tracking.is_none() {
            d.incr.dirty_tracking = chain_tracking(&d);
        }
    }
    d.pid = if job.in_ns {
        match inner_pid(job.root) {
            Ok(p) => p,
            Err(e) => {
                warn!("run: checkpoint {name}: {e}");
                return None;
            }
        }
    } else {
        job.root
    };
    info!("run: checkpoint {name} ({kind:?}) of pid {}", job.root);
    chain.taken += 1;
    let r = match run_dump(&d, job, chain.taken, scratch) {
        // The final dump kills the tree; its root's end ends the pid
        // namespace, and the dumper in it, once the images are complete.
        Err(e) if kind == Kind::Final && job.in_ns => match ImageDir::load(&images) {
            Ok(_) => Ok(DumpFigures {
                frozen_ms: f64::NAN,
                bytes: dir_bytes(&images),
                background_copy_ms: None,
            }),
            Err(_) => Err(e),
        },
        r => r,
    };
    match r {
        Ok(DumpFigures {
            frozen_ms: frozen,
            bytes,
            background_copy_ms,
        }) => {
            let bg = background_copy_ms
                .map(|ms| format!(", memory copied while it ran in {ms:.1} ms"))
                .unwrap_or_default();
            let on = d
                .incr
                .prev_images_dir
                .as_ref()
                .map(|p| format!(", a layer on {}", p.display()))
                .unwrap_or_default();
            crate::log::write(
                0,
                format_args!(
                    "run: checkpoint {name} complete: frozen {}, {} ({bytes} bytes){bg}{on}",
                    if frozen.is_nan() {
                        "time not reported (the dumper ended with the namespace)".to_string()
                    } else {
                        format!("{frozen:.1} ms")
                    },
                    human(bytes)
                ),
            );
            let len = match (&d.incr.prev_images_dir, &chain.prev) {
                (Some(_), Some((_, n))) => n + 1,
                _ => 1,
            };
            chain.prev = Some((name.clone(), len));
            if let Some(k) = o.keep {
                dir.prune(k);
            }
            Some(name)
        }
        Err(e) => {
            warn!("run: checkpoint {name} failed: {e}");
            None
        }
    }
}

/// The dirty tracking of `cairn run --incremental`'s layers when the
/// background snapshot applies (not `--background-snapshot=off`, the
/// kernel able): content hashes. Kernel tracking (uffd-wp) would register
/// the job's memory with the tracking's userfaultfd, which the
/// background snapshot needs for its own: every layer would then be
/// copied with the job frozen (26-39 s per layer of a 4 GiB job). The
/// hashes cost a read of the job's memory per layer, done in the
/// background; a page rewritten with the same contents is not stored
/// again. `None`: the best mechanism (`track::Mechanism::best`).
fn chain_tracking(d: &DumpOptions) -> Option<String> {
    use crate::kinds::memory::bgsnap;
    if d.freeze.background_snapshot == bgsnap::Mode::Off {
        return None;
    }
    if let Some(why) = bgsnap::unavailable() {
        info!("run: no background snapshot here ({why}): layers tracked by the best mechanism");
        return None;
    }
    Some(crate::track::Mechanism::Hash.name().to_string())
}

/// The size of the files in `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn human(b: u64) -> String {
    let mb = b as f64 / (1 << 20) as f64;
    if mb >= 1.0 {
        format!("{mb:.1} MiB")
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}

/// Environment variable for tests: `CAIRN_PAUSE_AT` (see `crate::guard`)
/// is passed on only to the checkpoints from this number on (1: the
/// first this cairn run takes).
pub const PAUSE_FROM_ENV: &str = "CAIRN_RUN_PAUSE_FROM";

/// Runs `cairn dump` for `d`; its figures from its stats lines.
fn run_dump(d: &DumpOptions, job: &Job, n: u64, scratch: &Scratch) -> Result<DumpFigures> {
    let (log_path, log) = scratch.file("dump.log")?;
    let pause_from = std::env::var(PAUSE_FROM_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let pause = pause_from.is_some_and(|f| n >= f);
    dump_child(d, job.in_ns.then_some(job.root), &log_path, log, pause)
}

/// Runs `cairn dump` for `d` as a child (inside the pid namespace of
/// `ns_of` if given), its stderr into `log`, a new file of cairn's at
/// `log_path` (removed after); its warnings and errors go to cairn's
/// log. `pause`: `CAIRN_PAUSE_AT` (tests) is passed on. Returns its
/// figures from its stats lines.
pub(crate) fn dump_child(
    d: &DumpOptions,
    ns_of: Option<i32>,
    log_path: &Path,
    log: std::fs::File,
    pause: bool,
) -> Result<DumpFigures> {
    let mut c = Command::new(cairn_exe()?);
    c.args(verbosity_args(1))
        .args(dump_argv(d))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    if !pause {
        c.env_remove(crate::guard::PAUSE_ENV);
    }
    let prep = sysns::Prep {
        pdeathsig: true,
        setsid: true,
        own_proc: ns_of.is_some(),
    };
    let child = match ns_of {
        Some(root) => pidns::spawn_in_ns_of(root, &mut c, prep),
        None => sysns::spawn(&mut c, prep)
            .map_err(|e| Error::Usage(format!("cannot run cairn dump: {e}"))),
    };
    let st = child.and_then(|mut ch| {
        let pid = ch.id() as i32;
        ch.wait().map_err(|e| Error::sys(pid, "waitpid", e))
    });
    let text = std::fs::read_to_string(log_path).unwrap_or_default();
    let _ = std::fs::remove_file(log_path);
    let mut stats = None;
    let mut background_copy_ms = None;
    let mut last_err = String::new();
    for line in text.lines() {
        let msg = log_message(line);
        if let Some(s) = msg.strip_prefix("stats dump: ") {
            stats = Some(parse_stats(s));
        }
        if let Some(s) = msg.strip_prefix("stats background-snapshot: ") {
            background_copy_ms = stat_field(s, "copy_ms");
        }
        if msg.starts_with("warning:") {
            crate::log::write(0, format_args!("dump: {msg}"));
        } else if let Some(e) = line.strip_prefix("cairn: ") {
            last_err = e.to_string();
        } else {
            crate::log::write(2, format_args!("dump: {msg}"));
        }
    }
    let st = st?;
    if !st.success() {
        return Err(Error::Usage(format!(
            "cairn dump exited with {}: {last_err}",
            st.code()
                .map_or_else(|| "a signal".to_string(), |c| c.to_string())
        )));
    }
    let (frozen_ms, bytes) = stats.unwrap_or((0.0, 0));
    Ok(DumpFigures {
        frozen_ms,
        bytes,
        background_copy_ms,
    })
}

/// What a `cairn dump` child reported.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DumpFigures {
    pub frozen_ms: f64,
    /// Bytes of images.
    pub bytes: u64,
    /// The pages were copied while the tree ran (background snapshot),
    /// in this many ms.
    pub background_copy_ms: Option<f64>,
}

/// The number `key=X` of a stats line.
fn stat_field(s: &str, key: &str) -> Option<f64> {
    s.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

/// The message of a line of cairn's text log (`[TIME ]cairn[PID]: MSG`).
fn log_message(line: &str) -> &str {
    line.find("cairn[")
        .and_then(|i| line[i..].split_once("]: "))
        .map_or(line, |(_, m)| m)
}

/// `frozen_ms=X image_bytes=Y ...`.
fn parse_stats(s: &str) -> (f64, u64) {
    (
        stat_field(s, "frozen_ms").unwrap_or(0.0),
        stat_field(s, "image_bytes").map_or(0, |b| b as u64),
    )
}

/// Blocks the signals cairn run handles and returns a signalfd for them.
fn signals(ckpt: i32) -> Result<SignalFd> {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGCHLD,
    ] {
        set.add(s);
    }
    if let Ok(s) = Signal::try_from(ckpt) {
        set.add(s);
    }
    let me = crate::sys::task::getpid();
    set.thread_block()
        .map_err(|e| Error::sys(me, "block signals", std::io::Error::from(e)))?;
    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC)
        .map_err(|e| Error::sys(me, "signalfd", std::io::Error::from(e)))
}

/// What woke cairn run up.
enum Wake {
    Signal(i32),
    /// The control connection is readable (or closed).
    Control,
    Timeout,
}

/// The next signal or control request, or [`Wake::Timeout`] once
/// `timeout` passed.
fn next_event(
    sfd: &SignalFd,
    ctl: Option<BorrowedFd<'_>>,
    timeout: Option<Duration>,
) -> Result<Wake> {
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    let (sig, req) = match ctl {
        Some(c) => crate::sys::fdpass::poll2(sfd, &c, ms),
        None => crate::sys::fdpass::poll2(sfd, sfd, ms),
    }
    .map_err(|e| Error::sys(crate::sys::task::getpid(), "poll", e))?;
    if !sig {
        return Ok(if req && ctl.is_some() {
            Wake::Control
        } else {
            Wake::Timeout
        });
    }
    match sfd.read_signal() {
        Ok(Some(info)) => Ok(Wake::Signal(info.ssi_signo as i32)),
        Ok(None) => Ok(Wake::Signal(0)),
        Err(e) => Err(Error::sys(
            crate::sys::task::getpid(),
            "read signalfd",
            std::io::Error::from(e),
        )),
    }
}

/// How long a checkpoint waits for the job to read the answers on its
/// control connection.
const SETTLE: Duration = Duration::from_secs(2);

/// `cairn run`. Returns the exit code: the tree's status when it ends by
/// itself, 0 after the final checkpoint of a SIGTERM.
pub fn run(o: &RunOptions) -> Result<i32> {
    if o.cmd.is_empty() {
        return Err(Error::Usage("cairn run: no command given after --".into()));
    }
    let sfd = signals(o.checkpoint_signal)?;
    let dir = JobDir::open(&o.dir)?;
    let scratch = Scratch::new()?;
    let mut server = control::Server::new(control::Store::open(&dir.fd, &dir.path)?);
    let env = if o.control {
        vec![server.listen()?]
    } else {
        server.close();
        Vec::new()
    };
    let job = match dir.checkpoints().pop() {
        Some(ck) => {
            // The tree's connection, if it had one, is handed in anew.
            let key = control::image_key(&dir.path.join(&ck.name)).ok().flatten();
            let hand = key.map(|_| server.connect()).transpose()?;
            let name = ck.name.to_string_lossy();
            if let Some(p) = server.store().restart_of(&name).filter(|_| key.is_some()) {
                info!(
                    "run: {name} is the restart checkpoint of request {} of pid {}: answered 1",
                    p.id, p.pid
                );
                server.queue_restored(p)?;
            }
            restore(o, &dir, &ck, &scratch, hand.as_ref().zip(key))?
        }
        None => start_cmd(o, &env)?,
    };
    crate::log::write(
        0,
        format_args!(
            "run: supervising pid {}{}; checkpoints in {}",
            job.root,
            if job.in_ns {
                " (in its own pid namespace)"
            } else {
                ""
            },
            dir.path.display()
        ),
    );
    let mut chain = Chain {
        prev: None,
        taken: 0,
    };
    let mut next = o.interval.map(|i| Instant::now() + i);
    loop {
        if let Some(code) = job.ended()? {
            server.sync();
            crate::log::write(0, format_args!("run: the job ended with status {code}"));
            return Ok(code);
        }
        let wake = [next, server.sync_at()].into_iter().flatten().min();
        let timeout = wake.map(|t| t.saturating_duration_since(Instant::now()));
        match next_event(&sfd, server.fd(), timeout)? {
            Wake::Timeout => {
                if server.sync_at().is_some_and(|t| t <= Instant::now()) {
                    server.sync();
                }
                if next.is_some_and(|t| t <= Instant::now()) {
                    let s = &mut server;
                    checkpoint(o, &dir, &job, &mut chain, Kind::Periodic, &scratch, s);
                    next = o.interval.map(|i| Instant::now() + i);
                }
            }
            Wake::Control => match server.handle() {
                Ok(control::Event::Checkpoint(p)) => {
                    info!(
                        "run: restart checkpoint asked by pid {} (request {})",
                        p.pid, p.id
                    );
                    let s = &mut server;
                    restart_checkpoint(o, &dir, &job, &mut chain, &scratch, s, p);
                }
                Ok(_) => {}
                Err(e) => warn!("run: {e}"),
            },
            Wake::Signal(s) if s == libc::SIGTERM => {
                crate::log::write(0, format_args!("run: SIGTERM: final checkpoint"));
                // The job may have ended by itself just before (its
                // SIGCHLD is read after the SIGTERM), or end while the
                // dump freezes it (found a zombie): its status then, as
                // when it ends by itself.
                let ended_by_itself = |job: &Job, server: &mut control::Server| {
                    let code = job.ended()?;
                    if let Some(c) = code {
                        server.sync();
                        crate::log::write(
                            0,
                            format_args!(
                                "run: the job ended with status {c} before its final checkpoint"
                            ),
                        );
                    }
                    Ok::<_, Error>(code)
                };
                if let Some(code) = ended_by_itself(&job, &mut server)? {
                    return Ok(code);
                }
                let s = &mut server;
                let ok = checkpoint(o, &dir, &job, &mut chain, Kind::Final, &scratch, s).is_some();
                if !ok {
                    if let Some(code) = ended_by_itself(&job, &mut server)? {
                        return Ok(code);
                    }
                    warn!("run: the final checkpoint failed: the job is killed; the previous checkpoint stays the newest");
                    job.kill();
                    job.wait();
                    return Ok(1);
                }
                job.wait();
                crate::log::write(
                    0,
                    format_args!("run: checkpointed and stopped; exit 0 (a restart restores it)"),
                );
                return Ok(0);
            }
            Wake::Signal(s) if s == o.checkpoint_signal => {
                let s = &mut server;
                checkpoint(o, &dir, &job, &mut chain, Kind::OnSignal, &scratch, s);
            }
            Wake::Signal(s) if s == libc::SIGINT || s == libc::SIGHUP => {
                info!("run: passing signal {s} on to pid {}", job.root);
                let _ = crate::sys::task::kill(job.root, s);
            }
            Wake::Signal(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("xs").is_err());
    }

    #[test]
    fn signals_parse() {
        assert_eq!(parse_signal("SIGUSR1"), Ok(libc::SIGUSR1));
        assert_eq!(parse_signal("usr2"), Ok(libc::SIGUSR2));
        assert_eq!(parse_signal("10"), Ok(10));
        assert!(parse_signal("SIGTERM").is_err());
        assert!(parse_signal("NOPE").is_err());
    }

    #[test]
    fn names() {
        assert_eq!(ckpt_name(3), "ckpt-000003");
        assert_eq!(ckpt_seq(OsStr::new("ckpt-000003")), Some(3));
        assert_eq!(ckpt_seq(OsStr::new("ckpt-1234567")), Some(1234567));
        assert_eq!(ckpt_seq(OsStr::new("ckpt-3")), None);
        assert_eq!(ckpt_seq(OsStr::new("ckpt-00000x")), None);
        assert_eq!(
            parse_stats("frozen_ms=12.5 image_bytes=4096 pages_read=1"),
            (12.5, 4096)
        );
        // Log lines start with a timestamp.
        assert_eq!(
            log_message("2026-12-06T22:50:31.127Z cairn[5614]: stats dump: frozen_ms=1.0"),
            "stats dump: frozen_ms=1.0"
        );
        assert_eq!(log_message("cairn[7]: warning: x"), "warning: x");
        assert_eq!(
            stat_field("frozen_ms=3.5 copy_ms=812.0 armed_stop_ms=0.4", "copy_ms"),
            Some(812.0)
        );
        assert_eq!(stat_field("frozen_ms=3.5", "copy_ms"), None);
    }
}
