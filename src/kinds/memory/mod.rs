//! Memory: VMAs, mm fields and page contents, dump and restore.
//!
//! Dump classifies every VMA, finds the pages worth saving with
//! /proc/PID/pagemap (private memory) or SEEK_DATA on the shmem file
//! (shared anonymous memory), and reads them with process_vm_readv (or
//! /proc/PID/mem for unreadable VMAs) on every core, compressing each 4 MiB
//! job into one zstd frame. All-zero pages are recorded as zero runs and
//! never stored; never-touched pages are not recorded at all.
//!
//! Restore maps every VMA at its address with injected mmap calls, writes
//! the pages with process_vm_writev (shared objects through their file),
//! then applies the final protections and madvise flags.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use crate::error::{Error, IoContext, Result};
use crate::image::chain::Resolved;
use crate::image::pages::{PageStoreReader, PageStoreWriter};
use crate::image::proto::{MmEntry, PageHashes, PageRun, Pagemap, RunKind, Vma, VmaKind};
use crate::kinds::incr::{self, Base, Dirty, Hashes, PageHash, ParentView};
use crate::procfs::{self, MapsEntry};
use crate::remote::Agent;
use crate::remote::Calls;
use crate::sys::{mem, PAGE_SIZE};

/// Pages per dump job (and so at most per chunk): 4 MiB.
const JOB_PAGES: u64 = 1024;
/// Highest user address on x86-64 with 4-level paging (and 5-level off).
pub const TASK_SIZE: u64 = 0x7fff_ffff_f000;

/// Where the bytes of a job come from; the addresses of its segments are
/// virtual addresses (Vm, ProcMem) or offsets in the object (Shmem).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
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
struct Job {
    owner: usize,
    segs: Vec<(u64, u64)>,
    src: Source,
    /// Compare each page's hash with the parent layer's.
    compare: bool,
}

impl Job {
    fn pages(&self) -> u64 {
        self.segs.iter().map(|s| s.1).sum()
    }

    /// Address of each page, in job order.
    fn addrs(&self) -> impl Iterator<Item = u64> + '_ {
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
    owners: Vec<String>,
    jobs: Vec<Job>,
    shmem_files: Vec<File>,
    shmem_seen: HashMap<String, usize>,
    /// System V segments seen (shmid).
    pub sysv_ids: std::collections::BTreeSet<u32>,
    /// Pagemap entries of each private VMA dumped so far, by pid, to find
    /// pages a child still shares copy-on-write with its parent.
    pfns: HashMap<i32, Vec<VmaPages>>,
    /// (child owner, parent owner, first address, pages): ranges whose
    /// bytes are the parent's, stored once.
    inherit: Vec<(usize, usize, u64, u64)>,
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
    hashed: std::collections::HashSet<usize>,
    /// The parent's hashes of owners compared by content.
    compare: HashMap<usize, Hashes>,
    /// (owner, first address, pages) unchanged since the parent layer.
    parent_runs: Vec<(usize, u64, u64)>,
    /// Owners stored whole although the layer has a parent, with why.
    pub full_owners: Vec<String>,
}

impl PagePlan {
    fn owner(&mut self, name: String) -> usize {
        if let Some(i) = self.owners.iter().position(|o| *o == name) {
            return i;
        }
        self.owners.push(name);
        self.owners.len() - 1
    }

