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

use std::io::Write;
use std::net::IpAddr;
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

/// The whole script that (re)creates `table` with the rules for `conns`.
pub fn lock_script(table: &str, conns: &[Conn]) -> String {
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
    let nft = nft_path().ok_or_else(|| std::io::Error::other("nft is not installed"))?;
    let mut child = Command::new(nft)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut si) = child.stdin.take() {
        si.write_all(script.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
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
    /// Locks `conns` now. `table` names the lock (see [`table_name`]).
    pub fn acquire(method: Method, table: String, conns: Vec<Conn>, pid: i32) -> Result<Lock> {
        let mut l = Lock {
            method,
            table,
            conns,
            held: false,
            pid,
        };
        if method == Method::Nftables {
            run_nft(&lock_script(&l.table, &l.conns))
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

    /// The lock described by an image, acquired again (a no-op if it is
    /// still in place; needed after a reboot or on another machine).
    pub fn from_proto(n: &NetLock, pid: i32) -> Result<Lock> {
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
        Lock::acquire(method, n.table.clone(), conns, pid)
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

fn valid_table_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
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
    fn script_replaces_the_table_atomically() {
        let s = lock_script("cairn_1_2", &[]);
        assert!(s.starts_with("add table inet cairn_1_2\ndelete table inet cairn_1_2\n"));
        assert!(s.contains("hook input priority raw"));
        assert!(valid_table_name(&table_name(42)));
        assert!(!valid_table_name("x; flush ruleset"));
    }
}
