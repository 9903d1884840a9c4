//! The restore orchestrator.
//!
//! All images are read and validated before any process exists. Then, in
//! phases over the whole tree:
//! 1. create, in tree order: a "vessel" with the root's pid (clone3 with
//!    set_tid, or ns_last_pid) is seized, drops everything inherited from
//!    cairn and gets its old address space; every other process is forked
//!    inside its parent vessel, once the parent's memory is back, by an
//!    injected clone3 with its pid, joins its session and process group,
//!    and makes what it inherited its own address space, keeping the pages
//!    it shared copy-on-write with its parent (`memory::cow`); zombies
//!    exit at once with their saved status;
//! 2. memory: once the children are forked, each process's protections,
//!    advice and mm fields;
//! 3. files: fd tables, with descriptions shared across processes fetched
//!    with pidfd_getfd so they stay shared;
//! 4. attributes, threads (injected clone3 with CLONE_THREAD), pending
//!    signals, credentials;
//! 5. registers, signal masks, detach.
//!
//! Every vessel is traced with PTRACE_O_EXITKILL and killed on any error,
//! so a failed restore leaves no process behind.

use std::collections::HashMap;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::guard::{Guardian, Role};
use crate::image::chain::{Chain, Resolved};
use crate::image::pages::PageStoreReader;
use crate::image::proto::{
    FdTable, Files, Inventory, MmEntry, Pagemap, Pstree, TaskCore, TaskState,
};
use crate::image::{names, validate, ImageDir, ImageType};
use crate::kinds::contents;
use crate::kinds::files::{self, FilesIndex, SharedFiles};
use crate::kinds::memory::{self, TASK_SIZE};
use crate::kinds::task as ktask;
use crate::options::RestoreOptions;
use crate::procfs;
use crate::remote::Calls;
use crate::remote::{self, batch, Agent, SCRATCH_LEN};
use crate::sys::abi::CloneArgs;
use crate::sys::inject::{self, Remote};
use crate::sys::ptrace::{
    self, PTRACE_O_EXITKILL, PTRACE_O_TRACECLONE, PTRACE_O_TRACEFORK, PTRACE_O_TRACESYSGOOD,
};
use crate::sys::{mem, task};

/// Every image of a checkpoint, read and checked.
pub struct Images {
    pub dir: ImageDir,
    pub inventory: Inventory,
    pub pstree: Pstree,
    pub cores: Vec<TaskCore>,
    /// None for zombies.
    pub mms: Vec<Option<MmEntry>>,
    pub fdtables: Vec<Option<FdTable>>,
    pub files: Files,
    pub pagemaps: Vec<Pagemap>,
    /// Each pagemap's runs resolved through the chain of parent layers.
    pub resolved: Vec<Vec<Resolved>>,
    /// This layer (`layers[0]`) and its parents.
    pub chain: Chain,
}

fn is_zombie(core: &TaskCore) -> bool {
    core.state.enum_value() == Ok(TaskState::TASK_ZOMBIE)
}

impl Images {
    /// Reads and checks every image of the checkpoint in `path` (see
    /// [`ImageDir::load`] for the integrity checks).
    pub fn load(path: &std::path::Path) -> Result<Images> {
        let (dir, inventory) = ImageDir::load(path)?;
        if inventory.pre_dump {
            return Err(Error::image(
                dir.path(),
                "is a pre-dump (memory only): restore from the dump made on top of it",
            ));
        }
        validate::inventory(&inventory, &dir.file(names::INVENTORY))?;
        let has_parent = !inventory.parent_dir.is_empty();
        let tree_path = dir.file(names::PSTREE);
        let pstree: Pstree = dir.read(ImageType::Pstree, names::PSTREE)?;
        validate::pstree(&pstree, inventory.root_pid, &tree_path)?;
        let files: Files = dir.read(ImageType::Files, names::FILES)?;
        validate::files(&files, &dir.file(names::FILES))?;
        let descs = validate::desc_index(&files);
        let store = PageStoreReader::open(&dir)?;
        // Each process's images are read, decoded and checked in parallel
        // (most of a tree's load time is decoding its ~4 images per
        // process); the results are taken in tree order, so the first
        // error reported is the one a sequential read would have hit.
        let loaded = {
            let entries = &pstree.entries;
            let workers = crate::sys::sched::parallelism().clamp(1, 8);
            let per = entries.len().div_ceil(workers).max(1);
            let (dir, descs, pstree, store) = (&dir, &descs, &pstree, &store);
            let load = move |e: &crate::image::proto::PstreeEntry| {
                load_proc(dir, e, descs, pstree, store, has_parent)
            };
            std::thread::scope(|s| {
                let mut chunks = entries.chunks(per);
                let first = chunks.next().unwrap_or_default();
                let others: Vec<_> = chunks
                    .map(|c| s.spawn(move || c.iter().map(load).collect::<Vec<_>>()))
                    .collect();
                let mut all: Vec<Result<ProcImages>> = first.iter().map(load).collect();
                for h in others {
                    all.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
                }
                all
            })
        };
        let (mut cores, mut mms, mut fdtables, mut pagemaps) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for r in loaded {
            let ProcImages { core, live } = r?;
            let Some((mm, pm, t)) = live else {
                cores.push(core);
                mms.push(None);
                fdtables.push(None);
                continue;
            };
            pagemaps.push(pm);
            let mut shared_owners: Vec<String> = mm
                .vmas
                .iter()
                .filter_map(|v| match v.kind.enum_value() {
                    Ok(crate::image::proto::VmaKind::VMA_ANON_SHARED) => {
                        Some(format!("shmem:{}", v.shmid))
                    }
                    Ok(crate::image::proto::VmaKind::VMA_SYSV_SHM) => {
                        Some(format!("sysv:{}", v.shmid))
                    }
                    _ => None,
                })
                .collect();
            shared_owners.sort();
            shared_owners.dedup();
            for owner in shared_owners {
                let n = names::pagemap(&owner);
                if dir.exists(&n) && !pagemaps.iter().any(|p: &Pagemap| p.owner == owner) {
                    let pm: Pagemap = dir.read(ImageType::Pagemap, &n)?;
                    validate::pagemap(&pm, &owner, has_parent, &dir.file(&n))?;
                    validate::pagemap_in_mm(&pm, &mm, &store, &dir.file(&n))?;
                    pagemaps.push(pm);
                }
            }
            cores.push(core);
            mms.push(Some(mm));
            fdtables.push(Some(t));
        }
        // Pages in parent layers: every layer is checked, every run
        // resolved, before anything is created.
        let chain = Chain::open(dir.clone(), inventory.clone(), store)?;
        let resolved = pagemaps
            .iter()
            .map(|pm| chain.resolve(pm))
            .collect::<Result<Vec<_>>>()?;
        if chain.layers.len() > 1 {
            info!(
                "{} layers: pages come from {}",
                chain.layers.len(),
                chain
                    .layers
                    .iter()
                    .map(|l| l.dir.path().display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
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
            resolved,
            chain,
        })
    }

    /// This layer's page store (open files' contents live here).
    pub fn store(&self) -> &PageStoreReader {
        &self.chain.layers[0].store
    }
}

/// The images of one process, read and checked: its core, and for a
/// live process its mm, own pagemap and fd table.
struct ProcImages {
    core: TaskCore,
    live: Option<(MmEntry, Pagemap, FdTable)>,
}

/// Reads and checks the images of the process of `e` (the pagemaps of
/// shared memory it maps are read by [`Images::load`], once per object).
fn load_proc(
    dir: &ImageDir,
    e: &crate::image::proto::PstreeEntry,
    descs: &HashMap<u32, &crate::image::proto::FileDesc>,
    pstree: &Pstree,
    store: &PageStoreReader,
    has_parent: bool,
) -> Result<ProcImages> {
    let pid = e.pid;
    let core_path = dir.file(&names::core(pid));
    let core: TaskCore = dir.read(ImageType::Core, &names::core(pid))?;
    validate::core(&core, pid, &e.threads, &core_path)?;
    validate::core_refs(&core, descs, pstree, &core_path)?;
    if is_zombie(&core) {
        return Ok(ProcImages { core, live: None });
    }
    let mm: MmEntry = dir.read(ImageType::Mm, &names::mm(pid))?;
    validate::mm(&mm, pid, descs, &dir.file(&names::mm(pid)))?;
    let own = format!("pid:{pid}");
    let pm_name = names::pagemap(&own);
    let pm: Pagemap = if dir.exists(&pm_name) {
        let pm: Pagemap = dir.read(ImageType::Pagemap, &pm_name)?;
        validate::pagemap(&pm, &own, has_parent, &dir.file(&pm_name))?;
        pm
    } else {
        let mut pm = Pagemap::new();
        pm.owner = own;
        pm
    };
    validate::pagemap_in_mm(&pm, &mm, store, &dir.file(&pm_name))?;
    validate::pagemap_vmas(&pm, &mm, &dir.file(&pm_name))?;
    let t: FdTable = dir.read(ImageType::FdTable, &names::fdinfo(pid))?;
    validate::fdtable(&t, pid, descs, &dir.file(&names::fdinfo(pid)))?;
    Ok(ProcImages {
        core,
        live: Some((mm, pm, t)),
    })
}

/// Kills every vessel created so far unless disarmed, so a failed restore
/// leaves nothing behind.
struct Vessels {
    pids: Vec<i32>,
    disarmed: bool,
    /// Kills every process if cairn dies before `release` (`crate::guard`).
    guardian: Option<Guardian>,
}

impl Vessels {
    fn new() -> Vessels {
        Vessels {
            pids: Vec::new(),
            disarmed: false,
            guardian: Guardian::start(Role::Restore),
        }
    }

