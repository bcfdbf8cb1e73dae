//! The `c-exports` step of `cargo xtask test`: builds `examples/c-exports`
//! (a module exporting C's `malloc` family from a linmem allocator) with
//! each allocator and drives its exports from node.

use std::path::Path;

use crate::{Tally, node_example};

/// Mixed C operations the node driver runs per allocator, besides its fixed
/// cases.
const OPS: &str = "20000";

/// Builds the module with each allocator present and runs `run.mjs` on it:
/// every C rule of the exports, then mixed operations with byte patterns
/// alongside Rust allocations and full heap checks. Each allocator counts
/// as one test.
pub(crate) fn c_exports(root: &Path, tally: &mut Tally) -> bool {
    node_example(
        root,
        tally,
        "c exports",
        "c-exports",
        "linmem_c_exports.wasm",
        &[OPS],
    )
}
