//! Contents of open regular files (contents.img) and deleted-but-open
//! ("ghost") files.
//!
//! Dump: the bytes of every regular file the tree has open through an fd
//! (up to a per-file limit, `--file-contents`) are read through
//! `/proc/PID/fd/N` while the tree is frozen and appended to the page store
//! as zstd chunks; contents.img lists, per file, its path, mode, owner,
//! mtime and chunks. Deleted-but-open files are always saved, whatever the
//! limit: nothing else could bring them back.
//!
//! Restore: a saved file that vanished is recreated; one whose contents
//! differ is moved aside to `PATH.cairn-YYYYMMDD-HHMMSS` and the checkpointed
//! contents are put back at `PATH` (a warning names both), so nothing is
//! lost silently. A ghost file is recreated as a new file (at its old path
//! if that is free, else under a temporary name beside it), opened by the
//! restored fds and unlinked once every fd table is in place.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::image::pages::{PageStoreReader, PageStoreWriter, MAX_CHUNK_RAW};
use crate::image::proto::{file_desc, FileContent, FileContents, Files};
use crate::image::{names, ImageDir, ImageType};
use crate::kinds::files::{FileTable, FilesIndex};
use crate::{info, warn};

/// How much of each open regular file a dump keeps (`--file-contents`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentsLimit {
    /// Only deleted-but-open files (which are always kept).
    None,
    /// Every file, whatever its size.
    All,
    /// Files of at most this many bytes.
    Max(u64),
}

/// Most entries of contents.img that may share one chunk list (names of
/// one inode the tree has open, each stored once): restore writes the
/// list once per entry, so this bounds what it writes to 64 times the
/// data the image holds.
pub const MAX_LINKS: usize = 64;

/// The default per-file limit: 64 MiB.
pub const DEFAULT_LIMIT: ContentsLimit = ContentsLimit::Max(64 << 20);

impl Default for ContentsLimit {
    fn default() -> Self {
        DEFAULT_LIMIT
    }
}

impl ContentsLimit {
    /// The value recorded in contents.img: 0 for none, u64::MAX for all.
    pub fn as_u64(self) -> u64 {
        match self {
            ContentsLimit::None => 0,
            ContentsLimit::All => u64::MAX,
            ContentsLimit::Max(n) => n,
        }
    }

    /// Whether a (not deleted) file of `size` bytes is saved.
    pub fn keeps(self, size: u64) -> bool {
        match self {
            ContentsLimit::None => false,
            ContentsLimit::All => true,
            ContentsLimit::Max(n) => size <= n,
        }
    }
}

impl std::str::FromStr for ContentsLimit {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "all" => Ok(ContentsLimit::All),
            "none" => Ok(ContentsLimit::None),
            _ => parse_size(s).map(ContentsLimit::Max),
        }
    }
}

impl std::fmt::Display for ContentsLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ContentsLimit::None => f.write_str("none"),
            ContentsLimit::All => f.write_str("all"),
            ContentsLimit::Max(n) => f.write_str(&format_size(*n)),
        }
    }
}

/// Parses a byte count: digits with an optional binary suffix `k`, `M`,
/// `G` or `T` (either case, optionally followed by `B` or `iB`; all are
/// powers of 1024): `4096`, `512k`, `64M`, `1GiB`.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let bad = || format!("invalid size {s:?} (expected all, none or a number with k, M or G)");
    let t = s.trim();
    let digits = t.bytes().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return Err(bad());
    }
    let n: u64 = t[..digits].parse().map_err(|_| bad())?;
    let shift = match t[digits..].to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1u64 << shift).ok_or_else(bad)
}

/// `n` bytes as the shortest exact form `parse_size` reads back.
pub fn format_size(n: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "k")] {
        if n != 0 && n.is_multiple_of(1u64 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

// ---------------------------------------------------------------- dump

const DELETED: &str = " (deleted)";

/// For an fd link target ending in " (deleted)" whose file is really gone
/// (not a file that is named so), the path the file had.
pub fn ghost_path(target: &str, md: &std::fs::Metadata) -> Option<String> {
    let stripped = target.strip_suffix(DELETED)?;
    let literal =
        std::fs::symlink_metadata(target).is_ok_and(|m| m.dev() == md.dev() && m.ino() == md.ino());
    (!literal).then(|| stripped.to_string())
}

/// The pre-check for an fd whose target ends in " (deleted)": a deleted
/// regular file can be dumped (its contents are kept), anything else not.
pub fn precheck_ghost(pid: i32, fd: i32, target: &str) -> Result<()> {
    let link = format!("/proc/{pid}/fd/{fd}");
    match std::fs::metadata(&link) {
        Ok(md) if md.file_type().is_file() => Ok(()),
        // Closed meanwhile: the frozen pass decides.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Ok(_) => Err(Error::unsupported(
            pid,
            format!("fd {fd} refers to deleted {target}, which is not a regular file"),
        )),
        Err(e) => Err(Error::io(link, e)),
    }
}

/// Pseudo file systems whose "contents" are generated by the kernel:
/// never saved, never written back.
fn is_pseudo_fs(f: &File) -> bool {
    const PSEUDO: &[u64] = &[
        0x9fa0,      // proc
        0x6265_6572, // sysfs
        0x0027_e0eb, // cgroup
        0x6367_7270, // cgroup2
        0x6462_6720, // debugfs
        0x7472_6163, // tracefs
        0x7363_6673, // securityfs
        0xcafe_4a11, // bpf
        0x6165_676c, // pstore
        0x6265_6570, // configfs
        0xde5e_81e4, // efivarfs
        0x1cd1,      // devpts
        0x6573_5543, // fusectl
        0xf97c_ff8c, // selinuxfs
        0x4249_4e4d, // binfmt_misc
        0x9584_58f6, // hugetlbfs
    ];
    match nix::sys::statfs::fstatfs(f) {
        Ok(s) => PSEUDO.contains(&(s.filesystem_type().0 as u64)),
        Err(_) => false,
    }
}

/// How many bytes of a file of `size` bytes with `extents` (flat pairs;
/// empty: all data) are data.
pub fn data_len(size: u64, extents: &[u64]) -> u64 {
    if extents.is_empty() {
        size
    } else {
        extents
            .chunks(2)
            .map(|p| p.get(1).copied().unwrap_or(0))
            .sum()
    }
}

/// The data extents of `f` (`size` bytes), as SEEK_DATA/SEEK_HOLE report
/// them: (offset, length) in order. A file system without them reports
/// the whole file as data, and so does this on any error.
pub fn data_extents(f: &File, size: u64) -> Vec<(u64, u64)> {
    use rustix::fs::{seek, SeekFrom};
    let whole = if size == 0 { vec![] } else { vec![(0, size)] };
    let mut out = Vec::new();
    let mut off = 0u64;
    while off < size {
        let data = match seek(f, SeekFrom::Data(off as i64)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(_) => return whole,
        };
        if data >= size {
            break;
        }
        let hole = match seek(f, SeekFrom::Hole(data as i64)) {
            Ok(h) => h.min(size),
            Err(_) => return whole,
        };
        if hole <= data {
            return whole;
        }
        out.push((data, hole - data));
        off = hole;
    }
    out
}

