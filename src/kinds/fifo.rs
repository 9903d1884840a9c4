//! FIFOs: reopened by path with their saved flags. The first open of a
//! FIFO in a restore also opens it O_RDWR (kept until every fd table is
//! done), so that no open blocks or fails for want of the other side, and
//! puts the queued bytes back through that fd. A FIFO that vanished since
//! the dump is created again ([`recreate_fifos`]).

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::error::{Error, Result};
use crate::image::proto::{file_desc, FifoFile, Files};
use crate::image::validate::{check_open_flags, check_path};
use crate::kinds::fd::{not_mine, DumpCx, FdKind, FdRef, RestoreCx};
use crate::kinds::files::file_stat;
use crate::kinds::pipe;
use crate::remote::Calls;
use crate::sys::task;

/// FIFOs opened during a restore: inode (at dump) -> (vessel pid, an
/// O_RDWR fd on it), which keeps the FIFO open for both sides while the
/// fds are opened.
#[derive(Default)]
pub struct FifoRestore {
    open: HashMap<u64, (i32, u64)>,
}

/// Whether fd `f` is on a FIFO reached by path (deleted or not).
fn is_fifo(f: &FdRef) -> bool {
    f.target.starts_with('/') && f.metadata().is_ok_and(|m| m.file_type().is_fifo())
}

pub struct Fifo;

impl FdKind for Fifo {
    fn name(&self) -> &'static str {
        "FIFO"
    }

    fn precheck(&self, f: &FdRef) -> Result<bool> {
        Ok(is_fifo(f))
    }

    fn describe(&self, f: &FdRef, cx: &mut DumpCx) -> Result<Option<file_desc::Kind>> {
        if !f.target.starts_with('/') || !f.metadata()?.file_type().is_fifo() {
            return Ok(None);
        }
        let md = f.metadata()?;
        let ghost = crate::kinds::contents::ghost_path(f.target, md);
        cx.pipes.note(md.ino(), true, f.pid, f.fd);
        let mut r = FifoFile::new();
        r.deleted = ghost.is_some();
        r.path = ghost.unwrap_or_else(|| f.target.to_string());
        r.flags = f.flags();
        r.stat = Some(file_stat(md)).into();
        Ok(Some(file_desc::Kind::Fifo(r)))
    }

    fn validate(&self, k: &file_desc::Kind, path: &Path, obj: &str) -> Result<()> {
        let file_desc::Kind::Fifo(r) = k else {
            return Err(not_mine(self));
        };
        check_path(path, obj, "path", &r.path, false)?;
        check_open_flags(path, obj, r.flags)
    }

    fn open(&self, k: &file_desc::Kind, calls: &mut dyn Calls, cx: &mut RestoreCx) -> Result<u64> {
        let file_desc::Kind::Fifo(f) = k else {
            return Err(not_mine(self));
        };
        let pid = calls.pid();
        let ino = f.stat.as_ref().map_or(0, |s| s.ino);
        let path = cx.idx.redirect.get(&cx.id).unwrap_or(&f.path).clone();
        if let std::collections::hash_map::Entry::Vacant(slot) = cx.shared.fifos.open.entry(ino) {
            let k = calls.open(
                &path,
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY,
            )?;
            let hk = calls.dup_above(k, cx.high)?;
            slot.insert((pid, hk));
            cx.shared.keepers.push((pid, hk));
            if let Some(pd) = pipe::saved(cx.idx, ino, true) {
                if pd.capacity > 0 {
                    let _ = calls.set_pipe_size(hk, pd.capacity as u64);
                }
                if !pd.data.is_empty() {
                    pipe::refill(pid, hk, &pd.data, &f.path)?;
                }
            }
        }
        let fd = calls.open(
            &path,
            (f.flags as i32 & libc::O_ACCMODE)
                | libc::O_NONBLOCK
                | libc::O_CLOEXEC
                | libc::O_NOCTTY,
        )?;
        calls.set_fl(
            fd,
            (f.flags & (libc::O_NONBLOCK | libc::O_APPEND) as u32) as u64,
        )?;
        Ok(fd)
    }
}

/// Recreates the FIFOs of the images that vanished since the dump
/// (mkfifo with the saved mode). Call once nothing can
/// refuse the restore any more.
pub fn recreate_fifos(files: &Files) -> Result<()> {
    for d in &files.descs {
        let Some(file_desc::Kind::Fifo(f)) = &d.kind else {
            continue;
        };
        if f.deleted || std::fs::symlink_metadata(&f.path).is_ok() {
            continue;
        }
        let st = f.stat.as_ref();
        let mode = st.map_or(0o600, |s| s.mode & 0o7777);
        task::mkfifo(&f.path, mode).map_err(|e| Error::io(&f.path, e))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f.path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(&f.path, e))?;
        crate::warn!("{}: FIFO vanished since the dump; recreated", f.path);
    }
    Ok(())
}

/// Makes the deleted FIFOs of `files` again for the restore: at their old
/// path if that is free, else under a hidden name beside it (made with
/// mknodat in their directory, opened without following any link; never
/// over an existing name). Their descriptions are opened from there, and
/// `ghosts` unlinks them once every fd table is in place. Call once
/// nothing can refuse the restore any more.
pub fn recreate_deleted(files: &Files, ghosts: &mut crate::kinds::contents::Ghosts) -> Result<()> {
    use rustix::fs::FileType;
    // One FIFO per inode: descriptions of one deleted FIFO share it.
    let mut made: HashMap<u64, String> = HashMap::new();
    for d in &files.descs {
        let Some(file_desc::Kind::Fifo(f)) = &d.kind else {
            continue;
        };
        if !f.deleted {
            continue;
        }
        let ino = f.stat.as_ref().map_or(0, |s| s.ino);
        if let Some(p) = made.get(&ino) {
            ghosts.redirect.insert(d.id, p.clone());
            continue;
        }
        let mode = f.stat.as_ref().map_or(0o600, |s| s.mode & 0o7777);
        let p = ghosts.make_node(d.id, &f.path, "FIFO", FileType::Fifo, 0, mode)?;
        let s = p.to_string_lossy().into_owned();
        made.insert(ino, s);
    }
    Ok(())
}
