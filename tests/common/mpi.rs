//! Open MPI jobs for the tests (tests/openmpi.rs, tests/slurm.rs): the
//! ring program of tests/mpi/ring.c, built with mpicc, its answer, and
//! the /dev/shm files a job made.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Whether `cmd` is on PATH.
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether mpirun and mpicc are installed; a skip (said and counted)
/// when not.
pub fn available() -> bool {
    if have("mpirun") && have("mpicc") {
        return true;
    }
    super::note_skip(
        "mpirun or mpicc not installed (cargo xtask test installs openmpi-bin and \
         libopenmpi-dev)",
    );
    false
}

/// Builds tests/mpi/ring.c into `dir/ring`.
pub fn build_ring(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mpi/ring.c");
    let bin = dir.join("ring");
    let st = Command::new("mpicc")
        .args(["-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("run mpicc");
    assert!(st.success(), "mpicc {}: {st}", src.display());
    bin
}

/// What ring.c computes for `iters` iterations of `ranks` ranks.
pub fn expected(iters: i64, ranks: i64) -> i64 {
    (0..iters)
        .map(|i| (0..ranks).map(|r| (i * 7 + r) % 1000).sum::<i64>())
        .sum()
}

/// The names in /dev/shm.
pub fn shm_names() -> HashSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The /dev/shm entries a job made (those not in `before`), removed on
/// drop (or by [`ShmFiles::wipe`]).
pub struct ShmFiles(pub Vec<PathBuf>);

impl ShmFiles {
    pub fn new_since(before: &HashSet<String>) -> ShmFiles {
        ShmFiles(
            shm_names()
                .difference(before)
                .map(|n| Path::new("/dev/shm").join(n))
                .collect(),
        )
    }

    /// Whether one of them is an Open MPI shared-memory segment.
    pub fn has_vader(&self) -> bool {
        self.0
            .iter()
            .any(|p| p.to_string_lossy().contains("vader_segment"))
    }

    /// Removes them, as a reboot would.
    pub fn wipe(&self) {
        for p in &self.0 {
            std::fs::remove_file(p).expect("remove a /dev/shm file of the job");
        }
    }
}

impl Drop for ShmFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}
