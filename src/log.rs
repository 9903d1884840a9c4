//! Logging to stderr or to the file given with -o/--log-file.
//!
//! Levels: 0 (default) warnings and errors; 1 (`-v`) the phases of a
//! command with their timings; 2 (`-vv`) detail per object (process,
//! image file, fd); 3 (`-vvv`) everything (every image read and written,
//! libbpf's messages). Every line carries a UTC timestamp; with
//! `--log-format json` each line is one JSON object
//! `{"ts", "level", "pid", "msg"}`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Mutex;

static LEVEL: AtomicU8 = AtomicU8::new(0);
static JSON: AtomicBool = AtomicBool::new(false);
static FILE: Mutex<Option<std::fs::File>> = Mutex::new(None);

/// Sets the level and opens the log file, if any (see [`open_log`]); the
/// error names the file.
pub fn init(level: u8, file: Option<&std::path::Path>) -> std::io::Result<()> {
    LEVEL.store(level, Ordering::Relaxed);
    if let Some(p) = file {
        let f = open_log(p).map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot open {}: {e}", p.display()))
        })?;
        if let Ok(mut g) = FILE.lock() {
            *g = Some(f);
        }
    }
    Ok(())
}

/// `--log-format json`: one JSON object per line.
pub fn set_json(yes: bool) {
    JSON.store(yes, Ordering::Relaxed);
}

/// Whether lines are JSON.
pub fn is_json() -> bool {
    JSON.load(Ordering::Relaxed)
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

/// The name of a level in JSON lines.
fn level_name(level: u8) -> &'static str {
    match level {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    }
}

/// Now as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub fn timestamp() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format_time(d.as_secs() as i64, d.subsec_millis())
}

/// `secs` after the epoch (UTC) as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_time(secs: i64, ms: u32) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// One log line as it is written: text or JSON, with its newline.
pub fn format_line(level: u8, msg: &str) -> String {
    let pid = std::process::id();
    if is_json() {
        format!(
            "{{\"ts\":\"{}\",\"level\":\"{}\",\"pid\":{pid},\"msg\":{}}}\n",
            timestamp(),
            level_name(level),
            crate::json::json_string(msg)
        )
    } else if level == 0 {
        format!("{} cairn[{pid}]: warning: {msg}\n", timestamp())
    } else {
        format!("{} cairn[{pid}]: {msg}\n", timestamp())
    }
}

/// Writes `line` to the log file, or to stderr (above a progress bar, if
/// one is shown).
fn emit(line: &str) {
    if let Ok(mut g) = FILE.lock() {
        if let Some(f) = g.as_mut() {
            let _ = f.write_all(line.as_bytes());
            return;
        }
    }
    crate::progress::suspend(|| {
        let _ = std::io::stderr().write_all(line.as_bytes());
    });
}

pub fn write(level: u8, msg: std::fmt::Arguments) {
    if !enabled(level) {
        return;
    }
    emit(&format_line(level, &msg.to_string()));
}

/// The error a command ends with, on stderr whatever the log file: as
/// `cairn: ERROR` in text, as a JSON line of level "error" with
/// `--log-format json`.
pub fn error(msg: &str) {
    crate::progress::clear();
    if is_json() {
        let line = format!(
            "{{\"ts\":\"{}\",\"level\":\"error\",\"pid\":{},\"msg\":{}}}\n",
            timestamp(),
            std::process::id(),
            crate::json::json_string(msg)
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
        return;
    }
    let _ = std::io::stderr().write_all(format!("cairn: {msg}\n").as_bytes());
}

#[macro_export]
macro_rules! warn {
    ($($t:tt)*) => { $crate::log::write(0, format_args!($($t)*)) };
}
/// The phases of a command and their timings (`-v`).
#[macro_export]
macro_rules! info {
    ($($t:tt)*) => { $crate::log::write(1, format_args!($($t)*)) };
}
/// Detail per object (`-vv`).
#[macro_export]
macro_rules! debug {
    ($($t:tt)*) => { $crate::log::write(2, format_args!($($t)*)) };
}
/// Everything (`-vvv`).
#[macro_export]
macro_rules! trace {
    ($($t:tt)*) => { $crate::log::write(3, format_args!($($t)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_format() {
        assert_eq!(format_time(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_time(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(format_time(1_796_570_830, 123), "2026-12-06T15:27:10.123Z");
    }

    #[test]
    fn lines_have_a_timestamp_and_json_is_one_object() {
        let t = format_line(1, "froze 2 processes");
        assert!(t.ends_with("]: froze 2 processes\n"), "{t}");
        assert!(t.as_bytes()[4] == b'-' && t.contains('T'), "{t}");
        assert!(format_line(0, "x").contains("]: warning: x"));
        set_json(true);
        let j = format_line(2, "a \"quoted\"\nline");
        set_json(false);
        assert!(j.starts_with("{\"ts\":\""), "{j}");
        assert!(j.contains("\"level\":\"debug\""), "{j}");
        assert!(j.contains("\"msg\":\"a \\\"quoted\\\"\\nline\"}"), "{j}");
        assert_eq!(j.matches('\n').count(), 1, "{j}");
    }
}
