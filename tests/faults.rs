//! Faults in the middle: the dumper killed at random moments, the
//! restorer killed midway, the disk full during a dump. Each time the
//! target must come out as if nothing had happened (alive, not traced,
//! not stopped, its own check passes) or, for a restore, nothing
//! half-restored may remain.
mod common;

use std::ffi::OsString;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A small xorshift generator: the seed is printed, so a failing run can
/// be repeated with `CAIRN_FAULT_SEED`.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("CAIRN_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
                    | 1
            });
        eprintln!("random moments from CAIRN_FAULT_SEED={seed}");
        Rng(seed)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn spawn_cairn(args: &[&str], base: &Path) -> Child {
    Command::new(cairn_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(base.with_extension("stdout")).unwrap())
        .stderr(File::create(base.with_extension("stderr")).unwrap())
        .spawn()
        .expect("spawn cairn")
}

/// Kills `child` (our child, so its pid is still ours) and reaps it.
fn sigkill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A thread's "State:" letter and "TracerPid:" from /proc.
fn thread_state(pid: i32, tid: &str) -> Option<(char, i32, String)> {
    let s = fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
    let field = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let state = field("State:").chars().next().unwrap_or('?');
    let tracer = field("TracerPid:").parse().unwrap_or(-1);
    Some((state, tracer, field("SigBlk:")))
}

/// Waits until every thread of `pid` is untraced and not stopped, and none
/// has every signal blocked; panics with what it saw otherwise.
fn expect_released(pid: i32, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut bad = Vec::new();
        let tids: Vec<String> = fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if tids.is_empty() {
            panic!("{what}: pid {pid} is gone. Its log:\n{}", tail(log, 4000));
        }
        for t in &tids {
            if let Some((state, tracer, blk)) = thread_state(pid, t) {
                if tracer != 0
                    || state == 't'
                    || state == 'T'
                    || state == 'Z'
                    || u64::from_str_radix(&blk, 16).is_ok_and(|m| m.count_ones() >= 60)
                {
                    bad.push(format!(
                        "tid {t}: state {state}, tracer {tracer}, SigBlk {blk}"
                    ));
                }
            }
        }
        if bad.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("{what}: not released after 15 s: {}", bad.join("; "));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The guardian's pid from a dump's -v log, if it had started.
fn guardian_pid(stderr: &Path) -> Option<i32> {
    let s = fs::read_to_string(stderr).ok()?;
    // The last one: an armed background snapshot starts one of its own first.
    let rest = s.rsplit_once("guardian started (pid ")?.1;
    rest.split(')').next()?.parse().ok()
}

fn staging_leftovers(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().contains("cairn-tmp"))
                .collect()
        })
        .unwrap_or_default()
}

