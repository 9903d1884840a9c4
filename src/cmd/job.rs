//! `cairn job checkpoint|restore` (a job on several nodes, the
//! coordinator) and the hidden `cairn __node-agent dump|restore`
//! ([`crate::job`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::job::{AgentOptions, CheckpointOptions, RestoreJobOptions};

#[derive(Args, Debug, Clone)]
pub struct JobArgs {
    #[command(subcommand)]
    pub what: JobCmd,
}

#[derive(Subcommand, Debug, Clone)]
pub enum JobCmd {
    /// Checkpoint a job's trees on every node at once into a new
    /// DIR/ckpt-N (one image directory per node, and job.img): every
    /// node frozen until all have written, or none kept.
    Checkpoint(JobCheckpointArgs),
    /// Restore every node of a job checkpoint: all held until every node
    /// is restored, then let go together.
    Restore(JobRestoreArgs),
}

/// `K:PID`: node K's tree is the one rooted at PID (there).
fn parse_node(s: &str) -> std::result::Result<(u32, i32), String> {
    let (k, p) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: not K:PID"))?;
    let k = k.parse().map_err(|e| format!("{s:?}: node index: {e}"))?;
    let p: i32 = p.parse().map_err(|e| format!("{s:?}: pid: {e}"))?;
    if p <= 0 {
        return Err(format!("{s:?}: not a pid"));
    }
    Ok((k, p))
}

/// How the coordinator starts and reaches its node agents.
#[derive(Args, Debug, Clone)]
pub struct AgentLinkArgs {
    /// Run each node's agent as `LAUNCHER K cairn __node-agent ...` (a
    /// script around srun, ssh, or nsenter); without it, here (or, with
    /// --listen, started by you).
    #[arg(long, value_name = "LAUNCHER")]
    pub launcher: Option<PathBuf>,
    /// Listen on ADDR:PORT for the node agents, which connect and
    /// authenticate with --key instead of talking over their stdin and
    /// stdout: each is `cairn __node-agent connect --coordinator
    /// ADDR:PORT --key FILE --node K`, started by the launcher or by you
    /// (e.g. `srun`).
    #[arg(long, value_name = "ADDR:PORT", requires = "key")]
    pub listen: Option<String>,
    /// The job's key, shared with every agent (16 to 4096 bytes, mode
    /// 0600), as for `cairn migrate`.
    #[arg(long, value_name = "FILE", requires = "listen")]
    pub key: Option<PathBuf>,
    /// With --listen: how long every node's agent has to connect (else
    /// nothing is done on any node).
    #[arg(long = "connect-timeout", value_name = "DUR", default_value = "1m", value_parser = crate::run::parse_duration)]
    pub connect_timeout: Duration,
}

