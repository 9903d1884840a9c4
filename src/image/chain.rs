//! Incremental checkpoints: chains of layers.
//!
//! A layer is an image directory whose inventory names its parent
//! (`parent_dir`, relative to the layer, and `parent_layer_id`, the
//! parent's `layer_id`). Pagemap runs of kind `RUN_PARENT` have their bytes
//! in the parent, under the same owner at the same address, possibly again
//! as `RUN_PARENT`. [`Chain`] opens and checks every layer down to the
//! first (full) one and resolves each run to the layer that holds its
//! bytes; every defect is an image error naming the directory.

use std::path::{Path, PathBuf};

use super::pages::PageStoreReader;
use super::proto::{Inventory, PageRun, Pagemap, RunKind};
use super::{names, ImageDir, ImageType};
use crate::error::{Error, Result};
use crate::sys::PAGE_SIZE;

/// Longest chain accepted (also stops a cycle of directories).
pub const MAX_DEPTH: usize = 1000;

/// Where the parent of the layer in `dir` is, if it has one.
pub fn parent_path(dir: &Path, inv: &Inventory) -> Option<PathBuf> {
    if inv.parent_dir.is_empty() {
        return None;
    }
    let p = Path::new(&inv.parent_dir);
    Some(if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    })
}

/// Opens a parent layer's directory and inventory, checking that it is the
/// layer `child_id` names (when `child_id` is not empty).
pub fn open_layer(path: &Path, child: &Path, child_id: &str) -> Result<(ImageDir, Inventory)> {
    let bad = |why: String| {
        Error::image(
            path,
            format!("parent images dir of {}: {why}", child.display()),
        )
    };
    // The last component is never followed (crate::sys::safefs).
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(bad(crate::sys::safefs::SYMLINK_MSG.into()))
        }
        Ok(m) if m.is_dir() => {}
        _ => return Err(bad("no such directory".into())),
    }
    if !std::fs::symlink_metadata(path.join(names::INVENTORY)).is_ok_and(|m| m.is_file()) {
        return Err(bad("no inventory.img: not a complete checkpoint".into()));
    }
    let (dir, inv) = ImageDir::load(path).map_err(|e| bad(e.to_string()))?;
    if !child_id.is_empty() && inv.layer_id != child_id {
        return Err(bad(format!(
            "holds layer {:?}, but the layer above was made from layer {child_id:?} (the directory was replaced)",
            inv.layer_id
        )));
    }
    Ok((dir, inv))
}

/// One layer of a chain.
pub struct Layer {
    pub dir: ImageDir,
    pub inventory: Inventory,
    pub store: PageStoreReader,
}

/// A layer and every layer below it; `layers[0]` is the top.
pub struct Chain {
    pub layers: Vec<Layer>,
}

/// A run resolved to the layer that holds its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub addr: u64,
    pub nr_pages: u64,
    pub layer: usize,
    /// (chunk, byte offset in the chunk) of the layer's page store; `None`
    /// for zero pages.
    pub data: Option<(u32, u64)>,
}

impl Chain {
    /// Opens the layers below `top` (already loaded by the caller).
    pub fn open(dir: ImageDir, inventory: Inventory, store: PageStoreReader) -> Result<Chain> {
        let mut layers = vec![Layer {
            dir,
            inventory,
            store,
        }];
        let mut seen: Vec<PathBuf> = Vec::new();
        loop {
            let last = layers.last().expect("at least the top layer");
            let Some(p) = parent_path(last.dir.path(), &last.inventory) else {
                break;
            };
            if layers.len() > MAX_DEPTH {
                return Err(Error::image(
                    &p,
                    format!("the chain is longer than {MAX_DEPTH} layers"),
                ));
            }
            let canon = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
            if seen.contains(&canon) {
                return Err(Error::image(&p, "the chain of parents loops"));
            }
            seen.push(canon);
            let (dir, inventory) =
                open_layer(&p, last.dir.path(), &last.inventory.parent_layer_id)?;
            let store = PageStoreReader::open(&dir)?;
            layers.push(Layer {
                dir,
                inventory,
                store,
            });
        }
        Ok(Chain { layers })
    }

