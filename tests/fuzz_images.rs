//! The in-tree fuzzer of the image decoders and validators
//! (`cairn::fuzz`), on real checkpoints of four workloads (memory, files,
//! a process tree with pipes, unix sockets). `cargo xtask fuzz
//! [--iterations N] [--seed S]` runs this test with more iterations and
//! prints its counts; as part of the suite it runs 1,000 (200 in a guest of
//! `cargo xtask vm-test`, whose budget is a share of CI's).

// cairn::fuzz exists only with cairn's `fuzz` feature, which every test
// build has through the dev-dependency in Cargo.toml: without it, fail
// here rather than lose these tests.
#[cfg(not(feature = "fuzz"))]
compile_error!(
    "tests/fuzz_images.rs needs cairn's `fuzz` feature: see [dev-dependencies] in Cargo.toml"
);

mod common;

use common::*;

#[test]
fn fuzz_image_decoders() {
    if skip_unless_root() {
        return;
    }
    let iterations: u64 = std::env::var("CAIRN_FUZZ_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if in_vm_guest() { 200 } else { 1000 });
    let seed: u64 = std::env::var("CAIRN_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut trees = Vec::new();
    let mut bases = Vec::new();
    for name in ["mem_sparse", "files_regular", "tree_pipe", "unix_pair"] {
        let mut t = TreeTest::start(name, &[]);
        t.dump_ok(&["--leave-running"]);
        bases.push(t.w.images.clone());
        trees.push(t);
    }
    let scratch = fresh_dir("fuzz");
    let r = cairn::fuzz::run(&bases, &scratch, iterations, seed).expect("fuzz run");
    println!("seed {seed}\n{}", r.text());
    assert!(r.panics.is_empty(), "decoders panicked:\n{}", r.text());
    // Every target saw errors and (for the unchanged parts) successes.
    for t in ["header", "message", "load", "verify", "show"] {
        let c = r.targets.get(t).cloned().unwrap_or_default();
        assert!(
            c.err > 0,
            "target {t} never refused anything:\n{}",
            r.text()
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
    for mut t in trees {
        t.w.terminate_original_expect_pass();
    }
}
