//! Unix sockets (issue 4): socketpairs, names, listeners and their
//! backlog, queued data, shutdown, options, peers outside the tree. Each
//! workload checks its own sockets after the restore.

mod common;

use common::*;

/// Socketpairs of the three types, data both ways, shutdown, options,
/// one end in a child, epoll on a socket. `cairn show` decodes the sockets
/// (text and JSON) with their queues.
#[test]
fn unix_pair() {
    if skip_unless_root() {
        return;
    }
    let w = checkpoint_restore("unix_pair", &[]);
    let files = w.images.join("files.img");
    let text = run_cairn(
        &["show".into(), files.clone().into()],
        &w.dir.join("show"),
        CAIRN_TIMEOUT,
    );
    assert_ok(&text, "cairn show files.img");
    let t = String::from_utf8_lossy(&text.stdout);
    assert!(t.contains("unix {") && t.contains("stream-a2b-1"), "{t}");
    let json = run_cairn(
        &["show".into(), files.into(), "--json".into()],
        &w.dir.join("show-json"),
        CAIRN_TIMEOUT,
    );
    assert_ok(&json, "cairn show files.img --json");
    let j = String::from_utf8_lossy(&json.stdout);
    assert!(
        is_valid_json(&j) && j.contains("\"unix\"") && j.contains("\"peer\""),
        "{j}"
    );
}

/// A dump with --leave-running reads the queues without consuming them:
/// the original still finds all its data afterwards.
#[test]
fn unix_pair_leave_running() {
    if skip_unless_root() {
        return;
    }
    leave_running("unix_pair", &[]);
}

/// Names: a listener on a relative path with an accepted connection (its
/// accepted end in a child) and two connections waiting in the backlog,
/// one with data; a connection whose server end closed; a seqpacket
/// listener on an abstract name; datagrams from three senders with their
/// addresses; a connected datagram socket; a socket whose file was
/// unlinked.
#[test]
fn unix_named() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("unix_named", &[]);
}

/// The same with --leave-running (no data in the backlog, which could not
/// be read without accepting it): the original finds everything intact.
#[test]
fn unix_named_leave_running() {
    if skip_unless_root() {
        return;
    }
    if let Some(why) = unix_iter_missing() {
        note_skip(&why);
        return;
    }
    leave_running("unix_named", &["--quiet-backlog"]);
}

