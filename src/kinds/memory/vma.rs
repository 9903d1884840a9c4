//! VMAs: classifying and describing the mappings of a process at dump,
//! and recreating them in a vessel at restore (injected mmap, shmat for
//! System V segments, shared anonymous objects created once and fetched
//! by the other processes), then their final protections and advice.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;

use crate::error::{Error, IoContext, Result};
use crate::image::proto::{MmEntry, Vma, VmaKind};
use crate::procfs::{self, MapsEntry};
use crate::remote::batch::Syscall;
use crate::remote::Calls;
use crate::sys::PAGE_SIZE;

/// Pagemap bit 58 (PM_GUARD_REGION, Linux 6.14+): a guard region
/// installed with MADV_GUARD_INSTALL covers the page.
pub(super) const PM_GUARD_REGION: u64 = 1 << 58;

pub(super) fn classify(pid: i32, m: &MapsEntry) -> Result<Option<VmaKind>> {
    let p = m.path.as_str();
    let kind = match p {
        "[vsyscall]" => return Ok(None),
        "[vdso]" => VmaKind::VMA_VDSO,
        "[vvar]" => VmaKind::VMA_VVAR,
        "[vvar_vclock]" => VmaKind::VMA_VVAR_VCLOCK,
        _ if m.has_flag("io") || m.has_flag("pf") => {
            return Err(Error::unsupported(
                pid,
                format!("device mapping {:#x}-{:#x} {p}", m.start, m.end),
            ))
        }
        _ if p.starts_with("/SYSV") && m.shared => VmaKind::VMA_SYSV_SHM,
        _ if m.shared && (p == "/dev/zero (deleted)" || p.starts_with("[anon_shmem")) => {
            VmaKind::VMA_ANON_SHARED
        }
        _ if p.is_empty() || p == "[heap]" || p == "[stack]" || p.starts_with("[anon:") => {
            if m.shared {
                VmaKind::VMA_ANON_SHARED
            } else {
                VmaKind::VMA_ANON_PRIVATE
            }
        }
        // pktring: a packet socket's rings, mapped again from the restored
        // socket once the fds are in place (kinds::packet::map_rings).
        _ if crate::kinds::packet::mapped_socket(m).is_some() => {
            let ino = crate::kinds::packet::mapped_socket(m).unwrap_or(0);
            crate::kinds::packet::check_ring_vma(pid, m, ino)?;
            return Ok(Some(VmaKind::VMA_PACKET_RING));
        }
        _ if p.starts_with('[') => {
            return Err(Error::unsupported(
                pid,
                format!("special mapping {p} at {:#x}", m.start),
            ))
        }
        _ if super::aio::is_ring(m) => return super::aio::check(pid, m).map(|_| None),
        _ if p.starts_with("/memfd:") && m.is_deleted() => super::mapfiles::classify_memfd(pid, m)?,
        _ if m.is_deleted() => super::mapfiles::classify_deleted(pid, m)?,
        _ if m.shared => VmaKind::VMA_FILE_SHARED,
        _ => VmaKind::VMA_FILE_PRIVATE,
    };
    check_flags(pid, m, kind)?;
    Ok(Some(kind))
}

/// VmFlags a mapping gets from how it is mapped (protections, shared or
/// private, the file's open mode, MAP_GROWSDOWN, MAP_NORESERVE): they come
/// back with the mmap and are compared after restore.
const IMPLIED_FLAGS: [&str; 10] = ["rd", "wr", "ex", "sh", "mr", "mw", "me", "ms", "gd", "nr"];

/// VmFlags restored by madvise after the pages are in.
const ADVICE_FLAGS: [(&str, i32); 8] = [
    ("dd", libc::MADV_DONTDUMP),
    ("dc", libc::MADV_DONTFORK),
    ("hg", libc::MADV_HUGEPAGE),
    ("nh", libc::MADV_NOHUGEPAGE),
    ("mg", libc::MADV_MERGEABLE),
    ("wf", libc::MADV_WIPEONFORK),
    ("sr", libc::MADV_SEQUENTIAL),
    ("rr", libc::MADV_RANDOM),
];

/// VmFlags restored by mlock2 (VM_LOCKED, and VM_LOCKONFAULT for
/// MLOCK_ONFAULT).
const LOCK_FLAGS: [&str; 2] = ["lo", "lf"];

/// VmFlags that are the kernel's bookkeeping, not state a program sees:
/// commit accounting ("ac", also set by a restore that maps writable
/// first), soft-dirty tracking ("sd", set on every new mapping) and
/// userfaultfd registration ("uw", "um", "ui": cairn's own dirty-page
/// tracking; a program's own userfaultfd is refused with its fd).
/// Neither saved nor compared. So is "dw" (VM_DENYWRITE, kernels before
/// 5.15): the ELF loader's mark on the mappings of an executable and its
/// interpreter, which no mmap from user space can set (README,
/// Limitations).
const BOOKKEEPING_FLAGS: [&str; 6] = ["ac", "sd", "uw", "um", "ui", "dw"];

