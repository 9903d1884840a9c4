//! Network locking for established TCP connections (`--tcp-established`).
//!
//! While a connection is checkpointed its socket is frozen in TCP_REPAIR
//! mode and, once the tree is killed, gone: a packet from the peer would
//! then be answered with a reset. So, as CRIU does, every packet of the
//! connection is dropped from just before its state is read until the
//! restored socket is live again: the peer sees a silent path and
//! retransmits, and nothing it sent is lost (unacknowledged data is kept
//! by the peer, acknowledged data is in the images).
//!
//! The mechanism is one nftables table (family `inet`) per dump, named
//! after the root pid and the time, with an input and an output chain at
//! priority `raw` (before conntrack): one drop rule per direction per
//! connection, and for listening sockets a rule that drops new connection
//! requests (SYN without ACK), so that no connection is completed into an
//! accept queue that the dump no longer sees. The table is written with
//! `nft -f -` in one transaction that first removes any table of that
//! name, so locking is idempotent (a restore on another machine locks
//! again before it creates sockets). Unlocking deletes the table in one
//! transaction that works whether or not it still exists.
//!
//! A [`Lock`] that is dropped while held unlocks: every error path of dump
//! and restore lifts the lock. Only a successful dump that killed the tree
//! keeps it ([`Lock::keep`]); the restore lifts it.
//!
//! A kept lock whose restore never comes would drop that traffic forever.
//! So each table records, in its comment, who holds it (pid, start time
//! and pid namespace of the dumping or restoring cairn) and the image
//! directory it belongs to ([`Owner`]); [`tables`] lists cairn's tables
//! of this network namespace with what became of them ([`State`]: held by
//! a running cairn, kept for the restore of images that are there, or
//! abandoned: images gone, replaced or restored), for `cairn check`, and
//! `cairn unlock` removes one by its handle, so that a table made again
//! under the same name since it was looked at is never touched.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};
use crate::image::proto::{LockedConn, NetLock};
use crate::sys::net::InetAddr;

/// How connections are kept from the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Method {
    /// An nftables table (the default).
    #[default]
    Nftables,
    /// No locking: the user keeps the network quiet (CRIU's
    /// `--network-lock skip`).
    Skip,
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Method, String> {
        match s {
            "nftables" => Ok(Method::Nftables),
            "skip" => Ok(Method::Skip),
            _ => Err(format!(
                "unknown network lock method {s:?} (nftables or skip)"
            )),
        }
    }
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Nftables => "nftables",
            Method::Skip => "skip",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One locked endpoint: a connection (with a peer) or a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conn {
    pub local: InetAddr,
    pub peer: Option<InetAddr>,
}

/// The path of the `nft` command, if installed.
pub fn nft_path() -> Option<std::path::PathBuf> {
    let mut dirs: Vec<std::path::PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(Into::into));
    dirs.into_iter()
        .map(|d| d.join("nft"))
        .find(|p| p.is_file())
}

/// Refuses early (before anything is frozen) if locking cannot work.
pub fn check_available(method: Method, pid: i32) -> Result<()> {
    if method == Method::Nftables && nft_path().is_none() {
        return Err(Error::unsupported(
            pid,
            "--tcp-established locks the network with nftables, but the nft command is not \
             installed (Debian package nftables); install it, or pass --network-lock=skip and \
             keep the connections' peers quiet yourself",
        ));
    }
    Ok(())
}

fn ip_match(ip: IpAddr, dir: &str) -> String {
    match ip {
        IpAddr::V4(a) => format!("ip {dir} {a}"),
        IpAddr::V6(a) => format!("ip6 {dir} {a}"),
    }
}

/// The packet mark (SO_MARK) of the packets cairn itself sends to a
/// locked connection to replay its state (a FIN, an acknowledgement; see
/// [`crate::kinds::tcp`]): the lock lets them through. CRIU's SOCCR_MARK.
pub const BYPASS_MARK: u32 = 0xC114;

