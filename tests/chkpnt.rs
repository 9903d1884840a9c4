//! The commands of the Solaris guide (`chkpnt`, `resume`), open-file
//! contents kept in the checkpoint, deleted-but-open files, a moved
//! executable (`resume -bp`) and retention (`cairn prune`).
mod common;

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;

const CHKPNT_OK: &str = "Checkpoint operation finished successfully.";
const RESUME_OK: &str = "Resume operation finished successfully.";

fn os_args(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

fn out_base(dir: &Path, tool: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    dir.join(format!("out-{tool}-{}", N.fetch_add(1, Ordering::Relaxed)))
}

/// Runs `tool` (chkpnt, resume or cairn) in `cwd`; its output files go to
/// `outs`. chkpnt and resume run with the oracle (`CAIRN_ORACLE=1`:
/// chkpnt snapshots the tree, resume compares the restored one with it
/// and fails on a difference), as the harness runs `cairn dump`/`restore`.
/// A resume that must not compare names its reason: "resume@no-compare:
/// REASON" (the differences are what the user asked for).
fn run(tool: &str, cwd: &Path, outs: &Path, args: &[&str]) -> Output {
    let (tool, oracle) = match tool.split_once("@no-compare:") {
        Some((t, _)) => (t, "0"),
        None => (tool, "1"),
    };
    let bin = match tool {
        "chkpnt" => chkpnt_bin(),
        "resume" => resume_bin(),
        _ => {
            return run_tool_in(
                &cairn_bin(),
                &os_args(args),
                cwd,
                &out_base(outs, tool),
                CAIRN_TIMEOUT,
            )
        }
    };
    let base = out_base(outs, tool);
    let (so, se) = (base.with_extension("stdout"), base.with_extension("stderr"));
    let mut child = std::process::Command::new(&bin)
        .args(args)
        .env("CAIRN_ORACLE", oracle)
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .stdout(fs::File::create(&so).expect("create stdout file"))
        .stderr(fs::File::create(&se).expect("create stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    match wait_timeout(&mut child, CAIRN_TIMEOUT) {
        Some(status) => Output {
            status,
            stdout: fs::read(&so).unwrap_or_default(),
            stderr: fs::read(&se).unwrap_or_default(),
        },
        None => {
            kill_tree(&mut child);
            panic!(
                "`{} {args:?}` did not finish within {CAIRN_TIMEOUT:?}; killed it",
                bin.display()
            );
        }
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A successful chkpnt printed exactly the guide's two lines; returns the
/// directory it names.
fn chkpnt_dir(out: &Output) -> String {
    assert_ok(out, "chkpnt");
    let text = stdout(out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        text.ends_with('\n') && lines.len() == 2 && lines[0] == CHKPNT_OK,
        "chkpnt's output is not the two expected lines:\n{}",
        describe(out)
    );
    lines[1]
        .strip_prefix("Process image is placed in directory : ")
        .unwrap_or_else(|| panic!("unexpected second line: {}", describe(out)))
        .to_string()
}

/// A successful resume printed exactly its two lines, naming `pid` and
/// `dir`. Returns the resumed process (killed if the test fails).
fn expect_resume_ok(out: &Output, pid: i32, dir: &str) -> Resumed {
    let r = pid_exists(pid).then(|| Resumed::hold(pid));
    assert_ok(out, "resume");
    assert_eq!(
        stdout(out),
        format!("{RESUME_OK}\nProcess {pid} resumed from directory : {dir}\n"),
        "resume's output is not the two expected lines:\n{}",
        describe(out)
    );
    r.unwrap_or_else(|| panic!("the resumed process {pid} is not running"))
}

/// A failed resume: exit code 4, one line on stderr, no process restored.
fn expect_resume_refused(out: &Output, pid: i32) -> String {
    // Should it have restored something anyway, it is killed on return.
    let _stray = pid_exists(pid).then(|| Resumed::hold(pid));
    assert_eq!(
        exit_code(&out.status),
        4,
        "resume was expected to fail with exit code 4:\n{}",
        describe(out)
    );
    let err = stderr(out);
    assert_eq!(
        err.lines().count(),
        1,
        "resume's error is not one line:\n{}",
        describe(out)
    );
    assert!(
        err.starts_with("Resume operation failed: "),
        "{}",
        describe(out)
    );
    assert!(_stray.is_none(), "pid {pid} runs after a refused resume");
    err
}

/// The guide's directory name for the local time `offset` seconds from
/// now, as date(1) formats it.
fn guide_name(offset: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_secs() as i64;
    let out = std::process::Command::new("date")
        .arg("-d")
        .arg(format!("@{}", now + offset))
        .arg("+.chkpnt_at_%Y_%m_%d_-_%H_%M")
        .output()
        .expect("run date");
    assert!(out.status.success(), "date failed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// Entries of `dir` whose names start with `prefix`.
fn entries_with_prefix(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    v.sort();
    v
}

/// A directory for data files, removed unless the test fails.
struct DataDir(PathBuf);

impl DataDir {
    fn new(tag: &str) -> DataDir {
        DataDir(fresh_dir(tag))
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// chkpnt without -od in a directory: the exact two lines, a new
/// `.chkpnt_at_YYYY_MM_DD_-_HH_MM` there (local time) and the process
/// still running; a second chkpnt whose name is taken gets `_2`, and with
/// -k ends the process; resume prints its two lines and the process goes
/// on (PASS). Then `cairn prune --older-than 0s` there removes both
/// checkpoints and nothing else.
#[test]
fn chkpnt_default_dir_k_and_resume() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("mem_heap", &[]);
    let cwd = w.dir.join("cwd");
    fs::create_dir(&cwd).expect("mkdir cwd");
    let pid = w.pid.to_string();

    let before = guide_name(0);
    let out = run("chkpnt", &cwd, &w.dir, &["-p", &pid]);
    let after = guide_name(0);
    let first = chkpnt_dir(&out);
    assert!(
        first == before || first == after,
        "chkpnt chose {first:?}, expected {before:?} (local time)"
    );
    assert!(
        cwd.join(&first).join("inventory.img").is_file(),
        "{first} in the current directory holds no checkpoint"
    );
    assert!(
        w.original_alive(),
        "chkpnt without -k ended the process. Its log:\n{}",
        tail(&w.log, 4000)
    );

    // The names of this minute and the next are taken now.
    let (cur, next) = (guide_name(0), guide_name(60));
    for n in [&cur, &next] {
        fs::create_dir_all(cwd.join(n)).expect("mkdir");
    }
    let out = run("chkpnt", &cwd, &w.dir, &["-p", &pid, "-k"]);
    let second = chkpnt_dir(&out);
    assert!(
        second == format!("{cur}_2") || second == format!("{next}_2"),
        "the second chkpnt chose {second:?}, expected {cur}_2 or {next}_2"
    );
    assert!(cwd.join(&second).join("inventory.img").is_file());
    w.expect_killed_by_dump();

    let out = run("resume", &cwd, &w.dir, &["-od", &second]);
    expect_resume_ok(&out, w.pid, &second).terminate_expect_pass(&w.log);

    let out = run("cairn", &cwd, &w.dir, &["prune", "--older-than", "0s"]);
    assert_ok(&out, "cairn prune --older-than 0s");
    let mut removed: Vec<String> = stdout(&out)
        .lines()
        .map(|l| l.split(" (").next().unwrap_or("").to_string())
        .collect();
    removed.sort();
    let mut want = vec![format!("removed ./{first}"), format!("removed ./{second}")];
    want.sort();
    assert_eq!(removed, want, "{}", describe(&out));
    assert!(!cwd.join(&first).exists() && !cwd.join(&second).exists());
    for n in [&cur, &next] {
        assert!(
            n == &first || cwd.join(n).is_dir(),
            "prune removed {n}, an empty directory that is no checkpoint"
        );
    }
}

/// chkpnt -od DIR without -k: the process keeps running and PASSes. It
/// wrote to its log afterwards, so resume puts the checkpointed log back
/// and keeps the current one beside it, saying so; the resumed process
/// PASSes again into the restored log.
#[test]
fn chkpnt_keeps_running_and_resume_keeps_the_changed_log() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("mem_heap", &[]);
    let images = path_str(&w.images).to_string();
    let out = run(
        "chkpnt",
        &w.dir,
        &w.dir,
        &["-p", &w.pid.to_string(), "-od", &images],
    );
    assert_eq!(chkpnt_dir(&out), images);
    assert!(
        w.images.join("oracle.img").is_file(),
        "chkpnt with CAIRN_ORACLE=1 took no oracle snapshot"
    );
    let at_dump = fs::read_to_string(&w.log).expect("log");
    w.terminate_original_expect_pass();
    let current = fs::read_to_string(&w.log).expect("log");

    let out = run("resume", &w.dir, &w.dir, &["-od", &images]);
    let r = expect_resume_ok(&out, w.pid, &images);
    let log = path_str(&w.log);
    let aside = entries_with_prefix(&w.dir, "workload.log.cairn-");
    assert_eq!(aside.len(), 1, "expected one kept log beside it: {aside:?}");
    let err = stderr(&out);
    assert!(
        err.contains(log) && err.contains(path_str(&aside[0])),
        "resume does not name both the log and its kept version:\n{}",
        describe(&out)
    );
    assert_eq!(
        fs::read_to_string(&aside[0]).expect("kept log"),
        current,
        "the kept version is not the log as it was before resume"
    );
    let restored = fs::read_to_string(&w.log).expect("log");
    assert!(
        restored.starts_with(&at_dump) && !restored.contains("PASS"),
        "the log was not put back to its checkpointed contents:\n{restored}"
    );
    r.terminate_expect_pass(&w.log);
}

/// Start files_regular on a file of its own, chkpnt -k it, let `change`
/// modify the file; returns the workload, the data dir and the file.
fn checkpoint_files_regular(change: fn(&Path)) -> (Workload, DataDir, PathBuf) {
    let data = DataDir::new("chkpnt-data");
    let path = data.0.join("files_regular.data");
    let mut w = Workload::start("files_regular", &["--file", path_str(&path)]);
    let images = path_str(&w.images).to_string();
    let out = run(
        "chkpnt",
        &w.dir,
        &w.dir,
        &["-p", &w.pid.to_string(), "-k", "-od", &images],
    );
    assert_eq!(chkpnt_dir(&out), images);
    w.expect_killed_by_dump();
    change(&path);
    (w, data, path)
}

/// The checked file changed (one byte more): resume puts the checkpointed
/// contents back, keeps the changed file beside it and names both; the
/// workload checks size, contents, offsets and flags and PASSes.
#[test]
fn resume_after_file_changed() {
    if skip_unless_root() {
        return;
    }
    let (w, data, path) = checkpoint_files_regular(append_byte);
    let changed = fs::read(&path).expect("read the changed file");
    assert_eq!(changed.len(), 8193);
    let out = run("resume", &w.dir, &w.dir, &["-od", path_str(&w.images)]);
    let r = expect_resume_ok(&out, w.pid, path_str(&w.images));
    let aside = entries_with_prefix(&data.0, "files_regular.data.cairn-");
    assert_eq!(
        aside.len(),
        1,
        "expected the changed file beside it: {aside:?}"
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{} changed", path.display())) && err.contains(path_str(&aside[0])),
        "resume does not name the file and where its current version went:\n{}",
        describe(&out)
    );
    assert_eq!(fs::read(&aside[0]).expect("read"), changed);
    let md = fs::metadata(&path).expect("stat");
    assert_eq!(md.len(), 8192, "the checkpointed size is not back");
    assert_eq!(md.permissions().mode() & 0o7777, 0o644);
    r.terminate_expect_pass(&w.log);
}

/// Same size, same mtime, other bytes: only the contents tell, and resume
/// still puts them back (the workload reads at offset 3000 and checks).
#[test]
fn resume_after_same_size_change() {
    if skip_unless_root() {
        return;
    }
    fn scribble(p: &Path) {
        use std::io::{Seek, SeekFrom, Write};
        let mtime = fs::metadata(p).and_then(|m| m.modified()).expect("mtime");
        let mut f = fs::OpenOptions::new().write(true).open(p).expect("open");
        f.seek(SeekFrom::Start(3000)).expect("seek");
        f.write_all(&[0u8; 100]).expect("write");
        f.set_modified(mtime).expect("reset mtime");
    }
    let (w, data, _path) = checkpoint_files_regular(scribble);
    let out = run("resume", &w.dir, &w.dir, &["-od", path_str(&w.images)]);
    let r = expect_resume_ok(&out, w.pid, path_str(&w.images));
    assert_eq!(
        entries_with_prefix(&data.0, "files_regular.data.cairn-").len(),
        1,
        "the scribbled version was not kept:\n{}",
        describe(&out)
    );
    r.terminate_expect_pass(&w.log);
}

/// The file was deleted: resume recreates it (contents, mode) and the
/// workload PASSes.
#[test]
fn resume_after_file_deleted() {
    if skip_unless_root() {
        return;
    }
    fn remove(p: &Path) {
        fs::remove_file(p).expect("remove the file");
    }
    let (w, data, path) = checkpoint_files_regular(remove);
    let out = run(
        "resume@no-compare: the deleted file is recreated, a new inode",
        &w.dir,
        &w.dir,
        &["-od", path_str(&w.images)],
    );
    let r = expect_resume_ok(&out, w.pid, path_str(&w.images));
    assert!(
        stderr(&out).contains(path_str(&path)),
        "resume does not say it recreated {}:\n{}",
        path.display(),
        describe(&out)
    );
    let md = fs::metadata(&path).expect("the file was not recreated");
    assert_eq!(md.len(), 8192);
    assert_eq!(md.permissions().mode() & 0o7777, 0o644);
    assert!(entries_with_prefix(&data.0, "files_regular.data.cairn-").is_empty());
    r.terminate_expect_pass(&w.log);
}

/// `cairn dump --file-contents=4k`: the 8 KiB file is not kept, so after
/// it is deleted restore refuses, naming it (today's behaviour).
#[test]
fn file_contents_limit_is_respected() {
    if skip_unless_root() {
        return;
    }
    let data = DataDir::new("chkpnt-limit");
    let path = data.0.join("files_regular.data");
    let mut w = Workload::start("files_regular", &["--file", path_str(&path)]);
    w.dump_ok(&["--file-contents=4k"]);
    w.expect_killed_by_dump();
    fs::remove_file(&path).expect("remove");
    let out = restore_expect_fail(&w.images, &[], w.pid);
    assert!(
        stderr(&out).contains(path_str(&path)),
        "the refusal does not name {}:\n{}",
        path.display(),
        describe(&out)
    );
    assert!(!path.exists(), "a file over the limit was recreated");
}

/// A deleted-but-open file is kept even with --file-contents=none and
/// comes back as an unlinked file: the workload checks contents, mode,
/// nlink 0, offsets, shared description and the "(deleted)" link. No file
/// is left behind in its directory.
#[test]
fn ghost_file_is_kept() {
    if skip_unless_root() {
        return;
    }
    let data = DataDir::new("chkpnt-ghost");
    let path = data.0.join("ghost.data");
    let mut w = Workload::start("files_ghost", &["--file", path_str(&path)]);
    let images = path_str(&w.images).to_string();
    let out = run(
        "chkpnt",
        &w.dir,
        &w.dir,
        &[
            "-p",
            &w.pid.to_string(),
            "-k",
            "--file-contents=none",
            "-od",
            &images,
        ],
    );
    assert_eq!(chkpnt_dir(&out), images);
    w.expect_killed_by_dump();
    assert!(!path.exists());

    let out = run("cairn", &w.dir, &w.dir, &["show", &images, "--json"]);
    assert_ok(&out, "cairn show --json");
    let json = stdout(&out);
    assert!(
        json.contains("\"kind\":\"contents\"") && json.contains("\"deleted\":true"),
        "cairn show does not decode contents.img with the deleted file:\n{json}"
    );

    let out = run("resume", &w.dir, &w.dir, &["-od", &images]);
    let r = expect_resume_ok(&out, w.pid, &images);
    let left: Vec<_> = fs::read_dir(&data.0).expect("read_dir").collect();
    assert!(
        left.is_empty(),
        "files left in the deleted file's directory: {left:?}"
    );
    r.terminate_expect_pass(&w.log);
}

/// Starts a copy of the mem_heap workload from `root/bin`, chkpnt -k it,
/// then moves the program to `root/moved` (a copy, the original removed:
/// another inode, another mtime).
fn checkpoint_then_move_exe(root: &Path) -> (Workload, PathBuf, PathBuf) {
    let bin = root.join("bin");
    let moved = root.join("moved");
    fs::create_dir(&bin).expect("mkdir bin");
    fs::create_dir(&moved).expect("mkdir moved");
    let exe = bin.join("mem_heap");
    fs::copy(workload_bin("mem_heap"), &exe).expect("copy the workload");
    let mut w = Workload::start_exe(&exe, "mem_heap", &[]);
    let images = path_str(&w.images).to_string();
    let out = run(
        "chkpnt",
        &w.dir,
        &w.dir,
        &["-p", &w.pid.to_string(), "-k", "-od", &images],
    );
    assert_eq!(chkpnt_dir(&out), images);
    w.expect_killed_by_dump();
    std::thread::sleep(Duration::from_millis(20));
    fs::copy(&exe, moved.join("mem_heap")).expect("copy");
    fs::remove_file(&exe).expect("remove the original program");
    (w, exe, moved)
}

/// The program moved after the checkpoint: resume without -bp refuses in
/// one line that says to use -bp; with -bp it maps the program from there
/// (exe link and mappings) and the process PASSes.
#[test]
fn resume_bp_after_moving_exe() {
    if skip_unless_root() {
        return;
    }
    let root = DataDir::new("chkpnt-exe");
    let (w, exe, moved) = checkpoint_then_move_exe(&root.0);
    let images = path_str(&w.images);
    let out = run("resume", &w.dir, &w.dir, &["-od", images]);
    let err = expect_resume_refused(&out, w.pid);
    assert!(
        err.contains("-bp") && err.contains(path_str(&exe)),
        "the error names neither -bp nor the program:\n{}",
        describe(&out)
    );

    let out = run(
        "resume@no-compare: -bp maps the program from its new place",
        &w.dir,
        &w.dir,
        &["-od", images, "-bp", path_str(&moved)],
    );
    let r = expect_resume_ok(&out, w.pid, images);
    let new_exe = moved.join("mem_heap");
    let link = fs::read_link(format!("/proc/{}/exe", w.pid)).expect("exe link");
    assert_eq!(link, new_exe, "the resumed process runs the wrong program");
    let maps = fs::read_to_string(format!("/proc/{}/maps", w.pid)).expect("maps");
    assert!(
        maps.contains(path_str(&new_exe)) && !maps.contains(path_str(&exe)),
        "the program is not mapped from its new place:\n{maps}"
    );
    r.terminate_expect_pass(&w.log);
}

/// -bp naming a directory whose file of that name is another program:
/// refused (contents, not the name, decide); with the right program put
/// there, the same resume works.
#[test]
fn resume_bp_refuses_a_different_program() {
    if skip_unless_root() {
        return;
    }
    let root = DataDir::new("chkpnt-exe-other");
    let (w, _exe, moved) = checkpoint_then_move_exe(&root.0);
    let other = root.0.join("other");
    fs::create_dir(&other).expect("mkdir other");
    let impostor = other.join("mem_heap");
    fs::copy(workload_bin("files_dev"), &impostor).expect("copy");
    let images = path_str(&w.images);
    let out = run(
        "resume",
        &w.dir,
        &w.dir,
        &["-od", images, "-bp", path_str(&other)],
    );
    let err = expect_resume_refused(&out, w.pid);
    assert!(
        err.contains(path_str(&impostor)) && err.contains("differ"),
        "the refusal does not say the program in -bp differs:\n{}",
        describe(&out)
    );

    fs::copy(moved.join("mem_heap"), &impostor).expect("copy the right program");
    let out = run(
        "resume@no-compare: -bp maps the program from its new place",
        &w.dir,
        &w.dir,
        &["-od", images, "-bp", path_str(&other)],
    );
    expect_resume_ok(&out, w.pid, images).terminate_expect_pass(&w.log);
}

/// Bad command lines: one line, exit code 2.
#[test]
fn chkpnt_and_resume_usage_errors() {
    let dir = DataDir::new("chkpnt-usage");
    for (tool, args) in [
        ("chkpnt", &[][..]),
        ("chkpnt", &["-p", "abc"]),
        ("chkpnt", &["-p", "1", "--file-contents=lots"]),
        ("resume", &[]),
        ("resume", &["-od"]),
        ("resume", &["-od", "x", "-z"]),
    ] {
        let out = run(tool, &dir.0, &dir.0, args);
        assert_eq!(
            exit_code(&out.status),
            2,
            "{tool} {args:?}: {}",
            describe(&out)
        );
        assert_eq!(stderr(&out).lines().count(), 1, "{}", describe(&out));
        assert!(out.stdout.is_empty());
    }
}

// ---------------------------------------------------------------------------
// cairn prune

/// A minimal image directory (inventory and pstree) dumped `age` ago.
fn image_dir(p: &Path, age: Duration) {
    use cairn::image::proto::{Inventory, Pstree};
    use cairn::image::{names, ImageDir, ImageType, FORMAT_VERSION};
    let d = ImageDir::create(p).expect("create image dir");
    let mut inv = Inventory::new();
    inv.format_version = FORMAT_VERSION;
    inv.root_pid = 4242;
    inv.dump_time_unix_ms = (SystemTime::now() - age)
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_millis() as u64;
    d.write(ImageType::Inventory, names::INVENTORY, &inv)
        .expect("write inventory");
    d.write(ImageType::Pstree, names::PSTREE, &Pstree::new())
        .expect("write pstree");
}

const DAY: Duration = Duration::from_secs(86_400);

/// Old, new and foreign directories side by side: --dry-run lists only
/// the old checkpoint; prune removes only it; a checkpoint holding a file
/// of the user's, a directory with a fake inventory, a plain directory, a
/// symbolic link to an old checkpoint elsewhere and a file are never
/// touched; a foreign DIR is refused; DIR naming one checkpoint works.
#[test]
fn prune_old_new_and_foreign() {
    let t = DataDir::new("prune");
    let outside = DataDir::new("prune-outside");
    let d = |n: &str| t.0.join(n);
    image_dir(&d("old"), 6 * DAY);
    image_dir(&d("new"), DAY);
    image_dir(&d("old-with-notes"), 6 * DAY);
    fs::write(d("old-with-notes").join("notes.txt"), "mine").expect("write");
    fs::create_dir(d("plain")).expect("mkdir");
    fs::write(d("plain").join("data.txt"), "data").expect("write");
    fs::create_dir(d("fake")).expect("mkdir");
    fs::write(d("fake").join("inventory.img"), "not an image").expect("write");
    image_dir(&outside.0.join("old-elsewhere"), 6 * DAY);
    std::os::unix::fs::symlink(outside.0.join("old-elsewhere"), d("link")).expect("symlink");
    fs::write(d("file.img"), "x").expect("write");
    let outs = fresh_dir("prune-outs");
    let all = [
        "new",
        "old-with-notes",
        "old-with-notes/notes.txt",
        "plain/data.txt",
        "fake/inventory.img",
        "link",
        "file.img",
    ];
    let keep_all = |what: &str| {
        for n in all {
            assert!(d(n).exists(), "{what} removed {n}");
        }
        assert!(outside.0.join("old-elsewhere/inventory.img").is_file());
    };
    let tdir = path_str(&t.0);

    let out = run(
        "cairn",
        &outs,
        &outs,
        &["prune", "--older-than", "5d", "--dry-run", tdir],
    );
    assert_ok(&out, "cairn prune --dry-run");
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{}", describe(&out));
    assert!(
        text.starts_with(&format!("would remove {} (6d", d("old").display())),
        "{}",
        describe(&out)
    );
    assert!(
        d("old/inventory.img").is_file(),
        "--dry-run removed something"
    );
    keep_all("--dry-run");

    let out = run(
        "cairn",
        &outs,
        &outs,
        &["prune", "--older-than", "5d", tdir],
    );
    assert_ok(&out, "cairn prune");
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{}", describe(&out));
    assert!(text.starts_with(&format!("removed {} (", d("old").display())));
    assert!(!d("old").exists(), "the old checkpoint is still there");
    keep_all("prune");
    assert!(
        stderr(&out).contains("old-with-notes"),
        "prune does not say why it left old-with-notes:\n{}",
        describe(&out)
    );

    // Not a checkpoint and holding none: refused, untouched.
    let out = run(
        "cairn",
        &outs,
        &outs,
        &["prune", "--older-than", "0s", path_str(&d("plain"))],
    );
    assert_eq!(exit_code(&out.status), 1, "{}", describe(&out));
    assert!(stderr(&out).contains("not a cairn image directory"));
    let out = run(
        "cairn",
        &outs,
        &outs,
        &["prune", "--older-than", "0s", path_str(&d("link"))],
    );
    assert_eq!(exit_code(&out.status), 2, "{}", describe(&out));
    keep_all("prune of foreign directories");

    // DIR is one checkpoint; without DIR, the current directory.
    let out = run(
        "cairn",
        &outs,
        &outs,
        &["prune", "--older-than", "12h", path_str(&d("new"))],
    );
    assert_ok(&out, "cairn prune DIR");
    assert!(
        !d("new").exists(),
        "DIR (an old enough checkpoint) was kept"
    );
    let out = run("cairn", &t.0, &outs, &["prune"]);
    assert_ok(&out, "cairn prune in the directory");
    assert!(stdout(&out).is_empty(), "{}", describe(&out));
    assert!(d("old-with-notes/notes.txt").is_file());
    let _ = fs::remove_dir_all(&outs);
}

/// Every thread's (tid, SigBlk, TracerPid) of `pid`.
fn thread_masks(pid: i32) -> Vec<(String, String, String)> {
    let mut v: Vec<(String, String, String)> = fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let t = e.file_name().to_string_lossy().into_owned();
                    let s = fs::read_to_string(format!("/proc/{pid}/task/{t}/status")).ok()?;
                    let f = |k: &str| {
                        s.lines()
                            .find_map(|l| l.strip_prefix(k))
                            .map(|v| v.trim().to_string())
                            .unwrap_or_default()
                    };
                    Some((t, f("SigBlk:"), f("TracerPid:")))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `chkpnt` SIGKILLed in the middle of its checkpoint (frozen, images
/// written, CAIRN_PAUSE_AT=written): its guardian (chkpnt re-executed)
/// puts the target back: every thread untraced with its signal mask as
/// before, no directory or staging directory left, and the target's own
/// check passes.
#[test]
fn chkpnt_killed_in_the_middle() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("fault_mem", &["--mib", "64"]);
    std::thread::sleep(Duration::from_millis(200));
    let before = thread_masks(w.pid);
    assert!(before.iter().all(|t| t.2 == "0"), "{before:?}");
    let dir = w.dir.join("ck");
    let base = w.dir.join("chkpnt-killed");
    let stderr = base.with_extension("stderr");
    let mut c = std::process::Command::new(chkpnt_bin())
        .args(["-v", "-p", &w.pid.to_string(), "-od"])
        .arg(&dir)
        .env("CAIRN_PAUSE_AT", "written")
        .stdin(std::process::Stdio::null())
        .stdout(fs::File::create(base.with_extension("stdout")).unwrap())
        .stderr(fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("spawn chkpnt");
    let deadline = std::time::Instant::now() + CAIRN_TIMEOUT;
    while !fs::read_to_string(&stderr).is_ok_and(|s| s.contains("paused at written")) {
        if let Ok(Some(st)) = c.try_wait() {
            panic!(
                "chkpnt exited ({st}) before pausing: {}",
                tail(&stderr, 4000)
            );
        }
        if std::time::Instant::now() >= deadline {
            let _ = c.kill();
            let _ = c.wait();
            panic!("chkpnt did not pause: {}", tail(&stderr, 4000));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Frozen at this moment (every signal blocked, traced), unless the
    // dump took a background snapshot: then the tree was thawed before
    // its pages were copied and runs while they are written.
    let background = fs::read_to_string(&stderr)
        .is_ok_and(|s| s.contains("background snapshot:") && s.contains("while the tree ran"));
    assert!(
        background || thread_masks(w.pid).iter().all(|t| t.2 != "0"),
        "not frozen at the pause, and no background snapshot: {}",
        tail(&stderr, 2000)
    );
    c.kill().expect("SIGKILL chkpnt");
    let _ = c.wait();
    let err = fs::read_to_string(&stderr).unwrap_or_default();
    let guardian: i32 = err
        // The last one: an armed background snapshot starts one of its own first.
        .rsplit_once("guardian started (pid ")
        .map(|(_, r)| r)
        .and_then(|r| r.split(')').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("chkpnt started no guardian: {err}"));
    assert!(
        wait_pid_gone(guardian, Duration::from_secs(20)),
        "the guardian {guardian} is still there"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while thread_masks(w.pid) != before && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        thread_masks(w.pid),
        before,
        "signal masks or tracers not as before: {}",
        tail(&stderr, 2000)
    );
    assert!(!dir.exists(), "{} exists", dir.display());
    let left = entries_with_prefix(&w.dir, ".ck");
    assert!(left.is_empty(), "staging directories left: {left:?}");
    std::thread::sleep(Duration::from_millis(300));
    w.terminate_original_expect_pass();
}
