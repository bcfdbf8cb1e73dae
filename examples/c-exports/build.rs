//! Caps the module's memory at 128 MiB, so that running out of memory is a
//! real `memory.grow` failure the test can provoke.
fn main() {
    println!("cargo:rustc-link-arg-cdylib=--max-memory=134217728");
}
