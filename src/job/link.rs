//! The link between a job's coordinator and its node agents: lines of
//! text, one a message, over one of two transports.
//!
//! - **stdio**: the agent is the coordinator's child (directly or
//!   through `--launcher`) and the lines are its stdin and stdout.
//! - **TCP** (`cairn job ... --listen ADDR:PORT --key FILE`): the agent
//!   (`cairn __node-agent connect --coordinator ADDR:PORT --key FILE
//!   --node K`, started by the launcher or by the operator, e.g. by
//!   `srun`) connects to the coordinator and authenticates as `cairn
//!   migrate` does (`crate::migrate::channel`: Noise NNpsk0 with the
//!   job's key); each line is one encrypted message. Its first message
//!   says `cairn job agent 1 node K`; the coordinator answers `ok` (or
//!   `refused WHY`: not a node of the job, or one already connected) and,
//!   once every node has connected, sends the agent its work: `run`
//!   and the agent's arguments (`dump ...` or `restore ...`, as given on
//!   the command line in the stdio case), NUL-separated. From there the
//!   two transports carry the same lines ([`crate::job`]).
//!
//! The agent's end is process-wide ([`connect`] sets it; [`say`], [`hear`]): the
//! hold point of a restore (`crate::pair::hold`) speaks through it too.

use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::migrate::channel::{Channel, ChannelReceiver, ChannelSender, Key};

/// The agent's first message (then ` node K`).
pub const HELLO: &str = "cairn job agent 1";
/// The coordinator's first message to an agent: its arguments follow.
const RUN: &[u8] = b"run\0";

/// The agent's end of the link.
pub trait Link: Send {
    /// Sends one line (without its newline).
    fn say(&mut self, line: &str) -> std::io::Result<()>;
    /// The next line (without its newline); `None` once the coordinator
    /// has closed its end.
    fn hear(&mut self) -> std::io::Result<Option<String>>;
}

/// Stdin and stdout (the default).
struct Stdio;

impl Link for Stdio {
    fn say(&mut self, line: &str) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}").and_then(|()| out.flush())
    }

    fn hear(&mut self) -> std::io::Result<Option<String>> {
        let mut line = String::new();
        match std::io::stdin().lock().read_line(&mut line)? {
            0 => Ok(None),
            _ => Ok(Some(line.trim_end_matches('\n').to_string())),
        }
    }
}

/// How long an agent waits for the coordinator's next line over TCP (it
/// waits for the verdict with its tree frozen; a coordinator gone
/// without a word is noticed by the keepalive probes, see [`connect`]).
const AGENT_WAIT: Duration = Duration::from_secs(24 * 3600);

/// An authenticated channel to the coordinator: one message a line.
struct ChannelLink(Channel);

