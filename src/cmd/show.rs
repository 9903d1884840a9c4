//! `cairn show`: decode the images of a checkpoint directory (or one image
//! file) for people (protobuf text format) or scripts (JSON), like CRIU's
//! `crit show`.
//!
//! Every file's kind comes from the magic in its header, not from its name,
//! so a renamed or misplaced image is still decoded as what it is. Page data
//! (`pages.img`) is never printed: only its size and the number of chunks
//! `pagestore.img` lists.

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};

use protobuf::{MessageDyn, MessageFull};

use crate::error::{Error, IoContext, Result};
use crate::image::{
    decode_image, names, proto, Header, ImageDir, ImageType, HEADER_LEN, MAX_MESSAGE_BYTES,
};
use crate::json::json_string;
use crate::sys::safefs;

/// Prints [`render`]'s output on stdout.
pub fn show(path: &Path, json: bool) -> Result<()> {
    let out = render(path, json)?;
    let mut stdout = std::io::stdout().lock();
    std::io::Write::write_all(&mut stdout, out.as_bytes()).at("<stdout>")
}

/// Decodes `path` (an image directory or a single image file) and formats
/// it: text with a heading per file, or one JSON object
/// `{"dir": ..., "images": [{"file", "kind", "message"}, ...]}`.
///
/// Nothing is followed through a final symbolic link, every file is read
/// through the directory's descriptor and must be a regular file, and a
/// directory or file another user could have written is refused unless
/// `--allow-foreign-images` was given ([`crate::image::check_trust`]).
pub fn render(path: &Path, json: bool) -> Result<String> {
    let is_dir = safefs::is_dir_nofollow(path).at(path)?;
    let (dir, files) = if is_dir {
        let d = ImageDir::view(path)?;
        d.check_dir_trusted()?;
        let files = image_files(&d)?;
        (d, files)
    } else {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::image(path, "not a file name"))?
            .to_string();
        (ImageDir::view(&dir)?, vec![file])
    };
    let images = files
        .iter()
        .map(|f| decode_file(&dir, f))
        .collect::<Result<Vec<_>>>()?;
    let chain = if is_dir { chain_of(&dir)? } else { Vec::new() };
    Ok(if json {
        to_json(dir.path(), &images, &chain)
    } else {
        let mut out = chain_text(&chain);
        out.push_str(&to_text(&images));
        out
    })
}

/// One layer of an incremental chain, as `show` lists it.
struct LayerInfo {
    dir: String,
    inventory: proto::Inventory,
    /// Pages by run kind over all pagemaps: data, zero, in parent.
    pages: [u64; 3],
}

