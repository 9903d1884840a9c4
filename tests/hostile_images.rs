//! Forged images (checksums and inventory recomputed, so only the
//! decoders and validators stand in the way) must neither make cairn use
//! resources out of proportion to the image nor pass `cairn show
//! --verify` and then fail half-way through a restore:
//! - messages padded with huge unknown protobuf fields are refused with
//!   little memory (`src/image/budget.rs`);
//! - a contents entry that names one chunk many times, or many entries
//!   sharing one chunk list, are refused before anything is written;
//! - what restore would refuse late (page runs in [vdso], fd numbers
//!   above the fd limit, memfd flags, socket kinds) `show --verify`
//!   refuses, naming the field.

// cairn::image::mutate exists only with cairn's `fuzz` feature, which every test
// build has through the dev-dependency in Cargo.toml: without it, fail
// here rather than lose these tests.
#[cfg(not(feature = "fuzz"))]
compile_error!(
    "tests/hostile_images.rs needs cairn's `fuzz` feature: see [dev-dependencies] in Cargo.toml"
);

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use cairn::image::mutate::{with_unknown_field, ImageSet};
use cairn::image::proto::{file_desc, FdTable, FileContents, Files, MmEntry, PageRun, Pagemap};
use cairn::image::proto::{RunKind, VmaKind};
use cairn::image::{names, ImageType};
use common::*;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs cairn under /usr/bin/time; returns its output and its peak
/// resident set in KiB.
fn run_measured(args: &[&str], base: &Path) -> (Output, u64) {
    let rss = base.with_extension("rss");
    let se = base.with_extension("stderr");
    let so = base.with_extension("stdout");
    let mut cmd = Command::new("/usr/bin/time");
    cmd.args(["-f", "%M", "-o"])
        .arg(&rss)
        .arg(cairn_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&so).expect("stdout file"))
        .stderr(fs::File::create(&se).expect("stderr file"));
    let mut child = cmd.spawn().expect("spawn /usr/bin/time");
    let status = match wait_timeout(&mut child, CAIRN_TIMEOUT) {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cairn {args:?} did not finish");
        }
    };
    let kib = fs::read_to_string(&rss)
        .unwrap_or_default()
        .lines()
        .rev()
        .find_map(|l| l.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no peak RSS in {}", rss.display()));
    (
        Output {
            status,
            stdout: fs::read(&so).unwrap_or_default(),
            stderr: fs::read(&se).unwrap_or_default(),
        },
        kib,
    )
}

fn forged(w: &Workload, tag: &str, set: &ImageSet) -> PathBuf {
    let d = w.dir.join(format!("forged-{tag}"));
    let _ = fs::remove_dir_all(&d);
    set.write(&d).expect("write forged images");
    d
}

/// `show --verify` must exit 5 with one line naming `file` and saying
/// each of `why`.
fn verify_refuses(d: &Path, file: &str, why: &[&str]) -> String {
    let args: Vec<std::ffi::OsString> = vec!["show".into(), "--verify".into(), d.into()];
    let v = run_cairn(&args, &d.with_extension("verify"), CAIRN_TIMEOUT);
    let e = stderr(&v);
    assert_eq!(
        exit_code(&v.status),
        5,
        "verify of {file}: {}",
        describe(&v)
    );
    assert!(
        e.contains(file) && why.iter().all(|w| e.contains(w)),
        "verify should name {file} and say {why:?}: {e}"
    );
    e
}

/// A restore must fail with 5 and the same message, leaving no process.
fn restore_refuses(d: &Path, file: &str, why: &[&str], pid: i32) {
    let r = restore_expect_fail(d, &[], pid);
    let e = stderr(&r);
    assert_eq!(exit_code(&r.status), 5, "restore: {}", describe(&r));
    assert!(
        e.contains(file) && why.iter().all(|w| e.contains(w)),
        "restore should name {file} and say {why:?}: {e}"
    );
}

const RSS_LIMIT_KIB: u64 = 300 << 10;
/// Just under the 1 GiB every message image could decode to before.
const PAD: u64 = (1 << 30) - (1 << 20);

