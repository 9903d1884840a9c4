//! The inventory of a process tree: its processes and threads, their
//! VMAs and their fds. Two collectors produce the same [`Inventory`]:
//!
//! - [`Collector::Bpf`]: three BPF iterators (bpf/inventory.bpf.c) walk
//!   the tasks, VMAs and files of the whole tree in one pass each and
//!   stream compact records ([`records`]); no file is opened per process.
//! - [`Collector::Proc`]: /proc, as before: the children lists, then per
//!   process `stat`, `task/`, `smaps`, and per fd its link, `fdinfo` and
//!   a stat of the link.
//!
//! `cairn inventory` prints it, so a test can require the two to be
//! equal field by field. The dump (`crate::dump`) takes each process's
//! VMAs and fds from a BPF inventory of the frozen tree
//! ([`collect_bpf_only`]) and reads /proc itself where BPF cannot be used,
//! recording which in the image inventory (`inventory_source`). BPF is
//! used when the probes found it working (see
//! [`crate::sys::probe::Features::inventory`]) unless `--no-bpf`; when
//! loading fails the reason is logged once and /proc is used.

pub mod records;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::json::json_string;
use crate::procfs::{self, FdInfo, MapsEntry};
use crate::sys::bpf::Iterators;
use records::VmaName;

/// Which collector produced an inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collector {
    Bpf,
    Proc,
}

impl Collector {
    pub fn as_str(self) -> &'static str {
        match self {
            Collector::Bpf => "bpf",
            Collector::Proc => "proc",
        }
    }
}

/// What an fd refers to, from the inode's type and the link target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdType {
    File,
    Dir,
    CharDev,
    BlockDev,
    /// A named FIFO.
    Fifo,
    Pipe,
    Socket,
    Symlink,
    /// "anon_inode:..." (eventfd, epoll, signalfd, timerfd, inotify, ...).
    AnonInode,
    Other,
}

impl FdType {
    pub fn of(mode: u32, target: &str) -> FdType {
        if target.starts_with("anon_inode:") {
            return FdType::AnonInode;
        }
        match mode & libc::S_IFMT {
            libc::S_IFREG => FdType::File,
            libc::S_IFDIR => FdType::Dir,
            libc::S_IFCHR => FdType::CharDev,
            libc::S_IFBLK => FdType::BlockDev,
            libc::S_IFIFO if target.starts_with("pipe:[") => FdType::Pipe,
            libc::S_IFIFO => FdType::Fifo,
            libc::S_IFSOCK => FdType::Socket,
            libc::S_IFLNK => FdType::Symlink,
            _ => FdType::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FdType::File => "file",
            FdType::Dir => "dir",
            FdType::CharDev => "chr",
            FdType::BlockDev => "blk",
            FdType::Fifo => "fifo",
            FdType::Pipe => "pipe",
            FdType::Socket => "socket",
            FdType::Symlink => "symlink",
            FdType::AnonInode => "anon_inode",
            FdType::Other => "other",
        }
    }
}

/// One open fd, as /proc/PID/fd/N, /proc/PID/fdinfo/N and a stat of the
/// link describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdEntry {
    pub fd: i32,
    /// The link target: "/path", "/path (deleted)", "pipe:\[123\]",
    /// "socket:\[45\]", "anon_inode:\[eventfd\]", ...
    pub target: String,
    /// pos, flags (with O_CLOEXEC as fdinfo shows it), mnt_id, ino. The
    /// kind-specific lines (`extra`) are not part of the inventory: the
    /// kinds that need them read fdinfo themselves.
    pub info: FdInfo,
    /// Device of the inode (major, minor).
    pub dev: (u32, u32),
    /// st_mode of the inode.
    pub mode: u32,
    pub kind: FdType,
}

