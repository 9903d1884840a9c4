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
//! Controller settings (cpu.max, memory.max ...) are not restored.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use crate::error::{Error, Result};
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

/// Puts the new process `pid` into cgroup `cgroup` (created when
/// missing) unless it is there already.
pub fn restore(pid: i32, cgroup: &str) -> Result<()> {
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
    for c in cgroup
        .trim_start_matches('/')
        .split('/')
        .filter(|c| !c.is_empty())
    {
        let next = match rustix::fs::openat(&dir, c, dir_flags, Mode::empty()) {
            Ok(d) => d,
            Err(rustix::io::Errno::NOENT) => {
                match rustix::fs::mkdirat(&dir, c, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(io(format!("create cgroup {cgroup} ({c})"))(e.into())),
                }
                crate::info!("pid {pid}: created cgroup {cgroup} ({c})");
                rustix::fs::openat(&dir, c, dir_flags, Mode::empty())
                    .map_err(|e| io(format!("open cgroup {cgroup} ({c})"))(e.into()))?
            }
            Err(e) => return Err(io(format!("open cgroup {cgroup} ({c})"))(e.into())),
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
}
