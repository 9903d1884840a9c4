//! The freezer's view of a tree while it freezes it, from BPF: one pass of
//! the task iterator (bpf/inventory.bpf.c) gives every task of the tree,
//! and the fork tracker (bpf/forks.bpf.c), attached *before* that pass,
//! reports every task created in the tree or leaving it afterwards. The
//! snapshot plus the events is therefore complete: a task either existed
//! at the snapshot (and is in it) or was born after the tracker started
//! (and is in the ring buffer). The fork event is submitted before the
//! parent returns from clone, so once every thread of a process is in a
//! ptrace stop, its list of children here is final, as
//! /proc/PID/task/TID/children would be, without reading a file per
//! thread.
//!
//! Events the ring buffer could not hold, or a tree deeper than the
//! programs walk, make the view untrustworthy: [`TreeWatch::absorb`] then
//! says why, and the freezer goes on with /proc (which is always right for
//! a parent-first freeze, only slower).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::inventory::records::{self, EventKind};
use crate::options::FreezeOptions;
use crate::sys::bpf::{self, Loaded};

/// What the BPF view found, for the log and the tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct WatchStats {
    /// Tasks (threads) of the tree in the snapshot.
    pub snapshot: usize,
    /// Fork events of the tree taken from the ring buffer.
    pub forks: usize,
    /// Exit events of the tree.
    pub exits: usize,
}

pub struct TreeWatch {
    loaded: Rc<Loaded>,
    /// tgid -> its known tids (snapshot and fork events).
    threads: HashMap<i32, BTreeSet<i32>>,
    /// tgid -> the tgids of its children (real_parent).
    children: HashMap<i32, BTreeSet<i32>>,
    /// Tids of the snapshot.
    in_snapshot: HashSet<i32>,
    /// Tids reported exiting.
    exited: HashSet<i32>,
    pub stats: WatchStats,
}

/// Why BPF cannot watch the tree in this run, if it cannot.
fn unusable(loaded: &Loaded) -> Option<String> {
    if let Err(e) = &loaded.iters {
        return Some(format!("BPF iterators: {e}"));
    }
    if let Err(e) = &loaded.tracker {
        return Some(format!("BPF fork tracker: {e}"));
    }
    let f = crate::sys::probe::initial_pid_ns();
    if !f.available {
        return Some(f.detail);
    }
    None
}

impl TreeWatch {
    /// Starts watching the tree of `root`: attaches the fork tracker to it,
    /// then takes the snapshot. `None` (the reason logged once) when BPF
    /// cannot be used or `--no-bpf` was given: the freezer reads /proc.
    /// `tasks` is the number of tasks (threads) the tree had just before:
    /// below [`bpf_min_tasks`] the programs are not loaded (loading them
    /// costs more than reading /proc for a small tree), unless the test
    /// hook `--freeze-wait-fork` needs them.
    pub fn start(root: i32, args: &FreezeOptions, tasks: usize) -> Option<TreeWatch> {
        if args.no_bpf {
            crate::info!("freeze: /proc children lists (--no-bpf)");
            return None;
        }
        let min = bpf_min_tasks();
        if tasks < min && !args.wait_fork {
            crate::info!(
                "freeze: /proc children lists (a small tree: {tasks} tasks; BPF from {min})"
            );
            return None;
        }
        let loaded = bpf::shared();
        if let Some(why) = unusable(&loaded) {
            note_fallback(&why);
            return None;
        }
        match TreeWatch::try_start(loaded, root, args.wait_fork) {
            Ok(w) => Some(w),
            Err(why) => {
                note_fallback(&why);
                None
            }
        }
    }

    fn try_start(loaded: Rc<Loaded>, root: i32, wait_fork: bool) -> Result<TreeWatch, String> {
        let mut w = TreeWatch {
            loaded,
            threads: HashMap::new(),
            children: HashMap::new(),
            in_snapshot: HashSet::new(),
            exited: HashSet::new(),
            stats: WatchStats::default(),
        };
        w.with_tracker(|t| t.watch(root))?;
        let out = match &w.loaded.iters {
            Ok(it) => it.borrow_mut().tasks(root),
            Err(e) => return Err(e.clone()),
        }
        .map_err(|e| format!("task iterator: {e}"))?;
        if out.too_deep > 0 || out.map_full > 0 {
            return Err(format!(
                "the task iterator missed tasks ({} below its depth limit, {} beyond its map)",
                out.too_deep, out.map_full
            ));
        }
        let tasks = records::parse_tasks(&out.tasks).map_err(|e| e.to_string())?;
        if !tasks.iter().any(|t| t.tid == root) {
            return Err(format!("the task iterator did not find {root}"));
        }
        for t in &tasks {
            w.in_snapshot.insert(t.tid);
            w.add(t.tid, t.tgid, t.ppid, root);
        }
        w.stats.snapshot = tasks.len();
        if wait_fork {
            w.wait_for_fork()?;
        }
        Ok(w)
    }

