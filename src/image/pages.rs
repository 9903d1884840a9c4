//! pages.img: page contents as independent zstd frames ("chunks"), so that
//! dump can compress and restore can decompress on every core. The chunk
//! table is pagestore.img; pagemap runs point into chunks.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::proto::{PageChunk, PageStore};
use super::{names, Header, ImageDir, Kind, FORMAT_VERSION, HEADER_LEN};
use crate::error::{Error, IoContext, Result};

/// Largest raw chunk cairn writes, and the largest it accepts on restore.
pub const MAX_CHUNK_RAW: u64 = 16 << 20;

/// Appends compressed chunks to pages.img.
pub struct PageStoreWriter {
    file: File,
    path: PathBuf,
    offset: u64,
    store: PageStore,
}

impl PageStoreWriter {
    pub fn create(dir: &ImageDir) -> Result<PageStoreWriter> {
        let path = dir.file(names::PAGES);
        let mut file = dir.create_file(names::PAGES)?;
        let hdr = Header {
            kind: Kind::Pages,
            version: FORMAT_VERSION,
            body_len: 0,
            crc32: 0,
        };
        file.write_all(&hdr.encode()).at(&path)?;
        Ok(PageStoreWriter {
            file,
            path,
            offset: 0,
            store: PageStore::new(),
        })
    }

    /// Appends one compressed frame; returns its chunk index.
    pub fn append(&mut self, compressed: &[u8], raw_len: u64) -> Result<u32> {
        self.file.write_all(compressed).at(&self.path)?;
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

    /// Syncs pages.img and writes pagestore.img.
    pub fn finish(self, dir: &ImageDir) -> Result<u64> {
        let t = std::time::Instant::now();
        self.file.sync_all().at(&self.path)?;
        crate::info!("pages.img synced in {:?}", t.elapsed());
        dir.write(Kind::PageStore, names::PAGESTORE, &self.store)?;
        Ok(self.offset)
    }
}

/// Reads chunks of pages.img, validating each against the chunk table.
pub struct PageStoreReader {
    file: File,
    path: PathBuf,
    size: u64,
    pub store: PageStore,
}

impl PageStoreReader {
    pub fn open(dir: &ImageDir) -> Result<PageStoreReader> {
        let store: PageStore = dir.read(Kind::PageStore, names::PAGESTORE)?;
        let path = dir.file(names::PAGES);
        let file = File::open(&path).at(&path)?;
        let size = file.metadata().at(&path)?.len();
        let mut hdr = [0u8; HEADER_LEN];
        file.read_exact_at(&mut hdr, 0)
            .map_err(|_| Error::image(&path, "truncated header"))?;
        let h = Header::decode(&hdr, &path)?;
        if h.kind != Kind::Pages {
            return Err(Error::image(
                &path,
                format!("is a {} image, expected pages", h.kind.name()),
            ));
        }
        for (i, c) in store.chunks.iter().enumerate() {
            let end = c
                .offset
                .checked_add(c.compressed_len)
                .and_then(|e| e.checked_add(HEADER_LEN as u64));
            if end.is_none_or(|e| e > size)
                || c.raw_len > MAX_CHUNK_RAW
                || c.compressed_len > MAX_CHUNK_RAW * 2
            {
                return Err(Error::image(
                    &path,
                    format!("chunk {i} lies outside the file or is too large"),
                ));
            }
        }
        Ok(PageStoreReader {
            file,
            path,
            size,
            store,
        })
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
