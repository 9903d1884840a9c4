//! Page contents into a vessel at restore (issue 15): each page is
//! faulted in once, in the vessel, and no buffer of cairn is faulted in
//! per page.
//!
//! - A raw chunk whose pages all go to the vessel's own memory and cover
//!   the whole chunk is read **in place**: the vessel itself runs preadv
//!   from pages.img (an fd cairn opened and hands it with pidfd_getfd,
//!   closed again before anything else runs there) straight into its
//!   pages, several file-contiguous chunks per call. A worker then reads
//!   the chunk back from the vessel (process_vm_readv into a reused
//!   buffer) and checks its crc: what landed is what was dumped.
//! - Any other chunk (zstd, shared memory, a chunk only part of which
//!   this process needs) goes **through cairn**: a worker reads it into
//!   its reused buffers, checks the crc, decompresses, and writes all of
//!   its pieces with one process_vm_writev of many iovecs.
//!
//! The thread that owns the ptrace session runs the in-place reads; the
//! workers (one per core) take the through-cairn chunks, then the checks,
//! then in-place chunks from the far end of the queue, so that both kinds
//! of work keep every core busy.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};

use crate::error::{Error, Result};
use crate::image::chain::Resolved;
use crate::image::pages::{ChunkBufs, PageStoreReader};
use crate::image::proto::{MmEntry, VmaKind};
use crate::remote::Calls;
use crate::sys::{mem, sched, vmio, PAGE_SIZE};

/// Where a piece of a chunk goes.
#[derive(Clone, Copy)]
enum Dest<'a> {
    /// The vessel's memory at this address.
    Vm(u64),
    /// A shared memory object, at this byte offset.
    File(&'a File, u64),
}

/// `nr` pages at byte `off` of a chunk, for `dest`.
struct Piece<'a> {
    dest: Dest<'a>,
    off: u64,
    nr: u64,
}

/// One chunk of one layer and where its pages go, by offset.
struct Chunk<'a> {
    layer: usize,
    idx: u32,
    pieces: Vec<Piece<'a>>,
}

impl Chunk<'_> {
    /// The vessel addresses and lengths of its pieces (all `Vm`), in
    /// chunk order.
    fn vm_segs(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.pieces.iter().filter_map(|p| match p.dest {
            Dest::Vm(a) => Some((a, p.nr * PAGE_SIZE)),
            Dest::File(..) => None,
        })
    }

    fn first_addr(&self) -> u64 {
        self.vm_segs().next().map_or(0, |s| s.0)
    }
}

/// Bytes per in-place preadv: large enough that the ptrace round trips
/// of a call are noise, small enough that the checks follow closely.
const BATCH_BYTES: u64 = 16 << 20;
/// iovecs per in-place preadv (16 bytes each in the vessel's scratch).
const BATCH_IOVECS: usize = 512;
/// Zero pages written per iovec where a mapping is not fresh memory.
const ZERO_PIECE: usize = 256 << 10;

/// What a restore of pages did, for `-v`.
#[derive(Default)]
pub struct PageStats {
    in_place_chunks: AtomicUsize,
    in_place_bytes: AtomicU64,
    preadv_calls: AtomicUsize,
    through_chunks: AtomicUsize,
    through_bytes: AtomicU64,
    /// In-place chunks a worker wrote through cairn (it had nothing else
    /// to do).
    taken_over: AtomicUsize,
    zero_pages: u64,
    /// Why nothing was read in place, if so.
    no_in_place: Option<String>,
}

impl fmt::Display for PageStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |b: &AtomicU64| b.load(Ordering::Relaxed) as f64 / (1u64 << 20) as f64;
        write!(
            f,
            "{} chunks ({:.1} MiB) read in place by the process in {} preadv calls, \
             {} chunks ({:.1} MiB) written through cairn ({} of them taken over from the \
             in-place queue), {} zero pages written",
            self.in_place_chunks.load(Ordering::Relaxed),
            mib(&self.in_place_bytes),
            self.preadv_calls.load(Ordering::Relaxed),
            self.through_chunks.load(Ordering::Relaxed),
            mib(&self.through_bytes),
            self.taken_over.load(Ordering::Relaxed),
            self.zero_pages
        )?;
        if let Some(why) = &self.no_in_place {
            write!(f, "; nothing read in place: {why}")?;
        }
        Ok(())
    }
}

