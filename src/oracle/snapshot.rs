//! Taking the snapshot: the kernel's view of every task of a tree, read
//! from /proc (read-only opens of /proc files, `readlink` of the fd
//! links, `pread` of pagemap; no file is opened through an fd link) and,
//! for what /proc does not show (subreaper, membarrier registrations),
//! one BPF task iterator (`crate::sys::procattrs`), as a map of named
//! fields per task. The parsers are pure functions of the
//! file's text, unit-tested below.

use std::collections::{BTreeMap, HashMap};

use crate::procfs;

/// Fields of one task, by name.
pub type Fields = BTreeMap<String, String>;

/// A process of the tree to snapshot.
#[derive(Debug, Clone)]
pub struct ProcSpec {
    pub pid: i32,
    /// Its parent (0 or a pid outside the tree for the root).
    pub ppid: i32,
    /// Thread ids, leader first (just the pid for a zombie).
    pub tids: Vec<i32>,
    pub zombie: bool,
    /// Signal masks to record instead of what /proc shows (the dump's
    /// freeze blocks every signal; the mask the task had is this one).
    pub sigmask: HashMap<i32, u64>,
}

/// Largest VMA whose pages are compared for copy-on-write sharing
/// (pages); a larger one records "too large".
const MAX_COW_PAGES: u64 = 1 << 20;

/// One value, with every run of whitespace made one space.
pub fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads a /proc file as text (invalid UTF-8 replaced); `Err` is the
/// text recorded instead ("<unreadable: ...>"), or `None` if the file
/// does not exist or the kernel does not support it (so that both sides
/// agree that it is absent).
fn read_text(path: &str) -> Result<String, Option<String>> {
    match procfs::read_proc_bytes(path) {
        Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Err(crate::Error::Io { source, .. }) => match source.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => Err(None),
            _ => Err(Some(format!("<unreadable: {}>", source.kind()))),
        },
        Err(e) => Err(Some(format!("<unreadable: {e}>"))),
    }
}

/// Adds `prefix.KEY` = value for every "KEY: value" line of a status-like
/// file; repeated keys are joined with " | ".
pub fn parse_colon_lines(text: &str, prefix: &str, out: &mut Fields) {
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let key = format!("{prefix}.{}", k.trim());
        let v = squash(v);
        match out.get_mut(&key) {
            Some(old) => {
                old.push_str(" | ");
                old.push_str(&v);
            }
            None => {
                out.insert(key, v);
            }
        }
    }
}

/// The fields of /proc/PID/stat that are state (not times, counters or
/// addresses the kernel recomputes), by their index after the comm
/// (field 3 of stat(5) is index 0).
const STAT_FIELDS: &[(usize, &str)] = &[
    (0, "state"),
    (1, "ppid"),
    (2, "pgrp"),
    (3, "session"),
    (4, "tty_nr"),
    (5, "tpgid"),
    (6, "flags"),
    (15, "priority"),
    (16, "nice"),
    (17, "num_threads"),
    (22, "rsslim"),
    (23, "startcode"),
    (24, "endcode"),
    (25, "startstack"),
    (35, "exit_signal"),
    (37, "rt_priority"),
    (38, "policy"),
    (42, "start_data"),
    (43, "end_data"),
    (44, "start_brk"),
    (45, "arg_start"),
    (46, "arg_end"),
    (47, "env_start"),
    (48, "env_end"),
    (49, "exit_code"),
];

/// Adds the state fields of a stat line ("stat.policy" ...); the comm is
/// what lies between the first '(' and the last ')'. Flags are shown in
/// hex.
pub fn parse_stat_line(text: &str, out: &mut Fields) {
    let (Some(open), Some(close)) = (text.find('('), text.rfind(')')) else {
        out.insert("stat".into(), "<malformed>".into());
        return;
    };
    if close < open {
        out.insert("stat".into(), "<malformed>".into());
        return;
    }
    out.insert("stat.comm".into(), text[open + 1..close].to_string());
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    for &(i, name) in STAT_FIELDS {
        let Some(v) = rest.get(i) else { continue };
        let v = if name == "flags" {
            v.parse::<u64>()
                .map(|f| format!("{f:#x}"))
                .unwrap_or_else(|_| v.to_string())
        } else {
            v.to_string()
        };
        out.insert(format!("stat.{name}"), v);
    }
}

