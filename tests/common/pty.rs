//! Pseudo-terminals for the terminal tests: a master the test reads and
//! writes, and the slave's path for the process under test.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::{Duration, Instant};

pub struct Pty {
    pub master: File,
    /// /dev/pts/N.
    pub slave: String,
    /// What was read from the master and not matched yet.
    pub seen: String,
    /// Everything read from the master.
    pub all: String,
}

impl Pty {
    pub fn open() -> Pty {
        // SAFETY: posix_openpt/grantpt/unlockpt/ptsname_r take the new fd
        // and a buffer valid for its length; the fd is owned by the File.
        unsafe {
            let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
            assert!(fd >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
            let master = File::from_raw_fd(fd);
            assert_eq!(libc::grantpt(fd), 0, "grantpt");
            assert_eq!(libc::unlockpt(fd), 0, "unlockpt");
            let mut buf = [0 as libc::c_char; 64];
            assert_eq!(
                libc::ptsname_r(fd, buf.as_mut_ptr(), buf.len()),
                0,
                "ptsname_r"
            );
            let slave = std::ffi::CStr::from_ptr(buf.as_ptr())
                .to_string_lossy()
                .into_owned();
            Pty {
                master,
                slave,
                seen: String::new(),
                all: String::new(),
            }
        }
    }

    /// Reads from the master until `needle` has been seen (in everything
    /// read so far after the last match) or `timeout` passes; returns
    /// whether it was seen.
    pub fn read_until(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.seen.find(needle) {
                self.seen.drain(..i + needle.len());
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let mut p = libc::pollfd {
                fd: self.master.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, count 1.
            let r = unsafe { libc::poll(&mut p, 1, left.as_millis().min(1000) as i32) };
            if r <= 0 {
                continue;
            }
            let mut buf = [0u8; 4096];
            match self.master.read(&mut buf) {
                Ok(n) if n > 0 => {
                    let s = String::from_utf8_lossy(&buf[..n]);
                    self.seen.push_str(&s);
                    self.all.push_str(&s);
                }
                // EIO: no slave open right now (between two processes).
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    pub fn write(&mut self, s: &str) {
        self.master
            .write_all(s.as_bytes())
            .expect("write the pty master");
    }
}
