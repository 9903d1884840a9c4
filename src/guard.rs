//! The guardian: what makes a dumper killed at any moment (SIGKILL, OOM,
//! a crash) harmless to the tree it was dumping, and a restorer killed at
//! any moment leave no half-restored process.
//!
//! **Restore**: every process is created traced with `PTRACE_O_EXITKILL`,
//! so while cairn traces them its death kills them; but the tree is let go
//! one process at a time, and a restorer killed in between would leave the
//! processes already let go. So a restore starts a guardian too and tells
//! it each process it creates (the guardian holds a pidfd of each, so a
//! recycled pid is never hit); only when every process is let go does
//! cairn say it is done. A socket that ends before that means the restorer
//! died: the guardian SIGKILLs every process it was told of. That message
//! is the point where a restore becomes complete.
//!
//! **Dump**:
//! When a tracer dies the kernel detaches its tracees and lets them run
//! on (`exit_ptrace`), but it puts nothing back: a thread goes on with
//! the registers and the signal mask the tracer left, a socket stays in
//! TCP repair mode (its owner's reads fail with EPERM, its writes with
//! EINVAL) and the network lock's nftables table stays. So a dump starts
//! a guardian first, `cairn __cairn-guard` (cairn itself, or `chkpnt`,
//! in a session of its own, deaf to SIGINT/SIGTERM/SIGHUP), and tells it
//! through a unix socketpair ([`fdpass`] messages), for each thread, its
//! registers and signal mask before anything was changed, and the parking
//! frame of each thread that runs injected syscalls (`Remote::guard`);
//! around the injected calls that open a descriptor in the target only for
//! cairn to take it (the background snapshot's `userfaultfd`), the kind of
//! descriptor and which of that kind the process had before ([`tell_remote_fd`]); for
//! each socket it is about to put into repair mode, a descriptor of it
//! (SCM_RIGHTS: the guardian holds the same open file, and repair mode can
//! be turned off from any holder) and its SO_REUSEADDR; the name of the
//! nft table once the network is locked; the staging directory. A thread
//! let go in the middle of an injected call finishes the call and then
//! spins in a `gettimeofday(NULL, NULL)` loop of its vDSO instead of
//! running with wrong registers.
//!
//! The guardian waits for the end of the socket. A dumper that finishes
//! (thawed or killed the tree) says so first ([`Guardian::done`]) and the
//! guardian just exits. A socket that ends without that means the dumper
//! died: the guardian takes every socket out of repair mode (the threads
//! that could use them are still parked), seizes every thread it was told
//! of (waiting until the dead tracer's detach has happened), closes, from
//! a thread found in its parking loop, a descriptor its interrupted calls
//! opened for cairn, puts back the
//! registers of each thread found in its parking loop and the signal mask
//! of each thread that still has everything blocked, detaches, then (repair
//! mode off first) deletes the lock table and removes the staging
//! directory. The tree then runs on exactly as before; what stays is the
//! dump's 64 KiB scratch mapping in a process that was killed during its
//! remote phase. A dumper that died after it said the images are complete
//! and it kills the tree ([`tell_killing`]) leaves the kill to finish:
//! the guardian SIGKILLs what is left of the tree and keeps the lock.
//!
//! SIGINT, SIGTERM and SIGHUP to the dumper or restorer: see
//! [`Interrupts`].

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::sys::fdpass;
use crate::sys::ptrace::{self, UserRegs};
use crate::sys::{inject, uffd};
use crate::warn;

/// First argument that makes `cairn` run as a guardian.
pub const GUARD_ARG: &str = "__cairn-guard";

/// Environment variable that makes a dump or restore wait at a named
/// point until it is interrupted (or two minutes pass), saying so on
/// stderr first: how the tests stop cairn at a chosen moment.
pub const PAUSE_ENV: &str = "CAIRN_PAUSE_AT";

/// How long an interrupted dump may take to put the tree back itself
/// before it hands over to the guardian.
const HANDOVER_AFTER: Duration = Duration::from_secs(20);

/// What the guardian watches over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Dump,
    Restore,
}

impl Role {
    fn arg(self) -> &'static str {
        match self {
            Role::Dump => "dump",
            Role::Restore => "restore",
        }
    }
    fn unguarded(self) -> &'static str {
        match self {
            Role::Dump => "a killed dump would leave the tree with all signals blocked",
            Role::Restore => "a restore killed while letting the tree go could leave part of it",
        }
    }
}

/// The hidden first arguments with which cairn (and `chkpnt`, `resume`,
/// which re-execute themselves the same way) runs one of its helpers:
/// the guardian and the tracking keeper. `None`: an ordinary command line.
pub fn run_hidden() -> Option<u8> {
    let first = std::env::args_os().nth(1)?;
    let arg = |n| std::env::args().nth(n).unwrap_or_default();
    if first == GUARD_ARG {
        return Some(run(&arg(2), &arg(3)));
    }
    if first == crate::migrate::guardian::ARG {
        return Some(crate::migrate::guardian::run(&arg(2)));
    }
    if first == crate::track::keeper::KEEPER_ARG {
        return Some(crate::track::keeper::run(&arg(2)));
    }
    None
}

/// What the dumper (restorer) shares between its threads about the
/// guardian and about SIGINT/SIGTERM/SIGHUP; see [`Interrupts`].
struct Shared {
    /// Our end of the socket to the guardian.
    link: Option<UnixStream>,
    guardian: Option<u32>,
    role: Option<Role>,
    /// Past the point of no return: a dump that commits its images, a
    /// restore that let its tree go. Signals no longer roll back.
    committed: bool,
    /// The command is over (its rollback included).
    finished: bool,
    /// A signal that came after the commit point.
    late: i32,
}

