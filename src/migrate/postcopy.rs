//! Post-copy (`cairn migrate --lazy`, `cairn receive --lazy-ok`): the
//! pages of every layer stay on the source; the destination restores the
//! tree with its private anonymous memory left to a pager
//! ([`crate::kinds::memory::lazy`]) and starts it, then the pages come
//! over the channel, those a fault or the restore needs first.
//!
//! - [`serve`] (source): answers `Want`s with the chunk's stored bytes
//!   (`Page` frames, read from the staged layers), and once the tree runs
//!   on the destination streams every other chunk; ends on `Done`.
//! - [`Pager`] (destination): one thread owning the channel, the
//!   userfaultfds and the sparse pages.img files. Each arriving chunk is
//!   written into its file, checked (crc) and copied (UFFDIO_COPY) into
//!   every process whose missing runs it holds; a fault on a page whose
//!   chunk has not arrived asks for it (`Want`), a fault on a page that
//!   was never dumped gets the zero page. Fork, mremap, munmap and
//!   MADV_DONTNEED events keep the runs right.
//!
//! - [`restore`]: the one post-copy restore, whatever the page source
//!   ([`Source`]): `cairn receive --lazy-ok` (the migration's source) and
//!   `cairn restore --lazy-pages` (a page server, or the image directory's
//!   own pages served over a loopback connection) both call it.
//!
//! If the source or the channel dies before every page is in place, the
//! pager kills the restored tree (never left half-memory) and the
//! receiver fails; the source, still frozen (frozen mode), is thawed by
//! its guardian or by `cairn migrate`, which exits 7.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::channel::{Channel, MAX_PLAIN};
use super::guardian::Link;
use super::wire::{page_head, Msg, PAGE_HEAD};
use crate::error::{Error, Result};
use crate::image::pages::{ChunkBufs, PageStoreReader};
use crate::image::proto::FileContents;
use crate::image::{names, ImageDir, ImageType};
use crate::kinds::memory::lazy::{self, Answer, Cmd, LazyMm, Run};
use crate::options::RestoreOptions;
use crate::sys::uffd::Filled;
use crate::sys::{uffd, PAGE_SIZE};

/// How long either side waits for the other during post-copy.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the source may be silent while it streams the pages of a
/// running tree.
pub const STREAM_SILENCE: Duration = Duration::from_secs(10);
/// How long the receiver waits for the source's Ack after Done.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(30);

fn perr(peer: &str, why: impl std::fmt::Display) -> Error {
    Error::io(
        Path::new(peer),
        std::io::Error::other(format!("post-copy: {why}")),
    )
}

/// What the source's post-copy did.
#[derive(Debug, Default)]
pub struct Served {
    /// The restored root on the destination.
    pub root: i32,
    /// When the destination said the tree runs.
    pub running: Option<Instant>,
    /// Chunks sent because the destination asked for them.
    pub wanted: u64,
    pub chunks: u64,
    pub bytes: u64,
}

/// The source's side, after `Go`: serves the chunks of the layers
/// `dir/1` .. `dir/N` until the destination has every page (`Done`,
/// answered with `Ack`). An error means the destination does not run the
/// tree with all its memory (it kills its copy when the channel breaks).
pub fn serve(ch: &mut Channel, dir: &Path, layers: u32) -> Result<Served> {
    let mut stores = Vec::new();
    for i in 1..=layers {
        let (d, _) = ImageDir::load(&dir.join(i.to_string()))?;
        stores.push(PageStoreReader::open(&d)?);
    }
    serve_stores(ch, &stores)
}