    fn add(&mut self, pid: i32) {
        if let Some(g) = &mut self.guardian {
            g.process(pid);
        }
        self.pids.push(pid);
    }

    /// Every process is let go: the restore is complete.
    fn release(&mut self) {
        self.disarmed = true;
        if let Some(g) = self.guardian.take() {
            g.done();
        }
    }
}

impl Drop for Vessels {
    fn drop(&mut self) {
        if self.disarmed {
            return;
        }
        for &p in self.pids.iter().rev() {
            let _ = task::kill(p, libc::SIGKILL);
        }
        // Reaped in any order, never by a blocking wait on one pid: a
        // killed leader is not reported until every traced thread of it
        // is reaped, and a wait on the leader alone would block forever
        // (a restore refused by --compare hung so). Vessels forked inside
        // killed vessels were orphaned to cairn (a subreaper while it
        // restores, see `restore_tree`): reaped too, so that their pids
        // are free when the restore returns.
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while Instant::now() < deadline {
            match task::reap_any() {
                Ok(Some(_)) => continue,
                Ok(None) if self.pids.iter().any(|&p| task::pid_exists(p)) => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                _ => break,
            }
        }
        let _ = task::set_child_subreaper(false);
        // Nothing is left for the guardian to kill.
        if let Some(g) = self.guardian.take() {
            g.done();
        }
    }
}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SETPCAP: u32 = 8;
const CAP_CHECKPOINT_RESTORE: u32 = 40;

/// Whether the vessels must make themselves dumpable. A cairn that is not
/// dumpable (set-user-ID, or an exec that gained file capabilities such
/// as `setcap cap_checkpoint_restore+ep` on kernels that mark that so;
/// 6.18 leaves such an exec dumpable when the uids do not change) has
/// non-dumpable forks: without CAP_SYS_PTRACE it could neither seize the
/// first vessel nor read or write the memory of any (process_vm_*, /proc,
/// pidfd_getfd all ask what ptrace asks).
///
/// cairn itself is left as the kernel made it. A vessel is made dumpable
/// by itself, holding cairn's credentials
/// (the user's ids and the capability) and a copy of cairn's memory, and
/// is seized at once (children are born seized). The kernel lets another
/// process of the user access a dumpable process only if it holds every
/// capability that process holds (cap_ptrace_access_check), so none of
/// the user's own programs can, only another cairn of the same install,
/// which itself only does what cairn does (its dump of a vessel could
/// not be restored with the capability: see `file_caps_refuse`). Traced,
/// a vessel dies with cairn (PTRACE_O_EXITKILL), and it gives up the
/// capability (`restore_creds`) before it is let go.
fn vessels_dumpable() -> Result<bool> {
    let me = task::getpid();
    if task::dumpable().map_err(|e| Error::sys(me, "PR_GET_DUMPABLE", e))? {
        return Ok(false);
    }
    let st = procfs::read_status(me)?;
    Ok(st.cap_eff & (1 << CAP_SYS_PTRACE) == 0)
}

/// Capabilities the restoring cairn holds but the user does not: what a
/// set-capability install (file capabilities) holds beyond the ambient
/// set, when run by a user other than root. No restored process may get
/// them: they were given to cairn's code, not to the user's programs (an
/// image asking for them may have been edited).
fn file_caps_refuse(img: &Images) -> Result<()> {
    let only_cairns = file_caps()?;
    if only_cairns == 0 {
        return Ok(());
    }
    let me = procfs::read_status(task::getpid())?;
    for (e, c) in img.pstree.entries.iter().zip(&img.cores) {
        let Some(cr) = c.creds.as_ref() else {
            continue;
        };
        let caps = cr.cap_eff | cr.cap_prm | cr.cap_inh | cr.cap_amb;
        if caps & only_cairns != 0 {
            return Err(Error::Restore(format!(
                "pid {}: the images ask for capabilities {:#x}, which cairn holds only through \
                 its file capabilities (not as uid {}'s own): refused",
                e.pid,
                caps & only_cairns,
                me.uid[0]
            )));
        }
    }
    Ok(())
}

/// See [`file_caps_refuse`]: the capabilities cairn holds only through
/// its file (0 for root, an ambient set, CAP_SETPCAP).
fn file_caps() -> Result<u64> {
    let me = procfs::read_status(task::getpid())?;
    let only_cairns = me.cap_prm & !me.cap_amb;
    if me.uid[0] == 0 || me.cap_eff & (1 << CAP_SETPCAP) != 0 {
        return Ok(0);
    }
    Ok(only_cairns)
}

/// Whether this cairn, as it runs, could restore a tree: it can give
/// processes their pids (CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN) and
/// seize a vessel made the way a restore makes them (a test vessel with
/// any pid, killed at once). `cairn dump` asks before it touches the tree
/// when the dump is to kill it, so that a tree this install could not
/// bring back is not lost. Nor is a process of `pids` that holds a
/// capability cairn holds only through its file: a restore by this
/// install would refuse it (`file_caps_refuse`).
pub fn check_restorable(pids: &[i32]) -> Result<()> {
    let me = task::getpid();
    let st = procfs::read_status(me)?;
    let only_cairns = file_caps()?;
    for &p in pids {
        let Ok(ps) = procfs::read_status(p) else {
            continue;
        };
        let caps = ps.cap_prm | ps.cap_eff | ps.cap_inh | ps.cap_amb;
        if caps & only_cairns != 0 {
            return Err(Error::sys(
                p,
                "dump",
                std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "not permitted: it holds capabilities {:#x}, which cairn holds only \
                         through its file capabilities, and a restore by this cairn would not \
                         give them back (the tree would be lost); --leave-running dumps it anyway",
                        caps & only_cairns
                    ),
                ),
            ));
        }
    }
    if st.cap_eff & (1 << CAP_CHECKPOINT_RESTORE | 1 << CAP_SYS_ADMIN) == 0 {
        return Err(Error::sys(
            me,
            "check that a restore is possible",
            std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "not permitted: restoring the processes with their pids needs \
                 CAP_CHECKPOINT_RESTORE (or root), which cairn lacks, so the tree is not \
                 dumped (it would be killed); --leave-running dumps it anyway",
            ),
        ));
    }
    let v = task::spawn_vessel_clone3(0, vessels_dumpable()?)
        .map_err(|e| Error::sys(me, "clone3 (test vessel)", e))?;
    let r = inject::seize_and_stop(v, PTRACE_O_EXITKILL);
    let _ = task::kill(v, libc::SIGKILL);
    let _ = ptrace::wait(v, 0);
    r.map_err(|e| {
        Error::sys(
            v,
            "seize a test vessel (cairn could not restore the tree, so it is not dumped: \
             it would be killed; --leave-running dumps it anyway)",
            ptrace::explain_seize_error(v, e, None),
        )
    })?;
    Ok(())
}

fn spawn_vessel(pid: i32, force_last_pid: bool, dumpable: bool) -> Result<i32> {
    let last_pid = |why: &str| -> Result<i32> {
        info!("pid {pid}: using ns_last_pid ({why})");
        // Another fork can take the pid between our write and our fork:
        // check, and try again a few times.
        for _ in 0..5 {
            let p = task::spawn_vessel_last_pid(pid, dumpable)
                .map_err(|e| Error::sys(pid, "fork via ns_last_pid", e))?;
            if p == pid {
                return Ok(p);
            }
            let _ = task::kill(p, libc::SIGKILL);
            let _ = ptrace::wait_raw(p);
            if task::pid_exists(pid) {
                break;
            }
        }
        Err(Error::Restore(format!(
            "pid {pid} could not be obtained through ns_last_pid"
        )))
    };
    if force_last_pid {
        return last_pid("asked for");
    }
    match task::spawn_vessel_clone3(pid, dumpable) {
        Ok(p) => Ok(p),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            Err(Error::Restore(crate::error::pid_in_use(pid, 0, false)))
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::E2BIG)) => {
            warn!("clone3 with set_tid unavailable ({e}); using ns_last_pid");
            last_pid("clone3 set_tid unavailable")
        }
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Err(Error::sys(
            pid,
            "clone3 with set_tid",
            std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "not permitted: giving a process its pid needs CAP_CHECKPOINT_RESTORE \
                 (or root)",
            ),
        )),
        Err(e) => Err(Error::sys(pid, "clone3 with set_tid", e)),
    }
}

/// One process being restored.
struct Proc {
    /// Index into the images.
    i: usize,
    pid: i32,
    zombie: bool,
    /// Leader first; the other threads are added in phase 4.
    agents: Vec<Agent>,
    /// Restorer area (trampoline page + scratch) once memory is restored.
    tramp: u64,
}

const AREA: u64 = SCRATCH_LEN + 4096;

/// The ptrace options every vessel is traced with.
const VESSEL_OPTIONS: u64 =
    PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL | PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK;

/// Injected clone3 with an exact pid/tid; returns once the new task is in
/// its first ptrace stop, with the signal mask `mask`.
fn clone_with_tid(
    parent: &mut Agent,
    flags: u64,
    exit_signal: u64,
    tid: i32,
    mask: u64,
) -> Result<()> {
    let ppid = parent.pid;
    let args = CloneArgs {
        flags,
        exit_signal,
        ..Default::default()
    };
    let got = parent
        .clone3(&args, &[tid])
        .map_err(|e| clone_error(ppid, tid, e))?;
    if got != tid as u64 {
        return Err(Error::Restore(format!(
            "pid {ppid}: clone3 gave {got}, not {tid}"
        )));
    }
    inject::wait_stop(tid).map_err(|e| Error::sys(tid, "wait for new task", e))?;
    ptrace::set_sigmask(tid, mask).map_err(|e| Error::sys(tid, "PTRACE_SETSIGMASK", e))
}

