//! Task state: registers and XSAVE, signals (dispositions, masks, pending
//! queues, alternate stacks), rseq, robust futex lists, credentials,
//! limits and the small per-process attributes.

use crate::dump::freeze::FrozenTask;
use crate::error::{Error, Result};
use crate::image::proto::{Creds, PendingSignal, Rseq, SigAltStack, TaskCore, ThreadCore, X86Regs};
use crate::procfs;
use crate::remote::Calls;
use crate::sys::ptrace::{self, UserRegs};
use crate::sys::{mem, task};

pub mod attrs;
pub mod objects;
pub mod validate;

pub use objects::{DumpCtx, Phase, ProcKind, PROC_KINDS};

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

/// The rseq registration of the thread `agent` runs in (stopped under
/// ptrace). PTRACE_GET_RSEQ_CONFIGURATION tells it from Linux 5.13 on.
/// Before (EIO), rseq(2) itself is asked in the thread: registering a
/// scratch area succeeds only if the thread has none (it is unregistered
/// at once), and registering glibc's area (thread pointer +
/// `__rseq_offset` of cairn's own glibc, 32 bytes, `RSEQ_SIG`) answers
/// EBUSY only if exactly that area is registered. A registration found
/// neither way is refused, naming the missing kernel feature.
pub fn rseq_config(agent: &mut dyn Calls) -> Result<ptrace::RseqConfig> {
    let tid = agent.tid();
    match ptrace::get_rseq_config(tid) {
        Ok(c) => return Ok(c),
        Err(e) if e.raw_os_error() != Some(libc::EIO) => {
            return Err(Error::sys(tid, "PTRACE_GET_RSEQ_CONFIGURATION", e))
        }
        Err(_) => {}
    }
    let len = ptrace::RSEQ_LEN_ORIG as u64;
    let sig = ptrace::RSEQ_SIG_X86 as u64;
    let none = ptrace::RseqConfig::default();
    // 32 zeroed bytes, 32-byte aligned, in the scratch area.
    let base = agent.put(0, &[0u8; 64])?;
    let probe = base + (32 - base % 32) % 32;
    match agent.syscall(libc::SYS_rseq, &[probe, len, 0, sig]) {
        Ok(_) => {
            agent.call(
                "rseq unregister (probe)",
                libc::SYS_rseq,
                &[probe, len, 1, sig],
            )?;
            return Ok(none);
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => return Ok(none),
        // EINVAL for a valid area: the thread has another one registered.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        Err(e) => return Err(Error::sys(tid, "remote rseq (probe)", e)),
    }
    let pid = agent.pid();
    let refuse = |what: String| {
        Error::unsupported(
            pid,
            format!(
                "thread {tid}: an rseq area is registered {what}; reading it needs \
                 PTRACE_GET_RSEQ_CONFIGURATION (Linux 5.13), which this kernel lacks \
                 (start the program with GLIBC_TUNABLES=glibc.pthread.rseq=0 here)"
            ),
        )
    };
    let Some(off) = ptrace::own_glibc_rseq_offset() else {
        return Err(refuse("and cairn's own glibc has none to compare".into()));
    };
    let fs_base = ptrace::get_regs(tid)
        .map_err(|e| Error::sys(tid, "PTRACE_GETREGS", e))?
        .fs_base;
    let area = fs_base.wrapping_add(off as u64);
    match agent.syscall(libc::SYS_rseq, &[area, len, 0, sig]) {
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(ptrace::RseqConfig {
            rseq_abi_pointer: area,
            rseq_abi_size: ptrace::RSEQ_LEN_ORIG,
            signature: ptrace::RSEQ_SIG_X86,
            flags: 0,
            pad: 0,
        }),
        Ok(_) => {
            agent.call(
                "rseq unregister (probe)",
                libc::SYS_rseq,
                &[area, len, 1, sig],
            )?;
            Err(refuse(format!("but not at glibc's place {area:#x}")))
        }
        Err(e) => Err(refuse(format!("but not at glibc's place {area:#x} ({e})"))),
    }
}

/// Per-thread state; `agent` runs in this thread.
pub fn dump_thread(agent: &mut dyn Calls, t: &FrozenTask, seccomp_mode: u32) -> Result<ThreadCore> {
    let tid = t.tid;
    let mut th = ThreadCore::new();
    th.tid = tid as u32;
    let mut regs = resume_regs(t.regs);
    let cfg = rseq_config(agent)?;
    rseq_fixup(agent.pid(), &cfg, &mut regs);
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
    th.comm = procfs::read_comm(agent.pid(), tid)?;
    // sigaltstack(NULL, &old) and PR_GET_TID_ADDRESS run in the thread.
    let mut ss = SigAltStack::new();
    (ss.sp, ss.flags, ss.size) = agent.sigaltstack_get()?;
    th.altstack = Some(ss).into();
    th.clear_child_tid = agent.tid_address()?;
    th.attrs = Some(attrs::dump_thread(agent, seccomp_mode)?).into();
    Ok(th)
}

/// Process-wide state; `agent` runs in the thread-group leader. The
/// objects of [`PROC_KINDS`] (signal dispositions, attributes, limits,
/// timers) are read by their kinds.
pub fn dump_process(
    agent: &mut dyn Calls,
    status: &procfs::Status,
    stat: &procfs::Stat,
) -> Result<TaskCore> {
    let pid = agent.pid();
    let mut core = TaskCore::new();
    core.pid = pid as u32;
    core.exit_signal = stat.exit_signal as u32;
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
    c.securebits = agent.prctl("PR_GET_SECUREBITS", libc::PR_GET_SECUREBITS, &[])? as u32;
    core.creds = Some(c).into();
    core.shared_pending = pending(
        ptrace::peek_siginfo(pid, true)
            .map_err(|e| Error::sys(pid, "PTRACE_PEEKSIGINFO shared", e))?,
    );
    let ctx = DumpCtx { status, stat };
    for k in PROC_KINDS {
        k.dump(agent, &ctx, &mut core)?;
    }
    core.attrs = Some(attrs::dump_process(agent)?).into();
    Ok(core)
}

/// Whether `sig`, with the default disposition, ends the process
/// (terminate or core dump; not ignore, not stop).
fn ends_by_default(sig: u32) -> bool {
    !matches!(
        sig as i32,
        libc::SIGCHLD
            | libc::SIGCONT
            | libc::SIGURG
            | libc::SIGWINCH
            | libc::SIGSTOP
            | libc::SIGTSTP
            | libc::SIGTTIN
            | libc::SIGTTOU
    )
}

/// Refuses a process that a signal is killing: a signal pending (for a
/// thread, or for the process) that a thread does not block and whose
/// disposition is the default one that ends the process. The freeze
/// blocked it, so it waits in the queue; saved there, the restored
/// process would die of it at once (as when `scontrol requeue` signals
/// every process of a job while a periodic checkpoint holds it frozen).
/// The dump fails instead, the tree is let go and dies of the signal as
/// it would have, and a previous checkpoint stays the newest. `core`
/// holds the dispositions and every thread with its mask from before the
/// freeze.
pub fn refuse_dying(core: &TaskCore) -> Result<()> {
    let fatal = |sig: u32| {
        sig == libc::SIGKILL as u32
            || (ends_by_default(sig)
                && core
                    .sigactions
                    .iter()
                    .find(|a| a.signo == sig)
                    .is_none_or(|a| a.handler == libc::SIG_DFL as u64))
    };
    let blocks = |mask: u64, sig: u32| (1..=64).contains(&sig) && mask & (1 << (sig - 1)) != 0;
    let dying = |sig: u32, tid: u32, queue: &str| Error::Unsupported {
        pid: core.pid as i32,
        what: format!(
            "{} is pending ({queue}), not blocked by thread {tid}, with the default action: \
             the process is being killed by it, and restored it would die of it at once",
            crate::show::flags::signal(sig),
        ),
    };
    for th in &core.threads {
        for p in th.pending.iter().filter(|p| fatal(p.signo)) {
            if !blocks(th.sigmask, p.signo) {
                return Err(dying(p.signo, th.tid, "sent to the thread"));
            }
        }
    }
    for p in core.shared_pending.iter().filter(|p| fatal(p.signo)) {
        if let Some(th) = core.threads.iter().find(|t| !blocks(t.sigmask, p.signo)) {
            return Err(dying(p.signo, th.tid, "sent to the process"));
        }
    }
    Ok(())
}

/// brk(0) in the target: the current program break.
pub fn dump_brk(agent: &mut dyn Calls) -> Result<u64> {
    agent.brk(0)
}

// ---------------------------------------------------------------- restore

/// Per-thread kernel state registered by syscalls: alternate signal
/// stack, rseq, robust list, clear_child_tid, name and timer slack (set
/// and read back, `attrs::timer_slack_calls`; after
/// `attrs::restore_thread`). One batch of calls (`remote::batch`).
pub fn restore_thread_attrs(agent: &mut dyn Calls, th: &ThreadCore) -> Result<()> {
    use crate::remote::batch::Syscall;
    let mut calls: Vec<(String, Syscall)> = Vec::new();
    if let Some(ss) = th.altstack.as_ref() {
        // SS_ONSTACK is a state, not a flag one can set.
        let c = crate::remote::sigaltstack_call(ss.sp, (ss.flags & !1) as i32, ss.size);
        calls.push(("sigaltstack".into(), c));
    }
    if let Some(r) = th.rseq.as_ref().filter(|r| r.addr != 0) {
        let args = [r.addr, r.len as u64, 0, r.signature as u64];
        calls.push(("rseq".into(), Syscall::new(libc::SYS_rseq, &args)));
    }
    if th.robust_list != 0 {
        let args = [th.robust_list, th.robust_list_len];
        let c = Syscall::new(libc::SYS_set_robust_list, &args);
        calls.push(("set_robust_list".into(), c));
    }
    let c = Syscall::new(libc::SYS_set_tid_address, &[th.clear_child_tid]);
    calls.push(("set_tid_address".into(), c));
    if !th.comm.is_empty() {
        let c = crate::remote::set_comm_call(&th.comm);
        calls.push(("prctl(PR_SET_NAME)".into(), c));
    }
    calls.extend(attrs::timer_slack_calls(th.attrs.as_ref()));
    let list: Vec<Syscall> = calls.iter().map(|c| c.1.clone()).collect();
    let tid = agent.tid();
    match agent.syscalls(&list)? {
        Ok(_) => Ok(()),
        Err(f) if calls[f.index].0 == attrs::TIMER_SLACK_READ => {
            Err(attrs::timer_slack_error(tid, th.attrs.as_ref(), f.error))
        }
        Err(f) => Err(Error::sys(
            tid,
            format!("remote {}", calls[f.index].0),
            f.error,
        )),
    }
}

/// Queues the saved pending signals again, in order (all signals are
/// blocked in the vessel until the final mask is set).
pub fn restore_pending(
    agent: &mut dyn Calls,
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
        if shared {
            agent.rt_sigqueueinfo(tgid, p.signo, &p.siginfo)?;
        } else {
            agent.rt_tgsigqueueinfo(tgid, tid, p.signo, &p.siginfo)?;
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
    agent: &mut dyn Calls,
    pid: u32,
    pgid: u32,
    sid: u32,
    pgid_in_tree: bool,
) -> Result<()> {
    if sid == pid {
        agent.setsid()?;
    } else if pgid == pid {
        agent.setpgid(0, 0)?;
    } else if pgid_in_tree {
        // The group's leader was created earlier, in this session.
        let cur = agent.getpgid(0)?;
        if cur != pgid as u64 {
            agent.setpgid(0, pgid)?;
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
/// capability ([`OwnCreds::refuse`] checked the rest). Returns whether
/// any call was made (which may have cleared the thread's parent-death
/// signal and the process's dumpable flag: `attrs::restore_late`).
/// `now`: the thread's /proc status before (the threads of a process,
/// cloned from its leader, all have the leader's until their own call
/// here, which changes only the calling thread's: one read per process).
pub fn restore_creds(agent: &mut dyn Calls, c: &Creds, now: &procfs::Status) -> Result<bool> {
    static LAST_CAP: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let last_cap = *LAST_CAP.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(40)
    });
    let own_bits = crate::sys::task::securebits().unwrap_or(u32::MAX);
    let privileged = now.cap_eff & (1 << CAP_SETPCAP) != 0;
    // The thread has the credentials already (a tree restored by the user
    // it ran as): every call below would change nothing, so none is made
    // (7 remote calls per thread before; issue 15).
    let mut groups = (c.groups.clone(), now.groups.clone());
    groups.0.sort_unstable();
    groups.1.sort_unstable();
    if now.uid == [c.uid, c.euid, c.suid, c.fsuid]
        && now.gid == [c.gid, c.egid, c.sgid, c.fsgid]
        && groups.0 == groups.1
        && (now.cap_eff, now.cap_prm, now.cap_inh) == (c.cap_eff, c.cap_prm, c.cap_inh)
        && (now.cap_bnd, now.cap_amb) == (c.cap_bnd, c.cap_amb)
        && c.securebits == own_bits
        && now.no_new_privs == c.no_new_privs
    {
        return Ok(false);
    }
    for cap in 0..=last_cap {
        if c.cap_bnd & (1 << cap) == 0 && now.cap_bnd & (1 << cap) != 0 {
            agent.prctl(
                &format!("PR_CAPBSET_DROP, {cap}"),
                libc::PR_CAPBSET_DROP,
                &[cap],
            )?;
        }
    }
    let secure = c.securebits as u64;
    // Unprivileged (no CAP_SETPCAP) the bits can only be what they are.
    if privileged || c.securebits != own_bits {
        agent.prctl(
            "PR_SET_SECUREBITS",
            libc::PR_SET_SECUREBITS,
            &[secure | SECBIT_KEEP_CAPS],
        )?;
    }
    let (mut want, mut have) = (c.groups.clone(), now.groups.clone());
    want.sort_unstable();
    have.sort_unstable();
    if want != have {
        agent.setgroups(&c.groups)?;
    }
    agent.setresgid(c.gid, c.egid, c.sgid)?;
    agent.setfsgid(c.fsgid)?;
    agent.setresuid(c.uid, c.euid, c.suid)?;
    agent.setfsuid(c.fsuid)?;
    agent.capset(c.cap_eff, c.cap_prm, c.cap_inh)?;
    for cap in 0..=last_cap {
        if c.cap_amb & (1 << cap) != 0 {
            agent.prctl(
                "PR_CAP_AMBIENT_RAISE",
                libc::PR_CAP_AMBIENT,
                &[libc::PR_CAP_AMBIENT_RAISE as u64, cap, 0, 0],
            )?;
        }
    }
    if secure & (SECBIT_KEEP_CAPS | SECBIT_KEEP_CAPS_LOCKED) == 0 {
        agent.prctl("PR_SET_KEEPCAPS, 0", libc::PR_SET_KEEPCAPS, &[0])?;
    }
    if c.no_new_privs {
        agent.prctl(
            "PR_SET_NO_NEW_PRIVS",
            libc::PR_SET_NO_NEW_PRIVS,
            &[1, 0, 0, 0],
        )?;
    }
    Ok(true)
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
