//! `cargo xtask bench scaling [--runs N] [--sizes 1G,4G] [--baseline CAIRN]
//! [-- DUMP-ARGS...]`: the page pipeline at two sizes in one run (issue
//! 15). For each size and data kind (incompressible, 2:1), N cycles of
//! start, dump, restore, each with the machine's limits measured just
//! before it (write + fdatasync of SIZE bytes, filling SIZE bytes of fresh
//! memory, memcpy: `limits_once`); with `--baseline`, the restore of the
//! same images by another cairn binary right after ours (old code against
//! new, same page cache, same moment). Prints medians, the ratios
//! dump/write and restore/fill, and the scaling of each time from the
//! first size to the others against the size ratio.
//!
//! A size of 4 GiB or more runs only when /proc/meminfo's MemAvailable is
//! at least 3 x SIZE + 2 GiB (the workload, its restored copy and the
//! page cache of the images); otherwise it is skipped with a note.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{
    children_cpu_s, dir_bytes, ensure_tools, limits_once, median, parse_bench_args, parse_size,
    reap, restore_detached, run, size_label, wait_pidfile, DataKind, Limits, Procs, Result, Run,
    GIB, MIB,
};

struct Args {
    runs: usize,
    sizes: Vec<u64>,
    baseline: Option<PathBuf>,
    dump_args: Vec<String>,
}

/// `--sizes` and `--baseline` are this bench's own; `--runs` and `-- ...`
/// are the common bench arguments (`parse_bench_args`).
fn parse(args: &[String]) -> Result<Args> {
    let mut sizes = vec![GIB, 4 * GIB];
    let mut baseline = None;
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(x) = it.next() {
        match x.as_str() {
            "--" => {
                rest.push(x.clone());
                rest.extend(it.by_ref().cloned());
            }
            "--sizes" => {
                sizes = it
                    .next()
                    .ok_or("--sizes needs a value")?
                    .split(',')
                    .map(parse_size)
                    .collect::<Result<Vec<u64>>>()?
            }
            "--baseline" => {
                baseline = Some(PathBuf::from(it.next().ok_or("--baseline needs a value")?))
            }
            // The common parser knows --size; this bench takes --sizes.
            "--size" => return Err(format!("unknown bench scaling argument {x:?}")),
            _ => rest.push(x.clone()),
        }
    }
    let b = parse_bench_args(&rest)?;
    Ok(Args {
        runs: b.runs,
        sizes,
        baseline,
        dump_args: b.dump_args,
    })
}

/// MemAvailable of /proc/meminfo, in bytes.
fn mem_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb << 10)
}

struct Row {
    kind: DataKind,
    size: u64,
    runs: Vec<Run>,
    /// Restore time of the baseline binary, per run.
    base_restore: Vec<f64>,
}

impl Row {
    fn med(&self, f: fn(&Run) -> f64) -> f64 {
        median(&self.runs.iter().map(f).collect::<Vec<_>>())
    }
}

