//! Remote system calls: make a ptrace-stopped task execute one syscall.
//!
//! The task's registers are pointed at a `syscall` instruction somewhere in
//! its address space (the vDSO has several, so nothing is written into the
//! target), with `orig_rax = -1` so the kernel does not apply syscall-restart
//! logic to our values. `PTRACE_SYSCALL` twice takes it through the
//! syscall-entry and syscall-exit stops; `rax` then holds the result.
//!
//! Before the final registers are put back, [`Remote::park`] moves the task
//! from the syscall-exit stop into a `PTRACE_EVENT_STOP` inside the signal
//! path (PTRACE_INTERRUPT + PTRACE_CONT). Detaching from there lets the
//! kernel restart an interrupted syscall exactly as it would after any
//! ptrace stop.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use super::ptrace::{self, UserRegs, WaitStatus, PTRACE_EVENT_STOP};

/// Injected calls by syscall number (the last slot counts numbers beyond
/// it), for the figures a restore prints with -v ([`call_counts`]).
static CALLS: [AtomicU64; 513] = [const { AtomicU64::new(0) }; 513];

/// Runs of calls that took their own stop, and batches.
static CALL_STOPS: AtomicU64 = AtomicU64::new(0);
static BATCHES: AtomicU64 = AtomicU64::new(0);

/// (calls run one per stop, batches run by the agent loop) so far.
pub fn run_counts() -> (u64, u64) {
    (
        CALL_STOPS.load(Ordering::Relaxed),
        BATCHES.load(Ordering::Relaxed),
    )
}

/// Counts the calls of a batch ([`call_counts`]) and the batch.
pub fn count_batch(nrs: impl Iterator<Item = libc::c_long>) {
    BATCHES.fetch_add(1, Ordering::Relaxed);
    nrs.for_each(count_call);
}

fn count_call(nr: libc::c_long) {
    let i = usize::try_from(nr).map_or(512, |n| n.min(512));
    CALLS[i].fetch_add(1, Ordering::Relaxed);
}

