//! Integrity of image directories: every file is checksummed and listed by
//! the inventory, a directory is complete or visibly not, images are
//! private (0600 files, 0700 directories), and `cairn show --verify` and
//! `cairn restore` refuse each kind of damage with exit code 5, naming the
//! file and what is wrong, leaving no process behind.
mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;

fn run(args: &[&str], base: &Path) -> std::process::Output {
    let args: Vec<std::ffi::OsString> = args.iter().map(|a| a.into()).collect();
    run_cairn(&args, base, CAIRN_TIMEOUT)
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = fs::remove_dir_all(to);
    fs::create_dir(to).expect("mkdir");
    for e in fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        if e.file_type().expect("type").is_file() {
            fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }
}

fn flip(p: &Path, at: usize) {
    let mut b = fs::read(p).expect("read");
    let i = at.min(b.len() - 1);
    b[i] ^= 0x10;
    fs::write(p, b).expect("write");
}

fn name_of(dir: &Path, prefix: &str) -> String {
    fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|n| n.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix}* in {}", dir.display()))
}

/// `cairn show --verify` must fail with 5 naming `file` and `why`; so must
/// a restore (which leaves no process with the dumped pid).
fn expect_refused(dir: &Path, file: &str, why: &str, pid: i32, restore_too: bool) {
    let v = run(&["show", "--verify", dir.to_str().unwrap()], dir);
    let e = stderr(&v);
    assert_eq!(
        exit_code(&v.status),
        5,
        "verify of {file} ({why}): {}",
        describe(&v)
    );
    assert!(
        e.contains(file) && e.contains(why),
        "verify should name {file} and say {why:?}: {e}"
    );
    assert_eq!(e.lines().count(), 1, "one line: {e}");
    if restore_too {
        let r = restore_expect_fail(dir, &[], pid);
        let e = stderr(&r);
        assert_eq!(
            exit_code(&r.status),
            5,
            "restore with {file} ({why}): {}",
            describe(&r)
        );
        assert!(e.contains(file) && e.contains(why), "restore: {e}");
        assert!(!e.contains("panicked"), "{e}");
        assert!(
            wait_pid_gone(pid, std::time::Duration::from_secs(5)),
            "pid {pid} left behind"
        );
    }
}

