//! Freezing a tree with PTRACE_SEIZE + PTRACE_INTERRUPT: the tasks never
//! see a SIGSTOP or SIGCONT. Every thread's registers and signal mask are
//! recorded at the freeze; [`Frozen::thaw`] puts them back exactly, and
//! dropping a `Frozen` that was neither thawed nor killed thaws it, so any
//! error on the dump path leaves the tree running as before.

use std::collections::BTreeSet;

use super::watch::TreeWatch;
use crate::error::{Error, Result};
use crate::guard::Guardian;
use crate::procfs;
use crate::remote::SyscallSite;
use crate::sys::inject::{self, Remote};
use crate::sys::ptrace::{self, UserRegs, PTRACE_O_TRACESYSGOOD};

/// All signals blocked (the kernel ignores SIGKILL and SIGSTOP here).
pub const ALL_SIGNALS: u64 = u64::MAX;

#[derive(Debug, Clone)]
pub struct FrozenTask {
    pub tid: i32,
    pub regs: UserRegs,
    pub sigmask: u64,
    pub group_stopped: bool,
    /// The signal of that group stop.
    pub stop_signal: i32,
    /// Registers were changed (remote syscalls); thaw must park first.
    pub touched: bool,
}

#[derive(Debug)]
pub struct FrozenProcess {
    pub pid: i32,
    pub ppid: i32,
    pub threads: Vec<FrozenTask>,
    /// A zombie (not reaped by its frozen parent): its wait status.
    pub zombie_status: Option<i32>,
}

impl FrozenProcess {
    pub fn stopped(&self) -> bool {
        self.threads.first().is_some_and(|t| t.group_stopped)
    }

    /// The signal that stopped it, if [`FrozenProcess::stopped`].
    pub fn stop_signal(&self) -> i32 {
        self.threads.first().map_or(0, |t| t.stop_signal)
    }
}

pub struct Frozen {
    pub procs: Vec<FrozenProcess>,
    /// The freezer used the BPF view (the programs are loaded).
    pub bpf_watched: bool,
    finished: bool,
    /// Puts back what the dump changed if cairn dies (`dump::guard`).
    guardian: Option<Guardian>,
    /// cairn's own thread runs at a high priority while the tree is
    /// frozen; back to its own at the thaw or kill.
    boost: Option<Boost>,
    /// Once set ([`Frozen::keep_parking_pages`]), cairn's own parking page
    /// of a process stays until the thaw (or kill), its threads parked
    /// at it; `parking_pages` lists them.
    keep_parking: bool,
    parking_pages: Vec<(i32, SyscallSite)>,
}

/// The nice value of the freezing thread while the tree is frozen.
const FROZEN_NICE: i32 = -20;

/// cairn's own priority, raised while a tree is frozen: the frozen time
/// is the tree's downtime, and on a loaded machine most of it was cairn
/// waiting for a CPU between its system calls (issue 15: the same
/// collection took 2 ms on an idle machine and tens of ms at load 18).
/// Only the calling thread is raised (Linux's nice is per thread), with
/// reset-on-fork: a thread or process started meanwhile (copy workers,
/// a tracking keeper) starts at nice 0, never at -20. Needs CAP_SYS_NICE
/// (or RLIMIT_NICE); without it, or for a thread under a real-time or
/// deadline policy, or already at -20, nothing changes.
/// `CAIRN_FROZEN_BOOST=off` leaves the priority alone (to compare).
struct Boost {
    before: crate::sys::sched::SchedAttr,
}

impl Boost {
    fn raise() -> Option<Boost> {
        use crate::sys::sched;
        if std::env::var("CAIRN_FROZEN_BOOST").is_ok_and(|v| v == "off") {
            return None;
        }
        // 0: the calling thread.
        let before = sched::get_attr(0).ok()?;
        if before.policy != libc::SCHED_OTHER as u32 || before.nice <= FROZEN_NICE {
            return None;
        }
        let mut a = before;
        a.nice = FROZEN_NICE;
        a.flags |= sched::SCHED_FLAG_RESET_ON_FORK;
        match sched::set_attr(0, &a) {
            Ok(()) => Some(Boost { before }),
            Err(e) => {
                crate::debug!("frozen: own priority not raised ({e})");
                None
            }
        }
    }
}

