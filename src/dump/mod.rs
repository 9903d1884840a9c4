//! The dump orchestrator: freeze, collect every kind, write the images,
//! then kill or thaw. Any error thaws the tree and removes what was
//! written, so a failed dump costs the user nothing.

pub mod freeze;
pub mod watch;

use std::time::Instant;

use crate::error::{Error, Result};
use crate::guard::{Guardian, Role};
use crate::image::pages::PageStoreWriter;
use crate::image::proto::{Inventory, Pstree, PstreeEntry, TaskCore, TaskState};
use crate::image::staging::Staging;
use crate::image::{names, ImageDir, ImageType, FORMAT_VERSION};
use crate::kinds::files::FileTable;
use crate::kinds::incr::{self, ParentView};
use crate::kinds::inet;
use crate::kinds::memory::{self, MmInput, PagePlan};
use crate::kinds::task as ktask;
use crate::options::{DumpOptions, PreDumpOptions};
use crate::procfs;
use crate::remote::Calls;
use crate::remote::{Agent, SCRATCH_LEN};
use crate::track::{self, Tracker};
use crate::{info, warn};
use freeze::Frozen;

/// What a dump measured; printed with -v and used by benchmarks.
#[derive(Debug, Default, Clone)]
pub struct DumpStats {
    pub frozen_ms: f64,
    pub pages_scanned: u64,
    pub image_bytes: u64,
    /// Pages recorded as unchanged since the parent layer.
    pub parent_pages: u64,
    /// Background snapshot: when the tree ran again, and how long the
    /// copy of its write-protected pages took after that.
    pub thawed_at: Option<Instant>,
    pub background_copy_ms: f64,
    /// When the tree was frozen ([`dump_then`] sets it before `decide`).
    pub frozen_at: Option<Instant>,
    /// Background snapshot armed before the freeze: how long the tree was
    /// stopped then to create the userfaultfds (not part of `frozen_ms`).
    pub armed_stop_ms: f64,
}

/// Where the frozen dump finds each process's VMAs and fds: the tree's
/// inventory, collected once by the BPF iterators right after the freeze
/// (`crate::inventory`), or `/proc` per process (`smaps`, `fd/`) as
/// before, with `--no-bpf`, when BPF cannot be used, or when the
/// inventory does not match the frozen tree. The image inventory records
/// which (`inventory_source`). The tree itself (processes and threads)
/// is the freezer's, which has its own BPF view (`watch`).
struct Discovery {
    /// pid -> its entry, taken out as the dump reaches it.
    bpf: Option<std::collections::HashMap<i32, crate::inventory::ProcEntry>>,
}

impl Discovery {
    /// `preloaded`: the programs were loaded before the freeze (a
    /// background snapshot armed there, `memory::bgsnap::arm`): the
    /// iterator lists the VMAs without the page-table walk of smaps.
    fn collect(frozen: &Frozen, no_bpf: bool, preloaded: bool) -> Discovery {
        let root = frozen.procs.first().map_or(0, |p| p.pid);
        if no_bpf {
            info!("dump: VMAs and fds from /proc (--no-bpf)");
            return Discovery { bpf: None };
        }
        // A small tree: /proc costs less than loading the programs (issue
        // 15), unless the freezer has loaded them already.
        let tasks: usize = frozen.procs.iter().map(|p| p.threads.len().max(1)).sum();
        let min = watch::bpf_min_tasks();
        if tasks < min && !frozen.bpf_watched && !preloaded {
            info!("dump: VMAs and fds from /proc (a small tree: {tasks} tasks; BPF from {min})");
            return Discovery { bpf: None };
        }
        let bpf = crate::inventory::collect_bpf_only(root)
            .and_then(|(inv, took)| {
                matches_frozen(&inv, frozen)?;
                info!(
                    "dump: inventory of {root} by bpf in {:.3} ms: {}",
                    took.as_secs_f64() * 1e3,
                    inv.summary()
                );
                Ok(inv.procs.into_iter().map(|p| (p.pid, p)).collect())
            })
            .map_err(|why| info!("dump: BPF inventory not used ({why}); VMAs and fds from /proc"))
            .ok();
        Discovery { bpf }
    }

    /// "bpf" or "proc", for `Inventory.inventory_source`.
    fn source(&self) -> &'static str {
        match self.bpf {
            Some(_) => crate::inventory::Collector::Bpf.as_str(),
            None => crate::inventory::Collector::Proc.as_str(),
        }
    }

    /// The VMAs and fds (number, link target) of `pid`, once: from the
    /// inventory, else its smaps and, as `None`, fds for the file table to
    /// list itself.
    fn take(&mut self, pid: i32) -> Result<(Vec<procfs::MapsEntry>, Option<FdList>)> {
        match self.bpf.as_mut().and_then(|m| m.remove(&pid)) {
            Some(p) => Ok((
                p.vmas,
                Some(p.fds.into_iter().map(|f| (f.fd, f.target)).collect()),
            )),
            None if self.bpf.is_some() => Err(Error::sys(
                pid,
                "dump",
                std::io::Error::other("not in the tree's inventory, or taken twice"),
            )),
            None => Ok((procfs::read_smaps(pid)?, None)),
        }
    }
}

/// A process's fds and their link targets.
type FdList = Vec<(i32, String)>;

/// The inventory describes the frozen tree: every live frozen process is
/// there, alive, with the same threads.
fn matches_frozen(
    inv: &crate::inventory::Inventory,
    frozen: &Frozen,
) -> std::result::Result<(), String> {
    for p in frozen.live() {
        let Some(e) = inv.proc(p.pid) else {
            return Err(format!("pid {} is not in it", p.pid));
        };
        let mut tids: Vec<i32> = p.threads.iter().map(|t| t.tid).collect();
        tids.sort_unstable();
        if e.is_zombie() || e.threads != tids {
            return Err(format!(
                "pid {}: state {}, threads {:?}, frozen threads {tids:?}",
                p.pid, e.state, e.threads
            ));
        }
    }
    Ok(())
}

/// The incremental side of one dump or pre-dump.
struct Layering {
    tracker: Option<Tracker>,
    /// Tracking goes on after this layer (pre-dump, dump -R --track-mem).
    keep: bool,
    layer_id: String,
    prev: Option<std::path::PathBuf>,
    parent_layer_id: String,
}

