//! cgroup v2 membership: each process comes back in the cgroup it was
//! in, created when missing. Paths are those of `/proc/PID/cgroup`
//! ("0::/a/b"), relative to cairn's cgroup namespace root, which is where
//! the cgroup2 file system is mounted (`/sys/fs/cgroup`, or
//! `/sys/fs/cgroup/unified` on a hybrid v1/v2 host).
//!
//! A restore takes the path from an image: it is walked one component
//! at a time from the mount with `openat(O_NOFOLLOW | O_DIRECTORY)`, a
//! missing component made with `mkdirat`, and `..`, `.` and empty
//! components are rejected, so nothing outside the hierarchy is reached.
//! Threaded cgroups (a process whose threads are in different cgroups,
//! or a cgroup whose type is not "domain") are refused at dump.
//!
//! Controller settings: a v2 cgroup is *owned* by the tree when every
//! process in it and in the cgroups below it is a process of the tree
//! (so never the root, nor cairn's own). For the owned cgroups on a
//! process's path the dump saves the writable interface files of
//! [`SETTINGS`] that exist there (those of the controllers its parent
//! enables, hugetlb limits included); a restore that creates such a
//! cgroup sets them, outermost first (a parent's subtree_control before
//! its children exist), and reads each back. An owned cgroup that still
//! exists is used as it is, but must read the same values: otherwise the
//! restore fails, naming the file. Cgroups not owned are neither saved
//! nor changed.
//!
//! A restore that fails removes the cgroups it created (rmdir, deepest
//! first, each reached again with `O_NOFOLLOW` from the mount; one that
//! is not empty stays), and only those.
//!
//! v1 hierarchies (a hybrid host): each process's membership of every v1
//! hierarchy (named or with controllers) is saved; the restore moves it
//! into the same cgroup of the hierarchy, which must exist (v1 cgroups
//! are not created: a new cpuset has no CPUs). A dump refuses a process
//! in a v1 cgroup other than cairn's own of a hierarchy that is not
//! mounted (from its root) in cairn's mount namespace, and a process
//! whose threads are in different v1 cgroups.

use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::{Mode, OFlags};

use crate::error::{Error, Result};
use crate::image::proto::cgroup::{CgroupDir, CgroupSetting, CgroupV1};
use crate::image::proto::TaskCore;
use crate::image::validate::bad;

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Where the cgroup2 hierarchy is mounted, if it is.
pub fn v2_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| rustix::fs::statfs(p).is_ok_and(|s| s.f_type == CGROUP2_SUPER_MAGIC))
}

/// The v2 path ("0::" line) of `/proc/<pid>[/task/<tid>]/cgroup`.
fn read_path(file: &str) -> std::io::Result<Option<String>> {
    let text = std::fs::read_to_string(file)?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.to_string()))
}

/// The cgroup of process `pid` to save ("" when there is no v2
/// hierarchy here); threaded cgroups are refused.
pub fn dump(pid: i32, tids: &[i32]) -> Result<String> {
    let Some(root) = v2_root() else {
        return Ok(String::new());
    };
    let io = |e| Error::sys(pid, "read /proc/PID/cgroup", e);
    let Some(path) = read_path(&format!("/proc/{pid}/cgroup")).map_err(io)? else {
        return Ok(String::new());
    };
    for &tid in tids {
        let t = read_path(&format!("/proc/{pid}/task/{tid}/cgroup")).map_err(io)?;
        if t.as_deref() != Some(path.as_str()) {
            return Err(Error::unsupported(
                tid,
                format!(
                    "in cgroup {}, its process in {path}: threaded cgroups are not restored",
                    t.unwrap_or_default()
                ),
            ));
        }
    }
    check_path(&path).map_err(|why| Error::unsupported(pid, format!("cgroup {path}: {why}")))?;
    let ty = std::fs::read_to_string(root.join(path.trim_start_matches('/')).join("cgroup.type"))
        .unwrap_or_else(|_| "domain".into());
    if path != "/" && ty.trim() != "domain" {
        return Err(Error::unsupported(
            pid,
            format!(
                "cgroup {path} is of type {}: only domain cgroups are restored",
                ty.trim()
            ),
        ));
    }
    Ok(path)
}

