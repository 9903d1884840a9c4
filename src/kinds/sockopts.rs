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

/// Reads the options of `fd`. Options this kernel or socket family does
/// not have keep their default.
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
    if let Ok((on, secs)) = sock::get_linger(fd) {
        o.linger_on = on;
        o.linger_secs = secs;
    }
    Ok(o)
}

/// Sets the options of `o` on `fd` (a socket of the same family, fresh).
/// Buffer sizes use the FORCE variants (cairn is privileged), so that a
/// size above the system maximum comes back too. SO_PEEK_OFF is left to
/// the caller, which sets it once the queue is refilled. Returns the
/// options that could not be set, with the reason.
pub fn restore(fd: &impl AsRawFd, o: &SockOpts) -> Vec<String> {
    let mut failed = Vec::new();
    let fresh = |opt: i32| sock::get_int(fd, libc::SOL_SOCKET, opt).ok();
    let set = |failed: &mut Vec<String>, name: &str, r: std::io::Result<()>| {
        if let Err(e) = r {
            failed.push(format!("{name}: {e}"));
        }
    };
    // The kernel doubles the value it is given.
    if o.sndbuf > 0 && fresh(libc::SO_SNDBUF) != Some(o.sndbuf as i32) {
        set(
            &mut failed,
            "SO_SNDBUF",
            sock::set_int(
                fd,
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                (o.sndbuf / 2) as i32,
            ),
        );
    }
    if o.rcvbuf > 0 && fresh(libc::SO_RCVBUF) != Some(o.rcvbuf as i32) {
        set(
            &mut failed,
            "SO_RCVBUF",
            sock::set_int(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (o.rcvbuf / 2) as i32,
            ),
        );
    }
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
    if o.linger_on {
        set(
            &mut failed,
            "SO_LINGER",
            sock::set_linger(fd, true, o.linger_secs),
        );
    }
    failed
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
}
