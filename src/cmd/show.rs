//! `cairn show`: decode the images of a checkpoint directory (or one image
//! file) for people or scripts, like CRIU's `crit show` and `crit x`.
//!
//! `cairn show DIR` prints a summary (when, where, what, how big, the
//! processes); `cairn show DIR VIEW` one view of it ([`View`]: `ps`,
//! `fds`, `mems`, `sockets`, `chain`, `stats`); `--full` (or the view
//! `images`) every image, in protobuf's text layout with addresses in
//! hex, flags and signals by name and no default values
//! ([`crate::show::text`]). `cairn show FILE` prints that one image.
//! `--json` prints one JSON object of the schema in docs/SHOW-JSON.md,
//! also when it fails (an `error` member, and the command's exit code).
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
use crate::show::views;
use crate::sys::safefs;

/// The schema name and version of every JSON object `cairn show` prints
/// (docs/SHOW-JSON.md); the version changes only when a member changes
/// meaning or goes away.
pub const SCHEMA: &str = "cairn-show/1";

/// What `cairn show DIR VIEW` prints.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// When, where, what and how big, and the process list (the default).
    Summary,
    /// The processes: pid, parent, group, session, threads, state, command.
    Ps,
    /// The open files of every process, with their flags.
    Fds,
    /// The memory maps of every process: addresses, protections, flags,
    /// pages stored.
    Mems,
    /// The sockets and which pid:fd holds them.
    Sockets,
    /// The layers of an incremental chain, newest first, with their
    /// parents, dates and sizes.
    Chain,
    /// The statistics of the dump and of the last restore.
    Stats,
    /// Every image in full (same as --full).
    Images,
}

impl View {
    fn name(self) -> &'static str {
        match self {
            View::Summary => "summary",
            View::Ps => "ps",
            View::Fds => "fds",
            View::Mems => "mems",
            View::Sockets => "sockets",
            View::Chain => "chain",
            View::Stats => "stats",
            View::Images => "images",
        }
    }
}

/// `cairn show` and `cairn show --verify`: prints the result on stdout;
/// with `--json` a failure is printed as a JSON error object too (and
/// still returned, for the log and the exit code).
pub fn run(a: &super::ShowArgs) -> Result<()> {
    let view = if a.verify {
        "verify"
    } else {
        a.view.map_or("", View::name)
    };
    let result = if a.verify {
        super::verify::run(&a.path, a.json)
    } else {
        render_view(&a.path, a.view, a.full, a.json).and_then(|out| print(&out))
    };
    if let (Err(e), true) = (&result, a.json) {
        let code = e.exit_code(crate::error::Phase::Other);
        let _ = print(&error_json(&a.path, view, &e.to_string(), code));
    }
    result
}

/// The JSON object of a failed `cairn show --json`.
pub fn error_json(path: &Path, view: &str, msg: &str, code: u8) -> String {
    format!(
        "{{\"schema\":\"{SCHEMA}\",\"view\":{},\"path\":{},{}\"error\":{{\"message\":{},\"exit_code\":{code}}}}}\n",
        json_string(if view.is_empty() { "images" } else { view }),
        json_string(&path.to_string_lossy()),
        if view == "verify" { "\"verified\":false," } else { "" },
        json_string(msg),
    )
}

fn print(s: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    std::io::Write::write_all(&mut stdout, s.as_bytes()).at("<stdout>")
}

/// Every image of `path` (a directory or one image file), as text or as
/// JSON: what `cairn show --full` and `cairn show FILE` print.
pub fn render(path: &Path, json: bool) -> Result<String> {
    render_view(path, None, true, json)
}

