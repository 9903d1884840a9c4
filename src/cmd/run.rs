//! `cairn run`: a job under cairn's supervision, checkpointed
//! periodically, on a signal and on SIGTERM, restored from its newest
//! checkpoint when started again ([`crate::run`]); and the hidden
//! commands of the init of a pid namespace (`--pid-ns`,
//! [`crate::run::pidns`]).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::options::{DumpOptions, FreezeOptions};
use crate::run::RunOptions;

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The job's checkpoint directory: each checkpoint is a subdirectory
    /// `ckpt-N` of it; the newest complete one is restored on start.
    #[arg(short = 'D', long = "images-dir")]
    pub dir: PathBuf,
    /// Take a checkpoint (leaving the job running) this often: a number
    /// with ms, s, m or h (500ms, 30s, 10m, 1h).
    #[arg(long, value_name = "DUR", value_parser = crate::run::parse_duration)]
    pub interval: Option<Duration>,
    /// Keep the newest N full chains of checkpoints (each checkpoint is a
    /// chain of its own without --incremental); older ones are removed.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: Option<u32>,
    /// Checkpoints are incremental layers on the previous one (a full one
    /// every 8 layers).
    #[arg(long)]
    pub incremental: bool,
    /// The signal that asks for one more checkpoint.
    #[arg(long = "checkpoint-signal", value_name = "SIG", default_value = "SIGUSR1", value_parser = crate::run::parse_signal)]
    pub checkpoint_signal: i32,
    /// Run the job in a pid namespace of its own (its init is cairn's),
    /// where it keeps its pids on restore whatever is taken outside.
    #[arg(long = "pid-ns")]
    pub pid_ns: bool,
    /// No control socket for libcairn (CAIRN_CONTROL_SOCKET): every
    /// libcairn call of the job returns -ENOTCONN.
    #[arg(long = "no-control")]
    pub no_control: bool,
    /// The job was started from a shell: its session and terminal are outside.
    #[arg(short = 'j', long = "shell-job")]
    pub shell_job: bool,
    /// As for dump and restore: established TCP connections.
    #[arg(long = "tcp-established")]
    pub tcp_established: bool,
    /// "auto" (default): each periodic checkpoint freezes the job only
    /// to collect its state and write-protect its memory, which is copied
    /// while it runs (with --incremental the layers are then compared by
    /// content hash); "off": every page is copied with the job frozen
    /// (and --incremental tracks writes in the kernel); "on": a checkpoint
    /// fails where the background snapshot cannot be taken.
    #[arg(long = "background-snapshot", value_name = "auto|on|off", default_value = "auto", value_parser = crate::kinds::memory::bgsnap::Mode::parse)]
    pub background_snapshot: crate::kinds::memory::bgsnap::Mode,
    #[command(flatten)]
    pub dump: JobDumpArgs,
    /// The job's command and its arguments (after --).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub cmd: Vec<OsString>,
}

/// The dump flags of the checkpoints of `cairn run` and `cairn pair`.
#[derive(Args, Debug, Clone)]
pub struct JobDumpArgs {
    /// As for dump: unix sockets whose peer is outside the program.
    #[arg(long = "ext-unix-sk")]
    pub ext_unix_sk: bool,
    /// As for dump.
    #[arg(long = "network-lock", value_name = "nftables|skip", default_value_t = crate::netlock::Method::Nftables)]
    pub network_lock: crate::netlock::Method,
    /// As for dump.
    #[arg(long = "file-contents", value_name = "all|none|SIZE", default_value_t = crate::kinds::contents::DEFAULT_LIMIT)]
    pub file_contents: crate::kinds::contents::ContentsLimit,
    /// As for dump.
    #[arg(
        long = "compress-level",
        default_value_t = crate::options::DEFAULT_COMPRESS_LEVEL,
        allow_negative_numbers = true
    )]
    pub compress_level: i32,
    /// As for dump.
    #[arg(long = "no-bpf")]
    pub no_bpf: bool,
}

impl RunArgs {
    /// The library's options for these arguments.
    pub fn options(&self) -> RunOptions {
        RunOptions {
            dir: self.dir.clone(),
            interval: self.interval,
            keep: self.keep.map(|k| k as usize),
            incremental: self.incremental,
            checkpoint_signal: self.checkpoint_signal,
            pid_ns: self.pid_ns,
            control: !self.no_control,
            dump: DumpOptions {
                freeze: FreezeOptions {
                    no_bpf: self.dump.no_bpf,
                    wait_fork: false,
                    background_snapshot: self.background_snapshot,
                },
                ..super::DumpFlags {
                    shell_job: self.shell_job,
                    ext_unix_sk: self.dump.ext_unix_sk,
                    compress_level: self.dump.compress_level,
                    file_contents: self.dump.file_contents,
                    tcp_established: self.tcp_established,
                    network_lock: self.dump.network_lock,
                }
                .options(0, true)
            },
            cmd: self.cmd.clone(),
        }
    }
}

/// `cairn __pidns-exec -- CMD` (hidden): the init of `run --pid-ns`.
#[derive(Args, Debug, Clone)]
pub struct PidnsExecArgs {
    #[arg(last = true, required = true)]
    pub cmd: Vec<OsString>,
}
