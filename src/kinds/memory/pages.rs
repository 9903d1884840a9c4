//! Page I/O: reading the pages a [`PagePlan`] selected (process_vm_readv,
//! /proc/PID/mem, or the shmem file), on every core, compressing each job
//! into one zstd frame; and, at restore, writing them into the vessel.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use super::plan::{Job, PagePlan, Source};
use crate::error::{Error, IoContext, Result};
use crate::image::chain::Resolved;
use crate::image::pages::{PageStoreReader, PageStoreWriter};
use crate::image::proto::{ChunkCodec, MmEntry, PageHashes, PageRun, Pagemap, RunKind};
use crate::kinds::incr::{self, Hashes, PageHash};
use crate::sys::{mem, PAGE_SIZE};

fn is_zero(page: &[u8]) -> bool {
    page.chunks_exact(8)
        .all(|w| w.try_into().map(u64::from_ne_bytes).unwrap_or(1) == 0)
        && page.chunks_exact(8).remainder().iter().all(|&b| b == 0)
}

struct JobResult {
    job: usize,
    /// (addr, pages, kind, byte offset in the chunk)
    runs: Vec<(u64, u64, RunKind, u64)>,
    /// The chunk that holds the job's data pages, already written.
    chunk: Option<u32>,
    /// Hashes of the job's pages, for owners hashed in this layer.
    hashes: Vec<(u64, PageHash)>,
}

/// What one worker keeps from job to job: its buffers and compressors.
struct Worker {
    /// The job's pages, read straight into it; data pages are then moved
    /// to its front in place (nothing to move when every page is data).
    buf: Vec<u8>,
    /// The zstd frame of a compressed chunk, and the sample's.
    out: Vec<u8>,
    sample: Vec<u8>,
    cctx: zstd::bulk::Compressor<'static>,
    /// Level 1, for the sample that decides whether a chunk is compressed.
    probe: zstd::bulk::Compressor<'static>,
}

/// Pieces of a chunk compressed to decide whether compressing it pays.
const SAMPLE_PIECES: usize = 4;
const SAMPLE_PIECE: usize = 16 << 10;

/// Whether `data` is worth compressing: a sample of it (SAMPLE_PIECES
/// pieces spread over it, 64 KiB of a 4 MiB chunk) compressed at level 1
/// shrinks by at least an eighth. Incompressible memory (encrypted,
/// already compressed, random) then costs one cheap probe per chunk and is
/// stored raw. Small chunks are always tried whole.
fn worth_compressing(
    probe: &mut zstd::bulk::Compressor<'static>,
    sample: &mut Vec<u8>,
    out: &mut Vec<u8>,
    data: &[u8],
) -> bool {
    if data.len() <= 2 * SAMPLE_PIECES * SAMPLE_PIECE {
        return true;
    }
    sample.clear();
    let step = (data.len() - SAMPLE_PIECE) / (SAMPLE_PIECES - 1);
    for k in 0..SAMPLE_PIECES {
        let at = k * step;
        sample.extend_from_slice(&data[at..at + SAMPLE_PIECE]);
    }
    out.clear();
    out.reserve(zstd::zstd_safe::compress_bound(sample.len()));
    match probe.compress_to_buffer(&sample[..], out) {
        Ok(n) => n + n / 7 < sample.len(),
        Err(_) => true,
    }
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
        Source::Shmem { file } => read_shmem(&plan.shmem_files[file], addr, buf)
            .map_err(|e| Error::sys(0, format!("read shared memory at offset {addr:#x}"), e)),
    }
}

