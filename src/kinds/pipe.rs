//! Pipes: both ends share one pipe, found by inode. Dump records each end
//! and, at the end, the bytes queued in every pipe and FIFO (read with
//! tee, so nothing is consumed). Restore creates the pipe once (pipe2 in
//! the first vessel that needs it, refilled with the saved bytes); every
//! other end, in any process, is fetched from there. A pipe with one end
//! in the tree and the other open outside it is refused at dump (the new
//! pipe could not be connected to that end).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::image::proto::{file_desc, Files, PipeData, PipeFile};
use crate::image::validate::{bad as invalid, check_open_flags, count, MAX_ITEMS, PAGE};
use crate::kinds::fd::{not_mine, DumpCx, FdKind, FdRef, RestoreCx};
use crate::kinds::files::FilesIndex;
use crate::remote::Calls;
use crate::sys::task;

/// Largest pipe buffer the kernel allows (pipe-max-size cap).
const PIPE_MAX: u64 = 1 << 31;

/// The pipes and FIFOs of a tree being dumped.
#[derive(Default)]
pub struct PipeDump {
    /// (pipe or FIFO inode, is a FIFO) -> (pid, fd) of one end, to read
    /// the queued bytes.
    seen: BTreeMap<(u64, bool), (i32, i32)>,
    /// The ends of the pipes (not FIFOs) seen.
    ends: Ends,
}

/// Pipe inode -> (pid, fd) of a read end and of a write end in the tree.
type Ends = BTreeMap<u64, (Option<(i32, i32)>, Option<(i32, i32)>)>;

/// Notes an end of pipe `ino` with access mode `acc` at fd `fd` of `pid`.
fn note_end(ends: &mut Ends, ino: u64, acc: i32, pid: i32, fd: i32) {
    let e = ends.entry(ino).or_default();
    if acc != libc::O_WRONLY {
        e.0.get_or_insert((pid, fd));
    }
    if acc != libc::O_RDONLY {
        e.1.get_or_insert((pid, fd));
    }
}

/// Refuses a pipe with one end in the tree whose other end is still open
/// outside it (a shell pipeline's other command, a parent that kept it):
/// the restore can only make a new pipe, whose other end would be closed
/// (EOF for the reader, EPIPE for the writer). A read end without writers
/// polls POLLHUP, a write end without readers POLLERR (asked through a
/// copy of the tree's description, so no end is opened or counted).
fn refuse_outside_ends(ends: &Ends) -> Result<()> {
    for (&ino, &(r, w)) in ends {
        let (end, other, bit, (pid, fd)) = match (r, w) {
            (Some(r), None) => ("read", "write", libc::POLLHUP, r),
            (None, Some(w)) => ("write", "read", libc::POLLERR, w),
            _ => continue,
        };
        let copy = crate::sys::sock::pidfd_getfd(pid, fd)
            .map_err(|e| Error::sys(pid, format!("pidfd_getfd of fd {fd} (pipe:[{ino}])"), e))?;
        let ev = crate::sys::poll::poll_now(&copy, 0)
            .map_err(|e| Error::sys(pid, format!("fd {fd} (pipe:[{ino}]): poll"), e))?;
        if ev & bit == 0 {
            return Err(Error::unsupported(
                pid,
                format!(
                    "fd {fd} is the {end} end of pipe:[{ino}], whose {other} end is open \
                     outside the dumped tree (in another process, or only in flight in a unix \
                     socket's queue): the restored pipe could not be connected to it; if that \
                     end stays open, dump with --external pipe:[{ino}] and restore with \
                     --inherit-fd fd[N]:pipe:[{ino}]"
                ),
            ));
        }
    }
    Ok(())
}

