//! `cairn prune`: retention of checkpoints. The guide cairn follows has
//! administrators delete checkpoints after five days; `cairn prune` does
//! that, and nothing else.
//!
//! An *image directory* is a real directory (not a symbolic link) holding
//! a regular `inventory.img` that decodes as a cairn inventory; its age is
//! counted from the inventory's dump time. `cairn prune DIR` considers DIR
//! itself if it is an image directory, else the image directories directly
//! inside DIR (no deeper, no symbolic links followed). Anything else is
//! never touched, and an image directory that holds anything but regular
//! `*.img` files is left alone with a warning: cairn only deletes what a
//! dump wrote. The inventory goes first, so a half-removed directory is
//! never taken for a checkpoint again.
//!
//! Everything goes through descriptors ([`crate::sys::safefs`]): DIR and
//! each candidate are opened `O_DIRECTORY|O_NOFOLLOW`, the inventory is
//! read and the files removed through the candidate's descriptor, and the
//! empty directory is removed by name in its parent only if that name is
//! still the same directory. A directory swapped for a link meanwhile is
//! never followed.
//!
//! Chains: a layer that a kept checkpoint is built on (directly or through
//! other layers; see [`crate::image::chain`]) is kept, whatever its age,
//! with a line saying which layer needs it. A chain whose layers are all
//! old enough goes as a whole.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, FileType, OFlags};

use crate::error::{Error, IoContext, Result};
use crate::image::proto::Inventory;
use crate::image::{chain, names, ImageDir, ImageType};
use crate::sys::safefs;
use crate::{info, warn};

/// What `cairn prune` removes.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// An image directory, or a directory whose image directories are
    /// considered (default: the current directory).
    pub dir: Option<PathBuf>,
    /// Remove image directories whose dump is older than this.
    pub older_than: Duration,
    /// Only list what would be removed.
    pub dry_run: bool,
}

/// Parses an age: a number with `s`, `m`, `h`, `d` or `w` (a number alone
/// counts days): `5d`, `12h`, `90m`, `2w`, `0`.
pub fn parse_age(s: &str) -> std::result::Result<Duration, String> {
    let bad = || format!("invalid age {s:?} (expected a number with s, m, h, d or w, e.g. 5d)");
    let t = s.trim();
    let digits = t.bytes().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return Err(bad());
    }
    let n: u64 = t[..digits].parse().map_err(|_| bad())?;
    let unit: u64 = match &t[digits..] {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "" | "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(unit).map(Duration::from_secs).ok_or_else(bad)
}

/// `d` as "6d 2h", "3h 5m", "42s".
pub fn format_age(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {mins}m")
    } else if mins > 0 {
        format!("{mins}m {}s", s % 60)
    } else {
        format!("{s}s")
    }
}

/// A candidate for removal: an image directory opened (never through a
/// symbolic link) relative to the directory that holds it. Everything
/// about it is read, and everything in it removed, through `fd`.
pub struct Candidate {
    pub path: PathBuf,
    parent: Arc<OwnedFd>,
    name: OsString,
    fd: OwnedFd,
    pub inventory: Inventory,
    /// Device and inode of the directory (fstat of `fd`).
    id: (u64, u64),
}

impl std::fmt::Debug for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Candidate")
            .field("path", &self.path)
            .finish()
    }
}

fn dir_id(fd: impl AsFd) -> Option<(u64, u64)> {
    rustix::fs::fstat(fd).ok().map(|st| (st.st_dev, st.st_ino))
}

/// Opens `name` in `parent` as an image directory (see the module
/// documentation), else `None`.
fn open_candidate(parent: &Arc<OwnedFd>, name: &OsStr, path: PathBuf) -> Option<Candidate> {
    let fd =
        safefs::openat_nofollow(&**parent, name, OFlags::RDONLY | OFlags::DIRECTORY, 0).ok()?;
    let id = dir_id(&fd)?;
    let dup = fd.try_clone().ok()?;
    let d = ImageDir::from_fd(dup, &path, &path);
    let inventory = d
        .read::<Inventory>(ImageType::Inventory, names::INVENTORY)
        .ok()?;
    Some(Candidate {
        path,
        parent: parent.clone(),
        name: name.to_os_string(),
        fd,
        inventory,
        id,
    })
}

