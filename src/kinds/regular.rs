//! Files reopened by path: regular files (with their offset; a deleted
//! one is saved with its contents by `kinds::contents`), directories and
//! the plain character devices that hold no state (null, zero, full,
//! random, urandom). Also the paths of cwd and root ([`FsPathKind`]),
//! which are descriptions but never fds.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::error::{Error, Result};
use crate::image::proto::{file_desc, RegFile};
use crate::image::validate::{bad as invalid, check_open_flags, check_path};
use crate::kinds::fd::{not_mine, DumpCx, FdKind, FdRef, RestoreCx};
use crate::kinds::files::file_stat;
use crate::remote::Calls;

/// Character devices that are reopened by path: they hold no state of
/// their own (null, zero, full, random, urandom). Terminals are
/// kinds::tty's.
fn plain_device(rdev: u64) -> bool {
    libc::major(rdev) == 1 && [3, 5, 7, 8, 9].contains(&libc::minor(rdev))
}

/// Refuses file types cairn cannot reopen: block devices, sockets bound
/// in the file system reached by path, and character devices other than
/// the plain ones and terminals.
fn check_file_type(pid: i32, fd: i32, target: &str, md: &std::fs::Metadata) -> Result<()> {
    let ft = md.file_type();
    if ft.is_file() || ft.is_dir() || ft.is_fifo() {
        return Ok(());
    }
    let what = if ft.is_char_device() {
        if plain_device(md.rdev()) || crate::kinds::tty::is_tty(md.rdev()) {
            return Ok(());
        }
        format!(
            "character device {}:{}",
            libc::major(md.rdev()),
            libc::minor(md.rdev())
        )
    } else if ft.is_block_device() {
        format!(
            "block device {}:{}",
            libc::major(md.rdev()),
            libc::minor(md.rdev())
        )
    } else {
        format!("{ft:?}")
    };
    Err(Error::unsupported(
        pid,
        format!("fd {fd} ({target}) is a {what}, which cairn cannot checkpoint"),
    ))
}

/// For an fd on a deleted node of a plain device (see [`plain_device`])
/// or of a block device (no state per open but the offset, which is
/// restored): the path it had and its device number. A deleted node of
/// another character device is refused: their state is per open
/// (/dev/net/tun's interface, /dev/kvm's VM, /dev/kmsg's read position,
/// a watchdog's ...) and a new open does not bring it back; terminals are
/// kinds::tty's.
fn deleted_plain_device(f: &FdRef) -> Option<(String, u64)> {
    let md = f.metadata().ok()?;
    let ft = md.file_type();
    let ok = (ft.is_char_device() && plain_device(md.rdev())) || ft.is_block_device();
    if !ok {
        return None;
    }
    let path = crate::kinds::contents::ghost_path(f.target, md)?;
    Some((path, md.rdev()))
}

/// The refusal of a deleted node of a character device that is neither
/// plain nor a terminal (see [`deleted_plain_device`]).
fn deleted_stateful_device(f: &FdRef) -> Option<Error> {
    let md = f.metadata().ok()?;
    if !md.file_type().is_char_device() || crate::kinds::tty::is_tty(md.rdev()) {
        return None;
    }
    let path = crate::kinds::contents::ghost_path(f.target, md)?;
    Some(Error::unsupported(
        f.pid,
        format!(
            "fd {} is the deleted node {path} of character device {}:{}: cairn reopens only \
             devices without state of their own per open (null, zero, full, random, urandom, \
             block devices); a new open of this one would not bring its state back",
            f.fd,
            libc::major(md.rdev()),
            libc::minor(md.rdev())
        ),
    ))
}