/// The smaps keys that are state of a mapping (the others are sizes the
/// kernel counts: Rss, Pss, Anonymous, ...).
const SMAPS_KEYS: &[&str] = &["VmFlags", "Locked", "THPeligible", "ProtectionKey"];

/// A VMA header line of smaps: "start-end perms offset dev inode [path]".
fn vma_header(line: &str) -> Option<(String, Vec<(&'static str, String)>)> {
    let mut it = line.splitn(6, ' ');
    let range = it.next()?;
    let (a, b) = range.split_once('-')?;
    if a.is_empty() || !a.chars().all(|c| c.is_ascii_hexdigit()) || b.is_empty() {
        return None;
    }
    if !b.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let perms = it.next()?;
    let offset = it.next()?;
    let dev = it.next()?;
    let inode = it.next()?;
    let path = it.next().unwrap_or("").trim_start().to_string();
    Some((
        range.to_string(),
        vec![
            ("perms", perms.to_string()),
            ("offset", offset.to_string()),
            ("dev", dev.to_string()),
            ("inode", inode.to_string()),
            ("path", path),
        ],
    ))
}

/// Adds "vma.START-END.FIELD" for every VMA of an smaps text; returns the
/// ranges with their perms and path, in order.
pub fn parse_smaps_text(text: &str, out: &mut Fields) -> Vec<(u64, u64, String, String)> {
    let mut vmas = Vec::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        if let Some((range, hdr)) = vma_header(line) {
            let (a, b) = range.split_once('-').unwrap_or(("", ""));
            let (s, e) = (
                u64::from_str_radix(a, 16).unwrap_or(0),
                u64::from_str_radix(b, 16).unwrap_or(0),
            );
            let perms = hdr[0].1.clone();
            let path = hdr[4].1.clone();
            for (k, v) in hdr {
                out.insert(format!("vma.{range}.{k}"), v);
            }
            vmas.push((s, e, perms, path));
            cur = Some(range);
            continue;
        }
        let (Some(range), Some((k, v))) = (cur.as_ref(), line.split_once(':')) else {
            continue;
        };
        let k = k.trim();
        if SMAPS_KEYS.contains(&k) {
            out.insert(format!("vma.{range}.{k}"), squash(v));
        }
    }
    vmas
}

/// Adds "limits.NAME" = "soft hard units" for every line of
/// /proc/PID/limits but the heading.
pub fn parse_limits(text: &str, out: &mut Fields) {
    for line in text.lines().skip(1) {
        // Columns: name (up to 26 chars), soft, hard, units.
        if line.len() < 26 || !line.is_char_boundary(26) {
            continue;
        }
        let (name, vals) = line.split_at(26);
        out.insert(format!("limits.{}", name.trim()), squash(vals));
    }
}

/// A lock line ("1: POSIX  ADVISORY  WRITE 1234 00:1a:5678 0 EOF" or
/// "1: -> POSIX ..."), without its ordinal and with its pid replaced by
/// `pid` (the caller decides what the pid means).
pub fn normalise_lock(line: &str) -> Option<(i32, String)> {
    let (_, rest) = line.split_once(':')?;
    let mut words: Vec<&str> = rest.split_whitespace().collect();
    let off = usize::from(words.first() == Some(&"->"));
    let pid: i32 = words.get(off + 3)?.parse().ok()?;
    if words.len() > off + 3 {
        words[off + 3] = "PID";
    }
    Some((pid, words.join(" ")))
}

