//! The commands: `cairn`'s command line (flag names follow CRIU's where
//! the meaning is the same, so scripts written for `criu` work with few
//! changes) and its dispatch to the library, plus the commands that are
//! front ends only: `cairn show` ([`show`]), `cairn show --verify`
//! ([`verify`]), `cairn check` ([`check`]), `cairn demo` ([`demo`]),
//! `cairn prune` ([`prune`]), `cairn inventory` ([`inventory`]), and the
//! `chkpnt`/`resume` binaries ([`chkpnt`]).
//!
//! Only this module knows the command-line types: `dump`, `pre-dump` and
//! `restore` hand the library plain [`crate::options`] structs, and the
//! front ends below take plain arguments.

pub mod check;
pub mod chkpnt;
pub mod demo;
pub mod inventory;
pub mod job;
pub mod migrate;
pub mod pageserver;
pub mod pair;
pub mod prune;
pub mod run;
pub mod show;
pub mod unlock;
pub mod verify;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::error::{Phase, Result};
use crate::options::{DumpOptions, FreezeOptions, IncrOptions, PreDumpOptions, RestoreOptions};

/// Runs `cairn`'s command `cmd`: its exit code (the root's exit code for
/// an attached restore, 0 otherwise) or its error, and the phase that
/// picks the error's exit code.
pub fn run(cmd: &Command) -> (Result<i32>, Phase) {
    if let Command::Show(a) = cmd {
        crate::image::allow_foreign_images(a.allow_foreign_images);
    }
    match cmd {
        Command::Dump(a) => (crate::run::pidns::dump(&a.options()), Phase::Dump),
        Command::PreDump(a) => (crate::dump::pre_dump(&a.options()).map(|_| 0), Phase::Dump),
        Command::Restore(a) if a.lazy_pages => (pageserver::restore(a), Phase::Restore),
        Command::Restore(a) => (crate::restore::restore(&a.options()), Phase::Restore),
        Command::Show(a) => (show::run(a).map(|()| 0), Phase::Other),
        Command::Check(a) => (check::check(a.json), Phase::Other),
        Command::Demo(a) => (demo::run(a.images_dir.as_deref()).map(|()| 0), Phase::Other),
        Command::Prune(a) => (prune::prune(&a.options()).map(|()| 0), Phase::Other),
        Command::Inventory(a) => (
            inventory::run(a.pid, a.json, a.no_bpf).map(|()| 0),
            Phase::Other,
        ),
        // migrate
        Command::Migrate(a) => (migrate::migrate(a), Phase::Dump),
        Command::Receive(a) => (migrate::receive(a), Phase::Restore),
        Command::PageServer(a) => (pageserver::serve(a), Phase::Restore),
        Command::Run(a) => (crate::run::run(&a.options()), Phase::Other),
        Command::PidnsExec(a) => (crate::run::pidns::exec_init(&a.cmd), Phase::Other),
        Command::PidnsRestore(a) => (
            crate::run::pidns::restore_init(&a.options()),
            Phase::Restore,
        ),
        // pair
        Command::Pair(a) => (
            a.options().and_then(|o| crate::pair::run(&o)),
            Phase::Restore,
        ),
        Command::PairBackup(a) => (crate::pair::backup_init(&a.options()), Phase::Restore),
        // a job on several nodes
        Command::Job(a) => (job::job(a), Phase::Other),
        Command::NodeAgent(a) => (job::node_agent(a), Phase::Other),
        // network locks left behind
        Command::Unlock(a) => (unlock::run(a), Phase::Other),
    }
}

/// Parses `--compress-level`: an integer in zstd's range of levels.
pub fn compress_level(s: &str) -> std::result::Result<i32, String> {
    let n: i32 = s
        .parse()
        .map_err(|e| format!("{s:?} is not a number: {e}"))?;
    let r = zstd::compression_level_range();
    if !r.contains(&n) {
        return Err(format!(
            "{n} is outside zstd's levels {} to {} (negative levels are faster, 19 and \
             above much slower)",
            r.start(),
            r.end()
        ));
    }
    Ok(n)
}

