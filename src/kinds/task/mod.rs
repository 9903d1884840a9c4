//! Task state: registers and XSAVE, signals (dispositions, masks, pending
//! queues, alternate stacks), rseq, robust futex lists, credentials,
//! limits and the small per-process attributes.

use crate::dump::freeze::FrozenTask;
use crate::error::{Error, Result};
use crate::image::proto::{
    Creds, ITimer, PendingSignal, PosixTimer, Rlimit, Rseq, SigAction, SigAltStack, TaskCore,
    ThreadCore, X86Regs,
};
use crate::procfs;
use crate::remote::Agent;
use crate::remote::Calls;
use crate::sys::ptrace::{self, UserRegs};
use crate::sys::{mem, task};

pub mod validate;

const ERESTARTSYS: i64 = 512;
const ERESTARTNOINTR: i64 = 513;
const ERESTARTNOHAND: i64 = 514;
const ERESTART_RESTARTBLOCK: i64 = 516;

/// Registers as the task will resume: a syscall interrupted by the freeze
/// is set up to run again (or to return EINTR where the kernel's restart
/// state cannot be carried over), as the kernel does after a signal.
pub fn resume_regs(mut r: UserRegs) -> UserRegs {
    if (r.orig_rax as i64) >= 0 {
        match -(r.rax as i64) {
            ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => {
                r.rax = r.orig_rax;
                r.rip -= 2;
            }
            ERESTART_RESTARTBLOCK => r.rax = (-libc::EINTR) as i64 as u64,
            _ => {}
        }
    }
    r.orig_rax = u64::MAX;
    r
}

pub fn regs_to_proto(r: &UserRegs) -> X86Regs {
    let mut p = X86Regs::new();
    (p.r15, p.r14, p.r13, p.r12, p.rbp, p.rbx, p.r11, p.r10, p.r9) =
        (r.r15, r.r14, r.r13, r.r12, r.rbp, r.rbx, r.r11, r.r10, r.r9);
    (
        p.r8, p.rax, p.rcx, p.rdx, p.rsi, p.rdi, p.orig_rax, p.rip, p.cs,
    ) = (
        r.r8, r.rax, r.rcx, r.rdx, r.rsi, r.rdi, r.orig_rax, r.rip, r.cs,
    );
    (
        p.eflags, p.rsp, p.ss, p.fs_base, p.gs_base, p.ds, p.es, p.fs, p.gs,
    ) = (
        r.eflags, r.rsp, r.ss, r.fs_base, r.gs_base, r.ds, r.es, r.fs, r.gs,
    );
    p
}

pub fn regs_from_proto(p: &X86Regs) -> UserRegs {
    UserRegs {
        r15: p.r15,
        r14: p.r14,
        r13: p.r13,
        r12: p.r12,
        rbp: p.rbp,
        rbx: p.rbx,
        r11: p.r11,
        r10: p.r10,
        r9: p.r9,
        r8: p.r8,
        rax: p.rax,
        rcx: p.rcx,
        rdx: p.rdx,
        rsi: p.rsi,
        rdi: p.rdi,
        orig_rax: p.orig_rax,
        rip: p.rip,
        cs: p.cs,
        eflags: p.eflags,
        rsp: p.rsp,
        ss: p.ss,
        fs_base: p.fs_base,
        gs_base: p.gs_base,
        ds: p.ds,
        es: p.es,
        fs: p.fs,
        gs: p.gs,
    }
}

fn pending(list: Vec<[u8; 128]>) -> Vec<PendingSignal> {
    list.into_iter()
        .map(|si| {
            let mut p = PendingSignal::new();
            p.signo = i32::from_ne_bytes([si[0], si[1], si[2], si[3]]) as u32;
            p.siginfo = si.to_vec();
            p
        })
        .collect()
}

/// If the thread stopped inside an rseq critical section, move it to the
/// abort handler, as the kernel would on preemption.
fn rseq_fixup(pid: i32, cfg: &ptrace::RseqConfig, regs: &mut UserRegs) {
    if cfg.rseq_abi_pointer == 0 {
        return;
    }
    let mut p = [0u8; 8];
    if mem::vm_read_all(pid, cfg.rseq_abi_pointer + 8, &mut p).is_err() {
        return;
    }
    let cs = u64::from_ne_bytes(p);
    if cs == 0 {
        return;
    }
    let mut b = [0u8; 32];
    if mem::vm_read_all(pid, cs, &mut b).is_err() {
        return;
    }
    let w = |i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
    let (start, post, abort) = (w(8), w(16), w(24));
    if regs.rip >= start && regs.rip < start.wrapping_add(post) {
        regs.rip = abort;
    }
}

