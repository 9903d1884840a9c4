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
//! cairn say it is done. A pipe that ends before that means the restorer
//! died: the guardian SIGKILLs every process it was told of. That message
//! is the point where a restore becomes complete.
//!
//! **Dump**:
//! When a tracer dies the kernel detaches its tracees and lets them run
//! on (`exit_ptrace`), but it puts nothing back: a thread goes on with
//! the registers and the signal mask the tracer left. A dump changes both:
//! every frozen thread has all signals blocked until it is thawed, and a
//! thread runs injected syscalls with other registers. So a dump starts a
//! guardian first, `cairn __cairn-guard` (cairn itself, in a session of its
//! own, deaf to SIGINT/SIGTERM/SIGHUP), and tells it through a pipe, for
//! each thread, its registers and signal mask before anything was changed,
//! and the parking frame of each thread that runs injected syscalls
//! (`Remote::guard`). A thread let go in the middle of an injected call
//! finishes the call and then spins in a `gettimeofday(NULL, NULL)` loop of
//! its vDSO instead of running with wrong registers.
//!
//! The guardian waits for the end of the pipe. A dumper that finishes
//! (thawed or killed the tree) says so first ([`Guardian::done`]) and the
//! guardian just exits. A pipe that ends without that means the dumper
//! died: the guardian seizes every thread it was told of (waiting until
//! the dead tracer's detach has happened), and puts back the registers of
//! each thread found in its parking loop and the signal mask of each
//! thread that still has everything blocked, then detaches. The tree then
//! runs on exactly as before; what stays is the dump's 64 KiB scratch
//! mapping in a process that was killed during its remote phase, and a
//! staging directory (never taken for a checkpoint; the next dump to the
//! same place removes it, see `image::staging`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::sys::ptrace::{self, UserRegs};
use crate::sys::{inject, uffd};
use crate::warn;

/// First argument that makes `cairn` run as a guardian.
pub const GUARD_ARG: &str = "__cairn-guard";

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

