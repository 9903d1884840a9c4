//! Local time, for names of checkpoint directories and of files kept
//! aside on restore.

use std::io;

/// A broken-down local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    pub year: i32,
    /// 1..=12
    pub month: u32,
    /// 1..=31
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

/// `secs` (seconds since the epoch) in the local time zone (TZ, or
/// /etc/localtime), as localtime_r(3) computes it.
pub fn local_time(secs: i64) -> io::Result<LocalTime> {
    let t: libc::time_t = secs;
    // SAFETY: an all-zero `struct tm` is a valid value (integers and a
    // nullable pointer).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers refer to live, properly aligned locals for the
    // duration of the call; localtime_r is thread-safe and keeps neither.
    let r = unsafe { libc::localtime_r(&t, &mut tm) };
    if r.is_null() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "time out of range",
        ));
    }
    Ok(LocalTime {
        year: tm.tm_year + 1900,
        month: (tm.tm_mon + 1) as u32,
        day: tm.tm_mday as u32,
        hour: tm.tm_hour as u32,
        minute: tm.tm_min as u32,
        second: tm.tm_sec as u32,
    })
}

/// The local time now.
pub fn local_now() -> io::Result<LocalTime> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    local_time(secs)
}
