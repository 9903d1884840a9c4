//! The views of `cairn show DIR [VIEW]`: a checkpoint read once
//! ([`Checkpoint::load`]) and shown as a summary, a process list, the
//! open files, the memory maps, the sockets, the layers of its chain or
//! its statistics, as text tables or as JSON (docs/SHOW-JSON.md).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::error::{Error, Result};
use crate::image::proto::{self, file_desc::Kind};
use crate::image::{chain, names, ImageDir, ImageType, HEADER_LEN};
use crate::json::{self, json_string};
use crate::stats::bytes as human;

use super::flags;

/// Pages by run kind: stored, zero, in a parent layer.
#[derive(Debug, Default, Clone, Copy)]
pub struct Pages {
    pub data: u64,
    pub zero: u64,
    pub parent: u64,
}

impl Pages {
    fn add(&mut self, r: &proto::PageRun, n: u64) {
        match r.kind.enum_value() {
            Ok(proto::RunKind::RUN_DATA) => self.data += n,
            Ok(proto::RunKind::RUN_ZERO) => self.zero += n,
            _ => self.parent += n,
        }
    }
    fn json(&self) -> String {
        format!(
            "{{\"data\":{},\"zero\":{},\"parent\":{}}}",
            json::u64(self.data),
            json::u64(self.zero),
            json::u64(self.parent)
        )
    }
}

/// What the views need of one image directory, read by file name.
pub struct Checkpoint {
    pub dir: ImageDir,
    pub inventory: Option<proto::Inventory>,
    pub pstree: proto::Pstree,
    pub cores: BTreeMap<u32, proto::TaskCore>,
    pub mms: BTreeMap<u32, proto::MmEntry>,
    pub fdtables: BTreeMap<u32, proto::FdTable>,
    pub files: proto::Files,
    /// Page runs by owner (`pid:12`, `shmem:77`).
    pub pagemaps: BTreeMap<String, proto::Pagemap>,
    pub chunks: usize,
    pub page_bytes: u64,
    /// (file name, statistics) of stats-dump.img and stats-restore.img.
    pub stats: Vec<(String, proto::Stats)>,
    /// Size of every regular file of the directory, and their number.
    pub disk_bytes: u64,
    pub disk_files: usize,
}

impl Checkpoint {
    /// Reads the images of `dir` (already checked as trusted). A missing
    /// image is an empty one; a bad one is an error naming it.
    pub fn load(dir: ImageDir) -> Result<Checkpoint> {
        let mut c = Checkpoint {
            inventory: None,
            pstree: proto::Pstree::new(),
            cores: BTreeMap::new(),
            mms: BTreeMap::new(),
            fdtables: BTreeMap::new(),
            files: proto::Files::new(),
            pagemaps: BTreeMap::new(),
            chunks: 0,
            page_bytes: 0,
            stats: Vec::new(),
            disk_bytes: 0,
            disk_files: 0,
            dir,
        };
        let d = &c.dir;
        let mut entries = d.entries()?;
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, ft) in entries {
            if ft != Some(rustix::fs::FileType::RegularFile) {
                continue;
            }
            let (_, size) = d.open_file(&name)?;
            c.disk_bytes += size;
            c.disk_files += 1;
            let num = |prefix: &str| -> Option<u32> {
                name.strip_prefix(prefix)?
                    .strip_suffix(".img")?
                    .parse()
                    .ok()
            };
            if name == names::INVENTORY {
                c.inventory = Some(d.read(ImageType::Inventory, &name)?);
            } else if name == names::PSTREE {
                c.pstree = d.read(ImageType::Pstree, &name)?;
            } else if name == names::FILES {
                c.files = d.read(ImageType::Files, &name)?;
            } else if name == names::PAGESTORE {
                let s: proto::PageStore = d.read(ImageType::PageStore, &name)?;
                c.chunks = s.chunks.len();
            } else if name == names::PAGES {
                c.page_bytes = size.saturating_sub(HEADER_LEN as u64);
            } else if names::is_stats(&name) {
                c.stats
                    .push((name.clone(), d.read(ImageType::Stats, &name)?));
            } else if let Some(pid) = num("core-") {
                c.cores.insert(pid, d.read(ImageType::Core, &name)?);
            } else if let Some(pid) = num("mm-") {
                c.mms.insert(pid, d.read(ImageType::Mm, &name)?);
            } else if let Some(pid) = num("fdinfo-") {
                c.fdtables.insert(pid, d.read(ImageType::FdTable, &name)?);
            } else if name.starts_with("pagemap-") && name.ends_with(".img") {
                let pm: proto::Pagemap = d.read(ImageType::Pagemap, &name)?;
                c.pagemaps.insert(pm.owner.clone(), pm);
            }
        }
        if c.inventory.is_none() && c.cores.is_empty() {
            return Err(Error::image(
                c.dir.path(),
                "not a checkpoint: no inventory.img and no core-*.img",
            ));
        }
        Ok(c)
    }

    fn pages_total(&self) -> Pages {
        let mut p = Pages::default();
        for pm in self.pagemaps.values() {
            for r in &pm.runs {
                p.add(r, r.nr_pages);
            }
        }
        p
    }

    /// The pids of the tree, in pstree order, then any core without an
    /// entry.
    fn pids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.pstree.entries.iter().map(|e| e.pid).collect();
        for p in self.cores.keys() {
            if !v.contains(p) {
                v.push(*p);
            }
        }
        v
    }

    fn desc(&self, id: u32) -> Option<&proto::FileDesc> {
        self.files.descs.iter().find(|d| d.id == id)
    }
}

