//! SOL_SOCKET options, for every socket kind: read from a copy of the
//! task's socket at dump, set on the new socket at restore.

use std::os::fd::AsRawFd;

use crate::image::proto::SockOpts;
use crate::sys::sock;

const SO_PASSPIDFD: i32 = 76;

/// Integer options: (name, option, getter, setter into the message).
type IntOpt = (
    &'static str,
    i32,
    fn(&SockOpts) -> i32,
    fn(&mut SockOpts, i32),
);

const INT_OPTS: &[IntOpt] = &[
    (
        "SO_PASSCRED",
        libc::SO_PASSCRED,
        |o| o.passcred as i32,
        |o, v| o.passcred = v != 0,
    ),
    (
        "SO_PASSSEC",
        libc::SO_PASSSEC,
        |o| o.passsec as i32,
        |o, v| o.passsec = v != 0,
    ),
    (
        "SO_PRIORITY",
        libc::SO_PRIORITY,
        |o| o.priority as i32,
        |o, v| o.priority = v as u32,
    ),
    (
        "SO_RCVLOWAT",
        libc::SO_RCVLOWAT,
        |o| o.rcvlowat as i32,
        |o, v| o.rcvlowat = v as u32,
    ),
    (
        "SO_MARK",
        libc::SO_MARK,
        |o| o.mark as i32,
        |o, v| o.mark = v as u32,
    ),
    (
        "SO_TIMESTAMP",
        libc::SO_TIMESTAMP,
        |o| o.timestamp as i32,
        |o, v| o.timestamp = v != 0,
    ),
    (
        "SO_TIMESTAMPNS",
        libc::SO_TIMESTAMPNS,
        |o| o.timestampns as i32,
        |o, v| o.timestampns = v != 0,
    ),
    (
        "SO_REUSEADDR",
        libc::SO_REUSEADDR,
        |o| o.reuseaddr as i32,
        |o, v| o.reuseaddr = v != 0,
    ),
    (
        "SO_REUSEPORT",
        libc::SO_REUSEPORT,
        |o| o.reuseport as i32,
        |o, v| o.reuseport = v != 0,
    ),
    (
        "SO_KEEPALIVE",
        libc::SO_KEEPALIVE,
        |o| o.keepalive as i32,
        |o, v| o.keepalive = v != 0,
    ),
    (
        "SO_BROADCAST",
        libc::SO_BROADCAST,
        |o| o.broadcast as i32,
        |o, v| o.broadcast = v != 0,
    ),
    (
        "SO_OOBINLINE",
        libc::SO_OOBINLINE,
        |o| o.oobinline as i32,
        |o, v| o.oobinline = v != 0,
    ),
    (
        "SO_DONTROUTE",
        libc::SO_DONTROUTE,
        |o| o.dontroute as i32,
        |o, v| o.dontroute = v != 0,
    ),
    (
        "SO_PASSPIDFD",
        SO_PASSPIDFD,
        |o| o.passpidfd as i32,
        |o, v| o.passpidfd = v != 0,
    ),
];

/// More integer options, saved by name in `SockOpts.more` and set where
/// they differ from a fresh socket's (a socket kind that does not know
/// one reports an error and it is not saved).
const MORE_OPTS: &[(&str, i32)] = &[
    ("SO_TIMESTAMPING", 37),
    ("SO_RXQ_OVFL", 40),
    ("SO_WIFI_STATUS", 41),
    ("SO_NOFCS", 43),
    ("SO_SELECT_ERR_QUEUE", 45),
    ("SO_BUSY_POLL", 46),
    ("SO_MAX_PACING_RATE", 47),
    ("SO_ZEROCOPY", 60),
    ("SO_TIMESTAMP_NEW", 63),
    ("SO_TIMESTAMPNS_NEW", 64),
    ("SO_PREFER_BUSY_POLL", 69),
    ("SO_RESERVE_MEM", 73),
    ("SO_TXREHASH", 74),
    ("SO_RCVMARK", 75),
    ("SO_RCVPRIORITY", 82),
    ("SO_PASSRIGHTS", 83),
];

const SO_BUF_LOCK: i32 = 72;
const SO_TXTIME: i32 = 61;

