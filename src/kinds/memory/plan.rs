//! What a dump saves of memory: per VMA, the pages worth reading (the
//! pagemap for private memory, SEEK_DATA on the shmem file for shared
//! memory), minus those unchanged since the parent layer (incremental
//! dumps) and those a child still shares copy-on-write with its parent,
//! cut into jobs of at most 4 MiB for [`super::pages::write_pages`].

use std::collections::HashMap;
use std::fs::File;

use crate::error::{IoContext, Result};
use crate::image::proto::VmaKind;
use crate::kinds::incr::{Base, Dirty, Hashes, ParentView};
use crate::procfs::{self, MapsEntry};
use crate::sys::{mem, PAGE_SIZE};

use super::vma::PM_GUARD_REGION;

/// Pages per dump job (and so at most per chunk): 4 MiB.
const JOB_PAGES: u64 = 1024;

/// Where the bytes of a job come from; the addresses of its segments are
/// virtual addresses (Vm, ProcMem) or offsets in the object (Shmem).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// process_vm_readv.
    Vm { pid: i32 },
    /// /proc/PID/mem (unreadable VMAs: FOLL_FORCE reads them).
    ProcMem { pid: i32 },
    /// A shmem object, read through an fd to it.
    Shmem { file: usize },
}

/// A piece of work for one core, and one chunk of the page store: up to
/// JOB_PAGES pages of one owner, in segments (first address, pages) as the
/// pagemap records them. Scattered pages (an incremental layer) share a
/// job instead of costing a chunk each.
#[derive(Debug, Clone)]
pub(super) struct Job {
    pub(super) owner: usize,
    pub(super) segs: Vec<(u64, u64)>,
    pub(super) src: Source,
    /// Compare each page's hash with the parent layer's.
    pub(super) compare: bool,
    /// Planned without the pagemap (PAGEMAP_SCAN, [`PagePlan::scan_plan`]):
    /// whether a page is still shared copy-on-write with a process outside
    /// the dump is read when the job is copied (`Source::Vm` would unshare
    /// it).
    pub(super) cow_unknown: bool,
    /// Its pages are in private anonymous VMAs, which the background
    /// snapshot can write-protect: never in one job with pages of other
    /// VMAs (such a job would be copied frozen whole).
    pub(super) anon: bool,
}

impl Job {
    pub(super) fn pages(&self) -> u64 {
        self.segs.iter().map(|s| s.1).sum()
    }

    /// Address of each page, in job order.
    pub(super) fn addrs(&self) -> impl Iterator<Item = u64> + '_ {
        self.segs
            .iter()
            .flat_map(|&(a, n)| (0..n).map(move |i| a + i * PAGE_SIZE))
    }
}

/// Most segments in one job (process_vm_readv takes IOV_MAX iovecs).
const JOB_SEGS: usize = mem::IOV_MAX;

/// Per-page decisions for one private VMA: its start, its pagemap
/// entries, and which pages are read plainly (neither in parent nor
/// compared), for copy-on-write sharing with children.
type VmaPages = (u64, Vec<procfs::PageFlags>, Vec<bool>);

