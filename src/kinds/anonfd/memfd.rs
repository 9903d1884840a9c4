//! memfd: name, contents, size, mode, seals and offset. Dump reads the
//! bytes through /proc/PID/fd; restore creates it with memfd_create,
//! writes the bytes from cairn through /proc/PID/fd, and reopens it when
//! it was not open read-write.

use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::image::proto::{file_desc, MemFd};
use crate::image::validate::{bad as invalid, check_bytes, check_name};
use crate::kinds::fd::{not_mine, DumpCx, FdKind, FdRef, RestoreCx};
use crate::remote::Calls;

/// Largest memfd whose contents cairn saves.
const MAX_MEMFD: u64 = 1 << 30;
/// `MFD_NOEXEC_SEAL`.
const MFD_NOEXEC_SEAL: u32 = 0x0008;

/// File status flags a memfd description can carry: the access mode and
/// what `fcntl(F_SETFL)` or the kernel set (`O_APPEND`, `O_NONBLOCK`,
/// `O_DSYNC`, `O_SYNC`, `O_DIRECT`, `O_NOATIME`, `FASYNC`,
/// `O_LARGEFILE`); anything else would make restore's reopen fail or
/// open something else (`O_DIRECTORY`, `O_PATH`, `O_TMPFILE` ...).
const MEMFD_FLAGS: u32 = (libc::O_ACCMODE
    | libc::O_APPEND
    | libc::O_NONBLOCK
    | libc::O_DSYNC
    | libc::O_SYNC
    | libc::O_DIRECT
    | libc::O_NOATIME
    | libc::O_ASYNC
    | libc::O_CLOEXEC) as u32
    | KERNEL_O_LARGEFILE;
/// The kernel's `O_LARGEFILE` on x86-64, set on every file it opens for
/// a 64-bit process (the libc constant is 0 there).
const KERNEL_O_LARGEFILE: u32 = 0o100000;

/// The memfd name of a link target "/memfd:NAME (deleted)".
fn memfd_name(target: &str) -> Option<&str> {
    target.strip_prefix("/memfd:")?.strip_suffix(" (deleted)")
}

pub struct Memfd;

impl FdKind for Memfd {
    fn name(&self) -> &'static str {
        "memfd"
    }

    fn precheck(&self, f: &FdRef) -> Result<bool> {
        Ok(memfd_name(f.target).is_some())
    }

    fn describe(&self, f: &FdRef, cx: &mut DumpCx) -> Result<Option<file_desc::Kind>> {
        let Some(name) = memfd_name(f.target) else {
            return Ok(None);
        };
        let (pid, fd) = (f.pid, f.fd);
        let link = f.link();
        let file = std::fs::File::open(&link).at(&link)?;
        let md = file.metadata().at(&link)?;
        cx.mapfiles.memfd_fd(pid, fd, md.dev(), md.ino())?;
        if md.len() > MAX_MEMFD {
            return Err(Error::unsupported(
                pid,
                format!(
                    "fd {fd}: memfd of {} bytes is larger than cairn saves",
                    md.len()
                ),
            ));
        }
        let seals = crate::sys::task::get_seals(&file)
            .map_err(|e| Error::sys(pid, format!("fd {fd}: F_GET_SEALS"), e))?;
        let mut contents = Vec::with_capacity(md.len() as usize);
        (&file)
            .take(MAX_MEMFD)
            .read_to_end(&mut contents)
            .at(&link)?;
        let mut m = MemFd::new();
        m.name = name.to_string();
        m.flags = f.flags();
        m.pos = f.info()?.pos;
        m.size = md.len();
        m.seals = seals;
        m.mode = md.mode();
        m.contents = contents;
        Ok(Some(file_desc::Kind::Memfd(m)))
    }

    fn validate(&self, k: &file_desc::Kind, path: &Path, obj: &str) -> Result<()> {
        let file_desc::Kind::Memfd(m) = k else {
            return Err(not_mine(self));
        };
        check_name(path, obj, "name", &m.name, 249)?;
        check_bytes(path, obj, "contents", m.contents.len(), 1 << 30)?;
        if m.contents.len() as u64 > m.size || m.size > i64::MAX as u64 || m.pos > i64::MAX as u64 {
            return Err(invalid(
                path,
                obj,
                "size",
                format!("{} with {} bytes of contents", m.size, m.contents.len()),
            ));
        }
        if m.seals & !0x3f != 0 {
            return Err(invalid(path, obj, "seals", format!("{:#x}", m.seals)));
        }
        if m.flags & !MEMFD_FLAGS != 0 || m.flags & libc::O_ACCMODE as u32 == 3 {
            return Err(invalid(
                path,
                obj,
                "flags",
                format!(
                    "{:#o}: not file status flags of a memfd (bits {:#o} are not)",
                    m.flags,
                    m.flags & !MEMFD_FLAGS
                ),
            ));
        }
        Ok(())
    }

    fn open(&self, k: &file_desc::Kind, calls: &mut dyn Calls, _cx: &mut RestoreCx) -> Result<u64> {
        let file_desc::Kind::Memfd(m) = k else {
            return Err(not_mine(self));
        };
        let pid = calls.pid();
        let mut fl = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
        if m.seals & libc::F_SEAL_EXEC as u32 != 0 {
            fl |= MFD_NOEXEC_SEAL;
        }
        let fd = calls.memfd_create(&m.name, fl)?;
        let link = format!("/proc/{pid}/fd/{fd}");
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&link)
            .at(&link)?;
        f.write_all_at(&m.contents, 0).at(&link)?;
        f.set_len(m.size).at(&link)?;
        drop(f);
        calls.fchmod(fd, m.mode & 0o7777)?;
        if m.pos > 0 {
            calls.lseek(fd, m.pos, libc::SEEK_SET, "memfd")?;
        }
        let acc = m.flags as i32 & libc::O_ACCMODE;
        if acc != libc::O_RDWR {
            // memfd_create gives O_RDWR; reopen with the saved mode.
            let open = (m.flags as i32 & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL))
                | libc::O_CLOEXEC;
            let nfd = calls.open(&format!("/proc/self/fd/{fd}"), open)?;
            if m.pos > 0 {
                calls.lseek(nfd, m.pos, libc::SEEK_SET, "memfd")?;
            }
            if m.seals != 0 {
                calls.add_seals(fd, m.seals)?;
            }
            calls.close(fd)?;
            return Ok(nfd);
        }
        if m.seals != 0 {
            calls.add_seals(fd, m.seals)?;
        }
        if m.flags & libc::O_NONBLOCK as u32 != 0 {
            calls.set_fl(fd, m.flags as u64 & !(libc::O_ACCMODE as u64))?;
        }
        Ok(fd)
    }
}
