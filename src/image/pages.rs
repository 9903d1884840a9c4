//! pages.img: page contents as independent chunks, so that dump can
//! compress and restore can decompress on every core. A chunk is one zstd
//! frame ([`ChunkCodec::CODEC_ZSTD`], every chunk of older images) or, where
//! compression does not pay, the bytes as they are
//! ([`ChunkCodec::CODEC_RAW`]). The chunk table is pagestore.img; pagemap
//! runs point into chunks.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::proto::{ChunkCodec, PageChunk, PageStore};
use super::{names, Header, ImageDir, ImageType, FORMAT_VERSION, HEADER_LEN};
use crate::error::{Error, IoContext, Result};

/// Largest raw chunk cairn writes, and the largest it accepts on restore.
pub const MAX_CHUNK_RAW: u64 = 16 << 20;
/// Largest compressed chunk accepted: zstd's bound for MAX_CHUNK_RAW.
pub const MAX_CHUNK_COMPRESSED: u64 = MAX_CHUNK_RAW + (MAX_CHUNK_RAW >> 8) + (128 << 10);

/// Where a [`PageStoreWriter`] puts the chunks of a dump whose pages go
/// elsewhere than its image directory (`dump --page-server`,
/// `crate::migrate::pageserver`).
pub trait ChunkSink: Send + Sync {
    /// Chunk `idx`, its table entry `entry` (offset, lengths, codec, crc)
    /// and its stored bytes. Called in index order, one at a time.
    fn put(&self, idx: u32, entry: &PageChunk, stored: &[u8]) -> Result<()>;
    /// Every chunk was put: the whole table and pages.img's header.
    fn finish(&self, store: &PageStore, header: &Header) -> Result<()>;
}

/// Where the chunks go.
enum Out {
    /// pages.img in the image directory (pagestore.img beside it).
    File(File),
    /// A sink: pages.img and pagestore.img are written by its other end.
    Sink(std::sync::Arc<dyn ChunkSink>),
}

