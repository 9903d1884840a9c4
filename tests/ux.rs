//! Everyday use (issue 19): progress bars on a terminal and nothing
//! elsewhere, log levels and formats, `cairn check`'s verdict and exit
//! code, and error messages that say their cause.

mod common;

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

fn os(s: impl AsRef<OsStr>) -> OsString {
    s.as_ref().to_os_string()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `cairn ARGS` with its output kept beside `base`.
fn cairn(args: &[&OsStr], base: &Path) -> Output {
    let args: Vec<OsString> = args.iter().map(os).collect();
    run_cairn(&args, base, CAIRN_TIMEOUT)
}

/// A pseudo-terminal: (master, slave), the slave 120 columns wide.
fn open_pty() -> (OwnedFd, fs::File) {
    // SAFETY: posix_openpt has no memory arguments; the result is checked.
    let m = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY) };
    assert!(m >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
    // SAFETY: `m` is a descriptor we own and nothing else does.
    let master = unsafe { OwnedFd::from_raw_fd(m) };
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: the pty master is valid; `name` is a writable buffer of the
    // length passed; the winsize is a valid struct for TIOCSWINSZ.
    unsafe {
        assert_eq!(libc::grantpt(m), 0);
        assert_eq!(libc::unlockpt(m), 0);
        assert_eq!(libc::ptsname_r(m, name.as_mut_ptr(), name.len()), 0);
        let ws = libc::winsize {
            ws_row: 40,
            ws_col: 120,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        libc::ioctl(m, libc::TIOCSWINSZ, &ws);
    }
    // SAFETY: ptsname_r wrote a NUL-terminated name into `name`.
    let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    let slave = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {path}: {e}"));
    (master, slave)
}

/// Runs cairn with its stderr on a pseudo-terminal; returns the exit
/// status and everything written to the terminal.
fn cairn_on_pty(args: &[&OsStr]) -> (std::process::ExitStatus, String) {
    let (master, slave) = open_pty();
    let mut reader = fs::File::from(master);
    let t = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once every slave descriptor is closed.
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    });
    let mut child = Command::new(cairn_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(slave))
        .spawn()
        .expect("spawn cairn");
    let st = wait_timeout(&mut child, CAIRN_TIMEOUT).expect("cairn on a pty did not finish");
    drop(child);
    let out = t.join().expect("pty reader");
    (st, text(&out))
}

/// A dump on a terminal shows the page bar (bytes, rate, time left) and
/// the freezing count; the same dump with stderr in a file shows none.
#[test]
fn progress_bars_only_on_a_terminal() {
    if skip_unless_root() {
        return;
    }
    let w = Workload::start("mem_anon_private", &[]);
    let images = w.dir.join("pty-images");
    let pid = w.pid.to_string();
    let (st, tty) = cairn_on_pty(&[
        OsStr::new("dump"),
        OsStr::new("-R"),
        OsStr::new("-t"),
        OsStr::new(&pid),
        OsStr::new("-D"),
        images.as_os_str(),
    ]);
    assert!(st.success(), "dump on a pty failed: {tty}");
    assert!(
        tty.contains("dump: pages") && tty.contains("ETA") && tty.contains("/s"),
        "no page progress bar on the terminal:\n{tty:?}"
    );
    assert!(
        tty.contains("dump: freezing"),
        "no freezing count:\n{tty:?}"
    );
    let out = cairn(
        &[
            OsStr::new("dump"),
            OsStr::new("-R"),
            OsStr::new("-t"),
            OsStr::new(&pid),
            OsStr::new("-D"),
            w.dir.join("file-images").as_os_str(),
        ],
        &w.dir.join("file-dump"),
    );
    assert_ok(&out, "dump with stderr in a file");
    let err = text(&out.stderr);
    assert!(
        !err.contains("ETA") && !err.contains("dump: pages") && !err.contains('\r'),
        "a progress bar in a file:\n{err:?}"
    );
}