/// The layers of the chain that starts at `dir` (empty for a directory
/// that is not part of one). A broken chain is an error naming the
/// directory.
fn chain_of(dir: &ImageDir) -> Result<Vec<LayerInfo>> {
    use crate::image::chain;
    if !dir.exists(names::INVENTORY) {
        return Ok(Vec::new());
    }
    let inv_path = dir.file(names::INVENTORY);
    let inv: proto::Inventory = decode_image(
        ImageType::Inventory,
        &dir.read_all(names::INVENTORY)?,
        &inv_path,
    )?;
    if inv.parent_dir.is_empty() && inv.tracking_armed.is_empty() && !inv.pre_dump {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut cur: (ImageDir, proto::Inventory) = (dir.clone(), inv);
    loop {
        let d = &cur.0;
        let mut pages = [0u64; 3];
        for (n, _) in d.entries()? {
            if n.starts_with("pagemap-") && n.ends_with(".img") {
                let pm: proto::Pagemap = d.read(ImageType::Pagemap, &n)?;
                for r in &pm.runs {
                    let i = match r.kind.enum_value() {
                        Ok(proto::RunKind::RUN_DATA) => 0,
                        Ok(proto::RunKind::RUN_ZERO) => 1,
                        _ => 2,
                    };
                    pages[i] += r.nr_pages;
                }
            }
        }
        let next = chain::parent_path(d.path(), &cur.1);
        let child_id = cur.1.parent_layer_id.clone();
        let here = d.path().to_path_buf();
        out.push(LayerInfo {
            dir: here.display().to_string(),
            inventory: cur.1,
            pages,
        });
        let Some(p) = next else { break };
        if out.len() > chain::MAX_DEPTH {
            return Err(Error::image(
                &p,
                "the chain of parents is too long or loops",
            ));
        }
        cur = chain::open_layer(&p, &here, &child_id)?;
    }
    Ok(out)
}

fn chain_text(chain: &[LayerInfo]) -> String {
    let mut out = String::new();
    if chain.is_empty() {
        return out;
    }
    let _ = writeln!(out, "=== chain ({} layers, newest first) ===", chain.len());
    for (i, l) in chain.iter().enumerate() {
        let inv = &l.inventory;
        let what = if inv.pre_dump { "pre-dump" } else { "dump" };
        let how = if inv.dirty_tracking.is_empty() {
            "full".to_string()
        } else {
            format!("changes found by {}", inv.dirty_tracking)
        };
        let _ = writeln!(
            out,
            "layer {i}: {} ({what}, {how}): {} pages stored, {} zero, {} in parent{}",
            l.dir,
            l.pages[0],
            l.pages[1],
            l.pages[2],
            if inv.tracking_armed.is_empty() {
                String::new()
            } else {
                format!("; armed {} for the next layer", inv.tracking_armed)
            }
        );
        for f in &inv.full_owners {
            let _ = writeln!(out, "  stored whole: {f}");
        }
    }
    out.push('\n');
    out
}

/// One decoded image file.
struct Decoded {
    file: String,
    kind: ImageType,
    body: Body,
}

enum Body {
    Message(Box<dyn MessageDyn>),
    /// `pages.img`: its size and the chunk count from `pagestore.img`
    /// (`None` when there is no page store beside it).
    Pages {
        bytes: u64,
        chunks: Option<usize>,
    },
}

/// The `*.img` files of `dir` in display order: inventory, pstree, the
/// per-process files (by pid, then name), then the rest by name. Only
/// regular files (not followed if links) are listed.
fn image_files(dir: &ImageDir) -> Result<Vec<String>> {
    let mut files = Vec::new();
    for (name, _) in dir.entries()? {
        if !name.ends_with(".img") {
            continue;
        }
        let st = safefs::lstatat(dir.fd(), std::ffi::OsStr::new(&name)).at(dir.file(&name))?;
        if safefs::file_type(&st) == rustix::fs::FileType::RegularFile {
            files.push(name);
        }
    }
    if files.is_empty() {
        return Err(Error::image(dir.path(), "no image files (*.img) here"));
    }
    files.sort_by_cached_key(|n| sort_key(n));
    Ok(files)
}

/// Orders file names: inventory, pstree, per-pid files, everything else.
fn sort_key(name: &str) -> (u8, u64, String) {
    if name == names::INVENTORY {
        return (0, 0, String::new());
    }
    if name == names::PSTREE {
        return (1, 0, String::new());
    }
    match owner_pid(name) {
        Some(pid) => (2, pid, name.to_string()),
        None => (3, 0, name.to_string()),
    }
}

/// The pid in a per-process file name (`core-12.img`, `mm-12.img`,
/// `fdinfo-12.img`, `pagemap-pid-12.img`); `None` for shared objects
/// (`pagemap-shmem-<inode>.img`) and directory-wide files.
fn owner_pid(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".img")?;
    let (prefix, num) = stem.rsplit_once('-')?;
    if !matches!(prefix, "core" | "mm" | "fdinfo" | "pagemap-pid") {
        return None;
    }
    num.parse().ok()
}