/// Appends chunks to pages.img. Chunks may be appended from several
/// threads at once ([`PageStoreWriter::append_at`]): each reserves its
/// place and index under a lock and writes its bytes with pwrite, so the
/// copies into the page cache run in parallel (into a [`ChunkSink`]: one
/// at a time, in index order, under the lock).
pub struct PageStoreWriter {
    out: Out,
    /// A sink that gets every chunk too, while pages.img is written here
    /// (a migration's pre-copy round: [`PageStoreWriter::tee`]).
    tee: Option<std::sync::Arc<dyn ChunkSink>>,
    path: PathBuf,
    state: std::sync::Mutex<PageStore>,
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
            out: Out::File(file),
            tee: None,
            path,
            state: std::sync::Mutex::new(PageStore::new()),
        })
    }

    /// A writer whose chunks go to `sink` (`shown`: where they go, for
    /// messages); no pages.img nor pagestore.img is written here.
    pub fn to_sink(sink: std::sync::Arc<dyn ChunkSink>, shown: PathBuf) -> PageStoreWriter {
        PageStoreWriter {
            out: Out::Sink(sink),
            tee: None,
            path: shown,
            state: std::sync::Mutex::new(PageStore::new()),
        }
    }

    /// Also hands every chunk, in index order, and the final header to
    /// `sink` (pages.img is still written here).
    pub fn tee(mut self, sink: Option<std::sync::Arc<dyn ChunkSink>>) -> PageStoreWriter {
        self.tee = sink;
        self
    }

    /// Appends one zstd frame of `raw_len` bytes; returns its chunk index.
    pub fn append(&mut self, compressed: &[u8], raw_len: u64) -> Result<u32> {
        let crc = crc32fast::hash(compressed);
        self.append_at(compressed, raw_len, ChunkCodec::CODEC_ZSTD, crc)
    }

    /// Appends `data` as it is (a raw chunk); returns its chunk index.
    pub fn append_raw(&mut self, data: &[u8]) -> Result<u32> {
        let crc = crc32fast::hash(data);
        self.append_at(data, data.len() as u64, ChunkCodec::CODEC_RAW, crc)
    }

    /// Appends the chunk `stored` (`raw_len` bytes once decoded with
    /// `codec`, `crc32` the crc of `stored`, computed by the caller on its
    /// own thread); returns its chunk index. Callable from several threads.
    pub fn append_at(
        &self,
        stored: &[u8],
        raw_len: u64,
        codec: ChunkCodec,
        crc32: u32,
    ) -> Result<u32> {
        debug_assert!(codec != ChunkCodec::CODEC_RAW || stored.len() as u64 == raw_len);
        let mut c = PageChunk::new();
        c.compressed_len = stored.len() as u64;
        c.raw_len = raw_len;
        c.crc32 = crc32;
        c.codec = codec.into();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        c.offset = st.chunks.last().map_or(0, |l| l.offset + l.compressed_len);
        let (idx, offset) = (st.chunks.len() as u32, c.offset);
        let file = match &self.out {
            Out::Sink(sink) => {
                // Under the lock: the sink gets the chunks in index order.
                sink.put(idx, &c, stored)?;
                st.chunks.push(c);
                return Ok(idx);
            }
            Out::File(f) => f,
        };
        if let Some(t) = &self.tee {
            // Under the lock, as for a sink: in index order.
            t.put(idx, &c, stored)?;
        }
        st.chunks.push(c);
        drop(st);
        let at = HEADER_LEN as u64 + offset;
        file.write_all_at(stored, at)
            .map_err(|e| Error::io(&self.path, e))?;
        // Overlap disk writes with the rest of the dump; the final fsync
        // then only waits for the tail.
        let _ = crate::sys::mem::start_writeback(file, at, stored.len() as u64);
        Ok(idx)
    }

    /// Writes the final header of pages.img (length and crc of all
    /// chunks, the crc combined from theirs), syncs it and writes
    /// pagestore.img (into a sink: hands both to it, nothing is written
    /// into `dir`).
    pub fn finish(self, dir: &ImageDir) -> Result<u64> {
        let t = std::time::Instant::now();
        let store = self.state.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut crc = crc32fast::Hasher::new();
        for c in &store.chunks {
            crc.combine(&crc32fast::Hasher::new_with_initial_len(
                c.crc32,
                c.compressed_len,
            ));
        }
        let body_len = store
            .chunks
            .last()
            .map_or(0, |l| l.offset + l.compressed_len);
        let hdr = Header {
            kind: ImageType::Pages,
            version: FORMAT_VERSION,
            body_len,
            crc32: crc.finalize(),
        };
        let file = match &self.out {
            Out::Sink(sink) => {
                sink.finish(&store, &hdr)?;
                crate::info!("pages sent to {} in {:?}", self.path.display(), t.elapsed());
                return Ok(body_len);
            }
            Out::File(f) => f,
        };
        file.write_all_at(&hdr.encode(), 0).at(&self.path)?;
        if let Some(t) = &self.tee {
            t.finish(&store, &hdr)?;
        }
        // A staging directory syncs it with every other file at its commit.
        if crate::image::staging::durable() && !dir.syncs_at_commit() {
            file.sync_all().at(&self.path)?;
            crate::info!("pages.img synced in {:?}", t.elapsed());
        }
        dir.write(ImageType::PageStore, names::PAGESTORE, &store)?;
        Ok(body_len)
    }
}

