//! The restore orchestrator.
//!
//! All images are read and validated before any process exists. A
//! "vessel" is then created with the dumped pid (clone3 with set_tid, or
//! ns_last_pid), seized, and turned into the dumped process by remote
//! system calls: it drops everything inherited from cairn, gets the old
//! address space, files, signal state and credentials, and finally the
//! saved registers. The vessel is traced with PTRACE_O_EXITKILL and killed
//! on any error, so a failed restore leaves no process behind.

use std::time::Instant;

use crate::cli::RestoreArgs;
use crate::error::{Error, Result};
use crate::image::pages::PageStoreReader;
use crate::image::proto::{FdTable, Files, Inventory, MmEntry, Pagemap, Pstree, TaskCore};
use crate::image::{names, ImageDir, Kind};
use crate::kinds::files::{self, FilesIndex};
use crate::kinds::memory::{self, TASK_SIZE};
use crate::kinds::task as ktask;
use crate::procfs;
use crate::remote::{self, Agent, SCRATCH_LEN};
use crate::sys::inject::{self, Remote};
use crate::sys::ptrace::{self, PTRACE_O_EXITKILL, PTRACE_O_TRACECLONE, PTRACE_O_TRACESYSGOOD};
use crate::sys::{mem, task};

/// Every image of a checkpoint, read and checked.
pub struct Images {
    pub dir: ImageDir,
    pub inventory: Inventory,
    pub pstree: Pstree,
    pub cores: Vec<TaskCore>,
    pub mms: Vec<MmEntry>,
    pub fdtables: Vec<FdTable>,
    pub files: Files,
    pub pagemaps: Vec<Pagemap>,
    pub store: PageStoreReader,
}

impl Images {
    pub fn load(dir: ImageDir) -> Result<Images> {
        let inventory: Inventory = dir.read(Kind::Inventory, names::INVENTORY)?;
        let pstree: Pstree = dir.read(Kind::Pstree, names::PSTREE)?;
        let files: Files = dir.read(Kind::Files, names::FILES)?;
        let store = PageStoreReader::open(&dir)?;
        if pstree.entries.is_empty() {
            return Err(Error::image(dir.file(names::PSTREE), "no processes"));
        }
        let (mut cores, mut mms, mut fdtables, mut pagemaps) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for e in &pstree.entries {
            let pid = e.pid;
            if pid == 0 || pid > i32::MAX as u32 {
                return Err(Error::image(
                    dir.file(names::PSTREE),
                    format!("bad pid {pid}"),
                ));
            }
            let core: TaskCore = dir.read(Kind::Core, &names::core(pid))?;
            if core.threads.is_empty() || core.threads[0].tid != pid {
                return Err(Error::image(
                    dir.file(&names::core(pid)),
                    "thread list must start with the leader",
                ));
            }
            for th in &core.threads {
                if th.regs.is_none() {
                    return Err(Error::image(
                        dir.file(&names::core(pid)),
                        format!("thread {} has no registers", th.tid),
                    ));
                }
            }
            let mm: MmEntry = dir.read(Kind::Mm, &names::mm(pid))?;
            memory::validate_mm(&mm, &dir.file(&names::mm(pid)))?;
            let pm_name = names::pagemap(&format!("pid:{pid}"));
            let pm: Pagemap = if dir.exists(&pm_name) {
                dir.read(Kind::Pagemap, &pm_name)?
            } else {
                Pagemap::new()
            };
            memory::validate_pagemap(&pm, &mm, &store, &dir.file(&pm_name))?;
            pagemaps.push(pm);
            let mut shmids: Vec<u64> = mm
                .vmas
                .iter()
                .filter(|v| v.shmid != 0)
                .map(|v| v.shmid)
                .collect();
            shmids.sort();
            shmids.dedup();
            for id in shmids {
                let n = names::pagemap(&format!("shmem:{id}"));
                if dir.exists(&n) {
                    let pm: Pagemap = dir.read(Kind::Pagemap, &n)?;
                    memory::validate_pagemap(&pm, &mm, &store, &dir.file(&n))?;
                    pagemaps.push(pm);
                }
            }
            cores.push(core);
            mms.push(mm);
            fdtables.push(dir.read(Kind::FdTable, &names::fdinfo(pid))?);
        }
        Ok(Images {
            dir,
            inventory,
            pstree,
            cores,
            mms,
            fdtables,
            files,
            pagemaps,
            store,
        })
    }
}

/// Kills and reaps the vessel unless disarmed.
struct VesselGuard {
    pid: i32,
    armed: bool,
}

impl Drop for VesselGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = task::kill(self.pid, libc::SIGKILL);
            let _ = ptrace::wait_raw(self.pid);
        }
    }
}