/// Why the options of `fd` cannot be restored exactly (None: they can):
/// an eBPF socket filter, which the kernel does not give back, or
/// SO_TXTIME.
pub fn unrestorable(fd: &impl AsRawFd) -> Option<String> {
    if let Err(e) = sock::get_filter(fd) {
        if e.raw_os_error() == Some(libc::EACCES) {
            return Some(
                "has an eBPF socket filter (SO_ATTACH_BPF), which the kernel cannot give back \
                 (only classic BPF filters are saved)"
                    .into(),
            );
        }
    }
    let mut tx = [0u8; 8];
    if crate::sys::net::getsockopt(fd, libc::SOL_SOCKET, SO_TXTIME, &mut tx).is_ok()
        && tx != [0u8; 8]
    {
        return Some("uses SO_TXTIME, which cairn does not restore".into());
    }
    None
}

/// Reads the options of `fd`. Options this kernel or socket family does
/// not have keep their default. An eBPF filter is not an error here
/// ([`unrestorable`] refuses it first).
pub fn dump(fd: &impl AsRawFd) -> std::io::Result<SockOpts> {
    let mut o = SockOpts::new();
    o.sndbuf = sock::get_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF)? as u32;
    o.rcvbuf = sock::get_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF)? as u32;
    o.rcvtimeo_us = sock::get_timeval_us(fd, libc::SO_RCVTIMEO)?;
    o.sndtimeo_us = sock::get_timeval_us(fd, libc::SO_SNDTIMEO)?;
    o.peek_off = sock::get_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF).unwrap_or(-1);
    for (_, opt, _, set) in INT_OPTS {
        if let Ok(v) = sock::get_int(fd, libc::SOL_SOCKET, *opt) {
            set(&mut o, v);
        }
    }
    for (name, opt) in MORE_OPTS {
        if let Ok(v) = sock::get_int(fd, libc::SOL_SOCKET, *opt) {
            o.more.push(crate::image::proto::NamedInt {
                name: name.to_string(),
                value: v,
                ..Default::default()
            });
        }
    }
    o.buf_lock = sock::get_int(fd, libc::SOL_SOCKET, SO_BUF_LOCK).unwrap_or(0) as u32;
    if let Ok((on, secs)) = sock::get_linger(fd) {
        o.linger_on = on;
        o.linger_secs = secs;
    }
    if let Ok(Some(prog)) = sock::get_filter(fd) {
        o.filter = encode_filter(&prog);
        o.filter_locked =
            sock::get_int(fd, libc::SOL_SOCKET, sock::SO_LOCK_FILTER).unwrap_or(0) != 0;
    }
    Ok(o)
}

fn encode_filter(prog: &[sock::FilterInsn]) -> Vec<u8> {
    let mut b = Vec::with_capacity(prog.len() * 8);
    for &(code, jt, jf, k) in prog {
        b.extend_from_slice(&code.to_le_bytes());
        b.push(jt);
        b.push(jf);
        b.extend_from_slice(&k.to_le_bytes());
    }
    b
}

/// The instructions of an encoded filter (None: not whole instructions,
/// or more than the kernel accepts).
pub fn decode_filter(b: &[u8]) -> Option<Vec<sock::FilterInsn>> {
    if !b.len().is_multiple_of(8) || b.len() / 8 > 4096 {
        return None;
    }
    Some(
        b.chunks_exact(8)
            .map(|c| {
                (
                    u16::from_le_bytes([c[0], c[1]]),
                    c[2],
                    c[3],
                    u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
                )
            })
            .collect(),
    )
}

/// Is `name` an option of `SockOpts.more`?
pub fn known_more(name: &str) -> bool {
    MORE_OPTS.iter().any(|(n, _)| *n == name)
}

