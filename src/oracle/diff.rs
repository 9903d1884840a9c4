//! Comparing two snapshots field by field. Every difference is
//! explained by a rule of [`ALLOWED`] (a difference that is not a loss,
//! with the reason), listed in [`PENDING_LOSSES`] (a real loss cairn is
//! known to have, reported but not failed on, until its fix is merged),
//! or unexplained: the restore fails. docs/ORACLE.md lists the rules.

use std::collections::{BTreeMap, HashMap};

use crate::image::proto::KernelView;

/// One task's fields, sorted by name.
type Fields = BTreeMap<String, String>;

/// What the rules see of a difference.
pub struct Ctx<'a> {
    pub pid: i32,
    pub tid: i32,
    /// The tree's root (its parent is not part of the checkpoint).
    pub root: i32,
    pub field: &'a str,
    /// The task was a zombie at the dump.
    pub zombie: bool,
    /// The task's other fields at the dump.
    pub task: &'a Fields,
    pub before: Option<&'a str>,
    pub after: Option<&'a str>,
}

/// A difference that is not a loss.
pub struct Allowed {
    /// Field name pattern (`*` matches any run of characters).
    pub field: &'static str,
    /// When it applies (beyond the name).
    pub when: fn(&Ctx) -> bool,
    /// Why this difference is not a loss.
    pub reason: &'static str,
}

fn always(_: &Ctx) -> bool {
    true
}

fn not_zombie(c: &Ctx) -> bool {
    let z = |v: Option<&str>| v.is_some_and(|s| s.starts_with('Z') || s.starts_with('X'));
    !z(c.before) && !z(c.after)
}

fn both_armed_or_both_not(c: &Ctx) -> bool {
    let armed = |v: Option<&str>| v.is_some_and(|s| s.replace(' ', "") != "(0,0)");
    armed(c.before) == armed(c.after)
}

fn zombie(c: &Ctx) -> bool {
    c.zombie
}

fn is_root(c: &Ctx) -> bool {
    c.pid == c.root
}

/// The mm's membarrier state gained exactly the expedited global bits
/// (MEMBARRIER_STATE_GLOBAL_EXPEDITED and its READY, 0xc), on a kernel
/// before 6.3: what a restore registers when its dump could not see them
/// (`kinds::task::objects`, `membarrier_global_assumed`).
fn global_membarrier_assumed(c: &Ctx) -> bool {
    let n =
        |v: Option<&str>| v.and_then(|s| u32::from_str_radix(s.trim_start_matches("0x"), 16).ok());
    let (Some(b), Some(a)) = (n(c.before), n(c.after)) else {
        return false;
    };
    a & !0xc == b & !0xc && a & 0xc == 0xc && b & 0xc == 0 && kernel_before_6_3()
}

fn kernel_before_6_3() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").is_ok_and(|r| {
        let mut it = r
            .trim()
            .split(|c: char| !c.is_ascii_digit())
            .map(|x| x.parse::<u32>().unwrap_or(0));
        (it.next().unwrap_or(0), it.next().unwrap_or(0)) < (6, 3)
    })
}

