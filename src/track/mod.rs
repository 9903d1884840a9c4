//! Dirty-page tracking between the layers of an incremental checkpoint.
//!
//! Three mechanisms, probed once (`sys::probe`), the best one picked:
//! - **soft-dirty**: `clear_refs` 4 arms it, bit 55 of /proc/PID/pagemap
//!   tells a written page. The state lives in the kernel's page tables.
//! - **uffd-wp**: a userfaultfd in write-protect async mode registered on
//!   every private VMA; PAGEMAP_SCAN reports the pages written since the
//!   last scan and write-protects them again in the same step. The
//!   userfaultfd is created inside the target (an injected syscall: it
//!   must belong to the target's mm), taken out of its fd table with
//!   pidfd_getfd and closed there, so the target sees no new fd.
//! - **hash**: every page is read and its xxh3-128 compared with the
//!   parent layer's (`pagehash-*.img`).
//!
//! Between two commands the uffds and the id of the layer the tracking is
//! relative to are held by a keeper process ([`keeper`]). Whatever goes
//! wrong (keeper gone, reboot, pid reused, exec, another layer armed the
//! tracking since) makes the process's pages count as all changed: a full
//! layer for it, never a wrong one.

pub mod keeper;

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::dump::freeze::Frozen;
use crate::error::{Error, Result};
use crate::image::proto::{TrackState, TrackedProcess, TrackedRange};
use crate::kinds::incr::{Dirty, ParentView, Ranges};
use crate::procfs::MapsEntry;
use crate::sys::probe::{features, DirtyTracking};
use crate::sys::uffd;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    SoftDirty,
    UffdWp,
    Hash,
}

impl Mechanism {
    pub const ALL: [Mechanism; 3] = [Mechanism::SoftDirty, Mechanism::UffdWp, Mechanism::Hash];

    /// The name in images (`Inventory.dirty_tracking`) and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::SoftDirty => "soft-dirty",
            Mechanism::UffdWp => "uffd-wp",
            Mechanism::Hash => "hash",
        }
    }

    pub fn parse(s: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == s)
    }

    /// The best mechanism this machine has.
    pub fn best() -> Mechanism {
        match features().dirty_tracking() {
            DirtyTracking::SoftDirty => Mechanism::SoftDirty,
            DirtyTracking::UffdWpPagemapScan => Mechanism::UffdWp,
            DirtyTracking::ContentHashing => Mechanism::Hash,
        }
    }

    /// Whether this machine offers it (the probe's detail if not).
    pub fn check(self) -> std::result::Result<(), String> {
        let f = features();
        let need: Vec<&crate::sys::probe::Feature> = match self {
            Mechanism::SoftDirty => vec![&f.soft_dirty],
            Mechanism::UffdWp => vec![&f.uffd_wp_async, &f.pagemap_scan],
            Mechanism::Hash => vec![],
        };
        match need.iter().find(|x| !x.available) {
            Some(x) => Err(x.detail.clone()),
            None => Ok(()),
        }
    }
}

/// The mechanism for a command: `requested` (hidden `--dirty-tracking`) or
/// the best one.
pub fn pick(requested: Option<&str>) -> Result<Mechanism> {
    let Some(r) = requested else {
        return Ok(Mechanism::best());
    };
    let m = Mechanism::parse(r).ok_or_else(|| {
        Error::Usage(format!(
            "--dirty-tracking {r:?}: want soft-dirty, uffd-wp or hash"
        ))
    })?;
    m.check()
        .map_err(|why| Error::Usage(format!("--dirty-tracking {r}: not available here: {why}")))?;
    Ok(m)
}

/// Features asked of a userfaultfd.
const UFFD_FEATURES: u64 = uffd::UFFD_FEATURE_WP_ASYNC | uffd::UFFD_FEATURE_WP_UNPOPULATED;

/// One process's userfaultfd and the ranges registered on it.
struct Uffd {
    start_time: u64,
    fd: OwnedFd,
    ranges: Vec<(u64, u64)>,
    /// Ranges already write-protected again during this command.
    rearmed: Ranges,
}

