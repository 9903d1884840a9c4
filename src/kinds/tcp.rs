//! Established TCP connections through TCP_REPAIR (`--tcp-established`),
//! the way CRIU's libsoccr does it.
//!
//! Dump (socket in repair mode, network locked, see [`crate::netlock`]):
//! the sequence number of each queue (TCP_QUEUE_SEQ), the bytes of the
//! receive queue and of the send queue (read with MSG_PEEK per queue), how
//! much of the send queue was never sent (SIOCOUTQNSD), the MSS clamp, the
//! options negotiated at connect time (SACK, window scaling, timestamps),
//! the timestamp clock and the window (TCP_REPAIR_WINDOW).
//!
//! Restore, on a fresh socket in repair mode: queue sequence numbers,
//! bind, connect (which in repair mode goes straight to ESTABLISHED
//! without a packet), options, timestamp, the receive queue, the part of
//! the send queue that was sent (so that it is retransmitted and can be
//! acknowledged) and the window. The socket stays in repair mode until
//! every socket of the tree exists; then [`go_live`] turns it off (the
//! kernel sends a window probe) and writes the part that was never sent
//! as an ordinary write, and the network is unlocked.
//!
//! Connections that are being set up or closed come back the way CRIU's
//! libsoccr brings them back: restored as ESTABLISHED, then the FINs
//! replayed in the order they happened. A FIN this end sent is put back
//! with shutdown(SHUT_WR), in repair mode with the send queue selected
//! when the peer already acknowledged it (it is then not transmitted),
//! and that acknowledgement is replayed as a packet from the peer; a FIN
//! the peer sent is replayed as a FIN packet from the peer. These packets
//! are built here and sent on a raw socket with [`BYPASS_MARK`], which the
//! network lock lets through. At the checkpoint the FIN counts as one
//! byte in the queue sizes and sequence numbers; they are saved as the
//! kernel reports them and adjusted on restore. A SYN_SENT connection is
//! connected again (repair mode off) with the sequence number of its SYN.
//! After the replay the socket must be in the saved state, or the
//! restore fails.

use std::os::fd::OwnedFd;

use crate::image::proto::{TcpStream, TcpWindow};
use crate::netlock::BYPASS_MARK;
use crate::sys::net::{self, InetAddr, RepairWindow};
use crate::sys::sock;

pub const ESTABLISHED: u32 = 1;
pub const SYN_SENT: u32 = 2;
pub const FIN_WAIT1: u32 = 4;
pub const FIN_WAIT2: u32 = 5;
pub const CLOSE_WAIT: u32 = 8;
pub const LAST_ACK: u32 = 9;
pub const CLOSING: u32 = 11;

/// States a connection is saved in with TCP_REPAIR and restored from.
pub fn repairable(state: u32) -> bool {
    matches!(
        state,
        ESTABLISHED | SYN_SENT | FIN_WAIT1 | FIN_WAIT2 | CLOSE_WAIT | LAST_ACK | CLOSING
    )
}

/// This end sent its FIN (it counts in `outq_seq` and the send queue).
fn we_sent_fin(state: u32) -> bool {
    matches!(state, FIN_WAIT1 | FIN_WAIT2 | CLOSING | LAST_ACK)
}

/// The peer sent its FIN (it counts in `inq_seq`).
fn peer_sent_fin(state: u32) -> bool {
    matches!(state, CLOSE_WAIT | LAST_ACK | CLOSING)
}

type IoResult<T> = std::io::Result<T>;

fn ctx(what: &str) -> impl Fn(std::io::Error) -> std::io::Error + '_ {
    move |e| std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

pub fn repair(sock: &OwnedFd, on: bool) -> IoResult<()> {
    sock::set_int(sock, libc::IPPROTO_TCP, net::TCP_REPAIR, on as i32).map_err(ctx(if on {
        "TCP_REPAIR on"
    } else {
        "TCP_REPAIR off"
    }))
}

/// setsockopt(TCP_REPAIR) value that leaves repair mode without sending
/// a window probe (Linux 4.19).
const TCP_REPAIR_OFF_NO_WP: i32 = -1;

