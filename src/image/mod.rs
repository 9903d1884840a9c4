//! The image directory and the container every image file shares.
//!
//! An image file is a 32-byte header followed by a body:
//!
//! | bytes | field                                           |
//! |-------|-------------------------------------------------|
//! | 0..8  | common magic `CAIRNIMG`                         |
//! | 8..12 | kind magic (u32 LE, [`Kind::magic`])            |
//! | 12..16| format version (u32 LE, [`FORMAT_VERSION`])     |
//! | 16..24| body length in bytes (u64 LE)                   |
//! | 24..28| crc32 of the body (u32 LE)                      |
//! | 28..32| reserved, zero                                  |
//!
//! For protobuf kinds the body is one zstd frame holding one encoded
//! message. For `pages.img` the body is a sequence of independent zstd
//! frames indexed by `pagestore.img`; its header has body length and crc 0.

pub mod pages;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use protobuf::Message;

use crate::error::{Error, IoContext, Result};

/// Generated protobuf types (proto/*.proto).
#[allow(ambiguous_glob_reexports)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/proto/mod.rs"));
    pub use contents::*;
    pub use files::*;
    pub use inventory::*;
    pub use mm::*;
    pub use pagemap::*;
    pub use sockopts::*;
    pub use task::*;
    pub use unix::*;
}

pub const FORMAT_VERSION: u32 = 1;
pub const COMMON_MAGIC: &[u8; 8] = b"CAIRNIMG";
pub const HEADER_LEN: usize = 32;
/// No single protobuf image may decode to more than this.
pub const MAX_MESSAGE_BYTES: u64 = 1 << 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
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
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Inventory,
        Kind::Pstree,
        Kind::Core,
        Kind::Mm,
        Kind::Pagemap,
        Kind::PageStore,
        Kind::Pages,
        Kind::Files,
        Kind::FdTable,
        Kind::Contents,
    ];

    pub fn magic(self) -> u32 {
        match self {
            Kind::Inventory => 0x494e_5601,
            Kind::Pstree => 0x5053_5401,
            Kind::Core => 0x434f_5201,
            Kind::Mm => 0x4d4d_0001,
            Kind::Pagemap => 0x5047_4d01,
            Kind::PageStore => 0x5047_5301,
            Kind::Pages => 0x5041_4701,
            Kind::Files => 0x4649_4c01,
            Kind::FdTable => 0x4644_5401,
            Kind::Contents => 0x434e_5401,
        }
    }

    pub fn from_magic(m: u32) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.magic() == m)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Inventory => "inventory",
            Kind::Pstree => "pstree",
            Kind::Core => "core",
            Kind::Mm => "mm",
            Kind::Pagemap => "pagemap",
            Kind::PageStore => "pagestore",
            Kind::Pages => "pages",
            Kind::Files => "files",
            Kind::FdTable => "fdinfo",
            Kind::Contents => "contents",
        }
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
    pub fn core(pid: u32) -> String {
        format!("core-{pid}.img")
    }
    pub fn mm(pid: u32) -> String {
        format!("mm-{pid}.img")
    }
    pub fn pagemap(owner: &str) -> String {
        format!("pagemap-{}.img", owner.replace(':', "-"))
    }
    pub fn fdinfo(pid: u32) -> String {
        format!("fdinfo-{pid}.img")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub version: u32,
    pub body_len: u64,
    pub crc32: u32,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(COMMON_MAGIC);
        h[8..12].copy_from_slice(&self.kind.magic().to_le_bytes());
        h[12..16].copy_from_slice(&self.version.to_le_bytes());
        h[16..24].copy_from_slice(&self.body_len.to_le_bytes());
        h[24..28].copy_from_slice(&self.crc32.to_le_bytes());
        h
    }

    /// Parses and checks a header; `path` is only for the error message.
    pub fn decode(b: &[u8], path: &Path) -> Result<Header> {
        if b.len() < HEADER_LEN {
            return Err(Error::image(path, "truncated header"));
        }
        if &b[0..8] != COMMON_MAGIC {
            return Err(Error::image(path, "not a cairn image (bad magic)"));
        }
        let word = |r: std::ops::Range<usize>| {
            let mut a = [0u8; 4];
            a.copy_from_slice(&b[r]);
            u32::from_le_bytes(a)
        };
        let magic = word(8..12);
        let kind = Kind::from_magic(magic)
            .ok_or_else(|| Error::image(path, format!("unknown image kind magic {magic:#x}")))?;
        let version = word(12..16);
        if version != FORMAT_VERSION {
            return Err(Error::image(
                path,
                format!("format version {version}, this cairn reads {FORMAT_VERSION}"),
            ));
        }
        let mut l = [0u8; 8];
        l.copy_from_slice(&b[16..24]);
        Ok(Header {
            kind,
            version,
            body_len: u64::from_le_bytes(l),
            crc32: word(24..28),
        })
    }
}

