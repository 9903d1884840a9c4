//! Jobs that span nodes (docs/HPC.md, "One job on several nodes"): one
//! checkpoint of N process trees, one per node, taken inside one barrier,
//! and their restore.
//!
//! `cairn job checkpoint` is the coordinator. It starts one node agent
//! per node (`cairn __node-agent dump ...`, [`agent`]), through a
//! launcher that runs a command on node K (`LAUNCHER K CMD...`: a script
//! around `srun --overlap -N1 -r K`, `ssh`, or, on one machine, `nsenter`
//! into the node's network namespace), and talks to each over its
//! stdin/stdout, one line a message:
//!
//! 1. Every agent dumps its node's tree as `cairn dump` does (network lock
//!    of its connections and listeners, freeze, images) into
//!    `DIR/.ckpt-N.cairn-tmp-.../node-K`, and, with the images complete
//!    and its tree still frozen, answers `written BYTES`, its node's
//!    addresses (`addr IP`) and its locked connections (`conn LOCAL
//!    PEER`), then `end`.
//! 2. **Barrier.** With every node `written`, every tree is frozen and
//!    every connection locked at both ends. The coordinator checks the
//!    connection lists against each other: a connection whose peer is an
//!    address of another node of the job must be in that node's list,
//!    reversed (else the job's trees are not what was named: refused).
//! 3. **Commit.** The coordinator writes `job.img` (the nodes, the
//!    connections between them) last, syncs it and renames the staging
//!    directory to `DIR/ckpt-N`: only then does the checkpoint exist.
//!    Then it tells every agent `kill` (the trees end, their connections
//!    stay locked for the restore) or, with `--leave-running`, `resume`
//!    (unlock, thaw); each answers `done FROZEN_MS`.
//! 4. **Abort.** An agent that fails (`failed WHY`, or its end of the
//!    pipe closes) or does not answer within `--timeout`: every other
//!    agent is told `abort`, thaws and unlocks its tree and removes its
//!    images; the staging directory goes; the trees run on as before.
//!    An agent whose coordinator goes away (EOF) aborts by itself, and a
//!    killed agent's guardian thaws its tree (`crate::guard`).
//!
//! `cairn job restore` starts one agent per node of `job.img`
//! (`cairn __node-agent restore -D .../node-K`); each restores its tree
//! up to the hold point (`crate::pair::hold`: every task in place and
//! still stopped) and says `held PID`; when every node is held, the
//! coordinator says `go` to each and the trees run, or, if any failed,
//! `abort` to the others, whose restores then kill every task they made.

pub mod agent;
pub mod link;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};
use crate::image::proto::{Job, JobConn, JobNode};
use crate::image::ImageType;
use crate::options::{DumpOptions, RestoreOptions};
use crate::sys::net::InetAddr;
use crate::sys::safefs;
use crate::{info, warn};

/// The name of the job image in a job checkpoint.
pub const JOB_IMG: &str = "job.img";

/// A node's image directory in a job checkpoint.
pub fn node_dir(k: u32) -> String {
    format!("node-{k}")
}

/// How the coordinator starts and reaches the node agents.
#[derive(Debug, Clone, Default)]
pub struct AgentOptions {
    /// `LAUNCHER K CMD...` runs CMD on node K; `None`: here, or (with
    /// `listen`) started by someone else.
    pub launcher: Option<PathBuf>,
    /// Listen on this ADDR:PORT for agents that connect ([`link`]);
    /// `None`: stdin and stdout of the agents the coordinator starts.
    pub listen: Option<String>,
    /// The job's key (with `listen`).
    pub key: Option<PathBuf>,
    /// How long every agent has to connect (with `listen`).
    pub connect_timeout: Duration,
}

/// What `cairn job checkpoint` does.
#[derive(Debug, Clone)]
pub struct CheckpointOptions {
    /// The job's checkpoint directory; the checkpoint is `DIR/ckpt-N`.
    pub dir: PathBuf,
    /// (node index, root pid of its tree).
    pub nodes: Vec<(u32, i32)>,
    pub agents: AgentOptions,
    /// The dump flags every node gets (pid and directory are per node).
    pub dump: DumpOptions,
    /// How long the coordinator waits for every node at each step.
    pub timeout: Duration,
}