/// The amplification: every core image of a tree padded with an
/// unknown field of almost 1 GiB of zeros (the images stay small), with the size
/// declared in the zstd frame or not, and one padded by less than the
/// core limit. `show --verify` and restore refuse each, staying far below
/// the padding in memory.
#[test]
fn padded_cores_are_refused_with_little_memory() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("thread_mix", &[]);
    w.dump_ok(&["--leave-running"]);
    let base = ImageSet::load(&w.images).expect("load images");
    let cores: Vec<String> = base
        .files
        .iter()
        .map(|(n, _)| n.clone())
        .filter(|n| n.starts_with("core-"))
        .collect();
    assert!(!cores.is_empty());
    for (tag, pad, declared, why) in [
        ("declared", PAD, true, "limit of a core image"),
        ("streamed", PAD, false, "does not declare its size"),
        ("small", 40 << 20, true, "unknown field"),
    ] {
        let mut set = base.clone();
        for c in &cores {
            let b = with_unknown_field(set.get(c).unwrap(), 4242, pad, declared).unwrap();
            set.set_file(c, b);
        }
        let total: usize = set.files.iter().map(|(_, b)| b.len()).sum();
        let d = forged(&w, tag, &set);
        println!("{tag}: {total} bytes of images, {pad} bytes of padding per core");
        let (v, kib) = run_measured(
            &["show", "--verify", d.to_str().unwrap()],
            &w.dir.join(format!("verify-{tag}")),
        );
        let e = stderr(&v);
        assert_eq!(exit_code(&v.status), 5, "{tag}: verify: {e}");
        assert!(e.contains("core-") && e.contains(why), "{tag}: {e}");
        assert!(
            kib < RSS_LIMIT_KIB,
            "{tag}: verify peaked at {kib} KiB: {e}"
        );
        let pidfile = w.dir.join(format!("restore-{tag}.pid"));
        let (r, kib) = run_measured(
            &[
                "restore",
                "-D",
                d.to_str().unwrap(),
                "--pidfile",
                pidfile.to_str().unwrap(),
            ],
            &w.dir.join(format!("restore-{tag}")),
        );
        let e = stderr(&r);
        assert_eq!(exit_code(&r.status), 5, "{tag}: restore: {e}");
        assert!(
            e.contains("core-") && e.contains(why),
            "{tag}: restore: {e}"
        );
        assert!(!pidfile.exists(), "{tag}: restore wrote a pidfile");
        assert!(
            kib < RSS_LIMIT_KIB,
            "{tag}: restore peaked at {kib} KiB: {e}"
        );
        println!("{tag}: refused, peak RSS {kib} KiB: {e}");
    }
    w.terminate_original_expect_pass();
}

fn free_bytes(p: &Path) -> u64 {
    let s = rustix::fs::statvfs(p).expect("statvfs");
    s.f_bavail * s.f_frsize
}

/// Files of `dir` whose name contains `part`.
fn leftovers(dir: &Path, part: &str) -> Vec<String> {
    fs::read_dir(dir)
        .map(|r| {
            r.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.contains(part))
                .collect()
        })
        .unwrap_or_default()
}

/// The write amplification: a contents entry naming one 16 MiB
/// chunk 1,024 times (16 GiB from a few KiB of images), and 1,024
/// entries sharing one chunk. Both are refused before anything is
/// written: no file appears and the disk does not fill.
#[test]
fn repeated_chunks_are_refused_before_writing() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("files_regular", &[]);
    w.dump_ok(&["--leave-running"]);
    let base = ImageSet::load(&w.images).expect("load images");
    let target = w.dir.join("amplified");
    let target_s = target.to_str().unwrap().to_string();
    let mut set = base.clone();
    let chunk = set
        .append_chunk(&vec![0u8; 16 << 20])
        .expect("append chunk");
    let c: FileContents = set
        .message(ImageType::Contents, names::CONTENTS)
        .expect("contents");
    assert!(!c.files.is_empty(), "files_regular saves no contents");
    let entry = |path: &str, chunks: Vec<u32>| {
        let mut e = c.files[0].clone();
        e.path = path.to_string();
        e.deleted = false;
        e.desc_ids.clear();
        e.size = chunks.len() as u64 * (16 << 20);
        e.chunks = chunks;
        e
    };
    // One entry, one chunk 1,024 times.
    let mut once = c.clone();
    once.files.push(entry(&target_s, vec![chunk; 1024]));
    let mut s1 = set.clone();
    s1.set_message(ImageType::Contents, names::CONTENTS, &once);
    // 1,024 entries sharing that chunk.
    let mut many = c.clone();
    for i in 0..1024 {
        many.files
            .push(entry(&format!("{target_s}-{i}"), vec![chunk]));
    }
    let mut s2 = set.clone();
    s2.set_message(ImageType::Contents, names::CONTENTS, &many);
    for (tag, s, why) in [
        ("repeated", s1, "each chunk once"),
        ("shared", s2, "more than 64 files"),
    ] {
        let d = forged(&w, tag, &s);
        let size: usize = s.files.iter().map(|(_, b)| b.len()).sum();
        println!("{tag}: {size} bytes of images");
        let before = free_bytes(&w.dir);
        verify_refuses(&d, "contents.img", &["chunks", why]);
        restore_refuses(&d, "contents.img", &["chunks", why], w.pid);
        let after = free_bytes(&w.dir);
        assert!(
            leftovers(&w.dir, "amplified").is_empty(),
            "{tag}: restore wrote {:?}",
            leftovers(&w.dir, "amplified")
        );
        assert!(
            before.saturating_sub(after) < 64 << 20,
            "{tag}: free space went from {before} to {after}"
        );
    }
    // The untouched images still verify (the chunk alone changes nothing).
    let d = forged(&w, "chunk-only", &set);
    let args: Vec<std::ffi::OsString> = vec!["show".into(), "--verify".into(), d.clone().into()];
    assert_ok(
        &run_cairn(&args, &d.with_extension("verify"), CAIRN_TIMEOUT),
        "verify with an extra chunk",
    );
    w.terminate_original_expect_pass();
}