fn state_name(c: Option<&proto::TaskCore>) -> &'static str {
    match c.map(|c| c.state.enum_value()) {
        Some(Ok(proto::TaskState::TASK_ALIVE)) => "alive",
        Some(Ok(proto::TaskState::TASK_STOPPED)) => "stopped",
        Some(Ok(proto::TaskState::TASK_ZOMBIE)) => "zombie",
        _ => "?",
    }
}

// ------------------------------------------------------------ summary

/// A few lines: when, where, what, how big, and which views to ask for.
pub fn summary_text(c: &Checkpoint, chain: &[Layer]) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "checkpoint {}", c.dir.path().display());
    if let Some(inv) = &c.inventory {
        let _ = writeln!(
            o,
            "  taken {} on {} (kernel {}), cairn {}, image format {}",
            flags::date_ms(inv.dump_time_unix_ms),
            inv.hostname,
            inv.kernel_release,
            inv.cairn_version,
            inv.format_version
        );
        let what = if inv.pre_dump {
            "a pre-dump (memory only, not restorable by itself)"
        } else if inv.leave_running {
            "a dump; the tree was left running"
        } else {
            "a dump"
        };
        let _ = writeln!(o, "  {what}, root pid {}", inv.root_pid);
    }
    let threads: usize = c.pstree.entries.iter().map(|e| e.threads.len()).sum();
    let vmas: usize = c.mms.values().map(|m| m.vmas.len()).sum();
    let fds: usize = c.fdtables.values().map(|t| t.fds.len()).sum();
    let p = c.pages_total();
    let _ = writeln!(
        o,
        "  {} processes, {threads} threads, {fds} fds, {vmas} memory maps",
        c.pids().len()
    );
    let _ = writeln!(
        o,
        "  pages: {} stored, {} zero, {} in a parent layer; page data {} in {} chunks",
        p.data,
        p.zero,
        p.parent,
        human(c.page_bytes),
        c.chunks
    );
    let _ = writeln!(
        o,
        "  on disk: {} in {} files",
        human(c.disk_bytes),
        c.disk_files
    );
    if chain.len() > 1 {
        let _ = writeln!(
            o,
            "  layer 0 of a chain of {} (see the chain view)",
            chain.len()
        );
    }
    for (file, s) in &c.stats {
        let _ = writeln!(
            o,
            "  {}: total {:.1} ms{} ({file})",
            s.command,
            s.total_us as f64 / 1000.0,
            if s.command == "restore" {
                String::new()
            } else {
                format!(", frozen {:.1} ms", s.frozen_us as f64 / 1000.0)
            }
        );
    }
    o.push('\n');
    o.push_str(&ps_text(c));
    let _ = writeln!(
        o,
        "\nviews: cairn show DIR ps|fds|mems|sockets|chain|stats; every image: --full; JSON: --json"
    );
    o
}

