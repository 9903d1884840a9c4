//! `cairn check`: what this kernel offers and which mechanism cairn picks
//! for each part of its job, from the same probe results
//! ([`crate::sys::probe::features`]) that dump and restore use, and a
//! verdict: whether cairn can checkpoint and restore here as this user
//! (exit code 0) or not, with what is missing (exit code 1).

use std::fmt::Write as _;

use crate::error::{IoContext, Result};
use crate::json::json_string;
use crate::sys::probe::{features, Collection, DirtyTracking, Features, PidRestore};

/// Prints [`render`]'s output on stdout; returns the exit code: 0 if
/// cairn can checkpoint and restore here, 1 if not ([`verdict`]).
pub fn check(json: bool) -> Result<i32> {
    let f = features();
    let mut out = render(f, json);
    let locks = network_locks(json);
    if json {
        // One more member of the object.
        if let Some(body) = out.trim_end().strip_suffix('}') {
            out = format!("{body},\"network_locks\":{locks}}}\n");
        }
    } else {
        // The verdict stays the last line: the locks go before it.
        let v = format!("\n{}\n", verdict_line(&verdict(f)));
        if let Some(body) = out.strip_suffix(&v) {
            out = format!("{body}{locks}{v}");
        } else {
            out += &locks;
        }
    }
    let mut stdout = std::io::stdout().lock();
    std::io::Write::write_all(&mut stdout, out.as_bytes()).at("<stdout>")?;
    Ok(if verdict(f).is_empty() { 0 } else { 1 })
}

/// cairn's network lock tables in this network namespace
/// ([`crate::netlock::tables`]) and what became of each: text (a section
/// before the verdict, nothing if there is none) or a JSON array.
fn network_locks(json: bool) -> String {
    use crate::netlock::{tables, State};
    if !rustix::process::geteuid().is_root() {
        let why = "listing nftables tables needs root";
        return match json {
            true => format!("{{\"error\":{}}}", json_string(why)),
            false => format!("\nnetwork locks: not listed ({why})\n"),
        };
    }
    let list = match crate::netlock::nft_path().map(|_| tables()) {
        None => Ok(Vec::new()),
        Some(r) => r,
    };
    let list = match list {
        Ok(l) => l,
        Err(e) if json => return format!("{{\"error\":{}}}", json_string(&e.to_string())),
        Err(e) => return format!("\nnetwork locks: not listed ({e})\n"),
    };
    if json {
        let items: Vec<String> = list
            .iter()
            .map(|t| {
                let dir = t.owner.as_ref().and_then(|o| o.dir.as_ref());
                format!(
                    "{{\"table\":{},\"state\":{},\"detail\":{},\"images_dir\":{}}}",
                    json_string(&t.name),
                    json_string(t.state.name()),
                    json_string(&t.state.detail()),
                    dir.map_or("null".into(), |d| json_string(&d.display().to_string()))
                )
            })
            .collect();
        return format!("[{}]", items.join(","));
    }
    if list.is_empty() {
        return String::new();
    }
    let mut out = String::from("\nnetwork locks (nft tables of --tcp-established dumps):\n");
    for t in &list {
        let hint = match &t.state {
            State::Abandoned { .. } => format!(": `cairn unlock --table {}`", t.name),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{}  {} ({}){hint}",
            t.name,
            t.state.name(),
            t.state.detail()
        );
    }
    out
}

/// What cairn lacks here, as this user, to checkpoint and restore a
/// tree of its own user: one line per missing piece, naming the
/// capability or setting; empty when nothing is missing.
pub fn verdict(f: &Features) -> Vec<String> {
    let mut missing = Vec::new();
    let cap = f.cap_checkpoint_restore.available || f.cap_sys_admin.available;
    if !cap {
        missing.push(
            "CAP_CHECKPOINT_RESTORE (or CAP_SYS_ADMIN, or root): a dump reads mapped files \
             through /proc/PID/map_files and a restore gives processes their pids; \
             e.g. `setcap cap_checkpoint_restore,cap_sys_ptrace+ep` on the binary"
                .to_string(),
        );
    } else if !f.clone3_set_tid.available && !f.ns_last_pid_writable.available {
        missing.push(format!(
            "a way to give restored processes their pids: clone3 set_tid ({}) and \
             ns_last_pid ({}) both fail",
            f.clone3_set_tid.detail, f.ns_last_pid_writable.detail
        ));
    }
    if !f.ptrace_scope.available {
        missing.push(format!(
            "ptrace: Yama ptrace_scope is {}; cairn cannot trace any process",
            f.ptrace_scope.detail
        ));
    }
    for (name, feat, what) in [
        (
            "process_vm_readv",
            &f.process_vm_readv,
            "a dump reads memory with it",
        ),
        ("kcmp", &f.kcmp, "a dump compares fd tables with it"),
    ] {
        if !feat.available {
            missing.push(format!("{name} ({what}): {}", feat.detail));
        }
    }
    missing
}

