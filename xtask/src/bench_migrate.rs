//! `cargo xtask bench migrate [--runs N] [--size SIZE] [--dirty PCT,PCT]
//! [--max-downtime T] [--lazy] [--baseline CAIRN]`: live migration
//! (issue 16) of a tree holding SIZE
//! (default 1 GiB) of incompressible memory (`tests/workloads/migrate_mix.c`:
//! two threads rewrite PCT percent of it per second, a child answers
//! through a pipe and a unix socket) from one network namespace to
//! another over a veth pair, with `cairn migrate` / `cairn receive`.
//! Prints per run: total time, downtime (from the final dump's start to
//! the destination's confirmation, as `cairn migrate` reports it), bytes
//! sent, rounds; and the veth's bandwidth measured with a plain TCP
//! transfer (python3) in the same namespaces. The migrated tree checks
//! itself (PASS) after each run.
//!
//! `--lazy`: post-copy (`migrate --lazy`, `receive --lazy-ok`) of
//! `tests/workloads/mem_rewrite.c --idle` (one process: its memory is
//! the pager's; it checks every page at the end), rewritten 0%/s; the
//! downtime column is then the time from the final dump's start to the
//! tree running on the destination (`lazy_running_ms`), the total the
//! time until every page arrived, and each run prints where the time to
//! running went (`cairn migrate`'s `lazy_split:`: the frozen final dump,
//! sending its layer, the verdict, the source tree's teardown, the
//! destination's part).
//!
//! `--baseline CAIRN`: every run is repeated with that binary right after
//! (alternating, so both see the same load); its figures are printed
//! beside.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{
    kill9, median, parse_size, prepare_bench, root, run, size_label, wait_pidfile, Result, GIB,
};

struct Args {
    runs: usize,
    size: u64,
    dirty: Vec<f64>,
    max_downtime: String,
    lazy: bool,
    baseline: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Args> {
    let mut a = Args {
        runs: 1,
        size: GIB,
        dirty: vec![0.0, 1.0],
        max_downtime: "300ms".into(),
        lazy: false,
        baseline: None,
    };
    let mut it = args.iter();
    while let Some(x) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{x} needs a value"));
        match x.as_str() {
            "--runs" => a.runs = value()?.parse().map_err(|_| "--runs wants a number")?,
            "--size" => a.size = parse_size(value()?)?,
            "--dirty" => {
                a.dirty = value()?
                    .split(',')
                    .map(|p| p.parse::<f64>().map_err(|_| format!("--dirty: {p:?}")))
                    .collect::<Result<_>>()?
            }
            "--max-downtime" => a.max_downtime = value()?.clone(),
            "--lazy" => a.lazy = true,
            "--baseline" => a.baseline = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other:?} for bench migrate")),
        }
    }
    if a.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    Ok(a)
}

/// The two namespaces and their veth; removed on drop.
struct Net {
    a: String,
    b: String,
}

const ADDR_B: &str = "10.203.0.2";

fn ip(args: &[&str]) -> Result<()> {
    run(Command::new("ip").args(args))
}

impl Net {
    fn new() -> Result<Net> {
        let id = std::process::id();
        let n = Net {
            a: format!("cairnbenchA-{id}"),
            b: format!("cairnbenchB-{id}"),
        };
        ip(&["netns", "add", &n.a])?;
        ip(&["netns", "add", &n.b])?;
        ip(&[
            "link", "add", "cbA", "netns", &n.a, "type", "veth", "peer", "name", "cbB", "netns",
            &n.b,
        ])?;
        for (ns, dev, addr) in [
            (&n.a, "cbA", "10.203.0.1/24"),
            (&n.b, "cbB", "10.203.0.2/24"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(n)
    }

    fn enter(ns: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{ns}"));
        c
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.a]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.b]).status();
    }
}

