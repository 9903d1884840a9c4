//! The hold point of a backup (`cairn __pair-backup`).
//!
//! A backup is a restore in a new pid namespace (as `cairn restore
//! --pid-ns`) that stops just before its tasks are let go: every process
//! and thread exists with its pid, its memory, its fds, its attributes and
//! its registers, and all are still ptrace-stopped (seized, with
//! `PTRACE_O_EXITKILL`) by the restoring init. There the init says `held
//! PID` on its stdout (PID: the root's pid in the new namespace) and
//! waits for a line `go` on its stdin; then the restore ends as usual
//! (tasks detached, children first), the init says `ok PID` and reaps the
//! tree as `__pidns-restore` does. What is left at release costs the same
//! whatever the size of the tree's memory: detaching the threads, and
//! writing back the saved contents of the files the tree has open (see
//! below). EOF or anything else on stdin fails the restore, which kills
//! every task (the supervisor normally kills the init instead).
//!
//! Files: a restore writes the checkpointed contents of the regular files
//! the tree has open back into those files before it creates the tree
//! (`kinds::contents`). A backup is prepared while the primary still
//! runs and writes those very files, so a held backup writes them back
//! only when it is released, into the same inodes its fds were opened
//! on (a file the primary changed meanwhile gets its current version
//! copied aside first, as for any restore). Deleted-but-open files
//! (private to the tree) are recreated at preparation as usual.
//!
//! Files on a volatile file system (tmpfs: `kinds::volatile`) are the
//! primary's very files too (one machine, one tmpfs): one the primary
//! changed since the checkpoint is not refused as for a restore but used
//! as it is at preparation ([`defer_volatile`]) and written back at
//! release like the other live files.
//!
//! [`point`] and [`split_contents`] are the two calls in
//! `restore/mod.rs`; both do nothing unless [`arm`] was called, which
//! only `cairn __pair-backup` does.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::image::pages::PageStoreReader;
use crate::image::proto::FileContents;

static ARMED: AtomicBool = AtomicBool::new(false);

/// Armed for a backup whose primary still runs (not for a node of a job,
/// [`arm_hold`]): its live volatile files are taken as they are.
static LIVE_PRIMARY: AtomicBool = AtomicBool::new(false);

/// Volatile files the primary changed, written back at release.
static DEFERRED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The line the init writes once the tree is held.
pub const HELD: &str = "held";
/// The line that releases a held backup.
pub const GO: &str = "go";

/// Makes this process's restore stop at the hold point.
pub fn arm() {
    ARMED.store(true, Ordering::SeqCst);
    LIVE_PRIMARY.store(true, Ordering::SeqCst);
}

/// Makes this process's restore stop at the hold point, as a node of a
/// job does (`cairn __node-agent restore`, `crate::job`): nothing else
/// runs from these images, so a changed volatile file is refused as by
/// any restore.
pub fn arm_hold() {
    ARMED.store(true, Ordering::SeqCst);
}

fn armed() -> bool {
    ARMED.load(Ordering::SeqCst)
}

/// Armed: the volatile file at `path`, which holds other contents than
/// at the checkpoint, is the living primary's; it is written back at
/// release (true). Not armed: false (a restore refuses it).
pub fn defer_volatile(path: &str) -> bool {
    if !armed() || !LIVE_PRIMARY.load(Ordering::SeqCst) {
        return false;
    }
    let mut d = DEFERRED.lock().unwrap_or_else(|e| e.into_inner());
    d.push(path.to_string());
    true
}

/// Splits the saved file contents of a restore into what is put back
/// before the tree is created and what is put back at release (`None`
/// unless armed): a held backup keeps the live files for [`point`].
pub fn split_contents(saved: Option<FileContents>) -> (Option<FileContents>, Option<FileContents>) {
    let Some(all) = saved else {
        return (None, None);
    };
    if !armed() || !LIVE_PRIMARY.load(Ordering::SeqCst) {
        // A job's node (`arm_hold`): nothing else runs from these
        // images, so every file is put back before the tree is made.
        return (Some(all), None);
    }
    let mut now = all.clone();
    let mut late = all;
    now.files.retain(|f| f.deleted);
    late.files.retain(|f| !f.deleted);
    let late = (!late.files.is_empty()).then_some(late);
    (Some(now), late)
}

/// The hold point: every task of the tree rooted at `root` is in place
/// and still traced. Armed, says `held PID` on stdout and waits for `go`
/// on stdin, then writes `late` (see [`split_contents`]) back. Not armed:
/// returns at once.
pub fn point(
    root: i32,
    late: Option<FileContents>,
    store: &PageStoreReader,
    volatile: &HashSet<String>,
) -> Result<()> {
    if !armed() {
        return Ok(());
    }
    let me = crate::sys::task::getpid();
    // Stdout and stdin, or a job agent's link to its coordinator.
    crate::job::link::say(&format!("{HELD} {root}"))
        .map_err(|e| Error::sys(me, "write to the pair supervisor", e))?;
    if LIVE_PRIMARY.load(Ordering::SeqCst) {
        info!("pair: backup held (root pid {root} in its namespace): waiting for the release");
    } else {
        info!("restored tree held (root pid {root}): waiting for the release");
    }
    let line = crate::job::link::hear()
        .map_err(|e| Error::sys(me, "read from the pair supervisor", e))?
        .unwrap_or_default();
    if line.trim() != GO {
        return Err(Error::Restore(format!(
            "pair: the held backup (root pid {root}) was not released (its supervisor said \
             {:?}): the tree is killed",
            line.trim()
        )));
    }
    let t = Instant::now();
    if let Some(c) = late {
        // Volatile files were made at preparation, except those the
        // primary was still writing.
        let deferred = DEFERRED.lock().unwrap_or_else(|e| e.into_inner());
        let skip: HashSet<String> = volatile
            .iter()
            .filter(|p| !deferred.contains(p))
            .cloned()
            .collect();
        crate::kinds::contents::put_back(&c, store, &skip)?;
    }
    info!("pair: released; files written back in {:?}", t.elapsed());
    Ok(())
}
