//! cairn as a tool: failures, --leave-running, show, repeated and detached
//! restores, exit codes.
mod common;

use std::fs;
use std::process::Command;
use std::time::Duration;

use common::*;

/// Dumping a pid that does not exist fails and names the pid.
#[test]
fn dump_nonexistent_pid_fails() {
    if skip_unless_root() {
        return;
    }
    // A pid that just existed and was reaped is (for all practical purposes) free.
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id() as i32;
    child.wait().expect("wait true");
    assert!(!pid_exists(pid), "pid {pid} was recycled at once; rerun");
    let dir = fresh_dir("nonexistent-pid");
    let out = dump(pid, &dir.join("images"), &[]);
    assert!(
        !out.status.success(),
        "dump of the nonexistent pid {pid} succeeded: {}",
        describe(&out)
    );
    assert!(
        contains_number(&String::from_utf8_lossy(&out.stderr), pid.into()),
        "the error does not name pid {pid}: {}",
        describe(&out)
    );
    let _ = fs::remove_dir_all(&dir);
}

/// --leave-running, then: restoring while the original runs fails naming
/// the pid (and does not hurt the original); the original PASSes on SIGTERM;
/// then a restore from the same images works and PASSes.
fn leave_running_then_restore(name: &str, args: &[&str]) {
    let mut w = Workload::start(name, args);
    w.dump_ok(&["--leave-running"]);
    let snap = w.log_snapshot();
    assert!(
        w.original_alive(),
        "{name} died during a --leave-running dump"
    );

    let out = restore_expect_fail(&w.images, &[], w.pid);
    assert!(
        contains_number(&String::from_utf8_lossy(&out.stderr), w.pid.into()),
        "restoring while pid {} is taken must fail naming the pid: {}",
        w.pid,
        describe(&out)
    );
    assert!(
        w.original_alive(),
        "the failed restore hurt the original {name}"
    );
    w.terminate_original_expect_pass();

    // The original wrote PASS to the log; put the log back as it was at the
    // dump so restore's file checks see it unchanged.
    w.log_reset(&snap);
    w.restore_wait(&[]);
}

#[test]
fn leave_running_mem_heap() {
    if skip_unless_root() {
        return;
    }
    leave_running_then_restore("mem_heap", &[]);
}

#[test]
fn leave_running_regs_xsave() {
    if skip_unless_root() {
        return;
    }
    leave_running_then_restore("regs_xsave", &[]);
}

/// Dumping must not consume pending signals or leave them changed.
#[test]
fn leave_running_sig_pending() {
    if skip_unless_root() {
        return;
    }
    leave_running("sig_pending", &[]);
}

#[test]
fn leave_running_sleep_sigsuspend() {
    if skip_unless_root() {
        return;
    }
    leave_running("sleep_sigsuspend", &[]);
}

#[test]
fn leave_running_sleep_read() {
    if skip_unless_root() {
        return;
    }
    leave_running("sleep_read", &[]);
}

#[test]
fn leave_running_sleep_nanosleep() {
    if skip_unless_root() {
        return;
    }
    leave_running("sleep_nanosleep", &[]);
}

#[test]
fn leave_running_mem_brk() {
    if skip_unless_root() {
        return;
    }
    leave_running("mem_brk", &[]);
}

#[test]
fn leave_running_sig_blocked() {
    if skip_unless_root() {
        return;
    }
    leave_running("sig_blocked", &[]);
}

#[test]
fn leave_running_rseq() {
    if skip_unless_root() {
        return;
    }
    leave_running("rseq", &[]);
}

/// `cairn show DIR --json` prints one valid JSON document naming the pid;
/// plain `cairn show DIR` prints something; neither damages the images.
#[test]
fn show_json() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("mem_heap", &[]);
    w.dump_ok(&[]);
    w.expect_killed_by_dump();

    let args = [
        std::ffi::OsString::from("show"),
        w.images.clone().into(),
        "--json".into(),
    ];
    let out = run_cairn(&args, &w.dir.join("cairn-show-json"), CAIRN_TIMEOUT);
    assert_ok(&out, "cairn show --json");
    let text = String::from_utf8_lossy(&out.stdout);
    let t = text.trim();
    assert!(
        (t.starts_with('{') && t.ends_with('}')) || (t.starts_with('[') && t.ends_with(']')),
        "`cairn show --json` output is not a JSON object or array: {}",
        describe(&out)
    );
    assert!(
        is_valid_json(t),
        "`cairn show --json` output is not valid JSON: {}",
        describe(&out)
    );
    assert!(
        contains_number(t, w.pid.into()),
        "`cairn show --json` does not mention pid {}: {}",
        w.pid,
        describe(&out)
    );

    let args = [std::ffi::OsString::from("show"), w.images.clone().into()];
    let out = run_cairn(&args, &w.dir.join("cairn-show"), CAIRN_TIMEOUT);
    assert_ok(&out, "cairn show");
    assert!(!out.stdout.is_empty(), "`cairn show` printed nothing");

    w.restore_wait(&[]);
}