/// The error for a DIR that cannot be opened: a usage error for a link
/// or a file.
fn dir_error(dir: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotADirectory {
        Error::Usage(format!("{}: not a directory", dir.display()))
    } else if e.to_string() == safefs::SYMLINK_MSG {
        Error::Usage(format!(
            "{}: {}; cairn prune does not follow links",
            dir.display(),
            safefs::SYMLINK_MSG
        ))
    } else {
        Error::io(dir, e)
    }
}

/// The image directories `cairn prune DIR` considers: DIR itself, or the
/// ones directly inside it. An error if there are none.
pub fn candidates(dir: &Path) -> Result<Vec<Candidate>> {
    let (parent, name) = safefs::open_parent_dir(dir).at(dir)?;
    let parent = Arc::new(parent);
    let dfd = safefs::openat_nofollow(&*parent, &name, OFlags::RDONLY | OFlags::DIRECTORY, 0)
        .map_err(|e| dir_error(dir, e))?;
    if name != "." {
        if let Some(c) = open_candidate(&parent, &name, dir.to_path_buf()) {
            return Ok(vec![c]);
        }
    }
    let dfd = Arc::new(dfd);
    let mut out = Vec::new();
    for (n, t) in safefs::list(&*dfd).at(dir)? {
        if t.is_some_and(|t| t != FileType::Directory) {
            continue;
        }
        if let Some(c) = open_candidate(&dfd, &n, dir.join(&n)) {
            out.push(c);
        }
    }
    if out.is_empty() {
        return Err(Error::io(
            dir,
            std::io::Error::other("not a cairn image directory and holds none; nothing removed"),
        ));
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// What in the directory is not a regular `*.img` file, if anything.
fn foreign_entry(fd: impl AsFd, shown: &Path) -> Result<Option<String>> {
    let fd = fd.as_fd();
    for (n, _) in safefs::list(fd).at(shown)? {
        let name = n.to_string_lossy().into_owned();
        let st = safefs::lstatat(fd, &n).at(shown.join(&n))?;
        if safefs::file_type(&st) != FileType::RegularFile || !name.ends_with(".img") {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// Removes an image directory through its descriptor: the inventory
/// first, then the other images, then the (now empty) directory by name
/// in its parent, if that name still is this directory.
fn remove_image_dir(c: &Candidate) -> Result<()> {
    let inv = c.path.join(names::INVENTORY);
    rustix::fs::unlinkat(&c.fd, names::INVENTORY, AtFlags::empty())
        .map_err(|e| Error::io(&inv, e.into()))?;
    let left = safefs::remove_regular_files(&c.fd, |_| true).at(&c.path)?;
    if let Some(n) = left.first() {
        return Err(Error::io(
            &c.path,
            std::io::Error::other(format!("holds {n:?}, which is not a cairn image; left")),
        ));
    }
    let now = safefs::lstatat(&*c.parent, &c.name).at(&c.path)?;
    if (now.st_dev, now.st_ino) != c.id {
        return Err(Error::io(
            &c.path,
            std::io::Error::other("was replaced while it was removed; the new one is left alone"),
        ));
    }
    rustix::fs::unlinkat(&*c.parent, &c.name, AtFlags::REMOVEDIR)
        .map_err(|e| Error::io(&c.path, e.into()))
}

/// For each candidate, the candidate that is its parent layer, if any:
/// the directory its inventory names (same device and inode), or else
/// one whose layer id is the parent layer id it records.
fn parents(found: &[Candidate]) -> Vec<Option<usize>> {
    found
        .iter()
        .map(|c| {
            let p = chain::parent_path(&c.path, &c.inventory)?;
            let by_id = safefs::open_dir(&p).ok().and_then(dir_id);
            found.iter().position(|o| Some(o.id) == by_id).or_else(|| {
                let want = &c.inventory.parent_layer_id;
                (!want.is_empty())
                    .then(|| found.iter().position(|o| &o.inventory.layer_id == want))
                    .flatten()
            })
        })
        .collect()
}

/// `cairn prune`. Prints one line per directory removed (or, with
/// --dry-run, that would be removed) on stdout, and one per directory
/// kept only because a newer layer that is kept is built on it.
pub fn prune(args: &PruneOptions) -> Result<()> {
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let limit_ms = args.older_than.as_millis() as u64;
    let dfd = safefs::open_dir(&dir).map_err(|e| dir_error(&dir, e))?;
    // Staging directories of dumps that died (never checkpoints) go
    // whatever their age: in DIR and in the directories in it. Only ours,
    // through descriptors.
    let mut swept = 0;
    let mut places: Vec<(OwnedFd, PathBuf)> = Vec::new();
    if let Ok(entries) = safefs::list(&dfd) {
        for (n, t) in entries {
            if t.is_some_and(|t| t != FileType::Directory) {
                continue;
            }
            if let Ok(fd) = safefs::openat_nofollow(&dfd, &n, OFlags::RDONLY | OFlags::DIRECTORY, 0)
            {
                places.push((fd, dir.join(&n)));
            }
        }
    }
    places.insert(0, (dfd, dir.clone()));
    for (fd, place) in &places {
        for st in crate::image::staging::stale_in(fd.as_fd()) {
            let shown = place.join(&st);
            if args.dry_run {
                println!(
                    "would remove {} (left by an interrupted dump)",
                    shown.display()
                );
            } else {
                crate::image::staging::remove_stale(fd.as_fd(), &st, &shown)?;
                println!("removed {} (left by an interrupted dump)", shown.display());
            }
            swept += 1;
        }
    }
    drop(places);
    let found = match candidates(&dir) {
        Ok(c) => c,
        Err(_) if swept > 0 => Vec::new(),
        Err(e) => return Err(e),
    };
    // Which go: old enough and holding only images; then everything a
    // kept layer is built on (directly or not) stays.
    let mut keep = vec![false; found.len()];
    let mut ages = Vec::with_capacity(found.len());
    for (i, c) in found.iter().enumerate() {
        let p = &c.path;
        let inv = &c.inventory;
        let age_ms = now_ms.saturating_sub(inv.dump_time_unix_ms);
        ages.push(format_age(Duration::from_millis(age_ms)));
        if inv.dump_time_unix_ms == 0 {
            warn!(
                "{}: the inventory has no dump time; left alone",
                p.display()
            );
            keep[i] = true;
        } else if age_ms <= limit_ms {
            info!("{}: {} old, kept", p.display(), ages[i]);
            keep[i] = true;
        } else if let Some(other) = foreign_entry(&c.fd, p)? {
            warn!(
                "{}: holds {other:?}, which is not a cairn image; left alone",
                p.display()
            );
            keep[i] = true;
        }
    }
    let parent_of = parents(&found);
    let mut work: Vec<usize> = (0..found.len()).filter(|&i| keep[i]).collect();
    while let Some(i) = work.pop() {
        if let Some(p) = parent_of[i] {
            if !keep[p] {
                keep[p] = true;
                println!(
                    "kept {} ({} old): {} is built on it",
                    found[p].path.display(),
                    ages[p],
                    found[i].path.display()
                );
                work.push(p);
            }
        }
    }
    for (i, c) in found.iter().enumerate() {
        if keep[i] {
            continue;
        }
        if args.dry_run {
            println!("would remove {} ({} old)", c.path.display(), ages[i]);
        } else {
            remove_image_dir(c)?;
            println!("removed {} ({} old)", c.path.display(), ages[i]);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_parse() {
        assert_eq!(parse_age("5d"), Ok(Duration::from_secs(5 * 86_400)));
        assert_eq!(parse_age("5"), Ok(Duration::from_secs(5 * 86_400)));
        assert_eq!(parse_age("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_age("90m"), Ok(Duration::from_secs(90 * 60)));
        assert_eq!(parse_age("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_age("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse_age("0"), Ok(Duration::ZERO));
        for bad in ["", "d", "5x", "-5d", "1.5d", "5 d", "99999999999999999999w"] {
            assert!(parse_age(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn ages_print() {
        assert_eq!(format_age(Duration::from_secs(42)), "42s");
        assert_eq!(format_age(Duration::from_secs(125)), "2m 5s");
        assert_eq!(format_age(Duration::from_secs(3 * 3600 + 300)), "3h 5m");
        assert_eq!(format_age(Duration::from_secs(6 * 86_400 + 7200)), "6d 2h");
    }

    fn tmp(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("cairn-prune-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    fn image_dir(p: &Path, ms: u64) {
        let d = ImageDir::create(p).unwrap();
        let mut inv = Inventory::new();
        inv.format_version = crate::image::FORMAT_VERSION;
        inv.dump_time_unix_ms = ms;
        d.write(ImageType::Inventory, names::INVENTORY, &inv)
            .unwrap();
        d.write(
            ImageType::Pstree,
            names::PSTREE,
            &crate::image::proto::Pstree::new(),
        )
        .unwrap();
    }

    #[test]
    fn only_image_dirs_are_candidates() {
        let t = tmp("cand");
        image_dir(&t.join("img"), 1000);
        std::fs::create_dir(t.join("plain")).unwrap();
        std::fs::write(t.join("plain/inventory.img"), b"not an image").unwrap();
        std::os::unix::fs::symlink(t.join("img"), t.join("link")).unwrap();
        std::fs::write(t.join("file"), b"x").unwrap();
        let c = candidates(&t).unwrap();
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].path, t.join("img"));
        // The image directory itself.
        assert_eq!(candidates(&t.join("img")).unwrap().len(), 1);
        // Neither one nor holding any.
        assert!(candidates(&t.join("plain")).is_err());
        assert!(candidates(&t.join("link")).is_err());
        assert!(candidates(&t.join("file")).is_err());
        // Removal keeps nothing behind; a foreign file prevents it.
        let c = candidates(&t.join("img")).unwrap();
        assert_eq!(foreign_entry(&c[0].fd, &c[0].path).unwrap(), None);
        remove_image_dir(&c[0]).unwrap();
        assert!(!t.join("img").exists());
        image_dir(&t.join("img2"), 1000);
        std::fs::write(t.join("img2/notes.txt"), b"mine").unwrap();
        let c = candidates(&t.join("img2")).unwrap();
        assert_eq!(
            foreign_entry(&c[0].fd, &c[0].path).unwrap().as_deref(),
            Some("notes.txt")
        );
        let _ = std::fs::remove_dir_all(&t);
    }

    /// ch/1 <- ch/2 <- ch/3 (each names its parent), ch/4 alone: with
    /// ch/3 young, ch/1 and ch/2 stay (ch/3 needs them), old ch/4 goes;
    /// once every layer is old the chain goes as a whole.
    #[test]
    fn layers_kept_layers_need_are_kept() {
        let t = tmp("chain");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let layer = |n: &str, parent: Option<&str>, age_ms: u64| {
            let d = ImageDir::create(&t.join(n)).unwrap();
            let mut inv = Inventory::new();
            inv.format_version = crate::image::FORMAT_VERSION;
            inv.dump_time_unix_ms = now - age_ms;
            inv.layer_id = format!("id-{n}");
            if let Some(p) = parent {
                inv.parent_dir = format!("../{p}");
                inv.parent_layer_id = format!("id-{p}");
            }
            d.write(ImageType::Inventory, names::INVENTORY, &inv)
                .unwrap();
        };
        layer("1", None, 10 * 86_400_000);
        layer("2", Some("1"), 9 * 86_400_000);
        layer("3", Some("2"), 1000);
        layer("4", None, 10 * 86_400_000);
        let args = |age: u64| PruneOptions {
            dir: Some(t.clone()),
            older_than: Duration::from_secs(age),
            dry_run: false,
        };
        prune(&args(86_400)).unwrap();
        for n in ["1", "2", "3"] {
            assert!(t.join(n).join(names::INVENTORY).is_file(), "{n} removed");
        }
        assert!(!t.join("4").exists());
        prune(&args(0)).unwrap();
        assert_eq!(std::fs::read_dir(&t).unwrap().count(), 0);
        let _ = std::fs::remove_dir_all(&t);
    }
}