/// The verdict line: "cairn can checkpoint and restore here" or
/// "cairn cannot checkpoint and restore here: missing ...".
pub fn verdict_line(missing: &[String]) -> String {
    if missing.is_empty() {
        "cairn can checkpoint and restore here".into()
    } else {
        format!(
            "cairn cannot checkpoint and restore here as uid {}: missing {}",
            rustix::process::geteuid().as_raw(),
            missing.join("; ")
        )
    }
}

/// The mechanism that gives restored processes their pids, or
/// "unavailable" when neither works.
fn pid_mechanism(f: &Features) -> (&'static str, String) {
    match f.pid_restore() {
        PidRestore::Clone3SetTid => (
            PidRestore::Clone3SetTid.as_str(),
            f.clone3_set_tid.detail.clone(),
        ),
        PidRestore::NsLastPid if f.ns_last_pid_writable.available => (
            PidRestore::NsLastPid.as_str(),
            format!("clone3 set_tid unavailable: {}", f.clone3_set_tid.detail),
        ),
        PidRestore::NsLastPid => (
            "unavailable",
            format!(
                "clone3 set_tid: {}; ns_last_pid: {}",
                f.clone3_set_tid.detail, f.ns_last_pid_writable.detail
            ),
        ),
    }
}

/// One part of cairn's job and how it is done here.
pub struct Mechanism {
    pub part: &'static str,
    pub mechanism: &'static str,
    pub detail: String,
}

/// The mechanism cairn uses for each part on this machine.
pub fn mechanisms(f: &Features) -> Vec<Mechanism> {
    let (pid_mech, pid_detail) = pid_mechanism(f);
    let dirty = f.dirty_tracking();
    vec![
        Mechanism {
            part: "freezing",
            mechanism: "ptrace seize+interrupt",
            detail: "cgroup freezer not used yet".into(),
        },
        Mechanism {
            part: "pid_restore",
            mechanism: pid_mech,
            detail: pid_detail,
        },
        Mechanism {
            part: "dirty_tracking",
            mechanism: dirty.as_str(),
            detail: match dirty {
                DirtyTracking::SoftDirty => "soft-dirty works".into(),
                DirtyTracking::UffdWpPagemapScan => {
                    "no soft-dirty; uffd WP_ASYNC and PAGEMAP_SCAN work".into()
                }
                DirtyTracking::ContentHashing => {
                    "neither soft-dirty nor uffd-wp + PAGEMAP_SCAN works".into()
                }
            },
        },
        Mechanism {
            part: "rseq",
            mechanism: if f.ptrace_get_rseq_conf.available {
                "PTRACE_GET_RSEQ_CONFIGURATION"
            } else {
                "rseq(2) probe: glibc's areas only"
            },
            detail: if f.ptrace_get_rseq_conf.available {
                "any registered rseq area is read".into()
            } else {
                format!(
                    "{}; a thread whose rseq area is not glibc's is refused at dump (Linux 5.13 \
                     reads any)",
                    f.ptrace_get_rseq_conf.detail
                )
            },
        },
        Mechanism {
            part: "background_snapshot",
            mechanism: if f.uffd_wp_sync.available && f.pagemap_scan.available {
                "uffd-wp sync (dump --leave-running)"
            } else {
                "unavailable: frozen copy"
            },
            detail: if f.uffd_wp_sync.available && !f.pagemap_scan.available {
                format!("PAGEMAP_SCAN: {}", f.pagemap_scan.detail)
            } else {
                f.uffd_wp_sync.detail.clone()
            },
        },
        Mechanism {
            part: "tcp_established",
            mechanism: match (f.tcp_repair.available, crate::netlock::nft_path()) {
                (true, Some(_)) => "tcp_repair + nftables lock",
                (true, None) => "tcp_repair, --network-lock=skip only",
                (false, _) => "unavailable",
            },
            detail: match crate::netlock::nft_path() {
                Some(p) => format!("{}; nft at {}", f.tcp_repair.detail, p.display()),
                None => format!(
                    "{}; nft not installed (Debian package nftables)",
                    f.tcp_repair.detail
                ),
            },
        },
        Mechanism {
            part: "inventory",
            mechanism: f.inventory().as_str(),
            detail: match f.inventory() {
                Collection::Bpf => inventory_parts(f),
                Collection::Proc if !f.bpf_iter.available => {
                    format!("BPF iterators unavailable: {}", f.bpf_iter.detail)
                }
                Collection::Proc => f.initial_pid_ns.detail.clone(),
            },
        },
        Mechanism {
            part: "fork_tracking",
            mechanism: f.fork_tracking().as_str(),
            detail: match f.fork_tracking() {
                Collection::Bpf => {
                    "tp_btf sched_process_fork/exit into a ring buffer (--no-bpf: /proc children lists)".into()
                }
                Collection::Proc if !f.bpf_tp_btf.available => {
                    format!("tp_btf unavailable: {}; /proc children lists", f.bpf_tp_btf.detail)
                }
                Collection::Proc if !f.bpf_ringbuf.available => {
                    format!("ring buffer unavailable: {}; /proc children lists", f.bpf_ringbuf.detail)
                }
                Collection::Proc => "BPF inventory unavailable; /proc children lists".into(),
            },
        },
    ]
}

