//! The two inventory collectors, BPF iterators and /proc, must give the
//! same answer, field by field, on a busy tree (`cairn inventory --json`
//! prints every field; see src/inventory/).
mod common;

use std::ffi::OsString;
use std::time::Duration;

use common::*;

fn inventory(pid: i32, no_bpf: bool, dir: &std::path::Path, tag: &str) -> String {
    let mut args: Vec<OsString> = ["-v", "inventory", "-t", &pid.to_string(), "--json"]
        .iter()
        .map(OsString::from)
        .collect();
    if no_bpf {
        args.push("--no-bpf".into());
    }
    let out = run_cairn(&args, &dir.join(tag), Duration::from_secs(60));
    assert_ok(&out, &format!("cairn inventory ({tag})"));
    String::from_utf8(out.stdout).expect("inventory JSON is UTF-8")
}

/// The first place where two JSON texts differ, with context.
fn first_difference(a: &str, b: &str) -> String {
    let at = a
        .bytes()
        .zip(b.bytes())
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let from = a[..at].rfind("{\"pid\"").unwrap_or(at.saturating_sub(300));
    let ctx = |s: &str| {
        let mut end = (at + 200).min(s.len());
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let mut start = from.min(end);
        while !s.is_char_boundary(start) {
            start -= 1;
        }
        s[start..end].to_string()
    };
    format!(
        "at byte {at}:\n--- bpf ---\n{}\n--- proc ---\n{}",
        ctx(a),
        ctx(b)
    )
}

#[test]
fn inventory_workload_passes_without_cairn() {
    let mut w = Workload::start("inv_busy", &[]);
    w.terminate_original_expect_pass();
}

/// inv_busy: threads, pipes, unix/TCP/UDP sockets, a FIFO, file maps,
/// deleted files, memfds, eventfd/epoll/signalfd/timerfd/inotify, 300
/// fds and 300 VMAs in the root, a zombie, a stopped child, another
/// session and process group.
#[test]
fn bpf_and_proc_inventories_are_identical() {
    if skip_unless_root() {
        return;
    }
    if let Some(why) = bpf_iterators_unavailable() {
        note_skip(&format!("BPF iterators unavailable: {why}"));
        return;
    }
    let mut w = Workload::start("inv_busy", &[]);
    let bpf = inventory(w.pid, false, &w.dir, "inventory-bpf");
    let proc = inventory(w.pid, true, &w.dir, "inventory-proc");
    assert!(
        bpf.contains("\"collector\":\"bpf\""),
        "{}",
        &bpf[..200.min(bpf.len())]
    );
    assert!(
        proc.contains("\"collector\":\"proc\""),
        "{}",
        &proc[..200.min(proc.len())]
    );
    let bpf_as_proc = bpf.replacen("\"collector\":\"bpf\"", "\"collector\":\"proc\"", 1);
    assert!(
        bpf_as_proc == proc,
        "the BPF and /proc inventories differ {}",
        first_difference(&bpf_as_proc, &proc)
    );
    // And they hold what the workload made.
    for want in [
        "\"kind\":\"socket\"",
        "\"kind\":\"pipe\"",
        "\"kind\":\"fifo\"",
        "\"kind\":\"dir\"",
        "\"target\":\"anon_inode:[eventfd]\"",
        "\"target\":\"anon_inode:[timerfd]\"",
        "\"target\":\"anon_inode:[signalfd]\"",
        "\"target\":\"anon_inode:[eventpoll]\"",
        "\"target\":\"anon_inode:inotify\"",
        "memfd:root (deleted)",
        "memfd:c (deleted)",
        "deleted-root (deleted)",
        "deleted-c (deleted)",
        "odd\\\\012name file",
        "odd\\nname file",
        "/dev/zero (deleted)",
        "\"path\":\"[stack]\"",
        "\"path\":\"[vdso]\"",
        "\"state\":\"Z\"",
        "\"state\":\"T\"",
        "\"vm_flags\":[\"rd\",\"wr\",\"mr\",\"mw\",\"me\",\"ac\"]",
        "\"dc\"",
    ] {
        assert!(
            bpf.contains(want),
            "the inventory lacks {want}: {}",
            &bpf[..2000.min(bpf.len())]
        );
    }
    assert_eq!(bpf.matches("{\"pid\":").count(), 6, "6 processes expected");
    let fds = bpf.matches("{\"fd\":").count();
    assert!(fds > 300, "only {fds} fds");
    let vmas = bpf.matches("{\"start\":").count();
    assert!(vmas > 300, "only {vmas} VMAs");
    w.terminate_original_expect_pass();
}
