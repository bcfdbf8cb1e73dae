//! The real thing: `memory.grow` on memory 0 of a wasm32 module.

use core::arch::wasm32;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::tail::{Pages, Span, grow_from};
use crate::{MemorySource, PAGE_SIZE, Region};

unsafe extern "C" {
    /// Set by the linker: the first byte after static data and the stack.
    static __heap_base: u8;
}

/// Whether some `WasmMemory` in this module has claimed the heap-base tail.
static TAIL_CLAIMED: AtomicBool = AtomicBool::new(false);

/// Linear memory 0 of this wasm module, grown with `memory.grow`.
///
/// `WasmMemory` (made by [`new`](WasmMemory::new)) only grows.
/// `WasmMemory<true>` (made by [`with_heap_base`](WasmMemory::with_heap_base))
/// first hands out the unused tail of the initial memory, from the linker's
/// `__heap_base` to the end of the initial pages; at most one source per
/// module ever claims it. Which of the two a source is is part of its type,
/// so neither carries a flag at run time: the plain one's code has no tail
/// logic at all (about 40 bytes less in a heap's module).
#[derive(Debug)]
pub struct WasmMemory<const HEAP_BASE: bool = false> {
    /// Private: made only by the constructors.
    _private: (),
}

impl WasmMemory {
    /// A source that only grows memory (never touches the initial memory).
    ///
    /// This is the one to use for any heap that is not the module's global
    /// allocator, since the global allocator (std's default included) may
    /// own the initial tail.
    pub const fn new() -> Self {
        Self { _private: () }
    }
}

impl WasmMemory<true> {
    /// A source that first hands out `__heap_base..` end of initial memory.
    ///
    /// # Safety
    ///
    /// Only the module's global allocator may use such a source: no other
    /// allocator in the module (std's default allocator claims the same
    /// region) may use the memory above `__heap_base`. Among linmem sources
    /// only the first to grow claims the tail, the others fall back to growth.
    /// The tail is measured at the first grow: nothing may grow memory before
    /// it (later foreign growth is fine).
    pub const unsafe fn with_heap_base() -> Self {
        Self { _private: () }
    }
}

impl Default for WasmMemory {
    fn default() -> Self {
        Self::new()
    }
}

struct Memory0;

impl Pages for Memory0 {
    fn grow_pages(&mut self, pages: usize) -> Option<usize> {
        let old = wasm32::memory_grow(0, pages);
        (old != usize::MAX).then_some(old)
    }
}

// SAFETY: M1: `memory.grow` appends fresh zeroed pages that nothing else
// owns; the heap-base tail is claimed once per module (TAIL_CLAIMED) and,
// by `with_heap_base`'s contract, by the global allocator alone.
unsafe impl<const HEAP_BASE: bool> MemorySource for WasmMemory<HEAP_BASE> {
    fn grow(&mut self, bytes: usize) -> Option<Region> {
        // Once claimed (by the first successful grow of a claiming source),
        // TAIL_CLAIMED keeps every source, this one included, from the tail.
        let claim = HEAP_BASE && !TAIL_CLAIMED.load(Ordering::Acquire);
        let size = wasm32::memory_size(0);
        let tail = claim.then(|| Span {
            start: core::ptr::addr_of!(__heap_base) as usize,
            end: size * PAGE_SIZE,
        });
        let span = grow_from(&mut Memory0, size, tail, bytes)?;
        if claim {
            TAIL_CLAIMED.store(true, Ordering::Release);
        }
        // Address 0 is only reachable if memory started empty; skip a word.
        let start = span.start.max(16);
        let start = NonNull::new(core::ptr::with_exposed_provenance_mut::<u8>(start))?;
        Some(Region {
            start,
            len: span.end - start.as_ptr() as usize,
        })
    }

    fn size_pages(&self) -> usize {
        wasm32::memory_size(0)
    }
}