pub fn summary_json(c: &Checkpoint, chain: &[Layer]) -> String {
    let threads: usize = c.pstree.entries.iter().map(|e| e.threads.len()).sum();
    let vmas: usize = c.mms.values().map(|m| m.vmas.len()).sum();
    let fds: usize = c.fdtables.values().map(|t| t.fds.len()).sum();
    let mut o = String::from("{");
    if let Some(inv) = &c.inventory {
        let _ = write!(
            o,
            "\"root_pid\":{},\"date_ms\":{},\"hostname\":{},\"kernel_release\":{},\"cairn_version\":{},\"format_version\":{},\"pre_dump\":{},\"leave_running\":{},",
            inv.root_pid,
            json::u64(inv.dump_time_unix_ms),
            json_string(&inv.hostname),
            json_string(&inv.kernel_release),
            json_string(&inv.cairn_version),
            inv.format_version,
            inv.pre_dump,
            inv.leave_running
        );
    }
    let _ = write!(
        o,
        "\"processes\":{},\"threads\":{threads},\"fds\":{fds},\"vmas\":{vmas},\"pages\":{},\"page_bytes\":{},\"chunks\":{},\"disk_bytes\":{},\"disk_files\":{},\"layers\":{}}}",
        c.pids().len(),
        c.pages_total().json(),
        json::u64(c.page_bytes),
        c.chunks,
        json::u64(c.disk_bytes),
        c.disk_files,
        chain.len().max(1)
    );
    o
}

// ------------------------------------------------------------ ps

pub fn ps_text(c: &Checkpoint) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:>8} {:>8} {:>8} {:>8} {:>4} {:<8} COMM",
        "PID", "PPID", "PGID", "SID", "THR", "STATE"
    );
    for pid in c.pids() {
        let e = c.pstree.entries.iter().find(|e| e.pid == pid);
        let core = c.cores.get(&pid);
        let (ppid, pgid, sid, thr) =
            e.map_or((0, 0, 0, 0), |e| (e.ppid, e.pgid, e.sid, e.threads.len()));
        let _ = writeln!(
            o,
            "{pid:>8} {ppid:>8} {pgid:>8} {sid:>8} {thr:>4} {:<8} {}",
            state_name(core),
            core.map_or("", |c| c.comm.as_str())
        );
    }
    o
}

pub fn ps_json(c: &Checkpoint) -> String {
    let rows: Vec<String> = c
        .pids()
        .into_iter()
        .map(|pid| {
            let e = c.pstree.entries.iter().find(|e| e.pid == pid);
            let core = c.cores.get(&pid);
            let threads: Vec<String> = e.map_or(Vec::new(), |e| {
                e.threads.iter().map(|t| t.to_string()).collect()
            });
            format!(
                "{{\"pid\":{pid},\"ppid\":{},\"pgid\":{},\"sid\":{},\"threads\":[{}],\"state\":{},\"exit_status\":{},\"comm\":{}}}",
                e.map_or(0, |e| e.ppid),
                e.map_or(0, |e| e.pgid),
                e.map_or(0, |e| e.sid),
                threads.join(","),
                json_string(state_name(core)),
                core.map_or(0, |c| c.exit_status),
                json_string(core.map_or("", |c| c.comm.as_str()))
            )
        })
        .collect();
    format!("\"processes\":[{}]", rows.join(","))
}

// ------------------------------------------------------------ fds