#[derive(Parser, Debug)]
#[command(
    name = "cairn",
    version,
    about = "Checkpoint and restore Linux process trees",
    after_help = crate::error::exit::HELP
)]
pub struct Cli {
    /// More log output (repeat for more).
    #[arg(short = 'v', long = "verbosity", action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Write the log to this file instead of stderr.
    #[arg(short = 'o', long = "log-file", global = true)]
    pub log_file: Option<PathBuf>,
    /// Log line format: "text" (timestamp, pid, message) or "json" (one
    /// JSON object per line).
    #[arg(long = "log-format", global = true, value_name = "text|json", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Print the statistics of a dump, pre-dump or restore on stderr at
    /// its end (they are also kept in the image directory, see `cairn
    /// show`).
    #[arg(long = "display-stats", global = true)]
    pub display_stats: bool,
    #[command(subcommand)]
    pub cmd: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Checkpoint a process tree into an image directory.
    Dump(DumpArgs),
    /// Copy a process tree's memory while it keeps running: a layer that a
    /// later pre-dump or dump builds on (--prev-images-dir).
    PreDump(PreDumpArgs),
    /// Restore a process tree from an image directory.
    Restore(RestoreArgs),
    /// Show a checkpoint: a summary, a view (ps, fds, mems, sockets,
    /// chain, stats) or every image (--full), like CRIU's crit.
    Show(ShowArgs),
    /// Report which kernel features this machine offers and which path cairn takes.
    Check(CheckArgs),
    /// Run cairn's main job on a built-in example workload.
    Demo(DemoArgs),
    /// Remove image directories older than a limit (default 5 days).
    Prune(PruneArgs),
    /// Print what cairn collects of a tree (processes, threads, VMAs,
    /// fds), from BPF iterators or /proc.
    Inventory(InventoryArgs),
    /// Move a running process tree to another machine (`cairn receive`
    /// there): pre-copy rounds, then a short freeze.
    Migrate(migrate::MigrateArgs),
    /// Accept a migration (`cairn migrate --to`) and restore its tree here.
    Receive(migrate::ReceiveArgs),
    /// Receive the pages of `dump --page-server` into DIR, and serve them
    /// to `restore --lazy-pages --page-server`.
    PageServer(pageserver::PageServerArgs),
    /// Run a job under cairn: restore its newest checkpoint in DIR or
    /// start CMD, checkpoint it every --interval, on --checkpoint-signal
    /// and on SIGTERM (then stop it and exit 0, for a requeue).
    Run(run::RunArgs),
    #[command(name = "__pidns-exec", hide = true)]
    PidnsExec(run::PidnsExecArgs),
    #[command(name = "__pidns-restore", hide = true)]
    PidnsRestore(RestoreArgs),
    /// Run a program as a process pair: a primary checkpointed every
    /// --interval and a backup restored from the newest checkpoint, held
    /// ready, that takes over when the primary fails.
    Pair(pair::PairArgs),
    #[command(name = "__pair-backup", hide = true)]
    PairBackup(RestoreArgs),
    /// A job on several nodes: checkpoint every node's tree inside one
    /// barrier (a coordinator and one agent per node), restore them all.
    Job(job::JobArgs),
    #[command(name = "__node-agent", hide = true)]
    NodeAgent(job::NodeAgentArgs),
    /// Remove a network lock that a --tcp-established dump kept for a
    /// restore that will not come (`cairn check` lists them).
    Unlock(unlock::UnlockArgs),
}

#[derive(Args, Debug, Clone)]
pub struct DumpArgs {
    /// Root of the process tree to dump.
    #[arg(short = 't', long = "tree")]
    pub pid: i32,
    /// Directory to write the images to.
    #[arg(short = 'D', long = "images-dir")]
    pub images_dir: PathBuf,
    /// Let the tree go on running after the dump (default: kill it).
    #[arg(short = 'R', long = "leave-running")]
    pub leave_running: bool,
    /// The tree was started from a shell: its session and terminal are outside.
    #[arg(short = 'j', long = "shell-job")]
    pub shell_job: bool,
    /// Allow unix sockets whose peer is outside the tree: a datagram
    /// socket is reconnected to the peer's name on restore, a stream or
    /// seqpacket one comes back with its peer gone (queued data, then EOF).
    #[arg(long = "ext-unix-sk")]
    pub ext_unix_sk: bool,
    /// Compression level for page data (zstd; negative is faster).
    #[arg(
        long = "compress-level",
        default_value_t = crate::options::DEFAULT_COMPRESS_LEVEL,
        allow_negative_numbers = true,
        value_parser = compress_level
    )]
    pub compress_level: i32,
    /// Keep the contents of open regular files up to this size each:
    /// "all", "none" or a size with k, M or G (deleted open files are
    /// always kept).
    #[arg(long = "file-contents", value_name = "all|none|SIZE", default_value_t = crate::kinds::contents::DEFAULT_LIMIT)]
    pub file_contents: crate::kinds::contents::ContentsLimit,
    /// Checkpoint established TCP connections (with TCP_REPAIR; the
    /// network is locked for them until the restore).
    #[arg(long = "tcp-established")]
    pub tcp_established: bool,
    /// How established connections are kept from the network while they
    /// are checkpointed: "nftables" (default) or "skip" (do it yourself).
    #[arg(long = "network-lock", value_name = "nftables|skip", default_value_t = crate::netlock::Method::Nftables)]
    pub network_lock: crate::netlock::Method,
    #[command(flatten)]
    pub incr: IncrArgs,
    #[command(flatten)]
    pub freeze: FreezeArgs,
    /// Also snapshot the kernel's view of every task of the frozen tree
    /// (oracle.img), for `restore --compare` (docs/ORACLE.md).
    #[arg(long = "oracle")]
    pub oracle: bool,
    /// An object outside the tree that its fds may refer to, handed in at
    /// restore with --inherit-fd: `pipe:[INO]`, `socket:[INO]` (a connected
    /// unix socket; also `unix[INO]`) or `file[MNT_ID:INO]` (hex). Repeatable.
    #[arg(long = "external", value_name = "KEY", value_parser = crate::kinds::external::parse_key)]
    pub external: Vec<crate::kinds::external::Key>,
    #[command(flatten)]
    pub page_server: pageserver::DumpPageServerArgs,
}

