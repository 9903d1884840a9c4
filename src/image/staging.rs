//! Writing an image directory so that it is complete or visibly not.
//!
//! A dump never writes into `DIR` directly. It writes into a staging
//! directory, syncs every file and the directory, and only then moves the
//! result into place:
//!
//! - `DIR` does not exist: the staging directory is
//!   `PARENT/.NAME.cairn-tmp-PID` (mode 0700, on the same file system), and
//!   it is renamed to `DIR` in one step (`renameat2(RENAME_NOREPLACE)`):
//!   `DIR` either does not exist or is complete.
//! - `DIR` exists (an empty directory made for the dump, as CRIU users
//!   do, a previous checkpoint, a mount point): it is kept as it is (owner,
//!   mode, mount), the staging directory is `DIR/.cairn-tmp-PID`, and at
//!   the end the old `inventory.img` is removed first, the old images, the
//!   new ones are renamed into `DIR`, and the new `inventory.img` comes
//!   last. A previous checkpoint in `DIR` stays valid until then; in
//!   between, `DIR` has no inventory and is refused as incomplete.
//!
//! A staging directory that is dropped without [`Staging::commit`] is
//! removed with everything in it, so a failed dump leaves nothing. One left
//! behind by a dumper that was killed is removed by the next dump into the
//! same place once its pid is gone. Paths recorded in images relative to
//! the directory are relative to `DIR` ([`ImageDir::final_path`]), and the
//! staging directory beside `DIR` is at the same depth.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::{is_image_name, names, ImageDir};
use crate::error::{Error, IoContext, Result};
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
    dir: ImageDir,
    /// Files already moved into `DIR` by a commit that then failed.
    moved: Vec<PathBuf>,
    committed: bool,
}

const TMP_TAG: &str = ".cairn-tmp-";