/// One process of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcEntry {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub comm: String,
    /// The state letter of /proc/PID/stat (R, S, D, T, t, Z, X, P, I).
    pub state: char,
    pub exit_code: i32,
    pub exit_signal: i32,
    /// Thread ids, ascending (the leader's is the pid).
    pub threads: Vec<i32>,
    /// The VMAs, ascending, as /proc/PID/smaps lists them (with VmFlags),
    /// without the vsyscall page (it is not a VMA of the process).
    pub vmas: Vec<MapsEntry>,
    /// The fds, ascending.
    pub fds: Vec<FdEntry>,
}

impl ProcEntry {
    pub fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// A tree's inventory: processes parents first (breadth-first from the
/// root, children by pid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    pub root: i32,
    pub collector: Collector,
    pub procs: Vec<ProcEntry>,
    /// What a BPF collection read from /proc because its program is not
    /// loaded on this kernel ("VMAs: why", "fds: why"); empty otherwise.
    pub from_proc: Vec<String>,
}

impl Inventory {
    pub fn proc(&self, pid: i32) -> Option<&ProcEntry> {
        self.procs.iter().find(|p| p.pid == pid)
    }

    pub fn threads(&self) -> usize {
        self.procs.iter().map(|p| p.threads.len()).sum()
    }

    /// "N processes, T threads, V VMAs, F fds".
    pub fn summary(&self) -> String {
        format!(
            "{} processes, {} threads, {} VMAs, {} fds",
            self.procs.len(),
            self.threads(),
            self.procs.iter().map(|p| p.vmas.len()).sum::<usize>(),
            self.procs.iter().map(|p| p.fds.len()).sum::<usize>()
        )
    }

    /// Orders `procs` breadth-first from `root` (children by pid); a
    /// process whose parent chain does not reach the root is dropped.
    fn ordered(root: i32, collector: Collector, procs: Vec<ProcEntry>) -> Result<Inventory> {
        let mut by_pid: BTreeMap<i32, ProcEntry> = procs.into_iter().map(|p| (p.pid, p)).collect();
        let mut children: BTreeMap<i32, BTreeSet<i32>> = BTreeMap::new();
        for p in by_pid.values() {
            if p.pid != root {
                children.entry(p.ppid).or_default().insert(p.pid);
            }
        }
        if !by_pid.contains_key(&root) {
            return Err(Error::sys(
                root,
                "inventory",
                std::io::Error::from_raw_os_error(libc::ESRCH),
            ));
        }
        let mut out = Vec::with_capacity(by_pid.len());
        let mut queue = VecDeque::from([root]);
        while let Some(pid) = queue.pop_front() {
            if let Some(p) = by_pid.remove(&pid) {
                out.push(p);
            }
            if let Some(c) = children.remove(&pid) {
                queue.extend(c);
            }
        }
        Ok(Inventory {
            root,
            collector,
            procs: out,
            from_proc: Vec::new(),
        })
    }
}

// ---------------------------------------------------------------- /proc

/// The /proc view of one process: stat, task list, smaps and fds.
fn proc_entry(pid: i32, ppid: Option<i32>) -> Result<ProcEntry> {
    let stat = procfs::read_stat(pid)?;
    let threads = procfs::list_tasks(pid)?;
    Ok(ProcEntry {
        pid,
        ppid: ppid.unwrap_or(stat.ppid),
        pgid: stat.pgrp,
        sid: stat.session,
        comm: stat.comm,
        state: stat.state,
        exit_code: stat.exit_code,
        exit_signal: stat.exit_signal,
        threads,
        vmas: proc_vmas(pid)?,
        fds: proc_fds(pid)?,
    })
}

/// The VMAs of `pid` from its smaps (without the vsyscall page).
fn proc_vmas(pid: i32) -> Result<Vec<MapsEntry>> {
    Ok(procfs::read_smaps(pid)?
        .into_iter()
        .filter(|m| !is_gate_vma(m))
        .collect())
}