    /// Resolves `top` (the top layer's pagemap of its owner) through the
    /// chain and checks every data run against its layer's chunk table.
    pub fn resolve(&self, top: &Pagemap) -> Result<Vec<Resolved>> {
        let name = names::pagemap(&top.owner);
        let mut maps: Vec<Option<Pagemap>> = vec![None];
        let needs_parent = top
            .runs
            .iter()
            .any(|r| r.kind.enum_value() == Ok(RunKind::RUN_PARENT));
        if needs_parent {
            for l in &self.layers[1..] {
                maps.push(if l.dir.exists(&name) {
                    let pm: Pagemap = l.dir.read(ImageType::Pagemap, &name)?;
                    if pm.owner != top.owner {
                        return Err(Error::image(
                            l.dir.file(&name),
                            format!("holds pages of {}, expected {}", pm.owner, top.owner),
                        ));
                    }
                    Some(pm)
                } else {
                    None
                });
            }
        }
        let runs: Vec<Option<&[PageRun]>> = std::iter::once(Some(top.runs.as_slice()))
            .chain(
                maps[1..]
                    .iter()
                    .map(|m| m.as_ref().map(|p| p.runs.as_slice())),
            )
            .collect();
        let out = resolve_runs(&runs).map_err(|(layer, msg)| {
            Error::image(
                self.layers[layer.min(self.layers.len() - 1)]
                    .dir
                    .file(&name),
                msg,
            )
        })?;
        for r in &out {
            if let Some((chunk, off)) = r.data {
                let l = &self.layers[r.layer];
                let ok = l.store.store.chunks.get(chunk as usize).is_some_and(|c| {
                    off.checked_add(r.nr_pages * PAGE_SIZE)
                        .is_some_and(|e| e <= c.raw_len)
                });
                if !ok {
                    return Err(Error::image(
                        l.dir.file(&name),
                        format!("run at {:#x} overruns or lacks chunk {chunk}", r.addr),
                    ));
                }
            }
        }
        Ok(out)
    }
}

/// Resolves the runs of layer 0 through `layers` (one owner's runs per
/// layer, `None` where a layer has none). Errors name the layer index.
pub fn resolve_runs(
    layers: &[Option<&[PageRun]>],
) -> std::result::Result<Vec<Resolved>, (usize, String)> {
    // Each layer's runs sorted by address and checked for overlaps.
    let mut sorted: Vec<Vec<&PageRun>> = Vec::with_capacity(layers.len());
    for (i, l) in layers.iter().enumerate() {
        let mut v: Vec<&PageRun> = l.map(|r| r.iter().collect()).unwrap_or_default();
        v.sort_by_key(|r| r.addr);
        for w in v.windows(2) {
            if run_end(w[0]).is_none_or(|e| e > w[1].addr) {
                return Err((
                    i,
                    format!("runs at {:#x} and {:#x} overlap", w[0].addr, w[1].addr),
                ));
            }
        }
        if let Some(r) = v
            .iter()
            .find(|r| run_end(r).is_none() || r.addr % PAGE_SIZE != 0)
        {
            return Err((i, format!("bad run at {:#x}", r.addr)));
        }
        sorted.push(v);
    }
    let mut out = Vec::new();
    let top = sorted.first().cloned().unwrap_or_default();
    for r in top {
        let end = run_end(r).unwrap_or(r.addr);
        piece(&sorted, 0, r, r.addr, end, &mut out)?;
    }
    Ok(out)
}

fn run_end(r: &PageRun) -> Option<u64> {
    r.nr_pages
        .checked_mul(PAGE_SIZE)
        .and_then(|l| r.addr.checked_add(l))
}