/// [`serve`] of the page stores `stores` (layer i + 1 is `stores[i]`);
/// also the page server's (`super::pageserver`).
pub fn serve_stores(ch: &mut Channel, stores: &[PageStoreReader]) -> Result<Served> {
    let peer = ch.peer.clone();
    let layers = stores.len() as u32;
    let mut sent: Vec<Vec<bool>> = stores
        .iter()
        .map(|s| vec![false; s.chunk_count()])
        .collect();
    let mut left: usize = stores.iter().map(|s| s.chunk_count()).sum();
    let mut order: VecDeque<(u32, u32)> = (0..stores.len())
        .flat_map(|l| (0..stores[l].chunk_count()).map(move |c| (l as u32 + 1, c as u32)))
        .collect();
    let mut prio: VecDeque<(u32, u32)> = VecDeque::new();
    let mut out = Served::default();
    let mut told_all = false;
    let mut buf = vec![0u8; MAX_PLAIN];
    loop {
        let busy = !prio.is_empty() || (out.running.is_some() && left > 0);
        loop {
            if busy {
                let fd = ch.fd().as_raw_fd();
                let ready = uffd::poll_readable(&[fd], 0).map_err(|e| perr(&peer, e))?;
                if !ready[0] {
                    break;
                }
            }
            let m = Msg::decode(ch.recv(IDLE_TIMEOUT)?).map_err(|e| perr(&peer, e))?;
            match m {
                Msg::Want { layer, chunk } => {
                    let ok = (1..=layers).contains(&layer)
                        && (chunk as usize) < sent[layer as usize - 1].len();
                    if !ok {
                        return Err(perr(&peer, format!("no chunk {chunk} in layer {layer}")));
                    }
                    if !sent[layer as usize - 1][chunk as usize] {
                        prio.push_back((layer, chunk));
                    }
                }
                Msg::Outcome { ok: true, root, .. } => {
                    out.root = root;
                    out.running = Some(Instant::now());
                    eprintln!(
                        "cairn: migrate: the tree runs on {peer} (root pid {root}); {left} \
                         chunks still to send (post-copy)"
                    );
                }
                Msg::Outcome { why, .. } => {
                    return Err(perr(&peer, format!("the destination failed: {why}")))
                }
                Msg::Done if left == 0 => {
                    ch.send(&Msg::Ack.encode())?;
                    return Ok(out);
                }
                Msg::Abort { why } => {
                    return Err(perr(&peer, format!("the receiver gave up: {why}")))
                }
                m => return Err(perr(&peer, format!("unexpected {}", m.name()))),
            }
            if !busy {
                break;
            }
        }
        let next = match prio.pop_front() {
            Some(x) => {
                out.wanted += 1;
                Some(x)
            }
            None if out.running.is_some() => order.pop_front(),
            None => None,
        };
        if let Some((l, c)) = next {
            let li = l as usize - 1;
            if sent[li][c as usize] {
                continue;
            }
            out.bytes += send_chunk(ch, &stores[li], l, c, &mut buf)?;
            out.chunks += 1;
            sent[li][c as usize] = true;
            left -= 1;
        }
        if left == 0 && !told_all && out.running.is_some() {
            ch.send(&Msg::AllSent.encode())?;
            told_all = true;
        }
    }
}

/// Sends the stored bytes of chunk `c` of layer `l`; returns their count.
fn send_chunk(
    ch: &mut Channel,
    store: &PageStoreReader,
    l: u32,
    c: u32,
    buf: &mut [u8],
) -> Result<u64> {
    let entry = store.chunk(c)?;
    let pos = store.file_pos(entry);
    let len = entry.compressed_len;
    let step = (MAX_PLAIN - PAGE_HEAD) as u64;
    let mut off = 0;
    while off < len {
        let n = (len - off).min(step) as usize;
        page_head(buf, l, c, off);
        store
            .file()
            .read_exact_at(&mut buf[PAGE_HEAD..PAGE_HEAD + n], pos + off)
            .map_err(|e| Error::io(store.path(), e))?;
        ch.send(&buf[..PAGE_HEAD + n])?;
        off += n as u64;
    }
    Ok(len)
}