/// The kind of a file description (the name of its field in
/// files.proto) and a line about it.
pub fn describe(d: &proto::FileDesc) -> (&'static str, String) {
    let Some(k) = &d.kind else {
        return ("unknown", String::new());
    };
    match k {
        Kind::Reg(r) => (
            "reg",
            format!(
                "{}{} pos {}",
                r.path,
                if r.deleted { " (deleted)" } else { "" },
                r.pos
            ),
        ),
        Kind::Pipe(p) => ("pipe", format!("pipe:[{}]", p.pipe_ino)),
        Kind::Fifo(f) => ("fifo", f.path.clone()),
        Kind::FsPath(p) => ("fs_path", p.path.clone()),
        Kind::Eventfd(e) => (
            "eventfd",
            format!(
                "count {}{}",
                e.count,
                if e.semaphore { " semaphore" } else { "" }
            ),
        ),
        Kind::Signalfd(s) => ("signalfd", flags::sigmask(s.sigmask)),
        Kind::Timerfd(t) => (
            "timerfd",
            format!(
                "clock {} value {} ns interval {} ns",
                t.clockid, t.value_ns, t.interval_ns
            ),
        ),
        Kind::Epoll(e) => ("epoll", format!("{} targets", e.targets.len())),
        Kind::Memfd(m) => ("memfd", format!("memfd:{} {} bytes", m.name, m.size)),
        Kind::Inotify(i) => ("inotify", format!("{} watches", i.watches.len())),
        Kind::Pidfd(p) => ("pidfd", format!("pid {}", p.pid)),
        Kind::Netlink(n) => (
            "netlink",
            format!("protocol {} portid {}", n.protocol, n.portid),
        ),
        Kind::Packet(p) => (
            "packet",
            format!("ifname {:?} protocol {:#x}", p.ifname, p.protocol),
        ),
        Kind::Fanotify(_) => ("fanotify", String::new()),
        Kind::Unix(u) => ("unix", unix_line(u)),
        Kind::Tty(t) => (
            "tty",
            format!(
                "{} {}",
                t.kind.enum_value().map_or("?".into(), |k| format!("{k:?}")),
                t.index
            ),
        ),
        Kind::Inet(s) => ("inet", inet_line(s)),
        Kind::External(e) => ("external", e.key.clone()),
    }
}

/// The open flags of a description: its own, or the kind's.
fn desc_flags(d: &proto::FileDesc) -> u32 {
    if d.flags_saved {
        return d.flags;
    }
    match &d.kind {
        Some(Kind::Reg(r)) => r.flags,
        Some(Kind::Pipe(p)) => p.flags,
        Some(Kind::Fifo(f)) => f.flags,
        Some(Kind::Memfd(m)) => m.flags,
        Some(Kind::External(e)) => e.flags,
        _ => d.flags,
    }
}

fn unix_line(u: &proto::UnixSocket) -> String {
    let ty = match u.type_ as i32 {
        libc::SOCK_STREAM => "stream",
        libc::SOCK_DGRAM => "dgram",
        libc::SOCK_SEQPACKET => "seqpacket",
        _ => "?",
    };
    let name = |b: &[u8]| -> String {
        if b.is_empty() {
            "unnamed".into()
        } else if b[0] == 0 {
            format!("@{}", String::from_utf8_lossy(&b[1..]))
        } else {
            String::from_utf8_lossy(b).into_owned()
        }
    };
    let mut s = format!("{ty} ino {} {}", u.ino, name(&u.name));
    if u.peer != 0 {
        let _ = write!(s, " -> ino {}", u.peer);
    } else if !u.peer_name.is_empty() {
        let _ = write!(s, " -> {}", name(&u.peer_name));
    }
    if u.backlog > 0 {
        let _ = write!(s, " listening (backlog {})", u.backlog);
    }
    if !u.queue.is_empty() {
        let _ = write!(s, ", {} queued", u.queue.len());
    }
    s
}

fn addr(a: &protobuf::MessageField<proto::InetAddr>) -> String {
    match a.as_ref() {
        Some(a) if a.ip.contains(':') => format!("[{}]:{}", a.ip, a.port),
        Some(a) => format!("{}:{}", a.ip, a.port),
        None => "*".into(),
    }
}

fn inet_line(s: &proto::InetSk) -> String {
    let proto_name = match s.protocol as i32 {
        libc::IPPROTO_TCP => "tcp",
        libc::IPPROTO_UDP => "udp",
        libc::IPPROTO_UDPLITE => "udplite",
        libc::IPPROTO_ICMP | libc::IPPROTO_ICMPV6 => "icmp",
        _ => "raw",
    };
    let fam = if s.family as i32 == libc::AF_INET6 {
        "6"
    } else {
        "4"
    };
    let state = if s.protocol as i32 == libc::IPPROTO_TCP {
        crate::kinds::inet::tcp_state_name(s.state)
    } else {
        ""
    };
    format!(
        "{proto_name}{fam} {} -> {} {state}",
        addr(&s.local),
        addr(&s.peer)
    )
    .trim_end()
    .to_string()
}

