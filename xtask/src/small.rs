//! `cargo xtask bench small [--runs N] [--procs N] [--baseline CAIRN]`
//! (issue 15): dump and
//! restore of a single process with 1 MiB of memory, on the idle machine
//! and with N (default 3,000) extra sleeping processes, the medians of
//! `--runs` (default 11) runs each: wall-clock time and CPU time (user +
//! system of the cairn process and everything it waited for, from
//! wait4's rusage). CRIU is run the same way, alternating with cairn, if
//! `criu check` passes, and so is another cairn binary given with
//! `--baseline` (an older build, to compare). The images go to a directory under the system's
//! temporary directory and are durable (cairn syncs them; CRIU does not).
//!
//! The helper programs are C sources compiled into target/release: the
//! workload (1 MiB filled with a pattern, then pause), the spawner of the
//! extra processes (it kills them by pid on SIGTERM) and a runner that
//! times a command with wait4.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{kill9, median, prepare_bench, reap, root, run, wait_gone, wait_pidfile, Result};

const WORKLOAD_C: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc != 2) return 2;
    for (int fd = 3; fd < 1024; fd++) close(fd);
    setsid();
    size_t len = 1 << 20;
    unsigned char *p = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 3;
    for (size_t i = 0; i < len; i++) p[i] = (unsigned char)(i * 7 + i / 4096);
    char tmp[4096], buf[32];
    snprintf(tmp, sizeof tmp, "%s.tmp", argv[1]);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return 4;
    int n = snprintf(buf, sizeof buf, "%d\n", getpid());
    if (write(fd, buf, n) != n || close(fd) != 0 || rename(tmp, argv[1]) != 0) return 5;
    for (;;) pause();
}
"#;

const SPAWNER_C: &str = r#"
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static volatile sig_atomic_t done;
static void on_term(int s) { (void)s; done = 1; }
int main(int argc, char **argv) {
    if (argc != 2) return 2;
    int n = atoi(argv[1]), made = 0;
    pid_t *kids = calloc(n > 0 ? n : 1, sizeof *kids);
    struct sigaction sa = {0};
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, 0);
    for (int i = 0; i < n; i++) {
        pid_t p = fork();
        if (p == 0) {
            signal(SIGTERM, SIG_DFL);
            for (;;) pause();
        }
        if (p < 0) { perror("fork"); break; }
        kids[made++] = p;
    }
    printf("ready %d\n", made);
    fflush(stdout);
    while (!done) pause();
    for (int i = 0; i < made; i++) kill(kids[i], SIGKILL);
    for (int i = 0; i < made; i++) waitpid(kids[i], 0, 0);
    return 0;
}
"#;

const RUNNER_C: &str = r#"
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc < 3) return 2;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    pid_t p = fork();
    if (p == 0) { execvp(argv[2], argv + 2); _exit(127); }
    if (p < 0) return 3;
    int st; struct rusage ru;
    if (wait4(p, &st, 0, &ru) != p) return 4;
    clock_gettime(CLOCK_MONOTONIC, &b);
    FILE *f = fopen(argv[1], "w");
    if (!f) return 5;
    fprintf(f, "%lld %lld %lld %d\n",
            (long long)(b.tv_sec - a.tv_sec) * 1000000 + (b.tv_nsec - a.tv_nsec) / 1000,
            (long long)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec,
            (long long)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec,
            WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    return fclose(f) == 0 ? 0 : 6;
}
"#;

/// Compiles one of the C sources above into target/release/NAME.
fn compile(name: &str, src: &str, work: &Path) -> Result<PathBuf> {
    let c = work.join(format!("{name}.c"));
    std::fs::write(&c, src).map_err(|e| format!("{}: {e}", c.display()))?;
    let bin = root().join("target/release").join(name);
    run(Command::new("gcc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&bin)
        .arg(&c))?;
    Ok(bin)
}

struct Args {
    runs: usize,
    procs: usize,
    baseline: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Args> {
    let (mut runs, mut procs, mut baseline) = (11usize, 3000usize, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |what: &str| -> Result<usize> {
            it.next()
                .ok_or_else(|| format!("{what} needs a value"))?
                .parse()
                .map_err(|_| format!("{what} wants a number"))
        };
        match a.as_str() {
            "--runs" => runs = num("--runs")?,
            "--procs" => procs = num("--procs")?,
            "--baseline" => {
                baseline = Some(PathBuf::from(
                    it.next().ok_or("--baseline needs a cairn binary")?,
                ))
            }
            other => return Err(format!("bench small: unknown argument {other:?}")),
        }
    }
    if runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    Ok(Args {
        runs,
        procs,
        baseline,
    })
}

/// Wall and CPU (user + system) time of one command, in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Timed {
    wall_ms: f64,
    cpu_ms: f64,
}

/// Runs `cmd` under the runner; an error unless it exits 0.
fn timed(runner: &Path, out: &Path, cmd: &[&std::ffi::OsStr]) -> Result<Timed> {
    let _ = std::fs::remove_file(out);
    let log = out.with_extension("log");
    let log_f = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let st = Command::new(runner)
        .arg(out)
        .args(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_f)
        .status()
        .map_err(|e| format!("{}: {e}", runner.display()))?;
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let v: Vec<i64> = text
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    if !st.success() || v.len() != 4 || v[3] != 0 {
        return Err(format!(
            "{:?} failed ({st}, {text:?}): {}",
            cmd,
            std::fs::read_to_string(&log).unwrap_or_default().trim()
        ));
    }
    Ok(Timed {
        wall_ms: v[0] as f64 / 1e3,
        cpu_ms: (v[1] + v[2]) as f64 / 1e3,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Cairn,
    /// Another cairn binary (`--baseline`).
    Baseline,
    Criu,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Cairn => "cairn",
            Tool::Baseline => "baseline",
            Tool::Criu => "criu",
        }
    }
}

struct Env<'a> {
    cairn: &'a Path,
    baseline: Option<&'a Path>,
    workload: &'a Path,
    runner: &'a Path,
    work: &'a Path,
}