/// Writes all page runs of `maps` into the vessel `agent` runs in (see
/// the module doc). Zero runs are written only where the mapping is not
/// fresh anonymous memory.
pub fn restore_pages(
    agent: &mut dyn Calls,
    mm: &MmEntry,
    maps: &[(&str, &[Resolved])],
    stores: &[&PageStoreReader],
    shm: &HashMap<String, File>,
) -> Result<PageStats> {
    let pid = agent.pid();
    let (chunks, zeros) = plan(mm, maps, shm);
    let mut stats = PageStats {
        zero_pages: zeros.iter().map(|z| z.1).sum(),
        ..PageStats::default()
    };
    write_zeros(pid, &zeros)?;
    for c in &chunks {
        if c.layer >= stores.len() {
            return Err(Error::Restore(format!(
                "pid {pid}: no layer {} in the chain",
                c.layer
            )));
        }
    }
    let (mut in_place, mut through): (Vec<usize>, Vec<usize>) =
        (0..chunks.len()).partition(|&i| fits_in_place(&chunks[i], stores[chunks[i].layer]));
    // The vessel's fd of each layer's pages.img.
    let mut fds: BTreeMap<usize, u64> = BTreeMap::new();
    let layers: BTreeSet<usize> = in_place.iter().map(|&i| chunks[i].layer).collect();
    for l in layers {
        match hand_over(agent, stores[l]) {
            Ok(fd) => {
                fds.insert(l, fd);
            }
            Err(e) => {
                crate::debug!(
                    "pid {pid}: {}: not read in place: {e}",
                    stores[l].path().display()
                );
                stats.no_in_place = Some(e.to_string());
            }
        }
    }
    let (keep, back): (Vec<usize>, Vec<usize>) = in_place
        .into_iter()
        .partition(|&i| fds.contains_key(&chunks[i].layer));
    in_place = keep;
    through.extend(back);
    let r = run(agent, &chunks, stores, in_place, &through, &fds, &stats);
    // Closed on every path: nothing of cairn's stays in the process.
    let mut closed = Ok(());
    for (&l, &fd) in &fds {
        let c = agent.close_as(&format!("{} (fd {fd})", stores[l].path().display()), fd);
        if closed.is_ok() {
            closed = c;
        }
    }
    r?;
    closed?;
    Ok(stats)
}

/// The chunks the runs of `maps` need, with their pieces by offset, and
/// the zero runs that must be written (in mappings that are not fresh
/// anonymous memory, which reads as zero by itself).
fn plan<'a>(
    mm: &MmEntry,
    maps: &[(&str, &[Resolved])],
    shm: &'a HashMap<String, File>,
) -> (Vec<Chunk<'a>>, Vec<(u64, u64)>) {
    let mut by_chunk: BTreeMap<(usize, u32), Vec<Piece<'a>>> = BTreeMap::new();
    let mut zeros = Vec::new();
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
            match (r.data, dest) {
                (Some((chunk, off)), _) => {
                    by_chunk.entry((r.layer, chunk)).or_default().push(Piece {
                        dest,
                        off,
                        nr: r.nr_pages,
                    })
                }
                (None, Dest::Vm(a)) => {
                    let fresh = mm.vmas.iter().any(|v| {
                        v.start <= a
                            && a < v.end
                            && v.kind.enum_value() == Ok(VmaKind::VMA_ANON_PRIVATE)
                    });
                    if !fresh {
                        zeros.push((a, r.nr_pages));
                    }
                }
                (None, Dest::File(..)) => {}
            }
        }
    }
    let chunks = by_chunk
        .into_iter()
        .map(|((layer, idx), mut pieces)| {
            pieces.sort_by_key(|p| p.off);
            Chunk { layer, idx, pieces }
        })
        .collect();
    (chunks, zeros)
}

/// Whether `c` can be read in place: raw, all of it for this process's
/// own memory, its pieces covering it exactly once.
fn fits_in_place(c: &Chunk, store: &PageStoreReader) -> bool {
    let Ok(entry) = store.chunk(c.idx) else {
        return false;
    };
    if !store.is_raw(c.idx) {
        return false;
    }
    let mut at = 0;
    for p in &c.pieces {
        if !matches!(p.dest, Dest::Vm(_)) || p.off != at {
            return false;
        }
        at += p.nr * PAGE_SIZE;
    }
    at == entry.raw_len
}

