//! The per-process objects that are not fds: signal dispositions, the
//! small attributes (umask, personality, name, parent-death signal,
//! subreaper, dumpable), resource limits, timers and membarrier
//! registrations. Each is one
//! [`ProcKind`]: read from the frozen process into its core image,
//! checked in the image, restored into the vessel. They are listed once,
//! in [`PROC_KINDS`]; the restore engine (`crate::restore`) runs them at
//! its fixed points ([`Phase`]), in list order.
//!
//! Not here, because their ordering is intricate (see
//! docs/ARCHITECTURE.md, "Per-process objects"): session and process
//! group (set while the tree is created, before any memory), credentials
//! (last, in every thread, after which the vessel may have lost the
//! privilege everything else needs), pending signals (queued once the
//! threads exist, with all signals blocked), and the per-thread state
//! (registers, sigaltstack, rseq, robust list).

use std::collections::HashSet;
use std::path::Path;

use super::validate::{check_signo, RLIM_NLIMITS, SIG_MAX};
use crate::error::{Error, Result};
use crate::image::proto::{ITimer, PosixTimer, Rlimit, SigAction, TaskCore};
use crate::image::validate::{bad, count, MAX_ITEMS, TASK_SIZE};
use crate::procfs;
use crate::remote::Calls;

/// What the dump knows of a process besides what a kind reads itself.
pub struct DumpCtx<'a> {
    pub status: &'a procfs::Status,
    pub stat: &'a procfs::Stat,
}

/// When the restore engine restores an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// With the process's attributes, before its other threads exist.
    BeforeThreads,
    /// Once every thread exists (a timer may signal one).
    AfterThreads,
}

/// A per-process object that is not an fd.
pub trait ProcKind: Sync {
    /// Its name, for docs and errors.
    fn name(&self) -> &'static str;
    /// When the engine restores it.
    fn phase(&self) -> Phase;
    /// Reads it from the frozen process (`agent` runs in the leader).
    fn dump(&self, agent: &mut dyn Calls, ctx: &DumpCtx, core: &mut TaskCore) -> Result<()>;
    /// Checks it in the core image of a live process at `path`.
    fn validate(&self, core: &TaskCore, path: &Path) -> Result<()>;
    /// Restores it into the vessel (`agent` runs in the leader); what
    /// could only be approximated goes to `warn`.
    fn restore(&self, agent: &mut dyn Calls, core: &TaskCore, warn: &mut Vec<String>)
        -> Result<()>;
}

/// Every per-process object, in the order of their restore within a
/// phase.
pub static PROC_KINDS: &[&dyn ProcKind] = &[&SigActions, &Attrs, &Rlimits, &Timers, &Membarrier];

fn obj(core: &TaskCore) -> String {
    format!("pid {}", core.pid)
}

/// Signal dispositions (handler, flags, restorer, mask) of signals 1..=64
/// but SIGKILL and SIGSTOP.
pub struct SigActions;

impl ProcKind for SigActions {
    fn name(&self) -> &'static str {
        "signal dispositions"
    }

    fn phase(&self) -> Phase {
        Phase::BeforeThreads
    }

    fn dump(&self, agent: &mut dyn Calls, _: &DumpCtx, core: &mut TaskCore) -> Result<()> {
        for sig in 1..=64u32 {
            if sig == libc::SIGKILL as u32 || sig == libc::SIGSTOP as u32 {
                continue;
            }
            let [handler, flags, restorer, mask] = agent.sigaction_get(sig)?;
            let mut s = SigAction::new();
            s.signo = sig;
            (s.handler, s.flags, s.restorer, s.mask) = (handler, flags, restorer, mask);
            core.sigactions.push(s);
        }
        Ok(())
    }

    fn validate(&self, c: &TaskCore, path: &Path) -> Result<()> {
        let obj = obj(c);
        count(
            path,
            &obj,
            "sigactions",
            c.sigactions.len(),
            SIG_MAX as usize,
        )?;
        let mut sigs = HashSet::new();
        for s in &c.sigactions {
            check_signo(path, &obj, "sigactions.signo", s.signo, false)?;
            if s.signo == libc::SIGKILL as u32
                || s.signo == libc::SIGSTOP as u32
                || !sigs.insert(s.signo)
            {
                return Err(bad(
                    path,
                    &obj,
                    "sigactions.signo",
                    format!("{}: SIGKILL, SIGSTOP or repeated", s.signo),
                ));
            }
            for (f, v) in [
                ("sigactions.handler", s.handler),
                ("sigactions.restorer", s.restorer),
            ] {
                if v >= TASK_SIZE {
                    return Err(bad(path, &obj, f, format!("{v:#x}: not a user address")));
                }
            }
        }
        Ok(())
    }

    /// One batch (`remote::batch`); those the vessel has already are
    /// skipped (`remote::Known`).
    fn restore(&self, agent: &mut dyn Calls, core: &TaskCore, _: &mut Vec<String>) -> Result<()> {
        let acts: Vec<(u32, [u64; 4])> = (core.sigactions.iter())
            .map(|s| (s.signo, [s.handler, s.flags, s.restorer, s.mask]))
            .collect();
        agent.sigactions_set(&acts)
    }
}

