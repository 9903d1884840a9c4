//! The CRIU-style building blocks of live migration (issue 16): a page
//! server, a dump that sends its pages to one, and a lazy restore whose
//! missing pages come from the image directory or from a page server.
//!
//! ```text
//! cairn page-server -D DIR --address A --port P --key KEY [--once]
//! cairn dump -t PID -D D2 --page-server --address A --port P --key KEY
//! cairn restore -D D2 --lazy-pages [--page-server A:P --key KEY]
//! ```
//!
//! Every connection is the migration channel ([`super::channel`]: Noise
//! `NNpsk0` with the key of `--key FILE`); a peer without the key is
//! dropped after the handshake's first message and nothing it sent is
//! used. The first message says what the client wants ([`Role`]):
//!
//! - **Push** (`dump --page-server`): the dump's page chunks, in index
//!   order as the dump stores them ([`Pusher`], a
//!   [`crate::image::pages::ChunkSink`]), then `Finish`; the server has
//!   written pages.img and pagestore.img (with an inventory.img listing
//!   them, `pages_only`) into a staging directory of DIR and answers
//!   `Ready` with their sizes and header crcs, which the dump lists in
//!   D2's inventory.img; just before the dump commits D2 it sends
//!   `Commit`, the server moves its files into DIR (the staging commit of
//!   a local dump, `crate::image::staging`) and answers `Committed`. Any
//!   failure before that (a dead dumper, a dead server, a cut link)
//!   removes the server's staging directory and fails the dump, which
//!   thaws the tree: D2 is complete only if DIR is.
//! - **Pull** (`restore --lazy-pages --page-server`): the server sends
//!   pagestore.img and pages.img's header, then serves chunks as post-copy
//!   does (`Want` answered with `Page`s, the rest streamed once the tree
//!   runs, [`super::postcopy::serve_stores`]).
//!
//! How the directories combine: DIR gets the pages (pages.img and
//! pagestore.img), D2 every other image, and D2's inventory.img lists all
//! of them (with the page server's address in `page_server`). Restoring
//! needs both: copy DIR's pages.img and pagestore.img into D2 (`cp
//! DIR/pages.img DIR/pagestore.img D2/`) and restore D2 as any dump, or
//! leave them in DIR, run `cairn page-server -D DIR` and restore D2 with
//! `--lazy-pages --page-server`. A restore of D2 alone names the page
//! server and these two ways.
//!
//! The lazy restore ([`restore_lazy`]) is the post-copy restore of
//! `cairn receive --lazy-ok` ([`super::postcopy::Pager`], the post-copy
//! guardian): the tree runs before its private anonymous memory is in; a
//! fault asks for its chunk first, the rest streams in. From the image
//! directory (no `--page-server`) the pages are served by the page
//! server's code on a thread of the restore, over a loopback connection
//! with a one-time random key: one pager, one protocol, one failure path.
//! If the page source fails before every page is in, the tree is killed.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::channel::{self, Channel, Key, MAX_PLAIN};
use super::postcopy::{self, LazyLayer};
use super::wire::{put_str, Cursor};
use crate::error::{Error, Result};
use crate::image::pages::{ChunkSink, PageStoreReader, PageStoreWriter};
use crate::image::pages::{MAX_CHUNK_COMPRESSED, MAX_CHUNK_RAW};
use crate::image::proto::{ChunkCodec, ImageFile, Inventory, PageChunk, PageStore};
use crate::image::staging::Staging;
use crate::image::{names, Header, ImageDir, ImageType, FORMAT_VERSION, HEADER_LEN};
use crate::options::{PageServerTarget, RestoreOptions};
use crate::sys::safefs;

/// The protocol version of [`Msg::Hello`].
pub const VERSION: u32 = 1;
/// How long either side waits for the other's next message.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// What a client wants of the page server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A dump sends its pages (`dump --page-server`).
    Push = 1,
    /// A lazy restore fetches them (`restore --lazy-pages --page-server`).
    Pull = 2,
}

