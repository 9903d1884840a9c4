//! Typed errors. Every variant names the object that failed (pid, fd,
//! address, path) so the CLI can print one clear line; `exit_code` maps an
//! error to the documented process exit code.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or /proc entry could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A system call on behalf of a task failed.
    #[error("pid {pid}: {op}: {source}")]
    Sys {
        pid: i32,
        op: String,
        #[source]
        source: std::io::Error,
    },
    /// A /proc file had an unexpected format.
    #[error("parse {what}: {msg}")]
    Parse { what: String, msg: String },
    /// The process uses something cairn cannot checkpoint.
    #[error("pid {pid}: unsupported: {what}")]
    Unsupported { pid: i32, what: String },
    /// An image file is missing, corrupt or of another version.
    #[error("image {path}: {msg}")]
    Image { path: PathBuf, msg: String },
    /// The restore cannot proceed (pid taken, file changed, ...).
    #[error("restore: {0}")]
    Restore(String),
    /// Bad command-line usage that clap could not catch.
    #[error("{0}")]
    Usage(String),
    /// An error of a helper process (`restore -d`), with the exit code it
    /// maps to there.
    #[error("{msg}")]
    Forwarded { code: u8, msg: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Documented exit codes (README, "Exit codes").
pub mod exit {
    pub const USAGE: u8 = 2;
    pub const DUMP_FAILED: u8 = 3;
    pub const RESTORE_FAILED: u8 = 4;
    pub const IMAGE_INVALID: u8 = 5;
    pub const UNSUPPORTED: u8 = 6;
}

/// What a command was doing when it failed, for [`Error::exit_code`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Dump,
    Restore,
    Other,
}

impl Error {
    /// The documented exit code (README, "Exit codes") for this error.
    pub fn exit_code(&self, phase: Phase) -> u8 {
        match (self, phase) {
            (Error::Usage(_), _) => exit::USAGE,
            (Error::Forwarded { code, .. }, _) => *code,
            // Writing images: the dump failed, the tree runs on.
            (Error::Image { .. }, Phase::Dump) => exit::DUMP_FAILED,
            (Error::Image { .. }, _) => exit::IMAGE_INVALID,
            (Error::Unsupported { .. }, _) => exit::UNSUPPORTED,
            (_, Phase::Dump) => exit::DUMP_FAILED,
            (_, Phase::Restore) => exit::RESTORE_FAILED,
            (_, Phase::Other) => 1,
        }
    }

    /// The same error with the paths it names passed through `f` (a
    /// staging directory shown as the directory the user asked for).
    pub fn with_paths(self, f: impl Fn(&std::path::Path) -> PathBuf) -> Self {
        match self {
            Error::Io { path, source } => Error::Io {
                path: f(&path),
                source,
            },
            Error::Image { path, msg } => Error::Image {
                path: f(&path),
                msg,
            },
            e => e,
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub fn sys(pid: i32, op: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        Error::Sys {
            pid,
            op: op.into(),
            source: source.into(),
        }
    }
    pub fn image(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Image {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub fn parse(what: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Parse {
            what: what.into(),
            msg: msg.into(),
        }
    }
    pub fn unsupported(pid: i32, what: impl Into<String>) -> Self {
        Error::Unsupported {
            pid,
            what: what.into(),
        }
    }
}

/// Adds a path to an `io::Error`.
pub trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
