//! zdtm-style harness for cairn's integration tests.
//!
//! A *workload* is a small C program from `tests/workloads/NAME.c` built on
//! `tests/workloads/zdtm.h`: it sets up some state, writes its pid to the
//! file given with `--pidfile` when ready, waits for SIGTERM, verifies the
//! state and prints `PASS` (exit 0) or `FAIL: ...` (exit 1) to its log.
//!
//! The harness compiles workloads lazily, starts them (stdin `/dev/null`,
//! stdout and stderr to one log file, as a session leader in a fresh
//! directory), runs `cairn dump` / `cairn restore`, signals the restored
//! process and requires `PASS`. Everything it starts is tracked by pid (or
//! pidfd) and killed on every failure or timeout path; nothing is ever
//! killed by name.
//!
//! Each test binary includes this file with `mod common;`; not every binary
//! uses every helper.
#![allow(dead_code)]

pub mod pty;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

// Upper bounds only (a passing test never waits them out), generous
// enough for the emulated CPUs of `cargo xtask vm-test` (QEMU's TCG where
// KVM cannot boot Debian's kernels), where a 500-process restore takes
// well over 30 s.
/// How long a freshly started workload may take to write its pidfile.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a restore may take until the restored process is running.
pub const RESTORE_READY_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a (restored or original) workload may take to exit after SIGTERM.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(120);
/// Upper bound for one `cairn dump` / `cairn show` / failing `cairn restore`.
pub const CAIRN_TIMEOUT: Duration = Duration::from_secs(120);

const CFLAGS: &[&str] = &["-O1", "-g", "-Wall", "-Werror"];

/// The cairn binary under test: the crate's own build, unless the
/// environment variable `CAIRN_TEST_BIN` names another one (e.g. a release
/// build, or a stand-in used to check the harness itself).
pub fn cairn_bin() -> PathBuf {
    match std::env::var_os("CAIRN_TEST_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_cairn")),
    }
}

std::thread_local! {
    /// Variables the cairn commands of this test thread get (`CairnEnv`).
    static CAIRN_ENV: std::cell::RefCell<Vec<(&'static str, String)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// An environment variable for the cairn commands the current test
/// thread starts (`run_cairn`, the restores, `cairn_command`), removed
/// on drop, also when the test fails. Never the test process's own
/// environment: the tests of a binary run at once, and a test hook set
/// there (e.g. a call made to fail) reaches every other test's cairn.
pub struct CairnEnv(&'static str);

impl CairnEnv {
    pub fn set(name: &'static str, value: &str) -> CairnEnv {
        CAIRN_ENV.with(|e| {
            let mut e = e.borrow_mut();
            e.retain(|(n, _)| *n != name);
            e.push((name, value.to_string()));
        });
        CairnEnv(name)
    }
}

impl Drop for CairnEnv {
    fn drop(&mut self) {
        CAIRN_ENV.with(|e| e.borrow_mut().retain(|(n, _)| *n != self.0));
    }
}

/// A command of the cairn under test, with the current test's `CairnEnv`.
pub fn cairn_command() -> Command {
    let mut c = Command::new(cairn_bin());
    CAIRN_ENV.with(|e| {
        for (n, v) in e.borrow().iter() {
            c.env(n, v);
        }
    });
    c
}

/// Whether the test runs in a guest of `cargo xtask vm-test` (its init
/// script exports the kernel series), where the CPU is emulated (TCG)
/// and three guests share the host: memory moves take several times
/// longer than on the host.
pub fn in_vm_guest() -> bool {
    std::env::var_os("CAIRN_VM_KERNEL").is_some()
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `if skip_unless_root() { return; }` at the top of every test: cairn needs
/// root (ptrace of any process, restoring credentials, ...). CI runs as root.
pub fn skip_unless_root() -> bool {
    if is_root() {
        false
    } else {
        note_skip("needs root");
        true
    }
}

/// Every skip goes through here: it says why, and appends a line (test
/// name and reason) to the file named by `CAIRN_SKIP_LOG`, which
/// `cargo xtask test` sets, so that skips are counted and listed in its
/// summary instead of passing silently (and, in CI on the host, fail the
/// run: see xtask's `test`).
pub fn note_skip(reason: &str) {
    record_skip("", reason);
}

/// A skip for a kernel feature that the machine kind CI runs on is known
/// to lack and that `cargo xtask vm-test` covers under other kernels
/// (soft-dirty): listed and counted like any skip, but it does not fail
/// a CI run.
pub fn note_expected_skip(reason: &str) {
    record_skip("expected ", reason);
}

fn record_skip(tag: &str, reason: &str) {
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .map(|n| n.split('-').next().unwrap_or_default().to_string())
        .unwrap_or_default();
    eprintln!("skipped: {reason}");
    if let Some(log) = std::env::var_os("CAIRN_SKIP_LOG") {
        use std::io::Write;
        let line = format!("{tag}{exe}::{test}: {}\n", reason.replace('\n', " "));
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            // One write of a short line with O_APPEND: lines of
            // concurrent tests do not interleave.
            let _ = f.write_all(line.as_bytes());
        }
    }
}

fn next_id() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

fn os(s: impl AsRef<OsStr>) -> OsString {
    s.as_ref().to_os_string()
}

// ---------------------------------------------------------------------------
// Building workloads

fn workload_src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("workloads")
}

/// `<target-dir>/cairn-workloads`.
pub fn workload_out_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR has a parent")
        .join("cairn-workloads")
}

fn fnv1a(h: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *h ^= u64::from(b);
        *h = h.wrapping_mul(0x100_0000_01b3);
    }
}

