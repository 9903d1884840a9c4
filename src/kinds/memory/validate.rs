//! Validation of the mm and pagemap images (called through
//! [`crate::image::validate`], the index of every kind's checks): VMAs
//! and mm fields, a pagemap's own shape, and its runs against the
//! address space and the page store.

use std::collections::HashMap;
use std::path::Path;

use super::TASK_SIZE;
use crate::error::{Error, Result};
use crate::image::pages::PageStoreReader;
use crate::image::proto::{file_desc, FileDesc, MmEntry, Pagemap, RunKind, VmaKind};
use crate::image::validate::{bad, check_desc_ref, count, short, MAX_ITEMS, PAGE, PATH_MAX};
use crate::sys::PAGE_SIZE;

/// Most words of an auxiliary vector (the kernel's `AT_VECTOR_SIZE` is
/// about 50 and grows with new entries; it checks the exact size itself).
const AUXV_WORDS: usize = 128;
/// The VMAs the kernel places itself (restore maps them with
/// `ARCH_MAP_VDSO_64`): no page data can be written into them.
const KERNEL_VMAS: [VmaKind; 4] = [
    VmaKind::VMA_VDSO,
    VmaKind::VMA_VVAR,
    VmaKind::VMA_VVAR_VCLOCK,
    VmaKind::VMA_VSYSCALL,
];

/// Runs (first address, pages) of a VMA [start, end) in `field`: pairs
/// of page-aligned, non-empty runs inside the VMA, ascending and apart.
fn page_runs(path: &Path, vo: &str, field: &str, runs: &[u64], start: u64, end: u64) -> Result<()> {
    if !runs.len().is_multiple_of(2) {
        return Err(bad(path, vo, field, "not pairs (address, pages)"));
    }
    let mut last = start;
    for g in runs.chunks_exact(2) {
        let inside = g[0] % PAGE == 0
            && g[1] != 0
            && g[0] >= last
            && g[1]
                .checked_mul(PAGE)
                .and_then(|l| l.checked_add(g[0]))
                .is_some_and(|e| e <= end);
        if !inside {
            return Err(bad(
                path,
                vo,
                field,
                format!(
                    "{:#x} ({} pages): not page-aligned pages inside the VMA, after the run before",
                    g[0], g[1]
                ),
            ));
        }
        last = g[0] + g[1] * PAGE;
    }
    Ok(())
}