fn spawn_vessel(pid: i32) -> Result<i32> {
    match task::spawn_vessel_clone3(pid) {
        Ok(p) => Ok(p),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            Err(Error::Restore(format!("pid {pid} is already in use")))
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::E2BIG)) => {
            warn!("clone3 with set_tid unavailable ({e}); using ns_last_pid");
            let p = task::spawn_vessel_last_pid(pid)
                .map_err(|e| Error::sys(pid, "fork via ns_last_pid", e))?;
            if p != pid {
                let _ = task::kill(p, libc::SIGKILL);
                let _ = ptrace::wait_raw(p);
                return Err(Error::Restore(format!(
                    "pid {pid} could not be obtained (got {p})"
                )));
            }
            Ok(p)
        }
        Err(e) => Err(Error::sys(pid, "clone3 with set_tid", e)),
    }
}

/// Restores the (single) process and leaves it running. Returns its pid.
fn restore_process(img: &Images, i: usize) -> Result<i32> {
    let core = &img.cores[i];
    let mm = &img.mms[i];
    let pid = core.pid as i32;
    let idx = FilesIndex::new(&img.files);
    let t0 = Instant::now();

    let vessel = spawn_vessel(pid)?;
    let mut guard = VesselGuard {
        pid: vessel,
        armed: true,
    };
    inject::seize_and_stop(
        vessel,
        PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL | PTRACE_O_TRACECLONE,
    )
    .map_err(|e| Error::sys(vessel, "seize vessel", e))?;
    ptrace::set_sigmask(vessel, u64::MAX)
        .map_err(|e| Error::sys(vessel, "PTRACE_SETSIGMASK", e))?;
    // The vessel is a copy of us: our own vDSO's syscall instruction is at
    // the same address in it.
    let insn = remote::find_syscall_insn(task::getpid())?;
    let mut remote =
        Remote::new(vessel, insn).map_err(|e| Error::sys(vessel, "PTRACE_GETREGS", e))?;
    let sys = |e: std::io::Error, what: &str| Error::sys(vessel, what.to_string(), e);

    // 1. Drop what the vessel inherited from cairn.
    let cfg =
        ptrace::get_rseq_config(vessel).map_err(|e| sys(e, "PTRACE_GET_RSEQ_CONFIGURATION"))?;
    if cfg.rseq_abi_pointer != 0 {
        remote
            .syscall(
                libc::SYS_rseq,
                &[
                    cfg.rseq_abi_pointer,
                    cfg.rseq_abi_size as u64,
                    1,
                    cfg.signature as u64,
                ],
            )
            .map_err(|e| sys(e, "rseq unregister"))?;
    }
    remote
        .syscall(libc::SYS_close_range, &[0, u32::MAX as u64, 0])
        .map_err(|e| sys(e, "close_range"))?;

    // 2. A scratch area that collides with neither the image nor us.
    let mut taken: Vec<(u64, u64)> = mm.vmas.iter().map(|v| (v.start, v.end)).collect();
    taken.extend(procfs::read_maps(vessel)?.iter().map(|m| (m.start, m.end)));
    let area = SCRATCH_LEN + 4096;
    let want = memory::free_area(area, &taken)
        .ok_or_else(|| Error::Restore("no free address range for the restorer".into()))?;
    let rwx = (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64;
    let fl = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64 | memory::FIXED_NOREPLACE;
    let tramp = remote
        .syscall(libc::SYS_mmap, &[want, area, rwx, fl, u64::MAX, 0])
        .map_err(|e| sys(e, "mmap scratch"))?;
    mem::vm_write_all(vessel, tramp, &[0x0f, 0x05]).map_err(|e| sys(e, "write trampoline"))?;
    remote.set_insn(tramp);
    let mut agent = Agent {
        remote,
        pid: vessel,
        scratch: tramp + 4096,
        scratch_len: SCRATCH_LEN,
    };

    // 3. Nothing of cairn stays mapped.
    agent.call("munmap below scratch", libc::SYS_munmap, &[0, tramp])?;
    agent.call(
        "munmap above scratch",
        libc::SYS_munmap,
        &[tramp + area, TASK_SIZE - (tramp + area)],
    )?;

    // 4. Memory.
    let shm = memory::restore_vmas(&mut agent, mm, &|id| idx.path(id))?;
    let owners: Vec<&Pagemap> = img
        .pagemaps
        .iter()
        .filter(|p| p.owner == format!("pid:{pid}") || p.owner.starts_with("shmem:"))
        .collect();
    let owned: Vec<Pagemap> = owners.into_iter().cloned().collect();
    let tp = Instant::now();
    memory::restore_pages(vessel, mm, &owned, &img.store, &shm)?;
    info!("pid {pid}: pages written in {:?}", tp.elapsed());
    drop(shm);
    memory::finish_vmas(&mut agent, mm)?;
    let exe = idx
        .path(mm.exe_file_id)
        .ok_or_else(|| Error::Restore(format!("pid {pid}: executable unknown")))?;
    // The vessel's exe link is cairn's; the kernel refuses to replace it
    // while that file is still mapped, which is the case when the restored
    // program is cairn itself. Then the link is already right.
    let same_exe = match (std::fs::metadata("/proc/self/exe"), std::fs::metadata(&exe)) {
        (Ok(a), Ok(b)) => {
            use std::os::unix::fs::MetadataExt;
            (a.dev(), a.ino()) == (b.dev(), b.ino())
        }
        _ => false,
    };
    if same_exe {
        memory::set_mm_map(&mut agent, mm, u32::MAX as u64)?;
    } else {
        let exe_fd = memory::remote_open(&mut agent, 0, &exe, libc::O_RDONLY | libc::O_CLOEXEC)?;
        memory::set_mm_map(&mut agent, mm, exe_fd)?;
        agent.call("close", libc::SYS_close, &[exe_fd])?;
    }

    // 5. Files and filesystem context.
    files::restore_fds(&mut agent, &img.fdtables[i], &idx)?;
    files::restore_fs(&mut agent, idx.path(core.cwd_id), idx.path(core.root_id))?;

    // 6. Process and thread attributes, pending signals, then credentials.
    let e = &img.pstree.entries[i];
    ktask::restore_session(&mut agent, e.pid, e.pgid, e.sid)?;
    ktask::restore_process_attrs(&mut agent, core)?;
    let mut warnings = Vec::new();
    ktask::restore_rlimits(&mut agent, core, &mut warnings)?;
    for w in warnings {
        warn!("pid {pid}: {w}");
    }
    ktask::restore_pending(&mut agent, pid, pid, &core.shared_pending, true)?;

    // 7. Threads: each made by clone3(CLONE_THREAD, set_tid) in the
    // leader, auto-attached through PTRACE_O_TRACECLONE. Then per-thread
    // state, credentials last (they are per thread).
    let mut agents = vec![agent];
    for th in &core.threads[1..] {
        let tid = th.tid as i32;
        let a = agents[0].put(128, &(tid as u64).to_ne_bytes())?;
        let mut args = Vec::with_capacity(88);
        let flags: u64 = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM) as u64;
        for w in [flags, 0, 0, 0, 0, 0, 0, 0, a, 1, 0] {
            args.extend_from_slice(&w.to_ne_bytes());
        }
        let argp = agents[0].put(0, &args)?;
        let got = agents[0]
            .remote
            .syscall(libc::SYS_clone3, &[argp, 88])
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::EEXIST) {
                    Error::Restore(format!("thread id {tid} is already in use"))
                } else {
                    Error::sys(pid, format!("clone3 thread {tid}"), e)
                }
            })?;
        if got != tid as u64 {
            return Err(Error::Restore(format!(
                "pid {pid}: thread came back as {got}, not {tid}"
            )));
        }
        inject::wait_stop(tid).map_err(|e| Error::sys(tid, "wait for new thread", e))?;
        ptrace::set_sigmask(tid, u64::MAX).map_err(|e| Error::sys(tid, "PTRACE_SETSIGMASK", e))?;
        let remote = Remote::new(tid, tramp).map_err(|e| Error::sys(tid, "PTRACE_GETREGS", e))?;
        agents.push(Agent {
            remote,
            pid: vessel,
            scratch: tramp + 4096,
            scratch_len: SCRATCH_LEN,
        });
    }
    for (a, th) in agents.iter_mut().zip(&core.threads) {
        ktask::restore_thread_attrs(a, th)?;
        ktask::restore_pending(a, pid, th.tid as i32, &th.pending, false)?;
    }
    if let Some(c) = core.creds.as_ref() {
        for a in agents.iter_mut() {
            ktask::restore_creds(a, c)?;
        }
    }

    // 8. Remove the scratch area using a syscall instruction of the
    // restored vDSO, then put the registers back and let it go.
    let insn = remote::find_syscall_insn(vessel)?;
    if insn >= tramp && insn < tramp + area {
        return Err(Error::Restore(format!(
            "pid {pid}: no syscall instruction outside the restorer area"
        )));
    }
    agents[0].remote.set_insn(insn);
    agents[0].call("munmap scratch", libc::SYS_munmap, &[tramp, area])?;
    for (a, th) in agents.iter_mut().zip(&core.threads) {
        let tid = a.tid();
        let sys = |e: std::io::Error, what: &str| Error::sys(tid, what.to_string(), e);
        a.remote.park().map_err(|e| sys(e, "park"))?;
        if !th.xsave.is_empty() {
            ptrace::set_xstate(tid, &th.xsave)
                .map_err(|e| sys(e, "PTRACE_SETREGSET NT_X86_XSTATE"))?;
        }
        let regs = ktask::regs_from_proto(th.regs.as_ref().unwrap_or_default());
        ptrace::set_regs(tid, &regs).map_err(|e| sys(e, "PTRACE_SETREGS"))?;
        ptrace::set_sigmask(tid, th.sigmask).map_err(|e| sys(e, "PTRACE_SETSIGMASK"))?;
    }
    // Detach only when every thread is ready, the leader last.
    for a in agents.iter().rev() {
        ptrace::detach(a.tid(), 0).map_err(|e| Error::sys(a.tid(), "PTRACE_DETACH", e))?;
    }
    guard.armed = false;
    info!("pid {pid}: restored in {:?}", t0.elapsed());
    Ok(vessel)
}