/// What `cairn job restore` does.
#[derive(Debug, Clone)]
pub struct RestoreJobOptions {
    /// A job checkpoint (`DIR/ckpt-N`), or the job's directory (its
    /// newest checkpoint).
    pub dir: PathBuf,
    pub agents: AgentOptions,
    /// The restore flags every node gets (the directory is per node).
    pub restore: RestoreOptions,
    pub timeout: Duration,
}

/// A line from an agent, or the end of its output.
enum Said {
    Line(String),
    Eof,
}

/// One node's agent: the process the coordinator started for it (none
/// for an agent that connected by itself), and where its lines go.
struct Agent {
    k: u32,
    child: Option<Child>,
    to: Option<Box<dyn link::Sink>>,
}

/// The node agents of one step, each with a thread that forwards its
/// lines.
struct Agents {
    agents: Vec<Agent>,
    rx: mpsc::Receiver<(u32, Said)>,
}

/// A thread that forwards node `k`'s lines from `from` to `tx`, then its
/// end.
fn forward(k: u32, mut from: impl link::Source, tx: mpsc::Sender<(u32, Said)>) {
    std::thread::spawn(move || {
        while let Some(l) = from.next_line() {
            if tx.send((k, Said::Line(l))).is_err() {
                return;
            }
        }
        let _ = tx.send((k, Said::Eof));
    });
}

impl Agents {
    /// Starts `__node-agent ARGS(k)` on every node `k` of `nodes`: as a
    /// child of the coordinator (through the launcher, if any) linked by
    /// its stdin and stdout, or, with `--listen`, as an agent that
    /// connects (the launcher starts `__node-agent connect`, or the
    /// operator does) and is sent ARGS(k) once every node has connected.
    fn start(
        how: &AgentOptions,
        nodes: &[u32],
        args: impl Fn(u32) -> Vec<OsString>,
    ) -> Result<Agents> {
        let Some(listen) = &how.listen else {
            return Self::start_stdio(how.launcher.as_deref(), nodes, args);
        };
        let key_file = how
            .key
            .as_deref()
            .ok_or_else(|| Error::Usage("job: --listen needs --key FILE".into()))?;
        let key_file = crate::run::absolute(key_file)?;
        let key = std::sync::Arc::new(crate::migrate::channel::read_key(&key_file)?);
        let (listener, local) = crate::migrate::channel::listen(listen)?;
        let mut agents = Agents {
            agents: Vec::new(),
            rx: mpsc::channel().1,
        };
        if let Some(l) = &how.launcher {
            let sa: SocketAddr = local
                .parse()
                .map_err(|e| Error::Usage(format!("--listen {listen}: {e}")))?;
            if sa.ip().is_unspecified() {
                return Err(Error::Usage(format!(
                    "--listen {listen}: the agents the launcher starts connect to this address: \
                     give one the nodes can reach, not {}",
                    sa.ip()
                )));
            }
            for &k in nodes {
                let mut argv: Vec<OsString> = vec!["connect".into()];
                argv.extend(["--coordinator".into(), local.clone().into()]);
                argv.extend(["--key".into(), key_file.clone().into()]);
                argv.extend(["--node".into(), k.to_string().into()]);
                let child = Self::launch(Some(l), k, argv, false)?;
                agents.agents.push(Agent {
                    k,
                    child: Some(child),
                    to: None,
                });
            }
        }
        info!(
            "job: waiting for the agents of {} node(s) on {local} (for {:?})",
            nodes.len(),
            how.connect_timeout
        );
        let deadline = Instant::now() + how.connect_timeout;
        // A launched agent that ends before it has connected will not.
        let gone = |connected: &[u32]| {
            agents.agents.iter_mut().find_map(|a| {
                let st = a.child.as_mut()?.try_wait().ok()??;
                (!connected.contains(&a.k)).then(|| {
                    format!(
                        "node {}: its agent ended ({st}) before it connected (see its log)",
                        a.k
                    )
                })
            })
        };
        let chans = match link::accept_agents(&listener, &key, nodes, deadline, gone) {
            Ok(c) => c,
            Err(why) => {
                // The agents that connected read the end of their link
                // and end without touching their trees.
                agents.finish(Duration::from_secs(5));
                return Err(Error::Usage(format!(
                    "job: {why} (--connect-timeout {:?}): no node was given its work, nothing \
                     was done",
                    how.connect_timeout
                )));
            }
        };
        drop(listener);
        let (tx, rx) = mpsc::channel();
        agents.rx = rx;
        for (k, mut ch) in chans {
            ch.send(&link::run_message(&args(k)))?;
            let (to, from) = ch.split()?;
            forward(k, from, tx.clone());
            match agents.agents.iter_mut().find(|a| a.k == k) {
                Some(a) => a.to = Some(Box::new(to)),
                None => agents.agents.push(Agent {
                    k,
                    child: None,
                    to: Some(Box::new(to)),
                }),
            }
        }
        Ok(agents)
    }