/// Gives the vessel cairn's open pages.img (pidfd_getfd: the file cairn
/// opened and validated, never opened by path there) and checks that
/// the fd it got is that file (a pid namespace could show it another
/// process under cairn's pid). Returns the vessel's fd.
fn hand_over(agent: &mut dyn Calls, store: &PageStoreReader) -> Result<u64> {
    let pid = agent.pid();
    let ours = store.file();
    let fd = agent.fetch_fd(crate::sys::task::getpid(), ours.as_raw_fd() as u64)?;
    let theirs = format!("/proc/{pid}/fd/{fd}");
    let same = match (ours.metadata(), std::fs::metadata(&theirs)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    };
    if !same {
        agent.close_as(&theirs, fd)?;
        return Err(Error::Restore(format!(
            "pid {pid}: fd {fd} fetched from cairn is not {}",
            store.path().display()
        )));
    }
    Ok(fd)
}

/// Writes `nr` zero pages at each address of `zeros`.
fn write_zeros(pid: i32, zeros: &[(u64, u64)]) -> Result<()> {
    if zeros.is_empty() {
        return Ok(());
    }
    let zero = vec![0u8; ZERO_PIECE];
    let mut pairs: Vec<(&[u8], u64)> = Vec::new();
    for &(a, nr) in zeros {
        let end = a + nr * PAGE_SIZE;
        let mut at = a;
        while at < end {
            let n = ((end - at) as usize).min(ZERO_PIECE);
            pairs.push((&zero[..n], at));
            at += n as u64;
        }
    }
    vmio::vm_write_pairs(pid, &pairs).map_err(|e| {
        Error::sys(
            pid,
            format!(
                "write {} zero pages in {} runs from {:#x}",
                zeros.iter().map(|z| z.1).sum::<u64>(),
                zeros.len(),
                zeros[0].0
            ),
            e,
        )
    })
}

/// What the threads of one restore share.
struct Shared<'a, 'b> {
    pid: i32,
    chunks: &'b [Chunk<'a>],
    stores: &'b [&'b PageStoreReader],
    /// Chunks written through cairn, taken in order by the workers.
    through: &'b [usize],
    next: AtomicUsize,
    /// Chunks to read in place: the ptrace thread takes them from the
    /// front, idle workers from the back.
    in_place: Mutex<VecDeque<usize>>,
    /// Batches read in place, to check.
    check: Mutex<mpsc::Receiver<Vec<usize>>>,
    failed: AtomicBool,
    error: Mutex<Option<Error>>,
    stats: &'b PageStats,
}