/// Per-thread state; `agent` runs in this thread.
pub fn dump_thread(agent: &mut Agent, t: &FrozenTask) -> Result<ThreadCore> {
    let tid = t.tid;
    let mut th = ThreadCore::new();
    th.tid = tid as u32;
    let mut regs = resume_regs(t.regs);
    let cfg = ptrace::get_rseq_config(tid)
        .map_err(|e| Error::sys(tid, "PTRACE_GET_RSEQ_CONFIGURATION", e))?;
    rseq_fixup(agent.pid, &cfg, &mut regs);
    th.regs = Some(regs_to_proto(&regs)).into();
    th.xsave = ptrace::get_xstate(tid)
        .map_err(|e| Error::sys(tid, "PTRACE_GETREGSET NT_X86_XSTATE", e))?;
    th.sigmask = t.sigmask;
    th.pending = pending(
        ptrace::peek_siginfo(tid, false).map_err(|e| Error::sys(tid, "PTRACE_PEEKSIGINFO", e))?,
    );
    let mut r = Rseq::new();
    r.addr = cfg.rseq_abi_pointer;
    r.len = cfg.rseq_abi_size;
    r.flags = cfg.flags;
    r.signature = cfg.signature;
    th.rseq = Some(r).into();
    let (head, len) =
        task::get_robust_list(tid).map_err(|e| Error::sys(tid, "get_robust_list", e))?;
    th.robust_list = head;
    th.robust_list_len = len;
    th.comm = procfs::read_comm(agent.pid, tid)?;
    // sigaltstack(NULL, &old) and PR_GET_TID_ADDRESS run in the thread.
    let a = agent.scratch;
    agent.call("sigaltstack", libc::SYS_sigaltstack, &[0, a])?;
    let b = agent.get(0, 24)?;
    let mut ss = SigAltStack::new();
    ss.sp = u64::from_ne_bytes(b[0..8].try_into().unwrap_or_default());
    ss.flags = i32::from_ne_bytes(b[8..12].try_into().unwrap_or_default()) as u32;
    ss.size = u64::from_ne_bytes(b[16..24].try_into().unwrap_or_default());
    th.altstack = Some(ss).into();
    agent.call(
        "prctl(PR_GET_TID_ADDRESS)",
        libc::SYS_prctl,
        &[libc::PR_GET_TID_ADDRESS as u64, a],
    )?;
    th.clear_child_tid = agent.get_u64(0)?;
    Ok(th)
}

