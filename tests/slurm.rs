//! `cairn run` under a real Slurm (issue 17): a one-node instance of the
//! distribution's slurmctld, slurmd and munge (`common::slurm`), the job
//! script of `examples/slurm/job.sh` as it is, submitted with `sbatch
//! --requeue --signal=B:TERM@60`. The job is `run_counter`, which checks
//! its own continuity (memory, its progress file, its pid) at every step
//! and prints PASS at the end: a job restarted from scratch, or restored
//! wrong, fails by itself.

mod common;

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::mpi::{build_ring, expected, shm_names, ShmFiles};
use common::slurm::Slurm;
use common::tmpfs::Tmpfs;
use common::*;

/// The tests run one at a time: one Slurm at a time on this machine, and
/// the pid taken by the second one (through `ns_last_pid`) must not make
/// the pid counter come back over the pids of the first one's job,
/// which it needs again at its restore.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A job of `examples/slurm/job.sh` running `run_counter`.
struct Job<'a> {
    slurm: &'a Slurm,
    dir: PathBuf,
    /// `$CKPT`: the job's checkpoints are in `ck/ID`, cairn's log in
    /// `ck/ID.log`.
    ck: PathBuf,
    progress: PathBuf,
    steps: u64,
    id: u32,
}

impl<'a> Job<'a> {
    /// Submits the job: `sbatch --requeue --signal=B:TERM@60 job.sh
    /// run_counter PROGRESS STEPS [CHILDREN]`, checkpoints every
    /// `interval`, `flags` for cairn run.
    fn submit(
        slurm: &'a Slurm,
        tag: &str,
        steps: u64,
        children: u32,
        interval: &str,
        flags: &str,
    ) -> Job<'a> {
        let dir = fresh_dir(tag);
        let mut cmd: Vec<OsString> = vec![
            workload_bin("run_counter").into(),
            dir.join("progress").into(),
            steps.to_string().into(),
        ];
        if children > 0 {
            cmd.push(children.to_string().into());
        }
        Job::submit_cmd(slurm, dir, &cmd, &[], steps, interval, flags)
    }

    /// Submits `sbatch --requeue --signal=B:TERM@60 job.sh CMD...` in
    /// `dir` with `env` added; `steps` is the count of a run_counter job.
    fn submit_cmd(
        slurm: &'a Slurm,
        dir: PathBuf,
        cmd: &[OsString],
        env: &[(&str, &OsStr)],
        steps: u64,
        interval: &str,
        flags: &str,
    ) -> Job<'a> {
        let ck = dir.join("ck");
        let progress = dir.join("progress");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/slurm/job.sh");
        let mut c = slurm.command("sbatch");
        c.args(["--parsable", "--requeue", "--signal=B:TERM@60"])
            .arg(format!("--chdir={}", dir.display()))
            .arg(format!("--output={}/job-%j.out", dir.display()))
            .arg(&script)
            .args(cmd);
        for (k, v) in env {
            c.env(k, v);
        }
        c.env("CKPT", &ck)
            .env("CAIRN", cairn_bin())
            .env("CAIRN_INTERVAL", interval)
            .env("CAIRN_RUN_FLAGS", flags);
        let out = c.output().expect("sbatch");
        assert!(
            out.status.success(),
            "sbatch: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            slurm.logs()
        );
        let id = String::from_utf8_lossy(&out.stdout)
            .trim()
            .split(';')
            .next()
            .and_then(|s| s.parse().ok())
            .expect("sbatch --parsable: a job id");
        Job {
            slurm,
            dir,
            ck,
            progress,
            steps,
            id,
        }
    }

    fn log_path(&self) -> PathBuf {
        self.ck.join(format!("{}.log", self.id))
    }

    fn log_text(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn out_path(&self) -> PathBuf {
        self.dir.join(format!("job-{}.out", self.id))
    }

    fn out_text(&self) -> String {
        fs::read_to_string(self.out_path()).unwrap_or_default()
    }

    /// (count, pid) from the progress file.
    fn progress(&self) -> Option<(u64, i32)> {
        let s = fs::read_to_string(&self.progress).ok()?;
        let mut it = s.split_whitespace();
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    }

    /// Checkpoints complete so far (all runs of the job).
    fn completed(&self) -> usize {
        self.log_text().matches(" complete: frozen ").count()
    }

    fn state(&self) -> String {
        self.slurm
            .job_field(self.id, "JobState")
            .unwrap_or_default()
    }

    fn describe(&self) -> String {
        let cks: Vec<String> = fs::read_dir(self.ck.join(self.id.to_string()))
            .map(|d| {
                d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        format!(
            "\n--- job {} ({}), checkpoints {cks:?}\n--- cairn log:\n{}\n--- job output:\n{}\n--- squeue:\n{}{}",
            self.id,
            self.state(),
            tail(&self.log_path(), 6000),
            tail(&self.out_path(), 3000),
            self.slurm.run("squeue", &[]),
            self.slurm.logs()
        )
    }

    /// Waits until `cond`, or panics with the job's story.
    fn wait(&self, what: &str, timeout: Duration, cond: impl Fn(&Job) -> bool) {
        let end = Instant::now() + timeout;
        while !cond(self) {
            assert!(
                Instant::now() < end,
                "{what}: not after {timeout:?}{}",
                self.describe()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the job completed, then checks that it passed: exit
    /// code 0, PASS with the full count in its output, no FAIL, and the
    /// number of requeues Slurm made.
    fn wait_passed(&self, restarts: u32) {
        self.wait_completed(restarts);
        let out = self.out_text();
        assert!(
            out.contains(&format!("PASS count={}", self.steps)) && !out.contains("FAIL"),
            "{}",
            self.describe()
        );
        assert_eq!(self.progress().map(|p| p.0), Some(self.steps));
    }

    /// Watches the progress file from now until cairn's log says the job
    /// is supervised again after a restore; returns the smallest count
    /// seen once restored (the file is put back by the restore, so a job
    /// started afresh would show 0 here).
    fn min_count_after_restore(&self, restores_before: usize) -> u64 {
        let end = Instant::now() + Duration::from_secs(180);
        let mut min = u64::MAX;
        let mut restored_at = None;
        loop {
            let log = self.log_text();
            if restored_at.is_none() && log.matches("run: restoring ").count() > restores_before {
                let supervised = log
                    .rsplit("run: restoring ")
                    .next()
                    .is_some_and(|l| l.contains("run: supervising pid"));
                if supervised {
                    restored_at = Some(Instant::now());
                }
            }
            if let Some(t) = restored_at {
                if let Some((c, _)) = self.progress() {
                    min = min.min(c);
                }
                if t.elapsed() > Duration::from_secs(2) && min != u64::MAX {
                    return min;
                }
            }
            assert!(Instant::now() < end, "not restored: {}", self.describe());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The pid (on the machine) `cairn run` started the job as.
    fn started_pid(&self) -> i32 {
        let log = self.log_text();
        let at = log.find("run: started ").expect("no start line");
        log[at..]
            .split(" as pid ")
            .nth(1)
            .and_then(|p| p.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
            .expect("the job's pid")
    }

    /// Waits until the job is no longer running or pending, then checks
    /// that it completed with exit code 0 after `restarts` requeues.
    fn wait_completed(&self, restarts: u32) {
        self.wait("the job completed", Duration::from_secs(300), |j| {
            matches!(
                j.state().as_str(),
                "COMPLETED" | "FAILED" | "CANCELLED" | "TIMEOUT" | "NODE_FAIL"
            )
        });
        assert_eq!(self.state(), "COMPLETED", "{}", self.describe());
        assert_eq!(
            self.slurm.job_field(self.id, "ExitCode").as_deref(),
            Some("0:0"),
            "{}",
            self.describe()
        );
        assert_eq!(
            self.slurm.job_field(self.id, "Restarts"),
            Some(restarts.to_string()),
            "{}",
            self.describe()
        );
    }

    fn done(self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The frozen times (ms) and sizes (bytes) of the checkpoints in cairn's
/// log: `checkpoint ckpt-N complete: frozen X ms, ... (B bytes)`.
fn checkpoint_stats(log: &str) -> Vec<(f64, u64)> {
    log.lines()
        .filter_map(|l| {
            let rest = l.split(" complete: frozen ").nth(1)?;
            let ms = rest.split(" ms").next()?.parse().ok()?;
            let bytes = rest
                .split('(')
                .nth(1)?
                .split(" bytes")
                .next()?
                .parse()
                .ok()?;
            Some((ms, bytes))
        })
        .collect()
}

/// `scancel --batch --signal=TERM` (what `--signal=B:TERM@60` does before
/// the time limit, and a preemption with send_user_signal): cairn run
/// takes a final checkpoint and stops the job, the script requeues it,
/// and its next start restores that checkpoint: the counter goes on from
/// exactly where it stopped and finishes.
#[test]
fn sigterm_to_batch_shell_checkpoints_requeues_and_restores() {
    let _serial = serial();
    let Some(slurm) = Slurm::start() else {
        return;
    };
    let job = Job::submit(&slurm, "slurm-term", 2500, 1, "1s", "");
    job.wait(
        "a checkpoint and 200 steps",
        Duration::from_secs(120),
        |j| j.completed() >= 1 && j.progress().is_some_and(|p| p.0 >= 200),
    );
    slurm.run(
        "scancel",
        &["--batch", "--signal=TERM", &job.id.to_string()],
    );
    job.wait("the final checkpoint", Duration::from_secs(120), |j| {
        j.log_text().contains("run: checkpointed and stopped")
    });
    let (stopped, _) = job.progress().unwrap();
    assert!(
        stopped > 0 && stopped < job.steps,
        "stopped at {stopped}: {}",
        job.describe()
    );
    let min = job.min_count_after_restore(0);
    assert!(
        min >= stopped,
        "restored at {min}, stopped at {stopped}: {}",
        job.describe()
    );
    job.wait_passed(1);
    let log = job.log_text();
    // The restore took the final checkpoint, the one taken on SIGTERM.
    let final_ck = log
        .split("run: SIGTERM: final checkpoint")
        .nth(1)
        .and_then(|l| l.split("run: checkpoint ").nth(1))
        .and_then(|l| l.split(' ').next())
        .expect("the final checkpoint's name")
        .to_string();
    assert!(
        log.contains(&format!(
            "run: restoring {}/{}/{final_ck}",
            job.ck.display(),
            job.id
        )),
        "{}",
        job.describe()
    );
    // Each checkpoint's frozen time and size are in the log.
    let stats = checkpoint_stats(&log);
    assert!(
        !stats.is_empty() && stats.iter().all(|&(ms, b)| ms > 0.0 && b > 4096),
        "frozen times and sizes {stats:?}: {}",
        job.describe()
    );
    job.done();
}

/// A process holding a pid, killed on drop.
struct Held(std::process::Child);

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A process holding a pid (killed and reaped when dropped).
fn hold_pid(pid: i32) -> Held {
    Held(common::hold_pid(pid))
}

/// `scontrol requeue JOBID`: Slurm sends SIGTERM to every process of the
/// job at once, so the job ends before a final checkpoint; Slurm requeues
/// it and its next start restores the newest periodic checkpoint. With
/// `--pid-ns`, in a new pid namespace, while a process outside holds the
/// pid the job's root had on the machine.
#[test]
fn scontrol_requeue_restores_periodic_checkpoint_in_pid_ns() {
    let _serial = serial();
    let Some(slurm) = Slurm::start() else {
        return;
    };
    let job = Job::submit(&slurm, "slurm-requeue", 2500, 1, "2s", "--pid-ns");
    job.wait(
        "two checkpoints and 200 steps",
        Duration::from_secs(120),
        |j| j.completed() >= 2 && j.progress().is_some_and(|p| p.0 >= 200),
    );
    let (_, inner) = job.progress().unwrap();
    assert_eq!(inner, 2, "not pid 2 in its namespace: {}", job.describe());
    let outer = job.started_pid();
    // Right after a checkpoint, so that none is being taken when Slurm's
    // SIGTERM comes.
    let n = job.completed();
    job.wait("one more checkpoint", Duration::from_secs(60), |j| {
        j.completed() > n
    });
    slurm.run("scontrol", &["requeue", &job.id.to_string()]);
    assert!(
        wait_pid_gone(outer, Duration::from_secs(60)),
        "the job's pid {outer} runs on: {}",
        job.describe()
    );
    let holder = hold_pid(outer);
    let min = job.min_count_after_restore(0);
    assert!(min > 0, "started afresh: {}", job.describe());
    job.wait_passed(1);
    assert!(pid_exists(holder.0.id() as i32));
    drop(holder);
    let log = job.log_text();
    assert!(
        log.contains("(in its own pid namespace)"),
        "{}",
        job.describe()
    );
    job.done();
}

/// An Open MPI job (`mpirun -np 4` over shared memory) under Slurm with
/// `--pid-ns`: stopped by SIGTERM to the batch shell (final checkpoint,
/// requeued by the script), held in the queue while its /dev/shm
/// segments and its session directory (TMPDIR, a tmpfs of the test's own)
/// are wiped, as on another node or after a reboot, and while a process
/// takes the pid its mpirun had; released, it is restored from that
/// checkpoint in a new pid namespace, its ranks check every number they
/// receive, and it finishes with the right answer.
#[test]
fn openmpi_job_requeued_after_its_files_are_wiped_and_pid_taken() {
    let _serial = serial();
    let Some(slurm) = Slurm::start() else {
        return;
    };
    if !common::mpi::available() {
        return;
    }
    let dir = fresh_dir("slurm-mpi");
    let bin = build_ring(&dir);
    let tmp = Tmpfs::mount("slurm-mpi-tmp", "256m");
    let shm_before = shm_names();
    let answer = dir.join("answer");
    let iters = 1500;
    let cmd: Vec<OsString> = vec![
        "mpirun".into(),
        "--allow-run-as-root".into(),
        "--oversubscribe".into(),
        "-np".into(),
        "4".into(),
        "--mca".into(),
        "btl".into(),
        "self,vader".into(),
        bin.into(),
        answer.clone().into(),
        iters.to_string().into(),
    ];
    let env = [("TMPDIR", tmp.path.as_os_str())];
    let job = Job::submit_cmd(
        &slurm,
        dir,
        &cmd,
        &env,
        0,
        "2s",
        "--pid-ns --tcp-established",
    );
    job.wait(
        "a checkpoint and 100 iterations",
        Duration::from_secs(120),
        |j| j.completed() >= 1 && j.out_text().contains("progress 100"),
    );
    let shm = ShmFiles::new_since(&shm_before);
    assert!(shm.has_vader(), "no vader segment: {:?}", shm.0);
    let outer = job.started_pid();
    slurm.run(
        "scancel",
        &["--batch", "--signal=TERM", &job.id.to_string()],
    );
    job.wait("the final checkpoint", Duration::from_secs(120), |j| {
        j.log_text().contains("run: checkpointed and stopped")
    });
    // Requeued (it waits cred_expire, 5 s, before it may start): hold it
    // there while the node changes under it.
    job.wait("requeued", Duration::from_secs(30), |j| {
        j.state() == "PENDING"
    });
    slurm.run("scontrol", &["hold", &job.id.to_string()]);
    assert!(
        !answer.exists(),
        "the job ended before the final checkpoint"
    );
    assert!(
        wait_pid_gone(outer, Duration::from_secs(30)),
        "mpirun's pid {outer} runs on: {}",
        job.describe()
    );
    shm.wipe();
    tmp.wipe();
    let holder = hold_pid(outer);
    slurm.run("scontrol", &["release", &job.id.to_string()]);
    job.wait_completed(1);
    assert!(pid_exists(holder.0.id() as i32));
    drop(holder);
    let got = fs::read_to_string(&answer).unwrap_or_default();
    assert_eq!(
        got.trim(),
        expected(iters, 4).to_string(),
        "wrong answer: {}",
        job.describe()
    );
    let log = job.log_text();
    assert!(
        log.contains("run: restoring ") && log.contains("(in its own pid namespace)"),
        "{}",
        job.describe()
    );
    assert!(!job.out_text().contains("FAIL"), "{}", job.describe());
    drop(tmp);
    job.done();
}
