//! The linmem conformance suite: one set of checks every allocator passes,
//! on the host over a simulated linear memory and inside a wasm engine over
//! real `memory.grow`.
//!
//! An allocator plugs in with one line in a file under `tests/tests/`:
//!
//! ```ignore
//! linmem_tests::conformance!(linmem_bump::Arena::new, linmem_tests::Caps::BUMP);
//! ```
//!
//! which makes one test per case of [`cases`] (`#[test]` on the host,
//! `#[wasm_bindgen_test]` in wasm). A test binary that sets an allocator as
//! its `#[global_allocator]` adds [`global_conformance!`], so the harness
//! itself runs on it.
//!
//! The suite knows allocators only through [`RawHeap`]; each declares with
//! [`Caps`] what it does not do, and only that is skipped.

use std::fmt;

use linmem_memory::RawHeap;

pub mod cases;
pub mod global;
mod mem;
pub mod model;
pub mod program;
pub mod workload;

#[cfg(not(target_arch = "wasm32"))]
pub use mem::SimTestMemory;
#[cfg(target_arch = "wasm32")]
pub use mem::WasmTestMemory;
pub use mem::{Knobs, TestMemory};

/// The memory the suite runs heaps on: simulated on the host.
#[cfg(not(target_arch = "wasm32"))]
pub type Mem = SimTestMemory;
/// The memory the suite runs heaps on: real `memory.grow` in wasm.
#[cfg(target_arch = "wasm32")]
pub type Mem = WasmTestMemory;

/// Pages a case may grow by as a "foreign party", on top of the heap's.
pub const FOREIGN_PAGES_BUDGET: usize = scale(256, 16);

/// What an allocator does, so the suite skips only what does not apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// Freed memory is reused (a bump arena only reuses its last block).
    pub reuses_freed: bool,
    /// `stats()` counts live blocks and their bytes exactly.
    pub counts_live_blocks: bool,
}

impl Caps {
    /// A general-purpose allocator: everything applies.
    pub const FULL: Caps = Caps {
        reuses_freed: true,
        counts_live_blocks: true,
    };
    /// A bump arena: no general reuse, no per-block accounting.
    pub const BUMP: Caps = Caps {
        reuses_freed: false,
        counts_live_blocks: false,
    };
}

/// The allocator under test: how to make one over a memory, and its caps.
pub struct Subject<H, M> {
    /// Builds a heap over a memory.
    pub make: fn(M) -> H,
    /// What the allocator does.
    pub caps: Caps,
}

impl<H: RawHeap, M: TestMemory> Subject<H, M> {
    /// A fresh heap over a fresh memory it may grow by `max_heap_pages`,
    /// and a handle to that memory's knobs.
    pub fn heap(&self, max_heap_pages: usize) -> (H, M) {
        let mem = M::fresh(max_heap_pages);
        ((self.make)(mem.clone()), mem)
    }

    /// As [`heap`](Self::heap), with room for `foreign_pages` of foreign
    /// growth (a smaller simulated memory is cheaper to make).
    pub fn heap_with(&self, max_heap_pages: usize, foreign_pages: usize) -> (H, M) {
        let mem = M::with_budget(max_heap_pages, foreign_pages);
        ((self.make)(mem.clone()), mem)
    }
}

/// A check that did not hold: what, and where in a program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    what: String,
}

impl Failure {
    /// A failure described by `what`.
    pub fn new(what: impl Into<String>) -> Self {
        Self { what: what.into() }
    }

    /// Adds where it happened in a program.
    pub fn at(self, step: usize, op: program::Op) -> Self {
        Self {
            what: format!("step {step} ({op:?}): {}", self.what),
        }
    }

    /// Adds context.
    pub fn context(self, ctx: &str) -> Self {
        Self {
            what: format!("{ctx}: {}", self.what),
        }
    }