/// Before freezing: pipes with an end outside the tree `pids` are refused
/// (`refuse_outside_ends`); checked again on the frozen tree. The pipes
/// named with --external (`external`, inodes) are not.
pub fn precheck_tree(pids: &[i32], external: &std::collections::HashSet<u64>) -> Result<()> {
    let mut ends = Ends::new();
    for &pid in pids {
        let Ok(fds) = crate::procfs::read_fds(pid) else {
            continue;
        };
        for (fd, target) in fds {
            let Some(("pipe", ino)) = crate::procfs::parse_anon_link(&target) else {
                continue;
            };
            if external.contains(&ino) {
                continue;
            }
            let Ok(copy) = crate::sys::sock::pidfd_getfd(pid, fd) else {
                continue;
            };
            let fl = crate::sys::sock::get_fl(&copy)
                .map_err(|e| Error::sys(pid, format!("fd {fd} (pipe:[{ino}]): F_GETFL"), e))?;
            note_end(&mut ends, ino, fl & libc::O_ACCMODE, pid, fd);
        }
    }
    refuse_outside_ends(&ends)
}

impl PipeDump {
    /// Records an end of pipe (or FIFO) `ino`, at fd `fd` of `pid`.
    pub fn note(&mut self, ino: u64, fifo: bool, pid: i32, fd: i32) {
        self.seen.entry((ino, fifo)).or_insert((pid, fd));
    }

    /// Saves the bytes queued in every pipe seen, without consuming them,
    /// once pipes with an end outside the tree are refused.
    pub fn dump_data(&self, files: &mut Files) -> Result<()> {
        refuse_outside_ends(&self.ends)?;
        for (&(ino, fifo), &(pid, fd)) in &self.seen {
            let link = format!("/proc/{pid}/fd/{fd}");
            let src = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&link)
                .at(&link)?;
            let cap = task::pipe_size(&src)
                .map_err(|e| Error::sys(pid, format!("fd {fd}: F_GETPIPE_SZ"), e))?;
            let queued = task::pipe_queued(&src)
                .map_err(|e| Error::sys(pid, format!("fd {fd}: FIONREAD"), e))?;
            let mut data = Vec::new();
            if queued > 0 {
                let (r, w) = task::pipe().map_err(|e| Error::sys(pid, "pipe", e))?;
                task::set_pipe_size(&w, cap.max(queued))
                    .map_err(|e| Error::sys(pid, "F_SETPIPE_SZ", e))?;
                let n = task::tee(&src, &w, queued)
                    .map_err(|e| Error::sys(pid, format!("fd {fd}: tee"), e))?;
                drop(w);
                data.resize(n, 0);
                let mut rf = std::fs::File::from(r);
                rf.read_exact(&mut data)
                    .map_err(|e| Error::sys(pid, format!("fd {fd}: read pipe copy"), e))?;
            }
            let mut pd = PipeData::new();
            pd.pipe_ino = ino;
            pd.data = data;
            pd.capacity = cap as u32;
            pd.fifo = fifo;
            files.pipes.push(pd);
        }
        Ok(())
    }
}

/// Pipes created in some vessel during a restore: pipe inode -> (vessel
/// pid, read end, write end), both kept open until every fd table is done.
#[derive(Default)]
pub struct PipeRestore {
    made: HashMap<u64, (i32, u64, u64)>,
}

/// The saved bytes of pipe (or FIFO, `fifo`) `ino`.
pub(crate) fn saved<'a>(idx: &FilesIndex<'a>, ino: u64, fifo: bool) -> Option<&'a PipeData> {
    idx.files
        .pipes
        .iter()
        .find(|p| p.pipe_ino == ino && (p.fifo || !fifo))
}

/// Puts the saved bytes back through fd `fd` of `pid` (opened here, from
/// cairn, non-blocking: more bytes than the pipe holds, in a damaged
/// image, fail instead of blocking the restore for good).
pub(crate) fn refill(pid: i32, fd: u64, data: &[u8], what: &str) -> Result<()> {
    let link = format!("/proc/{pid}/fd/{fd}");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&link)
        .at(&link)?;
    f.write_all(data).map_err(|e| Error::io(what, e))
}