/// Collects what one dump must save from memory, for all processes.
#[derive(Default)]
pub struct PagePlan {
    pub(super) owners: Vec<String>,
    pub(super) jobs: Vec<Job>,
    pub(super) shmem_files: Vec<File>,
    pub(super) shmem_seen: HashMap<String, usize>,
    /// System V segments seen (shmid).
    pub sysv_ids: std::collections::BTreeSet<u32>,
    /// Pagemap entries of each private VMA dumped so far, by pid, to find
    /// pages a child still shares copy-on-write with its parent.
    pub(super) pfns: HashMap<i32, Vec<VmaPages>>,
    /// (child owner, parent owner, first address, pages): ranges whose
    /// bytes are the parent's, stored once.
    pub(super) inherit: Vec<(usize, usize, u64, u64)>,
    /// Incremental dumps: the parent layer.
    pub parent: Option<ParentView>,
    /// Incremental dumps: how each process's pages changed since the
    /// parent layer, or why that is not known.
    pub dirty: HashMap<i32, std::result::Result<Dirty, String>>,
    /// The layer is part of a chain: shared memory is hashed for the next
    /// layer to compare, and with `hash_private` private memory too.
    pub chain: bool,
    pub hash_private: bool,
    /// Pre-dump: pages are read while the tree runs, and a page that
    /// cannot be read any more (unmapped meanwhile) is left out.
    pub tolerate_faults: bool,
    /// Owners whose pages are hashed in this layer.
    pub(super) hashed: std::collections::HashSet<usize>,
    /// The parent's hashes of owners compared by content.
    pub(super) compare: HashMap<usize, Hashes>,
    /// (owner, first address, pages) unchanged since the parent layer.
    pub(super) parent_runs: Vec<(usize, u64, u64)>,
    /// Owners stored whole although the layer has a parent, with why.
    pub full_owners: Vec<String>,
    /// Background snapshot armed before the freeze: processes with no
    /// relative in the dump and no parent layer, whose private anonymous
    /// VMAs are planned from PAGEMAP_SCAN regions (populated, zero page,
    /// guard) instead of one pagemap entry per page.
    pub scan_plan: std::collections::HashSet<i32>,
}
impl PagePlan {
    pub(super) fn owner(&mut self, name: String) -> usize {
        if let Some(i) = self.owners.iter().position(|o| *o == name) {
            return i;
        }
        self.owners.push(name);
        self.owners.len() - 1
    }

    fn push_runs(&mut self, owner: usize, runs: &[(u64, u64)], src: Source) {
        self.push_runs_as(owner, runs, src, false, false)
    }

    fn push_runs_as(
        &mut self,
        owner: usize,
        runs: &[(u64, u64)],
        src: Source,
        cow_unknown: bool,
        anon: bool,
    ) {
        let compare = self.compare.contains_key(&owner);
        for &(start, nr) in runs {
            let mut off = 0;
            while off < nr {
                // Into the last job if it is of the same owner and source
                // and has room; else a new one.
                let fits = self.jobs.last().is_some_and(|j| {
                    j.owner == owner
                        && j.src == src
                        && j.compare == compare
                        && j.cow_unknown == cow_unknown
                        && j.anon == anon
                        && j.pages() < JOB_PAGES
                        && j.segs.len() < JOB_SEGS
                });
                if !fits {
                    self.jobs.push(Job {
                        owner,
                        segs: Vec::new(),
                        src,
                        compare,
                        cow_unknown,
                        anon,
                    });
                }
                let Some(j) = self.jobs.last_mut() else {
                    return;
                };
                let n = (nr - off).min(JOB_PAGES - j.pages());
                j.segs.push((start + off * PAGE_SIZE, n));
                off += n;
            }
        }
    }

    /// The parent process's pagemap entries and plain-read marks for
    /// [start, end), if it has a private VMA covering that range.
    fn parent_flags(
        &self,
        ppid: i32,
        start: u64,
        end: u64,
    ) -> Option<(&[procfs::PageFlags], &[bool])> {
        let vmas = self.pfns.get(&ppid)?;
        let (s, f, r) = vmas
            .iter()
            .find(|(s, f, _)| *s <= start && end <= s + f.len() as u64 * PAGE_SIZE)?;
        let i = ((start - s) / PAGE_SIZE) as usize;
        let n = ((end - start) / PAGE_SIZE) as usize;
        Some((f.get(i..i + n)?, r.get(i..i + n)?))
    }

    /// The parent's entries for [start, end) as read when it was dumped
    /// (0 where it has no private VMA).
    fn parent_cached(&self, ppid: i32, start: u64, end: u64) -> Vec<procfs::PageFlags> {
        let mut out = vec![procfs::PageFlags(0); ((end - start) / PAGE_SIZE) as usize];
        for (s, f, _) in self.pfns.get(&ppid).into_iter().flatten() {
            let e = s + f.len() as u64 * PAGE_SIZE;
            let (a, b) = (start.max(*s), end.min(e));
            if a < b {
                let (ci, pi) = (
                    ((a - start) / PAGE_SIZE) as usize,
                    ((a - s) / PAGE_SIZE) as usize,
                );
                let k = ((b - a) / PAGE_SIZE) as usize;
                out[ci..ci + k].copy_from_slice(&f[pi..pi + k]);
            }
        }
        out
    }

