//! Terminals (issue 4): pty pairs owned by the tree, and shell jobs
//! (--shell-job) restored into the terminal of the restoring cairn.

mod common;

use common::*;

/// Two pty pairs with termios, window size, packet, exclusive and lock
/// modes, queued bytes both ways, and a child whose controlling terminal
/// is one of them. `cairn show --json` decodes them.
#[test]
fn tty_pty() {
    if skip_unless_root() {
        return;
    }
    let w = checkpoint_restore("tty_pty", &[]);
    let out = run_cairn(
        &[
            "show".into(),
            w.images.join("files.img").into(),
            "--json".into(),
        ],
        &w.dir.join("show-json"),
        CAIRN_TIMEOUT,
    );
    assert_ok(&out, "cairn show files.img --json");
    let j = String::from_utf8_lossy(&out.stdout);
    assert!(
        is_valid_json(&j)
            && j.contains("\"ptys\"")
            && j.contains("PTY_MASTER")
            && j.contains("\"slave_termios\""),
        "{j}"
    );
}

/// Reading a pty's queues at dump time gives them back: the original
/// still finds its bytes after a --leave-running dump.
#[test]
fn tty_pty_leave_running() {
    if skip_unless_root() {
        return;
    }
    leave_running("tty_pty", &[]);
}

/// Kills a process started by a test (and what it started) on drop.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        kill_tree(&mut self.0);
    }
}

fn wait_pidfile(path: &std::path::Path, timeout: std::time::Duration) -> Option<i32> {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Some(p) = read_pidfile(path) {
            return Some(p);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    None
}

/// How a shell-job test checkpoints and restores.
struct JobCycle {
    /// Checkpoints pid into the images directory (the job must be gone
    /// afterwards); returns the command's output.
    dump: fn(i32, &std::path::Path) -> std::process::Output,
    /// The restoring command line, run by a stand-in shell on another
    /// pty; None between "--pidfile" and its value means "no pidfile": the
    /// command says the pid itself.
    restore: fn(&std::path::Path, &std::path::Path, &std::path::Path) -> Vec<std::ffi::OsString>,
    /// The restoring command returns once the job runs (detached): the
    /// stand-in shell must stay.
    detached: bool,
    /// Options of the stand-in shell the job is started from.
    shell_args: &'static [&'static str],
}

