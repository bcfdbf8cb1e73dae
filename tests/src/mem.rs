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
    /// A new memory the heap may grow by at most `max_heap_pages` pages,
    /// and a foreign party by [`FOREIGN_PAGES_BUDGET`](crate::FOREIGN_PAGES_BUDGET).
    fn fresh(max_heap_pages: usize) -> Self {
        Self::with_budget(max_heap_pages, crate::FOREIGN_PAGES_BUDGET)
    }
    /// A new memory the heap may grow by at most `max_heap_pages` pages, and
    /// a foreign party by `foreign_pages` (where the memory is simulated).
    fn with_budget(max_heap_pages: usize, foreign_pages: usize) -> Self;
    /// Pages the heap has grown memory by.
    fn heap_pages(&self) -> usize;
    /// At least the most pages the heap has held at once.
    fn peak_heap_pages(&self) -> usize;
    /// Pages grown by a foreign party (where the memory is simulated; 0 in
    /// wasm, where foreign growth is real and unbudgeted).
    fn foreign_pages(&self) -> usize;
    /// Grow requests the heap has made so far, successful or not.
    fn grow_requests(&self) -> usize;
    /// Makes the heap's grow requests numbered `from..to` fail (counted
    /// from 0 since the memory was made; each call replaces the last).
    fn fail_grow_requests(&self, from: usize, to: usize);
}

/// The fault schedule of a test memory: which grow requests fail.
#[derive(Debug, Default)]
struct Schedule {
    requests: usize,
    fail_from: usize,
    fail_to: usize,
}

impl Schedule {
    /// Counts one grow request; whether it is to fail.
    fn request(&mut self) -> bool {
        let n = self.requests;
        self.requests += 1;
        (self.fail_from..self.fail_to).contains(&n)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod host {
    use std::ptr::NonNull;
    use std::sync::{Arc, Mutex, MutexGuard};

    use linmem_memory::{MemorySource, Region, SimMemory};

    use super::{Knobs, Schedule, TestMemory};

    /// A [`SimMemory`] with the suite's fault schedule: it counts the heap's
    /// grow requests and fails those the schedule names. Clones share the
    /// memory and the schedule.
    #[derive(Clone, Debug)]
    pub struct SimTestMemory {
        sim: SimMemory,
        schedule: Arc<Mutex<(Schedule, usize)>>,
    }

    impl SimTestMemory {
        /// The simulated memory underneath.
        pub fn sim(&self) -> &SimMemory {
            &self.sim
        }

        fn schedule(&self) -> MutexGuard<'_, (Schedule, usize)> {
            // Every update is a plain field store: poisoning cannot leave
            // the schedule half-updated.
            self.schedule.lock().unwrap_or_else(|e| e.into_inner())
        }
    }

    // SAFETY: M1: every region comes from the `SimMemory` (which upholds
    // M1); this wrapper only refuses some grows, changing nothing then.
    unsafe impl MemorySource for SimTestMemory {
        fn grow(&mut self, bytes: usize) -> Option<Region> {
            let mut g = self.schedule();
            if g.0.request() {
                g.1 += 1;
                return None;
            }
            drop(g);
            self.sim.grow(bytes)
        }

        fn size_pages(&self) -> usize {
            self.sim.size_pages()
        }

        unsafe fn release_tail(&mut self, end: NonNull<u8>, bytes: usize) -> usize {
            // SAFETY: the caller's contract, forwarded to the memory the
            // bytes came from.
            unsafe { self.sim.release_tail(end, bytes) }
        }
    }

    impl TestMemory for SimTestMemory {
        fn with_budget(max_heap_pages: usize, foreign_pages: usize) -> Self {
            // One initial page stands for the module's static data.
            Self {
                sim: SimMemory::new(1, 1 + max_heap_pages + foreign_pages),
                schedule: Arc::default(),
            }
        }
        fn heap_pages(&self) -> usize {
            self.sim.heap_pages()
        }
        fn peak_heap_pages(&self) -> usize {
            self.sim.peak_pages() - 1
        }
        fn foreign_pages(&self) -> usize {
            self.sim.pages() - 1 - self.sim.heap_pages()
        }
        fn grow_requests(&self) -> usize {
            self.schedule().0.requests
        }
        fn fail_grow_requests(&self, from: usize, to: usize) {
            let mut g = self.schedule();
            g.0.fail_from = from;
            g.0.fail_to = to;
        }
    }

    impl Knobs for SimTestMemory {
        fn fail_next_grows(&self, n: usize) {
            self.sim.fail_next_grows(n)
        }
        fn foreign_grow(&self, pages: usize) -> bool {
            self.sim.foreign_grow(pages)
        }
        fn failed_grows(&self) -> usize {
            self.sim.failed_grows() + self.schedule().1
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use host::SimTestMemory;

#[cfg(target_arch = "wasm32")]
mod wasm {
    use std::cell::Cell;
    use std::rc::Rc;

    use linmem_memory::{MemorySource, PAGE_SIZE, Region, WasmMemory};

    use super::{Knobs, Schedule, TestMemory};

    #[derive(Default, Debug)]
    struct State {
        schedule: std::cell::RefCell<Schedule>,
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
            if k.schedule.borrow_mut().request() {
                k.failed.set(k.failed.get() + 1);
                return None;
            }
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
        fn with_budget(max_heap_pages: usize, _foreign_pages: usize) -> Self {
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
        fn peak_heap_pages(&self) -> usize {
            self.knobs.heap_pages.get()
        }
        fn foreign_pages(&self) -> usize {
            0
        }
        fn grow_requests(&self) -> usize {
            self.knobs.schedule.borrow().requests
        }
        fn fail_grow_requests(&self, from: usize, to: usize) {
            let mut s = self.knobs.schedule.borrow_mut();
            s.fail_from = from;
            s.fail_to = to;
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