/// Starts the workload, dumps it (which kills it), restores it detached,
/// checks the restored process runs and kills it.
fn once(e: &Env<'_>, tool: Tool) -> Result<(Timed, Timed)> {
    let ready = e.work.join("workload.pid");
    let restored_file = e.work.join("restored.pid");
    let images = e.work.join("images");
    let _ = std::fs::remove_file(&ready);
    let _ = std::fs::remove_file(&restored_file);
    let _ = std::fs::remove_dir_all(&images);
    let mut child = Command::new(e.workload)
        .arg(&ready)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|err| format!("{}: {err}", e.workload.display()))?;
    let pid = match wait_pidfile(&ready, Duration::from_secs(30), || Ok(())) {
        Ok(p) => p,
        Err(err) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(err);
        }
    };
    let pid_s = pid.to_string();
    let bin = match (tool, e.baseline) {
        (Tool::Baseline, Some(b)) => b,
        _ => e.cairn,
    };
    let (dump_cmd, restore_cmd): (Vec<&std::ffi::OsStr>, Vec<&std::ffi::OsStr>) = match tool {
        Tool::Cairn | Tool::Baseline => (
            vec![
                bin.as_os_str(),
                "dump".as_ref(),
                "-t".as_ref(),
                pid_s.as_ref(),
                "-D".as_ref(),
                images.as_os_str(),
            ],
            vec![
                bin.as_os_str(),
                "restore".as_ref(),
                "-D".as_ref(),
                images.as_os_str(),
                "-d".as_ref(),
                "--pidfile".as_ref(),
                restored_file.as_os_str(),
            ],
        ),
        Tool::Criu => (
            vec![
                "criu".as_ref(),
                "dump".as_ref(),
                "-t".as_ref(),
                pid_s.as_ref(),
                "-D".as_ref(),
                images.as_os_str(),
            ],
            vec![
                "criu".as_ref(),
                "restore".as_ref(),
                "-D".as_ref(),
                images.as_os_str(),
                "-d".as_ref(),
                "--pidfile".as_ref(),
                restored_file.as_os_str(),
            ],
        ),
    };
    if tool == Tool::Criu {
        std::fs::create_dir_all(&images).map_err(|err| format!("{}: {err}", images.display()))?;
    }
    let dump = timed(e.runner, &e.work.join("dump.out"), &dump_cmd);
    if dump.is_err() || !reap(&mut child, Duration::from_secs(10)) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(dump
            .err()
            .unwrap_or_else(|| format!("the dump left pid {pid} running")));
    }
    let restore = timed(e.runner, &e.work.join("restore.out"), &restore_cmd)?;
    let restored = wait_pidfile(&restored_file, Duration::from_secs(10), || Ok(()))?;
    let alive = std::fs::read_to_string(format!("/proc/{restored}/stat"))
        .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('S')));
    kill9(restored);
    wait_gone(restored, Duration::from_secs(10));
    if !alive {
        return Err(format!(
            "{}: the restored pid {restored} does not sleep",
            tool.name()
        ));
    }
    let _ = std::fs::remove_dir_all(&images);
    Ok((dump?, restore))
}

/// The extra processes: started, and killed (by the spawner, by pid) on
/// drop.
struct Crowd(Child);

