//! The restore half of the page pipeline (issue 15): raw chunks are read
//! in place by the restored process (an injected preadv from pages.img),
//! then read back and checked against their crc; the other chunks go
//! through cairn's reused buffers. The restored processes check every
//! byte themselves (`mem_fast`); speed is measured by `cargo xtask
//! bench`, never here.
mod common;

use common::*;
use std::os::unix::fs::FileExt;

/// Length of the header before the chunks of pages.img
/// (`image::HEADER_LEN`).
const HEADER_LEN: u64 = 32;

/// From a `cairn restore -v` log: per "pages written" line, the chunks
/// read in place and those written through cairn.
fn page_lines(stderr: &str) -> Vec<(u64, u64)> {
    let num_before = |line: &str, what: &str| -> Option<u64> {
        let head = &line[..line.find(what)?];
        head.rsplit(|c: char| !c.is_ascii_digit())
            .find(|s| !s.is_empty())?
            .parse()
            .ok()
    };
    stderr
        .lines()
        .filter(|l| l.contains("pages written in"))
        .map(|l| {
            (
                num_before(l, " chunks (").unwrap_or(0),
                l.split("read in place by the process")
                    .nth(1)
                    .and_then(|rest| num_before(rest, " chunks ("))
                    .unwrap_or(0),
            )
        })
        .collect()
}

/// The byte offsets (in the body) of the raw chunks of an image
/// directory, from `cairn show --json pagestore.img`.
fn raw_chunk_offsets(images: &std::path::Path, base: &std::path::Path) -> Vec<(usize, u64)> {
    let args: Vec<std::ffi::OsString> = vec![
        "show".into(),
        "--json".into(),
        images.join("pagestore.img").into(),
    ];
    let out = run_cairn(&args, base, CAIRN_TIMEOUT);
    assert_ok(&out, "show pagestore.img");
    let s = String::from_utf8_lossy(&out.stdout).to_string();
    s.split("{\"offset\":")
        .skip(1)
        .enumerate()
        .filter(|(_, c)| c[..c.find('}').unwrap_or(c.len())].contains("CODEC_RAW"))
        .map(|(i, c)| {
            (
                i,
                c[..c.find(',').unwrap()].trim_matches('"').parse().unwrap(),
            )
        })
        .collect()
}

/// 128 MiB of random, sparse random, 2:1 and zeroed pages plus a
/// read-only mapping, in a parent and a child that rewrote a third of
/// the random part (so that each uses some chunks only in part): both
/// check every byte after restore, and that pages.img is not among their
/// fds. The parent's raw chunks were read in place (the log says how
/// many), the 2:1 ones written through cairn.
#[test]
fn mixed_memory_read_in_place_and_checked() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("mem_fast", &["--mib", "128"]);
    w.dump_ok(&[]);
    w.expect_killed_by_dump();
    let raw = raw_chunk_offsets(&w.images, &w.dir.join("show"));
    assert!(
        raw.len() >= 8,
        "only {} raw chunks in the images",
        raw.len()
    );
    let out = w.restore_wait(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    let lines = page_lines(&err);
    assert_eq!(
        lines.len(),
        2,
        "expected the pages lines of parent and child in the restore log:\n{err}"
    );
    let (in_place, through) = lines
        .iter()
        .fold((0, 0), |acc, l| (acc.0 + l.0, acc.1 + l.1));
    assert!(
        in_place >= 1,
        "no chunk was read in place by the restored processes:\n{err}"
    );
    assert!(
        through >= 1,
        "no chunk went through cairn (the 2:1 data is compressed):\n{err}"
    );
}

/// A raw chunk whose bytes changed on disk is read in place, then its
/// read-back fails the crc: the restore fails with the chunk, the file
/// and the process named, and leaves no process behind.
#[test]
fn corrupt_raw_chunk_read_in_place_fails() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("mem_fast", &["--mib", "32"]);
    w.dump_ok(&["@no-oracle: the restore is meant to fail"]);
    w.expect_killed_by_dump();
    let raw = raw_chunk_offsets(&w.images, &w.dir.join("show"));
    // The first raw chunk: the parent's first 4 MiB of random data (the
    // chunks before it are small pieces of other mappings), in the first
    // batch the process reads in place.
    let &(idx, off) = raw.first().expect("a raw chunk");
    let pages = w.images.join("pages.img");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&pages)
        .unwrap();
    let at = HEADER_LEN + off + 4096 + 100;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], at).unwrap();
    drop(f);
    let out = restore_expect_fail(&w.images, &[], w.pid);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pages.img")
            && err.contains(&format!("chunk {idx}: checksum mismatch"))
            && err.contains(&format!("as read into pid {}", w.pid)),
        "the restore did not name the corrupt chunk read in place:\n{err}"
    );
    assert!(
        wait_pid_gone(w.pid, std::time::Duration::from_secs(10)),
        "pid {} still exists after the failed restore",
        w.pid
    );
}
