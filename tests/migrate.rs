//! Live migration (issue 16): `cairn migrate` to `cairn receive` between
//! two "machines", two network namespaces joined by a veth pair that each
//! test makes (addresses only inside them, traffic bounded by a token
//! bucket; the namespaces, and with them the veth, are removed at the
//! end). The workload (`migrate_mix`: threads rewriting memory, a child
//! answering through a pipe and a unix socket) runs in the first
//! namespace and checks itself after it arrived.
//!
//! Both namespaces share the pid space and the file system here, so the
//! receiver finds the tree's pids held by the source tree itself and
//! takes the hand-over mode (docs/ARCHITECTURE.md "Live migration"); the
//! frozen mode has a test with the receiver in a pid namespace of its own.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::{wait_exit, Net};
use common::*;

fn write_key(dir: &Path, name: &str, byte: u8) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, [byte; 32]).expect("write key");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).expect("chmod key");
    p
}

/// `migrate_mix` with `args`, started in namespace A.
fn start_source(net: &Net, args: &[&str]) -> Workload {
    net.start_workload("migrate_mix", args)
}

/// The source runs on, without the migration's dirty tracking; SIGTERM
/// makes it check itself and PASS.
fn source_runs_on(src: &mut Workload, what: &str) {
    assert!(
        src.original_alive(),
        "{what}: the source is gone: {}",
        tail(&src.log, 4000)
    );
    assert!(
        !has_uffd_wp(src.pid),
        "{what}: the source still carries the migration's dirty tracking (uw in smaps)"
    );
    src.terminate_original_expect_pass();
}

fn has_uffd_wp(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/smaps"))
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("VmFlags:") && l.split_whitespace().any(|f| f == "uw"))
}

/// A `cairn` command in a namespace, its output to files. Dropping it
/// kills it (by pid: our child).
struct Cairn {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Cairn {
    fn start(ns: &str, args: &[&str], dir: &Path, tag: &str) -> Cairn {
        let out = dir.join(format!("{tag}.out"));
        let err = dir.join(format!("{tag}.err"));
        let child = Net::spawn(
            ns,
            Command::new(cairn_bin())
                .args(args)
                .stdin(Stdio::null())
                .stdout(fs::File::create(&out).expect("out"))
                .stderr(fs::File::create(&err).expect("err")),
        );
        Cairn { child, out, err }
    }

    fn log(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            tail(&self.out, 3000),
            tail(&self.err, 8000)
        )
    }