/// Makes the deleted device nodes of `files` again for the restore: at
/// their old path if free, else under a hidden name beside it (mknodat in
/// a directory opened without any symbolic link, never over an existing
/// name), with the saved mode; only plain devices (validated). Their
/// descriptions are opened from there, and `ghosts` unlinks them once
/// every fd table is in place.
pub fn recreate_deleted_nodes(
    files: &crate::image::proto::Files,
    ghosts: &mut crate::kinds::contents::Ghosts,
) -> Result<()> {
    use rustix::fs::FileType;
    for d in &files.descs {
        let Some(file_desc::Kind::Reg(r)) = &d.kind else {
            continue;
        };
        if !r.deleted_node {
            continue;
        }
        let is_block = r
            .stat
            .as_ref()
            .is_some_and(|s| s.mode & libc::S_IFMT == libc::S_IFBLK);
        if !is_block && !plain_device(r.rdev) {
            return Err(Error::Restore(format!(
                "{}: device {}:{} is not one cairn recreates",
                r.path,
                libc::major(r.rdev),
                libc::minor(r.rdev)
            )));
        }
        let mode = r.stat.as_ref().map_or(0o600, |s| s.mode & 0o7777);
        let ty = if is_block {
            FileType::BlockDevice
        } else {
            FileType::CharacterDevice
        };
        let p = ghosts.make_node(d.id, &r.path, "device node", ty, r.rdev, mode)?;
        ghosts.set_owner(&p, r.uid, r.gid, mode)?;
    }
    Ok(())
}

/// Makes the removed directories that are cwds of the tree again, at
/// their paths, for the restore (`ghosts` removes them once every process
/// is in its cwd). Two removed directories at one path (different
/// inodes) cannot both come back.
pub fn recreate_removed_dirs(
    files: &crate::image::proto::Files,
    ghosts: &mut crate::kinds::contents::Ghosts,
) -> Result<()> {
    let mut seen: std::collections::HashMap<&str, u64> = Default::default();
    for d in &files.descs {
        let Some(file_desc::Kind::FsPath(p)) = &d.kind else {
            continue;
        };
        if !p.removed {
            continue;
        }
        if let Some(&ino) = seen.get(p.path.as_str()) {
            if ino != p.ino {
                return Err(Error::Restore(format!(
                    "two removed directories were cwds at {} (inodes {ino} and {}): one \
                     recreated directory cannot be both",
                    p.path, p.ino
                )));
            }
            continue;
        }
        seen.insert(&p.path, p.ino);
        ghosts.make_dir(&p.path, p.mode, p.uid, p.gid)?;
    }
    Ok(())
}

pub struct Regular;

impl FdKind for Regular {
    fn name(&self) -> &'static str {
        "file"
    }

    fn precheck(&self, f: &FdRef) -> Result<bool> {
        if !f.target.starts_with('/') {
            return Ok(false);
        }
        if f.target.ends_with(" (deleted)") {
            if deleted_plain_device(f).is_some() {
                return Ok(true);
            }
            if let Some(e) = deleted_stateful_device(f) {
                return Err(e);
            }
            crate::kinds::contents::precheck_ghost(f.pid, f.fd, f.target)?;
        } else if let Ok(md) = f.metadata() {
            check_file_type(f.pid, f.fd, f.target, md)?;
        }
        Ok(true)
    }

    fn describe(&self, f: &FdRef, _cx: &mut DumpCx) -> Result<Option<file_desc::Kind>> {
        if !f.target.starts_with('/') {
            return Ok(None);
        }
        if let Some((path, rdev)) = deleted_plain_device(f) {
            let md = f.metadata()?;
            let mut r = RegFile::new();
            r.deleted_node = true;
            r.rdev = rdev;
            r.path = path;
            r.flags = f.flags();
            r.pos = f.pos();
            r.uid = md.uid();
            r.gid = md.gid();
            r.stat = Some(file_stat(md)).into();
            return Ok(Some(file_desc::Kind::Reg(r)));
        }
        let ghost = f.ghost()?;
        let md = f.metadata()?;
        check_file_type(f.pid, f.fd, f.target, md)?;
        let mut r = RegFile::new();
        r.deleted = ghost.is_some();
        r.path = ghost.unwrap_or_else(|| f.target.to_string());
        r.flags = f.flags();
        r.pos = f.pos();
        r.stat = Some(file_stat(md)).into();
        Ok(Some(file_desc::Kind::Reg(r)))
    }

    fn validate(&self, k: &file_desc::Kind, path: &Path, obj: &str) -> Result<()> {
        let file_desc::Kind::Reg(r) = k else {
            return Err(not_mine(self));
        };
        check_path(path, obj, "path", &r.path, false)?;
        check_open_flags(path, obj, r.flags)?;
        if r.pos > i64::MAX as u64 {
            return Err(invalid(path, obj, "pos", r.pos));
        }
        Ok(())
    }

    fn open_flags(&self) -> u32 {
        crate::kinds::fd::REOPEN_FLAGS
    }

    fn open(&self, k: &file_desc::Kind, calls: &mut dyn Calls, cx: &mut RestoreCx) -> Result<u64> {
        let file_desc::Kind::Reg(r) = k else {
            return Err(not_mine(self));
        };
        // O_NOCTTY: a restored session leader must not pick up a
        // controlling terminal just by reopening a tty.
        // O_DIRECT comes with the other SETFL_FLAGS by F_SETFL after the
        // open, as it may have come: overlayfs before 6.0 lets F_SETFL set
        // it on a file whose upper layer (tmpfs) refuses it at open.
        let open_flags =
            (r.flags as i32) & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_DIRECT);
        let path = cx.idx.redirect.get(&cx.id).unwrap_or(&r.path);
        let fd = calls.open(path, open_flags | libc::O_CLOEXEC | libc::O_NOCTTY)?;
        let is_reg = r
            .stat
            .as_ref()
            .is_some_and(|s| matches!(s.mode & libc::S_IFMT, libc::S_IFREG | libc::S_IFBLK));
        if is_reg && r.pos > 0 {
            calls.lseek(fd, r.pos, libc::SEEK_SET, path)?;
        }
        Ok(fd)
    }
}

