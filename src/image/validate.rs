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

use super::proto::{file_desc, FdTable, FileDesc, Files, Inventory};
use super::FORMAT_VERSION;
use crate::error::{Error, Result};

// The checks of a kind live next to it; these are their entry points.
pub use crate::kinds::memory::validate::{mm, pagemap, pagemap_in_mm, pagemap_vmas};
pub use crate::kinds::task::validate::{core, core_refs, pstree};

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
/// Top of the user address space on x86-64 (47 bits, 4-level paging).
pub const TASK_SIZE: u64 = 0x7fff_ffff_f000;
pub(crate) const PAGE: u64 = crate::sys::PAGE_SIZE;
/// Largest queue of bytes kept for one socket, pipe or terminal.
pub(crate) const QUEUE_MAX: usize = 1 << 30;
/// Open flags a description can carry (`f_flags` never keeps O_CREAT,
/// O_EXCL, O_NOCTTY or O_TRUNC).
const FORBIDDEN_OPEN_FLAGS: u32 =
    (libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_TRUNC) as u32;

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

/// A description id that must name a description of one of the given
/// kinds (`what` describes them for the message).
pub(crate) fn check_desc_ref(
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
    crate::kinds::locks::validate(f, path)?;
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
