//! `include/linmem_ems.h` is generated from `src/lib.rs` by cbindgen (with
//! `cbindgen.toml`) and checked in, so C users can read it without building.
//! This test keeps the two in step; to regenerate the header after changing
//! the C ABI, run
//!
//! ```text
//! LINMEM_BLESS=1 cargo test -p linmem-ems-capi --test header
//! ```

use std::path::Path;

/// The command that rewrites the header.
const BLESS: &str = "LINMEM_BLESS=1 cargo test -p linmem-ems-capi --test header";

/// The header cbindgen makes from the crate's source and configuration.
fn generated() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml"))
        .unwrap_or_else(|e| panic!("reading cbindgen.toml: {e}"));
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root.join("src/lib.rs"))
        .generate()
        .unwrap_or_else(|e| panic!("cbindgen failed on src/lib.rs: {e}"));
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("cbindgen writes UTF-8")
}

#[test]
#[cfg_attr(miri, ignore = "runs cbindgen over the source files")]
fn header_is_generated_from_the_source() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/linmem_ems.h");
    let fresh = generated();
    if std::env::var_os("LINMEM_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &fresh).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        return;
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current != fresh {
        let line = current
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| current.lines().count().min(fresh.lines().count()))
            + 1;
        panic!(
            "{} is not what cbindgen generates from src/lib.rs (first difference at \
             line {line}).\nThe header is generated, not edited by hand: change the \
             Rust source (or cbindgen.toml), then regenerate it with\n    {BLESS}",
            path.display()
        );
    }
}
