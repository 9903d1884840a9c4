//! The dump takes each process's VMAs and fds from the tree's BPF
//! inventory where BPF works, from /proc otherwise (`--no-bpf`): the
//! image inventory records which (`inventory_source`), and the images
//! are the same either way (src/dump/mod.rs, `Discovery`).
mod common;

use std::ffi::OsString;
use std::time::Duration;

use common::*;

/// The tests of this file run one at a time: a task deeper than the BPF
/// programs walk (64 levels) anywhere on the machine makes every
/// collection give up (the iterators cannot tell whether it belongs to the
/// tree), so the deep chain of `deep_tree_falls_back_to_proc_and_says_so`
/// must not overlap the others.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    // These tests compare BPF with /proc: BPF even for small trees.
    std::env::set_var("CAIRN_BPF_MIN_TASKS", "0");
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

/// `cairn show DIR --full` (every image, as text).
fn show(dir: &std::path::Path, tag: &str, out_base: &std::path::Path) -> String {
    let out = run_cairn(
        &[
            OsString::from("show"),
            dir.as_os_str().to_owned(),
            OsString::from("--full"),
        ],
        &out_base.join(tag),
        Duration::from_secs(60),
    );
    assert_ok(&out, &format!("cairn show ({tag})"));
    String::from_utf8(out.stdout).expect("cairn show prints UTF-8")
}

/// The recorded source, and the text without what differs between any
/// two dumps of the same tree: in inventory.img the time, the layer id,
/// the source and the sizes and checksums of the other files (which hold
/// no data of their own); and the order in which the page writer's
/// threads finished their chunks, so a data run names its chunk by the
/// chunk's crc32 and the chunk table is sorted, without offsets.
fn split_source(text: &str) -> (String, String) {
    // The chunk table first: chunk N -> its crc32.
    let mut crcs = Vec::new();
    let mut section = "";
    for line in text.lines() {
        if line.starts_with("=== ") {
            section = line;
        } else if section.starts_with("=== pagestore.img ") {
            if let Some(c) = line.strip_prefix("  crc32: ") {
                crcs.push(c.to_string());
            }
        }
    }
    let mut source = String::new();
    let mut out = String::new();
    let mut block: Vec<&str> = Vec::new();
    let mut chunks: Vec<String> = Vec::new();
    let flush_chunks = |chunks: &mut Vec<String>, out: &mut String| {
        chunks.sort();
        for c in chunks.drain(..) {
            out.push_str(&c);
        }
    };
    for line in text.lines() {
        if line.starts_with("=== ") {
            flush_chunks(&mut chunks, &mut out);
            section = line;
        }
        let inventory = section.starts_with("=== inventory.img ");
        let pagemap = section.starts_with("=== pagemap-");
        let pagestore = section.starts_with("=== pagestore.img ");
        // The dump's statistics (timings) differ from one dump to the next.
        if section.starts_with("=== stats-") {
            continue;
        }
        if inventory {
            if let Some(v) = line.strip_prefix("inventory_source: ") {
                source = v.trim_matches('"').to_string();
                continue;
            }
            if [
                "dump_time_unix_ms: ",
                "layer_id: ",
                "  size: ",
                "  header_crc32: ",
            ]
            .iter()
            .any(|p| line.starts_with(p))
            {
                continue;
            }
        }
        if (pagemap || pagestore) && (line == "runs {" || line == "chunks {") {
            block.push(line);
            continue;
        }
        if !block.is_empty() {
            if line != "}" {
                block.push(line);
                continue;
            }
            block.push(line);
            let mut b = String::new();
            if pagemap {
                let data = !block.iter().any(|l| l.starts_with("  kind: "));
                let n: usize = block
                    .iter()
                    .find_map(|l| l.strip_prefix("  chunk: "))
                    .map_or(0, |n| n.parse().expect("chunk number"));
                for l in &block {
                    if l.starts_with("  chunk: ") {
                        continue;
                    }
                    if *l == "}" && data {
                        let crc = crcs.get(n).map_or("none", String::as_str);
                        b.push_str(&format!("  chunk crc32: {crc}\n"));
                    }
                    b.push_str(l);
                    b.push('\n');
                }
                out.push_str(&b);
            } else {
                for l in block.iter().filter(|l| !l.starts_with("  offset: ")) {
                    b.push_str(l);
                    b.push('\n');
                }
                chunks.push(b);
            }
            block.clear();
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    flush_chunks(&mut chunks, &mut out);
    (source, out)
}

/// The first line where two texts differ, with a few lines around it.
fn first_difference(a: &str, b: &str) -> String {
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let at = la
        .iter()
        .zip(&lb)
        .position(|(x, y)| x != y)
        .unwrap_or(la.len().min(lb.len()));
    let ctx = |l: &[&str]| l[at.saturating_sub(8)..(at + 8).min(l.len())].join("\n");
    format!(
        "at line {at}:\n--- bpf ---\n{}\n--- proc ---\n{}",
        ctx(&la),
        ctx(&lb)
    )
}

/// Pins every thread of the tree to one CPU: the kernel writes the CPU a
/// thread runs on into its rseq area (glibc registers one for every
/// thread), and the dump's remote system calls run the thread, so two
/// dumps of an idle tree differ in that word when a thread ran on another
/// CPU in between.
fn pin_tree(root: i32) {
    let mine =
        nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).expect("sched_getaffinity");
    let cpu = (0..nix::sched::CpuSet::count())
        .find(|&c| mine.is_set(c).unwrap_or(false))
        .expect("an allowed CPU");
    let mut one = nix::sched::CpuSet::new();
    one.set(cpu).expect("CpuSet::set");
    for pid in tree_pids(root) {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            if let Some(tid) = t.file_name().to_str().and_then(|s| s.parse().ok()) {
                // A zombie's threads are gone: nothing runs there.
                let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(tid), &one);
            }
        }
    }
}

