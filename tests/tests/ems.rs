//! The conformance suite over the ems heap.
#![cfg_attr(target_arch = "wasm32", allow(missing_docs))]

linmem_tests::conformance!(linmem_ems::Heap::new, linmem_tests::Caps::FULL);