/// The fds of `pid` from `fd/`, `fdinfo/` and a stat of each link; an fd
/// closed meanwhile is left out.
fn proc_fds(pid: i32) -> Result<Vec<FdEntry>> {
    let mut fds = Vec::new();
    for (fd, target) in procfs::read_fds(pid)? {
        let info = match procfs::read_fdinfo(pid, fd) {
            Ok(i) => i,
            // Closed since the listing.
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                continue
            }
            Err(e) => return Err(e),
        };
        let link = format!("/proc/{pid}/fd/{fd}");
        let md = match std::fs::metadata(&link) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(link, e)),
        };
        use std::os::unix::fs::MetadataExt;
        fds.push(fd_entry(
            fd,
            target,
            FdInfo {
                extra: Vec::new(),
                ..info
            },
            user_dev(md.dev()),
            md.mode(),
        ));
    }
    Ok(fds)
}

fn fd_entry(fd: i32, target: String, info: FdInfo, dev: (u32, u32), mode: u32) -> FdEntry {
    let kind = FdType::of(mode, &target);
    FdEntry {
        fd,
        target,
        info,
        dev,
        mode,
        kind,
    }
}

/// The vsyscall page: listed by /proc/PID/maps but not a VMA of the mm.
fn is_gate_vma(m: &MapsEntry) -> bool {
    m.path == "[vsyscall]" && m.start >= 0xffff_ffff_ff60_0000
}

/// (major, minor) of a user-space dev_t (glibc's encoding).
pub fn user_dev(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as u32, minor as u32)
}

/// (major, minor) of a kernel dev_t (MINORBITS = 20).
pub fn kernel_dev(dev: u32) -> (u32, u32) {
    (dev >> 20, dev & 0xf_ffff)
}

/// Collects the tree rooted at `root` from /proc: the tree from the
/// children lists of every thread, then each process. A process that
/// exits meanwhile is left out (the root must be there).
pub fn collect_proc(root: i32) -> Result<Inventory> {
    let mut procs = Vec::new();
    let mut queue = VecDeque::from([(root, None)]);
    while let Some((pid, ppid)) = queue.pop_front() {
        let e = match proc_entry(pid, ppid) {
            Ok(e) => e,
            Err(e) if pid == root => return Err(e),
            Err(_) => continue,
        };
        for &t in &e.threads {
            queue.extend(
                procfs::read_children(pid, t)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| (c, Some(pid))),
            );
        }
        procs.push(e);
    }
    Inventory::ordered(root, Collector::Proc, procs)
}

/// Collects the given processes (pid, ppid) of a frozen tree from /proc;
/// any failure is an error (nothing can exit while frozen... except
/// zombies, which keep their /proc entries).
pub fn collect_proc_pids(root: i32, pids: &[(i32, i32)]) -> Result<Inventory> {
    let procs = pids
        .iter()
        .map(|&(pid, ppid)| proc_entry(pid, Some(ppid)))
        .collect::<Result<Vec<_>>>()?;
    Inventory::ordered(root, Collector::Proc, procs)
}

// ---------------------------------------------------------------- BPF

/// The state letter /proc shows for a task (fs/proc/array.c,
/// task_state_index()).
pub fn state_letter(state: u32, exit_state: i32) -> char {
    const TASK_REPORT: u32 = 0x7f;
    const TASK_IDLE: u32 = 0x0402;
    const TASK_RTLOCK_WAIT: u32 = 0x1000;
    const LETTERS: &[u8] = b"RSDTtXZPI";
    let mut s = (state | exit_state as u32) & TASK_REPORT;
    if state & TASK_IDLE == TASK_IDLE {
        s = TASK_REPORT + 1;
    }
    if state & TASK_RTLOCK_WAIT != 0 {
        s = 2;
    }
    let idx = (u32::BITS - s.leading_zeros()) as usize;
    LETTERS.get(idx).map_or('?', |&c| c as char)
}