/// The cwd or root of a process: a path, never an fd.
pub struct FsPathKind;

impl FdKind for FsPathKind {
    fn name(&self) -> &'static str {
        "cwd or root"
    }

    fn precheck(&self, _f: &FdRef) -> Result<bool> {
        Ok(false)
    }

    fn describe(&self, _f: &FdRef, _cx: &mut DumpCx) -> Result<Option<file_desc::Kind>> {
        Ok(None)
    }

    fn validate(&self, k: &file_desc::Kind, path: &Path, obj: &str) -> Result<()> {
        let file_desc::Kind::FsPath(p) = k else {
            return Err(not_mine(self));
        };
        check_path(path, obj, "path", &p.path, false)
    }

    fn open(&self, _k: &file_desc::Kind, calls: &mut dyn Calls, cx: &mut RestoreCx) -> Result<u64> {
        Err(cx.cannot(calls.pid()))
    }
}

/// The pid of the process a path under /proc belongs to
/// (`/proc/PID/...`), if it names one.
pub fn proc_pid_of(target: &str) -> Option<i32> {
    let rest = target.strip_prefix("/proc/")?;
    let num = rest.split('/').next()?;
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    num.parse().ok()
}

/// Whether the fd `fd` of `pid` is on the proc file system.
fn on_procfs(pid: i32, fd: i32) -> bool {
    std::fs::File::open(format!("/proc/{pid}/fd/{fd}"))
        .ok()
        .and_then(|f| nix::sys::statfs::fstatfs(&f).ok())
        .is_some_and(|s| s.filesystem_type().0 as u64 == 0x9fa0)
}

/// Whether a cwd (`what`) in the removed directory `gone` can come back:
/// the restore makes it again at its path (mkdir), enters it and removes
/// it, so that getcwd() reads "PATH (deleted)" as before. Its parent must
/// exist (a directory removed with its parent, or nested in a removed
/// one, would come back under another path). A root in a removed
/// directory is refused: cairn recreates only removed cwds.
fn removed_dir_ok(pid: i32, what: &str, gone: &str) -> Result<()> {
    if what != "cwd" {
        return Err(Error::unsupported(
            pid,
            format!(
                "its root is the directory {gone}, which was removed: cairn recreates a \
                 removed cwd, not a removed root"
            ),
        ));
    }
    let parent = Path::new(gone)
        .parent()
        .filter(|p| !p.as_os_str().is_empty());
    let parent_ok = parent.is_some_and(|p| {
        crate::sys::safefs::is_dir_nofollow(p).unwrap_or(false)
            && std::fs::canonicalize(p).is_ok_and(|c| c == p)
    });
    if !parent_ok {
        return Err(Error::unsupported(
            pid,
            format!(
                "its cwd is the directory {gone}, which was removed together with its parent \
                 directory (or one above): cairn recreates a removed directory only in its \
                 parent, else getcwd() would read another path"
            ),
        ));
    }
    Ok(())
}

