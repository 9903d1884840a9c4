//! Scheduling and the small kernel attributes of tasks (issue 14): per
//! thread the scheduling policy, priority, nice value and SCHED_DEADLINE
//! parameters, the CPU affinity, the I/O priority, the timer slack and
//! the seccomp mode and filters; per process oom_score_adj, THP_DISABLE
//! and the audit loginuid.
//!
//! Each is either read at dump and restored exactly (and read back after
//! the restore, so that a kernel that changes a value is an error, not a
//! silent difference), or the dump refuses it naming the pid and why:
//! utilization clamps, seccomp filters with user notification, thread
//! filter chains that do not extend one another.
//!
//! Restore order (see `crate::restore::restore_attrs`): [`restore_early`]
//! (THP, loginuid, a lowered oom_score_adj, while the vessel still has
//! cairn's privileges) before the threads exist; [`restore_thread`] for
//! each thread once they do; [`restore_late`] after the credentials
//! (parent-death signal and dumpable, which a credential change clears,
//! and the unprivileged oom_score_adj write); [`restore_seccomp`] last;
//! the CPU affinity ([`restore_affinity`]) in the go phase, once cairn
//! makes no more calls in the thread (until then every vessel shares
//! cairn's CPU: `sys::sched::pin_here`).

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::image::proto::{ProcAttrs, SchedAttr, SeccompFilter, TaskCore, ThreadAttrs};
use crate::image::validate::{bad, count, MAX_ITEMS};
use crate::procfs;
use crate::remote::batch::Syscall;
use crate::remote::Calls;
use crate::sys::sched;

/// Scheduler flags kept: reset-on-fork and the SCHED_DEADLINE ones
/// (reclaim, overrun signal).
const SCHED_FLAGS_KEPT: u64 = 0x07;
/// SCHED_OTHER, SCHED_FIFO, SCHED_RR, SCHED_BATCH, SCHED_IDLE, SCHED_DEADLINE.
const POLICIES: [u32; 6] = [0, 1, 2, 3, 5, 6];
const SECCOMP_MODE_STRICT: u64 = 1;
const SECCOMP_SET_MODE_FILTER: u64 = 1;
const SECCOMP_FILTER_FLAG_TSYNC: u64 = 1;
const SECCOMP_FILTER_FLAG_LOG: u64 = 2;
/// PTRACE_O_SUSPEND_SECCOMP.
pub const PTRACE_O_SUSPEND_SECCOMP: u64 = 1 << 21;
/// Largest classic BPF program (BPF_MAXINSNS).
const BPF_MAXINSNS: usize = 4096;
const LOGINUID_UNSET: u32 = u32::MAX;
const CAP_SYS_ADMIN: u32 = 21;
const PR_GET_TIMERSLACK: i32 = 30;
const PR_SET_TIMERSLACK: i32 = 29;
const PR_GET_THP_DISABLE: i32 = 42;
const PR_SET_THP_DISABLE: i32 = 41;

fn refuse(pid: i32, what: String) -> Error {
    Error::unsupported(pid, what)
}

/// Before anything is touched: a task under seccomp can be dumped only by
/// a cairn that may suspend and read its filters (CAP_SYS_ADMIN), since
/// the dump runs system calls inside it that the filter could block or
/// answer by killing it.
pub fn precheck(pid: i32) -> Result<()> {
    crate::kinds::cgroup::precheck(pid)?;
    let me = procfs::read_status(crate::sys::task::getpid())?;
    for tid in procfs::list_tasks(pid).unwrap_or_default() {
        let Ok(st) = procfs::read_task_status(pid, tid) else {
            continue;
        };
        if st.seccomp != 0 && me.cap_eff & (1 << CAP_SYS_ADMIN) == 0 {
            return Err(refuse(
                tid,
                format!(
                    "seccomp mode {}: reading and suspending its filters needs CAP_SYS_ADMIN, \
                     which cairn lacks",
                    st.seccomp
                ),
            ));
        }
        if st.seccomp != 0 && me.seccomp != 0 {
            return Err(refuse(
                tid,
                format!(
                    "seccomp mode {}: cairn runs under seccomp itself and so may not suspend \
                     the target's filters",
                    st.seccomp
                ),
            ));
        }
    }
    Ok(())
}