/// Path of the compiled workload NAME, compiling it if needed.
///
/// Compiled once per test process (a per-name `OnceLock`), and across
/// processes (cargo runs several test binaries, nextest one process per
/// test) guarded by a per-name `flock` and a stamp holding a hash of the
/// sources and flags: an up-to-date binary is never replaced, so the
/// executable of a dumped workload does not change before its restore.
pub fn workload_bin(name: &str) -> PathBuf {
    inherited::no_leaked_fds();
    type Cell = Arc<OnceLock<Result<PathBuf, String>>>;
    static BUILT: OnceLock<Mutex<HashMap<String, Cell>>> = OnceLock::new();
    let cell: Cell = {
        let mut map = BUILT
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.entry(name.to_string()).or_default().clone()
    };
    match cell.get_or_init(|| compile_workload(name)) {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// Whether a workload is linked with -pthread: the `thread_*` workloads and
/// any workload that includes <pthread.h> (e.g. tree_big).
fn needs_pthread(name: &str, src_text: &[u8]) -> bool {
    name.starts_with("thread_") || src_text.windows(11).any(|w| w == b"<pthread.h>")
}

/// The compiler flags for one workload: `CFLAGS`, plus -pthread if needed.
fn workload_cflags(name: &str, src_text: &[u8]) -> Vec<&'static str> {
    let mut flags = CFLAGS.to_vec();
    if needs_pthread(name, src_text) {
        flags.push("-pthread");
    }
    flags
}

/// The `*.h` files of the workload directory, by name, with their bytes.
fn workload_headers() -> Result<Vec<(String, Vec<u8>)>, String> {
    let dir = workload_src_dir();
    let rd = fs::read_dir(&dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for e in rd {
        let p = e
            .map_err(|e| format!("reading {}: {e}", dir.display()))?
            .path();
        if p.extension().is_some_and(|x| x == "h") {
            let text = fs::read(&p).map_err(|e| format!("reading {}: {e}", p.display()))?;
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            out.push((name, text));
        }
    }
    out.sort();
    Ok(out)
}

fn compile_workload(name: &str) -> Result<PathBuf, String> {
    let src = workload_src_dir().join(format!("{name}.c"));
    let src_text = fs::read(&src).map_err(|e| format!("reading {}: {e}", src.display()))?;
    let cflags = workload_cflags(name, &src_text);
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for f in &cflags {
        fnv1a(&mut h, f.as_bytes());
    }
    fnv1a(&mut h, &src_text);
    // Every shared header (zdtm.h, tree.h, ...) is part of the stamp.
    for (hname, text) in workload_headers()? {
        fnv1a(&mut h, b"\0");
        fnv1a(&mut h, hname.as_bytes());
        fnv1a(&mut h, b"\0");
        fnv1a(&mut h, &text);
    }
    let stamp_want = format!("{h:016x}\n");

    let out_dir = workload_out_dir();
    fs::create_dir_all(&out_dir).map_err(|e| format!("mkdir {}: {e}", out_dir.display()))?;
    let bin = out_dir.join(name);
    let stamp = out_dir.join(format!("{name}.stamp"));
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(out_dir.join(format!("{name}.lock")))
        .map_err(|e| format!("lock file for {name}: {e}"))?;
    // SAFETY: flock on a file descriptor we own; the lock is released when
    // `lock` is dropped (closed) at the end of this function.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!(
            "flock for {name}: {}",
            std::io::Error::last_os_error()
        ));
    }
    if bin.exists() && fs::read_to_string(&stamp).ok().as_deref() == Some(stamp_want.as_str()) {
        return Ok(bin);
    }
    let tmp = out_dir.join(format!("{name}.tmp.{}", std::process::id()));
    let out = Command::new("cc")
        .args(&cflags)
        .arg("-o")
        .arg(&tmp)
        .arg(&src)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running cc for {name}: {e}"))?;
    if !out.status.success() {
        let _ = fs::remove_file(&tmp);
        return Err(format!(
            "compiling workload {name} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    fs::rename(&tmp, &bin).map_err(|e| format!("rename to {}: {e}", bin.display()))?;
    let stamp_tmp = out_dir.join(format!("{name}.stamp.tmp.{}", std::process::id()));
    fs::write(&stamp_tmp, &stamp_want).map_err(|e| format!("stamp: {e}"))?;
    fs::rename(&stamp_tmp, &stamp).map_err(|e| format!("stamp: {e}"))?;
    drop(lock);
    Ok(bin)
}

// ---------------------------------------------------------------------------
// Small process helpers

/// A fresh, unique directory under `CARGO_TARGET_TMPDIR/cairn-tests`.
pub fn fresh_dir(tag: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cairn-tests");
    fs::create_dir_all(&root).expect("create the cairn-tests dir");
    loop {
        let p = root.join(format!("{tag}-{}-{}", std::process::id(), next_id()));
        match fs::create_dir(&p) {
            Ok(()) => {
                // The tree must be traversable by a workload that drops root.
                let _ = fs::set_permissions(&root, fs::Permissions::from_mode(0o755));
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
                return fs::canonicalize(&p).expect("canonicalize the test dir");
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("create {}: {e}", p.display()),
        }
    }
}

/// Poll `child` until it exits or `timeout` passes.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => {}
            Err(e) => panic!("waitpid({}): {e}", child.id()),
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Shell-style exit code: the code, or 128+signal.
pub fn exit_code(st: &ExitStatus) -> i32 {
    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
}

/// Whether a process with this pid exists (zombies included).
pub fn pid_exists(pid: i32) -> bool {
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Removes the private scratch directories (`/tmp/KIND-PID-*`: `cairn
/// run`'s and `cairn migrate`'s) of the cairn process `pid` that the test
/// SIGKILLed, which could not remove them itself. Only directories (never
/// a symlink) owned by this test's uid are removed.
#[allow(dead_code)]
pub fn remove_scratch_of(kind: &str, pid: u32) {
    use std::os::unix::fs::MetadataExt;
    let tmp = std::env::temp_dir();
    let prefix = format!("{kind}-{pid}-");
    let me = rustix::process::geteuid().as_raw();
    for e in fs::read_dir(&tmp).into_iter().flatten().flatten() {
        if !e.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        let p = e.path();
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_dir() && m.uid() == me => {
                let _ = fs::remove_dir_all(&p);
            }
            _ => {}
        }
    }
}

/// Starts `sleep 600` with exactly `pid` (through ns_last_pid), to take
/// it: a test that a restore copes with its pid taken. Another process
/// of the machine may take the pid first: then it waits for that one to
/// end and tries again (for up to a minute). Killed and reaped by the
/// caller.
pub fn hold_pid(pid: i32) -> Child {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut others = 0;
    while Instant::now() < deadline {
        let _ = fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", pid - 1));
        let mut c = Command::new("sleep").arg("600").spawn().unwrap();
        if c.id() as i32 == pid {
            return c;
        }
        let _ = c.kill();
        let _ = c.wait();
        if pid_exists(pid) {
            others += 1;
            wait_pid_gone(pid, deadline.saturating_duration_since(Instant::now()));
        }
    }
    panic!("cannot take pid {pid} ({others} times another process had it)");
}

/// Wait until no process has this pid (or timeout). Returns whether it is gone.
pub fn wait_pid_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while pid_exists(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// A pidfd for `pid`: signals sent through it can never hit a recycled pid.
pub fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Send `sig` through a pidfd. Errors (the process is gone) are returned.
pub fn pidfd_signal(fd: &OwnedFd, sig: i32) -> std::io::Result<()> {
    // SAFETY: valid pidfd, a signal number, no siginfo, no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Wait until the process behind a pidfd has exited. Returns false on timeout.
pub fn pidfd_wait_exit(fd: &OwnedFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd, count 1.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r > 0 {
            return true;
        }
        if r == 0 {
            return false;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            panic!("poll(pidfd): {e}");
        }
    }
}

fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|x| x.parse::<i32>().ok()));
            }
        }
    }
    out
}

fn descendants_of(pid: i32, out: &mut Vec<i32>) {
    for c in children_of(pid) {
        if !out.contains(&c) {
            out.push(c);
            descendants_of(c, out);
        }
    }
}

/// Kill a child of ours (a cairn run) and everything below it, by pid.
/// The child is stopped first, so it can neither reap (recycling a pid we
/// are about to signal) nor fork while we collect its descendants.
pub fn kill_tree(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let pid = child.id() as i32;
        let p = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGSTOP);
        let mut desc = Vec::new();
        descendants_of(pid, &mut desc);
        for d in desc.iter().rev() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*d),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// The last `max` bytes of a file, for panic messages.
pub fn tail(path: &Path, max: usize) -> String {
    match fs::read(path) {
        Ok(b) => {
            let start = b.len().saturating_sub(max);
            let mut s = String::from_utf8_lossy(&b[start..]).into_owned();
            if start > 0 {
                s.insert_str(0, "[...]\n");
            }
            s
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// Parse a pidfile; the value must read the same twice (no torn writes).
pub fn read_pidfile(path: &Path) -> Option<i32> {
    let parse = || -> Option<i32> { fs::read_to_string(path).ok()?.trim().parse().ok() };
    let first = parse()?;
    std::thread::sleep(Duration::from_millis(20));
    (parse()? == first && first > 0).then_some(first)
}

/// Whether `hay` contains the decimal number `n` not as part of a longer number.
pub fn contains_number(hay: &str, n: i64) -> bool {
    let needle = n.to_string();
    let b = hay.as_bytes();
    let mut from = 0;
    while let Some(i) = hay[from..].find(&needle) {
        let s = from + i;
        let e = s + needle.len();
        let before_ok = s == 0 || !b[s - 1].is_ascii_digit();
        let after_ok = e == b.len() || !b[e].is_ascii_digit();
        if before_ok && after_ok {
            return true;
        }
        from = s + 1;
    }
    false
}

/// Total apparent size in bytes of the regular files under `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    for e in fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display())) {
        let e = e.expect("dir entry");
        let m = fs::symlink_metadata(e.path()).expect("metadata");
        if m.is_dir() {
            total += dir_size(&e.path());
        } else {
            total += m.len();
        }
    }
    total
}

// ---------------------------------------------------------------------------
// Running cairn

/// Run cairn with a timeout; stdout/stderr go to `<out_base>.stdout/.stderr`
/// (kept in the test directory) and are returned as an `Output`.
pub fn run_cairn(args: &[OsString], out_base: &Path, timeout: Duration) -> Output {
    let so = out_base.with_extension("stdout");
    let se = out_base.with_extension("stderr");
    let mut child = cairn_command()
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&so).expect("create stdout file"))
        .stderr(File::create(&se).expect("create stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", cairn_bin().display()));
    match wait_timeout(&mut child, timeout) {
        Some(status) => Output {
            status,
            stdout: fs::read(&so).unwrap_or_default(),
            stderr: fs::read(&se).unwrap_or_default(),
        },
        None => {
            kill_tree(&mut child);
            panic!(
                "`cairn {}` did not finish within {timeout:?}; killed it.\nstderr:\n{}",
                args.iter()
                    .map(|a| a.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" "),
                tail(&se, 8000)
            );
        }
    }
}

/// Opting out of the oracle (docs/ORACLE.md). Every dump of these
/// helpers takes the oracle's snapshot (`--oracle`) and every restore
/// that must succeed compares the restored tree with it (`--compare`),
/// unless its flags hold a marker "@no-oracle: REASON" (dump) or
/// "@no-compare: REASON" (restore): a test whose restore legitimately
/// differs from the dumped tree says so, and why, where it calls the
/// helper. Markers are not passed to cairn.
pub const NO_ORACLE: &str = "@no-oracle:";
/// See [`NO_ORACLE`].
pub const NO_COMPARE: &str = "@no-compare:";

/// The flags without the opt-out markers, and whether `marker` was there.
pub fn oracle_flags<'a>(flags: &[&'a str], marker: &str) -> (Vec<&'a str>, bool) {
    let out: bool = flags.iter().any(|f| f.starts_with(marker));
    let rest = flags
        .iter()
        .copied()
        .filter(|f| !f.starts_with(NO_ORACLE) && !f.starts_with(NO_COMPARE))
        .collect();
    (rest, out)
}

/// `cairn dump -t PID -D DIR --oracle EXTRA...` (no `--oracle` with a
/// [`NO_ORACLE`] marker); returns its output (not checked).
pub fn dump(pid: i32, dir: &Path, extra_flags: &[&str]) -> Output {
    let mut args = vec![os("dump"), os("-t"), os(pid.to_string()), os("-D"), os(dir)];
    let (extra_flags, opted_out) = oracle_flags(extra_flags, NO_ORACLE);
    if !opted_out {
        args.push(os("--oracle"));
    }
    args.extend(extra_flags.iter().map(os));
    let base = dir.with_file_name(format!("cairn-dump-{}", next_id()));
    run_cairn(&args, &base, CAIRN_TIMEOUT)
}