impl Layering {
    fn new(
        root: i32,
        images_dir: &std::path::Path,
        incr_args: &crate::options::IncrOptions,
        keep: bool,
        plan: &mut PagePlan,
    ) -> Result<Layering> {
        let parent = match &incr_args.prev_images_dir {
            Some(p) => Some(ParentView::open(images_dir, p)?),
            None => None,
        };
        let mech = track::pick(incr_args.dirty_tracking.as_deref())?;
        let tracker = if parent.is_some() || keep {
            let start = procfs::read_stat(root)?.starttime;
            Some(Tracker::begin(mech, root, start, parent.as_ref()))
        } else {
            None
        };
        let parent_layer_id = parent
            .as_ref()
            .map(|p| p.inventory.layer_id.clone())
            .unwrap_or_default();
        // Hashes are written only for a layer that a later one builds on.
        plan.chain = keep;
        plan.hash_private = plan.chain && mech == track::Mechanism::Hash;
        plan.parent = parent;
        Ok(Layering {
            tracker,
            keep,
            layer_id: incr::new_layer_id(),
            prev: incr_args.prev_images_dir.clone(),
            parent_layer_id,
        })
    }

    /// Frozen, before a process's pages are planned.
    fn before(
        &mut self,
        plan: &mut PagePlan,
        pid: i32,
        start_time: u64,
        smaps: &[procfs::MapsEntry],
    ) {
        if let (Some(t), true) = (&mut self.tracker, plan.parent.is_some()) {
            let d = t.dirty(pid, start_time, smaps, self.keep);
            plan.dirty.insert(pid, d);
        }
    }

    /// Frozen, after a process's pages were planned.
    fn after(
        &mut self,
        frozen: &mut Frozen,
        pid: i32,
        start_time: u64,
        smaps: &[procfs::MapsEntry],
    ) {
        if let (Some(t), true) = (&mut self.tracker, self.keep) {
            t.arm(frozen, pid, start_time, smaps);
        }
    }

    /// The tracking holds the tree's memory in the kernel (a userfaultfd
    /// registered on its VMAs, or soft-dirty bits): a background snapshot
    /// cannot write-protect the same memory. Content hashes hold nothing
    /// there: a layer compared by hash, and the next layer's hashes, are
    /// copied in the background like a full dump (`cairn run
    /// --incremental`).
    fn holds_memory(&self) -> bool {
        self.tracker
            .as_ref()
            .is_some_and(|t| t.mech != track::Mechanism::Hash)
    }

    fn fill_inventory(&self, inv: &mut Inventory, plan: &PagePlan) {
        inv.layer_id = self.layer_id.clone();
        if let Some(p) = &self.prev {
            inv.parent_dir = p.display().to_string();
            inv.parent_layer_id = self.parent_layer_id.clone();
        }
        if let Some(t) = &self.tracker {
            if plan.parent.is_some() {
                inv.dirty_tracking = t.mech.name().to_string();
            }
            if self.keep && t.armed() {
                inv.tracking_armed = t.mech.name().to_string();
            }
        }
        inv.full_owners = plan.full_owners.clone();
    }

    /// The layer is complete.
    fn done(self, dir: &ImageDir) {
        if let (Some(t), true) = (self.tracker, self.keep) {
            t.keep(&self.layer_id, dir.final_path());
        }
    }

    fn failed(self) {
        if let Some(t) = self.tracker {
            t.abort();
        }
    }
}

fn image_files_written(dir: &ImageDir) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir.path())
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "img"))
                .collect()
        })
        .unwrap_or_default()
}

pub fn dump(args: &DumpOptions) -> Result<DumpStats> {
    let then = if args.leave_running {
        Then::Thaw
    } else {
        Then::Kill
    };
    use crate::kinds::memory::bgsnap::{Mode, LOST_A_PAGE};
    LOST_A_PAGE.store(false, std::sync::atomic::Ordering::SeqCst);
    match dump_then(args, &mut |_| then) {
        // A page the running tree dropped or unmapped before the
        // background copy saved it: that dump failed (the tree is
        // unharmed and runs); a dump that copies every page frozen cannot
        // lose one. Only for a dump on its own or a layer compared by
        // content hash: a chain's parent tracking in the kernel was taken
        // by the first attempt.
        Err(e)
            if args.leave_running
                && args.freeze.background_snapshot == Mode::Auto
                && (args.incr.prev_images_dir.is_none()
                    || track::pick(args.incr.dirty_tracking.as_deref())
                        .is_ok_and(|m| m == track::Mechanism::Hash))
                && LOST_A_PAGE.load(std::sync::atomic::Ordering::SeqCst) =>
        {
            warn!("background snapshot failed ({e}); dumping again with every page copied frozen");
            let mut again = args.clone();
            again.freeze.background_snapshot = Mode::Off;
            dump_then(&again, &mut |_| then).map(|(s, _)| s)
        }
        r => r.map(|(s, _)| s),
    }
}

/// What becomes of the frozen tree once its images are complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    Kill,
    Thaw,
}