/// Differences that are not losses, each with its reason.
pub const ALLOWED: &[Allowed] = &[
    Allowed {
        field: "kernel.membarrier_state",
        when: global_membarrier_assumed,
        reason: "dumped before Linux 6.3 without BPF, an expedited global membarrier \
                 registration cannot be seen and is registered (assumed); the process cannot \
                 see it there, and a superfluous one only adds barriers",
    },
    Allowed {
        field: "status.State",
        when: not_zombie,
        reason: "both snapshots are taken with the task ptrace-stopped by cairn; whether it \
                 is stopped (group stop) is in the core image and checked by the tests",
    },
    Allowed {
        field: "stat.state",
        when: not_zombie,
        reason: "as status.State",
    },
    Allowed {
        field: "status.{Sig,Shd}{Blk,Ign,Cgt,Pnd}",
        when: zombie,
        reason: "a zombie receives no signal: its mask and dispositions are those of the \
                 vessel that exited with its status",
    },
    Allowed {
        field: "status.Cpus_allowed{,_list}",
        when: zombie,
        reason: "a zombie runs no more code: its CPU affinity is that of the vessel that \
                 exited with its status",
    },
    Allowed {
        field: "fd.*.it_value",
        when: both_armed_or_both_not,
        reason: "a timerfd's time left decreases while the tree is checkpointed (an armed \
                 timer must stay armed, a disarmed one disarmed)",
    },
    Allowed {
        field: "status.TracerPid",
        when: always,
        reason: "the tracer is cairn, a different process at dump and at restore",
    },
    Allowed {
        field: "status.PPid",
        when: is_root,
        reason: "the root's parent is outside the tree: the restoring cairn",
    },
    Allowed {
        field: "stat.ppid",
        when: is_root,
        reason: "as status.PPid",
    },
    Allowed {
        field: "status.Vm{Peak,HWM,RSS,PTE,Swap}",
        when: always,
        reason: "memory accounting: high-water marks, resident and swapped sizes, page tables",
    },
    Allowed {
        field: "status.Rss*",
        when: always,
        reason: "memory accounting: resident sizes",
    },
    Allowed {
        field: "status.HugetlbPages",
        when: always,
        reason: "memory accounting",
    },
    Allowed {
        field: "status.*voluntary_ctxt_switches",
        when: always,
        reason: "scheduler counters",
    },
    Allowed {
        field: "status.SigQ",
        when: always,
        reason: "signals queued by the whole user (every process of the uid), and its limit",
    },
    Allowed {
        field: "status.FDSize",
        when: always,
        reason:
            "capacity of the fd table, not its contents (the restore uses high fds for a while)",
    },
    Allowed {
        field: "file.sessionid",
        when: always,
        reason: "the audit session id is assigned by the kernel when loginuid is written; no \
                 process can set it",
    },
];

/// A loss cairn is known to have (issue 14), reported as "known loss,
/// issue 14" without failing the restore. Remove an entry when its fix
/// is merged.
pub struct Pending {
    /// Field name pattern (`*` matches any run of characters).
    pub field: &'static str,
    /// When it applies (beyond the name).
    pub when: fn(&Ctx) -> bool,
    /// Which workloads show it.
    pub workload: &'static str,
    /// What is lost.
    pub lost: &'static str,
}

/// Known losses, waiting for their fixes (issue 14). None now: the last
/// one, a few pages of a child losing their copy-on-write sharing under
/// load, was the dump comparing the child's page frames with its
/// parent's read seconds before, while compaction moved some of them
/// (`memory::plan`, `parent_pages_now`).
pub const PENDING_LOSSES: &[Pending] = &[];

/// Glob match with `*` (any run) and `{a,b}` (one of) in the pattern.
pub fn glob(pat: &str, s: &str) -> bool {
    if let Some(open) = pat.find('{') {
        if let Some(close) = pat[open..].find('}') {
            let close = open + close;
            return pat[open + 1..close]
                .split(',')
                .any(|alt| glob(&format!("{}{alt}{}", &pat[..open], &pat[close + 1..]), s));
        }
    }
    match pat.split_once('*') {
        None => pat == s,
        Some((head, tail)) => {
            let Some(rest) = s.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len())
                .filter(|&i| rest.is_char_boundary(i))
                .any(|i| glob(tail, &rest[i..]))
        }
    }
}

/// How a difference is explained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed(&'static str),
    Pending(&'static str, &'static str),
    Unexplained,
}

/// One field that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub pid: i32,
    pub tid: i32,
    pub field: String,
    pub before: Option<String>,
    pub after: Option<String>,
    pub verdict: Verdict,
}

