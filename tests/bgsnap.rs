//! Background snapshot (issue 15): a --leave-running dump freezes the tree
//! only to collect its state and write-protect its private memory, then
//! copies the pages while the tree runs; a page written before it was
//! saved is copied first. The workload (mem_rewrite) rewrites its memory
//! all the time and checks, after the restore, that its memory is one
//! state of its writers' order: no page from after the freeze, none lost,
//! none torn.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Why this kernel cannot take a background snapshot, or None: cairn
/// finds the pages written between its write-protection and the freeze
/// with PAGEMAP_SCAN, an ioctl of /proc/PID/pagemap that Linux 6.7 added
/// (older kernels answer ENOTTY). Probed here, apart from cairn's own
/// probe, with an empty range.
fn pagemap_scan_missing() -> Option<String> {
    use std::os::fd::AsRawFd;
    let pm = fs::File::open("/proc/self/pagemap").expect("open /proc/self/pagemap");
    // struct pm_scan_arg: size, flags, start, end, walk_end, vec, vec_len,
    // max_pages, category_inverted, category_mask, category_anyof_mask,
    // return_mask (12 u64); PAGEMAP_SCAN = _IOWR('f', 16, pm_scan_arg).
    let mut arg = [0u64; 12];
    arg[0] = std::mem::size_of_val(&arg) as u64;
    const PAGEMAP_SCAN: libc::c_ulong = 0xc060_6610;
    // SAFETY: `arg` is a pm_scan_arg of the size its first field gives,
    // with an empty range and no output vector: the kernel writes only
    // `walk_end` inside it; `pm` is open for the call.
    let r = unsafe { libc::ioctl(pm.as_raw_fd(), PAGEMAP_SCAN, arg.as_mut_ptr()) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOTTY) {
            return Some(format!(
                "the kernel has no PAGEMAP_SCAN (Linux 6.7; ioctl of /proc/self/pagemap: {e})"
            ));
        }
    }
    None
}

/// Skips (with the reason) a test of the background path on a kernel
/// without PAGEMAP_SCAN: `background_snapshot_falls_back_without_pagemap_scan`
/// covers those kernels.
fn skip_without_pagemap_scan() -> bool {
    match pagemap_scan_missing() {
        Some(why) => {
            note_skip(&format!(
                "the background snapshot needs PAGEMAP_SCAN: {why}"
            ));
            true
        }
        None => false,
    }
}

/// The figure `key=VALUE` of a `stats background-snapshot:` line.
fn stat(stderr: &str, key: &str) -> Option<f64> {
    let line = stderr
        .lines()
        .find(|l| l.contains("stats background-snapshot:"))?;
    let at = line.find(&format!("{key}="))? + key.len() + 1;
    line[at..].split_whitespace().next()?.parse().ok()
}

/// Dumps `w` with --leave-running (background snapshot forced on) while
/// it writes; checks the log says the background path was taken and
/// prints its figures.
fn dump_in_background(w: &Workload, extra: &[&str]) {
    let mut flags = vec!["--leave-running", "--background-snapshot=on"];
    flags.extend_from_slice(extra);
    let out = w.dump_ok(&flags);
    let err = String::from_utf8_lossy(&out.stderr);
    let (frozen, copy) = (stat(&err, "frozen_ms"), stat(&err, "copy_ms"));
    assert!(
        frozen.is_some() && copy.is_some() && err.contains("write faults served"),
        "the dump did not take the background path: {}",
        describe(&out)
    );
    let summary = err
        .lines()
        .find(|l| l.contains("write faults served"))
        .unwrap_or_default();
    eprintln!(
        "{}: frozen {:.1} ms, background copy {:.1} ms; {summary}",
        w.name,
        frozen.unwrap_or(0.0),
        copy.unwrap_or(0.0)
    );
}

