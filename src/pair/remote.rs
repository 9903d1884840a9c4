//! The backup on another machine (`cairn pair --backup-on`), for when
//! the primary's machine itself fails.
//!
//! ```text
//! backup machine:  cairn pair --listen ADDR:PORT --key FILE -D DIR [--pidfile P]
//! primary machine: cairn pair --backup-on ADDR:PORT --key FILE -D DIR [--interval DUR] -- CMD
//! ```
//!
//! The two talk over the migration channel ([`crate::migrate::channel`]:
//! one TCP connection, Noise `NNpsk0` with the key of `--key FILE`,
//! mutually authenticated and encrypted). A peer with another key is
//! refused at the handshake: the primary's `cairn pair` ends before
//! starting CMD, the listener logs the refusal and keeps listening.
//!
//! The primary's side takes its checkpoints as a local pair does (each
//! an incremental layer) and sends each one, whole, to the backup
//! machine ([`Msg::Ckpt`], its files, [`Msg::EndCkpt`]); libcairn's
//! nonrestart data goes too ([`Msg::Nonrestart`], sent once stored and
//! acknowledged here: a machine failure just after the acknowledgement
//! may lose that last data). No backup is kept on the primary's machine.
//! Every [`ALIVE_EVERY`] it sends [`Msg::Alive`] (from a thread, so also
//! while a dump runs).
//!
//! The backup machine stores each checkpoint under its name in its own
//! `-D DIR` (synced, then [`Msg::Stored`]), restores a backup from the
//! newest one and holds it just before it runs, exactly as a local pair
//! does (`hold`), and says [`Msg::Held`]. Checkpoints no backup needs
//! are removed as on the primary's side.
//!
//! The failure rule. The backup takes over (releases the held backup,
//! which runs from the newest checkpoint; its pid goes to `--pidfile`)
//! when
//! - the primary's side says the primary failed ([`Msg::Failed`]: an
//!   exit status other than 0 or a signal, the local pair's rule), or
//! - the connection is lost without [`Msg::End`]: it closes, fails, or
//!   nothing comes for [`PEER_TIMEOUT`] (the primary's machine died, its
//!   `cairn pair` was killed, or the network is cut).
//!
//! [`Msg::End`] (the primary exited 0, or its `cairn pair` got SIGTERM,
//! SIGINT or SIGHUP, or ended on an error) ends the backup too: the
//! listener kills the held backup and exits 0. After a takeover the
//! backup machine goes on as a local pair of the new primary (a
//! checkpoint every interval, the primary's `--interval` unless the
//! listener has its own, and a held backup on that machine), listening
//! for libcairn under the primary's control socket name.
//!
//! Split brain: with two machines and no third party, a cut network
//! looks, from the backup's side, exactly like a dead primary: both then
//! run the program. `--fence CMD` on the listener runs CMD (with `sh
//! -c`, the primary's address in `CAIRN_PAIR_PEER`) before a takeover for
//! a lost connection; the takeover happens only if CMD exits 0 (e.g. it
//! powered the primary's machine off through its management board);
//! otherwise the listener ends without running the program. A
//! [`Msg::Failed`] needs no fence: the primary's side said so.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::migrate::channel::{self, Channel, MAX_PLAIN};
use crate::sys::safefs;

/// The version of [`Msg::Hello`].
pub const VERSION: u32 = 1;
/// How often the primary's side says it is alive.
pub const ALIVE_EVERY: Duration = Duration::from_millis(500);
/// Nothing from the primary's side for this long: the connection is
/// lost.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one message may take to arrive once it began.
const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// The messages (inside the channel's frames): a tag byte, then
/// little-endian integers and strings (`u16` length, UTF-8). The tags
/// are apart from `cairn migrate`'s, so that either refuses the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Primary's side, the handshake's payload: its interval, and the
    /// name of its control socket (empty: none).
    Hello {
        version: u32,
        interval_ms: u64,
        control: String,
    },
    /// Backup's side, the handshake's answer.
    Welcome {
        version: u32,
    },
    /// A checkpoint follows: its name (`ckpt-N`), the sequence number of
    /// the full checkpoint its chain starts at, the key of the program's
    /// control connection (empty: none) and the restart checkpoint
    /// (pid, request id) it was taken for (0, 0: none).
    Ckpt {
        name: String,
        base: u64,
        key: String,
        restart: (u32, u32),
    },
    File {
        name: String,
        size: u64,
    },
    Data(Vec<u8>),
    EndCkpt,
    /// Backup's side: the checkpoint is on its disk.
    Stored {
        name: String,
    },
    /// Backup's side: a backup from this checkpoint is held.
    Held {
        name: String,
    },
    /// libcairn's newest nonrestart data.
    Nonrestart(Vec<u8>),
    Alive,
    /// The primary failed with this status: take over.
    Failed {
        code: i32,
    },
    /// The pair ends on purpose: the backup ends too.
    End,
}

