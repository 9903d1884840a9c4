//! Minimal logging to stderr or to the file given with -o/--log-file.
//! Level 0 prints warnings and errors, 1 (-v) progress, 2 (-vv) details.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

static LEVEL: AtomicU8 = AtomicU8::new(0);
static FILE: Mutex<Option<std::fs::File>> = Mutex::new(None);

/// Sets the level and opens the log file, if any (see [`open_log`]); the
/// error names the file.
pub fn init(level: u8, file: Option<&std::path::Path>) -> std::io::Result<()> {
    LEVEL.store(level, Ordering::Relaxed);
    if let Some(p) = file {
        let f = open_log(p)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
        if let Ok(mut g) = FILE.lock() {
            *g = Some(f);
        }
    }
    Ok(())
}

/// Opens the log file for appending, safely as root in a directory others
/// can write: a new file is created exclusively with mode 0600 (set with
/// fchmod, whatever the umask), never through a symbolic link; an
/// existing one must be a regular file with one link, owned by the
/// caller, and is never followed if it is a link.
pub fn open_log(p: &std::path::Path) -> std::io::Result<std::fs::File> {
    use crate::sys::safefs;
    use rustix::fs::{FileType, OFlags};
    let (dir, name) = safefs::open_parent_dir(p)?;
    if name == "." {
        return Err(std::io::Error::other("is a directory"));
    }
    let base = OFlags::WRONLY | OFlags::APPEND;
    match safefs::openat_nofollow(&dir, &name, base | OFlags::CREATE | OFlags::EXCL, 0o600) {
        Ok(fd) => {
            rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(0o600))?;
            return Ok(std::fs::File::from(fd));
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let fd = safefs::openat_nofollow(&dir, &name, base | OFlags::NONBLOCK, 0)?;
    let st = rustix::fs::fstat(&fd)?;
    let me = [
        rustix::process::getuid().as_raw(),
        rustix::process::geteuid().as_raw(),
    ];
    if safefs::file_type(&st) != FileType::RegularFile {
        return Err(std::io::Error::other(format!(
            "exists and is not a regular file (a {}); not used as the log",
            safefs::type_name(safefs::file_type(&st))
        )));
    }
    if !me.contains(&st.st_uid) || st.st_nlink != 1 {
        return Err(std::io::Error::other(format!(
            "exists and is owned by uid {} with {} links, not a file of yours \
             (uid {}); not used as the log",
            st.st_uid, st.st_nlink, me[0]
        )));
    }
    rustix::fs::fcntl_setfl(&fd, OFlags::APPEND)?;
    Ok(std::fs::File::from(fd))
}

pub fn enabled(level: u8) -> bool {
    LEVEL.load(Ordering::Relaxed) >= level
}

pub fn write(level: u8, msg: std::fmt::Arguments) {
    if !enabled(level) {
        return;
    }
    let line = format!("cairn[{}]: {}\n", std::process::id(), msg);
    if let Ok(mut g) = FILE.lock() {
        if let Some(f) = g.as_mut() {
            let _ = f.write_all(line.as_bytes());
            return;
        }
    }
    let _ = std::io::stderr().write_all(line.as_bytes());
}

#[macro_export]
macro_rules! warn {
    ($($t:tt)*) => { $crate::log::write(0, format_args!("warning: {}", format_args!($($t)*))) };
}
#[macro_export]
macro_rules! info {
    ($($t:tt)*) => { $crate::log::write(1, format_args!($($t)*)) };
}
#[macro_export]
macro_rules! debug {
    ($($t:tt)*) => { $crate::log::write(2, format_args!($($t)*)) };
}
