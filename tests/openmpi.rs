//! An Open MPI job on one node (`mpirun -np 2` over shared memory, `-np 4`
//! over TCP on loopback) checkpointed in the middle, killed, its /dev/shm
//! segments and its session directory (TMPDIR, a tmpfs of the test's own)
//! wiped as after a reboot, restored: its ranks check every number they
//! receive, and it must finish with the right answer.
mod common;

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::mpi::{build_ring, expected, have, shm_names, ShmFiles};
use common::tmpfs::Tmpfs;
use common::*;

/// A job's /dev/shm files are found by difference (`ShmFiles::new_since`),
/// so two jobs at once would take (and wipe) each other's: the tests of
/// this file run one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn wait_for(path: &Path, what: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::fs::read_to_string(path).is_ok_and(|s| s.contains(what)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// `mpirun` in a session of its own, with no descriptor of the test
/// runner (a pipe of whoever started it would be a pipe to outside the
/// tree), TMPDIR `tmp`, in `dir`, its output to `log`.
fn mpirun(dir: &Path, tmp: &Tmpfs, log: &Path) -> Command {
    let out = File::create(log).expect("create the log");
    let mut cmd = Command::new("mpirun");
    // SAFETY: the closure runs in the forked child before exec and only
    // calls setsid(2) and close_range(2), which are async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    cmd.env("TMPDIR", &tmp.path)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    cmd
}

/// How a ring job is run: ranks and transport.
struct Ring {
    tag: &'static str,
    ranks: u32,
    /// `--mca` pairs for mpirun.
    mca: &'static [(&'static str, &'static str)],
    /// The transport puts segments in /dev/shm (vader).
    shm: bool,
}

/// `mpirun -np N` of ring.c, its TMPDIR a tmpfs of the test's own,
/// checkpointed in the middle (the dump kills it), its /dev/shm segments
/// and its session directory wiped as after a reboot, restored: every
/// rank checks every number it receives from then on, and the job must
/// finish with the right answer.
fn ring_restored_after_wipe(r: &Ring) {
    if skip_unless_root() {
        return;
    }
    if !common::mpi::available() {
        return;
    }
    let dir = fresh_dir(r.tag);
    let bin = build_ring(&dir);
    let tmp = Tmpfs::mount(&format!("{}-tmp", r.tag), "256m");
    let shm_before = shm_names();
    let answer = dir.join("answer");
    let log = dir.join("mpirun.log");
    let images = dir.join("images");
    let iters = 300;
    let mut cmd = mpirun(&dir, &tmp, &log);
    cmd.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "-np",
        &r.ranks.to_string(),
    ]);
    for (k, v) in r.mca {
        cmd.args(["--mca", k, v]);
    }
    let mut child = cmd
        .arg(&bin)
        .arg(&answer)
        .arg(iters.to_string())
        .spawn()
        .expect("spawn mpirun");
    let pid = child.id() as i32;
    let tracker = PidTracker::new();
    tracker.track_tree(pid);
    assert!(
        wait_for(&log, "progress 30", Duration::from_secs(60)),
        "the job did not start: {}",
        tail(&log, 4000)
    );
    let pids = tracker.track_tree(pid);
    assert!(
        pids.len() > r.ranks as usize,
        "not mpirun and {} ranks: {pids:?}",
        r.ranks
    );
    let shm = ShmFiles::new_since(&shm_before);
    if r.shm {
        assert!(shm.has_vader(), "no vader segment in /dev/shm: {:?}", shm.0);
    }
    let d = dump(pid, &images, &["-v", "--tcp-established"]);
    assert_ok(&d, "dump of the mpirun tree");
    let _ = wait_timeout(&mut child, Duration::from_secs(10));
    assert!(wait_pid_gone(pid, Duration::from_secs(10)));
    for p in &pids {
        assert!(
            wait_pid_gone(*p, Duration::from_secs(10)),
            "pid {p} of the job outlived the dump"
        );
    }
    assert!(!answer.exists(), "the job ended before the dump");
    // As after a reboot: the segments and the session directory are gone.
    shm.wipe();
    tmp.wipe();
    let mut args = vec![
        "restore".to_string(),
        "-D".into(),
        images.to_string_lossy().into_owned(),
        "--tcp-established".into(),
        "-v".into(),
    ];
    if images.join("oracle.img").exists() {
        args.push("--compare".into());
    }
    let rlog = dir.join("restore.log");
    let mut rs = Command::new(cairn_bin())
        .args(&args)
        .stdin(Stdio::null())
        .stdout(File::create(dir.join("restore.out")).unwrap())
        .stderr(File::create(&rlog).unwrap())
        .spawn()
        .expect("spawn cairn restore");
    tracker.track_tree(rs.id() as i32);
    let st = wait_timeout(&mut rs, Duration::from_secs(120));
    let st = match st {
        Some(st) => st,
        None => {
            tracker.track_tree(pid);
            panic!(
                "the restored job did not finish within 120 s\n{}\n--- job ---\n{}",
                tail(&rlog, 4000),
                tail(&log, 2000)
            );
        }
    };
    assert!(
        st.success(),
        "cairn restore exited {}\n{}\n--- job ---\n{}",
        exit_code(&st),
        tail(&rlog, 6000),
        tail(&log, 2000)
    );
    let got = std::fs::read_to_string(&answer).unwrap_or_default();
    assert_eq!(
        got.trim(),
        expected(iters, r.ranks as i64).to_string(),
        "wrong answer; job log:\n{}",
        tail(&log, 2000)
    );
    assert!(
        !tail(&log, 100_000).contains("FAIL"),
        "{}",
        tail(&log, 2000)
    );
    drop(tmp);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `mpirun -np 2` over the shared-memory transport (vader).