    fn with_tracker<T>(
        &self,
        f: impl FnOnce(&mut bpf::ForkTracker) -> std::io::Result<T>,
    ) -> Result<T, String> {
        match &self.loaded.tracker {
            Ok(t) => f(&mut t.borrow_mut()).map_err(|e| e.to_string()),
            Err(e) => Err(e.clone()),
        }
    }

    fn add(&mut self, tid: i32, tgid: i32, ppid: i32, root: i32) {
        self.threads.entry(tgid).or_default().insert(tid);
        // A thread's real_parent is its process's parent; the root's
        // parent is not part of the tree.
        if tid == tgid && tgid != root {
            self.children.entry(ppid).or_default().insert(tgid);
        }
    }

    /// The test hook of `--freeze-wait-fork`: waits (up to 10 s) until a
    /// task (process or thread) is born in the tree after the snapshot.
    fn wait_for_fork(&mut self) -> Result<(), String> {
        crate::info!("freeze: waiting for a fork in the tree (--freeze-wait-fork)");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.absorb()?;
            let born = self
                .threads
                .values()
                .flatten()
                .any(|tid| !self.in_snapshot.contains(tid));
            if born {
                return Ok(());
            }
            if Instant::now() >= deadline {
                crate::warn!("freeze: no task was born in the tree within 10 s");
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Takes the events of the ring buffer into the view. An error says
    /// why the view can no longer be trusted (events lost).
    pub fn absorb(&mut self) -> Result<(), String> {
        let bytes = self.with_tracker(|t| t.drain())?;
        let (lost, too_deep) = self.with_tracker(|t| Ok((t.lost(), t.too_deep())))?;
        if lost > 0 {
            return Err(format!("the fork tracker's ring buffer lost {lost} events"));
        }
        if too_deep > 0 {
            return Err(format!(
                "{too_deep} tasks were deeper than the fork tracker walks"
            ));
        }
        for e in records::parse_events(&bytes).map_err(|e| e.to_string())? {
            match e.kind {
                EventKind::Fork => {
                    self.stats.forks += 1;
                    // The root was born before the tracker started.
                    self.add(e.tid, e.tgid, e.ppid, 0);
                }
                EventKind::Exit => {
                    self.stats.exits += 1;
                    self.exited.insert(e.tid);
                }
            }
        }
        Ok(())
    }

    /// The known tids of process `pid` (itself first).
    pub fn threads_of(&self, pid: i32) -> Vec<i32> {
        let mut v = vec![pid];
        if let Some(t) = self.threads.get(&pid) {
            v.extend(t.iter().copied().filter(|&t| t != pid));
        }
        v
    }

    /// The processes whose parent is `pid`: final once every thread of
    /// `pid` is stopped and [`TreeWatch::absorb`] has run.
    pub fn children_of(&self, pid: i32) -> Vec<i32> {
        self.children
            .get(&pid)
            .map(|c| c.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Whether `tid` was reported exiting.
    pub fn exited(&self, tid: i32) -> bool {
        self.exited.contains(&tid)
    }

    /// Whether `tid` came from a fork event rather than the snapshot.
    pub fn caught(&self, tid: i32) -> bool {
        !self.in_snapshot.contains(&tid)
    }
}

impl Drop for TreeWatch {
    fn drop(&mut self) {
        // Stop reporting this tree (the programs stay loaded for the run).
        let _ = self.with_tracker(|t| t.watch(0));
    }
}

/// From how many tasks (threads) of a tree a dump loads the BPF programs
/// (`CAIRN_BPF_MIN_TASKS`, for tests and benchmarks; default
/// [`BPF_MIN_TASKS`]). Below, /proc is cheaper: loading and verifying the
/// programs takes some 100-200 ms of CPU, reading a task's children list
/// and a process's smaps and fds well under a millisecond.
pub fn bpf_min_tasks() -> usize {
    std::env::var("CAIRN_BPF_MIN_TASKS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(BPF_MIN_TASKS)
}

/// The default of [`bpf_min_tasks`].
pub const BPF_MIN_TASKS: usize = 256;

/// Logs, once per run, why the freezer reads /proc instead of BPF.
pub fn note_fallback(why: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        crate::info!("freeze: BPF not used ({why}); /proc children lists");
    });
}
