//! AIO contexts (io_setup, `/[aio] (deleted)` mappings): saved and
//! restored exactly, or refused at dump.
//!
//! Dump: the kernel's side of each ring's context (`struct kioctx`) comes
//! from BPF (`sys::aio`, bpf/aio.bpf.c), since /proc shows none of it. A
//! ring is refused when its context has requests in flight (submitted,
//! not completed: they cannot be submitted again as they were), is not
//! the process's own (a ring mapping inherited through fork: the child
//! has no context behind it), was moved or partly unmapped, or when BPF
//! cannot tell. Otherwise the ring is saved whole (header with head and
//! tail, every event slot) with the kernel's tail (`ctx->tail`, which the
//! kernel never reads back from the ring) and the `nr_events` asked for.
//!
//! Restore (after the process's pages, before its children are forked):
//! a placeholder holds every ring's address; then per ring `io_setup`
//! with an `nr_events` that gives a ring of the same size, dummy requests
//! (`IOCB_CMD_POLL` for `POLLOUT` on an eventfd, which completes at once)
//! bring the kernel's tail to the saved one, `mremap` moves the ring to
//! its address (the kernel's `aio_ring_mremap` makes that address the
//! context id again), and the saved bytes are written over it.

use crate::error::{Error, Result};
use crate::image::proto::aio::AioRing;
use crate::image::proto::MmEntry;
use crate::procfs::MapsEntry;
use crate::remote::Calls;
use crate::sys::aio::KernelRing;
use crate::sys::{mem, PAGE_SIZE};

/// sizeof(struct aio_ring) and sizeof(struct io_event).
const HEADER: u64 = 32;
const EVENT: u64 = 32;
/// Events per page: a ring of P pages holds P * 128 - 1 events.
const PER_PAGE: u64 = PAGE_SIZE / EVENT;
/// Largest ring cairn saves (the kernel's limit is 0x10000000 bytes of
/// events, far above fs.aio-max-nr's default).
pub const MAX_RING: u64 = 64 << 20;

/// Bound on a context's index in an image (fillers are created for the
/// free indexes below it).
const MAX_ID: u32 = 4096;

/// VmFlags of a ring as io_setup maps it.
const RING_FLAGS: [&str; 7] = ["rd", "wr", "sh", "mr", "mw", "ms", "de"];
/// The kernel's bookkeeping letters (as `vma::BOOKKEEPING_FLAGS`).
const BOOKKEEPING: [&str; 5] = ["ac", "sd", "uw", "um", "ui"];

/// Whether maps entry `m` is an AIO ring.
pub(super) fn is_ring(m: &MapsEntry) -> bool {
    m.path == "/[aio] (deleted)" || m.path == "[aio]"
}

fn range(m: &MapsEntry) -> String {
    format!("AIO ring {:#x}-{:#x} (io_setup)", m.start, m.end)
}

/// Refuses, with the pid and the ring's address, a ring that cannot be
/// restored exactly: VmFlags other than io_setup's (mprotect, mlock,
/// madvise on it), or what the kernel's context says ([`check_kernel`]).
pub(super) fn check(pid: i32, m: &MapsEntry) -> Result<()> {
    if let Some(f) = m
        .vm_flags
        .iter()
        .find(|f| !RING_FLAGS.contains(&f.as_str()) && !BOOKKEEPING.contains(&f.as_str()))
    {
        return Err(Error::unsupported(
            pid,
            format!(
                "{}: VmFlags \"{f}\" (changed after io_setup): not restored",
                range(m)
            ),
        ));
    }
    if !(m.read && m.write && m.shared) || m.exec {
        return Err(Error::unsupported(
            pid,
            format!(
                "{}: protections changed after io_setup: not restored",
                range(m)
            ),
        ));
    }
    let rings = kernel_rings(pid, m)?;
    check_kernel(pid, m, &rings)
}

fn kernel_rings(pid: i32, m: &MapsEntry) -> Result<Vec<KernelRing>> {
    crate::sys::aio::rings(pid).map_err(|e| {
        Error::unsupported(
            pid,
            format!(
                "{}: the kernel's context could not be read with BPF ({e}), so requests in \
                 flight cannot be ruled out",
                range(m)
            ),
        )
    })
}