/// The nft rules (one per line) that keep `c` from the network:
/// (input rules, output rules).
pub fn rules(c: &Conn) -> (Vec<String>, Vec<String>) {
    let l = c.local.canonical_ip();
    match c.peer {
        Some(p) => {
            let r = p.canonical_ip();
            let input = format!(
                "{} {} tcp sport {} tcp dport {} drop",
                ip_match(r, "saddr"),
                ip_match(l, "daddr"),
                p.port,
                c.local.port
            );
            let output = format!(
                "{} {} tcp sport {} tcp dport {} drop",
                ip_match(l, "saddr"),
                ip_match(r, "daddr"),
                c.local.port,
                p.port
            );
            (vec![input], vec![output])
        }
        None => {
            let syn = format!(
                "tcp dport {} tcp flags & (syn | ack) == syn drop",
                c.local.port
            );
            let input = if l.is_unspecified() {
                format!("meta l4proto tcp {syn}")
            } else {
                format!("{} {syn}", ip_match(l, "daddr"))
            };
            (vec![input], vec![])
        }
    }
}

/// The whole script that (re)creates `table` with the rules for `conns`,
/// and `comment` on the table ([`Owner::comment`]).
pub fn lock_script(table: &str, conns: &[Conn], comment: Option<&str>) -> String {
    let mut input = Vec::new();
    let mut output = Vec::new();
    for c in conns {
        let (i, o) = rules(c);
        for r in i {
            if !input.contains(&r) {
                input.push(r);
            }
        }
        for r in o {
            if !output.contains(&r) {
                output.push(r);
            }
        }
    }
    let mut s =
        format!("add table inet {table}\ndelete table inet {table}\ntable inet {table} {{\n");
    if let Some(c) = comment {
        s += &format!("  comment \"{c}\"\n");
    }
    for (name, hook, rules) in [("input", "input", &input), ("output", "output", &output)] {
        s += &format!(
            "  chain {name} {{\n    type filter hook {hook} priority raw; policy accept;\n    \
             meta mark {BYPASS_MARK:#x} accept\n"
        );
        for r in rules {
            s += &format!("    {r}\n");
        }
        s += "  }\n";
    }
    s += "}\n";
    s
}

fn unlock_script(table: &str) -> String {
    format!("add table inet {table}\ndelete table inet {table}\n")
}

/// Removes the lock table `table` (whether or not it still exists): what
/// the guardian does for a dumper that died holding the lock. Refuses a
/// name that is not one of cairn's lock tables.
pub fn unlock_table(table: &str) -> std::io::Result<()> {
    if !valid_table_name(table) || !table.starts_with("cairn_") {
        return Err(std::io::Error::other(format!(
            "{table:?} is not a cairn lock table"
        )));
    }
    run_nft(&unlock_script(table))
}

fn run_nft(script: &str) -> std::io::Result<()> {
    nft(&["-f", "-"], Some(script)).map(drop)
}