/// Starts tty_shell as a job of a stand-in shell on a pty, checkpoints it
/// with `c.dump`, restores it with `c.restore` run by a stand-in shell
/// whose terminal is another pty, and checks on that terminal that the job
/// talks to it and passes.
fn shell_job_cycle(tag: &str, c: JobCycle) {
    use common::pty::Pty;
    use std::process::{Command, Stdio};
    use std::time::Duration;
    let dir = fresh_dir(tag);
    let work = dir.join("work");
    std::fs::create_dir(&work).unwrap();
    let images = dir.join("images");
    let pidfile = work.join("ready.pid");
    let mut pty1 = Pty::open();
    let shell = Command::new(workload_bin("pty_shell"))
        .args(c.shell_args)
        .arg(&pty1.slave)
        .arg(workload_bin("tty_shell"))
        .arg("--pidfile")
        .arg(&pidfile)
        .current_dir(&work)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the stand-in shell");
    let mut shell = Guard(shell);
    let pid = wait_pidfile(&pidfile, READY_TIMEOUT).expect("the job did not get ready");
    assert!(
        pty1.read_until("ready", Duration::from_secs(10)),
        "the job printed nothing: {:?}",
        pty1.all
    );
    let out = (c.dump)(pid, &images);
    assert_ok(&out, "checkpoint of the shell job");
    let st = wait_timeout(&mut shell.0, Duration::from_secs(10)).expect("the shell did not end");
    assert_ne!(exit_code(&st), 0, "the dumped job exited by itself");
    assert!(wait_pid_gone(pid, Duration::from_secs(5)));

    let mut pty2 = Pty::open();
    let rpid = dir.join("restored.pid");
    let rlog = dir.join("restore.log");
    let mut cmd = Command::new(workload_bin("pty_shell"));
    if c.detached {
        cmd.arg("--stay");
    }
    let restorer = cmd
        .arg(&pty2.slave)
        .args((c.restore)(&images, &rpid, &rlog))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the restoring shell");
    let mut restorer = Guard(restorer);
    let pfd = if c.detached {
        assert!(
            pty2.read_until(&format!("{pid} resumed"), Duration::from_secs(30)),
            "no resume: {:?}",
            pty2.all
        );
        pidfd_open(pid).expect("the restored job runs")
    } else {
        let got = wait_pidfile(&rpid, RESTORE_READY_TIMEOUT).unwrap_or_else(|| {
            pty2.read_until("\n", Duration::from_millis(500));
            panic!("no restore: {}\n{:?}", tail(&rlog, 4000), pty2.all)
        });
        assert_eq!(got, pid);
        pidfd_open(pid).expect("the restored job runs")
    };
    pidfd_signal(&pfd, libc::SIGTERM).unwrap();
    assert!(
        pty2.read_until("say something", Duration::from_secs(20)),
        "the restored job did not write to the new terminal: {:?}\n{}",
        pty2.all,
        tail(&rlog, 4000)
    );
    pty2.write("pong\n");
    assert!(
        pty2.read_until("PASS", Duration::from_secs(20)),
        "the restored job did not pass: {:?}",
        pty2.all
    );
    assert!(!pty2.all.contains("FAIL"), "{:?}", pty2.all);
    assert!(
        pidfd_wait_exit(&pfd, Duration::from_secs(20)),
        "the job did not exit"
    );
    if !c.detached {
        let st = wait_timeout(&mut restorer.0, Duration::from_secs(20))
            .expect("cairn restore did not end");
        assert_eq!(exit_code(&st), 0, "cairn restore: {}", tail(&rlog, 4000));
    }
    drop(restorer);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Refusals around shell jobs: a dump without --shell-job names the pid,
/// the fd and the flag and leaves the job alone; a restore of a shell job
/// without --shell-job is refused.
#[test]
fn shell_job_refusals() {
    use common::pty::Pty;
    use std::process::{Command, Stdio};
    use std::time::Duration;
    if skip_unless_root() {
        return;
    }
    let dir = fresh_dir("shell_job_refusals");
    let work = dir.join("work");
    std::fs::create_dir(&work).unwrap();
    let images = dir.join("images");
    let pidfile = work.join("ready.pid");
    let mut pty1 = Pty::open();
    let shell = Command::new(workload_bin("pty_shell"))
        .arg(&pty1.slave)
        .arg(workload_bin("tty_shell"))
        .arg("--pidfile")
        .arg(&pidfile)
        .current_dir(&work)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the stand-in shell");
    let mut shell = Guard(shell);
    let pid = wait_pidfile(&pidfile, READY_TIMEOUT).expect("the job did not get ready");
    assert!(pty1.read_until("ready", Duration::from_secs(10)));
    let out = dump(pid, &images, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{}", describe(&out));
    assert!(
        err.contains(&format!("pid {pid}")) && err.contains("fd 0") && err.contains("--shell-job"),
        "unclear refusal: {err}"
    );
    // Untouched: it still runs and answers on its terminal.
    let pfd = pidfd_open(pid).expect("the job still runs");
    assert_ok(&dump(pid, &images, &["--shell-job"]), "dump --shell-job");
    let st = wait_timeout(&mut shell.0, Duration::from_secs(10)).expect("the shell did not end");
    assert_ne!(exit_code(&st), 0);
    assert!(pidfd_wait_exit(&pfd, Duration::from_secs(5)));
    assert!(wait_pid_gone(pid, Duration::from_secs(5)));
    let out = restore_expect_fail(&images, &[], pid);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--shell-job"),
        "{}",
        describe(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A job started from a shell (its stdio on the shell's terminal, its own
/// process group in the foreground, the shell's session), checkpointed
/// with `cairn dump --shell-job` and restored with `cairn restore
/// --shell-job` by a cairn whose controlling terminal is another pty: the
/// job writes to and reads from that terminal, in its foreground, with the
/// raw-mode settings it had made.
#[test]
fn shell_job() {
    if skip_unless_root() {
        return;
    }
    shell_job_cycle(
        "shell_job",
        JobCycle {
            dump: |pid, images| dump(pid, images, &["--shell-job", "-v"]),
            restore: |images, pidfile, log| {
                vec![
                    cairn_bin().into(),
                    "restore".into(),
                    "-D".into(),
                    images.into(),
                    "--shell-job".into(),
                    "--pidfile".into(),
                    pidfile.into(),
                    "-v".into(),
                    "-o".into(),
                    log.into(),
                ]
            },
            detached: false,
            shell_args: &[],
        },
    );
}

/// The guide's commands take a job of the calling shell as shell jobs:
/// `chkpnt -k` of a job on one terminal, `resume` from another terminal.
#[test]
fn chkpnt_resume_shell_job() {
    if skip_unless_root() {
        return;
    }
    shell_job_cycle(
        "chkpnt_shell_job",
        JobCycle {
            dump: |pid, images| {
                std::process::Command::new(chkpnt_bin())
                    .args(["-p", &pid.to_string(), "-k", "-od"])
                    .arg(images)
                    .stdin(std::process::Stdio::null())
                    .output()
                    .expect("run chkpnt")
            },
            restore: |images, _, _| vec![resume_bin().into(), "-od".into(), images.into()],
            detached: true,
            shell_args: &[],
        },
    );
}

/// A job that shares its shell's process group (started by a shell
/// without job control, as a script runs its commands): it comes back in
/// the process group of the restoring cairn, which takes the shell's
/// place, in the foreground of cairn's terminal (it failed with
/// tcsetpgrp EPERM: the saved group was the old shell's).
#[test]
fn shell_job_in_the_shells_process_group() {
    if skip_unless_root() {
        return;
    }
    shell_job_cycle(
        "shell_job_shared_pgrp",
        JobCycle {
            dump: |pid, images| dump(pid, images, &["--shell-job", "-v"]),
            restore: |images, pidfile, log| {
                vec![
                    cairn_bin().into(),
                    "restore".into(),
                    "-D".into(),
                    images.into(),
                    "--shell-job".into(),
                    "--pidfile".into(),
                    pidfile.into(),
                    "-v".into(),
                    "-o".into(),
                    log.into(),
                ]
            },
            detached: false,
            shell_args: &["--no-job-control"],
        },
    );
}

/// A pty slave given another owner and mode (as grantpt, sshd or `mesg`
/// do) has them again after a restore (a new slave was root's, 0620).
#[test]
fn tty_pty_slave_owner() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("files_pty_owner", &[]);
}
