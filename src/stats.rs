//! Statistics of one dump, pre-dump or restore (like CRIU's stats
//! images and `--display-stats`): timings recorded at a few points of the
//! command, sizes and counts taken from the images themselves, written to
//! `stats-dump.img` / `stats-restore.img` (proto/stats.proto) in the image
//! directory and, with `--display-stats`, printed on stderr.
//!
//! The recorder is per process (a command runs one dump or restore):
//! [`begin`] starts it, [`add`] / [`timer`] add to a timing, and
//! [`finish_dump`] / [`restored`] complete and write it. Nothing
//! here can fail a dump or a restore: a stats file that cannot be written
//! is said with -v and left out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::image::proto::{
    FdTable, MmEntry, PageStore, Pagemap, Pstree, RunKind, Stats, StatsPhase, TaskCore, TaskState,
};
use crate::image::{names, ImageDir, ImageType};

/// The timings a command records (fields of [`Stats`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Time {
    Freeze,
    Frozen,
    Memory,
    Write,
    Sync,
    Load,
}

struct Recorder {
    command: String,
    start: Instant,
    start_unix_ms: u64,
    times: [Duration; 6],
    phases: Vec<(String, Duration)>,
}

static REC: Mutex<Option<Recorder>> = Mutex::new(None);
static DISPLAY: AtomicBool = AtomicBool::new(false);

/// `--display-stats`: print the statistics at the end of the command.
pub fn set_display(yes: bool) {
    DISPLAY.store(yes, Ordering::Relaxed);
}

/// Starts recording `command` ("dump", "pre-dump", "restore") now.
pub fn begin(command: &str) {
    let start_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    if let Ok(mut g) = REC.lock() {
        *g = Some(Recorder {
            command: command.to_string(),
            start: Instant::now(),
            start_unix_ms,
            times: [Duration::ZERO; 6],
            phases: Vec::new(),
        });
    }
}

/// Adds `d` to the timing `t`.
pub fn add(t: Time, d: Duration) {
    if let Ok(mut g) = REC.lock() {
        if let Some(r) = g.as_mut() {
            r.times[t as usize] += d;
        }
    }
}

/// Sets the timing `t` to `d`.
pub fn set(t: Time, d: Duration) {
    if let Ok(mut g) = REC.lock() {
        if let Some(r) = g.as_mut() {
            r.times[t as usize] = d;
        }
    }
}

/// Records named phases, in order.
pub fn phases(list: &[(&str, Duration)]) {
    if let Ok(mut g) = REC.lock() {
        if let Some(r) = g.as_mut() {
            r.phases
                .extend(list.iter().map(|&(n, d)| (n.to_string(), d)));
        }
    }
}

/// Adds `d` to the named phase: created at its first use (in that
/// order), summed over every later use (a phase run once per process).
pub fn phase_add(name: &str, d: Duration) {
    if let Ok(mut g) = REC.lock() {
        if let Some(r) = g.as_mut() {
            match r.phases.iter_mut().find(|p| p.0 == name) {
                Some(p) => p.1 += d,
                None => r.phases.push((name.to_string(), d)),
            }
        }
    }
}

