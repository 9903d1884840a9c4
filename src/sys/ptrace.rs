//! ptrace(2) wrappers for seizing, stopping and inspecting tasks.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::sync::atomic::{AtomicU64, Ordering};

use super::check;

/// x86-64 `struct user_regs_struct`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserRegs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub orig_rax: u64,
    pub rip: u64,
    pub cs: u64,
    pub eflags: u64,
    pub rsp: u64,
    pub ss: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    pub ds: u64,
    pub es: u64,
    pub fs: u64,
    pub gs: u64,
}

const _: () = assert!(size_of::<UserRegs>() == size_of::<libc::user_regs_struct>());

pub const PTRACE_O_TRACESYSGOOD: u64 = 1;
pub const PTRACE_O_TRACEFORK: u64 = 1 << 1;
pub const PTRACE_O_TRACEVFORK: u64 = 1 << 2;
pub const PTRACE_O_TRACECLONE: u64 = 1 << 3;
pub const PTRACE_O_EXITKILL: u64 = 1 << 20;
pub const PTRACE_EVENT_FORK: i32 = 1;
pub const PTRACE_EVENT_CLONE: i32 = 3;
pub const PTRACE_EVENT_STOP: i32 = 128;
const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
const NT_X86_XSTATE: usize = 0x202;
const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;

/// ptrace requests made and ptrace stops waited for by this process, for
/// the figures a restore prints with -v ([`counts`]).
static REQUESTS: AtomicU64 = AtomicU64::new(0);
static STOPS: AtomicU64 = AtomicU64::new(0);

/// (ptrace requests, ptrace stops reported by [`wait`]) so far.
pub fn counts() -> (u64, u64) {
    (
        REQUESTS.load(Ordering::Relaxed),
        STOPS.load(Ordering::Relaxed),
    )
}

fn raw(req: libc::c_uint, tid: i32, addr: usize, data: usize) -> io::Result<libc::c_long> {
    REQUESTS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: ptrace with integer addr/data; requests that write through a
    // pointer are only issued by the typed wrappers below, which pass
    // pointers to live, correctly sized buffers.
    check(unsafe { libc::ptrace(req, tid, addr, data) })
}

pub fn seize(tid: i32, options: u64) -> io::Result<()> {
    raw(libc::PTRACE_SEIZE, tid, 0, options as usize).map(drop)
}

pub fn interrupt(tid: i32) -> io::Result<()> {
    raw(libc::PTRACE_INTERRUPT, tid, 0, 0).map(drop)
}

pub fn set_options(tid: i32, options: u64) -> io::Result<()> {
    raw(libc::PTRACE_SETOPTIONS, tid, 0, options as usize).map(drop)
}

pub fn cont(tid: i32, sig: i32) -> io::Result<()> {
    raw(libc::PTRACE_CONT, tid, 0, sig as usize).map(drop)
}

pub fn syscall(tid: i32, sig: i32) -> io::Result<()> {
    raw(libc::PTRACE_SYSCALL, tid, 0, sig as usize).map(drop)
}

pub fn detach(tid: i32, sig: i32) -> io::Result<()> {
    raw(libc::PTRACE_DETACH, tid, 0, sig as usize).map(drop)
}

pub fn get_event_msg(tid: i32) -> io::Result<u64> {
    let mut v: libc::c_ulong = 0;
    raw(libc::PTRACE_GETEVENTMSG, tid, 0, &mut v as *mut _ as usize)?;
    Ok(v)
}

pub fn get_regs(tid: i32) -> io::Result<UserRegs> {
    let mut r = MaybeUninit::<UserRegs>::zeroed();
    raw(libc::PTRACE_GETREGS, tid, 0, r.as_mut_ptr() as usize)?;
    // SAFETY: zero-initialised plain-old-data, filled in by the kernel.
    Ok(unsafe { r.assume_init() })
}

