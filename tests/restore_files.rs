//! Files and process attributes, and restore's checks of changed files.
mod common;

use std::fs;
use std::path::Path;

use common::*;

#[test]
fn files_regular() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("files_regular", &[]);
}

#[test]
fn files_dup() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("files_dup", &[]);
}

#[test]
fn files_dev() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("files_dev", &[]);
}

/// stdout/stderr share one description on the log file: the offset survives,
/// so the log holds the lines in order, nothing overwritten.
#[test]
fn files_stdio() {
    if skip_unless_root() {
        return;
    }
    let w = checkpoint_restore("files_stdio", &[]);
    assert_eq!(
        w.log_text(),
        "files_stdio: before the dump (stdout)\n\
         files_stdio: before the dump (stderr)\n\
         files_stdio: after restore (stdout)\n\
         files_stdio: after restore (stderr)\n\
         PASS\n",
        "the workload log is not the expected sequence of lines"
    );
}

#[test]
fn proc_attrs() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("proc_attrs", &[]);
}

#[test]
fn proc_creds() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore_opts(
        "proc_creds",
        &[],
        StartOpts {
            world_writable_workdir: true,
        },
    );
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

fn assert_names_path(out: &std::process::Output, path: &Path) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(path_str(path)),
        "the failed restore's error does not name {}:\n{}",
        path.display(),
        describe(out)
    );
}

/// Start `name` with `--file PATH` (a file in a directory of its own, apart
/// from the workload's cwd), dump it without file contents
/// (`--file-contents=none`: with them, restore would put the file back; see
/// tests/chkpnt.rs), let `change` modify or delete the file,
/// and require that restore refuses, names the file, and leaves no process
/// behind. Returns the workload (for further restores) and the data dir.
fn restore_refuses_changed_file(
    name: &str,
    args: &[&str],
    change: fn(&Path),
) -> (Workload, DataDir) {
    let data = DataDir(fresh_dir("data"));
    let path = data.0.join(format!("{name}.data"));
    let mut all = vec!["--file", path_str(&path)];
    all.extend_from_slice(args);
    let mut w = Workload::start(name, &all);
    w.dump_ok(&["--file-contents=none"]);
    w.expect_killed_by_dump();
    assert!(
        path.exists(),
        "the workload did not create {}",
        path.display()
    );
    change(&path);
    let out = restore_expect_fail(&w.images, &[], w.pid);
    assert_names_path(&out, &path);
    assert!(
        wait_pid_gone(w.pid, std::time::Duration::from_secs(5)),
        "pid {} is running after a failed restore",
        w.pid
    );
    (w, data)
}

/// A directory for data files, removed unless the test fails.
struct DataDir(std::path::PathBuf);

impl Drop for DataDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

fn remove(p: &Path) {
    fs::remove_file(p).expect("remove the file");
}

/// An open regular file grew by one byte: restore must refuse (naming it);
/// with --ignore-file-changes it restores (the workload skips its content
/// checks with --lenient, but still checks fds, offsets and flags).
#[test]
fn file_changed_open_fd() {
    if skip_unless_root() {
        return;
    }
    let (w, _data) = restore_refuses_changed_file("files_regular", &["--lenient"], append_byte);
    w.restore_wait(&["--ignore-file-changes"]);
}

/// An open regular file was deleted: restore must refuse, naming it.
#[test]
fn file_deleted_open_fd() {
    if skip_unless_root() {
        return;
    }
    restore_refuses_changed_file("files_regular", &[], remove);
}

/// A file that is only mapped (MAP_PRIVATE, no fd) changed: restore refuses.
#[test]
fn file_changed_mapped() {
    if skip_unless_root() {
        return;
    }
    restore_refuses_changed_file("mem_file_private", &[], append_byte);
}

/// A file that is only mapped (MAP_SHARED, no fd) vanished: restore refuses.
#[test]
fn file_deleted_mapped() {
    if skip_unless_root() {
        return;
    }
    restore_refuses_changed_file("mem_file_shared", &[], remove);
}

/// --ignore-file-changes with a workload that does check the content: the
/// restore works, the workload notices the extra byte and FAILs, and cairn
/// exits with the workload's exit code (1).
#[test]
fn restore_propagates_exit_code() {
    if skip_unless_root() {
        return;
    }
    let (w, _data) = restore_refuses_changed_file("files_regular", &[], append_byte);
    let mut run = w.restore_start(&["--ignore-file-changes"], false);
    run.signal(libc::SIGTERM);
    let st = run.wait_cairn(EXIT_TIMEOUT);
    let log = w.log_text();
    assert!(
        log.contains("FAIL: file size 8193"),
        "expected the workload to report the changed size. Its log:\n{log}"
    );
    assert_eq!(
        exit_code(&st),
        1,
        "cairn restore must exit with the restored process's exit code\n{}",
        describe(&run.output())
    );
}