/// Dump in the background while the writers run, then: the original goes
/// on and checks itself (PASS), and the restored process checks that its
/// memory is the state at the freeze (PASS).
fn snapshot_then_restore(args: &[&str]) {
    let mut w = Workload::start("mem_rewrite", args);
    // Let the writers run a while before the dump.
    std::thread::sleep(Duration::from_millis(300));
    dump_in_background(&w, &[]);
    let snap = w.log_snapshot();
    w.terminate_original_expect_pass();
    w.log_reset(&snap);
    w.restore_wait(&[]);
}

#[test]
fn background_snapshot_one_writer() {
    if skip_unless_root() || skip_without_pagemap_scan() {
        return;
    }
    snapshot_then_restore(&["--mib", "256"]);
}

#[test]
fn background_snapshot_four_writers() {
    if skip_unless_root() || skip_without_pagemap_scan() {
        return;
    }
    snapshot_then_restore(&["--mib", "256", "--threads", "4"]);
}

/// The writer drops pages with madvise(MADV_DONTNEED) before rewriting
/// them. A private anonymous page dropped before cairn saved it is gone
/// (the kernel cannot hold a madvise back until cairn has copied the page):
/// the dump must then fail, naming the page, and leave the original
/// running; if every dropped page had been saved in time, the dump
/// succeeds and the restore checks itself. Never an image with a page from
/// after the freeze (the workload would see it when it reaches the page).
#[test]
fn background_snapshot_madvise_dontneed() {
    if skip_unless_root() || skip_without_pagemap_scan() {
        return;
    }
    let mut w = Workload::start("mem_rewrite", &["--mib", "128", "--dontneed", "8"]);
    std::thread::sleep(Duration::from_millis(300));
    let out = w.dump(&["-v", "--leave-running", "--background-snapshot=on"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let snap = w.log_snapshot();
    w.terminate_original_expect_pass();
    if out.status.success() {
        eprintln!("the dump succeeded: every dropped page was saved in time");
        assert!(stat(&err, "frozen_ms").is_some(), "{}", describe(&out));
        w.log_reset(&snap);
        w.restore_wait(&[]);
    } else {
        eprintln!(
            "the dump failed as it must: {}",
            err.lines().last().unwrap_or("")
        );
        assert!(
            err.contains("was dropped (madvise), unmapped or moved during the copy")
                && contains_number(&err, w.pid.into()),
            "the dump failed for another reason: {}",
            describe(&out)
        );
        assert!(
            !w.images.join("inventory.img").exists(),
            "a failed dump left images"
        );
    }
}

/// The lost-page retry of `--background-snapshot=auto` (the default): the
/// writer drops every page with madvise(MADV_DONTNEED) just before it
/// rewrites it, so pages it reaches after the thaw are gone before the
/// background copy saves them (the copy of 128 MiB takes far longer than
/// the writer needs to reach its next page). The first attempt must fail
/// naming such a page, cairn must say it dumps again with every page copied
/// frozen, and the dump of that second attempt must be exact: the restored
/// workload checks its memory.
#[test]
fn background_snapshot_lost_page_retries_frozen() {
    if skip_unless_root() || skip_without_pagemap_scan() {
        return;
    }
    let mut w = Workload::start("mem_rewrite", &["--mib", "128", "--dontneed", "1"]);
    std::thread::sleep(Duration::from_millis(300));
    let out = w.dump_ok(&["--leave-running"]);
    let err = String::from_utf8_lossy(&out.stderr);
    let retried = err.lines().find(|l| {
        l.contains("background snapshot failed")
            && l.contains("was dropped (madvise), unmapped or moved during the copy")
            && l.contains("dumping again with every page copied frozen")
    });
    assert!(
        retried.is_some(),
        "the dump did not retry frozen after losing a page: {}",
        describe(&out)
    );
    eprintln!("{}", retried.unwrap_or_default());
    // Exactly one background attempt: the retry copies frozen.
    assert_eq!(
        err.matches("stats background-snapshot:").count(),
        0,
        "the retry took the background path again: {}",
        describe(&out)
    );
    let snap = w.log_snapshot();
    w.terminate_original_expect_pass();
    w.log_reset(&snap);
    w.restore_wait(&[]);
}

/// The final dump of an incremental chain (--prev-images-dir, the parent
/// armed tracking with --track-mem) takes the background path too: the
/// tracking's userfaultfds are released for the snapshot's. The restore
/// from the final layer checks itself. (It once hung in CI: the restored
/// workload's SIGTERM went to a writer thread; mem_rewrite's writers now
/// block SIGTERM.)
#[test]
fn background_snapshot_final_layer() {
    if skip_unless_root() || skip_without_pagemap_scan() {
        return;
    }
    let mut w = Workload::start("mem_rewrite", &["--mib", "64", "--threads", "2"]);
    let parent = w.dir.join("parent");
    assert_ok(
        &dump(
            w.pid,
            &parent,
            &[
                "--leave-running",
                "--track-mem",
                "@no-oracle: a parent layer",
            ],
        ),
        "parent layer with --track-mem",
    );
    std::thread::sleep(Duration::from_millis(200));
    dump_in_background(&w, &["--prev-images-dir", "../parent"]);
    let snap = w.log_snapshot();
    w.terminate_original_expect_pass();
    w.log_reset(&snap);
    w.restore_wait(&[]);
}

/// Waits until `cairn` (its stderr at `err_path`) says it paused at
/// `point` (`CAIRN_PAUSE_AT`); kills it and fails after a minute or if it
/// exits first.
fn wait_paused(cairn: &mut std::process::Child, err_path: &Path, point: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let want = format!("paused at {point}");
    while !fs::read_to_string(err_path)
        .unwrap_or_default()
        .contains(&want)
    {
        if Instant::now() > deadline || cairn.try_wait().expect("wait cairn").is_some() {
            kill_tree(cairn);
            panic!("cairn did not pause at {point}:\n{}", tail(err_path, 6000));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// cairn SIGKILLed in the middle of the background copy (paused there,
/// its fault handler serving the writers): closing its userfaultfds
/// releases every blocked writer and lifts the protection; the target goes
/// on writing (whole passes over its memory) and checks every page (PASS),
/// and no images directory appears.
#[test]
fn cairn_killed_during_background_copy() {
    if skip_unless_root() || skip_without_pagemap_scan() {
        return;
    }
    let passes_file = fresh_dir("bgsnap-passes").join("passes");
    let pf = passes_file.to_str().expect("utf-8 path");
    let mut w = Workload::start(
        "mem_rewrite",
        &["--mib", "128", "--threads", "2", "--passes-file", pf],
    );
    let err_path = w.dir.join("cairn-killed.stderr");
    let mut cairn = Command::new(cairn_bin())
        .args([
            "dump",
            "-v",
            "--leave-running",
            "--background-snapshot=on",
            "-t",
        ])
        .arg(w.pid.to_string())
        .arg("-D")
        .arg(&w.images)
        .env("CAIRN_PAUSE_AT", "bg-copy")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err_path).expect("create stderr file"))
        .spawn()
        .expect("spawn cairn");
    wait_paused(&mut cairn, &err_path, "bg-copy");
    // The tree runs (the handler serves its faults) while cairn waits.
    std::thread::sleep(Duration::from_millis(300));
    let before = passes(&passes_file);
    cairn.kill().expect("SIGKILL cairn");
    let _ = cairn.wait();
    eprintln!("cairn killed mid-copy; writer 0 had done {before} passes");
    let deadline = Instant::now() + Duration::from_secs(60);
    while passes(&passes_file) < before + 2 {
        assert!(
            Instant::now() < deadline && w.original_alive(),
            "the writers stopped after cairn was killed mid-copy (passes {} -> {}). Log:\n{}",
            before,
            passes(&passes_file),
            tail(&w.log, 4000)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    w.terminate_original_expect_pass();
    assert!(
        !w.images.join("inventory.img").exists(),
        "a killed dump left complete images in {}",
        w.images.display()
    );
    let _ = fs::remove_dir_all(passes_file.parent().expect("dir"));
}

/// The memory map changes between the arming of the write-protection
/// (before the freeze, while the tree runs) and the freeze: the dump
/// pauses right after arming (`CAIRN_PAUSE_AT=bg-armed`) while the
/// workload's racer unmaps a filled region, makes half of another
/// read-only (its VMA splits), writes the first page of a region never
/// touched, maps and fills a new region and forks a child that keeps a
/// copy of it; its writers rewrite their memory all along (each write to a
/// page armed before the freeze faults and is let through). The restored
/// tree must be the one at the freeze: the workload checks every region as
/// the race left it and its child's copy, and its writers' memory.
/// Without the oracle: a region mapped next to an armed VMA in this window
/// stays a VMA of its own in the running original (two VMAs that differ in
/// their userfaultfd do not merge, and once each has its own anon_vma they
/// never will), while the restore maps it merged, as the program would
/// have had it without cairn (docs/ARCHITECTURE.md, "Background
/// snapshot"); and the oracle's count of pages the forked child shares
/// with its parent is one off against the restore's on main's binary too
/// (a dump of this workload after the race, no arming).
#[test]
fn background_snapshot_races_between_arming_and_freeze() {
    if skip_unless_root() || skip_without_pagemap_scan() {
        return;
    }
    let dir = fresh_dir("bgsnap-race");
    let race = dir.join("race");
    let done = dir.join("race.done");
    let mut w = Workload::start(
        "mem_rewrite",
        &[
            "--mib",
            "64",
            "--threads",
            "2",
            "--race-file",
            race.to_str().expect("utf-8 path"),
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let err_path = w.dir.join("cairn-race.stderr");
    let mut cairn = Command::new(cairn_bin())
        .args([
            "dump",
            "-v",
            "--leave-running",
            "--background-snapshot=on",
            "-t",
        ])
        .arg(w.pid.to_string())
        .arg("-D")
        .arg(&w.images)
        .env("CAIRN_PAUSE_AT", "bg-armed")
        .env("CAIRN_PAUSE_UNTIL", &done)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err_path).expect("create stderr file"))
        .spawn()
        .expect("spawn cairn");
    wait_paused(&mut cairn, &err_path, "bg-armed");
    fs::write(&race, b"").expect("start the race");
    let st = match wait_timeout(&mut cairn, CAIRN_TIMEOUT) {
        Some(st) => st,
        None => {
            kill_tree(&mut cairn);
            panic!("cairn dump hung:\n{}", tail(&err_path, 6000));
        }
    };
    let err = fs::read_to_string(&err_path).unwrap_or_default();
    assert!(
        st.success() && done.exists(),
        "dump after the race failed ({st}, race done: {}):\n{}\n--- workload log ---\n{}",
        done.exists(),
        tail(&err_path, 8000),
        tail(&w.log, 4000)
    );
    assert!(
        err.contains("armed before the freeze:") && err.contains("protected again"),
        "the dump did not arm the protection before the freeze:\n{}",
        tail(&err_path, 8000)
    );
    eprintln!(
        "{}",
        err.lines()
            .filter(|l| l.contains("armed before the freeze") || l.contains("write faults"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let snap = w.log_snapshot();
    w.terminate_original_expect_pass();
    w.log_reset(&snap);
    w.restore_wait(&[]);
    let _ = fs::remove_dir_all(&dir);
}

/// The nice value of every thread of `pid`, by tid (/proc/PID/task/TID/stat,
/// field 19).
fn nices(pid: u32) -> Vec<(u32, i32)> {
    let mut out = Vec::new();
    for e in fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
    {
        let Ok(e) = e else { continue };
        let Ok(tid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(st) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // After "pid (comm) ": state is field 3, nice field 19.
        let rest = &st[st.rfind(')').map_or(0, |i| i + 2)..];
        if let Some(n) = rest.split(' ').nth(16).and_then(|x| x.parse().ok()) {
            out.push((tid, n));
        }
    }
    out
}

/// Runs `cairn dump --leave-running --background-snapshot=on` of `w`
/// paused at `point` (`CAIRN_PAUSE_AT`), calls `look` with cairn's pid
/// while it waits there, then lets it finish; the dump must succeed.
fn dump_paused_at(w: &Workload, point: &str, look: impl FnOnce(u32)) {
    let until = w.dir.join(format!("go-{point}"));
    let err_path = w.dir.join(format!("cairn-{point}.stderr"));
    let _ = fs::remove_dir_all(&w.images);
    let mut cairn = Command::new(cairn_bin())
        .args([
            "dump",
            "-v",
            "--leave-running",
            "--background-snapshot=on",
            "-t",
        ])
        .arg(w.pid.to_string())
        .arg("-D")
        .arg(&w.images)
        .env("CAIRN_PAUSE_AT", point)
        .env("CAIRN_PAUSE_UNTIL", &until)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err_path).expect("create stderr file"))
        .spawn()
        .expect("spawn cairn");
    wait_paused(&mut cairn, &err_path, point);
    let looked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| look(cairn.id())));
    fs::write(&until, b"").expect("let cairn go on");
    let st = wait_timeout(&mut cairn, CAIRN_TIMEOUT);
    if st.is_none() {
        kill_tree(&mut cairn);
    }
    if let Err(p) = looked {
        std::panic::resume_unwind(p);
    }
    assert!(
        st.is_some_and(|s| s.success()),
        "cairn dump paused at {point} failed:\n{}",
        tail(&err_path, 6000)
    );
}

/// While the tree is frozen, cairn's own dumping thread runs at nice -20
/// (docs/ARCHITECTURE.md, "Background snapshot": on a loaded machine the
/// frozen time was mostly cairn waiting for a CPU); the target's threads
/// and cairn's guardian keep their own priority, and once the tree runs
/// again (the background copy) every thread of cairn, and every process
/// it started, is back at its own nice value. The last dump is restored
/// and the workload checks its memory.
#[test]
fn frozen_dump_raises_only_its_own_priority_while_frozen() {
    if skip_unless_root() || skip_without_pagemap_scan() {
        return;
    }
    // The nice value cairn inherits (0 unless the tests run under nice).
    let base = nices(std::process::id()).first().map_or(0, |t| t.1);
    let mut w = Workload::start("mem_rewrite", &["--mib", "32"]);
    std::thread::sleep(Duration::from_millis(200));
    let target_before = nices(w.pid as u32);
    dump_paused_at(&w, "frozen", |cairn| {
        let mine = nices(cairn);
        let main = mine.iter().find(|t| t.0 == cairn).map(|t| t.1);
        assert_eq!(
            main,
            Some(-20),
            "cairn's dumping thread while the tree is frozen: {mine:?} (tests at nice {base})"
        );
        assert_eq!(
            nices(w.pid as u32),
            target_before,
            "the frozen target's priority changed"
        );
        for child in children_of(cairn) {
            assert!(
                nices(child).iter().all(|t| t.1 == base),
                "cairn's child {child} (started before the freeze) at {:?}",
                nices(child)
            );
        }
    });
    dump_paused_at(&w, "bg-copy", |cairn| {
        let mine = nices(cairn);
        assert!(
            mine.iter().all(|t| t.1 == base),
            "cairn's threads after the thaw: {mine:?}"
        );
        for child in children_of(cairn) {
            assert!(
                nices(child).iter().all(|t| t.1 == base),
                "cairn's child {child} after the thaw at {:?}",
                nices(child)
            );
        }
    });
    assert_eq!(nices(w.pid as u32), target_before);
    let snap = w.log_snapshot();
    w.terminate_original_expect_pass();
    w.log_reset(&snap);
    w.restore_wait(&[]);
}

/// The children of every thread of `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
    {
        let Ok(e) = e else { continue };
        let c = fs::read_to_string(e.path().join("children")).unwrap_or_default();
        out.extend(c.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
    }
    out
}

/// `--background-snapshot=on` where it cannot be honoured for a reason
/// known before the freeze (no `--leave-running`; `--track-mem`, whose
/// dirty tracking holds the same memory) is refused before the tree is
/// touched: no freeze in the log, no images, the workload runs on and
/// checks its memory at the end.
#[test]
fn background_snapshot_on_refused_before_the_freeze() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("mem_rewrite", &["--mib", "8"]);
    std::thread::sleep(Duration::from_millis(200));
    for (flags, why) in [
        (
            &["-v", "--background-snapshot=on"][..],
            "only with --leave-running",
        ),
        (
            &[
                "-v",
                "--leave-running",
                "--track-mem",
                "--background-snapshot=on",
            ][..],
            "--track-mem arms dirty tracking",
        ),
    ] {
        let out = w.dump(flags);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && err.contains("--background-snapshot=on: not possible")
                && err.contains(why),
            "{flags:?}: not refused with the reason ({why}): {}",
            describe(&out)
        );
        assert!(
            !err.contains("froze ") && !err.contains("write-protected"),
            "{flags:?}: refused only after touching the tree: {}",
            describe(&out)
        );
        assert!(
            !w.images.join("inventory.img").exists(),
            "{flags:?}: a refused dump left images"
        );
        assert!(
            w.original_alive(),
            "{flags:?}: the refused dump left the workload dead"
        );
    }
    w.terminate_original_expect_pass();
}

/// On a kernel without PAGEMAP_SCAN (before 6.7) a --leave-running dump
/// cannot copy in the background: `--background-snapshot=on` is refused
/// naming the missing ioctl, leaves no images and the original running
/// and intact; the default (`auto`) says why it copies every page frozen
/// and its images restore the state at the freeze (the workload checks
/// its memory). Skipped, with the reason, where the kernel has it.
#[test]
fn background_snapshot_falls_back_without_pagemap_scan() {
    if skip_unless_root() {
        return;
    }
    if pagemap_scan_missing().is_none() {
        // Expected where CI runs (a kernel of 6.7 or later): the kernels
        // without it are `cargo xtask vm-test`'s 5.10 and 6.1.
        note_expected_skip(
            "the kernel has PAGEMAP_SCAN (6.7): the background path is taken (the other tests); \
             the fallback is tested under kernels without it (cargo xtask vm-test, 5.10 and 6.1)",
        );
        return;
    }
    let mut w = Workload::start("mem_rewrite", &["--mib", "32", "--threads", "2"]);
    std::thread::sleep(Duration::from_millis(200));
    let out = w.dump(&["--leave-running", "--background-snapshot=on"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("--background-snapshot=on: not possible")
            && (err.contains("PAGEMAP_SCAN") || err.contains("userfaultfd write-protect")),
        "--background-snapshot=on without PAGEMAP_SCAN was not refused clearly: {}",
        describe(&out)
    );
    assert!(
        !w.images.join("inventory.img").exists(),
        "a refused dump left images"
    );
    assert!(
        w.original_alive(),
        "the refused dump left the workload dead"
    );
    let _ = fs::remove_dir_all(&w.images);
    let out = w.dump_ok(&["--leave-running"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("background snapshot not used (")
            && (err.contains("PAGEMAP_SCAN") || err.contains("userfaultfd write-protect"))
            && err.contains("every page is copied frozen")
            && stat(&err, "copy_ms").is_none(),
        "the default dump did not say it copies frozen for want of PAGEMAP_SCAN: {}",
        describe(&out)
    );
    let snap = w.log_snapshot();
    w.terminate_original_expect_pass();
    w.log_reset(&snap);
    w.restore_wait(&[]);
}
