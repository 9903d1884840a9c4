//! Validation of the task images (called through
//! [`crate::image::validate`], the index of every kind's checks): the
//! process tree, each process's core image with its threads, and the
//! core's references into files.img and the tree.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::path::Path;

use crate::error::{Error, Result};
use crate::image::proto::{file_desc, FileDesc, Pstree, TaskCore, TaskState, ThreadCore};
use crate::image::validate::{
    bad, check_desc_ref, check_name, check_pid, count, MAX_ITEMS, MAX_PROCS, MAX_THREADS, TASK_SIZE,
};

/// Largest XSAVE area (x86 with AMX tiles is ~11 KiB).
pub const MAX_XSAVE: usize = 1 << 16;
/// Smallest XSAVE area: legacy region plus header.
pub const MIN_XSAVE: usize = 576;
/// Linux signals are 1..=64.
pub(super) const SIG_MAX: u32 = 64;
/// `RLIM_NLIMITS`.
pub const RLIM_NLIMITS: u32 = 16;

pub(super) fn check_signo(
    path: &Path,
    obj: impl Display,
    field: &str,
    sig: u32,
    zero_ok: bool,
) -> Result<()> {
    if (sig == 0 && !zero_ok) || sig > SIG_MAX {
        return Err(bad(
            path,
            obj,
            field,
            format!("{sig}: not a signal (1..={SIG_MAX})"),
        ));
    }
    Ok(())
}

/// `pstree.img`, against the inventory's root pid.
pub fn pstree(t: &Pstree, root_pid: u32, path: &Path) -> Result<()> {
    if t.entries.is_empty() {
        return Err(Error::image(path, "no processes"));
    }
    count(path, "pstree", "entries", t.entries.len(), MAX_PROCS)?;
    let mut pids = HashSet::new();
    let mut tids = HashSet::new();
    for (i, e) in t.entries.iter().enumerate() {
        let obj = format!("process {i} (pid {})", e.pid);
        check_pid(path, &obj, "pid", e.pid, false)?;
        if !pids.insert(e.pid) {
            return Err(bad(path, &obj, "pid", "repeated"));
        }
        if i == 0 {
            if root_pid != 0 && e.pid != root_pid {
                return Err(bad(
                    path,
                    &obj,
                    "pid",
                    format!("the inventory's root is pid {root_pid}"),
                ));
            }
            check_pid(path, &obj, "ppid", e.ppid, true)?;
        } else if !t.entries[..i].iter().any(|p| p.pid == e.ppid) {
            return Err(bad(
                path,
                &obj,
                "ppid",
                format!("parent {} is not earlier in the tree", e.ppid),
            ));
        }
        check_pid(path, &obj, "pgid", e.pgid, true)?;
        check_pid(path, &obj, "sid", e.sid, true)?;
        count(path, &obj, "threads", e.threads.len(), MAX_THREADS)?;
        if let Some(&first) = e.threads.first() {
            if first != e.pid {
                return Err(bad(path, &obj, "threads", "must start with the leader"));
            }
        }
        for &tid in &e.threads {
            check_pid(path, &obj, "threads", tid, false)?;
            if !tids.insert(tid) {
                return Err(bad(path, &obj, "threads", format!("tid {tid} repeated")));
            }
        }
    }
    Ok(())
}

fn thread(th: &ThreadCore, i: usize, path: &Path) -> Result<()> {
    let obj = format!("thread {i} (tid {})", th.tid);
    check_pid(path, &obj, "tid", th.tid, false)?;
    let Some(r) = th.regs.as_ref() else {
        return Err(bad(path, &obj, "regs", "missing"));
    };
    // User addresses, or the vsyscall page.
    let user =
        |a: u64| a < TASK_SIZE || (0xffff_ffff_ff60_0000..0xffff_ffff_ff60_1000).contains(&a);
    if !user(r.rip) {
        return Err(bad(
            path,
            &obj,
            "regs.rip",
            format!("{:#x}: not a user address", r.rip),
        ));
    }
    for (f, v) in [("regs.fs_base", r.fs_base), ("regs.gs_base", r.gs_base)] {
        if v >= TASK_SIZE {
            return Err(bad(path, &obj, f, format!("{v:#x}: not a user address")));
        }
    }
    if !th.xsave.is_empty() && !(MIN_XSAVE..=MAX_XSAVE).contains(&th.xsave.len()) {
        return Err(bad(
            path,
            &obj,
            "xsave",
            format!(
                "{} bytes, an XSAVE area is {MIN_XSAVE}..={MAX_XSAVE}",
                th.xsave.len()
            ),
        ));
    }
    count(path, &obj, "pending", th.pending.len(), MAX_ITEMS)?;
    for p in &th.pending {
        check_signo(path, &obj, "pending.signo", p.signo, false)?;
        if p.siginfo.len() != 128 {
            return Err(bad(
                path,
                &obj,
                "pending.siginfo",
                format!("{} bytes, a siginfo is 128", p.siginfo.len()),
            ));
        }
    }
    if let Some(r) = th.rseq.as_ref() {
        if r.addr != 0 && (r.addr >= TASK_SIZE || r.len < 32 || r.len > 4096) {
            return Err(bad(
                path,
                &obj,
                "rseq",
                format!("{:#x} ({} bytes): not an rseq area", r.addr, r.len),
            ));
        }
    }
    if let Some(s) = th.altstack.as_ref() {
        if s.sp.checked_add(s.size).is_none_or(|e| e > TASK_SIZE) {
            return Err(bad(
                path,
                &obj,
                "altstack",
                format!(
                    "{:#x} + {:#x}: outside the user address space",
                    s.sp, s.size
                ),
            ));
        }
    }
    for (f, v) in [
        ("robust_list", th.robust_list),
        ("clear_child_tid", th.clear_child_tid),
    ] {
        if v >= TASK_SIZE {
            return Err(bad(path, &obj, f, format!("{v:#x}: not a user address")));
        }
    }
    check_name(path, &obj, "comm", &th.comm, 64)?;
    Ok(())
}

