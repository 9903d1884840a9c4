//! Permissions: images are private whatever the umask; an unprivileged
//! cairn dumps only its own user's processes and restores only as that
//! user, with CAP_CHECKPOINT_RESTORE doing what that capability allows; a
//! checkpoint asking for another user or for capabilities is refused.
mod common;

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

/// The unprivileged user of these tests (Debian's `nobody`).
const NOBODY: u32 = 65534;

fn setpriv() -> Option<PathBuf> {
    ["/usr/bin/setpriv", "/bin/setpriv"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Skips (with the reason) unless root with setpriv(1) to become nobody.
fn skip_unless_can_drop() -> bool {
    if skip_unless_root() {
        return true;
    }
    if setpriv().is_none() {
        note_skip(&format!(
            "no setpriv(1) (util-linux) to run cairn as uid {NOBODY}"
        ));
        return true;
    }
    false
}

/// `cairn ARGS` as uid/gid 65534 with no groups; with `cap_cr` it holds
/// CAP_CHECKPOINT_RESTORE (ambient), and nothing else.
fn cairn_as_nobody(args: &[&str], cap_cr: bool, base: &Path) -> Output {
    run_as_nobody(&cairn_bin(), args, cap_cr, base)
}

/// The setpriv(1) arguments that run `exe ARGS` as nobody (see
/// [`cairn_as_nobody`]).
fn nobody_args(exe: &Path, args: &[&str], cap_cr: bool) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![
        format!("--reuid={NOBODY}").into(),
        format!("--regid={NOBODY}").into(),
        "--clear-groups".into(),
    ];
    if cap_cr {
        a.push("--inh-caps=+checkpoint_restore".into());
        a.push("--ambient-caps=+checkpoint_restore".into());
    }
    a.push("--".into());
    a.push(exe.into());
    a.extend(args.iter().map(OsString::from));
    a
}

/// `exe ARGS` as nobody, to completion.
fn run_as_nobody(exe: &Path, args: &[&str], cap_cr: bool, base: &Path) -> Output {
    let a = nobody_args(exe, args, cap_cr);
    run_tool_in(
        &setpriv().unwrap(),
        &a,
        base.parent().unwrap(),
        base,
        CAIRN_TIMEOUT,
    )
}

fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(uid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
}

fn chown_tree(p: &Path, uid: u32) {
    chown(p, uid);
    if p.is_dir() {
        for e in fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path(), uid);
        }
    }
}

/// A directory for images that nobody may write.
fn nobody_dir(w: &Workload, name: &str) -> PathBuf {
    let d = w.dir.join(name);
    fs::create_dir(&d).unwrap();
    chown(&d, NOBODY);
    d
}

/// Starts workload NAME running as nobody: a wrapper (root) opens its
/// work directory and log to nobody, closes the descriptors the test
/// runner leaks (cargo's jobserver: root's, which nobody's cairn could
/// not read), then execs the workload under setpriv, keeping its pid.
fn start_as_nobody(name: &str) -> Workload {
    start_as_nobody_caps(name, false)
}

