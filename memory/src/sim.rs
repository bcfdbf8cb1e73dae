//! A simulated linear memory for host tests and benchmarks.

use core::ptr::NonNull;
use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::tail::{Pages, Span, grow_from};
use crate::{MemorySource, PAGE_SIZE, Region};

/// How a [`SimMemory`] starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// Pages present at the start (static data and stack of the "module").
    pub initial_pages: usize,
    /// The declared maximum: growth beyond it fails, like `memory.grow`.
    pub max_pages: usize,
    /// When set, the first successful grow also hands out `[heap_base,
    /// initial end)` (if nothing grew memory before it), as `WasmMemory` does
    /// with `__heap_base`.
    pub heap_base: Option<usize>,
}

impl SimConfig {
    /// `initial_pages` present, growth up to `max_pages`, no heap-base tail.
    pub const fn new(initial_pages: usize, max_pages: usize) -> Self {
        Self {
            initial_pages,
            max_pages,
            heap_base: None,
        }
    }
}

#[derive(Debug)]
struct State {
    pages: usize,
    peak_pages: usize,
    fail_next: usize,
    grows: usize,
    failed_grows: usize,
    foreign_pages: usize,
    tail: Option<Span>,
}

#[derive(Debug)]
struct Inner {
    /// The host allocation: `layout_for(max_pages)`, 16-aligned.
    alloc: NonNull<u8>,
    /// M2: the first 64 KiB boundary in `alloc`, the base of
    /// `max_pages * PAGE_SIZE` bytes inside it.
    base: NonNull<u8>,
    max_pages: usize,
    initial_pages: usize,
    state: Mutex<State>,
}

// SAFETY: M2: `base` is only dereferenced by the heap that was handed a
// region; the state is behind a mutex.
unsafe impl Send for Inner {}
// SAFETY: as above; `Inner` has no interior mutability outside the mutex.
unsafe impl Sync for Inner {}

impl Drop for Inner {
    fn drop(&mut self) {
        // SAFETY: `alloc` came from `alloc_zeroed` with exactly this layout.
        unsafe { dealloc(self.alloc.as_ptr(), layout_for(self.max_pages)) };
    }
}

/// The host allocation for `max_pages`: one page more than needed, so a
/// 64 KiB-aligned base fits inside it, at the allocator's plain 16-byte
/// alignment. (A 64 KiB-aligned `alloc_zeroed` is served by an aligned
/// allocation plus a memset of the whole reservation; a plain one by
/// `calloc`, which maps fresh zero pages and touches nothing.)
fn layout_for(max_pages: usize) -> Layout {
    let bytes = max_pages
        .max(1)
        .checked_add(1)
        .and_then(|p| p.checked_mul(PAGE_SIZE))
        .expect("SimMemory maximum overflows usize");
    Layout::from_size_align(bytes, 16).expect("SimMemory maximum too large")
}

/// A handle to a simulated linear memory.
///
/// It reserves `max_pages * 64 KiB` up front (zeroed and page-aligned) and
/// hands out growth from it exactly as `memory.grow` would: whole pages,
/// zero-filled, failing at the maximum. Clones are handles to the same
/// memory, so a test keeps one to turn the knobs while the heap owns another:
/// fail the next N grows, grow by a foreign party (a gap), and read the grow
/// count and the high-water mark.
#[derive(Clone, Debug)]
pub struct SimMemory {
    inner: Arc<Inner>,
}

impl SimMemory {
    /// A memory with `initial_pages` present and growth up to `max_pages`.
    ///
    /// # Panics
    ///
    /// When `initial_pages > max_pages` or the host cannot reserve the memory.
    pub fn new(initial_pages: usize, max_pages: usize) -> Self {
        Self::with_config(SimConfig::new(initial_pages, max_pages))
    }

