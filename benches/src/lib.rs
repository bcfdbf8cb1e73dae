//! The linmem benchmark harness: builds one wasm32 workload module per
//! allocator (the linmem allocators and the references: the `dlmalloc`
//! crate, `talc`, `lol_alloc`, `rlsf`), runs them side by side in wasmtime
//! (or node), checks their checksums agree, and writes a terminal table, CSV,
//! JSON and SVG charts.
//!
//! Run it with `cargo run --release -p linmem-benches -- [--quick]`. The
//! pieces:
//!
//! - `benches/workload`: the module (workloads, trace replay, recorder);
//! - `benches/runner`: the wasmtime engine, its own workspace (so the main
//!   workspace's tests never build wasmtime), built on first use;
//! - `benches/node/runner.mjs`: the node engine, same protocol ([`proto`]);
//! - this crate: orchestration and the pure parts, unit-tested here.
pub mod cli;
pub mod manifest;
pub mod plan;
pub mod proto;
pub mod report;
pub mod stats;
pub mod svg;
pub mod trace;
pub mod util;