#[test]
fn images_are_private_complete_and_checked() {
    if skip_unless_root() {
        return;
    }
    // A second dump to swap files from.
    let other = Workload::start("mem_anon_private", &[]);
    let other_images = other.dir.join("other-images");
    assert_ok(
        &dump(other.pid, &other_images, &["--leave-running"]),
        "dump other",
    );

    let mut w = Workload::start("mem_heap", &[]);
    w.dump_ok(&[]);
    w.expect_killed_by_dump();
    let img = w.images.clone();
    // Private: 0700 directory, 0600 files; nothing staged is left over.
    assert_eq!(
        fs::metadata(&img).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for e in fs::read_dir(&img).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        assert!(m.is_file(), "{:?} in the images", e.file_name());
        assert_eq!(m.permissions().mode() & 0o777, 0o600, "{:?}", e.file_name());
    }
    for e in fs::read_dir(&w.dir).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !n.contains("cairn-tmp"),
            "staging directory {n} left behind"
        );
    }
    let v = run(
        &["show", "--verify", img.to_str().unwrap()],
        &w.dir.join("verify"),
    );
    assert_ok(&v, "show --verify");
    assert!(
        String::from_utf8_lossy(&v.stdout).contains("verified"),
        "{}",
        describe(&v)
    );
    let vj = run(
        &["show", "--verify", "--json", img.to_str().unwrap()],
        &w.dir.join("verifyj"),
    );
    assert_ok(&vj, "show --verify --json");
    assert!(is_valid_json(&String::from_utf8_lossy(&vj.stdout)));

    let core = format!("core-{}.img", w.pid);
    let mm = format!("mm-{}.img", w.pid);
    let case = |n: &str| -> PathBuf {
        let d = w.dir.join(format!("case-{n}"));
        copy_dir(&img, &d);
        d
    };
    // A byte of page data: only the chunk's crc can tell; the restore finds
    // it while writing pages and must still fail cleanly.
    let d = case("pagedata");
    flip(&d.join("pages.img"), 32 + 100);
    expect_refused(&d, "pages.img", "checksum mismatch", w.pid, true);
    // A byte of a message body, of a header, the magic, the version.
    let d = case("body");
    flip(&d.join(&core), 40);
    expect_refused(&d, &core, "checksum mismatch", w.pid, true);
    let d = case("header");
    flip(&d.join(&mm), 17);
    expect_refused(&d, &mm, "header checksum", w.pid, true);
    let d = case("magic");
    flip(&d.join(&mm), 0);
    expect_refused(&d, &mm, "bad magic", w.pid, true);
    let d = case("version");
    flip(&d.join(&mm), 12);
    expect_refused(&d, &mm, "format version", w.pid, true);
    // Truncated, extended, missing, not listed.
    let d = case("truncated");
    let p = d.join("pages.img");
    let len = fs::metadata(&p).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    expect_refused(&d, "pages.img", "truncated", w.pid, true);
    let d = case("extended");
    let p = d.join(&core);
    let len = fs::metadata(&p).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len + 1)
        .unwrap();
    expect_refused(&d, &core, "extended", w.pid, true);
    let d = case("missing");
    fs::remove_file(d.join(&mm)).unwrap();
    expect_refused(&d, &mm, "missing", w.pid, true);
    let d = case("unlisted");
    fs::write(d.join("core-1.img"), fs::read(d.join(&core)).unwrap()).unwrap();
    expect_refused(
        &d,
        "core-1.img",
        "not part of this checkpoint",
        w.pid,
        false,
    );
    // Files of another dump, each valid on its own.
    let d = case("swapped");
    for f in ["pages.img", "pagestore.img"] {
        fs::copy(other_images.join(f), d.join(f)).unwrap();
    }
    expect_refused(&d, "page", "inventory.img records", w.pid, true);
    // An interrupted dump: no inventory (the last file written).
    let d = case("interrupted");
    fs::remove_file(d.join("inventory.img")).unwrap();
    expect_refused(&d, "case-interrupted", "no inventory.img", w.pid, true);

    // The intact images still restore.
    w.restore_wait(&[]);
    drop(other);
}

/// CRIU users hand over an existing (empty) directory: it is kept (same
/// inode, owner and mode), and filled only once the dump is complete. A
/// second dump into it replaces the first checkpoint.
#[test]
fn existing_directory_is_kept_and_refilled() {
    if skip_unless_root() {
        return;
    }
    let w = Workload::start("mem_heap", &[]);
    let d = w.dir.join("given");
    fs::create_dir(&d).unwrap();
    fs::set_permissions(&d, fs::Permissions::from_mode(0o750)).unwrap();
    fs::write(d.join("notes.txt"), "mine").unwrap();
    let ino = fs::metadata(&d).unwrap().ino();
    assert_ok(&dump(w.pid, &d, &["--leave-running"]), "first dump");
    let first = fs::read(d.join("inventory.img")).unwrap();
    assert_ok(&dump(w.pid, &d, &["--leave-running"]), "second dump");
    let m = fs::metadata(&d).unwrap();
    assert_eq!(m.ino(), ino, "the directory was replaced");
    assert_eq!(m.permissions().mode() & 0o777, 0o750);
    assert_eq!(fs::read_to_string(d.join("notes.txt")).unwrap(), "mine");
    assert_ne!(fs::read(d.join("inventory.img")).unwrap(), first);
    let names: Vec<String> = fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains("cairn-tmp")), "{names:?}");
    let _ = name_of(&d, "core-");
    let v = run(&["show", "--verify", d.to_str().unwrap()], &w.dir.join("v"));
    assert_ok(&v, "verify");
    // A staging directory left by a killed dumper is ignored by restore and
    // removed by the next dump into the same place.
    let stale = d.join(".cairn-tmp-99999999");
    fs::create_dir(&stale).unwrap();
    fs::write(stale.join("pages.img"), "partial").unwrap();
    assert_ok(&dump(w.pid, &d, &["--leave-running"]), "third dump");
    assert!(!stale.exists(), "stale staging directory kept");
    let mut w = w;
    w.terminate_original_expect_pass();
}