/// Why `path` is not a plain absolute cgroup path, if it is not.
fn check_path(path: &str) -> std::result::Result<(), String> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err("not absolute (outside cairn's cgroup namespace?)".into());
    };
    if path.len() > 4096 {
        return Err("too long".into());
    }
    if rest.is_empty() {
        return Ok(());
    }
    for c in rest.split('/') {
        if c.is_empty() || c == "." || c == ".." || c.contains('\0') {
            return Err(format!("component {c:?}"));
        }
    }
    Ok(())
}

/// Image check of a saved path.
pub fn validate(cgroup: &str, pid: u32, path: &Path) -> Result<()> {
    if cgroup.is_empty() {
        return Ok(());
    }
    check_path(cgroup).map_err(|why| bad(path, format!("pid {pid}"), "attrs.cgroup", why))
}

/// The interface files saved for an owned v2 cgroup, when it has them
/// (besides `hugetlb.<size>.max` and `hugetlb.<size>.rsvd.max`). Order
/// matters: subtree_control first, cpuset.cpus before its partition.
pub const SETTINGS: &[&str] = &[
    "cgroup.subtree_control",
    "cgroup.max.depth",
    "cgroup.max.descendants",
    "cpu.max",
    "cpu.max.burst",
    "cpu.weight",
    "cpu.idle",
    "cpu.uclamp.min",
    "cpu.uclamp.max",
    "memory.max",
    "memory.high",
    "memory.low",
    "memory.min",
    "memory.swap.max",
    "memory.swap.high",
    "memory.zswap.max",
    "memory.oom.group",
    "pids.max",
    "io.weight",
    "io.max",
    "io.latency",
    "cpuset.cpus",
    "cpuset.mems",
    "cpuset.cpus.exclusive",
    "cpuset.cpus.partition",
];

/// Whether `name` is a per-size hugetlb limit.
fn is_hugetlb_limit(name: &str) -> bool {
    name.starts_with("hugetlb.") && (name.ends_with(".max") && !name.ends_with(".events"))
}

/// Deepest cgroup tree the ownership check walks, and most cgroups.
const MAX_DEPTH: usize = 64;
const MAX_CGROUPS: usize = 10_000;