/// Plain TCP throughput from A to B (bytes per second): 2 GiB of zeros
/// through python3 sockets.
fn veth_bandwidth(net: &Net) -> Result<f64> {
    let sink = "import socket,sys\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('10.203.0.2',7099));s.listen(1);print('ready',flush=True)\nc,_=s.accept();n=0\nwhile True:\n d=c.recv(1<<20)\n if not d: break\n n+=len(d)\nprint(n)";
    let source = "import socket,time\nc=socket.create_connection(('10.203.0.2',7099));b=bytes(1<<20);t=time.time()\nfor i in range(2048): c.sendall(b)\nc.shutdown(socket.SHUT_WR);c.recv(1);print(time.time()-t)";
    let mut s = Net::enter(&net.b)
        .args(["python3", "-c", sink])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("python3: {e}"))?;
    let mut line = String::new();
    {
        use std::io::BufRead;
        let out = s.stdout.as_mut().ok_or("no stdout")?;
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
    }
    let out = Net::enter(&net.a)
        .args(["python3", "-c", source])
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    let _ = s.kill();
    let _ = s.wait();
    let secs: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| format!("bandwidth: {}", String::from_utf8_lossy(&out.stderr)))?;
    Ok(2.0 * GIB as f64 / secs)
}

struct Row {
    dirty: f64,
    total_ms: f64,
    downtime_ms: f64,
    bytes: f64,
    rounds: f64,
    /// `--lazy`: the destination's part of `downtime_ms` (from the start
    /// of its restore to the tree running, as `cairn receive` says it).
    restore_ms: f64,
    /// `--lazy`: `cairn migrate`'s `lazy_split:` line (empty from a
    /// cairn that does not print it).
    split: String,
}

/// The 1-minute load average (the machine is shared: figures depend on
/// it).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn field(line: &str, k: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{k}=")))
        .and_then(|v| v.parse().ok())
}

/// `python3 -c REAPER CMD ARGS..`: a child subreaper that runs CMD and
/// reaps every orphan of its tree at once; on SIGTERM it kills CMD if
/// CMD has not been reaped yet (its pid is still its own); it exits when
/// no child is left.
const REAPER: &str = r#"
import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
alive = True
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
def term(*_):
    if alive:
        os.kill(pid, signal.SIGKILL)
signal.signal(signal.SIGTERM, term)
while True:
    try:
        p, _ = os.waitpid(-1, 0)
    except ChildProcessError:
        break
    except InterruptedError:
        continue
    if p == pid:
        alive = False
"#;