/// Adds "locks" to each process of the tree that holds entries of
/// /proc/locks: its entries, normalised and sorted.
pub fn parse_locks(text: &str, pids: &[i32]) -> HashMap<i32, String> {
    let mut per: HashMap<i32, Vec<String>> = HashMap::new();
    for line in text.lines() {
        if let Some((pid, norm)) = normalise_lock(line) {
            if pids.contains(&pid) {
                per.entry(pid).or_default().push(norm);
            }
        }
    }
    per.into_iter()
        .map(|(p, mut v)| {
            v.sort();
            (p, v.join("; "))
        })
        .collect()
}

/// Adds the fields of one fdinfo text under "fd.N.": pos, flags, mnt_id,
/// ino and every other line (lock lines without their ordinal and pid).
pub fn parse_fdinfo_text(text: &str, fd: i32, out: &mut Fields) {
    let mut local = Fields::new();
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        let (key, value) = match t.split_once(':') {
            Some((k, _)) if k.starts_with("inotify ") || k.starts_with("fanotify ") => {
                let (w, rest) = t.split_once(' ').unwrap_or((t, ""));
                (w.to_string(), squash(rest))
            }
            Some(("lock", v)) => (
                "lock".to_string(),
                normalise_lock(v.trim())
                    .map(|(_, n)| n)
                    .unwrap_or_else(|| squash(v)),
            ),
            Some((k, v)) => (k.trim().to_string(), squash(v)),
            None => (t.to_string(), String::new()),
        };
        let key = format!("fd.{fd}.{key}");
        match local.get_mut(&key) {
            Some(old) => {
                old.push_str(" | ");
                old.push_str(&value);
            }
            None => {
                local.insert(key, value);
            }
        }
    }
    out.extend(local);
}

/// The keys of /proc/PID/task/TID/sched that are state (the others are
/// the scheduler's clocks and counters).
const SCHED_KEYS: &[&str] = &["policy", "prio"];

/// Adds "sched.policy" and "sched.prio" from a sched text ("KEY : VALUE"
/// lines after a heading).
pub fn parse_sched(text: &str, out: &mut Fields) {
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let k = k.trim();
        if SCHED_KEYS.contains(&k) {
            out.insert(format!("sched.{k}"), squash(v));
        }
    }
}

/// Reads a link with readlink(2) only (never followed), lossy.
fn link(path: &str) -> Option<String> {
    std::fs::read_link(path)
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// The numeric entries of a /proc directory, sorted.
fn numeric_dir(path: &str) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir(path) else {
        return Vec::new();
    };
    let mut v: Vec<i32> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect();
    v.sort_unstable();
    v
}

/// The per-thread fields: status and stat of /proc/PID/task/TID.
fn thread_fields(pid: i32, tid: i32, sigmask: Option<u64>) -> Fields {
    let mut f = Fields::new();
    match read_text(&format!("/proc/{pid}/task/{tid}/status")) {
        Ok(t) => parse_colon_lines(&t, "status", &mut f),
        Err(Some(e)) => {
            f.insert("status".into(), e);
        }
        Err(None) => {}
    }
    if let Some(m) = sigmask {
        f.insert("status.SigBlk".into(), format!("{m:016x}"));
    }
    match read_text(&format!("/proc/{pid}/task/{tid}/stat")) {
        Ok(t) => parse_stat_line(&t, &mut f),
        Err(Some(e)) => {
            f.insert("stat".into(), e);
        }
        Err(None) => {}
    }
    match read_text(&format!("/proc/{pid}/task/{tid}/sched")) {
        Ok(t) => parse_sched(&t, &mut f),
        Err(Some(e)) => {
            f.insert("sched".into(), e);
        }
        Err(None) => {}
    }
    f
}

/// Small per-process files recorded whole ("file.NAME").
const SMALL_FILES: &[&str] = &[
    "oom_score_adj",
    "loginuid",
    "sessionid",
    "cgroup",
    "personality",
    "timerslack_ns",
    "attr/current",
    "timers",
    "coredump_filter",
    "comm",
];