/// Process-wide state; `agent` runs in the thread-group leader.
pub fn dump_process(
    agent: &mut Agent,
    status: &procfs::Status,
    stat: &procfs::Stat,
) -> Result<TaskCore> {
    let pid = agent.pid;
    let mut core = TaskCore::new();
    core.pid = pid as u32;
    core.comm = procfs::read_comm(pid, pid)?;
    core.personality = procfs::read_personality(pid)?;
    core.umask = status.umask.unwrap_or(0o022);
    core.exit_signal = stat.exit_signal as u32;
    let a = agent.scratch;
    for res in 0..16u32 {
        // prlimit64 from inside: reading another uid's limits from outside
        // needs CAP_SYS_RESOURCE.
        agent.call(
            &format!("prlimit64({res})"),
            libc::SYS_prlimit64,
            &[0, res as u64, 0, a],
        )?;
        let (cur, max) = (agent.get_u64(0)?, agent.get_u64(8)?);
        let mut r = Rlimit::new();
        r.resource = res;
        r.cur = cur;
        r.max = max;
        core.rlimits.push(r);
    }
    let mut c = Creds::new();
    (c.uid, c.euid, c.suid, c.fsuid) = (status.uid[0], status.uid[1], status.uid[2], status.uid[3]);
    (c.gid, c.egid, c.sgid, c.fsgid) = (status.gid[0], status.gid[1], status.gid[2], status.gid[3]);
    c.groups = status.groups.clone();
    (c.cap_inh, c.cap_prm, c.cap_eff, c.cap_bnd, c.cap_amb) = (
        status.cap_inh,
        status.cap_prm,
        status.cap_eff,
        status.cap_bnd,
        status.cap_amb,
    );
    c.no_new_privs = status.no_new_privs;
    c.securebits = agent.call(
        "prctl(PR_GET_SECUREBITS)",
        libc::SYS_prctl,
        &[libc::PR_GET_SECUREBITS as u64],
    )? as u32;
    core.creds = Some(c).into();
    for sig in 1..=64u32 {
        if sig == libc::SIGKILL as u32 || sig == libc::SIGSTOP as u32 {
            continue;
        }
        agent.call(
            &format!("rt_sigaction({sig})"),
            libc::SYS_rt_sigaction,
            &[sig as u64, 0, a, 8],
        )?;
        let b = agent.get(0, 32)?;
        let w = |i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().unwrap_or_default());
        let mut s = SigAction::new();
        s.signo = sig;
        (s.handler, s.flags, s.restorer, s.mask) = (w(0), w(8), w(16), w(24));
        core.sigactions.push(s);
    }
    core.shared_pending = pending(
        ptrace::peek_siginfo(pid, true)
            .map_err(|e| Error::sys(pid, "PTRACE_PEEKSIGINFO shared", e))?,
    );
    agent.call(
        "prctl(PR_GET_PDEATHSIG)",
        libc::SYS_prctl,
        &[libc::PR_GET_PDEATHSIG as u64, a],
    )?;
    core.pdeath_signal = agent.get_u32(0)?;
    agent.call(
        "prctl(PR_GET_CHILD_SUBREAPER)",
        libc::SYS_prctl,
        &[libc::PR_GET_CHILD_SUBREAPER as u64, a],
    )?;
    core.child_subreaper = agent.get_u32(0)? != 0;
    core.dumpable = agent.call(
        "prctl(PR_GET_DUMPABLE)",
        libc::SYS_prctl,
        &[libc::PR_GET_DUMPABLE as u64],
    )? != 0;
    Ok(core)
}

const SIGEV_SIGNAL: i32 = 0;
const SIGEV_NONE: i32 = 1;
const SIGEV_THREAD_ID: i32 = 4;

fn ts_ns(b: &[u8], i: usize) -> u64 {
    let w = |k: usize| u64::from_ne_bytes(b[k..k + 8].try_into().unwrap_or_default());
    w(i).saturating_mul(1_000_000_000).saturating_add(w(i + 8))
}

/// Interval timers and POSIX timers; `agent` runs in the leader.
pub fn dump_timers(agent: &mut Agent, core: &mut TaskCore) -> Result<()> {
    let pid = agent.pid;
    let a = agent.scratch;
    for which in 0..3u32 {
        agent.call(
            &format!("getitimer({which})"),
            libc::SYS_getitimer,
            &[which as u64, a],
        )?;
        let b = agent.get(0, 32)?;
        let w = |k: usize| u64::from_ne_bytes(b[k..k + 8].try_into().unwrap_or_default());
        let mut t = ITimer::new();
        t.which = which;
        t.interval_us = w(0).saturating_mul(1_000_000).saturating_add(w(8));
        t.value_us = w(16).saturating_mul(1_000_000).saturating_add(w(24));
        if t.value_us != 0 || t.interval_us != 0 {
            core.itimers.push(t);
        }
    }
    for info in procfs::read_timers(pid)? {
        agent.call(
            &format!("timer_gettime({})", info.id),
            libc::SYS_timer_gettime,
            &[info.id as u64, a],
        )?;
        let b = agent.get(0, 32)?;
        let mut t = PosixTimer::new();
        t.id = info.id;
        t.clockid = info.clockid;
        t.signo = info.signo;
        t.sigev_value = info.sigev_value;
        t.notify = match info.notify.as_str() {
            "signal" => SIGEV_SIGNAL,
            "none" => SIGEV_NONE,
            "thread" => SIGEV_THREAD_ID,
            other => {
                return Err(Error::unsupported(
                    pid,
                    format!("POSIX timer {} with notify {other}", info.id),
                ))
            }
        };
        t.notify_tid = if t.notify == SIGEV_THREAD_ID {
            info.notify_id
        } else {
            0
        };
        t.interval_ns = ts_ns(&b, 0);
        t.value_ns = ts_ns(&b, 16);
        core.posix_timers.push(t);
    }
    Ok(())
}