fn clone_error(ppid: i32, tid: i32, e: std::io::Error) -> Error {
    if e.raw_os_error() == Some(libc::EEXIST) {
        Error::Restore(format!("pid {tid} is already in use"))
    } else {
        Error::sys(ppid, format!("clone3 for {tid}"), e)
    }
}

/// The threads `tids` of the process of `parent`, made by injected
/// `clone3(CLONE_THREAD)` calls run as one list (one stop for all, besides
/// each clone event); returns once each is in its first ptrace stop with
/// the signal mask `mask`.
fn clone_threads(parent: &mut Agent, tids: &[i32], mask: u64) -> Result<()> {
    let ppid = parent.pid;
    let args = CloneArgs {
        flags: (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM) as u64,
        ..Default::default()
    };
    for group in tids.chunks(remote::CLONE3_EACH_MAX) {
        if let Err(f) = parent.clone3_each(&args, group)? {
            // Those made before it are killed with the vessels.
            return Err(clone_error(ppid, group[f.index], f.error));
        }
        for &tid in group {
            inject::wait_stop(tid).map_err(|e| Error::sys(tid, "wait for new task", e))?;
            ptrace::set_sigmask(tid, mask).map_err(|e| Error::sys(tid, "PTRACE_SETSIGMASK", e))?;
        }
    }
    Ok(())
}

/// Whether the injected calls of the process of `core` may stop at the
/// `int3` of the restorer area ([`Remote::set_trap_insn`]): not when the
/// process ignores SIGTRAP (the trap would reset it to SIG_DFL) or has
/// one pending (unblocked for the traps, it would be taken for one);
/// such a process takes two stops per call, with everything blocked.
fn traps_ok(core: &TaskCore) -> bool {
    let trap = libc::SIGTRAP as u32;
    let ignored =
        (core.sigactions.iter()).any(|a| a.signo == trap && a.handler == libc::SIG_IGN as u64);
    let pending = (core.shared_pending.iter())
        .chain(core.threads.iter().flat_map(|t| t.pending.iter()))
        .any(|p| p.signo == trap);
    !ignored && !pending
}

/// The signal mask of the tasks of the process of `core` while cairn
/// works in them: everything blocked, but SIGTRAP where the calls trap
/// ([`traps_ok`]).
fn work_mask(core: &TaskCore) -> u64 {
    if traps_ok(core) {
        inject::TRAP_SIGMASK
    } else {
        u64::MAX
    }
}

/// Runs `agent`'s calls through the restorer area's [`inject::SYSCALL_TRAP`]
/// at `tramp`: one stop per call where [`traps_ok`], else two.
fn use_tramp(agent: &mut Agent, tramp: u64, core: &TaskCore) {
    if traps_ok(core) {
        agent.remote.set_trap_insn(tramp);
        // The agent loop stops at its own int3 the same way: batches of
        // calls take one stop (`remote::batch`).
        let entry = tramp + batch::AGENT_OFFSET;
        agent
            .remote
            .set_agent(entry, entry + batch::AGENT_TRAP as u64);
    } else {
        agent.remote.set_insn(tramp);
    }
}

