//! libcairn (issue 18): cooperating programs under `cairn run`. The test
//! builds libcairn.so (`cargo build -p libcairn`) and the C example
//! examples/libcairn/counter.c against it with gcc, then runs it: restart
//! checkpoints at known steps, nonrestart data after every step, SIGKILL
//! between two restart checkpoints, and a second `cairn run` on the same
//! directory that restores the last restart point, where
//! cairn_checkpoint() returns 1 and cairn_takeover_data() gives the newest
//! data. The program checks all of it itself and prints PASS.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::job::JobFiles;
use common::*;

/// The built example programs: (C counter, Rust counter), and the
/// test program tests/workloads/libcairn_peers.c.
struct Built {
    c: PathBuf,
    rust: PathBuf,
    peers: PathBuf,
}

/// Builds libcairn (its own target directory: the outer cargo may hold
/// the lock of the crate's), copies the shared library as libcairn.so and
/// compiles the C example against it and include/cairn.h.
fn built() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let target = tmp.join("libcairn-target");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let st = Command::new(cargo)
            .current_dir(manifest)
            .args(["build", "--release", "-p", "libcairn", "--lib"])
            .args(["--example", "libcairn_counter", "--target-dir"])
            .arg(&target)
            .status()
            .expect("run cargo build -p libcairn");
        assert!(st.success(), "cargo build -p libcairn failed");
        let lib = tmp.join(format!("libcairn-lib-{}", std::process::id()));
        let _ = fs::remove_dir_all(&lib);
        fs::create_dir_all(&lib).unwrap();
        fs::copy(
            target.join("release/libcairn_lib.so"),
            lib.join("libcairn.so"),
        )
        .expect("copy libcairn_lib.so as libcairn.so");
        // Readable by any uid: a test runs a program as another user.
        fs::set_permissions(&lib, fs::Permissions::from_mode(0o755)).unwrap();
        let gcc = |src: &str, out_name: &str| {
            let bin = lib.join(out_name);
            let out = Command::new("gcc")
                .args(["-O2", "-Wall", "-Werror", "-I"])
                .arg(manifest.join("libcairn/include"))
                .arg(manifest.join(src))
                .arg("-L")
                .arg(&lib)
                .arg("-lcairn")
                .arg(format!("-Wl,-rpath,{}", lib.display()))
                .arg("-o")
                .arg(&bin)
                .output()
                .expect("run gcc");
            assert!(
                out.status.success(),
                "gcc {src}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            bin
        };
        let c = gcc("examples/libcairn/counter.c", "counter");
        let peers = gcc("tests/workloads/libcairn_peers.c", "libcairn_peers");
        let rust = lib.join("libcairn_counter");
        fs::copy(target.join("release/examples/libcairn_counter"), &rust)
            .expect("copy the Rust example");
        Built { c, rust, peers }
    })
}

/// One job's files (`job.out`, `run.log`).
struct Job(JobFiles);

impl std::ops::Deref for Job {
    type Target = JobFiles;
    fn deref(&self) -> &JobFiles {
        &self.0
    }
}

impl Job {
    fn new(tag: &str) -> Job {
        Job(JobFiles::new(tag, "job.out", "run.log"))
    }

    /// `cairn run -D ck FLAGS -- PROG ARGS`, output appended to job.out.
    fn start(&self, flags: &[&str], prog: &Path, args: &[&str]) -> Child {
        self.cairn("run", flags)
            .arg("--")
            .arg(prog)
            .args(args)
            .spawn()
            .expect("spawn cairn run")
    }

    /// (step, pid) from the progress file.
    fn progress(&self) -> Option<(u64, i32)> {
        self.progress_of()
    }