    /// The parent process's pagemap entries for each page of [start, end)
    /// in any of its private VMAs (an entry of 0 where it has none), read
    /// now, next to the child's entries `mine`; and the child's entries
    /// for the comparison. Page frames move under a frozen tree (compaction
    /// migrates pages, and a migrated page stays shared with the same
    /// processes): the parent's entries from when it was dumped, seconds
    /// before, may name a frame its page has left since, and a page still
    /// shared with the child would be stored as the child's own copy.
    /// Where the two disagree on a present page, both are read once more
    /// (a page may move between the two reads).
    fn parent_pages_now(
        &self,
        pid: i32,
        ppid: i32,
        start: u64,
        end: u64,
        mine: &[procfs::PageFlags],
    ) -> Result<(Vec<procfs::PageFlags>, Vec<procfs::PageFlags>)> {
        let n = ((end - start) / PAGE_SIZE) as usize;
        let mut theirs = vec![procfs::PageFlags(0); n];
        let mut mine = mine.to_vec();
        let covered: Vec<(u64, u64)> = (self.pfns.get(&ppid).into_iter().flatten())
            .map(|(s, f, _)| ((*s).max(start), (s + f.len() as u64 * PAGE_SIZE).min(end)))
            .filter(|(a, b)| a < b)
            .collect();
        let differ = |m: &[procfs::PageFlags], t: &[procfs::PageFlags], i: usize| {
            m[i].present() && t[i].present() && m[i].pfn() != t[i].pfn()
        };
        for &(a, b) in &covered {
            let (i, k) = (
                ((a - start) / PAGE_SIZE) as usize,
                ((b - a) / PAGE_SIZE) as usize,
            );
            theirs[i..i + k].copy_from_slice(&read_pagemap_split(ppid, a, b)?);
        }
        // Evidence in the log: shared pages whose frame moved since the
        // parent was dumped.
        let stale = self.parent_cached(ppid, start, end);
        let moved_since = (0..n)
            .filter(|&i| stale[i].present() && differ(&stale, &theirs, i))
            .filter(|&i| theirs[i].pfn() == mine[i].pfn())
            .count();
        if moved_since > 0 {
            crate::info!(
                "pid {pid}: {moved_since} page(s) in {start:#x}-{end:#x} shared with parent \
                 {ppid} moved to another frame since the parent was dumped"
            );
        }
        let moved = (0..n).filter(|&i| differ(&mine, &theirs, i)).count();
        if moved > 0 {
            for &(a, b) in &covered {
                let (i, k) = (
                    ((a - start) / PAGE_SIZE) as usize,
                    ((b - a) / PAGE_SIZE) as usize,
                );
                if !(i..i + k).any(|j| differ(&mine, &theirs, j)) {
                    continue;
                }
                let m2 = read_pagemap_split(pid, a, b)?;
                let t2 = read_pagemap_split(ppid, a, b)?;
                for j in 0..k {
                    if differ(&mine, &theirs, i + j) && !differ(&m2, &t2, j) {
                        (mine[i + j], theirs[i + j]) = (m2[j], t2[j]);
                    }
                }
            }
        }
        Ok((theirs, mine))
    }

