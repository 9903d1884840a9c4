//! The BPF programs of bpf/ (libbpf-rs skeletons that build.rs generates
//! from bpf/*.bpf.c): loading them, running the inventory iterators, and
//! the fork tracker's ring buffer. This layer only moves bytes; the records
//! are decoded by `crate::inventory::records`.
//!
//! Every function returns `io::Result`; a libbpf failure becomes an
//! `io::Error` whose message says what failed and carries libbpf's last
//! warning (usually the verifier's or the kernel's reason).

use std::cell::RefCell;
use std::io::{self, Read};
use std::mem::MaybeUninit;
use std::rc::Rc;
use std::sync::Mutex;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, OpenObject, PrintLevel, RingBuffer, RingBufferBuilder};

#[allow(
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    unsafe_op_in_unsafe_fn
)]
#[allow(dead_code, non_camel_case_types, non_snake_case, unused)]
mod skel {
    pub mod inventory {
        include!(concat!(env!("OUT_DIR"), "/inventory.skel.rs"));
    }
    pub mod forks {
        include!(concat!(env!("OUT_DIR"), "/forks.skel.rs"));
    }
}

use skel::forks::{ForksSkel, ForksSkelBuilder};
use skel::inventory::{InventorySkel, InventorySkelBuilder};

/// Record layouts as the skeleton generated them from bpf/records.h, for
/// the decoder's layout test.
pub mod layout {
    pub use super::skel::forks::types::cairn_event;
    pub use super::skel::inventory::types::{
        cairn_fd_rec, cairn_rec_hdr, cairn_task_rec, cairn_vma_rec,
    };
}

/// libbpf's warnings of this run, newest last (bounded): the reason a
/// load failed is in there.
static LIBBPF_LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn libbpf_print(level: PrintLevel, msg: String) {
    if let Ok(mut log) = LIBBPF_LOG.lock() {
        if log.len() >= 64 {
            log.remove(0);
        }
        log.push(msg.trim_end().to_string());
    }
    if matches!(level, PrintLevel::Debug) {
        return;
    }
    crate::debug!("libbpf: {}", msg.trim_end());
}

pub(super) fn quiet_libbpf() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        libbpf_rs::set_print(Some((PrintLevel::Warn, libbpf_print)));
    });
}

/// The verifier's reason from libbpf's messages: the program that failed
/// and the last lines of its load log (where the verifier says why).
fn verifier_reason(msgs: &[String]) -> Option<String> {
    let i = msgs
        .iter()
        .rposition(|m| m.contains("BEGIN PROG LOAD LOG"))?;
    let log: Vec<&str> = msgs[i]
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains("PROG LOAD LOG") && !l.starts_with("processed "))
        .collect();
    let prog = std::iter::once(&msgs[i])
        .chain(msgs[i + 1..].iter())
        .chain(msgs[..i].iter().rev())
        .find_map(|m| {
            let rest = m.split("prog '").nth(1)?;
            Some(rest.split('\'').next()?.to_string())
        })
        .unwrap_or_else(|| "?".into());
    let tail = log[log.len().saturating_sub(3)..].join(" | ");
    Some(format!("program {prog} refused by the verifier: {tail}"))
}

/// Takes libbpf's messages of this run so far (the log is emptied).
fn take_log() -> Vec<String> {
    LIBBPF_LOG
        .lock()
        .map(|mut l| l.drain(..).collect())
        .unwrap_or_default()
}

/// An io::Error for a failed libbpf step, with libbpf's last word (and the
/// verifier's reason when a program was refused).
pub(super) fn bpf_err(what: &str, e: libbpf_rs::Error) -> io::Error {
    bpf_err_from(what, e, &take_log())
}