pub fn fds_text(c: &Checkpoint) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:>8} {:>4} {:<9} {:<28} WHAT",
        "PID", "FD", "TYPE", "FLAGS"
    );
    for (pid, t) in &c.fdtables {
        for fd in &t.fds {
            let (kind, what, fl) = match c.desc(fd.desc_id) {
                Some(d) => {
                    let (k, w) = describe(d);
                    (k, w, flags::open_flags(desc_flags(d)))
                }
                None => (
                    "?",
                    format!("description {} not in files.img", fd.desc_id),
                    String::new(),
                ),
            };
            let fl = if fd.cloexec {
                format!("{fl}|O_CLOEXEC")
            } else {
                fl
            };
            let _ = writeln!(o, "{pid:>8} {:>4} {kind:<9} {fl:<28} {what}", fd.fd);
        }
    }
    o
}

pub fn fds_json(c: &Checkpoint) -> String {
    let mut rows = Vec::new();
    for (pid, t) in &c.fdtables {
        for fd in &t.fds {
            let d = c.desc(fd.desc_id);
            let (kind, what) = d.map_or(("?", String::new()), describe);
            let fl = d.map_or(0, desc_flags);
            rows.push(format!(
                "{{\"pid\":{pid},\"fd\":{},\"cloexec\":{},\"desc_id\":{},\"type\":{},\"flags\":{fl},\"flag_names\":{},\"what\":{}}}",
                fd.fd,
                fd.cloexec,
                fd.desc_id,
                json_string(kind),
                json_string(&flags::open_flags(fl)),
                json_string(&what)
            ));
        }
    }
    format!("\"fds\":[{}]", rows.join(","))
}

// ------------------------------------------------------------ mems

/// Pages of `pid`'s pagemap inside [start, end).
fn vma_pages(c: &Checkpoint, pid: u32, start: u64, end: u64) -> Pages {
    let mut p = Pages::default();
    let page = c
        .inventory
        .as_ref()
        .map_or(4096, |i| u64::from(i.page_size).max(4096));
    if let Some(pm) = c.pagemaps.get(&format!("pid:{pid}")) {
        for r in &pm.runs {
            let (a, b) = (
                r.addr,
                r.addr.saturating_add(r.nr_pages.saturating_mul(page)),
            );
            let (lo, hi) = (a.max(start), b.min(end));
            if lo < hi {
                p.add(r, (hi - lo) / page);
            }
        }
    }
    p
}

fn vma_kind(v: &proto::Vma) -> String {
    v.kind
        .enum_value()
        .map_or_else(|n| n.to_string(), |k| format!("{k:?}"))
}

pub fn mems_text(c: &Checkpoint) -> String {
    let mut o = String::new();
    for (pid, mm) in &c.mms {
        let _ = writeln!(
            o,
            "pid {pid}: {} memory maps, brk {:#x}-{:#x}, stack {:#x}",
            mm.vmas.len(),
            mm.start_brk,
            mm.brk,
            mm.start_stack
        );
        let _ = writeln!(
            o,
            "  {:<33} {:<5} {:>10} {:>8} {:<26} NAME",
            "START-END", "PROT", "SIZE", "STORED", "FLAGS"
        );
        for v in &mm.vmas {
            let kind = vma_kind(v);
            let p = vma_pages(c, *pid, v.start, v.end);
            let _ = writeln!(
                o,
                "  {:<33} {:<5} {:>10} {:>8} {:<26} {}",
                format!("{:016x}-{:016x}", v.start, v.end),
                flags::prot(v.prot, flags::vma_shared(&kind)),
                human(v.end.saturating_sub(v.start)),
                p.data,
                flags::map_flags(&kind),
                v.name
            );
        }
    }
    o
}

