//! Validation of decoded images: every address, length, count, number and
//! reference an image holds is checked here before a restore uses it
//! (run by [`crate::restore::Images::load`], and so by `cairn show
//! --verify`). The decoders before it only guarantee well-formed
//! messages of bounded size; what a message says is checked here.
//!
//! One function per kind, pure (no system calls), each error an
//! [`Error::Image`] naming the file, the object and the field:
//! `image DIR/mm-42.img: vma 3 (0x7f00-0x7f10): end 0x7f10: not
//! page-aligned`. The rules are listed in docs/IMAGES.md
//! ("Validation").

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::path::Path;

use super::proto::{
    file_desc, FdTable, FileDesc, Files, Inventory, MmEntry, Pagemap, Pstree, RunKind, TaskCore,
    TaskState, ThreadCore, VmaKind,
};
use super::FORMAT_VERSION;
use crate::error::{Error, Result};

/// Largest pid (and tid) Linux hands out (`PID_MAX_LIMIT` on 64-bit).
pub const PID_MAX: u32 = 4 << 20;
/// Most processes one checkpoint may hold.
pub const MAX_PROCS: usize = 1 << 16;
/// Most threads of one process.
pub const MAX_THREADS: usize = 1 << 16;
/// Most entries of any other list (VMAs, fds, descriptions, runs,
/// signals, packets, watches ...).
pub const MAX_ITEMS: usize = 1 << 20;
/// fd numbers are below the kernel's largest `fs.nr_open`.
pub const FD_MAX: u32 = 1 << 30;
/// Longest path (`PATH_MAX`, with its NUL).
pub const PATH_MAX: usize = 4096;
/// Largest XSAVE area (x86 with AMX tiles is ~11 KiB).
pub const MAX_XSAVE: usize = 1 << 16;
/// Smallest XSAVE area: legacy region plus header.
pub const MIN_XSAVE: usize = 576;
/// Top of the user address space on x86-64 (47 bits, 4-level paging).
pub const TASK_SIZE: u64 = 0x7fff_ffff_f000;
pub(crate) const PAGE: u64 = crate::sys::PAGE_SIZE;
/// Most words of an auxiliary vector (the kernel's `AT_VECTOR_SIZE` is
/// about 50 and grows with new entries; it checks the exact size itself).
const AUXV_WORDS: usize = 128;
/// Linux signals are 1..=64.
const SIG_MAX: u32 = 64;
/// `RLIM_NLIMITS`.
const RLIM_NLIMITS: u32 = 16;
/// Largest queue of bytes kept for one socket, pipe or terminal.
pub(crate) const QUEUE_MAX: usize = 1 << 30;
/// Open flags a description can carry (`f_flags` never keeps O_CREAT,
/// O_EXCL, O_NOCTTY or O_TRUNC).
const FORBIDDEN_OPEN_FLAGS: u32 =
    (libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_TRUNC) as u32;

/// The VMAs the kernel places itself (restore maps them with
/// `ARCH_MAP_VDSO_64`): no page data can be written into them.
const KERNEL_VMAS: [VmaKind; 4] = [
    VmaKind::VMA_VDSO,
    VmaKind::VMA_VVAR,
    VmaKind::VMA_VVAR_VCLOCK,
    VmaKind::VMA_VSYSCALL,
];
/// TCP states (tcp_states.h) cairn dumps and restores.
pub(crate) const TCP_ESTABLISHED: u32 = 1;
pub(crate) const TCP_CLOSE: u32 = 7;
pub(crate) const TCP_LISTEN: u32 = 10;

/// The fd numbers a restore can place: it moves every description above
/// the largest fd of the table first (`F_DUPFD`), in a vessel that has
/// cairn's `RLIMIT_NOFILE`, so the table must fit below that soft limit
/// (and below the machine's `fs.nr_open`). Read once per process.
pub fn restore_fd_limit() -> (u64, &'static str) {
    static LIMIT: std::sync::OnceLock<(u64, &'static str)> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(1 << 20);
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        if soft < nr_open {
            (
                soft,
                "cairn's RLIMIT_NOFILE, which the restored processes start with",
            )
        } else {
            (nr_open, "this machine's fs.nr_open")
        }
    })
}