    /// (step, pid) once the job reached step `n` (the file is rewritten
    /// at every step: read until it parses).
    fn wait_step(&self, n: u64, run: &mut Child) -> (u64, i32) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some((s, p)) = self.progress() {
                if s >= n {
                    return (s, p);
                }
            }
            if Instant::now() > deadline || matches!(run.try_wait(), Ok(Some(_))) {
                kill_tree(run);
                panic!("the job did not reach step {n}: {}", self.describe());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn completed(&self) -> usize {
        self.log_text().matches(" complete: frozen ").count()
    }

    fn wait_exit(&self, run: &mut Child) -> i32 {
        self.0.wait_exit(run, Duration::from_secs(180))
    }

    fn kill_job(&self, pid: i32, run: &mut Child) {
        // SAFETY: kill takes integers only.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        assert!(
            wait_pid_gone(pid, Duration::from_secs(10)),
            "pid {pid} lives"
        );
        let code = self.wait_exit(run);
        assert_ne!(code, 0, "cairn run of a killed job: {}", self.describe());
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Restart checkpoints at steps 3 and 6, data after every step; the job
/// is killed after the data of step 8. `cairn run` again: the program
/// resumes at step 6 (cairn_checkpoint returned 1), with the data of
/// step 8 from cairn_takeover_data, and finishes.
#[test]
fn restart_checkpoint_resumes_with_the_newest_data() {
    if skip_unless_root() {
        return;
    }
    let b = built();
    let job = Job::new("libcairn-restart");
    let prog = job.progress.to_str().unwrap().to_string();
    let args = [prog.as_str(), "10", "3", "8"];
    let mut run = job.start(&[], &b.c, &args);
    let (_, pid) = job.wait_step(8, &mut run);
    let out = job.out_text();
    assert!(!out.contains("FAIL"), "{}", job.describe());
    assert_eq!(
        job.completed(),
        2,
        "two restart checkpoints: {}",
        job.describe()
    );
    job.kill_job(pid, &mut run);

    let mut run = job.start(&[], &b.c, &args);
    let code = job.wait_exit(&mut run);
    let out = job.out_text();
    assert_eq!(code, 0, "the restarted job: {}", job.describe());
    assert!(
        out.contains("restored at step 6; takeover data of step 8; backup 0")
            && out.contains("PASS 10 steps, restored 1"),
        "{}",
        job.describe()
    );
    let log = job.log_text();
    assert!(
        log.contains("is the restart checkpoint of request"),
        "{}",
        job.describe()
    );
}

/// Periodic checkpoints (`--interval`) taken while the program sends data
/// every few milliseconds (some while a request waits for its answer):
/// the job killed after one restores with a working control connection,
/// sends its data on, takes a restart checkpoint and finishes.
#[test]
fn periodic_checkpoint_restores_a_working_connection() {
    if skip_unless_root() {
        return;
    }
    let b = built();
    let job = Job::new("libcairn-periodic");
    let prog = job.progress.to_str().unwrap().to_string();
    // 400 steps of 5 ms; a restart checkpoint at step 350 only.
    let args = [prog.as_str(), "400", "350", "0", "5"];
    let mut run = job.start(&["--interval", "500ms"], &b.c, &args);
    let deadline = Instant::now() + Duration::from_secs(120);
    while job.completed() < 1 {
        assert!(Instant::now() < deadline, "{}", job.describe());
        assert!(
            matches!(run.try_wait(), Ok(None)),
            "cairn run ended: {}",
            job.describe()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let at = job.wait_step(0, &mut run).0;
    let (killed_at, pid) = job.wait_step(at + 5, &mut run);
    assert!(killed_at < 350, "too late: {}", job.describe());
    job.kill_job(pid, &mut run);

    let mut run = job.start(&["--interval", "500ms"], &b.c, &args);
    let code = job.wait_exit(&mut run);
    let out = job.out_text();
    assert_eq!(code, 0, "the restarted job: {}", job.describe());
    assert!(out.contains("PASS 400 steps"), "{}", job.describe());
    assert!(!out.contains("FAIL"), "{}", job.describe());
    let log = job.log_text();
    assert!(log.contains("run: restoring"), "{}", job.describe());
    assert!(
        log.contains("restart checkpoint asked by pid"),
        "no restart checkpoint after the restore: {}",
        job.describe()
    );
}

/// Outside a supervisor every call is -ENOTCONN (also with a
/// CAIRN_CONTROL_FD that is not a control socket, or a
/// CAIRN_CONTROL_SOCKET where nothing listens).
#[test]
fn not_under_a_supervisor_is_enotconn() {
    let b = built();
    let long = format!("/nonexistent/{}/sock", "d".repeat(120));
    let envs = [
        (None, None),
        (Some("0"), None),
        (Some("999"), None),
        (Some("x"), None),
        (None, Some("/nonexistent/control/sock")),
        (None, Some("/etc/passwd")),
        (None, Some(long.as_str())),
    ];
    for env in envs {
        let mut c = Command::new(&b.c);
        c.arg("--standalone").stdin(Stdio::null());
        match env.0 {
            Some(v) => c.env("CAIRN_CONTROL_FD", v),
            None => c.env_remove("CAIRN_CONTROL_FD"),
        };
        match env.1 {
            Some(v) => c.env("CAIRN_CONTROL_SOCKET", v),
            None => c.env_remove("CAIRN_CONTROL_SOCKET"),
        };
        let out = c.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("PASS"),
            "{env:?}: {text}"
        );
    }
    let out = Command::new(&b.rust)
        .arg("--standalone")
        .env_remove("CAIRN_CONTROL_FD")
        .env_remove("CAIRN_CONTROL_SOCKET")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Rust example under `cairn run`: two restart checkpoints, data
/// after every step, to the end.
#[test]
fn rust_example_runs_under_cairn_run() {
    if skip_unless_root() {
        return;
    }
    let b = built();
    let job = Job::new("libcairn-rust");
    let mut run = job.start(&[], &b.rust, &["7", "3"]);
    let code = job.wait_exit(&mut run);
    assert_eq!(code, 0, "{}", job.describe());
    assert!(
        job.out_text().contains("PASS 7 steps"),
        "{}",
        job.describe()
    );
    assert_eq!(job.completed(), 2, "{}", job.describe());
}

/// A `cairn pair` killed with its primary (by pid) on every path.
struct PairRun(Child);

impl Drop for PairRun {
    fn drop(&mut self) {
        kill_tree(&mut self.0);
    }
}

/// The C example under `cairn pair` (libcairn wired into the pair):
/// restart checkpoints at steps 3 and 6, each making the next backup,
/// data after every step; the primary is SIGKILLed after the data of
/// step 8. The backup made from the restart checkpoint of step 6 takes
/// over: cairn_checkpoint() returns 1 there, cairn_is_backup() 1, and
/// cairn_takeover_data() gives the data of step 8 (the program checks
/// all of it); it finishes and the pair exits 0.
#[test]
fn pair_backup_takes_over_at_the_restart_point() {
    if skip_unless_root() {
        return;
    }
    let b = built();
    let job = Job::new("libcairn-pair");
    let pidfile = job.dir.join("primary.pid");
    let prog = job.progress.to_str().unwrap().to_string();
    // No periodic checkpoint: the backups come from the restart points.
    let mut run = PairRun(
        job.cairn("pair", &["--interval", "10m", "--pidfile"])
            .arg(&pidfile)
            .arg("--")
            .arg(&b.c)
            .args([prog.as_str(), "10", "3", "8", "0", "1"])
            .spawn()
            .expect("spawn cairn pair"),
    );
    job.wait_step(8, &mut run.0);
    // The backup from the second checkpoint (step 6) is held.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !job.log_text().contains("backup ready from ckpt-000002") {
        assert!(
            Instant::now() < deadline && matches!(run.0.try_wait(), Ok(None)),
            "no backup from the restart checkpoint of step 6: {}",
            job.describe()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!job.out_text().contains("FAIL"), "{}", job.describe());
    let primary = read_pidfile(&pidfile).expect("the pid file");
    // SAFETY: kill takes integers only.
    unsafe { libc::kill(primary, libc::SIGKILL) };
    let code = job.wait_exit(&mut run.0);
    let out = job.out_text();
    assert_eq!(code, 0, "the pair after the takeover: {}", job.describe());
    assert!(
        out.contains("restored at step 6; takeover data of step 8; backup 1")
            && out.contains("PASS 10 steps, restored 1"),
        "{}",
        job.describe()
    );
    assert!(job.log_text().contains("takeover 1:"), "{}", job.describe());
    assert!(wait_pid_gone(primary, Duration::from_secs(10)));
}

/// The control socket serves the supervised tree, whatever uid its
/// processes run as, and nobody else; a second connection waits a
/// bounded time. Under `cairn run`, libcairn_peers's children: A holds
/// the connection, B's call gets -ETIMEDOUT after about 5 s and is
/// served once A closed; C changes its uid to 65534 and sends data that
/// the root reads back (the program checks all of it). From outside the
/// tree, with the tree's CAIRN_CONTROL_SOCKET, a process as root and
/// one as uid 65534 (another user in the next terminal) are refused
/// with -EACCES, and the refusals are logged.
#[test]
fn control_socket_serves_the_tree_whatever_its_uid_and_nobody_else() {
    if skip_unless_root() {
        return;
    }
    let b = built();
    let job = Job::new("libcairn-peers");
    let prog = job.progress.to_str().unwrap().to_string();
    let mut run = job.start(&[], &b.peers, &[prog.as_str()]);
    let (_, pid) = job.wait_step(1, &mut run);
    let environ = fs::read(format!("/proc/{pid}/environ")).unwrap();
    let sock = environ
        .split(|&c| c == 0)
        .find_map(|v| v.strip_prefix(b"CAIRN_CONTROL_SOCKET="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_else(|| panic!("no CAIRN_CONTROL_SOCKET: {}", job.describe()));
    for uid in [0u32, 65534] {
        let out = Command::new(&b.peers)
            .arg("--outside")
            .env("CAIRN_CONTROL_SOCKET", &sock)
            .env_remove("CAIRN_CONTROL_FD")
            .uid(uid)
            .gid(uid)
            .stdin(Stdio::null())
            .output()
            .expect("run libcairn_peers --outside");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("PASS outside"),
            "uid {uid} outside the tree: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fs::write(format!("{prog}.done"), b"").unwrap();
    let code = job.wait_exit(&mut run);
    let out = job.out_text();
    assert_eq!(code, 0, "{}", job.describe());
    assert!(out.contains("PASS peers"), "{}", job.describe());
    let log = job.log_text();
    assert_eq!(
        log.matches("not a process of the supervised tree").count(),
        2,
        "{}",
        job.describe()
    );
    assert!(log.contains("(-ETIMEDOUT)"), "{}", job.describe());
}
