//! Integrity of image directories: every file is checksummed and listed by
//! the inventory, a directory is complete or visibly not, images are
//! private (0600 files, 0700 directories), and `cairn show --verify` and
//! `cairn restore` refuse each kind of damage with exit code 5, naming the
//! file and what is wrong, leaving no process behind.

// cairn::image::mutate exists only with cairn's `fuzz` feature, which every test
// build has through the dev-dependency in Cargo.toml: without it, fail
// here rather than lose these tests.
#[cfg(not(feature = "fuzz"))]
compile_error!(
    "tests/integrity.rs needs cairn's `fuzz` feature: see [dev-dependencies] in Cargo.toml"
);

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

/// What one run of cairn on a mutated checkpoint must look like: a
/// documented exit code (5 for a damaged or forged image; a restore may
/// also fail with 4 when the kernel refuses what a forged but valid-looking
/// image asks for, or succeed when the change left a valid image), one
/// clear error line, no panic, no signal.
fn check_outcome(
    o: &std::process::Output,
    m: &cairn::image::mutate::Mutation,
    restore: bool,
    ctx: &str,
) -> i32 {
    let e = stderr(o);
    let code = exit_code(&o.status);
    assert!(
        o.status.code().is_some(),
        "{ctx}: cairn was killed by a signal ({:?}) on {}\n{e}",
        o.status,
        m.what
    );
    assert!(
        !e.contains("panicked") && code != 101,
        "{ctx}: cairn panicked on {}\n{e}",
        m.what
    );
    if code == 0 {
        assert!(
            m.hostile,
            "{ctx}: damage the checksums must catch was accepted: {}",
            m.what
        );
        return 0;
    }
    let allowed: &[i32] = match (m.hostile, restore) {
        (false, _) => &[5],
        (true, false) => &[5],
        (true, true) => &[4, 5],
    };
    assert!(
        allowed.contains(&code),
        "{ctx}: exit code {code} (expected one of {allowed:?}) on {}\n{e}",
        m.what
    );
    let last = e.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    assert!(
        last.starts_with("cairn: ") && last.len() < 2000,
        "{ctx}: no clear error line on {}: {e}",
        m.what
    );
    if code == 5 && !restore {
        assert_eq!(e.lines().count(), 1, "{ctx}: one line on {}: {e}", m.what);
    }
    code
}

/// A process with this pid that is this workload (by executable or name).
fn is_workload(pid: i32, bin: &Path, name: &str) -> bool {
    let exe = fs::read_link(format!("/proc/{pid}/exe")).ok();
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let want: String = name.chars().take(15).collect();
    exe.as_deref() == Some(bin) || comm.trim_end() == want
}

/// Whether `pid` is gone or a zombie (dead, waiting for init) within
/// `timeout`.
fn wait_dead(pid: i32, timeout: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let zombie = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(") ")
                    .map(|(_, r)| r.starts_with('Z') || r.starts_with('X'))
            });
        if !pid_exists(pid) || zombie == Some(true) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// How one `cairn restore` (not detached) of `restore_or_kill` went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restored {
    /// cairn never wrote its pid file: its exit status is the restore's.
    No,
    /// cairn restored this pid and the test found it alive, stopped it
    /// (so it could not end by itself meanwhile) and killed it with
    /// SIGKILL: cairn, which waits for it, must exit 128 + SIGKILL.
    KilledByTest(i32),
    /// cairn restored this pid, which ended by itself before the test
    /// could stop it (a forged image may restore into a process that
    /// crashes): cairn's exit status is that end, passed on.
    EndedByItself(i32),
    /// cairn exited and left its restored pid running (no longer its
    /// child); the test killed it. Always wrong.
    LeftRunning(i32),
}

/// What `restore_or_kill` saw: cairn's output with its real exit status,
/// and whether (and how) a tree was restored.
struct RestoreRun {
    out: std::process::Output,
    restored: Restored,
}