/// The per-process fields of a live process (beyond its leader's thread
/// fields); returns the VMAs (start, end, perms, path) for the sharing
/// pass.
fn process_fields(pid: i32, tree: &[i32], f: &mut Fields) -> Vec<(u64, u64, String, String)> {
    for name in SMALL_FILES {
        match read_text(&format!("/proc/{pid}/{name}")) {
            Ok(t) => {
                f.insert(format!("file.{name}"), squash(&t));
            }
            Err(Some(e)) => {
                f.insert(format!("file.{name}"), e);
            }
            Err(None) => {}
        }
    }
    if let Ok(t) = read_text(&format!("/proc/{pid}/limits")) {
        parse_limits(&t, f);
    }
    for l in ["cwd", "root", "exe"] {
        if let Some(t) = link(&format!("/proc/{pid}/{l}")) {
            f.insert(format!("link.{l}"), t);
        }
    }
    for fd in numeric_dir(&format!("/proc/{pid}/fd")) {
        let Some(target) = link(&format!("/proc/{pid}/fd/{fd}")) else {
            continue;
        };
        if target.starts_with("socket:[") {
            if let Some(v) = unix_peercred(pid, fd, tree) {
                f.insert(format!("fd.{fd}.peercred"), v);
            }
        }
        f.insert(format!("fd.{fd}.link"), target);
        match read_text(&format!("/proc/{pid}/fdinfo/{fd}")) {
            Ok(t) => parse_fdinfo_text(&t, fd, f),
            Err(Some(e)) => {
                f.insert(format!("fd.{fd}.fdinfo"), e);
            }
            Err(None) => {}
        }
    }
    match read_text(&format!("/proc/{pid}/smaps")) {
        Ok(t) => parse_smaps_text(&t, f),
        Err(e) => {
            f.insert("smaps".into(), e.unwrap_or_else(|| "<absent>".into()));
            Vec::new()
        }
    }
}

/// SO_PEERCRED and SO_PEERGROUPS of fd `fd` of `pid` if it is a unix
/// socket (read on a pidfd_getfd copy: the socket's own values), as
/// [`show_peercred`] writes them; None for other sockets.
fn unix_peercred(pid: i32, fd: i32, tree: &[i32]) -> Option<String> {
    use crate::sys::{peercred as pc, sock};
    let proto = sock::proto_name(&format!("/proc/{pid}/fd/{fd}")).ok()?;
    if !crate::kinds::unix::handles_proto(&proto) {
        return None;
    }
    let sk = match sock::pidfd_getfd(pid, fd) {
        Ok(sk) => sk,
        Err(e) => return Some(format!("<pidfd_getfd: {e}>")),
    };
    let c = match pc::peer_cred(&sk) {
        Ok(c) => c,
        Err(e) => return Some(format!("<SO_PEERCRED: {e}>")),
    };
    let mut groups = pc::peer_groups(&sk).unwrap_or_default();
    groups.sort_unstable();
    let outside_alive = c.pid > 0
        && !tree.contains(&c.pid)
        && std::path::Path::new(&format!("/proc/{}", c.pid)).exists();
    Some(show_peercred(c, &groups, outside_alive))
}

/// "pid P uid U gid G groups [..]" ("none" when the socket records no
/// peer). A pid of a live process outside the tree is not named: only a
/// socket whose peer is outside the tree (--ext-unix-sk) keeps one (the
/// dump refuses others), and the restore gives such a socket its peer
/// gone (cairn's pid at the restore, the outside process's at the dump).
pub fn show_peercred(
    c: crate::sys::peercred::Ucred,
    groups: &[u32],
    outside_alive: bool,
) -> String {
    if c.pid == 0 && c.uid == u32::MAX {
        return "none".into();
    }
    let who = if outside_alive {
        "a live process outside the tree".to_string()
    } else {
        format!("pid {}", c.pid)
    };
    format!("{who} uid {} gid {} groups {groups:?}", c.uid, c.gid)
}

