//! The typed system calls cairn makes inside another process: one method
//! per call, built on four primitives (run a raw syscall, write and read
//! the scratch area, name the task). [`super::Agent`] implements the
//! primitives with ptrace; [`super::fake::FakeTask`] implements them with
//! a simulated fd table, so that restore logic can be unit-tested without
//! root or a real process.
//!
//! Pointer arguments go through the scratch area: the methods below place
//! strings and structures at scratch offset 0 unless they take an offset.

use crate::error::{Error, Result};
use crate::sys::abi::CloneArgs;
use std::io;

/// Scratch offset where [`Calls::clone3`] puts the set_tid array.
const CLONE3_TID_OFF: u64 = 128;

/// System calls run in another process.
pub trait Calls {
    /// Thread-group id of the process the calls run in.
    fn pid(&self) -> i32;
    /// The thread that runs the calls.
    fn tid(&self) -> i32;
    /// Runs syscall `nr`; a negative result is the matching io::Error.
    fn syscall(&mut self, nr: libc::c_long, args: &[u64]) -> io::Result<u64>;
    /// Writes `bytes` at scratch offset `off`; returns the remote address.
    fn put(&mut self, off: u64, bytes: &[u8]) -> Result<u64>;
    /// Reads `len` bytes at scratch offset `off`.
    fn get(&self, off: u64, len: usize) -> Result<Vec<u8>>;

    /// Runs a syscall; errors name the task and the syscall.
    fn call(&mut self, name: &str, nr: libc::c_long, args: &[u64]) -> Result<u64> {
        let tid = self.tid();
        self.syscall(nr, args)
            .map_err(|e| Error::sys(tid, format!("remote {name}"), e))
    }

    /// Writes a NUL-terminated string at scratch offset `off`.
    fn put_cstr(&mut self, off: u64, s: &str) -> Result<u64> {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.put(off, &b)
    }

    fn get_u64(&self, off: u64) -> Result<u64> {
        let b = self.get(off, 8)?;
        Ok(u64::from_ne_bytes(b.try_into().unwrap_or([0; 8])))
    }

    fn get_u32(&self, off: u64) -> Result<u32> {
        let b = self.get(off, 4)?;
        Ok(u32::from_ne_bytes(b.try_into().unwrap_or([0; 4])))
    }

    /// openat(AT_FDCWD, path, flags, 0) with the path at scratch offset
    /// `scratch_off`. The error names the path.
    fn open_at(&mut self, scratch_off: u64, path: &str, flags: i32) -> Result<u64> {
        let a = self.put_cstr(scratch_off, path)?;
        let tid = self.tid();
        self.syscall(
            libc::SYS_openat,
            &[libc::AT_FDCWD as i64 as u64, a, flags as u64, 0],
        )
        .map_err(|e| Error::Restore(format!("pid {tid}: open {path}: {e}")))
    }

    /// openat(AT_FDCWD, path, flags, 0), the path at scratch offset 0.
    fn open(&mut self, path: &str, flags: i32) -> Result<u64> {
        self.open_at(0, path, flags)
    }

    fn close(&mut self, fd: u64) -> Result<()> {
        self.call("close", libc::SYS_close, &[fd]).map(drop)
    }

    /// A close-on-exec duplicate of `fd` numbered `min` or above.
    fn dup_min(&mut self, fd: u64, min: u64) -> Result<u64> {
        self.call(
            "fcntl(F_DUPFD_CLOEXEC)",
            libc::SYS_fcntl,
            &[fd, libc::F_DUPFD_CLOEXEC as u64, min],
        )
    }

    /// Moves `fd` to a close-on-exec number `min` or above: duplicates it
    /// there and closes the original. Returns the new number.
    fn dup_above(&mut self, fd: u64, min: u64) -> Result<u64> {
        let hi = self.dup_min(fd, min)?;
        self.close(fd)?;
        Ok(hi)
    }

    /// dup3(fd, to, O_CLOEXEC if `cloexec`).
    fn dup3(&mut self, fd: u64, to: u64, cloexec: bool) -> Result<u64> {
        let fl = if cloexec { libc::O_CLOEXEC as u64 } else { 0 };
        self.call(&format!("dup3 to fd {to}"), libc::SYS_dup3, &[fd, to, fl])
    }

    /// fcntl(fd, F_SETFL, flags).
    fn set_fl(&mut self, fd: u64, flags: u64) -> Result<()> {
        self.call(
            "fcntl(F_SETFL)",
            libc::SYS_fcntl,
            &[fd, libc::F_SETFL as u64, flags],
        )
        .map(drop)
    }

    /// fcntl(fd, F_SETPIPE_SZ, size); returns the size the kernel chose.
    fn set_pipe_size(&mut self, fd: u64, size: u64) -> Result<u64> {
        self.call(
            "fcntl(F_SETPIPE_SZ)",
            libc::SYS_fcntl,
            &[fd, libc::F_SETPIPE_SZ as u64, size],
        )
    }