/// One image directory, two restores in a row (the first restored process
/// has exited); the log is put back to its dump-time state in between.
#[test]
fn restore_twice() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("mem_heap", &[]);
    w.dump_ok(&[]);
    w.expect_killed_by_dump();
    let snap = w.log_snapshot();
    w.restore_wait(&[]);
    assert!(
        wait_pid_gone(w.pid, Duration::from_secs(5)),
        "pid {} still exists after the first restore's cairn exited",
        w.pid
    );
    w.log_reset(&snap);
    w.restore_wait(&[]);
}

/// restore -d: cairn exits 0 once the pidfile is written; the restored
/// process keeps running, is not cairn's child, and PASSes on SIGTERM.
#[test]
fn restore_detached() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("mem_heap", &[]);
    w.dump_ok(&[]);
    w.expect_killed_by_dump();
    let mut run = w.restore_start(&[], true);
    let cairn_pid = run.cairn.as_ref().map(|c| c.id() as i32).unwrap_or(0);
    let st = run.wait_cairn(RESTORE_READY_TIMEOUT);
    assert!(
        st.success(),
        "cairn restore -d exited {}: {}",
        exit_code(&st),
        describe(&run.output())
    );
    assert!(
        pid_exists(run.pid),
        "the detached restored process {} is gone",
        run.pid
    );
    let status = fs::read_to_string(format!("/proc/{}/status", run.pid)).unwrap_or_default();
    let ppid: i32 = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1);
    assert!(
        ppid != cairn_pid,
        "the detached process's parent is still cairn ({cairn_pid})"
    );
    run.signal(libc::SIGTERM);
    run.wait_restored_exit(EXIT_TIMEOUT);
    assert_log_pass(&w.log, "detached restore");
}

/// Without -d, cairn exits with 128+signal when the restored process is
/// killed by a signal.
#[test]
fn restore_exit_code_on_signal() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("mem_heap", &[]);
    w.dump_ok(&[]);
    w.expect_killed_by_dump();
    let mut run = w.restore_start(&[], false);
    run.signal(libc::SIGKILL);
    let st = run.wait_cairn(EXIT_TIMEOUT);
    assert_eq!(
        exit_code(&st),
        128 + libc::SIGKILL,
        "cairn restore must exit 137 when the restored process is SIGKILLed: {}",
        describe(&run.output())
    );
}

/// A dump that fails (the images path is a regular file, so no directory
/// can be created there) exits non-zero with an error naming the pid (or the
/// path), and leaves the target running untouched: it still PASSes on SIGTERM.
#[test]
fn dump_failure_leaves_target_running() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("sig_pending", &[]);
    let not_a_dir = w.dir.join("not-a-dir");
    fs::write(&not_a_dir, b"x").expect("create a plain file");
    let out = dump(w.pid, &not_a_dir, &[]);
    assert!(
        !out.status.success(),
        "dump into {} (a regular file) succeeded: {}",
        not_a_dir.display(),
        describe(&out)
    );
    // The contract says dump errors name the pid; for an error about the
    // images directory, naming that path is accepted too.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        contains_number(&err, w.pid.into()) || err.contains(not_a_dir.to_str().expect("utf-8")),
        "the dump error names neither pid {} nor the images path: {}",
        w.pid,
        describe(&out)
    );
    w.terminate_original_expect_pass();
}

/// -o LOGFILE: dump and restore write their (-v) log to the given file.
#[test]
fn log_file_option() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("mem_heap", &[]);
    let dump_log = w.dir.join("dump.log");
    let restore_log = w.dir.join("restore.log");
    w.dump_ok(&["-o", dump_log.to_str().expect("utf-8 path")]);
    w.expect_killed_by_dump();
    w.restore_wait(&["-o", restore_log.to_str().expect("utf-8 path")]);
    for log in [&dump_log, &restore_log] {
        let len = fs::metadata(log)
            .unwrap_or_else(|e| panic!("-o {}: no log file ({e})", log.display()))
            .len();
        assert!(
            len > 0,
            "-o {} with -v: the log file is empty",
            log.display()
        );
    }
}

/// The binary runs on a machine without libbpf, libelf or zlib: they are
/// linked statically (Cargo.toml, libbpf-rs feature "static"), and `ldd`
/// lists only the C library's own parts (and libgcc_s, which Rust's
/// unwinder uses and every Debian system has).
#[test]
fn links_only_the_c_library() {
    let bin = cairn_bin();
    let out = Command::new("ldd").arg(&bin).output().expect("ldd");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ldd {}: {text}", bin.display());
    const ALLOWED: &[&str] = &[
        "linux-vdso.so.",
        "ld-linux",
        "libc.so.",
        "libm.so.",
        "libgcc_s.so.",
        "libpthread.so.",
        "libdl.so.",
        "librt.so.",
    ];
    let extra: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            let lib = l.rsplit('/').next().unwrap_or(l);
            !ALLOWED
                .iter()
                .any(|a| l.starts_with(a) || lib.starts_with(a))
        })
        .collect();
    assert!(
        extra.is_empty(),
        "{} needs shared libraries beyond the C library: {extra:?}\n{text}",
        bin.display()
    );
}
