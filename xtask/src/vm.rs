//! `cargo xtask vm-test [--kernel 6.1|6.12|all] [--tests a,b] [--exec CMD]
//! [--timeout S] [--mem SIZE] [-- TEST FILTERS]`: the integration tests
//! under Debian's own kernels, each in a QEMU/KVM virtual machine.
//!
//! For each kernel series:
//! 1. the newest Debian kernel package of the series (`linux-image-amd64`
//!    of bookworm for 6.1, of trixie for 6.12) is resolved and fetched with
//!    `apt-get download`, through a private apt state under `target/vm/apt/`
//!    whose sources are the mirrors this machine's apt is configured with
//!    (with the suite names changed); the `.deb` is kept in `target/vm/debs/`
//!    and in a cache outside the work tree (`~/.cache/cairn/vm`, or
//!    `$CAIRN_VM_CACHE`), so a fresh clone or a machine without network
//!    still runs from what an earlier run fetched;
//! 2. `vmlinuz` and the modules for virtio-pci, 9p and overlayfs (with what
//!    they depend on, read from each module's `.modinfo`) are extracted, and
//!    an initramfs (newc cpio, written here) gets them plus the static init
//!    of `vm-images/init.c`;
//! 3. QEMU boots it with KVM (`-cpu host`, 2 vcpus, 4 GiB) with the host's
//!    root shared read-only over virtio-9p (the init lays a tmpfs overlay on
//!    top) and a results directory shared read-write; the init runs a shell
//!    script written here that runs each test executable (built on the host
//!    by `cargo test --no-run`) with its output into the results directory;
//! 4. the results are read back: per kernel, the counts of every test
//!    binary, the reasons tests gave for skipping, and the logs of failures.
//!
//! Without /dev/kvm, QEMU or any way to get a kernel, a kernel is skipped
//! with the reason (exit code 0); set `CAIRN_VM_REQUIRED=1` to make a skip
//! an error.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{cargo, ensure_tools, on_path, parse_size, root, run, Counts, Result, GIB, MIB};

/// The test binaries run by default: the incremental checkpoints and a core
/// subset (memory, registers and sleeping syscalls, process trees), and
/// the inventories (BPF against /proc: what each kernel's iterators see).
pub const DEFAULT_TESTS: &[&str] = &[
    "incremental",
    "restore_mem",
    "restore_regs",
    "restore_tree",
    "inventory",
    "inventory_dump",
    "probe_cache",
];

/// The other test binaries of the matrix: (name, seconds, kernel). Each
/// runs under one kernel of a run: the one it names where it was measured
/// to pass (its behaviour depends on what that kernel has), else, in
/// this order, the kernel with the least estimated time so far (see
/// [`plan`]). `--tests all` runs every test binary under every kernel
/// instead.
///
/// The seconds are measured under TCG with three guests at once, the
/// kernel the one it was measured on: restore_unix, restore_signals,
/// restore_threads, restore_attrs, restore_tty, restore_sockets and
/// restore_fds on an idle host (stop 20), the others in stop 21 on a
/// 2-core host loaded by other builds, so on the high side (faults took
/// 286 s there against 150 s idle). The plan: 5.10 1058 s, 6.1 1530 s,
/// 6.12 1036 s of these on top of the defaults; scaled to an idle host,
/// the longest kernel (6.1) about 19 minutes of `--jobs 3` in all (stop
/// 20's matrix of 15 binaries took about 10). openmpi, pageserver, migrate,
/// restore_tcp and pair shape their veths with tc's tbf qdisc, loaded at
/// boot since stop 21 (`TEST_MODULES`). Stop 24 brought in slurm, run,
/// libcairn, integrity and fuzz_images: on top of the measured totals
/// before it (5.10 ~1210 s, 6.1 ~1680 s, 6.12 ~1370 s of `--jobs 3`),
/// 5.10 +125 s, 6.1 +111 s, 6.12 +480 s.
pub const SPLIT_TESTS: &[(&str, u32, Option<&str>)] = &[
    ("migrate", 459, Some("6.1")),
    ("faults", 286, Some("6.12")),
    ("restore_unix", 270, Some("5.10")),
    ("hostile_fs", 213, Some("5.10")),
    ("pageserver", 198, Some("6.1")),
    ("ux", 191, Some("6.12")),
    ("cairn_cli", 142, Some("6.1")),
    ("restore_chain", 142, Some("5.10")),
    ("chkpnt", 133, Some("5.10")),
    ("restore_signals", 120, Some("6.12")),
    ("restore_threads", 120, Some("6.12")),
    ("restore_attrs", 100, Some("6.1")),
    ("restore_tty", 90, Some("6.12")),
    ("restore_sockets", 90, Some("6.1")),
    ("real_redis", 85, Some("5.10")),
    ("restore_tcp_states", 81, Some("6.12")),
    ("restore_fds", 80, Some("5.10")),
    ("restore_shared", 80, Some("6.12")),
    ("restore_aio", 76, Some("6.1")),
    ("perms", 74, Some("6.1")),
    ("restore_fast", 69, Some("6.1")),
    ("restore_peercred", 68, Some("6.12")),
    ("hostile_images", 67, Some("6.1")),
    ("restore_cow", 66, Some("6.1")),
    ("restore_files", 66, Some("6.1")),
    ("restore_mem_files", 46, Some("5.10")),
    ("oracle", 43, Some("5.10")),
    ("restore_inet", 37, Some("5.10")),
    ("restore_pktring", 33, Some("6.1")),
    ("restore_volatile", 27, Some("6.1")),
    ("restore_odd_files", 24, Some("6.1")),
    ("pipeline", 20, Some("6.1")),
    ("stats", 19, Some("6.1")),
    ("pid_fallback", 9, Some("5.10")),
    // Stop 22 (issue 20): mended in the guests and measured there under
    // TCG on a loaded host.
    ("pair", 130, Some("6.1")),
    ("restore_mem_flags", 61, Some("6.1")),
    ("restore_fds2", 54, Some("6.1")),
    ("restore_locks", 47, Some("6.1")),
    ("restore_batch", 13, Some("6.1")),
    ("restore_fdflags", 46, Some("5.10")),
    ("restore_external", 40, Some("5.10")),
    ("restore_netlink", 38, Some("5.10")),
    ("show", 30, Some("5.10")),
    ("bgsnap", 304, Some("6.12")),
    ("restore_fds3", 18, Some("6.12")),
    // Stop 23: cairn's own parking page kept until repair is off (the
    // two 6.1 failures were that and the far-peer queue): 11 of 11 (59 s
    // on 6.1), and in CI. Stop 24: 11 of 11 on 5.10 once, in 82 s, but
    // the lead's matrix then failed `tcp_established_far_peer` there (the
    // send queue had drained before the freeze: 0 bytes unacknowledged
    // under TCG): back on 6.1 until that test's timing is mended.
    ("restore_tcp", 82, Some("6.1")),
    // Stop 24 (TCG; the seconds from 6.12 on a loaded host). libcairn:
    // its cargo build done on the host before the boot
    // (`prebuild_libcairn`), the guest's cargo finds it fresh: 6 of 6 on
    // 6.12 and on 6.1 (24 s there, host idle). integrity and fuzz_images:
    // fewer rounds in a guest (`common::in_vm_guest`: 200 mutations, 200
    // fuzz iterations): 3 of 3 on 6.12 and on 5.10 (125 s), fuzz_images
    // on 6.12 and 6.1 (17 s, host idle). slurm: a system.slice and a
    // veth in the guest (`run_script`): 3 of 3.
    ("libcairn", 79, Some("6.1")),
    ("integrity", 125, Some("5.10")),
    ("fuzz_images", 32, Some("6.1")),
    ("slurm", 280, Some("6.12")),
    // Stop 24: the two tests that killed or signalled the job at a
    // traced stop now wait for the dump's pause at `frozen` (the
    // background snapshot stops the job while it arms); 10 of 10 in
    // 178 to 242 s.
    ("run", 200, Some("6.12")),
];

/// Test binaries the plan leaves out, with the reason (`--tests all`, or
/// `--tests NAME`, runs them): too long for CI's budget, or failing in
/// the guests on the kernel they were measured on (stop 21; to be mended
/// and brought into the plan). Every other binary not in the plan is
/// listed as "not in the CI plan" (not measured in the guests yet).
pub const NOT_IN_PLAN: &[(&str, &str)] = &[(
    "openmpi",
    "573 s under TCG (5.10, stop 24), more than is left of any kernel's share of CI's \
         budget; 4 of 5 pass there, openmpi_ranks_in_two_network_namespaces's restore is \
         refused: the listener's port is held by TIME_WAIT connections of the killed job, \
         which 5.10 cannot destroy (SOCK_DESTROY of TIME_WAIT: 6.0)",
)];

/// Estimated seconds under TCG of the [`DEFAULT_TESTS`] (the first run of
/// a binary the plan does not know counts as 60 s).
const DEFAULT_SECONDS: &[(&str, u32)] = &[];

/// A kernel series and the Debian suites whose `linux-image-amd64` is of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Series {
    pub name: &'static str,
    suite: &'static str,
}

pub const SERIES: &[Series] = &[
    Series {
        name: "5.10",
        suite: "bullseye",
    },
    Series {
        name: "6.1",
        suite: "bookworm",
    },
    Series {
        name: "6.12",
        suite: "trixie",
    },
];

pub struct Args {
    pub kernels: Vec<Series>,
    /// `--tests`: these test binaries under every kernel; None: [`plan`].
    pub tests: Option<Vec<String>>,
    pub filters: Vec<String>,
    pub exec: Option<String>,
    /// Limit of one VM's whole run.
    pub timeout: Duration,
    /// Limit of one test binary inside a VM.
    pub test_timeout: Duration,
    pub mem: u64,
    /// `kvm`, `tcg`, or None: chosen by [`pick_accel`].
    pub accel: Option<String>,
    /// VMs run at the same time.
    pub jobs: usize,
    /// vcpus of each VM.
    pub smp: u32,
    /// `--table`: no VM; the kernel table from the last run's results.
    pub table_only: bool,
    /// `--write`: the table goes into the README.
    pub write_table: bool,
}

fn series(k: &str) -> Result<Series> {
    SERIES.iter().find(|s| s.name == k).copied().ok_or_else(|| {
        format!(
            "unknown kernel {k:?} ({} or all)",
            SERIES.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
        )
    })
}