/// How the tree is found while it is frozen, shared by `dump` and
/// `pre-dump`.
#[derive(Args, Debug, Clone, Default)]
pub struct FreezeArgs {
    /// Do not use BPF: find the tree's children in /proc children lists
    /// instead of the BPF task iterator and fork tracker.
    #[arg(long = "no-bpf")]
    pub no_bpf: bool,
    /// For tests: after the BPF snapshot of the tree, wait (up to 10 s)
    /// until the fork tracker has reported a new task (process or thread)
    /// of the tree, so that the freeze must take it from the ring buffer.
    #[arg(long = "freeze-wait-fork", hide = true)]
    pub wait_fork: bool,
    /// With --leave-running: "auto" (default) freezes the tree only to
    /// write-protect its private memory, which is copied while it runs
    /// (see `cairn check`); "off" copies every page frozen; "on" fails
    /// where the background snapshot cannot be taken.
    #[arg(long = "background-snapshot", value_name = "auto|on|off", default_value = "auto", value_parser = crate::kinds::memory::bgsnap::Mode::parse, hide = true)]
    pub background_snapshot: crate::kinds::memory::bgsnap::Mode,
}

/// Options of incremental checkpoints, shared by `dump` and `pre-dump`.
#[derive(Args, Debug, Clone, Default)]
pub struct IncrArgs {
    /// The previous layer (relative to --images-dir unless absolute): only
    /// what changed since it is stored; restore takes the rest from it.
    #[arg(long = "prev-images-dir", value_name = "DIR")]
    pub prev_images_dir: Option<PathBuf>,
    /// Keep tracking memory changes after this dump, for a later dump with
    /// --prev-images-dir (with --leave-running; pre-dump always does).
    #[arg(long = "track-mem")]
    pub track_mem: bool,
    /// Force a dirty-tracking mechanism: soft-dirty, uffd-wp or hash
    /// (default: the best this kernel has, see `cairn check`).
    #[arg(long = "dirty-tracking", hide = true)]
    pub dirty_tracking: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct PreDumpArgs {
    /// Root of the process tree.
    #[arg(short = 't', long = "tree")]
    pub pid: i32,
    /// Directory to write the layer to.
    #[arg(short = 'D', long = "images-dir")]
    pub images_dir: PathBuf,
    /// Compression level for page data (zstd; negative is faster).
    #[arg(
        long = "compress-level",
        default_value_t = crate::options::DEFAULT_COMPRESS_LEVEL,
        allow_negative_numbers = true,
        value_parser = compress_level
    )]
    pub compress_level: i32,
    #[command(flatten)]
    pub incr: IncrArgs,
    #[command(flatten)]
    pub freeze: FreezeArgs,
}

