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

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cli::PruneArgs;
use crate::error::{Error, IoContext, Result};
use crate::image::proto::Inventory;
use crate::image::{names, ImageDir, Kind};

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

/// The inventory of `dir` if it is an image directory (see the module
/// documentation), else `None`.
pub fn image_dir_inventory(dir: &Path) -> Option<Inventory> {
    let real_dir = std::fs::symlink_metadata(dir).ok()?.is_dir();
    let inv_path = dir.join(names::INVENTORY);
    let real_inv = std::fs::symlink_metadata(&inv_path).ok()?.is_file();
    if !real_dir || !real_inv {
        return None;
    }
    let d = ImageDir::open(dir).ok()?;
    d.read::<Inventory>(Kind::Inventory, names::INVENTORY).ok()
}

/// The image directories `cairn prune DIR` considers: DIR itself, or the
/// ones directly inside it. An error if there are none.
pub fn candidates(dir: &Path) -> Result<Vec<(PathBuf, Inventory)>> {
    let md = std::fs::symlink_metadata(dir).at(dir)?;
    if md.file_type().is_symlink() {
        return Err(Error::Usage(format!(
            "{}: is a symbolic link; cairn prune does not follow links",
            dir.display()
        )));
    }
    if !md.is_dir() {
        return Err(Error::Usage(format!("{}: not a directory", dir.display())));
    }
    if let Some(inv) = image_dir_inventory(dir) {
        return Ok(vec![(dir.to_path_buf(), inv)]);
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).at(dir)? {
        let e = e.at(dir)?;
        // file_type() does not follow symbolic links.
        if !e.file_type().at(e.path())?.is_dir() {
            continue;
        }
        let p = e.path();
        if let Some(inv) = image_dir_inventory(&p) {
            out.push((p, inv));
        }
    }
    if out.is_empty() {
        return Err(Error::io(
            dir,
            std::io::Error::other("not a cairn image directory and holds none; nothing removed"),
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// What in `dir` is not a regular `*.img` file, if anything.
fn foreign_entry(dir: &Path) -> Result<Option<String>> {
    for e in std::fs::read_dir(dir).at(dir)? {
        let e = e.at(dir)?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !e.file_type().at(e.path())?.is_file() || !name.ends_with(".img") {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// Removes an image directory: the inventory first, then the other
/// images, then the (now empty) directory.
fn remove_image_dir(dir: &Path) -> Result<()> {
    let inv = dir.join(names::INVENTORY);
    std::fs::remove_file(&inv).at(&inv)?;
    for e in std::fs::read_dir(dir).at(dir)? {
        let p = e.at(dir)?.path();
        std::fs::remove_file(&p).at(&p)?;
    }
    std::fs::remove_dir(dir).at(dir)
}

/// `cairn prune`. Prints one line per directory removed (or, with
/// --dry-run, that would be removed) on stdout.
pub fn prune(args: &PruneArgs) -> Result<()> {
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let limit_ms = args.older_than.as_millis() as u64;
    // Staging directories of dumps that died (never checkpoints) go
    // whatever their age: in DIR and in the image directories in it.
    let mut swept = 0;
    let mut places = vec![dir.clone()];
    if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
        if let Ok(rd) = std::fs::read_dir(&dir) {
            places.extend(
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    for place in &places {
        for st in crate::image::staging::stale_in(place) {
            if args.dry_run {
                println!(
                    "would remove {} (left by an interrupted dump)",
                    st.display()
                );
            } else {
                crate::image::staging::remove_stale(&st)?;
                println!("removed {} (left by an interrupted dump)", st.display());
            }
            swept += 1;
        }
    }
    let found = match candidates(&dir) {
        Ok(c) => c,
        Err(_) if swept > 0 => Vec::new(),
        Err(e) => return Err(e),
    };
    for (p, inv) in found {
        if inv.dump_time_unix_ms == 0 {
            warn!(
                "{}: the inventory has no dump time; left alone",
                p.display()
            );
            continue;
        }
        let age_ms = now_ms.saturating_sub(inv.dump_time_unix_ms);
        let age = format_age(Duration::from_millis(age_ms));
        if age_ms <= limit_ms {
            info!("{}: {age} old, kept", p.display());
            continue;
        }
        if let Some(other) = foreign_entry(&p)? {
            warn!(
                "{}: holds {other:?}, which is not a cairn image; left alone",
                p.display()
            );
            continue;
        }
        if args.dry_run {
            println!("would remove {} ({age} old)", p.display());
        } else {
            remove_image_dir(&p)?;
            println!("removed {} ({age} old)", p.display());
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
        d.write(Kind::Inventory, names::INVENTORY, &inv).unwrap();
        d.write(
            Kind::Pstree,
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
        assert_eq!(c[0].0, t.join("img"));
        // The image directory itself.
        assert_eq!(candidates(&t.join("img")).unwrap().len(), 1);
        // Neither one nor holding any.
        assert!(candidates(&t.join("plain")).is_err());
        assert!(candidates(&t.join("link")).is_err());
        assert!(candidates(&t.join("file")).is_err());
        // Removal keeps nothing behind; a foreign file prevents it.
        assert_eq!(foreign_entry(&t.join("img")).unwrap(), None);
        remove_image_dir(&t.join("img")).unwrap();
        assert!(!t.join("img").exists());
        image_dir(&t.join("img2"), 1000);
        std::fs::write(t.join("img2/notes.txt"), b"mine").unwrap();
        assert_eq!(
            foreign_entry(&t.join("img2")).unwrap().as_deref(),
            Some("notes.txt")
        );
        let _ = std::fs::remove_dir_all(&t);
    }
}