/// The injected calls so far, as (syscall number, count), most frequent
/// first (512 stands for any number beyond 511).
pub fn call_counts() -> Vec<(usize, u64)> {
    let mut v: Vec<(usize, u64)> = (CALLS.iter().enumerate())
        .map(|(i, c)| (i, c.load(Ordering::Relaxed)))
        .filter(|&(_, c)| c > 0)
        .collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

/// Waits for the next ptrace stop of `tid`; an exit is an error.
pub fn wait_stop(tid: i32) -> io::Result<(i32, i32)> {
    match ptrace::wait(tid, 0)? {
        Some((_, WaitStatus::Stopped { sig, event })) => Ok((sig, event)),
        Some((_, WaitStatus::Exited(c))) => Err(io::Error::other(format!(
            "task {tid} exited with status {c}"
        ))),
        Some((_, WaitStatus::Signaled(s))) => {
            Err(io::Error::other(format!("task {tid} killed by signal {s}")))
        }
        None => Err(io::Error::other(format!("task {tid}: no wait status"))),
    }
}

/// Seizes and interrupts a task; returns once it is in PTRACE_EVENT_STOP.
/// `stopped` reports whether it was already in a group stop (SIGSTOP).
pub fn seize_and_stop(tid: i32, options: u64) -> io::Result<bool> {
    seize_and_stop_sig(tid, options).map(|s| s.is_some())
}

/// [`seize_and_stop`], returning the signal of the group stop the task
/// was in (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU), if it was.
pub fn seize_and_stop_sig(tid: i32, options: u64) -> io::Result<Option<i32>> {
    ptrace::seize(tid, options)?;
    ptrace::interrupt(tid)?;
    loop {
        let (sig, event) = wait_stop(tid)?;
        if event == PTRACE_EVENT_STOP {
            return Ok(matches!(
                sig,
                libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
            )
            .then_some(sig));
        }
        // A signal arrived before the interrupt: leave it pending for the
        // task by re-queueing it when we let it go. Here we pass it on and
        // wait for the interrupt stop that is still due.
        ptrace::cont(tid, sig)?;
    }
}

/// `syscall; int3`: written by cairn where it may write (the restorer
/// area of a restore), calls through it take one ptrace stop each (see
/// [`Remote::set_trap_insn`]).
pub const SYSCALL_TRAP: [u8; 3] = [0x0f, 0x05, 0xcc];

/// The signal mask of a task whose calls stop at an `int3`: everything
/// blocked but SIGTRAP. The kernel forces the trap's SIGTRAP through a
/// blocked or ignored disposition by resetting it to SIG_DFL, which would
/// lose a restored handler; unblocked, the trap changes nothing.
pub const TRAP_SIGMASK: u64 = !(1u64 << (libc::SIGTRAP - 1));

/// A ptrace-stopped task that can be made to run system calls.
pub struct Remote {
    pub tid: i32,
    insn: u64,
    /// `insn` is followed by an `int3` ([`SYSCALL_TRAP`]).
    trap: bool,
    base: UserRegs,
    /// `rbp` for every injected call: the frame chain of a parking loop
    /// (see [`Remote::guard`]).
    guard_rbp: Option<u64>,
    /// The next calls are not guarded even with `guard_rbp` (they remove
    /// the parking loop itself).
    unguarded: bool,
    /// Address of the agent loop (`remote::batch::AGENT_CODE`) and of its
    /// final `int3`, where batches can run ([`Remote::run_batch`]).
    agent: Option<(u64, u64)>,
}

impl Remote {
    /// `insn` is the address of a `syscall` (0f 05) instruction mapped
    /// executable in the task.
    pub fn new(tid: i32, insn: u64) -> io::Result<Remote> {
        let base = ptrace::get_regs(tid)?;
        Ok(Remote {
            tid,
            insn,
            trap: false,
            base,
            guard_rbp: None,
            unguarded: false,
            agent: None,
        })
    }

    /// The registers the task had when this `Remote` was made.
    pub fn base(&self) -> &UserRegs {
        &self.base
    }

    /// Makes every injected call safe against the tracer's death. `insn`
    /// must be the `syscall` of a vDSO sequence `mov $harmless, %eax;
    /// syscall; leave; xor ... (rdi and rsi among them); ret` that starts
    /// at `loop_entry`. Writes a two-word frame `[P] = P, [P+8] =
    /// loop_entry` on the task's stack below its red zone (where the
    /// kernel would put a signal frame) and runs every call with `rbp =
    /// P`: if the task is let go at any point of a call (cairn killed),
    /// it finishes the syscall, and `leave; ret` takes it into an endless
    /// `gettimeofday(NULL, NULL)` loop on that frame instead of running
    /// on with changed registers, until the guardian puts its registers
    /// back. Returns P.
    ///
    /// A page still shared copy-on-write with a child (a thread asleep
    /// since the fork) would be copied by the write, and the child would
    /// lose its sharing of it (seen as a page or two of tree_cow_mix and
    /// tree_fork_storm coming back unshared): the frame goes down to the
    /// first page below that is not shared (up to 16 pages down).
    ///
    /// `below`: words the loop pops from below `P` (lowest first), written
    /// at `P - 8 * below.len()` (the other kind of parking loop,
    /// `remote::find_clock_loop`).
    pub fn guard(&mut self, pid: i32, loop_entry: u64, below: &[u64]) -> io::Result<u64> {
        let low = 8 * below.len() as u64;
        let mut p = (self.base.rsp.wrapping_sub(128 + 256)) & !15;
        for _ in 0..16 {
            // The page of the frame's lowest word.
            let page = p.wrapping_sub(low) & !(super::PAGE_SIZE - 1);
            match crate::procfs::read_pagemap(pid, page, page + super::PAGE_SIZE) {
                Ok(pm) if pm.first().is_some_and(|f| f.present() && !f.exclusive()) => {
                    p = page.wrapping_sub(16);
                }
                _ => break,
            }
        }
        let mut frame = Vec::with_capacity(below.len() * 8 + 16);
        for w in below {
            frame.extend_from_slice(&w.to_ne_bytes());
        }
        frame.extend_from_slice(&p.to_ne_bytes());
        frame.extend_from_slice(&loop_entry.to_ne_bytes());
        super::mem::vm_write_all(pid, p.wrapping_sub(low), &frame)?;
        self.guard_rbp = Some(p);
        Ok(p)
    }
    /// Marks the next calls as unguarded whatever their parking frame
    /// (for [`crate::guard::pause_in_call`]'s report).
    pub fn set_unguarded(&mut self, unguarded: bool) {
        self.unguarded = unguarded;
    }

    /// The `syscall` instruction the calls run at.
    pub fn insn(&self) -> u64 {
        self.insn
    }

    pub fn set_insn(&mut self, insn: u64) {
        self.insn = insn;
        self.trap = false;
        self.agent = None;
    }

    /// Lets [`Remote::run_batch`] run the agent loop at `entry`, whose
    /// `int3` is at `trap`; only with calls that trap
    /// ([`Remote::set_trap_insn`]), since it stops the same way.
    pub fn set_agent(&mut self, entry: u64, trap: u64) {
        if self.trap {
            self.agent = Some((entry, trap));
        }
    }

    /// Whether [`Remote::run_batch`] can run.
    pub fn has_agent(&self) -> bool {
        self.agent.is_some()
    }

    /// Runs the agent loop over the descriptors from `first` to `end`
    /// (`rbx` and `r12`, see `remote::batch`) and returns `rbx` at its
    /// `int3`: the descriptor it stopped at, or `end`. One stop for the
    /// whole batch; event stops on the way are continued, any other
    /// signal is an error, as in `Remote::run_to_trap`.
    pub fn run_batch(&mut self, first: u64, end: u64) -> io::Result<u64> {
        let Some((entry, trap)) = self.agent else {
            return Err(io::Error::other("no agent loop in this task"));
        };
        let mut r = self.base;
        r.rip = entry;
        r.orig_rax = u64::MAX;
        r.rbx = first;
        r.r12 = end;
        ptrace::set_regs(self.tid, &r)?;
        Ok(self.cont_to_trap(trap + 1, "the agent's calls")?.rbx)
    }

    /// Runs every call through `insn`, which must be the start of
    /// [`SYSCALL_TRAP`] mapped executable in the task, with the task's
    /// mask [`TRAP_SIGMASK`] and SIGTRAP neither ignored nor pending: the
    /// task is let go with PTRACE_CONT, runs the syscall and stops at the
    /// `int3` (a SIGTRAP signal-delivery stop, the signal then discarded).
    /// One stop and three ptrace requests per call instead of the two
    /// stops (syscall entry and exit) and four requests of PTRACE_SYSCALL.
    pub fn set_trap_insn(&mut self, insn: u64) {
        self.insn = insn;
        self.trap = true;
    }

    /// Whether calls stop at an `int3` ([`Remote::set_trap_insn`]).
    pub fn traps(&self) -> bool {
        self.trap
    }

    /// Runs syscall `nr`; returns the raw `rax` (negative errno on failure).
    pub fn syscall_raw(&mut self, nr: libc::c_long, args: &[u64]) -> io::Result<i64> {
        count_call(nr);
        CALL_STOPS.fetch_add(1, Ordering::Relaxed);
        let mut r = self.base;
        let a = |i: usize| args.get(i).copied().unwrap_or(0);
        r.rip = self.insn;
        if let Some(p) = self.guard_rbp {
            r.rbp = p;
        }
        r.rax = nr as u64;
        r.orig_rax = u64::MAX;
        r.rdi = a(0);
        r.rsi = a(1);
        r.rdx = a(2);
        r.r10 = a(3);
        r.r8 = a(4);
        r.r9 = a(5);
        ptrace::set_regs(self.tid, &r)?;
        if self.trap {
            return self.run_to_trap();
        }
        self.step_to_syscall_stop(true)?;
        crate::guard::pause_in_call(nr, self.guard_rbp.is_none() || self.unguarded);
        self.step_to_syscall_stop(false)?;
        let out = ptrace::get_regs(self.tid)?;
        Ok(out.rax as i64)
    }

    /// Lets the task run from [`SYSCALL_TRAP`] to its `int3`; returns
    /// `rax`. Event stops on the way (the clone event of a clone we asked
    /// for, a group stop) are continued; any other signal is an error, as
    /// in [`Remote::step_to_syscall_stop`].
    fn run_to_trap(&mut self) -> io::Result<i64> {
        let at = self.insn + SYSCALL_TRAP.len() as u64;
        Ok(self.cont_to_trap(at, "the syscall")?.rax as i64)
    }

    /// Continues the task until its SIGTRAP with `rip == at` (just past an
    /// `int3`) and returns its registers there. Event stops on the way are
    /// continued; any other stop is an error naming `after`.
    fn cont_to_trap(&mut self, at: u64, after: &str) -> io::Result<UserRegs> {
        ptrace::cont(self.tid, 0)?;
        loop {
            let (sig, event) = wait_stop(self.tid)?;
            if event != 0 {
                ptrace::cont(self.tid, 0)?;
                continue;
            }
            let out = ptrace::get_regs(self.tid)?;
            if sig == libc::SIGTRAP && out.rip == at {
                return Ok(out);
            }
            return Err(io::Error::other(format!(
                "tid {}: signal {sig} instead of the trap after {after} (rip {:#x})",
                self.tid, out.rip
            )));
        }
    }

    fn step_to_syscall_stop(&mut self, entry: bool) -> io::Result<()> {
        ptrace::syscall(self.tid, 0)?;
        loop {
            let (sig, event) = wait_stop(self.tid)?;
            if sig == (libc::SIGTRAP | 0x80) {
                return Ok(());
            }
            if event != 0 {
                // A group stop, a stray interrupt, or the clone event of a
                // clone we asked for: keep going.
                ptrace::syscall(self.tid, 0)?;
                continue;
            }
            let rip = ptrace::get_regs(self.tid).map(|r| r.rip).unwrap_or(0);
            return Err(io::Error::other(format!(
                "tid {}: signal {sig} instead of the syscall-{} stop (rip {rip:#x})",
                self.tid,
                if entry { "entry" } else { "exit" }
            )));
        }
    }

    /// Runs syscall `nr`; a negative result becomes the matching io::Error.
    pub fn syscall(&mut self, nr: libc::c_long, args: &[u64]) -> io::Result<u64> {
        let r = self.syscall_raw(nr, args)?;
        if (-4095..0).contains(&r) {
            Err(io::Error::from_raw_os_error((-r) as i32))
        } else {
            Ok(r as u64)
        }
    }

    /// Brings the task from a syscall-exit stop into PTRACE_EVENT_STOP in
    /// the signal path (see the module documentation).
    pub fn park(&mut self) -> io::Result<()> {
        park(self.tid)
    }
}

/// See [`Remote::park`].
pub fn park(tid: i32) -> io::Result<()> {
    ptrace::interrupt(tid)?;
    ptrace::cont(tid, 0)?;
    let (sig, event) = wait_stop(tid)?;
    if event == PTRACE_EVENT_STOP {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "tid {tid}: signal {sig} while parking"
        )))
    }
}
