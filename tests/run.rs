//! `cairn run` (issue 17): a job checkpointed periodically, on a signal
//! and on SIGTERM, restarted from its newest checkpoint, and `--pid-ns`.
//! The job is `run_counter`, which checks its own continuity (memory,
//! its progress file, its pid) at every step and prints PASS at the end.

mod common;

use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::job::JobFiles;
use common::*;

/// One job's files (checkpoint directory, progress file, `job.out`,
/// `run.log`) and its number of steps.
struct Job {
    f: JobFiles,
    steps: u64,
}

impl std::ops::Deref for Job {
    type Target = JobFiles;
    fn deref(&self) -> &JobFiles {
        &self.f
    }
}

impl Job {
    fn new(tag: &str, steps: u64) -> Job {
        Job {
            f: JobFiles::new(tag, "job.out", "run.log"),
            steps,
        }
    }

    /// Starts `cairn run` with `flags`, the job's stdout and stderr
    /// appended to `job.out` and cairn's log to `run.log`.
    fn start(&self, flags: &[&str], env: &[(&str, &str)], children: u32) -> Child {
        let mut c = self.cairn("run", flags);
        c.arg("--")
            .arg(workload_bin("run_counter"))
            .arg(&self.progress)
            .arg(self.steps.to_string());
        if children > 0 {
            c.arg(children.to_string());
        }
        for (k, v) in env {
            c.env(k, v);
        }
        c.spawn().expect("spawn cairn run")
    }

    /// (count, pid) from the progress file.
    fn progress(&self) -> Option<(u64, i32)> {
        self.progress_of()
    }

