//! Issue 12, "safe as root on a shared machine": root's cairn against an
//! unprivileged user (uid 64123, no groups) who can write a shared
//! directory. Each test plays a real attack and then checks that nothing
//! outside the image directory changed, that the checkpoint still works
//! and that nothing was left behind.
//!
//! The attacker's files are made by root and chowned to the attacker
//! (planting 32768 links with one process per link would take minutes);
//! what runs concurrently with cairn (the swapper of the prune race) runs
//! as the attacker under setpriv(1).
mod common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

const ATTACKER: u32 = 64123;

fn setpriv() -> Option<PathBuf> {
    ["/usr/bin/setpriv", "/bin/setpriv"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Skips (saying why) unless root with setpriv(1).
fn skip() -> bool {
    if skip_unless_root() {
        return true;
    }
    if setpriv().is_none() {
        note_skip(&format!(
            "no setpriv(1) to run the attacker as uid {ATTACKER}"
        ));
        return true;
    }
    false
}

fn os(s: impl AsRef<std::ffi::OsStr>) -> OsString {
    s.as_ref().to_os_string()
}

fn cairn(args: &[&dyn AsRef<std::ffi::OsStr>], base: &Path) -> Output {
    let args: Vec<OsString> = args.iter().map(os).collect();
    run_cairn(&args, base, CAIRN_TIMEOUT)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A directory `name` in `t` with `mode` (0777, 01777): the shared one.
fn shared(t: &Path, name: &str, mode: u32) -> PathBuf {
    let d = t.join(name);
    fs::create_dir(&d).unwrap();
    fs::set_permissions(&d, fs::Permissions::from_mode(mode)).unwrap();
    d
}

fn give(p: &Path) {
    std::os::unix::fs::lchown(p, Some(ATTACKER), Some(ATTACKER))
        .unwrap_or_else(|e| panic!("lchown {}: {e}", p.display()));
}

fn give_tree(p: &Path) {
    give(p);
    if fs::symlink_metadata(p).unwrap().is_dir() {
        for e in fs::read_dir(p).unwrap() {
            give_tree(&e.unwrap().path());
        }
    }
}

/// Root's data that the attacks aim at: a directory of files (one of
/// them named like an image) and a file.
fn victim(t: &Path) -> PathBuf {
    let v = t.join("victim");
    fs::create_dir(&v).unwrap();
    fs::write(v.join("precious.txt"), "root's data\n").unwrap();
    fs::write(v.join("core-1.img"), "not cairn's\n").unwrap();
    fs::write(v.join("inventory.img"), "not cairn's either\n").unwrap();
    v
}

/// Everything under `p` (not following links): type, mode, owner, size,
/// contents of regular files, link targets.
fn snapshot(p: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, p: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let m = fs::symlink_metadata(p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        let what = if m.file_type().is_symlink() {
            format!("link -> {}", fs::read_link(p).unwrap().display())
        } else if m.is_file() {
            format!("file {:?}", String::from_utf8_lossy(&fs::read(p).unwrap()))
        } else {
            "dir".to_string()
        };
        out.insert(
            rel,
            format!("{what} mode {:o} uid {}", m.mode() & 0o7777, m.uid()),
        );
        if m.is_dir() {
            for e in fs::read_dir(p).unwrap() {
                walk(root, &e.unwrap().path(), out);
            }
        }
    }
    walk(p, p, &mut out);
    out
}

/// What differs between two snapshots (at most 20 entries), or nothing.
fn diff(a: &BTreeMap<PathBuf, String>, b: &BTreeMap<PathBuf, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            Some(w) if w == v => {}
            Some(w) => out.push(format!("{}: {v} -> {w}", k.display())),
            None => out.push(format!("{}: {v} -> gone", k.display())),
        }
    }
    for (k, w) in b {
        if !a.contains_key(k) {
            out.push(format!("{}: new {w}", k.display()));
        }
    }
    out.truncate(20);
    out
}

/// The shared directory without what the test harness writes there (the
/// outputs of `cairn dump`, `cairn-dump-N.*`).
fn shared_snapshot(p: &Path) -> BTreeMap<PathBuf, String> {
    let mut s = snapshot(p);
    s.retain(|k, _| !k.to_string_lossy().starts_with("cairn-dump-"));
    s
}

fn pid_max() -> u32 {
    fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768)
        .min(1 << 16)
}