/// Whether every process in the cgroup at `dir` and below it is one of
/// `tree` (`Err` for an unreadable or too large subtree).
fn owned(dir: &Path, tree: &HashSet<i32>, depth: usize, seen: &mut usize) -> std::io::Result<bool> {
    *seen += 1;
    if depth > MAX_DEPTH || *seen > MAX_CGROUPS {
        return Err(std::io::Error::other(
            "cgroup subtree too deep or too large",
        ));
    }
    let procs = std::fs::read_to_string(dir.join("cgroup.procs"))?;
    if procs
        .split_whitespace()
        .any(|p| p.parse::<i32>().map_or(true, |p| !tree.contains(&p)))
    {
        return Ok(false);
    }
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        // The entry's own type: a symbolic link is not followed.
        if e.file_type()?.is_dir() && !owned(&e.path(), tree, depth + 1, seen)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The settings of the cgroup at `dir` to save.
fn read_settings(dir: &Path) -> std::io::Result<Vec<CgroupSetting>> {
    let mut names: Vec<String> = SETTINGS.iter().map(|s| s.to_string()).collect();
    let mut huge: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| is_hugetlb_limit(n))
        .collect();
    huge.sort();
    names.extend(huge);
    let mut out = Vec::new();
    for f in names {
        match std::fs::read_to_string(dir.join(&f)) {
            Ok(v) => {
                let mut s = CgroupSetting::new();
                s.file = f;
                s.value = v.trim_end().to_string();
                out.push(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(std::io::Error::new(e.kind(), format!("{f}: {e}"))),
        }
    }
    Ok(out)
}

/// The owned cgroups on the way to `cgroup` (the path [`dump`] saved
/// for process `pid`), outermost first, with their settings; `tree` is
/// every process of the dumped tree.
pub fn dump_dirs(pid: i32, cgroup: &str, tree: &HashSet<i32>) -> Result<Vec<CgroupDir>> {
    let Some(root) = v2_root() else {
        return Ok(Vec::new());
    };
    if cgroup.is_empty() || cgroup == "/" {
        return Ok(Vec::new());
    }
    let comps: Vec<&str> = cgroup.trim_start_matches('/').split('/').collect();
    let mut out = Vec::new();
    let mut path = String::new();
    let mut owning = false;
    for c in comps {
        path.push('/');
        path.push_str(c);
        let dir = root.join(path.trim_start_matches('/'));
        let io = |e: std::io::Error| Error::sys(pid, format!("cgroup {path}"), e);
        if !owning {
            owning = owned(&dir, tree, 0, &mut 0).map_err(io)?;
        }
        if !owning {
            continue;
        }
        let ty = std::fs::read_to_string(dir.join("cgroup.type")).map_err(io)?;
        if ty.trim() != "domain" {
            return Err(Error::unsupported(
                pid,
                format!(
                    "cgroup {path} is of type {}: only domain cgroups are restored",
                    ty.trim()
                ),
            ));
        }
        let mut d = CgroupDir::new();
        d.path = path.clone();
        d.settings = read_settings(&dir).map_err(io)?;
        out.push(d);
    }
    Ok(out)
}

/// The cgroups this restore created (absolute paths), in creation order.
static CREATED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn created() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    CREATED.lock().unwrap_or_else(|e| e.into_inner())
}

/// The restore's end: on success the cgroups it created stay; on
/// failure they are removed (deepest first, only empty ones), which is
/// logged. Returns `r`.
pub fn finish_restore<T>(r: Result<T>) -> Result<T> {
    let dirs = std::mem::take(&mut *created());
    if r.is_err() {
        for d in dirs.iter().rev() {
            match remove_created(d) {
                Ok(()) => crate::info!(
                    "removed cgroup {} created by the failed restore",
                    d.display()
                ),
                Err(e) => crate::warn!(
                    "cgroup {} created by the failed restore stays: {e}",
                    d.display()
                ),
            }
        }
    }
    r
}

/// rmdir of `dir`, reached from `/` one component at a time without
/// following a symbolic link; retried while killed members go away.
fn remove_created(dir: &Path) -> std::io::Result<()> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Err(std::io::Error::other("no parent"));
    };
    let dir_flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY;
    let mut fd: OwnedFd = rustix::fs::open("/", dir_flags, Mode::empty())?;
    for c in parent.components().skip(1) {
        fd = rustix::fs::openat(&fd, c.as_os_str(), dir_flags, Mode::empty())?;
    }
    if rustix::fs::fstatfs(&fd).map(|s| s.f_type).ok() != Some(CGROUP2_SUPER_MAGIC) {
        return Err(std::io::Error::other(
            "no longer on the cgroup2 file system",
        ));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        match rustix::fs::unlinkat(&fd, name, rustix::fs::AtFlags::REMOVEDIR) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => return Ok(()),
            Err(rustix::io::Errno::BUSY) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The value a setting reads as, for comparison: whitespace runs made
/// one space; subtree_control as a sorted set.
fn norm(file: &str, v: &str) -> String {
    let mut w: Vec<&str> = v.split_whitespace().collect();
    if file == "cgroup.subtree_control" {
        w.sort_unstable();
    }
    w.join(" ")
}

/// Sets the saved `settings` of the cgroup open at `dir` (path
/// `cgroup`) where they differ, and reads each back.
fn apply_settings(pid: i32, dir: &OwnedFd, cgroup: &str, settings: &[CgroupSetting]) -> Result<()> {
    for s in settings {
        let bad_file = s.file.is_empty()
            || s.file.contains('/')
            || !(SETTINGS.contains(&s.file.as_str()) || is_hugetlb_limit(&s.file));
        if bad_file {
            return Err(Error::Restore(format!(
                "pid {pid}: cgroup {cgroup}: {:?} is not a setting cairn restores",
                s.file
            )));
        }
        let read = || -> std::io::Result<String> {
            let fd = rustix::fs::openat(
                dir,
                s.file.as_str(),
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let mut f = std::fs::File::from(fd);
            let mut t = String::new();
            std::io::Read::read_to_string(&mut f, &mut t)?;
            Ok(t)
        };
        let io = |what: &str, e: std::io::Error| {
            Error::sys(pid, format!("{what} {cgroup}/{}", s.file), e)
        };
        let want = norm(&s.file, &s.value);
        if norm(&s.file, &read().map_err(|e| io("read", e))?) == want {
            continue;
        }
        let writes: Vec<String> = if s.file == "cgroup.subtree_control" {
            vec![s
                .value
                .split_whitespace()
                .map(|c| format!("+{c}"))
                .collect::<Vec<_>>()
                .join(" ")]
        } else {
            // Keyed files (io.max, io.weight) take one line per write.
            s.value.lines().map(str::to_string).collect()
        };
        let fd = rustix::fs::openat(
            dir,
            s.file.as_str(),
            OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io("open", e.into()))?;
        for w in writes.iter().filter(|w| !w.trim().is_empty()) {
            rustix::io::write(&fd, w.as_bytes())
                .map_err(|e| io(&format!("write {w:?} to"), e.into()))?;
        }
        let got = norm(&s.file, &read().map_err(|e| io("read back", e))?);
        if got != want {
            return Err(Error::Restore(format!(
                "pid {pid}: cgroup {cgroup}/{} reads {got:?} after the restore set it, not \
                 {want:?}",
                s.file
            )));
        }
    }
    Ok(())
}

/// Puts the new process `pid` into cgroup `cgroup` (created when
/// missing, with the settings of `dirs` for an owned one) unless it is
/// there already.
pub fn restore(pid: i32, cgroup: &str, dirs: &[CgroupDir]) -> Result<()> {
    if cgroup.is_empty() {
        return Ok(());
    }
    let io = |what: String| move |e: std::io::Error| Error::sys(pid, what, e);
    let now =
        read_path(&format!("/proc/{pid}/cgroup")).map_err(io("read /proc/PID/cgroup".into()))?;
    if now.as_deref() == Some(cgroup) {
        return Ok(());
    }
    let root = v2_root().ok_or_else(|| {
        Error::Restore(format!(
            "pid {pid}: was in cgroup {cgroup}, but no cgroup2 hierarchy is mounted here"
        ))
    })?;
    check_path(cgroup)
        .map_err(|why| Error::Restore(format!("pid {pid}: cgroup {cgroup}: {why}")))?;
    let dir_flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY;
    let mut dir: OwnedFd = rustix::fs::open(&root, dir_flags, Mode::empty())
        .map_err(|e| io(format!("open {}", root.display()))(e.into()))?;
    let mut path = String::new();
    for c in cgroup
        .trim_start_matches('/')
        .split('/')
        .filter(|c| !c.is_empty())
    {
        path.push('/');
        path.push_str(c);
        let abs = root.join(path.trim_start_matches('/'));
        let settings = dirs
            .iter()
            .find(|d| d.path == path)
            .map(|d| &d.settings[..]);
        let next = match rustix::fs::openat(&dir, c, dir_flags, Mode::empty()) {
            Ok(d) => {
                // Made by this restore for an earlier process, or there
                // before: then it must read as the dump's.
                if !created().contains(&abs) {
                    if let Some(s) = settings {
                        apply_existing(pid, &d, &path, s)?;
                    }
                }
                d
            }
            Err(rustix::io::Errno::NOENT) => {
                rustix::fs::mkdirat(&dir, c, Mode::from_raw_mode(0o755))
                    .map_err(|e| io(format!("create cgroup {path}"))(e.into()))?;
                created().push(abs);
                crate::info!("pid {pid}: created cgroup {path}");
                let d = rustix::fs::openat(&dir, c, dir_flags, Mode::empty())
                    .map_err(|e| io(format!("open cgroup {path}"))(e.into()))?;
                if let Some(s) = settings {
                    apply_settings(pid, &d, &path, s)?;
                }
                d
            }
            Err(e) => return Err(io(format!("open cgroup {path}"))(e.into())),
        };
        dir = next;
    }
    let procs = rustix::fs::openat(
        &dir,
        "cgroup.procs",
        OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io(format!("open {cgroup}/cgroup.procs"))(e.into()))?;
    rustix::io::write(&procs, pid.to_string().as_bytes())
        .map_err(|e| io(format!("move into cgroup {cgroup}"))(e.into()))?;
    let got =
        read_path(&format!("/proc/{pid}/cgroup")).map_err(io("read /proc/PID/cgroup".into()))?;
    if got.as_deref() != Some(cgroup) {
        return Err(Error::Restore(format!(
            "pid {pid}: in cgroup {} after the move, not {cgroup}",
            got.unwrap_or_default()
        )));
    }
    Ok(())
}

/// An owned cgroup that the restore finds in place: each saved setting
/// must read the same (the restore does not change a cgroup it did not
/// create).
fn apply_existing(pid: i32, dir: &OwnedFd, cgroup: &str, settings: &[CgroupSetting]) -> Result<()> {
    for s in settings {
        let fd = match rustix::fs::openat(
            dir,
            s.file.as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(e) => return Err(Error::sys(pid, format!("open {cgroup}/{}", s.file), e)),
        };
        let mut t = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut t)
            .map_err(|e| Error::sys(pid, format!("read {cgroup}/{}", s.file), e))?;
        if norm(&s.file, &t) != norm(&s.file, &s.value) {
            return Err(Error::Restore(format!(
                "pid {pid}: cgroup {cgroup} exists with {} {:?}, the dumped one had {:?} \
                 (cairn changes only cgroups it creates: remove it or set it back)",
                s.file,
                norm(&s.file, &t),
                norm(&s.file, &s.value)
            )));
        }
    }
    Ok(())
}

// ------------------------------------------------------------- cgroup v1

/// The v1 lines ("ID:CONTROLLERS:PATH", ID not 0) of a cgroup file, as
/// (controllers, path).
fn v1_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let (id, ctl, path) = (it.next()?, it.next()?, it.next()?);
            (id != "0" && !ctl.is_empty()).then(|| (ctl.to_string(), path.to_string()))
        })
        .collect()
}

