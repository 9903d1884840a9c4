//! The oracle: finds what a restore lost, for any workload.
//!
//! `cairn dump --oracle` snapshots the kernel's view of every task of the
//! frozen tree from /proc ([`snapshot`]: status, stat, smaps per VMA,
//! fdinfo and link of every fd, limits, locks, small per-process files,
//! copy-on-write sharing with the parent) into `oracle.img`, before the
//! dump changes anything. `cairn restore --compare` takes the same
//! snapshot of the restored tree when every task is restored but still
//! stopped, and compares field by field ([`diff`]): a difference that is
//! neither allowlisted (with its reason) nor a known pending loss fails
//! the restore, naming pid, field, before and after. docs/ORACLE.md.

pub mod diff;
pub mod snapshot;

use std::collections::HashSet;
use std::path::Path;

use crate::dump::freeze::Frozen;
use crate::error::{Error, Result};
use crate::image::proto::KernelView;
use crate::image::{names, ImageDir, ImageType};
pub use diff::{Difference, Verdict};
pub use snapshot::ProcSpec;

/// Longest field name and value a valid snapshot holds.
const MAX_NAME: usize = 4096;
const MAX_VALUE: usize = 1 << 20;

/// The snapshot of a frozen tree, with each thread's signal mask as it
/// was before the freeze blocked every signal.
pub fn snapshot_frozen(frozen: &Frozen) -> KernelView {
    let specs: Vec<ProcSpec> = frozen
        .procs
        .iter()
        .map(|p| ProcSpec {
            pid: p.pid,
            ppid: p.ppid,
            tids: p.threads.iter().map(|t| t.tid).collect(),
            zombie: p.zombie_status.is_some(),
            sigmask: p.threads.iter().map(|t| (t.tid, t.sigmask)).collect(),
        })
        .collect();
    snapshot::snapshot(&specs)
}

/// `dump --oracle`: snapshots the frozen tree into `oracle.img` of the
/// (staging) directory, before anything of the tree is changed.
pub fn on_frozen(enabled: bool, frozen: &Frozen, dir: &ImageDir) -> Result<()> {
    if !enabled {
        return Ok(());
    }
    let t = std::time::Instant::now();
    let view = snapshot_frozen(frozen);
    info!(
        "oracle: snapshot of {} tasks in {:?}",
        view.tasks.len(),
        t.elapsed()
    );
    dir.write(ImageType::Oracle, names::ORACLE, &view)
}

/// Checks what a decoded snapshot says: a root, tasks with positive
/// unique (pid, tid), bounded names and values.
pub fn validate(v: &KernelView, path: &Path) -> Result<()> {
    let bad = |m: String| Err(Error::image(path, m));
    if v.root_pid <= 0 {
        return bad(format!("bad root pid {}", v.root_pid));
    }
    let mut seen = HashSet::new();
    for t in &v.tasks {
        if t.pid <= 0 || t.tid <= 0 {
            return bad(format!("task with pid {} tid {}", t.pid, t.tid));
        }
        if !seen.insert((t.pid, t.tid)) {
            return bad(format!("pid {} tid {} listed twice", t.pid, t.tid));
        }
        for (k, val) in &t.fields {
            if k.is_empty() || k.len() > MAX_NAME || val.len() > MAX_VALUE {
                return bad(format!(
                    "pid {} tid {}: field name or value out of bounds ({} and {} bytes)",
                    t.pid,
                    t.tid,
                    k.len(),
                    val.len()
                ));
            }
        }
    }
    if !v.tasks.iter().any(|t| t.pid == v.root_pid) {
        return bad(format!("the root pid {} has no task", v.root_pid));
    }
    Ok(())
}

/// `restore --compare`: the dump's snapshot, read and checked before the
/// restore touches anything; `None` without `--compare` (a snapshot
/// present is checked all the same).
pub fn load(enabled: bool, dir: &ImageDir, root_pid: u32) -> Result<Option<KernelView>> {
    if !dir.exists(names::ORACLE) && !enabled {
        return Ok(None);
    }
    if !dir.exists(names::ORACLE) {
        return Err(Error::image(
            dir.file(names::ORACLE),
            "--compare needs the oracle's snapshot of the dumped tree, and this checkpoint has \
             none: dump with --oracle",
        ));
    }
    let path = dir.file(names::ORACLE);
    let v: KernelView = dir.read(ImageType::Oracle, names::ORACLE)?;
    validate(&v, &path)?;
    if v.root_pid as u32 != root_pid {
        return Err(Error::image(
            &path,
            format!(
                "snapshot of pid {}, but the checkpoint's root is pid {root_pid}",
                v.root_pid
            ),
        ));
    }
    // Without --compare a snapshot is still checked, as every file of
    // the checkpoint is: damage is refused, not ignored.
    Ok(enabled.then_some(v))
}

/// The differences that fail a comparison, formatted one per line.
pub fn report(diffs: &[Difference]) -> Result<()> {
    for d in diffs {
        match d.verdict {
            Verdict::Allowed(why) => debug!("oracle: {d} (allowed: {why})"),
            Verdict::Pending(w, lost) => {
                warn!("oracle: known loss, issue 14: {d} ({w}: {lost})")
            }
            Verdict::Unexplained => {}
        }
    }
    let bad: Vec<String> = diffs
        .iter()
        .filter(|d| d.verdict == Verdict::Unexplained)
        .map(|d| format!("  {d}"))
        .collect();
    if bad.is_empty() {
        info!("oracle: the restored tree matches the dumped one");
        return Ok(());
    }
    Err(Error::Restore(format!(
        "restore --compare: {} unexplained difference(s) between the dumped and the restored \
         tree (the restore is undone):\n{}",
        bad.len(),
        bad.join("\n")
    )))
}