/// [`bpf_err`] with libbpf's messages `msgs` taken already.
fn bpf_err_from(what: &str, e: libbpf_rs::Error, msgs: &[String]) -> io::Error {
    // The verifier's reason, else the newest line about a program (a
    // missing attach target: libbpf's last lines only say the object
    // failed), else libbpf's last word.
    let last = verifier_reason(msgs)
        .or_else(|| msgs.iter().rev().find(|m| m.contains("prog '")).cloned())
        .or_else(|| msgs.iter().rev().find(|m| !m.is_empty()).cloned());
    use libbpf_rs::ErrorKind as K;
    let kind = match e.kind() {
        K::NotFound => io::ErrorKind::NotFound,
        K::PermissionDenied => io::ErrorKind::PermissionDenied,
        K::InvalidInput => io::ErrorKind::InvalidInput,
        K::Unsupported => io::ErrorKind::Unsupported,
        K::OutOfMemory => io::ErrorKind::OutOfMemory,
        _ => io::ErrorKind::Other,
    };
    let hint = last
        .as_deref()
        .and_then(kernel_hint)
        .or_else(|| msgs.iter().rev().find_map(|m| kernel_hint(m)));
    match (last, hint) {
        (Some(l), Some(h)) => io::Error::new(kind, format!("{what}: {h} ({e:#}; libbpf: {l})")),
        (Some(l), None) => io::Error::new(kind, format!("{what}: {e:#} (libbpf: {l})")),
        (None, _) => io::Error::new(kind, format!("{what}: {e:#}")),
    }
}

/// The program whose load failed, from libbpf's messages: the newest
/// "prog 'NAME': ..." line (the verifier's log, a missing attach target,
/// a failed relocation all name it). None when the failure is the
/// object's (a map, BTF, permission).
fn failed_program(msgs: &[String]) -> Option<String> {
    msgs.iter().rev().find_map(|m| {
        let rest = m.split("prog '").nth(1)?;
        Some(rest.split('\'').next()?.to_string())
    })
}

/// The kernel feature behind a load failure that libbpf or the verifier
/// names, in words, for the reasons `cairn check` and the logs print.
fn kernel_hint(msg: &str) -> Option<String> {
    if let Some(rest) = msg
        .split("failed to find kernel BTF type ID of 'bpf_iter_")
        .nth(1)
    {
        let target = rest.split('\'').next().unwrap_or("?");
        let since = match target {
            "task_vma" => " (Linux 5.12+)",
            "unix" => " (Linux 5.17+)",
            "task" | "task_file" => " (Linux 5.8+)",
            _ => "",
        };
        return Some(format!("this kernel has no {target} iterator{since}"));
    }
    if msg.contains("failed to find kernel BTF type ID of") {
        return Some("this kernel lacks the program's attach point".into());
    }
    for helper in ["bpf_d_path", "bpf_loop", "bpf_seq_write"] {
        if msg.contains(&format!("unknown func {helper}"))
            || (msg.contains(helper) && msg.contains("not allowed"))
        {
            return Some(format!(
                "the kernel does not allow {helper} in this program type"
            ));
        }
    }
    if msg.contains("invalid func unknown#195896080") || msg.contains("bad CO-RE relocation") {
        return Some("a kernel struct field the program reads is missing (CO-RE)".into());
    }
    None
}

/// Storage for an open BPF object. A skeleton borrows it for as long as
/// it lives, and the skeletons here live in structs, so it is leaked: a
/// few dozen bytes per load, and cairn loads at most a handful per run.
pub(super) fn object_storage() -> &'static mut MaybeUninit<OpenObject> {
    Box::leak(Box::new(MaybeUninit::uninit()))
}

/// `--no-bpf` for this run: the small programs ([`load_small`]) are not
/// loaded, and what needs them is refused, naming `--no-bpf`.
static DISABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turns the small programs off (`--no-bpf`) or on for the rest of the run.
pub fn set_disabled(off: bool) {
    DISABLED.store(off, std::sync::atomic::Ordering::Relaxed);
}

/// Whether `--no-bpf` turned the small programs off.
pub fn disabled() -> bool {
    DISABLED.load(std::sync::atomic::Ordering::Relaxed)
}

/// The error of a small program not loaded because of `--no-bpf`.
pub(super) fn off_error(name: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("{name} not loaded: BPF is off (--no-bpf)"),
    )
}