/// Sets the options of `o` on `fd` (a socket of the same family, fresh).
/// Buffer sizes use the FORCE variants (cairn is privileged), so that a
/// size above the system maximum comes back too, and SO_BUF_LOCK is set
/// afterwards, so that a size the kernel was tuning stays tuned. SO_PEEK_OFF
/// is left to the caller, which sets it once the queue is refilled.
/// Returns the options that could not be set, with the reason.
pub fn restore(fd: &impl AsRawFd, o: &SockOpts) -> Vec<String> {
    let mut failed = Vec::new();
    let fresh = |opt: i32| sock::get_int(fd, libc::SOL_SOCKET, opt).ok();
    let set = |failed: &mut Vec<String>, name: &str, r: std::io::Result<()>| {
        if let Err(e) = r {
            failed.push(format!("{name}: {e}"));
        }
    };
    if o.rcvtimeo_us > 0 {
        set(
            &mut failed,
            "SO_RCVTIMEO",
            sock::set_timeval_us(fd, libc::SO_RCVTIMEO, o.rcvtimeo_us),
        );
    }
    if o.sndtimeo_us > 0 {
        set(
            &mut failed,
            "SO_SNDTIMEO",
            sock::set_timeval_us(fd, libc::SO_SNDTIMEO, o.sndtimeo_us),
        );
    }
    // Before the buffers: SO_RCVLOWAT grows a TCP receive buffer.
    for (name, opt, get, _) in INT_OPTS {
        let want = get(o);
        // Only what differs from a fresh socket: an option the family
        // does not know stays untouched.
        match fresh(*opt) {
            Some(v) if v == want => {}
            Some(_) => set(
                &mut failed,
                name,
                sock::set_int(fd, libc::SOL_SOCKET, *opt, want),
            ),
            None if want == 0 => {}
            None => failed.push(format!("{name}: not supported here")),
        }
    }
    for (name, want) in o.more.iter().map(|e| (&e.name, e.value)) {
        let Some(&(_, opt)) = MORE_OPTS.iter().find(|(n, _)| n == name) else {
            failed.push(format!("{name}: unknown option"));
            continue;
        };
        match fresh(opt) {
            Some(v) if v == want => {}
            _ => set(
                &mut failed,
                name,
                sock::set_int(fd, libc::SOL_SOCKET, opt, want),
            ),
        }
    }
    if o.linger_on {
        set(
            &mut failed,
            "SO_LINGER",
            sock::set_linger(fd, true, o.linger_secs),
        );
    }
    failed.extend(restore_buffers(fd, o));
    if !o.filter.is_empty() {
        match decode_filter(&o.filter) {
            Some(prog) => set(
                &mut failed,
                "SO_ATTACH_FILTER",
                sock::attach_filter(fd, &prog),
            ),
            None => failed.push("SO_ATTACH_FILTER: malformed filter".into()),
        }
        if o.filter_locked {
            set(
                &mut failed,
                "SO_LOCK_FILTER",
                sock::set_int(fd, libc::SOL_SOCKET, sock::SO_LOCK_FILTER, 1),
            );
        }
    }
    failed
}

/// SO_SNDBUF, SO_RCVBUF and SO_BUF_LOCK as saved: the sizes with the
/// FORCE variants (the kernel doubles the value it is given), then the
/// lock, which setting a size turns on. Also after a connection was
/// rebuilt (which sizes unlocked buffers anew) or its queues refilled.
pub fn restore_buffers(fd: &impl AsRawFd, o: &SockOpts) -> Vec<String> {
    let mut failed = Vec::new();
    for (name, get, force, want) in [
        ("SO_SNDBUF", libc::SO_SNDBUF, libc::SO_SNDBUFFORCE, o.sndbuf),
        ("SO_RCVBUF", libc::SO_RCVBUF, libc::SO_RCVBUFFORCE, o.rcvbuf),
    ] {
        let now = sock::get_int(fd, libc::SOL_SOCKET, get).ok();
        if want > 0 && now.map(|v| v as u32 & !1) != Some(want & !1) {
            if let Err(e) = sock::set_int(fd, libc::SOL_SOCKET, force, (want / 2) as i32) {
                failed.push(format!("{name}: {e}"));
            }
        }
    }
    set_buf_lock(fd, o, &mut failed);
    failed
}

/// SO_BUF_LOCK as saved (setting a buffer size locks it).
fn set_buf_lock(fd: &impl AsRawFd, o: &SockOpts, failed: &mut Vec<String>) {
    let now = sock::get_int(fd, libc::SOL_SOCKET, SO_BUF_LOCK).ok();
    match now {
        Some(v) if v as u32 == o.buf_lock => {}
        Some(_) => {
            if let Err(e) = sock::set_int(fd, libc::SOL_SOCKET, SO_BUF_LOCK, o.buf_lock as i32) {
                failed.push(format!("SO_BUF_LOCK: {e}"));
            }
        }
        // Before Linux 5.14 the lock cannot be read or set.
        None => {}
    }
}

