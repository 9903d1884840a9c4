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

// ------------------------------------------------- bench inventory-dump

/// `cargo xtask bench inventory-dump [--runs N]`: does the BPF inventory
/// pay in a dump? For flat trees of 1, 50 and 500 processes with a few
/// fds and VMAs each (`bench_inv PROCS DIR --pidfile PATH 5 6`: 8 fds, 6
/// extra VMAs) and of 500 with 50 of each, `examples/bench_dump_reads`
/// times what the dump reads from /proc to find the tree's processes,
/// VMAs and fds (its pre-checks, and the frozen reads of `smaps` and of
/// the fds) against `inventory::collect` with BPF and from /proc; then
/// `cairn -v dump -R` of the same tree gives the time it was frozen and
/// the wall time, to weigh the reads against. Medians of N runs.
const DUMP_TREES: [(usize, u32, u32); 4] = [(1, 5, 6), (50, 5, 6), (500, 5, 6), (500, 47, 50)];

struct DumpRow {
    procs: usize,
    counts: String,
    reads: std::collections::BTreeMap<String, f64>,
    frozen_ms: f64,
    wall_ms: f64,
}

/// Parses `key=value ... counts=TEXT` (the last key takes the rest).
fn parse_reads(line: &str) -> Result<(std::collections::BTreeMap<String, f64>, String)> {
    let (nums, counts) = line
        .split_once(" counts=")
        .ok_or_else(|| format!("no counts in {line:?}"))?;
    let mut m = std::collections::BTreeMap::new();
    for kv in nums.split_whitespace() {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("bad field {kv:?} in {line:?}"))?;
        let v: f64 = v.parse().map_err(|_| format!("bad number in {kv:?}"))?;
        m.insert(k.to_string(), v);
    }
    for k in ["prechecks", "smaps", "fds", "bpf", "proc"] {
        if !m.contains_key(k) {
            return Err(format!("no {k} in {line:?}"));
        }
    }
    Ok((m, counts.trim().to_string()))
}

/// "dump done: frozen X ms, ..." of `cairn -v dump`.
fn parse_frozen(log: &str) -> Result<f64> {
    let line = log
        .lines()
        .find(|l| l.contains("dump done: frozen "))
        .ok_or_else(|| format!("no \"dump done\" line in cairn's log:\n{log}"))?;
    let rest = &line[line.find("frozen ").unwrap_or(0) + "frozen ".len()..];
    rest.split_whitespace()
        .next()
        .and_then(|x| x.parse().ok())
        .ok_or_else(|| format!("bad frozen time in {line:?}"))
}

fn measure_dump(
    cairn: &Path,
    reads: &Path,
    workload: &Path,
    work: &Path,
    (n, fds, pages): (usize, u32, u32),
    runs: usize,
) -> Result<DumpRow> {
    let tag = format!("{n}-{fds}");
    let files = work.join(format!("files-{tag}"));
    std::fs::create_dir_all(&files).map_err(|e| format!("{}: {e}", files.display()))?;
    let pidfile = work.join(format!("tree-{tag}.pid"));
    let mut child = Command::new(workload)
        .arg(n.to_string())
        .arg(&files)
        .arg("--pidfile")
        .arg(&pidfile)
        .arg(fds.to_string())
        .arg(pages.to_string())
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
        let out = Command::new(reads)
            .arg(pid.to_string())
            .arg(runs.to_string())
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("{}: {e}", reads.display()))?;
        if !out.status.success() {
            return Err(format!("bench_dump_reads failed ({})", out.status));
        }
        let (reads, counts) = parse_reads(String::from_utf8_lossy(&out.stdout).trim())?;
        let (mut frozen, mut wall) = (Vec::new(), Vec::new());
        for i in 0..runs {
            let dir = work.join(format!("img-{tag}-{i}"));
            let t = Instant::now();
            let out = Command::new(cairn)
                .args(["-v", "dump", "-R", "-t", &pid.to_string(), "-D"])
                .arg(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .output()
                .map_err(|e| format!("{}: {e}", cairn.display()))?;
            let wall_ms = t.elapsed().as_secs_f64() * 1e3;
            let log = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() {
                return Err(format!("cairn dump failed ({}):\n{log}", out.status));
            }
            let f = parse_frozen(&log)?;
            eprintln!(
                "xtask: dump of {n} processes run {}/{runs}: frozen {f:.1} ms, cairn run {wall_ms:.0} ms",
                i + 1
            );
            frozen.push(f);
            wall.push(wall_ms);
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok(DumpRow {
            procs: n,
            counts,
            reads,
            frozen_ms: median(&frozen),
            wall_ms: median(&wall),
        })
    })();
    kill_all(pid, &mut child);
    r
}

pub fn bench_dump(args: &[String]) -> Result<()> {
    let runs = parse(args)?;
    ensure_tools()?;
    run(cargo().args(["build", "--release"]))?;
    run(cargo().args(["build", "--release", "--example", "bench_dump_reads"]))?;
    let root = root();
    let cairn = root.join("target/release/cairn");
    let reads = root.join("target/release/examples/bench_dump_reads");
    let workload = root.join("target/release/bench_inv");
    run(Command::new("gcc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&workload)
        .arg(root.join("tests/workloads/bench_inv.c")))?;
    let work = std::env::temp_dir().join(format!("cairn-bench-invdump-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let mut rows = Vec::new();
    let result = (|| {
        for t in DUMP_TREES {
            rows.push(measure_dump(&cairn, &reads, &workload, &work, t, runs)?);
        }
        Ok::<_, String>(())
    })();
    let _ = std::fs::remove_dir_all(&work);
    result?;
    println!(
        "| processes | collected | dump pre-checks (ms) | frozen smaps (ms) | frozen fds (ms) | \
         inventory bpf (ms) | inventory proc (ms) | dump frozen (ms) | dump run (ms) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let g = |k: &str| r.reads.get(k).copied().unwrap_or(f64::NAN);
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.0} |",
            r.procs,
            r.counts,
            g("prechecks"),
            g("smaps"),
            g("fds"),
            g("bpf"),
            g("proc"),
            r.frozen_ms,
            r.wall_ms
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_line() {
        let (m, counts) =
            parse_reads("prechecks=1.5 smaps=2 fds=3 bpf=0.5 proc=4 counts=1 processes, 8 fds")
                .unwrap();
        assert_eq!(m["prechecks"], 1.5);
        assert_eq!(m["proc"], 4.0);
        assert_eq!(counts, "1 processes, 8 fds");
        assert!(parse_reads("prechecks=1 counts=x").is_err());
        let log = "cairn[1]: dump done: frozen 13050.7 ms, 2397223 bytes of images\n";
        assert_eq!(parse_frozen(log).unwrap(), 13050.7);
        assert!(parse_frozen("nothing").is_err());
    }

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