/// With data in a connection waiting in a backlog, --leave-running is
/// refused (reading it would mean accepting it), naming the pid and fd,
/// and the process is untouched.
#[test]
fn unix_backlog_data_leave_running_refused() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("unix_named", &[]);
    let out = w.dump(&["--leave-running"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{}", describe(&out));
    assert!(
        err.contains(&format!("pid {}", w.pid))
            && err.contains("fd ")
            && err.contains("--leave-running"),
        "unclear refusal: {err}"
    );
    w.terminate_original_expect_pass();
}

/// The outside ends of unix_ext's sockets, held by the test.
struct Outside {
    dir: std::path::PathBuf,
    dgram: std::os::unix::net::UnixDatagram,
    /// The accepted end of the workload's stream connection.
    conn: std::os::unix::net::UnixStream,
    /// The test's connection waiting in the workload's backlog.
    _client: std::os::unix::net::UnixStream,
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts unix_ext with its peers outside (held by this test): a bound
/// datagram socket, a listener whose accepted end sends "from-server",
/// and a client that connects to the workload's listener and sends
/// "ext-client".
fn start_ext(tag: &str) -> (Workload, Outside) {
    use std::io::Write;
    use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
    let dir = fresh_dir(tag);
    let (dpath, lpath, spath) = (
        dir.join("ext.dgram"),
        dir.join("ext.listen"),
        dir.join("served"),
    );
    let dgram = UnixDatagram::bind(&dpath).expect("bind the outside datagram socket");
    let listener = UnixListener::bind(&lpath).expect("bind the outside listener");
    let w = Workload::start(
        "unix_ext",
        &[
            "--dgram",
            dpath.to_str().unwrap(),
            "--listen",
            lpath.to_str().unwrap(),
            "--serve",
            spath.to_str().unwrap(),
        ],
    );
    let mut client = UnixStream::connect(&spath).unwrap();
    client.write_all(b"ext-client").unwrap();
    let (mut conn, _) = listener.accept().expect("accept the workload's connection");
    conn.write_all(b"from-server").unwrap();
    (
        w,
        Outside {
            dir,
            dgram,
            conn,
            _client: client,
        },
    )
}

/// Peers outside the tree: refused, naming the pid, the fd and the peer,
/// without --ext-unix-sk (the process goes on untouched); with it, the
/// datagram socket is reconnected to the outside socket's name, the
/// stream socket comes back with its data and its peer gone, and a
/// connection from outside waiting in the backlog of the tree's listener
/// comes back with its data and its client gone. The stream socket's
/// SO_PEERCRED names this test, alive at restore: the restore is refused
/// before any process exists unless --ext-unix-sk-lose-peercred accepts
/// that it names cairn.
#[test]
fn unix_external_peer() {
    use std::io::Read;
    if skip_unless_root() {
        return;
    }
    let (mut w, mut o) = start_ext("unix-ext-peer");
    let mut buf = [0u8; 64];
    let n = o.dgram.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"before");
    let mut got = [0u8; 9];
    o.conn.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"to-server");

    let out = w.dump(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{}", describe(&out));
    assert!(
        err.contains(&format!("pid {}", w.pid))
            && err.contains("fd ")
            && err.contains("outside the dumped tree")
            && err.contains("--ext-unix-sk")
            && err.contains(&format!("pid {}", std::process::id())),
        "unclear refusal: {err}"
    );

    // The stream socket's SO_PEERCRED names this test (the listener's
    // creator), alive at restore: the dump says the restore cannot be
    // exact while it lives.
    let out = w.dump_ok(&["--ext-unix-sk"]);
    let err = String::from_utf8_lossy(&out.stderr);
    let me = format!("pid {}", std::process::id());
    assert!(
        err.lines().any(|l| l.contains("SO_PEERCRED")
            && l.contains(&me)
            && l.contains("--ext-unix-sk-lose-peercred")),
        "no warning that SO_PEERCRED cannot be restored: {err}"
    );
    w.expect_killed_by_dump();
    // The original's connection ended with it (reset: it had unread data).
    let timeout = Some(std::time::Duration::from_secs(5));
    o.conn.set_read_timeout(timeout).unwrap();
    match o.conn.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        r => panic!("the dumped process's connection is still open: {r:?}"),
    }
    // Refused before any process exists, naming the socket's pid, fd,
    // socket and the recorded peer (this test, alive).
    let out = restore_expect_fail(&w.images, &[], w.pid);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("pid {} fd ", w.pid))
            && err.contains("socket:[")
            && err.contains(&format!("SO_PEERCRED named {me} "))
            && err.contains("--ext-unix-sk-lose-peercred"),
        "unclear refusal: {}",
        describe(&out)
    );
    assert!(!pid_exists(w.pid), "a refused restore left pid {}", w.pid);
    // Accepted: the socket names cairn (the workload checks it does not
    // name this test), and the restore says so.
    std::fs::write(w.work.join("expect-restored"), b"").unwrap();
    let out = w.restore_wait(&["--ext-unix-sk-lose-peercred"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SO_PEERCRED named") && err.contains("it names cairn after the restore"),
        "the restore does not say SO_PEERCRED names cairn: {err}"
    );
    o.dgram.set_read_timeout(timeout).unwrap();
    let n = o
        .dgram
        .recv(&mut buf)
        .expect("the restored socket sends to its outside peer");
    assert_eq!(&buf[..n], b"after");
}

/// The original, after a dump refused for an outside peer, goes on and
/// passes its own checks.
#[test]
fn unix_external_peer_refused_untouched() {
    if skip_unless_root() {
        return;
    }
    let (mut w, _o) = start_ext("unix-ext-refused");
    let out = w.dump(&[]);
    assert_eq!(out.status.code(), Some(6), "{}", describe(&out));
    w.terminate_original_expect_pass();
}

/// A descriptor in flight (SCM_RIGHTS in a queue) is refused, naming the
/// pid and fd, after the tree was frozen and other queues were peeked at:
/// the failed dump leaves every queue, and the descriptor in flight, as
/// they were.
#[test]
fn unix_fd_in_flight_refused() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("unix_scm", &[]);
    let out = w.dump(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{}", describe(&out));
    assert!(
        err.contains(&format!("pid {}", w.pid))
            && err.contains("fd ")
            && err.contains("SCM_RIGHTS"),
        "unclear refusal: {err}"
    );
    w.terminate_original_expect_pass();
}

/// Descriptors in flight (SCM_RIGHTS) come back: the same open file
/// descriptions the tree holds (pipe ends, an eventfd, a regular file with
/// its offset), in datagram, seqpacket and stream queues (the stream write
/// that carried them is its own write again), several in one message, a
/// unix socket that only exists in flight with its own queue and peer,
/// and a writer's shutdown after a message with a descriptor.
#[test]
fn unix_inflight() {
    if skip_unless_root() {
        return;
    }
    if let Some(why) = unix_iter_missing() {
        note_skip(&why);
        return;
    }
    let w = checkpoint_restore("unix_inflight", &[]);
    let files = w.images.join("files.img");
    let text = run_cairn(
        &["show".into(), files.into(), "--json".into()],
        &w.dir.join("show"),
        CAIRN_TIMEOUT,
    );
    assert_ok(&text, "cairn show files.img --json");
    let j = String::from_utf8_lossy(&text.stdout);
    assert!(j.contains("\"fds\""), "{j}");
}