/// A zombie: make the fresh vessel end the way the process did.
fn become_zombie(agent: &mut Agent, status: i32, comm: &str, insn: u64) -> Result<()> {
    let pid = agent.pid;
    agent.set_comm_at(256, comm)?;
    let mut regs = ptrace::get_regs(pid).map_err(|e| Error::sys(pid, "PTRACE_GETREGS", e))?;
    regs.rip = insn;
    regs.orig_rax = u64::MAX;
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status) as u64;
        agent.sigaction_set_as("rt_sigaction(SIG_DFL)", sig as u32, [0; 4])?;
        agent.setrlimit(libc::RLIMIT_CORE, 0, 0)?;
        (regs.rax, regs.rdi, regs.rsi) = (libc::SYS_kill as u64, pid as u64, sig);
        ptrace::set_sigmask(pid, 0).map_err(|e| Error::sys(pid, "PTRACE_SETSIGMASK", e))?;
    } else {
        (regs.rax, regs.rdi) = (
            libc::SYS_exit_group as u64,
            libc::WEXITSTATUS(status) as u64,
        );
    }
    ptrace::set_regs(pid, &regs).map_err(|e| Error::sys(pid, "PTRACE_SETREGS", e))?;
    // The mask the vessel had before cairn was pinned to one CPU.
    ktask::attrs::restore_affinity(pid, None, crate::sys::sched::unpinned().as_deref())?;
    ptrace::detach(pid, 0).map_err(|e| Error::sys(pid, "PTRACE_DETACH", e))?;
    for _ in 0..2000 {
        if procfs::read_stat(pid).is_ok_and(|s| s.state == 'Z') {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Err(Error::Restore(format!(
        "pid {pid}: did not become a zombie"
    )))
}

/// Makes the first vessel, a copy of cairn, drop all of cairn's memory
/// but the mapping `keep` (which holds the syscall instruction injected
/// calls run through) and its scratch page, and unregister cairn's rseq
/// area, before it forks anything. Each fork copies the parent's mappings
/// and links every anonymous one to the anon_vma of each of its ancestors
/// (the kernel reuses none while the ancestors still map it): a chain of
/// N vessels that each held cairn's ~100 mappings cost O(N^2) in the
/// kernel at every clone and every munmap (66 s for 1,000 processes).
/// With two mappings left, and each child replacing its copy of the
/// scratch page by a fresh one, a clone costs the same at any depth.
fn shrink_vessel(agent: &mut Agent, keep: (u64, u64)) -> Result<()> {
    let cfg = crate::kinds::task::rseq_config(agent)?;
    if cfg.rseq_abi_pointer != 0 {
        // Unregistered here, so that no vessel forked from this one has
        // it either (the area is about to go).
        agent.rseq(
            "rseq unregister",
            cfg.rseq_abi_pointer,
            cfg.rseq_abi_size,
            1,
            cfg.signature,
        )?;
    }
    let mut kept = [keep, (agent.scratch, agent.scratch + 4096)];
    kept.sort();
    let mut from = 0u64;
    for (start, end) in kept.into_iter().chain([(TASK_SIZE, TASK_SIZE)]) {
        if start > from {
            agent.munmap_as("cairn's memory", from, start - from)?;
        }
        from = from.max(end);
    }
    Ok(())
}

/// Phases 1 and 2, in tree order: every process of the tree, with its
/// pid, parent, session and process group, and its memory. The root's
/// vessel is a copy of cairn that drops all of it; every other process is
/// forked inside its parent once the parent's memory is back, so that
/// what they shared copy-on-write at dump is shared again
/// (`memory::cow`). Protections, advice and the mm fields follow in
/// [`finish_memory`], once the children are forked.
fn create_tree(
    img: &Images,
    vessels: &mut Vessels,
    force_last_pid: bool,
    idx: &FilesIndex,
    shm: &mut memory::ShmObjects,
) -> Result<(Vec<Proc>, remote::VesselState)> {
    let own_insn = remote::find_syscall_insn(task::getpid())?;
    // The mapping that holds the syscall instruction: the only part of
    // cairn the first vessel keeps (see `shrink_vessel`).
    let insn_vma = procfs::read_maps(task::getpid())?
        .iter()
        .find(|m| (m.start..m.end).contains(&own_insn))
        .map(|m| (m.start, m.end))
        .ok_or_else(|| {
            Error::Restore(format!(
                "no mapping holds cairn's syscall instruction {own_insn:#x}"
            ))
        })?;
    let owners = PageOwners::new(img);
    let cow = CowPlan::new(img, &owners)?;
    let opts = VESSEL_OPTIONS;
    let mut procs: Vec<Proc> = Vec::new();
    // Index in `procs` by pid, and the process group leaders.
    let mut by_pid: HashMap<i32, usize> = HashMap::new();
    let pids: std::collections::HashSet<u32> = img.pstree.entries.iter().map(|e| e.pid).collect();
    // The restorer area: free in every image and in the first vessel, so
    // that each child inherits it from its parent.
    let mut area = 0u64;
    // The signal dispositions and resource limits every vessel starts
    // with: the first one's, inherited by every fork (nothing changes
    // them before phase 4).
    let mut inherited = remote::VesselState::unknown();
    for (i, e) in img.pstree.entries.iter().enumerate() {
        let pid = e.pid as i32;
        let core = &img.cores[i];
        if i == 0 {
            let v = spawn_vessel(pid, force_last_pid, vessels_dumpable()?)?;
            vessels.add(v);
            inject::seize_and_stop(v, opts).map_err(|e| {
                Error::sys(v, "seize vessel", ptrace::explain_seize_error(v, e, None))
            })?;
            ptrace::set_sigmask(v, u64::MAX).map_err(|e| Error::sys(v, "PTRACE_SETSIGMASK", e))?;
        } else {
            let pi = by_pid
                .get(&(e.ppid as i32))
                .copied()
                .ok_or_else(|| Error::Restore(format!("pid {pid}: parent {} missing", e.ppid)))?;
            let exit_signal = if core.exit_signal == 0 {
                libc::SIGCHLD as u64
            } else {
                core.exit_signal as u64
            };
            // Sharing with the parent is made by clone itself; with another
            // process it is not supported (refused in preflight).
            let mut flags = 0u64;
            if core.files_shared_with != 0 {
                flags |= libc::CLONE_FILES as u64;
            }
            if core.fs_shared_with != 0 {
                flags |= libc::CLONE_FS as u64;
            }
            clone_with_tid(
                &mut procs[pi].agents[0],
                flags,
                exit_signal,
                pid,
                work_mask(core),
            )?;
            vessels.add(pid);
        }
        let insn = if i == 0 { own_insn } else { area };
        let remote = Remote::new(pid, insn).map_err(|e| Error::sys(pid, "PTRACE_GETREGS", e))?;
        let mut agent = Agent {
            remote,
            pid,
            scratch: 0,
            scratch_len: 4096,
        };
        if i != 0 {
            use_tramp(&mut agent, area, core);
        }
        if i == 0 {
            // A small page for clone3 arguments and the like.
            let rw = libc::PROT_READ | libc::PROT_WRITE;
            agent.scratch = agent.mmap_anon("scratch page", 0, 4096, rw, libc::MAP_PRIVATE)?;
            inherited = remote::VesselState::read(&mut agent)?;
            shrink_vessel(&mut agent, insn_vma)?;
            area = tree_area(img, pid)?;
        } else {
            // The parent's restorer area, inherited.
            agent.scratch = area + 4096;
            agent.scratch_len = SCRATCH_LEN;
        }
        if let Some(a) = core.attrs.as_ref() {
            crate::kinds::cgroup::restore(pid, &a.cgroup, &core.cgroup_dirs)?;
        }
        crate::kinds::cgroup::restore_v1(pid, &core.cgroup_v1)?;
        ktask::restore_session(&mut agent, e.pid, e.pgid, e.sid, pids.contains(&e.pgid))?;
        let zombie = is_zombie(core);
        if zombie {
            become_zombie(&mut agent, core.exit_status, &core.comm, insn)?;
        }
        by_pid.insert(pid, procs.len());
        procs.push(Proc {
            i,
            pid,
            zombie,
            agents: vec![agent],
            tramp: 0,
        });
        if !zombie {
            let k = procs.len() - 1;
            let parent_mm = by_pid
                .get(&(e.ppid as i32))
                .and_then(|&pi| img.mms[procs[pi].i].as_ref());
            restore_memory(
                img,
                &mut procs[k],
                idx,
                shm,
                &owners,
                &cow,
                area,
                parent_mm.filter(|_| i != 0),
            )?;
        }
    }
    Ok((procs, inherited))
}

/// An address for the restorer area that no VMA of any image and nothing
/// in the first vessel `pid` (shrunk) takes.
fn tree_area(img: &Images, pid: i32) -> Result<u64> {
    let mut taken: Vec<(u64, u64)> = (img.mms.iter().flatten())
        .flat_map(|mm| mm.vmas.iter().map(|v| (v.start, v.end)))
        .collect();
    taken.extend(img.mms.iter().flatten().flat_map(memory::aio::ranges));
    taken.extend(procfs::read_maps(pid)?.iter().map(|m| (m.start, m.end)));
    memory::free_area(AREA, &taken).ok_or_else(|| {
        Error::Restore(format!(
            "pid {pid}: no address range is free for the restorer in every process of the tree"
        ))
    })
}

/// What each process keeps of its parent's memory when it is forked
/// from it (`memory::cow`), by index in the images, and what each
/// parent must populate for its children.
struct CowPlan {
    inherit: Vec<memory::cow::Inherit>,
    populate: Vec<Vec<(u64, u64)>>,
}

impl CowPlan {
    fn new(img: &Images, owners: &PageOwners) -> Result<CowPlan> {
        let n = img.pstree.entries.len();
        let index: HashMap<u32, usize> = (img.pstree.entries.iter().enumerate())
            .map(|(i, e)| (e.pid, i))
            .collect();
        let mut inherit = vec![memory::cow::Inherit::default(); n];
        let mut populate: Vec<Vec<(u64, u64)>> = vec![Vec::new(); n];
        let mut pages = PageCompare::default();
        for (i, e) in img.pstree.entries.iter().enumerate().skip(1) {
            let Some(&pi) = index.get(&e.ppid) else {
                continue;
            };
            let (Some(mm), Some(pmm)) = (img.mms[i].as_ref(), img.mms[pi].as_ref()) else {
                continue;
            };
            let mine = owners.own_runs(img, &format!("pid:{}", e.pid));
            let theirs = owners.own_runs(img, &format!("pid:{}", e.ppid));
            let inh = memory::cow::plan(mm, pmm, mine, theirs, &mut |x, y| pages.same(img, x, y));
            populate[pi].extend(inh.skip.iter().copied());
            inherit[i] = inh;
        }
        let populate = populate.into_iter().map(memory::cow::union).collect();
        Ok(CowPlan { inherit, populate })
    }
}

/// Compares two pages of the chain's page stores by their bytes (a zero
/// page reads as zeros), keeping the last chunk read on each side.
#[derive(Default)]
struct PageCompare {
    chunks: [Option<CachedChunk>; 2],
}

/// A decompressed chunk and its (layer, chunk) key.
type CachedChunk = ((usize, u32), Vec<u8>);

impl PageCompare {
    /// The page at `src` (side `k` of the cache); `None` if unreadable.
    fn page(&mut self, img: &Images, k: usize, src: memory::cow::PageSrc) -> Option<Vec<u8>> {
        let ps = crate::sys::PAGE_SIZE as usize;
        let Some((layer, chunk, off)) = src else {
            return Some(vec![0; ps]);
        };
        let hit = self.chunks[k]
            .as_ref()
            .is_some_and(|(key, _)| *key == (layer, chunk));
        if !hit {
            let store = &img.chain.layers.get(layer)?.store;
            // Post-copy: the chunk may not be in the (sparse) file yet.
            memory::lazy::ensure_read(store.path(), chunk).ok()?;
            let data = store.read_chunk(chunk).ok()?;
            self.chunks[k] = Some(((layer, chunk), data));
        }
        let (_, data) = self.chunks[k].as_ref()?;
        let off = usize::try_from(off).ok()?;
        data.get(off..off.checked_add(ps)?).map(<[u8]>::to_vec)
    }

    /// Whether the pages at `x` and `y` hold the same bytes (an unreadable
    /// page is not the same: it is written, and its read fails then).
    fn same(&mut self, img: &Images, x: memory::cow::PageSrc, y: memory::cow::PageSrc) -> bool {
        match (self.page(img, 0, x), self.page(img, 1, y)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }
}

/// The pagemaps by owner: a process's own by its owner name, and those of
/// shared memory, which every process gets (so that finding a process's
/// maps does not cost the number of processes).
struct PageOwners<'a> {
    own: HashMap<&'a str, usize>,
    shared: Vec<usize>,
}

impl<'a> PageOwners<'a> {
    fn new(img: &'a Images) -> PageOwners<'a> {
        let (mut own, mut shared) = (HashMap::new(), Vec::new());
        for (k, m) in img.pagemaps.iter().enumerate() {
            if m.owner.starts_with("pid:") {
                own.insert(m.owner.as_str(), k);
            } else {
                shared.push(k);
            }
        }
        PageOwners { own, shared }
    }

    /// The runs of process `owner` ("pid:N"); none if it has no pages.
    fn own_runs<'b>(&self, img: &'b Images, owner: &str) -> &'b [Resolved] {
        self.own
            .get(owner)
            .map_or(&[][..], |&k| img.resolved[k].as_slice())
    }

    /// The maps of process `owner` ("pid:N") and of all shared memory, in
    /// the order of the images.
    fn maps_of<'b>(&self, img: &'b Images, owner: &str) -> Vec<(&'b str, &'b [Resolved])> {
        let mut ks: Vec<usize> = self.own.get(owner).copied().into_iter().collect();
        ks.extend(&self.shared);
        ks.sort_unstable();
        ks.into_iter()
            .map(|k| (img.pagemaps[k].owner.as_str(), img.resolved[k].as_slice()))
            .collect()
    }
}