/// `cairn dump` SIGKILLed at ten moments spread over a dump (measured
/// first): the target is released each time (not traced, not stopped, no
/// signal left blocked), the guardian exits, DIR is absent or a complete
/// checkpoint, and in the end the workload's own check passes: memory,
/// file offset, signal masks, and a thread whose registers were never
/// changed under it.
#[test]
fn dumper_killed_at_random_moments() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("fault_mem", &["--mib", "64"]);
    let pid = w.pid.to_string();
    // How long a whole dump takes here and now.
    let t = Instant::now();
    let full = w.dir.join("full");
    assert_ok(
        &dump(w.pid, &full, &["--leave-running"]),
        "a first, complete dump",
    );
    let took = t.elapsed();
    eprintln!("a whole dump takes {took:?}");
    let mut rng = Rng::new();
    let runs = 10;
    let mut summary = Vec::new();
    for i in 0..runs {
        // Run i is killed in the i-th tenth of the dump's duration (the
        // last one a little after its end, in case this dump is slower).
        let frac = (i as f64 + rng.unit()) / runs as f64;
        let delay = took.mul_f64(frac * 1.1);
        let dir = w.dir.join(format!("run{i}"));
        let base = w.dir.join(format!("run{i}-cairn"));
        let mut c = spawn_cairn(
            &[
                "dump",
                "-v",
                "-t",
                &pid,
                "-D",
                dir.to_str().unwrap(),
                "--leave-running",
            ],
            &base,
        );
        std::thread::sleep(delay);
        let finished = matches!(c.try_wait(), Ok(Some(_)));
        sigkill(&mut c);
        let stderr = base.with_extension("stderr");
        expect_released(w.pid, &format!("run {i} (killed after {delay:?})"), &w.log);
        if let Some(g) = guardian_pid(&stderr) {
            assert!(
                wait_pid_gone(g, Duration::from_secs(15)),
                "run {i}: the guardian {g} is still there"
            );
        }
        // DIR is never a partial checkpoint.
        if dir.exists() {
            let v = run_cairn(
                &["show".into(), "--verify".into(), dir.clone().into()],
                &w.dir.join(format!("run{i}-verify")),
                CAIRN_TIMEOUT,
            );
            assert_ok(
                &v,
                &format!("run {i}: show --verify of the DIR the dump left"),
            );
        }
        let log = fs::read_to_string(&stderr).unwrap_or_default();
        let guard_said = log
            .lines()
            .find(|l| l.starts_with("cairn guard:"))
            .unwrap_or("")
            .to_string();
        summary.push(format!(
            "run {i}: killed after {delay:?} ({}){}{}",
            if finished { "had finished" } else { "mid-dump" },
            if dir.exists() { ", DIR complete" } else { "" },
            if guard_said.is_empty() {
                String::new()
            } else {
                format!("; {guard_said}")
            }
        ));
    }
    eprintln!("{}", summary.join("\n"));
    assert!(w.original_alive(), "the workload died");
    // Leftover staging directories are hidden, never a checkpoint, and
    // removed by the next dump to the same place.
    for s in staging_leftovers(&w.dir) {
        assert!(
            s.file_name().unwrap().to_string_lossy().starts_with('.'),
            "{s:?}"
        );
    }
    let again = w.dir.join("run0");
    let _ = fs::remove_dir_all(&again);
    assert_ok(
        &dump(w.pid, &again, &["--leave-running"]),
        "a dump after the kills",
    );
    assert!(
        !staging_leftovers(&w.dir)
            .iter()
            .any(|p| p.to_string_lossy().contains(".run0.cairn-tmp")),
        "the next dump to run0 did not remove the old staging directory"
    );
    // cairn prune removes the other leftovers (whatever their age), and
    // keeps the fresh checkpoints.
    let before = staging_leftovers(&w.dir).len();
    let out = run_cairn(
        &["prune".into(), w.dir.clone().into()],
        &w.dir.join("prune"),
        CAIRN_TIMEOUT,
    );
    assert_ok(&out, "prune");
    let left = staging_leftovers(&w.dir);
    assert!(left.is_empty(), "prune left {left:?}: {}", describe(&out));
    eprintln!(
        "{before} staging directories left by the killed dumps; cairn prune:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        full.join("inventory.img").exists(),
        "prune removed a checkpoint"
    );
    w.terminate_original_expect_pass();
}