static SHARED: Mutex<Shared> = Mutex::new(Shared {
    link: None,
    guardian: None,
    role: None,
    committed: false,
    finished: false,
    late: 0,
});

/// Set in a guardian: its own calls into a thread never pause (the
/// pause points are the dumper's, and the guardian inherits its
/// environment).
static NO_PAUSES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The first SIGINT/SIGTERM/SIGHUP of a dump not yet committed (0: none).
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

fn shared() -> std::sync::MutexGuard<'static, Shared> {
    SHARED.lock().unwrap_or_else(|e| e.into_inner())
}

fn send_locked(s: &mut Shared, payload: &[u8], fds: &[std::os::fd::RawFd]) {
    if let Some(l) = &mut s.link {
        if let Err(e) = fdpass::send_msg(l, payload, fds) {
            warn!("guardian {}: {e}", s.guardian.unwrap_or(0));
            s.link = None;
        }
    }
}

fn send(payload: &[u8], fds: &[std::os::fd::RawFd]) {
    send_locked(&mut shared(), payload, fds);
}

/// The dumper (restorer) side of a guardian.
pub struct Guardian {
    child: Child,
}

fn regs_words(r: &UserRegs) -> [u64; 27] {
    [
        r.r15, r.r14, r.r13, r.r12, r.rbp, r.rbx, r.r11, r.r10, r.r9, r.r8, r.rax, r.rcx, r.rdx,
        r.rsi, r.rdi, r.orig_rax, r.rip, r.cs, r.eflags, r.rsp, r.ss, r.fs_base, r.gs_base, r.ds,
        r.es, r.fs, r.gs,
    ]
}

fn regs_from(w: &[u64]) -> Option<UserRegs> {
    let w: &[u64; 27] = w.try_into().ok()?;
    Some(UserRegs {
        r15: w[0],
        r14: w[1],
        r13: w[2],
        r12: w[3],
        rbp: w[4],
        rbx: w[5],
        r11: w[6],
        r10: w[7],
        r9: w[8],
        r8: w[9],
        rax: w[10],
        rcx: w[11],
        rdx: w[12],
        rsi: w[13],
        rdi: w[14],
        orig_rax: w[15],
        rip: w[16],
        cs: w[17],
        eflags: w[18],
        rsp: w[19],
        ss: w[20],
        fs_base: w[21],
        gs_base: w[22],
        ds: w[23],
        es: w[24],
        fs: w[25],
        gs: w[26],
    })
}

