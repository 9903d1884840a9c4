//! ptrace(2) wrappers for seizing, stopping and inspecting tasks.

use std::io;
use std::mem::{size_of, MaybeUninit};

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

fn raw(req: libc::c_uint, tid: i32, addr: usize, data: usize) -> io::Result<libc::c_long> {
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
        return Ok(Some((r, decode_status(st))));
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