/// `cairn dump --leave-running` SIGKILLed inside one of the calls it
/// injects into the target (`CAIRN_PAUSE_AT=syscall-NR[-K]`: the K-th
/// call of syscall NR, at its syscall-entry stop): the thread then runs
/// the call and goes on from the `syscall` instruction with cairn's
/// registers. The parking loop (the vDSO's, else cairn's own page, mapped
/// and unmapped by calls that park in the vDSO's partial loop) must hold
/// it until the guardian puts its registers back: each time the target is
/// released and runs on, and in the end its own check passes (the calls
/// cairn says it runs unguarded, the own page's mmap and munmap, are
/// listed as skipped and interrupted instead). The calls:
/// the first two mmaps and munmaps of a dump (the parking page's and the
/// scratch area's, in the background snapshot's arming before the freeze
/// and in the collection while frozen), and last the userfaultfd the
/// background snapshot makes before the freeze (where it can). On
/// Debian's 6.12 kernel (no parking loop in its vDSO, background snapshot
/// armed) a dumper killed in the userfaultfd call crashed the target.
#[test]
fn dumper_killed_inside_injected_calls() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("fault_mem", &["--mib", "16"]);
    let pid = w.pid.to_string();
    let nr = |n: libc::c_long| n.to_string();
    let points = [
        (format!("syscall-{}", nr(libc::SYS_mmap)), "the first mmap"),
        (
            format!("syscall-{}-2", nr(libc::SYS_mmap)),
            "the second mmap",
        ),
        (
            format!("syscall-{}", nr(libc::SYS_munmap)),
            "the first munmap",
        ),
        (
            format!("syscall-{}-2", nr(libc::SYS_munmap)),
            "the second munmap",
        ),
        // The guardian closes the userfaultfd the call made in the
        // target (the fd tables are compared below).
        (
            format!("syscall-{}", nr(libc::SYS_userfaultfd)),
            "the userfaultfd of the background snapshot",
        ),
    ];
    let mut hit = 0;
    let fds_before = fd_table(w.pid);
    for (i, (point, what)) in points.iter().enumerate() {
        let dir = w.dir.join(format!("call{i}"));
        let base = w.dir.join(format!("call{i}-cairn"));
        let stderr = base.with_extension("stderr");
        let args = [
            "dump",
            "-v",
            "-t",
            &pid,
            "-D",
            dir.to_str().unwrap(),
            "--leave-running",
        ];
        let (mut c, paused) = spawn_maybe_paused(&cairn_bin(), &args, point, point, &base);
        if !paused {
            // E.g. no userfaultfd where the background snapshot cannot run.
            eprintln!("{what} ({point}): this dump makes no such call here");
            continue;
        }
        // The calls that map and unmap cairn's own parking page where the
        // vDSO has no loop (Debian's 5.10 and 6.1) are the ones left
        // unguarded: cairn says so as it pauses; those are listed as
        // skipped, and the dump is interrupted (it rolls back) instead.
        let err = fs::read_to_string(&stderr).unwrap_or_default();
        if err.contains(&format!("{point}: an unguarded call")) {
            let why = err
                .lines()
                .rfind(|l| l.contains("unguarded call:"))
                .unwrap_or("");
            note_skip(&format!("{what} ({point}) not killed: {}", why.trim()));
            let st = signal_child(&mut c, libc::SIGTERM);
            assert_eq!(st.code(), Some(128 + libc::SIGTERM), "{what}: {err}");
            expect_released(w.pid, &format!("{what}: interrupted"), &w.log);
            continue;
        }
        hit += 1;
        sigkill(&mut c);
        let what = format!("killed inside {what} ({point})");
        expect_released(w.pid, &what, &w.log);
        if let Some(g) = guardian_pid(&stderr) {
            assert!(
                wait_pid_gone(g, Duration::from_secs(15)),
                "{what}: the guardian {g} is still there"
            );
        }
        // Still released a moment later (a thread let go with cairn's
        // registers crashes the target a little after).
        std::thread::sleep(Duration::from_millis(300));
        expect_released(w.pid, &what, &w.log);
        assert!(w.original_alive(), "{what}: the workload died");
        let log = fs::read_to_string(&stderr).unwrap_or_default();
        assert_eq!(
            fd_table(w.pid),
            fds_before,
            "{what}: the target's descriptors changed; cairn's log:\n{log}"
        );
        eprintln!(
            "{what}: target released; {}",
            log.lines()
                .find(|l| l.starts_with("cairn guard:"))
                .unwrap_or("(the guardian said nothing)")
        );
    }
    // Every dump maps and unmaps its scratch area.
    assert!(hit >= 2, "only {hit} of the calls were reached");
    w.terminate_original_expect_pass();
}

/// The descriptors of `pid` and what /proc names each.
fn fd_table(pid: i32) -> std::collections::BTreeMap<i32, String> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let fd = e.file_name().to_str()?.parse().ok()?;
            Some((fd, fs::read_link(e.path()).ok()?.display().to_string()))
        })
        .collect()
}

/// A tmpfs of `mib` MiB, unmounted on drop.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(at: &Path, mib: u32) -> SmallFs {
        fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={mib}m,mode=0755"))
            .arg("cairn-test-small")
            .arg(at)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount a {mib} MiB tmpfs at {}", at.display());
        SmallFs(at.to_path_buf())
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A dump of 64 MiB onto an 8 MiB file system: exit code 3, an error that
/// names the path and ENOSPC, nothing left on the file system (new DIR and
/// existing DIR alike), the target running and its check passing.
#[test]
fn disk_full_during_dump() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("fault_mem", &["--mib", "64"]);
    let small = SmallFs::mount(&w.dir.join("small"), 8);
    let fresh = small.0.join("images");
    let given = small.0.join("given");
    fs::create_dir(&given).unwrap();
    for (i, (dir, what)) in [(&fresh, "a new DIR"), (&given, "an existing DIR")]
        .into_iter()
        .enumerate()
    {
        // cairn's outputs go beside the small file system, not on it.
        let out = run_cairn(
            &[
                "dump".into(),
                "-t".into(),
                w.pid.to_string().into(),
                "-D".into(),
                dir.into(),
            ],
            &w.dir.join(format!("dump-{i}")),
            CAIRN_TIMEOUT,
        );
        assert_eq!(exit_code(&out.status), 3, "{what}: {}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        eprintln!("{what}: {}", err.trim());
        assert!(
            err.contains(&dir.display().to_string()) && err.contains("No space left on device"),
            "{what}: the error must name the path and ENOSPC: {}",
            describe(&out)
        );
        assert!(
            !err.contains("cairn-tmp"),
            "{what}: names the staging directory: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        let mut left: Vec<String> = fs::read_dir(&small.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["given"], "{what}: left on the file system");
        assert_eq!(
            fs::read_dir(&given).unwrap().count(),
            0,
            "{what}: left in the existing DIR"
        );
        expect_released(w.pid, what, &w.log);
    }
    drop(small);
    w.terminate_original_expect_pass();
}

/// Every pid of `pids` that exists and is not a zombie.
fn present(pids: &[i32]) -> Vec<i32> {
    pids.iter()
        .copied()
        .filter(|&p| {
            fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('Z')))
                .is_some_and(|zombie| !zombie)
        })
        .collect()
}

