//! `bench_dump_reads PID RUNS`: for `cargo xtask bench inventory-dump`.
//! Times, on the running tree of PID, what the dump reads from /proc to
//! find its processes, VMAs and fds, against what the inventory
//! (`cairn::inventory::collect`) costs with the BPF iterators and from
//! /proc. The phases alternate run by run after one warm-up round; the
//! medians go to stdout as one line of `key=value` (milliseconds):
//!
//! - `prechecks`: the dump's pre-checks as `dump::dump` runs them before
//!   the freeze (its tree walk over the children lists, then
//!   `kinds::{files,memory,inet}::precheck` per process and
//!   `kinds::{unix,tty}::precheck_tree`): each lists every fd of every
//!   process (four times) or reads its smaps.
//! - `smaps`, `fds`: the reads of the frozen dump that the inventory's fields
//!   cover (per process `smaps`, the `fd/` listing with each link, every
//!   `fdinfo`, and a stat of each path fd), as `dump::dump_frozen` and
//!   `kinds::files::FileTable::dump_fds` make them. What the inventory
//!   does not have (stat, status, auxv, cwd, root, the kinds' own reads)
//!   is not counted.
//! - `bpf`, `proc`: `inventory::collect` with and without BPF (BPF's
//!   programs are loaded before the first run, as the dump's freezer has
//!   them loaded already).

use std::time::Instant;

use cairn::inventory::{self, Collector};
use cairn::procfs;

fn tree_pids(root: i32) -> Vec<i32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        for t in procfs::list_tasks(p).unwrap_or_default() {
            out.extend(procfs::read_children(p, t).unwrap_or_default());
        }
        i += 1;
    }
    out
}

/// The dump's pre-checks (`dump::dump`, before the freeze).
fn prechecks(root: i32) -> cairn::Result<usize> {
    let pids = tree_pids(root);
    for &p in &pids {
        cairn::kinds::files::precheck(p)?;
        cairn::kinds::memory::precheck(p)?;
        cairn::kinds::inet::precheck(p, false, cairn::netlock::Method::Nftables)?;
    }
    cairn::kinds::unix::precheck_tree(&pids, false, true, &Default::default())?;
    cairn::kinds::tty::precheck_tree(&pids, false, &Default::default())?;
    Ok(pids.len())
}

/// The frozen dump's reads of the VMAs (`smaps`).
fn frozen_vmas(pids: &[i32]) -> cairn::Result<usize> {
    let mut vmas = 0;
    for &pid in pids {
        vmas += procfs::read_smaps(pid)?.len();
    }
    Ok(vmas)
}

/// The frozen dump's reads of the fds.
fn frozen_fds(pids: &[i32]) -> cairn::Result<usize> {
    let mut fds = 0;
    for &pid in pids {
        for (fd, target) in procfs::read_fds(pid)? {
            let _ = procfs::read_fdinfo(pid, fd)?;
            if target.starts_with('/') {
                let link = format!("/proc/{pid}/fd/{fd}");
                std::fs::metadata(&link).map_err(|e| cairn::Error::io(link, e))?;
            }
            fds += 1;
        }
    }
    Ok(fds)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let usage = || format!("usage: {} PID RUNS", args[0]);
    let pid: i32 = args.get(1).and_then(|a| a.parse().ok()).ok_or_else(usage)?;
    let runs: usize = args
        .get(2)
        .and_then(|a| a.parse().ok())
        .filter(|&r| r > 0)
        .ok_or_else(usage)?;
    let e = |e: cairn::Error| e.to_string();
    if let Some(why) = inventory::bpf_unavailable() {
        return Err(format!("BPF iterators cannot be used here: {why}"));
    }
    let [mut pre, mut vma, mut fdr, mut bpf, mut prc] = [(); 5].map(|()| Vec::new());
    let mut counts = String::new();
    for i in 0..=runs {
        let t = Instant::now();
        let procs = prechecks(pid).map_err(e)?;
        let pre_ms = ms(t);
        let pids = tree_pids(pid);
        let t = Instant::now();
        let vmas = frozen_vmas(&pids).map_err(e)?;
        let vma_ms = ms(t);
        let t = Instant::now();
        let fds = frozen_fds(&pids).map_err(e)?;
        let fd_ms = ms(t);
        let (b, took_b) = inventory::collect(pid, false).map_err(e)?;
        let (p, took_p) = inventory::collect(pid, true).map_err(e)?;
        if b.collector != Collector::Bpf || p.collector != Collector::Proc {
            return Err("inventory::collect did not use the collector asked for".into());
        }
        if b.summary() != p.summary() {
            return Err(format!(
                "the collectors disagree: bpf {}, proc {}",
                b.summary(),
                p.summary()
            ));
        }
        // The dump's reads see the vsyscall page too; the inventory not.
        let inv_vmas: usize = b.procs.iter().map(|p| p.vmas.len()).sum();
        let inv_fds: usize = b.procs.iter().map(|p| p.fds.len()).sum();
        if procs != b.procs.len() || fds != inv_fds || vmas < inv_vmas {
            return Err(format!(
                "the dump's reads found {procs} processes, {vmas} VMAs, {fds} fds; \
                 the inventory {}",
                b.summary()
            ));
        }
        counts = b.summary();
        eprintln!(
            "bench_dump_reads {pid} run {i}/{runs}{}: prechecks {pre_ms:.2} ms, frozen reads: \
             smaps {vma_ms:.2} ms, fds {fd_ms:.2} ms; bpf {:.2} ms, proc {:.2} ms",
            if i == 0 { " (warm-up)" } else { "" },
            took_b.as_secs_f64() * 1e3,
            took_p.as_secs_f64() * 1e3
        );
        if i > 0 {
            pre.push(pre_ms);
            vma.push(vma_ms);
            fdr.push(fd_ms);
            bpf.push(took_b.as_secs_f64() * 1e3);
            prc.push(took_p.as_secs_f64() * 1e3);
        }
    }
    println!(
        "prechecks={:.3} smaps={:.3} fds={:.3} bpf={:.3} proc={:.3} counts={counts}",
        median(pre),
        median(vma),
        median(fdr),
        median(bpf),
        median(prc)
    );
    Ok(())
}
