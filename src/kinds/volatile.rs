//! Files on volatile file systems (tmpfs, ramfs: `/dev/shm`, a tmpfs
//! `/tmp` or `/run`), so that a checkpoint is restartable any number of
//! times, on this node or another, after they were wiped (a reboot, the
//! job's end, another node).
//!
//! Dump: the regular files there that the tree has open or maps (shared
//! or private; mapped only, as Open MPI's `vader_segment.*` and
//! `pmix_dstor_*` files, too: `memory::vma::describe` keeps a descriptor
//! of them through map_files) are saved whole by `kinds::contents`,
//! whatever `--file-contents` says (holes kept). [`dump`] lists their
//! paths, the FIFOs and unix socket path names there, and every directory
//! from the file system's mount point down to them (mode, owner) in the
//! inventory (`volatile_fs`, proto/volatile.proto).
//!
//! Restore: [`check`] runs with the pre-flight checks, before anything is
//! touched: a file still at its path with the saved bytes and owner is
//! used as it is; one with other bytes (or another owner, or another
//! type) is refused naming the path, unless `--ignore-file-changes`, which
//! renames it aside (`PATH.cairn-DATE`) and recreates the saved one: the
//! inode a live process (another job) holds is never written, so two
//! trees never silently share or mix one file. A directory on the way
//! that exists must be a directory (never a link) owned by root or by its
//! owner at the dump; this is never ignored. [`Plan::make`] then recreates
//! what is missing: directories (created 0700 as cairn, given their mode
//! and owner once filled), files created `O_EXCL|O_NOFOLLOW` through
//! their directory's descriptor and written with the saved extents,
//! FIFOs with `mknodat`; never in a directory that others than root and
//! the new file's owner can write unless it is sticky (the owner is
//! kept, so the sticky bit protects it). Every mapping of a file then
//! maps the one file at its path, so processes that shared it share it
//! again. Unix sockets are bound again by `kinds::unix` into the
//! recreated directories. A failed restore leaves what it recreated; the
//! next restore finds the same bytes and uses them as they are.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};

use crate::error::{Error, Result};
use crate::image::pages::PageStoreReader;
use crate::image::proto::volatile::{VolatileDir, VolatileFs, VolatileNode};
use crate::image::proto::{file_desc, FileContent, FileContents, Files};
use crate::sys::safefs;
use crate::{info, warn};

const TMPFS_MAGIC: u64 = 0x0102_1994;
const RAMFS_MAGIC: u64 = 0x8584_58f6;

fn is_volatile_type(t: u64) -> bool {
    matches!(t & 0xffff_ffff, TMPFS_MAGIC | RAMFS_MAGIC)
}

/// Whether `path` (followed, so `/proc/PID/fd/N` and
/// `/proc/PID/map_files/A-B` name their file) is on tmpfs or ramfs.
pub fn on_volatile_fs(path: impl AsRef<Path>) -> bool {
    rustix::fs::statfs(path.as_ref()).is_ok_and(|s| is_volatile_type(s.f_type as u64))
}

/// Whether the open file `f` is on tmpfs or ramfs.
pub fn fd_on_volatile_fs(f: impl AsFd) -> bool {
    rustix::fs::fstatfs(f).is_ok_and(|s| is_volatile_type(s.f_type as u64))
}

// ---------------------------------------------------------------- dump

/// The path a unix socket name refers to (relative ones from `dir`).
fn socket_path(name: &[u8], dir: &str) -> Option<PathBuf> {
    let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
    let p = Path::new(OsStr::from_bytes(&name[..end]));
    if end == 0 {
        return None;
    }
    if p.is_absolute() {
        Some(p.to_path_buf())
    } else if dir.starts_with('/') {
        Some(Path::new(dir).join(p))
    } else {
        None
    }
}

