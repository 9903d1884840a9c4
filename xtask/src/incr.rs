//! `cargo xtask bench incremental [--runs N] [--size SIZE] [--dirty PCT]`:
//! a full dump against a pre-dump plus a final dump after the workload
//! (`tests/workloads/bench_incr.c`, SIZE of incompressible memory) rewrote
//! PCT percent of its pages, for every dirty-tracking mechanism this
//! kernel has. Prints each run, then medians: frozen time and image size
//! of the full dump, the pre-dump and the final dump, and the final dump's
//! share of the full one; and the restore time from the chain.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{
    dir_bytes, kill9, median, parse_size, prepare_bench, reap, restore_detached, root, run,
    size_label, wait_pidfile, Procs, Result, GIB, MIB,
};

struct Args {
    runs: usize,
    size: u64,
    dirty: u32,
}

fn parse(args: &[String]) -> Result<Args> {
    let mut a = Args {
        runs: 3,
        size: 4 * GIB,
        dirty: 5,
    };
    let mut it = args.iter();
    while let Some(x) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{x} needs a value"));
        match x.as_str() {
            "--runs" => {
                a.runs = value()?.parse().map_err(|_| "--runs wants a number")?;
                if a.runs == 0 {
                    return Err("--runs must be at least 1".into());
                }
            }
            "--size" => a.size = parse_size(value()?)?,
            "--dirty" => {
                a.dirty = value()?.parse().map_err(|_| "--dirty wants a percentage")?;
                if a.dirty > 100 {
                    return Err("--dirty is a percentage".into());
                }
            }
            other => return Err(format!("unknown argument {other:?} for bench incremental")),
        }
    }
    Ok(a)
}

/// Frozen time and image size of one cairn command, from its `-v` stats line.
#[derive(Clone, Copy, Default)]
struct Stat {
    frozen_ms: f64,
    bytes: u64,
}

fn stats_of(stderr: &str, what: &str) -> Result<Stat> {
    let line = stderr
        .lines()
        .find(|l| l.contains(&format!("stats {what}:")))
        .ok_or_else(|| format!("no stats line for {what} in:\n{stderr}"))?;
    let field = |k: &str| -> Option<&str> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
    };
    Ok(Stat {
        frozen_ms: field("frozen_ms")
            .and_then(|v| v.parse().ok())
            .ok_or("bad frozen_ms")?,
        bytes: field("image_bytes")
            .and_then(|v| v.parse().ok())
            .ok_or("bad image_bytes")?,
    })
}

fn cairn_stat(cairn: &Path, args: &[&str], dir: &Path, what: &str) -> Result<Stat> {
    let out = Command::new(cairn)
        .arg("-v")
        .args(args)
        .arg("-D")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", cairn.display()))?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("cairn {args:?} failed ({}):\n{err}", out.status));
    }
    let s = stats_of(&err, what)?;
    // What is in the directory once the command is done.
    Ok(Stat {
        bytes: dir_bytes(dir)?,
        ..s
    })
}

/// Mechanisms this kernel has, best first (from `cairn check --json`).
fn mechanisms(cairn: &Path) -> Result<Vec<&'static str>> {
    let out = Command::new(cairn)
        .args(["check", "--json"])
        .output()
        .map_err(|e| format!("cairn check: {e}"))?;
    let j = String::from_utf8_lossy(&out.stdout);
    let has = |f: &str| j.contains(&format!("\"{f}\":{{\"available\":true"));
    let mut v = Vec::new();
    if has("soft_dirty") {
        v.push("soft-dirty");
    }
    if has("uffd_wp_async") && has("pagemap_scan") {
        v.push("uffd-wp");
    }
    v.push("hash");
    Ok(v)
}

struct RunResult {
    full: Stat,
    pre: Stat,
    last: Stat,
    restore_s: f64,
}

