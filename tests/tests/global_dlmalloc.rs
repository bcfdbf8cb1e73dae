//! The dlmalloc-design allocator as this test binary's global allocator.
#![cfg(target_arch = "wasm32")]
#![allow(missing_docs)]

#[global_allocator]
static A: linmem_dlmalloc::Global = linmem_dlmalloc::Global::new();

linmem_tests::global_conformance!(A);