/// Cairn's copy (pidfd_getfd) of fd `fd` of `pid`, if its description is
/// open for reading (not write-only, not O_PATH).
fn tree_description(pid: i32, fd: i32) -> std::io::Result<File> {
    let f = File::from(crate::sys::sock::pidfd_getfd(pid, fd)?);
    let fl = rustix::fs::fcntl_getfl(&f)?;
    let mode = fl & rustix::fs::OFlags::RWMODE;
    if fl.contains(rustix::fs::OFlags::PATH) || mode == rustix::fs::OFlags::WRONLY {
        return Err(std::io::Error::other("not open for reading"));
    }
    Ok(f)
}

/// fd `fd` of `pid` (file `path`, `id`: its device and inode) opened
/// anew for reading through /proc, for a write-only description no other
/// readable one of the tree stands for. The open raises
/// IN_OPEN/IN_ACCESS/IN_CLOSE_NOWRITE (FAN_*) for every watcher of the
/// file: after a `--leave-running` dump (`leave_running`) the tree, or a
/// process outside it, would see events it did not cause, so that is
/// refused (Err) when a mark covers the file (`kinds::watched`; a mark
/// added while the dump reads is not seen). Ok(Err): the open failed.
fn open_anew(
    pid: i32,
    fd: i32,
    path: &str,
    id: (u64, u64),
    leave_running: bool,
) -> Result<std::io::Result<File>> {
    if leave_running {
        let t = crate::kinds::watched::Target::of(pid, fd, path, id.0, id.1);
        if let Some(w) = crate::kinds::watched::watcher(&t) {
            return Err(Error::unsupported(
                pid,
                format!(
                    "fd {fd} ({path}) is open write-only, and its contents can only be read by opening it again, which {w} would see (IN_OPEN/FAN_OPEN) after this --leave-running dump; give the tree a readable descriptor of it, or dump without --leave-running"
                ),
            ));
        }
    }
    let link = format!("/proc/{pid}/fd/{fd}");
    Ok(OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(&link)
        .or_else(|_| File::open(&link)))
}

/// O_NOATIME on a description while the dump reads it, then its flags as
/// they were: the tree's own description (read through cairn's copy) is
/// then read without touching the file's access time, as a new one opened
/// O_NOATIME would be. Without the right to set it (not the owner, no
/// CAP_FOWNER) nothing changes.
struct NoAtime<'f> {
    f: &'f File,
    was: Option<rustix::fs::OFlags>,
}

impl<'f> NoAtime<'f> {
    fn set(f: &'f File) -> Self {
        use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
        let was = fcntl_getfl(f)
            .ok()
            .filter(|fl| !fl.contains(OFlags::NOATIME))
            .filter(|fl| fcntl_setfl(f, *fl | OFlags::NOATIME).is_ok());
        NoAtime { f, was }
    }
}

impl Drop for NoAtime<'_> {
    fn drop(&mut self) {
        if let Some(fl) = self.was {
            if let Err(e) = rustix::fs::fcntl_setfl(self.f, fl) {
                warn!("could not put the file status flags {fl:?} back after reading: {e}");
            }
        }
    }
}

/// [`data_extents`] of `f`, which may be a description the tree shares
/// (SEEK_DATA/SEEK_HOLE move its position): the position is put back.
fn extents_keeping_position(f: &File, size: u64) -> Vec<(u64, u64)> {
    use rustix::fs::{seek, SeekFrom};
    let Ok(pos) = seek(f, SeekFrom::Current(0)) else {
        // No position (cannot seek): nothing to keep, no extents either.
        return data_extents(f, size);
    };
    let out = data_extents(f, size);
    if let Err(e) = seek(f, SeekFrom::Start(pos)) {
        warn!("could not put a file position back to {pos} after reading its extents: {e}");
    }
    out
}

/// Reads file contents at `off` without read(2) when it can
/// (`sys::mapread`: a mapping raises no IN_ACCESS/FAN_ACCESS for the tree's
/// watchers and uses no file position), else with pread(2).
fn quiet_read_at(f: &File, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileExt;
    match crate::sys::mapread::read_at(f.as_fd(), off, buf) {
        Ok(n) => Ok(n),
        Err(_) => f.read_at(buf, off),
    }
}

/// A stored file: its size, data extents (flat pairs; empty: all data)
/// and chunk indices.
type Stored = (u64, Vec<u64>, Vec<u32>);

/// Reads the data extents of `f` (its whole contents if it has no
/// holes) in chunks of at most `MAX_CHUNK_RAW` bytes, the extents' bytes
/// back to back, and appends each chunk, compressed, to the page store.
/// Holes are neither read nor stored. Stops with `None` once more than
/// `max` bytes were read. Returns (size, extents (empty: all data),
/// chunk indices).
fn store_file(
    f: &File,
    path: &Path,
    max: u64,
    writer: &mut PageStoreWriter,
    cctx: &mut zstd::bulk::Compressor,
) -> Result<Option<Stored>> {
    let size = f.metadata().at(path)?.len();
    let mut extents = extents_keeping_position(f, size);
    let dense = extents.len() == 1 && extents[0] == (0, size);
    if size == 0 {
        extents.clear();
    }
    let mut buf = vec![0u8; MAX_CHUNK_RAW as usize];
    let mut n = 0usize;
    let mut total = 0u64;
    let mut chunks = Vec::new();
    let mut flush = |buf: &[u8], chunks: &mut Vec<u32>| -> Result<()> {
        let c = cctx
            .compress(buf)
            .map_err(|e| Error::io(path, std::io::Error::other(format!("compress: {e}"))))?;
        chunks.push(writer.append(&c, buf.len() as u64)?);
        Ok(())
    };
    let mut kept: Vec<(u64, u64)> = Vec::new();
    let mut end = size;
    'extents: for &(start, len) in &extents {
        let mut done = 0u64;
        while done < len {
            let want = ((len - done) as usize).min(buf.len() - n);
            let k = match quiet_read_at(f, &mut buf[n..n + want], start + done) {
                Ok(k) => k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(path, e)),
            };
            if k == 0 {
                // Shorter than it was: keep what was read.
                end = start + done;
                if done > 0 {
                    kept.push((start, done));
                }
                break 'extents;
            }
            n += k;
            done += k as u64;
            total += k as u64;
            if total > max {
                return Ok(None);
            }
            if n == buf.len() {
                flush(&buf[..n], &mut chunks)?;
                n = 0;
            }
        }
        kept.push((start, len));
    }
    if n > 0 {
        flush(&buf[..n], &mut chunks)?;
    }
    if dense || end == 0 {
        return Ok(Some((total, Vec::new(), chunks)));
    }
    if kept.is_empty() {
        // All hole: one empty extent says it is sparse.
        kept.push((0, 0));
    }
    let flat = kept.iter().flat_map(|&(o, l)| [o, l]).collect();
    Ok(Some((end, flat, chunks)))
}