/// The page server's messages before post-copy's ([`super::wire::Msg`])
/// take over a `Pull`. Their tags (64 and up) are not the migration's, so
/// `cairn receive` and `cairn page-server` refuse each other's clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    Hello {
        version: u32,
        role: Role,
    },
    Welcome {
        version: u32,
    },
    /// Push: chunk `idx` of the page store follows in `Bytes`.
    Chunk {
        idx: u32,
        offset: u64,
        stored: u64,
        raw: u64,
        codec: u8,
        crc: u32,
    },
    /// Bytes of the chunk or file announced last.
    Bytes(Vec<u8>),
    /// Push: every chunk was sent.
    Finish {
        chunks: u32,
        body_len: u64,
    },
    /// Push: the server's pages.img and pagestore.img, staged.
    Ready {
        pages_size: u64,
        pages_crc: u32,
        store_size: u64,
        store_crc: u32,
    },
    /// Push: move them into DIR.
    Commit,
    Committed,
    /// Pull: pages.img's size and header, then pagestore.img (`store`
    /// bytes, in `Bytes`).
    Store {
        pages_size: u64,
        head: Vec<u8>,
        store: u64,
    },
    Abort {
        why: String,
    },
}

impl Msg {
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Vec::new();
        match self {
            Msg::Hello { version, role } => {
                o.push(64);
                o.extend_from_slice(&version.to_le_bytes());
                o.push(*role as u8);
            }
            Msg::Welcome { version } => {
                o.push(65);
                o.extend_from_slice(&version.to_le_bytes());
            }
            Msg::Chunk {
                idx,
                offset,
                stored,
                raw,
                codec,
                crc,
            } => {
                o.push(66);
                o.extend_from_slice(&idx.to_le_bytes());
                o.extend_from_slice(&offset.to_le_bytes());
                o.extend_from_slice(&stored.to_le_bytes());
                o.extend_from_slice(&raw.to_le_bytes());
                o.push(*codec);
                o.extend_from_slice(&crc.to_le_bytes());
            }
            Msg::Bytes(d) => {
                o.reserve(d.len() + 1);
                o.push(67);
                o.extend_from_slice(d);
            }
            Msg::Finish { chunks, body_len } => {
                o.push(68);
                o.extend_from_slice(&chunks.to_le_bytes());
                o.extend_from_slice(&body_len.to_le_bytes());
            }
            Msg::Ready {
                pages_size,
                pages_crc,
                store_size,
                store_crc,
            } => {
                o.push(69);
                o.extend_from_slice(&pages_size.to_le_bytes());
                o.extend_from_slice(&pages_crc.to_le_bytes());
                o.extend_from_slice(&store_size.to_le_bytes());
                o.extend_from_slice(&store_crc.to_le_bytes());
            }
            Msg::Commit => o.push(70),
            Msg::Committed => o.push(71),
            Msg::Store {
                pages_size,
                head,
                store,
            } => {
                o.push(72);
                o.extend_from_slice(&pages_size.to_le_bytes());
                o.extend_from_slice(&(head.len() as u16).to_le_bytes());
                o.extend_from_slice(head);
                o.extend_from_slice(&store.to_le_bytes());
            }
            Msg::Abort { why } => {
                o.push(73);
                put_str(&mut o, why);
            }
        }
        o
    }

    pub fn decode(b: &[u8]) -> std::result::Result<Msg, String> {
        let (&tag, rest) = b.split_first().ok_or("empty message")?;
        let mut c = Cursor(rest);
        let m = match tag {
            64 => Msg::Hello {
                version: c.u32()?,
                role: match c.u8()? {
                    1 => Role::Push,
                    2 => Role::Pull,
                    r => return Err(format!("unknown role {r}")),
                },
            },
            65 => Msg::Welcome { version: c.u32()? },
            66 => Msg::Chunk {
                idx: c.u32()?,
                offset: c.u64()?,
                stored: c.u64()?,
                raw: c.u64()?,
                codec: c.u8()?,
                crc: c.u32()?,
            },
            67 => return Ok(Msg::Bytes(rest.to_vec())),
            68 => Msg::Finish {
                chunks: c.u32()?,
                body_len: c.u64()?,
            },
            69 => Msg::Ready {
                pages_size: c.u64()?,
                pages_crc: c.u32()?,
                store_size: c.u64()?,
                store_crc: c.u32()?,
            },
            70 => Msg::Commit,
            71 => Msg::Committed,
            72 => {
                let pages_size = c.u64()?;
                let n = u16::from_le_bytes(c.take(2)?.try_into().unwrap_or_default()) as usize;
                let head = c.take(n)?.to_vec();
                Msg::Store {
                    pages_size,
                    head,
                    store: c.u64()?,
                }
            }
            73 => Msg::Abort { why: c.str()? },
            t => return Err(format!("unknown page-server message type {t}")),
        };
        if !c.0.is_empty() {
            return Err(format!("{} bytes after message type {tag}", c.0.len()));
        }
        Ok(m)
    }

    fn name(&self) -> &'static str {
        match self {
            Msg::Hello { .. } => "Hello",
            Msg::Welcome { .. } => "Welcome",
            Msg::Chunk { .. } => "Chunk",
            Msg::Bytes(_) => "Bytes",
            Msg::Finish { .. } => "Finish",
            Msg::Ready { .. } => "Ready",
            Msg::Commit => "Commit",
            Msg::Committed => "Committed",
            Msg::Store { .. } => "Store",
            Msg::Abort { .. } => "Abort",
        }
    }
}