/// The two-letter VmFlags codes of /proc/PID/smaps for `flags`
/// (fs/proc/task_mmu.c, show_smap_vma_flags(), x86-64). Protection-key
/// bits print nothing; a set bit without a name prints "??", as there.
pub fn vm_flag_codes(flags: u64) -> Vec<String> {
    const NAMES: [(u32, &str); 40] = [
        (0, "rd"),
        (1, "wr"),
        (2, "ex"),
        (3, "sh"),
        (4, "mr"),
        (5, "mw"),
        (6, "me"),
        (7, "ms"),
        (8, "gd"),
        (9, "um"),
        (10, "pf"),
        // VM_MAYBE_GUARD (6.18+): guard regions may be installed.
        (11, "gu"),
        (12, "uw"),
        (13, "lo"),
        (14, "io"),
        (15, "sr"),
        (16, "rr"),
        (17, "dc"),
        (18, "de"),
        (19, "lf"),
        (20, "ac"),
        (21, "nr"),
        (22, "ht"),
        (23, "sf"),
        (24, "ar"),
        (25, "wf"),
        (26, "dd"),
        (27, "sd"),
        (28, "mm"),
        (29, "hg"),
        (30, "nh"),
        (31, "mg"),
        (32, ""),
        (33, ""),
        (34, ""),
        (35, ""),
        (37, "ss"),
        (40, "dp"),
        (41, "ui"),
        (42, "sl"),
    ];
    (0..64u32)
        .filter(|b| flags & (1u64 << b) != 0)
        .filter_map(|b| match NAMES.iter().find(|(n, _)| *n == b) {
            Some((_, "")) => None,
            Some((_, name)) => Some(name.to_string()),
            None => Some("??".to_string()),
        })
        .collect()
}

/// A path as seq_path(m, path, "\n") prints it in /proc/PID/maps: a
/// newline becomes "\012".
fn maps_path(p: &str) -> String {
    p.replace('\n', "\\012")
}

fn utf8(bytes: Vec<u8>, what: impl FnOnce() -> String) -> Result<String> {
    String::from_utf8(bytes).map_err(|_| Error::parse(what(), "not valid UTF-8"))
}

const VM_READ: u64 = 0x1;
const VM_WRITE: u64 = 0x2;
const VM_EXEC: u64 = 0x4;
const VM_MAYSHARE: u64 = 0x80;

/// The name /proc/PID/maps gives the mapping at `start`-`end`, from the
/// process's maps (read once per process).
fn maps_name(
    pid: i32,
    start: u64,
    end: u64,
    fallback: &mut Option<Vec<MapsEntry>>,
) -> Result<String> {
    Ok(maps_entry(pid, start, end, fallback)?.path.clone())
}

/// The /proc/PID/maps line of the VMA `start`-`end` (the file read once
/// per process, into `fallback`).
fn maps_entry(
    pid: i32,
    start: u64,
    end: u64,
    fallback: &mut Option<Vec<MapsEntry>>,
) -> Result<&MapsEntry> {
    if fallback.is_none() {
        *fallback = Some(procfs::read_maps(pid)?);
    }
    fallback
        .iter()
        .flatten()
        .find(|m| m.start == start && m.end == end)
        .ok_or_else(|| {
            Error::parse(
                format!("/proc/{pid}/maps"),
                format!("no mapping {start:#x}-{end:#x}"),
            )
        })
}

/// Names and devices of mapped files by their path's (vfsmount,
/// dentry): one lookup in /proc per distinct file of the tree, not per
/// process. The device is /proc's too: for a file on overlayfs, the
/// mapping holds (since Linux 6.8) a backing file of the layer below,
/// whose inode's device the programs see, while /proc/PID/maps shows the
/// overlay's (`file_user_inode`), as stat(2) of the path does.
type FileNames = std::collections::HashMap<(u64, u64), (String, (u32, u32))>;

