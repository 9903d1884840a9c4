//! Incremental checkpoints: chains of pre-dumps and a final dump, restored
//! from the last layer. The workload (`incr_mem`) changes its memory in a
//! different way after each layer and checks after restore that its memory
//! is exactly what it was at the final dump.
//!
//! Each mechanism is exercised where the kernel has it: uffd-wp async with
//! PAGEMAP_SCAN (6.7+), soft-dirty (kernels with CONFIG_MEM_SOFT_DIRTY;
//! not this machine's, but the kernels of `cargo xtask vm-test`), and page
//! hashes (everywhere). A test whose mechanism is missing says so and
//! returns.
mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use cairn::image::proto::{Inventory, Pagemap, RunKind};
use cairn::image::{names, ImageDir, ImageType};
use cairn::sys::probe::features;
use common::*;

/// Whether `mech` works here; prints why a test skips if not.
fn have(mech: &str) -> bool {
    let f = features();
    let (ok, why) = match mech {
        "soft-dirty" => (f.soft_dirty.available, f.soft_dirty.detail.clone()),
        "uffd-wp" => (
            f.uffd_wp_async.available && f.pagemap_scan.available,
            format!("{}; {}", f.uffd_wp_async.detail, f.pagemap_scan.detail),
        ),
        _ => (true, String::new()),
    };
    if !ok {
        let why = format!("no {mech} on this kernel ({why})");
        if mech == "soft-dirty" {
            // The CI machine kind's kernel has no CONFIG_MEM_SOFT_DIRTY;
            // `cargo xtask vm-test` runs these tests under Debian's
            // kernels, which have it.
            note_expected_skip(&why);
        } else {
            note_skip(&why);
        }
    }
    ok
}

/// A workload and the layers of its chain (`<test dir>/ck/<k>`).
struct Chain {
    w: Workload,
    ck: PathBuf,
    /// Keeper pids cairn reported, killed (if still ours) on drop.
    keepers: Vec<i32>,
    /// Extra cairn flags for every layer (e.g. --dirty-tracking hash).
    flags: Vec<String>,
}

fn os(s: impl AsRef<std::ffi::OsStr>) -> OsString {
    s.as_ref().to_os_string()
}

fn is_keeper(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.windows(14).any(|w| w == b"__cairn-keeper"))
        .unwrap_or(false)
}