/// umask, personality, comm, parent-death signal, child subreaper and
/// dumpable: everything process-wide that needs no privilege to be
/// dropped later.
pub struct Attrs;

impl ProcKind for Attrs {
    fn name(&self) -> &'static str {
        "process attributes"
    }

    fn phase(&self) -> Phase {
        Phase::BeforeThreads
    }

    fn dump(&self, agent: &mut dyn Calls, ctx: &DumpCtx, core: &mut TaskCore) -> Result<()> {
        let pid = agent.pid();
        core.comm = procfs::read_comm(pid, pid)?;
        core.personality = procfs::read_personality(pid)?;
        core.umask = ctx.status.umask.unwrap_or(0o022);
        core.pdeath_signal = agent.prctl_get_int("PR_GET_PDEATHSIG", libc::PR_GET_PDEATHSIG)?;
        core.child_subreaper =
            agent.prctl_get_int("PR_GET_CHILD_SUBREAPER", libc::PR_GET_CHILD_SUBREAPER)? != 0;
        core.dumpable = agent.prctl("PR_GET_DUMPABLE", libc::PR_GET_DUMPABLE, &[])? != 0;
        Ok(())
    }

    fn validate(&self, c: &TaskCore, path: &Path) -> Result<()> {
        let obj = obj(c);
        if c.umask > 0o777 {
            return Err(bad(path, &obj, "umask", format!("{:#o}", c.umask)));
        }
        check_signo(path, &obj, "pdeath_signal", c.pdeath_signal, true)
    }

    /// One batch (`remote::batch`).
    fn restore(&self, agent: &mut dyn Calls, core: &TaskCore, _: &mut Vec<String>) -> Result<()> {
        use crate::remote::batch::Syscall;
        let prctl = |op: i32, v: u64| Syscall::new(libc::SYS_prctl, &[op as u64, v]);
        agent.call_all(&[
            (
                "umask".into(),
                Syscall::new(libc::SYS_umask, &[core.umask as u64]),
            ),
            (
                "personality".into(),
                Syscall::new(libc::SYS_personality, &[core.personality as u64]),
            ),
            (
                "prctl(PR_SET_NAME)".into(),
                crate::remote::set_comm_call(&core.comm),
            ),
            (
                "prctl(PR_SET_PDEATHSIG)".into(),
                prctl(libc::PR_SET_PDEATHSIG, core.pdeath_signal as u64),
            ),
            (
                "prctl(PR_SET_CHILD_SUBREAPER)".into(),
                prctl(libc::PR_SET_CHILD_SUBREAPER, core.child_subreaper as u64),
            ),
            (
                "prctl(PR_SET_DUMPABLE)".into(),
                prctl(libc::PR_SET_DUMPABLE, core.dumpable as u64),
            ),
        ])?;
        Ok(())
    }
}

/// Resource limits, soft and hard.
pub struct Rlimits;

