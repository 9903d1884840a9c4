//! `cairn demo`: cairn's main job on a built-in example. It starts a small
//! counter process (this binary, re-executed as `__demo-workload FILE`),
//! checkpoints it with `cairn dump`, which kills it, restores it with
//! `cairn restore -d`, and checks that the restored process counts on from
//! where it stopped, under the same pid.
//!
//! The demo drives the real `dump` and `restore` subcommands as separate
//! processes, exactly as a user would. Its progress goes to stderr.

use std::io::Write as _;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::{Error, IoContext, Result};

/// The hidden first argument that makes `cairn` run [`workload`].
pub const WORKLOAD_ARG: &str = "__demo-workload";

/// How often the workload counts.
const TICK: Duration = Duration::from_millis(200);
/// The count the workload must reach before it is checkpointed.
const COUNT_BEFORE_DUMP: u64 = 5;
/// How long the restored workload runs before the demo looks again.
const RUN_AFTER_RESTORE: Duration = Duration::from_millis(1500);
/// Upper bound for any one step (start, dump, restore, first tick).
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// The demo's workload: every `TICK` it increments a counter and writes
/// `count N pid P` to `path` (replacing the file atomically) and to stdout.
/// The pid is asked of the kernel each time, so a restored copy reports
/// the pid it really runs under.
pub fn workload(path: &Path) -> Result<()> {
    // Its own session, so the checkpoint holds no session or terminal from
    // outside the dumped tree. Fails only if already a group leader.
    let _ = nix::unistd::setsid();
    close_inherited();
    count(path, None)
}

/// Closes every descriptor above 2 the workload inherited (a runner's pipe,
/// a shell's job-control fds): the checkpoint must hold only what the
/// workload itself opened, and a dump refuses a pipe whose other end is
/// outside the tree.
fn close_inherited() {
    let Ok(rd) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    // Collected first: the directory's own descriptor is among them.
    let fds: Vec<i32> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        let _ = nix::unistd::close(fd);
    }
}

/// The workload's loop; stops after `ticks` ticks if given (for tests).
fn count(path: &Path, ticks: Option<u64>) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut n: u64 = 0;
    while ticks.is_none_or(|t| n < t) {
        n += 1;
        let line = format!("count {n} pid {}\n", std::process::id());
        std::fs::write(&tmp, &line).at(&tmp)?;
        std::fs::rename(&tmp, path).at(path)?;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
        drop(out);
        std::thread::sleep(TICK);
    }
    Ok(())
}