fn short(v: &Option<String>) -> String {
    match v {
        None => "<absent>".into(),
        Some(s) if s.chars().count() > 240 => {
            format!("{:?}...", s.chars().take(240).collect::<String>())
        }
        Some(s) => format!("{s:?}"),
    }
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = if self.pid == self.tid {
            format!("pid {}", self.pid)
        } else {
            format!("pid {} tid {}", self.pid, self.tid)
        };
        write!(
            f,
            "{who}: {}: before {} after {}",
            self.field,
            short(&self.before),
            short(&self.after)
        )
    }
}

fn classify(c: &Ctx) -> Verdict {
    if let Some(a) = ALLOWED
        .iter()
        .find(|a| glob(a.field, c.field) && (a.when)(c))
    {
        return Verdict::Allowed(a.reason);
    }
    if let Some(p) = PENDING_LOSSES
        .iter()
        .find(|p| glob(p.field, c.field) && (p.when)(c))
    {
        return Verdict::Pending(p.workload, p.lost);
    }
    Verdict::Unexplained
}

/// Task flags (stat field 9) that only BSD process accounting reads:
/// PF_FORKNOEXEC (0x40, forked and not exec'd: every restored task was
/// cloned by cairn) and PF_SUPERPRIV (0x100, used a capability: the
/// restore's own privileged calls).
const ACCOUNTING_PF: u64 = 0x40 | 0x100;

fn mask_flags(f: &mut Fields) {
    if let Some(v) = f.get_mut("stat.flags") {
        if let Some(n) = v
            .strip_prefix("0x")
            .and_then(|h| u64::from_str_radix(h, 16).ok())
        {
            *v = format!("{:#x}", n & !ACCOUNTING_PF);
        }
    }
}

/// VmFlags that are bookkeeping, not a loss when they differ: "ac"
/// (VM_ACCOUNT), "sd" (VM_SOFTDIRTY) and "uw" (VM_UFFD_WP: the
/// write-protect registration of cairn's own dirty-page tracking, which
/// the pre-dumps of a chain leave on every private VMA until the final
/// dump; a program's own userfaultfd is refused at dump with its fd),
/// and "dw" (VM_DENYWRITE, kernels before 5.15: the ELF loader's mark,
/// which no mmap from user space can set; README, Limitations).
const BOOKKEEPING_FLAGS: [&str; 4] = ["ac", "sd", "uw", "dw"];

/// One VMA's fields, for merging.
struct Vma {
    start: u64,
    end: u64,
    f: BTreeMap<String, String>,
}