/// Dumps the running tree (-R) into DIR/NAME and returns `cairn show`'s
/// (source, rest).
fn dump_and_show(w: &Workload, name: &str, extra: &[&str]) -> (String, String) {
    let dir = w.dir.join(name);
    let mut flags = vec![
        "-v",
        "--leave-running",
        "@no-oracle: dumps are compared with each other; the kernel view holds counters",
    ];
    flags.extend_from_slice(extra);
    let out = dump(w.pid, &dir, &flags);
    assert_ok(&out, &format!("dump {name} of {}", w.name));
    let (src, rest) = split_source(&show(&dir, &format!("show-{name}"), &w.dir));
    (src, without_assumed_membarrier(&rest))
}

/// `cairn show`'s text without what only a dump that cannot see an
/// expedited global membarrier registration records (before Linux 6.3
/// without BPF: the registration assumed, `membarrier_global_assumed`),
/// so that it compares with a dump that reads the mm's state.
fn without_assumed_membarrier(text: &str) -> String {
    const GLOBAL: u32 = 4; // MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() != "membarrier_global_assumed: true" {
            i += 1;
            continue;
        }
        lines.remove(i);
        let from = i.saturating_sub(3);
        if let Some(j) =
            (from..i).find(|&j| lines[j].trim().starts_with("membarrier_registrations: "))
        {
            let (indent, value) = lines[j].split_once("membarrier_registrations: ").unwrap();
            let n: u32 = value.trim().parse().unwrap_or(0) & !GLOBAL;
            if n == 0 {
                lines.remove(j);
                i -= 1;
            } else {
                lines[j] = format!("{indent}membarrier_registrations: {n}");
            }
        }
    }
    let mut out = lines.join("\n");
    if text.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// [`dump_and_show`] that checks the recorded source is `want`; returns
/// the rest of `cairn show`.
fn dump_expecting(w: &Workload, name: &str, extra: &[&str], want: &str) -> String {
    let (src, rest) = dump_and_show(w, name, extra);
    assert_eq!(
        src,
        want,
        "{}: the dump {name} ({}) records {src:?}",
        w.name,
        extra.join(" ")
    );
    rest
}