    /// Starts `[LAUNCHER K] cairn __node-agent [-v...] ARGV`, its stdin
    /// and stdout piped (`piped`) or not used.
    fn launch(launcher: Option<&Path>, k: u32, args: Vec<OsString>, piped: bool) -> Result<Child> {
        let exe = crate::run::cairn_exe()?;
        let mut argv: Vec<OsString> = vec![exe.clone().into(), "__node-agent".into()];
        argv.extend(crate::run::verbosity_args(0));
        argv.extend(args);
        let mut cmd = match launcher {
            Some(l) => {
                let mut c = Command::new(l);
                c.arg(k.to_string()).args(&argv);
                c
            }
            None => {
                let mut c = Command::new(&argv[0]);
                c.args(&argv[1..]);
                c
            }
        };
        let io = || if piped { Stdio::piped() } else { Stdio::null() };
        let child = cmd.stdin(io()).stdout(io()).spawn().map_err(|e| {
            Error::Usage(format!(
                "job: cannot start the agent of node {k} ({}): {e}",
                launcher.map_or(exe.display(), |l| l.display())
            ))
        })?;
        info!(
            "job: node {k}: agent started (pid {}{})",
            child.id(),
            launcher.map_or(String::new(), |l| format!(", through {}", l.display()))
        );
        Ok(child)
    }

    /// Starts the agents as children linked by their stdin and stdout.
    fn start_stdio(
        launcher: Option<&Path>,
        nodes: &[u32],
        args: impl Fn(u32) -> Vec<OsString>,
    ) -> Result<Agents> {
        let (tx, rx) = mpsc::channel();
        let mut agents = Vec::new();
        for &k in nodes {
            let mut child = Self::launch(launcher, k, args(k), true)?;
            let to = child
                .stdin
                .take()
                .map(|s| Box::new(s) as Box<dyn link::Sink>);
            let out = child.stdout.take().expect("piped stdout");
            forward(k, BufReader::new(out).lines(), tx.clone());
            agents.push(Agent {
                k,
                child: Some(child),
                to,
            });
        }
        Ok(Agents { agents, rx })
    }

    /// Sends `line` to node `k`'s agent (an agent that is gone is no
    /// error here: its end says so).
    fn tell(&mut self, k: u32, line: &str) {
        if let Some(to) = self
            .agents
            .iter_mut()
            .find(|a| a.k == k)
            .and_then(|a| a.to.as_mut())
        {
            if let Err(e) = to.send_line(line) {
                info!("job: node {k}: cannot tell its agent {line:?}: {e}");
            }
        }
    }

    fn tell_all(&mut self, line: &str) {
        let ks: Vec<u32> = self.agents.iter().map(|a| a.k).collect();
        for k in ks {
            self.tell(k, line);
        }
    }