/// Emits [s, e) of run `r` of layer `k`.
fn piece(
    sorted: &[Vec<&PageRun>],
    k: usize,
    r: &PageRun,
    s: u64,
    e: u64,
    out: &mut Vec<Resolved>,
) -> std::result::Result<(), (usize, String)> {
    let nr = (e - s) / PAGE_SIZE;
    match r.kind.enum_value() {
        Ok(RunKind::RUN_DATA) => out.push(Resolved {
            addr: s,
            nr_pages: nr,
            layer: k,
            data: Some((r.chunk, r.chunk_offset + (s - r.addr))),
        }),
        Ok(RunKind::RUN_ZERO) => out.push(Resolved {
            addr: s,
            nr_pages: nr,
            layer: k,
            data: None,
        }),
        Ok(RunKind::RUN_PARENT) => {
            let p = k + 1;
            let Some(runs) = sorted.get(p) else {
                return Err((
                    k,
                    format!("run at {s:#x} refers to a parent layer, and there is none"),
                ));
            };
            // Walk the parent's runs over [s, e); any gap is an error.
            let mut at = s;
            let mut i = runs.partition_point(|x| run_end(x).unwrap_or(0) <= s);
            while at < e {
                let Some(x) = runs.get(i).filter(|x| x.addr <= at) else {
                    return Err((
                        p,
                        format!("the layer above refers to page {at:#x}, which this layer does not hold"),
                    ));
                };
                let xe = run_end(x).unwrap_or(x.addr).min(e);
                piece(sorted, p, x, at, xe, out)?;
                at = xe;
                i += 1;
            }
        }
        Err(v) => return Err((k, format!("run at {s:#x} has unknown kind {v}"))),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(addr: u64, nr: u64, kind: RunKind, chunk: u32, off: u64) -> PageRun {
        let mut r = PageRun::new();
        r.addr = addr;
        r.nr_pages = nr;
        r.kind = kind.into();
        r.chunk = chunk;
        r.chunk_offset = off;
        r
    }

    const P: u64 = PAGE_SIZE;

    #[test]
    fn parent_runs_resolve_through_layers() {
        use RunKind::*;
        // Layer 2 (oldest): 8 pages of data in chunk 0.
        let l2 = vec![run(0, 8, RUN_DATA, 0, 0)];
        // Layer 1: pages 2-3 new data, the rest from layer 2; page 7 zero.
        let l1 = vec![
            run(0, 2, RUN_PARENT, 0, 0),
            run(2 * P, 2, RUN_DATA, 5, 0),
            run(4 * P, 3, RUN_PARENT, 0, 0),
            run(7 * P, 1, RUN_ZERO, 0, 0),
        ];
        // Layer 0 (top): page 0 new, pages 1-7 from layer 1.
        let l0 = vec![run(0, 1, RUN_DATA, 1, 0), run(P, 7, RUN_PARENT, 0, 0)];
        let got = resolve_runs(&[Some(&l0), Some(&l1), Some(&l2)]).unwrap();
        let want = vec![
            Resolved {
                addr: 0,
                nr_pages: 1,
                layer: 0,
                data: Some((1, 0)),
            },
            Resolved {
                addr: P,
                nr_pages: 1,
                layer: 2,
                data: Some((0, P)),
            },
            Resolved {
                addr: 2 * P,
                nr_pages: 2,
                layer: 1,
                data: Some((5, 0)),
            },
            Resolved {
                addr: 4 * P,
                nr_pages: 3,
                layer: 2,
                data: Some((0, 4 * P)),
            },
            Resolved {
                addr: 7 * P,
                nr_pages: 1,
                layer: 1,
                data: None,
            },
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn a_gap_in_the_parent_is_an_error() {
        use RunKind::*;
        let l1 = vec![run(0, 2, RUN_DATA, 0, 0), run(3 * P, 1, RUN_DATA, 0, 2 * P)];
        let l0 = vec![run(0, 4, RUN_PARENT, 0, 0)];
        let (layer, msg) = resolve_runs(&[Some(&l0), Some(&l1)]).unwrap_err();
        assert_eq!(layer, 1);
        assert!(msg.contains("0x2000"), "{msg}");
        // No parent layer at all, or no pagemap for the owner there.
        assert_eq!(resolve_runs(&[Some(&l0)]).unwrap_err().0, 0);
        assert_eq!(resolve_runs(&[Some(&l0), None]).unwrap_err().0, 1);
    }

    #[test]
    fn overlapping_runs_are_an_error() {
        use RunKind::*;
        let l0 = vec![run(0, 2, RUN_DATA, 0, 0), run(P, 1, RUN_ZERO, 0, 0)];
        assert!(resolve_runs(&[Some(&l0)]).is_err());
        let wraps = vec![run(u64::MAX - P + 1, 2, RUN_ZERO, 0, 0)];
        assert!(resolve_runs(&[Some(&wraps)]).is_err());
    }

    #[test]
    fn parent_paths_are_relative_to_the_layer() {
        let mut inv = Inventory::new();
        assert_eq!(parent_path(Path::new("/ck/2"), &inv), None);
        inv.parent_dir = "../1".into();
        assert_eq!(
            parent_path(Path::new("/ck/2"), &inv),
            Some(PathBuf::from("/ck/2/../1"))
        );
        inv.parent_dir = "/abs/1".into();
        assert_eq!(
            parent_path(Path::new("/ck/2"), &inv),
            Some(PathBuf::from("/abs/1"))
        );
    }
}