/// Reads `buf.len()` bytes of a shmem object at `off`. The bytes past its
/// size (a System V segment of 56 bytes fills only part of its page) are
/// zero.
fn read_shmem(f: &File, off: u64, buf: &mut [u8]) -> std::io::Result<()> {
    let size = f.metadata()?.len();
    let have = usize::try_from(size.saturating_sub(off))
        .unwrap_or(usize::MAX)
        .min(buf.len());
    let (data, tail) = buf.split_at_mut(have);
    f.read_exact_at(data, off)?;
    tail.fill(0);
    Ok(())
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
    w: &mut Worker,
    writer: &PageStoreWriter,
    bg: Option<&super::bgsnap::Snapshot>,
) -> Result<JobResult> {
    let job = &plan.jobs[job_idx];
    let ps = PAGE_SIZE as usize;
    let len = job.pages() as usize * ps;
    // Same length as the last job's (all but the last of an owner): no-op.
    w.buf.resize(len, 0);
    // Planned without the pagemap: a page shared copy-on-write is read
    // without a pin (Source::ProcMem), as the plan does for the others.
    let shared;
    let job = match job.src {
        Source::Vm { pid } if job.cow_unknown && super::bgsnap::shares_pages(pid, &job.segs) => {
            shared = Job {
                src: Source::ProcMem { pid },
                ..job.clone()
            };
            &shared
        }
        _ => job,
    };
    let ok = match (bg, job.src) {
        // Background snapshot: the tree runs; pages written since the
        // freeze come from the snapshot's side buffer.
        (Some(snap), Source::Vm { pid } | Source::ProcMem { pid }) => {
            let buf = &mut w.buf[..len];
            let mut ok = match read_job(job, plan, buf) {
                Ok(()) => vec![true; job.pages() as usize],
                Err(_) => job
                    .addrs()
                    .zip(buf.chunks_exact_mut(ps))
                    .map(|(a, page)| read_seg(job, plan, a, 1, page).is_ok())
                    .collect(),
            };
            snap.after_read(job_idx, pid, &job.segs, buf, &mut ok)?;
            ok
        }
        _ => read_job_tolerant(job, plan, &mut w.buf[..len])?,
    };
    let hashed = plan.hashed.contains(&job.owner);
    let parent_hashes = if job.compare {
        plan.compare.get(&job.owner)
    } else {
        None
    };
    let mut runs: Vec<(u64, u64, RunKind, u64)> = Vec::new();
    let mut hashes = Vec::new();
    // Bytes of data pages gathered at the front of `buf`.
    let mut kept = 0usize;
    // Segment starts: a run never spans two segments (they may be two
    // VMAs that touch, and a run lies inside one VMA).
    let mut starts = std::collections::HashSet::new();
    let mut at = 0usize;
    for &(_, n) in &job.segs {
        starts.insert(at);
        at += n as usize;
    }
    for (i, addr) in job.addrs().enumerate() {
        if !ok[i] {
            continue;
        }
        let from = i * ps;
        let kind = {
            let page = &w.buf[from..from + ps];
            let h = (hashed || parent_hashes.is_some()).then(|| incr::page_hash(page));
            if let (true, Some(h)) = (hashed, h) {
                hashes.push((addr, h));
            }
            if is_zero(page) {
                RunKind::RUN_ZERO
            } else if parent_hashes.is_some_and(|p| h.is_some() && p.get(addr) == h) {
                RunKind::RUN_PARENT
            } else {
                RunKind::RUN_DATA
            }
        };
        let first = starts.contains(&i);
        match runs.last_mut() {
            Some(r) if !first && r.2 == kind && r.0 + r.1 * PAGE_SIZE == addr => r.1 += 1,
            _ => runs.push((addr, 1, kind, kept as u64)),
        }
        if kind == RunKind::RUN_DATA {
            if kept != from {
                w.buf.copy_within(from..from + ps, kept);
            }
            kept += ps;
        }
    }
    let chunk = if kept == 0 {
        None
    } else {
        Some(store_chunk(w, kept, writer)?)
    };
    Ok(JobResult {
        job: job_idx,
        runs,
        chunk,
        hashes,
    })
}