pub fn parse(args: &[String]) -> Result<Args> {
    let mut a = Args {
        kernels: SERIES.to_vec(),
        tests: None,
        filters: Vec::new(),
        exec: None,
        timeout: Duration::from_secs(3000),
        test_timeout: Duration::from_secs(900),
        mem: 4 * GIB,
        accel: std::env::var("CAIRN_VM_ACCEL")
            .ok()
            .filter(|v| !v.is_empty()),
        jobs: 1,
        smp: 2,
        table_only: false,
        write_table: false,
    };
    let mut it = args.iter();
    while let Some(x) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{x} needs a value"));
        let secs = |v: &String, what: &str| -> Result<Duration> {
            Ok(Duration::from_secs(
                v.parse().map_err(|_| format!("{what} wants seconds"))?,
            ))
        };
        match x.as_str() {
            "--kernel" => {
                let k = value()?;
                a.kernels = if k == "all" {
                    SERIES.to_vec()
                } else {
                    k.split(',').map(series).collect::<Result<_>>()?
                };
            }
            "--tests" => {
                a.tests = Some(
                    value()?
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect(),
                )
            }
            "--exec" => a.exec = Some(value()?.clone()),
            "--timeout" => a.timeout = secs(value()?, "--timeout")?,
            "--test-timeout" => a.test_timeout = secs(value()?, "--test-timeout")?,
            "--mem" => a.mem = parse_size(value()?)?,
            "--jobs" => {
                a.jobs = value()?
                    .parse()
                    .ok()
                    .filter(|&j| j > 0)
                    .ok_or("--jobs wants a positive number")?
            }
            "--smp" => {
                a.smp = value()?
                    .parse()
                    .ok()
                    .filter(|&j| j > 0)
                    .ok_or("--smp wants a positive number")?
            }
            "--accel" => {
                let v = value()?;
                if v != "kvm" && v != "tcg" {
                    return Err("--accel: kvm or tcg".into());
                }
                a.accel = Some(v.clone());
            }
            "--table" => a.table_only = true,
            "--write" => a.write_table = true,
            "--" => {
                a.filters = it.by_ref().cloned().collect();
            }
            other => return Err(format!("unknown vm-test argument {other:?}")),
        }
    }
    if a.mem < 512 * MIB {
        return Err("--mem: at least 512M".into());
    }
    if a.write_table && !a.table_only {
        return Err("--write goes with --table".into());
    }
    Ok(a)
}

/// Every test binary of the workspace (tests/*.rs).
fn all_test_names() -> Result<Vec<String>> {
    let dir = root().join("tests");
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_suffix(".rs").map(String::from)
        })
        .collect();
    v.sort();
    Ok(v)
}

/// The test binaries each kernel of `a` runs. With `--tests`, those
/// (`all`: every one) under each kernel. Otherwise every kernel runs
/// [`DEFAULT_TESTS`], and each of [`SPLIT_TESTS`] goes to the kernel it
/// names if that kernel is in the run, else, in its order, to the kernel
/// with the least estimated time so far (earlier kernels first on a
/// tie): each runs once per matrix run.
pub fn plan(a: &Args) -> Result<Vec<(Series, Vec<String>)>> {
    if let Some(t) = &a.tests {
        let t = if t.iter().any(|x| x == "all") {
            all_test_names()?
        } else {
            t.clone()
        };
        return Ok(a.kernels.iter().map(|&s| (s, t.clone())).collect());
    }
    let est = |n: &str| {
        let split = SPLIT_TESTS.iter().map(|&(t, s, _)| (t, s));
        split
            .chain(DEFAULT_SECONDS.iter().copied())
            .find(|(t, _)| *t == n)
            .map_or(60, |(_, s)| s as u64)
    };
    let base: Vec<String> = DEFAULT_TESTS.iter().map(|s| s.to_string()).collect();
    let mut out: Vec<(Series, Vec<String>, u64)> = a
        .kernels
        .iter()
        .map(|&s| (s, base.clone(), base.iter().map(|t| est(t)).sum()))
        .collect();
    if out.is_empty() {
        return Ok(Vec::new());
    }
    // Those pinned to a kernel of the run first, then the others.
    let pinned = |k: &Option<&str>| k.is_some_and(|k| out.iter().any(|o| o.0.name == k));
    let order: Vec<_> = SPLIT_TESTS
        .iter()
        .filter(|x| pinned(&x.2))
        .chain(SPLIT_TESTS.iter().filter(|x| !pinned(&x.2)))
        .copied()
        .collect();
    for (t, secs, kernel) in order {
        let k = match out.iter().position(|o| Some(o.0.name) == kernel) {
            Some(k) => k,
            None => (0..out.len()).min_by_key(|&i| (out[i].2, i)).unwrap_or(0),
        };
        out[k].1.push(t.to_string());
        out[k].2 += secs as u64;
    }
    Ok(out.into_iter().map(|(s, t, _)| (s, t)).collect())
}

/// What became of one kernel.
pub enum Outcome {
    /// Ran; the test counts and whether everything passed.
    Ran(Box<Ran>),
    Skipped(String),
}

/// One kernel's run.
pub struct Ran {
    pub release: String,
    /// Passed excludes the skipped tests, which count as ignored.
    pub counts: Counts,
    pub ok: bool,
    /// The test binaries run, each with its time (None: it did not end).
    pub times: Vec<(String, Option<Duration>)>,
    /// `BINARY::TEST: reason` of every test that skipped.
    pub skips: Vec<String>,
    /// The VM's whole time (boot to power-off).
    pub elapsed: Duration,
    /// The guest kernel panicked (an oops: the command line has
    /// oops=panic) while this test binary ran.
    pub panicked_in: Option<String>,
    /// An earlier run of this kernel whose guest kernel panicked (the
    /// test binary it ran); it was run once more.
    pub earlier_panic: Option<String>,
    /// The per-kernel report (per-binary results, failure logs).
    pub text: String,
}

/// `cargo xtask vm-test ...`: exit code 0 when every kernel passed or was
/// skipped (1 for a skip with CAIRN_VM_REQUIRED=1, or a kernel table that
/// differs from the README's after a full matrix run).
pub fn vm_test(args: &[String]) -> Result<u8> {
    let a = parse(args)?;
    if a.table_only {
        return table_command(&a);
    }
    ensure_tools()?;
    run(cargo().args(["build", "--release"]))?;
    let outcomes = run_all(&a)?;
    let mut code = report(&outcomes);
    if table_after_run(&a, &outcomes)? && code == 0 {
        code = 1;
    }
    Ok(code)
}

/// Prints the per-kernel reports and the summary; the exit code.
pub fn report(outcomes: &[(Series, Outcome)]) -> u8 {
    let required = std::env::var("CAIRN_VM_REQUIRED").is_ok_and(|v| v == "1");
    let mut code = 0;
    for (_, o) in outcomes {
        if let Outcome::Ran(r) = o {
            print!("{}", r.text);
        }
    }
    println!("vm-test summary:");
    for (s, o) in outcomes {
        match o {
            Outcome::Ran(r) => {
                println!(
                    "  kernel {} ({}): {} in {:.0} s: {} test binaries, {} passed, {} failed, {} \
                     ignored or skipped",
                    s.name,
                    r.release,
                    if r.ok { "ok" } else { "FAILED" },
                    r.elapsed.as_secs_f64(),
                    r.times.len(),
                    r.counts.passed,
                    r.counts.failed,
                    r.counts.ignored
                );
                let times: Vec<String> = r
                    .times
                    .iter()
                    .map(|(n, d)| match d {
                        Some(d) => format!("{n} {:.0} s", d.as_secs_f64()),
                        None => format!("{n} (did not end)"),
                    })
                    .collect();
                println!("    ran: {}", times.join(", "));
                // A plan run (every kernel has the defaults): what it left out.
                let plan_run = DEFAULT_TESTS
                    .iter()
                    .all(|d| r.times.iter().any(|(n, _)| n == d));
                for l in not_run_here(s, outcomes).into_iter().filter(|_| plan_run) {
                    println!("    {l}");
                }
                if r.skips.is_empty() {
                    println!("    skipped: none");
                }
                for sk in &r.skips {
                    println!("    skipped {sk}");
                }
                if let Some(t) = &r.earlier_panic {
                    println!(
                        "    the guest kernel panicked in an earlier run (during {t}); that run \
                         was repeated once (its oops is printed above and kept in \
                         target/vm/{}/console-panic.log)",
                        s.name
                    );
                }
                if let Some(t) = &r.panicked_in {
                    println!("    the guest kernel panicked during {t} (oops printed above)");
                }
                if !r.ok {
                    code = 1;
                }
            }
            Outcome::Skipped(why) => {
                println!("  kernel {}: SKIPPED: {why}", s.name);
                if required {
                    code = 1;
                }
            }
        }
    }
    code
}

/// The summary lines of kernel `s` about the test binaries it did not
/// run: those run under another kernel of this run, and those no kernel
/// ran, each with why ([`NOT_IN_PLAN`], or not in the CI plan).
fn not_run_here(s: &Series, outcomes: &[(Series, Outcome)]) -> Vec<String> {
    let ran_by = |o: &Outcome| -> BTreeSet<String> {
        match o {
            Outcome::Ran(r) => r.times.iter().map(|(n, _)| n.clone()).collect(),
            Outcome::Skipped(_) => BTreeSet::new(),
        }
    };
    let mine = outcomes
        .iter()
        .find(|(k, _)| k == s)
        .map(|(_, o)| ran_by(o))
        .unwrap_or_default();
    let mut elsewhere = Vec::new();
    let mut nowhere = Vec::new();
    for t in all_test_names().unwrap_or_default() {
        if mine.contains(&t) {
            continue;
        }
        let other: Vec<&str> = outcomes
            .iter()
            .filter(|(_, o)| ran_by(o).contains(&t))
            .map(|(k, _)| k.name)
            .collect();
        if !other.is_empty() {
            elsewhere.push(format!("{t} ({})", other.join(", ")));
            continue;
        }
        let why = NOT_IN_PLAN
            .iter()
            .find(|(n, _)| *n == t)
            .map_or("not in the CI plan", |(_, w)| w);
        nowhere.push(format!("{t} ({why})"));
    }
    let mut out = Vec::new();
    if !elsewhere.is_empty() {
        out.push(format!(
            "not run here, run under another kernel: {}",
            elsewhere.join(", ")
        ));
    }
    if !nowhere.is_empty() {
        out.push(format!(
            "not run in this run (`--tests all` runs every binary): {}",
            nowhere.join("; ")
        ));
    }
    out
}

