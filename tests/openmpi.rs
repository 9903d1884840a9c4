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
    // Open MPI 4.1's daemons (orted) put the hwloc topology in a shared
    // segment at the start of the biggest hole of their address space; on
    // this kernel that placement faults now and then (SIGSEGV in
    // hwloc_shmem_topology_write before the daemon reports back, mpirun
    // then waits with an empty log). "none" turns the segment off: each
    // process reads the topology itself, as on a node without it.
    cmd.env("TMPDIR", &tmp.path)
        .env("OMPI_MCA_rtc_hwloc_vmhole", "none")
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
    if !have("ip") {
        note_skip("ip (iproute2) not installed: the job runs in a network namespace of its own");
        return;
    }
    let dir = fresh_dir(r.tag);
    let bin = build_ring(&dir);
    // The job, its dump and its restore in a network namespace of their
    // own (its namespace A; lo is up): the lock of the job's connections
    // and listeners (an nftables table that drops SYNs to its ports, kept
    // from the dump to the restore) then never reaches the machine's
    // loopback, and no lock left there by another dump (one whose restore
    // never came, dropping SYNs to Open MPI's TCP ports 1024 and up on
    // every address) can stop this job from starting. Dropping `net`
    // deletes the namespace, and with it any lock of this test.
    let net = common::netns::Net::new("1gbit");
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
    cmd.arg(&bin).arg(&answer).arg(iters.to_string());
    let mut child = common::netns::Net::spawn(&net.a, &mut cmd);
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
    let d = common::netns::in_netns(&net.a, || dump(pid, &images, &["-v", "--tcp-established"]));
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
    let mut rs = common::netns::Net::spawn(
        &net.a,
        Command::new(cairn_bin())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(File::create(dir.join("restore.out")).unwrap())
            .stderr(File::create(&rlog).unwrap()),
    );
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
    drop(net);
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
///
/// It used to hang at the start (no "progress" line in 60 s) whenever a
/// network lock of an earlier dump was left in the machine's namespace:
/// its rule dropping SYNs to port 1024 (the first port of Open MPI's TCP
/// BTL) kept every rank's connection to another rank in SYN-SENT. The
/// job now runs in a namespace of its own (see `ring_restored_after_wipe`).
#[test]
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

/// A ring job on two "nodes": network namespaces A and B joined by a
/// veth, one rank in each (`mpirun -np 2 --host A:1,B:1`, TCP between
/// them over the veth). mpirun runs in A and starts Open MPI's daemon on
/// each node with an rsh agent that enters the node's namespace and
/// leaves the daemon in a session of its own, as ssh leaves it on the
/// other machine: three process trees, mpirun's and one per node, with
/// TCP connections between them.
struct TwoNodeJob {
    // Dropped in this order: the job's processes killed first, then
    // their tmpfs, files and namespaces.
    tracker: PidTracker,
    child: std::process::Child,
    dir: std::path::PathBuf,
    net: common::netns::Net,
    tmp: Tmpfs,
    shm: ShmFiles,
    mpirun: i32,
    /// The daemons of nodes A and B (each the root of its node's tree).
    da: i32,
    db: i32,
    answer: std::path::PathBuf,
    log: std::path::PathBuf,
    iters: i64,
}

