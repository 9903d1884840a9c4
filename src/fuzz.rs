//! The in-tree fuzzer of every image decoder (`cargo xtask fuzz`): real
//! checkpoints are mutated ([`crate::image::mutate`]) and fed, in this
//! process, to each decoder and validator; a panic in any of them is a
//! bug, an error is the expected answer, success is fine for mutations
//! that leave a valid image.
//!
//! Targets, per iteration (the mutated directory is written into a
//! scratch directory first):
//! - `header`: [`Header::decode`] of every file's first 32 bytes;
//! - `message`: the mutated file decoded as every message kind;
//! - `pagestore`: the chunk table checked against `pages.img`
//!   ([`validate_store`]);
//! - `load`: [`crate::restore::Images::load`] (inventory, every message,
//!   the validators, the chain) and the contents image;
//! - `verify`: `cairn show --verify` ([`crate::cmd::verify::verify`]);
//! - `show`: `cairn show` as text and as JSON.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::Result;
use crate::image::mutate::{mutate, ImageSet, Rng};
use crate::image::pages::validate_store;
use crate::image::proto::PageStore;
use crate::image::{decode_image, names, Header, ImageType, HEADER_LEN};

/// Counts of one target.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub ok: u64,
    pub err: u64,
    pub panics: u64,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    pub iterations: u64,
    pub hostile: u64,
    pub targets: BTreeMap<&'static str, Counts>,
    /// (iteration, target, mutation, panic message) of every panic.
    pub panics: Vec<(u64, &'static str, String, String)>,
    pub secs: f64,
}

impl Report {
    /// One line per target, for people and scripts.
    pub fn text(&self) -> String {
        let mut s = format!(
            "fuzz: {} iterations ({} hostile, {} raw) in {:.1} s\n",
            self.iterations,
            self.hostile,
            self.iterations - self.hostile,
            self.secs
        );
        for (t, c) in &self.targets {
            s.push_str(&format!(
                "  {t:<10} ok {:>7}  error {:>7}  panic {:>3}\n",
                c.ok, c.err, c.panics
            ));
        }
        for (i, t, m, p) in &self.panics {
            s.push_str(&format!("PANIC iteration {i} target {t}: {m}: {p}\n"));
        }
        s
    }
}

fn panic_text(e: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = e.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = e.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic)".into()
    }
}

/// Runs `f` as target `name`, counting its outcome.
fn target<T>(
    report: &mut Report,
    it: u64,
    what: &str,
    name: &'static str,
    f: impl FnOnce() -> std::result::Result<T, String>,
) {
    let r = catch_unwind(AssertUnwindSafe(f));
    let c = report.targets.entry(name).or_default();
    match r {
        Ok(Ok(_)) => c.ok += 1,
        Ok(Err(_)) => c.err += 1,
        Err(p) => {
            c.panics += 1;
            report
                .panics
                .push((it, name, what.to_string(), panic_text(p)));
        }
    }
}

/// Mutates the checkpoints in `bases` `iterations` times in all (round
/// robin), from `seed`, and runs every target on each result in a scratch
/// directory under `scratch`.
pub fn run(bases: &[PathBuf], scratch: &Path, iterations: u64, seed: u64) -> Result<Report> {
    let sets: Vec<ImageSet> = bases
        .iter()
        .map(|b| ImageSet::load(b))
        .collect::<Result<_>>()?;
    let dirs: Vec<PathBuf> = (0..sets.len())
        .map(|i| scratch.join(format!("fuzz-{i}")))
        .collect();
    for (s, d) in sets.iter().zip(&dirs) {
        let _ = std::fs::remove_dir_all(d);
        s.write(d)?;
    }
    let mut rng = Rng::new(seed);
    let verbose = std::env::var_os("CAIRN_FUZZ_VERBOSE").is_some();
    let mut report = Report::default();
    let t0 = Instant::now();
    // Panics are counted, not printed as they happen.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for it in 0..iterations {
        let k = (it as usize) % sets.len();
        let base = &sets[k];
        let dir = &dirs[k];
        let other = sets.get((k + 1) % sets.len()).filter(|_| sets.len() > 1);
        let mut m = base.clone();
        let mutation = mutate(&mut m, other, &mut rng);
        if mutation.hostile {
            report.hostile += 1;
        }
        let changed: Vec<&(String, Vec<u8>)> = m
            .files
            .iter()
            .filter(|(n, b)| base.get(n) != Some(b.as_slice()))
            .collect();
        for (n, b) in &changed {
            std::fs::write(dir.join(n), b).map_err(|e| crate::Error::io(dir.join(n), e))?;
        }
        let what = mutation.what.as_str();
        crate::image::budget::reset();
        for (n, b) in &changed {
            target(&mut report, it, what, "header", || {
                Header::decode(&b[..b.len().min(HEADER_LEN)], Path::new(n))
                    .map_err(|e| e.to_string())
            });
            target(&mut report, it, what, "message", || {
                match crate::image::mutate::decode_as_every_kind(b) {
                    0 => Err("no kind decodes it".to_string()),
                    n => Ok(n),
                }
            });
        }
        if let Some(ps) = m.get(names::PAGESTORE) {
            target(&mut report, it, what, "pagestore", || {
                let s: PageStore =
                    decode_image(ImageType::PageStore, ps, Path::new(names::PAGESTORE))
                        .map_err(|e| e.to_string())?;
                let body = m
                    .get(names::PAGES)
                    .map_or(0, |p| p.len().saturating_sub(HEADER_LEN));
                validate_store(&s, body as u64)
            });
        }
        // Each target is a command of its own: a fresh decoding budget.
        crate::image::budget::reset();
        let loaded = catch_unwind(AssertUnwindSafe(|| {
            crate::restore::Images::load(dir).and_then(|img| {
                crate::kinds::contents::load(&img.dir, img.store(), &img.files).map(drop)
            })
        }));
        if verbose {
            match &loaded {
                Ok(Ok(())) => eprintln!("fuzz {it}: accepted: {what}"),
                Ok(Err(e)) => eprintln!("fuzz {it}: refused: {what}: {e}"),
                Err(_) => {}
            }
        }
        target(&mut report, it, what, "load", || match loaded {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(p) => std::panic::resume_unwind(p),
        });
        crate::image::budget::reset();
        target(&mut report, it, what, "verify", || {
            crate::cmd::verify::verify(dir).map_err(|e| e.to_string())
        });
        crate::image::budget::reset();
        target(&mut report, it, what, "show", || {
            crate::cmd::show::render(dir, it % 2 == 0).map_err(|e| e.to_string())
        });
        // Back to the base for the next round.
        for (n, _) in &changed {
            match base.get(n) {
                Some(b) => std::fs::write(dir.join(n), b),
                None => std::fs::remove_file(dir.join(n)),
            }
            .map_err(|e| crate::Error::io(dir.join(n), e))?;
        }
        report.iterations += 1;
    }
    std::panic::set_hook(hook);
    report.secs = t0.elapsed().as_secs_f64();
    Ok(report)
}
