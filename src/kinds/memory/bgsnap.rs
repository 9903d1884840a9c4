//! Background snapshot: a `--leave-running` dump freezes the tree only to
//! collect its non-memory state and to write-protect its private
//! anonymous memory with a userfaultfd in synchronous write-protect mode;
//! the tree then runs again while the pages are copied. A thread that
//! writes a page cairn has not saved yet blocks in the kernel; the fault
//! handler here copies the page (still as it was at the freeze) into a
//! side buffer, lifts the protection of that page and wakes the thread.
//! Workers read the other pages straight from the running process and
//! take the side buffer's copy where there is one, so the images are the
//! memory at the freeze exactly (docs/ARCHITECTURE.md, "Background
//! snapshot").
//!
//! What the protection cannot cover is copied while frozen, as before:
//! shared memory (another process or the file may write it), private file
//! mappings (synchronous write-protect takes anonymous, shmem and hugetlb
//! VMAs only), and any VMA the kernel refuses to register (one the target
//! registered with its own userfaultfd).
//!
//! If cairn dies during the copy its userfaultfds are closed, which lifts
//! every protection and wakes every blocked thread: the target goes on
//! unharmed, and the staging directory is never committed.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::plan::{PagePlan, Source};
use crate::dump::freeze::Frozen;
use crate::error::{Error, Result};
use crate::kinds::incr::Ranges;
use crate::procfs::MapsEntry;
use crate::sys::{mem, uffd, PAGE_SIZE};

/// Features asked of the snapshot's userfaultfd: none beyond write-protect
/// faults. (The REMOVE and REMAP events are complete as soon as cairn reads
/// them, so they cannot hold a madvise or mremap back until the pages are
/// saved; with EVENT_REMAP the moved pages would even stay protected at
/// their new address. Without it they lose the protection, and the
/// worker's check below sees every such change.)
const FEATURES: u64 = 0;

/// `--background-snapshot`: auto (when it works), on (or fail), off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Auto,
    On,
    Off,
}

impl Mode {
    pub fn parse(s: &str) -> std::result::Result<Mode, String> {
        match s {
            "auto" => Ok(Mode::Auto),
            "on" => Ok(Mode::On),
            "off" => Ok(Mode::Off),
            _ => Err(format!("{s:?}: want auto, on or off")),
        }
    }
}

/// (start, end, job) of a write-protected segment.
type Seg = (u64, u64, usize);
/// Pages saved before their write, by (pid, address).
type SideBuffer = HashMap<(i32, u64), Box<[u8]>>;

/// One process of the snapshot: its userfaultfd and its pagemap.
struct Proc {
    uffd: OwnedFd,
    pagemap: File,
}

/// A background snapshot in progress.
pub struct Snapshot {
    procs: HashMap<i32, Proc>,
    /// Per job of the plan: copied in the background.
    bg: Vec<bool>,
    /// Per job: its pages are saved (and their protection lifted).
    done: Vec<AtomicBool>,
    /// Per pid: (start, end, job) of every protected segment, sorted.
    index: HashMap<i32, Vec<(u64, u64, usize)>>,
    /// Pages saved by the fault handler before their write.
    side: Mutex<SideBuffer>,
    failed: Mutex<Option<Error>>,
    stop: AtomicBool,
    pub faults: AtomicU64,
    pub saved: AtomicU64,
    /// Pages write-protected.
    pub protected_pages: u64,
    pub protect_ms: f64,
}

/// The write-protection armed before the freeze ([`arm`]): per process
/// (by pid, with its start time) the snapshot's userfaultfd, already
/// registered on the private anonymous VMAs and write-protecting them
/// whole, and the thread that lets every write fault through until the
/// freeze (the page then counts as written: [`Snapshot::prepare`] finds
/// it with PAGEMAP_SCAN and protects it again, frozen).
pub struct Armed {
    fds: std::sync::Arc<Vec<(i32, u64, OwnedFd)>>,
    /// Made at the freeze for processes without one (forked since).
    extra: Vec<(i32, u64, OwnedFd)>,
    stop: std::sync::Arc<AtomicBool>,
    /// Written to stop the handler at once (it polls this with the
    /// userfaultfds): joining it costs no poll timeout in the frozen time.
    wake: Option<UnixStream>,
    handler: Option<std::thread::JoinHandle<u64>>,
    /// How long the tree was stopped to create the userfaultfds.
    pub stopped_ms: f64,
    /// Pages write-protected while the tree ran, and how long that took.
    pub pages: u64,
    pub protect_ms: f64,
}