impl TwoNodeJob {
    /// The job started and past its 30th iteration; `None` (a skip, said)
    /// where it cannot run.
    fn start(tag: &str, iters: i64) -> Option<TwoNodeJob> {
        if skip_unless_root() {
            return None;
        }
        if !common::mpi::available() {
            return None;
        }
        if !have("nsenter") || !have("ip") {
            note_skip("nsenter or ip not installed");
            return None;
        }
        let dir = fresh_dir(tag);
        let bin = build_ring(&dir);
        let net = common::netns::Net::new("1gbit");
        let subnet = format!("{}.0/24", net.addr_b.rsplit_once('.').unwrap().0);
        let tmp = Tmpfs::mount(&format!("{tag}-tmp"), "256m");
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
        make_executable(&agent);
        let answer = dir.join("answer");
        let log = dir.join("mpirun.log");
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
        let child = common::netns::Net::spawn(&net.a, &mut cmd);
        let mpirun = child.id() as i32;
        let tracker = PidTracker::new();
        tracker.track_tree(mpirun);
        let daemon = |ns: &str| read_pidfile(&dir.join(format!("daemon-{ns}.pid")));
        let ok = wait_for(&log, "progress 30", Duration::from_secs(60));
        let (da, db) = (daemon(&net.a), daemon(&net.b));
        for d in [da, db].into_iter().flatten() {
            tracker.track_tree(d);
        }
        assert!(
            ok,
            "the job did not start: {}\nnode A's daemon: {}\nnode B's daemon: {}",
            tail(&log, 4000),
            tail(&dir.join(format!("daemon-{}.log", net.a)), 3000),
            tail(&dir.join(format!("daemon-{}.log", net.b)), 3000)
        );
        let (da, db) = (da.expect("node A's daemon"), db.expect("node B's daemon"));
        // One rank under each node's daemon, none under mpirun.
        let ranks = |root: i32| {
            tracker
                .track_tree(root)
                .into_iter()
                .filter(|&p| {
                    std::fs::read_to_string(format!("/proc/{p}/comm"))
                        .is_ok_and(|c| c.trim() == "ring")
                })
                .count()
        };
        assert_eq!(
            (ranks(mpirun), ranks(da), ranks(db)),
            (0, 1, 1),
            "not one rank per node"
        );
        let shm = ShmFiles::new_since(&shm_before);
        Some(TwoNodeJob {
            dir,
            net,
            tmp,
            shm,
            child,
            tracker,
            mpirun,
            da,
            db,
            answer,
            log,
            iters,
        })
    }

    /// The three trees, each with the namespace it lives in.
    fn trees(&self) -> [(&str, i32); 3] {
        [
            (&self.net.a, self.mpirun),
            (&self.net.a, self.da),
            (&self.net.b, self.db),
        ]
    }

    /// The job's log and its daemons'.
    fn logs(&self) -> String {
        let mut s = tail(&self.log, 3000);
        for ns in [&self.net.a, &self.net.b] {
            s += &format!(
                "\n--- daemon {ns}:\n{}",
                tail(&self.dir.join(format!("daemon-{ns}.log")), 2000)
            );
        }
        s
    }

    /// After the dumps: every tree gone, the job not finished; its
    /// session files wiped as after a reboot.
    fn killed_and_wiped(&mut self) {
        let _ = wait_timeout(&mut self.child, Duration::from_secs(10));
        for (_, pid) in self.trees() {
            assert!(
                wait_pid_gone(pid, Duration::from_secs(10)),
                "pid {pid} outlived its dump"
            );
        }
        assert!(!self.answer.exists(), "the job ended before the dump");
        self.shm.wipe();
        self.tmp.wipe();
    }