/// Saves the contents of the regular files of every fd table in `files`
/// (the tree is frozen) into the page store; returns the contents image
/// and the paths of its files on volatile file systems (tmpfs, ramfs:
/// `kinds::volatile`), which are saved whatever the limit, mapped-only
/// ones too. `leave_running`: the tree goes on after the dump, and a
/// file that can only be read through a new open (no description of the
/// tree is readable) is refused when a watcher would see that open
/// (`open_anew`).
pub fn dump(
    files: &FileTable,
    writer: &mut PageStoreWriter,
    limit: ContentsLimit,
    level: i32,
    leave_running: bool,
) -> Result<(FileContents, Vec<String>)> {
    let mut volatile = Vec::new();
    let mut out = FileContents::new();
    out.limit = limit.as_u64();
    let descs: HashMap<u32, &crate::image::proto::RegFile> = files
        .files
        .descs
        .iter()
        .filter_map(|d| match &d.kind {
            Some(file_desc::Kind::Reg(r)) => Some((d.id, r)),
            _ => None,
        })
        .collect();
    let mut cctx =
        zstd::bulk::Compressor::new(level).map_err(|e| Error::sys(0, "zstd compressor", e))?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    if workers > 1 {
        let _ = cctx.set_parameter(zstd::zstd_safe::CParameter::NbWorkers(workers as u32));
    }
    // (path, dev, ino, deleted) -> index in out.files
    let mut entries: HashMap<(String, u64, u64, bool), usize> = HashMap::new();
    // (dev, ino) -> (size, extents, chunks): hard links are stored once.
    let mut stored: HashMap<(u64, u64), Stored> = HashMap::new();
    let mut skipped: HashSet<String> = HashSet::new();
    let leased = crate::kinds::locks::leased(&files.files);
    let mut bytes = 0u64;
    for (pid, fd, id) in files.fd_of_descs() {
        let Some(r) = descs.get(&id) else { continue };
        let Some(st) = r.stat.as_ref() else { continue };
        if st.mode & libc::S_IFMT != libc::S_IFREG {
            continue;
        }
        let key = (r.path.clone(), st.dev, st.ino, r.deleted);
        if let Some(&i) = entries.get(&key) {
            out.files[i].desc_ids.push(id);
            continue;
        }
        let link = format!("/proc/{pid}/fd/{fd}");
        let vol = !r.deleted && crate::kinds::volatile::on_volatile_fs(&link);
        if !r.deleted && !vol && !limit.keeps(st.size) {
            if limit != ContentsLimit::None && skipped.insert(r.path.clone()) {
                info!(
                    "{}: {} bytes, more than --file-contents={limit}: contents not saved",
                    r.path, st.size
                );
            }
            continue;
        }
        // Opening a file the tree holds a lease on would break the lease:
        // it is read through the leased description (kinds::locks::leased).
        // Any other is read through the tree's own description when it is
        // open for reading (cairn's pidfd_getfd copy): no open, so no
        // IN_OPEN/IN_CLOSE_NOWRITE for an inotify watcher (see Reader).
        // A write-only description: another of the tree's descriptions
        // of the file, if one is readable, else a new open (see open_anew).
        let opened = match leased.get(&(st.dev, st.ino)) {
            Some(&(lp, lfd)) => crate::kinds::locks::readable(lp, lfd),
            None => match tree_description(pid, fd).or_else(|e| {
                (files.fd_of_descs().into_iter())
                    .filter(|&(_, _, d)| {
                        let r = descs.get(&d).and_then(|r| r.stat.as_ref());
                        r.is_some_and(|s2| (s2.dev, s2.ino) == (st.dev, st.ino))
                    })
                    .find_map(|(p2, fd2, _)| tree_description(p2, fd2).ok())
                    .ok_or(e)
            }) {
                Ok(f) => Ok(f),
                Err(_) => open_anew(pid, fd, &r.path, (st.dev, st.ino), leave_running)?,
            },
        };
        let f = match opened {
            Ok(f) => f,
            Err(e) if !r.deleted && !vol => {
                warn!("{}: cannot read it ({e}); contents not saved", r.path);
                skipped.insert(r.path.clone());
                continue;
            }
            Err(e) => return Err(Error::sys(pid, format!("fd {fd}: open {link}"), e)),
        };
        if !r.deleted && is_pseudo_fs(&f) {
            continue;
        }
        let md = f.metadata().at(&link)?;
        let (size, extents, chunks) = match stored.get(&(md.dev(), md.ino())) {
            Some(s) => s.clone(),
            None => {
                let max = if r.deleted || vol {
                    u64::MAX
                } else {
                    limit.as_u64()
                };
                let _quiet = NoAtime::set(&f);
                match store_file(&f, Path::new(&r.path), max, writer, &mut cctx)? {
                    Some(s) => {
                        bytes += data_len(s.0, &s.1);
                        stored.insert((md.dev(), md.ino()), s.clone());
                        s
                    }
                    None => {
                        info!(
                            "{}: grew past the limit while read: contents not saved",
                            r.path
                        );
                        skipped.insert(r.path.clone());
                        continue;
                    }
                }
            }
        };
        let mut c = FileContent::new();
        c.path = r.path.clone();
        c.deleted = r.deleted;
        c.desc_ids.push(id);
        c.size = size;
        c.mode = md.mode();
        c.uid = md.uid();
        c.gid = md.gid();
        c.mtime_ns = md.mtime() * 1_000_000_000 + md.mtime_nsec();
        c.chunks = chunks;
        c.extents = extents;
        c.dev = md.dev();
        c.ino = md.ino();
        if vol {
            volatile.push(c.path.clone());
        }
        entries.insert(key, out.files.len());
        out.files.push(c);
    }
    // Deleted files the tree maps (memory::mapfiles), and files on
    // volatile file systems it maps (kinds::volatile), through no fd or
    // through one already saved above: the same entry for the same inode.
    let fd_ids: HashSet<u32> = files.fd_of_descs().iter().map(|x| x.2).collect();
    for d in &files.files.descs {
        let Some(file_desc::Kind::Reg(r)) = &d.kind else {
            continue;
        };
        let Some(st) = r.stat.as_ref() else { continue };
        if fd_ids.contains(&d.id) {
            continue;
        }
        // Not deleted: kept by memory::vma::describe only on tmpfs/ramfs.
        let vol = !r.deleted && files.kinds.mapfiles.mapped(st.dev, st.ino).is_some();
        if !r.deleted && !vol {
            continue;
        }
        let key = (r.path.clone(), st.dev, st.ino, r.deleted);
        if let Some(&i) = entries.get(&key) {
            out.files[i].desc_ids.push(d.id);
            continue;
        }
        let f = files.kinds.mapfiles.mapped(st.dev, st.ino).ok_or_else(|| {
            Error::Restore(format!(
                "the deleted mapped file {} (inode {}) was not opened for its contents",
                r.path, st.ino
            ))
        })?;
        let md = f.metadata().at(&r.path)?;
        let (size, extents, chunks) = match stored.get(&(md.dev(), md.ino())) {
            Some(s) => s.clone(),
            None => {
                let s = store_file(f, Path::new(&r.path), u64::MAX, writer, &mut cctx)?
                    .ok_or_else(|| Error::io(&r.path, std::io::Error::other("too large")))?;
                bytes += data_len(s.0, &s.1);
                stored.insert((md.dev(), md.ino()), s.clone());
                s
            }
        };
        let mut c = FileContent::new();
        c.path = r.path.clone();
        c.deleted = r.deleted;
        c.desc_ids.push(d.id);
        c.size = size;
        c.mode = md.mode();
        c.uid = md.uid();
        c.gid = md.gid();
        c.mtime_ns = md.mtime() * 1_000_000_000 + md.mtime_nsec();
        c.chunks = chunks;
        c.extents = extents;
        c.dev = md.dev();
        c.ino = md.ino();
        if vol {
            volatile.push(c.path.clone());
        }
        entries.insert(key, out.files.len());
        out.files.push(c);
    }
    // A path whose contents are saved for one description is not
    // "skipped" because of another.
    let saved: HashSet<&str> = out.files.iter().map(|f| f.path.as_str()).collect();
    let mut skipped: Vec<String> = skipped
        .into_iter()
        .filter(|p| !saved.contains(p.as_str()))
        .collect();
    skipped.sort();
    out.skipped = skipped;
    info!(
        "contents of {} open files saved ({bytes} bytes before compression)",
        out.files.len()
    );
    Ok((out, volatile))
}