/// [`dump`], with `decide` called once the images are complete and in
/// place (`args.images_dir`) while the tree is still frozen: it says
/// whether the tree is killed or thawed (live migration keeps the tree
/// frozen until the destination runs it, `crate::migrate`). What is
/// collected follows `args.leave_running` as for [`dump`]: a caller that
/// may thaw must set it.
pub fn dump_then(
    args: &DumpOptions,
    decide: &mut dyn FnMut(&DumpStats) -> Then,
) -> Result<(DumpStats, Then)> {
    crate::sys::bpf::set_disabled(args.freeze.no_bpf); // fixes: also the fd kinds' programs
    let pid = args.pid;
    if pid <= 0 || !crate::sys::task::pid_exists(pid) {
        return Err(Error::NoSuchProcess {
            pid,
            what: "nothing to dump".into(),
        });
    }
    if pid as u32 == std::process::id() {
        return Err(Error::Usage(format!("pid {pid} is cairn itself")));
    }
    crate::stats::begin("dump");
    // SIGINT/SIGTERM/SIGHUP from here on roll the dump back (crate::guard).
    let _interrupts = crate::guard::Interrupts::install(Role::Dump);
    // Refuse what we cannot dump before any process is touched at all.
    // A child that exits meanwhile is no reason to refuse: the frozen
    // pass decides about it.
    let pids = tree_pids(pid);
    freeze::precheck_seizable(&pids)?;
    may_trace(&pids)?;
    if !args.leave_running {
        crate::restore::check_restorable(&pids)?;
    }
    for &p in &pids {
        if let Err(e) = crate::kinds::files::precheck(p)
            .and_then(|_| memory::precheck(p))
            .and_then(|_| inet::precheck(p, args.tcp_established, args.network_lock))
            .and_then(|_| ktask::attrs::precheck(p))
        {
            let alive = procfs::read_stat(p).is_ok_and(|s| s.state != 'Z' && s.state != 'X');
            if p == pid || alive {
                return Err(e);
            }
        }
    }
    use crate::kinds::external as ext;
    ext::precheck_tree(&pids, &args.external)?;
    let ext_socks = ext::socket_inos(&args.external);
    crate::kinds::unix::precheck_tree(&pids, args.ext_unix_sk, args.leave_running, &ext_socks)?;
    crate::kinds::packet::precheck_tree(&pids)?;
    crate::kinds::tty::precheck_tree(&pids, args.shell_job, &ext::tty_keys(&args.external))?;
    crate::kinds::pipe::precheck_tree(&pids, &ext::pipe_inos(&args.external))?;
    crate::kinds::locks::precheck(&pids)?;
    crate::restore::precheck_shared(&pids)?;
    // --page-server: connected and authenticated before anything is
    // touched (crate::migrate::pageserver).
    let pusher = match &args.page_server {
        Some(t) => Some(std::sync::Arc::new(
            crate::migrate::pageserver::Pusher::connect(t)?,
        )),
        None => None,
    };
    // Images go to a staging directory that becomes DIR only once it is
    // complete and synced (image::staging); dropping it removes it.
    let staging = Staging::begin(&args.images_dir)?;
    let dir = staging.dir().clone();
    let (work, shown) = (staging.work_path().to_path_buf(), args.images_dir.clone());
    let mut plan = PagePlan::default();
    let keep = args.incr.track_mem && args.leave_running;
    let mut layering = Layering::new(pid, &args.images_dir, &args.incr, keep, &mut plan)?;
    // `--background-snapshot=on` that cannot be honoured is refused here,
    // before the tree is touched, not after the freeze.
    if let Some(why) = background_snapshot_impossible(args, keep && layering.holds_memory()) {
        return Err(Error::Usage(format!(
            "--background-snapshot=on: not possible: {why}"
        )));
    }
    // bgsnap: the memory is write-protected before the freeze.
    let armed = arm_background_snapshot(pid, args, layering.holds_memory());
    let armed_stop_ms = armed.as_ref().map_or(0.0, |a| a.stopped_ms);
    if armed.is_some() {
        // Tests change the tree here, between the arming and the freeze.
        crate::guard::pause_at("bg-armed")?;
    }

    // /proc/locks is read for the frozen tree by a thread that keeps the
    // kernel's lock list ready from now on (`kinds::locks::ProcLocks`).
    let proc_locks = crate::kinds::locks::ProcLocks::start();
    // BPF starts watching the tree before anything is seized (loading
    // the programs is not part of the frozen time).
    let watch = watch::TreeWatch::start(pid, &args.freeze, tree_tasks(&pids));
    // So does starting the guardian (crate::guard).
    let guardian = Guardian::start(Role::Dump);
    crate::guard::tell_staging(&staging);
    let t0 = Instant::now();
    // The frozen time by phase (stats-dump.img, and -v).
    let mut lap = crate::stats::Lap::start();
    crate::progress::tasks_begin("dump: freezing", None);
    let mut frozen =
        match crate::guard::check().and_then(|()| Frozen::freeze_tree(pid, watch, guardian)) {
            Ok(f) => f,
            Err(e) => {
                layering.failed();
                return Err(interrupted_or(e, pid));
            }
        };
    lap.mark("seize");
    let mut armed = armed;
    if let Some(a) = &mut armed {
        // Before anything reads the VMAs: the program's own layout.
        a.register_frozen(&mut frozen);
        lap.mark("register");
    }
    crate::stats::set(crate::stats::Time::Freeze, t0.elapsed());
    crate::progress::tasks_done();
    info!(
        "froze {} processes, {} threads, in {:?}",
        frozen.procs.len(),
        frozen.procs.iter().map(|p| p.threads.len()).sum::<usize>(),
        t0.elapsed()
    );
    // The images are in place before the tree is killed: a dump that
    // cannot be completed leaves the tree running.
    let result = crate::guard::pause_at("frozen")
        .and_then(|()| crate::oracle::on_frozen(args.oracle, &frozen, &dir))
        .and_then(|()| {
            dump_frozen(
                &mut frozen,
                &dir,
                args,
                &mut layering,
                pusher.as_ref(),
                BeforeFreeze {
                    plan,
                    armed,
                    proc_locks,
                },
            )
        })
        .and_then(|s| {
            // The page server's pages are in place before DIR is.
            if let Some(p) = &pusher {
                crate::guard::pause_at("page-server-commit")?;
                p.commit()?;
            }
            // The point of no return: a signal from here on changes
            // nothing, the dump completes.
            crate::guard::commit()?;
            let _sync = crate::stats::timer(crate::stats::Time::Sync);
            staging.commit().map(|()| s)
        });
    match result {
        Ok((mut stats, net)) => {
            stats.frozen_at = Some(t0);
            let then = decide(&stats);
            if then == Then::Thaw {
                // Connections go on: repair mode off, unlock, then thaw.
                net.resume()?;
                frozen.thaw()?;
            } else {
                crate::guard::tell_killing();
                frozen.kill()?;
                net.killed();
            }
            if let Some(sig) = crate::guard::late_signal() {
                warn!("{sig} came after the images were complete: the dump finished");
            }
            stats.frozen_ms =
                (stats.thawed_at.map_or_else(|| t0.elapsed(), |t| t - t0)).as_secs_f64() * 1000.0;
            crate::stats::set(
                crate::stats::Time::Frozen,
                stats.thawed_at.map_or_else(|| t0.elapsed(), |t| t - t0),
            );
            if stats.thawed_at.is_some() {
                info!("dump frozen phases: {}", crate::stats::phase_line());
                stats.armed_stop_ms = armed_stop_ms;
                info!(
                    "stats background-snapshot: frozen_ms={:.1} copy_ms={:.1} armed_stop_ms={:.1}",
                    stats.frozen_ms, stats.background_copy_ms, stats.armed_stop_ms
                );
            }
            layering.done(&dir);
            crate::stats::finish_dump(&dir);
            info!(
                "dump done: frozen {:.1} ms, {} bytes of images, {} pages in parent layers",
                stats.frozen_ms, stats.image_bytes, stats.parent_pages
            );
            print_stats("dump", &stats);
            Ok((stats, then))
        }
        Err(e) => {
            if let Err(te) = frozen.thaw() {
                warn!("{te}");
            }
            layering.failed();
            Err(interrupted_or(e.with_staging(&work, &shown), pid))
        }
    }
}