impl Armed {
    /// Stops the pre-freeze fault handler (the tree is frozen: no write
    /// comes any more but cairn's own, done by now) and hands out the
    /// userfaultfds; returns them and the faults let through.
    fn finish(mut self) -> (HashMap<i32, (u64, OwnedFd)>, u64) {
        let faults = self.stop_handler();
        let fds = std::mem::replace(&mut self.fds, std::sync::Arc::new(Vec::new()));
        let fds = std::sync::Arc::try_unwrap(fds).unwrap_or_default();
        let extra = std::mem::take(&mut self.extra);
        let all = fds.into_iter().chain(extra);
        (all.map(|(p, st, fd)| (p, (st, fd))).collect(), faults)
    }

    /// Frozen, first thing (before the tree's VMAs are read, by the oracle
    /// too): registers every private anonymous VMA of every live process
    /// with its snapshot userfaultfd, made now for a process that has none
    /// (forked since the arming). Two neighbouring VMAs that differ only in
    /// their userfaultfd do not merge: a mapping made next to an armed one
    /// since the arming (or a child's copies of them) would stay apart, a
    /// layout the program never had. Registered alike, they merge as they
    /// would have without cairn, and the dump records the program's own
    /// layout. Nothing is write-protected here. Best effort: what fails is
    /// done again, or copied frozen, at [`Snapshot::prepare`].
    pub fn register_frozen(&mut self, frozen: &mut Frozen) {
        let live: Vec<i32> = frozen.live().map(|p| p.pid).collect();
        for pid in live {
            let Ok(start) = crate::procfs::read_stat(pid).map(|s| s.starttime) else {
                continue;
            };
            let have = (self.fds.iter().chain(self.extra.iter()))
                .find(|x| x.0 == pid && x.1 == start)
                .map(|x| x.2.as_raw_fd());
            let fd = match have {
                Some(fd) => fd,
                None => match crate::track::create_uffd_in_target(
                    frozen,
                    pid,
                    uffd::UFFD_SYNC_CREATE_FLAGS,
                    FEATURES,
                ) {
                    Ok(fd) => {
                        let raw = fd.as_raw_fd();
                        self.extra.push((pid, start, fd));
                        raw
                    }
                    Err(e) => {
                        crate::debug!("pid {pid}: no userfaultfd at the freeze ({e})");
                        continue;
                    }
                },
            };
            let Ok(maps) = crate::procfs::read_maps(pid) else {
                continue;
            };
            for m in maps.iter().filter(|m| anon_private(m)) {
                let _ = uffd::register_wp(&fd, m.start, m.end);
            }
        }
    }

    fn stop_handler(&mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(mut w) = self.wake.take() {
            let _ = w.write_all(&[1]);
        }
        self.handler
            .take()
            .map_or(0, |h| h.join().unwrap_or_default())
    }
}

impl Drop for Armed {
    /// Not used (the dump failed or took another path): the handler stops,
    /// then closing the userfaultfds lifts every protection and wakes any
    /// thread still waiting.
    fn drop(&mut self) {
        self.stop_handler();
    }
}

