//! A simulated process for unit tests of restore logic: the [`Calls`]
//! primitives over an in-memory fd table, a scratch buffer and a small
//! file system, with no root, ptrace or real process needed.
//!
//! Several [`FakeTask`]s share one [`FakeWorld`], so that calls between
//! processes (pidfd_getfd) work as in a restored tree: a fetched fd
//! refers to the same open file description as the original. Syscalls the
//! fake does not know fail with ENOSYS, so a test notices when restore
//! logic starts to depend on one.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::rc::Rc;

use super::Calls;
use crate::error::{Error, Result};

/// Where the fake scratch area appears to live.
pub const FAKE_SCRATCH: u64 = 0x7f00_0000_0000;
const FAKE_SCRATCH_LEN: usize = 64 * 1024;
/// RLIMIT_NOFILE of every fake process.
pub const FAKE_NOFILE: u64 = 1024;

/// What an open file description is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeObject {
    /// A file opened by path.
    Path(String),
    /// End of pipe number `n` (counted per world), read end if `read`.
    Pipe { n: u32, read: bool },
    /// A pidfd for the process.
    Pidfd(i32),
    /// An eventfd with its counter.
    Eventfd { count: u64, semaphore: bool },
    /// An epoll instance: its watches as (fd, description, events, data).
    Epoll {
        watches: Vec<(u64, usize, u32, u64)>,
    },
}

/// An open file description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeDesc {
    pub object: FakeObject,
    /// File status flags (O_ACCMODE, O_NONBLOCK, O_APPEND ...).
    pub flags: u64,
    pub pos: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FakeFd {
    /// Index into [`FakeWorld::descs`].
    pub desc: usize,
    pub cloexec: bool,
}

/// Everything the fake processes share.
#[derive(Debug, Default)]
pub struct FakeWorld {
    /// Paths that open() finds.
    pub files: BTreeSet<String>,
    pub descs: Vec<FakeDesc>,
    /// pid -> fd table.
    pub fds: BTreeMap<i32, BTreeMap<u64, FakeFd>>,
    /// pid -> (cwd, root).
    pub fs: BTreeMap<i32, (String, String)>,
    pipes: u32,
}

impl FakeWorld {
    pub fn new() -> Rc<RefCell<FakeWorld>> {
        Rc::new(RefCell::new(FakeWorld::default()))
    }

