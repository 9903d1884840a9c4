//! The node agent of a job (`cairn __node-agent`, one on every node of
//! [`crate::job`]), linked to the coordinator by its stdin and stdout or
//! by an authenticated TCP connection ([`super::link`]): the same lines
//! either way.
//!
//! `dump`: the node's tree is dumped as by `cairn dump` (same options),
//! but kept frozen once its images are complete: the agent says
//! `written BYTES`, `addr IP` for each address of the node (its network
//! namespace), `conn LOCAL PEER` for each connection its network lock
//! holds, `end`, and waits for one line: `kill` (the checkpoint is
//! committed: kill the tree, keep the lock for the restore), `resume`
//! (committed, the tree runs on: unlock, thaw) or anything else or EOF
//! (abort: thaw, unlock, remove the images). Then `done FROZEN_MS`, or
//! `aborted`. A dump that fails says `failed WHY` (the dump has left the
//! tree running as before).
//!
//! `restore`: the node's tree is restored as by `cairn restore` up to the
//! hold point (`crate::pair::hold`), where the agent says `held PID` and
//! waits for `go`; then `ok PID`. Anything but `go` fails the restore,
//! which kills every task it made (`failed WHY`).

use std::net::{IpAddr, SocketAddr};

use crate::dump::Then;
use crate::error::{Error, IoContext, Result};
use crate::image::proto::Files;
use crate::image::{names, ImageDir, ImageType};
use crate::options::{DumpOptions, RestoreOptions};
use crate::sys::safefs;
use crate::{info, warn};

/// Says `line` to the coordinator (over the link, [`super::link`]).
fn say(line: &str) {
    if let Err(e) = super::link::say(line) {
        warn!("node agent: cannot write to the coordinator: {e}");
    }
}

/// The addresses of this node's interfaces (loopback left out).
fn node_addrs() -> Vec<IpAddr> {
    let Ok(list) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ifa in list {
        let Some(a) = ifa.address else { continue };
        let ip = if let Some(v4) = a.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = a.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        if !ip.is_loopback() && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// The connections (local, peer) the dump in `dir` locked.
fn locked_conns(dir: &std::path::Path) -> Result<Vec<(SocketAddr, SocketAddr)>> {
    let (d, _) = ImageDir::load(dir)?;
    let files: Files = d.read(ImageType::Files, names::FILES)?;
    let mut out = Vec::new();
    if let Some(n) = files.net_lock.as_ref() {
        for c in &n.conns {
            let l = c.local.as_ref().and_then(crate::netlock::addr_from_proto);
            let p = c.peer.as_ref().and_then(crate::netlock::addr_from_proto);
            if let (Some(l), Some(p)) = (l, p) {
                out.push((
                    SocketAddr::new(l.canonical_ip(), l.port),
                    SocketAddr::new(p.canonical_ip(), p.port),
                ));
            }
        }
    }
    Ok(out)
}

/// What the coordinator decided for a written node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Kill,
    Resume,
    Abort,
}

/// Reports the written node and waits for the coordinator's verdict.
fn report_and_wait(d: &DumpOptions, bytes: u64) -> Verdict {
    let conns = match locked_conns(&d.images_dir) {
        Ok(c) => c,
        Err(e) => {
            say(&format!("failed reading back its images: {e}"));
            return Verdict::Abort;
        }
    };
    say(&format!("written {bytes}"));
    for a in node_addrs() {
        say(&format!("addr {a}"));
    }
    for (l, p) in &conns {
        say(&format!("conn {l} {p}"));
    }
    say("end");
    match super::link::hear() {
        Ok(Some(line)) => match line.trim() {
            "kill" => Verdict::Kill,
            "resume" => Verdict::Resume,
            other => {
                info!("node agent: the coordinator said {other:?}: abort");
                Verdict::Abort
            }
        },
        _ => {
            warn!("node agent: the coordinator is gone: abort");
            Verdict::Abort
        }
    }
}

/// `cairn __node-agent dump`: see the module documentation.
pub fn dump(node: u32, o: &DumpOptions) -> Result<i32> {
    // The tree is killed or thawed as the coordinator says, so the dump
    // collects as for a tree that may run on (as live migration does), and
    // no background snapshot thaws it before the barrier.
    let mut d = o.clone();
    d.leave_running = true;
    d.freeze.background_snapshot = crate::kinds::memory::bgsnap::Mode::Off;
    let mut verdict = None;
    let r = crate::dump::dump_then(&d, &mut |stats| {
        let v = report_and_wait(&d, stats.image_bytes);
        verdict = Some(v);
        match v {
            Verdict::Kill => Then::Kill,
            Verdict::Resume | Verdict::Abort => Then::Thaw,
        }
    });
    match (r, verdict) {
        (Ok((stats, _)), Some(Verdict::Abort)) => {
            let (pfd, name) = safefs::open_parent_dir(&d.images_dir).at(&d.images_dir)?;
            let me = rustix::process::geteuid().as_raw();
            safefs::remove_dir_by_fd(&pfd, &name, Some(me)).at(&d.images_dir)?;
            info!(
                "node {node}: checkpoint aborted: tree of pid {} thawed after {:.1} ms, images \
                 removed",
                d.pid, stats.frozen_ms
            );
            say("aborted");
            Ok(0)
        }
        (Ok((stats, then)), _) => {
            info!(
                "node {node}: checkpoint committed: tree of pid {} {} after {:.1} ms frozen",
                d.pid,
                if then == Then::Kill {
                    "killed"
                } else {
                    "thawed"
                },
                stats.frozen_ms
            );
            say(&format!("done {:.1}", stats.frozen_ms));
            Ok(0)
        }
        (Err(e), _) => {
            say(&format!("failed {}", e.to_string().replace('\n', " ")));
            Err(e)
        }
    }
}

/// `cairn __node-agent restore`: see the module documentation.
pub fn restore(r: &RestoreOptions) -> Result<i32> {
    if r.pid_ns || r.detached {
        let e = Error::Usage(
            "a node of a job is restored attached and in cairn's pid namespace \
             (--pid-ns and -d are not for `job restore` yet)"
                .into(),
        );
        say(&format!("failed {e}"));
        return Err(e);
    }
    crate::pair::hold::arm_hold();
    match crate::restore::start(r) {
        Ok(Some(pid)) => {
            say(&format!("ok {pid}"));
            Ok(0)
        }
        Ok(None) => {
            let e = Error::Restore("the restore detached: no root pid to report".into());
            say(&format!("failed {e}"));
            Err(e)
        }
        Err(e) => {
            say(&format!("failed {}", e.to_string().replace('\n', " ")));
            Err(e)
        }
    }
}