/// Adds the directories from the mount point of `dir` down to `dir`
/// (the tree is frozen). Returns false, adding nothing, when `dir` is
/// not a directory reached without links on a volatile file system.
fn add_dirs(dir: &Path, out: &mut BTreeMap<PathBuf, VolatileDir>) -> bool {
    if !on_volatile_fs(dir) || !plain_absolute(dir) {
        return false;
    }
    let mut chain = Vec::new();
    let mut cur = dir.to_path_buf();
    loop {
        if out.contains_key(&cur) {
            break;
        }
        let Ok(md) = std::fs::symlink_metadata(&cur) else {
            return false;
        };
        if !md.file_type().is_dir() {
            return false;
        }
        let mut d = VolatileDir::new();
        d.path = cur.to_string_lossy().into_owned();
        d.mode = md.mode() & 0o7777;
        d.uid = md.uid();
        d.gid = md.gid();
        let parent = cur.parent().map(Path::to_path_buf);
        d.mount_point = match &parent {
            None => true,
            Some(p) => std::fs::symlink_metadata(p).map_or(true, |pm| pm.dev() != md.dev()),
        };
        let top = d.mount_point;
        chain.push((cur.clone(), d));
        match parent {
            Some(p) if !top => cur = p,
            _ => break,
        }
    }
    out.extend(chain);
    true
}

/// An absolute path without `.` or `..` and not ending in `/`.
fn plain_absolute(p: &Path) -> bool {
    let s = p.as_os_str().as_bytes();
    p.is_absolute()
        && (s == b"/" || !s.ends_with(b"/"))
        && !s.windows(2).any(|w| w == b"//")
        && !s.split(|&c| c == b'/').any(|c| c == b"." || c == b"..")
}

/// The inventory's record of the volatile files of a dump: `files` are
/// the contents.img paths `kinds::contents::dump` found on tmpfs/ramfs.
pub fn dump(descs: &Files, files: Vec<String>) -> VolatileFs {
    let mut out = VolatileFs::new();
    let mut dirs = BTreeMap::new();
    let mut kept: Vec<String> = Vec::new();
    for f in files {
        if let Some(parent) = Path::new(&f).parent() {
            if add_dirs(parent, &mut dirs) {
                kept.push(f);
                continue;
            }
        }
        warn!("{f}: on a volatile file system but not under a plain directory path; its directories are not recorded");
        kept.push(f);
    }
    kept.sort();
    kept.dedup();
    out.files = kept;
    let mut fifos = BTreeMap::new();
    let mut sockets = std::collections::BTreeSet::new();
    for d in &descs.descs {
        match &d.kind {
            Some(file_desc::Kind::Fifo(f)) if !f.deleted => {
                let p = Path::new(&f.path);
                let Some(parent) = p.parent() else { continue };
                let Ok(md) = std::fs::symlink_metadata(p) else {
                    continue;
                };
                let ino = f.stat.as_ref().map_or(0, |s| s.ino);
                if !md.file_type().is_fifo() || md.ino() != ino {
                    continue;
                }
                if !add_dirs(parent, &mut dirs) {
                    continue;
                }
                let mut n = VolatileNode::new();
                n.path = f.path.clone();
                n.mode = md.mode() & 0o7777;
                n.uid = md.uid();
                n.gid = md.gid();
                fifos.insert(f.path.clone(), n);
            }
            Some(file_desc::Kind::Unix(u)) => {
                let Some(p) = socket_path(&u.name, &u.name_dir) else {
                    continue;
                };
                if let Some(parent) = p.parent() {
                    if add_dirs(parent, &mut dirs) {
                        sockets.insert(p.to_string_lossy().into_owned());
                    }
                }
            }
            _ => {}
        }
    }
    out.fifos = fifos.into_values().collect();
    out.sockets = sockets.into_iter().collect();
    out.dirs = dirs.into_values().collect();
    if !out.files.is_empty() || !out.fifos.is_empty() || !out.sockets.is_empty() {
        info!(
            "volatile file systems: {} files, {} FIFOs, {} socket names, {} directories recorded",
            out.files.len(),
            out.fifos.len(),
            out.sockets.len(),
            out.dirs.len()
        );
    }
    out
}

// ---------------------------------------------------------------- restore