/// An error about `obj`'s `field` in the image at `path`.
pub(crate) fn bad(path: &Path, obj: impl Display, field: &str, why: impl Display) -> Error {
    if field.is_empty() {
        Error::image(path, format!("{obj}: {why}"))
    } else {
        Error::image(path, format!("{obj}: {field}: {why}"))
    }
}

pub(crate) fn count(
    path: &Path,
    obj: impl Display,
    field: &str,
    n: usize,
    max: usize,
) -> Result<()> {
    if n > max {
        return Err(bad(path, obj, field, format!("{n} entries, at most {max}")));
    }
    Ok(())
}

/// A path an image records: not empty, absolute unless `relative_ok`,
/// no NUL, shorter than `PATH_MAX`.
pub(crate) fn check_path(
    path: &Path,
    obj: impl Display,
    field: &str,
    p: &str,
    relative_ok: bool,
) -> Result<()> {
    let why = if p.is_empty() {
        "empty"
    } else if p.contains('\0') {
        "holds a NUL byte"
    } else if p.len() >= PATH_MAX {
        "longer than PATH_MAX"
    } else if !relative_ok && !p.starts_with('/') {
        "not absolute"
    } else {
        return Ok(());
    };
    Err(bad(path, obj, field, format!("{:?}: {why}", short(p))))
}

/// A name (comm, memfd name ...): no NUL, at most `max` bytes.
pub(crate) fn check_name(
    path: &Path,
    obj: impl Display,
    field: &str,
    s: &str,
    max: usize,
) -> Result<()> {
    if s.contains('\0') || s.len() > max {
        return Err(bad(
            path,
            obj,
            field,
            format!(
                "{:?}: longer than {max} bytes or holds a NUL byte",
                short(s)
            ),
        ));
    }
    Ok(())
}

pub(crate) fn short(s: &str) -> String {
    if s.len() <= 64 {
        return s.to_string();
    }
    let mut end = 64;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

pub(crate) fn check_pid(
    path: &Path,
    obj: impl Display,
    field: &str,
    pid: u32,
    zero_ok: bool,
) -> Result<()> {
    if (pid == 0 && !zero_ok) || pid > PID_MAX {
        return Err(bad(
            path,
            obj,
            field,
            format!("{pid}: not a pid (1..={PID_MAX})"),
        ));
    }
    Ok(())
}

fn check_signo(path: &Path, obj: impl Display, field: &str, sig: u32, zero_ok: bool) -> Result<()> {
    if (sig == 0 && !zero_ok) || sig > SIG_MAX {
        return Err(bad(
            path,
            obj,
            field,
            format!("{sig}: not a signal (1..={SIG_MAX})"),
        ));
    }
    Ok(())
}

pub(crate) fn check_open_flags(path: &Path, obj: impl Display, flags: u32) -> Result<()> {
    if flags & FORBIDDEN_OPEN_FLAGS != 0 {
        return Err(bad(
            path,
            obj,
            "flags",
            format!("{flags:#o}: O_CREAT, O_EXCL, O_NOCTTY or O_TRUNC are never file status flags"),
        ));
    }
    Ok(())
}

/// `inventory.img`.
pub fn inventory(inv: &Inventory, path: &Path) -> Result<()> {
    if inv.format_version != FORMAT_VERSION {
        return Err(bad(
            path,
            "inventory",
            "format_version",
            format!("{}, this cairn reads {FORMAT_VERSION}", inv.format_version),
        ));
    }
    if inv.page_size != 0 && inv.page_size as u64 != PAGE {
        return Err(bad(
            path,
            "inventory",
            "page_size",
            format!("{}, this machine's is {PAGE}", inv.page_size),
        ));
    }
    if !inv.pre_dump {
        check_pid(path, "inventory", "root_pid", inv.root_pid, false)?;
    }
    count(path, "inventory", "images", inv.images.len(), MAX_ITEMS)?;
    if !inv.parent_dir.is_empty() {
        check_path(path, "inventory", "parent_dir", &inv.parent_dir, true)?;
    }
    for (f, id) in [
        ("layer_id", &inv.layer_id),
        ("parent_layer_id", &inv.parent_layer_id),
    ] {
        if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(
                path,
                "inventory",
                f,
                format!("{:?}: not a layer id", short(id)),
            ));
        }
    }
    Ok(())
}

