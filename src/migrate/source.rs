//! `cairn migrate`: pre-copy rounds, the final dump, the hand-over. See
//! the module documentation of [`crate::migrate`].

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::channel::{self, Channel, MAX_PLAIN};
use super::exit;
use super::wire::{Mode, Msg, VERSION};
use crate::dump::{self, Then};
use crate::error::{Error, Result};
use crate::image::names;
use crate::options::{DumpOptions, IncrOptions, PreDumpOptions};
use crate::procfs;
use crate::sys::safefs;

/// What `cairn migrate` does.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// The dump's options (tree, flags); `images_dir`, `leave_running`
    /// and `incr.prev_images_dir` are set per layer.
    pub dump: DumpOptions,
    pub to: String,
    pub key: PathBuf,
    pub max_downtime: Duration,
    /// Pre-copy rounds at most (the first copies everything).
    pub max_rounds: u32,
    /// Post-copy (`--lazy`): no page is sent before the tree runs on the
    /// destination ([`super::postcopy`]).
    pub lazy: bool,
}

/// How long the source waits for the receiver to store a layer.
const LAYER_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the source waits for the receiver's verdict and for its
/// restore.
const VERDICT_TIMEOUT: Duration = Duration::from_secs(300);
const RESTORE_TIMEOUT: Duration = Duration::from_secs(600);

/// The private directory the layers are staged in on the source
/// (removed at the end unless kept for recovery).
struct Work {
    parent: OwnedFd,
    name: String,
    fd: OwnedFd,
    path: PathBuf,
    layers: Vec<String>,
    keep: bool,
}

impl Work {
    fn create() -> Result<Work> {
        let tmp = std::env::temp_dir();
        let parent = safefs::open_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let hex = safefs::random_hex().map_err(|e| Error::io(&tmp, e))?;
        let name = format!("cairn-migrate-{}-{hex}", std::process::id());
        let fd = safefs::mkdir_private(&parent, OsStr::new(&name))
            .map_err(|e| Error::io(tmp.join(&name), e))?;
        Ok(Work {
            parent,
            path: tmp.join(&name),
            name,
            fd,
            layers: Vec::new(),
            keep: false,
        })
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for l in &self.layers {
            match safefs::remove_dir_by_fd(&self.fd, OsStr::new(l), None) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    warn!("{}/{l}: not removed: {e}", self.path.display())
                }
                _ => {}
            }
        }
        if let Err(e) = safefs::remove_dir_by_fd(&self.parent, OsStr::new(&self.name), None) {
            warn!("{}: not removed: {e}", self.path.display());
        }
    }
}

fn failed(code: u8, msg: String) -> Error {
    Error::Forwarded { code, msg }
}

fn expect(ch: &mut Channel, timeout: Duration, what: &str) -> Result<Msg> {
    let peer = ch.peer.clone();
    let m = Msg::decode(ch.recv(timeout)?).map_err(|e| {
        Error::io(
            std::path::Path::new(&peer),
            std::io::Error::other(format!("migration protocol: {e}")),
        )
    })?;
    if let Msg::Abort { why } = &m {
        return Err(Error::io(
            std::path::Path::new(&peer),
            std::io::Error::other(format!("the receiver gave up {what}: {why}")),
        ));
    }
    Ok(m)
}

