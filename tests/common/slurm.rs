//! A one-node Slurm of a test's own (issue 17): the instance of `cargo
//! xtask slurm` (xtask/src/slurm.rs, included here), in a private
//! directory of its own with free ports, stopped in `Drop` (its jobs and
//! daemons ended by pid, the directory removed).

use std::path::Path;
use std::process::Command;

#[allow(dead_code)]
#[path = "../../xtask/src/slurm.rs"]
mod instance;

pub struct Slurm(instance::Instance);

impl Slurm {
    /// Starts an instance for this test, or `None` (a skip, said and
    /// counted) when not root or Slurm is not installed (`cargo xtask
    /// test` installs it, so CI does not skip).
    pub fn start() -> Option<Slurm> {
        if super::skip_unless_root() {
            return None;
        }
        let missing = instance::missing();
        if !missing.is_empty() {
            super::note_skip(&format!(
                "Slurm is not installed (missing {}; cargo xtask slurm start installs it)",
                missing.join(" ")
            ));
            return None;
        }
        // A short private path: the munge socket's name must fit.
        let dir = loop {
            let d = std::env::temp_dir().join(format!(
                "cairn-slurm-{}-{}",
                std::process::id(),
                super::next_id()
            ));
            match std::fs::DirBuilder::new().create(&d) {
                Ok(()) => break d,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("{}: {e}", d.display()),
            }
        };
        match instance::Instance::start(&dir, true) {
            Ok(i) => Some(Slurm(i)),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                panic!("cannot start Slurm: {e}");
            }
        }
    }

    /// A Slurm command (sbatch, scontrol, squeue, ...) for this instance.
    pub fn command(&self, prog: &str) -> Command {
        self.0.command(prog)
    }

    /// `SLURM_CONF` of this instance.
    pub fn conf(&self) -> &Path {
        &self.0.conf
    }

    /// The ends of the daemons' logs, for failure messages.
    pub fn logs(&self) -> String {
        self.0.logs()
    }

    /// Runs a Slurm command; its stdout, or a panic with its stderr.
    pub fn run(&self, prog: &str, args: &[&str]) -> String {
        let out = self.command(prog).args(args).output().expect(prog);
        assert!(
            out.status.success(),
            "{prog} {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `scontrol show job ID` as (key, value) pairs.
    pub fn job(&self, id: u32) -> Vec<(String, String)> {
        let out = self
            .command("scontrol")
            .args(["show", "job", &id.to_string()])
            .output()
            .expect("scontrol");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// One field of `scontrol show job ID` (`JobState`, `Restarts`, ...).
    pub fn job_field(&self, id: u32, key: &str) -> Option<String> {
        self.job(id)
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        if let Err(e) = self.0.stop() {
            eprintln!("stopping Slurm: {e}");
        }
    }
}
