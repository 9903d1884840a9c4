//! `cairn show`: the summary, the views (ps, fds, mems, sockets, chain,
//! stats), --full with names for numbers, and the JSON schema of
//! docs/SHOW-JSON.md (parsed with cairn's own JSON parser), also on
//! failure. Each test dumps a real workload, looks at its images, then
//! restores it and lets it check its own state.
mod common;

use std::ffi::OsString;

use cairn::json::{parse, Value};
use common::*;

fn os(s: impl AsRef<std::ffi::OsStr>) -> OsString {
    s.as_ref().to_owned()
}

/// `cairn show ARGS`: (exit code, stdout).
fn show(w: &Workload, tag: &str, args: &[&str]) -> (i32, String) {
    let mut a = vec![os("show")];
    a.extend(args.iter().map(os));
    let out = run_cairn(&a, &w.dir.join(format!("show-{tag}")), CAIRN_TIMEOUT);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn show_ok(w: &Workload, tag: &str, args: &[&str]) -> String {
    let (code, out) = show(w, tag, args);
    assert_eq!(code, 0, "cairn show {args:?}: {out}");
    out
}

/// Parses `s` as one JSON object of the cairn-show/1 schema with `view`.
fn json(s: &str, view: &str) -> Value {
    let v = parse(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"));
    assert_eq!(
        v.get("schema").and_then(Value::as_str),
        Some("cairn-show/1"),
        "{s}"
    );
    assert_eq!(v.get("view").and_then(Value::as_str), Some(view), "{s}");
    v
}

fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no array {key:?} in {v:?}"))
}

/// The processes of unix_pair (a parent and its child holding one end of
/// a seqpacket pair), its sockets, fds and memory, as text and JSON.
#[test]
fn show_views_of_a_real_dump() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("unix_pair", &[]);
    w.dump_ok(&[]);
    w.expect_killed_by_dump();
    let img = w.images.to_str().unwrap().to_string();
    let pid = w.pid;

    // The summary: short, no image dumps, the process table.
    let s = show_ok(&w, "summary", &[&img]);
    assert!(
        s.lines().count() < 30,
        "summary of {} lines:\n{s}",
        s.lines().count()
    );
    assert!(s.contains(&format!("root pid {pid}")), "{s}");
    assert!(s.contains("2 processes"), "{s}");
    assert!(s.contains(" UTC on "), "{s}");
    assert!(!s.contains("=== "), "images in the summary:\n{s}");
    let row = s
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&pid.to_string()));
    assert!(
        row.is_some_and(|r| r.contains("alive") && r.contains("unix_pair")),
        "{s}"
    );

    // ps
    let t = show_ok(&w, "ps", &[&img, "ps"]);
    assert!(t.starts_with("     PID     PPID"), "{t}");
    assert_eq!(t.lines().count(), 3, "{t}");
    let j = json(&show_ok(&w, "ps-json", &[&img, "ps", "--json"]), "ps");
    let procs = arr(&j, "processes");
    assert_eq!(procs.len(), 2, "{j:?}");
    let root = &procs[0];
    assert!(root.get("pid").unwrap().is_number());
    assert_eq!(root.get("pid").unwrap().as_i64(), Some(pid.into()));
    assert_eq!(root.get("comm").unwrap().as_str(), Some("unix_pair"));
    let child = procs[1].get("pid").unwrap().as_i64().unwrap();
    assert_eq!(procs[1].get("ppid").unwrap().as_i64(), Some(pid.into()));

    // fds: the seqpacket end with O_NONBLOCK, the datagram one with
    // FD_CLOEXEC, by name.
    let t = show_ok(&w, "fds", &[&img, "fds"]);
    assert!(t.contains("unix") && t.contains("seqpacket"), "{t}");
    assert!(t.contains("O_RDWR|O_NONBLOCK"), "{t}");
    assert!(t.contains("|O_CLOEXEC"), "{t}");
    assert!(t.contains("epoll"), "{t}");
    let j = json(&show_ok(&w, "fds-json", &[&img, "fds", "--json"]), "fds");
    let fds = arr(&j, "fds");
    assert!(
        fds.iter()
            .any(|f| f.get("pid").unwrap().as_i64() == Some(child)),
        "{j:?}"
    );
    let nb = fds
        .iter()
        .find(|f| {
            f.get("flag_names")
                .and_then(Value::as_str)
                .is_some_and(|n| n.contains("O_NONBLOCK"))
        })
        .expect("an O_NONBLOCK fd");
    assert_eq!(nb.get("flags").unwrap().as_u64().unwrap() & 0o4000, 0o4000);
    assert_eq!(nb.get("type").unwrap().as_str(), Some("unix"));

    // mems: hex ranges, rwxp protections, mmap flags.
    let t = show_ok(&w, "mems", &[&img, "mems"]);
    assert!(t.contains(&format!("pid {pid}: ")), "{t}");
    assert!(t.contains("r-xp") && t.contains("rw-p"), "{t}");
    assert!(
        t.contains("MAP_PRIVATE|MAP_ANONYMOUS") && t.contains("[stack]"),
        "{t}"
    );
    assert!(
        t.lines()
            .any(|l| l.trim_start().starts_with("0000") && l.contains('-')),
        "no hex address range: {t}"
    );
    let j = json(&show_ok(&w, "mems-json", &[&img, "mems", "--json"]), "mems");
    let vmas = arr(&arr(&j, "processes")[0], "vmas");
    let stack = vmas
        .iter()
        .find(|v| v.get("name").and_then(Value::as_str) == Some("[stack]"))
        .expect("the stack");
    assert!(stack.get("start").unwrap().is_number(), "{stack:?}");
    assert!(stack.get("end").unwrap().as_u64() > stack.get("start").unwrap().as_u64());
    assert_eq!(stack.get("prot").unwrap().as_str(), Some("rw-p"));
    assert!(stack.get("pages").unwrap().get("data").unwrap().as_u64() > Some(0));

    // sockets: which pid:fd holds each.
    let t = show_ok(&w, "sockets", &[&img, "sockets"]);
    assert!(
        t.contains("stream") && t.contains("dgram") && t.contains("seqpacket"),
        "{t}"
    );
    assert!(t.contains(&format!("{child}:")), "the child's socket: {t}");
    let j = json(
        &show_ok(&w, "sockets-json", &[&img, "sockets", "--json"]),
        "sockets",
    );
    let socks = arr(&j, "sockets");
    assert!(socks.len() >= 6, "{j:?}");
    assert!(socks
        .iter()
        .all(|s| s.get("type").unwrap().as_str() == Some("unix")));

    // chain (one layer) and stats.
    let t = show_ok(&w, "chain", &[&img, "chain"]);
    assert!(
        t.contains("=== chain (1 layer, newest first) ===") && t.contains(" UTC, "),
        "{t}"
    );
    let j = json(
        &show_ok(&w, "chain-json", &[&img, "chain", "--json"]),
        "chain",
    );
    let l = &arr(&j, "chain")[0];
    assert_eq!(l.get("parent"), Some(&Value::Null));
    assert!(l.get("bytes").unwrap().as_u64() > Some(0) && l.get("date_ms").unwrap().is_number());
    let t = show_ok(&w, "stats", &[&img, "stats"]);
    assert!(
        t.contains("=== stats-dump.img (stats) ===") && t.contains("dump statistics:"),
        "{t}"
    );
    let j = json(
        &show_ok(&w, "stats-json", &[&img, "stats", "--json"]),
        "stats",
    );
    let st = arr(&j, "stats")[0].get("stats").unwrap();
    assert_eq!(st.get("processes").unwrap().as_u64(), Some(2));
    assert!(st.get("total_us").unwrap().is_number());

    // The whole: summary, every image, numbers as numbers.
    let j = json(&show_ok(&w, "images-json", &[&img, "--json"]), "images");
    let sum = j.get("summary").expect("summary");
    assert_eq!(sum.get("root_pid").unwrap().as_i64(), Some(pid.into()));
    assert!(sum.get("disk_bytes").unwrap().is_number());
    let images = arr(&j, "images");
    let core = images
        .iter()
        .find(|i| i.get("file").and_then(Value::as_str) == Some(&format!("core-{pid}.img")))
        .expect("the root's core");
    let msg = core.get("message").unwrap();
    assert_eq!(msg.get("pid").unwrap().as_i64(), Some(pid.into()));
    // rlimits: RLIM_INFINITY is above 2^53, a string; small ones numbers.
    let rl = arr(msg, "rlimits");
    assert!(
        rl.iter()
            .any(|r| r.get("max") == Some(&Value::String(u64::MAX.to_string()))),
        "{rl:?}"
    );
    assert!(
        rl.iter().any(|r| r.get("cur").unwrap().is_number()),
        "{rl:?}"
    );
    let rip = &arr(msg, "threads")[0]
        .get("regs")
        .unwrap()
        .get("rip")
        .unwrap();
    assert!(rip.is_number(), "{rip:?}");

    w.restore_wait(&[]);
}