/// Frozen, before the first system call injected into process `pid`:
/// threads under seccomp have their filters suspended for this tracer
/// (PTRACE_O_SUSPEND_SECCOMP) until the dump lets them go. Returns each
/// thread's seccomp mode.
pub fn suspend_seccomp(pid: i32, tids: &[i32], options: u64) -> Result<HashMap<i32, u32>> {
    let mut modes = HashMap::new();
    for &tid in tids {
        let st = procfs::read_task_status(pid, tid)?;
        if st.seccomp != 0 {
            crate::sys::ptrace::set_options(tid, options | PTRACE_O_SUSPEND_SECCOMP)
                .map_err(|e| Error::sys(tid, "PTRACE_SETOPTIONS PTRACE_O_SUSPEND_SECCOMP", e))?;
        }
        modes.insert(tid, st.seccomp);
    }
    Ok(modes)
}

/// A zombie whose wait status has the core-dump bit: a restore could
/// only set it by writing a core file (through the system's
/// core_pattern), so it is refused.
pub fn check_zombie(pid: i32, status: i32) -> Result<()> {
    if libc::WIFSIGNALED(status) && libc::WCOREDUMP(status) {
        return Err(refuse(
            pid,
            format!(
                "a zombie killed by signal {} with a core dump: the core-dump bit of its wait \
                 status cannot be reproduced without writing a core file",
                libc::WTERMSIG(status)
            ),
        ));
    }
    Ok(())
}

/// The signal that stops a restored stopped process again: the one that
/// stopped it, when it is a terminal stop signal whose disposition is
/// still the default (so that it stops the process rather than run a
/// handler), else SIGSTOP (also for images without it).
pub fn stop_signal(core: &TaskCore) -> i32 {
    let sig = core.stop_signal as i32;
    let tty_stop = matches!(sig, libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU);
    let default = core
        .sigactions
        .iter()
        .find(|a| a.signo == sig as u32)
        .is_none_or(|a| a.handler == 0);
    if tty_stop && default {
        sig
    } else {
        libc::SIGSTOP
    }
}

/// Per-thread attributes of the frozen thread `agent` runs in.
pub fn dump_thread(agent: &mut dyn Calls, seccomp_mode: u32) -> Result<ThreadAttrs> {
    let tid = agent.tid();
    let mut t = ThreadAttrs::new();
    let a = sched::get_attr(tid).map_err(|e| Error::sys(tid, "sched_getattr", e))?;
    if a.util_min != 0 || (a.util_max != 0 && a.util_max != 1024) {
        return Err(refuse(
            tid,
            format!(
                "utilization clamps {}..{} (sched_setattr SCHED_FLAG_UTIL_CLAMP) are not restored",
                a.util_min, a.util_max
            ),
        ));
    }
    if !POLICIES.contains(&a.policy) {
        return Err(refuse(tid, format!("scheduling policy {}", a.policy)));
    }
    let mut s = SchedAttr::new();
    let nice = sched::get_nice(tid).map_err(|e| Error::sys(tid, "getpriority", e))?;
    (s.policy, s.flags, s.nice, s.priority) =
        (a.policy, a.flags & SCHED_FLAGS_KEPT, nice, a.priority);
    (s.runtime, s.deadline, s.period) = (a.runtime, a.deadline, a.period);
    t.sched = Some(s).into();
    t.affinity = sched::get_affinity(tid).map_err(|e| Error::sys(tid, "sched_getaffinity", e))?;
    t.ioprio = sched::get_ioprio(tid).map_err(|e| Error::sys(tid, "ioprio_get", e))?;
    t.timerslack_ns = agent.prctl("PR_GET_TIMERSLACK", PR_GET_TIMERSLACK, &[])?;
    t.seccomp_mode = seccomp_mode;
    t.pdeath_signal = agent.prctl_get_int("PR_GET_PDEATHSIG", libc::PR_GET_PDEATHSIG)?;
    Ok(t)
}

/// Process-wide attributes; `agent` runs in the leader.
pub fn dump_process(agent: &mut dyn Calls) -> Result<ProcAttrs> {
    let pid = agent.pid();
    let mut a = ProcAttrs::new();
    a.oom_score_adj = read_oom(pid)?;
    a.thp_disable = agent.prctl("PR_GET_THP_DISABLE", PR_GET_THP_DISABLE, &[0, 0, 0, 0])? as u32;
    a.loginuid = read_loginuid(pid)?;
    a.cgroup = crate::kinds::cgroup::dump(pid, &procfs::list_tasks(pid)?)?;
    Ok(a)
}

