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
/// subset (memory, registers and sleeping syscalls, process trees).
pub const DEFAULT_TESTS: &[&str] = &[
    "incremental",
    "restore_mem",
    "restore_regs",
    "restore_tree",
    "inventory",
    "inventory_dump",
    "probe_cache",
];

/// A kernel series and the Debian suites whose `linux-image-amd64` is of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Series {
    pub name: &'static str,
    suite: &'static str,
}

pub const SERIES: &[Series] = &[
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
    pub tests: Vec<String>,
    pub filters: Vec<String>,
    pub exec: Option<String>,
    pub timeout: Duration,
    pub mem: u64,
    /// `kvm`, `tcg`, or None: chosen by [`pick_accel`].
    pub accel: Option<String>,
}

pub fn parse(args: &[String]) -> Result<Args> {
    let mut a = Args {
        kernels: SERIES.to_vec(),
        tests: DEFAULT_TESTS.iter().map(|s| s.to_string()).collect(),
        filters: Vec::new(),
        exec: None,
        timeout: Duration::from_secs(1200),
        mem: 4 * GIB,
        accel: std::env::var("CAIRN_VM_ACCEL")
            .ok()
            .filter(|v| !v.is_empty()),
    };
    let mut it = args.iter();
    while let Some(x) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{x} needs a value"));
        match x.as_str() {
            "--kernel" => {
                let k = value()?;
                a.kernels =
                    if k == "all" {
                        SERIES.to_vec()
                    } else {
                        k.split(',')
                            .map(|k| {
                                SERIES.iter().find(|s| s.name == k).copied().ok_or_else(|| {
                                    format!("unknown kernel {k:?} (6.1, 6.12 or all)")
                                })
                            })
                            .collect::<Result<_>>()?
                    };
            }
            "--tests" => {
                a.tests = value()?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            }
            "--exec" => a.exec = Some(value()?.clone()),
            "--timeout" => {
                a.timeout = Duration::from_secs(
                    value()?
                        .parse()
                        .map_err(|_| "--timeout wants seconds".to_string())?,
                )
            }
            "--mem" => a.mem = parse_size(value()?)?,
            "--accel" => {
                let v = value()?;
                if v != "kvm" && v != "tcg" {
                    return Err("--accel: kvm or tcg".into());
                }
                a.accel = Some(v.clone());
            }
            "--" => {
                a.filters = it.by_ref().cloned().collect();
            }
            other => return Err(format!("unknown vm-test argument {other:?}")),
        }
    }
    if a.mem < 512 * MIB {
        return Err("--mem: at least 512M".into());
    }
    Ok(a)
}

/// What became of one kernel.
pub enum Outcome {
    /// Ran; the test counts and whether everything passed.
    Ran {
        release: String,
        counts: Counts,
        ok: bool,
        /// The guest kernel panicked (an oops: the command line has
        /// oops=panic) while this test binary ran.
        panicked_in: Option<String>,
        /// An earlier run of this kernel whose guest kernel panicked (the
        /// test binary it ran); it was run once more.
        earlier_panic: Option<String>,
    },
    Skipped(String),
}

/// `cargo xtask vm-test ...`: exit code 0 when every kernel passed or was
/// skipped (1 for a skip with CAIRN_VM_REQUIRED=1).
pub fn vm_test(args: &[String]) -> Result<u8> {
    let a = parse(args)?;
    ensure_tools()?;
    run(cargo().args(["build", "--release"]))?;
    let outcomes = run_all(&a)?;
    Ok(report(&outcomes))
}

