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
/// Largest pipe buffer the kernel allows (pipe-max-size cap).
const PIPE_MAX: u64 = 1 << 31;
/// Largest queue of bytes kept for one socket, pipe or terminal.
const QUEUE_MAX: usize = 1 << 30;
/// Open flags a description can carry (`f_flags` never keeps O_CREAT,
/// O_EXCL, O_NOCTTY or O_TRUNC).
const FORBIDDEN_OPEN_FLAGS: u32 =
    (libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_TRUNC) as u32;

/// File status flags a memfd description can carry: the access mode and
/// what `fcntl(F_SETFL)` or the kernel set (`O_APPEND`, `O_NONBLOCK`,
/// `O_DSYNC`, `O_SYNC`, `O_DIRECT`, `O_NOATIME`, `FASYNC`,
/// `O_LARGEFILE`); anything else would make restore's reopen fail or
/// open something else (`O_DIRECTORY`, `O_PATH`, `O_TMPFILE` ...).
const MEMFD_FLAGS: u32 = (libc::O_ACCMODE
    | libc::O_APPEND
    | libc::O_NONBLOCK
    | libc::O_DSYNC
    | libc::O_SYNC
    | libc::O_DIRECT
    | libc::O_NOATIME
    | libc::O_ASYNC
    | libc::O_CLOEXEC) as u32
    | KERNEL_O_LARGEFILE;