/// Runs every kernel of `a`, `a.jobs` VMs at a time (the tests are built
/// first); the outcomes in the order of `a.kernels`.
pub fn run_all(a: &Args) -> Result<Vec<(Series, Outcome)>> {
    let skip_all = |why: String| -> Vec<(Series, Outcome)> {
        a.kernels
            .iter()
            .map(|&s| (s, Outcome::Skipped(why.clone())))
            .collect()
    };
    let accel = match pick_accel(a.accel.as_deref()) {
        Ok(x) => x,
        Err(why) => return Ok(skip_all(why)),
    };
    if let Err(e) = ensure_qemu() {
        return Ok(skip_all(format!("QEMU unavailable: {e}")));
    }
    let vm = root().join("target/vm");
    mkdir(&vm)?;
    let init = build_init(&vm)?;
    let plan = plan(a)?;
    let wanted: BTreeSet<String> = plan.iter().flat_map(|(_, t)| t.iter().cloned()).collect();
    let exes: BTreeMap<String, PathBuf> = if a.exec.is_some() || wanted.is_empty() {
        BTreeMap::new()
    } else {
        let names: Vec<String> = wanted.into_iter().collect();
        if names.iter().any(|n| n == "libcairn") {
            prebuild_libcairn()?;
        }
        test_executables(&names)?.into_iter().collect()
    };
    // The kernels are fetched one after the other (apt's output stays
    // readable), then run `jobs` at a time.
    let mut ready = Vec::new();
    let mut out: Vec<Option<(Series, Outcome)>> = Vec::new();
    for (s, tests) in plan {
        match fetch_kernel(&vm, s) {
            Ok(k) => {
                let ex: Vec<(String, PathBuf)> = tests
                    .iter()
                    .filter_map(|t| exes.get(t).map(|p| (t.clone(), p.clone())))
                    .collect();
                ready.push((out.len(), s, k, ex));
                out.push(None);
            }
            Err(why) => {
                eprintln!("xtask: vm-test {}: skipped: {why}", s.name);
                out.push(Some((s, Outcome::Skipped(why))));
            }
        }
    }
    let queue = std::sync::Mutex::new(ready.into_iter());
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|sc| {
        for _ in 0..a.jobs.max(1) {
            sc.spawn(|| loop {
                let next = queue.lock().map(|mut q| q.next()).ok().flatten();
                let Some((i, s, k, ex)) = next else { break };
                let r = run_kernel(&vm, s, &k, &init, &ex, a, &accel);
                if let Ok(mut v) = results.lock() {
                    v.push((i, s, r));
                }
            });
        }
    });
    for (i, s, r) in results.into_inner().map_err(|_| "a VM thread panicked")? {
        out[i] = Some((s, r?));
    }
    Ok(out.into_iter().flatten().collect())
}

/// Boots one kernel and runs its tests; a guest kernel oops is the
/// kernel's failure, not a test's: it is reported with its trace, and the
/// kernel's run is repeated once. A second panic fails the run.
fn run_kernel(
    vm: &Path,
    s: Series,
    kernel: &Kernel,
    init: &Path,
    exes: &[(String, PathBuf)],
    a: &Args,
    accel: &Accel,
) -> Result<Outcome> {
    let o = boot_and_run(vm, s, kernel, init, exes, a, accel)?;
    let Some(t) = o.panicked_in.clone() else {
        return Ok(Outcome::Ran(Box::new(o)));
    };
    let kdir = vm.join(s.name);
    let _ = std::fs::copy(kdir.join("console.log"), kdir.join("console-panic.log"));
    eprintln!(
        "xtask: vm-test {}: the guest kernel panicked during {t}; running this kernel once more",
        s.name
    );
    let mut again = boot_and_run(vm, s, kernel, init, exes, a, accel)?;
    again.earlier_panic = Some(t);
    again.text = format!("{}{}", o.text, again.text);
    Ok(Outcome::Ran(Box::new(again)))
}

fn mkdir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).map_err(|e| format!("{}: {e}", p.display()))
}

/// How QEMU runs the guest: its arguments and why.
pub struct Accel {
    args: Vec<&'static str>,
    why: String,
}

/// KVM where the host's KVM runs ordinary guests (kvm_intel or kvm_amd);
/// TCG, QEMU's own emulation, where /dev/kvm is PVM (kvm_pvm: it boots only
/// kernels built as PVM guests, which Debian's are not) or missing.
pub fn pick_accel(forced: Option<&str>) -> Result<Accel> {
    let kvm_opens = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm");
    let hw = ["kvm_intel", "kvm_amd"]
        .iter()
        .any(|m| Path::new("/sys/module").join(m).exists());
    let pvm = Path::new("/sys/module/kvm_pvm").exists();
    let kvm = Accel {
        args: vec!["-enable-kvm", "-cpu", "host,-arch-capabilities"],
        why: "KVM".into(),
    };
    let tcg = |why: String| Accel {
        args: vec!["-accel", "tcg,thread=multi,tb-size=512", "-cpu", "max"],
        why,
    };
    match forced {
        Some("kvm") => match kvm_opens {
            Ok(_) => Ok(kvm),
            Err(e) => Err(format!("--accel kvm: /dev/kvm: {e}")),
        },
        Some(_) => Ok(tcg("TCG (asked for)".into())),
        None => Ok(match kvm_opens {
            Ok(_) if hw => kvm,
            Ok(_) if pvm => tcg(
                "TCG: this host's /dev/kvm is PVM (kvm_pvm), which boots only PVM guest kernels"
                    .into(),
            ),
            Ok(_) => tcg("TCG: /dev/kvm is neither kvm_intel nor kvm_amd".into()),
            Err(e) => tcg(format!("TCG: /dev/kvm: {e}")),
        }),
    }
}

fn ensure_qemu() -> Result<()> {
    if on_path("qemu-system-x86_64") {
        return Ok(());
    }
    eprintln!("xtask: installing qemu-system-x86");
    let apt = |args: &[&str]| {
        run(Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    apt(&["update"])?;
    apt(&[
        "install",
        "-y",
        "--no-install-recommends",
        "qemu-system-x86",
    ])?;
    if on_path("qemu-system-x86_64") {
        Ok(())
    } else {
        Err("qemu-system-x86_64 still missing after installing qemu-system-x86".into())
    }
}

/// Compiles vm-images/init.c (static) into target/vm/init.
fn build_init(vm: &Path) -> Result<PathBuf> {
    let src = root().join("vm-images/init.c");
    let out = vm.join("init");
    let fresh = |o: &Path| -> Option<bool> {
        let so = std::fs::metadata(&src).ok()?.modified().ok()?;
        let oo = std::fs::metadata(o).ok()?.modified().ok()?;
        Some(oo >= so)
    };
    if fresh(&out) != Some(true) {
        run(Command::new("gcc")
            .args(["-static", "-O2", "-Wall", "-Werror", "-o"])
            .arg(&out)
            .arg(&src))?;
    }
    Ok(out)
}

// ---------------------------------------------------------------- tests

/// Builds the test binaries NAMES (`cargo test --release --no-run`) and
/// returns (name, executable) for each.
fn test_executables(names: &[String]) -> Result<Vec<(String, PathBuf)>> {
    let mut cmd = cargo();
    cmd.args(["test", "--release", "--no-run", "--message-format=json"]);
    for n in names {
        cmd.args(["--test", n]);
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?}: {}", out.status));
    }
    let mut found = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if !line.contains("\"reason\":\"compiler-artifact\"") {
            continue;
        }
        let (Some(exe), Some(name)) = (json_str(line, "executable"), target_name(line)) else {
            continue;
        };
        if names.contains(&name) {
            found.insert(name, PathBuf::from(exe));
        }
    }
    names
        .iter()
        .map(|n| {
            found
                .remove(n)
                .map(|p| (n.clone(), p))
                .ok_or_else(|| format!("cargo built no test executable {n}"))
        })
        .collect()
}

/// What tests/libcairn.rs builds with cargo (the same command, into its
/// CARGO_TARGET_TMPDIR), built on the host before the guests boot: in a
/// guest the test's own cargo (the host's toolchain, on the PATH
/// [`run_script`] gives it) finds it up to date instead of compiling
/// under emulation.
fn prebuild_libcairn() -> Result<()> {
    run(cargo()
        .args(["build", "--release", "-p", "libcairn", "--lib"])
        .args(["--example", "libcairn_counter", "--target-dir"])
        .arg(root().join("target/tmp/libcairn-target")))
}

/// The string value of the first `"key":"..."` in a JSON line (no escapes
/// are expected in paths and target names).
fn json_str<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":\"");
    let start = line.find(&pat)? + pat.len();
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

/// The target name of a compiler-artifact line of a test target.
fn target_name(line: &str) -> Option<String> {
    let t = &line[line.find("\"target\":{")?..];
    if !t.contains("\"kind\":[\"test\"]") {
        return None;
    }
    json_str(t, "name").map(String::from)
}

// ---------------------------------------------------------------- kernels

/// A kernel ready to boot.
pub struct Kernel {
    /// `uname -r` of it, e.g. 6.1.0-57-amd64.
    release: String,
    vmlinuz: PathBuf,
    initramfs: PathBuf,
}

/// The configured Debian mirrors: (archive URI, security URI).
fn debian_mirrors() -> Result<(String, Option<String>)> {
    if let Ok(m) = std::env::var("CAIRN_VM_MIRROR") {
        return Ok((m, std::env::var("CAIRN_VM_SECURITY_MIRROR").ok()));
    }
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut v: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        v.sort();
        files.extend(v);
    }
    let mut entries = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        match f.extension().and_then(|e| e.to_str()) {
            Some("sources") => entries.extend(parse_deb822(&text)),
            Some("list") => entries.extend(parse_one_line(&text)),
            _ => {}
        }
    }
    mirrors_of(&entries).ok_or_else(|| {
        "no Debian archive among the configured apt sources (set CAIRN_VM_MIRROR)".to_string()
    })
}

/// (URI, suite) of each `deb` entry with component main.
fn parse_deb822(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let mut types = "";
        let mut uris = Vec::new();
        let mut suites = Vec::new();
        let mut main = false;
        for l in para.lines() {
            let l = l.trim();
            if l.starts_with('#') {
                continue;
            }
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            match k.trim() {
                "Types" => types = v,
                "URIs" => uris = v.split_whitespace().collect(),
                "Suites" => suites = v.split_whitespace().collect(),
                "Components" => main = v.split_whitespace().any(|c| c == "main"),
                "Enabled" if v.trim() == "no" => uris.clear(),
                _ => {}
            }
        }
        if types.split_whitespace().any(|t| t == "deb") && main {
            for u in &uris {
                for s in &suites {
                    out.push((u.to_string(), s.to_string()));
                }
            }
        }
    }
    out
}

