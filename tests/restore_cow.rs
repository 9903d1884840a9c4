//! Copy-on-write sharing between parents and children survives a
//! checkpoint/restore (docs/ARCHITECTURE.md "Restore", `memory::cow`).
//!
//! tree_cow_mix: a root fills 64 MiB (and smaller regions: zeros, mlocked,
//! MADV_DONTFORK, MADV_WIPEONFORK, initialised data) and forks four
//! children and a grandchild, which change their copies in different ways
//! (write part of it, drop part of it with MADV_DONTNEED, map their own
//! memory where the parent's did not come along). After the restore every
//! process checks its own memory; from outside, the test counts for each
//! child the pages whose page frame (/proc/PID/pagemap, root only) is its
//! parent's at the same address, which must be what it was before the
//! dump, and the tree's total Pss must stay near what it was (a restore
//! that copies every page multiplies it by the number of processes). The
//! oracle compares `cow.pages` over all private memory on top.

mod common;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::*;

/// The regions of tree_cow_mix whose sharing is counted: (name, start,
/// pages). BUF 64 MiB, ZBUF 2 MiB, LBUF 256 KiB.
const REGIONS: [(&str, u64, u64); 3] = [
    ("BUF", 0x3000_0000_0000, 16384),
    ("ZBUF", 0x3001_0000_0000, 512),
    ("LBUF", 0x3002_0000_0000, 64),
];

/// Pages each process shares with its parent in REGIONS, by the
/// workload's design: B rewrote 8 MiB of BUF, C dropped 4 MiB of it.
fn designed(comm: &str) -> u64 {
    let all: u64 = REGIONS.iter().map(|r| r.2).sum();
    match comm {
        "cow-B" => all - 2048,
        "cow-C" => all - 1024,
        _ => all,
    }
}

/// Page frame numbers of `pages` pages of `pid` from `start` (0: not
/// present).
fn frames(pid: i32, start: u64, pages: u64) -> Vec<u64> {
    let f = fs::File::open(format!("/proc/{pid}/pagemap")).expect("open pagemap");
    let mut buf = vec![0u8; (pages * 8) as usize];
    f.read_exact_at(&mut buf, start / 4096 * 8)
        .expect("read pagemap");
    buf.chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
        .map(|e| if e >> 63 == 1 { e & ((1 << 55) - 1) } else { 0 })
        .collect()
}

/// The tree by name (comm): (pid, parent pid).
fn by_comm(root: i32) -> HashMap<String, (i32, i32)> {
    let mut out = HashMap::new();
    for p in tree_snapshot(root) {
        let comm = fs::read_to_string(format!("/proc/{}/comm", p.pid))
            .unwrap_or_default()
            .trim()
            .to_string();
        out.insert(comm, (p.pid, p.ppid));
    }
    out
}

/// What is measured of a tree: per child (by comm) the pages shared with
/// its parent in REGIONS, and the sum of every process's Pss in kB.
#[derive(Debug)]
struct Sharing {
    shared: HashMap<String, u64>,
    pss_kb: u64,
}