/// [`start_as_nobody`]; with `cap_cr` the workload holds
/// CAP_CHECKPOINT_RESTORE as an ambient capability.
fn start_as_nobody_caps(name: &str, cap_cr: bool) -> Workload {
    let caps = if cap_cr {
        "--inh-caps=+checkpoint_restore --ambient-caps=+checkpoint_restore "
    } else {
        ""
    };
    let dir = fresh_dir(&format!("{name}-wrapper"));
    let wrapper = dir.join(name);
    fs::write(
        &wrapper,
        format!(
            "#!/bin/bash\nchmod 0777 . && chown {NOBODY}:{NOBODY} ../workload.log || exit 1\n\
             for fd in $(ls /proc/$$/fd); do [ \"$fd\" -gt 2 ] && eval \"exec $fd>&-\"; done\n\
             exec {} --reuid={NOBODY} --regid={NOBODY} --clear-groups {caps}-- {} \"$@\"\n",
            setpriv().unwrap().display(),
            workload_bin(name).display()
        ),
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let w = Workload::start_exe(&wrapper, name, &[]);
    let _ = fs::remove_dir_all(&dir);
    let st = fs::read_to_string(format!("/proc/{}/status", w.pid)).unwrap();
    assert!(
        st.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("65534")),
        "the workload does not run as nobody:\n{st}"
    );
    w
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn untraced(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .is_ok_and(|s| s.lines().any(|l| l == "TracerPid:\t0"))
}

/// Image files 0600 and the directory 0700 even when cairn runs with
/// umask 000, for a new and for an existing directory.
#[test]
fn images_private_whatever_the_umask() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("mem_heap", &[]);
    let given = w.dir.join("given");
    fs::create_dir(&given).unwrap();
    fs::set_permissions(&given, fs::Permissions::from_mode(0o755)).unwrap();
    for dir in [w.images.clone(), given.clone()] {
        let st = Command::new("sh")
            .arg("-c")
            .arg("umask 000 && exec \"$0\" dump -t \"$1\" -D \"$2\" --leave-running")
            .arg(cairn_bin())
            .arg(w.pid.to_string())
            .arg(&dir)
            .stdin(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "dump into {}", dir.display());
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        let expect = if dir == given { 0o755 } else { 0o700 };
        assert_eq!(mode, expect, "{}", dir.display());
        let mut n = 0;
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            assert!(m.is_file(), "{:?}", e.path());
            assert_eq!(m.permissions().mode() & 0o777, 0o600, "{:?}", e.path());
            n += 1;
        }
        assert!(n > 3, "{n} files in {}", dir.display());
    }
    w.terminate_original_expect_pass();
}

/// As nobody (even with CAP_CHECKPOINT_RESTORE), a root process cannot be
/// dumped: exit code 3, a message naming the pid and why, the target
/// untouched.
#[test]
fn unprivileged_dump_refuses_another_users_process() {
    if skip_unless_can_drop() {
        return;
    }
    let mut w = Workload::start("mem_heap", &[]);
    let d = nobody_dir(&w, "nb");
    let pid = w.pid.to_string();
    for cap in [false, true] {
        let out = cairn_as_nobody(
            &["dump", "-t", &pid, "-D", d.join("images").to_str().unwrap()],
            cap,
            &w.dir.join(format!("dump-{cap}")),
        );
        assert_eq!(exit_code(&out.status), 3, "{}", describe(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("pid {pid}")) && err.contains("may not trace"),
            "{err}"
        );
        assert!(untraced(w.pid));
        assert_eq!(fs::read_dir(&d).unwrap().count(), 0, "images left");
    }
    w.terminate_original_expect_pass();
}

/// A process of nobody's, checkpointed and restored by nobody. Without
/// capabilities the dump cannot read what it needs (/proc/PID/map_files)
/// and the restore cannot give back the pid; both say so with their exit
/// codes. With CAP_CHECKPOINT_RESTORE (what that capability allows:
/// map_files, clone3 set_tid) both work: the images are nobody's and
/// private, and the restored process runs as nobody with no capability
/// and passes its check.
#[test]
fn unprivileged_with_checkpoint_restore() {
    if skip_unless_can_drop() {
        return;
    }
    let mut w = start_as_nobody("mem_heap");
    let d = nobody_dir(&w, "nb");
    let images = d.join("images");
    let (pid, img) = (w.pid.to_string(), images.to_str().unwrap().to_string());
    let out = cairn_as_nobody(&["dump", "-t", &pid, "-D", &img], false, &w.dir.join("d0"));
    assert_eq!(exit_code(&out.status), 3, "{}", describe(&out));
    assert!(stderr(&out).contains("not permitted"), "{}", describe(&out));
    assert!(untraced(w.pid) && w.original_alive());
    assert!(!images.exists());

    let out = cairn_as_nobody(&["dump", "-t", &pid, "-D", &img], true, &w.dir.join("d1"));
    assert_ok(&out, "dump as nobody with CAP_CHECKPOINT_RESTORE");
    w.expect_killed_by_dump();
    let m = fs::metadata(&images).unwrap();
    assert_eq!((m.uid(), m.permissions().mode() & 0o777), (NOBODY, 0o700));
    for e in fs::read_dir(&images).unwrap() {
        let m = e.unwrap().metadata().unwrap();
        assert_eq!((m.uid(), m.permissions().mode() & 0o777), (NOBODY, 0o600));
    }

    let out = cairn_as_nobody(&["restore", "-d", "-D", &img], false, &w.dir.join("r0"));
    assert_eq!(exit_code(&out.status), 4, "{}", describe(&out));
    assert!(
        stderr(&out).contains("CAP_CHECKPOINT_RESTORE"),
        "{}",
        describe(&out)
    );
    assert!(wait_pid_gone(w.pid, Duration::from_secs(5)));

    let pidfile = d.join("restored.pid");
    let out = cairn_as_nobody(
        &[
            "restore",
            "-d",
            "-D",
            &img,
            "--pidfile",
            pidfile.to_str().unwrap(),
        ],
        true,
        &w.dir.join("r1"),
    );
    assert_ok(&out, "restore as nobody with CAP_CHECKPOINT_RESTORE");
    assert_eq!(read_pidfile(&pidfile), Some(w.pid));
    let st = fs::read_to_string(format!("/proc/{}/status", w.pid)).unwrap();
    for (k, v) in [
        ("Uid:", "65534\t65534\t65534\t65534"),
        ("Gid:", "65534\t65534\t65534\t65534"),
        ("CapEff:", "0000000000000000"),
        ("CapPrm:", "0000000000000000"),
        ("CapAmb:", "0000000000000000"),
        ("TracerPid:", "0"),
    ] {
        assert!(
            st.lines()
                .any(|l| l.strip_prefix(k).map(str::trim) == Some(v)),
            "{k} {v} expected:\n{st}"
        );
    }
    let run = Resumed::hold(w.pid);
    run.terminate_expect_pass(&w.log);
}

