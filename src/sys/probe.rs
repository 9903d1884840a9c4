//! Kernel feature probes (CRIU's kerndat): each kernel interface cairn may
//! use is tried once per run, and both the dump/restore code (through
//! [`Features::pid_restore`], [`Features::dirty_tracking`]) and `cairn check`
//! read the result from [`features`].
//!
//! A probe never panics and leaves nothing behind: every fd and mapping it
//! makes is closed or unmapped before it returns. The one probe that touches
//! process state, soft-dirty, clears the soft-dirty bits of cairn's own
//! address space, which nothing else in cairn reads.

use std::collections::HashMap;
use std::ffi::c_void;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::OnceLock;

use caps::{CapSet, Capability};

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feature {
    pub available: bool,
    /// What was seen: a version, a value, or the error that made it fail.
    pub detail: String,
}

impl Feature {
    fn yes(detail: impl Into<String>) -> Feature {
        Feature {
            available: true,
            detail: detail.into(),
        }
    }
    fn no(detail: impl Into<String>) -> Feature {
        Feature {
            available: false,
            detail: detail.into(),
        }
    }
    fn from_bool(ok: bool, detail: impl Into<String>) -> Feature {
        Feature {
            available: ok,
            detail: detail.into(),
        }
    }
}

/// Everything the probes found on this machine.
#[derive(Debug, Clone)]
pub struct Features {
    /// `uname -r`.
    pub kernel: String,
    /// Where the kernel-interface results come from: run now, or the
    /// per-boot cache (its path), for `cairn check` to say.
    pub source: String,
    /// (major, minor) parsed from `kernel`.
    pub kernel_version: Option<(u32, u32)>,
    pub btf: Feature,
    pub bpf: Feature,
    /// The task iterator of bpf/inventory.bpf.c loaded and read on cairn
    /// itself: the inventory (processes and threads) by BPF.
    pub bpf_iter: Feature,
    /// Its task_vma iterator (Linux 5.12+): VMAs by BPF, else from smaps.
    pub bpf_iter_task_vma: Feature,
    /// Its task_file iterator with bpf_d_path: fds by BPF, else from
    /// `/proc/PID/fd` and `fdinfo`.
    pub bpf_iter_task_file: Feature,
    /// tp_btf programs on sched_process_fork/exit attached and reporting
    /// a fork of cairn's.
    pub bpf_tp_btf: Feature,
    pub bpf_ringbuf: Feature,
    /// cairn runs in the initial pid namespace (the BPF programs compare
    /// the kernel's global pids with the ones cairn sees).
    pub initial_pid_ns: Feature,
    pub pagemap_scan: Feature,
    pub uffd_wp_async: Feature,
    /// A userfaultfd in synchronous write-protect mode (without
    /// UFFD_USER_MODE_ONLY) stops a
    /// writer of a protected page until the protection is lifted: the
    /// background snapshot (`crate::kinds::memory::bgsnap`).
    pub uffd_wp_sync: Feature,
    pub soft_dirty: Feature,
    pub clone3_set_tid: Feature,
    pub ns_last_pid_writable: Feature,
    pub ptrace_get_rseq_conf: Feature,
    pub tcp_repair: Feature,
    pub time_ns: Feature,
    pub cgroup2_freeze: Feature,
    pub cap_checkpoint_restore: Feature,
    pub cap_sys_admin: Feature,
    pub cap_sys_resource: Feature,
    pub cap_sys_ptrace: Feature,
    pub ptrace_scope: Feature,
    pub pidfd_getfd: Feature,
    pub kcmp: Feature,
    pub process_vm_readv: Feature,
}

/// How the pids of restored tasks are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PidRestore {
    Clone3SetTid,
    NsLastPid,
}

impl PidRestore {
    pub fn as_str(self) -> &'static str {
        match self {
            PidRestore::Clone3SetTid => "clone3 set_tid",
            PidRestore::NsLastPid => "ns_last_pid",
        }
    }
}

/// Whether a part of the job is done by BPF programs or from /proc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collection {
    Bpf,
    Proc,
}

impl Collection {
    pub fn as_str(self) -> &'static str {
        match self {
            Collection::Bpf => "bpf",
            Collection::Proc => "proc",
        }
    }
}

/// How pages changed since a previous checkpoint are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirtyTracking {
    SoftDirty,
    UffdWpPagemapScan,
    ContentHashing,
}

impl DirtyTracking {
    pub fn as_str(self) -> &'static str {
        match self {
            DirtyTracking::SoftDirty => "soft-dirty",
            DirtyTracking::UffdWpPagemapScan => "uffd-wp + PAGEMAP_SCAN",
            DirtyTracking::ContentHashing => "content hashing",
        }
    }
}

impl Features {
    /// Runs every probe. Use [`features`] for the cached result.
    pub fn probe() -> Features {
        Features::assemble(None)
    }

