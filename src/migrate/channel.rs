//! The migration channel: one TCP connection carrying Noise
//! `NNpsk0_25519_ChaChaPoly_BLAKE2s` messages (the `snow` crate). Both
//! ends hold the same pre-shared key (`--key FILE`), mixed into the
//! handshake before anything else: a peer without it can neither read
//! the first message (its payload is encrypted and authenticated with a
//! key derived from the PSK) nor answer it, and every later message is
//! encrypted and authenticated with keys that also depend on ephemeral
//! Diffie-Hellman (forward secrecy). The handshake is two messages; the
//! initiator (the source) learns that the responder holds the key when it
//! decrypts the answer, the responder when it decrypts the first message.
//!
//! Framing: a big-endian `u16` length, then one Noise message of at most
//! 65535 bytes (the Noise limit), so a reader never allocates more than
//! one such buffer whatever the peer sends.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use blake2::{Blake2s256, Digest};
use rustix::fs::{FileType, OFlags};

use crate::error::{Error, Result};
use crate::sys::safefs;

/// The Noise protocol of the channel.
pub const NOISE: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// Bound to the handshake: a peer speaking another version fails it.
const PROLOGUE: &[u8] = b"cairn live migration, protocol 1";
/// The largest Noise message.
pub const MAX_FRAME: usize = 65535;
/// The largest plaintext of one message (the AEAD tag takes 16 bytes).
pub const MAX_PLAIN: usize = MAX_FRAME - 16;
/// Limits of the key file's contents.
pub const KEY_MIN: u64 = 16;
pub const KEY_MAX: u64 = 4096;

/// The 32-byte pre-shared key derived from the key file.
pub struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

fn key_err(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::Usage(format!("--key {}: {why}", path.display()))
}

/// Reads the key file: a regular file (the last component is never
/// followed: `O_NOFOLLOW`), owned by root or the caller, neither readable
/// nor writable by group or others, of 16 to 4096 bytes. The secret may
/// have any bytes; the Noise PSK is its BLAKE2s-256 hash (with a domain
/// string), so a key of any length gives a 32-byte PSK.
pub fn read_key(path: &Path) -> Result<Key> {
    let (dir, name) = safefs::open_parent(path).map_err(|e| key_err(path, e))?;
    let fd = safefs::openat_nofollow(&dir, &name, OFlags::RDONLY | OFlags::NONBLOCK, 0)
        .map_err(|e| key_err(path, e))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| key_err(path, std::io::Error::from(e)))?;
    check_key_stat(&st).map_err(|why| key_err(path, why))?;
    let mut secret = Vec::new();
    std::fs::File::from(fd)
        .take(KEY_MAX + 1)
        .read_to_end(&mut secret)
        .map_err(|e| key_err(path, e))?;
    if (secret.len() as u64) < KEY_MIN || secret.len() as u64 > KEY_MAX {
        return Err(key_err(
            path,
            format!(
                "holds {} bytes; a key has {KEY_MIN} to {KEY_MAX} (e.g. `head -c 32 /dev/urandom`)",
                secret.len()
            ),
        ));
    }
    Ok(derive(&secret))
}

/// The checks of the key file's metadata.
fn check_key_stat(st: &rustix::fs::Stat) -> std::result::Result<(), String> {
    let ft = safefs::file_type(st);
    if ft != FileType::RegularFile {
        return Err(format!(
            "is a {}, not a regular file",
            safefs::type_name(ft)
        ));
    }
    let euid = rustix::process::geteuid().as_raw();
    if st.st_uid != 0 && st.st_uid != euid {
        return Err(format!(
            "owned by uid {}, neither root nor the caller (uid {euid})",
            st.st_uid
        ));
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "mode {mode:04o}: group or others may access it; a key must be private (chmod 600)"
        ));
    }
    if st.st_size as u64 > KEY_MAX {
        return Err(format!("{} bytes, more than {KEY_MAX}", st.st_size));
    }
    Ok(())
}

/// The PSK for a secret.
pub fn derive(secret: &[u8]) -> Key {
    let mut h = Blake2s256::new();
    h.update(b"cairn-migrate psk 1\0");
    h.update(secret);
    Key(h.finalize().into())
}

fn net_err(peer: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::io(
        std::path::Path::new(peer),
        std::io::Error::other(format!("{what}: {e}")),
    )
}

/// One end of an established channel.
pub struct Channel {
    stream: TcpStream,
    noise: snow::TransportState,
    buf: Vec<u8>,
    /// A frame being sent: its length, then the Noise message.
    out: Vec<u8>,
    plain: Vec<u8>,
    /// The peer's address, for messages.
    pub peer: String,
    /// Bytes written to the socket (frames included).
    pub sent: u64,
}