impl ProcKind for Rlimits {
    fn name(&self) -> &'static str {
        "resource limits"
    }

    fn phase(&self) -> Phase {
        Phase::BeforeThreads
    }

    fn dump(&self, agent: &mut dyn Calls, _: &DumpCtx, core: &mut TaskCore) -> Result<()> {
        for res in 0..RLIM_NLIMITS {
            // prlimit64 from inside: reading another uid's limits from
            // outside needs CAP_SYS_RESOURCE.
            let (cur, max) = agent.getrlimit(res)?;
            let mut r = Rlimit::new();
            r.resource = res;
            r.cur = cur;
            r.max = max;
            core.rlimits.push(r);
        }
        Ok(())
    }

    fn validate(&self, c: &TaskCore, path: &Path) -> Result<()> {
        let obj = obj(c);
        count(
            path,
            &obj,
            "rlimits",
            c.rlimits.len(),
            RLIM_NLIMITS as usize,
        )?;
        let mut res = HashSet::new();
        for r in &c.rlimits {
            if r.resource >= RLIM_NLIMITS || !res.insert(r.resource) {
                return Err(bad(
                    path,
                    &obj,
                    "rlimits.resource",
                    format!("{}: unknown or repeated", r.resource),
                ));
            }
            if r.cur > r.max {
                return Err(bad(
                    path,
                    &obj,
                    format!("rlimit {}", r.resource).as_str(),
                    format!("soft limit {} above hard limit {}", r.cur, r.max),
                ));
            }
        }
        Ok(())
    }

    /// A hard limit above ours cannot be raised without
    /// CAP_SYS_RESOURCE: the restore fails, naming it.
    fn restore(&self, agent: &mut dyn Calls, core: &TaskCore, _: &mut Vec<String>) -> Result<()> {
        // Every hard limit is checked first, then those that differ from
        // the vessel's are set in one batch (`remote::batch`; the vessel's
        // are read once for the tree, `remote::Known`).
        let mut sets = Vec::new();
        for r in &core.rlimits {
            let (our_cur, our_max) = agent.getrlimit(r.resource)?;
            let (cur, max) = (r.cur, r.max);
            if (cur, max) == (our_cur, our_max) {
                continue;
            }
            if max > our_max {
                // Lowering it would be a silent difference: refused.
                return Err(Error::Restore(format!(
                    "pid {}: rlimit {}: hard limit {} is above the restoring cairn's {} \
                     (raising it needs CAP_SYS_RESOURCE): run cairn with that hard limit",
                    core.pid, r.resource, max, our_max
                )));
            }
            sets.push((r.resource, cur, max));
        }
        agent.setrlimits(&sets)
    }
}

const SIGEV_SIGNAL: i32 = 0;
const SIGEV_NONE: i32 = 1;
const SIGEV_THREAD: i32 = 2;
/// Or-ed into SIGEV_SIGNAL: the signal goes to one thread.
const SIGEV_THREAD_ID: i32 = 4;

fn ts_ns(b: &[u8], i: usize) -> u64 {
    let w = |k: usize| u64::from_ne_bytes(b[k..k + 8].try_into().unwrap_or_default());
    w(i).saturating_mul(1_000_000_000).saturating_add(w(i + 8))
}

/// Interval timers and POSIX timers.
pub struct Timers;