/// The attacker plants a link to the victim at every staging name root's
/// dump of `shared/ck` could choose (`.ck.cairn-tmp-PID` for every pid),
/// then root dumps there: the dump works, the victim and the links are
/// untouched, nothing else appears, and the checkpoint restores.
fn planted_staging_links(mode: u32) {
    if skip() {
        return;
    }
    let mut w = Workload::start("mem_heap", &[]);
    let t = w.dir.clone();
    let v = victim(&t);
    let sh = shared(&t, "shared", mode);
    let n = pid_max();
    for pid in 1..=n {
        let l = sh.join(format!(".ck.cairn-tmp-{pid}"));
        std::os::unix::fs::symlink(&v, &l).unwrap();
        give(&l);
    }
    let before_v = snapshot(&v);
    let before_sh = shared_snapshot(&sh);
    let ck = sh.join("ck");
    let out = dump(w.pid, &ck, &["-v"]);
    assert!(
        out.status.success(),
        "root's dump into {} with planted links failed: {}",
        ck.display(),
        describe(&out)
    );
    w.expect_killed_by_dump();
    assert_eq!(
        diff(&before_v, &snapshot(&v)),
        Vec::<String>::new(),
        "the victim changed"
    );
    let mut after_sh = shared_snapshot(&sh);
    after_sh.retain(|p, _| !p.starts_with("ck"));
    assert_eq!(
        diff(&before_sh, &after_sh),
        Vec::<String>::new(),
        "the shared directory changed beside ck"
    );
    let m = fs::symlink_metadata(&ck).unwrap();
    assert!(m.is_dir() && m.uid() == 0 && m.mode() & 0o777 == 0o700);
    restore_wait(&ck, &[], w.pid, &w.log);
}

#[test]
fn planted_staging_links_world_writable() {
    planted_staging_links(0o777);
}

#[test]
fn planted_staging_links_sticky() {
    planted_staging_links(0o1777);
}