impl Drop for Boost {
    fn drop(&mut self) {
        if let Err(e) = crate::sys::sched::set_attr(0, &self.before) {
            crate::warn!("own priority not put back after the freeze: {e}");
        }
    }
}

impl std::fmt::Debug for Frozen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frozen")
            .field("procs", &self.procs)
            .field("finished", &self.finished)
            .field("guardian", &self.guardian.as_ref().map(|g| g.pid()))
            .finish()
    }
}

fn seize_one(tid: i32, guardian: &mut Option<Guardian>) -> Result<FrozenTask> {
    let stop_signal = inject::seize_and_stop_sig(tid, PTRACE_O_TRACESYSGOOD).map_err(|e| {
        let g = guardian.as_ref().map(|g| g.pid() as i32);
        Error::sys(tid, "seize", ptrace::explain_seize_error(tid, e, g))
    })?;
    let regs = ptrace::get_regs(tid).map_err(|e| Error::sys(tid, "PTRACE_GETREGS", e))?;
    let sigmask = ptrace::get_sigmask(tid).map_err(|e| Error::sys(tid, "PTRACE_GETSIGMASK", e))?;
    // The guardian learns the thread's state before anything changes it.
    if let Some(g) = guardian {
        g.thread(tid, &regs, sigmask);
    }
    // Block everything while we work: signals that arrive during the dump
    // stay pending and are part of the image (and of the thawed task).
    ptrace::set_sigmask(tid, ALL_SIGNALS).map_err(|e| Error::sys(tid, "PTRACE_SETSIGMASK", e))?;
    Ok(FrozenTask {
        tid,
        regs,
        sigmask,
        group_stopped: stop_signal.is_some(),
        stop_signal: stop_signal.unwrap_or(0),
        touched: false,
    })
}

/// Children of a frozen process from /proc: the children lists of all
/// its threads.
fn proc_children(p: &FrozenProcess) -> Result<Vec<i32>> {
    let mut children = Vec::new();
    for t in &p.threads {
        children.extend(procfs::read_children(p.pid, t.tid)?);
    }
    Ok(children)
}

/// Where the freezer learns the tree: BPF (snapshot + fork events) or
/// /proc; counts for the log.
struct Source {
    watch: Option<TreeWatch>,
    /// BPF was used at the start (and perhaps given up on).
    bpf: bool,
    /// Tasks frozen (or found as zombies) that only fork events reported.
    caught_procs: usize,
    caught_threads: usize,
    /// Tasks that vanished during the freeze and whose exit the tracker
    /// reported.
    exits_noted: usize,
    /// Processes found under a new parent of the tree (reparented since
    /// the snapshot).
    adopted: usize,
}

impl Source {
    /// Takes the ring buffer's events; if the view is no longer complete,
    /// goes on with /proc. Returns true if it just gave up on BPF.
    fn absorb(&mut self) -> bool {
        let Some(w) = &mut self.watch else {
            return false;
        };
        match w.absorb() {
            Ok(()) => false,
            Err(why) => {
                crate::warn!("freeze: BPF view given up ({why}); /proc children lists from here");
                self.watch = None;
                true
            }
        }
    }

    fn exited(&self, tid: i32) -> bool {
        self.watch.as_ref().is_some_and(|w| w.exited(tid))
    }

    /// `pid` exited (or is gone): the children the BPF view gave it were
    /// reparented, to init (then they are no longer of the tree) or to a
    /// subreaper of the tree, whose children lists in the snapshot do not
    /// have them. They are queued as adopted. (/proc needs nothing: a
    /// new parent's list read after its freeze has them, and a zombie's
    /// is empty.)
    fn adopt_children_of(
        &self,
        pid: i32,
        queued: &mut std::collections::HashSet<i32>,
        queue: &mut std::collections::VecDeque<(i32, Option<i32>)>,
    ) {
        if let Some(w) = &self.watch {
            for c in w.children_of(pid) {
                if queued.insert(c) {
                    queue.push_back((c, None));
                }
            }
        }
    }
}