/// --full: every image, with signals, handlers, sigaction flags, masks and
/// addresses as people write them; default dispositions not listed one
/// by one; the XSAVE area as its size and components.
#[test]
fn show_full_names_numbers() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("sig_actions", &[]);
    w.dump_ok(&[]);
    w.expect_killed_by_dump();
    let img = w.images.to_str().unwrap().to_string();
    let t = show_ok(&w, "full", &[&img, "--full"]);
    let core = format!("=== core-{}.img (core) ===", w.pid);
    assert!(
        t.contains(&core) && t.contains("=== inventory.img (inventory) ==="),
        "{t}"
    );
    for want in [
        "signo: SIGUSR1",
        "flags: SA_SIGINFO|SA_RESTORER|SA_RESTART",
        "mask: SIGINT|SIGUSR2",
        "handler: SIG_IGN",
        "signo: SIGRTMIN+1",
        "handler: 0x",
        "restorer: 0x",
        "rip: 0x",
        "xsave: <",
        "XSTATE_BV 0x",
        "resource: RLIMIT_NOFILE",
        "max: RLIM_INFINITY",
        "umask: 0",
        "more signals: SIG_DFL, no flags, empty mask",
    ] {
        assert!(t.contains(want), "no {want:?} in:\n{t}");
    }
    let blocks = t.matches("sigactions {").count();
    assert!(
        (10..=16).contains(&blocks),
        "{blocks} sigaction blocks:\n{t}"
    );
    assert!(!t.contains("\\000\\000"), "escaped binary in:\n{t}");
    // The same file alone, by its path, is the same text.
    let one = show_ok(&w, "one", &[&format!("{img}/core-{}.img", w.pid)]);
    assert!(
        one.starts_with(&core) && one.contains("signo: SIGUSR1"),
        "{one}"
    );
    // A view needs a directory.
    let (code, _) = show(&w, "one-ps", &[&format!("{img}/core-{}.img", w.pid), "ps"]);
    assert_ne!(code, 0);
    w.restore_wait(&[]);
}