/// Takes a socket out of repair mode that a dump put into it without
/// changing its state (a dump that failed, was interrupted, or left the
/// tree running; the guardian of a dead dumper). Nothing is sent: the
/// connection is exactly as before, so no window probe is needed (while
/// the network is locked it would be dropped anyway, and it would reset
/// the window bookkeeping, `snd_wl1`). Leaving repair mode clears
/// SO_REUSEADDR (the kernel sets `sk_reuse` to "no"), so `reuse`, its
/// value before repair mode, is put back. Kernels before 4.19 know only
/// TCP_REPAIR_OFF, which probes.
pub fn repair_off_untouched(sock: &impl std::os::fd::AsRawFd, reuse: i32) -> IoResult<()> {
    let r = sock::set_int(
        sock,
        libc::IPPROTO_TCP,
        net::TCP_REPAIR,
        TCP_REPAIR_OFF_NO_WP,
    );
    match r {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            sock::set_int(sock, libc::IPPROTO_TCP, net::TCP_REPAIR, 0)
        }
        r => r,
    }
    .map_err(ctx("TCP_REPAIR off"))?;
    let now = sock::get_int(sock, libc::SOL_SOCKET, libc::SO_REUSEADDR).unwrap_or(reuse);
    if (now != 0) != (reuse != 0) {
        sock::set_int(
            sock,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            i32::from(reuse != 0),
        )
        .map_err(ctx("SO_REUSEADDR"))?;
    }
    Ok(())
}

fn select_queue(sock: &OwnedFd, q: i32) -> IoResult<()> {
    sock::set_int(sock, libc::IPPROTO_TCP, net::TCP_REPAIR_QUEUE, q)
        .map_err(ctx("TCP_REPAIR_QUEUE"))
}

/// Reads queue `q` (its TCP_QUEUE_SEQ and `len` bytes, peeked).
fn read_queue(sock: &OwnedFd, q: i32, len: usize) -> IoResult<(u32, Vec<u8>)> {
    select_queue(sock, q)?;
    let seq = sock::get_int(sock, libc::IPPROTO_TCP, net::TCP_QUEUE_SEQ)
        .map_err(ctx("TCP_QUEUE_SEQ"))? as u32;
    let mut buf = vec![0u8; len + 1];
    let n = if len > 0 {
        net::recv(sock, &mut buf, libc::MSG_PEEK | libc::MSG_DONTWAIT).map_err(ctx("peek queue"))?
    } else {
        0
    };
    if n != len {
        return Err(std::io::Error::other(format!(
            "queue {q} holds {n} bytes, expected {len}"
        )));
    }
    buf.truncate(len);
    Ok((seq, buf))
}