/// Checks what the inventory says (paths, modes, parents listed before
/// their children); `saved` is contents.img.
pub fn validate(v: &VolatileFs, saved: Option<&FileContents>, img: &Path) -> Result<()> {
    let bad = |what: &str, why: String| Error::image(img, format!("volatile_fs: {what}: {why}"));
    let mut dirs: HashSet<&str> = HashSet::new();
    let check = |p: &str, what: &str| -> Result<()> {
        if p.is_empty() || p.len() >= 4096 || p.contains('\0') || !plain_absolute(Path::new(p)) {
            return Err(bad(what, format!("{p:?} is not a plain absolute path")));
        }
        Ok(())
    };
    let parent_listed = |p: &str, dirs: &HashSet<&str>| -> bool {
        Path::new(p)
            .parent()
            .is_some_and(|d| dirs.contains(d.to_string_lossy().as_ref()))
    };
    for d in &v.dirs {
        check(&d.path, "directory")?;
        if d.mode & !0o7777 != 0 {
            return Err(bad(&d.path, format!("mode {:#o}", d.mode)));
        }
        if !d.mount_point && !parent_listed(&d.path, &dirs) {
            return Err(bad(&d.path, "its parent is not listed before it".into()));
        }
        if !dirs.insert(&d.path) {
            return Err(bad(&d.path, "listed twice".into()));
        }
    }
    let regs: HashSet<&str> = saved
        .map(|c| {
            c.files
                .iter()
                .filter(|f| !f.deleted)
                .map(|f| f.path.as_str())
                .collect()
        })
        .unwrap_or_default();
    for f in &v.files {
        check(f, "file")?;
        if !regs.contains(f.as_str()) {
            return Err(bad(f, "not a saved file of contents.img".into()));
        }
    }
    for n in &v.fifos {
        check(&n.path, "FIFO")?;
        if n.mode & !0o7777 != 0 {
            return Err(bad(&n.path, format!("mode {:#o}", n.mode)));
        }
        if !parent_listed(&n.path, &dirs) {
            return Err(bad(&n.path, "its directory is not listed".into()));
        }
    }
    for s in &v.sockets {
        check(s, "socket")?;
    }
    Ok(())
}

/// What a restore does with the volatile files: decided by [`check`].
#[derive(Default)]
pub struct Plan {
    fs: VolatileFs,
    /// Paths whose current file is kept as it is.
    as_is: HashSet<String>,
    /// Paths whose current file is renamed aside first
    /// (`--ignore-file-changes`).
    aside: HashSet<String>,
}

impl Plan {
    /// The volatile files' paths: `contents::put_back` leaves them to
    /// [`Plan::make`].
    pub fn paths(&self) -> HashSet<String> {
        self.fs.files.iter().cloned().collect()
    }

    /// The files' and FIFOs' paths, which `restore --compare` compares
    /// by path, not inode.
    pub fn oracle_paths(&self) -> HashSet<String> {
        let fifos = self.fs.fifos.iter().map(|n| n.path.clone());
        self.fs.files.iter().cloned().chain(fifos).collect()
    }
}

/// Whether a directory with stat `st` is one cairn may create a file
/// owned by `uid` in: only root, `uid` (and the directory's owner, if it
/// is one of them) can write it, or it is sticky.
fn safe_dir(st: &Stat, uid: u32) -> std::result::Result<(), String> {
    let mode = st.st_mode & 0o7777;
    let owner_ok = st.st_uid == 0 || st.st_uid == uid;
    let others_write = mode & 0o022 != 0 || (!owner_ok && mode & 0o200 != 0);
    if others_write && mode & 0o1000 == 0 {
        return Err(format!(
            "writable by others (mode {mode:#o}, owner {}) and not sticky",
            st.st_uid
        ));
    }
    Ok(())
}