impl ProcKind for Timers {
    fn name(&self) -> &'static str {
        "timers"
    }

    fn phase(&self) -> Phase {
        Phase::AfterThreads
    }

    fn dump(&self, agent: &mut dyn Calls, _: &DumpCtx, core: &mut TaskCore) -> Result<()> {
        let pid = agent.pid();
        for which in 0..3u32 {
            let w = agent.getitimer(which)?;
            let mut t = ITimer::new();
            t.which = which;
            t.interval_us = w[0].saturating_mul(1_000_000).saturating_add(w[1]);
            t.value_us = w[2].saturating_mul(1_000_000).saturating_add(w[3]);
            if t.value_us != 0 || t.interval_us != 0 {
                core.itimers.push(t);
            }
        }
        for info in procfs::read_timers(pid)? {
            let b = agent.timer_gettime(info.id)?;
            let mut t = PosixTimer::new();
            t.id = info.id;
            t.clockid = info.clockid;
            t.signo = info.signo;
            t.sigev_value = info.sigev_value;
            // /proc shows `sigev_notify & ~SIGEV_THREAD_ID` by name and
            // "tid.N" when SIGEV_THREAD_ID is set (fs/proc/base.c).
            let base = match info.notify.as_str() {
                "signal" => SIGEV_SIGNAL,
                "none" => SIGEV_NONE,
                "thread" => SIGEV_THREAD,
                other => {
                    return Err(Error::unsupported(
                        pid,
                        format!("POSIX timer {} with notify {other}", info.id),
                    ))
                }
            };
            if info.notify_thread && base != SIGEV_SIGNAL {
                return Err(Error::unsupported(
                    pid,
                    format!(
                        "POSIX timer {} with notify {}/tid.{}",
                        info.id, info.notify, info.notify_id
                    ),
                ));
            }
            (t.notify, t.notify_tid) = if info.notify_thread {
                (SIGEV_SIGNAL | SIGEV_THREAD_ID, info.notify_id)
            } else {
                (base, 0)
            };
            t.interval_ns = ts_ns(&b, 0);
            t.value_ns = ts_ns(&b, 16);
            core.posix_timers.push(t);
        }
        Ok(())
    }

    fn validate(&self, c: &TaskCore, path: &Path) -> Result<()> {
        let obj = obj(c);
        for t in &c.itimers {
            if t.which > 2 {
                return Err(bad(path, &obj, "itimers.which", t.which));
            }
        }
        count(path, &obj, "posix_timers", c.posix_timers.len(), MAX_ITEMS)?;
        for t in &c.posix_timers {
            if t.id < 0 {
                return Err(bad(path, &obj, "posix_timers.id", t.id));
            }
            if t.signo < 0 || t.signo as u32 > SIG_MAX {
                return Err(bad(path, &obj, "posix_timers.signo", t.signo));
            }
            if ![
                SIGEV_SIGNAL,
                SIGEV_NONE,
                SIGEV_THREAD,
                SIGEV_SIGNAL | SIGEV_THREAD_ID,
            ]
            .contains(&t.notify)
            {
                return Err(bad(path, &obj, "posix_timers.notify", t.notify));
            }
            if (t.notify == SIGEV_THREAD_ID) != (t.notify_tid != 0) {
                return Err(bad(
                    path,
                    &obj,
                    "posix_timers.notify_tid",
                    format!("{} with notify {}", t.notify_tid, t.notify),
                ));
            }
            if t.notify_tid != 0 && !c.threads.iter().any(|th| th.tid as i32 == t.notify_tid) {
                return Err(bad(
                    path,
                    &obj,
                    "posix_timers.notify_tid",
                    format!("{}: not a thread of this process", t.notify_tid),
                ));
            }
        }
        Ok(())
    }

    fn restore(&self, agent: &mut dyn Calls, core: &TaskCore, _: &mut Vec<String>) -> Result<()> {
        let pid = agent.pid();
        for t in &core.itimers {
            agent.setitimer(
                t.which,
                [
                    t.interval_us / 1_000_000,
                    t.interval_us % 1_000_000,
                    t.value_us / 1_000_000,
                    t.value_us % 1_000_000,
                ],
            )?;
        }
        if core.posix_timers.is_empty() {
            return Ok(());
        }
        const PR_TIMER_CREATE_RESTORE_IDS: i32 = 77;
        // Without it (before Linux 6.16) ids are handed out in order; the
        // check below catches a mismatch.
        let exact = agent
            .prctl(
                "PR_TIMER_CREATE_RESTORE_IDS, ON",
                PR_TIMER_CREATE_RESTORE_IDS,
                &[1, 0, 0, 0],
            )
            .is_ok();
        let mut timers: Vec<&PosixTimer> = core.posix_timers.iter().collect();
        timers.sort_by_key(|t| t.id);
        for t in timers {
            // struct sigevent: value, signo, notify, tid (64 bytes in all).
            let mut sev = vec![0u8; 64];
            sev[0..8].copy_from_slice(&t.sigev_value.to_ne_bytes());
            sev[8..12].copy_from_slice(&t.signo.to_ne_bytes());
            sev[12..16].copy_from_slice(&t.notify.to_ne_bytes());
            sev[16..20].copy_from_slice(&t.notify_tid.to_ne_bytes());
            let got = agent.timer_create(t.id, t.clockid, &sev)?;
            if got != t.id {
                return Err(Error::Restore(format!(
                    "pid {pid}: POSIX timer {} came back as {got}",
                    t.id
                )));
            }
            if t.value_ns > 0 {
                let mut b = Vec::with_capacity(32);
                for w in [
                    t.interval_ns / 1_000_000_000,
                    t.interval_ns % 1_000_000_000,
                    t.value_ns / 1_000_000_000,
                    t.value_ns % 1_000_000_000,
                ] {
                    b.extend_from_slice(&w.to_ne_bytes());
                }
                agent.timer_settime(t.id, &b)?;
            }
        }
        if exact {
            agent.prctl(
                "PR_TIMER_CREATE_RESTORE_IDS, OFF",
                PR_TIMER_CREATE_RESTORE_IDS,
                &[0, 0, 0, 0],
            )?;
        }
        Ok(())
    }
}

/// membarrier(2) commands (linux/membarrier.h).
pub const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: u32 = 1 << 2;
pub const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: u32 = 1 << 4;
pub const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE: u32 = 1 << 6;
pub const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ: u32 = 1 << 8;
/// Linux 6.3+: the REGISTER_* commands the caller's mm has run.
pub const MEMBARRIER_CMD_GET_REGISTRATIONS: u32 = 1 << 9;