/// Writes the first `kept` bytes of the worker's buffer as one chunk:
/// compressed if a sample says it pays and the frame saves at least
/// 1/32, raw otherwise. The crc is computed here, on the worker.
fn store_chunk(w: &mut Worker, kept: usize, writer: &PageStoreWriter) -> Result<u32> {
    let Worker {
        buf,
        out,
        sample,
        cctx,
        probe,
    } = w;
    let data = &buf[..kept];
    if worth_compressing(probe, sample, out, data) {
        out.clear();
        out.reserve(zstd::zstd_safe::compress_bound(kept));
        let n = cctx
            .compress_to_buffer(data, out)
            .map_err(|e| Error::sys(0, "compress pages", e))?;
        if n + n / 31 < kept {
            let crc = crc32fast::hash(&out[..n]);
            return writer.append_at(&out[..n], kept as u64, ChunkCodec::CODEC_ZSTD, crc);
        }
    }
    writer.append_at(
        data,
        kept as u64,
        ChunkCodec::CODEC_RAW,
        crc32fast::hash(data),
    )
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

/// Reads, compresses and writes every page of `plan` using all cores:
/// each worker reads a job's pages straight into its buffer, stores the
/// chunk raw or compressed (`store_chunk`) and writes it at its place in
/// pages.img itself; this thread only collects the page runs.
pub fn write_pages(plan: &PagePlan, writer: &mut PageStoreWriter, level: i32) -> Result<Written> {
    let part = copy_jobs(plan, writer, level, Phase::All)?;
    Ok(finish_written(plan, part))
}

/// Which jobs of a plan [`copy_jobs`] copies: all of them, or one side
/// of a background snapshot ([`super::bgsnap`]).
#[derive(Clone, Copy)]
pub enum Phase<'a> {
    All,
    /// The jobs the snapshot does not protect (the tree is frozen).
    Frozen(&'a super::bgsnap::Snapshot),
    /// The protected jobs, while the tree runs.
    Background(&'a super::bgsnap::Snapshot),
}

impl Phase<'_> {
    fn takes(&self, job: usize) -> bool {
        match self {
            Phase::All => true,
            Phase::Frozen(s) => !s.is_bg(job),
            Phase::Background(s) => s.is_bg(job),
        }
    }
}

/// The page runs and hashes of some jobs of a plan, before
/// [`finish_written`] adds what the plan knows without reading.
pub struct Copied {
    maps: Vec<Pagemap>,
    hashes: HashMap<usize, Vec<(u64, PageHash)>>,
}

impl Copied {
    /// Adds the runs and hashes of `other` (other jobs of the same plan).
    pub fn merge(&mut self, other: Copied) {
        for (m, o) in self.maps.iter_mut().zip(other.maps) {
            m.runs.extend(o.runs);
        }
        for (k, v) in other.hashes {
            self.hashes.entry(k).or_default().extend(v);
        }
    }
}

/// Reads, compresses and writes the jobs of `plan` that `phase` takes.
pub fn copy_jobs(
    plan: &PagePlan,
    writer: &PageStoreWriter,
    level: i32,
    phase: Phase<'_>,
) -> Result<Copied> {
    let mine: Vec<usize> = (0..plan.jobs.len()).filter(|&i| phase.takes(i)).collect();
    let bg = match phase {
        Phase::Background(s) => Some(s),
        _ => None,
    };
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
            let (next, mine) = (&next, &mine);
            s.spawn(move || {
                let mk = |l| zstd::bulk::Compressor::new(l).map_err(|e| Error::sys(0, "zstd", e));
                let mut w = match (mk(level), mk(1)) {
                    (Ok(cctx), Ok(probe)) => Worker {
                        buf: Vec::new(),
                        out: Vec::new(),
                        sample: Vec::new(),
                        cctx,
                        probe,
                    },
                    (Err(e), _) | (_, Err(e)) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = mine.get(k) else {
                        return;
                    };
                    let r = run_job(i, plan, &mut w, writer, bg);
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
                    crate::progress::pages_inc(plan.jobs[res.job].pages() * PAGE_SIZE);
                    let chunk = res.chunk.unwrap_or(0);
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
    Ok(Copied { maps, hashes })
}

/// The [`Written`] of a plan whose every job was copied (`c`): adds the
/// runs shared with a parent process and those in the parent layer.
pub fn finish_written(plan: &PagePlan, c: Copied) -> Written {
    let Copied {
        mut maps,
        mut hashes,
    } = c;
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
    Written {
        maps,
        hashes: out_hashes.into_iter().map(|h| h.1).collect(),
    }
}

/// Writes all page runs into the vessel `agent` runs in: raw chunks read
/// in place by the vessel, the others through cairn's workers (see
/// `memory::pagein`). Zero runs are written only where the mapping is not
/// fresh anonymous memory.
pub fn restore_pages(
    agent: &mut dyn crate::remote::Calls,
    mm: &MmEntry,
    maps: &[(&str, &[Resolved])],
    stores: &[&PageStoreReader],
    shm: &HashMap<String, File>,
) -> Result<super::pagein::PageStats> {
    super::pagein::restore_pages(agent, mm, maps, stores, shm)
}

/// Writes `bytes` into a shmem object at `off`, up to its size: the
/// object keeps its size (the tail of a System V segment's last page is
/// beyond it, and zero).
pub(super) fn write_shmem(f: &File, off: u64, bytes: &[u8]) -> std::io::Result<()> {
    let size = f.metadata()?.len();
    let have = usize::try_from(size.saturating_sub(off))
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    f.write_all_at(&bytes[..have], off)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 56-byte object is read as one page, zero past its size, and
    /// written back without growing.
    #[test]
    fn shmem_objects_keep_their_odd_size() {
        let mut f = tempfile_in_tmp();
        std::io::Write::write_all(&mut f, &[7u8; 56]).unwrap();
        let mut page = vec![1u8; 4096];
        read_shmem(&f, 0, &mut page).unwrap();
        assert!(page[..56].iter().all(|&b| b == 7));
        assert!(page[56..].iter().all(|&b| b == 0));
        page[..56].fill(9);
        write_shmem(&f, 0, &page).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 56);
        let mut back = [0u8; 56];
        f.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(back, [9u8; 56]);
    }

    fn tempfile_in_tmp() -> File {
        let dir = std::env::temp_dir();
        for i in 0..100u32 {
            let p = dir.join(format!("cairn-shmem-test-{}-{i}", std::process::id()));
            let r = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&p);
            if let Ok(f) = r {
                let _ = std::fs::remove_file(&p);
                return f;
            }
        }
        panic!("no temporary file");
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
}
