//! Project tasks, run as `cargo xtask <task>` (alias in .cargo/config.toml).
//!
//! - `cargo xtask demo [ARGS...]`: the first command of the README's quick
//!   start. Installs missing build tools, builds release and runs
//!   `cairn demo ARGS...`.
//! - `cargo xtask test [ARGS...]`: the test command of the README and CI.
//!   Installs missing build tools, builds release, runs
//!   `cargo test --release --workspace ARGS...`, then (without ARGS) the
//!   man pages, completions and Debian package round trip (`deb.rs`) and
//!   (where /dev/kvm exists, unless CAIRN_VM_TEST=0) `vm-test` on every
//!   kernel, and exits non-zero if any failed.
//! - `cargo xtask lint`: `cargo fmt --check`, clippy with every warning
//!   an error (all targets), and rustdoc with every warning an error; CI
//!   runs it before the tests.
//! - `cargo xtask vm-test [--kernel 5.10|6.1|6.12|all] [-- FILTERS]`:
//!   integration tests inside QEMU under Debian's kernels, and the
//!   README's kernel table (`vm.rs`).
//! - `cargo xtask slurm [start|stop|status] [--dir DIR]`: a one-node
//!   Slurm of the caller's own in `target/slurm` (`slurm.rs`, issue 17).
//! - `cargo xtask fuzz [--iterations N] [--seed S]`: the in-tree fuzzer of
//!   the image decoders and validators (`cairn::fuzz`, driven by
//!   tests/fuzz_images.rs on real checkpoints of four workloads); prints
//!   the counts per target, fails on any panic.
//! - `cargo xtask man|completions [--out DIR]`: man pages and shell
//!   completions from the clap definitions, checked (`man.rs`).
//! - `cargo xtask deb [--out DIR] [--bin CAIRN] [--check]`: the Debian
//!   package (of CAIRN, built already, if given); with `--check`
//!   installed, run, removed and checked (`deb.rs`).
//! - `cargo xtask bench [--runs N] [--size SIZE] [-- DUMP-ARGS...]`: times
//!   `cairn dump` (wall and CPU) and `cairn restore` of a process holding
//!   SIZE (default 1 GiB) of incompressible and of 2:1 compressible memory,
//!   and in the same runs the machine's limits (write + fdatasync of SIZE
//!   bytes to the same directory, filling fresh memory, memcpy); prints
//!   medians and the ratios cairn/limit.
//! - `cargo xtask bench scaling [--runs N] [--sizes 1G,4G] [--baseline
//!   CAIRN]`: the same at two sizes in one run, with the restore of another
//!   cairn binary beside ours and the scaling from one size to the other
//!   (`bench_restore.rs`, issue 15).
//! - `cargo xtask bench chain [--runs N]`: dump and restore of chains of
//!   100, 250, 500 and 1,000 processes (each the only child of the one
//!   before: `tests/workloads/tree_chain.c`), which check themselves after
//!   the restore.
//! - `cargo xtask bench incremental [--runs N] [--size SIZE] [--dirty PCT]`:
//!   full dump against pre-dump + final dump (`incr.rs`).
//! - `cargo xtask bench inventory [--runs N]`: `cairn inventory` of trees
//!   of 10, 100 and 1,000 processes with BPF and from /proc (`inv.rs`).
//! - `cargo xtask bench inventory-dump [--runs N] [--baseline CAIRN]`:
//!   the dump's own /proc reads of processes, VMAs and fds against the
//!   inventory's BPF and /proc collections, and the frozen time of dumps
//!   and pre-dumps, also of another cairn binary (`inv.rs`).
//! - `cargo xtask bench small [--runs N] [--procs N] [--baseline CAIRN]`:
//!   dump and restore wall and CPU time of a 1 MiB process, idle and with
//!   N extra processes, beside CRIU where it works and another cairn
//!   binary (`small.rs`, issue 15).
//! - `cargo xtask bench migrate [--runs N] [--size SIZE] [--dirty PCT,PCT] [--lazy] [--baseline CAIRN]`:
//!   live migration between two network namespaces (`bench_migrate.rs`,
//!   issue 16).
//! - `cargo xtask bench periodic [--interval DUR] [--checkpoints N]
//!   [--sizes 1G,4G] [--rate PERMILLE] [--modes auto,off]`: periodic incremental checkpoints
//!   of `cairn run` with 1% of memory rewritten per second
//!   (`bench_periodic.rs`, issue 17).
//! - `cargo xtask bench pair [--runs N] [--sizes MIB,MIB]`: takeover time
//!   of `cairn pair` (`bench_pair.rs`, issue 18).
//!
//! std only, so the xtask builds in seconds on a fresh machine.

mod bench_bgsnap;
mod bench_libcairn;
mod bench_migrate;
mod bench_pair;
mod bench_periodic;
mod bench_restore;
mod deb;
mod incr;
mod inv;
mod man;
mod slurm;
mod small;
mod vm;

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

type Result<T, E = String> = std::result::Result<T, E>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((t, rest)) => (t.as_str(), rest),
        None => ("help", &[][..]),
    };
    let r = match task {
        "test" => test(rest),
        "lint" => lint(rest).map(|()| 0),
        "demo" => demo(rest),
        "bench" => bench(rest).map(|()| 0),
        "vm-test" => vm::vm_test(rest),
        "fuzz" => fuzz(rest),
        "slurm" => slurm::main(rest, &root().join("target/slurm")),
        "man" => man::man(rest),
        "completions" => man::completions(rest),
        "deb" => deb::deb(rest),
        "help" | "-h" | "--help" => {
            eprintln!("{USAGE}");
            Ok(0)
        }
        other => Err(format!("unknown task {other:?}\n{USAGE}")),
    };
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: cargo xtask demo [DEMO ARGS...]
       cargo xtask test [CARGO TEST ARGS...]
       cargo xtask lint
       cargo xtask fuzz [--iterations N] [--seed S]
       cargo xtask slurm [start|stop|status] [--dir DIR]
       cargo xtask man|completions [--out DIR]
       cargo xtask deb [--out DIR] [--bin CAIRN] [--check]
       cargo xtask bench [--runs N] [--size SIZE] [-- DUMP-ARGS...]
       cargo xtask bench tree [--runs N] [--procs N,N,...] [--baseline CAIRN]
       cargo xtask bench chain [--runs N] [--depths N,N,...]
       cargo xtask bench incremental [--runs N] [--size SIZE] [--dirty PCT]
       cargo xtask bench inventory [--runs N]
       cargo xtask bench inventory-dump [--runs N] [--baseline CAIRN]
       cargo xtask bench small [--runs N] [--procs N] [--baseline CAIRN]
       cargo xtask bench migrate [--runs N] [--size SIZE] [--dirty PCT,PCT] [--lazy] [--baseline CAIRN]
       cargo xtask bench bgsnap [--runs N]
       cargo xtask bench libcairn [--calls N] [--restarts N]
       cargo xtask bench periodic [--interval DUR] [--checkpoints N] [--sizes 1G,4G] [--rate PERMILLE] [--modes auto,off]
       cargo xtask bench pair [--runs N] [--sizes MIB,MIB]
       cargo xtask vm-test [--kernel 5.10|6.1|6.12|all] [--tests T1,T2|all] [--exec CMD]
                           [--jobs N] [--smp N] [--timeout SECS] [--test-timeout SECS]
                           [--mem SIZE] [--accel kvm|tcg] [-- TEST FILTERS]
       cargo xtask vm-test --table [--write]";

