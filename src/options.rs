//! The options of the library's entry points ([`crate::dump::dump`],
//! [`crate::dump::pre_dump`], [`crate::restore::restore`]) as plain
//! structs. The commands in [`crate::cmd`] fill them in (`cairn` from its
//! command line, `chkpnt` and `resume` from theirs); the library never
//! sees the command-line types. The meaning of each field is that of the
//! `cairn` flag of the same name (`cairn dump --help`).

use std::path::PathBuf;

use crate::kinds::contents::ContentsLimit;
use crate::netlock;

/// The zstd level of page data when none is given (`--compress-level`):
/// -1 compresses as well as level 1 on page data (same size in
/// docs/BENCHMARKS.md, "Compression level") at half the dump time on 2
/// cores; chunks that do not shrink are stored raw either way.
pub const DEFAULT_COMPRESS_LEVEL: i32 = -1;

/// What [`crate::dump::dump`] does.
#[derive(Debug, Clone)]
pub struct DumpOptions {
    /// Root of the process tree (`--tree`).
    pub pid: i32,
    /// Where the images go (`--images-dir`).
    pub images_dir: PathBuf,
    /// Thaw the tree after the dump instead of killing it (`--leave-running`).
    pub leave_running: bool,
    /// The tree's session and terminal are outside it (`--shell-job`).
    pub shell_job: bool,
    /// Allow unix sockets whose peer is outside the tree (`--ext-unix-sk`).
    pub ext_unix_sk: bool,
    /// zstd level of the page data (`--compress-level`).
    pub compress_level: i32,
    /// Which open files' contents are kept (`--file-contents`).
    pub file_contents: ContentsLimit,
    /// Checkpoint established TCP connections (`--tcp-established`).
    pub tcp_established: bool,
    /// How those connections are kept from the network (`--network-lock`).
    pub network_lock: netlock::Method,
    pub incr: IncrOptions,
    pub freeze: FreezeOptions,
    /// Snapshot the frozen tree for `restore --compare` (`--oracle`).
    pub oracle: bool,
    /// Objects outside the tree its fds may refer to (`--external`).
    pub external: Vec<crate::kinds::external::Key>,
    /// Send the pages to a page server instead of the images directory
    /// (`--page-server --address --port --key`).
    pub page_server: Option<PageServerTarget>,
}

/// A page server a dump sends its pages to (`cairn page-server`).
#[derive(Debug, Clone)]
pub struct PageServerTarget {
    /// `--address`.
    pub host: String,
    /// `--port`.
    pub port: u16,
    /// The pre-shared key file (`--key`).
    pub key: PathBuf,
}

impl PageServerTarget {
    /// HOST:PORT, with an IPv6 address in brackets.
    pub fn join(host: &str, port: u16) -> String {
        if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    }

    /// Where to connect: HOST:PORT.
    pub fn address(&self) -> String {
        PageServerTarget::join(&self.host, self.port)
    }
}

/// What [`crate::dump::pre_dump`] does.
#[derive(Debug, Clone)]
pub struct PreDumpOptions {
    /// Root of the process tree (`--tree`).
    pub pid: i32,
    /// Where the layer goes (`--images-dir`).
    pub images_dir: PathBuf,
    /// zstd level of the page data (`--compress-level`).
    pub compress_level: i32,
    pub incr: IncrOptions,
    pub freeze: FreezeOptions,
    /// Where the page chunks go too, as they are written (a migration's
    /// pre-copy round, `crate::migrate::source`).
    pub page_tee: Option<PageTee>,
}

/// A [`crate::image::pages::ChunkSink`] that gets a pre-dump's chunks
/// beside pages.img.
#[derive(Clone)]
pub struct PageTee(pub std::sync::Arc<dyn crate::image::pages::ChunkSink>);

impl std::fmt::Debug for PageTee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTee(..)")
    }
}

/// Incremental checkpoints, shared by dump and pre-dump.
#[derive(Debug, Clone, Default)]
pub struct IncrOptions {
    /// The previous layer, relative to the images directory unless
    /// absolute (`--prev-images-dir`).
    pub prev_images_dir: Option<PathBuf>,
    /// Keep tracking memory changes after the dump (`--track-mem`).
    pub track_mem: bool,
    /// Force a dirty-tracking mechanism (`--dirty-tracking`).
    pub dirty_tracking: Option<String>,
}

/// How the tree is found while it is frozen, shared by dump and pre-dump.
#[derive(Debug, Clone, Default)]
pub struct FreezeOptions {
    /// /proc children lists instead of BPF (`--no-bpf`).
    pub no_bpf: bool,
    /// For tests: wait for a fork after the BPF snapshot (`--freeze-wait-fork`).
    pub wait_fork: bool,
    /// --leave-running: copy private memory after the thaw, write-protected
    /// (`--background-snapshot`).
    pub background_snapshot: crate::kinds::memory::bgsnap::Mode,
}

/// What [`crate::restore::restore`] does.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Where the images are (`--images-dir`).
    pub images_dir: PathBuf,
    /// Return once the tree runs instead of waiting for its root
    /// (`--restore-detached`).
    pub detached: bool,
    /// Write the restored root's pid here (`--pidfile`).
    pub pidfile: Option<PathBuf>,
    /// Restore into the current session and terminal (`--shell-job`).
    pub shell_job: bool,
    /// Restore even if open files changed since the dump
    /// (`--ignore-file-changes`).
    pub ignore_file_changes: bool,
    /// "clone3" or "ns_last_pid" (`--pid-restore`); `None`: the best the
    /// kernel has.
    pub pid_restore: Option<String>,
    /// Where a moved program is looked for (`--exe-dir`).
    pub exe_dir: Option<PathBuf>,
    /// The option named in errors about a moved program ("--exe-dir", or
    /// "-bp" for `resume`).
    pub exe_dir_flag: String,
    /// Restore established TCP connections (`--tcp-established`).
    pub tcp_established: bool,
    /// Read images another user owns or could have written
    /// (`--allow-foreign-images`).
    pub allow_foreign_images: bool,
    /// Compare the restored tree with the dump's oracle snapshot and fail
    /// on an unexplained difference (`--compare`).
    pub compare: bool,
    /// cairn's fds handed in for external objects (`--inherit-fd`).
    pub inherit_fds: Vec<crate::kinds::external::Inherit>,
    /// Restore in a new pid namespace (`--pid-ns`, `crate::run::pidns`).
    pub pid_ns: bool,
    /// Restore a unix socket with a peer outside the tree (`--ext-unix-sk`)
    /// whose SO_PEERCRED names a live process as made by cairn instead
    /// of refusing it (`--ext-unix-sk-lose-peercred`).
    pub ext_unix_sk_lose_peercred: bool,
}
