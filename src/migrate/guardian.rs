//! The post-copy guardian: what makes a `cairn receive` killed during
//! post-copy (SIGKILL, OOM, a crash) unable to leave the restored tree
//! running on zeros.
//!
//! A userfaultfd's registrations end when its last descriptor is closed:
//! the kernel then unregisters every range and a missing page reads as
//! zero. So the receiver starts, before the restore, a process of its
//! own, `cairn __cairn-postcopy-guard PID` (cairn itself, in a session of
//! its own, deaf to SIGINT/SIGTERM/SIGHUP), and gives it over a unix
//! socketpair ([`fdpass`] messages) a duplicate of every userfaultfd the
//! pager gets, with a pidfd of its process: told by the restore before
//! the tree is let go, by the pager for a child forked later. While the
//! guardian lives the registrations stay, so a fault of a tree whose
//! receiver died waits instead of reading zeros.
//!
//! - The receiver dies (its end of the socket closes) before it said
//!   every page is in place ([`Link::done`]): the guardian SIGKILLs every
//!   process it was told of and every descendant of the restored root,
//!   waits until they are gone, and only then exits, closing the
//!   userfaultfds.
//! - The guardian dies: the pager polls the socket; its end makes the
//!   pager fail like a dead source (it kills the tree while it still
//!   holds its own descriptors, then closes them).
//!
//! So the tree either gets all its memory or dies; the one window left is
//! a receiver killed between reading a fork event and passing on the
//! child's new userfaultfd (a few instructions; that child is then killed
//! with the tree's other descendants, but may run for that moment).
//! Paging itself does not go on without the receiver: the channel and its
//! keys live there.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::sys::{fdpass, uffd};

/// First argument that makes `cairn` run as a post-copy guardian.
pub const ARG: &str = "__cairn-postcopy-guard";

/// How long the guardian waits for the killed tree to be gone before it
/// closes the userfaultfds anyway.
const GONE_TIMEOUT: Duration = Duration::from_secs(10);

/// The receiver's end of a post-copy guardian; shared by the restore
/// (which tells it each process's userfaultfd) and the pager.
pub struct Link {
    link: Mutex<UnixStream>,
    /// Another descriptor of the socket, for the pager to poll: readable
    /// when the guardian is gone.
    watch: UnixStream,
    child: Mutex<Option<Child>>,
    pid: u32,
}

fn gerr(pid: u32, what: &str, e: std::io::Error) -> Error {
    Error::Restore(format!(
        "post-copy guardian (pid {pid}): {what}: {e}; the tree is not left without it"
    ))
}