/// What the BPF inventory takes from which program here: every part by
/// its iterator, or, for a program this kernel does not load, that part
/// from /proc with the reason.
fn inventory_parts(f: &Features) -> String {
    let mut by_bpf = vec!["task"];
    let mut from_proc = Vec::new();
    for (it, feat, part) in [
        (
            "task_vma",
            &f.bpf_iter_task_vma,
            "VMAs from /proc/PID/smaps",
        ),
        (
            "task_file",
            &f.bpf_iter_task_file,
            "fds from /proc/PID/fd and fdinfo",
        ),
    ] {
        if feat.available {
            by_bpf.push(it);
        } else {
            from_proc.push(format!("{part}: {it} iterator {}", feat.detail));
        }
    }
    let mut s = match by_bpf.len() {
        1 => "task iterator".to_string(),
        2 => format!("{} and {} iterators", by_bpf[0], by_bpf[1]),
        _ => "task, task_vma and task_file iterators".to_string(),
    };
    for p in &from_proc {
        let _ = write!(s, "; {p}");
    }
    s.push_str(" (--no-bpf: /proc)");
    s
}

/// Formats the probe results as aligned text or as one JSON object
/// `{"kernel", "features": {name: {"available", "detail"}}, "mechanisms":
/// {part: {"mechanism", "detail"}}, "verdict": {"ok", "line",
/// "missing": [...]}}`; the text ends with the verdict line.
pub fn render(f: &Features, json: bool) -> String {
    let mechs = mechanisms(f);
    let missing = verdict(f);
    let mut out = String::new();
    if json {
        let _ = write!(
            out,
            "{{\"kernel\":{},\"probes\":{},\"features\":{{",
            json_string(&f.kernel),
            json_string(&f.source)
        );
        for (i, (name, feat)) in f.list().iter().enumerate() {
            let sep = if i > 0 { "," } else { "" };
            let _ = write!(
                out,
                "{sep}{}:{{\"available\":{},\"detail\":{}}}",
                json_string(name),
                feat.available,
                json_string(&feat.detail)
            );
        }
        out.push_str("},\"mechanisms\":{");
        for (i, m) in mechs.iter().enumerate() {
            let sep = if i > 0 { "," } else { "" };
            let _ = write!(
                out,
                "{sep}{}:{{\"mechanism\":{},\"detail\":{}}}",
                json_string(m.part),
                json_string(m.mechanism),
                json_string(&m.detail)
            );
        }
        let _ = writeln!(
            out,
            "}},\"verdict\":{{\"ok\":{},\"line\":{},\"missing\":[{}]}}}}",
            missing.is_empty(),
            json_string(&verdict_line(&missing)),
            missing
                .iter()
                .map(|m| json_string(m))
                .collect::<Vec<_>>()
                .join(",")
        );
        return out;
    }
    let width = f
        .list()
        .iter()
        .map(|(n, _)| n.len())
        .chain(mechs.iter().map(|m| m.part.len()))
        .max()
        .unwrap_or(0);
    let _ = writeln!(out, "{:width$}  {}", "kernel", f.kernel);
    let _ = writeln!(out, "{:width$}  {}", "probes", f.source);
    out.push_str("\nfeatures:\n");
    for (name, feat) in f.list() {
        let yn = if feat.available { "yes" } else { "no" };
        let _ = writeln!(out, "{name:width$}  {yn:3} ({})", feat.detail);
    }
    out.push_str("\nmechanisms:\n");
    for m in &mechs {
        let _ = writeln!(out, "{:width$}  {} ({})", m.part, m.mechanism, m.detail);
    }
    let _ = writeln!(out, "\n{}", verdict_line(&missing));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_one_object_with_features() {
        let out = render(features(), true);
        assert!(
            out.starts_with('{') && out.trim_end().ends_with('}'),
            "{out}"
        );
        assert!(out.contains("\"features\":{"), "{out}");
        assert!(out.contains("\"soft_dirty\":{\"available\":"), "{out}");
        assert!(out.contains("\"mechanisms\":{"), "{out}");
        assert!(out.contains("\"dirty_tracking\":{\"mechanism\":"), "{out}");
        // Braces balance outside of strings.
        let (mut depth, mut in_str, mut esc) = (0i32, false, false);
        for c in out.chars() {
            match (in_str, esc, c) {
                (true, true, _) => esc = false,
                (true, false, '\\') => esc = true,
                (true, false, '"') => in_str = false,
                (false, _, '"') => in_str = true,
                (false, _, '{') => depth += 1,
                (false, _, '}') => {
                    depth -= 1;
                    assert!(depth >= 0, "{out}");
                }
                _ => {}
            }
        }
        assert_eq!(depth, 0, "{out}");
        assert!(!in_str);
    }

    #[test]
    fn inventory_names_the_parts_read_from_proc_and_why() {
        let mut f = features().clone();
        let no = |d: &str| crate::sys::probe::Feature {
            available: false,
            detail: d.into(),
        };
        let yes = crate::sys::probe::Feature {
            available: true,
            detail: "t".into(),
        };
        f.bpf_iter_task_vma = yes.clone();
        f.bpf_iter_task_file = yes;
        assert_eq!(
            inventory_parts(&f),
            "task, task_vma and task_file iterators (--no-bpf: /proc)"
        );
        f.bpf_iter_task_vma = no("not loaded: this kernel has no task_vma iterator");
        let s = inventory_parts(&f);
        assert!(
            s.starts_with("task and task_file iterators; VMAs from /proc/PID/smaps: task_vma iterator not loaded: this kernel has no task_vma iterator"),
            "{s}"
        );
        f.bpf_iter_task_file = no("not loaded: why");
        let s = inventory_parts(&f);
        assert!(s.starts_with("task iterator; VMAs from"), "{s}");
        assert!(
            s.contains("; fds from /proc/PID/fd and fdinfo: task_file iterator not loaded: why"),
            "{s}"
        );
    }

    #[test]
    fn text_lists_every_feature_and_mechanism() {
        let f = features();
        let out = render(f, false);
        for (name, _) in f.list() {
            assert!(out.contains(name), "{name} missing: {out}");
        }
        assert!(out.contains("ptrace seize+interrupt"), "{out}");
        assert!(out.contains(f.dirty_tracking().as_str()), "{out}");
        assert!(out.contains("inventory"), "{out}");
        assert!(out.contains("fork_tracking"), "{out}");
        assert!(out.contains(f.inventory().as_str()), "{out}");
    }
}