    /// After the restores: the job finishes with the right answer, every
    /// rank having checked every number it received, and its trees end.
    fn finishes_right(self) {
        for (_, pid) in self.trees() {
            self.tracker.track_tree(pid);
        }
        let done = wait_for(&self.answer, "\n", Duration::from_secs(120));
        for (_, pid) in self.trees() {
            self.tracker.track_tree(pid);
        }
        assert!(
            done,
            "the restored job did not finish within 120 s\n{}",
            self.logs()
        );
        let got = std::fs::read_to_string(&self.answer).unwrap_or_default();
        assert_eq!(
            got.trim(),
            expected(self.iters, 2).to_string(),
            "wrong answer\n{}",
            self.logs()
        );
        assert!(!self.logs().contains("FAIL"), "{}", self.logs());
        for (_, pid) in self.trees() {
            assert!(
                wait_pid_gone(pid, Duration::from_secs(30)),
                "pid {pid} did not end with the job\n{}",
                self.logs()
            );
        }
        let TwoNodeJob { dir, net, tmp, .. } = self;
        drop(tmp);
        drop(net);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn make_executable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Two "nodes" (see [`TwoNodeJob`]). Each tree is dumped by a cairn in
/// its own namespace, one after the other (node B first, while A runs
/// on: its packets to B are dropped by B's network lock and sent again
/// later), killed; the job's session files are wiped; the trees are
/// restored in the same namespaces, and the ranks go on talking over the
/// restored connections, check every number they receive, and finish
/// with the right answer. This is a multi-node checkpoint without a
/// common barrier (docs/HPC.md: TCP needs none; the barrier makes the
/// node images one checkpoint).
#[test]
fn openmpi_ranks_in_two_network_namespaces() {
    let _one = one_at_a_time();
    let Some(mut job) = TwoNodeJob::start("openmpi-netns", 600) else {
        return;
    };
    // Node B, then node A, then mpirun: each by a cairn in its namespace.
    let [m, a, b] = job.trees();
    let trees: Vec<(String, i32, std::path::PathBuf)> =
        [(b, "images-b"), (a, "images-a"), (m, "images-mpirun")]
            .into_iter()
            .map(|((ns, pid), d)| (ns.to_string(), pid, job.dir.join(d)))
            .collect();
    for (ns, pid, images) in &trees {
        let d = common::netns::in_netns(ns, || dump(*pid, images, &["-v", "--tcp-established"]));
        assert_ok(&d, &format!("dump of pid {pid} in {ns}"));
    }
    job.killed_and_wiped();
    // mpirun first: the daemons' connections to it are then live again
    // at its end (still locked at theirs until they are restored).
    for (ns, _, images) in trees.iter().rev() {
        let rlog = images.with_extension("restore.log");
        restore_detached_in(ns, images, &rlog);
    }
    job.finishes_right();
}

/// `cairn job ARGS` with `launcher` as the launcher; its output.
fn cairn_job(args: &[&str], log: &Path) -> std::process::Output {
    let out = Command::new(cairn_bin())
        .arg("job")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run cairn job");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    use std::io::Write;
    let _ = writeln!(f, "=== cairn job {args:?}: {}", exit_code(&out.status));
    let _ = f.write_all(&out.stderr);
    out
}

/// The highest `progress N` line of the job's log.
fn progress(log: &Path) -> u32 {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("progress ")?.trim().parse::<u32>().ok())
        .max()
        .unwrap_or(0)
}

/// The nftables tables of namespace `ns` named cairn_*: network locks.
fn locks_in(ns: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "list", "tables"])
        .stdin(Stdio::null())
        .output()
        .expect("run nft");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("cairn_"))
        .map(str::to_string)
        .collect()
}

/// Whether every process of the tree at `root` runs (none is stopped or
/// traced, as a frozen one is).
fn tree_runs(tracker: &PidTracker, root: i32) -> bool {
    tracker.track_tree(root).iter().all(|p| {
        std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
            let state = s.rsplit_once(") ").map(|x| x.1).unwrap_or("");
            !state.starts_with('t') && !state.starts_with('T') && !state.starts_with('Z')
        })
    })
}