fn builder(key: &Key) -> Result<snow::Builder<'_>> {
    let params: snow::params::NoiseParams = NOISE
        .parse()
        .map_err(|e| Error::Usage(format!("noise parameters {NOISE}: {e:?}")))?;
    Ok(snow::Builder::new(params).prologue(PROLOGUE).psk(0, &key.0))
}

fn write_frame(stream: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| std::io::Error::other("frame too long"))?;
    let mut out = Vec::with_capacity(2 + msg.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    stream.write_all(&out)
}

/// Encrypts `plain` into `buf[2..]` and puts its length before it, so
/// that the frame goes out with one write and no copy of the message
/// (`buf` holds `2 + MAX_FRAME` bytes). Returns the frame's length.
fn seal_frame(
    noise: &mut snow::TransportState,
    plain: &[u8],
    buf: &mut [u8],
    peer: &str,
) -> Result<usize> {
    if plain.len() > MAX_PLAIN {
        return Err(net_err(peer, "send", "message too long"));
    }
    let n = noise
        .write_message(plain, &mut buf[2..])
        .map_err(|e| net_err(peer, "encrypt", e))?;
    buf[..2].copy_from_slice(&(n as u16).to_be_bytes());
    Ok(n + 2)
}

/// Reads one frame into `buf` (at most [`MAX_FRAME`] bytes): its length.
fn read_frame(stream: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let n = u16::from_be_bytes(len) as usize;
    if n == 0 {
        return Err(std::io::Error::other("empty frame"));
    }
    stream.read_exact(&mut buf[..n])?;
    Ok(n)
}

/// Binds a listener on `addr` (ADDR:PORT); returns it and the address it
/// got (for messages: a port 0 becomes the real one).
pub fn listen(addr: &str) -> Result<(std::net::TcpListener, String)> {
    let l = std::net::TcpListener::bind(addr).map_err(|e| net_err(addr, "listen", e))?;
    let local = l
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| addr.to_string());
    Ok((l, local))
}