pub fn describe(out: &Output) -> String {
    format!(
        "exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        exit_code(&out.status),
        tail_str(&String::from_utf8_lossy(&out.stdout), 4000),
        tail_str(&String::from_utf8_lossy(&out.stderr), 8000)
    )
}

fn tail_str(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("[...]\n{}", &s[start..])
}

/// Require a successful cairn run.
pub fn assert_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed: {}", describe(out));
}

/// Require that the workload log says PASS (a line "PASS", no "FAIL" line).
pub fn assert_log_pass(log: &Path, what: &str) {
    let text = fs::read_to_string(log).unwrap_or_else(|e| panic!("read {}: {e}", log.display()));
    let pass = text.lines().any(|l| l == "PASS");
    let failed = text.lines().any(|l| l.starts_with("FAIL"));
    assert!(
        pass && !failed,
        "{what}: the workload did not PASS. Its log:\n{}",
        tail_str(&text, 8000)
    );
}

/// A running `cairn restore` (and, once known, the restored process).
/// Dropping it kills both, the restored process through its pidfd and
/// cairn with everything below it.
pub struct RestoreRun {
    pub cairn: Option<Child>,
    /// The restored process's pid, from cairn's pidfile.
    pub pid: i32,
    pidfd: Option<OwnedFd>,
    out_base: PathBuf,
    pidfile: PathBuf,
    log: Option<PathBuf>,
    status: Option<ExitStatus>,
}

impl RestoreRun {
    fn context(&self) -> String {
        let mut s = format!(
            "--- cairn restore stdout ---\n{}\n--- cairn restore stderr ---\n{}",
            tail(&self.out_base.with_extension("stdout"), 4000),
            tail(&self.out_base.with_extension("stderr"), 8000)
        );
        if let Some(log) = &self.log {
            s += &format!("\n--- workload log ---\n{}", tail(log, 6000));
        }
        s
    }

    /// Send a signal to the restored process (through its pidfd).
    pub fn signal(&self, sig: i32) {
        let Some(fd) = self.pidfd.as_ref() else {
            panic!(
                "the restored process {} is not running\n{}",
                self.pid,
                self.context()
            );
        };
        if let Err(e) = pidfd_signal(fd, sig) {
            panic!(
                "signal {sig} to the restored pid {}: {e}\n{}",
                self.pid,
                self.context()
            );
        }
    }

    /// Wait for the restored process to exit (pidfd poll; it need not be our child).
    pub fn wait_restored_exit(&self, timeout: Duration) {
        let Some(fd) = self.pidfd.as_ref() else {
            return; // it was already gone when its pid was read
        };
        if !pidfd_wait_exit(fd, timeout) {
            panic!(
                "the restored process {} did not exit within {timeout:?}\n{}",
                self.pid,
                self.context()
            );
        }
    }

    /// Wait for cairn to exit; panics (after killing everything) on timeout.
    pub fn wait_cairn(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(st) = self.status {
            return st;
        }
        let child = self.cairn.as_mut().expect("cairn child");
        match wait_timeout(child, timeout) {
            Some(st) => {
                self.status = Some(st);
                st
            }
            None => {
                let ctx = self.context();
                self.kill_all();
                panic!("cairn restore did not exit within {timeout:?}; killed it.\n{ctx}");
            }
        }
    }

    /// cairn's output so far (files), with its exit status.
    pub fn output(&self) -> Output {
        Output {
            status: self.status.unwrap_or_else(|| ExitStatus::from_raw(0xff00)),
            stdout: fs::read(self.out_base.with_extension("stdout")).unwrap_or_default(),
            stderr: fs::read(self.out_base.with_extension("stderr")).unwrap_or_default(),
        }
    }

    fn kill_all(&mut self) {
        if let Some(fd) = &self.pidfd {
            let _ = pidfd_signal(fd, libc::SIGKILL);
        }
        if let Some(c) = self.cairn.as_mut() {
            kill_tree(c);
        }
    }
}

