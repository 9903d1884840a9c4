//! Freezing a tree with PTRACE_SEIZE + PTRACE_INTERRUPT: the tasks never
//! see a SIGSTOP or SIGCONT. Every thread's registers and signal mask are
//! recorded at the freeze; [`Frozen::thaw`] puts them back exactly, and
//! dropping a `Frozen` that was neither thawed nor killed thaws it, so any
//! error on the dump path leaves the tree running as before.

use std::collections::BTreeSet;

use crate::error::{Error, Result};
use crate::procfs;
use crate::sys::inject;
use crate::sys::ptrace::{self, UserRegs, PTRACE_O_TRACESYSGOOD};

/// All signals blocked (the kernel ignores SIGKILL and SIGSTOP here).
pub const ALL_SIGNALS: u64 = u64::MAX;

#[derive(Debug, Clone)]
pub struct FrozenTask {
    pub tid: i32,
    pub regs: UserRegs,
    pub sigmask: u64,
    pub group_stopped: bool,
    /// Registers were changed (remote syscalls); thaw must park first.
    pub touched: bool,
}

#[derive(Debug)]
pub struct FrozenProcess {
    pub pid: i32,
    pub ppid: i32,
    pub threads: Vec<FrozenTask>,
    /// A zombie (not reaped by its frozen parent): its wait status.
    pub zombie_status: Option<i32>,
}

impl FrozenProcess {
    pub fn stopped(&self) -> bool {
        self.threads.first().is_some_and(|t| t.group_stopped)
    }
}

#[derive(Debug)]
pub struct Frozen {
    pub procs: Vec<FrozenProcess>,
    finished: bool,
}

fn seize_one(tid: i32) -> Result<FrozenTask> {
    let group_stopped = inject::seize_and_stop(tid, PTRACE_O_TRACESYSGOOD)
        .map_err(|e| Error::sys(tid, "seize", e))?;
    let regs = ptrace::get_regs(tid).map_err(|e| Error::sys(tid, "PTRACE_GETREGS", e))?;
    let sigmask = ptrace::get_sigmask(tid).map_err(|e| Error::sys(tid, "PTRACE_GETSIGMASK", e))?;
    // Block everything while we work: signals that arrive during the dump
    // stay pending and are part of the image (and of the thawed task).
    ptrace::set_sigmask(tid, ALL_SIGNALS).map_err(|e| Error::sys(tid, "PTRACE_SETSIGMASK", e))?;
    Ok(FrozenTask {
        tid,
        regs,
        sigmask,
        group_stopped,
        touched: false,
    })
}