/// The tracking of one command.
pub struct Tracker {
    pub mech: Mechanism,
    root: (i32, u64),
    /// Taken from the keeper: relative to this layer id.
    taken_layer: String,
    taken_dir: String,
    taken_boot: String,
    taken: HashMap<i32, Uffd>,
    /// Processes the taken state covers (soft-dirty: no fds).
    taken_procs: HashMap<i32, u64>,
    /// Why the taken state cannot be used, if so.
    lost: Option<String>,
    /// Whether this command changed the tracking state (re-armed it).
    rearmed: bool,
    /// Armed for the next layer.
    armed: HashMap<i32, Uffd>,
    armed_procs: HashMap<i32, u64>,
}

impl Tracker {
    /// Before the freeze: takes whatever the keeper holds for `root`
    /// (always, so that an older state never survives a newer layer).
    pub fn begin(
        mech: Mechanism,
        root: i32,
        root_start: u64,
        parent: Option<&ParentView>,
    ) -> Tracker {
        let mut t = Tracker {
            mech,
            root: (root, root_start),
            taken_layer: String::new(),
            taken_dir: String::new(),
            taken_boot: String::new(),
            taken: HashMap::new(),
            taken_procs: HashMap::new(),
            lost: None,
            rearmed: false,
            armed: HashMap::new(),
            armed_procs: HashMap::new(),
        };
        match keeper::take(root, root_start) {
            Ok(Some((st, fds))) => {
                info!(
                    "took {} tracking of {} processes relative to layer {}",
                    st.mechanism,
                    st.procs.len(),
                    st.layer_dir
                );
                t.taken_layer = st.layer_id.clone();
                t.taken_dir = st.layer_dir.clone();
                t.taken_boot = st.boot_id.clone();
                let with_fds = st.mechanism == Mechanism::UffdWp.name();
                if with_fds && fds.len() != st.procs.len() {
                    t.lost = Some("the keeper's state was incomplete".into());
                } else {
                    let mut fds = fds.into_iter();
                    for p in &st.procs {
                        t.taken_procs.insert(p.pid as i32, p.start_time);
                        if let (true, Some(fd)) = (with_fds, fds.next()) {
                            t.taken.insert(
                                p.pid as i32,
                                Uffd {
                                    start_time: p.start_time,
                                    fd,
                                    ranges: p.ranges.iter().map(|r| (r.start, r.end)).collect(),
                                    rearmed: Ranges::default(),
                                },
                            );
                        }
                    }
                }
                if st.mechanism != mech.name() {
                    t.lost = Some(format!(
                        "the tracking kept is {}, this layer uses {}",
                        st.mechanism,
                        mech.name()
                    ));
                }
            }
            Ok(None) => {
                t.lost = Some(
                    "no tracking state kept (no keeper: killed, or the machine rebooted?)".into(),
                )
            }
            Err(e) => {
                warn!("{e}");
                t.lost = Some(e);
            }
        }
        if mech == Mechanism::SoftDirty && crate::sys::mem::zero_page_pfn().is_none() {
            // A zero-page mapping is never soft-dirty; it must be told
            // from the page it replaced.
            t.lost = Some("the zero page's frame number is hidden (no CAP_SYS_ADMIN)".into());
        }
        if let Some(p) = parent {
            if t.lost.is_none() && t.taken_layer != p.inventory.layer_id {
                t.lost = Some(format!(
                    "the tracking kept is relative to another layer than {} (a later layer re-armed it)",
                    p.path.display()
                ));
            }
            if t.lost.is_none() && p.inventory.tracking_armed != mech.name() {
                t.lost = Some(format!(
                    "the parent layer armed {:?} tracking, not {}",
                    p.inventory.tracking_armed,
                    mech.name()
                ));
            }
        }
        if t.lost.is_some() {
            // Closing them unregisters everything: a new userfaultfd can
            // register the same ranges.
            t.taken.clear();
        }
        t
    }

    /// Frozen: what changed in process `pid` since the parent layer. With
    /// `rearm`, uffd-wp's scan also write-protects what it reports, so
    /// tracking goes on from this layer.
    pub fn dirty(
        &mut self,
        pid: i32,
        start_time: u64,
        smaps: &[MapsEntry],
        rearm: bool,
    ) -> std::result::Result<Dirty, String> {
        if self.mech == Mechanism::Hash {
            return Ok(Dirty::Hash);
        }
        if let Some(why) = &self.lost {
            return Err(why.clone());
        }
        if self.taken_procs.get(&pid) != Some(&start_time) {
            return Err("not tracked since the parent layer".into());
        }
        if self.taken_boot != crate::procfs::boot_id().unwrap_or_default() {
            return Err("the machine rebooted since the parent layer".into());
        }
        match self.mech {
            Mechanism::Hash => Ok(Dirty::Hash),
            Mechanism::SoftDirty => Ok(Dirty::SoftDirty),
            Mechanism::UffdWp => {
                let u = self
                    .taken
                    .get_mut(&pid)
                    .ok_or("no userfaultfd kept for it")?;
                if rearm {
                    self.rearmed = true;
                }
                scan_written(pid, u, smaps, rearm)
            }
        }
    }