/// `pstree.img`, against the inventory's root pid.
pub fn pstree(t: &Pstree, root_pid: u32, path: &Path) -> Result<()> {
    if t.entries.is_empty() {
        return Err(Error::image(path, "no processes"));
    }
    count(path, "pstree", "entries", t.entries.len(), MAX_PROCS)?;
    let mut pids = HashSet::new();
    let mut tids = HashSet::new();
    for (i, e) in t.entries.iter().enumerate() {
        let obj = format!("process {i} (pid {})", e.pid);
        check_pid(path, &obj, "pid", e.pid, false)?;
        if !pids.insert(e.pid) {
            return Err(bad(path, &obj, "pid", "repeated"));
        }
        if i == 0 {
            if root_pid != 0 && e.pid != root_pid {
                return Err(bad(
                    path,
                    &obj,
                    "pid",
                    format!("the inventory's root is pid {root_pid}"),
                ));
            }
            check_pid(path, &obj, "ppid", e.ppid, true)?;
        } else if !t.entries[..i].iter().any(|p| p.pid == e.ppid) {
            return Err(bad(
                path,
                &obj,
                "ppid",
                format!("parent {} is not earlier in the tree", e.ppid),
            ));
        }
        check_pid(path, &obj, "pgid", e.pgid, true)?;
        check_pid(path, &obj, "sid", e.sid, true)?;
        count(path, &obj, "threads", e.threads.len(), MAX_THREADS)?;
        if let Some(&first) = e.threads.first() {
            if first != e.pid {
                return Err(bad(path, &obj, "threads", "must start with the leader"));
            }
        }
        for &tid in &e.threads {
            check_pid(path, &obj, "threads", tid, false)?;
            if !tids.insert(tid) {
                return Err(bad(path, &obj, "threads", format!("tid {tid} repeated")));
            }
        }
    }
    Ok(())
}