/// Every registration GET_REGISTRATIONS reports, in the order the
/// restore runs them.
const MEMBARRIER_REGISTRATIONS: &[(u32, &str)] = &[
    (
        MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED,
        "REGISTER_GLOBAL_EXPEDITED",
    ),
    (
        MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
        "REGISTER_PRIVATE_EXPEDITED",
    ),
    (
        MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE,
        "REGISTER_PRIVATE_EXPEDITED_SYNC_CORE",
    ),
    (
        MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ,
        "REGISTER_PRIVATE_EXPEDITED_RSEQ",
    ),
];

/// The registrations cairn does not know among `mask`, if any.
fn membarrier_unknown(mask: u32) -> u32 {
    MEMBARRIER_REGISTRATIONS
        .iter()
        .fold(mask, |m, &(bit, _)| m & !bit)
}

/// Reads the registrations of the process `agent` runs in:
/// `Ok(None)` when the kernel cannot say (before Linux 6.3, EINVAL).
pub fn membarrier_registrations(agent: &mut dyn Calls) -> Result<Option<u32>> {
    let cmd = MEMBARRIER_CMD_GET_REGISTRATIONS as u64;
    match agent.syscall(libc::SYS_membarrier, &[cmd, 0, 0]) {
        Ok(m) => Ok(Some(m as u32)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) => Ok(None),
        Err(e) => Err(Error::sys(
            agent.tid(),
            "remote membarrier(MEMBARRIER_CMD_GET_REGISTRATIONS)",
            e,
        )),
    }
}

/// MEMBARRIER_CMD_QUERY: the commands the kernel has.
const MEMBARRIER_CMD_QUERY: u32 = 0;

/// The registrations `mm->membarrier_state` (the kernel's
/// MEMBARRIER_STATE_* bits) stands for, as MEMBARRIER_CMD_GET_REGISTRATIONS
/// maps them (kernel/sched/membarrier.c, membarrier_get_registrations:
/// a registration's state bit or its READY bit), and the bits left that
/// no registration explains.
fn membarrier_from_state(state: u32) -> (u32, u32) {
    const STATES: [(u32, u32); 4] = [
        // GLOBAL_EXPEDITED | GLOBAL_EXPEDITED_READY
        (0b1100, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED),
        // PRIVATE_EXPEDITED | PRIVATE_EXPEDITED_READY
        (0b11, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED),
        // PRIVATE_EXPEDITED_SYNC_CORE | its READY
        (
            0b11_0000,
            MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE,
        ),
        // PRIVATE_EXPEDITED_RSEQ | its READY
        (0b1100_0000, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ),
    ];
    STATES
        .iter()
        .fold((0, state), |(regs, left), &(bits, reg)| {
            if left & bits != 0 {
                (regs | reg, left & !bits)
            } else {
                (regs, left)
            }
        })
}

/// The registrations of a process on a kernel without
/// MEMBARRIER_CMD_GET_REGISTRATIONS (before 6.3): from `state`, its
/// `mm->membarrier_state` read with BPF (Err: why it could not be); else,
/// when `query` (MEMBARRIER_CMD_QUERY's answer, 0 without membarrier)
/// has no REGISTER_* command, none can exist. Otherwise nothing tells
/// whether the process registered (a registration is only visible in the
/// mm; expedited global ones are not even probed by a command), and a
/// restore would silently drop them: Err, the reason.
fn membarrier_before_6_3(
    state: std::result::Result<u32, String>,
    query: u32,
) -> std::result::Result<u32, String> {
    let why = match state {
        Ok(st) => {
            let (regs, left) = membarrier_from_state(st);
            if left != 0 {
                return Err(format!(
                    "its mm's membarrier state {st:#x} has bits {left:#x} unknown to cairn"
                ));
            }
            return Ok(regs);
        }
        Err(why) => why,
    };
    let registers = MEMBARRIER_REGISTRATIONS
        .iter()
        .fold(0, |m, &(bit, _)| m | bit);
    if query & registers == 0 {
        return Ok(0);
    }
    Err(format!(
        "its membarrier registrations cannot be read: this kernel has no MEMBARRIER_CMD_GET_REGISTRATIONS (Linux 6.3) and its mm's membarrier state could not be read with BPF ({why}); a restore could not tell whether to register them again"
    ))
}

/// Test setting: act as a kernel without MEMBARRIER_CMD_GET_REGISTRATIONS
/// (before 6.3), to check [`membarrier_before_6_3`] on a newer one.
fn pretend_no_get_registrations() -> bool {
    std::env::var_os("CAIRN_TEST_MEMBARRIER_NO_GET").is_some()
}