/// Sends the layer `work/index`: every image file, `inventory.img` last,
/// then waits until the receiver has stored it. Returns the bytes sent.
/// `lazy`: pages.img goes as its header only (post-copy). `streamed`:
/// `Layer` and pages.img went out already, during the pre-dump
/// ([`Tee`]).
fn send_layer(
    ch: &mut Channel,
    work: &Work,
    index: u32,
    lazy: bool,
    streamed: bool,
) -> Result<u64> {
    let name = index.to_string();
    let path = work.path.join(&name);
    let dir = safefs::openat_nofollow(
        &work.fd,
        OsStr::new(&name),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
        0,
    )
    .map_err(|e| Error::io(&path, e))?;
    let mut files: Vec<String> = safefs::list(&dir)
        .map_err(|e| Error::io(&path, e))?
        .into_iter()
        .filter_map(|(n, _)| n.into_string().ok())
        .filter(|n| crate::image::is_image_name(n))
        .filter(|n| !streamed || n != names::PAGES)
        .collect();
    files.sort_by_key(|n| (n == names::INVENTORY, n.clone()));
    let before = ch.sent;
    if !streamed {
        ch.send(&Msg::Layer { index }.encode())?;
    }
    let mut buf = vec![0u8; MAX_PLAIN];
    for f in files {
        let (mut file, st) =
            safefs::open_regular(&dir, &f).map_err(|e| Error::io(path.join(&f), e))?;
        let size = st.st_size as u64;
        let mut left = if lazy && f == names::PAGES {
            let head = (crate::image::HEADER_LEN as u64).min(size);
            ch.send(
                &Msg::Sparse {
                    name: f.clone(),
                    size,
                    head,
                }
                .encode(),
            )?;
            head
        } else {
            ch.send(
                &Msg::File {
                    name: f.clone(),
                    size,
                }
                .encode(),
            )?;
            size
        };
        while left > 0 {
            let want = left.min((MAX_PLAIN - 1) as u64) as usize;
            buf[0] = 5; // Msg::Data
            file.read_exact(&mut buf[1..1 + want])
                .map_err(|e| Error::io(path.join(&f), e))?;
            ch.send(&buf[..1 + want])?;
            left -= want as u64;
        }
    }
    ch.send(&Msg::EndLayer.encode())?;
    match expect(ch, LAYER_TIMEOUT, "storing a layer")? {
        Msg::LayerOk => Ok(ch.sent - before),
        m => Err(Error::io(
            std::path::Path::new(&ch.peer),
            std::io::Error::other(format!(
                "migration protocol: expected LayerOk, got {}",
                m.name()
            )),
        )),
    }
}

/// A pre-copy round's pages on their way: the pre-dump hands every chunk
/// to this sink as it writes it into pages.img (`PageStoreWriter::tee`),
/// in index order; a thread of its own sends them on the channel as
/// `Data` (after `StreamPages`), so that reading the tree's memory,
/// encrypting and the receiver's writing overlap, and the staged
/// pages.img is never read back; the final header follows as
/// `StreamEnd`. The channel is lent to that thread for the round
/// ([`Tee::give_back`]); at most [`TEE_QUEUE`] chunks wait for it.
struct Tee {
    tx: std::sync::Mutex<Option<std::sync::mpsc::SyncSender<TeeItem>>>,
    thread: std::sync::Mutex<Option<TeeThread>>,
}

/// The sending thread: it gives the channel back, and whether it failed.
type TeeThread = std::thread::JoinHandle<(Channel, Result<()>)>;

/// Chunks queued for the sending thread at most.
const TEE_QUEUE: usize = 4;

enum TeeItem {
    Chunk(Vec<u8>),
    End(Vec<u8>),
}

impl Tee {
    fn lend(mut ch: Channel) -> std::sync::Arc<Tee> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<TeeItem>(TEE_QUEUE);
        let thread = std::thread::spawn(move || {
            let send = |item: TeeItem| -> Result<()> {
                match item {
                    // Whole `Data` messages, tag included (`data_messages`).
                    TeeItem::Chunk(msgs) => msgs.chunks(MAX_PLAIN).try_for_each(|m| ch.send(m)),
                    TeeItem::End(header) => ch.send(&Msg::StreamEnd { header }.encode()),
                }
            };
            // The first failure ends the thread: the queue's end makes
            // the pre-dump's next chunk fail.
            let r = rx.iter().try_for_each(send);
            (ch, r)
        });
        std::sync::Arc::new(Tee {
            tx: std::sync::Mutex::new(Some(tx)),
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    /// Ends the round: waits until everything queued was sent; the
    /// channel and whether sending failed.
    fn give_back(&self) -> (Channel, Result<()>) {
        drop(self.tx.lock().unwrap_or_else(|e| e.into_inner()).take());
        let t = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        match t.map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => unreachable!("give_back is called once"),
        }
    }

    fn queue(&self, item: TeeItem) -> Result<()> {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone();
        tx.and_then(|tx| tx.send(item).ok()).ok_or_else(|| {
            Error::io(
                std::path::Path::new("migration channel"),
                std::io::Error::other("sending the round's pages failed"),
            )
        })
    }
}

/// `stored` as `Data` messages laid end to end, each [`MAX_PLAIN`] bytes
/// but the last: the one copy between the chunk and its encryption.
fn data_messages(stored: &[u8]) -> Vec<u8> {
    let per = MAX_PLAIN - 1;
    let mut v = Vec::with_capacity(stored.len() + stored.len().div_ceil(per));
    for piece in stored.chunks(per) {
        v.push(5); // Msg::Data
        v.extend_from_slice(piece);
    }
    v
}

impl crate::image::pages::ChunkSink for Tee {
    fn put(&self, _idx: u32, _entry: &crate::image::proto::PageChunk, stored: &[u8]) -> Result<()> {
        self.queue(TeeItem::Chunk(data_messages(stored)))
    }

