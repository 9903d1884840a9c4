//! `cairn receive`: accepts migrations, writes their layers and restores
//! the tree. See the module documentation of [`crate::migrate`].

use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::channel::{self, Channel, Key};
use super::wire::{image_name_ok, Mode, Msg, VERSION};
use crate::error::{Error, Result};
use crate::image::proto::Pstree;
use crate::image::{names, ImageDir, ImageType};
use crate::options::RestoreOptions;
use crate::sys::safefs;

/// What `cairn receive` does.
#[derive(Debug, Clone)]
pub struct ReceiveOptions {
    pub listen: String,
    pub key: PathBuf,
    pub once: bool,
    pub pidfile: Option<PathBuf>,
    pub images_dir: Option<PathBuf>,
    /// Accept post-copy migrations (`--lazy-ok`).
    pub lazy_ok: bool,
}

/// At most this many layers in one migration.
pub const MAX_LAYERS: u32 = 64;
/// At most this many files in one layer.
pub const MAX_FILES: usize = 100_000;
/// How long the receiver waits for the source's next message.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the receiver waits for the source's Ack once the restored
/// tree runs (frozen mode), before it kills that tree.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a hand-over waits for the source's pids to be free.
pub const PIDS_FREE_TIMEOUT: Duration = Duration::from_secs(30);