fn vma_entry(
    v: records::VmaRec,
    fallback: &mut Option<Vec<MapsEntry>>,
    names: &mut FileNames,
) -> Result<MapsEntry> {
    let pid = v.tgid;
    let name = |v: &records::VmaRec| utf8(v.name.clone(), || format!("/proc/{pid}/maps name"));
    let mut dev = kernel_dev(v.dev);
    let path = match v.name_kind {
        VmaName::FileKey => {
            let (n, d) = match names.get(&v.path_key) {
                Some(known) => known.clone(),
                None => {
                    let m = maps_entry(pid, v.start, v.end, fallback)?;
                    let known = (m.path.clone(), (m.dev_major, m.dev_minor));
                    names.insert(v.path_key, known.clone());
                    known
                }
            };
            dev = d;
            n
        }
        VmaName::Anon => String::new(),
        VmaName::File => maps_path(&name(&v)?),
        VmaName::Special => name(&v)?,
        VmaName::Heap => "[heap]".into(),
        VmaName::Stack => "[stack]".into(),
        VmaName::AnonName => format!("[anon:{}]", name(&v)?),
        VmaName::ShmemName => format!("[anon_shmem:{}]", name(&v)?),
        VmaName::Error => maps_name(pid, v.start, v.end, fallback)?,
    };
    let (dev_major, dev_minor) = dev;
    Ok(MapsEntry {
        start: v.start,
        end: v.end,
        read: v.flags & VM_READ != 0,
        write: v.flags & VM_WRITE != 0,
        exec: v.flags & VM_EXEC != 0,
        shared: v.flags & VM_MAYSHARE != 0,
        offset: v.pgoff.wrapping_mul(crate::sys::PAGE_SIZE),
        dev_major,
        dev_minor,
        inode: v.ino,
        path,
        vm_flags: vm_flag_codes(v.flags),
    })
}

/// Decodes what the iterators wrote into an inventory.
fn from_records(root: i32, out: crate::sys::bpf::IterOutput) -> Result<Inventory> {
    if out.too_deep > 0 {
        return Err(Error::sys(
            root,
            "bpf inventory",
            std::io::Error::other(format!(
                "{} tasks deeper than the programs walk",
                out.too_deep
            )),
        ));
    }
    if out.map_full > 0 {
        return Err(Error::sys(
            root,
            "bpf inventory",
            std::io::Error::other(format!(
                "{} processes did not fit in the tree map",
                out.map_full
            )),
        ));
    }
    let mut procs: BTreeMap<i32, ProcEntry> = BTreeMap::new();
    let mut threads: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for t in records::parse_tasks(&out.tasks)? {
        threads.entry(t.tgid).or_default().push(t.tid);
        if t.tid == t.tgid {
            procs.insert(
                t.tgid,
                ProcEntry {
                    pid: t.tgid,
                    ppid: t.ppid,
                    pgid: t.pgid,
                    sid: t.sid,
                    comm: String::from_utf8_lossy(&t.comm).into_owned(),
                    state: state_letter(t.state, t.exit_state),
                    exit_code: t.exit_code,
                    exit_signal: t.exit_signal,
                    threads: Vec::new(),
                    vmas: Vec::new(),
                    fds: Vec::new(),
                },
            );
        }
    }
    for (tgid, mut tids) in threads {
        let p = procs.get_mut(&tgid).ok_or_else(|| {
            Error::parse(
                "bpf task records",
                format!("threads of {tgid} without their leader"),
            )
        })?;
        tids.sort_unstable();
        p.threads = tids;
    }
    // The exit code of a stopped or dead process as /proc/PID/stat shows
    // it, which differs between kernels: 6.1's shows the group's (the
    // stop signal, the group exit code), Debian 11's 5.10 the leader's
    // own (0 while stopped). Such processes are few: asked of /proc, so
    // the two collectors agree on every kernel.
    for p in procs.values_mut() {
        if matches!(p.state, 'T' | 't' | 'Z') {
            if let Ok(st) = procfs::read_stat(p.pid) {
                p.exit_code = st.exit_code;
            }
        }
    }
    let mut fallback: BTreeMap<i32, Option<Vec<MapsEntry>>> = BTreeMap::new();
    let mut names = FileNames::new();
    for v in records::parse_vmas(&out.vmas)? {
        let tgid = v.tgid;
        let e = vma_entry(v, fallback.entry(tgid).or_default(), &mut names)?;
        if let Some(p) = procs.get_mut(&tgid) {
            p.vmas.push(e);
        }
    }
    for f in records::parse_fds(&out.files)? {
        let tgid = f.tgid;
        let target = match f.path {
            Some(p) => utf8(p, || format!("/proc/{tgid}/fd/{}", f.fd))?,
            None => procfs::read_link(format!("/proc/{tgid}/fd/{}", f.fd))?,
        };
        let info = FdInfo {
            pos: f.pos,
            flags: f.flags,
            mnt_id: f.mnt_id as u32,
            ino: f.ino,
            extra: Vec::new(),
        };
        let (dev, mode) = if f.stat_dev {
            let link = format!("/proc/{tgid}/fd/{}", f.fd);
            use std::os::unix::fs::MetadataExt;
            let md = std::fs::metadata(&link).map_err(|e| Error::io(link, e))?;
            (user_dev(md.dev()), md.mode())
        } else {
            (kernel_dev(f.dev), f.mode)
        };
        let e = fd_entry(f.fd, target, info, dev, mode);
        if let Some(p) = procs.get_mut(&tgid) {
            p.fds.push(e);
        }
    }
    // A program this kernel does not load: that part from /proc, the
    // same reads as the /proc collector's (the same information).
    for p in procs.values_mut() {
        if out.no_vmas.is_some() {
            p.vmas = proc_vmas(p.pid)?;
        }
        if out.no_files.is_some() {
            p.fds = proc_fds(p.pid)?;
        }
        p.vmas.sort_by_key(|m| m.start);
        p.fds.sort_by_key(|f| f.fd);
    }
    let mut inv = Inventory::ordered(root, Collector::Bpf, procs.into_values().collect())?;
    for (part, why) in [("VMAs", &out.no_vmas), ("fds", &out.no_files)] {
        if let Some(why) = why {
            inv.from_proc.push(format!("{part} from /proc: {why}"));
        }
    }
    Ok(inv)
}