pub fn mems_json(c: &Checkpoint) -> String {
    let mut procs = Vec::new();
    for (pid, mm) in &c.mms {
        let vmas: Vec<String> = mm
            .vmas
            .iter()
            .map(|v| {
                let kind = vma_kind(v);
                format!(
                    "{{\"start\":{},\"end\":{},\"prot\":{},\"prot_bits\":{},\"kind\":{},\"map_flags\":{},\"pgoff\":{},\"name\":{},\"pages\":{}}}",
                    json::u64(v.start),
                    json::u64(v.end),
                    json_string(&flags::prot(v.prot, flags::vma_shared(&kind))),
                    v.prot,
                    json_string(&kind),
                    json_string(flags::map_flags(&kind)),
                    json::u64(v.pgoff),
                    json_string(&v.name),
                    vma_pages(c, *pid, v.start, v.end).json()
                )
            })
            .collect();
        procs.push(format!(
            "{{\"pid\":{pid},\"start_brk\":{},\"brk\":{},\"start_stack\":{},\"vmas\":[{}]}}",
            json::u64(mm.start_brk),
            json::u64(mm.brk),
            json::u64(mm.start_stack),
            vmas.join(",")
        ));
    }
    format!("\"processes\":[{}]", procs.join(","))
}

// ------------------------------------------------------------ sockets

/// Sockets with the pid:fd pairs that hold them.
fn sockets(c: &Checkpoint) -> Vec<(&'static str, String, Vec<String>)> {
    let mut out = Vec::new();
    for d in &c.files.descs {
        let (kind, what) = describe(d);
        if !matches!(kind, "unix" | "inet" | "netlink" | "packet") {
            continue;
        }
        let holders: Vec<String> = c
            .fdtables
            .iter()
            .flat_map(|(pid, t)| {
                t.fds
                    .iter()
                    .filter(|f| f.desc_id == d.id)
                    .map(move |f| format!("{pid}:{}", f.fd))
            })
            .collect();
        out.push((kind, what, holders));
    }
    out
}

pub fn sockets_text(c: &Checkpoint) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{:<8} {:<16} SOCKET", "TYPE", "PID:FD");
    let list = sockets(c);
    for (kind, what, holders) in &list {
        let _ = writeln!(o, "{kind:<8} {:<16} {what}", holders.join(","));
    }
    if list.is_empty() {
        o.push_str("(no sockets)\n");
    }
    o
}