    /// Runs every probe, except those [`super::probe_cache::CACHED`] ones
    /// whose answer `cached` has.
    fn assemble(cached: Option<&HashMap<String, Feature>>) -> Features {
        let kernel = kernel_release();
        let kernel_version = parse_version(&kernel);
        let get = |name: &str, f: fn() -> Feature| -> Feature {
            match cached.and_then(|c| c.get(name)) {
                Some(v) => v.clone(),
                None => guarded(f),
            }
        };
        let bpf = match cached.and_then(|c| {
            Some(BpfProbe {
                iter: c.get("bpf_iter")?.clone(),
                vma: c.get("bpf_iter_task_vma")?.clone(),
                file: c.get("bpf_iter_task_file")?.clone(),
                tp_btf: c.get("bpf_tp_btf")?.clone(),
            })
        }) {
            Some(b) => b,
            None => std::panic::catch_unwind(probe_bpf_programs).unwrap_or_else(|_| BpfProbe {
                iter: Feature::no("probe panicked"),
                vma: Feature::no("probe panicked"),
                file: Feature::no("probe panicked"),
                tp_btf: Feature::no("probe panicked"),
            }),
        };
        Features {
            source: "probed now".into(),
            btf: get("btf", || exists("/sys/kernel/btf/vmlinux")),
            bpf: get("bpf", probe_bpf),
            bpf_iter: bpf.iter,
            bpf_iter_task_vma: bpf.vma,
            bpf_iter_task_file: bpf.file,
            bpf_tp_btf: bpf.tp_btf,
            bpf_ringbuf: get("bpf_ringbuf", probe_ringbuf),
            initial_pid_ns: guarded(probe_initial_pid_ns),
            pagemap_scan: get("pagemap_scan", probe_pagemap_scan),
            uffd_wp_async: get("uffd_wp_async", probe_uffd_wp_async),
            uffd_wp_sync: get("uffd_wp_sync", probe_uffd_wp_sync),
            soft_dirty: get("soft_dirty", probe_soft_dirty),
            clone3_set_tid: get("clone3_set_tid", probe_clone3_set_tid),
            ns_last_pid_writable: get("ns_last_pid_writable", probe_ns_last_pid),
            ptrace_get_rseq_conf: get("ptrace_get_rseq_conf", probe_rseq_conf),
            tcp_repair: guarded(probe_tcp_repair),
            time_ns: guarded(|| exists("/proc/self/ns/time")),
            cgroup2_freeze: guarded(probe_cgroup2_freeze),
            cap_checkpoint_restore: guarded(|| cap(Capability::CAP_CHECKPOINT_RESTORE)),
            cap_sys_admin: guarded(|| cap(Capability::CAP_SYS_ADMIN)),
            cap_sys_resource: guarded(|| cap(Capability::CAP_SYS_RESOURCE)),
            cap_sys_ptrace: guarded(|| cap(Capability::CAP_SYS_PTRACE)),
            ptrace_scope: guarded(probe_ptrace_scope),
            pidfd_getfd: get("pidfd_getfd", probe_pidfd_getfd),
            kcmp: get("kcmp", probe_kcmp),
            process_vm_readv: get("process_vm_readv", probe_process_vm_readv),
            kernel,
            kernel_version,
        }
    }

    /// The features from the per-boot cache of `dir`
    /// ([`super::probe_cache`]) where it is valid for this run (the other
    /// probes run), else from running every probe, which then refreshes
    /// the cache. The log says which.
    pub fn cached_or_probe(dir: &Path) -> Features {
        use super::probe_cache as pc;
        let file = dir.join(pc::FILE);
        let key = pc::Key::current(&kernel_release()).map_err(|e| format!("no key: {e}"));
        let cached = key.clone().and_then(|k| pc::load(dir, &k));
        match cached {
            Ok(c) => {
                crate::info!(
                    "feature probes: kernel interfaces from the cache {} (this boot)",
                    file.display()
                );
                let mut f = Features::assemble(Some(&c));
                f.source = format!(
                    "kernel interfaces from the per-boot cache {} (remove it to probe again)",
                    file.display()
                );
                f
            }
            Err(why) => {
                crate::info!(
                    "feature probes: running every probe (cache {} not used: {why})",
                    file.display()
                );
                let f = Features::probe();
                if let Ok(k) = key {
                    match pc::store(dir, &pc::render(&k, &f.list())) {
                        Ok(()) => crate::debug!("feature probes: cached in {}", file.display()),
                        Err(e) => {
                            crate::debug!("feature probes: not cached in {}: {e}", file.display())
                        }
                    }
                }
                f
            }
        }
    }