/// Where the v1 hierarchy of `controllers` ("cpu,cpuacct",
/// "name=systemd") is mounted from its root in `mountinfo`.
fn v1_mount(mountinfo: &str, controllers: &str) -> Option<PathBuf> {
    let want: HashSet<&str> = controllers.split(',').collect();
    mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let mut post = post.split_whitespace();
        if post.next()? != "cgroup" {
            return None;
        }
        let opts = post.nth(1)?;
        let f: Vec<&str> = pre.split_whitespace().collect();
        let (root, mnt) = (*f.get(3)?, *f.get(4)?);
        let has_all = want.iter().all(|w| opts.split(',').any(|o| o == *w));
        // A hierarchy's mount lists its controllers among its options.
        (root == "/" && has_all && !mnt.contains('\\')).then(|| PathBuf::from(mnt))
    })
}

/// Dump-time check of process `pid`'s v1 membership: each thread in the
/// same v1 cgroups; a v1 cgroup other than cairn's own only where the
/// hierarchy is mounted here. Before the tree is touched.
pub fn precheck(pid: i32) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return Ok(());
    };
    let lines = v1_lines(&text);
    if lines.is_empty() {
        return Ok(());
    }
    for tid in crate::procfs::list_tasks(pid).unwrap_or_default() {
        let Ok(t) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/cgroup")) else {
            continue;
        };
        if let Some((c, p)) = v1_lines(&t).into_iter().find(|l| !lines.contains(l)) {
            return Err(Error::unsupported(
                tid,
                format!(
                    "in v1 cgroup {p} of hierarchy {c}, unlike its process: per-thread v1 \
                     cgroups are not restored"
                ),
            ));
        }
    }
    let own = v1_lines(&std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for (c, p) in &lines {
        if own.iter().any(|(oc, op)| oc == c && op == p) {
            continue;
        }
        check_path(p).map_err(|why| {
            Error::unsupported(pid, format!("v1 cgroup {p} of hierarchy {c}: {why}"))
        })?;
        if v1_mount(&mountinfo, c).is_none() {
            return Err(Error::unsupported(
                pid,
                format!(
                    "in v1 cgroup {p} of hierarchy {c}, which is not mounted (from its root) \
                     where cairn runs: its membership cannot be restored"
                ),
            ));
        }
    }
    Ok(())
}

