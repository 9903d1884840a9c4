//! The feature probes run once per boot (issue 15): the first cairn run
//! caches the kernel interfaces' answers in a root-owned file
//! (`src/sys/probe_cache.rs`), later runs take them from there; a cache
//! that is not root's, or is a symbolic link, is ignored and replaced.
//! Each test uses its own cache directory (`CAIRN_PROBE_CACHE_DIR`, which
//! gets the same checks as /run/cairn) and real processes: a workload is
//! dumped, killed, restored and checks its own memory.

mod common;

use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const RAN: &str = "feature probes: running every probe";
const CACHED: &str = "feature probes: kernel interfaces from the cache";

/// One test at a time: the cache directory is passed in the environment.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fresh cache directory (not made yet: cairn makes it) for this test.
fn cache_dir(tag: &str) -> PathBuf {
    let base = fresh_dir(tag);
    let d = base.join("probe-cache");
    std::env::set_var("CAIRN_PROBE_CACHE_DIR", &d);
    d
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Dumps mem_anon_private (-v), checks the log with `check`, restores it
/// and requires the workload's PASS.
fn dump_restore(check: impl FnOnce(&str)) {
    let mut w = Workload::start("mem_anon_private", &[]);
    let out = w.dump_ok(&[]);
    check(&stderr(&out));
    w.expect_killed_by_dump();
    w.restore_wait(&[]);
}

/// `cairn -v check --json` with the test's cache directory.
fn check(dir: &Path, tag: &str) -> (String, String) {
    let out = run_cairn(
        &[OsString::from("-v"), "check".into(), "--json".into()],
        &dir.parent().unwrap().join(tag),
        Duration::from_secs(60),
    );
    assert_ok(&out, "cairn check");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr(&out),
    )
}

/// The cache file, made by a first run, rewritten with a forged detail
/// for soft_dirty (root's, mode 0600: a valid cache).
fn forge(dir: &Path) -> PathBuf {
    let file = dir.join("probes.v1");
    let text = std::fs::read_to_string(&file).expect("read the cache");
    let forged: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("feature\tsoft_dirty\t") {
                "feature\tsoft_dirty\t1\tFORGED-BY-THE-TEST".to_string()
            } else {
                l.to_string()
            }
        })
        .collect();
    assert_ne!(
        forged.join("\n") + "\n",
        text,
        "no soft_dirty line in the cache"
    );
    std::fs::write(&file, forged.join("\n") + "\n").expect("write the forged cache");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    file
}

/// The first dump runs the probes and leaves a root-owned cache (0600 in
/// a 0700 directory); the second dump of a new process takes the kernel
/// interfaces from it and runs none of the expensive probes. Both
/// restores PASS.
#[test]
fn second_dump_uses_the_cache() {
    let _one = serial();
    if skip_unless_root() {
        return;
    }
    let dir = cache_dir("probe_cache_second");
    dump_restore(|log| {
        assert!(
            log.contains(RAN) && log.contains("no cache yet") && !log.contains(CACHED),
            "the first dump did not say it ran the probes:\n{log}"
        );
    });
    let st = std::fs::symlink_metadata(dir.join("probes.v1")).expect("the cache file");
    assert!(st.is_file() && st.uid() == 0 && st.mode() & 0o7777 == 0o600);
    assert_eq!(
        std::fs::metadata(&dir).unwrap().mode() & 0o7777,
        0o700,
        "the cache directory's mode"
    );
    dump_restore(|log| {
        assert!(
            log.contains(CACHED) && !log.contains(RAN),
            "the second dump did not take the probes from the cache:\n{log}"
        );
    });
}

/// A valid cache is really used (`cairn check` shows its forged detail),
/// but the same file owned by another user, or a symbolic link to it, is
/// ignored: the probes run, the forged answer is not shown, and the file
/// is replaced by a root-owned one. A dump with the untrusted cache in
/// place runs the probes and restores.
#[test]
fn forged_cache_of_another_owner_or_a_link_is_ignored() {
    let _one = serial();
    if skip_unless_root() {
        return;
    }
    let dir = cache_dir("probe_cache_forged");
    let (out, log) = check(&dir, "check-first");
    assert!(
        out.contains("\"probes\":\"probed now\""),
        "cairn check does not say it probed:\n{out}"
    );
    assert!(
        log.contains(RAN),
        "the first check did not run the probes:\n{log}"
    );
    let file = forge(&dir);
    let (out, log) = check(&dir, "check-forged-root");
    assert!(
        log.contains(CACHED) && out.contains("FORGED-BY-THE-TEST"),
        "a valid root-owned cache was not used:\n{log}\n{out}"
    );
    assert!(
        out.contains("\"probes\":\"kernel interfaces from the per-boot cache")
            && out.contains("probes.v1"),
        "cairn check does not say its answers come from the cache:\n{out}"
    );

    // Owned by nobody: ignored, replaced.
    std::os::unix::fs::chown(&file, Some(65534), Some(65534)).unwrap();
    dump_restore(|log| {
        assert!(
            log.contains(RAN) && log.contains("owned by uid 65534"),
            "a cache owned by uid 65534 was not refused:\n{log}"
        );
    });
    let st = std::fs::symlink_metadata(&file).unwrap();
    assert!(st.is_file() && st.uid() == 0, "the cache was not replaced");
    assert!(!std::fs::read_to_string(&file)
        .unwrap()
        .contains("FORGED-BY-THE-TEST"));

    // A symbolic link to a forged (root-owned, valid) cache: not followed.
    let forged = forge(&dir);
    let elsewhere = dir.parent().unwrap().join("elsewhere.v1");
    std::fs::rename(&forged, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &file).unwrap();
    let (out, log) = check(&dir, "check-link");
    assert!(
        log.contains(RAN) && log.contains("symbolic link") && !out.contains("FORGED-BY-THE-TEST"),
        "a cache that is a symbolic link was used:\n{log}\n{out}"
    );
    assert!(std::fs::symlink_metadata(&file).unwrap().is_file());
    assert!(std::fs::read_to_string(&elsewhere)
        .unwrap()
        .contains("FORGED-BY-THE-TEST"));
}
