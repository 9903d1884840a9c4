//! The files of one program under a cairn supervisor (`cairn run`, `cairn
//! pair`): a fresh directory with the checkpoint directory `ck`, the
//! program's progress file, its output and cairn's log; shared by
//! tests/run.rs, tests/libcairn.rs and tests/pair.rs.

use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

use super::{cairn_bin, exit_code, fresh_dir, kill_tree, tail, wait_timeout};

pub struct JobFiles {
    pub dir: PathBuf,
    pub ck: PathBuf,
    pub progress: PathBuf,
    /// The program's stdout and stderr (and cairn's), appended to.
    pub out: PathBuf,
    /// cairn's log (`-v -o`).
    pub log: PathBuf,
}

impl JobFiles {
    /// In a fresh directory for `tag`: `ck`, `progress`, `out_name`,
    /// `log_name`.
    pub fn new(tag: &str, out_name: &str, log_name: &str) -> JobFiles {
        let dir = fresh_dir(tag);
        JobFiles {
            ck: dir.join("ck"),
            progress: dir.join("progress"),
            out: dir.join(out_name),
            log: dir.join(log_name),
            dir,
        }
    }

    /// `cairn -v -o LOG SUB -D ck FLAGS`, stdin /dev/null, stdout and
    /// stderr appended to `out`: the caller adds `--` and the program.
    pub fn cairn(&self, sub: &str, flags: &[&str]) -> Command {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o644)
            .open(&self.out)
            .unwrap();
        let mut c = Command::new(cairn_bin());
        c.arg("-v")
            .arg("-o")
            .arg(&self.log)
            .arg(sub)
            .arg("-D")
            .arg(&self.ck)
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out));
        c
    }

    /// The two numbers of the progress file ("COUNT X").
    pub fn progress_of<T: FromStr>(&self) -> Option<(u64, T)> {
        let s = fs::read_to_string(&self.progress).ok()?;
        let mut it = s.split_whitespace();
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn out_text(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// The ends of the log and of the output, for panic messages.
    pub fn describe(&self) -> String {
        let name = |p: &PathBuf| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        };
        format!(
            "\n--- {}:\n{}\n--- {}:\n{}",
            name(&self.log),
            tail(&self.log, 6000),
            name(&self.out),
            tail(&self.out, 3000)
        )
    }

    /// The exit code of `child` (cairn) within `timeout`; killed (with
    /// everything below it) and a panic if it runs on.
    pub fn wait_exit(&self, child: &mut Child, timeout: Duration) -> i32 {
        match wait_timeout(child, timeout) {
            Some(st) => exit_code(&st),
            None => {
                kill_tree(child);
                panic!("cairn did not exit: {}", self.describe());
            }
        }
    }
}
