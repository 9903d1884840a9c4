//! `cargo xtask bench libcairn [--calls N] [--restarts N]` (issue 18):
//! the cost of libcairn's calls for a program under `cairn run`. Builds
//! cairn and libcairn (release), compiles examples/libcairn/bench.c
//! against libcairn.so with gcc, and runs it under `cairn run -D TMP`: N
//! timed calls (default 20000) of `cairn_checkpoint_data` for 16 B, 1 KiB
//! and 64 KiB (a round trip to the supervisor, which stores the data in
//! `DIR/control/data` before it answers; the fdatasync follows at most
//! 20 ms later, outside the call), then a few restart checkpoints
//! (`cairn_checkpoint`: a whole `--leave-running` dump of the small
//! program). Medians, p90, p99 and means in microseconds.

use std::path::Path;
use std::process::Command;

use super::{cargo, prepare_bench, root, run, Result};

pub fn bench(args: &[String]) -> Result<()> {
    let (mut calls, mut restarts) = (20000u32, 5u32);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let n = match a.as_str() {
            "--calls" => &mut calls,
            "--restarts" => &mut restarts,
            other => return Err(format!("bench libcairn: unknown argument {other:?}")),
        };
        *n = it
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bench libcairn: {a} wants a number"))?;
    }
    if calls == 0 {
        return Err("bench libcairn: --calls wants a positive number".into());
    }
    prepare_bench()?;
    run(cargo().args(["build", "--release", "-p", "libcairn", "--lib"]))?;
    let root = root();
    let tmp = std::env::temp_dir().join(format!("cairn-bench-libcairn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let r = measure(&root, &tmp, calls, restarts);
    let _ = std::fs::remove_dir_all(&tmp);
    r
}

fn measure(root: &Path, tmp: &Path, calls: u32, restarts: u32) -> Result<()> {
    let so = root.join("target/release/libcairn_lib.so");
    std::fs::copy(&so, tmp.join("libcairn.so")).map_err(|e| format!("{}: {e}", so.display()))?;
    let prog = tmp.join("bench");
    run(Command::new("gcc")
        .args(["-O2", "-Wall", "-I"])
        .arg(root.join("libcairn/include"))
        .arg(root.join("examples/libcairn/bench.c"))
        .arg("-L")
        .arg(tmp)
        .arg("-lcairn")
        .arg(format!("-Wl,-rpath,{}", tmp.display()))
        .arg("-o")
        .arg(&prog))?;
    // The job's output is a file: a pipe to the xtask would be outside
    // the checkpointed tree.
    let out_path = tmp.join("bench.out");
    let out_file = std::fs::File::create(&out_path).map_err(|e| format!("{e}"))?;
    let out = Command::new(root.join("target/release/cairn"))
        .arg("run")
        .arg("-D")
        .arg(tmp.join("ck"))
        .arg("--")
        .arg(&prog)
        .arg(calls.to_string())
        .arg(restarts.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(out_file.try_clone().map_err(|e| format!("{e}"))?)
        .stderr(out_file)
        .output()
        .map_err(|e| format!("cairn run: {e}"))?;
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    if !out.status.success() {
        return Err(format!(
            "cairn run of the bench program: {}\n{text}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    println!("| call | calls | median (µs) | p90 (µs) | p99 (µs) | mean (µs) |");
    println!("|---|---|---|---|---|---|");
    for l in text.lines().filter_map(|l| l.strip_prefix("bench ")) {
        let mut f = l.split_whitespace();
        let name = f.next().unwrap_or("?");
        let val = |k: &str| {
            l.split_whitespace()
                .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                .unwrap_or("?")
                .to_string()
        };
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            val("calls"),
            val("median_us"),
            val("p90_us"),
            val("p99_us"),
            val("mean_us")
        );
    }
    Ok(())
}
