//! `cargo xtask slurm [start|stop|status] [--dir DIR]`: a one-node Slurm
//! of the caller's own, from the distribution's packages (issue 17).
//!
//! `start` installs slurmctld, slurmd, slurm-client and munge with
//! apt-get when they are missing, then makes an instance that touches no
//! system state: a private directory (0700, default `target/slurm`)
//! holds its munge key and socket, slurm.conf, state, spool, pid and log
//! files; munged, slurmctld and slurmd run in the foreground as children
//! (their pids in `DIR/pids`), and `start` returns once `sinfo` shows the
//! node idle. `SLURM_CONF=DIR/slurm.conf` points sinfo, sbatch, scontrol
//! at it. `stop` cancels the instance's jobs, ends what is left of them
//! and the daemons, by pid (each checked to be the instance's own through
//! its command line or its `SLURM_CONF`). The node is this machine (its
//! CPUs, 90% of its memory) at 127.0.0.1; ports are free ones picked at
//! start, so several instances can run at once.
//!
//! The same file is the test helper's (`tests/common/slurm.rs` includes
//! it): std only, no item of the xtask crate.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian packages, each with the file that shows it is installed.
pub const PACKAGES: &[(&str, &str)] = &[
    ("/usr/sbin/slurmctld", "slurmctld"),
    ("/usr/sbin/slurmd", "slurmd"),
    ("/usr/bin/sbatch", "slurm-client"),
    ("/usr/sbin/munged", "munge"),
];

/// The packages of [`PACKAGES`] that are missing.
pub fn missing() -> Vec<&'static str> {
    PACKAGES
        .iter()
        .filter(|(f, _)| !Path::new(f).exists())
        .map(|&(_, p)| p)
        .collect()
}

/// Installs the missing packages with apt-get (as root).
pub fn install() -> Result<(), String> {
    let pkgs = missing();
    if pkgs.is_empty() {
        return Ok(());
    }
    eprintln!("slurm: installing {}", pkgs.join(" "));
    for args in [
        vec!["update"],
        [
            vec!["install", "-y", "--no-install-recommends"],
            pkgs.clone(),
        ]
        .concat(),
    ] {
        let st = Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=600"])
            .args(&args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("apt-get: {e}"))?;
        if !st.success() {
            return Err(format!("apt-get {}: {st}", args.join(" ")));
        }
    }
    match missing().first() {
        Some(p) => Err(format!("{p} still missing after apt-get install")),
        None => Ok(()),
    }
}

/// The daemons of an instance, in start order.
const DAEMONS: &[&str] = &["munged", "slurmctld", "slurmd"];

/// A running one-node Slurm.
pub struct Instance {
    /// The private directory.
    pub dir: PathBuf,
    /// `DIR/slurm.conf`, for `SLURM_CONF`.
    pub conf: PathBuf,
    /// The daemons started by this process (empty for an instance found
    /// by [`Instance::open`]).
    children: Vec<Child>,
    /// Remove `dir` on [`Instance::stop`].
    remove_dir: bool,
}

/// Makes `dir` private (0700), or checks that an existing one is a real
/// directory of ours that no one else can write.
fn private_dir(dir: &Path) -> Result<(), String> {
    match fs::symlink_metadata(dir) {
        Ok(m) => {
            if !m.file_type().is_dir() {
                return Err(format!("{}: not a directory", dir.display()));
            }
            let me = fs::metadata("/proc/self")
                .map_err(|e| format!("/proc/self: {e}"))?
                .uid();
            if m.uid() != me || m.mode() & 0o022 != 0 {
                return Err(format!(
                    "{}: owned by uid {} with mode {:o}: not a private directory of uid {me}",
                    dir.display(),
                    m.uid(),
                    m.mode() & 0o7777
                ));
            }
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("{}: {e}", dir.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("{}: {e}", dir.display())),
        Err(e) => Err(format!("{}: {e}", dir.display())),
    }
}

/// A new file in a private directory: created exclusively, never through
/// a link.
fn create_file(path: &Path, mode: u32, data: &[u8]) -> Result<(), String> {
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(data)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A TCP port free on 127.0.0.1 now.
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local_addr: {e}"))
}

/// This machine's host name (what slurmd calls its node).
fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().split('.').next().unwrap_or("").to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Memory for the node: 90% of MemTotal, in MiB.
fn memory_mib() -> u64 {
    let kb = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(1 << 20);
    (kb / 1024 * 9 / 10).max(256)
}

/// cgroup.conf (read from slurm.conf's directory) on a machine without
/// systemd whose /sys/fs/cgroup is cgroup2, as in `cargo xtask vm-test`'s
/// guests: slurmd loads the cgroup plugin even with proctrack/linuxproc
/// and task/none, and Slurm's cgroup/v2 asks systemd over dbus for its
/// scope; without systemd its init fails and slurmd exits ("slurmd
/// initialization failed", the node never comes up). IgnoreSystemd makes
/// it build its cgroups itself, CgroupAutomount enables the controllers
/// there. `None` (Slurm's defaults) with systemd or cgroup v1.
fn cgroup_conf() -> Option<&'static str> {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let v2 = mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&"/sys/fs/cgroup") && f.get(2) == Some(&"cgroup2")
    });
    (v2 && !Path::new("/run/systemd/system").exists()).then_some(
        "# Generated (cargo xtask slurm): cgroup v2 without systemd.\nIgnoreSystemd=yes\nCgroupAutomount=yes\n",
    )
}