/// How long the handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl Channel {
    /// Connects to `addr` and runs the handshake as initiator with
    /// `hello` as the first message's (encrypted) payload; returns the
    /// channel and the responder's payload.
    pub fn connect(addr: &str, key: &Key, hello: &[u8]) -> Result<(Channel, Vec<u8>)> {
        let sa = addr
            .to_socket_addrs()
            .map_err(|e| net_err(addr, "address", e))?
            .next()
            .ok_or_else(|| net_err(addr, "address", "resolves to nothing"))?;
        let stream = TcpStream::connect_timeout(&sa, HANDSHAKE_TIMEOUT)
            .map_err(|e| net_err(addr, "connect", e))?;
        Channel::initiate(stream, addr, key, hello)
    }

    /// Runs the handshake as initiator on a connected `stream` (to
    /// `addr`, for messages), as [`Channel::connect`] does.
    pub fn initiate(
        mut stream: TcpStream,
        addr: &str,
        key: &Key,
        hello: &[u8],
    ) -> Result<(Channel, Vec<u8>)> {
        let _ = stream.set_nodelay(true);
        set_timeouts(&stream, HANDSHAKE_TIMEOUT).map_err(|e| net_err(addr, "socket", e))?;
        let mut hs = builder(key)?
            .build_initiator()
            .map_err(|e| net_err(addr, "noise", e))?;
        let mut buf = vec![0u8; MAX_FRAME];
        let n = hs
            .write_message(hello, &mut buf)
            .map_err(|e| net_err(addr, "handshake", e))?;
        write_frame(&mut stream, &buf[..n]).map_err(|e| net_err(addr, "handshake", e))?;
        let n = read_frame(&mut stream, &mut buf).map_err(|e| {
            net_err(
                addr,
                "handshake",
                format!("{e} (the receiver closed the connection: a wrong key?)"),
            )
        })?;
        let mut payload = vec![0u8; MAX_FRAME];
        let p = hs.read_message(&buf[..n], &mut payload).map_err(|e| {
            net_err(
                addr,
                "handshake",
                format!("the receiver's answer does not authenticate ({e:?}): it has another key"),
            )
        })?;
        payload.truncate(p);
        let noise = hs
            .into_transport_mode()
            .map_err(|e| net_err(addr, "handshake", e))?;
        Ok((
            Channel {
                stream,
                noise,
                buf,
                out: vec![0u8; 2 + MAX_FRAME],
                plain: vec![0u8; MAX_FRAME],
                peer: addr.to_string(),
                sent: 0,
            },
            payload,
        ))
    }

    /// Runs the handshake as responder on an accepted connection:
    /// `answer` gets the initiator's payload (authenticated) and returns
    /// the payload of the answer.
    pub fn accept(
        mut stream: TcpStream,
        key: &Key,
        answer: impl FnOnce(&[u8]) -> Result<Vec<u8>>,
    ) -> Result<(Channel, Vec<u8>)> {
        let peer = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "peer".into());
        let _ = stream.set_nodelay(true);
        set_timeouts(&stream, HANDSHAKE_TIMEOUT).map_err(|e| net_err(&peer, "socket", e))?;
        let mut hs = builder(key)?
            .build_responder()
            .map_err(|e| net_err(&peer, "noise", e))?;
        let mut buf = vec![0u8; MAX_FRAME];
        let n = read_frame(&mut stream, &mut buf).map_err(|e| net_err(&peer, "handshake", e))?;
        let mut payload = vec![0u8; MAX_FRAME];
        let p = hs.read_message(&buf[..n], &mut payload).map_err(|e| {
            net_err(
                &peer,
                "handshake",
                format!("refused: the first message does not authenticate ({e:?}): the peer has another key or is not cairn"),
            )
        })?;
        payload.truncate(p);
        let reply = answer(&payload)?;
        let n = hs
            .write_message(&reply, &mut buf)
            .map_err(|e| net_err(&peer, "handshake", e))?;
        write_frame(&mut stream, &buf[..n]).map_err(|e| net_err(&peer, "handshake", e))?;
        let noise = hs
            .into_transport_mode()
            .map_err(|e| net_err(&peer, "handshake", e))?;
        Ok((
            Channel {
                stream,
                noise,
                buf,
                out: vec![0u8; 2 + MAX_FRAME],
                plain: vec![0u8; MAX_FRAME],
                peer,
                sent: 0,
            },
            payload,
        ))
    }

    /// Sends one message of at most [`MAX_PLAIN`] bytes.
    pub fn send(&mut self, plain: &[u8]) -> Result<()> {
        let n = seal_frame(&mut self.noise, plain, &mut self.out, &self.peer)?;
        self.stream
            .write_all(&self.out[..n])
            .map_err(|e| net_err(&self.peer, "send", e))?;
        self.sent += n as u64;
        Ok(())
    }

    /// Receives one message (decrypted and authenticated), waiting at
    /// most `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Result<&[u8]> {
        self.stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| net_err(&self.peer, "socket", e))?;
        let n = read_frame(&mut self.stream, &mut self.buf).map_err(|e| {
            let why = match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                    format!("nothing for {timeout:?}")
                }
                std::io::ErrorKind::UnexpectedEof => "the peer closed the connection".into(),
                _ => e.to_string(),
            };
            net_err(&self.peer, "receive", why)
        })?;
        let p = self
            .noise
            .read_message(&self.buf[..n], &mut self.plain)
            .map_err(|e| net_err(&self.peer, "decrypt", format!("{e:?}")))?;
        Ok(&self.plain[..p])
    }

    /// The socket, for polling.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.stream.as_fd()
    }

    /// Splits the channel into a sending and a receiving half, for a
    /// reader thread beside a writer: each half has its own socket
    /// handle, and they share the Noise state only to encrypt or decrypt
    /// (one sender and one receiver keep each direction's nonces in
    /// order).
    pub fn split(self) -> Result<(ChannelSender, ChannelReceiver)> {
        let reader = self
            .stream
            .try_clone()
            .map_err(|e| net_err(&self.peer, "socket", e))?;
        let noise = std::sync::Arc::new(std::sync::Mutex::new(self.noise));
        Ok((
            ChannelSender {
                stream: self.stream,
                noise: noise.clone(),
                buf: self.out,
                peer: self.peer.clone(),
            },
            ChannelReceiver {
                stream: reader,
                noise,
                buf: self.buf,
                plain: self.plain,
                peer: self.peer,
            },
        ))
    }
}

type SharedNoise = std::sync::Arc<std::sync::Mutex<snow::TransportState>>;

fn lock_noise(n: &SharedNoise) -> std::sync::MutexGuard<'_, snow::TransportState> {
    n.lock().unwrap_or_else(|e| e.into_inner())
}

/// The sending half of a [`Channel::split`] channel; dropping it shuts
/// the connection down for writing (the peer reads EOF).
pub struct ChannelSender {
    stream: TcpStream,
    noise: SharedNoise,
    buf: Vec<u8>,
    pub peer: String,
}

impl ChannelSender {
    /// As [`Channel::send`].
    pub fn send(&mut self, plain: &[u8]) -> Result<()> {
        // Only the encryption holds the shared state: the receiving half
        // decrypts while this one waits for the socket.
        let n = seal_frame(
            &mut lock_noise(&self.noise),
            plain,
            &mut self.buf,
            &self.peer,
        )?;
        self.stream
            .write_all(&self.buf[..n])
            .map_err(|e| net_err(&self.peer, "send", e))
    }
}

impl Drop for ChannelSender {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }
}