/// VMAs the kernel places itself: their flags are the kernel's.
fn is_kernel_vma(kind: VmaKind) -> bool {
    matches!(
        kind,
        VmaKind::VMA_VDSO | VmaKind::VMA_VVAR | VmaKind::VMA_VVAR_VCLOCK | VmaKind::VMA_VSYSCALL
    )
}

/// What a VmFlags letter cairn does not restore means, for the refusal.
fn flag_meaning(f: &str) -> &'static str {
    match f {
        "ht" => "hugetlb mapping (MAP_HUGETLB or a hugetlbfs file)",
        "sf" => "synchronous page faults (MAP_SYNC, DAX)",
        "ar" => "architecture-specific flag (x86: PAT memory type)",
        "mm" => "mixed page-frame mapping (VM_MIXEDMAP, a driver's)",
        "de" => "not expandable (VM_DONTEXPAND, a driver's or a kernel special mapping)",
        "ss" => "shadow stack",
        "sl" => "sealed with mseal",
        "dp" => "droppable (MAP_DROPPABLE)",
        "bt" | "mt" => "arm64 memory tagging or BTI",
        "io" | "pf" => "device memory",
        _ => "unknown to cairn",
    }
}

/// Refuses a mapping with a VmFlags letter cairn does not restore exactly,
/// naming the letter, its meaning and the address.
fn check_flags(pid: i32, m: &MapsEntry, kind: VmaKind) -> Result<()> {
    if is_kernel_vma(kind) {
        return Ok(());
    }
    for f in &m.vm_flags {
        let f = f.as_str();
        let known = IMPLIED_FLAGS.contains(&f)
            || ADVICE_FLAGS.iter().any(|(a, _)| *a == f)
            || LOCK_FLAGS.contains(&f)
            || BOOKKEEPING_FLAGS.contains(&f)
            || f == GUARD_HINT;
        if !known {
            return Err(Error::unsupported(
                pid,
                format!(
                    "mapping {:#x}-{:#x} {} has VmFlags \"{f}\" ({}): not restored",
                    m.start,
                    m.end,
                    m.path,
                    flag_meaning(f)
                ),
            ));
        }
        if f == "wf" && kind != VmaKind::VMA_ANON_PRIVATE {
            return Err(Error::unsupported(
                pid,
                format!(
                    "mapping {:#x}-{:#x} {}: VmFlags \"wf\" (MADV_WIPEONFORK) on a mapping that is not private anonymous",
                    m.start, m.end, m.path
                ),
            ));
        }
    }
    Ok(())
}

/// "gu" (Linux 6.18+): the VMA may hold guard regions, a sticky hint that
/// stays after MADV_GUARD_REMOVE. The guard regions themselves are saved
/// from the pagemap, installed again (which sets the hint) and checked.
const GUARD_HINT: &str = "gu";

/// The saved flags of a VMA that are compared after restore (all but the
/// kernel's bookkeeping and the guard hint).
fn compared_flags(flags: &[String]) -> std::collections::BTreeSet<&str> {
    flags
        .iter()
        .map(String::as_str)
        .filter(|f| !BOOKKEEPING_FLAGS.contains(f) && *f != GUARD_HINT)
        .collect()
}

/// After restore: the VmFlags of every restored mapping of the vessel
/// (its smaps) must be those saved; a difference fails the restore,
/// naming the address and the letters.
pub fn verify_flags(pid: i32, mm: &MmEntry) -> Result<()> {
    let now = procfs::read_smaps(pid)?;
    for v in &mm.vmas {
        // pktring: a ring is mapped after the fds (kinds::packet).
        if v.kind
            .enum_value()
            .map_or(true, |k| is_kernel_vma(k) || k == VmaKind::VMA_PACKET_RING)
        {
            continue;
        }
        let got = now
            .iter()
            .find(|m| m.start <= v.start && v.start < m.end)
            .ok_or_else(|| {
                Error::Restore(format!(
                    "pid {pid}: VMA {:#x}-{:#x} ({}) is not mapped after restore",
                    v.start, v.end, v.name
                ))
            })?;
        for g in v.guard_runs.chunks_exact(2) {
            let pm = procfs::read_pagemap(pid, g[0], g[0] + g[1] * PAGE_SIZE)?;
            if let Some(i) = pm.iter().position(|f| f.0 & PM_GUARD_REGION == 0) {
                return Err(Error::Restore(format!(
                    "pid {pid}: guard region page {:#x} is not guarded after restore",
                    g[0] + i as u64 * PAGE_SIZE
                )));
            }
        }
        let want = compared_flags(&v.vm_flags);
        let have = compared_flags(&got.vm_flags);
        if want != have {
            let missing: Vec<&str> = want.difference(&have).copied().collect();
            let extra: Vec<&str> = have.difference(&want).copied().collect();
            return Err(Error::Restore(format!(
                "pid {pid}: VMA {:#x}-{:#x} ({}) came back with other VmFlags: \
                 missing {missing:?}, unexpected {extra:?}",
                v.start, v.end, v.name
            )));
        }
    }
    Ok(())
}

fn prot_of(m: &MapsEntry) -> u32 {
    let mut p = 0;
    if m.read {
        p |= libc::PROT_READ as u32;
    }
    if m.write {
        p |= libc::PROT_WRITE as u32;
    }
    if m.exec {
        p |= libc::PROT_EXEC as u32;
    }
    p
}

