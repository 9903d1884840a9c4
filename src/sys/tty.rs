//! Terminal ioctls on cairn's own descriptors (a copy of a task's terminal
//! fd, or a pty cairn creates): termios, window size, the pty index, lock,
//! packet and exclusive modes, the device behind /dev/tty, the foreground
//! process group.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::check;

fn ioctl_get(fd: &impl AsRawFd, req: libc::Ioctl) -> io::Result<i32> {
    let mut v: i32 = 0;
    // SAFETY: `req` is a get ioctl that writes one int to `v`.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), req, &mut v) } as libc::c_long)?;
    Ok(v)
}

fn ioctl_set(fd: &impl AsRawFd, req: libc::Ioctl, v: i32) -> io::Result<()> {
    // SAFETY: `req` is a set ioctl that reads one int from `v`.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), req, &v) } as libc::c_long).map(drop)
}

pub fn get_termios(fd: &impl AsRawFd) -> io::Result<libc::termios> {
    // SAFETY: an all-zero termios is valid storage.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is valid for writes of a termios.
    check(unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) } as libc::c_long)?;
    Ok(t)
}

pub fn set_termios(fd: &impl AsRawFd, t: &libc::termios) -> io::Result<()> {
    // SAFETY: `t` is a valid termios for reads.
    check(unsafe { libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, t) } as libc::c_long).map(drop)
}

/// (rows, cols, xpixel, ypixel).
pub fn get_winsize(fd: &impl AsRawFd) -> io::Result<[u16; 4]> {
    let mut w = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize to `w`.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut w) } as libc::c_long)?;
    Ok([w.ws_row, w.ws_col, w.ws_xpixel, w.ws_ypixel])
}

pub fn set_winsize(fd: &impl AsRawFd, ws: [u16; 4]) -> io::Result<()> {
    let w = libc::winsize {
        ws_row: ws[0],
        ws_col: ws[1],
        ws_xpixel: ws[2],
        ws_ypixel: ws[3],
    };
    // SAFETY: TIOCSWINSZ reads one winsize from `w`.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &w) } as libc::c_long).map(drop)
}

/// The index N of a pty master (its slave is /dev/pts/N).
pub fn pty_index(master: &impl AsRawFd) -> io::Result<u32> {
    ioctl_get(master, libc::TIOCGPTN).map(|v| v as u32)
}

/// Opens a new pty master (`ptmx`, e.g. /dev/ptmx) whose index is
/// `index`, as CRIU does: devpts hands out the lowest free index and has
/// no call to ask for one, so masters are opened (and held) until the one
/// with `index` comes; the others are closed. Fails with EEXIST when a
/// master comes with a higher index (`index` is taken: devpts never
/// skipped a free lower one) and passes other errors on (EMFILE when
/// `index` lies above more free indices than cairn may hold fds).
pub fn open_pty_index(ptmx: &str, index: u32) -> io::Result<OwnedFd> {
    let mut held = Vec::new();
    loop {
        let m = open(ptmx, libc::O_RDWR)?;
        let n = pty_index(&m)?;
        if n == index {
            return Ok(m);
        }
        if n > index {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        held.push(m);
    }
}

pub fn pty_locked(master: &impl AsRawFd) -> io::Result<bool> {
    ioctl_get(master, libc::TIOCGPTLCK).map(|v| v != 0)
}

pub fn set_pty_locked(master: &impl AsRawFd, locked: bool) -> io::Result<()> {
    ioctl_set(master, libc::TIOCSPTLCK, locked as i32)
}

pub fn packet_mode(master: &impl AsRawFd) -> io::Result<bool> {
    ioctl_get(master, libc::TIOCGPKT).map(|v| v != 0)
}

pub fn set_packet_mode(master: &impl AsRawFd, on: bool) -> io::Result<()> {
    ioctl_set(master, libc::TIOCPKT, on as i32)
}

pub fn exclusive(fd: &impl AsRawFd) -> io::Result<bool> {
    ioctl_get(fd, libc::TIOCGEXCL).map(|v| v != 0)
}

pub fn set_exclusive(fd: &impl AsRawFd, on: bool) -> io::Result<()> {
    let req = if on { libc::TIOCEXCL } else { libc::TIOCNXCL };
    // SAFETY: TIOCEXCL and TIOCNXCL take no argument.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), req) } as libc::c_long).map(drop)
}

/// The device number (user encoding) of the terminal behind `fd`, also
/// for /dev/tty, which stands for the caller's controlling terminal.
pub fn device(fd: &impl AsRawFd) -> io::Result<u64> {
    // The kernel returns the 32-bit user encoding (new_encode_dev).
    let v = ioctl_get(fd, libc::TIOCGDEV)? as u32 as u64;
    Ok(libc::makedev(libc::major(v), libc::minor(v)))
}

/// tcsetpgrp: make `pgrp` the foreground process group of `fd`, which must
/// be the caller's controlling terminal.
pub fn set_foreground(fd: &impl AsRawFd, pgrp: i32) -> io::Result<()> {
    ioctl_set(fd, libc::TIOCSPGRP, pgrp)
}

/// open(2) of a terminal device without making it a controlling terminal.
pub fn open(path: &str, flags: i32) -> io::Result<OwnedFd> {
    let p = CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `p` is NUL-terminated.
    let fd = check(
        unsafe { libc::open(p.as_ptr(), flags | libc::O_NOCTTY | libc::O_CLOEXEC) } as libc::c_long,
    )? as RawFd;
    // SAFETY: the descriptor was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

// volatile
/// Opens the slave of pty master `master` through it (`TIOCGPTPEER`),
/// as glibc's openpty does: the description then lacks the O_LARGEFILE
/// that open(2) adds (Open MPI's ranks hold such slaves).
pub fn open_peer(master: &impl AsRawFd, flags: i32) -> io::Result<OwnedFd> {
    // Without O_CLOEXEC, which would stay in the description's flags:
    // close-on-exec is set on the descriptor right after.
    let fl = flags | libc::O_NOCTTY;
    // SAFETY: TIOCGPTPEER takes the open flags as its integer argument and
    // returns a new descriptor.
    let fd =
        check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, fl) } as libc::c_long)?
            as RawFd;
    // SAFETY: the descriptor was just returned by the kernel and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)?;
    Ok(fd)
}

/// Reads what is readable now from a non-blocking copy; stops at EAGAIN,
/// EIO (a pty master whose slave is closed) or end of file.
pub fn read_available(fd: &impl AsRawFd, max: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match check(n as libc::c_long) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n as usize]),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EIO)) => break,
            Err(e) => return Err(e),
        }
        if out.len() > max {
            return Err(io::Error::other("more queued than cairn saves"));
        }
    }
    Ok(out)
}

/// Writes all of `data` (the fd may be non-blocking: a full buffer is an error).
pub fn write_all(fd: &impl AsRawFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: `data` is valid for reads of its length.
        let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
        let n = check(n as libc::c_long)? as usize;
        data = &data[n..];
    }
    Ok(())
}

/// Blocks SIGTTOU in the calling thread while `f` runs, so that terminal
/// changes from a background process group are allowed.
pub fn without_sigttou<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: sigset manipulation on local storage; pthread_sigmask only
    // changes the calling thread's mask and the old mask is put back.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTTOU);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        let r = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        r
    }
}