    fn push_runs(&mut self, owner: usize, runs: &[(u64, u64)], src: Source) {
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
                        && j.pages() < JOB_PAGES
                        && j.segs.len() < JOB_SEGS
                });
                if !fits {
                    self.jobs.push(Job {
                        owner,
                        segs: Vec::new(),
                        src,
                        compare,
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

    pub fn total_pages(&self) -> u64 {
        self.jobs.iter().map(|j| j.pages()).sum()
    }

    /// What the parent layer holds for process `pid` and how its pages
    /// changed; `None` when its pages must all be stored.
    fn private_base(&mut self, pid: i32, start_time: u64, owner: usize) -> Result<Option<Base>> {
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

fn classify(pid: i32, m: &MapsEntry) -> Result<Option<VmaKind>> {
    let p = m.path.as_str();
    Ok(Some(match p {
        "[vsyscall]" => return Ok(None),
        "[vdso]" => VmaKind::VMA_VDSO,
        "[vvar]" => VmaKind::VMA_VVAR,
        "[vvar_vclock]" => VmaKind::VMA_VVAR_VCLOCK,
        _ if m.has_flag("io") || m.has_flag("pf") => {
            return Err(Error::unsupported(
                pid,
                format!("device mapping {:#x}-{:#x} {p}", m.start, m.end),
            ))
        }
        _ if p.starts_with("/SYSV") && m.shared => VmaKind::VMA_SYSV_SHM,
        _ if m.shared && (p == "/dev/zero (deleted)" || p.starts_with("[anon_shmem")) => {
            VmaKind::VMA_ANON_SHARED
        }
        _ if p.is_empty() || p == "[heap]" || p == "[stack]" || p.starts_with("[anon:") => {
            if m.shared {
                VmaKind::VMA_ANON_SHARED
            } else {
                VmaKind::VMA_ANON_PRIVATE
            }
        }
        _ if p.starts_with('[') => {
            return Err(Error::unsupported(
                pid,
                format!("special mapping {p} at {:#x}", m.start),
            ))
        }
        _ if m.is_deleted() => {
            return Err(Error::unsupported(
                pid,
                format!("mapping {:#x}-{:#x} of deleted file {p}", m.start, m.end),
            ))
        }
        _ if m.shared => VmaKind::VMA_FILE_SHARED,
        _ => VmaKind::VMA_FILE_PRIVATE,
    }))
}

fn prot_of(m: &MapsEntry) -> u32 {
    let mut p = 0;
    if m.read {
        p |= libc::PROT_READ as u32;
    }
    if m.write {
        p |= libc::PROT_WRITE as u32;
    }
    if m.exec {
        p |= libc::PROT_EXEC as u32;
    }
    p
}

/// Refuses, before anything is frozen, mappings cairn cannot dump.
pub fn precheck(pid: i32) -> Result<()> {
    for m in procfs::read_smaps(pid)? {
        classify(pid, &m)?;
    }
    Ok(())
}

/// Everything process-level needed to build the mm image.
pub struct MmInput<'a> {
    pub pid: i32,
    /// Parent process, if it is part of the dump (for copy-on-write dedup).
    pub ppid: Option<i32>,
    pub smaps: &'a [MapsEntry],
    pub stat: &'a procfs::Stat,
    pub brk: u64,
    pub auxv: Vec<u64>,
    /// /proc/PID/stat start time (incremental dumps: same process?).
    pub start_time: u64,
}

/// Builds the mm image of one process and adds its pages to `plan`.
/// `register_file` gives the files-image id of a mapped file.
pub fn dump_mm(
    input: MmInput,
    plan: &mut PagePlan,
    mut register_file: impl FnMut(&str, &std::fs::Metadata, bool) -> Result<u32>,
) -> Result<MmEntry> {
    let pid = input.pid;
    let st = input.stat;
    let mut mm = MmEntry::new();
    mm.pid = pid as u32;
    mm.start_code = st.start_code;
    mm.end_code = st.end_code;
    mm.start_data = st.start_data;
    mm.end_data = st.end_data;
    mm.start_brk = st.start_brk;
    mm.brk = input.brk;
    mm.start_stack = st.start_stack;
    mm.arg_start = st.arg_start;
    mm.arg_end = st.arg_end;
    mm.env_start = st.env_start;
    mm.env_end = st.env_end;
    mm.auxv = input.auxv;
    let exe = std::fs::metadata(format!("/proc/{pid}/exe")).at(format!("/proc/{pid}/exe"))?;
    let exe_path = procfs::read_link(format!("/proc/{pid}/exe"))?;
    if exe_path.ends_with(" (deleted)") {
        return Err(Error::unsupported(
            pid,
            format!("executable {exe_path} was deleted"),
        ));
    }
    mm.exe_file_id = register_file(&exe_path, &exe, false)?;

    let private_owner = plan.owner(format!("pid:{pid}"));
    if plan.chain && plan.hash_private {
        plan.hashed.insert(private_owner);
    }
    let base = plan.private_base(pid, input.start_time, private_owner)?;
    for m in input.smaps {
        let Some(kind) = classify(pid, m)? else {
            continue;
        };
        let mut v = Vma::new();
        v.start = m.start;
        v.end = m.end;
        v.prot = prot_of(m);
        v.kind = kind.into();
        v.pgoff = m.offset;
        // uffd registration ("uw", "um", "ui") is cairn's own tracking
        // or the process's, and is not restored.
        v.vm_flags = m
            .vm_flags
            .iter()
            .filter(|f| !matches!(f.as_str(), "uw" | "um" | "ui"))
            .cloned()
            .collect();
        v.name = m.path.clone();
        let map_file = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
        match kind {
            VmaKind::VMA_FILE_PRIVATE | VmaKind::VMA_FILE_SHARED => {
                let md = std::fs::metadata(&map_file).at(&map_file)?;
                v.file_id = register_file(
                    &m.path,
                    &md,
                    kind == VmaKind::VMA_FILE_SHARED && m.has_flag("mw"),
                )?;
            }
            VmaKind::VMA_ANON_SHARED | VmaKind::VMA_SYSV_SHM => v.shmid = m.inode,
            _ => {}
        }
        match kind {
            VmaKind::VMA_ANON_PRIVATE | VmaKind::VMA_FILE_PRIVATE => {
                let flags = read_pagemap_split(pid, m.start, m.end)?;
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
                let wanted = |f: procfs::PageFlags| {
                    f.swapped()
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
                    if base.as_ref().is_some_and(|b| unchanged(b, addr, *f, kind)) {
                        in_parent[i] = true;
                    } else {
                        read[i] = true;
                    }
                }
                let compared = plan.compare.contains_key(&private_owner);
                let plain: Vec<bool> = read.iter().map(|&r| r && !compared).collect();
                // Pages still shared copy-on-write with the parent: same
                // frame, not exclusively ours, read plainly by both.
                // Stored once, for the parent.
                let parent = input.ppid.and_then(|pp| {
                    plan.parent_flags(pp, m.start, m.end)
                        .map(|(f, r)| (pp, f.to_vec(), r.to_vec()))
                });
                let shared: Vec<bool> = match &parent {
                    Some((_, pf, pr)) => flags
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
                    let powner = plan.owner(format!("pid:{pp}"));
                    for (a, n) in runs_from_pagemap(m.start, &marks(&shared), |f| f.present()) {
                        plan.inherit.push((private_owner, powner, a, n));
                    }
                }
                let keep: Vec<bool> = read.iter().zip(&shared).map(|(&r, &sh)| r && !sh).collect();
                let runs = runs_from_pagemap(m.start, &marks(&keep), |f| f.present());
                let parent_runs = runs_from_pagemap(m.start, &marks(&in_parent), |f| f.present());
                plan.push_parent(private_owner, parent_runs);
                plan.pfns
                    .entry(pid)
                    .or_default()
                    .push((m.start, flags, plain));
                let src = if m.read {
                    Source::Vm { pid }
                } else {
                    Source::ProcMem { pid }
                };
                plan.push_runs(private_owner, &runs, src);
            }
            VmaKind::VMA_ANON_SHARED | VmaKind::VMA_SYSV_SHM => {
                let name = if kind == VmaKind::VMA_SYSV_SHM {
                    plan.sysv_ids.insert(m.inode as u32);
                    format!("sysv:{}", m.inode)
                } else {
                    format!("shmem:{}", m.inode)
                };
                let owner = plan.owner(name.clone());
                let file = match plan.shmem_seen.get(&name) {
                    Some(&i) => i,
                    None => {
                        // Shared memory can change through any process that
                        // maps it (or its file): in a chain it is always
                        // compared by content.
                        if plan.chain {
                            plan.hashed.insert(owner);
                        }
                        if let Some(p) = &plan.parent {
                            if let Some((_, Some(h))) = p.held(&name)? {
                                plan.compare.insert(owner, h);
                            }
                        }
                        let f = File::open(&map_file).at(&map_file)?;
                        plan.shmem_files.push(f);
                        plan.shmem_seen.insert(name, plan.shmem_files.len() - 1);
                        plan.shmem_files.len() - 1
                    }
                };
                let runs = shmem_data_runs(&plan.shmem_files[file], m.offset, m.offset + m.len())
                    .at(&map_file)?;
                // The same object mapped twice must be saved once.
                let known: Vec<(u64, u64)> = plan
                    .jobs
                    .iter()
                    .filter(|j| j.owner == owner)
                    .flat_map(|j| j.segs.iter().map(|&(a, n)| (a, a + n * PAGE_SIZE)))
                    .collect();
                let runs: Vec<(u64, u64)> = runs
                    .into_iter()
                    .filter(|(a, n)| !known.iter().any(|(s, e)| a < e && a + n * PAGE_SIZE > *s))
                    .collect();
                plan.push_runs(owner, &runs, Source::Shmem { file });
            }
            _ => {}
        }
        mm.vmas.push(v);
    }
    Ok(mm)
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

fn is_zero(page: &[u8]) -> bool {
    page.chunks_exact(8)
        .all(|w| w.try_into().map(u64::from_ne_bytes).unwrap_or(1) == 0)
        && page.chunks_exact(8).remainder().iter().all(|&b| b == 0)
}

struct JobResult {
    job: usize,
    /// (addr, pages, kind, byte offset in the chunk)
    runs: Vec<(u64, u64, RunKind, u64)>,
    compressed: Option<(Vec<u8>, u64)>,
    /// Hashes of the job's pages, for owners hashed in this layer.
    hashes: Vec<(u64, PageHash)>,
}

/// Reads segment `(addr, nr)` of `job` into `buf`.
fn read_seg(job: &Job, plan: &PagePlan, addr: u64, nr: u64, buf: &mut [u8]) -> Result<()> {
    match job.src {
        Source::Vm { pid } => mem::vm_read_all(pid, addr, buf)
            .map_err(|e| Error::sys(pid, format!("read memory at {addr:#x} ({nr} pages)"), e)),
        Source::ProcMem { pid } => {
            let p = format!("/proc/{pid}/mem");
            let f = File::open(&p).at(&p)?;
            f.read_exact_at(buf, addr)
                .map_err(|e| Error::sys(pid, format!("read /proc/{pid}/mem at {addr:#x}"), e))
        }
        Source::Shmem { file } => plan.shmem_files[file]
            .read_exact_at(buf, addr)
            .map_err(|e| Error::sys(0, format!("read shared memory at offset {addr:#x}"), e)),
    }
}

/// Reads every segment of `job` into `buf`, in order (one
/// process_vm_readv for all the segments of process memory).
fn read_job(job: &Job, plan: &PagePlan, buf: &mut [u8]) -> Result<()> {
    if let (Source::Vm { pid }, true) = (job.src, job.segs.len() > 1) {
        let segs: Vec<(u64, usize)> = job
            .segs
            .iter()
            .map(|&(a, n)| (a, (n * PAGE_SIZE) as usize))
            .collect();
        return mem::vm_readv_all(pid, &segs, buf).map_err(|e| {
            Error::sys(
                pid,
                format!(
                    "read {} pages in {} pieces from {:#x}",
                    job.pages(),
                    segs.len(),
                    job.segs[0].0
                ),
                e,
            )
        });
    }
    let mut off = 0usize;
    for &(a, n) in &job.segs {
        let len = (n * PAGE_SIZE) as usize;
        read_seg(job, plan, a, n, &mut buf[off..off + len])?;
        off += len;
    }
    Ok(())
}

/// Reads a job; in a pre-dump (the tree runs) a job that fails is read
/// page by page and the pages that cannot be read any more are marked
/// missing. Returns which pages were read.
fn read_job_tolerant(job: &Job, plan: &PagePlan, buf: &mut [u8]) -> Result<Vec<bool>> {
    match read_job(job, plan, buf) {
        Ok(()) => Ok(vec![true; job.pages() as usize]),
        Err(e) if !plan.tolerate_faults => Err(e),
        Err(_) => {
            let ps = PAGE_SIZE as usize;
            let ok: Vec<bool> = job
                .addrs()
                .zip(buf.chunks_exact_mut(ps))
                .map(|(a, page)| read_seg(job, plan, a, 1, page).is_ok())
                .collect();
            crate::debug!(
                "{} of {} pages from {:#x} vanished while the tree ran",
                ok.iter().filter(|&&x| !x).count(),
                job.pages(),
                job.segs[0].0
            );
            Ok(ok)
        }
    }
}

fn run_job(
    job_idx: usize,
    plan: &PagePlan,
    buf: &mut Vec<u8>,
    cctx: &mut zstd::bulk::Compressor,
) -> Result<JobResult> {
    let job = &plan.jobs[job_idx];
    let len = (job.pages() * PAGE_SIZE) as usize;
    buf.resize(len, 0);
    let ok = read_job_tolerant(job, plan, &mut buf[..len])?;
    let hashed = plan.hashed.contains(&job.owner);
    let parent_hashes = if job.compare {
        plan.compare.get(&job.owner)
    } else {
        None
    };
    let mut runs: Vec<(u64, u64, RunKind, u64)> = Vec::new();
    let mut hashes = Vec::new();
    let mut data: Vec<u8> = Vec::with_capacity(len);
    // Segment starts: a run never spans two segments (they may be two
    // VMAs that touch, and a run lies inside one VMA).
    let mut starts = std::collections::HashSet::new();
    let mut at = 0usize;
    for &(_, n) in &job.segs {
        starts.insert(at);
        at += n as usize;
    }
    for (i, (addr, page)) in job
        .addrs()
        .zip(buf[..len].chunks_exact(PAGE_SIZE as usize))
        .enumerate()
    {
        if !ok[i] {
            continue;
        }
        let first = starts.contains(&i);
        let h = (hashed || parent_hashes.is_some()).then(|| incr::page_hash(page));
        if let (true, Some(h)) = (hashed, h) {
            hashes.push((addr, h));
        }
        let kind = if is_zero(page) {
            RunKind::RUN_ZERO
        } else if parent_hashes.is_some_and(|p| h.is_some() && p.get(addr) == h) {
            RunKind::RUN_PARENT
        } else {
            RunKind::RUN_DATA
        };
        match runs.last_mut() {
            Some(r) if !first && r.2 == kind && r.0 + r.1 * PAGE_SIZE == addr => r.1 += 1,
            _ => runs.push((addr, 1, kind, data.len() as u64)),
        }
        if kind == RunKind::RUN_DATA {
            data.extend_from_slice(page);
        }
    }
    let compressed = if data.is_empty() {
        None
    } else {
        let c = cctx
            .compress(&data)
            .map_err(|e| Error::sys(0, "compress pages", e))?;
        Some((c, data.len() as u64))
    };
    Ok(JobResult {
        job: job_idx,
        runs,
        compressed,
        hashes,
    })
}

/// What [`write_pages`] produced: one pagemap per owner, and the page
/// hashes of the owners hashed in this layer.
pub struct Written {
    pub maps: Vec<Pagemap>,
    pub hashes: Vec<PageHashes>,
}

impl Written {
    /// Pages recorded as unchanged since the parent layer.
    pub fn parent_pages(&self) -> u64 {
        self.maps
            .iter()
            .flat_map(|m| m.runs.iter())
            .filter(|r| r.kind.enum_value() == Ok(RunKind::RUN_PARENT))
            .map(|r| r.nr_pages)
            .sum()
    }
}

/// Reads, compresses and writes every page of `plan` using all cores.
pub fn write_pages(plan: &PagePlan, writer: &mut PageStoreWriter, level: i32) -> Result<Written> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(8);
    let next = AtomicUsize::new(0);
    let mut maps: Vec<Pagemap> = plan
        .owners
        .iter()
        .map(|o| {
            let mut p = Pagemap::new();
            p.owner = o.clone();
            p
        })
        .collect();
    let mut hashes: HashMap<usize, Vec<(u64, PageHash)>> = HashMap::new();
    let mut first_err: Option<Error> = None;
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::sync_channel::<Result<JobResult>>(workers * 2);
        for _ in 0..workers {
            let tx = tx.clone();
            let next = &next;
            s.spawn(move || {
                let mut buf = Vec::new();
                let mut cctx = match zstd::bulk::Compressor::new(level) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.send(Err(Error::sys(0, "zstd", e)));
                        return;
                    }
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= plan.jobs.len() {
                        return;
                    }
                    let r = run_job(i, plan, &mut buf, &mut cctx);
                    let failed = r.is_err();
                    if tx.send(r).is_err() || failed {
                        // Stop the others early.
                        next.store(usize::MAX / 2, Ordering::Relaxed);
                        return;
                    }
                }
            });
        }
        drop(tx);
        for r in rx {
            match r {
                Err(e) => {
                    first_err.get_or_insert(e);
                    next.store(usize::MAX / 2, Ordering::Relaxed);
                }
                Ok(res) if first_err.is_none() => {
                    let chunk = match &res.compressed {
                        Some((c, raw)) => match writer.append(c, *raw) {
                            Ok(i) => i,
                            Err(e) => {
                                first_err = Some(e);
                                next.store(usize::MAX / 2, Ordering::Relaxed);
                                continue;
                            }
                        },
                        None => 0,
                    };
                    let owner = plan.jobs[res.job].owner;
                    for (addr, nr, kind, off) in res.runs {
                        let mut run = PageRun::new();
                        run.addr = addr;
                        run.nr_pages = nr;
                        run.kind = kind.into();
                        if kind == RunKind::RUN_DATA {
                            run.chunk = chunk;
                            run.chunk_offset = off;
                        }
                        maps[owner].runs.push(run);
                    }
                    if !res.hashes.is_empty() {
                        hashes.entry(owner).or_default().extend(res.hashes);
                    }
                }
                Ok(_) => {}
            }
        }
    });
    if let Some(e) = first_err {
        return Err(e);
    }
    for &(child, parent, start, nr) in &plan.inherit {
        let end = start + nr * PAGE_SIZE;
        let copies: Vec<PageRun> = maps[parent]
            .runs
            .iter()
            .filter(|r| r.addr < end && r.addr + r.nr_pages * PAGE_SIZE > start)
            .filter(|r| r.kind.enum_value() != Ok(RunKind::RUN_PARENT))
            .map(|r| {
                let s = r.addr.max(start);
                let e = (r.addr + r.nr_pages * PAGE_SIZE).min(end);
                let mut c = r.clone();
                c.addr = s;
                c.nr_pages = (e - s) / PAGE_SIZE;
                if r.kind.enum_value() == Ok(RunKind::RUN_DATA) {
                    c.chunk_offset = r.chunk_offset + (s - r.addr);
                }
                c
            })
            .collect();
        maps[child].runs.extend(copies);
    }
    for &(owner, addr, nr) in &plan.parent_runs {
        let mut run = PageRun::new();
        run.addr = addr;
        run.nr_pages = nr;
        run.kind = RunKind::RUN_PARENT.into();
        maps[owner].runs.push(run);
        if plan.hashed.contains(&owner) {
            if let Some(ph) = plan.compare.get(&owner) {
                let v = hashes.entry(owner).or_default();
                for i in 0..nr {
                    let a = addr + i * PAGE_SIZE;
                    if let Some(h) = ph.get(a) {
                        v.push((a, h));
                    }
                }
            }
        }
    }
    for m in &mut maps {
        m.runs.sort_by_key(|r| r.addr);
    }
    let mut out_hashes: Vec<(usize, PageHashes)> = hashes
        .into_iter()
        .map(|(o, v)| (o, Hashes::from_pages(v).to_proto(&plan.owners[o])))
        .collect();
    out_hashes.sort_by_key(|h| h.0);
    Ok(Written {
        maps,
        hashes: out_hashes.into_iter().map(|h| h.1).collect(),
    })
}