/// A post-copy layer on the destination: its (sparse) pages.img, read
/// through the chunk table and written as chunks arrive.
pub struct LazyLayer {
    reader: PageStoreReader,
    write: File,
    present: Vec<bool>,
}

impl LazyLayer {
    /// Opens the layer `dir` received with a sparse pages.img (`write`:
    /// that file, opened for writing when it was created).
    pub fn open(dir: &Path, write: File) -> Result<LazyLayer> {
        let (d, _) = ImageDir::load(dir)?;
        let reader = PageStoreReader::open(&d)?;
        let present = vec![false; reader.chunk_count()];
        Ok(LazyLayer {
            reader,
            write,
            present,
        })
    }

    pub fn pages_path(&self) -> PathBuf {
        self.reader.path().to_path_buf()
    }
}

/// The destination's pager (see the module doc).
pub struct Pager {
    layers: Vec<LazyLayer>,
    mms: Vec<LazyMm>,
    by_chunk: HashMap<(u32, u32), Vec<(usize, u64)>>,
    waiters: HashMap<(u32, u32), Vec<Answer>>,
    requested: HashSet<(u32, u32)>,
    /// The chunk arriving: layer, chunk, bytes so far.
    cur: Option<(u32, u32, u64)>,
    retry: BTreeSet<(u32, u32)>,
    zero_retry: Vec<(usize, u64)>,
    all_sent: bool,
    root: Option<i32>,
    bufs: ChunkBufs,
    peer: String,
    /// The command, for the messages ("receive", "restore").
    cmd: &'static str,
    guard: Arc<Link>,
    /// Pages copied, zero pages mapped, faults seen.
    pub copied: u64,
    pub zeroed: u64,
    pub faults: u64,
}

/// Why the pager stopped before every page was in place.
enum Stop {
    Failed(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Stop {
        Stop::Failed(e)
    }
}

impl Pager {
    pub fn new(layers: Vec<LazyLayer>, peer: &str, cmd: &'static str, guard: Arc<Link>) -> Pager {
        Pager {
            layers,
            mms: Vec::new(),
            by_chunk: HashMap::new(),
            waiters: HashMap::new(),
            requested: HashSet::new(),
            cur: None,
            retry: BTreeSet::new(),
            zero_retry: Vec::new(),
            all_sent: false,
            root: None,
            bufs: ChunkBufs::default(),
            peer: peer.to_string(),
            cmd,
            guard,
            copied: 0,
            zeroed: 0,
            faults: 0,
        }
    }

    fn present(&self, l: u32, c: u32) -> bool {
        self.layers
            .get(l as usize - 1)
            .and_then(|x| x.present.get(c as usize))
            .copied()
            .unwrap_or(false)
    }

    fn want(&mut self, ch: &mut Channel, l: u32, c: u32) -> Result<()> {
        if self.requested.insert((l, c)) {
            ch.send(&Msg::Want { layer: l, chunk: c }.encode())?;
        }
        Ok(())
    }

    fn index(&mut self, i: usize) {
        for r in self.mms[i].runs.values() {
            self.by_chunk
                .entry((r.layer, r.chunk))
                .or_default()
                .push((i, r.addr));
        }
    }

    fn add(&mut self, m: LazyMm) -> Result<()> {
        let i = self.mms.len();
        let here: BTreeSet<(u32, u32)> = m
            .runs
            .values()
            .map(|r| (r.layer, r.chunk))
            .filter(|&(l, c)| self.present(l, c))
            .collect();
        for r in m.runs.values() {
            if !(1..=self.layers.len() as u32).contains(&r.layer) {
                return Err(Error::Restore(format!(
                    "pid {}: pages of layer {}, which is not a post-copy layer",
                    m.pid, r.layer
                )));
            }
        }
        self.mms.push(m);
        self.index(i);
        for (l, c) in here {
            self.install(l, c)?;
        }
        Ok(())
    }