fn perr(peer: &str, why: impl std::fmt::Display) -> Error {
    Error::io(
        Path::new(peer),
        std::io::Error::other(format!("page server: {why}")),
    )
}

fn recv(ch: &mut Channel) -> Result<Msg> {
    let peer = ch.peer.clone();
    let m = Msg::decode(ch.recv(IDLE_TIMEOUT)?).map_err(|e| perr(&peer, e))?;
    if let Msg::Abort { why } = m {
        return Err(perr(&peer, format!("the peer gave up: {why}")));
    }
    Ok(m)
}

/// Sends `data` as `Bytes` frames.
fn send_bytes(ch: &mut Channel, data: &[u8]) -> Result<()> {
    for part in data.chunks(MAX_PLAIN - 1) {
        let mut m = Vec::with_capacity(part.len() + 1);
        m.push(67);
        m.extend_from_slice(part);
        ch.send(&m)?;
    }
    Ok(())
}

/// Receives `n` bytes of `Bytes` frames.
fn recv_bytes(ch: &mut Channel, n: u64, limit: u64) -> Result<Vec<u8>> {
    let peer = ch.peer.clone();
    if n > limit {
        return Err(perr(&peer, format!("{n} bytes announced, at most {limit}")));
    }
    let mut out = Vec::with_capacity(n as usize);
    while (out.len() as u64) < n {
        match recv(ch)? {
            Msg::Bytes(d) if out.len() as u64 + d.len() as u64 <= n => out.extend_from_slice(&d),
            Msg::Bytes(_) => return Err(perr(&peer, "more bytes than announced")),
            m => return Err(perr(&peer, format!("expected Bytes, got {}", m.name()))),
        }
    }
    Ok(out)
}

/// Connects to a page server and says what for.
fn connect(addr: &str, key: &Key, role: Role) -> Result<Channel> {
    let hello = Msg::Hello {
        version: VERSION,
        role,
    };
    let (ch, payload) = Channel::connect(addr, key, &hello.encode())?;
    match Msg::decode(&payload) {
        Ok(Msg::Welcome { version }) if version == VERSION => Ok(ch),
        Ok(m) => Err(perr(addr, format!("expected Welcome, got {m:?}"))),
        Err(e) => Err(perr(addr, e)),
    }
}

// ------------------------------------------------------------- the server

/// What `cairn page-server` does.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub images_dir: PathBuf,
    /// ADDR:PORT to listen on.
    pub listen: String,
    pub key: PathBuf,
    /// Exit after the first authenticated session (0 if it succeeded).
    pub once: bool,
}

