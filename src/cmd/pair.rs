//! `cairn pair`: a program run as a process pair, a primary and a held
//! backup that takes over when the primary fails ([`crate::pair`]); and
//! the hidden command of a backup's init.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::cmd::run::{JobDumpArgs, RunArgs};
use crate::pair::PairOptions;

#[derive(Args, Debug, Clone)]
pub struct PairArgs {
    /// The pair's checkpoint directory (made 0700 if missing): each
    /// checkpoint is a subdirectory `ckpt-N`; the newest chain stays.
    #[arg(short = 'D', long = "images-dir")]
    pub dir: PathBuf,
    /// A checkpoint, and a backup from it, this often: a number with ms,
    /// s, m or h (500ms, 1s, 10m); 5s if not given.
    #[arg(long, value_name = "DUR", value_parser = crate::run::parse_duration)]
    pub interval: Option<Duration>,
    /// Always holds the primary's pid (replaced at each takeover).
    #[arg(long, value_name = "P")]
    pub pidfile: Option<PathBuf>,
    /// The backup on another machine, whose `cairn pair --listen
    /// ADDR:PORT` receives every checkpoint and holds the backup; no
    /// backup is kept on this machine.
    #[arg(
        long = "backup-on",
        value_name = "ADDR:PORT",
        requires = "key",
        conflicts_with = "listen"
    )]
    pub backup_on: Option<String>,
    /// Be the backup machine of a pair whose primary's side runs
    /// `--backup-on` this address: hold a backup from its newest
    /// checkpoint, take over when the primary fails or its connection is
    /// lost (see --fence), then go on as a local pair. No CMD.
    #[arg(long, value_name = "ADDR:PORT", requires = "key")]
    pub listen: Option<String>,
    /// The key shared by `--backup-on` and `--listen` (16 to 4096 bytes,
    /// mode 0600), as for `cairn migrate`.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// With --listen: before a takeover for a lost connection, run CMD
    /// (`sh -c`, the primary's address in CAIRN_PAIR_PEER) and take over
    /// only if it exits 0 (fencing: without it a cut network makes both
    /// machines run the program).
    #[arg(long, value_name = "CMD", requires = "listen")]
    pub fence: Option<String>,
    #[command(flatten)]
    pub dump: JobDumpArgs,
    /// The program and its arguments (after --).
    #[arg(
        last = true,
        required_unless_present = "listen",
        conflicts_with = "listen",
        value_name = "CMD"
    )]
    pub cmd: Vec<OsString>,
}

impl PairArgs {
    /// The library's options: the dump flags are those `cairn run
    /// --pid-ns --incremental` would take the checkpoints with.
    pub fn options(&self) -> crate::error::Result<PairOptions> {
        let run = RunArgs {
            dir: self.dir.clone(),
            interval: self.interval,
            keep: None,
            incremental: true,
            checkpoint_signal: libc::SIGUSR1,
            pid_ns: true,
            no_control: false,
            shell_job: false,
            tcp_established: false,
            background_snapshot: Default::default(),
            dump: self.dump.clone(),
            cmd: self.cmd.clone(),
        }
        .options();
        Ok(PairOptions {
            dir: run.dir,
            interval: run.interval.unwrap_or(crate::pair::DEFAULT_INTERVAL),
            pidfile: self.pidfile.clone(),
            dump: run.dump,
            cmd: run.cmd,
            control: run.control,
            interval_set: self.interval.is_some(),
            backup_on: self.backup_on.clone().zip(self.key.clone()),
            listen: self.listen.clone().zip(self.key.clone()),
            fence: self.fence.clone(),
        })
    }
}