/// `mm-<pid>.img`: VMAs, mm fields, auxv, and their references into
/// files.img.
pub fn mm(m: &MmEntry, pid: u32, descs: &HashMap<u32, &FileDesc>, path: &Path) -> Result<()> {
    let obj = format!("pid {pid}");
    if m.pid != 0 && m.pid != pid {
        return Err(bad(
            path,
            &obj,
            "pid",
            format!("holds pid {}, expected {pid}", m.pid),
        ));
    }
    count(path, &obj, "vmas", m.vmas.len(), MAX_ITEMS)?;
    let mut order: Vec<usize> = (0..m.vmas.len()).collect();
    order.sort_by_key(|&i| m.vmas[i].start);
    let mut last_end = 0u64;
    for i in order {
        let v = &m.vmas[i];
        let vo = format!("vma {i} ({:#x}-{:#x})", v.start, v.end);
        let kind = v
            .kind
            .enum_value()
            .map_err(|k| bad(path, &vo, "kind", format!("unknown kind {k}")))?;
        for (f, a) in [("start", v.start), ("end", v.end), ("pgoff", v.pgoff)] {
            if a % PAGE != 0 {
                return Err(bad(path, &vo, f, format!("{a:#x}: not page-aligned")));
            }
        }
        if v.start >= v.end {
            return Err(bad(path, &vo, "end", "not above start"));
        }
        if v.end > TASK_SIZE {
            return Err(bad(
                path,
                &vo,
                "end",
                format!("above the user address space ({TASK_SIZE:#x})"),
            ));
        }
        if v.start < last_end {
            return Err(bad(path, &vo, "start", "overlaps the VMA below it"));
        }
        last_end = v.end;
        if v.pgoff.checked_add(v.end - v.start).is_none() {
            return Err(bad(path, &vo, "pgoff", "offset plus length overflows"));
        }
        if v.prot & !7 != 0 {
            return Err(bad(
                path,
                &vo,
                "prot",
                format!("{:#x}: not PROT_READ|WRITE|EXEC", v.prot),
            ));
        }
        if v.name.len() >= PATH_MAX || v.name.contains('\0') {
            return Err(bad(
                path,
                &vo,
                "name",
                "longer than PATH_MAX or holds a NUL byte",
            ));
        }
        count(path, &vo, "vm_flags", v.vm_flags.len(), 64)?;
        page_runs(path, &vo, "guard_runs", &v.guard_runs, v.start, v.end)?;
        page_runs(path, &vo, "cow_runs", &v.cow_runs, v.start, v.end)?;
        if !v.cow_runs.is_empty()
            && !matches!(kind, VmaKind::VMA_ANON_PRIVATE | VmaKind::VMA_FILE_PRIVATE)
        {
            return Err(bad(path, &vo, "cow_runs", "in a VMA that is not private"));
        }
        if v.memfd {
            check_memfd(v, kind, path, &vo)?;
        }
        if matches!(kind, VmaKind::VMA_FILE_PRIVATE | VmaKind::VMA_FILE_SHARED) {
            let reg = |k: &file_desc::Kind| {
                matches!(k, file_desc::Kind::Reg(_) | file_desc::Kind::Memfd(_))
            };
            check_desc_ref(descs, v.file_id, reg, path, &vo, "file_id", "a file")?;
        }
    }
    super::aio::validate(m).map_err(|(o, f, why)| bad(path, o, f, why))?;
    let fields = [
        ("start_code", m.start_code),
        ("end_code", m.end_code),
        ("start_data", m.start_data),
        ("end_data", m.end_data),
        ("start_brk", m.start_brk),
        ("brk", m.brk),
        ("start_stack", m.start_stack),
        ("arg_start", m.arg_start),
        ("arg_end", m.arg_end),
        ("env_start", m.env_start),
        ("env_end", m.env_end),
    ];
    for (f, a) in fields {
        if a >= TASK_SIZE {
            return Err(bad(path, &obj, f, format!("{a:#x}: not a user address")));
        }
    }
    for (lo, hi, a, b) in [
        ("start_code", "end_code", m.start_code, m.end_code),
        ("start_data", "end_data", m.start_data, m.end_data),
        ("start_brk", "brk", m.start_brk, m.brk),
        ("arg_start", "arg_end", m.arg_start, m.arg_end),
        ("env_start", "env_end", m.env_start, m.env_end),
    ] {
        if a > b {
            return Err(bad(path, &obj, hi, format!("{b:#x} below {lo} {a:#x}")));
        }
    }
    if m.auxv.len() > AUXV_WORDS || !m.auxv.len().is_multiple_of(2) {
        return Err(bad(
            path,
            &obj,
            "auxv",
            format!("{} words: pairs, at most {AUXV_WORDS}", m.auxv.len()),
        ));
    }
    if !m.vmas.is_empty() {
        let exe = |k: &file_desc::Kind| matches!(k, file_desc::Kind::Reg(_));
        check_desc_ref(
            descs,
            m.exe_file_id,
            exe,
            path,
            &obj,
            "exe_file_id",
            "a regular file",
        )?;
    }
    Ok(())
}

/// The memfd fields of a VMA (see `memory::mapfiles`): shared memory
/// only, a name memfd_create takes, seals it can add again, a size a
/// memfd can have.
fn check_memfd(v: &crate::image::proto::Vma, kind: VmaKind, path: &Path, vo: &str) -> Result<()> {
    if kind != VmaKind::VMA_ANON_SHARED {
        return Err(bad(
            path,
            vo,
            "memfd",
            "set on a VMA that is not shared memory",
        ));
    }
    if v.memfd_name.len() > 249 || v.memfd_name.contains(['\0', '/']) {
        return Err(bad(
            path,
            vo,
            "memfd_name",
            "longer than 249 bytes or holds a NUL or a slash",
        ));
    }
    // F_SEAL_WRITE and F_SEAL_FUTURE_WRITE are refused at dump.
    if v.memfd_seals & !0x27 != 0 {
        return Err(bad(
            path,
            vo,
            "memfd_seals",
            format!("{:#x}: not seals restore adds", v.memfd_seals),
        ));
    }
    if v.memfd_size > i64::MAX as u64 {
        return Err(bad(path, vo, "memfd_size", "above the largest file size"));
    }
    Ok(())
}

