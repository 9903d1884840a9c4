// Generates Rust code for the image schemas in proto/ with the pure-Rust
// protobuf parser, so no protoc is needed on the build machine, and
// compiles the BPF programs in bpf/ with clang into libbpf-rs skeletons
// (OUT_DIR/<name>.skel.rs, included by src/sys/bpf.rs).
use std::path::PathBuf;

fn main() {
    let protos: Vec<_> = std::fs::read_dir("proto")
        .expect("proto/ directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "proto"))
        .collect();
    protobuf_codegen::Codegen::new()
        .pure()
        .includes(["proto"])
        .inputs(&protos)
        .cargo_out_dir("proto")
        .run_from_script();
    println!("cargo:rerun-if-changed=proto");

    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    for name in [
        "inventory",
        "forks",
        "pktring",
        "unixq",
        "aio",
        "sockshut",  // fixes: UDP shutdown bits
        "procattrs", // fixes: the oracle's subreaper and membarrier
    ] {
        let src = format!("bpf/{name}.bpf.c");
        let skel = out.join(format!("{name}.skel.rs"));
        if let Err(e) = libbpf_cargo::SkeletonBuilder::new()
            .source(&src)
            .clang_args(["-Ibpf", "-Wall", "-Werror"])
            .build_and_generate(&skel)
        {
            panic!(
                "building {src} failed: {e:#}\n(clang is needed: `cargo xtask test` or \
                 `cargo xtask demo` installs it)"
            );
        }
    }
    println!("cargo:rerun-if-changed=bpf");
    link_front_ends(&out);
}

/// chkpnt and resume are the cairn binary under other names (src/main.rs
/// dispatches on argv[0]): symbolic links `chkpnt -> cairn` and `resume ->
/// cairn` beside it in the profile directory (OUT_DIR is
/// target/PROFILE/build/cairn-HASH/out). A file left there by a build
/// that made them separate binaries is replaced; anything else is left.
fn link_front_ends(out: &std::path::Path) {
    let Some(profile) = out.ancestors().nth(3) else {
        return;
    };
    for name in ["chkpnt", "resume"] {
        let link = profile.join(name);
        match std::fs::symlink_metadata(&link) {
            Ok(m) if m.file_type().is_symlink() => {
                if std::fs::read_link(&link).is_ok_and(|t| t == std::path::Path::new("cairn")) {
                    continue;
                }
                let _ = std::fs::remove_file(&link);
            }
            Ok(m) if m.is_file() => {
                let _ = std::fs::remove_file(&link);
            }
            Ok(_) => continue,
            Err(_) => {}
        }
        if let Err(e) = std::os::unix::fs::symlink("cairn", &link) {
            println!(
                "cargo:warning=could not link {} -> cairn: {e}",
                link.display()
            );
        }
    }
}