/// Runs `nft ARGS` (with `stdin` on its standard input); its output.
fn nft(args: &[&str], stdin: Option<&str>) -> std::io::Result<String> {
    let nft = nft_path().ok_or_else(|| std::io::Error::other("nft is not installed"))?;
    let mut child = Command::new(nft)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let (Some(mut si), Some(text)) = (child.stdin.take(), stdin) {
        si.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(std::io::Error::other(format!(
            "nft failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// A held network lock. Dropping it unlocks.
pub struct Lock {
    method: Method,
    table: String,
    conns: Vec<Conn>,
    held: bool,
    /// For error messages.
    pid: i32,
}

impl Lock {
    /// Locks `conns` now. `table` names the lock (see [`table_name`]);
    /// `dir` is the image directory it belongs to, recorded in the table
    /// with this cairn as its holder ([`Owner`]).
    pub fn acquire(
        method: Method,
        table: String,
        conns: Vec<Conn>,
        pid: i32,
        dir: &Path,
    ) -> Result<Lock> {
        let mut l = Lock {
            method,
            table,
            conns,
            held: false,
            pid,
        };
        if method == Method::Nftables {
            let comment = Owner::me(dir).comment();
            run_nft(&lock_script(&l.table, &l.conns, Some(&comment)))
                .or_else(|e| {
                    // nft before 0.9.7 or a kernel before 5.10: no table
                    // comments. The lock matters more than its label.
                    run_nft(&lock_script(&l.table, &l.conns, None)).inspect(|()| {
                        warn!(
                            "nft table inet {}: its owner is not recorded ({e}); `cairn check` \
                             cannot tell whether it is abandoned (`cairn unlock -D` removes it)",
                            l.table
                        )
                    })
                })
                .map_err(|e| Error::sys(pid, format!("network lock (nft table {})", l.table), e))?;
            // From now on a guardian whose dumper dies removes it.
            crate::guard::tell_lock(&l.table);
            info!(
                "network locked: nft table inet {} ({} connections and listeners)",
                l.table,
                l.conns.len()
            );
        }
        l.held = true;
        Ok(l)
    }

    /// Lifts the lock (idempotent).
    pub fn release(&mut self) -> Result<()> {
        if !self.held {
            return Ok(());
        }
        self.held = false;
        if self.method == Method::Nftables {
            run_nft(&unlock_script(&self.table)).map_err(|e| {
                Error::sys(
                    self.pid,
                    format!("network unlock (nft table {})", self.table),
                    e,
                )
            })?;
            info!("network unlocked: nft table inet {} removed", self.table);
        }
        Ok(())
    }

    /// Leaves the lock in place for the restore; returns its description.
    pub fn keep(mut self) -> NetLock {
        self.held = false;
        self.to_proto()
    }

    pub fn to_proto(&self) -> NetLock {
        let mut n = NetLock::new();
        n.method = self.method.as_str().to_string();
        n.table = self.table.clone();
        for c in &self.conns {
            let mut lc = LockedConn::new();
            lc.family = match c.local.ip {
                IpAddr::V4(_) => libc::AF_INET as u32,
                IpAddr::V6(_) => libc::AF_INET6 as u32,
            };
            lc.local = Some(addr_to_proto(&c.local)).into();
            lc.peer = c.peer.as_ref().map(addr_to_proto).into();
            n.conns.push(lc);
        }
        n
    }

    /// The lock described by an image in `dir`, acquired again (a no-op
    /// if it is still in place; needed after a reboot or on another
    /// machine).
    pub fn from_proto(n: &NetLock, pid: i32, dir: &Path) -> Result<Lock> {
        let method: Method = n
            .method
            .parse()
            .map_err(|e: String| Error::Restore(format!("network lock in the images: {e}")))?;
        if !valid_table_name(&n.table) {
            return Err(Error::Restore(format!(
                "network lock in the images: bad table name {:?}",
                n.table
            )));
        }
        let mut conns = Vec::new();
        for c in &n.conns {
            let local =
                c.local.as_ref().and_then(addr_from_proto).ok_or_else(|| {
                    Error::Restore("network lock: connection without address".into())
                })?;
            let peer = c.peer.as_ref().and_then(addr_from_proto);
            conns.push(Conn { local, peer });
        }
        Lock::acquire(method, n.table.clone(), conns, pid, dir)
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            warn!("{e}");
        }
    }
}

/// A table name unique to one dump: `cairn_<pid>_<unix ms>`.
pub fn table_name(pid: i32) -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("cairn_{pid}_{ms}")
}

pub fn valid_table_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

// ---------------------------------------------------------------------------
// Lock tables left behind

/// The label that starts the comment of every lock table cairn makes.
const MARK: &str = "cairn-lock v1";

/// The longest image directory (encoded) a table comment records: the
/// kernel keeps at most 256 bytes of a table's comment.
const MAX_DIR: usize = 180;

/// Who holds a lock table and what it belongs to: its comment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The cairn that made the table (dump or restore), as its own pid
    /// namespace sees it, its start time (clock ticks after boot) and
    /// the inode of that pid namespace.
    pub pid: i32,
    pub start: u64,
    pub pidns: u64,
    /// The image directory (absolute); `None` if too long to record.
    pub dir: Option<PathBuf>,
}

fn pidns_of(pid: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/pid"))
        .ok()
        .map(|m| m.ino())
}

/// `dir` as an absolute path with its parent resolved (the directory
/// itself may not exist yet: a dump stages it beside its final name).
pub fn absolute_dir(dir: &Path) -> PathBuf {
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    match (abs.parent(), abs.file_name()) {
        (Some(p), Some(n)) => std::fs::canonicalize(p).map_or(abs.clone(), |p| p.join(n)),
        _ => abs,
    }
}

/// Bytes of a path that a comment holds as they are; any other is %XX.
fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"/._-+,:@=".contains(&b)
}

fn encode_path(p: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut s = String::new();
    for &b in p.as_os_str().as_bytes() {
        if plain(b) {
            s.push(b as char);
        } else {
            s += &format!("%{b:02X}");
        }
    }
    s
}

fn decode_path(s: &str) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else if plain(b[i]) {
            out.push(b[i]);
            i += 1;
        } else {
            return None;
        }
    }
    (out.first() == Some(&b'/')).then(|| PathBuf::from(std::ffi::OsString::from_vec(out)))
}

