//! `cargo xtask bench inventory [--runs N]`: how long `cairn inventory`
//! takes to collect flat trees of 10, 100 and 1,000 processes, each with
//! 50 fds and 50 VMAs of its own (`tests/workloads/bench_inv.c`), with the
//! BPF iterators and from /proc. The time is the one cairn logs for the
//! collection itself ("inventory of PID: ... by bpf in X ms"): loading the
//! BPF programs (once per cairn run) is reported apart. The two collectors
//! alternate run by run (after one warm-up run each); medians are printed
//! as `inventory N processes: bpf X ms, proc Y ms`, then a table.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{cargo, ensure_tools, median, reap, root, run, tree_pids, wait_pidfile, Result};

const SIZES: [usize; 3] = [10, 100, 1000];

fn parse(args: &[String]) -> Result<usize> {
    let mut runs = 5;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => {
                runs = it
                    .next()
                    .ok_or("--runs needs a value")?
                    .parse()
                    .map_err(|_| "--runs wants a number".to_string())?;
                if runs == 0 {
                    return Err("--runs must be at least 1".into());
                }
            }
            other => return Err(format!("bench inventory: unknown argument {other:?}")),
        }
    }
    Ok(runs)
}

/// One collection: the time cairn logged for it, its summary, and the
/// wall time of the whole cairn run.
struct Sample {
    collect_ms: f64,
    wall_ms: f64,
    summary: String,
}

/// Parses "inventory of PID: SUMMARY by COLLECTOR in X ms".
fn parse_log(log: &str, collector: &str) -> Result<(f64, String)> {
    let line = log
        .lines()
        .find(|l| l.contains("inventory of "))
        .ok_or_else(|| format!("no \"inventory of\" line in cairn's log:\n{log}"))?;
    let (_, rest) = line
        .split_once(": ")
        .and_then(|(_, r)| r.split_once(": "))
        .ok_or_else(|| format!("bad inventory line {line:?}"))?;
    let (summary, tail) = rest
        .split_once(" by ")
        .ok_or_else(|| format!("bad inventory line {line:?}"))?;
    let (by, ms) = tail
        .split_once(" in ")
        .ok_or_else(|| format!("bad inventory line {line:?}"))?;
    if by != collector {
        return Err(format!(
            "cairn collected with {by}, not {collector} (is BPF usable here? see cairn check):\n{log}"
        ));
    }
    let ms: f64 = ms
        .trim()
        .trim_end_matches("ms")
        .trim()
        .parse()
        .map_err(|_| format!("bad time in {line:?}"))?;
    Ok((ms, summary.to_string()))
}

fn sample(cairn: &Path, pid: i32, bpf: bool) -> Result<Sample> {
    let mut cmd = Command::new(cairn);
    cmd.args(["-v", "inventory", "-t", &pid.to_string(), "--json"]);
    if !bpf {
        cmd.arg("--no-bpf");
    }
    let t = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", cairn.display()))?;
    let wall_ms = t.elapsed().as_secs_f64() * 1e3;
    let log = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("cairn inventory failed ({}):\n{log}", out.status));
    }
    let (collect_ms, summary) = parse_log(&log, if bpf { "bpf" } else { "proc" })?;
    Ok(Sample {
        collect_ms,
        wall_ms,
        summary,
    })
}

/// Kills every process of the tree (one `kill` for all of them).
fn kill_all(root: i32, child: &mut Child) {
    let pids = tree_pids(root);
    let _ = Command::new("kill")
        .arg("-KILL")
        .args(pids.iter().map(|p| p.to_string()))
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    reap(child, Duration::from_secs(30));
}

struct Row {
    procs: usize,
    bpf_ms: f64,
    proc_ms: f64,
    bpf_wall_ms: f64,
    proc_wall_ms: f64,
    summary: String,
}