/// Opens and loads one of the small skeletons (`name`: its object, e.g.
/// "aio.bpf.o"), the one way every small program is loaded: an
/// `Unsupported` error naming `--no-bpf` when BPF is off for this run,
/// libbpf's (or the verifier's) reason when it fails.
pub(super) fn load_small<B>(
    name: &str,
) -> io::Result<<<B as SkelBuilder<'static>>::Output as OpenSkel<'static>>::Output>
where
    B: SkelBuilder<'static> + Default,
{
    if disabled() {
        return Err(off_error(name));
    }
    load_small_always::<B>(name)
}

/// [`load_small`] even with `--no-bpf`: for the oracle, whose snapshots
/// before the dump and after the restore must read the same fields.
pub(super) fn load_small_always<B>(
    name: &str,
) -> io::Result<<<B as SkelBuilder<'static>>::Output as OpenSkel<'static>>::Output>
where
    B: SkelBuilder<'static> + Default,
{
    quiet_libbpf();
    let open = B::default()
        .open(object_storage())
        .map_err(|e| bpf_err(&format!("open {name}"), e))?;
    open.load().map_err(|e| bpf_err(&format!("load {name}"), e))
}

/// The bytes the three inventory iterators wrote for one tree.
#[derive(Debug, Default)]
pub struct IterOutput {
    pub tasks: Vec<u8>,
    pub vmas: Vec<u8>,
    pub files: Vec<u8>,
    /// Why `vmas` is empty by design: the task_vma program is not loaded
    /// on this kernel (the VMAs must be read from /proc).
    pub no_vmas: Option<String>,
    /// Why `files` is empty by design: the task_file program is not
    /// loaded (the fds must be read from /proc).
    pub no_files: Option<String>,
    /// Tasks below the deepest level the programs walk (not reported).
    pub too_deep: u64,
    /// Tree processes that did not fit in the tree map.
    pub map_full: u64,
}

/// The start time of process `pid` in CLOCK_BOOTTIME nanoseconds, rounded
/// down to a clock tick (from /proc/PID/stat), for the BPF walks' early
/// stop (bpf/subtree.h): 0, which turns the early stop off, when it cannot
/// be known exactly: an unreadable stat, or cairn in a time namespace with
/// offsets (the kernel adds the reader's boottime offset to the field).
fn root_start_ns(pid: i32) -> u64 {
    let offsets_zero = match std::fs::read_to_string("/proc/self/timens_offsets") {
        Ok(s) => s
            .lines()
            .all(|l| l.split_whitespace().skip(1).all(|v| v == "0")),
        Err(_) => true,
    };
    if !offsets_zero {
        return 0;
    }
    // SAFETY: sysconf reads a constant of the C library; no pointers.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        return 0;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Field 22; the fields after the comm's ')' start with field 3.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(22 - 3))
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(0, |ticks| ticks.saturating_mul(1_000_000_000 / hz as u64))
}

/// The programs of bpf/inventory.bpf.c: (program, section). The task
/// iterator is needed for anything; without the task_vma or task_file
/// one, the VMAs or fds come from /proc.
pub const INVENTORY_PROGS: [(&str, &str); 3] = [
    ("tasks", "iter/task"),
    ("vmas", "iter/task_vma"),
    ("files", "iter/task_file"),
];

