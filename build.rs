// Generates Rust code for the image schemas in proto/ with the pure-Rust
// protobuf parser, so no protoc is needed on the build machine.
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
}