/// The refusals of one ring from its kernel context (see the module doc).
fn check_kernel(pid: i32, m: &MapsEntry, rings: &[KernelRing]) -> Result<()> {
    let no = |why: String| Err(Error::unsupported(pid, format!("{}: {why}", range(m))));
    let Some(k) = rings.iter().find(|k| k.start == m.start) else {
        return no("the kernel iterator did not see it".into());
    };
    if !k.has_ctx || !k.owned {
        return no(format!(
            "not a context of pid {pid} (a ring mapping inherited through fork, or of a \
             destroyed context): the kernel has no context for it here, which a restore cannot \
             recreate"
        ));
    }
    if k.dead {
        return no("its context is being destroyed".into());
    }
    if k.in_flight != 0 || k.active_reqs {
        return no(format!(
            "{} request(s) in flight (submitted, not completed{}): they cannot be submitted \
             again as they were",
            if k.in_flight > 0 { k.in_flight } else { 1 },
            if k.active_reqs {
                ", e.g. IOCB_CMD_POLL waiting"
            } else {
                ""
            }
        ));
    }
    let len = m.end - m.start;
    if k.user_id != m.start || k.mmap_size != len {
        return no(format!(
            "the context (id {:#x}, {} bytes) does not match its mapping (moved or partly \
             unmapped)",
            k.user_id, k.mmap_size
        ));
    }
    if !len.is_multiple_of(PAGE_SIZE) || k.nr_events as u64 != len / PAGE_SIZE * PER_PAGE - 1 {
        return no(format!(
            "{} events in {len} bytes: not a ring io_setup makes",
            k.nr_events
        ));
    }
    let owned = rings.iter().filter(|k| k.owned && k.has_ctx).count();
    if (k.table_live as usize) > owned {
        return no(format!(
            "pid {pid} has {} AIO contexts and only {owned} mapped ring(s): a context whose \
             ring was unmapped is not restored",
            k.table_live
        ));
    }
    Ok(())
}

/// At dump (frozen): every AIO ring of `smaps`, checked and saved.
pub(super) fn dump_rings(pid: i32, smaps: &[MapsEntry]) -> Result<Vec<AioRing>> {
    let maps: Vec<&MapsEntry> = smaps.iter().filter(|m| is_ring(m)).collect();
    let Some(first) = maps.first() else {
        return Ok(Vec::new());
    };
    let rings = kernel_rings(pid, first)?;
    let mut out = Vec::new();
    for m in maps {
        check_kernel(pid, m, &rings)?;
        let k = rings.iter().find(|k| k.start == m.start).ok_or_else(|| {
            Error::unsupported(
                pid,
                format!("{}: not seen by the kernel iterator", range(m)),
            )
        })?;
        let mut contents = vec![0u8; (m.end - m.start) as usize];
        mem::vm_read_all(pid, m.start, &mut contents)
            .map_err(|e| Error::sys(pid, format!("read {}", range(m)), e))?;
        let mut r = AioRing::new();
        r.start = m.start;
        r.end = m.end;
        r.nr_events = k.nr_events;
        r.max_reqs = k.max_reqs;
        r.tail = k.tail;
        r.id = k.id;
        let word = u32::from_ne_bytes(contents[0..4].try_into().unwrap_or([0; 4]));
        if word != k.id {
            return Err(Error::unsupported(
                pid,
                format!(
                    "{}: the ring header's id is {word}, the context's {}: a ring the program \
                     wrote over is not restored",
                    range(m),
                    k.id
                ),
            ));
        }
        r.contents = contents;
        out.push(r);
    }
    Ok(out)
}

/// Pages of the ring io_setup(`n`) makes on a machine with `cpus`
/// possible CPUs (fs/aio.c: ioctx_alloc, aio_setup_ring).
fn ring_pages(n: u64, cpus: u64) -> u64 {
    let events = 2 * n.max(cpus * 4) + 2;
    (HEADER + EVENT * events).div_ceil(PAGE_SIZE)
}

/// The nr_events to ask io_setup for a ring of `pages` pages: the one the
/// program asked for when known and it gives that size here, else the
/// smallest that does.
fn setup_nr(max_reqs: u32, pages: u64, cpus: u64) -> Option<u32> {
    if max_reqs > 0 && ring_pages(max_reqs as u64, cpus) == pages {
        return Some(max_reqs);
    }
    let n = ((pages - 1) * PER_PAGE / 2).max(1);
    (ring_pages(n, cpus) == pages).then_some(n as u32)
}

/// Possible CPUs (/sys/devices/system/cpu/possible, "0-7,9").
fn possible_cpus() -> Result<u64> {
    let p = "/sys/devices/system/cpu/possible";
    let s = std::fs::read_to_string(p).map_err(|e| Error::sys(0, format!("read {p}"), e))?;
    let mut n = 0;
    for part in s.trim().split(',').filter(|x| !x.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (u64, u64) = (
            a.parse().map_err(|_| Error::parse(p, s.clone()))?,
            b.parse().map_err(|_| Error::parse(p, s.clone()))?,
        );
        n += b.saturating_sub(a) + 1;
    }
    Ok(n.max(1))
}

const IOCB_CMD_POLL: u16 = 5;
/// Dummy requests per io_submit.
const BATCH: u64 = 256;

