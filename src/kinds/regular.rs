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
        let open_flags = (r.flags as i32) & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC);
        let path = cx.idx.redirect.get(&cx.id).unwrap_or(&r.path);
        let fd = calls.open(path, open_flags | libc::O_CLOEXEC | libc::O_NOCTTY)?;
        let is_reg = r
            .stat
            .as_ref()
            .is_some_and(|s| s.mode & libc::S_IFMT == libc::S_IFREG);
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