/// Runs the demo; an error if any step fails or the restored process did
/// not continue counting. `images_dir`: keep the images there instead of
/// in a temporary directory (`-D`).
pub fn run(images_dir: Option<&Path>) -> Result<()> {
    let exe = std::env::current_exe().at("/proc/self/exe")?;
    let work = WorkDir::create()?;
    let images = match images_dir {
        Some(d) => d.to_path_buf(),
        None => work.path.join("images"),
    };
    let counter = work.path.join("counter");
    let pidfile = work.path.join("restored.pid");

    // 1. Start the workload and let it count.
    let child = Command::new(&exe)
        .arg(WORKLOAD_ARG)
        .arg(&counter)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .at(&exe)?;
    let mut workload = ChildGuard(Some(child));
    let pid = workload.pid();
    say(&format!(
        "started workload pid {pid} (counts every {} ms into {})",
        TICK.as_millis(),
        counter.display()
    ));
    let before = wait_for(STEP_TIMEOUT, || {
        read_counter(&counter).filter(|c| c.count >= COUNT_BEFORE_DUMP)
    })
    .ok_or_else(|| {
        Error::Restore(format!(
            "demo: workload pid {pid} did not count to {COUNT_BEFORE_DUMP}"
        ))
    })?;
    say(&format!("workload pid {pid} counted to {}", before.count));

    // 2. Checkpoint it; dump kills it.
    say(&format!("checkpointing pid {pid} to {}", images.display()));
    let t = Instant::now();
    let status = run_cairn(
        &exe,
        &["dump", "-t", &pid.to_string(), "-D", &path_arg(&images)],
    )?;
    if !status.success() {
        return Err(Error::sys(
            pid,
            "cairn dump",
            std::io::Error::other(status.to_string()),
        ));
    }
    let dump_time = t.elapsed();
    let exit = workload.reap(Duration::from_secs(5)).ok_or_else(|| {
        Error::sys(
            pid,
            "cairn dump",
            std::io::Error::other("left the workload running"),
        )
    })?;
    let at_dump = read_counter(&counter)
        .ok_or_else(|| Error::Restore(format!("demo: cannot read {}", counter.display())))?;
    let (files, bytes) = dir_size(&images)?;
    say(&format!(
        "killed: workload pid {pid} ended ({exit}) at count {}",
        at_dump.count
    ));
    say(&format!(
        "dump took {:.2} s; images: {files} files, {}",
        dump_time.as_secs_f64(),
        human(bytes)
    ));

    // 3. Restore it, detached, and watch it count on.
    std::fs::write(&counter, "restoring\n").at(&counter)?;
    say(&format!("restoring from {}", images.display()));
    let t = Instant::now();
    let status = run_cairn(
        &exe,
        &[
            "restore",
            "-D",
            &path_arg(&images),
            "-d",
            "--pidfile",
            &path_arg(&pidfile),
        ],
    )?;
    if !status.success() {
        return Err(Error::Restore(format!(
            "demo: cairn restore failed ({status})"
        )));
    }
    let restored: i32 = std::fs::read_to_string(&pidfile)
        .at(&pidfile)?
        .trim()
        .parse()
        .map_err(|_| Error::Restore(format!("demo: bad pid in {}", pidfile.display())))?;
    let _restored_guard = PidGuard(restored);
    say(&format!(
        "restore took {:.2} s; restored pid {restored}",
        t.elapsed().as_secs_f64()
    ));

    let first = wait_for(STEP_TIMEOUT, || read_counter(&counter)).ok_or_else(|| {
        Error::Restore(format!(
            "demo: restored pid {restored} never wrote its counter"
        ))
    })?;
    std::thread::sleep(RUN_AFTER_RESTORE);
    let later = read_counter(&counter)
        .ok_or_else(|| Error::Restore(format!("demo: cannot read {}", counter.display())))?;
    say(&format!(
        "after restore: first count {} (stopped at {}), {:.1} s later {} (pid {})",
        first.count,
        at_dump.count,
        RUN_AFTER_RESTORE.as_secs_f64(),
        later.count,
        later.pid
    ));

    // 4. Clean up: kill the restored process (not our child: nothing to reap).
    let _ = kill(Pid::from_raw(restored), Signal::SIGKILL);
    say(&format!("killed restored pid {restored}"));

    verdict(pid, restored, &at_dump, &first, &later).map_err(Error::Restore)?;
    say(&format!(
        "OK: the count went on from {} to {} in pid {pid}",
        at_dump.count, later.count
    ));
    if images_dir.is_some() {
        say(&format!(
            "images kept in {} (see: cairn show {0})",
            images.display()
        ));
    }
    Ok(())
}

/// Did the restored process continue (same pid, counting on from the
/// checkpoint rather than from 1)?
fn verdict(
    pid: i32,
    restored: i32,
    at_dump: &Counter,
    first: &Counter,
    later: &Counter,
) -> Result<(), String> {
    if restored != pid || first.pid != pid || later.pid != pid {
        return Err(format!(
            "demo: pid changed: dumped {pid}, restore reported {restored}, counter says {} then {}",
            first.pid, later.pid
        ));
    }
    if first.count <= at_dump.count {
        return Err(format!(
            "demo: count did not continue: stopped at {}, restored process wrote {}",
            at_dump.count, first.count
        ));
    }
    if later.count <= first.count {
        return Err(format!(
            "demo: restored process stopped counting: {} then {}",
            first.count, later.count
        ));
    }
    Ok(())
}

fn say(msg: &str) {
    eprintln!("demo: {msg}");
}