/// `cairn page-server`: listens and serves; with `once`, returns after
/// the first session that got past the handshake. Connections that fail
/// the handshake (another key) are logged and ignored.
pub fn serve(o: &ServerOptions) -> Result<i32> {
    let key = channel::read_key(&o.key)?;
    let (listener, local) = channel::listen(&o.listen)?;
    eprintln!(
        "cairn: page-server: listening on {local}, images in {}",
        o.images_dir.display()
    );
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(x) => x,
            Err(e) => {
                warn!("page-server: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let mut role = None;
        let accepted = Channel::accept(stream, &key, |p| {
            match Msg::decode(p).map_err(|e| perr("peer", e))? {
                Msg::Hello { version, role: r } if version == VERSION => {
                    role = Some(r);
                    Ok(Msg::Welcome { version: VERSION }.encode())
                }
                m => Err(perr(
                    "peer",
                    format!("expected Hello (version {VERSION}), got {m:?}"),
                )),
            }
        });
        let (mut ch, _) = match accepted {
            Ok(x) => x,
            Err(e) => {
                eprintln!("cairn: page-server: connection from {peer} refused: {e}");
                continue;
            }
        };
        let r = match role {
            Some(Role::Push) => receive_pages(&mut ch, &o.images_dir),
            _ => serve_pages(&mut ch, &o.images_dir),
        };
        match &r {
            Ok(what) => eprintln!("cairn: page-server: {peer}: {what}"),
            Err(e) => {
                let _ = ch.send(&Msg::Abort { why: e.to_string() }.encode());
                eprintln!("cairn: page-server: {peer}: failed: {e}");
            }
        }
        if o.once {
            return r.map(|_| 0);
        }
    }
}

/// The chunk being received.
struct Incoming {
    idx: u32,
    stored: u64,
    raw: u64,
    codec: ChunkCodec,
    crc: u32,
    buf: Vec<u8>,
}

/// Push: a dump's pages, staged in DIR and committed on `Commit`.
fn receive_pages(ch: &mut Channel, dir: &Path) -> Result<String> {
    let peer = ch.peer.clone();
    let staging = Staging::begin(dir)?;
    let sdir = staging.dir().clone();
    let mut writer = Some(PageStoreWriter::create(&sdir)?);
    let (mut next, mut offset) = (0u32, 0u64);
    let mut cur: Option<Incoming> = None;
    let mut ready = false;
    let t0 = Instant::now();
    loop {
        match recv(ch)? {
            Msg::Chunk {
                idx,
                offset: off,
                stored,
                raw,
                codec,
                crc,
            } => {
                let codec = match codec {
                    0 => ChunkCodec::CODEC_ZSTD,
                    1 => ChunkCodec::CODEC_RAW,
                    c => return Err(perr(&peer, format!("chunk {idx}: unknown codec {c}"))),
                };
                let sizes_ok = (1..=MAX_CHUNK_COMPRESSED).contains(&stored)
                    && (1..=MAX_CHUNK_RAW).contains(&raw)
                    && (codec != ChunkCodec::CODEC_RAW || stored == raw);
                if cur.is_some() || ready || idx != next || off != offset || !sizes_ok {
                    return Err(perr(
                        &peer,
                        format!(
                            "chunk {idx} at {off} ({stored} bytes, {raw} raw) where chunk {next} \
                             at {offset} was due"
                        ),
                    ));
                }
                cur = Some(Incoming {
                    idx,
                    stored,
                    raw,
                    codec,
                    crc,
                    buf: Vec::with_capacity(stored as usize),
                });
            }
            Msg::Bytes(d) => {
                let Some(c) = cur.as_mut() else {
                    return Err(perr(&peer, "Bytes outside a chunk"));
                };
                if c.buf.len() as u64 + d.len() as u64 > c.stored {
                    return Err(perr(&peer, format!("chunk {}: too many bytes", c.idx)));
                }
                c.buf.extend_from_slice(&d);
                if c.buf.len() as u64 == c.stored {
                    let c = cur.take().expect("just checked");
                    if crc32fast::hash(&c.buf) != c.crc {
                        return Err(perr(&peer, format!("chunk {}: checksum mismatch", c.idx)));
                    }
                    let w = writer
                        .as_ref()
                        .ok_or_else(|| perr(&peer, "chunk after Finish"))?;
                    let got = w.append_at(&c.buf, c.raw, c.codec, c.crc)?;
                    debug_assert_eq!(got, c.idx);
                    next += 1;
                    offset += c.stored;
                }
            }
            Msg::Finish { chunks, body_len } => {
                if cur.is_some() || chunks != next || body_len != offset {
                    return Err(perr(
                        &peer,
                        format!(
                            "Finish with {chunks} chunks of {body_len} bytes; {next} chunks of \
                             {offset} bytes came"
                        ),
                    ));
                }
                let w = writer.take().ok_or_else(|| perr(&peer, "Finish twice"))?;
                w.finish(&sdir)?;
                let mut inv = Inventory::new();
                inv.format_version = FORMAT_VERSION;
                inv.cairn_version = env!("CARGO_PKG_VERSION").to_string();
                inv.pages_only = true;
                inv.page_size = crate::sys::PAGE_SIZE as u32;
                sdir.write_inventory(&mut inv)?;
                // What a restore will check: the table against the body.
                PageStoreReader::open(&sdir)?;
                let entry = |n: &str| -> Result<(u64, u32)> {
                    inv.images
                        .iter()
                        .find(|f| f.name == n)
                        .map(|f| (f.size, f.header_crc32))
                        .ok_or_else(|| Error::image(sdir.file(n), "not written"))
                };
                let (pages_size, pages_crc) = entry(names::PAGES)?;
                let (store_size, store_crc) = entry(names::PAGESTORE)?;
                ch.send(
                    &Msg::Ready {
                        pages_size,
                        pages_crc,
                        store_size,
                        store_crc,
                    }
                    .encode(),
                )?;
                ready = true;
            }
            Msg::Commit if ready => {
                staging.commit()?;
                ch.send(&Msg::Committed.encode())?;
                return Ok(format!(
                    "{next} chunks ({offset} bytes) of pages in {} ({:.0} ms)",
                    dir.display(),
                    t0.elapsed().as_secs_f64() * 1e3
                ));
            }
            m => return Err(perr(&peer, format!("unexpected {}", m.name()))),
        }
    }
}

/// Pull: the pages of DIR, served as post-copy serves them.
fn serve_pages(ch: &mut Channel, dir: &Path) -> Result<String> {
    let (d, _) = ImageDir::load(dir)?;
    let reader = PageStoreReader::open(&d)?;
    let mut head = vec![0u8; HEADER_LEN];
    reader
        .file()
        .read_exact_at(&mut head, 0)
        .map_err(|e| Error::io(reader.path(), e))?;
    let store = d.read_all(names::PAGESTORE)?;
    ch.send(
        &Msg::Store {
            pages_size: reader.size(),
            head,
            store: store.len() as u64,
        }
        .encode(),
    )?;
    send_bytes(ch, &store)?;
    let s = postcopy::serve_stores(ch, std::slice::from_ref(&reader))?;
    Ok(format!(
        "served {} chunks ({} bytes, {} asked for) of {} to a lazy restore (root pid {})",
        s.chunks,
        s.bytes,
        s.wanted,
        dir.display(),
        s.root
    ))
}

// --------------------------------------------------------- the dump's end

/// The dump's end of a push (`dump --page-server`): a [`ChunkSink`] that
/// sends each chunk as the dump stores it.
pub struct Pusher {
    ch: Mutex<Channel>,
    /// The server's pages.img and pagestore.img, once it has them.
    listed: Mutex<Vec<ImageFile>>,
    addr: String,
}

impl Pusher {
    /// Connects and authenticates: before the tree is touched, so that a
    /// wrong key or an absent server costs nothing.
    pub fn connect(t: &PageServerTarget) -> Result<Pusher> {
        let key = channel::read_key(&t.key)?;
        let addr = t.address();
        let ch = connect(&addr, &key, Role::Push)?;
        info!("dump: pages go to the page server at {addr}");
        Ok(Pusher {
            ch: Mutex::new(ch),
            listed: Mutex::new(Vec::new()),
            addr,
        })
    }

    /// The address, as the inventory records it.
    pub fn address(&self) -> &str {
        &self.addr
    }

    /// Where the pages go, for messages.
    pub fn shown(&self) -> PathBuf {
        PathBuf::from(format!("page-server://{}", self.addr))
    }

    /// The inventory entries of the server's files (after the pages were
    /// finished).
    pub fn listed(&self) -> Vec<ImageFile> {
        self.listed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Has the server move its files into place; the dump commits its own
    /// directory only after this.
    pub fn commit(&self) -> Result<()> {
        let mut ch = self.ch.lock().unwrap_or_else(|e| e.into_inner());
        ch.send(&Msg::Commit.encode())?;
        match recv(&mut ch)? {
            Msg::Committed => Ok(()),
            m => Err(perr(
                &self.addr,
                format!("expected Committed, got {}", m.name()),
            )),
        }
    }
}

impl ChunkSink for Pusher {
    fn put(&self, idx: u32, e: &PageChunk, stored: &[u8]) -> Result<()> {
        let mut ch = self.ch.lock().unwrap_or_else(|e| e.into_inner());
        let m = Msg::Chunk {
            idx,
            offset: e.offset,
            stored: e.compressed_len,
            raw: e.raw_len,
            codec: e.codec.value() as u8,
            crc: e.crc32,
        };
        ch.send(&m.encode())?;
        send_bytes(&mut ch, stored)
    }

    fn finish(&self, store: &PageStore, header: &Header) -> Result<()> {
        let mut ch = self.ch.lock().unwrap_or_else(|e| e.into_inner());
        let m = Msg::Finish {
            chunks: store.chunks.len() as u32,
            body_len: header.body_len,
        };
        ch.send(&m.encode())?;
        let Msg::Ready {
            pages_size,
            pages_crc,
            store_size,
            store_crc,
        } = recv(&mut ch)?
        else {
            return Err(perr(&self.addr, "expected Ready"));
        };
        // The server's pages.img must be the one this dump made.
        let want = Header::header_crc(&header.encode());
        if pages_size != HEADER_LEN as u64 + header.body_len || pages_crc != want {
            return Err(perr(
                &self.addr,
                format!(
                    "the server's pages.img ({pages_size} bytes, header crc {pages_crc:#x}) is \
                     not the one sent ({} bytes, {want:#x})",
                    HEADER_LEN as u64 + header.body_len
                ),
            ));
        }
        let file = |name: &str, size, crc| {
            let mut f = ImageFile::new();
            f.name = name.into();
            f.size = size;
            f.header_crc32 = crc;
            f
        };
        *self.listed.lock().unwrap_or_else(|e| e.into_inner()) = vec![
            file(names::PAGES, pages_size, pages_crc),
            file(names::PAGESTORE, store_size, store_crc),
        ];
        Ok(())
    }
}

// ---------------------------------------------------------- lazy restore

/// Where a lazy restore's pages come from.
#[derive(Debug, Clone)]
pub enum PageSource {
    /// The image directory's own pages.img.
    Images,
    /// A page server (`--page-server ADDR:PORT --key FILE`).
    Server { address: String, key: PathBuf },
}

/// A private directory in the temporary directory, removed (its regular
/// files, then itself) when dropped.
struct Scratch {
    parent: OwnedFd,
    name: String,
    fd: OwnedFd,
    path: PathBuf,
}

impl Scratch {
    fn new() -> Result<Scratch> {
        let tmp = std::env::temp_dir();
        let parent = safefs::open_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let hex = safefs::random_hex().map_err(|e| Error::io(&tmp, e))?;
        let name = format!("cairn-lazy-{hex}");
        let path = tmp.join(&name);
        let fd =
            safefs::mkdir_private(&parent, OsStr::new(&name)).map_err(|e| Error::io(&path, e))?;
        Ok(Scratch {
            parent,
            name,
            fd,
            path,
        })
    }

    fn create(&self, name: &str) -> Result<File> {
        safefs::create_excl(&self.fd, OsStr::new(name), 0o600)
            .map_err(|e| Error::io(self.path.join(name), e))
    }

    /// pagestore.img (`store`, as it was written) and pages.img, sparse
    /// but for its header (`size` bytes in all): the layer the pager
    /// fills. Returns pages.img open for writing.
    fn lay_pages(&self, store: &[u8], head: &[u8], size: u64) -> Result<File> {
        let p = self.path.join(names::PAGES);
        if head.len() != HEADER_LEN || size < HEADER_LEN as u64 {
            return Err(Error::image(&p, "bad header from the page source"));
        }
        let mut f = self.create(names::PAGESTORE)?;
        f.write_all(store)
            .map_err(|e| Error::io(self.path.join(names::PAGESTORE), e))?;
        let pages = self.create(names::PAGES)?;
        pages.set_len(size).map_err(|e| Error::io(&p, e))?;
        pages.write_all_at(head, 0).map_err(|e| Error::io(&p, e))?;
        Ok(pages)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = safefs::remove_dir_by_fd(&self.parent, OsStr::new(&self.name), None) {
            warn!("{}: not removed: {e}", self.path.display());
        }
    }
}

/// `cairn restore --lazy-pages`: the tree runs before its private
/// anonymous memory is in; returns as [`crate::restore::restore`] does
/// (the root's exit code, or 0 with `--restore-detached`, once every page
/// is in).
pub fn restore_lazy(ropts: &RestoreOptions, src: &PageSource) -> Result<i32> {
    if ropts.pid_ns {
        return Err(Error::Usage(
            "--lazy-pages and --pid-ns together: not supported".into(),
        ));
    }
    crate::image::allow_foreign_images(ropts.allow_foreign_images);
    let scratch = Scratch::new()?;
    let root = match src {
        PageSource::Images => {
            let (d, _) = ImageDir::load(&ropts.images_dir)?;
            let reader = PageStoreReader::open(&d)?;
            let mut head = vec![0u8; HEADER_LEN];
            reader
                .file()
                .read_exact_at(&mut head, 0)
                .map_err(|e| Error::io(reader.path(), e))?;
            let write = scratch.lay_pages(&d.read_all(names::PAGESTORE)?, &head, reader.size())?;
            // The layer's own inventory, so that it loads as a layer.
            let fd = scratch
                .fd
                .try_clone()
                .map_err(|e| Error::io(&scratch.path, e))?;
            ImageDir::from_fd(fd, &scratch.path, &scratch.path)
                .write_inventory(&mut Inventory::new())?;
            let layer = LazyLayer::open(&scratch.path, write)?;
            // The restore reads the image directory itself; its pages.img
            // is the pager's layer 1 (eager runs read it in place).
            let pages = vec![reader.path().to_path_buf()];
            let (mut ch, server) = loopback(reader)?;
            let how = "--lazy-pages from the image directory".to_string();
            let r = postcopy::restore(source(&mut ch, layer, pages, how), ropts);
            drop(ch);
            match server.join() {
                Ok(Err(e)) if r.is_ok() => warn!("lazy restore: the page source: {e}"),
                _ => {}
            }
            r?
        }
        PageSource::Server { address, key } => {
            let key = channel::read_key(key)?;
            let mut ch = connect(address, &key, Role::Pull)?;
            let (work, write) = copy_images(&mut ch, &ropts.images_dir, &scratch)?;
            let layer = LazyLayer::open(&work, write)?;
            let pages = vec![work.join(names::PAGES)];
            let ropts = RestoreOptions {
                images_dir: work.clone(),
                ..ropts.clone()
            };
            let how = format!("--lazy-pages from {address}");
            postcopy::restore(source(&mut ch, layer, pages, how), &ropts)?
        }
    };
    drop(scratch);
    if ropts.detached {
        return Ok(0);
    }
    let st = crate::sys::ptrace::wait_raw(root).map_err(|e| Error::sys(root, "waitpid", e))?;
    Ok(if libc::WIFEXITED(st) {
        libc::WEXITSTATUS(st)
    } else {
        128 + libc::WTERMSIG(st)
    })
}

/// A lazy restore's page source with `layer` as the pager's only layer
/// (`pages`: the pages.img the restore reads for it).
fn source<'a>(
    ch: &'a mut Channel,
    layer: LazyLayer,
    pages: Vec<PathBuf>,
    how: String,
) -> postcopy::Source<'a> {
    postcopy::Source {
        ch,
        layers: vec![layer],
        pages,
        cmd: "restore",
        how,
    }
}

