//! The growth policy shared by the page-based sources: hand out the unused
//! tail of the initial memory first (from `__heap_base` up), then grow.

use crate::PAGE_SIZE;

/// A linear memory seen as page counts and byte offsets from its base.
pub(crate) trait Pages {
    /// `memory.grow(pages)`: the old size in pages, or `None` for -1.
    fn grow_pages(&mut self, pages: usize) -> Option<usize>;
    /// `memory.size` in pages.
    fn size_pages(&self) -> usize;
}

/// A byte range `[start, end)` of offsets into the memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: usize,
    pub end: usize,
}

/// Grows memory for a request of `bytes` bytes; on the first grow of a
/// source that claims the initial tail, `tail` is handed out too.
///
/// The tail is used only while it still ends at the end of memory (nobody
/// grew memory since it was measured); then the region is the tail plus just
/// the missing pages (none when the tail alone is long enough). Otherwise the
/// tail is dropped and fresh pages serve the request. One grow at most.
#[inline(always)]
pub(crate) fn grow_from<P: Pages>(mem: &mut P, tail: Option<Span>, bytes: usize) -> Option<Span> {
    let end = mem.size_pages() * PAGE_SIZE;
    let start = match tail {
        Some(t) if t.end == end && t.start < end => t.start,
        _ => end,
    };
    let pages = crate::align_up(bytes.saturating_sub(end - start), PAGE_SIZE)? / PAGE_SIZE;
    let old = if pages == 0 {
        end / PAGE_SIZE
    } else {
        mem.grow_pages(pages)?
    };
    let new_end = (old + pages) * PAGE_SIZE;
    if old * PAGE_SIZE == end {
        Some(Span {
            start,
            end: new_end,
        })
    } else if pages * PAGE_SIZE >= bytes {
        Some(Span {
            start: old * PAGE_SIZE,
            end: new_end,
        })
    } else {
        // Another thread grew memory between our size read and our grow,
        // during the very grow that claimed a tail (wasm threads only): the
        // pages we got are too few and are left unused.
        None
    }
}
