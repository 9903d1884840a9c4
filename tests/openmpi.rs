//! An Open MPI job on one node (`mpirun -np 2`, shared-memory transport)
//! checkpointed in the middle, killed, its /dev/shm segments and its
//! session directory (TMPDIR, a tmpfs of the test's own) wiped as after a
//! reboot, restored: it must finish with the right answer.
mod common;

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::tmpfs::Tmpfs;
use common::*;

/// The /dev/shm entries this test made, removed on drop.
struct ShmFiles(Vec<PathBuf>);

impl Drop for ShmFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn shm_names() -> HashSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What ring.c computes for `iters` iterations of `ranks` ranks.
fn expected(iters: i64, ranks: i64) -> i64 {
    (0..iters)
        .map(|i| (0..ranks).map(|r| (i * 7 + r) % 1000).sum::<i64>())
        .sum()
}

fn wait_for(path: &Path, what: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::fs::read_to_string(path).is_ok_and(|s| s.contains(what)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn openmpi_job_restored_after_its_files_are_wiped() {
    if skip_unless_root() {
        return;
    }
    if !have("mpirun") || !have("mpicc") {
        note_skip(
            "mpirun or mpicc not installed (cargo xtask test installs openmpi-bin and \
             libopenmpi-dev)",
        );
        return;
    }
    let dir = fresh_dir("openmpi");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mpi/ring.c");
    let bin = dir.join("ring");
    let st = Command::new("mpicc")
        .args(["-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("run mpicc");
    assert!(st.success(), "mpicc {}: {st}", src.display());
    let tmp = Tmpfs::mount("openmpi-tmp", "256m");
    let shm_before = shm_names();
    let answer = dir.join("answer");
    let log = dir.join("mpirun.log");
    let images = dir.join("images");
    let iters = 300;
    let out = File::create(&log).expect("create the log");
    let mut cmd = Command::new("mpirun");
    // SAFETY: the closure runs in the forked child before exec and only
    // calls setsid(2) and close_range(2), which are async-signal-safe: the
    // job gets a session of its own and no descriptor of the test runner
    // (a pipe of whoever started it would be a pipe to outside the tree).
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    let mut child = cmd
        .args([
            "--allow-run-as-root",
            "--oversubscribe",
            "-np",
            "2",
            "--mca",
            "btl",
            "self,vader",
        ])
        .arg(&bin)
        .arg(&answer)
        .arg(iters.to_string())
        .env("TMPDIR", &tmp.path)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("spawn mpirun");
    let pid = child.id() as i32;
    let tracker = PidTracker::new();
    tracker.track_tree(pid);
    assert!(
        wait_for(&log, "progress 30", Duration::from_secs(60)),
        "the job did not start: {}",
        tail(&log, 4000)
    );
    tracker.track_tree(pid);
    let mut shm = ShmFiles(Vec::new());
    shm.0 = shm_names()
        .difference(&shm_before)
        .map(|n| Path::new("/dev/shm").join(n))
        .collect();
    assert!(
        shm.0
            .iter()
            .any(|p| p.to_string_lossy().contains("vader_segment")),
        "no vader segment in /dev/shm: {:?}",
        shm.0
    );
    let d = dump(pid, &images, &["-v", "--tcp-established"]);
    assert_ok(&d, "dump of the mpirun tree");
    let _ = wait_timeout(&mut child, Duration::from_secs(10));
    assert!(wait_pid_gone(pid, Duration::from_secs(10)));
    assert!(!answer.exists(), "the job ended before the dump");
    // As after a reboot: the segments and the session directory are gone.
    for p in &shm.0 {
        std::fs::remove_file(p).expect("remove a /dev/shm file of the job");
    }
    tmp.wipe();
    let mut args = vec![
        "restore".to_string(),
        "-D".into(),
        images.to_string_lossy().into_owned(),
        "--tcp-established".into(),
        "-v".into(),
    ];
    if images.join("oracle.img").exists() {
        args.push("--compare".into());
    }
    let rlog = dir.join("restore.log");
    let mut r = Command::new(cairn_bin())
        .args(&args)
        .stdin(Stdio::null())
        .stdout(File::create(dir.join("restore.out")).unwrap())
        .stderr(File::create(&rlog).unwrap())
        .spawn()
        .expect("spawn cairn restore");
    tracker.track_tree(r.id() as i32);
    let st = wait_timeout(&mut r, Duration::from_secs(120));
    let st = match st {
        Some(st) => st,
        None => {
            tracker.track_tree(pid);
            panic!(
                "the restored job did not finish within 120 s\n{}\n--- job ---\n{}",
                tail(&rlog, 4000),
                tail(&log, 2000)
            );
        }
    };
    assert!(
        st.success(),
        "cairn restore exited {}\n{}\n--- job ---\n{}",
        exit_code(&st),
        tail(&rlog, 6000),
        tail(&log, 2000)
    );
    let got = std::fs::read_to_string(&answer).unwrap_or_default();
    assert_eq!(
        got.trim(),
        expected(iters, 2).to_string(),
        "wrong answer; job log:\n{}",
        tail(&log, 2000)
    );
    drop(tmp);
    let _ = std::fs::remove_dir_all(&dir);
}