impl Guardian {
    /// Starts the guardian. `None` (with a warning) if it cannot be
    /// started: the dump then goes on unguarded. A restore's guardian
    /// also starts the restore's handling of SIGINT/SIGTERM/SIGHUP
    /// ([`Interrupts`]): only here is the restoring process (the helper
    /// of `restore -d`) past its single-threaded fork.
    pub fn start(role: Role) -> Option<Guardian> {
        let t0 = Instant::now();
        let r = UnixStream::pair().and_then(|(ours, theirs)| {
            use std::os::unix::process::CommandExt;
            let exe = std::env::current_exe()?;
            let child = Command::new(exe)
                .arg(GUARD_ARG)
                .arg(role.arg())
                .arg(std::process::id().to_string())
                .stdin(Stdio::from(OwnedFd::from(theirs)))
                .stdout(Stdio::null())
                .process_group(0)
                .spawn()?;
            Ok((ours, child))
        });
        match r {
            Ok((ours, child)) => {
                crate::info!(
                    "guardian started (pid {}) in {:?}",
                    child.id(),
                    t0.elapsed()
                );
                {
                    let mut s = shared();
                    s.link = Some(ours);
                    s.guardian = Some(child.id());
                }
                if role == Role::Restore {
                    Interrupts::install(Role::Restore).leak();
                }
                Some(Guardian { child })
            }
            Err(e) => {
                warn!("cannot start the guardian ({e}): {}", role.unguarded());
                None
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A thread as it was frozen, before anything of it was changed.
    pub fn thread(&mut self, tid: i32, regs: &UserRegs, sigmask: u64) {
        let mut line = format!("T {tid} {sigmask:x}");
        for w in regs_words(regs) {
            line.push_str(&format!(" {w:x}"));
        }
        send(line.as_bytes(), &[]);
    }

    /// A thread that runs injected calls with parking frame `frame`; its
    /// parking loop is `lo..=hi`.
    pub fn parking(&mut self, tid: i32, frame: u64, lo: u64, hi: u64) {
        send(format!("P {tid} {frame:x} {lo:x} {hi:x}").as_bytes(), &[]);
    }

    /// cairn's own parking page (`remote::own_parking_site`) at `page` in
    /// process `pid`: a dumper that dies leaves it there, and the guardian
    /// unmaps it from the leader parked in it.
    pub fn parking_page(&mut self, pid: i32, page: u64) {
        send(format!("G {pid} {page:x}").as_bytes(), &[]);
    }

    /// A restored process, killed if the restorer dies before
    /// [`Guardian::done`].
    pub fn process(&mut self, pid: i32) {
        let n = {
            let mut s = shared();
            send_locked(&mut s, format!("K {pid}").as_bytes(), &[]);
            PROCESSES.fetch_add(1, Ordering::SeqCst) + 1
        };
        let _ = pause_at(&format!("restore-process-{n}"));
    }

    /// Every thread is thawed or killed (dump), every process let go
    /// (restore): the guardian exits doing nothing. For a restore this is
    /// the point where it is complete: a signal that comes later no longer
    /// rolls it back.
    pub fn done(mut self) {
        {
            let mut s = shared();
            send_locked(&mut s, b"D", &[]);
            s.link = None;
            s.guardian = None;
            if s.role == Some(Role::Restore) {
                s.committed = true;
            }
        }
        let _ = self.child.wait();
    }
}

/// Restored processes told to the guardian (for the pause points).
static PROCESSES: AtomicI32 = AtomicI32::new(0);

/// A socket that the dump puts into repair mode (`reuse`: its
/// SO_REUSEADDR before). Told before repair mode is turned on: a
/// guardian turning it off on a socket that is not in repair mode does no
/// harm.
pub fn tell_socket(sock: &impl AsRawFd, ino: u64, reuse: i32) {
    send(format!("S {ino} {reuse}").as_bytes(), &[sock.as_raw_fd()]);
}

/// Injected calls of thread `tid` (at the `syscall` `insn`) are about to
/// open a descriptor in its process only for cairn to take it and close
/// it there (`track::create_uffd_in_target`): `link` is what
/// /proc/PID/fd shows for one (no spaces), `before` the descriptors of
/// that kind the process has now. A dumper killed before
/// [`tell_remote_fd_closed`] leaves it open in the target: the guardian
/// closes there, from the parked thread, every such descriptor that was
/// not in `before`.
pub fn tell_remote_fd(tid: i32, insn: u64, link: &str, before: &[i32]) {
    let mut m = format!("F {tid} {insn:x} {link}");
    for fd in before {
        m.push_str(&format!(" {fd}"));
    }
    send(m.as_bytes(), &[]);
}

/// The descriptor of [`tell_remote_fd`] is closed in the target again.
pub fn tell_remote_fd_closed(tid: i32) {
    send(format!("f {tid}").as_bytes(), &[]);
}

/// The nftables table this dump created for its network lock.
pub fn tell_lock(table: &str) {
    send(format!("N {table}").as_bytes(), &[]);
}

/// The dump's staging directory (removed if the dumper dies). The
/// guardian gets the directory that holds it as a descriptor and removes
/// it by name through that descriptor, never by path: a path could lead
/// elsewhere by then.
pub fn tell_staging(staging: &crate::image::staging::Staging) {
    use std::os::unix::ffi::OsStrExt;
    let (parent, name) = staging.parent_and_name();
    let mut m = b"W ".to_vec();
    m.extend_from_slice(name.as_bytes());
    m.push(0);
    m.extend_from_slice(staging.work_path().as_os_str().as_bytes());
    send(&m, &[parent.as_raw_fd()]);
}

/// The images are in place and the tree is about to be killed: from now
/// on the dump is complete, and a guardian whose dumper dies finishes the
/// kill instead of putting anything back.
pub fn tell_killing() {
    send(b"X", &[]);
}

/// The tree runs again before the images are complete (a background
/// snapshot thaws it and copies its pages afterwards): nothing of the
/// tree is left to put back, only the staging directory to remove if the
/// dumper dies before the end.
pub fn tell_thawed() {
    send(b"R", &[]);
}

// ------------------------------------------------------------ signals

fn sig_name(sig: i32) -> &'static str {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str())
        .unwrap_or("a signal")
}

fn handled() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set
}

/// SIGINT, SIGTERM and SIGHUP during a dump or a restore. They are
/// blocked in the calling thread (and so in every thread it starts
/// later) and taken by a thread of their own with `sigwait`, so no code
/// ever runs in signal context:
///
/// - **Dump**: the first signal sets a flag that the dump checks at safe
///   points ([`check`], [`pause_at`], [`commit`]); the dump then fails
///   the ordinary way (repair mode off, network unlocked, tree thawed,
///   staging directory removed) and exits with 128 + the signal's number.
///   A second signal, or a dump that has not finished rolling back after
///   20 s, hands over to the guardian (cairn exits; the guardian puts the
///   tree back as for a SIGKILL). Once the dump passed [`commit`] a
///   signal changes nothing: the dump completes.
/// - **Restore**: a signal before the tree is let go ([`Guardian::done`])
///   hands over at once: the guardian kills what was let go so far, cairn
///   exits and takes the processes it still traces with it. Later, cairn
///   just exits with 128 + the signal's number as before.
pub struct Interrupts {
    old: Option<nix::sys::signal::SigSet>,
}

impl Interrupts {
    /// Starts handling the signals for `role`.
    pub fn install(role: Role) -> Interrupts {
        use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};
        {
            let mut s = shared();
            s.role = Some(role);
            s.committed = false;
            s.finished = false;
            s.late = 0;
        }
        INTERRUPTED.store(0, Ordering::SeqCst);
        let set = handled();
        let mut old = SigSet::empty();
        if let Err(e) = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)) {
            warn!("cannot block SIGINT/SIGTERM/SIGHUP: {e}");
            return Interrupts { old: None };
        }
        static STARTED: std::sync::Once = std::sync::Once::new();
        STARTED.call_once(|| {
            let r = std::thread::Builder::new()
                .name("cairn-signals".into())
                .spawn(move || loop {
                    match set.wait() {
                        Ok(sig) => on_signal(sig as i32),
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                });
            if let Err(e) = r {
                warn!("cannot start the signal thread: {e}");
            }
        });
        Interrupts { old: Some(old) }
    }

    /// Keeps handling signals until the process exits.
    fn leak(self) {
        std::mem::forget(self);
    }
}