    /// lseek(fd, off, whence); `what` names the file in errors.
    fn lseek(&mut self, fd: u64, off: u64, whence: i32, what: &str) -> Result<u64> {
        self.call(
            &format!("lseek {what}"),
            libc::SYS_lseek,
            &[fd, off, whence as u64],
        )
    }

    /// pipe2(flags); returns (read end, write end).
    fn pipe2(&mut self, flags: i32) -> Result<(u64, u64)> {
        let a = self.put(0, &[0u8; 8])?;
        self.call("pipe2", libc::SYS_pipe2, &[a, flags as u64])?;
        let b = self.get(0, 8)?;
        let r = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as u64;
        let w = u32::from_ne_bytes([b[4], b[5], b[6], b[7]]) as u64;
        Ok((r, w))
    }

    fn pidfd_open(&mut self, pid: i32) -> Result<u64> {
        self.call(
            &format!("pidfd_open({pid})"),
            libc::SYS_pidfd_open,
            &[pid as u64, 0],
        )
    }

    /// Gets fd `fd` of process `owner` here: the same open file
    /// description (pidfd_getfd), or a duplicate when `owner` is this
    /// process. The new fd is close-on-exec.
    fn fetch_fd(&mut self, owner: i32, fd: u64) -> Result<u64> {
        if owner == self.pid() {
            return self.dup_min(fd, 0);
        }
        let pfd = self.pidfd_open(owner)?;
        let r = self.call(
            &format!("pidfd_getfd({owner}, {fd})"),
            libc::SYS_pidfd_getfd,
            &[pfd, fd, 0],
        );
        self.close(pfd)?;
        r
    }

    fn chdir(&mut self, path: &str) -> Result<()> {
        let a = self.put_cstr(0, path)?;
        self.call(&format!("chdir {path}"), libc::SYS_chdir, &[a])
            .map(drop)
    }

    fn chroot(&mut self, path: &str) -> Result<()> {
        let a = self.put_cstr(0, path)?;
        self.call(&format!("chroot {path}"), libc::SYS_chroot, &[a])
            .map(drop)
    }

    /// prctl(op, args...); `name` names the operation in errors.
    fn prctl(&mut self, name: &str, op: i32, args: &[u64]) -> Result<u64> {
        let mut a = vec![op as u64];
        a.extend_from_slice(args);
        self.call(&format!("prctl({name})"), libc::SYS_prctl, &a)
    }

    /// mmap(addr, len, prot, flags, fd, off).
    fn mmap(
        &mut self,
        addr: u64,
        len: u64,
        prot: i32,
        flags: i32,
        fd: u64,
        off: u64,
    ) -> Result<u64> {
        self.call(
            "mmap",
            libc::SYS_mmap,
            &[addr, len, prot as u64, flags as u64, fd, off],
        )
    }

    fn munmap(&mut self, addr: u64, len: u64) -> Result<()> {
        self.call("munmap", libc::SYS_munmap, &[addr, len])
            .map(drop)
    }

    fn mprotect(&mut self, addr: u64, len: u64, prot: i32) -> Result<()> {
        self.call("mprotect", libc::SYS_mprotect, &[addr, len, prot as u64])
            .map(drop)
    }

    /// socket(domain, type, protocol).
    fn socket(&mut self, domain: i32, ty: i32, protocol: i32) -> Result<u64> {
        self.call(
            "socket",
            libc::SYS_socket,
            &[domain as u64, ty as u64, protocol as u64],
        )
    }

    /// write(fd, bytes) with the bytes at scratch offset `off`; `what`
    /// names the file in errors.
    fn write_at(&mut self, off: u64, fd: u64, bytes: &[u8], what: &str) -> Result<u64> {
        let a = self.put(off, bytes)?;
        self.call(
            &format!("write {what}"),
            libc::SYS_write,
            &[fd, a, bytes.len() as u64],
        )
    }

    /// ioctl(fd, req, arg) with an integer (or already remote) argument.
    fn ioctl(&mut self, what: &str, fd: u64, req: u64, arg: u64) -> Result<u64> {
        self.call(&format!("ioctl({what})"), libc::SYS_ioctl, &[fd, req, arg])
    }

    /// fchmod(fd, mode).
    fn fchmod(&mut self, fd: u64, mode: u32) -> Result<()> {
        self.call("fchmod", libc::SYS_fchmod, &[fd, mode as u64])
            .map(drop)
    }

    /// fcntl(fd, F_ADD_SEALS, seals).
    fn add_seals(&mut self, fd: u64, seals: u32) -> Result<()> {
        self.call(
            "fcntl(F_ADD_SEALS)",
            libc::SYS_fcntl,
            &[fd, libc::F_ADD_SEALS as u64, seals as u64],
        )
        .map(drop)
    }

