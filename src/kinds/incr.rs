//! Memory in incremental checkpoints: what the parent layer holds for
//! each owner, how this layer learns which pages changed since, and the
//! per-page hashes of owners compared by content.
//!
//! A page may be recorded as "in parent" (`RUN_PARENT`) only when the
//! parent layer's pagemap of the same owner covers its address and the
//! page provably did not change since that layer was taken: by dirty
//! tracking (soft-dirty bit clear, or uffd write-protection still set), or
//! because its content hash equals the parent's. Everything else is read
//! again; a doubt always costs bytes, never correctness.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::image::chain::{self, Chain};
use crate::image::pages::PageStoreReader;
use crate::image::proto::{Inventory, PageHashRun, PageHashes, Pagemap, Pstree};
use crate::image::{names, ImageDir, ImageType};
use crate::sys::PAGE_SIZE;

/// Bytes of one page hash (xxh3-128, little-endian).
pub const HASH_LEN: usize = 16;
pub type PageHash = [u8; HASH_LEN];

pub fn page_hash(page: &[u8]) -> PageHash {
    xxhash_rust::xxh3::xxh3_128(page).to_le_bytes()
}

/// Sorted, non-overlapping address ranges [start, end).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    /// From ranges in any order; overlapping or touching ones merge.
    pub fn new(mut v: Vec<(u64, u64)>) -> Ranges {
        v.retain(|(s, e)| s < e);
        v.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
        for (s, e) in v {
            match out.last_mut() {
                Some(l) if s <= l.1 => l.1 = l.1.max(e),
                _ => out.push((s, e)),
            }
        }
        Ranges(out)
    }

    pub fn contains(&self, addr: u64) -> bool {
        let i = self.0.partition_point(|&(_, e)| e <= addr);
        self.0.get(i).is_some_and(|&(s, _)| s <= addr)
    }

    /// Whether all of [start, end) is inside one range.
    pub fn covers(&self, start: u64, end: u64) -> bool {
        let i = self.0.partition_point(|&(_, e)| e <= start);
        self.0.get(i).is_some_and(|&(s, e)| s <= start && end <= e)
    }

    pub fn iter(&self) -> impl Iterator<Item = &(u64, u64)> {
        self.0.iter()
    }

    pub fn pages(&self) -> u64 {
        self.0.iter().map(|(s, e)| (e - s) / PAGE_SIZE).sum()
    }
}

/// Pages covered by any run of a pagemap (data, zero or parent).
pub fn held(pm: &Pagemap) -> Ranges {
    Ranges::new(
        pm.runs
            .iter()
            .map(|r| {
                (
                    r.addr,
                    r.addr.saturating_add(r.nr_pages.saturating_mul(PAGE_SIZE)),
                )
            })
            .collect(),
    )
}

/// The page hashes of one owner, by address.
#[derive(Debug, Default, Clone)]
pub struct Hashes {
    /// (first address, hashes of consecutive pages), sorted.
    runs: Vec<(u64, Vec<PageHash>)>,
}

impl Hashes {
    pub fn from_proto(p: &PageHashes, path: &Path) -> Result<Hashes> {
        let mut runs = Vec::with_capacity(p.runs.len());
        for r in &p.runs {
            if r.hashes.len() as u64 != r.nr_pages.saturating_mul(HASH_LEN as u64) {
                return Err(Error::image(
                    path,
                    format!("hash run at {:#x}: wrong length", r.addr),
                ));
            }
            let hs = r
                .hashes
                .chunks_exact(HASH_LEN)
                .map(|c| {
                    let mut h = [0u8; HASH_LEN];
                    h.copy_from_slice(c);
                    h
                })
                .collect();
            runs.push((r.addr, hs));
        }
        runs.sort_by_key(|r| r.0);
        Ok(Hashes { runs })
    }