impl Drop for Interrupts {
    /// The command is over: signals act as they did before.
    fn drop(&mut self) {
        use nix::sys::signal::{pthread_sigmask, SigmaskHow};
        shared().finished = true;
        if let Some(old) = &self.old {
            let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(old), None);
        }
    }
}

fn on_signal(sig: i32) {
    let mut s = shared();
    let role = s.role;
    if s.finished || role.is_none() {
        drop(s);
        std::process::exit(128 + sig);
    }
    match role {
        Some(Role::Restore) => {
            if s.committed {
                std::process::exit(128 + sig);
            }
            handover_restore(&mut s, sig)
        }
        _ if s.committed => {
            s.late = sig;
        }
        _ if INTERRUPTED.load(Ordering::SeqCst) != 0 => handover_dump(sig),
        _ => {
            INTERRUPTED.store(sig, Ordering::SeqCst);
            eprintln!(
                "cairn: {}: stopping the dump and putting the tree back as it was (another \
                 signal hands over to the guardian at once)",
                sig_name(sig)
            );
            drop(s);
            let _ = std::thread::Builder::new().spawn(move || {
                std::thread::sleep(HANDOVER_AFTER);
                let s = shared();
                if !s.finished && !s.committed {
                    handover_dump(sig);
                }
            });
        }
    }
}

/// Exits (with [`SHARED`] held, so the dump never reaches its commit
/// point): the guardian puts the tree back.
fn handover_dump(sig: i32) -> ! {
    eprintln!(
        "cairn: interrupted by {}: handed over to the guardian, which puts the tree back as \
         it was",
        sig_name(sig)
    );
    std::process::exit(128 + sig)
}

/// Ends the link to the guardian (which kills every process let go so
/// far), waits for it, and exits; the processes cairn still traces die
/// with it (PTRACE_O_EXITKILL).
fn handover_restore(s: &mut Shared, sig: i32) -> ! {
    if let Some(l) = s.link.take() {
        let _ = l.shutdown(std::net::Shutdown::Both);
        drop(l);
        if let Some(fd) = s.guardian.and_then(|g| uffd::pidfd_open(g as i32).ok()) {
            let _ = fdpass::poll2(&fd, &fd, 10_000);
        }
    }
    eprintln!(
        "cairn: interrupted by {}: the restore was rolled back, no process of the tree is left",
        sig_name(sig)
    );
    std::process::exit(128 + sig)
}

/// The signal that interrupted the dump, if any.
pub fn interrupted() -> Option<i32> {
    match INTERRUPTED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// The error a dump fails with once interrupted (exit code 128 + signal).
pub fn interrupted_error(sig: i32, what: String) -> Error {
    Error::Forwarded {
        code: (128 + sig).clamp(0, 255) as u8,
        msg: format!("interrupted by {}: {what}", sig_name(sig)),
    }
}

/// A safe point of the dump: an error if it was interrupted.
pub fn check() -> Result<()> {
    match interrupted() {
        Some(sig) => Err(interrupted_error(sig, "the dump stops".into())),
        None => Ok(()),
    }
}

/// The dump's point of no return (just before its images are moved into
/// place): an error if it was interrupted; after it, signals change
/// nothing.
pub fn commit() -> Result<()> {
    let mut s = shared();
    check()?;
    s.committed = true;
    Ok(())
}

/// A signal that came after [`commit`] (0: none).
pub fn late_signal() -> Option<&'static str> {
    match shared().late {
        0 => None,
        s => Some(sig_name(s)),
    }
}

/// Environment variable for tests: a path whose appearance ends a
/// [`pause_at`] pause early (the step then goes on), e.g. to signal the
/// frozen tree in the middle of a dump and let the dump continue.
pub const PAUSE_UNTIL_ENV: &str = "CAIRN_PAUSE_UNTIL";