/// The receiving half of a [`Channel::split`] channel.
pub struct ChannelReceiver {
    stream: TcpStream,
    noise: SharedNoise,
    buf: Vec<u8>,
    plain: Vec<u8>,
    pub peer: String,
}

impl ChannelReceiver {
    /// As [`Channel::recv`]; `None` at the peer's end of the connection.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<&[u8]>> {
        self.stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| net_err(&self.peer, "socket", e))?;
        let n = match read_frame(&mut self.stream, &mut self.buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(net_err(&self.peer, "receive", e)),
        };
        let p = lock_noise(&self.noise)
            .read_message(&self.buf[..n], &mut self.plain)
            .map_err(|e| net_err(&self.peer, "decrypt", format!("{e:?}")))?;
        Ok(Some(&self.plain[..p]))
    }
}

/// Blocking writes give up after this long (a cut network).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Data the peer has not acknowledged for this long ends the connection
/// (`TCP_USER_TIMEOUT`): a cut network is noticed even while waiting for
/// an answer.
pub const UNACKED_TIMEOUT: Duration = Duration::from_secs(15);

fn set_timeouts(s: &TcpStream, read: Duration) -> std::io::Result<()> {
    s.set_read_timeout(Some(read))?;
    s.set_write_timeout(Some(WRITE_TIMEOUT))?;
    use nix::sys::socket::{setsockopt, sockopt};
    setsockopt(
        s,
        sockopt::TcpUserTimeout,
        &(UNACKED_TIMEOUT.as_millis() as u32),
    )
    .map_err(std::io::Error::from)?;
    setsockopt(s, sockopt::KeepAlive, &true).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair(ka: &[u8], kb: &[u8]) -> (Result<Channel>, Result<Channel>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let kb = derive(kb);
        let t = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            Channel::accept(s, &kb, |p| {
                assert_eq!(p, b"hello");
                Ok(b"welcome".to_vec())
            })
            .map(|(c, _)| c)
        });
        let a = Channel::connect(&addr, &derive(ka), b"hello").map(|(c, p)| {
            assert_eq!(p, b"welcome");
            c
        });
        (a, t.join().unwrap())
    }

    #[test]
    fn same_key_talks_both_ways() {
        let (a, b) = pair(b"0123456789abcdef", b"0123456789abcdef");
        let (mut a, mut b) = (a.unwrap(), b.unwrap());
        let big = vec![7u8; MAX_PLAIN];
        a.send(&big).unwrap();
        assert_eq!(b.recv(Duration::from_secs(5)).unwrap(), &big[..]);
        b.send(b"ok").unwrap();
        assert_eq!(a.recv(Duration::from_secs(5)).unwrap(), b"ok");
        assert!(a.send(&vec![0u8; MAX_PLAIN + 1]).is_err());
    }

    #[test]
    fn split_halves_talk_both_ways_and_end() {
        let (a, b) = pair(b"0123456789abcdef", b"0123456789abcdef");
        let (mut a, b) = (a.unwrap(), b.unwrap());
        let (mut to, mut from) = b.split().unwrap();
        let t = std::thread::spawn(move || {
            let mut got = Vec::new();
            while let Some(m) = from.recv(Duration::from_secs(5)).unwrap() {
                got.push(m.to_vec());
            }
            got
        });
        to.send(b"one").unwrap();
        assert_eq!(a.recv(Duration::from_secs(5)).unwrap(), b"one");
        a.send(b"two").unwrap();
        to.send(b"three").unwrap();
        a.send(b"four").unwrap();
        assert_eq!(a.recv(Duration::from_secs(5)).unwrap(), b"three");
        drop(to);
        assert!(
            a.recv(Duration::from_secs(5)).is_err(),
            "no end after the sender's drop"
        );
        drop(a);
        assert_eq!(t.join().unwrap(), [b"two".to_vec(), b"four".to_vec()]);
    }

    #[test]
    fn wrong_key_refused_on_both_sides() {
        let (a, b) = pair(b"0123456789abcdef", b"0123456789abcdeX");
        assert!(b.is_err(), "the responder accepted a wrong key");
        assert!(a.is_err(), "the initiator accepted a wrong key");
    }

    #[test]
    fn key_file_checks() {
        use std::os::unix::fs::PermissionsExt;
        let d = std::env::temp_dir().join(format!("cairn-key-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir(&d).unwrap();
        let k = d.join("key");
        std::fs::write(&k, [1u8; 32]).unwrap();
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read_key(&k).is_ok());
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_key(&k).unwrap_err().to_string().contains("private"));
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
        let l = d.join("link");
        std::os::unix::fs::symlink(&k, &l).unwrap();
        assert!(read_key(&l).is_err(), "a symbolic link was followed");
        std::fs::write(&k, [1u8; 8]).unwrap();
        assert!(read_key(&k).unwrap_err().to_string().contains("8 bytes"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
