//! `cargo xtask bench bgsnap [--runs N]` (issue 15, background snapshot):
//! the frozen time of a `--leave-running` dump of 256 MiB, 1 GiB and (when
//! `free -g` shows at least 12 GiB available) 4 GiB of private anonymous
//! memory, with the background snapshot (`--background-snapshot=on`: the
//! tree is frozen only to collect its state and write-protect its memory)
//! and without (`=off`: every page is copied frozen), alternating run by
//! run; medians of `--runs` (default 5) runs (4 GiB: one run each, the
//! machine is shared). The frozen time is cairn's
//! own figure (`stats dump: frozen_ms=`, from the first seize to the
//! thaw); the copy after the thaw is `stats background-snapshot:
//! copy_ms=`. The workload is tests/workloads/mem_rewrite.c: one writer
//! rewriting its memory all the time at 256 MiB and 1 GiB (its writes
//! fault and are served during the copy); idle (`--idle`) at 4 GiB, where
//! a writer could make cairn hold up to 4 GiB more in its side buffer on
//! this shared machine. Images go to a directory under the system's
//! temporary directory, removed after each run.
//!
//! `--baseline PATH`: another cairn binary (e.g. main's) is run too, with
//! the background snapshot, alternating with this one run by run, for a
//! before/after figure on the same machine at the same load. `--skip-off`:
//! no `=off` runs (they copy every page frozen: long at 4 GiB). Each run
//! also prints the split of this cairn's frozen time from its `-v` log
//! (freeze, state collection, write-protection, frozen copy and thaw) and
//! the load average.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{
    kill9, median, prepare_bench, reap, room_for_large, root, run, runs_value, wait_pidfile, Result,
};

struct Args {
    runs: usize,
    baseline: Option<std::path::PathBuf>,
    skip_off: bool,
}

fn parse(args: &[String]) -> Result<Args> {
    let mut a = Args {
        runs: 5,
        baseline: None,
        skip_off: false,
    };
    let mut it = args.iter();
    while let Some(x) = it.next() {
        match x.as_str() {
            "--runs" => a.runs = runs_value(it.next())?,
            "--baseline" => {
                a.baseline = Some(
                    it.next()
                        .ok_or("bench bgsnap: --baseline needs a path")?
                        .into(),
                )
            }
            "--skip-off" => a.skip_off = true,
            other => return Err(format!("bench bgsnap: unknown argument {other:?}")),
        }
    }
    Ok(a)
}

/// The number after `key=` on the line holding `tag`.
fn figure(text: &str, tag: &str, key: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.contains(tag))?;
    let at = line.find(&format!("{key}="))? + key.len() + 1;
    line[at..].split_whitespace().next()?.parse().ok()
}

/// Milliseconds between the first log line holding `from` and the first
/// holding `to` after it (the log's `2026-12-07T05:42:13.316Z` stamps).
fn span_ms(log: &str, from: &str, to: &str) -> Option<f64> {
    let stamp = |l: &str| -> Option<f64> {
        let t = l.split('T').nth(1)?.split('Z').next()?;
        let mut p = t.split(':');
        let h: f64 = p.next()?.parse().ok()?;
        let m: f64 = p.next()?.parse().ok()?;
        let s: f64 = p.next()?.parse().ok()?;
        Some(((h * 60.0 + m) * 60.0 + s) * 1e3)
    };
    let mut lines = log.lines();
    let a = lines.by_ref().find(|l| l.contains(from)).and_then(stamp)?;
    let b = lines.find(|l| l.contains(to)).and_then(stamp)?;
    Some(b - a)
}

/// The split of a background dump's frozen time from its -v log.
fn split(log: &str) -> String {
    let f = |a: &str, b: &str| span_ms(log, a, b).map_or("?".into(), |x| format!("{x:.0}"));
    let armed = log
        .lines()
        .find(|l| l.contains("stats background-snapshot:"))
        .and_then(|l| l.split("armed_stop_ms=").nth(1))
        .and_then(|x| x.split_whitespace().next())
        .unwrap_or("-");
    // "... pages write-protected in X ms; ...": the protection's own time.
    let prot: Option<f64> = log
        .lines()
        .find(|l| l.contains("pages write-protected in "))
        .and_then(|l| l.split("pages write-protected in ").nth(1))
        .and_then(|x| x.split_whitespace().next())
        .and_then(|x| x.parse().ok());
    let upto = span_ms(log, "froze ", "pages write-protected");
    let show = |x: Option<f64>| x.map_or("?".into(), |x| format!("{x:.0}"));
    format!(
        "split ms: seize {}, collection {}, write-protection {}, frozen copy and thaw {}; \
         stopped before the freeze to arm: {armed}",
        log.lines()
            .find(|l| l.contains("dump timings:"))
            .and_then(|l| l.split("freeze ").nth(1))
            .and_then(|x| x.split_whitespace().next())
            .unwrap_or("?"),
        show(upto.zip(prot).map(|(u, p)| u - p)),
        show(prot),
        f("pages write-protected", "contents of "),
    )
}