/// A pagemap's own shape: owner as expected (`pid:<pid>` for private
/// memory), runs non-empty, in bounds, sorted and disjoint, of a known
/// kind; `RUN_PARENT` only in a layer with a parent.
pub fn pagemap(pm: &Pagemap, owner: &str, has_parent: bool, path: &Path) -> Result<()> {
    if pm.owner != owner {
        return Err(bad(
            path,
            "pagemap",
            "owner",
            format!("{:?}, expected {owner:?}", short(&pm.owner)),
        ));
    }
    count(path, "pagemap", "runs", pm.runs.len(), MAX_ITEMS * 16)?;
    let mut spans: Vec<(u64, u64, usize)> = Vec::with_capacity(pm.runs.len());
    let mut data: Vec<(u32, u64, u64, usize)> = Vec::new();
    for (i, r) in pm.runs.iter().enumerate() {
        let ro = format!("run {i} at {:#x}", r.addr);
        let kind = r
            .kind
            .enum_value()
            .map_err(|k| bad(path, &ro, "kind", format!("unknown kind {k}")))?;
        if kind == RunKind::RUN_PARENT && !has_parent {
            return Err(bad(
                path,
                &ro,
                "kind",
                "RUN_PARENT in a layer without a parent",
            ));
        }
        if r.addr % PAGE != 0 {
            return Err(bad(path, &ro, "addr", "not page-aligned"));
        }
        if r.nr_pages == 0 {
            return Err(bad(path, &ro, "nr_pages", "0"));
        }
        let end = r
            .nr_pages
            .checked_mul(PAGE)
            .and_then(|l| r.addr.checked_add(l))
            .filter(|&e| !owner.starts_with("pid:") || e <= TASK_SIZE)
            .ok_or_else(|| {
                bad(
                    path,
                    &ro,
                    "nr_pages",
                    format!("{}: beyond the address space", r.nr_pages),
                )
            })?;
        if kind == RunKind::RUN_DATA {
            if r.chunk_offset % PAGE != 0 {
                return Err(bad(path, &ro, "chunk_offset", "not page-aligned"));
            }
            let data_end = r
                .chunk_offset
                .checked_add(end - r.addr)
                .ok_or_else(|| bad(path, &ro, "chunk_offset", "offset plus length overflows"))?;
            data.push((r.chunk, r.chunk_offset, data_end, i));
        }
        spans.push((r.addr, end, i));
    }
    // Each byte of page data is the contents of one page of this owner:
    // runs that share data would multiply what a small image restores.
    data.sort_unstable();
    for w in data.windows(2) {
        if w[0].0 == w[1].0 && w[1].1 < w[0].2 {
            return Err(bad(
                path,
                format!("run {}", w[1].3),
                "chunk_offset",
                format!(
                    "data of chunk {} at {:#x} is also the data of run {} (reused page data)",
                    w[1].0, w[1].1, w[0].3
                ),
            ));
        }
    }
    spans.sort_unstable();
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(bad(
                path,
                format!("run {} at {:#x}", w[1].2, w[1].0),
                "addr",
                format!("overlaps run {}", w[0].2),
            ));
        }
    }
    Ok(())
}

/// Private page runs of `pm` against the address space `m`: none in a
/// VMA the kernel places itself (\[vdso\], \[vvar\], \[vsyscall\]), where
/// restore cannot write.
pub fn pagemap_vmas(pm: &Pagemap, m: &MmEntry, path: &Path) -> Result<()> {
    if !pm.owner.starts_with("pid:") {
        return Ok(());
    }
    let special: Vec<(u64, u64, &str)> = m
        .vmas
        .iter()
        .filter(|v| v.kind.enum_value().is_ok_and(|k| KERNEL_VMAS.contains(&k)))
        .map(|v| (v.start, v.end, v.name.as_str()))
        .collect();
    for (i, r) in pm.runs.iter().enumerate() {
        let end = r.addr.saturating_add(r.nr_pages.saturating_mul(PAGE));
        if let Some((s, e, n)) = special.iter().find(|(s, e, _)| r.addr < *e && *s < end) {
            return Err(bad(
                path,
                format!("run {i} at {:#x}", r.addr),
                "addr",
                format!(
                    "inside {} ({s:#x}-{e:#x}), which the kernel maps: no pages can be restored there",
                    if n.is_empty() { "a kernel-placed VMA" } else { n }
                ),
            ));
        }
    }
    Ok(())
}