/// Re-arms the timers (after the threads exist: a timer may signal one).
pub fn restore_timers(agent: &mut Agent, core: &TaskCore) -> Result<()> {
    let pid = agent.pid;
    for t in &core.itimers {
        let mut b = Vec::with_capacity(32);
        for w in [
            t.interval_us / 1_000_000,
            t.interval_us % 1_000_000,
            t.value_us / 1_000_000,
            t.value_us % 1_000_000,
        ] {
            b.extend_from_slice(&w.to_ne_bytes());
        }
        let a = agent.put(0, &b)?;
        agent.call(
            &format!("setitimer({})", t.which),
            libc::SYS_setitimer,
            &[t.which as u64, a, 0],
        )?;
    }
    if core.posix_timers.is_empty() {
        return Ok(());
    }
    const PR_TIMER_CREATE_RESTORE_IDS: u64 = 77;
    // Without it (before Linux 6.16) ids are handed out in order; the
    // check below catches a mismatch.
    let exact = agent
        .remote
        .syscall(libc::SYS_prctl, &[PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0])
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
        let sp = agent.put(0, &sev)?;
        let idp = agent.put(128, &(t.id as i64).to_ne_bytes())?;
        agent.call(
            &format!("timer_create({})", t.id),
            libc::SYS_timer_create,
            &[t.clockid as u64, sp, idp],
        )?;
        let got = agent.get_u32(128)? as i32;
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
            let a = agent.put(256, &b)?;
            agent.call(
                &format!("timer_settime({})", t.id),
                libc::SYS_timer_settime,
                &[t.id as u64, 0, a, 0],
            )?;
        }
    }
    if exact {
        agent.call(
            "prctl(PR_TIMER_CREATE_RESTORE_IDS, OFF)",
            libc::SYS_prctl,
            &[PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0],
        )?;
    }
    Ok(())
}

/// brk(0) in the target: the current program break.
pub fn dump_brk(agent: &mut Agent) -> Result<u64> {
    agent.call("brk", libc::SYS_brk, &[0])
}

// ---------------------------------------------------------------- restore

/// Signal dispositions, umask, personality, comm, pdeath signal,
/// subreaper and dumpable: everything process-wide that needs no privilege
/// to be dropped later.
pub fn restore_process_attrs(agent: &mut Agent, core: &TaskCore) -> Result<()> {
    for s in &core.sigactions {
        let mut b = Vec::with_capacity(32);
        for w in [s.handler, s.flags, s.restorer, s.mask] {
            b.extend_from_slice(&w.to_ne_bytes());
        }
        let a = agent.put(0, &b)?;
        agent.call(
            &format!("rt_sigaction({})", s.signo),
            libc::SYS_rt_sigaction,
            &[s.signo as u64, a, 0, 8],
        )?;
    }
    agent.call("umask", libc::SYS_umask, &[core.umask as u64])?;
    agent.call(
        "personality",
        libc::SYS_personality,
        &[core.personality as u64],
    )?;
    let a = agent.put_cstr(0, &core.comm)?;
    agent.call(
        "prctl(PR_SET_NAME)",
        libc::SYS_prctl,
        &[libc::PR_SET_NAME as u64, a],
    )?;
    agent.call(
        "prctl(PR_SET_PDEATHSIG)",
        libc::SYS_prctl,
        &[libc::PR_SET_PDEATHSIG as u64, core.pdeath_signal as u64],
    )?;
    agent.call(
        "prctl(PR_SET_CHILD_SUBREAPER)",
        libc::SYS_prctl,
        &[
            libc::PR_SET_CHILD_SUBREAPER as u64,
            core.child_subreaper as u64,
        ],
    )?;
    agent.call(
        "prctl(PR_SET_DUMPABLE)",
        libc::SYS_prctl,
        &[libc::PR_SET_DUMPABLE as u64, core.dumpable as u64],
    )?;
    Ok(())
}