/// Encodes a message into a complete image file (header + body).
pub fn encode_image<M: Message>(kind: Kind, msg: &M) -> Result<Vec<u8>> {
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

/// Decodes a complete image file; checks magic, kind, version, length and
/// crc before it decompresses anything.
pub fn decode_image<M: Message>(kind: Kind, bytes: &[u8], path: &Path) -> Result<M> {
    let hdr = Header::decode(bytes, path)?;
    if hdr.kind != kind {
        return Err(Error::image(
            path,
            format!("is a {} image, expected {}", hdr.kind.name(), kind.name()),
        ));
    }
    let body = &bytes[HEADER_LEN..];
    if hdr.body_len != body.len() as u64 {
        return Err(Error::image(
            path,
            format!("body is {} bytes, header says {}", body.len(), hdr.body_len),
        ));
    }
    if crc32fast::hash(body) != hdr.crc32 {
        return Err(Error::image(path, "checksum mismatch"));
    }
    let raw = decompress_bounded(body, MAX_MESSAGE_BYTES)
        .map_err(|e| Error::image(path, format!("decompress: {e}")))?;
    M::parse_from_bytes(&raw).map_err(|e| Error::image(path, format!("decode: {e}")))
}

/// Decompresses one zstd stream, refusing to produce more than `limit` bytes.
pub fn decompress_bounded(data: &[u8], limit: u64) -> std::io::Result<Vec<u8>> {
    let dec = zstd::stream::read::Decoder::new(data)?;
    let mut out = Vec::new();
    let n = dec.take(limit + 1).read_to_end(&mut out)?;
    if n as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "too large",
        ));
    }
    Ok(out)
}

/// An image directory on disk.
#[derive(Debug, Clone)]
pub struct ImageDir {
    path: PathBuf,
}

impl ImageDir {
    /// Creates the directory (mode 0700) if needed.
    pub fn create(path: &Path) -> Result<ImageDir> {
        if !path.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .at(path)?;
        }
        Ok(ImageDir {
            path: path.to_path_buf(),
        })
    }

    /// Opens an existing image directory; it must hold an inventory.
    pub fn open(path: &Path) -> Result<ImageDir> {
        if !path.join(names::INVENTORY).is_file() {
            return Err(Error::image(
                path,
                "not a cairn image directory (no inventory.img)",
            ));
        }
        Ok(ImageDir {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Creates an image file with mode 0600.
    pub fn create_file(&self, name: &str) -> Result<File> {
        let p = self.file(name);
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&p)
            .at(&p)
    }

    pub fn write<M: Message>(&self, kind: Kind, name: &str, msg: &M) -> Result<()> {
        let bytes = encode_image(kind, msg)?;
        let p = self.file(name);
        let mut f = self.create_file(name)?;
        f.write_all(&bytes).at(&p)
    }

    pub fn read<M: Message>(&self, kind: Kind, name: &str) -> Result<M> {
        let p = self.file(name);
        let bytes = std::fs::read(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::image(&p, "missing")
            } else {
                Error::io(&p, e)
            }
        })?;
        decode_image(kind, &bytes, &p)
    }

    pub fn exists(&self, name: &str) -> bool {
        self.file(name).exists()
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
        let bytes = encode_image(Kind::Mm, &sample()).unwrap();
        let back: MmEntry = decode_image(Kind::Mm, &bytes, Path::new("mm.img")).unwrap();
        assert_eq!(back, sample());
    }

    fn err_of(bytes: &[u8]) -> String {
        decode_image::<MmEntry>(Kind::Mm, bytes, Path::new("x.img"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn corruption_is_reported_not_panicked() {
        let good = encode_image(Kind::Mm, &sample()).unwrap();
        // Wrong kind.
        assert!(decode_image::<MmEntry>(Kind::Core, &good, Path::new("x"))
            .unwrap_err()
            .to_string()
            .contains("expected core"));
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
            let _ = decode_image::<MmEntry>(Kind::Mm, &good[..n], Path::new("x"));
        }
        for i in 0..HEADER_LEN * 8 {
            let mut b = good.clone();
            b[i / 8] ^= 1 << (i % 8);
            let _ = decode_image::<MmEntry>(Kind::Mm, &b, Path::new("x"));
        }
    }

    #[test]
    fn decompression_is_bounded() {
        let big = vec![0u8; 1 << 20];
        let z = zstd::bulk::compress(&big, 1).unwrap();
        assert!(decompress_bounded(&z, 1 << 10).is_err());
        assert_eq!(decompress_bounded(&z, 1 << 20).unwrap().len(), 1 << 20);
    }

    #[test]
    fn kinds_have_distinct_magics() {
        for a in Kind::ALL {
            assert_eq!(Kind::from_magic(a.magic()), Some(a));
        }
    }
}