const T_HELLO: u8 = 0x61;

use crate::migrate::wire::{put_str, Cursor as Cur};

impl Msg {
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Vec::new();
        match self {
            Msg::Hello {
                version,
                interval_ms,
                control,
            } => {
                o.push(T_HELLO);
                o.extend_from_slice(&version.to_le_bytes());
                o.extend_from_slice(&interval_ms.to_le_bytes());
                put_str(&mut o, control);
            }
            Msg::Welcome { version } => {
                o.push(0x62);
                o.extend_from_slice(&version.to_le_bytes());
            }
            Msg::Ckpt {
                name,
                base,
                key,
                restart,
            } => {
                o.push(0x63);
                put_str(&mut o, name);
                o.extend_from_slice(&base.to_le_bytes());
                put_str(&mut o, key);
                o.extend_from_slice(&restart.0.to_le_bytes());
                o.extend_from_slice(&restart.1.to_le_bytes());
            }
            Msg::File { name, size } => {
                o.push(0x64);
                put_str(&mut o, name);
                o.extend_from_slice(&size.to_le_bytes());
            }
            Msg::Data(d) => {
                o.push(0x65);
                o.extend_from_slice(d);
            }
            Msg::EndCkpt => o.push(0x66),
            Msg::Stored { name } => {
                o.push(0x67);
                put_str(&mut o, name);
            }
            Msg::Held { name } => {
                o.push(0x68);
                put_str(&mut o, name);
            }
            Msg::Nonrestart(d) => {
                o.push(0x69);
                o.extend_from_slice(d);
            }
            Msg::Alive => o.push(0x6a),
            Msg::Failed { code } => {
                o.push(0x6b);
                o.extend_from_slice(&code.to_le_bytes());
            }
            Msg::End => o.push(0x6c),
        }
        o
    }

    pub fn decode(b: &[u8]) -> std::result::Result<Msg, String> {
        let (&tag, rest) = b.split_first().ok_or("empty message")?;
        let mut c = Cur(rest);
        let m = match tag {
            T_HELLO => Msg::Hello {
                version: c.u32()?,
                interval_ms: c.u64()?,
                control: c.str()?,
            },
            0x62 => Msg::Welcome { version: c.u32()? },
            0x63 => Msg::Ckpt {
                name: c.str()?,
                base: c.u64()?,
                key: c.str()?,
                restart: (c.u32()?, c.u32()?),
            },
            0x64 => Msg::File {
                name: c.str()?,
                size: c.u64()?,
            },
            0x65 => return Ok(Msg::Data(rest.to_vec())),
            0x66 => Msg::EndCkpt,
            0x67 => Msg::Stored { name: c.str()? },
            0x68 => Msg::Held { name: c.str()? },
            0x69 => {
                if rest.len() > crate::control::proto::DATA_MAX {
                    return Err("nonrestart data too long".into());
                }
                return Ok(Msg::Nonrestart(rest.to_vec()));
            }
            0x6a => Msg::Alive,
            0x6b => Msg::Failed {
                code: c.u32()? as i32,
            },
            0x6c => Msg::End,
            t => return Err(format!("not a message of cairn pair (tag {t:#x})")),
        };
        if !c.0.is_empty() {
            return Err(format!("{} trailing bytes", c.0.len()));
        }
        Ok(m)
    }
}

fn proto_err(peer: &str, why: impl std::fmt::Display) -> Error {
    Error::io(
        Path::new(peer),
        std::io::Error::other(format!("cairn pair protocol: {why}")),
    )
}