/// Before the freeze, for a `--leave-running` dump that will take the
/// background path: stops the tree once, briefly, to create a userfaultfd
/// in each process (an injected syscall needs a stopped thread; guarded
/// like the freeze: `crate::guard`), thaws it,
/// then, while it runs, registers every private anonymous VMA from
/// /proc/PID/maps and write-protects it whole (the kernel's walk of every
/// page table entry, the cost that grows with the memory, is no longer
/// frozen time). A write from then on faults; the handler started here
/// lifts the protection of that one page at once, and the freeze protects
/// again what was written. `None` (the reason logged): the dump protects
/// everything frozen, as before.
pub fn arm(root: i32) -> Option<Armed> {
    let t = Instant::now();
    // A guardian of its own (released at this thaw) puts the registers
    // back should cairn die in the middle of an injected call.
    let guardian = crate::guard::Guardian::start(crate::guard::Role::Dump);
    let mut frozen = match Frozen::freeze_tree(root, None, guardian) {
        Ok(f) => f,
        Err(e) => {
            crate::info!("background snapshot: not armed before the freeze ({e})");
            return None;
        }
    };
    let mut fds = Vec::new();
    let live: Vec<i32> = frozen.live().map(|p| p.pid).collect();
    for pid in live {
        // A call injected here would meet the process's seccomp mode
        // (strict mode kills it); the dump suspends seccomp for its
        // calls (PTRACE_O_SUSPEND_SECCOMP) only at the freeze, where
        // such a process is protected as before.
        if let Some(tid) = seccomp_thread(&frozen, pid) {
            crate::info!(
                "background snapshot: pid {pid} not armed before the freeze (thread {tid} runs \
                 under seccomp)"
            );
            continue;
        }
        let made = crate::procfs::read_stat(pid).and_then(|st| {
            crate::track::create_uffd_in_target(
                &mut frozen,
                pid,
                uffd::UFFD_SYNC_CREATE_FLAGS,
                FEATURES,
            )
            .map(|fd| (pid, st.starttime, fd))
        });
        match made {
            Ok(x) => fds.push(x),
            Err(e) => {
                crate::info!("background snapshot: pid {pid} not armed before the freeze: {e}")
            }
        }
    }
    if let Err(e) = frozen.thaw() {
        crate::warn!("background snapshot: thaw after creating the userfaultfds: {e}");
        return None;
    }
    let stopped_ms = t.elapsed().as_secs_f64() * 1e3;
    if fds.is_empty() {
        return None;
    }
    let fds = std::sync::Arc::new(fds);
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    // Without the pair the handler still stops, at its next poll timeout.
    let (wake, woken) = UnixStream::pair().map_or((None, None), |(a, b)| (Some(a), Some(b)));
    let handler = {
        let (fds, stop) = (fds.clone(), stop.clone());
        std::thread::spawn(move || let_through(&fds, woken.as_ref(), &stop))
    };
    let mut armed = Armed {
        fds,
        extra: Vec::new(),
        stop,
        wake,
        handler: Some(handler),
        stopped_ms,
        pages: 0,
        protect_ms: 0.0,
    };
    let t = Instant::now();
    let mut vmas = 0;
    for (pid, _, fd) in armed.fds.iter() {
        let Ok(maps) = crate::procfs::read_maps(*pid) else {
            continue;
        };
        for m in maps.iter().filter(|m| anon_private(m)) {
            // The tree runs: a VMA may change meanwhile; what is not
            // protected here is protected at the freeze.
            let r = uffd::register_wp(fd, m.start, m.end)
                .and_then(|()| uffd::writeprotect(fd, m.start, m.end, true));
            match r {
                Ok(()) => {
                    vmas += 1;
                    armed.pages += (m.end - m.start) / PAGE_SIZE;
                }
                Err(e) => crate::debug!(
                    "pid {pid}: {:#x}-{:#x} not armed before the freeze ({e})",
                    m.start,
                    m.end
                ),
            }
        }
    }
    armed.protect_ms = t.elapsed().as_secs_f64() * 1e3;
    crate::info!(
        "background snapshot: armed before the freeze: {} processes, {vmas} VMAs ({} pages) \
         write-protected in {:.1} ms while the tree ran (stopped {stopped_ms:.1} ms to create \
         the userfaultfds)",
        armed.fds.len(),
        armed.pages,
        armed.protect_ms
    );
    Some(armed)
}

/// A thread of process `pid` (frozen) under a seccomp mode or filter,
/// or whose mode cannot be read.
fn seccomp_thread(frozen: &Frozen, pid: i32) -> Option<i32> {
    let tids: Vec<i32> = frozen
        .procs
        .iter()
        .find(|p| p.pid == pid)
        .map(|p| p.threads.iter().map(|t| t.tid).collect())
        .unwrap_or_else(|| vec![pid]);
    tids.into_iter().find(|&tid| {
        std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
            .map(|s| {
                // No such line: a kernel without seccomp.
                s.lines()
                    .find_map(|l| l.strip_prefix("Seccomp:"))
                    .is_some_and(|v| v.trim() != "0")
            })
            .unwrap_or(true)
    })
}

