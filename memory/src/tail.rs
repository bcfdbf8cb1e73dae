//! The growth policy shared by the page-based sources: hand out the unused
//! tail of the initial memory first (from `__heap_base` up), then grow.

use crate::PAGE_SIZE;

/// A linear memory seen as page counts and byte offsets from its base.
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

impl Span {
    fn len(self) -> usize {
        self.end - self.start
    }
}

/// The pages needed for `bytes` bytes, `None` on overflow.
fn pages_for(bytes: usize) -> Option<usize> {
    Some(crate::align_up(bytes, PAGE_SIZE)? / PAGE_SIZE)
}

/// Grows memory by the pages needed for `bytes` bytes.
fn grow_span<P: Pages>(mem: &mut P, bytes: usize) -> Option<Span> {
    let pages = pages_for(bytes)?;
    let old = mem.grow_pages(pages)?;
    Some(Span {
        start: old * PAGE_SIZE,
        end: (old + pages) * PAGE_SIZE,
    })
}

/// Serves a request for `bytes` bytes, using `tail` first.
///
/// A tail long enough is handed out whole. A shorter one is extended by
/// growing the missing pages when nobody grew memory since the tail was
/// measured; otherwise it stays for a later, smaller request and the request
/// is served by fresh pages alone. At most two grows, never a loop.
pub(crate) fn grow_with_tail<P: Pages>(
    mem: &mut P,
    tail: &mut Option<Span>,
    bytes: usize,
) -> Option<Span> {
    let Some(t) = *tail else {
        return grow_span(mem, bytes);
    };
    if t.len() >= bytes {
        *tail = None;
        return Some(t);
    }
    let more = grow_span(mem, bytes - t.len())?;
    if more.start == t.end {
        *tail = None;
        return Some(Span {
            start: t.start,
            end: more.end,
        });
    }
    // Someone else grew memory after the tail was measured: the tail is no
    // longer at the end. Serve the request from fresh pages only.
    if more.len() >= bytes {
        return Some(more);
    }
    let rest = grow_span(mem, bytes - more.len())?;
    (rest.start == more.end).then_some(Span {
        start: more.start,
        end: rest.end,
    })
}