fn pss_kb(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn measure(root: i32) -> Sharing {
    let tree = by_comm(root);
    let mut shared = HashMap::new();
    for (comm, &(pid, ppid)) in tree.iter().filter(|(c, _)| c.starts_with("cow-")) {
        let n: u64 = REGIONS
            .iter()
            .map(|&(_, start, pages)| {
                let (a, b) = (frames(pid, start, pages), frames(ppid, start, pages));
                a.iter().zip(&b).filter(|(x, y)| **x != 0 && x == y).count() as u64
            })
            .sum();
        shared.insert(comm.clone(), n);
    }
    let pss_kb = tree.values().map(|&(p, _)| pss_kb(p)).sum();
    Sharing { shared, pss_kb }
}

/// The restored tree shares what the original shared: per child within
/// 2% of the pages (a page that compaction moves between the reads of the
/// child's and the parent's pagemap is not counted), and the total Pss
/// within 10% + 8 MiB.
fn assert_shared_like(name: &str, before: &Sharing, after: &Sharing) {
    assert_eq!(
        before.shared.len(),
        5,
        "{name}: expected the five children of tree_cow_mix before the dump: {before:?}"
    );
    for (comm, &b) in &before.shared {
        let want = designed(comm);
        assert!(
            b >= want * 98 / 100,
            "{name}: before the dump, {comm} shares {b} pages with its parent, the workload \
             meant {want}: the workload (or this machine) does not share as the test expects"
        );
        let a = after.shared.get(comm).copied().unwrap_or(0);
        assert!(
            a.abs_diff(b) <= want / 50,
            "{name}: {comm} shares {a} pages with its parent after the restore, {b} before \
             the dump (of {want}): copy-on-write sharing was not restored\nbefore: {before:?}\n\
             after: {after:?}"
        );
    }
    assert!(
        after.pss_kb <= before.pss_kb * 11 / 10 + 8192,
        "{name}: the restored tree's Pss is {} kB, {} kB before the dump: memory multiplied",
        after.pss_kb,
        before.pss_kb
    );
}

/// Skips (true, saying why) unless root and page frame numbers show in
/// /proc/PID/pagemap.
fn skip_unless_pfns() -> bool {
    if skip_unless_root() {
        return true;
    }
    if !pfns_visible() {
        note_skip("page frame numbers are not visible in /proc/PID/pagemap");
        return true;
    }
    false
}

fn pfns_visible() -> bool {
    // Page frame numbers read as 0 without CAP_SYS_ADMIN.
    let stack = std::hint::black_box(0u8);
    let addr = &stack as *const u8 as u64 & !4095;
    frames(std::process::id() as i32, addr, 1)[0] != 0
}

/// A checkpoint/restore of tree_cow_mix: every process's memory checks
/// itself, the sharing is counted before and after from outside, and the
/// oracle compares `cow.pages` of every VMA.
#[test]
fn tree_cow_mix_shares_after_restore() {
    if skip_unless_pfns() {
        return;
    }
    let mut t = TreeTest::start("tree_cow_mix", &[]);
    let before = measure(t.w.pid);
    t.dump_ok(&[]);
    t.expect_tree_killed_by_dump();
    t.restore_start(&[], false);
    t.check_restored_tree();
    let after = measure(t.w.pid);
    assert_shared_like("restore", &before, &after);
    t.finish();
}

fn os(s: impl AsRef<std::ffi::OsStr>) -> std::ffi::OsString {
    s.as_ref().to_os_string()
}

/// The same through an incremental chain (a pre-dump, then the dump on
/// top of it): pages unchanged since the pre-dump come from the first
/// layer, for the parent and the children alike, and are shared again.
#[test]
fn tree_cow_mix_shares_after_chain_restore() {
    if skip_unless_pfns() {
        return;
    }
    let mut t = TreeTest::start("tree_cow_mix", &[]);
    let before = measure(t.w.pid);
    let ck = t.w.dir.join("ck");
    fs::create_dir_all(&ck).expect("mkdir ck");
    let run = |cmd: &str, k: &str, extra: &[&str]| {
        let mut args = vec![
            os("-v"),
            os(cmd),
            os("-t"),
            os(t.w.pid.to_string()),
            os("-D"),
            os(ck.join(k)),
        ];
        args.extend(extra.iter().map(os));
        let out = run_cairn(&args, &ck.join(format!("{cmd}-{k}")), CAIRN_TIMEOUT);
        assert!(
            out.status.success(),
            "{cmd} {k} failed: {}\n--- workload log ---\n{}",
            describe(&out),
            tail(&t.w.log, 4000)
        );
    };
    run("pre-dump", "1", &[]);
    let mid = measure(t.w.pid);
    // Within the tolerance of `assert_shared_like`: a CI run saw 16 of
    // 15,936 pages of one child stop being shared (the dump's parking
    // frame written into a stack page still shared with a child, fixed:
    // `Remote::guard`). The tolerance is for this test's own count: page
    // frames move under a frozen tree (compaction) and a page may move
    // between the reads of the child's and the parent's pagemap. The
    // oracle allows no loss (the dump compares frames read together:
    // `memory::plan`).
    for (comm, &b) in &before.shared {
        let m = mid.shared.get(comm).copied().unwrap_or(0);
        assert!(
            m.abs_diff(b) <= designed(comm) / 50,
            "the pre-dump changed the tree's sharing: {comm} shares {m} pages, {b} before\n\
             before: {before:?}\nafter the pre-dump: {mid:?}"
        );
    }
    run(
        "dump",
        "2",
        &["--prev-images-dir", "../1", "--track-mem", "--oracle"],
    );
    t.expect_tree_killed_by_dump();
    let layer = ck.join("2");
    t.run = Some(restore_start(
        Path::new(&layer),
        &[],
        false,
        t.w.pid,
        Some(&t.w.log),
    ));
    t.tracker.track_tree(t.w.pid);
    t.check_restored_tree();
    let after = measure(t.w.pid);
    assert_shared_like("chain restore", &before, &after);
    t.finish();
}

/// The same through a post-copy restore (`restore --lazy-pages` from the
/// image directory): the parent's memory is restored before its children
/// are forked from it, the children's own pages come through the pager,
/// and what they shared is shared again. Measured once every page is in.
#[test]
fn tree_cow_mix_shares_after_lazy_restore() {
    if skip_unless_pfns() {
        return;
    }
    let mut t = TreeTest::start("tree_cow_mix", &[]);
    let before = measure(t.w.pid);
    t.dump_ok(&[]);
    t.expect_tree_killed_by_dump();
    t.restore_start(
        &[
            "--lazy-pages",
            "@no-compare: --lazy-pages: the tree runs before its memory is in",
        ],
        false,
    );
    t.check_restored_tree();
    let run = t.run.as_ref().expect("restored");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let err = String::from_utf8_lossy(&run.output().stderr).into_owned();
        if err.contains("every page is in") {
            assert!(err.contains("its memory follows (--lazy-pages"), "{err}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no `every page is in` after 120 s:\n{err}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let after = measure(t.w.pid);
    assert_shared_like("lazy restore", &before, &after);
    t.finish();
}
