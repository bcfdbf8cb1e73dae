//! The bump arena as this test binary's global allocator: the wasm test
//! harness itself, the model and every workload run on it.
#![cfg(target_arch = "wasm32")]
#![allow(missing_docs)]

#[global_allocator]
static A: linmem_bump::Global = linmem_bump::Global::new();

linmem_tests::global_conformance!(A);