/// The pre-freeze fault handler: lifts the protection of every page a
/// write faults on, until `stop` (`woken` becomes readable when it is
/// set). Returns the faults served.
fn let_through(fds: &[(i32, u64, OwnedFd)], woken: Option<&UnixStream>, stop: &AtomicBool) -> u64 {
    let mut raw: Vec<i32> = fds.iter().map(|x| x.2.as_raw_fd()).collect();
    raw.extend(woken.map(|w| w.as_raw_fd()));
    let mut msgs = [uffd::UffdMsg::default(); 64];
    let mut faults = 0;
    while !stop.load(Ordering::SeqCst) {
        let Ok(ready) = uffd::poll_readable(&raw, 10) else {
            return faults;
        };
        // The last one is `woken`: stop is set (checked by the loop).
        for (k, _) in (ready.iter().enumerate())
            .take(fds.len())
            .filter(|(_, &r)| r)
        {
            let (pid, _, fd) = &fds[k];
            while let Ok(n @ 1..) = uffd::read_msgs(fd, &mut msgs) {
                for m in msgs[..n]
                    .iter()
                    .filter(|m| m.event == uffd::UFFD_EVENT_PAGEFAULT)
                {
                    faults += 1;
                    let a = m.arg[1] & !(PAGE_SIZE - 1);
                    if let Err(e) = uffd::writeprotect(fd, a, a + PAGE_SIZE, false) {
                        crate::warn!("pid {pid}: lift the write-protection of {a:#x}: {e}");
                    }
                }
            }
        }
    }
    faults
}

/// Why a dump cannot take the background path, if it cannot.
/// Set when a background copy lost a page (dropped, unmapped or moved by
/// the running tree before it was saved): [`crate::dump::dump`] then
/// dumps again with every page copied frozen (`--background-snapshot=auto`).
pub static LOST_A_PAGE: AtomicBool = AtomicBool::new(false);

pub fn unavailable() -> Option<String> {
    let f = crate::sys::probe::features();
    if !f.uffd_wp_sync.available {
        return Some(format!(
            "synchronous userfaultfd write-protect: {}",
            f.uffd_wp_sync.detail
        ));
    }
    if !f.pagemap_scan.available {
        return Some(format!("PAGEMAP_SCAN: {}", f.pagemap_scan.detail));
    }
    None
}

/// Anonymous private memory: what synchronous write-protect covers.
pub(super) fn anon_private(m: &MapsEntry) -> bool {
    !m.shared
        && (m.path.is_empty()
            || m.path == "[heap]"
            || m.path == "[stack]"
            || m.path.starts_with("[anon:"))
        && !m.has_flag("ht")
        && !m.has_flag("io")
        && !m.has_flag("pf")
}

impl Snapshot {
    /// Frozen, after the plan is complete: registers and write-protects
    /// the private anonymous memory of each process of `pids` that the plan
    /// reads. With `armed` (the protection set up before the freeze) only
    /// what lost its protection since is protected again. A process where
    /// that fails is copied frozen (its reason logged). `None` when no page
    /// at all can go to the background.
    pub fn prepare(
        frozen: &mut Frozen,
        plan: &PagePlan,
        pids: &[i32],
        armed: Option<Armed>,
    ) -> Option<Snapshot> {
        let t = Instant::now();
        let (mut pre, pre_faults) = armed.map(Armed::finish).unwrap_or_default();
        let mut procs = HashMap::new();
        let mut index: HashMap<i32, Vec<(u64, u64, usize)>> = HashMap::new();
        let mut bg = vec![false; plan.jobs.len()];
        let mut protected_pages = 0;
        let mut again = Reprotected::default();
        for &pid in pids {
            let mine: Vec<usize> = (0..plan.jobs.len())
                .filter(|&i| {
                    matches!(plan.jobs[i].src, Source::Vm { pid: p } | Source::ProcMem { pid: p } if p == pid)
                })
                .collect();
            if mine.is_empty() {
                continue;
            }
            // The armed userfaultfd, if it is of this very process.
            let armed = pre.remove(&pid).and_then(|(start, fd)| {
                crate::procfs::read_stat(pid)
                    .is_ok_and(|st| st.starttime == start)
                    .then_some(fd)
            });
            match Self::protect(frozen, plan, pid, &mine, armed, &mut again) {
                Ok((p, segs)) => {
                    for &(_, _, j) in &segs {
                        bg[j] = true;
                    }
                    protected_pages += segs.iter().map(|s| (s.1 - s.0) / PAGE_SIZE).sum::<u64>();
                    index.insert(pid, segs);
                    procs.insert(pid, p);
                }
                Err(e) => {
                    crate::info!("background snapshot: pid {pid} copied frozen: {e}")
                }
            }
        }
        if procs.is_empty() {
            return None;
        }
        let protect_ms = t.elapsed().as_secs_f64() * 1e3;
        crate::info!(
            "background snapshot: {} processes, {protected_pages} pages write-protected in \
             {protect_ms:.1} ms; armed before the freeze: {} processes, {pre_faults} write \
             faults let through, {} pages in {} runs protected again, found by PAGEMAP_SCAN in \
             {:.1} ms, protected in {:.1} ms",
            procs.len(),
            again.procs,
            again.pages,
            again.runs,
            again.scan_ms,
            again.protect_ms
        );
        Some(Snapshot {
            procs,
            done: (0..bg.len()).map(|_| AtomicBool::new(false)).collect(),
            bg,
            index,
            side: Mutex::new(HashMap::new()),
            failed: Mutex::new(None),
            stop: AtomicBool::new(false),
            faults: AtomicU64::new(0),
            saved: AtomicU64::new(0),
            protected_pages,
            protect_ms,
        })
    }