/// The same job on two "nodes" checkpointed as one by `cairn job
/// checkpoint`: a coordinator and one node agent per tree (mpirun's, and
/// each node's daemon with its rank), each agent started in its node's
/// network namespace by a launcher (`LAUNCHER K cairn __node-agent ...`,
/// here nsenter, srun or ssh on a cluster). First a checkpoint with a
/// fourth node whose tree is gone: its agent fails, so the coordinator
/// aborts and every other node, already frozen with its images written,
/// thaws its tree and removes its images: no checkpoint, no network lock
/// left, the job runs on. Then the final checkpoint: every node frozen
/// until all have written, job.img written last, the trees killed with
/// their connections locked at both ends. The session files are wiped,
/// and `cairn job restore` restores every node, holds them all, and lets
/// them go together: the ranks check every number they receive and the
/// job finishes with the right answer.
#[test]
fn openmpi_job_checkpointed_by_the_coordinator() {
    let _one = one_at_a_time();
    let Some(mut job) = TwoNodeJob::start("openmpi-job", 2000) else {
        return;
    };
    let ckdir = job.dir.join("ckpt");
    let jlog = job.dir.join("job.log");
    // `launcher K CMD...`: node 0 (mpirun) and 1 are in A, node 2 in B.
    let launcher = job.dir.join("launcher.sh");
    std::fs::write(
        &launcher,
        format!(
            "#!/bin/sh\ncase $1 in 0|1) ns={a};; 2) ns={b};; *) ns={a};; esac\nshift\n\
             exec nsenter --net=/run/netns/$ns \"$@\"\n",
            a = job.net.a,
            b = job.net.b
        ),
    )
    .unwrap();
    make_executable(&launcher);
    let gone = {
        let mut c = Command::new("true").spawn().unwrap();
        let pid = c.id() as i32;
        c.wait().unwrap();
        pid
    };
    let [(_, m), (_, a), (_, b)] = job.trees();
    let nodes: Vec<String> = [m, a, b]
        .iter()
        .enumerate()
        .map(|(k, p)| format!("{k}:{p}"))
        .collect();
    let mut args: Vec<&str> = vec!["checkpoint", "-D", ckdir.to_str().unwrap(), "-v"];
    args.extend([
        "--launcher",
        launcher.to_str().unwrap(),
        "--tcp-established",
    ]);
    for n in &nodes {
        args.extend(["--node", n]);
    }
    // 1. A node fails: abort, everything as before.
    let bad = format!("3:{gone}");
    let mut aborting = args.clone();
    aborting.extend(["--node", &bad, "-R"]);
    let out = cairn_job(&aborting, &jlog);
    assert!(
        !out.status.success(),
        "a job checkpoint with a node that fails succeeded:\n{}",
        tail(&jlog, 6000)
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("job checkpoint aborted") && said.contains("node 3"),
        "{}",
        tail(&jlog, 6000)
    );
    let left: Vec<_> = std::fs::read_dir(&ckdir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "an aborted checkpoint left {left:?}");
    for ns in [&job.net.a, &job.net.b] {
        assert_eq!(locks_in(ns), Vec::<String>::new(), "a lock left in {ns}");
    }
    for (_, pid) in job.trees() {
        assert!(
            tree_runs(&job.tracker, pid),
            "the tree of pid {pid} does not run after the abort"
        );
    }
    let before = progress(&job.log);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while progress(&job.log) < before + 20 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        progress(&job.log) >= before + 20,
        "the job did not go on after the abort (progress {before}):\n{}",
        job.logs()
    );
    // 2. The final checkpoint of every node, then the restore.
    let out = cairn_job(&args, &jlog);
    assert!(
        out.status.success(),
        "job checkpoint: {}\n{}",
        exit_code(&out.status),
        tail(&jlog, 8000)
    );
    let ckpt = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(ckpt.join("job.img").is_file(), "no job.img in {ckpt:?}");
    for k in 0..3 {
        assert!(
            ckpt.join(format!("node-{k}/inventory.img")).is_file(),
            "no images of node {k}"
        );
    }
    job.killed_and_wiped();
    let dir = ckdir.to_str().unwrap().to_string();
    let out = cairn_job(
        &[
            "restore",
            "-D",
            &dir,
            "-v",
            "--launcher",
            launcher.to_str().unwrap(),
            "--tcp-established",
        ],
        &jlog,
    );
    for (_, pid) in job.trees() {
        job.tracker.track_tree(pid);
    }
    assert!(
        out.status.success(),
        "job restore: {}\n{}",
        exit_code(&out.status),
        tail(&jlog, 8000)
    );
    let roots = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        roots.lines().count(),
        3,
        "not three nodes restored: {roots}"
    );
    job.finishes_right();
}

/// A key file of `secret` (mode 0600) at `path`.
fn key_file(path: &Path, secret: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, secret).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// `cairn job ARGS` started in namespace `ns` (the coordinator listens
/// there), its stderr appended to `log`.
fn spawn_job_in(ns: &str, args: &[&str], log: &Path) -> std::process::Child {
    let err = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut cmd = Command::new(cairn_bin());
    cmd.arg("job")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err);
    common::netns::Net::spawn(ns, &mut cmd)
}

/// The coordinator's end: (exit status, stdout).
fn job_result(mut c: std::process::Child, log: &Path) -> (std::process::ExitStatus, String) {
    let st = wait_timeout(&mut c, Duration::from_secs(300)).unwrap_or_else(|| {
        let _ = c.kill();
        panic!("cairn job did not end within 300 s\n{}", tail(log, 6000))
    });
    let mut out = String::new();
    use std::io::Read;
    let _ = c.stdout.take().unwrap().read_to_string(&mut out);
    (st, out)
}