/// With --json a failure is a JSON error object too, with the exit code.
#[test]
fn show_json_failure_is_an_error_object() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("mem_heap", &[]);
    w.dump_ok(&[]);
    w.expect_killed_by_dump();
    let bad = w.dir.join("bad");
    copy_dir(&w.images, &bad);
    let core = bad.join(format!("core-{}.img", w.pid));
    let mut b = std::fs::read(&core).unwrap();
    let last = b.len() - 1;
    b[last] ^= 0xff;
    std::fs::write(&core, &b).unwrap();
    let bad_s = bad.to_str().unwrap();

    let (code, out) = show(&w, "verify-bad", &["--verify", "--json", bad_s]);
    assert_eq!(code, 5, "{out}");
    let j = json(&out, "verify");
    assert_eq!(j.get("verified").and_then(Value::as_bool), Some(false));
    let e = j.get("error").expect("error member");
    assert_eq!(e.get("exit_code").unwrap().as_i64(), Some(5));
    let m = e.get("message").unwrap().as_str().unwrap();
    assert!(m.contains(&format!("core-{}.img", w.pid)), "{m}");

    for (tag, args) in [
        ("bad-json", vec!["--json", bad_s]),
        ("bad-ps", vec![bad_s, "ps", "--json"]),
    ] {
        let (code, out) = show(&w, tag, &args);
        assert_ne!(code, 0, "{out}");
        let j = parse(&out).unwrap_or_else(|e| panic!("{tag}: not JSON ({e}): {out}"));
        assert!(j.get("error").is_some(), "{out}");
        assert_eq!(
            j.get("error").unwrap().get("exit_code").unwrap().as_i64(),
            Some(code.into())
        );
    }
    let missing = w.dir.join("nothing");
    let (code, out) = show(&w, "missing", &["--json", missing.to_str().unwrap()]);
    assert_ne!(code, 0);
    let j = json(&out, "images");
    assert!(j
        .get("error")
        .unwrap()
        .get("message")
        .unwrap()
        .as_str()
        .unwrap()
        .contains("nothing"));

    // The good images still verify, with a JSON report.
    let img = w.images.to_str().unwrap().to_string();
    let j = json(
        &show_ok(&w, "verify", &["--verify", "--json", &img]),
        "verify",
    );
    assert_eq!(j.get("verified").and_then(Value::as_bool), Some(true));
    assert!(j.get("bytes").unwrap().is_number());
    w.restore_wait(&[]);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}