// ---------------------------------------------------------------- restore

/// Checks an mm image before anything is created from it.
pub fn validate_mm(mm: &MmEntry, path: &std::path::Path) -> Result<()> {
    let mut last_end = 0u64;
    let mut vmas: Vec<&Vma> = mm.vmas.iter().collect();
    vmas.sort_by_key(|v| v.start);
    for v in vmas {
        let ok = v.start < v.end
            && v.start % PAGE_SIZE == 0
            && v.end % PAGE_SIZE == 0
            && v.end <= TASK_SIZE
            && v.start >= last_end
            && v.pgoff % PAGE_SIZE == 0;
        if !ok {
            return Err(Error::image(
                path,
                format!("bad VMA {:#x}-{:#x}", v.start, v.end),
            ));
        }
        last_end = v.end;
    }
    Ok(())
}

/// Checks that every run of `pm` lies inside a VMA of the right kind and
/// inside its chunk.
pub fn validate_pagemap(
    pm: &Pagemap,
    mm: &MmEntry,
    store: &PageStoreReader,
    path: &std::path::Path,
) -> Result<()> {
    let shared_kind = if pm.owner.starts_with("sysv:") {
        VmaKind::VMA_SYSV_SHM
    } else {
        VmaKind::VMA_ANON_SHARED
    };
    let shmid = pm
        .owner
        .strip_prefix("shmem:")
        .or_else(|| pm.owner.strip_prefix("sysv:"))
        .and_then(|s| s.parse::<u64>().ok());
    for r in &pm.runs {
        let len = r
            .nr_pages
            .checked_mul(PAGE_SIZE)
            .ok_or_else(|| Error::image(path, "run too long"))?;
        let end = r
            .addr
            .checked_add(len)
            .ok_or_else(|| Error::image(path, "run wraps"))?;
        let inside = match shmid {
            None => mm.vmas.iter().any(|v| v.start <= r.addr && end <= v.end),
            Some(id) => mm
                .vmas
                .iter()
                .any(|v| v.shmid == id && v.kind.enum_value() == Ok(shared_kind)),
        };
        if !inside || r.addr % PAGE_SIZE != 0 {
            return Err(Error::image(
                path,
                format!(
                    "run at {:#x} ({} pages) is outside every VMA",
                    r.addr, r.nr_pages
                ),
            ));
        }
        if r.kind.enum_value() == Ok(RunKind::RUN_DATA) {
            let c = store.store.chunks.get(r.chunk as usize).ok_or_else(|| {
                Error::image(path, format!("run at {:#x}: no chunk {}", r.addr, r.chunk))
            })?;
            if r.chunk_offset
                .checked_add(len)
                .is_none_or(|e| e > c.raw_len)
            {
                return Err(Error::image(
                    path,
                    format!("run at {:#x} overruns chunk {}", r.addr, r.chunk),
                ));
            }
        }
    }
    Ok(())
}