    /// [`PagePlan::add_vma`] of a private anonymous VMA of a process of
    /// [`PagePlan::scan_plan`]: one PAGEMAP_SCAN walk reports the populated
    /// runs (present or swapped), those of the shared zero page (zero:
    /// nothing stored) and the guard regions, a few regions in all instead
    /// of 8 bytes per page. `None` on a kernel without those categories.
    fn add_vma_scanned(
        &mut self,
        pid: i32,
        m: &MapsEntry,
        owner: usize,
    ) -> Result<Option<VmaPageRuns>> {
        use crate::sys::uffd;
        let Some(regions) = super::bgsnap::page_regions(pid, m.start, m.end).map_err(|e| {
            crate::error::Error::sys(pid, format!("PAGEMAP_SCAN {:#x}", m.start), e)
        })?
        else {
            return Ok(None);
        };
        let mut guards: Vec<(u64, u64)> = Vec::new();
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let push = |v: &mut Vec<(u64, u64)>, a: u64, n: u64| match v.last_mut() {
            Some(l) if l.0 + l.1 * PAGE_SIZE == a => l.1 += n,
            _ => v.push((a, n)),
        };
        for r in regions {
            let (a, n) = (r.start, (r.end - r.start) / PAGE_SIZE);
            let c = r.categories;
            if c & uffd::PAGE_IS_GUARD != 0 {
                push(&mut guards, a, n);
            } else if c & uffd::PAGE_IS_SWAPPED != 0
                || (c & uffd::PAGE_IS_PRESENT != 0 && c & uffd::PAGE_IS_PFNZERO == 0)
            {
                push(&mut runs, a, n);
            }
        }
        let src = if m.read {
            Source::Vm { pid }
        } else {
            Source::ProcMem { pid }
        };
        self.push_runs_as(owner, &runs, src, m.read, super::bgsnap::anon_private(m));
        Ok(Some(VmaPageRuns {
            guards,
            cow: Vec::new(),
        }))
    }

    pub fn total_pages(&self) -> u64 {
        self.jobs.iter().map(|j| j.pages()).sum()
    }

    /// What the parent layer holds for process `pid` and how its pages
    /// changed; `None` when its pages must all be stored.
    pub(super) fn private_base(
        &mut self,
        pid: i32,
        start_time: u64,
        owner: usize,
    ) -> Result<Option<Base>> {
        let Some(parent) = &self.parent else {
            return Ok(None);
        };
        let name = format!("pid:{pid}");
        if !parent.same_process(pid, start_time) {
            self.full_owners.push(format!(
                "{name}: not in the parent layer (a new process, or its pid was reused)"
            ));
            return Ok(None);
        }
        let dirty = self
            .dirty
            .remove(&pid)
            .unwrap_or_else(|| Err("no dirty-page tracking".into()));
        let Some((held, hashes)) = parent.held(&name)? else {
            self.full_owners
                .push(format!("{name}: the parent layer holds no pages of it"));
            return Ok(None);
        };
        let dirty = match dirty {
            Ok(Dirty::Hash) if hashes.is_none() => {
                Err("the parent layer has no page hashes for it".to_string())
            }
            d => d,
        };
        let dirty = match dirty {
            Ok(d) => d,
            Err(why) => {
                self.full_owners.push(format!("{name}: {why}"));
                Dirty::All
            }
        };
        if let (Dirty::Hash, Some(h)) = (&dirty, &hashes) {
            self.compare.insert(owner, h.clone());
        }
        Ok(Some(Base {
            held,
            hashes,
            dirty,
        }))
    }

    /// Adds runs (start, pages) of one VMA unchanged since the parent
    /// (never merged across VMAs: a run lies inside one).
    fn push_parent(&mut self, owner: usize, runs: Vec<(u64, u64)>) {
        self.parent_runs
            .extend(runs.into_iter().map(|(a, n)| (owner, a, n)));
    }