/// Limits: soft and hard values; a hard limit above ours cannot be raised
/// without CAP_SYS_RESOURCE, which is reported, and the limit is clamped.
pub fn restore_rlimits(agent: &mut Agent, core: &TaskCore, warn: &mut Vec<String>) -> Result<()> {
    for r in &core.rlimits {
        agent.call(
            "prlimit64",
            libc::SYS_prlimit64,
            &[0, r.resource as u64, 0, agent.scratch],
        )?;
        let our_max = agent.get_u64(8)?;
        let (mut cur, mut max) = (r.cur, r.max);
        if max > our_max {
            warn.push(format!(
                "rlimit {}: hard limit {} lowered to {} (raising needs CAP_SYS_RESOURCE)",
                r.resource, max, our_max
            ));
            max = our_max;
            cur = cur.min(max);
        }
        let mut b = Vec::with_capacity(16);
        b.extend_from_slice(&cur.to_ne_bytes());
        b.extend_from_slice(&max.to_ne_bytes());
        let a = agent.put(0, &b)?;
        agent.call(
            &format!("prlimit64({})", r.resource),
            libc::SYS_prlimit64,
            &[0, r.resource as u64, a, 0],
        )?;
    }
    Ok(())
}

/// Per-thread kernel state registered by syscalls: alternate signal
/// stack, rseq, robust list, clear_child_tid.
pub fn restore_thread_attrs(agent: &mut Agent, th: &ThreadCore) -> Result<()> {
    if let Some(ss) = th.altstack.as_ref() {
        let mut b = Vec::with_capacity(24);
        b.extend_from_slice(&ss.sp.to_ne_bytes());
        // SS_ONSTACK is a state, not a flag one can set.
        b.extend_from_slice(&((ss.flags & !1) as i32).to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&ss.size.to_ne_bytes());
        let a = agent.put(0, &b)?;
        agent.call("sigaltstack", libc::SYS_sigaltstack, &[a, 0])?;
    }
    if let Some(r) = th.rseq.as_ref().filter(|r| r.addr != 0) {
        agent.call(
            "rseq",
            libc::SYS_rseq,
            &[r.addr, r.len as u64, 0, r.signature as u64],
        )?;
    }
    if th.robust_list != 0 {
        agent.call(
            "set_robust_list",
            libc::SYS_set_robust_list,
            &[th.robust_list, th.robust_list_len],
        )?;
    }
    agent.call(
        "set_tid_address",
        libc::SYS_set_tid_address,
        &[th.clear_child_tid],
    )?;
    if !th.comm.is_empty() {
        let a = agent.put_cstr(0, &th.comm)?;
        agent.call(
            "prctl(PR_SET_NAME)",
            libc::SYS_prctl,
            &[libc::PR_SET_NAME as u64, a],
        )?;
    }
    Ok(())
}

/// Queues the saved pending signals again, in order (all signals are
/// blocked in the vessel until the final mask is set).
pub fn restore_pending(
    agent: &mut Agent,
    tgid: i32,
    tid: i32,
    list: &[PendingSignal],
    shared: bool,
) -> Result<()> {
    for p in list {
        if p.siginfo.len() != 128 {
            return Err(Error::Restore(format!(
                "pid {tgid}: bad siginfo for signal {}",
                p.signo
            )));
        }
        let a = agent.put(0, &p.siginfo)?;
        if shared {
            agent.call(
                &format!("rt_sigqueueinfo({})", p.signo),
                libc::SYS_rt_sigqueueinfo,
                &[tgid as u64, p.signo as u64, a],
            )?;
        } else {
            agent.call(
                &format!("rt_tgsigqueueinfo({})", p.signo),
                libc::SYS_rt_tgsigqueueinfo,
                &[tgid as u64, tid as u64, p.signo as u64, a],
            )?;
        }
    }
    Ok(())
}

const SECBIT_KEEP_CAPS: u64 = 1 << 4;
const SECBIT_KEEP_CAPS_LOCKED: u64 = 1 << 5;