    /// Makes the target's userfaultfd (or takes the one `armed` before the
    /// freeze), registers its anonymous private VMAs and write-protects
    /// the segments of jobs `mine` that lie in them: all of them with a
    /// new userfaultfd; with the armed one only the pages populated and
    /// not protected (written, or populated, or moved since it was armed).
    /// Returns the process and (start, end, job) of each protected
    /// segment. On error the userfaultfd is closed: nothing stays
    /// registered or protected.
    fn protect(
        frozen: &mut Frozen,
        plan: &PagePlan,
        pid: i32,
        mine: &[usize],
        armed: Option<OwnedFd>,
        again: &mut Reprotected,
    ) -> Result<(Proc, Vec<Seg>)> {
        let maps = crate::procfs::read_maps(pid)?;
        let register = |fd: &OwnedFd| {
            let mut registered = Vec::new();
            for m in maps.iter().filter(|m| anon_private(m)) {
                match uffd::register_wp(fd, m.start, m.end) {
                    Ok(()) => registered.push((m.start, m.end)),
                    Err(e) => crate::debug!(
                        "pid {pid}: {:#x}-{:#x} not write-protected ({e}): copied frozen",
                        m.start,
                        m.end
                    ),
                }
            }
            registered
        };
        let mut pre = armed.is_some();
        let mut fd_reg = armed.map(|fd| {
            let r = register(&fd);
            (fd, r)
        });
        // An armed userfaultfd that registers nothing is of an mm the
        // process left (exec): a new one.
        if fd_reg.as_ref().is_some_and(|(_, r)| r.is_empty()) {
            fd_reg = None;
            pre = false;
        }
        let (fd, registered) = match fd_reg {
            Some(x) => x,
            None => {
                let fd = crate::track::create_uffd_in_target(
                    frozen,
                    pid,
                    uffd::UFFD_SYNC_CREATE_FLAGS,
                    FEATURES,
                )?;
                let r = register(&fd);
                (fd, r)
            }
        };
        let registered = Ranges::new(registered);
        let mut segs = Vec::new();
        for &j in mine {
            let job = &plan.jobs[j];
            let all_in = job
                .segs
                .iter()
                .all(|&(a, n)| registered.covers(a, a + n * PAGE_SIZE));
            if all_in {
                segs.extend(job.segs.iter().map(|&(a, n)| (a, a + n * PAGE_SIZE, j)));
            }
        }
        segs.sort_unstable();
        let pagemap = File::open(format!("/proc/{pid}/pagemap"))
            .map_err(|e| Error::sys(pid, "open /proc/PID/pagemap", e))?;
        let runs = Ranges::new(segs.iter().map(|s| (s.0, s.1)).collect());
        if pre {
            again.procs += 1;
        }
        for &(s, e) in runs.iter() {
            // Armed: the populated pages that are not protected (any
            // other populated page has been protected, and so unchanged,
            // since before the freeze).
            let todo = if pre {
                let t = Instant::now();
                let w = unprotected(&pagemap, s, e)
                    .map_err(|err| Error::sys(pid, format!("PAGEMAP_SCAN {s:#x}-{e:#x}"), err))?;
                again.scan_ms += t.elapsed().as_secs_f64() * 1e3;
                again.runs += w.len() as u64;
                again.pages += w.iter().map(|r| (r.1 - r.0) / PAGE_SIZE).sum::<u64>();
                w
            } else {
                vec![(s, e)]
            };
            let t = Instant::now();
            for (s, e) in todo {
                uffd::writeprotect(&fd, s, e, true).map_err(|err| {
                    Error::sys(pid, format!("UFFDIO_WRITEPROTECT {s:#x}-{e:#x}"), err)
                })?;
            }
            if pre {
                again.protect_ms += t.elapsed().as_secs_f64() * 1e3;
            }
        }
        Ok((Proc { uffd: fd, pagemap }, segs))
    }