fn released(pid: i32) -> bool {
    let tids: Vec<String> = fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    !tids.is_empty()
        && tids.iter().all(|t| {
            thread_state(pid, t).is_some_and(|(s, tracer, _)| tracer == 0 && s != 't' && s != 'T')
        })
}

/// Waits until the tree is either wholly gone or wholly there and let go;
/// returns whether it is there. Panics on anything in between.
fn settled(pids: &[i32], what: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stable_since: Option<Instant> = None;
    loop {
        let p = present(pids);
        let state = if p.is_empty() {
            Some(false)
        } else if p.len() == pids.len() && p.iter().all(|&q| released(q)) {
            Some(true)
        } else {
            None
        };
        match state {
            Some(false) => return false,
            Some(true) => {
                let since = *stable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(300) {
                    return true;
                }
            }
            None => stable_since = None,
        }
        if Instant::now() >= deadline {
            let now: Vec<ProcInfo> = p.iter().filter_map(|&q| proc_info(q)).collect();
            panic!(
                "{what}: a half-restored tree remains ({} of {} processes):\n{}",
                p.len(),
                pids.len(),
                format_tree(&now)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pass_count(log: &Path) -> usize {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == "PASS")
        .count()
}

/// SIGTERMs a restored (complete) tree's root and waits for its PASS and
/// for every process to be gone. (Each restore puts the log back as it was
/// at the dump, the current one renamed aside: PASS lines are counted in
/// the log as it is now.)
fn finish_restored(pids: &[i32], log: &Path, what: &str) {
    let passes = pass_count(log);
    let fd = pidfd_open(pids[0]).expect("pidfd of the restored root");
    pidfd_signal(&fd, libc::SIGTERM).expect("SIGTERM the restored root");
    let deadline = Instant::now() + EXIT_TIMEOUT;
    while !present(pids).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        present(pids).is_empty(),
        "{what}: the restored tree did not exit"
    );
    let n = pass_count(log);
    assert_eq!(n, passes + 1, "{what}: no PASS. Log:\n{}", tail(log, 4000));
    for &p in pids {
        assert!(
            wait_pid_gone(p, Duration::from_secs(10)),
            "{what}: pid {p} still taken"
        );
    }
}

/// tree_levels (four processes) checkpointed and killed by the dump, its
/// pids free again: the workload, its pids and its image directory.
fn dumped_tree_levels() -> (Workload, Vec<i32>, String) {
    let mut w = Workload::start("tree_levels", &[]);
    std::thread::sleep(Duration::from_millis(200));
    let pids = tree_pids(w.pid);
    assert_eq!(pids.len(), 4, "tree_levels has four processes: {pids:?}");
    w.dump_ok(&[]);
    w.expect_killed_by_dump();
    for &p in &pids {
        assert!(
            wait_pid_gone(p, Duration::from_secs(10)),
            "pid {p} still taken"
        );
    }
    let images = w.images.to_str().unwrap().to_string();
    (w, pids, images)
}

/// `cairn restore` (with and without -d) SIGKILLed at random moments of a
/// restore of a process tree: afterwards either no process of the tree is
/// left, or all of them are, let go, and the tree's own check passes. The
/// images stay good for the next try.
#[test]
fn restorer_killed_at_random_moments() {
    if skip_unless_root() {
        return;
    }
    let (w, pids, images) = dumped_tree_levels();
    // How long a whole detached restore takes.
    let t = Instant::now();
    let out = run_cairn(
        &[
            "restore".into(),
            "-d".into(),
            "-D".into(),
            images.clone().into(),
        ],
        &w.dir.join("restore-full"),
        CAIRN_TIMEOUT,
    );
    assert_ok(&out, "a complete restore");
    let took = t.elapsed();
    eprintln!("a whole restore takes {took:?}");
    assert!(
        settled(&pids, "the complete restore"),
        "the complete restore left nothing"
    );
    finish_restored(&pids, &w.log, "the complete restore");
    let mut rng = Rng::new();
    let runs = 8;
    let mut summary = Vec::new();
    for i in 0..runs {
        let frac = (i as f64 + rng.unit()) / runs as f64;
        let delay = took.mul_f64(frac * 1.3);
        let detached = i % 2 == 0;
        let mut args = vec!["restore", "-v", "-D", &images];
        if detached {
            args.push("-d");
        }
        let base = w.dir.join(format!("restore-{i}"));
        let mut c = spawn_cairn(&args, &base);
        std::thread::sleep(delay);
        sigkill(&mut c);
        let what = format!(
            "run {i} ({}, killed after {delay:?})",
            if detached { "-d" } else { "waiting" }
        );
        let there = settled(&pids, &what);
        let log = fs::read_to_string(base.with_extension("stderr")).unwrap_or_default();
        let guard_said = log
            .lines()
            .find(|l| l.starts_with("cairn guard:"))
            .unwrap_or("")
            .to_string();
        summary.push(format!(
            "{what}: {} {guard_said}",
            if there {
                "complete tree"
            } else {
                "nothing left"
            }
        ));
        if there {
            finish_restored(&pids, &w.log, &what);
        }
        for &p in &pids {
            assert!(
                wait_pid_gone(p, Duration::from_secs(10)),
                "{what}: pid {p} still taken"
            );
        }
    }
    eprintln!("{}", summary.join("\n"));
}

/// The README's exit-code table and `src/error.rs` list the same codes,
/// and a few failures of each kind exit with their documented code.
#[test]
fn exit_codes_match_the_readme() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = fs::read_to_string(root.join("README.md")).unwrap();
    let table = readme
        .split("### Exit codes")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has an Exit codes section");
    let mut documented: Vec<u8> = table
        .lines()
        .filter_map(|l| l.strip_prefix("| "))
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect();
    documented.sort_unstable();
    let src = fs::read_to_string(root.join("src/error.rs")).unwrap();
    let mut coded: Vec<u8> = src
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| l.split("u8 = ").nth(1)?.trim_end_matches(';').parse().ok())
        .chain([0, 1])
        .collect();
    coded.sort_unstable();
    assert_eq!(documented, coded, "README exit codes vs src/error.rs");

    let base = fresh_dir("exit-codes");
    let run = |args: &[&str], tag: &str| {
        run_cairn(
            &args.iter().map(OsString::from).collect::<Vec<_>>(),
            &base.join(tag),
            CAIRN_TIMEOUT,
        )
    };
    let code = |o: &std::process::Output| exit_code(&o.status);
    // 2: usage.
    assert_eq!(code(&run(&["dump"], "u1")), 2);
    assert_eq!(code(&run(&["frobnicate"], "u2")), 2);
    assert_eq!(code(&run(&["dump", "-t", "1", "-D"], "u3")), 2);
    // 5: not an image directory; a damaged image.
    let empty = base.join("empty");
    fs::create_dir(&empty).unwrap();
    let e = empty.to_str().unwrap();
    assert_eq!(code(&run(&["restore", "-D", e], "i1")), 5);
    assert_eq!(code(&run(&["show", "--verify", e], "i2")), 5);
    // 1: prune of a directory that holds no checkpoint.
    assert_eq!(code(&run(&["prune", e], "p1")), 1);
    if !is_root() {
        note_skip("the dump and restore exit codes: not root");
        let _ = fs::remove_dir_all(&base);
        return;
    }
    // 3: the dump failed and the target runs on.
    let mut w = Workload::start("mem_heap", &[]);
    fs::write(base.join("a-file"), "not a directory").unwrap();
    let far = base.join("a-file/images");
    let pid = w.pid.to_string();
    let out = run(&["dump", "-t", &pid, "-D", far.to_str().unwrap()], "d1");
    assert_eq!(code(&out), 3, "{}", describe(&out));
    assert!(w.original_alive());
    // 4: the restore failed (the pid is taken: the original runs).
    let img = base.join("images");
    assert_ok(&dump(w.pid, &img, &["--leave-running"]), "dump");
    let out = run(&["restore", "-D", img.to_str().unwrap()], "r1");
    assert_eq!(code(&out), 4, "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already in use"));
    // 5 again: a byte of an image changed.
    let core = fs::read_dir(&img)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("core-")
        })
        .unwrap();
    let mut b = fs::read(&core).unwrap();
    let n = b.len();
    b[n - 1] ^= 0x40;
    fs::write(&core, b).unwrap();
    let out = run(&["restore", "-D", img.to_str().unwrap()], "r2");
    assert_eq!(code(&out), 5, "{}", describe(&out));
    w.terminate_original_expect_pass();
    let _ = fs::remove_dir_all(&base);
}