    /// The description.
    pub fn what(&self) -> &str {
        &self.what
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

impl std::error::Error for Failure {}

/// `full` normally, `miri` under Miri (which runs code ~1000x slower).
pub const fn scale(full: usize, miri: usize) -> usize {
    if cfg!(miri) { miri } else { full }
}

/// `host` natively, `wasm` inside a wasm engine (node runs the suite in a
/// few seconds), `miri` under Miri.
pub const fn sized(host: usize, wasm: usize, miri: usize) -> usize {
    if cfg!(target_arch = "wasm32") {
        wasm
    } else {
        scale(host, miri)
    }
}

/// Whether this is a light Miri pass: set by `LINMEM_MIRI_LIGHT` in the
/// environment, which `cargo xtask miri` forwards into Miri (in every mode);
/// the heaviest cases then run fewer rounds.
pub fn miri_light() -> bool {
    cfg!(miri) && std::env::var_os("LINMEM_MIRI_LIGHT").is_some()
}

/// `miri` normally under Miri, `light` in a light Miri pass
/// ([`miri_light`]), `full` otherwise.
pub fn lighter(full: usize, miri: usize, light: usize) -> usize {
    if miri_light() {
        light
    } else {
        scale(full, miri)
    }
}

/// Property cases per run: `PROPTEST_CASES` if set, else 64 (3 under Miri).
pub fn proptest_cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(lighter(64, 3, 1) as u32)
}

/// Runs one case and panics with its failure (what a test does).
pub fn check<H: RawHeap, M: TestMemory>(
    case: fn(&Subject<H, M>) -> Result<(), Failure>,
    make: fn(M) -> H,
    caps: Caps,
) {
    if let Err(e) = case(&Subject { make, caps }) {
        panic!("conformance failure: {e}");
    }
}

/// Plugs an allocator into the suite: one test per case.
///
/// `$make` builds the heap from a memory source (a generic constructor such
/// as `linmem_bump::Arena::new`), `$caps` is its [`Caps`].
#[macro_export]
macro_rules! conformance {
    ($make:path, $caps:expr) => {
        $crate::conformance!(@cases $make, $caps;
            every_alignment_1_to_64k_is_honoured,
            sizes_from_1_byte_to_8_mib_are_served,
            zeroed_blocks_are_zero_also_on_reused_memory,
            realloc_keeps_the_prefix_growing_and_shrinking,
            live_blocks_never_overlap_and_keep_their_contents,
            sizes_near_isize_max_return_null,
            grow_failure_at_every_point_loses_nothing,
            grow_failure_at_every_grow_of_every_workload_loses_nothing,
            foreign_growth_between_operations_is_tolerated,
            bounded_live_set_does_not_grow_memory_without_bound,
            global_alloc_contract_holds_through_the_adapters,
            random_programs_match_the_model,
            byte_programs_match_the_model,
            soak_one_million_operations,
        );
    };
    (@cases $make:path, $caps:expr; $($case:ident,)*) => {
        $(
            #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
            #[cfg_attr(not(target_arch = "wasm32"), test)]
            fn $case() {
                $crate::check($crate::cases::$case, |m: $crate::Mem| $make(m), $caps);
            }
        )*
    };
}

/// Tests for a binary whose `#[global_allocator]` is the allocator under
/// test (`$global` is that static): raw `std::alloc` calls checked against
/// the model, collection workloads, and the heap's own check afterwards.
#[macro_export]
macro_rules! global_conformance {
    ($global:path) => {
        $crate::global_conformance!(@cases $global;
            raw_global_calls_honour_every_alignment_and_size,
            raw_global_programs_match_the_model,
            collections_churn_keeps_their_contents,
        );
    };
    (@cases $global:path; $($case:ident,)*) => {
        $(
            #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
            #[cfg_attr(not(target_arch = "wasm32"), test)]
            fn $case() {
                if let Err(e) = $crate::global::$case() {
                    panic!("global allocator conformance failure: {e}");
                }
                if let Err(v) = $global.verify() {
                    panic!("global heap check failed after {}: {v}", stringify!($case));
                }
            }
        )*
    };
}