fn parent_of(p: &Path) -> PathBuf {
    match p.parent() {
        Some(q) if !q.as_os_str().is_empty() => q.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `prefix` followed by a pid that is not running: a staging directory
/// left behind by a dumper that died.
fn stale_pid(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|p| p.parse::<i32>().ok())
        .is_some_and(|pid| pid > 0 && !crate::sys::task::pid_exists(pid))
}

/// Removes a staging directory: only plain files inside it are removed, so
/// nothing that is not cairn's is ever touched.
fn remove_staging(p: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(p)? {
        let e = e?;
        if e.file_type()?.is_file() {
            std::fs::remove_file(e.path())?;
        }
    }
    std::fs::remove_dir(p)
}

fn clean_stale(in_dir: &Path, prefix: &str) {
    let Ok(rd) = std::fs::read_dir(in_dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if stale_pid(name, prefix) && e.file_type().is_ok_and(|t| t.is_dir()) {
            match remove_staging(&e.path()) {
                Ok(()) => warn!(
                    "removed {}, left behind by an interrupted dump",
                    e.path().display()
                ),
                Err(err) => warn!("cannot remove {}: {err}", e.path().display()),
            }
        }
    }
}

/// The staging directories directly in `dir` (`.NAME.cairn-tmp-PID`
/// beside an image directory, `.cairn-tmp-PID` inside one) whose dumper
/// is no longer running: what `cairn prune` removes.
pub fn stale_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| {
            let name = e.file_name();
            let Some(name) = name.to_str() else {
                return false;
            };
            name.starts_with('.')
                && name
                    .rfind(TMP_TAG)
                    .is_some_and(|i| stale_pid(&name[i..], TMP_TAG))
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// Removes a stale staging directory (plain files only, see
/// [`stale_in`]).
pub fn remove_stale(p: &Path) -> Result<()> {
    remove_staging(p).at(p)
}

fn sync_path(p: &Path) -> Result<()> {
    std::fs::File::open(p).and_then(|f| f.sync_all()).at(p)
}

impl Staging {
    /// Prepares the staging directory for a dump into `final_dir`.
    pub fn begin(final_dir: &Path) -> Result<Staging> {
        let pid = std::process::id();
        let (mode, work) = match std::fs::metadata(final_dir) {
            Ok(m) if m.is_dir() => {
                clean_stale(final_dir, TMP_TAG);
                (Mode::Inside, final_dir.join(format!("{TMP_TAG}{pid}")))
            }
            Ok(_) => {
                return Err(Error::Usage(format!(
                    "{}: exists and is not a directory",
                    final_dir.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let parent = parent_of(final_dir);
                let name = final_dir
                    .file_name()
                    .and_then(|n| n.to_str())
                    .ok_or_else(|| {
                        Error::Usage(format!("{}: not a directory name", final_dir.display()))
                    })?;
                if !parent.is_dir() {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(&parent)
                        .at(&parent)?;
                }
                let prefix = format!(".{name}{TMP_TAG}");
                clean_stale(&parent, &prefix);
                (Mode::Beside, parent.join(format!("{prefix}{pid}")))
            }
            Err(e) => return Err(Error::io(final_dir, e)),
        };
        if work.exists() {
            // Ours from an earlier run with the same pid (another boot).
            remove_staging(&work).at(&work)?;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&work)
            .at(&work)?;
        Ok(Staging {
            final_dir: final_dir.to_path_buf(),
            dir: ImageDir::at(&work, final_dir),
            work,
            mode,
            moved: Vec::new(),
            committed: false,
        })
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
        let mut files = Vec::new();
        for e in std::fs::read_dir(&self.work).at(&self.work)? {
            let e = e.at(&self.work)?;
            let p = e.path();
            sync_path(&p)?;
            if let Some(n) = e.file_name().to_str() {
                files.push(n.to_string());
            }
        }
        if !files.iter().any(|f| f == names::INVENTORY) {
            return Err(Error::image(
                self.work.join(names::INVENTORY),
                "missing: nothing to commit",
            ));
        }
        sync_path(&self.work)?;
        match self.mode {
            Mode::Beside => self.commit_beside()?,
            Mode::Inside => self.commit_inside(&files)?,
        }
        self.committed = true;
        Ok(())
    }

    fn commit_beside(&self) -> Result<()> {
        use rustix::fs::{renameat_with, RenameFlags, CWD};
        match renameat_with(
            CWD,
            &self.work,
            CWD,
            &self.final_dir,
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
            Err(rustix::io::Errno::INVAL) if !self.final_dir.exists() => {
                std::fs::rename(&self.work, &self.final_dir).at(&self.final_dir)?
            }
            Err(e) => return Err(Error::io(&self.final_dir, e.into())),
        }
        sync_path(&parent_of(&self.final_dir))
    }

    fn commit_inside(&mut self, files: &[String]) -> Result<()> {
        let d = &self.final_dir;
        // The old checkpoint stops being one before any file of it changes.
        let old_inv = d.join(names::INVENTORY);
        match std::fs::remove_file(&old_inv) {
            Ok(()) => sync_path(d)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&old_inv, e)),
        }
        for e in std::fs::read_dir(d).at(d)? {
            let e = e.at(d)?;
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if is_image_name(&name)
                && !files.contains(&name)
                && e.file_type().is_ok_and(|t| t.is_file())
            {
                std::fs::remove_file(e.path()).at(e.path())?;
            }
        }
        for name in files.iter().filter(|n| n.as_str() != names::INVENTORY) {
            let to = d.join(name);
            std::fs::rename(self.work.join(name), &to).at(&to)?;
            self.moved.push(to);
        }
        sync_path(d)?;
        std::fs::rename(self.work.join(names::INVENTORY), &old_inv).at(&old_inv)?;
        sync_path(d)?;
        if let Err(e) = std::fs::remove_dir(&self.work) {
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
        for p in &self.moved {
            let _ = std::fs::remove_file(p);
        }
        if let Err(e) = remove_staging(&self.work) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!("cannot remove {}: {e}", self.work.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::proto::{Inventory, Pstree};
    use crate::image::Kind;

    fn tmp(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("cairn-staging-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    fn write_some(s: &Staging, root: u32) {
        s.dir()
            .write(Kind::Pstree, names::PSTREE, &Pstree::new())
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
        let live = t.join(format!(".images.cairn-tmp-{}", std::process::id()));
        let s = Staging::begin(&d).unwrap();
        assert!(!stale.exists());
        assert_eq!(s.work_path(), live);
        drop(s);
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
