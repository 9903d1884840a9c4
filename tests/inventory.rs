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

/// inv_busy started, for a test that needs root and BPF iterators; None
/// (the reason noted) when it cannot run here.
fn busy_with_bpf() -> Option<Workload> {
    if skip_unless_root() {
        return None;
    }
    if let Some(why) = bpf_iterators_unavailable() {
        note_skip(&format!("BPF iterators unavailable: {why}"));
        return None;
    }
    Some(Workload::start("inv_busy", &[]))
}

/// inv_busy: threads, pipes, unix/TCP/UDP sockets, a FIFO, file maps,
/// deleted files, memfds, eventfd/epoll/signalfd/timerfd/inotify, 300
/// fds and 300 VMAs in the root, a zombie, a stopped child, another
/// session and process group.
#[test]
fn bpf_and_proc_inventories_are_identical() {
    let Some(mut w) = busy_with_bpf() else {
        return;
    };
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
        // (then "sd" where new VMAs are soft-dirty: CONFIG_MEM_SOFT_DIRTY)
        "\"vm_flags\":[\"rd\",\"wr\",\"mr\",\"mw\",\"me\",\"ac\"",
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

/// `cairn -v inventory -t PID --json` (or `cairn check --json` when `pid`
/// is None) with `CAIRN_BPF_LEAVE_OUT=leave_out` and a probe cache of its
/// own: (stdout, stderr).
fn with_left_out(pid: Option<i32>, leave_out: &str, dir: &std::path::Path) -> (String, String) {
    let tag = format!("left-out-{}", leave_out.replace(',', "-"));
    let cache = dir.join(format!("{tag}-cache"));
    let args: Vec<String> = match pid {
        Some(pid) => ["-v", "inventory", "-t", &pid.to_string(), "--json"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        None => vec!["check".into(), "--json".into()],
    };
    let out = std::process::Command::new(cairn_bin())
        .args(&args)
        .env("CAIRN_BPF_LEAVE_OUT", leave_out)
        .env("CAIRN_PROBE_CACHE_DIR", &cache)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run cairn");
    if pid.is_some() {
        assert_ok(&out, &format!("cairn inventory ({tag})"));
    }
    (
        String::from_utf8(out.stdout).expect("UTF-8 output"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What a kernel without the task_vma iterator (before 5.12) or without
/// bpf_d_path in iterators does, on this kernel: with the program left
/// out (`CAIRN_BPF_LEAVE_OUT`), the BPF inventory reads that part from
/// /proc and is still the /proc inventory field by field; the log and
/// `cairn check` name the program and the reason.
#[test]
fn an_iterator_left_out_is_read_from_proc_and_named() {
    let Some(mut w) = busy_with_bpf() else {
        return;
    };
    let proc = inventory(w.pid, true, &w.dir, "inventory-proc-left-out");
    for (leave_out, parts, features) in [
        ("vmas", &["VMAs"][..], &["bpf_iter_task_vma"][..]),
        ("files", &["fds"][..], &["bpf_iter_task_file"][..]),
        (
            "vmas,files",
            &["VMAs", "fds"][..],
            &["bpf_iter_task_vma", "bpf_iter_task_file"][..],
        ),
    ] {
        let (bpf, log) = with_left_out(Some(w.pid), leave_out, &w.dir);
        assert!(
            bpf.contains("\"collector\":\"bpf\""),
            "{leave_out}: not collected by BPF: {}\n{log}",
            &bpf[..200.min(bpf.len())]
        );
        let bpf_as_proc = bpf.replacen("\"collector\":\"bpf\"", "\"collector\":\"proc\"", 1);
        assert!(
            bpf_as_proc == proc,
            "{leave_out} left out: the BPF and /proc inventories differ {}",
            first_difference(&bpf_as_proc, &proc)
        );
        for part in parts {
            assert!(
                log.contains(&format!("bpf inventory: {part} from /proc: "))
                    && log.contains("CAIRN_BPF_LEAVE_OUT"),
                "{leave_out}: the log does not say {part} came from /proc and why:\n{log}"
            );
        }
        let (check, _) = with_left_out(None, leave_out, &w.dir);
        for f in features {
            let key = format!("\"{f}\":{{\"available\":false,\"detail\":\"not loaded: ");
            assert!(
                check.contains(&key) && check.contains("CAIRN_BPF_LEAVE_OUT"),
                "{leave_out}: cairn check does not say {f} is not loaded and why: {check}"
            );
        }
        assert!(
            check.contains("\"inventory\":{\"mechanism\":\"bpf\""),
            "{leave_out}: the inventory is no longer BPF's: {check}"
        );
    }
    w.terminate_original_expect_pass();
}