// ---------------------------------------------------------------- restore

/// Reads and checks contents.img; `None` for images without one.
pub fn load(
    dir: &ImageDir,
    store: &PageStoreReader,
    files: &Files,
) -> Result<Option<FileContents>> {
    if !dir.exists(names::CONTENTS) {
        // Older images: a deleted file cannot be restored without it.
        if let Some(r) = deleted_regs(files).next() {
            return Err(Error::image(
                dir.file(names::CONTENTS),
                format!("missing, but {} was a deleted open file", r.1),
            ));
        }
        return Ok(None);
    }
    let path = dir.file(names::CONTENTS);
    let c: FileContents = dir.read(ImageType::Contents, names::CONTENTS)?;
    crate::image::validate::contents(&c, &path)?;
    let regs: HashMap<u32, (&str, bool)> = files
        .descs
        .iter()
        .filter_map(|d| match &d.kind {
            Some(file_desc::Kind::Reg(r)) => Some((d.id, (r.path.as_str(), r.deleted))),
            _ => None,
        })
        .collect();
    // The chunk list of each file, by its first chunk: files that share
    // chunks are names of one inode, stored once (hard links).
    let mut lists: HashMap<u32, (&[u32], usize, usize)> = HashMap::new();
    let mut owner_of: HashMap<u32, usize> = HashMap::new();
    let mut names: HashSet<(&str, bool, (u64, u64))> = HashSet::new();
    for (i, f) in c.files.iter().enumerate() {
        let entry = |field: &str, why: String| {
            Error::image(&path, format!("file {i} ({}): {field}: {why}", f.path))
        };
        if !f.path.starts_with('/') {
            return Err(Error::image(
                &path,
                format!("path {:?} is not absolute", f.path),
            ));
        }
        // Deleted files: one name may have been several files, each
        // created and unlinked by another process (Open MPI's
        // /dev/shm/open_mpi.0000 per process); one entry per inode.
        let ino = if f.deleted { (f.dev, f.ino) } else { (0, 0) };
        if !names.insert((f.path.as_str(), f.deleted, ino)) {
            return Err(entry("path", "listed twice".into()));
        }
        let mut sum = 0u64;
        let n = f.chunks.len();
        for (k, &ch) in f.chunks.iter().enumerate() {
            let raw = store
                .store
                .chunks
                .get(ch as usize)
                .map(|c| c.raw_len)
                .ok_or_else(|| Error::image(&path, format!("{}: no chunk {ch}", f.path)))?;
            // A dump reads a file in order into chunks of MAX_CHUNK_RAW
            // bytes, the last one shorter or full: a chunk named twice, out
            // of order or short in the middle is no file's contents.
            if k > 0 && ch <= f.chunks[k - 1] {
                return Err(entry(
                    "chunks",
                    format!(
                        "chunk {ch} after chunk {} (each chunk once, in file order)",
                        f.chunks[k - 1]
                    ),
                ));
            }
            if k + 1 < n && raw != MAX_CHUNK_RAW {
                return Err(entry(
                    "chunks",
                    format!("chunk {ch} holds {raw} bytes in the middle of the file, not {MAX_CHUNK_RAW}"),
                ));
            }
            sum = sum.saturating_add(raw);
        }
        check_extents(f).map_err(|why| entry("extents", why))?;
        let data = data_len(f.size, &f.extents);
        if sum != data {
            return Err(Error::image(
                &path,
                format!(
                    "{}: chunks hold {sum} bytes, the file's data is {data} (size {})",
                    f.path, f.size
                ),
            ));
        }
        if let Some(&first) = f.chunks.first() {
            match lists.get_mut(&first) {
                Some((l, users, _)) if *l == f.chunks.as_slice() => {
                    *users += 1;
                    if *users > MAX_LINKS {
                        return Err(entry(
                            "chunks",
                            format!(
                                "the contents of more than {MAX_LINKS} files (names of one \
                                 file are stored once, but not this often)"
                            ),
                        ));
                    }
                }
                Some((_, _, j)) => {
                    let j = *j;
                    return Err(entry(
                        "chunks",
                        format!(
                            "chunk {first} also holds part of file {j} ({}) with other chunks",
                            c.files[j].path
                        ),
                    ));
                }
                None => {
                    for &ch in &f.chunks {
                        if let Some(&j) = owner_of.get(&ch) {
                            return Err(entry(
                                "chunks",
                                format!(
                                    "chunk {ch} also holds part of file {j} ({})",
                                    c.files[j].path
                                ),
                            ));
                        }
                        owner_of.insert(ch, i);
                    }
                    lists.insert(first, (f.chunks.as_slice(), 1, i));
                }
            }
        }
        for id in &f.desc_ids {
            if regs.get(id) != Some(&(f.path.as_str(), f.deleted)) {
                return Err(Error::image(
                    &path,
                    format!("{}: description {id} is not this file", f.path),
                ));
            }
        }
    }
    let covered: HashSet<u32> = c
        .files
        .iter()
        .filter(|f| f.deleted)
        .flat_map(|f| f.desc_ids.iter().copied())
        .collect();
    if let Some((_, p)) = deleted_regs(files).find(|(id, _)| !covered.contains(id)) {
        return Err(Error::image(
            &path,
            format!("no contents for the deleted open file {p}"),
        ));
    }
    Ok(Some(c))
}

/// The extents of `f` are pairs, in order, not overlapping, within its
/// size.
fn check_extents(f: &FileContent) -> std::result::Result<(), String> {
    if !f.extents.len().is_multiple_of(2) {
        return Err(format!("{} numbers, not pairs", f.extents.len()));
    }
    let mut end = 0u64;
    for p in f.extents.chunks(2) {
        let (off, len) = (p[0], p[1]);
        let e = off
            .checked_add(len)
            .filter(|&e| e <= f.size)
            .ok_or_else(|| format!("[{off}, +{len}) is beyond the size {}", f.size))?;
        if off < end {
            return Err(format!(
                "[{off}, +{len}) overlaps or precedes the one before"
            ));
        }
        end = e;
    }
    Ok(())
}

