//! The image directory and the container every image file shares.
//!
//! An image file is a 32-byte header followed by a body:
//!
//! | bytes | field                                           |
//! |-------|-------------------------------------------------|
//! | 0..8  | common magic `CAIRNIMG`                         |
//! | 8..12 | kind magic (u32 LE, [`ImageType::magic`])            |
//! | 12..16| format version (u32 LE, [`FORMAT_VERSION`])     |
//! | 16..24| body length in bytes (u64 LE)                   |
//! | 24..28| crc32 of the body (u32 LE)                      |
//! | 28..32| crc32 of header bytes 0..28 (u32 LE)            |
//!
//! For protobuf kinds the body is one zstd frame holding one encoded
//! message. For `pages.img` the body is a sequence of independent zstd
//! frames indexed by `pagestore.img`, each with its own crc there.
//!
//! `inventory.img` is written last and lists every other file of the
//! directory with its size and header crc ([`ImageDir::write_inventory`]);
//! [`ImageDir::load`] refuses a directory whose files differ from that
//! list, and every read checks the file against it.

pub mod budget;
pub mod chain;
#[cfg(feature = "fuzz")]
pub mod mutate;
pub mod pages;
pub mod staging;
pub mod validate;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use protobuf::{Message, MessageFull};

use crate::error::{Error, IoContext, Result};
use crate::sys::safefs;
use proto::{ImageFile, Inventory};

/// Generated protobuf types (proto/*.proto).
#[allow(ambiguous_glob_reexports)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/proto/mod.rs"));
    pub use contents::*;
    pub use files::*;
    pub use inet::*;
    pub use inventory::*;
    pub use job::*;
    pub use locks::*;
    pub use mm::*;
    pub use oracle::*;
    pub use pagemap::*;
    pub use sockopts::*;
    pub use stats::*;
    pub use task::*;
    pub use track::*;
    pub use tty::*;
    pub use unix::*;
}

/// 2: the header carries a crc of itself, the inventory lists every file.
pub const FORMAT_VERSION: u32 = 2;
pub const COMMON_MAGIC: &[u8; 8] = b"CAIRNIMG";
pub const HEADER_LEN: usize = 32;
/// No single protobuf image may decode to more than this; most kinds
/// have a smaller limit, and a command a total ([`budget`]).
pub const MAX_MESSAGE_BYTES: u64 = 1 << 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageType {
    Inventory,
    Pstree,
    Core,
    Mm,
    Pagemap,
    PageStore,
    Pages,
    Files,
    FdTable,
    Contents,
    PageHash,
    Oracle,
    /// stats-dump.img, stats-restore.img (`crate::stats`).
    Stats,
    /// job.img: a checkpoint of a job on several nodes (`crate::job`).
    Job,
}

impl ImageType {
    pub const ALL: [ImageType; 14] = [
        ImageType::Inventory,
        ImageType::Pstree,
        ImageType::Core,
        ImageType::Mm,
        ImageType::Pagemap,
        ImageType::PageStore,
        ImageType::Pages,
        ImageType::Files,
        ImageType::FdTable,
        ImageType::Contents,
        ImageType::PageHash,
        ImageType::Oracle,
        ImageType::Stats,
        ImageType::Job,
    ];

    pub fn magic(self) -> u32 {
        match self {
            ImageType::Inventory => 0x494e_5601,
            ImageType::Pstree => 0x5053_5401,
            ImageType::Core => 0x434f_5201,
            ImageType::Mm => 0x4d4d_0001,
            ImageType::Pagemap => 0x5047_4d01,
            ImageType::PageStore => 0x5047_5301,
            ImageType::Pages => 0x5041_4701,
            ImageType::Files => 0x4649_4c01,
            ImageType::FdTable => 0x4644_5401,
            ImageType::Contents => 0x434e_5401,
            ImageType::PageHash => 0x5047_4801,
            ImageType::Oracle => 0x4f52_4301,
            ImageType::Stats => 0x5354_4101,
            ImageType::Job => 0x4a4f_4201,
        }
    }

    pub fn from_magic(m: u32) -> Option<ImageType> {
        ImageType::ALL.into_iter().find(|k| k.magic() == m)
    }

