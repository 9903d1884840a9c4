//! The oracle (docs/ORACLE.md): `dump --oracle` snapshots the kernel's
//! view of the tree, `restore --compare` fails on any unexplained
//! difference between it and the restored tree.
//! - a restore with --compare of a workload passes;
//! - a difference is caught: the stored snapshot is edited (as a
//!   forger would, inventory fixed) so that one field of the dumped tree
//!   says something the restored tree cannot match; the restore fails,
//!   names pid and field, and leaves no process behind;
//! - --compare without a snapshot, and a damaged snapshot, are clear
//!   errors before anything is restored.

#[cfg(not(feature = "fuzz"))]
compile_error!(
    "tests/oracle.rs needs cairn's `fuzz` feature: see [dev-dependencies] in Cargo.toml"
);

mod common;

use std::fs;
use std::path::PathBuf;

use cairn::image::mutate::ImageSet;
use cairn::image::proto::KernelView;
use cairn::image::{names, ImageType};
use common::*;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A copy of `w`'s images with the snapshot changed by `edit`.
fn forged(w: &Workload, tag: &str, edit: impl FnOnce(&mut KernelView)) -> PathBuf {
    let mut set = ImageSet::load(&w.images).expect("load images");
    let mut v: KernelView = set
        .message(ImageType::Oracle, names::ORACLE)
        .expect("the dump wrote oracle.img");
    edit(&mut v);
    set.set_message(ImageType::Oracle, names::ORACLE, &v);
    let d = w.dir.join(format!("forged-{tag}"));
    let _ = fs::remove_dir_all(&d);
    set.write(&d).expect("write forged images");
    d
}

/// A workload with a child (copy-on-write memory, a pipe between them)
/// restored with --compare (the harness's default) passes; the snapshot
/// is in the images and holds per-task fields of every kind.
#[test]
fn restore_with_compare_passes() {
    if skip_unless_root() {
        return;
    }
    let mut t = TreeTest::start("tree_cow", &[]);
    t.dump_ok(&[]);
    t.expect_tree_killed_by_dump();
    let pid = t.w.pid;
    let set = ImageSet::load(&t.w.images).expect("load images");
    let v: KernelView = set
        .message(ImageType::Oracle, names::ORACLE)
        .expect("dump --oracle wrote oracle.img");
    assert_eq!(v.root_pid, pid);
    let root = v
        .tasks
        .iter()
        .find(|t| t.pid == pid && t.tid == pid)
        .expect("the root's task");
    for f in [
        "status.SigBlk",
        "stat.policy",
        "limits.Max open files",
        "file.oom_score_adj",
        "fd.1.flags",
        "link.cwd",
    ] {
        assert!(
            root.fields.contains_key(f),
            "no {f} in {:?}",
            root.fields.keys()
        );
    }
    assert!(root.fields.keys().any(|k| k.ends_with(".VmFlags")));
    let child = v.tasks.iter().find(|t| t.pid != pid).expect("the child");
    // The 64 MiB buffer is shared copy-on-write at the dump.
    assert!(
        child.fields.iter().any(|(k, v)| k.starts_with("cow.")
            && v.split(' ').next().and_then(|n| n.parse::<u64>().ok()) > Some(10_000)),
        "no copy-on-write sharing recorded: {:?}",
        child
            .fields
            .iter()
            .filter(|(k, _)| k.starts_with("cow."))
            .collect::<Vec<_>>()
    );
    t.restore_start(&[], false);
    t.finish();
    let logs: String = fs::read_dir(&t.w.dir)
        .expect("test dir")
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("cairn-restore-") && n.ends_with(".stderr")
        })
        .map(|e| fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(
        logs.contains("oracle: the restored tree matches the dumped one"),
        "the restore did not compare: {logs}"
    );
}

/// A difference between the snapshot and the restored tree fails the
/// restore, naming pid, field, before and after; nothing is left running.
#[test]
fn a_difference_fails_the_restore_and_is_named() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("sleep_nanosleep", &[]);
    w.dump_ok(&[]);
    w.expect_killed_by_dump();
    let pid = w.pid;
    // One state field of the root and one of the /proc files, as if the
    // dumped process had had them (no real process has these values).
    let d = forged(&w, "changed", |v| {
        let t = v
            .tasks
            .iter_mut()
            .find(|t| t.pid == pid && t.tid == pid)
            .expect("root task");
        t.fields
            .insert("file.oom_score_adj".into(), "-999 (forged)".into());
        t.fields.insert("stat.policy".into(), "42".into());
    });
    let r = restore_expect_fail(&d, &["--compare"], pid);
    let e = stderr(&r);
    assert!(
        e.contains(&format!(
            "pid {pid}: file.oom_score_adj: before \"-999 (forged)\""
        )) && e.contains(&format!("pid {pid}: stat.policy: before \"42\"")),
        "the restore must name pid, field and values: {e}"
    );
    assert!(!pid_exists(pid), "the failed restore left pid {pid} behind");
    // A task that the dumped tree had and the restored one lacks.
    let d = forged(&w, "thread", |v| {
        let mut t = v.tasks[0].clone();
        t.tid = 1;
        t.pid = pid;
        v.tasks.push(t);
    });
    let r = restore_expect_fail(&d, &["--compare"], pid);
    let e = stderr(&r);
    assert!(
        e.contains(&format!(
            "pid {pid} tid 1: task: before \"present\" after <absent>"
        )),
        "{e}"
    );
    // The same images, unedited, restore and compare clean.
    w.restore_wait(&[]);
}