fn parse_one_line(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for l in text.lines() {
        let l = l.trim();
        let Some(rest) = l.strip_prefix("deb ") else {
            continue;
        };
        let mut w = rest.split_whitespace().peekable();
        if w.peek().is_some_and(|x| x.starts_with('[')) {
            for x in w.by_ref() {
                if x.ends_with(']') {
                    break;
                }
            }
        }
        let (Some(uri), Some(suite)) = (w.next(), w.next()) else {
            continue;
        };
        if w.any(|c| c == "main") {
            out.push((uri.to_string(), suite.to_string()));
        }
    }
    out
}

/// Debian's release names, for telling the archive from third-party sources.
const DEBIAN_SUITES: &[&str] = &[
    "buster",
    "bullseye",
    "bookworm",
    "trixie",
    "forky",
    "sid",
    "stable",
    "testing",
    "unstable",
    "oldstable",
];

fn mirrors_of(entries: &[(String, String)]) -> Option<(String, Option<String>)> {
    let base = |s: &str| s.split('-').next().unwrap_or(s).to_string();
    let archive = entries
        .iter()
        .find(|(_, s)| !s.contains('-') && DEBIAN_SUITES.contains(&s.as_str()))?
        .0
        .clone();
    let security = entries
        .iter()
        .find(|(_, s)| s.ends_with("-security") && DEBIAN_SUITES.contains(&base(s).as_str()))
        .map(|(u, _)| u.clone());
    Some((archive, security))
}

/// Where fetched packages are kept across clones.
fn persistent_cache() -> PathBuf {
    if let Some(c) = std::env::var_os("CAIRN_VM_CACHE") {
        return PathBuf::from(c);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/cairn/vm")
}

/// A private apt for one suite: its options for apt-get/apt-cache.
fn apt_opts(vm: &Path, s: Series) -> Result<Vec<String>> {
    let (archive, security) = debian_mirrors()?;
    let dir = vm.join("apt").join(s.suite);
    for d in ["lists/partial", "cache/archives/partial", "parts", "prefs"] {
        mkdir(&dir.join(d))?;
    }
    let keyring = Path::new("/usr/share/keyrings/debian-archive-keyring.gpg");
    let opts = if keyring.exists() {
        format!("[signed-by={}] ", keyring.display())
    } else {
        String::new()
    };
    let mut list = format!("deb {opts}{archive} {} main\n", s.suite);
    if let Some(sec) = security {
        list.push_str(&format!("deb {opts}{sec} {}-security main\n", s.suite));
    }
    let sources = dir.join("sources.list");
    std::fs::write(&sources, list).map_err(|e| format!("{}: {e}", sources.display()))?;
    let o = |k: &str, v: &Path| vec!["-o".to_string(), format!("{k}={}", v.display())];
    let mut v = Vec::new();
    v.extend(o("Dir::Etc::SourceList", &sources));
    v.extend(o("Dir::Etc::SourceParts", &dir.join("parts")));
    v.extend(o("Dir::Etc::PreferencesParts", &dir.join("prefs")));
    v.extend(o("Dir::Etc::Preferences", &dir.join("prefs/none")));
    v.extend(o("Dir::State::Lists", &dir.join("lists")));
    v.extend(o("Dir::Cache", &dir.join("cache")));
    v.extend(["-o".into(), "APT::Sandbox::User=root".into()]);
    v.extend(["-o".into(), "Acquire::Retries=3".into()]);
    Ok(v)
}

/// Runs a command up to three times; its stdout.
fn retry(what: &str, mut make: impl FnMut() -> Command) -> Result<String> {
    let mut last = String::new();
    for attempt in 1..=3 {
        let mut c = make();
        match c.stdin(Stdio::null()).output() {
            Ok(o) if o.status.success() => return Ok(String::from_utf8_lossy(&o.stdout).into()),
            Ok(o) => {
                last = format!(
                    "{what}: {}: {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                )
            }
            Err(e) => last = format!("{what}: {e}"),
        }
        if attempt < 3 {
            eprintln!("xtask: {last}; retrying");
            std::thread::sleep(Duration::from_secs(5 * attempt));
        }
    }
    Err(last)
}

/// The name of the newest kernel package of the series, e.g.
/// linux-image-6.1.0-57-amd64, from the suite's `linux-image-amd64`.
fn resolve_package(opts: &[String], s: Series) -> Result<String> {
    retry(&format!("apt-get update ({})", s.suite), || {
        let mut c = Command::new("apt-get");
        c.args(opts).arg("update");
        c
    })?;
    let deps = retry("apt-cache depends linux-image-amd64", || {
        let mut c = Command::new("apt-cache");
        c.args(opts).args(["depends", "linux-image-amd64"]);
        c
    })?;
    let want = format!("linux-image-{}.", s.name);
    deps.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with(&want))
        .map(String::from)
        .ok_or_else(|| {
            format!(
                "linux-image-amd64 of {} is not a {} kernel:\n{deps}",
                s.suite, s.name
            )
        })
}

/// The newest cached .deb of the series in `dirs`.
fn cached_deb(dirs: &[PathBuf], s: Series, pkg: Option<&str>) -> Option<PathBuf> {
    let prefix = match pkg {
        Some(p) => format!("{p}_"),
        None => format!("linux-image-{}.", s.name),
    };
    let mut found: Vec<PathBuf> = dirs
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|rd| rd.flatten().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with(&prefix) && n.ends_with("_amd64.deb") && !n.contains("-dbg")
            })
        })
        .collect();
    found.sort_by_key(|p| version_key(p));
    found.pop()
}

/// Sort key of linux-image-6.1.0-57-amd64_6.1.192-3_amd64.deb: the numbers
/// of the package version.
fn version_key(p: &Path) -> Vec<u64> {
    let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let ver = n.split('_').nth(1).unwrap_or("");
    ver.split(|c: char| !c.is_ascii_digit())
        .filter(|x| !x.is_empty())
        .filter_map(|x| x.parse().ok())
        .collect()
}

/// Gets the series' kernel package (network, else a cache), extracts it
/// once and builds its initramfs.
fn fetch_kernel(vm: &Path, s: Series) -> Result<Kernel> {
    let debs = vm.join("debs");
    mkdir(&debs)?;
    let cache = persistent_cache();
    let dirs = [debs.clone(), cache.clone()];
    let fetched = apt_opts(vm, s).and_then(|opts| {
        let pkg = resolve_package(&opts, s)?;
        if let Some(d) = cached_deb(&dirs, s, Some(&pkg)) {
            return Ok(d);
        }
        eprintln!("xtask: vm-test {}: fetching {pkg}", s.name);
        retry(&format!("apt-get download {pkg}"), || {
            let mut c = Command::new("apt-get");
            c.current_dir(&debs).args(&opts).args(["download", &pkg]);
            c
        })?;
        cached_deb(std::slice::from_ref(&debs), s, Some(&pkg))
            .ok_or_else(|| format!("apt-get download {pkg} left no .deb in {}", debs.display()))
    });
    // Without the archive (no network, a mirror down), the newest package
    // of the series fetched before will do.
    let deb = match fetched {
        Ok(d) => d,
        Err(e) => match cached_deb(&dirs, s, None) {
            Some(d) => {
                eprintln!(
                    "xtask: vm-test {}: no kernel from the Debian archive ({e}); using the cached {}",
                    s.name,
                    d.display()
                );
                d
            }
            None => return Err(format!("no {} kernel: {e}; none cached", s.name)),
        },
    };
    // Keep a copy outside the work tree for fresh clones.
    if let Some(name) = deb.file_name() {
        if !deb.starts_with(&cache) && mkdir(&cache).is_ok() {
            let dst = cache.join(name);
            if !dst.exists() {
                let tmp = cache.join(format!(".{}.tmp", name.to_string_lossy()));
                if std::fs::copy(&deb, &tmp).is_ok() {
                    let _ = std::fs::rename(&tmp, &dst);
                }
            }
        }
    }
    prepare_kernel(vm, s, &deb)
}

/// Extracts vmlinuz and the needed modules of `deb` (once per package) and
/// writes the initramfs.
fn prepare_kernel(vm: &Path, s: Series, deb: &Path) -> Result<Kernel> {
    let kdir = vm.join(s.name);
    let stamp = kdir.join("package");
    let deb_name = deb
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .to_string();
    // The stamp names the package and the modules taken from it.
    let stamp_text = format!(
        "{deb_name}\n{}\n{}",
        BOOT_MODULES.join(","),
        TEST_MODULES.join(",")
    );
    let ready = std::fs::read_to_string(&stamp).is_ok_and(|t| t.trim() == stamp_text);
    let modules_out = kdir.join("modules");
    if !ready {
        let _ = std::fs::remove_dir_all(&kdir);
        let x = kdir.join("x");
        mkdir(&x)?;
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&x))?;
        let boot = x.join("boot");
        let vmlinuz = std::fs::read_dir(&boot)
            .map_err(|e| format!("{}: {e}", boot.display()))?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("vmlinuz-"))
            })
            .ok_or_else(|| format!("no vmlinuz in {deb_name}"))?;
        let release = vmlinuz
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("vmlinuz-"))
            .unwrap_or_default()
            .to_string();
        let mods = ["lib/modules", "usr/lib/modules"]
            .iter()
            .map(|d| x.join(d).join(&release))
            .find(|d| d.is_dir())
            .ok_or_else(|| format!("no modules of {release} in {deb_name}"))?;
        mkdir(&modules_out)?;
        let order = pick_modules(&mods, BOOT_MODULES, TEST_MODULES)?;
        let mut list = String::new();
        for (name, path) in &order {
            let bytes = read_module(path)?;
            let file = format!("{name}.ko");
            std::fs::write(modules_out.join(&file), bytes).map_err(|e| format!("{file}: {e}"))?;
            list.push_str(&file);
            list.push('\n');
        }
        std::fs::write(modules_out.join("list"), list).map_err(|e| format!("modules list: {e}"))?;
        std::fs::rename(&vmlinuz, kdir.join("vmlinuz")).map_err(|e| format!("vmlinuz: {e}"))?;
        let config = boot.join(format!("config-{release}"));
        let _ = std::fs::rename(&config, kdir.join("config"));
        std::fs::write(kdir.join("release"), &release).map_err(|e| format!("release: {e}"))?;
        let _ = std::fs::remove_dir_all(&x);
        std::fs::write(&stamp, &stamp_text).map_err(|e| format!("{}: {e}", stamp.display()))?;
    }
    let release = std::fs::read_to_string(kdir.join("release"))
        .map_err(|e| format!("{}: {e}", kdir.join("release").display()))?
        .trim()
        .to_string();
    Ok(Kernel {
        release,
        vmlinuz: kdir.join("vmlinuz"),
        initramfs: kdir.join("initramfs.cpio"),
    })
}

