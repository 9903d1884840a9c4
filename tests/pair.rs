//! `cairn pair` (issue 18): a program run as a process pair. The program
//! is `pair_counter`, which checks its own continuity (memory, its
//! progress file, its pid) at every step and writes its count with the
//! time into its progress file.

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::job::JobFiles;
use common::*;

/// One pair's files (`out`, `pair.log`, `primary.pid`), and the `cairn
/// pair` running (killed by pid on drop).
struct Pair {
    f: JobFiles,
    pidfile: PathBuf,
    child: Option<Child>,
}

impl std::ops::Deref for Pair {
    type Target = JobFiles;
    fn deref(&self) -> &JobFiles {
        &self.f
    }
}

impl Pair {
    fn new(tag: &str) -> Pair {
        let f = JobFiles::new(tag, "out", "pair.log");
        Pair {
            pidfile: f.dir.join("primary.pid"),
            f,
            child: None,
        }
    }

    /// Starts `cairn -v -o pair.log pair -D ck --pidfile primary.pid
    /// FLAGS -- CMD`, its stdout and stderr (and the program's) in `out`.
    fn start(&mut self, flags: &[&str], cmd: &[&str]) {
        let child = self
            .cairn("pair", flags)
            .arg("--pidfile")
            .arg(&self.pidfile)
            .arg("--")
            .args(cmd)
            .spawn()
            .expect("spawn cairn pair");
        self.child = Some(child);
    }

    fn start_counter(&mut self, flags: &[&str], step_ms: u32, steps: u32) {
        let bin = workload_bin("pair_counter");
        let prog = self.progress.to_string_lossy().into_owned();
        self.start(
            flags,
            &[
                &bin.to_string_lossy(),
                &prog,
                &step_ms.to_string(),
                &steps.to_string(),
            ],
        );
    }

    /// (count, realtime ns) from the progress file.
    fn progress(&self) -> Option<(u64, u128)> {
        self.progress_of()
    }

    fn count(&self, what: &str) -> usize {
        self.log_text().matches(what).count()
    }