#[derive(Args, Debug, Clone)]
pub struct RestoreArgs {
    /// Directory holding the images.
    #[arg(short = 'D', long = "images-dir")]
    pub images_dir: PathBuf,
    /// Detach after restore; otherwise wait and exit with the tree root's exit code.
    #[arg(short = 'd', long = "restore-detached")]
    pub detached: bool,
    /// Write the restored root pid to this file once it runs.
    #[arg(long = "pidfile")]
    pub pidfile: Option<PathBuf>,
    /// Restore into the current session and terminal.
    #[arg(short = 'j', long = "shell-job")]
    pub shell_job: bool,
    /// Restore even if files the process had open changed since the dump
    /// (those whose contents are in the images are put back anyway).
    #[arg(long = "ignore-file-changes")]
    pub ignore_file_changes: bool,
    /// How the root gets its pid: "clone3" (set_tid, the default where the
    /// kernel has it) or "ns_last_pid" (the fallback; for tests).
    #[arg(long = "pid-restore", hide = true, value_parser = ["clone3", "ns_last_pid"])]
    pub pid_restore: Option<String>,
    /// Where to look for the program if it was moved since the dump: it
    /// must have the checkpointed contents.
    #[arg(long = "exe-dir", value_name = "DIR")]
    pub exe_dir: Option<PathBuf>,
    /// Restore established TCP connections (needed if the dump had
    /// --tcp-established and the tree had any).
    #[arg(long = "tcp-established")]
    pub tcp_established: bool,
    /// Read images that another user owns or could have written (an
    /// image directory or file not owned by you or root, or writable by
    /// group or others). Refused by default: such a checkpoint may have
    /// been forged. For people who know why.
    #[arg(long = "allow-foreign-images")]
    pub allow_foreign_images: bool,
    /// Before letting the restored tree run, compare the kernel's view of
    /// it with the snapshot of `dump --oracle`; any difference that is not
    /// explained (docs/ORACLE.md) fails the restore.
    #[arg(long = "compare")]
    pub compare: bool,
    /// Give cairn's fd N to every fd of the tree dumped with --external
    /// KEY (same fd numbers and close-on-exec). Repeatable.
    #[arg(long = "inherit-fd", value_name = "fd[N]:KEY", value_parser = crate::kinds::external::parse_inherit)]
    pub inherit_fd: Vec<crate::kinds::external::Inherit>,
    /// Restore the tree in a new pid namespace (its init is cairn's),
    /// where every process gets its pid whatever is taken outside.
    #[arg(long = "pid-ns")]
    pub pid_ns: bool,
    /// Accept that a unix socket dumped with --ext-unix-sk whose
    /// SO_PEERCRED names a process that is alive now (typically its
    /// outside peer) comes back naming cairn's pid and ids instead (a
    /// warning names each); without it such a restore is refused before
    /// any process is created.
    #[arg(long = "ext-unix-sk-lose-peercred")]
    pub ext_unix_sk_lose_peercred: bool,
    /// Start the tree before its memory is in: missing pages come on
    /// fault (userfaultfd) and in the background, from the image directory
    /// or from --page-server; if their source fails, the tree is killed.
    #[arg(long = "lazy-pages")]
    pub lazy_pages: bool,
    /// With --lazy-pages: the pages come from `cairn page-server` at
    /// ADDR:PORT (the -D directory holds the dump's other images).
    #[arg(long = "page-server", value_name = "ADDR:PORT", requires_all = ["lazy_pages", "key"])]
    pub page_server: Option<String>,
    /// The page server's pre-shared key (see `cairn page-server --key`).
    #[arg(long = "key", value_name = "FILE", requires = "page_server")]
    pub key: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct ShowArgs {
    /// Image directory (or a single image file).
    pub path: PathBuf,
    /// What to show of a directory (default: a summary).
    #[arg(value_enum)]
    pub view: Option<show::View>,
    /// Every image in full (addresses in hex, flags by name, default
    /// values left out) instead of the summary.
    #[arg(long)]
    pub full: bool,
    /// Print one JSON object (docs/SHOW-JSON.md; numbers as numbers up to
    /// 2^53), also on failure (an "error" member).
    #[arg(long)]
    pub json: bool,
    /// Instead of printing the images, check all of them completely
    /// (checksums, the inventory's list of files, what a restore checks,
    /// every page chunk); exit code 5 at the first bad one.
    #[arg(long)]
    pub verify: bool,
    /// Read images that another user owns or could have written (an
    /// image directory or file not owned by you or root, or writable by
    /// group or others). Refused by default: such a checkpoint may have
    /// been forged. For people who know why.
    #[arg(long = "allow-foreign-images")]
    pub allow_foreign_images: bool,
}

#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct InventoryArgs {
    /// Root of the process tree.
    #[arg(short = 't', long = "tree")]
    pub pid: i32,
    /// Print JSON (every field).
    #[arg(long)]
    pub json: bool,
    /// Collect from /proc even where BPF works.
    #[arg(long = "no-bpf")]
    pub no_bpf: bool,
}

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Keep the demo's image directory here instead of a temporary one.
    #[arg(short = 'D', long = "images-dir")]
    pub images_dir: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct PruneArgs {
    /// An image directory, or a directory whose image directories are
    /// considered (default: the current directory).
    pub dir: Option<PathBuf>,
    /// Remove image directories whose dump is older than this: a number
    /// with s, m, h, d or w (a number alone counts days).
    #[arg(long = "older-than", value_name = "AGE", default_value = "5d", value_parser = prune::parse_age)]
    pub older_than: std::time::Duration,
    /// Only list what would be removed.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
}