    fn wait_line(&mut self, needle: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        loop {
            if fs::read_to_string(&self.err)
                .unwrap_or_default()
                .contains(needle)
            {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("cairn exited ({st}) before {needle:?}: {}", self.log());
            }
            assert!(
                Instant::now() < end,
                "no {needle:?} within {timeout:?}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// `cairn receive --once` in namespace B and in a pid namespace of its
/// own (a shell is its init): the tree's pids are free there, as on
/// another machine, so the receiver takes the frozen mode. `before`:
/// shell commands run first in that pid namespace. Once the receiver is
/// done, the shell sends SIGTERM to the restored root (its pid in that
/// namespace is in the pidfile) and waits; dropping it ends the
/// namespace (`unshare --kill-child`).
fn receiver_own_pids(net: &Net, key: &Path, dir: &Path, before: &str) -> Cairn {
    let listen = format!("{}:{PORT}", net.addr_b);
    let err = dir.join("receive.err");
    let pidfile = dir.join("received.pid");
    let script = format!(
        "{before}\n'{cairn}' -v receive --listen {listen} --key '{key}' --once --pidfile \
         '{pidfile}' 2>>'{err}'; echo \"receive-exit $?\" >>'{err}'; \
         [ -s '{pidfile}' ] && kill -TERM $(cat '{pidfile}'); sleep 60",
        cairn = cairn_bin().display(),
        key = key.display(),
        pidfile = pidfile.display(),
        err = err.display(),
    );
    let out = dir.join("receive.out");
    let child = Command::new("nsenter")
        .arg(Net::ns_path(&net.b))
        .args(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"])
        .args(["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).expect("out"))
        .stderr(fs::File::create(dir.join("receive.sh.err")).expect("err"))
        .spawn()
        .expect("spawn the receiver");
    let mut r = Cairn { child, out, err };
    r.wait_line("listening on", Duration::from_secs(30));
    r
}

impl Drop for Cairn {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

const PORT: &str = "7016";

fn receiver(net: &Net, key: &Path, dir: &Path, extra: &[&str]) -> Cairn {
    let listen = format!("{}:{PORT}", net.addr_b);
    let mut args = vec![
        "-v",
        "receive",
        "--listen",
        &listen,
        "--key",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut r = Cairn::start(&net.b, &args, dir, "receive");
    r.wait_line("listening on", Duration::from_secs(30));
    r
}

fn migrate(net: &Net, pid: i32, key: &Path, dir: &Path, extra: &[&str]) -> Cairn {
    let to = format!("{}:{PORT}", net.addr_b);
    let pid = pid.to_string();
    let mut args = vec![
        "-v",
        "migrate",
        "-t",
        &pid,
        "--to",
        &to,
        "--key",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Cairn::start(&net.a, &args, dir, "migrate")
}

/// Waits for `c` to exit, reaping the source meanwhile (hand-over mode:
/// its pid must be free before the receiver restores it).
fn wait_reaping(c: &mut Cairn, src: &mut Workload, timeout: Duration) -> i32 {
    let end = Instant::now() + timeout;
    loop {
        let _ = src.original_alive();
        if let Ok(Some(st)) = c.child.try_wait() {
            return exit_code(&st);
        }
        assert!(
            Instant::now() < end,
            "cairn still runs after {timeout:?}: {}",
            c.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `cairn migrate` must end with `code` within `timeout` (the source
/// reaped meanwhile); both logs on failure.
fn expect_migrate(m: &mut Cairn, src: &mut Workload, recv: &Cairn, code: i32, timeout: Duration) {
    // Under vm-test's emulated CPUs the copies take several times longer
    // (stop 23: 82 s for 256 MiB read while running, three guests at once).
    let timeout = if in_vm_guest() { timeout * 3 } else { timeout };
    let got = wait_reaping(m, src, timeout);
    assert_eq!(
        got,
        code,
        "cairn migrate: {}\nreceiver: {}",
        m.log(),
        recv.log()
    );
}

/// `cairn receive --once` must exit with success.
fn expect_received(recv: &mut Cairn) {
    let st = wait_timeout(&mut recv.child, Duration::from_secs(60)).expect("receiver exit");
    assert!(st.success(), "cairn receive --once: {}", recv.log());
}

/// The restored tree (root `pid`, not our child): SIGTERM, wait for it
/// to go, require PASS in the log.
fn restored_expect_pass(pid: i32, log: &Path) {
    let fd = pidfd_open(pid).expect("pidfd of the restored root");
    pidfd_signal(&fd, libc::SIGTERM).expect("SIGTERM the restored root");
    assert!(
        pidfd_wait_exit(&fd, EXIT_TIMEOUT),
        "the restored root {pid} did not exit: {}",
        tail(log, 4000)
    );
    assert_log_pass(log, "the migrated tree");
}

/// Waits until `log` says PASS (a tree that is not our child checked
/// itself); FAIL or nothing in time fails the test.
fn wait_log_pass(log: &Path, what: &str) {
    let end = Instant::now() + EXIT_TIMEOUT;
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        assert!(!text.contains("FAIL"), "{what}: {}", tail(log, 4000));
        if text.contains("PASS") {
            break;
        }
        assert!(Instant::now() < end, "{what}: no PASS: {}", tail(log, 4000));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_log_pass(log, what);
}

/// The args of a receiver that writes `pidfile` and keeps its layers in
/// `images`.
fn once_args<'a>(pidfile: &'a Path, images: &'a Path) -> Vec<&'a str> {
    vec![
        "--once",
        "--pidfile",
        pidfile.to_str().unwrap(),
        "-D",
        images.to_str().unwrap(),
    ]
}

#[test]
fn migrate_tree_runs_on_destination() {
    if skip_unless_root() {
        return;
    }
    let net = Net::new("2gbit");
    let mut src = start_source(&net, &["--mem", "48"]);
    let key = write_key(&src.dir, "key", 0x5a);
    let pidfile = src.dir.join("received.pid");
    let images = src.dir.join("received");
    let mut recv = receiver(&net, &key, &src.dir, &once_args(&pidfile, &images));
    // Let the threads write for a while first.
    std::thread::sleep(Duration::from_millis(300));
    let mut m = migrate(&net, src.pid, &key, &src.dir, &["--max-downtime", "300ms"]);
    expect_migrate(&mut m, &mut src, &recv, 0, Duration::from_secs(180));
    expect_received(&mut recv);
    let err = fs::read_to_string(&m.err).unwrap();
    assert!(
        err.contains("round 1:"),
        "no pre-copy round in the log: {err}"
    );
    // The source is gone (killed after the images were verified); the
    // tree runs on the destination with the same pids.
    assert!(!src.original_alive(), "the source still runs");
    assert_eq!(read_pidfile(&pidfile), Some(src.pid), "{}", recv.log());
    let layers = fs::read_dir(&images).unwrap().count();
    assert!(layers >= 2, "{layers} layers received: pre-copy and final");
    restored_expect_pass(src.pid, &src.log);
}

/// A pre-copy round's pages go out while the pre-dump still reads them
/// (no staged pages.img read back afterwards): over a slow link the
/// receiver holds part of layer 1 before the source's pre-dump has
/// finished reading; the tree then arrives whole and checks itself.
#[test]
fn migrate_round_streams_while_reading() {
    if skip_unless_root() {
        return;
    }
    let net = Net::new("100mbit");
    let mut src = start_source(&net, &["--mem", "64"]);
    let key = write_key(&src.dir, "key", 0x5b);
    let pidfile = src.dir.join("received.pid");
    let images = src.dir.join("received");
    let mut recv = receiver(&net, &key, &src.dir, &once_args(&pidfile, &images));
    let mut m = migrate(&net, src.pid, &key, &src.dir, &["--compress-level", "-5"]);
    let pages = images.join("1").join("pages.img");
    let end = Instant::now() + Duration::from_secs(60);
    while fs::metadata(&pages).map(|m| m.len()).unwrap_or(0) < 4 << 20 {
        assert!(
            Instant::now() < end,
            "layer 1 did not arrive: {}\n{}",
            m.log(),
            recv.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let log = m.log();
    assert!(
        log.contains("round 1 streams its pages") && !log.contains("pages read while running"),
        "4 MiB of layer 1 arrived only after the pre-dump had read every page: {log}"
    );
    expect_migrate(&mut m, &mut src, &recv, 0, Duration::from_secs(180));
    expect_received(&mut recv);
    assert_eq!(read_pidfile(&pidfile), Some(src.pid), "{}", recv.log());
    restored_expect_pass(src.pid, &src.log);
}

/// A receiver with another key refuses the migration, writes nothing
/// and keeps listening; the source runs on (exit 7).
fn wrong_key_refused(extra_recv: &[&str], extra_migrate: &[&str]) {
    let net = Net::new("2gbit");
    let mut src = start_source(&net, &["--mem", "8"]);
    let good = write_key(&src.dir, "key", 0x11);
    let other = write_key(&src.dir, "other", 0x22);
    let images = src.dir.join("received");
    let mut args = vec!["--once", "-D", images.to_str().unwrap()];
    args.extend_from_slice(extra_recv);
    let mut recv = receiver(&net, &other, &src.dir, &args);
    let mut m = migrate(&net, src.pid, &good, &src.dir, extra_migrate);
    expect_migrate(&mut m, &mut src, &recv, 7, Duration::from_secs(60));
    let err = fs::read_to_string(&m.err).unwrap();
    assert!(err.contains("key"), "the error does not say why: {err}");
    recv.wait_line("refused", Duration::from_secs(10));
    assert!(matches!(recv.child.try_wait(), Ok(None)), "{}", recv.log());
    let written = fs::read_dir(&images).map(|d| d.count()).unwrap_or(0);
    assert_eq!(written, 0, "the receiver wrote layers for a wrong key");
    source_runs_on(&mut src, "source after a migration with the wrong key");
}

#[test]
fn migrate_wrong_key_refused() {
    if skip_unless_root() {
        return;
    }
    wrong_key_refused(&[], &[]);
}

#[test]
fn migrate_lazy_wrong_key_refused() {
    if skip_unless_root() {
        return;
    }
    wrong_key_refused(&["--lazy-ok"], &["--lazy"]);
}

/// Starts a slow migration (64 MiB over 100 Mbit/s: about 5 s for the
/// first layer) and calls `interrupt` once the receiver holds part of
/// the first layer; the source must run on.
fn interrupted_midway(what: &str, interrupt: impl FnOnce(&Net, &mut Cairn)) {
    let net = Net::new("100mbit");
    let mut src = start_source(&net, &["--mem", "64"]);
    let key = write_key(&src.dir, "key", 0x33);
    let images = src.dir.join("received");
    let mut recv = receiver(
        &net,
        &key,
        &src.dir,
        &["--once", "-D", images.to_str().unwrap()],
    );
    let mut m = migrate(&net, src.pid, &key, &src.dir, &["--compress-level", "-5"]);
    // Wait for part of layer 1 on the receiver.
    let pages = images.join("1").join("pages.img");
    let end = Instant::now() + Duration::from_secs(60);
    while fs::metadata(&pages).map(|m| m.len()).unwrap_or(0) < 4 << 20 {
        assert!(
            Instant::now() < end,
            "layer 1 did not arrive: {}\n{}",
            m.log(),
            recv.log()
        );
        if let Ok(Some(st)) = m.child.try_wait() {
            panic!("migrate ended ({st}) before the interruption: {}", m.log());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    interrupt(&net, &mut recv);
    expect_migrate(&mut m, &mut src, &recv, 7, Duration::from_secs(120));
    source_runs_on(&mut src, &format!("source after {what}"));
}

#[test]
fn migrate_receiver_killed_source_runs_on() {
    if skip_unless_root() {
        return;
    }
    interrupted_midway("the receiver was killed", |_, recv| {
        recv.child.kill().expect("kill the receiver");
        let _ = recv.child.wait();
    });
}

#[test]
fn migrate_network_cut_source_runs_on() {
    if skip_unless_root() {
        return;
    }
    interrupted_midway("the network was cut", |net, _| net.cut());
}

/// Frozen mode (the pids are free on the destination, as on another
/// machine): the source stays frozen until the destination runs the
/// tree, then it is killed; the tree checks itself there.
#[test]
fn migrate_frozen_until_destination_runs() {
    if skip_unless_root() {
        return;
    }
    let net = Net::new("2gbit");
    let mut src = start_source(&net, &["--mem", "32"]);
    let key = write_key(&src.dir, "key", 0x44);
    let mut recv = receiver_own_pids(&net, &key, &src.dir, "");
    let mut m = migrate(&net, src.pid, &key, &src.dir, &[]);
    expect_migrate(&mut m, &mut src, &recv, 0, Duration::from_secs(180));
    recv.wait_line("receive-exit 0", Duration::from_secs(30));
    assert!(
        recv.log().contains("hand-over mode Frozen"),
        "{}",
        recv.log()
    );
    // Killed by the migration once the destination ran the tree.
    let st = wait_exit(&mut src, Duration::from_secs(10)).expect("source gone");
    assert_eq!(
        exit_code(&st),
        128 + libc::SIGKILL,
        "the source ended otherwise"
    );
    // The shell sent SIGTERM to the restored root: it checks itself.
    wait_log_pass(&src.log, "the migrated tree (frozen mode)");
}

/// Frozen mode refused at the very end: the root's pid is taken on the
/// destination by another process. The source was frozen for the final
/// dump and is thawed: it runs on and checks itself.
#[test]
fn migrate_pid_taken_on_destination_source_thawed() {
    if skip_unless_root() {
        return;
    }
    let net = Net::new("2gbit");
    let mut src = start_source(&net, &["--mem", "16"]);
    let key = write_key(&src.dir, "key", 0x55);
    // `a && b &` would background the whole list in a subshell that may
    // exec `sleep` under its own pid, leaving the wanted pid to the next
    // fork; one command at a time in the namespace's init shell instead.
    // Then the receiver's own processes are sent far from the tree's pids.
    // The sleep holds the pid for longer than any migration takes (a
    // guest under TCG took 129 s); the namespace's end kills it.
    let far = (src.pid + 1000) % 30000 + 300;
    let before = format!(
        "echo {} > /proc/sys/kernel/ns_last_pid; sleep 3600 & \
         echo {far} > /proc/sys/kernel/ns_last_pid; sleep 0.2",
        src.pid - 1
    );
    let recv = receiver_own_pids(&net, &key, &src.dir, &before);
    let mut m = migrate(&net, src.pid, &key, &src.dir, &[]);
    expect_migrate(&mut m, &mut src, &recv, 7, Duration::from_secs(180));
    let err = fs::read_to_string(&m.err).unwrap();
    assert!(
        err.contains("is taken here by another process") && err.contains("thawed"),
        "{err}"
    );
    source_runs_on(&mut src, "source thawed after the destination refused");
}

/// Post-copy (`--lazy`, hand-over mode) of `workload` started with
/// `args` in namespace A to a receiver in B; both must succeed, the tree
/// runs on the destination with the source's pids (it is not yet told
/// to check itself). `pause`: how long the workload runs first. Returns
/// the namespaces, the source's workload and the receiver's log.
fn lazy_migrated(
    workload: &str,
    args: &[&str],
    key_byte: u8,
    pause: Duration,
) -> (Net, Workload, String) {
    let net = Net::new("2gbit");
    let mut src = net.start_workload(workload, args);
    let key = write_key(&src.dir, "key", key_byte);
    let pidfile = src.dir.join("received.pid");
    let images = src.dir.join("received");
    let mut rargs = once_args(&pidfile, &images);
    rargs.push("--lazy-ok");
    let mut recv = receiver(&net, &key, &src.dir, &rargs);
    std::thread::sleep(pause);
    let mut m = migrate(&net, src.pid, &key, &src.dir, &["--lazy"]);
    expect_migrate(&mut m, &mut src, &recv, 0, Duration::from_secs(300));
    expect_received(&mut recv);
    let err = fs::read_to_string(&m.err).unwrap();
    assert!(
        err.contains("lazy_running_ms="),
        "no post-copy in the log: {err}"
    );
    assert!(!src.original_alive(), "the source still runs");
    assert_eq!(read_pidfile(&pidfile), Some(src.pid), "{}", recv.log());
    (net, src, recv.log())
}

/// Post-copy (`--lazy`): `mem_rewrite` (256 MiB, 64 in a vm-test guest, two writer threads
/// rewriting it all the time, each page checked against the writers'
/// order) runs on the destination before its memory is there; its pages
/// come on fault and in the background; after the move, SIGTERM makes it
/// check every page.
#[test]
fn migrate_lazy_tree_runs_before_its_memory() {
    if skip_unless_root() {
        return;
    }
    // 64 MiB in a vm-test guest, where the CPU is emulated.
    let mib: u64 = if in_vm_guest() { 64 } else { 256 };
    let args = ["--mib", &mib.to_string(), "--threads", "2"];
    let (_net, src, rlog) = lazy_migrated("mem_rewrite", &args, 0x66, Duration::from_millis(300));
    let copied: u64 = rlog
        .split("post-copy complete")
        .nth(1)
        .and_then(|t| t.split(": ").nth(1))
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no post-copy summary: {rlog}"));
    // Nearly all of the memory (256 pages a MiB) came after the tree ran.
    let pages = mib * 256;
    assert!(
        copied >= pages * 60 / 64,
        "{copied} of {pages} pages copied after the start"
    );
    restored_expect_pass(src.pid, &src.log);
}

/// Post-copy (`--lazy`) keeps copy-on-write sharing: `cow_late_fork`
/// (64 MiB shared by a root and two children that only read it) forks
/// its second child L between the migration's pre-dump round and its
/// final dump, so L's pages are stored whole in the final layer while
/// the root's stay in the pre-dump's, and the restore compares their
/// bytes to know they were the same pages (`restore::PageCompare`), with
/// both layers' pages.img still sparse on the destination. The root
/// checks that both children have its page frames in the whole area,
/// the children check its bytes.
#[test]
fn migrate_lazy_late_child_shares_cow() {
    if skip_unless_root() {
        return;
    }
    let (_net, src, rlog) = lazy_migrated("cow_late_fork", &["--mib", "16"], 0x7c, Duration::ZERO);
    let log = fs::read_to_string(&src.log).unwrap_or_default();
    assert!(
        log.contains("forked L"),
        "the workload saw no pre-dump before the final dump:\n{log}\n{rlog}"
    );
    restored_expect_pass(src.pid, &src.log);
}

/// Post-copy (`--lazy`) of a tree whose images hold file contents in
/// pages.img next to the memory left to the pager (`lazy_contents`: a
/// deleted file of two contents chunks held open, an open memfd, a deleted
/// /dev/shm mapping, the log written before the dump, 32 MiB of private
/// memory). The receiver's pages.img is sparse until post-copy ends: the
/// restore reads those contents chunks before any process exists, so the
/// pager must fetch them first. After the move, SIGTERM makes the tree
/// check every file and every page.
#[test]
fn migrate_lazy_file_contents() {
    if skip_unless_root() {
        return;
    }
    let (_net, src, rlog) = lazy_migrated("lazy_contents", &["--mib", "32"], 0x6b, Duration::ZERO);
    assert!(rlog.contains("post-copy complete"), "{rlog}");
    restored_expect_pass(src.pid, &src.log);
}

/// Post-copy of `mem_rewrite` (64 MiB over 50 Mbit/s: about 10 s of
/// pages), interrupted by `interrupt` 0.5 s after the tree runs on the
/// destination (hand-over mode: one kernel). Returns the source's
/// workload, the receiver and `cairn migrate`.
fn lazy_interrupted(
    key_byte: u8,
    interrupt: impl FnOnce(&mut Cairn, &mut Cairn),
) -> (Net, Workload, Cairn, Cairn) {
    let net = Net::new("50mbit");
    let mut src = net.start_workload("mem_rewrite", &["--mib", "64", "--threads", "1"]);
    let key = write_key(&src.dir, "key", key_byte);
    let pidfile = src.dir.join("received.pid");
    let images = src.dir.join("received");
    let mut args = once_args(&pidfile, &images);
    args.push("--lazy-ok");
    let mut recv = receiver(&net, &key, &src.dir, &args);
    let mut m = migrate(&net, src.pid, &key, &src.dir, &["--lazy"]);
    // The tree runs on the destination: its memory is on its way.
    let end = Instant::now() + Duration::from_secs(120);
    while read_pidfile(&pidfile) != Some(src.pid) {
        let _ = src.original_alive();
        if let Ok(Some(st)) = m.child.try_wait() {
            panic!(
                "migrate ended ({st}) before the tree ran: {}\n{}",
                m.log(),
                recv.log()
            );
        }
        assert!(
            Instant::now() < end,
            "the tree did not run: {}\n{}",
            m.log(),
            recv.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        matches!(m.child.try_wait(), Ok(None)) && matches!(recv.child.try_wait(), Ok(None)),
        "post-copy ended before it could be interrupted: {}\n{}",
        m.log(),
        recv.log()
    );
    interrupt(&mut recv, &mut m);
    (net, src, recv, m)
}

/// Post-copy, the source's cairn killed while pages are still missing on
/// the destination: the destination kills its tree (never left with part
/// of its memory) and fails. Here (one kernel: hand-over mode) the source
/// tree was ended before the destination restored it, so no process of
/// the tree is left; with the pids free on the destination (frozen mode)
/// the source tree, still frozen, is thawed by its guardian instead.
#[test]
fn migrate_lazy_source_killed_destination_tree_killed() {
    if skip_unless_root() {
        return;
    }
    let (_net, mut src, mut recv, _m) = lazy_interrupted(0x77, |_, m| {
        m.child.kill().expect("kill cairn migrate");
        let _ = m.child.wait();
        common::remove_scratch_of("cairn-migrate", m.child.id());
    });
    let st = wait_timeout(&mut recv.child, Duration::from_secs(60)).expect("receiver exit");
    assert!(!st.success(), "the receiver succeeded: {}", recv.log());
    assert!(recv.log().contains("was killed"), "{}", recv.log());
    assert!(
        wait_pid_gone(src.pid, Duration::from_secs(10)),
        "pid {} still runs after the source died during post-copy: {}",
        src.pid,
        recv.log()
    );
    assert!(!src.original_alive(), "the source tree still runs");
}

/// Waits until `c`'s log holds `needle` (the process may have exited).
fn wait_logged(c: &Cairn, needle: &str, timeout: Duration) {
    let end = Instant::now() + timeout;
    while !fs::read_to_string(&c.err)
        .unwrap_or_default()
        .contains(needle)
    {
        assert!(
            Instant::now() < end,
            "no {needle:?} within {timeout:?}: {}",
            c.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Post-copy, `cairn receive` SIGKILLed while pages are still missing:
/// its userfaultfds stay open in the post-copy guardian, which kills the
/// restored tree before closing them, so the tree never reads a missing
/// page as zero. `cairn migrate` sees the channel break and (hand-over
/// mode) restores the tree from its own images once the destination's
/// copy is gone and its pids are free; that tree checks every page.
/// Before the guardian the destination's copy ran on with zeros (the
/// workload found a zero page: FAIL).
#[test]
fn migrate_lazy_receiver_killed_tree_never_runs_on_zeros() {
    if skip_unless_root() {
        return;
    }
    let (_net, mut src, recv, mut m) = lazy_interrupted(0x78, |recv, _| {
        recv.child.kill().expect("kill cairn receive");
        let _ = recv.child.wait();
    });
    let got = wait_reaping(&mut m, &mut src, Duration::from_secs(120));
    assert_eq!(
        got,
        8,
        "cairn migrate (restored locally expected): {}\nreceiver: {}",
        m.log(),
        recv.log()
    );
    restored_expect_pass(src.pid, &src.log);
    // The destination's copy never checked a page against zeros: no FAIL
    // in the log, nor in the copy of it the local restore set aside.
    for e in fs::read_dir(&src.dir).expect("test dir").flatten() {
        if e.file_name().to_string_lossy().starts_with("workload.log") {
            let text = fs::read_to_string(e.path()).unwrap_or_default();
            assert!(
                !text.contains("FAIL"),
                "the destination's tree ran with missing pages ({}): {text}",
                e.path().display()
            );
        }
    }
    wait_logged(
        &recv,
        "post-copy guardian: the receiver",
        Duration::from_secs(30),
    );
}

/// Post-copy, the post-copy guardian SIGKILLed: the receiver can no
/// longer promise that its own death would not leave the tree on zeros,
/// so it kills the tree and fails; `cairn migrate` restores it locally
/// (hand-over mode), where it checks every page.
#[test]
fn migrate_lazy_guardian_killed_tree_killed() {
    if skip_unless_root() {
        return;
    }
    let (_net, mut src, mut recv, mut m) = lazy_interrupted(0x79, |recv, _| {
        let log = fs::read_to_string(&recv.err).unwrap_or_default();
        let pid: i32 = log
            .split("post-copy guardian started (pid ")
            .nth(1)
            .and_then(|t| t.split(')').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no guardian pid in the log: {}", recv.log()));
        let fd = pidfd_open(pid).expect("pidfd of the guardian");
        pidfd_signal(&fd, libc::SIGKILL).expect("kill the guardian");
    });
    let st = wait_timeout(&mut recv.child, Duration::from_secs(60)).expect("receiver exit");
    assert!(!st.success(), "the receiver succeeded: {}", recv.log());
    assert!(
        recv.log().contains("is gone") && recv.log().contains("was killed"),
        "{}",
        recv.log()
    );
    let got = wait_reaping(&mut m, &mut src, Duration::from_secs(120));
    assert_eq!(
        got,
        8,
        "cairn migrate: {}\nreceiver: {}",
        m.log(),
        recv.log()
    );
    restored_expect_pass(src.pid, &src.log);
}

/// `procfs::dying`, which a hand-over's receiver and restore wait on (the
/// source tree is killed as Go goes out; the destination loads the images
/// while the kernel frees the source's memory): a running or stopped
/// process is not on its way out, a killed one is until it is reaped, and
/// a reaped pid is free (not dying). A real child, killed and reaped here.
#[test]
fn procfs_dying_until_reaped() {
    use cairn::procfs::dying;
    let mut child = Command::new("sleep")
        .arg("1000")
        .stdin(Stdio::null())
        .spawn()
        .expect("sleep");
    let pid = child.id() as i32;
    assert!(!dying(pid), "pid {pid} runs: not dying");
    let sig = |s| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), s).expect("kill");
    sig(nix::sys::signal::Signal::SIGSTOP);
    let end = Instant::now() + Duration::from_secs(10);
    while !fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_default()
        .contains(") T ")
    {
        assert!(Instant::now() < end, "pid {pid} did not stop");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!dying(pid), "pid {pid} stopped: not dying");
    // Not reaped until the check below.
    sig(nix::sys::signal::Signal::SIGKILL);
    assert!(dying(pid), "pid {pid} killed but not reaped: dying");
    child.wait().expect("reap");
    assert!(!dying(pid), "pid {pid} reaped: free, not dying");
}
