// The C shared library's SONAME is libcairn.so, the name it is installed
// under: programs linked with -lcairn then load it by that name.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcairn.so");
}