/// One line the workload wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counter {
    count: u64,
    pid: i32,
}

fn parse_counter(s: &str) -> Option<Counter> {
    let mut w = s.split_whitespace();
    match (w.next()?, w.next()?, w.next()?, w.next()?) {
        ("count", n, "pid", p) => Some(Counter {
            count: n.parse().ok()?,
            pid: p.parse().ok()?,
        }),
        _ => None,
    }
}

fn read_counter(path: &Path) -> Option<Counter> {
    parse_counter(&std::fs::read_to_string(path).ok()?)
}

/// Polls `f` every 20 ms until it returns something or `timeout` passes.
fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Runs `cairn ARGS` to completion (bounded by [`STEP_TIMEOUT`]); its
/// stdout goes to our stderr so the demo's own stdout stays empty.
fn run_cairn(exe: &Path, args: &[&str]) -> Result<ExitStatus> {
    let out = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .at("<stderr>")?;
    let child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .spawn()
        .at(exe)?;
    let mut g = ChildGuard(Some(child));
    let pid = g.pid();
    g.reap(STEP_TIMEOUT).ok_or_else(|| {
        Error::sys(
            pid,
            format!("cairn {}", args[0]),
            std::io::Error::other("timed out"),
        )
    })
}

/// Number of files and total bytes directly in `dir`.
fn dir_size(dir: &Path) -> Result<(usize, u64)> {
    let mut files = 0;
    let mut bytes = 0;
    for e in std::fs::read_dir(dir).at(dir)? {
        let e = e.at(dir)?;
        let m = e.metadata().at(e.path())?;
        if m.is_file() {
            files += 1;
            bytes += m.len();
        }
    }
    Ok((files, bytes))
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

/// A child process killed (SIGKILL) and reaped on drop unless reaped before.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn pid(&self) -> i32 {
        self.0.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Waits up to `timeout` for the child to exit and reaps it.
    fn reap(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.0.as_mut()?;
        let status = wait_for(timeout, || child.try_wait().ok().flatten())?;
        self.0 = None;
        Some(status)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A process that is not our child, killed by pid on drop (an error path
/// must not leave the restored workload running).
struct PidGuard(i32);

impl Drop for PidGuard {
    fn drop(&mut self) {
        if self.0 > 0 {
            let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
        }
    }
}

/// The demo's private directory (counter, pidfile, default images),
/// removed on drop.
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn create() -> Result<WorkDir> {
        use std::os::unix::fs::DirBuilderExt;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!("cairn-demo-{}-{nanos}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .at(&path)?;
        Ok(WorkDir { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: i32 = 77;

    fn c(count: u64, pid: i32) -> Counter {
        Counter { count, pid }
    }

    #[test]
    fn counter_lines_parse() {
        assert_eq!(parse_counter("count 12 pid 345\n"), Some(c(12, 345)));
        assert_eq!(parse_counter("restoring\n"), None);
        assert_eq!(parse_counter(""), None);
        assert_eq!(parse_counter("count x pid 1"), None);
    }

    #[test]
    fn verdict_wants_same_pid_and_a_continued_count() {
        assert!(verdict(P, P, &c(6, P), &c(7, P), &c(14, P)).is_ok());
        // Started again from 1.
        assert!(verdict(P, P, &c(6, P), &c(1, P), &c(8, P)).is_err());
        // Other pid.
        assert!(verdict(P, P + 1, &c(6, P), &c(7, P), &c(14, P)).is_err());
        assert!(verdict(P, P, &c(6, P), &c(7, P + 1), &c(14, P + 1)).is_err());
        // Stuck.
        assert!(verdict(P, P, &c(6, P), &c(7, P), &c(7, P)).is_err());
    }

    #[test]
    fn workload_counts_into_its_file() {
        let dir = WorkDir::create().unwrap();
        let file = dir.path.join("counter");
        count(&file, Some(2)).unwrap();
        assert_eq!(read_counter(&file), Some(c(2, std::process::id() as i32)));
    }
}