fn deleted_regs(files: &Files) -> impl Iterator<Item = (u32, &str)> {
    files.descs.iter().filter_map(|d| match &d.kind {
        Some(file_desc::Kind::Reg(r)) if r.deleted => Some((d.id, r.path.as_str())),
        _ => None,
    })
}

/// Leaves the files whose contents are saved out of the identity check
/// (`FilesIndex::check_unchanged`): `put_back` deals with them. For a file
/// that still exists this covers every description of that path, mapped
/// ones too.
pub fn mark_checked(c: &FileContents, idx: &mut FilesIndex) {
    let paths: HashSet<&str> = c
        .files
        .iter()
        .filter(|f| !f.deleted)
        .map(|f| f.path.as_str())
        .collect();
    let mut ids: Vec<u32> = c
        .files
        .iter()
        .filter(|f| f.deleted)
        .flat_map(|f| f.desc_ids.iter().copied())
        .collect();
    for d in &idx.files.descs {
        if let Some(file_desc::Kind::Reg(r)) = &d.kind {
            if !r.deleted && paths.contains(r.path.as_str()) {
                ids.push(d.id);
            }
        }
    }
    idx.checked_elsewhere.extend(ids);
}

/// Deleted files recreated for the restore. Each is unlinked by
/// [`Ghosts::unlink_all`] once the restored fds hold it, or on drop (a
/// failed restore), but only while its name still refers to the file
/// cairn made.
#[derive(Debug, Default)]
pub struct Ghosts {
    /// Description id -> the path to open it from.
    pub redirect: HashMap<u32, String>,
    made: Vec<(PathBuf, u64, u64)>,
    /// Ghost files made under a hidden name (another file had the same
    /// name: Open MPI's /dev/shm/open_mpi.0000 of each process): the name
    /// they are renamed to right before their unlink, so the fds name
    /// them as before.
    renamed: HashMap<PathBuf, PathBuf>,
    /// Removed directories made again (fds3): path, device, inode.
    dirs: Vec<(PathBuf, u64, u64)>,
}

impl Ghosts {
    /// Takes `path` (device `dev`, inode `ino`), made by cairn, as the
    /// file descriptions `ids` are opened from; unlinked with the others.
    pub fn adopt(&mut self, ids: Vec<u32>, path: PathBuf, dev: u64, ino: u64) {
        let s = path.to_string_lossy().into_owned();
        for id in ids {
            self.redirect.insert(id, s.clone());
        }
        self.made.push((path, dev, ino));
    }

    /// Recreates the deleted node `path` (a FIFO or a device, `what` in
    /// messages) for description `id`: made with `mknodat` under its old
    /// name, or a hidden one beside it if that is taken, in a directory
    /// reached without following links; checked to be the node just made
    /// (type, `rdev`), given `mode` through an O_PATH descriptor (never
    /// through a link put in its place, and without opening a FIFO, which
    /// could block), and adopted. Returns where it is.
    pub fn make_node(
        &mut self,
        id: u32,
        path: &str,
        what: &str,
        ty: rustix::fs::FileType,
        rdev: u64,
        mode: u32,
    ) -> Result<PathBuf> {
        use rustix::fs::Mode;
        use std::os::fd::AsRawFd;
        let full = Path::new(path);
        let (Some(parent), Some(name)) = (full.parent(), full.file_name()) else {
            return Err(Error::Restore(format!("{path}: no file name")));
        };
        let dir = crate::sys::safefs::open_dir_no_links(parent).map_err(|e| {
            Error::Restore(format!(
                "cannot recreate the deleted {what} {path}: its directory: {e}"
            ))
        })?;
        let hidden = format!(
            ".{}.cairn-ghost-{}-{id}",
            name.to_string_lossy(),
            std::process::id()
        );
        let mut chosen = None;
        for n in [name.to_os_string(), hidden.into()] {
            match rustix::fs::mknodat(&dir, &n, ty, Mode::from_raw_mode(0o600), rdev) {
                Ok(()) => {
                    chosen = Some(n);
                    break;
                }
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => return Err(Error::io(parent.join(&n), e.into())),
            }
        }
        let n = chosen.ok_or_else(|| {
            Error::Restore(format!("{path}: no free name to recreate the {what}"))
        })?;
        let p = parent.join(&n);
        let fd = crate::sys::safefs::openat_nofollow(&dir, &n, rustix::fs::OFlags::PATH, 0)
            .map_err(|e| Error::io(&p, e))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| Error::io(&p, e.into()))?;
        if crate::sys::safefs::file_type(&st) != ty || (rdev != 0 && st.st_rdev != rdev) {
            return Err(Error::Restore(format!(
                "{}: not the {what} just made",
                p.display()
            )));
        }
        // mknodat's mode is narrowed by the umask.
        rustix::fs::chmod(
            format!("/proc/self/fd/{}", fd.as_raw_fd()),
            Mode::from_raw_mode(mode),
        )
        .map_err(|e| Error::io(&p, e.into()))?;
        info!(
            "deleted {what} {path} recreated as {} until the fds are open",
            p.display()
        );
        self.adopt(vec![id], p.clone(), st.st_dev, st.st_ino);
        Ok(p)
    }

    /// Makes the removed directory `path` again (a cwd: fds3) at its
    /// path, in its parent reached without following links, never over
    /// an existing name, with `mode` and owner `uid`:`gid`; removed by
    /// [`Ghosts::remove_dirs`] once the processes are in it. Making the
    /// same path twice is done once.
    pub fn make_dir(&mut self, path: &str, mode: u32, uid: u32, gid: u32) -> Result<()> {
        use rustix::fs::{Mode, OFlags};
        use std::os::fd::AsRawFd;
        let full = Path::new(path);
        if self.dirs.iter().any(|d| d.0 == full) {
            return Ok(());
        }
        let (Some(parent), Some(name)) = (full.parent(), full.file_name()) else {
            return Err(Error::Restore(format!("{path}: no directory name")));
        };
        let fail = |e: String| {
            Error::Restore(format!(
                "cannot recreate the removed directory {path} (a cwd): {e}"
            ))
        };
        let dir = crate::sys::safefs::open_dir_no_links(parent)
            .map_err(|e| fail(format!("its parent: {e}")))?;
        match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => {
                return Err(fail(
                    "the name is taken now (getcwd() would read another path)".into(),
                ))
            }
            Err(e) => return Err(fail(e.to_string())),
        }
        let fd =
            crate::sys::safefs::openat_nofollow(&dir, name, OFlags::PATH | OFlags::DIRECTORY, 0)
                .map_err(|e| fail(e.to_string()))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| fail(e.to_string()))?;
        self.dirs.push((full.to_path_buf(), st.st_dev, st.st_ino));
        // Through the O_PATH descriptor: never a link put in its place.
        std::os::unix::fs::chown(
            format!("/proc/self/fd/{}", fd.as_raw_fd()),
            Some(uid),
            Some(gid),
        )
        .map_err(|e| fail(format!("chown: {e}")))?;
        rustix::fs::chmod(
            format!("/proc/self/fd/{}", fd.as_raw_fd()),
            Mode::from_raw_mode(mode),
        )
        .map_err(|e| fail(format!("chmod: {e}")))?;
        info!("removed directory {path} recreated until the processes are in it");
        Ok(())
    }

    /// Removes the directories [`Ghosts::make_dir`] made, while their
    /// names still refer to them.
    pub fn remove_dirs(&mut self) {
        for (p, dev, ino) in self.dirs.drain(..) {
            let ours =
                std::fs::symlink_metadata(&p).is_ok_and(|m| m.dev() == dev && m.ino() == ino);
            if ours {
                if let Err(e) = std::fs::remove_dir(&p) {
                    warn!(
                        "{}: cannot remove the recreated directory: {e}",
                        p.display()
                    );
                }
            }
        }
    }

    /// Gives the node `p` that [`Ghosts::make_node`] made its owner, then
    /// `mode` again (chown clears set-id bits), through an O_PATH
    /// descriptor opened without following links and checked to be it.
    pub fn set_owner(&self, p: &Path, uid: u32, gid: u32, mode: u32) -> Result<()> {
        use std::os::fd::AsRawFd;
        let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
            return Err(Error::Restore(format!("{}: no file name", p.display())));
        };
        let dir = crate::sys::safefs::open_dir_no_links(parent).map_err(|e| Error::io(p, e))?;
        let fd = crate::sys::safefs::openat_nofollow(&dir, name, rustix::fs::OFlags::PATH, 0)
            .map_err(|e| Error::io(p, e))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| Error::io(p, e.into()))?;
        if !self
            .made
            .iter()
            .any(|m| m.0 == p && m.1 == st.st_dev && m.2 == st.st_ino)
        {
            return Err(Error::Restore(format!(
                "{}: not the node cairn made",
                p.display()
            )));
        }
        let via = format!("/proc/self/fd/{}", fd.as_raw_fd());
        std::os::unix::fs::chown(&via, Some(uid), Some(gid)).map_err(|e| Error::io(p, e))?;
        rustix::fs::chmod(&via, rustix::fs::Mode::from_raw_mode(mode))
            .map_err(|e| Error::io(p, e.into()))?;
        Ok(())
    }

    pub fn unlink_all(&mut self) {
        // Those at their own name first: the others take it after them.
        let mut made: Vec<_> = self.made.drain(..).collect();
        made.sort_by_key(|m| self.renamed.contains_key(&m.0));
        for (mut p, dev, ino) in made {
            if let Some(to) = self.renamed.get(&p) {
                let free = std::fs::symlink_metadata(to).is_err();
                let ours =
                    std::fs::symlink_metadata(&p).is_ok_and(|m| m.dev() == dev && m.ino() == ino);
                if free
                    && ours
                    && rustix::fs::renameat_with(
                        rustix::fs::CWD,
                        &p,
                        rustix::fs::CWD,
                        to,
                        rustix::fs::RenameFlags::NOREPLACE,
                    )
                    .is_ok()
                {
                    p = to.clone();
                }
            }
            let ours =
                std::fs::symlink_metadata(&p).is_ok_and(|m| m.dev() == dev && m.ino() == ino);
            if ours {
                if let Err(e) = std::fs::remove_file(&p) {
                    warn!(
                        "{}: cannot remove the recreated deleted file: {e}",
                        p.display()
                    );
                }
            }
        }
    }
}