/// Checks a chunk table against the body length of pages.img: chunks
/// follow each other without gaps or overlaps and cover the whole body,
/// none is larger than cairn writes, and a raw chunk stores exactly its
/// raw length.
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
        match c.codec.enum_value() {
            Ok(ChunkCodec::CODEC_ZSTD) => {}
            Ok(ChunkCodec::CODEC_RAW) if c.compressed_len == c.raw_len => {}
            Ok(ChunkCodec::CODEC_RAW) => {
                return Err(format!(
                    "chunk {i}: raw, but {} bytes stored for {} raw",
                    c.compressed_len, c.raw_len
                ))
            }
            Err(v) => return Err(format!("chunk {i}: unknown codec {v}")),
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

    /// Reads, checks and (unless raw) decompresses chunk `idx` into a
    /// new buffer (see [`PageStoreReader::read_chunk_into`] for reused
    /// ones).
    pub fn read_chunk(&self, idx: u32) -> Result<Vec<u8>> {
        let mut bufs = ChunkBufs::default();
        self.read_chunk_into(idx, &mut bufs)?;
        let raw = self.chunk(idx)?.codec.enum_value() == Ok(ChunkCodec::CODEC_RAW);
        Ok(if raw { bufs.stored } else { bufs.raw })
    }

    /// The file (for restore, which hands it to the restored process so
    /// that it reads raw chunks in place) and its path.
    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Entry `idx` of the chunk table (validated when the store was
    /// opened: inside the body, raw chunks as long as their raw length).
    pub fn chunk(&self, idx: u32) -> Result<&PageChunk> {
        self.store
            .chunks
            .get(idx as usize)
            .ok_or_else(|| Error::image(&self.path, format!("no chunk {idx}")))
    }

    /// Whether chunk `idx` is stored raw (its bytes in the file are the
    /// pages).
    pub fn is_raw(&self, idx: u32) -> bool {
        self.chunk(idx)
            .is_ok_and(|c| c.codec.enum_value() == Ok(ChunkCodec::CODEC_RAW))
    }

    /// Where chunk `c`'s stored bytes start in the file.
    pub fn file_pos(&self, c: &PageChunk) -> u64 {
        HEADER_LEN as u64 + c.offset
    }

    /// Checks `stored`, the stored bytes of chunk `idx` wherever they were
    /// read to, against the chunk's crc.
    pub fn check_crc(&self, idx: u32, stored: &[u8], where_: &str) -> Result<()> {
        let c = self.chunk(idx)?;
        if crc32fast::hash(stored) != c.crc32 {
            return Err(Error::image(
                &self.path,
                format!("chunk {idx}: checksum mismatch{where_}"),
            ));
        }
        Ok(())
    }

    /// Reads, checks and (unless raw) decompresses chunk `idx` into the
    /// reused buffers `bufs`; returns its raw bytes. Buffers keep their
    /// memory from chunk to chunk: no page of them is faulted in again.
    pub fn read_chunk_into<'b>(&self, idx: u32, bufs: &'b mut ChunkBufs) -> Result<&'b [u8]> {
        let c = self.chunk(idx)?;
        let n = c.compressed_len as usize;
        // Same length as the last chunk's (the common case): no-op.
        bufs.stored.resize(n, 0);
        self.file
            .read_exact_at(&mut bufs.stored, self.file_pos(c))
            .map_err(|e| Error::image(&self.path, format!("chunk {idx}: {e}")))?;
        self.check_crc(idx, &bufs.stored, "")?;
        if c.codec.enum_value() == Ok(ChunkCodec::CODEC_RAW) {
            // validate_store checked that the stored length is the raw one.
            return Ok(&bufs.stored);
        }
        let dctx = match &mut bufs.dctx {
            Some(d) => d,
            None => bufs.dctx.insert(
                zstd::bulk::Decompressor::new()
                    .map_err(|e| Error::image(&self.path, format!("zstd: {e}")))?,
            ),
        };
        bufs.raw.clear();
        bufs.raw.reserve(c.raw_len as usize);
        // Decompresses into the spare capacity: nothing is zeroed first.
        let got = dctx
            .decompress_to_buffer(&bufs.stored[..], &mut bufs.raw)
            .map_err(|e| Error::image(&self.path, format!("chunk {idx}: decompress: {e}")))?;
        if got as u64 != c.raw_len || bufs.raw.len() as u64 != c.raw_len {
            return Err(Error::image(
                &self.path,
                format!("chunk {idx}: wrong length"),
            ));
        }
        Ok(&bufs.raw)
    }
}

/// Buffers for [`PageStoreReader::read_chunk_into`], kept by a restore
/// worker from chunk to chunk.
#[derive(Default)]
pub struct ChunkBufs {
    /// The chunk as stored (the pages themselves for a raw chunk).
    stored: Vec<u8>,
    /// A compressed chunk's pages.
    raw: Vec<u8>,
    dctx: Option<zstd::bulk::Decompressor<'static>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::proto::Inventory;