impl Drop for RestoreRun {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Spawn `cairn restore -D images --pidfile F [-v] [-d] EXTRA...`. Restores
/// that are expected to fail run without -v, so that what their stderr names
/// is the error, not progress output; the others (`verbose`) run with
/// `--compare` unless `extra` holds a [`NO_COMPARE`] marker.
fn spawn_restore(
    images: &Path,
    extra: &[&str],
    detached: bool,
    verbose: bool,
) -> (Child, PathBuf, PathBuf) {
    let (extra, opted_out) = oracle_flags(extra, NO_COMPARE);
    let extra = &extra[..];
    let n = next_id();
    let pidfile = images.with_file_name(format!("restore-{n}.pid"));
    let out_base = images.with_file_name(format!("cairn-restore-{n}"));
    let _ = fs::remove_file(&pidfile);
    let mut args = vec![
        os("restore"),
        os("-D"),
        os(images),
        os("--pidfile"),
        os(&pidfile),
    ];
    if verbose {
        args.push(os("-v"));
        // Images made by a direct cairn call (pre-dump chains, chkpnt,
        // dumps the test runs itself) may hold no snapshot to compare with.
        if !opted_out && images.join("oracle.img").exists() {
            args.push(os("--compare"));
        } else if !opted_out {
            eprintln!(
                "note: {} holds no oracle snapshot: restore not compared",
                images.display()
            );
        }
    }
    if detached {
        args.push(os("-d"));
    }
    args.extend(extra.iter().map(os));
    let child = cairn_command()
        .args(&args)
        .stdin(Stdio::null())
        .stdout(File::create(out_base.with_extension("stdout")).expect("stdout file"))
        .stderr(File::create(out_base.with_extension("stderr")).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", cairn_bin().display()));
    (child, pidfile, out_base)
}

/// Start `cairn restore -D images --pidfile F -v [-d] EXTRA...` and wait until
/// F names the restored process. Panics (cleaning up) if cairn exits first
/// or nothing happens within `RESTORE_READY_TIMEOUT`, or if the restored pid
/// is not `expected_pid`.
pub fn restore_start(
    images: &Path,
    extra: &[&str],
    detached: bool,
    expected_pid: i32,
    log: Option<&Path>,
) -> RestoreRun {
    let (child, pidfile, out_base) = spawn_restore(images, extra, detached, true);
    let mut run = RestoreRun {
        cairn: Some(child),
        pid: 0,
        pidfd: None,
        out_base,
        pidfile,
        log: log.map(Path::to_path_buf),
        status: None,
    };
    let deadline = Instant::now() + RESTORE_READY_TIMEOUT;
    loop {
        // Check the exit first: a pidfile written just before exiting still counts.
        let exited = run
            .cairn
            .as_mut()
            .unwrap()
            .try_wait()
            .expect("waitpid cairn");
        if let Some(pid) = read_pidfile(&run.pidfile) {
            run.pid = pid;
            if pid != expected_pid {
                // Not knowing what that pid is, leave it alone; Drop kills
                // cairn and its descendants.
                let ctx = run.context();
                panic!("cairn restored pid {pid}, expected the original pid {expected_pid}\n{ctx}");
            }
            run.pidfd = pidfd_open(pid);
            if run.pidfd.is_none() && exited.is_none() {
                let ctx = run.context();
                panic!("cairn's pidfile names pid {pid}, but there is no such process\n{ctx}");
            }
            if let Some(st) = exited {
                run.status = Some(st);
            }
            return run;
        }
        if let Some(st) = exited {
            run.status = Some(st);
            panic!(
                "cairn restore exited ({}) without writing its pidfile\n{}",
                exit_code(&st),
                run.context()
            );
        }
        if Instant::now() >= deadline {
            let ctx = run.context();
            run.kill_all();
            panic!(
                "cairn restore did not write its pidfile within {RESTORE_READY_TIMEOUT:?}\n{ctx}"
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The full restore cycle: `cairn restore` (waiting mode), wait for the
/// pidfile, SIGTERM the restored pid, wait for cairn; require exit code 0 and
/// PASS in the workload log. Returns cairn's output.
pub fn restore_wait(images: &Path, extra_flags: &[&str], expected_pid: i32, log: &Path) -> Output {
    let mut run = restore_start(images, extra_flags, false, expected_pid, Some(log));
    run.signal(libc::SIGTERM);
    let st = run.wait_cairn(EXIT_TIMEOUT);
    let out = run.output();
    assert!(
        st.success(),
        "cairn restore (waiting for the restored workload) exited {}\n{}",
        exit_code(&st),
        run.context()
    );
    assert_log_pass(log, "after restore");
    out
}

/// A restore that must fail: requires a non-zero exit and that no process
/// was restored (cairn never wrote its pidfile). Runs without -v. If it
/// restores anyway, the process is killed (only if it has `expected_pid`,
/// the pid in the images) along with cairn. Returns cairn's output.
pub fn restore_expect_fail(images: &Path, extra_flags: &[&str], expected_pid: i32) -> Output {
    let (child, pidfile, out_base) = spawn_restore(images, extra_flags, false, false);
    let mut run = RestoreRun {
        cairn: Some(child),
        pid: 0,
        pidfd: None,
        out_base,
        pidfile,
        log: None,
        status: None,
    };
    let deadline = Instant::now() + CAIRN_TIMEOUT;
    loop {
        let exited = run
            .cairn
            .as_mut()
            .unwrap()
            .try_wait()
            .expect("waitpid cairn");
        if let Some(pid) = read_pidfile(&run.pidfile) {
            run.pid = pid;
            if pid == expected_pid {
                run.pidfd = pidfd_open(pid);
            }
            let ctx = run.context();
            run.kill_all();
            panic!("the restore was expected to fail, but it restored pid {pid}\n{ctx}");
        }
        if let Some(st) = exited {
            run.status = Some(st);
            let out = run.output();
            assert!(
                !st.success(),
                "the restore was expected to fail but exited 0\n{}",
                run.context()
            );
            return out;
        }
        if Instant::now() >= deadline {
            let ctx = run.context();
            run.kill_all();
            panic!("the failing restore did not exit within {CAIRN_TIMEOUT:?}\n{ctx}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------
// Workloads

#[derive(Default, Clone, Copy)]
pub struct StartOpts {
    /// chmod 0777 the work directory: for workloads that drop root before
    /// writing their pidfile (proc_creds).
    pub world_writable_workdir: bool,
}

/// A started workload. Dropping it SIGKILLs the original process (if still
/// alive and unreaped; it is our child) and removes the test directory
/// unless the test is failing.
pub struct Workload {
    pub name: String,
    /// The pid the workload reported (== its pid as our child).
    pub pid: i32,
    child: Child,
    /// The test directory: `work/` (the workload's cwd), `workload.log`,
    /// `images/` and cairn's outputs.
    pub dir: PathBuf,
    pub work: PathBuf,
    pub log: PathBuf,
    pub images: PathBuf,
}

impl Workload {
    pub fn start(name: &str, args: &[&str]) -> Workload {
        Self::start_opts(name, args, StartOpts::default())
    }

    pub fn start_opts(name: &str, args: &[&str], opts: StartOpts) -> Workload {
        let mode = if opts.world_writable_workdir {
            0o777
        } else {
            0o755
        };
        Self::launch(&workload_bin(name), name, args, mode)
    }

    /// Like [`Workload::start`], but runs the program `exe` (e.g. a copy of
    /// the workload NAME's binary placed where the test wants it).
    pub fn start_exe(exe: &Path, name: &str, args: &[&str]) -> Workload {
        Self::launch(exe, name, args, 0o755)
    }

    /// Starts `exe --pidfile work/ready.pid ARGS` in a fresh test directory
    /// whose `work/` has mode `work_mode`, as a session leader, and waits
    /// until it wrote its pid.
    fn launch(exe: &Path, name: &str, args: &[&str], work_mode: u32) -> Workload {
        let dir = fresh_dir(name);
        let work = dir.join("work");
        fs::create_dir(&work).expect("mkdir work");
        fs::set_permissions(&work, fs::Permissions::from_mode(work_mode)).expect("chmod work");
        let log = dir.join("workload.log");
        let pidfile = work.join("ready.pid");
        // One open file description for both stdout and stderr, not O_APPEND.
        let out = File::create(&log).expect("create the workload log");
        let err = out.try_clone().expect("dup the log fd");
        let mut cmd = Command::new(exe);
        cmd.arg("--pidfile")
            .arg(&pidfile)
            .args(args)
            .current_dir(&work)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: the closure runs in the forked child before exec and only
        // calls setsid(2), which is async-signal-safe. The workload becomes a
        // session and process-group leader, so its images do not refer to
        // the test runner's session.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", exe.display()));
        let mut w = Workload {
            name: name.to_string(),
            pid: child.id() as i32,
            child,
            images: dir.join("images"),
            dir,
            work,
            log,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(pid) = read_pidfile(&pidfile) {
                assert_eq!(
                    pid,
                    w.pid,
                    "workload {name} ({}) wrote pid {pid} but we started pid {}",
                    exe.display(),
                    w.pid
                );
                return w;
            }
            if let Some(st) = w.child.try_wait().expect("waitpid workload") {
                panic!(
                    "workload {name} ({}) exited ({}) before it was ready. Its log:\n{}",
                    exe.display(),
                    exit_code(&st),
                    tail(&w.log, 8000)
                );
            }
            if Instant::now() >= deadline {
                // Drop kills it.
                panic!(
                    "workload {name} ({}, pid {}) was not ready within {READY_TIMEOUT:?}. Its log:\n{}",
                    exe.display(),
                    w.pid,
                    tail(&w.log, 8000)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `cairn dump` of this workload into `self.images`.
    pub fn dump(&self, extra_flags: &[&str]) -> Output {
        dump(self.pid, &self.images, extra_flags)
    }

    /// `cairn dump -v` that must succeed; returns its output.
    pub fn dump_ok(&self, extra_flags: &[&str]) -> Output {
        let mut flags = vec!["-v"];
        flags.extend_from_slice(extra_flags);
        let out = self.dump(&flags);
        assert!(
            out.status.success(),
            "dump of {} (pid {}) failed: {}\n--- workload log ---\n{}",
            self.name,
            self.pid,
            describe(&out),
            tail(&self.log, 4000)
        );
        out
    }

    /// Whether the original process is still running (not exited).
    pub fn original_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// After a dump without --leave-running: the original must go away.
    /// Reaps it (it is our child) and checks the pid is free for the restore.
    pub fn expect_killed_by_dump(&mut self) {
        if wait_timeout(&mut self.child, Duration::from_secs(10)).is_none() {
            panic!(
                "{} (pid {}) still runs 10 s after `cairn dump` without --leave-running",
                self.name, self.pid
            );
        }
        assert!(
            wait_pid_gone(self.pid, Duration::from_secs(5)),
            "pid {} is still in use after the dumped process was reaped",
            self.pid
        );
    }

    /// SIGTERM the original (still our child) and require exit 0 and PASS.
    pub fn terminate_original_expect_pass(&mut self) {
        assert!(
            self.original_alive(),
            "{} (pid {}) is not running any more. Its log:\n{}",
            self.name,
            self.pid,
            tail(&self.log, 6000)
        );
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM the original workload");
        let st = match wait_timeout(&mut self.child, EXIT_TIMEOUT) {
            Some(st) => st,
            None => panic!(
                "{} (pid {}) did not exit within {EXIT_TIMEOUT:?} after SIGTERM (left stopped or \
                 broken by the dump?). Its log:\n{}",
                self.name,
                self.pid,
                tail(&self.log, 6000)
            ),
        };
        assert!(
            st.success(),
            "the original {} exited with {} after SIGTERM. Its log:\n{}",
            self.name,
            exit_code(&st),
            tail(&self.log, 6000)
        );
        assert_log_pass(&self.log, "original after a --leave-running dump");
    }

    /// Restore from `self.images`, SIGTERM, require PASS.
    pub fn restore_wait(&self, extra_flags: &[&str]) -> Output {
        restore_wait(&self.images, extra_flags, self.pid, &self.log)
    }

    /// Start a restore and return it once the restored process runs.
    pub fn restore_start(&self, extra_flags: &[&str], detached: bool) -> RestoreRun {
        restore_start(
            &self.images,
            extra_flags,
            detached,
            self.pid,
            Some(&self.log),
        )
    }

    /// Remember the log's size and mtime (call right after the dump) ...
    pub fn log_snapshot(&self) -> LogSnapshot {
        let m = fs::metadata(&self.log).expect("stat the workload log");
        LogSnapshot {
            len: m.len(),
            mtime: m.modified().expect("mtime"),
        }
    }

    /// ... and put the log back to that state (same inode, size and mtime),
    /// so that a second restore from the same images does not see a changed
    /// file. (The restored process writes to the log: PASS, notes.)
    pub fn log_reset(&self, snap: &LogSnapshot) {
        let f = File::options()
            .write(true)
            .open(&self.log)
            .expect("open the workload log");
        f.set_len(snap.len).expect("truncate the workload log");
        f.set_modified(snap.mtime).expect("reset the log's mtime");
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

pub struct LogSnapshot {
    len: u64,
    mtime: std::time::SystemTime,
}

impl Drop for Workload {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Still our unreaped child: its pid cannot have been recycled.
            // Its children go too (unix_pair's child waits for a signal
            // from its parent forever: killing the root alone left it
            // running after the tests).
            PidTracker::new().track_tree(self.pid);
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Start NAME, dump it (which kills it), check the original is gone, restore,
/// SIGTERM the restored process and require PASS. Returns the workload (its
/// images and log stay until it is dropped).
pub fn checkpoint_restore(name: &str, args: &[&str]) -> Workload {
    checkpoint_restore_opts(name, args, StartOpts::default())
}

pub fn checkpoint_restore_opts(name: &str, args: &[&str], opts: StartOpts) -> Workload {
    let mut w = Workload::start_opts(name, args, opts);
    w.dump_ok(&[]);
    w.expect_killed_by_dump();
    w.restore_wait(&[]);
    w
}

/// Start NAME, dump it with --leave-running, and require that the original
/// keeps working: SIGTERM makes it PASS with exit status 0.
pub fn leave_running(name: &str, args: &[&str]) -> Workload {
    let mut w = Workload::start(name, args);
    w.dump_ok(&["--leave-running"]);
    w.terminate_original_expect_pass();
    w
}

// ---------------------------------------------------------------------------
// A tiny JSON syntax checker (no serde in dev-dependencies).

/// Whether `s` is one syntactically valid JSON value (surrounding whitespace allowed).
pub fn is_valid_json(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    json_ws(b, &mut i);
    if !json_value(b, &mut i, 0) {
        return false;
    }
    json_ws(b, &mut i);
    i == b.len()
}

fn json_ws(b: &[u8], i: &mut usize) {
    while *i < b.len() && matches!(b[*i], b' ' | b'\t' | b'\n' | b'\r') {
        *i += 1;
    }
}

fn json_lit(b: &[u8], i: &mut usize, lit: &[u8]) -> bool {
    if b[*i..].starts_with(lit) {
        *i += lit.len();
        true
    } else {
        false
    }
}

fn json_string(b: &[u8], i: &mut usize) -> bool {
    if b.get(*i) != Some(&b'"') {
        return false;
    }
    *i += 1;
    while *i < b.len() {
        match b[*i] {
            b'"' => {
                *i += 1;
                return true;
            }
            b'\\' => {
                *i += 1;
                match b.get(*i) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => *i += 1,
                    Some(b'u') => {
                        if b.len() < *i + 5 || !b[*i + 1..*i + 5].iter().all(u8::is_ascii_hexdigit)
                        {
                            return false;
                        }
                        *i += 5;
                    }
                    _ => return false,
                }
            }
            c if c < 0x20 => return false,
            _ => *i += 1,
        }
    }
    false
}

fn json_number(b: &[u8], i: &mut usize) -> bool {
    let start = *i;
    if b.get(*i) == Some(&b'-') {
        *i += 1;
    }
    let digits = |i: &mut usize| {
        let s = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > s
    };
    if !digits(i) {
        return false;
    }
    if b.get(*i) == Some(&b'.') {
        *i += 1;
        if !digits(i) {
            return false;
        }
    }
    if matches!(b.get(*i), Some(b'e' | b'E')) {
        *i += 1;
        if matches!(b.get(*i), Some(b'+' | b'-')) {
            *i += 1;
        }
        if !digits(i) {
            return false;
        }
    }
    *i > start
}

fn json_value(b: &[u8], i: &mut usize, depth: usize) -> bool {
    if depth > 256 || *i >= b.len() {
        return false;
    }
    match b[*i] {
        b'{' => {
            *i += 1;
            json_ws(b, i);
            if b.get(*i) == Some(&b'}') {
                *i += 1;
                return true;
            }
            loop {
                json_ws(b, i);
                if !json_string(b, i) {
                    return false;
                }
                json_ws(b, i);
                if b.get(*i) != Some(&b':') {
                    return false;
                }
                *i += 1;
                json_ws(b, i);
                if !json_value(b, i, depth + 1) {
                    return false;
                }
                json_ws(b, i);
                match b.get(*i) {
                    Some(b',') => *i += 1,
                    Some(b'}') => {
                        *i += 1;
                        return true;
                    }
                    _ => return false,
                }
            }
        }
        b'[' => {
            *i += 1;
            json_ws(b, i);
            if b.get(*i) == Some(&b']') {
                *i += 1;
                return true;
            }
            loop {
                json_ws(b, i);
                if !json_value(b, i, depth + 1) {
                    return false;
                }
                json_ws(b, i);
                match b.get(*i) {
                    Some(b',') => *i += 1,
                    Some(b']') => {
                        *i += 1;
                        return true;
                    }
                    _ => return false,
                }
            }
        }
        b'"' => json_string(b, i),
        b't' => json_lit(b, i, b"true"),
        b'f' => json_lit(b, i, b"false"),
        b'n' => json_lit(b, i, b"null"),
        _ => json_number(b, i),
    }
}

/// Self-test of the helpers that do not need cairn (runs in every binary
/// that includes this module, so the checker itself cannot silently rot).
pub fn selftest_helpers() {
    assert!(is_valid_json(
        r#"{"a": [1, -2.5e3, true, null, "x\"\u00e9"], "b": {}}"#
    ));
    assert!(is_valid_json(" [ ] "));
    assert!(!is_valid_json(r#"{"a": 1,}"#));
    assert!(!is_valid_json(r#"{"a" 1}"#));
    assert!(!is_valid_json("[1] x"));
    assert!(!is_valid_json(""));
    assert!(contains_number("error: pid 1234 is taken", 1234));
    assert!(!contains_number("error: pid 12345 is taken", 1234));
    assert!(!contains_number("pid 91234", 1234));
    assert!(contains_number("1234", 1234));
}

/// Append one byte to an existing file (changes its size and mtime).
pub fn append_byte(path: &Path) {
    let mut f = File::options()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {} for append: {e}", path.display()));
    f.write_all(b"!").expect("append a byte");
}

// ---------------------------------------------------------------------------
// Process trees (tree_* and thread_* workloads)
//
// A tree workload's root is the harness's child; its descendants are not.
// `PidTracker` holds a pidfd for every process of the tree it has seen, so
// that cleanup can signal them without ever hitting a recycled pid, and
// `TreeTest` runs the dump/restore cycle of a whole tree, comparing the
// restored tree (pids, tids, parents, groups, sessions, stopped/zombie
// states) with the original and killing everything on every exit path.

/// What /proc says about one process of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    /// The state letter of /proc/PID/stat (R, S, D, T, t, Z, ...).
    pub state: char,
    /// Thread ids (/proc/PID/task), sorted.
    pub tids: Vec<i32>,
    /// The first non-zero TracerPid among the threads (0: nobody ptraces it).
    pub tracer: i32,
}

/// Read one process's `ProcInfo`; None if it is gone.
pub fn proc_info(pid: i32) -> Option<ProcInfo> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut it = rest.split_whitespace();
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    let pgid = it.next()?.parse().ok()?;
    let sid = it.next()?.parse().ok()?;
    let mut tids: Vec<i32> = fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    let tracer = tids
        .iter()
        .filter_map(|t| fs::read_to_string(format!("/proc/{pid}/task/{t}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("TracerPid:"))
                .and_then(|v| v.trim().parse::<i32>().ok())
        })
        .find(|&t| t != 0)
        .unwrap_or(0);
    Some(ProcInfo {
        pid,
        ppid,
        pgid,
        sid,
        state,
        tids,
        tracer,
    })
}

/// `root` and all its descendants (root first), from
/// /proc/PID/task/*/children.
pub fn tree_pids(root: i32) -> Vec<i32> {
    let mut out = vec![root];
    descendants_of(root, &mut out);
    out
}

/// `ProcInfo` of every process of the tree below (and including) `root`,
/// sorted by pid.
pub fn tree_snapshot(root: i32) -> Vec<ProcInfo> {
    let mut v: Vec<ProcInfo> = tree_pids(root).into_iter().filter_map(proc_info).collect();
    v.sort_by_key(|p| p.pid);
    v
}

pub fn format_tree(tree: &[ProcInfo]) -> String {
    let mut s = String::new();
    for p in tree {
        s += &format!(
            "  pid {} ppid {} pgid {} sid {} state {} tracer {} tids {:?}\n",
            p.pid, p.ppid, p.pgid, p.sid, p.state, p.tracer, p.tids
        );
    }
    s
}

/// How `after` (a restored or a --leave-running tree) differs from
/// `before`. The root's ppid is compared only with `root_ppid`, if given.
/// States: a stopped ('T') or zombie ('Z') process must stay so; no other
/// process may be stopped, traced or dead.
pub fn tree_diff(
    before: &[ProcInfo],
    after: &[ProcInfo],
    root: i32,
    root_ppid: Option<i32>,
) -> Vec<String> {
    let mut d = Vec::new();
    for b in before {
        let Some(a) = after.iter().find(|a| a.pid == b.pid) else {
            d.push(format!("pid {} (ppid {}) is missing", b.pid, b.ppid));
            continue;
        };
        let p = b.pid;
        if p == root {
            if let Some(want) = root_ppid {
                if a.ppid != want {
                    d.push(format!("root {p}: ppid {}, expected {want}", a.ppid));
                }
            }
        } else if a.ppid != b.ppid {
            d.push(format!("pid {p}: ppid {}, was {}", a.ppid, b.ppid));
        }
        if a.pgid != b.pgid {
            d.push(format!("pid {p}: pgid {}, was {}", a.pgid, b.pgid));
        }
        if a.sid != b.sid {
            d.push(format!("pid {p}: sid {}, was {}", a.sid, b.sid));
        }
        if a.tids != b.tids {
            d.push(format!("pid {p}: threads {:?}, were {:?}", a.tids, b.tids));
        }
        if a.tracer != 0 {
            d.push(format!("pid {p}: still ptraced by {}", a.tracer));
        }
        let stopped_or_dead = |c: char| matches!(c, 'T' | 't' | 'Z' | 'X' | 'x');
        if matches!(b.state, 'T' | 'Z') {
            if a.state != b.state {
                d.push(format!("pid {p}: state '{}', was '{}'", a.state, b.state));
            }
        } else if stopped_or_dead(a.state) {
            d.push(format!("pid {p}: state '{}', was '{}'", a.state, b.state));
        }
    }
    for a in after {
        if !before.iter().any(|b| b.pid == a.pid) {
            d.push(format!(
                "unexpected process {} (ppid {}, state '{}')",
                a.pid, a.ppid, a.state
            ));
        }
    }
    d
}

/// Whether the process behind a pidfd has exited (zombies included).
pub fn pidfd_exited(fd: &OwnedFd) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, count 1, no wait.
    let r = unsafe { libc::poll(&mut pfd, 1, 0) };
    r > 0
}

fn proc_ppid(pid: i32) -> Option<i32> {
    proc_info(pid).map(|p| p.ppid)
}

/// Pidfds of every process of one or more trees seen so far. Dropping it
/// (or `kill_all`) stops and then SIGKILLs all of them, and whatever they
/// forked meanwhile; signals go through pidfds only.
pub struct PidTracker {
    procs: Mutex<Vec<(i32, OwnedFd)>>,
}

impl Default for PidTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl PidTracker {
    pub fn new() -> PidTracker {
        PidTracker {
            procs: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(i32, OwnedFd)>> {
        self.procs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Track one process. `parent`: the process it was found under; the
    /// pidfd is kept only if the pid still has that parent once the pidfd
    /// is open (so a pid recycled meanwhile is never tracked).
    fn track_one(&self, pid: i32, parent: Option<i32>) {
        if self
            .lock()
            .iter()
            .any(|(p, fd)| *p == pid && !pidfd_exited(fd))
        {
            return;
        }
        let Some(fd) = pidfd_open(pid) else { return };
        if let Some(pp) = parent {
            if proc_ppid(pid) != Some(pp) {
                return;
            }
        }
        self.lock().push((pid, fd));
    }

    /// Track `root` (a pid known to be right: our child, or read from a
    /// pidfile) and all its current descendants. Returns the tree's pids.
    pub fn track_tree(&self, root: i32) -> Vec<i32> {
        self.track_one(root, None);
        let mut seen = vec![root];
        let mut todo = vec![root];
        while let Some(p) = todo.pop() {
            for c in children_of(p) {
                if !seen.contains(&c) {
                    seen.push(c);
                    self.track_one(c, Some(p));
                    todo.push(c);
                }
            }
        }
        seen
    }

    /// Pids of the tracked processes that have not exited.
    pub fn live(&self) -> Vec<i32> {
        self.lock()
            .iter()
            .filter(|(_, fd)| !pidfd_exited(fd))
            .map(|(p, _)| *p)
            .collect()
    }

    /// Whether the tracked process `pid` (any tracked instance) still runs.
    pub fn is_live(&self, pid: i32) -> bool {
        self.lock()
            .iter()
            .any(|(p, fd)| *p == pid && !pidfd_exited(fd))
    }

    /// SIGSTOP every live tracked process and track what they forked, until
    /// nothing new shows up; then SIGKILL everything tracked.
    pub fn kill_all(&self) {
        for _ in 0..50 {
            let live = self.live();
            for (p, fd) in self.lock().iter() {
                if live.contains(p) {
                    let _ = pidfd_signal(fd, libc::SIGSTOP);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
            let before = self.lock().len();
            for p in &live {
                self.track_tree(*p);
            }
            if self.lock().len() == before {
                break;
            }
        }
        for (_, fd) in self.lock().iter() {
            let _ = pidfd_signal(fd, libc::SIGKILL);
        }
    }
}

impl Drop for PidTracker {
    fn drop(&mut self) {
        self.kill_all();
    }
}

impl RestoreRun {
    /// cairn's output and the workload log, for messages.
    pub fn describe_run(&self) -> String {
        self.context()
    }

    /// pid of the `cairn restore` process, while it is our unreaped child.
    pub fn cairn_pid(&self) -> Option<i32> {
        match (&self.cairn, self.status) {
            (Some(c), None) => Some(c.id() as i32),
            _ => None,
        }
    }
}

/// Wait until init has reaped the orphans it had: an orphan zombie created
/// now is reaped no earlier than the ones before it. After a dump killed a
/// tree, the killed children are zombies of init until it reaps them, and
/// their pids cannot be restored before. (Used where the harness cannot
/// know every pid of the dumped tree, e.g. a tree that keeps forking.)
pub fn wait_init_reaped_orphans(timeout: Duration) {
    let out = Command::new("sh")
        .args(["-c", "true & echo $!"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("run sh");
    let Ok(pid) = String::from_utf8_lossy(&out.stdout).trim().parse::<i32>() else {
        panic!("sh printed no pid: {:?}", out);
    };
    if !wait_pid_gone(pid, timeout) {
        panic!("init did not reap the orphan {pid} within {timeout:?}");
    }
}

/// Why BPF (the inventory's task iterator and the fork tracker) must work
/// here, or None: `CAIRN_EXPECT_BPF=1`, or a VM of `cargo xtask vm-test`
/// (`CAIRN_VM_KERNEL`, set by its script) of Linux 6.1 or newer, where
/// both load (docs/ARCHITECTURE.md, BPF, "Per kernel"). There a test that
/// would skip for want of BPF fails instead.
pub fn bpf_expected() -> Option<String> {
    if std::env::var("CAIRN_EXPECT_BPF").is_ok_and(|v| v == "1") {
        return Some("CAIRN_EXPECT_BPF=1".into());
    }
    let vm = std::env::var("CAIRN_VM_KERNEL").ok()?;
    let mut it = vm.split('.').map(|n| n.parse::<u32>().ok());
    let (major, minor) = (it.next()??, it.next().flatten().unwrap_or(0));
    ((major, minor) >= (6, 1)).then(|| format!("a vm-test VM of Linux {vm} (CAIRN_VM_KERNEL)"))
}

/// `why` BPF cannot be used, or a panic where BPF is expected to work
/// ([`bpf_expected`]).
fn unless_bpf_expected(what: &str, why: Option<String>) -> Option<String> {
    if let (Some(why), Some(expected)) = (&why, bpf_expected()) {
        panic!("{what} should work here ({expected}), but cannot: {why}");
    }
    why
}

/// Why cairn's BPF fork tracking cannot be used here (the
/// `fork_tracking` mechanism of `cairn check --json` with its detail), or
/// None when it can.
pub fn fork_tracking_unavailable() -> Option<String> {
    let dir = fresh_dir("fork-tracking-check");
    let out = run_cairn(
        &[OsString::from("check"), OsString::from("--json")],
        &dir.join("check"),
        Duration::from_secs(60),
    );
    assert_ok(&out, "cairn check --json");
    let json = String::from_utf8_lossy(&out.stdout).into_owned();
    let key = "\"fork_tracking\":{\"mechanism\":";
    let at = json
        .find(key)
        .unwrap_or_else(|| panic!("no fork_tracking in cairn check --json: {json}"));
    let why = if json[at + key.len()..].starts_with("\"bpf\"") {
        None
    } else {
        Some(json[at..(at + 300).min(json.len())].to_string())
    };
    unless_bpf_expected("BPF fork tracking", why)
}

/// Options of `tree_checkpoint_restore`.
#[derive(Clone, Copy)]
pub struct TreeOpts {
    /// Compare the restored tree with the tree at readiness (pids, tids,
    /// ppids, groups, sessions, stopped/zombie states). Off for workloads
    /// whose tree keeps changing.
    pub compare_tree: bool,
    /// Sleep this long between readiness and the dump.
    pub dump_delay: Duration,
    /// Upper bound for the apparent size of the image directory.
    pub max_image_bytes: Option<u64>,
    /// Flags for `cairn dump` (after `-v`).
    pub dump_flags: &'static [&'static str],
}

impl Default for TreeOpts {
    fn default() -> Self {
        TreeOpts {
            compare_tree: true,
            dump_delay: Duration::ZERO,
            max_image_bytes: None,
            dump_flags: &[],
        }
    }
}

/// A tree workload under test: the workload (its root is our child), the
/// tracker of every process seen in its trees (original and restored), the
/// restore run, and the tree as it was at readiness. Dropping it kills
/// everything tracked first, then the restore and the workload as usual.
pub struct TreeTest {
    pub run: Option<RestoreRun>,
    pub tracker: PidTracker,
    pub w: Workload,
    /// The original tree at readiness.
    pub before: Vec<ProcInfo>,
    /// The output of the last `dump_ok`.
    pub dump_out: Option<Output>,
}

impl Drop for TreeTest {
    fn drop(&mut self) {
        if let Some(run) = &self.run {
            if let Some(c) = run.cairn_pid() {
                self.tracker.track_tree(c);
            }
            if run.pid > 0 && self.tracker.is_live(run.pid) {
                self.tracker.track_tree(run.pid);
            }
        }
        if self.w.original_alive() {
            self.tracker.track_tree(self.w.pid);
        }
        self.tracker.kill_all();
    }
}

impl TreeTest {
    /// Start the workload and record its tree.
    pub fn start(name: &str, args: &[&str]) -> TreeTest {
        let w = Workload::start(name, args);
        let tracker = PidTracker::new();
        tracker.track_tree(w.pid);
        let before = tree_snapshot(w.pid);
        TreeTest {
            run: None,
            tracker,
            w,
            before,
            dump_out: None,
        }
    }

    /// `cairn dump -v EXTRA` of the tree that must succeed. Tracks the tree
    /// once more right before.
    pub fn dump_ok(&mut self, extra_flags: &[&str]) {
        if self.w.original_alive() {
            self.tracker.track_tree(self.w.pid);
        }
        self.dump_out = Some(self.w.dump_ok(extra_flags));
    }

    /// The stderr (log) of the last `dump_ok`.
    pub fn dump_log(&self) -> String {
        self.dump_out
            .as_ref()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .unwrap_or_default()
    }

    /// After a dump without --leave-running: the root (our child) must be
    /// gone, and every process of the tree must be gone (dead and reaped,
    /// so that its pid is free for the restore) within 15 s.
    pub fn expect_tree_killed_by_dump(&mut self) {
        self.w.expect_killed_by_dump();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let running: Vec<i32> = self
                .before
                .iter()
                .map(|p| p.pid)
                .filter(|&p| self.tracker.is_live(p))
                .collect();
            let present: Vec<i32> = self
                .before
                .iter()
                .map(|p| p.pid)
                .filter(|&p| pid_exists(p))
                .collect();
            if running.is_empty() && present.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                let now: Vec<ProcInfo> = present.iter().filter_map(|&p| proc_info(p)).collect();
                panic!(
                    "15 s after `cairn dump` (without --leave-running) of {}, processes of the \
                     dumped tree still run ({running:?}) or their pids are still taken \
                     ({present:?}):\n{}",
                    self.w.name,
                    format_tree(&now)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Start `cairn restore` (waiting for the pidfile) and track the
    /// restored tree and cairn.
    pub fn restore_start(&mut self, extra_flags: &[&str], detached: bool) {
        let run = self.w.restore_start(extra_flags, detached);
        if let Some(c) = run.cairn_pid() {
            self.tracker.track_tree(c);
        }
        self.tracker.track_tree(run.pid);
        self.run = Some(run);
    }

    fn run(&self) -> &RestoreRun {
        self.run.as_ref().expect("restore_start first")
    }

    /// The restored tree must equal the original (retrying for up to 3 s,
    /// in case cairn writes its pidfile before the last details settle).
    /// Without -d the root's parent must be cairn.
    pub fn check_restored_tree(&self) {
        let run = self.run();
        let root_ppid = run.cairn_pid();
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            self.tracker.track_tree(run.pid);
            let after = tree_snapshot(run.pid);
            let diff = tree_diff(&self.before, &after, self.w.pid, root_ppid);
            if diff.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the restored tree of {} differs from the dumped one:\n  {}\nbefore the \
                     dump:\n{}after restore:\n{}{}",
                    self.w.name,
                    diff.join("\n  "),
                    format_tree(&self.before),
                    format_tree(&after),
                    run.describe_run()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM the restored root, require cairn's exit code 0 and PASS, and
    /// that no process of the restored tree is left running.
    pub fn finish(&mut self) {
        let run = self.run.as_mut().expect("restore_start first");
        run.signal(libc::SIGTERM);
        let st = run.wait_cairn(EXIT_TIMEOUT);
        assert!(
            st.success(),
            "cairn restore (waiting for the restored {}) exited {}\n{}",
            self.w.name,
            exit_code(&st),
            run.describe_run()
        );
        assert_log_pass(&self.w.log, "after restore");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let live = self.tracker.live();
            if live.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                let now: Vec<ProcInfo> = live.iter().filter_map(|&p| proc_info(p)).collect();
                panic!(
                    "processes of the restored {} tree still run 10 s after its root exited:\n{}",
                    self.w.name,
                    format_tree(&now)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Checks for a --leave-running dump: every process of the tree still
    /// exists with the same ids and threads, is neither stopped nor traced.
    pub fn check_tree_left_running(&self) {
        let root_ppid = self
            .before
            .iter()
            .find(|p| p.pid == self.w.pid)
            .map(|p| p.ppid);
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let after = tree_snapshot(self.w.pid);
            let diff = tree_diff(&self.before, &after, self.w.pid, root_ppid);
            if diff.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "after `cairn dump --leave-running`, the tree of {} differs:\n  {}\nbefore \
                     the dump:\n{}after it:\n{}",
                    self.w.name,
                    diff.join("\n  "),
                    format_tree(&self.before),
                    format_tree(&after)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The checkpoint/restore cycle of a tree workload: start NAME, (wait
/// `dump_delay`), dump it (which must kill the whole tree), check the image
/// size if asked, restore, compare the restored tree with the original if
/// asked, SIGTERM the restored root and require exit code 0 and PASS.
pub fn tree_checkpoint_restore(name: &str, args: &[&str], opts: TreeOpts) -> TreeTest {
    let mut t = TreeTest::start(name, args);
    if !opts.dump_delay.is_zero() {
        std::thread::sleep(opts.dump_delay);
    }
    t.dump_ok(opts.dump_flags);
    t.expect_tree_killed_by_dump();
    if !opts.compare_tree {
        wait_init_reaped_orphans(Duration::from_secs(15));
    }
    if let Some(max) = opts.max_image_bytes {
        let size = dir_size(&t.w.images);
        assert!(
            size < max,
            "the images of {name} take {size} bytes, more than the limit of {max}"
        );
    }
    t.restore_start(&[], false);
    if opts.compare_tree {
        t.check_restored_tree();
    }
    t.finish();
    t
}

/// Run a workload without cairn: start it, SIGTERM the root, require exit
/// code 0 and PASS (checks the workload's own logic). Everything it forked
/// is killed on the way out.
pub fn run_without_cairn(name: &str, args: &[&str]) {
    let mut t = TreeTest::start(name, args);
    t.w.terminate_original_expect_pass();
}

/// Self-test of the tree helpers that do not need cairn: `tree_diff` on
/// made-up trees, and `proc_info`/`tree_snapshot` on a real two-level tree
/// (sh with a sleeping child), which is then killed through a `PidTracker`.
pub fn selftest_tree_helpers() {
    let p = |pid, ppid, state, tids: &[i32]| ProcInfo {
        pid,
        ppid,
        pgid: 100,
        sid: 100,
        state,
        tids: tids.to_vec(),
        tracer: 0,
    };
    let before = vec![
        p(100, 1, 'S', &[100, 101]),
        p(102, 100, 'T', &[102]),
        p(103, 100, 'Z', &[103]),
    ];
    assert!(tree_diff(&before, &before, 100, Some(1)).is_empty());
    let mut after = before.clone();
    after[0].ppid = 55;
    assert!(tree_diff(&before, &after, 100, None).is_empty());
    assert_eq!(tree_diff(&before, &after, 100, Some(1)).len(), 1);
    let mut after = before.clone();
    after[1].state = 'S';
    after[2].state = 'S';
    assert_eq!(tree_diff(&before, &after, 100, None).len(), 2);
    let mut after = before.clone();
    after[0].tids = vec![100];
    after[1].pgid = 102;
    after[2].ppid = 1;
    after.push(p(104, 100, 'S', &[104]));
    assert_eq!(tree_diff(&before, &after, 100, None).len(), 4);
    let mut after = before.clone();
    after[0].state = 't';
    after[0].tracer = 4242;
    assert_eq!(tree_diff(&before, &after, 100, None).len(), 2);
    assert_eq!(tree_diff(&before, &before[..2], 100, None).len(), 1);

    // A real tree: sh -> sleep.
    let mut child = Command::new("sh")
        .args(["-c", "sleep 1000 & wait"])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sh");
    let pid = child.id() as i32;
    let tracker = PidTracker::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let pids = loop {
        let pids = tracker.track_tree(pid);
        if pids.len() == 2 {
            break pids;
        }
        assert!(Instant::now() < deadline, "sh did not start its child");
        std::thread::sleep(Duration::from_millis(10));
    };
    let snap = tree_snapshot(pid);
    assert_eq!(snap.len(), 2, "{}", format_tree(&snap));
    assert_eq!(snap.iter().find(|x| x.pid != pid).unwrap().ppid, pid);
    assert_eq!(tracker.live().len(), 2);
    tracker.kill_all();
    let _ = child.wait();
    assert!(
        wait_pid_gone(pids[1], Duration::from_secs(15)),
        "the tracked grandchild {} survived kill_all",
        pids[1]
    );
    assert!(tracker.live().is_empty());
}

// ---------------------------------------------------------------------------
// chkpnt / resume, the commands of the Solaris guide (tests/chkpnt.rs)

/// The `chkpnt` of this build: a link to cairn made by build.rs.
pub fn chkpnt_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cairn")).with_file_name("chkpnt")
}

/// The `resume` of this build: a link to cairn made by build.rs.
pub fn resume_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cairn")).with_file_name("resume")
}

/// Run `bin ARGS` in `cwd` with a timeout; stdout/stderr go to
/// `<out_base>.stdout/.stderr` and are returned as an `Output`. On timeout
/// the tool and everything below it is killed and the test fails.
pub fn run_tool_in(
    bin: &Path,
    args: &[OsString],
    cwd: &Path,
    out_base: &Path,
    timeout: Duration,
) -> Output {
    let so = out_base.with_extension("stdout");
    let se = out_base.with_extension("stderr");
    let mut child = Command::new(bin)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(File::create(&so).expect("create stdout file"))
        .stderr(File::create(&se).expect("create stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    match wait_timeout(&mut child, timeout) {
        Some(status) => Output {
            status,
            stdout: fs::read(&so).unwrap_or_default(),
            stderr: fs::read(&se).unwrap_or_default(),
        },
        None => {
            kill_tree(&mut child);
            panic!(
                "`{} {}` did not finish within {timeout:?}; killed it.\nstderr:\n{}",
                bin.display(),
                args.iter()
                    .map(|a| a.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" "),
                tail(&se, 8000)
            );
        }
    }
}

/// A process restored detached (by `resume`), which is not our child:
/// held through a pidfd and SIGKILLed on drop unless it has exited.
pub struct Resumed {
    pub pid: i32,
    pidfd: Option<OwnedFd>,
}

impl Resumed {
    /// Takes hold of `pid`, which must be running.
    pub fn hold(pid: i32) -> Resumed {
        let pidfd = pidfd_open(pid);
        assert!(pidfd.is_some(), "the resumed process {pid} is not running");
        Resumed { pid, pidfd }
    }

    /// SIGTERM it, wait for its exit and require PASS in `log`.
    pub fn terminate_expect_pass(mut self, log: &Path) {
        let fd = self.pidfd.take().expect("pidfd");
        if let Err(e) = pidfd_signal(&fd, libc::SIGTERM) {
            panic!(
                "SIGTERM to the resumed pid {}: {e}. Its log:\n{}",
                self.pid,
                tail(log, 6000)
            );
        }
        if !pidfd_wait_exit(&fd, EXIT_TIMEOUT) {
            let _ = pidfd_signal(&fd, libc::SIGKILL);
            panic!(
                "the resumed pid {} did not exit within {EXIT_TIMEOUT:?}. Its log:\n{}",
                self.pid,
                tail(log, 6000)
            );
        }
        assert_log_pass(log, "after resume");
    }
}

impl Drop for Resumed {
    fn drop(&mut self) {
        if let Some(fd) = &self.pidfd {
            let _ = pidfd_signal(fd, libc::SIGKILL);
            let _ = pidfd_wait_exit(fd, Duration::from_secs(5));
        }
    }
}

/// Deletes the nftables tables (`inet cairn_<pid>_*`) that a dump of root
/// `pid` with `--tcp-established` left, for tests that fail between dump
/// and restore. Touches no other table.
pub fn remove_lock_tables(pid: i32) {
    let Ok(out) = Command::new("nft").args(["list", "tables"]).output() else {
        return;
    };
    let prefix = format!("cairn_{pid}_");
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(t) = l
            .strip_prefix("table inet ")
            .filter(|t| t.starts_with(&prefix))
        {
            let _ = Command::new("nft")
                .args(["delete", "table", "inet", t])
                .output();
        }
    }
}

/// Why files under `dir` cannot be found again from a kernel file handle
/// (name_to_handle_at, then open_by_handle_at), which cairn needs for
/// inotify and fanotify watches; None when they can. An overlayfs without
/// `nfs_export=on` (the root of `cargo xtask vm-test`'s guests) gives
/// ESTALE, and cairn's dump refuses such a watch naming the error.
pub fn file_handles_undecodable(dir: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // struct file_handle: handle_bytes (u32), handle_type (i32), f_handle.
    let mut fh = [0u32; 2 + 32];
    fh[0] = 128;
    let mut mnt_id: libc::c_int = 0;
    // SAFETY: `c` is a NUL-terminated path, `fh` a file_handle with room
    // for the 128 bytes its first word declares, `mnt_id` a valid int.
    let r = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            c.as_ptr(),
            fh.as_mut_ptr(),
            &mut mnt_id as *mut libc::c_int,
            0,
        )
    };
    if r < 0 {
        return Some(format!(
            "name_to_handle_at({}): {}",
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    let mount = File::open(dir).ok()?;
    // SAFETY: `fh` was filled by name_to_handle_at above; the mount fd is
    // open for the call; the returned fd is owned below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount.as_raw_fd(),
            fh.as_ptr(),
            libc::O_PATH,
        )
    };
    if fd < 0 {
        return Some(format!(
            "open_by_handle_at on {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fd is a new descriptor this function owns.
    drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    None
}

/// Why the BPF iterators cannot be used here (from `cairn check --json`),
/// or None when they can.
pub fn bpf_iterators_unavailable() -> Option<String> {
    let dir = fresh_dir("bpf-check");
    let out = run_cairn(
        &[OsString::from("check"), OsString::from("--json")],
        &dir.join("check"),
        Duration::from_secs(60),
    );
    assert_ok(&out, "cairn check --json");
    let json = String::from_utf8_lossy(&out.stdout).into_owned();
    for f in ["bpf_iter", "initial_pid_ns"] {
        let key = format!("\"{f}\":{{\"available\":");
        let at = json
            .find(&key)
            .unwrap_or_else(|| panic!("no {f} in cairn check --json: {json}"));
        if !json[at + key.len()..].starts_with("true") {
            let why = format!("{f}: {}", &json[at..(at + 300).min(json.len())]);
            return unless_bpf_expected("the BPF inventory", Some(why));
        }
    }
    None
}
pub mod inherited;
pub mod job;
pub mod mpi;
pub mod netns;
pub mod refuse;
pub mod slurm;
pub mod tmpfs;

/// Why the socket option (`level`, `opt`, named `what`) is not in this
/// kernel (setsockopt on a fresh socket of `family`/`ty` fails with
/// ENOPROTOOPT), or None when it is: options newer than the oldest
/// kernel of `cargo xtask vm-test` (SO_BUF_LOCK 5.14, SO_PASSPIDFD 6.5).
pub fn sockopt_missing(family: i32, ty: i32, level: i32, opt: i32, what: &str) -> Option<String> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(family, ty, 0) };
    if fd < 0 {
        return Some(format!(
            "{what}: socket: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fd is a new descriptor this function owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let v: libc::c_int = 0;
    // SAFETY: a valid fd, a c_int option value and its size.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    let e = std::io::Error::last_os_error();
    (r < 0 && e.raw_os_error() == Some(libc::ENOPROTOOPT))
        .then(|| format!("{what} is not in this kernel ({e})"))
}

/// Why this kernel cannot remove a TCP TIME_WAIT entry with SOCK_DESTROY
/// (which cairn's restore of a listener whose port has some needs:
/// `tcp_abort` takes TIME_WAIT sockets since Linux 6.0, and the kernel
/// needs CONFIG_INET_DIAG_DESTROY), or None when it can. Probed on a
/// loopback connection of its own, closed by the accepting side, with
/// `ss -K` (which passes over a socket the kernel refuses to destroy).
pub fn time_wait_destroy_missing() -> Option<String> {
    use std::io::Read;
    let l = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
    let port = l.local_addr().ok()?.port();
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let (a, _) = l.accept().ok()?;
    drop(a);
    let mut buf = [0u8; 1];
    let _ = c.read(&mut buf);
    drop(c);
    let sport = format!(":{port}");
    let ss = |kill: bool| {
        let mut cmd = Command::new("ss");
        if kill {
            cmd.arg("-K");
        }
        cmd.args(["-Htn", "state", "time-wait", "sport", "=", &sport]);
        cmd.stdin(Stdio::null()).stderr(Stdio::null()).output()
    };
    let left = |o: &Output| !String::from_utf8_lossy(&o.stdout).trim().is_empty();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match ss(false) {
            Err(e) => return Some(format!("ss: {e}")),
            Ok(o) if left(&o) => break,
            Ok(_) if Instant::now() > deadline => {
                return Some(format!("no TIME_WAIT entry of port {port} appeared"))
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let _ = ss(true);
    match ss(false) {
        Ok(o) if left(&o) => Some(
            "SOCK_DESTROY does not remove TIME_WAIT sockets here (tcp_abort takes them since \
             Linux 6.0; CONFIG_INET_DIAG_DESTROY)"
                .to_string(),
        ),
        Ok(_) => None,
        Err(e) => Some(format!("ss: {e}")),
    }
}

/// Why the kernel has no BPF iterator of unix sockets (iter/unix, Linux
/// 5.15+: its context type `bpf_iter__unix` is not in the kernel's BTF),
/// through which cairn reads where descriptors in flight ride in a stream
/// and who connected to a listener (refused without it), or None.
pub fn unix_iter_missing() -> Option<String> {
    match fs::read("/sys/kernel/btf/vmlinux") {
        Ok(b) if b.windows(15).any(|w| w == b"bpf_iter__unix\0") => None,
        Ok(_) => Some("no BPF unix socket iterator in this kernel (iter/unix, Linux 5.15+)".into()),
        Err(e) => Some(format!("/sys/kernel/btf/vmlinux: {e}")),
    }
}

/// Passes completed by mem_rewrite's writer 0, from the workload's
/// --passes-file (0 before the first).
pub fn passes(path: &Path) -> u64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}
