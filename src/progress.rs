//! Progress bars on stderr (indicatif), shown only when stderr is a
//! terminal, the log goes there as text, and `CAIRN_NO_PROGRESS` is not
//! set: the pages of a dump or restore (bytes with their rate and the time
//! left) and the processes frozen or restored. Otherwise every call here
//! does nothing, so stderr of a script or a test carries no bar.
//!
//! Log lines written while a bar is shown go above it ([`suspend`]).

use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

struct Bars {
    pages: Option<ProgressBar>,
    tasks: Option<ProgressBar>,
}

static BARS: Mutex<Bars> = Mutex::new(Bars {
    pages: None,
    tasks: None,
});

/// Whether bars are drawn at all.
pub fn wanted() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
        && std::env::var_os("CAIRN_NO_PROGRESS").is_none()
        && !crate::log::is_json()
}

fn bar(len: Option<u64>, template: &str) -> ProgressBar {
    let b = match len {
        Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        b.set_style(style.progress_chars("=> "));
    }
    b.enable_steady_tick(Duration::from_millis(100));
    b
}

/// Starts the bar of page data: `what` ("dump: writing pages", "restore:
/// reading pages") and `total` bytes.
pub fn pages_begin(what: &'static str, total: u64) {
    if !wanted() || total == 0 {
        return;
    }
    let b = bar(
        Some(total),
        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    );
    b.set_message(what);
    if let Ok(mut g) = BARS.lock() {
        g.pages = Some(b);
    }
}

/// `n` more bytes of pages written or read.
pub fn pages_inc(n: u64) {
    if let Ok(g) = BARS.lock() {
        if let Some(b) = &g.pages {
            b.inc(n);
        }
    }
}

/// Starts the bar of processes: `what` ("freezing", "restoring") and
/// their number if known.
pub fn tasks_begin(what: &'static str, total: Option<u64>) {
    if !wanted() {
        return;
    }
    let b = match total {
        Some(_) => bar(total, "{msg} [{bar:30}] {pos}/{len} processes {elapsed}"),
        None => bar(None, "{spinner} {msg}: {pos} tasks {elapsed}"),
    };
    b.set_message(what);
    if let Ok(mut g) = BARS.lock() {
        g.tasks = Some(b);
    }
}

/// One more process (or task) frozen or restored.
pub fn tasks_inc(n: u64) {
    if let Ok(g) = BARS.lock() {
        if let Some(b) = &g.tasks {
            b.inc(n);
        }
    }
}

/// Ends the bars: the page bar stays with its final figures, the process
/// bar is cleared.
pub fn finish() {
    if let Ok(mut g) = BARS.lock() {
        if let Some(b) = g.pages.take() {
            b.finish();
        }
        if let Some(b) = g.tasks.take() {
            b.finish_and_clear();
        }
    }
}

/// Ends the process bar (its count stays shown).
pub fn tasks_done() {
    if let Ok(mut g) = BARS.lock() {
        if let Some(b) = g.tasks.take() {
            b.finish();
        }
    }
}

/// Removes every bar from the screen (before an error is printed).
pub fn clear() {
    if let Ok(mut g) = BARS.lock() {
        for b in [g.pages.take(), g.tasks.take()].into_iter().flatten() {
            b.finish_and_clear();
        }
    }
}

/// Runs `f` (which writes to stderr) with the bars hidden.
pub fn suspend(f: impl FnOnce()) {
    let b = BARS
        .lock()
        .ok()
        .and_then(|g| g.pages.clone().or_else(|| g.tasks.clone()));
    match b {
        Some(b) => b.suspend(f),
        None => f(),
    }
}

/// The bytes of the pages of `runs` that hold data (zero runs have none).
pub fn data_bytes<'a>(runs: impl Iterator<Item = &'a [crate::image::chain::Resolved]>) -> u64 {
    runs.flatten()
        .filter(|r| r.data.is_some())
        .map(|r| r.nr_pages * crate::sys::PAGE_SIZE)
        .sum()
}