    /// Whether job `i` is copied in the background.
    pub(super) fn is_bg(&self, i: usize) -> bool {
        self.bg[i]
    }

    /// Runs `copy` (the workers) while the fault handler serves the
    /// target; stops the handler when `copy` returns. Again for each call.
    pub fn serve<R>(&self, copy: impl FnOnce() -> R) -> Result<R> {
        self.stop.store(false, Ordering::SeqCst);
        let r = std::thread::scope(|s| {
            let h = s.spawn(|| self.handler());
            let r = copy();
            self.stop.store(true, Ordering::SeqCst);
            let _ = h.join();
            r
        });
        if let Some(e) = self.failed.lock().ok().and_then(|mut f| f.take()) {
            return Err(e);
        }
        Ok(r)
    }

    fn fail(&self, e: Error) {
        if let Ok(mut f) = self.failed.lock() {
            f.get_or_insert(e);
        }
    }

    fn failed(&self) -> bool {
        self.failed.lock().map_or(true, |f| f.is_some())
    }

    /// The fault handler: serves write faults, madvise and mremap events of
    /// every process until told to stop.
    fn handler(&self) {
        let pids: Vec<i32> = self.procs.keys().copied().collect();
        let fds: Vec<i32> = pids
            .iter()
            .map(|p| self.procs[p].uffd.as_raw_fd())
            .collect();
        let mut msgs = [uffd::UffdMsg::default(); 64];
        while !self.stop.load(Ordering::SeqCst) {
            let ready = match uffd::poll_readable(&fds, 20) {
                Ok(r) => r,
                Err(e) => {
                    self.fail(Error::sys(0, "poll userfaultfds", e));
                    // Closing the userfaultfds (at the end) releases all.
                    return;
                }
            };
            for (k, _) in ready.iter().enumerate().filter(|(_, &r)| r) {
                let pid = pids[k];
                loop {
                    let n = match uffd::read_msgs(&self.procs[&pid].uffd, &mut msgs) {
                        Ok(n) => n,
                        Err(e) => {
                            self.fail(Error::sys(pid, "read userfaultfd", e));
                            break;
                        }
                    };
                    if n == 0 {
                        break;
                    }
                    for m in &msgs[..n] {
                        self.event(pid, m);
                    }
                }
            }
        }
    }

    fn event(&self, pid: i32, m: &uffd::UffdMsg) {
        if m.event != uffd::UFFD_EVENT_PAGEFAULT {
            return;
        }
        let p = &self.procs[&pid];
        let addr = m.arg[1] & !(PAGE_SIZE - 1);
        self.faults.fetch_add(1, Ordering::Relaxed);
        // The writer waits: the page is still as at the freeze.
        self.save(pid, addr);
        if let Err(e) = uffd::writeprotect(&p.uffd, addr, addr + PAGE_SIZE, false) {
            self.fail(Error::sys(
                pid,
                format!("lift the write-protection of {addr:#x}"),
                e,
            ));
        }
    }