    /// Every feature with its stable name, in display order.
    pub fn list(&self) -> [(&'static str, &Feature); 26] {
        [
            ("btf", &self.btf),
            ("bpf", &self.bpf),
            ("bpf_iter", &self.bpf_iter),
            ("bpf_iter_task_vma", &self.bpf_iter_task_vma),
            ("bpf_iter_task_file", &self.bpf_iter_task_file),
            ("bpf_tp_btf", &self.bpf_tp_btf),
            ("bpf_ringbuf", &self.bpf_ringbuf),
            ("initial_pid_ns", &self.initial_pid_ns),
            ("pagemap_scan", &self.pagemap_scan),
            ("uffd_wp_async", &self.uffd_wp_async),
            ("uffd_wp_sync", &self.uffd_wp_sync),
            ("soft_dirty", &self.soft_dirty),
            ("clone3_set_tid", &self.clone3_set_tid),
            ("ns_last_pid_writable", &self.ns_last_pid_writable),
            ("ptrace_get_rseq_conf", &self.ptrace_get_rseq_conf),
            ("tcp_repair", &self.tcp_repair),
            ("time_ns", &self.time_ns),
            ("cgroup2_freeze", &self.cgroup2_freeze),
            ("cap_checkpoint_restore", &self.cap_checkpoint_restore),
            ("cap_sys_admin", &self.cap_sys_admin),
            ("cap_sys_resource", &self.cap_sys_resource),
            ("cap_sys_ptrace", &self.cap_sys_ptrace),
            ("ptrace_scope", &self.ptrace_scope),
            ("pidfd_getfd", &self.pidfd_getfd),
            ("kcmp", &self.kcmp),
            ("process_vm_readv", &self.process_vm_readv),
        ]
    }

    /// How the inventory (processes, threads, VMAs, fds) is collected.
    pub fn inventory(&self) -> Collection {
        if self.bpf_iter.available && self.initial_pid_ns.available {
            Collection::Bpf
        } else {
            Collection::Proc
        }
    }

    /// How children born while the tree is being frozen are found.
    pub fn fork_tracking(&self) -> Collection {
        if self.bpf_tp_btf.available
            && self.bpf_ringbuf.available
            && self.inventory() == Collection::Bpf
        {
            Collection::Bpf
        } else {
            Collection::Proc
        }
    }

    pub fn pid_restore(&self) -> PidRestore {
        if self.clone3_set_tid.available {
            PidRestore::Clone3SetTid
        } else {
            PidRestore::NsLastPid
        }
    }

    /// The best dirty-page tracking this machine offers.
    pub fn dirty_tracking(&self) -> DirtyTracking {
        if self.soft_dirty.available {
            DirtyTracking::SoftDirty
        } else if self.uffd_wp_async.available && self.pagemap_scan.available {
            DirtyTracking::UffdWpPagemapScan
        } else {
            DirtyTracking::ContentHashing
        }
    }
}

/// The features of this machine, probed on first use (the kernel
/// interfaces once per boot: [`super::probe_cache`]).
pub fn features() -> &'static Features {
    static FEATURES: OnceLock<Features> = OnceLock::new();
    FEATURES.get_or_init(|| Features::cached_or_probe(&super::probe_cache::dir()))
}

const NS_LAST_PID: &str = "/proc/sys/kernel/ns_last_pid";

/// Runs a probe; a panic inside it (a bug) reads as "not available".
fn guarded(f: impl FnOnce() -> Feature) -> Feature {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Feature::no("probe panicked"))
}

fn exists(path: &str) -> Feature {
    match std::fs::metadata(path) {
        Ok(_) => Feature::yes(format!("{path} present")),
        Err(e) => Feature::no(format!("{path}: {e}")),
    }
}

fn cap(c: Capability) -> Feature {
    match caps::has_cap(None, CapSet::Effective, c) {
        Ok(true) => Feature::yes(format!("{c} in effective set")),
        Ok(false) => Feature::no(format!("{c} not in effective set")),
        Err(e) => Feature::no(format!("{c}: {e}")),
    }
}

fn kernel_release() -> String {
    match std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        Ok(s) => s.trim().to_string(),
        Err(_) => {
            // SAFETY: utsname is plain old data; all-zero is a valid value.
            let mut u: libc::utsname = unsafe { std::mem::zeroed() };
            // SAFETY: `u` is a valid, writable utsname for the call.
            if unsafe { libc::uname(&mut u) } != 0 {
                return "unknown".to_string();
            }
            let bytes: Vec<u8> = u
                .release
                .iter()
                .take_while(|&&c| c != 0)
                .map(|&c| c as u8)
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
    }
}

/// "6.18.44-foo" -> (6, 18).
pub fn parse_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn page_size() -> usize {
    // SAFETY: sysconf only reads a system constant.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

/// One private anonymous page, unmapped on drop.
struct AnonPage {
    addr: *mut u8,
    len: usize,
}

impl AnonPage {
    fn new() -> std::io::Result<AnonPage> {
        let len = page_size();
        // SAFETY: a fresh anonymous mapping at an address the kernel picks;
        // it aliases nothing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(errno());
        }
        Ok(AnonPage {
            addr: p.cast(),
            len,
        })
    }

    fn touch(&self, v: u8) {
        // SAFETY: `addr` is the start of a live, writable mapping of `len`
        // >= 1 bytes owned by this struct; volatile keeps the write.
        unsafe { std::ptr::write_volatile(self.addr, v) }
    }

    fn addr(&self) -> u64 {
        self.addr as u64
    }
}