/// Starts `bin ARGS` with CAIRN_PAUSE_AT=`point` and returns it once it
/// said it is paused there (its stdout and stderr go beside `base`).
fn spawn_paused(bin: &Path, args: &[&str], point: &str, base: &Path) -> Child {
    spawn_paused_as(bin, args, point, point, base)
}

/// [`spawn_paused`] with CAIRN_PAUSE_AT=`env`, waiting for `point`.
fn spawn_paused_as(bin: &Path, args: &[&str], env: &str, point: &str, base: &Path) -> Child {
    match spawn_maybe_paused(bin, args, env, point, base) {
        (c, true) => c,
        (_, false) => panic!(
            "{} exited before pausing at {point}: {}",
            bin.display(),
            tail(&base.with_extension("stderr"), 4000)
        ),
    }
}

/// [`spawn_paused_as`] for a point the command may never reach: (the
/// child, whether it paused); false once it exited successfully without.
fn spawn_maybe_paused(
    bin: &Path,
    args: &[&str],
    env: &str,
    point: &str,
    base: &Path,
) -> (Child, bool) {
    // The current test's CairnEnv as well.
    let hooks: Vec<_> = (cairn_command().get_envs())
        .filter_map(|(n, v)| Some((n.to_owned(), v?.to_owned())))
        .collect();
    let mut c = Command::new(bin)
        .args(args)
        .envs(hooks)
        .env("CAIRN_PAUSE_AT", env)
        .stdin(Stdio::null())
        .stdout(File::create(base.with_extension("stdout")).unwrap())
        .stderr(File::create(base.with_extension("stderr")).unwrap())
        .spawn()
        .expect("spawn cairn");
    let stderr = base.with_extension("stderr");
    let deadline = Instant::now() + CAIRN_TIMEOUT;
    let marker = format!("paused at {point}");
    loop {
        if fs::read_to_string(&stderr).is_ok_and(|s| s.contains(&marker)) {
            return (c, true);
        }
        if let Ok(Some(st)) = c.try_wait() {
            assert!(
                st.success(),
                "{} exited ({st}) before pausing at {point}: {}",
                bin.display(),
                tail(&stderr, 4000)
            );
            return (c, false);
        }
        if Instant::now() >= deadline {
            sigkill(&mut c);
            panic!("not paused at {point}: {}", tail(&stderr, 4000));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends `sig` to our child `c` and waits for its exit status.
fn signal_child(c: &mut Child, sig: i32) -> std::process::ExitStatus {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.id() as i32),
        nix::sys::signal::Signal::try_from(sig).unwrap(),
    )
    .expect("signal cairn");
    wait_timeout(c, CAIRN_TIMEOUT).unwrap_or_else(|| {
        sigkill(c);
        panic!("cairn did not exit after signal {sig}")
    })
}

/// Every thread's SigBlk, by tid.
fn sig_masks(pid: i32) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter_map(|t| thread_state(pid, &t).map(|(_, _, blk)| (t, blk)))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// SIGTERM and SIGINT to `cairn dump` (without --leave-running) in the
/// middle (tree frozen; images written, not yet committed), and SIGTERM
/// to `cairn pre-dump` before its copy: cairn rolls
/// back, says so and exits with 128 + the signal; the target runs on,
/// untraced, every thread's signal mask as before, no DIR, no staging
/// directory, no guardian; and in the end its own check passes.
#[test]
fn dump_interrupted_by_sigterm_and_sigint() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("fault_mem", &["--mib", "32"]);
    let pid = w.pid.to_string();
    std::thread::sleep(Duration::from_millis(200));
    let masks = sig_masks(w.pid);
    for (i, (cmd, sig, name, point)) in [
        ("dump", libc::SIGTERM, "SIGTERM", "frozen"),
        ("dump", libc::SIGINT, "SIGINT", "written"),
        ("dump", libc::SIGTERM, "SIGTERM", "written"),
        ("pre-dump", libc::SIGTERM, "SIGTERM", "pre-dump-copy"),
    ]
    .into_iter()
    .enumerate()
    {
        let what = format!("{cmd}: {name} at {point}");
        let dir = w.dir.join(format!("int{i}"));
        let base = w.dir.join(format!("int{i}-cairn"));
        let args = [cmd, "-v", "-t", &pid, "-D", dir.to_str().unwrap()];
        let mut c = spawn_paused(&cairn_bin(), &args, point, &base);
        let st = signal_child(&mut c, sig);
        let stderr = base.with_extension("stderr");
        let err = fs::read_to_string(&stderr).unwrap_or_default();
        // Exited with the documented code, not killed by the signal.
        assert_eq!(
            st.code(),
            Some(128 + sig),
            "{what}: exit status; stderr:\n{err}"
        );
        assert!(
            err.contains(&format!("interrupted by {name}"))
                && err.contains("left running as before"),
            "{what}: cairn does not say it was interrupted and rolled back:\n{err}"
        );
        expect_released(w.pid, &what, &w.log);
        assert_eq!(sig_masks(w.pid), masks, "{what}: signal masks changed");
        if let Some(g) = guardian_pid(&stderr) {
            assert!(
                wait_pid_gone(g, Duration::from_secs(15)),
                "{what}: the guardian {g} is still there"
            );
        }
        assert!(!dir.exists(), "{what}: {} exists", dir.display());
        assert_eq!(
            staging_leftovers(&w.dir),
            Vec::<PathBuf>::new(),
            "{what}: staging directory left"
        );
        assert!(w.original_alive(), "{what}: the workload died");
    }
    w.terminate_original_expect_pass();
}