/// The primary's side of the connection to the backup machine.
pub struct Link {
    ch: Arc<Mutex<Channel>>,
    /// A copy of the socket, to poll.
    fd: OwnedFd,
    stop: Arc<AtomicBool>,
    beat: Option<std::thread::JoinHandle<()>>,
    pub peer: String,
    /// The newest checkpoint a backup is held from there.
    pub held: Option<String>,
    told: bool,
}

impl Link {
    /// Connects to the listener at `addr` with the key in `key`.
    pub fn connect(addr: &str, key: &Path, interval: Duration, control: &str) -> Result<Link> {
        let key = channel::read_key(key)?;
        let hello = Msg::Hello {
            version: VERSION,
            interval_ms: interval.as_millis() as u64,
            control: control.to_string(),
        };
        let (ch, answer) = Channel::connect(addr, &key, &hello.encode())?;
        match Msg::decode(&answer) {
            Ok(Msg::Welcome { version: VERSION }) => {}
            Ok(m) => return Err(proto_err(addr, format!("expected Welcome, got {m:?}"))),
            Err(e) => return Err(proto_err(addr, e)),
        }
        let fd = ch
            .fd()
            .try_clone_to_owned()
            .map_err(|e| Error::io(Path::new(addr), e))?;
        let ch = Arc::new(Mutex::new(ch));
        let stop = Arc::new(AtomicBool::new(false));
        let beat = {
            let (ch, stop) = (ch.clone(), stop.clone());
            std::thread::Builder::new()
                .name("pair-alive".into())
                .spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        std::thread::sleep(ALIVE_EVERY);
                        let mut c = ch.lock().unwrap_or_else(|e| e.into_inner());
                        if stop.load(Ordering::SeqCst) || c.send(&Msg::Alive.encode()).is_err() {
                            return;
                        }
                    }
                })
                .map_err(|e| Error::io(Path::new(addr), e))?
        };
        Ok(Link {
            ch,
            fd,
            stop,
            beat: Some(beat),
            peer: addr.to_string(),
            held: None,
            told: false,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Channel> {
        self.ch.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The fd to poll for [`Link::read`].
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Sends checkpoint `name` (the directory `dir`): every image file,
    /// `inventory.img` last.
    pub fn send_ckpt(
        &mut self,
        dir: &Path,
        name: &str,
        base: u64,
        key: Option<String>,
        restart: Option<(u32, u32)>,
    ) -> Result<u64> {
        let fd = safefs::open_dir(dir).map_err(|e| Error::io(dir, e))?;
        let mut files: Vec<String> = safefs::list(&fd)
            .map_err(|e| Error::io(dir, e))?
            .into_iter()
            .filter_map(|(n, _)| n.into_string().ok())
            .filter(|n| crate::image::is_image_name(n))
            .collect();
        files.sort_by_key(|n| (n == crate::image::names::INVENTORY, n.clone()));
        let mut ch = self.lock();
        let before = ch.sent;
        ch.send(
            &Msg::Ckpt {
                name: name.to_string(),
                base,
                key: key.unwrap_or_default(),
                restart: restart.unwrap_or((0, 0)),
            }
            .encode(),
        )?;
        let mut buf = vec![0u8; MAX_PLAIN];
        for f in files {
            let (mut file, st) =
                safefs::open_regular(&fd, &f).map_err(|e| Error::io(dir.join(&f), e))?;
            let mut left = st.st_size as u64;
            ch.send(
                &Msg::File {
                    name: f.clone(),
                    size: left,
                }
                .encode(),
            )?;
            while left > 0 {
                let n = left.min((MAX_PLAIN - 1) as u64) as usize;
                buf[0] = 0x65; // Msg::Data
                file.read_exact(&mut buf[1..1 + n])
                    .map_err(|e| Error::io(dir.join(&f), e))?;
                ch.send(&buf[..1 + n])?;
                left -= n as u64;
            }
        }
        ch.send(&Msg::EndCkpt.encode())?;
        Ok(ch.sent - before)
    }

    /// Sends libcairn's newest nonrestart data.
    pub fn send_data(&mut self, d: &[u8]) -> Result<()> {
        self.lock().send(&Msg::Nonrestart(d.to_vec()).encode())
    }

    /// A message from the backup machine (call when [`Link::fd`] is
    /// readable); an error when the connection is lost.
    pub fn read(&mut self) -> Result<Msg> {
        let mut ch = self.lock();
        let peer = ch.peer.clone();
        Msg::decode(ch.recv(FRAME_TIMEOUT)?).map_err(|e| proto_err(&peer, e))
    }

    /// Tells the backup machine how the primary ended: `Some(code)`, it
    /// failed (take over); `None`, the pair ends on purpose. Once.
    pub fn tell(&mut self, failed: Option<i32>) -> Result<()> {
        if self.told {
            return Ok(());
        }
        self.told = true;
        self.stop.store(true, Ordering::SeqCst);
        let m = match failed {
            Some(code) => Msg::Failed { code },
            None => Msg::End,
        };
        self.lock().send(&m.encode())
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(b) = self.beat.take() {
            let _ = b.join();
        }
    }
}

/// The backup machine's side of one primary: the connection, and what
/// the primary said in its Hello.
pub struct Upstream {
    pub ch: Channel,
    pub interval: Duration,
    pub control: String,
    pub last: Instant,
}

/// Listens on `addr` and returns the first primary that authenticates;
/// connections that fail the handshake (another key, not cairn pair) are
/// logged and ignored.
/// `None` when SIGTERM, SIGINT or SIGHUP came first (on `sfd`).
pub fn accept_primary(
    listener: &std::net::TcpListener,
    key: &channel::Key,
    sfd: &nix::sys::signalfd::SignalFd,
) -> Option<Upstream> {
    loop {
        let ready =
            crate::sys::pairpoll::poll_in(&[sfd.as_fd(), listener.as_fd()], -1).unwrap_or_default();
        if ready.first() == Some(&true) {
            while let Ok(Some(info)) = sfd.read_signal() {
                let s = info.ssi_signo as i32;
                if s == libc::SIGTERM || s == libc::SIGINT || s == libc::SIGHUP {
                    crate::log::write(0, format_args!("pair: signal {s}: exit 0"));
                    return None;
                }
            }
            continue;
        }
        let (stream, peer) = match listener.accept() {
            Ok(x) => x,
            Err(e) => {
                warn!("pair: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let mut hello = None;
        let r = Channel::accept(stream, key, |p| {
            let m = Msg::decode(p).map_err(|e| proto_err(&peer.to_string(), e))?;
            let Msg::Hello { version, .. } = &m else {
                return Err(proto_err(&peer.to_string(), "expected Hello"));
            };
            if *version != VERSION {
                return Err(proto_err(
                    &peer.to_string(),
                    format!("version {version}, this cairn speaks {VERSION}"),
                ));
            }
            hello = Some(m);
            Ok(Msg::Welcome { version: VERSION }.encode())
        });
        match (r, hello) {
            (
                Ok((ch, _)),
                Some(Msg::Hello {
                    interval_ms,
                    control,
                    ..
                }),
            ) => {
                crate::log::write(
                    0,
                    format_args!("pair: the primary's side on {peer} connected (authenticated)"),
                );
                return Some(Upstream {
                    ch,
                    interval: Duration::from_millis(interval_ms.max(1)),
                    control,
                    last: Instant::now(),
                });
            }
            (Err(e), _) => eprintln!("cairn: pair: connection from {peer} refused: {e}"),
            (Ok(_), _) => eprintln!("cairn: pair: connection from {peer} refused: no Hello"),
        }
    }
}

impl Upstream {
    /// The primary's side's address.
    pub fn peer(&self) -> String {
        self.ch.peer.clone()
    }

    /// The next message, waiting at most `timeout` for its start.
    pub fn next(&mut self, timeout: Duration) -> Result<Msg> {
        let peer = self.ch.peer.clone();
        let m = Msg::decode(self.ch.recv(timeout)?).map_err(|e| proto_err(&peer, e))?;
        self.last = Instant::now();
        Ok(m)
    }

    /// Receives the files of checkpoint `name` into the new private
    /// directory `name` of `dir` (at `path`), up to [`Msg::EndCkpt`],
    /// and syncs them. A failure leaves the directory for the caller to
    /// remove.
    pub fn recv_ckpt(&mut self, dir: &OwnedFd, path: &Path, name: &str) -> Result<()> {
        let cpath = path.join(name);
        let cfd = safefs::mkdir_private(dir, std::ffi::OsStr::new(name))
            .map_err(|e| Error::io(&cpath, e))?;
        let r = self.recv_files(&cfd, &cpath);
        if r.is_err() {
            let me = rustix::process::geteuid().as_raw();
            let _ = safefs::remove_dir_by_fd(dir, std::ffi::OsStr::new(name), Some(me));
        }
        r?;
        safefs::sync(dir).map_err(|e| Error::io(path, e))?;
        Ok(())
    }

    /// The files of a checkpoint into `cfd` (at `cpath`).
    fn recv_files(&mut self, cfd: &OwnedFd, cpath: &Path) -> Result<()> {
        let mut file: Option<(String, std::fs::File, u64)> = None;
        let mut seen = std::collections::HashSet::new();
        loop {
            match self.next(FRAME_TIMEOUT)? {
                Msg::File { name: f, size } => {
                    if file.is_some()
                        || !crate::migrate::wire::image_name_ok(&f)
                        || !seen.insert(f.clone())
                        || seen.len() > crate::migrate::receiver::MAX_FILES
                    {
                        return Err(proto_err(&self.ch.peer, format!("refused file {f:?}")));
                    }
                    let h = safefs::create_excl(cfd, std::ffi::OsStr::new(&f), 0o600)
                        .map_err(|e| Error::io(cpath.join(&f), e))?;
                    file = Some((f, h, size));
                }
                Msg::Data(d) => {
                    let Some((f, h, left)) = file.as_mut() else {
                        return Err(proto_err(&self.ch.peer, "Data outside a file"));
                    };
                    if d.len() as u64 > *left {
                        return Err(proto_err(&self.ch.peer, format!("{f}: too many bytes")));
                    }
                    h.write_all(&d).map_err(|e| Error::io(cpath.join(&*f), e))?;
                    *left -= d.len() as u64;
                }
                Msg::EndCkpt => break,
                Msg::Alive => {}
                m => {
                    return Err(proto_err(
                        &self.ch.peer,
                        format!("{m:?} inside a checkpoint"),
                    ))
                }
            }
            if let Some((f, h, 0)) = &file {
                h.sync_all().map_err(|e| Error::io(cpath.join(f), e))?;
                file = None;
            }
        }
        if let Some((f, _, left)) = file {
            return Err(proto_err(
                &self.ch.peer,
                format!("{f}: {left} bytes missing"),
            ));
        }
        safefs::sync(cfd).map_err(|e| Error::io(cpath, e))
    }

    /// Tells the primary's side (best effort: it may be gone).
    pub fn say(&mut self, m: &Msg) {
        if let Err(e) = self.ch.send(&m.encode()) {
            info!("pair: {e}");
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.ch.fd()
    }
}

/// Runs the fence command `cmd` (`sh -c`) before a takeover for a lost
/// connection; whether it exited 0.
pub fn fence(cmd: &str, peer: &str) -> bool {
    crate::log::write(0, format_args!("pair: fence: running {cmd:?}"));
    match std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .env("CAIRN_PAIR_PEER", peer)
        .stdin(std::process::Stdio::null())
        .status()
    {
        Ok(st) if st.success() => true,
        Ok(st) => {
            warn!("pair: fence {cmd:?} failed ({st}): no takeover");
            false
        }
        Err(e) => {
            warn!("pair: fence {cmd:?}: {e}: no takeover");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let all = [
            Msg::Hello {
                version: VERSION,
                interval_ms: 1000,
                control: "cairn-control-1-2".into(),
            },
            Msg::Welcome { version: 1 },
            Msg::Ckpt {
                name: "ckpt-000003".into(),
                base: 1,
                key: "socket:[77]".into(),
                restart: (4, 5),
            },
            Msg::File {
                name: "inventory.img".into(),
                size: 9,
            },
            Msg::Data(vec![1, 2, 3]),
            Msg::EndCkpt,
            Msg::Stored { name: "x".into() },
            Msg::Held { name: "y".into() },
            Msg::Nonrestart(vec![9; 10]),
            Msg::Alive,
            Msg::Failed { code: -9 },
            Msg::End,
        ];
        for m in all {
            assert_eq!(Msg::decode(&m.encode()), Ok(m.clone()), "{m:?}");
        }
        // A migration's Hello (tag 1) is not a pair's.
        assert!(Msg::decode(&[1, 0, 0]).is_err());
        assert!(Msg::decode(&[0x6c, 0]).is_err());
        assert!(Msg::decode(&[0x64, 9]).is_err());
    }
}