pub fn set_regs(tid: i32, regs: &UserRegs) -> io::Result<()> {
    raw(libc::PTRACE_SETREGS, tid, 0, regs as *const _ as usize).map(drop)
}

/// The NT_X86_XSTATE regset (the full XSAVE area).
pub fn get_xstate(tid: i32) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 1 << 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    raw(
        libc::PTRACE_GETREGSET,
        tid,
        NT_X86_XSTATE,
        &mut iov as *mut _ as usize,
    )?;
    buf.truncate(iov.iov_len);
    Ok(buf)
}

pub fn set_xstate(tid: i32, data: &[u8]) -> io::Result<()> {
    let mut copy = data.to_vec();
    let mut iov = libc::iovec {
        iov_base: copy.as_mut_ptr().cast(),
        iov_len: copy.len(),
    };
    raw(
        libc::PTRACE_SETREGSET,
        tid,
        NT_X86_XSTATE,
        &mut iov as *mut _ as usize,
    )
    .map(drop)
}

pub fn get_sigmask(tid: i32) -> io::Result<u64> {
    let mut m: u64 = 0;
    raw(libc::PTRACE_GETSIGMASK, tid, 8, &mut m as *mut u64 as usize)?;
    Ok(m)
}

pub fn set_sigmask(tid: i32, mask: u64) -> io::Result<()> {
    raw(
        libc::PTRACE_SETSIGMASK,
        tid,
        8,
        &mask as *const u64 as usize,
    )
    .map(drop)
}

#[repr(C)]
struct PeekSiginfoArgs {
    off: u64,
    flags: u32,
    nr: i32,
}

/// Queued signals of a thread (`shared` = the process-wide queue), as raw
/// 128-byte siginfo structures, oldest first. Nothing is dequeued.
pub fn peek_siginfo(tid: i32, shared: bool) -> io::Result<Vec<[u8; 128]>> {
    let mut out = Vec::new();
    loop {
        let mut batch = [[0u8; 128]; 32];
        let args = PeekSiginfoArgs {
            off: out.len() as u64,
            flags: if shared { PTRACE_PEEKSIGINFO_SHARED } else { 0 },
            nr: batch.len() as i32,
        };
        let n = raw(
            libc::PTRACE_PEEKSIGINFO,
            tid,
            &args as *const _ as usize,
            batch.as_mut_ptr() as usize,
        )? as usize;
        out.extend_from_slice(&batch[..n.min(batch.len())]);
        if n < batch.len() {
            return Ok(out);
        }
        if out.len() > 1 << 20 {
            return Err(io::Error::other("too many pending signals"));
        }
    }
}

#[repr(C)]
#[derive(Default, Debug, Clone, Copy)]
pub struct RseqConfig {
    pub rseq_abi_pointer: u64,
    pub rseq_abi_size: u32,
    pub signature: u32,
    pub flags: u32,
    pub pad: u32,
}

/// The signature glibc registers its rseq areas with on x86 (`RSEQ_SIG`).
pub const RSEQ_SIG_X86: u32 = 0x5305_3053;
/// `sizeof(struct rseq)` of the original ABI: the only length kernels
/// before Linux 6.3 accept, and what glibc registers.
pub const RSEQ_LEN_ORIG: u32 = 32;

/// `__rseq_offset` of this process's glibc (2.35 and later): where each
/// thread's rseq area lies from its thread pointer (fs_base), if glibc
/// registered the areas (`__rseq_size` > 0). None for an older glibc, one
/// started with `glibc.pthread.rseq=0`, or a kernel without rseq.
pub fn own_glibc_rseq_offset() -> Option<i64> {
    // SAFETY: dlsym with RTLD_DEFAULT and NUL-terminated names only looks
    // symbols up; a non-null result points at glibc's `ptrdiff_t
    // __rseq_offset` and `unsigned int __rseq_size`, which glibc sets
    // before main and never changes afterwards, so reading them is sound.
    unsafe {
        let off = libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_offset".as_ptr());
        let size = libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr());
        if off.is_null() || size.is_null() || *(size as *const u32) == 0 {
            return None;
        }
        Some(*(off as *const isize) as i64)
    }
}