/// A checkpoint of a root process (uid 0, every capability), handed to
/// nobody as if edited: nobody's cairn, even with CAP_CHECKPOINT_RESTORE,
/// refuses it before creating anything, naming the pid, the uids and the
/// capabilities.
#[test]
fn unprivileged_restore_refuses_other_credentials() {
    if skip_unless_can_drop() {
        return;
    }
    let mut w = Workload::start("mem_heap", &[]);
    w.dump_ok(&[]);
    w.expect_killed_by_dump();
    let d = nobody_dir(&w, "nb");
    let img = d.join("images");
    fs::rename(&w.images, &img).unwrap();
    chown_tree(&img, NOBODY);
    let out = cairn_as_nobody(
        &["restore", "-d", "-D", img.to_str().unwrap()],
        true,
        &w.dir.join("r"),
    );
    assert_eq!(exit_code(&out.status), 4, "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("pid {}", w.pid))
            && err.contains("uids [0, 0, 0, 0]")
            && err.contains("capabilities")
            && err.contains("refused"),
        "{err}"
    );
    assert!(!pid_exists(w.pid), "something was created");
}

fn setcap_bin() -> Option<PathBuf> {
    ["/usr/sbin/setcap", "/sbin/setcap", "/usr/bin/setcap"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A copy of cairn with the file capability `cap_checkpoint_restore+ep`,
/// installed the way the README suggests; None (the test skips) without
/// setcap(8) (libcap2-bin, which `cargo xtask test` installs).
fn setcap_cairn() -> Option<PathBuf> {
    let Some(setcap) = setcap_bin() else {
        note_skip("no setcap(8) (libcap2-bin)");
        return None;
    };
    let exe = fresh_dir("setcap").join("cairn");
    fs::copy(cairn_bin(), &exe).unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    let st = Command::new(setcap)
        .arg("cap_checkpoint_restore+ep")
        .arg(&exe)
        .status()
        .unwrap();
    assert!(st.success(), "setcap on {}", exe.display());
    Some(exe)
}

/// A child killed (and reaped) when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One `ptrace_probe --probe PID` as nobody: its "attach: ..." and
/// "mem: ..." lines.
fn probe_as_nobody(pid: i32, base: &Path) -> String {
    let out = run_as_nobody(
        &workload_bin("ptrace_probe"),
        &["--probe", &pid.to_string()],
        false,
        base,
    );
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// cairn installed with file capabilities (`setcap
/// cap_checkpoint_restore+ep`, run by nobody without any capability of
/// its own) dumps a process of nobody's and restores it: such a cairn is
/// not dumpable, and neither were its forks, so it could not seize the
/// process it restores into ("seize vessel: Operation not permitted")
/// after the dump had killed the original. While the restoring cairn
/// runs holding the capability, nobody can neither ptrace it nor open its
/// memory; the restored process is nobody's own, without capabilities,
/// and the same probe can ptrace it (so the probe is not blind). It
/// passes its own check.
#[test]
fn setcap_install_checkpoints_and_restores() {
    if skip_unless_can_drop() {
        return;
    }
    let Some(exe) = setcap_cairn() else {
        return;
    };
    let mut w = start_as_nobody("mem_heap");
    let d = nobody_dir(&w, "nb");
    let images = d.join("images");
    let (pid, img) = (w.pid.to_string(), images.to_str().unwrap().to_string());
    let out = run_as_nobody(
        &exe,
        &["dump", "-t", &pid, "-D", &img],
        false,
        &w.dir.join("d"),
    );
    assert_ok(&out, "dump as nobody by the setcap install");
    w.expect_killed_by_dump();

    let pidfile = d.join("restored.pid");
    let err = w.dir.join("restore.stderr");
    let child = Command::new(setpriv().unwrap())
        .args(nobody_args(
            &exe,
            &[
                "restore",
                "-D",
                &img,
                "--pidfile",
                pidfile.to_str().unwrap(),
            ],
            false,
        ))
        .current_dir(&w.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let mut cairn = Killed(child);
    let cairn_pid = cairn.0.id() as i32;
    let deadline = std::time::Instant::now() + RESTORE_READY_TIMEOUT;
    let restored = loop {
        if let Some(p) = read_pidfile(&pidfile) {
            break p;
        }
        if let Ok(Some(st)) = cairn.0.try_wait() {
            panic!(
                "restore by the setcap install failed ({st}):\n{}",
                tail(&err, 4000)
            );
        }
        assert!(std::time::Instant::now() < deadline, "no restored pid");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(restored, w.pid);
    let st = fs::read_to_string(format!("/proc/{cairn_pid}/status")).unwrap();
    let cap_eff = st
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap();
    assert!(
        cap_eff & (1 << 40) != 0,
        "the restoring cairn (pid {cairn_pid}) should hold CAP_CHECKPOINT_RESTORE:\n{st}"
    );
    let on_cairn = probe_as_nobody(cairn_pid, &w.dir.join("probe-cairn"));
    assert!(
        on_cairn.contains("attach: ") && on_cairn.contains("mem: "),
        "{on_cairn}"
    );
    assert!(
        !on_cairn.contains("attach: ok") && !on_cairn.contains("mem: ok"),
        "nobody could ptrace or open the memory of the cairn holding the capability:\n{on_cairn}"
    );
    let st = fs::read_to_string(format!("/proc/{restored}/status")).unwrap();
    for (k, v) in [
        ("Uid:", "65534\t65534\t65534\t65534"),
        ("CapEff:", "0000000000000000"),
        ("CapPrm:", "0000000000000000"),
        ("CapAmb:", "0000000000000000"),
        ("TracerPid:", "0"),
    ] {
        assert!(
            st.lines()
                .any(|l| l.strip_prefix(k).map(str::trim) == Some(v)),
            "{k} {v} expected:\n{st}"
        );
    }
    let on_restored = probe_as_nobody(restored, &w.dir.join("probe-restored"));
    assert!(
        on_restored.contains("attach: ok") && on_restored.contains("mem: ok"),
        "nobody's probe failed on nobody's own restored process:\n{on_restored}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(restored),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = wait_timeout(&mut cairn.0, EXIT_TIMEOUT).expect("cairn restore did not exit");
    assert!(st.success(), "cairn restore: {st}\n{}", tail(&err, 4000));
    assert_log_pass(&w.log, "after the restore by the setcap install");
}

/// A capability cairn holds only through its file is not the user's: a
/// process holding it (here as an ambient capability) is not dumped by
/// the setcap install, which could not give it back (exit code 3, the
/// process untouched); images that ask for it (made by a cairn with the
/// ambient capability) are refused by the setcap install's restore before
/// anything is created (exit code 4), and restored by the ambient one.
#[test]
fn setcap_install_does_not_hand_out_its_capability() {
    if skip_unless_can_drop() {
        return;
    }
    let Some(exe) = setcap_cairn() else {
        return;
    };
    let mut w = start_as_nobody_caps("mem_heap", true);
    let d = nobody_dir(&w, "nb");
    let images = d.join("images");
    let (pid, img) = (w.pid.to_string(), images.to_str().unwrap().to_string());
    let out = run_as_nobody(
        &exe,
        &["dump", "-t", &pid, "-D", &img],
        false,
        &w.dir.join("d0"),
    );
    assert_eq!(exit_code(&out.status), 3, "{}", describe(&out));
    assert!(
        stderr(&out).contains(&format!("pid {pid}"))
            && stderr(&out).contains("only through its file capabilities"),
        "{}",
        describe(&out)
    );
    assert!(untraced(w.pid) && w.original_alive());
    assert!(!images.exists());

    let out = cairn_as_nobody(&["dump", "-t", &pid, "-D", &img], true, &w.dir.join("d1"));
    assert_ok(&out, "dump as nobody with the ambient capability");
    w.expect_killed_by_dump();
    let out = run_as_nobody(
        &exe,
        &["restore", "-d", "-D", &img],
        false,
        &w.dir.join("r0"),
    );
    assert_eq!(exit_code(&out.status), 4, "{}", describe(&out));
    assert!(
        stderr(&out).contains("only through its file capabilities"),
        "{}",
        describe(&out)
    );
    assert!(
        wait_pid_gone(w.pid, Duration::from_secs(5)),
        "something was created"
    );
    let out = cairn_as_nobody(&["restore", "-d", "-D", &img], true, &w.dir.join("r1"));
    assert_ok(&out, "restore as nobody with the ambient capability");
    Resumed::hold(w.pid).terminate_expect_pass(&w.log);
}

/// A process traced by another one cannot be dumped: the error names the
/// tracer and its name; the process is left as it was.
#[test]
fn seize_error_names_the_tracer() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("mem_heap", &[]);
    let mut tracer = Workload::start("ptrace_probe", &["--hold", &w.pid.to_string()]);
    let out = w.dump(&[]);
    assert_eq!(exit_code(&out.status), 3, "{}", describe(&out));
    let want = format!(
        "pid {}: seize: Operation not permitted (os error 1): pid {} is traced by pid {} \
         (ptrace_probe)",
        w.pid, w.pid, tracer.pid
    );
    assert!(
        stderr(&out).contains(&want),
        "{want:?} expected:\n{}",
        describe(&out)
    );
    assert!(w.original_alive() && !w.images.join("inventory.img").exists());
    tracer.terminate_original_expect_pass();
    w.terminate_original_expect_pass();
}

/// A kernel thread (kthreadd, pid 2) cannot be dumped, and the error says
/// it is one.
#[test]
fn seize_error_names_a_kernel_thread() {
    if skip_unless_root() {
        return;
    }
    let d = fresh_dir("kthread");
    let out = run_cairn(
        &[
            "dump".into(),
            "-t".into(),
            "2".into(),
            "-D".into(),
            d.join("images").into(),
        ],
        &d.join("dump"),
        CAIRN_TIMEOUT,
    );
    assert_eq!(exit_code(&out.status), 3, "{}", describe(&out));
    assert!(
        stderr(&out).contains("pid 2 (kthreadd) is a kernel thread"),
        "{}",
        describe(&out)
    );
    let _ = fs::remove_dir_all(&d);
}

/// A tree that holds cairn itself (its root is cairn's parent shell)
/// cannot be dumped: the error says that the task is cairn itself and
/// names cairn's ancestors; the shell, frozen first, runs on (it goes on
/// to print cairn's exit code).
#[test]
fn seize_error_names_cairn_itself() {
    if skip_unless_root() {
        return;
    }
    let d = fresh_dir("ancestor");
    // The shell's output goes to files, not to pipes to this test: a pipe
    // whose other end is outside the tree would be refused first.
    let (o, e) = (d.join("stdout"), d.join("stderr"));
    let status = Command::new("sh")
        .arg("-c")
        .arg("\"$0\" dump -t $$ -D \"$1\"; echo \"cairn exited $?\"")
        .arg(cairn_bin())
        .arg(d.join("images"))
        .stdin(Stdio::null())
        .stdout(fs::File::create(&o).unwrap())
        .stderr(fs::File::create(&e).unwrap())
        .status()
        .unwrap();
    assert!(status.success(), "sh: {status}");
    let (so, se) = (
        fs::read_to_string(&o).unwrap_or_default(),
        fs::read_to_string(&e).unwrap_or_default(),
    );
    assert!(so.contains("cairn exited 3"), "stdout {so}\nstderr {se}");
    assert!(
        se.contains("is cairn itself: a tree that holds cairn cannot be dumped")
            && se.contains("(sh)"),
        "{se}"
    );
    let _ = fs::remove_dir_all(&d);
}