/// Prints the per-kernel summary; the exit code.
pub fn report(outcomes: &[(Series, Outcome)]) -> u8 {
    let required = std::env::var("CAIRN_VM_REQUIRED").is_ok_and(|v| v == "1");
    let mut code = 0;
    println!("vm-test summary:");
    for (s, o) in outcomes {
        match o {
            Outcome::Ran {
                release,
                counts,
                ok,
                panicked_in,
                earlier_panic,
            } => {
                println!(
                    "  kernel {} ({release}): {}: {} passed, {} failed, {} ignored",
                    s.name,
                    if *ok { "ok" } else { "FAILED" },
                    counts.passed,
                    counts.failed,
                    counts.ignored
                );
                if let Some(t) = earlier_panic {
                    println!(
                        "    the guest kernel panicked in an earlier run (during {t}); that run \
                         was repeated once (its oops is printed above and kept in \
                         target/vm/{}/console-panic.log)",
                        s.name
                    );
                }
                if let Some(t) = panicked_in {
                    println!("    the guest kernel panicked during {t} (oops printed above)");
                }
                if !ok {
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

/// Runs every kernel of `a` in turn (the tests are built first).
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
    let exes = if a.exec.is_some() {
        Vec::new()
    } else {
        test_executables(&a.tests)?
    };
    let mut out = Vec::new();
    for &s in &a.kernels {
        let kernel = match fetch_kernel(&vm, s) {
            Ok(k) => k,
            Err(why) => {
                eprintln!("xtask: vm-test {}: skipped: {why}", s.name);
                out.push((s, Outcome::Skipped(why)));
                continue;
            }
        };
        let mut o = boot_and_run(&vm, s, &kernel, &init, &exes, a, &accel)?;
        // A guest kernel oops is the kernel's failure, not a test's: it is
        // reported with its trace, and the kernel's run is repeated once.
        // A second panic fails the run.
        if let Outcome::Ran {
            panicked_in: Some(t),
            ..
        } = &o
        {
            let t = t.clone();
            let kdir = vm.join(s.name);
            let _ = std::fs::copy(kdir.join("console.log"), kdir.join("console-panic.log"));
            eprintln!(
                "xtask: vm-test {}: the guest kernel panicked during {t}; running this kernel \
                 once more",
                s.name
            );
            o = boot_and_run(&vm, s, &kernel, &init, &exes, a, &accel)?;
            if let Outcome::Ran { earlier_panic, .. } = &mut o {
                *earlier_panic = Some(t);
            }
        }
        out.push((s, o));
    }
    Ok(out)
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
    let ready = std::fs::read_to_string(&stamp).is_ok_and(|t| t.trim() == deb_name);
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
        let order = pick_modules(&mods, &["virtio_pci", "9pnet_virtio", "9p", "overlay"])?;
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
        std::fs::write(&stamp, &deb_name).map_err(|e| format!("{}: {e}", stamp.display()))?;
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

/// The modules `roots` need, dependencies first, as (name, file); modules
/// built into the kernel (modules.builtin) are left out.
fn pick_modules(dir: &Path, roots: &[&str]) -> Result<Vec<(String, PathBuf)>> {
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
    t.push_str(&format!(
        "{} check > /out/check.txt 2>&1\n",
        sh_quote(&root.join("target/release/cairn").to_string_lossy())
    ));
    if let Some(cmd) = &a.exec {
        t.push_str(&format!(
            "echo 'cairn-vm: exec'\n( {cmd} ) > /out/exec.log 2>&1\nrc=$?\necho \"exec $rc\" >> /out/results\necho \"cairn-vm: exec exit $rc\"\n"
        ));
    }
    let filters: Vec<String> = a.filters.iter().map(|f| sh_quote(f)).collect();
    for (name, exe) in exes {
        t.push_str(&format!(
            "echo 'cairn-vm: test {name}'\n{} --nocapture {} > /out/{name}.log 2>&1\nrc=$?\necho \"{name} $rc\" >> /out/results\necho \"cairn-vm: test {name} exit $rc\"\n",
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
) -> Result<Outcome> {
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
        .args(["-smp", "2", "-m"])
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
        "xtask: vm-test {}: booting {} ({}, 2 vcpus, {} of memory), console in {}",
        s.name,
        k.release,
        accel.why,
        super::size_label(a.mem),
        console.display()
    );
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("qemu-system-x86_64: {e}"))?;
    let pid = child.id();
    // The console: into the log, and the init's lines onto stderr.
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
                lines.push(line);
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
    let lines = reader.join().unwrap_or_default();
    let qemu_err = err_reader.join().unwrap_or_default();
    eprintln!(
        "xtask: vm-test {}: VM ran {:.0} s",
        s.name,
        start.elapsed().as_secs_f64()
    );
    collect(s, k, &out, exes, a, &lines, status, timed_out, &qemu_err)
}

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
) -> Result<Outcome> {
    let results = std::fs::read_to_string(out.join("results")).unwrap_or_default();
    let codes: BTreeMap<&str, i32> = results
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(n, c)| Some((n, c.trim().parse().ok()?)))
        .collect();
    let finished = results.lines().any(|l| l == "done");
    let mut ok = finished && !timed_out;
    let mut counts = Counts::default();
    let mut skips = BTreeSet::new();
    println!("vm-test kernel {} ({}):", s.name, k.release);
    if let Ok(check) = std::fs::read_to_string(out.join("check.txt")) {
        for l in check.lines().filter(|l| {
            [
                "dirty",
                "pagemap",
                "uffd",
                "bpf",
                "inventory",
                "fork_tracking",
            ]
            .iter()
            .any(|k| l.contains(k))
        }) {
            println!("  check: {}", l.trim());
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
            if let Some(why) = l.trim().strip_prefix("skipped: ") {
                skips.insert(why.to_string());
            }
        }
        let code = codes.get(name).copied();
        let passed = code == Some(0);
        println!(
            "  {name}: {} ({} passed, {} failed, {} ignored)",
            match code {
                Some(0) => "ok".to_string(),
                Some(c) => format!("FAILED (exit {c})"),
                None => "did not run".to_string(),
            },
            c.passed,
            c.failed,
            c.ignored
        );
        if !passed {
            ok = false;
            println!("  ---- {name} output (last 60 lines) ----");
            for l in tail(&log, 60) {
                println!("  | {l}");
            }
        }
        if name == "exec" {
            for l in log.lines() {
                println!("  exec| {l}");
            }
        }
        counts.passed += c.passed;
        counts.failed += c.failed;
        counts.ignored += c.ignored;
    }
    for why in &skips {
        println!("  skipped in the VM: {why}");
    }
    let panicked_in = kernel_panic(console).then(|| {
        console
            .iter()
            .rev()
            .find_map(|l| l.split("cairn-vm: test ").nth(1))
            .map_or("boot".to_string(), |t| t.trim().to_string())
    });
    if let Some(t) = &panicked_in {
        ok = false;
        println!(
            "  the guest kernel panicked during {t} (qemu {status:?}); its oops from the console:"
        );
        for l in oops_lines(console) {
            println!("  | {l}");
        }
    } else if !finished {
        println!(
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
            println!("  | {l}");
        }
        if !qemu_err.trim().is_empty() {
            println!("  qemu: {}", qemu_err.trim());
        }
    }
    Ok(Outcome::Ran {
        release: k.release.clone(),
        counts,
        ok,
        panicked_in,
        earlier_panic: None,
    })
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
        assert_eq!(a.tests.len(), DEFAULT_TESTS.len());
        assert!(parse(&["--kernel".into(), "5.4".into()]).is_err());
        let a = parse(&[
            "--kernel".into(),
            "all".into(),
            "--tests".into(),
            "incremental".into(),
        ])
        .unwrap();
        assert_eq!(a.kernels.len(), 2);
        assert_eq!(a.tests, vec!["incremental".to_string()]);
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
        let s61 = SERIES[0];
        let s612 = SERIES[1];
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
