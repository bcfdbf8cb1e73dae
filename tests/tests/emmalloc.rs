//! The conformance suite over the emmalloc-design allocator.
#![cfg_attr(target_arch = "wasm32", allow(missing_docs))]

linmem_tests::conformance!(linmem_emmalloc::Heap::new, linmem_tests::Caps::FULL);