/// What is at `path` now: `None` when missing (its directory too).
fn lstat_now(path: &Path) -> Result<Option<Stat>> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(None);
    };
    let dir = match safefs::open_dir_no_links(parent) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(parent, e)),
    };
    match safefs::lstatat(&dir, name) {
        Ok(st) => Ok(Some(st)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Pre-flight (nothing touched yet): decides, for every volatile path,
/// whether its file is used as it is, recreated, or (with `ignore`,
/// `--ignore-file-changes`) renamed aside and recreated; refuses a
/// changed file without `ignore`, and always a directory that is not
/// the dump's (a link, another owner) or unsafe to create in.
pub fn check(
    inv_fs: Option<&VolatileFs>,
    saved: Option<&FileContents>,
    store: &PageStoreReader,
    ignore: bool,
    img: &Path,
) -> Result<Plan> {
    let Some(fs) = inv_fs else {
        return Ok(Plan::default());
    };
    validate(fs, saved, img)?;
    let mut plan = Plan {
        fs: fs.clone(),
        ..Default::default()
    };
    let mut hard = Vec::new();
    let mut changed = Vec::new();
    for d in &fs.dirs {
        let p = Path::new(&d.path);
        if d.mount_point {
            match safefs::open_dir_no_links(p) {
                Ok(_) => {}
                Err(e) => hard.push(format!(
                    "{}: the directory of volatile files (a mount point at the dump): {e}",
                    d.path
                )),
            }
            continue;
        }
        match lstat_now(p)? {
            None => {}
            Some(st) if safefs::file_type(&st) != FileType::Directory => hard.push(format!(
                "{}: a {} now, was a directory of volatile files",
                d.path,
                safefs::type_name(safefs::file_type(&st))
            )),
            Some(st) if st.st_uid != 0 && st.st_uid != d.uid => hard.push(format!(
                "{}: owned by uid {} now, not {} as at the dump (someone else's directory)",
                d.path, st.st_uid, d.uid
            )),
            Some(_) => {}
        }
    }
    let entries: HashMap<&str, &FileContent> = saved
        .map(|c| {
            c.files
                .iter()
                .filter(|f| !f.deleted)
                .map(|f| (f.path.as_str(), f))
                .collect()
        })
        .unwrap_or_default();
    for path in &fs.files {
        let Some(f) = entries.get(path.as_str()) else {
            continue;
        };
        let p = Path::new(path);
        let Some(st) = lstat_now(p)? else { continue };
        let why = if safefs::file_type(&st) != FileType::RegularFile {
            format!("a {} now", safefs::type_name(safefs::file_type(&st)))
        } else if st.st_uid != f.uid || st.st_gid != f.gid {
            format!(
                "owned by {}:{} now, not {}:{}",
                st.st_uid, st.st_gid, f.uid, f.gid
            )
        } else {
            let (parent, name) = (p.parent().unwrap_or(Path::new("/")), p.file_name());
            let dir = safefs::open_dir_no_links(parent).map_err(|e| Error::io(parent, e))?;
            let fd = safefs::openat_nofollow(
                &dir,
                name.unwrap_or_default(),
                OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY,
                0,
            )
            .map_err(|e| Error::io(p, e))?;
            let file = File::from(fd);
            if crate::kinds::contents::same_contents_fd(&file, f, store)? {
                info!("{path}: on a volatile file system, unchanged since the dump: used as it is");
                plan.as_is.insert(path.clone());
                continue;
            }
            // A held backup of `cairn pair` shares the file with its
            // living primary, which goes on writing it: used as it is
            // now, and written back at the release (`pair::hold`).
            if crate::pair::hold::defer_volatile(path) {
                info!("{path}: on a volatile file system, in use by the primary: written back at the release");
                plan.as_is.insert(path.clone());
                continue;
            }
            "holds other contents than at the checkpoint".to_string()
        };
        changed.push(format!("{path} (a volatile file): {why}"));
        plan.aside.insert(path.clone());
    }
    for n in &fs.fifos {
        let Some(st) = lstat_now(Path::new(&n.path))? else {
            continue;
        };
        if safefs::file_type(&st) == FileType::Fifo && st.st_uid == n.uid {
            plan.as_is.insert(n.path.clone());
            continue;
        }
        changed.push(format!(
            "{} (a volatile FIFO): a {} owned by uid {} now",
            n.path,
            safefs::type_name(safefs::file_type(&st)),
            st.st_uid
        ));
        plan.aside.insert(n.path.clone());
    }
    if !hard.is_empty() {
        return Err(Error::Restore(hard.join("; ")));
    }
    if !changed.is_empty() {
        if !ignore {
            return Err(Error::Restore(format!(
                "{} (use --ignore-file-changes to move them aside and restore the checkpointed files)",
                changed.join("; ")
            )));
        }
        for c in &changed {
            warn!("{c}: moved aside, the checkpointed one recreated (--ignore-file-changes)");
        }
    }
    Ok(plan)
}

/// A directory of the plan, open.
struct OpenDir {
    fd: OwnedFd,
    path: PathBuf,
}

fn split(path: &str) -> Result<(&Path, &OsStr)> {
    let p = Path::new(path);
    match (p.parent(), p.file_name()) {
        (Some(d), Some(n)) => Ok((d, n)),
        _ => Err(Error::Restore(format!("{path}: no file name"))),
    }
}

impl Plan {
    /// Recreates the missing directories, files and FIFOs (after the
    /// pre-flight checks; see the module documentation).
    pub fn make(&self, saved: Option<&FileContents>, store: &PageStoreReader) -> Result<()> {
        if self.fs.files.is_empty() && self.fs.fifos.is_empty() && self.fs.dirs.is_empty() {
            return Ok(());
        }
        let mut dirs: HashMap<PathBuf, OpenDir> = HashMap::new();
        // Directories made here: given their mode and owner at the end,
        // children first, so nobody else can write them while cairn does.
        let mut made: Vec<(PathBuf, u32, u32, u32)> = Vec::new();
        for d in &self.fs.dirs {
            let p = PathBuf::from(&d.path);
            if d.mount_point {
                let fd = safefs::open_dir_no_links(&p).map_err(|e| Error::io(&p, e))?;
                dirs.insert(p.clone(), OpenDir { fd, path: p });
                continue;
            }
            let (parent, name) = split(&d.path)?;
            let pd = dirs
                .get(parent)
                .ok_or_else(|| Error::Restore(format!("{}: parent not open", d.path)))?;
            let created = match rustix::fs::mkdirat(&pd.fd, name, Mode::from_raw_mode(0o700)) {
                Ok(()) => {
                    let pst =
                        rustix::fs::fstat(&pd.fd).map_err(|e| Error::io(&pd.path, e.into()))?;
                    if let Err(why) = safe_dir(&pst, d.uid) {
                        let _ = rustix::fs::unlinkat(&pd.fd, name, AtFlags::REMOVEDIR);
                        return Err(Error::Restore(format!(
                            "{}: not recreated: {}: {why}",
                            d.path,
                            pd.path.display()
                        )));
                    }
                    true
                }
                Err(rustix::io::Errno::EXIST) => false,
                Err(e) => return Err(Error::io(&p, e.into())),
            };
            let fd = safefs::openat_nofollow(&pd.fd, name, OFlags::RDONLY | OFlags::DIRECTORY, 0)
                .map_err(|e| Error::io(&p, e))?;
            let st = rustix::fs::fstat(&fd).map_err(|e| Error::io(&p, e.into()))?;
            if created {
                info!("{}: directory of volatile files recreated", d.path);
                made.push((p.clone(), d.mode, d.uid, d.gid));
            } else if st.st_uid != 0 && st.st_uid != d.uid {
                return Err(Error::Restore(format!(
                    "{}: owned by uid {} now, not {} as at the dump",
                    d.path, st.st_uid, d.uid
                )));
            }
            dirs.insert(p.clone(), OpenDir { fd, path: p });
        }
        let entries: HashMap<&str, &FileContent> = saved
            .map(|c| {
                c.files
                    .iter()
                    .filter(|f| !f.deleted)
                    .map(|f| (f.path.as_str(), f))
                    .collect()
            })
            .unwrap_or_default();
        for path in &self.fs.files {
            if self.as_is.contains(path) {
                continue;
            }
            let f = entries
                .get(path.as_str())
                .ok_or_else(|| Error::Restore(format!("{path}: no saved contents")))?;
            let dir = self.dir_of(path, &dirs, f.uid)?;
            make_file(&dir.0, dir.1, path, f, store, self.aside.contains(path))?;
        }
        for n in &self.fs.fifos {
            if self.as_is.contains(&n.path) {
                continue;
            }
            let dir = self.dir_of(&n.path, &dirs, n.uid)?;
            make_fifo(&dir.0, dir.1, n, self.aside.contains(&n.path))?;
        }
        for (p, mode, uid, gid) in made.iter().rev() {
            let Some(d) = dirs.get(p) else { continue };
            std::os::unix::fs::fchown(&d.fd, Some(*uid), Some(*gid))
                .map_err(|e| Error::io(p, e))?;
            rustix::fs::fchmod(&d.fd, Mode::from_raw_mode(*mode))
                .map_err(|e| Error::io(p, e.into()))?;
        }
        Ok(())
    }

    /// The open directory of `path` (one of the plan's, or opened without
    /// links), checked safe to create a file of `uid` in.
    fn dir_of<'a>(
        &self,
        path: &'a str,
        dirs: &HashMap<PathBuf, OpenDir>,
        uid: u32,
    ) -> Result<(OwnedFd, &'a OsStr)> {
        let (parent, name) = split(path)?;
        let fd = match dirs.get(parent) {
            Some(d) => d.fd.try_clone().map_err(|e| Error::io(parent, e))?,
            None => safefs::open_dir_no_links(parent).map_err(|e| Error::io(parent, e))?,
        };
        // A directory made here is still cairn's, 0700, until the end.
        let st = rustix::fs::fstat(&fd).map_err(|e| Error::io(parent, e.into()))?;
        safe_dir(&st, uid).map_err(|why| {
            Error::Restore(format!(
                "{path}: not recreated in {}: {why}",
                parent.display()
            ))
        })?;
        Ok((fd, name))
    }
}

/// Renames `name` in `dir` aside (never over an existing name).
fn move_aside(dir: &OwnedFd, name: &OsStr, path: &str) -> Result<PathBuf> {
    let full = Path::new(path);
    for _ in 0..16 {
        let a = crate::kinds::contents::aside_name(full);
        let Some(an) = a.file_name() else { break };
        match rustix::fs::renameat_with(dir, name, dir, an, rustix::fs::RenameFlags::NOREPLACE) {
            Ok(()) => return Ok(a),
            Err(rustix::io::Errno::EXIST) => continue,
            Err(e) => return Err(Error::io(full, e.into())),
        }
    }
    Err(Error::Restore(format!(
        "{path}: no free name to move it aside"
    )))
}

/// Creates the volatile file `path` (`name` in `dir`) exclusively with
/// the saved bytes, owner, mode and mtime.
fn make_file(
    dir: &OwnedFd,
    name: &OsStr,
    path: &str,
    f: &FileContent,
    store: &PageStoreReader,
    aside: bool,
) -> Result<()> {
    let full = Path::new(path);
    if aside {
        let a = move_aside(dir, name, path)?;
        warn!(
            "{path}: the file there now is {} (--ignore-file-changes)",
            a.display()
        );
    }
    let fd = safefs::openat_nofollow(
        dir,
        name,
        OFlags::RDWR | OFlags::CREATE | OFlags::EXCL,
        0o600,
    )
    .map_err(|e| {
        Error::Restore(format!(
            "{path}: cannot recreate the volatile file exclusively: {e}"
        ))
    })?;
    let file = File::from(fd);
    let r = (|| -> Result<()> {
        crate::kinds::contents::write_contents(&file, f, store, full)?;
        std::os::unix::fs::fchown(&file, Some(f.uid), Some(f.gid))
            .map_err(|e| Error::io(full, e))?;
        file.set_permissions(std::fs::Permissions::from_mode(f.mode & 0o7777))
            .map_err(|e| Error::io(full, e))?;
        file.set_modified(crate::kinds::contents::mtime_of(f))
            .map_err(|e| Error::io(full, e))
    })();
    if let Err(e) = r {
        remove_if_ours(dir, name, &file);
        return Err(e);
    }
    info!(
        "{path}: volatile file recreated with its checkpointed contents ({} bytes)",
        f.size
    );
    Ok(())
}

/// Unlinks `name` in `dir` if it is still `file`.
fn remove_if_ours(dir: &OwnedFd, name: &OsStr, file: &File) {
    let (Ok(a), Ok(b)) = (rustix::fs::fstat(file), safefs::lstatat(dir, name)) else {
        return;
    };
    if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) {
        let _ = rustix::fs::unlinkat(dir, name, AtFlags::empty());
    }
}