fn measure(cairn: &Path, workload: &Path, work: &Path, n: usize, runs: usize) -> Result<Row> {
    let files = work.join(format!("files-{n}"));
    std::fs::create_dir_all(&files).map_err(|e| format!("{}: {e}", files.display()))?;
    let pidfile = work.join(format!("tree-{n}.pid"));
    let _ = std::fs::remove_file(&pidfile);
    let mut child = Command::new(workload)
        .arg(n.to_string())
        .arg(&files)
        .arg("--pidfile")
        .arg(&pidfile)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", workload.display()))?;
    let pid = match wait_pidfile(&pidfile, Duration::from_secs(120), || Ok(())) {
        Ok(p) => p,
        Err(e) => {
            kill_all(child.id() as i32, &mut child);
            return Err(e);
        }
    };
    let r = (|| {
        let found = tree_pids(pid).len();
        if found != n {
            return Err(format!("the tree has {found} processes, not {n}"));
        }
        sample(cairn, pid, true)?;
        sample(cairn, pid, false)?;
        let (mut b, mut p) = (Vec::new(), Vec::new());
        for i in 0..runs {
            let sb = sample(cairn, pid, true)?;
            let sp = sample(cairn, pid, false)?;
            if sb.summary != sp.summary {
                return Err(format!(
                    "the collectors disagree: bpf {:?}, proc {:?}",
                    sb.summary, sp.summary
                ));
            }
            eprintln!(
                "xtask: inventory {n} run {}/{runs}: bpf {:.2} ms (cairn run {:.0} ms), proc {:.2} ms \
                 (cairn run {:.0} ms); {}",
                i + 1,
                sb.collect_ms,
                sb.wall_ms,
                sp.collect_ms,
                sp.wall_ms,
                sb.summary
            );
            b.push(sb);
            p.push(sp);
        }
        let med =
            |v: &[Sample], f: fn(&Sample) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
        Ok(Row {
            procs: n,
            bpf_ms: med(&b, |s| s.collect_ms),
            proc_ms: med(&p, |s| s.collect_ms),
            bpf_wall_ms: med(&b, |s| s.wall_ms),
            proc_wall_ms: med(&p, |s| s.wall_ms),
            summary: b[0].summary.clone(),
        })
    })();
    kill_all(pid, &mut child);
    r
}

pub fn bench(args: &[String]) -> Result<()> {
    let runs = parse(args)?;
    ensure_tools()?;
    run(cargo().args(["build", "--release"]))?;
    let root = root();
    let cairn = root.join("target/release/cairn");
    let workload = root.join("target/release/bench_inv");
    run(Command::new("gcc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&workload)
        .arg(root.join("tests/workloads/bench_inv.c")))?;
    let work = std::env::temp_dir().join(format!("cairn-bench-inv-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let mut rows = Vec::new();
    let result = (|| {
        for n in SIZES {
            rows.push(measure(&cairn, &workload, &work, n, runs)?);
        }
        Ok::<_, String>(())
    })();
    let _ = std::fs::remove_dir_all(&work);
    result?;
    for r in &rows {
        println!(
            "inventory {} processes: bpf {:.2} ms, proc {:.2} ms",
            r.procs, r.bpf_ms, r.proc_ms
        );
    }
    println!();
    println!(
        "| processes | collected | bpf (ms) | proc (ms) | proc / bpf | cairn run, bpf (ms) | cairn run, proc (ms) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.1}x | {:.0} | {:.0} |",
            r.procs,
            r.summary,
            r.bpf_ms,
            r.proc_ms,
            r.proc_ms / r.bpf_ms,
            r.bpf_wall_ms,
            r.proc_wall_ms
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_line() {
        let log = "cairn[12]: inventory of 34: 10 processes, 10 threads, 700 VMAs, 500 fds by bpf in 1.234 ms\n";
        let (ms, summary) = parse_log(log, "bpf").unwrap();
        assert_eq!(ms, 1.234);
        assert_eq!(summary, "10 processes, 10 threads, 700 VMAs, 500 fds");
        assert!(parse_log(log, "proc").is_err());
        assert!(parse_log("nothing", "bpf").is_err());
    }
}