impl Link {
    /// Starts the guardian. Post-copy does not go on without one.
    pub fn start() -> Result<Link> {
        use std::os::unix::process::CommandExt;
        let t0 = Instant::now();
        let (ours, theirs) = UnixStream::pair().map_err(|e| gerr(0, "socketpair", e))?;
        let exe = std::env::current_exe().map_err(|e| gerr(0, "own executable", e))?;
        let child = Command::new(exe)
            .arg(ARG)
            .arg(std::process::id().to_string())
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| gerr(0, "start", e))?;
        let pid = child.id();
        let watch = ours.try_clone().map_err(|e| gerr(pid, "socket", e))?;
        crate::info!(
            "post-copy guardian started (pid {pid}) in {:?}",
            t0.elapsed()
        );
        Ok(Link {
            link: Mutex::new(ours),
            watch,
            child: Mutex::new(Some(child)),
            pid,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The descriptor to poll: readable once the guardian is gone (it
    /// never writes).
    pub fn watch_fd(&self) -> RawFd {
        self.watch.as_raw_fd()
    }

    fn send(&self, what: &str, payload: &[u8], fds: &[RawFd]) -> Result<()> {
        let mut l = self.link.lock().unwrap_or_else(|e| e.into_inner());
        fdpass::send_msg(&mut l, payload, fds).map_err(|e| gerr(self.pid, what, e))
    }

    /// Restored process `pid` gets missing pages through `uffd`: the
    /// guardian holds a duplicate of it and a pidfd of the process.
    pub fn tell_mm(&self, pid: i32, uffd: &impl AsRawFd) -> Result<()> {
        let pidfd = uffd::pidfd_open(pid).map_err(|e| Error::sys(pid, "pidfd_open", e))?;
        self.send(
            "passing a userfaultfd",
            format!("M {pid}").as_bytes(),
            &[uffd.as_raw_fd(), pidfd.as_raw_fd()],
        )
    }

    /// The userfaultfd of a child forked from a process with missing
    /// pages (its pid is not known here).
    pub fn tell_forked(&self, uffd: &impl AsRawFd) -> Result<()> {
        self.send("passing a userfaultfd", b"F", &[uffd.as_raw_fd()])
    }

    /// The restored root: its descendants are killed with it.
    pub fn tell_root(&self, root: i32) -> Result<()> {
        let pidfd = uffd::pidfd_open(root).map_err(|e| Error::sys(root, "pidfd_open", e))?;
        self.send(
            "passing the root",
            format!("R {root}").as_bytes(),
            &[pidfd.as_raw_fd()],
        )
    }

    /// Every page is in place: the guardian exits doing nothing.
    pub fn done(&self) -> Result<()> {
        self.send("done", b"D", &[])?;
        self.reap();
        Ok(())
    }

    /// The receiver failed and killed the tree itself: closes the socket
    /// (the guardian makes sure the tree is gone, then exits) and waits.
    pub fn abandon(&self) {
        let l = self.link.lock().unwrap_or_else(|e| e.into_inner());
        let _ = l.shutdown(std::net::Shutdown::Both);
        drop(l);
        self.reap();
    }

    /// Waits for the guardian (after [`Link::done`] or [`Link::abandon`]).
    fn reap(&self) {
        if let Some(mut c) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = c.wait();
        }
    }
}

/// What a guardian was told.
#[derive(Default)]
struct Told {
    /// (pid, pidfd, userfaultfd) of each restored process with missing
    /// pages.
    mms: Vec<(i32, OwnedFd, OwnedFd)>,
    /// Userfaultfds of forked children.
    forked: Vec<OwnedFd>,
    root: Option<(i32, OwnedFd)>,
    done: bool,
}

impl Told {
    fn take(&mut self, payload: &[u8], fds: Vec<OwnedFd>) {
        let line = String::from_utf8_lossy(payload);
        let f: Vec<&str> = line.split_whitespace().collect();
        let mut fds = fds.into_iter();
        match (f.as_slice(), fds.next(), fds.next()) {
            (["D"], _, _) => self.done = true,
            (["F"], Some(u), _) => self.forked.push(u),
            (["M", pid], Some(u), Some(p)) => {
                if let Ok(pid) = pid.parse() {
                    self.mms.push((pid, p, u));
                }
            }
            (["R", pid], Some(p), _) => {
                if let Ok(pid) = pid.parse() {
                    self.root = Some((pid, p));
                }
            }
            _ => {}
        }
    }

    /// SIGKILLs every process told of and every descendant of the root
    /// until none is left (or [`GONE_TIMEOUT`]); returns how many were
    /// killed and how many are still there.
    fn kill_all(&self) -> (usize, usize) {
        let mut killed = 0;
        let end = Instant::now() + GONE_TIMEOUT;
        loop {
            let mut alive: Vec<OwnedFd> = Vec::new();
            let told = self
                .mms
                .iter()
                .map(|(_, p, _)| p)
                .chain(self.root.as_ref().map(|(_, p)| p));
            for p in told {
                if !uffd::pidfd_wait(p, 0).unwrap_or(true) {
                    if uffd::pidfd_kill(p, libc::SIGKILL).is_ok() {
                        killed += 1;
                    }
                    if let Ok(d) = p.as_fd().try_clone_to_owned() {
                        alive.push(d);
                    }
                }
            }
            // The root's descendants, while it is the process told of (a
            // pid under a dead root could be anyone's by now).
            if let Some((root, p)) = &self.root {
                if !uffd::pidfd_wait(p, 0).unwrap_or(true) {
                    for pid in crate::procfs::descendants(*root).into_iter().skip(1) {
                        if let Ok(fd) = uffd::pidfd_open(pid) {
                            if uffd::pidfd_kill(&fd, libc::SIGKILL).is_ok() {
                                killed += 1;
                            }
                            alive.push(fd);
                        }
                    }
                }
            }
            let left = alive
                .iter()
                .filter(|fd| !uffd::pidfd_wait(*fd, 20).unwrap_or(true))
                .count();
            if left == 0 || Instant::now() > end {
                return (killed, left);
            }
        }
    }
}

/// `cairn __cairn-postcopy-guard PID`: see the module documentation.
/// Returns the exit code.
pub fn run(receiver: &str) -> u8 {
    let _ = nix::unistd::setsid();
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
        let _ = crate::sys::task::ignore_signal(sig);
    }
    // Two descriptors per process with missing pages.
    crate::guard::raise_nofile();
    let mut told = Told::default();
    let Ok(fd) = std::io::stdin().as_fd().try_clone_to_owned() else {
        return 1;
    };
    let mut link = UnixStream::from(fd);
    let lost = loop {
        match fdpass::recv_msg(&mut link) {
            Ok((payload, fds)) => {
                told.take(&payload, fds);
                // The receiver waits for us after this.
                if told.done {
                    return 0;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break None,
            // Lost the thread of the messages: the receiver may be alive,
            // but it can no longer count on us. Its pager sees this end
            // close and kills the tree itself; do the same.
            Err(e) => break Some(e),
        }
    };
    if told.mms.is_empty() && told.forked.is_empty() && told.root.is_none() {
        return 0;
    }
    let (killed, left) = told.kill_all();
    let why = match lost {
        Some(e) => format!("its messages are unreadable ({e})"),
        None => "it ended".into(),
    };
    eprintln!(
        "cairn: post-copy guardian: the receiver (pid {receiver}) was not done ({why}) while \
         pages were still missing: killed {killed} processes of the restored tree{} before \
         closing its {} userfaultfds",
        if left > 0 {
            format!(" ({left} still there after {GONE_TIMEOUT:?})")
        } else {
            String::new()
        },
        told.mms.len() + told.forked.len()
    );
    drop(told);
    u8::from(left > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guardian_messages() {
        let mut t = Told::default();
        let (a, b) = UnixStream::pair().unwrap();
        t.take(b"M 42", vec![OwnedFd::from(a), OwnedFd::from(b)]);
        t.take(b"M 43", vec![]);
        let (c, _d) = UnixStream::pair().unwrap();
        t.take(b"F", vec![OwnedFd::from(c)]);
        let (e, _f) = UnixStream::pair().unwrap();
        t.take(b"R 7", vec![OwnedFd::from(e)]);
        assert_eq!(t.mms.len(), 1);
        assert_eq!(t.mms[0].0, 42);
        assert_eq!(t.forked.len(), 1);
        assert_eq!(t.root.as_ref().map(|r| r.0), Some(7));
        assert!(!t.done);
        t.take(b"D", vec![]);
        assert!(t.done);
    }
}