    fn tmp(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("cairn-pages-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    fn pattern(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn write_store(dir: &ImageDir, chunks: &[(&[u8], bool)]) -> u64 {
        let mut w = PageStoreWriter::create(dir).unwrap();
        for (i, (data, raw)) in chunks.iter().enumerate() {
            let idx = if *raw {
                w.append_raw(data).unwrap()
            } else {
                let c = zstd::bulk::compress(data, 1).unwrap();
                w.append(&c, data.len() as u64).unwrap()
            };
            assert_eq!(idx as usize, i);
        }
        let n = w.finish(dir).unwrap();
        let mut inv = Inventory::new();
        dir.write_inventory(&mut inv).unwrap();
        n
    }

    /// Raw and zstd chunks side by side read back as written, and the
    /// whole-body check (`show --verify`) covers both.
    #[test]
    fn raw_and_compressed_chunks_read_back() {
        let t = tmp("mixed");
        let dir = ImageDir::create(&t).unwrap();
        let random = pattern(3 * 4096, 7);
        let zeros = vec![0u8; 8 * 4096];
        let body = write_store(&dir, &[(&random, true), (&zeros, false), (&random, true)]);
        let frame = zstd::bulk::compress(&zeros, 1).unwrap().len() as u64;
        assert_eq!(body, 2 * random.len() as u64 + frame);
        let r = PageStoreReader::open(&dir).unwrap();
        assert_eq!(r.chunk_count(), 3);
        assert_eq!(
            r.store.chunks[0].codec.enum_value(),
            Ok(ChunkCodec::CODEC_RAW)
        );
        assert_eq!(
            r.store.chunks[1].codec.enum_value(),
            Ok(ChunkCodec::CODEC_ZSTD)
        );
        assert_eq!(r.read_chunk(0).unwrap(), random);
        assert_eq!(r.read_chunk(1).unwrap(), zeros);
        assert_eq!(r.read_chunk(2).unwrap(), random);
        r.verify_body().unwrap();
        let _ = std::fs::remove_dir_all(&t);
    }

    /// A chunk table written before codecs existed (no field 5) is read
    /// as zstd frames: old images still restore.
    #[test]
    fn old_format_chunk_reads_as_zstd() {
        let t = tmp("old");
        let dir = ImageDir::create(&t).unwrap();
        let data = pattern(2 * 4096, 3);
        write_store(&dir, &[(&data, false)]);
        // Re-encode the table the way an old dump did: without the codec.
        let r = PageStoreReader::open(&dir).unwrap();
        let mut store = r.store.clone();
        drop(r);
        store.chunks[0].codec = ChunkCodec::CODEC_ZSTD.into();
        let bytes = protobuf::Message::write_to_bytes(&store.chunks[0]).unwrap();
        // proto3 leaves the default value out: nothing of field 5 (tag 0x28).
        assert!(!bytes.contains(&0x28), "{bytes:?}");
        dir.write(ImageType::PageStore, names::PAGESTORE, &store)
            .unwrap();
        let r = PageStoreReader::open(&dir).unwrap();
        assert_eq!(r.read_chunk(0).unwrap(), data);
        let _ = std::fs::remove_dir_all(&t);
    }

    /// Forged chunk tables give a clear error naming the chunk.
    #[test]
    fn bad_codecs_are_refused() {
        let mut store = PageStore::new();
        let mut c = PageChunk::new();
        c.compressed_len = 4096;
        c.raw_len = 8192;
        c.codec = ChunkCodec::CODEC_RAW.into();
        store.chunks.push(c);
        let e = validate_store(&store, 4096).unwrap_err();
        assert!(
            e.contains("chunk 0: raw, but 4096 bytes stored for 8192"),
            "{e}"
        );
        store.chunks[0].raw_len = 4096;
        validate_store(&store, 4096).unwrap();
        store.chunks[0].codec = protobuf::EnumOrUnknown::from_i32(9);
        let e = validate_store(&store, 4096).unwrap_err();
        assert!(e.contains("chunk 0: unknown codec 9"), "{e}");
    }

    /// A raw chunk whose bytes changed fails its crc, like a zstd one.
    #[test]
    fn corrupt_raw_chunk_is_refused() {
        let t = tmp("corrupt");
        let dir = ImageDir::create(&t).unwrap();
        let data = pattern(4096, 5);
        write_store(&dir, &[(&data, true)]);
        let p = t.join(names::PAGES);
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all_at(&[data[100] ^ 1], HEADER_LEN as u64 + 100)
            .unwrap();
        let r = PageStoreReader::open(&dir).unwrap();
        let e = r.read_chunk(0).unwrap_err().to_string();
        assert!(e.contains("chunk 0: checksum mismatch"), "{e}");
        let _ = std::fs::remove_dir_all(&t);
    }
}