    /// Copies chunk (l, c), present, into every mm whose runs need it.
    fn install(&mut self, l: u32, c: u32) -> Result<()> {
        let Some(list) = self.by_chunk.remove(&(l, c)) else {
            return Ok(());
        };
        let layer = &self.layers[l as usize - 1];
        let raw = layer.reader.read_chunk_into(c, &mut self.bufs)?;
        let mut keep = Vec::new();
        for (i, addr) in list {
            let m = &mut self.mms[i];
            let Some(r) = m.runs.get(&addr).copied() else {
                continue;
            };
            if (r.layer, r.chunk) != (l, c) {
                continue;
            }
            let len = r.nr * PAGE_SIZE;
            let end = r.off.checked_add(len).filter(|&e| e <= raw.len() as u64);
            let Some(end) = end else {
                return Err(Error::Restore(format!(
                    "pid {}: pages {:#x}+{len} lie outside chunk {c} of layer {l}",
                    m.pid, r.addr
                )));
            };
            match uffd::copy(&m.uffd, r.addr, &raw[r.off as usize..end as usize]) {
                Ok(Filled::Done) => {
                    m.runs.remove(&addr);
                    self.copied += r.nr;
                }
                Ok(Filled::Again) => keep.push((i, addr)),
                // The process is gone (its mm with it).
                Err(e) if matches!(e.raw_os_error(), Some(libc::ESRCH)) => m.runs.clear(),
                Err(e) => {
                    return Err(Error::sys(
                        m.pid,
                        format!("UFFDIO_COPY of {} pages at {:#x}", r.nr, r.addr),
                        e,
                    ))
                }
            }
        }
        if !keep.is_empty() {
            self.retry.insert((l, c));
            self.by_chunk.insert((l, c), keep);
        }
        Ok(())
    }

    fn zero(&mut self, i: usize, page: u64) -> Result<()> {
        let m = &self.mms[i];
        match uffd::zeropage(&m.uffd, page, PAGE_SIZE) {
            Ok(Filled::Done) => self.zeroed += 1,
            Ok(Filled::Again) => self.zero_retry.push((i, page)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ESRCH)) => {}
            Err(e) => {
                return Err(Error::sys(
                    m.pid,
                    format!("UFFDIO_ZEROPAGE at {page:#x}"),
                    e,
                ))
            }
        }
        Ok(())
    }

    /// The events of mm `i`'s userfaultfd.
    fn events(&mut self, ch: &mut Channel, i: usize) -> Result<()> {
        let mut msgs = [uffd::UffdMsg::default(); 32];
        loop {
            let n = match uffd::read_msgs(&self.mms[i].uffd, &mut msgs) {
                Ok(n) => n,
                Err(e) => return Err(Error::sys(self.mms[i].pid, "read userfaultfd", e)),
            };
            if n == 0 {
                return Ok(());
            }
            for m in &msgs[..n] {
                match m.event {
                    uffd::UFFD_EVENT_PAGEFAULT => {
                        self.faults += 1;
                        let page = m.arg[1] & !(PAGE_SIZE - 1);
                        match self.mms[i].find(page) {
                            Some(r) if self.present(r.layer, r.chunk) => {
                                self.install(r.layer, r.chunk)?
                            }
                            Some(r) => self.want(ch, r.layer, r.chunk)?,
                            None => self.zero(i, page)?,
                        }
                    }
                    uffd::UFFD_EVENT_FORK => {
                        let fd: OwnedFd = uffd::take_forked(m.arg[0]).map_err(|e| {
                            Error::sys(self.mms[i].pid, "userfaultfd of a forked child", e)
                        })?;
                        self.guard.tell_forked(&fd)?;
                        let runs = self.mms[i].runs.clone();
                        let k = self.mms.len();
                        self.mms.push(LazyMm {
                            pid: 0,
                            uffd: fd,
                            runs,
                        });
                        self.index(k);
                    }
                    uffd::UFFD_EVENT_REMAP => {
                        let (from, to, len) = (m.arg[0], m.arg[1], m.arg[2]);
                        let moved = self.mms[i].cut(from, from + len);
                        for r in moved {
                            let nr = Run {
                                addr: to + (r.addr - from),
                                ..r
                            };
                            self.mms[i].runs.insert(nr.addr, nr);
                            self.by_chunk
                                .entry((nr.layer, nr.chunk))
                                .or_default()
                                .push((i, nr.addr));
                        }
                    }
                    uffd::UFFD_EVENT_REMOVE | uffd::UFFD_EVENT_UNMAP => {
                        // Dropped: such pages read as zero from now on.
                        self.mms[i].cut(m.arg[0], m.arg[1]);
                    }
                    e => warn!(
                        "userfaultfd of pid {}: event {e:#x} ignored",
                        self.mms[i].pid
                    ),
                }
            }
        }
    }