/// pipe2 in the vessel, refilled with the saved bytes. Returns (read, write).
fn create_pipe(calls: &mut dyn Calls, ino: u64, idx: &FilesIndex) -> Result<(u64, u64)> {
    let pid = calls.pid();
    let (r, w) = calls.pipe2(libc::O_CLOEXEC)?;
    if let Some(pd) = saved(idx, ino, false) {
        if pd.capacity > 0 {
            // Best effort: a smaller pipe still holds the saved bytes,
            // which are checked when written below.
            let _ = calls.set_pipe_size(w, pd.capacity as u64);
        }
        if !pd.data.is_empty() {
            refill(pid, w, &pd.data, &format!("/proc/{pid}/fd/{w}"))?;
        }
    }
    Ok((r, w))
}

pub struct Pipe;

impl FdKind for Pipe {
    fn name(&self) -> &'static str {
        "pipe"
    }

    fn precheck(&self, f: &FdRef) -> Result<bool> {
        Ok(matches!(f.anon(), Some(("pipe", _))))
    }

    fn describe(&self, f: &FdRef, cx: &mut DumpCx) -> Result<Option<file_desc::Kind>> {
        let Some(("pipe", ino)) = f.anon() else {
            return Ok(None);
        };
        cx.pipes.note(ino, false, f.pid, f.fd);
        let mut p = PipeFile::new();
        p.pipe_ino = ino;
        p.flags = f.flags();
        let acc = p.flags as i32 & libc::O_ACCMODE;
        note_end(&mut cx.pipes.ends, ino, acc, f.pid, f.fd);
        Ok(Some(file_desc::Kind::Pipe(p)))
    }

    fn validate(&self, k: &file_desc::Kind, path: &Path, obj: &str) -> Result<()> {
        let file_desc::Kind::Pipe(p) = k else {
            return Err(not_mine(self));
        };
        check_open_flags(path, obj, p.flags)
    }

    /// The saved bytes of every pipe and FIFO.
    fn validate_files(&self, f: &Files, path: &Path) -> Result<()> {
        count(path, "files", "pipes", f.pipes.len(), MAX_ITEMS)?;
        let mut inos = std::collections::HashSet::new();
        for p in &f.pipes {
            let obj = format!("pipe buffer of inode {}", p.pipe_ino);
            if !inos.insert(p.pipe_ino) {
                return Err(invalid(path, &obj, "pipe_ino", "repeated"));
            }
            let holds = if p.capacity > 0 {
                p.capacity as u64
            } else {
                PAGE * 16
            };
            if p.capacity as u64 > PIPE_MAX || p.data.len() as u64 > holds {
                return Err(invalid(
                    path,
                    &obj,
                    "data",
                    format!(
                        "{} bytes in a pipe of capacity {}",
                        p.data.len(),
                        p.capacity
                    ),
                ));
            }
        }
        Ok(())
    }

    fn open(&self, k: &file_desc::Kind, calls: &mut dyn Calls, cx: &mut RestoreCx) -> Result<u64> {
        let file_desc::Kind::Pipe(p) = k else {
            return Err(not_mine(self));
        };
        let pid = calls.pid();
        let (owner, r, w) = match cx.shared.pipes.made.get(&p.pipe_ino) {
            Some(&e) => e,
            None => {
                let (r, w) = create_pipe(calls, p.pipe_ino, cx.idx)?;
                let r = calls.dup_above(r, cx.high)?;
                let w = calls.dup_above(w, cx.high)?;
                cx.shared.pipes.made.insert(p.pipe_ino, (pid, r, w));
                cx.shared.keepers.push((pid, r));
                cx.shared.keepers.push((pid, w));
                (pid, r, w)
            }
        };
        let end = if p.flags as i32 & libc::O_ACCMODE == libc::O_WRONLY {
            w
        } else {
            r
        };
        let fd = calls.fetch_fd(owner, end)?;
        calls.set_fl(fd, (p.flags & libc::O_NONBLOCK as u32) as u64)?;
        Ok(fd)
    }
}
