//! Copy-on-write sharing between a process and its parent, at restore.
//!
//! A dump records, per private VMA of a child, the pages it still shares
//! copy-on-write with its parent (`Vma.cow_runs`: same page frame at the
//! same address). The restore brings the sharing back the way it came
//! about: the parent's memory is restored first, then the child is forked
//! from it (without CLONE_VM), so that it starts with the parent's
//! mappings and pages, shared copy-on-write. [`plan`] decides, from the
//! two images, what the child keeps of that: the parts of its private
//! VMAs that the parent maps the same way (same kind, file, offset and
//! mmap flags: `compatible`), the vDSO if it is where the parent has
//! it, and in those parts the pages to keep as they are ([`Inherit::skip`]:
//! shared at dump, and the same bytes in both images). [`adopt`] unmaps
//! everything else the child inherited, gives the kept parts the child's
//! protections, and drops every inherited page that is not to be kept
//! (MADV_DONTNEED: anonymous memory reads zero again, a private file
//! mapping shows its file again), so that pages the parent has and the
//! child had not, and pages the child wrote after the fork, are its own
//! again once written. [`pieces`] is what is left to map, [`without`] the
//! child's page runs minus those kept. A parent whose shared page is all
//! zero writes it ([`populate_zeros`]): a fresh mapping's untouched page
//! has no frame to share.

use crate::error::{Error, Result};
use crate::image::chain::Resolved;
use crate::image::proto::{MmEntry, Vma, VmaKind};
use crate::remote::batch::Syscall;
use crate::remote::Calls;
use crate::sys::{mem, PAGE_SIZE};

use super::TASK_SIZE;

/// madvise(MADV_GUARD_REMOVE), Linux 6.13+.
const MADV_GUARD_REMOVE: i32 = 103;

/// What a process forked from its restored parent keeps of the parent's
/// memory. Ranges are [start, end), ascending and apart.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Inherit {
    /// Parts of the child's private VMAs taken over from the parent's
    /// mappings.
    pub keep: Vec<(u64, u64)>,
    /// The vDSO and its data pages, when the child has them where the
    /// parent has them (empty otherwise: they are moved).
    pub vdso: Vec<(u64, u64)>,
    /// Pages inside `keep` left as the fork made them: shared
    /// copy-on-write with the parent.
    pub skip: Vec<(u64, u64)>,
}

impl Inherit {
    /// Pages shared with the parent.
    pub fn shared_pages(&self) -> u64 {
        self.skip.iter().map(|(s, e)| (e - s) / PAGE_SIZE).sum()
    }
}

fn kind(v: &Vma) -> Option<VmaKind> {
    v.kind.enum_value().ok()
}

fn is_private(v: &Vma) -> bool {
    matches!(
        kind(v),
        Some(VmaKind::VMA_ANON_PRIVATE | VmaKind::VMA_FILE_PRIVATE)
    )
}

fn is_special(v: &Vma) -> bool {
    matches!(
        kind(v),
        Some(VmaKind::VMA_VDSO | VmaKind::VMA_VVAR | VmaKind::VMA_VVAR_VCLOCK)
    )
}

fn has(v: &Vma, f: &str) -> bool {
    v.vm_flags.iter().any(|x| x == f)
}

/// Whether the child's private VMA `v` may keep, where they overlap, the
/// parent's mapping `p`: what mmap made of both is the same (kind,
/// MAP_GROWSDOWN, MAP_NORESERVE; for a file: the same file at the same
/// offset for each address). Protections and madvise flags are set on
/// the kept part afterwards.
fn compatible(v: &Vma, p: &Vma) -> bool {
    if !is_private(v) || kind(v) != kind(p) || has(v, "gd") != has(p, "gd") {
        return false;
    }
    if has(v, "nr") != has(p, "nr") {
        return false;
    }
    kind(v) == Some(VmaKind::VMA_ANON_PRIVATE)
        || (v.file_id == p.file_id
            && v.pgoff.wrapping_sub(v.start) == p.pgoff.wrapping_sub(p.start))
}