/// `core-<pid>.img` of the process `pid` with the threads `pstree` lists.
pub fn core(c: &TaskCore, pid: u32, tids: &[u32], path: &Path) -> Result<()> {
    let obj = format!("pid {pid}");
    if c.pid != pid {
        return Err(bad(
            path,
            &obj,
            "pid",
            format!("holds pid {}, expected {pid}", c.pid),
        ));
    }
    let state = c
        .state
        .enum_value()
        .map_err(|v| bad(path, &obj, "state", format!("unknown state {v}")))?;
    check_name(path, &obj, "comm", &c.comm, 64)?;
    check_signo(path, &obj, "exit_signal", c.exit_signal, true)?;
    if state == TaskState::TASK_ZOMBIE {
        return Ok(());
    }
    if c.threads.is_empty() || c.threads[0].tid != pid {
        return Err(bad(path, &obj, "threads", "must start with the leader"));
    }
    count(path, &obj, "threads", c.threads.len(), MAX_THREADS)?;
    let mut seen = HashSet::new();
    for (i, th) in c.threads.iter().enumerate() {
        thread(th, i, path)?;
        if !seen.insert(th.tid) {
            return Err(bad(
                path,
                &obj,
                "threads",
                format!("tid {} repeated", th.tid),
            ));
        }
    }
    if !tids.is_empty() {
        let mut a: Vec<u32> = c.threads.iter().map(|t| t.tid).collect();
        let mut b = tids.to_vec();
        a.sort_unstable();
        b.sort_unstable();
        if a != b {
            return Err(bad(
                path,
                &obj,
                "threads",
                "differ from those pstree.img lists",
            ));
        }
    }
    for k in super::PROC_KINDS {
        k.validate(c, path)?;
    }
    super::attrs::validate(c, path)?;
    count(
        path,
        &obj,
        "shared_pending",
        c.shared_pending.len(),
        MAX_ITEMS,
    )?;
    for p in &c.shared_pending {
        check_signo(path, &obj, "shared_pending.signo", p.signo, false)?;
        if p.siginfo.len() != 128 {
            return Err(bad(
                path,
                &obj,
                "shared_pending.siginfo",
                format!("{} bytes, a siginfo is 128", p.siginfo.len()),
            ));
        }
    }
    if let Some(cr) = c.creds.as_ref() {
        count(path, &obj, "creds.groups", cr.groups.len(), 65536)?;
        if cr.securebits > 0xff {
            return Err(bad(
                path,
                &obj,
                "creds.securebits",
                format!("{:#x}", cr.securebits),
            ));
        }
    }
    Ok(())
}

/// The references of a core image into files.img and the tree (a
/// zombie has no children: they would have been reparented).
pub fn core_refs(
    c: &TaskCore,
    descs: &HashMap<u32, &FileDesc>,
    tree: &Pstree,
    path: &Path,
) -> Result<()> {
    if c.state.enum_value() == Ok(TaskState::TASK_ZOMBIE) {
        if tree.entries.iter().any(|e| e.ppid == c.pid) {
            return Err(Error::image(path, "a zombie cannot have children"));
        }
        return Ok(());
    }
    let obj = format!("pid {}", c.pid);
    let dir = |k: &file_desc::Kind| matches!(k, file_desc::Kind::FsPath(_));
    if c.cwd_id != 0 || c.root_id != 0 {
        check_desc_ref(descs, c.cwd_id, dir, path, &obj, "cwd_id", "a directory")?;
        check_desc_ref(descs, c.root_id, dir, path, &obj, "root_id", "a directory")?;
    }
    for (f, with) in [
        ("files_shared_with", c.files_shared_with),
        ("fs_shared_with", c.fs_shared_with),
    ] {
        if with != 0 && (with == c.pid || !tree.entries.iter().any(|e| e.pid == with)) {
            return Err(bad(
                path,
                &obj,
                f,
                format!("{with}: not another process of the tree"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::proto::X86Regs;

    #[test]
    fn thread_fields() {
        let p = Path::new("core-5.img");
        let mut c = TaskCore::new();
        c.pid = 5;
        let mut th = ThreadCore::new();
        th.tid = 5;
        th.regs = Some(X86Regs::new()).into();
        c.threads.push(th);
        core(&c, 5, &[5], p).unwrap();
        c.threads[0].xsave = vec![0; 10];
        let e = core(&c, 5, &[5], p).unwrap_err().to_string();
        assert!(e.contains("xsave"), "{e}");
        c.threads[0].xsave.clear();
        c.threads[0].regs.as_mut().unwrap().rip = u64::MAX;
        assert!(core(&c, 5, &[5], p)
            .unwrap_err()
            .to_string()
            .contains("rip"));
        c.threads[0].regs.as_mut().unwrap().rip = 0x1000;
        assert!(core(&c, 5, &[5, 6], p).is_err());
        c.umask = 0o1777;
        assert!(core(&c, 5, &[5], p)
            .unwrap_err()
            .to_string()
            .contains("umask"));
    }
}
