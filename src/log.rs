//! Minimal logging to stderr or to the file given with -o/--log-file.
//! Level 0 prints warnings and errors, 1 (-v) progress, 2 (-vv) details.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

static LEVEL: AtomicU8 = AtomicU8::new(0);
static FILE: Mutex<Option<std::fs::File>> = Mutex::new(None);

pub fn init(level: u8, file: Option<&std::path::Path>) -> std::io::Result<()> {
    LEVEL.store(level, Ordering::Relaxed);
    if let Some(p) = file {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)?;
        if let Ok(mut g) = FILE.lock() {
            *g = Some(f);
        }
    }
    Ok(())
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