fn write_pidfile(path: &std::path::Path, pid: i32) -> Result<()> {
    let tmp = path.with_extension("cairn-tmp");
    std::fs::write(&tmp, format!("{pid}\n")).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Checks that can refuse a restore before anything is created.
fn preflight(img: &Images, args: &RestoreArgs) -> Result<()> {
    if img.pstree.entries.len() != 1 {
        return Err(Error::Restore(
            "restoring process trees is not supported yet".into(),
        ));
    }
    let same_boot = procfs::boot_id().ok().as_deref() == Some(img.inventory.boot_id.as_str());
    let problems = FilesIndex::new(&img.files).check_unchanged(same_boot);
    if !problems.is_empty() {
        if args.ignore_file_changes {
            for p in &problems {
                warn!("{p} (restoring anyway: --ignore-file-changes)");
            }
        } else {
            return Err(Error::Restore(format!(
                "{} (use --ignore-file-changes to restore anyway)",
                problems.join("; ")
            )));
        }
    }
    for e in &img.pstree.entries {
        if task::pid_exists(e.pid as i32) {
            return Err(Error::Restore(format!("pid {} is already in use", e.pid)));
        }
    }
    Ok(())
}

/// `cairn restore`. Returns the exit code cairn should exit with.
pub fn restore(args: &RestoreArgs) -> Result<i32> {
    let dir = ImageDir::open(&args.images_dir)?;
    let img = Images::load(dir)?;
    preflight(&img, args)?;
    if args.detached {
        return restore_detached(&img, args);
    }
    let pid = restore_process(&img, 0)?;
    if let Some(p) = &args.pidfile {
        write_pidfile(p, pid)?;
    }
    let st = ptrace::wait_raw(pid).map_err(|e| Error::sys(pid, "waitpid", e))?;
    Ok(if libc::WIFEXITED(st) {
        libc::WEXITSTATUS(st)
    } else {
        128 + libc::WTERMSIG(st)
    })
}

/// Detached: a short-lived child does the restore, so the restored process
/// is reparented when that child exits. The result comes back on a pipe.
fn restore_detached(img: &Images, args: &RestoreArgs) -> Result<i32> {
    use std::io::{Read, Write};
    if task::own_thread_count() > 1 {
        return Err(Error::Restore(
            "internal: restore must fork while single-threaded".into(),
        ));
    }
    let (r, w) = task::pipe().map_err(|e| Error::sys(task::getpid(), "pipe", e))?;
    match task::fork().map_err(|e| Error::sys(task::getpid(), "fork", e))? {
        task::Fork::Child => {
            drop(r);
            let mut w = std::fs::File::from(w);
            let msg = match restore_process(img, 0) {
                Ok(pid) => match &args.pidfile {
                    Some(p) => write_pidfile(p, pid)
                        .map(|_| format!("ok {pid}"))
                        .unwrap_or_else(|e| format!("err {e}")),
                    None => format!("ok {pid}"),
                },
                Err(e) => format!("err {e}"),
            };
            let _ = w.write_all(msg.as_bytes());
            drop(w);
            std::process::exit(0);
        }
        task::Fork::Parent(child) => {
            drop(w);
            let mut s = String::new();
            let _ = std::fs::File::from(r).read_to_string(&mut s);
            let _ = ptrace::wait_raw(child);
            match s.strip_prefix("ok ") {
                Some(p) => {
                    info!("restored pid {p} (detached)");
                    Ok(0)
                }
                None => Err(Error::Restore(
                    s.strip_prefix("err ")
                        .unwrap_or("restorer died")
                        .to_string(),
                )),
            }
        }
    }
}