/// The slurm.conf of an instance in `dir`.
fn slurm_conf(dir: &Path, ctld_port: u16, slurmd_port: u16) -> String {
    let d = dir.display();
    let host = hostname();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem = memory_mib();
    format!(
        "# A one-node Slurm of cairn's tests (cargo xtask slurm); generated.
ClusterName=cairn
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a requeued job may start again after this many seconds.
AuthInfo=socket={d}/munge.socket,cred_expire=5
SlurmUser=root
SlurmdUser=root
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig={d}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
# Time between the SIGTERM and the SIGKILL of a job that is ended: room
# for a final checkpoint.
KillWait=120
MinJobAge=3600
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} State=UNKNOWN
PartitionName=cairn Nodes={host} Default=YES MaxTime=INFINITE State=UP
"
    )
}

/// `/proc/PID/cmdline` with NULs as spaces.
fn cmdline(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Whether `pid` is a process of the instance whose conf is `conf`: its
/// command line names the conf or the instance's files, or (slurmstepd)
/// its environment has `SLURM_CONF=conf`.
fn is_ours(pid: i32, dir: &Path, conf: &Path) -> bool {
    let cl = cmdline(pid);
    if cl.contains(&*dir.to_string_lossy()) {
        return true;
    }
    let want = format!("SLURM_CONF={}", conf.display());
    fs::read(format!("/proc/{pid}/environ"))
        .map(|e| e.split(|&b| b == 0).any(|v| v == want.as_bytes()))
        .unwrap_or(false)
}

fn alive(pid: i32) -> bool {
    // A zombie counts as gone.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')),
        Err(_) => false,
    }
}

