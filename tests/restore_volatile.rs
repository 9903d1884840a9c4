//! Files on volatile file systems (tmpfs): a job's shared-memory segment,
//! its only-mapped session files, a unix socket and a FIFO in a session
//! directory. The checkpoint must restore after they were wiped, any
//! number of times; a file that holds other bytes at restore is refused
//! (moved aside with --ignore-file-changes).
//!
//! Each test mounts a tmpfs of its own in a private directory (unmounted
//! on the way out) rather than using the machine's /dev/shm, but one,
//! which puts the segment in /dev/shm under a unique name.
mod common;

use std::path::{Path, PathBuf};

use common::tmpfs::Tmpfs;
use common::*;

/// A file this test made outside its directories, removed on drop.
struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Wipes the tmpfs and checks nothing is left in it.
fn wipe(fs: &Tmpfs) {
    fs.wipe();
    assert_eq!(std::fs::read_dir(&fs.path).unwrap().count(), 0);
}

/// Restores the dumped tree and lets it check itself (PASS).
fn restore_and_check(t: &mut TreeTest, flags: &[&str]) {
    t.restore_start(flags, false);
    t.finish();
}

/// The segment and the session directory (only-mapped files, a socket, a
/// FIFO) on a private tmpfs: dump, kill, wipe, restore (compared with the
/// dump's oracle): the processes find their files, contents, holes,
/// modes, and share them. Then wiped again and restored a second time
/// from the same images.
#[test]
fn volatile_files_after_a_wipe_twice() {
    if skip_unless_root() {
        return;
    }
    let fs = Tmpfs::mount("vol-tmpfs", "64m");
    let seg = fs.path.join("vader_segment.1");
    let dir = fs.path.join("ompi.node.0");
    std::fs::create_dir(&dir).expect("mkdir the job directory");
    let mut t = TreeTest::start("vol_files", &["--seg", s(&seg), "--dir", s(&dir)]);
    let snap = t.w.log_snapshot();
    t.dump_ok(&[]);
    t.expect_tree_killed_by_dump();
    wipe(&fs);
    restore_and_check(&mut t, &[]);
    let log = t.w.log_text();
    assert!(log.contains("PASS"), "{log}");
    // Again from the same images, after another wipe.
    wipe(&fs);
    t.w.log_reset(&snap);
    restore_and_check(&mut t, &[]);
}

/// The segment in the machine's /dev/shm (a unique name), removed after
/// the dump as a reboot would: restored.
#[test]
fn volatile_segment_in_dev_shm() {
    if skip_unless_root() {
        return;
    }
    let fs = Tmpfs::mount("vol-tmpfs-shm", "64m");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let seg = PathBuf::from(format!(
        "/dev/shm/cairn-test-vader_segment.{}.{nanos}",
        std::process::id()
    ));
    let _gone = Removed(seg.clone());
    let dir = fs.path.join("job");
    std::fs::create_dir(&dir).expect("mkdir the job directory");
    let mut t = TreeTest::start("vol_files", &["--seg", s(&seg), "--dir", s(&dir)]);
    t.dump_ok(&[]);
    t.expect_tree_killed_by_dump();
    std::fs::remove_file(&seg).expect("remove the segment");
    wipe(&fs);
    restore_and_check(&mut t, &[]);
}

/// Files still there with the checkpointed bytes are used as they are;
/// files that hold other bytes (the restored run wrote into them) are
/// refused, naming them; --ignore-file-changes moves them aside and
/// recreates the checkpointed ones.
#[test]
fn volatile_file_changed_is_refused() {
    if skip_unless_root() {
        return;
    }
    let fs = Tmpfs::mount("vol-tmpfs-chg", "64m");
    let seg = fs.path.join("seg");
    let dir = fs.path.join("job");
    std::fs::create_dir(&dir).expect("mkdir the job directory");
    let mut t = TreeTest::start("vol_files", &["--seg", s(&seg), "--dir", s(&dir)]);
    let snap = t.w.log_snapshot();
    t.dump_ok(&[]);
    t.expect_tree_killed_by_dump();
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&seg).unwrap());
    // Nothing wiped: the files are used as they are (same inode).
    restore_and_check(&mut t, &[]);
    let ino2 = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&seg).unwrap());
    assert_eq!(ino, ino2, "an unchanged volatile file was replaced");
    // The restored run wrote into the segment and dstor.
    t.w.log_reset(&snap);
    let out = restore_expect_fail(&t.w.images, &[], t.w.pid);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains(s(&seg)) && err.contains("other contents"),
        "the refusal does not name {} and why: {err}",
        seg.display()
    );
    assert!(
        err.contains("dstor"),
        "the refusal does not name dstor: {err}"
    );
    // Nothing was touched by the refused restore.
    let ino3 = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&seg).unwrap());
    assert_eq!(ino, ino3);
    // Forced: the current files are moved aside, the saved ones recreated.
    restore_and_check(&mut t, &["--ignore-file-changes"]);
    let aside: Vec<String> = std::fs::read_dir(&fs.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("seg.cairn-"))
        .collect();
    assert_eq!(aside.len(), 1, "no single seg.cairn-* aside: {aside:?}");
}