/// Session and process group: a session leader becomes one again, a
/// process-group leader leads a group again; otherwise the process joins
/// cairn's (as with CRIU's --shell-job).
pub fn restore_session(
    agent: &mut Agent,
    pid: u32,
    pgid: u32,
    sid: u32,
    pgid_in_tree: bool,
) -> Result<()> {
    if sid == pid {
        agent.call("setsid", libc::SYS_setsid, &[])?;
    } else if pgid == pid {
        agent.call("setpgid", libc::SYS_setpgid, &[0, 0])?;
    } else if pgid_in_tree {
        // The group's leader was created earlier, in this session.
        let cur = agent.call("getpgid", libc::SYS_getpgid, &[0])?;
        if cur != pgid as u64 {
            agent.call(
                &format!("setpgid(0, {pgid})"),
                libc::SYS_setpgid,
                &[0, pgid as u64],
            )?;
        }
    }
    Ok(())
}

const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;
const CAP_SETPCAP: u32 = 8;

/// What the restoring cairn may give a process: its own credentials, or
/// anything with the capabilities that allow it.
pub struct OwnCreds {
    status: crate::procfs::Status,
    securebits: u32,
}

impl OwnCreds {
    pub fn read() -> Result<OwnCreds> {
        let status = crate::procfs::read_status(crate::sys::task::getpid())?;
        let securebits = crate::sys::task::securebits()
            .map_err(|e| Error::sys(crate::sys::task::getpid(), "PR_GET_SECUREBITS", e))?;
        Ok(OwnCreds { status, securebits })
    }

    fn has(&self, cap: u32) -> bool {
        self.status.cap_eff & (1 << cap) != 0
    }

    /// Why cairn may not restore process `pid` with credentials `c`, if it
    /// may not: unprivileged, cairn restores only as the user it runs as,
    /// with no capability it does not hold itself.
    pub fn refuse(&self, pid: u32, c: &Creds) -> Option<String> {
        let me = &self.status;
        let who = format!("uid {} gid {}", me.uid[1], me.gid[1]);
        let mut why = Vec::new();
        let uids = [c.uid, c.euid, c.suid, c.fsuid];
        if !self.has(CAP_SETUID) && uids.iter().any(|u| !me.uid.contains(u)) {
            why.push(format!("uids {uids:?}"));
        }
        let gids = [c.gid, c.egid, c.sgid, c.fsgid];
        if !self.has(CAP_SETGID) && gids.iter().any(|g| !me.gid.contains(g)) {
            why.push(format!("gids {gids:?}"));
        }
        if !self.has(CAP_SETGID) {
            let (mut a, mut b) = (c.groups.clone(), me.groups.clone());
            a.sort_unstable();
            b.sort_unstable();
            if a != b {
                why.push(format!("supplementary groups {:?}", c.groups));
            }
        }
        let caps = c.cap_eff | c.cap_prm | c.cap_inh | c.cap_amb;
        let allowed = if self.has(CAP_SETPCAP) {
            me.cap_prm | me.cap_bnd
        } else {
            me.cap_prm
        };
        if caps & !allowed != 0 {
            why.push(format!("capabilities {:#x}", caps & !allowed));
        }
        if !self.has(CAP_SETPCAP) && c.cap_bnd & me.cap_bnd != me.cap_bnd {
            why.push(format!(
                "a bounding set without {:#x}",
                me.cap_bnd & !c.cap_bnd
            ));
        }
        if !self.has(CAP_SETPCAP) && c.securebits != self.securebits {
            why.push(format!("securebits {:#x}", c.securebits));
        }
        if why.is_empty() {
            return None;
        }
        Some(format!(
            "pid {pid}: the images ask for {} but cairn runs as {who} without the \
             capabilities to grant that (CAP_SETUID, CAP_SETGID, CAP_SETPCAP or the \
             capabilities themselves): refused",
            why.join(", ")
        ))
    }
}