    pub fn name(self) -> &'static str {
        match self {
            ImageType::Inventory => "inventory",
            ImageType::Pstree => "pstree",
            ImageType::Core => "core",
            ImageType::Mm => "mm",
            ImageType::Pagemap => "pagemap",
            ImageType::PageStore => "pagestore",
            ImageType::Pages => "pages",
            ImageType::Files => "files",
            ImageType::FdTable => "fdinfo",
            ImageType::Contents => "contents",
            ImageType::PageHash => "pagehash",
            ImageType::Oracle => "oracle",
            ImageType::Stats => "stats",
            ImageType::Job => "job",
        }
    }

    /// Whether the body is one zstd-compressed protobuf message (every kind
    /// but the raw page data).
    pub fn is_message(self) -> bool {
        self != ImageType::Pages
    }
}

/// File names inside an image directory.
pub mod names {
    pub const INVENTORY: &str = "inventory.img";
    pub const PSTREE: &str = "pstree.img";
    pub const FILES: &str = "files.img";
    pub const PAGESTORE: &str = "pagestore.img";
    pub const PAGES: &str = "pages.img";
    pub const CONTENTS: &str = "contents.img";
    /// The oracle's snapshot of the dumped tree (`dump --oracle`).
    pub const ORACLE: &str = "oracle.img";
    /// What the dump measured (`crate::stats`); written after the
    /// inventory, so not listed in it, and read by no restore.
    pub const STATS_DUMP: &str = "stats-dump.img";
    /// What the last restore from the directory measured.
    pub const STATS_RESTORE: &str = "stats-restore.img";
    /// The statistics images, which inventory.img does not list.
    pub fn is_stats(name: &str) -> bool {
        name == STATS_DUMP || name == STATS_RESTORE
    }
    pub fn core(pid: u32) -> String {
        format!("core-{pid}.img")
    }
    pub fn mm(pid: u32) -> String {
        format!("mm-{pid}.img")
    }
    pub fn pagemap(owner: &str) -> String {
        format!("pagemap-{}.img", owner.replace(':', "-"))
    }
    pub fn pagehash(owner: &str) -> String {
        format!("pagehash-{}.img", owner.replace(':', "-"))
    }
    pub fn fdinfo(pid: u32) -> String {
        format!("fdinfo-{pid}.img")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: ImageType,
    pub version: u32,
    pub body_len: u64,
    /// crc32 of the body.
    pub crc32: u32,
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(COMMON_MAGIC);
        h[8..12].copy_from_slice(&self.kind.magic().to_le_bytes());
        h[12..16].copy_from_slice(&self.version.to_le_bytes());
        h[16..24].copy_from_slice(&self.body_len.to_le_bytes());
        h[24..28].copy_from_slice(&self.crc32.to_le_bytes());
        let hc = crc32fast::hash(&h[0..28]);
        h[28..32].copy_from_slice(&hc.to_le_bytes());
        h
    }

    /// The crc32 of the header itself (bytes 28..32 of an encoded header):
    /// what the inventory records per file.
    pub fn header_crc(raw: &[u8; HEADER_LEN]) -> u32 {
        le32(raw, 28)
    }

    /// Parses and checks a header (magic, version, its own crc, kind);
    /// `path` is only for the error message.
    pub fn decode(b: &[u8], path: &Path) -> Result<Header> {
        if b.len() < HEADER_LEN {
            return Err(Error::image(path, "truncated header"));
        }
        if &b[0..8] != COMMON_MAGIC {
            return Err(Error::image(path, "not a cairn image (bad magic)"));
        }
        let version = le32(b, 12);
        if version != FORMAT_VERSION {
            return Err(Error::image(
                path,
                format!(
                    "format version {version} (written by another cairn, or damaged), \
                     this cairn reads {FORMAT_VERSION}"
                ),
            ));
        }
        if crc32fast::hash(&b[0..28]) != le32(b, 28) {
            return Err(Error::image(path, "header checksum mismatch"));
        }
        let magic = le32(b, 8);
        let kind = ImageType::from_magic(magic)
            .ok_or_else(|| Error::image(path, format!("unknown image kind magic {magic:#x}")))?;
        let mut l = [0u8; 8];
        l.copy_from_slice(&b[16..24]);
        Ok(Header {
            kind,
            version,
            body_len: u64::from_le_bytes(l),
            crc32: le32(b, 24),
        })
    }
}