/// Creates the FIFO `n` (`name` in `dir`) with mknodat, then its owner
/// and mode through an O_PATH descriptor checked to be it.
fn make_fifo(dir: &OwnedFd, name: &OsStr, n: &VolatileNode, aside: bool) -> Result<()> {
    let full = Path::new(&n.path);
    if aside {
        let a = move_aside(dir, name, &n.path)?;
        warn!(
            "{}: the file there now is {} (--ignore-file-changes)",
            n.path,
            a.display()
        );
    }
    rustix::fs::mknodat(dir, name, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
        .map_err(|e| Error::io(full, e.into()))?;
    let fd = safefs::openat_nofollow(dir, name, OFlags::PATH, 0).map_err(|e| Error::io(full, e))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| Error::io(full, e.into()))?;
    if safefs::file_type(&st) != FileType::Fifo {
        return Err(Error::Restore(format!(
            "{}: not the FIFO just made",
            n.path
        )));
    }
    let via = format!("/proc/self/fd/{}", fd.as_raw_fd());
    std::os::unix::fs::chown(&via, Some(n.uid), Some(n.gid)).map_err(|e| Error::io(full, e))?;
    rustix::fs::chmod(&via, Mode::from_raw_mode(n.mode)).map_err(|e| Error::io(full, e.into()))?;
    info!("{}: volatile FIFO recreated", n.path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory's stat with `mode` and owner `uid` (the rest is /'s).
    fn st(mode: u32, uid: u32) -> Stat {
        let mut s = rustix::fs::fstat(std::fs::File::open("/").unwrap()).unwrap();
        s.st_mode = mode | libc::S_IFDIR;
        s.st_uid = uid;
        s
    }

    #[test]
    fn safe_dirs() {
        assert!(safe_dir(&st(0o755, 0), 1000).is_ok());
        assert!(safe_dir(&st(0o700, 1000), 1000).is_ok());
        assert!(safe_dir(&st(0o1777, 0), 1000).is_ok());
        assert!(safe_dir(&st(0o777, 0), 1000).is_err());
        assert!(safe_dir(&st(0o775, 0), 0).is_err());
        assert!(safe_dir(&st(0o700, 1001), 1000).is_err());
        assert!(safe_dir(&st(0o500, 1001), 1000).is_ok());
    }

    #[test]
    fn plain_paths() {
        assert!(plain_absolute(Path::new("/dev/shm/x")));
        assert!(plain_absolute(Path::new("/")));
        for bad in ["dev/shm", "/a/../b", "/a/./b", "/a//b", "/a/"] {
            assert!(!plain_absolute(Path::new(bad)), "{bad}");
        }
    }

    #[test]
    fn socket_paths() {
        assert_eq!(
            socket_path(b"/run/x.sock\0", ""),
            Some("/run/x.sock".into())
        );
        assert_eq!(
            socket_path(b"x.sock", "/tmp/d"),
            Some("/tmp/d/x.sock".into())
        );
        assert_eq!(socket_path(b"\0abstract", ""), None);
        assert_eq!(socket_path(b"x.sock", ""), None);
    }
}