impl Drop for Ghosts {
    fn drop(&mut self) {
        self.unlink_all();
        self.remove_dirs();
    }
}

/// Puts saved files back before the tree is created: recreates what
/// vanished, moves changed files aside and writes the checkpointed
/// contents, and recreates deleted files. Returns the recreated deleted
/// files, whose paths the restore must open instead of the saved ones.
/// The files of `skip` (on volatile file systems) are
/// `kinds::volatile`'s.
pub fn put_back(
    c: &FileContents,
    store: &PageStoreReader,
    skip: &HashSet<String>,
) -> Result<Ghosts> {
    let mut ghosts = Ghosts::default();
    for f in c
        .files
        .iter()
        .filter(|f| !f.deleted && !skip.contains(&f.path))
    {
        put_back_one(f, store)?;
    }
    for (n, f) in c.files.iter().filter(|f| f.deleted).enumerate() {
        let p = make_ghost(f, store, n)?;
        let md = std::fs::symlink_metadata(&p).at(&p)?;
        info!(
            "deleted file {} recreated as {} until the fds are open",
            f.path,
            p.display()
        );
        let s = p.to_string_lossy().into_owned();
        for &id in &f.desc_ids {
            ghosts.redirect.insert(id, s.clone());
        }
        if p != Path::new(&f.path) {
            ghosts.renamed.insert(p.clone(), PathBuf::from(&f.path));
        }
        ghosts.made.push((p, md.dev(), md.ino()));
    }
    Ok(ghosts)
}

/// What is at the path of a saved file now.
enum Found {
    /// The very file the dump read (same device and inode, a regular
    /// file with the same owner, no symbolic link on the path), opened
    /// read-write through its directory, with that directory.
    Same(File, std::os::fd::OwnedFd),
    /// Nothing, or something else: the checkpointed contents go to a new
    /// file (the reason, for the log).
    Other(String),
}

/// Looks for the file the dump read at its path, safely (see [`Found`]).
fn find_same(f: &FileContent, path: &Path) -> Result<Found> {
    use crate::sys::safefs;
    use rustix::fs::OFlags;
    if f.ino == 0 {
        return Ok(Found::Other(
            "an older image without the file's inode".into(),
        ));
    }
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(Found::Other("no file name".into()));
    };
    let dir = match safefs::open_dir_no_links(parent) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Found::Other("its directory is gone".into()))
        }
        Err(e) => return Ok(Found::Other(format!("{}: {e}", parent.display()))),
    };
    let st = match safefs::lstatat(&dir, name) {
        Ok(st) => st,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Found::Other("gone".into()))
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    let same = |st: &rustix::fs::Stat| -> Option<String> {
        if safefs::file_type(st) != rustix::fs::FileType::RegularFile {
            return Some(format!(
                "now a {}",
                safefs::type_name(safefs::file_type(st))
            ));
        }
        if st.st_dev != f.dev || st.st_ino != f.ino {
            return Some("another file now (not the inode the dump read)".into());
        }
        if st.st_uid != f.uid || st.st_gid != f.gid {
            return Some(format!(
                "owned by {}:{} now, not {}:{}",
                st.st_uid, st.st_gid, f.uid, f.gid
            ));
        }
        None
    };
    if let Some(why) = same(&st) {
        return Ok(Found::Other(why));
    }
    let fd = safefs::openat_nofollow(
        &dir,
        name,
        OFlags::RDWR | OFlags::NONBLOCK | OFlags::NOCTTY,
        0,
    )
    .at(path)?;
    // Checked again on the descriptor: the name may have changed hands.
    let st = rustix::fs::fstat(&fd).map_err(|e| Error::io(path, e.into()))?;
    if let Some(why) = same(&st) {
        return Ok(Found::Other(why));
    }
    let _ = rustix::fs::fcntl_setfl(&fd, OFlags::empty());
    Ok(Found::Same(File::from(fd), dir))
}