/// The v1 membership of process `pid` to save.
pub fn dump_v1(pid: i32) -> Result<Vec<CgroupV1>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|e| Error::sys(pid, "read /proc/PID/cgroup", e))?;
    Ok(v1_lines(&text)
        .into_iter()
        .map(|(c, p)| {
            let mut v = CgroupV1::new();
            (v.controllers, v.path) = (c, p);
            v
        })
        .collect())
}

/// Moves the new process `pid` into its saved v1 cgroups where it is not
/// there already; the cgroups must exist.
pub fn restore_v1(pid: i32, saved: &[CgroupV1]) -> Result<()> {
    if saved.is_empty() {
        return Ok(());
    }
    let now = v1_lines(
        &std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .map_err(|e| Error::sys(pid, "read /proc/PID/cgroup", e))?,
    );
    // Read once something is to move (not for a vessel already in them).
    let mut mountinfo: Option<String> = None;
    for v in saved {
        if now.iter().any(|(c, p)| *c == v.controllers && *p == v.path) {
            continue;
        }
        let mountinfo = match &mut mountinfo {
            Some(m) => &*m,
            None => &*mountinfo.insert(
                std::fs::read_to_string("/proc/self/mountinfo")
                    .map_err(|e| Error::sys(pid, "read /proc/self/mountinfo", e))?,
            ),
        };
        let what = format!("v1 cgroup {} of hierarchy {}", v.path, v.controllers);
        check_path(&v.path).map_err(|why| Error::Restore(format!("pid {pid}: {what}: {why}")))?;
        let mnt = v1_mount(mountinfo, &v.controllers).ok_or_else(|| {
            Error::Restore(format!(
                "pid {pid}: was in {what}, but that hierarchy is not mounted here"
            ))
        })?;
        let dir_flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY;
        let mut dir: OwnedFd = rustix::fs::open(&mnt, dir_flags, Mode::empty())
            .map_err(|e| Error::sys(pid, format!("open {}", mnt.display()), e))?;
        for c in v.path.split('/').filter(|c| !c.is_empty()) {
            dir = rustix::fs::openat(&dir, c, dir_flags, Mode::empty()).map_err(|e| {
                Error::sys(pid, format!("open {what} (v1 cgroups are not created)"), e)
            })?;
        }
        let procs = rustix::fs::openat(
            &dir,
            "cgroup.procs",
            OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::sys(pid, format!("open {what}/cgroup.procs"), e))?;
        rustix::io::write(&procs, pid.to_string().as_bytes())
            .map_err(|e| Error::sys(pid, format!("move into {what}"), e))?;
    }
    if mountinfo.is_none() {
        // Nothing moved: each is where `now` said.
        return Ok(());
    }
    let after = v1_lines(
        &std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .map_err(|e| Error::sys(pid, "read /proc/PID/cgroup", e))?,
    );
    for v in saved {
        if !after
            .iter()
            .any(|(c, p)| *c == v.controllers && *p == v.path)
        {
            return Err(Error::Restore(format!(
                "pid {pid}: not in v1 cgroup {} of hierarchy {} after the move",
                v.path, v.controllers
            )));
        }
    }
    Ok(())
}