/// -v, -vv and -vvv say more and more: phases with timings, then one
/// line per process, then every image file; every line has a timestamp;
/// --log-format json gives one JSON object per line.
#[test]
fn log_levels_differ_and_json_lines() {
    if skip_unless_root() {
        return;
    }
    let w = Workload::start("sleep_nanosleep", &[]);
    let pid = w.pid.to_string();
    let dump = |n: usize, extra: &[&str]| {
        let d = w.dir.join(format!("images-{n}"));
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("dump"),
            OsStr::new("-R"),
            OsStr::new("-t"),
            OsStr::new(&pid),
            OsStr::new("-D"),
            d.as_os_str(),
        ];
        args.extend(extra.iter().map(OsStr::new));
        let out = cairn(&args, &w.dir.join(format!("dump-{n}")));
        assert_ok(&out, &format!("dump {extra:?}"));
        text(&out.stderr)
    };
    let v1 = dump(1, &["-v"]);
    let v2 = dump(2, &["-vv"]);
    let v3 = dump(3, &["-vvv"]);
    let per_proc = format!("pid {} (sleep_nanosleep): 1 threads", w.pid);
    assert!(
        v1.contains("dump timings: freeze"),
        "-v: no phase timings:\n{v1}"
    );
    assert!(!v1.contains(&per_proc), "-v has per-process detail:\n{v1}");
    assert!(v2.contains(&per_proc), "-vv: no per-process detail:\n{v2}");
    assert!(!v2.contains("wrote "), "-vv lists image files:\n{v2}");
    assert!(
        v3.contains("wrote ") && v3.contains("core-"),
        "-vvv: no image files:\n{v3}"
    );
    assert!(v1.lines().count() < v2.lines().count());
    assert!(v2.lines().count() < v3.lines().count());
    for l in v1.lines().chain(v3.lines()) {
        let ts = l.split(' ').next().unwrap_or("");
        assert!(
            ts.len() == 24 && ts.starts_with("20") && ts.ends_with('Z') && &ts[10..11] == "T",
            "no timestamp: {l:?}"
        );
    }
    let json = dump(4, &["-vv", "--log-format", "json"]);
    assert!(json.lines().count() > 3, "{json}");
    for l in json.lines() {
        assert!(
            is_valid_json(l) && l.starts_with("{\"ts\":\"") && l.contains("\"level\":\""),
            "not one JSON object: {l:?}"
        );
    }
    assert!(json.contains("\"level\":\"debug\""), "{json}");
    // The final error too.
    let out = cairn(
        &[
            OsStr::new("--log-format"),
            OsStr::new("json"),
            OsStr::new("restore"),
            OsStr::new("-D"),
            w.dir.join("nothing-here").as_os_str(),
        ],
        &w.dir.join("json-error"),
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.lines().all(is_valid_json) && err.contains("\"level\":\"error\""),
        "{err}"
    );
}

fn as_nobody(args: &[&OsStr], base: &Path) -> Output {
    let mut full: Vec<OsString> = vec![
        os("--reuid=65534"),
        os("--regid=65534"),
        os("--clear-groups"),
        os("--inh-caps=-all"),
        os(cairn_bin()),
    ];
    full.extend(args.iter().map(os));
    let so = base.with_extension("stdout");
    let se = base.with_extension("stderr");
    let mut child = Command::new("setpriv")
        .args(&full)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&so).unwrap())
        .stderr(fs::File::create(&se).unwrap())
        .spawn()
        .expect("setpriv");
    let status = wait_timeout(&mut child, CAIRN_TIMEOUT).expect("cairn as nobody");
    Output {
        status,
        stdout: fs::read(&so).unwrap_or_default(),
        stderr: fs::read(&se).unwrap_or_default(),
    }
}

/// `cairn check` ends with a verdict; as a user without
/// CAP_CHECKPOINT_RESTORE it exits nonzero naming it, and does not claim
/// ns_last_pid as the way to restore pids when ns_last_pid is not
/// writable.
#[test]
fn check_verdict_and_exit_code() {
    if skip_unless_root() {
        return;
    }
    let dir = fresh_dir("check");
    let out = cairn(&[OsStr::new("check")], &dir.join("root"));
    let t = text(&out.stdout);
    assert_eq!(exit_code(&out.status), 0, "{}", describe(&out));
    assert!(
        t.trim_end()
            .ends_with("cairn can checkpoint and restore here"),
        "{t}"
    );
    let out = as_nobody(&[OsStr::new("check")], &dir.join("nobody"));
    let t = text(&out.stdout);
    assert_ne!(
        exit_code(&out.status),
        0,
        "check as nobody: {}",
        describe(&out)
    );
    let last = t.lines().last().unwrap_or("");
    assert!(
        last.starts_with("cairn cannot checkpoint and restore here as uid 65534: missing")
            && last.contains("CAP_CHECKPOINT_RESTORE"),
        "{t}"
    );
    if t.contains("ns_last_pid_writable    no") {
        let line = t.lines().find(|l| l.starts_with("pid_restore")).unwrap();
        assert!(
            !line.contains(" ns_last_pid (") && line.contains("unavailable"),
            "pid_restore claims a mechanism that does not work: {line}"
        );
    }
    let out = as_nobody(
        &[OsStr::new("check"), OsStr::new("--json")],
        &dir.join("nobody-json"),
    );
    let t = text(&out.stdout);
    assert!(is_valid_json(t.trim_end()), "{t}");
    assert!(t.contains("\"verdict\":{\"ok\":false"), "{t}");
    let _ = fs::remove_dir_all(&dir);
}