    /// One message from the source.
    fn message(&mut self, ch: &mut Channel) -> Result<()> {
        let peer = self.peer.clone();
        let m = Msg::decode(ch.recv(IDLE_TIMEOUT)?).map_err(|e| perr(&peer, e))?;
        match m {
            Msg::Page {
                layer,
                chunk,
                off,
                data,
            } => {
                let Some(lay) = self.layers.get_mut((layer as usize).wrapping_sub(1)) else {
                    return Err(perr(&peer, format!("Page of layer {layer}")));
                };
                let entry = lay.reader.chunk(chunk)?.clone();
                let got = match self.cur {
                    Some((l, c, got)) if (l, c) == (layer, chunk) => got,
                    _ if off == 0 && !lay.present[chunk as usize] => 0,
                    _ => {
                        return Err(perr(
                            &peer,
                            format!("Page of layer {layer} chunk {chunk} at {off} out of order"),
                        ))
                    }
                };
                let end = off + data.len() as u64;
                if off != got || end > entry.compressed_len {
                    return Err(perr(
                        &peer,
                        format!(
                            "Page of layer {layer} chunk {chunk}: bytes {off}..{end} unexpected"
                        ),
                    ));
                }
                let pos = lay.reader.file_pos(&entry) + off;
                lay.write
                    .write_all_at(&data, pos)
                    .map_err(|e| Error::io(lay.reader.path(), e))?;
                if end < entry.compressed_len {
                    self.cur = Some((layer, chunk, end));
                    return Ok(());
                }
                self.cur = None;
                // Complete: it must be what was dumped.
                lay.reader.read_chunk_into(chunk, &mut self.bufs)?;
                lay.present[chunk as usize] = true;
                for w in self.waiters.remove(&(layer, chunk)).unwrap_or_default() {
                    let _ = w.send(Ok(()));
                }
                self.install(layer, chunk)
            }
            Msg::AllSent => {
                self.all_sent = true;
                Ok(())
            }
            Msg::Abort { why } => Err(perr(&peer, format!("the source gave up: {why}"))),
            m => Err(perr(&peer, format!("unexpected {}", m.name()))),
        }
    }

    /// How long the source may be silent: while it streams the pages of
    /// a running tree, [`STREAM_SILENCE`] (shorter than the source's
    /// `TCP_USER_TIMEOUT`, so that on a cut link this side kills its
    /// tree before the source thaws its own); else [`IDLE_TIMEOUT`].
    fn silence_limit(&self) -> Duration {
        if self.root.is_some() && !self.all_sent {
            STREAM_SILENCE
        } else {
            IDLE_TIMEOUT
        }
    }

    fn complete(&self) -> bool {
        self.all_sent
            && self.root.is_some()
            && self.cur.is_none()
            && self.layers.iter().all(|l| l.present.iter().all(|&p| p))
            && self.mms.iter().all(|m| m.runs.is_empty())
    }