/// The state of an established connection. The socket must be in repair
/// mode and the connection locked.
pub fn dump_stream(sock: &OwnedFd, state: u32) -> IoResult<TcpStream> {
    let ti = net::tcp_info(sock).map_err(ctx("TCP_INFO"))?;
    if ti.state as u32 != state {
        return Err(std::io::Error::other(format!(
            "the connection went from {} to {} while being checkpointed",
            super::inet::tcp_state_name(state),
            super::inet::tcp_state_name(ti.state as u32)
        )));
    }
    let inq = net::ioctl_int(sock, net::SIOCINQ).map_err(ctx("SIOCINQ"))? as usize;
    let mut outq = net::ioctl_int(sock, net::SIOCOUTQ).map_err(ctx("SIOCOUTQ"))? as usize;
    let mut unsent = net::ioctl_int(sock, net::SIOCOUTQNSD).map_err(ctx("SIOCOUTQNSD"))? as usize;
    if we_sent_fin(state) {
        // The FIN counts as one byte in both (it carries no data); when
        // unsent, it is the last thing in the queue.
        outq = outq.saturating_sub(1);
        unsent = unsent.saturating_sub(1);
    }
    let mut s = TcpStream::new();
    s.mss_clamp =
        sock::get_int(sock, libc::IPPROTO_TCP, libc::TCP_MAXSEG).map_err(ctx("TCP_MAXSEG"))? as u32;
    s.opt_mask = ti.options as u32;
    if ti.options & net::TCPI_OPT_WSCALE != 0 {
        s.snd_wscale = ti.snd_wscale as u32;
        s.rcv_wscale = ti.rcv_wscale as u32;
    }
    if ti.options & net::TCPI_OPT_TIMESTAMPS != 0 {
        s.timestamp = sock::get_int(sock, libc::IPPROTO_TCP, net::TCP_TIMESTAMP)
            .map_err(ctx("TCP_TIMESTAMP"))? as u32;
    }
    match net::get_repair_window(sock) {
        Ok(w) => {
            let mut tw = TcpWindow::new();
            tw.snd_wl1 = w.snd_wl1;
            tw.snd_wnd = w.snd_wnd;
            tw.max_window = w.max_window;
            tw.rcv_wnd = w.rcv_wnd;
            tw.rcv_wup = w.rcv_wup;
            s.window = Some(tw).into();
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => {}
        Err(e) => return Err(ctx("TCP_REPAIR_WINDOW")(e)),
    }
    let (iseq, ibytes) = read_queue(sock, net::TCP_RECV_QUEUE, inq)?;
    let (oseq, obytes) = read_queue(sock, net::TCP_SEND_QUEUE, outq)?;
    select_queue(sock, 0)?;
    s.inq_seq = iseq;
    s.inq = ibytes;
    s.outq_seq = oseq;
    s.outq = obytes;
    s.unsent_len = unsent.min(outq) as u32;
    Ok(s)
}

/// Writes `data` into the selected queue, in smaller pieces if the kernel
/// refuses a large one (the receive queue is filled with linear skbs).
fn write_queue(sock: &OwnedFd, data: &[u8], flags: i32) -> IoResult<()> {
    let mut off = 0;
    let mut chunk = data.len().clamp(1, 1 << 20);
    while off < data.len() {
        let n = (data.len() - off).min(chunk);
        match net::send(sock, &data[off..off + n], flags) {
            Ok(0) => return Err(std::io::Error::other("queue write returned 0")),
            Ok(w) => off += w,
            Err(_) if chunk > 1024 => chunk /= 2,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Makes `sock` (fresh, options set) the connection `local` -> `peer` in
/// the state `s` (TCP state `state`), except for the unsent part of the
/// send queue and what has to follow it ([`go_live`]). `bind_to` is the
/// address to bind to for `local`. Leaves it in repair mode.
pub fn restore_stream(
    sock: &OwnedFd,
    family: i32,
    bind_to: &InetAddr,
    local: &InetAddr,
    peer: &InetAddr,
    s: &TcpStream,
    state: u32,
) -> IoResult<()> {
    if s.unsent_len as usize > s.outq.len() {
        return Err(std::io::Error::other(
            "unsent part longer than the send queue",
        ));
    }
    if !repairable(state) {
        return Err(std::io::Error::other(format!(
            "a connection in state {} cannot be restored",
            super::inet::tcp_state_name(state)
        )));
    }
    // Sequence numbers without the FINs: they are replayed below.
    let inq_seq = s.inq_seq.wrapping_sub(peer_sent_fin(state) as u32);
    let outq_seq = s.outq_seq.wrapping_sub(we_sent_fin(state) as u32);
    repair(sock, true)?;
    let set_seq = |q: i32, seq: u32| -> IoResult<()> {
        select_queue(sock, q)?;
        sock::set_int(sock, libc::IPPROTO_TCP, net::TCP_QUEUE_SEQ, seq as i32)
            .map_err(ctx("set TCP_QUEUE_SEQ"))
    };
    set_seq(
        net::TCP_RECV_QUEUE,
        inq_seq.wrapping_sub(s.inq.len() as u32),
    )?;
    // In SYN_SENT the send sequence counts the SYN: the SYN is sent again
    // with the same sequence number.
    set_seq(
        net::TCP_SEND_QUEUE,
        outq_seq
            .wrapping_sub(s.outq.len() as u32)
            .wrapping_sub((state == SYN_SENT) as u32),
    )?;
    net::bind(sock, bind_to, family).map_err(ctx("bind"))?;
    if state == SYN_SENT {
        // A real connect: the SYN goes out again (the lock drops it until
        // the restore is done; then it is retransmitted).
        repair(sock, false)?;
        let fl = sock::get_fl(sock).map_err(ctx("F_GETFL"))?;
        sock::set_fl(sock, fl | libc::O_NONBLOCK).map_err(ctx("F_SETFL"))?;
        match net::connect(sock, peer, family) {
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(ctx("connect")(e)),
            Ok(()) => {}
        }
        sock::set_fl(sock, fl).map_err(ctx("F_SETFL"))?;
        repair(sock, true)?;
        return check_state(sock, state);
    }
    net::connect(sock, peer, family).map_err(ctx("connect in repair mode"))?;
    let mut opts = Vec::new();
    let m = s.opt_mask as u8;
    if m & net::TCPI_OPT_SACK != 0 {
        opts.push((net::TCPOPT_SACK_PERM, 0));
    }
    if m & net::TCPI_OPT_WSCALE != 0 {
        opts.push((net::TCPOPT_WINDOW, s.snd_wscale | (s.rcv_wscale << 16)));
    }
    if m & net::TCPI_OPT_TIMESTAMPS != 0 {
        opts.push((net::TCPOPT_TIMESTAMP, 0));
    }
    opts.push((net::TCPOPT_MAXSEG, s.mss_clamp));
    net::set_repair_options(sock, &opts).map_err(ctx("TCP_REPAIR_OPTIONS"))?;
    if m & net::TCPI_OPT_TIMESTAMPS != 0 {
        sock::set_int(
            sock,
            libc::IPPROTO_TCP,
            net::TCP_TIMESTAMP,
            s.timestamp as i32,
        )
        .map_err(ctx("set TCP_TIMESTAMP"))?;
    }
    // Room for both queues whatever the buffer sizes (which the caller
    // puts back afterwards): a queue write that does not fit fails (the
    // receive queue) or waits for acknowledgements that cannot come (the
    // send queue).
    make_room(sock, s.inq.len(), s.outq.len())?;
    if !s.inq.is_empty() {
        select_queue(sock, net::TCP_RECV_QUEUE)?;
        write_queue(sock, &s.inq, 0).map_err(ctx("restore receive queue"))?;
    }
    let sent = s.outq.len() - s.unsent_len as usize;
    if sent > 0 {
        select_queue(sock, net::TCP_SEND_QUEUE)?;
        write_queue(sock, &s.outq[..sent], 0).map_err(ctx("restore send queue (sent part)"))?;
    }
    if let Some(w) = s.window.as_ref() {
        // Saved after the peer's FIN, which is not received yet.
        let fin = peer_sent_fin(state) as u32;
        net::set_repair_window(
            sock,
            &RepairWindow {
                snd_wl1: w.snd_wl1,
                snd_wnd: w.snd_wnd,
                max_window: w.max_window,
                rcv_wnd: w.rcv_wnd.wrapping_add(fin),
                rcv_wup: w.rcv_wup.wrapping_sub(fin),
            },
        )
        .map_err(ctx("TCP_REPAIR_WINDOW"))?;
    }
    select_queue(sock, 0)?;
    if state == ESTABLISHED {
        return Ok(());
    }
    // The FINs, in the order they happened. With an unsent part, this
    // end's FIN (never acknowledged then) follows it in go_live, and so
    // does what came after that FIN.
    let replay = Replay::new(local, peer, s, state);
    let deferred = s.unsent_len > 0;
    if matches!(state, FIN_WAIT1 | FIN_WAIT2 | CLOSING) && !deferred {
        shutdown_repaired(sock, state == FIN_WAIT2)?;
    }
    if peer_sent_fin(state) && !(state == CLOSING && deferred) {
        replay.send(net::TH_FIN | net::TH_ACK, replay.snd_una)?;
    }
    if state == LAST_ACK && !deferred {
        shutdown_repaired(sock, false)?;
    }
    if state == FIN_WAIT2 {
        // The peer's acknowledgement of the FIN.
        replay.send(net::TH_ACK, s.outq_seq)?;
    }
    if deferred {
        Ok(())
    } else {
        check_state(sock, state)
    }
}

/// shutdown(SHUT_WR) in repair mode: the FIN goes into the send queue;
/// `acked`: as sent already (not transmitted), else it is transmitted
/// now (and dropped by the lock, then retransmitted).
fn shutdown_repaired(sock: &OwnedFd, acked: bool) -> IoResult<()> {
    if acked {
        select_queue(sock, net::TCP_SEND_QUEUE)?;
    }
    let r =
        sock::shutdown(sock, libc::SHUT_WR).map_err(ctx("shutdown(SHUT_WR) to restore the FIN"));
    if acked {
        select_queue(sock, 0)?;
    }
    r
}

/// The socket is in `state`, or the replay failed.
fn check_state(sock: &OwnedFd, state: u32) -> IoResult<()> {
    let got = net::tcp_info(sock).map_err(ctx("TCP_INFO"))?.state as u32;
    if got != state {
        return Err(std::io::Error::other(format!(
            "the connection came back in state {}, not {} (the kernel did not take the \
             replayed FIN or acknowledgement)",
            super::inet::tcp_state_name(got),
            super::inet::tcp_state_name(state)
        )));
    }
    Ok(())
}

/// Packets from the peer of a restored connection, to replay its FIN or
/// its acknowledgement of ours.
struct Replay {
    from: InetAddr,
    to: InetAddr,
    /// The peer's next sequence number (our rcv_nxt before its FIN).
    seq: u32,
    /// What the peer acknowledged (our snd_una).
    snd_una: u32,
    window: u16,
}

impl Replay {
    fn new(local: &InetAddr, peer: &InetAddr, s: &TcpStream, state: u32) -> Replay {
        let outq_seq = s.outq_seq.wrapping_sub(we_sent_fin(state) as u32);
        let shift = if s.opt_mask as u8 & net::TCPI_OPT_WSCALE != 0 {
            s.snd_wscale.min(14)
        } else {
            0
        };
        let window = s
            .window
            .as_ref()
            .map_or(0xffff, |w| (w.snd_wnd >> shift).min(0xffff) as u16);
        Replay {
            from: *peer,
            to: *local,
            seq: s.inq_seq.wrapping_sub(peer_sent_fin(state) as u32),
            snd_una: outq_seq.wrapping_sub(s.outq.len() as u32),
            window,
        }
    }

    fn send(&self, flags: u8, ack: u32) -> IoResult<()> {
        let pkt = net::tcp_packet(&self.from, &self.to, self.seq, ack, flags, self.window)?;
        let v4 = self.to.canonical_ip().is_ipv4();
        let fam = if v4 { libc::AF_INET } else { libc::AF_INET6 };
        let raw = net::socket_proto(fam, libc::SOCK_RAW, libc::IPPROTO_RAW)
            .map_err(ctx("raw socket to replay a FIN"))?;
        sock::set_int(&raw, libc::SOL_SOCKET, libc::SO_MARK, BYPASS_MARK as i32)
            .map_err(ctx("SO_MARK"))?;
        let dst = InetAddr::new(self.to.canonical_ip(), 0);
        net::send_to(&raw, &pkt, &dst, fam).map_err(ctx("send the replayed packet"))?;
        Ok(())
    }
}

/// The end of a restore: repair mode off (the kernel sends a window
/// probe), then the part of the send queue that was never sent, as an
/// ordinary write. This waits until every socket of the tree exists, so
/// that a peer in the tree is there to receive it even without a network
/// lock; with the lock, the packets are dropped and retransmitted later.
///
/// The write is made to fit: the send buffer is enlarged and
/// TCP_NOTSENT_LOWAT lifted for it (the caller puts the buffer sizes
/// back, see [`super::sockopts::restore_buffers`]; the low-water mark is
/// put back here). Leaving repair mode clears SO_REUSEADDR: `reuse` is
/// put back.
///
/// A connection whose FIN was stuck behind the unsent part gets it here
/// (shutdown after the write), and in CLOSING the peer's FIN after that.
pub fn go_live(
    sock: &OwnedFd,
    unsent: &[u8],
    reuse: bool,
    conn: Option<(&InetAddr, &InetAddr, &TcpStream, u32)>,
) -> IoResult<()> {
    repair(sock, false)?;
    if reuse {
        sock::set_int(sock, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)
            .map_err(ctx("SO_REUSEADDR"))?;
    }
    if !unsent.is_empty() {
        let lowat = sock::get_int(sock, libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT)
            .map_err(ctx("TCP_NOTSENT_LOWAT"))?;
        sock::set_int(sock, libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT, i32::MAX)
            .map_err(ctx("TCP_NOTSENT_LOWAT"))?;
        make_room(sock, 0, unsent.len())?;
        write_queue(sock, unsent, libc::MSG_DONTWAIT)
            .map_err(ctx("restore send queue (unsent part)"))?;
        sock::set_int(sock, libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT, lowat)
            .map_err(ctx("TCP_NOTSENT_LOWAT"))?;
    }
    let Some((local, peer, s, state)) = conn else {
        return Ok(());
    };
    if state == ESTABLISHED || state == SYN_SENT {
        return Ok(());
    }
    if s.unsent_len > 0 && we_sent_fin(state) {
        sock::shutdown(sock, libc::SHUT_WR).map_err(ctx("shutdown(SHUT_WR) to restore the FIN"))?;
        if state == CLOSING {
            let r = Replay::new(local, peer, s, state);
            r.send(net::TH_FIN | net::TH_ACK, r.snd_una)?;
        }
    }
    check_state(sock, state)
}

/// Grows the buffers of `sock` so that `rcv` more bytes fit in its
/// receive queue and `snd` more in its send queue, counting the kernel's
/// overhead per byte generously (never shrinks them).
fn make_room(sock: &OwnedFd, rcv: usize, snd: usize) -> IoResult<()> {
    for (len, get, force, name) in [
        (rcv, libc::SO_RCVBUF, libc::SO_RCVBUFFORCE, "SO_RCVBUFFORCE"),
        (snd, libc::SO_SNDBUF, libc::SO_SNDBUFFORCE, "SO_SNDBUFFORCE"),
    ] {
        if len == 0 {
            continue;
        }
        let now = sock::get_int(sock, libc::SOL_SOCKET, get).map_err(ctx(name))? as usize;
        // The kernel doubles what it is given: this is 4 times the
        // queue plus 1 MiB, on top of what is already there.
        let want = (now / 2)
            .saturating_add(len.saturating_mul(2))
            .saturating_add(1 << 19)
            .min(i32::MAX as usize / 2);
        sock::set_int(sock, libc::SOL_SOCKET, force, want as i32).map_err(ctx(name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// What the guardian does for a dead dumper: a live loopback
    /// connection put into repair mode comes out of it with SO_REUSEADDR
    /// as before, and carries data both ways (needs CAP_NET_ADMIN).
    #[test]
    fn repair_off_untouched_keeps_the_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut b, _) = l.accept().unwrap();
        let fd = OwnedFd::from(b.try_clone().unwrap());
        let get = |opt| sock::get_int(&fd, libc::IPPROTO_TCP, opt).unwrap();
        sock::set_int(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1).unwrap();
        match repair(&fd, true) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                eprintln!("skipped: TCP_REPAIR needs CAP_NET_ADMIN");
                return;
            }
            r => r.unwrap(),
        }
        assert_eq!(get(net::TCP_REPAIR), 1);
        // In repair mode the connection is dead to its owner.
        let mut buf = [0u8; 4];
        b.set_nonblocking(true).unwrap();
        assert!(b.read(&mut buf).is_err());
        b.set_nonblocking(false).unwrap();
        repair_off_untouched(&fd, 1).unwrap();
        assert_eq!(get(net::TCP_REPAIR), 0);
        assert_eq!(
            sock::get_int(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR).unwrap(),
            1
        );
        a.write_all(b"ping").unwrap();
        b.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        b.write_all(b"pong").unwrap();
        a.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");
    }
}