/// --compare on a checkpoint without a snapshot, or with a damaged one,
/// is a clear error before anything is restored.
#[test]
fn compare_needs_a_sound_snapshot() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("sleep_nanosleep", &[]);
    w.dump_ok(&[common::NO_ORACLE, "--leave-running"]);
    assert!(!w.images.join(names::ORACLE).exists());
    w.terminate_original_expect_pass();
    let r = restore_expect_fail(&w.images, &["--compare"], w.pid);
    let e = stderr(&r);
    assert!(
        e.contains("oracle.img") && e.contains("dump with --oracle"),
        "{e}"
    );
    // A snapshot whose tasks make no sense, and one that is not a
    // snapshot at all (inventory fixed): refused, naming the file.
    let mut w = Workload::start("sleep_nanosleep", &[]);
    w.dump_ok(&["--leave-running"]);
    w.terminate_original_expect_pass();
    let d = forged(&w, "dup", |v| {
        let t = v.tasks[0].clone();
        v.tasks.push(t);
    });
    let e = stderr(&restore_expect_fail(&d, &["--compare"], w.pid));
    assert!(
        e.contains("oracle.img") && e.contains("listed twice"),
        "{e}"
    );
    let mut set = ImageSet::load(&w.images).expect("load");
    let other = set.get(names::PSTREE).expect("pstree").to_vec();
    set.set_file(names::ORACLE, other);
    let d = w.dir.join("forged-kind");
    set.write(&d).expect("write");
    let r = restore_expect_fail(&d, &["--compare"], w.pid);
    let e = stderr(&r);
    assert_eq!(exit_code(&r.status), 5, "{}", describe(&r));
    assert!(e.contains("oracle.img"), "{e}");
}

/// The scheduling state of /proc/PID/task/TID/sched (policy and kernel
/// priority, not its clocks) is in the snapshot of every thread and
/// compared: a snapshot that says the thread ran SCHED_RR at priority 89
/// fails the restore of a SCHED_OTHER thread, naming both fields.
#[test]
fn a_sched_difference_is_caught() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("sleep_nanosleep", &[]);
    w.dump_ok(&[]);
    w.expect_killed_by_dump();
    let pid = w.pid;
    let set = ImageSet::load(&w.images).expect("load images");
    let v: KernelView = set
        .message(ImageType::Oracle, names::ORACLE)
        .expect("oracle.img");
    let root = v.tasks.iter().find(|t| t.tid == pid).expect("root task");
    assert_eq!(
        root.fields.get("sched.policy").map(String::as_str),
        Some("0"),
        "{:?}",
        root.fields
            .keys()
            .filter(|k| k.starts_with("sched"))
            .collect::<Vec<_>>()
    );
    assert!(root.fields.contains_key("sched.prio"));
    let d = forged(&w, "sched", |v| {
        let t = v
            .tasks
            .iter_mut()
            .find(|t| t.tid == pid)
            .expect("root task");
        t.fields.insert("sched.policy".into(), "2".into());
        t.fields.insert("sched.prio".into(), "89".into());
    });
    let r = restore_expect_fail(&d, &["--compare"], pid);
    let e = stderr(&r);
    assert!(
        e.contains(&format!(
            "pid {pid}: sched.policy: before \"2\" after \"0\""
        )) && e.contains(&format!("pid {pid}: sched.prio: before \"89\"")),
        "the restore must name both sched fields: {e}"
    );
    assert!(!pid_exists(pid), "the failed restore left pid {pid} behind");
    w.restore_wait(&[]);
}

/// State /proc does not show is in the snapshot (read with BPF) and
/// compared: a child subreaper registered for private expedited
/// membarrier has "kernel.subreaper" 1 and a non-zero
/// "kernel.membarrier_state"; a snapshot that says neither (as if the
/// restore had lost them) fails the restore, naming both fields; the
/// unedited images restore and compare clean.
#[test]
fn subreaper_and_membarrier_are_compared() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("oracle_attrs", &[]);
    w.dump_ok(&[]);
    w.expect_killed_by_dump();
    let pid = w.pid;
    let set = ImageSet::load(&w.images).expect("load images");
    let v: KernelView = set
        .message(ImageType::Oracle, names::ORACLE)
        .expect("oracle.img");
    let root = v.tasks.iter().find(|t| t.tid == pid).expect("root task");
    let Some(sub) = root.fields.get("kernel.subreaper") else {
        if let Some(why) = bpf_iterators_unavailable() {
            note_skip(&format!(
                "BPF unavailable ({why}): no subreaper in the snapshot"
            ));
            w.restore_wait(&[]);
            return;
        }
        panic!(
            "BPF works and the snapshot has no kernel.subreaper ({} fields, none kernel.*)",
            root.fields.len()
        );
    };
    assert_eq!(sub, "1", "{:?}", root.fields.get("kernel.subreaper"));
    let mb = root
        .fields
        .get("kernel.membarrier_state")
        .expect("kernel.membarrier_state (CONFIG_MEMBARRIER)")
        .clone();
    assert_ne!(mb, "0x0", "membarrier state of a registered process");
    let d = forged(&w, "attrs", |v| {
        let t = v
            .tasks
            .iter_mut()
            .find(|t| t.tid == pid)
            .expect("root task");
        t.fields.insert("kernel.subreaper".into(), "0".into());
        t.fields
            .insert("kernel.membarrier_state".into(), "0x0".into());
    });
    let r = restore_expect_fail(&d, &["--compare"], pid);
    let e = stderr(&r);
    assert!(
        e.contains(&format!(
            "pid {pid}: kernel.subreaper: before \"0\" after \"1\""
        )) && e.contains(&format!(
            "pid {pid}: kernel.membarrier_state: before \"0x0\" after \"{mb}\""
        )),
        "the restore must name both fields: {e}"
    );
    assert!(!pid_exists(pid), "the failed restore left pid {pid} behind");
    w.restore_wait(&[]);
}