/// The page source of a lazy restore from the image directory: the page
/// server's code ([`postcopy::serve_stores`]) on a thread, over a loopback
/// connection with a key made for it and never written anywhere. The
/// listener takes one connection that completes the handshake.
fn loopback(
    reader: PageStoreReader,
) -> Result<(Channel, std::thread::JoinHandle<Result<postcopy::Served>>)> {
    let secret = format!(
        "{}{}",
        safefs::random_hex().map_err(|e| Error::io("getrandom", e))?,
        safefs::random_hex().map_err(|e| Error::io("getrandom", e))?
    );
    let (key, key2) = (
        channel::derive(secret.as_bytes()),
        channel::derive(secret.as_bytes()),
    );
    let (l, addr) = channel::listen("127.0.0.1:0")?;
    let server = std::thread::spawn(move || -> Result<postcopy::Served> {
        // Someone else's connection fails the handshake: the next one.
        let mut last = None;
        for _ in 0..4 {
            let (s, _) = l.accept().map_err(|e| Error::io("127.0.0.1", e))?;
            match Channel::accept(s, &key2, |_| Ok(Vec::new())) {
                Ok((mut ch, _)) => {
                    drop(l);
                    return postcopy::serve_stores(&mut ch, std::slice::from_ref(&reader));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Restore("no page source connection".into())))
    });
    let (ch, _) = Channel::connect(&addr, &key, b"")?;
    Ok((ch, server))
}

/// Pull: the dump directory `d2` (its pages elsewhere) copied into
/// `scratch` with the page server's pagestore.img and a sparse pages.img,
/// each checked against what d2's inventory.img lists. Returns the copy
/// and its pages.img open for writing.
fn copy_images(ch: &mut Channel, d2: &Path, scratch: &Scratch) -> Result<(PathBuf, File)> {
    let peer = ch.peer.clone();
    let (pages_size, head, store_len) = match recv(ch)? {
        Msg::Store {
            pages_size,
            head,
            store,
        } => (pages_size, head, store),
        m => return Err(perr(&peer, format!("expected Store, got {}", m.name()))),
    };
    let store = recv_bytes(ch, store_len, crate::image::MAX_MESSAGE_BYTES)?;
    // Every file read is checked as a restore checks it (owner, mode).
    let dir = ImageDir::view(d2)?;
    dir.check_dir_trusted()?;
    let inv: Inventory = dir.read(ImageType::Inventory, names::INVENTORY)?;
    if !inv.parent_dir.is_empty() {
        return Err(Error::Usage(format!(
            "{}: a layer on {:?}: --lazy-pages --page-server restores a full dump (copy the \
             pages into the directory and restore the chain instead)",
            d2.display(),
            inv.parent_dir
        )));
    }
    let hcrc = |raw: &[u8]| -> Option<u32> {
        let h: &[u8; HEADER_LEN] = raw.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Header::header_crc(h))
    };
    let listed = |name: &str, size: u64, raw: &[u8]| {
        inv.images
            .iter()
            .any(|f| f.name == name && f.size == size && Some(f.header_crc32) == hcrc(raw))
    };
    if !listed(names::PAGES, pages_size, &head) || !listed(names::PAGESTORE, store_len, &store) {
        return Err(perr(
            &peer,
            format!(
                "its pages are not those of the dump in {} (another dump's, or that dump did \
                 not go through a page server)",
                d2.display()
            ),
        ));
    }
    for f in &inv.images {
        if f.name == names::PAGES || f.name == names::PAGESTORE {
            continue;
        }
        copy_file(&dir, &f.name, scratch)?;
    }
    copy_file(&dir, names::INVENTORY, scratch)?;
    let write = scratch.lay_pages(&store, &head, pages_size)?;
    Ok((scratch.path.clone(), write))
}

