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

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{
    kill9, median, prepare_bench, reap, room_for_large, root, run, runs_value, wait_pidfile, Result,
};

struct Args {
    runs: usize,
}

fn parse(args: &[String]) -> Result<Args> {
    let mut a = Args { runs: 5 };
    let mut it = args.iter();
    while let Some(x) = it.next() {
        match x.as_str() {
            "--runs" => a.runs = runs_value(it.next())?,
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
            let (mut bg, mut off, mut copy, mut wall_bg, mut wall_off) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            // 4 GiB once per mode: the machine is shared.
            let runs = if mib >= 4096 { 1 } else { a.runs };
            for i in 0..runs {
                // Alternate which goes first.
                for &background in if i % 2 == 0 {
                    &[true, false]
                } else {
                    &[false, true]
                } {
                    let (f, c, w) = once(&cairn, &workload, &work, mib, idle, background)?;
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
            lines.push(format!(
                "| {} {} | {:.1} ms | {:.1} ms | {:.0} ms | {:.2} s | {:.2} s |",
                if mib >= 1024 {
                    format!("{} GiB", mib / 1024)
                } else {
                    format!("{mib} MiB")
                },
                if idle { "idle" } else { "writing" },
                median(&bg),
                median(&off),
                median(&copy),
                median(&wall_bg),
                median(&wall_off)
            ));
        }
        Ok::<(), String>(())
    })();
    let _ = std::fs::remove_dir_all(&work);
    println!(
        "| memory | frozen, background snapshot | frozen, frozen copy (=off) | copy after the thaw | dump (background) | dump (=off) |"
    );
    println!("|---|---|---|---|---|---|");
    for l in &lines {
        println!("{l}");
    }
    println!(
        "(medians of {} runs each, alternating; 4 GiB: one run each)",
        a.runs
    );
    result
}