impl Link for ChannelLink {
    fn say(&mut self, line: &str) -> std::io::Result<()> {
        self.0
            .send(line.as_bytes())
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    fn hear(&mut self) -> std::io::Result<Option<String>> {
        match self.0.recv(AGENT_WAIT) {
            Ok(m) => Ok(Some(String::from_utf8_lossy(m).into_owned())),
            Err(e) => {
                crate::info!("node agent: the link to the coordinator ended: {e}");
                Ok(None)
            }
        }
    }
}

static LINK: Mutex<Option<Box<dyn Link>>> = Mutex::new(None);

/// Makes `link` this process's link to its coordinator (else stdio).
fn set(link: Box<dyn Link>) {
    *LINK.lock().unwrap_or_else(|e| e.into_inner()) = Some(link);
}

fn with<T>(f: impl FnOnce(&mut dyn Link) -> T) -> T {
    let mut g = LINK.lock().unwrap_or_else(|e| e.into_inner());
    match g.as_mut() {
        Some(l) => f(l.as_mut()),
        None => f(&mut Stdio),
    }
}

/// Says `line` to the coordinator (or the pair supervisor).
pub fn say(line: &str) -> std::io::Result<()> {
    with(|l| l.say(line))
}

/// The coordinator's next line; `None` once it has closed its end.
pub fn hear() -> std::io::Result<Option<String>> {
    with(|l| l.hear())
}

fn link_err(addr: &str, why: impl std::fmt::Display) -> Error {
    Error::Usage(format!("node agent: coordinator {addr}: {why}"))
}

/// `cairn __node-agent connect`: connects to the coordinator at `addr`
/// (trying again until `within` has passed: the agents may start before
/// it listens), authenticates with the key in `key_file` as node `node`,
/// and waits for its work. Returns the agent's arguments (`dump ...` or
/// `restore ...`) with the link made this process's ([`say`], [`hear`]).
pub fn connect(addr: &str, key_file: &Path, node: u32, within: Duration) -> Result<Vec<OsString>> {
    let key = crate::migrate::channel::read_key(key_file)?;
    let deadline = Instant::now() + within;
    let stream = loop {
        let tried = addr
            .to_socket_addrs()
            .map_err(|e| e.to_string())
            .and_then(|mut a| a.next().ok_or_else(|| "resolves to nothing".to_string()))
            .and_then(|sa| {
                TcpStream::connect_timeout(&sa, Duration::from_secs(5)).map_err(|e| e.to_string())
            });
        match tried {
            Ok(s) => break s,
            Err(e) if Instant::now() >= deadline => {
                return Err(link_err(
                    addr,
                    format!("cannot connect within {within:?}: {e}"),
                ))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    // A coordinator that vanishes while this agent waits with its tree
    // frozen is noticed within about 25 s (a probe after 10 s idle, every
    // 5 s, `TCP_USER_TIMEOUT` ends it).
    {
        use nix::sys::socket::{setsockopt, sockopt};
        let _ = setsockopt(&stream, sockopt::TcpKeepIdle, &10);
        let _ = setsockopt(&stream, sockopt::TcpKeepInterval, &5);
    }
    let hello = format!("{HELLO} node {node}");
    let (mut ch, answer) = Channel::initiate(stream, addr, &key, hello.as_bytes())?;
    if answer != b"ok" {
        return Err(link_err(addr, String::from_utf8_lossy(&answer)));
    }
    crate::info!("node agent {node}: connected to the coordinator {addr}, waiting for its work");
    let work = match ch.recv(AGENT_WAIT) {
        Ok(m) => m.to_vec(),
        Err(e) => {
            return Err(link_err(
                addr,
                format!("ended before giving this node its work (another node did not connect?): {e}; nothing done"),
            ))
        }
    };
    let Some(args) = work.strip_prefix(RUN) else {
        return Err(link_err(addr, "its first message is not `run`"));
    };
    set(Box::new(ChannelLink(ch)));
    Ok(parse_run(args))
}

/// The arguments of a `run` message (each ends with a NUL).
fn parse_run(args: &[u8]) -> Vec<OsString> {
    let Some(args) = args.strip_suffix(&[0]) else {
        return Vec::new();
    };
    args.split(|&b| b == 0)
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect()
}

/// The coordinator's end of one agent's link: where its lines go.
pub(super) trait Sink: Send {
    fn send_line(&mut self, line: &str) -> std::io::Result<()>;
}

impl Sink for std::process::ChildStdin {
    fn send_line(&mut self, line: &str) -> std::io::Result<()> {
        writeln!(self, "{line}").and_then(|()| self.flush())
    }
}

impl Sink for ChannelSender {
    fn send_line(&mut self, line: &str) -> std::io::Result<()> {
        self.send(line.as_bytes())
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
}

/// The coordinator's side of an agent's lines: the next one, `None` at
/// its end.
pub(super) trait Source: Send + 'static {
    fn next_line(&mut self) -> Option<String>;
}

impl Source for std::io::Lines<std::io::BufReader<std::process::ChildStdout>> {
    fn next_line(&mut self) -> Option<String> {
        self.next()?.ok()
    }
}

impl Source for ChannelReceiver {
    fn next_line(&mut self) -> Option<String> {
        // The coordinator keeps its own deadlines; this thread only
        // forwards.
        match self.recv(AGENT_WAIT) {
            Ok(Some(m)) => Some(String::from_utf8_lossy(m).into_owned()),
            Ok(None) => None,
            Err(e) => {
                crate::info!("job: agent at {}: {e}", self.peer);
                None
            }
        }
    }
}

/// What a connection that completed the handshake turned out to be.
enum Arrival {
    Node(u32, Box<Channel>),
    Refused(String),
}

/// Accepts one agent per node of `nodes` on `listener` until `deadline`,
/// each authenticated with `key` (each handshake in a thread of its own,
/// so a peer that stalls holds no other up). A connection with another
/// key, or for a node not in `nodes` or already connected, is refused
/// and logged. `gone` says why a node will not connect after all (an
/// agent the coordinator started that has ended), which ends the wait.
/// Returns every node's channel, or why not every node connected.
pub(super) fn accept_agents(
    listener: &std::net::TcpListener,
    key: &std::sync::Arc<Key>,
    nodes: &[u32],
    deadline: Instant,
    mut gone: impl FnMut(&[u32]) -> Option<String>,
) -> std::result::Result<Vec<(u32, Channel)>, String> {
    use std::collections::HashSet;
    use std::sync::{mpsc, Arc};
    let local = listener
        .local_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string());
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("listen on {local}: {e}"))?;
    let wanted: Arc<HashSet<u32>> = Arc::new(nodes.iter().copied().collect());
    let claimed: Arc<Mutex<HashSet<u32>>> = Arc::default();
    let (tx, rx) = mpsc::channel();
    let mut got: Vec<(u32, Channel)> = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    while got.len() < nodes.len() {
        let connected: Vec<u32> = got.iter().map(|g| g.0).collect();
        if let Some(why) = gone(&connected) {
            return Err(why);
        }
        if Instant::now() >= deadline {
            let mut missing: Vec<u32> = nodes
                .iter()
                .copied()
                .filter(|k| !got.iter().any(|g| g.0 == *k))
                .collect();
            missing.sort();
            let missing: Vec<String> = missing.iter().map(|k| k.to_string()).collect();
            return Err(format!(
                "node(s) {} did not connect to {local} in time{}",
                missing.join(", "),
                if refused.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({} connection(s) refused: {})",
                        refused.len(),
                        refused.join("; ")
                    )
                }
            ));
        }
        match listener.accept() {
            Ok((stream, peer)) => {
                let (key, wanted, claimed, tx) =
                    (key.clone(), wanted.clone(), claimed.clone(), tx.clone());
                std::thread::spawn(move || {
                    let _ = stream.set_nonblocking(false);
                    let mut node = None;
                    let r = Channel::accept(stream, &key, |hello| {
                        let (answer, k) = claim(hello, &wanted, &claimed);
                        node = k;
                        Ok(answer.into_bytes())
                    });
                    let _ = tx.send(arrival(r, node, &claimed, &peer.to_string()));
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => crate::warn!("job: accept on {local}: {e}"),
        }
        while let Ok(a) = rx.recv_timeout(Duration::from_millis(20)) {
            match a {
                Arrival::Node(k, ch) => {
                    crate::info!("job: node {k}: agent connected from {}", ch.peer);
                    got.push((k, *ch));
                }
                Arrival::Refused(why) => {
                    crate::warn!("job: refused an agent's connection: {why}");
                    refused.push(why);
                }
            }
        }
    }
    Ok(got)
}

/// What became of one connection: a node's channel, or why not. A node
/// claimed by a hello whose handshake then failed (the answer could not
/// be sent) is released, so that its agent's next attempt is not refused
/// as a second connection of the node.
fn arrival(
    r: Result<(Channel, Vec<u8>)>,
    node: Option<u32>,
    claimed: &Mutex<std::collections::HashSet<u32>>,
    peer: &str,
) -> Arrival {
    match (r, node) {
        (Ok((ch, _)), Some(k)) => Arrival::Node(k, Box::new(ch)),
        (Ok((_, hello)), None) => Arrival::Refused(format!(
            "{peer}: {:?} is no node of the job still to connect",
            String::from_utf8_lossy(&hello)
        )),
        (Err(e), k) => {
            if let Some(k) = k {
                claimed.lock().unwrap_or_else(|e| e.into_inner()).remove(&k);
            }
            Arrival::Refused(format!("{peer}: {e}"))
        }
    }
}

/// The coordinator's answer to an agent's hello, and the node it claims
/// (`None`: refused).
fn claim(
    hello: &[u8],
    wanted: &std::collections::HashSet<u32>,
    claimed: &Mutex<std::collections::HashSet<u32>>,
) -> (String, Option<u32>) {
    let k = std::str::from_utf8(hello)
        .ok()
        .and_then(|h| h.strip_prefix(HELLO)?.strip_prefix(" node ")?.parse().ok());
    let Some(k) = k else {
        return (
            "refused: not a node agent of this cairn version".into(),
            None,
        );
    };
    if !wanted.contains(&k) {
        return (format!("refused: node {k} is not a node of the job"), None);
    }
    if !claimed.lock().unwrap_or_else(|e| e.into_inner()).insert(k) {
        return (format!("refused: node {k} is connected already"), None);
    }
    ("ok".into(), Some(k))
}

/// The message that gives an agent its work.
pub(super) fn run_message(args: &[OsString]) -> Vec<u8> {
    let mut m = RUN.to_vec();
    for a in args {
        m.extend_from_slice(a.as_bytes());
        m.push(0);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_whose_handshake_failed_is_released() {
        let wanted = [0u32, 1].into_iter().collect();
        let claimed = Mutex::default();
        let hello = |k: u32| format!("{HELLO} node {k}").into_bytes();
        assert_eq!(claim(&hello(1), &wanted, &claimed).1, Some(1));
        let failed = Err(crate::Error::Usage("handshake: connection reset".into()));
        assert!(matches!(
            arrival(failed, Some(1), &claimed, "peer"),
            Arrival::Refused(_)
        ));
        assert_eq!(claim(&hello(1), &wanted, &claimed).1, Some(1));
    }

    #[test]
    fn hello_claims_a_wanted_node_once() {
        let wanted = [0u32, 2].into_iter().collect();
        let claimed = Mutex::default();
        let hello = |k: u32| format!("{HELLO} node {k}").into_bytes();
        assert_eq!(claim(&hello(2), &wanted, &claimed), ("ok".into(), Some(2)));
        assert_eq!(claim(&hello(2), &wanted, &claimed).1, None);
        assert_eq!(claim(&hello(1), &wanted, &claimed).1, None);
        assert_eq!(
            claim(b"cairn job agent 2 node 0", &wanted, &claimed).1,
            None
        );
        assert_eq!(claim(&hello(0), &wanted, &claimed).1, Some(0));
    }

    #[test]
    fn run_message_keeps_every_argument() {
        let args: Vec<OsString> = vec!["dump".into(), "".into(), "/a b/c".into()];
        let m = run_message(&args);
        assert_eq!(parse_run(m.strip_prefix(RUN).unwrap()), args);
        assert!(parse_run(run_message(&[]).strip_prefix(RUN).unwrap()).is_empty());
    }
}
