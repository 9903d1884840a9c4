//! Lazy (post-copy) restore of private anonymous memory (issue 16,
//! `cairn migrate --lazy`).
//!
//! While a pager is installed ([`set_pager`]; `crate::migrate::postcopy`
//! runs one), [`restore_pages`] takes over the page step of each
//! restored process:
//!
//! - the runs of a process with no children in the tree (a leaf: no
//!   child is forked from its memory during the restore) that lie in a
//!   private anonymous mapping with some access are left unpopulated;
//!   the process creates a userfaultfd (an injected syscall, so that it
//!   belongs to its mm; taken with pidfd_getfd and closed there again),
//!   those mappings are registered in MISSING mode and the userfaultfd
//!   and the runs go to the pager ([`LazyMm`]), which fills them
//!   (UFFDIO_COPY) as their chunks arrive or fault;
//! - every other run (shared memory, file mappings, processes with
//!   children) is restored as usual, once the pager has made its chunks
//!   present in the layer's pages.img ([`Cmd::Ensure`]).
//!
//! The userfaultfd is created without UFFD_USER_MODE_ONLY (a kernel
//! access, read(2) into a missing buffer, waits too) and with the fork,
//! remap, remove and unmap events, so that a child forked later gets the
//! missing pages too and moved or dropped ranges are followed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};

use crate::error::{Error, Result};
use crate::image::chain::Resolved;
use crate::image::pages::PageStoreReader;
use crate::image::proto::{MmEntry, VmaKind};
use crate::remote::Calls;
use crate::sys::{uffd, PAGE_SIZE};

use super::pagein::PageStats;

/// The userfaultfd features a lazy restore asks for.
pub const FEATURES: u64 = uffd::UFFD_FEATURE_EVENT_FORK
    | uffd::UFFD_FEATURE_EVENT_REMAP
    | uffd::UFFD_FEATURE_EVENT_REMOVE
    | uffd::UFFD_FEATURE_EVENT_UNMAP;

/// `nr` pages at `addr`, stored at byte `off` of chunk `chunk` of layer
/// `layer` (the migration's layer number, 1 = the oldest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub addr: u64,
    pub nr: u64,
    pub layer: u32,
    pub chunk: u32,
    pub off: u64,
}

impl Run {
    pub fn end(&self) -> u64 {
        self.addr + self.nr * PAGE_SIZE
    }
}

/// The missing runs of one mm and the userfaultfd that waits for them.
pub struct LazyMm {
    /// The restored process (0: a child forked after the restore, known
    /// by its userfaultfd only).
    pub pid: i32,
    pub uffd: OwnedFd,
    /// Still missing, by address.
    pub runs: BTreeMap<u64, Run>,
}

impl LazyMm {
    /// The missing run holding `page`.
    pub fn find(&self, page: u64) -> Option<Run> {
        self.runs
            .range(..=page)
            .next_back()
            .map(|(_, r)| *r)
            .filter(|r| page < r.end())
    }

    /// Removes the parts of the runs inside [start, end) and returns
    /// them (their addresses unchanged).
    pub fn cut(&mut self, start: u64, end: u64) -> Vec<Run> {
        let hit: Vec<Run> = self
            .runs
            .range(..end)
            .map(|(_, r)| *r)
            .filter(|r| r.end() > start)
            .collect();
        let mut out = Vec::new();
        for r in hit {
            self.runs.remove(&r.addr);
            let s = r.addr.max(start);
            let e = r.end().min(end);
            if r.addr < s {
                self.runs.insert(
                    r.addr,
                    Run {
                        nr: (s - r.addr) / PAGE_SIZE,
                        ..r
                    },
                );
            }
            if e < r.end() {
                self.runs.insert(
                    e,
                    Run {
                        addr: e,
                        nr: (r.end() - e) / PAGE_SIZE,
                        off: r.off + (e - r.addr),
                        ..r
                    },
                );
            }
            out.push(Run {
                addr: s,
                nr: (e - s) / PAGE_SIZE,
                off: r.off + (s - r.addr),
                ..r
            });
        }
        out
    }
}

/// Where the pager answers an [`Cmd::Ensure`].
pub type Answer = mpsc::Sender<std::result::Result<(), String>>;

/// What the restore asks of the pager.
pub enum Cmd {
    /// Make chunk `chunk` of layer `layer` present in its pages.img (the
    /// restore reads it); the answer says when.
    Ensure {
        layer: u32,
        chunk: u32,
        done: Answer,
    },
    /// A restored process's missing runs.
    Add(LazyMm),
    /// The restore is over: the root pid, or why it failed.
    Started(std::result::Result<i32, String>),
}

