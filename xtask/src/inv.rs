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
/// the wall time, to weigh the reads against, and `cairn -v pre-dump`
/// the time its freeze took. With `--baseline CAIRN` another cairn binary
/// (e.g. one built from an earlier commit) is timed the same way, run by
/// run alternating with this one. Medians of N runs.
const DUMP_TREES: [(usize, u32, u32); 4] = [(1, 5, 6), (50, 5, 6), (500, 5, 6), (500, 47, 50)];

/// Medians of one cairn binary's dumps and pre-dumps of a tree.
#[derive(Default)]
struct DumpTimes {
    frozen_ms: Vec<f64>,
    wall_ms: Vec<f64>,
    pre_frozen_ms: Vec<f64>,
}

struct DumpRow {
    procs: usize,
    counts: String,
    reads: std::collections::BTreeMap<String, f64>,
    times: DumpTimes,
    baseline: Option<DumpTimes>,
}

struct DumpArgs {
    runs: usize,
    baseline: Option<std::path::PathBuf>,
}

fn parse_dump(args: &[String]) -> Result<DumpArgs> {
    let mut rest = Vec::new();
    let mut baseline = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--baseline" {
            let p = it.next().ok_or("--baseline needs a cairn binary")?;
            baseline = Some(std::path::PathBuf::from(p));
        } else {
            rest.push(a.clone());
        }
    }
    Ok(DumpArgs {
        runs: parse(&rest)?,
        baseline,
    })
}

/// A number after `key` in the line of `log` that has it ("dump done:
/// frozen X ms", "pre-dump: frozen X ms").
fn logged_ms(log: &str, key: &str) -> Result<f64> {
    let line = log
        .lines()
        .find(|l| l.contains(key))
        .ok_or_else(|| format!("no {key:?} line in cairn's log:\n{log}"))?;
    let rest = &line[line.find(key).unwrap_or(0) + key.len()..];
    rest.split_whitespace()
        .next()
        .and_then(|x| x.parse().ok())
        .ok_or_else(|| format!("bad number after {key:?} in {line:?}"))
}

/// One `cairn -v CMD -R -t PID -D DIR` (or pre-dump, which leaves the
/// tree running anyway): the log and the wall time.
fn cairn_run(cairn: &Path, cmd: &str, pid: i32, dir: &Path) -> Result<(String, f64)> {
    let mut c = Command::new(cairn);
    c.args(["-v", cmd]);
    if cmd == "dump" {
        c.arg("-R");
    }
    let t = Instant::now();
    let out = c
        .args(["-t", &pid.to_string(), "-D"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", cairn.display()))?;
    let wall_ms = t.elapsed().as_secs_f64() * 1e3;
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    let _ = std::fs::remove_dir_all(dir);
    if !out.status.success() {
        return Err(format!(
            "{} {cmd} failed ({}):\n{log}",
            cairn.display(),
            out.status
        ));
    }
    Ok((log, wall_ms))
}

/// A dump (-R) and a pre-dump of the tree with `cairn`.
fn time_dumps(cairn: &Path, pid: i32, dir: &Path, t: &mut DumpTimes) -> Result<String> {
    let (log, wall) = cairn_run(cairn, "dump", pid, dir)?;
    let frozen = logged_ms(&log, "dump done: frozen ")?;
    let (plog, _) = cairn_run(cairn, "pre-dump", pid, dir)?;
    let pre = logged_ms(&plog, "pre-dump: frozen ")?;
    t.frozen_ms.push(frozen);
    t.wall_ms.push(wall);
    t.pre_frozen_ms.push(pre);
    Ok(format!(
        "dump frozen {frozen:.1} ms (cairn run {wall:.0} ms), pre-dump frozen {pre:.1} ms"
    ))
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

fn measure_dump(
    cairn: &Path,
    reads: &Path,
    workload: &Path,
    work: &Path,
    (n, fds, pages): (usize, u32, u32),
    args: &DumpArgs,
) -> Result<DumpRow> {
    let runs = args.runs;
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
        let dir = work.join(format!("img-{tag}"));
        let mut times = DumpTimes::default();
        let mut baseline = args.baseline.as_ref().map(|_| DumpTimes::default());
        for i in 0..runs {
            let line = time_dumps(cairn, pid, &dir, &mut times)?;
            eprintln!("xtask: {n} processes, run {}/{runs}: {line}", i + 1);
            if let (Some(b), Some(bt)) = (&args.baseline, &mut baseline) {
                let line = time_dumps(b, pid, &dir, bt)?;
                eprintln!(
                    "xtask: {n} processes, run {}/{runs}, baseline: {line}",
                    i + 1
                );
            }
        }
        Ok(DumpRow {
            procs: n,
            counts,
            reads,
            times,
            baseline,
        })
    })();
    kill_all(pid, &mut child);
    r
}

pub fn bench_dump(args: &[String]) -> Result<()> {
    let args = parse_dump(args)?;
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
            rows.push(measure_dump(&cairn, &reads, &workload, &work, t, &args)?);
        }
        Ok::<_, String>(())
    })();
    let _ = std::fs::remove_dir_all(&work);
    result?;
    println!(
        "| processes | collected | dump pre-checks (ms) | frozen smaps (ms) | frozen fds (ms) | \
         inventory bpf (ms) | inventory proc (ms) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        let g = |k: &str| r.reads.get(k).copied().unwrap_or(f64::NAN);
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            r.procs,
            r.counts,
            g("prechecks"),
            g("smaps"),
            g("fds"),
            g("bpf"),
            g("proc")
        );
    }
    println!();
    let base = args.baseline.is_some();
    println!(
        "| processes | collected | dump frozen (ms) | dump run (ms) | pre-dump frozen (ms) |{}",
        if base {
            " baseline: dump frozen (ms) | dump run (ms) | pre-dump frozen (ms) |"
        } else {
            ""
        }
    );
    println!(
        "|---|---|---|---|---|{}",
        if base { "---|---|---|" } else { "" }
    );
    for r in &rows {
        let cols = |t: &DumpTimes| {
            format!(
                " {:.1} | {:.0} | {:.1} |",
                median(&t.frozen_ms),
                median(&t.wall_ms),
                median(&t.pre_frozen_ms)
            )
        };
        println!(
            "| {} | {} |{}{}",
            r.procs,
            r.counts,
            cols(&r.times),
            r.baseline.as_ref().map(cols).unwrap_or_default()
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
        assert_eq!(logged_ms(log, "dump done: frozen ").unwrap(), 13050.7);
        assert!(logged_ms("nothing", "dump done: frozen ").is_err());
        let a = parse_dump(&[
            "--baseline".into(),
            "/x".into(),
            "--runs".into(),
            "2".into(),
        ])
        .unwrap();
        assert_eq!(
            (a.runs, a.baseline.unwrap()),
            (2, std::path::PathBuf::from("/x"))
        );
        assert!(parse_dump(&["--baseline".into()]).is_err());
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