/// Dumps the tree (--no-bpf) until two dumps in a row give the same
/// images. A dump's remote system calls write to a thread's stack, which
/// makes a page that a process still shared with its parent since the
/// fork (copy-on-write) its own, so the next dump stores it in the child
/// instead of referring to the parent's copy: a tree of N levels settles
/// after about N dumps.
fn warm_up(w: &Workload) {
    let mut last = dump_and_show(w, "warm-up-0", &["--no-bpf"]).1;
    for i in 1..8 {
        let next = dump_and_show(w, &format!("warm-up-{i}"), &["--no-bpf"]).1;
        if next == last {
            return;
        }
        last = next;
    }
    panic!(
        "{}: 8 dumps in a row of the idle tree all differ: {}",
        w.name,
        first_difference(&last, &dump_and_show(w, "warm-up-8", &["--no-bpf"]).1)
    );
}

/// Workloads whose state stays put between two dumps (no armed timers,
/// no counters), with between them: regular files (offsets, flags, dups,
/// devices), eventfd, epoll, signalfd, inotify, memfd, private and
/// shared file maps, shared anonymous memory, a unix socketpair, pipes
/// and a FIFO between processes, a zombie, a stopped child, three
/// levels of processes, threads, a shared fd table, groups and sessions.
const WORKLOADS: [&str; 18] = [
    "files_regular",
    "files_dup",
    "files_dev",
    "fd_epoll",
    "fd_eventfd",
    "fd_inotify",
    "fd_signalfd",
    "fd_memfd",
    "mem_file_private",
    "mem_file_shared",
    "mem_anon_shared",
    "unix_pair",
    "tree_pipe",
    "tree_fifo",
    "tree_zombie",
    "tree_stopped",
    "tree_levels",
    "tree_shared_fd",
];

/// The serial lock for a test that needs root and BPF iterators; None
/// (the reason noted) when it cannot run here.
fn serial_with_bpf() -> Option<std::sync::MutexGuard<'static, ()>> {
    let one = serial();
    if skip_unless_root() {
        return None;
    }
    if let Some(why) = bpf_iterators_unavailable() {
        note_skip(&format!("BPF unavailable: {why}"));
        return None;
    }
    Some(one)
}

/// Workload `name` started, its threads pinned to one CPU and warmed up,
/// so that dumps of it compare ([`pin_tree`], [`warm_up`]).
fn start_warm(name: &str) -> TreeTest {
    let t = TreeTest::start(name, &[]);
    pin_tree(t.w.pid);
    warm_up(&t.w);
    t
}

/// Each workload, running, is dumped with BPF, with --no-bpf and with BPF
/// again (-R): the images say "bpf", "proc", "bpf" and are otherwise the
/// same (after `warm_up`, and with the threads pinned to one CPU, see
/// `pin_tree`). Then a dump with BPF kills
/// the tree, the restore brings it back, and the workload checks its own
/// state and passes.
#[test]
fn dump_records_its_inventory_source_and_is_the_same_either_way() {
    let Some(_one) = serial_with_bpf() else {
        return;
    };
    for name in WORKLOADS {
        if name == "fd_inotify" {
            let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
            if let Some(why) = file_handles_undecodable(tmp) {
                note_skip(&format!("{name}: inotify watches need file handles: {why}"));
                continue;
            }
        }
        let mut t = start_warm(name);
        let bpf = dump_expecting(&t.w, "bpf", &[], "bpf");
        let proc = dump_expecting(&t.w, "proc", &["--no-bpf"], "proc");
        let bpf2 = dump_expecting(&t.w, "bpf-again", &[], "bpf");
        assert!(
            bpf == proc,
            "{name}: the images with BPF and with --no-bpf differ {}",
            first_difference(&bpf, &proc)
        );
        assert!(
            bpf2 == proc,
            "{name}: the images with --no-bpf and with BPF again differ {}",
            first_difference(&bpf2, &proc)
        );
        t.dump_ok(&[]);
        let log = t.dump_log();
        assert!(
            log.contains("dump: inventory of ") && log.contains(" by bpf in "),
            "{name}: the dump did not log its BPF inventory:\n{log}"
        );
        t.expect_tree_killed_by_dump();
        t.restore_start(&[], false);
        t.check_restored_tree();
        t.finish();
    }
}