const MAP_FIXED_NOREPLACE: u64 = 0x100000;
const ARCH_MAP_VDSO_64: u64 = 0x2003;

/// Shared anonymous memory objects of the whole tree during a restore.
#[derive(Default)]
pub struct ShmObjects {
    /// shmid -> size in bytes (largest extent any process maps).
    pub sizes: HashMap<u64, u64>,
    /// shmid -> (vessel that created it, its fd there, kept open until
    /// every process has mapped it).
    pub owners: HashMap<u64, (i32, u64)>,
    /// System V segments whose contents have been written already.
    pub sysv_filled: std::collections::HashSet<u64>,
}

impl ShmObjects {
    pub fn new<'a>(mms: impl Iterator<Item = &'a MmEntry>) -> ShmObjects {
        let mut sizes: HashMap<u64, u64> = HashMap::new();
        for v in mms.flat_map(|m| m.vmas.iter()) {
            if v.kind.enum_value() == Ok(VmaKind::VMA_ANON_SHARED) {
                let e = sizes.entry(v.shmid).or_default();
                *e = (*e).max(v.pgoff + (v.end - v.start));
            }
        }
        ShmObjects {
            sizes,
            owners: HashMap::new(),
            sysv_filled: Default::default(),
        }
    }
}

/// Attaches a System V segment (which exists by now, see
/// `kinds::sysv`) with an injected shmat at the VMA's address. A segment
/// split into several VMAs is attached once, at the VMA of offset 0.
fn attach_sysv(
    agent: &mut Agent,
    mm: &MmEntry,
    v: &Vma,
    shm: &mut ShmObjects,
    local: &mut HashMap<String, File>,
) -> Result<()> {
    let pid = agent.pid;
    let same: Vec<&Vma> = mm
        .vmas
        .iter()
        .filter(|x| x.shmid == v.shmid && x.kind.enum_value() == Ok(VmaKind::VMA_SYSV_SHM))
        .collect();
    if v.pgoff != 0 {
        if !same.iter().any(|x| x.pgoff == 0) {
            return Err(Error::Restore(format!(
                "pid {pid}: System V segment {} is attached only in part at {:#x}: not supported",
                v.shmid, v.start
            )));
        }
        return Ok(());
    }
    const SHM_RDONLY: u64 = 0o10000;
    const SHM_EXEC: u64 = 0o100000;
    let mut flags = SHM_RDONLY;
    if same.iter().any(|x| x.prot & libc::PROT_WRITE as u32 != 0) {
        flags &= !SHM_RDONLY;
    }
    if same.iter().any(|x| x.prot & libc::PROT_EXEC as u32 != 0) {
        flags |= SHM_EXEC;
    }
    let got = agent.call(
        &format!("shmat({})", v.shmid),
        libc::SYS_shmat,
        &[v.shmid, v.start, flags],
    )?;
    if got != v.start {
        return Err(Error::Restore(format!(
            "pid {pid}: shmat of segment {} landed at {got:#x}",
            v.shmid
        )));
    }
    if shm.sysv_filled.insert(v.shmid) {
        let m = procfs::read_maps(pid)?
            .into_iter()
            .find(|m| m.start == v.start)
            .ok_or_else(|| {
                Error::Restore(format!(
                    "pid {pid}: segment {} not mapped after shmat",
                    v.shmid
                ))
            })?;
        let path = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .at(&path)?;
        local.insert(format!("sysv:{}", v.shmid), f);
    }
    Ok(())
}