impl Owner {
    /// This cairn, holding the lock of the images in `dir`.
    pub fn me(dir: &Path) -> Owner {
        let pid = crate::sys::task::getpid();
        Owner {
            pid,
            start: crate::procfs::read_stat(pid).map_or(0, |s| s.starttime),
            pidns: pidns_of("self").unwrap_or(0),
            dir: Some(absolute_dir(dir)),
        }
    }

    /// The table comment: `cairn-lock v1 pid=P start=T pidns=I dir=D`
    /// (the directory %-encoded, left out if too long).
    pub fn comment(&self) -> String {
        let mut c = format!(
            "{MARK} pid={} start={} pidns={}",
            self.pid, self.start, self.pidns
        );
        if let Some(d) = self.dir.as_deref().map(encode_path) {
            if d.len() <= MAX_DIR {
                c += &format!(" dir={d}");
            }
        }
        c
    }

    /// A comment of [`Owner::comment`]'s form; `None` for any other.
    pub fn parse(comment: &str) -> Option<Owner> {
        let rest = comment.strip_prefix(MARK)?;
        let (mut pid, mut start, mut pidns, mut dir) = (None, None, None, None);
        for kv in rest.split_whitespace() {
            match kv.split_once('=')? {
                ("pid", v) => pid = v.parse().ok(),
                ("start", v) => start = v.parse().ok(),
                ("pidns", v) => pidns = v.parse().ok(),
                ("dir", v) => dir = Some(decode_path(v)?),
                _ => {}
            }
        }
        Some(Owner {
            pid: pid?,
            start: start?,
            pidns: pidns?,
            dir,
        })
    }

    /// The holder, if it still runs: its pid as this cairn sees it. A
    /// holder in another pid namespace (`cairn run --pid-ns`) is looked
    /// for by its start time.
    pub fn holder_alive(&self) -> Option<i32> {
        let same = |p: i32| {
            crate::procfs::read_stat(p).is_ok_and(|s| s.starttime == self.start)
                && pidns_of(&p.to_string()) == Some(self.pidns)
        };
        if pidns_of("self") == Some(self.pidns) {
            return same(self.pid).then_some(self.pid);
        }
        let procs = std::fs::read_dir("/proc").ok()?;
        procs
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .find(|&p| {
                same(p)
                    && crate::procfs::read_status(p)
                        .is_ok_and(|st| st.ns_pid.last() == Some(&self.pid))
            })
    }
}

/// What became of a lock table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// A cairn that runs holds it (a dump or a restore in progress).
    Held { pid: i32 },
    /// Kept by a dump for the restore of its images, which are there.
    Kept { dir: PathBuf },
    /// Nothing will lift it (why): its images are gone, hold another
    /// dump, or were restored.
    Abandoned { why: String },
    /// cairn cannot tell (why); it is left alone.
    Unknown { why: String },
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Held { .. } => "held",
            State::Kept { .. } => "kept",
            State::Abandoned { .. } => "abandoned",
            State::Unknown { .. } => "unknown",
        }
    }

    pub fn detail(&self) -> String {
        match self {
            State::Held { pid } => format!("held by cairn pid {pid}, which runs"),
            State::Kept { dir } => format!("kept for the restore of {}", dir.display()),
            State::Abandoned { why } | State::Unknown { why } => why.clone(),
        }
    }
}

/// A lock table of cairn's in this network namespace.
#[derive(Clone, Debug)]
pub struct Table {
    pub name: String,
    /// Its handle: what `cairn unlock` deletes, so that a table made
    /// again under the same name since it was looked at stays.
    pub handle: u64,
    pub owner: Option<Owner>,
    pub state: State,
}

/// The table `NAME`'s handle and comment in `nft -a list table` output.
fn parse_listing(text: &str) -> Option<(u64, Option<String>)> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let head = lines.next()?;
    let handle = head.rsplit_once("# handle ")?.1.trim().parse().ok()?;
    let comment = lines
        .next()
        .and_then(|l| l.strip_prefix("comment \"")?.strip_suffix('"'))
        .map(str::to_string);
    Some((handle, comment))
}

/// The names of the `inet` tables in `nft list tables inet` output that
/// may be cairn's (`cairn_...`).
fn parse_tables(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("table inet "))
        .map(str::trim)
        .filter(|n| n.starts_with("cairn_") && valid_table_name(n))
        .map(str::to_string)
        .collect()
}