/// Refuses, before anything is frozen, mappings cairn cannot dump, and
/// mappings with a memory protection key other than 0 (pkey_mprotect:
/// not restored).
pub fn precheck(pid: i32) -> Result<()> {
    let path = format!("/proc/{pid}/smaps");
    let text = procfs::misc::read_proc_string(&path)?;
    for m in procfs::parse_smaps(&text).map_err(|e| Error::parse(&path, e.to_string()))? {
        classify(pid, &m)?;
    }
    if let Some((range, key)) = nonzero_pkey(&text) {
        return Err(Error::unsupported(
            pid,
            format!(
                "mapping {range} has memory protection key {key} (pkey_mprotect): not restored"
            ),
        ));
    }
    Ok(())
}

/// The first mapping (its "start-end" range) of smaps `text` whose
/// ProtectionKey is not 0, with the key.
fn nonzero_pkey(text: &str) -> Option<(String, String)> {
    let mut range = "";
    for line in text.lines() {
        if let Some(key) = line.strip_prefix("ProtectionKey:") {
            let key = key.trim();
            if key != "0" {
                let (s, e) = range.split_once('-').unwrap_or((range, ""));
                return Some((format!("0x{s}-0x{e}"), key.to_string()));
            }
        } else if line.split_once(' ').is_some_and(|(first, _)| {
            first.split_once('-').is_some_and(|(a, b)| {
                !a.is_empty() && a.chars().chain(b.chars()).all(|c| c.is_ascii_hexdigit())
            })
        }) {
            range = line.split(' ').next().unwrap_or("");
        }
    }
    None
}

/// The image of VMA `m`, of `kind`; `map_file` is its
/// /proc/PID/map_files entry; `files` registers a mapped file.
pub(super) fn describe(
    m: &MapsEntry,
    kind: VmaKind,
    map_file: &str,
    files: &mut crate::kinds::files::FileTable,
) -> Result<Vma> {
    let mut v = Vma::new();
    v.start = m.start;
    v.end = m.end;
    v.prot = prot_of(m);
    v.kind = kind.into();
    v.pgoff = m.offset;
    // The kernel's bookkeeping (accounting, soft-dirty, uffd
    // registration: see BOOKKEEPING_FLAGS) is not saved.
    v.vm_flags = m
        .vm_flags
        .iter()
        .filter(|f| !BOOKKEEPING_FLAGS.contains(&f.as_str()))
        .cloned()
        .collect();
    v.name = m.path.clone();
    match kind {
        VmaKind::VMA_FILE_PRIVATE | VmaKind::VMA_FILE_SHARED => {
            let md = std::fs::metadata(map_file).at(map_file)?;
            // Deleted, or on tmpfs/ramfs (kinds::volatile): contents saved.
            let deleted = m.is_deleted() && md.nlink() == 0;
            if deleted || crate::kinds::volatile::on_volatile_fs(map_file) {
                files.kinds.mapfiles.remember(map_file, &md)?;
            }
            v.file_id = files.register_mapped(
                &m.path,
                &md,
                kind == VmaKind::VMA_FILE_SHARED && m.has_flag("mw"),
            )?;
        }
        VmaKind::VMA_ANON_SHARED if m.path.starts_with("/memfd:") => {
            v.shmid = m.inode;
            let pid = map_file
                .strip_prefix("/proc/")
                .and_then(|r| r.split('/').next())
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            let state = &mut files.kinds.mapfiles;
            super::mapfiles::describe_memfd(pid, m, map_file, &mut v, state)?;
        }
        VmaKind::VMA_ANON_SHARED | VmaKind::VMA_SYSV_SHM => v.shmid = m.inode,
        VmaKind::VMA_PACKET_RING => v.packet_sk = m.inode,
        _ => {}
    }
    Ok(v)
}

const MAP_FIXED_NOREPLACE: u64 = 0x100000;

/// Shared anonymous memory objects of the whole tree during a restore.
#[derive(Default)]
pub struct ShmObjects {
    /// shmid -> size in bytes (largest extent any process maps).
    pub sizes: HashMap<u64, u64>,
    /// shmid -> (vessel that created it, its fd there, kept open until
    /// every process has mapped it).
    pub owners: HashMap<u64, (i32, u64)>,
    /// System V segments whose contents have been written already.
    pub sysv_filled: std::collections::HashSet<u64>,
    /// Mapped memfds (shmid -> how many processes still have to map it,
    /// its seals): sealed once the last one has.
    pub memfd_users: HashMap<u64, (usize, u32)>,
}

impl ShmObjects {
    pub fn new<'a>(mms: impl Iterator<Item = &'a MmEntry>) -> ShmObjects {
        let mut sizes: HashMap<u64, u64> = HashMap::new();
        let mut memfd_users: HashMap<u64, (usize, u32)> = HashMap::new();
        for mm in mms {
            let mut memfds = std::collections::HashSet::new();
            for v in &mm.vmas {
                if v.kind.enum_value() == Ok(VmaKind::VMA_ANON_SHARED) {
                    let e = sizes.entry(v.shmid).or_default();
                    *e = (*e).max(v.pgoff + (v.end - v.start));
                    if v.memfd && memfds.insert(v.shmid) {
                        memfd_users.entry(v.shmid).or_insert((0, v.memfd_seals)).0 += 1;
                    }
                }
            }
        }
        ShmObjects {
            sizes,
            owners: HashMap::new(),
            sysv_filled: Default::default(),
            memfd_users,
        }
    }
}