/// Phase 2: the address space of one process, but its protections,
/// advice and mm fields ([`finish_memory`], after its children are
/// forked). The first process drops cairn's memory and maps the restorer
/// area at `area`; any other (`parent`: its parent's image) was forked
/// from its parent and adopts what it keeps of its memory.
#[allow(clippy::too_many_arguments)]
fn restore_memory(
    img: &Images,
    p: &mut Proc,
    idx: &FilesIndex,
    shm: &mut memory::ShmObjects,
    owners: &PageOwners,
    cow: &CowPlan,
    area: u64,
    parent: Option<&MmEntry>,
) -> Result<()> {
    let Some(mm) = img.mms[p.i].as_ref() else {
        return Ok(());
    };
    let pid = p.pid;
    let agent = &mut p.agents[0];
    let sys = |e: std::io::Error, what: &str| Error::sys(pid, what.to_string(), e);
    // Drop what the vessel inherited from cairn.
    let cfg = crate::kinds::task::rseq_config(agent)?;
    if cfg.rseq_abi_pointer != 0 {
        agent.rseq(
            "rseq unregister",
            cfg.rseq_abi_pointer,
            cfg.rseq_abi_size,
            1,
            cfg.signature,
        )?;
    }
    // A table shared with the parent was emptied there already (and may
    // hold its shared-memory keepers now).
    if img.cores[p.i].files_shared_with == 0 {
        agent.close_range(0, u32::MAX as u64)?;
    }
    let inh = &cow.inherit[p.i];
    p.tramp = area;
    let shm = match parent {
        None => {
            let rwx = libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC;
            let fl = libc::MAP_PRIVATE | memory::FIXED_NOREPLACE as i32;
            let tramp = agent.mmap_anon("restorer area", area, AREA, rwx, fl)?;
            let mut code = inject::SYSCALL_TRAP.to_vec();
            code.resize(batch::AGENT_OFFSET as usize, 0xcc);
            code.extend_from_slice(&batch::AGENT_CODE);
            mem::vm_write_all(pid, tramp, &code).map_err(|e| sys(e, "write trampoline"))?;
            let core = &img.cores[p.i];
            ptrace::set_sigmask(pid, work_mask(core)).map_err(|e| sys(e, "PTRACE_SETSIGMASK"))?;
            use_tramp(agent, tramp, core);
            agent.scratch = tramp + 4096;
            agent.scratch_len = SCRATCH_LEN;
            // Nothing of cairn stays mapped.
            agent.munmap_as("below the restorer area", 0, tramp)?;
            agent.munmap_as(
                "above the restorer area",
                tramp + AREA,
                TASK_SIZE - (tramp + AREA),
            )?;
            memory::restore_vmas(agent, mm, &|id| idx.path(id), shm)?
        }
        Some(pmm) => {
            memory::cow::adopt(agent, mm, pmm, inh, (area, area + AREA))?;
            let rest = memory::cow::pieces(mm, inh);
            memory::restore_vmas(agent, &rest, &|id| idx.path(id), shm)?
        }
    };
    let own_name = format!("pid:{pid}");
    let own = memory::cow::without(owners.own_runs(img, &own_name), &inh.skip);
    let maps: Vec<(&str, &[Resolved])> = owners
        .maps_of(img, &own_name)
        .into_iter()
        .map(|(o, r)| {
            if o == own_name {
                (o, own.as_slice())
            } else {
                (o, r)
            }
        })
        .collect();
    let stores: Vec<&PageStoreReader> = img.chain.layers.iter().map(|l| &l.store).collect();
    let t = Instant::now();
    // lazy: a post-copy restore leaves a leaf's anonymous pages to its pager.
    let leaf = !img.pstree.entries.iter().any(|e| e.ppid == pid as u32);
    let input = memory::lazy::PageInput {
        mm,
        maps: &maps,
        stores: &stores,
        shm: &shm,
    };
    let pages = memory::lazy::restore_pages(agent, input, leaf)?;
    let populated = memory::cow::populate_zeros(
        pid,
        mm,
        owners.own_runs(img, &own_name),
        &cow.populate[p.i],
        &inh.skip,
    )?;
    crate::stats::add(crate::stats::Time::Memory, t.elapsed());
    crate::progress::tasks_inc(1);
    crate::progress::pages_inc(crate::progress::data_bytes(maps.iter().map(|m| m.1)));
    info!(
        "pid {pid}: pages written in {:?} ({pages}); {} shared copy-on-write with the parent, \
         {populated} zero pages populated for children",
        t.elapsed(),
        inh.shared_pages()
    );
    drop(shm);
    memory::aio::restore_rings(agent, mm)?;
    // Before any child is forked from it.
    memory::lock_vmas(agent, mm)
}

/// The rest of phase 2, once the children are forked: protections,
/// advice, the mm fields (exe link, auxv) and mlockall (their check is
/// [`FlagsCheck`]'s).
fn finish_memory(img: &Images, p: &mut Proc, idx: &FilesIndex) -> Result<()> {
    let Some(mm) = img.mms[p.i].as_ref() else {
        return Ok(());
    };
    let pid = p.pid;
    let agent = &mut p.agents[0];
    memory::finish_unlocked_vmas(agent, mm)?;
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
        memory::set_mm_map(agent, mm, u32::MAX as u64)?;
    } else {
        let exe_fd = agent.open(&exe, libc::O_RDONLY | libc::O_CLOEXEC)?;
        memory::set_mm_map(agent, mm, exe_fd)?;
        agent.close(exe_fd)?;
    }
    memory::restore_def_flags(agent, mm)?;
    Ok(())
}

/// Phase 4: attributes, threads, pending signals, credentials.
fn restore_attrs(
    img: &Images,
    p: &mut Proc,
    has_zombie_child: bool,
    idx: &FilesIndex,
    inherited: &remote::VesselState,
) -> Result<()> {
    let core = &img.cores[p.i];
    let pid = p.pid;
    let agent = &mut p.agents[0];
    files::restore_fs(agent, idx.path(core.cwd_id), idx.path(core.root_id))?;
    // The per-process objects (kinds::task::objects), in list order:
    // those of this phase now, the others once the threads exist. The
    // dispositions the vessel has already are not set again.
    let mut warnings = Vec::new();
    let mut known = *inherited;
    for k in ktask::PROC_KINDS {
        if k.phase() == ktask::Phase::BeforeThreads {
            let mut calls = remote::Known {
                agent: &mut *agent,
                known: &mut known,
            };
            k.restore(&mut calls, core, &mut warnings)?;
        }
    }
    ktask::attrs::restore_early(agent, core)?;
    for w in warnings.drain(..) {
        warn!("pid {pid}: {w}");
    }
    if has_zombie_child {
        // The SIGCHLD of a zombie recreated for it was delivered long
        // before the dump: drop the new one.
        let _ = agent.sigtimedwait_now(1u64 << (libc::SIGCHLD - 1));
    }
    ktask::restore_pending(agent, pid, pid, &core.shared_pending, true)?;
    let tids: Vec<i32> = core.threads[1..].iter().map(|t| t.tid as i32).collect();
    clone_threads(&mut p.agents[0], &tids, work_mask(core))?;
    for &tid in &tids {
        let remote = Remote::new(tid, p.tramp).map_err(|e| Error::sys(tid, "PTRACE_GETREGS", e))?;
        let mut agent = Agent {
            remote,
            pid,
            scratch: p.tramp + 4096,
            scratch_len: SCRATCH_LEN,
        };
        use_tramp(&mut agent, p.tramp, core);
        p.agents.push(agent);
    }
    for (a, th) in p.agents.iter_mut().zip(&core.threads) {
        // Scheduling first: a real-time policy clears the timer slack,
        // which the thread's batch sets and reads back.
        ktask::attrs::restore_thread(a, th.attrs.as_ref())?;
        ktask::restore_thread_attrs(a, th)?;
        ktask::restore_pending(a, pid, th.tid as i32, &th.pending, false)?;
    }
    for k in ktask::PROC_KINDS {
        if k.phase() == ktask::Phase::AfterThreads {
            k.restore(&mut p.agents[0], core, &mut warnings)?;
        }
    }
    for w in warnings {
        warn!("pid {pid}: {w}");
    }
    let mut changed = vec![false; p.agents.len()];
    if let Some(c) = core.creds.as_ref() {
        let now = procfs::read_status(pid)?;
        for (a, ch) in p.agents.iter_mut().zip(changed.iter_mut()) {
            *ch = ktask::restore_creds(a, c, &now)?;
        }
    }
    ktask::attrs::restore_late(&mut p.agents, core, &changed)?;
    // Last: after this, the filters apply (to everything but cairn's own
    // injected calls, for which they are suspended until the detach).
    ktask::attrs::restore_seccomp(&mut p.agents, core, VESSEL_OPTIONS)?;
    Ok(())
}

/// Phase 5: remove the restorer area through a syscall instruction of the
/// restored vDSO, then registers and masks of every thread.
fn finish(img: &Images, p: &mut Proc) -> Result<()> {
    let core = &img.cores[p.i];
    let pid = p.pid;
    let insn = remote::find_syscall_insn(pid)?;
    if insn >= p.tramp && insn < p.tramp + AREA {
        return Err(Error::Restore(format!(
            "pid {pid}: no syscall instruction outside the restorer area"
        )));
    }
    p.agents[0].remote.set_insn(insn);
    p.agents[0].munmap_as("restorer area", p.tramp, AREA)?;
    let unpinned = crate::sys::sched::unpinned();
    for (a, th) in p.agents.iter_mut().zip(&core.threads) {
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
        // No more calls in it: off cairn's CPU.
        ktask::attrs::restore_affinity(tid, th.attrs.as_ref(), unpinned.as_deref())?;
    }
    Ok(())
}

/// The check that every restored mapping has the VmFlags saved
/// (`memory::verify_flags`), run on a thread of its own from the end of
/// the memory phase on, beside the files and attributes phases, and
/// joined before the go: reading and parsing the smaps of every process
/// was a tenth of a tree's restore on cairn's one pinned CPU
/// (`crate::sys::sched::pin_here`); this thread takes the mask cairn had
/// before and runs wherever a CPU is free. Nothing after the memory phase
/// changes a saved mapping (what maps later, the restorer area and
/// packet rings, is not checked), and mlockall(MCL_FUTURE) affects only
/// later mappings, so the check sees what it saw at its old place.
struct FlagsCheck<'scope> {
    worker: Option<std::thread::ScopedJoinHandle<'scope, Result<()>>>,
    /// The answer, where no thread could be started and the check ran at once.
    done: Option<Result<()>>,
}

impl<'scope> FlagsCheck<'scope> {
    fn start<'env>(
        s: &'scope std::thread::Scope<'scope, 'env>,
        img: &'env Images,
        procs: &[Proc],
    ) -> FlagsCheck<'scope> {
        let work: Vec<(i32, usize)> = (procs.iter())
            .filter(|p| !p.zombie && img.mms[p.i].is_some())
            .map(|p| (p.pid, p.i))
            .collect();
        // `CAIRN_TEST_VERIFY_FLAG=F`, for tests: the last process's first
        // VMA is expected with the extra flag F, so that the check fails
        // late, after the files and attributes phases.
        let test_mm = std::env::var("CAIRN_TEST_VERIFY_FLAG").ok().and_then(|f| {
            let mut mm = img.mms[work.last()?.1].clone()?;
            mm.vmas.first_mut()?.vm_flags.push(f);
            Some(mm)
        });
        let check = move || {
            (work.iter().enumerate()).try_for_each(|(k, &(pid, i))| {
                let mm = match &test_mm {
                    Some(t) if k + 1 == work.len() => t,
                    _ => img.mms[i].as_ref().expect("a live process's mm"),
                };
                memory::verify_flags(pid, mm)
            })
        };
        let unpinned = crate::sys::sched::unpinned();
        let on_thread = check.clone();
        let spawned = std::thread::Builder::new()
            .name("verify-flags".into())
            .spawn_scoped(s, move || {
                crate::sys::sched::unpin_self(unpinned.as_deref());
                on_thread()
            });
        match spawned {
            Ok(w) => FlagsCheck {
                worker: Some(w),
                done: None,
            },
            Err(e) => {
                info!("restore: VmFlags checked on cairn's thread ({e})");
                FlagsCheck {
                    worker: None,
                    done: Some(check()),
                }
            }
        }
    }

    /// The check's answer: the first process whose mappings differ.
    fn join(mut self) -> Result<()> {
        if let Some(r) = self.done.take() {
            return r;
        }
        match self.worker.take().map(|w| w.join()) {
            Some(Ok(r)) => r,
            Some(Err(p)) => std::panic::resume_unwind(p),
            None => Ok(()),
        }
    }
}

