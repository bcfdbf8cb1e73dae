//! The `c-exports` step of `cargo xtask test`: builds `examples/c-exports`
//! (a module exporting C's `malloc` family from a linmem allocator) with
//! each allocator and drives its exports from node.

use std::path::Path;
use std::process::Command;

use crate::{APP_ALLOCATORS, Tally, WASM, cargo, run};

/// Mixed C operations the node driver runs per allocator, besides its fixed
/// cases.
const OPS: &str = "20000";

/// Builds the module with each allocator present and runs `run.mjs` on it:
/// every C rule of the exports, then mixed operations with byte patterns
/// alongside Rust allocations and full heap checks. Each allocator counts
/// as one test.
pub(crate) fn c_exports(root: &Path, tally: &mut Tally) -> bool {
    let example = root.join("examples/c-exports");
    let target = root.join("target/c-exports");
    let wasm = target.join("wasm32-unknown-unknown/release/linmem_c_exports.wasm");
    let mut ok = true;
    let present = APP_ALLOCATORS
        .iter()
        .filter(|(_, d)| root.join(d).join("Cargo.toml").exists());
    for (feature, _) in present {
        let built = run(
            &format!("c exports with {feature}: build"),
            cargo()
                .current_dir(&example)
                .env("CARGO_TARGET_DIR", &target)
                .args([
                    "build",
                    "--release",
                    "--target",
                    WASM,
                    "--no-default-features",
                    "--features",
                    feature,
                ]),
            tally,
        );
        let ran = built
            && run(
                &format!("c exports with {feature}: run in node"),
                Command::new("node")
                    .arg(example.join("run.mjs"))
                    .arg(&wasm)
                    .arg(OPS),
                tally,
            );
        if ran {
            tally.passed += 1;
        } else {
            tally.failed += 1;
        }
        ok &= ran;
    }
    ok
}
