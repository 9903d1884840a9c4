//! `cairn migrate` and `cairn receive`: the command-line side of live
//! migration ([`crate::migrate`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::error::Result;
use crate::migrate::receiver::ReceiveOptions;
use crate::migrate::source::MigrateOptions;
use crate::options::{DumpOptions, IncrOptions};

#[derive(Args, Debug, Clone)]
pub struct MigrateArgs {
    /// Root of the process tree to move.
    #[arg(short = 't', long = "tree")]
    pub pid: i32,
    /// The receiver (`cairn receive --listen`): ADDR:PORT.
    #[arg(long = "to", value_name = "ADDR:PORT")]
    pub to: String,
    /// The pre-shared key: a private regular file (mode 0600 or
    /// stricter, owned by you or root) of 16 to 4096 bytes, the same on
    /// both machines, e.g. `head -c 32 /dev/urandom`.
    #[arg(long = "key", value_name = "FILE")]
    pub key: PathBuf,
    /// Post-copy: one pre-copy round that sends no page, then the final
    /// dump; the destination starts the tree at once and its memory
    /// follows (on fault first). Needs `receive --lazy-ok`.
    #[arg(long = "lazy")]
    pub lazy: bool,
    /// Pre-copy rounds go on until what is left is estimated to take no
    /// longer than this to send (ms, s: "300ms", "1s").
    #[arg(long = "max-downtime", value_name = "TIME", default_value = "300ms", value_parser = parse_time)]
    pub max_downtime: Duration,
    /// At most this many pre-copy rounds; then the final dump follows
    /// whatever is left (said in the log).
    #[arg(long = "max-rounds", default_value_t = 8)]
    pub max_rounds: u32,
    /// Move established TCP connections (the address must move too).
    #[arg(long = "tcp-established")]
    pub tcp_established: bool,
    /// On failure the source tree runs on: always so (accepted for
    /// compatibility; see `cairn migrate` exit codes in the README).
    #[arg(long = "leave-running-on-failure")]
    pub leave_running_on_failure: bool,
    /// The tree was started from a shell: its session and terminal are outside.
    #[arg(short = 'j', long = "shell-job")]
    pub shell_job: bool,
    /// Allow unix sockets whose peer is outside the tree.
    #[arg(long = "ext-unix-sk")]
    pub ext_unix_sk: bool,
    /// Compression level for page data (zstd; negative is faster).
    #[arg(
        long = "compress-level",
        default_value_t = crate::options::DEFAULT_COMPRESS_LEVEL,
        allow_negative_numbers = true
    )]
    pub compress_level: i32,
    /// Keep the contents of open regular files up to this size each.
    #[arg(long = "file-contents", value_name = "all|none|SIZE", default_value_t = crate::kinds::contents::DEFAULT_LIMIT)]
    pub file_contents: crate::kinds::contents::ContentsLimit,
    /// How established connections are kept from the network meanwhile.
    #[arg(long = "network-lock", value_name = "nftables|skip", default_value_t = crate::netlock::Method::Nftables)]
    pub network_lock: crate::netlock::Method,
    /// Force a dirty-tracking mechanism: soft-dirty, uffd-wp or hash.
    #[arg(long = "dirty-tracking", hide = true)]
    pub dirty_tracking: Option<String>,
    #[command(flatten)]
    pub freeze: super::FreezeArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ReceiveArgs {
    /// Where to listen: ADDR:PORT.
    #[arg(long = "listen", value_name = "ADDR:PORT")]
    pub listen: String,
    /// The pre-shared key (see `cairn migrate --key`).
    #[arg(long = "key", value_name = "FILE")]
    pub key: PathBuf,
    /// Exit after one migration: 0 once its tree runs here.
    #[arg(long = "once")]
    pub once: bool,
    /// Write the restored root pid to this file once it runs.
    #[arg(long = "pidfile")]
    pub pidfile: Option<PathBuf>,
    /// Keep the received layers here (numbered subdirectories); default:
    /// a private temporary directory, removed afterwards.
    #[arg(short = 'D', long = "images-dir")]
    pub images_dir: Option<PathBuf>,
    /// Accept post-copy migrations (`migrate --lazy`): the tree runs here
    /// before its memory arrived (the pidfile is written then) and is
    /// killed if the source fails before every page is here.
    #[arg(long = "lazy-ok")]
    pub lazy_ok: bool,
}

/// "300ms", "2s", "1.5s", "250" (ms).
pub fn parse_time(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        (s, 1e-3)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v * scale < 1e6 => {
            Ok(Duration::from_secs_f64(v * scale))
        }
        _ => Err(format!("{s:?}: a time such as 300ms or 1s")),
    }
}

pub fn migrate(a: &MigrateArgs) -> Result<i32> {
    let opts = MigrateOptions {
        dump: DumpOptions {
            incr: IncrOptions {
                dirty_tracking: a.dirty_tracking.clone(),
                ..IncrOptions::default()
            },
            freeze: a.freeze.options(),
            ..super::DumpFlags {
                shell_job: a.shell_job,
                ext_unix_sk: a.ext_unix_sk,
                compress_level: a.compress_level,
                file_contents: a.file_contents,
                tcp_established: a.tcp_established,
                network_lock: a.network_lock,
            }
            .options(a.pid, true)
        },
        to: a.to.clone(),
        key: a.key.clone(),
        max_downtime: a.max_downtime,
        max_rounds: a.max_rounds.max(1),
        lazy: a.lazy,
    };
    crate::migrate::source::migrate(&opts)
}

pub fn receive(a: &ReceiveArgs) -> Result<i32> {
    crate::migrate::receiver::receive(&ReceiveOptions {
        listen: a.listen.clone(),
        key: a.key.clone(),
        once: a.once,
        pidfile: a.pidfile.clone(),
        images_dir: a.images_dir.clone(),
        lazy_ok: a.lazy_ok,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("300ms").unwrap(), Duration::from_millis(300));
        assert_eq!(parse_time("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_time("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_time("250").unwrap(), Duration::from_millis(250));
        assert!(parse_time("-1s").is_err());
        assert!(parse_time("soon").is_err());
    }
}