impl Chain {
    fn start(args: &[&str], flags: &[&str]) -> Chain {
        let w = Workload::start("incr_mem", args);
        let ck = w.dir.join("ck");
        std::fs::create_dir_all(&ck).expect("mkdir ck");
        Chain {
            w,
            ck,
            keepers: Vec::new(),
            flags: flags.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn layer(&self, k: usize) -> PathBuf {
        self.ck.join(k.to_string())
    }

    /// `cairn -v CMD -t PID -D ck/k [--prev-images-dir ../PREV] FLAGS...`.
    fn run(&mut self, cmd: &str, k: usize, prev: Option<usize>, extra: &[&str]) -> Output {
        let mut args = vec![
            os("-v"),
            os(cmd),
            os("-t"),
            os(self.w.pid.to_string()),
            os("-D"),
            os(self.layer(k)),
        ];
        if let Some(p) = prev {
            args.push(os("--prev-images-dir"));
            args.push(os(format!("../{p}")));
        }
        args.extend(self.flags.iter().map(os));
        args.extend(extra.iter().map(os));
        let out = run_cairn(&args, &self.ck.join(format!("{cmd}-{k}")), CAIRN_TIMEOUT);
        let err = String::from_utf8_lossy(&out.stderr);
        for l in err.lines() {
            if let Some(p) = l.split("keeper pid ").nth(1) {
                if let Ok(p) = p.trim().parse::<i32>() {
                    self.keepers.push(p);
                }
            }
        }
        out
    }

    fn pre_dump(&mut self, k: usize, prev: Option<usize>) {
        let out = self.run("pre-dump", k, prev, &[]);
        assert!(
            out.status.success(),
            "pre-dump {k} failed: {}\n--- workload log ---\n{}",
            describe(&out),
            tail(&self.w.log, 4000)
        );
    }

    /// SIGUSR1, then wait for the workload's `phase-k` file.
    fn phase(&mut self, k: usize) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.w.pid),
            nix::sys::signal::Signal::SIGUSR1,
        )
        .expect("SIGUSR1");
        let f = self.w.work.join(format!("phase-{k}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !f.exists() {
            assert!(
                self.w.original_alive() && Instant::now() < deadline,
                "the workload did not finish phase {k}. Its log:\n{}",
                tail(&self.w.log, 4000)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The final dump (kills the workload).
    fn final_dump(&mut self, k: usize, prev: usize) {
        let out = self.run("dump", k, Some(prev), &["--track-mem", "--oracle"]);
        assert!(
            out.status.success(),
            "dump {k} failed: {}\n--- workload log ---\n{}",
            describe(&out),
            tail(&self.w.log, 4000)
        );
        self.w.expect_killed_by_dump();
        self.expect_no_keeper();
    }

    /// Every keeper cairn started is gone (the final dump ends tracking).
    fn expect_no_keeper(&mut self) {
        for &k in &self.keepers {
            let gone = wait_pid_gone(k, Duration::from_secs(5)) || !is_keeper(k);
            assert!(gone, "keeper {k} still runs after the final dump");
        }
    }

    /// Restores layer k, compared with the oracle's snapshot of the
    /// chain's final dump (taken with `--oracle`).
    fn restore(&self, k: usize) {
        restore_wait(&self.layer(k), &[], self.w.pid, &self.w.log);
    }

    fn inventory(&self, k: usize) -> Inventory {
        let d = ImageDir::open(&self.layer(k)).expect("open layer");
        d.read(ImageType::Inventory, names::INVENTORY)
            .expect("inventory")
    }

    /// Pages of `owner` in layer k: (data + zero, in parent).
    fn pages(&self, k: usize, owner: &str) -> (u64, u64) {
        let d = ImageDir::open(&self.layer(k)).expect("open layer");
        let pm: Pagemap = d
            .read(ImageType::Pagemap, &names::pagemap(owner))
            .expect("pagemap");
        let mut v = (0, 0);
        for r in &pm.runs {
            if r.kind.enum_value() == Ok(RunKind::RUN_PARENT) {
                v.1 += r.nr_pages;
            } else {
                v.0 += r.nr_pages;
            }
        }
        v
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        for &k in &self.keepers {
            if is_keeper(k) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(k),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Four pre-dumps with a phase of changes after each, a final dump, a
/// restore from the last of the 5 layers: the workload checks every byte.
/// Tracking must have found the changes: the final layer stores a few
/// pages of the root and takes thousands from the parents.
fn chain_of_five(mech: &str) {
    let flags: Vec<String> = if mech == "default" {
        Vec::new()
    } else {
        vec![format!("--dirty-tracking={mech}")]
    };
    let flags: Vec<&str> = flags.iter().map(|s| s.as_str()).collect();
    let mut c = Chain::start(&["--phases", "4", "--writer"], &flags);
    for k in 1..=4 {
        c.pre_dump(k, (k > 1).then(|| k - 1));
        c.phase(k);
    }
    c.final_dump(5, 4);
    let root = format!("pid:{}", c.w.pid);
    let inv = c.inventory(5);
    let want = if mech == "default" {
        cairn::track::Mechanism::best().name().to_string()
    } else {
        mech.to_string()
    };
    assert_eq!(inv.dirty_tracking, want);
    assert!(
        !inv.full_owners
            .iter()
            .any(|f| f.starts_with(&format!("{root}:"))),
        "the root was stored whole: {:?}",
        inv.full_owners
    );
    let (stored, parent) = c.pages(5, &root);
    assert!(
        stored < 300 && parent > 2500,
        "final layer of {root}: {stored} pages stored, {parent} in parent (tracking missed nothing, but found too little unchanged)"
    );
    // Layer 3 was taken after the writer thread rewrote W during layer
    // 2's copy: those pages are stored again.
    let (stored3, _) = c.pages(3, &root);
    assert!(
        stored3 > 100,
        "layer 3 stored only {stored3} pages of {root}"
    );
    c.restore(5);
}

#[test]
fn chain_of_five_default_mechanism() {
    if skip_unless_root() {
        return;
    }
    chain_of_five("default");
}

#[test]
fn chain_of_five_uffd_wp() {
    if skip_unless_root() || !have("uffd-wp") {
        return;
    }
    chain_of_five("uffd-wp");
}

#[test]
fn chain_of_five_soft_dirty() {
    if skip_unless_root() || !have("soft-dirty") {
        return;
    }
    chain_of_five("soft-dirty");
}

#[test]
fn chain_of_five_hash() {
    if skip_unless_root() {
        return;
    }
    chain_of_five("hash");
}

/// The tracking state is lost (keeper killed): the next layer stores the
/// process whole, says why, and restores right.
#[test]
fn lost_tracking_state_gives_a_full_layer() {
    if skip_unless_root() || !have("uffd-wp") {
        return;
    }
    let mut c = Chain::start(&["--phases", "2"], &["--dirty-tracking=uffd-wp"]);
    c.pre_dump(1, None);
    c.phase(1);
    let k = *c.keepers.last().expect("pre-dump 1 reported its keeper");
    assert!(is_keeper(k), "keeper {k} is not running");
    // The keeper must not be part of the workload's tree.
    assert!(
        !tree_pids(c.w.pid).contains(&k),
        "keeper {k} is in the target's tree"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(k),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the keeper");
    assert!(wait_pid_gone(k, Duration::from_secs(5)));
    c.pre_dump(2, Some(1));
    c.phase(2);
    let root = format!("pid:{}", c.w.pid);
    let inv = c.inventory(2);
    assert!(
        inv.full_owners
            .iter()
            .any(|f| f.starts_with(&format!("{root}:")) && f.contains("no tracking state")),
        "layer 2 does not say the root was stored whole: {:?}",
        inv.full_owners
    );
    assert_eq!(
        c.pages(2, &root).1,
        0,
        "pages taken from the parent without tracking"
    );
    // Layer 2 armed tracking again: the final layer is incremental.
    c.final_dump(3, 2);
    let (stored, parent) = c.pages(3, &root);
    assert!(
        parent > 2000 && stored < 300,
        "{stored} stored, {parent} in parent"
    );
    c.restore(3);
}

/// Pages of `incr_mem` that phases 1 and 2 write (see the workload): the
/// 12 pages of A each phase's `write_a` touches, the phase-1 thread's page
/// of A, and the pages of B that read(2) fills.
fn written_in_phases_1_and_2() -> Vec<u64> {
    const PG: u64 = 4096;
    const A: u64 = 0x3000_0000_0000;
    const B: u64 = A + 0x100_0000;
    let mut v = Vec::new();
    for k in 1..=2u64 {
        for i in 0..12u64 {
            v.push(A + (30 + (k * 97 + i * 37) % 460) * PG);
        }
    }
    v.push(A + 500 * PG);
    // Phase 1: 6000 bytes at B + PG + 100; phase 2: 9000 at B + 5 PG + 3000.
    v.extend([1, 2, 5, 6, 7].map(|p| B + p * PG));
    v
}

/// A dump on an older layer (1) than the one tracking was re-armed by (2)
/// never takes from layer 1 a page written since: every page phases 1
/// and 2 wrote is stored (under every mechanism; a dump that trusted the
/// tracking of layer 2 would take the pages phase 1 wrote from layer 1).
/// With a tracking mechanism (uffd-wp, soft-dirty) the state kept is
/// relative to layer 2, so the root is stored whole and says why; with
/// hashes the state is layer 1's own page hashes, which are right for it:
/// the dump compares with them and takes the unchanged pages from layer 1.
/// The restore then checks every byte.
fn older_parent(mech: &str) {
    let flags: Vec<String> = if mech == "default" {
        Vec::new()
    } else {
        vec![format!("--dirty-tracking={mech}")]
    };
    let flags: Vec<&str> = flags.iter().map(|s| s.as_str()).collect();
    let used = if mech == "default" {
        cairn::track::Mechanism::best().name().to_string()
    } else {
        mech.to_string()
    };
    let mut c = Chain::start(&["--phases", "2"], &flags);
    c.pre_dump(1, None);
    c.phase(1);
    c.pre_dump(2, Some(1));
    c.phase(2);
    c.final_dump(3, 1);
    let inv = c.inventory(3);
    assert_eq!(inv.dirty_tracking, used, "layer 3's mechanism");
    let root = format!("pid:{}", c.w.pid);
    let d = ImageDir::open(&c.layer(3)).expect("open layer 3");
    let pm: Pagemap = d
        .read(ImageType::Pagemap, &names::pagemap(&root))
        .expect("pagemap");
    let from_parent = |a: u64| {
        pm.runs.iter().any(|r| {
            r.kind.enum_value() == Ok(RunKind::RUN_PARENT)
                && r.addr <= a
                && a < r.addr + r.nr_pages * 4096
        })
    };
    let stale: Vec<String> = written_in_phases_1_and_2()
        .into_iter()
        .filter(|&a| from_parent(a))
        .map(|a| format!("{a:#x}"))
        .collect();
    assert!(
        stale.is_empty(),
        "layer 3 ({used}) takes pages written since layer 1 from layer 1: {stale:?}"
    );
    let whole = inv
        .full_owners
        .iter()
        .find(|f| f.starts_with(&format!("{root}:")));
    let (stored, parent) = c.pages(3, &root);
    println!("layer 3 ({used}) of {root}: {stored} pages stored, {parent} taken from layer 1");
    if used == "hash" {
        assert!(
            whole.is_none(),
            "with hashes the root is compared with layer 1's, not stored whole: {whole:?}"
        );
        assert!(
            parent > 400 && stored > 0,
            "with hashes, {stored} pages stored and {parent} taken from layer 1"
        );
    } else {
        let why = whole.unwrap_or_else(|| {
            panic!(
                "the root was not stored whole ({used}): {:?}",
                inv.full_owners
            )
        });
        assert!(
            why.contains("another layer"),
            "stored whole for another reason: {why}"
        );
        assert_eq!(parent, 0, "{parent} pages taken from layer 1 ({used})");
    }
    c.restore(3);
}

#[test]
fn dump_on_an_older_parent_is_full() {
    if skip_unless_root() {
        return;
    }
    older_parent("default");
}

#[test]
fn dump_on_an_older_parent_is_full_uffd_wp() {
    if skip_unless_root() || !have("uffd-wp") {
        return;
    }
    older_parent("uffd-wp");
}

#[test]
fn dump_on_an_older_parent_is_full_soft_dirty() {
    if skip_unless_root() || !have("soft-dirty") {
        return;
    }
    older_parent("soft-dirty");
}

#[test]
fn dump_on_an_older_parent_hash() {
    if skip_unless_root() {
        return;
    }
    older_parent("hash");
}

/// Pre-dumps leave the process running and unharmed: it goes on with its
/// phases, its fd table and signals unchanged (the workload checks), and
/// passes its own check without any restore. The keeper exits with it.
#[test]
fn pre_dump_leaves_the_process_running() {
    if skip_unless_root() {
        return;
    }
    let mut c = Chain::start(&["--phases", "3"], &[]);
    c.pre_dump(1, None);
    c.phase(1);
    c.pre_dump(2, Some(1));
    c.phase(2);
    assert!(c.w.original_alive());
    let keepers = c.keepers.clone();
    c.w.terminate_original_expect_pass();
    for k in keepers {
        assert!(
            wait_pid_gone(k, Duration::from_secs(5)) || !is_keeper(k),
            "keeper {k} outlived the process it tracked"
        );
    }
}

struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A pre-dump that fails after the freeze (its images dir is full) leaves
/// the process untouched: running, no tracking left behind, its own check
/// passes.
#[test]
fn failed_pre_dump_leaves_the_process_untouched() {
    if skip_unless_root() {
        return;
    }
    let mut c = Chain::start(&["--phases", "1"], &[]);
    let small = c.w.dir.join("small");
    std::fs::create_dir_all(&small).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "mount a 1 MiB tmpfs");
    let _guard = Tmpfs(small.clone());
    let args = vec![
        os("-v"),
        os("pre-dump"),
        os("-t"),
        os(c.w.pid.to_string()),
        os("-D"),
        os(small.join("1")),
    ];
    let out = run_cairn(&args, &c.w.dir.join("failed"), CAIRN_TIMEOUT);
    assert_eq!(exit_code(&out.status), 3, "{}", describe(&out));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("keeper pid"),
        "a keeper was started: {}",
        describe(&out)
    );
    assert!(!small.join("1").join("inventory.img").exists());
    // No userfaultfd registration is left on its memory.
    let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", c.w.pid)).unwrap();
    assert!(
        !smaps
            .lines()
            .any(|l| l.starts_with("VmFlags:") && l.split_whitespace().any(|f| f == "uw")),
        "write-protect tracking left registered after a failed pre-dump"
    );
    c.phase(1);
    c.w.terminate_original_expect_pass();
}

/// Restore checks the chain: a missing or replaced parent is an image
/// error (exit 5) naming the directory. `cairn show` lists the layers.
#[test]
fn broken_chains_are_refused_and_show_lists_layers() {
    if skip_unless_root() {
        return;
    }
    let mut c = Chain::start(&["--phases", "2"], &[]);
    c.pre_dump(1, None);
    c.phase(1);
    c.pre_dump(2, Some(1));
    c.phase(2);
    c.final_dump(3, 2);

    let show = run_cairn(
        &[os("show"), os(c.layer(3))],
        &c.ck.join("show"),
        CAIRN_TIMEOUT,
    );
    assert_ok(&show, "cairn show");
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains("=== chain (3 layers, newest first) ==="),
        "{text}"
    );
    assert!(
        text.contains("layer 2: ") && text.contains("(pre-dump, full)"),
        "{text}"
    );
    let json = run_cairn(
        &[os("show"), os("--json"), os(c.layer(3))],
        &c.ck.join("show-json"),
        CAIRN_TIMEOUT,
    );
    assert_ok(&json, "cairn show --json");
    let j = String::from_utf8_lossy(&json.stdout);
    assert!(is_valid_json(&j), "{j}");
    assert!(j.contains("\"chain\":[{\"dir\":"), "{j}");

    // A pre-dump is not restorable by itself.
    let out = restore_expect_fail(&c.layer(2), &[], c.w.pid);
    assert_eq!(exit_code(&out.status), 5, "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pre-dump"));

    // Layer 1 replaced by another checkpoint: refused, naming it.
    let l1 = c.layer(1);
    let moved = c.ck.join("1.orig");
    std::fs::rename(&l1, &moved).unwrap();
    copy_dir(&c.layer(2), &l1);
    let out = restore_expect_fail(&c.layer(3), &[], c.w.pid);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(exit_code(&out.status), 5, "{}", describe(&out));
    assert!(err.contains("was replaced") && err.contains("/1"), "{err}");
    // Layer 1 missing.
    std::fs::remove_dir_all(&l1).unwrap();
    let out = restore_expect_fail(&c.layer(3), &[], c.w.pid);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(exit_code(&out.status), 5, "{}", describe(&out));
    assert!(
        err.contains("no such directory") && err.contains("/1"),
        "{err}"
    );
    // Back in place: the chain restores.
    std::fs::rename(&moved, &l1).unwrap();
    c.restore(3);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// `pre-dump --no-bpf` and `dump --no-bpf`: the freezer reads /proc (the
/// log says so) and the chain restores as usual.
#[test]
fn chain_with_no_bpf() {
    if skip_unless_root() {
        return;
    }
    let mut c = Chain::start(&["--phases", "1"], &["--no-bpf"]);
    let out = c.run("pre-dump", 1, None, &[]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && err.contains("freeze: /proc children lists (--no-bpf)"),
        "pre-dump --no-bpf: {}",
        describe(&out)
    );
    c.phase(1);
    c.final_dump(2, 1);
    c.restore(2);
}