fn thread(th: &ThreadCore, i: usize, path: &Path) -> Result<()> {
    let obj = format!("thread {i} (tid {})", th.tid);
    check_pid(path, &obj, "tid", th.tid, false)?;
    let Some(r) = th.regs.as_ref() else {
        return Err(bad(path, &obj, "regs", "missing"));
    };
    // User addresses, or the vsyscall page.
    let user =
        |a: u64| a < TASK_SIZE || (0xffff_ffff_ff60_0000..0xffff_ffff_ff60_1000).contains(&a);
    if !user(r.rip) {
        return Err(bad(
            path,
            &obj,
            "regs.rip",
            format!("{:#x}: not a user address", r.rip),
        ));
    }
    for (f, v) in [("regs.fs_base", r.fs_base), ("regs.gs_base", r.gs_base)] {
        if v >= TASK_SIZE {
            return Err(bad(path, &obj, f, format!("{v:#x}: not a user address")));
        }
    }
    if !th.xsave.is_empty() && !(MIN_XSAVE..=MAX_XSAVE).contains(&th.xsave.len()) {
        return Err(bad(
            path,
            &obj,
            "xsave",
            format!(
                "{} bytes, an XSAVE area is {MIN_XSAVE}..={MAX_XSAVE}",
                th.xsave.len()
            ),
        ));
    }
    count(path, &obj, "pending", th.pending.len(), MAX_ITEMS)?;
    for p in &th.pending {
        check_signo(path, &obj, "pending.signo", p.signo, false)?;
        if p.siginfo.len() != 128 {
            return Err(bad(
                path,
                &obj,
                "pending.siginfo",
                format!("{} bytes, a siginfo is 128", p.siginfo.len()),
            ));
        }
    }
    if let Some(r) = th.rseq.as_ref() {
        if r.addr != 0 && (r.addr >= TASK_SIZE || r.len < 32 || r.len > 4096) {
            return Err(bad(
                path,
                &obj,
                "rseq",
                format!("{:#x} ({} bytes): not an rseq area", r.addr, r.len),
            ));
        }
    }
    if let Some(s) = th.altstack.as_ref() {
        if s.sp.checked_add(s.size).is_none_or(|e| e > TASK_SIZE) {
            return Err(bad(
                path,
                &obj,
                "altstack",
                format!(
                    "{:#x} + {:#x}: outside the user address space",
                    s.sp, s.size
                ),
            ));
        }
    }
    for (f, v) in [
        ("robust_list", th.robust_list),
        ("clear_child_tid", th.clear_child_tid),
    ] {
        if v >= TASK_SIZE {
            return Err(bad(path, &obj, f, format!("{v:#x}: not a user address")));
        }
    }
    check_name(path, &obj, "comm", &th.comm, 64)?;
    Ok(())
}

