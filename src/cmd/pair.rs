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
    /// The backup on another machine (`cairn receive`-style listener):
    /// not supported yet.
    #[arg(long = "backup-on", value_name = "ADDR:PORT", requires = "key")]
    pub backup_on: Option<String>,
    /// The key shared with `--backup-on`'s listener.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    #[command(flatten)]
    pub dump: JobDumpArgs,
    /// The program and its arguments (after --).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub cmd: Vec<OsString>,
}

impl PairArgs {
    /// The library's options: the dump flags are those `cairn run
    /// --pid-ns --incremental` would take the checkpoints with.
    pub fn options(&self) -> crate::error::Result<PairOptions> {
        if let Some(a) = &self.backup_on {
            return Err(crate::error::Error::Usage(format!(
                "--backup-on {a}: a backup on another machine is not supported yet (the \
                 backup is held on this machine)"
            )));
        }
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
        })
    }
}