/// `mm->membarrier_state` of process `pid`, read with BPF
/// (bpf/procattrs.bpf.c); Err: why not (`--no-bpf`, BPF failing, no
/// CONFIG_MEMBARRIER).
fn membarrier_state_bpf(pid: i32) -> std::result::Result<u32, String> {
    if crate::sys::bpf::disabled() {
        return Err("--no-bpf".into());
    }
    match crate::sys::procattrs::membarrier_state(pid).map_err(|e| e.to_string())? {
        Some(Some(state)) => Ok(state),
        Some(None) => Err("the kernel has no mm->membarrier_state".into()),
        None => Err(format!("the task iterator did not find pid {pid}")),
    }
}

/// The registrations of a process on a kernel without
/// MEMBARRIER_CMD_GET_REGISTRATIONS where BPF cannot read its mm's state
/// (`query`: MEMBARRIER_CMD_QUERY's answer): each private expedited
/// barrier the kernel has is run in the process (EPERM: not registered;
/// the tree is stopped, so a barrier changes nothing); an expedited
/// global registration shows nowhere, so where the kernel has it, it is
/// taken as registered (true). A superfluous one only adds barriers the
/// process cannot tell from its own, and without GET_REGISTRATIONS the
/// process cannot see it either; a restore on a kernel that would show it
/// refuses ([`Membarrier`]'s restore).
fn membarrier_probe(agent: &mut dyn Calls, query: u32) -> Result<(u32, bool)> {
    const BARRIERS: [(u32, u32); 3] = [
        // MEMBARRIER_CMD_PRIVATE_EXPEDITED{,_SYNC_CORE,_RSEQ}
        (1 << 3, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED),
        (1 << 5, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE),
        (1 << 7, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ),
    ];
    let mut mask = 0;
    for (barrier, reg) in BARRIERS {
        if query & barrier == 0 {
            continue;
        }
        match agent.syscall(libc::SYS_membarrier, &[barrier as u64, 0, 0]) {
            Ok(_) => mask |= reg,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            Err(e) => {
                return Err(Error::sys(
                    agent.tid(),
                    format!("remote membarrier({barrier:#x}) (is it registered?)"),
                    e,
                ))
            }
        }
    }
    let global = query & MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED != 0;
    if global {
        mask |= MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED;
    }
    Ok((mask, global))
}

/// membarrier(2) registrations of the process's mm (expedited private,
/// its SYNC_CORE and RSEQ variants, expedited global), read through
/// MEMBARRIER_CMD_GET_REGISTRATIONS (Linux 6.3+), before that from the
/// mm's state read with BPF (`membarrier_before_6_3`: a dump that
/// cannot tell is refused), and registered again.
pub struct Membarrier;