fn kb(v: Option<&String>) -> u64 {
    v.and_then(|s| s.split(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// Makes the VMAs of a task canonical: VmFlags without "ac" (VM_ACCOUNT
/// is commit accounting: cairn maps a private mapping writable before it
/// sets its final protection, so every restored private mapping is
/// accounted), "sd" (VM_SOFTDIRTY, kernels with soft-dirty: the
/// kernel marks every new VMA so, which makes a restored VMA count as
/// written for the next soft-dirty scan, as it must) and "uw" (cairn's
/// tracking, [`BOOKKEEPING_FLAGS`]), then neighbours that are alike in everything else (same
/// perms, file, flags, contiguous offsets) merged into one, as the
/// kernel would have merged them had they been created alike; their
/// Locked sizes add up.
fn merge_vmas(f: &mut Fields) {
    let mut by: BTreeMap<(u64, u64), BTreeMap<String, String>> = BTreeMap::new();
    let keys: Vec<String> = f
        .keys()
        .filter(|k| k.starts_with("vma."))
        .cloned()
        .collect();
    for k in keys {
        let rest = &k[4..];
        let Some((range, key)) = rest.split_once('.') else {
            continue;
        };
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        let Some(mut v) = f.remove(&k) else { continue };
        if key == "VmFlags" {
            v = v
                .split(' ')
                .filter(|w| !BOOKKEEPING_FLAGS.contains(w))
                .collect::<Vec<_>>()
                .join(" ");
        }
        by.entry((a, b)).or_default().insert(key.to_string(), v);
    }
    let mut out: Vec<Vma> = Vec::new();
    for ((start, end), fields) in by {
        if let Some(prev) = out.last_mut() {
            let alike = |k: &str| prev.f.get(k) == fields.get(k);
            let off = |m: &BTreeMap<String, String>| {
                m.get("offset")
                    .and_then(|o| u64::from_str_radix(o, 16).ok())
            };
            let contiguous = off(&prev.f).map(|o| o + (prev.end - prev.start)) == off(&fields);
            let same = fields
                .keys()
                .chain(prev.f.keys())
                .all(|k| k == "offset" || k == "Locked" || alike(k));
            if prev.end == start && contiguous && same {
                let locked = kb(prev.f.get("Locked")) + kb(fields.get("Locked"));
                if prev.f.contains_key("Locked") {
                    prev.f.insert("Locked".into(), format!("{locked} kB"));
                }
                prev.end = end;
                continue;
            }
        }
        out.push(Vma {
            start,
            end,
            f: fields,
        });
    }
    for v in out {
        for (k, val) in v.f {
            f.insert(format!("vma.{:x}-{:x}.{k}", v.start, v.end), val);
        }
    }
}

/// "pipe:[123]" -> ("pipe", 123).
fn anon_link(v: &str) -> Option<(&str, u64)> {
    let (kind, rest) = v.split_once(":[")?;
    let n = rest.strip_suffix(']')?.parse().ok()?;
    Some((kind, n))
}

/// Whether a path names an object cairn recreates (a new inode is no
/// loss): deleted files, memfds, shared anonymous memory.
fn recreated_path(p: &str) -> bool {
    p.ends_with(" (deleted)") || p.starts_with("/memfd:")
}

/// Whether an fd link names an object whose inode number is new for every
/// process or open (a pidfd: pidfs gives each pid its own inode; a /proc
/// file: procfs inodes belong to the process): a new number is no loss.
fn new_inode_link(v: &str) -> bool {
    v == "anon_inode:[pidfd]" || v.starts_with("/proc/")
}

/// "00:01:101414" (a lock line's MAJ:MIN:INODE) -> ("00:01", 101414).
fn lock_inode(w: &str) -> Option<(&str, u64)> {
    let (dev, ino) = w.rsplit_once(':')?;
    if dev.len() < 3 || !dev.contains(':') {
        return None;
    }
    Some((dev, ino.parse().ok()?))
}

/// An epoll's `tfd` lines ("FD events: .. ino:HEX sdev:DEV", joined by
/// " | ") with `ino:` followed by what `f(FD, inode)` gives, where it
/// gives something.
pub(crate) fn map_tfd_inodes(v: &str, f: impl Fn(&str, u64) -> Option<String>) -> String {
    v.split(" | ")
        .map(|part| {
            let tfd = part.split(' ').next().unwrap_or("");
            part.split(' ')
                .map(|w| {
                    match w
                        .strip_prefix("ino:")
                        .and_then(|h| u64::from_str_radix(h, 16).ok())
                        .and_then(|n| f(tfd, n))
                    {
                        Some(l) => format!("ino:{l}"),
                        None => w.to_string(),
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Replaces the inode numbers of objects that are recreated at restore
/// (pipes, sockets, anonymous shared memory, memfds, deleted files) by
/// labels in order of first appearance in the tree ("pipe:[#2]"), so
/// that the numbers differ but sharing does not: two fds of one pipe
/// have one label, on both sides.
pub fn normalise(view: &KernelView) -> Vec<((i32, i32), Fields)> {
    let mut tasks: Vec<((i32, i32), Fields)> = view
        .tasks
        .iter()
        .map(|t| ((t.pid, t.tid), t.fields.clone().into_iter().collect()))
        .collect();
    tasks.sort_by_key(|t| t.0);
    let mut labels: HashMap<u64, String> = HashMap::new();
    let mut ids: HashMap<u64, String> = HashMap::new();
    fn label(labels: &mut HashMap<u64, String>, ino: u64) -> String {
        let n = labels.len() + 1;
        labels.entry(ino).or_insert_with(|| format!("#{n}")).clone()
    }
    for (_, f) in tasks.iter_mut() {
        // The fields as read: the inode numbers before labelling.
        let raw = f.clone();
        mask_flags(f);
        merge_vmas(f);
        let keys: Vec<String> = f.keys().cloned().collect();
        for k in &keys {
            if let Some(fd) = k.strip_prefix("fd.").and_then(|r| r.strip_suffix(".link")) {
                let v = f[k].clone();
                let ino_key = format!("fd.{fd}.ino");
                if let Some((kind, n)) = anon_link(&v) {
                    let l = label(&mut labels, n);
                    f.insert(k.clone(), format!("{kind}:[{l}]"));
                    if f.get(&ino_key).map(String::as_str) == Some(n.to_string().as_str()) {
                        f.insert(ino_key, l);
                    }
                } else if recreated_path(&v) || new_inode_link(&v) {
                    if let Some(n) = f.get(&ino_key).and_then(|s| s.parse::<u64>().ok()) {
                        let l = label(&mut labels, n);
                        f.insert(ino_key, l);
                    }
                }
            }
            if let Some(range) = k.strip_prefix("vma.").and_then(|r| r.strip_suffix(".path")) {
                let p = f[k].clone();
                let ino_key = format!("vma.{range}.inode");
                // pktring: a packet ring maps its (recreated) socket.
                if let Some(("socket", n)) = anon_link(&p) {
                    let l = label(&mut labels, n);
                    f.insert(k.clone(), format!("socket:[{l}]"));
                    if f.get(&ino_key).map(String::as_str) == Some(n.to_string().as_str()) {
                        f.insert(ino_key, l);
                    }
                } else if recreated_path(&p) {
                    if let Some(n) = f.get(&ino_key).and_then(|s| s.parse::<u64>().ok()) {
                        let l = label(&mut labels, n);
                        f.insert(ino_key, l);
                    }
                }
            }
        }
        // Lock lines name the locked file's inode ("00:01:101414"): a
        // recreated object's inode is replaced by its label.
        for k in &keys {
            if k.ends_with(".lock") || k == "locks" {
                let v = f[k]
                    .split(' ')
                    .map(|w| {
                        match lock_inode(w).and_then(|(dev, n)| Some((dev, labels.get(&n)?))) {
                            Some((dev, l)) => format!("{dev}:{l}"),
                            None => w.to_string(),
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                f.insert(k.clone(), v);
            }
        }
        // An eventfd's id is a kernel-wide counter, new for the recreated
        // one: compared by first appearance, as inodes.
        for k in &keys {
            if k.ends_with(".eventfd-id") {
                if let Ok(n) = f[k].parse::<u64>() {
                    let l = label(&mut ids, n);
                    f.insert(k.clone(), l);
                }
            }
        }
        // Epoll targets name their inode in hex ("ino:1a3"); the kernel
        // lists them in the order of their file's address. A watch of the
        // file its fd still holds takes that fd's label, or keeps its
        // number (an eventfd's anonymous inode, a file on disk): inode
        // numbers of different file systems can be equal (a guest's
        // early sockets and the anon inode), so the number alone could
        // name another object's label on one side only. A watch of a
        // file its fd no longer holds goes by the number.
        for k in &keys {
            if !k.ends_with(".tfd") {
                continue;
            }
            let mut parts: Vec<&str> = f[k].split(" | ").collect();
            parts.sort();
            let v = map_tfd_inodes(&parts.join(" | "), |tfd, n| {
                let key = format!("fd.{tfd}.ino");
                let was = raw.get(&key);
                if was.and_then(|s| s.parse::<u64>().ok()) == Some(n) {
                    return f.get(&key).filter(|now| Some(*now) != was).cloned();
                }
                labels.get(&n).cloned()
            });
            f.insert(k.clone(), v);
        }
        // fds3: an inotify watch names its file's inode in hex and its
        // handle (which holds the inode): a recreated (removed) file's
        // are its label.
        for k in &keys {
            if !k.ends_with(".inotify") {
                continue;
            }
            let v = f[k]
                .split(" | ")
                .map(|w| {
                    let l = w
                        .split(' ')
                        .find_map(|x| x.strip_prefix("ino:"))
                        .and_then(|h| u64::from_str_radix(h, 16).ok())
                        .and_then(|n| labels.get(&n));
                    let Some(l) = l else {
                        return w.to_string();
                    };
                    w.split(' ')
                        .map(|x| match x.split_once(':') {
                            Some(("ino" | "f_handle", _)) => {
                                format!("{}:{l}", x.split(':').next().unwrap_or(""))
                            }
                            _ => x.to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect::<Vec<_>>()
                .join(" | ");
            f.insert(k.clone(), v);
        }
    }
    tasks
}

/// Every field that differs between `before` and `after`, classified.
pub fn diff(before: &KernelView, after: &KernelView) -> Vec<Difference> {
    let b: BTreeMap<(i32, i32), Fields> = normalise(before).into_iter().collect();
    let a: BTreeMap<(i32, i32), Fields> = normalise(after).into_iter().collect();
    let root = before.root_pid;
    let mut out = Vec::new();
    let empty = Fields::new();
    let mut keys: Vec<(i32, i32)> = b.keys().chain(a.keys()).copied().collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let (fb, fa) = (b.get(&k), a.get(&k));
        if fb.is_none() || fa.is_none() {
            out.push(Difference {
                pid: k.0,
                tid: k.1,
                field: "task".into(),
                before: fb.map(|_| "present".into()),
                after: fa.map(|_| "present".into()),
                verdict: Verdict::Unexplained,
            });
            continue;
        }
        let (fb, fa) = (fb.unwrap_or(&empty), fa.unwrap_or(&empty));
        let mut names: Vec<&String> = fb.keys().chain(fa.keys()).collect();
        names.sort();
        names.dedup();
        for name in names {
            let (vb, va) = (fb.get(name), fa.get(name));
            if vb == va {
                continue;
            }
            let ctx = Ctx {
                pid: k.0,
                tid: k.1,
                root,
                field: name,
                zombie: fb.get("status.State").is_some_and(|s| s.starts_with('Z')),
                task: fb,
                before: vb.map(String::as_str),
                after: va.map(String::as_str),
            };
            out.push(Difference {
                pid: k.0,
                tid: k.1,
                field: name.clone(),
                before: vb.cloned(),
                after: va.cloned(),
                verdict: classify(&ctx),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::proto::TaskView;

    type Task<'a> = (i32, i32, &'a [(&'a str, &'a str)]);

    fn view(root: i32, tasks: &[Task]) -> KernelView {
        let mut v = KernelView::new();
        v.root_pid = root;
        for (pid, tid, f) in tasks {
            let mut t = TaskView::new();
            t.pid = *pid;
            t.tid = *tid;
            t.fields = f
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            v.tasks.push(t);
        }
        v
    }

    #[test]
    fn globs() {
        assert!(glob("status.Rss*", "status.RssAnon"));
        assert!(glob("status.Vm{Peak,HWM}", "status.VmHWM"));
        assert!(!glob("status.Vm{Peak,HWM}", "status.VmSize"));
        assert!(glob("vma.*.VmFlags", "vma.7f-8f.VmFlags"));
        assert!(!glob("vma.*.VmFlags", "vma.7f-8f.Locked"));
        assert!(glob("*", ""));
    }

    #[test]
    fn equal_views_have_no_difference() {
        let f: &[(&str, &str)] = &[("status.SigBlk", "0"), ("fd.3.link", "pipe:[10]")];
        let a = view(5, &[(5, 5, f), (5, 6, f)]);
        assert!(diff(&a, &a).is_empty());
    }

    #[test]
    fn a_changed_field_is_unexplained_and_named() {
        let a = view(5, &[(5, 5, &[("file.oom_score_adj", "0")])]);
        let b = view(5, &[(5, 5, &[("file.oom_score_adj", "300")])]);
        let d = diff(&a, &b);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].verdict, Verdict::Unexplained);
        let s = d[0].to_string();
        assert!(
            s.contains("pid 5") && s.contains("file.oom_score_adj"),
            "{s}"
        );
        assert!(s.contains("\"0\"") && s.contains("\"300\""), "{s}");
    }

    #[test]
    fn a_changed_sched_field_is_unexplained() {
        let f: &[(&str, &str)] = &[("sched.policy", "0"), ("sched.prio", "120")];
        let g: &[(&str, &str)] = &[("sched.policy", "0"), ("sched.prio", "125")];
        let d = diff(&view(5, &[(5, 6, f)]), &view(5, &[(5, 6, g)]));
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].field, "sched.prio");
        assert_eq!(d[0].verdict, Verdict::Unexplained);
        assert!(d[0].to_string().starts_with("pid 5 tid 6: sched.prio"));
    }

    #[test]
    fn missing_field_and_missing_thread_are_differences() {
        let a = view(5, &[(5, 5, &[("x", "1")]), (5, 7, &[])]);
        let b = view(5, &[(5, 5, &[])]);
        let d = diff(&a, &b);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d.iter().all(|d| d.verdict == Verdict::Unexplained));
        assert!(d.iter().any(|d| d.tid == 7 && d.field == "task"));
        assert!(d.iter().any(|d| d.field == "x" && d.after.is_none()));
    }

    #[test]
    fn allowlist_applies_with_its_condition() {
        let a = view(
            5,
            &[
                (5, 5, &[("status.PPid", "1"), ("status.VmRSS", "10 kB")]),
                (6, 6, &[("status.PPid", "5")]),
            ],
        );
        let b = view(
            5,
            &[
                (5, 5, &[("status.PPid", "99"), ("status.VmRSS", "20 kB")]),
                (6, 6, &[("status.PPid", "1")]),
            ],
        );
        let d = diff(&a, &b);
        assert_eq!(d.len(), 3);
        let v = |pid, f: &str| {
            d.iter()
                .find(|d| d.pid == pid && d.field == f)
                .map(|d| d.verdict)
        };
        assert!(matches!(v(5, "status.PPid"), Some(Verdict::Allowed(_))));
        assert!(matches!(v(5, "status.VmRSS"), Some(Verdict::Allowed(_))));
        // Not the root: a lost parent is a loss.
        assert_eq!(v(6, "status.PPid"), Some(Verdict::Unexplained));
    }

    #[test]
    fn zombie_state_is_not_allowlisted() {
        let a = view(5, &[(5, 5, &[("status.State", "Z (zombie)")])]);
        let b = view(5, &[(5, 5, &[("status.State", "t (tracing stop)")])]);
        assert_eq!(diff(&a, &b)[0].verdict, Verdict::Unexplained);
        let c = view(5, &[(5, 5, &[("status.State", "S (sleeping)")])]);
        assert!(matches!(diff(&c, &b)[0].verdict, Verdict::Allowed(_)));
    }

    #[test]
    fn vmas_alike_but_for_accounting_are_merged() {
        // (and a restored VMA's soft-dirty mark "sd" is bookkeeping too)
        let before = view(
            5,
            &[(
                5,
                5,
                &[
                    ("vma.1000-3000.perms", "r--p"),
                    ("vma.1000-3000.offset", "00001000"),
                    ("vma.1000-3000.path", "/lib/x"),
                    ("vma.1000-3000.VmFlags", "rd mr"),
                    ("vma.1000-3000.Locked", "0 kB"),
                    ("vma.3000-4000.perms", "r--p"),
                    ("vma.3000-4000.offset", "00003000"),
                    ("vma.3000-4000.path", "/lib/x"),
                    ("vma.3000-4000.VmFlags", "rd mr ac uw"),
                    ("vma.3000-4000.Locked", "0 kB"),
                    ("stat.flags", "0x400000"),
                ],
            )],
        );
        let after = view(
            5,
            &[(
                5,
                5,
                &[
                    ("vma.1000-4000.perms", "r--p"),
                    ("vma.1000-4000.offset", "00001000"),
                    ("vma.1000-4000.path", "/lib/x"),
                    ("vma.1000-4000.VmFlags", "rd mr ac sd"),
                    ("vma.1000-4000.Locked", "0 kB"),
                    ("stat.flags", "0x400140"),
                ],
            )],
        );
        assert!(
            diff(&before, &after).is_empty(),
            "{:?}",
            diff(&before, &after)
        );
        // Not contiguous in the file: two mappings, a difference.
        let mut gap = before.clone();
        gap.tasks[0]
            .fields
            .insert("vma.3000-4000.offset".into(), "00009000".into());
        assert!(!diff(&gap, &after).is_empty());
        // A lost flag is still a difference.
        let mut lost = after.clone();
        lost.tasks[0]
            .fields
            .insert("vma.1000-4000.VmFlags".into(), "rd".into());
        let d = diff(&before, &lost);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].field, "vma.1000-4000.VmFlags");
    }

    #[test]
    fn epoll_watch_of_an_eventfd_keeps_its_anon_inode() {
        // The eventfd's anonymous inode (0x40e) has the number of a pipe
        // created after the restore: the watch is still of the eventfd.
        let side = |pipe: &str| {
            let link = format!("pipe:[{pipe}]");
            view(
                5,
                &[(
                    5,
                    5,
                    &[
                        ("fd.3.link", "anon_inode:[eventfd]"),
                        ("fd.3.ino", "1038"),
                        ("fd.4.link", link.as_str()),
                        ("fd.4.ino", pipe),
                        ("fd.6.tfd", "3 events: 19 data: 3 pos:0 ino:40e sdev:10"),
                    ],
                )],
            )
        };
        assert!(diff(&side("4000"), &side("1038")).is_empty());
    }

    #[test]
    fn recreated_inodes_compare_by_sharing() {
        let before = view(
            5,
            &[(
                5,
                5,
                &[
                    ("fd.3.link", "pipe:[100]"),
                    ("fd.3.ino", "100"),
                    ("fd.4.link", "pipe:[100]"),
                    ("fd.5.link", "socket:[200]"),
                    ("fd.6.tfd", "5 events: 19 data: 5 pos:0 ino:c8 sdev:9"),
                ],
            )],
        );
        let same = view(
            5,
            &[(
                5,
                5,
                &[
                    ("fd.3.link", "pipe:[300]"),
                    ("fd.3.ino", "300"),
                    ("fd.4.link", "pipe:[300]"),
                    ("fd.5.link", "socket:[400]"),
                    ("fd.6.tfd", "5 events: 19 data: 5 pos:0 ino:190 sdev:9"),
                ],
            )],
        );
        assert!(diff(&before, &same).is_empty());
        // Sharing lost: fd 4 is another pipe.
        let split = view(
            5,
            &[(
                5,
                5,
                &[
                    ("fd.3.link", "pipe:[300]"),
                    ("fd.3.ino", "300"),
                    ("fd.4.link", "pipe:[301]"),
                    ("fd.5.link", "socket:[400]"),
                    ("fd.6.tfd", "5 events: 19 data: 5 pos:0 ino:190 sdev:9"),
                ],
            )],
        );
        let d = diff(&before, &split);
        assert!(d.iter().any(|d| d.field == "fd.4.link"), "{d:?}");
    }
}
