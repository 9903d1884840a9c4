//! `cargo xtask bench periodic [--interval DUR] [--checkpoints N]
//! [--sizes 1G,4G] [--rate PERMILLE]` (issue 17, "Measured"): a job of
//! each size under `cairn run --interval DUR --incremental --keep 1`,
//! rewriting `--rate` per mille of its memory every second (default 10:
//! 1%; tests/workloads/bench_periodic.c, incompressible data, a sweep
//! through its memory), until N periodic checkpoints (default 5) are
//! complete; then SIGTERM (the final checkpoint). Prints, from cairn
//! run's own log (`checkpoint ckpt-N complete: frozen X ms, ... (B
//! bytes)`), the first (full) checkpoint, the median frozen time and
//! bytes written of the incremental layers after it, and the final
//! checkpoint. 4 GiB only when `free -g` shows at least 12 GiB available
//! (the machine is shared). Checkpoints go to a directory under the
//! system's temporary directory, removed after each size.
//! `--modes auto,off` (the default): each size with cairn run's
//! `--background-snapshot` so (auto: layers compared by content hash and
//! copied while the job runs; off: layers tracked with uffd-wp and copied
//! frozen, as before stop 21), one row each, with the median time the
//! background copy took.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{
    kill9, median, parse_size, prepare_bench, reap, room_for_large, root, run, size_label, Result,
};

struct Args {
    interval: String,
    checkpoints: usize,
    sizes: Vec<u64>,
    rate: u32,
    modes: Vec<String>,
}

fn parse(args: &[String]) -> Result<Args> {
    let mut a = Args {
        interval: "60s".into(),
        checkpoints: 5,
        sizes: vec![1 << 30, 4 << 30],
        rate: 10,
        modes: vec!["auto".into(), "off".into()],
    };
    let mut it = args.iter();
    while let Some(x) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{x} needs a value"));
        match x.as_str() {
            "--interval" => a.interval = value()?.clone(),
            "--checkpoints" => {
                a.checkpoints = value()?
                    .parse()
                    .ok()
                    .filter(|&n: &usize| n >= 2)
                    .ok_or("--checkpoints wants a number >= 2")?
            }
            "--sizes" => {
                a.sizes = value()?
                    .split(',')
                    .map(parse_size)
                    .collect::<Result<Vec<u64>>>()?
            }
            "--rate" => {
                a.rate = value()?
                    .parse()
                    .ok()
                    .filter(|&n: &u32| n <= 1000)
                    .ok_or("--rate wants per mille, 0 to 1000")?
            }
            "--modes" => {
                a.modes = value()?.split(',').map(str::to_string).collect();
                if a.modes
                    .iter()
                    .any(|m| !["auto", "on", "off"].contains(&m.as_str()))
                {
                    return Err("--modes wants auto, on or off, comma-separated".into());
                }
            }
            other => return Err(format!("bench periodic: unknown argument {other:?}")),
        }
    }
    Ok(a)
}

/// (frozen ms, bytes, a layer, background copy ms) of each "complete"
/// line of cairn run's log.
fn checkpoints(log: &str) -> Vec<(f64, u64, bool, Option<f64>)> {
    log.lines()
        .filter_map(|l| {
            let rest = l.split(" complete: frozen ").nth(1)?;
            let ms = rest.split(" ms").next()?.parse().ok()?;
            let bytes = rest
                .split('(')
                .nth(1)?
                .split(" bytes")
                .next()?
                .parse()
                .ok()?;
            let bg = rest
                .split("memory copied while it ran in ")
                .nth(1)
                .and_then(|r| r.split(" ms").next()?.parse().ok());
            Some((ms, bytes, rest.contains(", a layer on "), bg))
        })
        .collect()
}

struct Row {
    size: u64,
    mode: String,
    full: (f64, u64),
    layers: Vec<(f64, u64)>,
    /// Background copy times of the layers.
    copies: Vec<f64>,
    last: (f64, u64),
}

