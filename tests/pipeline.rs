//! The dump's page pipeline (issue 15): incompressible chunks are stored
//! raw, compressible ones as zstd frames, zero pages inside data are left
//! out; the restored process checks every byte itself.
mod common;

use common::*;

/// The codecs of the chunk table, from `cairn show --json pagestore.img`.
fn codecs(images: &std::path::Path, base: &std::path::Path) -> (usize, usize) {
    let store = images.join("pagestore.img");
    let args: Vec<std::ffi::OsString> = vec!["show".into(), "--json".into(), store.into()];
    let out = run_cairn(&args, base, CAIRN_TIMEOUT);
    assert_ok(&out, "show pagestore.img");
    let s = String::from_utf8_lossy(&out.stdout);
    (
        s.matches("\"CODEC_RAW\"").count(),
        s.matches("\"compressed_len\"").count(),
    )
}

#[test]
fn mixed_memory_raw_and_compressed_chunks() {
    if skip_unless_root() {
        return;
    }
    let mut w = Workload::start("mem_mixed", &[]);
    w.dump_ok(&[]);
    w.expect_killed_by_dump();
    let (raw, all) = codecs(&w.images, &w.dir.join("show"));
    // The 8 MiB of random data make 2 jobs of 1,024 pages (4 MiB each;
    // every 5th page zero, left out): 2 raw chunks at least. The 2:1 part
    // is compressed, and so is a chunk of the alternating part (half text).
    assert!(
        raw >= 2,
        "{raw} raw chunks of {all}: incompressible data was compressed"
    );
    assert!(
        all > raw,
        "{raw} raw chunks of {all}: nothing was compressed"
    );
    let size = dir_size(&w.images);
    assert!(
        size < 22 << 20,
        "images of 24 MiB with 8 MiB of 2:1 data and zero pages take {size} bytes"
    );
    let v = run_cairn(
        &["show".into(), "--verify".into(), w.images.clone().into()],
        &w.dir.join("verify"),
        CAIRN_TIMEOUT,
    );
    assert_ok(&v, "show --verify");
    w.restore_wait(&[]);
}