/// Module name as the kernel knows it (`-` and `_` are the same).
fn mod_name(file: &str) -> String {
    file.split(".ko").next().unwrap_or(file).replace('-', "_")
}

/// The modules the guest needs to boot: virtio-pci, 9p, overlayfs.
const BOOT_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay"];

/// Modules the tests need that Debian builds as modules, loaded at boot
/// (the guest has no modprobe for the kernel to load them on demand): the
/// socket diagnostics (dumps read socket state through them), nftables
/// (the --tcp-established network lock), veth, tun and the tbf qdisc
/// (network namespace tests), loop. Left out where the kernel has them built in or not at all.
const TEST_MODULES: &[&str] = &[
    "inet_diag",
    "tcp_diag",
    "udp_diag",
    "raw_diag",
    "unix_diag",
    "netlink_diag",
    // packet_diag's module (CONFIG_PACKET_DIAG).
    "af_packet_diag",
    // libcrc32c (of nf_tables) asks the crypto API for crc32c.
    "crc32c_generic",
    "crc32c_intel",
    "nf_tables",
    "veth",
    "tun",
    // tc's tbf qdisc (tests/common/netns.rs: a veth's bandwidth).
    "sch_tbf",
    // /dev/loop0 (a block device fd the dump must refuse).
    "loop",
];

/// The modules `roots` and `optional` need, dependencies first, as (name,
/// file); modules built into the kernel (modules.builtin) are left out,
/// and so are `optional` ones the package does not have.
fn pick_modules(dir: &Path, roots: &[&str], optional: &[&str]) -> Result<Vec<(String, PathBuf)>> {
    let mut index = BTreeMap::new();
    let mut stack = vec![dir.join("kernel")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)
            .map_err(|e| format!("{}: {e}", d.display()))?
            .flatten()
        {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
                if n.contains(".ko") {
                    index.insert(mod_name(n), p.clone());
                }
            }
        }
    }
    let builtin: BTreeSet<String> = std::fs::read_to_string(dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.rsplit('/').next())
        .map(mod_name)
        .collect();
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    fn visit(
        name: &str,
        index: &BTreeMap<String, PathBuf>,
        builtin: &BTreeSet<String>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<(String, PathBuf)>,
    ) -> Result<()> {
        let name = name.replace('-', "_");
        if !seen.insert(name.clone()) {
            return Ok(());
        }
        let Some(path) = index.get(&name) else {
            if builtin.contains(&name) {
                return Ok(());
            }
            return Err(format!("module {name} neither in the package nor built in"));
        };
        for dep in module_depends(&read_module(path)?) {
            visit(&dep, index, builtin, seen, order)?;
        }
        order.push((name, path.clone()));
        Ok(())
    }
    for r in roots {
        visit(r, &index, &builtin, &mut seen, &mut order)?;
    }
    for r in optional {
        if index.contains_key(*r) {
            visit(r, &index, &builtin, &mut seen, &mut order)?;
        }
    }
    Ok(order)
}

/// A module file's bytes, decompressed (.ko.xz, .ko.zst, .ko.gz).
fn read_module(p: &Path) -> Result<Vec<u8>> {
    let n = p.to_string_lossy();
    let tool = if n.ends_with(".xz") {
        Some("xz")
    } else if n.ends_with(".zst") {
        Some("zstd")
    } else if n.ends_with(".gz") {
        Some("gzip")
    } else {
        None
    };
    match tool {
        None => std::fs::read(p).map_err(|e| format!("{n}: {e}")),
        Some(t) => {
            let o = Command::new(t)
                .arg("-dc")
                .arg(p)
                .output()
                .map_err(|e| format!("{t} -dc {n}: {e}"))?;
            if o.status.success() {
                Ok(o.stdout)
            } else {
                Err(format!("{t} -dc {n}: {}", o.status))
            }
        }
    }
}

/// The `depends=` of a module's .modinfo.
fn module_depends(ko: &[u8]) -> Vec<String> {
    let pat = b"\0depends=";
    let Some(i) = ko.windows(pat.len()).position(|w| w == pat) else {
        return Vec::new();
    };
    let rest = &ko[i + pat.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

// ---------------------------------------------------------------- initramfs

/// A newc cpio archive in memory.
#[derive(Default)]
struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }
    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }
    fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, 0o100000 | mode, (0, 0), data);
    }
    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.buf
    }
}

fn write_initramfs(k: &Kernel, kdir: &Path, init: &Path) -> Result<()> {
    let mut c = Cpio::default();
    for d in ["dev", "proc", "sys", "host", "rw", "newroot", "modules"] {
        c.dir(d);
    }
    c.entry("dev/console", 0o020600, (5, 1), &[]);
    let init_bytes = std::fs::read(init).map_err(|e| format!("{}: {e}", init.display()))?;
    c.file("init", 0o755, &init_bytes);
    let mods = kdir.join("modules");
    let list =
        std::fs::read_to_string(mods.join("list")).map_err(|e| format!("modules list: {e}"))?;
    for m in list.lines().filter(|l| !l.is_empty()) {
        let b = std::fs::read(mods.join(m)).map_err(|e| format!("{m}: {e}"))?;
        c.file(&format!("modules/{m}"), 0o644, &b);
    }
    c.file("modules/list", 0o644, list.as_bytes());
    std::fs::write(&k.initramfs, c.finish()).map_err(|e| format!("{}: {e}", k.initramfs.display()))
}

// ---------------------------------------------------------------- running

/// Single-quotes a string for sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn run_script(s: Series, exes: &[(String, PathBuf)], a: &Args) -> String {
    let root = root();
    let mut t = String::from("#!/bin/sh\n# written by cargo xtask vm-test\n");
    t.push_str(&format!(
        "echo \"cairn-vm: kernel $(uname -r), $(nproc) cpus\"\ncd {} || exit 100\nexport CAIRN_VM_KERNEL={}\n",
        sh_quote(&root.to_string_lossy()),
        s.name
    ));
    // Tests that skip write BINARY::TEST: reason here (tests/common).
    t.push_str("export CAIRN_SKIP_LOG=/out/skips.log\n");
    // What systemd makes on a host with cgroup v2: the controllers
    // enabled below the root and a system.slice. Slurm's cgroup/v2 with
    // IgnoreSystemd (tests/slurm.rs, xtask/src/slurm.rs `cgroup_conf`)
    // puts slurmstepd's scope there and fails without it.
    t.push_str(
        "if [ -f /sys/fs/cgroup/cgroup.controllers ] && [ ! -d /run/systemd/system ]; then\n\
         \tfor c in $(cat /sys/fs/cgroup/cgroup.controllers); do echo \"+$c\" > /sys/fs/cgroup/cgroup.subtree_control; done 2>/dev/null\n\
         \tmkdir -p /sys/fs/cgroup/system.slice\n\
         fi\n",
    );
    // The guest has no network card, only lo, which a host never is:
    // getaddrinfo's AI_ADDRCONFIG does not count 127.0.0.1 (Slurm's
    // lookups, slurmd's listening port: "Name or service not known"), and
    // Open MPI's out-of-band TCP ignores loopback interfaces ("No network
    // interfaces were found", tests/slurm.rs's MPI job). A veth pair up,
    // with an address of TEST-NET-1, stands in for the host's card.
    t.push_str(
        "ip link add cairn-vm0 type veth peer name cairn-vm1 && \
         ip addr add 192.0.2.1/24 dev cairn-vm0 && ip link set cairn-vm1 up && \
         ip link set cairn-vm0 up || echo 'cairn-vm: no veth cairn-vm0'\n",
    );
    // The host's toolchain (the guest sees the host's root), for the
    // tests that run cargo (libcairn: what it builds is built on the
    // host first, `prebuild_libcairn`); the guest has no network.
    if let Some(dir) = std::env::var_os("CARGO")
        .map(PathBuf::from)
        .and_then(|c| c.parent().map(Path::to_path_buf))
    {
        t.push_str(&format!(
            "export PATH={}:$PATH\nexport CARGO_NET_OFFLINE=true\n",
            sh_quote(&dir.to_string_lossy())
        ));
    }
    // The init's descriptor limit is the kernel's (hard 4096): a restore
    // of a program that raised its own beyond (redis: 10032) is refused
    // by a cairn below it, as on a host with a low limit.
    t.push_str("ulimit -n 65536\n");
    let cairn = sh_quote(&root.join("target/release/cairn").to_string_lossy());
    t.push_str(&format!(
        "{cairn} check > /out/check.txt 2>&1\n{cairn} check --json > /out/check.json 2>/dev/null\n"
    ));
    if let Some(cmd) = &a.exec {
        t.push_str(&format!(
            "echo 'cairn-vm: exec'\n( {cmd} ) > /out/exec.log 2>&1\nrc=$?\necho \"exec $rc\" >> /out/results\necho \"cairn-vm: exec exit $rc\"\n"
        ));
    }
    let filters: Vec<String> = a.filters.iter().map(|f| sh_quote(f)).collect();
    // timeout(1) from the host's root: a binary that hangs is killed (exit
    // 124, or 137 after the grace time) and the next one runs.
    for (name, exe) in exes {
        t.push_str(&format!(
            "echo 'cairn-vm: test {name}'\ntimeout -k 20 {} {} --nocapture {} > /out/{name}.log 2>&1\nrc=$?\necho \"{name} $rc\" >> /out/results\necho \"cairn-vm: test {name} exit $rc\"\n",
            a.test_timeout.as_secs(),
            sh_quote(&exe.to_string_lossy()),
            filters.join(" ")
        ));
    }
    t.push_str("echo done >> /out/results\nsync\nexit 0\n");
    t
}