fn read_loginuid(pid: i32) -> Result<u32> {
    match std::fs::read_to_string(format!("/proc/{pid}/loginuid")) {
        Ok(s) => s.trim().parse().map_err(|_| {
            Error::sys(
                pid,
                "read loginuid",
                std::io::Error::other(format!("{s:?}")),
            )
        }),
        // No audit support in the kernel: nothing to carry.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LOGINUID_UNSET),
        Err(e) => Err(Error::sys(pid, "read /proc/PID/loginuid", e)),
    }
}

/// SECCOMP_RET_USER_NOTIF in a `BPF_RET | BPF_K` instruction.
fn returns_user_notif(prog: &[u8]) -> bool {
    prog.chunks_exact(8).any(|i| {
        let code = u16::from_ne_bytes([i[0], i[1]]);
        let k = u32::from_ne_bytes([i[4], i[5], i[6], i[7]]);
        code == 0x06 && k & 0xffff_0000 == 0x7fc0_0000
    })
}

/// The seccomp filters of every thread of the frozen process, into
/// `core.attrs.seccomp_filters` (deduplicated by their chains: filters
/// inherited or synchronised are saved once) and each thread's list.
/// Threads whose chains do not extend one common chain would need
/// filters removed from a thread to be rebuilt: refused.
pub fn dump_seccomp(core: &mut TaskCore) -> Result<()> {
    let pid = core.pid as i32;
    let mut filters: Vec<SeccompFilter> = Vec::new();
    // (parent chain position, prog, flags) -> index
    let mut known: HashMap<(Option<u32>, Vec<u8>, u64), u32> = HashMap::new();
    let mut chains: Vec<Vec<u32>> = Vec::new();
    for th in core.threads.iter_mut() {
        let tid = th.tid as i32;
        let Some(ta) = th.attrs.as_mut() else {
            continue;
        };
        if ta.seccomp_mode != 2 {
            continue;
        }
        let mut progs = Vec::new();
        for index in 0.. {
            if index > MAX_ITEMS as u64 {
                return Err(refuse(tid, "more seccomp filters than cairn saves".into()));
            }
            match sched::seccomp_filter(tid, index)
                .map_err(|e| Error::sys(tid, "PTRACE_SECCOMP_GET_FILTER", e))?
            {
                None => break,
                Some(p) => {
                    let flags = sched::seccomp_flags(tid, index)
                        .map_err(|e| Error::sys(tid, "PTRACE_GET_SECCOMP_METADATA", e))?;
                    progs.push((p, flags));
                }
            }
        }
        progs.reverse();
        let mut parent = None;
        let mut chain = Vec::new();
        for (prog, flags) in progs {
            if returns_user_notif(&prog) {
                return Err(refuse(
                    tid,
                    "a seccomp filter that returns SECCOMP_RET_USER_NOTIF (its listener cannot \
                     be restored)"
                        .into(),
                ));
            }
            let key = (parent, prog.clone(), flags);
            let id = match known.get(&key) {
                Some(&id) => id,
                None => {
                    let id = filters.len() as u32;
                    let mut f = SeccompFilter::new();
                    f.prog = prog;
                    f.flags = flags;
                    filters.push(f);
                    known.insert(key, id);
                    id
                }
            };
            chain.push(id);
            parent = Some(id);
        }
        ta.seccomp_filters = chain.clone();
        chains.push(chain);
    }
    // Restored as the chain every thread starts with (installed with
    // TSYNC) plus each thread's own filters on top: any set of chains.
    drop(chains);
    if let Some(a) = core.attrs.as_mut() {
        a.seccomp_filters = filters;
    } else if !filters.is_empty() {
        return Err(refuse(
            pid,
            "seccomp filters without process attributes".into(),
        ));
    }
    Ok(())
}

fn common_prefix(chains: &[Vec<u32>]) -> Vec<u32> {
    let Some(first) = chains.first() else {
        return Vec::new();
    };
    let mut n = first.len();
    for c in chains {
        n = n.min(c.iter().zip(first).take_while(|(a, b)| a == b).count());
    }
    first[..n].to_vec()
}

// ---------------------------------------------------------------- validate