/// Submits `n` requests that complete at once (POLLOUT on `efd`) on
/// context `ctx`.
fn complete_dummies(agent: &mut dyn Calls, ctx: u64, efd: u64, n: u64) -> Result<()> {
    let pid = agent.pid();
    let mut iocb = [0u8; 64];
    iocb[16..18].copy_from_slice(&IOCB_CMD_POLL.to_ne_bytes());
    iocb[20..24].copy_from_slice(&(efd as u32).to_ne_bytes());
    iocb[24..32].copy_from_slice(&(libc::POLLOUT as u64).to_ne_bytes());
    let at = agent.put(0, &iocb)?;
    let ptrs: Vec<u8> = (0..BATCH).flat_map(|_| at.to_ne_bytes()).collect();
    let pp = agent.put(64, &ptrs)?;
    let mut left = n;
    while left > 0 {
        let k = agent.io_submit(ctx, left.min(BATCH), pp)?;
        if k == 0 {
            return Err(Error::Restore(format!(
                "pid {pid}: AIO context {ctx:#x}: io_submit took no request ({left} of {n} left)"
            )));
        }
        left -= k.min(left);
    }
    Ok(())
}

fn ring_word(pid: i32, addr: u64, off: u64) -> Result<u32> {
    let mut b = [0u8; 4];
    mem::vm_read_all(pid, addr + off, &mut b)
        .map_err(|e| Error::sys(pid, format!("read AIO ring {addr:#x}"), e))?;
    Ok(u32::from_ne_bytes(b))
}

/// At restore, once the process's memory is back and before its children
/// are forked: recreates every AIO context of `mm` at its address with its
/// kernel tail and the saved ring (see the module doc).
pub fn restore_rings(agent: &mut dyn Calls, mm: &MmEntry) -> Result<()> {
    if mm.aio_rings.is_empty() {
        return Ok(());
    }
    let pid = agent.pid();
    let cpus = possible_cpus()?;
    for r in &mm.aio_rings {
        agent.mmap_anon(
            "AIO ring placeholder",
            r.start,
            r.end - r.start,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | super::FIXED_NOREPLACE as i32,
        )?;
    }
    let efd = agent.eventfd2(libc::EFD_CLOEXEC)?;
    // Contexts take the lowest free index of the table: create them by
    // index, with fillers (destroyed at the end) for the free indexes.
    let mut order: Vec<&AioRing> = mm.aio_rings.iter().collect();
    order.sort_by_key(|r| r.id);
    let mut fillers = Vec::new();
    let mut next = 0;
    for r in order {
        while next < r.id {
            fillers.push(agent.io_setup(1)?);
            next += 1;
        }
        next = r.id + 1;
        let len = r.end - r.start;
        let pages = len / PAGE_SIZE;
        let what = format!("pid {pid}: AIO ring {:#x}-{:#x}", r.start, r.end);
        let n = setup_nr(r.max_reqs, pages, cpus).ok_or_else(|| {
            Error::Restore(format!(
                "{what}: no io_setup size gives a ring of {pages} page(s) on this machine \
                 ({cpus} possible CPUs)"
            ))
        })?;
        let ctx = agent.io_setup(n)?;
        let (id, nr) = (ring_word(pid, ctx, 0)?, ring_word(pid, ctx, 4)?);
        if id != r.id {
            return Err(Error::Restore(format!(
                "{what}: io_setup made context index {id}, {} expected",
                r.id
            )));
        }
        if nr != r.nr_events {
            return Err(Error::Restore(format!(
                "{what}: io_setup({n}) made a ring of {nr} events, {} expected",
                r.nr_events
            )));
        }
        // Fresh ring: head = tail = 0. Move both to the saved head (the
        // completions reaped by moving head in the ring), then complete
        // the events between head and tail, so that the kernel counts
        // them as unreaped.
        let head = u32::from_ne_bytes(r.contents[8..12].try_into().unwrap_or([0; 4])) % nr;
        complete_dummies(agent, ctx, efd, head as u64)?;
        mem::vm_write_all(pid, ctx + 8, &head.to_ne_bytes())
            .map_err(|e| Error::sys(pid, format!("{what}: write head"), e))?;
        let unreaped = (r.tail + nr - head) % nr;
        complete_dummies(agent, ctx, efd, unreaped as u64)?;
        let tail = ring_word(pid, ctx, 12)?;
        if tail != r.tail {
            return Err(Error::Restore(format!(
                "{what}: the kernel's tail is {tail} after the dummy requests, {} expected",
                r.tail
            )));
        }
        if ctx != r.start {
            agent.mremap_to(ctx, len, r.start)?;
        }
        mem::vm_write_all(pid, r.start, &r.contents)
            .map_err(|e| Error::sys(pid, format!("{what}: write the ring"), e))?;
    }
    for f in fillers {
        agent.io_destroy(f)?;
    }
    agent.close_as("eventfd of the AIO dummy requests", efd)
}