/// `e`, or, if the dump was interrupted by a signal (and so stopped at a
/// safe point and rolled back), the error that says so and exits with 128
/// plus the signal's number.
fn interrupted_or(e: Error, pid: i32) -> Error {
    match crate::guard::interrupted() {
        Some(sig) => crate::guard::interrupted_error(
            sig,
            format!(
                "the dump was rolled back and no images were written; pid {pid} and its tree \
                 are left running as before"
            ),
        ),
        None => e,
    }
}

/// Before the freeze: the background snapshot's write-protection, armed
/// while the tree runs (`memory::bgsnap::arm`), when the dump will take
/// the background path (`--leave-running`, not `=off`, no dirty tracking
/// in the kernel on the same memory, the kernel able): a dump on its own,
/// or a layer of a chain compared by content hash.
/// `CAIRN_BGSNAP_ARM=off` leaves it to the freeze, as before (to compare).
fn arm_background_snapshot(
    pid: i32,
    args: &DumpOptions,
    tracking_holds_memory: bool,
) -> Option<memory::bgsnap::Armed> {
    use memory::bgsnap::Mode;
    if !args.leave_running
        || args.freeze.background_snapshot == Mode::Off
        || tracking_holds_memory
        || std::env::var("CAIRN_BGSNAP_ARM").is_ok_and(|v| v == "off")
    {
        return None;
    }
    if let Some(why) = memory::bgsnap::unavailable() {
        info!("background snapshot: not armed before the freeze ({why})");
        return None;
    }
    let armed = memory::bgsnap::arm(pid)?;
    // The BPF iterators list the VMAs at the freeze without walking
    // their page tables as smaps does (the other cost that grows with
    // the memory): loaded now, while the tree runs.
    if !args.freeze.no_bpf && crate::inventory::bpf_unavailable().is_none() {
        let t = Instant::now();
        let loaded = crate::sys::bpf::shared();
        match &loaded.iters {
            Ok(_) => info!(
                "background snapshot: BPF iterators loaded before the freeze in {:.1} ms",
                t.elapsed().as_secs_f64() * 1e3
            ),
            Err(e) => info!("background snapshot: BPF iterators not loaded ({e})"),
        }
    }
    Some(armed)
}

/// Why `--background-snapshot=on` cannot be honoured, known before the
/// freeze (None: it can, or the mode is not `on`).
fn background_snapshot_impossible(
    args: &DumpOptions,
    tracking_holds_memory: bool,
) -> Option<String> {
    if args.freeze.background_snapshot != memory::bgsnap::Mode::On {
        return None;
    }
    if !args.leave_running {
        return Some("a background snapshot is taken only with --leave-running".into());
    }
    if tracking_holds_memory {
        return Some(TRACKING_HOLDS_MEMORY.into());
    }
    memory::bgsnap::unavailable()
}

/// Why a background snapshot is not taken under `--track-mem`.
const TRACKING_HOLDS_MEMORY: &str = "--track-mem arms dirty tracking on the same memory";

/// The background snapshot of a --leave-running dump, frozen, once the
/// plan is complete; `None`: every page is copied frozen (and why is
/// logged).
fn background_snapshot(
    frozen: &mut Frozen,
    plan: &PagePlan,
    args: &DumpOptions,
    layering: &mut Layering,
    armed: Option<memory::bgsnap::Armed>,
) -> Result<Option<memory::bgsnap::Snapshot>> {
    use memory::bgsnap::Mode;
    let mode = args.freeze.background_snapshot;
    if !args.leave_running || mode == Mode::Off {
        return Ok(None);
    }
    let why = if layering.keep && layering.holds_memory() {
        // One userfaultfd per VMA: the tracking's takes it.
        Some(TRACKING_HOLDS_MEMORY.to_string())
    } else {
        memory::bgsnap::unavailable()
    };
    let snap = match why {
        Some(why) => Err(why),
        None => {
            // The parent layer's tracking was read; its userfaultfds go.
            if let Some(t) = &mut layering.tracker {
                t.release_taken();
            }
            let pids: Vec<i32> = frozen.live().map(|p| p.pid).collect();
            memory::bgsnap::Snapshot::prepare(frozen, plan, &pids, armed)
                .ok_or_else(|| "no private anonymous memory could be write-protected".to_string())
        }
    };
    match snap {
        Ok(s) => Ok(Some(s)),
        Err(why) if mode == Mode::On => Err(Error::Usage(format!(
            "--background-snapshot=on: not possible: {why}"
        ))),
        Err(why) => {
            info!("background snapshot not used ({why}): every page is copied frozen");
            Ok(None)
        }
    }
}

/// Machine-readable figures at -v, for benchmarks.
fn print_stats(what: &str, s: &DumpStats) {
    info!(
        "stats {what}: frozen_ms={:.1} image_bytes={} pages_read={} pages_in_parent={}",
        s.frozen_ms, s.image_bytes, s.pages_scanned, s.parent_pages
    );
}