fn boot_and_run(
    vm: &Path,
    s: Series,
    k: &Kernel,
    init: &Path,
    exes: &[(String, PathBuf)],
    a: &Args,
    accel: &Accel,
) -> Result<Ran> {
    let kdir = vm.join(s.name);
    write_initramfs(k, &kdir, init)?;
    let out = kdir.join("out");
    let _ = std::fs::remove_dir_all(&out);
    mkdir(&out)?;
    let script = kdir.join("run.sh");
    std::fs::write(&script, run_script(s, exes, a))
        .map_err(|e| format!("{}: {e}", script.display()))?;
    let console = kdir.join("console.log");
    let mut log =
        std::fs::File::create(&console).map_err(|e| format!("{}: {e}", console.display()))?;
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(&accel.args)
        .arg("-smp")
        .arg(a.smp.to_string())
        .arg("-m")
        .arg(format!("{}M", a.mem / MIB))
        .args([
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
        ])
        .args(["-nic", "none"])
        .arg("-kernel")
        .arg(&k.vmlinuz)
        .arg("-initrd")
        .arg(&k.initramfs)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 loglevel=4 panic=-1 oops=panic rdinit=/init cairn.script={}",
            script.display()
        ))
        .args([
            "-fsdev",
            "local,id=host,path=/,security_model=none,readonly=on,multidevs=remap",
            "-device",
            "virtio-9p-pci,fsdev=host,mount_tag=host",
            "-fsdev",
        ])
        .arg(format!(
            "local,id=out,path={},security_model=none",
            out.display()
        ))
        .args(["-device", "virtio-9p-pci,fsdev=out,mount_tag=out"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!(
        "xtask: vm-test {}: booting {} ({}, {} vcpus, {} of memory), {} test binaries, console in {}",
        s.name,
        k.release,
        accel.why,
        a.smp,
        super::size_label(a.mem),
        exes.len(),
        console.display()
    );
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("qemu-system-x86_64: {e}"))?;
    let pid = child.id();
    // The console: into the log, and the init's lines onto stderr, each
    // with the time it arrived (for the test binaries' times).
    let stdout = child.stdout.take();
    let name = s.name;
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        if let Some(o) = stdout {
            for line in BufReader::new(o).lines().map_while(|l| l.ok()) {
                let _ = writeln!(log, "{line}");
                if line.contains("cairn-vm:") {
                    eprintln!("[vm {name}] {}", line.trim_end());
                }
                lines.push((start.elapsed(), line));
            }
        }
        lines
    });
    let stderr = child.stderr.take();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
        }
        s
    });
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if start.elapsed() > a.timeout => {
                eprintln!(
                    "xtask: vm-test {}: no end after {:?}; killing qemu (pid {pid})",
                    s.name, a.timeout
                );
                let _ = child.kill();
                let _ = child.wait();
                timed_out = true;
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => return Err(format!("waiting for qemu: {e}")),
        }
    };
    let stamped = reader.join().unwrap_or_default();
    let qemu_err = err_reader.join().unwrap_or_default();
    let elapsed = start.elapsed();
    eprintln!(
        "xtask: vm-test {}: VM ran {:.0} s",
        s.name,
        elapsed.as_secs_f64()
    );
    let times = binary_times(&stamped, exes);
    let lines: Vec<String> = stamped.into_iter().map(|(_, l)| l).collect();
    let mut r = collect(s, k, &out, exes, a, &lines, status, timed_out, &qemu_err)?;
    r.times = times;
    r.elapsed = elapsed;
    Ok(r)
}

/// Each test binary's time, from the console lines `cairn-vm: test NAME`
/// and `cairn-vm: test NAME exit N` and when they arrived.
fn binary_times(
    lines: &[(Duration, String)],
    exes: &[(String, PathBuf)],
) -> Vec<(String, Option<Duration>)> {
    let at = |f: &dyn Fn(&str) -> bool| lines.iter().find(|(_, l)| f(l)).map(|(t, _)| *t);
    exes.iter()
        .map(|(n, _)| {
            let begin = format!("cairn-vm: test {n}");
            let exit = format!("cairn-vm: test {n} exit ");
            let start = at(&|l| l.trim_end().ends_with(&begin));
            let end = at(&|l| l.contains(&exit));
            (n.clone(), start.zip(end).map(|(s, e)| e.saturating_sub(s)))
        })
        .collect()
}

/// Reads the results share: per test binary its counts, and the skips.
#[allow(clippy::too_many_arguments)]
fn collect(
    s: Series,
    k: &Kernel,
    out: &Path,
    exes: &[(String, PathBuf)],
    a: &Args,
    console: &[String],
    status: Option<std::process::ExitStatus>,
    timed_out: bool,
    qemu_err: &str,
) -> Result<Ran> {
    use std::fmt::Write as _;
    let mut text = String::new();
    let results = std::fs::read_to_string(out.join("results")).unwrap_or_default();
    let codes: BTreeMap<&str, i32> = results
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(n, c)| Some((n, c.trim().parse().ok()?)))
        .collect();
    let finished = results.lines().any(|l| l == "done");
    let mut ok = finished && !timed_out;
    let mut counts = Counts::default();
    let _ = writeln!(text, "vm-test kernel {} ({}):", s.name, k.release);
    if let Ok(check) = std::fs::read_to_string(out.join("check.txt")) {
        for l in check.lines().filter(|l| {
            [
                "dirty",
                "pagemap",
                "uffd",
                "bpf",
                "inventory",
                "fork_tracking",
                "rseq",
                "verdict",
                "cairn can",
                "cairn cannot",
            ]
            .iter()
            .any(|k| l.contains(k))
        }) {
            let _ = writeln!(text, "  check: {}", l.trim());
        }
    }
    let mut names: Vec<&str> = exes.iter().map(|(n, _)| n.as_str()).collect();
    if a.exec.is_some() {
        names.insert(0, "exec");
    }
    for name in names {
        let log = std::fs::read_to_string(out.join(format!("{name}.log"))).unwrap_or_default();
        let mut c = Counts::default();
        for l in log.lines() {
            c.add_line(l);
        }
        let code = codes.get(name).copied();
        let passed = code == Some(0);
        let _ = writeln!(
            text,
            "  {name}: {} ({} passed, {} failed, {} ignored)",
            match code {
                Some(0) => "ok".to_string(),
                Some(124) | Some(137) => format!(
                    "FAILED (killed after the per-binary limit of {} s)",
                    a.test_timeout.as_secs()
                ),
                Some(c) => format!("FAILED (exit {c})"),
                None => "did not run".to_string(),
            },
            c.passed,
            c.failed,
            c.ignored
        );
        if !passed {
            ok = false;
            let _ = writeln!(text, "  ---- {name} output (last 60 lines) ----");
            for l in tail(&log, 60) {
                let _ = writeln!(text, "  | {l}");
            }
        }
        if name == "exec" {
            for l in log.lines() {
                let _ = writeln!(text, "  exec| {l}");
            }
        }
        counts.passed += c.passed;
        counts.failed += c.failed;
        counts.ignored += c.ignored;
    }
    // A skipped test returned early and libtest counted it as passed.
    let skips: Vec<String> = std::fs::read_to_string(out.join("skips.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.strip_prefix("expected ").unwrap_or(l).to_string())
        .collect();
    counts.passed = counts.passed.saturating_sub(skips.len() as u64);
    counts.ignored += skips.len() as u64;
    let panicked_in = kernel_panic(console).then(|| {
        console
            .iter()
            .rev()
            .find_map(|l| l.split("cairn-vm: test ").nth(1))
            .map_or("boot".to_string(), |t| t.trim().to_string())
    });
    if let Some(t) = &panicked_in {
        ok = false;
        let _ = writeln!(
            text,
            "  the guest kernel panicked during {t} (qemu {status:?}); its oops from the console:"
        );
        for l in oops_lines(console) {
            let _ = writeln!(text, "  | {l}");
        }
    } else if !finished {
        let _ = writeln!(
            text,
            "  the VM did not finish its script ({}); console (last 40 lines):",
            if timed_out {
                format!("killed after {:?}", a.timeout)
            } else {
                format!("qemu {status:?}")
            }
        );
        for l in console
            .iter()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            let _ = writeln!(text, "  | {l}");
        }
        if !qemu_err.trim().is_empty() {
            let _ = writeln!(text, "  qemu: {}", qemu_err.trim());
        }
    }
    Ok(Ran {
        release: k.release.clone(),
        counts,
        ok,
        times: Vec::new(),
        skips,
        elapsed: Duration::ZERO,
        panicked_in,
        earlier_panic: None,
        text,
    })
}

// ---------------------------------------------------------------- kernel table

/// What cairn uses each probed kernel feature for (`cairn check`'s
/// names), and the mainline kernel that brought it; features of the user
/// (capabilities, Yama) and of cairn's own pid namespace are not kernel
/// properties and stay out of the table.
const FEATURE_USE: &[(&str, &str, &str)] = &[
    ("clone3_set_tid", "restored pids (else ns_last_pid)", "5.5"),
    (
        "ns_last_pid_writable",
        "restored pids without clone3 set_tid",
        "3.3",
    ),
    (
        "pidfd_getfd",
        "taking fds from the target (else sent by an injected sendmsg)",
        "5.6",
    ),
    ("kcmp", "shared fd tables and files (required)", "3.5"),
    ("process_vm_readv", "reading memory (required)", "3.2"),
    (
        "ptrace_get_rseq_conf",
        "any rseq area (else glibc's only, others refused at dump)",
        "5.13",
    ),
    (
        "soft_dirty",
        "incremental dumps (CONFIG_MEM_SOFT_DIRTY)",
        "3.11",
    ),
    (
        "uffd_wp_async",
        "incremental dumps by uffd-wp (with PAGEMAP_SCAN)",
        "6.7",
    ),
    ("pagemap_scan", "incremental dumps by uffd-wp", "6.7"),
    (
        "uffd_wp_sync",
        "dump --leave-running (with PAGEMAP_SCAN)",
        "5.7",
    ),
    ("btf", "BPF inventory and fork tracking", "5.4"),
    ("bpf", "BPF inventory and fork tracking", "3.19"),
    ("bpf_iter", "BPF inventory (else /proc)", "5.8"),
    (
        "bpf_iter_task_vma",
        "VMAs by BPF (else /proc/PID/smaps)",
        "5.12",
    ),
    (
        "bpf_iter_task_file",
        "fds by BPF (else /proc/PID/fd); bpf_d_path in iterators",
        "after 5.10",
    ),
    (
        "bpf_tp_btf",
        "BPF fork tracking (else /proc children lists)",
        "5.5",
    ),
    ("bpf_ringbuf", "BPF fork tracking", "5.8"),
    (
        "time_ns",
        "CLOCK_MONOTONIC/BOOTTIME offsets (--time-ns)",
        "5.6",
    ),
    ("cgroup2_freeze", "cgroup v2 freezer probe", "5.2"),
    ("tcp_repair", "--tcp-established", "3.5"),
];

/// The mechanism rows of the table (`cairn check`'s parts).
const MECHANISM_ROWS: &[&str] = &[
    "pid_restore",
    "inventory",
    "fork_tracking",
    "dirty_tracking",
    "background_snapshot",
    "rseq",
];

/// One column of the table: a kernel and what `cairn check` said there.
struct Column {
    label: String,
    /// The machine the table was made on (not a kernel of the matrix):
    /// shown, but left out of "lowest tested" and of the comparison.
    host: bool,
    features: BTreeMap<String, bool>,
    mechanisms: BTreeMap<String, String>,
}