/// Creates every VMA of `mm` in the vessel (which has nothing mapped but
/// the scratch area) and the vDSO. `file_path` gives the path of a file id.
/// Returns local fds of the shared objects, by shmid, for page writing.
pub fn restore_vmas(
    agent: &mut Agent,
    mm: &MmEntry,
    file_path: &dyn Fn(u32) -> Option<String>,
    shm_objects: &mut ShmObjects,
) -> Result<HashMap<String, File>> {
    let pid = agent.pid;
    // Shared anonymous objects: each is created once, in the first process
    // that maps it, and kept open there; the others fetch the same object
    // with pidfd_getfd.
    let mut ids: Vec<u64> = mm
        .vmas
        .iter()
        .filter(|v| v.kind.enum_value() == Ok(VmaKind::VMA_ANON_SHARED))
        .map(|v| v.shmid)
        .collect();
    ids.sort();
    ids.dedup();
    let mut shm_fds: HashMap<u64, u64> = HashMap::new();
    let mut to_close: Vec<u64> = Vec::new();
    let mut shm_local: HashMap<String, File> = HashMap::new();
    for id in ids {
        if let Some(&(owner, ofd)) = shm_objects.owners.get(&id) {
            let fd = agent.fetch_fd(owner, ofd)?;
            shm_fds.insert(id, fd);
            to_close.push(fd);
            continue;
        }
        let size = shm_objects.sizes.get(&id).copied().unwrap_or(0);
        if size == 0 {
            return Err(Error::Restore(format!(
                "pid {pid}: shared memory object {id} has no size"
            )));
        }
        let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let addr = agent.call(
            "mmap shared",
            libc::SYS_mmap,
            &[
                0,
                size,
                rw,
                (libc::MAP_SHARED | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
        )?;
        let path = format!("/proc/self/map_files/{:x}-{:x}", addr, addr + size);
        let fd = agent.open(&path, libc::O_RDWR | libc::O_CLOEXEC)?;
        agent.call("munmap", libc::SYS_munmap, &[addr, size])?;
        let local_path = format!("/proc/{pid}/fd/{fd}");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&local_path)
            .at(&local_path)?;
        shm_fds.insert(id, fd);
        shm_local.insert(format!("shmem:{id}"), f);
        shm_objects.owners.insert(id, (pid, fd));
    }
    let mut file_fds: HashMap<(u32, bool), u64> = HashMap::new();
    for v in &mm.vmas {
        let kind = v
            .kind
            .enum_value()
            .map_err(|k| Error::Restore(format!("unknown VMA kind {k}")))?;
        let len = v.end - v.start;
        let has = |f: &str| v.vm_flags.iter().any(|x| x == f);
        let rw = (libc::PROT_READ | libc::PROT_WRITE) as u32;
        let (prot, flags, fd, off) = match kind {
            VmaKind::VMA_VDSO
            | VmaKind::VMA_VVAR
            | VmaKind::VMA_VVAR_VCLOCK
            | VmaKind::VMA_VSYSCALL => continue,
            VmaKind::VMA_ANON_PRIVATE => {
                let mut fl = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
                if has("gd") {
                    fl |= libc::MAP_GROWSDOWN;
                }
                if has("nr") {
                    fl |= libc::MAP_NORESERVE;
                }
                (v.prot | rw, fl, u64::MAX, 0)
            }
            VmaKind::VMA_ANON_SHARED => (v.prot | rw, libc::MAP_SHARED, shm_fds[&v.shmid], v.pgoff),
            VmaKind::VMA_FILE_PRIVATE | VmaKind::VMA_FILE_SHARED => {
                let shared = kind == VmaKind::VMA_FILE_SHARED;
                let writable = shared && has("mw");
                let fd = match file_fds.get(&(v.file_id, writable)) {
                    Some(&fd) => fd,
                    None => {
                        let path = file_path(v.file_id).ok_or_else(|| {
                            Error::Restore(format!("VMA {:#x}: no file {}", v.start, v.file_id))
                        })?;
                        let mode = if writable {
                            libc::O_RDWR
                        } else {
                            libc::O_RDONLY
                        };
                        let fd = agent.open(&path, mode | libc::O_CLOEXEC)?;
                        file_fds.insert((v.file_id, writable), fd);
                        fd
                    }
                };
                if shared {
                    (v.prot, libc::MAP_SHARED, fd, v.pgoff)
                } else {
                    (v.prot | rw, libc::MAP_PRIVATE, fd, v.pgoff)
                }
            }
            VmaKind::VMA_SYSV_SHM => {
                attach_sysv(agent, mm, v, shm_objects, &mut shm_local)?;
                continue;
            }
        };
        let got = agent
            .remote
            .syscall(
                libc::SYS_mmap,
                &[
                    v.start,
                    len,
                    prot as u64,
                    (flags | libc::MAP_FIXED) as u64,
                    fd,
                    off,
                ],
            )
            .map_err(|e| {
                Error::Restore(format!(
                    "pid {pid}: mmap {:#x}-{:#x} ({}): {e}",
                    v.start, v.end, v.name
                ))
            })?;
        if got != v.start {
            return Err(Error::Restore(format!(
                "pid {pid}: mmap {:#x} landed at {got:#x}",
                v.start
            )));
        }
    }
    for fd in file_fds.values().chain(to_close.iter()) {
        agent.call("close", libc::SYS_close, &[*fd])?;
    }
    // The vDSO: [vvar], [vvar_vclock] and [vdso] move together; the
    // argument is the start of the first of them.
    let special: Vec<&Vma> = mm
        .vmas
        .iter()
        .filter(|v| {
            matches!(
                v.kind.enum_value(),
                Ok(VmaKind::VMA_VDSO | VmaKind::VMA_VVAR | VmaKind::VMA_VVAR_VCLOCK)
            )
        })
        .collect();
    if let Some(base) = special.iter().map(|v| v.start).min() {
        agent.call(
            "arch_prctl(ARCH_MAP_VDSO_64)",
            libc::SYS_arch_prctl,
            &[ARCH_MAP_VDSO_64, base],
        )?;
        let now = procfs::read_maps(pid)?;
        for v in &special {
            if !now
                .iter()
                .any(|m| m.start == v.start && m.end == v.end && m.path == v.name)
            {
                return Err(Error::Restore(format!(
                    "pid {pid}: {} could not be placed at {:#x}-{:#x}: the vDSO layout of this kernel differs from the dump's",
                    v.name, v.start, v.end
                )));
            }
        }
    }
    Ok(shm_local)
}

/// Writes all page runs into the vessel, decompressing chunks on every
/// core. Zero runs are written only where the mapping is not fresh
/// anonymous memory.
pub fn restore_pages(
    pid: i32,
    mm: &MmEntry,
    maps: &[(&str, &[Resolved])],
    stores: &[&PageStoreReader],
    shm: &HashMap<String, File>,
) -> Result<()> {
    enum Dest<'a> {
        Vm(u64),
        File(&'a File, u64),
    }
    // Group data runs by (layer, chunk).
    type ByChunk<'a> = BTreeMap<(usize, u32), Vec<(Dest<'a>, u64, u64)>>;
    let mut by_chunk: ByChunk = BTreeMap::new();
    let zero_page = vec![0u8; PAGE_SIZE as usize];
    for (owner, runs) in maps {
        let private = owner.starts_with("pid:");
        for r in runs.iter() {
            let dest = if private {
                Dest::Vm(r.addr)
            } else {
                // Shared objects are filled once, by their creator.
                match shm.get(*owner) {
                    Some(f) => Dest::File(f, r.addr),
                    None => continue,
                }
            };
            match r.data {
                Some((chunk, off)) => by_chunk
                    .entry((r.layer, chunk))
                    .or_default()
                    .push((dest, off, r.nr_pages)),
                None => {
                    let fresh = match dest {
                        Dest::File(..) => true,
                        Dest::Vm(a) => mm.vmas.iter().any(|v| {
                            v.start <= a
                                && a < v.end
                                && v.kind.enum_value() == Ok(VmaKind::VMA_ANON_PRIVATE)
                        }),
                    };
                    if !fresh {
                        if let Dest::Vm(a) = dest {
                            for i in 0..r.nr_pages {
                                mem::vm_write_all(pid, a + i * PAGE_SIZE, &zero_page).map_err(
                                    |e| {
                                        Error::sys(
                                            pid,
                                            format!("write zero page at {:#x}", a + i * PAGE_SIZE),
                                            e,
                                        )
                                    },
                                )?;
                            }
                        }
                    }
                }
            }
        }
    }
    type ChunkWork<'a> = ((usize, u32), Vec<(Dest<'a>, u64, u64)>);
    let work: Vec<ChunkWork> = by_chunk.into_iter().collect();
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(8);
    let errors: std::sync::Mutex<Option<Error>> = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(((layer, chunk), runs)) = work.get(i) else {
                    return;
                };
                let r = (|| -> Result<()> {
                    let store = stores.get(*layer).ok_or_else(|| {
                        Error::Restore(format!("pid {pid}: no layer {layer} in the chain"))
                    })?;
                    let raw = store.read_chunk(*chunk)?;
                    for (dest, off, nr) in runs {
                        let bytes = &raw[*off as usize..(*off + nr * PAGE_SIZE) as usize];
                        match dest {
                            Dest::Vm(a) => mem::vm_write_all(pid, *a, bytes).map_err(|e| {
                                Error::sys(pid, format!("write {nr} pages at {a:#x}"), e)
                            })?,
                            Dest::File(f, o) => f.write_all_at(bytes, *o).map_err(|e| {
                                Error::sys(pid, format!("write shared memory at offset {o:#x}"), e)
                            })?,
                        }
                    }
                    Ok(())
                })();
                if let Err(e) = r {
                    if let Ok(mut g) = errors.lock() {
                        g.get_or_insert(e);
                    }
                    next.store(usize::MAX / 2, Ordering::Relaxed);
                    return;
                }
            });
        }
    });
    match errors.into_inner() {
        Ok(Some(e)) => Err(e),
        _ => Ok(()),
    }
}