/// SIGTERM and SIGHUP to `cairn restore` of a tree of four processes in
/// the middle (two processes created): cairn says it rolled back, exits
/// with 128 + the signal, and no process of the tree remains; the images
/// then restore completely.
#[test]
fn restore_interrupted_by_sigterm() {
    if skip_unless_root() {
        return;
    }
    let (w, pids, images) = dumped_tree_levels();
    for (i, (sig, name)) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGHUP, "SIGHUP")]
        .into_iter()
        .enumerate()
    {
        let base = w.dir.join(format!("restore-int{i}"));
        let mut c = spawn_paused(
            &cairn_bin(),
            &["restore", "-v", "-D", &images],
            "restore-process-2",
            &base,
        );
        let live = present(&pids);
        assert!(
            !live.is_empty(),
            "{name}: no process of the tree exists at the pause point"
        );
        let st = signal_child(&mut c, sig);
        let stderr = base.with_extension("stderr");
        let err = fs::read_to_string(&stderr).unwrap_or_default();
        // Exited with the documented code, not killed by the signal.
        assert_eq!(
            st.code(),
            Some(128 + sig),
            "{name}: exit status; stderr:\n{err}"
        );
        assert!(
            err.contains(&format!("interrupted by {name}"))
                && err.contains("no process of the tree is left"),
            "{name}: cairn does not say it rolled the restore back:\n{err}"
        );
        assert!(
            !settled(&pids, name),
            "{name}: the interrupted restore left the tree"
        );
        for &p in &pids {
            assert!(
                wait_pid_gone(p, Duration::from_secs(10)),
                "{name}: pid {p} still taken"
            );
        }
        if let Some(g) = guardian_pid(&stderr) {
            assert!(
                wait_pid_gone(g, Duration::from_secs(15)),
                "{name}: the guardian {g} is still there"
            );
        }
    }
    let out = run_cairn(
        &["restore".into(), "-d".into(), "-D".into(), images.into()],
        &w.dir.join("restore-after"),
        CAIRN_TIMEOUT,
    );
    assert_ok(&out, "a restore after the interrupted ones");
    assert!(settled(&pids, "the complete restore"));
    finish_restored(&pids, &w.log, "the complete restore");
}