    fn wait_count(&self, n: u64, timeout: Duration) -> (u64, i32) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((c, p)) = self.progress() {
                if c >= n {
                    return (c, p);
                }
            }
            assert!(
                Instant::now() < deadline,
                "the job did not reach {n}: {}",
                self.describe()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Lines "checkpoint ... complete" in cairn's log.
    fn completed(&self) -> usize {
        self.log_text().matches(" complete: frozen ").count()
    }

    fn wait_completed(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.completed() < n {
            assert!(
                Instant::now() < deadline,
                "{n} checkpoints not complete: {}",
                self.describe()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The entries of the checkpoint directory but `control/` (libcairn's
    /// socket, there while cairn run runs, and data).
    fn checkpoints(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&self.ck)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n != "control")
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn describe(&self) -> String {
        format!(
            "{}\n--- checkpoints: {:?}",
            self.f.describe(),
            self.checkpoints()
        )
    }

    fn wait_exit(&self, child: &mut Child, timeout: Duration) -> i32 {
        self.f.wait_exit(child, timeout)
    }

    /// SIGTERM to cairn run: it takes a final checkpoint and exits 0.
    fn term(&self, run: &mut Child) {
        signal(run.id() as i32, libc::SIGTERM);
        let code = self.wait_exit(run, Duration::from_secs(120));
        assert_eq!(code, 0, "cairn run after SIGTERM: {}", self.describe());
    }

    /// The job's output says PASS with the full count, and no FAIL.
    fn assert_pass_output(&self) {
        let out = fs::read_to_string(&self.out).unwrap();
        assert!(
            out.contains(&format!("PASS count={}", self.steps)) && !out.contains("FAIL"),
            "{}",
            self.describe()
        );
    }

    /// cairn run exits 0 when the job finishes, and the job passed.
    fn assert_finishes(&self, run: &mut Child) {
        let code = self.wait_exit(run, Duration::from_secs(180));
        assert_eq!(code, 0, "{}", self.describe());
        self.assert_pass_output();
    }

    /// Starts cairn run again with `flags` (a restart: it restores the
    /// newest checkpoint) and waits until the job finishes and passes.
    fn restart_finishes(&self, flags: &[&str], children: u32) {
        let mut run = self.start(flags, &[], children);
        self.assert_finishes(&mut run);
    }

    /// Waits for `n` complete checkpoints and then for the count `c`;
    /// returns the job's pid.
    fn wait_checkpoints_and_count(&self, n: usize, c: u64) -> i32 {
        self.wait_completed(n, Duration::from_secs(60));
        self.wait_count(c, Duration::from_secs(60)).1
    }

    fn done(&self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Steps (10 ms each) of a job that a SIGTERM must find running: room
/// for its periodic checkpoints and the final one's start in a slow
/// machine (a vm-test guest under TCG took seconds per checkpoint, and a
/// job of 1000 steps ended by itself at its SIGTERM).
const TERM_STEPS: u64 = 3000;

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill takes integers only.
    unsafe { libc::kill(pid, sig) };
}

/// The job stops on SIGTERM after a final checkpoint (cairn run exits
/// 0), and a second `cairn run` with the same directory restores it: the
/// counter goes on from where it was and finishes.
#[test]
fn sigterm_checkpoints_and_restart_goes_on() {
    if skip_unless_root() {
        return;
    }
    let job = Job::new("run-term", TERM_STEPS);
    let mut run = job.start(&["--interval", "1s"], &[], 0);
    let pid = job.wait_checkpoints_and_count(1, 60);
    job.term(&mut run);
    assert!(
        wait_pid_gone(pid, Duration::from_secs(10)),
        "the job runs on"
    );
    let (stopped, _) = job.progress().unwrap();
    assert!(stopped < job.steps, "finished before the SIGTERM");
    assert!(
        job.completed() >= 2,
        "no final checkpoint: {}",
        job.describe()
    );
    job.restart_finishes(&["--interval", "1s"], 0);
    assert!(
        job.log_text().contains("run: restoring"),
        "{}",
        job.describe()
    );
    assert_eq!(job.progress().unwrap().0, job.steps);
    job.done();
}

/// `--checkpoint-signal` takes a checkpoint at once; `--keep 2` leaves
/// the two newest; a job that ends by itself passes its status on.
#[test]
fn checkpoint_signal_and_keep() {
    if skip_unless_root() {
        return;
    }
    // Four checkpoints must fit in the job's life: a guest under TCG
    // took 3-7 s per checkpoint and 23 s for 1000 steps (the job ended
    // during the fourth).
    let job = Job::new("run-sig", if in_vm_guest() { 4000 } else { 1000 });
    let mut run = job.start(&["--checkpoint-signal", "SIGUSR2", "--keep", "2"], &[], 0);
    job.wait_count(5, Duration::from_secs(60));
    for n in 1..=4 {
        signal(run.id() as i32, libc::SIGUSR2);
        job.wait_completed(n, Duration::from_secs(60));
    }
    // Removed once the newest is complete.
    let deadline = Instant::now() + Duration::from_secs(10);
    while job.checkpoints() != ["ckpt-000003", "ckpt-000004"] {
        assert!(Instant::now() < deadline, "--keep 2: {}", job.describe());
        std::thread::sleep(Duration::from_millis(20));
    }
    job.assert_finishes(&mut run);
    // The tree's status, exit code or signal, is cairn run's.
    for (cmd, want) in [("exit 3", 3), ("kill -9 $$", 137)] {
        let d = job.dir.join(format!("status-{want}"));
        let st = Command::new(cairn_bin())
            .arg("run")
            .arg("-D")
            .arg(&d)
            .args(["--", "/bin/sh", "-c", cmd])
            .stdin(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(exit_code(&st), want, "sh -c {cmd:?}");
    }
    job.done();
}

/// `--incremental`: checkpoints are layers on the previous one; a
/// restart restores through the chain.
#[test]
fn incremental_layers_restore() {
    if skip_unless_root() {
        return;
    }
    let job = Job::new("run-incr", TERM_STEPS);
    let mut run = job.start(
        &["--interval", "500ms", "--incremental", "--keep", "1"],
        &[],
        0,
    );
    job.wait_completed(3, Duration::from_secs(90));
    job.term(&mut run);
    assert!(
        job.log_text().contains(", a layer on ../ckpt-"),
        "{}",
        job.describe()
    );
    job.restart_finishes(&["--interval", "500ms", "--incremental", "--keep", "1"], 0);
    job.done();
}

/// Waits until the dump that `cairn run` (pid `run`) runs now says it
/// is paused at `CAIRN_PAUSE_AT=frozen` (its whole tree frozen, the
/// guardian told everything), then that `pid` is stopped there. A
/// traced stop alone is not enough: the background snapshot stops the
/// job and lets it go again while it arms, before the freeze (in a
/// vm-test guest under TCG that took long enough for a SIGTERM sent then
/// to be delivered, and for a cairn run killed then to leave its dump's
/// staging directory to nobody).
fn wait_frozen(job: &Job, run: u32, pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dumper_log(run).contains("paused at frozen") {
        assert!(
            Instant::now() < deadline,
            "the dump never paused at frozen: {}\n--- dumper:\n{}",
            job.describe(),
            dumper_log(run)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    while proc_state(pid) != Some('t') {
        assert!(
            Instant::now() < deadline,
            "never frozen: {}",
            job.describe()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn proc_state(pid: i32) -> Option<char> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(") ")?.1.chars().next()
}

/// `cairn run` killed (SIGKILL) while a checkpoint is being taken: the
/// tree is put back running by the dumper's guardian, the half-written
/// checkpoint goes, the previous one stays the newest and restores.
#[test]
fn killed_mid_checkpoint_leaves_the_previous_one() {
    if skip_unless_root() {
        return;
    }
    let job = Job::new("run-kill", TERM_STEPS);
    let env = [("CAIRN_RUN_PAUSE_FROM", "2"), ("CAIRN_PAUSE_AT", "frozen")];
    let mut run = job.start(&["--interval", "1s"], &env, 0);
    job.wait_completed(1, Duration::from_secs(60));
    let (_, pid) = job.wait_count(1, Duration::from_secs(10));
    // The second checkpoint holds the tree frozen: kill cairn run there.
    wait_frozen(&job, run.id(), pid);
    assert!(job
        .checkpoints()
        .iter()
        .any(|n| n.starts_with(".ckpt-000002")));
    run.kill().unwrap();
    let _ = run.wait();
    common::remove_scratch_of("cairn-run", run.id());
    // The job runs on, the staging directory goes.
    let (c0, _) = job.progress().unwrap();
    job.wait_count(c0 + 20, Duration::from_secs(30));
    // The guardian removes it once it has put the tree back (slow on a
    // loaded machine: failed once at 30 s beside three TCG guests).
    let deadline = Instant::now() + Duration::from_secs(60);
    while job.checkpoints() != ["ckpt-000001"] {
        assert!(Instant::now() < deadline, "left behind: {}", job.describe());
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(pid, libc::SIGKILL);
    assert!(wait_pid_gone(pid, Duration::from_secs(10)));
    job.restart_finishes(&["--interval", "1s"], 0);
    job.done();
}

fn started_pid(log: &str) -> i32 {
    let at = log.find("run: started ").expect("no start line");
    let rest = &log[at..];
    let p = rest.split(" as pid ").nth(1).unwrap();
    p.split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A job whose pids are taken when it is restarted comes back with
/// `--pid-ns`, in a pid namespace of its own where they are free: a
/// job started in its own namespace (pid 2 there, taken outside by
/// kthreadd; its child's pid too), and a job started without one whose
/// pid a process took meanwhile. A plain restore of them is refused.
#[test]
fn pid_ns_restores_with_pids_taken() {
    if skip_unless_root() {
        return;
    }
    // Started in its own pid namespace, with a child.
    let job = Job::new("run-pidns", TERM_STEPS);
    let mut run = job.start(&["--interval", "1s", "--pid-ns"], &[], 1);
    let pid = job.wait_checkpoints_and_count(1, 30);
    assert_eq!(pid, 2, "not pid 2 in its namespace: {}", job.describe());
    let outer = started_pid(&job.log_text());
    job.term(&mut run);
    assert!(wait_pid_gone(outer, Duration::from_secs(10)));
    let mut holder = hold_pid(outer);
    let newest = job.ck.join(job.checkpoints().last().unwrap());
    let out = Command::new(cairn_bin())
        .args(["restore", "-D"])
        .arg(&newest)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--pid-ns"),
        "plain restore: {err}"
    );
    job.restart_finishes(&["--interval", "1s", "--pid-ns"], 1);
    let _ = holder.kill();
    let _ = holder.wait();
    job.done();

    // Started without one; its pid is taken before the restart.
    let job = Job::new("run-pidns2", TERM_STEPS);
    let mut run = job.start(&["--interval", "1s"], &[], 0);
    let pid = job.wait_checkpoints_and_count(1, 30);
    job.term(&mut run);
    assert!(wait_pid_gone(pid, Duration::from_secs(10)));
    let mut holder = hold_pid(pid);
    job.restart_finishes(&["--interval", "1s", "--pid-ns"], 0);
    assert!(pid_exists(holder.id() as i32));
    let _ = holder.kill();
    let _ = holder.wait();
    job.done();
}

/// `cairn dump -t PID` of a tree in a child pid namespace (from outside)
/// records the pids it has there and needs `--pid-ns` to come back.
#[test]
fn dump_from_outside_records_inner_pids() {
    if skip_unless_root() {
        return;
    }
    let job = Job::new("run-outside", 100_000);
    // No control connection: its socket's peer (cairn run) is outside.
    let mut run = job.start(&["--pid-ns", "--no-control"], &[], 0);
    job.wait_count(5, Duration::from_secs(60));
    let outer = started_pid(&job.log_text());
    let img = job.dir.join("img");
    let out = Command::new(cairn_bin())
        .args(["dump", "-R", "-t"])
        .arg(outer.to_string())
        .arg("-D")
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        img.join("core-2.img").exists(),
        "{:?}",
        fs::read_dir(&img).unwrap().count()
    );
    kill_tree(&mut run);
    job.done();
}

/// A job that never calls libcairn holds nothing of cairn's: the control
/// socket is only named in its environment (libcairn connects on its
/// first call). So plain `cairn dump` from outside, without
/// `--no-control`, takes it; the job is killed by the dump, and a plain
/// restore goes on counting from where it was to the end (the job checks
/// its memory, file and pid at every step).
#[test]
fn plain_job_holds_no_control_fd_and_dumps_from_outside() {
    if skip_unless_root() {
        return;
    }
    let job = Job::new("run-lazy", 400);
    let mut run = job.start(&[], &[], 0);
    let (_, pid) = job.wait_count(20, Duration::from_secs(60));
    let environ = fs::read(format!("/proc/{pid}/environ")).unwrap();
    let sock = environ
        .split(|&c| c == 0)
        .find_map(|v| v.strip_prefix(b"CAIRN_CONTROL_SOCKET="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_else(|| panic!("no CAIRN_CONTROL_SOCKET: {}", job.describe()));
    // An abstract socket named after the job directory.
    assert!(sock.starts_with("@cairn-control-"), "{sock}");
    for e in fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let target = fs::read_link(e.unwrap().path()).unwrap_or_default();
        assert!(
            !target.to_string_lossy().starts_with("socket:"),
            "the job holds {}",
            target.display()
        );
    }
    let img = job.dir.join("img");
    let out = dump(pid, &img, &[]);
    assert_ok(&out, "dump from outside of a cairn run job");
    assert!(wait_pid_gone(pid, Duration::from_secs(10)));
    let code = job.wait_exit(&mut run, Duration::from_secs(60));
    assert_ne!(code, 0, "{}", job.describe());
    let (at, _) = job.progress().unwrap();
    let out = run_cairn(
        &[
            "restore".into(),
            "-d".into(),
            "-D".into(),
            img.clone().into(),
        ],
        &job.dir.join("restore"),
        CAIRN_TIMEOUT,
    );
    assert_ok(&out, "restore");
    job.wait_count(job.steps, Duration::from_secs(60));
    assert!(at < job.steps, "finished before the dump");
    assert!(wait_pid_gone(pid, Duration::from_secs(30)));
    job.assert_pass_output();
    job.done();
}

/// A SIGTERM that reaches the job while a periodic checkpoint holds it
/// frozen (as `scontrol requeue` signals every process of a Slurm job):
/// the signal waits in the frozen job's queue, and a checkpoint holding
/// it would restore a job that dies at once. So that checkpoint is
/// refused, naming the pid and the signal; the job dies of the signal as
/// it would have without cairn, cairn run exits with its status, the
/// previous checkpoint stays the newest, and a restart restores it and
/// the job finishes.
#[test]
fn sigterm_during_a_checkpoint_keeps_the_previous_one() {
    if skip_unless_root() {
        return;
    }
    let job = Job::new("run-dying", 1000);
    let go = job.dir.join("go");
    let go_s = go.to_string_lossy().into_owned();
    let env = [
        ("CAIRN_RUN_PAUSE_FROM", "2"),
        ("CAIRN_PAUSE_AT", "frozen"),
        ("CAIRN_PAUSE_UNTIL", go_s.as_str()),
    ];
    let mut run = job.start(&["--interval", "1s"], &env, 0);
    job.wait_completed(1, Duration::from_secs(60));
    let (_, pid) = job.wait_count(1, Duration::from_secs(10));
    wait_frozen(&job, run.id(), pid);
    signal(pid, libc::SIGTERM);
    // The dump goes on with the signal pending.
    fs::write(&go, "").unwrap();
    let code = job.wait_exit(&mut run, Duration::from_secs(60));
    assert_eq!(
        code,
        128 + libc::SIGTERM,
        "cairn run did not end with the job's death by SIGTERM: {}",
        job.describe()
    );
    let log = job.log_text();
    assert!(
        log.contains("ckpt-000002 failed")
            && log.contains(&format!("pid {pid}: unsupported: SIGTERM is pending")),
        "the checkpoint with SIGTERM pending was not refused: {}",
        job.describe()
    );
    assert_eq!(job.checkpoints(), ["ckpt-000001"], "{}", job.describe());
    job.restart_finishes(&["--interval", "1s"], 0);
    job.done();
}

/// The log of the `cairn dump` that `cairn run` (pid `run`) runs now:
/// `dump.log` in its scratch directory.
fn dumper_log(run: u32) -> String {
    let prefix = format!("cairn-run-{run}-");
    fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter_map(|e| fs::read_to_string(e.path().join("dump.log")).ok())
        .collect()
}

/// `--incremental` periodic layers take the background snapshot: a layer
/// freezes the job only to collect its state and write-protect its
/// memory, and its pages are copied, and compared by hash with the
/// parent layer's, while the job runs. The job (mem_rewrite, two writers
/// rewriting 64 MiB all the time) must make progress while the second
/// checkpoint, a layer on the first, is held in its copy
/// (`CAIRN_PAUSE_AT=bg-copy`); every layer's log line says its memory was
/// copied while the job ran. Then the job, stopped by its own SIGTERM,
/// checks its memory (PASS), and a restart restores the newest layer of
/// the chain: the restored job checks that its memory is exactly the
/// state at that layer's freeze (PASS).
#[test]
fn incremental_layers_copied_while_the_job_runs() {
    if skip_unless_root() {
        return;
    }
    let f = JobFiles::new("run-bgsnap", "job.out", "run.log");
    let pidfile = f.dir.join("pidfile");
    let passes_file = f.dir.join("passes");
    let go = f.dir.join("go");
    let flags = ["--interval", "300ms", "--incremental"];
    let start = |env: &[(&str, &std::path::Path)]| {
        let mut c = f.cairn("run", &flags);
        c.arg("--")
            .arg(workload_bin("mem_rewrite"))
            .arg("--pidfile")
            .arg(&pidfile)
            .args(["--mib", "64", "--threads", "2", "--passes-file"])
            .arg(&passes_file);
        for (k, v) in env {
            c.env(k, v);
        }
        c.spawn().expect("spawn cairn run")
    };
    let pause: [(&str, &std::path::Path); 3] = [
        ("CAIRN_RUN_PAUSE_FROM", std::path::Path::new("2")),
        ("CAIRN_PAUSE_AT", std::path::Path::new("bg-copy")),
        ("CAIRN_PAUSE_UNTIL", &go),
    ];
    let mut run = start(&pause);
    // A failed check leaves no cairn run nor job behind.
    struct KillOnPanic(i32);
    impl Drop for KillOnPanic {
        fn drop(&mut self) {
            if std::thread::panicking() {
                let tree = tree_pids(self.0);
                for p in tree.into_iter().rev() {
                    signal(p, libc::SIGKILL);
                }
            }
        }
    }
    let _guard = KillOnPanic(run.id() as i32);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dumper_log(run.id()).contains("paused at bg-copy") {
        assert!(
            Instant::now() < deadline && run.try_wait().unwrap().is_none(),
            "the layer never reached its background copy: {}\n--- dumper:\n{}",
            f.describe(),
            dumper_log(run.id())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Held in the copy of the layer on ckpt-000001, the job runs.
    let pid = read_pidfile(&pidfile).expect("the job's pid file");
    assert!(
        fs::read_dir(&f.ck)
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().starts_with(".ckpt-000002")),
        "no layer being written: {}",
        f.describe()
    );
    let p0 = passes(&passes_file);
    // Under TCG (a vm-test guest) a pass, whose first writes fault into
    // cairn's copy, took over 10 s (2 passes in 30 s once).
    let secs = if in_vm_guest() { 120 } else { 30 };
    let deadline = Instant::now() + Duration::from_secs(secs);
    while passes(&passes_file) < p0 + 3 {
        assert!(
            Instant::now() < deadline,
            "the job made no progress during the layer's copy (passes {p0} -> {}, state {:?}): {}",
            passes(&passes_file),
            proc_state(pid),
            f.describe()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "writer 0 did {} passes over its 32 MiB while the layer was held in its copy",
        passes(&passes_file) - p0
    );
    fs::write(&go, b"").unwrap();
    let layers = |log: &str| {
        log.lines()
            .filter(|l| {
                l.contains(" complete: frozen ")
                    && l.contains("memory copied while it ran")
                    && l.contains(", a layer on ../ckpt-")
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while layers(&f.log_text()) < 3 {
        assert!(
            Instant::now() < deadline,
            "three layers copied in the background not complete: {}",
            f.describe()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The job ends itself (its SIGTERM: it checks every page), and cairn
    // run passes its status on.
    signal(pid, libc::SIGTERM);
    assert_eq!(
        f.wait_exit(&mut run, Duration::from_secs(120)),
        0,
        "{}",
        f.describe()
    );
    let first = f.out_text();
    assert!(
        first.contains("PASS") && !first.contains("FAIL"),
        "the original: {}",
        f.describe()
    );
    // The newest complete checkpoint is a layer copied in the background.
    let log = f.log_text();
    let newest = (log.lines())
        .rfind(|l| l.contains(" complete: frozen "))
        .unwrap_or_default()
        .to_string();
    assert!(
        newest.contains("memory copied while it ran") && newest.contains(", a layer on"),
        "the newest checkpoint is not a background layer: {newest}"
    );
    let name = newest
        .split("checkpoint ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("checkpoint name")
        .to_string();
    let mut run = start(&[]);
    let _guard = KillOnPanic(run.id() as i32);
    let deadline = Instant::now() + Duration::from_secs(60);
    while f.log_text().matches("run: supervising pid").count() < 2 {
        assert!(
            Instant::now() < deadline && run.try_wait().unwrap().is_none(),
            "the restart did not restore: {}",
            f.describe()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        f.log_text()
            .contains(&format!("run: restoring {}", f.ck.join(&name).display())),
        "the restart did not restore {name}: {}",
        f.describe()
    );
    std::thread::sleep(Duration::from_millis(300));
    signal(pid, libc::SIGTERM);
    assert_eq!(
        f.wait_exit(&mut run, Duration::from_secs(120)),
        0,
        "{}",
        f.describe()
    );
    // The restore put job.out back as it was at the checkpoint (before
    // the original's PASS); the restored job's verdict follows.
    let out = f.out_text();
    assert!(
        out.contains("PASS") && !out.contains("FAIL"),
        "the restored job: {}",
        f.describe()
    );
    let _ = fs::remove_dir_all(&f.dir);
}

/// A job that ends by itself as its SIGTERM comes (here killed just
/// before cairn run reads the SIGTERM: it finds the job ended, or its
/// final checkpoint finds it dying or a zombie) has no final checkpoint
/// to take: cairn run exits with the job's own status, as when the job
/// ends by itself, not with a failure (the old binary: 1, or a waitpid
/// error after it had reaped the job).
#[test]
fn job_ended_at_its_sigterm_passes_its_status_on() {
    if skip_unless_root() {
        return;
    }
    let job = Job::new("run-endterm", TERM_STEPS);
    let mut run = job.start(&[], &[], 0);
    let (_, pid) = job.wait_count(20, Duration::from_secs(60));
    signal(pid, libc::SIGKILL);
    signal(run.id() as i32, libc::SIGTERM);
    let code = job.wait_exit(&mut run, Duration::from_secs(120));
    assert_eq!(
        code,
        128 + libc::SIGKILL,
        "cairn run did not pass the job's death on: {}",
        job.describe()
    );
    assert!(wait_pid_gone(pid, Duration::from_secs(10)));
    assert_eq!(job.completed(), 0, "{}", job.describe());
    job.done();
}