/// Sends `sig` (`TERM`, `KILL`) to `pid`, checked to be ours.
fn kill(pid: i32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

fn tail(path: &Path, max: usize) -> String {
    let b = fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(&b[b.len().saturating_sub(max)..]).into_owned()
}

impl Instance {
    /// Starts an instance in `dir` (made private if missing); `remove`:
    /// remove the directory on stop.
    pub fn start(dir: &Path, remove: bool) -> Result<Instance, String> {
        if !missing().is_empty() {
            return Err(format!(
                "Slurm is not installed (missing {}): cargo xtask slurm start installs it",
                missing().join(" ")
            ));
        }
        private_dir(dir)?;
        let dir = fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if let Some(old) = Instance::open(&dir) {
            if old.running().iter().any(|&(_, p)| p.is_some()) {
                return Err(format!(
                    "{}: an instance runs there already (cargo xtask slurm stop)",
                    dir.display()
                ));
            }
        }
        let socket = dir.join("munge.socket");
        if socket.as_os_str().len() > 100 {
            return Err(format!(
                "{}: too long for a unix socket; use a shorter --dir",
                socket.display()
            ));
        }
        let conf = dir.join("slurm.conf");
        // A fresh state every time: old jobs, old logs go.
        for sub in ["state", "spool"] {
            let p = dir.join(sub);
            if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                fs::remove_dir_all(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            }
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&p)
                .map_err(|e| format!("{}: {e}", p.display()))?;
        }
        let mut key = vec![0u8; 128];
        fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut key))
            .map_err(|e| format!("/dev/urandom: {e}"))?;
        create_file(&dir.join("munge.key"), 0o400, &key)?;
        create_file(&dir.join("plugstack.conf"), 0o600, b"")?;
        let cgroup = dir.join("cgroup.conf");
        match cgroup_conf() {
            Some(c) => create_file(&cgroup, 0o644, c.as_bytes())?,
            None => {
                let _ = fs::remove_file(&cgroup);
            }
        }
        let ctld = free_port()?;
        let mut slurmd = free_port()?;
        for _ in 0..20 {
            if slurmd != ctld {
                break;
            }
            slurmd = free_port()?;
        }
        if slurmd == ctld {
            return Err("no second free port".into());
        }
        create_file(&conf, 0o644, slurm_conf(&dir, ctld, slurmd).as_bytes())?;
        let mut inst = Instance {
            dir: dir.clone(),
            conf: conf.clone(),
            children: Vec::new(),
            remove_dir: remove,
        };
        let d = |f: &str| dir.join(f).display().to_string();
        let argv: [(&str, Vec<String>); 3] = [
            (
                "/usr/sbin/munged",
                vec![
                    "-F".into(),
                    "-f".into(),
                    format!("--socket={}", d("munge.socket")),
                    format!("--key-file={}", d("munge.key")),
                    format!("--log-file={}", d("munged.log")),
                    format!("--pid-file={}", d("munged.pid")),
                    format!("--seed-file={}", d("munged.seed")),
                ],
            ),
            (
                "/usr/sbin/slurmctld",
                vec!["-D".into(), "-c".into(), "-f".into(), d("slurm.conf")],
            ),
            (
                "/usr/sbin/slurmd",
                vec!["-D".into(), "-f".into(), d("slurm.conf")],
            ),
        ];
        let mut pids = String::new();
        for (i, (exe, args)) in argv.iter().enumerate() {
            let name = DAEMONS[i];
            let out_path = dir.join(format!("{name}.out"));
            create_file(&out_path, 0o600, b"")?;
            let out = fs::OpenOptions::new()
                .append(true)
                .open(&out_path)
                .map_err(|e| format!("{}: {e}", out_path.display()))?;
            let mut c = Command::new(exe);
            c.args(args)
                .env("SLURM_CONF", &conf)
                .stdin(Stdio::null())
                .stdout(Stdio::from(
                    out.try_clone().map_err(|e| format!("{name}.out: {e}"))?,
                ))
                .stderr(Stdio::from(out));
            // A process group of its own: a ^C for the caller is not for it.
            std::os::unix::process::CommandExt::process_group(&mut c, 0);
            let child = c.spawn().map_err(|e| format!("{exe}: {e}"))?;
            pids.push_str(&format!("{name} {}\n", child.id()));
            inst.children.push(child);
            create_file(&dir.join("pids"), 0o600, pids.as_bytes())?;
            if name == "munged" {
                inst.wait_for(&format!("{name} socket"), Duration::from_secs(30), |i| {
                    i.dir.join("munge.socket").exists()
                })?;
            }
        }
        inst.wait_for("the node idle", Duration::from_secs(90), |i| {
            i.sinfo_state().is_some_and(|s| s == "idle")
        })?;
        Ok(inst)
    }

    /// Waits until `ready`; an error with the logs if a daemon ended or
    /// the time is out.
    fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        ready: impl Fn(&Instance) -> bool,
    ) -> Result<(), String> {
        let end = Instant::now() + timeout;
        loop {
            if ready(self) {
                return Ok(());
            }
            let dead = self
                .children
                .iter_mut()
                .enumerate()
                .find_map(|(i, c)| c.try_wait().ok().flatten().map(|st| (DAEMONS[i], st)));
            if dead.is_some() || Instant::now() >= end {
                let why = match dead {
                    Some((n, st)) => format!("{n} ended ({st})"),
                    None => format!("not ready after {timeout:?}"),
                };
                let logs = self.logs();
                let _ = self.stop();
                return Err(format!("slurm: waiting for {what}: {why}\n{logs}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The ends of the daemons' logs.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for f in [
            "munged.log",
            "munged.out",
            "slurmctld.log",
            "slurmctld.out",
            "slurmd.log",
            "slurmd.out",
        ] {
            let p = self.dir.join(f);
            if p.exists() {
                s.push_str(&format!("--- {}:\n{}\n", p.display(), tail(&p, 2000)));
            }
        }
        s
    }

    /// The instance whose directory is `dir`, if it has a pids file.
    pub fn open(dir: &Path) -> Option<Instance> {
        let dir = fs::canonicalize(dir).ok()?;
        dir.join("pids").exists().then(|| Instance {
            conf: dir.join("slurm.conf"),
            dir,
            children: Vec::new(),
            remove_dir: false,
        })
    }

    /// Each daemon and its pid if it still runs (and is this instance's).
    pub fn running(&self) -> Vec<(String, Option<i32>)> {
        let text = fs::read_to_string(self.dir.join("pids")).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let (n, p) = l.split_once(' ')?;
                let p: i32 = p.trim().parse().ok()?;
                let live = alive(p) && is_ours(p, &self.dir, &self.conf);
                Some((n.to_string(), live.then_some(p)))
            })
            .collect()
    }

    /// A Slurm command (sinfo, sbatch, scontrol, ...) for this instance.
    pub fn command(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    /// The node's state as sinfo says it (`idle`, `alloc`, ...).
    pub fn sinfo_state(&self) -> Option<String> {
        let out = self
            .command("sinfo")
            .args(["-h", "-N", "-o", "%T"])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !s.is_empty()).then_some(s)
    }

    /// Processes of this instance's jobs: the slurmstepd daemons whose
    /// `SLURM_CONF` is ours.
    fn stepds(&self) -> Vec<i32> {
        let want = format!("SLURM_CONF={}", self.conf.display());
        let mut out = Vec::new();
        for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() != "slurmstepd" {
                continue;
            }
            let env = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            if env.split(|&b| b == 0).any(|v| v == want.as_bytes()) {
                out.push(pid);
            }
        }
        out
    }

    /// Cancels the jobs, ends what is left of them and the daemons, by
    /// pid; removes the directory if the instance was made so.
    pub fn stop(&mut self) -> Result<(), String> {
        let daemons = self.running();
        let ctld_up = daemons.iter().any(|(n, p)| n == "slurmctld" && p.is_some());
        if ctld_up {
            let _ = self
                .command("scancel")
                .args(["--full", "--state=RUNNING,PENDING,SUSPENDED", "-u", "root"])
                .stderr(Stdio::null())
                .status();
            let _ = self
                .command("scancel")
                .args(["-u", "root"])
                .stderr(Stdio::null())
                .status();
        }
        // The jobs' steps and their processes, then the daemons.
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let stepds = self.stepds();
            if stepds.is_empty() {
                break;
            }
            for s in stepds {
                let mut tree = vec![s];
                let mut i = 0;
                while i < tree.len() {
                    let p = tree[i];
                    for t in fs::read_dir(format!("/proc/{p}/task"))
                        .into_iter()
                        .flatten()
                    {
                        let Ok(t) = t else { continue };
                        let ch = fs::read_to_string(t.path().join("children")).unwrap_or_default();
                        tree.extend(ch.split_whitespace().filter_map(|c| c.parse::<i32>().ok()));
                    }
                    i += 1;
                }
                if Instant::now() >= end {
                    for &p in tree.iter().rev() {
                        kill(p, "KILL");
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        for (name, pid) in daemons.iter().rev() {
            let Some(pid) = *pid else { continue };
            kill(pid, "TERM");
            let end = Instant::now() + Duration::from_secs(15);
            while alive(pid) {
                if let Some(c) = self.children.iter_mut().find(|c| c.id() as i32 == pid) {
                    let _ = c.try_wait();
                }
                if Instant::now() >= end {
                    eprintln!("slurm: {name} (pid {pid}) did not end on SIGTERM: SIGKILL");
                    kill(pid, "KILL");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
        let _ = fs::remove_file(self.dir.join("pids"));
        if self.remove_dir {
            self.remove_dir = false;
            fs::remove_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        }
        Ok(())
    }
}

/// `cargo xtask slurm [start|stop|status] [--dir DIR]`.
pub fn main(args: &[String], default_dir: &Path) -> Result<u8, String> {
    let mut cmd = "status";
    let mut dir = default_dir.to_path_buf();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "start" | "stop" | "status" => cmd = a,
            "--dir" => dir = PathBuf::from(it.next().ok_or("--dir needs a value")?),
            other => {
                return Err(format!(
                    "unknown slurm argument {other:?}\nusage: cargo xtask slurm [start|stop|status] [--dir DIR]"
                ))
            }
        }
    }
    match cmd {
        "start" => {
            install()?;
            if let Some(parent) = dir.parent() {
                fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            // The daemons outlive xtask.
            let inst = Instance::start(&dir, false)?;
            println!(
                "slurm: one node idle; export SLURM_CONF={}",
                inst.conf.display()
            );
            Ok(0)
        }
        "stop" => match Instance::open(&dir) {
            Some(mut i) => {
                i.stop()?;
                println!("slurm: stopped ({} kept, with the logs)", i.dir.display());
                Ok(0)
            }
            None => {
                println!("slurm: no instance in {}", dir.display());
                Ok(0)
            }
        },
        _ => {
            let Some(i) = Instance::open(&dir) else {
                println!("slurm: no instance in {}", dir.display());
                return Ok(1);
            };
            let mut up = true;
            for (n, p) in i.running() {
                match p {
                    Some(p) => println!("{n}: pid {p}"),
                    None => {
                        println!("{n}: not running");
                        up = false;
                    }
                }
            }
            if up {
                println!("SLURM_CONF={}", i.conf.display());
                let _ = i.command("sinfo").status();
                let _ = i.command("squeue").status();
            }
            Ok(if up { 0 } else { 1 })
        }
    }
}