    /// Saves the page at `addr` of `pid` into the side buffer if it is
    /// planned, of a job not done, not saved yet, and still
    /// write-protected after it was read (so it was read as at the
    /// freeze: the bit goes from off to on only at the freeze). A page
    /// that lost its protection (dropped by madvise meanwhile) is not
    /// saved: the worker finds it neither protected nor saved.
    fn save(&self, pid: i32, addr: u64) {
        let Some(v) = self.index.get(&pid) else {
            return;
        };
        let i = v.partition_point(|s| s.1 <= addr);
        let Some(&(s, _, j)) = v.get(i) else {
            return;
        };
        if s > addr || self.done[j].load(Ordering::SeqCst) {
            return;
        }
        if self
            .side
            .lock()
            .map_or(true, |m| m.contains_key(&(pid, addr)))
        {
            return;
        }
        let mut page = vec![0u8; PAGE_SIZE as usize].into_boxed_slice();
        if let Err(err) = read_page(pid, addr, &mut page) {
            self.fail(Error::sys(
                pid,
                format!("save the page at {addr:#x} before its write"),
                err,
            ));
            return;
        }
        match protected_pages(&self.procs[&pid].pagemap, addr, 1) {
            Ok(p) if p[0] => {
                if let Ok(mut m) = self.side.lock() {
                    m.entry((pid, addr)).or_insert(page);
                }
                self.saved.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(err) => self.fail(Error::sys(pid, format!("PAGEMAP_SCAN {addr:#x}"), err)),
        }
    }

    /// A worker read job `j` (pages `addrs` into `buf`, `ok` those read):
    /// takes the pages the handler saved, checks that every other page
    /// was still protected after the read (so it was read as at the
    /// freeze), marks the job done and lifts its protection.
    pub(super) fn after_read(
        &self,
        j: usize,
        pid: i32,
        segs: &[(u64, u64)],
        buf: &mut [u8],
        ok: &mut [bool],
    ) -> Result<()> {
        crate::guard::check()?;
        if self.failed() {
            return Err(Error::sys(
                pid,
                "background snapshot",
                std::io::Error::other("stopped"),
            ));
        }
        let p = &self.procs[&pid];
        let ps = PAGE_SIZE as usize;
        let mut protected = Vec::with_capacity(ok.len());
        for &(a, n) in segs {
            protected.extend(
                protected_pages(&p.pagemap, a, n)
                    .map_err(|e| Error::sys(pid, format!("PAGEMAP_SCAN {a:#x} ({n} pages)"), e))?,
            );
        }
        {
            let side = self.side.lock().map_err(|_| {
                Error::sys(
                    pid,
                    "background snapshot",
                    std::io::Error::other("poisoned"),
                )
            })?;
            let addrs = segs
                .iter()
                .flat_map(|&(a, n)| (0..n).map(move |i| a + i * PAGE_SIZE));
            for (i, a) in addrs.enumerate() {
                let page = &mut buf[i * ps..(i + 1) * ps];
                if let Some(saved) = side.get(&(pid, a)) {
                    page.copy_from_slice(saved);
                    ok[i] = true;
                    continue;
                }
                if !protected[i] {
                    LOST_A_PAGE.store(true, Ordering::SeqCst);
                    return Err(Error::sys(
                        pid,
                        "background snapshot",
                        std::io::Error::other(format!(
                            "the page at {a:#x} was dropped (madvise), unmapped or moved \
                             during the copy before it was saved: the images cannot hold it \
                             as at the freeze; dump again (or with --background-snapshot=off)"
                        )),
                    ));
                }
                if !ok[i] {
                    // Protected but unreadable with process_vm_readv (made
                    // PROT_NONE meanwhile): /proc/PID/mem reads it.
                    read_page(pid, a, page)
                        .map_err(|e| Error::sys(pid, format!("read the page at {a:#x}"), e))?;
                    ok[i] = true;
                }
            }
        }
        self.done[j].store(true, Ordering::SeqCst);
        for &(a, n) in segs {
            // Best effort: closing the userfaultfd lifts the rest.
            let _ = uffd::writeprotect(&p.uffd, a, a + n * PAGE_SIZE, false);
        }
        Ok(())
    }

    /// The figures of the copy, for the log.
    pub fn summary(&self) -> String {
        format!(
            "{} write faults served, {} pages saved before their write",
            self.faults.load(Ordering::Relaxed),
            self.saved.load(Ordering::Relaxed)
        )
    }
}

/// Reads one page of `pid` at `addr`: process_vm_readv, else
/// /proc/PID/mem (an unreadable VMA).
fn read_page(pid: i32, addr: u64, page: &mut [u8]) -> std::io::Result<()> {
    if mem::vm_read_all(pid, addr, page).is_ok() {
        return Ok(());
    }
    File::open(format!("/proc/{pid}/mem"))?.read_exact_at(page, addr)
}

/// Every region PAGEMAP_SCAN reports for [start, end) with query `q`, in
/// as many calls as it takes (one call reports at most SCAN_VEC_LEN).
fn scan(
    pm: &File,
    start: u64,
    end: u64,
    q: uffd::ScanQuery,
) -> std::io::Result<Vec<uffd::PageRegion>> {
    let mut regions = vec![uffd::PageRegion::default(); uffd::SCAN_VEC_LEN];
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let (k, walk_end) = uffd::pagemap_scan(pm, at, end, q, &mut regions)?;
        out.extend_from_slice(&regions[..k]);
        if walk_end <= at {
            return Err(std::io::Error::other(format!(
                "PAGEMAP_SCAN made no progress at {at:#x}"
            )));
        }
        at = walk_end;
    }
    Ok(out)
}

