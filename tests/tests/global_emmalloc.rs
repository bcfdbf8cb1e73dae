//! The emmalloc-design allocator as this test binary's global allocator.
#![cfg(target_arch = "wasm32")]
#![allow(missing_docs)]

#[global_allocator]
static A: linmem_emmalloc::Global = linmem_emmalloc::Global::new();

linmem_tests::global_conformance!(A);
