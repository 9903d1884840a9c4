//! Writing an image directory so that it is complete or visibly not.
//!
//! A dump never writes into `DIR` directly. It writes into a staging
//! directory, syncs every file and the directory, and only then moves the
//! result into place:
//!
//! - `DIR` does not exist: the staging directory is
//!   `PARENT/.NAME.cairn-tmp-PID-<16 random hex digits>` (mode 0700, on the
//!   same file system), and it is renamed to `DIR` in one step
//!   (`renameat2(RENAME_NOREPLACE)` between directory descriptors): `DIR`
//!   either does not exist or is complete.
//! - `DIR` exists (an empty directory made for the dump, as CRIU users
//!   do, a previous checkpoint, a mount point): it is kept as it is (owner,
//!   mode, mount), the staging directory is `DIR/.cairn-tmp-PID-<random>`, and at
//!   the end the old `inventory.img` is removed first, the old images, the
//!   new ones are renamed into `DIR`, and the new `inventory.img` comes
//!   last. A previous checkpoint in `DIR` stays valid until then; in
//!   between, `DIR` has no inventory and is refused as incomplete.
//!
//! Names are unpredictable (getrandom), so nobody can plant a link at the
//! name in advance; the directory is made with `mkdirat(0700)`, opened
//! `O_DIRECTORY|O_NOFOLLOW` and checked (ours, 0700), and everything in it
//! is done through its descriptor ([`crate::sys::safefs`]).
//!
//! A staging directory that is dropped without [`Staging::commit`] is
//! removed with everything in it, so a failed dump leaves nothing. One left
//! behind by a dumper that was killed is removed by the next dump into the
//! same place once its pid is gone, if it is a real directory owned by the
//! caller (only the regular files in it, by descriptor); links and other
//! users' directories at staging names are left alone. Paths recorded in images relative to
//! the directory are relative to `DIR` ([`ImageDir::final_path`]), and the
//! staging directory beside `DIR` is at the same depth.
//!
//! [`set_durable`]`(false)` (`cairn migrate`, `cairn receive`) leaves out
//! the syncs, not the rename: a migration's layers live only as long as
//! the migration, which a crash of either machine ends whatever was on
//! disk, and each fsync there is time the tree is frozen.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, FileType, OFlags};

use super::{is_image_name, names, ImageDir};
use crate::error::{Error, IoContext, Result};
use crate::sys::safefs;
use crate::warn;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `DIR` did not exist: staged beside it, renamed at the end.
    Beside,
    /// `DIR` exists: staged inside it, files moved in at the end.
    Inside,
}

/// A dump's images under construction; see the module documentation.
pub struct Staging {
    final_dir: PathBuf,
    work: PathBuf,
    mode: Mode,
    /// Beside: the directory that holds `DIR`; Inside: `DIR` itself. The
    /// staging directory is `work_name` in it.
    parent: OwnedFd,
    work_name: OsString,
    /// Beside: `DIR`'s name in `parent`.
    final_name: OsString,
    dir: ImageDir,
    /// Files already moved into `DIR` by a commit that then failed.
    moved: Vec<String>,
    committed: bool,
}