    /// Adds the pages of VMA `m` (of `kind`) of process `pid` worth
    /// saving; `private_owner` is the process's owner index, `base` what
    /// the parent layer holds of it, `map_file` the VMA's
    /// /proc/PID/map_files entry. Returns the VMA's guard regions and the
    /// pages it still shares copy-on-write with the parent `ppid`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn add_vma(
        &mut self,
        pid: i32,
        ppid: Option<i32>,
        m: &MapsEntry,
        kind: VmaKind,
        base: Option<&Base>,
        private_owner: usize,
        map_file: &str,
    ) -> Result<VmaPageRuns> {
        let mut guards = Vec::new();
        let mut cow = Vec::new();
        if kind == VmaKind::VMA_ANON_PRIVATE
            && base.is_none()
            && ppid.is_none()
            && self.parent.is_none()
            && !self.chain
            && self.scan_plan.contains(&pid)
        {
            if let Some(found) = self.add_vma_scanned(pid, m, private_owner)? {
                return Ok(found);
            }
        }
        if matches!(
            kind,
            VmaKind::VMA_ANON_SHARED | VmaKind::VMA_SYSV_SHM | VmaKind::VMA_FILE_SHARED
        ) {
            guards = guard_runs(m.start, &read_pagemap_split(pid, m.start, m.end)?);
        }
        match kind {
            VmaKind::VMA_ANON_PRIVATE | VmaKind::VMA_FILE_PRIVATE => {
                let flags = read_pagemap_split(pid, m.start, m.end)?;
                guards = guard_runs(m.start, &flags);
                let anon_only = kind == VmaKind::VMA_FILE_PRIVATE;
                // Anonymous pages that map the shared zero page (read,
                // never written, or read again after MADV_DONTNEED) are
                // zero: nothing is stored, they come back as zero. (Such a
                // page is not soft-dirty: it must not count as unchanged.)
                let zero_pfn = if kind == VmaKind::VMA_ANON_PRIVATE {
                    mem::zero_page_pfn()
                } else {
                    None
                };
                // A guard page shows as swapped: it has no contents.
                let wanted = |f: procfs::PageFlags| {
                    (f.0 & PM_GUARD_REGION == 0 && f.swapped())
                        || (f.present()
                            && !(anon_only && f.file_or_shared())
                            && zero_pfn.is_none_or(|z| f.pfn() != z))
                };
                // Incremental: pages unchanged since the parent layer are
                // recorded as in parent; the rest is read.
                let n = flags.len();
                let mut in_parent = vec![false; n];
                let mut read = vec![false; n];
                for (i, f) in flags.iter().enumerate() {
                    if !wanted(*f) {
                        continue;
                    }
                    let addr = m.start + i as u64 * PAGE_SIZE;
                    if base.is_some_and(|b| unchanged(b, addr, *f, kind)) {
                        in_parent[i] = true;
                    } else {
                        read[i] = true;
                    }
                }
                let compared = self.compare.contains_key(&private_owner);
                let plain: Vec<bool> = read.iter().map(|&r| r && !compared).collect();
                // Pages still shared copy-on-write with the parent: same
                // frame, not exclusively ours, read plainly by both.
                // Stored once, for the parent.
                // The parent's frames now (see `parent_pages_now`): `cmp`
                // are the child's entries to compare with them.
                let now = match ppid {
                    Some(pp) => Some(self.parent_pages_now(pid, pp, m.start, m.end, &flags)?),
                    None => None,
                };
                let parent = ppid.zip(now.as_ref()).and_then(|(pp, (theirs, _))| {
                    self.parent_flags(pp, m.start, m.end)
                        .map(|(_, r)| (pp, theirs.clone(), r.to_vec()))
                });
                let cmp: &[procfs::PageFlags] = now.as_ref().map_or(&flags, |(_, c)| c);
                let shared: Vec<bool> = match &parent {
                    Some((_, pf, pr)) => cmp
                        .iter()
                        .zip(pf)
                        .zip(pr)
                        .zip(&plain)
                        .map(|(((f, p), &p_read), &me_read)| {
                            me_read
                                && p_read
                                && f.present()
                                && p.present()
                                && f.pfn() != 0
                                && f.pfn() == p.pfn()
                                && !f.exclusive()
                        })
                        .collect(),
                    None => vec![false; n],
                };
                let marks = |v: &[bool]| -> Vec<procfs::PageFlags> {
                    v.iter()
                        .map(|&b| procfs::PageFlags(if b { 1 << 63 } else { 0 }))
                        .collect()
                };
                if let Some((pp, _, _)) = &parent {
                    let powner = self.owner(format!("pid:{pp}"));
                    for (a, n) in runs_from_pagemap(m.start, &marks(&shared), |f| f.present()) {
                        self.inherit.push((private_owner, powner, a, n));
                    }
                }
                if let Some((theirs, cmp)) = &now {
                    cow = cow_runs(m.start, cmp, theirs);
                }
                let keep: Vec<bool> = read.iter().zip(&shared).map(|(&r, &sh)| r && !sh).collect();
                let runs = runs_from_pagemap(m.start, &marks(&keep), |f| f.present());
                let parent_runs = runs_from_pagemap(m.start, &marks(&in_parent), |f| f.present());
                self.push_parent(private_owner, parent_runs);
                // process_vm_readv pins the pages it reads (FOLL_PIN), and
                // the kernel unshares a page that is still shared
                // copy-on-write before it lets it be pinned: the process
                // would get a copy of every page it shares with a child
                // (a --leave-running dump or a pre-dump would multiply
                // the tree's memory). /proc/PID/mem reads without a pin.
                let cow_shared = flags
                    .iter()
                    .zip(&keep)
                    .any(|(f, &k)| k && f.present() && !f.exclusive());
                self.pfns
                    .entry(pid)
                    .or_default()
                    .push((m.start, flags, plain));
                let src = if m.read && !cow_shared {
                    Source::Vm { pid }
                } else {
                    Source::ProcMem { pid }
                };
                let anon = super::bgsnap::anon_private(m);
                self.push_runs_as(private_owner, &runs, src, false, anon);
            }
            VmaKind::VMA_ANON_SHARED | VmaKind::VMA_SYSV_SHM => {
                let name = if kind == VmaKind::VMA_SYSV_SHM {
                    self.sysv_ids.insert(m.inode as u32);
                    format!("sysv:{}", m.inode)
                } else {
                    format!("shmem:{}", m.inode)
                };
                let owner = self.owner(name.clone());
                let file = match self.shmem_seen.get(&name) {
                    Some(&i) => i,
                    None => {
                        // Shared memory can change through any process that
                        // maps it (or its file): in a chain it is always
                        // compared by content.
                        if self.chain {
                            self.hashed.insert(owner);
                        }
                        if let Some(p) = &self.parent {
                            if let Some((_, Some(h))) = p.held(&name)? {
                                self.compare.insert(owner, h);
                            }
                        }
                        let f = File::open(map_file).at(map_file)?;
                        self.shmem_files.push(f);
                        self.shmem_seen.insert(name, self.shmem_files.len() - 1);
                        self.shmem_files.len() - 1
                    }
                };
                let runs = shmem_data_runs(&self.shmem_files[file], m.offset, m.offset + m.len())
                    .at(map_file)?;
                // The same object mapped twice must be saved once.
                let known: Vec<(u64, u64)> = self
                    .jobs
                    .iter()
                    .filter(|j| j.owner == owner)
                    .flat_map(|j| j.segs.iter().map(|&(a, n)| (a, a + n * PAGE_SIZE)))
                    .collect();
                let runs = super::mapfiles::minus_known(runs, &known);
                self.push_runs(owner, &runs, Source::Shmem { file });
            }
            _ => {}
        }
        Ok(VmaPageRuns { guards, cow })
    }
}