/// PTRACE_GET_RSEQ_CONFIGURATION (Linux 5.13+; EIO before). See
/// `kinds::task::rseq_config` for the fallback on older kernels.
pub fn get_rseq_config(tid: i32) -> io::Result<RseqConfig> {
    let mut c = RseqConfig::default();
    raw(
        PTRACE_GET_RSEQ_CONFIGURATION,
        tid,
        size_of::<RseqConfig>(),
        &mut c as *mut _ as usize,
    )?;
    Ok(c)
}

/// Result of waitpid on a traced task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStatus {
    Exited(i32),
    Signaled(i32),
    /// Stopped with this signal; `event` is the PTRACE_EVENT_* in bits 16+.
    Stopped {
        sig: i32,
        event: i32,
    },
}

pub fn decode_status(status: i32) -> WaitStatus {
    if libc::WIFEXITED(status) {
        WaitStatus::Exited(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        WaitStatus::Signaled(libc::WTERMSIG(status))
    } else {
        WaitStatus::Stopped {
            sig: libc::WSTOPSIG(status),
            event: (status >> 16) & 0xff,
        }
    }
}

/// waitpid(tid, __WALL | flags); retries on EINTR. Returns None with WNOHANG
/// when nothing changed.
pub fn wait(tid: i32, flags: i32) -> io::Result<Option<(i32, WaitStatus)>> {
    loop {
        let mut st: libc::c_int = 0;
        // SAFETY: `st` is a valid out-pointer for the duration of the call.
        let r = unsafe { libc::waitpid(tid, &mut st, libc::__WALL | flags) };
        if r == -1 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Ok(None);
        }
        let status = decode_status(st);
        if matches!(status, WaitStatus::Stopped { .. }) {
            STOPS.fetch_add(1, Ordering::Relaxed);
        }
        return Ok(Some((r, status)));
    }
}

/// Raw wait status, for exit codes of non-traced children.
pub fn wait_raw(pid: i32) -> io::Result<i32> {
    loop {
        let mut st: libc::c_int = 0;
        // SAFETY: `st` is a valid out-pointer for the duration of the call.
        let r = unsafe { libc::waitpid(pid, &mut st, libc::__WALL) };
        if r == -1 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(st);
    }
}

/// PF_KTHREAD in the flags field of /proc/PID/stat.
const PF_KTHREAD: u64 = 0x0020_0000;

/// A process's name (`/proc/PID/comm`), or "?".
fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// `Key:` of /proc/TID/status, trimmed.
fn status_field(tid: i32, key: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
}

fn hex_field(tid: i32, key: &str) -> u64 {
    status_field(tid, key)
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
        .unwrap_or(0)
}

/// The ancestors of `pid` (its parent first), up to init.
fn ancestors(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut p = pid;
    while let Some(pp) = status_field(p, "PPid:").and_then(|v| v.parse::<i32>().ok()) {
        if pp <= 0 || out.contains(&pp) || out.len() > 4096 {
            break;
        }
        out.push(pp);
        p = pp;
    }
    out
}

