//! Bounded file readers and small /proc files: comm, personality, task
//! lists, children, boot id, symlinks.

use super::{at_path, excerpt, parse_hex_u32, parse_i32};
use crate::error::{Error, IoContext, Result};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Largest /proc file any reader accepts (64 MiB). Bigger files are refused
/// with an `Error::Io` of kind `FileTooLarge`.
pub const MAX_PROC_FILE: u64 = 64 * 1024 * 1024;

/// Reads a whole file (typically under /proc, whose files report size 0) and
/// refuses it if it is larger than [`MAX_PROC_FILE`].
pub fn read_proc_bytes(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    read_bounded(path.as_ref(), MAX_PROC_FILE)
}

pub(crate) fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>> {
    let file = File::open(path).at(path)?;
    let mut buf = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut buf)
        .at(path)?;
    if buf.len() as u64 > max {
        return Err(too_large(path, max));
    }
    Ok(buf)
}

/// The error of a file larger than a reader accepts.
fn too_large(path: &Path, max: u64) -> Error {
    Error::io(
        path,
        io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("larger than {max} bytes, refusing to read"),
        ),
    )
}

/// Reads a bounded file that must be valid UTF-8.
pub fn read_proc_string(path: impl AsRef<Path>) -> Result<String> {
    let path = path.as_ref();
    let bytes = read_proc_bytes(path)?;
    String::from_utf8(bytes).map_err(|e| {
        Error::parse(
            path.display().to_string(),
            format!("not valid UTF-8 at byte {}", e.utf8_error().valid_up_to()),
        )
    })
}