/// A dump that does not stop at the first SIGTERM (stuck in a long step,
/// CAIRN_PAUSE_AT=written!): a second SIGTERM hands over to the guardian
/// at once. cairn says so and exits with 143; the guardian puts the tree
/// back and removes the staging directory; the target's check passes.
#[test]
fn second_signal_hands_over_to_the_guardian() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("fault_mem", &["--mib", "16"]);
    let pid = w.pid.to_string();
    std::thread::sleep(Duration::from_millis(200));
    let masks = sig_masks(w.pid);
    let dir = w.dir.join("twice");
    let base = w.dir.join("twice-cairn");
    let args = ["dump", "-v", "-t", &pid, "-D", dir.to_str().unwrap()];
    // The marker names the point without the "!".
    let mut c = spawn_paused_as(&cairn_bin(), &args, "written!", "written", &base);
    let cpid = nix::unistd::Pid::from_raw(c.id() as i32);
    nix::sys::signal::kill(cpid, nix::sys::signal::Signal::SIGTERM).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        matches!(c.try_wait(), Ok(None)),
        "cairn exited at the first SIGTERM while stuck"
    );
    let st = signal_child(&mut c, libc::SIGTERM);
    let stderr = base.with_extension("stderr");
    let err = fs::read_to_string(&stderr).unwrap_or_default();
    assert_eq!(st.code(), Some(143), "exit status; stderr:\n{err}");
    assert!(
        err.contains("handed over to the guardian"),
        "cairn does not say it handed over: {err}"
    );
    expect_released(w.pid, "after the hand-over", &w.log);
    assert_eq!(sig_masks(w.pid), masks, "signal masks changed");
    if let Some(g) = guardian_pid(&stderr) {
        assert!(
            wait_pid_gone(g, Duration::from_secs(15)),
            "the guardian {g} is still there"
        );
    }
    let err = fs::read_to_string(&stderr).unwrap_or_default();
    assert!(err.contains("cairn guard: the dumper"), "{err}");
    assert!(!dir.exists());
    assert_eq!(staging_leftovers(&w.dir), Vec::<PathBuf>::new());
    w.terminate_original_expect_pass();
}