/// Encodes a message into a complete image file (header + body).
pub fn encode_image<M: Message>(kind: ImageType, msg: &M) -> Result<Vec<u8>> {
    let raw = msg
        .write_to_bytes()
        .map_err(|e| Error::image(kind.name(), format!("encode: {e}")))?;
    let body = zstd::bulk::compress(&raw, 3)
        .map_err(|e| Error::image(kind.name(), format!("compress: {e}")))?;
    let hdr = Header {
        kind,
        version: FORMAT_VERSION,
        body_len: body.len() as u64,
        crc32: crc32fast::hash(&body),
    };
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&hdr.encode());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Checks a complete message image file (header, kind, length, body crc)
/// and returns its header. Nothing is decompressed.
pub fn check_image(kind: Option<ImageType>, bytes: &[u8], path: &Path) -> Result<Header> {
    let hdr = Header::decode(bytes, path)?;
    if let Some(kind) = kind {
        if hdr.kind != kind {
            return Err(Error::image(
                path,
                format!("is a {} image, expected {}", hdr.kind.name(), kind.name()),
            ));
        }
    }
    let body = &bytes[HEADER_LEN..];
    if hdr.body_len != body.len() as u64 {
        return Err(Error::image(
            path,
            format!(
                "body is {} bytes, header says {} (truncated or extended)",
                body.len(),
                hdr.body_len
            ),
        ));
    }
    if crc32fast::hash(body) != hdr.crc32 {
        return Err(Error::image(path, "checksum mismatch"));
    }
    Ok(hdr)
}

/// Decodes a complete image file; checks magic, kind, version, length and
/// both crcs before it decompresses anything.
pub fn decode_image<M: MessageFull>(kind: ImageType, bytes: &[u8], path: &Path) -> Result<M> {
    check_image(Some(kind), bytes, path)?;
    decode_body(kind, &bytes[HEADER_LEN..], path)
}

/// Decompresses and parses a checked message body of `kind`, within the
/// limits of [`budget`]: decompression stops at what the kind and the
/// command may still use, the wire format is scanned (no unknown fields,
/// the parsed size estimated and charged) before the parser runs.
pub fn decode_body<M: MessageFull>(kind: ImageType, body: &[u8], path: &Path) -> Result<M> {
    let (cap, what) = budget::cap(kind);
    let raw = decompress_bounded(body, cap)
        .map_err(|e| Error::image(path, format!("decompress: {e} ({what})")))?;
    let scan = budget::scan(&M::descriptor(), &raw)
        .map_err(|e| Error::image(path, format!("decode: {e}")))?;
    budget::charge(kind, scan.memory).map_err(|e| Error::image(path, e))?;
    crate::trace!(
        "{}: {} bytes decompressed, ~{} bytes parsed ({} messages); {} bytes of the \
         command's decoding budget used",
        path.display(),
        raw.len(),
        scan.memory,
        scan.messages,
        budget::used()
    );
    M::parse_from_bytes(&raw).map_err(|e| Error::image(path, format!("decode: {e}")))
}

/// Decompresses a body that must be exactly one zstd frame that declares
/// its size (cairn writes every frame so), refusing to produce more than
/// `limit` bytes. A declared size over the limit is refused before
/// anything is allocated; one within it is decompressed into a buffer of
/// exactly that size (up to [`BULK_MAX`]; larger ones grow as the bytes
/// arrive, through a reader that stops after `limit` bytes, so a lying
/// header costs no memory). A frame without its size is refused: it
/// could only be measured by decompressing it.
pub fn decompress_bounded(data: &[u8], limit: u64) -> std::io::Result<Vec<u8>> {
    let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let frame = zstd::zstd_safe::find_frame_compressed_size(data)
        .map_err(|_| bad("not a zstd frame".into()))?;
    if frame != data.len() {
        return Err(bad(format!(
            "{} bytes after the zstd frame",
            data.len().saturating_sub(frame)
        )));
    }
    match zstd::zstd_safe::get_frame_content_size(data) {
        Ok(None) => Err(bad(
            "the zstd frame does not declare its size (cairn writes every frame with it)".into(),
        )),
        Ok(Some(n)) if n > limit => Err(bad(format!(
            "the zstd frame declares {n} bytes, more than the {limit} allowed"
        ))),
        Ok(Some(n)) if n <= BULK_MAX => {
            thread_local! {
                // One context per thread, not one per image (creating a
                // context was 5% of a 100-process restore's CPU).
                static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
                    const { std::cell::RefCell::new(None) };
            }
            let out = DCTX.with(|d| -> std::io::Result<Vec<u8>> {
                let mut d = d.borrow_mut();
                if d.is_none() {
                    *d = Some(zstd::bulk::Decompressor::new()?);
                }
                let dec = d.as_mut().expect("just made");
                dec.decompress(data, n as usize)
            })?;
            if out.len() as u64 != n {
                return Err(bad(format!(
                    "the zstd frame declares {n} bytes but holds {}",
                    out.len()
                )));
            }
            Ok(out)
        }
        _ => {
            let dec = zstd::stream::read::Decoder::new(data)?;
            let mut out = Vec::new();
            let n = dec.take(limit + 1).read_to_end(&mut out)?;
            if n as u64 > limit {
                return Err(bad(format!("decompresses to more than {limit} bytes")));
            }
            Ok(out)
        }
    }
}