/// A pid that does not exist: its own exit code (7) and no "left
/// running"; --compress-level outside zstd's range is refused; a log
/// file in a missing directory is named.
#[test]
fn usage_errors_say_what() {
    let dir = fresh_dir("usage");
    let images = dir.join("images");
    let mut c = Command::new("true").spawn().unwrap();
    let gone = c.id().to_string();
    c.wait().unwrap();
    let out = cairn(
        &[
            OsStr::new("dump"),
            OsStr::new("-t"),
            OsStr::new(&gone),
            OsStr::new("-D"),
            images.as_os_str(),
        ],
        &dir.join("gone"),
    );
    let err = text(&out.stderr);
    assert_eq!(exit_code(&out.status), 7, "{}", describe(&out));
    assert!(
        err.contains(&format!("pid {gone}: no such process")) && !err.contains("left running"),
        "{err}"
    );
    let help = cairn(&[OsStr::new("--help")], &dir.join("help"));
    let h = text(&help.stdout);
    assert!(h.contains("Exit codes:"), "{h}");
    for line in [
        "0      success",
        "1      any other error",
        "2      usage error",
        "3      dump failed; the target was left running",
        "4      restore failed; nothing of the tree is left",
        "5      an image is missing, corrupt",
        "6      the process uses something cairn cannot checkpoint",
        "7      no such process",
        "128+N  interrupted by signal N",
    ] {
        assert!(h.contains(line), "--help does not list {line:?}:\n{h}");
    }
    let out = cairn(
        &[
            OsStr::new("dump"),
            OsStr::new("-t"),
            OsStr::new("1"),
            OsStr::new("-D"),
            images.as_os_str(),
            OsStr::new("--compress-level"),
            OsStr::new("99"),
        ],
        &dir.join("level"),
    );
    let err = text(&out.stderr);
    assert_eq!(exit_code(&out.status), 2, "{}", describe(&out));
    assert!(
        err.contains("99 is outside zstd's levels") && err.contains("22"),
        "{err}"
    );
    assert!(!images.exists());
    let out = cairn(
        &[
            OsStr::new("-o"),
            OsStr::new("/nonexistent-dir/log"),
            OsStr::new("check"),
        ],
        &dir.join("log"),
    );
    assert_eq!(exit_code(&out.status), 2, "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("/nonexistent-dir/log"),
        "{}",
        describe(&out)
    );
    let _ = fs::remove_dir_all(&dir);
}

/// Seizing refusals name their cause: a kernel thread, a process another
/// process traces (the tracer's pid), a tree that holds cairn itself.
#[test]
fn seize_refusals_name_the_cause() {
    if skip_unless_root() {
        return;
    }
    let dir = fresh_dir("seize");
    let dump = |pid: &str, tag: &str| {
        let images = dir.join(format!("images-{tag}"));
        let out = cairn(
            &[
                OsStr::new("dump"),
                OsStr::new("-R"),
                OsStr::new("-t"),
                OsStr::new(pid),
                OsStr::new("-D"),
                images.as_os_str(),
            ],
            &dir.join(tag),
        );
        assert!(!images.exists());
        (exit_code(&out.status), text(&out.stderr))
    };
    let (code, err) = dump("2", "kthread");
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("pid 2 (kthreadd) is a kernel thread")
            && err.contains("give the pid of a user process"),
        "{err}"
    );

    // Our own ancestor: the test process holds the cairn it runs.
    let me = std::process::id().to_string();
    let (code, err) = dump(&me, "self");
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("is cairn itself: a tree that holds cairn cannot be dumped")
            && err.contains(&format!("its root, pid {me}, is one of cairn's ancestors"))
            && err.contains("run cairn from outside the tree"),
        "{err}"
    );

    let mut child = Command::new("setsid")
        .args(["sleep", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let cpid = nix::unistd::Pid::from_raw(child.id() as i32);
    std::thread::sleep(Duration::from_millis(100));
    nix::sys::ptrace::seize(cpid, nix::sys::ptrace::Options::empty()).expect("seize sleep");
    let tracer = nix::unistd::gettid().as_raw();
    let (code, err) = dump(&child.id().to_string(), "traced");
    let _ = nix::sys::ptrace::detach(cpid, None);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(&format!("is traced by pid {tracer}"))
            && err.contains("detach that tracer (or end it) and dump again"),
        "the tracer is not named, or not what to do: {err}"
    );
    let _ = fs::remove_dir_all(&dir);
}

