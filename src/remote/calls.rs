//! The typed system calls cairn makes inside another process: one method
//! per call, built on four primitives (run a raw syscall, write and read
//! the scratch area, name the task). [`super::Agent`] implements the
//! primitives with ptrace; [`super::fake::FakeTask`] implements them with
//! a simulated fd table, so that restore logic can be unit-tested without
//! root or a real process.
//!
//! Pointer arguments go through the scratch area: the methods below place
//! strings and structures at scratch offset 0 unless they take an offset.

use super::batch::{self, Failed, Syscall};
use crate::error::{Error, Result};
use crate::sys::abi::CloneArgs;
use crate::sys::fown;
use std::io;

/// Scratch offset where [`Calls::clone3`] puts the set_tid array.
const CLONE3_TID_OFF: u64 = 128;

/// The most ids of one [`Calls::clone3_each`]: their array, at
/// `CLONE3_TID_OFF`, stays in the lower half of the scratch area (the
/// upper half holds the batches, offset 0 the data of a call made alone).
pub const CLONE3_EACH_MAX: usize = 4096;

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

    /// Runs `calls` in order, stopping at the first that fails (an
    /// error, or not the result it expects): `Ok(Err)` says which, and
    /// the calls after it did not run; `Err` is a failure to run them at
    /// all. One call at a time here; an [`super::Agent`] with an agent
    /// loop runs them as batches with one stop each (`remote::batch`).
    fn syscalls(&mut self, calls: &[Syscall]) -> Result<std::result::Result<Vec<u64>, Failed>> {
        one_by_one(self, calls)
    }

    /// [`Calls::syscalls`] of named calls; a failure is reported as
    /// [`Calls::call`] reports one, naming the task and the call.
    fn call_all(&mut self, calls: &[(String, Syscall)]) -> Result<Vec<u64>> {
        let tid = self.tid();
        let list: Vec<Syscall> = calls.iter().map(|c| c.1.clone()).collect();
        self.syscalls(&list)?
            .map_err(|f| Error::sys(tid, format!("remote {}", calls[f.index].0), f.error))
    }

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

    /// clone3 with `args` once per id of `tids` (each its own `set_tid`),
    /// as one list of calls ([`Calls::syscalls`]: one stop for the list,
    /// besides the clone event of each new task); each result must be
    /// its id. At most [`CLONE3_EACH_MAX`] ids.
    fn clone3_each(
        &mut self,
        args: &CloneArgs,
        tids: &[i32],
    ) -> Result<std::result::Result<Vec<u64>, Failed>> {
        if tids.len() > CLONE3_EACH_MAX {
            return Err(Error::Restore(format!(
                "tid {}: {} clone3 calls in one list, more than {CLONE3_EACH_MAX}",
                self.tid(),
                tids.len()
            )));
        }
        let ids: Vec<u8> = tids.iter().flat_map(|t| t.to_ne_bytes()).collect();
        let base = self.put(CLONE3_TID_OFF, &ids)?;
        let calls: Vec<Syscall> = (tids.iter().enumerate())
            .map(|(k, &tid)| {
                let mut a = *args;
                a.set_tid = base + 4 * k as u64;
                a.set_tid_size = 1;
                let mut c = Syscall::new(libc::SYS_clone3, &[0, CloneArgs::SIZE as u64])
                    .with_data(0, a.to_bytes().to_vec());
                c.expect = Some(tid as u64);
                c
            })
            .collect();
        self.syscalls(&calls)
    }

    // fanotify (kinds::anonfd::fanotify): groups and their marks.

    /// fanotify_init(flags, event_f_flags).
    fn fanotify_init(&mut self, flags: u32, event_flags: u32) -> Result<u64> {
        self.call(
            "fanotify_init",
            libc::SYS_fanotify_init,
            &[flags as u64, event_flags as u64],
        )
    }

    /// fanotify_mark(fd, flags, mask, AT_FDCWD, path).
    fn fanotify_mark(&mut self, fd: u64, flags: u32, mask: u64, path: &str) -> Result<()> {
        let p = self.put_cstr(0, path)?;
        self.call(
            &format!("fanotify_mark({path})"),
            libc::SYS_fanotify_mark,
            &[fd, flags as u64, mask, libc::AT_FDCWD as i64 as u64, p],
        )
        .map(drop)
    }

    // ------------------------------------------ memory and per-process state
    // (kinds::memory, kinds::task, restore): each error names the syscall.

    /// mmap with the kernel's error unchanged, for callers that name the
    /// mapping in their own error.
    fn try_mmap(
        &mut self,
        addr: u64,
        len: u64,
        prot: i32,
        flags: i32,
        fd: u64,
        off: u64,
    ) -> io::Result<u64> {
        self.syscall(
            libc::SYS_mmap,
            &[addr, len, prot as u64, flags as u64, fd, off],
        )
    }

    /// An anonymous mapping (`flags` adds to MAP_ANONYMOUS); `what` names
    /// it in errors ("mmap {what}").
    fn mmap_anon(&mut self, what: &str, addr: u64, len: u64, prot: i32, flags: i32) -> Result<u64> {
        self.call(
            &format!("mmap {what}"),
            libc::SYS_mmap,
            &[
                addr,
                len,
                prot as u64,
                (flags | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
        )
    }

    /// munmap; `what` names the range in errors ("munmap {what}").
    fn munmap_as(&mut self, what: &str, addr: u64, len: u64) -> Result<()> {
        self.call(&format!("munmap {what}"), libc::SYS_munmap, &[addr, len])
            .map(drop)
    }

    /// close; `what` names the fd in errors ("close {what}").
    fn close_as(&mut self, what: &str, fd: u64) -> Result<()> {
        self.call(&format!("close {what}"), libc::SYS_close, &[fd])
            .map(drop)
    }

    /// close_range(first, last, 0).
    fn close_range(&mut self, first: u64, last: u64) -> Result<()> {
        self.call("close_range", libc::SYS_close_range, &[first, last, 0])
            .map(drop)
    }

    /// madvise(addr, len, advice).
    fn madvise(&mut self, addr: u64, len: u64, advice: i32) -> Result<()> {
        self.call("madvise", libc::SYS_madvise, &[addr, len, advice as u64])
            .map(drop)
    }

    /// shmat(shmid, addr, flags); returns where the segment landed.
    fn shmat(&mut self, shmid: u64, addr: u64, flags: u64) -> Result<u64> {
        self.call(
            &format!("shmat({shmid})"),
            libc::SYS_shmat,
            &[shmid, addr, flags],
        )
    }

    /// arch_prctl(code, arg); `name` names the code in errors.
    fn arch_prctl(&mut self, name: &str, code: u64, arg: u64) -> Result<u64> {
        self.call(
            &format!("arch_prctl({name})"),
            libc::SYS_arch_prctl,
            &[code, arg],
        )
    }

    /// brk(addr); brk(0) is the current program break.
    fn brk(&mut self, addr: u64) -> Result<u64> {
        self.call("brk", libc::SYS_brk, &[addr])
    }

    /// prctl(PR_SET_NAME, comm), the name at scratch offset `off`.
    fn set_comm_at(&mut self, off: u64, comm: &str) -> Result<()> {
        let a = self.put_cstr(off, comm)?;
        self.prctl("PR_SET_NAME", libc::PR_SET_NAME, &[a]).map(drop)
    }

    /// prctl(PR_SET_NAME, comm).
    fn set_comm(&mut self, comm: &str) -> Result<()> {
        self.call_all(&[("prctl(PR_SET_NAME)".into(), set_comm_call(comm))])
            .map(drop)
    }

    /// A prctl that stores an int at its pointer argument
    /// (PR_GET_PDEATHSIG, PR_GET_CHILD_SUBREAPER).
    fn prctl_get_int(&mut self, name: &str, op: i32) -> Result<u32> {
        let a = self.put(0, &[])?;
        self.prctl(name, op, &[a])?;
        self.get_u32(0)
    }

    /// prctl(PR_GET_TID_ADDRESS): the thread's clear_child_tid.
    fn tid_address(&mut self) -> Result<u64> {
        let a = self.put(0, &[])?;
        self.prctl("PR_GET_TID_ADDRESS", libc::PR_GET_TID_ADDRESS, &[a])?;
        self.get_u64(0)
    }

    /// prctl(PR_SET_MM, PR_SET_MM_MAP) with `map` (a struct prctl_mm_map
    /// whose auxv pointer the caller placed) at scratch offset 0.
    fn set_mm_map(&mut self, map: &[u8]) -> Result<()> {
        const PR_SET_MM: i32 = 35;
        const PR_SET_MM_MAP: u64 = 14;
        let a = self.put(0, map)?;
        self.prctl(
            "PR_SET_MM_MAP",
            PR_SET_MM,
            &[PR_SET_MM_MAP, a, map.len() as u64, 0],
        )
        .map(drop)
    }

    /// rt_sigaction(sig, NULL, &old): (handler, flags, restorer, mask).
    fn sigaction_get(&mut self, sig: u32) -> Result<[u64; 4]> {
        let a = self.put(0, &[])?;
        self.call(
            &format!("rt_sigaction({sig})"),
            libc::SYS_rt_sigaction,
            &[sig as u64, 0, a, 8],
        )?;
        let b = self.get(0, 32)?;
        let w = |i: usize| u64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        Ok([w(0), w(1), w(2), w(3)])
    }

    /// rt_sigaction(sig, &act, NULL); `act` is (handler, flags, restorer,
    /// mask); `what` names the call in errors.
    fn sigaction_set_as(&mut self, what: &str, sig: u32, act: [u64; 4]) -> Result<()> {
        let b: Vec<u8> = act.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let a = self.put(0, &b)?;
        self.call(what, libc::SYS_rt_sigaction, &[sig as u64, a, 0, 8])
            .map(drop)
    }

    /// rt_sigaction(sig, &act, NULL).
    fn sigaction_set(&mut self, sig: u32, act: [u64; 4]) -> Result<()> {
        self.sigaction_set_as(&format!("rt_sigaction({sig})"), sig, act)
    }

    /// rt_sigaction(sig, &act, NULL) for each of `acts`, as one batch.
    fn sigactions_set(&mut self, acts: &[(u32, [u64; 4])]) -> Result<()> {
        let calls: Vec<(String, Syscall)> = (acts.iter())
            .map(|&(sig, act)| (format!("rt_sigaction({sig})"), sigaction_call(sig, act)))
            .collect();
        self.call_all(&calls).map(drop)
    }

    /// prlimit64(0, res, NULL, &old): (soft, hard).
    fn getrlimit(&mut self, res: u32) -> Result<(u64, u64)> {
        let a = self.put(0, &[])?;
        self.call(
            &format!("prlimit64({res})"),
            libc::SYS_prlimit64,
            &[0, res as u64, 0, a],
        )?;
        Ok((self.get_u64(0)?, self.get_u64(8)?))
    }

    /// prlimit64(0, res, &new, NULL).
    fn setrlimit(&mut self, res: u32, cur: u64, max: u64) -> Result<()> {
        self.setrlimits(&[(res, cur, max)])
    }

    /// prlimit64(0, res, &{cur, max}, NULL) for each (res, cur, max), as
    /// one batch.
    fn setrlimits(&mut self, limits: &[(u32, u64, u64)]) -> Result<()> {
        let calls: Vec<(String, Syscall)> = (limits.iter())
            .map(|&(res, cur, max)| (format!("prlimit64({res})"), setrlimit_call(res, cur, max)))
            .collect();
        self.call_all(&calls).map(drop)
    }

    /// getitimer(which): (interval, value) as (seconds, microseconds).
    fn getitimer(&mut self, which: u32) -> Result<[u64; 4]> {
        let a = self.put(0, &[])?;
        self.call(
            &format!("getitimer({which})"),
            libc::SYS_getitimer,
            &[which as u64, a],
        )?;
        let b = self.get(0, 32)?;
        let w = |i: usize| u64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        Ok([w(0), w(1), w(2), w(3)])
    }

    /// setitimer(which, &new, NULL); `t` as [`Calls::getitimer`] returns.
    fn setitimer(&mut self, which: u32, t: [u64; 4]) -> Result<()> {
        let b: Vec<u8> = t.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let a = self.put(0, &b)?;
        self.call(
            &format!("setitimer({which})"),
            libc::SYS_setitimer,
            &[which as u64, a, 0],
        )
        .map(drop)
    }

    /// timer_gettime(id): the raw struct itimerspec (32 bytes).
    fn timer_gettime(&mut self, id: i32) -> Result<Vec<u8>> {
        let a = self.put(0, &[])?;
        self.call(
            &format!("timer_gettime({id})"),
            libc::SYS_timer_gettime,
            &[id as u64, a],
        )?;
        self.get(0, 32)
    }

    /// timer_create(clockid, &sigevent, &id) with `sigevent` (64 bytes) and
    /// `id` as the id asked for (PR_TIMER_CREATE_RESTORE_IDS); returns the
    /// id the kernel gave. `id` names the timer in errors.
    fn timer_create(&mut self, id: i32, clockid: i32, sigevent: &[u8]) -> Result<i32> {
        let sp = self.put(0, sigevent)?;
        let idp = self.put(128, &(id as i64).to_ne_bytes())?;
        self.call(
            &format!("timer_create({id})"),
            libc::SYS_timer_create,
            &[clockid as u64, sp, idp],
        )?;
        Ok(self.get_u32(128)? as i32)
    }

    /// timer_settime(id, 0, &spec, NULL) with `spec` a struct itimerspec.
    fn timer_settime(&mut self, id: i32, spec: &[u8]) -> Result<()> {
        let a = self.put(256, spec)?;
        self.call(
            &format!("timer_settime({id})"),
            libc::SYS_timer_settime,
            &[id as u64, 0, a, 0],
        )
        .map(drop)
    }

    /// sigaltstack(NULL, &old): (sp, flags, size).
    fn sigaltstack_get(&mut self) -> Result<(u64, u32, u64)> {
        let a = self.put(0, &[])?;
        self.call("sigaltstack", libc::SYS_sigaltstack, &[0, a])?;
        let b = self.get(0, 24)?;
        Ok((
            u64::from_ne_bytes(b[0..8].try_into().unwrap_or_default()),
            i32::from_ne_bytes(b[8..12].try_into().unwrap_or_default()) as u32,
            u64::from_ne_bytes(b[16..24].try_into().unwrap_or_default()),
        ))
    }

    /// sigaltstack(&new, NULL).
    fn sigaltstack_set(&mut self, sp: u64, flags: i32, size: u64) -> Result<()> {
        let c = sigaltstack_call(sp, flags, size);
        self.call_all(&[("sigaltstack".into(), c)]).map(drop)
    }

    /// rseq(addr, len, flags, sig): flags 0 registers, 1
    /// (RSEQ_FLAG_UNREGISTER) unregisters; `what` names the call.
    fn rseq(&mut self, what: &str, addr: u64, len: u32, flags: u64, sig: u32) -> Result<()> {
        self.call(what, libc::SYS_rseq, &[addr, len as u64, flags, sig as u64])
            .map(drop)
    }

    fn set_robust_list(&mut self, head: u64, len: u64) -> Result<()> {
        self.call("set_robust_list", libc::SYS_set_robust_list, &[head, len])
            .map(drop)
    }

    fn set_tid_address(&mut self, addr: u64) -> Result<()> {
        self.call("set_tid_address", libc::SYS_set_tid_address, &[addr])
            .map(drop)
    }

    fn umask(&mut self, mask: u32) -> Result<u32> {
        self.call("umask", libc::SYS_umask, &[mask as u64])
            .map(|m| m as u32)
    }

    fn personality(&mut self, p: u32) -> Result<u32> {
        self.call("personality", libc::SYS_personality, &[p as u64])
            .map(|m| m as u32)
    }

    /// rt_sigqueueinfo(tgid, sig, &info) (`info` 128 bytes).
    fn rt_sigqueueinfo(&mut self, tgid: i32, sig: u32, info: &[u8]) -> Result<()> {
        let a = self.put(0, info)?;
        self.call(
            &format!("rt_sigqueueinfo({sig})"),
            libc::SYS_rt_sigqueueinfo,
            &[tgid as u64, sig as u64, a],
        )
        .map(drop)
    }

    /// rt_tgsigqueueinfo(tgid, tid, sig, &info) (`info` 128 bytes).
    fn rt_tgsigqueueinfo(&mut self, tgid: i32, tid: i32, sig: u32, info: &[u8]) -> Result<()> {
        let a = self.put(0, info)?;
        self.call(
            &format!("rt_tgsigqueueinfo({sig})"),
            libc::SYS_rt_tgsigqueueinfo,
            &[tgid as u64, tid as u64, sig as u64, a],
        )
        .map(drop)
    }

    /// rt_sigtimedwait for the signals of `set`, not waiting; returns the
    /// signal taken, or the kernel's error (EAGAIN: none pending).
    fn sigtimedwait_now(&mut self, set: u64) -> io::Result<u64> {
        let s = self.put(0, &set.to_ne_bytes()).map_err(io::Error::other)?;
        let ts = self.put(16, &[0u8; 16]).map_err(io::Error::other)?;
        self.syscall(libc::SYS_rt_sigtimedwait, &[s, 0, ts, 8])
    }

    fn setsid(&mut self) -> Result<u64> {
        self.call("setsid", libc::SYS_setsid, &[])
    }

    fn getpgid(&mut self, pid: i32) -> Result<u64> {
        self.call("getpgid", libc::SYS_getpgid, &[pid as u64])
    }

    /// setpgid(pid, pgid); the error names the group unless both are 0.
    fn setpgid(&mut self, pid: i32, pgid: u32) -> Result<()> {
        let name = if pid == 0 && pgid == 0 {
            "setpgid".to_string()
        } else {
            format!("setpgid({pid}, {pgid})")
        };
        self.call(&name, libc::SYS_setpgid, &[pid as u64, pgid as u64])
            .map(drop)
    }

    fn setgroups(&mut self, groups: &[u32]) -> Result<()> {
        let b: Vec<u8> = groups.iter().flat_map(|g| g.to_ne_bytes()).collect();
        let a = self.put(0, &b)?;
        self.call("setgroups", libc::SYS_setgroups, &[groups.len() as u64, a])
            .map(drop)
    }

    fn setresgid(&mut self, r: u32, e: u32, s: u32) -> Result<()> {
        self.call(
            "setresgid",
            libc::SYS_setresgid,
            &[r as u64, e as u64, s as u64],
        )
        .map(drop)
    }

    fn setresuid(&mut self, r: u32, e: u32, s: u32) -> Result<()> {
        self.call(
            "setresuid",
            libc::SYS_setresuid,
            &[r as u64, e as u64, s as u64],
        )
        .map(drop)
    }

    fn setfsgid(&mut self, g: u32) -> Result<()> {
        self.call("setfsgid", libc::SYS_setfsgid, &[g as u64])
            .map(drop)
    }

    fn setfsuid(&mut self, u: u32) -> Result<()> {
        self.call("setfsuid", libc::SYS_setfsuid, &[u as u64])
            .map(drop)
    }

    /// capset, version 3, for the calling thread: 64-bit effective,
    /// permitted and inheritable sets.
    fn capset(&mut self, eff: u64, prm: u64, inh: u64) -> Result<()> {
        let mut b = Vec::with_capacity(32);
        b.extend_from_slice(&0x2008_0522u32.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        for half in [0, 32] {
            for v in [eff, prm, inh] {
                b.extend_from_slice(&((v >> half) as u32).to_ne_bytes());
            }
        }
        let a = self.put(0, &b)?;
        self.call("capset", libc::SYS_capset, &[a, a + 8]).map(drop)
    }

    // locks (kinds::locks): taking file locks and leases back.

    /// fcntl(fd, cmd, &struct flock) for F_SETLK and F_OFD_SETLK, which
    /// never wait: lock type `ty` (F_RDLCK, F_WRLCK, F_UNLCK) on `len`
    /// bytes from `start` (`len` 0: to the end of the file). The struct
    /// goes at scratch offset 0. The kernel's error as is (EAGAIN: a
    /// conflicting lock is held).
    fn lock_range(&mut self, fd: u64, cmd: i32, ty: i16, start: u64, len: u64) -> io::Result<()> {
        // struct flock on x86_64: l_type, l_whence (i16), pad, l_start,
        // l_len (i64), l_pid (i32, 0: required by F_OFD_SETLK), pad.
        let mut b = [0u8; 32];
        b[0..2].copy_from_slice(&ty.to_ne_bytes());
        b[2..4].copy_from_slice(&(libc::SEEK_SET as i16).to_ne_bytes());
        b[8..16].copy_from_slice(&start.to_ne_bytes());
        b[16..24].copy_from_slice(&len.to_ne_bytes());
        let a = self
            .put(0, &b)
            .map_err(|e| io::Error::other(e.to_string()))?;
        self.syscall(libc::SYS_fcntl, &[fd, cmd as u64, a])
            .map(drop)
    }

    /// flock(fd, op); the kernel's error as is (EWOULDBLOCK with LOCK_NB).
    fn lock_flock(&mut self, fd: u64, op: i32) -> io::Result<()> {
        self.syscall(libc::SYS_flock, &[fd, op as u64]).map(drop)
    }

    /// fcntl(fd, F_SETLEASE, ty); the kernel's error as is.
    fn lock_lease(&mut self, fd: u64, ty: i32) -> io::Result<()> {
        self.syscall(libc::SYS_fcntl, &[fd, libc::F_SETLEASE as u64, ty as u64])
            .map(drop)
    }

    /// fcntl(fd, F_GETOWN_EX) in the process: the owner's (type, pid) of
    /// the description. (`sys::fown` is the same call on cairn's own copy
    /// of an fd; F_SETLEASE needs the process itself.)
    fn lock_owner_get(&mut self, fd: u64) -> Result<(i32, i32)> {
        let a = self.put(0, &fown::OwnerEx::default().to_bytes())?;
        self.call(
            "fcntl(F_GETOWN_EX)",
            libc::SYS_fcntl,
            &[fd, fown::F_GETOWN_EX as u64, a],
        )?;
        let o = fown::OwnerEx::from_bytes(&self.get(0, fown::OwnerEx::SIZE)?);
        Ok((o.ty, o.pid))
    }

    /// fcntl(fd, F_SETOWN_EX, {ty, pid}) in the process.
    fn lock_owner_set(&mut self, fd: u64, ty: i32, pid: i32) -> Result<()> {
        let a = self.put(0, &fown::OwnerEx { ty, pid }.to_bytes())?;
        self.call(
            "fcntl(F_SETOWN_EX)",
            libc::SYS_fcntl,
            &[fd, fown::F_SETOWN_EX as u64, a],
        )
        .map(drop)
    }
    // fdflags: file status flags of every kind, pidfds.

    /// fcntl(fd, F_GETFL).
    fn get_fl(&mut self, fd: u64) -> Result<u32> {
        self.call(
            &format!("fcntl(fd {fd}, F_GETFL)"),
            libc::SYS_fcntl,
            &[fd, libc::F_GETFL as u64],
        )
        .map(|v| v as u32)
    }

    /// fcntl(fd, F_SETFL, flags); the error names the fd and the flags.
    fn set_fl_named(&mut self, fd: u64, flags: u32) -> Result<()> {
        self.call(
            &format!(
                "fcntl(fd {fd}, F_SETFL, {})",
                crate::kinds::fd::flag_names(flags)
            ),
            libc::SYS_fcntl,
            &[fd, libc::F_SETFL as u64, flags as u64],
        )
        .map(drop)
    }

    /// pidfd_open(pid, flags): PIDFD_NONBLOCK, PIDFD_THREAD.
    fn pidfd_open_flags(&mut self, pid: i32, flags: u32) -> Result<u64> {
        self.call(
            &format!("pidfd_open({pid}, {flags:#o})"),
            libc::SYS_pidfd_open,
            &[pid as u64, flags as u64],
        )
    }
    // aio: AIO contexts (kinds::memory::aio).

    /// io_setup(nr_events): the new context's id (its ring's address).
    fn io_setup(&mut self, nr_events: u32) -> Result<u64> {
        let a = self.put(0, &[0u8; 8])?;
        self.call(
            &format!("io_setup({nr_events})"),
            libc::SYS_io_setup,
            &[nr_events as u64, a],
        )?;
        self.get_u64(0)
    }

    /// io_submit(ctx, n, iocbpp) with the iocb pointer array at `iocbpp`;
    /// returns how many were submitted.
    fn io_submit(&mut self, ctx: u64, n: u64, iocbpp: u64) -> Result<u64> {
        self.call(
            &format!("io_submit(ctx {ctx:#x}, {n})"),
            libc::SYS_io_submit,
            &[ctx, n, iocbpp],
        )
    }

    fn io_destroy(&mut self, ctx: u64) -> Result<()> {
        self.call(
            &format!("io_destroy(ctx {ctx:#x})"),
            libc::SYS_io_destroy,
            &[ctx],
        )
        .map(drop)
    }

    /// mremap(old, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, new).
    fn mremap_to(&mut self, old: u64, len: u64, new: u64) -> Result<u64> {
        self.call(
            &format!("mremap {old:#x}+{len:#x} to {new:#x}"),
            libc::SYS_mremap,
            &[
                old,
                len,
                len,
                (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64,
                new,
            ],
        )
    }
}

/// sigaltstack(&ss, NULL) with `ss = {sp, flags, size}`, as a call of a
/// batch ([`Calls::syscalls`]).
pub fn sigaltstack_call(sp: u64, flags: i32, size: u64) -> Syscall {
    let mut b = Vec::with_capacity(24);
    b.extend_from_slice(&sp.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&size.to_ne_bytes());
    Syscall::new(libc::SYS_sigaltstack, &[0, 0]).with_data(0, b)
}

/// rt_sigaction(sig, &act, NULL), as a call of a batch; `act` is
/// (handler, flags, restorer, mask).
pub fn sigaction_call(sig: u32, act: [u64; 4]) -> Syscall {
    let b: Vec<u8> = act.iter().flat_map(|w| w.to_ne_bytes()).collect();
    Syscall::new(libc::SYS_rt_sigaction, &[sig as u64, 0, 0, 8]).with_data(1, b)
}

/// prctl(PR_SET_NAME, comm), as a call of a batch.
pub fn set_comm_call(comm: &str) -> Syscall {
    let mut b = comm.as_bytes().to_vec();
    b.push(0);
    Syscall::new(libc::SYS_prctl, &[libc::PR_SET_NAME as u64, 0]).with_data(1, b)
}

/// prlimit64(0, res, &{cur, max}, NULL), as a call of a batch.
pub fn setrlimit_call(res: u32, cur: u64, max: u64) -> Syscall {
    let mut b = cur.to_ne_bytes().to_vec();
    b.extend_from_slice(&max.to_ne_bytes());
    Syscall::new(libc::SYS_prlimit64, &[0, res as u64, 0, 0]).with_data(2, b)
}

/// [`Calls::syscalls`], one call at a time.
fn one_by_one<C: Calls + ?Sized>(
    c: &mut C,
    calls: &[Syscall],
) -> Result<std::result::Result<Vec<u64>, Failed>> {
    let tid = c.tid();
    let mut out: Vec<u64> = Vec::with_capacity(calls.len());
    for (index, call) in calls.iter().enumerate() {
        let mut args = call.args;
        if let Some(from) = call.arg0_from {
            args[0] = *out.get(from).ok_or_else(|| {
                Error::sys(tid, "a list of calls", batch::bad_reference(index, from))
            })?;
        }
        if let Some((i, d)) = &call.data {
            args[*i] = c.put(0, d)?;
        }
        let got = match c.syscall(call.nr, &args) {
            Ok(v) => v,
            Err(error) => return Ok(Err(Failed { index, error })),
        };
        if let Some(error) = batch::check(call, got) {
            return Ok(Err(Failed { index, error }));
        }
        out.push(got);
    }
    Ok(Ok(out))
}

/// `CAIRN_TEST_BATCH_ENOSYS=NR`, for tests: the first call numbered NR
/// of a batch run by the agent loop is given a number the kernel does
/// not have, so that it fails there (ENOSYS) as a call of the batch.
fn test_enosys() -> Option<libc::c_long> {
    static V: std::sync::OnceLock<Option<libc::c_long>> = std::sync::OnceLock::new();
    *V.get_or_init(|| {
        std::env::var("CAIRN_TEST_BATCH_ENOSYS")
            .ok()
            .and_then(|v| v.parse().ok())
    })
}

impl super::Agent {
    /// [`Calls::syscalls`] through the agent loop: the descriptors go in
    /// the upper half of the scratch area, as many per batch as fit.
    fn run_batches(&mut self, calls: &[Syscall]) -> Result<std::result::Result<Vec<u64>, Failed>> {
        let tid = self.remote.tid;
        let off = self.scratch_len / 2;
        let room = (self.scratch_len - off) as usize;
        let mut out = Vec::with_capacity(calls.len());
        let mut start = 0;
        while start < calls.len() {
            // As many calls as fit, at least one.
            let (mut end, mut len) = (start, 0);
            while end < calls.len() && (end == start || len + calls[end].batch_len() <= room) {
                len += calls[end].batch_len();
                end += 1;
            }
            // A call that takes the result of a call of an earlier chunk
            // gets it as a plain argument.
            let chunk: Vec<Syscall> = (start..end)
                .map(|i| {
                    let mut c = calls[i].clone();
                    match c.arg0_from {
                        Some(from) if from < start => {
                            c.args[0] = out[from];
                            c.arg0_from = None;
                        }
                        Some(from) => c.arg0_from = Some(from - start),
                        None => {}
                    }
                    c
                })
                .collect();
            let chunk = &chunk[..];
            let at = self.scratch + off;
            let mut descs =
                batch::encode(chunk, at).map_err(|e| Error::sys(tid, "a batch of calls", e))?;
            if let Some(nr) = test_enosys() {
                if let Some(i) = chunk.iter().position(|c| c.nr == nr) {
                    descs[i * batch::ENTRY_LEN..i * batch::ENTRY_LEN + 4]
                        .copy_from_slice(&0xfffu32.to_ne_bytes());
                }
            }
            let first = self.put_scratch(off, &descs)?;
            crate::sys::inject::count_batch(chunk.iter().map(|c| c.nr));
            let end_addr = first + (chunk.len() * batch::ENTRY_LEN) as u64;
            let stop = self
                .remote
                .run_batch(first, end_addr)
                .map_err(|e| Error::sys(tid, "run the agent loop", e))?;
            let stopped = stop
                .checked_sub(first)
                .map(|d| (d / batch::ENTRY_LEN as u64) as usize)
                .filter(|&i| i <= chunk.len())
                .ok_or_else(|| {
                    Error::sys(
                        tid,
                        "run the agent loop",
                        io::Error::other(format!("stopped with rbx {stop:#x}")),
                    )
                })?;
            let back = self.get_scratch(off, chunk.len() * batch::ENTRY_LEN)?;
            match batch::decode(chunk, &back, stopped)
                .map_err(|e| Error::sys(tid, "results of the agent loop", e))?
            {
                Ok(r) => out.extend(r),
                Err(f) => {
                    return Ok(Err(Failed {
                        index: start + f.index,
                        error: f.error,
                    }))
                }
            }
            start = end;
        }
        Ok(Ok(out))
    }
}

impl Calls for super::Agent {
    fn syscalls(&mut self, calls: &[Syscall]) -> Result<std::result::Result<Vec<u64>, Failed>> {
        if self.remote.has_agent() && self.scratch_len >= super::SCRATCH_LEN && calls.len() > 1 {
            self.run_batches(calls)
        } else {
            one_by_one(self, calls)
        }
    }

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

impl Calls for super::Known<'_> {
    fn pid(&self) -> i32 {
        self.agent.pid
    }

    fn tid(&self) -> i32 {
        self.agent.remote.tid
    }

    fn syscall(&mut self, nr: libc::c_long, args: &[u64]) -> io::Result<u64> {
        self.agent.remote.syscall(nr, args)
    }

    fn put(&mut self, off: u64, bytes: &[u8]) -> Result<u64> {
        self.agent.put_scratch(off, bytes)
    }

    fn get(&self, off: u64, len: usize) -> Result<Vec<u8>> {
        self.agent.get_scratch(off, len)
    }

    fn syscalls(&mut self, calls: &[Syscall]) -> Result<std::result::Result<Vec<u64>, Failed>> {
        self.agent.syscalls(calls)
    }

    fn sigaction_set(&mut self, sig: u32, act: [u64; 4]) -> Result<()> {
        self.sigactions_set(&[(sig, act)])
    }

    fn sigactions_set(&mut self, acts: &[(u32, [u64; 4])]) -> Result<()> {
        let known = &mut self.known.actions;
        let new: Vec<(u32, [u64; 4])> = (acts.iter())
            .filter(|(sig, act)| known.get(*sig as usize) != Some(&Some(*act)))
            .copied()
            .collect();
        self.agent.sigactions_set(&new)?;
        for (sig, act) in new {
            if let Some(k) = known.get_mut(sig as usize) {
                *k = Some(act);
            }
        }
        Ok(())
    }

    fn getrlimit(&mut self, res: u32) -> Result<(u64, u64)> {
        match self.known.limits.get(res as usize) {
            Some(Some(l)) => Ok(*l),
            _ => self.agent.getrlimit(res),
        }
    }

    fn setrlimits(&mut self, limits: &[(u32, u64, u64)]) -> Result<()> {
        let known = &mut self.known.limits;
        let new: Vec<(u32, u64, u64)> = (limits.iter())
            .filter(|&&(res, cur, max)| known.get(res as usize) != Some(&Some((cur, max))))
            .copied()
            .collect();
        self.agent.setrlimits(&new)?;
        for (res, cur, max) in new {
            if let Some(k) = known.get_mut(res as usize) {
                *k = Some((cur, max));
            }
        }
        Ok(())
    }
}