/// The workspace root (xtask's parent).
fn root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

/// Runs a command to completion; an error unless it succeeds.
fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().map_err(|e| format!("{cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?}: {status}"))
    }
}

// ---------------------------------------------------------------- test

/// What shows that a Debian package is installed.
#[derive(Debug, Clone, Copy)]
enum Has {
    /// A command on PATH.
    Cmd(&'static str),
    /// A file (a header, a pkg-config file).
    File(&'static str),
}

impl Has {
    fn present(self) -> bool {
        match self {
            Has::Cmd(c) => on_path(c),
            Has::File(f) => Path::new(f).exists(),
        }
    }
}

/// Debian packages the build needs, each with what shows it is there: gcc
/// for zstd and the workloads, clang for bpf/*.bpf.c, libelf's and zlib's
/// headers and static libraries (libelf.a, libz.a: linked into cairn) for
/// libbpf-sys (which builds libbpf with make and pkg-config).
const BUILD_TOOLS: &[(Has, &str)] = &[
    (Has::Cmd("gcc"), "gcc"),
    (Has::Cmd("make"), "make"),
    (Has::Cmd("pkg-config"), "pkg-config"),
    (Has::Cmd("clang"), "clang"),
    (Has::File("/usr/include/libelf.h"), "libelf-dev"),
    (Has::File("/usr/include/zlib.h"), "zlib1g-dev"),
];

/// What the tests need on top of [`BUILD_TOOLS`].
const TEST_TOOLS: &[(Has, &str)] = &[
    // Network locking of established TCP connections, and the network
    // namespace of the far peer in the TCP tests.
    (Has::Cmd("nft"), "nftables"),
    (Has::Cmd("ip"), "iproute2"),
    (Has::Cmd("tc"), "iproute2"),
    // The real-program test (tests/real_redis.rs).
    (Has::Cmd("redis-server"), "redis-server"),
    // A cairn with file capabilities (tests/perms.rs).
    (Has::File("/usr/sbin/setcap"), "libcap2-bin"),
    // A one-node Slurm of the tests' own (tests/slurm.rs, slurm.rs).
    (Has::File("/usr/sbin/slurmctld"), "slurmctld"),
    (Has::File("/usr/sbin/slurmd"), "slurmd"),
    (Has::File("/usr/bin/sbatch"), "slurm-client"),
    (Has::File("/usr/sbin/munged"), "munge"),
    // An Open MPI job on one node (tests/openmpi.rs): mpirun and mpicc.
    (Has::Cmd("mpirun"), "openmpi-bin"),
    (Has::Cmd("mpicc"), "libopenmpi-dev"),
];

/// Installs the packages of [`BUILD_TOOLS`] and, unless `build_only`,
/// [`TEST_TOOLS`] that are missing (`apt-get update` once, then one
/// `apt-get install`).
fn ensure_tools_for(build_only: bool) -> Result<()> {
    let tools: Vec<(Has, &str)> = if build_only {
        BUILD_TOOLS.to_vec()
    } else {
        [BUILD_TOOLS, TEST_TOOLS].concat()
    };
    let mut missing: Vec<&str> = tools
        .iter()
        .filter(|(has, _)| !has.present())
        .map(|&(_, pkg)| pkg)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    // Wait for a dpkg lock held by another apt run (an unattended upgrade,
    // a second build) instead of failing at once.
    run(Command::new("apt-get")
        .args(["-o", "DPkg::Lock::Timeout=600", "update"])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(Command::new("apt-get")
        .args(["-o", "DPkg::Lock::Timeout=600"])
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    match tools.iter().find(|(has, _)| !has.present()) {
        Some((has, pkg)) => Err(format!("{has:?} still missing after installing {pkg}")),
        None => Ok(()),
    }
}

/// Everything the build and the tests need.
fn ensure_tools() -> Result<()> {
    ensure_tools_for(false)
}

fn on_path(cmd: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(cmd))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Test counts summed over every "test result:" line of `cargo test`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    passed: u64,
    failed: u64,
    ignored: u64,
    /// "test result: FAILED" lines: test binaries that reported failures.
    failed_results: u64,
}

impl Counts {
    /// Adds the counts of a libtest line such as
    /// `test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; ...`.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        if rest.starts_with("FAILED") {
            self.failed_results += 1;
        }
        for part in rest.split(';') {
            let mut w = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (w.next(), w.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// PATH with the system directories that root's tools (nft, ip, tc) live
/// in, for a caller whose PATH lacks them.
fn path_with_sbin() -> std::ffi::OsString {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        if !dirs.iter().any(|x| x == Path::new(d)) {
            dirs.push(d.into());
        }
    }
    std::env::join_paths(dirs).unwrap_or_default()
}

/// `cargo xtask demo`: installs what the build needs, builds, and runs
/// `cairn demo` with its exit code.
fn demo(extra: &[String]) -> Result<u8> {
    ensure_tools_for(true)?;
    run(cargo().args(["build", "--release"]))?;
    let status = Command::new(root().join("target/release/cairn"))
        .arg("demo")
        .args(extra)
        .status()
        .map_err(|e| format!("target/release/cairn: {e}"))?;
    Ok(status.code().unwrap_or(1).clamp(0, 255) as u8)
}

/// `cargo xtask fuzz`: tests/fuzz_images.rs with more iterations.
fn fuzz(args: &[String]) -> Result<u8> {
    let (mut iterations, mut seed) = ("20000".to_string(), "1".to_string());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it
            .next()
            .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))?;
        match a.as_str() {
            "--iterations" => iterations = v.clone(),
            "--seed" => seed = v.clone(),
            _ => return Err(format!("unknown fuzz option {a:?}\n{USAGE}")),
        }
        v.parse::<u64>()
            .map_err(|_| format!("{a} {v:?}: not a number"))?;
    }
    ensure_tools()?;
    let status = cargo()
        .args([
            "test",
            "--release",
            "--features",
            FUZZ_FEATURE,
            "--test",
            "fuzz_images",
            "--",
            "--nocapture",
        ])
        .env("CAIRN_FUZZ_ITERATIONS", &iterations)
        .env("CAIRN_FUZZ_SEED", &seed)
        .status()
        .map_err(|e| format!("cargo test: {e}"))?;
    Ok(status.code().unwrap_or(1).clamp(0, 255) as u8)
}

/// `cargo xtask lint`: formatting, clippy and rustdoc, each failing on
/// any warning. The build tools are needed too: clippy runs the build
/// scripts (the BPF programs are compiled by clang there).
fn lint(extra: &[String]) -> Result<()> {
    if let Some(a) = extra.first() {
        return Err(format!("lint takes no arguments (got {a:?})"));
    }
    let start = Instant::now();
    ensure_tools_for(true)?;
    for (component, probe) in [("rustfmt", "fmt"), ("clippy", "clippy")] {
        let ok = cargo()
            .args([probe, "--version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(format!(
                "cargo {probe} is not installed (rustup component add {component}); \
                 lint cannot run"
            ));
        }
    }
    eprintln!("xtask lint: cargo fmt --check");
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    eprintln!("xtask lint: clippy (warnings are errors)");
    run(cargo().args([
        "clippy",
        "--release",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    eprintln!("xtask lint: rustdoc (warnings are errors)");
    run(cargo()
        .args(["doc", "--release", "--no-deps", "--workspace"])
        // The test tools' docs too (clippy sees them through the tests).
        .args(["--features", FUZZ_FEATURE])
        .env("RUSTDOCFLAGS", "-D warnings"))?;
    eprintln!("xtask lint: ok in {:.0?}", start.elapsed());
    Ok(())
}

/// The feature that builds cairn's test tools (`cairn::fuzz`,
/// `cairn::image::mutate`) into the tests that use them. The dev-dependency
/// of cairn on itself (Cargo.toml) turns it on for every test build; it is
/// named here too so that the suite and the fuzzer say what they build.
const FUZZ_FEATURE: &str = "fuzz";

fn test(extra: &[String]) -> Result<u8> {
    let start = Instant::now();
    // The tests run nft, ip and tc by name.
    std::env::set_var("PATH", path_with_sbin());
    ensure_tools()?;
    run(cargo().args(["build", "--release"]))?;
    // The package check after the suite ships this build (what `cargo
    // xtask deb` packages); the test build puts its own cairn here.
    let release_bin = root().join("target/deb/cairn-release");
    if extra.is_empty() {
        std::fs::create_dir_all(root().join("target/deb")).map_err(|e| e.to_string())?;
        std::fs::copy(root().join("target/release/cairn"), &release_bin)
            .map_err(|e| format!("{}: {e}", release_bin.display()))?;
    }
    // Every test binary runs even after one fails (--no-fail-fast), so
    // the counts cover the whole suite; a binary that fails without a
    // "test result:" line of its own (it crashed, or its harness died) is
    // counted from cargo's "error: test failed" lines on stderr.
    // Tests that skip say so in this file (tests/common `note_skip`).
    let skip_log = root().join("target").join("test-skips.log");
    let _ = std::fs::remove_file(&skip_log);
    let mut cmd = cargo();
    cmd.env("CAIRN_SKIP_LOG", &skip_log);
    cmd.args(["test", "--release", "--workspace", "--no-fail-fast"])
        .args(["--features", FUZZ_FEATURE])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("{cmd:?}: {e}"))?;
    let failed_binaries = child.stderr.take().map(|err| {
        std::thread::spawn(move || {
            let mut n = 0u64;
            let stderr = std::io::stderr();
            for line in BufReader::new(err).lines().map_while(|l| l.ok()) {
                if line.starts_with("error: test failed") {
                    n += 1;
                }
                let mut e = stderr.lock();
                let _ = writeln!(e, "{line}");
                let _ = e.flush();
            }
            n
        })
    });
    let mut counts = Counts::default();
    if let Some(out) = child.stdout.take() {
        let stdout = std::io::stdout();
        for line in BufReader::new(out).lines() {
            let line = line.map_err(|e| format!("reading cargo test output: {e}"))?;
            counts.add_line(&line);
            let mut o = stdout.lock();
            let _ = writeln!(o, "{line}");
            let _ = o.flush();
        }
    }
    let status = child.wait().map_err(|e| format!("{cmd:?}: {e}"))?;
    let failed_binaries = failed_binaries.and_then(|t| t.join().ok()).unwrap_or(0);
    let crashed = failed_binaries.saturating_sub(counts.failed_results);
    counts.failed += crashed;
    let mut code = status.code().unwrap_or(1).clamp(0, 255) as u8;
    if crashed > 0 && code == 0 {
        code = 1;
    }
    // A skipped test returned early and libtest counted it as passed.
    let skips: Vec<String> = std::fs::read_to_string(&skip_log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let skipped = skips.len() as u64;
    counts.passed = counts.passed.saturating_sub(skipped);
    counts.ignored += skipped;
    for s in &skips {
        println!("xtask test: skipped {s}");
    }
    // On the machine kind CI runs on every feature the suite probes for
    // is there (see the README's Requirements): a skip there is a probe
    // or set-up bug that would otherwise pass silently.
    // Lines "expected BIN::TEST: ..." are features this machine kind is
    // known to lack and the kernel matrix covers (tests/common
    // `note_expected_skip`).
    let unexpected = skips.iter().filter(|s| !s.starts_with("expected ")).count();
    if unexpected > 0 && std::env::var_os("CI").is_some_and(|v| v == "true") {
        println!(
            "xtask test: {unexpected} host tests skipped under CI=true, where nothing may skip: \
             counted as a failure"
        );
        if code == 0 {
            code = 1;
        }
    }
    println!(
        "xtask test: host suite {} in {:.0} s ({} passed, {} failed, {} ignored or skipped{})",
        verdict(code),
        start.elapsed().as_secs_f64(),
        counts.passed,
        counts.failed,
        counts.ignored,
        if crashed > 0 {
            format!("; {crashed} test binaries failed without a result line, counted as failed")
        } else {
            String::new()
        }
    );
    // Issue 19: man pages and completions (made by the cairn-gen of the
    // test build, whose unit tests ran in the suite) checked against
    // `cairn --help`, and the Debian package built, installed, run and
    // removed (deb.rs). Not with test filters (they are for the host suite).
    if extra.is_empty() {
        let t = Instant::now();
        let r = deb::test_round_trip(&release_bin);
        let secs = t.elapsed().as_secs_f64();
        match r {
            Ok(None) => {
                counts.passed += 1;
                println!(
                    "xtask test: man pages, completions and package round trip ok in {secs:.0} s"
                );
            }
            Ok(Some(why)) => {
                counts.ignored += 1;
                println!(
                    "xtask test: package round trip skipped: {why} (man pages and completions ok)"
                );
                if std::env::var_os("CI").is_some_and(|v| v == "true") && code == 0 {
                    println!("xtask test: a skip under CI=true is counted as a failure");
                    code = 1;
                }
            }
            Err(e) => {
                counts.failed += 1;
                println!(
                    "xtask test: man pages, completions or package FAILED in {secs:.0} s: {e}"
                );
                if code == 0 {
                    code = 1;
                }
            }
        }
    }
    // The kernel matrix: the core tests again under Debian's 6.1 and 6.12.
    let vm_start = Instant::now();
    match vm_skip_reason(extra) {
        Some(why) => println!("xtask test: vm-test skipped: {why}"),
        None => {
            let a = vm::parse(&vm_args())?;
            let outcomes = vm::run_all(&a)?;
            let mut vm_code = vm::report(&outcomes);
            if vm::table_after_run(&a, &outcomes)? && vm_code == 0 {
                vm_code = 1;
            }
            for (_, o) in &outcomes {
                match o {
                    vm::Outcome::Ran(r) => {
                        counts.passed += r.counts.passed;
                        counts.failed += r.counts.failed;
                        counts.ignored += r.counts.ignored;
                    }
                    vm::Outcome::Skipped(_) => counts.ignored += 1,
                }
            }
            println!(
                "xtask test: vm-test {} in {:.0} s",
                verdict(vm_code),
                vm_start.elapsed().as_secs_f64()
            );
            if code == 0 {
                code = vm_code;
            }
        }
    }
    println!(
        "xtask test: {} in {:.0} s",
        verdict(code),
        start.elapsed().as_secs_f64()
    );
    println!(
        "summary: {} passed, {} failed, {} skipped",
        counts.passed, counts.failed, counts.ignored
    );
    Ok(code)
}

fn verdict(code: u8) -> String {
    if code == 0 {
        "ok".to_string()
    } else {
        format!("FAILED (exit code {code})")
    }
}

/// The vm-test arguments of `cargo xtask test`: `CAIRN_VM_ARGS`
/// (whitespace-separated, e.g. `--jobs 1`), else the defaults.
fn vm_args() -> Vec<String> {
    std::env::var("CAIRN_VM_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// Why `cargo xtask test` leaves out the VM runs, if it does: test filters
/// or cargo arguments were given (they are for the host suite), the
/// environment says so, or there is no /dev/kvm.
fn vm_skip_reason(extra: &[String]) -> Option<String> {
    if !extra.is_empty() {
        return Some(format!(
            "arguments for the host suite were given ({}); run cargo xtask vm-test for the kernel matrix",
            extra.join(" ")
        ));
    }
    if std::env::var("CAIRN_VM_TEST").is_ok_and(|v| v == "0") {
        return Some("CAIRN_VM_TEST=0".into());
    }
    if !Path::new("/dev/kvm").exists() {
        return Some("no /dev/kvm on this machine".into());
    }
    None
}

// ---------------------------------------------------------------- bench

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataKind {
    Incompressible,
    Compressible,
}

impl DataKind {
    /// The workload's argument.
    fn arg(self) -> &'static str {
        match self {
            DataKind::Incompressible => "incompressible",
            DataKind::Compressible => "compressible",
        }
    }
    fn label(self) -> &'static str {
        match self {
            DataKind::Incompressible => "incompressible",
            DataKind::Compressible => "compressible-2:1",
        }
    }
}

struct BenchArgs {
    runs: usize,
    size: u64,
    /// `-- ARGS...`: extra arguments of `cairn dump` (e.g.
    /// `--compress-level 3`), to compare settings.
    dump_args: Vec<String>,
}

fn parse_bench_args(args: &[String]) -> Result<BenchArgs> {
    let mut b = BenchArgs {
        runs: 3,
        size: GIB,
        dump_args: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            b.dump_args = it.cloned().collect();
            break;
        }
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--runs" => {
                b.runs = value()?
                    .parse()
                    .map_err(|_| "--runs wants a number".to_string())?;
                if b.runs == 0 {
                    return Err("--runs must be at least 1".into());
                }
            }
            "--size" => b.size = parse_size(value()?)?,
            other => return Err(format!("unknown bench argument {other:?}\n{USAGE}")),
        }
    }
    Ok(b)
}

