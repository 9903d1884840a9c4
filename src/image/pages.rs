//! pages.img: page contents as independent zstd frames ("chunks"), so that
//! dump can compress and restore can decompress on every core. The chunk
//! table is pagestore.img; pagemap runs point into chunks.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::proto::{PageChunk, PageStore};
use super::{names, Header, ImageDir, ImageType, FORMAT_VERSION, HEADER_LEN};
use crate::error::{Error, IoContext, Result};

/// Largest raw chunk cairn writes, and the largest it accepts on restore.
pub const MAX_CHUNK_RAW: u64 = 16 << 20;
/// Largest compressed chunk accepted: zstd's bound for MAX_CHUNK_RAW.
pub const MAX_CHUNK_COMPRESSED: u64 = MAX_CHUNK_RAW + (MAX_CHUNK_RAW >> 8) + (128 << 10);

/// Appends compressed chunks to pages.img.
pub struct PageStoreWriter {
    file: File,
    path: PathBuf,
    offset: u64,
    crc: crc32fast::Hasher,
    store: PageStore,
}

impl PageStoreWriter {
    pub fn create(dir: &ImageDir) -> Result<PageStoreWriter> {
        let path = dir.file(names::PAGES);
        let mut file = dir.create_file(names::PAGES)?;
        // A placeholder (body length 0): until `finish` writes the real
        // header, the file does not match its contents and is refused.
        let hdr = Header {
            kind: ImageType::Pages,
            version: FORMAT_VERSION,
            body_len: 0,
            crc32: 0,
        };
        file.write_all(&hdr.encode()).at(&path)?;
        Ok(PageStoreWriter {
            file,
            path,
            offset: 0,
            crc: crc32fast::Hasher::new(),
            store: PageStore::new(),
        })
    }

    /// Appends one compressed frame; returns its chunk index.
    pub fn append(&mut self, compressed: &[u8], raw_len: u64) -> Result<u32> {
        self.file.write_all(compressed).at(&self.path)?;
        self.crc.update(compressed);
        // Overlap disk writes with the rest of the dump; the final fsync
        // then only waits for the tail.
        let _ = crate::sys::mem::start_writeback(
            &self.file,
            HEADER_LEN as u64 + self.offset,
            compressed.len() as u64,
        );
        let mut c = PageChunk::new();
        c.offset = self.offset;
        c.compressed_len = compressed.len() as u64;
        c.raw_len = raw_len;
        c.crc32 = crc32fast::hash(compressed);
        self.offset += compressed.len() as u64;
        self.store.chunks.push(c);
        Ok((self.store.chunks.len() - 1) as u32)
    }

    /// Writes the final header of pages.img (length and crc of all
    /// chunks), syncs it and writes pagestore.img.
    pub fn finish(self, dir: &ImageDir) -> Result<u64> {
        let t = std::time::Instant::now();
        let hdr = Header {
            kind: ImageType::Pages,
            version: FORMAT_VERSION,
            body_len: self.offset,
            crc32: self.crc.clone().finalize(),
        };
        self.file.write_all_at(&hdr.encode(), 0).at(&self.path)?;
        self.file.sync_all().at(&self.path)?;
        crate::info!("pages.img synced in {:?}", t.elapsed());
        dir.write(ImageType::PageStore, names::PAGESTORE, &self.store)?;
        Ok(self.offset)
    }
}

/// Checks a chunk table against the body length of pages.img: chunks
/// follow each other without gaps or overlaps and cover the whole body,
/// and none is larger than cairn writes.
pub fn validate_store(store: &PageStore, body_len: u64) -> std::result::Result<(), String> {
    let mut expect = 0u64;
    for (i, c) in store.chunks.iter().enumerate() {
        if c.offset != expect {
            return Err(format!(
                "chunk {i} starts at {}, expected {expect} (gap or overlap)",
                c.offset
            ));
        }
        if c.compressed_len == 0
            || c.compressed_len > MAX_CHUNK_COMPRESSED
            || c.raw_len == 0
            || c.raw_len > MAX_CHUNK_RAW
        {
            return Err(format!(
                "chunk {i}: {} bytes compressed, {} raw: bad size",
                c.compressed_len, c.raw_len
            ));
        }
        expect = c
            .offset
            .checked_add(c.compressed_len)
            .filter(|&e| e <= body_len)
            .ok_or_else(|| format!("chunk {i} lies outside pages.img"))?;
    }
    if expect != body_len {
        return Err(format!(
            "{} bytes of pages.img after the last chunk",
            body_len - expect
        ));
    }
    Ok(())
}

/// Reads the body of an image file (`size` bytes in all) and checks it
/// against the crc in its header.
pub fn verify_raw_body(file: &File, header: &Header, size: u64, path: &Path) -> Result<()> {
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = HEADER_LEN as u64;
    while off < size {
        let n = ((size - off) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], off)
            .map_err(|e| Error::image(path, format!("read at {off}: {e}")))?;
        crc.update(&buf[..n]);
        off += n as u64;
    }
    if crc.finalize() != header.crc32 {
        return Err(Error::image(path, "checksum mismatch"));
    }
    Ok(())
}

/// Reads chunks of pages.img, validating each against the chunk table.
pub struct PageStoreReader {
    file: File,
    path: PathBuf,
    size: u64,
    header: Header,
    pub store: PageStore,
}

impl PageStoreReader {
    pub fn open(dir: &ImageDir) -> Result<PageStoreReader> {
        let store: PageStore = dir.read(ImageType::PageStore, names::PAGESTORE)?;
        let path = dir.file(names::PAGES);
        let (file, header, size) = dir.open_raw(ImageType::Pages, names::PAGES)?;
        validate_store(&store, header.body_len).map_err(|m| Error::image(&path, m))?;
        Ok(PageStoreReader {
            file,
            path,
            size,
            header,
            store,
        })
    }

    /// Reads the whole body and checks it against the header's crc (for
    /// `cairn show --verify`; restore checks each chunk as it reads it).
    pub fn verify_body(&self) -> Result<()> {
        verify_raw_body(&self.file, &self.header, self.size, &self.path)
    }

    pub fn chunk_count(&self) -> usize {
        self.store.chunks.len()
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Reads, checks and decompresses chunk `idx`.
    pub fn read_chunk(&self, idx: u32) -> Result<Vec<u8>> {
        let c = self
            .store
            .chunks
            .get(idx as usize)
            .ok_or_else(|| Error::image(&self.path, format!("no chunk {idx}")))?;
        let mut buf = vec![0u8; c.compressed_len as usize];
        self.file
            .read_exact_at(&mut buf, HEADER_LEN as u64 + c.offset)
            .map_err(|e| Error::image(&self.path, format!("chunk {idx}: {e}")))?;
        if crc32fast::hash(&buf) != c.crc32 {
            return Err(Error::image(
                &self.path,
                format!("chunk {idx}: checksum mismatch"),
            ));
        }
        let raw = zstd::bulk::decompress(&buf, c.raw_len as usize)
            .map_err(|e| Error::image(&self.path, format!("chunk {idx}: decompress: {e}")))?;
        if raw.len() as u64 != c.raw_len {
            return Err(Error::image(
                &self.path,
                format!("chunk {idx}: wrong length"),
            ));
        }
        Ok(raw)
    }
}