/// Final protections and madvise flags, after the pages are in.
pub fn finish_vmas(agent: &mut Agent, mm: &MmEntry) -> Result<()> {
    for v in &mm.vmas {
        let kind = v.kind.enum_value().ok();
        if matches!(
            kind,
            Some(
                VmaKind::VMA_VDSO
                    | VmaKind::VMA_VVAR
                    | VmaKind::VMA_VVAR_VCLOCK
                    | VmaKind::VMA_VSYSCALL
            )
        ) {
            continue;
        }
        let len = v.end - v.start;
        if kind != Some(VmaKind::VMA_FILE_SHARED) {
            agent.call(
                "mprotect",
                libc::SYS_mprotect,
                &[v.start, len, v.prot as u64],
            )?;
        }
        for (flag, advice) in [
            ("dd", libc::MADV_DONTDUMP),
            ("dc", libc::MADV_DONTFORK),
            ("hg", libc::MADV_HUGEPAGE),
            ("nh", libc::MADV_NOHUGEPAGE),
            ("mg", libc::MADV_MERGEABLE),
        ] {
            if v.vm_flags.iter().any(|f| f == flag) {
                // Best effort: a kernel without THP or KSM refuses some.
                let _ = agent
                    .remote
                    .syscall(libc::SYS_madvise, &[v.start, len, advice as u64]);
            }
        }
    }
    Ok(())
}