/// `core-<pid>.img` of the process `pid` with the threads `pstree` lists.
pub fn core(c: &TaskCore, pid: u32, tids: &[u32], path: &Path) -> Result<()> {
    let obj = format!("pid {pid}");
    if c.pid != pid {
        return Err(bad(
            path,
            &obj,
            "pid",
            format!("holds pid {}, expected {pid}", c.pid),
        ));
    }
    let state = c
        .state
        .enum_value()
        .map_err(|v| bad(path, &obj, "state", format!("unknown state {v}")))?;
    check_name(path, &obj, "comm", &c.comm, 64)?;
    check_signo(path, &obj, "exit_signal", c.exit_signal, true)?;
    if state == TaskState::TASK_ZOMBIE {
        return Ok(());
    }
    if c.threads.is_empty() || c.threads[0].tid != pid {
        return Err(bad(path, &obj, "threads", "must start with the leader"));
    }
    count(path, &obj, "threads", c.threads.len(), MAX_THREADS)?;
    let mut seen = HashSet::new();
    for (i, th) in c.threads.iter().enumerate() {
        thread(th, i, path)?;
        if !seen.insert(th.tid) {
            return Err(bad(
                path,
                &obj,
                "threads",
                format!("tid {} repeated", th.tid),
            ));
        }
    }
    if !tids.is_empty() {
        let mut a: Vec<u32> = c.threads.iter().map(|t| t.tid).collect();
        let mut b = tids.to_vec();
        a.sort_unstable();
        b.sort_unstable();
        if a != b {
            return Err(bad(
                path,
                &obj,
                "threads",
                "differ from those pstree.img lists",
            ));
        }
    }
    if c.umask > 0o777 {
        return Err(bad(path, &obj, "umask", format!("{:#o}", c.umask)));
    }
    check_signo(path, &obj, "pdeath_signal", c.pdeath_signal, true)?;
    count(
        path,
        &obj,
        "sigactions",
        c.sigactions.len(),
        SIG_MAX as usize,
    )?;
    let mut sigs = HashSet::new();
    for s in &c.sigactions {
        check_signo(path, &obj, "sigactions.signo", s.signo, false)?;
        if s.signo == libc::SIGKILL as u32
            || s.signo == libc::SIGSTOP as u32
            || !sigs.insert(s.signo)
        {
            return Err(bad(
                path,
                &obj,
                "sigactions.signo",
                format!("{}: SIGKILL, SIGSTOP or repeated", s.signo),
            ));
        }
        for (f, v) in [
            ("sigactions.handler", s.handler),
            ("sigactions.restorer", s.restorer),
        ] {
            if v >= TASK_SIZE {
                return Err(bad(path, &obj, f, format!("{v:#x}: not a user address")));
            }
        }
    }
    count(
        path,
        &obj,
        "shared_pending",
        c.shared_pending.len(),
        MAX_ITEMS,
    )?;
    for p in &c.shared_pending {
        check_signo(path, &obj, "shared_pending.signo", p.signo, false)?;
        if p.siginfo.len() != 128 {
            return Err(bad(
                path,
                &obj,
                "shared_pending.siginfo",
                format!("{} bytes, a siginfo is 128", p.siginfo.len()),
            ));
        }
    }
    count(
        path,
        &obj,
        "rlimits",
        c.rlimits.len(),
        RLIM_NLIMITS as usize,
    )?;
    let mut res = HashSet::new();
    for r in &c.rlimits {
        if r.resource >= RLIM_NLIMITS || !res.insert(r.resource) {
            return Err(bad(
                path,
                &obj,
                "rlimits.resource",
                format!("{}: unknown or repeated", r.resource),
            ));
        }
        if r.cur > r.max {
            return Err(bad(
                path,
                &obj,
                format!("rlimit {}", r.resource).as_str(),
                format!("soft limit {} above hard limit {}", r.cur, r.max),
            ));
        }
    }
    if let Some(cr) = c.creds.as_ref() {
        count(path, &obj, "creds.groups", cr.groups.len(), 65536)?;
        if cr.securebits > 0xff {
            return Err(bad(
                path,
                &obj,
                "creds.securebits",
                format!("{:#x}", cr.securebits),
            ));
        }
    }
    for t in &c.itimers {
        if t.which > 2 {
            return Err(bad(path, &obj, "itimers.which", t.which));
        }
    }
    count(path, &obj, "posix_timers", c.posix_timers.len(), MAX_ITEMS)?;
    for t in &c.posix_timers {
        if t.id < 0 {
            return Err(bad(path, &obj, "posix_timers.id", t.id));
        }
        if t.signo < 0 || t.signo as u32 > SIG_MAX {
            return Err(bad(path, &obj, "posix_timers.signo", t.signo));
        }
        if t.notify_tid != 0 && !c.threads.iter().any(|th| th.tid as i32 == t.notify_tid) {
            return Err(bad(
                path,
                &obj,
                "posix_timers.notify_tid",
                format!("{}: not a thread of this process", t.notify_tid),
            ));
        }
    }
    Ok(())
}

/// A description id that must name a description of one of the given
/// kinds (`what` describes them for the message).
fn check_desc_ref(
    descs: &HashMap<u32, &FileDesc>,
    id: u32,
    ok: impl Fn(&file_desc::Kind) -> bool,
    path: &Path,
    obj: impl Display,
    field: &str,
    what: &str,
) -> Result<()> {
    match descs.get(&id).and_then(|d| d.kind.as_ref()) {
        Some(k) if ok(k) => Ok(()),
        Some(_) => Err(bad(
            path,
            obj,
            field,
            format!("description {id} is not {what}"),
        )),
        None => Err(bad(
            path,
            obj,
            field,
            format!("no description {id} in files.img"),
        )),
    }
}