/// Whether `file` holds exactly the saved bytes (and, for a sparse file,
/// the same holes).
pub(crate) fn same_contents_fd(
    file: &File,
    f: &FileContent,
    store: &PageStoreReader,
) -> Result<bool> {
    use std::os::unix::fs::FileExt;
    let p = Path::new(&f.path);
    if file.metadata().at(p)?.len() != f.size {
        return Ok(false);
    }
    let ext = extent_list(f);
    if !f.extents.is_empty() {
        let now: Vec<(u64, u64)> = data_extents(file, f.size);
        let want: Vec<(u64, u64)> = ext.iter().copied().filter(|e| e.1 > 0).collect();
        if now != want {
            return Ok(false);
        }
    }
    let mut cur = Vec::new();
    let mut k = 0;
    let (mut off, mut left) = ext.first().copied().unwrap_or((0, 0));
    for &ch in &f.chunks {
        let want = store.read_chunk(ch)?;
        let mut w = &want[..];
        while !w.is_empty() {
            while left == 0 {
                k += 1;
                let Some(&(o, l)) = ext.get(k) else {
                    return Ok(false);
                };
                (off, left) = (o, l);
            }
            let n = (left.min(w.len() as u64)) as usize;
            cur.resize(n, 0);
            if file.read_exact_at(&mut cur, off).is_err() || cur != w[..n] {
                return Ok(false);
            }
            off += n as u64;
            left -= n as u64;
            w = &w[n..];
        }
    }
    Ok(true)
}

/// The extents of `f` as pairs; the whole file when it has none.
fn extent_list(f: &FileContent) -> Vec<(u64, u64)> {
    if f.extents.is_empty() {
        vec![(0, f.size)]
    } else {
        f.extents.chunks(2).map(|p| (p[0], p[1])).collect()
    }
}

/// Writes the saved bytes of `f` into `file` at their offsets (holes are
/// left alone: a new or truncated file keeps them as holes) and sets its
/// size.
pub(crate) fn write_contents(
    file: &File,
    f: &FileContent,
    store: &PageStoreReader,
    path: &Path,
) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let ext = extent_list(f);
    let mut k = 0;
    let (mut off, mut left) = ext.first().copied().unwrap_or((0, 0));
    for &ch in &f.chunks {
        let data = store.read_chunk(ch)?;
        let mut d = &data[..];
        while !d.is_empty() {
            while left == 0 {
                k += 1;
                let &(o, l) = ext.get(k).ok_or_else(|| {
                    Error::image(path, "more saved bytes than its extents hold".to_string())
                })?;
                (off, left) = (o, l);
            }
            let n = (left.min(d.len() as u64)) as usize;
            file.write_all_at(&d[..n], off).at(path)?;
            off += n as u64;
            left -= n as u64;
            d = &d[n..];
        }
    }
    file.set_len(f.size).at(path)
}

pub(crate) fn mtime_of(f: &FileContent) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_nanos(f.mtime_ns.max(0) as u64)
}

/// Puts the saved contents back into the very file the dump read, which
/// is still at its path: the inode stays (a program that remembered it,
/// as sqlite does, finds it again; hard links still share it). A changed
/// file's current version is first copied to `PATH.cairn-DATE`.
fn put_back_in_place(
    f: &FileContent,
    store: &PageStoreReader,
    path: &Path,
    file: &File,
    dir: &std::os::fd::OwnedFd,
) -> Result<()> {
    let md = file.metadata().at(path)?;
    let same = same_contents_fd(file, f, store)?;
    if !same {
        let aside = copy_aside(file, path, dir, &md)?;
        if !f.extents.is_empty() {
            // Holes where the checkpoint had them.
            file.set_len(0).at(path)?;
        }
        write_contents(file, f, store, path)?;
        warn!(
            "{} changed since the checkpoint: its checkpointed contents are written back \
             into the same file (inode {}); the current version is now {}",
            f.path,
            f.ino,
            aside.display()
        );
    }
    if md.mode() & 0o7777 != f.mode & 0o7777 {
        file.set_permissions(std::fs::Permissions::from_mode(f.mode & 0o7777))
            .at(path)?;
    }
    if !same || md.mtime() * 1_000_000_000 + md.mtime_nsec() != f.mtime_ns {
        file.set_modified(mtime_of(f)).at(path)?;
    }
    if !same {
        file.sync_all().at(path)?;
    }
    Ok(())
}

/// Copies the current contents of `file` to a new file named as
/// [`aside_name`] says, created exclusively in `dir` (never through a
/// link), with the current owner, mode (less set-id bits) and mtime.
fn copy_aside(
    file: &File,
    path: &Path,
    dir: &std::os::fd::OwnedFd,
    md: &std::fs::Metadata,
) -> Result<PathBuf> {
    use std::io::Seek;
    let mut made = None;
    for _ in 0..16 {
        let a = aside_name(path);
        let Some(name) = a.file_name() else { break };
        match crate::sys::safefs::create_excl(dir, name, 0o600) {
            Ok(out) => {
                made = Some((a, out));
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&a, e)),
        }
    }
    let (a, mut out) =
        made.ok_or_else(|| Error::io(path, std::io::Error::other("no free name beside it")))?;
    let r = (|| -> std::io::Result<()> {
        let mut src = file.try_clone()?;
        src.rewind()?;
        std::io::copy(&mut src, &mut out)?;
        let _ = std::os::unix::fs::fchown(&out, Some(md.uid()), Some(md.gid()));
        out.set_permissions(std::fs::Permissions::from_mode(md.mode() & 0o1777))?;
        out.set_modified(md.modified()?)?;
        out.sync_all()
    })();
    if let Err(e) = r {
        if let Some(n) = a.file_name() {
            let _ = rustix::fs::unlinkat(dir, n, rustix::fs::AtFlags::empty());
        }
        return Err(Error::io(&a, e));
    }
    Ok(a)
}

fn put_back_one(f: &FileContent, store: &PageStoreReader) -> Result<()> {
    let path = Path::new(&f.path);
    match find_same(f, path)? {
        Found::Same(file, dir) => return put_back_in_place(f, store, path, &file, &dir),
        Found::Other(why) => {
            info!("{}: {why}; not written in place", f.path);
        }
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                if !dir.exists() {
                    std::fs::create_dir_all(dir).at(dir)?;
                    warn!("{}: directory recreated", dir.display());
                }
            }
            let tmp = write_temp(f, store, path)?;
            std::fs::rename(&tmp, path).map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                Error::io(path, e)
            })?;
            warn!(
                "{}: gone since the checkpoint; recreated with its checkpointed contents",
                f.path
            );
        }
        Err(e) => return Err(Error::io(path, e)),
        Ok(md) => {
            if md.file_type().is_file() && same_contents(path, f, store)? {
                return Ok(());
            }
            let tmp = write_temp(f, store, path)?;
            let aside = aside_name(path);
            std::fs::rename(path, &aside).map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                Error::io(path, e)
            })?;
            std::fs::rename(&tmp, path).map_err(|e| {
                // Put the current version back where it was.
                let _ = std::fs::rename(&aside, path);
                let _ = std::fs::remove_file(&tmp);
                Error::io(path, e)
            })?;
            warn!(
                "{} changed since the checkpoint: put back its checkpointed contents; \
                 the current version is now {}",
                f.path,
                aside.display()
            );
        }
    }
    Ok(())
}

