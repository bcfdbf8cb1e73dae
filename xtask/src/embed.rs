//! The `ems-runtime` step of `cargo xtask test`: `cargo test --release` of
//! `examples/ems-runtime`, the wasmtime embedding of ems (a host serving its
//! guests' `malloc`/`free` from an ems heap inside their linear memory, and
//! calling the C `malloc` family a guest exports). Its build script builds
//! the wasm32 guests itself.

use std::path::Path;

use crate::{Tally, cargo, run};

/// Runs the embedding's tests (its own workspace). The target directory is
/// the one `linmem-benches` builds its wasmtime runner in, with the same
/// wasmtime version, features and profile, so wasmtime compiles once.
pub(crate) fn ems_runtime(root: &Path, tally: &mut Tally) -> bool {
    let manifest = root.join("examples/ems-runtime/Cargo.toml");
    let target = crate::target_dir(root);
    run(
        "ems runtime embedding in wasmtime: scenarios 1-5",
        cargo()
            .current_dir(root)
            .env("CARGO_TARGET_DIR", &target)
            .args(["test", "--release", "--manifest-path"])
            .arg(&manifest),
        tally,
    )
}