/// `cairn -v CMD -t PID -D DIR EXTRA...` that must succeed; the keeper
/// pids it reports are added to `keepers`.
fn run_ok(w: &Workload, cmd: &str, dir: &std::path::Path, extra: &[&str], keepers: &mut Vec<i32>) {
    let mut args: Vec<OsString> = ["-v", cmd, "-t", &w.pid.to_string(), "-D"]
        .iter()
        .map(OsString::from)
        .collect();
    args.push(dir.as_os_str().to_owned());
    args.extend(extra.iter().map(OsString::from));
    let tag = dir.file_name().expect("a layer name").to_string_lossy();
    let out = run_cairn(&args, &w.dir.join(format!("{cmd}-{tag}")), CAIRN_TIMEOUT);
    for l in String::from_utf8_lossy(&out.stderr).lines() {
        if let Some(p) = l
            .split("keeper pid ")
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
        {
            keepers.push(p);
        }
    }
    assert_ok(&out, &format!("{cmd} {tag} of {}", w.name));
}

fn is_keeper(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.windows(14).any(|w| w == b"__cairn-keeper"))
        .unwrap_or(false)
}

/// A pre-dump records its source too: a pre-dump with one source and the
/// final dump on top of it with the other, both ways; the workload
/// (incr_mem, which changes its memory in between) checks every byte
/// after the restore from the final layer.
#[test]
fn pre_dump_records_its_inventory_source() {
    let Some(_one) = serial_with_bpf() else {
        return;
    };
    for (pre, last) in [("bpf", "proc"), ("proc", "bpf")] {
        let flag = |s: &str| {
            if s == "proc" {
                vec!["--no-bpf"]
            } else {
                vec![]
            }
        };
        let mut w = Workload::start("incr_mem", &["--phases", "1"]);
        let mut keepers = Vec::new();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let (l1, l2) = (w.dir.join("ck").join("1"), w.dir.join("ck").join("2"));
            std::fs::create_dir_all(w.dir.join("ck")).expect("mkdir ck");
            run_ok(&w, "pre-dump", &l1, &flag(pre), &mut keepers);
            let (src, _) = split_source(&show(&l1, "show-1", &w.dir));
            assert_eq!(
                src,
                pre,
                "the pre-dump {}records {src:?}",
                flag(pre).join(" ")
            );
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(w.pid),
                nix::sys::signal::Signal::SIGUSR1,
            )
            .expect("SIGUSR1");
            let phase = w.work.join("phase-1");
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while !phase.exists() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "incr_mem did not finish phase 1: {}",
                    tail(&w.log, 4000)
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            let mut extra = vec!["--prev-images-dir", "../1", "--track-mem"];
            extra.extend(flag(last));
            run_ok(&w, "dump", &l2, &extra, &mut keepers);
            let (src, _) = split_source(&show(&l2, "show-2", &w.dir));
            assert_eq!(
                src,
                last,
                "the final dump {}records {src:?}",
                flag(last).join(" ")
            );
            w.expect_killed_by_dump();
            restore_wait(&l2, &[], w.pid, &w.log);
        }));
        for &k in &keepers {
            if result.is_err() && is_keeper(k) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(k),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if let Err(e) = result {
            std::panic::resume_unwind(e);
        }
        for k in keepers {
            assert!(
                wait_pid_gone(k, Duration::from_secs(5)) || !is_keeper(k),
                "keeper {k} still runs after the final dump"
            );
        }
    }
}