    fn finish(
        &self,
        _store: &crate::image::proto::PageStore,
        header: &crate::image::Header,
    ) -> Result<()> {
        self.queue(TeeItem::End(header.encode().to_vec()))
    }
}

/// One pre-copy round: the pre-dump of layer `idx` with its pages
/// streamed as they are read ([`Tee`]; post-copy: none sent), then the
/// layer's other files. Returns the channel (lent to the sending thread
/// meanwhile) and the bytes the round sent.
fn round(
    mut ch: Channel,
    work: &Work,
    mut popts: PreDumpOptions,
    idx: u32,
    lazy: bool,
) -> (Channel, Result<u64>) {
    if lazy {
        let r = dump::pre_dump(&popts).and_then(|_| send_layer(&mut ch, work, idx, true, false));
        return (ch, r);
    }
    let before = ch.sent;
    if let Err(e) = ch
        .send(&Msg::Layer { index: idx }.encode())
        .and_then(|()| ch.send(&Msg::StreamPages.encode()))
    {
        return (ch, Err(e));
    }
    info!("migrate: round {idx} streams its pages as the pre-dump reads them");
    let tee = Tee::lend(ch);
    popts.page_tee = Some(crate::options::PageTee(tee.clone()));
    let dumped = dump::pre_dump(&popts);
    drop(popts);
    let (mut ch, streamed) = tee.give_back();
    // A failed send is the cause of a pre-dump that failed with it.
    let r = streamed
        .and(dumped)
        .and_then(|_| send_layer(&mut ch, work, idx, false, true));
    let sent = ch.sent - before;
    (ch, r.map(|_| sent))
}

/// When each step of the final phase ended (post-copy's time to running,
/// reported as `stats lazy_split:`): the frozen dump, its layer sent and
/// stored, the receiver's verdict, the source tree killed (hand-over
/// mode), `Go` sent.
#[derive(Debug, Default, Clone, Copy)]
struct Split {
    /// When the final dump froze the tree (it ran until then).
    frozen: Option<Instant>,
    dumped: Option<Instant>,
    sent: Option<Instant>,
    verdict: Option<Instant>,
    killed: Option<Instant>,
    go: Option<Instant>,
}

impl Split {
    /// `lazy_split: pre_freeze_ms=.. dump_ms=.. send_ms=.. verdict_ms=..
    /// go_ms=.. dest_ms=.. kill_ms=..`: each step's share of the time from
    /// `t0` (the final dump's start; the tree runs until `pre_freeze_ms`)
    /// to `running` (the destination's report); `kill_ms`
    /// (hand-over mode) is apart: from Go until the source tree's exits
    /// were collected, while the destination prepares its restore.
    fn line(&self, t0: Instant, running: Option<Instant>) -> String {
        let mut prev = t0;
        let mut out = String::from("lazy_split:");
        let steps = [
            ("pre_freeze_ms", self.frozen),
            ("dump_ms", self.dumped),
            ("send_ms", self.sent),
            ("verdict_ms", self.verdict),
            ("go_ms", self.go),
            ("dest_ms", running),
        ];
        for (name, at) in steps {
            let ms = at.map_or(0.0, |t| {
                let d = t.saturating_duration_since(prev);
                prev = prev.max(t);
                d.as_secs_f64() * 1e3
            });
            out.push_str(&format!(" {name}={ms:.1}"));
        }
        if let (Some(g), Some(k)) = (self.go, self.killed) {
            let ms = k.saturating_duration_since(g).as_secs_f64() * 1e3;
            out.push_str(&format!(" kill_ms={ms:.1}"));
        }
        out
    }
}

/// The pids of the tree now (for the pre-checks only).
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

/// What the final step concluded, seen from inside the frozen dump.
enum Handed {
    /// The destination runs the tree (its root pid).
    Done(i32),
    /// Hand-over mode: kill the source, then tell the receiver to go.
    Handover,
}

/// `cairn migrate`: 0 once the destination runs the tree and the source
/// tree is gone; otherwise an error whose exit code says what became of
/// the source tree ([`exit`]).
pub fn migrate(o: &MigrateOptions) -> Result<i32> {
    let pid = o.dump.pid;
    let key = channel::read_key(&o.key)?;
    // The layers live as long as the migration: no fsync (image::staging).
    crate::image::staging::set_durable(false);
    if pid <= 0 || !crate::sys::task::pid_exists(pid) {
        return Err(Error::sys(
            pid,
            "migrate",
            std::io::Error::from_raw_os_error(libc::ESRCH),
        ));
    }
    // The source is killed once the destination runs it: only a tree
    // cairn could bring back is migrated.
    crate::restore::check_restorable(&tree_pids(pid))?;
    let start_time = procfs::read_stat(pid)?.starttime;
    let t0 = Instant::now();
    let hello = Msg::Hello {
        version: VERSION,
        boot_id: procfs::boot_id().unwrap_or_default(),
        hostname: procfs::read_proc_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        tcp_established: o.dump.tcp_established,
        lazy: o.lazy,
    };
    let (ch, welcome) = Channel::connect(&o.to, &key, &hello.encode()).map_err(|e| {
        failed(
            exit::RUNS_ON,
            format!("{e}; pid {pid} and its tree were not touched"),
        )
    })?;
    match Msg::decode(&welcome) {
        Ok(Msg::Welcome { version, .. }) if version == VERSION => {}
        other => {
            return Err(failed(
                exit::RUNS_ON,
                format!(
                    "{}: not a cairn receiver of protocol {VERSION} ({other:?}); pid {pid} and its \
                     tree were not touched",
                    o.to
                ),
            ))
        }
    }
    eprintln!("cairn: migrate: connected to {} (authenticated)", o.to);
    let mut work = Work::create()?;
    let (back, r) = precopy(ch, &mut work, o);
    let mut ch = back;
    let rounds = match r {
        Ok(n) => n,
        Err(e) => {
            let _ = ch.send(&Msg::Abort { why: e.to_string() }.encode());
            release_tracking(pid, start_time);
            return Err(failed(
                exit::RUNS_ON,
                format!("migration failed during pre-copy: {e}; pid {pid} and its tree run on as before"),
            ));
        }
    };
    // The final dump: the tree stays frozen from here until the
    // destination runs it (frozen mode) or until it is killed (hand-over
    // mode).
    let idx = rounds + 1;
    let dopts = DumpOptions {
        images_dir: work.path.join(idx.to_string()),
        leave_running: true,
        incr: IncrOptions {
            prev_images_dir: Some(PathBuf::from(format!("../{}", idx - 1))),
            track_mem: false,
            dirty_tracking: o.dump.incr.dirty_tracking.clone(),
        },
        // The tree must stay frozen until the destination runs it: a
        // background snapshot (kinds::memory::bgsnap) would thaw it
        // before its pages are copied.
        freeze: crate::options::FreezeOptions {
            background_snapshot: crate::kinds::memory::bgsnap::Mode::Off,
            ..o.dump.freeze.clone()
        },
        ..o.dump.clone()
    };
    work.layers.push(idx.to_string());
    let t_final = Instant::now();
    let mut handed: Option<Result<Handed>> = None;
    let mut served: Option<super::postcopy::Served> = None;
    let sent_before = ch.sent;
    let mut split = Split::default();
    // Hand-over mode: whether Go went out (sent as the tree is killed).
    let mut go: Option<Result<()>> = None;
    info!("migrate: final dump (layer {idx}) begins");
    let dumped = dump::dump_then(&dopts, &mut |stats| {
        split.frozen = stats.frozen_at;
        split.dumped = Some(Instant::now());
        info!("migrate: final dump complete, the tree frozen; sending its layer");
        let r = final_step(&mut ch, &work, idx, o.lazy, &mut served, &mut split);
        if matches!(r, Ok(Handed::Handover)) {
            // Hand-over: the tree dies now and the destination is told
            // at once, so that it loads the images while this kernel
            // frees the tree's memory (dump_then's kill then waits for
            // the exits); its restore waits for the pids itself.
            for p in tree_pids(pid) {
                let _ = crate::sys::task::kill(p, libc::SIGKILL);
            }
            go = Some(ch.send(&Msg::Go.encode()));
            split.go = Some(Instant::now());
            info!("migrate: the source tree was sent SIGKILL; Go sent");
        }
        let then = if r.is_ok() { Then::Kill } else { Then::Thaw };
        handed = Some(r);
        then
    });
    if matches!(handed, Some(Ok(Handed::Handover))) {
        split.killed = Some(Instant::now());
        info!("migrate: the source tree is gone (its exits collected)");
    }
    let report =
        |ch: &Channel, root: i32, served: &Option<super::postcopy::Served>, split: &Split| {
            let total = t0.elapsed();
            let down = t_final.elapsed();
            if let Some(s) = served {
                // From the freeze (the final dump's start if unknown).
                let frozen = split.frozen.unwrap_or(t_final);
                let running = s.running.map_or(0.0, |t| {
                    t.saturating_duration_since(frozen).as_secs_f64() * 1e3
                });
                eprintln!(
                "cairn: migrate: post-copy: the tree ran on the destination {running:.0} ms after \
                 the final dump froze it; stats lazy_running_ms={running:.0} lazy_chunks={} \
                 lazy_wanted={} lazy_bytes={}",
                s.chunks, s.wanted, s.bytes
            );
                eprintln!("cairn: migrate: stats {}", split.line(t_final, s.running));
            }
            eprintln!(
                "cairn: migrate: done: root pid {root} runs on {}; stats rounds={rounds} \
             bytes_sent={} final_bytes={} total_ms={:.0} downtime_ms={:.0}",
                o.to,
                ch.sent,
                ch.sent - sent_before,
                total.as_secs_f64() * 1e3,
                down.as_secs_f64() * 1e3
            );
        };
    match (dumped, handed) {
        (Err(e), _) => {
            // The dump failed or was refused: it thawed the tree.
            let _ = ch.send(&Msg::Abort { why: e.to_string() }.encode());
            release_tracking(pid, start_time);
            Err(failed(
                exit::RUNS_ON,
                format!("the final dump failed: {e}; pid {pid} and its tree run on as before"),
            ))
        }
        (Ok(_), None) => Err(Error::Restore(
            "internal: the final dump decided nothing".into(),
        )),
        (Ok(_), Some(Err(e))) => {
            let _ = ch.send(&Msg::Abort { why: e.to_string() }.encode());
            Err(failed(
                exit::RUNS_ON,
                format!(
                    "migration failed after the final dump: {e}; pid {pid} and its tree were \
                     thawed and run on as before"
                ),
            ))
        }
        (Ok(_), Some(Ok(Handed::Done(root)))) => {
            report(&ch, root, &served, &split);
            Ok(0)
        }
        (Ok(_), Some(Ok(Handed::Handover))) => {
            // The source tree is dead; its images are here and there.
            let sent = go.take().unwrap_or_else(|| ch.send(&Msg::Go.encode()));
            let r = sent.and_then(|()| {
                if o.lazy {
                    let s = super::postcopy::serve(&mut ch, &work.path, idx)?;
                    let root = s.root;
                    served = Some(s);
                    return Ok(root);
                }
                match expect(&mut ch, RESTORE_TIMEOUT, "restoring")? {
                    Msg::Outcome { ok: true, root, .. } => {
                        let _ = ch.send(&Msg::Ack.encode());
                        Ok(root)
                    }
                    Msg::Outcome { why, .. } => Err(Error::Restore(why)),
                    m => Err(Error::Restore(format!(
                        "expected Outcome, got {}",
                        m.name()
                    ))),
                }
            });
            match r {
                Ok(root) => {
                    report(&ch, root, &served, &split);
                    Ok(0)
                }
                Err(e) => {
                    let top = work.path.join(idx.to_string());
                    match restore_locally(&top, o.dump.tcp_established) {
                        Ok(()) => Err(failed(
                            exit::RESTORED_LOCALLY,
                            format!(
                                "the destination did not run the tree ({e}); pid {pid} and its \
                                 tree were restored here from the migration's images"
                            ),
                        )),
                        Err(le) => {
                            work.keep = true;
                            Err(failed(
                                exit::LOST,
                                format!(
                                    "the destination did not run the tree ({e}) and restoring \
                                     it here failed too ({le}); its images are kept in {}",
                                    top.display()
                                ),
                            ))
                        }
                    }
                }
            }
        }
    }
}

/// The pre-copy rounds: pre-dumps while the tree runs, each sent at
/// once, until what one round leaves fits `max_downtime` at the measured
/// bandwidth, or the round limit. Returns the number of layers sent.
fn precopy(mut ch: Channel, work: &mut Work, o: &MigrateOptions) -> (Channel, Result<u32>) {
    let t0 = Instant::now();
    let mut sent_total = 0u64;
    let mut send_time = Duration::ZERO;
    let mut prev_bytes = u64::MAX;
    let mut idx = 0u32;
    loop {
        idx += 1;
        let name = idx.to_string();
        let popts = PreDumpOptions {
            pid: o.dump.pid,
            images_dir: work.path.join(&name),
            compress_level: o.dump.compress_level,
            incr: IncrOptions {
                prev_images_dir: (idx > 1).then(|| PathBuf::from(format!("../{}", idx - 1))),
                track_mem: true,
                dirty_tracking: o.dump.incr.dirty_tracking.clone(),
            },
            freeze: o.dump.freeze.clone(),
            page_tee: None,
        };
        work.layers.push(name);
        // The whole round counts for the bandwidth: its pages go out
        // while the pre-dump reads them.
        let t = Instant::now();
        let (back, r) = round(ch, work, popts, idx, o.lazy);
        ch = back;
        let bytes = match r {
            Ok(b) => b,
            Err(e) => return (ch, Err(e)),
        };
        let took = t.elapsed();
        sent_total += bytes;
        send_time += took;
        // Bandwidth over everything sent so far: the first, full layer
        // dominates it, later small ones would measure mostly latency.
        let bw = sent_total as f64 / send_time.as_secs_f64().max(1e-3);
        let est = Duration::from_secs_f64(bytes as f64 / bw);
        eprintln!(
            "cairn: migrate: round {idx}: {bytes} bytes in {:.0} ms ({:.1} MB/s measured); \
             the next round is estimated at {:.0} ms",
            took.as_secs_f64() * 1e3,
            bw / 1e6,
            est.as_secs_f64() * 1e3
        );
        if o.lazy {
            // Post-copy: one round, so that the final dump (frozen)
            // copies only what changed since; no page was sent.
            break;
        }
        if est <= o.max_downtime {
            break;
        }
        if idx >= o.max_rounds {
            eprintln!(
                "cairn: migrate: round limit {} reached without fitting --max-downtime {:?}: \
                 proceeding with the final dump (the downtime will be longer)",
                o.max_rounds, o.max_downtime
            );
            break;
        }
        if idx >= 3 && bytes >= prev_bytes {
            eprintln!(
                "cairn: migrate: the tree dirties memory as fast as it is sent (round {idx}: \
                 {bytes} bytes, round {}: {prev_bytes}): proceeding with the final dump",
                idx - 1
            );
            break;
        }
        prev_bytes = bytes;
    }
    info!(
        "migrate: pre-copy: {idx} rounds, {sent_total} bytes in {:?}",
        t0.elapsed()
    );
    (ch, Ok(idx))
}

/// Inside the frozen final dump: send its layer, ask for the verdict and,
/// in frozen mode, have the destination restore the tree.
fn final_step(
    ch: &mut Channel,
    work: &Work,
    idx: u32,
    lazy: bool,
    served: &mut Option<super::postcopy::Served>,
    split: &mut Split,
) -> Result<Handed> {
    let peer = ch.peer.clone();
    let perr = |why: String| {
        Error::io(
            std::path::Path::new(&peer),
            std::io::Error::other(format!("migration protocol: {why}")),
        )
    };
    let bytes = send_layer(ch, work, idx, lazy, false)?;
    split.sent = Some(Instant::now());
    info!("migrate: final layer sent and stored ({bytes} bytes); waiting for the verdict");
    ch.send(&Msg::Final.encode())?;
    let verdict = expect(ch, VERDICT_TIMEOUT, "checking the images")?;
    split.verdict = Some(Instant::now());
    info!("migrate: verdict {}", verdict.name());
    match verdict {
        Msg::Verdict {
            mode: Mode::Refuse,
            why,
        } => Err(perr(format!("the receiver refuses the tree: {why}"))),
        Msg::Verdict {
            mode: Mode::Handover,
            ..
        } => {
            info!("migrate: the destination shares this pid space: hand-over mode");
            Ok(Handed::Handover)
        }
        Msg::Verdict {
            mode: Mode::Frozen, ..
        } => {
            ch.send(&Msg::Go.encode())?;
            split.go = Some(Instant::now());
            if lazy {
                // Post-copy: the tree stays frozen here until every page
                // is on the destination.
                let s = super::postcopy::serve(ch, &work.path, idx)?;
                let root = s.root;
                *served = Some(s);
                return Ok(Handed::Done(root));
            }
            match expect(ch, RESTORE_TIMEOUT, "restoring")? {
                Msg::Outcome { ok: true, root, .. } => {
                    ch.send(&Msg::Ack.encode())?;
                    Ok(Handed::Done(root))
                }
                Msg::Outcome { why, .. } => Err(perr(format!("the destination failed: {why}"))),
                m => Err(perr(format!("expected Outcome, got {}", m.name()))),
            }
        }
        m => Err(perr(format!("expected Verdict, got {}", m.name()))),
    }
}

/// Ends the dirty tracking the pre-dumps left (the keeper's
/// userfaultfds): a migration that failed leaves nothing in the tree.
fn release_tracking(pid: i32, start_time: u64) {
    match crate::track::keeper::take(pid, start_time) {
        Ok(Some((_, fds))) => drop(fds),
        Ok(None) => {}
        Err(e) => warn!("pid {pid}: dirty tracking not released: {e}"),
    }
}

/// Restores the tree here from its own images (hand-over mode, the
/// destination failed), once its pids are free.
fn restore_locally(top: &std::path::Path, tcp: bool) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", e))?;
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let mut cmd = std::process::Command::new(&exe);
        cmd.arg("restore").arg("-d").arg("-D").arg(top);
        if tcp {
            cmd.arg("--tcp-established");
        }
        let out = cmd
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| Error::io(&exe, e))?;
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if Instant::now() > end || !err.contains("taken") && !err.contains("in use") {
            return Err(Error::Restore(err));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_messages_split_as_the_receiver_reads_them() {
        for len in [1, MAX_PLAIN - 1, MAX_PLAIN, 3 * (MAX_PLAIN - 1) + 7] {
            let stored: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let v = data_messages(&stored);
            let mut back = Vec::new();
            for m in v.chunks(MAX_PLAIN) {
                match Msg::decode(m).unwrap() {
                    Msg::Data(d) => back.extend_from_slice(&d),
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(back, stored, "{len} bytes");
        }
    }
}