/// `cairn check`'s text: (feature → available, part → mechanism).
fn parse_check(text: &str) -> (BTreeMap<String, bool>, BTreeMap<String, String>) {
    let (mut feats, mut mechs) = (BTreeMap::new(), BTreeMap::new());
    let mut section = "";
    for l in text.lines() {
        match l.trim() {
            "features:" => section = "f",
            "mechanisms:" => section = "m",
            "" => {}
            t => {
                let Some((name, rest)) = t.split_once(char::is_whitespace) else {
                    continue;
                };
                let rest = rest.trim_start();
                match section {
                    "f" => {
                        feats.insert(name.to_string(), rest.starts_with("yes"));
                    }
                    "m" => {
                        let m = rest.split(" (").next().unwrap_or(rest).trim();
                        mechs.insert(name.to_string(), m.to_string());
                    }
                    _ => {}
                }
            }
        }
    }
    (feats, mechs)
}

/// The columns: each series whose last run left a `cairn check` (in
/// target/vm/SERIES/out/check.txt), then this host. Err names what is
/// missing.
fn table_columns() -> Result<Vec<Column>> {
    let vm = root().join("target/vm");
    let mut cols = Vec::new();
    for s in SERIES {
        let p = vm.join(s.name).join("out/check.txt");
        let text = std::fs::read_to_string(&p).map_err(|e| {
            format!(
                "{}: {e} (run cargo xtask vm-test --kernel {} first)",
                p.display(),
                s.name
            )
        })?;
        let (features, mechanisms) = parse_check(&text);
        if features.is_empty() {
            return Err(format!("{}: no features in it", p.display()));
        }
        cols.push(Column {
            label: s.name.to_string(),
            host: false,
            features,
            mechanisms,
        });
    }
    let cairn = root().join("target/release/cairn");
    let o = Command::new(&cairn)
        .arg("check")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", cairn.display()))?;
    let (features, mechanisms) = parse_check(&String::from_utf8_lossy(&o.stdout));
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let series: Vec<&str> = release.trim().split('.').take(2).collect();
    cols.push(Column {
        label: format!("{} (host)", series.join(".")),
        host: true,
        features,
        mechanisms,
    });
    Ok(cols)
}

/// The README's table of kernel features by kernel, as markdown: per
/// feature the mainline kernel that brought it, the oldest kernel of the
/// matrix that has it (the host left out), and each column's answer;
/// then each column's mechanisms.
fn render_table(cols: &[Column]) -> String {
    let mut t = String::new();
    let head = |first: &str, mid: &str| {
        let mut h = format!("| {first} |{mid}");
        for c in cols {
            h.push_str(&format!(" {} |", c.label));
        }
        h
    };
    t.push_str(&head(
        "kernel feature",
        " cairn uses it for | mainline since | lowest tested |",
    ));
    t.push('\n');
    t.push_str(&format!("|---|---|---|---|{}\n", "---|".repeat(cols.len())));
    for (f, what, since) in FEATURE_USE {
        let yes: Vec<bool> = cols
            .iter()
            .map(|c| c.features.get(*f).copied().unwrap_or(false))
            .collect();
        let matrix: Vec<(usize, bool)> = (0..cols.len())
            .filter(|&i| !cols[i].host)
            .map(|i| (i, yes[i]))
            .collect();
        let lowest = match matrix.iter().position(|&(_, y)| y) {
            None => "none".to_string(),
            Some(k) if matrix[k..].iter().all(|&(_, y)| y) => cols[matrix[k].0].label.clone(),
            Some(k) => format!(
                "{} (not everywhere: configuration)",
                cols[matrix[k].0].label
            ),
        };
        t.push_str(&format!("| `{f}` | {what} | {since} | {lowest} |"));
        for y in yes {
            t.push_str(if y { " yes |" } else { " no |" });
        }
        t.push('\n');
    }
    t.push('\n');
    t.push_str(&head("mechanism (`cairn check`)", ""));
    t.push('\n');
    t.push_str(&format!("|---|{}\n", "---|".repeat(cols.len())));
    for m in MECHANISM_ROWS {
        t.push_str(&format!("| {m} |"));
        for c in cols {
            let v = c.mechanisms.get(*m).map_or("?", String::as_str);
            t.push_str(&format!(" {v} |"));
        }
        t.push('\n');
    }
    t
}

/// The part of a rendered table that a matrix run compares with the
/// README's: the feature rows without the host's column (the host CI
/// runs on is not the machine the README's table was made on) and
/// without the mechanisms (whose details, e.g. why a BPF program did not
/// load, may vary from run to run). `matrix` is the number of kernel
/// columns (the host's is the last one).
fn compared_part(table: &str, matrix: usize) -> Vec<String> {
    table
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            // feature, use, mainline, lowest, then one cell per column.
            cells
                .iter()
                .take(4 + matrix)
                .copied()
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect()
}

const TABLE_BEGIN: &str = "<!-- kernel-table: begin (cargo xtask vm-test --table --write) -->";
const TABLE_END: &str = "<!-- kernel-table: end -->";

/// The README's current table (between the markers) and where it is.
fn readme_table(readme: &str) -> Result<(usize, usize)> {
    let b = readme
        .find(TABLE_BEGIN)
        .ok_or("README.md has no kernel-table begin marker")?
        + TABLE_BEGIN.len();
    let e = readme[b..]
        .find(TABLE_END)
        .ok_or("README.md has no kernel-table end marker")?
        + b;
    Ok((b, e))
}

/// Writes target/vm/kernel-table.md; compares it with the README's (or
/// writes it there with `write`). Ok(true) when the README's differs.
fn table_check(write: bool) -> Result<bool> {
    let cols = table_columns()?;
    let table = render_table(&cols);
    let out = root().join("target/vm/kernel-table.md");
    std::fs::write(&out, &table).map_err(|e| format!("{}: {e}", out.display()))?;
    let path = root().join("README.md");
    let readme = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (b, e) = readme_table(&readme)?;
    let want = format!("\n{table}");
    if readme[b..e] == want {
        println!(
            "vm-test: the README's kernel table matches this matrix run ({})",
            out.display()
        );
        return Ok(false);
    }
    let matrix = cols.iter().filter(|c| !c.host).count();
    if !write && compared_part(&readme[b..e], matrix) == compared_part(&table, matrix) {
        println!(
            "vm-test: the README's kernel table matches this matrix run in what is compared \
             (the features by kernel); the host's column or the mechanisms differ ({} has this \
             run's whole table)",
            out.display()
        );
        return Ok(false);
    }
    if !write && readme[b..e].trim().is_empty() {
        println!(
            "vm-test: the README has no kernel table yet; {} has this run's \
             (cargo xtask vm-test --table --write puts it there)",
            out.display()
        );
        return Ok(false);
    }
    if write {
        let new = format!("{}{want}{}", &readme[..b], &readme[e..]);
        std::fs::write(&path, new).map_err(|e| format!("{}: {e}", path.display()))?;
        println!(
            "vm-test: README.md kernel table written from {}",
            out.display()
        );
        return Ok(false);
    }
    println!(
        "vm-test: the README's kernel table differs from this matrix run's in the features by \
         kernel ({}):\n{table}run cargo xtask vm-test --table --write to take it",
        out.display()
    );
    Ok(true)
}

/// `vm-test --table [--write]`: the table from the last run's results.
fn table_command(a: &Args) -> Result<u8> {
    Ok(u8::from(table_check(a.write_table)?))
}

/// After a run: when every series ran (all of them, not skipped), the
/// table is made and compared; Ok(true) when the README's is stale.
pub fn table_after_run(a: &Args, outcomes: &[(Series, Outcome)]) -> Result<bool> {
    let all_ran = SERIES.iter().all(|s| {
        outcomes
            .iter()
            .any(|(o, r)| o == s && matches!(r, Outcome::Ran(_)))
    });
    if !all_ran || a.exec.is_some() {
        println!("vm-test: kernel table not compared (not every kernel of the matrix ran)");
        return Ok(false);
    }
    table_check(false)
}

/// Whether the guest kernel panicked (the console's last words).
fn kernel_panic(console: &[String]) -> bool {
    console
        .iter()
        .any(|l| l.contains("Kernel panic - not syncing"))
}

/// The console from the first line of the kernel's first oops report to
/// the panic (at most 200 lines), or its last 80 lines if no report
/// start is found.
fn oops_lines(console: &[String]) -> Vec<&str> {
    const STARTS: [&str; 6] = [
        "------------[ cut here ]------------",
        "BUG: ",
        "Oops: ",
        "general protection fault",
        "kernel BUG at",
        "WARNING: CPU:",
    ];
    let start = console
        .iter()
        .position(|l| STARTS.iter().any(|s| l.contains(s)))
        .unwrap_or(console.len().saturating_sub(80));
    console[start..]
        .iter()
        .take(200)
        .map(String::as_str)
        .collect()
}