fn decode_file(dir: &ImageDir, file: &str) -> Result<Decoded> {
    let path = &dir.file(file);
    // The header first: pages.img may be gigabytes and is never read whole.
    let (mut f, size) = dir.open_file(file)?;
    let mut head = [0u8; HEADER_LEN];
    f.read_exact(&mut head)
        .map_err(|_| Error::image(path, "truncated header"))?;
    let hdr = Header::decode(&head, path)?;
    let file = file.to_string();
    // The rest of a message image, read only for message kinds.
    let mut whole = || -> Result<Vec<u8>> {
        if size > MAX_MESSAGE_BYTES {
            return Err(Error::image(
                path,
                format!("{size} bytes: too large for a message image"),
            ));
        }
        let mut bytes = head.to_vec();
        f.read_to_end(&mut bytes).at(path)?;
        Ok(bytes)
    };
    let k = hdr.kind;
    let body = match k {
        ImageType::Pages => {
            let chunks = if dir.exists(names::PAGESTORE) {
                let store = dir.file(names::PAGESTORE);
                let b = dir.read_all(names::PAGESTORE)?;
                let ps: proto::PageStore = decode_image(ImageType::PageStore, &b, &store)?;
                Some(ps.chunks.len())
            } else {
                None
            };
            Body::Pages {
                bytes: size - HEADER_LEN as u64,
                chunks,
            }
        }
        k => decode_message(k, &whole()?, path)?,
    };
    Ok(Decoded {
        file,
        kind: hdr.kind,
        body,
    })
}

/// Checks and decodes a whole message image of kind `k` (every kind but
/// `pages`): the one table of which message each kind holds.
fn decode_message(k: ImageType, bytes: &[u8], path: &Path) -> Result<Body> {
    match k {
        ImageType::Inventory => msg::<proto::Inventory>(k, bytes, path),
        ImageType::Pstree => msg::<proto::Pstree>(k, bytes, path),
        ImageType::Core => msg::<proto::TaskCore>(k, bytes, path),
        ImageType::Mm => msg::<proto::MmEntry>(k, bytes, path),
        ImageType::Pagemap => msg::<proto::Pagemap>(k, bytes, path),
        ImageType::PageStore => msg::<proto::PageStore>(k, bytes, path),
        ImageType::Files => msg::<proto::Files>(k, bytes, path),
        ImageType::FdTable => msg::<proto::FdTable>(k, bytes, path),
        ImageType::Contents => msg::<proto::FileContents>(k, bytes, path),
        ImageType::PageHash => msg::<proto::PageHashes>(k, bytes, path),
        ImageType::Oracle => msg::<proto::KernelView>(k, bytes, path),
        ImageType::Stats => msg::<proto::Stats>(k, bytes, path),
        ImageType::Pages => Err(Error::image(path, "page data is not a message")),
    }
}

/// Checks and decodes a whole message image, whatever its kind (from its
/// magic); for `cairn show --verify`.
pub fn check_message_file(bytes: &[u8], path: &Path) -> Result<ImageType> {
    let hdr = Header::decode(bytes, path)?;
    decode_message(hdr.kind, bytes, path)?;
    Ok(hdr.kind)
}

fn msg<M: MessageFull>(kind: ImageType, bytes: &[u8], path: &Path) -> Result<Body> {
    let m: M = decode_image(kind, bytes, path)?;
    Ok(Body::Message(Box::new(m)))
}

fn to_text(images: &[Decoded]) -> String {
    let mut out = String::new();
    for (i, img) in images.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "=== {} ({}) ===", img.file, img.kind.name());
        match &img.body {
            Body::Message(m) if img.kind == ImageType::Stats => {
                // What the dump or restore measured, as --display-stats
                // prints it.
                match m.downcast_ref::<proto::Stats>() {
                    Some(st) => out.push_str(&crate::stats::render(st)),
                    None => out.push_str("(not a statistics message)\n"),
                }
            }
            Body::Message(m) => {
                let text = protobuf::text_format::print_to_string_pretty(m.as_ref());
                if text.is_empty() {
                    out.push_str("(empty message)\n");
                } else {
                    out.push_str(&text);
                    if !text.ends_with('\n') {
                        out.push('\n');
                    }
                }
            }
            Body::Pages { bytes, chunks } => {
                let _ = write!(out, "page data: {bytes} bytes");
                match chunks {
                    Some(c) => {
                        let _ = writeln!(out, " in {c} chunks (see {})", names::PAGESTORE);
                    }
                    None => {
                        let _ = writeln!(out, " ({} not found)", names::PAGESTORE);
                    }
                }
            }
        }
    }
    out
}

