//! The conformance suite over the dlmalloc-design allocator.
#![cfg_attr(target_arch = "wasm32", allow(missing_docs))]

linmem_tests::conformance!(linmem_dlmalloc::Heap::new, linmem_tests::Caps::FULL);