/// Attaches a System V segment (which exists by now, see
/// `kinds::sysv`) with an injected shmat at the VMA's address. A segment
/// split into several VMAs is attached once, at the VMA of offset 0.
fn attach_sysv(
    agent: &mut dyn Calls,
    mm: &MmEntry,
    v: &Vma,
    shm: &mut ShmObjects,
    local: &mut HashMap<String, File>,
) -> Result<()> {
    let pid = agent.pid();
    let same: Vec<&Vma> = mm
        .vmas
        .iter()
        .filter(|x| x.shmid == v.shmid && x.kind.enum_value() == Ok(VmaKind::VMA_SYSV_SHM))
        .collect();
    if v.pgoff != 0 {
        if !same.iter().any(|x| x.pgoff == 0) {
            return Err(Error::Restore(format!(
                "pid {pid}: System V segment {} is attached only in part at {:#x}: not supported",
                v.shmid, v.start
            )));
        }
        return Ok(());
    }
    const SHM_RDONLY: u64 = 0o10000;
    const SHM_EXEC: u64 = 0o100000;
    let mut flags = SHM_RDONLY;
    if same.iter().any(|x| x.prot & libc::PROT_WRITE as u32 != 0) {
        flags &= !SHM_RDONLY;
    }
    if same.iter().any(|x| x.prot & libc::PROT_EXEC as u32 != 0) {
        flags |= SHM_EXEC;
    }
    let got = agent.shmat(v.shmid, v.start, flags)?;
    if got != v.start {
        return Err(Error::Restore(format!(
            "pid {pid}: shmat of segment {} landed at {got:#x}",
            v.shmid
        )));
    }
    if shm.sysv_filled.insert(v.shmid) {
        let m = procfs::read_maps(pid)?
            .into_iter()
            .find(|m| m.start == v.start)
            .ok_or_else(|| {
                Error::Restore(format!(
                    "pid {pid}: segment {} not mapped after shmat",
                    v.shmid
                ))
            })?;
        let path = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .at(&path)?;
        local.insert(format!("sysv:{}", v.shmid), f);
    }
    Ok(())
}