/// struct prctl_mm_map.
pub fn set_mm_map(agent: &mut Agent, mm: &MmEntry, exe_fd: u64) -> Result<()> {
    const PR_SET_MM: u64 = 35;
    const PR_SET_MM_MAP: u64 = 14;
    let auxv: Vec<u8> = mm.auxv.iter().flat_map(|w| w.to_ne_bytes()).collect();
    if auxv.len() > 512 * 8 {
        return Err(Error::Restore("auxv too long".into()));
    }
    let auxv_addr = agent.put(4096, &auxv)?;
    let mut b = Vec::with_capacity(104);
    for w in [
        mm.start_code,
        mm.end_code,
        mm.start_data,
        mm.end_data,
        mm.start_brk,
        mm.brk,
        mm.start_stack,
        mm.arg_start,
        mm.arg_end,
        mm.env_start,
        mm.env_end,
        auxv_addr,
    ] {
        b.extend_from_slice(&w.to_ne_bytes());
    }
    b.extend_from_slice(&(auxv.len() as u32).to_ne_bytes());
    b.extend_from_slice(&(exe_fd as u32).to_ne_bytes());
    let a = agent.put(0, &b)?;
    agent.call(
        "prctl(PR_SET_MM_MAP)",
        libc::SYS_prctl,
        &[PR_SET_MM, PR_SET_MM_MAP, a, b.len() as u64, 0],
    )?;
    Ok(())
}

/// Used by the restorer to pick a scratch address that collides with
/// nothing in the image nor in the vessel.
pub fn free_area(size: u64, taken: &[(u64, u64)]) -> Option<u64> {
    let mut cand = 0x7e00_0000_0000u64;
    while cand > 0x1_0000_0000 {
        if !taken.iter().any(|&(s, e)| cand < e && cand + size > s) {
            return Some(cand);
        }
        cand -= 1 << 30;
    }
    None
}

pub const FIXED_NOREPLACE: u64 = MAP_FIXED_NOREPLACE;

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

    #[test]
    fn zero_detection() {
        let mut p = vec![0u8; 4096];
        assert!(is_zero(&p));
        p[4095] = 1;
        assert!(!is_zero(&p));
        p[4095] = 0;
        p[0] = 1;
        assert!(!is_zero(&p));
    }

    #[test]
    fn free_area_avoids_taken() {
        let top = 0x7e00_0000_0000u64;
        let a = free_area(0x10000, &[(top, top + 0x1000)]).unwrap();
        assert!(a + 0x10000 <= top || a >= top + 0x1000);
    }
}