pub fn bench(args: &[String]) -> Result<()> {
    let a = parse(args)?;
    prepare_bench()?;
    let root = root();
    let cairn = root.join("target/release/cairn");
    let workload = root.join("target/release/bench_incr");
    run(Command::new("gcc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&workload)
        .arg(root.join("tests/workloads/bench_incr.c")))?;
    let mechs = mechanisms(&cairn)?;
    eprintln!(
        "xtask: bench incremental: {} of incompressible memory, {}% rewritten, mechanisms: {}",
        size_label(a.size),
        a.dirty,
        mechs.join(", ")
    );
    let work = std::env::temp_dir().join(format!("cairn-bench-incr-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let mut procs = Procs::default();
    let result = (|| {
        let mut rows = Vec::new();
        for &m in &mechs {
            let mut runs = Vec::new();
            for i in 0..a.runs {
                let r = once(&cairn, &workload, &work, m, &a, &mut procs)?;
                eprintln!(
                    "xtask: {m} run {}/{}: full dump frozen {:.0} ms, {:.0} MiB; pre-dump frozen {:.1} ms, {:.0} MiB; final dump frozen {:.0} ms, {:.1} MiB; restore {:.2} s",
                    i + 1,
                    a.runs,
                    r.full.frozen_ms,
                    r.full.bytes as f64 / MIB as f64,
                    r.pre.frozen_ms,
                    r.pre.bytes as f64 / MIB as f64,
                    r.last.frozen_ms,
                    r.last.bytes as f64 / MIB as f64,
                    r.restore_s
                );
                runs.push(r);
            }
            rows.push((m, runs));
        }
        Ok::<_, String>(rows)
    })();
    drop(procs);
    let _ = std::fs::remove_dir_all(&work);
    let rows = result?;
    let med = |v: &[RunResult], f: &dyn Fn(&RunResult) -> f64| {
        median(&v.iter().map(f).collect::<Vec<_>>())
    };
    let mut table = String::from(
        "| mechanism | memory | rewritten | runs | full dump frozen (ms) | full image (MiB) | pre-dump frozen (ms) | pre-dump image (MiB) | final dump frozen (ms) | final image (MiB) | final/full frozen | final/full image | restore from chain (s) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (m, runs) in &rows {
        let full_f = med(runs, &|r| r.full.frozen_ms);
        let full_b = med(runs, &|r| r.full.bytes as f64);
        let pre_f = med(runs, &|r| r.pre.frozen_ms);
        let pre_b = med(runs, &|r| r.pre.bytes as f64);
        let last_f = med(runs, &|r| r.last.frozen_ms);
        let last_b = med(runs, &|r| r.last.bytes as f64);
        let rest = med(runs, &|r| r.restore_s);
        println!(
            "bench incremental {m} {} {}%: full dump frozen {full_f:.0} ms, image {:.0} MiB; pre-dump frozen {pre_f:.1} ms, image {:.0} MiB; final dump frozen {last_f:.0} ms ({:.1}% of full), image {:.1} MiB ({:.1}% of full); restore {rest:.2} s",
            size_label(a.size),
            a.dirty,
            full_b / MIB as f64,
            pre_b / MIB as f64,
            100.0 * last_f / full_f,
            last_b / MIB as f64,
            100.0 * last_b / full_b
        );
        table.push_str(&format!(
            "| {m} | {} | {}% | {} | {full_f:.0} | {:.0} | {pre_f:.1} | {:.0} | {last_f:.0} | {:.1} | {:.1}% | {:.1}% | {rest:.2} |\n",
            size_label(a.size),
            a.dirty,
            runs.len(),
            full_b / MIB as f64,
            pre_b / MIB as f64,
            last_b / MIB as f64,
            100.0 * last_f / full_f,
            100.0 * last_b / full_b
        ));
    }
    println!();
    print!("{table}");
    Ok(())
}

/// One workload: full dump (-R), pre-dump, rewrite, final dump, restore.
fn once(
    cairn: &Path,
    workload: &Path,
    work: &Path,
    mech: &str,
    a: &Args,
    procs: &mut Procs,
) -> Result<RunResult> {
    let ready = work.join("workload.pid");
    let rewritten = PathBuf::from(format!("{}.rewritten", ready.display()));
    let restored_file = work.join("restored.pid");
    let (full, ck) = (work.join("full"), work.join("ck"));
    let log = work.join("workload.log");
    for p in [&ready, &rewritten, &restored_file] {
        let _ = std::fs::remove_file(p);
    }
    for d in [&full, &ck] {
        let _ = std::fs::remove_dir_all(d);
    }
    std::fs::create_dir_all(&ck).map_err(|e| format!("{}: {e}", ck.display()))?;
    let log_f = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let child = Command::new(workload)
        .arg(a.size.to_string())
        .arg(a.dirty.to_string())
        .arg("--pidfile")
        .arg(&ready)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_f)
        .spawn()
        .map_err(|e| format!("{}: {e}", workload.display()))?;
    procs.children.push(child);
    let idx = procs.children.len() - 1;
    let pid = wait_pidfile(&ready, Duration::from_secs(600), || {
        match procs.children[idx].try_wait() {
            Ok(Some(st)) => Err(format!("bench_incr exited ({st})")),
            _ => Ok(()),
        }
    })?;
    let p = pid.to_string();
    let flag = format!("--dirty-tracking={mech}");

    let full_s = cairn_stat(cairn, &["dump", "-t", &p, "-R"], &full, "dump")?;
    let _ = std::fs::remove_dir_all(&full);
    let pre = cairn_stat(
        cairn,
        &["pre-dump", "-t", &p, &flag],
        &ck.join("1"),
        "pre-dump",
    )?;
    kill_usr1(pid)?;
    let end = Instant::now() + Duration::from_secs(600);
    while !rewritten.exists() {
        if Instant::now() > end {
            return Err("the workload did not rewrite its pages".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let last = cairn_stat(
        cairn,
        &[
            "dump",
            "-t",
            &p,
            "--prev-images-dir",
            "../1",
            "--track-mem",
            &flag,
        ],
        &ck.join("2"),
        "dump",
    )?;
    if !reap(&mut procs.children[idx], Duration::from_secs(10)) {
        return Err(format!("cairn dump left pid {pid} running"));
    }
    let _ = procs.children.remove(idx).wait();

    let (restored, restore_s) = restore_detached(
        procs,
        cairn,
        &ck.join("2"),
        &restored_file,
        Duration::from_secs(600),
    )?;
    procs.kill_other(restored);
    let _ = std::fs::remove_dir_all(&ck);
    Ok(RunResult {
        full: full_s,
        pre,
        last,
        restore_s,
    })
}

fn kill_usr1(pid: i32) -> Result<()> {
    let st = Command::new("kill")
        .args(["-USR1", &pid.to_string()])
        .status()
        .map_err(|e| format!("kill: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        kill9(pid);
        Err(format!("kill -USR1 {pid} failed"))
    }
}