/// Largest frame decompressed into a buffer allocated up front.
pub const BULK_MAX: u64 = 64 << 20;

/// Reads a whole message image file (already opened, `size` bytes),
/// refusing one larger than any message image can be before anything is
/// allocated for it.
fn read_bounded(f: File, size: u64, p: &Path) -> Result<Vec<u8>> {
    if size > MAX_MESSAGE_BYTES + HEADER_LEN as u64 {
        return Err(Error::image(
            p,
            format!("{size} bytes: too large for a message image"),
        ));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    f.take(size + 1).read_to_end(&mut bytes).at(p)?;
    Ok(bytes)
}

/// Whether `--allow-foreign-images` was given: image directories and files
/// of other users, or writable by others, are read anyway.
static ALLOW_FOREIGN: AtomicBool = AtomicBool::new(false);

/// Sets what `--allow-foreign-images` says (restore, show).
pub fn allow_foreign_images(yes: bool) {
    ALLOW_FOREIGN.store(yes, Ordering::Relaxed);
}

/// The name of the override flag, for messages.
pub const ALLOW_FOREIGN_FLAG: &str = "--allow-foreign-images";

/// Refuses `st` (fstat of the descriptor about to be read) unless it is
/// owned by root or the caller and writable by nobody else, or the
/// override was given. `what` names it ("image directory", "image file").
pub fn check_trust(st: &rustix::fs::Stat, p: &Path, what: &str) -> Result<()> {
    if ALLOW_FOREIGN.load(Ordering::Relaxed) {
        return Ok(());
    }
    match safefs::check_trusted(st) {
        Ok(()) => Ok(()),
        Err(why) => Err(Error::image(
            p,
            format!(
                "refused: this {what} is {why}: another user could have forged the \
                 checkpoint ({ALLOW_FOREIGN_FLAG} reads it anyway)"
            ),
        )),
    }
}

/// A file name that can be part of an image directory: `NAME.img`, no
/// path separators, not hidden.
pub fn is_image_name(name: &str) -> bool {
    name.len() > 4
        && name.len() <= 255
        && name.ends_with(".img")
        && !name.starts_with('.')
        && !name.contains('/')
        && !name.contains('\0')
}

/// An image directory on disk, held open: every file is opened, created,
/// listed and removed relative to its descriptor ([`crate::sys::safefs`]),
/// never by re-resolving a path; paths are for messages.
#[derive(Debug, Clone)]
pub struct ImageDir {
    /// Where the files are read and written (for messages).
    path: PathBuf,
    /// Where the directory is once a dump is complete: differs from `path`
    /// while a dump writes into a staging directory (see [`staging`]).
    /// Paths recorded in images relative to the directory (a parent
    /// checkpoint) are relative to this one.
    final_path: PathBuf,
    /// The directory itself.
    fd: Arc<OwnedFd>,
    /// The files `inventory.img` lists, by name (set by [`ImageDir::load`]).
    manifest: Option<Arc<HashMap<String, ImageFile>>>,
    /// Every file read must pass [`check_trust`] (set by
    /// [`ImageDir::load`] and [`ImageDir::view`]).
    trusted_only: bool,
    /// [`ImageDir::write`] leaves the fsync to [`staging::Staging::commit`],
    /// which syncs every file: one journal commit for the whole dump
    /// instead of one per small image (issue 15).
    commit_syncs: bool,
}

/// Opens the directory `path` (never through a final symbolic link, see
/// [`safefs`]).
fn open_dir_fd(path: &Path) -> Result<OwnedFd> {
    safefs::open_dir(path).at(path)
}

impl ImageDir {
    /// Creates the directory (mode 0700) if needed and writes into it
    /// directly (tests and tools; a dump writes through [`staging`]).
    pub fn create(path: &Path) -> Result<ImageDir> {
        if std::fs::symlink_metadata(path).is_err() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .at(path)?;
        }
        Ok(ImageDir::from_fd(open_dir_fd(path)?, path, path))
    }

    /// A directory of images read without any inventory check (`cairn
    /// show` of single files); every file read must be trusted (see
    /// [`check_trust`]), the directory itself need not be.
    pub fn view(path: &Path) -> Result<ImageDir> {
        let mut d = ImageDir::from_fd(open_dir_fd(path)?, path, path);
        d.trusted_only = true;
        Ok(d)
    }

    /// An image directory already open as `fd` (staging).
    pub(crate) fn from_fd(fd: OwnedFd, path: &Path, final_path: &Path) -> ImageDir {
        ImageDir {
            path: path.to_path_buf(),
            final_path: final_path.to_path_buf(),
            fd: Arc::new(fd),
            manifest: None,
            trusted_only: false,
            commit_syncs: false,
        }
    }

    /// A staging directory's: its files are synced when it is committed.
    pub(crate) fn synced_at_commit(mut self) -> ImageDir {
        self.commit_syncs = true;
        self
    }

    /// Whether [`staging::Staging::commit`] syncs this directory's files
    /// (a writer need not sync them itself).
    pub(crate) fn syncs_at_commit(&self) -> bool {
        self.commit_syncs
    }

    /// The directory's descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens an existing image directory; it must hold an inventory.
    /// Nothing is verified (see [`ImageDir::load`]).
    pub fn open(path: &Path) -> Result<ImageDir> {
        let denied = |e: std::io::Error| {
            let uid = rustix::process::geteuid().as_raw();
            let owner = std::fs::symlink_metadata(path).map_or(String::new(), |m| {
                use std::os::unix::fs::MetadataExt;
                format!(" (owner uid {}, mode {:04o})", m.uid(), m.mode() & 0o7777)
            });
            Error::image(
                path,
                format!(
                    "cannot be read by uid {uid}{owner}: {e}; restore as its owner (or \
                     root), or make it readable"
                ),
            )
        };
        let fd = match safefs::open_dir(path) {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Err(denied(e)),
            r => r.at(path)?,
        };
        let is_inv = match safefs::lstatat(&fd, OsStr::new(names::INVENTORY)) {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Err(denied(e)),
            r => r.is_ok_and(|st| safefs::file_type(&st) == rustix::fs::FileType::RegularFile),
        };
        if !is_inv {
            return Err(Error::image(
                path,
                "not a cairn image directory, or an incomplete one (no inventory.img)",
            ));
        }
        Ok(ImageDir::from_fd(fd, path, path))
    }

    /// Opens a complete checkpoint for restoring from it: the directory and
    /// every file must be trusted ([`check_trust`]); reads and checks
    /// `inventory.img`, then requires every file it lists to be there with
    /// its recorded size. Later reads check each file's header against
    /// the list, so a file of another dump is refused.
    pub fn load(path: &Path) -> Result<(ImageDir, Inventory)> {
        let mut dir = ImageDir::open(path)?;
        let st = rustix::fs::fstat(&*dir.fd).map_err(|e| Error::io(path, e.into()))?;
        check_trust(&st, path, "image directory")?;
        dir.trusted_only = true;
        let inv_path = dir.file(names::INVENTORY);
        let (f, size) = dir.open_file(names::INVENTORY)?;
        let inv: Inventory = decode_image(
            ImageType::Inventory,
            &read_bounded(f, size, &inv_path)?,
            &inv_path,
        )?;
        if inv.images.is_empty() {
            return Err(Error::image(
                &inv_path,
                "lists no image files: an incomplete checkpoint",
            ));
        }
        let mut manifest = HashMap::new();
        for f in &inv.images {
            if !is_image_name(&f.name) || f.name == names::INVENTORY {
                return Err(Error::image(
                    &inv_path,
                    format!("lists a bad file name {:?}", f.name),
                ));
            }
            if manifest.insert(f.name.clone(), f.clone()).is_some() {
                return Err(Error::image(&inv_path, format!("lists {} twice", f.name)));
            }
        }
        for f in manifest.values() {
            let p = dir.file(&f.name);
            match safefs::lstatat(&*dir.fd, OsStr::new(&f.name)) {
                Ok(m) if safefs::file_type(&m) == rustix::fs::FileType::RegularFile => {
                    if m.st_size as u64 != f.size {
                        return Err(Error::image(
                            &p,
                            format!(
                                "is {} bytes, but inventory.img records {} (truncated, \
                                 extended, or from another dump)",
                                m.st_size, f.size
                            ),
                        ));
                    }
                    check_trust(&m, &p, "image file")?;
                }
                Ok(m) => {
                    return Err(Error::image(
                        &p,
                        format!(
                            "is not a regular file (a {})",
                            safefs::type_name(safefs::file_type(&m))
                        ),
                    ))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if !inv.page_server.is_empty()
                        && (f.name == names::PAGES || f.name == names::PAGESTORE)
                    {
                        return Err(Error::image(
                            &p,
                            format!(
                                "missing: the dump sent its pages to the page server at {}; \
                                 copy pages.img and pagestore.img from that page server's \
                                 directory here, or restore with --lazy-pages --page-server",
                                inv.page_server
                            ),
                        ));
                    }
                    return Err(Error::image(
                        &p,
                        "missing (listed in inventory.img): an incomplete checkpoint",
                    ));
                }
                Err(e) => return Err(Error::io(&p, e)),
            }
        }
        dir.manifest = Some(Arc::new(manifest));
        Ok((dir, inv))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// See the field of that name: where the directory is for good.
    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// The path of `name` in the directory, for messages.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The names `inventory.img` lists (after [`ImageDir::load`]).
    pub fn listed(&self) -> Option<Vec<String>> {
        self.manifest.as_ref().map(|m| {
            let mut v: Vec<String> = m.keys().cloned().collect();
            v.sort();
            v
        })
    }

    /// The names of the entries of the directory (listed through its
    /// descriptor) with their types; names that are not UTF-8 are left out.
    pub fn entries(&self) -> Result<Vec<(String, Option<rustix::fs::FileType>)>> {
        Ok(safefs::list(&*self.fd)
            .at(&self.path)?
            .into_iter()
            .filter_map(|(n, t)| n.into_string().ok().map(|n| (n, t)))
            .collect())
    }

    /// Opens `name` for reading: beneath the directory, no symbolic link,
    /// never blocking, a regular file, trusted if the directory was
    /// loaded or viewed. Returns the file and its size.
    pub fn open_file(&self, name: &str) -> Result<(File, u64)> {
        let p = self.file(name);
        let (f, st) = safefs::open_regular(&*self.fd, name).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::image(&p, "missing")
            } else {
                Error::io(&p, e)
            }
        })?;
        if self.trusted_only {
            check_trust(&st, &p, "image file")?;
        }
        Ok((f, st.st_size as u64))
    }

    /// Reads the whole file `name` (as [`ImageDir::open_file`] opens it),
    /// refusing one larger than any message image can be.
    pub fn read_all(&self, name: &str) -> Result<Vec<u8>> {
        let (f, size) = self.open_file(name)?;
        read_bounded(f, size, &self.file(name))
    }

    /// Refuses the directory itself unless it is trusted (see
    /// [`check_trust`]; [`ImageDir::load`] does this).
    pub fn check_dir_trusted(&self) -> Result<()> {
        let st = rustix::fs::fstat(&*self.fd).map_err(|e| Error::io(&self.path, e.into()))?;
        check_trust(&st, &self.path, "image directory")
    }

    /// Removes the regular file `name` (relative to the directory's
    /// descriptor); a missing one is no error.
    pub fn remove_file(&self, name: &str) -> Result<()> {
        match rustix::fs::unlinkat(&*self.fd, name, rustix::fs::AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(Error::io(self.file(name), e.into())),
        }
    }

    /// fsync of the directory.
    pub fn sync(&self) -> Result<()> {
        safefs::sync(&*self.fd).at(&self.path)
    }

    /// Creates an image file with mode 0600, exclusively and never
    /// through a link (a regular file of that name is replaced).
    pub fn create_file(&self, name: &str) -> Result<File> {
        let p = self.file(name);
        if !is_image_name(name) {
            return Err(Error::image(&p, "not an image file name"));
        }
        match safefs::create_excl(&*self.fd, OsStr::new(name), 0o600) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let st = safefs::lstatat(&*self.fd, OsStr::new(name)).at(&p)?;
                if safefs::file_type(&st) != rustix::fs::FileType::RegularFile {
                    return Err(Error::io(
                        &p,
                        std::io::Error::other("exists and is not a regular file"),
                    ));
                }
                self.remove_file(name)?;
                safefs::create_excl(&*self.fd, OsStr::new(name), 0o600).at(&p)
            }
            r => r.at(&p),
        }
    }

    /// Writes one message image and syncs it to disk (in a staging
    /// directory: when it is committed).
    pub fn write<M: Message>(&self, kind: ImageType, name: &str, msg: &M) -> Result<()> {
        let bytes = encode_image(kind, msg)?;
        let p = self.file(name);
        let mut f = self.create_file(name)?;
        f.write_all(&bytes).at(&p)?;
        crate::trace!("wrote {} ({} bytes)", p.display(), bytes.len());
        if self.commit_syncs {
            return Ok(());
        }
        f.sync_all().at(&p)
    }

    /// Writes `inventory.img` last: `inv.images` is set to every other
    /// `*.img` file of the directory, with its size and header crc.
    pub fn write_inventory(&self, inv: &mut Inventory) -> Result<()> {
        self.write_inventory_with(inv, Vec::new())
    }

    /// [`ImageDir::write_inventory`], also listing `elsewhere`: files of
    /// this checkpoint written somewhere else (a page server's pages.img
    /// and pagestore.img, `dump --page-server`).
    pub fn write_inventory_with(
        &self,
        inv: &mut Inventory,
        elsewhere: Vec<ImageFile>,
    ) -> Result<()> {
        let mut list = elsewhere;
        for (name, _) in self.entries()? {
            if !is_image_name(&name) || name == names::INVENTORY {
                continue;
            }
            let p = self.file(&name);
            let (f, size) = self.open_file(&name)?;
            let mut raw = [0u8; HEADER_LEN];
            f.read_exact_at(&mut raw, 0)
                .map_err(|_| Error::image(&p, "truncated header"))?;
            Header::decode(&raw, &p)?;
            let mut entry = ImageFile::new();
            entry.name = name;
            entry.size = size;
            entry.header_crc32 = Header::header_crc(&raw);
            list.push(entry);
        }
        list.sort_by(|a, b| a.name.cmp(&b.name));
        inv.images = list;
        self.write(ImageType::Inventory, names::INVENTORY, inv)
    }

    /// The inventory entry of `name`, if the directory was loaded; an
    /// error if it was loaded and `name` is not listed.
    fn listed_entry(&self, name: &str) -> Result<Option<&ImageFile>> {
        match &self.manifest {
            None => Ok(None),
            Some(m) => m.get(name).map(Some).ok_or_else(|| {
                Error::image(
                    self.file(name),
                    "not part of this checkpoint (not listed in inventory.img)",
                )
            }),
        }
    }

    /// Checks a file's raw header against its inventory entry.
    fn check_listed(&self, name: &str, raw: &[u8], size: u64) -> Result<()> {
        if let Some(entry) = self.listed_entry(name)? {
            let mut h = [0u8; HEADER_LEN];
            if raw.len() >= HEADER_LEN {
                h.copy_from_slice(&raw[..HEADER_LEN]);
            }
            if entry.size != size || Header::header_crc(&h) != entry.header_crc32 {
                return Err(Error::image(
                    self.file(name),
                    "differs from what inventory.img records (changed since the \
                     dump, or from another dump)",
                ));
            }
        }
        Ok(())
    }

    /// Reads one message image file and checks it (header, kind, length,
    /// body crc, inventory entry) without decoding it.
    fn read_checked(&self, kind: ImageType, name: &str) -> Result<Vec<u8>> {
        let p = self.file(name);
        self.listed_entry(name)?;
        let (f, size) = self.open_file(name)?;
        let bytes = read_bounded(f, size, &p)?;
        check_image(Some(kind), &bytes, &p)?;
        self.check_listed(name, &bytes, bytes.len() as u64)?;
        Ok(bytes)
    }

    /// The checks of [`ImageDir::read`] without the decoding.
    pub fn check_file(&self, kind: ImageType, name: &str) -> Result<()> {
        self.read_checked(kind, name).map(drop)
    }

    /// Reads and checks one message image.
    pub fn read<M: MessageFull>(&self, kind: ImageType, name: &str) -> Result<M> {
        let bytes = self.read_checked(kind, name)?;
        decode_body(kind, &bytes[HEADER_LEN..], &self.file(name))
    }

    /// Opens an image whose body is read piecewise (pages.img): checks its
    /// header, kind, size and inventory entry. Returns the file, its header
    /// and its size.
    pub fn open_raw(&self, kind: ImageType, name: &str) -> Result<(File, Header, u64)> {
        let p = self.file(name);
        self.listed_entry(name)?;
        let (file, size) = self.open_file(name)?;
        let mut raw = [0u8; HEADER_LEN];
        file.read_exact_at(&mut raw, 0)
            .map_err(|_| Error::image(&p, "truncated header"))?;
        let h = Header::decode(&raw, &p)?;
        if h.kind != kind {
            return Err(Error::image(
                &p,
                format!("is a {} image, expected {}", h.kind.name(), kind.name()),
            ));
        }
        if h.body_len != size - HEADER_LEN as u64 {
            return Err(Error::image(
                &p,
                format!(
                    "body is {} bytes, header says {} (truncated or extended)",
                    size - HEADER_LEN as u64,
                    h.body_len
                ),
            ));
        }
        self.check_listed(name, &raw, size)?;
        Ok((file, h, size))
    }

    /// Whether the directory has this image (after [`ImageDir::load`]:
    /// whether the inventory lists it).
    pub fn exists(&self, name: &str) -> bool {
        match &self.manifest {
            Some(m) => m.contains_key(name),
            None => safefs::lstatat(&*self.fd, OsStr::new(name)).is_ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::proto::{MmEntry, Vma, VmaKind};
    use super::*;

    fn sample() -> MmEntry {
        let mut mm = MmEntry::new();
        mm.pid = 42;
        mm.brk = 0x5555_0000;
        mm.auxv = vec![6, 4096, 0, 0];
        let mut v = Vma::new();
        v.start = 0x1000;
        v.end = 0x3000;
        v.kind = VmaKind::VMA_FILE_PRIVATE.into();
        v.vm_flags = vec!["rd".into(), "mr".into()];
        v.name = "/bin/true".into();
        mm.vmas.push(v);
        mm
    }

    #[test]
    fn round_trip() {
        let bytes = encode_image(ImageType::Mm, &sample()).unwrap();
        let back: MmEntry = decode_image(ImageType::Mm, &bytes, Path::new("mm.img")).unwrap();
        assert_eq!(back, sample());
    }

    fn err_of(bytes: &[u8]) -> String {
        decode_image::<MmEntry>(ImageType::Mm, bytes, Path::new("x.img"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn corruption_is_reported_not_panicked() {
        let good = encode_image(ImageType::Mm, &sample()).unwrap();
        // Wrong kind.
        assert!(
            decode_image::<MmEntry>(ImageType::Core, &good, Path::new("x"))
                .unwrap_err()
                .to_string()
                .contains("expected core")
        );
        // Bad magic, version, truncation, checksum.
        let mut b = good.clone();
        b[0] = b'X';
        assert!(err_of(&b).contains("bad magic"));
        let mut b = good.clone();
        b[12] = 99;
        assert!(err_of(&b).contains("format version"));
        assert!(err_of(&good[..10]).contains("truncated"));
        assert!(err_of(&good[..good.len() - 1]).contains("bytes"));
        let mut b = good.clone();
        let last = b.len() - 1;
        b[last] ^= 0xff;
        assert!(err_of(&b).contains("checksum"));
        // Every truncation and every single bit flip of the header gives an
        // error or (for reserved bits) the same message, never a panic.
        for n in 0..good.len() {
            let _ = decode_image::<MmEntry>(ImageType::Mm, &good[..n], Path::new("x"));
        }
        for i in 0..HEADER_LEN * 8 {
            let mut b = good.clone();
            b[i / 8] ^= 1 << (i % 8);
            let _ = decode_image::<MmEntry>(ImageType::Mm, &b, Path::new("x"));
        }
    }

    #[test]
    fn decompression_is_bounded() {
        let big = vec![0u8; 1 << 20];
        let z = zstd::bulk::compress(&big, 1).unwrap();
        assert!(decompress_bounded(&z, 1 << 10).is_err());
        assert_eq!(decompress_bounded(&z, 1 << 20).unwrap().len(), 1 << 20);
        // Trailing bytes, a second frame, no frame at all.
        let mut t = z.clone();
        t.push(0);
        assert!(decompress_bounded(&t, 1 << 20).is_err());
        let mut two = z.clone();
        two.extend_from_slice(&z);
        assert!(decompress_bounded(&two, 4 << 20).is_err());
        assert!(decompress_bounded(b"not zstd", 1 << 20).is_err());
        // A frame whose header lies about its size.
        let small = zstd::bulk::compress(&[7u8; 100], 1).unwrap();
        let mut lie = small.clone();
        // Frame header descriptor: single segment, 1-byte size field.
        if lie[4] & 0x20 != 0 && lie[4] >> 6 == 0 {
            lie[5] = 50;
            assert!(decompress_bounded(&lie, 1 << 20).is_err());
        }
        // An empty message's frame declares 0 bytes; a frame without its
        // size is refused whatever it holds.
        let empty = zstd::bulk::compress(&[], 3).unwrap();
        assert_eq!(decompress_bounded(&empty, 0).unwrap().len(), 0);
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.include_contentsize(false).unwrap();
        std::io::Write::write_all(&mut enc, &[1u8; 10]).unwrap();
        let undeclared = enc.finish().unwrap();
        let e = decompress_bounded(&undeclared, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("does not declare its size"), "{e}");
        // Every truncation of a frame is an error, never a panic.
        for n in 0..small.len() {
            assert!(decompress_bounded(&small[..n], 1 << 20).is_err());
        }
    }

    #[test]
    fn kinds_have_distinct_magics() {
        for a in ImageType::ALL {
            assert_eq!(ImageType::from_magic(a.magic()), Some(a));
        }
    }
}