/// Images that an older `show --verify` accepted and a restore refused
/// only half-way: each is now refused by both before anything is created,
/// naming the field.
#[test]
fn verify_refuses_what_restore_refuses() {
    if skip_unless_root() {
        return;
    }
    // A private page run inside [vdso]: restore cannot write there.
    let mut w = Workload::start("mem_heap", &[]);
    w.dump_ok(&["--leave-running"]);
    let base = ImageSet::load(&w.images).expect("load");
    let pid = w.pid as u32;
    let mm: MmEntry = base.message(ImageType::Mm, &names::mm(pid)).expect("mm");
    let vdso = mm
        .vmas
        .iter()
        .find(|v| v.kind.enum_value() == Ok(VmaKind::VMA_VDSO))
        .expect("a [vdso] VMA")
        .clone();
    let pm_name = names::pagemap(&format!("pid:{pid}"));
    let mut pm: Pagemap = base.message(ImageType::Pagemap, &pm_name).expect("pagemap");
    let mut run = PageRun::new();
    run.addr = vdso.start;
    run.nr_pages = 1;
    run.kind = RunKind::RUN_ZERO.into();
    pm.runs.push(run);
    let mut set = base.clone();
    set.set_message(ImageType::Pagemap, &pm_name, &pm);
    let d = forged(&w, "vdso", &set);
    verify_refuses(&d, &pm_name, &["addr", "[vdso]"]);
    restore_refuses(&d, &pm_name, &["[vdso]"], w.pid);

    // An fd number above what the restored process can hold.
    let fdi = names::fdinfo(pid);
    let mut t: FdTable = base.message(ImageType::FdTable, &fdi).expect("fdinfo");
    let (lim, _) = cairn::image::validate::restore_fd_limit();
    t.fds.last_mut().expect("an fd").fd = (lim - 1) as u32;
    let mut set = base.clone();
    set.set_message(ImageType::FdTable, &fdi, &t);
    let d = forged(&w, "fd", &set);
    verify_refuses(&d, &fdi, &["fd", "restore needs fd numbers"]);
    restore_refuses(&d, &fdi, &["restore needs fd numbers"], w.pid);
    w.terminate_original_expect_pass();

    // Files: memfd flags, unix and IP socket kinds.
    type Forge = fn(&mut Files) -> bool;
    let cases: [(&str, Forge, &[&str]); 4] = [
        (
            "fd_memfd",
            |f| {
                f.descs.iter_mut().any(|d| match &mut d.kind {
                    Some(file_desc::Kind::Memfd(m)) => {
                        m.flags |= libc::O_DIRECTORY as u32;
                        true
                    }
                    _ => false,
                })
            },
            &["flags", "not file status flags of a memfd"],
        ),
        (
            "unix_pair",
            |f| {
                f.descs.iter_mut().any(|d| match &mut d.kind {
                    Some(file_desc::Kind::Unix(u)) if u.type_ == 1 && u.peer != 0 => {
                        u.type_ = 5;
                        true
                    }
                    _ => false,
                })
            },
            &["type", "its peer"],
        ),
        (
            "sk_udp",
            |f| {
                f.descs.iter_mut().any(|d| match &mut d.kind {
                    Some(file_desc::Kind::Inet(s)) => {
                        s.protocol = libc::IPPROTO_TCP as u32;
                        true
                    }
                    _ => false,
                })
            },
            &["type", "only TCP over SOCK_STREAM"],
        ),
        (
            "sk_tcp_listen",
            |f| {
                f.descs.iter_mut().any(|d| match &mut d.kind {
                    Some(file_desc::Kind::Inet(s)) => {
                        s.state = 3; // SYN_RECV (SYN_SENT is restored now)
                        true
                    }
                    _ => false,
                })
            },
            &["state", "closed or listening"],
        ),
    ];
    for (name, forge, why) in cases {
        let mut w = Workload::start(name, &[]);
        w.dump_ok(&["--leave-running"]);
        let base = ImageSet::load(&w.images).expect("load");
        let mut files: Files = base.message(ImageType::Files, names::FILES).expect("files");
        assert!(forge(&mut files), "{name}: nothing to forge");
        let mut set = base.clone();
        set.set_message(ImageType::Files, names::FILES, &files);
        let d = forged(&w, name, &set);
        let e = verify_refuses(&d, names::FILES, why);
        println!("{name}: {e}");
        w.terminate_original_expect_pass();
    }
}
