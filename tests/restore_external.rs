//! External resources (issue 14; CRIU's `--external` and `--inherit-fd`):
//! a tree whose fd 5 is a pipe or a unix socket whose other end the test
//! holds (outside the tree) is dumped with `--external KEY`, killed, and
//! restored with `--inherit-fd fd[5]:KEY`, the test handing in the same
//! object: the test reads the workload's numbered lines before, during and
//! after, and sees none lost or repeated. The workload (ext_fd) checks
//! fd 5's flags, fd flags, inode, a dup and a child's copy after the
//! restore. Without `--external` the dump is refused naming the key to
//! use; a restore without (or with a wrong) `--inherit-fd` fails before
//! any process exists, naming key, pid and fd.

mod common;

use std::fs::{self, File};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::refuse::*;
use common::*;

/// The fd number the workload has the outside object at.
const FD: i32 = 5;

/// In a child before exec: makes `raw` its fd [`FD`] without
/// close-on-exec (async-signal-safe calls only).
fn install_at_fd(cmd: &mut Command, raw: i32, setsid: bool) {
    // SAFETY: the closure runs in the forked child before exec and only
    // calls setsid(2), dup2(2) and fcntl(2), which are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if setsid && libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let r = if raw == FD {
                libc::fcntl(FD, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, FD)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The workload ext_fd, started with an object as its fd 5.
struct Ext {
    pid: i32,
    child: Child,
    log: PathBuf,
    images: PathBuf,
    /// The test directory, removed unless the test fails.
    dir: PathBuf,
}

impl Ext {
    fn start(obj: &OwnedFd, args: &[&str]) -> Ext {
        let bin = workload_bin("ext_fd");
        let dir = fresh_dir("ext_fd");
        let work = dir.join("work");
        fs::create_dir(&work).expect("mkdir work");
        let log = dir.join("workload.log");
        let pidfile = work.join("ready.pid");
        let out = File::create(&log).expect("create the workload log");
        let err = out.try_clone().expect("dup the log fd");
        let mut cmd = Command::new(&bin);
        cmd.arg("--pidfile")
            .arg(&pidfile)
            .args(args)
            .current_dir(&work)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        install_at_fd(&mut cmd, obj.as_raw_fd(), true);
        let child = cmd.spawn().expect("spawn ext_fd");
        let mut w = Ext {
            pid: child.id() as i32,
            child,
            log,
            images: dir.join("images"),
            dir,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        while read_pidfile(&pidfile) != Some(w.pid) {
            if let Ok(Some(st)) = w.child.try_wait() {
                panic!("ext_fd exited ({st:?}) early: {}", tail(&w.log, 4000));
            }
            assert!(Instant::now() < deadline, "ext_fd not ready");
            std::thread::sleep(Duration::from_millis(10));
        }
        w
    }

    /// Dumps with `-v` and `flags`; must succeed and kill the tree.
    fn dump_ok(&mut self, flags: &[&str]) {
        let mut all = vec!["-v"];
        all.extend_from_slice(flags);
        let out = dump(self.pid, &self.images, &all);
        assert!(out.status.success(), "dump: {}", describe(&out));
        assert!(
            wait_timeout(&mut self.child, Duration::from_secs(10)).is_some(),
            "the dumped tree still runs"
        );
        assert!(wait_pid_gone(self.pid, Duration::from_secs(5)));
    }

    /// SIGTERMs the original, which must PASS.
    fn terminate_expect_pass(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        let st = wait_timeout(&mut self.child, EXIT_TIMEOUT).expect("ext_fd exits");
        assert!(st.success(), "ext_fd: {}", tail(&self.log, 4000));
        assert_log_pass(&self.log, "original");
    }
}

impl Drop for Ext {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Reads the workload's numbered lines from the test's end until "end",
/// checking each is the one after the last.
struct Lines {
    seen: Arc<AtomicU64>,
    done: mpsc::Receiver<Result<u64, String>>,
}

impl Lines {
    fn read(end: OwnedFd) -> Lines {
        let seen = Arc::new(AtomicU64::new(0));
        let (tx, done) = mpsc::channel();
        let s = seen.clone();
        std::thread::spawn(move || {
            let mut f = File::from(end);
            let (mut buf, mut chunk, mut n) = (Vec::new(), [0u8; 4096], 0u64);
            let r = loop {
                let k = match f.read(&mut chunk) {
                    Ok(0) => break Err(format!("EOF after {n} lines, before \"end\"")),
                    Ok(k) => k,
                    Err(e) => break Err(format!("read: {e}")),
                };
                buf.extend_from_slice(&chunk[..k]);
                let mut fin = None;
                while let Some(p) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=p).collect();
                    // A terminal writes "\r\n" for "\n" (ONLCR).
                    let text = line[..p].strip_suffix(b"\r").unwrap_or(&line[..p]);
                    let line = String::from_utf8_lossy(text).into_owned();
                    if line == "end" {
                        fin = Some(Ok(n));
                        break;
                    }
                    if line.parse::<u64>().ok() != Some(n) {
                        fin = Some(Err(format!("line {n} reads {line:?}: lost or repeated")));
                        break;
                    }
                    n += 1;
                    s.store(n, Ordering::SeqCst);
                }
                if let Some(r) = fin {
                    break r;
                }
            };
            let _ = tx.send(r);
        });
        Lines { seen, done }
    }

    fn count(&self) -> u64 {
        self.seen.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` lines were read.
    fn wait_for(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.count() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} lines arrived",
                self.count()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The number of lines once "end" came; panics on a gap or repeat.
    fn finish(&self) -> u64 {
        match self.done.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => panic!("the lines read by the test: {e}"),
            Err(e) => panic!("no \"end\" line after {} lines: {e}", self.count()),
        }
    }
}

/// `cairn restore -D IMAGES --pidfile F EXTRA...` with `give` as cairn's
/// fd 5 (verbose and compared with the dump's oracle when `ok`). Returns
/// cairn, the pid file and the base of its output files.
fn spawn_restore(
    w: &Ext,
    extra: &[&str],
    give: Option<&OwnedFd>,
    ok: bool,
) -> (Child, PathBuf, PathBuf) {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let pidfile = w.images.with_file_name(format!("ext-restore-{n}.pid"));
    let base = w.images.with_file_name(format!("ext-restore-{n}"));
    let mut cmd = Command::new(cairn_bin());
    cmd.arg("restore")
        .arg("-D")
        .arg(&w.images)
        .arg("--pidfile")
        .arg(&pidfile);
    if ok {
        cmd.args(["-v", "--compare"]);
    }
    cmd.args(extra)
        .stdin(Stdio::null())
        .stdout(File::create(base.with_extension("stdout")).unwrap())
        .stderr(File::create(base.with_extension("stderr")).unwrap());
    if let Some(g) = give {
        install_at_fd(&mut cmd, g.as_raw_fd(), false);
    }
    (cmd.spawn().expect("spawn cairn restore"), pidfile, base)
}

/// A restore that must fail before any process exists: non-zero exit, no
/// pid file, the tree's pid free, and every word of `words` in its error.
fn restore_fails(w: &Ext, extra: &[&str], give: Option<&OwnedFd>, words: &[&str]) {
    let (mut c, pidfile, base) = spawn_restore(w, extra, give, false);
    let st = wait_timeout(&mut c, CAIRN_TIMEOUT).expect("cairn restore exits");
    let err = fs::read_to_string(base.with_extension("stderr")).unwrap_or_default();
    assert!(!st.success(), "the restore with {extra:?} succeeded: {err}");
    assert!(
        read_pidfile(&pidfile).is_none(),
        "it restored something: {err}"
    );
    assert!(
        !pid_exists(w.pid),
        "pid {} exists after the failed restore",
        w.pid
    );
    for word in words {
        assert!(
            err.contains(word),
            "no {word:?} in the error of {extra:?}: {err}"
        );
    }
}

/// A restore that must work: waits for the tree, for `more` lines after
/// it runs, then SIGTERMs it; cairn must exit 0 and the workload PASS.
fn restore_ok(w: &Ext, extra: &[&str], give: &OwnedFd, lines: Option<&Lines>, more: u64) -> Output {
    let (mut c, pidfile, base) = spawn_restore(w, extra, Some(give), true);
    let ctx = |b: &PathBuf| tail(&b.with_extension("stderr"), 6000);
    let deadline = Instant::now() + RESTORE_READY_TIMEOUT;
    while read_pidfile(&pidfile).is_none() {
        if let Ok(Some(st)) = c.try_wait() {
            panic!(
                "cairn restore exited ({st:?}) before the tree ran: {}",
                ctx(&base)
            );
        }
        if Instant::now() > deadline {
            kill_tree(&mut c);
            panic!("restore not ready: {}", ctx(&base));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(read_pidfile(&pidfile), Some(w.pid));
    let pidfd = pidfd_open(w.pid).expect("the restored pid runs");
    match lines {
        Some(l) => l.wait_for(l.count() + more),
        None => std::thread::sleep(Duration::from_millis(more * 2)),
    }
    pidfd_signal(&pidfd, libc::SIGTERM).expect("SIGTERM the restored tree");
    let st = wait_timeout(&mut c, EXIT_TIMEOUT);
    if st.is_none() {
        let _ = pidfd_signal(&pidfd, libc::SIGKILL);
        kill_tree(&mut c);
    }
    let st = st.expect("cairn exits once the restored tree does");
    assert!(st.success(), "restore: {} {}", exit_code(&st), ctx(&base));
    assert_log_pass(&w.log, "after restore");
    Output {
        status: st,
        stdout: fs::read(base.with_extension("stdout")).unwrap_or_default(),
        stderr: fs::read(base.with_extension("stderr")).unwrap_or_default(),
    }
}

fn ino(fd: &OwnedFd) -> u64 {
    File::from(fd.try_clone().unwrap())
        .metadata()
        .unwrap()
        .ino()
}

fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe")
}

/// `job | reader`: the workload writes into a pipe whose read end only
/// the test holds; dumped with --external pipe:[INO] and restored with the
/// same pipe's write end handed in: the lines go on without a gap or a
/// repeat; fd 5 keeps O_NONBLOCK and close-on-exec, its dup (fd 7) and a
/// child's copy stay the same description.
#[test]
fn external_pipe_inherited() {
    if skip_unless_root() {
        return;
    }
    let (r, wr) = pipe();
    let key = format!("pipe:[{}]", ino(&wr));
    let mut w = Ext::start(&wr, &["--nonblock", "--cloexec", "--dup", "7", "--fork"]);
    let lines = Lines::read(r);
    lines.wait_for(50);
    w.dump_ok(&["--external", &key]);
    let at_dump = lines.count();
    // The tree is gone; the pipe is not (the test holds both ends).
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        lines.count(),
        at_dump,
        "lines arrived while the tree was dumped"
    );
    let show = Command::new(cairn_bin())
        .arg("show")
        .arg(&w.images)
        .arg("--full")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains("external {") && text.contains(&key),
        "cairn show: {text}"
    );
    let inherit = format!("fd[5]:{key}");
    restore_ok(&w, &["--inherit-fd", &inherit], &wr, Some(&lines), 100);
    let n = lines.finish();
    assert!(n > at_dump + 100, "{n} lines, {at_dump} at the dump");
}

/// A supervisor's socket pair: the workload has one end of a unix stream
/// socket pair, the test the other; dumped with --external socket:[INO]
/// (the workload's end), restored with that end handed in.
#[test]
fn external_socketpair_inherited() {
    if skip_unless_root() {
        return;
    }
    let (mine, theirs) = UnixStream::pair().expect("socketpair");
    let (mine, theirs) = (OwnedFd::from(mine), OwnedFd::from(theirs));
    let key = format!("socket:[{}]", ino(&theirs));
    let mut w = Ext::start(&theirs, &["--nonblock"]);
    let lines = Lines::read(mine);
    lines.wait_for(50);
    w.dump_ok(&["--external", &key]);
    let at_dump = lines.count();
    let inherit = format!("fd[5]:{key}");
    restore_ok(&w, &["--inherit-fd", &inherit], &theirs, Some(&lines), 100);
    assert!(lines.finish() > at_dump + 100);
}

/// Without --external, a pipe and a socket whose other end is outside the
/// tree are still refused, naming pid, fd and the --external key to use.
#[test]
fn external_not_named_refused() {
    if skip_unless_root() {
        return;
    }
    let (r, wr) = pipe();
    let key = format!("--external pipe:[{}]", ino(&wr));
    let mut w = Ext::start(&wr, &[]);
    let lines = Lines::read(r);
    let r = dump_refused(w.pid, &w.images, &[], &["fd 5", &key]);
    r.assert_before_freeze();
    w.terminate_expect_pass();
    lines.finish();

    let (mine, theirs) = UnixStream::pair().expect("socketpair");
    let (mine, theirs) = (OwnedFd::from(mine), OwnedFd::from(theirs));
    let key = format!("--external socket:[{}]", ino(&theirs));
    let mut w = Ext::start(&theirs, &[]);
    let lines = Lines::read(mine);
    dump_refused(w.pid, &w.images, &[], &["fd 5", &key]);
    w.terminate_expect_pass();
    lines.finish();
}

/// A restore without the --inherit-fd, or with an fd that is not open, of
/// another kind (a socket for a pipe, a file), of the other direction (the
/// read end for the write end), fails before any process is created,
/// naming key, pid and fd; then the right one restores.
#[test]
fn external_inherit_fd_checked() {
    if skip_unless_root() {
        return;
    }
    let (r, wr) = pipe();
    let k = format!("pipe:[{}]", ino(&wr));
    let mut w = Ext::start(&wr, &[]);
    let lines = Lines::read(r.try_clone().unwrap());
    lines.wait_for(20);
    w.dump_ok(&["--external", &k]);
    let pid = format!("pid {}", w.pid);
    restore_fails(&w, &[], None, &[&k, &pid, "fd 5", "--inherit-fd"]);
    let inherit = format!("fd[5]:{k}");
    let args = ["--inherit-fd", inherit.as_str()];
    restore_fails(&w, &args, None, &[&k, "fd 5 is not open"]);
    let (sock, _other) = UnixStream::pair().unwrap();
    let sock = OwnedFd::from(sock);
    restore_fails(&w, &args, Some(&sock), &[&k, "socket:[", "not a pipe"]);
    let on_stderr = format!("fd[2]:{k}");
    restore_fails(
        &w,
        &["--inherit-fd", &on_stderr],
        None,
        &["fd 2 is /", "not a pipe"],
    );
    restore_fails(&w, &args, Some(&r), &[&k, "O_RDONLY", "other direction"]);
    let other = format!("fd[5]:pipe:[{}]", ino(&r) + 1);
    restore_fails(
        &w,
        &["--inherit-fd", &other],
        Some(&wr),
        &["no fd of the checkpointed tree"],
    );
    restore_fails(
        &w,
        &["--inherit-fd", "fd[5]:pipe[1]"],
        Some(&wr),
        &["not an external key"],
    );
    restore_ok(&w, &args, &wr, Some(&lines), 50);
    lines.finish();
}

/// An open file a supervisor handed the job: the workload writes its
/// lines into a file the test opened (fd 5, not O_APPEND); dumped with
/// --external file[MNT_ID:INO], restored with the same open file handed
/// in: the file holds every line once, in order (the description's
/// position went on from where it was).
#[test]
fn external_file_inherited() {
    if skip_unless_root() {
        return;
    }
    let dir = fresh_dir("ext_file");
    let path = dir.join("out");
    let f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .expect("create the output file");
    let fd = OwnedFd::from(f);
    let info = fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).unwrap();
    let mnt: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("mnt_id in fdinfo");
    let key = format!("file[{mnt:x}:{:x}]", ino(&fd));
    let mut w = Ext::start(&fd, &["--cloexec"]);
    std::thread::sleep(Duration::from_millis(100));
    w.dump_ok(&["--external", &key]);
    let inherit = format!("fd[5]:{key}");
    restore_ok(&w, &["--inherit-fd", &inherit], &fd, None, 100);
    let text = fs::read_to_string(&path).unwrap();
    let mut n = 0u64;
    let mut ended = false;
    for line in text.lines() {
        assert!(!ended, "lines after \"end\"");
        if line == "end" {
            ended = true;
            continue;
        }
        assert_eq!(
            line.parse::<u64>().ok(),
            Some(n),
            "line {n} lost or repeated"
        );
        n += 1;
    }
    assert!(ended && n > 100, "{n} lines, ended: {ended}");
    drop(w);
    let _ = fs::remove_dir_all(&dir);
}

/// A terminal of a session outside the tree (a pty whose master the test
/// holds, not the workload's controlling terminal): dumped with
/// --external tty[RDEV:DEV] as CRIU names it, restored with a slave of the
/// same pty handed in: the lines go on through the terminal without a gap
/// or a repeat. Without --external the dump is refused (a terminal of
/// another session needs --shell-job or --external).
#[test]
fn external_tty_inherited() {
    if skip_unless_root() {
        return;
    }
    let pty = common::pty::Pty::open();
    let slave: OwnedFd = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&pty.slave)
        .expect("open the pty slave")
        .into();
    let md = File::from(slave.try_clone().unwrap()).metadata().unwrap();
    let key = format!("tty[{:x}:{:x}]", md.rdev(), md.dev());
    let master: OwnedFd = pty.master.try_clone().expect("dup the master").into();

    let mut w = Ext::start(&slave, &[]);
    let lines = Lines::read(master);
    lines.wait_for(50);
    dump_refused(
        w.pid,
        &w.images,
        &[],
        &["fd 5", "terminal", &pty.slave, &key],
    );
    w.dump_ok(&["--external", &key]);
    let at_dump = lines.count();
    let inherit = format!("fd[5]:{key}");
    restore_ok(&w, &["--inherit-fd", &inherit], &slave, Some(&lines), 100);
    assert!(lines.finish() > at_dump + 100);
}
