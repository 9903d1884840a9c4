//! Kernel feature probes (CRIU's kerndat): each kernel interface cairn may
//! use is tried once per run, and both the dump/restore code (through
//! [`Features::pid_restore`], [`Features::dirty_tracking`]) and `cairn check`
//! read the result from [`features`].
//!
//! A probe never panics and leaves nothing behind: every fd and mapping it
//! makes is closed or unmapped before it returns. The one probe that touches
//! process state, soft-dirty, clears the soft-dirty bits of cairn's own
//! address space, which nothing else in cairn reads.

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
    /// (major, minor) parsed from `kernel`.
    pub kernel_version: Option<(u32, u32)>,
    pub btf: Feature,
    pub bpf: Feature,
    pub pagemap_scan: Feature,
    pub uffd_wp_async: Feature,
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
        let kernel = kernel_release();
        let kernel_version = parse_version(&kernel);
        let at_least = |want: (u32, u32)| -> Feature {
            match kernel_version {
                Some(v) if v >= want => {
                    Feature::yes(format!("kernel {}.{} >= {}.{}", v.0, v.1, want.0, want.1))
                }
                Some(v) => Feature::no(format!("kernel {}.{} < {}.{}", v.0, v.1, want.0, want.1)),
                None => Feature::no(format!("cannot parse kernel release {kernel:?}")),
            }
        };
        let clone3_set_tid = {
            let k = at_least((5, 5));
            let ns = Path::new(NS_LAST_PID).exists();
            match (k.available, ns) {
                (true, true) => Feature::yes(format!("{}, {NS_LAST_PID} present", k.detail)),
                (true, false) => Feature::no(format!(
                    "{NS_LAST_PID} missing (no CONFIG_CHECKPOINT_RESTORE?)"
                )),
                (false, _) => k,
            }
        };
        Features {
            btf: guarded(|| exists("/sys/kernel/btf/vmlinux")),
            bpf: guarded(probe_bpf),
            pagemap_scan: guarded(probe_pagemap_scan),
            uffd_wp_async: guarded(probe_uffd_wp_async),
            soft_dirty: guarded(probe_soft_dirty),
            clone3_set_tid,
            ns_last_pid_writable: guarded(probe_ns_last_pid),
            ptrace_get_rseq_conf: at_least((5, 13)),
            tcp_repair: guarded(probe_tcp_repair),
            time_ns: guarded(|| exists("/proc/self/ns/time")),
            cgroup2_freeze: guarded(|| exists("/sys/fs/cgroup/cgroup.controllers")),
            cap_checkpoint_restore: guarded(|| cap(Capability::CAP_CHECKPOINT_RESTORE)),
            cap_sys_admin: guarded(|| cap(Capability::CAP_SYS_ADMIN)),
            cap_sys_resource: guarded(|| cap(Capability::CAP_SYS_RESOURCE)),
            cap_sys_ptrace: guarded(|| cap(Capability::CAP_SYS_PTRACE)),
            ptrace_scope: guarded(probe_ptrace_scope),
            kernel,
            kernel_version,
        }
    }

    /// Every feature with its stable name, in display order.
    pub fn list(&self) -> [(&'static str, &Feature); 16] {
        [
            ("btf", &self.btf),
            ("bpf", &self.bpf),
            ("pagemap_scan", &self.pagemap_scan),
            ("uffd_wp_async", &self.uffd_wp_async),
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
        ]
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

/// The features of this machine, probed on first use.
pub fn features() -> &'static Features {
    static FEATURES: OnceLock<Features> = OnceLock::new();
    FEATURES.get_or_init(Features::probe)
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

fn probe_pagemap_scan() -> Feature {
    /// struct pm_scan_arg (linux/fs.h).
    #[repr(C)]
    #[derive(Default)]
    struct PmScanArg {
        size: u64,
        flags: u64,
        start: u64,
        end: u64,
        walk_end: u64,
        vec: u64,
        vec_len: u64,
        max_pages: u64,
        category_inverted: u64,
        category_mask: u64,
        category_anyof_mask: u64,
        return_mask: u64,
    }
    /// struct page_region.
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct PageRegion {
        start: u64,
        end: u64,
        categories: u64,
    }
    const PAGE_IS_PRESENT: u64 = 1 << 3;
    // _IOWR('f', 16, struct pm_scan_arg)
    const PAGEMAP_SCAN: libc::c_ulong = (3 << 30)
        | ((std::mem::size_of::<PmScanArg>() as libc::c_ulong) << 16)
        | ((b'f' as libc::c_ulong) << 8)
        | 16;

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
    let mut arg = PmScanArg {
        size: std::mem::size_of::<PmScanArg>() as u64,
        start: page.addr(),
        end: page.addr() + page.len as u64,
        vec: regions.as_mut_ptr() as u64,
        vec_len: regions.len() as u64,
        category_anyof_mask: PAGE_IS_PRESENT,
        return_mask: PAGE_IS_PRESENT,
        ..Default::default()
    };
    // SAFETY: `arg` is a valid pm_scan_arg whose `vec` points at
    // `vec_len` writable page_regions; it only reads page-table state of
    // the range (no write-protect flags are set).
    let r = unsafe { libc::ioctl(f.as_raw_fd(), PAGEMAP_SCAN, &mut arg as *mut PmScanArg) };
    if r < 0 {
        return Feature::no(format!("PAGEMAP_SCAN ioctl: {}", errno()));
    }
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