impl AgentLinkArgs {
    fn options(&self) -> AgentOptions {
        AgentOptions {
            launcher: self.launcher.clone(),
            listen: self.listen.clone(),
            key: self.key.clone(),
            connect_timeout: self.connect_timeout,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct JobCheckpointArgs {
    /// The job's checkpoint directory.
    #[arg(short = 'D', long = "images-dir")]
    pub dir: PathBuf,
    /// Node K's tree is rooted at PID, a pid on node K (repeat for every
    /// node).
    #[arg(long = "node", value_name = "K:PID", required = true, value_parser = parse_node)]
    pub nodes: Vec<(u32, i32)>,
    #[command(flatten)]
    pub agents: AgentLinkArgs,
    /// Let every tree run on after the checkpoint (default: kill them).
    #[arg(short = 'R', long = "leave-running")]
    pub leave_running: bool,
    /// As for dump: established TCP connections.
    #[arg(long = "tcp-established")]
    pub tcp_established: bool,
    /// How long to wait for every node at each step.
    #[arg(long, value_name = "DUR", default_value = "5m", value_parser = crate::run::parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub dump: super::run::JobDumpArgs,
}

#[derive(Args, Debug, Clone)]
pub struct JobRestoreArgs {
    /// A job checkpoint (DIR/ckpt-N), or the job's directory (its newest).
    #[arg(short = 'D', long = "images-dir")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub agents: AgentLinkArgs,
    /// As for restore: established TCP connections.
    #[arg(long = "tcp-established")]
    pub tcp_established: bool,
    /// As for restore.
    #[arg(long = "ignore-file-changes")]
    pub ignore_file_changes: bool,
    /// How long to wait for every node.
    #[arg(long, value_name = "DUR", default_value = "5m", value_parser = crate::run::parse_duration)]
    pub timeout: Duration,
}

impl JobCheckpointArgs {
    pub fn options(&self) -> CheckpointOptions {
        let mut dump = super::DumpFlags {
            shell_job: false,
            ext_unix_sk: self.dump.ext_unix_sk,
            compress_level: self.dump.compress_level,
            file_contents: self.dump.file_contents,
            tcp_established: self.tcp_established,
            network_lock: self.dump.network_lock,
        }
        .options(0, self.leave_running);
        dump.freeze.no_bpf = self.dump.no_bpf;
        CheckpointOptions {
            dir: self.dir.clone(),
            nodes: self.nodes.clone(),
            agents: self.agents.options(),
            dump,
            timeout: self.timeout,
        }
    }
}

impl JobRestoreArgs {
    pub fn options(&self) -> RestoreJobOptions {
        RestoreJobOptions {
            dir: self.dir.clone(),
            agents: self.agents.options(),
            restore: crate::options::RestoreOptions {
                images_dir: PathBuf::new(),
                detached: false,
                pidfile: None,
                shell_job: false,
                ignore_file_changes: self.ignore_file_changes,
                pid_restore: None,
                exe_dir: None,
                exe_dir_flag: "--exe-dir".into(),
                tcp_established: self.tcp_established,
                allow_foreign_images: false,
                compare: false,
                inherit_fds: Vec::new(),
                pid_ns: false,
                ext_unix_sk_lose_peercred: false,
            },
            timeout: self.timeout,
        }
    }
}

/// `cairn __node-agent` (hidden): one node of `cairn job`.
#[derive(Args, Debug, Clone)]
pub struct NodeAgentArgs {
    #[command(subcommand)]
    pub what: AgentCmd,
}

#[derive(Subcommand, Debug, Clone)]
pub enum AgentCmd {
    Dump(AgentDumpArgs),
    Restore(super::RestoreArgs),
    /// Connect to a coordinator (`cairn job ... --listen`), authenticate
    /// as node K, and do the work it sends (a `dump` or a `restore`).
    Connect(AgentConnectArgs),
}

#[derive(Args, Debug, Clone)]
pub struct AgentConnectArgs {
    /// The coordinator's --listen address.
    #[arg(long, value_name = "ADDR:PORT")]
    pub coordinator: String,
    /// The job's key (the coordinator's --key).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// This node's index in the job (its --node K).
    #[arg(long, value_name = "K")]
    pub node: u32,
    /// How long to try to connect (the coordinator may not listen yet).
    #[arg(long = "connect-timeout", value_name = "DUR", default_value = "1m", value_parser = crate::run::parse_duration)]
    pub connect_timeout: Duration,
}

/// The work a coordinator sends an agent that connected.
#[derive(clap::Parser, Debug)]
#[command(name = "__node-agent")]
struct SentWork {
    #[command(subcommand)]
    what: AgentCmd,
}

#[derive(Args, Debug, Clone)]
pub struct AgentDumpArgs {
    /// The node's index in the job (for the log).
    #[arg(long)]
    pub node: u32,
    #[command(flatten)]
    pub dump: super::DumpArgs,
}

/// Runs `cairn job ...`.
pub fn job(a: &JobArgs) -> crate::error::Result<i32> {
    match &a.what {
        JobCmd::Checkpoint(c) => crate::job::checkpoint(&c.options()).map(|p| {
            println!("{}", p.display());
            0
        }),
        JobCmd::Restore(r) => crate::job::restore(&r.options()).map(|roots| {
            for (k, pid) in roots {
                println!("{k} {pid}");
            }
            0
        }),
    }
}

/// Runs `cairn __node-agent ...`.
pub fn node_agent(a: &NodeAgentArgs) -> crate::error::Result<i32> {
    match &a.what {
        AgentCmd::Dump(d) => crate::job::agent::dump(d.node, &d.dump.options()),
        AgentCmd::Restore(r) => crate::job::agent::restore(&r.options()),
        AgentCmd::Connect(c) => {
            let args =
                crate::job::link::connect(&c.coordinator, &c.key, c.node, c.connect_timeout)?;
            let work = <SentWork as clap::Parser>::try_parse_from(
                std::iter::once(std::ffi::OsString::from("__node-agent")).chain(args),
            )
            .map_err(|e| {
                crate::error::Error::Usage(format!(
                    "node agent {}: the coordinator sent work this cairn does not take: {e}",
                    c.node
                ))
            })?;
            match &work.what {
                AgentCmd::Connect(_) => Err(crate::error::Error::Usage(format!(
                    "node agent {}: the coordinator sent `connect`",
                    c.node
                ))),
                AgentCmd::Dump(d) if d.node != c.node => Err(crate::error::Error::Usage(format!(
                    "node agent {}: the coordinator sent the work of node {}",
                    c.node, d.node
                ))),
                _ => node_agent(&NodeAgentArgs { what: work.what }),
            }
        }
    }
}