fn tail(s: &str, n: usize) -> Vec<&str> {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(n)..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oops_is_found_and_cut_from_its_start() {
        let console: Vec<String> = [
            "[vm] cairn-vm: test restore_mem",
            "[ 1.0] cairn-vm: test restore_tree",
            "[ 2.0] BUG: kernel NULL pointer dereference, address: 0000000000000008",
            "[ 2.1] RIP: 0010:do_exit+0x2f6/0xad0",
            "[ 2.2] Kernel panic - not syncing: Fatal exception in interrupt",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert!(kernel_panic(&console));
        let o = oops_lines(&console);
        assert_eq!(o.len(), 3);
        assert!(o[0].contains("BUG: kernel NULL"));
        assert!(!kernel_panic(&console[..4]));
    }

    #[test]
    fn args() {
        let a = parse(&["--kernel".into(), "6.1".into(), "--".into(), "chain".into()]).unwrap();
        assert_eq!(a.kernels.len(), 1);
        assert_eq!(a.kernels[0].name, "6.1");
        assert_eq!(a.filters, vec!["chain".to_string()]);
        assert!(a.tests.is_none());
        assert!(parse(&["--kernel".into(), "5.4".into()]).is_err());
        assert!(parse(&["--write".into()]).is_err());
        let a = parse(&[
            "--kernel".into(),
            "all".into(),
            "--tests".into(),
            "incremental".into(),
            "--jobs".into(),
            "2".into(),
        ])
        .unwrap();
        assert_eq!(a.kernels.len(), SERIES.len());
        assert_eq!(a.tests, Some(vec!["incremental".to_string()]));
        assert_eq!(a.jobs, 2);
        assert!(parse(&["--jobs".into(), "0".into()]).is_err());
    }

    #[test]
    fn plan_runs_defaults_everywhere_and_each_split_test_once() {
        let a = parse(&[]).unwrap();
        let p = plan(&a).unwrap();
        // A binary pinned to a kernel runs there.
        for &(t, _, k) in SPLIT_TESTS {
            let on: Vec<&str> = p
                .iter()
                .filter(|(_, ts)| ts.iter().any(|x| x == t))
                .map(|(s, _)| s.name)
                .collect();
            if let Some(k) = k {
                assert_eq!(on, [k], "{t}");
            }
        }
        assert_eq!(p.len(), SERIES.len());
        for (_, t) in &p {
            for d in DEFAULT_TESTS {
                assert!(t.iter().any(|x| x == d), "{d} missing from {t:?}");
            }
        }
        for (t, _, _) in SPLIT_TESTS {
            let n = p.iter().filter(|(_, ts)| ts.iter().any(|x| x == t)).count();
            assert_eq!(n, 1, "{t} runs {n} times");
        }
        let one = parse(&["--kernel".into(), "6.12".into()]).unwrap();
        let p = plan(&one).unwrap();
        assert_eq!(p[0].1.len(), DEFAULT_TESTS.len() + SPLIT_TESTS.len());
        let every = parse(&["--tests".into(), "all".into()]).unwrap();
        let p = plan(&every).unwrap();
        assert!(p[0].1.iter().any(|t| t == "restore_fds"));
        assert!(p[0].1.len() > DEFAULT_TESTS.len() + SPLIT_TESTS.len());
    }

    #[test]
    fn summary_lists_what_a_kernel_did_not_run() {
        let ran = |names: &[&str]| {
            Outcome::Ran(Box::new(Ran {
                release: String::new(),
                counts: Counts::default(),
                ok: true,
                times: names.iter().map(|n| (n.to_string(), None)).collect(),
                skips: Vec::new(),
                elapsed: Duration::ZERO,
                panicked_in: None,
                earlier_panic: None,
                text: String::new(),
            }))
        };
        let (s510, s61) = (series("5.10").unwrap(), series("6.1").unwrap());
        let outcomes = vec![(s510, ran(&["faults"])), (s61, ran(&["restore_fds"]))];
        let l = not_run_here(&s510, &outcomes).join("\n");
        assert!(l.contains("restore_fds (6.1)"), "{l}");
        assert!(!l.contains("faults ("), "{l}");
        assert!(l.contains("openmpi (573 s under TCG"), "{l}");
        assert!(l.contains("restore_mem (not in the CI plan)"), "{l}");
    }

    #[test]
    fn check_text_and_table() {
        let text = "kernel    5.10.0\n\nfeatures:\nsoft_dirty  yes (bit 55)\npagemap_scan  no  (EINVAL)\n\nmechanisms:\ninventory  proc (BPF iterators unavailable: x)\ndirty_tracking  uffd-wp + PAGEMAP_SCAN (no soft-dirty)\n\ncairn can checkpoint and restore here\n";
        let (f, m) = parse_check(text);
        assert_eq!(f.get("soft_dirty"), Some(&true));
        assert_eq!(f.get("pagemap_scan"), Some(&false));
        assert_eq!(m.get("inventory").map(String::as_str), Some("proc"));
        assert_eq!(
            m.get("dirty_tracking").map(String::as_str),
            Some("uffd-wp + PAGEMAP_SCAN")
        );
        let col = |label: &str, sd: bool, scan: bool| Column {
            label: label.into(),
            host: label.contains("host"),
            features: [
                ("soft_dirty".to_string(), sd),
                ("pagemap_scan".to_string(), scan),
            ]
            .into_iter()
            .collect(),
            mechanisms: BTreeMap::new(),
        };
        let cols = [
            col("5.10", false, false),
            col("6.1", true, false),
            col("6.12", true, true),
            col("6.18 (host)", false, true),
        ];
        let t = render_table(&cols);
        assert!(
            t.contains("| `soft_dirty` | incremental dumps (CONFIG_MEM_SOFT_DIRTY) | 3.11 | 6.1 | no | yes | yes | no |"),
            "{t}"
        );
        assert!(
            t.contains("| `pagemap_scan` | incremental dumps by uffd-wp | 6.7 | 6.12 | no | no | yes | yes |"),
            "{t}"
        );
        assert!(
            t.contains("| `kcmp` | shared fd tables and files (required) | 3.5 | none | no | no | no | no |"),
            "{t}"
        );
        // Another host, other mechanisms: the same compared part.
        let mut other = cols;
        other[3] = col("6.8 (host)", true, false);
        other[3]
            .mechanisms
            .insert("inventory".into(), "proc".into());
        let o = render_table(&other);
        assert_ne!(o, t);
        assert_eq!(compared_part(&o, 3), compared_part(&t, 3));
        // A kernel of the matrix that changes its answer is a difference.
        other[0] = col("5.10", true, false);
        assert_ne!(
            compared_part(&render_table(&other), 3),
            compared_part(&t, 3)
        );
        // A gap in the middle of the matrix is configuration.
        let gap = render_table(&[
            col("5.10", true, false),
            col("6.1", false, false),
            col("6.12", true, false),
        ]);
        assert!(
            gap.contains("| 5.10 (not everywhere: configuration) |"),
            "{gap}"
        );
        let readme = format!("a\n{TABLE_BEGIN}\nold\n{TABLE_END}\nb");
        let (b, e) = readme_table(&readme).unwrap();
        assert_eq!(&readme[b..e], "\nold\n");
    }

    #[test]
    fn binary_times_from_console() {
        let exes = vec![
            ("restore_fds".to_string(), PathBuf::from("/x")),
            ("restore_fds2".to_string(), PathBuf::from("/y")),
        ];
        let l = |s: u64, t: &str| (Duration::from_secs(s), t.to_string());
        let lines = vec![
            l(1, "cairn-vm: test restore_fds"),
            l(50, "cairn-vm: test restore_fds exit 0"),
            l(51, "cairn-vm: test restore_fds2"),
        ];
        let t = binary_times(&lines, &exes);
        assert_eq!(
            t[0],
            ("restore_fds".to_string(), Some(Duration::from_secs(49)))
        );
        assert_eq!(t[1], ("restore_fds2".to_string(), None));
    }

    #[test]
    fn apt_sources() {
        let deb822 = "Types: deb\n# comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n\nTypes: deb\nURIs: https://vendor.example/apt\nSuites: nodistro\nComponents: main\n";
        let e = parse_deb822(deb822);
        assert_eq!(
            mirrors_of(&e),
            Some((
                "http://mirror.example/debian".to_string(),
                Some("http://mirror.example/debian-security".to_string())
            ))
        );
        let one = "# x\ndeb [arch=amd64] http://m.example/debian trixie main contrib\ndeb http://v.example/apt stable-ish main\n";
        let e = parse_one_line(one);
        assert_eq!(
            e[0],
            ("http://m.example/debian".to_string(), "trixie".to_string())
        );
        assert_eq!(mirrors_of(&e).map(|m| m.1), Some(None));
        assert_eq!(mirrors_of(&[]), None);
    }

    #[test]
    fn cargo_json() {
        let l = r#"{"reason":"compiler-artifact","package_id":"x","manifest_path":"/r/Cargo.toml","target":{"kind":["test"],"crate_types":["bin"],"name":"incremental","src_path":"/r/tests/incremental.rs"},"profile":{},"features":[],"filenames":["/r/target/release/deps/incremental-abc"],"executable":"/r/target/release/deps/incremental-abc","fresh":true}"#;
        assert_eq!(target_name(l).as_deref(), Some("incremental"));
        assert_eq!(
            json_str(l, "executable"),
            Some("/r/target/release/deps/incremental-abc")
        );
        let lib = r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"cairn"},"executable":null}"#;
        assert_eq!(target_name(lib), None);
    }

    #[test]
    fn modinfo_depends() {
        let ko = b"\x7fELF....\0license=GPL\0depends=virtio,virtio_ring\0name=virtio_pci\0";
        assert_eq!(module_depends(ko), vec!["virtio", "virtio_ring"]);
        assert!(module_depends(b"\0depends=\0").is_empty());
        assert_eq!(mod_name("9pnet_virtio.ko.xz"), "9pnet_virtio");
        assert_eq!(mod_name("virtio-rng.ko"), "virtio_rng");
    }

    #[test]
    fn deb_versions_sort() {
        let a = Path::new("linux-image-6.1.0-50-amd64_6.1.176-1_amd64.deb");
        let b = Path::new("linux-image-6.1.0-57-amd64_6.1.192-3_amd64.deb");
        assert!(version_key(a) < version_key(b));
    }

    #[test]
    fn newest_cached_package_of_a_series() {
        let d = std::env::temp_dir().join(format!("cairn-vm-cache-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        for n in [
            "linux-image-6.1.0-50-amd64_6.1.176-1_amd64.deb",
            "linux-image-6.1.0-57-amd64_6.1.192-3_amd64.deb",
            "linux-image-6.1.0-57-amd64-dbg_6.1.192-3_amd64.deb",
            "linux-image-6.12.118+deb13-amd64_6.12.118-1_amd64.deb",
        ] {
            std::fs::write(d.join(n), b"").unwrap();
        }
        let s61 = series("6.1").unwrap();
        let s612 = series("6.12").unwrap();
        let name =
            |p: Option<PathBuf>| p.map(|p| p.file_name().unwrap().to_string_lossy().into_owned());
        let dirs = [d.clone(), d.join("missing")];
        assert_eq!(
            name(cached_deb(&dirs, s61, None)).as_deref(),
            Some("linux-image-6.1.0-57-amd64_6.1.192-3_amd64.deb")
        );
        assert_eq!(
            name(cached_deb(&dirs, s61, Some("linux-image-6.1.0-50-amd64"))).as_deref(),
            Some("linux-image-6.1.0-50-amd64_6.1.176-1_amd64.deb")
        );
        assert_eq!(
            name(cached_deb(&dirs, s612, None)).as_deref(),
            Some("linux-image-6.12.118+deb13-amd64_6.12.118-1_amd64.deb")
        );
        assert_eq!(
            cached_deb(&dirs, s61, Some("linux-image-6.1.0-99-amd64")),
            None
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn cpio_layout() {
        let mut c = Cpio::default();
        c.file("init", 0o755, b"abc");
        let b = c.finish();
        assert!(b.starts_with(b"070701"));
        assert_eq!(b.len() % 4, 0);
        assert!(b.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
    }
}
