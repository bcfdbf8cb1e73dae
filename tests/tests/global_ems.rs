//! The ems heap as this test binary's global allocator.
#![cfg(target_arch = "wasm32")]
#![allow(missing_docs)]

#[global_allocator]
static A: linmem_ems::Global = linmem_ems::Global::new();

linmem_tests::global_conformance!(A);