/// Collects the tree rooted at `root` with the BPF iterators.
pub fn collect_bpf(iters: &mut Iterators, root: i32) -> Result<Inventory> {
    let t = Instant::now();
    let out = iters
        .collect(root)
        .map_err(|e| Error::sys(root, "bpf inventory", e))?;
    let (bytes, ran) = (
        out.tasks.len() + out.vmas.len() + out.files.len(),
        t.elapsed(),
    );
    let inv = from_records(root, out)?;
    crate::debug!(
        "bpf inventory of {root}: iterators {:.3} ms ({bytes} bytes of records), decoding {:.3} ms",
        ran.as_secs_f64() * 1e3,
        (t.elapsed() - ran).as_secs_f64() * 1e3
    );
    for part in &inv.from_proc {
        note_partial(part);
    }
    Ok(inv)
}

// ---------------------------------------------------------------- choice

/// Why BPF cannot be used in this run, once probed; `None` if it can.
pub fn bpf_unavailable() -> Option<String> {
    let f = crate::sys::probe::features();
    if !f.bpf_iter.available {
        return Some(format!("BPF iterators: {}", f.bpf_iter.detail));
    }
    if !f.initial_pid_ns.available {
        return Some(f.initial_pid_ns.detail.clone());
    }
    None
}

/// Logs, once per run, a part of the BPF inventory read from /proc
/// because its program is not loaded on this kernel.
fn note_partial(what: &str) {
    static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    if let Ok(mut seen) = SEEN.lock() {
        if !seen.iter().any(|s| s == what) {
            seen.push(what.to_string());
            crate::info!("bpf inventory: {what}");
        }
    }
}

/// Logs, once per run, why the /proc fallback is taken.
pub fn note_fallback(why: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| crate::warn!("BPF not used ({why}); collecting from /proc"));
}

/// Collects with the BPF iterators only (the programs loaded once per
/// run, [`crate::sys::bpf::shared`]); `Err` says why BPF cannot be used
/// here or why the collection failed (a tree deeper than the programs
/// walk, ...). For the dump, which falls back to its own /proc reads.
pub fn collect_bpf_only(
    root: i32,
) -> std::result::Result<(Inventory, std::time::Duration), String> {
    if let Some(why) = bpf_unavailable() {
        return Err(why);
    }
    match &crate::sys::bpf::shared().iters {
        Ok(iters) => {
            let t = Instant::now();
            let inv = collect_bpf(&mut iters.borrow_mut(), root).map_err(|e| e.to_string())?;
            Ok((inv, t.elapsed()))
        }
        Err(e) => Err(format!("BPF iterators: {e}")),
    }
}