#[allow(clippy::too_many_arguments)]
fn once(
    cairn: &Path,
    workload: &Path,
    work: &Path,
    net: &Net,
    size: u64,
    dirty: f64,
    max_downtime: &str,
    lazy: bool,
) -> Result<Row> {
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
    let key = work.join("key");
    std::fs::write(&key, [0x42u8; 32]).map_err(|e| e.to_string())?;
    run(Command::new("chmod").arg("600").arg(&key))?;
    let pages = size / 4096;
    let rate = (pages as f64 * dirty / 100.0).round() as u64;
    let pidfile = work.join("w.pid");
    let log = work.join("w.log");
    // Under a reaper (REAPER): its orphans are reaped at once, as a
    // system's init does; this machine's init reaps them 1-2 s late, and
    // a hand-over's restore waits for the killed tree's pids.
    let mut wcmd = Command::new("python3");
    wcmd.args(["-c", REAPER, "nsenter"])
        .arg(format!("--net=/run/netns/{}", net.a));
    wcmd.arg(workload).arg("--pidfile").arg(&pidfile);
    if lazy {
        wcmd.args(["--mib", &(size >> 20).to_string(), "--idle"]);
    } else {
        wcmd.args(["--mem", &(size >> 20).to_string()]);
    }
    if lazy {
        // mem_rewrite --idle: 0%/s.
    } else if rate == 0 {
        wcmd.arg("--init-only");
    } else {
        wcmd.args(["--rate", &rate.to_string()]);
    }
    let mut w = wcmd
        .stdin(Stdio::null())
        .stdout(File::create(&log).map_err(|e| e.to_string())?)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let wpid = wait_pidfile(&pidfile, Duration::from_secs(120), || match w.try_wait() {
        Ok(None) => Ok(()),
        _ => Err("the workload exited before it was ready".to_string()),
    })?;
    let rpid = work.join("r.pid");
    let listen = format!("{ADDR_B}:7016");
    let mut r = Net::enter(&net.b)
        .arg(cairn)
        .args(["-v", "receive", "--listen", &listen, "--once", "--key"])
        .arg(&key)
        .arg("--pidfile")
        .arg(&rpid)
        .args(if lazy { &["--lazy-ok"][..] } else { &[] })
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(work.join("r.err")).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let mut m = Net::enter(&net.a)
        .arg(cairn)
        .args([
            "-v",
            "migrate",
            "-t",
            &wpid.to_string(),
            "--to",
            &listen,
            "--key",
        ])
        .arg(&key)
        .args(["--max-downtime", max_downtime])
        .args(if lazy { &["--lazy"][..] } else { &[] })
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(work.join("m.err")).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| e.to_string())?;
    // Reap the source as soon as the migration kills it (its pid must be
    // free for the destination).
    let st = loop {
        let _ = w.try_wait();
        if let Some(st) = m.try_wait().map_err(|e| e.to_string())? {
            break st;
        }
        if t.elapsed() > Duration::from_secs(900) {
            let _ = m.kill();
            break m.wait().map_err(|e| e.to_string())?;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = r.wait();
    let err = std::fs::read_to_string(work.join("m.err")).unwrap_or_default();
    let rerr = std::fs::read_to_string(work.join("r.err")).unwrap_or_default();
    // The -v logs of the last run stay for a look at the timestamps.
    let logs = root().join("target/bench-migrate-logs");
    if std::fs::create_dir_all(&logs).is_ok() {
        let _ = std::fs::write(logs.join("migrate.log"), &err);
        let _ = std::fs::write(logs.join("receive.log"), &rerr);
    }
    let restore_ms = rerr
        .split("the tree runs here after ")
        .nth(1)
        .and_then(|t| t.split(" ms").next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0.0);
    // The reaper kills the source workload if it still runs (a failed
    // migration), never a pid it has reaped.
    let _ = Command::new("kill")
        .args(["-TERM", &w.id().to_string()])
        .stderr(Stdio::null())
        .status();
    let _ = w.wait();
    if !st.success() {
        let _ = r.kill();
        return Err(format!(
            "cairn migrate failed ({st}):\n{err}\nreceiver:\n{rerr}"
        ));
    }
    let line = err
        .lines()
        .find(|l| l.contains("stats rounds="))
        .ok_or_else(|| format!("no stats line:\n{err}"))?;
    // The migrated tree checks itself.
    let root: i32 = std::fs::read_to_string(&rpid)
        .map_err(|e| e.to_string())?
        .trim()
        .parse()
        .map_err(|_| "pidfile")?;
    run(Command::new("kill").args(["-TERM", &root.to_string()]))?;
    let end = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("PASS")
    {
        if Instant::now() > end {
            kill9(root);
            return Err(format!(
                "the migrated tree did not PASS: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let row = Row {
        dirty,
        total_ms: field(line, "total_ms").ok_or("total_ms")?,
        downtime_ms: if lazy {
            err.lines()
                .find_map(|l| field(l, "lazy_running_ms"))
                .ok_or("lazy_running_ms")?
        } else {
            field(line, "downtime_ms").ok_or("downtime_ms")?
        },
        bytes: field(line, "bytes_sent").ok_or("bytes_sent")?,
        rounds: field(line, "rounds").ok_or("rounds")?,
        restore_ms,
        split: match err.lines().find_map(|l| l.split("lazy_split: ").nth(1)) {
            // The receiver's wait for the source's pids (hand-over mode)
            // is part of dest_ms.
            Some(s) => match rerr
                .split("pids are free after ")
                .nth(1)
                .or_else(|| rerr.split("on their way out after ").nth(1))
                .and_then(|t| t.split(" ms").next())
            {
                Some(w) => format!("{s} (dest: pids free after {w} ms)"),
                None => s.to_string(),
            },
            None => String::new(),
        },
    };
    let _ = std::fs::remove_dir_all(work);
    Ok(row)
}

pub fn bench(args: &[String]) -> Result<()> {
    let a = parse(args)?;
    prepare_bench()?;
    let root = root();
    let cairn = root.join("target/release/cairn");
    let name = if a.lazy { "mem_rewrite" } else { "migrate_mix" };
    let workload = root.join(format!("target/release/{name}"));
    run(Command::new("gcc")
        .args(["-O2", "-Wall", "-pthread", "-o"])
        .arg(&workload)
        .arg(root.join(format!("tests/workloads/{name}.c"))))?;
    let net = Net::new()?;
    let bw = veth_bandwidth(&net)?;
    println!("veth bandwidth (plain TCP, python3): {:.0} MB/s", bw / 1e6);
    let work: PathBuf =
        std::env::temp_dir().join(format!("cairn-bench-migrate-{}", std::process::id()));
    let mut bins = vec![("this cairn", cairn)];
    if let Some(b) = &a.baseline {
        bins.push(("baseline", b.clone()));
    }
    // rows[b]: the medians of binary b per dirty rate.
    let mut rows: Vec<Vec<Row>> = bins.iter().map(|_| Vec::new()).collect();
    for &d in &a.dirty {
        let mut runs: Vec<Vec<Row>> = bins.iter().map(|_| Vec::new()).collect();
        for i in 0..a.runs {
            for (b, (label, bin)) in bins.iter().enumerate() {
                let r = once(
                    bin,
                    &workload,
                    &work,
                    &net,
                    a.size,
                    d,
                    &a.max_downtime,
                    a.lazy,
                )
                .inspect_err(|_| {
                    let _ = std::fs::remove_dir_all(&work);
                })?;
                println!(
                    "run {i} ({label}, load {}): {} rewritten {d}%/s: total {:.0} ms, downtime \
                     {:.0} ms{}, {:.0} MiB sent, {} rounds",
                    load_average(),
                    size_label(a.size),
                    r.total_ms,
                    r.downtime_ms,
                    if a.lazy {
                        format!(
                            " (of which the destination's restore {:.0} ms)",
                            r.restore_ms
                        )
                    } else {
                        String::new()
                    },
                    r.bytes / (1 << 20) as f64,
                    r.rounds
                );
                if !r.split.is_empty() {
                    println!("    split: {}", r.split);
                }
                runs[b].push(r);
            }
        }
        for (b, runs) in runs.iter().enumerate() {
            let med = |f: fn(&Row) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
            rows[b].push(Row {
                dirty: d,
                total_ms: med(|r| r.total_ms),
                downtime_ms: med(|r| r.downtime_ms),
                bytes: med(|r| r.bytes),
                rounds: med(|r| r.rounds),
                restore_ms: med(|r| r.restore_ms),
                split: String::new(),
            });
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    let ideal_ms = a.size as f64 / bw * 1e3;
    for (b, (label, bin)) in bins.iter().enumerate() {
        println!("\n{label} ({})", bin.display());
        println!(
            "| size | rewritten | total | total / (size / veth bandwidth) | downtime | sent | rounds |"
        );
        println!("|---|---|---|---|---|---|---|");
        for r in &rows[b] {
            println!(
                "| {} | {}%/s | {:.2} s | {:.1}x | {:.0} ms | {:.0} MiB | {} |",
                size_label(a.size),
                r.dirty,
                r.total_ms / 1e3,
                r.total_ms / ideal_ms,
                r.downtime_ms,
                r.bytes / (1 << 20) as f64,
                r.rounds
            );
        }
        if a.lazy {
            for r in &rows[b] {
                println!(
                    "{}%/s: of the {:.0} ms to running, the destination's restore took {:.0} ms",
                    r.dirty, r.downtime_ms, r.restore_ms
                );
            }
        }
    }
    println!(
        "\nveth bandwidth {:.0} MB/s, {} run(s) each, medians",
        bw / 1e6,
        a.runs
    );
    Ok(())
}