/// Compiles the swapper: exchanges two names (renameat2 RENAME_EXCHANGE)
/// as fast as it can for at most `secs` seconds.
fn swapper(t: &Path) -> PathBuf {
    let src = t.join("swap.c");
    fs::write(
        &src,
        r#"#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
int main(int argc, char **argv) {
    if (argc != 4) return 2;
    time_t end = time(NULL) + atoi(argv[3]);
    while (time(NULL) < end)
        for (int i = 0; i < 1000; i++)
            renameat2(AT_FDCWD, argv[1], AT_FDCWD, argv[2], RENAME_EXCHANGE);
    return 0;
}
"#,
    )
    .unwrap();
    let bin = t.join("swap");
    let out = Command::new("cc")
        .arg("-O1")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// Runs `cmd args` as the attacker.
fn as_attacker(cmd: &Path, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Child {
    Command::new(setpriv().unwrap())
        .arg(format!("--reuid={ATTACKER}"))
        .arg(format!("--regid={ATTACKER}"))
        .arg("--clear-groups")
        .arg("--")
        .arg(cmd)
        .args(args.iter().map(|a| a.as_ref()))
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn setpriv")
}

/// A minimal image directory (inventory, pstree) dumped `age` ago.
fn image_dir(p: &Path, age: Duration) {
    use cairn::image::proto::{Inventory, Pstree};
    use cairn::image::{names, ImageDir, ImageType, FORMAT_VERSION};
    let d = ImageDir::create(p).unwrap();
    let mut inv = Inventory::new();
    inv.format_version = FORMAT_VERSION;
    inv.root_pid = 4242;
    inv.dump_time_unix_ms = (SystemTime::now() - age)
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    d.write(ImageType::Inventory, names::INVENTORY, &inv)
        .unwrap();
    d.write(ImageType::Pstree, names::PSTREE, &Pstree::new())
        .unwrap();
}

const DAY: Duration = Duration::from_secs(86_400);

/// The attacker keeps exchanging their old checkpoint `ck/mine` with a
/// link `ck/.swap` to root's old checkpoint elsewhere while root runs
/// `cairn prune --older-than 5d ck`, ten times: root's checkpoint outside
/// `ck` is never touched (prune works through the descriptors it opened,
/// never re-resolving a path).
#[test]
fn prune_racing_a_symlink_swap() {
    if skip() {
        return;
    }
    let t = fresh_dir("hostile-prune");
    let bin = swapper(&t);
    let private = t.join("private");
    fs::create_dir(&private).unwrap();
    let root_ck = private.join("old");
    image_dir(&root_ck, 6 * DAY);
    let before = snapshot(&private);
    let ck = shared(&t, "ck", 0o777);
    let (mine, swap) = (ck.join("mine"), ck.join(".swap"));
    for round in 0..10 {
        let _ = fs::remove_dir_all(&mine);
        let _ = fs::remove_dir_all(&swap);
        let _ = fs::remove_file(&swap);
        let _ = fs::remove_file(&mine);
        image_dir(&mine, 6 * DAY);
        give_tree(&mine);
        std::os::unix::fs::symlink(&root_ck, &swap).unwrap();
        give(&swap);
        let mut sw = as_attacker(&bin, &[&mine, &swap, &"20"]);
        std::thread::sleep(Duration::from_millis(50));
        let out = cairn(
            &[&"prune", &"--older-than", &"5d", &ck],
            &t.join(format!("prune-{round}")),
        );
        let _ = sw.kill();
        let _ = sw.wait();
        assert_eq!(
            diff(&before, &snapshot(&private)),
            Vec::<String>::new(),
            "round {round}: root's checkpoint outside the pruned directory changed: {}",
            describe(&out)
        );
    }
    // What is left in ck is the attacker's (or nothing).
    for e in fs::read_dir(&ck).unwrap() {
        let e = e.unwrap();
        let n = e.file_name().to_string_lossy().into_owned();
        assert!(n == "mine" || n == ".swap", "left behind: {n}");
    }
    let _ = fs::remove_dir_all(&t);
}

/// Links at the last component of -D, --pidfile and -o are refused (or,
/// for the pid file, replaced), never followed.
#[test]
fn final_links_of_user_paths_are_not_followed() {
    if skip() {
        return;
    }
    let mut w = Workload::start("mem_heap", &[]);
    let t = w.dir.clone();
    let v = victim(&t);
    let before = snapshot(&v);
    let sh = shared(&t, "shared", 0o777);

    // -D: a link to the victim directory.
    let d = sh.join("ck");
    std::os::unix::fs::symlink(&v, &d).unwrap();
    give(&d);
    let out = dump(w.pid, &d, &[]);
    assert!(
        !out.status.success(),
        "dump through a link: {}",
        describe(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains(&d.display().to_string()) && err.contains("is a symbolic link"),
        "{err}"
    );
    assert!(w.original_alive(), "a refused dump hurt the target");
    // --prev-images-dir: a link to a directory.
    let prev = sh.join("prev");
    std::os::unix::fs::symlink(&v, &prev).unwrap();
    give(&prev);
    let out = dump(
        w.pid,
        &t.join("img2"),
        &["--prev-images-dir", prev.to_str().unwrap()],
    );
    assert!(
        !out.status.success(),
        "dump on a linked parent: {}",
        describe(&out)
    );
    assert!(
        stderr(&out).contains("is a symbolic link"),
        "{}",
        describe(&out)
    );
    assert!(w.original_alive(), "a refused dump hurt the target");
    assert!(!t.join("img2").exists());
    assert_eq!(
        diff(&before, &snapshot(&v)),
        Vec::<String>::new(),
        "-D wrote through a link"
    );

    // -o: a link to a file of root's; the error names the path.
    let log = sh.join("log");
    std::os::unix::fs::symlink(v.join("precious.txt"), &log).unwrap();
    give(&log);
    let out = cairn(
        &[&"-v", &"-o", &log, &"show", &t.join("nothing")],
        &t.join("o1"),
    );
    assert_eq!(exit_code(&out.status), 2, "{}", describe(&out));
    assert!(
        stderr(&out).contains(&log.display().to_string()) && stderr(&out).contains("symbolic link"),
        "{}",
        describe(&out)
    );
    // A log file of the attacker's is not appended to either.
    let log2 = sh.join("log2");
    fs::write(&log2, "attacker\n").unwrap();
    give(&log2);
    let out = cairn(
        &[&"-v", &"-o", &log2, &"show", &t.join("nothing")],
        &t.join("o2"),
    );
    assert_eq!(exit_code(&out.status), 2, "{}", describe(&out));
    assert_eq!(fs::read_to_string(&log2).unwrap(), "attacker\n");
    // A missing directory is named.
    let out = cairn(
        &[
            &"-o",
            &"/nonexistent-cairn-dir/log",
            &"show",
            &t.join("nothing"),
        ],
        &t.join("o3"),
    );
    assert!(
        stderr(&out).contains("/nonexistent-cairn-dir"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        diff(&before, &snapshot(&v)),
        Vec::<String>::new(),
        "-o wrote through a link"
    );

    // --pidfile: links at the final name and at the old temporary name.
    w.dump_ok(&[]);
    w.expect_killed_by_dump();
    let pidfile = sh.join("restored.pid");
    for p in [pidfile.clone(), pidfile.with_extension("cairn-tmp")] {
        std::os::unix::fs::symlink(v.join("precious.txt"), &p).unwrap();
        give(&p);
    }
    let out = cairn(
        &[&"restore", &"-d", &"-D", &w.images, &"--pidfile", &pidfile],
        &t.join("restore"),
    );
    let pidfd = pidfd_open(w.pid);
    assert_ok(&out, "restore -d --pidfile");
    let pidfd = pidfd.expect("the restored process runs");
    let m = fs::symlink_metadata(&pidfile).unwrap();
    assert!(m.is_file(), "the pid file is not a regular file");
    assert_eq!(read_pidfile(&pidfile), Some(w.pid));
    assert_eq!(
        diff(&before, &snapshot(&v)),
        Vec::<String>::new(),
        "--pidfile wrote through a link"
    );
    pidfd_signal(&pidfd, libc::SIGTERM).unwrap();
    assert!(
        pidfd_wait_exit(&pidfd, EXIT_TIMEOUT),
        "the restored workload did not exit"
    );
    assert_log_pass(&w.log, "after restore");
    // Nothing left in the shared directory but what was there and the pid file.
    let mut names: Vec<String> = fs::read_dir(&sh)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("cairn-dump-"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "ck",
            "log",
            "log2",
            "prev",
            "restored.cairn-tmp",
            "restored.pid"
        ],
        "left behind"
    );
}

/// The log file is created 0600 whatever the umask (was 0666 under umask
/// 000).
#[test]
fn log_file_mode_under_umask_000() {
    if skip_unless_root() {
        return;
    }
    let t = fresh_dir("hostile-umask");
    let log = t.join("cairn.log");
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg("umask 000; exec \"$0\" -v -o \"$1\" show \"$2\"")
        .arg(cairn_bin())
        .arg(&log)
        .arg(t.join("nothing"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let m = fs::metadata(&log).unwrap();
    assert_eq!(m.mode() & 0o777, 0o600, "log file mode");
    let _ = fs::remove_dir_all(&t);
}

/// A checkpoint another user could have forged (an image directory
/// writable by others; an image file owned by the attacker) is refused by
/// restore, show and show --verify, naming the path, owner and mode;
/// --allow-foreign-images reads it anyway.
#[test]
fn foreign_images_are_refused() {
    if skip() {
        return;
    }
    let mut w = Workload::start("mem_heap", &[]);
    w.dump_ok(&[]);
    w.expect_killed_by_dump();
    let img = w.images.clone();
    let core = img.join(format!("core-{}.img", w.pid));
    let img_s = img.to_str().unwrap().to_string();
    let check_refused = |what: &str, path: &Path| {
        let out = restore_expect_fail(&img, &[], w.pid);
        let err = stderr(&out);
        assert!(
            err.contains("refused")
                && err.contains(&path.display().to_string())
                && err.contains("--allow-foreign-images"),
            "{what}: {}",
            describe(&out)
        );
        for args in [vec!["show", "--verify", &img_s], vec!["show", &img_s]] {
            let mut a: Vec<&dyn AsRef<std::ffi::OsStr>> = Vec::new();
            for x in &args {
                a.push(x);
            }
            let out = cairn(&a, &w.dir.join("show"));
            assert!(
                !out.status.success(),
                "{what}: {args:?}: {}",
                describe(&out)
            );
            assert!(stderr(&out).contains("refused"), "{}", describe(&out));
        }
    };
    // Writable by anyone.
    fs::set_permissions(&img, fs::Permissions::from_mode(0o777)).unwrap();
    check_refused("a world-writable image directory", &img);
    // Writable by the group.
    fs::set_permissions(&img, fs::Permissions::from_mode(0o770)).unwrap();
    check_refused("a group-writable image directory", &img);
    fs::set_permissions(&img, fs::Permissions::from_mode(0o700)).unwrap();
    // One file of the attacker's.
    give(&core);
    check_refused("an image file of another user", &core);
    let err = stderr(&restore_expect_fail(&img, &[], w.pid));
    assert!(err.contains(&format!("uid {ATTACKER}")), "{err}");
    // The override.
    let out = cairn(
        &[&"show", &"--verify", &"--allow-foreign-images", &img],
        &w.dir.join("verify-ok"),
    );
    assert_ok(&out, "show --verify --allow-foreign-images");
    assert!(stdout(&out).contains("verified"));
    restore_wait(&img, &["--allow-foreign-images"], w.pid, &w.log);
}

/// Keepers started by a pre-dump, from cairn's -v output.
fn keepers(out: &Output) -> Vec<i32> {
    stderr(out)
        .lines()
        .filter_map(|l| l.split("keeper pid ").nth(1))
        .filter_map(|p| p.trim().parse().ok())
        .collect()
}

fn is_keeper(pid: i32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.windows(14).any(|w| w == b"__cairn-keeper"))
        .unwrap_or(false)
}

/// ch/1 (a pre-dump) is old, ch/2 (the dump on top of it) young: prune
/// keeps ch/1 and says why, ch/2 still restores; once both are old, the
/// chain goes as a whole.
#[test]
fn prune_keeps_the_parent_of_a_kept_layer() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("mem_heap", &[]);
    let ch = w.dir.join("ch");
    fs::create_dir(&ch).unwrap();
    let pid = w.pid.to_string();
    let one = ch.join("1");
    let two = ch.join("2");
    let out = cairn(
        &[
            &"-v",
            &"pre-dump",
            &"-t",
            &pid,
            &"-D",
            &one,
            &"--dirty-tracking=hash",
        ],
        &w.dir.join("pre"),
    );
    let mut started = keepers(&out);
    assert_ok(&out, "pre-dump");
    std::thread::sleep(Duration::from_secs(6));
    let out = cairn(
        &[
            &"-v",
            &"dump",
            &"-t",
            &pid,
            &"-D",
            &two,
            &"--prev-images-dir",
            &"../1",
            &"--dirty-tracking=hash",
        ],
        &w.dir.join("dump"),
    );
    started.extend(keepers(&out));
    let kill_keepers = |ks: &[i32]| {
        for &k in ks {
            if is_keeper(k) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(k),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    };
    if !out.status.success() {
        kill_keepers(&started);
        panic!("dump on top of the pre-dump: {}", describe(&out));
    }
    w.expect_killed_by_dump();
    kill_keepers(&started);
    let t0 = Instant::now();
    let out = cairn(
        &[&"prune", &"--older-than", &"4s", &ch],
        &w.dir.join("prune1"),
    );
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "too slow to test ages"
    );
    assert_ok(&out, "prune --older-than 4s");
    assert!(
        one.join("inventory.img").is_file(),
        "prune removed {}, the parent of the kept {}: {}",
        one.display(),
        two.display(),
        describe(&out)
    );
    assert!(
        stdout(&out).contains(&format!("kept {}", one.display())),
        "{}",
        describe(&out)
    );
    // A parent layer another user could have written is refused too.
    fs::set_permissions(&one, fs::Permissions::from_mode(0o777)).unwrap();
    let out = restore_expect_fail(&two, &[], w.pid);
    assert!(
        stderr(&out).contains("refused") && stderr(&out).contains("parent images dir"),
        "{}",
        describe(&out)
    );
    fs::set_permissions(&one, fs::Permissions::from_mode(0o700)).unwrap();
    restore_wait(&two, &[], w.pid, &w.log);
    // Both old now: the whole chain goes.
    std::thread::sleep(Duration::from_secs(1));
    let out = cairn(
        &[&"prune", &"--older-than", &"0s", &ch],
        &w.dir.join("prune2"),
    );
    assert_ok(&out, "prune --older-than 0s");
    assert!(!one.exists() && !two.exists(), "{}", describe(&out));
}

/// `cairn show` and `show --verify` of a FIFO named like an image return
/// an error at once instead of blocking.
#[test]
fn show_on_a_fifo_returns_promptly() {
    let t = fresh_dir("hostile-fifo");
    let fifo = t.join("pages.img");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    for (i, args) in [
        vec![os("show"), os(&fifo)],
        vec![os("show"), os("--verify"), os(&fifo)],
    ]
    .into_iter()
    .enumerate()
    {
        let t0 = Instant::now();
        let out = run_cairn(&args, &t.join(format!("out-{i}")), Duration::from_secs(20));
        assert!(t0.elapsed() < Duration::from_secs(10));
        assert!(!out.status.success(), "{args:?}: {}", describe(&out));
        assert!(
            stderr(&out).contains("FIFO"),
            "{args:?}: {}",
            describe(&out)
        );
    }
    let _ = fs::remove_dir_all(&t);
}