pub fn sockets_json(c: &Checkpoint) -> String {
    let rows: Vec<String> = sockets(c)
        .iter()
        .map(|(kind, what, holders)| {
            format!(
                "{{\"type\":{},\"what\":{},\"held_by\":[{}]}}",
                json_string(kind),
                json_string(what),
                holders
                    .iter()
                    .map(|h| json_string(h))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        })
        .collect();
    format!("\"sockets\":[{}]", rows.join(","))
}

// ------------------------------------------------------------ chain

/// One layer of an incremental chain.
pub struct Layer {
    pub dir: String,
    pub inventory: proto::Inventory,
    pub pages: Pages,
    pub bytes: u64,
    /// The directory of the parent layer, as resolved.
    pub parent: Option<String>,
}

/// The layers of the chain that starts at `dir`, newest first (one layer
/// for a checkpoint without parent). A broken chain is an error naming
/// the directory.
pub fn chain_of(dir: &ImageDir) -> Result<Vec<Layer>> {
    if !dir.exists(names::INVENTORY) {
        return Ok(Vec::new());
    }
    let inv: proto::Inventory = dir.read(ImageType::Inventory, names::INVENTORY)?;
    let mut out = Vec::new();
    let mut cur: (ImageDir, proto::Inventory) = (dir.clone(), inv);
    loop {
        let d = &cur.0;
        let mut pages = Pages::default();
        let mut bytes = 0;
        for (n, ft) in d.entries()? {
            if ft != Some(rustix::fs::FileType::RegularFile) {
                continue;
            }
            bytes += d.open_file(&n)?.1;
            if n.starts_with("pagemap-") && n.ends_with(".img") {
                let pm: proto::Pagemap = d.read(ImageType::Pagemap, &n)?;
                for r in &pm.runs {
                    pages.add(r, r.nr_pages);
                }
            }
        }
        let next = chain::parent_path(d.path(), &cur.1);
        let child_id = cur.1.parent_layer_id.clone();
        let here = d.path().to_path_buf();
        out.push(Layer {
            dir: here.display().to_string(),
            inventory: cur.1,
            pages,
            bytes,
            parent: next.as_ref().map(|p| p.display().to_string()),
        });
        let Some(p) = next else { break };
        if out.len() > chain::MAX_DEPTH {
            return Err(Error::image(
                &p,
                "the chain of parents is too long or loops",
            ));
        }
        cur = chain::open_layer(&p, &here, &child_id)?;
    }
    Ok(out)
}

pub fn chain_text(chain: &[Layer]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "=== chain ({} layer{}, newest first) ===",
        chain.len(),
        if chain.len() == 1 { "" } else { "s" }
    );
    for (i, l) in chain.iter().enumerate() {
        let inv = &l.inventory;
        let what = if inv.pre_dump { "pre-dump" } else { "dump" };
        let how = if inv.dirty_tracking.is_empty() {
            "full".to_string()
        } else {
            format!("changes found by {}", inv.dirty_tracking)
        };
        let _ = writeln!(
            out,
            "layer {i}: {} ({what}, {how}): {} pages stored, {} zero, {} in parent{}",
            l.dir,
            l.pages.data,
            l.pages.zero,
            l.pages.parent,
            if inv.tracking_armed.is_empty() {
                String::new()
            } else {
                format!("; armed {} for the next layer", inv.tracking_armed)
            }
        );
        let _ = writeln!(
            out,
            "  taken {}, {} on disk, id {}{}",
            flags::date_ms(inv.dump_time_unix_ms),
            human(l.bytes),
            if inv.layer_id.is_empty() {
                "-"
            } else {
                &inv.layer_id
            },
            match &l.parent {
                Some(p) => format!(", parent {p} (id {})", inv.parent_layer_id),
                None => String::new(),
            }
        );
        for f in &inv.full_owners {
            let _ = writeln!(out, "  stored whole: {f}");
        }
    }
    out
}

pub fn chain_json(chain: &[Layer]) -> String {
    let rows: Vec<String> = chain
        .iter()
        .map(|l| {
            let inv = &l.inventory;
            format!(
                "{{\"dir\":{},\"pre_dump\":{},\"layer_id\":{},\"parent_layer_id\":{},\"parent_dir\":{},\"parent\":{},\"date_ms\":{},\"bytes\":{},\"dirty_tracking\":{},\"tracking_armed\":{},\"pages\":{},\"full_owners\":[{}]}}",
                json_string(&l.dir),
                inv.pre_dump,
                json_string(&inv.layer_id),
                json_string(&inv.parent_layer_id),
                json_string(&inv.parent_dir),
                l.parent.as_deref().map_or("null".into(), json_string),
                json::u64(inv.dump_time_unix_ms),
                json::u64(l.bytes),
                json_string(&inv.dirty_tracking),
                json_string(&inv.tracking_armed),
                l.pages.json(),
                inv.full_owners
                    .iter()
                    .map(|f| json_string(f))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        })
        .collect();
    format!("\"chain\":[{}]", rows.join(","))
}

// ------------------------------------------------------------ stats

pub fn stats_text(c: &Checkpoint) -> String {
    let mut o = String::new();
    for (i, (file, s)) in c.stats.iter().enumerate() {
        if i > 0 {
            o.push('\n');
        }
        let _ = writeln!(o, "=== {file} (stats) ===");
        o.push_str(&crate::stats::render(s));
    }
    if c.stats.is_empty() {
        o.push_str("(no statistics: stats-dump.img and stats-restore.img are missing)\n");
    }
    o
}

pub fn stats_json(c: &Checkpoint) -> String {
    let rows: Vec<String> = c
        .stats
        .iter()
        .map(|(file, s)| {
            format!(
                "{{\"file\":{},\"stats\":{}}}",
                json_string(file),
                json::message(s)
            )
        })
        .collect();
    format!("\"stats\":[{}]", rows.join(","))
}
