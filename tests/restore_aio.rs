//! AIO contexts (io_setup): restored exactly (rings with unreaped
//! completions, the kernel's tail, the context ids), and refused at dump
//! when a request is in flight.
mod common;

use common::*;

/// Two contexts, one with 5 unreaped completions after 3 reaped ones, one
/// empty: after restore both rings are byte for byte the same, the 5
/// events come back from io_getevents, new requests complete on both and
/// io_destroy works (the workload checks all of it).
#[test]
fn aio_rings_restored() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("aio", &[]);
}

/// An IOCB_CMD_POLL waiting on an empty pipe: the dump refuses, naming
/// the pid and the context, before freezing; the workload goes on and its
/// poll completes.
#[test]
fn aio_in_flight_refused() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("aio", &["--inflight"]);
    let log = w.log_text();
    let addr = log
        .lines()
        .find_map(|l| l.strip_prefix("addr "))
        .unwrap_or_else(|| panic!("no address in the workload log: {log}"))
        .trim()
        .to_string();
    let out = w.dump(&["-v"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(6),
        "dump of a process with an AIO request in flight: {}",
        describe(&out)
    );
    let line = err
        .lines()
        .find(|l| l.contains("unsupported"))
        .unwrap_or_else(|| panic!("no refusal in: {err}"));
    assert!(
        line.contains(&format!("pid {}", w.pid))
            && line.contains(&addr)
            && line.contains("1 request(s) in flight (submitted, not completed"),
        "unclear refusal of an AIO request in flight at {addr}: {line}"
    );
    assert!(
        !err.contains("froze"),
        "the refusal came after freezing: {err}"
    );
    w.terminate_original_expect_pass();
}

/// The same in a child forked before any io_setup (its own contexts) and
/// in its parent: both are restored and check their rings.
#[test]
fn aio_rings_in_child_restored() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("aio", &["--fork"]);
}

/// A child forked after io_setup holds its parent's ring mappings without
/// a context behind them (fork copies the mapping, not the context): the
/// dump refuses, naming the child and the ring, before freezing.
#[test]
fn aio_inherited_ring_refused() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("aio", &["--inherit"]);
    let log = w.log_text();
    let field = |k: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} in the workload log: {log}"))
            .trim()
            .to_string()
    };
    let (addr, child) = (field("addr "), field("child "));
    let out = w.dump(&["-v"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "dump: {}", describe(&out));
    let line = err
        .lines()
        .find(|l| l.contains("unsupported"))
        .unwrap_or_else(|| panic!("no refusal in: {err}"));
    assert!(
        line.contains(&format!("pid {child}"))
            && line.contains(&addr)
            && line.contains("inherited through fork"),
        "unclear refusal of an inherited AIO ring at {addr}: {line}"
    );
    assert!(
        !err.contains("froze"),
        "the refusal came after freezing: {err}"
    );
    w.terminate_original_expect_pass();
}

/// With --no-bpf the kernel's side of an AIO context (requests in flight,
/// whether the context is the process's own) cannot be read: the ring is
/// refused, naming the pid, its address and --no-bpf, before freezing.
/// (The BPF program was loaded regardless of --no-bpf before.)
#[test]
fn aio_ring_no_bpf_refused() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("aio", &[]);
    let r = common::refuse::expect_refused(&mut w, &["--no-bpf"], &["--no-bpf", "aio"]);
    r.assert_before_freeze();
}