/// Creates every VMA of `mm` in the vessel (which has nothing mapped but
/// the scratch area) and the vDSO. `file_path` gives the path of a file id.
/// Returns local fds of the shared objects, by shmid, for page writing.
pub fn restore_vmas(
    agent: &mut dyn Calls,
    mm: &MmEntry,
    file_path: &dyn Fn(u32) -> Option<String>,
    shm_objects: &mut ShmObjects,
) -> Result<HashMap<String, File>> {
    let pid = agent.pid();
    // Shared anonymous objects: each is created once, in the first process
    // that maps it, and kept open there; the others fetch the same object
    // with pidfd_getfd.
    let mut ids: Vec<u64> = mm
        .vmas
        .iter()
        .filter(|v| v.kind.enum_value() == Ok(VmaKind::VMA_ANON_SHARED))
        .map(|v| v.shmid)
        .collect();
    ids.sort();
    ids.dedup();
    let mut shm_fds: HashMap<u64, u64> = HashMap::new();
    let mut to_close: Vec<u64> = Vec::new();
    let mut shm_local: HashMap<String, File> = HashMap::new();
    for id in ids {
        if let Some(&(owner, ofd)) = shm_objects.owners.get(&id) {
            let fd = agent.fetch_fd(owner, ofd)?;
            shm_fds.insert(id, fd);
            to_close.push(fd);
            continue;
        }
        if let Some(v) = mm.vmas.iter().find(|v| v.shmid == id && v.memfd) {
            let (fd, f) = super::mapfiles::create_memfd(agent, v)?;
            shm_fds.insert(id, fd);
            shm_local.insert(format!("shmem:{id}"), f);
            shm_objects.owners.insert(id, (pid, fd));
            continue;
        }
        let size = shm_objects.sizes.get(&id).copied().unwrap_or(0);
        if size == 0 {
            return Err(Error::Restore(format!(
                "pid {pid}: shared memory object {id} has no size"
            )));
        }
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let addr = agent.mmap_anon("shared", 0, size, rw, libc::MAP_SHARED)?;
        let path = format!("/proc/self/map_files/{:x}-{:x}", addr, addr + size);
        let fd = agent.open(&path, libc::O_RDWR | libc::O_CLOEXEC)?;
        agent.munmap(addr, size)?;
        let local_path = format!("/proc/{pid}/fd/{fd}");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&local_path)
            .at(&local_path)?;
        shm_fds.insert(id, fd);
        shm_local.insert(format!("shmem:{id}"), f);
        shm_objects.owners.insert(id, (pid, fd));
    }
    let mut file_fds: HashMap<(u32, bool), u64> = HashMap::new();
    for v in &mm.vmas {
        let kind = v
            .kind
            .enum_value()
            .map_err(|k| Error::Restore(format!("unknown VMA kind {k}")))?;
        let len = v.end - v.start;
        let has = |f: &str| v.vm_flags.iter().any(|x| x == f);
        let rw = (libc::PROT_READ | libc::PROT_WRITE) as u32;
        let (prot, flags, fd, off) = match kind {
            VmaKind::VMA_VDSO
            | VmaKind::VMA_VVAR
            | VmaKind::VMA_VVAR_VCLOCK
            | VmaKind::VMA_VSYSCALL => continue,
            // Mapped from its socket once the fds exist.
            VmaKind::VMA_PACKET_RING => continue,
            VmaKind::VMA_ANON_PRIVATE => {
                let mut fl = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
                if has("gd") {
                    fl |= libc::MAP_GROWSDOWN;
                }
                if has("nr") {
                    fl |= libc::MAP_NORESERVE;
                }
                (v.prot | rw, fl, u64::MAX, 0)
            }
            VmaKind::VMA_ANON_SHARED => (v.prot | rw, libc::MAP_SHARED, shm_fds[&v.shmid], v.pgoff),
            VmaKind::VMA_FILE_PRIVATE | VmaKind::VMA_FILE_SHARED => {
                let shared = kind == VmaKind::VMA_FILE_SHARED;
                let writable = shared && has("mw");
                let fd = match file_fds.get(&(v.file_id, writable)) {
                    Some(&fd) => fd,
                    None => {
                        let path = file_path(v.file_id).ok_or_else(|| {
                            Error::Restore(format!("VMA {:#x}: no file {}", v.start, v.file_id))
                        })?;
                        let mode = if writable {
                            libc::O_RDWR
                        } else {
                            libc::O_RDONLY
                        };
                        let fd = agent.open(&path, mode | libc::O_CLOEXEC)?;
                        file_fds.insert((v.file_id, writable), fd);
                        fd
                    }
                };
                if shared {
                    (v.prot, libc::MAP_SHARED, fd, v.pgoff)
                } else if has("nr") {
                    (
                        v.prot | rw,
                        libc::MAP_PRIVATE | libc::MAP_NORESERVE,
                        fd,
                        v.pgoff,
                    )
                } else {
                    (v.prot | rw, libc::MAP_PRIVATE, fd, v.pgoff)
                }
            }
            VmaKind::VMA_SYSV_SHM => {
                attach_sysv(agent, mm, v, shm_objects, &mut shm_local)?;
                continue;
            }
        };
        let got = agent
            .try_mmap(v.start, len, prot as i32, flags | libc::MAP_FIXED, fd, off)
            .map_err(|e| {
                Error::Restore(format!(
                    "pid {pid}: mmap {:#x}-{:#x} ({}): {e}",
                    v.start, v.end, v.name
                ))
            })?;
        if got != v.start {
            return Err(Error::Restore(format!(
                "pid {pid}: mmap {:#x} landed at {got:#x}",
                v.start
            )));
        }
    }
    super::mapfiles::seal_memfds(agent, mm, &shm_fds, shm_objects)?;
    for fd in file_fds.values().chain(to_close.iter()) {
        agent.close(*fd)?;
    }
    super::vdso::restore(agent, mm)?;
    Ok(shm_local)
}

/// madvise(MADV_GUARD_INSTALL), Linux 6.13+.
const MADV_GUARD_INSTALL: i32 = 102;

/// Final protections, madvise flags, guard regions and locks, after the
/// pages are in.
pub fn finish_vmas(agent: &mut dyn Calls, mm: &MmEntry) -> Result<()> {
    finish_vmas_but(agent, mm, false)
}

/// [`finish_vmas`] after [`lock_vmas`]: the locked VMAs have their
/// guard regions and locks already.
pub fn finish_unlocked_vmas(agent: &mut dyn Calls, mm: &MmEntry) -> Result<()> {
    finish_vmas_but(agent, mm, true)
}

fn is_restored_vma(v: &Vma) -> bool {
    !matches!(
        v.kind.enum_value().ok(),
        Some(
            VmaKind::VMA_VDSO
                | VmaKind::VMA_VVAR
                | VmaKind::VMA_VVAR_VCLOCK
                | VmaKind::VMA_VSYSCALL
                | VmaKind::VMA_PACKET_RING
        )
    )
}