/// "kernel.subreaper" (0 or 1, PR_GET_CHILD_SUBREAPER) and
/// "kernel.membarrier_state" (the mm's MEMBARRIER_STATE_* bits in hex,
/// absent without CONFIG_MEMBARRIER), read with BPF.
pub fn attr_fields(a: &crate::sys::procattrs::Attrs, f: &mut Fields) {
    f.insert("kernel.subreaper".into(), u8::from(a.subreaper).to_string());
    if let Some(m) = a.membarrier_state {
        f.insert("kernel.membarrier_state".into(), format!("{m:#x}"));
    }
}

/// Number of anonymous pages of [start, end) that have the same page
/// frame in `a` and `b`, not counting frames that appear at more than one
/// address of the range in either (the shared zero page, KSM pages), nor
/// file pages (page cache, present or not as it pleases the kernel):
/// `None` if pagemap cannot be read. Pages present in both with different
/// frames are read again in both: memory compaction may have moved a page
/// that is still shared between the two reads (both page tables then
/// name its new frame), as `kinds::memory::plan` does for the dump.
/// Pages at the addresses of `skip` are not counted (the pages of rseq
/// areas: [`rseq_pages`]).
fn same_frames(a: i32, b: i32, start: u64, end: u64, skip: &[u64]) -> Option<u64> {
    let anon = |p: &procfs::PageFlags| if p.file_or_shared() { 0 } else { p.pfn() };
    let read = |pid: i32| -> Option<Vec<u64>> {
        let pm = procfs::read_pagemap(pid, start, end).ok()?;
        let mut v: Vec<u64> = pm.iter().map(anon).collect();
        for &page in skip.iter().filter(|&&p| p >= start && p < end) {
            v[((page - start) / 4096) as usize] = 0;
        }
        Some(v)
    };
    let (mut fa, mut fb) = (read(a)?, read(b)?);
    let differ: Vec<usize> = (0..fa.len().min(fb.len()))
        .filter(|&i| fa[i] != 0 && fb[i] != 0 && fa[i] != fb[i])
        .collect();
    if !differ.is_empty() {
        let (ra, rb) = (read(a)?, read(b)?);
        for i in differ {
            if let (Some(&x), Some(&y)) = (ra.get(i), rb.get(i)) {
                fa[i] = x;
                fb[i] = y;
            }
        }
    }
    Some(count_same_frames(&fa, &fb))
}

/// What `same_frames` counts, on the frame numbers (0: not present).
pub fn count_same_frames(a: &[u64], b: &[u64]) -> u64 {
    let mut seen: HashMap<u64, u32> = HashMap::new();
    for &p in a.iter().chain(b) {
        if p != 0 {
            *seen.entry(p).or_default() += 1;
        }
    }
    a.iter()
        .zip(b)
        .filter(|(x, y)| **x != 0 && x == y && seen.get(x) == Some(&2))
        .count() as u64
}

/// The pages that hold the rseq area of one of `tids` (stopped tasks this
/// process traces): copy-on-write sharing of such a page cannot outlive
/// the freeze. A task frozen by ptrace was scheduled out, which sets its
/// rseq notification, and on its next return to user space (the first
/// call cairn injects, or the thaw) the kernel writes `cpu_id_start`,
/// `cpu_id` and `rseq_cs` into the area, breaking the sharing of its
/// page whatever the values. So neither side of a comparison counts it
/// (docs/ARCHITECTURE.md "The oracle"). The area is what
/// PTRACE_GET_RSEQ_CONFIGURATION says (Linux 5.13+); before (EIO), glibc's
/// place from the thread pointer (`__rseq_offset` of cairn's own glibc),
/// as `kinds::task::rseq_config` assumes. A task that cannot be asked
/// (not traced by this thread) adds nothing.
pub fn rseq_pages(tids: &[i32]) -> Vec<u64> {
    use crate::sys::ptrace;
    let mut pages = Vec::new();
    for &tid in tids {
        let area = match ptrace::get_rseq_config(tid) {
            Ok(c) if c.rseq_abi_pointer != 0 => Some(c.rseq_abi_pointer),
            Ok(_) => None,
            Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                match (ptrace::own_glibc_rseq_offset(), ptrace::get_regs(tid)) {
                    (Some(off), Ok(r)) if r.fs_base != 0 => {
                        Some(r.fs_base.wrapping_add(off as u64))
                    }
                    _ => None,
                }
            }
            Err(_) => None,
        };
        if let Some(a) = area {
            // The area (32 bytes, 32-byte aligned) never straddles a page.
            pages.push(a & !4095);
        }
    }
    pages.sort_unstable();
    pages.dedup();
    pages
}