    /// Runs until every page is in place (then `Done`, and the source's
    /// `Ack`) or something fails; on failure the restored tree and every
    /// process with missing pages is killed before the userfaultfds go.
    /// Returns the root pid.
    pub fn run(
        mut self,
        ch: &mut Channel,
        rx: mpsc::Receiver<Cmd>,
        mut wake: UnixStream,
    ) -> Result<(i32, Pager)> {
        let r = self.pump(ch, &rx, &mut wake);
        match r {
            Ok(root) => {
                // Every page is in place: the userfaultfds may close.
                if let Err(e) = self.guard.done() {
                    warn!("{e} (every page was in place)");
                }
                Ok((root, self))
            }
            Err(Stop::Failed(e)) => {
                let _ = ch.send(&Msg::Abort { why: e.to_string() }.encode());
                for w in self.waiters.drain().flat_map(|(_, v)| v) {
                    let _ = w.send(Err(e.to_string()));
                }
                self.kill_all();
                // The restore may still be running: its answer tells
                // whether a tree stands (then it is killed too).
                let end = Instant::now() + Duration::from_secs(120);
                while self.root.is_none() && Instant::now() < end {
                    match rx.recv_timeout(Duration::from_millis(100)) {
                        Ok(Cmd::Started(Ok(root))) => self.root = Some(root),
                        Ok(Cmd::Started(Err(_))) => break,
                        Ok(Cmd::Ensure { done, .. }) => {
                            let _ = done.send(Err(e.to_string()));
                        }
                        Ok(Cmd::Add(m)) => {
                            self.mms.push(m);
                            self.kill_all();
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
                self.kill_all();
                eprintln!(
                    "cairn: {}: post-copy failed before every page was here ({e}): the \
                     restored tree was killed (never left with part of its memory)",
                    self.cmd
                );
                Err(e)
            }
        }
    }

    /// Kills the restored tree (the root and its descendants) and every
    /// process with a userfaultfd here.
    fn kill_all(&self) {
        for _ in 0..3 {
            let mut pids: Vec<i32> = self.mms.iter().map(|m| m.pid).filter(|&p| p > 0).collect();
            if let Some(root) = self.root {
                pids.extend(crate::procfs::descendants(root));
            }
            for p in pids {
                let _ = crate::sys::task::kill(p, libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pump(
        &mut self,
        ch: &mut Channel,
        rx: &mpsc::Receiver<Cmd>,
        wake: &mut UnixStream,
    ) -> std::result::Result<i32, Stop> {
        let peer = self.peer.clone();
        let mut last = Instant::now();
        loop {
            if self.complete() {
                ch.send(&Msg::Done.encode())?;
                let m = Msg::decode(ch.recv(ACK_TIMEOUT)?).map_err(|e| perr(&peer, e))?;
                if m != Msg::Ack {
                    return Err(perr(&peer, format!("expected Ack, got {}", m.name())).into());
                }
                return Ok(self.root.unwrap_or(0));
            }
            let mut fds = vec![ch.fd().as_raw_fd(), wake.as_raw_fd(), self.guard.watch_fd()];
            fds.extend(self.mms.iter().map(|m| m.uffd.as_raw_fd()));
            let busy = !self.retry.is_empty() || !self.zero_retry.is_empty();
            let ready = uffd::poll_readable(&fds, if busy { 1 } else { 1000 })
                .map_err(|e| perr(&peer, e))?;
            // Faults first.
            for i in 0..self.mms.len() {
                if ready.get(i + 3).copied().unwrap_or(false) {
                    self.events(ch, i)?;
                }
            }
            if ready[2] {
                // It never writes: its end closed.
                return Err(Error::Restore(format!(
                    "the post-copy guardian (pid {}) is gone: a receiver killed now would \
                     leave the tree without its missing pages",
                    self.guard.pid()
                ))
                .into());
            }
            if ready[1] {
                let mut b = [0u8; 64];
                let _ = wake.read(&mut b);
                while let Ok(c) = rx.try_recv() {
                    match c {
                        Cmd::Ensure { layer, chunk, done } => {
                            if !(1..=self.layers.len() as u32).contains(&layer)
                                || chunk as usize >= self.layers[layer as usize - 1].present.len()
                            {
                                let _ = done.send(Err("no such chunk".into()));
                            } else if self.present(layer, chunk) {
                                let _ = done.send(Ok(()));
                            } else {
                                self.waiters.entry((layer, chunk)).or_default().push(done);
                                self.want(ch, layer, chunk)?;
                            }
                        }
                        Cmd::Add(m) => self.add(m)?,
                        Cmd::Started(Ok(root)) => {
                            self.root = Some(root);
                            self.guard.tell_root(root)?;
                            last = Instant::now();
                            ch.send(
                                &Msg::Outcome {
                                    ok: true,
                                    root,
                                    why: String::new(),
                                }
                                .encode(),
                            )?;
                        }
                        Cmd::Started(Err(why)) => {
                            let _ = ch.send(
                                &Msg::Outcome {
                                    ok: false,
                                    root: 0,
                                    why: why.clone(),
                                }
                                .encode(),
                            );
                            return Err(Error::Restore(why).into());
                        }
                    }
                }
            }
            if ready[0] {
                last = Instant::now();
                // A bounded batch, then the faults again.
                for _ in 0..64 {
                    self.message(ch)?;
                    let more = uffd::poll_readable(&fds[..1], 0).map_err(|e| perr(&peer, e))?;
                    if !more[0] {
                        break;
                    }
                }
            } else if last.elapsed() > self.silence_limit() {
                let limit = self.silence_limit();
                return Err(perr(&peer, format!("nothing from the source for {limit:?}")).into());
            }
            for (l, c) in std::mem::take(&mut self.retry) {
                self.install(l, c)?;
            }
            for (i, page) in std::mem::take(&mut self.zero_retry) {
                self.zero(i, page)?;
            }
        }
    }
}

/// The page source of a post-copy [`restore`]: the peer at the other end
/// of `ch`, which serves the chunks of `layers` ([`serve_stores`]):
/// `cairn migrate --lazy`'s source, a page server, or the image
/// directory's own pages on a loopback connection
/// (`super::pageserver`). All of them speak one protocol; they differ in
/// the files the restore reads.
pub struct Source<'a> {
    pub ch: &'a mut Channel,
    /// The pager's layers (layer i + 1 at i), each a pages.img that is
    /// sparse until the pager has written its chunks.
    pub layers: Vec<LazyLayer>,
    /// The pages.img the restore's chain reads for layer i + 1: the
    /// pager's own file, or a complete one read in place (the image
    /// directory's).
    pub pages: Vec<PathBuf>,
    /// For the messages: the command ("receive", "restore") and how the
    /// pages come.
    pub cmd: &'static str,
    pub how: String,
}

/// The post-copy restore of `ropts.images_dir` (never detached here)
/// with its private anonymous memory left to a [`Pager`] over
/// `src.ch`: file contents the restore reads before any process exists
/// are fetched first (`first_chunks`), the tree is started, the rest
/// of the pages come on fault and in the background. Returns the root
/// pid once every page is in place; if the source fails first, the
/// pager has killed the tree (and the post-copy guardian makes sure).
pub fn restore(src: Source<'_>, ropts: &RestoreOptions) -> Result<i32> {
    let Source {
        ch,
        layers,
        pages,
        cmd,
        how,
    } = src;
    let first = first_chunks(&ropts.images_dir, &layers, &pages)?;
    // Before any userfaultfd exists: without it a killed restore would
    // leave the tree reading zeros.
    let guard = Arc::new(Link::start()?);
    let (tx, rx) = mpsc::channel();
    let (wake_w, wake_r) = UnixStream::pair().map_err(|e| Error::io("socketpair", e))?;
    let end = |wake: UnixStream, pages: Vec<PathBuf>| lazy::Pager {
        tx: tx.clone(),
        wake,
        pages,
        guard: guard.clone(),
    };
    let clone = |s: &UnixStream| s.try_clone().map_err(|e| Error::io("socketpair", e));
    let pager = Pager::new(layers, &ch.peer, cmd, guard.clone());
    let ropts = RestoreOptions {
        detached: false,
        ..ropts.clone()
    };
    let t0 = Instant::now();
    std::thread::scope(|s| {
        let h = s.spawn(move || pager.run(ch, rx, wake_r));
        let r = (|| -> Result<Option<i32>> {
            let ours = end(clone(&wake_w)?, Vec::new());
            let answers = first
                .iter()
                .map(|&(layer, chunk)| {
                    let (done, rx) = mpsc::channel();
                    ours.send(Cmd::Ensure { layer, chunk, done })
                        .map(|()| ((layer, chunk), rx))
                })
                .collect::<Result<Vec<_>>>()?;
            for ((layer, chunk), rx) in answers {
                rx.recv()
                    .map_err(|_| "the pager is gone".to_string())
                    .and_then(|r| r)
                    .map_err(|why| {
                        Error::Restore(format!("file contents: layer {layer} chunk {chunk}: {why}"))
                    })?;
            }
            lazy::set_pager(Some(end(clone(&wake_w)?, pages.clone())));
            let r = crate::restore::start(&ropts);
            lazy::set_pager(None);
            r
        })();
        let started = match &r {
            Ok(Some(pid)) => Ok(*pid),
            Ok(None) => Err("the restore returned no root".to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Ok(root) = &started {
            eprintln!(
                "cairn: {cmd}: the tree runs here after {:.0} ms (root pid {root}); its memory \
                 follows ({how})",
                t0.elapsed().as_secs_f64() * 1e3
            );
        }
        let _ = end(wake_w, Vec::new()).send(Cmd::Started(started));
        let res = h
            .join()
            .unwrap_or_else(|_| Err(Error::Restore("the post-copy pager panicked".into())));
        if r.is_err() || res.is_err() {
            // The pager killed the tree; the guardian makes sure and ends.
            guard.abandon();
        }
        r?;
        let (root, p) = res?;
        eprintln!(
            "cairn: {cmd}: post-copy complete, every page is in after {:.0} ms: {} pages \
             copied, {} zero pages, {} faults",
            t0.elapsed().as_secs_f64() * 1e3,
            p.copied,
            p.zeroed,
            p.faults
        );
        Ok(root)
    })
}

/// The chunks (layer, chunk) that the restore of `dir` reads before any
/// process exists, from a file the pager fills: the file contents that
/// contents.img lists (deleted files, files on tmpfs, open files: the
/// restore writes them back first), stored in the page store of `dir`,
/// the chain's top layer. None when that layer's pages.img is read in
/// place (complete) rather than the pager's.
fn first_chunks(dir: &Path, layers: &[LazyLayer], pages: &[PathBuf]) -> Result<Vec<(u32, u32)>> {
    let (d, _) = ImageDir::load(dir)?;
    if !d.exists(names::CONTENTS) {
        return Ok(Vec::new());
    }
    let top = d.file(names::PAGES);
    let Some(i) = pages.iter().position(|p| lazy::same_file(p, &top)) else {
        return Ok(Vec::new());
    };
    if !layers
        .get(i)
        .is_some_and(|l| lazy::same_file(&pages[i], &l.pages_path()))
    {
        return Ok(Vec::new());
    }
    let c: FileContents = d.read(ImageType::Contents, names::CONTENTS)?;
    let mut v: Vec<u32> = c
        .files
        .iter()
        .flat_map(|f| f.chunks.iter().copied())
        .collect();
    v.sort_unstable();
    v.dedup();
    Ok(v.into_iter().map(|c| (i as u32 + 1, c)).collect())
}