/// `cairn pre-dump`: freezes the tree only to take its memory map and
/// (re)arm dirty tracking, then copies the pages while it runs. Pages
/// written during the copy are caught by the next layer, because tracking
/// was armed before the copy began.
pub fn pre_dump(args: &PreDumpOptions) -> Result<DumpStats> {
    crate::sys::bpf::set_disabled(args.freeze.no_bpf); // fixes: also the fd kinds' programs
    let pid = args.pid;
    if pid <= 0 || !crate::sys::task::pid_exists(pid) {
        return Err(Error::NoSuchProcess {
            pid,
            what: "nothing to pre-dump".into(),
        });
    }
    if pid as u32 == std::process::id() {
        return Err(Error::Usage(format!("pid {pid} is cairn itself")));
    }
    crate::stats::begin("pre-dump");
    // SIGINT/SIGTERM/SIGHUP stop the pre-dump at the next safe point.
    let _interrupts = crate::guard::Interrupts::install(Role::Dump);
    let pids = tree_pids(pid);
    freeze::precheck_seizable(&pids)?;
    may_trace(&pids)?;
    for &p in &pids {
        if let Err(e) = memory::precheck(p) {
            let alive = procfs::read_stat(p).is_ok_and(|s| s.state != 'Z' && s.state != 'X');
            if p == pid || alive {
                return Err(e);
            }
        }
    }
    let mut plan = PagePlan::default();
    plan.tolerate_faults = true;
    let staging = Staging::begin(&args.images_dir)?;
    let dir = staging.dir().clone();
    let (work, shown) = (staging.work_path().to_path_buf(), args.images_dir.clone());
    let mut layering = Layering::new(pid, &args.images_dir, &args.incr, true, &mut plan)?;
    let mut stats = DumpStats::default();
    let mut source = "";
    let r = (|| -> Result<(Pstree, i32)> {
        let watch = watch::TreeWatch::start(pid, &args.freeze, tree_tasks(&pids));
        let guardian = Guardian::start(Role::Dump);
        let t0 = Instant::now();
        let mut frozen = Frozen::freeze_tree(pid, watch, guardian)?;
        crate::stats::set(crate::stats::Time::Freeze, t0.elapsed());
        let mut found = Discovery::collect(&frozen, args.freeze.no_bpf, false);
        source = found.source();
        let planned = plan_frozen(&mut frozen, &mut found, &mut plan, &mut layering);
        // The tree runs again whatever happened; the copy follows.
        let thawed = frozen.thaw();
        stats.frozen_ms = t0.elapsed().as_secs_f64() * 1000.0;
        crate::stats::set(crate::stats::Time::Frozen, t0.elapsed());
        let pstree = planned?;
        thawed?;
        info!("pre-dump: frozen {:.1} ms", stats.frozen_ms);
        Ok((pstree, pid))
    })();
    let r = r.and_then(|(pstree, root)| {
        // The tree runs again; the copy is not begun if interrupted.
        crate::guard::check()?;
        crate::guard::pause_at("pre-dump-copy")?;
        stats.pages_scanned = plan.total_pages();
        let t = Instant::now();
        let mut writer =
            PageStoreWriter::create(&dir)?.tee(args.page_tee.as_ref().map(|t| t.0.clone()));
        let written = memory::write_pages(&plan, &mut writer, args.compress_level)?;
        stats.parent_pages = written.parent_pages();
        let bytes = writer.finish(&dir)?;
        crate::stats::add(crate::stats::Time::Memory, t.elapsed());
        info!(
            "pre-dump: {} pages read while running, {bytes} bytes, in {:?}",
            stats.pages_scanned,
            t.elapsed()
        );
        for m in &written.maps {
            dir.write(ImageType::Pagemap, &names::pagemap(&m.owner), m)?;
        }
        for h in &written.hashes {
            dir.write(ImageType::PageHash, &names::pagehash(&h.owner), h)?;
        }
        dir.write(ImageType::Pstree, names::PSTREE, &pstree)?;
        let mut inv = base_inventory(root, source);
        inv.pre_dump = true;
        inv.leave_running = true;
        layering.fill_inventory(&mut inv, &plan);
        dir.write_inventory(&mut inv)?;
        stats.image_bytes = dir_bytes(&dir);
        crate::guard::commit()?;
        let _sync = crate::stats::timer(crate::stats::Time::Sync);
        staging.commit()
    });
    match r {
        Ok(()) => {
            layering.done(&dir);
            crate::stats::finish_dump(&dir);
            print_stats("pre-dump", &stats);
            Ok(stats)
        }
        Err(e) => {
            layering.failed();
            Err(interrupted_or(e.with_staging(&work, &shown), pid))
        }
    }
}

/// The frozen part of a pre-dump: every live process's memory map and
/// page selection, and the tracking armed for the next layer.
fn plan_frozen(
    frozen: &mut Frozen,
    found: &mut Discovery,
    plan: &mut PagePlan,
    layering: &mut Layering,
) -> Result<Pstree> {
    let mut pstree = Pstree::new();
    let procs: Vec<(i32, i32, bool, Vec<u32>)> = frozen
        .procs
        .iter()
        .map(|p| {
            (
                p.pid,
                p.ppid,
                p.zombie_status.is_some(),
                p.threads.iter().map(|t| t.tid as u32).collect(),
            )
        })
        .collect();
    let live: std::collections::HashSet<i32> = frozen.live().map(|p| p.pid).collect();
    // No files image: the mapped files are registered in a table left unused.
    let mut scratch = FileTable::default();
    for (pid, ppid, zombie, threads) in procs {
        let stat = procfs::read_stat(pid)?;
        let mut e = PstreeEntry::new();
        e.pid = pid as u32;
        e.ppid = ppid as u32;
        e.pgid = stat.pgrp as u32;
        e.sid = stat.session as u32;
        e.start_time = stat.starttime;
        e.threads = if zombie { vec![pid as u32] } else { threads };
        pstree.entries.push(e);
        if zombie {
            continue;
        }
        let (smaps, _) = found.take(pid)?;
        layering.before(plan, pid, stat.starttime, &smaps);
        memory::dump_mm(
            MmInput {
                pid,
                ppid: live.contains(&ppid).then_some(ppid),
                smaps: &smaps,
                stat: &stat,
                brk: 0,
                auxv: Vec::new(),
                start_time: stat.starttime,
            },
            plan,
            &mut scratch,
        )?;
        layering.after(frozen, pid, stat.starttime, &smaps);
    }
    Ok(pstree)
}