/// "1G", "512M", "64K" or bytes.
fn parse_size(s: &str) -> Result<u64> {
    let (num, shift) = match s.char_indices().last() {
        Some((i, 'G' | 'g')) => (&s[..i], 30),
        Some((i, 'M' | 'm')) => (&s[..i], 20),
        Some((i, 'K' | 'k')) => (&s[..i], 10),
        _ => (s, 0),
    };
    let n: u64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    n.checked_shl(shift)
        .filter(|&v| v > 0 && v >> shift == n)
        .ok_or_else(|| format!("bad size {s:?}"))
}

/// "1GiB", "512MiB", "64KiB", "100B".
fn size_label(n: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    format!("{n}B")
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

#[derive(Default)]
struct Run {
    dump_s: f64,
    /// User + system CPU time of `cairn dump`.
    dump_cpu_s: f64,
    restore_s: f64,
    image_bytes: u64,
    /// The machine's limits, measured in the same run ([`limits_once`]).
    limits: Limits,
}

/// What the machine does with the same bytes, next to each cairn run:
/// dd-like write of SIZE bytes + fdatasync into the bench directory,
/// filling SIZE bytes of fresh memory (faulting it in), memcpy of SIZE.
#[derive(Default, Clone, Copy)]
struct Limits {
    write_s: f64,
    fill_s: f64,
    memcpy_s: f64,
}

struct Summary {
    kind: DataKind,
    dump_s: f64,
    dump_cpu_s: f64,
    restore_s: f64,
    image_bytes: u64,
    ratio: f64,
    limits: Limits,
}

impl Summary {
    fn of(kind: DataKind, size: u64, runs: &[Run]) -> Summary {
        let image = median(
            &runs
                .iter()
                .map(|r| r.image_bytes as f64)
                .collect::<Vec<_>>(),
        );
        let med = |f: fn(&Run) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        Summary {
            kind,
            dump_s: med(|r| r.dump_s),
            dump_cpu_s: med(|r| r.dump_cpu_s),
            limits: Limits {
                write_s: med(|r| r.limits.write_s),
                fill_s: med(|r| r.limits.fill_s),
                memcpy_s: med(|r| r.limits.memcpy_s),
            },
            restore_s: median(&runs.iter().map(|r| r.restore_s).collect::<Vec<_>>()),
            image_bytes: image as u64,
            ratio: if image > 0.0 {
                size as f64 / image
            } else {
                f64::NAN
            },
        }
    }

    fn line(&self, size: u64) -> String {
        let l = &self.limits;
        format!(
            "bench dump {} {}: dump {:.2} s (cpu {:.2} s), restore {:.2} s, image {:.0} MiB \
             (ratio {:.2}); limits: write+fdatasync {:.2} s, fill {:.2} s, memcpy {:.2} s; \
             dump/write {:.2}x, restore/fill {:.2}x",
            size_label(size),
            self.kind.label(),
            self.dump_s,
            self.dump_cpu_s,
            self.restore_s,
            self.image_bytes as f64 / MIB as f64,
            self.ratio,
            l.write_s,
            l.fill_s,
            l.memcpy_s,
            self.dump_s / l.write_s,
            self.restore_s / l.fill_s,
        )
    }
}

fn table(size: u64, runs: usize, rows: &[Summary]) -> String {
    let mut t = String::from(
        "| data | memory | runs | dump (s) | dump cpu (s) | write+fdatasync (s) | dump/write | \
         restore (s) | fill (s) | restore/fill | memcpy (s) | image (MiB) | ratio |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let l = &r.limits;
        t.push_str(&format!(
            "| {} | {} | {runs} | {:.2} | {:.2} | {:.2} | {:.2}x | {:.2} | {:.2} | {:.2}x | {:.2} | {:.0} | {:.2} |\n",
            r.kind.label(),
            size_label(size),
            r.dump_s,
            r.dump_cpu_s,
            l.write_s,
            r.dump_s / l.write_s,
            r.restore_s,
            l.fill_s,
            r.restore_s / l.fill_s,
            l.memcpy_s,
            r.image_bytes as f64 / MIB as f64,
            r.ratio
        ));
    }
    t
}

/// The machine's limits for `size` bytes, measured now ([`Limits`]).
/// The file is written in 1 MiB blocks from the filled memory, created
/// exclusively in `work` (the directory the images go to) and removed.
fn limits_once(work: &Path, size: u64) -> Result<Limits> {
    use std::io::Write as _;
    let n = usize::try_from(size).map_err(|_| format!("size {size} too large"))?;
    let t = Instant::now();
    // vec! of a non-zero byte is one memset even in the (debug) xtask
    // build; a zero byte would map untouched zero pages instead.
    let a: Vec<u8> = vec![0x5a; n];
    let fill_s = t.elapsed().as_secs_f64();
    let memcpy_s = {
        let mut b: Vec<u8> = vec![0xa5; n];
        let t = Instant::now();
        b.copy_from_slice(&a);
        let s = t.elapsed().as_secs_f64();
        std::hint::black_box(&b);
        s
    };
    let path = work.join("limit-write.bin");
    let _ = std::fs::remove_file(&path);
    let t = Instant::now();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    for block in a.chunks(MIB as usize) {
        f.write_all(block)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    f.sync_data()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let write_s = t.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok(Limits {
        write_s,
        fill_s,
        memcpy_s,
    })
}

/// User + system CPU time of this process's waited-for children so far
/// (/proc/self/stat `cutime` + `cstime`), in seconds.
fn children_cpu_s() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ticks = *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .unwrap_or(100.0)
    });
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // Fields after the command's closing parenthesis start at field 3.
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i - 3).and_then(|v| v.parse::<f64>().ok());
    match (get(16), get(17)) {
        (Some(u), Some(s)) => (u + s) / ticks,
        _ => f64::NAN,
    }
}