/// Checks the attributes in the core image of a live process.
pub fn validate(c: &TaskCore, path: &Path) -> Result<()> {
    let obj = format!("pid {}", c.pid);
    let nfilters = c.attrs.as_ref().map_or(0, |a| a.seccomp_filters.len());
    if let Some(a) = c.attrs.as_ref() {
        if !(-1000..=1000).contains(&a.oom_score_adj) {
            return Err(bad(path, &obj, "attrs.oom_score_adj", a.oom_score_adj));
        }
        crate::kinds::cgroup::validate(&a.cgroup, c.pid, path)?;
        crate::kinds::cgroup::validate_core(c, path)?;
        if a.thp_disable > 3 {
            return Err(bad(path, &obj, "attrs.thp_disable", a.thp_disable));
        }
        count(path, &obj, "attrs.seccomp_filters", nfilters, MAX_ITEMS)?;
        for f in &a.seccomp_filters {
            if f.prog.is_empty() || f.prog.len() % 8 != 0 || f.prog.len() > BPF_MAXINSNS * 8 {
                return Err(bad(
                    path,
                    &obj,
                    "attrs.seccomp_filters.prog",
                    format!("{} bytes: not a classic BPF program", f.prog.len()),
                ));
            }
            if f.flags & !SECCOMP_FILTER_FLAG_LOG != 0 {
                return Err(bad(path, &obj, "attrs.seccomp_filters.flags", f.flags));
            }
            if returns_user_notif(&f.prog) {
                return Err(bad(
                    path,
                    &obj,
                    "attrs.seccomp_filters.prog",
                    "returns SECCOMP_RET_USER_NOTIF",
                ));
            }
        }
    }
    let stops = [libc::SIGSTOP, libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU];
    if c.stop_signal != 0 && !stops.contains(&(c.stop_signal as i32)) {
        return Err(bad(
            path,
            &obj,
            "stop_signal",
            format!("{}: not a stop signal", c.stop_signal),
        ));
    }
    for th in &c.threads {
        let Some(t) = th.attrs.as_ref() else {
            continue;
        };
        let obj = format!("pid {} thread {}", c.pid, th.tid);
        if let Some(s) = t.sched.as_ref() {
            if !POLICIES.contains(&s.policy) {
                return Err(bad(path, &obj, "attrs.sched.policy", s.policy));
            }
            if s.flags & !SCHED_FLAGS_KEPT != 0 || !(-20..=19).contains(&s.nice) || s.priority > 99
            {
                return Err(bad(
                    path,
                    &obj,
                    "attrs.sched",
                    format!(
                        "flags {:#x} nice {} priority {}",
                        s.flags, s.nice, s.priority
                    ),
                ));
            }
        }
        super::validate::check_signo(path, &obj, "attrs.pdeath_signal", t.pdeath_signal, true)?;
        if t.affinity.len() > 1024 {
            return Err(bad(path, &obj, "attrs.affinity", "longer than 8192 CPUs"));
        }
        if t.seccomp_mode > 2 || (t.seccomp_mode != 2 && !t.seccomp_filters.is_empty()) {
            return Err(bad(path, &obj, "attrs.seccomp_mode", t.seccomp_mode));
        }
        count(
            path,
            &obj,
            "attrs.seccomp_filters",
            t.seccomp_filters.len(),
            MAX_ITEMS,
        )?;
        if let Some(&i) = t.seccomp_filters.iter().find(|&&i| i as usize >= nfilters) {
            return Err(bad(
                path,
                &obj,
                "attrs.seccomp_filters",
                format!("{i}: no such filter"),
            ));
        }
        if t.seccomp_mode == 2 && t.seccomp_filters.is_empty() {
            return Err(bad(
                path,
                &obj,
                "attrs.seccomp_filters",
                "mode 2 without filters",
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- restore

/// Writes `value` to `/proc/self/<file>` inside the process.
fn write_self(agent: &mut dyn Calls, file: &str, value: &str) -> Result<()> {
    let path = format!("/proc/self/{file}");
    let fd = agent.open_at(
        0,
        &path,
        libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
    )?;
    let r = agent.write_at(512, fd, value.as_bytes(), &path);
    agent.close(fd)?;
    r.map(drop)
}

fn read_oom(pid: i32) -> Result<i32> {
    let s = procfs::read_proc_string(format!("/proc/{pid}/oom_score_adj"))?;
    s.trim().parse().map_err(|_| {
        Error::sys(
            pid,
            "read oom_score_adj",
            std::io::Error::other(format!("{s:?}")),
        )
    })
}

/// Before the threads exist, with the vessel's (cairn's) privileges:
/// THP_DISABLE, the loginuid (writable only by the task itself, with
/// CAP_AUDIT_CONTROL once set), and an oom_score_adj below the vessel's
/// (lowering needs CAP_SYS_RESOURCE).
pub fn restore_early(agent: &mut dyn Calls, core: &TaskCore) -> Result<()> {
    let Some(a) = core.attrs.as_ref() else {
        return Ok(());
    };
    let pid = agent.pid();
    if a.thp_disable != 0 {
        agent.prctl(
            "PR_SET_THP_DISABLE",
            PR_SET_THP_DISABLE,
            &[1, (a.thp_disable & 2) as u64, 0, 0],
        )?;
        let got = agent.prctl("PR_GET_THP_DISABLE", PR_GET_THP_DISABLE, &[0, 0, 0, 0])? as u32;
        if got != a.thp_disable {
            return Err(Error::Restore(format!(
                "pid {pid}: THP_DISABLE reads {got} after the restore, not {}",
                a.thp_disable
            )));
        }
    }
    set_exact(
        &format!("pid {pid}"),
        "loginuid",
        a.loginuid,
        || read_loginuid(pid),
        |have| {
            write_self(agent, "loginuid", &(a.loginuid as i32).to_string()).map_err(|e| {
                Error::Restore(format!(
                    "pid {pid}: loginuid {} could not be restored (the vessel has {have}; \
                     writing it needs CAP_AUDIT_CONTROL): {e}",
                    a.loginuid
                ))
            })
        },
    )?;
    if a.oom_score_adj < read_oom(pid)? {
        write_self(agent, "oom_score_adj", &a.oom_score_adj.to_string())?;
    }
    Ok(())
}

/// The calls that set one thread's timer slack and read it back, as part
/// of the thread's batch (`kinds::task::restore_thread_attrs`, after
/// [`restore_thread`], since a real-time policy clears the slack): the
/// read-back must give the saved value ([`timer_slack_error`] says so).
pub fn timer_slack_calls(t: Option<&ThreadAttrs>) -> Vec<(String, Syscall)> {
    let Some(ns) = t.map(|t| t.timerslack_ns).filter(|&ns| ns != 0) else {
        return Vec::new();
    };
    let set = Syscall::new(libc::SYS_prctl, &[PR_SET_TIMERSLACK as u64, ns]);
    let mut get = Syscall::new(libc::SYS_prctl, &[PR_GET_TIMERSLACK as u64]);
    get.expect = Some(ns);
    vec![
        ("prctl(PR_SET_TIMERSLACK)".into(), set),
        (TIMER_SLACK_READ.into(), get),
    ]
}

/// The name of the read-back of [`timer_slack_calls`].
pub const TIMER_SLACK_READ: &str = "prctl(PR_GET_TIMERSLACK)";

/// The error of thread `tid` whose timer slack read back otherwise than
/// `t` has it.
pub fn timer_slack_error(tid: i32, t: Option<&ThreadAttrs>, e: std::io::Error) -> Error {
    Error::Restore(format!(
        "tid {tid}: the timer slack is not {} after the restore: {e}",
        t.map_or(0, |t| t.timerslack_ns)
    ))
}

/// From cairn by tid, one thread's CPU affinity, read back. A thread
/// without a saved mask (images of older cairns) gets `inherited`, the
/// mask a vessel had before the restore pinned cairn to one CPU
/// (`sys::sched::pin_here`), if it did.
pub fn restore_affinity(tid: i32, t: Option<&ThreadAttrs>, inherited: Option<&[u8]>) -> Result<()> {
    let want = match t.map(|t| t.affinity.as_slice()) {
        Some(m) if !m.is_empty() => m,
        _ => match inherited {
            Some(m) => m,
            None => return Ok(()),
        },
    };
    sched::set_affinity(tid, want)
        .map_err(|e| Error::sys(tid, format!("sched_setaffinity {}", mask_list(want)), e))?;
    let got = sched::get_affinity(tid).map_err(|e| Error::sys(tid, "sched_getaffinity", e))?;
    if got != want {
        return Err(Error::Restore(format!(
            "tid {tid}: the CPU affinity is {} after the restore, not {} \
             (CPUs missing here, or a cpuset that excludes them)",
            mask_list(&got),
            mask_list(want)
        )));
    }
    Ok(())
}

/// From cairn by tid, one thread's nice value, scheduling policy and I/O
/// priority; each is read back. (Its CPU affinity is set last, by
/// [`restore_affinity`]; its timer slack in the thread:
/// [`timer_slack_calls`].)
pub fn restore_thread(agent: &mut dyn Calls, t: Option<&ThreadAttrs>) -> Result<()> {
    let Some(t) = t else {
        return Ok(());
    };
    let tid = agent.tid();
    let mismatch = |what: &str, got: String, want: String| {
        Error::Restore(format!(
            "tid {tid}: {what} is {got} after the restore, not {want}"
        ))
    };
    if let Some(s) = t.sched.as_ref() {
        if s.policy == sched::SCHED_DEADLINE {
            // The kernel takes SCHED_DEADLINE only for a thread whose mask
            // spans its root domain, not one pinned with cairn's.
            restore_affinity(tid, Some(t), None)?;
        }
        // For the fair policies `runtime` is the time slice: a custom one
        // is set again, the default is left the default.
        let fair = matches!(s.policy, 0 | 3 | 5);
        let default_slice = sched::get_attr(tid)
            .map_err(|e| Error::sys(tid, "sched_getattr", e))?
            .runtime;
        let runtime = if fair && s.runtime == default_slice {
            0
        } else {
            s.runtime
        };
        let want = sched::SchedAttr {
            policy: s.policy,
            flags: s.flags,
            nice: s.nice,
            priority: s.priority,
            runtime,
            deadline: s.deadline,
            period: s.period,
            ..Default::default()
        };
        // The nice value of a real-time thread is kept, but sched_setattr
        // sets it only for the fair policies.
        sched::set_nice(tid, s.nice)
            .map_err(|e| Error::sys(tid, format!("setpriority {}", s.nice), e))?;
        sched::set_attr(tid, &want).map_err(|e| {
            Error::sys(
                tid,
                format!(
                    "sched_setattr policy {} priority {} nice {}",
                    s.policy, s.priority, s.nice
                ),
                e,
            )
        })?;
        let got = sched::get_attr(tid).map_err(|e| Error::sys(tid, "sched_getattr", e))?;
        let nice = sched::get_nice(tid).map_err(|e| Error::sys(tid, "getpriority", e))?;
        let g = (
            got.policy,
            got.flags & SCHED_FLAGS_KEPT,
            nice,
            got.priority,
            got.runtime,
            got.deadline,
            got.period,
        );
        let w = (
            s.policy, s.flags, s.nice, s.priority, s.runtime, s.deadline, s.period,
        );
        if g != w {
            return Err(mismatch(
                "the scheduling",
                format!("{g:?}"),
                format!("{w:?}"),
            ));
        }
    }
    set_exact(
        &format!("tid {tid}"),
        "the I/O priority",
        Hex(t.ioprio),
        || {
            sched::get_ioprio(tid)
                .map(Hex)
                .map_err(|e| Error::sys(tid, "ioprio_get", e))
        },
        |_| {
            sched::set_ioprio(tid, t.ioprio)
                .map_err(|e| Error::sys(tid, format!("ioprio_set {:#x}", t.ioprio), e))
        },
    )?;
    Ok(())
}

/// "0-3,6" for a CPU mask.
fn mask_list(mask: &[u8]) -> String {
    let cpus: Vec<usize> = (0..mask.len() * 8)
        .filter(|&c| mask[c / 8] & (1 << (c % 8)) != 0)
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    if out.is_empty() {
        "no CPU".into()
    } else {
        out.join(",")
    }
}

/// After the credentials (which, when they change, clear the parent-death
/// signal of the thread and reset dumpable): those two again, and the
/// oom_score_adj written by the process itself, as it now is (an
/// unprivileged write leaves oom_score_adj_min alone). `agents` are the
/// process's threads, leader first; `changed` says whose credentials
/// changed (`kinds::task::restore_creds`). A thread whose credentials did
/// not change has the parent-death signal it was given (the leader's by
/// `objects::Attrs`, none for a new thread), and the process the dumpable
/// flag `Attrs` set, unless some thread's changed: only what differs is
/// set (one call per thread and process before; issue 15).
pub fn restore_late<A: Calls>(agents: &mut [A], core: &TaskCore, changed: &[bool]) -> Result<()> {
    // A thread missing from `changed` counts as changed.
    let any_changed = changed.iter().any(|&c| c) || changed.len() < agents.len();
    let mut leader_calls: Vec<(String, Syscall)> = Vec::new();
    for (i, a) in agents.iter_mut().enumerate() {
        // Per thread; older images have the leader's only.
        let sig = match core.threads.get(i).and_then(|th| th.attrs.as_ref()) {
            Some(t) => t.pdeath_signal,
            None if i == 0 => core.pdeath_signal,
            None => 0,
        };
        let has = if i == 0 { core.pdeath_signal } else { 0 };
        if !changed.get(i).copied().unwrap_or(true) && sig == has {
            continue;
        }
        let c = Syscall::new(
            libc::SYS_prctl,
            &[libc::PR_SET_PDEATHSIG as u64, sig as u64],
        );
        if i == 0 {
            leader_calls.push(("prctl(PR_SET_PDEATHSIG)".into(), c));
        } else {
            a.call_all(&[("prctl(PR_SET_PDEATHSIG)".into(), c)])?;
        }
    }
    let Some(leader) = agents.first_mut() else {
        return Ok(());
    };
    if any_changed {
        let c = Syscall::new(
            libc::SYS_prctl,
            &[libc::PR_SET_DUMPABLE as u64, core.dumpable as u64],
        );
        leader_calls.push(("prctl(PR_SET_DUMPABLE)".into(), c));
    }
    leader.call_all(&leader_calls)?;
    let Some(a) = core.attrs.as_ref() else {
        return Ok(());
    };
    let pid = leader.pid();
    set_exact(
        &format!("pid {pid}"),
        "oom_score_adj",
        a.oom_score_adj,
        || read_oom(pid),
        |_| write_self(leader, "oom_score_adj", &a.oom_score_adj.to_string()),
    )
}

/// Restores one attribute read back through `get`: `set` (given the value
/// it has) unless it has `want` already, then reads it again; another
/// value fails the restore, naming `who` (pid or tid) and `what`.
fn set_exact<T: PartialEq + std::fmt::Display>(
    who: &str,
    what: &str,
    want: T,
    get: impl Fn() -> Result<T>,
    set: impl FnOnce(T) -> Result<()>,
) -> Result<()> {
    let have = get()?;
    if have == want {
        return Ok(());
    }
    set(have)?;
    let got = get()?;
    if got != want {
        return Err(Error::Restore(format!(
            "{who}: {what} is {got} after the restore, not {want}"
        )));
    }
    Ok(())
}

/// A value shown in hex in messages.
#[derive(PartialEq)]
struct Hex(u32);

impl std::fmt::Display for Hex {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// The seccomp filters and strict mode, the last thing done inside the
/// process: its threads' filters are suspended for cairn
/// (PTRACE_O_SUSPEND_SECCOMP, `options` being the others), the chain
/// every thread shares is installed with SECCOMP_FILTER_FLAG_TSYNC, each
/// thread's own filters on top, strict mode last.
pub fn restore_seccomp<A: Calls>(agents: &mut [A], core: &TaskCore, options: u64) -> Result<()> {
    let Some(pa) = core.attrs.as_ref() else {
        return Ok(());
    };
    let attrs: Vec<Option<&ThreadAttrs>> =
        core.threads.iter().map(|th| th.attrs.as_ref()).collect();
    if !attrs.iter().flatten().any(|t| t.seccomp_mode != 0) {
        return Ok(());
    }
    for a in agents.iter() {
        let tid = a.tid();
        crate::sys::ptrace::set_options(tid, options | PTRACE_O_SUSPEND_SECCOMP)
            .map_err(|e| Error::sys(tid, "PTRACE_SETOPTIONS PTRACE_O_SUSPEND_SECCOMP", e))?;
    }
    let chains: Vec<Vec<u32>> = attrs
        .iter()
        .flatten()
        .filter(|t| t.seccomp_mode == 2)
        .map(|t| t.seccomp_filters.clone())
        .collect();
    // The common chain goes to every thread only if every thread has it.
    let all_filtered = attrs.iter().all(|t| t.is_some_and(|t| t.seccomp_mode == 2));
    let common = if all_filtered && chains.len() > 1 {
        common_prefix(&chains)
    } else {
        Vec::new()
    };
    let install = |a: &mut A, id: u32, tsync: bool| -> Result<()> {
        let f = &pa.seccomp_filters[id as usize];
        let prog = a.put(64, &f.prog)?;
        // struct sock_fprog: len, padding, filter pointer.
        let mut fprog = [0u8; 16];
        fprog[0..2].copy_from_slice(&((f.prog.len() / 8) as u16).to_ne_bytes());
        fprog[8..16].copy_from_slice(&prog.to_ne_bytes());
        let addr = a.put(0, &fprog)?;
        let flags = f.flags | if tsync { SECCOMP_FILTER_FLAG_TSYNC } else { 0 };
        let r = a.call(
            &format!("seccomp(SECCOMP_SET_MODE_FILTER) filter {id}"),
            libc::SYS_seccomp,
            &[SECCOMP_SET_MODE_FILTER, flags, addr],
        )?;
        if tsync && r != 0 {
            return Err(Error::Restore(format!(
                "pid {}: seccomp TSYNC failed on thread {r}",
                a.pid()
            )));
        }
        Ok(())
    };
    if let Some(leader) = agents.first_mut() {
        for &id in &common {
            install(leader, id, true)?;
        }
    }
    for (a, t) in agents.iter_mut().zip(&attrs) {
        let Some(t) = t else {
            continue;
        };
        if t.seccomp_mode == 2 {
            for &id in &t.seccomp_filters[common.len()..] {
                install(a, id, false)?;
            }
        }
    }
    for (a, t) in agents.iter_mut().zip(&attrs) {
        if t.is_some_and(|t| t.seccomp_mode == 1) {
            a.prctl(
                "PR_SET_SECCOMP, SECCOMP_MODE_STRICT",
                libc::PR_SET_SECCOMP,
                &[SECCOMP_MODE_STRICT],
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(mask_list(&[0b0100_1111]), "0-3,6");
        assert_eq!(mask_list(&[0, 1]), "8");
        assert_eq!(mask_list(&[]), "no CPU");
    }

    #[test]
    fn user_notif_is_found() {
        let mut prog = Vec::new();
        prog.extend_from_slice(&0x06u16.to_ne_bytes());
        prog.extend_from_slice(&[0, 0]);
        prog.extend_from_slice(&0x7fff_0000u32.to_ne_bytes());
        assert!(!returns_user_notif(&prog));
        prog[4..8].copy_from_slice(&0x7fc0_0000u32.to_ne_bytes());
        assert!(returns_user_notif(&prog));
    }

    #[test]
    fn common_chains() {
        assert_eq!(common_prefix(&[vec![0, 1, 2], vec![0, 1, 3]]), vec![0, 1]);
        assert_eq!(common_prefix(&[vec![0], vec![]]), Vec::<u32>::new());
    }

    #[test]
    fn validation_finds_bad_fields() {
        use crate::image::proto::{ThreadCore, X86Regs};
        let p = Path::new("core-5.img");
        let mut c = TaskCore::new();
        c.pid = 5;
        let mut th = ThreadCore::new();
        th.tid = 5;
        th.regs = Some(X86Regs::new()).into();
        let mut t = ThreadAttrs::new();
        t.seccomp_mode = 2;
        t.seccomp_filters = vec![0];
        th.attrs = Some(t).into();
        c.threads.push(th);
        let mut a = ProcAttrs::new();
        let mut f = SeccompFilter::new();
        f.prog = vec![0x06, 0, 0, 0, 0, 0, 0xff, 0x7f];
        a.seccomp_filters.push(f);
        c.attrs = Some(a).into();
        validate(&c, p).unwrap();
        c.threads[0].attrs.as_mut().unwrap().seccomp_filters = vec![1];
        let e = validate(&c, p).unwrap_err().to_string();
        assert!(e.contains("no such filter"), "{e}");
        c.threads[0].attrs.as_mut().unwrap().seccomp_filters = vec![0];
        c.attrs.as_mut().unwrap().oom_score_adj = 2000;
        assert!(validate(&c, p).unwrap_err().to_string().contains("oom"));
    }
}
