//! `cargo xtask bench pair [--runs N] [--sizes MIB,MIB]` (issue 18, process pairs): the
//! takeover time of `cairn pair`, from the primary's death (SIGKILL sent
//! by the bench) to the backup running (the first record the program
//! writes after it), for programs of 1 MiB, 1 GiB and (when `free -g`
//! shows at least 12 GiB available) 4 GiB of written private memory;
//! medians of `--runs` takeovers (default 3; 4 GiB: one). The program is
//! tests/workloads/pair_counter.c, one step per millisecond, each step
//! writing its count and CLOCK_REALTIME into its progress file. The
//! interval is long enough (1 s, 20 s, 60 s) that one checkpoint and one
//! held backup exist when the primary is killed (at most two copies of
//! the program's memory on this shared machine); the kill comes 300 ms
//! after the backup is ready. Also reported: cairn pair's own figure
//! (from noticing the primary's end to the backup's `ok`), the time to
//! prepare (restore and hold) a backup, and the work lost (steps between
//! the kill and the backup's checkpoint). The kill is sent by `kill -KILL`
//! (xtask is std only): the time it takes to start is counted in the
//! takeover.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{kill9, median, prepare_bench, reap, room_for_large, root, run, runs_value, Result};

struct Args {
    runs: usize,
    /// Program sizes in MiB (`--sizes 1,1024`); default 1, 1024 and
    /// 4096 when memory allows.
    sizes: Option<Vec<u64>>,
}

fn parse(args: &[String]) -> Result<Args> {
    let mut a = Args {
        runs: 3,
        sizes: None,
    };
    let mut it = args.iter();
    while let Some(x) = it.next() {
        match x.as_str() {
            "--runs" => a.runs = runs_value(it.next())?,
            "--sizes" => {
                let v = it.next().ok_or("--sizes wants MiB,MiB,...")?;
                a.sizes = Some(
                    v.split(',')
                        .map(|x| x.parse().map_err(|_| format!("--sizes: {x:?}")))
                        .collect::<Result<_>>()?,
                );
            }
            other => return Err(format!("bench pair: unknown argument {other:?}")),
        }
    }
    Ok(a)
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// (count, realtime ns) of the progress file.
fn progress(p: &Path) -> Option<(u64, u128)> {
    let s = std::fs::read_to_string(p).ok()?;
    let mut it = s.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

fn count(log: &Path, what: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches(what)
        .count()
}

/// The number before " ms" after `tag` in the last line holding `tag`.
fn figure(log: &Path, tag: &str, before: &str) -> Option<f64> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().rev().find(|l| l.contains(tag))?;
    let at = line.find(before)?;
    line[..at].rsplit([' ', '(']).next()?.parse().ok()
}

fn wait_for(log: &Path, what: &str, n: usize, timeout: Duration) -> Result<()> {
    let end = Instant::now() + timeout;
    while count(log, what) < n {
        if Instant::now() > end {
            return Err(format!(
                "{n} x {what:?} not in {} after {timeout:?}",
                log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Per takeover: (takeover ms measured by the bench, cairn's ms, backup
/// preparation ms, steps lost).
type Sample = (f64, f64, f64, u64);

fn pair_runs(cairn: &Path, prog: &Path, work: &Path, mib: u64, runs: usize) -> Result<Vec<Sample>> {
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
    let log = work.join("pair.log");
    let progress_file = work.join("progress");
    let pidfile = work.join("primary.pid");
    let interval = match mib {
        m if m >= 4096 => "60s",
        m if m >= 1024 => "20s",
        _ => "1s",
    };
    let mut child = Command::new(cairn)
        .arg("-v")
        .arg("-o")
        .arg(&log)
        .args(["pair", "--interval", interval, "-D"])
        .arg(work.join("ck"))
        .arg("--pidfile")
        .arg(&pidfile)
        .arg("--")
        .arg(prog)
        .arg(&progress_file)
        .args(["1", "0", &mib.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", cairn.display()))?;
    let r = (|| {
        let mut out = Vec::new();
        for n in 1..=runs {
            wait_for(&log, "backup ready", n, Duration::from_secs(600))?;
            std::thread::sleep(Duration::from_millis(300));
            let prepared = figure(&log, "backup ready", " ms").unwrap_or(f64::NAN);
            let pid: i32 = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or("no pid file")?;
            let (before, _) = progress(&progress_file).ok_or("no progress")?;
            let t0 = now_ns();
            kill9(pid);
            let end = Instant::now() + Duration::from_secs(120);
            let (resumed, at) = loop {
                // The backup's first record: written after the kill, with
                // a count from its checkpoint (before the last one read; the
                // checkpoint is at least 300 ms older), not a last record of
                // the dying primary.
                if let Some((c, t)) = progress(&progress_file) {
                    if t > t0 && c <= before {
                        break (c, t);
                    }
                }
                if Instant::now() > end {
                    return Err(format!("no takeover {n} in 120 s: see {}", log.display()));
                }
                std::thread::sleep(Duration::from_micros(200));
            };
            wait_for(&log, "takeover ", n, Duration::from_secs(30))?;
            let own = figure(&log, "takeover ", " ms after").unwrap_or(f64::NAN);
            let ms = (at - t0) as f64 / 1e6;
            let lost = before.saturating_sub(resumed.saturating_sub(1));
            eprintln!(
                "xtask: pair {mib} MiB takeover {n}/{runs}: {ms:.1} ms (cairn: {own:.1} ms), \
                 backup prepared in {prepared:.0} ms, {lost} steps of 1 ms lost"
            );
            out.push((ms, own, prepared, lost));
        }
        Ok(out)
    })();
    kill9(child.id() as i32);
    reap(&mut child, Duration::from_secs(60));
    // Its inits died with it (PDEATHSIG); wait for the memory to go.
    std::thread::sleep(Duration::from_secs(1));
    let _ = std::fs::remove_dir_all(work);
    r
}

pub fn bench(args: &[String]) -> Result<()> {
    let a = parse(args)?;
    prepare_bench()?;
    let root = root();
    let cairn = root.join("target/release/cairn");
    let prog = root.join("target/release/pair_counter");
    run(Command::new("gcc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&prog)
        .arg(root.join("tests/workloads/pair_counter.c")))?;
    let work = std::env::temp_dir().join(format!("cairn-bench-pair-{}", std::process::id()));
    let mut sizes = a.sizes.clone().unwrap_or_else(|| vec![1u64, 1024, 4096]);
    if sizes.contains(&4096) && !room_for_large("4 GiB") {
        sizes.retain(|&m| m < 4096);
    }
    let mut lines = Vec::new();
    for &mib in &sizes {
        let runs = if mib >= 4096 { 1 } else { a.runs };
        let s = pair_runs(&cairn, &prog, &work, mib, runs)?;
        let col = |f: fn(&Sample) -> f64| median(&s.iter().map(f).collect::<Vec<_>>());
        lines.push(format!(
            "| {} | {:.1} ms | {:.1} ms | {:.0} ms | {:.0} ms | {} |",
            if mib >= 1024 {
                format!("{} GiB", mib / 1024)
            } else {
                format!("{mib} MiB")
            },
            col(|x| x.0),
            col(|x| x.1),
            col(|x| x.2),
            col(|x| x.3 as f64),
            runs
        ));
    }
    println!("| program | takeover (kill to running) | cairn's figure | backup prepared in | work lost | takeovers |");
    println!("|---|---|---|---|---|---|");
    for l in lines {
        println!("{l}");
    }
    Ok(())
}