/// The kernel's `O_LARGEFILE` on x86-64, set on every file it opens for
/// a 64-bit process (the libc constant is 0 there).
const KERNEL_O_LARGEFILE: u32 = 0o100000;
/// TCP states (tcp_states.h) cairn dumps and restores.
const TCP_ESTABLISHED: u32 = 1;
const TCP_CLOSE: u32 = 7;
const TCP_LISTEN: u32 = 10;

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
fn check_path(
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

fn check_open_flags(path: &Path, obj: impl Display, flags: u32) -> Result<()> {
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

fn check_bytes(path: &Path, obj: impl Display, field: &str, n: usize, max: usize) -> Result<()> {
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
        use file_desc::Kind as K;
        match k {
            K::Reg(r) => {
                check_path(path, &obj, "path", &r.path, false)?;
                check_open_flags(path, &obj, r.flags)?;
                if r.pos > i64::MAX as u64 {
                    return Err(bad(path, &obj, "pos", r.pos));
                }
            }
            K::Fifo(r) => {
                check_path(path, &obj, "path", &r.path, false)?;
                check_open_flags(path, &obj, r.flags)?;
            }
            K::FsPath(p) => check_path(path, &obj, "path", &p.path, false)?,
            K::Pipe(p) => check_open_flags(path, &obj, p.flags)?,
            K::Eventfd(e) => {
                if e.count == u64::MAX {
                    return Err(bad(path, &obj, "count", "u64::MAX is not an eventfd count"));
                }
            }
            K::Signalfd(_) | K::Timerfd(_) => {}
            K::Epoll(e) => {
                count(path, &obj, "targets", e.targets.len(), MAX_ITEMS)?;
                for t in &e.targets {
                    if t.fd >= FD_MAX {
                        return Err(bad(path, &obj, "targets.fd", t.fd));
                    }
                }
            }
            K::Memfd(m) => {
                check_name(path, &obj, "name", &m.name, 249)?;
                check_bytes(path, &obj, "contents", m.contents.len(), 1 << 30)?;
                if m.contents.len() as u64 > m.size
                    || m.size > i64::MAX as u64
                    || m.pos > i64::MAX as u64
                {
                    return Err(bad(
                        path,
                        &obj,
                        "size",
                        format!("{} with {} bytes of contents", m.size, m.contents.len()),
                    ));
                }
                if m.seals & !0x3f != 0 {
                    return Err(bad(path, &obj, "seals", format!("{:#x}", m.seals)));
                }
                if m.flags & !MEMFD_FLAGS != 0 || m.flags & libc::O_ACCMODE as u32 == 3 {
                    return Err(bad(
                        path,
                        &obj,
                        "flags",
                        format!(
                            "{:#o}: not file status flags of a memfd (bits {:#o} are not)",
                            m.flags,
                            m.flags & !MEMFD_FLAGS
                        ),
                    ));
                }
            }
            K::Inotify(n) => {
                count(path, &obj, "watches", n.watches.len(), MAX_ITEMS)?;
                for w in &n.watches {
                    check_path(path, &obj, "watches.path", &w.path, false)?;
                    if w.wd <= 0 {
                        return Err(bad(path, &obj, "watches.wd", w.wd));
                    }
                }
            }
            K::Unix(u) => {
                check_bytes(path, &obj, "name", u.name.len(), 108)?;
                check_bytes(path, &obj, "peer_name", u.peer_name.len(), 108)?;
                if !u.name_dir.is_empty() {
                    check_path(path, &obj, "name_dir", &u.name_dir, false)?;
                }
                if ![1, 2, 5].contains(&u.type_) {
                    return Err(bad(
                        path,
                        &obj,
                        "type",
                        format!("{}: not stream, dgram or seqpacket", u.type_),
                    ));
                }
                if u.shutdown > 3 {
                    return Err(bad(path, &obj, "shutdown", u.shutdown));
                }
                if ![TCP_ESTABLISHED, TCP_CLOSE, TCP_LISTEN].contains(&u.state) {
                    return Err(bad(
                        path,
                        &obj,
                        "state",
                        format!("{}: not established, close or listen", u.state),
                    ));
                }
                if u.state == TCP_LISTEN && u.type_ == libc::SOCK_DGRAM as u32 {
                    return Err(bad(path, &obj, "state", "a datagram socket cannot listen"));
                }
                if u.state != TCP_LISTEN && !u.icons.is_empty() {
                    return Err(bad(
                        path,
                        &obj,
                        "icons",
                        "connections waiting to be accepted, but not a listener",
                    ));
                }
                count(path, &obj, "queue", u.queue.len(), MAX_ITEMS)?;
                let total: usize = u.queue.iter().map(|p| p.data.len()).sum();
                check_bytes(path, &obj, "queue", total, QUEUE_MAX)?;
                for p in &u.queue {
                    check_bytes(path, &obj, "queue.sender", p.sender.len(), 108)?;
                }
                count(path, &obj, "icons", u.icons.len(), 1 << 16)?;
                for c in &u.icons {
                    count(path, &obj, "icons.queue", c.queue.len(), MAX_ITEMS)?;
                }
                if let Some(x) = u.external.as_ref() {
                    check_bytes(path, &obj, "external.name", x.name.len(), 108)?;
                }
            }
            K::Tty(t) => {
                if !t.path.is_empty() {
                    check_path(path, &obj, "path", &t.path, false)?;
                }
                check_open_flags(path, &obj, t.flags)?;
                if t.kind.enum_value().is_err() {
                    return Err(bad(path, &obj, "kind", "unknown terminal kind"));
                }
            }
            K::Inet(s) => {
                if s.family != libc::AF_INET as u32 && s.family != libc::AF_INET6 as u32 {
                    return Err(bad(
                        path,
                        &obj,
                        "family",
                        format!("{}: not AF_INET or AF_INET6", s.family),
                    ));
                }
                for (f, a) in [("local", s.local.as_ref()), ("peer", s.peer.as_ref())] {
                    if let Some(a) = a {
                        if a.port > 65535 {
                            return Err(bad(path, &obj, &format!("{f}.port"), a.port));
                        }
                        if !a.ip.is_empty() && a.ip.parse::<std::net::IpAddr>().is_err() {
                            return Err(bad(
                                path,
                                &obj,
                                &format!("{f}.ip"),
                                format!("{:?}: not an address", short(&a.ip)),
                            ));
                        }
                    }
                }
                check_name(path, &obj, "bind_dev", &s.bind_dev, 15)?;
                inet_kind(s, path, &obj)?;
                if let Some(t) = s.tcp.as_ref() {
                    check_bytes(path, &obj, "tcp.inq", t.inq.len(), QUEUE_MAX)?;
                    check_bytes(path, &obj, "tcp.outq", t.outq.len(), QUEUE_MAX)?;
                    if t.unsent_len as usize > t.outq.len() {
                        return Err(bad(
                            path,
                            &obj,
                            "tcp.unsent_len",
                            format!("{} of {} bytes queued", t.unsent_len, t.outq.len()),
                        ));
                    }
                    if t.snd_wscale > 14 || t.rcv_wscale > 14 {
                        return Err(bad(path, &obj, "tcp.snd_wscale", "window scale above 14"));
                    }
                }
                count(path, &obj, "queue", s.queue.len(), MAX_ITEMS)?;
                for q in &s.queue {
                    check_bytes(path, &obj, "queue.data", q.data.len(), 65535)?;
                }
            }
        }
    }
    unix_graph(f, path)?;
    count(path, "files", "pipes", f.pipes.len(), MAX_ITEMS)?;
    let mut inos = HashSet::new();
    for p in &f.pipes {
        let obj = format!("pipe buffer of inode {}", p.pipe_ino);
        if !inos.insert(p.pipe_ino) {
            return Err(bad(path, &obj, "pipe_ino", "repeated"));
        }
        let holds = if p.capacity > 0 {
            p.capacity as u64
        } else {
            PAGE * 16
        };
        if p.capacity as u64 > PIPE_MAX || p.data.len() as u64 > holds {
            return Err(bad(
                path,
                &obj,
                "data",
                format!(
                    "{} bytes in a pipe of capacity {}",
                    p.data.len(),
                    p.capacity
                ),
            ));
        }
    }
    count(path, "files", "ptys", f.ptys.len(), 1 << 16)?;
    for p in &f.ptys {
        let obj = format!("pty pair {}", p.index);
        for (n, t) in [
            ("slave_termios", p.slave_termios.as_ref()),
            ("master_termios", p.master_termios.as_ref()),
        ] {
            if let Some(t) = t {
                check_bytes(path, &obj, &format!("{n}.cc"), t.cc.len(), 32)?;
            }
        }
        check_bytes(path, &obj, "input", p.input.len(), QUEUE_MAX)?;
        check_bytes(path, &obj, "output", p.output.len(), QUEUE_MAX)?;
        check_pid(path, &obj, "ctty_sid", p.ctty_sid, true)?;
        check_pid(path, &obj, "fg_pgrp", p.fg_pgrp, true)?;
    }
    if let Some(s) = f.shell_tty.as_ref() {
        if !s.path.is_empty() {
            check_path(path, "shell terminal", "path", &s.path, false)?;
        }
        if let Some(t) = s.termios.as_ref() {
            check_bytes(path, "shell terminal", "termios.cc", t.cc.len(), 32)?;
        }
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
    if let Some(l) = f.net_lock.as_ref() {
        if !l.table.is_empty()
            && !l
                .table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(bad(
                path,
                "network lock",
                "table",
                format!("{:?}: not a table name", short(&l.table)),
            ));
        }
        count(path, "network lock", "conns", l.conns.len(), MAX_ITEMS)?;
    }
    Ok(())
}

/// What restore can create of an IP socket: TCP over SOCK_STREAM or UDP
/// over SOCK_DGRAM, a TCP socket listening, closed, or established (with
/// its TCP state and both addresses), and addresses of the socket's
/// family.
fn inet_kind(s: &super::proto::InetSk, path: &Path, obj: &str) -> Result<()> {
    let tcp = s.type_ == libc::SOCK_STREAM as u32 && s.protocol == libc::IPPROTO_TCP as u32;
    let udp = s.type_ == libc::SOCK_DGRAM as u32 && s.protocol == libc::IPPROTO_UDP as u32;
    if !tcp && !udp {
        return Err(bad(
            path,
            obj,
            "type",
            format!(
                "type {} with protocol {}: only TCP over SOCK_STREAM and UDP over SOCK_DGRAM",
                s.type_, s.protocol
            ),
        ));
    }
    if tcp {
        if ![TCP_ESTABLISHED, TCP_CLOSE, TCP_LISTEN].contains(&s.state) {
            return Err(bad(
                path,
                obj,
                "state",
                format!(
                    "{}: a TCP socket is restored established, closed or listening",
                    s.state
                ),
            ));
        }
        if s.state == TCP_ESTABLISHED && (s.tcp.is_none() || s.local.is_none() || s.peer.is_none())
        {
            return Err(bad(
                path,
                obj,
                "tcp",
                "an established connection needs its TCP state and both addresses",
            ));
        }
    } else {
        if ![TCP_ESTABLISHED, TCP_CLOSE].contains(&s.state) {
            return Err(bad(
                path,
                obj,
                "state",
                format!("{}: a UDP socket is connected (1) or not (7)", s.state),
            ));
        }
        if s.tcp.is_some() {
            return Err(bad(path, obj, "tcp", "TCP state on a UDP socket"));
        }
    }
    if !udp && !s.queue.is_empty() {
        return Err(bad(path, obj, "queue", "datagrams queued on a TCP socket"));
    }
    let v4 = s.family == libc::AF_INET as u32;
    for (f, a) in [("local.ip", s.local.as_ref()), ("peer.ip", s.peer.as_ref())] {
        if let Some(ip) = a.and_then(|a| a.ip.parse::<std::net::IpAddr>().ok()) {
            if v4 && ip.is_ipv6() {
                return Err(bad(
                    path,
                    obj,
                    f,
                    format!("{ip}: an IPv6 address on an AF_INET socket"),
                ));
            }
        }
    }
    Ok(())
}

/// The unix sockets together: one description per socket inode, and a
/// peer that is in the images (the other end, or the listener of a
/// pending connection) of the same type.
fn unix_graph(f: &Files, path: &Path) -> Result<()> {
    let mut by_ino: HashMap<u32, (u32, &super::proto::UnixSocket)> = HashMap::new();
    for d in &f.descs {
        if let Some(file_desc::Kind::Unix(u)) = &d.kind {
            if let Some((other, _)) = by_ino.insert(u.ino, (d.id, u)) {
                return Err(bad(
                    path,
                    format!("description {}", d.id),
                    "ino",
                    format!(
                        "socket:[{}] is also description {other} (one description per socket)",
                        u.ino
                    ),
                ));
            }
        }
    }
    for (id, u) in by_ino.values() {
        if u.peer == 0 {
            continue;
        }
        if let Some((pdesc, p)) = by_ino.get(&u.peer) {
            if p.type_ != u.type_ {
                return Err(bad(
                    path,
                    format!("description {id}"),
                    "type",
                    format!(
                        "{}, but its peer socket:[{}] (description {pdesc}) is of type {}",
                        u.type_, p.ino, p.type_
                    ),
                ));
            }
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