impl ProcKind for Membarrier {
    fn name(&self) -> &'static str {
        "membarrier registrations"
    }

    fn phase(&self) -> Phase {
        Phase::BeforeThreads
    }

    fn dump(&self, agent: &mut dyn Calls, _: &DumpCtx, core: &mut TaskCore) -> Result<()> {
        let got = match pretend_no_get_registrations() {
            true => None,
            false => membarrier_registrations(agent)?,
        };
        let mask = match got {
            Some(m) => m,
            None => {
                let query = agent
                    .syscall(libc::SYS_membarrier, &[MEMBARRIER_CMD_QUERY as u64, 0, 0])
                    .unwrap_or(0) as u32;
                match membarrier_state_bpf(agent.pid()) {
                    Ok(state) => membarrier_before_6_3(Ok(state), query)
                        .map_err(|why| Error::unsupported(agent.pid(), why))?,
                    Err(why) => match membarrier_before_6_3(Err(why), query) {
                        Ok(none) => none,
                        Err(_) => {
                            let (mask, assumed) = membarrier_probe(agent, query)?;
                            core.membarrier_global_assumed = assumed;
                            mask
                        }
                    },
                }
            }
        };
        let unknown = membarrier_unknown(mask);
        if unknown != 0 {
            return Err(Error::unsupported(
                agent.pid(),
                format!(
                    "membarrier registrations {mask:#x}: {unknown:#x} unknown to cairn, cannot be registered again"
                ),
            ));
        }
        core.membarrier_registrations = mask;
        core.membarrier_known = true;
        Ok(())
    }

    fn validate(&self, c: &TaskCore, path: &Path) -> Result<()> {
        let unknown = membarrier_unknown(c.membarrier_registrations);
        if unknown != 0 || (!c.membarrier_known && c.membarrier_registrations != 0) {
            return Err(bad(
                path,
                obj(c),
                "membarrier_registrations",
                format!(
                    "{:#x} (known: {})",
                    c.membarrier_registrations, c.membarrier_known
                ),
            ));
        }
        Ok(())
    }

    fn restore(&self, agent: &mut dyn Calls, core: &TaskCore, _: &mut Vec<String>) -> Result<()> {
        let mask = core.membarrier_registrations;
        if core.membarrier_global_assumed
            && !pretend_no_get_registrations()
            && membarrier_registrations(agent)?.is_some()
        {
            return Err(Error::Restore(format!(
                "pid {}: it was dumped on a kernel without MEMBARRIER_CMD_GET_REGISTRATIONS \
                 (Linux 6.3) and without BPF, where an expedited global membarrier registration \
                 (MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) cannot be seen; this kernel would \
                 show the one cairn assumed: restore on a kernel before 6.3, or dump with BPF",
                core.pid
            )));
        }
        for &(bit, name) in MEMBARRIER_REGISTRATIONS {
            if mask & bit != 0 {
                agent.call(
                    &format!("membarrier(MEMBARRIER_CMD_{name})"),
                    libc::SYS_membarrier,
                    &[bit as u64, 0, 0],
                )?;
            }
        }
        if mask == 0 {
            return Ok(());
        }
        // Read back where the kernel can say.
        if let Some(got) = membarrier_registrations(agent)? {
            if got != mask {
                return Err(Error::Restore(format!(
                    "pid {}: membarrier registrations {got:#x} after the restore, not {mask:#x}",
                    core.pid
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::proto::{ThreadCore, X86Regs};
    use crate::remote::fake::{FakeTask, FakeWorld};

    fn live_core() -> TaskCore {
        let mut c = TaskCore::new();
        c.pid = 5;
        let mut th = ThreadCore::new();
        th.tid = 5;
        th.regs = Some(X86Regs::new()).into();
        c.threads.push(th);
        c
    }

    #[test]
    fn each_kind_is_listed_once_and_checks_its_own_fields() {
        let names: HashSet<&str> = PROC_KINDS.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), PROC_KINDS.len());
        let p = Path::new("core-5.img");
        let ok = live_core();
        for k in PROC_KINDS {
            k.validate(&ok, p).unwrap();
        }
        let mut c = live_core();
        c.umask = 0o1777;
        let mut s = SigAction::new();
        s.signo = libc::SIGKILL as u32;
        c.sigactions.push(s);
        let mut r = Rlimit::new();
        (r.resource, r.cur, r.max) = (3, 10, 5);
        c.rlimits.push(r);
        let mut t = ITimer::new();
        t.which = 3;
        c.itimers.push(t);
        (c.membarrier_registrations, c.membarrier_known) = (1, true);
        // Each kind finds its own field, and the core check finds one.
        let mut fields = Vec::new();
        for k in PROC_KINDS {
            let e = k.validate(&c, p).unwrap_err().to_string();
            fields.push(e);
        }
        for (e, want) in fields.iter().zip([
            "sigactions.signo",
            "umask",
            "rlimit 3",
            "itimers.which",
            "membarrier_registrations",
        ]) {
            assert!(e.contains("core-5.img") && e.contains(want), "{e}");
        }
        assert!(crate::image::validate::core(&c, 5, &[5], p).is_err());
    }

    /// Dispositions and limits restored into a fake process read back
    /// the same; a hard limit above the vessel's fails the restore.
    #[test]
    fn sigactions_and_rlimits_round_trip_on_the_fake() {
        let w = FakeWorld::new();
        let mut vessel = FakeTask::new(&w, 100);
        vessel.attrs.rlimits.insert(7, (1024, 4096));
        let mut c = live_core();
        for (sig, handler) in [(libc::SIGUSR1 as u32, 0x40_1000), (libc::SIGTERM as u32, 1)] {
            let mut s = SigAction::new();
            (s.signo, s.handler, s.flags, s.mask) = (sig, handler, 0x0400_0000, 1 << 9);
            c.sigactions.push(s);
        }
        for (res, cur, max) in [(3u32, 8 << 20, u64::MAX), (7, 2048, 8192)] {
            let mut r = Rlimit::new();
            (r.resource, r.cur, r.max) = (res, cur, max);
            c.rlimits.push(r);
        }
        let mut warn = Vec::new();
        SigActions.restore(&mut vessel, &c, &mut warn).unwrap();
        // A hard limit above the vessel's is refused, not lowered.
        let e = Rlimits.restore(&mut vessel, &c, &mut warn).unwrap_err();
        assert!(
            e.to_string().contains("rlimit 7: hard limit 8192 is above"),
            "{e}"
        );
        c.rlimits[1].max = 4096;
        Rlimits.restore(&mut vessel, &c, &mut warn).unwrap();
        assert!(warn.is_empty(), "{warn:?}");
        let mut back = TaskCore::new();
        let status = procfs::read_status(std::process::id() as i32).unwrap();
        let stat = procfs::read_stat(std::process::id() as i32).unwrap();
        let ctx = DumpCtx {
            status: &status,
            stat: &stat,
        };
        SigActions.dump(&mut vessel, &ctx, &mut back).unwrap();
        Rlimits.dump(&mut vessel, &ctx, &mut back).unwrap();
        assert_eq!(back.sigactions.len(), 62);
        let usr1 = back
            .sigactions
            .iter()
            .find(|s| s.signo == libc::SIGUSR1 as u32)
            .unwrap();
        assert_eq!(
            (usr1.handler, usr1.flags, usr1.mask),
            (0x40_1000, 0x0400_0000, 1 << 9)
        );
        let lim = |res: u32| {
            back.rlimits
                .iter()
                .find(|r| r.resource == res)
                .map(|r| (r.cur, r.max))
        };
        assert_eq!(lim(3), Some((8 << 20, u64::MAX)));
        assert_eq!(lim(7), Some((2048, 4096)));
        assert_eq!(back.rlimits.len(), RLIM_NLIMITS as usize);
    }

    /// Before Linux 6.3 (no GET_REGISTRATIONS): the registrations come
    /// from the mm's state read with BPF, mapped as the kernel's
    /// GET_REGISTRATIONS does; without it a kernel that has registration
    /// commands makes the dump refuse, one without none can exist.
    #[test]
    fn membarrier_before_get_registrations() {
        // PRIVATE_EXPEDITED | READY, GLOBAL_EXPEDITED | READY, RSEQ | READY
        assert_eq!(
            membarrier_before_6_3(Ok(0b1100_1111), 0x1ff),
            Ok(0x4 | 0x10 | 0x100)
        );
        // Only the SYNC_CORE state bit (registration under way): registered.
        assert_eq!(membarrier_before_6_3(Ok(0b10_0000), 0x1ff), Ok(0x40));
        assert_eq!(membarrier_before_6_3(Ok(0), 0x1ff), Ok(0));
        let e = membarrier_before_6_3(Ok(0x100), 0x1ff).unwrap_err();
        assert!(e.contains("0x100"), "{e}");
        // 5.10's answer to QUERY (every command through RSEQ), no BPF.
        let e = membarrier_before_6_3(Err("--no-bpf".into()), 0x1ff).unwrap_err();
        assert!(
            e.contains("GET_REGISTRATIONS") && e.contains("--no-bpf"),
            "{e}"
        );
        // Only the global barrier (no expedited commands), or no membarrier.
        assert_eq!(membarrier_before_6_3(Err("--no-bpf".into()), 0x1), Ok(0));
        assert_eq!(membarrier_before_6_3(Err("--no-bpf".into()), 0), Ok(0));
    }

    #[test]
    fn membarrier_masks() {
        assert_eq!(membarrier_unknown(0x4 | 0x10 | 0x40 | 0x100), 0);
        assert_eq!(membarrier_unknown(0x10 | 0x200 | 1), 0x201);
        let p = Path::new("core-5.img");
        let mut c = live_core();
        c.membarrier_registrations = 0x10;
        // Registrations from a dump that could not read them.
        assert!(Membarrier.validate(&c, p).is_err());
        c.membarrier_known = true;
        Membarrier.validate(&c, p).unwrap();
    }

    #[test]
    fn attributes_are_restored_on_the_fake() {
        let w = FakeWorld::new();
        let mut vessel = FakeTask::new(&w, 100);
        let mut c = live_core();
        (c.umask, c.personality, c.comm) = (0o077, 0x0040_0000, "worker".into());
        (c.pdeath_signal, c.child_subreaper, c.dumpable) = (9, true, false);
        Attrs.restore(&mut vessel, &c, &mut Vec::new()).unwrap();
        let a = &vessel.attrs;
        assert_eq!(
            (a.umask, a.personality, a.comm.as_str()),
            (0o077, 0x0040_0000, "worker")
        );
        let prctl = |op| a.prctl.get(&op).copied();
        assert_eq!(prctl(libc::PR_SET_PDEATHSIG), Some(9));
        assert_eq!(prctl(libc::PR_SET_CHILD_SUBREAPER), Some(1));
        assert_eq!(prctl(libc::PR_SET_DUMPABLE), Some(0));
    }
}