    /// eventfd2(0, flags).
    fn eventfd2(&mut self, flags: i32) -> Result<u64> {
        self.call("eventfd2", libc::SYS_eventfd2, &[0, flags as u64])
    }

    /// signalfd4(-1, mask, 8, flags): a new signalfd.
    fn signalfd4(&mut self, mask: u64, flags: i32) -> Result<u64> {
        let a = self.put(0, &mask.to_ne_bytes())?;
        self.call(
            "signalfd4",
            libc::SYS_signalfd4,
            &[u64::MAX, a, 8, flags as u64],
        )
    }

    /// timerfd_create(clockid, flags).
    fn timerfd_create(&mut self, clockid: i32, flags: i32) -> Result<u64> {
        self.call(
            "timerfd_create",
            libc::SYS_timerfd_create,
            &[clockid as u64, flags as u64],
        )
    }

    /// timerfd_settime(fd, 0, {interval, value}, NULL), relative, times
    /// in ns.
    fn timerfd_settime(&mut self, fd: u64, interval_ns: u64, value_ns: u64) -> Result<()> {
        let mut b = Vec::with_capacity(32);
        for w in [
            interval_ns / 1_000_000_000,
            interval_ns % 1_000_000_000,
            value_ns / 1_000_000_000,
            value_ns % 1_000_000_000,
        ] {
            b.extend_from_slice(&w.to_ne_bytes());
        }
        let a = self.put(0, &b)?;
        self.call("timerfd_settime", libc::SYS_timerfd_settime, &[fd, 0, a, 0])
            .map(drop)
    }

    /// epoll_create1(flags).
    fn epoll_create1(&mut self, flags: i32) -> Result<u64> {
        self.call("epoll_create1", libc::SYS_epoll_create1, &[flags as u64])
    }

    /// epoll_ctl(epfd, op, fd, {events, data}). The raw result, so that
    /// callers can tell EEXIST apart.
    fn epoll_ctl(&mut self, epfd: u64, op: i32, fd: u64, events: u32, data: u64) -> io::Result<()> {
        let mut b = Vec::with_capacity(12);
        b.extend_from_slice(&events.to_ne_bytes());
        b.extend_from_slice(&data.to_ne_bytes());
        let a = self.put(0, &b).map_err(io::Error::other)?;
        self.syscall(libc::SYS_epoll_ctl, &[epfd, op as u64, fd, a])
            .map(drop)
    }

    /// inotify_init1(flags).
    fn inotify_init1(&mut self, flags: i32) -> Result<u64> {
        self.call("inotify_init1", libc::SYS_inotify_init1, &[flags as u64])
    }

    /// inotify_add_watch(fd, path, mask); returns the watch descriptor.
    fn inotify_add_watch(&mut self, fd: u64, path: &str, mask: u32) -> Result<u64> {
        let p = self.put_cstr(0, path)?;
        self.call(
            &format!("inotify_add_watch({path})"),
            libc::SYS_inotify_add_watch,
            &[fd, p, mask as u64],
        )
    }

    /// memfd_create(name, flags).
    fn memfd_create(&mut self, name: &str, flags: u32) -> Result<u64> {
        let a = self.put_cstr(0, name)?;
        self.call(
            &format!("memfd_create({name})"),
            libc::SYS_memfd_create,
            &[a, flags as u64],
        )
    }

    /// clone3 with `args` (whose set_tid fields are filled in from
    /// `set_tid`). Returns the raw result: the new task's id in the
    /// caller, or the kernel's error unchanged (EEXIST: the id is taken).
    fn clone3(&mut self, args: &CloneArgs, set_tid: &[i32]) -> io::Result<u64> {
        let mut a = *args;
        if !set_tid.is_empty() {
            let tids: Vec<u8> = set_tid.iter().flat_map(|t| t.to_ne_bytes()).collect();
            a.set_tid = self.put(CLONE3_TID_OFF, &tids).map_err(io::Error::other)?;
            a.set_tid_size = set_tid.len() as u64;
        }
        let argp = self.put(0, &a.to_bytes()).map_err(io::Error::other)?;
        self.syscall(libc::SYS_clone3, &[argp, CloneArgs::SIZE as u64])
    }
}

impl Calls for super::Agent {
    fn pid(&self) -> i32 {
        self.pid
    }

    fn tid(&self) -> i32 {
        self.remote.tid
    }

    fn syscall(&mut self, nr: libc::c_long, args: &[u64]) -> io::Result<u64> {
        self.remote.syscall(nr, args)
    }

    fn put(&mut self, off: u64, bytes: &[u8]) -> Result<u64> {
        self.put_scratch(off, bytes)
    }

    fn get(&self, off: u64, len: usize) -> Result<Vec<u8>> {
        self.get_scratch(off, len)
    }
}