/// Whether this process can see page frame numbers (CAP_SYS_ADMIN).
fn pfn_visible(pid: i32, vmas: &[(u64, u64, String, String)]) -> bool {
    for (s, e, _, _) in vmas {
        let end = (*e).min(s + 64 * 4096);
        if let Ok(pm) = procfs::read_pagemap(pid, *s, end) {
            if pm.iter().any(|p| p.present()) {
                return pm.iter().any(|p| p.pfn() != 0);
            }
        }
    }
    false
}

/// Snapshots the tree `procs` (root first). Never fails: what cannot be
/// read is recorded as such, so both sides of a comparison see it.
pub fn snapshot(procs: &[ProcSpec]) -> crate::image::proto::KernelView {
    use crate::image::proto::{KernelView, TaskView};
    let pids: Vec<i32> = procs.iter().map(|p| p.pid).collect();
    // The tree's lines each once, however the machine's other locks come
    // and go meanwhile (`procfs::read_proc_locks`).
    let locks = procfs::read_proc_locks(|p| pids.contains(&p))
        .map(|t| parse_locks(&t, &pids))
        .unwrap_or_default();
    // State /proc does not show (subreaper, membarrier registrations):
    // from BPF, for every process at once; absent on both sides where BPF
    // cannot be used.
    let attrs = match crate::sys::procattrs::all() {
        Ok(a) => a,
        Err(e) => {
            debug!("oracle: no subreaper or membarrier state (BPF: {e})");
            HashMap::new()
        }
    };
    let mut view = KernelView::new();
    view.root_pid = procs.first().map_or(0, |p| p.pid);
    let mut vmas: HashMap<i32, Vec<(u64, u64, String, String)>> = HashMap::new();
    let mut leaders: HashMap<i32, usize> = HashMap::new();
    for p in procs {
        let mut tids = p.tids.clone();
        if tids.is_empty() {
            tids.push(p.pid);
        }
        for &tid in &tids {
            let mut f = thread_fields(p.pid, tid, p.sigmask.get(&tid).copied());
            if tid == p.pid && !p.zombie {
                vmas.insert(p.pid, process_fields(p.pid, &pids, &mut f));
                if let Some(a) = attrs.get(&p.pid) {
                    attr_fields(a, &mut f);
                }
                if let Some(l) = locks.get(&p.pid) {
                    f.insert("locks".into(), l.clone());
                }
            }
            if tid == p.pid {
                leaders.insert(p.pid, view.tasks.len());
            }
            let mut t = TaskView::new();
            t.pid = p.pid;
            t.tid = tid;
            t.fields = f.into_iter().collect();
            view.tasks.push(t);
        }
    }
    // Copy-on-write sharing: private VMAs at the same range in a process
    // and its parent.
    view.pfn_visible = procs
        .first()
        .and_then(|p| vmas.get(&p.pid).map(|v| pfn_visible(p.pid, v)))
        .unwrap_or(false);
    if view.pfn_visible {
        for p in procs.iter().filter(|p| !p.zombie) {
            let (Some(mine), Some(theirs)) = (vmas.get(&p.pid), vmas.get(&p.ppid)) else {
                continue;
            };
            let Some(&li) = leaders.get(&p.pid) else {
                continue;
            };
            let (mut shared, mut note) = (0u64, String::new());
            let rseq: Vec<u64> = {
                let spec = |pid: i32| procs.iter().filter(move |q| q.pid == pid);
                let tids: Vec<i32> = spec(p.pid)
                    .chain(spec(p.ppid))
                    .flat_map(|q| q.tids.iter().copied())
                    .collect();
                rseq_pages(&tids)
            };
            debug!(
                "oracle: pid {}: rseq pages not counted for sharing: {rseq:x?}",
                p.pid
            );
            for (s, e, _, _) in mine.iter().filter(|v| v.2.ends_with('p')) {
                for (ts, te, _, _) in theirs.iter().filter(|v| v.2.ends_with('p')) {
                    let (a, b) = ((*s).max(*ts), (*e).min(*te));
                    // [vsyscall] has no pagemap entries.
                    if a >= b || a >= 0xffff_8000_0000_0000 {
                        continue;
                    }
                    if (b - a) / 4096 > MAX_COW_PAGES {
                        note = format!(" (not counted: {a:x}-{b:x} too large)");
                        continue;
                    }
                    match same_frames(p.pid, p.ppid, a, b, &rseq) {
                        Some(n) => shared += n,
                        None => note = format!(" (not counted: {a:x}-{b:x} unreadable)"),
                    }
                }
            }
            view.tasks[li].fields.insert(
                "cow.pages".into(),
                format!("{shared} anonymous pages shared with the parent{note}"),
            );
        }
    }
    view.tasks.sort_by_key(|t| (t.pid, t.tid));
    view
}