/// "pid N is already in use" says by whom: the original still running
/// (a dump with --leave-running), or an unreaped zombie and its parent.
#[test]
fn pid_in_use_says_by_whom() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("sleep_nanosleep", &[]);
    w.dump_ok(&["-R"]);
    let out = restore_expect_fail(&w.images, &[], w.pid);
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "pid {} is already in use by the original process (sleep_nanosleep), still running",
            w.pid
        )) && err.contains("stop it before restoring"),
        "{err}"
    );
    w.terminate_original_expect_pass();

    // A zombie of ours: dumped, then killed and not reaped.
    let dir = fresh_dir("zombie");
    let images = dir.join("images");
    let mut child = Command::new("setsid")
        .args(["sleep", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    std::thread::sleep(Duration::from_millis(100));
    let out = cairn(
        &[
            OsStr::new("dump"),
            OsStr::new("-R"),
            OsStr::new("-t"),
            OsStr::new(&pid.to_string()),
            OsStr::new("-D"),
            images.as_os_str(),
        ],
        &dir.join("dump"),
    );
    assert_ok(&out, "dump of sleep");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let out = restore_expect_fail(&images, &[], pid);
    let err = text(&out.stderr);
    let _ = child.wait();
    assert!(
        err.contains(&format!(
            "pid {pid} is already in use: it is an unreaped zombie of the original process (sleep)"
        )) && err.contains(&format!("its parent, pid {}", std::process::id()))
            && err.contains("that parent must reap it (or exit) before the restore"),
        "{err}"
    );
    let _ = fs::remove_dir_all(&dir);
}

/// A restore from a directory the user cannot search says so, with the
/// owner and mode, instead of "not a cairn image directory".
#[test]
fn unreadable_image_dir_is_named() {
    if skip_unless_root() {
        return;
    }
    let dir = fresh_dir("unreadable");
    let images = dir.join("images");
    fs::create_dir(&images).unwrap();
    fs::write(images.join("inventory.img"), b"x").unwrap();
    fs::set_permissions(&images, fs::Permissions::from_mode(0o744)).unwrap();
    let out = as_nobody(
        &[OsStr::new("restore"), OsStr::new("-D"), images.as_os_str()],
        &dir.join("restore"),
    );
    let err = text(&out.stderr);
    assert_eq!(exit_code(&out.status), 5, "{}", describe(&out));
    assert!(
        err.contains("cannot be read by uid 65534 (owner uid 0, mode 0744)")
            && err.contains("restore as its owner (or root), or make it readable")
            && !err.contains("not a cairn image directory"),
        "{err}"
    );
    let _ = fs::remove_dir_all(&dir);
}

/// An established connection refused without --tcp-established: "is a
/// TCP...", not "is an TCP...".
#[test]
fn tcp_refusal_grammar() {
    if skip_unless_root() {
        return;
    }
    let w = Workload::start("sk_tcp_stream", &[]);
    let out = w.dump(&["-R"]);
    let err = text(&out.stderr);
    assert_eq!(exit_code(&out.status), 6, "{}", describe(&out));
    assert!(
        err.contains("is a TCP")
            && !err.contains("is an TCP")
            && err.contains("pass --tcp-established (on dump and restore)"),
        "{err}"
    );
}

/// chkpnt and resume are the cairn binary under other names (links made
/// by the build), dispatched on argv[0].
#[test]
fn chkpnt_and_resume_are_cairn() {
    let cairn = fs::canonicalize(env!("CARGO_BIN_EXE_cairn")).unwrap();
    for (bin, name) in [(chkpnt_bin(), "chkpnt"), (resume_bin(), "resume")] {
        assert_eq!(fs::canonicalize(&bin).unwrap(), cairn, "{}", bin.display());
        let out = Command::new(&bin).arg("--version").output().unwrap();
        assert!(out.status.success());
        assert_eq!(
            text(&out.stdout),
            format!("{name} (cairn) {}\n", env!("CARGO_PKG_VERSION"))
        );
    }
}

/// Unmounts a test's tmpfs when dropped.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A pre-dump (or dump) that fails while writing names the directory the
/// user gave, never the internal staging directory (`.NAME.cairn-tmp-...`).
#[test]
fn staging_name_not_shown_in_errors() {
    if skip_unless_root() {
        return;
    }
    let w = Workload::start("sleep_nanosleep", &[]);
    let full = w.dir.join("full");
    fs::create_dir(&full).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4k", "tmpfs"])
        .arg(&full)
        .status()
        .expect("mount");
    assert!(st.success(), "mount a 4 KiB tmpfs");
    let _m = Mounted(full.clone());
    let images = full.join("images");
    let pid = w.pid.to_string();
    for cmd in ["pre-dump", "dump"] {
        let mut args = vec![
            OsStr::new(cmd),
            OsStr::new("-t"),
            OsStr::new(&pid),
            OsStr::new("-D"),
            images.as_os_str(),
        ];
        if cmd == "dump" {
            args.push(OsStr::new("-R"));
        }
        let out = cairn(&args, &w.dir.join(cmd));
        let err = text(&out.stderr);
        assert_eq!(exit_code(&out.status), 3, "{cmd}: {}", describe(&out));
        assert!(
            err.contains(&format!("{}/", images.display()))
                && err.contains("No space left on device")
                && !err.contains("cairn-tmp"),
            "{cmd}: {err}"
        );
    }
}

/// A non-root dump without CAP_CHECKPOINT_RESTORE (here --leave-running,
/// which skips the check that a restore is possible) names the capability
/// and what to do before touching the tree, not a bare EPERM on some
/// /proc/PID/map_files path; a pre-dump too. The target runs on untraced.
#[test]
fn dump_without_capability_names_it() {
    if skip_unless_root() {
        return;
    }
    let dir = fresh_dir("nocap");
    let mut target = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "sleep",
            "60",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("setpriv sleep");
    let pid = target.id().to_string();
    // setpriv execs sleep in the same process: wait until it runs as nobody.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !fs::read_to_string(format!("/proc/{pid}/status"))
        .is_ok_and(|s| s.contains("Uid:\t65534") && s.contains("Name:\tsleep"))
    {
        assert!(std::time::Instant::now() < deadline, "sleep as nobody");
        std::thread::sleep(Duration::from_millis(10));
    }
    let images = dir.join("images");
    for (tag, args) in [
        ("dump", vec!["dump", "-R", "-t", &pid, "-D"]),
        ("pre-dump", vec!["pre-dump", "-t", &pid, "-D"]),
    ] {
        let mut a: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        a.push(images.as_os_str());
        let out = as_nobody(&a, &dir.join(tag));
        let err = text(&out.stderr);
        assert_eq!(exit_code(&out.status), 3, "{tag}: {}", describe(&out));
        assert!(
            err.contains("needs CAP_CHECKPOINT_RESTORE")
                && err.contains("run it as root or give it the capability")
                && !err.contains("/map_files/"),
            "{tag}: {err}"
        );
        assert!(!images.exists(), "{tag} made the image directory");
        let st = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(
            st.contains("TracerPid:\t0") && st.contains("State:\tS"),
            "{tag} left the target traced or stopped:\n{st}"
        );
    }
    let _ = target.kill();
    let _ = target.wait();
    let _ = fs::remove_dir_all(&dir);
}

/// A program replaced after the dump is refused even with
/// --ignore-file-changes (its saved memory would run against other code),
/// naming the program and what to do, and nothing is restored; the same
/// program copied back (other inode, new mtime, same contents) restores
/// and the process passes its own check.
#[test]
fn changed_program_refused_even_when_ignoring_file_changes() {
    if skip_unless_root() {
        return;
    }
    let bin = fresh_dir("exe-changed");
    let exe = bin.join("mem_heap");
    fs::copy(workload_bin("mem_heap"), &exe).unwrap();
    let mut w = Workload::start_exe(&exe, "mem_heap", &[]);
    w.dump_ok(&[]);
    w.expect_killed_by_dump();
    let kept = bin.join("mem_heap.checkpointed");
    fs::rename(&exe, &kept).unwrap();
    fs::copy(workload_bin("sleep_nanosleep"), &exe).unwrap();
    for flags in [&["--ignore-file-changes"][..], &[][..]] {
        let out = restore_expect_fail(&w.images, flags, w.pid);
        let err = text(&out.stderr);
        assert_eq!(exit_code(&out.status), 4, "{flags:?}: {}", describe(&out));
        assert!(
            err.contains(&format!("{}: changed since the dump", exe.display()))
                && err.contains("runs its program")
                && err.contains("--ignore-file-changes does not cover a program")
                && err.contains(&format!(
                    "put the checkpointed program back at {}",
                    exe.display()
                )),
            "{flags:?}: {err}"
        );
        assert!(!pid_exists(w.pid), "{flags:?}: pid {} exists", w.pid);
    }
    std::thread::sleep(Duration::from_millis(20));
    fs::copy(&kept, &exe).unwrap();
    w.restore_wait(&["@no-compare: the program is another inode with the same contents"]);
    let _ = fs::remove_dir_all(&bin);
}