fn to_json(dir: &Path, images: &[Decoded], chain: &[LayerInfo]) -> String {
    let opts = protobuf_json_mapping::PrintOptions {
        proto_field_name: true,
        always_output_default_values: true,
        ..Default::default()
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "{{\"dir\":{},\"images\":[",
        json_string(&dir.to_string_lossy())
    );
    for (i, img) in images.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let message = match &img.body {
            Body::Message(m) => {
                // Printing a decoded message fails only on non-finite
                // floats, which no cairn image holds; say so rather than
                // produce invalid JSON.
                protobuf_json_mapping::print_to_string_with_options(m.as_ref(), &opts)
                    .unwrap_or_else(|e| format!("{{\"error\":{}}}", json_string(&e.to_string())))
            }
            Body::Pages { bytes, chunks } => {
                let chunks = chunks.map_or_else(|| "null".to_string(), |c| c.to_string());
                format!("{{\"bytes\":{bytes},\"chunks\":{chunks}}}")
            }
        };
        let _ = write!(
            out,
            "{{\"file\":{},\"kind\":{},\"message\":{message}}}",
            json_string(&img.file),
            json_string(img.kind.name()),
        );
    }
    out.push_str("],\"chain\":[");
    for (i, l) in chain.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let inv = &l.inventory;
        let _ = write!(
            out,
            "{{\"dir\":{},\"pre_dump\":{},\"layer_id\":{},\"parent_dir\":{},\"dirty_tracking\":{},\"tracking_armed\":{},\"pages\":{{\"data\":{},\"zero\":{},\"parent\":{}}},\"full_owners\":[{}]}}",
            json_string(&l.dir),
            inv.pre_dump,
            json_string(&inv.layer_id),
            json_string(&inv.parent_dir),
            json_string(&inv.dirty_tracking),
            json_string(&inv.tracking_armed),
            l.pages[0],
            l.pages[1],
            l.pages[2],
            inv.full_owners
                .iter()
                .map(|f| json_string(f))
                .collect::<Vec<_>>()
                .join(",")
        );
    }
    out.push_str("]}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{ImageDir, FORMAT_VERSION};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            use std::sync::atomic::{AtomicU32, Ordering};
            static SEQ: AtomicU32 = AtomicU32::new(0);
            let n = SEQ.fetch_add(1, Ordering::Relaxed);
            let p =
                std::env::temp_dir().join(format!("cairn-show-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn sample_dir(tag: &str) -> TempDir {
        let t = TempDir::new(tag);
        let d = ImageDir::create(&t.0).unwrap();
        let mut inv = proto::Inventory::new();
        inv.format_version = FORMAT_VERSION;
        inv.root_pid = 4242;
        inv.kernel_release = "6.18.0-test".into();
        d.write(ImageType::Inventory, names::INVENTORY, &inv)
            .unwrap();

        let mut ps = proto::Pstree::new();
        let mut e = proto::PstreeEntry::new();
        e.pid = 4242;
        e.threads = vec![4242];
        ps.entries.push(e);
        d.write(ImageType::Pstree, names::PSTREE, &ps).unwrap();

        let mut core = proto::TaskCore::new();
        core.pid = 4242;
        core.comm = "sleeper".into();
        d.write(ImageType::Core, &names::core(4242), &core).unwrap();

        let mut store = proto::PageStore::new();
        store.chunks.push(proto::PageChunk::new());
        store.chunks.push(proto::PageChunk::new());
        d.write(ImageType::PageStore, names::PAGESTORE, &store)
            .unwrap();

        // pages.img: a header with length and crc 0, then opaque frames.
        let hdr = Header {
            kind: ImageType::Pages,
            version: FORMAT_VERSION,
            body_len: 0,
            crc32: 0,
        };
        let mut pages = hdr.encode().to_vec();
        pages.extend_from_slice(&[0xab; 100]);
        std::fs::write(d.file(names::PAGES), pages).unwrap();
        // Not an image: ignored.
        std::fs::write(d.file("notes.txt"), "hello").unwrap();
        t
    }

    #[test]
    fn json_has_every_image_in_order() {
        let t = sample_dir("json");
        let out = render(&t.0, true).unwrap();
        assert!(out.starts_with("{\"dir\":"), "{out}");
        for needle in [
            "\"file\":\"inventory.img\",\"kind\":\"inventory\"",
            "\"root_pid\": 4242",
            "\"kernel_release\": \"6.18.0-test\"",
            "\"kind\":\"pstree\"",
            "\"file\":\"core-4242.img\",\"kind\":\"core\"",
            "\"comm\": \"sleeper\"",
            "\"file\":\"pages.img\",\"kind\":\"pages\",\"message\":{\"bytes\":100,\"chunks\":2}",
        ] {
            assert!(out.contains(needle), "missing {needle} in {out}");
        }
        assert!(!out.contains("notes.txt"));
        let pos = |s: &str| out.find(s).unwrap();
        assert!(pos("inventory.img") < pos("pstree.img"));
        assert!(pos("pstree.img") < pos("core-4242.img"));
        assert!(pos("core-4242.img") < pos("pagestore.img"));
    }

    #[test]
    fn text_has_headings_and_never_page_bytes() {
        let t = sample_dir("text");
        let out = render(&t.0, false).unwrap();
        assert!(out.contains("=== inventory.img (inventory) ==="), "{out}");
        assert!(out.contains("root_pid: 4242"), "{out}");
        assert!(out.contains("page data: 100 bytes in 2 chunks"), "{out}");
        assert!(!out.contains("171"), "page bytes leaked: {out}");
    }

    #[test]
    fn single_file_is_decoded_by_its_magic() {
        let t = sample_dir("single");
        // A core image under a misleading name is still shown as a core.
        std::fs::rename(t.0.join(names::core(4242)), t.0.join("renamed.img")).unwrap();
        let out = render(&t.0.join("renamed.img"), true).unwrap();
        assert!(out.contains("\"kind\":\"core\""), "{out}");
        assert!(out.contains("\"comm\": \"sleeper\""), "{out}");
        assert!(!out.contains("inventory"), "{out}");
    }

    #[test]
    fn bad_images_are_errors() {
        let t = sample_dir("bad");
        let p = t.0.join(names::core(4242));
        let mut b = std::fs::read(&p).unwrap();
        let last = b.len() - 1;
        b[last] ^= 0xff;
        std::fs::write(&p, &b).unwrap();
        let err = render(&t.0, true).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");

        std::fs::write(&p, b"garbage").unwrap();
        assert!(render(&p, false).is_err());
        let empty = TempDir::new("empty");
        std::fs::create_dir_all(&empty.0).unwrap();
        assert!(render(&empty.0, false).is_err());
    }

    #[test]
    fn order_puts_processes_by_pid() {
        let mut v = vec![
            "pages.img",
            "mm-100.img",
            "core-9.img",
            "pagemap-shmem-77.img",
            "pagemap-pid-9.img",
            "pstree.img",
            "inventory.img",
            "files.img",
        ];
        v.sort_by_cached_key(|n| sort_key(n));
        assert_eq!(
            v,
            [
                "inventory.img",
                "pstree.img",
                "core-9.img",
                "pagemap-pid-9.img",
                "mm-100.img",
                "files.img",
                "pagemap-shmem-77.img",
                "pages.img",
            ]
        );
    }
}
