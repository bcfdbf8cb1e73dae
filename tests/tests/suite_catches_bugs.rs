//! The suite must fail deliberately broken allocators: each wrapper below
//! breaks one promise of a correct heap, and the case that guards that
//! promise has to report it.
#![cfg_attr(target_arch = "wasm32", allow(missing_docs))]

use std::alloc::Layout;
use std::ptr::NonNull;

use linmem_bump::Arena;
use linmem_memory::{HeapError, HeapStats, RawHeap, Violation};
use linmem_tests::{Caps, Failure, Mem, Subject, cases};

/// Which promise the wrapper breaks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bug {
    /// Every fifth allocation returns the previous block again.
    Overlap,
    /// realloc moves the block without copying its contents.
    ForgetfulRealloc,
    /// alloc_zeroed does not zero.
    DirtyZeroed,
    /// Alignments above 8 are ignored.
    IgnoresAlignment,
}

struct Broken {
    inner: Arena<Mem>,
    bug: Bug,
    count: usize,
    last: Option<NonNull<u8>>,
}

impl RawHeap for Broken {
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        self.count += 1;
        if self.bug == Bug::Overlap && self.count.is_multiple_of(5) {
            if let Some(p) = self
                .last
                .filter(|p| (p.as_ptr() as usize).is_multiple_of(layout.align()))
            {
                return Some(p);
            }
        }
        let layout = match self.bug {
            Bug::IgnoresAlignment => Layout::from_size_align(layout.size(), 1).ok()?,
            _ => layout,
        };
        // Misalign deliberately when ignoring alignment.
        if self.bug == Bug::IgnoresAlignment {
            self.inner.alloc(Layout::from_size_align(1, 1).ok()?)?;
        }
        let p = self.inner.alloc(layout)?;
        self.last = Some(p);
        Some(p)
    }

    fn alloc_zeroed(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        let p = self.alloc(layout)?;
        if self.bug != Bug::DirtyZeroed {
            // SAFETY: `p` is valid for `layout.size()` bytes.
            unsafe { p.as_ptr().write_bytes(0, layout.size()) };
        } else {
            // SAFETY: as above.
            unsafe { p.as_ptr().write_bytes(0xEE, 1) };
        }
        Some(p)
    }

    unsafe fn dealloc(&mut self, ptr: NonNull<u8>, layout: Layout) -> Result<(), HeapError> {
        // SAFETY: forwarded contract.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    unsafe fn realloc(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new: usize,
    ) -> Option<NonNull<u8>> {
        if self.bug == Bug::ForgetfulRealloc {
            let l = Layout::from_size_align(new, layout.align()).ok()?;
            return self.inner.alloc(l);
        }
        // SAFETY: forwarded contract.
        unsafe { self.inner.realloc(ptr, layout, new) }
    }

    unsafe fn usable_size(&self, ptr: NonNull<u8>, layout: Layout) -> usize {
        // SAFETY: forwarded contract.
        unsafe { self.inner.usable_size(ptr, layout) }
    }

    fn stats(&self) -> HeapStats {
        self.inner.stats()
    }

    fn verify(&self) -> Result<HeapStats, Violation> {
        self.inner.verify()
    }
}

fn subject(bug: Bug) -> Subject<Broken, Mem> {
    let make: fn(Mem) -> Broken = match bug {
        Bug::Overlap => |m| Broken {
            inner: Arena::new(m),
            bug: Bug::Overlap,
            count: 0,
            last: None,
        },
        Bug::ForgetfulRealloc => |m| Broken {
            inner: Arena::new(m),
            bug: Bug::ForgetfulRealloc,
            count: 0,
            last: None,
        },
        Bug::DirtyZeroed => |m| Broken {
            inner: Arena::new(m),
            bug: Bug::DirtyZeroed,
            count: 0,
            last: None,
        },
        Bug::IgnoresAlignment => |m| Broken {
            inner: Arena::new(m),
            bug: Bug::IgnoresAlignment,
            count: 0,
            last: None,
        },
    };
    Subject {
        make,
        caps: Caps::BUMP,
    }
}

fn expect_failure(r: Result<(), Failure>, needle: &str) {
    match r {
        Ok(()) => panic!("the suite passed a broken allocator"),
        Err(e) => assert!(e.what().contains(needle), "wrong failure: {e}"),
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn suite_rejects_an_allocator_that_hands_out_overlapping_blocks() {
    let s = subject(Bug::Overlap);
    expect_failure(
        cases::live_blocks_never_overlap_and_keep_their_contents(&s),
        "overlaps",
    );
    expect_failure(cases::every_alignment_1_to_64k_is_honoured(&s), "overlaps");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
// Under Miri (`cargo xtask miri` runs the light case count) the realloc
// workloads are too short to reach the broken path: reported as ignored
// there rather than passing without checking; natively and in node they
// catch it.
#[cfg_attr(miri, ignore = "Miri's light case count is too short for this bug")]
fn suite_rejects_an_allocator_whose_realloc_loses_the_contents() {
    let s = subject(Bug::ForgetfulRealloc);
    expect_failure(
        cases::realloc_keeps_the_prefix_growing_and_shrinking(&s),
        "old prefix",
    );
    expect_failure(cases::random_programs_match_the_model(&s), "old prefix");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn suite_rejects_an_allocator_whose_zeroed_blocks_are_dirty() {
    let s = subject(Bug::DirtyZeroed);
    expect_failure(
        cases::zeroed_blocks_are_zero_also_on_reused_memory(&s),
        "zeroed block",
    );
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn suite_rejects_an_allocator_that_ignores_alignment() {
    let s = subject(Bug::IgnoresAlignment);
    expect_failure(
        cases::every_alignment_1_to_64k_is_honoured(&s),
        "not aligned",
    );
}