/// Restores the whole tree and leaves it running. Returns the root pid.
/// `fixups` says where files are opened from instead of their saved paths
/// (moved executable, recreated deleted files); the deleted files are
/// unlinked once every fd table is in place. The scope holds the thread
/// of [`FlagsCheck`], which reads the images beside cairn's thread; a
/// restore that fails before it is joined waits for it here.
fn restore_tree(img: &Images, args: &RestoreOptions, fixups: &mut Fixups) -> Result<i32> {
    std::thread::scope(|s| restore_tree_in(s, img, args, fixups))
}

fn restore_tree_in<'scope, 'env>(
    s: &'scope std::thread::Scope<'scope, 'env>,
    img: &'env Images,
    args: &RestoreOptions,
    fixups: &mut Fixups,
) -> Result<i32> {
    let t0 = Instant::now();
    let ptrace0 = ptrace::counts();
    // cairn and every vessel (which inherit its mask) take turns on one
    // CPU until the go: each ptrace stop and answer is then a switch there,
    // not a wake-up of another CPU. Each thread gets its own mask back
    // in `finish`, cairn when this returns.
    let _pin = match crate::sys::sched::pin_here() {
        Ok(p) => {
            info!(
                "restore: cairn and the vessels on CPU {} until the go",
                p.cpu
            );
            Some(p)
        }
        Err(e) => {
            info!("restore: not pinned to one CPU ({e})");
            None
        }
    };
    let mut idx = FilesIndex::new(&img.files);
    idx.redirect = fixups.redirect.clone();
    let mut vessels = Vessels::new();
    // Until the tree runs, vessels orphaned by a failure come to cairn,
    // which reaps them (instead of init, which may take its time).
    let _ = task::set_child_subreaper(true);
    let force_last_pid = args.pid_restore.as_deref() == Some("ns_last_pid");
    crate::kinds::sysv::prepare(&img.files.sysv_shm, img.mms.iter().flatten())?;
    let mut shm = memory::ShmObjects::new(img.mms.iter().flatten());
    crate::progress::tasks_begin(
        "restore: processes",
        Some(img.mms.iter().flatten().count() as u64),
    );
    crate::progress::pages_begin(
        "restore: pages",
        crate::progress::data_bytes(img.resolved.iter().map(|r| r.as_slice())),
    );
    let (mut procs, inherited) = create_tree(img, &mut vessels, force_last_pid, &idx, &mut shm)?;
    crate::progress::finish();
    let mut phases = vec![("create", t0.elapsed())];
    // The ptrace stops of each phase, for the -v line.
    let mut phase_stops = vec![ptrace::counts().1 - ptrace0.1];
    let mut lap = |name: &'static str, phases: &mut Vec<_>| {
        let at = t0.elapsed();
        let prev: std::time::Duration = phases.iter().map(|&(_, d)| d).sum();
        phases.push((name, at.saturating_sub(prev)));
        let before: u64 = phase_stops.iter().sum();
        phase_stops.push(ptrace::counts().1 - ptrace0.1 - before);
    };
    for p in procs.iter_mut().filter(|p| !p.zombie) {
        finish_memory(img, p, &idx)?;
    }
    let flags_check = FlagsCheck::start(s, img, &procs);
    let by_pid: HashMap<i32, usize> = procs.iter().enumerate().map(|(k, p)| (p.pid, k)).collect();
    for (_, (owner, fd)) in shm.owners.drain() {
        if let Some(&k) = by_pid.get(&owner) {
            procs[k].agents[0].close_as("shared memory keeper", fd)?;
        }
    }
    crate::kinds::sysv::finish(&img.files.sysv_shm)?;
    lap("memory", &mut phases);
    let mut shared = SharedFiles::default();
    crate::kinds::external::provide(&img.files, &args.inherit_fds, &mut shared)?;
    // peercred: unix sockets first, each connection made by the process
    // (or a helper with the pid) that made it (SO_PEERCRED).
    let calls = (procs.iter_mut().filter(|p| !p.zombie))
        .map(|p| {
            (
                p.pid,
                &mut p.agents[0] as &mut (dyn crate::remote::Calls + 'static),
            )
        })
        .collect();
    shared.unix = crate::kinds::unix::restore_as(
        &img.files,
        &mut shared,
        calls,
        args.ext_unix_sk_lose_peercred,
    )?;
    // Unix sockets and terminals are rebuilt in cairn; the vessels fetch them.
    shared.prepare(&img.files, args.shell_job)?;
    for p in procs.iter_mut().filter(|p| !p.zombie) {
        if img.cores[p.i].files_shared_with != 0 {
            continue;
        }
        if let Some(t) = img.fdtables[p.i].as_ref() {
            files::restore_fds(&mut p.agents[0], t, &idx, &mut shared)?;
        }
    }
    // Packet fanout groups: every member exists now.
    shared.fanout.join()?;
    // pktring: packet rings are mapped again from their restored sockets.
    for p in procs.iter_mut().filter(|p| !p.zombie) {
        let with = img.cores[p.i].files_shared_with;
        let table = match with {
            0 => img.fdtables[p.i].as_ref(),
            w => (img.pstree.entries.iter().position(|e| e.pid == w))
                .and_then(|k| img.fdtables[k].as_ref()),
        };
        if let (Some(mm), Some(t)) = (img.mms[p.i].as_ref(), table) {
            crate::kinds::packet::map_rings(&mut p.agents[0], mm, t, &idx)?;
        }
    }
    // Descriptors in flight in unix sockets: every description exists now.
    shared.unix.send_in_flight(&shared.descs)?;
    // The keepers, a batch per process.
    let mut keepers: HashMap<i32, Vec<(String, batch::Syscall)>> = HashMap::new();
    for (owner, fd) in std::mem::take(&mut shared.keepers) {
        let c = batch::Syscall::new(libc::SYS_close, &[fd]);
        keepers
            .entry(owner)
            .or_default()
            .push(("close keeper".into(), c));
    }
    for (owner, closes) in keepers {
        if let Some(&k) = by_pid.get(&owner) {
            // close releases the fd whatever the file's flush answers
            // (overlayfs on 6.1: EINVAL for an O_DIRECT its upper layer
            // refuses, as the original's own close would): only EBADF
            // means there was no keeper. A batch stops at a failed call:
            // the closes after it go on.
            let a = &mut procs[k].agents[0];
            let tid = a.tid();
            let mut rest: &[(String, batch::Syscall)] = &closes;
            while !rest.is_empty() {
                let list: Vec<batch::Syscall> = rest.iter().map(|c| c.1.clone()).collect();
                match a.syscalls(&list)? {
                    Ok(_) => break,
                    Err(f) if f.error.raw_os_error() != Some(libc::EBADF) => {
                        rest = &rest[f.index + 1..];
                    }
                    Err(f) => {
                        return Err(Error::sys(
                            tid,
                            format!("remote {}", rest[f.index].0),
                            f.error,
                        ))
                    }
                }
            }
        }
    }
    shared.unix = Default::default();
    for p in procs.iter_mut().filter(|p| !p.zombie) {
        shared.tty.set_controlling(&mut p.agents[0])?;
    }
    fixups.ghosts.unlink_all();
    // File locks: every fd is in place and no keeper left to close.
    let tables: Vec<_> = (procs.iter())
        .map(|p| {
            (
                p.pid,
                img.cores[p.i].files_shared_with,
                img.fdtables[p.i].as_ref(),
            )
        })
        .collect();
    let mut calls: HashMap<i32, &mut dyn crate::remote::Calls> = (procs.iter_mut())
        .filter(|p| !p.zombie)
        .map(|p| (p.pid, &mut p.agents[0] as &mut dyn crate::remote::Calls))
        .collect();
    crate::kinds::locks::restore(&img.files.locks, &tables, &idx, &mut calls)?;
    crate::kinds::anonfd::inotify::finish_removed(&img.files, &tables, &mut calls)?;
    drop(calls);
    lap("files", &mut phases);
    let zombie_parents: std::collections::HashSet<u32> = img
        .pstree
        .entries
        .iter()
        .zip(&img.cores)
        .filter(|(_, c)| is_zombie(c))
        .map(|(e, _)| e.ppid)
        .collect();
    for p in procs.iter_mut().filter(|p| !p.zombie) {
        let hz = zombie_parents.contains(&(p.pid as u32));
        restore_attrs(img, p, hz, &idx, &inherited)?;
    }
    // Every process is in its cwd: removed directories go again.
    fixups.ghosts.remove_dirs();
    // Who gets SIGIO: once every process and thread exists.
    files::restore_owners(
        &img.files,
        procs
            .iter()
            .filter(|p| !p.zombie)
            .filter_map(|p| img.fdtables[p.i].as_ref().map(|t| (p.pid, t))),
    )?;
    lap("attributes", &mut phases);
    for p in procs.iter_mut().filter(|p| !p.zombie) {
        finish(img, p)?;
    }
    flags_check.join()?;
    // A job that shared its shell's process group (not one of the tree's)
    // is in cairn's, which takes the shell's place.
    let root = &img.pstree.entries[0];
    let fg = if img.pstree.entries.iter().any(|e| e.pid == root.pgid) {
        root.pgid as i32
    } else {
        rustix::process::getpgrp().as_raw_nonzero().get()
    };
    shared.tty.go(fg)?;
    // Restored connections leave repair mode (still behind the network
    // lock, which the caller lifts once the tree runs).
    shared.inet.go_live()?;
    if let Some(before) = &fixups.oracle {
        let tree: Vec<_> = procs
            .iter()
            .map(|p| (p.pid, img.pstree.entries[p.i].ppid as i32, p.zombie))
            .collect();
        crate::oracle::check_restored(before, &tree, &fixups.volatile)?;
    }
    // pair: a backup is held here, every task in place and traced, until
    // its supervisor releases it (`crate::pair::hold`; a no-op otherwise).
    crate::pair::hold::point(
        procs[0].pid,
        fixups.late.take(),
        img.store(),
        &fixups.volatile,
    )?;
    // Everyone is ready: let them go, children before parents, leaders
    // last in each process.
    for p in procs.iter().rev().filter(|p| !p.zombie) {
        let core = &img.cores[p.i];
        if core.state.enum_value() == Ok(TaskState::TASK_STOPPED) {
            let sig = ktask::attrs::stop_signal(core);
            task::kill(p.pid, sig).map_err(|e| Error::sys(p.pid, format!("kill({sig})"), e))?;
        }
        for a in p.agents.iter().rev() {
            ptrace::detach(a.tid(), 0).map_err(|e| Error::sys(a.tid(), "PTRACE_DETACH", e))?;
        }
    }
    // A terminal stop signal is discarded in an orphaned process group
    // (which the restored group may now be, under cairn): then SIGSTOP.
    for p in procs.iter().filter(|p| !p.zombie) {
        let core = &img.cores[p.i];
        if core.state.enum_value() != Ok(TaskState::TASK_STOPPED)
            || ktask::attrs::stop_signal(core) == libc::SIGSTOP
        {
            continue;
        }
        let deadline = Instant::now() + std::time::Duration::from_millis(500);
        while Instant::now() < deadline && !procfs::read_stat(p.pid).is_ok_and(|s| s.state == 'T') {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if !procfs::read_stat(p.pid).is_ok_and(|s| s.state == 'T') {
            warn!(
                "pid {}: signal {} did not stop it again (an orphaned process group?): \
                 stopped by SIGSTOP instead",
                p.pid, core.stop_signal
            );
            task::kill(p.pid, libc::SIGSTOP).map_err(|e| Error::sys(p.pid, "SIGSTOP", e))?;
        }
    }
    vessels.release();
    let _ = task::set_child_subreaper(false);
    lap("finish", &mut phases);
    crate::stats::restored(img, &phases);
    info!(
        "restored {} processes in {:?} ({})",
        procs.len(),
        t0.elapsed(),
        (phases.iter().zip(&phase_stops))
            .map(|((n, d), s)| format!("{n} {d:.1?}, {s} stops"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let (req, stops) = ptrace::counts();
    let (single, batches) = inject::run_counts();
    info!(
        "ptrace: {} requests, {} stops; {single} calls with a stop each, {batches} batches; \
         injected calls: {}",
        req - ptrace0.0,
        stops - ptrace0.1,
        injected_summary()
    );
    Ok(procs[0].pid)
}

/// The injected calls of this process so far, most frequent first:
/// "N (mmap 120, mprotect 80, ...)".
fn injected_summary() -> String {
    let counts = inject::call_counts();
    let total: u64 = counts.iter().map(|c| c.1).sum();
    let each: Vec<String> = (counts.iter())
        .map(|&(nr, n)| format!("{} {n}", syscall_name(nr)))
        .collect();
    format!("{total} ({})", each.join(", "))
}

/// The name of the x86-64 syscall `nr` among those a restore injects,
/// else its number.
fn syscall_name(nr: usize) -> String {
    let known: &[(libc::c_long, &str)] = &[
        (libc::SYS_mmap, "mmap"),
        (libc::SYS_mprotect, "mprotect"),
        (libc::SYS_munmap, "munmap"),
        (libc::SYS_madvise, "madvise"),
        (libc::SYS_mremap, "mremap"),
        (libc::SYS_prctl, "prctl"),
        (libc::SYS_arch_prctl, "arch_prctl"),
        (libc::SYS_rt_sigaction, "rt_sigaction"),
        (libc::SYS_rt_sigprocmask, "rt_sigprocmask"),
        (libc::SYS_rt_sigtimedwait, "rt_sigtimedwait"),
        (libc::SYS_rt_tgsigqueueinfo, "rt_tgsigqueueinfo"),
        (libc::SYS_sigaltstack, "sigaltstack"),
        (libc::SYS_set_robust_list, "set_robust_list"),
        (libc::SYS_set_tid_address, "set_tid_address"),
        (libc::SYS_rseq, "rseq"),
        (libc::SYS_clone3, "clone3"),
        (libc::SYS_openat, "openat"),
        (libc::SYS_close, "close"),
        (libc::SYS_close_range, "close_range"),
        (libc::SYS_dup3, "dup3"),
        (libc::SYS_fcntl, "fcntl"),
        (libc::SYS_lseek, "lseek"),
        (libc::SYS_pidfd_getfd, "pidfd_getfd"),
        (libc::SYS_pidfd_open, "pidfd_open"),
        (libc::SYS_setsid, "setsid"),
        (libc::SYS_setpgid, "setpgid"),
        (libc::SYS_setrlimit, "setrlimit"),
        (libc::SYS_prlimit64, "prlimit64"),
        (libc::SYS_sched_setattr, "sched_setattr"),
        (libc::SYS_sched_setaffinity, "sched_setaffinity"),
        (libc::SYS_setpriority, "setpriority"),
        (libc::SYS_ioprio_set, "ioprio_set"),
        (libc::SYS_personality, "personality"),
        (libc::SYS_chdir, "chdir"),
        (libc::SYS_fchdir, "fchdir"),
        (libc::SYS_chroot, "chroot"),
        (libc::SYS_umask, "umask"),
        (libc::SYS_mlock2, "mlock2"),
        (libc::SYS_mlockall, "mlockall"),
        (libc::SYS_membarrier, "membarrier"),
        (libc::SYS_timer_create, "timer_create"),
        (libc::SYS_setitimer, "setitimer"),
        (libc::SYS_capset, "capset"),
        (libc::SYS_setresuid, "setresuid"),
        (libc::SYS_setresgid, "setresgid"),
        (libc::SYS_setgroups, "setgroups"),
    ];
    (known.iter())
        .find(|k| k.0 as usize == nr)
        .map_or_else(|| format!("#{nr}"), |k| k.1.to_string())
}

/// Writes the pid file: a new file with a random name, created
/// exclusively (never through a link) in the pid file's directory, then
/// renamed over the final name (a link there is replaced, not followed).
fn write_pidfile(path: &std::path::Path, pid: i32) -> Result<()> {
    crate::sys::safefs::replace_file(path, format!("{pid}\n").as_bytes(), 0o644)
        .map_err(|e| Error::io(path, e))
}

/// Checks that can refuse a restore before anything is created. `idx`
/// knows which files are checked elsewhere (saved contents, a verified
/// executable).
fn preflight(img: &Images, args: &RestoreOptions, idx: &mut FilesIndex) -> Result<()> {
    let same_boot = procfs::boot_id().ok().as_deref() == Some(img.inventory.boot_id.as_str());
    crate::kinds::exe::refuse_changed_code(&img.mms, idx, same_boot, &args.exe_dir_flag)?;
    let problems = idx.check_unchanged(same_boot);
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
    // A pid still held by a process on its way out is given a few
    // seconds to become free: a zombie (e.g. the children of a tree just
    // killed by `cairn dump`, waiting for init to reap them), or a tree
    // killed for a migration's hand-over (migrate::receiver), still
    // freeing its memory while this restore loaded its images.
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    let t = Instant::now();
    while Instant::now() < deadline
        && img
            .pstree
            .entries
            .iter()
            .any(|e| procfs::dying(e.pid as i32))
    {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    if t.elapsed() > std::time::Duration::from_millis(1) {
        info!(
            "waited {:.1} ms for the pids of processes on their way out",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    // Dumps refuse these since issue 14; older images may hold them.
    for (e, c) in img.pstree.entries.iter().zip(&img.cores) {
        if let Some(why) = shared_not_with_parent(e.ppid, c) {
            return Err(Error::Restore(format!("pid {} {why}", e.pid)));
        }
    }
    // Credentials: unprivileged, only the user cairn runs as.
    let own = ktask::OwnCreds::read()?;
    for (e, c) in img.pstree.entries.iter().zip(&img.cores) {
        if let Some(why) = c.creds.as_ref().and_then(|cr| own.refuse(e.pid, cr)) {
            return Err(Error::Restore(why));
        }
    }
    file_caps_refuse(img)?;
    crate::kinds::tty::preflight(&img.files)?;
    for e in &img.pstree.entries {
        if task::pid_exists(e.pid as i32) {
            let why = crate::error::pid_in_use(e.pid as i32, e.start_time, same_boot);
            return Err(Error::Restore(format!(
                "{why} (or restore with --pid-ns: in a new pid namespace its pids are free)"
            )));
        }
    }
    Ok(())
}

/// Why a process whose parent is `ppid` cannot be restored with the fd
/// table and fs info sharing `c` records: clone shares them only with the
/// parent that makes the process.
pub fn shared_not_with_parent(ppid: u32, c: &TaskCore) -> Option<String> {
    [
        ("fd table", c.files_shared_with),
        ("fs info", c.fs_shared_with),
    ]
    .into_iter()
    .find(|&(_, with)| with != 0 && with != ppid)
    .map(|(what, with)| {
        format!("shares its {what} with pid {with}, which is not its parent: not supported yet")
    })
}

/// Before a dump touches the tree `pids`: what `kinds::regular`
/// refuses (removed cwd or root, /proc files of other processes), and a
/// process that shares its fd table or fs info (CLONE_FILES, CLONE_FS) with another process of the
/// tree but not with its parent cannot be restored (see
/// [`shared_not_with_parent`]); refused here, naming both.
pub fn precheck_shared(pids: &[i32]) -> Result<()> {
    crate::kinds::regular::precheck_tree(pids)?;
    let live: Vec<(i32, i32)> = pids
        .iter()
        .filter_map(|&p| {
            let st = procfs::read_stat(p).ok()?;
            (st.state != 'Z' && st.state != 'X').then_some((p, st.ppid))
        })
        .collect();
    for (i, &(pid, ppid)) in live.iter().enumerate() {
        // As the dump records it: sharing with an earlier process.
        let earlier = &live[..i];
        for (what, kind) in [
            ("fd table", task::Shared::Files),
            ("fs info", task::Shared::Fs),
        ] {
            let shares = |other: i32| task::kcmp_shared(pid, other, kind).unwrap_or(false);
            if earlier.iter().any(|&(p, _)| p == ppid) && shares(ppid) {
                continue;
            }
            if let Some(&(with, _)) = earlier.iter().find(|&&(p, _)| shares(p)) {
                return Err(Error::unsupported(
                    pid,
                    format!(
                        "shares its {what} with pid {with}, which is not its parent: not \
                         supported yet"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Where files are opened from instead of their saved paths, by
/// description id, and the deleted files recreated for the restore.
struct Fixups {
    redirect: HashMap<u32, String>,
    ghosts: contents::Ghosts,
    /// The dump's oracle snapshot, with `--compare`.
    oracle: Option<crate::image::proto::KernelView>,
    /// Paths on volatile file systems, recreated or not (for the oracle:
    /// kinds::volatile).
    volatile: std::collections::HashSet<String>,
    /// pair: contents written back at the hold point (`crate::pair::hold`).
    late: Option<crate::image::proto::FileContents>,
}

/// `cairn restore`. Returns the exit code cairn should exit with.
pub fn restore(args: &RestoreOptions) -> Result<i32> {
    if args.pid_ns {
        return crate::run::pidns::restore(args);
    }
    let Some(pid) = start(args)? else {
        return Ok(0);
    };
    let st = ptrace::wait_raw(pid).map_err(|e| Error::sys(pid, "waitpid", e))?;
    Ok(if libc::WIFEXITED(st) {
        libc::WEXITSTATUS(st)
    } else {
        128 + libc::WTERMSIG(st)
    })
}

/// The restore up to the running tree: `Some(root pid)`, a child of
/// cairn, or `None` after a detached restore.
pub fn start(args: &RestoreOptions) -> Result<Option<i32>> {
    crate::image::allow_foreign_images(args.allow_foreign_images);
    crate::stats::begin("restore");
    let load = crate::stats::timer(crate::stats::Time::Load);
    let img = Images::load(&args.images_dir)?;
    drop(load);
    let oracle = crate::oracle::load(args.compare, &img.dir, img.inventory.root_pid)?;
    crate::kinds::inet::check_restore(&img.files, &img.fdtables, args.tcp_established)?;
    // Connections the dump left locked stay locked (or are locked again,
    // on another machine) until they are live; any failure from here on
    // lifts the lock.
    let mut net_lock = crate::kinds::inet::restore_lock(
        &img.files,
        img.inventory.root_pid as i32,
        &args.images_dir,
    )?;
    let saved = contents::load(&img.dir, img.store(), &img.files)?;
    let mut idx = FilesIndex::new(&img.files);
    crate::kinds::exe::plan(
        &img.mms,
        &mut idx,
        args.exe_dir.as_deref(),
        &args.exe_dir_flag,
    )?;
    if let Some(c) = &saved {
        contents::mark_checked(c, &mut idx);
    }
    let ids: std::collections::HashSet<u32> = img
        .pstree
        .entries
        .iter()
        .flat_map(|e| std::iter::once(e.pid).chain(e.threads.iter().copied()))
        .collect();
    crate::kinds::regular::mark_proc_checked(&ids, &mut idx);
    preflight(&img, args, &mut idx)?;
    let volatile = crate::kinds::volatile::check(
        img.inventory.volatile_fs.as_ref(),
        saved.as_ref(),
        img.store(),
        args.ignore_file_changes,
        &img.dir.file(crate::image::names::INVENTORY),
    )?;
    let tables = img.fdtables.iter().flatten();
    crate::kinds::external::check_inherit(&img.files, tables, &args.inherit_fds)?;
    let live: Vec<i32> = (img.pstree.entries.iter().zip(&img.cores))
        .filter(|(_, c)| !is_zombie(c))
        .map(|(e, _)| e.pid as i32)
        .collect();
    crate::kinds::unix::check_restore(
        &img.files,
        img.fdtables.iter().flatten(),
        &live,
        args.ext_unix_sk_lose_peercred,
    )?;
    // pair: a held backup writes live files back at release (crate::pair::hold).
    let (saved, late) = crate::pair::hold::split_contents(saved);
    // Only now, with nothing left to refuse the restore, are files touched.
    volatile.make(saved.as_ref(), img.store())?;
    let mut ghosts = match &saved {
        Some(c) => contents::put_back(c, img.store(), &volatile.paths())?,
        None => contents::Ghosts::default(),
    };
    crate::kinds::fifo::recreate_deleted(&img.files, &mut ghosts)?;
    crate::kinds::regular::recreate_deleted_nodes(&img.files, &mut ghosts)?;
    crate::kinds::regular::recreate_removed_dirs(&img.files, &mut ghosts)?;
    crate::kinds::files::recreate_fifos(&img.files)?;
    let mut redirect = std::mem::take(&mut idx.redirect);
    redirect.extend(ghosts.redirect.clone());
    drop(idx);
    let mut fixups = Fixups {
        redirect,
        ghosts,
        oracle,
        volatile: volatile.oracle_paths(),
        late,
    };
    if args.detached {
        return restore_detached(&img, args, &mut fixups).map(|_| None);
    }
    let pid = crate::kinds::cgroup::finish_restore(restore_tree(&img, args, &mut fixups))?;
    if let Some(l) = net_lock.as_mut() {
        if let Err(e) = l.release() {
            warn!("{e}");
        }
    }
    if let Some(p) = &args.pidfile {
        write_pidfile(p, pid)?;
    }
    Ok(Some(pid))
}

/// Detached: a short-lived child does the restore, so the restored process
/// is reparented when that child exits. The result comes back on a pipe.
fn restore_detached(img: &Images, args: &RestoreOptions, fixups: &mut Fixups) -> Result<i32> {
    use std::io::{Read, Write};
    // The threads of `Images::load` are joined, but a joined thread may
    // still be on its way out in the kernel (its tid is cleared before it
    // leaves the thread group) for a moment; it holds no lock then.
    let deadline = Instant::now() + std::time::Duration::from_millis(500);
    while task::own_thread_count() > 1 && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    if task::own_thread_count() > 1 {
        return Err(Error::Restore(
            "internal: restore must fork while single-threaded".into(),
        ));
    }
    let (r, w) = task::pipe().map_err(|e| Error::sys(task::getpid(), "pipe", e))?;
    let parent = task::getpid();
    match task::fork().map_err(|e| Error::sys(parent, "fork", e))? {
        task::Fork::Child => {
            drop(r);
            // If cairn is killed, this helper dies too, and with it every
            // vessel (PDEATHSIG, PTRACE_O_EXITKILL): no half-restored tree.
            if task::set_pdeathsig(libc::SIGKILL).is_err() || task::getppid() != parent {
                std::process::exit(1);
            }
            let mut w = std::fs::File::from(w);
            let msg = match crate::kinds::cgroup::finish_restore(restore_tree(img, args, fixups)) {
                Ok(pid) => match &args.pidfile {
                    Some(p) => write_pidfile(p, pid)
                        .map(|_| format!("ok {pid}"))
                        .unwrap_or_else(|e| {
                            format!("err {} {e}", e.exit_code(crate::error::Phase::Restore))
                        }),
                    None => format!("ok {pid}"),
                },
                Err(e) => format!("err {} {e}", e.exit_code(crate::error::Phase::Restore)),
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
            parse_helper_result(&s)
        }
    }
}

/// What the `restore -d` helper reported: `ok PID` or `err CODE MESSAGE`.
fn parse_helper_result(s: &str) -> Result<i32> {
    if let Some(p) = s.strip_prefix("ok ") {
        info!("restored pid {p} (detached)");
        return Ok(0);
    }
    let Some(rest) = s.strip_prefix("err ") else {
        return Err(Error::Restore("the restoring helper died".into()));
    };
    let (code, msg) = rest.split_once(' ').unwrap_or(("", rest));
    match code.parse::<u8>() {
        Ok(code) if code != 0 => Err(Error::Forwarded {
            code,
            msg: msg.to_string(),
        }),
        _ => Err(Error::Restore(rest.to_string())),
    }
}