/// The phases recorded so far, as `name 1.2 ms, ...` (for the -v log).
pub fn phase_line() -> String {
    let Ok(g) = REC.lock() else {
        return String::new();
    };
    let Some(r) = g.as_ref() else {
        return String::new();
    };
    (r.phases.iter())
        .map(|(n, d)| format!("{n} {:.1} ms", d.as_secs_f64() * 1e3))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Laps of a sequence of phases: each [`Lap::mark`] adds the time since
/// the previous one (or the start) to the phase it names.
pub struct Lap(Instant);

impl Lap {
    pub fn start() -> Lap {
        Lap(Instant::now())
    }

    /// The time since the last mark goes to phase `name`.
    pub fn mark(&mut self, name: &str) {
        let now = Instant::now();
        phase_add(name, now - self.0);
        self.0 = now;
    }
}

/// Adds the time until it is dropped to `t`.
pub struct Timer(Time, Instant);

impl Drop for Timer {
    fn drop(&mut self) {
        add(self.0, self.1.elapsed());
    }
}

/// A [`Timer`] for `t`, starting now.
pub fn timer(t: Time) -> Timer {
    Timer(t, Instant::now())
}

/// The recorded timings, with the total up to now.
fn timings() -> Stats {
    let mut s = Stats::new();
    if let Ok(g) = REC.lock() {
        if let Some(r) = g.as_ref() {
            let us = |t: Time| r.times[t as usize].as_micros() as u64;
            s.command = r.command.clone();
            s.start_unix_ms = r.start_unix_ms;
            s.freeze_us = us(Time::Freeze);
            s.frozen_us = us(Time::Frozen);
            s.memory_us = us(Time::Memory);
            s.write_us = us(Time::Write);
            s.sync_us = us(Time::Sync);
            s.load_us = us(Time::Load);
            s.total_us = r.start.elapsed().as_micros() as u64;
            for (n, d) in &r.phases {
                let mut p = StatsPhase::new();
                p.name = n.clone();
                p.us = d.as_micros() as u64;
                s.phases.push(p);
            }
        }
    }
    s
}

/// Adds the pages of `pm` by run kind.
fn count_runs(s: &mut Stats, pm: &Pagemap) {
    for r in &pm.runs {
        match r.kind.enum_value() {
            Ok(RunKind::RUN_DATA) => s.pages_written += r.nr_pages,
            Ok(RunKind::RUN_ZERO) => s.pages_zero += r.nr_pages,
            _ => s.pages_skipped += r.nr_pages,
        }
    }
}

fn count_store(s: &mut Stats, ps: &PageStore) {
    for c in &ps.chunks {
        s.bytes_raw += c.raw_len;
        s.bytes_compressed += c.compressed_len;
    }
}

fn count_tree(s: &mut Stats, pstree: &Pstree) {
    s.processes = pstree.entries.len() as u32;
    s.threads = pstree.entries.iter().map(|e| e.threads.len() as u32).sum();
}

fn is_zombie(c: &TaskCore) -> bool {
    c.state.enum_value() == Ok(TaskState::TASK_ZOMBIE)
}

/// The sizes and counts of the checkpoint just written in `dir`, read
/// back from its images (so they are what a restore will find).
fn from_dir(dir: &ImageDir, s: &mut Stats) -> crate::error::Result<()> {
    let mut names_: Vec<String> = dir.entries()?.into_iter().map(|(n, _)| n).collect();
    names_.sort();
    for n in &names_ {
        if !crate::image::is_image_name(n) || names::is_stats(n) {
            continue;
        }
        s.image_bytes += dir.open_file(n)?.1;
        if n == names::PSTREE {
            count_tree(s, &dir.read::<Pstree>(ImageType::Pstree, n)?);
        } else if n == names::PAGESTORE {
            count_store(s, &dir.read::<PageStore>(ImageType::PageStore, n)?);
        } else if n.starts_with("pagemap-") {
            count_runs(s, &dir.read::<Pagemap>(ImageType::Pagemap, n)?);
        } else if n.starts_with("mm-") {
            s.vmas += dir.read::<MmEntry>(ImageType::Mm, n)?.vmas.len() as u32;
        } else if n.starts_with("fdinfo-") {
            s.fds += dir.read::<FdTable>(ImageType::FdTable, n)?.fds.len() as u32;
        } else if n.starts_with("core-") && is_zombie(&dir.read::<TaskCore>(ImageType::Core, n)?) {
            s.zombies += 1;
        }
    }
    Ok(())
}

/// Completes the statistics of a dump or pre-dump whose images are in
/// `dir` (committed), writes `stats-dump.img` there and prints them with
/// `--display-stats`.
pub fn finish_dump(dir: &ImageDir) {
    let mut s = timings();
    if let Err(e) = from_dir(dir, &mut s) {
        info!("statistics: sizes not counted: {e}");
    }
    match dir.write(ImageType::Stats, names::STATS_DUMP, &s) {
        Ok(()) => {}
        Err(e) => info!("statistics not written: {e}"),
    }
    display(&s);
}

/// Completes the statistics of a restore of `img` whose phases took
/// `list` and prints them with `--display-stats`; writes `stats-restore.img` into the image
/// directory only if it is the caller's own (owned by the effective uid,
/// writable by nobody else), and says with -v when it does not.
pub fn restored(img: &crate::restore::Images, list: &[(&str, Duration)]) {
    phases(list);
    let mut s = timings();
    count_tree(&mut s, &img.pstree);
    s.zombies = img.cores.iter().filter(|c| is_zombie(c)).count() as u32;
    s.vmas = img.mms.iter().flatten().map(|m| m.vmas.len() as u32).sum();
    s.fds = (img.fdtables.iter().flatten())
        .map(|t| t.fds.len() as u32)
        .sum();
    for pm in &img.pagemaps {
        count_runs(&mut s, pm);
    }
    count_store(&mut s, &img.store().store);
    s.image_bytes = img.inventory.images.iter().map(|f| f.size).sum::<u64>()
        + img
            .dir
            .open_file(names::INVENTORY)
            .map_or(0, |(_, size)| size);
    match own_dir(&img.dir) {
        Ok(()) => {
            if let Err(e) = img.dir.write(ImageType::Stats, names::STATS_RESTORE, &s) {
                info!("statistics not written: {e}");
            }
        }
        Err(why) => info!(
            "statistics not written to {}: {why}",
            img.dir.path().display()
        ),
    }
    display(&s);
}

/// Whether cairn may write into `dir` as the caller: it is owned by the
/// effective uid and writable by nobody else.
fn own_dir(dir: &ImageDir) -> std::result::Result<(), String> {
    let st = rustix::fs::fstat(dir.fd()).map_err(|e| e.to_string())?;
    let me = rustix::process::geteuid().as_raw();
    if st.st_uid != me {
        return Err(format!(
            "the directory is owned by uid {}, not by cairn's uid {me}",
            st.st_uid
        ));
    }
    crate::sys::safefs::check_trusted(&st)?;
    if rustix::fs::accessat(
        dir.fd(),
        ".",
        rustix::fs::Access::WRITE_OK,
        rustix::fs::AtFlags::EACCESS,
    )
    .is_err()
    {
        return Err("the directory is not writable".into());
    }
    Ok(())
}

fn display(s: &Stats) {
    let t = |us: u64| format!("{:.1} ms", us as f64 / 1000.0);
    if s.command == "restore" {
        info!(
            "restore timings: load {}, memory {}, total {}",
            t(s.load_us),
            t(s.memory_us),
            t(s.total_us)
        );
    } else {
        info!(
            "{} timings: freeze {}, frozen {}, memory {}, write {}, sync {}, total {}",
            s.command,
            t(s.freeze_us),
            t(s.frozen_us),
            t(s.memory_us),
            t(s.write_us),
            t(s.sync_us),
            t(s.total_us)
        );
    }
    if DISPLAY.load(Ordering::Relaxed) {
        eprint!("{}", render(s));
    }
}

fn ms(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

/// Bytes for people: B, KiB, MiB, GiB.
pub fn bytes(n: u64) -> String {
    const U: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// The statistics as `--display-stats` and `cairn show` print them.
pub fn render(s: &Stats) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(o, "{} statistics:", s.command);
    let mut row = |name: &str, v: String| {
        let _ = writeln!(o, "  {name:<18}{v}");
    };
    if s.command == "restore" {
        row("load time", ms(s.load_us));
        row("memory time", ms(s.memory_us));
    } else {
        row("freezing time", ms(s.freeze_us));
        row("frozen time", ms(s.frozen_us));
        row("memory time", ms(s.memory_us));
        row("write time", ms(s.write_us));
        row("sync time", ms(s.sync_us));
    }
    for p in &s.phases {
        row(&format!("{} phase", p.name), ms(p.us));
    }
    row("total time", ms(s.total_us));
    row("pages written", s.pages_written.to_string());
    row("pages zero", s.pages_zero.to_string());
    row("pages skipped", s.pages_skipped.to_string());
    let ratio = if s.bytes_compressed > 0 {
        format!(
            " (ratio {:.2})",
            s.bytes_raw as f64 / s.bytes_compressed as f64
        )
    } else {
        String::new()
    };
    row(
        "page data",
        format!(
            "{} raw, {} stored{ratio}",
            bytes(s.bytes_raw),
            bytes(s.bytes_compressed)
        ),
    );
    row("image bytes", s.image_bytes.to_string());
    row(
        "tree",
        format!(
            "{} processes ({} zombies), {} threads, {} fds, {} VMAs",
            s.processes, s.zombies, s.threads, s.fds, s.vmas
        ),
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_names_every_figure() {
        let mut s = Stats::new();
        s.command = "dump".into();
        s.frozen_us = 12_345;
        s.pages_written = 7;
        s.bytes_raw = 4 << 20;
        s.bytes_compressed = 1 << 20;
        s.processes = 2;
        s.threads = 3;
        let out = render(&s);
        assert!(out.contains("frozen time       12.345 ms"), "{out}");
        assert!(out.contains("pages written     7"), "{out}");
        assert!(
            out.contains("4.0 MiB raw, 1.0 MiB stored (ratio 4.00)"),
            "{out}"
        );
        assert!(out.contains("2 processes (0 zombies), 3 threads"), "{out}");
    }

    #[test]
    fn timer_adds_up() {
        begin("dump");
        add(Time::Write, Duration::from_millis(2));
        {
            let _t = timer(Time::Write);
        }
        set(Time::Frozen, Duration::from_millis(5));
        let s = timings();
        assert!(s.write_us >= 2000);
        assert_eq!(s.frozen_us, 5000);
        assert_eq!(s.command, "dump");
        // Phases (same test: the recorder is global) sum by name, in order.
        phase_add("a", Duration::from_millis(1));
        phase_add("b", Duration::from_millis(2));
        phase_add("a", Duration::from_millis(3));
        let s = timings();
        let got: Vec<(String, u64)> = s.phases.iter().map(|p| (p.name.clone(), p.us)).collect();
        assert_eq!(got, vec![("a".into(), 4000), ("b".into(), 2000)]);
        assert_eq!(phase_line(), "a 4.0 ms, b 2.0 ms");
    }
}