/// Whether the file at `path` holds exactly the saved bytes.
fn same_contents(path: &Path, f: &FileContent, store: &PageStoreReader) -> Result<bool> {
    let file = File::open(path).at(path)?;
    same_contents_fd(&file, f, store)
}

/// `PATH.cairn-YYYYMMDD-HHMMSS` (local time), with `.N` added until the
/// name is free.
pub fn aside_name(path: &Path) -> PathBuf {
    let t = crate::sys::time::local_now().ok();
    let stamp = t.map_or_else(
        || "old".to_string(),
        |t| {
            format!(
                "{:04}{:02}{:02}-{:02}{:02}{:02}",
                t.year, t.month, t.day, t.hour, t.minute, t.second
            )
        },
    );
    let base = format!("{}.cairn-{stamp}", path.display());
    let mut p = PathBuf::from(&base);
    let mut n = 1;
    while std::fs::symlink_metadata(&p).is_ok() {
        p = PathBuf::from(format!("{base}.{n}"));
        n += 1;
    }
    p
}

/// Creates `path` (which must not exist) with the saved contents, mode,
/// owner and mtime.
fn write_new(f: &FileContent, store: &PageStoreReader, path: &Path) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .at(path)?;
    let r = (|| -> Result<()> {
        write_contents(&file, f, store, path)?;
        if let Err(e) = std::os::unix::fs::fchown(&file, Some(f.uid), Some(f.gid)) {
            warn!(
                "{}: cannot give it back to {}:{}: {e}",
                path.display(),
                f.uid,
                f.gid
            );
        }
        file.set_permissions(std::fs::Permissions::from_mode(f.mode & 0o7777))
            .at(path)?;
        file.set_modified(mtime_of(f)).at(path)?;
        file.sync_all().at(path)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(path);
    }
    r
}

/// Writes the saved contents to a new temporary file beside `path`.
fn write_temp(f: &FileContent, store: &PageStoreReader, path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = path.parent().unwrap_or(Path::new("/"));
    let mut n = 0;
    loop {
        let tmp = dir.join(format!(".{name}.cairn-tmp-{}-{n}", std::process::id()));
        if std::fs::symlink_metadata(&tmp).is_err() {
            write_new(f, store, &tmp)?;
            return Ok(tmp);
        }
        n += 1;
    }
}

/// Recreates deleted file number `n`: at its old path if that is free,
/// else under a hidden name in the same directory, else (the directory is
/// gone too) in the temporary directory.
fn make_ghost(f: &FileContent, store: &PageStoreReader, n: usize) -> Result<PathBuf> {
    let path = Path::new(&f.path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let dir = path.parent().filter(|d| d.is_dir());
    let p = match dir {
        Some(_) if std::fs::symlink_metadata(path).is_err() => path.to_path_buf(),
        Some(d) => d.join(format!(".{name}.cairn-ghost-{}-{n}", std::process::id())),
        None => {
            let p =
                std::env::temp_dir().join(format!("cairn-ghost-{}-{n}-{name}", std::process::id()));
            warn!(
                "the directory of the deleted file {} is gone; it is recreated as {}",
                f.path,
                p.display()
            );
            p
        }
    };
    write_new(f, store, &p)?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("3MB"), Ok(3 << 20));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("10B"), Ok(10));
        for bad in [
            "",
            "k",
            "12x",
            "-1",
            "1.5M",
            "M64",
            "99999999999999999999",
            "16777216T",
            "10iB",
            "1MM",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn limits_parse_and_print() {
        assert_eq!("all".parse(), Ok(ContentsLimit::All));
        assert_eq!("none".parse(), Ok(ContentsLimit::None));
        assert_eq!("64M".parse(), Ok(ContentsLimit::Max(64 << 20)));
        assert!("some".parse::<ContentsLimit>().is_err());
        assert_eq!(ContentsLimit::default(), ContentsLimit::Max(64 << 20));
        for l in [
            ContentsLimit::All,
            ContentsLimit::None,
            ContentsLimit::Max(0),
            ContentsLimit::Max(1000),
            ContentsLimit::Max(64 << 20),
            ContentsLimit::Max(3 << 30),
        ] {
            assert_eq!(l.to_string().parse(), Ok(l), "{l}");
        }
        assert_eq!(ContentsLimit::Max(64 << 20).to_string(), "64M");
        assert!(ContentsLimit::Max(10).keeps(10));
        assert!(!ContentsLimit::Max(10).keeps(11));
        assert!(!ContentsLimit::None.keeps(0));
        assert!(ContentsLimit::All.keeps(u64::MAX));
    }

    #[test]
    fn aside_names_are_free() {
        let dir = std::env::temp_dir().join(format!("cairn-aside-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("data");
        let a = aside_name(&p);
        let s = a.to_string_lossy().into_owned();
        let stamp = s.strip_prefix(&format!("{}.cairn-", p.display())).unwrap();
        assert_eq!(stamp.len(), 15, "{s}");
        assert_eq!(&stamp[8..9], "-", "{s}");
        std::fs::write(&a, b"x").unwrap();
        let b = aside_name(&p);
        assert_ne!(a, b);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cairn-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn sparse_extents_are_found_and_checked() {
        use std::os::unix::fs::FileExt;
        let dir = tmpdir("extents");
        let p = dir.join("sparse");
        let f = File::options()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"x", 0).unwrap();
        f.write_all_at(b"y", 32 << 20).unwrap();
        let e = data_extents(&f, 64 << 20);
        if e.len() == 2 {
            assert_eq!(e[0].0, 0);
            assert!(e[1].0 <= 32 << 20 && e[1].0 + e[1].1 > 32 << 20, "{e:?}");
        } else {
            // A file system without holes: all data.
            assert_eq!(e, vec![(0, 64 << 20)]);
        }
        let mut c = FileContent::new();
        c.size = 100;
        c.extents = vec![0, 10, 20, 10];
        assert!(check_extents(&c).is_ok());
        assert_eq!(data_len(c.size, &c.extents), 20);
        for bad in [vec![0, 10, 5, 10], vec![0, 101], vec![u64::MAX, 2], vec![1]] {
            c.extents = bad.clone();
            assert!(check_extents(&c).is_err(), "{bad:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn in_place_only_for_the_same_file_and_never_through_a_link() {
        let dir = tmpdir("inplace");
        std::fs::create_dir(dir.join("real")).unwrap();
        let p = dir.join("real/f");
        std::fs::write(&p, b"data").unwrap();
        let md = std::fs::metadata(&p).unwrap();
        std::os::unix::fs::symlink(dir.join("real"), dir.join("link")).unwrap();
        let mut c = FileContent::new();
        c.dev = md.dev();
        c.ino = md.ino();
        c.uid = md.uid();
        c.gid = md.gid();
        c.path = p.to_string_lossy().into_owned();
        assert!(matches!(find_same(&c, &p).unwrap(), Found::Same(..)));
        let via = dir.join("link/f");
        assert!(matches!(find_same(&c, &via).unwrap(), Found::Other(_)));
        c.ino += 1;
        assert!(matches!(find_same(&c, &p).unwrap(), Found::Other(_)));
        c.ino = 0;
        assert!(matches!(find_same(&c, &p).unwrap(), Found::Other(_)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