#[test]
fn openmpi_job_restored_after_its_files_are_wiped() {
    let _one = one_at_a_time();
    ring_restored_after_wipe(&Ring {
        tag: "openmpi",
        ranks: 2,
        mca: &[("btl", "self,vader")],
        shm: true,
    });
}

/// `mpirun -np 4` over the TCP transport on loopback: the ranks' TCP
/// connections to each other (and to mpirun) are dumped established and
/// restored with TCP_REPAIR.
#[test]
#[ignore = "mpirun -np 4 over btl tcp on lo did not start within 60 s in 2 of 3 runs at stop 19's end (also by hand): to be found"]
fn openmpi_np4_tcp_restored_after_wipe() {
    let _one = one_at_a_time();
    ring_restored_after_wipe(&Ring {
        tag: "openmpi-tcp",
        ranks: 4,
        mca: &[
            ("btl", "tcp,self"),
            ("btl_tcp_if_include", "lo"),
            ("oob_tcp_if_include", "lo"),
        ],
        shm: false,
    });
}

/// `cairn restore -D images --tcp-established -d` (with `--compare` when
/// the dump left an oracle), run in network namespace `ns`: the restored
/// tree's sockets are made there.
fn restore_detached_in(ns: &str, images: &Path, log: &Path) {
    let mut args = vec![
        "restore".to_string(),
        "-D".into(),
        images.to_string_lossy().into_owned(),
        "--tcp-established".into(),
        "-d".into(),
        "-v".into(),
    ];
    if images.join("oracle.img").exists() {
        args.push("--compare".into());
    }
    let out = common::netns::in_netns(ns, || {
        Command::new(cairn_bin())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(log).unwrap())
            .status()
            .expect("run cairn restore")
    });
    assert!(
        out.success(),
        "restore of {} in {ns}: {}\n{}",
        images.display(),
        exit_code(&out),
        tail(log, 6000)
    );
}

