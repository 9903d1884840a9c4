//! `cairn inventory`: what cairn collects of a tree (processes, threads,
//! VMAs, fds), from the BPF iterators or /proc ([`crate::inventory`]).

use crate::error::{IoContext, Result};
use crate::inventory::{collect, to_json, to_text};

/// Collects the tree of `pid` (from /proc if `no_bpf`) and prints it on
/// stdout, as JSON if `json`; the collector and the time it took go to the
/// log (-v).
pub fn run(pid: i32, json: bool, no_bpf: bool) -> Result<()> {
    let (inv, took) = collect(pid, no_bpf)?;
    crate::info!(
        "inventory of {}: {} by {} in {:.3} ms",
        pid,
        inv.summary(),
        inv.collector.as_str(),
        took.as_secs_f64() * 1e3
    );
    let out = if json { to_json(&inv) } else { to_text(&inv) };
    std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes()).at("<stdout>")
}