/// The loaded inventory iterators (task, and task_vma and task_file
/// where this kernel takes them).
pub struct Iterators {
    skel: InventorySkel<'static>,
    generation: u32,
    /// Programs not loaded on this kernel, with libbpf's or the
    /// verifier's reason.
    left_out: Vec<(&'static str, String)>,
}

impl Iterators {
    /// Opens and loads bpf/inventory.bpf.c (CO-RE against the running
    /// kernel's BTF; the verifier checks every program here). A program
    /// this kernel refuses (no such iterator, a helper it does not allow
    /// there, the verifier) is left out and the rest loaded again, with
    /// its reason kept ([`Iterators::left_out`]); the task iterator is
    /// needed, so its refusal (or the object's: maps, BTF, privilege) is
    /// the error.
    pub fn load() -> io::Result<Iterators> {
        quiet_libbpf();
        // For tests: the fallback of a kernel without these programs, on
        // one that has them.
        let mut left_out: Vec<(&'static str, String)> = std::env::var("CAIRN_BPF_LEAVE_OUT")
            .unwrap_or_default()
            .split(',')
            .filter_map(|p| ["vmas", "files"].into_iter().find(|n| *n == p))
            .map(|n| {
                (
                    n,
                    "left out by CAIRN_BPF_LEAVE_OUT (a test setting)".to_string(),
                )
            })
            .collect();
        loop {
            let mut open = InventorySkelBuilder::default()
                .open(object_storage())
                .map_err(|e| bpf_err("open inventory.bpf.o", e))?;
            for (name, _) in &left_out {
                let prog = match *name {
                    "vmas" => &mut open.progs.vmas,
                    _ => &mut open.progs.files,
                };
                prog.set_autoload(false);
            }
            take_log();
            match open.load() {
                Ok(skel) => {
                    return Ok(Iterators {
                        skel,
                        generation: 0,
                        left_out,
                    })
                }
                Err(e) => {
                    let msgs = take_log();
                    let err = bpf_err_from("load inventory.bpf.o", e, &msgs);
                    let prog = failed_program(&msgs).and_then(|p| {
                        INVENTORY_PROGS
                            .iter()
                            .map(|(n, _)| *n)
                            .find(|n| *n == p && *n != "tasks")
                    });
                    match prog {
                        Some(p) if !left_out.iter().any(|(n, _)| *n == p) => {
                            crate::debug!("bpf: inventory program {p} left out: {err}");
                            left_out.push((p, err.to_string()));
                        }
                        _ => return Err(err),
                    }
                }
            }
        }
    }

    /// The programs of [`INVENTORY_PROGS`] not loaded here, with why.
    pub fn left_out(&self) -> &[(&'static str, String)] {
        &self.left_out
    }

    /// Why program `name` is not loaded, or None if it is.
    pub fn why_not(&self, name: &str) -> Option<&str> {
        self.left_out
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, why)| why.as_str())
    }

    /// Runs only the task iterator for the tree rooted at `root`: every
    /// task (thread) of the tree, one record each (the freezer's snapshot).
    pub fn tasks(&mut self, root: i32) -> io::Result<IterOutput> {
        self.start(root)?;
        let tasks = run_iter(&self.skel.progs.tasks, "iter/task")?;
        let mut out = self.counters()?;
        out.tasks = tasks;
        Ok(out)
    }

    fn start(&mut self, root: i32) -> io::Result<()> {
        self.generation = self.generation.wrapping_add(1).max(1);
        let bss = self
            .skel
            .maps
            .bss_data
            .as_deref_mut()
            .ok_or_else(|| io::Error::other("inventory.bpf.o has no .bss"))?;
        bss.root_tgid = root;
        bss.root_start_ns = root_start_ns(root);
        bss.generation = self.generation;
        bss.too_deep = 0;
        bss.tree_map_full = 0;
        Ok(())
    }

    fn counters(&self) -> io::Result<IterOutput> {
        let bss = self
            .skel
            .maps
            .bss_data
            .as_deref()
            .ok_or_else(|| io::Error::other("inventory.bpf.o has no .bss"))?;
        Ok(IterOutput {
            too_deep: bss.too_deep,
            map_full: bss.tree_map_full,
            ..IterOutput::default()
        })
    }