    /// The next line of any agent until `deadline`.
    fn next(&self, deadline: Instant) -> Option<(u32, Said)> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.rx.recv_timeout(left).ok()
    }

    /// Closes every agent's link and waits for every agent the
    /// coordinator started to end (each ends once it has thawed or killed
    /// its tree; one still running after `grace` is killed, and its
    /// guardian puts its tree back).
    fn finish(self, grace: Duration) -> Vec<(u32, Option<i32>)> {
        let deadline = Instant::now() + grace;
        let mut out = Vec::new();
        let mut agents = self.agents;
        for a in &mut agents {
            a.to = None;
        }
        for a in agents {
            let (k, Some(mut child)) = (a.k, a.child) else {
                continue;
            };
            let st = loop {
                match child.try_wait() {
                    Ok(Some(st)) => break st.code(),
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        warn!(
                            "job: node {k}: agent pid {} did not end: killed",
                            child.id()
                        );
                        let _ = child.kill();
                        break child.wait().ok().and_then(|s| s.code());
                    }
                }
            };
            out.push((k, st));
        }
        out
    }
}

/// What a node's agent reported at the barrier.
#[derive(Debug, Default, Clone)]
struct Written {
    bytes: u64,
    addrs: Vec<IpAddr>,
    conns: Vec<(SocketAddr, SocketAddr)>,
}

