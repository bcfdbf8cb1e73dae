//! The conformance suite over the bump arena.
#![cfg_attr(target_arch = "wasm32", allow(missing_docs))]

linmem_tests::conformance!(linmem_bump::Arena::new, linmem_tests::Caps::BUMP);