/// `restore --compare`, with every task restored and still stopped:
/// snapshots the restored tree (`procs`: pid, parent, zombie; root
/// first) and compares it with `before`. The files at the paths of
/// `volatile` (on tmpfs/ramfs, recreated after a wipe: kinds::volatile)
/// may be new inodes: their fds and mappings are compared by path.
pub fn check_restored(
    before: &KernelView,
    procs: &[(i32, i32, bool)],
    volatile: &std::collections::HashSet<String>,
) -> Result<()> {
    let specs: Vec<ProcSpec> = procs
        .iter()
        .map(|&(pid, ppid, zombie)| ProcSpec {
            pid,
            ppid,
            tids: if zombie {
                vec![pid]
            } else {
                snapshot::tids_of(pid)
            },
            zombie,
            sigmask: Default::default(),
        })
        .collect();
    let mut after = snapshot::snapshot(&specs);
    let mut b = before.clone();
    by_path(&mut b, volatile);
    by_path(&mut after, volatile);
    // Without visible frames on one side there is nothing to compare.
    if !b.pfn_visible || !after.pfn_visible {
        strip_cow(&mut after);
        strip_cow(&mut b);
    }
    report(&diff::diff(&b, &after))
}

/// Replaces the inode of every fd and mapping of a file at one of
/// `paths` by the path (volatile files, recreated with a new inode), and
/// so the inode an epoll watch of such a file through its fd names
/// (`ino:HEX` of a `tfd` line: the restored watch is on the recreated
/// file at the same path).
fn by_path(v: &mut KernelView, paths: &std::collections::HashSet<String>) {
    if paths.is_empty() {
        return;
    }
    for t in v.tasks.iter_mut() {
        let mut set = Vec::new();
        // fd number -> (inode, path) of its volatile file.
        let mut held = std::collections::HashMap::new();
        for (k, val) in &t.fields {
            if !paths.contains(val) {
                continue;
            }
            if let Some(fd) = k.strip_prefix("fd.").and_then(|r| r.strip_suffix(".link")) {
                let ino_key = format!("fd.{fd}.ino");
                if let Some(n) = t.fields.get(&ino_key).and_then(|s| s.parse::<u64>().ok()) {
                    held.insert(fd.to_string(), (n, val.clone()));
                }
                set.push(ino_key);
            } else if let Some(r) = k.strip_prefix("vma.").and_then(|r| r.strip_suffix(".path")) {
                set.push(format!("vma.{r}.inode"));
            }
        }
        for k in set {
            if t.fields.contains_key(&k) {
                t.fields.insert(k, "(volatile file)".into());
            }
        }
        if held.is_empty() {
            continue;
        }
        for (k, val) in t.fields.iter_mut() {
            if k.ends_with(".tfd") {
                *val = diff::map_tfd_inodes(val, |tfd, n| {
                    let (ino, path) = held.get(tfd)?;
                    (*ino == n).then(|| format!("(volatile:{path})"))
                });
            }
        }
    }
}

fn strip_cow(v: &mut KernelView) {
    for t in v.tasks.iter_mut() {
        t.fields.retain(|k, _| !k.starts_with("cow."));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::proto::TaskView;

    fn view(fields: &[(&str, &str)]) -> KernelView {
        let mut v = KernelView::new();
        v.root_pid = 5;
        let mut t = TaskView::new();
        t.pid = 5;
        t.tid = 5;
        t.fields = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        v.tasks.push(t);
        v
    }

    /// An epoll watch of a volatile FIFO (Open MPI's
    /// debugger_attach_fifo): recreated with a new inode at the same path,
    /// the watch compares by path; a watch of another file does not.
    #[test]
    fn epoll_watch_of_a_volatile_file_compares_by_path() {
        let fifo = "/tmp/ompi.x/debugger_attach_fifo";
        let paths: std::collections::HashSet<String> = [fifo.to_string()].into();
        let side = |ino: u64, other: u64| {
            let tfd = format!(
                "7 events: 19 data: 7 pos:0 ino:{ino:x} sdev:2a | 8 events: 1 data: 8 pos:0 ino:{other:x} sdev:2a"
            );
            let (ino_s, other_s) = (ino.to_string(), other.to_string());
            let mut v = view(&[
                ("fd.7.link", fifo),
                ("fd.7.ino", ino_s.as_str()),
                ("fd.8.link", "/etc/hosts"),
                ("fd.8.ino", other_s.as_str()),
                ("fd.9.tfd", tfd.as_str()),
            ]);
            by_path(&mut v, &paths);
            v
        };
        let before = side(0x1a3, 77);
        assert!(diff::diff(&before, &side(0x2b4, 77)).is_empty());
        let d = diff::diff(&before, &side(0x2b4, 78));
        assert!(d.iter().any(|d| d.field == "fd.9.tfd"), "{d:?}");
    }
}