fn dir_bytes(dir: &ImageDir) -> u64 {
    image_files_written(dir)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

fn base_inventory(root: i32, source: &str) -> Inventory {
    let mut inv = Inventory::new();
    inv.format_version = FORMAT_VERSION;
    inv.cairn_version = env!("CARGO_PKG_VERSION").to_string();
    inv.dump_time_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    inv.hostname = procfs::read_proc_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    inv.kernel_release = procfs::read_proc_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    inv.boot_id = procfs::boot_id().unwrap_or_default();
    inv.root_pid = root as u32;
    inv.inventory_source = source.into();
    inv.page_size = crate::sys::PAGE_SIZE as u32;
    inv
}

/// Runs the per-process collection that needs remote syscalls, with a
/// scratch mapping that is always removed again.
fn collect_remote(
    frozen: &mut Frozen,
    pid: i32,
    status: &procfs::Status,
    stat: &procfs::Stat,
) -> Result<(TaskCore, u64, Vec<String>)> {
    let tids = frozen.tids_of(pid);
    // Seccomp filters suspended for cairn before the first injected call.
    let seccomp =
        ktask::attrs::suspend_seccomp(pid, &tids, crate::sys::ptrace::PTRACE_O_TRACESYSGOOD)?;
    let mode = |tid: i32| seccomp.get(&tid).copied().unwrap_or(0);
    // Every call guarded by a parking loop (the vDSO's, or cairn's own in
    // a page of its own, removed at the end or, in a dump, at the thaw).
    let (remote, site, own_code) = frozen.parking_site(pid)?;
    let mut leader = Agent {
        remote,
        pid,
        scratch: 0,
        scratch_len: SCRATCH_LEN,
    };
    let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    // Low (a hint: the kernel goes elsewhere if the place is taken), so
    // that it is one of the first records of smaps: `def_flags` reads smaps
    // only that far, and the page tables of the big mappings above it
    // (mmap allocates top-down) are not walked while frozen.
    const SCRATCH_HINT: u64 = 0x10_0000;
    let scratch = leader.call(
        "mmap scratch",
        libc::SYS_mmap,
        &[SCRATCH_HINT, SCRATCH_LEN, rw, flags, u64::MAX, 0],
    );
    let scratch = match scratch {
        Ok(a) => a,
        Err(e) => {
            if let Some(code) = own_code {
                let _ = frozen.drop_parking(pid, &mut leader.remote, &[], code);
            }
            return Err(e);
        }
    };
    leader.scratch = scratch;
    let tree: std::collections::HashSet<i32> = frozen.procs.iter().map(|p| p.pid).collect();
    let result = (|| -> Result<(TaskCore, u64, Vec<String>)> {
        // mlockall(MCL_FUTURE) shows on the new scratch mapping.
        let def_flags = memory::def_flags(pid, leader.scratch)?;
        let brk = ktask::dump_brk(&mut leader)?;
        let mut core = ktask::dump_process(&mut leader, status, stat)?;
        crate::kinds::cgroup::dump_core(pid, &tree, &mut core)?;
        for &tid in &tids {
            let ft = frozen
                .task_mut(tid)
                .cloned()
                .ok_or_else(|| Error::sys(tid, "thread vanished", std::io::Error::other("")))?;
            let th = if tid == pid {
                ktask::dump_thread(&mut leader, &ft, mode(tid))?
            } else {
                let mut a = Agent {
                    remote: frozen.remote(pid, tid, &site)?,
                    pid,
                    scratch: leader.scratch,
                    scratch_len: SCRATCH_LEN,
                };
                ktask::dump_thread(&mut a, &ft, mode(tid))?
            };
            core.threads.push(th);
        }
        ktask::attrs::dump_seccomp(&mut core)?;
        ktask::refuse_dying(&core)?;
        Ok((core, brk, def_flags))
    })();
    let mut unmap = leader
        .call(
            "munmap scratch",
            libc::SYS_munmap,
            &[leader.scratch, SCRATCH_LEN],
        )
        .map(drop);
    if let Some(code) = own_code {
        unmap = unmap.and(frozen.drop_parking(pid, &mut leader.remote, &tids, code));
    }
    let r = result?;
    unmap?;
    Ok(r)
}

/// Without CAP_SYS_PTRACE, cairn may trace only processes of its own
/// user (real, effective and saved ids all its own, as the kernel's
/// ptrace access check wants): anything else is refused up front with a
/// clear message rather than a bare EPERM from some /proc file.
fn may_trace(pids: &[i32]) -> Result<()> {
    let me = procfs::read_status(crate::sys::task::getpid())?;
    const CAP_SYS_PTRACE: u32 = 19;
    if me.cap_eff & (1 << CAP_SYS_PTRACE) != 0 {
        return Ok(());
    }
    for &p in pids {
        let Ok(st) = procfs::read_status(p) else {
            continue;
        };
        if st.uid[..3].iter().any(|&u| u != me.uid[0])
            || st.gid[..3].iter().any(|&g| g != me.gid[0])
        {
            return Err(Error::sys(
                p,
                "dump",
                std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "not permitted: it runs as uid {} gid {}, cairn as uid {} gid {} \
                         without CAP_SYS_PTRACE, so it may not trace it",
                        st.uid[1], st.gid[1], me.uid[0], me.gid[0]
                    ),
                ),
            ));
        }
    }
    map_files_readable()
}

/// /proc/PID/map_files, which every dump reads for the files a process
/// maps, needs CAP_CHECKPOINT_RESTORE (or CAP_SYS_ADMIN) even for cairn's
/// own mappings: tried on cairn's first mapping (its program), so that a
/// dump without the capability says so before anything is touched
/// instead of failing on some map_files path.
fn map_files_readable() -> Result<()> {
    let maps = procfs::misc::read_proc_string("/proc/self/maps")?;
    let Some(range) = maps.lines().next().and_then(|l| l.split(' ').next()) else {
        return Ok(());
    };
    // Following the link is what needs the capability (readlink does not).
    match std::fs::metadata(format!("/proc/self/map_files/{range}")) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Err(Error::sys(
            crate::sys::task::getpid(),
            "read /proc/PID/map_files",
            std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "not permitted: reading the files a process maps needs CAP_CHECKPOINT_RESTORE \
                 (or CAP_SYS_ADMIN), which cairn lacks; run it as root or give it the \
                 capability (`setcap cap_checkpoint_restore+ep` on the cairn binary)",
            ),
        )),
        _ => Ok(()),
    }
}

/// The tree as it is now (not frozen): for the pre-checks only.
/// The number of tasks (threads) of `pids` (a process that is gone
/// counts one), from /proc/PID/stat.
fn tree_tasks(pids: &[i32]) -> usize {
    pids.iter()
        .map(|&p| procfs::read_stat(p).map_or(1, |s| s.num_threads.max(1) as usize))
        .sum()
}

fn tree_pids(root: i32) -> Vec<i32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() && out.len() < 100_000 {
        let p = out[i];
        for t in procfs::list_tasks(p).unwrap_or_default() {
            out.extend(procfs::read_children(p, t).unwrap_or_default());
        }
        i += 1;
    }
    out
}