/// What [`PagePlan::add_vma`] found in a VMA's page table besides the
/// pages to save: runs (first address, pages).
pub(super) struct VmaPageRuns {
    /// Guard regions (MADV_GUARD_INSTALL).
    pub(super) guards: Vec<(u64, u64)>,
    /// Pages shared copy-on-write with the parent process.
    pub(super) cow: Vec<(u64, u64)>,
}

/// Pages of a private VMA starting at `start` (pagemap entries `mine`)
/// that the parent maps at the same address with the same anonymous
/// page frame (`theirs`), and that are not mapped exclusively: still
/// shared copy-on-write since a fork. Page cache pages of a private file
/// mapping are not counted (a restore shares them by mapping the file),
/// nor the shared zero page (no frame of its own).
fn cow_runs(
    start: u64,
    mine: &[procfs::PageFlags],
    theirs: &[procfs::PageFlags],
) -> Vec<(u64, u64)> {
    let zero = mem::zero_page_pfn();
    let marks: Vec<procfs::PageFlags> = mine
        .iter()
        .zip(theirs)
        .map(|(f, p)| {
            let shared = f.present()
                && p.present()
                && !f.file_or_shared()
                && !p.file_or_shared()
                && f.pfn() != 0
                && f.pfn() == p.pfn()
                && !f.exclusive()
                && zero != Some(f.pfn());
            procfs::PageFlags(if shared { 1 << 63 } else { 0 })
        })
        .collect();
    runs_from_pagemap(start, &marks, |f| f.present())
}

