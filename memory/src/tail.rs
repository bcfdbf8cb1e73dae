//! The growth policy shared by the page-based sources: hand out the unused
//! tail of the initial memory first (from `__heap_base` up), then grow.

use crate::PAGE_SIZE;

/// A linear memory that grows by pages.
pub(crate) trait Pages {
    /// `memory.grow(pages)`: the old size in pages, or `None` for -1.
    fn grow_pages(&mut self, pages: usize) -> Option<usize>;
}

/// A byte range `[start, end)` of offsets into the memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: usize,
    pub end: usize,
}

/// Grows memory, now `size` pages, for a request of `bytes` bytes; on the
/// first grow of a source that claims the initial tail, `tail` is handed out
/// too. (The caller reads `size` once and measures the tail with it.)
///
/// The tail is used only while it still ends at the end of memory (nobody
/// grew memory since it was measured); then the region is the tail plus just
/// the missing pages (none when the tail alone is long enough). Otherwise the
/// tail is dropped and fresh pages serve the request. One grow at most.
///
/// Written for code size (it is on every wasm module's allocation path):
/// one page count, one grow, one length check that also covers the race.
#[inline(always)]
pub(crate) fn grow_from<P: Pages>(
    mem: &mut P,
    size: usize,
    tail: Option<Span>,
    bytes: usize,
) -> Option<Span> {
    let end = size * PAGE_SIZE;
    let start = match tail {
        Some(t) if t.end == end && t.start < end => t.start,
        _ => end,
    };
    // `div_ceil` cannot overflow; an absurd page count makes the grow fail.
    let pages = bytes.saturating_sub(end - start).div_ceil(PAGE_SIZE);
    let old = if pages == 0 {
        size
    } else {
        mem.grow_pages(pages)?
    };
    // When another thread grew memory between our size read and our grow
    // (wasm threads only: a single-threaded module runs nothing in between),
    // the tail no longer adjoins our pages: they serve alone, if they are
    // enough (else they are left unused).
    let start = if !cfg!(target_feature = "atomics") || old == size {
        start
    } else {
        old * PAGE_SIZE
    };
    let end = (old + pages) * PAGE_SIZE;
    (end - start >= bytes).then_some(Span { start, end })
}