/// Collects with BPF if it can be used and `no_bpf` is false, else from
/// /proc; returns the inventory and the time the collection took.
pub fn collect(root: i32, no_bpf: bool) -> Result<(Inventory, std::time::Duration)> {
    if !no_bpf {
        match bpf_unavailable() {
            None => match &crate::sys::bpf::shared().iters {
                Ok(iters) => {
                    let t = Instant::now();
                    let inv = collect_bpf(&mut iters.borrow_mut(), root)?;
                    return Ok((inv, t.elapsed()));
                }
                Err(e) => note_fallback(e),
            },
            Some(why) => note_fallback(&why),
        }
    }
    let t = Instant::now();
    let inv = collect_proc(root)?;
    Ok((inv, t.elapsed()))
}

// ---------------------------------------------------------------- output

fn json_strings(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| json_string(s)).collect();
    format!("[{}]", items.join(","))
}

/// One JSON object: `{"root", "collector", "processes": [...]}` with every
/// field of every process, VMA and fd.
pub fn to_json(inv: &Inventory) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "{{\"root\":{},\"collector\":{},\"processes\":[",
        inv.root,
        json_string(inv.collector.as_str())
    );
    for (i, p) in inv.procs.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        let threads: Vec<String> = p.threads.iter().map(|t| t.to_string()).collect();
        let _ = write!(
            o,
            "{{\"pid\":{},\"ppid\":{},\"pgid\":{},\"sid\":{},\"comm\":{},\"state\":{},\
             \"exit_code\":{},\"exit_signal\":{},\"threads\":[{}],\"vmas\":[",
            p.pid,
            p.ppid,
            p.pgid,
            p.sid,
            json_string(&p.comm),
            json_string(&p.state.to_string()),
            p.exit_code,
            p.exit_signal,
            threads.join(",")
        );
        for (j, m) in p.vmas.iter().enumerate() {
            if j > 0 {
                o.push(',');
            }
            let perms = format!(
                "{}{}{}{}",
                if m.read { 'r' } else { '-' },
                if m.write { 'w' } else { '-' },
                if m.exec { 'x' } else { '-' },
                if m.shared { 's' } else { 'p' }
            );
            let _ = write!(
                o,
                "{{\"start\":{},\"end\":{},\"perms\":\"{perms}\",\"offset\":{},\"dev\":\"{:x}:{:x}\",\
                 \"inode\":{},\"path\":{},\"vm_flags\":{}}}",
                m.start,
                m.end,
                m.offset,
                m.dev_major,
                m.dev_minor,
                m.inode,
                json_string(&m.path),
                json_strings(&m.vm_flags)
            );
        }
        o.push_str("],\"fds\":[");
        for (j, f) in p.fds.iter().enumerate() {
            if j > 0 {
                o.push(',');
            }
            let _ = write!(
                o,
                "{{\"fd\":{},\"target\":{},\"kind\":\"{}\",\"flags\":{},\"pos\":{},\"mnt_id\":{},\
                 \"ino\":{},\"dev\":\"{:x}:{:x}\",\"mode\":{}}}",
                f.fd,
                json_string(&f.target),
                f.kind.as_str(),
                f.info.flags,
                f.info.pos,
                f.info.mnt_id,
                f.info.ino,
                f.dev.0,
                f.dev.1,
                f.mode
            );
        }
        o.push_str("]}");
    }
    o.push_str("]}\n");
    o
}