const TMP_TAG: &str = ".cairn-tmp-";

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The pid in a staging name after its prefix: `PID-<16 hex>` (or `PID`,
/// as older versions named them).
fn staging_pid(rest: &str) -> Option<i32> {
    let (pid, rand) = match rest.split_once('-') {
        Some((p, r)) => (p, Some(r)),
        None => (rest, None),
    };
    if let Some(r) = rand {
        if r.len() != 16 || !r.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
    }
    pid.parse::<i32>().ok().filter(|&p| p > 0)
}

/// `prefix` followed by a pid that is not running: a staging directory
/// left behind by a dumper that died.
fn stale_pid(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(staging_pid)
        .is_some_and(|pid| !crate::sys::task::pid_exists(pid))
}

/// Whether `name` in `dir` is a stale staging directory of ours: a real
/// directory (not followed if a link) owned by the caller.
fn is_ours_dir(dir: BorrowedFd<'_>, name: &OsStr) -> bool {
    safefs::lstatat(dir, name)
        .is_ok_and(|st| safefs::file_type(&st) == FileType::Directory && st.st_uid == euid())
}

/// Removes the staging directories `prefix`PID-... in `dir` whose dumper
/// is gone and that are ours, through descriptors.
fn clean_stale(dir: BorrowedFd<'_>, shown: &Path, prefix: &str) {
    let Ok(entries) = safefs::list(dir) else {
        return;
    };
    for (name, _) in entries {
        let Some(n) = name.to_str() else { continue };
        if !stale_pid(n, prefix) {
            continue;
        }
        let p = shown.join(&name);
        let is_dir = safefs::lstatat(dir, &name)
            .is_ok_and(|st| safefs::file_type(&st) == FileType::Directory);
        if !is_dir {
            // A link or file planted at a staging name: never followed.
            continue;
        }
        if !is_ours_dir(dir, &name) {
            warn!(
                "{}: looks like a staging directory but is not one of ours; left alone",
                p.display()
            );
            continue;
        }
        match safefs::remove_dir_by_fd(dir, &name, Some(euid())) {
            Ok(()) => warn!(
                "removed {}, left behind by an interrupted dump",
                p.display()
            ),
            Err(err) => warn!("cannot remove {}: {err}", p.display()),
        }
    }
}

/// The staging directories directly in `dir` (`.NAME.cairn-tmp-PID-...`
/// beside an image directory, `.cairn-tmp-PID-...` inside one) whose
/// dumper is no longer running and that are real directories owned by
/// the caller: what `cairn prune` removes (with [`remove_stale`]).
pub fn stale_in(dir: BorrowedFd<'_>) -> Vec<OsString> {
    let Ok(entries) = safefs::list(dir) else {
        return Vec::new();
    };
    let mut out: Vec<OsString> = entries
        .into_iter()
        .map(|(n, _)| n)
        .filter(|name| {
            let Some(name) = name.to_str() else {
                return false;
            };
            name.starts_with('.')
                && name
                    .find(TMP_TAG)
                    .is_some_and(|i| stale_pid(&name[i..], TMP_TAG))
        })
        .filter(|name| is_ours_dir(dir, name))
        .collect();
    out.sort();
    out
}

/// Removes the stale staging directory `name` in `dir` (see [`stale_in`]):
/// opened without following a link, must be the caller's, only regular
/// files inside are removed, through its descriptor.
pub fn remove_stale(dir: BorrowedFd<'_>, name: &OsStr, shown: &Path) -> Result<()> {
    safefs::remove_dir_by_fd(dir, name, Some(euid())).at(shown)
}

/// Makes a private staging directory `prefix`PID-<random> in `parent`.
fn make_work(parent: BorrowedFd<'_>, prefix: &str, shown: &Path) -> Result<(OsString, OwnedFd)> {
    let pid = std::process::id();
    let mut last = None;
    for _ in 0..8 {
        let rand = safefs::random_hex().at(shown)?;
        let name = OsString::from(format!("{prefix}{pid}-{rand}"));
        match safefs::mkdir_private(parent, &name) {
            Ok(fd) => return Ok((name, fd)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(Error::io(shown.join(&name), e)),
        }
    }
    Err(Error::io(
        shown,
        last.unwrap_or_else(|| std::io::Error::other("no staging name")),
    ))
}

fn parent_of(p: &Path) -> PathBuf {
    match p.parent() {
        Some(q) if !q.as_os_str().is_empty() => q.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

static DURABLE: AtomicBool = AtomicBool::new(true);

/// Whether images are synced to disk before they count as written (the
/// default; see the module documentation).
pub fn set_durable(yes: bool) {
    DURABLE.store(yes, Ordering::Relaxed);
}

pub fn durable() -> bool {
    DURABLE.load(Ordering::Relaxed)
}

/// Threads of [`sync_files_at`], and files each one holds open at a time.
const SYNC_THREADS: usize = 16;
const SYNC_WINDOW: usize = 32;

/// Syncs the files `names` of `dir` (`work`: its path, for errors), all
/// at once: up to [`SYNC_THREADS`] threads each take a share of the
/// files, start writeback of a window of them, then fsync each one. Every
/// fsync still returns only once its file is durable, but fsyncs that run
/// together share the file system's journal commit and the device's
/// cache flush (ext4 here: 13 files synced one after the other cost 13
/// flushes, 4-8 ms each under load), so a dump of many small images
/// waits for about one flush instead of one per file.
fn sync_files_at(dir: BorrowedFd<'_>, names: &[String], work: &Path) -> Result<()> {
    if !durable() {
        return Ok(());
    }
    let per = names.len().div_ceil(SYNC_THREADS).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = names
            .chunks(per)
            .map(|part| {
                s.spawn(move || -> Result<()> {
                    for window in part.chunks(SYNC_WINDOW) {
                        let mut fds = Vec::with_capacity(window.len());
                        for n in window {
                            let shown = work.join(n);
                            let fd =
                                safefs::open_beneath(dir, n, OFlags::RDONLY | OFlags::NONBLOCK, 0)
                                    .at(&shown)?;
                            // Only a hint: the fsync is what counts.
                            let _ = crate::sys::mem::start_writeback(&fd, 0, 0);
                            fds.push((fd, shown));
                        }
                        for (fd, shown) in &fds {
                            safefs::sync(fd).at(shown)?;
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect::<Result<Vec<()>>>()
            .map(drop)
    })
}

impl Staging {
    /// Prepares the staging directory for a dump into `final_dir`.
    pub fn begin(final_dir: &Path) -> Result<Staging> {
        let (pfd, name) = match safefs::open_parent_dir(final_dir) {
            Ok(x) => x,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let parent = parent_of(final_dir);
                safefs::make_dirs(&parent).at(&parent)?;
                safefs::open_parent_dir(final_dir).at(final_dir)?
            }
            Err(e) => return Err(Error::io(final_dir, e)),
        };
        let existing = if name == "." {
            Some(FileType::Directory)
        } else {
            match safefs::lstatat(&pfd, &name) {
                Ok(st) => Some(safefs::file_type(&st)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(Error::io(final_dir, e)),
            }
        };
        let (mode, parent, prefix, shown_parent) = match existing {
            Some(FileType::Directory) => {
                let dfd = if name == "." {
                    rustix::fs::openat(
                        &pfd,
                        ".",
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                        rustix::fs::Mode::empty(),
                    )
                    .map_err(|e| Error::io(final_dir, e.into()))?
                } else {
                    safefs::openat_nofollow(&pfd, &name, OFlags::RDONLY | OFlags::DIRECTORY, 0)
                        .at(final_dir)?
                };
                if let Ok(st) = rustix::fs::fstat(&dfd) {
                    if let Err(why) = safefs::check_trusted(&st) {
                        warn!(
                            "{}: the directory is {why}; restore and show will refuse \
                             this checkpoint unless given --allow-foreign-images",
                            final_dir.display()
                        );
                    }
                }
                clean_stale(dfd.as_fd(), final_dir, TMP_TAG);
                (
                    Mode::Inside,
                    dfd,
                    TMP_TAG.to_string(),
                    final_dir.to_path_buf(),
                )
            }
            Some(FileType::Symlink) => {
                return Err(Error::Usage(format!(
                    "{}: {}",
                    final_dir.display(),
                    safefs::SYMLINK_MSG
                )))
            }
            Some(_) => {
                return Err(Error::Usage(format!(
                    "{}: exists and is not a directory",
                    final_dir.display()
                )))
            }
            None => {
                let n = name.to_str().ok_or_else(|| {
                    Error::Usage(format!("{}: not a directory name", final_dir.display()))
                })?;
                let prefix = format!(".{n}{TMP_TAG}");
                let shown = parent_of(final_dir);
                clean_stale(pfd.as_fd(), &shown, &prefix);
                (Mode::Beside, pfd, prefix, shown)
            }
        };
        let (work_name, wfd) = make_work(parent.as_fd(), &prefix, &shown_parent)?;
        let work = shown_parent.join(&work_name);
        Ok(Staging {
            final_dir: final_dir.to_path_buf(),
            dir: ImageDir::from_fd(wfd, &work, final_dir).synced_at_commit(),
            work,
            mode,
            parent,
            work_name,
            final_name: name,
            moved: Vec::new(),
            committed: false,
        })
    }

    /// The directory that holds the staging directory, and the staging
    /// directory's name in it: what the guardian needs to remove it
    /// through a descriptor if the dumper dies ([`remove_stale`]).
    pub fn parent_and_name(&self) -> (BorrowedFd<'_>, &OsStr) {
        (self.parent.as_fd(), &self.work_name)
    }

    /// Where the images are written until [`Staging::commit`].
    pub fn dir(&self) -> &ImageDir {
        &self.dir
    }

    /// The staging directory itself.
    pub fn work_path(&self) -> &Path {
        &self.work
    }

    /// `p` with the staging directory replaced by `DIR`: the name the user
    /// knows, for error messages.
    pub fn user_path(&self, p: &Path) -> PathBuf {
        match p.strip_prefix(&self.work) {
            Ok(rest) => self.final_dir.join(rest),
            Err(_) => p.to_path_buf(),
        }
    }

    /// Syncs every file and moves the images into place (see the module
    /// documentation). The staging directory must hold `inventory.img`.
    pub fn commit(mut self) -> Result<()> {
        let files: Vec<String> = self.dir.entries()?.into_iter().map(|(n, _)| n).collect();
        sync_files_at(self.dir.fd(), &files, &self.work)?;
        if !files.iter().any(|f| f == names::INVENTORY) {
            return Err(Error::image(
                self.work.join(names::INVENTORY),
                "missing: nothing to commit",
            ));
        }
        if durable() {
            self.dir.sync()?;
        }
        match self.mode {
            Mode::Beside => self.commit_beside()?,
            Mode::Inside => self.commit_inside(&files)?,
        }
        self.committed = true;
        Ok(())
    }

    fn commit_beside(&self) -> Result<()> {
        use rustix::fs::{renameat, renameat_with, RenameFlags};
        match renameat_with(
            &self.parent,
            &self.work_name,
            &self.parent,
            &self.final_name,
            RenameFlags::NOREPLACE,
        ) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) | Err(rustix::io::Errno::NOTEMPTY) => {
                return Err(Error::io(
                    &self.final_dir,
                    std::io::Error::other("appeared while the dump was written; not replaced"),
                ))
            }
            // A file system without renameat2 flags.
            Err(rustix::io::Errno::INVAL)
                if safefs::lstatat(&self.parent, &self.final_name).is_err() =>
            {
                renameat(
                    &self.parent,
                    &self.work_name,
                    &self.parent,
                    &self.final_name,
                )
                .map_err(|e| Error::io(&self.final_dir, e.into()))?
            }
            Err(e) => return Err(Error::io(&self.final_dir, e.into())),
        }
        if !durable() {
            return Ok(());
        }
        safefs::sync(&self.parent).at(parent_of(&self.final_dir))
    }

    fn commit_inside(&mut self, files: &[String]) -> Result<()> {
        let d = &self.final_dir;
        let dfd = self.parent.as_fd();
        // The old checkpoint stops being one before any file of it changes.
        let old_inv = d.join(names::INVENTORY);
        match rustix::fs::unlinkat(dfd, names::INVENTORY, AtFlags::empty()) {
            Ok(()) => safefs::sync(dfd).at(d)?,
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(Error::io(&old_inv, e.into())),
        }
        // Old images: regular files only, by the directory's descriptor.
        safefs::remove_regular_files(dfd, |n| {
            n.to_str()
                .is_some_and(|n| is_image_name(n) && !files.iter().any(|f| f == n))
        })
        .at(d)?;
        let wfd = self.dir.fd();
        for name in files.iter().filter(|n| n.as_str() != names::INVENTORY) {
            let to = d.join(name);
            rustix::fs::renameat(wfd, name.as_str(), dfd, name.as_str())
                .map_err(|e| Error::io(&to, e.into()))?;
            self.moved.push(name.clone());
        }
        safefs::sync(dfd).at(d)?;
        rustix::fs::renameat(wfd, names::INVENTORY, dfd, names::INVENTORY)
            .map_err(|e| Error::io(&old_inv, e.into()))?;
        safefs::sync(dfd).at(d)?;
        if let Err(e) = rustix::fs::unlinkat(dfd, &self.work_name, AtFlags::REMOVEDIR) {
            warn!("cannot remove {}: {e}", self.work.display());
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        for n in &self.moved {
            let _ = rustix::fs::unlinkat(&self.parent, n.as_str(), AtFlags::empty());
        }
        if let Err(e) = safefs::remove_dir_by_fd(&self.parent, &self.work_name, Some(euid())) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!("cannot remove {}: {e}", self.work.display());
            }
        }
    }
}

/// Whether `name` is a staging name (for tests and prune).
pub fn is_staging_name(name: &OsStr) -> bool {
    let b = name.as_bytes();
    b.starts_with(b".") && name.to_str().is_some_and(|n| n.contains(TMP_TAG))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::proto::{Inventory, Pstree};
    use crate::image::ImageType;

    fn tmp(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("cairn-staging-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    fn write_some(s: &Staging, root: u32) {
        s.dir()
            .write(ImageType::Pstree, names::PSTREE, &Pstree::new())
            .unwrap();
        let mut inv = Inventory::new();
        inv.root_pid = root;
        s.dir().write_inventory(&mut inv).unwrap();
    }

    fn entries(p: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn new_dir_appears_whole() {
        let t = tmp("new");
        let d = t.join("images");
        let s = Staging::begin(&d).unwrap();
        write_some(&s, 7);
        assert!(!d.exists(), "visible before the commit");
        s.commit().unwrap();
        assert_eq!(entries(&d), ["inventory.img", "pstree.img"]);
        assert_eq!(entries(&t), ["images"]);
        let (_, inv) = ImageDir::load(&d).unwrap();
        assert_eq!(inv.root_pid, 7);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // Missing parents are made (0700).
        let deep = t.join("a/b/images");
        let s = Staging::begin(&deep).unwrap();
        write_some(&s, 7);
        s.commit().unwrap();
        assert!(ImageDir::load(&deep).is_ok());
        let _ = std::fs::remove_dir_all(&t);
    }

    #[test]
    fn existing_dir_is_replaced_inside_and_kept() {
        let t = tmp("inside");
        let d = t.join("images");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("notes.txt"), "mine").unwrap();
        std::fs::write(d.join("core-99.img"), "old").unwrap();
        let s = Staging::begin(&d).unwrap();
        write_some(&s, 8);
        // The old contents are untouched until the commit.
        assert!(d.join("core-99.img").exists());
        s.commit().unwrap();
        assert_eq!(entries(&d), ["inventory.img", "notes.txt", "pstree.img"]);
        assert_eq!(ImageDir::load(&d).unwrap().1.root_pid, 8);
        let _ = std::fs::remove_dir_all(&t);
    }

    #[test]
    fn dropped_staging_leaves_nothing() {
        let t = tmp("drop");
        let d = t.join("images");
        {
            let s = Staging::begin(&d).unwrap();
            write_some(&s, 9);
        }
        assert_eq!(entries(&t), Vec::<String>::new());
        std::fs::create_dir(&d).unwrap();
        {
            let s = Staging::begin(&d).unwrap();
            write_some(&s, 9);
        }
        assert_eq!(entries(&d), Vec::<String>::new());
        let _ = std::fs::remove_dir_all(&t);
    }

    #[test]
    fn stale_staging_of_a_dead_dumper_is_removed() {
        let t = tmp("stale");
        let d = t.join("images");
        // pid_max is at most 2^22: this pid never runs.
        let stale = t.join(".images.cairn-tmp-99999999");
        std::fs::create_dir(&stale).unwrap();
        std::fs::write(stale.join("pages.img"), "x").unwrap();
        let stale_new = t.join(".images.cairn-tmp-99999998-0123456789abcdef");
        std::fs::create_dir(&stale_new).unwrap();
        std::fs::write(stale_new.join("pages.img"), "x").unwrap();
        let s = Staging::begin(&d).unwrap();
        assert!(!stale.exists());
        assert!(!stale_new.exists());
        // PID-<16 hex digits>, unpredictable.
        let name = s.work_path().file_name().unwrap().to_str().unwrap();
        let rest = name
            .strip_prefix(&format!(".images.cairn-tmp-{}-", std::process::id()))
            .unwrap();
        assert!(rest.len() == 16 && rest.bytes().all(|b| b.is_ascii_hexdigit()));
        drop(s);
        assert_eq!(entries(&t), Vec::<String>::new());
        let _ = std::fs::remove_dir_all(&t);
    }

    /// Links planted at staging names (old predictable ones and dead
    /// dumpers' ones) are neither followed nor removed, and whatever they
    /// point to is untouched; so is a stale directory that is not ours.
    #[test]
    fn planted_links_and_foreign_dirs_are_left_alone() {
        let t = tmp("planted");
        let victim = t.join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::fs::write(victim.join("precious"), "keep").unwrap();
        std::fs::write(victim.join("core-1.img"), "keep").unwrap();
        let pid = std::process::id();
        for n in [
            format!(".images.cairn-tmp-{pid}"),
            ".images.cairn-tmp-99999997".to_string(),
            ".images.cairn-tmp-99999996-0123456789abcdef".to_string(),
        ] {
            std::os::unix::fs::symlink(&victim, t.join(n)).unwrap();
        }
        let d = t.join("images");
        let s = Staging::begin(&d).unwrap();
        write_some(&s, 11);
        s.commit().unwrap();
        assert_eq!(entries(&victim), ["core-1.img", "precious"]);
        assert_eq!(entries(&t).len(), 5, "{:?}", entries(&t));
        // Inside an existing DIR: a link named like an old image is not
        // followed when old images are removed.
        std::os::unix::fs::symlink(victim.join("core-1.img"), d.join("core-2.img")).unwrap();
        std::os::unix::fs::symlink(&victim, d.join(".cairn-tmp-99999995")).unwrap();
        let s = Staging::begin(&d).unwrap();
        write_some(&s, 12);
        s.commit().unwrap();
        assert_eq!(entries(&victim), ["core-1.img", "precious"]);
        assert_eq!(std::fs::read(victim.join("core-1.img")).unwrap(), b"keep");
        assert_eq!(ImageDir::load(&d).unwrap().1.root_pid, 12);
        // A link at DIR itself is refused.
        let l = t.join("link");
        std::os::unix::fs::symlink(&victim, &l).unwrap();
        let e = Staging::begin(&l).err().unwrap().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        if rustix::process::geteuid().is_root() {
            let foreign = t.join(".images.cairn-tmp-99999994-0123456789abcdef");
            std::fs::create_dir(&foreign).unwrap();
            std::fs::write(foreign.join("x.img"), "theirs").unwrap();
            std::os::unix::fs::chown(&foreign, Some(64123), Some(64123)).unwrap();
            let _ = std::fs::remove_dir_all(&d);
            drop(Staging::begin(&d).unwrap());
            assert!(foreign.join("x.img").exists());
        }
        let _ = std::fs::remove_dir_all(&t);
    }

    #[test]
    fn a_dir_that_appears_meanwhile_is_not_replaced() {
        let t = tmp("race");
        let d = t.join("images");
        let s = Staging::begin(&d).unwrap();
        write_some(&s, 10);
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("x.img"), "other").unwrap();
        let e = s.commit().unwrap_err().to_string();
        assert!(e.contains("appeared"), "{e}");
        assert_eq!(entries(&d), ["x.img"]);
        assert_eq!(entries(&t), ["images"]);
        let _ = std::fs::remove_dir_all(&t);
    }
}