/// The restore's end of a pager.
pub struct Pager {
    pub tx: mpsc::Sender<Cmd>,
    /// Written after each command: the pager polls the other end.
    pub wake: UnixStream,
    /// pages.img of layer i + 1, by index.
    pub pages: Vec<PathBuf>,
    /// The post-copy guardian: holds every userfaultfd before the tree
    /// runs (`crate::migrate::guardian`).
    pub guard: Arc<crate::migrate::guardian::Link>,
}

impl Pager {
    pub fn send(&self, c: Cmd) -> Result<()> {
        self.tx
            .send(c)
            .map_err(|_| Error::Restore("lazy restore: the pager is gone".into()))?;
        (&self.wake)
            .write_all(&[1])
            .map_err(|e| Error::Restore(format!("lazy restore: waking the pager: {e}")))
    }
}

static PAGER: Mutex<Option<Pager>> = Mutex::new(None);

/// Installs (or, with `None`, removes) the pager the next restores use.
pub fn set_pager(p: Option<Pager>) {
    *PAGER.lock().unwrap_or_else(|e| e.into_inner()) = p;
}

/// Whether `a` and `b` name one file (device and inode).
pub fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => (x.dev(), x.ino()) == (y.dev(), y.ino()),
        _ => false,
    }
}

/// Whether [a, end) lies in a mapping whose missing pages a userfaultfd
/// can supply: private anonymous, with some access.
fn eligible(mm: &MmEntry, a: u64, end: u64) -> bool {
    mm.vmas.iter().any(|v| {
        v.start <= a
            && end <= v.end
            && v.prot != 0
            && v.kind.enum_value() == Ok(VmaKind::VMA_ANON_PRIVATE)
    })
}

/// What the page step of one restored process works on: its mm, the
/// page runs of each owner it maps, the chain's page stores, the shmem
/// objects by name.
#[derive(Clone, Copy)]
pub struct PageInput<'a> {
    pub mm: &'a MmEntry,
    pub maps: &'a [(&'a str, &'a [Resolved])],
    pub stores: &'a [&'a PageStoreReader],
    pub shm: &'a HashMap<String, File>,
}

/// The page step of a restore ([`super::restore_pages`]), lazy where a
/// pager is installed (see the module doc). `leaf`: the process has no
/// children in the tree.
pub fn restore_pages(agent: &mut dyn Calls, input: PageInput<'_>, leaf: bool) -> Result<PageStats> {
    let PageInput {
        mm,
        maps,
        stores,
        shm,
    } = input;
    let guard = PAGER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(pager) = guard.as_ref() else {
        drop(guard);
        return super::pagein::restore_pages(agent, mm, maps, stores, shm);
    };
    let pid = agent.pid();
    // The migration's layer number of each store of the chain.
    let num: Vec<Option<u32>> = stores
        .iter()
        .map(|s| {
            pager
                .pages
                .iter()
                .position(|p| same_file(p, s.path()))
                .map(|i| i as u32 + 1)
        })
        .collect();
    let own = format!("pid:{pid}");
    let mut lazy: BTreeMap<u64, Run> = BTreeMap::new();
    let mut eager: Vec<(&str, Vec<Resolved>)> = Vec::new();
    let mut need: BTreeSet<(u32, u32)> = BTreeSet::new();
    for (owner, runs) in maps {
        let mut keep = Vec::new();
        for r in runs.iter() {
            if let (Some((chunk, off)), Some(Some(layer))) = (r.data, num.get(r.layer).copied()) {
                let end = r.addr + r.nr_pages * PAGE_SIZE;
                if leaf && *owner == own && eligible(mm, r.addr, end) {
                    lazy.insert(
                        r.addr,
                        Run {
                            addr: r.addr,
                            nr: r.nr_pages,
                            layer,
                            chunk,
                            off,
                        },
                    );
                    continue;
                }
                need.insert((layer, chunk));
            }
            keep.push(r.clone());
        }
        eager.push((owner, keep));
    }
    // The chunks the usual path reads.
    ensure(pager, &format!("pid {pid}"), &need)?;
    let maps2: Vec<(&str, &[Resolved])> = eager.iter().map(|(o, v)| (*o, v.as_slice())).collect();
    let stats = super::pagein::restore_pages(agent, mm, &maps2, stores, shm)?;
    if lazy.is_empty() {
        return Ok(stats);
    }
    let uffd = create_uffd(agent)?;
    let mut ranges = 0;
    for v in &mm.vmas {
        let has = lazy
            .range(v.start..v.end)
            .next()
            .is_some_and(|(_, r)| r.addr < v.end);
        if !has {
            continue;
        }
        uffd::register_missing(&uffd, v.start, v.end).map_err(|e| {
            Error::sys(
                pid,
                format!("UFFDIO_REGISTER (missing) {:#x}-{:#x}", v.start, v.end),
                e,
            )
        })?;
        ranges += 1;
    }
    let pages: u64 = lazy.values().map(|r| r.nr).sum();
    crate::info!("pid {pid}: {pages} pages left to the pager in {ranges} mappings (post-copy)");
    // Before the tree can run: a receiver killed from now on leaves the
    // userfaultfd with the guardian, which kills the tree.
    pager.guard.tell_mm(pid, &uffd)?;
    pager.send(Cmd::Add(LazyMm {
        pid,
        uffd,
        runs: lazy,
    }))?;
    Ok(stats)
}