/// The references of a core image into files.img and the tree.
pub fn core_refs(
    c: &TaskCore,
    descs: &HashMap<u32, &FileDesc>,
    tree: &Pstree,
    path: &Path,
) -> Result<()> {
    if c.state.enum_value() == Ok(TaskState::TASK_ZOMBIE) {
        return Ok(());
    }
    let obj = format!("pid {}", c.pid);
    let dir = |k: &file_desc::Kind| matches!(k, file_desc::Kind::FsPath(_));
    if c.cwd_id != 0 || c.root_id != 0 {
        check_desc_ref(descs, c.cwd_id, dir, path, &obj, "cwd_id", "a directory")?;
        check_desc_ref(descs, c.root_id, dir, path, &obj, "root_id", "a directory")?;
    }
    for (f, with) in [
        ("files_shared_with", c.files_shared_with),
        ("fs_shared_with", c.fs_shared_with),
    ] {
        if with != 0 && (with == c.pid || !tree.entries.iter().any(|e| e.pid == with)) {
            return Err(bad(
                path,
                &obj,
                f,
                format!("{with}: not another process of the tree"),
            ));
        }
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
        let vsyscall = kind == VmaKind::VMA_VSYSCALL;
        for (f, a) in [("start", v.start), ("end", v.end), ("pgoff", v.pgoff)] {
            if a % PAGE != 0 {
                return Err(bad(path, &vo, f, format!("{a:#x}: not page-aligned")));
            }
        }
        if v.start >= v.end {
            return Err(bad(path, &vo, "end", "not above start"));
        }
        if !vsyscall && v.end > TASK_SIZE {
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
        if matches!(kind, VmaKind::VMA_FILE_PRIVATE | VmaKind::VMA_FILE_SHARED) {
            let reg = |k: &file_desc::Kind| {
                matches!(k, file_desc::Kind::Reg(_) | file_desc::Kind::Memfd(_))
            };
            check_desc_ref(descs, v.file_id, reg, path, &vo, "file_id", "a file")?;
        }
    }
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

pub(crate) fn check_bytes(
    path: &Path,
    obj: impl Display,
    field: &str,
    n: usize,
    max: usize,
) -> Result<()> {
    if n > max {
        return Err(bad(path, obj, field, format!("{n} bytes, at most {max}")));
    }
    Ok(())
}

/// `files.img`: every description, pipe buffer, pty pair and shared
/// memory segment.
pub fn files(f: &Files, path: &Path) -> Result<()> {
    count(path, "files", "descs", f.descs.len(), MAX_ITEMS)?;
    let mut ids = HashSet::new();
    for d in &f.descs {
        let obj = format!("description {}", d.id);
        if !ids.insert(d.id) {
            return Err(bad(path, &obj, "id", "repeated"));
        }
        let Some(k) = d.kind.as_ref() else {
            return Err(bad(path, &obj, "kind", "missing (unknown kind?)"));
        };
        crate::kinds::fd::kind_of(k).validate(k, path, &obj)?;
    }
    // What the kinds keep besides descriptions (pipe buffers, pty pairs,
    // the unix socket graph, the network lock).
    for kind in crate::kinds::fd::KINDS {
        kind.validate_files(f, path)?;
    }
    count(path, "files", "sysv_shm", f.sysv_shm.len(), 1 << 16)?;
    for s in &f.sysv_shm {
        if s.size == 0 || s.size > 1 << 46 || s.mode > 0o7777 {
            return Err(bad(
                path,
                format!("System V segment {}", s.shmid),
                "size",
                format!("{} bytes, mode {:#o}", s.size, s.mode),
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

/// `fdinfo-<pid>.img`: fd numbers below `FD_MAX` (not below the
/// process's `RLIMIT_NOFILE`: a process may lower it under fds it holds),
/// unique, each naming a description.
pub fn fdtable(t: &FdTable, pid: u32, descs: &HashMap<u32, &FileDesc>, path: &Path) -> Result<()> {
    let obj = format!("pid {pid}");
    if t.pid != 0 && t.pid != pid {
        return Err(bad(
            path,
            &obj,
            "pid",
            format!("holds pid {}, expected {pid}", t.pid),
        ));
    }
    count(path, &obj, "fds", t.fds.len(), MAX_ITEMS)?;
    let limit = FD_MAX as u64;
    let mut seen = HashSet::new();
    for fd in &t.fds {
        let fo = format!("fd {}", fd.fd);
        if fd.fd as u64 >= limit {
            return Err(bad(
                path,
                &fo,
                "fd",
                format!("not below {limit}, the kernel's largest fs.nr_open"),
            ));
        }
        if !seen.insert(fd.fd) {
            return Err(bad(path, &fo, "fd", "repeated"));
        }
        if !descs.contains_key(&fd.desc_id) {
            return Err(bad(
                path,
                &fo,
                "desc_id",
                format!("no description {} in files.img", fd.desc_id),
            ));
        }
    }
    // Restore first moves each description to a number above the
    // largest fd (at least 64), then onto its fds: all of that must be
    // below the limit the restored processes have.
    if let Some(max) = t.fds.iter().map(|f| f.fd).max() {
        let groups = t
            .fds
            .iter()
            .map(|f| f.desc_id)
            .collect::<HashSet<_>>()
            .len() as u64;
        let need = (max as u64 + 1).max(64) + groups;
        let (lim, what) = restore_fd_limit();
        if need > lim {
            return Err(bad(
                path,
                format!("fd {max}"),
                "fd",
                format!(
                    "restore needs fd numbers up to {need} for this table, above {lim} ({what})"
                ),
            ));
        }
    }
    Ok(())
}

/// `contents.img` on its own (its chunks and descriptions are checked
/// against the page store and files.img by `kinds::contents::load`).
pub fn contents(c: &super::proto::FileContents, path: &Path) -> Result<()> {
    count(path, "contents", "files", c.files.len(), MAX_ITEMS)?;
    count(path, "contents", "skipped", c.skipped.len(), MAX_ITEMS)?;
    for (i, f) in c.files.iter().enumerate() {
        let obj = format!("file {i}");
        check_path(path, &obj, "path", &f.path, false)?;
        count(path, &obj, "chunks", f.chunks.len(), MAX_ITEMS)?;
        count(path, &obj, "desc_ids", f.desc_ids.len(), MAX_ITEMS)?;
        if f.mode & !0o7777 != 0 && f.mode & libc::S_IFMT != libc::S_IFREG {
            return Err(bad(
                path,
                &obj,
                "mode",
                format!("{:#o}: not a regular file's", f.mode),
            ));
        }
    }
    Ok(())
}

/// Descriptions by id (after [`files`] made sure ids are unique).
pub fn desc_index(f: &Files) -> HashMap<u32, &FileDesc> {
    f.descs.iter().map(|d| (d.id, d)).collect()
}

#[cfg(test)]
mod tests {
    use super::super::proto::{Vma, X86Regs};
    use super::*;

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
        m.vmas.push(v);
        let e = mm(&m, 1, &descs, p).unwrap_err().to_string();
        assert!(e.contains("overlaps"), "{e}");
    }

    #[test]
    fn thread_fields() {
        let p = Path::new("core-5.img");
        let mut c = TaskCore::new();
        c.pid = 5;
        let mut th = ThreadCore::new();
        th.tid = 5;
        th.regs = Some(X86Regs::new()).into();
        c.threads.push(th);
        core(&c, 5, &[5], p).unwrap();
        c.threads[0].xsave = vec![0; 10];
        let e = core(&c, 5, &[5], p).unwrap_err().to_string();
        assert!(e.contains("xsave"), "{e}");
        c.threads[0].xsave.clear();
        c.threads[0].regs.as_mut().unwrap().rip = u64::MAX;
        assert!(core(&c, 5, &[5], p)
            .unwrap_err()
            .to_string()
            .contains("rip"));
        c.threads[0].regs.as_mut().unwrap().rip = 0x1000;
        assert!(core(&c, 5, &[5, 6], p).is_err());
        c.umask = 0o1777;
        assert!(core(&c, 5, &[5], p)
            .unwrap_err()
            .to_string()
            .contains("umask"));
    }
}