/// What became of the table `name` made by `owner`.
pub fn state_of(name: &str, owner: Option<&Owner>) -> State {
    let Some(o) = owner else {
        return State::Unknown {
            why: "its owner is not recorded (a cairn before lock comments, nft without table \
                  comments, or not cairn's): `cairn unlock -D DIR` removes it for the images \
                  that name it"
                .into(),
        };
    };
    if let Some(pid) = o.holder_alive() {
        return State::Held { pid };
    }
    let Some(dir) = &o.dir else {
        return State::Unknown {
            why: "its image directory is not recorded (too long a path): `cairn unlock -D DIR` \
                  removes it"
                .into(),
        };
    };
    let d = dir.display();
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return State::Abandoned {
                why: format!("its image directory {d} is gone"),
            }
        }
        Err(e) => {
            return State::Unknown {
                why: format!("{d}: {e}"),
            }
        }
        Ok(_) => {}
    }
    match std::fs::symlink_metadata(dir.join(crate::image::names::INVENTORY)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return State::Abandoned {
                why: format!("{d} holds no checkpoint any more"),
            }
        }
        _ => {}
    }
    match images_lock(dir) {
        Ok(Some(t)) if t == name => {}
        Ok(other) => {
            return State::Abandoned {
                why: format!(
                    "{d} holds another dump (whose lock is {})",
                    other.as_deref().unwrap_or("none")
                ),
            }
        }
        Err(e) => {
            return State::Unknown {
                why: format!("{d}: {e}"),
            }
        }
    }
    if dir.join(crate::image::names::STATS_RESTORE).exists() {
        return State::Abandoned {
            why: format!("its images {d} were restored"),
        };
    }
    State::Kept { dir: dir.clone() }
}

/// The lock table the dump in `dir` kept (recorded in its files image).
pub fn images_lock(dir: &Path) -> Result<Option<String>> {
    use crate::image::{names, ImageDir, ImageType};
    let (d, _) = ImageDir::load(dir)?;
    let files: crate::image::proto::Files = d.read(ImageType::Files, names::FILES)?;
    Ok(files
        .net_lock
        .as_ref()
        .filter(|n| n.method == Method::Nftables.as_str() && !n.table.is_empty())
        .map(|n| n.table.clone()))
}

/// The table `name` as nft lists it now; `None` if there is none.
pub fn table(name: &str) -> std::io::Result<Option<Table>> {
    if !valid_table_name(name) {
        return Err(std::io::Error::other(format!("bad table name {name:?}")));
    }
    let present = nft(&["list", "tables", "inet"], None)?;
    if !parse_tables(&present).iter().any(|t| t == name) {
        return Ok(None);
    }
    let text = nft(&["-a", "list", "table", "inet", name], None)?;
    let (handle, comment) = parse_listing(&text).ok_or_else(|| {
        std::io::Error::other(format!("nft -a list table inet {name}: unexpected output"))
    })?;
    let owner = comment.as_deref().and_then(Owner::parse);
    let state = state_of(name, owner.as_ref());
    Ok(Some(Table {
        name: name.to_string(),
        handle,
        owner,
        state,
    }))
}

/// cairn's lock tables in this network namespace.
pub fn tables() -> std::io::Result<Vec<Table>> {
    let mut out = Vec::new();
    for name in parse_tables(&nft(&["list", "tables", "inet"], None)?) {
        if let Some(t) = table(&name)? {
            out.push(t);
        }
    }
    Ok(out)
}

/// Deletes `t` by its handle: fails, touching nothing, if the table was
/// removed or made again since it was listed.
pub fn delete(t: &Table) -> std::io::Result<()> {
    nft(
        &["delete", "table", "inet", "handle", &t.handle.to_string()],
        None,
    )
    .map(drop)
    .map_err(|e| {
        std::io::Error::other(format!(
            "nft table inet {} (handle {}) changed since it was listed: {e}",
            t.name, t.handle
        ))
    })
}

/// An address as images record it.
pub fn addr_to_proto(a: &InetAddr) -> crate::image::proto::InetAddr {
    let mut p = crate::image::proto::InetAddr::new();
    p.ip = a.ip.to_string();
    p.port = a.port as u32;
    p.flowinfo = a.flowinfo;
    p.scope_id = a.scope_id;
    p
}