    /// Runs the iterators, in order, for the tree rooted at `root` (a pid
    /// as cairn sees it; cairn must run in the initial pid namespace, see
    /// `crate::inventory`). A program not loaded here writes nothing, and
    /// the output says why ([`IterOutput::no_vmas`], `no_files`).
    pub fn collect(&mut self, root: i32) -> io::Result<IterOutput> {
        self.start(root)?;
        let tasks = run_iter(&self.skel.progs.tasks, "iter/task")?;
        let no_vmas = self.why_not("vmas").map(str::to_string);
        let vmas = match no_vmas {
            None => run_iter(&self.skel.progs.vmas, "iter/task_vma")?,
            Some(_) => Vec::new(),
        };
        let no_files = self.why_not("files").map(str::to_string);
        let files = match no_files {
            None => run_iter(&self.skel.progs.files, "iter/task_file")?,
            Some(_) => Vec::new(),
        };
        Ok(IterOutput {
            tasks,
            vmas,
            files,
            no_vmas,
            no_files,
            ..self.counters()?
        })
    }
}

/// Attaches an iterator program, creates one iterator and reads it to the
/// end. The kernel hands out at most a few pages per read(2); a large
/// buffer lets it fill them all.
pub(super) fn run_iter(prog: &libbpf_rs::ProgramMut<'_>, what: &str) -> io::Result<Vec<u8>> {
    let link = prog
        .attach()
        .map_err(|e| bpf_err(&format!("attach {what}"), e))?;
    let mut it = libbpf_rs::Iter::new(&link).map_err(|e| bpf_err(&format!("create {what}"), e))?;
    let mut out = Vec::with_capacity(1 << 20);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match it.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("read {what}: {e}"))),
        }
    }
    Ok(out)
}

/// The fork/exit tracker (tp_btf/sched_process_fork and
/// sched_process_exit) of one tree, with its ring buffer.
pub struct ForkTracker {
    skel: ForksSkel<'static>,
    _links: Vec<Link>,
    ring: RingBuffer<'static>,
    pending: Rc<RefCell<Vec<u8>>>,
}

impl ForkTracker {
    /// Loads bpf/forks.bpf.c and attaches both programs, watching nothing
    /// yet (see [`ForkTracker::watch`]).
    pub fn load() -> io::Result<ForkTracker> {
        quiet_libbpf();
        let open = ForksSkelBuilder::default()
            .open(object_storage())
            .map_err(|e| bpf_err("open forks.bpf.o", e))?;
        let skel = open.load().map_err(|e| bpf_err("load forks.bpf.o", e))?;
        let pending = Rc::new(RefCell::new(Vec::new()));
        let sink = Rc::clone(&pending);
        let mut rb = RingBufferBuilder::new();
        rb.add(&skel.maps.events, move |data: &[u8]| {
            sink.borrow_mut().extend_from_slice(data);
            0
        })
        .map_err(|e| bpf_err("ring buffer", e))?;
        let ring = rb.build().map_err(|e| bpf_err("ring buffer", e))?;
        let links = vec![
            skel.progs
                .on_fork
                .attach()
                .map_err(|e| bpf_err("attach tp_btf/sched_process_fork", e))?,
            skel.progs
                .on_exit
                .attach()
                .map_err(|e| bpf_err("attach tp_btf/sched_process_exit", e))?,
        ];
        Ok(ForkTracker {
            skel,
            _links: links,
            ring,
            pending,
        })
    }

    /// From now on, reports every task created in or leaving the tree of
    /// `root` (0: nothing). Events of an earlier tree are discarded and
    /// the counters start afresh.
    pub fn watch(&mut self, root: i32) -> io::Result<()> {
        let bss = self
            .skel
            .maps
            .bss_data
            .as_deref_mut()
            .ok_or_else(|| io::Error::other("forks.bpf.o has no .bss"))?;
        bss.root_tgid = 0;
        self.drain()?;
        let bss = self
            .skel
            .maps
            .bss_data
            .as_deref_mut()
            .ok_or_else(|| io::Error::other("forks.bpf.o has no .bss"))?;
        bss.lost = 0;
        bss.too_deep = 0;
        bss.root_start_ns = if root > 0 { root_start_ns(root) } else { 0 };
        bss.root_tgid = root;
        Ok(())
    }

    /// Takes every event submitted so far (a sequence of
    /// `struct cairn_event`). Reads the mapped ring; no system call.
    pub fn drain(&mut self) -> io::Result<Vec<u8>> {
        self.ring
            .consume()
            .map_err(|e| bpf_err("consume ring buffer", e))?;
        Ok(std::mem::take(&mut *self.pending.borrow_mut()))
    }