/// Credentials, last: after this the vessel may no longer be privileged.
/// Only what differs from the vessel's (cairn's own) is changed, so an
/// unprivileged restore of a process of the same user needs no
/// capability ([`OwnCreds::refuse`] checked the rest).
pub fn restore_creds(agent: &mut Agent, c: &Creds) -> Result<()> {
    let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(40);
    let now = crate::procfs::read_status(agent.tid())?;
    let own_bits = crate::sys::task::securebits().unwrap_or(u32::MAX);
    let privileged = now.cap_eff & (1 << CAP_SETPCAP) != 0;
    for cap in 0..=last_cap {
        if c.cap_bnd & (1 << cap) == 0 && now.cap_bnd & (1 << cap) != 0 {
            agent.call(
                &format!("prctl(PR_CAPBSET_DROP, {cap})"),
                libc::SYS_prctl,
                &[libc::PR_CAPBSET_DROP as u64, cap],
            )?;
        }
    }
    let secure = c.securebits as u64;
    // Unprivileged (no CAP_SETPCAP) the bits can only be what they are.
    if privileged || c.securebits != own_bits {
        agent.call(
            "prctl(PR_SET_SECUREBITS)",
            libc::SYS_prctl,
            &[libc::PR_SET_SECUREBITS as u64, secure | SECBIT_KEEP_CAPS],
        )?;
    }
    let (mut want, mut have) = (c.groups.clone(), now.groups.clone());
    want.sort_unstable();
    have.sort_unstable();
    if want != have {
        let groups: Vec<u8> = c.groups.iter().flat_map(|g| g.to_ne_bytes()).collect();
        let a = agent.put(0, &groups)?;
        agent.call(
            "setgroups",
            libc::SYS_setgroups,
            &[c.groups.len() as u64, a],
        )?;
    }
    agent.call(
        "setresgid",
        libc::SYS_setresgid,
        &[c.gid as u64, c.egid as u64, c.sgid as u64],
    )?;
    agent.call("setfsgid", libc::SYS_setfsgid, &[c.fsgid as u64])?;
    agent.call(
        "setresuid",
        libc::SYS_setresuid,
        &[c.uid as u64, c.euid as u64, c.suid as u64],
    )?;
    agent.call("setfsuid", libc::SYS_setfsuid, &[c.fsuid as u64])?;
    // capset v3: header {version, pid}, two data structs {eff, prm, inh}.
    let mut b = Vec::with_capacity(32);
    b.extend_from_slice(&0x2008_0522u32.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    for half in [0, 32] {
        for v in [c.cap_eff, c.cap_prm, c.cap_inh] {
            b.extend_from_slice(&((v >> half) as u32).to_ne_bytes());
        }
    }
    let a = agent.put(0, &b)?;
    agent.call("capset", libc::SYS_capset, &[a, a + 8])?;
    for cap in 0..=last_cap {
        if c.cap_amb & (1 << cap) != 0 {
            agent.call(
                "prctl(PR_CAP_AMBIENT_RAISE)",
                libc::SYS_prctl,
                &[
                    libc::PR_CAP_AMBIENT as u64,
                    libc::PR_CAP_AMBIENT_RAISE as u64,
                    cap,
                    0,
                    0,
                ],
            )?;
        }
    }
    if secure & (SECBIT_KEEP_CAPS | SECBIT_KEEP_CAPS_LOCKED) == 0 {
        agent.call(
            "prctl(PR_SET_KEEPCAPS, 0)",
            libc::SYS_prctl,
            &[libc::PR_SET_KEEPCAPS as u64, 0],
        )?;
    }
    if c.no_new_privs {
        agent.call(
            "prctl(PR_SET_NO_NEW_PRIVS)",
            libc::SYS_prctl,
            &[libc::PR_SET_NO_NEW_PRIVS as u64, 1, 0, 0, 0],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_codes() {
        let mut r = UserRegs {
            orig_rax: 0,
            rax: (-ERESTARTSYS) as u64,
            rip: 0x1002,
            ..Default::default()
        };
        let o = resume_regs(r);
        assert_eq!((o.rax, o.rip, o.orig_rax), (0, 0x1000, u64::MAX));
        r.rax = (-ERESTART_RESTARTBLOCK) as u64;
        let o = resume_regs(r);
        assert_eq!((o.rax as i64, o.rip), (-(libc::EINTR as i64), 0x1002));
        // Not in a syscall: untouched apart from orig_rax.
        let r = UserRegs {
            orig_rax: u64::MAX,
            rax: (-ERESTARTSYS) as u64,
            rip: 0x1002,
            ..Default::default()
        };
        assert_eq!(resume_regs(r).rip, 0x1002);
    }

    #[test]
    fn regs_round_trip() {
        let r = UserRegs {
            r15: 1,
            rip: 2,
            gs: 3,
            fs_base: 4,
            orig_rax: 5,
            ..Default::default()
        };
        assert_eq!(regs_from_proto(&regs_to_proto(&r)), r);
    }
}
