//! Network namespaces for tests that need two "machines" (migration):
//! [`Net`], two namespaces joined by a veth pair, and spawning inside one
//! of them ([`in_netns`], [`Net::start_workload`], [`Net::spawn`]).
//!
//! A process is put in a namespace by the thread that forks it: a scoped
//! thread enters the namespace (setns(2) of a network namespace is per
//! thread) and spawns there, so the workload is started exactly as
//! [`Workload::start`] does (its own session, readiness by pidfile),
//! with no second pre_exec block.

use std::fs;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::{wait_timeout, Workload};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs `f` on a thread inside the network namespace `/run/netns/NS`;
/// what it spawns lives there. A panic in `f` is the caller's.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            let fd = fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns {path}: {e}"));
            f()
        });
        match h.join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    })
}

/// Waits up to `timeout` for the workload (our child) to exit.
pub fn wait_exit(w: &mut Workload, timeout: Duration) -> Option<ExitStatus> {
    wait_timeout(&mut w.child, timeout)
}

/// Two network namespaces joined by a veth pair: A 10.201.N.1, B
/// 10.201.N.2. Dropping it deletes both (and so the veth).
pub struct Net {
    pub a: String,
    pub b: String,
    pub addr_b: String,
}

fn ip(args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ip")
}

fn ip_ok(args: &[&str]) {
    let out = ip(args);
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Net {
    /// `rate`: the veth's bandwidth each way (tc tbf), e.g. "400mbit".
    pub fn new(rate: &str) -> Net {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{}-{n}", std::process::id());
        let net = Net {
            a: format!("cairnmigA-{tag}"),
            b: format!("cairnmigB-{tag}"),
            addr_b: format!("10.201.{}.2", n % 250),
        };
        ip_ok(&["netns", "add", &net.a]);
        ip_ok(&["netns", "add", &net.b]);
        let (va, vb) = (
            format!("cmA{n}x{}", std::process::id() % 10000),
            format!("cmB{n}x{}", std::process::id() % 10000),
        );
        ip_ok(&[
            "link", "add", &va, "netns", &net.a, "type", "veth", "peer", "name", &vb, "netns",
            &net.b,
        ]);
        for (ns, dev, host) in [(&net.a, &va, 1), (&net.b, &vb, 2)] {
            let addr = format!("10.201.{}.{host}/24", n % 250);
            ip_ok(&["-n", ns, "addr", "add", &addr, "dev", dev]);
            ip_ok(&["-n", ns, "link", "set", dev, "up"]);
            ip_ok(&["-n", ns, "link", "set", "lo", "up"]);
            let tc = Command::new("ip")
                .args([
                    "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf",
                ])
                .args(["rate", rate, "burst", "256kb", "latency", "400ms"])
                .stdin(Stdio::null())
                .output()
                .expect("run tc");
            assert!(
                tc.status.success(),
                "tc: {}",
                String::from_utf8_lossy(&tc.stderr)
            );
        }
        net
    }

    /// nsenter's option for namespace `ns`.
    pub fn ns_path(ns: &str) -> String {
        format!("--net=/run/netns/{ns}")
    }

    /// The workload NAME started as [`Workload::start`] does, in
    /// namespace A.
    pub fn start_workload(&self, name: &str, args: &[&str]) -> Workload {
        in_netns(&self.a, || Workload::start(name, args))
    }

    /// Spawns `cmd` in namespace `ns`.
    pub fn spawn(ns: &str, cmd: &mut Command) -> Child {
        in_netns(ns, || cmd.spawn().expect("spawn in the namespace"))
    }

    /// Cuts the link: the veth pair goes (deleting one end deletes both).
    pub fn cut(&self) {
        let out = ip(&["-n", &self.a, "link", "show", "type", "veth"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let dev = text
            .lines()
            .find_map(|l| l.split(": ").nth(1))
            .and_then(|d| d.split('@').next())
            .expect("the veth in namespace A")
            .to_string();
        ip_ok(&["-n", &self.a, "link", "del", &dev]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.a]);
        let _ = ip(&["netns", "del", &self.b]);
    }
}