/// The dumper's (restorer's) side.
pub struct Guardian {
    child: Child,
    pipe: Option<ChildStdin>,
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
    /// started: the dump then goes on unguarded.
    pub fn start(role: Role) -> Option<Guardian> {
        let t0 = Instant::now();
        let r = std::env::current_exe().and_then(|exe| {
            use std::os::unix::process::CommandExt;
            Command::new(exe)
                .arg(GUARD_ARG)
                .arg(role.arg())
                .arg(std::process::id().to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .process_group(0)
                .spawn()
        });
        match r {
            Ok(mut child) => {
                let pipe = child.stdin.take();
                crate::info!(
                    "guardian started (pid {}) in {:?}",
                    child.id(),
                    t0.elapsed()
                );
                Some(Guardian { child, pipe })
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

    fn send(&mut self, line: String) {
        if let Some(p) = &mut self.pipe {
            if let Err(e) = p.write_all(line.as_bytes()) {
                warn!("guardian {}: {e}", self.child.id());
                self.pipe = None;
            }
        }
    }

    /// A thread as it was frozen, before anything of it was changed.
    pub fn thread(&mut self, tid: i32, regs: &UserRegs, sigmask: u64) {
        let mut line = format!("T {tid} {sigmask:x}");
        for w in regs_words(regs) {
            line.push_str(&format!(" {w:x}"));
        }
        line.push('\n');
        self.send(line);
    }

    /// A thread that runs injected calls with parking frame `frame`; its
    /// parking loop is `lo..=hi`.
    pub fn parking(&mut self, tid: i32, frame: u64, lo: u64, hi: u64) {
        self.send(format!("P {tid} {frame:x} {lo:x} {hi:x}\n"));
    }

    /// A restored process, killed if the restorer dies before
    /// [`Guardian::done`].
    pub fn process(&mut self, pid: i32) {
        self.send(format!("K {pid}\n"));
    }

    /// Every thread is thawed or killed (dump), every process let go
    /// (restore): the guardian exits doing nothing.
    pub fn done(mut self) {
        self.send("D\n".into());
        self.pipe = None;
        let _ = self.child.wait();
    }
}

#[derive(Default)]
struct Record {
    regs: Option<UserRegs>,
    sigmask: u64,
    parking: Option<(u64, u64, u64)>,
}

/// All signals blocked as the kernel reports it (SIGKILL and SIGSTOP
/// cannot be blocked).
fn all_blocked(mask: u64) -> bool {
    mask | (1 << (libc::SIGKILL - 1)) | (1 << (libc::SIGSTOP - 1)) == u64::MAX
}

/// `cairn __cairn-guard dump|restore PID`: see the module documentation.
/// Returns the exit code.
pub fn run(role: &str, dumper: &str) -> u8 {
    let _ = nix::unistd::setsid();
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
        let _ = crate::sys::task::ignore_signal(sig);
    }
    let mut threads: BTreeMap<i32, Record> = BTreeMap::new();
    let mut procs: Vec<(i32, std::os::fd::OwnedFd)> = Vec::new();
    let mut done = false;
    for line in BufReader::new(std::io::stdin().lock()).lines() {
        let Ok(line) = line else { break };
        let f: Vec<&str> = line.split_whitespace().collect();
        let hex = |s: &str| u64::from_str_radix(s, 16).ok();
        match f.as_slice() {
            ["D"] => done = true,
            ["T", tid, mask, regs @ ..] => {
                let (Ok(tid), Some(mask)) = (tid.parse::<i32>(), hex(mask)) else {
                    continue;
                };
                let words: Option<Vec<u64>> = regs.iter().map(|w| hex(w)).collect();
                let r = threads.entry(tid).or_default();
                r.regs = words.as_deref().and_then(regs_from);
                r.sigmask = mask;
            }
            ["K", pid] => {
                // The pidfd is opened while the restorer still holds the
                // process (traced, unreaped): it is the right one.
                if let Some(fd) = pid
                    .parse::<i32>()
                    .ok()
                    .and_then(|p| uffd::pidfd_open(p).ok().map(|fd| (p, fd)))
                {
                    procs.push(fd);
                }
            }
            ["P", tid, frame, lo, hi] => {
                if let (Ok(tid), Some(fr), Some(lo), Some(hi)) =
                    (tid.parse::<i32>(), hex(frame), hex(lo), hex(hi))
                {
                    threads.entry(tid).or_default().parking = Some((fr, lo, hi));
                }
            }
            _ => {}
        }
    }
    if done {
        return 0;
    }
    if role == "restore" {
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
    if threads.is_empty() {
        return 0;
    }
    let (mut regs_fixed, mut masks_fixed, mut failed) = (0, 0, 0);
    for (&tid, rec) in &threads {
        match repair(tid, rec) {
            Ok((r, m)) => {
                regs_fixed += r as usize;
                masks_fixed += m as usize;
            }
            Err(e) => {
                failed += 1;
                eprintln!("cairn guard: thread {tid}: {e}");
            }
        }
    }
    eprintln!(
        "cairn guard: the dumper (pid {dumper}) died during the dump; of {} threads, put back \
         the registers of {regs_fixed} and the signal mask of {masks_fixed}{}",
        threads.len(),
        if failed > 0 {
            format!(", {failed} failed")
        } else {
            String::new()
        }
    );
    u8::from(failed > 0)
}

/// Seizes `tid` once the dead dumper's detach is through, puts back what
/// the dump changed, detaches. Returns (registers put back, mask put back).
fn repair(tid: i32, rec: &Record) -> std::io::Result<(bool, bool)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match inject::seize_and_stop(tid, 0) {
            Ok(_) => break,
            // Gone: nothing to do.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok((false, false)),
            // Still traced by the dumper until its exit completes.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(e),
        }
    }
    let r = (|| -> std::io::Result<(bool, bool)> {
        let now = ptrace::get_regs(tid)?;
        let mut regs = false;
        if let (Some(orig), Some((frame, lo, hi))) = (&rec.regs, rec.parking) {
            if now.rbp == frame && (lo..=hi).contains(&now.rip) {
                ptrace::set_regs(tid, orig)?;
                regs = true;
            }
        }
        let mask = ptrace::get_sigmask(tid)?;
        let fix_mask = mask != rec.sigmask && all_blocked(mask);
        if fix_mask {
            ptrace::set_sigmask(tid, rec.sigmask)?;
        }
        Ok((regs, fix_mask))
    })();
    let d = ptrace::detach(tid, 0);
    let r = r?;
    d?;
    Ok(r)
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
    fn blocked() {
        assert!(all_blocked(u64::MAX));
        assert!(all_blocked(!((1 << 8) | (1 << 18))));
        assert!(!all_blocked(0));
    }
}
