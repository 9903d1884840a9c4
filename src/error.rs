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
    /// The pid the command was given is no process (nothing was done).
    #[error("pid {pid}: no such process{}", if what.is_empty() { String::new() } else { format!(" ({what})") })]
    NoSuchProcess { pid: i32, what: String },
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
    pub const NO_SUCH_PROCESS: u8 = 7;

    /// The table `cairn --help` ends with (and README, "Exit codes").
    pub const HELP: &str = "Exit codes:
  0      success (restore without -d: the restored root's exit code)
  1      any other error
  2      usage error (bad flags or arguments)
  3      dump failed; the target was left running
  4      restore failed; nothing of the tree is left
  5      an image is missing, corrupt or of another format version
  6      the process uses something cairn cannot checkpoint yet
  7      no such process (the pid given does not exist); nothing was done
  128+N  interrupted by signal N (129 SIGHUP, 130 SIGINT, 143 SIGTERM): rolled back";
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
            (Error::NoSuchProcess { .. }, _) => exit::NO_SUCH_PROCESS,
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

    /// The same error with the staging directory `work` shown as `shown`
    /// (the directory the user asked for) wherever it appears: in the
    /// paths the error names and in its text.
    pub fn with_staging(self, work: &std::path::Path, shown: &std::path::Path) -> Self {
        let (w, s) = (work.display().to_string(), shown.display().to_string());
        let text = |t: String| if w.is_empty() { t } else { t.replace(&w, &s) };
        let io = |e: std::io::Error| match e.get_ref() {
            Some(inner) if inner.to_string().contains(&w) => {
                std::io::Error::new(e.kind(), text(inner.to_string()))
            }
            _ => e,
        };
        let e = self.with_paths(|p| match p.strip_prefix(work) {
            Ok(rest) => shown.join(rest),
            Err(_) => p.to_path_buf(),
        });
        match e {
            Error::Io { path, source } => Error::Io {
                path,
                source: io(source),
            },
            Error::Sys { pid, op, source } => Error::Sys {
                pid,
                op: text(op),
                source: io(source),
            },
            Error::Parse { what, msg } => Error::Parse {
                what: text(what),
                msg: text(msg),
            },
            Error::Unsupported { pid, what } => Error::Unsupported {
                pid,
                what: text(what),
            },
            Error::Image { path, msg } => Error::Image {
                path,
                msg: text(msg),
            },
            Error::Restore(m) => Error::Restore(text(m)),
            Error::Usage(m) => Error::Usage(text(m)),
            Error::Forwarded { code, msg } => Error::Forwarded {
                code,
                msg: text(msg),
            },
            e @ Error::NoSuchProcess { .. } => e,
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

/// Why the pid `pid` of a checkpointed process cannot be had: which
/// process holds it, whether that is the original (same start time
/// `start_time` on the same boot, `same_boot`) still running or an
/// unreaped zombie, and what to do.
pub fn pid_in_use(pid: i32, start_time: u64, same_boot: bool) -> String {
    let Ok(s) = crate::procfs::read_stat(pid) else {
        return format!(
            "pid {pid} is already in use (by a process that has exited since): try again"
        );
    };
    let original = same_boot && start_time != 0 && s.starttime == start_time;
    let whose = if original {
        "the original process"
    } else {
        "another process"
    };
    if s.state == 'Z' || s.state == 'X' {
        let parent = crate::procfs::read_stat(s.ppid)
            .map(|p| p.comm)
            .unwrap_or_else(|_| "?".into());
        return format!(
            "pid {pid} is already in use: it is an unreaped zombie of {whose} ({}), which \
             exited but was not waited for by its parent, pid {} ({parent}); that parent \
             must reap it (or exit) before the restore",
            s.comm, s.ppid
        );
    }
    if original {
        return format!(
            "pid {pid} is already in use by the original process ({}), still running (a dump \
             with --leave-running keeps it): stop it before restoring",
            s.comm
        );
    }
    format!(
        "pid {pid} is already in use by another process ({}, state {}, parent pid {}), \
         started after the dump; restore when it has exited",
        s.comm, s.state, s.ppid
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn staging_name_is_never_shown() {
        let work = Path::new("/d/.img.cairn-tmp-12-abcd");
        let shown = Path::new("/d/img");
        let errs = [
            Error::io(work.join("pages.img"), std::io::Error::other("x")),
            Error::sys(
                3,
                format!("write {}", work.join("a").display()),
                std::io::Error::other(format!("{}/b: full", work.display())),
            ),
            Error::image(work, "bad"),
            Error::unsupported(3, format!("{}", work.display())),
        ];
        for e in errs {
            let t = e.with_staging(work, shown).to_string();
            assert!(!t.contains("cairn-tmp"), "{t}");
            assert!(t.contains("/d/img"), "{t}");
        }
    }
}