/// The restored root `pid`, a child of cairn (`cairn_pid`): stopped with
/// SIGSTOP and then, with its tree and any process of the workload still
/// holding one of the dumped `pids`, killed. Returns whether it was
/// alive and stopped (`KilledByTest`) or had ended (`EndedByItself`).
fn stop_and_kill(
    pid: i32,
    cairn_pid: i32,
    bin: &Path,
    name: &str,
    pids: &[i32],
    ctx: &str,
) -> Restored {
    let tracker = PidTracker::new();
    for p in pids {
        if *p != pid && is_workload(*p, bin, name) {
            tracker.track_tree(*p);
        }
    }
    // The pidfd is taken before the parent is checked: the pid cannot be
    // recycled under it.
    let fd = pidfd_open(pid);
    let ours = proc_info(pid).is_some_and(|i| i.ppid == cairn_pid);
    let verdict = match fd {
        Some(fd) if ours => {
            let _ = pidfd_signal(&fd, libc::SIGSTOP);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                if pidfd_exited(&fd) {
                    break Restored::EndedByItself(pid);
                }
                if proc_info(pid).is_some_and(|i| i.state == 'T') {
                    tracker.track_tree(pid);
                    break Restored::KilledByTest(pid);
                }
                if std::time::Instant::now() >= deadline {
                    tracker.track_tree(pid);
                    tracker.kill_all();
                    panic!(
                        "{ctx}: the restored pid {pid} neither stopped on SIGSTOP nor ended \
                         within 10 s: {:?}",
                        proc_info(pid)
                    );
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        // Still the workload, but no longer cairn's child: cairn is gone
        // and left it behind.
        Some(fd) if !pidfd_exited(&fd) && is_workload(pid, bin, name) => {
            tracker.track_tree(pid);
            Restored::LeftRunning(pid)
        }
        // Gone already (or reaped, the pid reused).
        _ => Restored::EndedByItself(pid),
    };
    tracker.kill_all();
    verdict
}

/// `cairn restore ARGS` (not detached). If it restores the tree (its
/// pidfile appears), the restored root is stopped and the tree killed,
/// which ends cairn too (it waits for the root and exits with its end).
/// Returns cairn's output with its real exit status and what was
/// restored; `judge_restore` says whether that is right.
fn restore_or_kill(
    args: &[&str],
    out_base: &Path,
    pidfile: &Path,
    bin: &Path,
    name: &str,
    pids: &[i32],
    ctx: &str,
) -> RestoreRun {
    let so = out_base.with_extension("stdout");
    let se = out_base.with_extension("stderr");
    let mut child = std::process::Command::new(cairn_bin())
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(fs::File::create(&so).unwrap())
        .stderr(fs::File::create(&se).unwrap())
        .spawn()
        .expect("spawn cairn");
    let cairn_pid = child.id() as i32;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut restored = Restored::No;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait cairn") {
            break st;
        }
        if restored == Restored::No {
            if let Some(pid) = read_pidfile(pidfile) {
                restored = stop_and_kill(pid, cairn_pid, bin, name, pids, ctx);
            }
        }
        if std::time::Instant::now() >= deadline {
            kill_tree(&mut child);
            panic!(
                "{ctx}: cairn restore did not finish within 60 s:\n{}",
                tail(&se, 4000)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    if restored == Restored::No {
        if let Some(pid) = read_pidfile(pidfile) {
            // cairn wrote its pid file and exited before the test saw it:
            // it had waited for the restored root, which ended by itself.
            // Kill what may be left of the tree.
            restored = stop_and_kill(pid, cairn_pid, bin, name, pids, ctx);
        }
    }
    RestoreRun {
        out: std::process::Output {
            status,
            stdout: fs::read(&so).unwrap_or_default(),
            stderr: fs::read(&se).unwrap_or_default(),
        },
        restored,
    }
}

/// The verdict on one `restore_or_kill` of mutation `m`: a refused
/// restore is judged by `check_outcome` on cairn's real exit status; a
/// restored tree must come from a forged image that is still valid, and
/// cairn must pass on its root's end (128 + SIGKILL when the test killed
/// it). Returns the code for the summary (0: restored).
fn judge_restore(r: &RestoreRun, m: &cairn::image::mutate::Mutation, ctx: &str) -> i32 {
    let e = stderr(&r.out);
    let code = exit_code(&r.out.status);
    match r.restored {
        Restored::No => {
            assert!(
                code != 0,
                "{ctx}: cairn restore exited 0 without writing its pid file on {}\n{e}",
                m.what
            );
            check_outcome(&r.out, m, true, ctx)
        }
        Restored::LeftRunning(pid) => panic!(
            "{ctx}: cairn exited {code} and left its restored pid {pid} running on {}\n{e}",
            m.what
        ),
        Restored::KilledByTest(pid) | Restored::EndedByItself(pid) => {
            assert!(
                !e.contains("panicked") && r.out.status.code().is_some(),
                "{ctx}: cairn restored pid {pid} and then panicked or was killed ({:?}) on {}\n{e}",
                r.out.status,
                m.what
            );
            if let Restored::KilledByTest(_) = r.restored {
                assert_eq!(
                    code,
                    128 + libc::SIGKILL,
                    "{ctx}: cairn restored pid {pid}, which the test killed with SIGKILL, but \
                     cairn exited {code}, not passing on its end, on {}\n{e}",
                    m.what
                );
            } else {
                println!(
                    "{ctx}: restored pid {pid} ended by itself; cairn passed on exit {code}: {}",
                    m.what
                );
            }
            assert!(
                m.hostile,
                "{ctx}: damage the checksums must catch was restored: {}",
                m.what
            );
            0
        }
    }
}

/// Real checkpoints of four workloads (memory, files, a tree with pipes,
/// unix sockets), mutated 1,000 times in all (200 in a guest of `cargo
/// xtask vm-test`; `CAIRN_MUTATIONS` sets it): bit flips, truncation,
/// appended bytes, files of another dump (all caught by the checksums),
/// and forged images whose checksums and inventory were recomputed: wrong
/// magic, wrong version, huge lengths, files swapped, bytes of a message
/// changed, a field set to a boundary value. Every third goes through
/// `cairn restore`, the others through `cairn show --verify`. Each must
/// end with a documented exit code and a clear error (or, for a forged
/// image that is still valid, a restore), never a panic, a signal or a
/// hang, and leave no process of the workload behind. The intact images
/// restore afterwards and pass their own checks.
#[test]
fn mutated_images_are_refused_cleanly() {
    use cairn::image::mutate::{mutate, ImageSet, Rng};
    if skip_unless_root() {
        return;
    }
    // In a guest of `cargo xtask vm-test` (emulated, a share of CI's
    // budget): 200, each kind of mutation still many times over.
    let total: usize = std::env::var("CAIRN_MUTATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if in_vm_guest() { 200 } else { 1000 });
    const SEED: u64 = 0x1a7e_9121;
    let names = ["mem_sparse", "files_regular", "tree_pipe", "unix_pair"];
    let mut trees = Vec::new();
    for name in names {
        let mut t = TreeTest::start(name, &[]);
        t.dump_ok(&[]);
        t.expect_tree_killed_by_dump();
        trees.push(t);
    }
    wait_init_reaped_orphans(std::time::Duration::from_secs(15));
    let snaps: Vec<_> = trees.iter().map(|t| t.w.log_snapshot()).collect();
    let bases: Vec<ImageSet> = trees
        .iter()
        .map(|t| ImageSet::load(&t.w.images).expect("load images"))
        .collect();
    let work: Vec<PathBuf> = trees.iter().map(|t| t.w.dir.join("mutated")).collect();
    for (b, d) in bases.iter().zip(&work) {
        b.write(d).expect("write copy");
    }
    let pids: Vec<Vec<i32>> = trees
        .iter()
        .map(|t| t.before.iter().map(|p| p.pid).collect())
        .collect();
    let bins: Vec<PathBuf> = names
        .iter()
        .map(|n| fs::canonicalize(workload_bin(n)).unwrap())
        .collect();
    // The way restores are judged below, on the intact copies: each
    // restores, its root is stopped and killed, and cairn passes that on.
    for k in 0..names.len() {
        let ctx = format!("the intact images of {}", names[k]);
        let pidfile = trees[k].w.dir.join("intact.pid");
        let d = work[k].to_str().unwrap();
        let args = ["restore", "-D", d, "--pidfile", pidfile.to_str().unwrap()];
        let out_base = trees[k].w.dir.join("intact-run");
        let r = restore_or_kill(
            &args, &out_base, &pidfile, &bins[k], names[k], &pids[k], &ctx,
        );
        assert_eq!(
            (r.restored, exit_code(&r.out.status)),
            (Restored::KilledByTest(pids[k][0]), 128 + libc::SIGKILL),
            "{ctx}: expected a restore of pid {}, killed by the test, passed on by cairn\n{}",
            pids[k][0],
            describe(&r.out)
        );
        for &p in &pids[k] {
            assert!(
                wait_dead(p, std::time::Duration::from_secs(10)),
                "{ctx}: pid {p} left behind"
            );
        }
    }
    let mut rng = Rng::new(SEED);
    let mut codes: std::collections::BTreeMap<(bool, i32), usize> = Default::default();
    let t0 = std::time::Instant::now();
    for i in 0..total {
        let k = i % names.len();
        let (base, dir) = (&bases[k], &work[k]);
        let mut set = base.clone();
        let m = mutate(&mut set, Some(&bases[(k + 1) % bases.len()]), &mut rng);
        let changed: Vec<&(String, Vec<u8>)> = set
            .files
            .iter()
            .filter(|(n, b)| base.get(n) != Some(b.as_slice()))
            .collect();
        for (n, b) in &changed {
            fs::write(dir.join(n), b).unwrap();
        }
        let restore = i % 3 == 0;
        let ctx = format!("mutation {i} (seed {SEED:#x}) of {}", names[k]);
        let out_base = trees[k].w.dir.join("mutated-run");
        let pidfile = trees[k].w.dir.join("mutated.pid");
        let _ = fs::remove_file(&pidfile);
        let d = dir.to_str().unwrap();
        let t1 = std::time::Instant::now();
        let code = if restore {
            let args = ["restore", "-D", d, "--pidfile", pidfile.to_str().unwrap()];
            let r = restore_or_kill(
                &args, &out_base, &pidfile, &bins[k], names[k], &pids[k], &ctx,
            );
            judge_restore(&r, &m, &ctx)
        } else {
            let args: Vec<std::ffi::OsString> =
                ["show", "--verify", d].iter().map(|a| a.into()).collect();
            let o = run_cairn(&args, &out_base, std::time::Duration::from_secs(60));
            check_outcome(&o, &m, restore, &ctx)
        };
        let took = t1.elapsed();
        *codes.entry((restore, code)).or_default() += 1;
        // Nothing of the workload is left (a killed restore's vessels are
        // reaped by the time cairn exits; a restored tree was just killed).
        for &p in &pids[k] {
            let gone = wait_dead(p, std::time::Duration::from_secs(10))
                || !is_workload(p, &bins[k], names[k]);
            assert!(
                gone,
                "{ctx}: pid {p} left behind after {} (exit {code})",
                m.what
            );
        }
        for (n, _) in &changed {
            match base.get(n) {
                Some(b) => fs::write(dir.join(n), b).unwrap(),
                None => fs::remove_file(dir.join(n)).unwrap(),
            }
        }
        if t1.elapsed().as_millis() > 500 {
            println!(
                "{ctx}: slow: cairn {:?}, in all {:?}, exit {code}: {}",
                took,
                t1.elapsed(),
                m.what
            );
        }
    }
    println!(
        "{total} mutations in {:.1} s; (restore?, exit code) -> count: {codes:?}",
        t0.elapsed().as_secs_f64()
    );
    let restores: usize = codes.iter().filter(|((r, _), _)| *r).map(|(_, n)| n).sum();
    assert!(restores >= total * 3 / 10, "only {restores} restores");
    // The intact images still restore, and the workloads pass their checks.
    for (t, snap) in trees.iter_mut().zip(&snaps) {
        t.w.log_reset(snap);
        t.restore_start(&[], false);
        t.finish();
    }
}