/// Guard regions (MADV_GUARD_INSTALL) of a VMA: runs (first address,
/// pages). They live in the page tables only; restore installs them again.
fn guard_runs(start: u64, flags: &[procfs::PageFlags]) -> Vec<(u64, u64)> {
    runs_from_pagemap(start, flags, |f| f.0 & PM_GUARD_REGION != 0)
}

/// Whether the page at `addr` (pagemap entry `f`, in a VMA of `kind`) is
/// unchanged since the parent layer, by what `base` knows.
fn unchanged(base: &Base, addr: u64, f: procfs::PageFlags, kind: VmaKind) -> bool {
    if !base.held.contains(addr) {
        return false;
    }
    match &base.dirty {
        Dirty::All | Dirty::Hash => false,
        Dirty::SoftDirty => !f.soft_dirty(),
        // A swapped entry in a file mapping may be a uffd-wp marker left
        // where a copy-on-write page was dropped (the file's page shows
        // through now): only present pages are trusted there.
        Dirty::Written { tracked, written } => {
            tracked.contains(addr)
                && !written.contains(addr)
                && (kind == VmaKind::VMA_ANON_PRIVATE || f.present())
        }
    }
}

/// Runs of consecutive pages (first address, count) whose pagemap entry
/// satisfies `keep`.
fn runs_from_pagemap(
    start: u64,
    flags: &[procfs::PageFlags],
    keep: impl Fn(procfs::PageFlags) -> bool,
) -> Vec<(u64, u64)> {
    let mut runs = Vec::new();
    let mut cur: Option<(u64, u64)> = None;
    for (i, f) in flags.iter().enumerate() {
        let addr = start + i as u64 * PAGE_SIZE;
        if keep(*f) {
            match &mut cur {
                Some((_, n)) => *n += 1,
                None => cur = Some((addr, 1)),
            }
        } else if let Some(r) = cur.take() {
            runs.push(r);
        }
    }
    runs.extend(cur);
    runs
}

/// read_pagemap in pieces it accepts (it bounds one call's size).
fn read_pagemap_split(pid: i32, start: u64, end: u64) -> Result<Vec<procfs::PageFlags>> {
    const STEP: u64 = 8 << 30;
    let mut out = Vec::with_capacity(((end - start) / PAGE_SIZE) as usize);
    let mut s = start;
    while s < end {
        let e = (s + STEP).min(end);
        out.extend(procfs::read_pagemap(pid, s, e)?);
        s = e;
    }
    Ok(out)
}

/// Populated page runs (offset, pages) of a shmem file in [start, end).
fn shmem_data_runs(f: &File, start: u64, end: u64) -> std::io::Result<Vec<(u64, u64)>> {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    let mut runs = Vec::new();
    let mut pos = start;
    while pos < end {
        let data = match nix::unistd::lseek(fd, pos as i64, nix::unistd::Whence::SeekData) {
            Ok(d) => d as u64,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        if data >= end {
            break;
        }
        let hole = nix::unistd::lseek(fd, data as i64, nix::unistd::Whence::SeekHole)
            .map_err(std::io::Error::from)? as u64;
        let s = data & !(PAGE_SIZE - 1);
        let e = hole.min(end).div_ceil(PAGE_SIZE) * PAGE_SIZE;
        if e > s {
            runs.push((s, (e - s) / PAGE_SIZE));
        }
        pos = hole.max(s + PAGE_SIZE);
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_merge_consecutive_pages() {
        let f = |v: u64| procfs::PageFlags(v);
        let present = 1u64 << 63;
        let flags = [f(present), f(present), f(0), f(present)];
        let runs = runs_from_pagemap(0x1000, &flags, |x| x.present());
        assert_eq!(runs, vec![(0x1000, 2), (0x4000, 1)]);
    }
}