/// Listens and receives; with `once`, returns after the first migration
/// that got past the handshake (0 once its tree runs, an error else).
/// Connections that fail the handshake (another key) are logged and
/// ignored.
pub fn receive(o: &ReceiveOptions) -> Result<i32> {
    let key = channel::read_key(&o.key)?;
    // The layers live as long as the migration: no fsync (image::staging).
    crate::image::staging::set_durable(false);
    let (listener, local) = channel::listen(&o.listen)?;
    eprintln!("cairn: receive: listening on {local}");
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(x) => x,
            Err(e) => {
                warn!("receive: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let mut authenticated = false;
        match session(stream, &key, o, &mut authenticated) {
            Ok(root) => {
                eprintln!("cairn: receive: the tree from {peer} runs here, root pid {root}");
                if o.once {
                    return Ok(0);
                }
            }
            Err(e) if !authenticated => {
                eprintln!("cairn: receive: connection from {peer} refused: {e}");
            }
            Err(e) => {
                eprintln!("cairn: receive: migration from {peer} failed: {e}");
                if o.once {
                    return Err(e);
                }
            }
        }
    }
}

/// Where the layers go: `-D DIR` (kept), or a private directory in the
/// temporary directory (removed at the end).
struct Store {
    /// The directory that holds the layer directories.
    fd: OwnedFd,
    path: PathBuf,
    /// A private temporary directory: its parent and name, to remove it.
    temp: Option<(OwnedFd, String)>,
    layers: Vec<String>,
}

impl Store {
    fn open(images_dir: Option<&Path>) -> Result<Store> {
        match images_dir {
            Some(d) => {
                if std::fs::symlink_metadata(d).is_err() {
                    safefs::make_dirs(d).map_err(|e| Error::io(d, e))?;
                }
                let fd = safefs::open_dir(d).map_err(|e| Error::io(d, e))?;
                let st = rustix::fs::fstat(&fd).map_err(|e| Error::io(d, e.into()))?;
                safefs::check_trusted(&st).map_err(|why| {
                    Error::io(
                        d,
                        std::io::Error::other(format!("not a directory to receive into: {why}")),
                    )
                })?;
                Ok(Store {
                    fd,
                    path: d.to_path_buf(),
                    temp: None,
                    layers: Vec::new(),
                })
            }
            None => {
                let tmp = std::env::temp_dir();
                let parent = safefs::open_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
                let hex = safefs::random_hex().map_err(|e| Error::io(&tmp, e))?;
                let name = format!("cairn-receive-{hex}");
                let fd = safefs::mkdir_private(&parent, OsStr::new(&name))
                    .map_err(|e| Error::io(tmp.join(&name), e))?;
                Ok(Store {
                    fd,
                    path: tmp.join(&name),
                    temp: Some((parent, name)),
                    layers: Vec::new(),
                })
            }
        }
    }

    fn layer_path(&self, i: usize) -> PathBuf {
        self.path.join(&self.layers[i])
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some((parent, name)) = &self.temp {
            for l in &self.layers {
                let _ = safefs::remove_dir_by_fd(&self.fd, OsStr::new(l), None);
            }
            if let Err(e) = safefs::remove_dir_by_fd(parent, OsStr::new(name), None) {
                warn!("{}: not removed: {e}", self.path.display());
            }
        }
    }
}

/// The file being received.
struct Incoming {
    name: String,
    file: std::fs::File,
    /// Bytes still due; for a streamed pages.img, the free space left.
    left: u64,
    /// A pages.img streamed during a pre-copy round (`StreamPages`): it
    /// ends with `StreamEnd`, not after `left` bytes.
    streamed: bool,
}

/// Bytes free for an unprivileged writer on the file system of `dir`
/// (unknown: no limit; the writes then fail as they come).
fn free_bytes(dir: &impl std::os::fd::AsFd) -> u64 {
    rustix::fs::fstatvfs(dir)
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
        .unwrap_or(u64::MAX)
}

/// The layer being received.
struct LayerIn {
    fd: OwnedFd,
    path: PathBuf,
    names: std::collections::HashSet<String>,
    file: Option<Incoming>,
}

fn proto_err(peer: &str, why: impl std::fmt::Display) -> Error {
    Error::io(
        Path::new(peer),
        std::io::Error::other(format!("migration protocol: {why}")),
    )
}

/// One connection: the handshake, the layers, the restore. Returns the
/// restored root pid.
fn session(
    stream: std::net::TcpStream,
    key: &Key,
    o: &ReceiveOptions,
    authenticated: &mut bool,
) -> Result<i32> {
    let my_boot = crate::procfs::boot_id().unwrap_or_default();
    let mut hello = None;
    let (mut ch, _) = Channel::accept(stream, key, |p| {
        let m = Msg::decode(p).map_err(|e| proto_err("peer", e))?;
        let Msg::Hello { version, .. } = &m else {
            return Err(proto_err(
                "peer",
                format!("expected Hello, got {}", m.name()),
            ));
        };
        if *version != VERSION {
            return Err(proto_err(
                "peer",
                format!("protocol version {version}, this cairn speaks {VERSION}"),
            ));
        }
        hello = Some(m);
        Ok(Msg::Welcome {
            version: VERSION,
            boot_id: my_boot.clone(),
        }
        .encode())
    })?;
    *authenticated = true;
    let Some(Msg::Hello {
        boot_id: src_boot,
        hostname,
        tcp_established,
        lazy,
        ..
    }) = hello
    else {
        return Err(proto_err(&ch.peer, "no Hello"));
    };
    eprintln!(
        "cairn: receive: migration from {} (host {hostname:?}) authenticated",
        ch.peer
    );
    let r = if lazy && !o.lazy_ok {
        Err(proto_err(
            &ch.peer,
            "a post-copy (--lazy) migration, which this receiver does not accept (--lazy-ok)",
        ))
    } else {
        receive_layers(&mut ch, o, &src_boot, tcp_established, lazy)
    };
    if let Err(e) = &r {
        let _ = ch.send(&Msg::Abort { why: e.to_string() }.encode());
    }
    r
}

fn receive_layers(
    ch: &mut Channel,
    o: &ReceiveOptions,
    src_boot: &str,
    tcp_established: bool,
    lazy: bool,
) -> Result<i32> {
    let peer = ch.peer.clone();
    let mut store = Store::open(o.images_dir.as_deref())?;
    // Post-copy: each layer's sparse pages.img, open for writing.
    let mut sparse: Vec<Option<std::fs::File>> = Vec::new();
    let mut layer: Option<LayerIn> = None;
    let t0 = Instant::now();
    let mut bytes = 0u64;
    loop {
        let m = Msg::decode(ch.recv(IDLE_TIMEOUT)?).map_err(|e| proto_err(&peer, e))?;
        match m {
            Msg::Layer { index } => {
                if layer.is_some() {
                    return Err(proto_err(&peer, "Layer inside a layer"));
                }
                if index as usize != store.layers.len() + 1 || index > MAX_LAYERS {
                    return Err(proto_err(
                        &peer,
                        format!(
                            "layer {index} where layer {} was due (at most {MAX_LAYERS})",
                            store.layers.len() + 1
                        ),
                    ));
                }
                let name = index.to_string();
                let path = store.path.join(&name);
                let fd = safefs::mkdir_private(&store.fd, OsStr::new(&name))
                    .map_err(|e| Error::io(&path, e))?;
                store.layers.push(name);
                layer = Some(LayerIn {
                    fd,
                    path,
                    names: Default::default(),
                    file: None,
                });
            }
            Msg::Sparse { name, size, head } => {
                let Some(l) = layer.as_mut() else {
                    return Err(proto_err(&peer, "Sparse outside a layer"));
                };
                if !lazy || name != names::PAGES || head > size || head > 4096 {
                    return Err(proto_err(
                        &peer,
                        format!("refused sparse file {name:?} ({head} of {size} bytes)"),
                    ));
                }
                if l.file.is_some() || l.names.contains(&name) {
                    return Err(proto_err(
                        &peer,
                        "Sparse before the previous file is complete",
                    ));
                }
                let free = free_bytes(&l.fd);
                let path = l.path.join(&name);
                if size > free {
                    return Err(Error::io(
                        &path,
                        std::io::Error::other(format!(
                            "{size} bytes announced, {free} bytes free on this file system"
                        )),
                    ));
                }
                let file = safefs::create_excl(&l.fd, OsStr::new(&name), 0o600)
                    .map_err(|e| Error::io(&path, e))?;
                file.set_len(size).map_err(|e| Error::io(&path, e))?;
                let keep = file.try_clone().map_err(|e| Error::io(&path, e))?;
                let i = store.layers.len() - 1;
                sparse.resize_with(i + 1, || None);
                sparse[i] = Some(keep);
                l.names.insert(name.clone());
                let inc = Incoming {
                    name,
                    file,
                    left: head,
                    streamed: false,
                };
                if head == 0 {
                    finish_file(l, inc)?;
                } else {
                    l.file = Some(inc);
                }
            }
            Msg::StreamPages => {
                let Some(l) = layer.as_mut() else {
                    return Err(proto_err(&peer, "StreamPages outside a layer"));
                };
                let name = names::PAGES.to_string();
                if lazy || l.file.is_some() || l.names.contains(&name) {
                    return Err(proto_err(
                        &peer,
                        "StreamPages in post-copy, before the previous file is complete, or twice",
                    ));
                }
                // The size is not known yet: the chunks may fill what is
                // free now, no more.
                let free = free_bytes(&l.fd);
                let path = l.path.join(&name);
                let mut file = safefs::create_excl(&l.fd, OsStr::new(&name), 0o600)
                    .map_err(|e| Error::io(&path, e))?;
                // The header's place; StreamEnd writes it.
                file.write_all(&[0u8; crate::image::HEADER_LEN])
                    .map_err(|e| Error::io(&path, e))?;
                l.names.insert(name.clone());
                l.file = Some(Incoming {
                    name,
                    file,
                    left: free,
                    streamed: true,
                });
            }
            Msg::StreamEnd { header } => {
                let Some(l) = layer.as_mut() else {
                    return Err(proto_err(&peer, "StreamEnd outside a layer"));
                };
                let Some(f) = l.file.take_if(|f| f.streamed) else {
                    return Err(proto_err(&peer, "StreamEnd without StreamPages"));
                };
                use std::os::unix::fs::FileExt;
                f.file
                    .write_all_at(&header, 0)
                    .map_err(|e| Error::io(l.path.join(&f.name), e))?;
                finish_file(l, f)?;
            }
            Msg::File { name, size } => {
                let Some(l) = layer.as_mut() else {
                    return Err(proto_err(&peer, "File outside a layer"));
                };
                if l.file.is_some() {
                    return Err(proto_err(&peer, "File before the previous one is complete"));
                }
                if !image_name_ok(&name) || l.names.contains(&name) || l.names.len() >= MAX_FILES {
                    return Err(proto_err(
                        &peer,
                        format!(
                            "refused file name {name:?}: not an image file name cairn writes, \
                             sent twice, or too many files"
                        ),
                    ));
                }
                let free = free_bytes(&l.fd);
                if size > free {
                    return Err(Error::io(
                        l.path.join(&name),
                        std::io::Error::other(format!(
                            "{size} bytes announced, {free} bytes free on this file system"
                        )),
                    ));
                }
                let file = safefs::create_excl(&l.fd, OsStr::new(&name), 0o600)
                    .map_err(|e| Error::io(l.path.join(&name), e))?;
                l.names.insert(name.clone());
                let inc = Incoming {
                    name,
                    file,
                    left: size,
                    streamed: false,
                };
                if size == 0 {
                    finish_file(l, inc)?;
                } else {
                    l.file = Some(inc);
                }
            }
            Msg::Data(d) => {
                let Some(l) = layer.as_mut() else {
                    return Err(proto_err(&peer, "Data outside a layer"));
                };
                let Some(f) = l.file.as_mut() else {
                    return Err(proto_err(&peer, "Data outside a file"));
                };
                if d.len() as u64 > f.left {
                    return Err(proto_err(
                        &peer,
                        if f.streamed {
                            format!("{}: more bytes than this file system has free", f.name)
                        } else {
                            format!("{}: more bytes than announced", f.name)
                        },
                    ));
                }
                f.file
                    .write_all(&d)
                    .map_err(|e| Error::io(l.path.join(&f.name), e))?;
                f.left -= d.len() as u64;
                bytes += d.len() as u64;
                if f.left == 0 && !f.streamed {
                    let inc = l.file.take().expect("just checked");
                    finish_file(l, inc)?;
                }
            }
            Msg::EndLayer => {
                let Some(l) = layer.take() else {
                    return Err(proto_err(&peer, "EndLayer outside a layer"));
                };
                if let Some(f) = &l.file {
                    return Err(proto_err(
                        &peer,
                        format!(
                            "{}: {} bytes missing at the end of the layer",
                            f.name, f.left
                        ),
                    ));
                }
                if crate::image::staging::durable() {
                    safefs::sync(&l.fd).map_err(|e| Error::io(&l.path, e))?;
                }
                info!(
                    "receive: layer {} complete ({} files)",
                    l.path.display(),
                    l.names.len()
                );
                ch.send(&Msg::LayerOk.encode())?;
            }
            Msg::Final => {
                if layer.is_some() || store.layers.is_empty() {
                    return Err(proto_err(&peer, "Final before a complete layer"));
                }
                let secs = t0.elapsed().as_secs_f64();
                info!("receive: Final: checking the chain");
                info!(
                    "receive: {} layers, {bytes} bytes in {secs:.3} s",
                    store.layers.len()
                );
                let lazy = lazy.then(|| {
                    sparse.resize_with(store.layers.len(), || None);
                    sparse
                });
                return finish(ch, &store, o, src_boot, tcp_established, lazy);
            }
            Msg::Abort { why } => {
                return Err(proto_err(&peer, format!("the source gave up: {why}")));
            }
            other => {
                return Err(proto_err(
                    &peer,
                    format!("unexpected {} while receiving layers", other.name()),
                ))
            }
        }
    }
}

fn finish_file(l: &mut LayerIn, f: Incoming) -> Result<()> {
    if !crate::image::staging::durable() {
        return Ok(());
    }
    f.file
        .sync_all()
        .map_err(|e| Error::io(l.path.join(&f.name), e))
}

/// Whether the pids of `pstree` are free here, or held by the very
/// processes of the source's tree (same boot, same start time: this is
/// the source's machine, or one pid space with it).
fn pid_mode(pstree: &Pstree, src_boot: &str) -> std::result::Result<Mode, String> {
    let same_boot = crate::procfs::boot_id().is_ok_and(|b| b == src_boot);
    let mut held_by_source = false;
    for e in &pstree.entries {
        let pid = e.pid as i32;
        match crate::procfs::read_stat(pid) {
            Err(_) => continue,
            Ok(st) if same_boot && st.starttime == e.start_time => held_by_source = true,
            Ok(st) => {
                return Err(format!(
                    "pid {pid} is taken here by another process ({:?}, started at tick {})",
                    st.comm, st.starttime
                ))
            }
        }
    }
    Ok(if held_by_source {
        Mode::Handover
    } else {
        Mode::Frozen
    })
}

fn finish(
    ch: &mut Channel,
    store: &Store,
    o: &ReceiveOptions,
    src_boot: &str,
    tcp_established: bool,
    lazy: Option<Vec<Option<std::fs::File>>>,
) -> Result<i32> {
    let peer = ch.peer.clone();
    let n = store.layers.len();
    let top = store.layer_path(n - 1);
    // The chain is this migration's own: each layer's parent is the one
    // received before it, under its number.
    let checked = (|| -> Result<(Pstree, i32)> {
        for i in 0..n {
            let (_, inv) = ImageDir::load(&store.layer_path(i))?;
            let want = if i == 0 {
                String::new()
            } else {
                format!("../{}", store.layers[i - 1])
            };
            if inv.parent_dir != want {
                return Err(proto_err(
                    &peer,
                    format!(
                        "layer {}: its parent is {:?}, not the layer received before it",
                        i + 1,
                        inv.parent_dir
                    ),
                ));
            }
            if i + 1 < n && !inv.pre_dump {
                return Err(proto_err(
                    &peer,
                    format!("layer {} is not a pre-dump", i + 1),
                ));
            }
        }
        // Every layer's files are there with their listed sizes and
        // header crcs (ImageDir::load above); the restore checks every
        // image and every page chunk it reads before the tree runs, so a
        // full `show --verify` here (it decompresses every page of every
        // layer: seconds per GiB, all of it downtime) would add nothing.
        let (dir, inv) = ImageDir::load(&top)?;
        if inv.pre_dump {
            return Err(proto_err(&peer, "the last layer is a pre-dump, not a dump"));
        }
        let pstree: Pstree = dir.read(ImageType::Pstree, names::PSTREE)?;
        Ok((pstree, inv.root_pid as i32))
    })();
    let (pstree, root) = match checked {
        Ok(x) => x,
        Err(e) => {
            let why = format!("the images do not verify: {e}");
            ch.send(
                &Msg::Verdict {
                    mode: Mode::Refuse,
                    why: why.clone(),
                }
                .encode(),
            )?;
            return Err(proto_err(&peer, why));
        }
    };
    let mode = match pid_mode(&pstree, src_boot) {
        Ok(m) => m,
        Err(why) => {
            ch.send(
                &Msg::Verdict {
                    mode: Mode::Refuse,
                    why: why.clone(),
                }
                .encode(),
            )?;
            return Err(Error::Restore(why));
        }
    };
    info!("receive: images verified; hand-over mode {mode:?}");
    ch.send(
        &Msg::Verdict {
            mode,
            why: String::new(),
        }
        .encode(),
    )?;
    match Msg::decode(ch.recv(IDLE_TIMEOUT)?).map_err(|e| proto_err(&peer, e))? {
        Msg::Go => info!("receive: Go"),
        Msg::Abort { why } => return Err(proto_err(&peer, format!("the source gave up: {why}"))),
        m => return Err(proto_err(&peer, format!("expected Go, got {}", m.name()))),
    }
    if mode == Mode::Handover {
        let t = Instant::now();
        wait_pids_free(&pstree)?;
        info!(
            "receive: the source's pids are free or on their way out after {:.1} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    let ropts = RestoreOptions {
        images_dir: top.clone(),
        detached: lazy.is_none(),
        pidfile: None,
        shell_job: false,
        ignore_file_changes: false,
        pid_restore: None,
        exe_dir: None,
        exe_dir_flag: "--exe-dir".into(),
        tcp_established,
        allow_foreign_images: false,
        compare: false,
        inherit_fds: Vec::new(),
        pid_ns: false,
        ext_unix_sk_lose_peercred: false,
    };
    if let Some(files) = lazy {
        return finish_lazy(ch, store, o, &ropts, files);
    }
    if let Err(e) = crate::restore::restore(&ropts) {
        let why = format!("restore failed: {e}");
        ch.send(
            &Msg::Outcome {
                ok: false,
                root,
                why: why.clone(),
            }
            .encode(),
        )?;
        return Err(Error::Restore(why));
    }
    // Pidfds of the restored tree, in case it must be killed again.
    let pidfds: Vec<(i32, OwnedFd)> = pstree
        .entries
        .iter()
        .filter_map(|e| {
            crate::sys::uffd::pidfd_open(e.pid as i32)
                .ok()
                .map(|f| (e.pid as i32, f))
        })
        .collect();
    let sent = ch.send(
        &Msg::Outcome {
            ok: true,
            root,
            why: String::new(),
        }
        .encode(),
    );
    let acked = sent.and_then(|()| match Msg::decode(ch.recv(ACK_TIMEOUT)?) {
        Ok(Msg::Ack) => Ok(()),
        Ok(m) => Err(proto_err(&peer, format!("expected Ack, got {}", m.name()))),
        Err(e) => Err(proto_err(&peer, e)),
    });
    if let Err(e) = acked {
        if mode == Mode::Frozen {
            // The source may not have learnt that the tree runs here and
            // thaws its own: never two copies.
            for (pid, fd) in &pidfds {
                if let Err(ke) = crate::sys::uffd::pidfd_kill(fd, libc::SIGKILL) {
                    warn!("pid {pid}: kill: {ke}");
                }
            }
            return Err(Error::Restore(format!(
                "the source did not confirm the hand-over ({e}); the restored tree (root pid \
                 {root}) was killed, the source thaws its own"
            )));
        }
        warn!("no Ack from the source ({e}); it was already killed (hand-over mode)");
    }
    if let Some(p) = &o.pidfile {
        safefs::replace_file(p, format!("{root}\n").as_bytes(), 0o644)
            .map_err(|e| Error::io(p, e))?;
    }
    Ok(root)
}

/// Hand-over mode: the source kills its tree, then says Go. Its pids are
/// free once their parent has reaped them, after the kernel has freed
/// their memory; the restore starts as soon as each pid is free or held by
/// a process on its way out ([`crate::procfs::dying`]), and waits for the
/// rest itself once it has loaded the images (`restore::preflight`).
fn wait_pids_free(pstree: &Pstree) -> Result<()> {
    let end = Instant::now() + PIDS_FREE_TIMEOUT;
    loop {
        let busy: Vec<u32> = pstree
            .entries
            .iter()
            .map(|e| e.pid)
            .filter(|&p| crate::sys::task::pid_exists(p as i32) && !crate::procfs::dying(p as i32))
            .collect();
        if busy.is_empty() {
            return Ok(());
        }
        if Instant::now() > end {
            return Err(Error::Restore(format!(
                "pids {busy:?} are still taken {PIDS_FREE_TIMEOUT:?} after the source was told \
                 to kill its tree (not killed?)"
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Post-copy: restores the tree from the received layers, their sparse
/// pages.img (`files`) filled by the pager as the source sends their
/// chunks ([`super::postcopy::restore`]); the pidfile is written once the
/// tree runs. Returns once every page is in place. If the source or the
/// channel fails first, the pager has killed the tree.
fn finish_lazy(
    ch: &mut Channel,
    store: &Store,
    o: &ReceiveOptions,
    ropts: &RestoreOptions,
    files: Vec<Option<std::fs::File>>,
) -> Result<i32> {
    let peer = ch.peer.clone();
    let mut layers = Vec::new();
    for (i, f) in files.into_iter().enumerate() {
        let path = store.layer_path(i);
        let f =
            f.ok_or_else(|| proto_err(&peer, format!("layer {}: no sparse pages.img", i + 1)))?;
        layers.push(super::postcopy::LazyLayer::open(&path, f)?);
    }
    let pages = layers.iter().map(|l| l.pages_path()).collect();
    let ropts = RestoreOptions {
        pidfile: o.pidfile.clone(),
        ..ropts.clone()
    };
    let src = super::postcopy::Source {
        ch,
        layers,
        pages,
        cmd: "receive",
        how: "post-copy".into(),
    };
    super::postcopy::restore(src, &ropts)
}