/// What a dump sets up before the freeze for its frozen part.
struct BeforeFreeze {
    plan: PagePlan,
    /// The background snapshot's protection, set while the tree ran.
    armed: Option<memory::bgsnap::Armed>,
    /// /proc/locks, kept ready (`kinds::locks::ProcLocks`).
    proc_locks: crate::kinds::locks::ProcLocks,
}

fn dump_frozen(
    frozen: &mut Frozen,
    dir: &ImageDir,
    args: &DumpOptions,
    layering: &mut Layering,
    pusher: Option<&std::sync::Arc<crate::migrate::pageserver::Pusher>>,
    before: BeforeFreeze,
) -> Result<(DumpStats, inet::DumpState)> {
    let BeforeFreeze {
        mut plan,
        armed,
        mut proc_locks,
    } = before;
    // The frozen phases from here on (the seize's are `dump_then`'s).
    let mut lap = crate::stats::Lap::start();
    let mut stats = DumpStats::default();
    let mut files = FileTable::default();
    files.kinds.external = crate::kinds::external::ExternalDump::new(&args.external);
    let mut exe_sums = crate::kinds::exe::ExeSums::default();
    let mut pstree = Pstree::new();
    // /proc/locks, read while the processes are collected.
    proc_locks.frozen(frozen.procs.iter().map(|p| p.pid).collect());
    let mut found = Discovery::collect(frozen, args.freeze.no_bpf, armed.is_some());
    lap.mark("discovery");
    let procs: Vec<(i32, i32, Option<i32>, bool)> = frozen
        .procs
        .iter()
        .map(|p| (p.pid, p.ppid, p.zombie_status, p.stopped()))
        .collect();
    let stop_signals: std::collections::HashMap<i32, i32> = frozen
        .procs
        .iter()
        .map(|p| (p.pid, p.stop_signal()))
        .collect();
    let live: std::collections::HashSet<i32> = frozen.live().map(|p| p.pid).collect();
    if armed.is_some() && plan.parent.is_none() && !plan.chain {
        // bgsnap: a process without a parent or child in the dump shares
        // no page with one: its private anonymous memory is planned by
        // PAGEMAP_SCAN regions (memory::plan::PagePlan::scan_plan).
        plan.scan_plan = (procs.iter())
            .filter(|&&(p, pp, z, _)| {
                z.is_none()
                    && !live.contains(&pp)
                    && !procs.iter().any(|q| q.1 == p && live.contains(&q.0))
            })
            .map(|p| p.0)
            .collect();
    }
    // IP sockets: refused or locked before any of their state is read.
    let live_pids: Vec<i32> = frozen.live().map(|p| p.pid).collect();
    files.kinds.inet = inet::DumpState::prepare(
        procs[0].0,
        &live_pids,
        args.tcp_established,
        args.network_lock,
        &args.images_dir,
    )?;
    lap.mark("inet");
    // Where the vDSO has no parking loop, the threads stay parked at
    // cairn's own page until the thaw, past the sockets' repair mode.
    frozen.keep_parking_pages();
    let mut per_proc = Vec::new();
    for &(pid, ppid, zombie, stopped) in &procs {
        crate::guard::check()?;
        let stat = procfs::read_stat(pid)?;
        let mut e = PstreeEntry::new();
        e.pid = pid as u32;
        e.ppid = ppid as u32;
        e.pgid = stat.pgrp as u32;
        e.sid = stat.session as u32;
        e.start_time = stat.starttime;
        if let Some(status) = zombie {
            ktask::attrs::check_zombie(pid, status)?;
            let mut core = TaskCore::new();
            core.pid = pid as u32;
            core.state = TaskState::TASK_ZOMBIE.into();
            core.exit_status = status;
            core.comm = stat.comm.clone();
            core.exit_signal = stat.exit_signal as u32;
            e.threads = vec![pid as u32];
            pstree.entries.push(e);
            per_proc.push((pid, core, None, None));
            continue;
        }
        let status = procfs::read_status(pid)?;
        lap.mark("proc reads");
        let (mut core, brk, def_flags) = collect_remote(frozen, pid, &status, &stat)?;
        lap.mark("remote calls");
        if stopped {
            core.state = TaskState::TASK_STOPPED.into();
            core.stop_signal = stop_signals.get(&pid).copied().unwrap_or(0) as u32;
        }
        // fd table and fs info shared with an earlier process of the tree,
        // its parent first.
        let mut earlier: Vec<i32> = procs
            .iter()
            .take_while(|x| x.0 != pid)
            .filter(|x| x.2.is_none())
            .map(|x| x.0)
            .collect();
        earlier.sort_by_key(|&o| o != ppid);
        for other in earlier {
            let k = |w| {
                crate::sys::task::kcmp_shared(pid, other, w).map_err(|e| Error::sys(pid, "kcmp", e))
            };
            if core.files_shared_with == 0 && k(crate::sys::task::Shared::Files)? {
                core.files_shared_with = other as u32;
            }
            if core.fs_shared_with == 0 && k(crate::sys::task::Shared::Fs)? {
                core.fs_shared_with = other as u32;
            }
        }
        if let Some(why) = crate::restore::shared_not_with_parent(ppid as u32, &core) {
            return Err(Error::unsupported(pid, why));
        }
        lap.mark("kcmp");
        let cwd = procfs::read_link(format!("/proc/{pid}/cwd"))?;
        let root = procfs::read_link(format!("/proc/{pid}/root"))?;
        core.cwd_id = files.register_fs_path(&cwd, pid, "cwd");
        core.root_id = files.register_fs_path(&root, pid, "root");
        let (smaps, fds) = found.take(pid)?;
        let smaps = frozen.without_parking_page(pid, smaps);
        lap.mark("proc reads");
        let fdt = if core.files_shared_with != 0 {
            // Same table as that process: nothing more to save.
            let mut t = crate::image::proto::FdTable::new();
            t.pid = pid as u32;
            t
        } else {
            files.dump_fds(pid, fds)?
        };
        lap.mark("fds");
        let auxv = procfs::read_auxv(pid)?;
        lap.mark("proc reads");
        layering.before(&mut plan, pid, stat.starttime, &smaps);
        let mut mm = memory::dump_mm(
            MmInput {
                pid,
                ppid: live.contains(&ppid).then_some(ppid),
                smaps: &smaps,
                stat: &stat,
                brk,
                auxv,
                start_time: stat.starttime,
            },
            &mut plan,
            &mut files,
        )?;
        mm.def_flags = def_flags;
        layering.after(frozen, pid, stat.starttime, &smaps);
        exe_sums.record(pid, &mut mm)?;
        lap.mark("memory plan");
        e.threads = core.threads.iter().map(|t| t.tid).collect();
        crate::debug!(
            "pid {pid} ({}): {} threads, {} VMAs, {} fds",
            stat.comm,
            e.threads.len(),
            mm.vmas.len(),
            fdt.fds.len()
        );
        pstree.entries.push(e);
        per_proc.push((pid, core, Some(mm), Some(fdt)));
    }
    // Every socket is in repair mode and the network locked.
    crate::guard::pause_at("repaired")?;
    lap.mark("processes");
    files.check_tree(&pstree)?;
    // File locks, before contents are read (a leased file is not opened).
    let tables: Vec<_> = (per_proc.iter())
        .map(|(p, c, _, t)| (*p, c.files_shared_with, t.as_ref()))
        .collect();
    files.files.locks = crate::kinds::locks::dump_with(&tables, proc_locks.text())?;
    lap.mark("locks");
    files.dump_pipe_data()?;
    lap.mark("pipe data");
    let tree_fds = files.fd_of_descs();
    let live_pids: Vec<i32> = live.iter().copied().collect();
    files.kinds.unix.finish(
        &mut files.files,
        &tree_fds,
        &live_pids,
        args.ext_unix_sk,
        args.leave_running,
    )?;
    lap.mark("unix sockets");
    files
        .kinds
        .tty
        .finish(&mut files.files, &live_pids, procs[0].0, args.shell_job)?;
    files.files.sysv_shm = crate::kinds::sysv::dump(plan.sysv_ids.iter().copied())?;
    stats.pages_scanned = plan.total_pages();
    crate::guard::check()?;
    lap.mark("tty, sysv");
    let t = Instant::now();
    let page_len = crate::sys::PAGE_SIZE;
    crate::progress::pages_begin("dump: pages", stats.pages_scanned * page_len);
    let mut writer = match pusher {
        Some(p) => PageStoreWriter::to_sink(p.clone(), p.shown()),
        None => PageStoreWriter::create(dir)?,
    };
    files.files.net_lock = files.kinds.inet.net_lock().into();
    // bgsnap: --leave-running write-protects private memory and copies
    // it after the thaw (kinds::memory::bgsnap); the rest is copied now.
    lap.mark("page store");
    let snap = background_snapshot(frozen, &plan, args, layering, armed)?;
    lap.mark("write-protect");
    let phase = snap
        .as_ref()
        .map_or(memory::Phase::All, memory::Phase::Frozen);
    let mut copied = memory::copy_jobs(&plan, &writer, args.compress_level, phase)?;
    lap.mark("frozen copy");
    // Open files' contents go to the same chunk store, still frozen.
    let (contents, volatile) = crate::kinds::contents::dump(
        &files,
        &mut writer,
        args.file_contents,
        args.compress_level,
        args.leave_running,
    )?;
    let volatile = crate::kinds::volatile::dump(&files.files, volatile);
    lap.mark("file contents");
    if let Some(snap) = &snap {
        std::mem::take(&mut files.kinds.inet).resume()?;
        if frozen.has_parking_pages() {
            // Their threads' calls that remove cairn's own parking pages
            // write (rseq) to memory now write-protected: served.
            snap.serve(|| frozen.thaw_early())??;
        } else {
            frozen.thaw_early()?;
        }
        stats.thawed_at = Some(Instant::now());
        lap.mark("thaw");
        let tc = Instant::now();
        copied.merge(snap.serve(|| {
            crate::guard::pause_at("bg-copy")?;
            memory::copy_jobs(
                &plan,
                &writer,
                args.compress_level,
                memory::Phase::Background(snap),
            )
        })??);
        stats.background_copy_ms = tc.elapsed().as_secs_f64() * 1e3;
        info!(
            "background snapshot: {} pages copied in {:?} while the tree ran; {}",
            snap.protected_pages,
            tc.elapsed(),
            snap.summary()
        );
    }
    // Closing the userfaultfds lifts what protection is left.
    drop(snap);
    let written = memory::finish_written(&plan, copied);
    crate::progress::finish();
    stats.parent_pages = written.parent_pages();
    let page_bytes = writer.finish(dir)?;
    crate::stats::add(crate::stats::Time::Memory, t.elapsed());
    let _write = crate::stats::timer(crate::stats::Time::Write);
    info!(
        "{} pages read and written as {} bytes in {:?}",
        stats.pages_scanned,
        page_bytes,
        t.elapsed()
    );
    for (pid, core, mm, fdt) in &per_proc {
        let pid = *pid as u32;
        dir.write(ImageType::Core, &names::core(pid), core)?;
        if let Some(mm) = mm {
            dir.write(ImageType::Mm, &names::mm(pid), mm)?;
        }
        if let Some(fdt) = fdt {
            dir.write(ImageType::FdTable, &names::fdinfo(pid), fdt)?;
        }
    }
    for m in &written.maps {
        dir.write(ImageType::Pagemap, &names::pagemap(&m.owner), m)?;
    }
    for h in &written.hashes {
        dir.write(ImageType::PageHash, &names::pagehash(&h.owner), h)?;
    }
    if !args.leave_running {
        // Destructive (connections waiting in a backlog are accepted to
        // read them): only now, with nearly everything written.
        files.kinds.unix.take_backlogs(&mut files.files)?;
    }
    dir.write(ImageType::Files, names::FILES, &files.files)?;
    dir.write(ImageType::Contents, names::CONTENTS, &contents)?;
    dir.write(ImageType::Pstree, names::PSTREE, &pstree)?;
    let mut inv = base_inventory(procs[0].0, found.source());
    inv.leave_running = args.leave_running;
    inv.shell_job = args.shell_job;
    inv.volatile_fs = Some(volatile).into();
    layering.fill_inventory(&mut inv, &plan);
    crate::guard::pause_at("written")?;
    // Every other image is on disk and synced: the inventory lists them
    // (and the page server's, which it has staged) and marks the
    // directory complete.
    let elsewhere = pusher.map(|p| p.listed()).unwrap_or_default();
    if let Some(p) = pusher {
        inv.page_server = p.address().to_string();
    }
    dir.write_inventory_with(&mut inv, elsewhere)?;
    stats.image_bytes = dir_bytes(dir);
    Ok((stats, std::mem::take(&mut files.kinds.inet)))
}