    /// Frozen, after the process's pages were planned (soft-dirty reads
    /// its bits from the pagemap first): arms tracking of `pid` for the
    /// next layer. A process that cannot be tracked is left alone (the next
    /// layer stores it whole).
    pub fn arm(&mut self, frozen: &mut Frozen, pid: i32, start_time: u64, smaps: &[MapsEntry]) {
        self.rearmed = true;
        let r = match self.mech {
            Mechanism::Hash => Ok(()),
            Mechanism::SoftDirty => uffd::clear_refs(pid, "4")
                .map_err(|e| format!("clear_refs: {e}"))
                .map(|()| {
                    self.armed_procs.insert(pid, start_time);
                }),
            Mechanism::UffdWp => self.arm_uffd(frozen, pid, start_time, smaps),
        };
        if let Err(e) = r {
            warn!(
                "pid {pid}: dirty tracking not armed ({e}); the next layer stores its pages whole"
            );
        }
    }

    fn arm_uffd(
        &mut self,
        frozen: &mut Frozen,
        pid: i32,
        start_time: u64,
        smaps: &[MapsEntry],
    ) -> std::result::Result<(), String> {
        // Reuse the userfaultfd kept for this very process when it still
        // belongs to its mm; otherwise make one.
        let mut kept = self
            .taken
            .remove(&pid)
            .filter(|u| u.start_time == start_time && self.lost.is_none());
        if let Some(k) = &kept {
            let alive = smaps
                .iter()
                .filter(|m| trackable(m))
                .any(|m| uffd::register_wp(&k.fd, m.start, m.end).is_ok());
            if !alive {
                // Another mm (exec): dropping it releases its registrations.
                kept = None;
            }
        }
        let mut u = match kept {
            Some(u) => u,
            None => Uffd {
                start_time,
                fd: create_in_target(frozen, pid).map_err(|e| e.to_string())?,
                ranges: Vec::new(),
                rearmed: Ranges::default(),
            },
        };
        let mut ranges = Vec::new();
        for m in smaps.iter().filter(|m| trackable(m)) {
            match uffd::register_wp(&u.fd, m.start, m.end) {
                Ok(()) => ranges.push((m.start, m.end)),
                Err(e) => debug!(
                    "pid {pid}: {:#x}-{:#x} {} not tracked: {e}",
                    m.start, m.end, m.path
                ),
            }
        }
        // Write-protect what was not protected again by this layer's scan.
        let pm = open_pagemap(pid).map_err(|e| format!("/proc/{pid}/pagemap: {e}"))?;
        for &(s, e) in &ranges {
            if !u.rearmed.covers(s, e) {
                scan(&pm, s, e, true, &mut |_, _| {})
                    .map_err(|err| format!("write-protect {s:#x}-{e:#x}: {err}"))?;
            }
        }
        u.ranges = ranges;
        self.armed_procs.insert(pid, start_time);
        self.armed.insert(pid, u);
        Ok(())
    }

    /// After the layer is complete: hands the armed tracking to a new
    /// keeper. Returns its pid.
    pub fn keep(mut self, layer_id: &str, dir: &std::path::Path) -> Option<i32> {
        if self.mech == Mechanism::Hash || self.armed_procs.is_empty() {
            return None;
        }
        let mut st = TrackState::new();
        st.root_pid = self.root.0 as u32;
        st.root_start_time = self.root.1;
        st.layer_id = layer_id.to_string();
        st.layer_dir = std::fs::canonicalize(dir)
            .unwrap_or_else(|_| dir.to_path_buf())
            .display()
            .to_string();
        st.boot_id = crate::procfs::boot_id().unwrap_or_default();
        st.mechanism = self.mech.name().to_string();
        let mut pids: Vec<i32> = self.armed_procs.keys().copied().collect();
        pids.sort();
        let mut fds = Vec::new();
        for pid in pids {
            let mut p = TrackedProcess::new();
            p.pid = pid as u32;
            p.start_time = self.armed_procs[&pid];
            if self.mech == Mechanism::UffdWp {
                let Some(u) = self.armed.get(&pid) else {
                    continue;
                };
                fds.push(u.fd.as_raw_fd());
                for &(s, e) in &u.ranges {
                    let mut r = TrackedRange::new();
                    r.start = s;
                    r.end = e;
                    p.ranges.push(r);
                }
            }
            st.procs.push(p);
        }
        match keeper::spawn(&st, &fds) {
            Ok(k) => {
                info!("tracking kept by keeper pid {k}");
                self.armed.clear();
                Some(k)
            }
            Err(e) => {
                warn!("{e}; the next layer stores every page");
                None
            }
        }
    }