/// The v1 membership and the owned v2 cgroups of process `pid`, whose
/// v2 path is already in `core`; `tree` is every process of the tree.
pub fn dump_core(pid: i32, tree: &HashSet<i32>, core: &mut TaskCore) -> Result<()> {
    core.cgroup_v1 = dump_v1(pid)?;
    let path = core
        .attrs
        .as_ref()
        .map(|a| a.cgroup.clone())
        .unwrap_or_default();
    core.cgroup_dirs = dump_dirs(pid, &path, tree)?;
    Ok(())
}

/// Image check of the v1 entries and owned cgroups of a core.
pub fn validate_core(c: &TaskCore, path: &Path) -> Result<()> {
    let obj = format!("pid {}", c.pid);
    for v in &c.cgroup_v1 {
        check_path(&v.path).map_err(|why| bad(path, &obj, "cgroup_v1.path", why))?;
        if v.controllers.is_empty() || v.controllers.contains(['/', ':', '\n']) {
            return Err(bad(
                path,
                &obj,
                "cgroup_v1.controllers",
                format!("{:?}", v.controllers),
            ));
        }
    }
    for d in &c.cgroup_dirs {
        check_path(&d.path).map_err(|why| bad(path, &obj, "cgroup_dirs.path", why))?;
        for s in &d.settings {
            if !(SETTINGS.contains(&s.file.as_str()) || is_hugetlb_limit(&s.file))
                || s.file.contains('/')
            {
                return Err(bad(
                    path,
                    &obj,
                    "cgroup_dirs.settings.file",
                    format!("{:?}", s.file),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(check_path("/").is_ok());
        assert!(check_path("/a/b.slice").is_ok());
        for p in ["a", "/a/../b", "/a//b", "/./a", "/a/"] {
            assert!(check_path(p).is_err(), "{p}");
        }
    }

    #[test]
    fn v1_lines_and_mounts() {
        let text = "9:name=systemd:/\n4:memory:/a/b\n2:cpu,cpuacct:/\n0::/x\n";
        assert_eq!(
            v1_lines(text),
            vec![
                ("name=systemd".to_string(), "/".to_string()),
                ("memory".to_string(), "/a/b".to_string()),
                ("cpu,cpuacct".to_string(), "/".to_string()),
            ]
        );
        let mi = "30 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                  31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                  32 25 0:28 /sub /mnt/sd rw - cgroup cgroup rw,xattr,name=systemd\n\
                  33 25 0:29 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        assert_eq!(v1_mount(mi, "memory"), Some("/sys/fs/cgroup/memory".into()));
        assert_eq!(
            v1_mount(mi, "cpu,cpuacct"),
            Some("/sys/fs/cgroup/cpu,cpuacct".into())
        );
        // Mounted from a subdirectory: paths would not match.
        assert_eq!(v1_mount(mi, "name=systemd"), None);
        assert_eq!(v1_mount(mi, "pids"), None);
    }

    #[test]
    fn settings_compare_as_the_kernel_shows_them() {
        assert_eq!(norm("cgroup.subtree_control", "memory cpu\n"), "cpu memory");
        assert_eq!(
            norm("io.max", "8:0 rbps=1\n8:16 wbps=2\n"),
            "8:0 rbps=1 8:16 wbps=2"
        );
        assert!(is_hugetlb_limit("hugetlb.2MB.max") && is_hugetlb_limit("hugetlb.2MB.rsvd.max"));
        assert!(!is_hugetlb_limit("hugetlb.2MB.current") && !is_hugetlb_limit("cpu.max"));
    }
}