    /// From (address, hash) pairs in any order.
    pub fn from_pages(mut pages: Vec<(u64, PageHash)>) -> Hashes {
        pages.sort_unstable_by_key(|p| p.0);
        pages.dedup_by_key(|p| p.0);
        let mut runs: Vec<(u64, Vec<PageHash>)> = Vec::new();
        for (a, h) in pages {
            match runs.last_mut() {
                Some((s, v)) if *s + v.len() as u64 * PAGE_SIZE == a => v.push(h),
                _ => runs.push((a, vec![h])),
            }
        }
        Hashes { runs }
    }

    pub fn get(&self, addr: u64) -> Option<PageHash> {
        let i = self
            .runs
            .partition_point(|(s, v)| s + v.len() as u64 * PAGE_SIZE <= addr);
        let (s, v) = self.runs.get(i)?;
        if addr < *s {
            return None;
        }
        v.get(((addr - s) / PAGE_SIZE) as usize).copied()
    }

    pub fn to_proto(&self, owner: &str) -> PageHashes {
        let mut p = PageHashes::new();
        p.owner = owner.to_string();
        for (a, v) in &self.runs {
            let mut r = PageHashRun::new();
            r.addr = *a;
            r.nr_pages = v.len() as u64;
            r.hashes = v.iter().flatten().copied().collect();
            p.runs.push(r);
        }
        p
    }
}

/// How this layer finds out which of an owner's pages changed.
#[derive(Debug, Clone)]
pub enum Dirty {
    /// Nothing known: every page is read (a full layer for the owner).
    All,
    /// Each page's hash is compared with the parent's.
    Hash,
    /// A page whose pagemap entry has no soft-dirty bit is unchanged.
    SoftDirty,
    /// uffd-wp: a page inside `tracked` and outside `written` is unchanged.
    Written { tracked: Ranges, written: Ranges },
}

/// What the parent layer holds for one owner.
pub struct Base {
    pub held: Ranges,
    pub hashes: Option<Hashes>,
    pub dirty: Dirty,
}

/// The parent layer, as a dump that builds on it sees it.
pub struct ParentView {
    pub path: PathBuf,
    pub dir: ImageDir,
    pub inventory: Inventory,
    pub pstree: Pstree,
    /// The parent was taken on this boot (start times compare).
    pub same_boot: bool,
}

impl ParentView {
    /// Opens `prev` (relative to `images_dir` unless absolute) and checks
    /// its whole chain.
    pub fn open(images_dir: &Path, prev: &Path) -> Result<ParentView> {
        let path = if prev.is_absolute() {
            prev.to_path_buf()
        } else if images_dir.is_dir() {
            images_dir.join(prev)
        } else {
            // The directory is made at the end of the dump (staging):
            // resolve `..` in the name.
            lexical_join(images_dir, prev)
        };
        let (dir, inventory) = chain::open_layer(&path, images_dir, "")?;
        let store = PageStoreReader::open(&dir)?;
        let pstree: Pstree = dir.read(ImageType::Pstree, names::PSTREE)?;
        // The layers below must be whole too: better refused now than at
        // restore.
        let chain = Chain::open(dir, inventory, store)?;
        let top = chain.layers.into_iter().next().expect("top layer");
        let same_boot = crate::procfs::boot_id()
            .map(|b| !b.is_empty() && b == top.inventory.boot_id)
            .unwrap_or(false);
        Ok(ParentView {
            path,
            dir: top.dir,
            inventory: top.inventory,
            pstree,
            same_boot,
        })
    }

    /// The start time the parent recorded for `pid`.
    pub fn start_time(&self, pid: i32) -> Option<u64> {
        self.pstree
            .entries
            .iter()
            .find(|e| e.pid == pid as u32)
            .map(|e| e.start_time)
    }

    /// Whether the parent saw this very process (same pid, same start, same
    /// boot).
    pub fn same_process(&self, pid: i32, start_time: u64) -> bool {
        self.same_boot && start_time != 0 && self.start_time(pid) == Some(start_time)
    }