/// The address ranges the rings of `mm` take (for the restorer area).
pub fn ranges(mm: &MmEntry) -> impl Iterator<Item = (u64, u64)> + '_ {
    mm.aio_rings.iter().map(|r| (r.start, r.end))
}

/// Image checks of the rings of `mm`: (object, field, reason).
pub fn validate(mm: &MmEntry) -> std::result::Result<(), (String, &'static str, String)> {
    let mut taken: Vec<(u64, u64)> = mm.vmas.iter().map(|v| (v.start, v.end)).collect();
    if mm.aio_rings.len() > 4096 {
        return Err(("mm".into(), "aio_rings", "more than 4096 rings".into()));
    }
    for (i, r) in mm.aio_rings.iter().enumerate() {
        let o = format!("AIO ring {i} ({:#x}-{:#x})", r.start, r.end);
        let len = r.end.wrapping_sub(r.start);
        if !r.start.is_multiple_of(PAGE_SIZE)
            || !r.end.is_multiple_of(PAGE_SIZE)
            || r.start >= r.end
        {
            return Err((o, "end", "not page-aligned and above start".into()));
        }
        if r.end > super::TASK_SIZE || len > MAX_RING {
            return Err((
                o,
                "end",
                format!("above {:#x} or longer than {MAX_RING}", super::TASK_SIZE),
            ));
        }
        if r.contents.len() as u64 != len {
            return Err((
                o,
                "contents",
                format!("{} bytes for a {len}-byte ring", r.contents.len()),
            ));
        }
        if r.nr_events as u64 != len / PAGE_SIZE * PER_PAGE - 1 {
            return Err((
                o,
                "nr_events",
                format!("{}: not what a ring of {len} bytes holds", r.nr_events),
            ));
        }
        if r.tail >= r.nr_events {
            return Err((o, "tail", format!("{} not below nr_events", r.tail)));
        }
        if r.id >= MAX_ID || mm.aio_rings.iter().filter(|o| o.id == r.id).count() > 1 {
            return Err((
                o,
                "id",
                format!("{}: not below {MAX_ID} or not unique", r.id),
            ));
        }
        if taken.iter().any(|&(s, e)| s < r.end && r.start < e) {
            return Err((o, "start", "overlaps a VMA or another ring".into()));
        }
        taken.push((r.start, r.end));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_sizes_follow_the_kernel() {
        // Measured on a 2-CPU machine: io_setup(8) gives 127 events in one
        // page, io_setup(100) 255 in two.
        assert_eq!(ring_pages(8, 2), 1);
        assert_eq!(ring_pages(100, 2), 2);
        assert_eq!(ring_pages(1, 2), 1);
        assert_eq!(setup_nr(100, 2, 2), Some(100));
        assert_eq!(setup_nr(0, 2, 2), Some(64));
        assert_eq!(setup_nr(0, 1, 2), Some(1));
        // A ring asked for with 2 CPUs, restored with 64: too small to make.
        assert_eq!(setup_nr(8, 1, 64), None);
        for pages in 1..40 {
            for cpus in [1, 2, 8] {
                if let Some(n) = setup_nr(0, pages, cpus) {
                    assert_eq!(ring_pages(n as u64, cpus), pages);
                }
            }
        }
    }

    fn ring(start: u64, pages: u64) -> AioRing {
        let mut r = AioRing::new();
        r.start = start;
        r.end = start + pages * PAGE_SIZE;
        r.nr_events = (pages * PER_PAGE - 1) as u32;
        r.contents = vec![0; (pages * PAGE_SIZE) as usize];
        r
    }

    #[test]
    fn forged_rings_are_refused() {
        let mut mm = MmEntry::new();
        mm.aio_rings.push(ring(0x10000, 2));
        assert!(validate(&mm).is_ok());
        let mut bad = mm.clone();
        bad.aio_rings[0].contents.pop();
        assert_eq!(validate(&bad).unwrap_err().1, "contents");
        let mut bad = mm.clone();
        bad.aio_rings[0].nr_events = 300;
        assert_eq!(validate(&bad).unwrap_err().1, "nr_events");
        let mut bad = mm.clone();
        bad.aio_rings[0].tail = 255;
        assert_eq!(validate(&bad).unwrap_err().1, "tail");
        let mut bad = mm.clone();
        bad.aio_rings.push(ring(0x20000, 1));
        assert_eq!(validate(&bad).unwrap_err().1, "id");
        bad.aio_rings[1].id = 1;
        assert!(validate(&bad).is_ok());
        bad.aio_rings[1].start = 0x11000;
        bad.aio_rings[1].end = 0x12000;
        assert_eq!(validate(&bad).unwrap_err().1, "start");
    }
}