/// Before a dump touches the tree `pids`, what the restore could not put
/// back as it was:
/// - a cwd whose removed directory's parent is gone too, and a root in a
///   removed directory (see `removed_dir_ok`);
/// - an fd on a /proc file of a process outside the tree
///   (`/proc/PID/...`): after a restore, that path would name another
///   process, or none. Files of the tree's own processes come back with
///   their pids.
pub fn precheck_tree(pids: &[i32]) -> Result<()> {
    crate::kinds::anonfd::inotify::precheck_tree(pids)?;
    // Threads come back with their ids too.
    let mut ids: std::collections::HashSet<i32> = pids.iter().copied().collect();
    for &pid in pids {
        ids.extend(crate::procfs::list_tasks(pid).unwrap_or_default());
    }
    for &pid in pids {
        for what in ["cwd", "root"] {
            let link = format!("/proc/{pid}/{what}");
            let Ok(t) = crate::procfs::read_link(&link) else {
                continue;
            };
            let Some(gone) = t.strip_suffix(" (deleted)") else {
                continue;
            };
            let literal = std::fs::metadata(&link).ok().is_some_and(|held| {
                std::fs::symlink_metadata(&t)
                    .is_ok_and(|m| m.dev() == held.dev() && m.ino() == held.ino())
            });
            if !literal {
                removed_dir_ok(pid, what, gone)?;
            }
        }
        let Ok(fds) = crate::procfs::read_fds(pid) else {
            continue;
        };
        for (fd, target) in fds {
            let Some(other) = proc_pid_of(&target) else {
                continue;
            };
            if !ids.contains(&other) && on_procfs(pid, fd) {
                return Err(Error::unsupported(
                    pid,
                    format!(
                        "fd {fd} is {target}, a file of process {other}, which is outside the \
                         dumped tree: after a restore that path would name another process or \
                         none"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Leaves the /proc files of the tree's own processes and threads
/// (`/proc/PID/...`, `ids`) out of the identity check before the restore
/// (`FilesIndex::check_unchanged`): they cannot exist before the tree
/// does, and come back with their pids when the fds are opened. (Files of
/// other processes are refused at dump: [`precheck_tree`].)
pub fn mark_proc_checked(
    ids: &std::collections::HashSet<u32>,
    idx: &mut crate::kinds::files::FilesIndex,
) {
    let own: Vec<u32> = idx
        .files
        .descs
        .iter()
        .filter_map(|d| match &d.kind {
            Some(file_desc::Kind::Reg(r))
                if proc_pid_of(&r.path).is_some_and(|p| ids.contains(&(p as u32))) =>
            {
                Some(d.id)
            }
            _ => None,
        })
        .collect();
    idx.checked_elsewhere.extend(own);
}

#[cfg(test)]
mod tests {
    use super::proc_pid_of;

    #[test]
    fn proc_paths() {
        assert_eq!(proc_pid_of("/proc/12/status"), Some(12));
        assert_eq!(proc_pid_of("/proc/12"), Some(12));
        assert_eq!(proc_pid_of("/proc/12/task/13/stat"), Some(12));
        assert_eq!(proc_pid_of("/proc/self/status"), None);
        assert_eq!(proc_pid_of("/proc/meminfo"), None);
        assert_eq!(proc_pid_of("/procx/12"), None);
        assert_eq!(proc_pid_of("/proc/1a/x"), None);
    }
}