/// The threads of a live process now (for callers that only know pids).
pub fn tids_of(pid: i32) -> Vec<i32> {
    let mut v = numeric_dir(&format!("/proc/{pid}/task"));
    if let Some(i) = v.iter().position(|&t| t == pid) {
        v.remove(i);
        v.insert(0, pid);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_become_fields() {
        let mut f = Fields::new();
        parse_colon_lines(
            "Name:\tcat\nSigBlk:\t0000000000010000\nGroups:\t1 2  3 \nbad line\n",
            "status",
            &mut f,
        );
        assert_eq!(f["status.Name"], "cat");
        assert_eq!(f["status.SigBlk"], "0000000000010000");
        assert_eq!(f["status.Groups"], "1 2 3");
        assert_eq!(f.len(), 3);
    }

    #[test]
    fn stat_fields_by_position_with_odd_comm() {
        let mut line = String::from("42 (a) b)) S 1 42 42 0 -1 4194560");
        for i in 10..=52 {
            line.push_str(&format!(" {i}"));
        }
        let mut f = Fields::new();
        parse_stat_line(&line, &mut f);
        assert_eq!(f["stat.comm"], "a) b)");
        assert_eq!(f["stat.state"], "S");
        assert_eq!(f["stat.ppid"], "1");
        assert_eq!(f["stat.flags"], "0x400100");
        // Field 19 of stat(5) is nice; 41 is policy; 52 is exit_code.
        assert_eq!(f["stat.nice"], "19");
        assert_eq!(f["stat.policy"], "41");
        assert_eq!(f["stat.exit_code"], "52");
        assert!(!f.contains_key("stat.utime"));
        let mut g = Fields::new();
        parse_stat_line("garbage", &mut g);
        assert_eq!(g["stat"], "<malformed>");
    }

    #[test]
    fn smaps_per_vma() {
        let text = "7f00-7f10 rw-p 00000000 00:00 0 \nRss:  4 kB\nLocked:  0 kB\n\
                    VmFlags: rd wr mr mw me ac \n\
                    7f10-7f20 r--p 00001000 08:01 1234   /usr/lib/x y.so\nTHPeligible: 0\n";
        let mut f = Fields::new();
        let v = parse_smaps_text(text, &mut f);
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].3, "/usr/lib/x y.so");
        assert_eq!(f["vma.7f00-7f10.VmFlags"], "rd wr mr mw me ac");
        assert_eq!(f["vma.7f00-7f10.Locked"], "0 kB");
        assert_eq!(f["vma.7f10-7f20.offset"], "00001000");
        assert_eq!(f["vma.7f10-7f20.THPeligible"], "0");
        assert!(!f.keys().any(|k| k.ends_with("Rss")));
    }

    #[test]
    fn sched_state_not_counters() {
        let text = "cat (42, #threads: 1)\n\
                    -------------------------------------------------------------------\n\
                    se.exec_start                                :        123456.789012\n\
                    nr_switches                                  :                   12\n\
                    policy                                       :                    2\n\
                    prio                                         :                   89\n\
                    clock-delta                                  :                   30\n";
        let mut f = Fields::new();
        parse_sched(text, &mut f);
        assert_eq!(f["sched.policy"], "2");
        assert_eq!(f["sched.prio"], "89");
        assert_eq!(f.len(), 2, "{f:?}");
    }

    #[test]
    fn limits_columns() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max open files            1024                 4096                 files     \n";
        let mut f = Fields::new();
        parse_limits(text, &mut f);
        assert_eq!(f["limits.Max open files"], "1024 4096 files");
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn locks_normalised_per_pid() {
        let text = "1: POSIX  ADVISORY  WRITE 100 00:1a:5678 0 EOF\n\
                    2: FLOCK  ADVISORY  WRITE 200 00:1a:9 0 EOF\n\
                    2: -> FLOCK  ADVISORY  WRITE 100 00:1a:9 0 EOF\n\
                    3: OFDLCK ADVISORY  READ  -1 00:1a:1 0 EOF\n";
        let m = parse_locks(text, &[100]);
        assert_eq!(
            m[&100],
            "-> FLOCK ADVISORY WRITE PID 00:1a:9 0 EOF; POSIX ADVISORY WRITE PID 00:1a:5678 0 EOF"
        );
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn peercred_values() {
        use crate::sys::peercred::Ucred;
        let c = Ucred {
            pid: 42,
            uid: 1000,
            gid: 100,
        };
        assert_eq!(
            show_peercred(c, &[4, 5], false),
            "pid 42 uid 1000 gid 100 groups [4, 5]"
        );
        assert!(show_peercred(c, &[], true).starts_with("a live process outside the tree uid"));
        let none = Ucred {
            pid: 0,
            uid: u32::MAX,
            gid: u32::MAX,
        };
        assert_eq!(show_peercred(none, &[], false), "none");
    }

    #[test]
    fn fdinfo_fields() {
        let text = "pos:\t5\nflags:\t02004002\nmnt_id:\t15\nino:\t77\n\
                    lock:\t1: POSIX  ADVISORY  WRITE 321 00:1a:77 0 EOF\n\
                    tfd:        5 events:       19 data: 5\n\
                    tfd:        6 events:       1 data: 6\n\
                    inotify wd:1 ino:2a sdev:800001 mask:fff\n";
        let mut f = Fields::new();
        parse_fdinfo_text(text, 3, &mut f);
        assert_eq!(f["fd.3.flags"], "02004002");
        assert_eq!(f["fd.3.lock"], "POSIX ADVISORY WRITE PID 00:1a:77 0 EOF");
        assert_eq!(f["fd.3.tfd"], "5 events: 19 data: 5 | 6 events: 1 data: 6");
        assert_eq!(f["fd.3.inotify"], "wd:1 ino:2a sdev:800001 mask:fff");
    }

    #[test]
    fn same_frames_ignores_repeated_frames() {
        // Address 0: same frame; 1: the zero page (frame 9) in both at two
        // addresses; 3: different frames; 4: absent.
        let a = [5, 9, 9, 7, 0];
        let b = [5, 9, 9, 8, 0];
        assert_eq!(count_same_frames(&a, &b), 1);
    }
}