/// Why PTRACE_SEIZE of `tid` by this process fails, as far as /proc tells:
/// cairn itself or its guardian (`guardian`), a kernel thread, another
/// tracer, or what cairn lacks (CAP_SYS_PTRACE; Yama's ptrace_scope; the
/// ids, the dumpability and the capabilities the kernel compares).
pub fn seize_denied_reason(tid: i32, guardian: Option<i32>) -> String {
    let me = std::process::id() as i32;
    let tgid = status_field(tid, "Tgid:")
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(tid);
    if tgid == me {
        let up: Vec<String> = ancestors(me)
            .iter()
            .map(|p| format!("{p} ({})", comm(*p)))
            .collect();
        return format!(
            "pid {tgid} is cairn itself: a tree that holds cairn cannot be dumped (its root is \
             one of cairn's ancestors: {})",
            up.join(", ")
        );
    }
    if guardian == Some(tgid) {
        return format!("pid {tgid} is cairn's own guardian");
    }
    let stat = std::fs::read_to_string(format!("/proc/{tid}/stat")).unwrap_or_default();
    let flags = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().nth(6))
        .and_then(|f| f.parse::<u64>().ok())
        .unwrap_or(0);
    if flags & PF_KTHREAD != 0 {
        return format!(
            "pid {tid} ({}) is a kernel thread, which cannot be traced or dumped",
            comm(tid)
        );
    }
    let tracer = status_field(tid, "TracerPid:")
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(0);
    if tracer != 0 && tracer != me {
        return format!(
            "pid {tid} is traced by pid {tracer} ({}), and a task has one tracer at a time: \
             detach that tracer (or end it) and dump again",
            comm(tracer)
        );
    }
    let mut why = Vec::new();
    let my_eff = hex_field(me, "CapEff:");
    if my_eff & (1 << 19) == 0 {
        let ids = |t: i32, k: &str| -> Vec<u32> {
            status_field(t, k)
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        };
        let (tu, tg, mu, mg) = (
            ids(tid, "Uid:"),
            ids(tid, "Gid:"),
            ids(me, "Uid:"),
            ids(me, "Gid:"),
        );
        let my_uid = mu.first().copied().unwrap_or(u32::MAX);
        let my_gid = mg.first().copied().unwrap_or(u32::MAX);
        if tu.iter().take(3).any(|&u| u != my_uid) || tg.iter().take(3).any(|&g| g != my_gid) {
            why.push(format!(
                "it runs as uid {} gid {}, cairn as uid {my_uid} gid {my_gid}",
                tu.get(1).copied().unwrap_or(0),
                tg.get(1).copied().unwrap_or(0)
            ));
        }
        // /proc/PID of a non-dumpable process belongs to root.
        use std::os::unix::fs::MetadataExt;
        if my_uid != 0
            && std::fs::metadata(format!("/proc/{tgid}")).is_ok_and(|m| m.uid() == 0)
            && tu.first() == Some(&my_uid)
        {
            why.push(
                "it is not dumpable (set-user-ID, file capabilities or PR_SET_DUMPABLE 0)".into(),
            );
        }
        let extra = hex_field(tid, "CapPrm:") & !hex_field(me, "CapPrm:");
        if extra != 0 {
            why.push(format!("it holds capabilities cairn does not ({extra:#x})"));
        }
        if let Ok(s) = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope") {
            let scope = s.trim();
            let what = match scope {
                "0" => None,
                "1" => Some("only a process's ancestors may trace it"),
                "2" => Some("only with CAP_SYS_PTRACE"),
                _ => Some("no process may be traced at all"),
            };
            if let Some(w) = what {
                why.push(format!(
                    "/proc/sys/kernel/yama/ptrace_scope is {scope} ({w})"
                ));
            }
        }
        why.push("cairn lacks CAP_SYS_PTRACE".into());
    }
    if why.is_empty() {
        return format!(
            "pid {tid} ({}) may not be traced (a security module may refuse it)",
            comm(tid)
        );
    }
    format!(
        "pid {tid} ({}) may not be traced: {}",
        comm(tid),
        why.join("; ")
    )
}

/// `e`, a failed PTRACE_SEIZE of `tid`, with the reason when it is EPERM.
pub fn explain_seize_error(tid: i32, e: io::Error, guardian: Option<i32>) -> io::Error {
    if e.raw_os_error() != Some(libc::EPERM) {
        return e;
    }
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{e}: {}", seize_denied_reason(tid, guardian)),
    )
}
