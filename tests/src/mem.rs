//! The memory a suite case runs on, with its test knobs: simulated on the
//! host, real `memory.grow` inside a wasm engine.

use linmem_memory::MemorySource;

/// The knobs a program turns: inject grow failures, grow memory behind the
/// heap's back, and count failed grows.
pub trait Knobs {
    /// Makes the heap's next `n` grows fail.
    fn fail_next_grows(&self, n: usize);
    /// Grows memory by `pages` as some other party (a gap for the heap).
    fn foreign_grow(&self, pages: usize) -> bool;
    /// Grow requests by the heap that failed.
    fn failed_grows(&self) -> usize;
}

/// A memory source the suite can steer and measure.
pub trait TestMemory: MemorySource + Knobs + Clone + 'static {
    /// A new memory the heap may grow by at most `max_heap_pages` pages.
    fn fresh(max_heap_pages: usize) -> Self;
    /// Pages the heap has grown memory by.
    fn heap_pages(&self) -> usize;
}

#[cfg(not(target_arch = "wasm32"))]
mod host {
    use linmem_memory::SimMemory;

    use super::{Knobs, TestMemory};

    impl TestMemory for SimMemory {
        fn fresh(max_heap_pages: usize) -> Self {
            // One initial page stands for the module's static data.
            SimMemory::new(1, 1 + max_heap_pages + crate::FOREIGN_PAGES_BUDGET)
        }
        fn heap_pages(&self) -> usize {
            SimMemory::heap_pages(self)
        }
    }

    impl Knobs for SimMemory {
        fn fail_next_grows(&self, n: usize) {
            SimMemory::fail_next_grows(self, n)
        }
        fn foreign_grow(&self, pages: usize) -> bool {
            SimMemory::foreign_grow(self, pages)
        }
        fn failed_grows(&self) -> usize {
            SimMemory::failed_grows(self)
        }
    }
}

#[cfg(target_arch = "wasm32")]
mod wasm {
    use std::cell::Cell;
    use std::rc::Rc;

    use linmem_memory::{MemorySource, PAGE_SIZE, Region, WasmMemory};

    use super::{Knobs, TestMemory};

    #[derive(Default, Debug)]
    struct State {
        fail_next: Cell<usize>,
        failed: Cell<usize>,
        heap_pages: Cell<usize>,
        max_heap_pages: Cell<usize>,
    }

    /// Real `memory.grow` on memory 0 (plain growth, never the heap-base
    /// tail, which belongs to the test binary's global allocator), with the
    /// suite's knobs and a per-heap page budget standing in for a maximum.
    #[derive(Clone, Debug)]
    pub struct WasmTestMemory {
        mem: Rc<std::cell::RefCell<WasmMemory>>,
        knobs: Rc<State>,
    }

    // SAFETY: every region comes from `WasmMemory::new()` (plain growth),
    // which upholds M1; this wrapper only refuses some grows.
    unsafe impl MemorySource for WasmTestMemory {
        fn grow(&mut self, bytes: usize) -> Option<Region> {
            let k = &self.knobs;
            let pages = bytes.div_ceil(PAGE_SIZE);
            if k.fail_next.get() > 0 || k.heap_pages.get() + pages > k.max_heap_pages.get() {
                k.fail_next.set(k.fail_next.get().saturating_sub(1));
                k.failed.set(k.failed.get() + 1);
                return None;
            }
            let r = self.mem.borrow_mut().grow(bytes);
            match r {
                Some(r) => k
                    .heap_pages
                    .set(k.heap_pages.get() + r.len.div_ceil(PAGE_SIZE)),
                None => k.failed.set(k.failed.get() + 1),
            }
            r
        }
        fn size_pages(&self) -> usize {
            self.mem.borrow().size_pages()
        }
    }

    impl TestMemory for WasmTestMemory {
        fn fresh(max_heap_pages: usize) -> Self {
            let knobs = State::default();
            knobs.max_heap_pages.set(max_heap_pages);
            Self {
                mem: Rc::new(std::cell::RefCell::new(WasmMemory::new())),
                knobs: Rc::new(knobs),
            }
        }
        fn heap_pages(&self) -> usize {
            self.knobs.heap_pages.get()
        }
    }

    impl Knobs for WasmTestMemory {
        fn fail_next_grows(&self, n: usize) {
            self.knobs.fail_next.set(n);
        }
        fn foreign_grow(&self, pages: usize) -> bool {
            core::arch::wasm32::memory_grow(0, pages) != usize::MAX
        }
        fn failed_grows(&self) -> usize {
            self.knobs.failed.get()
        }
    }
}

#[cfg(target_arch = "wasm32")]
pub use wasm::WasmTestMemory;