/// cairn's own parking page (a vDSO without a parking loop, as on
/// Debian's 5.10 and 6.1; forced here with CAIRN_TEST_NO_VDSO_PARKING):
/// `cairn dump --leave-running` SIGKILLed right after the mmap that puts
/// the page into the target, before anything parks in it (pause point
/// `parking-page-mapped`). The guardian was told the page's address
/// before the mmap and removes it: the target's /proc/PID/maps is back as
/// before, the target runs on, and its own check passes. Before stop 24
/// the guardian was told only after the page was mapped and written, and
/// the page stayed in the target.
#[test]
fn dumper_killed_after_mapping_the_parking_page() {
    if skip_unless_root() {
        return;
    }
    let _own = CairnEnv::set("CAIRN_TEST_NO_VDSO_PARKING", "1");
    let mut w = Workload::start("fault_mem", &["--mib", "4"]);
    let pid = w.pid.to_string();
    let target = w.pid;
    let maps = || fs::read_to_string(format!("/proc/{target}/maps")).unwrap();
    let before = maps();
    let fds_before = fd_table(w.pid);
    let dir = w.dir.join("img");
    let base = w.dir.join("cairn");
    let stderr = base.with_extension("stderr");
    let args = [
        "dump",
        "-v",
        "-t",
        &pid,
        "-D",
        dir.to_str().unwrap(),
        "--leave-running",
    ];
    let point = "parking-page-mapped";
    let (mut c, paused) = spawn_maybe_paused(&cairn_bin(), &args, point, point, &base);
    assert!(
        paused,
        "the dump never mapped cairn's own parking page: {}",
        tail(&stderr, 4000)
    );
    let during = maps();
    assert_ne!(during, before, "no page mapped at the pause point");
    sigkill(&mut c);
    if let Some(g) = guardian_pid(&stderr) {
        assert!(
            wait_pid_gone(g, Duration::from_secs(15)),
            "the guardian {g} is still there"
        );
    }
    expect_released(w.pid, "killed with the parking page mapped", &w.log);
    std::thread::sleep(Duration::from_millis(300));
    assert!(w.original_alive(), "the workload died");
    let log = fs::read_to_string(&stderr).unwrap_or_default();
    assert_eq!(
        maps(),
        before,
        "the target's mappings changed (at the pause:\n{during}); cairn's log:\n{log}"
    );
    assert_eq!(fd_table(w.pid), fds_before, "descriptors changed");
    assert!(
        log.contains("removed cairn's parking page from 1 process"),
        "the guardian did not say it removed the page: {log}"
    );
    w.terminate_original_expect_pass();
}