/// A few lines per process for people.
pub fn to_text(inv: &Inventory) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "tree {} ({}): {}",
        inv.root,
        inv.collector.as_str(),
        inv.summary()
    );
    for p in &inv.procs {
        let _ = writeln!(
            o,
            "pid {} ppid {} pgid {} sid {} {} ({}) threads {:?}: {} VMAs, {} fds",
            p.pid,
            p.ppid,
            p.pgid,
            p.sid,
            p.state,
            p.comm,
            p.threads,
            p.vmas.len(),
            p.fds.len()
        );
        for f in &p.fds {
            let _ = writeln!(
                o,
                "  fd {:<4} {:<10} flags {:o} pos {} {}",
                f.fd,
                f.kind.as_str(),
                f.info.flags,
                f.info.pos,
                f.target
            );
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_letters() {
        assert_eq!(state_letter(0, 0), 'R');
        assert_eq!(state_letter(1, 0), 'S');
        assert_eq!(state_letter(2, 0), 'D');
        assert_eq!(state_letter(0x402, 0), 'I');
        assert_eq!(state_letter(4, 0), 'T');
        assert_eq!(state_letter(8, 0), 't');
        assert_eq!(state_letter(0, 0x20), 'Z');
        assert_eq!(state_letter(0, 0x10), 'X');
        assert_eq!(state_letter(0x1000 | 2, 0), 'D');
    }

    #[test]
    fn vm_flags() {
        // rw-p anonymous with mr mw me ac.
        let f = 0x1 | 0x2 | 0x10 | 0x20 | 0x40 | 0x100000;
        assert_eq!(vm_flag_codes(f), ["rd", "wr", "mr", "mw", "me", "ac"]);
        // pkey bits print nothing; an unknown bit prints "??".
        assert_eq!(vm_flag_codes(1 << 33), Vec::<String>::new());
        assert_eq!(vm_flag_codes(1 << 50), ["??"]);
        assert_eq!(vm_flag_codes(1 << 42 | 1 << 26), ["dd", "sl"]);
    }

    #[test]
    fn devs() {
        assert_eq!(kernel_dev((254 << 20) | 3), (254, 3));
        // glibc makedev(254, 3) and a big minor.
        assert_eq!(user_dev(0xfe03), (254, 3));
        assert_eq!(user_dev(libc::makedev(0x10020, 0x3005)), (0x10020, 0x3005));
        assert_eq!(user_dev(libc::makedev(8, 1)), (8, 1));
    }

    #[test]
    fn fd_kinds() {
        assert_eq!(FdType::of(0o100644, "/x"), FdType::File);
        assert_eq!(FdType::of(0o010600, "pipe:[5]"), FdType::Pipe);
        assert_eq!(FdType::of(0o010600, "/tmp/fifo"), FdType::Fifo);
        assert_eq!(FdType::of(0o140777, "socket:[5]"), FdType::Socket);
        assert_eq!(FdType::of(0o600, "anon_inode:[eventfd]"), FdType::AnonInode);
        assert_eq!(FdType::of(0o020666, "/dev/null"), FdType::CharDev);
    }

    #[test]
    fn maps_paths_escape_newlines() {
        assert_eq!(maps_path("/tmp/a\nb"), "/tmp/a\\012b");
        assert_eq!(maps_path("/x y"), "/x y");
    }

    fn entry(pid: i32, ppid: i32) -> ProcEntry {
        ProcEntry {
            pid,
            ppid,
            pgid: 0,
            sid: 0,
            comm: String::new(),
            state: 'S',
            exit_code: 0,
            exit_signal: 17,
            threads: vec![pid],
            vmas: vec![],
            fds: vec![],
        }
    }

    #[test]
    fn ordering_is_breadth_first_and_drops_strangers() {
        let procs = vec![
            entry(30, 20),
            entry(20, 10),
            entry(12, 10),
            entry(10, 1),
            entry(99, 5),
        ];
        let inv = Inventory::ordered(10, Collector::Proc, procs).unwrap();
        let order: Vec<i32> = inv.procs.iter().map(|p| p.pid).collect();
        assert_eq!(order, [10, 12, 20, 30]);
        assert!(Inventory::ordered(7, Collector::Proc, vec![entry(8, 7)]).is_err());
    }
}