/// The differences between the options saved (`want`) and those of the
/// restored socket (`got`), by name. SO_PEEK_OFF is the caller's; a
/// buffer size may be one byte short (the kernel doubles what is set).
pub fn diff(want: &SockOpts, got: &SockOpts) -> Vec<String> {
    let mut d = Vec::new();
    let mut cmp = |name: &str, a: String, b: String| {
        if a != b {
            d.push(format!("{name} is {b}, was {a}"));
        }
    };
    let buf = |v: u32| (v & !1).to_string();
    cmp("SO_SNDBUF", buf(want.sndbuf), buf(got.sndbuf));
    cmp("SO_RCVBUF", buf(want.rcvbuf), buf(got.rcvbuf));
    cmp(
        "SO_RCVTIMEO",
        want.rcvtimeo_us.to_string(),
        got.rcvtimeo_us.to_string(),
    );
    cmp(
        "SO_SNDTIMEO",
        want.sndtimeo_us.to_string(),
        got.sndtimeo_us.to_string(),
    );
    for (name, _, get, _) in INT_OPTS {
        cmp(name, get(want).to_string(), get(got).to_string());
    }
    for e in &want.more {
        cmp(
            &e.name,
            e.value.to_string(),
            (got.more.iter().find(|g| g.name == e.name))
                .map_or("unset".into(), |g| g.value.to_string()),
        );
    }
    cmp(
        "SO_BUF_LOCK",
        want.buf_lock.to_string(),
        got.buf_lock.to_string(),
    );
    cmp(
        "SO_LINGER",
        format!("{}/{}", want.linger_on, want.linger_secs),
        format!("{}/{}", got.linger_on, got.linger_secs),
    );
    cmp(
        "SO_GET_FILTER",
        format!("{:?}", want.filter),
        format!("{:?}", got.filter),
    );
    cmp(
        "SO_LOCK_FILTER",
        want.filter_locked.to_string(),
        got.filter_locked.to_string(),
    );
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_on_a_socketpair() {
        let (a, b) = sock::socketpair(libc::SOCK_DGRAM).unwrap();
        sock::set_int(&a, libc::SOL_SOCKET, libc::SO_PASSCRED, 1).unwrap();
        sock::set_int(&a, libc::SOL_SOCKET, libc::SO_SNDBUF, 65536).unwrap();
        sock::set_timeval_us(&a, libc::SO_RCVTIMEO, 1_500_000).unwrap();
        let o = dump(&a).unwrap();
        assert!(o.passcred);
        assert_eq!(o.rcvtimeo_us, 1_500_000);
        assert_eq!(o.peek_off, -1);
        assert!(restore(&b, &o).is_empty());
        let p = dump(&b).unwrap();
        assert_eq!(o, p);
    }

    /// A classic filter, its lock and SO_BUF_LOCK come back; diff names
    /// what differs.
    #[test]
    fn filter_and_buf_lock_round_trip() {
        let (a, _) = sock::socketpair(libc::SOCK_DGRAM).unwrap();
        let (b, _) = sock::socketpair(libc::SOCK_DGRAM).unwrap();
        let prog = [(0x06u16, 0u8, 0u8, 0xffffu32)];
        sock::attach_filter(&a, &prog).unwrap();
        sock::set_int(&a, libc::SOL_SOCKET, sock::SO_LOCK_FILTER, 1).unwrap();
        sock::set_int(&a, libc::SOL_SOCKET, libc::SO_SNDBUF, 65536).unwrap();
        let _ = sock::set_int(&a, libc::SOL_SOCKET, SO_BUF_LOCK, 0);
        let o = dump(&a).unwrap();
        assert_eq!(decode_filter(&o.filter).unwrap(), prog);
        assert!(o.filter_locked);
        let fresh = dump(&b).unwrap();
        let d = diff(&o, &fresh);
        assert!(d.iter().any(|s| s.starts_with("SO_GET_FILTER")), "{d:?}");
        assert!(restore(&b, &o).is_empty());
        let p = dump(&b).unwrap();
        assert!(diff(&o, &p).is_empty(), "{:?}", diff(&o, &p));
    }
}