/// Two "nodes": network namespaces A and B joined by a veth, one rank in
/// each (`mpirun -np 2 --host A:1,B:1`, TCP between them over the veth).
/// mpirun runs in A and starts Open MPI's daemon on each node with an rsh
/// agent that enters the node's namespace and leaves the daemon in a
/// session of its own, as ssh leaves it on the other machine: three
/// process trees, mpirun's and one per node, with TCP connections between
/// them. Each tree is dumped by a cairn in its own namespace, one after
/// the other (node B first, while A runs on: its packets to B are dropped
/// by B's network lock and sent again later), killed; the job's session
/// files are wiped; the trees are restored in the same namespaces, and
/// the ranks go on talking over the restored connections, check every
/// number they receive, and finish with the right answer. This is a
/// multi-node checkpoint without a common barrier (docs/HPC.md: TCP
/// needs none; the barrier makes the node images one checkpoint).
#[test]
fn openmpi_ranks_in_two_network_namespaces() {
    let _one = one_at_a_time();
    if skip_unless_root() {
        return;
    }
    if !common::mpi::available() {
        return;
    }
    if !have("nsenter") || !have("ip") {
        note_skip("nsenter or ip not installed");
        return;
    }
    let dir = fresh_dir("openmpi-netns");
    let bin = build_ring(&dir);
    let net = common::netns::Net::new("1gbit");
    let subnet = format!("{}.0/24", net.addr_b.rsplit_once('.').unwrap().0);
    let tmp = Tmpfs::mount("openmpi-netns-tmp", "256m");
    let shm_before = shm_names();
    // The rsh agent: `agent HOST COMMAND...` runs COMMAND in the network
    // namespace HOST, in a session of its own, and returns at once.
    let agent = dir.join("agent.sh");
    std::fs::write(
        &agent,
        format!(
            "#!/bin/sh\nhost=$1; shift\n\
             setsid nsenter --net=/run/netns/\"$host\" sh -c \"$*\" \
             </dev/null >>'{d}'/daemon-\"$host\".log 2>&1 &\n\
             echo $! > '{d}'/daemon-\"$host\".pid\nexit 0\n",
            d = dir.display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let answer = dir.join("answer");
    let log = dir.join("mpirun.log");
    let iters = 600;
    let mut cmd = mpirun(&dir, &tmp, &log);
    let hosts = format!("{}:1,{}:1", net.a, net.b);
    cmd.args(["--allow-run-as-root", "-np", "2", "--host", &hosts])
        .args(["--mca", "plm_rsh_agent"])
        .arg(&agent)
        .args(["--mca", "btl", "tcp,self"])
        .args(["--mca", "btl_tcp_if_include", &subnet])
        .args(["--mca", "oob_tcp_if_include", &subnet])
        .arg(&bin)
        .arg(&answer)
        .arg(iters.to_string());
    let mut child = common::netns::Net::spawn(&net.a, &mut cmd);
    let mpirun = child.id() as i32;
    let tracker = PidTracker::new();
    tracker.track_tree(mpirun);
    let daemon = |ns: &str| read_pidfile(&dir.join(format!("daemon-{ns}.pid")));
    let ok = wait_for(&log, "progress 30", Duration::from_secs(60));
    let (da, db) = (daemon(&net.a), daemon(&net.b));
    for d in [da, db].into_iter().flatten() {
        tracker.track_tree(d);
    }
    assert!(ok, "the job did not start: {}", tail(&log, 4000));
    let (da, db) = (da.expect("node A's daemon"), db.expect("node B's daemon"));
    // One rank under each node's daemon, none under mpirun.
    let ranks = |root: i32| {
        tracker
            .track_tree(root)
            .into_iter()
            .filter(|&p| {
                std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "ring")
            })
            .count()
    };
    assert_eq!(
        (ranks(mpirun), ranks(da), ranks(db)),
        (0, 1, 1),
        "not one rank per node"
    );
    let shm = ShmFiles::new_since(&shm_before);
    // Node B, then node A, then mpirun: each by a cairn in its namespace.
    let trees = [
        (&net.b, db, dir.join("images-b")),
        (&net.a, da, dir.join("images-a")),
        (&net.a, mpirun, dir.join("images-mpirun")),
    ];
    for (ns, pid, images) in &trees {
        let d = common::netns::in_netns(ns, || dump(*pid, images, &["-v", "--tcp-established"]));
        assert_ok(&d, &format!("dump of pid {pid} in {ns}"));
    }
    let _ = wait_timeout(&mut child, Duration::from_secs(10));
    for (_, pid, _) in &trees {
        assert!(
            wait_pid_gone(*pid, Duration::from_secs(10)),
            "pid {pid} outlived its dump"
        );
    }
    assert!(!answer.exists(), "the job ended before the dump");
    shm.wipe();
    tmp.wipe();
    // mpirun first: the daemons' connections to it are then live again
    // at its end (still locked at theirs until they are restored).
    for (ns, _, images) in trees.iter().rev() {
        let rlog = images.with_extension("restore.log");
        restore_detached_in(ns, images, &rlog);
    }
    for (_, pid, _) in &trees {
        tracker.track_tree(*pid);
    }
    let done = wait_for(&answer, "\n", Duration::from_secs(120));
    for (_, pid, _) in &trees {
        tracker.track_tree(*pid);
    }
    let logs = || {
        let mut s = tail(&log, 3000);
        for ns in [&net.a, &net.b] {
            s += &format!(
                "\n--- daemon {ns}:\n{}",
                tail(&dir.join(format!("daemon-{ns}.log")), 2000)
            );
        }
        s
    };
    assert!(
        done,
        "the restored job did not finish within 120 s\n{}",
        logs()
    );
    let got = std::fs::read_to_string(&answer).unwrap_or_default();
    assert_eq!(
        got.trim(),
        expected(iters, 2).to_string(),
        "wrong answer\n{}",
        logs()
    );
    assert!(!logs().contains("FAIL"), "{}", logs());
    for (_, pid, _) in &trees {
        assert!(
            wait_pid_gone(*pid, Duration::from_secs(30)),
            "pid {pid} did not end with the job\n{}",
            logs()
        );
    }
    drop(tmp);
    drop(net);
    let _ = std::fs::remove_dir_all(&dir);
}