/// `cairn __node-agent connect` for node `k`, started in namespace `ns`
/// (as srun would start it on the node), its stderr to `log`.
fn spawn_agent(
    ns: &str,
    k: usize,
    coordinator: &str,
    key: &Path,
    log: &Path,
) -> std::process::Child {
    let err = File::create(log).unwrap();
    let mut cmd = Command::new(cairn_bin());
    cmd.args([
        "__node-agent",
        "-v",
        "connect",
        "--coordinator",
        coordinator,
    ])
    .arg("--key")
    .arg(key)
    .args(["--node", &k.to_string(), "--connect-timeout", "30s"])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(err);
    common::netns::Net::spawn(ns, &mut cmd)
}

/// The job of [`openmpi_job_checkpointed_by_the_coordinator`] with agents
/// that connect to the coordinator over TCP (`--listen ADDR:PORT --key
/// FILE`, issue 17) instead of talking over their stdin and stdout; the
/// coordinator runs in namespace A and listens on A's veth address, the
/// agents connect from A and B, so the job's control traffic crosses the
/// veth. 1. A checkpoint with `-R` whose agents the test starts itself
/// (`cairn __node-agent connect`, as srun would): the job runs on.
/// 2. The same with node 2's agent holding another key: the coordinator
/// refuses it, no agent is given its work when node 2 has not connected
/// within --connect-timeout, the job runs on unharmed (no freeze, no lock,
/// no new checkpoint: ckpt-000001 stays the newest). 3. The final checkpoint,
/// the agents started by the launcher with `connect`, and `cairn job
/// restore` the same way: the ranks check every number they receive and
/// the job finishes with the right answer.
#[test]
fn openmpi_job_agents_connect_over_tcp() {
    let _one = one_at_a_time();
    let Some(mut job) = TwoNodeJob::start("openmpi-tcp", 2500) else {
        return;
    };
    let addr_a = format!("{}.1", job.net.addr_b.rsplit_once('.').unwrap().0);
    let listen = format!("{addr_a}:7319");
    let (key, wrong) = (job.dir.join("job.key"), job.dir.join("other.key"));
    key_file(&key, b"0123456789abcdef0123456789abcdef");
    key_file(&wrong, b"0123456789abcdef0123456789abcdeX");
    let ckdir = job.dir.join("ckpt");
    let jlog = job.dir.join("job.log");
    let trees: Vec<(String, i32)> = job
        .trees()
        .iter()
        .map(|(ns, p)| (ns.to_string(), *p))
        .collect();
    let nodes: Vec<String> = trees
        .iter()
        .enumerate()
        .map(|(k, (_, p))| format!("{k}:{p}"))
        .collect();
    let mut args: Vec<&str> = vec!["checkpoint", "-D", ckdir.to_str().unwrap(), "-v"];
    args.extend(["--tcp-established", "--listen", &listen]);
    args.extend(["--key", key.to_str().unwrap()]);
    for n in &nodes {
        args.extend(["--node", n]);
    }
    let goes_on = |job: &TwoNodeJob, what: &str| {
        for (_, pid) in job.trees() {
            assert!(
                tree_runs(&job.tracker, pid),
                "the tree of pid {pid} does not run after {what}"
            );
        }
        let before = progress(&job.log);
        let deadline = Instant::now() + Duration::from_secs(30);
        while progress(&job.log) < before + 20 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            progress(&job.log) >= before + 20,
            "the job did not go on after {what} (progress {before}):\n{}",
            job.logs()
        );
        for ns in [&job.net.a, &job.net.b] {
            assert_eq!(locks_in(ns), Vec::<String>::new(), "a lock left in {ns}");
        }
    };
    let agents = |keys: [&Path; 3], tag: &str| -> Vec<(std::process::Child, std::path::PathBuf)> {
        trees
            .iter()
            .enumerate()
            .map(|(k, (ns, _))| {
                let log = job.dir.join(format!("agent-{tag}-{k}.log"));
                (spawn_agent(ns, k, &listen, keys[k], &log), log)
            })
            .collect()
    };
    let ended = |agents: Vec<(std::process::Child, std::path::PathBuf)>| -> Vec<(i32, String)> {
        agents
            .into_iter()
            .map(|(mut c, log)| {
                let st = wait_timeout(&mut c, Duration::from_secs(60));
                let st = st.map_or_else(
                    || {
                        let _ = c.kill();
                        let _ = c.wait();
                        -1
                    },
                    |s| exit_code(&s),
                );
                (st, tail(&log, 3000))
            })
            .collect()
    };
    // 1. Agents started by the operator, -R: ckpt-1, the job runs on.
    let mut leave = args.clone();
    leave.push("-R");
    let coord = spawn_job_in(&job.net.a, &leave, &jlog);
    let started = agents([&key, &key, &key], "1");
    let (st, out) = job_result(coord, &jlog);
    let logs = ended(started);
    assert!(
        st.success(),
        "job checkpoint over TCP: {}\n{}\nagents: {logs:?}",
        exit_code(&st),
        tail(&jlog, 8000)
    );
    assert!(out.trim().ends_with("ckpt-000001"), "{out}");
    assert!(
        logs.iter().all(|(st, _)| *st == 0),
        "an agent failed: {logs:?}"
    );
    assert!(
        std::fs::read_to_string(&jlog)
            .unwrap_or_default()
            .contains("agent connected from"),
        "{}",
        tail(&jlog, 4000)
    );
    goes_on(&job, "a checkpoint with -R");
    // 2. Node 2's agent has another key: refused, nothing done.
    let mut short = args.clone();
    short.extend(["-R", "--connect-timeout", "5s"]);
    let coord = spawn_job_in(&job.net.a, &short, &jlog);
    let started = agents([&key, &key, &wrong], "2");
    let (st, _) = job_result(coord, &jlog);
    let logs = ended(started);
    let said = tail(&jlog, 3000);
    assert!(
        !st.success(),
        "a job checkpoint with an agent of another key succeeded:\n{said}"
    );
    assert!(
        said.contains("job checkpoint aborted")
            && said.contains("node(s) 2 did not connect")
            && said.contains("does not authenticate"),
        "{said}"
    );
    assert!(
        logs[2].0 != 0 && logs[2].1.contains("wrong key"),
        "the agent of another key: {:?}",
        logs[2]
    );
    for (st, log) in &logs[..2] {
        assert!(
            *st != 0 && log.contains("nothing done"),
            "an agent the coordinator let go: {st} {log}"
        );
    }
    let mut left: Vec<String> = std::fs::read_dir(&ckdir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["ckpt-000001"],
        "the refused checkpoint left something"
    );
    goes_on(&job, "a refused agent");
    // 3. The final checkpoint and the restore, the agents started by the
    // launcher with `connect`.
    let launcher = job.dir.join("launcher.sh");
    std::fs::write(
        &launcher,
        format!(
            "#!/bin/sh\ncase $1 in 0|1) ns={a};; *) ns={b};; esac\nshift\n\
             exec nsenter --net=/run/netns/$ns \"$@\"\n",
            a = job.net.a,
            b = job.net.b
        ),
    )
    .unwrap();
    make_executable(&launcher);
    let mut last = args.clone();
    last.extend(["--launcher", launcher.to_str().unwrap()]);
    let (st, out) = job_result(spawn_job_in(&job.net.a, &last, &jlog), &jlog);
    assert!(
        st.success(),
        "job checkpoint: {}\n{}",
        exit_code(&st),
        tail(&jlog, 8000)
    );
    assert!(out.trim().ends_with("ckpt-000002"), "{out}");
    job.killed_and_wiped();
    let restore = [
        "restore",
        "-D",
        ckdir.to_str().unwrap(),
        "-v",
        "--tcp-established",
        "--listen",
        &listen,
        "--key",
        key.to_str().unwrap(),
        "--launcher",
        launcher.to_str().unwrap(),
    ];
    let (st, roots) = job_result(spawn_job_in(&job.net.a, &restore, &jlog), &jlog);
    for (_, pid) in job.trees() {
        job.tracker.track_tree(pid);
    }
    assert!(
        st.success(),
        "job restore: {}\n{}",
        exit_code(&st),
        tail(&jlog, 8000)
    );
    assert_eq!(
        roots.lines().count(),
        3,
        "not three nodes restored: {roots}"
    );
    job.finishes_right();
}