fn run(
    agent: &mut dyn Calls,
    chunks: &[Chunk],
    stores: &[&PageStoreReader],
    in_place: Vec<usize>,
    through: &[usize],
    fds: &BTreeMap<usize, u64>,
    stats: &PageStats,
) -> Result<()> {
    // Pinned with the vessels during a restore (`sys::sched::pin_here`),
    // the workers run where cairn could before.
    let workers = sched::parallelism().min(8);
    let unpinned = sched::unpinned();
    let (tx, rx) = mpsc::channel::<Vec<usize>>();
    let sh = Shared {
        pid: agent.pid(),
        chunks,
        stores,
        through,
        next: AtomicUsize::new(0),
        in_place: Mutex::new(VecDeque::from(in_place)),
        check: Mutex::new(rx),
        failed: AtomicBool::new(false),
        error: Mutex::new(None),
        stats,
    };
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                sched::unpin_self(unpinned.as_deref());
                sh.work()
            });
        }
        if let Err(e) = sh.read_in_place(agent, fds, &tx) {
            sh.fail(e);
        }
        // The workers finish the checks and return; this thread helps.
        drop(tx);
        sh.work();
    });
    match sh.error.into_inner() {
        Ok(Some(e)) => Err(e),
        Ok(None) => Ok(()),
        Err(p) => p.into_inner().map_or(Ok(()), Err),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared<'_, '_> {
    fn fail(&self, e: Error) {
        self.failed.store(true, Ordering::Relaxed);
        lock(&self.error).get_or_insert(e);
    }

    /// A worker: through-cairn chunks, then checks of in-place batches,
    /// then in-place chunks from the back of the queue; returns when
    /// nothing is left or something failed.
    fn work(&self) {
        let mut bufs = ChunkBufs::default();
        let mut back = Vec::new();
        loop {
            if self.failed.load(Ordering::Relaxed) {
                return;
            }
            // Each lock is taken and released in its own statement (a
            // guard in an `if let` condition would live through the
            // whole if-else chain).
            let r = if let Some(&c) = self.through.get(self.next.fetch_add(1, Ordering::Relaxed)) {
                self.write_through(c, &mut bufs)
            } else {
                let ready = lock(&self.check).try_recv();
                if let Ok(batch) = ready {
                    self.check(&batch, &mut back)
                } else {
                    let stolen = lock(&self.in_place).pop_back();
                    if let Some(c) = stolen {
                        self.stats.taken_over.fetch_add(1, Ordering::Relaxed);
                        self.write_through(c, &mut bufs)
                    } else {
                        // Nothing left to take: wait for the checks until
                        // the ptrace thread is done.
                        let got = lock(&self.check).recv();
                        match got {
                            Ok(batch) => self.check(&batch, &mut back),
                            Err(_) => return,
                        }
                    }
                }
            };
            if let Err(e) = r {
                self.fail(e);
                return;
            }
        }
    }

    /// Reads chunk `c` into the worker's buffers, checks and decodes it,
    /// and writes its pieces where they go.
    fn write_through(&self, c: usize, bufs: &mut ChunkBufs) -> Result<()> {
        let ch = &self.chunks[c];
        let store = self.stores[ch.layer];
        let data = store.read_chunk_into(ch.idx, bufs)?;
        let mut pairs: Vec<(&[u8], u64)> = Vec::with_capacity(ch.pieces.len());
        for p in &ch.pieces {
            let bytes = usize::try_from(p.off)
                .ok()
                .zip(usize::try_from(p.off + p.nr * PAGE_SIZE).ok())
                .and_then(|(s, e)| data.get(s..e))
                .ok_or_else(|| {
                    Error::image(
                        store.path(),
                        format!(
                            "chunk {}: {} pages at byte {} lie beyond its {} bytes",
                            ch.idx,
                            p.nr,
                            p.off,
                            data.len()
                        ),
                    )
                })?;
            match p.dest {
                Dest::Vm(a) => pairs.push((bytes, a)),
                Dest::File(f, o) => super::pages::write_shmem(f, o, bytes).map_err(|e| {
                    Error::sys(self.pid, format!("write shared memory at offset {o:#x}"), e)
                })?,
            }
        }
        vmio::vm_write_pairs(self.pid, &pairs).map_err(|e| {
            Error::sys(
                self.pid,
                format!(
                    "write chunk {} of {} ({} pieces from {:#x})",
                    ch.idx,
                    store.path().display(),
                    pairs.len(),
                    ch.first_addr()
                ),
                e,
            )
        })?;
        self.stats.through_chunks.fetch_add(1, Ordering::Relaxed);
        self.stats
            .through_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Reads the chunks of `batch` back from the vessel and checks each
    /// against its crc.
    fn check(&self, batch: &[usize], back: &mut Vec<u8>) -> Result<()> {
        for &c in batch {
            let ch = &self.chunks[c];
            let store = self.stores[ch.layer];
            let len = store.chunk(ch.idx)?.raw_len as usize;
            back.resize(len, 0);
            let segs: Vec<(u64, usize)> = ch.vm_segs().map(|(a, l)| (a, l as usize)).collect();
            mem::vm_readv_all(self.pid, &segs, &mut back[..len]).map_err(|e| {
                Error::sys(
                    self.pid,
                    format!("read back chunk {} at {:#x}", ch.idx, ch.first_addr()),
                    e,
                )
            })?;
            store.check_crc(
                ch.idx,
                &back[..len],
                &format!(
                    " (as read into pid {} at {:#x}, {} bytes)",
                    self.pid,
                    ch.first_addr(),
                    len
                ),
            )?;
        }
        Ok(())
    }

    /// Takes from the front of the in-place queue the chunks of one
    /// preadv: one layer, consecutive in its file.
    fn take_batch(&self) -> Vec<usize> {
        let mut q = lock(&self.in_place);
        let Some(first) = q.pop_front() else {
            return Vec::new();
        };
        let layer = self.chunks[first].layer;
        let store = self.stores[layer];
        let end_of = |c: usize| {
            store
                .chunk(self.chunks[c].idx)
                .map_or(u64::MAX, |e| e.offset + e.compressed_len)
        };
        let (mut end, mut bytes, mut iovs) = (
            end_of(first),
            store.chunk(self.chunks[first].idx).map_or(0, |e| e.raw_len),
            self.chunks[first].pieces.len(),
        );
        let mut batch = vec![first];
        while let Some(&c) = q.front() {
            let ch = &self.chunks[c];
            let Ok(e) = store.chunk(ch.idx) else { break };
            if ch.layer != layer
                || e.offset != end
                || bytes + e.raw_len > BATCH_BYTES
                || iovs + ch.pieces.len() > BATCH_IOVECS
            {
                break;
            }
            q.pop_front();
            end = e.offset + e.compressed_len;
            bytes += e.raw_len;
            iovs += ch.pieces.len();
            batch.push(c);
        }
        batch
    }

    /// The ptrace thread: runs preadv in the vessel for batch after batch
    /// of in-place chunks and queues each batch for its check.
    fn read_in_place(
        &self,
        agent: &mut dyn Calls,
        fds: &BTreeMap<usize, u64>,
        tx: &mpsc::Sender<Vec<usize>>,
    ) -> Result<()> {
        loop {
            if self.failed.load(Ordering::Relaxed) {
                return Ok(());
            }
            let batch = self.take_batch();
            let Some(&first) = batch.first() else {
                return Ok(());
            };
            let ch = &self.chunks[first];
            let store = self.stores[ch.layer];
            let fd = *fds.get(&ch.layer).ok_or_else(|| {
                Error::Restore(format!("pid {}: layer {} has no fd", self.pid, ch.layer))
            })?;
            let pos = store.file_pos(store.chunk(ch.idx)?);
            // Adjacent pieces in memory make one iovec.
            let mut segs: Vec<(u64, u64)> = Vec::new();
            for &c in &batch {
                for (a, l) in self.chunks[c].vm_segs() {
                    match segs.last_mut() {
                        Some(s) if s.0 + s.1 == a => s.1 += l,
                        _ => segs.push((a, l)),
                    }
                }
            }
            let what = format!(
                "chunks {}..={} of {}",
                ch.idx,
                self.chunks[batch[batch.len() - 1]].idx,
                store.path().display()
            );
            let calls = preadv_all(agent, fd, &segs, pos, &what, store)?;
            let bytes: u64 = segs.iter().map(|s| s.1).sum();
            let s = self.stats;
            s.preadv_calls.fetch_add(calls, Ordering::Relaxed);
            s.in_place_chunks.fetch_add(batch.len(), Ordering::Relaxed);
            s.in_place_bytes.fetch_add(bytes, Ordering::Relaxed);
            if tx.send(batch).is_err() {
                return Ok(());
            }
        }
    }
}

/// Runs preadv(fd, segs, pos) in the vessel until every byte of `segs`
/// (address, length) is read, at most BATCH_IOVECS iovecs per call; the
/// iovec array goes in the vessel's scratch area. Returns the calls made.
fn preadv_all(
    agent: &mut dyn Calls,
    fd: u64,
    segs: &[(u64, u64)],
    mut pos: u64,
    what: &str,
    store: &PageStoreReader,
) -> Result<usize> {
    let (mut i, mut skip, mut calls) = (0usize, 0u64, 0usize);
    while i < segs.len() {
        let group: Vec<(u64, u64)> = segs[i..]
            .iter()
            .take(BATCH_IOVECS)
            .enumerate()
            .map(|(k, &(a, l))| if k == 0 { (a + skip, l - skip) } else { (a, l) })
            .collect();
        let iov: Vec<u8> = group
            .iter()
            .flat_map(|&(a, l)| a.to_ne_bytes().into_iter().chain(l.to_ne_bytes()))
            .collect();
        let at = agent.put(0, &iov)?;
        let n = agent.call(
            &format!("preadv of {what} at byte {pos} into {:#x}", group[0].0),
            libc::SYS_preadv,
            &[fd, at, group.len() as u64, pos, 0],
        )?;
        calls += 1;
        if n == 0 {
            return Err(Error::image(
                store.path(),
                format!("{what}: end of file at byte {pos}"),
            ));
        }
        pos += n;
        let mut left = n;
        while left > 0 && i < segs.len() {
            let room = segs[i].1 - skip;
            if left >= room {
                left -= room;
                i += 1;
                skip = 0;
            } else {
                skip += left;
                left = 0;
            }
        }
    }
    Ok(calls)
}
