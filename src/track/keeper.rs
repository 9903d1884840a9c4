//! The keeper: a small detached process that holds the dirty-tracking
//! state of one tree (its userfaultfds, and for every mechanism the layer
//! the tracking is relative to) from one cairn command to the next.
//!
//! It is cairn itself, re-executed with [`KEEPER_ARG`]; it is a child of
//! the cairn command that armed the tracking (never part of the target's
//! tree), starts its own session, and listens on the abstract unix socket
//! `cairn-track/<root pid>/<root start time>`. It answers one TAKE: it
//! sends the state and the fds to the caller, then exits; it also exits
//! when the tree's root exits. Both sides check that the other runs with
//! the same uid (root), so nobody else can take or forge the state.

use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

use protobuf::Message;

use crate::image::proto::TrackState;
use crate::sys::{fdpass, uffd};

/// First argument that makes `cairn` run as a keeper.
pub const KEEPER_ARG: &str = "__cairn-keeper";

const HOLD: u8 = b'H';
const TAKE: u8 = b'T';
const STATE: u8 = b'S';
const OK: u8 = b'K';

/// The socket name of a tree's keeper.
pub fn socket_name(root: i32, start_time: u64) -> String {
    format!("cairn-track/{root}/{start_time}")
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

fn check_peer(s: &UnixStream) -> std::io::Result<i32> {
    let (pid, uid) = fdpass::peer(s)?;
    if uid != euid() {
        return Err(std::io::Error::other(format!(
            "peer pid {pid} runs as uid {uid}, not {}",
            euid()
        )));
    }
    Ok(pid)
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(body.len() + 1);
    v.push(tag);
    v.extend_from_slice(body);
    v
}

/// Starts a keeper holding `state` and `fds`; returns its pid.
pub fn spawn(state: &TrackState, fds: &[RawFd]) -> Result<i32, String> {
    let name = socket_name(state.root_pid as i32, state.root_start_time);
    let exe = std::env::current_exe().map_err(|e| format!("cairn's own path: {e}"))?;
    let mut child = Command::new(exe)
        .arg(KEEPER_ARG)
        .arg(&name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start the keeper: {e}"))?;
    let pid = child.id() as i32;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    if line.trim() != "ready" {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("keeper {pid} did not start: {}", line.trim()));
    }
    let r = (|| -> std::io::Result<()> {
        let mut s = fdpass::connect_abstract(&name)?;
        let peer = check_peer(&s)?;
        if peer != pid {
            return Err(std::io::Error::other(format!(
                "{name} is held by pid {peer}, not by the keeper {pid}"
            )));
        }
        let body = state
            .write_to_bytes()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        fdpass::send_msg(&mut s, &message(HOLD, &body), fds)?;
        let (reply, _) = fdpass::recv_msg(&mut s)?;
        if reply.first() != Some(&OK) {
            return Err(std::io::Error::other("the keeper refused the state"));
        }
        Ok(())
    })();
    if let Err(e) = r {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("hand the tracking state to keeper {pid}: {e}"));
    }
    // Not waited for: it outlives this command (init reaps it).
    drop(child);
    Ok(pid)
}

/// Takes the state held by the keeper of (root, start time), which then
/// exits; `Ok(None)` when there is no keeper.
pub fn take(root: i32, start_time: u64) -> Result<Option<(TrackState, Vec<OwnedFd>)>, String> {
    let name = socket_name(root, start_time);
    let mut s = match fdpass::connect_abstract(&name) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ECONNREFUSED) | Some(libc::ENOENT)
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(format!("connect to {name}: {e}")),
    };
    let r = (|| -> std::io::Result<(TrackState, Vec<OwnedFd>, i32)> {
        let peer = check_peer(&s)?;
        fdpass::send_msg(&mut s, &[TAKE], &[])?;
        let (body, fds) = fdpass::recv_msg(&mut s)?;
        if body.first() != Some(&STATE) {
            return Err(std::io::Error::other("unexpected answer"));
        }
        let st = TrackState::parse_from_bytes(&body[1..])
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok((st, fds, peer))
    })();
    let (st, fds, peer) = r.map_err(|e| format!("take the tracking state from {name}: {e}"))?;
    // Our copies must be the only ones left before anything is changed.
    if let Ok(pfd) = uffd::pidfd_open(peer) {
        if !uffd::pidfd_wait(&pfd, 5000).unwrap_or(false) {
            return Err(format!("keeper {peer} did not exit after handing over"));
        }
    }
    if st.root_pid as i32 != root || st.root_start_time != start_time {
        return Err(format!("keeper {peer} held the state of another process"));
    }
    Ok(Some((st, fds)))
}

/// The keeper's main: `cairn __cairn-keeper NAME`. Returns the exit code.
pub fn run(name: &str) -> u8 {
    let _ = nix::unistd::setsid();
    let listener = match fdpass::listen_abstract(name) {
        Ok(l) => l,
        Err(e) => {
            println!("error: listen on {name}: {e}");
            return 1;
        }
    };
    println!("ready");
    // Nothing of the spawner stays open: stdout was its pipe.
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
    }
    // The first connection hands over the state.
    let held = (|| -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
        let mut s = fdpass::accept(&listener)?;
        check_peer(&s)?;
        let (body, fds) = fdpass::recv_msg(&mut s)?;
        if body.first() != Some(&HOLD) {
            return Err(std::io::Error::other("expected the state"));
        }
        fdpass::send_msg(&mut s, &[OK], &[])?;
        Ok((body[1..].to_vec(), fds))
    })();
    let Ok((state, fds)) = held else {
        return 1;
    };
    let Ok(st) = TrackState::parse_from_bytes(&state) else {
        return 1;
    };
    let Ok(root) = uffd::pidfd_open(st.root_pid as i32) else {
        return 0;
    };
    loop {
        let Ok((conn, gone)) = fdpass::poll2(&listener, &root, -1) else {
            return 1;
        };
        if gone {
            return 0;
        }
        if !conn {
            continue;
        }
        let Ok(mut s) = fdpass::accept(&listener) else {
            continue;
        };
        if check_peer(&s).is_err() {
            continue;
        }
        match fdpass::recv_msg(&mut s) {
            Ok((req, _)) if req.first() == Some(&TAKE) => {
                let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
                if fdpass::send_msg(&mut s, &message(STATE, &state), &raw).is_ok() {
                    return 0;
                }
            }
            _ => continue,
        }
    }
}