/// One dump of a fresh workload of `mib` MiB: (frozen ms, copy ms, dump
/// wall-clock s).
fn once(
    cairn: &Path,
    workload: &Path,
    work: &Path,
    mib: u64,
    idle: bool,
    background: bool,
) -> Result<(f64, f64, f64)> {
    let pidfile = work.join("ready.pid");
    let images = work.join("images");
    let _ = std::fs::remove_file(&pidfile);
    let _ = std::fs::remove_dir_all(&images);
    let mut cmd = Command::new(workload);
    cmd.arg("--pidfile")
        .arg(&pidfile)
        .args(["--mib", &mib.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if idle {
        cmd.arg("--idle");
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{}: {e}", workload.display()))?;
    let r = (|| {
        let pid = wait_pidfile(&pidfile, Duration::from_secs(120), || Ok(()))?;
        // Let the writer run a little.
        std::thread::sleep(Duration::from_millis(300));
        let mode = if background { "on" } else { "off" };
        let t = std::time::Instant::now();
        let out = Command::new(cairn)
            .args([
                "dump",
                "-v",
                "--leave-running",
                "-t",
                &pid.to_string(),
                "-D",
            ])
            .arg(&images)
            .arg(format!("--background-snapshot={mode}"))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{}: {e}", cairn.display()))?;
        let wall = t.elapsed().as_secs_f64();
        let err = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(format!("cairn dump failed ({}): {err}", out.status));
        }
        let frozen = figure(&err, "stats dump:", "frozen_ms")
            .ok_or_else(|| format!("no frozen_ms in cairn's output: {err}"))?;
        let copy = figure(&err, "stats background-snapshot:", "copy_ms").unwrap_or(0.0);
        if background && !err.contains("stats background-snapshot:") {
            return Err(format!("the dump did not take the background path: {err}"));
        }
        if background {
            let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
            eprintln!(
                "xtask: {} {}; load {}",
                cairn.display(),
                split(&err),
                load.split_whitespace().next().unwrap_or("?")
            );
        }
        Ok((frozen, copy, wall))
    })();
    kill9(child.id() as i32);
    reap(&mut child, Duration::from_secs(30));
    let _ = std::fs::remove_dir_all(&images);
    r
}

pub fn bench(args: &[String]) -> Result<()> {
    let a = parse(args)?;
    prepare_bench()?;
    let root = root();
    let cairn = root.join("target/release/cairn");
    let workload = root.join("target/release/mem_rewrite");
    run(Command::new("gcc")
        .args(["-O2", "-Wall", "-pthread", "-I"])
        .arg(root.join("tests/workloads"))
        .arg("-o")
        .arg(&workload)
        .arg(root.join("tests/workloads/mem_rewrite.c")))?;
    let work = std::env::temp_dir().join(format!("cairn-bench-bgsnap-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let mut sizes = vec![(256u64, false), (1024, false)];
    if room_for_large("4 GiB") {
        sizes.push((4096, true));
    }
    let mut lines = Vec::new();
    let result = (|| {
        for &(mib, idle) in &sizes {
            let (mut bg, mut off, mut copy, mut wall_bg, mut wall_off, mut base) = (
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
            );
            // 4 GiB once per mode: the machine is shared.
            let runs = if mib >= 4096 { 1 } else { a.runs };
            for i in 0..runs {
                // Alternate which goes first.
                // (binary, background): this cairn with and without, the
                // baseline with.
                let mut order: Vec<(&Path, bool)> = vec![(&cairn, true)];
                if !a.skip_off {
                    order.push((&cairn, false));
                }
                if let Some(b) = &a.baseline {
                    order.push((b, true));
                }
                if i % 2 == 1 {
                    order.reverse();
                }
                for (bin, background) in order {
                    let (f, c, w) = once(bin, &workload, &work, mib, idle, background)?;
                    if bin != cairn.as_path() {
                        eprintln!(
                            "xtask: bgsnap {mib} MiB run {}/{runs} baseline {}: frozen {f:.1} ms",
                            i + 1,
                            bin.display()
                        );
                        base.push(f);
                        continue;
                    }
                    eprintln!(
                        "xtask: bgsnap {mib} MiB{} run {}/{} background={background}: frozen \
                         {f:.1} ms, copy {c:.1} ms, dump {w:.2} s",
                        if idle { " idle" } else { "" },
                        i + 1,
                        runs
                    );
                    if background {
                        bg.push(f);
                        copy.push(c);
                        wall_bg.push(w);
                    } else {
                        off.push(f);
                        wall_off.push(w);
                    }
                }
            }
            let med = |v: &Vec<f64>, unit: &str| {
                if v.is_empty() {
                    "-".to_string()
                } else {
                    format!("{:.1} {unit}", median(v))
                }
            };
            lines.push(format!(
                "| {} {} | {} | {} | {} | {:.0} ms | {:.2} s | {} |",
                if mib >= 1024 {
                    format!("{} GiB", mib / 1024)
                } else {
                    format!("{mib} MiB")
                },
                if idle { "idle" } else { "writing" },
                med(&bg, "ms"),
                med(&base, "ms"),
                med(&off, "ms"),
                median(&copy),
                median(&wall_bg),
                med(&wall_off, "s")
            ));
        }
        Ok::<(), String>(())
    })();
    let _ = std::fs::remove_dir_all(&work);
    println!(
        "| memory | frozen, background snapshot | frozen, baseline (background) | frozen, frozen copy (=off) | copy after the thaw | dump (background) | dump (=off) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for l in &lines {
        println!("{l}");
    }
    println!(
        "(medians of {} runs each, alternating; 4 GiB: one run each)",
        a.runs
    );
    result
}