/// If [`PAUSE_ENV`] names `point`, says so on stderr and waits until the
/// dump is interrupted (an error), the path [`PAUSE_UNTIL_ENV`] names
/// exists, or two minutes pass.
/// `POINT!` waits without looking at the flag: a step that takes long
/// (what the hand-over to the guardian is for).
pub fn pause_at(point: &str) -> Result<()> {
    if NO_PAUSES.load(Ordering::Relaxed) {
        return Ok(());
    }
    let Some(v) = std::env::var_os(PAUSE_ENV) else {
        return Ok(());
    };
    let stuck = v == format!("{point}!").as_str();
    if v != point && !stuck {
        return Ok(());
    }
    eprintln!("cairn: paused at {point} ({PAUSE_ENV})");
    let end = Instant::now() + Duration::from_secs(120);
    let until = std::env::var_os(PAUSE_UNTIL_ENV).map(PathBuf::from);
    while Instant::now() < end {
        if until.as_ref().is_some_and(|p| p.exists()) {
            break;
        }
        if !stuck {
            check()?;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// `CAIRN_PAUSE_AT=syscall-NR` (or `syscall-NR-K`): [`pause_at`] in the
/// first (K-th) call of syscall number NR that cairn injects into a
/// target, at its syscall-entry stop: a cairn killed there lets the
/// thread run the call and go on from the `syscall` instruction with the
/// registers cairn gave it (what the parking loops are for); an
/// `unguarded` call (no parking loop holds the thread after it) is said
/// so first. Called by `sys::inject::Remote`.
pub fn pause_in_call(nr: i64, unguarded: bool) {
    if NO_PAUSES.load(Ordering::Relaxed) {
        return;
    }
    static WANT: std::sync::OnceLock<Option<(i64, u32, String)>> = std::sync::OnceLock::new();
    static SEEN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let want = WANT.get_or_init(|| {
        let v = std::env::var(PAUSE_ENV).ok()?;
        let rest = v.strip_prefix("syscall-")?;
        let (n, k) = match rest.split_once('-') {
            Some((n, k)) => (n.parse().ok()?, k.parse().ok()?),
            None => (rest.parse().ok()?, 1),
        };
        Some((n, k, v))
    });
    if let Some((n, k, point)) = want {
        if *n == nr && SEEN.fetch_add(1, Ordering::SeqCst) + 1 == *k {
            if unguarded {
                eprintln!("cairn: {point}: an unguarded call");
            }
            // Interrupted: the call goes on, the dump stops at its next
            // safe point.
            let _ = pause_at(point);
        }
    }
}

// ------------------------------------------------------------ the guardian

#[derive(Default)]
struct Record {
    regs: Option<UserRegs>,
    sigmask: u64,
    parking: Option<(u64, u64, u64)>,
    /// Injected calls of this thread are opening a descriptor for cairn
    /// ([`tell_remote_fd`]).
    opening: Option<RemoteFd>,
}

/// A descriptor being opened in a target for cairn to take: the `syscall`
/// the thread's calls run at, what /proc/PID/fd names such a descriptor,
/// and those the process had before.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RemoteFd {
    insn: u64,
    link: String,
    before: Vec<i32>,
}

/// All signals blocked as the kernel reports it (SIGKILL and SIGSTOP
/// cannot be blocked).
fn all_blocked(mask: u64) -> bool {
    mask | (1 << (libc::SIGKILL - 1)) | (1 << (libc::SIGSTOP - 1)) == u64::MAX
}

/// What a guardian was told.
#[derive(Default)]
struct Told {
    threads: BTreeMap<i32, Record>,
    /// Pidfds of the dumped processes (opened while they are frozen).
    dumped: Vec<(i32, OwnedFd)>,
    procs: Vec<(i32, OwnedFd)>,
    /// Sockets in repair mode: (inode, SO_REUSEADDR before, our dup).
    sockets: Vec<(u64, i32, OwnedFd)>,
    /// cairn's own parking pages: (pid, address).
    pages: Vec<(i32, u64)>,
    table: Option<String>,
    /// The directory holding the staging directory, its name there, and
    /// its path (for messages).
    staging: Option<(OwnedFd, std::ffi::OsString, PathBuf)>,
    killing: bool,
    done: bool,
}

impl Told {
    fn take(&mut self, payload: &[u8], fds: Vec<OwnedFd>) {
        if let Some(p) = payload.strip_prefix(b"W ") {
            use std::os::unix::ffi::OsStrExt;
            let mut parts = p.splitn(2, |&b| b == 0);
            let name = std::ffi::OsStr::from_bytes(parts.next().unwrap_or_default());
            let shown = PathBuf::from(std::ffi::OsStr::from_bytes(
                parts.next().unwrap_or_default(),
            ));
            if let Some(fd) = fds.into_iter().next() {
                self.staging = Some((fd, name.to_os_string(), shown));
            }
            return;
        }
        let line = String::from_utf8_lossy(payload);
        let f: Vec<&str> = line.split_whitespace().collect();
        let hex = |s: &str| u64::from_str_radix(s, 16).ok();
        match f.as_slice() {
            ["D"] => self.done = true,
            ["X"] => self.killing = true,
            ["R"] => {
                self.threads.clear();
                self.dumped.clear();
                self.sockets.clear();
                self.pages.clear();
                self.table = None;
            }
            ["T", tid, mask, regs @ ..] => {
                let (Ok(tid), Some(mask)) = (tid.parse::<i32>(), hex(mask)) else {
                    return;
                };
                let words: Option<Vec<u64>> = regs.iter().map(|w| hex(w)).collect();
                let r = self.threads.entry(tid).or_default();
                r.regs = words.as_deref().and_then(regs_from);
                r.sigmask = mask;
                // A thread group leader (the dumper holds it frozen, so the
                // pidfd is the right process); other threads fail here.
                if let Ok(fd) = uffd::pidfd_open(tid) {
                    self.dumped.push((tid, fd));
                }
            }
            ["K", pid] => {
                // The pidfd is opened while the restorer still holds the
                // process (traced, unreaped): it is the right one.
                if let Some(fd) = pid
                    .parse::<i32>()
                    .ok()
                    .and_then(|p| uffd::pidfd_open(p).ok().map(|fd| (p, fd)))
                {
                    self.procs.push(fd);
                }
            }
            ["P", tid, frame, lo, hi] => {
                if let (Ok(tid), Some(fr), Some(lo), Some(hi)) =
                    (tid.parse::<i32>(), hex(frame), hex(lo), hex(hi))
                {
                    self.threads.entry(tid).or_default().parking = Some((fr, lo, hi));
                }
            }
            ["G", pid, page] => {
                if let (Ok(pid), Some(page)) = (pid.parse::<i32>(), hex(page)) {
                    self.pages.push((pid, page));
                }
            }
            ["S", ino, reuse] => {
                if let (Ok(ino), Ok(reuse), Some(fd)) = (
                    ino.parse::<u64>(),
                    reuse.parse::<i32>(),
                    fds.into_iter().next(),
                ) {
                    self.sockets.push((ino, reuse, fd));
                }
            }
            ["N", table] => self.table = Some(table.to_string()),
            ["F", tid, insn, link, before @ ..] => {
                if let (Ok(tid), Some(insn)) = (tid.parse::<i32>(), hex(insn)) {
                    let before = before.iter().filter_map(|f| f.parse().ok()).collect();
                    self.threads.entry(tid).or_default().opening = Some(RemoteFd {
                        insn,
                        link: link.to_string(),
                        before,
                    });
                }
            }
            ["f", tid] => {
                if let Some(r) = tid.parse().ok().and_then(|t: i32| self.threads.get_mut(&t)) {
                    r.opening = None;
                }
            }
            _ => {}
        }
    }
}

/// Raises the soft limit of open descriptors to the hard one (a guardian
/// holds one or more per object it guards).
pub fn raise_nofile() {
    if let Some(l) = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum {
        let _ = rustix::process::setrlimit(
            rustix::process::Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(l),
                maximum: Some(l),
            },
        );
    }
}

/// `cairn __cairn-guard dump|restore PID`: see the module documentation.
/// Returns the exit code.
pub fn run(role: &str, dumper: &str) -> u8 {
    NO_PAUSES.store(true, Ordering::Relaxed);
    let _ = nix::unistd::setsid();
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
        let _ = crate::sys::task::ignore_signal(sig);
    }
    // One descriptor per socket in repair mode and per process.
    raise_nofile();
    let mut told = Told::default();
    if let Ok(fd) = std::io::stdin().as_fd().try_clone_to_owned() {
        let mut link = UnixStream::from(fd);
        // Ends with the dumper: its end is closed when it exits.
        loop {
            match fdpass::recv_msg(&mut link) {
                Ok((payload, fds)) => told.take(&payload, fds),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => {
                    // Lost the thread of the messages (e.g. descriptors
                    // beyond our limit): acting on a partial picture, or
                    // on a dumper that is alive, could do harm. Stand down.
                    eprintln!(
                        "cairn guard: messages of pid {dumper} unreadable ({e}); not guarding it"
                    );
                    let _ = std::io::copy(&mut link, &mut std::io::sink());
                    return 1;
                }
            }
        }
    }
    if told.done {
        return 0;
    }
    if role == "restore" {
        let procs = &told.procs;
        let killed = procs
            .iter()
            .filter(|(_, fd)| uffd::pidfd_kill(fd, libc::SIGKILL).is_ok())
            .count();
        if !procs.is_empty() {
            eprintln!(
                "cairn guard: the restorer (pid {dumper}) died before the tree was let go; \
                 killed {killed} of its {} processes",
                procs.len()
            );
        }
        return 0;
    }
    if told.killing {
        // The images are complete: finish what the dumper began.
        let killed = told
            .dumped
            .iter()
            .filter(|(_, fd)| uffd::pidfd_kill(fd, libc::SIGKILL).is_ok())
            .count();
        eprintln!(
            "cairn guard: the dumper (pid {dumper}) died while killing the tree after a \
             complete dump; killed the {killed} processes left"
        );
        return 0;
    }
    if told.threads.is_empty() && told.sockets.is_empty() && told.table.is_none() {
        remove_staging(told.staging.as_ref(), dumper);
        return 0;
    }
    let mut failed = 0;
    // Sockets first: every thread the dump touched spins in its parking
    // loop until its registers are put back below, so none of them can
    // meet a socket still in repair mode.
    let mut sockets_fixed = 0;
    for (ino, reuse, fd) in &told.sockets {
        match crate::kinds::tcp::repair_off_untouched(fd, *reuse) {
            Ok(()) => sockets_fixed += 1,
            Err(e) => {
                failed += 1;
                eprintln!("cairn guard: socket inode {ino}: {e}");
            }
        }
    }
    let (mut regs_fixed, mut masks_fixed, mut fds_closed, mut pages_removed) = (0, 0, 0, 0);
    // A leader parked in cairn's own parking page of its process goes
    // last and unmaps it, once every other thread parked there has its
    // registers back (none of them runs in it any more).
    let own_page = |tid: i32, rec: &Record| {
        let lo = rec.parking.map(|p| p.1)?;
        told.pages.contains(&(tid, lo)).then_some(lo)
    };
    let mut kept = std::collections::BTreeSet::new();
    let (leaders, others): (Vec<_>, Vec<_>) = (told.threads.iter())
        .map(|(&tid, rec)| (tid, rec, own_page(tid, rec)))
        .partition(|t| t.2.is_some());
    let mut unmapped = Vec::new();
    for (tid, rec, page) in others.into_iter().chain(leaders) {
        let unmap = page.filter(|p| !kept.contains(p));
        match repair(tid, rec, unmap) {
            Ok(d) => {
                regs_fixed += d.regs as usize;
                masks_fixed += d.mask as usize;
                fds_closed += d.closed;
                pages_removed += d.unmapped as usize;
                if d.unmapped {
                    unmapped.push(tid);
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("cairn guard: thread {tid}: {e}");
                // Perhaps still in a parking page: it stays.
                if let Some((_, lo, _)) = rec.parking {
                    kept.insert(lo);
                }
            }
        }
    }
    // A page told but not in use as a parking loop (the dumper died
    // between its mmap and the parking frame): removed from the leader,
    // if what is at that address is still only cairn's page.
    for &(pid, page) in &told.pages {
        if unmapped.contains(&pid) || kept.contains(&page) {
            continue;
        }
        match remove_parking_page(pid, page) {
            Ok(true) => pages_removed += 1,
            Ok(false) => {}
            Err(e) => {
                failed += 1;
                eprintln!("cairn guard: pid {pid}: cairn's parking page at {page:#x}: {e}");
            }
        }
    }
    // Only with repair mode off is the network unlocked: a packet that
    // reached a socket in repair mode could be answered wrongly.
    let mut unlocked = String::new();
    if let Some(t) = &told.table {
        match crate::netlock::unlock_table(t) {
            Ok(()) => unlocked = format!(", removed the network lock (nft table inet {t})"),
            Err(e) => {
                failed += 1;
                eprintln!("cairn guard: network lock nft table inet {t}: {e}");
            }
        }
    }
    remove_staging(told.staging.as_ref(), dumper);
    eprintln!(
        "cairn guard: the dumper (pid {dumper}) died during the dump; of {} threads, put back \
         the registers of {regs_fixed} and the signal mask of {masks_fixed}{}{}; took \
         {sockets_fixed} of {} sockets out of repair mode{unlocked}{}",
        told.threads.len(),
        if fds_closed > 0 {
            format!(", closed {fds_closed} descriptor(s) an interrupted call had opened")
        } else {
            String::new()
        },
        if pages_removed > 0 {
            format!(", removed cairn's parking page from {pages_removed} process(es)")
        } else {
            String::new()
        },
        told.sockets.len(),
        if failed > 0 {
            format!(", {failed} failed")
        } else {
            String::new()
        }
    );
    u8::from(failed > 0)
}

/// Removes the staging directory of a dead dumper, through the descriptor
/// of the directory that holds it: only a real directory owned by us (a
/// link is never followed) whose name is a staging name of that dumper's
/// pid, and only the regular files in it.
fn remove_staging(st: Option<&(OwnedFd, std::ffi::OsString, PathBuf)>, dumper: &str) {
    let Some((parent, name, shown)) = st else {
        return;
    };
    let n = name.to_string_lossy();
    let tag = format!("cairn-tmp-{dumper}-");
    if !n.starts_with('.') || !n.contains(&tag) || !crate::image::staging::is_staging_name(name) {
        return;
    }
    if let Err(e) = crate::image::staging::remove_stale(parent.as_fd(), name, shown) {
        if !matches!(&e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
        {
            eprintln!("cairn guard: {e}");
        }
    }
}

/// What [`repair`] put back in a thread: its registers, its mask, how many
/// descriptors it closed, whether it unmapped cairn's parking page.
#[derive(Default)]
struct Repaired {
    regs: bool,
    mask: bool,
    closed: usize,
    unmapped: bool,
}

/// Seizes `tid` and stops it once the dead dumper's detach is through;
/// false if it is gone.
fn seize_after_dumper(tid: i32) -> std::io::Result<bool> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // TRACESYSGOOD: the stops of a call made here (`close_opened`).
        match inject::seize_and_stop(tid, libc::PTRACE_O_TRACESYSGOOD as u64) {
            Ok(_) => return Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(false),
            // Still traced by the dumper until its exit completes.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Seizes `tid` once the dead dumper's detach is through, puts back what
/// the dump changed, detaches. Found in its parking loop, with `unmap`
/// (cairn's own parking page, that loop's page): unmaps it first, by a
/// call at the page's `syscall`.
fn repair(tid: i32, rec: &Record, unmap: Option<u64>) -> std::io::Result<Repaired> {
    if !seize_after_dumper(tid)? {
        return Ok(Repaired::default());
    }
    let r = (|| -> std::io::Result<Repaired> {
        let now = ptrace::get_regs(tid)?;
        let mut done = Repaired::default();
        if let (Some(orig), Some((frame, lo, hi))) = (&rec.regs, rec.parking) {
            if now.rbp == frame && (lo..=hi).contains(&now.rip) {
                if let Some(o) = &rec.opening {
                    done.closed = close_opened(tid, o)?;
                }
                if let Some(page) = unmap {
                    // Its loop runs in it: the page is there. Left there
                    // if this fails; the registers go back all the same.
                    let u = inject::Remote::new(tid, page).and_then(|mut r| {
                        r.syscall(libc::SYS_munmap, &[page, crate::sys::PAGE_SIZE])
                    });
                    match u {
                        Ok(_) => done.unmapped = true,
                        Err(e) => eprintln!(
                            "cairn guard: thread {tid}: munmap of cairn's parking page at \
                             {page:#x}: {e}"
                        ),
                    }
                }
                ptrace::set_regs(tid, orig)?;
                done.regs = true;
            }
        }
        let mask = ptrace::get_sigmask(tid)?;
        done.mask = mask != rec.sigmask && all_blocked(mask);
        if done.mask {
            ptrace::set_sigmask(tid, rec.sigmask)?;
        }
        Ok(done)
    })();
    let d = ptrace::detach(tid, 0);
    let r = r?;
    d?;
    Ok(r)
}

/// Removes cairn's own parking page at `page` from process `pid` if it is
/// there as cairn maps it (`remote::own_parking_site`): one anonymous
/// private read-and-execute page, alone (the pages beside it unmapped),
/// holding `remote::PARKING_CODE` or nothing yet. The leader, seized, runs
/// the `munmap` at the page's first `syscall` (written first if the page
/// is still empty) and gets its registers back. Whether it was removed.
fn remove_parking_page(pid: i32, page: u64) -> std::io::Result<bool> {
    use crate::remote::PARKING_CODE;
    let size = crate::sys::PAGE_SIZE;
    // Seized first: the leader cannot run in the page while it is looked
    // at (the target knows nothing of the page; a thread that mapped
    // something of its own there would fail the checks below).
    if !seize_after_dumper(pid)? {
        return Ok(false);
    }
    let r = (|| -> std::io::Result<bool> {
        let maps =
            crate::procfs::read_maps(pid).map_err(|e| std::io::Error::other(e.to_string()))?;
        let ours = maps.iter().any(|m| {
            m.start == page
                && m.end == page + size
                && m.read
                && m.exec
                && !m.write
                && !m.shared
                && m.inode == 0
                && m.path.is_empty()
        }) && !maps.iter().any(|m| m.end == page || m.start == page + size);
        if !ours {
            return Ok(false);
        }
        let mut buf = vec![0u8; size as usize];
        crate::sys::mem::vm_read_all(pid, page, &mut buf)?;
        let code = PARKING_CODE.len();
        let empty = buf.iter().all(|&b| b == 0);
        if !empty && (buf[..code] != PARKING_CODE || buf[code..].iter().any(|&b| b != 0)) {
            return Ok(false);
        }
        if empty {
            crate::sys::mem::force_write(pid, page, &PARKING_CODE)?;
        }
        let mut r = inject::Remote::new(pid, page)?;
        let orig = *r.base();
        r.syscall(libc::SYS_munmap, &[page, size])?;
        // Into the signal path before the registers go back (a call it
        // was in restarts as it would have).
        inject::park(pid)?;
        ptrace::set_regs(pid, &orig)?;
        Ok(true)
    })();
    let d = ptrace::detach(pid, 0);
    let r = r?;
    d?;
    Ok(r)
}

/// In `tid`, stopped in its parking loop: closes every descriptor of its
/// process that /proc names `o.link` and that was not there before the
/// interrupted calls (`o.before`). Returns how many.
fn close_opened(tid: i32, o: &RemoteFd) -> std::io::Result<usize> {
    let fds = crate::procfs::read_fds(tid).map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut r = inject::Remote::new(tid, o.insn)?;
    let mut closed = 0;
    for (fd, link) in fds {
        if link == o.link && !o.before.contains(&fd) {
            r.syscall(libc::SYS_close, &[fd as u64])?;
            closed += 1;
        }
    }
    Ok(closed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regs_round_trip() {
        let r = UserRegs {
            rip: 0x1234,
            gs: 7,
            r15: u64::MAX,
            ..Default::default()
        };
        assert_eq!(regs_from(&regs_words(&r)), Some(r));
        assert_eq!(regs_from(&[1, 2, 3]), None);
    }

    #[test]
    fn guardian_messages() {
        let mut t = Told::default();
        let (a, _b) = UnixStream::pair().unwrap();
        t.take(b"S 1234 1", vec![OwnedFd::from(a)]);
        t.take(b"S 99 0", vec![]);
        t.take(b"N cairn_7_8", vec![]);
        let (c, _d) = UnixStream::pair().unwrap();
        t.take(
            b"W .x.cairn-tmp-5-ab\0/tmp/a dir/.x.cairn-tmp-5-ab",
            vec![OwnedFd::from(c)],
        );
        t.take(b"P 7 10 20 30", vec![]);
        t.take(b"G 7 20", vec![]);
        assert_eq!(t.pages, [(7, 0x20)]);
        t.take(b"F 7 4a anon_inode:[userfaultfd] 3 9", vec![]);
        assert_eq!(
            t.threads[&7].opening,
            Some(RemoteFd {
                insn: 0x4a,
                link: "anon_inode:[userfaultfd]".into(),
                before: vec![3, 9]
            })
        );
        t.take(b"f 7", vec![]);
        assert_eq!(t.threads[&7].opening, None);
        assert_eq!(t.sockets.len(), 1);
        assert_eq!((t.sockets[0].0, t.sockets[0].1), (1234, 1));
        assert_eq!(t.table.as_deref(), Some("cairn_7_8"));
        let st = t.staging.as_ref().unwrap();
        assert_eq!(st.1, std::ffi::OsString::from(".x.cairn-tmp-5-ab"));
        assert_eq!(st.2, PathBuf::from("/tmp/a dir/.x.cairn-tmp-5-ab"));
        assert_eq!(t.threads[&7].parking, Some((0x10, 0x20, 0x30)));
        assert!(!t.killing && !t.done);
        t.take(b"X", vec![]);
        t.take(b"D", vec![]);
        assert!(t.killing && t.done);
    }

    #[test]
    fn staging_removed_only_if_it_is_the_dumpers() {
        let d = std::env::temp_dir().join(format!("cairn-guard-stg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let mine = ".img.cairn-tmp-4242-0123456789abcdef";
        let other = ".img.cairn-tmp-4243-0123456789abcdef";
        let link = ".l.cairn-tmp-4242-0123456789abcdef";
        for p in [mine, other] {
            std::fs::create_dir(d.join(p)).unwrap();
            std::fs::write(d.join(p).join("core-1.img"), b"x").unwrap();
        }
        std::os::unix::fs::symlink(d.join(other), d.join(link)).unwrap();
        let told = |name: &str| {
            let fd = OwnedFd::from(std::fs::File::open(&d).unwrap());
            (fd, std::ffi::OsString::from(name), d.join(name))
        };
        remove_staging(Some(&told(other)), "4242");
        remove_staging(Some(&told(link)), "4242");
        assert!(d.join(other).join("core-1.img").exists());
        assert!(d.join(link).symlink_metadata().is_ok());
        remove_staging(Some(&told(mine)), "4242");
        assert!(!d.join(mine).exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn blocked() {
        assert!(all_blocked(u64::MAX));
        assert!(all_blocked(!((1 << 8) | (1 << 18))));
        assert!(!all_blocked(0));
    }
}