fn once(
    cairn: &Path,
    workload: &Path,
    work: &Path,
    a: &Args,
    size: u64,
    mode: &str,
) -> Result<Row> {
    let dir = work.join("ck");
    let log = work.join("run.log");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&log);
    let mut child = Command::new(cairn)
        .arg("-o")
        .arg(&log)
        .args(["run", "-D"])
        .arg(&dir)
        .args(["--interval", &a.interval, "--incremental", "--keep", "1"])
        .arg(format!("--background-snapshot={mode}"))
        .arg("--")
        .arg(workload)
        .arg(size.to_string())
        .arg(a.rate.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", cairn.display()))?;
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let r = (|| {
        let end = Instant::now() + Duration::from_secs(3600);
        let mut shown = 0;
        loop {
            let cks = checkpoints(&text());
            for (i, c) in cks.iter().enumerate().skip(shown) {
                eprintln!(
                    "xtask: periodic {} ({mode}) checkpoint {}: frozen {:.1} ms, {:.1} MiB{}{}",
                    size_label(size),
                    i + 1,
                    c.0,
                    c.1 as f64 / (1 << 20) as f64,
                    if c.2 { " (layer)" } else { " (full)" },
                    c.3.map(|ms| format!(", copied in the background in {ms:.0} ms"))
                        .unwrap_or_default()
                );
            }
            shown = cks.len();
            if cks.len() >= a.checkpoints {
                break;
            }
            if let Ok(Some(st)) = child.try_wait() {
                return Err(format!("cairn run ended ({st}): {}", text()));
            }
            if Instant::now() >= end {
                return Err(format!("not {} checkpoints in an hour", a.checkpoints));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let n = checkpoints(&text()).len();
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        if !reap(&mut child, Duration::from_secs(600)) {
            return Err("cairn run did not end after SIGTERM".into());
        }
        let cks = checkpoints(&text());
        if cks.len() <= n {
            return Err(format!("no final checkpoint: {}", text()));
        }
        let periodic = &cks[..n];
        if periodic[0].2 || periodic[1..].iter().any(|c| !c.2) {
            return Err(format!(
                "expected one full checkpoint, then layers: {}",
                text()
            ));
        }
        Ok(Row {
            size,
            mode: mode.to_string(),
            full: (periodic[0].0, periodic[0].1),
            layers: periodic[1..].iter().map(|c| (c.0, c.1)).collect(),
            copies: periodic[1..].iter().filter_map(|c| c.3).collect(),
            last: (cks[n].0, cks[n].1),
        })
    })();
    if r.is_err() {
        // cairn run's job is a child of its own: end both.
        let pid = child.id() as i32;
        let kids =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        kill9(pid);
        for k in kids.split_whitespace().filter_map(|k| k.parse().ok()) {
            kill9(k);
        }
        reap(&mut child, Duration::from_secs(30));
    }
    let _ = std::fs::remove_dir_all(&dir);
    r
}

pub fn bench(args: &[String]) -> Result<()> {
    let mut a = parse(args)?;
    if a.sizes.iter().any(|&s| s > 1 << 30) && !room_for_large("sizes above 1 GiB") {
        a.sizes.retain(|&s| s <= 1 << 30);
    }
    prepare_bench()?;
    let root = root();
    let cairn = root.join("target/release/cairn");
    let workload = root.join("target/release/bench_periodic");
    run(Command::new("gcc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&workload)
        .arg(root.join("tests/workloads/bench_periodic.c")))?;
    let work = std::env::temp_dir().join(format!("cairn-bench-periodic-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let mut rows = Vec::new();
    let mut result = Ok(());
    'sizes: for &size in &a.sizes {
        for mode in &a.modes {
            match once(&cairn, &workload, &work, &a, size, mode) {
                Ok(r) => rows.push(r),
                Err(e) => {
                    result = Err(e);
                    break 'sizes;
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "| job | --background-snapshot | first (full) checkpoint: frozen, written | incremental layers: frozen, written (medians) | layers: copied while the job ran (median) | final checkpoint (SIGTERM): frozen, written |"
    );
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        let f: Vec<f64> = r.layers.iter().map(|l| l.0).collect();
        let b: Vec<f64> = r.layers.iter().map(|l| mib(l.1)).collect();
        let copies = if r.copies.is_empty() {
            "no".to_string()
        } else {
            format!(
                "{} of {}, {:.0} ms",
                r.copies.len(),
                r.layers.len(),
                median(&r.copies)
            )
        };
        println!(
            "| {} | {} | {:.0} ms, {:.0} MiB | {:.0} ms, {:.0} MiB ({} layers) | {copies} | {:.0} ms, {:.0} MiB |",
            size_label(r.size),
            r.mode,
            r.full.0,
            mib(r.full.1),
            median(&f),
            median(&b),
            r.layers.len(),
            r.last.0,
            mib(r.last.1)
        );
    }
    println!(
        "(cairn run --interval {} --incremental --keep 1; {:.1}% of memory rewritten per second)",
        a.interval,
        a.rate as f64 / 10.0
    );
    result
}