pub fn bench(args: &[String]) -> Result<()> {
    let a = parse(args)?;
    ensure_tools()?;
    run(super::cargo().args(["build", "--release"]))?;
    let root = super::root();
    let cairn = root.join("target/release/cairn");
    let workload = root.join("target/release/bench_mem");
    run(Command::new("gcc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&workload)
        .arg(root.join("tests/workloads/bench_mem.c")))?;
    let work = std::env::temp_dir().join(format!("cairn-bench-scaling-{}", std::process::id()));
    std::fs::create_dir(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let mut procs = Procs::default();
    let result = (|| {
        let mut rows = Vec::new();
        for &size in &a.sizes {
            let need = 3 * size + 2 * GIB;
            if size >= 4 * GIB && mem_available() < need {
                eprintln!(
                    "xtask: {} skipped: MemAvailable {} MiB, needs {} MiB",
                    size_label(size),
                    mem_available() / MIB,
                    need / MIB
                );
                continue;
            }
            for kind in [DataKind::Incompressible, DataKind::Compressible] {
                let mut row = Row {
                    kind,
                    size,
                    runs: Vec::new(),
                    base_restore: Vec::new(),
                };
                for i in 0..a.runs {
                    let limits = limits_once(&work, size)?;
                    let base = a.baseline.as_deref();
                    let (mut r, b) =
                        cycle(&cairn, base, &workload, &work, kind, size, &mut procs, &a)?;
                    r.limits = limits;
                    eprintln!(
                        "xtask: {} {} run {}/{}: dump {:.2} s (cpu {:.2} s), restore {:.2} s{}, \
                         image {:.0} MiB; write+fdatasync {:.2} s, fill {:.2} s, memcpy {:.2} s",
                        size_label(size),
                        kind.label(),
                        i + 1,
                        a.runs,
                        r.dump_s,
                        r.dump_cpu_s,
                        r.restore_s,
                        b.map_or(String::new(), |b| format!(" (baseline {b:.2} s)")),
                        r.image_bytes as f64 / MIB as f64,
                        limits.write_s,
                        limits.fill_s,
                        limits.memcpy_s
                    );
                    row.runs.push(r);
                    row.base_restore.extend(b);
                }
                rows.push(row);
            }
        }
        Ok::<_, String>(rows)
    })();
    drop(procs);
    let _ = std::fs::remove_dir_all(&work);
    let rows = result?;
    print!("{}", table(&rows, a.baseline.is_some()));
    Ok(())
}

/// One cycle (the steps of `bench_once`): start the workload, our dump,
/// our restore, then (with a baseline) the baseline's restore of the same
/// images; the images are removed.
#[allow(clippy::too_many_arguments)]
fn cycle(
    cairn: &Path,
    baseline: Option<&Path>,
    workload: &Path,
    work: &Path,
    kind: DataKind,
    size: u64,
    procs: &mut Procs,
    a: &Args,
) -> Result<(Run, Option<f64>)> {
    let ready = work.join("workload.pid");
    let images = work.join("images");
    let log = work.join("workload.log");
    let _ = std::fs::remove_file(&ready);
    let _ = std::fs::remove_dir_all(&images);
    let log_f = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let child = Command::new(workload)
        .arg(size.to_string())
        .arg(kind.arg())
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
            Ok(Some(st)) => Err(format!("bench_mem exited ({st})")),
            _ => Ok(()),
        }
    })?;
    let cpu0 = children_cpu_s();
    let t = Instant::now();
    run(Command::new(cairn)
        .args(["dump", "-t", &pid.to_string(), "-D"])
        .arg(&images)
        .args(&a.dump_args))?;
    let dump_s = t.elapsed().as_secs_f64();
    let dump_cpu_s = children_cpu_s() - cpu0;
    if !reap(&mut procs.children[idx], Duration::from_secs(30)) {
        return Err(format!("cairn dump left pid {pid} running"));
    }
    let _ = procs.children.remove(idx).wait();
    let image_bytes = dir_bytes(&images)?;
    let mut restore = |bin: &Path, tag: &str| -> Result<f64> {
        let pidfile = work.join(format!("restored-{tag}.pid"));
        let _ = std::fs::remove_file(&pidfile);
        let (p, s) = restore_detached(procs, bin, &images, &pidfile, Duration::from_secs(600))?;
        procs.kill_other(p);
        Ok(s)
    };
    let restore_s = restore(cairn, "cairn")?;
    let base = match baseline {
        Some(b) => Some(restore(b, "baseline")?),
        None => None,
    };
    let _ = std::fs::remove_dir_all(&images);
    Ok((
        Run {
            dump_s,
            dump_cpu_s,
            restore_s,
            image_bytes,
            limits: Limits::default(),
        },
        base,
    ))
}

fn table(rows: &[Row], baseline: bool) -> String {
    let mut t = String::from(
        "| data | memory | runs | dump (s) | write+fdatasync (s) | dump/write | restore (s) | \
         fill (s) | restore/fill |",
    );
    if baseline {
        t.push_str(" baseline restore (s) | restore/baseline |");
    }
    t.push_str(" x first size: dump | restore | size |\n|");
    let cols = if baseline { 14 } else { 12 };
    t.push_str(&"---|".repeat(cols));
    t.push('\n');
    for r in rows {
        let dump = r.med(|x| x.dump_s);
        let restore = r.med(|x| x.restore_s);
        let write = r.med(|x| x.limits.write_s);
        let fill = r.med(|x| x.limits.fill_s);
        t.push_str(&format!(
            "| {} | {} | {} | {dump:.2} | {write:.2} | {:.2}x | {restore:.2} | {fill:.2} | {:.2}x |",
            r.kind.label(),
            size_label(r.size),
            r.runs.len(),
            dump / write,
            restore / fill
        ));
        if baseline {
            let b = median(&r.base_restore);
            t.push_str(&format!(" {b:.2} | {:.2}x |", restore / b));
        }
        // Scaling against the first size of the same kind.
        match rows.iter().find(|f| f.kind == r.kind) {
            Some(f) if f.size != r.size => t.push_str(&format!(
                " {:.2}x | {:.2}x | {:.0}x |\n",
                dump / f.med(|x| x.dump_s),
                restore / f.med(|x| x.restore_s),
                r.size as f64 / f.size as f64
            )),
            _ => t.push_str(" - | - | - |\n"),
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_own_and_common_arguments() {
        let a = parse(&args(&[
            "--sizes",
            "64M,1G",
            "--runs",
            "2",
            "--baseline",
            "/x/cairn",
            "--",
            "--compress-level",
            "-1",
        ]))
        .unwrap();
        assert_eq!(a.sizes, vec![64 * MIB, GIB]);
        assert_eq!(a.runs, 2);
        assert_eq!(a.baseline, Some(PathBuf::from("/x/cairn")));
        assert_eq!(a.dump_args, args(&["--compress-level", "-1"]));
        let d = parse(&[]).unwrap();
        assert_eq!((d.runs, d.sizes, d.baseline), (3, vec![GIB, 4 * GIB], None));
        for bad in [
            &["--runs", "0"][..],
            &["--runs"],
            &["--sizes"],
            &["--size", "1G"],
            &["--bogus"],
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?}");
        }
        // After "--" everything is cairn's, even this bench's own names.
        let a = parse(&args(&["--", "--sizes", "1G"])).unwrap();
        assert_eq!(a.dump_args, args(&["--sizes", "1G"]));
        assert_eq!(a.sizes, vec![GIB, 4 * GIB]);
    }
}