/// One call of the final VMA sequence, for its error.
enum Step<'a> {
    Prot(&'a Vma),
    Advice(&'a Vma, &'static str),
    /// A guard region: start, pages.
    Guard(u64, u64),
    Lock(&'a Vma),
}

/// The final protection of `v` (a shared file mapping has it already).
fn final_prot<'a>(v: &'a Vma, steps: &mut Vec<(Syscall, Step<'a>)>) {
    if v.kind.enum_value().ok() != Some(VmaKind::VMA_FILE_SHARED) {
        let c = Syscall::new(
            libc::SYS_mprotect,
            &[v.start, v.end - v.start, v.prot as u64],
        );
        steps.push((c, Step::Prot(v)));
    }
}

/// Runs `steps` (as one batch of the agent loop where the task has one);
/// a failure names the process, the call and the VMA.
fn run_steps(agent: &mut dyn Calls, steps: Vec<(Syscall, Step<'_>)>) -> Result<()> {
    let pid = agent.pid();
    let (calls, what): (Vec<Syscall>, Vec<Step>) = steps.into_iter().unzip();
    let Err(f) = agent.syscalls(&calls)? else {
        return Ok(());
    };
    let e = f.error;
    Err(match &what[f.index] {
        Step::Prot(v) => Error::sys(
            pid,
            format!(
                "remote mprotect {:#x}-{:#x} ({}) to {:#x}",
                v.start, v.end, v.name, v.prot
            ),
            e,
        ),
        // A kernel without THP or KSM refuses some: the restore fails
        // then, naming the flag, rather than lose it.
        Step::Advice(v, flag) => Error::Restore(format!(
            "pid {pid}: VMA {:#x}-{:#x} ({}): VmFlags \"{flag}\" not restored: {e}",
            v.start, v.end, v.name
        )),
        Step::Guard(start, pages) => Error::Restore(format!(
            "pid {pid}: guard region at {start:#x} ({pages} pages): MADV_GUARD_INSTALL: {e}"
        )),
        Step::Lock(v) => Error::sys(
            pid,
            format!("remote mlock2 {:#x}-{:#x} ({})", v.start, v.end, v.name),
            e,
        ),
    })
}

/// Before the children of a process are forked from it (copy-on-write
/// sharing, see `cow`): every VMA locked with mlock ("lo") gets its final
/// protection, its guard regions and its lock. mlock faults every page
/// in, for writing where the VMA is writable, which would copy each page
/// a child shares; and no guard region can be installed in a locked VMA.
/// A fork passes neither the lock nor the protections on for good (the
/// child sets its own).
pub fn lock_vmas(agent: &mut dyn Calls, mm: &MmEntry) -> Result<()> {
    let mut steps = Vec::new();
    for v in mm.vmas.iter().filter(|v| is_restored_vma(v)) {
        if v.vm_flags.iter().any(|x| x == "lo") {
            final_prot(v, &mut steps);
            guards_and_lock(v, &mut steps);
        }
    }
    run_steps(agent, steps)
}

/// The calls of one process's VMAs, in order, run as one batch: a
/// hundred VMAs cost one ptrace stop instead of one per call.
fn finish_vmas_but(agent: &mut dyn Calls, mm: &MmEntry, locked_done: bool) -> Result<()> {
    let mut steps = Vec::new();
    for v in mm.vmas.iter().filter(|v| is_restored_vma(v)) {
        let len = v.end - v.start;
        final_prot(v, &mut steps);
        let has = |f: &str| v.vm_flags.iter().any(|x| x == f);
        for (flag, advice) in ADVICE_FLAGS {
            if has(flag) {
                let c = Syscall::new(libc::SYS_madvise, &[v.start, len, advice as u64]);
                steps.push((c, Step::Advice(v, flag)));
            }
        }
        if !(locked_done && has("lo")) {
            guards_and_lock(v, &mut steps);
        }
    }
    run_steps(agent, steps)
}

/// Guard regions, then mlock2 (a locked VMA takes no guard region).
fn guards_and_lock<'a>(v: &'a Vma, steps: &mut Vec<(Syscall, Step<'a>)>) {
    let has = |f: &str| v.vm_flags.iter().any(|x| x == f);
    for g in v.guard_runs.chunks_exact(2) {
        let c = Syscall::new(
            libc::SYS_madvise,
            &[g[0], g[1] * PAGE_SIZE, MADV_GUARD_INSTALL as u64],
        );
        steps.push((c, Step::Guard(g[0], g[1])));
    }
    if has("lo") {
        const MLOCK_ONFAULT: u64 = 1;
        let flags = if has("lf") { MLOCK_ONFAULT } else { 0 };
        let c = Syscall::new(libc::SYS_mlock2, &[v.start, v.end - v.start, flags]);
        steps.push((c, Step::Lock(v)));
    }
}

/// mm->def_flags of a frozen process, from the VmFlags of the fresh
/// anonymous mapping at `scratch` (which the dump just made there): "lo"
/// (mlockall(MCL_FUTURE)) and "lf" (MCL_ONFAULT). Any other flag a fresh
/// mapping should not have is refused.
pub fn def_flags(pid: i32, scratch: u64) -> Result<Vec<String>> {
    let m = smaps_entry_at(pid, scratch)?.ok_or_else(|| {
        Error::Restore(format!(
            "pid {pid}: the scratch mapping at {scratch:#x} is not in its smaps"
        ))
    })?;
    let mut out = Vec::new();
    for f in &m.vm_flags {
        match f.as_str() {
            "lo" | "lf" => out.push(f.clone()),
            f if IMPLIED_FLAGS.contains(&f) || BOOKKEEPING_FLAGS.contains(&f) => {}
            "mg" => {
                return Err(Error::unsupported(
                    pid,
                    "KSM for every mapping (PR_SET_MEMORY_MERGE): not restored",
                ))
            }
            f => {
                return Err(Error::unsupported(
                    pid,
                    format!(
                        "new mappings get VmFlags \"{f}\" ({}): not restored",
                        flag_meaning(f)
                    ),
                ))
            }
        }
    }
    Ok(out)
}

/// The smaps entry of the VMA that holds `addr`, read only that far: a
/// read shorter than a record makes the kernel produce one VMA's record
/// (and walk that VMA's page tables for its counters), so the VMAs after
/// it cost nothing (a dump's big memory lies above its scratch mapping
/// as a rule, since mmap allocates top-down).
fn smaps_entry_at(pid: i32, addr: u64) -> Result<Option<MapsEntry>> {
    use std::io::Read;
    let path = format!("/proc/{pid}/smaps");
    let mut f = std::fs::File::open(&path).at(&path)?;
    let mut text: Vec<u8> = Vec::new();
    let mut buf = [0u8; 512];
    // Start of the current record, and of the first line not looked at.
    let (mut rec, mut at) = (0usize, 0usize);
    loop {
        let n = f.read(&mut buf).at(&path)?;
        if n == 0 {
            return Ok(None);
        }
        text.extend_from_slice(&buf[..n]);
        while let Some(nl) = text[at..].iter().position(|&b| b == b'\n') {
            let line_start = at;
            at += nl + 1;
            if !text[line_start..at].starts_with(b"VmFlags:") {
                continue;
            }
            let record = std::str::from_utf8(&text[rec..at])
                .map_err(|e| Error::parse(path.clone(), e.to_string()))?;
            let m = procfs::parse_smaps(record)
                .map_err(|e| Error::parse(path.clone(), e.to_string()))?
                .pop();
            rec = at;
            match m {
                Some(m) if m.start <= addr && addr < m.end => return Ok(Some(m)),
                Some(m) if m.start > addr => return Ok(None),
                _ => {}
            }
        }
        // Records before the current one are not needed any more.
        text.drain(..rec);
        at -= rec;
        rec = 0;
    }
}

/// mlockall(MCL_FUTURE), with MCL_ONFAULT, as the dump found it: last,
/// so that none of the restore's own mappings is locked meanwhile.
pub fn restore_def_flags(agent: &mut dyn Calls, mm: &MmEntry) -> Result<()> {
    if !mm.def_flags.iter().any(|f| f == "lo") {
        return Ok(());
    }
    const MCL_FUTURE: u64 = 2;
    const MCL_ONFAULT: u64 = 4;
    let mut fl = MCL_FUTURE;
    if mm.def_flags.iter().any(|f| f == "lf") {
        fl |= MCL_ONFAULT;
    }
    agent.call("mlockall", libc::SYS_mlockall, &[fl]).map(drop)
}

/// Used by the restorer to pick a scratch address that collides with
/// nothing in the image nor in the vessel.
pub fn free_area(size: u64, taken: &[(u64, u64)]) -> Option<u64> {
    let mut cand = 0x7e00_0000_0000u64;
    while cand > 0x1_0000_0000 {
        if !taken.iter().any(|&(s, e)| cand < e && cand + size > s) {
            return Some(cand);
        }
        cand -= 1 << 30;
    }
    None
}

pub const FIXED_NOREPLACE: u64 = MAP_FIXED_NOREPLACE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_area_avoids_taken() {
        let top = 0x7e00_0000_0000u64;
        let a = free_area(0x10000, &[(top, top + 0x1000)]).unwrap();
        assert!(a + 0x10000 <= top || a >= top + 0x1000);
    }

    fn vma(start: u64, end: u64, kind: VmaKind, prot: i32, file_id: u32, flags: &[&str]) -> Vma {
        let mut v = Vma::new();
        (v.start, v.end, v.kind, v.prot, v.file_id) =
            (start, end, kind.into(), prot as u32, file_id);
        v.vm_flags = flags.iter().map(|f| f.to_string()).collect();
        v
    }

    /// The address space of a small program, restored into a fake
    /// process: every VMA at its address, a file opened once per access
    /// mode and closed again, writable while the pages go in, then the
    /// final protections and advice.
    #[test]
    fn vmas_are_recreated_at_their_addresses_on_the_fake() {
        use crate::remote::fake::{FakeObject, FakeTask, FakeWorld};
        let w = FakeWorld::new();
        w.borrow_mut().files.insert("/bin/prog".into());
        let mut t = FakeTask::new(&w, 100);
        let (r, rx) = (libc::PROT_READ, libc::PROT_READ | libc::PROT_EXEC);
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let mut mm = MmEntry::new();
        mm.vmas = vec![
            vma(0x40_0000, 0x40_2000, VmaKind::VMA_FILE_PRIVATE, rx, 7, &[]),
            vma(
                0x40_2000,
                0x40_3000,
                VmaKind::VMA_FILE_PRIVATE,
                r,
                7,
                &["dd"],
            ),
            vma(
                0x60_0000,
                0x60_4000,
                VmaKind::VMA_ANON_PRIVATE,
                rw,
                0,
                &["gd"],
            ),
            vma(
                0x7fff_0000_0000,
                0x7fff_0000_1000,
                VmaKind::VMA_ANON_PRIVATE,
                r,
                0,
                &["nr"],
            ),
        ];
        let path = |id: u32| (id == 7).then(|| "/bin/prog".to_string());
        let shm = restore_vmas(&mut t, &mm, &path, &mut ShmObjects::default()).unwrap();
        assert!(shm.is_empty());
        let got: Vec<(u64, u64, i32)> =
            t.mm.vmas.iter().map(|(&s, v)| (s, v.end, v.prot)).collect();
        assert_eq!(
            got,
            vec![
                (0x40_0000, 0x40_2000, rx | rw),
                (0x40_2000, 0x40_3000, rw),
                (0x60_0000, 0x60_4000, rw),
                (0x7fff_0000_0000, 0x7fff_0000_1000, rw),
            ]
        );
        let prog = Some(FakeObject::Path("/bin/prog".into()));
        assert_eq!(t.mm.vmas[&0x40_2000].object, prog);
        assert_eq!(t.mm.vmas[&0x40_2000].off, 0);
        assert!(t.mm.vmas[&0x60_0000].flags & libc::MAP_GROWSDOWN != 0);
        assert!(t.mm.vmas[&0x7fff_0000_0000].flags & libc::MAP_NORESERVE != 0);
        assert_eq!(t.log.iter().filter(|c| *c == "openat").count(), 1);
        assert!(w.borrow().table(100).is_empty(), "the file is closed");
        finish_vmas(&mut t, &mm).unwrap();
        let prot: Vec<i32> = t.mm.vmas.values().map(|v| v.prot).collect();
        assert_eq!(prot, vec![rx, r, rw, r]);
        assert_eq!(t.mm.advice, vec![(0x40_2000, 0x1000, libc::MADV_DONTDUMP)]);
    }

    fn entry(path: &str, flags: &[&str]) -> MapsEntry {
        MapsEntry {
            start: 0x1000,
            end: 0x3000,
            read: true,
            write: true,
            path: path.into(),
            vm_flags: flags.iter().map(|f| f.to_string()).collect(),
            ..Default::default()
        }
    }

    /// Every VmFlags letter is restored, bookkeeping, or refused with the
    /// letter, its meaning and the address.
    #[test]
    fn vm_flags_are_restored_or_refused_by_letter() {
        let ok = entry(
            "",
            &[
                "rd", "wr", "mr", "mw", "me", "ac", "lo", "lf", "dc", "wf", "gu",
            ],
        );
        assert_eq!(classify(7, &ok).unwrap(), Some(VmaKind::VMA_ANON_PRIVATE));
        for (f, words) in [
            ("ht", "hugetlb"),
            ("sl", "mseal"),
            ("dp", "MAP_DROPPABLE"),
            ("ss", "shadow stack"),
            ("zz", "unknown"),
        ] {
            let e = classify(7, &entry("", &["rd", f])).unwrap_err().to_string();
            assert!(
                e.contains("pid 7")
                    && e.contains("0x1000-0x3000")
                    && e.contains(f)
                    && e.contains(words),
                "{e}"
            );
        }
        // Wipe-on-fork exists for private anonymous memory only.
        let e = classify(7, &entry("/lib/x.so", &["rd", "wf"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("MADV_WIPEONFORK"), "{e}");
        // The kernel's own mappings keep their own flags.
        let vdso = entry("[vdso]", &["rd", "ex", "de"]);
        assert_eq!(classify(7, &vdso).unwrap(), Some(VmaKind::VMA_VDSO));
        let aio = classify(7, &entry("/[aio] (deleted)", &["rd"])).unwrap_err();
        assert!(aio.to_string().contains("AIO ring 0x1000-0x3000"), "{aio}");
    }

    #[test]
    fn a_protection_key_is_found_with_its_mapping() {
        let text = "7f00-7f10 rw-p 00000000 00:00 0 \nProtectionKey:         0\n\
                    7f20-7f30 rw-p 00000000 00:00 0 \nProtectionKey:         3\nVmFlags: rd wr\n";
        assert_eq!(
            nonzero_pkey(text),
            Some(("0x7f20-0x7f30".to_string(), "3".to_string()))
        );
        assert_eq!(
            nonzero_pkey("7f00-7f10 rw-p 0 00:00 0\nProtectionKey: 0\n"),
            None
        );
    }

    /// Accounting, soft-dirty, uffd and the guard hint are not compared;
    /// everything else is.
    #[test]
    fn compared_flags_leave_out_bookkeeping() {
        let f = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let a = f(&["rd", "wr", "ac", "sd", "gu", "lo"]);
        let b = f(&["rd", "wr", "uw", "lo"]);
        assert_eq!(compared_flags(&a), compared_flags(&b));
        assert_ne!(compared_flags(&a), compared_flags(&f(&["rd", "wr"])));
    }

    #[test]
    fn a_vma_of_an_unknown_file_is_refused_by_name() {
        use crate::remote::fake::{FakeTask, FakeWorld};
        let w = FakeWorld::new();
        let mut t = FakeTask::new(&w, 100);
        let mut mm = MmEntry::new();
        mm.vmas = vec![vma(
            0x40_0000,
            0x40_1000,
            VmaKind::VMA_FILE_SHARED,
            libc::PROT_READ,
            9,
            &[],
        )];
        let e = restore_vmas(&mut t, &mm, &|_| None, &mut ShmObjects::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("VMA 0x400000: no file 9"), "{e}");
        assert!(t.mm.vmas.is_empty());
    }
}