/// Per page of [addr, addr + n pages): populated (present or swapped) and
/// still write-protected.
fn protected_pages(pm: &File, addr: u64, n: u64) -> std::io::Result<Vec<bool>> {
    let end = addr + n * PAGE_SIZE;
    let mut out = vec![false; n as usize];
    let anyof = uffd::PAGE_IS_PRESENT | uffd::PAGE_IS_SWAPPED;
    let q = uffd::ScanQuery {
        flags: 0,
        mask: 0,
        anyof,
        ret: anyof | uffd::PAGE_IS_WRITTEN,
    };
    for r in scan(pm, addr, end, q)? {
        if r.categories & uffd::PAGE_IS_WRITTEN == 0 {
            let (s, e) = (r.start.max(addr), r.end.min(end));
            for a in (s..e).step_by(PAGE_SIZE as usize) {
                out[((a - addr) / PAGE_SIZE) as usize] = true;
            }
        }
    }
    Ok(out)
}

/// What [`Snapshot::prepare`] protected again of the memory armed before
/// the freeze, for the log.
#[derive(Default)]
struct Reprotected {
    procs: u64,
    pages: u64,
    runs: u64,
    scan_ms: f64,
    protect_ms: f64,
}

/// Runs [start, end) of the pages of [s, e) that are populated (present or
/// swapped) and not write-protected, by PAGEMAP_SCAN (one walk of the page
/// tables that reports only those).
fn unprotected(pm: &File, s: u64, e: u64) -> std::io::Result<Vec<(u64, u64)>> {
    let q = uffd::ScanQuery {
        flags: 0,
        mask: uffd::PAGE_IS_WRITTEN,
        anyof: uffd::PAGE_IS_PRESENT | uffd::PAGE_IS_SWAPPED,
        ret: uffd::PAGE_IS_WRITTEN,
    };
    let mut out: Vec<(u64, u64)> = Vec::new();
    for r in scan(pm, s, e, q)? {
        match out.last_mut() {
            Some(last) if last.1 == r.start => last.1 = r.end,
            _ => out.push((r.start, r.end)),
        }
    }
    Ok(out)
}

/// The page regions of [start, end) of `pid` for the plan (populated,
/// zero page, guard: `PagePlan::add_vma_scanned`), by PAGEMAP_SCAN; `None`
/// on a kernel that lacks one of those categories (EINVAL).
pub(super) fn page_regions(
    pid: i32,
    start: u64,
    end: u64,
) -> std::io::Result<Option<Vec<uffd::PageRegion>>> {
    let pm = File::open(format!("/proc/{pid}/pagemap"))?;
    let anyof = uffd::PAGE_IS_PRESENT | uffd::PAGE_IS_SWAPPED;
    let q = uffd::ScanQuery {
        flags: 0,
        mask: 0,
        anyof,
        ret: anyof | uffd::PAGE_IS_PFNZERO | uffd::PAGE_IS_GUARD,
    };
    match scan(&pm, start, end, q) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Job `job` of a plan made from PAGEMAP_SCAN (`Job::cow_unknown`), read
/// after the thaw: whether one of its present pages is not exclusively
/// mapped (shared copy-on-write with a process outside the dump), read
/// from the pagemap now. process_vm_readv would unshare such a page (a
/// copy of it in the target); /proc/PID/mem reads it without.
pub(super) fn shares_pages(pid: i32, segs: &[(u64, u64)]) -> bool {
    segs.iter().any(|&(a, n)| {
        crate::procfs::read_pagemap(pid, a, a + n * PAGE_SIZE)
            .map_or(true, |v| v.iter().any(|f| f.present() && !f.exclusive()))
    })
}