/// A tree deeper than the BPF programs walk (64 levels): the collection
/// fails, the dump says so and reads /proc, records "proc", and the chain
/// restores and checks itself.
#[test]
fn deep_tree_falls_back_to_proc_and_says_so() {
    let Some(_one) = serial_with_bpf() else {
        return;
    };
    let mut t = TreeTest::start("tree_chain", &["--depth", "80"]);
    t.dump_ok(&[]);
    let log = t.dump_log();
    assert!(
        log.contains("dump: BPF inventory not used (")
            && log.contains("deeper than the programs walk"),
        "the dump of an 80-level chain did not say why it did not use BPF:\n{log}"
    );
    let (src, _) = split_source(&show(&t.w.images, "show", &t.w.dir));
    assert_eq!(src, "proc", "the dump that read /proc records {src:?}");
    t.expect_tree_killed_by_dump();
    t.restore_start(&[], false);
    t.check_restored_tree();
    t.finish();
}

/// A deep chain elsewhere on the machine that started before the tree does
/// not stop the dump from using BPF: the programs' walks stop at a process
/// older than the tree's root (bpf/subtree.h), so they never reach the
/// depth limit on that chain.
#[test]
fn an_older_deep_chain_elsewhere_does_not_disable_bpf() {
    let Some(_one) = serial_with_bpf() else {
        return;
    };
    let _chain = TreeTest::start("tree_chain", &["--depth", "80"]);
    // The root must start at least one clock tick (1/100 s) after the
    // chain: its start time is known to the programs to that precision.
    std::thread::sleep(Duration::from_millis(50));
    let mut t = TreeTest::start("tree_chain", &["--depth", "3"]);
    t.dump_ok(&[]);
    let log = t.dump_log();
    assert!(
        !log.contains("BPF inventory not used"),
        "an 80-level chain outside the tree, older than it, kept the dump from using BPF:\n{log}"
    );
    let (src, _) = split_source(&show(&t.w.images, "show", &t.w.dir));
    assert_eq!(src, "bpf", "the dump records {src:?}");
    t.expect_tree_killed_by_dump();
    t.restore_start(&[], false);
    t.check_restored_tree();
    t.finish();
}

/// What a kernel without the task_vma iterator (before 5.12), or one
/// that refuses bpf_d_path in the task_file iterator, does, on this
/// kernel: with both programs left out (`CAIRN_BPF_LEAVE_OUT`), the dump
/// still takes its inventory from BPF (the task iterator) and records
/// "bpf", reads VMAs and fds from /proc, says so in its log with the
/// reason, and its images are those of `--no-bpf`. The tree it kills is
/// restored and checks itself.
#[test]
fn dump_with_iterators_left_out_reads_them_from_proc() {
    let Some(_one) = serial_with_bpf() else {
        return;
    };
    for name in ["fd_memfd", "mem_file_shared", "tree_levels"] {
        let mut t = start_warm(name);
        let proc = dump_expecting(&t.w, "proc", &["--no-bpf"], "proc");
        let left = {
            let _env = CairnEnv::set("CAIRN_BPF_LEAVE_OUT", "vmas,files");
            dump_expecting(&t.w, "left-out", &[], "bpf")
        };
        assert!(
            left == proc,
            "{name}: the images with task_vma and task_file left out and with --no-bpf differ {}",
            first_difference(&left, &proc)
        );
        {
            let _env = CairnEnv::set("CAIRN_BPF_LEAVE_OUT", "vmas,files");
            t.dump_ok(&[]);
        }
        let log = t.dump_log();
        for part in ["VMAs", "fds"] {
            assert!(
                log.contains(&format!("bpf inventory: {part} from /proc: "))
                    && log.contains("CAIRN_BPF_LEAVE_OUT"),
                "{name}: the dump does not say {part} came from /proc and why:\n{log}"
            );
        }
        assert!(
            log.contains("dump: inventory of ") && log.contains(" by bpf in "),
            "{name}: the dump did not use its BPF inventory:\n{log}"
        );
        t.expect_tree_killed_by_dump();
        t.restore_start(&[], false);
        t.check_restored_tree();
        t.finish();
    }
}