    /// Events dropped because the ring buffer was full.
    pub fn lost(&self) -> u64 {
        self.skel.maps.bss_data.as_deref().map_or(0, |b| b.lost)
    }

    /// Tasks deeper than the programs walk (their events are missing).
    pub fn too_deep(&self) -> u64 {
        self.skel.maps.bss_data.as_deref().map_or(0, |b| b.too_deep)
    }
}

/// The programs of this run, loaded once (per thread: libbpf objects are
/// not shared between threads) and reused by every code path: the
/// feature probes load them, the dump and `cairn inventory` use them.
/// Each part is there or says why it is not.
pub struct Loaded {
    pub iters: Result<RefCell<Iterators>, String>,
    pub tracker: Result<RefCell<ForkTracker>, String>,
}

thread_local! {
    static LOADED: std::cell::OnceCell<Rc<Loaded>> = const { std::cell::OnceCell::new() };
}

/// The loaded programs (the same answer for the whole run).
pub fn shared() -> Rc<Loaded> {
    LOADED.with(|cell| {
        Rc::clone(cell.get_or_init(|| {
            Rc::new(Loaded {
                iters: Iterators::load()
                    .map(RefCell::new)
                    .map_err(|e| e.to_string()),
                tracker: ForkTracker::load()
                    .map(RefCell::new)
                    .map_err(|e| e.to_string()),
            })
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_start_is_at_most_the_true_start() {
        // cairn's own start: before now, and after boot.
        let ns = root_start_ns(std::process::id() as i32);
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: ts is a valid, writable timespec.
        let r = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
        assert_eq!(r, 0);
        let now = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
        assert!(ns > 0 && ns <= now, "{ns} vs now {now}");
        assert_eq!(root_start_ns(i32::MAX), 0);
    }

    #[test]
    fn a_refused_program_is_found_and_its_kernel_limit_named() {
        let missing: Vec<String> = [
            "libbpf: map 'tree': created",
            "libbpf: prog 'vmas': failed to find kernel BTF type ID of 'bpf_iter_task_vma': -3",
            "libbpf: prog 'vmas': failed to prepare load attributes: -3",
            "libbpf: failed to load object 'inventory_bpf'",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(failed_program(&missing).as_deref(), Some("vmas"));
        let e = bpf_err_from(
            "load inventory.bpf.o",
            libbpf_rs::Error::from(io::Error::from_raw_os_error(libc::ESRCH)),
            &missing,
        )
        .to_string();
        assert!(
            e.starts_with(
                "load inventory.bpf.o: this kernel has no task_vma iterator (Linux 5.12+)"
            ) && e.contains("prog 'vmas': failed to"),
            "{e}"
        );
        assert_eq!(
            kernel_hint(&missing[1]).as_deref(),
            Some("this kernel has no task_vma iterator (Linux 5.12+)")
        );
        assert_eq!(
            kernel_hint("1: (85) call bpf_d_path#147 | helper call is not allowed in probe")
                .as_deref(),
            Some("the kernel does not allow bpf_d_path in this program type")
        );
        assert_eq!(
            failed_program(&["libbpf: failed to create map 'tree': -1".to_string()]),
            None
        );
        assert_eq!(kernel_hint("R3 min value is negative"), None);
    }

    #[test]
    fn verifier_reason_names_the_program_and_the_last_log_lines() {
        let msgs: Vec<String> = [
            "libbpf: map 'tree': created",
            "libbpf: prog 'vmas': BPF program load failed: Permission denied",
            "libbpf: prog 'vmas': -- BEGIN PROG LOAD LOG --\n0: R1=ctx() R10=fp0\n\
             1: (85) call bpf_d_path#147\nhelper call is not allowed in probe\n\
             processed 12 insns (limit 1000000)\n-- END PROG LOAD LOG --",
            "libbpf: failed to load object 'inventory_bpf'",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let r = verifier_reason(&msgs).unwrap();
        assert!(
            r.starts_with("program vmas refused by the verifier: "),
            "{r}"
        );
        assert!(r.ends_with("helper call is not allowed in probe"), "{r}");
        assert_eq!(verifier_reason(&msgs[..1]), None);
    }
}