/// Checks that every run of `pm` lies inside a VMA of the right kind and
/// inside its chunk.
pub fn pagemap_in_mm(
    pm: &Pagemap,
    mm: &MmEntry,
    store: &PageStoreReader,
    path: &Path,
) -> Result<()> {
    let shared_kind = if pm.owner.starts_with("sysv:") {
        VmaKind::VMA_SYSV_SHM
    } else {
        VmaKind::VMA_ANON_SHARED
    };
    let shmid = pm
        .owner
        .strip_prefix("shmem:")
        .or_else(|| pm.owner.strip_prefix("sysv:"))
        .and_then(|s| s.parse::<u64>().ok());
    for r in &pm.runs {
        let len = r
            .nr_pages
            .checked_mul(PAGE_SIZE)
            .ok_or_else(|| Error::image(path, "run too long"))?;
        let end = r
            .addr
            .checked_add(len)
            .ok_or_else(|| Error::image(path, "run wraps"))?;
        let inside = match shmid {
            None => mm.vmas.iter().any(|v| v.start <= r.addr && end <= v.end),
            Some(id) => mm
                .vmas
                .iter()
                .any(|v| v.shmid == id && v.kind.enum_value() == Ok(shared_kind)),
        };
        if !inside || r.addr % PAGE_SIZE != 0 {
            return Err(Error::image(
                path,
                format!(
                    "run at {:#x} ({} pages) is outside every VMA",
                    r.addr, r.nr_pages
                ),
            ));
        }
        if r.kind.enum_value() == Ok(RunKind::RUN_DATA) {
            let c = store.store.chunks.get(r.chunk as usize).ok_or_else(|| {
                Error::image(path, format!("run at {:#x}: no chunk {}", r.addr, r.chunk))
            })?;
            if r.chunk_offset
                .checked_add(len)
                .is_none_or(|e| e > c.raw_len)
            {
                return Err(Error::image(
                    path,
                    format!("run at {:#x} overruns chunk {}", r.addr, r.chunk),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::proto::Vma;

    #[test]
    fn vmas_are_checked_field_by_field() {
        let p = Path::new("mm-1.img");
        let descs = HashMap::new();
        let mut m = MmEntry::new();
        m.pid = 1;
        let mut v = Vma::new();
        v.start = 0x1000;
        v.end = 0x3000;
        m.vmas.push(v.clone());
        mm(&m, 1, &descs, p).unwrap_err(); // exe_file_id 0 names nothing
        m.vmas[0].end = 0x3001;
        let e = mm(&m, 1, &descs, p).unwrap_err().to_string();
        assert!(
            e.contains("mm-1.img") && e.contains("vma 0") && e.contains("end"),
            "{e}"
        );
        m.vmas[0].end = 0x3000;
        // Guard regions: pairs of whole pages inside the VMA.
        for bad_runs in [
            vec![0x1000],
            vec![0x2000, 2],
            vec![0x1800, 1],
            vec![0x1000, 0],
        ] {
            m.vmas[0].guard_runs = bad_runs;
            let e = mm(&m, 1, &descs, p).unwrap_err().to_string();
            assert!(e.contains("guard_runs"), "{e}");
        }
        m.vmas[0].guard_runs = vec![0x2000, 1];
        let e = mm(&m, 1, &descs, p).unwrap_err().to_string();
        assert!(!e.contains("guard_runs"), "{e}");
        // Copy-on-write runs: the same, ascending, in private VMAs only.
        m.vmas[0].kind = VmaKind::VMA_ANON_PRIVATE.into();
        for bad_runs in [vec![0x2000, 1, 0x1000, 1], vec![0x1000, 2, 0x2000, 1]] {
            m.vmas[0].cow_runs = bad_runs;
            let e = mm(&m, 1, &descs, p).unwrap_err().to_string();
            assert!(e.contains("cow_runs"), "{e}");
        }
        m.vmas[0].cow_runs = vec![0x1000, 1, 0x2000, 1];
        let e = mm(&m, 1, &descs, p).unwrap_err().to_string();
        assert!(!e.contains("cow_runs"), "{e}");
        m.vmas[0].kind = VmaKind::VMA_ANON_SHARED.into();
        let e = mm(&m, 1, &descs, p).unwrap_err().to_string();
        assert!(e.contains("cow_runs") && e.contains("not private"), "{e}");
        m.vmas[0].kind = Default::default();
        m.vmas[0].cow_runs.clear();
        m.vmas.push(v);
        let e = mm(&m, 1, &descs, p).unwrap_err().to_string();
        assert!(e.contains("overlaps"), "{e}");
    }

    #[test]
    fn no_vma_above_the_user_address_space() {
        // Not even [vsyscall]: the dump never records it, and the check
        // `memory::validate_mm` made before this one refused it.
        let p = Path::new("mm-1.img");
        let mut m = MmEntry::new();
        let mut v = Vma::new();
        v.start = 0xffff_ffff_ff60_0000;
        v.end = 0xffff_ffff_ff60_1000;
        v.kind = VmaKind::VMA_VSYSCALL.into();
        m.vmas.push(v);
        let e = mm(&m, 1, &HashMap::new(), p).unwrap_err().to_string();
        assert!(e.contains("above the user address space"), "{e}");
    }
}