    /// The fd table of `pid`: fd -> (description, close-on-exec).
    pub fn table(&self, pid: i32) -> BTreeMap<u64, (FakeDesc, bool)> {
        self.fds
            .get(&pid)
            .map(|t| {
                t.iter()
                    .map(|(&fd, f)| (fd, (self.descs[f.desc].clone(), f.cloexec)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Description index behind fd `fd` of `pid`.
    pub fn desc_of(&self, pid: i32, fd: u64) -> Option<usize> {
        self.fds.get(&pid)?.get(&fd).map(|f| f.desc)
    }
}

/// One simulated process.
pub struct FakeTask {
    pub pid: i32,
    pub world: Rc<RefCell<FakeWorld>>,
    scratch: Vec<u8>,
    /// Every syscall made, by name, in order.
    pub log: Vec<String>,
    /// Address space (see [`FakeMm`]).
    pub mm: FakeMm,
    /// Name, dispositions, limits and other attributes (see [`FakeAttrs`]).
    pub attrs: FakeAttrs,
}

fn err(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

impl FakeTask {
    pub fn new(world: &Rc<RefCell<FakeWorld>>, pid: i32) -> FakeTask {
        {
            let mut w = world.borrow_mut();
            w.fds.entry(pid).or_default();
            w.fs.entry(pid).or_insert(("/".into(), "/".into()));
        }
        FakeTask {
            pid,
            world: Rc::clone(world),
            scratch: vec![0; FAKE_SCRATCH_LEN],
            log: Vec::new(),
            mm: FakeMm::default(),
            attrs: FakeAttrs::default(),
        }
    }

    fn scratch_off(&self, addr: u64, len: usize) -> io::Result<usize> {
        let off = addr
            .checked_sub(FAKE_SCRATCH)
            .ok_or_else(|| err(libc::EFAULT))? as usize;
        if off + len > self.scratch.len() {
            return Err(err(libc::EFAULT));
        }
        Ok(off)
    }

    fn cstr(&self, addr: u64) -> io::Result<String> {
        let off = self.scratch_off(addr, 1)?;
        let end = self.scratch[off..]
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| err(libc::EFAULT))?;
        Ok(String::from_utf8_lossy(&self.scratch[off..off + end]).into_owned())
    }

    /// Installs description `desc` at the lowest free fd >= `min`.
    fn install(&mut self, desc: usize, min: u64, cloexec: bool) -> io::Result<u64> {
        if min >= FAKE_NOFILE {
            return Err(err(libc::EINVAL));
        }
        let mut w = self.world.borrow_mut();
        let t = w.fds.entry(self.pid).or_default();
        let fd = (min..FAKE_NOFILE)
            .find(|fd| !t.contains_key(fd))
            .ok_or_else(|| err(libc::EMFILE))?;
        t.insert(fd, FakeFd { desc, cloexec });
        Ok(fd)
    }

    fn new_desc(&mut self, object: FakeObject, flags: u64) -> usize {
        let mut w = self.world.borrow_mut();
        w.descs.push(FakeDesc {
            object,
            flags,
            pos: 0,
        });
        w.descs.len() - 1
    }

    fn fd(&self, fd: u64) -> io::Result<FakeFd> {
        self.world
            .borrow()
            .fds
            .get(&self.pid)
            .and_then(|t| t.get(&fd).copied())
            .ok_or_else(|| err(libc::EBADF))
    }

    fn run(&mut self, nr: libc::c_long, a: [u64; 6]) -> io::Result<u64> {
        let cloexec = |flags: u64| flags & libc::O_CLOEXEC as u64 != 0;
        match nr {
            libc::SYS_openat => {
                if a[0] != libc::AT_FDCWD as i64 as u64 {
                    return Err(err(libc::ENOSYS));
                }
                let path = self.cstr(a[1])?;
                if !self.world.borrow().files.contains(&path) {
                    return Err(err(libc::ENOENT));
                }
                let keep = !(libc::O_CLOEXEC
                    | libc::O_CREAT
                    | libc::O_EXCL
                    | libc::O_NOCTTY
                    | libc::O_TRUNC) as u64;
                let d = self.new_desc(FakeObject::Path(path), a[2] & keep);
                self.install(d, 0, cloexec(a[2]))
            }
            libc::SYS_close => {
                let mut w = self.world.borrow_mut();
                let t = w.fds.entry(self.pid).or_default();
                t.remove(&a[0]).map(|_| 0).ok_or_else(|| err(libc::EBADF))
            }
            libc::SYS_fcntl => {
                let f = self.fd(a[0])?;
                match a[1] as i32 {
                    libc::F_DUPFD => self.install(f.desc, a[2], false),
                    libc::F_DUPFD_CLOEXEC => self.install(f.desc, a[2], true),
                    libc::F_GETFL => Ok(self.world.borrow().descs[f.desc].flags),
                    libc::F_SETFL => {
                        let settable = crate::kinds::fd::SETFL_FLAGS as u64;
                        let d = &mut self.world.borrow_mut().descs[f.desc];
                        d.flags = (d.flags & !settable) | (a[2] & settable);
                        Ok(0)
                    }
                    libc::F_SETPIPE_SZ => Ok(a[2].max(4096).next_power_of_two()),
                    _ => Err(err(libc::ENOSYS)),
                }
            }
            libc::SYS_dup3 => {
                let f = self.fd(a[0])?;
                if a[0] == a[1] {
                    return Err(err(libc::EINVAL));
                }
                if a[1] >= FAKE_NOFILE {
                    return Err(err(libc::EBADF));
                }
                let mut w = self.world.borrow_mut();
                let t = w.fds.entry(self.pid).or_default();
                t.insert(
                    a[1],
                    FakeFd {
                        desc: f.desc,
                        cloexec: cloexec(a[2]),
                    },
                );
                Ok(a[1])
            }
            libc::SYS_lseek => {
                let f = self.fd(a[0])?;
                if a[2] != libc::SEEK_SET as u64 {
                    return Err(err(libc::ENOSYS));
                }
                self.world.borrow_mut().descs[f.desc].pos = a[1];
                Ok(a[1])
            }
            libc::SYS_pipe2 => {
                let n = {
                    let mut w = self.world.borrow_mut();
                    w.pipes += 1;
                    w.pipes
                };
                let fl = a[1] & libc::O_NONBLOCK as u64;
                let rd = self.new_desc(FakeObject::Pipe { n, read: true }, fl);
                let wd = self.new_desc(
                    FakeObject::Pipe { n, read: false },
                    fl | libc::O_WRONLY as u64,
                );
                let r = self.install(rd, 0, cloexec(a[1]))?;
                let w = self.install(wd, 0, cloexec(a[1]))?;
                let off = self.scratch_off(a[0], 8)?;
                self.scratch[off..off + 4].copy_from_slice(&(r as u32).to_ne_bytes());
                self.scratch[off + 4..off + 8].copy_from_slice(&(w as u32).to_ne_bytes());
                Ok(0)
            }
            libc::SYS_pidfd_open => {
                let pid = a[0] as i32;
                if !self.world.borrow().fds.contains_key(&pid) {
                    return Err(err(libc::ESRCH));
                }
                let d = self.new_desc(FakeObject::Pidfd(pid), libc::O_RDWR as u64);
                self.install(d, 0, true)
            }
            libc::SYS_pidfd_getfd => {
                let f = self.fd(a[0])?;
                let FakeObject::Pidfd(owner) = self.world.borrow().descs[f.desc].object else {
                    return Err(err(libc::EBADF));
                };
                let desc = self
                    .world
                    .borrow()
                    .desc_of(owner, a[1])
                    .ok_or_else(|| err(libc::EBADF))?;
                self.install(desc, 0, true)
            }
            libc::SYS_eventfd2 => {
                let fl = a[1] & libc::O_NONBLOCK as u64;
                let semaphore = a[1] & libc::EFD_SEMAPHORE as u64 != 0;
                let d = self.new_desc(
                    FakeObject::Eventfd {
                        count: a[0],
                        semaphore,
                    },
                    fl | libc::O_RDWR as u64,
                );
                self.install(d, 0, cloexec(a[1]))
            }
            libc::SYS_write => {
                let f = self.fd(a[0])?;
                let off = self.scratch_off(a[1], a[2] as usize)?;
                let bytes = self.scratch[off..off + a[2] as usize].to_vec();
                let mut w = self.world.borrow_mut();
                match &mut w.descs[f.desc].object {
                    FakeObject::Eventfd { count, .. } => {
                        let v =
                            u64::from_ne_bytes(bytes.try_into().map_err(|_| err(libc::EINVAL))?);
                        *count = count.checked_add(v).ok_or_else(|| err(libc::EAGAIN))?;
                        Ok(8)
                    }
                    _ => Err(err(libc::ENOSYS)),
                }
            }
            libc::SYS_epoll_create1 => {
                let d = self.new_desc(
                    FakeObject::Epoll {
                        watches: Vec::new(),
                    },
                    libc::O_RDWR as u64,
                );
                self.install(d, 0, cloexec(a[0]))
            }
            libc::SYS_epoll_ctl => {
                let ep = self.fd(a[0])?;
                let target = self.fd(a[2])?;
                if a[1] != libc::EPOLL_CTL_ADD as u64 {
                    return Err(err(libc::ENOSYS));
                }
                let off = self.scratch_off(a[3], 12)?;
                let ev = &self.scratch[off..off + 12];
                let events = u32::from_ne_bytes(ev[0..4].try_into().unwrap_or_default());
                let data = u64::from_ne_bytes(ev[4..12].try_into().unwrap_or_default());
                let mut w = self.world.borrow_mut();
                let FakeObject::Epoll { watches } = &mut w.descs[ep.desc].object else {
                    return Err(err(libc::EINVAL));
                };
                if watches
                    .iter()
                    .any(|&(fd, d, _, _)| fd == a[2] && d == target.desc)
                {
                    return Err(err(libc::EEXIST));
                }
                watches.push((a[2], target.desc, events, data));
                Ok(0)
            }
            libc::SYS_chdir | libc::SYS_chroot => {
                let path = self.cstr(a[0])?;
                if !self.world.borrow().files.contains(&path) {
                    return Err(err(libc::ENOENT));
                }
                let mut w = self.world.borrow_mut();
                let fs = w.fs.entry(self.pid).or_default();
                if nr == libc::SYS_chdir {
                    fs.0 = path;
                } else {
                    fs.1 = path;
                }
                Ok(0)
            }
            nr if mm_name(nr).is_some() => self.run_mm(nr, a),
            _ => Err(err(libc::ENOSYS)),
        }
    }
}

/// A syscall's name for the log.
fn name(nr: libc::c_long) -> String {
    match nr {
        libc::SYS_openat => "openat".into(),
        libc::SYS_close => "close".into(),
        libc::SYS_fcntl => "fcntl".into(),
        libc::SYS_dup3 => "dup3".into(),
        libc::SYS_lseek => "lseek".into(),
        libc::SYS_pipe2 => "pipe2".into(),
        libc::SYS_pidfd_open => "pidfd_open".into(),
        libc::SYS_pidfd_getfd => "pidfd_getfd".into(),
        libc::SYS_chdir => "chdir".into(),
        libc::SYS_chroot => "chroot".into(),
        libc::SYS_eventfd2 => "eventfd2".into(),
        libc::SYS_write => "write".into(),
        libc::SYS_epoll_create1 => "epoll_create1".into(),
        libc::SYS_epoll_ctl => "epoll_ctl".into(),
        n => mm_name(n).map_or_else(|| format!("syscall {n}"), str::to_string),
    }
}

impl Calls for FakeTask {
    fn pid(&self) -> i32 {
        self.pid
    }

    fn tid(&self) -> i32 {
        self.pid
    }

    fn syscall(&mut self, nr: libc::c_long, args: &[u64]) -> io::Result<u64> {
        let mut a = [0u64; 6];
        for (d, s) in a.iter_mut().zip(args) {
            *d = *s;
        }
        self.log.push(name(nr));
        self.run(nr, a)
    }

    fn put(&mut self, off: u64, bytes: &[u8]) -> Result<u64> {
        let off = off as usize;
        if off + bytes.len() > self.scratch.len() {
            return Err(Error::sys(
                self.pid,
                "scratch",
                io::Error::other("scratch area too small"),
            ));
        }
        self.scratch[off..off + bytes.len()].copy_from_slice(bytes);
        Ok(FAKE_SCRATCH + off as u64)
    }

    fn get(&self, off: u64, len: usize) -> Result<Vec<u8>> {
        let off = off as usize;
        self.scratch
            .get(off..off + len)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| {
                Error::sys(
                    self.pid,
                    "scratch",
                    io::Error::other("read beyond the scratch area"),
                )
            })
    }
}

// ------------------------------------ address space, process attributes
// (mmap, munmap, mprotect, madvise, prctl, rt_sigaction, prlimit64,
// umask, personality), for the restore logic of kinds::memory and
// kinds::task.

/// Where a fake mmap without an address starts looking.
const FAKE_MMAP_BASE: u64 = 0x7e00_0000_0000;

/// One mapping of a fake address space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeVma {
    pub end: u64,
    pub prot: i32,
    /// MAP_* flags as given (MAP_FIXED and MAP_FIXED_NOREPLACE cleared).
    pub flags: i32,
    /// What is mapped: None for anonymous memory.
    pub object: Option<FakeObject>,
    pub off: u64,
}

/// A fake process's address space (start -> mapping) and the advice it
/// was given.
#[derive(Debug, Default, Clone)]
pub struct FakeMm {
    pub vmas: BTreeMap<u64, FakeVma>,
    /// madvise calls: (address, length, advice).
    pub advice: Vec<(u64, u64, i32)>,
}

/// A fake process's attributes: what rt_sigaction, prlimit64, umask,
/// personality and prctl set and get.
#[derive(Debug, Clone)]
pub struct FakeAttrs {
    pub comm: String,
    pub umask: u32,
    pub personality: u32,
    /// signal -> (handler, flags, restorer, mask); absent: SIG_DFL.
    pub sigactions: BTreeMap<u32, [u64; 4]>,
    /// resource -> (soft, hard); absent: unlimited.
    pub rlimits: BTreeMap<u32, (u64, u64)>,
    /// Values set by prctl(PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER,
    /// PR_SET_DUMPABLE), by option.
    pub prctl: BTreeMap<i32, u64>,
}

impl Default for FakeAttrs {
    fn default() -> FakeAttrs {
        FakeAttrs {
            comm: String::new(),
            umask: 0o022,
            personality: 0,
            sigactions: BTreeMap::new(),
            rlimits: BTreeMap::new(),
            prctl: BTreeMap::new(),
        }
    }
}

impl FakeMm {
    fn overlaps(&self, s: u64, e: u64) -> bool {
        self.vmas.iter().any(|(&vs, v)| vs < e && s < v.end)
    }

    /// Whether [s, e) is mapped throughout.
    fn covered(&self, s: u64, e: u64) -> bool {
        let mut at = s;
        for (&vs, v) in self.vmas.range(..e) {
            if v.end <= at {
                continue;
            }
            if vs > at {
                return false;
            }
            at = v.end;
            if at >= e {
                return true;
            }
        }
        at >= e
    }

    /// Removes [s, e), splitting the mappings it cuts.
    fn punch(&mut self, s: u64, e: u64) {
        let hit: Vec<u64> = self
            .vmas
            .iter()
            .filter(|(&vs, v)| vs < e && s < v.end)
            .map(|(&vs, _)| vs)
            .collect();
        for vs in hit {
            let Some(v) = self.vmas.remove(&vs) else {
                continue;
            };
            if vs < s {
                self.vmas.insert(
                    vs,
                    FakeVma {
                        end: s,
                        ..v.clone()
                    },
                );
            }
            if v.end > e {
                let off = if v.object.is_some() {
                    v.off + (e - vs)
                } else {
                    0
                };
                self.vmas.insert(e, FakeVma { off, ..v });
            }
        }
    }

    /// Splits the mappings at `a` (if one spans it).
    fn split_at(&mut self, a: u64) {
        let Some((&vs, v)) = self.vmas.range(..a).next_back() else {
            return;
        };
        if v.end > a {
            let v = v.clone();
            let off = if v.object.is_some() {
                v.off + (a - vs)
            } else {
                0
            };
            self.vmas.insert(
                vs,
                FakeVma {
                    end: a,
                    ..v.clone()
                },
            );
            self.vmas.insert(a, FakeVma { off, ..v });
        }
    }
}

/// A syscall the address-space part of the fake knows, by name.
fn mm_name(nr: libc::c_long) -> Option<&'static str> {
    Some(match nr {
        libc::SYS_mmap => "mmap",
        libc::SYS_munmap => "munmap",
        libc::SYS_mprotect => "mprotect",
        libc::SYS_madvise => "madvise",
        libc::SYS_prctl => "prctl",
        libc::SYS_rt_sigaction => "rt_sigaction",
        libc::SYS_prlimit64 => "prlimit64",
        libc::SYS_umask => "umask",
        libc::SYS_personality => "personality",
        _ => return None,
    })
}

impl FakeTask {
    fn run_mm(&mut self, nr: libc::c_long, a: [u64; 6]) -> io::Result<u64> {
        let page = crate::sys::PAGE_SIZE;
        let range = |addr: u64, len: u64| -> io::Result<(u64, u64)> {
            if !addr.is_multiple_of(page) || len == 0 {
                return Err(err(libc::EINVAL));
            }
            let end = addr
                .checked_add(len.div_ceil(page) * page)
                .ok_or_else(|| err(libc::EINVAL))?;
            Ok((addr, end))
        };
        match nr {
            libc::SYS_mmap => {
                let (prot, flags) = (a[2] as i32, a[3] as i32);
                let len = a[1].div_ceil(page) * page;
                if len == 0 {
                    return Err(err(libc::EINVAL));
                }
                let object = if flags & libc::MAP_ANONYMOUS != 0 {
                    None
                } else {
                    let f = self.fd(a[4])?;
                    Some(self.world.borrow().descs[f.desc].object.clone())
                };
                let fixed = flags & libc::MAP_FIXED != 0;
                let noreplace = flags & libc::MAP_FIXED_NOREPLACE != 0;
                let start = if fixed || noreplace {
                    let (s, e) = range(a[0], len)?;
                    if noreplace && self.mm.overlaps(s, e) {
                        return Err(err(libc::EEXIST));
                    }
                    self.mm.punch(s, e);
                    s
                } else {
                    let mut s = FAKE_MMAP_BASE;
                    while self.mm.overlaps(s, s + len) {
                        s += len;
                    }
                    s
                };
                let flags = flags & !(libc::MAP_FIXED | libc::MAP_FIXED_NOREPLACE);
                let off = if object.is_some() { a[5] } else { 0 };
                self.mm.vmas.insert(
                    start,
                    FakeVma {
                        end: start + len,
                        prot,
                        flags,
                        object,
                        off,
                    },
                );
                Ok(start)
            }
            libc::SYS_munmap => {
                let (s, e) = range(a[0], a[1])?;
                self.mm.punch(s, e);
                Ok(0)
            }
            libc::SYS_mprotect => {
                let (s, e) = range(a[0], a[1])?;
                if !self.mm.covered(s, e) {
                    return Err(err(libc::ENOMEM));
                }
                self.mm.split_at(s);
                self.mm.split_at(e);
                for (_, v) in self.mm.vmas.range_mut(s..e) {
                    v.prot = a[2] as i32;
                }
                Ok(0)
            }
            libc::SYS_madvise => {
                let (s, e) = range(a[0], a[1])?;
                if !self.mm.covered(s, e) {
                    return Err(err(libc::ENOMEM));
                }
                self.mm.advice.push((a[0], a[1], a[2] as i32));
                Ok(0)
            }
            libc::SYS_prctl if a[0] == libc::PR_SET_NAME as u64 => {
                let mut name = self.cstr(a[1])?;
                while name.len() > 15 {
                    name.pop();
                }
                self.attrs.comm = name;
                Ok(0)
            }
            libc::SYS_prctl => {
                let op = a[0] as i32;
                match op {
                    libc::PR_SET_PDEATHSIG
                    | libc::PR_SET_CHILD_SUBREAPER
                    | libc::PR_SET_DUMPABLE => {
                        self.attrs.prctl.insert(op, a[1]);
                        Ok(0)
                    }
                    libc::PR_GET_DUMPABLE => {
                        Ok(*self.attrs.prctl.get(&libc::PR_SET_DUMPABLE).unwrap_or(&1))
                    }
                    libc::PR_GET_PDEATHSIG | libc::PR_GET_CHILD_SUBREAPER => {
                        let set = if op == libc::PR_GET_PDEATHSIG {
                            libc::PR_SET_PDEATHSIG
                        } else {
                            libc::PR_SET_CHILD_SUBREAPER
                        };
                        let v = *self.attrs.prctl.get(&set).unwrap_or(&0) as u32;
                        let off = self.scratch_off(a[1], 4)?;
                        self.scratch[off..off + 4].copy_from_slice(&v.to_ne_bytes());
                        Ok(0)
                    }
                    _ => Err(err(libc::ENOSYS)),
                }
            }
            libc::SYS_rt_sigaction => {
                let sig = a[0] as u32;
                if sig == 0
                    || sig > 64
                    || sig == libc::SIGKILL as u32
                    || sig == libc::SIGSTOP as u32
                    || a[3] != 8
                {
                    return Err(err(libc::EINVAL));
                }
                let old = self.attrs.sigactions.get(&sig).copied().unwrap_or([0; 4]);
                if a[1] != 0 {
                    let off = self.scratch_off(a[1], 32)?;
                    let b = &self.scratch[off..off + 32];
                    let w = |i: usize| {
                        u64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or_default())
                    };
                    let new = [w(0), w(1), w(2), w(3)];
                    self.attrs.sigactions.insert(sig, new);
                }
                if a[2] != 0 {
                    let off = self.scratch_off(a[2], 32)?;
                    for (i, v) in old.iter().enumerate() {
                        self.scratch[off + i * 8..off + i * 8 + 8]
                            .copy_from_slice(&v.to_ne_bytes());
                    }
                }
                Ok(0)
            }
            libc::SYS_prlimit64 => {
                let res = a[1] as u32;
                if a[0] != 0 || res >= 16 {
                    return Err(err(libc::EINVAL));
                }
                let old = self
                    .attrs
                    .rlimits
                    .get(&res)
                    .copied()
                    .unwrap_or((u64::MAX, u64::MAX));
                if a[2] != 0 {
                    let off = self.scratch_off(a[2], 16)?;
                    let b = &self.scratch[off..off + 16];
                    let cur = u64::from_ne_bytes(b[0..8].try_into().unwrap_or_default());
                    let max = u64::from_ne_bytes(b[8..16].try_into().unwrap_or_default());
                    if cur > max {
                        return Err(err(libc::EINVAL));
                    }
                    // Unprivileged: a hard limit is never raised.
                    if max > old.1 {
                        return Err(err(libc::EPERM));
                    }
                    self.attrs.rlimits.insert(res, (cur, max));
                }
                if a[3] != 0 {
                    let off = self.scratch_off(a[3], 16)?;
                    self.scratch[off..off + 8].copy_from_slice(&old.0.to_ne_bytes());
                    self.scratch[off + 8..off + 16].copy_from_slice(&old.1.to_ne_bytes());
                }
                Ok(0)
            }
            libc::SYS_umask => {
                let old = self.attrs.umask;
                self.attrs.umask = a[0] as u32 & 0o777;
                Ok(old as u64)
            }
            libc::SYS_personality => {
                let old = self.attrs.personality;
                if a[0] != 0xffff_ffff {
                    self.attrs.personality = a[0] as u32;
                }
                Ok(old as u64)
            }
            _ => Err(err(libc::ENOSYS)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world_with(files: &[&str]) -> Rc<RefCell<FakeWorld>> {
        let w = FakeWorld::new();
        w.borrow_mut().files = files.iter().map(|s| s.to_string()).collect();
        w
    }

    #[test]
    fn open_dup_above_and_dup3_share_one_description() {
        let w = world_with(&["/etc/hosts"]);
        let mut t = FakeTask::new(&w, 100);
        let fd = t
            .open("/etc/hosts", libc::O_RDONLY | libc::O_CLOEXEC)
            .unwrap();
        assert_eq!(fd, 0);
        let hi = t.dup_above(fd, 64).unwrap();
        assert_eq!(hi, 64);
        t.dup3(hi, 5, false).unwrap();
        t.lseek(5, 42, libc::SEEK_SET, "/etc/hosts").unwrap();
        let table = w.borrow().table(100);
        assert_eq!(table.keys().copied().collect::<Vec<_>>(), vec![5, 64]);
        // One description: the offset set through fd 5 shows through 64.
        assert_eq!(table[&64].0.pos, 42);
        assert_eq!((table[&5].1, table[&64].1), (false, true));
        assert_eq!(t.log, ["openat", "fcntl", "close", "dup3", "lseek"]);
    }

    #[test]
    fn errors_are_the_kernels() {
        let w = world_with(&[]);
        let mut t = FakeTask::new(&w, 100);
        let e = t.open("/nope", libc::O_RDONLY).unwrap_err().to_string();
        assert!(
            e.contains("open /nope") && e.contains("No such file"),
            "{e}"
        );
        let e = t.close(7).unwrap_err().to_string();
        assert!(e.contains("remote close"), "{e}");
        assert_eq!(
            t.syscall(libc::SYS_reboot, &[]).unwrap_err().raw_os_error(),
            Some(libc::ENOSYS)
        );
        assert!(t.dup_min(0, FAKE_NOFILE).is_err());
    }

    #[test]
    fn fetch_fd_between_processes_keeps_the_description() {
        let w = world_with(&[]);
        let mut a = FakeTask::new(&w, 100);
        let mut b = FakeTask::new(&w, 101);
        let (r, wr) = a.pipe2(libc::O_CLOEXEC).unwrap();
        assert_eq!((r, wr), (0, 1));
        let got = b.fetch_fd(100, wr).unwrap();
        b.set_fl(got, libc::O_NONBLOCK as u64).unwrap();
        let world = w.borrow();
        assert_eq!(world.desc_of(101, got), world.desc_of(100, wr));
        // The pidfd used on the way is closed again.
        assert_eq!(world.table(101).len(), 1);
        assert_eq!(
            world.table(100)[&wr].0.flags,
            (libc::O_WRONLY | libc::O_NONBLOCK) as u64
        );
        drop(world);
        // Fetching from oneself duplicates.
        let dup = a.fetch_fd(100, r).unwrap();
        assert_eq!(w.borrow().desc_of(100, dup), w.borrow().desc_of(100, r));
    }

    #[test]
    fn clone3_args_reach_the_kernel_packed() {
        // The fake has no clone3: check the bytes the typed call writes.
        let w = world_with(&[]);
        let mut t = FakeTask::new(&w, 100);
        let args = crate::sys::abi::CloneArgs {
            exit_signal: libc::SIGCHLD as u64,
            ..Default::default()
        };
        let e = t.clone3(&args, &[4242]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSYS));
        let packed = t.get(0, 88).unwrap();
        let word = |i: usize| u64::from_ne_bytes(packed[i * 8..i * 8 + 8].try_into().unwrap());
        assert_eq!(word(4), libc::SIGCHLD as u64);
        assert_eq!(word(8), FAKE_SCRATCH + 128);
        assert_eq!(word(9), 1);
        assert_eq!(t.get_u32(128).unwrap(), 4242);
    }

    #[test]
    fn mappings_are_placed_replaced_split_and_protected() {
        let w = world_with(&["/lib/x.so"]);
        let mut t = FakeTask::new(&w, 100);
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let a = t.mmap_anon("a", 0, 0x3000, rw, libc::MAP_PRIVATE).unwrap();
        assert_eq!(a, FAKE_MMAP_BASE);
        // NOREPLACE refuses a taken range; FIXED replaces it.
        let noreplace = libc::MAP_PRIVATE | libc::MAP_FIXED_NOREPLACE;
        let e = t.mmap_anon("b", a + 0x1000, 0x1000, rw, noreplace);
        assert!(e.unwrap_err().to_string().contains("mmap b"));
        let fd = t.open("/lib/x.so", libc::O_RDONLY).unwrap();
        let fixed = libc::MAP_PRIVATE | libc::MAP_FIXED;
        let got = t
            .mmap(a + 0x1000, 0x1000, libc::PROT_READ, fixed, fd, 0x5000)
            .unwrap();
        assert_eq!(got, a + 0x1000);
        let starts: Vec<u64> = t.mm.vmas.keys().copied().collect();
        assert_eq!(starts, vec![a, a + 0x1000, a + 0x2000]);
        assert_eq!(
            t.mm.vmas[&(a + 0x1000)].object,
            Some(FakeObject::Path("/lib/x.so".into()))
        );
        // mprotect splits; a hole refuses it, as the kernel does.
        t.munmap(a + 0x2000, 0x1000).unwrap();
        t.mprotect(a, 0x800, libc::PROT_NONE).unwrap();
        assert_eq!(t.mm.vmas[&a].prot, libc::PROT_NONE);
        assert!(t.mprotect(a, 0x3000, libc::PROT_READ).is_err());
        t.set_comm("a-very-long-process-name").unwrap();
        assert_eq!(t.attrs.comm, "a-very-long-pro");
    }
}