impl Crowd {
    fn start(spawner: &Path, n: usize) -> Result<Crowd> {
        let mut c = Command::new(spawner)
            .arg(n.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}: {e}", spawner.display()))?;
        let mut line = String::new();
        if let Some(out) = c.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let crowd = Crowd(c);
        let made: usize = line
            .trim()
            .strip_prefix("ready ")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if made != n {
            return Err(format!(
                "the spawner made {made} of {n} processes ({line:?})"
            ));
        }
        Ok(crowd)
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        if !reap(&mut self.0, Duration::from_secs(60)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn criu_works() -> bool {
    Command::new("criu")
        .arg("check")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Medians of one tool under one condition.
struct Row {
    tool: Tool,
    machine: String,
    dump: Timed,
    restore: Timed,
}

fn medians(v: &[(Timed, Timed)]) -> (Timed, Timed) {
    let m = |f: &dyn Fn(&(Timed, Timed)) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
    (
        Timed {
            wall_ms: m(&|r| r.0.wall_ms),
            cpu_ms: m(&|r| r.0.cpu_ms),
        },
        Timed {
            wall_ms: m(&|r| r.1.wall_ms),
            cpu_ms: m(&|r| r.1.cpu_ms),
        },
    )
}

fn measure(e: &Env<'_>, tools: &[Tool], runs: usize, machine: &str) -> Result<Vec<Row>> {
    let mut all: Vec<Vec<(Timed, Timed)>> = vec![Vec::new(); tools.len()];
    // One warm-up each (page cache, the probe cache), then alternate.
    for &t in tools {
        once(e, t)?;
    }
    for i in 0..runs {
        for (k, &t) in tools.iter().enumerate() {
            let r = once(e, t)?;
            eprintln!(
                "xtask: small {machine} {} run {}/{runs}: dump {:.1} ms ({:.1} ms CPU), restore {:.1} ms ({:.1} ms CPU)",
                t.name(),
                i + 1,
                r.0.wall_ms,
                r.0.cpu_ms,
                r.1.wall_ms,
                r.1.cpu_ms
            );
            all[k].push(r);
        }
    }
    Ok(tools
        .iter()
        .zip(all)
        .map(|(&tool, v)| {
            let (dump, restore) = medians(&v);
            Row {
                tool,
                machine: machine.to_string(),
                dump,
                restore,
            }
        })
        .collect())
}

pub fn bench(args: &[String]) -> Result<()> {
    let Args {
        runs,
        procs,
        baseline,
    } = parse(args)?;
    prepare_bench()?;
    let work = std::env::temp_dir().join(format!("cairn-bench-small-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let result = (|| {
        let workload = compile("bench_small", WORKLOAD_C, &work)?;
        let spawner = compile("bench_small_procs", SPAWNER_C, &work)?;
        let runner = compile("bench_small_time", RUNNER_C, &work)?;
        let cairn = root().join("target/release/cairn");
        let e = Env {
            cairn: &cairn,
            baseline: baseline.as_deref(),
            workload: &workload,
            runner: &runner,
            work: &work,
        };
        let mut tools = vec![Tool::Cairn];
        if baseline.is_some() {
            tools.push(Tool::Baseline);
        }
        if criu_works() {
            tools.push(Tool::Criu);
        } else {
            eprintln!("xtask: criu is not installed or `criu check` fails: cairn only");
        }
        let tasks = || {
            std::fs::read_dir("/proc")
                .map(|d| {
                    d.flatten()
                        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                        .count()
                })
                .unwrap_or(0)
        };
        let idle = format!("idle ({} processes)", tasks());
        let mut rows = measure(&e, &tools, runs, &idle)?;
        let crowd = Crowd::start(&spawner, procs)?;
        let busy = format!("+{procs} sleeping ({} processes)", tasks());
        let more = measure(&e, &tools, runs, &busy);
        drop(crowd);
        rows.extend(more?);
        Ok::<_, String>(rows)
    })();
    let _ = std::fs::remove_dir_all(&work);
    let rows = result?;
    for r in &rows {
        println!(
            "bench small {} {}: dump {:.1} ms ({:.1} ms CPU), restore {:.1} ms ({:.1} ms CPU)",
            r.tool.name(),
            r.machine,
            r.dump.wall_ms,
            r.dump.cpu_ms,
            r.restore.wall_ms,
            r.restore.cpu_ms
        );
    }
    println!();
    println!(
        "| tool | machine | runs | dump wall (ms) | dump CPU (ms) | restore wall (ms) | restore CPU (ms) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {runs} | {:.1} | {:.1} | {:.1} | {:.1} |",
            r.tool.name(),
            r.machine,
            r.dump.wall_ms,
            r.dump.cpu_ms,
            r.restore.wall_ms,
            r.restore.cpu_ms
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args() {
        let d = parse(&[]).unwrap();
        assert_eq!((d.runs, d.procs, d.baseline), (11, 3000, None));
        let a: Vec<String> = ["--runs", "3", "--procs", "10", "--baseline", "/x/cairn"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let a = parse(&a).unwrap();
        assert_eq!((a.runs, a.procs), (3, 10));
        assert_eq!(a.baseline, Some(PathBuf::from("/x/cairn")));
        assert!(parse(&["--runs".into(), "0".into()]).is_err());
        assert!(parse(&["--bogus".into()]).is_err());
    }
}
