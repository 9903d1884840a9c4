//! `cairn show --verify`: checks a checkpoint completely without restoring
//! it, and stops at the first problem with an error naming the file and
//! what is wrong with it (exit code 5).
//!
//! For a directory, in this order:
//! 1. `inventory.img` and the list of files it holds: every listed file is
//!    there with its recorded size, and every `*.img` file is listed;
//! 2. every file: header (magic, version, its own crc, kind), body length
//!    and body crc, matching its inventory entry; message images are
//!    decoded; for `pages.img` the whole body is read;
//! 3. everything a restore checks before it creates a process
//!    ([`crate::restore::Images::load`], the contents image);
//! 4. every chunk of the page store (of every layer, for an incremental
//!    checkpoint) is read, checked against its crc and decompressed to its
//!    recorded length.
//!
//! For a single file, steps 2 (without the inventory entry) and, for
//! `pages.img` with its `pagestore.img` beside it, 4.

use std::fmt::Write as _;
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::image::pages::PageStoreReader;
use crate::image::{is_image_name, names, ImageDir, ImageType, HEADER_LEN};
use crate::json::json_string;
use crate::sys::safefs;

/// What was verified.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub images: usize,
    pub bytes: u64,
    pub chunks: usize,
}

/// Prints the report of [`verify`] on stdout (text, or one JSON object).
pub fn run(path: &Path, json: bool) -> Result<()> {
    let r = verify(path)?;
    let out = if json {
        format!(
            "{{\"schema\":\"{}\",\"view\":\"verify\",\"path\":{},\"verified\":true,\"images\":{},\"bytes\":{},\"chunks\":{}}}\n",
            super::show::SCHEMA,
            json_string(&path.to_string_lossy()),
            r.images,
            r.bytes,
            r.chunks
        )
    } else {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{}: verified {} image{}, {} bytes, {} page chunk{}",
            path.display(),
            r.images,
            if r.images == 1 { "" } else { "s" },
            r.bytes,
            r.chunks,
            if r.chunks == 1 { "" } else { "s" },
        );
        s
    };
    let mut stdout = std::io::stdout().lock();
    std::io::Write::write_all(&mut stdout, out.as_bytes()).at("<stdout>")
}

/// Verifies a checkpoint directory or one image file (never through a
/// symbolic link; see [`crate::sys::safefs`]).
pub fn verify(path: &Path) -> Result<Report> {
    let is_dir = safefs::is_dir_nofollow(path).at(path)?;
    if is_dir {
        verify_dir(path)
    } else {
        verify_file(path)
    }
}

/// Reads every chunk of the store: crc and decompressed length.
fn verify_chunks(store: &PageStoreReader) -> Result<usize> {
    for i in 0..store.chunk_count() {
        store.read_chunk(i as u32)?;
    }
    Ok(store.chunk_count())
}

fn verify_file(p: &Path) -> Result<Report> {
    let parent = match p.parent() {
        Some(q) if !q.as_os_str().is_empty() => q,
        _ => Path::new("."),
    };
    let dir = ImageDir::view(parent)?;
    let file = p
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::image(p, "not a file name"))?;
    let (mut f, size) = dir.open_file(file)?;
    let mut raw = [0u8; HEADER_LEN];
    {
        use std::io::Read;
        f.read_exact(&mut raw)
            .map_err(|_| Error::image(p, "truncated header"))?;
    }
    let hdr = crate::image::Header::decode(&raw, p)?;
    let mut r = Report {
        images: 1,
        bytes: size,
        chunks: 0,
    };
    if hdr.kind.is_message() {
        super::show::check_message_file(&dir.read_all(file)?, p)?;
        return Ok(r);
    }
    // pages.img: with its chunk table beside it, every chunk; otherwise the
    // body crc alone.
    if file == names::PAGES && dir.exists(names::PAGESTORE) {
        let store = PageStoreReader::open(&dir)?;
        r.chunks = verify_chunks(&store)?;
        store.verify_body()?;
    } else {
        let (f, h, size) = dir.open_raw(ImageType::Pages, file)?;
        crate::image::pages::verify_raw_body(&f, &h, size, p)?;
    }
    Ok(r)
}

fn verify_dir(path: &Path) -> Result<Report> {
    let (dir, _inv) = ImageDir::load(path)?;
    let listed = dir.listed().unwrap_or_default();
    let mut r = Report::default();
    // Files that are not part of the checkpoint.
    for (name, _) in dir.entries()? {
        // The statistics are written after the inventory (crate::stats).
        if names::is_stats(&name) {
            let bytes = dir.read_all(&name)?;
            super::show::check_message_file(&bytes, &dir.file(&name))?;
            continue;
        }
        if is_image_name(&name) && name != names::INVENTORY && !listed.contains(&name) {
            return Err(Error::image(
                dir.file(&name),
                "not part of this checkpoint (not listed in inventory.img)",
            ));
        }
    }
    r.images = listed.len() + 1;
    r.bytes = dir.open_file(names::INVENTORY)?.1;
    for name in &listed {
        let p = dir.file(name);
        if name == names::PAGES {
            // Header, size and inventory entry here; body and chunks below.
            let (_, _, size) = dir.open_raw(ImageType::Pages, name)?;
            r.bytes += size;
            continue;
        }
        let bytes = dir.read_all(name)?;
        let kind = super::show::check_message_file(&bytes, &p)?;
        // Same checks as a restore's read, including the inventory entry.
        dir.check_file(kind, name)?;
        r.bytes += bytes.len() as u64;
    }
    // What a restore validates before it creates anything.
    let img = crate::restore::Images::load(path)?;
    crate::kinds::contents::load(&img.dir, img.store(), &img.files)?;
    // The page stores of every layer of an incremental chain.
    for l in &img.chain.layers {
        r.chunks += verify_chunks(&l.store)?;
        l.store.verify_body()?;
    }
    Ok(r)
}