/// Where a page's bytes are: `Some((layer, chunk, offset))` in a page
/// store of the chain, `None` for a zero page.
pub type PageSrc = Option<(usize, u32, u64)>;

/// Where the bytes of each page come from, by address.
struct Sources<'a> {
    runs: Vec<&'a Resolved>,
}

impl<'a> Sources<'a> {
    fn new(runs: &'a [Resolved]) -> Sources<'a> {
        let mut runs: Vec<&Resolved> = runs.iter().collect();
        runs.sort_by_key(|r| r.addr);
        Sources { runs }
    }

    /// The page at `addr`: `Some(None)` for a zero page, `Some(Some(layer,
    /// chunk, offset))` for saved bytes, `None` when nothing is saved.
    #[allow(clippy::option_option)]
    fn at(&self, addr: u64) -> Option<Option<(usize, u32, u64)>> {
        let i = self
            .runs
            .partition_point(|r| r.addr + r.nr_pages * PAGE_SIZE <= addr);
        let r = self.runs.get(i).filter(|r| r.addr <= addr)?;
        Some(r.data.map(|(c, o)| (r.layer, c, o + (addr - r.addr))))
    }
}

fn inside(ranges: &[(u64, u64)], addr: u64) -> bool {
    let i = ranges.partition_point(|&(_, e)| e <= addr);
    ranges.get(i).is_some_and(|&(s, _)| s <= addr)
}

/// Merges ascending pages into ranges.
fn ranges_of(pages: impl IntoIterator<Item = u64>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for a in pages {
        match out.last_mut() {
            Some((_, e)) if *e == a => *e += PAGE_SIZE,
            _ => out.push((a, a + PAGE_SIZE)),
        }
    }
    out
}

/// Sorts and merges ranges that touch or overlap.
pub fn union(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match out.last_mut() {
            Some((_, le)) if s <= *le => *le = (*le).max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// `from` minus `cut` (both ascending and apart).
fn subtract(from: &[(u64, u64)], cut: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(s, e) in from {
        let mut at = s;
        let first = cut.partition_point(|&(_, ce)| ce <= s);
        for &(cs, ce) in &cut[first..] {
            if cs >= e {
                break;
            }
            if cs > at {
                out.push((at, cs));
            }
            at = at.max(ce);
        }
        if at < e {
            out.push((at, e));
        }
    }
    out
}

/// The parts of `a` inside `b` (both ascending and apart).
fn intersect(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    subtract(a, &subtract(a, b))
}

/// What the child `child` (pages `child_runs`) keeps of its parent
/// `parent` (pages `parent_runs`) when it is forked from it. A page
/// shared at dump is kept when both images hold the same bytes for it:
/// the same place in the chain, or two places `same_bytes` finds equal
/// (in a chain the parent's page may come from an older layer than the
/// child's: a child forked after the first layer was stored whole by the
/// next one).
pub fn plan(
    child: &MmEntry,
    parent: &MmEntry,
    child_runs: &[Resolved],
    parent_runs: &[Resolved],
    same_bytes: &mut dyn FnMut(PageSrc, PageSrc) -> bool,
) -> Inherit {
    let mut keep = Vec::new();
    for v in child.vmas.iter().filter(|v| is_private(v)) {
        for p in parent
            .vmas
            .iter()
            .filter(|p| p.start < v.end && v.start < p.end)
        {
            if compatible(v, p) {
                keep.push((v.start.max(p.start), v.end.min(p.end)));
            }
        }
    }
    keep.sort_unstable();
    let special = |m: &MmEntry| -> Vec<(u64, u64, Option<VmaKind>)> {
        let mut s: Vec<_> = (m.vmas.iter().filter(|v| is_special(v)))
            .map(|v| (v.start, v.end, kind(v)))
            .collect();
        s.sort_unstable_by_key(|x| x.0);
        s
    };
    let vdso = if special(child) == special(parent) {
        special(child).into_iter().map(|(s, e, _)| (s, e)).collect()
    } else {
        Vec::new()
    };
    let (mine, theirs) = (Sources::new(child_runs), Sources::new(parent_runs));
    let mut pages = Vec::new();
    for v in &child.vmas {
        for run in v.cow_runs.chunks_exact(2) {
            for i in 0..run[1] {
                let a = run[0] + i * PAGE_SIZE;
                if !inside(&keep, a) {
                    continue;
                }
                if let (Some(x), Some(y)) = (mine.at(a), theirs.at(a)) {
                    if x == y || same_bytes(x, y) {
                        pages.push(a);
                    }
                }
            }
        }
    }
    pages.sort_unstable();
    pages.dedup();
    Inherit {
        keep,
        vdso,
        skip: ranges_of(pages),
    }
}

/// The VMA of `mm` holding `addr`.
fn vma_at(mm: &MmEntry, addr: u64) -> Option<&Vma> {
    mm.vmas.iter().find(|v| v.start <= addr && addr < v.end)
}

/// Turns what a child inherited by fork from its restored parent
/// (`parent`'s memory) into the start of its own (`mm`): everything but
/// what `inh` keeps and the restorer area `area` is unmapped; the kept
/// parts get the child's protections (writable, for its pages); guard
/// regions the parent installed there go; every page there that is not
/// in `inh.skip` is dropped.
pub fn adopt(
    agent: &mut dyn Calls,
    mm: &MmEntry,
    parent: &MmEntry,
    inh: &Inherit,
    area: (u64, u64),
) -> Result<()> {
    let pid = agent.pid();
    // One batch (`remote::batch`).
    let mut calls: Vec<(String, Syscall)> = Vec::new();
    let mut kept: Vec<(u64, u64)> = inh.keep.iter().chain(&inh.vdso).copied().collect();
    kept.push(area);
    kept.sort_unstable();
    let mut from = 0u64;
    for (s, e) in kept.into_iter().chain([(TASK_SIZE, TASK_SIZE)]) {
        if s > from {
            let c = Syscall::new(libc::SYS_munmap, &[from, s - from]);
            calls.push(("munmap a mapping inherited from the parent".into(), c));
        }
        from = from.max(e);
    }
    let rw = (libc::PROT_READ | libc::PROT_WRITE) as u32;
    for &(s, e) in &inh.keep {
        let v = vma_at(mm, s)
            .ok_or_else(|| Error::Restore(format!("pid {pid}: kept range {s:#x} is in no VMA")))?;
        let c = Syscall::new(libc::SYS_mprotect, &[s, e - s, (v.prot | rw) as u64]);
        calls.push((format!("mprotect {s:#x}-{e:#x}"), c));
    }
    let guards: Vec<(u64, u64)> = (parent.vmas.iter())
        .flat_map(|v| v.guard_runs.chunks_exact(2))
        .map(|g| (g[0], g[0] + g[1] * PAGE_SIZE))
        .collect();
    for (s, e) in intersect(&union(guards), &inh.keep) {
        let c = Syscall::new(libc::SYS_madvise, &[s, e - s, MADV_GUARD_REMOVE as u64]);
        let what = format!("madvise(MADV_GUARD_REMOVE): the parent's guard region {s:#x}-{e:#x}");
        calls.push((what, c));
    }
    for (s, e) in subtract(&inh.keep, &inh.skip) {
        let c = Syscall::new(libc::SYS_madvise, &[s, e - s, libc::MADV_DONTNEED as u64]);
        calls.push((format!("madvise(MADV_DONTNEED) {s:#x}-{e:#x}"), c));
    }
    agent.call_all(&calls).map(drop)
}

/// The VMAs of `mm` still to map after [`adopt`]: private VMAs minus
/// the kept parts (a file's offset moved with the start), the vDSO
/// unless kept, everything else as it is.
pub fn pieces(mm: &MmEntry, inh: &Inherit) -> MmEntry {
    let mut out = mm.clone();
    out.vmas.clear();
    for v in &mm.vmas {
        if is_special(v) && !inh.vdso.is_empty() {
            continue;
        }
        if !is_private(v) {
            out.vmas.push(v.clone());
            continue;
        }
        let piece = |s: u64, e: u64| {
            let mut p = v.clone();
            (p.start, p.end) = (s, e);
            if kind(v) == Some(VmaKind::VMA_FILE_PRIVATE) {
                p.pgoff = v.pgoff + (s - v.start);
            }
            p
        };
        for (s, e) in subtract(&[(v.start, v.end)], &inh.keep) {
            out.vmas.push(piece(s, e));
        }
    }
    out
}

/// `runs` minus the pages in `skip` (ascending and apart).
pub fn without(runs: &[Resolved], skip: &[(u64, u64)]) -> Vec<Resolved> {
    if skip.is_empty() {
        return runs.to_vec();
    }
    let mut out = Vec::with_capacity(runs.len());
    for r in runs {
        let end = r.addr + r.nr_pages * PAGE_SIZE;
        for (s, e) in subtract(&[(r.addr, end)], skip) {
            out.push(Resolved {
                addr: s,
                nr_pages: (e - s) / PAGE_SIZE,
                layer: r.layer,
                data: r.data.map(|(c, o)| (c, o + (s - r.addr))),
            });
        }
    }
    out
}

/// Writes zeros into the all-zero pages of `runs` that lie in `ranges`
/// (pages children keep), in private anonymous VMAs of `mm` and outside
/// `except` (pages this process kept itself): a restore leaves such pages
/// untouched, without a frame a child could share. Returns the pages
/// written.
pub fn populate_zeros(
    pid: i32,
    mm: &MmEntry,
    runs: &[Resolved],
    ranges: &[(u64, u64)],
    except: &[(u64, u64)],
) -> Result<u64> {
    if ranges.is_empty() {
        return Ok(0);
    }
    let anon: Vec<(u64, u64)> = union(
        (mm.vmas.iter())
            .filter(|v| kind(v) == Some(VmaKind::VMA_ANON_PRIVATE))
            .map(|v| (v.start, v.end))
            .collect(),
    );
    let zero_runs: Vec<(u64, u64)> = union(
        (runs.iter().filter(|r| r.data.is_none()))
            .map(|r| (r.addr, r.addr + r.nr_pages * PAGE_SIZE))
            .collect(),
    );
    let targets = subtract(&intersect(&intersect(&zero_runs, &anon), ranges), except);
    let zeros = vec![0u8; (256 * PAGE_SIZE) as usize];
    let mut n = 0;
    for (s, e) in targets {
        let mut a = s;
        while a < e {
            let len = (e - a).min(zeros.len() as u64);
            mem::vm_write_all(pid, a, &zeros[..len as usize]).map_err(|err| {
                Error::sys(
                    pid,
                    format!("write {} zero pages at {a:#x}", len / PAGE_SIZE),
                    err,
                )
            })?;
            a += len;
        }
        n += (e - s) / PAGE_SIZE;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = PAGE_SIZE;

    fn vma(start: u64, end: u64, kind: VmaKind, file_id: u32, pgoff: u64) -> Vma {
        let mut v = Vma::new();
        (v.start, v.end, v.kind, v.file_id, v.pgoff) = (start, end, kind.into(), file_id, pgoff);
        v.prot = (libc::PROT_READ | libc::PROT_WRITE) as u32;
        v
    }

    fn run(addr: u64, nr: u64, data: Option<(u32, u64)>) -> Resolved {
        Resolved {
            addr,
            nr_pages: nr,
            layer: 0,
            data,
        }
    }

    #[test]
    fn ranges_subtract_and_merge() {
        assert_eq!(
            subtract(&[(0, 10 * P)], &[(2 * P, 3 * P), (5 * P, 12 * P)]),
            vec![(0, 2 * P), (3 * P, 5 * P)]
        );
        assert_eq!(subtract(&[(0, P)], &[]), vec![(0, P)]);
        assert_eq!(
            union(vec![(5 * P, 6 * P), (0, P), (P, 2 * P)]),
            vec![(0, 2 * P), (5 * P, 6 * P)]
        );
        assert_eq!(ranges_of([0, P, 3 * P]), vec![(0, 2 * P), (3 * P, 4 * P)]);
    }

    /// The child keeps the parts of its private VMAs that the parent maps
    /// the same way, and there the pages shared at dump whose bytes are
    /// the parent's; a different file, offset or kind is mapped anew.
    #[test]
    fn plan_keeps_what_the_parent_maps_the_same_way() {
        let anon = VmaKind::VMA_ANON_PRIVATE;
        let file = VmaKind::VMA_FILE_PRIVATE;
        let mut parent = MmEntry::new();
        parent.vmas = vec![
            vma(0x10 * P, 0x20 * P, file, 3, 0),
            vma(0x20 * P, 0x30 * P, file, 3, 0x10 * P),
            vma(0x100 * P, 0x110 * P, anon, 0, 0),
            vma(0x200 * P, 0x210 * P, anon, 0, 0),
        ];
        let mut child = MmEntry::new();
        child.vmas = vec![
            // Same file, same offsets: kept.
            vma(0x10 * P, 0x20 * P, file, 3, 0),
            // Same file, another offset: mapped anew.
            vma(0x20 * P, 0x30 * P, file, 3, 0),
            // Larger than the parent's: the overlap is kept.
            vma(0x100 * P, 0x120 * P, anon, 0, 0),
            // Shared memory where the parent had private: not kept.
            vma(0x200 * P, 0x210 * P, VmaKind::VMA_ANON_SHARED, 0, 0),
        ];
        // Shared at dump: 0x100..0x104 (same place), 0x104 (other bytes),
        // 0x105 (both zero), 0x106..0x108 (the same bytes in another
        // chunk, as an older layer holds the parent's), 0x118 (outside the
        // parent's VMA).
        child.vmas[2].cow_runs = vec![0x100 * P, 8, 0x118 * P, 1];
        let parent_runs = vec![
            run(0x100 * P, 5, Some((1, 0))),
            run(0x105 * P, 1, None),
            run(0x106 * P, 2, Some((1, 6 * P))),
        ];
        let child_runs = vec![
            run(0x100 * P, 4, Some((1, 0))),
            run(0x104 * P, 1, Some((2, 0))),
            run(0x105 * P, 1, None),
            run(0x106 * P, 2, Some((3, 0))),
            run(0x118 * P, 1, Some((2, P))),
        ];
        let mut asked = Vec::new();
        // Chunk 3 holds at 0.. what chunk 1 holds at 6 P..; chunk 2 other
        // bytes.
        let mut same = |x: PageSrc, y: PageSrc| {
            asked.push((x, y));
            matches!((x, y), (Some((0, 3, o)), Some((0, 1, q))) if q == 6 * P + o)
        };
        let inh = plan(&child, &parent, &child_runs, &parent_runs, &mut same);
        assert_eq!(
            asked.len(),
            3,
            "only pages in different places are read: {asked:?}"
        );
        assert_eq!(inh.keep, vec![(0x10 * P, 0x20 * P), (0x100 * P, 0x110 * P)]);
        assert_eq!(
            inh.skip,
            vec![(0x100 * P, 0x104 * P), (0x105 * P, 0x108 * P)]
        );
        assert_eq!(inh.shared_pages(), 7);
        assert!(inh.vdso.is_empty());
        let rest = pieces(&child, &inh);
        let got: Vec<(u64, u64, u64)> = rest
            .vmas
            .iter()
            .map(|v| (v.start, v.end, v.pgoff))
            .collect();
        assert_eq!(
            got,
            vec![
                (0x20 * P, 0x30 * P, 0),
                (0x110 * P, 0x120 * P, 0),
                (0x200 * P, 0x210 * P, 0)
            ]
        );
        let own = without(&child_runs, &inh.skip);
        assert_eq!(
            own,
            vec![
                run(0x104 * P, 1, Some((2, 0))),
                run(0x118 * P, 1, Some((2, P)))
            ]
        );
    }

    /// A data run cut by kept pages keeps pointing at its own bytes.
    #[test]
    fn without_moves_chunk_offsets() {
        let r = vec![run(0x10 * P, 4, Some((7, 100)))];
        assert_eq!(
            without(&r, &[(0x11 * P, 0x12 * P)]),
            vec![
                run(0x10 * P, 1, Some((7, 100))),
                run(0x12 * P, 2, Some((7, 100 + 2 * P)))
            ]
        );
    }

    /// The vDSO is kept only where the parent has it.
    #[test]
    fn vdso_kept_only_in_place() {
        let mut parent = MmEntry::new();
        parent.vmas = vec![
            vma(0x7000 * P, 0x7004 * P, VmaKind::VMA_VVAR, 0, 0),
            vma(0x7004 * P, 0x7006 * P, VmaKind::VMA_VDSO, 0, 0),
        ];
        let child = parent.clone();
        let inh = plan(&child, &parent, &[], &[], &mut |_, _| false);
        assert_eq!(
            inh.vdso,
            vec![(0x7000 * P, 0x7004 * P), (0x7004 * P, 0x7006 * P)]
        );
        assert!(pieces(&child, &inh).vmas.is_empty());
        let mut moved = child.clone();
        for v in moved.vmas.iter_mut() {
            v.start += 0x100 * P;
            v.end += 0x100 * P;
        }
        let inh = plan(&moved, &parent, &[], &[], &mut |_, _| false);
        assert!(inh.vdso.is_empty());
        assert_eq!(pieces(&moved, &inh).vmas.len(), 2);
    }

    /// The child gets rid of what it does not keep: unmapped around the
    /// kept parts and the restorer area, the kept part writable, every
    /// page of it but the shared ones dropped.
    #[test]
    fn adopt_unmaps_and_drops_on_the_fake() {
        use crate::remote::fake::{FakeTask, FakeWorld};
        let w = FakeWorld::new();
        let mut t = FakeTask::new(&w, 100);
        let mut mm = MmEntry::new();
        mm.vmas = vec![vma(0x100 * P, 0x110 * P, VmaKind::VMA_ANON_PRIVATE, 0, 0)];
        mm.vmas[0].prot = libc::PROT_READ as u32;
        let inh = Inherit {
            keep: vec![(0x100 * P, 0x110 * P)],
            vdso: Vec::new(),
            skip: vec![(0x102 * P, 0x104 * P)],
        };
        let area = (0x7e00_0000_0000, 0x7e00_0001_1000);
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let fl = libc::MAP_PRIVATE | libc::MAP_FIXED;
        // What the fork left: the parent's mappings and the area.
        for (s, e) in [(0x50 * P, 0x60 * P), (0x100 * P, 0x120 * P), area] {
            t.mmap_anon("inherited", s, e - s, rw, fl).unwrap();
        }
        adopt(&mut t, &mm, &mm.clone(), &inh, area).unwrap();
        let left: Vec<(u64, u64, i32)> =
            t.mm.vmas.iter().map(|(&s, v)| (s, v.end, v.prot)).collect();
        assert_eq!(
            left,
            vec![(0x100 * P, 0x110 * P, rw), (area.0, area.1, rw)],
            "{:?}",
            t.log
        );
        let dropped: Vec<(u64, u64, i32)> = t.mm.advice.clone();
        assert_eq!(
            dropped,
            vec![
                (0x100 * P, 2 * P, libc::MADV_DONTNEED),
                (0x104 * P, 0xc * P, libc::MADV_DONTNEED)
            ]
        );
    }
}