impl Frozen {
    /// Freezes the tree rooted at `root`, parents before children. Once
    /// every thread of a process is stopped it can neither fork nor reap,
    /// so its list of children is final: each child is either alive (and
    /// is frozen next) or a zombie. Threads created while we seize are
    /// caught by re-reading the task list until it is stable.
    pub fn freeze_tree(root: i32) -> Result<Frozen> {
        let mut frozen = Frozen {
            procs: Vec::new(),
            finished: false,
        };
        let root_ppid = procfs::read_stat(root)?.ppid;
        let mut queue = std::collections::VecDeque::from([(root, root_ppid)]);
        while let Some((pid, ppid)) = queue.pop_front() {
            let stat = match procfs::read_stat(pid) {
                Ok(s) => s,
                Err(e) if pid == root => return Err(e),
                // Reaped by a parent that is not ours to freeze: gone.
                Err(_) => continue,
            };
            if stat.state == 'Z' || stat.state == 'X' {
                if pid == root {
                    return Err(Error::sys(
                        pid,
                        "dump",
                        std::io::Error::other("the process is a zombie"),
                    ));
                }
                frozen.procs.push(FrozenProcess {
                    pid,
                    ppid,
                    threads: Vec::new(),
                    zombie_status: Some(stat.exit_code),
                });
                continue;
            }
            frozen.procs.push(FrozenProcess {
                pid,
                ppid,
                threads: Vec::new(),
                zombie_status: None,
            });
            let mut seen = BTreeSet::new();
            loop {
                let tids = procfs::list_tasks(pid)?;
                let new: Vec<i32> = tids.into_iter().filter(|t| !seen.contains(t)).collect();
                if new.is_empty() {
                    break;
                }
                for tid in new {
                    seen.insert(tid);
                    match seize_one(tid) {
                        Ok(t) => {
                            if let Some(p) = frozen.procs.last_mut() {
                                p.threads.push(t);
                            }
                        }
                        // A thread that exited meanwhile is not an error;
                        // a process that became a zombie is handled below.
                        Err(_)
                            if !std::path::Path::new(&format!("/proc/{pid}/task/{tid}"))
                                .exists() => {}
                        Err(_)
                            if tid == pid
                                && procfs::read_stat(pid).is_ok_and(|s| s.state == 'Z') => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            let Some(p) = frozen.procs.last_mut() else {
                continue;
            };
            p.threads.sort_by_key(|t| (t.tid != pid, t.tid));
            if p.threads.first().map(|t| t.tid) != Some(pid) {
                // It exited while we froze it: now a zombie of a frozen parent.
                match procfs::read_stat(pid) {
                    Ok(s) if s.state == 'Z' && pid != root => {
                        let threads = std::mem::take(&mut p.threads);
                        p.zombie_status = Some(s.exit_code);
                        for t in threads {
                            let _ = ptrace::detach(t.tid, 0);
                        }
                        continue;
                    }
                    _ => {
                        return Err(Error::sys(
                            pid,
                            "freeze",
                            std::io::Error::other("process vanished"),
                        ))
                    }
                }
            }
            let mut children = Vec::new();
            for t in &p.threads {
                children.extend(procfs::read_children(pid, t.tid)?);
            }
            children.sort();
            children.dedup();
            queue.extend(children.into_iter().map(|c| (c, pid)));
        }
        Ok(frozen)
    }

    /// All live (non-zombie) processes.
    pub fn live(&self) -> impl Iterator<Item = &FrozenProcess> {
        self.procs.iter().filter(|p| p.zombie_status.is_none())
    }

    pub fn task_mut(&mut self, tid: i32) -> Option<&mut FrozenTask> {
        self.procs
            .iter_mut()
            .flat_map(|p| p.threads.iter_mut())
            .find(|t| t.tid == tid)
    }

    /// Puts every register and mask back and detaches: the tree runs on
    /// exactly as before. Best effort per task; returns the first error.
    pub fn thaw(&mut self) -> Result<()> {
        self.finished = true;
        let mut first: Option<Error> = None;
        for t in self.procs.iter().flat_map(|p| p.threads.iter()) {
            let r = (|| -> std::io::Result<()> {
                if t.touched {
                    inject::park(t.tid)?;
                }
                ptrace::set_regs(t.tid, &t.regs)?;
                ptrace::set_sigmask(t.tid, t.sigmask)?;
                ptrace::detach(t.tid, 0)
            })();
            if let Err(e) = r {
                first.get_or_insert(Error::sys(t.tid, "thaw", e));
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Kills the frozen tree (after a successful dump) and waits until the
    /// kernel has reported every thread gone, so the pids are free.
    pub fn kill(&mut self) -> Result<()> {
        self.finished = true;
        for p in self.live() {
            let _ = crate::sys::task::kill(p.pid, libc::SIGKILL);
        }
        // The leader of a thread group is reported only after its other
        // threads are reaped, so reap the leaders last.
        let mut order: Vec<i32> = self
            .procs
            .iter()
            .flat_map(|p| p.threads.iter().skip(1).map(|t| t.tid))
            .collect();
        order.extend(self.live().map(|p| p.pid));
        for tid in order {
            while let Ok(Some((_, ptrace::WaitStatus::Stopped { .. }))) = ptrace::wait(tid, 0) {
                let _ = ptrace::cont(tid, 0);
            }
        }
        Ok(())
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if !self.finished {
            if let Err(e) = self.thaw() {
                eprintln!("cairn: warning: thawing after an error: {e}");
            }
        }
    }
}