    /// The pages the parent holds for `owner`, and their hashes if it kept
    /// them; `None` if it has no pagemap for it.
    pub fn held(&self, owner: &str) -> Result<Option<(Ranges, Option<Hashes>)>> {
        let n = names::pagemap(owner);
        if !self.dir.exists(&n) {
            return Ok(None);
        }
        let pm: Pagemap = self.dir.read(ImageType::Pagemap, &n)?;
        let hn = names::pagehash(owner);
        let hashes = if self.dir.exists(&hn) {
            let p: PageHashes = self.dir.read(ImageType::PageHash, &hn)?;
            Some(Hashes::from_proto(&p, &self.dir.file(&hn))?)
        } else {
            None
        };
        Ok(Some((held(&pm), hashes)))
    }
}

/// `base/rel` with `.` and `..` of `rel` applied to the names (for a
/// `base` that does not exist yet).
pub fn lexical_join(base: &Path, rel: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = base.to_path_buf();
    for c in rel.components() {
        match c {
            Component::ParentDir => {
                let up = matches!(out.components().next_back(), Some(Component::ParentDir));
                if up || !out.pop() {
                    out.push("..");
                }
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// A new random layer id: 32 hex digits.
pub fn new_layer_id() -> String {
    let mut b = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = xxhash_rust::xxh3::xxh3_128(
            &[t.to_le_bytes(), (std::process::id() as u128).to_le_bytes()].concat(),
        )
        .to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_look_up() {
        let r = Ranges::new(vec![
            (0x5000, 0x6000),
            (0x1000, 0x3000),
            (0x2000, 0x4000),
            (0x9000, 0x9000),
        ]);
        assert_eq!(r.0, vec![(0x1000, 0x4000), (0x5000, 0x6000)]);
        assert!(r.contains(0x1000) && r.contains(0x3fff) && r.contains(0x5000));
        assert!(!r.contains(0x4000) && !r.contains(0x0) && !r.contains(0x6000));
        assert!(r.covers(0x1000, 0x4000) && !r.covers(0x3000, 0x5000));
        assert_eq!(r.pages(), 4);
    }

    #[test]
    fn hashes_round_trip_and_look_up() {
        let h = |b: u8| [b; HASH_LEN];
        let hs = Hashes::from_pages(vec![
            (0x3000, h(3)),
            (0x1000, h(1)),
            (0x2000, h(2)),
            (0x8000, h(8)),
        ]);
        assert_eq!(hs.get(0x2000), Some(h(2)));
        assert_eq!(hs.get(0x8000), Some(h(8)));
        assert_eq!(hs.get(0x4000), None);
        assert_eq!(hs.get(0), None);
        let p = hs.to_proto("pid:1");
        assert_eq!(p.runs.len(), 2);
        let back = Hashes::from_proto(&p, Path::new("x")).unwrap();
        assert_eq!(back.get(0x3000), Some(h(3)));
        let mut bad = p.clone();
        bad.runs[0].hashes.pop();
        assert!(Hashes::from_proto(&bad, Path::new("x")).is_err());
    }

    #[test]
    fn lexical_joins() {
        assert_eq!(
            lexical_join(Path::new("/ck/2"), Path::new("../1")),
            PathBuf::from("/ck/1")
        );
        assert_eq!(
            lexical_join(Path::new("ck/2"), Path::new("./../1")),
            PathBuf::from("ck/1")
        );
        assert_eq!(
            lexical_join(Path::new("2"), Path::new("../1")),
            PathBuf::from("1")
        );
        assert_eq!(
            lexical_join(Path::new("../x"), Path::new("../../y")),
            PathBuf::from("../../y")
        );
    }

    #[test]
    fn hash_tells_pages_apart() {
        let a = vec![0u8; 4096];
        let mut b = a.clone();
        b[4095] = 1;
        assert_ne!(page_hash(&a), page_hash(&b));
        assert_eq!(page_hash(&a), page_hash(&vec![0u8; 4096]));
        assert_eq!(new_layer_id().len(), 32);
        assert_ne!(new_layer_id(), new_layer_id());
    }
}