    /// A memory as `config` describes.
    ///
    /// # Panics
    ///
    /// When `initial_pages > max_pages`, `heap_base` lies beyond the initial
    /// memory, or the host cannot reserve the memory.
    pub fn with_config(config: SimConfig) -> Self {
        assert!(
            config.initial_pages <= config.max_pages,
            "initial pages exceed the maximum"
        );
        let layout = layout_for(config.max_pages);
        // SAFETY: the layout has a non-zero size (at least one page).
        let alloc = unsafe { alloc_zeroed(layout) };
        let alloc = NonNull::new(alloc).expect("host could not reserve the simulated memory");
        let pad = alloc.as_ptr().addr().wrapping_neg() & (PAGE_SIZE - 1);
        // SAFETY: `pad < PAGE_SIZE` and the allocation holds one page more
        // than the memory's maximum, so the base stays inside it.
        let base = unsafe { alloc.add(pad) };
        let end = config.initial_pages * PAGE_SIZE;
        let tail = config.heap_base.map(|hb| {
            assert!(hb <= end, "heap_base lies beyond the initial memory");
            Span {
                start: hb.max(16),
                end,
            }
        });
        let state = State {
            pages: config.initial_pages,
            peak_pages: config.initial_pages,
            fail_next: 0,
            grows: 0,
            failed_grows: 0,
            foreign_pages: 0,
            tail: tail.filter(|t| t.start < t.end),
        };
        Self {
            inner: Arc::new(Inner {
                alloc,
                base,
                max_pages: config.max_pages,
                initial_pages: config.initial_pages,
                state: Mutex::new(state),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` half-updated
        // (every update is a plain field store), so poisoning is ignored.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the next `n` grows by the heap fail (as at the maximum).
    pub fn fail_next_grows(&self, n: usize) {
        self.state().fail_next = n;
    }

    /// Another party grows memory by `pages` (e.g. other code in the
    /// module), leaving a gap before the heap's next region. Returns whether
    /// the memory had room.
    pub fn foreign_grow(&self, pages: usize) -> bool {
        let mut st = self.state();
        match st.pages.checked_add(pages) {
            Some(new) if new <= self.inner.max_pages => {
                st.pages = new;
                st.peak_pages = st.peak_pages.max(new);
                st.foreign_pages += pages;
                true
            }
            _ => false,
        }
    }

    /// Successful grows requested by the heap.
    pub fn grows(&self) -> usize {
        self.state().grows
    }

    /// Grows that failed (at the maximum or injected).
    pub fn failed_grows(&self) -> usize {
        self.state().failed_grows
    }

    /// The current size in pages (`memory.size`).
    pub fn pages(&self) -> usize {
        self.state().pages
    }

    /// The high-water mark of `memory.size` in pages.
    pub fn peak_pages(&self) -> usize {
        self.state().peak_pages
    }

    /// Pages grown by the heap (not foreign, not initial) at the high-water
    /// mark's current size.
    pub fn heap_pages(&self) -> usize {
        let st = self.state();
        st.pages - self.inner.initial_pages - st.foreign_pages
    }

    /// The declared maximum in pages.
    pub fn max_pages(&self) -> usize {
        self.inner.max_pages
    }

    /// The address of byte 0 of the simulated memory.
    pub fn base_addr(&self) -> usize {
        self.inner.base.as_ptr() as usize
    }

    /// Whether `[addr, addr + len)` lies inside the memory's current size.
    pub fn contains(&self, addr: usize, len: usize) -> bool {
        let base = self.base_addr();
        let end = base + self.state().pages * PAGE_SIZE;
        addr >= base && addr.checked_add(len).is_some_and(|e| e <= end)
    }
}

struct Grower<'a> {
    st: &'a mut State,
    max_pages: usize,
}

impl Pages for Grower<'_> {
    fn grow_pages(&mut self, pages: usize) -> Option<usize> {
        if self.st.fail_next > 0 {
            self.st.fail_next -= 1;
            self.st.failed_grows += 1;
            return None;
        }
        let old = self.st.pages;
        match old.checked_add(pages) {
            Some(new) if new <= self.max_pages => {
                self.st.pages = new;
                self.st.peak_pages = self.st.peak_pages.max(new);
                self.st.grows += 1;
                Some(old)
            }
            _ => {
                self.st.failed_grows += 1;
                None
            }
        }
    }
}

// SAFETY: M1 and M2: grown spans lie inside the reservation below the new
// size, are zero (fresh from `alloc_zeroed`, or re-zeroed in
// `release_tail`) and are handed out once, since `pages` only moves up
// except in `release_tail`, whose caller gives the bytes back.
unsafe impl MemorySource for SimMemory {
    fn grow(&mut self, bytes: usize) -> Option<Region> {
        let max_pages = self.inner.max_pages;
        let mut guard = self.state();
        let st = &mut *guard;
        let tail = st.tail;
        let size = st.pages;
        let span = grow_from(&mut Grower { st, max_pages }, size, tail, bytes)?;
        guard.tail = None;
        // SAFETY: M2: `span` lies inside the reservation.
        let start = unsafe { self.inner.base.add(span.start) };
        Some(Region {
            start,
            len: span.end - span.start,
        })
    }

    fn size_pages(&self) -> usize {
        self.pages()
    }

    unsafe fn release_tail(&mut self, end: NonNull<u8>, bytes: usize) -> usize {
        let mut st = self.state();
        let end_off = (end.as_ptr() as usize).wrapping_sub(self.base_addr());
        if end_off != st.pages * PAGE_SIZE {
            return 0;
        }
        let floor = self.inner.initial_pages + st.foreign_pages;
        let pages = (bytes / PAGE_SIZE).min(st.pages.saturating_sub(floor));
        if pages == 0 {
            return 0;
        }
        let new_pages = st.pages - pages;
        // SAFETY: M2: the released pages lie inside the reservation; the
        // caller owns them and gives them up (the contract of
        // `release_tail`), so they are re-zeroed for the next grow (M1).
        unsafe {
            self.inner
                .base
                .add(new_pages * PAGE_SIZE)
                .write_bytes(0, pages * PAGE_SIZE);
        }
        st.pages = new_pages;
        pages * PAGE_SIZE
    }
}