impl Frozen {
    /// Freezes the tree rooted at `root`, parents before children. Once
    /// every thread of a process is stopped it can neither fork nor reap,
    /// so its list of children is final: each child is either alive (and
    /// is frozen next) or a zombie. With `watch` (BPF, see
    /// [`super::watch`]) the threads and children come from the task
    /// iterator's snapshot and the fork tracker's events, so a task born
    /// while we seize is caught from the ring buffer; without it, from
    /// /proc (the task list is re-read until it is stable, and the
    /// children lists of every thread). Each task is seized once.
    pub fn freeze_tree(
        root: i32,
        watch: Option<TreeWatch>,
        guardian: Option<Guardian>,
    ) -> Result<Frozen> {
        crate::sys::procattrs::new_freeze();
        let mut frozen = Frozen {
            procs: Vec::new(),
            bpf_watched: watch.is_some(),
            finished: false,
            guardian,
            boost: Boost::raise(),
            keep_parking: false,
            parking_pages: Vec::new(),
        };
        let mut src = Source {
            bpf: watch.is_some(),
            watch,
            caught_procs: 0,
            caught_threads: 0,
            exits_noted: 0,
            adopted: 0,
        };
        let root_ppid = procfs::read_stat(root)?.ppid;
        // (pid, the parent it must have: None for a process adopted
        // since the BPF snapshot, whose parent must be a frozen one).
        let mut queue = std::collections::VecDeque::from([(root, Some(root_ppid))]);
        let mut queued = std::collections::HashSet::from([root]);
        let mut requeued = std::collections::HashSet::new();
        while let Some((pid, expect)) = queue.pop_front() {
            let stat = match procfs::read_stat(pid) {
                Ok(s) => s,
                Err(e) if pid == root => return Err(e),
                // Reaped by a parent that is not ours to freeze: gone.
                Err(_) => {
                    if src.exited(pid) {
                        src.exits_noted += 1;
                    }
                    src.adopt_children_of(pid, &mut queued, &mut queue);
                    continue;
                }
            };
            let ppid = match expect {
                Some(pp) => {
                    // The pid of a child that is gone, taken by another
                    // process.
                    if pid != root && stat.ppid != pp {
                        src.adopt_children_of(pid, &mut queued, &mut queue);
                        continue;
                    }
                    pp
                }
                // Reparented (to a subreaper) since the snapshot: ours if
                // the new parent is; once more after it, if it is yet to
                // be frozen.
                None if frozen.live().any(|p| p.pid == stat.ppid) => {
                    src.adopted += 1;
                    stat.ppid
                }
                None if queued.contains(&stat.ppid) && requeued.insert(pid) => {
                    queue.push_back((pid, None));
                    continue;
                }
                None => continue,
            };
            let caught = src.watch.as_ref().is_some_and(|w| w.caught(pid));
            if caught {
                src.caught_procs += 1;
            }
            if stat.state == 'Z' || stat.state == 'X' {
                if pid == root {
                    return Err(Error::sys(
                        pid,
                        "dump",
                        std::io::Error::other("the process is a zombie"),
                    ));
                }
                frozen.procs.push(FrozenProcess {
                    pid,
                    ppid,
                    threads: Vec::new(),
                    zombie_status: Some(stat.exit_code),
                });
                src.adopt_children_of(pid, &mut queued, &mut queue);
                continue;
            }
            frozen.procs.push(FrozenProcess {
                pid,
                ppid,
                threads: Vec::new(),
                zombie_status: None,
            });
            let mut seen = BTreeSet::new();
            loop {
                let tids = match &src.watch {
                    Some(w) => w.threads_of(pid),
                    None => match procfs::list_tasks(pid) {
                        Ok(t) => t,
                        // Gone meanwhile: decided below.
                        Err(_) if pid != root => Vec::new(),
                        Err(e) => return Err(e),
                    },
                };
                let new: Vec<i32> = tids.into_iter().filter(|t| !seen.contains(t)).collect();
                if new.is_empty() {
                    // Stopped threads create no more. BPF: one more look
                    // at the events decides (if the view is given up,
                    // the next round reads /proc); /proc: stable.
                    if src.watch.is_some() {
                        let more = src.absorb()
                            || src.watch.as_ref().is_some_and(|w| {
                                w.threads_of(pid).iter().any(|t| !seen.contains(t))
                            });
                        if more {
                            continue;
                        }
                    }
                    break;
                }
                for tid in new {
                    seen.insert(tid);
                    match seize_one(tid, &mut frozen.guardian) {
                        Ok(t) => {
                            crate::progress::tasks_inc(1);
                            if tid != pid && src.watch.as_ref().is_some_and(|w| w.caught(tid)) {
                                src.caught_threads += 1;
                            }
                            if let Some(p) = frozen.procs.last_mut() {
                                p.threads.push(t);
                            }
                        }
                        // A thread that exited meanwhile is not an error;
                        // a process that became a zombie is handled below.
                        Err(_) if src.exited(tid) => src.exits_noted += 1,
                        Err(_)
                            if !std::path::Path::new(&format!("/proc/{pid}/task/{tid}"))
                                .exists() =>
                        {
                            // The tracker may not have told us yet.
                            src.absorb();
                            if src.exited(tid) {
                                src.exits_noted += 1;
                            }
                        }
                        Err(_)
                            if tid == pid
                                && procfs::read_stat(pid).is_ok_and(|s| s.state == 'Z') => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            let Some(p) = frozen.procs.last_mut() else {
                continue;
            };
            p.threads.sort_by_key(|t| (t.tid != pid, t.tid));
            if p.threads.first().map(|t| t.tid) != Some(pid) {
                // It exited while we froze it: now a zombie of a frozen
                // parent, or gone altogether (its parent does not wait).
                let stat = procfs::read_stat(pid);
                match stat {
                    Ok(s) if s.state == 'Z' && pid != root => {
                        let threads = std::mem::take(&mut p.threads);
                        p.zombie_status = Some(s.exit_code);
                        for t in threads {
                            let _ = ptrace::detach(t.tid, 0);
                        }
                        src.adopt_children_of(pid, &mut queued, &mut queue);
                        continue;
                    }
                    Err(_) if pid != root => {
                        let threads = std::mem::take(&mut p.threads);
                        for t in threads {
                            let _ = ptrace::detach(t.tid, 0);
                        }
                        frozen.procs.pop();
                        if src.exited(pid) {
                            src.exits_noted += 1;
                        }
                        src.adopt_children_of(pid, &mut queued, &mut queue);
                        continue;
                    }
                    _ => {
                        return Err(Error::sys(
                            pid,
                            "freeze",
                            std::io::Error::other("process vanished"),
                        ))
                    }
                }
            }
            // Every thread is stopped: the events up to now hold every
            // child it made (an earlier process's list was checked by the
            // absorb of its own turn, so a loss now is not its loss).
            src.absorb();
            let children = match &src.watch {
                Some(w) => w.children_of(pid),
                None => proc_children(p)?,
            };
            for c in children {
                if queued.insert(c) {
                    queue.push_back((c, Some(pid)));
                }
            }
        }
        if src.bpf {
            let w = src.watch.as_ref().map(|w| w.stats).unwrap_or_default();
            crate::info!(
                "freeze: BPF fork tracker{}: {} tasks in the snapshot, {} fork and {} exit events; \
                 caught from fork events: {} processes, {} threads; {} exits noted; {} adopted",
                if src.watch.is_some() { "" } else { " (given up)" },
                w.snapshot,
                w.forks,
                w.exits,
                src.caught_procs,
                src.caught_threads,
                src.exits_noted,
                src.adopted
            );
        }
        Ok(frozen)
    }

    /// All live (non-zombie) processes.
    pub fn live(&self) -> impl Iterator<Item = &FrozenProcess> {
        self.procs.iter().filter(|p| p.zombie_status.is_none())
    }

    pub fn task_mut(&mut self, tid: i32) -> Option<&mut FrozenTask> {
        self.procs
            .iter_mut()
            .flat_map(|p| p.threads.iter_mut())
            .find(|t| t.tid == tid)
    }

    /// A `Remote` for thread `tid` of process `pid`, guarded against
    /// cairn's death (`Remote::guard`, `dump::guard`) where the vDSO
    /// allows; the thread is marked as touched.
    pub fn remote(&mut self, pid: i32, tid: i32, site: &SyscallSite) -> Result<Remote> {
        let mut r =
            Remote::new(tid, site.insn).map_err(|e| Error::sys(tid, "PTRACE_GETREGS", e))?;
        if let Some(t) = self.task_mut(tid) {
            t.touched = true;
        }
        self.guard_remote(pid, &mut r, site);
        Ok(r)
    }

    /// Puts back the registers thread `tid` had when it was frozen (parked
    /// first if it ran injected calls, as [`Frozen::thaw`] does): let go
    /// from here on, it runs on as before.
    pub fn put_back_regs(&mut self, tid: i32) -> Result<()> {
        let Some(t) = self.task_mut(tid) else {
            return Ok(());
        };
        if t.touched {
            inject::park(tid).map_err(|e| Error::sys(tid, "park", e))?;
        }
        ptrace::set_regs(tid, &t.regs).map_err(|e| Error::sys(tid, "PTRACE_SETREGS", e))?;
        t.touched = false;
        Ok(())
    }

    /// Makes `r` (a thread of `pid`) run its calls at `site`, guarded by
    /// its parking loop (told to the guardian) where it has one.
    pub fn guard_remote(&mut self, pid: i32, r: &mut Remote, site: &SyscallSite) {
        r.set_insn(site.insn);
        let tid = r.tid;
        if let (Some((lo, hi)), Some(g)) = (site.parking, &mut self.guardian) {
            match r.guard(pid, lo, site.below.words()) {
                Ok(frame) => g.parking(tid, frame, lo, hi),
                Err(e) => crate::warn!(
                    "tid {tid}: no parking frame below its stack pointer {:#x} ({e}): \
                     remote calls in it are not guarded",
                    r.base().rsp
                ),
            }
        }
    }

    /// The leader of `pid` made ready to run injected calls, guarded by a
    /// parking loop (`Remote::guard`): returns it, the site every thread
    /// of `pid` runs its calls at, and cairn's own parking page if one was
    /// mapped that the caller removes again ([`Frozen::drop_parking`])
    /// before the thaw. The vDSO's parking loop (either kind) where it has
    /// one, else cairn's own page, mapped by a call that runs unguarded
    /// (said in the log), as do all where even that fails. A guarded call
    /// is never left running on with changed registers when cairn is
    /// killed (a crash of the target). After
    /// [`Frozen::keep_parking_pages`] the page is kept (reused by later
    /// calls, `None` returned) and removed at the thaw.
    pub fn parking_site(&mut self, pid: i32) -> Result<(Remote, SyscallSite, Option<u64>)> {
        if let Some(&(_, own)) = self.parking_pages.iter().find(|p| p.0 == pid) {
            return Ok((self.remote(pid, pid, &own)?, own, None));
        }
        let site = crate::remote::find_syscall_site(pid)?;
        let mut r = self.remote(pid, pid, &site)?;
        if site.parking.is_some() {
            return Ok((r, site, None));
        }
        let maps = procfs::read_maps(pid)?;
        let Some(addr) = crate::remote::parking_page_addr(&maps) else {
            crate::warn!(
                "pid {pid}: no gap of three pages for cairn's own parking loop (no parking loop \
                 in its vDSO): remote calls in it are not guarded"
            );
            return Ok((r, site, None));
        };
        crate::info!("pid {pid}: unguarded call: mmap of cairn's own parking page at {addr:#x} (no parking loop in its vDSO)");
        // Told first: a dumper killed once the page is there leaves it to
        // the guardian, which finds it at that address.
        if let Some(g) = &mut self.guardian {
            g.parking_page(pid, addr);
        }
        let own = crate::remote::own_parking_site(pid, &mut r, addr, || {
            // Its registers back at once (the mmap ran unguarded): from
            // here on a dumper killed leaves it as it was. Still touched:
            // more calls follow.
            self.put_back_regs(pid)?;
            if let Some(t) = self.task_mut(pid) {
                t.touched = true;
            }
            Ok(())
        });
        match own {
            Ok(own) => {
                self.guard_remote(pid, &mut r, &own);
                if self.keep_parking {
                    self.parking_pages.push((pid, own));
                    return Ok((r, own, None));
                }
                Ok((r, own, Some(own.insn)))
            }
            Err(e) => {
                crate::warn!(
                    "pid {pid}: cairn's own parking loop could not be put there ({e}): remote \
                     calls in it are not guarded"
                );
                Ok((r, site, None))
            }
        }
    }

    /// From now on cairn's own parking page (where the vDSO has no
    /// parking loop) stays in its process until the thaw or kill, and the
    /// threads that ran calls stay parked at it: a dumper killed while
    /// sockets are in repair mode (the fds are dumped after the remote
    /// calls) leaves them spinning there until the guardian has turned
    /// repair mode off, as the vDSO's loop does.
    pub fn keep_parking_pages(&mut self) {
        self.keep_parking = true;
    }

    /// The threads of process `pid` (none if it is not in the tree).
    pub fn tids_of(&self, pid: i32) -> Vec<i32> {
        (self.procs.iter())
            .find(|p| p.pid == pid)
            .map(|p| p.threads.iter().map(|t| t.tid).collect())
            .unwrap_or_default()
    }

    /// Whether cairn's own parking page is kept in some process.
    pub fn has_parking_pages(&self) -> bool {
        !self.parking_pages.is_empty()
    }

    /// `vmas` of `pid` without cairn's own parking page: never dumped.
    pub fn without_parking_page(
        &self,
        pid: i32,
        vmas: Vec<procfs::MapsEntry>,
    ) -> Vec<procfs::MapsEntry> {
        match self.parking_pages.iter().find(|p| p.0 == pid) {
            Some((_, own)) => crate::remote::without_page(vmas, own.insn),
            None => vmas,
        }
    }

    /// Removes cairn's own parking page `code` from `pid` (see
    /// [`Frozen::parking_site`]): the threads `others` that ran calls
    /// there get their registers back first (let go after the `munmap`, a
    /// thread in the page would fault), then `r` unmaps it (a call that
    /// runs unguarded: a thread let go after it would fault) and gets its
    /// own back at once. Best effort; the first error.
    pub fn drop_parking(
        &mut self,
        pid: i32,
        r: &mut Remote,
        others: &[i32],
        code: u64,
    ) -> Result<()> {
        let mut res = Ok(());
        for &tid in others.iter().filter(|&&t| t != r.tid) {
            res = res.and(self.put_back_regs(tid));
        }
        crate::info!("pid {pid}: unguarded call: munmap of cairn's own parking page");
        r.set_unguarded(true);
        let u = r
            .syscall(libc::SYS_munmap, &[code, crate::sys::PAGE_SIZE])
            .map_err(|e| Error::sys(pid, "remote munmap parking code", e));
        r.set_unguarded(false);
        res.and(u.map(drop)).and(self.put_back_regs(r.tid))
    }

    fn release_guardian(&mut self) {
        if let Some(g) = self.guardian.take() {
            g.done();
        }
    }

    /// Puts every register and mask back and detaches: the tree runs on
    /// exactly as before. Best effort per task; returns the first error.
    pub fn thaw(&mut self) -> Result<()> {
        // Thawed already (a background snapshot thaws before its copy):
        // the dump is over, the guardian has nothing left to guard.
        if self.finished {
            self.release_guardian();
            return Ok(());
        }
        let r = self.thaw_tasks();
        self.release_guardian();
        r
    }

    /// Thaws the tree in the middle of the dump (background snapshot):
    /// the guardian stays, told that only the staging directory is left
    /// to remove should the dumper die; [`Frozen::thaw`] at the end
    /// releases it.
    pub fn thaw_early(&mut self) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        let r = self.thaw_tasks();
        if self.guardian.is_some() {
            crate::guard::tell_thawed();
        }
        r
    }

    fn thaw_tasks(&mut self) -> Result<()> {
        self.finished = true;
        // The tree runs (below): cairn back to its own priority.
        let boost = self.boost.take();
        let mut first: Option<Error> = None;
        // The kept parking pages go first (their threads get their
        // registers back there); repair mode is off by now.
        for (pid, own) in std::mem::take(&mut self.parking_pages) {
            let tids = self.tids_of(pid);
            let dropped = Remote::new(pid, own.insn)
                .map_err(|e| Error::sys(pid, "PTRACE_GETREGS", e))
                .and_then(|mut r| self.drop_parking(pid, &mut r, &tids, own.insn));
            if let Err(e) = dropped {
                first.get_or_insert(e);
            }
        }
        for t in self.procs.iter().flat_map(|p| p.threads.iter()) {
            let r = (|| -> std::io::Result<()> {
                if t.touched {
                    inject::park(t.tid)?;
                }
                ptrace::set_regs(t.tid, &t.regs)?;
                ptrace::set_sigmask(t.tid, t.sigmask)?;
                ptrace::detach(t.tid, 0)
            })();
            if let Err(e) = r {
                first.get_or_insert(Error::sys(t.tid, "thaw", e));
            }
        }
        drop(boost);
        first.map_or(Ok(()), Err)
    }

    /// Kills the frozen tree (after a successful dump) and waits until the
    /// kernel has reported every thread gone, so the pids are free.
    pub fn kill(&mut self) -> Result<()> {
        self.finished = true;
        // Go with their processes.
        self.parking_pages.clear();
        for p in self.live() {
            let _ = crate::sys::task::kill(p.pid, libc::SIGKILL);
        }
        // Nothing of the tree is left to put back.
        self.release_guardian();
        // The leader of a thread group is reported only after its other
        // threads are reaped, so reap the leaders last.
        let mut order: Vec<i32> = self
            .procs
            .iter()
            .flat_map(|p| p.threads.iter().skip(1).map(|t| t.tid))
            .collect();
        order.extend(self.live().map(|p| p.pid));
        for tid in order {
            while let Ok(Some((_, ptrace::WaitStatus::Stopped { .. }))) = ptrace::wait(tid, 0) {
                let _ = ptrace::cont(tid, 0);
            }
        }
        self.boost = None;
        Ok(())
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if !self.finished {
            if let Err(e) = self.thaw() {
                eprintln!("cairn: warning: thawing after an error: {e}");
            }
        }
    }
}

/// Before any process is touched: what would make seizing the tree
/// `pids` (rooted at `pids[0]`) fail, said with its cause rather than as a
/// bare EPERM from PTRACE_SEIZE: cairn itself in the tree (the root is one
/// of its ancestors) or a kernel thread. (A task another process traces
/// is explained where its seize fails: `ptrace::explain_seize_error`.)
pub fn precheck_seizable(pids: &[i32]) -> Result<()> {
    const PF_KTHREAD: u32 = 0x0020_0000;
    let me = std::process::id() as i32;
    let root = pids.first().copied().unwrap_or(0);
    let comm = |p: i32| {
        procfs::read_stat(p)
            .map(|s| s.comm)
            .unwrap_or_else(|_| "?".into())
    };
    let denied = |p: i32, why: String| {
        Error::sys(
            p,
            "dump",
            std::io::Error::new(std::io::ErrorKind::PermissionDenied, why),
        )
    };
    if pids.contains(&me) {
        let mut chain = vec![me];
        while let Some(&last) = chain.last() {
            if last == root || chain.len() > 64 {
                break;
            }
            match procfs::read_stat(last) {
                Ok(s) if s.ppid > 0 => chain.push(s.ppid),
                _ => break,
            }
        }
        let via: Vec<String> = chain
            .iter()
            .map(|&p| format!("{p} ({})", comm(p)))
            .collect();
        return Err(denied(
            root,
            format!(
                "pid {me} is cairn itself: a tree that holds cairn cannot be dumped (its root, \
                 pid {root}, is one of cairn's ancestors: {}); run cairn from outside the tree",
                via.join(", ")
            ),
        ));
    }
    for &p in pids {
        let Ok(st) = procfs::read_stat(p) else {
            continue;
        };
        if st.flags & PF_KTHREAD != 0 {
            return Err(denied(
                p,
                format!(
                    "pid {p} ({}) is a kernel thread: kernel threads cannot be traced or \
                     checkpointed (give the pid of a user process)",
                    st.comm
                ),
            ));
        }
    }
    Ok(())
}