/// Everything the bench started: killed by pid on drop, also on error.
#[derive(Default)]
struct Procs {
    children: Vec<Child>,
    /// Restored processes: not our children, so killed but not reaped.
    others: Vec<i32>,
}

impl Procs {
    fn kill_other(&mut self, pid: i32) {
        kill9(pid);
        self.others.retain(|&p| p != pid);
        wait_gone(pid, Duration::from_secs(10));
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for &p in &self.others {
            kill9(p);
        }
    }
}

fn kill9(pid: i32) {
    if pid > 0 {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

/// Waits until `pid` is gone or a zombie.
fn wait_gone(pid: i32, timeout: Duration) {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return,
            Ok(s) if s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')) => return,
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Waits up to `timeout` for a child to exit; true once it is reaped.
fn reap(child: &mut Child, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return true,
            Err(_) => return false,
            Ok(None) if Instant::now() >= end => return false,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Polls for a pidfile (written atomically) until `timeout`.
/// Runs `cairn restore -D images -d --pidfile pidfile` and waits up to
/// `timeout` for the pidfile. Returns the restored pid (recorded in
/// `procs.others`, so it is killed on drop) and the restore's wall-clock
/// time in seconds. The detached restore exits by itself once the tree
/// runs; it is reaped here.
fn restore_detached(
    procs: &mut Procs,
    cairn: &Path,
    images: &Path,
    pidfile: &Path,
    timeout: Duration,
) -> Result<(i32, f64)> {
    let t = Instant::now();
    let restore = Command::new(cairn)
        .args(["restore", "-D"])
        .arg(images)
        .args(["-d", "--pidfile"])
        .arg(pidfile)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", cairn.display()))?;
    procs.children.push(restore);
    let idx = procs.children.len() - 1;
    let restored = wait_pidfile(pidfile, timeout, || match procs.children[idx].try_wait() {
        Ok(Some(st)) if !st.success() => Err(format!("cairn restore failed: {st}")),
        _ => Ok(()),
    })?;
    let restore_s = t.elapsed().as_secs_f64();
    procs.others.push(restored);
    if !reap(&mut procs.children[idx], Duration::from_secs(60)) {
        return Err("cairn restore -d did not exit".into());
    }
    let _ = procs.children.remove(idx).wait(); // already reaped: returns at once
    Ok((restored, restore_s))
}

fn wait_pidfile(
    path: &Path,
    timeout: Duration,
    mut alive: impl FnMut() -> Result<()>,
) -> Result<i32> {
    let end = Instant::now() + timeout;
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if let Ok(pid) = s.trim().parse() {
                return Ok(pid);
            }
        }
        alive()?;
        if Instant::now() >= end {
            return Err(format!(
                "{} did not appear within {timeout:?}",
                path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let m = e
            .and_then(|e| e.metadata())
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        if m.is_file() {
            n += m.len();
        }
    }
    Ok(n)
}

/// Whether this shared machine has room for a bench's largest size: `free
/// -g` shows at least 12 GiB available. If not, says that `what` is left
/// out.
fn room_for_large(what: &str) -> bool {
    let out = Command::new("free").arg("-g").output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let avail: u64 = text
        .lines()
        .find(|l| l.starts_with("Mem:"))
        .and_then(|l| l.split_whitespace().nth(6))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if avail < 12 {
        eprintln!("xtask: {what} left out: free -g shows {avail} GiB available (< 12)");
    }
    avail >= 12
}

/// The value of a bench's `--runs`: a positive number.
fn runs_value(v: Option<&String>) -> Result<usize> {
    v.and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .ok_or_else(|| "--runs wants a positive number".into())
}

/// Installs the build tools and builds release, except inside a test VM
/// (`vm-test --exec`), where the host's build is used as it is.
fn prepare_bench() -> Result<()> {
    if std::env::var_os("CAIRN_VM_KERNEL").is_some() {
        return Ok(());
    }
    ensure_tools()?;
    run(cargo().args(["build", "--release"]))
}

fn bench(args: &[String]) -> Result<()> {
    if args.first().map(String::as_str) == Some("tree") {
        return bench_tree(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("chain") {
        return bench_chain(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("incremental") {
        return incr::bench(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("inventory") {
        return inv::bench(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("inventory-dump") {
        return inv::bench_dump(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("small") {
        return small::bench(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("migrate") {
        return bench_migrate::bench(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("scaling") {
        return bench_restore::bench(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("libcairn") {
        return bench_libcairn::bench(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("periodic") {
        return bench_periodic::bench(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("bgsnap") {
        return bench_bgsnap::bench(&args[1..]);
    }
    // pair
    if args.first().map(String::as_str) == Some("pair") {
        return bench_pair::bench(&args[1..]);
    }
    let b = parse_bench_args(args)?;
    ensure_tools()?;
    run(cargo().args(["build", "--release"]))?;
    let root = root();
    let cairn = root.join("target/release/cairn");
    let workload = root.join("target/release/bench_mem");
    run(Command::new("gcc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&workload)
        .arg(root.join("tests/workloads/bench_mem.c")))?;

    let work = std::env::temp_dir().join(format!("cairn-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let mut procs = Procs::default();
    let result = (|| {
        let mut rows = Vec::new();
        for kind in [DataKind::Incompressible, DataKind::Compressible] {
            let mut runs = Vec::new();
            for i in 0..b.runs {
                let limits = limits_once(&work, b.size)?;
                let mut r = bench_once(
                    &cairn,
                    &workload,
                    &work,
                    kind,
                    b.size,
                    &mut procs,
                    &b.dump_args,
                )?;
                r.limits = limits;
                eprintln!(
                    "xtask: {} run {}/{}: dump {:.2} s (cpu {:.2} s), restore {:.2} s, \
                     image {:.0} MiB; write+fdatasync {:.2} s, fill {:.2} s, memcpy {:.2} s",
                    kind.label(),
                    i + 1,
                    b.runs,
                    r.dump_s,
                    r.dump_cpu_s,
                    r.restore_s,
                    r.image_bytes as f64 / MIB as f64,
                    limits.write_s,
                    limits.fill_s,
                    limits.memcpy_s
                );
                runs.push(r);
            }
            rows.push(Summary::of(kind, b.size, &runs));
        }
        Ok::<_, String>(rows)
    })();
    drop(procs);
    let _ = std::fs::remove_dir_all(&work);
    let rows = result?;
    for r in &rows {
        println!("{}", r.line(b.size));
    }
    println!();
    print!("{}", table(b.size, b.runs, &rows));
    Ok(())
}

/// One start, dump, restore, kill cycle.
fn bench_once(
    cairn: &Path,
    workload: &Path,
    work: &Path,
    kind: DataKind,
    size: u64,
    procs: &mut Procs,
    extra: &[String],
) -> Result<Run> {
    let ready = work.join("workload.pid");
    let restored_file = work.join("restored.pid");
    let images = work.join("images");
    let log = work.join("workload.log");
    for p in [&ready, &restored_file] {
        let _ = std::fs::remove_file(p);
    }
    let _ = std::fs::remove_dir_all(&images);

    // Regular files and /dev/null only: cairn does not restore pipes or
    // terminals of a dumped process.
    let log_f = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let child = Command::new(workload)
        .arg(size.to_string())
        .arg(kind.arg())
        .arg("--pidfile")
        .arg(&ready)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_f)
        .spawn()
        .map_err(|e| format!("{}: {e}", workload.display()))?;
    procs.children.push(child);
    let idx = procs.children.len() - 1;
    let pid = wait_pidfile(&ready, Duration::from_secs(300), || {
        match procs.children[idx].try_wait() {
            Ok(Some(st)) => Err(format!(
                "bench_mem exited ({st}): {}",
                std::fs::read_to_string(&log).unwrap_or_default().trim()
            )),
            _ => Ok(()),
        }
    })?;

    let cpu0 = children_cpu_s();
    let t = Instant::now();
    run(Command::new(cairn)
        .args(["dump", "-t", &pid.to_string(), "-D"])
        .arg(&images)
        .args(extra))?;
    let dump_s = t.elapsed().as_secs_f64();
    let dump_cpu_s = children_cpu_s() - cpu0;
    // dump kills the workload; reap it.
    if !reap(&mut procs.children[idx], Duration::from_secs(10)) {
        return Err(format!("cairn dump left pid {pid} running"));
    }
    let _ = procs.children.remove(idx).wait(); // already reaped: returns at once
    let image_bytes = dir_bytes(&images)?;

    let (restored, restore_s) = restore_detached(
        procs,
        cairn,
        &images,
        &restored_file,
        Duration::from_secs(300),
    )?;
    procs.kill_other(restored);
    let _ = std::fs::remove_dir_all(&images);
    Ok(Run {
        dump_s,
        dump_cpu_s,
        restore_s,
        image_bytes,
        limits: Limits::default(),
    })
}

/// `cargo xtask bench tree [--runs N] [--procs N,N,...] [--baseline CAIRN]`:
/// freeze time and dump/restore time of flat trees of 10, 100 and 500
/// processes (or `--procs`) with 8 threads each. `--baseline`: every run
/// is repeated right after with that cairn binary (e.g. main's), dump and
/// restore, so that both see the same load; the medians of both and the
/// load average are printed. CRIU is run beside where `criu check` passes;
/// otherwise the bench says why it is not.
fn bench_tree(args: &[String]) -> Result<()> {
    let mut procs = vec![10usize, 100, 500];
    let mut baseline: Option<PathBuf> = None;
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--procs" => {
                procs = parse_counts("--procs", it.next())?;
            }
            "--baseline" => {
                baseline = Some(PathBuf::from(it.next().ok_or("--baseline needs a value")?))
            }
            _ => rest.push(a.clone()),
        }
    }
    let b = parse_bench_args(&rest)?;
    ensure_tools()?;
    run(cargo().args(["build", "--release"]))?;
    let root = root();
    let cairn = root.join("target/release/cairn");
    let workload = root.join("target/release/bench_tree");
    run(Command::new("gcc")
        .args(["-O2", "-Wall", "-pthread", "-o"])
        .arg(&workload)
        .arg(root.join("tests/workloads/bench_tree.c")))?;
    let criu = criu_usable();
    let work = std::env::temp_dir().join(format!("cairn-bench-tree-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let mut bins = vec![("cairn", cairn.clone())];
    if let Some(b) = &baseline {
        bins.push(("baseline", b.clone()));
    }
    // (binary, processes, freeze, dump, restore medians)
    let mut lines = Vec::new();
    let mut loads = Vec::new();
    let result = (|| {
        for &procs_n in &procs {
            let mut runs: Vec<[Vec<f64>; 3]> = vec![Default::default(); bins.len()];
            for i in 0..b.runs {
                for (k, (name, bin)) in bins.iter().enumerate() {
                    loads.push(load_average());
                    let r = tree_once(bin, &workload, &work, procs_n, 8)?;
                    eprintln!(
                        "xtask: tree {procs_n}x8 run {}/{} {name}: freeze {:.1} ms, dump {:.2} s, restore {:.2} s (load {:.1})",
                        i + 1,
                        b.runs,
                        r.0,
                        r.1,
                        r.2,
                        loads.last().copied().unwrap_or(0.0)
                    );
                    runs[k][0].push(r.0);
                    runs[k][1].push(r.1);
                    runs[k][2].push(r.2);
                }
            }
            for (k, (name, _)) in bins.iter().enumerate() {
                let [f, d, r] = &runs[k];
                lines.push((*name, procs_n, median(f), median(d), median(r)));
            }
        }
        Ok::<_, String>(())
    })();
    let _ = std::fs::remove_dir_all(&work);
    result?;
    for (name, n, f, d, r) in &lines {
        println!(
            "bench tree {n} processes x 8 threads ({name}): freeze {f:.1} ms ({:.3} ms/task), dump {d:.2} s, restore {r:.2} s",
            f / (*n as f64 * 8.0)
        );
    }
    loads.sort_by(f64::total_cmp);
    if let (Some(lo), Some(hi)) = (loads.first(), loads.last()) {
        println!("load average during the runs: {lo:.1}-{hi:.1}");
    }
    match &criu {
        Ok(v) => println!("CRIU: {v} passes `criu check`, but this bench does not run it yet"),
        Err(why) => println!("CRIU: not measured ({why})"),
    }
    println!();
    println!(
        "| binary | processes | threads | freeze (ms) | per task (ms) | dump (s) | restore (s) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, n, f, d, r) in &lines {
        println!(
            "| {name} | {n} | {} | {f:.1} | {:.3} | {d:.2} | {r:.2} |",
            n * 8,
            f / (*n as f64 * 8.0)
        );
    }
    Ok(())
}

/// The value of `flag`, a comma-separated list of counts of at least 1
/// ("100,250,500").
fn parse_counts(flag: &str, v: Option<&String>) -> Result<Vec<usize>> {
    let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
    v.split(',')
        .map(|d| d.trim().parse().ok().filter(|&n: &usize| n >= 1))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| format!("bad {flag} {v:?}"))
}

/// The 1-minute load average (0 where /proc/loadavg cannot be read).
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// CRIU's version where it is installed and `criu check` passes on this
/// kernel, else why not.
fn criu_usable() -> Result<String> {
    let v = Command::new("criu")
        .arg("--version")
        .output()
        .map_err(|e| format!("criu not installed: {e}"))?;
    let version = String::from_utf8_lossy(&v.stdout)
        .lines()
        .next()
        .unwrap_or("criu")
        .trim()
        .to_string();
    let c = Command::new("criu")
        .arg("check")
        .output()
        .map_err(|e| format!("criu check: {e}"))?;
    if !c.status.success() {
        let err = String::from_utf8_lossy(&c.stderr);
        let last = err.lines().last().unwrap_or("").trim().to_string();
        return Err(format!(
            "{version}: `criu check` fails on this kernel: {last}"
        ));
    }
    Ok(version)
}

/// `cargo xtask bench chain [--runs N] [--depths N,N,...]`: dump and
/// restore of chains of processes (default depths 100, 250, 500, 1000).
/// Every restored chain must check itself (PASS in its log) after the go.
fn bench_chain(args: &[String]) -> Result<()> {
    let mut depths = vec![100usize, 250, 500, 1000];
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--depths" {
            depths = parse_counts("--depths", it.next())?;
        } else {
            rest.push(a.clone());
        }
    }
    let b = parse_bench_args(&rest)?;
    prepare_bench()?;
    let root = root();
    let cairn = root.join("target/release/cairn");
    let workload = root.join("target/release/tree_chain");
    run(Command::new("gcc")
        .args(["-O2", "-Wall", "-I"])
        .arg(root.join("tests/workloads"))
        .arg("-o")
        .arg(&workload)
        .arg(root.join("tests/workloads/tree_chain.c")))?;
    let work = std::env::temp_dir().join(format!("cairn-bench-chain-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let mut rows = Vec::new();
    let result = (|| {
        for &n in &depths {
            let (mut dump, mut restore) = (Vec::new(), Vec::new());
            for i in 0..b.runs {
                let (d, r) = chain_once(&cairn, &workload, &work, n)?;
                eprintln!(
                    "xtask: chain {n} run {}/{}: dump {d:.2} s, restore {r:.2} s",
                    i + 1,
                    b.runs
                );
                dump.push(d);
                restore.push(r);
            }
            rows.push((n, median(&dump), median(&restore)));
        }
        Ok::<_, String>(())
    })();
    let _ = std::fs::remove_dir_all(&work);
    result?;
    for (n, d, r) in &rows {
        println!(
            "bench chain {n} processes: dump {d:.2} s, restore {r:.2} s ({:.2} ms/process)",
            r * 1e3 / *n as f64
        );
    }
    println!();
    println!("| depth | dump (s) | restore (s) | restore per process (ms) |");
    println!("|---|---|---|---|");
    for (n, d, r) in &rows {
        println!("| {n} | {d:.2} | {r:.2} | {:.2} |", r * 1e3 / *n as f64);
    }
    Ok(())
}

/// One chain: start, dump (kills it), restore detached, go, and require
/// the restored chain's PASS. Returns (dump s, restore s).
fn chain_once(cairn: &Path, workload: &Path, work: &Path, depth: usize) -> Result<(f64, f64)> {
    let ready = work.join("chain.pid");
    let restored_file = work.join("restored.pid");
    let images = work.join("images");
    let log = work.join("chain.log");
    for p in [&ready, &restored_file, &log] {
        let _ = std::fs::remove_file(p);
    }
    let _ = std::fs::remove_dir_all(&images);
    let log_f = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let log_f2 = log_f
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let mut child = Command::new(workload)
        .args(["--depth", &depth.to_string(), "--pidfile"])
        .arg(&ready)
        .current_dir(work)
        .stdin(Stdio::null())
        .stdout(log_f)
        .stderr(log_f2)
        .spawn()
        .map_err(|e| format!("{}: {e}", workload.display()))?;
    let pid = match wait_pidfile(&ready, Duration::from_secs(300), || Ok(())) {
        Ok(p) => p,
        Err(e) => {
            kill_tree(child.id() as i32);
            let _ = child.wait();
            return Err(e);
        }
    };
    let pids = tree_pids(pid);
    if pids.len() != depth {
        kill_tree(pid);
        let _ = child.wait();
        return Err(format!(
            "the chain has {} processes, not {depth}",
            pids.len()
        ));
    }
    let t = Instant::now();
    let out = Command::new(cairn)
        .args(["dump", "-t", &pid.to_string(), "-D"])
        .arg(&images)
        .output()
        .map_err(|e| format!("{}: {e}", cairn.display()))?;
    let dump_s = t.elapsed().as_secs_f64();
    if !out.status.success() {
        kill_tree(pid);
        let _ = child.wait();
        return Err(format!(
            "cairn dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let _ = child.wait();
    for p in &pids {
        wait_free(*p, Duration::from_secs(60));
    }
    let mut procs = Procs::default();
    let (restored, restore_s) = restore_detached(
        &mut procs,
        cairn,
        &images,
        &restored_file,
        Duration::from_secs(600),
    )?;
    let now = tree_pids(restored);
    if now.len() != depth {
        kill_tree(restored);
        return Err(format!(
            "the restored chain has {} processes, not {depth}",
            now.len()
        ));
    }
    // The go: the chain checks itself and the root writes PASS.
    let _ = Command::new("kill")
        .args(["-TERM", &restored.to_string()])
        .status();
    wait_free(restored, Duration::from_secs(120));
    procs.others.clear();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    if text.lines().filter(|l| *l == "PASS").count() != 1 || text.contains("FAIL") {
        kill_tree(restored);
        return Err(format!("the restored chain did not pass:\n{text}"));
    }
    let _ = std::fs::remove_dir_all(&images);
    Ok((dump_s, restore_s))
}

/// Kills a whole tree by pid: children first (read from /proc), then the root.
fn kill_tree(root: i32) {
    for p in tree_pids(root).iter().rev() {
        kill9(*p);
    }
}

/// The pids of a tree, parents first.
fn tree_pids(root: i32) -> Vec<i32> {
    let mut all = vec![root];
    let mut i = 0;
    while i < all.len() {
        let p = all[i];
        if let Ok(rd) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in rd.flatten() {
                let f = t.path().join("children");
                if let Ok(s) = std::fs::read_to_string(f) {
                    all.extend(s.split_whitespace().filter_map(|x| x.parse::<i32>().ok()));
                }
            }
        }
        i += 1;
    }
    all
}

/// One start, dump (with -v to read the freeze time), restore, kill cycle.
fn tree_once(
    cairn: &Path,
    workload: &Path,
    work: &Path,
    procs_n: usize,
    threads: usize,
) -> Result<(f64, f64, f64)> {
    let ready = work.join("tree.pid");
    let restored_file = work.join("restored.pid");
    let images = work.join("images");
    for p in [&ready, &restored_file] {
        let _ = std::fs::remove_file(p);
    }
    let _ = std::fs::remove_dir_all(&images);
    let mut child = Command::new(workload)
        .args([procs_n.to_string(), threads.to_string(), "--pidfile".into()])
        .arg(&ready)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", workload.display()))?;
    let pid = match wait_pidfile(&ready, Duration::from_secs(120), || Ok(())) {
        Ok(p) => p,
        Err(e) => {
            kill_tree(child.id() as i32);
            let _ = child.wait();
            return Err(e);
        }
    };
    let pids = tree_pids(pid);
    let t = Instant::now();
    let out = Command::new(cairn)
        .args(["dump", "-v", "-t", &pid.to_string(), "-D"])
        .arg(&images)
        .output()
        .map_err(|e| format!("{}: {e}", cairn.display()))?;
    let dump_s = t.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        kill_tree(pid);
        let _ = child.wait();
        return Err(format!("cairn dump failed: {err}"));
    }
    let _ = child.wait();
    // "froze N processes, T threads, in 12.3ms" (Debug of a Duration).
    let freeze_ms = err
        .lines()
        .find_map(|l| {
            l.split_once("threads, in ")
                .map(|(_, d)| d.trim().to_string())
        })
        .and_then(|d| parse_duration_ms(&d))
        .ok_or_else(|| format!("no freeze time in cairn's log: {err}"))?;
    // The killed tree's children are reaped by whoever inherits them;
    // wait until every pid is free.
    for p in &pids {
        wait_free(*p, Duration::from_secs(30));
    }
    let t = Instant::now();
    let out = Command::new(cairn)
        .args(["restore", "-v", "-d", "--pidfile"])
        .arg(&restored_file)
        .arg("-D")
        .arg(&images)
        .output()
        .map_err(|e| format!("{}: {e}", cairn.display()))?;
    let restore_s = t.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!("cairn restore failed: {}", out.status));
    }
    // "ptrace: N requests, M stops; ..." (cairn restore -v).
    let err = String::from_utf8_lossy(&out.stderr);
    if let Some(l) = err
        .lines()
        .find_map(|l| l.split_once("ptrace: ").map(|x| x.1))
    {
        eprintln!("xtask: tree {procs_n}x{threads} restore: ptrace {l}");
    }
    // "restore timings: load 31.2 ms, ..." and "restored N processes in
    // T (create ...)": cairn's own figures, beside the wall time.
    for l in err.lines().filter(|l| {
        l.contains("restore timings: ") || (l.contains(" processes in ") && l.contains("restored "))
    }) {
        let l = l.split_once("]: ").map_or(l, |x| x.1);
        eprintln!("xtask: tree {procs_n}x{threads} {l}");
    }
    kill_tree(pid);
    wait_gone(pid, Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&images);
    Ok((freeze_ms, dump_s, restore_s))
}

fn parse_duration_ms(d: &str) -> Option<f64> {
    let num: String = d
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let v: f64 = num.parse().ok()?;
    let unit = &d[num.len()..];
    Some(match unit {
        "ns" => v / 1e6,
        "µs" | "us" => v / 1e3,
        "ms" => v,
        "s" => v * 1e3,
        _ => return None,
    })
}

/// Waits until no process (not even a zombie) has `pid`.
fn wait_free(pid: i32, timeout: Duration) {
    let end = Instant::now() + timeout;
    while Instant::now() < end && Path::new(&format!("/proc/{pid}")).exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_over_test_binaries() {
        let mut c = Counts::default();
        c.add_line("test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.40s");
        c.add_line(
            "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        c.add_line("test foo ... ok");
        c.add_line("running 5 tests");
        assert_eq!(
            c,
            Counts {
                passed: 15,
                failed: 2,
                ignored: 1,
                failed_results: 1,
            }
        );
    }

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_size("1G"), Ok(GIB));
        assert_eq!(parse_size("64M"), Ok(64 * MIB));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("x").is_err());
        assert!(parse_size("99999999999999G").is_err());
        assert_eq!(size_label(GIB), "1GiB");
        assert_eq!(size_label(64 * MIB), "64MiB");
        assert_eq!(size_label(1000), "1000B");
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn bench_args() {
        let a = parse_bench_args(&["--runs".into(), "5".into()]).unwrap();
        assert_eq!((a.runs, a.size), (5, GIB));
        assert!(parse_bench_args(&["--runs".into()]).is_err());
        assert!(parse_bench_args(&["--runs".into(), "0".into()]).is_err());
        assert!(parse_bench_args(&["--bogus".into()]).is_err());
        let a = parse_bench_args(&["--".into(), "--compress-level".into(), "3".into()]).unwrap();
        assert_eq!(a.dump_args, ["--compress-level", "3"]);
    }

    #[test]
    fn report_lines() {
        let runs = [
            Run {
                dump_s: 2.0,
                dump_cpu_s: 1.0,
                restore_s: 1.0,
                image_bytes: 512 * MIB,
                limits: Limits {
                    write_s: 1.0,
                    fill_s: 0.5,
                    memcpy_s: 0.25,
                },
            },
            Run {
                dump_s: 1.0,
                restore_s: 3.0,
                image_bytes: 512 * MIB,
                ..Run::default()
            },
            Run {
                dump_s: 3.0,
                dump_cpu_s: 1.5,
                restore_s: 2.0,
                image_bytes: 512 * MIB,
                limits: Limits {
                    write_s: 2.0,
                    fill_s: 1.0,
                    memcpy_s: 0.5,
                },
            },
        ];
        let s = Summary::of(DataKind::Compressible, GIB, &runs);
        assert_eq!(
            s.line(GIB),
            "bench dump 1GiB compressible-2:1: dump 2.00 s (cpu 1.00 s), restore 2.00 s, \
             image 512 MiB (ratio 2.00); limits: write+fdatasync 1.00 s, fill 0.50 s, \
             memcpy 0.25 s; dump/write 2.00x, restore/fill 4.00x"
        );
        let t = table(GIB, 3, &[s]);
        assert!(
            t.contains(
                "| compressible-2:1 | 1GiB | 3 | 2.00 | 1.00 | 1.00 | 2.00x | 2.00 | 0.50 | 4.00x \
                 | 0.25 | 512 | 2.00 |"
            ),
            "{t}"
        );
    }

    #[test]
    fn tools_are_found_on_path() {
        assert!(on_path("sh"));
        assert!(!on_path("cairn-no-such-tool"));
        assert!(Has::Cmd("sh").present());
        assert!(Has::File("/").present());
        assert!(!Has::File("/cairn-no-such-file").present());
    }
}