    /// A failed command: a state this command did not change is handed
    /// back, so the same layer can be retried; otherwise it is dropped
    /// (closing the userfaultfds unregisters everything).
    pub fn abort(mut self) {
        if self.rearmed || self.lost.is_some() || self.taken_procs.is_empty() {
            return;
        }
        let layer = std::mem::take(&mut self.taken_layer);
        let dir = std::path::PathBuf::from(std::mem::take(&mut self.taken_dir));
        self.armed = std::mem::take(&mut self.taken);
        self.armed_procs = std::mem::take(&mut self.taken_procs);
        let _ = self.keep(&layer, &dir);
    }

    /// Closes the userfaultfds taken from the keeper (unregistering their
    /// ranges), for a command that does not re-arm tracking and needs the
    /// VMAs for its own userfaultfd (the background snapshot). A failed
    /// command then cannot hand the state back: the next layer is whole.
    pub fn release_taken(&mut self) {
        if !self.taken.is_empty() {
            self.taken.clear();
            self.lost
                .get_or_insert_with(|| "released for a background snapshot".into());
        }
    }

    /// Whether anything was armed for the next layer.
    pub fn armed(&self) -> bool {
        self.mech == Mechanism::Hash || !self.armed_procs.is_empty()
    }
}

/// VMAs cairn registers for write-protection: private memory.
fn trackable(m: &MapsEntry) -> bool {
    !m.shared
        && !matches!(
            m.path.as_str(),
            "[vdso]" | "[vvar]" | "[vvar_vclock]" | "[vsyscall]"
        )
        && !m.has_flag("io")
        && !m.has_flag("pf")
}

fn open_pagemap(pid: i32) -> std::io::Result<File> {
    File::open(format!("/proc/{pid}/pagemap"))
}

/// PAGEMAP_SCAN over [start, end) for written pages, calling `found` with
/// each written region; with `wp`, they are write-protected as they are
/// reported (one atomic step per page).
fn scan(
    pm: &File,
    start: u64,
    end: u64,
    wp: bool,
    found: &mut dyn FnMut(u64, u64),
) -> std::io::Result<()> {
    let mut regions = vec![uffd::PageRegion::default(); uffd::SCAN_VEC_LEN];
    let flags = uffd::PM_SCAN_CHECK_WPASYNC | if wp { uffd::PM_SCAN_WP_MATCHING } else { 0 };
    // Only populated pages (present or swapped): the kernel counts an
    // unpopulated page as written, and write-protecting it would plant a
    // marker there that /proc/PID/pagemap shows as a swapped page. A page
    // populated later has no write-protection, so it is reported then.
    // (The masks also keep the kernel off its shortcut for exactly
    // "written", which does the same.)
    let anyof = uffd::PAGE_IS_PRESENT | uffd::PAGE_IS_SWAPPED;
    let ret = uffd::PAGE_IS_WRITTEN | anyof;
    let mut at = start;
    while at < end {
        let q = uffd::ScanQuery {
            flags,
            mask: uffd::PAGE_IS_WRITTEN,
            anyof,
            ret,
        };
        let (n, walk_end) = uffd::pagemap_scan(pm, at, end, q, &mut regions)?;
        for r in &regions[..n] {
            found(r.start, r.end);
        }
        if walk_end <= at {
            return Err(std::io::Error::other(format!(
                "PAGEMAP_SCAN made no progress at {at:#x}"
            )));
        }
        at = walk_end;
    }
    Ok(())
}