/// Parses an agent's `written` report lines (after `written BYTES`, up to
/// `end`) into `w`; false for a line that is none of them.
fn parse_report(line: &str, w: &mut Written) -> bool {
    let mut it = line.split_whitespace();
    match (it.next(), it.next(), it.next()) {
        (Some("addr"), Some(ip), None) => ip.parse().map(|ip| w.addrs.push(ip)).is_ok(),
        (Some("conn"), Some(l), Some(p)) => match (l.parse(), p.parse()) {
            (Ok(l), Ok(p)) => {
                w.conns.push((l, p));
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// The barrier's check: every connection whose peer is an address of
/// another node must be held, reversed, by some other node. Returns the
/// connections between nodes, or why the job's trees are not one job.
fn match_connections(nodes: &[(u32, Written)]) -> std::result::Result<Vec<JobConn>, String> {
    let mut out = Vec::new();
    let mut outside = 0;
    for (k, w) in nodes {
        for (l, p) in &w.conns {
            let other = nodes
                .iter()
                .find(|(j, wj)| j != k && wj.conns.iter().any(|c| c == &(*p, *l)));
            if let Some((j, _)) = other {
                let mut c = JobConn::new();
                c.node = *k;
                c.peer_node = *j;
                c.local = Some(crate::netlock::addr_to_proto(&InetAddr::new(
                    l.ip(),
                    l.port(),
                )))
                .into();
                c.peer = Some(crate::netlock::addr_to_proto(&InetAddr::new(
                    p.ip(),
                    p.port(),
                )))
                .into();
                out.push(c);
                continue;
            }
            let mine = p.ip().is_loopback() || w.addrs.contains(&p.ip());
            if let Some((j, _)) = nodes
                .iter()
                .find(|(j, wj)| j != k && !mine && wj.addrs.contains(&p.ip()))
            {
                return Err(format!(
                    "node {k}: TCP connection {l} -> {p}: {p} is an address of node {j}, but \
                     node {j}'s tree does not hold the other end (a process outside the job \
                     there, or a node not named with --node)"
                ));
            }
            outside += 1;
        }
    }
    if outside > 0 {
        info!(
            "job: {outside} connection(s) with a peer outside the job's nodes (or within one \
             node): checkpointed as `cairn dump --tcp-established` does"
        );
    }
    Ok(out)
}

/// Unix time now, in milliseconds.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The staging directory of one job checkpoint (`DIR/.ckpt-N.cairn-tmp-
/// PID-RANDOM`, 0700), removed with the node directories in it unless
/// committed.
struct JobStaging {
    parent: OwnedFd,
    name: OsString,
    path: PathBuf,
    fd: OwnedFd,
    committed: bool,
}

impl JobStaging {
    fn begin(dir: &Path, parent: OwnedFd, final_name: &str) -> Result<JobStaging> {
        let name: OsString = format!(
            ".{final_name}.cairn-tmp-{}-{}",
            std::process::id(),
            safefs::random_hex().at(dir)?
        )
        .into();
        let path = dir.join(&name);
        let fd = safefs::mkdir_private(&parent, &name).at(&path)?;
        Ok(JobStaging {
            parent,
            name,
            path,
            fd,
            committed: false,
        })
    }

    /// Writes job.img last, syncs, and renames the staging directory to
    /// `final_name` (never over an existing one).
    fn commit(&mut self, job: &Job, final_name: &str, dir: &Path) -> Result<()> {
        let bytes = crate::image::encode_image(ImageType::Job, job)?;
        let img = self.path.join(JOB_IMG);
        let mut f = safefs::create_excl(&self.fd, OsStr::new(JOB_IMG), 0o600).at(&img)?;
        f.write_all(&bytes).at(&img)?;
        safefs::sync(f.as_fd()).at(&img)?;
        safefs::sync(&self.fd).at(&self.path)?;
        let target = dir.join(final_name);
        rustix::fs::renameat_with(
            &self.parent,
            &self.name,
            &self.parent,
            final_name,
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .map_err(|e| Error::io(&target, e.into()))?;
        self.committed = true;
        safefs::sync(&self.parent).at(dir)?;
        Ok(())
    }
}

impl Drop for JobStaging {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let me = rustix::process::geteuid().as_raw();
        for (n, t) in safefs::list(&self.fd).unwrap_or_default() {
            if t == Some(rustix::fs::FileType::Directory) {
                if let Err(e) = safefs::remove_dir_by_fd(&self.fd, &n, Some(me)) {
                    warn!("{}: {e}", self.path.join(&n).display());
                }
            }
        }
        match safefs::remove_dir_by_fd(&self.parent, &self.name, Some(me)) {
            Ok(()) => info!("job: staging directory {} removed", self.path.display()),
            Err(e) => warn!("{}: {e}", self.path.display()),
        }
    }
}

/// `cairn job checkpoint`: see the module documentation. Returns the
/// checkpoint's directory.
pub fn checkpoint(o: &CheckpointOptions) -> Result<PathBuf> {
    if o.nodes.is_empty() {
        return Err(Error::Usage("job checkpoint: no --node".into()));
    }
    let mut seen = std::collections::HashSet::new();
    for (k, _) in &o.nodes {
        if !seen.insert(*k) {
            return Err(Error::Usage(format!(
                "job checkpoint: node {k} named twice"
            )));
        }
    }
    let (dir, dfd) = crate::run::open_dir(&o.dir, false)?;
    let name = crate::run::ckpt_name(crate::run::next_seq(dfd.as_fd()));
    let parent = safefs::open_dir(&dir).at(&dir)?;
    let mut staging = JobStaging::begin(&dir, parent, &name)?;
    let t0 = Instant::now();
    let ks: Vec<u32> = o.nodes.iter().map(|n| n.0).collect();
    let pids: HashMap<u32, i32> = o.nodes.iter().copied().collect();
    let work = staging.path.clone();
    let mut agents = Agents::start(&o.agents, &ks, |k| {
        let mut d = o.dump.clone();
        d.pid = pids[&k];
        d.images_dir = work.join(node_dir(k));
        let mut a: Vec<OsString> = crate::run::dump_argv(&d);
        a.insert(1, "--node".into());
        a.insert(2, k.to_string().into());
        a
    })
    .map_err(|e| {
        Error::Usage(format!(
            "job checkpoint aborted: {e}; every node's tree runs on as before and no checkpoint \
             was made"
        ))
    })?;
    info!(
        "job: checkpoint {name} of {} nodes: every node dumps, frozen until all have written",
        ks.len()
    );
    // Step 1: every node written (or one failed).
    let deadline = Instant::now() + o.timeout;
    let mut written: HashMap<u32, Written> = HashMap::new();
    let mut open: HashMap<u32, Written> = HashMap::new();
    let mut failure: Option<String> = None;
    let mut ended = 0;
    while written.len() < ks.len() && failure.is_none() {
        let Some((k, said)) = agents.next(deadline) else {
            let missing: Vec<String> = ks
                .iter()
                .filter(|k| !written.contains_key(k))
                .map(|k| k.to_string())
                .collect();
            failure = Some(format!(
                "node(s) {} did not write their images within {:?}",
                missing.join(", "),
                o.timeout
            ));
            break;
        };
        match said {
            Said::Eof => {
                ended += 1;
                failure = Some(format!("node {k}: its agent ended before writing"))
            }
            Said::Line(l) => {
                if let Some(why) = l.strip_prefix("failed ") {
                    failure = Some(format!("node {k}: {why}"));
                } else if let Some(b) = l.strip_prefix("written ") {
                    open.insert(
                        k,
                        Written {
                            bytes: b.trim().parse().unwrap_or(0),
                            ..Default::default()
                        },
                    );
                } else if l == "end" {
                    match open.remove(&k) {
                        Some(w) => {
                            info!(
                                "job: node {k}: images written ({} bytes, {} connections), frozen",
                                w.bytes,
                                w.conns.len()
                            );
                            written.insert(k, w);
                        }
                        None => failure = Some(format!("node {k}: agent said end before written")),
                    }
                } else if let Some(w) = open.get_mut(&k) {
                    if !parse_report(&l, w) {
                        failure = Some(format!("node {k}: agent said {l:?}"));
                    }
                } else {
                    failure = Some(format!("node {k}: agent said {l:?}"));
                }
            }
        }
    }
    // Step 2: the barrier's check.
    let mut nodes: Vec<(u32, Written)> = written.into_iter().collect();
    nodes.sort_by_key(|n| n.0);
    let conns = match failure {
        Some(f) => Err(f),
        None => match_connections(&nodes),
    };
    let conns = match conns {
        Ok(c) => c,
        Err(why) => {
            warn!("job: checkpoint {name} aborted: {why}; every node thaws its tree");
            agents.tell_all("abort");
            drain(&agents, ended, Instant::now() + o.timeout);
            agents.finish(Duration::from_secs(30));
            drop(staging);
            return Err(Error::Usage(format!(
                "job checkpoint aborted: {why}; every node's tree runs on as before and no \
                 checkpoint was made"
            )));
        }
    };
    // Step 3: commit.
    let mut job = Job::new();
    for (k, w) in &nodes {
        let mut n = JobNode::new();
        n.index = *k;
        n.dir = node_dir(*k);
        n.root_pid = pids[k];
        n.addrs = w.addrs.iter().map(|a| a.to_string()).collect();
        n.image_bytes = w.bytes;
        job.nodes.push(n);
    }
    job.conns = conns;
    job.leave_running = o.dump.leave_running;
    job.committed_ms = now_ms();
    if let Err(e) = staging.commit(&job, &name, &dir) {
        warn!("job: checkpoint {name} aborted: {e}; every node thaws its tree");
        agents.tell_all("abort");
        drain(&agents, 0, Instant::now() + o.timeout);
        agents.finish(Duration::from_secs(30));
        drop(staging);
        return Err(e);
    }
    let barrier = t0.elapsed();
    agents.tell_all(if o.dump.leave_running {
        "resume"
    } else {
        "kill"
    });
    let done = drain(&agents, 0, Instant::now() + o.timeout);
    for (k, st) in agents.finish(Duration::from_secs(30)) {
        if st != Some(0) {
            warn!("job: node {k}: agent exited {st:?} after the commit (its tree: see its log)");
        }
    }
    let ckpt = dir.join(&name);
    crate::log::write(
        0,
        format_args!(
            "job: checkpoint {} complete: {} nodes, {} bytes, {} connections between nodes, \
             committed {:.1} ms after the start; frozen ms per node: {}",
            ckpt.display(),
            job.nodes.len(),
            job.nodes.iter().map(|n| n.image_bytes).sum::<u64>(),
            job.conns.len() / 2,
            barrier.as_secs_f64() * 1e3,
            done.iter()
                .map(|(k, ms)| format!("{k}={ms}"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    );
    Ok(ckpt)
}

/// Reads the agents' last lines until each has ended (`ended` of them
/// already had) or `deadline`: (node, what its `done` said).
fn drain(agents: &Agents, mut ended: usize, deadline: Instant) -> Vec<(u32, String)> {
    let mut done = Vec::new();
    while ended < agents.agents.len() {
        let Some((k, said)) = agents.next(deadline) else {
            break;
        };
        match said {
            Said::Eof => ended += 1,
            Said::Line(l) => {
                if let Some(ms) = l.strip_prefix("done ") {
                    done.push((k, ms.to_string()));
                } else if let Some(why) = l.strip_prefix("failed ") {
                    warn!("job: node {k}: {why}");
                } else {
                    info!("job: node {k}: {l}");
                }
            }
        }
    }
    done.sort();
    done
}

/// Reads and checks `job.img` of the job checkpoint `dir`.
pub fn load(dir: &Path) -> Result<Job> {
    let dfd = safefs::open_dir(dir).at(dir)?;
    let img = dir.join(JOB_IMG);
    let (mut f, st) = safefs::open_regular(&dfd, JOB_IMG).at(&img)?;
    crate::image::check_trust(&st, &img, "job image")?;
    if st.st_size as u64 > crate::image::budget::kind_limit(ImageType::Job) {
        return Err(Error::image(&img, "larger than a job image can be"));
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut bytes).at(&img)?;
    let job: Job = crate::image::decode_image(ImageType::Job, &bytes, &img)?;
    let mut seen = std::collections::HashSet::new();
    for n in &job.nodes {
        if !seen.insert(n.index) || n.dir != node_dir(n.index) {
            return Err(Error::image(
                &img,
                format!("node {}: bad or repeated entry (dir {:?})", n.index, n.dir),
            ));
        }
    }
    if job.nodes.is_empty() {
        return Err(Error::image(&img, "no nodes"));
    }
    Ok(job)
}

/// `dir` if it is a job checkpoint, else the newest `ckpt-N` in it that
/// is one.
fn find_checkpoint(dir: &Path) -> Result<PathBuf> {
    if dir.join(JOB_IMG).exists() {
        return Ok(dir.to_path_buf());
    }
    let fd = safefs::open_dir(dir).at(dir)?;
    let mut best: Option<(u64, OsString)> = None;
    for (n, t) in safefs::list(&fd).at(dir)? {
        let Some(seq) = crate::run::ckpt_seq(&n) else {
            continue;
        };
        if t == Some(rustix::fs::FileType::Directory)
            && dir.join(&n).join(JOB_IMG).exists()
            && best.as_ref().is_none_or(|b| b.0 < seq)
        {
            best = Some((seq, n));
        }
    }
    best.map(|b| dir.join(b.1)).ok_or_else(|| {
        Error::Usage(format!(
            "{}: no job checkpoint (a ckpt-N with {JOB_IMG})",
            dir.display()
        ))
    })
}

/// `cairn job restore`: see the module documentation. Returns the root
/// pid of every node's tree.
pub fn restore(o: &RestoreJobOptions) -> Result<Vec<(u32, i32)>> {
    let ckpt = find_checkpoint(&crate::run::absolute(&o.dir)?)?;
    let job = load(&ckpt)?;
    let ks: Vec<u32> = job.nodes.iter().map(|n| n.index).collect();
    info!(
        "job: restoring {} ({} nodes, {} connections between them)",
        ckpt.display(),
        ks.len(),
        job.conns.len() / 2
    );
    let mut agents = Agents::start(&o.agents, &ks, |k| {
        let mut r = o.restore.clone();
        r.images_dir = ckpt.join(node_dir(k));
        crate::run::restore_argv(&r)
    })?;
    let deadline = Instant::now() + o.timeout;
    let mut held: HashMap<u32, i32> = HashMap::new();
    let mut failure = None;
    let mut ended = 0;
    while held.len() < ks.len() && failure.is_none() {
        let Some((k, said)) = agents.next(deadline) else {
            failure = Some(format!(
                "not every node was restored within {:?}",
                o.timeout
            ));
            break;
        };
        match said {
            Said::Eof => {
                ended += 1;
                failure = Some(format!("node {k}: its restore failed (see its log)"))
            }
            Said::Line(l) => match l.strip_prefix(crate::pair::hold::HELD) {
                Some(p) => match p.trim().parse() {
                    Ok(pid) => {
                        info!("job: node {k}: tree restored and held (root pid {pid})");
                        held.insert(k, pid);
                    }
                    Err(_) => failure = Some(format!("node {k}: agent said {l:?}")),
                },
                None => match l.strip_prefix("failed ") {
                    Some(why) => failure = Some(format!("node {k}: {why}")),
                    None => info!("job: node {k}: {l}"),
                },
            },
        }
    }
    if let Some(why) = failure {
        agents.tell_all("abort");
        drain(&agents, ended, Instant::now() + o.timeout);
        agents.finish(Duration::from_secs(30));
        return Err(Error::Restore(format!(
            "job restore failed: {why}; every node's restored processes are killed"
        )));
    }
    agents.tell_all(crate::pair::hold::GO);
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    let deadline = Instant::now() + o.timeout;
    let mut ended = 0;
    while ended < ks.len() {
        let Some((k, said)) = agents.next(deadline) else {
            break;
        };
        match said {
            Said::Eof => ended += 1,
            Said::Line(l) => match l.strip_prefix("ok ") {
                Some(p) => ok.push((k, p.trim().parse().unwrap_or(0))),
                None => match l.strip_prefix("failed ") {
                    Some(why) => failed.push(format!("node {k}: {why}")),
                    None => info!("job: node {k}: {l}"),
                },
            },
        }
    }
    agents.finish(Duration::from_secs(30));
    if !failed.is_empty() || ok.len() != ks.len() {
        return Err(Error::Restore(format!(
            "job restore: released, but not every node reported its tree running: {}",
            if failed.is_empty() {
                "an agent ended without a word".to_string()
            } else {
                failed.join("; ")
            }
        )));
    }
    ok.sort();
    crate::log::write(
        0,
        format_args!(
            "job: {} restored: {}",
            ckpt.display(),
            ok.iter()
                .map(|(k, p)| format!("node {k} root pid {p}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(addrs: &[&str], conns: &[(&str, &str)]) -> Written {
        Written {
            bytes: 0,
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            conns: conns
                .iter()
                .map(|(l, p)| (l.parse().unwrap(), p.parse().unwrap()))
                .collect(),
        }
    }

    #[test]
    fn connections_between_nodes_match_both_ends() {
        let a = w(&["10.0.0.1"], &[("10.0.0.1:1024", "10.0.0.2:40000")]);
        let b = w(&["10.0.0.2"], &[("10.0.0.2:40000", "10.0.0.1:1024")]);
        let c = match_connections(&[(0, a), (1, b)]).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].node, c[0].peer_node), (0, 1));
    }

    #[test]
    fn a_missing_end_on_a_job_node_is_refused_outside_is_not() {
        let a = w(
            &["10.0.0.1"],
            &[
                ("10.0.0.1:1024", "10.0.0.2:40000"),
                ("10.0.0.1:5000", "192.0.2.9:80"),
            ],
        );
        let b = w(&["10.0.0.2"], &[]);
        let e = match_connections(&[(0, a.clone()), (1, b)]).unwrap_err();
        assert!(e.contains("node 0") && e.contains("node 1"), "{e}");
        let b = w(&["10.0.0.2"], &[("10.0.0.2:40000", "10.0.0.1:1024")]);
        assert_eq!(match_connections(&[(0, a), (1, b)]).unwrap().len(), 2);
    }

    #[test]
    fn reports_parse() {
        let mut r = Written::default();
        assert!(parse_report("addr 10.0.0.1", &mut r));
        assert!(parse_report("conn 10.0.0.1:1 [::1]:2", &mut r));
        assert!(!parse_report("conn 10.0.0.1:1", &mut r));
        assert!(!parse_report("bogus", &mut r));
        assert_eq!((r.addrs.len(), r.conns.len()), (1, 1));
    }
}
