//! Statistics of dumps and restores (issue 19): stats-dump.img and
//! stats-restore.img in the image directory, plausible (frozen time within
//! the total, page bytes matching pages.img, counts matching the tree),
//! shown by `cairn show`, printed with `--display-stats`, and not written
//! into an image directory that is not cairn's own.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use cairn::image::proto::Stats;
use cairn::image::{decode_image, ImageType, HEADER_LEN};
use common::*;

fn read_stats(dir: &Path, name: &str) -> Stats {
    let p = dir.join(name);
    let bytes = fs::read(&p).unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}); the directory holds {:?}",
            p.display(),
            fs::read_dir(dir)
                .map(|r| r
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name())
                    .collect::<Vec<_>>())
                .unwrap_or_default()
        )
    });
    decode_image(ImageType::Stats, &bytes, &p).expect("decode the stats image")
}

fn os(s: impl AsRef<std::ffi::OsStr>) -> std::ffi::OsString {
    s.as_ref().to_os_string()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every `*.img` of `dir` but the statistics, and their total size.
fn image_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.ends_with(".img") && !n.starts_with("stats-")
        })
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[test]
fn dump_and_restore_record_plausible_stats() {
    if skip_unless_root() {
        return;
    }
    // root -- A -- G, root -- B: four processes.
    let mut w = Workload::start("tree_levels", &[]);
    let before = tree_pids(w.pid);
    assert_eq!(
        before.len(),
        4,
        "tree_levels has four processes: {before:?}"
    );
    let threads: usize = before
        .iter()
        .map(|p| fs::read_dir(format!("/proc/{p}/task")).unwrap().count())
        .sum();
    let out = w.dump_ok(&["--display-stats"]);
    w.expect_killed_by_dump();
    let s = read_stats(&w.images, "stats-dump.img");
    let err = stderr(&out);
    assert!(
        err.contains("dump statistics:"),
        "--display-stats printed nothing:\n{err}"
    );
    assert!(err.contains("frozen time"), "{err}");
    assert_eq!(s.command, "dump");
    assert!(s.frozen_us > 0 && s.frozen_us <= s.total_us, "{s:?}");
    assert!(s.freeze_us > 0 && s.freeze_us <= s.frozen_us, "{s:?}");
    assert!(s.memory_us > 0 && s.memory_us <= s.frozen_us, "{s:?}");
    assert!(s.write_us > 0 && s.write_us <= s.frozen_us, "{s:?}");
    assert!(s.sync_us <= s.frozen_us, "{s:?}");
    let pages = fs::metadata(w.images.join("pages.img")).unwrap().len();
    assert_eq!(
        s.bytes_compressed + HEADER_LEN as u64,
        pages,
        "compressed bytes do not match pages.img: {s:?}"
    );
    assert!(s.bytes_raw >= s.bytes_compressed, "{s:?}");
    assert!(s.pages_written > 0, "{s:?}");
    assert_eq!(s.image_bytes, image_bytes(&w.images), "{s:?}");
    assert_eq!(s.processes as usize, before.len(), "{s:?}");
    assert_eq!(s.threads as usize, threads, "{s:?}");
    assert!(s.vmas >= 4 * 5 && s.fds >= 4 * 3, "{s:?}");
    assert_eq!(s.zombies, 0);

    // cairn show prints them; show --verify accepts the unlisted stats.
    let show = run_cairn(
        &[os("show"), os(&w.images), os("stats")],
        &w.dir.join("show"),
        CAIRN_TIMEOUT,
    );
    assert_ok(&show, "cairn show");
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(text.contains("=== stats-dump.img (stats) ==="), "{text}");
    assert!(text.contains("dump statistics:"), "{text}");
    assert!(text.contains("4 processes (0 zombies)"), "{text}");
    let verify = run_cairn(
        &[os("show"), os("--verify"), os(&w.images)],
        &w.dir.join("verify"),
        CAIRN_TIMEOUT,
    );
    assert_ok(&verify, "cairn show --verify");

    let out = w.restore_wait(&["--display-stats"]);
    let err = stderr(&out);
    assert!(err.contains("restore statistics:"), "{err}");
    let r = read_stats(&w.images, "stats-restore.img");
    assert_eq!(r.command, "restore");
    assert!(r.load_us > 0 && r.load_us <= r.total_us, "{r:?}");
    assert!(r.memory_us > 0 && r.memory_us <= r.total_us, "{r:?}");
    assert_eq!(
        r.phases.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["create", "memory", "files", "attributes", "finish"]
    );
    assert_eq!(r.processes, s.processes);
    assert_eq!(r.threads, s.threads);
    assert_eq!(r.vmas, s.vmas);
    assert_eq!(r.fds, s.fds);
    assert_eq!(r.pages_written, s.pages_written);
    assert_eq!(r.bytes_compressed, s.bytes_compressed);
    // The restore's stats leave the checkpoint valid.
    let verify = run_cairn(
        &[os("show"), os("--verify"), os(&w.images)],
        &w.dir.join("verify2"),
        CAIRN_TIMEOUT,
    );
    assert_ok(&verify, "cairn show --verify after the restore");
}

#[test]
fn restore_stats_not_written_into_a_foreign_directory() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("sleep_nanosleep", &[]);
    w.dump_ok(&[]);
    w.expect_killed_by_dump();
    // Another user's directory: read only with --allow-foreign-images, and
    // nothing is written into it.
    std::os::unix::fs::chown(&w.images, Some(65534), Some(65534)).unwrap();
    let out = w.restore_wait(&["--allow-foreign-images"]);
    let err = stderr(&out);
    assert!(
        !w.images.join("stats-restore.img").exists(),
        "stats written into a directory of uid 65534"
    );
    assert!(
        err.contains("statistics not written to") && err.contains("owned by uid 65534"),
        "-v does not say why the statistics were not written:\n{err}"
    );
    assert_eq!(fs::metadata(&w.images).unwrap().uid(), 65534);
    std::os::unix::fs::chown(&w.images, Some(0), Some(0)).unwrap();
}