/// Makes the chunks `need` (layer, chunk) present in their pages.img:
/// asked for all at once, then waited for. `who` names the reader in
/// errors.
fn ensure(pager: &Pager, who: &str, need: &BTreeSet<(u32, u32)>) -> Result<()> {
    let mut answers = Vec::new();
    for &(layer, chunk) in need {
        let (tx, rx) = mpsc::channel();
        pager.send(Cmd::Ensure {
            layer,
            chunk,
            done: tx,
        })?;
        answers.push(((layer, chunk), rx));
    }
    for ((layer, chunk), rx) in answers {
        let why = match rx.recv() {
            Ok(Ok(())) => continue,
            Ok(Err(why)) => why,
            Err(_) => "the pager is gone".to_string(),
        };
        return Err(Error::Restore(format!(
            "{who}: layer {layer} chunk {chunk}: {why}"
        )));
    }
    Ok(())
}

/// Before chunk `chunk` of the page store `store` (a pages.img) is read
/// outside the page step: if a pager is installed and `store` is one of
/// its layers (sparse until the pager wrote the chunk), makes the chunk
/// present; nothing otherwise. The restore's copy-on-write plan compares
/// a child's pages with its parent's through it (`restore::PageCompare`).
pub fn ensure_read(store: &std::path::Path, chunk: u32) -> Result<()> {
    let guard = PAGER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(pager) = guard.as_ref() else {
        return Ok(());
    };
    let Some(i) = pager.pages.iter().position(|p| same_file(p, store)) else {
        return Ok(());
    };
    let need = BTreeSet::from([(i as u32 + 1, chunk)]);
    ensure(pager, &store.display().to_string(), &need)
}

/// Has the vessel create a userfaultfd (it belongs to its mm), takes it
/// with pidfd_getfd and closes it there: its fd table is as before.
fn create_uffd(agent: &mut dyn Calls) -> Result<OwnedFd> {
    let pid = agent.pid();
    let fd = agent.call(
        "userfaultfd",
        libc::SYS_userfaultfd,
        &[uffd::UFFD_SYNC_CREATE_FLAGS],
    )?;
    let got = uffd::pidfd_open(pid)
        .and_then(|p| uffd::pidfd_getfd(&p, fd as i32))
        .map_err(|e| Error::sys(pid, format!("pidfd_getfd of userfaultfd {fd}"), e));
    let closed = agent.close_as("userfaultfd", fd);
    let got = got?;
    closed?;
    let granted = uffd::api(&got, FEATURES)
        .map_err(|e| Error::sys(pid, format!("UFFDIO_API (features {FEATURES:#x})"), e))?;
    if granted & FEATURES != FEATURES {
        return Err(Error::sys(
            pid,
            "UFFDIO_API",
            std::io::Error::other(format!("features {granted:#x}, {FEATURES:#x} wanted")),
        ));
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mm_with(runs: &[Run]) -> LazyMm {
        LazyMm {
            pid: 0,
            uffd: crate::sys::uffd::userfaultfd_self().unwrap(),
            runs: runs.iter().map(|r| (r.addr, *r)).collect(),
        }
    }

    #[test]
    fn cut_splits_runs() {
        let p = PAGE_SIZE;
        let r = Run {
            addr: 10 * p,
            nr: 10,
            layer: 1,
            chunk: 3,
            off: 100 * p,
        };
        let mut m = mm_with(&[r]);
        assert_eq!(m.find(12 * p), Some(r));
        assert_eq!(m.find(20 * p), None);
        let got = m.cut(12 * p, 14 * p);
        assert_eq!(
            got,
            vec![Run {
                addr: 12 * p,
                nr: 2,
                off: 102 * p,
                ..r
            }]
        );
        assert_eq!(m.find(13 * p), None);
        assert_eq!(m.find(11 * p).map(|r| r.nr), Some(2));
        assert_eq!(
            m.find(15 * p).map(|r| (r.addr, r.nr, r.off)),
            Some((14 * p, 6, 104 * p))
        );
        assert!(m.cut(0, 5 * p).is_empty());
        assert_eq!(m.cut(0, 100 * p).len(), 2);
        assert!(m.runs.is_empty());
    }
}