/// With --leave-running, peeking at the queues (which installs copies of
/// the descriptors in flight in cairn) leaves them all in place.
#[test]
fn unix_inflight_leave_running() {
    if skip_unless_root() {
        return;
    }
    if let Some(why) = unix_iter_missing() {
        note_skip(&why);
        return;
    }
    leave_running("unix_inflight", &[]);
}

/// Runs unix_inflight with `flag`, expects the dump refused with a message
/// naming the pid, an fd and every piece of `want`, and the original to
/// pass its own checks afterwards.
fn inflight_refused(flag: &str, want: &[&str]) {
    if let Some(why) = unix_iter_missing() {
        note_skip(&why);
        return;
    }
    let mut w = Workload::start("unix_inflight", &[flag]);
    let out = w.dump(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{}", describe(&out));
    assert!(
        err.contains(&format!("pid {}", w.pid))
            && err.contains("fd ")
            && want.iter().all(|x| err.contains(x)),
        "unclear refusal: {err}"
    );
    w.terminate_original_expect_pass();
}

/// A file in flight that no process of the tree holds (and that is not a
/// unix socket) is refused, naming the queue and the file.
#[test]
fn unix_inflight_standalone_file_refused() {
    if skip_unless_root() {
        return;
    }
    inflight_refused(
        "--standalone-file",
        &["SCM_RIGHTS", "/stat", "no process of the tree holds"],
    );
}

/// A unix socket in flight whose own queue holds a descriptor in flight
/// is refused (no recursion).
#[test]
fn unix_inflight_nested_refused() {
    if skip_unless_root() {
        return;
    }
    inflight_refused("--nested", &["SCM_RIGHTS", "inside descriptors in flight"]);
}

/// Sockets bound to path names whose files were removed, or replaced by
/// another file (a regular file, another socket's file): each is bound to
/// its own name again while the file that took the name is moved aside,
/// and the file comes back (same inode and contents); what was connected
/// through the name still works, a waiting connection is accepted.
#[test]
fn unix_deleted_and_replaced_names() {
    if skip_unless_root() {
        return;
    }
    let w = checkpoint_restore("unix_deleted", &[]);
    // Nothing cairn moved aside is left behind.
    let left: Vec<_> = std::fs::read_dir(&w.work)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("cairn-parked"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// An unconnected datagram socket with datagrams from several senders,
/// most of them closed (one leaving its socket file behind, which is
/// moved aside while a stand-in sender is bound there and comes back),
/// and a datagram socketpair end whose writer was closed: every datagram
/// comes back with its sender address, and the dead peer stays dead.
#[test]
fn unix_dgram_senders() {
    if skip_unless_root() {
        return;
    }
    checkpoint_restore("unix_dgram_senders", &[]);
}

/// Datagrams queued from a socket outside the tree that still has its
/// name are refused (their sender address could not be given back),
/// naming the pid, fd and sender; the original goes on untouched.
#[test]
fn unix_dgram_outside_sender_refused() {
    if skip_unless_root() {
        return;
    }
    let dir = fresh_dir("unix-dgram-outside");
    let me = dir.join("outside.sock");
    let out_sk = std::os::unix::net::UnixDatagram::bind(&me).unwrap();
    let mut w = Workload::start("unix_dgram_senders", &["--outside"]);
    out_sk.send_to(b"ext", w.work.join("rcv.sock")).unwrap();
    let out = w.dump(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{}", describe(&out));
    assert!(
        err.contains(&format!("pid {}", w.pid))
            && err.contains("fd ")
            && err.contains("outside.sock")
            && err.contains("outside the dumped tree"),
        "unclear refusal: {err}"
    );
    w.terminate_original_expect_pass();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Queued messages come back with their senders' credentials: a
/// datagram to a receiver with SO_PASSCRED, a stream written by the
/// process, its child and the process again (the receiver sets
/// SO_PASSCRED only after the restore and sees each writer's pid, reads
/// stopping where the writer changes), and a datagram to a receiver with
/// SO_PASSPIDFD whose pidfd is one of the child. (Was refused at dump.)
#[test]
fn unix_passcred_queue() {
    if skip_unless_root() {
        return;
    }
    // The workload leaves its SO_PASSPIDFD part out where the kernel
    // has no such option; the rest runs.
    if let Some(why) = sockopt_missing(
        libc::AF_UNIX,
        libc::SOCK_DGRAM,
        libc::SOL_SOCKET,
        76,
        "SO_PASSPIDFD",
    ) {
        note_skip(&format!("the SCM_PIDFD part only: {why}"));
    }
    checkpoint_restore("unix_passcred", &[]);
}

/// A queued message whose sender has exited cannot be written again with
/// its pid (the kernel wants a living process): the dump refuses, naming
/// pid, fd and the sender's pid, and leaves the queue as it was.
#[test]
fn unix_passcred_sender_exited_refused() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("unix_passcred", &["--exited"]);
    let out = w.dump(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{}", describe(&out));
    assert!(
        err.contains(&format!("pid {}", w.pid)) && err.contains("fd ") && err.contains("exited"),
        "unclear refusal: {err}"
    );
    w.terminate_original_expect_pass();
}

/// A connection waiting in a listener's backlog whose connecting process
/// has exited: the accepted socket's SO_PEERCRED names that process, and
/// a restore could only connect it again from cairn (its pid and
/// credentials). Refused at dump, naming the pid, the fd, the socket and
/// SO_PEERCRED, in both modes; the workload then accepts it and finds the
/// exited child's pid and credentials.
#[test]
fn unix_backlog_client_exited_refused() {
    if skip_unless_root() {
        return;
    }
    for flags in [&[][..], &["--leave-running"][..]] {
        let mut w = Workload::start("unix_backlog_gone", &[]);
        let r = common::refuse::expect_refused(
            &mut w,
            flags,
            &["fd ", "socket:[", "waiting to be accepted", "SO_PEERCRED"],
        );
        assert!(r.line.contains("sock.listen"), "{}", r.line);
    }
}

/// With --no-bpf, where descriptors in flight ride in a stream's queue
/// (the skb list, read with BPF) cannot be known: refused, naming the
/// pid, the fd, SCM_RIGHTS' reason and --no-bpf. (The BPF program was
/// loaded regardless of --no-bpf before.)
#[test]
fn unix_inflight_stream_no_bpf_refused() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("unix_inflight", &[]);
    common::refuse::expect_refused(
        &mut w,
        &["--no-bpf"],
        &["fd ", "descriptors in flight in a stream", "--no-bpf"],
    );
}

/// --ext-unix-sk with a datagram socket connected to an outside socket
/// whose name no longer leads to it (its file removed, or another file at
/// the path): a restore reconnects such a socket by name only, so it would
/// come back connected to no one. The dump refuses it before the tree is
/// touched, naming the pid, fd, both sockets and the reason; the process
/// goes on connected to its peer.
#[test]
fn unix_ext_dgram_peer_name_gone_refused() {
    if skip_unless_root() {
        return;
    }
    for replace in [false, true] {
        let dir = fresh_dir("unix-ext-dgram-gone");
        let path = dir.join("peer.sock");
        let peer = std::os::unix::net::UnixDatagram::bind(&path).expect("bind the outside peer");
        let mut w = Workload::start("unix_ext_dgram", &["--connect", path.to_str().unwrap()]);
        std::fs::remove_file(&path).unwrap();
        if replace {
            std::fs::write(&path, b"another file").unwrap();
        }
        common::refuse::dump_refused(
            w.pid,
            &w.images,
            &["--ext-unix-sk"],
            &[
                "fd 3",
                "unix dgram socket",
                "outside the dumped tree",
                "a name whose file was removed or is another file now",
                &format!("held by pid {}", std::process::id()),
            ],
        );
        w.terminate_original_expect_pass();
        let mut b = [0u8; 16];
        peer.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let n = peer
            .recv(&mut b)
            .expect("the original still sends to its peer");
        assert_eq!(&b[..n], b"after");
    }
}

/// --ext-unix-sk with a datagram socket whose outside peer has no name
/// (the other end of a socketpair, now held by this test only): refused at
/// dump, naming the pid, fd and reason; the process goes on.
#[test]
fn unix_ext_dgram_peer_unnamed_refused() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("unix_ext_dgram", &["--pair"]);
    let other = cairn::sys::sock::pidfd_getfd(w.pid, 100).expect("take the other end");
    std::fs::write(w.work.join("taken"), b"").unwrap();
    let closed = w.work.join("closed");
    let t0 = std::time::Instant::now();
    while !closed.exists() {
        assert!(
            t0.elapsed().as_secs() < 10,
            "the workload did not close its copy"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    common::refuse::dump_refused(
        w.pid,
        &w.images,
        &["--ext-unix-sk"],
        &[
            "fd 3",
            "outside the dumped tree",
            "has no name (unbound, or the other end of a socketpair)",
        ],
    );
    w.terminate_original_expect_pass();
    let peer = std::os::unix::net::UnixDatagram::from(other);
    peer.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut b = [0u8; 16];
    let n = peer
        .recv(&mut b)
        .expect("the original still sends to its peer");
    assert_eq!(&b[..n], b"after");
}