    fn wait_for(&self, what: &str, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.count(what) < n {
            assert!(
                Instant::now() < deadline,
                "{n} x {what:?} not in the log: {}",
                self.describe()
            );
            if let Some(c) = self.child.as_ref() {
                assert!(
                    pid_exists(c.id() as i32),
                    "cairn pair ended: {}",
                    self.describe()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let c = self.child.as_mut().expect("started");
        match wait_timeout(c, timeout) {
            Some(st) => {
                self.child = None;
                exit_code(&st)
            }
            None => panic!("cairn pair did not exit: {}", self.describe()),
        }
    }

    /// The pids of the namespaces' inits cairn pair logged.
    fn inits(&self) -> Vec<i32> {
        let text = self.log_text();
        text.split("(init ")
            .skip(1)
            .filter_map(|s| s.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
            .collect()
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            // Its PDEATHSIG takes the namespaces' inits, and them the programs.
            kill_tree(c);
        }
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn kill(pid: i32, sig: i32) {
    // SAFETY: kill takes integers only.
    unsafe { libc::kill(pid, sig) };
}

/// Kills the primary with SIGKILL once its last checkpoint is some time
/// old; the backup takes over: a new pid in the pid file, and the
/// counter goes on from the backup's checkpoint, not from zero (the
/// program counts one step every `step_ms`). Returns the new primary's
/// pid.
fn kill_and_take_over(p: &Pair, n: usize, step_ms: u64) -> i32 {
    let old = read_pidfile(&p.pidfile).expect("pid file");
    assert!(pid_exists(old));
    // Mid-way between two checkpoints.
    let ckpts = p.count(" complete in ");
    p.wait_for(" complete in ", ckpts + 1, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let (before, _) = p.progress().unwrap();
    let t0 = now_ns();
    kill(old, libc::SIGKILL);
    let first = first_record_after_kill(p);
    p.wait_for(&format!("takeover {n}:"), 1, Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(30);
    let new = loop {
        match read_pidfile(&p.pidfile) {
            Some(q) if q != old => break q,
            _ => {}
        }
        assert!(Instant::now() < deadline, "pid file: {}", p.describe());
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(pid_exists(new), "new primary {new}: {}", p.describe());
    assert!(wait_pid_gone(old, Duration::from_secs(10)));
    let log = p.log_text();
    check_resumed(p, before, t0, first, n, step_ms, &log, &log);
    new
}

/// The first record of the counter written more than 5 ms after the
/// primary was killed (`kill` has returned: the dying primary writes
/// nothing that late), read from the moment of the kill on: the new
/// primary's first steps, before it has counted past the old one. (Read
/// later, a primary that made no step between its last checkpoint and the
/// kill has nothing to tell them apart by count.) Count and time.
fn first_record_after_kill(p: &Pair) -> (u64, u128) {
    let after = now_ns() + 5_000_000;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some((c, t)) = p.progress() {
            if t > after {
                return (c, t);
            }
        }
        assert!(Instant::now() < deadline, "no progress: {}", p.describe());
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The counter goes on from the backup's checkpoint, not from zero: its
/// first record after the kill, `first` ([`first_record_after_kill`];
/// read a step or two late under load, it can only make the loss look
/// smaller, never hide a restart from zero). The backup is the newest one held
/// before takeover `n` (`takeover_log` holds the "backup ready from" and
/// "takeover" lines, `ckpt_log` the "checkpoint ... complete in" ones),
/// and no more steps are lost than the program could count (one every
/// `step_ms`) between the start of that checkpoint and the kill. How old
/// the held backup is depends on how long checkpoints and backups take:
/// on an idle host about an interval (1 s, 100 steps), in a guest under
/// TCG several times that; a fixed number of steps would test the
/// machine's speed, not the pair.
#[allow(clippy::too_many_arguments)]
fn check_resumed(
    p: &Pair,
    before: u64,
    t0: u128,
    (resumed, at): (u64, u128),
    n: usize,
    step_ms: u64,
    takeover_log: &str,
    ckpt_log: &str,
) {
    let lost = before.saturating_sub(resumed.saturating_sub(1));
    let ckpt = takeover_ckpt(takeover_log, n)
        .unwrap_or_else(|| panic!("takeover {n}: no checkpoint named:\n{takeover_log}"));
    let held = takeover_log
        .split(&format!("takeover {n}:"))
        .next()
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split("backup ready from ").nth(1))
        .filter_map(|r| r.split_whitespace().next())
        .next_back();
    assert_eq!(
        held,
        Some(ckpt.as_str()),
        "takeover {n}: not from the newest backup held:\n{takeover_log}"
    );
    let began = ckpt_began_ns(ckpt_log, &ckpt)
        .unwrap_or_else(|| panic!("no line of checkpoint {ckpt}:\n{ckpt_log}"));
    let most = (t0.saturating_sub(began) / (u128::from(step_ms) * 1_000_000)) as u64 + 2;
    eprintln!(
        "takeover {n}: count {before} at the kill, {resumed} {:.1} ms after it ({lost} steps \
         lost; {ckpt} began {:.1} ms before the kill: at most {most})",
        (at - t0) as f64 / 1e6,
        t0.saturating_sub(began) as f64 / 1e6
    );
    // A program started afresh writes count 1 first; a backup goes on
    // from its checkpoint's count (at least 1: taken an interval after
    // the start).
    assert!(
        resumed > 1,
        "the counter started again from zero: {resumed}"
    );
    assert!(
        lost <= most,
        "{lost} steps lost, more than the {most} counted since {ckpt} began: {}",
        p.describe()
    );
}

/// Nanoseconds since the epoch of a log line's timestamp
/// (`YYYY-MM-DDTHH:MM:SS.mmmZ`, UTC, its first word).
fn log_time_ns(line: &str) -> Option<u128> {
    let ts = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = ts.split_once('T')?;
    let d: Vec<i64> = date
        .split('-')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let (hms, ms) = time.split_once('.')?;
    let t: Vec<i64> = hms
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let (&[y, m, dd], &[hh, mm, ss]) = (d.as_slice(), t.as_slice()) else {
        return None;
    };
    // Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + dd - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(secs as u128 * 1_000_000_000 + ms.parse::<u128>().ok()? * 1_000_000)
}

/// The checkpoint the backup of takeover `n` came from, from the line
/// "takeover N: ... the backup from NAME runs as the primary" of `log`.
fn takeover_ckpt(log: &str, n: usize) -> Option<String> {
    let line = log
        .lines()
        .find(|l| l.contains(&format!("takeover {n}:")))?;
    let rest = line.split("the backup from ").nth(1)?;
    Some(rest.split_whitespace().next()?.to_string())
}

/// When checkpoint `name` began (ns since the epoch): its "checkpoint
/// NAME complete in D ms" line's time less D (and 2 ms of rounding).
fn ckpt_began_ns(log: &str, name: &str) -> Option<u128> {
    let line = (log.lines()).find(|l| l.contains(&format!("checkpoint {name} complete in ")))?;
    let ms: f64 = line
        .split(" complete in ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(log_time_ns(line)?.saturating_sub((ms * 1e6) as u128 + 2_000_000))
}

/// `cairn pair --interval 1s`: SIGKILL the primary twice; each time the
/// backup takes over from the newest checkpoint (the program's own
/// checks pass: memory, file and pid continuous), the pid file names the
/// new primary, and a new backup is made for the next failure. SIGTERM
/// ends both, exit 0.
#[test]
fn sigkill_primary_twice_backup_takes_over() {
    if skip_unless_root() {
        return;
    }
    let mut p = Pair::new("pair-kill");
    p.start_counter(&["--interval", "1s"], 10, 0);
    // A checkpoint takes seconds in a guest under TCG on a loaded host.
    p.wait_for("backup ready", 1, Duration::from_secs(180));
    let first = read_pidfile(&p.pidfile).unwrap();
    let second = kill_and_take_over(&p, 1, 10);
    assert_ne!(first, second);
    let ready = p.count("backup ready");
    p.wait_for("backup ready", ready + 1, Duration::from_secs(180));
    let third = kill_and_take_over(&p, 2, 10);
    assert_ne!(second, third);
    // Still counting.
    let (c, _) = p.progress().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(p.progress().unwrap().0 > c, "{}", p.describe());
    let inits = p.inits();
    kill(p.child.as_ref().unwrap().id() as i32, libc::SIGTERM);
    let code = p.wait_exit(Duration::from_secs(60));
    assert_eq!(code, 0, "{}", p.describe());
    assert!(wait_pid_gone(third, Duration::from_secs(10)));
    for i in inits {
        assert!(
            wait_pid_gone(i, Duration::from_secs(10)),
            "init {i} left: {}",
            p.describe()
        );
    }
    let out = fs::read_to_string(&p.out).unwrap_or_default();
    assert!(!out.contains("FAIL"), "{}", p.describe());
    assert!(!p.pidfile.exists(), "the pid file stays after the end");
    assert_eq!(p.count("takeover "), 2, "{}", p.describe());
}

/// A primary that exits 0 ends the pair, which exits 0: no takeover.
#[test]
fn primary_exit_zero_ends_the_pair() {
    if skip_unless_root() {
        return;
    }
    let mut p = Pair::new("pair-exit0");
    p.start_counter(&["--interval", "300ms"], 10, 150);
    let code = p.wait_exit(Duration::from_secs(120));
    assert_eq!(code, 0, "{}", p.describe());
    let out = fs::read_to_string(&p.out).unwrap_or_default();
    assert!(out.contains("PASS count=150"), "{}", p.describe());
    assert!(p.log_text().contains("exited with status 0: the pair ends"));
    assert_eq!(p.count("takeover "), 0, "{}", p.describe());
    for i in p.inits() {
        assert!(wait_pid_gone(i, Duration::from_secs(10)), "init {i} left");
    }
}

/// A program that cannot run is refused before anything starts: exit 2,
/// the program named, no pid file.
#[test]
fn bad_command_fails_cleanly() {
    if skip_unless_root() {
        return;
    }
    let mut p = Pair::new("pair-bad");
    let missing = p.dir.join("no-such-program");
    p.start(&["--interval", "1s"], &[&missing.to_string_lossy()]);
    let code = p.wait_exit(Duration::from_secs(30));
    assert_eq!(code, 2, "{}", p.describe());
    let out = fs::read_to_string(&p.out).unwrap_or_default();
    assert!(
        out.contains("cannot run") && out.contains("no-such-program"),
        "{}",
        p.describe()
    );
    assert!(!p.pidfile.exists());
}

/// A listening TCP socket is the primary's: a backup could not hold it
/// beside it. The pair refuses the checkpoint that has one, naming the
/// socket, and ends (exit 6, unsupported), the program killed.
#[test]
fn tcp_listener_refused() {
    if skip_unless_root() {
        return;
    }
    let mut p = Pair::new("pair-listen");
    let ready = p.dir.join("ready.pid");
    p.start(
        &["--interval", "500ms"],
        &[
            &workload_bin("sk_tcp_listen").to_string_lossy(),
            "--pidfile",
            &ready.to_string_lossy(),
        ],
    );
    let code = p.wait_exit(Duration::from_secs(60));
    assert_eq!(code, 6, "{}", p.describe());
    let out = fs::read_to_string(&p.out).unwrap_or_default();
    assert!(
        out.contains("a TCP socket") && out.contains("cairn pair refuses it"),
        "{}",
        p.describe()
    );
    for i in p.inits() {
        assert!(wait_pid_gone(i, Duration::from_secs(10)), "init {i} left");
    }
}

/// The takeover starts when the primary begins to exit: its
/// `/proc/PID/stat` shows PF_EXITING and the status (137) before the
/// kernel has torn down its memory (256 MiB here, which takes a while)
/// and before its parent hears of its end. cairn pair logs that it acted
/// then; the backup takes over and the counter goes on from its
/// checkpoint (the program's own checks pass).
#[test]
fn takeover_starts_when_the_primary_begins_to_exit() {
    if skip_unless_root() {
        return;
    }
    let mut p = Pair::new("pair-exiting");
    let bin = workload_bin("pair_counter");
    let prog = p.progress.to_string_lossy().into_owned();
    // 256 MiB, 20 steps a second: the held backup's lag (an interval, a
    // checkpoint and a backup's preparation, some seconds for this size).
    p.start(
        &["--interval", "3s"],
        &[&bin.to_string_lossy(), &prog, "50", "0", "256"],
    );
    p.wait_for("backup ready", 1, Duration::from_secs(180));
    let old = read_pidfile(&p.pidfile).unwrap();
    kill_and_take_over(&p, 1, 50);
    assert!(
        p.log_text().contains(&format!(
            "the primary (pid {old}) began to exit with status 137"
        )),
        "the takeover waited for the end: {}",
        p.describe()
    );
    kill(p.child.as_ref().unwrap().id() as i32, libc::SIGTERM);
    assert_eq!(p.wait_exit(Duration::from_secs(60)), 0, "{}", p.describe());
    assert!(!p.out_text().contains("FAIL"), "{}", p.describe());
}

/// The program's progress file on a tmpfs (a volatile file system, saved
/// whole in every checkpoint): the primary keeps changing it, so a backup
/// restored beside it finds other contents than at the checkpoint, which
/// a restore refuses. A held backup uses the primary's file as it is and
/// writes the checkpointed contents back at its release: after a
/// SIGKILL the counter goes on from the checkpoint with the file to
/// match (the program checks the record in the file against its memory
/// at every step).
#[test]
fn tmpfs_file_written_back_at_the_takeover() {
    if skip_unless_root() {
        return;
    }
    let fs = common::tmpfs::Tmpfs::mount("pair-tmpfs", "16m");
    let mut p = Pair::new("pair-tmpfs");
    p.f.progress = fs.path.join("progress");
    p.start_counter(&["--interval", "1s"], 10, 0);
    p.wait_for("backup ready", 1, Duration::from_secs(60));
    kill_and_take_over(&p, 1, 10);
    let (c, _) = p.progress().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(p.progress().unwrap().0 > c, "{}", p.describe());
    kill(p.child.as_ref().unwrap().id() as i32, libc::SIGTERM);
    assert_eq!(p.wait_exit(Duration::from_secs(60)), 0, "{}", p.describe());
    assert!(!p.out_text().contains("FAIL"), "{}", p.describe());
}

/// The backup machine of a pair: `cairn -v -o remote.log pair --listen
/// ADDR:PORT --key KEY -D ckB --pidfile remote.pid` in network namespace
/// `ns`, its output in `remote.out`; killed by pid on drop.
struct Remote {
    child: Child,
    log: PathBuf,
    out: PathBuf,
    pidfile: PathBuf,
}

impl Remote {
    fn start(p: &Pair, ns: &str, addr: &str, key: &std::path::Path, extra: &[&str]) -> Remote {
        let (log, out) = (p.dir.join("remote.log"), p.dir.join("remote.out"));
        let pidfile = p.dir.join("remote.pid");
        let mut cmd = std::process::Command::new(cairn_bin());
        cmd.arg("-v")
            .arg("-o")
            .arg(&log)
            .args(["pair", "--listen", addr, "--key"])
            .arg(key)
            .arg("-D")
            .arg(p.dir.join("ckB"))
            .arg("--pidfile")
            .arg(&pidfile)
            .args(extra)
            .stdin(std::process::Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(p.dir.join("remote.err")).unwrap());
        let child = common::netns::Net::spawn(ns, &mut cmd);
        let r = Remote {
            child,
            log,
            out,
            pidfile,
        };
        r.wait_for("listening on", 1, Duration::from_secs(30));
        r
    }

    fn text(&self) -> String {
        let err = self.out.with_file_name("remote.err");
        format!(
            "--- remote.log ---\n{}\n--- remote.err ---\n{}",
            tail(&self.log, 6000),
            tail(&err, 3000)
        )
    }

    fn wait_for(&self, what: &str, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches(what)
            .count()
            < n
        {
            assert!(
                Instant::now() < deadline && pid_exists(self.child.id() as i32),
                "{n} x {what:?} not in the backup machine's log: {}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        kill_tree(&mut self.child);
    }
}

/// A private key file of 32 bytes `byte`.
fn key_file(p: &Pair, name: &str, byte: u8) -> PathBuf {
    use std::os::unix::fs::OpenOptionsExt;
    let path = p.dir.join(name);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut f, &[byte; 32]).unwrap();
    path
}

/// Two network namespaces as two machines, the backup machine's `cairn
/// pair --listen EXTRA` in B and the primary's `cairn pair --interval 1s
/// --backup-on` of the counter in A; returns once a backup is held on B.
fn remote_pair(tag: &str, port: u16, extra: &[&str]) -> (common::netns::Net, Pair, Remote) {
    let net = common::netns::Net::new("1gbit");
    let mut p = Pair::new(tag);
    let key = key_file(&p, "key", 0x5a);
    let addr = format!("{}:{port}", net.addr_b);
    let remote = Remote::start(&p, &net.b, &addr, &key, extra);
    let bin = workload_bin("pair_counter");
    let prog = p.progress.to_string_lossy().into_owned();
    let mut cmd = p.cairn("pair", &["--interval", "1s", "--backup-on", &addr, "--key"]);
    cmd.arg(&key)
        .arg("--pidfile")
        .arg(&p.pidfile)
        .arg("--")
        .args([bin.to_str().unwrap(), &prog, "10", "0"]);
    p.child = Some(common::netns::Net::spawn(&net.a, &mut cmd));
    remote.wait_for("backup ready from", 1, Duration::from_secs(90));
    p.wait_for("backup ready on", 1, Duration::from_secs(30));
    (net, p, remote)
}

/// Waits until mid-way between two checkpoints (500 ms after one): the
/// count then and the time (ns), for [`check_resumed`] after a kill.
fn mid_interval(p: &Pair) -> (u64, u128) {
    let ckpts = p.count(" complete in ");
    p.wait_for(" complete in ", ckpts + 1, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    (p.progress().unwrap().0, now_ns())
}

/// `cairn pair --backup-on` with two network namespaces as the two
/// machines: the primary's side (`cairn pair` and the counter) in A, the
/// backup machine's `cairn pair --listen` in B, over a veth pair. Once a
/// backup is held on B, the primary's whole side is killed (SIGKILL to
/// its `cairn pair` and to the primary): B notices the lost connection,
/// releases its backup, which goes on counting from the last checkpoint
/// (the program checks its memory, file and pid), its pid in B's pid
/// file; B goes on as a local pair (a new checkpoint and a held backup
/// there), and SIGTERM ends it with exit 0.
#[test]
fn backup_on_another_machine_takes_over_when_the_primary_side_dies() {
    if skip_unless_root() {
        return;
    }
    let (_net, mut p, mut remote) = remote_pair("pair-remote", 7018, &[]);
    let old = read_pidfile(&p.pidfile).expect("pid file");
    let (before, t0) = mid_interval(&p);
    let side = p.child.take().unwrap();
    kill(side.id() as i32, libc::SIGKILL);
    kill(old, libc::SIGKILL);
    let first = first_record_after_kill(&p);
    let mut side = side;
    let _ = side.wait();
    remote.wait_for("takeover 1:", 1, Duration::from_secs(60));
    let new = read_pidfile(&remote.pidfile).expect("the backup machine's pid file");
    assert_ne!(new, old);
    assert!(pid_exists(new), "new primary {new}: {}", remote.text());
    assert!(wait_pid_gone(old, Duration::from_secs(10)));
    let on_b = fs::read_to_string(&remote.log).unwrap_or_default();
    check_resumed(&p, before, t0, first, 1, 10, &on_b, &p.log_text());
    // Still counting, and a local pair on B now.
    remote.wait_for("backup ready from", 2, Duration::from_secs(90));
    let (c, _) = p.progress().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(p.progress().unwrap().0 > c, "{}", remote.text());
    let log = fs::read_to_string(&remote.log).unwrap_or_default();
    assert!(
        log.contains("is lost (") && log.contains("without its end"),
        "{}",
        remote.text()
    );
    kill(remote.child.id() as i32, libc::SIGTERM);
    let st = wait_timeout(&mut remote.child, Duration::from_secs(60)).expect("listener exits");
    assert_eq!(exit_code(&st), 0, "{}", remote.text());
    assert!(wait_pid_gone(new, Duration::from_secs(10)));
    let out = fs::read_to_string(&p.out).unwrap_or_default();
    assert!(!out.contains("FAIL"), "{}", p.describe());
}

/// A backup machine with another key: the primary's `cairn pair` ends
/// with an error naming the key before it starts the program; the
/// listener refuses the connection, logs it and keeps listening.
#[test]
fn backup_on_with_a_wrong_key_is_refused() {
    if skip_unless_root() {
        return;
    }
    let net = common::netns::Net::new("1gbit");
    let mut p = Pair::new("pair-remote-key");
    let good = key_file(&p, "key", 0x5a);
    let other = key_file(&p, "other", 0x33);
    let addr = format!("{}:7019", net.addr_b);
    let mut remote = Remote::start(&p, &net.b, &addr, &other, &[]);
    let bin = workload_bin("pair_counter");
    let prog = p.progress.to_string_lossy().into_owned();
    let mut cmd = p.cairn("pair", &["--backup-on", &addr, "--key"]);
    cmd.arg(&good)
        .arg("--")
        .args([bin.to_str().unwrap(), &prog, "10", "0"]);
    p.child = Some(common::netns::Net::spawn(&net.a, &mut cmd));
    let code = p.wait_exit(Duration::from_secs(60));
    assert_ne!(code, 0, "{}", p.describe());
    let out = fs::read_to_string(&p.out).unwrap_or_default();
    assert!(out.contains("key"), "the error does not say why: {out}");
    assert!(!p.progress.exists(), "the program was started");
    let err = p.dir.join("remote.err");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fs::read_to_string(&err)
        .unwrap_or_default()
        .contains("refused")
    {
        assert!(Instant::now() < deadline, "{}", remote.text());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        matches!(remote.child.try_wait(), Ok(None)),
        "{}",
        remote.text()
    );
    let stored = fs::read_dir(p.dir.join("ckB"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(stored, 0, "the listener stored something for a wrong key");
}

/// Only the primary dies (SIGKILL), its `cairn pair` lives: it tells the
/// backup machine, which takes over at once (no lost-connection rule
/// involved); the primary's `cairn pair` exits 0, the counter goes on on
/// B from the last checkpoint.
#[test]
fn backup_on_another_machine_told_of_the_primary_failure() {
    if skip_unless_root() {
        return;
    }
    let (_net, mut p, mut remote) = remote_pair("pair-remote-told", 7020, &[]);
    let old = read_pidfile(&p.pidfile).expect("pid file");
    let (before, t0) = mid_interval(&p);
    kill(old, libc::SIGKILL);
    let first = first_record_after_kill(&p);
    let code = p.wait_exit(Duration::from_secs(60));
    assert_eq!(code, 0, "{}", p.describe());
    assert!(p.log_text().contains("takes over"), "{}", p.describe());
    remote.wait_for("takeover 1:", 1, Duration::from_secs(60));
    let log = fs::read_to_string(&remote.log).unwrap_or_default();
    assert!(
        log.contains("says the primary failed with status 137"),
        "{}",
        remote.text()
    );
    let new = read_pidfile(&remote.pidfile).expect("the backup machine's pid file");
    assert!(pid_exists(new), "{}", remote.text());
    let on_b = fs::read_to_string(&remote.log).unwrap_or_default();
    check_resumed(&p, before, t0, first, 1, 10, &on_b, &p.log_text());
    kill(remote.child.id() as i32, libc::SIGTERM);
    let st = wait_timeout(&mut remote.child, Duration::from_secs(60)).expect("listener exits");
    assert_eq!(exit_code(&st), 0, "{}", remote.text());
    assert!(wait_pid_gone(new, Duration::from_secs(10)));
}

/// `--fence CMD` that fails: the connection is lost, the fence says no,
/// so the backup machine does not take over (a cut network must not make
/// two primaries): it exits 1, its held backup gone, no pid file.
#[test]
fn backup_on_another_machine_fence_refuses_the_takeover() {
    if skip_unless_root() {
        return;
    }
    let fence = ["--fence", "echo fenced $CAIRN_PAIR_PEER; exit 3"];
    let (_net, mut p, mut remote) = remote_pair("pair-remote-fence", 7021, &fence);
    let old = read_pidfile(&p.pidfile).expect("pid file");
    let side = p.child.take().unwrap();
    kill(side.id() as i32, libc::SIGKILL);
    kill(old, libc::SIGKILL);
    let mut side = side;
    let _ = side.wait();
    let st = wait_timeout(&mut remote.child, Duration::from_secs(60)).expect("listener exits");
    assert_eq!(exit_code(&st), 1, "{}", remote.text());
    let log = fs::read_to_string(&remote.log).unwrap_or_default();
    assert!(log.contains("no takeover"), "{}", remote.text());
    assert!(!log.contains("takeover 1:"), "{}", remote.text());
    assert!(!remote.pidfile.exists(), "{}", remote.text());
    let out = fs::read_to_string(&remote.out).unwrap_or_default();
    assert!(out.contains("fenced 10.201."), "{out}");
    assert!(wait_pid_gone(old, Duration::from_secs(10)));
}