/// An address from an image (None if it does not parse).
pub fn addr_from_proto(p: &crate::image::proto::InetAddr) -> Option<InetAddr> {
    Some(InetAddr {
        ip: p.ip.parse().ok()?,
        port: u16::try_from(p.port).ok()?,
        flowinfo: p.flowinfo,
        scope_id: p.scope_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str, port: u16) -> InetAddr {
        InetAddr::new(s.parse().unwrap(), port)
    }

    #[test]
    fn connection_rules_both_directions() {
        let c = Conn {
            local: a("10.0.0.1", 6379),
            peer: Some(a("10.0.0.2", 40000)),
        };
        let (i, o) = rules(&c);
        assert_eq!(
            i,
            ["ip saddr 10.0.0.2 ip daddr 10.0.0.1 tcp sport 40000 tcp dport 6379 drop"]
        );
        assert_eq!(
            o,
            ["ip saddr 10.0.0.1 ip daddr 10.0.0.2 tcp sport 6379 tcp dport 40000 drop"]
        );
    }

    #[test]
    fn mapped_v6_is_matched_as_v4_and_listeners_drop_syn() {
        let c = Conn {
            local: a("::ffff:127.0.0.1", 80),
            peer: Some(a("::ffff:127.0.0.1", 5000)),
        };
        assert!(rules(&c).0[0].starts_with("ip saddr 127.0.0.1 ip daddr 127.0.0.1"));
        let l = Conn {
            local: a("::", 80),
            peer: None,
        };
        assert_eq!(
            rules(&l).0,
            ["meta l4proto tcp tcp dport 80 tcp flags & (syn | ack) == syn drop"]
        );
        let l6 = Conn {
            local: a("::1", 80),
            peer: None,
        };
        assert!(rules(&l6).0[0].starts_with("ip6 daddr ::1 tcp dport 80"));
    }

    #[test]
    fn owner_comment_round_trips() {
        let o = Owner {
            pid: 41,
            start: 123456,
            pidns: 4026531836,
            dir: Some(PathBuf::from("/var/ckpt/job 7/\"x\"%")),
        };
        let c = o.comment();
        assert_eq!(
            c,
            "cairn-lock v1 pid=41 start=123456 pidns=4026531836 dir=/var/ckpt/job%207/%22x%22%25"
        );
        assert!(!c.contains('"') && c.len() < 256);
        assert_eq!(Owner::parse(&c), Some(o.clone()));
        // Too long a path is not recorded.
        let long = Owner {
            dir: Some(PathBuf::from(format!("/{}", "d".repeat(300)))),
            ..o
        };
        assert!(long.comment().len() < 256);
        assert_eq!(Owner::parse(&long.comment()).unwrap().dir, None);
        assert_eq!(Owner::parse("someone else's table"), None);
        assert_eq!(Owner::parse("cairn-lock v1 pid=1 dir=/a"), None);
        assert_eq!(
            Owner::parse("cairn-lock v1 pid=1 start=2 pidns=3 dir=rel"),
            None
        );
    }

    #[test]
    fn nft_listings_parse() {
        let tables = "table inet filter\ntable inet cairn_12_1700000000000\ntable inet cairn_x;y\n";
        assert_eq!(parse_tables(tables), ["cairn_12_1700000000000"]);
        let listing = "table inet cairn_1_2 { # handle 7\n\tcomment \"cairn-lock v1 pid=1\"\n\tchain input { # handle 1\n";
        assert_eq!(
            parse_listing(listing),
            Some((7, Some("cairn-lock v1 pid=1".to_string())))
        );
        let bare = "table inet cairn_1_2 { # handle 9\n\tchain input { # handle 1\n";
        assert_eq!(parse_listing(bare), Some((9, None)));
        assert_eq!(state_of("cairn_1_2", None).name(), "unknown");
    }

    #[test]
    fn script_replaces_the_table_atomically() {
        let s = lock_script("cairn_1_2", &[], Some("cairn-lock v1 pid=1"));
        assert!(s.starts_with("add table inet cairn_1_2\ndelete table inet cairn_1_2\n"));
        assert!(s.contains("table inet cairn_1_2 {\n  comment \"cairn-lock v1 pid=1\"\n"));
        assert!(!lock_script("cairn_1_2", &[], None).contains("comment"));
        assert!(s.contains("hook input priority raw"));
        assert!(valid_table_name(&table_name(42)));
        assert!(!valid_table_name("x; flush ruleset"));
    }
}
