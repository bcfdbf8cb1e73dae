//! Fuzzes the ems heap: the input is decoded into an operation program
//! (`linmem_tests::program::from_bytes`) and run against the conformance
//! suite's model, which checks every live block's contents, zeroing,
//! realloc prefixes and `verify()` after every step.
#![no_main]

use linmem_tests::{Caps, Mem, Subject, program};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let s = Subject {
        make: |m: Mem| linmem_ems::Heap::new(m),
        caps: Caps::FULL,
    };
    if let Err(e) = program::run_bytes(&s, data) {
        panic!("{e}");
    }
});