fn copy_file(dir: &ImageDir, name: &str, scratch: &Scratch) -> Result<()> {
    let (mut from, _) = dir.open_file(name)?;
    let mut to = scratch.create(name)?;
    std::io::copy(&mut from, &mut to).map_err(|e| Error::io(scratch.path.join(name), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let all = [
            Msg::Hello {
                version: 1,
                role: Role::Pull,
            },
            Msg::Welcome { version: 1 },
            Msg::Chunk {
                idx: 3,
                offset: 1 << 33,
                stored: 100,
                raw: 4096,
                codec: 0,
                crc: 0xdead_beef,
            },
            Msg::Bytes(vec![1, 2, 3]),
            Msg::Finish {
                chunks: 4,
                body_len: 7,
            },
            Msg::Ready {
                pages_size: 39,
                pages_crc: 1,
                store_size: 2,
                store_crc: 3,
            },
            Msg::Commit,
            Msg::Committed,
            Msg::Store {
                pages_size: 1 << 30,
                head: vec![9; 32],
                store: 77,
            },
            Msg::Abort { why: "x".into() },
        ];
        for m in all {
            assert_eq!(Msg::decode(&m.encode()).unwrap(), m);
        }
        assert!(Msg::decode(&[]).is_err());
        assert!(Msg::decode(&[64, 1, 0, 0, 0, 9]).is_err(), "unknown role");
        assert!(Msg::decode(&[70, 0]).is_err(), "trailing bytes");
        // A migration's Hello is not a page server's, and the reverse.
        let hello = Msg::Hello {
            version: VERSION,
            role: Role::Push,
        }
        .encode();
        assert!(super::super::wire::Msg::decode(&hello).is_err());
        assert!(Msg::decode(&super::super::wire::Msg::Go.encode()).is_err());
    }
}