/// Reads a bounded file, replacing invalid UTF-8 (used for files whose only
/// free-form content is a task name, which may hold arbitrary bytes).
pub(crate) fn read_proc_lossy(path: &Path) -> Result<String> {
    let bytes = read_proc_bytes(path)?;
    Ok(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

pub(crate) fn proc_path(pid: i32, file: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{file}"))
}

pub(crate) fn task_path(pid: i32, tid: i32, file: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/task/{tid}/{file}"))
}

/// Name of a thread from /proc/PID/task/TID/comm, without the trailing
/// newline (other whitespace is kept: a comm may end in spaces). Invalid
/// UTF-8 is replaced.
pub fn read_comm(pid: i32, tid: i32) -> Result<String> {
    let mut s = read_proc_lossy(&task_path(pid, tid, "comm"))?;
    if s.ends_with('\n') {
        s.pop();
    }
    Ok(s)
}

/// Target of a symbolic link (e.g. /proc/PID/fd/N, /proc/PID/exe,
/// /proc/PID/ns/net). A target that is not valid UTF-8 is an error rather
/// than a silently altered path.
pub fn read_link(path: impl AsRef<Path>) -> Result<String> {
    let path = path.as_ref();
    let target = std::fs::read_link(path).at(path)?;
    target.into_os_string().into_string().map_err(|t| {
        Error::parse(
            path.display().to_string(),
            format!("link target is not valid UTF-8: {t:?}"),
        )
    })
}

/// Parses the hexadecimal personality word ("00000000\n").
pub(crate) fn parse_personality(text: &str) -> Result<u32> {
    let t = text.trim();
    parse_hex_u32(t).ok_or_else(|| Error::parse("personality", format!("bad value {}", excerpt(t))))
}

/// /proc/PID/personality (hexadecimal; readable only with ptrace access).
pub fn read_personality(pid: i32) -> Result<u32> {
    let path = proc_path(pid, "personality");
    let text = read_proc_string(&path)?;
    parse_personality(&text).map_err(|e| at_path(e, &path))
}

/// Parses a space-separated list of pids ("12 345 " or "").
pub(crate) fn parse_pid_list(text: &str) -> Result<Vec<i32>> {
    text.split_whitespace()
        .map(|w| {
            parse_i32(w)
                .filter(|&p| p > 0)
                .ok_or_else(|| Error::parse("pid list", format!("bad pid {}", excerpt(w))))
        })
        .collect()
}

/// Children of thread TID from /proc/PID/task/TID/children, in kernel order.
pub fn read_children(pid: i32, tid: i32) -> Result<Vec<i32>> {
    let path = task_path(pid, tid, "children");
    let text = read_proc_string(&path)?;
    parse_pid_list(&text).map_err(|e| at_path(e, &path))
}

/// Sorted numeric entry names of a directory; other entries are skipped.
pub(crate) fn list_numeric_dir(path: &Path) -> Result<Vec<i32>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(path).at(path)? {
        let entry = entry.at(path)?;
        if let Some(n) = entry.file_name().to_str().and_then(parse_i32) {
            if n >= 0 {
                out.push(n);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Sorted thread ids of a process, from /proc/PID/task.
pub fn list_tasks(pid: i32) -> Result<Vec<i32>> {
    list_numeric_dir(&proc_path(pid, "task"))
}

/// `root` and every process below it, as /proc shows them now (the
/// children lists of every thread), parents before their children; at
/// most 100,000. What `cairn run` and the post-copy pager and guardian
/// kill when a tree must go.
pub fn descendants(root: i32) -> Vec<i32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() && out.len() < 100_000 {
        let p = out[i];
        for t in list_tasks(p).unwrap_or_default() {
            out.extend(read_children(p, t).unwrap_or_default());
        }
        i += 1;
    }
    out
}

/// The kernel's boot id (a UUID string), from
/// /proc/sys/kernel/random/boot_id.
pub fn boot_id() -> Result<String> {
    let path = Path::new("/proc/sys/kernel/random/boot_id");
    let s = read_proc_string(path)?;
    let id = s.trim();
    if id.is_empty() {
        return Err(Error::parse(path.display().to_string(), "empty boot id"));
    }
    Ok(id.to_string())
}

/// The process a line of `/proc/locks` names: `1: POSIX  ADVISORY  WRITE
/// 1234 08:02:5 0 EOF`, or with "->" before the class for a waiter.
pub fn lock_line_pid(line: &str) -> Option<i32> {
    let (_, rest) = line.split_once(':')?;
    let mut words = rest.split_whitespace().peekable();
    if words.peek() == Some(&"->") {
        words.next();
    }
    words.nth(3)?.parse().ok()
}

/// Most times [`read_proc_locks`] reads the file.
const LOCKS_READS: usize = 64;
/// Reads in a row that must find no line of the tree not seen before.
const LOCKS_SETTLED: usize = 3;

/// `/proc/locks`, with the lines of the processes `keep` selects each
/// shown once. The kernel hands the file out at most a page per read()
/// and finds where to go on by counting entries (fs/locks.c
/// `locks_start`), so a lock taken or dropped anywhere on the machine
/// between two reads shifts the rest: lines show twice, or not at all,
/// and on a busy machine few reads are right. The locks of a stopped or
/// frozen tree do not change, and every line a read shows was there, so
/// the tree's lines are gathered over several reads, each in reads of a
/// different size (the kernel then cuts the file at other lines), until
/// three reads in a row find nothing new. The text returned is
/// the last read with the tree's lines replaced by that set (ordinal 0,
/// sorted, each once). A file that came in one read() is whole already.
pub fn read_proc_locks(keep: impl Fn(i32) -> bool) -> Result<String> {
    let path = Path::new("/proc/locks");
    let mut mine: std::collections::BTreeSet<String> = Default::default();
    let mut settled = 0;
    let mut last = String::new();
    for i in 0..LOCKS_READS {
        // 64 KiB first (the kernel fills a page per read), then sizes
        // between 1 and 4 KiB, all different.
        let chunk = if i == 0 {
            1 << 16
        } else {
            1024 + (i * 1237) % 3072
        };
        let (text, reads) = read_counting(path, chunk)?;
        if i == 0 && reads <= 1 {
            return Ok(text);
        }
        let before = mine.len();
        for l in text.lines() {
            if lock_line_pid(l).is_some_and(&keep) {
                let rest = l.split_once(':').map_or(l, |(_, r)| r);
                mine.insert(rest.trim_start().to_string());
            }
        }
        settled = if mine.len() == before { settled + 1 } else { 0 };
        last = text;
        if i > 0 && settled >= LOCKS_SETTLED {
            break;
        }
    }
    let mut out: String = (last.lines())
        .filter(|l| !lock_line_pid(l).is_some_and(&keep))
        .map(|l| format!("{l}\n"))
        .collect();
    for l in &mine {
        out.push_str("0: ");
        out.push_str(l);
        out.push('\n');
    }
    Ok(out)
}

/// A bounded text file read `chunk` bytes at a time, and how many read()
/// calls returned data.
fn read_counting(path: &Path, chunk: usize) -> Result<(String, usize)> {
    let mut file = File::open(path).at(path)?;
    let mut buf = Vec::new();
    let mut part = vec![0u8; chunk];
    let mut reads = 0;
    loop {
        let n = match file.read(&mut part) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(path, e)),
        };
        reads += 1;
        buf.extend_from_slice(&part[..n]);
        if buf.len() as u64 > MAX_PROC_FILE {
            return Err(too_large(path, MAX_PROC_FILE));
        }
    }
    let text = String::from_utf8(buf).map_err(|e| {
        Error::parse(
            path.display().to_string(),
            format!("not valid UTF-8 at byte {}", e.utf8_error().valid_up_to()),
        )
    })?;
    Ok((text, reads))
}

#[cfg(test)]
mod tests {
    #[test]
    fn lock_line_pids() {
        assert_eq!(
            lock_line_pid("1: POSIX  ADVISORY  WRITE 1234 08:02:5 0 EOF"),
            Some(1234)
        );
        assert_eq!(
            lock_line_pid("2: -> FLOCK  ADVISORY  WRITE 99 00:2a:17 0 EOF"),
            Some(99)
        );
        assert_eq!(
            lock_line_pid("3: OFDLCK ADVISORY  READ -1 00:05:7 0 EOF"),
            Some(-1)
        );
        assert_eq!(lock_line_pid("garbage"), None);
    }

    /// Locks of this process that do not change, spread over several
    /// pages of /proc/locks, while another thread takes and drops OFD
    /// locks all the time: every read shows each of them exactly once.
    #[test]
    fn proc_locks_whole_while_others_change() {
        use std::os::fd::AsRawFd;
        let dir = std::env::temp_dir().join(format!("cairn-locks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let held = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.join("held"))
            .unwrap();
        const N: i64 = 300;
        for i in 0..N {
            let fl = libc::flock {
                l_type: libc::F_WRLCK as i16,
                l_whence: libc::SEEK_SET as i16,
                l_start: i * 2,
                l_len: 1,
                l_pid: 0,
            };
            nix::fcntl::fcntl(held.as_raw_fd(), nix::fcntl::FcntlArg::F_SETLK(&fl)).unwrap();
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churn = {
            let stop = stop.clone();
            let path = dir.join("churn");
            std::thread::spawn(move || {
                let files: Vec<File> = (0..8)
                    .map(|i| {
                        std::fs::OpenOptions::new()
                            .read(true)
                            .write(true)
                            .create(true)
                            .truncate(false)
                            .open(path.with_extension(i.to_string()))
                            .unwrap()
                    })
                    .collect();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for (ty, f) in [libc::F_WRLCK, libc::F_UNLCK]
                        .iter()
                        .flat_map(|t| files.iter().map(move |f| (*t, f)))
                    {
                        let fl = libc::flock {
                            l_type: ty as i16,
                            l_whence: libc::SEEK_SET as i16,
                            l_start: 0,
                            l_len: 1,
                            l_pid: 0,
                        };
                        let _ = nix::fcntl::fcntl(
                            f.as_raw_fd(),
                            nix::fcntl::FcntlArg::F_OFD_SETLK(&fl),
                        );
                    }
                }
            })
        };
        let me = std::process::id() as i32;
        let mut bad = None;
        for _ in 0..200 {
            let text = read_proc_locks(|p| p == me).unwrap();
            let starts: std::collections::BTreeSet<i64> = (text.lines())
                .filter(|l| lock_line_pid(l) == Some(me))
                .filter_map(|l| l.split_whitespace().nth(6)?.parse().ok())
                .collect();
            let n = text
                .lines()
                .filter(|l| lock_line_pid(l) == Some(me))
                .count();
            if n != N as usize || starts != (0..N).map(|i| i * 2).collect() {
                bad = Some(n);
                break;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        churn.join().unwrap();
        drop(held);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            bad, None,
            "a read of /proc/locks showed this process's {N} locks that many times"
        );
    }

    use super::*;

    #[test]
    fn descendants_finds_a_child() {
        let mut c = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let me = me();
        let d = descendants(me);
        let _ = c.kill();
        let _ = c.wait();
        assert_eq!(d[0], me);
        assert!(d.contains(&(c.id() as i32)), "{d:?}");
    }

    fn me() -> i32 {
        std::process::id() as i32
    }

    #[test]
    fn personality() {
        assert_eq!(parse_personality("00000000\n").unwrap(), 0);
        assert_eq!(parse_personality("00400000\n").unwrap(), 0x0040_0000);
        assert_eq!(parse_personality("ffffffff").unwrap(), u32::MAX);
        assert!(parse_personality("").is_err());
        assert!(parse_personality("100000000\n").is_err());
        assert!(parse_personality("zz\n").is_err());
    }

    #[test]
    fn pid_lists() {
        assert_eq!(parse_pid_list("").unwrap(), Vec::<i32>::new());
        assert_eq!(parse_pid_list("12 345 ").unwrap(), vec![12, 345]);
        assert_eq!(parse_pid_list("7\n").unwrap(), vec![7]);
        assert!(parse_pid_list("1 x").is_err());
        assert!(parse_pid_list("-1").is_err());
        assert!(parse_pid_list("0").is_err());
        assert!(parse_pid_list("99999999999").is_err());
    }

    #[test]
    fn bounded_read_refuses_big_files() {
        let dir = std::env::temp_dir().join(format!("cairn-procfs-{}", me()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("big");
        std::fs::write(&f, vec![b'x'; 1025]).unwrap();
        assert_eq!(read_bounded(&f, 1025).unwrap().len(), 1025);
        let err = read_bounded(&f, 1024).unwrap_err();
        match err {
            Error::Io { source, .. } => assert_eq!(source.kind(), io::ErrorKind::FileTooLarge),
            e => panic!("unexpected {e:?}"),
        }
        std::fs::write(&f, b"\xff\xfe").unwrap();
        assert!(matches!(read_proc_string(&f), Err(Error::Parse { .. })));
        assert_eq!(read_proc_lossy(&f).unwrap(), "\u{fffd}\u{fffd}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            read_proc_bytes(dir.join("missing")),
            Err(Error::Io { .. })
        ));
    }

    #[test]
    fn live_self() {
        let pid = me();
        let tasks = list_tasks(pid).unwrap();
        assert!(tasks.contains(&pid));
        assert!(tasks.windows(2).all(|w| w[0] < w[1]));
        let comm = read_comm(pid, pid).unwrap();
        assert!(!comm.is_empty() && !comm.ends_with('\n'));
        assert_eq!(read_personality(pid).unwrap() & 0xff, 0); // PER_LINUX
        let _ = read_children(pid, pid).unwrap();
        let id = boot_id().unwrap();
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(
            read_link("/proc/self/exe").unwrap(),
            std::env::current_exe().unwrap().to_str().unwrap()
        );
        assert!(read_link("/proc/self/ns/net").unwrap().starts_with("net:["));
        assert!(read_link("/nonexistent-cairn").is_err());
        assert!(list_tasks(-5).is_err());
    }
}

/// One line of /proc/sysvipc/shm.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SysvShmInfo {
    pub key: i32,
    pub shmid: u32,
    /// Mode bits as printed (octal), including SHM_DEST / SHM_LOCKED.
    pub perms: u32,
    pub size: u64,
    pub uid: u32,
    pub gid: u32,
}

/// Parses /proc/sysvipc/shm (header line, then one segment per line).
pub fn parse_sysvipc_shm(text: &str) -> Result<Vec<SysvShmInfo>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        let bad = || Error::parse("/proc/sysvipc/shm", format!("line {}: {line:?}", n + 1));
        if f.len() < 9 {
            return Err(bad());
        }
        out.push(SysvShmInfo {
            key: f[0].parse().map_err(|_| bad())?,
            shmid: f[1].parse().map_err(|_| bad())?,
            perms: u32::from_str_radix(f[2], 8).map_err(|_| bad())?,
            size: f[3].parse().map_err(|_| bad())?,
            uid: f[7].parse().map_err(|_| bad())?,
            gid: f[8].parse().map_err(|_| bad())?,
        });
    }
    Ok(out)
}

pub fn read_sysvipc_shm() -> Result<Vec<SysvShmInfo>> {
    parse_sysvipc_shm(&read_proc_string("/proc/sysvipc/shm")?)
}

#[cfg(test)]
mod sysv_tests {
    use super::*;

    #[test]
    fn sysvipc_shm() {
        let t = "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap\n\
                 1234       32769  1600                 65536  100   101      1     0     0     0     0 1700000000 0 1700000000 65536 0\n";
        let v = parse_sysvipc_shm(t).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(
            (v[0].key, v[0].shmid, v[0].perms, v[0].size),
            (1234, 32769, 0o1600, 65536)
        );
        assert!(parse_sysvipc_shm("h\n1 2\n").is_err());
        assert!(parse_sysvipc_shm("h\n").unwrap().is_empty());
    }
}

/// One timer of /proc/PID/timers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PosixTimerInfo {
    pub id: i32,
    pub signo: i32,
    pub sigev_value: u64,
    /// "signal", "thread" or "none" (the kernel's name for
    /// `sigev_notify & ~SIGEV_THREAD_ID`).
    pub notify: String,
    /// "tid.N" rather than "pid.N": SIGEV_THREAD_ID, aimed at thread N.
    pub notify_thread: bool,
    /// The pid/tid after the dot in "notify: signal/pid.N".
    pub notify_id: i32,
    pub clockid: i32,
}

/// Parses /proc/PID/timers.
pub fn parse_timers(text: &str) -> Result<Vec<PosixTimerInfo>> {
    let mut out: Vec<PosixTimerInfo> = Vec::new();
    let bad = |l: &str| Error::parse("timers", format!("line {l:?}"));
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k {
            "ID" => out.push(PosixTimerInfo {
                id: v.parse().map_err(|_| bad(line))?,
                ..Default::default()
            }),
            "signal" => {
                let t = out.last_mut().ok_or_else(|| bad(line))?;
                let (s, val) = v.split_once('/').ok_or_else(|| bad(line))?;
                t.signo = s.parse().map_err(|_| bad(line))?;
                t.sigev_value = u64::from_str_radix(val, 16).map_err(|_| bad(line))?;
            }
            "notify" => {
                let t = out.last_mut().ok_or_else(|| bad(line))?;
                let (kind, rest) = v.split_once('/').ok_or_else(|| bad(line))?;
                let (target, id) = rest.split_once('.').ok_or_else(|| bad(line))?;
                t.notify = kind.to_string();
                t.notify_thread = match target {
                    "tid" => true,
                    "pid" => false,
                    _ => return Err(bad(line)),
                };
                t.notify_id = id.parse().map_err(|_| bad(line))?;
            }
            "ClockID" => {
                out.last_mut().ok_or_else(|| bad(line))?.clockid =
                    v.parse().map_err(|_| bad(line))?;
            }
            _ => {}
        }
    }
    Ok(out)
}

pub fn read_timers(pid: i32) -> Result<Vec<PosixTimerInfo>> {
    parse_timers(&read_proc_string(format!("/proc/{pid}/timers"))?)
}

#[cfg(test)]
mod timer_tests {
    use super::*;

    #[test]
    fn timers() {
        // As fs/proc/base.c show_timer() writes them: SIGEV_THREAD_ID is
        // "signal/tid.N", SIGEV_THREAD "thread/pid.N".
        let t = "ID: 1\nsignal: 14/0000000000000000\nnotify: signal/pid.29163\nClockID: 0\nID: 0\nsignal: 35/0000000000001234\nnotify: signal/tid.7\nClockID: 1\n";
        let v = parse_timers(t).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(
            (
                v[1].id,
                v[1].signo,
                v[1].sigev_value,
                v[1].notify.as_str(),
                v[1].notify_thread,
                v[1].notify_id,
                v[1].clockid
            ),
            (0, 35, 0x1234, "signal", true, 7, 1)
        );
        assert!(!v[0].notify_thread);
        assert!(parse_timers("ID: 1\nnotify: signal/xid.7\n").is_err());
        assert!(parse_timers("signal: 1/0\n").is_err());
        assert!(parse_timers("").unwrap().is_empty());
    }
}