impl DumpArgs {
    /// The library's options for these arguments.
    pub fn options(&self) -> DumpOptions {
        DumpOptions {
            images_dir: self.images_dir.clone(),
            incr: self.incr.options(),
            freeze: self.freeze.options(),
            oracle: self.oracle,
            external: self.external.clone(),
            page_server: self.page_server.target(),
            ..DumpFlags {
                shell_job: self.shell_job,
                ext_unix_sk: self.ext_unix_sk,
                compress_level: self.compress_level,
                file_contents: self.file_contents,
                tcp_established: self.tcp_established,
                network_lock: self.network_lock,
            }
            .options(self.pid, self.leave_running)
        }
    }
}

/// The dump flags that `dump`, `migrate` and `run` have in common: the
/// one conversion of them into [`DumpOptions`], so that a new dump
/// option reaches every command that dumps.
#[derive(Debug, Clone)]
pub struct DumpFlags {
    pub shell_job: bool,
    pub ext_unix_sk: bool,
    pub compress_level: i32,
    pub file_contents: crate::kinds::contents::ContentsLimit,
    pub tcp_established: bool,
    pub network_lock: crate::netlock::Method,
}

impl DumpFlags {
    /// The dump options of these flags for the tree of `pid`; the images
    /// directory, incremental and freeze options, oracle and externals at
    /// their defaults (the caller sets those it has).
    pub fn options(self, pid: i32, leave_running: bool) -> DumpOptions {
        DumpOptions {
            pid,
            images_dir: PathBuf::new(),
            leave_running,
            shell_job: self.shell_job,
            ext_unix_sk: self.ext_unix_sk,
            compress_level: self.compress_level,
            file_contents: self.file_contents,
            tcp_established: self.tcp_established,
            network_lock: self.network_lock,
            incr: IncrOptions::default(),
            freeze: FreezeOptions::default(),
            oracle: false,
            external: Vec::new(),
            page_server: None,
        }
    }
}

impl PreDumpArgs {
    /// The library's options for these arguments.
    pub fn options(&self) -> PreDumpOptions {
        PreDumpOptions {
            pid: self.pid,
            images_dir: self.images_dir.clone(),
            compress_level: self.compress_level,
            incr: self.incr.options(),
            freeze: self.freeze.options(),
            page_tee: None,
        }
    }
}

impl IncrArgs {
    /// The library's options for these arguments.
    pub fn options(&self) -> IncrOptions {
        IncrOptions {
            prev_images_dir: self.prev_images_dir.clone(),
            track_mem: self.track_mem,
            dirty_tracking: self.dirty_tracking.clone(),
        }
    }
}

impl FreezeArgs {
    /// The library's options for these arguments.
    pub fn options(&self) -> FreezeOptions {
        FreezeOptions {
            no_bpf: self.no_bpf,
            wait_fork: self.wait_fork,
            background_snapshot: self.background_snapshot,
        }
    }
}

impl RestoreArgs {
    /// The library's options for these arguments.
    pub fn options(&self) -> RestoreOptions {
        RestoreOptions {
            images_dir: self.images_dir.clone(),
            detached: self.detached,
            pidfile: self.pidfile.clone(),
            shell_job: self.shell_job,
            ignore_file_changes: self.ignore_file_changes,
            pid_restore: self.pid_restore.clone(),
            exe_dir: self.exe_dir.clone(),
            exe_dir_flag: "--exe-dir".into(),
            tcp_established: self.tcp_established,
            allow_foreign_images: self.allow_foreign_images,
            compare: self.compare,
            inherit_fds: self.inherit_fd.clone(),
            pid_ns: self.pid_ns,
            ext_unix_sk_lose_peercred: self.ext_unix_sk_lose_peercred,
        }
    }
}

impl PruneArgs {
    /// The library's options for these arguments.
    pub fn options(&self) -> prune::PruneOptions {
        prune::PruneOptions {
            dir: self.dir.clone(),
            older_than: self.older_than,
            dry_run: self.dry_run,
        }
    }
}