impl Drop for AnonPage {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` made; no reference into
        // it outlives `self`.
        unsafe {
            libc::munmap(self.addr.cast::<c_void>(), self.len);
        }
    }
}

/// Takes ownership of a raw fd returned by a syscall (>= 0).
fn own_fd(fd: libc::c_long) -> OwnedFd {
    // SAFETY: callers pass only a fresh fd (>= 0) that a syscall just
    // returned and nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

fn probe_bpf() -> Feature {
    #[repr(C)]
    struct BpfInsn {
        code: u8,
        regs: u8,
        off: i16,
        imm: i32,
    }
    /// The BPF_PROG_LOAD part of `union bpf_attr`, up to prog_flags.
    #[repr(C)]
    struct ProgLoadAttr {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
    }
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
    // r0 = 0; exit
    let insns = [
        BpfInsn {
            code: 0xb7,
            regs: 0,
            off: 0,
            imm: 0,
        },
        BpfInsn {
            code: 0x95,
            regs: 0,
            off: 0,
            imm: 0,
        },
    ];
    let license = b"GPL\0";
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SOCKET_FILTER,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
    };
    // SAFETY: `attr` is a valid prefix of union bpf_attr for BPF_PROG_LOAD
    // and its size is passed; `insns` and `license` outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Feature::no(format!("BPF_PROG_LOAD: {}", errno()));
    }
    drop(own_fd(fd));
    Feature::yes("loaded a socket filter")
}

/// What [`probe_bpf_programs`] found, one feature per part.
struct BpfProbe {
    iter: Feature,
    vma: Feature,
    file: Feature,
    tp_btf: Feature,
}

/// Loads cairn's BPF programs (shared with the dump, see
/// [`super::bpf::shared`]) and uses them on cairn itself: the iterators
/// must find cairn's task and, where they are loaded, its VMAs and fds
/// (a program this kernel refuses is named with the reason); the fork
/// tracker must report a child cairn forks.
fn probe_bpf_programs() -> BpfProbe {
    let me = std::process::id() as i32;
    let loaded = super::bpf::shared();
    let (iter, vma, file) = match &loaded.iters {
        Err(e) => (
            Feature::no(e.clone()),
            Feature::no(format!("the inventory object did not load: {e}")),
            Feature::no(format!("the inventory object did not load: {e}")),
        ),
        Ok(it) => {
            let mut it = it.borrow_mut();
            match it.collect(me) {
                Err(e) => (
                    Feature::no(e.to_string()),
                    Feature::no(format!("not run: {e}")),
                    Feature::no(format!("not run: {e}")),
                ),
                Ok(out) => {
                    let part = |bytes: &[u8], why: &Option<String>, what: &str| match why {
                        Some(why) => Feature::no(format!("not loaded: {why}")),
                        None if bytes.is_empty() => {
                            Feature::no(format!("loaded, but found none of cairn's {what}"))
                        }
                        None => Feature::yes(format!(
                            "loaded; {} bytes of records for cairn's {what}",
                            bytes.len()
                        )),
                    };
                    let vma = part(&out.vmas, &out.no_vmas, "VMAs");
                    let file = part(&out.files, &out.no_files, "fds (paths by bpf_d_path)");
                    let iter = if out.tasks.is_empty() {
                        Feature::no("iter/task loaded, but it did not find cairn itself")
                    } else {
                        let from_proc: Vec<&str> = [
                            out.no_vmas.as_ref().map(|_| "VMAs"),
                            out.no_files.as_ref().map(|_| "fds"),
                        ]
                        .into_iter()
                        .flatten()
                        .collect();
                        Feature::yes(format!(
                            "iter/task: {} bytes for cairn itself{}",
                            out.tasks.len(),
                            if from_proc.is_empty() {
                                String::new()
                            } else {
                                format!("; {} from /proc (see below)", from_proc.join(" and "))
                            }
                        ))
                    };
                    (iter, vma, file)
                }
            }
        }
    };
    let tp = match &loaded.tracker {
        Err(e) => Feature::no(e.clone()),
        Ok(t) => {
            let mut t = t.borrow_mut();
            let seen = (|| -> std::io::Result<Vec<u8>> {
                t.watch(me)?;
                let st = std::process::Command::new("/bin/true")
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
                let events = t.drain();
                t.watch(0)?;
                st?;
                events
            })();
            match seen {
                Err(e) => Feature::no(e.to_string()),
                // struct cairn_event: kind 1 (fork) with ppid == cairn.
                Ok(ev)
                    if ev.chunks_exact(24).any(|c| {
                        c[0..4] == 1u32.to_le_bytes() && c[12..16] == me.to_le_bytes()
                    }) =>
                {
                    Feature::yes("sched_process_fork/exit attached; a fork of cairn's was reported")
                }
                Ok(ev) => Feature::no(format!(
                    "attached, but a fork of cairn's was not reported ({} bytes of events)",
                    ev.len()
                )),
            }
        }
    };
    BpfProbe {
        iter,
        vma,
        file,
        tp_btf: tp,
    }
}

fn probe_ringbuf() -> Feature {
    let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    match libbpf_rs::MapHandle::create(
        libbpf_rs::MapType::RingBuf,
        Some("cairn_probe"),
        0,
        0,
        page_size() as u32,
        &opts,
    ) {
        Ok(_) => Feature::yes("created a BPF ring buffer map"),
        Err(e) => Feature::no(format!("BPF_MAP_CREATE ringbuf: {e}")),
    }
}

/// Whether cairn runs in the initial pid namespace (pids as BPF sees them).
pub fn initial_pid_ns() -> Feature {
    probe_initial_pid_ns()
}

fn probe_initial_pid_ns() -> Feature {
    let status = match std::fs::read_to_string("/proc/self/status") {
        Ok(s) => s,
        Err(e) => return Feature::no(format!("/proc/self/status: {e}")),
    };
    match status.lines().find_map(|l| l.strip_prefix("NSpid:")) {
        Some(v) if v.split_whitespace().count() == 1 => {
            Feature::yes("NSpid has one level: the initial pid namespace")
        }
        Some(v) => Feature::no(format!("cairn runs in a child pid namespace (NSpid:{v})")),
        None => Feature::no("no NSpid line in /proc/self/status"),
    }
}

/// clone3 with set_tid = {1}: a kernel that supports set_tid (and lets us
/// use it) fails with EEXIST, pid 1 being taken; E2BIG/EINVAL mean no
/// set_tid, EPERM no CAP_CHECKPOINT_RESTORE. No process is created.
fn probe_clone3_set_tid() -> Feature {
    use super::abi::CloneArgs;
    let tid: libc::pid_t = 1;
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: &tid as *const libc::pid_t as u64,
        set_tid_size: 1,
        ..Default::default()
    };
    // SAFETY: clone3 without CLONE_VM; pid 1 exists in our namespace, so
    // the kernel refuses before a child runs. Should it ever create one
    // (a namespace without init), the child exits at once without
    // touching any state, and the parent reaps it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r == 0 {
        // SAFETY: the child only exits.
        unsafe { libc::syscall(libc::SYS_exit_group, 0) };
    }
    if r > 0 {
        let mut st = 0;
        // SAFETY: waits for the child just created; `st` is writable.
        unsafe { libc::waitpid(r as i32, &mut st, 0) };
        return Feature::yes("clone3 created a task with the requested pid");
    }
    let e = errno();
    match e.raw_os_error() {
        Some(libc::EEXIST) => Feature::yes("clone3 set_tid {1}: EEXIST (supported, permitted)"),
        Some(libc::EPERM) => Feature::no("clone3 set_tid: EPERM (needs CAP_CHECKPOINT_RESTORE)"),
        _ => Feature::no(format!("clone3 set_tid: {e}")),
    }
}

fn probe_pidfd_getfd() -> Feature {
    // SAFETY: pidfd_open takes integers and returns a new fd or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
    if pidfd < 0 {
        return Feature::no(format!("pidfd_open: {}", errno()));
    }
    let pidfd = own_fd(pidfd);
    let f = match File::open("/dev/null") {
        Ok(f) => f,
        Err(e) => return Feature::no(format!("/dev/null: {e}")),
    };
    // SAFETY: pidfd_getfd takes integers and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), f.as_raw_fd(), 0) };
    if fd < 0 {
        return Feature::no(format!("pidfd_getfd: {}", errno()));
    }
    drop(own_fd(fd));
    Feature::yes("copied an fd of cairn's own")
}

fn probe_kcmp() -> Feature {
    let f = match File::open("/dev/null") {
        Ok(f) => f,
        Err(e) => return Feature::no(format!("/dev/null: {e}")),
    };
    // SAFETY: getpid takes no arguments.
    let me = unsafe { libc::getpid() };
    // SAFETY: kcmp takes only integers (KCMP_FILE = 0).
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            me,
            me,
            0 as libc::c_long,
            f.as_raw_fd() as libc::c_long,
            f.as_raw_fd() as libc::c_long,
        )
    };
    match r {
        0 => Feature::yes("KCMP_FILE of an fd with itself: equal"),
        r if r < 0 => Feature::no(format!("kcmp: {}", errno())),
        r => Feature::no(format!("kcmp of an fd with itself returned {r}")),
    }
}

fn probe_process_vm_readv() -> Feature {
    let src = [0x5au8; 16];
    let mut dst = [0u8; 16];
    let local = libc::iovec {
        iov_base: dst.as_mut_ptr().cast(),
        iov_len: dst.len(),
    };
    let remote = libc::iovec {
        iov_base: src.as_ptr() as *mut c_void,
        iov_len: src.len(),
    };
    // SAFETY: both iovecs describe live buffers of this process of the
    // given lengths; the call only writes into `dst`.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    if n < 0 {
        return Feature::no(format!("process_vm_readv: {}", errno()));
    }
    Feature::from_bool(
        n == 16 && dst == src,
        format!("read {n} bytes of cairn's own memory"),
    )
}

/// The cgroup v2 mount point, from /proc/self/mountinfo.
pub fn cgroup2_mount() -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        (post.split_whitespace().next() == Some("cgroup2"))
            .then(|| pre.split_whitespace().nth(4).map(str::to_string))?
    })
}

/// Makes an empty child cgroup, freezes it through cgroup.freeze, checks
/// that cgroup.events says "frozen 1", and removes it again.
fn probe_cgroup2_freeze() -> Feature {
    let Some(mnt) = cgroup2_mount() else {
        return Feature::no("no cgroup2 file system mounted");
    };
    let dir = Path::new(&mnt).join(format!("cairn-probe-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir(&dir) {
        return Feature::no(format!("mkdir {}: {e}", dir.display()));
    }
    let r = (|| -> std::io::Result<bool> {
        std::fs::write(dir.join("cgroup.freeze"), "1")?;
        let events = std::fs::read_to_string(dir.join("cgroup.events"))?;
        Ok(events.lines().any(|l| l.trim() == "frozen 1"))
    })();
    let _ = std::fs::remove_dir(&dir);
    match r {
        Ok(true) => Feature::yes(format!("froze an empty cgroup under {mnt}")),
        Ok(false) => Feature::no(format!("cgroup.freeze under {mnt} did not freeze")),
        Err(e) => Feature::no(format!("cgroup.freeze under {mnt}: {e}")),
    }
}

/// Seizes a child that only sleeps and asks for its rseq configuration.
fn probe_rseq_conf() -> Feature {
    // SAFETY: the child runs only raw syscalls (no locks, no allocation)
    // until it is killed; the parent kills and reaps it below.
    let child = unsafe { libc::fork() };
    if child == 0 {
        loop {
            // SAFETY: pause takes no arguments.
            unsafe { libc::syscall(libc::SYS_pause) };
        }
    }
    if child < 0 {
        return Feature::no(format!("fork: {}", errno()));
    }
    let r =
        super::inject::seize_and_stop(child, 0).and_then(|_| super::ptrace::get_rseq_config(child));
    // SAFETY: kill and waitpid on our own child, with a writable status.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        let mut st = 0;
        libc::waitpid(child, &mut st, 0);
    }
    match r {
        Ok(_) => Feature::yes("PTRACE_GET_RSEQ_CONFIGURATION answered for a seized child"),
        Err(e) => Feature::no(format!("PTRACE_GET_RSEQ_CONFIGURATION: {e}")),
    }
}

fn probe_pagemap_scan() -> Feature {
    use super::uffd::{pagemap_scan, PageRegion, ScanQuery, PAGE_IS_PRESENT};

    let page = match AnonPage::new() {
        Ok(p) => p,
        Err(e) => return Feature::no(format!("mmap: {e}")),
    };
    page.touch(1);
    let f = match File::open("/proc/self/pagemap") {
        Ok(f) => f,
        Err(e) => return Feature::no(format!("/proc/self/pagemap: {e}")),
    };
    let mut regions = [PageRegion::default(); 1];
    let q = ScanQuery {
        flags: 0,
        mask: 0,
        anyof: PAGE_IS_PRESENT,
        ret: PAGE_IS_PRESENT,
    };
    // Only reads page-table state of the range (no write-protect flags).
    let r = match pagemap_scan(
        &f,
        page.addr(),
        page.addr() + page.len as u64,
        q,
        &mut regions,
    ) {
        Ok((n, _)) => n,
        Err(e) => return Feature::no(format!("PAGEMAP_SCAN ioctl: {e}")),
    };
    if r >= 1 && regions[0].categories & PAGE_IS_PRESENT != 0 {
        Feature::yes("ioctl found the probe page present")
    } else {
        Feature::no(format!("ioctl returned {r} regions for a present page"))
    }
}

/// Really tests what incremental dumps rely on: a userfaultfd in
/// write-protect async mode, driven through PAGEMAP_SCAN, sees a write from
/// user space and one by the kernel (read(2) into the page) after the pages
/// were write-protected, and nothing before.
fn probe_uffd_wp_async() -> Feature {
    use super::uffd;
    let pages = match (AnonPage::new(), AnonPage::new()) {
        (Ok(a), Ok(b)) => [a, b],
        (Err(e), _) | (_, Err(e)) => return Feature::no(format!("mmap: {e}")),
    };
    for p in &pages {
        p.touch(1);
    }
    let fd = match uffd::userfaultfd_self() {
        Ok(f) => f,
        Err(e) => return Feature::no(format!("userfaultfd: {e}")),
    };
    let want = uffd::UFFD_FEATURE_WP_ASYNC | uffd::UFFD_FEATURE_WP_UNPOPULATED;
    let got = match uffd::api(&fd, want) {
        Ok(f) => f,
        Err(e) => return Feature::no(format!("UFFDIO_API with WP_ASYNC|WP_UNPOPULATED: {e}")),
    };
    if got & want != want {
        return Feature::no(format!("UFFDIO_API features {got:#x}"));
    }
    let pm = match File::open("/proc/self/pagemap") {
        Ok(f) => f,
        Err(e) => return Feature::no(format!("/proc/self/pagemap: {e}")),
    };
    let anyof = uffd::PAGE_IS_PRESENT | uffd::PAGE_IS_SWAPPED;
    let written = |p: &AnonPage, wp: bool| -> std::io::Result<usize> {
        let mut out = [uffd::PageRegion::default(); 4];
        let q = uffd::ScanQuery {
            flags: uffd::PM_SCAN_CHECK_WPASYNC | if wp { uffd::PM_SCAN_WP_MATCHING } else { 0 },
            mask: uffd::PAGE_IS_WRITTEN,
            anyof,
            ret: uffd::PAGE_IS_WRITTEN | anyof,
        };
        uffd::pagemap_scan(&pm, p.addr(), p.addr() + p.len as u64, q, &mut out).map(|r| r.0)
    };
    for p in &pages {
        if let Err(e) = uffd::register_wp(&fd, p.addr(), p.addr() + p.len as u64) {
            return Feature::no(format!("UFFDIO_REGISTER (write-protect): {e}"));
        }
        match written(p, true) {
            Ok(1) => {}
            Ok(n) => {
                return Feature::no(format!(
                    "arming scan reported {n} regions for a written page"
                ))
            }
            Err(e) => return Feature::no(format!("PAGEMAP_SCAN with PM_SCAN_WP_MATCHING: {e}")),
        }
        match written(p, false) {
            Ok(0) => {}
            Ok(_) => return Feature::no("a write-protected page reads as written"),
            Err(e) => return Feature::no(format!("PAGEMAP_SCAN: {e}")),
        }
    }
    pages[0].touch(2);
    let kernel_write = File::open("/proc/self/stat").and_then(|f| {
        // SAFETY: the destination is the live, writable mapping of
        // `pages[1]` (`len` bytes, owned by it); read(2) writes at most 64
        // bytes there.
        let r = unsafe { libc::read(f.as_raw_fd(), pages[1].addr as *mut c_void, 64) };
        if r < 0 {
            Err(errno())
        } else {
            Ok(())
        }
    });
    if let Err(e) = kernel_write {
        return Feature::no(format!("read(2) into the probe page: {e}"));
    }
    match (written(&pages[0], false), written(&pages[1], false)) {
        (Ok(a), Ok(b)) => Feature::from_bool(
            a == 1 && b == 1,
            format!(
                "UFFDIO_API features {got:#x}; after a user write and a read(2) into \
                 write-protected pages PAGEMAP_SCAN saw {a} and {b} written regions (want 1 and 1)"
            ),
        ),
        (Err(e), _) | (_, Err(e)) => Feature::no(format!("PAGEMAP_SCAN: {e}")),
    }
}

/// Really tests the background snapshot's mechanism: a thread writing a
/// page write-protected by a synchronous userfaultfd blocks, the fault is
/// reported with its address, the page is unchanged until the protection
/// is lifted, and lifting it lets the write through.
fn probe_uffd_wp_sync() -> Feature {
    use super::uffd;
    use std::time::{Duration, Instant};
    let page = match AnonPage::new() {
        Ok(p) => p,
        Err(e) => return Feature::no(format!("mmap: {e}")),
    };
    page.touch(1);
    let fd = match uffd::userfaultfd_self_sync() {
        Ok(f) => f,
        Err(e) => return Feature::no(format!("userfaultfd without UFFD_USER_MODE_ONLY: {e}")),
    };
    if let Err(e) = uffd::api(&fd, 0) {
        return Feature::no(format!("UFFDIO_API: {e}"));
    }
    let (a, e) = (page.addr(), page.addr() + page.len as u64);
    if let Err(err) = uffd::register_wp(&fd, a, e) {
        return Feature::no(format!("UFFDIO_REGISTER (write-protect): {err}"));
    }
    if let Err(err) = uffd::writeprotect(&fd, a, e, true) {
        return Feature::no(format!("UFFDIO_WRITEPROTECT: {err}"));
    }
    let writer = std::thread::spawn(move || {
        // SAFETY: `a` is the live, writable mapping of `page`, which is
        // dropped only after this thread is joined below.
        unsafe { std::ptr::write_volatile(a as *mut u8, 2) }
    });
    let mut seen = None;
    let end = Instant::now() + Duration::from_secs(2);
    let mut msg = [uffd::UffdMsg::default(); 1];
    while seen.is_none() && Instant::now() < end {
        let _ = uffd::poll_readable(&[fd.as_raw_fd()], 50);
        if let Ok(1) = uffd::read_msgs(&fd, &mut msg) {
            seen = Some(msg[0]);
        }
    }
    // SAFETY: `page` is a live mapping of `len` >= 1 bytes; a volatile
    // read of its first byte.
    let before = unsafe { std::ptr::read_volatile(a as *const u8) };
    let lifted = uffd::writeprotect(&fd, a, e, false);
    // Whatever happened, closing the userfaultfd releases the writer.
    drop(fd);
    let _ = writer.join();
    // SAFETY: as above.
    let after = unsafe { std::ptr::read_volatile(a as *const u8) };
    let Some(m) = seen else {
        return Feature::no("no write fault reported within 2 s");
    };
    let ok = m.event == uffd::UFFD_EVENT_PAGEFAULT
        && m.arg[0] & uffd::UFFD_PAGEFAULT_FLAG_WP != 0
        && m.arg[1] & !(page.len as u64 - 1) == a
        && before == 1
        && lifted.is_ok()
        && after == 2;
    Feature::from_bool(
        ok,
        format!(
            "write fault event {:#x} flags {:#x} at the page: {}; page before the release {before} \
             (want 1), after {after} (want 2); release: {lifted:?}",
            m.event,
            m.arg[0],
            m.arg[1] & !(page.len as u64 - 1) == a
        ),
    )
}

/// Really tests soft-dirty: a page written after clear_refs must show bit
/// 55 in pagemap, and must not show it right after clear_refs.
fn probe_soft_dirty() -> Feature {
    const PM_SOFT_DIRTY: u64 = 1 << 55;
    const PM_PRESENT: u64 = 1 << 63;
    let page = match AnonPage::new() {
        Ok(p) => p,
        Err(e) => return Feature::no(format!("mmap: {e}")),
    };
    let pagemap = match File::open("/proc/self/pagemap") {
        Ok(f) => f,
        Err(e) => return Feature::no(format!("/proc/self/pagemap: {e}")),
    };
    let entry = || -> std::io::Result<u64> {
        let mut b = [0u8; 8];
        pagemap.read_exact_at(&mut b, page.addr() / page.len as u64 * 8)?;
        Ok(u64::from_le_bytes(b))
    };
    let clear = || -> std::io::Result<()> {
        OpenOptions::new()
            .write(true)
            .open("/proc/self/clear_refs")?
            .write_all(b"4")
    };
    page.touch(1);
    if let Err(e) = clear() {
        return Feature::no(format!("/proc/self/clear_refs: {e}"));
    }
    let after_clear = match entry() {
        Ok(e) => e,
        Err(e) => return Feature::no(format!("read pagemap: {e}")),
    };
    if after_clear & PM_PRESENT == 0 {
        return Feature::no("probe page not present in pagemap");
    }
    if after_clear & PM_SOFT_DIRTY != 0 {
        return Feature::no("bit 55 still set after clear_refs");
    }
    page.touch(2);
    match entry() {
        Ok(e) if e & PM_SOFT_DIRTY != 0 => {
            Feature::yes("clear_refs clears bit 55, a write sets it")
        }
        Ok(_) => {
            Feature::no("a write after clear_refs did not set bit 55 (no CONFIG_MEM_SOFT_DIRTY?)")
        }
        Err(e) => Feature::no(format!("read pagemap: {e}")),
    }
}

/// Writable means: the file opens for writing (opening writes nothing)
/// and we hold a capability the kernel checks on write.
fn probe_ns_last_pid() -> Feature {
    if let Err(e) = OpenOptions::new().write(true).open(NS_LAST_PID) {
        return Feature::no(format!("{NS_LAST_PID}: {e}"));
    }
    for c in [
        Capability::CAP_CHECKPOINT_RESTORE,
        Capability::CAP_SYS_ADMIN,
    ] {
        if caps::has_cap(None, CapSet::Effective, c).unwrap_or(false) {
            return Feature::yes(format!("opens for writing, {c} held"));
        }
    }
    Feature::no("needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN")
}

fn probe_tcp_repair() -> Feature {
    // SAFETY: socket takes only integer arguments and returns a new fd or -1.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Feature::no(format!("socket: {}", errno()));
    }
    let s = own_fd(s.into());
    let one: libc::c_int = 1;
    // SAFETY: `one` is a valid c_int for the duration of the call and its
    // size is passed; the socket is unconnected and closed right after.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_REPAIR,
            &one as *const libc::c_int as *const c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Feature::no(format!("setsockopt TCP_REPAIR: {}", errno()));
    }
    Feature::yes("setsockopt TCP_REPAIR=1 accepted")
}

fn probe_ptrace_scope() -> Feature {
    const PATH: &str = "/proc/sys/kernel/yama/ptrace_scope";
    match std::fs::read_to_string(PATH) {
        Ok(s) => {
            let v = s.trim();
            match v {
                "0" => Feature::yes("0 (classic ptrace permissions)"),
                "1" => Feature::yes("1 (restricted: descendants or CAP_SYS_PTRACE)"),
                "2" => Feature::yes("2 (admin only: needs CAP_SYS_PTRACE)"),
                "3" => Feature::no("3 (no attach: ptrace disabled)"),
                _ => Feature::no(format!("unexpected value {v:?}")),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Feature::yes("no Yama: classic ptrace permissions")
        }
        Err(e) => Feature::no(format!("{PATH}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probed_once() {
        let a = features();
        let b = features();
        assert!(std::ptr::eq(a, b));
        assert!(!a.kernel.is_empty());
    }

    #[test]
    fn soft_dirty_probe_returns_a_bool() {
        let f = probe_soft_dirty();
        assert!(matches!(f.available, true | false));
        assert!(!f.detail.is_empty());
        // Running it again gives the same answer (it changed nothing).
        assert_eq!(probe_soft_dirty().available, f.available);
    }

    #[test]
    fn every_probe_has_a_detail() {
        for (name, f) in features().list() {
            assert!(!f.detail.is_empty(), "{name} has no detail");
        }
    }

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("6.18.44-fc-v769"), Some((6, 18)));
        assert_eq!(parse_version("5.4.0"), Some((5, 4)));
        assert_eq!(parse_version("6.1"), Some((6, 1)));
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn mechanisms_prefer_the_best() {
        let mut f = Features::probe();
        f.soft_dirty = Feature::yes("t");
        assert_eq!(f.dirty_tracking(), DirtyTracking::SoftDirty);
        f.soft_dirty = Feature::no("t");
        f.uffd_wp_async = Feature::yes("t");
        f.pagemap_scan = Feature::yes("t");
        assert_eq!(f.dirty_tracking(), DirtyTracking::UffdWpPagemapScan);
        f.pagemap_scan = Feature::no("t");
        assert_eq!(f.dirty_tracking(), DirtyTracking::ContentHashing);
        f.clone3_set_tid = Feature::no("t");
        assert_eq!(f.pid_restore(), PidRestore::NsLastPid);
    }
}