/// What `cairn show PATH [VIEW] [--full] [--json]` prints (see the module
/// documentation).
///
/// Nothing is followed through a final symbolic link, every file is read
/// through the directory's descriptor and must be a regular file, and a
/// directory or file another user could have written is refused unless
/// `--allow-foreign-images` was given ([`crate::image::check_trust`]).
pub fn render_view(path: &Path, view: Option<View>, full: bool, json: bool) -> Result<String> {
    let is_dir = safefs::is_dir_nofollow(path).at(path)?;
    if !is_dir {
        if let Some(v) = view.filter(|v| *v != View::Images) {
            return Err(Error::Usage(format!(
                "{}: the {} view needs an image directory, not a single image file",
                path.display(),
                v.name()
            )));
        }
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::image(path, "not a file name"))?
            .to_string();
        let dir = ImageDir::view(&dir)?;
        let images = vec![decode_file(&dir, &file)?];
        return Ok(if json {
            images_json(dir.path(), &images, None, &[])
        } else {
            to_text(&images)
        });
    }
    let d = ImageDir::view(path)?;
    d.check_dir_trusted()?;
    let view = view.unwrap_or(if full || json {
        View::Images
    } else {
        View::Summary
    });
    if view == View::Images {
        let files = image_files(&d)?;
        let images = files
            .iter()
            .map(|f| decode_file(&d, f))
            .collect::<Result<Vec<_>>>()?;
        let chain = views::chain_of(&d)?;
        let chained = is_chained(&chain);
        let shown: &[views::Layer] = if chained { &chain } else { &[] };
        return Ok(if json {
            let summary = views::Checkpoint::load(d.clone())
                .map(|c| views::summary_json(&c, &chain))
                .ok();
            images_json(d.path(), &images, summary.as_deref(), shown)
        } else {
            let mut out = String::new();
            if chained {
                out.push_str(&views::chain_text(&chain));
                out.push('\n');
            }
            out.push_str(&to_text(&images));
            out
        });
    }
    if view == View::Chain {
        let chain = views::chain_of(&d)?;
        if chain.is_empty() {
            return Err(Error::image(d.path(), "no inventory.img: not a checkpoint"));
        }
        return Ok(if json {
            envelope(d.path(), view, &views::chain_json(&chain))
        } else {
            views::chain_text(&chain)
        });
    }
    let c = views::Checkpoint::load(d.clone())?;
    if json {
        let body = match view {
            View::Summary => {
                let chain = views::chain_of(&d)?;
                format!(
                    "\"summary\":{},{}",
                    views::summary_json(&c, &chain),
                    views::ps_json(&c)
                )
            }
            View::Ps => views::ps_json(&c),
            View::Fds => views::fds_json(&c),
            View::Mems => views::mems_json(&c),
            View::Sockets => views::sockets_json(&c),
            View::Stats => views::stats_json(&c),
            View::Chain | View::Images => unreachable!("handled above"),
        };
        return Ok(envelope(d.path(), view, &body));
    }
    Ok(match view {
        View::Summary => {
            let chain = views::chain_of(&d)?;
            let mut s = views::summary_text(&c, &chain);
            if is_chained(&chain) {
                s.push('\n');
                s.push_str(&views::chain_text(&chain));
            }
            s
        }
        View::Ps => views::ps_text(&c),
        View::Fds => views::fds_text(&c),
        View::Mems => views::mems_text(&c),
        View::Sockets => views::sockets_text(&c),
        View::Stats => views::stats_text(&c),
        View::Chain | View::Images => unreachable!("handled above"),
    })
}

/// Whether a checkpoint is part of an incremental chain: it has a parent,
/// is a pre-dump, or armed tracking for a next layer.
fn is_chained(chain: &[views::Layer]) -> bool {
    chain.len() > 1
        || chain.first().is_some_and(|l| {
            l.inventory.pre_dump
                || !l.inventory.tracking_armed.is_empty()
                || !l.inventory.parent_dir.is_empty()
        })
}

fn envelope(dir: &Path, view: View, body: &str) -> String {
    format!(
        "{{\"schema\":\"{SCHEMA}\",\"view\":\"{}\",\"dir\":{},{body}}}\n",
        view.name(),
        json_string(&dir.to_string_lossy())
    )
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
        ImageType::Job => msg::<proto::Job>(k, bytes, path),
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
                let text = crate::show::text::message(m.as_ref());
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

/// The `images` view as JSON: every image with its file name, kind and
/// message ([`crate::json::message`]), the summary when the directory is
/// a checkpoint, and the chain.
fn images_json(
    dir: &Path,
    images: &[Decoded],
    summary: Option<&str>,
    chain: &[views::Layer],
) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "{{\"schema\":\"{SCHEMA}\",\"view\":\"images\",\"dir\":{},",
        json_string(&dir.to_string_lossy())
    );
    if let Some(s) = summary {
        let _ = write!(out, "\"summary\":{s},");
    }
    out.push_str("\"images\":[");
    for (i, img) in images.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let message = match &img.body {
            Body::Message(m) => crate::json::message(m.as_ref()),
            Body::Pages { bytes, chunks } => {
                let chunks = chunks.map_or_else(|| "null".to_string(), |c| c.to_string());
                format!(
                    "{{\"bytes\":{},\"chunks\":{chunks}}}",
                    crate::json::u64(*bytes)
                )
            }
        };
        let _ = write!(
            out,
            "{{\"file\":{},\"kind\":{},\"message\":{message}}}",
            json_string(&img.file),
            json_string(img.kind.name()),
        );
    }
    out.push_str("],");
    out.push_str(&views::chain_json(chain));
    out.push_str("}\n");
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
        assert!(
            out.starts_with("{\"schema\":\"cairn-show/1\",\"view\":\"images\",\"dir\":"),
            "{out}"
        );
        assert!(crate::json::parse(&out).is_ok(), "{out}");
        for needle in [
            "\"file\":\"inventory.img\",\"kind\":\"inventory\"",
            "\"root_pid\":4242",
            "\"kernel_release\":\"6.18.0-test\"",
            "\"kind\":\"pstree\"",
            "\"file\":\"core-4242.img\",\"kind\":\"core\"",
            "\"comm\":\"sleeper\"",
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
        assert!(out.contains("\"comm\":\"sleeper\""), "{out}");
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
