//! Refused dumps, checked the same way everywhere: what cairn cannot
//! restore exactly is refused at dump (exit code 6, a line
//! "pid N: unsupported: ..." naming what and why), leaves no images, and
//! leaves the target running as it was (not stopped, not traced).

use std::path::Path;
use std::process::Output;

use super::{describe, dump, Workload};

/// The exit code of a refused dump (cairn's `Error::Unsupported`).
pub const REFUSED: i32 = 6;

/// A checked refusal.
pub struct Refusal {
    /// The line "pid N: unsupported: ..." that names every word asked for.
    pub line: String,
    /// The dump's whole stderr.
    pub stderr: String,
}

impl Refusal {
    /// Requires that the dump refused before it froze the tree (it logs
    /// "froze ..." with `-v` once the tree is frozen).
    pub fn assert_before_freeze(&self) {
        assert!(
            !self.stderr.contains("froze"),
            "the refusal came after freezing: {}",
            self.stderr
        );
    }
}

/// Dumps `w` with `-v` and `extra_flags`, requires a refusal naming the
/// workload's pid and every word of `words` (see [`check_refused`]), then
/// SIGTERMs the workload, which must go on and PASS.
pub fn expect_refused(w: &mut Workload, extra_flags: &[&str], words: &[&str]) -> Refusal {
    let r = dump_refused(w.pid, &w.images, extra_flags, words);
    w.terminate_original_expect_pass();
    r
}

/// `cairn dump -t PID -D IMAGES -v EXTRA...`, which must be refused
/// naming "pid PID" and every word of `words` (see [`check_refused`]).
/// The caller ends the target.
pub fn dump_refused(pid: i32, images: &Path, extra_flags: &[&str], words: &[&str]) -> Refusal {
    let mut flags = vec!["-v"];
    flags.extend_from_slice(extra_flags);
    let out = dump(pid, images, &flags);
    let named = format!("pid {pid}");
    let mut all = vec![named.as_str()];
    all.extend_from_slice(words);
    check_refused(&out, pid, images, &all)
}

/// Checks the output of a dump of `pid` into `images`: exit code
/// [`REFUSED`]; a line with "unsupported" that holds every word of
/// `words`; no image written (no `inventory.img`, which a dump writes
/// last); `pid` still running, neither stopped nor traced.
pub fn check_refused(out: &Output, pid: i32, images: &Path, words: &[&str]) -> Refusal {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(REFUSED),
        "the dump of pid {pid} was not refused: {}",
        describe(out)
    );
    let line = stderr
        .lines()
        .find(|l| l.contains("unsupported") && words.iter().all(|w| l.contains(w)))
        .unwrap_or_else(|| {
            panic!("no refusal naming all of {words:?} in the dump of pid {pid}:\n{stderr}")
        })
        .to_string();
    assert!(
        !images.join("inventory.img").exists(),
        "the refused dump of pid {pid} left images in {}",
        images.display()
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("pid {pid} is gone after its refused dump: {e}"));
    let state = status
        .lines()
        .find_map(|l| l.strip_prefix("State:\t"))
        .unwrap_or("");
    assert!(
        status.contains("TracerPid:\t0\n") && !state.starts_with(['T', 't', 'Z', 'X']),
        "the refused dump left pid {pid} traced, stopped or dead:\n{status}"
    );
    Refusal { line, stderr }
}

/// The address a workload logged on a line "addr ADDR": the mapping its
/// refused dump must name.
pub fn logged_addr(w: &Workload) -> String {
    let log = w.log_text();
    log.lines()
        .find_map(|l| l.strip_prefix("addr "))
        .unwrap_or_else(|| panic!("no address in the log of {}: {log}", w.name))
        .trim()
        .to_string()
}

/// Where the files of the test directories cannot be opened again from
/// their kernel file handles ([`super::file_handles_undecodable`]: an
/// overlayfs without `nfs_export=on`, the root of `cargo xtask
/// vm-test`'s guests), cairn cannot find the file an inotify watch or a
/// fanotify inode mark is on, and its dump must refuse: starts workload
/// `name` with `args`, dumps it with `extra_flags`, requires a refusal
/// naming its pid, every word of `words` and the file system that cannot
/// open the file, and that the workload goes on (it checks itself on
/// SIGTERM); notes that `what` was not tried, with the reason, and returns
/// true. False, with nothing done, where the handles can be opened.
pub fn refused_for_file_handles(
    name: &str,
    args: &[&str],
    extra_flags: &[&str],
    words: &[&str],
    what: &str,
) -> bool {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let Some(why) = super::file_handles_undecodable(tmp) else {
        return false;
    };
    let mut w = Workload::start(name, args);
    let mut all = words.to_vec();
    all.push("cannot open the file from its handle");
    let r = expect_refused(&mut w, extra_flags, &all);
    eprintln!("refused as it must: {}", r.line);
    super::note_skip(&format!(
        "{name}: {what} not tried: the files here cannot be opened from their handles ({why}); \
         the dump's refusal was checked instead"
    ));
    true
}