/// The written pages of the ranges still registered on `u`.
fn scan_written(
    pid: i32,
    u: &mut Uffd,
    smaps: &[MapsEntry],
    rearm: bool,
) -> std::result::Result<Dirty, String> {
    let registered = Ranges::new(u.ranges.clone());
    let pm = open_pagemap(pid).map_err(|e| format!("/proc/{pid}/pagemap: {e}"))?;
    let mut tracked = Vec::new();
    let mut written = Vec::new();
    for m in smaps.iter().filter(|m| trackable(m)) {
        // Only the parts registered at the parent layer, and only if they
        // are still registered with this very userfaultfd (a VMA moved by
        // mremap, or recreated, lost it; a dead mm fails).
        let uw = m.has_flag("uw");
        for &(s, e) in registered.iter() {
            let (s, e) = (s.max(m.start), e.min(m.end));
            if s >= e || !uw {
                continue;
            }
            if let Err(err) = uffd::register_wp(&u.fd, s, e) {
                debug!("pid {pid}: {s:#x}-{e:#x} no longer tracked: {err}");
                continue;
            }
            let mut w = Vec::new();
            match scan(&pm, s, e, rearm, &mut |a, b| w.push((a, b))) {
                Ok(()) => {
                    tracked.push((s, e));
                    written.extend(w);
                }
                Err(err) => debug!("pid {pid}: scan {s:#x}-{e:#x}: {err}"),
            }
        }
    }
    let tracked = Ranges::new(tracked);
    if rearm {
        u.rearmed = tracked.clone();
    }
    let written = Ranges::new(written);
    debug!(
        "pid {pid}: {} pages tracked, {} written since the parent layer",
        tracked.pages(),
        written.pages()
    );
    Ok(Dirty::Written { tracked, written })
}

/// Has the frozen process `pid` create a userfaultfd (so that it belongs
/// to its mm), takes it with pidfd_getfd and closes it in the process
/// again: its fd table ends as it was.
fn create_in_target(frozen: &mut Frozen, pid: i32) -> Result<OwnedFd> {
    create_uffd_in_target(frozen, pid, uffd::UFFD_CREATE_FLAGS, UFFD_FEATURES)
}

/// `create_in_target` with userfaultfd(2) `flags` and UFFDIO_API
/// `features` of the caller's choice (the background snapshot's
/// synchronous one, `crate::kinds::memory::bgsnap`).
pub fn create_uffd_in_target(
    frozen: &mut Frozen,
    pid: i32,
    flags: u64,
    features: u64,
) -> Result<OwnedFd> {
    // Guarded like the dump's calls: a dumper killed in the middle (a
    // background snapshot arms before the freeze) leaves the thread parked
    // for the guardian, never running on with these registers.
    let (mut r, _, own_code) = frozen.parking_site(pid)?;
    // The guardian is told which userfaultfds the process has: one more
    // left by a dumper killed before the close below is closed again.
    const LINK: &str = "anon_inode:[userfaultfd]";
    let before: Vec<i32> = crate::procfs::read_fds(pid)?
        .into_iter()
        .filter(|(_, l)| l == LINK)
        .map(|(fd, _)| fd)
        .collect();
    crate::guard::tell_remote_fd(r.tid, r.insn(), LINK, &before);
    let made = (|| -> Result<OwnedFd> {
        let fd = r
            .syscall(libc::SYS_userfaultfd, &[flags])
            .map_err(|e| Error::sys(pid, "remote userfaultfd", e))?;
        let got = uffd::pidfd_open(pid)
            .and_then(|p| uffd::pidfd_getfd(&p, fd as i32))
            .map_err(|e| Error::sys(pid, format!("pidfd_getfd of userfaultfd {fd}"), e));
        let closed = r
            .syscall(libc::SYS_close, &[fd])
            .map_err(|e| Error::sys(pid, format!("remote close({fd})"), e));
        let got = got?;
        closed?;
        crate::guard::tell_remote_fd_closed(r.tid);
        Ok(got)
    })();
    let dropped = match own_code {
        Some(code) => frozen.drop_parking(pid, &mut r, &[], code),
        None => Ok(()),
    };
    let got = made?;
    dropped?;
    let granted = uffd::api(&got, features)
        .map_err(|e| Error::sys(pid, format!("UFFDIO_API (features {features:#x})"), e))?;
    if granted & features != features {
        return Err(Error::sys(
            pid,
            "UFFDIO_API",
            std::io::Error::other(format!("features {granted:#x}, {features:#x} wanted")),
        ));
    }
    Ok(got)
}
